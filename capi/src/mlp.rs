//! The whole PLeaS merge of two MLPs (`pleas_core::merge::mlp`): matching, budget, sequential
//! least squares and heads, in caller-owned memory.
//!
//! Two MLPs of one shape (`inputs -> hidden[0] -> ... -> classes`, ReLU between layers,
//! weights `out x in` row-major as PyTorch stores them) are merged on `n` unlabeled samples
//! into one MLP of `budget` (in `[1, 2]`) times the FLOPs of one model. The result is the
//! network `pleas merge` builds for an MLP with its default settings (see docs/MERGE.md).
//!
//! ```c
//! pleas_mlp_dims dims = {.inputs = 784, .hidden_layers = 2, .hidden = {64, 64},
//!                        .classes = 5, .bias = 1, .heads = PLEAS_MLP_HEADS_SEPARATE};
//! static const pleas_mlp_model_f32 a = {{{a_w0, a_b0}, {a_w1, a_b1}, {a_head_w, a_head_b}}};
//! pleas_mlp_merge_plan plan;
//! pleas_mlp_merge_plan_f32(&dims, n, 1.2, NULL, &plan);     /* sizes of the three buffers */
//! pleas_mlp_merge_f32(&dims, &a, &b, samples, n, 1.2, NULL,
//!                     merged, plan.output_len, &info,
//!                     scratch, plan.scratch_len, indices, plan.index_len);
//! /* or, with 8-bit images and the table of their normalised values: */
//! pleas_mlp_merge_u8(&dims, &a, &b, pixels, n, table, 1.2, NULL, merged, ...);
//! ```
//!
//! The models' weights and the samples are only read (they can stay in flash). The merged
//! network is written into one f32 buffer: for each fitted layer `f` (the hidden layers, then
//! head `a` or the shared head, then head `b`), its dense weight
//! (`plan.layer_outputs[f] x plan.layer_inputs[f]` row-major at `plan.weight_offset[f]`; zero
//! between A-only and B-only units, and head `a` is zero on the B-only units, head `b` on the
//! A-only ones), then its bias (at `plan.bias_offset[f]`). The merged network is the hidden
//! layers with ReLU, then the heads.
//!
//! The scratch is `plan.scratch_len` doubles, the index scratch `plan.index_len` `size_t`.
//! For the 784-64-64 pair of the firmware example (two 5-way heads, 250 samples) that is
//! 65 kB of scratch and 512 indices, plus 220 kB (budget 1.0), 265 kB (1.2) or 473 kB (2.0)
//! of merged weights: the first layer reads the samples both models share, so its
//! permute-and-average weights are its exact fit and it needs no solve. With the ridge towards
//! zero it is solved, in sample space because it has more columns (785) than samples, and its
//! packed kernel (`n (n + 1) / 2` doubles) makes the scratch 286 kB.

use pleas_core::merge::mlp::{
    self as core_mlp, GroupInfo, Heads, LayerFitInfo, LayerRef, LsForm, MAX_HIDDEN, MlpDims,
    MlpMergeInfo, MlpMergeInputs, MlpMergeParams, MlpMergePlan, RidgeToward,
};

use crate::auction::{pleas_auction_info, pleas_auction_params};
use crate::check::{self, In, Region, disjoint, input, output, product};
use crate::pleas_status::{self, PLEAS_ERROR_ARGUMENT, PLEAS_ERROR_LENGTH};
use crate::samples::{SampleIn, SamplePtr};
use crate::status::run;

/// Most hidden layers an MLP may have.
pub const PLEAS_MLP_MAX_HIDDEN: usize = 8;
/// Most layers of one model: the hidden layers and the head.
pub const PLEAS_MLP_MAX_LAYERS: usize = 9;
/// Most fitted layers of a merged network: the hidden layers and two heads.
pub const PLEAS_MLP_MAX_FITTED: usize = 10;

const _: () = assert!(
    PLEAS_MLP_MAX_HIDDEN == MAX_HIDDEN
        && PLEAS_MLP_MAX_LAYERS == MAX_HIDDEN + 1
        && PLEAS_MLP_MAX_FITTED == MAX_HIDDEN + 2
);

