//! Convolutional networks from a compact graph description (`pleas_core::forward::compact`):
//! the forward pass of one sample in caller scratch.
//!
//! A network is its input shape (`channels x height x width`), a list of layers and the nodes
//! it outputs. Node 0 is the input, node `l + 1` the output of layer `l`; each layer reads an
//! earlier node (`input`; an add also reads `other`). Layer ops: `PLEAS_CNN_OP_CONV2D` (`out`
//! channels, `kernel`, `stride`, `padding`, `bias`), `PLEAS_CNN_OP_LINEAR` (`out` features,
//! `bias`; reads its input flattened in NCHW order), `PLEAS_CNN_OP_BATCHNORM` (`eps`),
//! `PLEAS_CNN_OP_RELU`, `PLEAS_CNN_OP_MAXPOOL` and `PLEAS_CNN_OP_AVGPOOL` (`kernel`,
//! `stride`, `padding`; padding counts as `-inf` / as zeros), `PLEAS_CNN_OP_GLOBAL_AVGPOOL`,
//! `PLEAS_CNN_OP_ADD` (`input + other`, one shape). Fields an op does not use are ignored.
//!
//! The parameters are one float buffer, in layer order: a conv's weight (PyTorch layout,
//! `out x in x kh x kw`) then its bias (if `bias` is 1), a linear layer's weight (`out x in`)
//! then its bias, a batch-norm's gamma, beta, running mean and running variance.
//!
//! ```c
//! static const pleas_cnn_layer layers[] = {
//!     {.op = PLEAS_CNN_OP_CONV2D, .input = 0, .out = 8, .kernel = {3, 3}, .stride = {1, 1},
//!      .padding = {1, 1}},
//!     {.op = PLEAS_CNN_OP_BATCHNORM, .input = 1, .eps = 1e-5f},
//!     {.op = PLEAS_CNN_OP_RELU, .input = 2},
//!     {.op = PLEAS_CNN_OP_GLOBAL_AVGPOOL, .input = 3},
//!     {.op = PLEAS_CNN_OP_LINEAR, .input = 4, .out = 5, .bias = 1},
//! };
//! static const size_t outputs[] = {5};
//! pleas_cnn_graph g = {.channels = 1, .height = 28, .width = 28, .layers = layers,
//!                      .layer_count = 5, .outputs = outputs, .output_count = 1};
//! pleas_cnn_forward_plan plan;
//! pleas_cnn_forward_plan_f32(&g, &plan);    /* params_len, scratch_len, output_len */
//! pleas_cnn_forward_u8(&g, params, plan.params_len, pixels, 784, table,
//!                      logits, plan.output_len, scratch, plan.scratch_len);
//! ```

use pleas_core::forward::compact::{
    CompactPlan, Layer, LayerOp, MAX_LAYERS, MapShape, Network, Window,
};

use crate::check::{self, In, Region, disjoint, input, output};
use crate::pleas_status::{
    self, PLEAS_ERROR_ARGUMENT, PLEAS_ERROR_INTERNAL, PLEAS_ERROR_LENGTH, PLEAS_ERROR_NAN_INF,
    PLEAS_ERROR_SCRATCH, PLEAS_ERROR_SIZE_MISMATCH,
};
use crate::samples::SamplePtr;
use crate::status::run;

/// Most layers of a network.
pub const PLEAS_CNN_MAX_LAYERS: usize = 32;
/// Most outputs of a network.
pub const PLEAS_CNN_MAX_OUTPUTS: usize = 8;

const _: () = assert!(PLEAS_CNN_MAX_LAYERS == MAX_LAYERS);

/// `pleas_cnn_layer.op`: 2-D convolution.
pub const PLEAS_CNN_OP_CONV2D: u32 = 0;
/// `pleas_cnn_layer.op`: linear layer on the flattened input.
pub const PLEAS_CNN_OP_LINEAR: u32 = 1;
/// `pleas_cnn_layer.op`: eval-mode batch normalisation.
pub const PLEAS_CNN_OP_BATCHNORM: u32 = 2;
/// `pleas_cnn_layer.op`: `max(x, 0)`.
pub const PLEAS_CNN_OP_RELU: u32 = 3;
/// `pleas_cnn_layer.op`: max pooling.
pub const PLEAS_CNN_OP_MAXPOOL: u32 = 4;
/// `pleas_cnn_layer.op`: average pooling (padding counts as zeros).
pub const PLEAS_CNN_OP_AVGPOOL: u32 = 5;
/// `pleas_cnn_layer.op`: mean over the positions of each channel.
pub const PLEAS_CNN_OP_GLOBAL_AVGPOOL: u32 = 6;
/// `pleas_cnn_layer.op`: the sum of nodes `input` and `other` (residual add).
pub const PLEAS_CNN_OP_ADD: u32 = 7;

