//! The whole PLeaS merge of two small convolutional networks (`pleas_core::merge::cnn`), in
//! caller-owned memory: the same driver as the MLP merge, with the network given as the
//! compact graph of `pleas_cnn_forward_*` (`pleas_cnn_graph`, batch-norm included).
//!
//! The two models share the graph: conv, linear, batch-norm (folded into the conv or linear
//! layer before it, as `pleas merge --bn fold` folds it), ReLU, max / average pooling, global
//! average pooling and residual add layers (an add ties the permutation of its two operands:
//! one group, as `pleas merge` groups them), ending in one linear head that is the graph's
//! only output. Their parameters are one float buffer each, as `pleas_cnn_forward_f32()`
//! reads them. The merged network is written as the parameters of the graph the plan
//! describes (`plan.merged_layers`, `plan.merged_outputs`: each conv or linear layer widened
//! to its merged group, batch-norms folded away, and with `PLEAS_MLP_HEADS_SEPARATE` a second
//! head as the last layer), so it runs as it is through `pleas_cnn_forward_f32()`.
//!
//! ```c
//! pleas_cnn_merge_plan plan;
//! pleas_cnn_merge_plan_f32(&graph, PLEAS_MLP_HEADS_SEPARATE, n, 1.2, NULL, &plan);
//! pleas_cnn_merge_u8(&graph, a, a_len, b, b_len, pixels, n, table,
//!                    PLEAS_MLP_HEADS_SEPARATE, 1.2, NULL, merged, plan.output_len, &info,
//!                    scratch, plan.scratch_len, forward, plan.forward_len,
//!                    indices, plan.index_len);
//! pleas_cnn_graph merged_graph = {.channels = 1, .height = 28, .width = 28,
//!     .layers = plan.merged_layers, .layer_count = plan.merged_layer_count,
//!     .outputs = plan.merged_outputs, .output_count = plan.merged_output_count};
//! ```
//!
//! The knobs are those of the MLP merge (`pleas_mlp_merge_params`, NULL for the defaults),
//! and so are the per-group and per-layer reports.

use pleas_core::merge::cnn::{
    self as core_cnn, CnnMergeError, CnnMergeInfo, CnnMergeInputs, CnnMergePlan, Heads, MAX_FITTED,
    MAX_GROUPS,
};
use pleas_core::merge::mlp::MlpMergeParams;

use crate::check::{self, disjoint, input, output, product};
use crate::cnn::{GraphCopy, PLEAS_CNN_MAX_LAYERS, c_layer, pleas_cnn_graph, pleas_cnn_layer};
use crate::mlp::{
    PLEAS_MLP_HEADS_SEPARATE, PLEAS_MLP_HEADS_SHARED, pleas_mlp_group_info, pleas_mlp_layer_info,
    pleas_mlp_merge_params,
};
use crate::pleas_status::{
    self, PLEAS_ERROR_ARGUMENT, PLEAS_ERROR_INTERNAL, PLEAS_ERROR_LENGTH, PLEAS_ERROR_NAN_INF,
    PLEAS_ERROR_SCRATCH, PLEAS_ERROR_SIZE_MISMATCH,
};
use crate::samples::{SampleIn, SamplePtr};
use crate::status::run;

/// Most permutation groups of a CNN merge.
pub const PLEAS_CNN_MAX_GROUPS: usize = 16;
/// Most fitted layers of a merged CNN (one per group and two heads).
pub const PLEAS_CNN_MAX_FITTED: usize = 18;

const _: () = assert!(PLEAS_CNN_MAX_GROUPS == MAX_GROUPS && PLEAS_CNN_MAX_FITTED == MAX_FITTED);

