//! The plan of an MLP merge: ratios and merged widths from the budget, the layout of the
//! merged weights in the output buffer, the blocks of every fitted layer, and the sizes of
//! the caller's buffers.

use core::ops::Range;

use super::error::{MlpMergeError, MlpOperand, Model, ScratchKind};
use super::{
    Heads, LayerRef, LsForm, MAX_HIDDEN, MlpDims, MlpMergeInputs, MlpMergeParams, RidgeToward,
    Samples,
};
use crate::assign::auction_scratch_len;
use crate::linalg::packed_len;
use crate::merge::budget::{
    BudgetError, LayerCost, check_budget, flop_ratio, merged_pairs, uniform_ratio,
};
use crate::merge::driver::{FittedLayer, GroupPlan, LayerInput, MergeSchedule};
use crate::merge::sources::TargetRule;

/// Everything the caller needs to size its buffers, and how the merged weights are laid out.
///
/// The output buffer holds, for each hidden layer `l` in order, its dense weight
/// (`merged_widths[l] x in_l` row-major, `in_0 = inputs`, `in_l = merged_widths[l - 1]`, zero in
/// the cross blocks between A-only and B-only units) followed by its bias
/// (`merged_widths[l]` values, when the MLP has biases); then each head (`a`, then `b` with
/// [`Heads::Separate`]): its dense weight (`classes x in_L` over all units of the last merged
/// layer; head `a` is zero on the B-only units and head `b` on the A-only units), then its
/// bias. The merged network is: hidden layers with ReLU, then the heads.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MlpMergePlan {
    /// Fraction of every hidden layer's units kept separate.
    pub ratio: f64,
    /// The FLOP ratio of the merged network to one model (the budget model's count).
    pub flop_ratio: f64,
    /// Merge samples.
    pub samples: usize,
    /// Input features.
    pub inputs: usize,
    /// Outputs of each head.
    pub classes: usize,
    /// Whether layers have biases.
    pub bias: bool,
    /// One head or two.
    pub heads: Heads,
    /// Hidden widths of the original models.
    pub hidden: heapless::Vec<usize, MAX_HIDDEN>,
    /// Pairs merged per hidden layer.
    pub merged_pairs: heapless::Vec<usize, MAX_HIDDEN>,
    /// Widths of the merged hidden layers, `2 n - k`.
    pub merged_widths: heapless::Vec<usize, MAX_HIDDEN>,
    /// f32 values of the merged weights.
    pub output_len: usize,
    /// f64 elements of scratch [`mlp_merge`](super::mlp_merge) needs.
    pub scratch_len: usize,
    /// Elements of index scratch it needs.
    pub index_len: usize,
    /// Right-hand sides per solve.
    pub(super) rhs_chunk: usize,
    /// Which form solves a block.
    pub(super) form: LsForm,
    /// What the ridge pulls towards (copies need the permute-and-average prior).
    pub(super) ridge_toward: RidgeToward,
}

impl MlpMergePlan {
    /// Hidden layers.
    pub fn hidden_layers(&self) -> usize {
        self.hidden.len()
    }

    /// Heads of the merged network (1 or 2).
    pub fn head_count(&self) -> usize {
        match self.heads {
            Heads::Shared => 1,
            Heads::Separate => 2,
        }
    }

    /// Input width of merged hidden layer `l` (or of the heads for `l = hidden_layers()`).
    pub fn layer_inputs(&self, l: usize) -> usize {
        if l == 0 {
            self.inputs
        } else {
            self.merged_widths[l - 1]
        }
    }

    /// Output width of fitted layer `f` (hidden layers, then the heads).
    pub fn layer_outputs(&self, f: usize) -> usize {
        if f < self.hidden.len() {
            self.merged_widths[f]
        } else {
            self.classes
        }
    }

    /// Fitted layers: the hidden layers, then the heads.
    pub fn fitted_layers(&self) -> usize {
        self.hidden.len() + self.head_count()
    }

    /// Where fitted layer `f` starts in the output buffer.
    fn layer_start(&self, f: usize) -> usize {
        (0..f)
            .map(|i| self.layer_len(i))
            .fold(0usize, usize::saturating_add)
    }

    /// f32 values of fitted layer `f`: weight, then bias.
    fn layer_len(&self, f: usize) -> usize {
        let l = f.min(self.hidden.len());
        let (o, i) = (self.layer_outputs(f), self.layer_inputs(l));
        o.saturating_mul(i)
            .saturating_add(if self.bias { o } else { 0 })
    }