/// One layer of a network (see the module docs for which fields each op reads).
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct pleas_cnn_layer {
    /// `PLEAS_CNN_OP_*`.
    pub op: u32,
    /// The node read: 0 for the input, `l + 1` for layer `l`; earlier than the layer's own.
    pub input: usize,
    /// `PLEAS_CNN_OP_ADD`: the second node added.
    pub other: usize,
    /// Conv: output channels; linear: output features.
    pub out: usize,
    /// Conv and pools: `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Conv and pools: `[sh, sw]`.
    pub stride: [usize; 2],
    /// Conv and pools: zero padding `[ph, pw]` on each side.
    pub padding: [usize; 2],
    /// Conv and linear: 1 if the layer has a bias, 0 if not.
    pub bias: u32,
    /// Batch-norm: the variance epsilon (finite, positive; PyTorch's default is `1e-5`).
    pub eps: f32,
}

/// A network: per-sample input shape, layers, output nodes.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy)]
pub struct pleas_cnn_graph {
    /// Input channels.
    pub channels: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// `layer_count` layers (only read).
    pub layers: *const pleas_cnn_layer,
    /// Layers, 1 to `PLEAS_CNN_MAX_LAYERS`.
    pub layer_count: usize,
    /// `output_count` node numbers (only read).
    pub outputs: *const usize,
    /// Outputs, 1 to `PLEAS_CNN_MAX_OUTPUTS`.
    pub output_count: usize,
}

/// The buffers of a forward pass, from `pleas_cnn_forward_plan_f32()`.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct pleas_cnn_forward_plan {
    /// Floats of the parameters (exactly).
    pub params_len: usize,
    /// Values of one input sample (`channels x height x width`).
    pub input_len: usize,
    /// Floats of the outputs: every output node's values, in output order.
    pub output_len: usize,
    /// Floats of scratch: activation buffers and the layers' own scratch.
    pub scratch_len: usize,
    /// Activation buffers kept at once (2 for a chain of layers, 3 with a residual add).
    pub slots: usize,
}

/// A layer of the C struct as the core's, after the checks of its fields.
fn core_layer(l: &pleas_cnn_layer) -> Result<Layer, pleas_status> {
    let window = Window {
        kernel: l.kernel,
        stride: l.stride,
        padding: l.padding,
    };
    let bias = match l.bias {
        0 => false,
        1 => true,
        _ if matches!(l.op, PLEAS_CNN_OP_CONV2D | PLEAS_CNN_OP_LINEAR) => {
            return Err(PLEAS_ERROR_ARGUMENT);
        }
        _ => false,
    };
    let op = match l.op {
        PLEAS_CNN_OP_CONV2D => LayerOp::Conv2d {
            out_channels: l.out,
            window,
            bias,
        },
        PLEAS_CNN_OP_LINEAR => LayerOp::Linear {
            out_features: l.out,
            bias,
        },
        PLEAS_CNN_OP_BATCHNORM if l.eps.is_finite() && l.eps > 0.0 => {
            LayerOp::BatchNorm { eps: l.eps }
        }
        PLEAS_CNN_OP_RELU => LayerOp::Relu,
        PLEAS_CNN_OP_MAXPOOL => LayerOp::MaxPool(window),
        PLEAS_CNN_OP_AVGPOOL => LayerOp::AvgPool(window),
        PLEAS_CNN_OP_GLOBAL_AVGPOOL => LayerOp::GlobalAvgPool,
        PLEAS_CNN_OP_ADD => LayerOp::Add { other: l.other },
        _ => return Err(PLEAS_ERROR_ARGUMENT),
    };
    Ok(Layer { op, input: l.input })
}

