//! The whole-MLP merge through the C entry points: a real merge of the fashion `mlp64_split`
//! pair equals the core's call bit for bit (f32 samples and byte samples with a table), the
//! plan describes the core's plan, and every status the checks and the core's errors map to.

use std::ptr::{null, null_mut};

mod common;

use common::{Tensors, bits, fixtures, read_safetensors, symmetric_table};
use pleas_capi::mlp::*;
use pleas_capi::pleas_status::{self, *};
use pleas_core::merge::mlp::{
    Heads, LayerRef, MlpDims, MlpMergeInputs, MlpMergeParams, Samples, mlp_merge, mlp_merge_plan,
};

/// Model layers in the core's order: `layers.0`, `layers.1`, then `head`.
fn model(t: &Tensors) -> Vec<(Vec<f32>, Vec<f32>)> {
    ["layers.0", "layers.1", "head"]
        .iter()
        .map(|p| {
            (
                t.f32[&format!("{p}.weight")].clone(),
                t.f32[&format!("{p}.bias")].clone(),
            )
        })
        .collect()
}

/// The C description of a model (its arrays must outlive the calls).
fn c_model(m: &[(Vec<f32>, Vec<f32>)]) -> pleas_mlp_model_f32 {
    let mut c = pleas_mlp_model_f32 {
        layers: [pleas_mlp_layer_f32 {
            weight: null(),
            bias: null(),
        }; PLEAS_MLP_MAX_LAYERS],
    };
    for (slot, (w, b)) in c.layers.iter_mut().zip(m) {
        slot.weight = w.as_ptr();
        slot.bias = if b.is_empty() { null() } else { b.as_ptr() };
    }
    c
}

fn core_layers(m: &[(Vec<f32>, Vec<f32>)]) -> Vec<LayerRef<'_>> {
    m.iter()
        .map(|(w, b)| LayerRef {
            weight: w,
            bias: (!b.is_empty()).then_some(&b[..]),
        })
        .collect()
}

fn dims(inputs: usize, hidden: &[usize], classes: usize, bias: bool) -> pleas_mlp_dims {
    let mut d = pleas_mlp_dims {
        inputs,
        hidden_layers: hidden.len(),
        hidden: [0; PLEAS_MLP_MAX_HIDDEN],
        classes,
        bias: u32::from(bias),
        heads: PLEAS_MLP_HEADS_SEPARATE,
    };
    d.hidden[..hidden.len()].copy_from_slice(hidden);
    d
}

fn plan_of(
    d: &pleas_mlp_dims,
    n: usize,
    budget: f64,
    params: Option<&pleas_mlp_merge_params>,
) -> Result<pleas_mlp_merge_plan, pleas_status> {
    let mut plan = pleas_mlp_merge_plan::default();
    let p = params.map_or(null(), |p| p as *const _);
    // SAFETY: valid dims, params and plan.
    match unsafe { pleas_mlp_merge_plan_f32(d, n, budget, p, &mut plan) } {
        PLEAS_SUCCESS => Ok(plan),
        s => Err(s),
    }
}

#[test]
fn params_init_gives_the_core_defaults() {
    let mut p = pleas_mlp_merge_params {
        relative_ridge: 0.0,
        max_retries: 0,
        ridge_toward: 9,
        form: 9,
        rhs_chunk: 0,
        auction: pleas_capi::auction::pleas_auction_params {
            rel_tol: 0.0,
            initial_epsilon: 0.0,
            scaling: 0.0,
        },
    };
    // SAFETY: valid output.
    let status = unsafe { pleas_mlp_merge_params_init(&mut p) };
    assert_eq!(status, PLEAS_SUCCESS);
    assert_eq!(p, pleas_mlp_merge_params::from(MlpMergeParams::default()));
    assert_eq!(p.form, PLEAS_MLP_FORM_AUTO);
    assert_eq!(p.ridge_toward, PLEAS_MLP_RIDGE_TOWARD_AVERAGE);
    assert_eq!(p.rhs_chunk, 16);
    // SAFETY: NULL is refused before any write.
    let status = unsafe { pleas_mlp_merge_params_init(null_mut()) };
    assert_eq!(status, PLEAS_ERROR_ARGUMENT);
}