/// `pleas_mlp_dims.heads`: both models share one label space; the merged network has one
/// head, fitted to the mean of both models' logits.
pub const PLEAS_MLP_HEADS_SHARED: u32 = 0;
/// `pleas_mlp_dims.heads`: the models have different label spaces; the merged network has
/// head `a` (on the merged and A-only units, fitted to A's logits) and head `b` (merged and
/// B-only units, B's logits).
pub const PLEAS_MLP_HEADS_SEPARATE: u32 = 1;

/// `pleas_mlp_merge_params.form`: each block by its shape, the dual (sample-space) form when
/// it has more columns (bias included) than there are samples, else the primal form (the
/// default; the least memory).
pub const PLEAS_MLP_FORM_AUTO: u32 = 0;
/// `pleas_mlp_merge_params.form`: every block in the primal form (the Gram of its columns).
pub const PLEAS_MLP_FORM_PRIMAL: u32 = 1;
/// `pleas_mlp_merge_params.form`: every block in the dual form (the kernel of the samples).
pub const PLEAS_MLP_FORM_DUAL: u32 = 2;

/// `pleas_mlp_merge_params.ridge_toward`: the ridge pulls towards the permute-and-average
/// weights (the default, as `pleas merge --ridge-toward average`).
pub const PLEAS_MLP_RIDGE_TOWARD_AVERAGE: u32 = 0;
/// `pleas_mlp_merge_params.ridge_toward`: the ridge pulls towards zero (plain ridge).
pub const PLEAS_MLP_RIDGE_TOWARD_ZERO: u32 = 1;

/// The shape of the two MLPs and of the merge's heads.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct pleas_mlp_dims {
    /// Input features (784 for 28 x 28 images); at least 1.
    pub inputs: usize,
    /// Hidden layers, at most `PLEAS_MLP_MAX_HIDDEN`.
    pub hidden_layers: usize,
    /// Widths of the hidden layers (the first `hidden_layers` entries; each at least 1).
    pub hidden: [usize; PLEAS_MLP_MAX_HIDDEN],
    /// Outputs of each model's head; at least 1.
    pub classes: usize,
    /// 1 if every layer has a bias, 0 if none has.
    pub bias: u32,
    /// `PLEAS_MLP_HEADS_SEPARATE` or `PLEAS_MLP_HEADS_SHARED`.
    pub heads: u32,
}

/// One linear layer of a model: `weight` is `out x in` row-major, `bias` has `out` values (or
/// is NULL when the MLP has no biases). Both are only read.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy)]
pub struct pleas_mlp_layer_f32 {
    /// `out x in` weights.
    pub weight: *const f32,
    /// `out` biases, or NULL.
    pub bias: *const f32,
}

/// One model: its hidden layers, then its head (the first `hidden_layers + 1` entries are
/// read, the others are ignored).
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy)]
pub struct pleas_mlp_model_f32 {
    /// `layers[l]` for `l < hidden_layers` is hidden layer `l`; `layers[hidden_layers]` is the
    /// head.
    pub layers: [pleas_mlp_layer_f32; PLEAS_MLP_MAX_LAYERS],
}

/// Knobs of the MLP merge; the defaults are those of `pleas merge`. Fill with
/// `pleas_mlp_merge_params_init()`, then change what you need; pass NULL for the defaults.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct pleas_mlp_merge_params {
    /// Ridge relative to the mean diagonal of each block's Gram; finite and positive.
    /// Default 1e-6.
    pub relative_ridge: f64,
    /// How many times a block's ridge may be multiplied by 10 after a failed factorization.
    /// Default 4.
    pub max_retries: u32,
    /// `PLEAS_MLP_RIDGE_TOWARD_AVERAGE` (default) or `PLEAS_MLP_RIDGE_TOWARD_ZERO`.
    pub ridge_toward: u32,
    /// `PLEAS_MLP_FORM_AUTO` (default), `PLEAS_MLP_FORM_PRIMAL` or `PLEAS_MLP_FORM_DUAL`.
    pub form: u32,
    /// Output rows solved per pass over the samples (each pass recomputes the activations):
    /// more rows need more scratch and fewer passes. Default 16; 0 counts as 1.
    pub rhs_chunk: usize,
    /// The auctions that match the hidden units.
    pub auction: pleas_auction_params,
}