    /// The dense weight of fitted layer `f` (hidden layers `0..hidden_layers()`, then head `a`
    /// or the shared head, then head `b`) in the output buffer: `outputs x inputs` row-major.
    pub fn weight_range(&self, f: usize) -> Range<usize> {
        let start = self.layer_start(f);
        let l = f.min(self.hidden.len());
        start..start + self.layer_outputs(f) * self.layer_inputs(l)
    }

    /// The bias of fitted layer `f` in the output buffer (`None` without biases).
    pub fn bias_range(&self, f: usize) -> Option<Range<usize>> {
        let end = self.weight_range(f).end;
        self.bias.then(|| end..end + self.layer_outputs(f))
    }

    /// Bytes of the caller's buffers: merged weights, f64 scratch and index scratch.
    pub fn bytes(&self) -> (usize, usize, usize) {
        (
            self.output_len.saturating_mul(4),
            self.scratch_len.saturating_mul(8),
            self.index_len.saturating_mul(core::mem::size_of::<usize>()),
        )
    }

    /// How the rows of fitted layer `f` are formed (hidden layer `g` in its merged layout, the
    /// shared head from the mean logits, head `a` from A's, head `b` from B's).
    fn target(&self, f: usize) -> TargetRule {
        let l = self.hidden.len();
        if f < l {
            TargetRule::Layout(f)
        } else {
            match (self.heads, f - l) {
                (Heads::Shared, _) => TargetRule::Average,
                (Heads::Separate, 0) => TargetRule::OnlyA,
                (Heads::Separate, _) => TargetRule::OnlyB,
            }
        }
    }

    /// The driver's schedule: one group per hidden layer, the fitted layers in order (built
    /// when needed, not kept: the plan stays small on a device's stack).
    pub(super) fn schedule(&self) -> MergeSchedule {
        let l = self.hidden.len();
        let mut groups = heapless::Vec::new();
        for (&width, &merged) in self.hidden.iter().zip(&self.merged_pairs) {
            // At most MAX_HIDDEN <= MAX_GROUPS groups.
            let _ = groups.push(GroupPlan { width, merged });
        }
        let mut layers = heapless::Vec::new();
        for f in 0..self.fitted_layers() {
            let (input, in_channels) = match f.min(l) {
                0 => (LayerInput::Samples, self.inputs),
                i => (LayerInput::Group(i - 1), self.hidden[i - 1]),
            };
            let weight = self.weight_range(f);
            // At most MAX_HIDDEN + 2 <= MAX_FITTED layers.
            let _ = layers.push(FittedLayer {
                input,
                in_channels,
                patch: 1,
                target: self.target(f),
                outputs: self.layer_outputs(f),
                bias: self.bias,
                weight_start: weight.start,
                bias_start: self.bias_range(f).map_or(weight.end, |r| r.start),
                rows_per_sample: 1,
            });
        }
        MergeSchedule {
            groups,
            layers,
            samples: self.samples,
            ridge_toward: self.ridge_toward,
            form: self.form,
            rhs_chunk: self.rhs_chunk,
        }
    }

    /// Widest activation of the original models (hidden layers and logits).
    pub(super) fn original_width(&self) -> usize {
        self.hidden
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .max(self.classes)
    }

    /// Widest merged hidden layer (at least 1).
    pub(super) fn merged_width(&self) -> usize {
        self.merged_widths.iter().copied().max().unwrap_or(0).max(1)
    }
}

/// Checked arithmetic for buffer sizes.
fn mul(a: usize, b: usize) -> Result<usize, MlpMergeError> {
    a.checked_mul(b).ok_or(MlpMergeError::SizeOverflow)
}

fn add(a: usize, b: usize) -> Result<usize, MlpMergeError> {
    a.checked_add(b).ok_or(MlpMergeError::SizeOverflow)
}

fn check_dims(dims: &MlpDims<'_>) -> Result<(), MlpMergeError> {
    if dims.hidden.len() > MAX_HIDDEN {
        return Err(MlpMergeError::TooManyLayers {
            hidden: dims.hidden.len(),
            max: MAX_HIDDEN,
        });
    }
    if dims.inputs == 0 || dims.classes == 0 {
        return Err(MlpMergeError::EmptyLayer { layer: None });
    }
    if let Some(l) = dims.hidden.iter().position(|&w| w == 0) {
        return Err(MlpMergeError::EmptyLayer { layer: Some(l) });
    }
    Ok(())
}

fn check_params(params: &MlpMergeParams) -> Result<(), MlpMergeError> {
    let r = params.relative_ridge;
    if !(r.is_finite() && r > 0.0) {
        return Err(MlpMergeError::InvalidRidge { relative: r });
    }
    Ok(())
}