/// The fashion pair merged at 1.2 on `x_match[::8]` (250 images, 25 per class) through both
/// C entry points, against the core's own call: the same plan, the same weights bit for bit,
/// the same report.
#[test]
fn real_merge_equals_the_core_bit_for_bit() {
    let dir = fixtures();
    let a = model(&read_safetensors(
        &dir.join("mlp64_split/fashion_mlp_split_m0_s6.safetensors"),
    ));
    let b = model(&read_safetensors(
        &dir.join("mlp64_split/fashion_mlp_split_m1_s7.safetensors"),
    ));
    let eval = read_safetensors(&dir.join("eval.safetensors"));
    let all = &eval.u8["x_match"];
    let bytes: Vec<u8> = all
        .chunks_exact(784)
        .step_by(8)
        .flatten()
        .copied()
        .collect();
    let n = bytes.len() / 784;
    assert_eq!(n, 250);
    let table = symmetric_table();
    let x: Vec<f32> = bytes.iter().map(|&v| table[usize::from(v)]).collect();
    let budget = 1.2;

    // The core.
    let core_dims = MlpDims {
        inputs: 784,
        hidden: &[64, 64],
        classes: 5,
        bias: true,
    };
    let params = MlpMergeParams::default();
    let plan = mlp_merge_plan(&core_dims, Heads::Separate, n, budget, &params).unwrap();
    let (la, lb) = (core_layers(&a), core_layers(&b));
    let mut want = vec![0.0f32; plan.output_len];
    let mut scratch = vec![0.0f64; plan.scratch_len];
    let mut indices = vec![0usize; plan.index_len];
    let inputs = MlpMergeInputs {
        dims: core_dims,
        heads: Heads::Separate,
        a: &la,
        b: &lb,
        samples: Samples::F32(&x),
        budget,
    };
    let want_info = mlp_merge(&inputs, &params, &mut want, &mut scratch, &mut indices).unwrap();

    // The C plan describes the core's plan.
    let d = dims(784, &[64, 64], 5, true);
    let cp = plan_of(&d, n, budget, None).unwrap();
    assert_eq!(
        (cp.output_len, cp.scratch_len, cp.index_len),
        (plan.output_len, plan.scratch_len, plan.index_len)
    );
    assert_eq!((cp.ratio, cp.flop_ratio), (plan.ratio, plan.flop_ratio));
    assert_eq!(cp.samples, n);
    assert_eq!(cp.hidden_layers, 2);
    assert_eq!(cp.fitted_layers, 4);
    assert_eq!(&cp.merged_widths[..2], &plan.merged_widths[..]);
    assert_eq!(&cp.merged_pairs[..2], &plan.merged_pairs[..]);
    assert!(cp.merged_widths[2..].iter().all(|&w| w == 0));
    for f in 0..4 {
        let w = plan.weight_range(f);
        let bias = plan.bias_range(f).unwrap();
        assert_eq!(cp.weight_offset[f], w.start);
        assert_eq!(cp.bias_offset[f], bias.start);
        assert_eq!(cp.layer_outputs[f] * cp.layer_inputs[f], w.len());
        assert_eq!(cp.layer_outputs[f], bias.len());
    }
    assert_eq!(
        (cp.layer_inputs[0], cp.layer_outputs[0]),
        (784, cp.merged_widths[0])
    );
    assert_eq!(
        (cp.layer_inputs[3], cp.layer_outputs[3]),
        (cp.merged_widths[1], 5)
    );
    assert_eq!(cp.bias_offset[3] + 5, cp.output_len);
    eprintln!(
        "budget {budget}: widths {:?}, flop ratio {:.4}, merged {} floats, scratch {} doubles, \
         {} indices",
        &cp.merged_widths[..2],
        cp.flop_ratio,
        cp.output_len,
        cp.scratch_len,
        cp.index_len
    );

    // Both C entry points, with exactly the planned buffer sizes.
    let (ca, cb) = (c_model(&a), c_model(&b));
    for bytes_in in [false, true] {
        let mut got = vec![f32::NAN; cp.output_len];
        let mut scratch = vec![f64::NAN; cp.scratch_len];
        let mut indices = vec![usize::MAX; cp.index_len];
        let mut info = pleas_mlp_merge_info::default();
        // SAFETY: every pointer addresses the lengths the dims and the plan give.
        let s = unsafe {
            if bytes_in {
                pleas_mlp_merge_u8(
                    &d,
                    &ca,
                    &cb,
                    bytes.as_ptr(),
                    n,
                    table.as_ptr(),
                    budget,
                    null(),
                    got.as_mut_ptr(),
                    got.len(),
                    &mut info,
                    scratch.as_mut_ptr(),
                    scratch.len(),
                    indices.as_mut_ptr(),
                    indices.len(),
                )
            } else {
                pleas_mlp_merge_f32(
                    &d,
                    &ca,
                    &cb,
                    x.as_ptr(),
                    n,
                    budget,
                    null(),
                    got.as_mut_ptr(),
                    got.len(),
                    &mut info,
                    scratch.as_mut_ptr(),
                    scratch.len(),
                    indices.as_mut_ptr(),
                    indices.len(),
                )
            }
        };
        assert_eq!(s, PLEAS_SUCCESS, "bytes {bytes_in}");
        assert_eq!(bits(&got), bits(&want), "bytes {bytes_in}");
        assert_eq!(info, pleas_mlp_merge_info::from(&want_info));
        assert_eq!(info.plan, cp);
        assert_eq!(info.groups[0].width, 64);
        assert_eq!(info.groups[0].merged_width, cp.merged_widths[0]);
        assert!(info.groups[2].width == 0 && info.layers[4].ridge == 0.0);
        // The first layer (785 columns, 250 samples) reads the samples both models share: a
        // copy of its permute-and-average weights; the others primal.
        assert_eq!(
            (
                info.layers[0].copied_blocks,
                info.layers[0].dual_blocks,
                info.layers[0].primal_blocks
            ),
            (1, 0, 0)
        );
        for l in &info.layers[1..4] {
            assert!(
                l.copied_blocks == 0 && l.dual_blocks == 0 && l.primal_blocks > 0 && l.ridge > 0.0
            );
        }
    }
}