impl From<MlpMergeParams> for pleas_mlp_merge_params {
    fn from(p: MlpMergeParams) -> Self {
        Self {
            relative_ridge: p.relative_ridge,
            max_retries: p.max_retries,
            ridge_toward: match p.ridge_toward {
                RidgeToward::Average => PLEAS_MLP_RIDGE_TOWARD_AVERAGE,
                RidgeToward::Zero => PLEAS_MLP_RIDGE_TOWARD_ZERO,
            },
            form: match p.form {
                LsForm::Auto => PLEAS_MLP_FORM_AUTO,
                LsForm::Primal => PLEAS_MLP_FORM_PRIMAL,
                LsForm::Dual => PLEAS_MLP_FORM_DUAL,
            },
            rhs_chunk: p.rhs_chunk,
            auction: p.auction.into(),
        }
    }
}

impl TryFrom<pleas_mlp_merge_params> for MlpMergeParams {
    type Error = pleas_status;

    fn try_from(p: pleas_mlp_merge_params) -> Result<Self, pleas_status> {
        let toward = match p.ridge_toward {
            PLEAS_MLP_RIDGE_TOWARD_AVERAGE => RidgeToward::Average,
            PLEAS_MLP_RIDGE_TOWARD_ZERO => RidgeToward::Zero,
            _ => return Err(PLEAS_ERROR_ARGUMENT),
        };
        let form = match p.form {
            PLEAS_MLP_FORM_AUTO => LsForm::Auto,
            PLEAS_MLP_FORM_PRIMAL => LsForm::Primal,
            PLEAS_MLP_FORM_DUAL => LsForm::Dual,
            _ => return Err(PLEAS_ERROR_ARGUMENT),
        };
        Ok(MlpMergeParams::default()
            .with_relative_ridge(p.relative_ridge)
            .with_max_retries(p.max_retries)
            .with_ridge_toward(toward)
            .with_form(form)
            .with_rhs_chunk(p.rhs_chunk)
            .with_auction(p.auction.into()))
    }
}

/// What a merge will do and the buffers it needs, from `pleas_mlp_merge_plan_f32()`. Per
/// fitted layer `f < fitted_layers`: the hidden layers, then head `a` (or the shared head),
/// then head `b`. Entries beyond the counts are 0.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct pleas_mlp_merge_plan {
    /// Fraction of every hidden layer's units kept separate (one ratio for all layers).
    pub ratio: f64,
    /// FLOP ratio of the merged network to one model (at most the budget).
    pub flop_ratio: f64,
    /// Merge samples the plan is for.
    pub samples: usize,
    /// Hidden layers.
    pub hidden_layers: usize,
    /// Pairs of units merged per hidden layer.
    pub merged_pairs: [usize; PLEAS_MLP_MAX_HIDDEN],
    /// Widths of the merged hidden layers (`2 hidden - merged_pairs`).
    pub merged_widths: [usize; PLEAS_MLP_MAX_HIDDEN],
    /// Fitted layers: hidden layers plus one or two heads.
    pub fitted_layers: usize,
    /// Rows of each fitted layer's weight (outputs).
    pub layer_outputs: [usize; PLEAS_MLP_MAX_FITTED],
    /// Columns of each fitted layer's weight (inputs).
    pub layer_inputs: [usize; PLEAS_MLP_MAX_FITTED],
    /// Where each fitted layer's weight starts in the merged buffer (floats).
    pub weight_offset: [usize; PLEAS_MLP_MAX_FITTED],
    /// Where each fitted layer's bias starts in the merged buffer (floats; meaningless
    /// without biases).
    pub bias_offset: [usize; PLEAS_MLP_MAX_FITTED],
    /// Floats of the merged network (the `merged` buffer).
    pub output_len: usize,
    /// Doubles of scratch (the `scratch` buffer): the peak the merge needs.
    pub scratch_len: usize,
    /// `size_t` of index scratch (the `indices` buffer).
    pub index_len: usize,
}

impl pleas_mlp_merge_plan {
    fn from_core(p: &MlpMergePlan) -> Self {
        let mut c = Self {
            ratio: p.ratio,
            flop_ratio: p.flop_ratio,
            samples: p.samples,
            hidden_layers: p.hidden_layers(),
            fitted_layers: p.fitted_layers(),
            output_len: p.output_len,
            scratch_len: p.scratch_len,
            index_len: p.index_len,
            ..Self::default()
        };
        c.merged_pairs[..p.merged_pairs.len()].copy_from_slice(&p.merged_pairs);
        c.merged_widths[..p.merged_widths.len()].copy_from_slice(&p.merged_widths);
        for f in 0..p.fitted_layers() {
            let w = p.weight_range(f);
            c.layer_outputs[f] = p.layer_outputs(f);
            c.layer_inputs[f] = p.layer_inputs(f.min(p.hidden_layers()));
            c.weight_offset[f] = w.start;
            c.bias_offset[f] = p.bias_range(f).map_or(w.end, |b| b.start);
        }
        c
    }
}

