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
use crate::merge::budget::{BudgetError, LayerCost, flop_ratio, merged_pairs, uniform_ratio};
use crate::merge::prior::block_is_copy;
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

/// The input of a fitted layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Input {
    /// The merge samples (no permutation group).
    Samples,
    /// The merged hidden layer `g` (after its ReLU).
    Hidden(usize),
}

/// One output block: its rows and which private input units it may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Block {
    /// Output rows.
    pub(super) rows: Range<usize>,
    /// Reads the A-only input units.
    pub(super) use_a: bool,
    /// Reads the B-only input units.
    pub(super) use_b: bool,
}

/// The input columns of a block: up to two ranges of the dense input, then the bias column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Columns {
    /// Ranges of dense input columns, in increasing order (the second may be empty).
    pub(super) ranges: [Range<usize>; 2],
    /// Whether the bias column follows.
    pub(super) bias: bool,
}

impl Columns {
    /// Input columns without the bias.
    pub(super) fn inputs(&self) -> usize {
        self.ranges[0].len() + self.ranges[1].len()
    }

    /// Columns, bias included.
    pub(super) fn len(&self) -> usize {
        self.inputs() + usize::from(self.bias)
    }

    /// The dense input column of block column `a` (`a < inputs()`).
    pub(super) fn at(&self, a: usize) -> usize {
        let first = self.ranges[0].len();
        if a < first {
            self.ranges[0].start + a
        } else {
            self.ranges[1].start + (a - first)
        }
    }

    /// Whether dense input column `c` is one of the block's.
    pub(super) fn contains(&self, c: usize) -> bool {
        self.ranges[0].contains(&c) || self.ranges[1].contains(&c)
    }
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

    /// Input of fitted layer `f` and how its rows are formed (hidden layer `g` in its merged
    /// layout, the shared head from the mean logits, head `a` from A's, head `b` from B's).
    pub(super) fn io(&self, f: usize) -> (Input, TargetRule) {
        let l = self.hidden.len();
        let input = if f.min(l) == 0 {
            Input::Samples
        } else {
            Input::Hidden(f.min(l) - 1)
        };
        let output = if f < l {
            TargetRule::Layout(f)
        } else {
            match (self.heads, f - l) {
                (Heads::Shared, _) => TargetRule::Average,
                (Heads::Separate, 0) => TargetRule::OnlyA,
                (Heads::Separate, _) => TargetRule::OnlyB,
            }
        };
        (input, output)
    }

    /// Width of an input.
    pub(super) fn input_width(&self, input: Input) -> usize {
        match input {
            Input::Samples => self.inputs,
            Input::Hidden(g) => self.merged_widths[g],
        }
    }

    /// The output blocks of fitted layer `f`. A layer reading the samples has one block over
    /// all its rows: every block would read all columns, so their systems are identical.
    pub(super) fn blocks(&self, f: usize) -> heapless::Vec<Block, 3> {
        let (input, output) = self.io(f);
        let rows = self.layer_outputs(f);
        let mut out = heapless::Vec::new();
        let mut push = |rows: Range<usize>, use_a: bool, use_b: bool| {
            if !rows.is_empty() {
                // At most three blocks are pushed.
                let _ = out.push(Block { rows, use_a, use_b });
            }
        };
        match (input, output) {
            (Input::Samples, _) => push(0..rows, true, true),
            (_, TargetRule::Layout(g)) => {
                let (k, n) = (self.merged_pairs[g], self.hidden[g]);
                push(0..k, true, true);
                push(k..n, true, false);
                push(n..rows, false, true);
            }
            (_, TargetRule::Average) => push(0..rows, true, true),
            (_, TargetRule::OnlyA) => push(0..rows, true, false),
            (_, TargetRule::OnlyB) => push(0..rows, false, true),
        }
        out
    }

    /// The input columns of a block of a layer reading `input`.
    pub(super) fn columns(&self, input: Input, block: &Block) -> Columns {
        let ranges = match input {
            Input::Samples => [0..self.inputs, 0..0],
            Input::Hidden(g) => {
                let (k, n, m) = (self.merged_pairs[g], self.hidden[g], self.merged_widths[g]);
                match (block.use_a, block.use_b) {
                    (true, true) => [0..m, 0..0],
                    (true, false) => [0..n, 0..0],
                    (false, true) => [0..k, n..m],
                    (false, false) => [0..k, 0..0],
                }
            }
        };
        Columns {
            ranges,
            bias: self.bias,
        }
    }

    /// Whether fitted layer `f` keeps its permute-and-average weights without a solve
    /// ([`block_is_copy`]): with the ridge towards them, when it reads only exact copies of
    /// the models' units. The first layer is always one; at budget 2.0 every layer is.
    pub(super) fn copies(&self, f: usize) -> bool {
        block_is_copy(self.ridge_toward, self.reads_exact(f))
    }

    /// Whether every input channel of fitted layer `f` is an exact copy of one model's unit
    /// ([`row_is_exact`](crate::merge::prior::row_is_exact)): the merge samples are; a hidden
    /// layer's units are when all are private (no merged pair) and its own layer read only
    /// exact channels (a block of a layer with a merged pair reads the merged units).
    fn reads_exact(&self, f: usize) -> bool {
        (0..f.min(self.hidden.len())).all(|g| self.merged_pairs[g] == 0)
    }

    /// Whether a block with `columns` columns (bias included) is solved in the dual form.
    pub(super) fn dual(&self, columns: usize) -> bool {
        self.form.dual(self.samples, columns)
    }

    /// Right-hand sides per solve for a block of `rows` rows.
    pub(super) fn chunk(&self, rows: usize) -> usize {
        self.rhs_chunk.min(rows).max(1)
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

fn check_budget(budget: f64) -> Result<(), MlpMergeError> {
    if (1.0..=2.0).contains(&budget) {
        Ok(())
    } else {
        Err(MlpMergeError::BudgetOutOfRange { budget })
    }
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
    check_budget(budget)?;
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
    for f in (0..plan.fitted_layers()).filter(|&f| !plan.copies(f)) {
        let (input, _) = plan.io(f);
        for block in plan.blocks(f) {
            let cols = plan.columns(input, &block);
            let k = cols.len();
            let c = plan.chunk(block.rows.len());
            let need = if plan.dual(k) {
                let kernel = packed_len(n);
                if kernel == usize::MAX {
                    return Err(MlpMergeError::SizeOverflow);
                }
                let gathered = match input {
                    Input::Samples => 0,
                    Input::Hidden(_) => mul(n, cols.inputs())?,
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
