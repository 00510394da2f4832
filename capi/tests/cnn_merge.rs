//! The CNN merge through the C entry points: `pleas_cnn_merge_u8` / `_f32` on the fashion
//! `cnn_split` pair give the core's merge bit for bit, the plan gives the core's lengths and
//! a merged graph `pleas_cnn_forward_*` runs, and every refusal has its status.

mod cnn_pair;
mod common;

use std::ptr::{null, null_mut};

use cnn_pair::{HEAD, c_layers, core_layers, graph, params};
use common::{bits, fixtures, read_safetensors, symmetric_table};
use pleas_capi::cnn::*;
use pleas_capi::cnn_merge::*;
use pleas_capi::mlp::{PLEAS_MLP_HEADS_SEPARATE, pleas_mlp_merge_params};
use pleas_capi::pleas_status::{self, *};
use pleas_capi::simd::*;
use pleas_core::forward::compact::{Layer, LayerOp, MapShape, Network, Window};
use pleas_core::merge::cnn::{
    CnnMergeInputs, CnnMergeParams, Heads, Samples, cnn_merge, cnn_merge_plan,
};

/// Merge samples (every 40th image of `x_match`: a fast test).
const N: usize = 50;

/// Both models' parameters and `N` merge images (bytes).
fn data() -> (Vec<f32>, Vec<f32>, Vec<u8>) {
    let dir = fixtures();
    let p = |m: &str| {
        let t = read_safetensors(&dir.join(format!("cnn_split/{m}.safetensors")));
        params(&t)
    };
    let eval = read_safetensors(&dir.join("eval.safetensors"));
    let x = &eval.u8["x_match"];
    let total = x.len() / 784;
    let bytes = (0..N)
        .flat_map(|i| {
            let r = i * total / N;
            x[r * 784..(r + 1) * 784].to_vec()
        })
        .collect();
    (
        p("fashion_cnn_split_m0_s8"),
        p("fashion_cnn_split_m1_s9"),
        bytes,
    )
}

fn plan_of(
    g: &pleas_cnn_graph,
    n: usize,
    budget: f64,
    params: *const pleas_mlp_merge_params,
) -> Result<pleas_cnn_merge_plan, pleas_status> {
    let mut plan = std::mem::MaybeUninit::<pleas_cnn_merge_plan>::zeroed();
    // SAFETY: a valid graph; a writable plan; params NULL or valid.
    match unsafe {
        pleas_cnn_merge_plan_f32(
            g,
            PLEAS_MLP_HEADS_SEPARATE,
            n,
            budget,
            params,
            plan.as_mut_ptr(),
        )
    } {
        // SAFETY: written on success.
        PLEAS_SUCCESS => Ok(unsafe { plan.assume_init() }),
        s => Err(s),
    }
}

/// The caller's buffers of one merge.
struct Buffers {
    merged: Vec<f32>,
    scratch: Vec<f64>,
    forward: Vec<f32>,
    indices: Vec<usize>,
}

impl Buffers {
    fn new(plan: &pleas_cnn_merge_plan) -> Self {
        Self {
            merged: vec![f32::NAN; plan.output_len],
            scratch: vec![f64::NAN; plan.scratch_len],
            forward: vec![f32::NAN; plan.forward_len],
            indices: vec![usize::MAX; plan.index_len],
        }
    }
}

/// `pleas_cnn_merge_u8` with the given buffers.
fn merge_u8(
    g: &pleas_cnn_graph,
    a: &[f32],
    b: &[f32],
    bytes: &[u8],
    budget: f64,
    buf: &mut Buffers,
    info: *mut pleas_cnn_merge_info,
) -> pleas_status {
    let t = symmetric_table();
    // SAFETY: every pointer addresses its length; the writable buffers are distinct vectors.
    unsafe {
        pleas_cnn_merge_u8(
            g,
            a.as_ptr(),
            a.len(),
            b.as_ptr(),
            b.len(),
            bytes.as_ptr(),
            bytes.len() / 784,
            t.as_ptr(),
            PLEAS_MLP_HEADS_SEPARATE,
            budget,
            null(),
            buf.merged.as_mut_ptr(),
            buf.merged.len(),
            info,
            buf.scratch.as_mut_ptr(),
            buf.scratch.len(),
            buf.forward.as_mut_ptr(),
            buf.forward.len(),
            buf.indices.as_mut_ptr(),
            buf.indices.len(),
        )
    }
}

