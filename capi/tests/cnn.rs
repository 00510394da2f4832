//! The compact CNN graph through the C entry points: the fashion `cnn_split` pair runs as the
//! core's compact forward pass runs it (bit for bit, f32 samples and bytes through a table),
//! the plan gives the core's lengths, and every refusal has its status.

mod cnn_pair;
mod common;

use std::ptr::{null, null_mut};

use cnn_pair::{HEAD, c_layers, core_layers, graph, params, simple};
use common::{bits, fixtures, read_safetensors, symmetric_table};
use pleas_capi::cnn::*;
use pleas_capi::pleas_status::{self, *};
use pleas_core::forward::compact::{CompactPlan, MapShape, Network};

fn plan_of(g: &pleas_cnn_graph) -> Result<pleas_cnn_forward_plan, pleas_status> {
    let mut plan = pleas_cnn_forward_plan::default();
    // SAFETY: a valid graph whose arrays hold their counts; a writable plan.
    match unsafe { pleas_cnn_forward_plan_f32(g, &mut plan) } {
        PLEAS_SUCCESS => Ok(plan),
        s => Err(s),
    }
}

/// `pleas_cnn_forward_f32` with buffers of the given lengths.
fn forward(
    g: &pleas_cnn_graph,
    p: &[f32],
    x: &[f32],
    out: &mut [f32],
    sc: &mut [f32],
) -> pleas_status {
    // SAFETY: every pointer addresses its length; the writable buffers are distinct vectors.
    unsafe {
        pleas_cnn_forward_f32(
            g,
            p.as_ptr(),
            p.len(),
            x.as_ptr(),
            x.len(),
            out.as_mut_ptr(),
            out.len(),
            sc.as_mut_ptr(),
            sc.len(),
        )
    }
}

/// `pleas_cnn_forward_u8` with buffers of the given lengths.
fn forward_u8(
    g: &pleas_cnn_graph,
    p: &[f32],
    bytes: &[u8],
    table: &[f32; 256],
    out: &mut [f32],
    sc: &mut [f32],
) -> pleas_status {
    // SAFETY: every pointer addresses its length (the table 256 values); the writable
    // buffers are distinct.
    unsafe {
        pleas_cnn_forward_u8(
            g,
            p.as_ptr(),
            p.len(),
            bytes.as_ptr(),
            bytes.len(),
            table.as_ptr(),
            out.as_mut_ptr(),
            out.len(),
            sc.as_mut_ptr(),
            sc.len(),
        )
    }
}

/// The same network through the core.
fn core_logits(p: &[f32], x: &[f32]) -> Vec<f32> {
    let l = core_layers();
    let plan = CompactPlan::new(Network {
        input: MapShape::new(1, 28, 28),
        layers: &l,
        outputs: &[HEAD],
    })
    .unwrap();
    let mut sc = vec![0.0; plan.scratch_len()];
    plan.input_mut(&mut sc).unwrap().copy_from_slice(x);
    plan.run(p, &mut sc, &mut |_, _| {}).unwrap();
    plan.node(HEAD, &sc).unwrap().to_vec()
}

#[test]
fn the_cnn_pair_runs_as_the_core_runs_it() {
    let dir = fixtures();
    let eval = read_safetensors(&dir.join("eval.safetensors"));
    let (x, y) = (&eval.u8["x_test"], &eval.u8["y_test"]);
    let t = symmetric_table();
    let l = c_layers();
    let g = graph(&l, &[HEAD]);
    let plan = plan_of(&g).unwrap();
    let expected_params = 8 * 9 + 4 * 8 + 16 * 72 + 4 * 16 + 16 * 144 + 4 * 16 + 5 * 16 + 5;
    assert_eq!(
        (plan.params_len, plan.input_len, plan.output_len, plan.slots),
        (expected_params, 784, 5, 2)
    );
    for (m, first) in [
        ("fashion_cnn_split_m0_s8", 0u8),
        ("fashion_cnn_split_m1_s9", 5),
    ] {
        let p = params(&read_safetensors(
            &dir.join(format!("cnn_split/{m}.safetensors")),
        ));
        assert_eq!(p.len(), plan.params_len);
        let mut sc = vec![0.0; plan.scratch_len];
        let (mut correct, mut seen) = (0, 0);
        for i in (0..2000).filter(|&i| (first..first + 5).contains(&y[i])) {
            let bytes = &x[i * 784..(i + 1) * 784];
            let xf: Vec<f32> = bytes.iter().map(|&b| t[usize::from(b)]).collect();
            let (mut z, mut zu) = ([0.0f32; 5], [0.0f32; 5]);
            assert_eq!(forward(&g, &p, &xf, &mut z, &mut sc), PLEAS_SUCCESS);
            let s = forward_u8(&g, &p, bytes, &t, &mut zu, &mut sc);
            assert_eq!(s, PLEAS_SUCCESS);
            assert_eq!(
                bits(&z),
                bits(&zu),
                "{m} image {i}: bytes through the table"
            );
            if i < 50 {
                assert_eq!(bits(&z), bits(&core_logits(&p, &xf)), "{m} image {i}: core");
            }
            let best = (1..5).fold(0, |b, j| if z[j] > z[b] { j } else { b });
            correct += usize::from(best == usize::from(y[i] - first));
            seen += 1;
        }
        let acc = correct as f64 / seen as f64;
        assert!(acc > 0.8, "{m}: accuracy {acc} on {seen} test images");
    }
}