/// The plan for merging two MLPs of shape `dims` on `samples` merge samples under `budget`
/// with `params`: ratios, merged widths, the output layout and the buffer sizes (see the
/// [module docs](super) for the scratch formula).
pub fn mlp_merge_plan(
    dims: &MlpDims<'_>,
    heads: Heads,
    samples: usize,
    budget: f64,
    params: &MlpMergeParams,
) -> Result<MlpMergePlan, MlpMergeError> {
    check_dims(dims)?;
    if samples == 0 {
        return Err(MlpMergeError::NoSamples);
    }
    check_budget(budget).map_err(|_| MlpMergeError::BudgetOutOfRange { budget })?;
    check_params(params)?;
    let l = dims.hidden.len();
    // The budget model of the host: one cost per linear layer, groups in layer order.
    let mut costs = [LayerCost {
        input_group: None,
        output_group: None,
        macs: 0.0,
        weights: 0.0,
        biases: 0.0,
    }; MAX_HIDDEN + 1];
    let mut width_in = dims.inputs;
    for (i, cost) in costs.iter_mut().enumerate().take(l + 1) {
        let out = if i < l { dims.hidden[i] } else { dims.classes };
        *cost = LayerCost {
            input_group: i.checked_sub(1),
            output_group: (i < l).then_some(i),
            macs: (width_in as u64).saturating_mul(out as u64) as f64,
            weights: (width_in as u64).saturating_mul(out as u64) as f64,
            biases: if dims.bias { out as f64 } else { 0.0 },
        };
        width_in = out;
    }
    let costs = &costs[..l + 1];
    let ratio = uniform_ratio(costs, l, budget).map_err(|e| match e {
        BudgetError::OutOfRange { budget } => MlpMergeError::BudgetOutOfRange { budget },
        // Costs are built above from non-zero widths: only overflow to infinity is left.
        _ => MlpMergeError::SizeOverflow,
    })?;
    let ratios = [ratio; MAX_HIDDEN];
    let mut plan = MlpMergePlan {
        ratio,
        flop_ratio: flop_ratio(costs, &ratios[..l]),
        samples,
        inputs: dims.inputs,
        classes: dims.classes,
        bias: dims.bias,
        heads,
        hidden: heapless::Vec::new(),
        merged_pairs: heapless::Vec::new(),
        merged_widths: heapless::Vec::new(),
        output_len: 0,
        scratch_len: 0,
        index_len: 0,
        rhs_chunk: params.rhs_chunk.max(1),
        form: params.form,
        ridge_toward: params.ridge_toward,
    };
    for &n in dims.hidden {
        let k = merged_pairs(n, ratio);
        let m = add(n, n - k)?;
        // Capacity was checked: at most MAX_HIDDEN layers.
        let _ = plan.hidden.push(n);
        let _ = plan.merged_pairs.push(k);
        let _ = plan.merged_widths.push(m);
    }
    let mut output_len = 0usize;
    for f in 0..plan.fitted_layers() {
        let (o, i) = (
            plan.layer_outputs(f),
            plan.layer_inputs(f.min(plan.hidden.len())),
        );
        output_len = add(output_len, add(mul(o, i)?, if dims.bias { o } else { 0 })?)?;
    }
    plan.output_len = output_len;
    let mut index_len = 0usize;
    for &n in dims.hidden {
        index_len = add(index_len, mul(4, n)?)?;
    }
    plan.index_len = index_len;
    plan.scratch_len = scratch_len(&plan)?;
    Ok(plan)
}

/// The f64 scratch of the module docs' formula.
fn scratch_len(plan: &MlpMergePlan) -> Result<usize, MlpMergeError> {
    let n = plan.samples;
    let acts = add(mul(4, plan.original_width())?, mul(2, plan.merged_width())?)?;
    let mut work = 0usize;
    for &w in &plan.hidden {
        let matching = add(add(mul(w, w)?, auction_scratch_len(w))?, mul(4, w)?)?;
        work = work.max(matching);
    }
    let s = &plan.schedule();
    for f in (0..plan.fitted_layers()).filter(|&f| !s.copies(f)) {
        for block in s.blocks(f) {
            let cols = s.columns(f, &block);
            let k = cols.len();
            let c = s.chunk(block.rows.len());
            let need = if s.dual(f, k) {
                let kernel = packed_len(n);
                if kernel == usize::MAX {
                    return Err(MlpMergeError::SizeOverflow);
                }
                let gathered = match s.layers[f].input {
                    LayerInput::Samples => 0,
                    LayerInput::Group(_) => mul(n, cols.inputs())?,
                };
                add(add(kernel, mul(n, c)?)?, gathered)?
            } else {
                add(add(packed_len(k), mul(k + 1, c)?)?, k)?
            };
            work = work.max(need);
        }
    }
    add(acts, work)
}