/// A small pair of random MLPs for the checks (784 inputs would make them slow).
struct Small {
    a: Vec<(Vec<f32>, Vec<f32>)>,
    b: Vec<(Vec<f32>, Vec<f32>)>,
    x: Vec<f32>,
    bytes: Vec<u8>,
    n: usize,
}

fn small(bias: bool) -> Small {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let mut model = || -> Vec<(Vec<f32>, Vec<f32>)> {
        [(6, 5), (4, 6)]
            .iter()
            .map(|&(o, i)| {
                let w = (0..o * i).map(|_| next()).collect();
                let b = if bias {
                    (0..o).map(|_| 0.1 * next()).collect()
                } else {
                    Vec::new()
                };
                (w, b)
            })
            .collect()
    };
    let (a, b) = (model(), model());
    let n = 12;
    let bytes: Vec<u8> = (0..n * 5).map(|i| (i * 37 % 256) as u8).collect();
    let table = symmetric_table();
    let x = bytes.iter().map(|&v| table[usize::from(v)]).collect();
    Small { a, b, x, bytes, n }
}

/// Buffers of a call, sized by the plan unless changed.
struct Call {
    d: pleas_mlp_dims,
    a: pleas_mlp_model_f32,
    b: pleas_mlp_model_f32,
    samples: *const f32,
    n: usize,
    budget: f64,
    params: *const pleas_mlp_merge_params,
    merged: Vec<f32>,
    merged_len: usize,
    info: *mut pleas_mlp_merge_info,
    scratch: Vec<f64>,
    scratch_len: usize,
    indices: Vec<usize>,
    indices_len: usize,
}