#[test]
fn refusals_have_their_statuses() {
    let l = c_layers();
    let g = graph(&l, &[HEAD]);
    let plan = plan_of(&g).unwrap();
    let p = vec![0.5f32; plan.params_len];
    let x = vec![0.0f32; 784];
    let mut out = vec![0.0f32; 5];
    let mut sc = vec![0.0f32; plan.scratch_len];
    assert_eq!(forward(&g, &p, &x, &mut out, &mut sc), PLEAS_SUCCESS);
    // SAFETY: NULL graph and plan are refused before any read.
    let s = unsafe { pleas_cnn_forward_plan_f32(null(), null_mut()) };
    assert_eq!(s, PLEAS_ERROR_ARGUMENT);
    let with = |f: &dyn Fn(&mut Vec<pleas_cnn_layer>)| {
        let mut l = c_layers();
        f(&mut l);
        plan_of(&graph(&l, &[HEAD])).err()
    };
    assert_eq!(with(&|l| l[0].op = 99), Some(PLEAS_ERROR_ARGUMENT));
    assert_eq!(with(&|l| l[0].bias = 2), Some(PLEAS_ERROR_ARGUMENT));
    assert_eq!(with(&|l| l[1].eps = f32::NAN), Some(PLEAS_ERROR_ARGUMENT));
    assert_eq!(with(&|l| l[1].eps = 0.0), Some(PLEAS_ERROR_ARGUMENT));
    assert_eq!(with(&|l| l[2].input = 3), Some(PLEAS_ERROR_INDEX));
    assert_eq!(
        with(&|l| l[0].kernel = [31, 31]),
        Some(PLEAS_ERROR_SIZE_MISMATCH)
    );
    assert_eq!(
        with(&|l| l[0].padding = [3, 3]),
        Some(PLEAS_ERROR_SIZE_MISMATCH)
    );
    assert_eq!(with(&|l| l[0].out = 0), Some(PLEAS_ERROR_LENGTH));
    assert_eq!(with(&|l| l.clear()), Some(PLEAS_ERROR_LENGTH));
    assert_eq!(
        with(&|l| l.extend(vec![simple(PLEAS_CNN_OP_RELU, 11); 30])),
        Some(PLEAS_ERROR_LENGTH)
    );
    assert_eq!(
        plan_of(&graph(&l, &[HEAD + 1])).err(),
        Some(PLEAS_ERROR_INDEX)
    );
    assert_eq!(plan_of(&graph(&l, &[])).err(), Some(PLEAS_ERROR_LENGTH));
    let add = |other| {
        let mut l = c_layers();
        l.push(pleas_cnn_layer {
            op: PLEAS_CNN_OP_ADD,
            input: 3,
            other,
            ..Default::default()
        });
        plan_of(&graph(&l, &[HEAD + 1])).err()
    };
    assert_eq!(add(2), None, "relu1 + bn1: one shape");
    assert_eq!(add(4), Some(PLEAS_ERROR_SIZE_MISMATCH));
    assert_eq!(add(13), Some(PLEAS_ERROR_INDEX));

    let run = |p: &[f32], x: &[f32], out: &mut [f32], sc: &mut [f32]| forward(&g, p, x, out, sc);
    assert_eq!(
        run(&p[1..], &x, &mut out, &mut sc),
        PLEAS_ERROR_SIZE_MISMATCH
    );
    assert_eq!(
        run(&p, &x[1..], &mut out, &mut sc),
        PLEAS_ERROR_SIZE_MISMATCH
    );
    assert_eq!(run(&p, &x, &mut out[1..], &mut sc), PLEAS_ERROR_SCRATCH);
    let short = sc.len() - 1;
    assert_eq!(run(&p, &x, &mut out, &mut sc[..short]), PLEAS_ERROR_SCRATCH);
    let mut bad = p.clone();
    bad[7] = f32::NAN;
    assert_eq!(run(&bad, &x, &mut out, &mut sc), PLEAS_ERROR_NAN_INF);
    let mut bad_x = x.clone();
    bad_x[3] = f32::INFINITY;
    assert_eq!(run(&p, &bad_x, &mut out, &mut sc), PLEAS_ERROR_NAN_INF);
    // The output inside the scratch, and a misaligned scratch.
    let len = sc.len();
    let sp = sc.as_mut_ptr();
    // SAFETY: the call refuses overlapping buffers before writing anything.
    let s =
        unsafe { pleas_cnn_forward_f32(&g, p.as_ptr(), p.len(), x.as_ptr(), 784, sp, 5, sp, len) };
    assert_eq!(s, PLEAS_ERROR_ARGUMENT);
    let odd = (sp as usize + 1) as *mut f32;
    // SAFETY: the misaligned pointer is refused before use.
    let s = unsafe {
        pleas_cnn_forward_f32(
            &g,
            p.as_ptr(),
            p.len(),
            x.as_ptr(),
            784,
            out.as_mut_ptr(),
            5,
            odd,
            len - 1,
        )
    };
    assert_eq!(s, PLEAS_ERROR_ARGUMENT);
    let mut t = symmetric_table();
    t[200] = f32::NAN;
    let s = forward_u8(&g, &p, &[200u8; 784], &t, &mut out, &mut sc);
    assert_eq!(s, PLEAS_ERROR_NAN_INF);
}