/// How one hidden layer was matched.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct pleas_mlp_group_info {
    /// Units per model.
    pub width: usize,
    /// Pairs merged.
    pub merged: usize,
    /// Width in the merged network.
    pub merged_width: usize,
    /// `sum_i S[i, P(i)]` of the assignment (neg-l2 similarities).
    pub total_score: f64,
    /// Mean score of the merged pairs (NaN when none is merged).
    pub mean_merged_score: f64,
    /// What the auction reports.
    pub auction: pleas_auction_info,
}

impl From<&GroupInfo> for pleas_mlp_group_info {
    fn from(g: &GroupInfo) -> Self {
        Self {
            width: g.width,
            merged: g.merged,
            merged_width: g.merged_width,
            total_score: g.total_score,
            mean_merged_score: g.mean_merged_score,
            auction: g.auction.into(),
        }
    }
}

/// How one fitted layer was solved.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct pleas_mlp_layer_info {
    /// Output blocks that kept their permute-and-average weights without a solve: the layer
    /// reads only exact copies of the models' units (the merge samples, or hidden layers with
    /// no merged pair that were copies themselves), with the ridge towards those weights, so
    /// they are its exact fit. The first layer always; every layer at budget 2.0.
    pub copied_blocks: usize,
    /// Output blocks solved in the primal form (the Gram of the block's columns).
    pub primal_blocks: usize,
    /// Output blocks solved in the dual form (the kernel of the samples).
    pub dual_blocks: usize,
    /// Largest ridge used over the blocks.
    pub ridge: f64,
    /// Most retries of any block.
    pub retries: u32,
}

impl From<&LayerFitInfo> for pleas_mlp_layer_info {
    fn from(l: &LayerFitInfo) -> Self {
        Self {
            copied_blocks: l.copied_blocks,
            primal_blocks: l.primal_blocks,
            dual_blocks: l.dual_blocks,
            ridge: l.ridge,
            retries: l.retries,
        }
    }
}

/// What a successful merge did. Entries beyond the counts are 0.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct pleas_mlp_merge_info {
    /// The plan the merge followed.
    pub plan: pleas_mlp_merge_plan,
    /// Per hidden layer: the matching.
    pub groups: [pleas_mlp_group_info; PLEAS_MLP_MAX_HIDDEN],
    /// Per fitted layer (hidden layers, then the heads): the least squares.
    pub layers: [pleas_mlp_layer_info; PLEAS_MLP_MAX_FITTED],
}

impl From<&MlpMergeInfo> for pleas_mlp_merge_info {
    fn from(i: &MlpMergeInfo) -> Self {
        let mut c = Self {
            plan: pleas_mlp_merge_plan::from_core(&i.plan),
            ..Self::default()
        };
        for (d, g) in c.groups.iter_mut().zip(&i.groups) {
            *d = g.into();
        }
        for (d, l) in c.layers.iter_mut().zip(&i.layers) {
            *d = l.into();
        }
        c
    }
}

/// Writes the default merge parameters into `params`.
///
/// Errors: `PLEAS_ERROR_ARGUMENT` (`params` NULL or misaligned).
///
/// # Safety
///
/// `params` must be NULL or point to a writable `pleas_mlp_merge_params`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_mlp_merge_params_init(
    params: *mut pleas_mlp_merge_params,
) -> pleas_status {
    run(|| {
        check::required(params.cast_const(), true)?;
        // SAFETY: checked non-NULL and aligned; writable by contract.
        unsafe { params.write(MlpMergeParams::default().into()) };
        Ok(())
    })
}