impl Call {
    fn new(s: &Small, bias: bool) -> Self {
        let d = dims(5, &[6], 4, bias);
        let plan = plan_of(&d, s.n, 1.5, None).unwrap();
        Call {
            d,
            a: c_model(&s.a),
            b: c_model(&s.b),
            samples: s.x.as_ptr(),
            n: s.n,
            budget: 1.5,
            params: null(),
            merged: vec![0.0; plan.output_len + 8],
            merged_len: plan.output_len,
            info: null_mut(),
            scratch: vec![0.0; plan.scratch_len + 8],
            scratch_len: plan.scratch_len,
            indices: vec![0; plan.index_len + 8],
            indices_len: plan.index_len,
        }
    }

    fn run(&mut self) -> pleas_status {
        // SAFETY: the buffers are at least as long as the lengths passed, which the tests
        // only shorten; samples and models outlive the call.
        unsafe {
            pleas_mlp_merge_f32(
                &self.d,
                &self.a,
                &self.b,
                self.samples,
                self.n,
                self.budget,
                self.params,
                self.merged.as_mut_ptr(),
                self.merged_len,
                self.info,
                self.scratch.as_mut_ptr(),
                self.scratch_len,
                self.indices.as_mut_ptr(),
                self.indices_len,
            )
        }
    }
}

#[test]
fn plan_errors() {
    let d = dims(784, &[64, 64], 5, true);
    assert!(plan_of(&d, 250, 1.2, None).is_ok());
    // SAFETY: NULL pointers are refused before anything is read or written.
    unsafe {
        let mut plan = pleas_mlp_merge_plan::default();
        assert_eq!(
            pleas_mlp_merge_plan_f32(null(), 250, 1.2, null(), &mut plan),
            PLEAS_ERROR_ARGUMENT
        );
        assert_eq!(
            pleas_mlp_merge_plan_f32(&d, 250, 1.2, null(), null_mut()),
            PLEAS_ERROR_ARGUMENT
        );
    }
    let with = |f: &dyn Fn(&mut pleas_mlp_dims)| {
        let mut e = d;
        f(&mut e);
        plan_of(&e, 250, 1.2, None)
    };
    assert_eq!(
        with(&|e| e.hidden_layers = PLEAS_MLP_MAX_HIDDEN + 1).err(),
        Some(PLEAS_ERROR_LENGTH)
    );
    assert_eq!(with(&|e| e.inputs = 0).err(), Some(PLEAS_ERROR_LENGTH));
    assert_eq!(with(&|e| e.classes = 0).err(), Some(PLEAS_ERROR_LENGTH));
    assert_eq!(with(&|e| e.hidden[1] = 0).err(), Some(PLEAS_ERROR_LENGTH));
    assert_eq!(
        with(&|e| e.inputs = usize::MAX / 2).err(),
        Some(PLEAS_ERROR_LENGTH)
    );
    assert_eq!(with(&|e| e.bias = 2).err(), Some(PLEAS_ERROR_ARGUMENT));
    assert_eq!(with(&|e| e.heads = 2).err(), Some(PLEAS_ERROR_ARGUMENT));
    // Hidden widths beyond `hidden_layers` are ignored; no hidden layer is allowed.
    assert!(with(&|e| e.hidden[5] = 0).is_ok());
    assert!(with(&|e| e.hidden_layers = 0).is_ok());
    assert_eq!(plan_of(&d, 0, 1.2, None).err(), Some(PLEAS_ERROR_LENGTH));
    for budget in [0.99, 2.01, f64::NAN, f64::INFINITY] {
        assert_eq!(
            plan_of(&d, 250, budget, None).err(),
            Some(PLEAS_ERROR_ARGUMENT),
            "{budget}"
        );
    }
    let mut p = pleas_mlp_merge_params::from(MlpMergeParams::default());
    let mut params = |f: &dyn Fn(&mut pleas_mlp_merge_params)| {
        f(&mut p);
        let r = plan_of(&d, 250, 1.2, Some(&p));
        p = pleas_mlp_merge_params::from(MlpMergeParams::default());
        r
    };
    assert_eq!(
        params(&|p| p.relative_ridge = 0.0).err(),
        Some(PLEAS_ERROR_ARGUMENT)
    );
    assert_eq!(
        params(&|p| p.relative_ridge = f64::NAN).err(),
        Some(PLEAS_ERROR_ARGUMENT)
    );
    assert_eq!(params(&|p| p.form = 3).err(), Some(PLEAS_ERROR_ARGUMENT));
    assert_eq!(
        params(&|p| p.ridge_toward = 2).err(),
        Some(PLEAS_ERROR_ARGUMENT)
    );
    // The forms, chunk sizes and the ridge's target change the scratch, not the layout. With
    // the ridge towards the permute-and-average weights the first layer is a copy and needs
    // none; towards zero it is solved (785 columns: a 250-sample kernel, or a 785-column Gram
    // in the primal form).
    let auto = params(&|_| {}).unwrap();
    let zero = params(&|p| p.ridge_toward = PLEAS_MLP_RIDGE_TOWARD_ZERO).unwrap();
    let primal = params(&|p| {
        p.ridge_toward = PLEAS_MLP_RIDGE_TOWARD_ZERO;
        p.form = PLEAS_MLP_FORM_PRIMAL;
    })
    .unwrap();
    let wide = params(&|p| {
        p.ridge_toward = PLEAS_MLP_RIDGE_TOWARD_ZERO;
        p.rhs_chunk = 80;
    })
    .unwrap();
    assert!(zero.scratch_len > auto.scratch_len);
    assert!(primal.scratch_len > zero.scratch_len && wide.scratch_len > zero.scratch_len);
    assert_eq!(primal.output_len, auto.output_len);
    assert_eq!(zero.output_len, auto.output_len);
    // The plan must not overlap its inputs.
    let mut both = [pleas_mlp_merge_plan::default(); 1];
    let dims_in_plan = both.as_mut_ptr().cast::<pleas_mlp_dims>();
    // SAFETY: the plan struct is larger than the dims struct; both are plain data.
    unsafe {
        dims_in_plan.write(d);
        assert_eq!(
            pleas_mlp_merge_plan_f32(dims_in_plan, 250, 1.2, null(), both.as_mut_ptr()),
            PLEAS_ERROR_ARGUMENT
        );
    }
}