/// What a CNN merge will do and the buffers it needs, from `pleas_cnn_merge_plan_f32()`.
/// Entries beyond the counts are 0.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct pleas_cnn_merge_plan {
    /// Fraction of every group's units kept separate (one ratio for all groups).
    pub ratio: f64,
    /// FLOP ratio of the merged network to one model (at most the budget).
    pub flop_ratio: f64,
    /// Merge samples the plan is for.
    pub samples: usize,
    /// Permutation groups (one per conv or linear layer before the head; the two operands of
    /// a residual add are one group).
    pub groups: usize,
    /// Units per model of each group.
    pub widths: [usize; PLEAS_CNN_MAX_GROUPS],
    /// Pairs of units merged per group.
    pub merged_pairs: [usize; PLEAS_CNN_MAX_GROUPS],
    /// Fitted layers: one per conv or linear layer before the head, and one or two heads.
    pub fitted_layers: usize,
    /// Floats of the merged parameters (the `merged` buffer).
    pub output_len: usize,
    /// Doubles of scratch (the `scratch` buffer).
    pub scratch_len: usize,
    /// Floats of forward scratch (the `forward` buffer): both models' folded parameters,
    /// then one network's activations and kernel scratch.
    pub forward_len: usize,
    /// `size_t` of index scratch (the `indices` buffer).
    pub index_len: usize,
    /// The merged network's layers (`merged_layer_count` of them).
    pub merged_layers: [pleas_cnn_layer; PLEAS_CNN_MAX_LAYERS],
    /// Layers of the merged network.
    pub merged_layer_count: usize,
    /// The merged network's output nodes: head `a` (or the shared head), then head `b`.
    pub merged_outputs: [usize; 2],
    /// Outputs of the merged network (1 or 2).
    pub merged_output_count: usize,
}

impl pleas_cnn_merge_plan {
    fn from_core(p: &CnnMergePlan) -> Self {
        let mut c = Self {
            ratio: p.ratio,
            flop_ratio: p.flop_ratio,
            samples: p.samples,
            groups: p.groups(),
            widths: [0; PLEAS_CNN_MAX_GROUPS],
            merged_pairs: [0; PLEAS_CNN_MAX_GROUPS],
            fitted_layers: p.fitted_layers(),
            output_len: p.output_len,
            scratch_len: p.scratch_len,
            forward_len: p.forward_len,
            index_len: p.index_len,
            merged_layers: [pleas_cnn_layer::default(); PLEAS_CNN_MAX_LAYERS],
            merged_layer_count: 0,
            merged_outputs: [0; 2],
            merged_output_count: 0,
        };
        for g in 0..p.groups() {
            if let Some((n, k)) = p.group(g) {
                c.widths[g] = n;
                c.merged_pairs[g] = k;
            }
        }
        let net = p.merged_network();
        for (d, l) in c.merged_layers.iter_mut().zip(net.layers) {
            *d = c_layer(l);
        }
        c.merged_layer_count = net.layers.len();
        c.merged_outputs[..net.outputs.len()].copy_from_slice(net.outputs);
        c.merged_output_count = net.outputs.len();
        c
    }
}

/// What a successful CNN merge did. Entries beyond the counts are 0.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct pleas_cnn_merge_info {
    /// The plan the merge followed.
    pub plan: pleas_cnn_merge_plan,
    /// Per group: the matching.
    pub groups: [pleas_mlp_group_info; PLEAS_CNN_MAX_GROUPS],
    /// Per fitted layer (conv and linear layers in order, head `b` last): the least squares.
    pub layers: [pleas_mlp_layer_info; PLEAS_CNN_MAX_FITTED],
}