/// The dims after the checks the core cannot make on a C struct, with the heads.
fn core_dims(d: &pleas_mlp_dims) -> Result<(MlpDims<'_>, Heads), pleas_status> {
    if d.hidden_layers > PLEAS_MLP_MAX_HIDDEN {
        return Err(PLEAS_ERROR_LENGTH);
    }
    let bias = match d.bias {
        0 => false,
        1 => true,
        _ => return Err(PLEAS_ERROR_ARGUMENT),
    };
    let heads = match d.heads {
        PLEAS_MLP_HEADS_SHARED => Heads::Shared,
        PLEAS_MLP_HEADS_SEPARATE => Heads::Separate,
        _ => return Err(PLEAS_ERROR_ARGUMENT),
    };
    let dims = MlpDims {
        inputs: d.inputs,
        hidden: &d.hidden[..d.hidden_layers],
        classes: d.classes,
        bias,
    };
    Ok((dims, heads))
}

/// Reads the optional params struct (defaults when NULL).
///
/// # Safety
///
/// `params` must be NULL or point to a valid struct.
unsafe fn core_params(
    params: *const pleas_mlp_merge_params,
) -> Result<MlpMergeParams, pleas_status> {
    // SAFETY: NULL or a valid struct by contract.
    unsafe { check::optional(params, MlpMergeParams::default().into()) }?.try_into()
}

/// Fails with `PLEAS_ERROR_LENGTH` when a buffer of the plan cannot exist in memory (its size
/// in bytes beyond `isize`), which the core's element counts do not check.
fn check_bytes(plan: &MlpMergePlan) -> Result<(), pleas_status> {
    let fits = |len: usize, size: usize| {
        len.checked_mul(size)
            .is_some_and(|b| b <= isize::MAX as usize)
    };
    if fits(plan.output_len, 4)
        && fits(plan.scratch_len, 8)
        && fits(plan.index_len, core::mem::size_of::<usize>())
    {
        Ok(())
    } else {
        Err(PLEAS_ERROR_LENGTH)
    }
}

/// Plans the merge of two MLPs of shape `dims` on `samples` merge samples at `budget` (a
/// FLOP ratio to one model, in `[1, 2]`) with `params` (NULL: the defaults), into `plan`:
/// merged widths, the layout of the merged network and the lengths of the three buffers
/// `pleas_mlp_merge_f32()` takes. Nothing else is read or written.
///
/// Errors: `PLEAS_ERROR_ARGUMENT` (NULL or misaligned pointer, `plan` overlapping `dims` or
/// `params`, `bias` not 0 or 1, an unknown `heads`, `form` or `ridge_toward`, a budget outside
/// `[1, 2]` or NaN, a relative ridge that is not finite and positive), `PLEAS_ERROR_LENGTH`
/// (`hidden_layers` above `PLEAS_MLP_MAX_HIDDEN`, a width or `samples` of 0, buffers beyond
/// memory).
///
/// # Safety
///
/// `dims` must point to a valid `pleas_mlp_dims`, `plan` to a writable
/// `pleas_mlp_merge_plan`; `params` must be NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_mlp_merge_plan_f32(
    dims: *const pleas_mlp_dims,
    samples: usize,
    budget: f64,
    params: *const pleas_mlp_merge_params,
    plan: *mut pleas_mlp_merge_plan,
) -> pleas_status {
    run(|| {
        let dims_region = check::required(dims, false)?;
        let params_region = check::optional_input_region(params)?;
        let plan_region = check::required(plan.cast_const(), true)?;
        disjoint(&[dims_region, params_region, plan_region])?;
        // SAFETY: checked non-NULL and aligned; valid by contract.
        let d = unsafe { dims.read() };
        // SAFETY: NULL or valid by contract.
        let params = unsafe { core_params(params) }?;
        let (dims, heads) = core_dims(&d)?;
        let p = core_mlp::mlp_merge_plan(&dims, heads, samples, budget, &params)?;
        check_bytes(&p)?;
        // SAFETY: checked non-NULL and aligned, disjoint from the inputs; writable by contract.
        unsafe { plan.write(pleas_mlp_merge_plan::from_core(&p)) };
        Ok(())
    })
}

/// Regions of the buffers of one merge: the structs, every layer of both models, the samples
/// and the caller's buffers.
const MAX_REGIONS: usize = 3 + 2 * 2 * PLEAS_MLP_MAX_LAYERS + 6;

/// One model's checked layers: weight, and bias when given.
type CheckedLayers = [(In<f32>, Option<In<f32>>); PLEAS_MLP_MAX_LAYERS];