#[test]
fn merge_errors() {
    let s = small(true);
    let mut info = pleas_mlp_merge_info::default();
    {
        let mut c = Call::new(&s, true);
        c.info = &mut info;
        assert_eq!(c.run(), PLEAS_SUCCESS);
        assert_eq!(info.plan.fitted_layers, 3);
        assert!(c.merged[..c.merged_len].iter().all(|v| v.is_finite()));
    }
    let check = |want: pleas_status, what: &str, f: &dyn Fn(&mut Call)| {
        let mut c = Call::new(&s, true);
        f(&mut c);
        assert_eq!(c.run(), want, "{what}");
    };
    check(PLEAS_ERROR_ARGUMENT, "NULL samples", &|c| {
        c.samples = null()
    });
    check(PLEAS_ERROR_ARGUMENT, "NULL weight", &|c| {
        c.b.layers[1].weight = null()
    });
    check(PLEAS_ERROR_ARGUMENT, "misaligned weight", &|c| {
        c.a.layers[0].weight = c.a.layers[0].weight.cast::<u8>().wrapping_add(1).cast()
    });
    check(PLEAS_ERROR_ARGUMENT, "budget", &|c| c.budget = 2.5);
    check(PLEAS_ERROR_ARGUMENT, "heads", &|c| c.d.heads = 5);
    check(PLEAS_ERROR_LENGTH, "no samples", &|c| c.n = 0);
    check(PLEAS_ERROR_LENGTH, "too many layers", &|c| {
        c.d.hidden_layers = 9
    });
    check(PLEAS_ERROR_SIZE_MISMATCH, "bias missing", &|c| {
        c.a.layers[1].bias = null()
    });
    check(PLEAS_ERROR_SCRATCH, "short merged", &|c| c.merged_len -= 1);
    check(PLEAS_ERROR_SCRATCH, "short scratch", &|c| {
        c.scratch_len -= 1
    });
    check(PLEAS_ERROR_SCRATCH, "short indices", &|c| {
        c.indices_len -= 1
    });
    // Overlaps: a writable buffer with another buffer of the call.
    check(PLEAS_ERROR_ARGUMENT, "merged over a weight", &|c| {
        c.a.layers[0].weight = c.merged.as_ptr()
    });
    check(PLEAS_ERROR_ARGUMENT, "samples in the scratch", &|c| {
        c.samples = c.scratch.as_ptr().cast()
    });
    // Read-only buffers may overlap: B is A.
    check(PLEAS_SUCCESS, "B is A", &|c| c.b = c.a);
    // Non-finite inputs.
    let mut bad = s.x.clone();
    bad[7] = f32::NAN;
    check(PLEAS_ERROR_NAN_INF, "NaN sample", &|c| {
        c.samples = bad.as_ptr()
    });
    let mut w = s.b[0].0.clone();
    w[3] = f32::INFINITY;
    check(PLEAS_ERROR_NAN_INF, "infinite weight", &|c| {
        c.b.layers[0].weight = w.as_ptr()
    });
    // Finite inputs whose activations overflow f32.
    let huge: Vec<f32> = vec![3e38; s.a[0].0.len()];
    check(PLEAS_ERROR_OVERFLOW, "overflowing activations", &|c| {
        c.a.layers[0].weight = huge.as_ptr()
    });
    // Without biases: a bias given is refused; all-zero samples leave nothing to fit and no
    // ridge (it is relative to the zero Gram), so the system is singular.
    let nb = small(false);
    let check_nb = |want: pleas_status, what: &str, f: &dyn Fn(&mut Call)| {
        let mut c = Call::new(&nb, false);
        f(&mut c);
        assert_eq!(c.run(), want, "{what}");
    };
    check_nb(PLEAS_SUCCESS, "no biases", &|_| {});
    check_nb(PLEAS_ERROR_SIZE_MISMATCH, "bias given", &|c| {
        c.a.layers[0].bias = s.a[0].1.as_ptr()
    });
    let zeros = vec![0.0f32; nb.x.len()];
    check_nb(PLEAS_ERROR_SINGULAR, "zero samples", &|c| {
        c.samples = zeros.as_ptr()
    });
    // Info is not written on error.
    let mut c = Call::new(&s, true);
    let mut untouched = pleas_mlp_merge_info::default();
    c.info = &mut untouched;
    c.scratch_len = 0;
    assert_eq!(c.run(), PLEAS_ERROR_SCRATCH);
    assert_eq!(untouched, pleas_mlp_merge_info::default());
}