/// The C struct of a core layer (the inverse of [`core_layer`]).
pub(crate) fn c_layer(l: &Layer) -> pleas_cnn_layer {
    let mut c = pleas_cnn_layer {
        input: l.input,
        ..pleas_cnn_layer::default()
    };
    let mut window = |w: &Window| {
        c.kernel = w.kernel;
        c.stride = w.stride;
        c.padding = w.padding;
    };
    let (op, out, bias) = match l.op {
        LayerOp::Conv2d {
            out_channels,
            window: w,
            bias,
        } => {
            window(&w);
            (PLEAS_CNN_OP_CONV2D, out_channels, bias)
        }
        LayerOp::Linear { out_features, bias } => (PLEAS_CNN_OP_LINEAR, out_features, bias),
        LayerOp::BatchNorm { eps } => {
            c.eps = eps;
            (PLEAS_CNN_OP_BATCHNORM, 0, false)
        }
        LayerOp::Relu => (PLEAS_CNN_OP_RELU, 0, false),
        LayerOp::MaxPool(w) => {
            window(&w);
            (PLEAS_CNN_OP_MAXPOOL, 0, false)
        }
        LayerOp::AvgPool(w) => {
            window(&w);
            (PLEAS_CNN_OP_AVGPOOL, 0, false)
        }
        LayerOp::GlobalAvgPool => (PLEAS_CNN_OP_GLOBAL_AVGPOOL, 0, false),
        LayerOp::Add { other } => {
            c.other = other;
            (PLEAS_CNN_OP_ADD, 0, false)
        }
    };
    c.op = op;
    c.out = out;
    c.bias = u32::from(bias);
    c
}

/// A graph's layers and outputs copied out of the caller's arrays.
pub(crate) struct GraphCopy {
    pub(crate) input: MapShape,
    layers: [Layer; MAX_LAYERS],
    layer_count: usize,
    outputs: [usize; PLEAS_CNN_MAX_OUTPUTS],
    output_count: usize,
}

impl GraphCopy {
    /// Reads and checks `graph`; also returns the regions of the struct and its two arrays.
    ///
    /// # Safety
    ///
    /// `graph` must point to a valid struct whose arrays address their counts of elements.
    pub(crate) unsafe fn read(
        graph: *const pleas_cnn_graph,
    ) -> Result<(Self, [Region; 3]), pleas_status> {
        let g_region = check::required(graph, false)?;
        // SAFETY: checked non-NULL and aligned; valid by contract.
        let g = unsafe { graph.read() };
        if !(1..=MAX_LAYERS).contains(&g.layer_count)
            || !(1..=PLEAS_CNN_MAX_OUTPUTS).contains(&g.output_count)
        {
            return Err(PLEAS_ERROR_LENGTH);
        }
        let layers: In<pleas_cnn_layer> = input(g.layers, g.layer_count)?;
        let outputs: In<usize> = input(g.outputs, g.output_count)?;
        let relu = Layer {
            op: LayerOp::Relu,
            input: 0,
        };
        let mut copy = GraphCopy {
            input: MapShape::new(g.channels, g.height, g.width),
            layers: [relu; MAX_LAYERS],
            layer_count: g.layer_count,
            outputs: [0; PLEAS_CNN_MAX_OUTPUTS],
            output_count: g.output_count,
        };
        // SAFETY: checked; valid and unwritten during the call by contract.
        for (d, l) in copy.layers.iter_mut().zip(unsafe { layers.slice() }) {
            *d = core_layer(l)?;
        }
        // SAFETY: as above.
        copy.outputs[..g.output_count].copy_from_slice(unsafe { outputs.slice() });
        Ok((copy, [g_region, layers.region, outputs.region]))
    }

    /// The network described.
    pub(crate) fn network(&self) -> Network<'_> {
        Network {
            input: self.input,
            layers: &self.layers[..self.layer_count],
            outputs: &self.outputs[..self.output_count],
        }
    }

    fn plan(&self) -> Result<CompactPlan<'_>, pleas_status> {
        let plan = CompactPlan::new(self.network())?;
        let fits = |len: usize| len.checked_mul(4).is_some_and(|b| b <= isize::MAX as usize);
        if !fits(plan.scratch_len()) || !fits(plan.params_len()) {
            return Err(PLEAS_ERROR_LENGTH);
        }
        Ok(plan)
    }
}