/// Checks one model's layers against the plan's shapes.
fn check_model(
    plan: &MlpMergePlan,
    model: Model,
    layers: &[LayerRef<'_>],
) -> Result<(), MlpMergeError> {
    let l = plan.hidden.len();
    if layers.len() != l + 1 {
        return Err(MlpMergeError::ShapeMismatch {
            operand: MlpOperand::Layers(model),
            expected: (l + 1, 1),
            found: layers.len(),
        });
    }
    let mut width_in = plan.inputs;
    for (i, layer) in layers.iter().enumerate() {
        let out = if i < l { plan.hidden[i] } else { plan.classes };
        if layer.weight.len() != out.saturating_mul(width_in) {
            return Err(MlpMergeError::ShapeMismatch {
                operand: MlpOperand::Weight(model, i),
                expected: (out, width_in),
                found: layer.weight.len(),
            });
        }
        match layer.bias {
            Some(_) if !plan.bias => {
                return Err(MlpMergeError::BiasMismatch {
                    operand: MlpOperand::Bias(model, i),
                    expected: false,
                });
            }
            None if plan.bias => {
                return Err(MlpMergeError::BiasMismatch {
                    operand: MlpOperand::Bias(model, i),
                    expected: true,
                });
            }
            Some(b) if b.len() != out => {
                return Err(MlpMergeError::ShapeMismatch {
                    operand: MlpOperand::Bias(model, i),
                    expected: (out, 1),
                    found: b.len(),
                });
            }
            _ => {}
        }
        width_in = out;
    }
    Ok(())
}

fn check_finite(operand: MlpOperand, values: &[f32]) -> Result<(), MlpMergeError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(MlpMergeError::NonFinite { operand, index }),
        None => Ok(()),
    }
}

/// The samples' values must be finite (for bytes: the table's values of the bytes present).
fn check_samples(samples: &Samples<'_>) -> Result<(), MlpMergeError> {
    match *samples {
        Samples::F32(x) => check_finite(MlpOperand::Samples, x),
        Samples::U8 { data, table } => {
            match data
                .iter()
                .position(|&v| !table[usize::from(v)].is_finite())
            {
                Some(index) => Err(MlpMergeError::NonFinite {
                    operand: MlpOperand::Samples,
                    index,
                }),
                None => Ok(()),
            }
        }
    }
}

/// Checks a merge's inputs and buffers (in the order [`mlp_merge`](super::mlp_merge)
/// documents) and returns its plan.
pub(super) fn validate(
    inputs: &MlpMergeInputs<'_>,
    params: &MlpMergeParams,
    out: usize,
    scratch: usize,
    indices: usize,
) -> Result<MlpMergePlan, MlpMergeError> {
    let dims = &inputs.dims;
    check_dims(dims)?;
    let d = dims.inputs;
    let n = inputs.samples.len() / d;
    // A provisional plan for the shapes only (the budget is checked after the shapes).
    let shapes = mlp_merge_plan(
        dims,
        inputs.heads,
        n.max(1),
        1.0,
        &MlpMergeParams::default(),
    )?;
    check_model(&shapes, Model::A, inputs.a)?;
    check_model(&shapes, Model::B, inputs.b)?;
    if inputs.samples.len() != n * d {
        return Err(MlpMergeError::ShapeMismatch {
            operand: MlpOperand::Samples,
            expected: (n, d),
            found: inputs.samples.len(),
        });
    }
    if n == 0 {
        return Err(MlpMergeError::NoSamples);
    }
    let plan = mlp_merge_plan(dims, inputs.heads, n, inputs.budget, params)?;
    for (kind, needed, provided) in [
        (ScratchKind::Output, plan.output_len, out),
        (ScratchKind::Scratch, plan.scratch_len, scratch),
        (ScratchKind::Indices, plan.index_len, indices),
    ] {
        if provided < needed {
            return Err(MlpMergeError::ScratchTooSmall {
                kind,
                needed,
                provided,
            });
        }
    }
    for (model, layers) in [(Model::A, inputs.a), (Model::B, inputs.b)] {
        for (i, layer) in layers.iter().enumerate() {
            check_finite(MlpOperand::Weight(model, i), layer.weight)?;
            if let Some(b) = layer.bias {
                check_finite(MlpOperand::Bias(model, i), b)?;
            }
        }
    }
    check_samples(&inputs.samples)?;
    Ok(plan)
}