#[test]
fn byte_merge_errors() {
    let s = small(true);
    let c = Call::new(&s, true);
    let table = symmetric_table();
    let run = |data: *const u8, table: *const f32, merged_len: usize| {
        let mut c = Call::new(&s, true);
        c.merged_len = merged_len;
        // SAFETY: as in `Call::run`, with `data` addressing `n * 5` bytes and `table` 256
        // floats when not NULL.
        unsafe {
            pleas_mlp_merge_u8(
                &c.d,
                &c.a,
                &c.b,
                data,
                c.n,
                table,
                c.budget,
                null(),
                c.merged.as_mut_ptr(),
                c.merged_len,
                null_mut(),
                c.scratch.as_mut_ptr(),
                c.scratch_len,
                c.indices.as_mut_ptr(),
                c.indices_len,
            )
        }
    };
    let len = c.merged_len;
    assert_eq!(run(s.bytes.as_ptr(), table.as_ptr(), len), PLEAS_SUCCESS);
    assert_eq!(run(null(), table.as_ptr(), len), PLEAS_ERROR_ARGUMENT);
    assert_eq!(run(s.bytes.as_ptr(), null(), len), PLEAS_ERROR_ARGUMENT);
    let misaligned = table.as_ptr().cast::<u8>().wrapping_add(2).cast::<f32>();
    assert_eq!(run(s.bytes.as_ptr(), misaligned, len), PLEAS_ERROR_ARGUMENT);
    let mut nan = table;
    nan[usize::from(s.bytes[9])] = f32::NAN;
    assert_eq!(
        run(s.bytes.as_ptr(), nan.as_ptr(), len),
        PLEAS_ERROR_NAN_INF
    );
    assert_eq!(
        run(s.bytes.as_ptr(), table.as_ptr(), len - 1),
        PLEAS_ERROR_SCRATCH
    );
}