/// Checks the layers of one model against the dims and turns them into the core's layer
/// references (`None` for a NULL bias).
fn model_layers(
    dims: &MlpDims<'_>,
    m: &pleas_mlp_model_f32,
) -> Result<CheckedLayers, pleas_status> {
    let mut layers: CheckedLayers = core::array::from_fn(|_| (In::empty(), None));
    let count = dims.hidden.len() + 1;
    let mut width_in = dims.inputs;
    for (l, (layer, slot)) in m.layers.iter().zip(&mut layers).take(count).enumerate() {
        let out = dims.hidden.get(l).copied().unwrap_or(dims.classes);
        let w = input(layer.weight, product(out, width_in)?)?;
        let b = if layer.bias.is_null() {
            None
        } else {
            Some(input(layer.bias, out)?)
        };
        *slot = (w, b);
        width_in = out;
    }
    Ok(layers)
}

/// The body of both merges.
///
/// # Safety
///
/// As for `pleas_mlp_merge_f32()`, with the samples of `samples`.
unsafe fn merge_impl(
    dims: *const pleas_mlp_dims,
    a: *const pleas_mlp_model_f32,
    b: *const pleas_mlp_model_f32,
    samples: SamplePtr,
    n: usize,
    budget: f64,
    params: *const pleas_mlp_merge_params,
    merged: *mut f32,
    merged_len: usize,
    info: *mut pleas_mlp_merge_info,
    scratch: *mut f64,
    scratch_len: usize,
    indices: *mut usize,
    indices_len: usize,
) -> pleas_status {
    run(|| {
        let mut regions = [Region::EMPTY; MAX_REGIONS];
        regions[0] = check::required(dims, false)?;
        regions[1] = check::required(a, false)?;
        regions[2] = check::required(b, false)?;
        // SAFETY: checked non-NULL and aligned; valid by contract.
        let (d, ma, mb) = unsafe { (dims.read(), a.read(), b.read()) };
        // SAFETY: NULL or valid by contract.
        let params = unsafe { core_params(params) }?;
        let (dims, heads) = core_dims(&d)?;
        let la = model_layers(&dims, &ma)?;
        let lb = model_layers(&dims, &mb)?;
        let x = SampleIn::new(samples, product(n, dims.inputs)?)?;
        let mut out = output(merged, merged_len)?;
        let info_region = check::optional_region(info)?;
        let mut sc = output(scratch, scratch_len)?;
        let mut ix = output(indices, indices_len)?;
        let mut next = 3;
        for (w, bias) in la.iter().chain(&lb) {
            regions[next] = w.region;
            regions[next + 1] = bias.as_ref().map_or(Region::EMPTY, |b| b.region);
            next += 2;
        }
        let [x0, x1] = x.regions();
        for r in [x0, x1, out.region, info_region, sc.region, ix.region] {
            regions[next] = r;
            next += 1;
        }
        disjoint(&regions[..next])?;
        let layers = |l: &CheckedLayers| {
            l.each_ref().map(|(w, b)| LayerRef {
                // SAFETY: checked, disjoint from every writable buffer; sizes by contract.
                weight: unsafe { w.slice() },
                // SAFETY: as above.
                bias: b.as_ref().map(|b| unsafe { b.slice() }),
            })
        };
        let (ra, rb) = (layers(&la), layers(&lb));
        let count = dims.hidden.len() + 1;
        let inputs = MlpMergeInputs {
            dims,
            heads,
            a: &ra[..count],
            b: &rb[..count],
            // SAFETY: as above.
            samples: unsafe { x.samples() }?,
            budget,
        };
        // SAFETY: checked and disjoint from every other buffer; sizes by contract.
        let (out, sc, ix) = unsafe { (out.slice(), sc.slice(), ix.slice()) };
        let result = core_mlp::mlp_merge(&inputs, &params, out, sc, ix)?;
        // SAFETY: checked by `optional_region`; writable by contract.
        unsafe { check::write_optional(info, (&result).into()) }
    })
}