/// The core's merge of `a` and `b` (separate heads, default parameters) on the `N` f32 samples
/// `xf`: the bytes the C API must reproduce.
fn core_merged(net: Network<'_>, a: &[f32], b: &[f32], xf: &[f32], budget: f64) -> Vec<f32> {
    let params = CnnMergeParams::default();
    let plan = cnn_merge_plan(&net, Heads::Separate, N, budget, &params).unwrap();
    let mut out = vec![0.0; plan.output_len];
    let mut sc = vec![0.0; plan.scratch_len];
    let mut fw = vec![0.0; plan.forward_len];
    let mut ix = vec![0; plan.index_len];
    let inputs = CnnMergeInputs {
        net,
        heads: Heads::Separate,
        a,
        b,
        samples: Samples::F32(xf),
        budget,
    };
    cnn_merge(&plan, &inputs, &params, &mut out, &mut sc, &mut fw, &mut ix).unwrap();
    out
}

#[test]
fn the_c_merge_is_the_core_merge() {
    // Both sides on one path (another test of this binary selects the portable one).
    assert_eq!(pleas_simd_set_path(PLEAS_SIMD_PATH_PORTABLE), PLEAS_SUCCESS);
    let (a, b, bytes) = data();
    let (cl, core_layers) = (c_layers(), core_layers());
    let g = graph(&cl, &[HEAD]);
    let net = Network {
        input: MapShape::new(1, 28, 28),
        layers: &core_layers,
        outputs: &[HEAD],
    };
    let t = symmetric_table();
    let xf: Vec<f32> = bytes.iter().map(|&v| t[usize::from(v)]).collect();
    for budget in [1.0, 1.2] {
        let plan = plan_of(&g, N, budget, null()).unwrap();
        let params = CnnMergeParams::default();
        let core_plan = cnn_merge_plan(&net, Heads::Separate, N, budget, &params).unwrap();
        assert_eq!(
            (
                plan.output_len,
                plan.scratch_len,
                plan.forward_len,
                plan.index_len
            ),
            (
                core_plan.output_len,
                core_plan.scratch_len,
                core_plan.forward_len,
                core_plan.index_len
            )
        );
        assert_eq!((plan.groups, plan.fitted_layers), (3, 5));
        let mut buf = Buffers::new(&plan);
        let mut info = std::mem::MaybeUninit::<pleas_cnn_merge_info>::zeroed();
        let s = merge_u8(&g, &a, &b, &bytes, budget, &mut buf, info.as_mut_ptr());
        assert_eq!(s, PLEAS_SUCCESS, "budget {budget}");
        // SAFETY: written on success.
        let info = unsafe { info.assume_init() };
        assert_eq!(info.plan, plan);
        assert_eq!(info.layers[0].copied_blocks, 1, "the first layer is a copy");
        // The core, on the f32 samples.
        let out = core_merged(net, &a, &b, &xf, budget);
        assert_eq!(bits(&buf.merged), bits(&out), "budget {budget}");
        // The merged graph of the plan runs through the forward entry points.
        let mg = graph(
            &plan.merged_layers[..plan.merged_layer_count],
            &plan.merged_outputs[..plan.merged_output_count],
        );
        let mut fp = pleas_cnn_forward_plan::default();
        // SAFETY: a valid graph; a writable plan.
        let s = unsafe { pleas_cnn_forward_plan_f32(&mg, &mut fp) };
        assert_eq!(s, PLEAS_SUCCESS);
        assert_eq!((fp.params_len, fp.output_len), (plan.output_len, 10));
        let mut logits = vec![0.0f32; fp.output_len];
        let mut fsc = vec![0.0f32; fp.scratch_len];
        // SAFETY: every pointer addresses its length; distinct writable buffers.
        let s = unsafe {
            pleas_cnn_forward_f32(
                &mg,
                buf.merged.as_ptr(),
                buf.merged.len(),
                xf.as_ptr(),
                784,
                logits.as_mut_ptr(),
                logits.len(),
                fsc.as_mut_ptr(),
                fsc.len(),
            )
        };
        assert_eq!(s, PLEAS_SUCCESS);
        assert!(logits.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn the_simd_path_is_chosen_by_name() {
    assert_eq!(pleas_simd_set_path(7), PLEAS_ERROR_ARGUMENT);
    assert_eq!(pleas_simd_set_path(PLEAS_SIMD_PATH_PORTABLE), PLEAS_SUCCESS);
    assert_eq!(pleas_core::simd::path(), pleas_core::simd::Path::Portable);
}

#[test]
fn every_refusal_has_its_status() {
    let (a, b, bytes) = data();
    let cl = c_layers();
    let g = graph(&cl, &[HEAD]);
    let plan = plan_of(&g, N, 1.0, null()).unwrap();
    let mut p = std::mem::MaybeUninit::<pleas_cnn_merge_plan>::zeroed();
    // SAFETY: NULL graph, writable plan.
    let s = unsafe {
        pleas_cnn_merge_plan_f32(
            null(),
            PLEAS_MLP_HEADS_SEPARATE,
            N,
            1.0,
            null(),
            p.as_mut_ptr(),
        )
    };
    assert_eq!(s, PLEAS_ERROR_ARGUMENT);
    // SAFETY: a valid graph, an unknown heads value.
    let s = unsafe { pleas_cnn_merge_plan_f32(&g, 7, N, 1.0, null(), p.as_mut_ptr()) };
    assert_eq!(s, PLEAS_ERROR_ARGUMENT);
    assert_eq!(plan_of(&g, N, 2.5, null()), Err(PLEAS_ERROR_ARGUMENT));
    assert_eq!(plan_of(&g, 0, 1.0, null()), Err(PLEAS_ERROR_LENGTH));
    // A residual add of the network input (no group permutes it) is not merged.
    let mut with_add = vec![pleas_cnn_layer {
        op: PLEAS_CNN_OP_ADD,
        input: 0,
        other: 0,
        ..Default::default()
    }];
    with_add.extend(cl.iter().map(|l| pleas_cnn_layer {
        input: l.input + 1,
        ..*l
    }));
    assert_eq!(
        plan_of(&graph(&with_add, &[HEAD + 1]), N, 1.0, null()),
        Err(PLEAS_ERROR_ARGUMENT)
    );
    let mut buf = Buffers::new(&plan);
    let short = &a[..a.len() - 1];
    let s = merge_u8(&g, short, &b, &bytes, 1.0, &mut buf, null_mut());
    assert_eq!(s, PLEAS_ERROR_SIZE_MISMATCH);
    let mut nan = a.clone();
    nan[3] = f32::NAN;
    let s = merge_u8(&g, &nan, &b, &bytes, 1.0, &mut buf, null_mut());
    assert_eq!(s, PLEAS_ERROR_NAN_INF);
    for shorten in 0..4 {
        let mut small = Buffers::new(&plan);
        match shorten {
            0 => drop(small.merged.pop()),
            1 => drop(small.scratch.pop()),
            2 => drop(small.forward.pop()),
            _ => drop(small.indices.pop()),
        }
        let s = merge_u8(&g, &a, &b, &bytes, 1.0, &mut small, null_mut());
        assert_eq!(s, PLEAS_ERROR_SCRATCH, "buffer {shorten}");
    }
    // A merged buffer overlapping the models is refused.
    let mut shared = a.clone();
    let t = symmetric_table();
    // SAFETY: `shared` is read as model A and written as the output: the call must refuse.
    let s = unsafe {
        pleas_cnn_merge_u8(
            &g,
            shared.as_ptr(),
            shared.len(),
            b.as_ptr(),
            b.len(),
            bytes.as_ptr(),
            N,
            t.as_ptr(),
            PLEAS_MLP_HEADS_SEPARATE,
            1.0,
            null(),
            shared.as_mut_ptr(),
            plan.output_len.min(shared.len()),
            null_mut(),
            buf.scratch.as_mut_ptr(),
            buf.scratch.len(),
            buf.forward.as_mut_ptr(),
            buf.forward.len(),
            buf.indices.as_mut_ptr(),
            buf.indices.len(),
        )
    };
    assert_eq!(s, PLEAS_ERROR_ARGUMENT);
}

/// A residual network on the fixture images: conv 1->8 -> ReLU -> conv 8->8 -> add(the
/// ReLU) -> ReLU -> global pooling -> linear head (bias everywhere), as C layers and as the
/// core's; its parameters for a seed (uniform in +-0.5, scaled by the fan-in).
fn residual_net(seed: u64) -> (Vec<pleas_cnn_layer>, Vec<Layer>, Vec<f32>) {
    let window = Window {
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
    };
    let conv = |input| pleas_cnn_layer {
        op: PLEAS_CNN_OP_CONV2D,
        input,
        out: 8,
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
        bias: 1,
        ..Default::default()
    };
    let relu = |input| pleas_cnn_layer {
        op: PLEAS_CNN_OP_RELU,
        input,
        ..Default::default()
    };
    let c = vec![
        conv(0),
        relu(1),
        conv(2),
        pleas_cnn_layer {
            op: PLEAS_CNN_OP_ADD,
            input: 3,
            other: 2,
            ..Default::default()
        },
        relu(4),
        pleas_cnn_layer {
            op: PLEAS_CNN_OP_GLOBAL_AVGPOOL,
            input: 5,
            ..Default::default()
        },
        pleas_cnn_layer {
            op: PLEAS_CNN_OP_LINEAR,
            input: 6,
            out: 5,
            bias: 1,
            ..Default::default()
        },
    ];
    let conv_op = LayerOp::Conv2d {
        out_channels: 8,
        window,
        bias: true,
    };
    let ops = [
        conv_op,
        LayerOp::Relu,
        conv_op,
        LayerOp::Add { other: 2 },
        LayerOp::Relu,
        LayerOp::GlobalAvgPool,
        LayerOp::Linear {
            out_features: 5,
            bias: true,
        },
    ];
    let core: Vec<Layer> = ops
        .into_iter()
        .enumerate()
        .map(|(l, op)| Layer { op, input: l })
        .collect();
    // (values, fan-in) of each parameter tensor in order: conv1 w, b; conv2 w, b; head w, b.
    let tensors = [(72, 9), (8, 9), (576, 72), (8, 72), (40, 8), (5, 8)];
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut p = Vec::new();
    for (len, fan_in) in tensors {
        let scale = 2.0 / (fan_in as f32).sqrt();
        for _ in 0..len {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            p.push(u * scale);
        }
    }
    (c, core, p)
}

#[test]
fn a_residual_graph_merges_as_the_core_merges_it() {
    assert_eq!(pleas_simd_set_path(PLEAS_SIMD_PATH_PORTABLE), PLEAS_SUCCESS);
    let (_, _, bytes) = data();
    let (cl, core_layers, a) = residual_net(1);
    let (_, _, b) = residual_net(2);
    let head = cl.len();
    let g = graph(&cl, &[head]);
    let net = Network {
        input: MapShape::new(1, 28, 28),
        layers: &core_layers,
        outputs: &[head],
    };
    let t = symmetric_table();
    let xf: Vec<f32> = bytes.iter().map(|&v| t[usize::from(v)]).collect();
    for budget in [1.0, 1.2] {
        let plan = plan_of(&g, N, budget, null()).unwrap();
        assert_eq!(
            (plan.groups, plan.fitted_layers),
            (1, 4),
            "the add ties both convs into one group"
        );
        let mut buf = Buffers::new(&plan);
        let mut info = std::mem::MaybeUninit::<pleas_cnn_merge_info>::zeroed();
        let s = merge_u8(&g, &a, &b, &bytes, budget, &mut buf, info.as_mut_ptr());
        assert_eq!(s, PLEAS_SUCCESS, "budget {budget}");
        let out = core_merged(net, &a, &b, &xf, budget);
        assert_eq!(bits(&buf.merged), bits(&out), "budget {budget}");
        assert!(out.iter().all(|v| v.is_finite()));
    }
}