/// Floats of every output, in order.
fn output_len(plan: &CompactPlan<'_>) -> usize {
    let net = plan.network();
    net.outputs
        .iter()
        .map(|&n| plan.shape(n).map_or(0, |s| s.len()))
        .sum()
}

/// Plans the forward pass of `graph` into `plan`: the lengths of the parameters, of one input
/// sample, of the outputs and of the scratch that `pleas_cnn_forward_f32()` takes.
///
/// Errors: `PLEAS_ERROR_ARGUMENT` (NULL or misaligned pointer, `plan` overlapping the graph,
/// an unknown op, `bias` not 0 or 1, a batch-norm `eps` that is not finite and positive),
/// `PLEAS_ERROR_LENGTH` (no layer or output, more than the maximum, an empty input shape or
/// layer output, sizes beyond memory), `PLEAS_ERROR_INDEX` (a layer reading a node that is
/// not earlier than its own, an output naming no node), `PLEAS_ERROR_SIZE_MISMATCH` (a window
/// that does not fit its input, or whose padding is as large as its kernel; an add of two
/// shapes).
///
/// # Safety
///
/// `graph` must point to a valid `pleas_cnn_graph` whose `layers` and `outputs` address
/// `layer_count` and `output_count` elements; `plan` must point to a writable
/// `pleas_cnn_forward_plan`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_cnn_forward_plan_f32(
    graph: *const pleas_cnn_graph,
    plan: *mut pleas_cnn_forward_plan,
) -> pleas_status {
    run(|| {
        // SAFETY: forwarded contract.
        let (g, regions) = unsafe { GraphCopy::read(graph) }?;
        let plan_region = check::required(plan.cast_const(), true)?;
        disjoint(&[regions[0], regions[1], regions[2], plan_region])?;
        let p = g.plan()?;
        let c = pleas_cnn_forward_plan {
            params_len: p.params_len(),
            input_len: g.input.len(),
            output_len: output_len(&p),
            scratch_len: p.scratch_len(),
            slots: p.slots(),
        };
        // SAFETY: checked non-NULL and aligned, disjoint from the inputs; writable by contract.
        unsafe { plan.write(c) };
        Ok(())
    })
}

/// The body of both forward passes.
///
/// # Safety
///
/// As for `pleas_cnn_forward_f32()`.
unsafe fn forward_impl(
    graph: *const pleas_cnn_graph,
    params: *const f32,
    params_len: usize,
    sample: SamplePtr,
    input_len: usize,
    out: *mut f32,
    out_len: usize,
    scratch: *mut f32,
    scratch_len: usize,
) -> pleas_status {
    run(|| {
        // SAFETY: forwarded contract.
        let (g, [r0, r1, r2]) = unsafe { GraphCopy::read(graph) }?;
        let p = input(params, params_len)?;
        let (x, table): (Region, Option<In<f32>>) = match sample {
            SamplePtr::F32(x) => (input(x, input_len)?.region, None),
            SamplePtr::U8 { data, table } => {
                (input(data, input_len)?.region, Some(input(table, 256)?))
            }
        };
        let mut o = output(out, out_len)?;
        let mut sc = output(scratch, scratch_len)?;
        let t = table.as_ref().map_or(Region::EMPTY, |t| t.region);
        disjoint(&[r0, r1, r2, p.region, x, t, o.region, sc.region])?;
        let plan = g.plan()?;
        if params_len != plan.params_len() || input_len != g.input.len() {
            return Err(PLEAS_ERROR_SIZE_MISMATCH);
        }
        if out_len < output_len(&plan) || scratch_len < plan.scratch_len() {
            return Err(PLEAS_ERROR_SCRATCH);
        }
        // SAFETY: checked, disjoint from every writable buffer; sizes by contract.
        let params = unsafe { p.slice() };
        if params.iter().any(|v| !v.is_finite()) {
            return Err(PLEAS_ERROR_NAN_INF);
        }
        // SAFETY: checked and disjoint from every other buffer; sizes by contract.
        let (o, sc) = unsafe { (o.slice(), sc.slice()) };
        // SAFETY: as for `params`.
        unsafe { write_input(sample, input_len, table.as_ref(), plan.input_mut(sc)?) }?;
        plan.run(params, sc, &mut |_, _| {})?;
        let mut at = 0;
        for &node in plan.network().outputs {
            let values = plan.node(node, sc).ok_or(PLEAS_ERROR_INTERNAL)?;
            o[at..at + values.len()].copy_from_slice(values);
            at += values.len();
        }
        Ok(())
    })
}