impl pleas_cnn_merge_info {
    fn from_core(plan: &CnnMergePlan, i: &CnnMergeInfo) -> Self {
        let mut c = Self {
            plan: pleas_cnn_merge_plan::from_core(plan),
            groups: [pleas_mlp_group_info::default(); PLEAS_CNN_MAX_GROUPS],
            layers: [pleas_mlp_layer_info::default(); PLEAS_CNN_MAX_FITTED],
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

/// Where the CNN merge's errors land among the statuses.
impl From<CnnMergeError> for pleas_status {
    fn from(e: CnnMergeError) -> Self {
        match e {
            CnnMergeError::Network(e) => e.into(),
            CnnMergeError::UnsupportedLayer { .. }
            | CnnMergeError::NoHead
            | CnnMergeError::SpatialLinear { .. }
            | CnnMergeError::BudgetOutOfRange { .. }
            | CnnMergeError::InvalidRidge { .. } => PLEAS_ERROR_ARGUMENT,
            CnnMergeError::TooManyGroups { .. }
            | CnnMergeError::TooManyFitted { .. }
            | CnnMergeError::NoSamples
            | CnnMergeError::SizeOverflow => PLEAS_ERROR_LENGTH,
            CnnMergeError::ShapeMismatch { .. } => PLEAS_ERROR_SIZE_MISMATCH,
            CnnMergeError::ScratchTooSmall { .. } => PLEAS_ERROR_SCRATCH,
            CnnMergeError::NonFinite { .. } => PLEAS_ERROR_NAN_INF,
            CnnMergeError::Driver(d) => d.into(),
            _ => PLEAS_ERROR_INTERNAL,
        }
    }
}

fn core_heads(heads: u32) -> Result<Heads, pleas_status> {
    match heads {
        PLEAS_MLP_HEADS_SHARED => Ok(Heads::Shared),
        PLEAS_MLP_HEADS_SEPARATE => Ok(Heads::Separate),
        _ => Err(PLEAS_ERROR_ARGUMENT),
    }
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

/// Fails with `PLEAS_ERROR_LENGTH` when a buffer of the plan cannot exist in memory.
fn check_bytes(plan: &CnnMergePlan) -> Result<(), pleas_status> {
    let fits = |len: usize, size: usize| {
        len.checked_mul(size)
            .is_some_and(|b| b <= isize::MAX as usize)
    };
    if fits(plan.output_len, 4)
        && fits(plan.scratch_len, 8)
        && fits(plan.forward_len, 4)
        && fits(plan.index_len, core::mem::size_of::<usize>())
    {
        Ok(())
    } else {
        Err(PLEAS_ERROR_LENGTH)
    }
}

/// Plans the merge of two CNNs of architecture `graph` with `heads`
/// (`PLEAS_MLP_HEADS_SHARED` or `PLEAS_MLP_HEADS_SEPARATE`) on `samples` merge samples at
/// `budget` (a FLOP ratio to one model, in `[1, 2]`) with `params` (NULL: the defaults),
/// into `plan`: the merged network and the lengths of the four buffers
/// `pleas_cnn_merge_f32()` takes.
///
/// Errors: those of `pleas_cnn_forward_plan_f32()` for the graph; `PLEAS_ERROR_ARGUMENT`
/// (`plan` overlapping an input, an unknown `heads`, `form` or `ridge_toward`, a budget
/// outside `[1, 2]`, a ridge that is not finite and positive, a graph the merge does not
/// handle: a batch-norm that follows no conv or linear layer, a residual add of the network
/// input, a linear layer on a spatial map of a group, no linear head as the only output),
/// `PLEAS_ERROR_LENGTH` (`samples` of 0, more than `PLEAS_CNN_MAX_GROUPS` groups or
/// `PLEAS_CNN_MAX_GROUPS + 1` conv and linear layers, buffers beyond memory).
///
/// # Safety
///
/// `graph` as for `pleas_cnn_forward_plan_f32()`; `plan` must point to a writable
/// `pleas_cnn_merge_plan`; `params` must be NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_cnn_merge_plan_f32(
    graph: *const pleas_cnn_graph,
    heads: u32,
    samples: usize,
    budget: f64,
    params: *const pleas_mlp_merge_params,
    plan: *mut pleas_cnn_merge_plan,
) -> pleas_status {
    run(|| {
        // SAFETY: forwarded contract.
        let (g, [r0, r1, r2]) = unsafe { GraphCopy::read(graph) }?;
        let params_region = check::optional_input_region(params)?;
        let plan_region = check::required(plan.cast_const(), true)?;
        disjoint(&[r0, r1, r2, params_region, plan_region])?;
        // SAFETY: NULL or valid by contract.
        let params = unsafe { core_params(params) }?;
        let p =
            core_cnn::cnn_merge_plan(&g.network(), core_heads(heads)?, samples, budget, &params)?;
        check_bytes(&p)?;
        // SAFETY: checked non-NULL and aligned, disjoint from the inputs; writable by contract.
        unsafe { plan.write(pleas_cnn_merge_plan::from_core(&p)) };
        Ok(())
    })
}

/// The models' parameters and the merge's buffers, as the C entry points pass them.
struct MergeArgs {
    a: *const f32,
    a_len: usize,
    b: *const f32,
    b_len: usize,
    samples: SamplePtr,
    n: usize,
    heads: u32,
    budget: f64,
    params: *const pleas_mlp_merge_params,
    merged: *mut f32,
    merged_len: usize,
    info: *mut pleas_cnn_merge_info,
    scratch: *mut f64,
    scratch_len: usize,
    forward: *mut f32,
    forward_len: usize,
    indices: *mut usize,
    indices_len: usize,
}

/// Writes a merge's report into `info` if it is not NULL (in a frame of its own).
///
/// # Safety
///
/// `info` was checked by `optional_region`; writable by contract.
#[inline(never)]
unsafe fn write_info(
    info: *mut pleas_cnn_merge_info,
    plan: &CnnMergePlan,
    result: &CnnMergeInfo,
) -> Result<(), pleas_status> {
    if info.is_null() {
        return Ok(());
    }
    // SAFETY: forwarded contract.
    unsafe { check::write_optional(info, pleas_cnn_merge_info::from_core(plan, result)) }
}

/// The plan of a merge (in a frame of its own: a device's stack holds one plan at a time).
#[inline(never)]
fn plan_of(
    inputs: &CnnMergeInputs<'_>,
    n: usize,
    params: &MlpMergeParams,
) -> Result<CnnMergePlan, pleas_status> {
    let plan = core_cnn::cnn_merge_plan(&inputs.net, inputs.heads, n, inputs.budget, params)?;
    check_bytes(&plan)?;
    Ok(plan)
}

/// The body of both merges.
///
/// # Safety
///
/// As for `pleas_cnn_merge_f32()`.
unsafe fn merge_impl(graph: *const pleas_cnn_graph, m: MergeArgs) -> pleas_status {
    run(|| {
        // SAFETY: forwarded contract.
        let (g, [r0, r1, r2]) = unsafe { GraphCopy::read(graph) }?;
        // SAFETY: NULL or valid by contract.
        let params = unsafe { core_params(m.params) }?;
        let heads = core_heads(m.heads)?;
        let pa = input(m.a, m.a_len)?;
        let pb = input(m.b, m.b_len)?;
        let x = SampleIn::new(m.samples, product(m.n, g.input.len())?)?;
        let params_region = check::optional_input_region(m.params)?;
        let mut out = output(m.merged, m.merged_len)?;
        let info_region = check::optional_region(m.info)?;
        let mut sc = output(m.scratch, m.scratch_len)?;
        let mut fw = output(m.forward, m.forward_len)?;
        let mut ix = output(m.indices, m.indices_len)?;
        let [x0, x1] = x.regions();
        disjoint(&[
            r0,
            r1,
            r2,
            params_region,
            pa.region,
            pb.region,
            x0,
            x1,
            out.region,
            info_region,
            sc.region,
            fw.region,
            ix.region,
        ])?;
        let inputs = CnnMergeInputs {
            net: g.network(),
            heads,
            // SAFETY: checked, disjoint from every writable buffer; sizes by contract.
            a: unsafe { pa.slice() },
            // SAFETY: as above.
            b: unsafe { pb.slice() },
            // SAFETY: as above.
            samples: unsafe { x.samples() }?,
            budget: m.budget,
        };
        // SAFETY: checked and disjoint from every other buffer; sizes by contract.
        let (out, sc, fw, ix) = unsafe { (out.slice(), sc.slice(), fw.slice(), ix.slice()) };
        let plan = plan_of(&inputs, m.n, &params)?;
        let result = core_cnn::cnn_merge(&plan, &inputs, &params, out, sc, fw, ix)?;
        // SAFETY: checked by `optional_region`; writable by contract.
        unsafe { write_info(m.info, &plan, &result) }
    })
}

/// Merges the CNNs `a` and `b` (`a_len` and `b_len` floats: parameters of `graph` as
/// `pleas_cnn_forward_f32()` reads them) on `n` merge samples (`samples`, `n` samples of the
/// graph's input, normalised as the models expect) with `heads` at `budget` with `params`
/// (NULL: the defaults) into `merged` (`merged_len` floats: the parameters of the plan's
/// merged network), and reports what it did in `info` (may be NULL). `scratch` (doubles),
/// `forward` (floats) and `indices` (`size_t`) are the caller's scratch; the lengths must be
/// at least the plan's (`pleas_cnn_merge_plan_f32()` for the same graph, heads, `n`, budget
/// and params).
///
/// The models and the samples are only read (they can live in flash, and may overlap each
/// other); the writable buffers must not overlap anything. After an error `info` is not
/// written but `merged` may be.
///
/// Errors found before anything is computed: those of the plan; `PLEAS_ERROR_ARGUMENT` (NULL
/// or misaligned pointer, overlapping buffers), `PLEAS_ERROR_SIZE_MISMATCH` (`a_len` or
/// `b_len` not the graph's parameter count), `PLEAS_ERROR_SCRATCH` (a buffer shorter than
/// the plan asks for), `PLEAS_ERROR_NAN_INF` (a NaN or infinity among the parameters or
/// samples). Then, while merging: `PLEAS_ERROR_OVERFLOW`, `PLEAS_ERROR_SINGULAR` (as for the
/// MLP merge).
///
/// # Safety
///
/// `graph` as for `pleas_cnn_forward_plan_f32()`; `a`, `b` must address `a_len`, `b_len`
/// floats, `samples` `n` times the input's floats; `merged`, `scratch`, `forward` and
/// `indices` their lengths of writable elements; `params` and `info` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_cnn_merge_f32(
    graph: *const pleas_cnn_graph,
    a: *const f32,
    a_len: usize,
    b: *const f32,
    b_len: usize,
    samples: *const f32,
    n: usize,
    heads: u32,
    budget: f64,
    params: *const pleas_mlp_merge_params,
    merged: *mut f32,
    merged_len: usize,
    info: *mut pleas_cnn_merge_info,
    scratch: *mut f64,
    scratch_len: usize,
    forward: *mut f32,
    forward_len: usize,
    indices: *mut usize,
    indices_len: usize,
) -> pleas_status {
    let m = MergeArgs {
        a,
        a_len,
        b,
        b_len,
        samples: SamplePtr::F32(samples),
        n,
        heads,
        budget,
        params,
        merged,
        merged_len,
        info,
        scratch,
        scratch_len,
        forward,
        forward_len,
        indices,
        indices_len,
    };
    // SAFETY: forwarded contract.
    unsafe { merge_impl(graph, m) }
}

/// `pleas_cnn_merge_f32()` on byte samples (`samples`, `n` times the input's bytes, e.g.
/// 8-bit pixels) read through `table` (256 floats: `table[v]` is the value the models take
/// for byte `v`). The bytes are read where they are and never copied; the result is that of
/// `pleas_cnn_merge_f32()` on the mapped samples, bit for bit.
///
/// # Safety
///
/// As for `pleas_cnn_merge_f32()`, with `samples` addressing `n` times the input's bytes and
/// `table` 256 floats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_cnn_merge_u8(
    graph: *const pleas_cnn_graph,
    a: *const f32,
    a_len: usize,
    b: *const f32,
    b_len: usize,
    samples: *const u8,
    n: usize,
    table: *const f32,
    heads: u32,
    budget: f64,
    params: *const pleas_mlp_merge_params,
    merged: *mut f32,
    merged_len: usize,
    info: *mut pleas_cnn_merge_info,
    scratch: *mut f64,
    scratch_len: usize,
    forward: *mut f32,
    forward_len: usize,
    indices: *mut usize,
    indices_len: usize,
) -> pleas_status {
    let m = MergeArgs {
        a,
        a_len,
        b,
        b_len,
        samples: SamplePtr::U8 {
            data: samples,
            table,
        },
        n,
        heads,
        budget,
        params,
        merged,
        merged_len,
        info,
        scratch,
        scratch_len,
        forward,
        forward_len,
        indices,
        indices_len,
    };
    // SAFETY: forwarded contract.
    unsafe { merge_impl(graph, m) }
}