/// Merges the MLPs `a` and `b` of shape `dims` on `n` merge samples (`samples`, `n x inputs`
/// row-major, normalised as the models expect) at `budget` with `params` (NULL: the
/// defaults) into `merged` (`merged_len` floats, laid out as the plan describes), and
/// reports what it did in `info` (may be NULL). `scratch` (doubles) and `indices` (`size_t`)
/// are the caller's scratch; `merged_len`, `scratch_len` and `indices_len` must be at least
/// the `output_len`, `scratch_len` and `index_len` of `pleas_mlp_merge_plan_f32()` for the
/// same dims, `n`, budget and params. A bias pointer is NULL exactly when `dims->bias` is 0.
///
/// The models and the samples are only read (they can live in flash, and may overlap each
/// other); the writable buffers must not overlap anything. After an error `info` is not
/// written but `merged` may be (its content is then unspecified). The result does not
/// depend on `rhs_chunk`, nor on the form (up to rounding).
///
/// Errors found before anything is computed: `PLEAS_ERROR_ARGUMENT` (NULL or misaligned
/// pointer, overlapping buffers, a field or the budget out of its range as for the plan),
/// `PLEAS_ERROR_LENGTH` (as for the plan; `n` of 0), `PLEAS_ERROR_SIZE_MISMATCH` (a bias
/// given although `dims->bias` is 0, or missing although it is 1), `PLEAS_ERROR_SCRATCH` (a
/// buffer shorter than the plan asks for), `PLEAS_ERROR_NAN_INF` (a NaN or infinity among
/// the weights, biases or samples). Then, while merging: `PLEAS_ERROR_OVERFLOW` (activations
/// or merged weights overflow), `PLEAS_ERROR_SINGULAR` (a block's system is not positive
/// definite with the last ridge tried, e.g. all its inputs are zero).
///
/// # Safety
///
/// `dims`, `a` and `b` must point to valid structs; each of the first
/// `dims->hidden_layers + 1` layers of `a` and `b` must address `out x in` floats (`weight`)
/// and `out` floats or NULL (`bias`); `samples` must address `n * dims->inputs` floats;
/// `merged`, `scratch` and `indices` must address `merged_len`, `scratch_len` and
/// `indices_len` writable elements; `params` and `info` must be NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_mlp_merge_f32(
    dims: *const pleas_mlp_dims,
    a: *const pleas_mlp_model_f32,
    b: *const pleas_mlp_model_f32,
    samples: *const f32,
    n: usize,
    budget: f64,
    params: *const pleas_mlp_merge_params,
    merged: *mut f32,
    merged_len: usize,
    info: *mut pleas_mlp_merge_info,
    scratch: *mut f64,
    scratch_len: usize,
    indices: *mut usize,
    indices_len: usize,
) -> pleas_status {
    // SAFETY: forwarded contract.
    unsafe {
        merge_impl(
            dims,
            a,
            b,
            SamplePtr::F32(samples),
            n,
            budget,
            params,
            merged,
            merged_len,
            info,
            scratch,
            scratch_len,
            indices,
            indices_len,
        )
    }
}

/// `pleas_mlp_merge_f32()` on byte samples (`samples`, `n x inputs` bytes, e.g. 8-bit pixels)
/// read through `table` (256 floats: `table[v]` is the value the models take for byte `v`,
/// e.g. `v / 255.0f * 2.0f - 1.0f`). The bytes are read where they are (flash) and never
/// copied: no normalised copy of the samples is needed. The result is that of
/// `pleas_mlp_merge_f32()` on the samples mapped through the table, bit for bit; the plan is
/// the same. A table value that is not finite is refused (`PLEAS_ERROR_NAN_INF`) if a sample
/// uses it.
///
/// # Safety
///
/// As for `pleas_mlp_merge_f32()`, with `samples` addressing `n * dims->inputs` bytes and
/// `table` 256 floats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_mlp_merge_u8(
    dims: *const pleas_mlp_dims,
    a: *const pleas_mlp_model_f32,
    b: *const pleas_mlp_model_f32,
    samples: *const u8,
    n: usize,
    table: *const f32,
    budget: f64,
    params: *const pleas_mlp_merge_params,
    merged: *mut f32,
    merged_len: usize,
    info: *mut pleas_mlp_merge_info,
    scratch: *mut f64,
    scratch_len: usize,
    indices: *mut usize,
    indices_len: usize,
) -> pleas_status {
    // SAFETY: forwarded contract.
    unsafe {
        merge_impl(
            dims,
            a,
            b,
            SamplePtr::U8 {
                data: samples,
                table,
            },
            n,
            budget,
            params,
            merged,
            merged_len,
            info,
            scratch,
            scratch_len,
            indices,
            indices_len,
        )
    }
}