/// Writes the sample into the network's input buffer, bytes through the table.
///
/// # Safety
///
/// The sample's pointers were checked for `len` values (and 256 table values) and address
/// them, unwritten during the call.
unsafe fn write_input(
    sample: SamplePtr,
    len: usize,
    table: Option<&In<f32>>,
    dst: &mut [f32],
) -> Result<(), pleas_status> {
    match (sample, table) {
        (SamplePtr::F32(x), _) => {
            // SAFETY: forwarded contract.
            let x = unsafe { input(x, len)?.slice() };
            if x.iter().any(|v| !v.is_finite()) {
                return Err(PLEAS_ERROR_NAN_INF);
            }
            dst.copy_from_slice(x);
        }
        (SamplePtr::U8 { data, .. }, Some(t)) => {
            // SAFETY: forwarded contract.
            let (bytes, t) = unsafe { (input(data, len)?.slice(), t.slice()) };
            for (d, &b) in dst.iter_mut().zip(bytes) {
                *d = t[usize::from(b)];
                if !d.is_finite() {
                    return Err(PLEAS_ERROR_NAN_INF);
                }
            }
        }
        (SamplePtr::U8 { .. }, None) => return Err(PLEAS_ERROR_INTERNAL),
    }
    Ok(())
}

/// Runs one sample (`input`, `input_len` floats, NCHW) through `graph` with `params`
/// (`params_len` floats) and writes every output node's values, in output order, to `out`
/// (`out_len` floats). `scratch` (`scratch_len` floats) is the caller's scratch. The lengths
/// come from `pleas_cnn_forward_plan_f32()`.
///
/// Errors: those of the plan; `PLEAS_ERROR_ARGUMENT` (overlapping buffers),
/// `PLEAS_ERROR_SIZE_MISMATCH` (`params_len` or `input_len` not the plan's), `PLEAS_ERROR_SCRATCH`
/// (`out` or `scratch` shorter than the plan's), `PLEAS_ERROR_NAN_INF` (a NaN or infinity
/// among the parameters or the input). Nothing is written on error except the scratch.
///
/// # Safety
///
/// `graph` as for the plan; `params`, `input`, `out` and `scratch` must address their lengths
/// of floats, the last two writable; the read-only buffers may overlap each other.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_cnn_forward_f32(
    graph: *const pleas_cnn_graph,
    params: *const f32,
    params_len: usize,
    input: *const f32,
    input_len: usize,
    out: *mut f32,
    out_len: usize,
    scratch: *mut f32,
    scratch_len: usize,
) -> pleas_status {
    // SAFETY: forwarded contract.
    unsafe {
        forward_impl(
            graph,
            params,
            params_len,
            SamplePtr::F32(input),
            input_len,
            out,
            out_len,
            scratch,
            scratch_len,
        )
    }
}

/// `pleas_cnn_forward_f32()` on a byte sample (`input`, `input_len` bytes, e.g. 8-bit pixels)
/// read through `table` (256 floats: `table[v]` is the value the network takes for byte `v`).
/// The result is that of `pleas_cnn_forward_f32()` on the mapped values, bit for bit. A table
/// value that is not finite is refused (`PLEAS_ERROR_NAN_INF`) if the sample uses it.
///
/// # Safety
///
/// As for `pleas_cnn_forward_f32()`, with `input` addressing `input_len` bytes and `table`
/// 256 floats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_cnn_forward_u8(
    graph: *const pleas_cnn_graph,
    params: *const f32,
    params_len: usize,
    input: *const u8,
    input_len: usize,
    table: *const f32,
    out: *mut f32,
    out_len: usize,
    scratch: *mut f32,
    scratch_len: usize,
) -> pleas_status {
    // SAFETY: forwarded contract.
    unsafe {
        forward_impl(
            graph,
            params,
            params_len,
            SamplePtr::U8 { data: input, table },
            input_len,
            out,
            out_len,
            scratch,
            scratch_len,
        )
    }
}
