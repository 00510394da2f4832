//! The heap-free CNN merge of `pleas-core` (`merge::cnn`, the core driver with an in-place
//! source on the compact forward pass) against the host pipeline (`pleas::merge::merge` with
//! its default settings, batch-norm folded) on the `cnn_split` Fashion-MNIST pair, at budgets
//! 1.0 and 1.2: the same layouts, the same per-task accuracies to three decimals (what the
//! firmware prints against `pleas merge` + `pleas eval`), and weights that agree to the
//! rounding of the sums; the byte samples give the f32 samples' bits; the core's batch-norm
//! folding gives the host's bits; and the refusals.

use std::path::PathBuf;

use pleas::io::data::{DataSpec, Normalize};
use pleas::io::safetensors::{self, Metadata};
use pleas::merge::pipeline::{MergeOutcome, merge};
use pleas::merge::settings::MergeSettings;
use pleas::model::Model;
use pleas_core::forward::Forward;
use pleas_core::forward::compact::{CompactPlan, Layer, LayerOp, MapShape, Network, Window};
use pleas_core::forward::compact_fold::FoldedNetwork;
use pleas_core::forward::fold::fold_batchnorm;
use pleas_core::graph::Op;
use pleas_core::merge::cnn::{
    CnnBuffer, CnnMergeError, CnnMergeInfo, CnnMergeInputs, CnnMergeParams, CnnMergePlan,
    CnnOperand, Heads, Model as Side, Samples, cnn_merge, cnn_merge_plan,
};
use pleas_tests::compact::{CompactNet, from_graph};
use pleas_tests::models::{fashion_eval, fixtures};
use pleas_tests::split_task::{host_accuracy, host_layers, rel_fro, task_accuracy, test_set};
use pleas_tests::tolerance::{CNN_HOST_SCORE_REL, CNN_HOST_WEIGHTS_REL, CNN_SELF_MERGE_LOGIT_REL};

const CNN_A: &str = "fashion/cnn_split/fashion_cnn_split_m0_s8.safetensors";
const CNN_B: &str = "fashion/cnn_split/fashion_cnn_split_m1_s9.safetensors";
/// Merge samples: what the firmware demo merges on (every 10th image of `x_match`).
const MERGE_SAMPLES: usize = 200;
/// Test images: every 5th of `x_test` (2000, as the firmware evaluates).
const TEST_STRIDE: usize = 5;

/// A fixture as a compact network (batch-norm layers included).
fn raw(rel: &str) -> CompactNet {
    let m = Model::load(&fixtures().join(rel), None).unwrap();
    from_graph(&m.graph, &m.weights).unwrap()
}

/// A fixture with its batch-norms folded by the host (as `pleas merge --bn fold` prepares
/// it), as a compact network.
fn host_folded(rel: &str) -> CompactNet {
    let m = Model::load(&fixtures().join(rel), None).unwrap();
    let f = fold_batchnorm(&m.graph, &m.weights).unwrap();
    from_graph(&f.graph, &f.weights).unwrap()
}

fn network(c: &CompactNet) -> Network<'_> {
    Network {
        input: c.input,
        layers: &c.layers,
        outputs: &c.outputs,
    }
}

/// The merge samples as the host reads them (a file of u8 images) and as bytes.
struct MergeData {
    spec: DataSpec,
    bytes: Vec<u8>,
    x: Vec<f32>,
}

fn samples(n: usize) -> MergeData {
    let file = safetensors::read(&fashion_eval()).unwrap();
    let all = &file.tensors["x_match"];
    let total = all.shape[0];
    let mut t = all.clone();
    t.shape[0] = n;
    t.bytes = (0..n)
        .flat_map(|i| {
            let r = i * total / n;
            all.bytes[r * 784..(r + 1) * 784].to_vec()
        })
        .collect();
    let dir = pleas_tests::scratch::dir("cnn-core");
    let path: PathBuf = dir.join(format!("x_match_{n}.safetensors"));
    let mut tensors = std::collections::BTreeMap::new();
    let bytes = t.bytes.clone();
    tensors.insert("x_match".to_string(), t);
    std::fs::write(&path, safetensors::raw_to_bytes(&tensors, &Metadata::new())).unwrap();
    MergeData {
        spec: DataSpec::unlabelled(path, "x_match", Normalize::Symmetric),
        x: bytes
            .iter()
            .map(|&v| Normalize::Symmetric.apply(f32::from(v)))
            .collect(),
        bytes,
    }
}

fn table() -> [f32; 256] {
    std::array::from_fn(|v| Normalize::Symmetric.apply(v as f32))
}

/// A core merge's plan, merged parameters and report.
struct CoreMerge {
    plan: CnnMergePlan,
    out: Vec<f32>,
    info: CnnMergeInfo,
}

fn core_merge(
    a: &CompactNet,
    b: &CompactNet,
    samples: Samples<'_>,
    budget: f64,
    params: &CnnMergeParams,
) -> Result<CoreMerge, CnnMergeError> {
    let net = network(a);
    let n = samples.len() / net.input.len();
    let plan = cnn_merge_plan(&net, Heads::Separate, n, budget, params)?;
    let mut out = vec![f32::NAN; plan.output_len];
    let mut scratch = vec![f64::NAN; plan.scratch_len];
    let mut forward = vec![f32::NAN; plan.forward_len];
    let mut indices = vec![usize::MAX; plan.index_len];
    let inputs = CnnMergeInputs {
        net,
        heads: Heads::Separate,
        a: &a.params,
        b: &b.params,
        samples,
        budget,
    };
    let info = cnn_merge(
        &plan,
        &inputs,
        params,
        &mut out,
        &mut scratch,
        &mut forward,
        &mut indices,
    )?;
    Ok(CoreMerge { plan, out, info })
}

/// The merged network run by the compact forward pass (as the firmware runs it).
fn core_accuracy(m: &CoreMerge, x: &[f32], labels: &[u8]) -> [f64; 2] {
    let plan = CompactPlan::new(m.plan.merged_network()).unwrap();
    let mut scratch = vec![0.0f32; plan.scratch_len()];
    let outputs = m.plan.merged_network().outputs;
    task_accuracy(
        |i| {
            plan.input_mut(&mut scratch)
                .unwrap()
                .copy_from_slice(&x[i * 784..(i + 1) * 784]);
            plan.run(&m.out, &mut scratch, &mut |_, _| {}).unwrap();
            outputs
                .iter()
                .map(|&o| plan.node(o, &scratch).unwrap().to_vec())
                .collect()
        },
        labels,
    )
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
}

/// The core's fitted layer `f` (weight, bias) from the merged parameters.
fn core_layer(m: &CoreMerge, f: usize, host_len: usize, rows: usize) -> (&[f32], &[f32]) {
    let net = m.plan.merged_network();
    let plan = CompactPlan::new(net).unwrap();
    let layer = fitted_layer(net.layers, f);
    let range = plan.param_range(layer);
    let p = &m.out[range];
    assert_eq!(p.len(), host_len + rows, "layer {f}");
    p.split_at(host_len)
}

/// The merged network's layer of fitted layer `f` (conv and linear layers in order).
fn fitted_layer(layers: &[Layer], f: usize) -> usize {
    layers
        .iter()
        .enumerate()
        .filter(|(_, l)| matches!(l.op, LayerOp::Conv2d { .. } | LayerOp::Linear { .. }))
        .nth(f)
        .unwrap()
        .0
}

fn compare_with_host(budget: f64, host: &MergeOutcome, core: &CoreMerge) {
    for (g, (hg, cg)) in host.groups.iter().zip(&core.info.groups).enumerate() {
        assert_eq!(hg.merged, cg.merged, "budget {budget} group {g}");
        assert_eq!(
            hg.merged_width, cg.merged_width,
            "budget {budget} group {g}"
        );
        let t = rel(cg.total_score, hg.total_score);
        eprintln!("budget {budget} group {g}: total score {t:.1e}");
        assert!(t <= CNN_HOST_SCORE_REL, "budget {budget} group {g}: {t:e}");
    }
    let hl = host_layers(host);
    assert_eq!(hl.len(), core.plan.fitted_layers());
    for (f, (hw, hb)) in hl.iter().enumerate() {
        let (cw, cb) = core_layer(core, f, hw.len(), hb.len());
        let (w, b) = (rel_fro(cw, hw), rel_fro(cb, hb));
        let ridge = rel(core.info.layers[f].ridge, host.layers[f].ridge);
        eprintln!("budget {budget} layer {f}: weights {w:.1e} bias {b:.1e} ridge {ridge:.1e}");
        assert!(
            w <= CNN_HOST_WEIGHTS_REL,
            "budget {budget} layer {f}: {w:e}"
        );
        assert!(
            b <= CNN_HOST_WEIGHTS_REL,
            "budget {budget} layer {f}: bias {b:e}"
        );
    }
}

/// The host's `pleas merge` (default settings) and the core's merge of the byte samples, of
/// the pair `hosts` / `cores` at `budget`: their weights compared and their accuracies on
/// `test` equal to three decimals. Returns both merges and the core's accuracies.
fn merge_both(
    hosts: [&Model; 2],
    cores: [&CompactNet; 2],
    s: &MergeData,
    budget: f64,
    test: &(Vec<f32>, Vec<u8>),
) -> (MergeOutcome, CoreMerge, [f64; 2]) {
    let settings = MergeSettings {
        budget,
        ..MergeSettings::default()
    };
    let host = merge(hosts[0], hosts[1], &s.spec, &settings, &mut |_| {}).unwrap();
    let table = table();
    let bytes = Samples::U8 {
        data: &s.bytes,
        table: &table,
    };
    let params = CnnMergeParams::default();
    let core = core_merge(cores[0], cores[1], bytes, budget, &params).unwrap();
    compare_with_host(budget, &host, &core);
    let (ha, ca) = (
        host_accuracy(&host, &test.0, &test.1),
        core_accuracy(&core, &test.0, &test.1),
    );
    eprintln!(
        "budget {budget}: accuracy core a {:.4} b {:.4}, host a {:.4} b {:.4}",
        ca[0], ca[1], ha[0], ha[1]
    );
    for h in 0..2 {
        assert_eq!(
            format!("{:.3}", ca[h]),
            format!("{:.3}", ha[h]),
            "budget {budget} head {h}"
        );
    }
    (host, core, ca)
}

#[test]
fn core_cnn_merge_matches_the_host_pipeline() {
    let (ma, mb) = (
        Model::load(&fixtures().join(CNN_A), None).unwrap(),
        Model::load(&fixtures().join(CNN_B), None).unwrap(),
    );
    let (a, b) = (raw(CNN_A), raw(CNN_B));
    let test = test_set(TEST_STRIDE);
    let s = samples(MERGE_SAMPLES);
    for budget in [1.0, 1.2] {
        let (host, core, _) = merge_both([&ma, &mb], [&a, &b], &s, budget, &test);
        assert!((core.plan.flop_ratio - host.planned_flop_ratio).abs() < 1e-12);
        let (o, sc, fw, ix) = core.plan.bytes();
        eprintln!("bytes: output {o}, f64 scratch {sc}, forward {fw}, indices {ix}");
        // The byte samples read through their table give the f32 samples' result, bit for bit.
        let params = CnnMergeParams::default();
        let f32s = core_merge(&a, &b, Samples::F32(&s.x), budget, &params).unwrap();
        assert!(
            f32s.out
                .iter()
                .zip(&core.out)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "budget {budget}: byte and f32 samples differ"
        );
    }
}

#[test]
fn the_compact_fold_is_the_host_fold_bit_for_bit() {
    for rel in [CNN_A, CNN_B] {
        let (r, host) = (raw(rel), host_folded(rel));
        let net = network(&r);
        let folded = FoldedNetwork::new(&net).unwrap();
        assert!(folded.folds());
        let fnet = folded.network(net.input);
        assert_eq!(fnet.layers, &host.layers[..], "{rel}");
        assert_eq!(fnet.outputs, &host.outputs[..], "{rel}");
        let original = CompactPlan::new(net).unwrap();
        let mut out = vec![f32::NAN; host.params.len()];
        folded.fold_params(&original, &r.params, &mut out).unwrap();
        assert!(
            out.iter()
                .zip(&host.params)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{rel}"
        );
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let (a, b) = (raw(CNN_A), raw(CNN_B));
    let s = samples(4);
    let params = CnnMergeParams::default();
    let x = Samples::F32(&s.x);
    let short = &a.params[..a.params.len() - 1];
    let net = network(&a);
    let run = |pa: &[f32], samples: Samples<'_>, budget: f64| {
        let plan = cnn_merge_plan(&net, Heads::Separate, 4, 1.0, &params).unwrap();
        let mut out = vec![0.0; plan.output_len];
        let mut scratch = vec![0.0; plan.scratch_len];
        let mut forward = vec![0.0; plan.forward_len];
        let mut indices = vec![0; plan.index_len];
        let inputs = CnnMergeInputs {
            net,
            heads: Heads::Separate,
            a: pa,
            b: &b.params,
            samples,
            budget,
        };
        cnn_merge(
            &plan,
            &inputs,
            &params,
            &mut out,
            &mut scratch,
            &mut forward,
            &mut indices,
        )
        .map(|_| ())
    };
    assert_eq!(
        run(short, x, 1.0),
        Err(CnnMergeError::ShapeMismatch {
            operand: CnnOperand::Params(Side::A),
            expected: a.params.len(),
            found: a.params.len() - 1,
        })
    );
    assert_eq!(
        run(&a.params, Samples::F32(&s.x[..100]), 1.0),
        Err(CnnMergeError::ShapeMismatch {
            operand: CnnOperand::Samples,
            expected: 784,
            found: 100,
        })
    );
    assert_eq!(
        run(&a.params, x, 2.5),
        Err(CnnMergeError::BudgetOutOfRange { budget: 2.5 })
    );
    // A plan made for another budget.
    assert_eq!(run(&a.params, x, 1.2), Err(CnnMergeError::PlanMismatch));
    let mut nan = a.params.clone();
    nan[7] = f32::NAN;
    assert_eq!(
        run(&nan, x, 1.0),
        Err(CnnMergeError::NonFinite {
            operand: CnnOperand::Params(Side::A),
            index: 7,
        })
    );
    // Short buffers, each named.
    let plan = cnn_merge_plan(&net, Heads::Separate, 4, 1.0, &params).unwrap();
    let inputs = CnnMergeInputs {
        net,
        heads: Heads::Separate,
        a: &a.params,
        b: &b.params,
        samples: x,
        budget: 1.0,
    };
    let mut out = vec![0.0; plan.output_len];
    let mut scratch = vec![0.0; plan.scratch_len];
    let mut forward = vec![0.0; plan.forward_len - 1];
    let mut indices = vec![0; plan.index_len];
    assert_eq!(
        cnn_merge(
            &plan,
            &inputs,
            &params,
            &mut out,
            &mut scratch,
            &mut forward,
            &mut indices
        )
        .map(|_| ()),
        Err(CnnMergeError::ScratchTooSmall {
            kind: CnnBuffer::Forward,
            needed: plan.forward_len,
            provided: plan.forward_len - 1,
        })
    );
    // A batch-norm that follows no conv or linear layer is refused.
    let folded = host_folded(CNN_A);
    let mut layers = folded.layers.clone();
    layers.insert(
        2,
        Layer {
            op: LayerOp::BatchNorm { eps: 1e-5 },
            input: 2,
        },
    );
    for (l, layer) in layers.iter_mut().enumerate().skip(3) {
        layer.input = l;
    }
    let late_bn = Network {
        input: a.input,
        layers: &layers,
        outputs: &[layers.len()],
    };
    assert!(matches!(
        cnn_merge_plan(&late_bn, Heads::Separate, 4, 1.0, &params),
        Err(CnnMergeError::UnsupportedLayer { layer: 2, .. })
    ));
    let mut layers = folded.layers.clone();
    layers.insert(
        2,
        Layer {
            op: LayerOp::Add { other: 1 },
            input: 2,
        },
    );
    for (l, layer) in layers.iter_mut().enumerate().skip(3) {
        layer.input = l;
    }
    let with_add = Network {
        input: folded.input,
        layers: &layers,
        outputs: &[layers.len()],
    };
    // A residual add of a conv's output and its ReLU keeps them one group.
    let plan = cnn_merge_plan(&with_add, Heads::Separate, 4, 1.0, &params).unwrap();
    assert_eq!(plan.groups(), 3);
}

fn conv_op(name: &str, i: usize, o: usize, k: usize, s: usize, p: usize) -> Op {
    Op::Conv2d {
        weight: format!("{name}.weight"),
        bias: Some(format!("{name}.bias")),
        in_channels: i,
        out_channels: o,
        kernel: [k, k],
        stride: [s, s],
        padding: [p, p],
    }
}

/// Input `3 x 9 x 9`: conv 3x3, max pooling, a strided conv, average pooling, a 1x1 conv,
/// global pooling, a hidden linear layer and the head: every layer kind the device merge
/// handles.
fn pooled_cnn() -> pleas_core::graph::Graph {
    use pleas_core::graph::{Graph, Shape};
    let mut g = Graph::new(Shape::new(3, 9, 9));
    let window = |k: usize, s: usize, p: usize| ([k, k], [s, s], [p, p]);
    let x = g.push("c1", conv_op("c1", 3, 6, 3, 1, 1), &[0]).unwrap();
    let x = g.push("r1", Op::Relu, &[x]).unwrap();
    let (kernel, stride, padding) = window(2, 2, 0);
    let x = g
        .push(
            "max",
            Op::MaxPool {
                kernel,
                stride,
                padding,
            },
            &[x],
        )
        .unwrap();
    let x = g.push("c2", conv_op("c2", 6, 8, 3, 2, 1), &[x]).unwrap();
    let x = g.push("r2", Op::Relu, &[x]).unwrap();
    let (kernel, stride, padding) = window(3, 1, 1);
    let x = g
        .push(
            "avg",
            Op::AvgPool {
                kernel,
                stride,
                padding,
            },
            &[x],
        )
        .unwrap();
    let x = g.push("c3", conv_op("c3", 8, 8, 1, 1, 0), &[x]).unwrap();
    let x = g.push("r3", Op::Relu, &[x]).unwrap();
    let x = g.push("gap", Op::GlobalAvgPool, &[x]).unwrap();
    let lin = |name: &str, i: usize, o: usize| Op::Linear {
        weight: format!("{name}.weight"),
        bias: Some(format!("{name}.bias")),
        in_features: i,
        out_features: o,
    };
    let x = g.push("fc", lin("fc", 8, 6), &[x]).unwrap();
    let x = g.push("r4", Op::Relu, &[x]).unwrap();
    let h = g.push("head", lin("head", 6, 4), &[x]).unwrap();
    g.add_output("head", h).unwrap();
    g
}

/// `net` with the output channels of every conv or linear layer before the head permuted
/// (`perm[g]` for the `g`-th such layer: new channel `c` is old channel `perm[g][c]`) and the
/// next such layer's input channels permuted to match: the same function.
fn permuted(net: &CompactNet, perms: &[Vec<usize>]) -> Vec<f32> {
    let plan = CompactPlan::new(network(net)).unwrap();
    let mut out = net.params.clone();
    let fitted: Vec<usize> = (0..net.layers.len())
        .filter(|&l| {
            matches!(
                net.layers[l].op,
                LayerOp::Conv2d { .. } | LayerOp::Linear { .. }
            )
        })
        .collect();
    for (g, perm) in perms.iter().enumerate() {
        let (l, next) = (fitted[g], fitted[g + 1]);
        let n = perm.len();
        // Rows of layer l and its bias.
        let r = plan.param_range(l);
        let row = (r.len() - n) / n;
        // Its input channels may already be permuted (by the previous group).
        let src = out[r.clone()].to_vec();
        for (c, &old) in perm.iter().enumerate() {
            out[r.start + c * row..r.start + (c + 1) * row]
                .copy_from_slice(&src[old * row..(old + 1) * row]);
            out[r.start + n * row + c] = src[n * row + old];
        }
        // Input channels of the next layer (each owning `patch` columns of every row).
        let rn = plan.param_range(next);
        let outs = match net.layers[next].op {
            LayerOp::Conv2d { out_channels, .. } => out_channels,
            LayerOp::Linear { out_features, .. } => out_features,
            _ => unreachable!(),
        };
        let row_n = (rn.len() - outs) / outs;
        let patch = row_n / n;
        let src = out[rn.clone()].to_vec();
        for o in 0..outs {
            for (c, &old) in perm.iter().enumerate() {
                let dst = rn.start + o * row_n + c * patch;
                let from = o * row_n + old * patch;
                out[dst..dst + patch].copy_from_slice(&src[from..from + patch]);
            }
        }
    }
    out
}

/// Merges `a` with `b`, a copy of it with permuted groups, at budget 1.0 on the samples `x`,
/// and checks that every unit of each of the `groups` groups is matched with its copy and
/// that the merged network computes `a`'s logits on `x` and on `fresh` inputs.
fn assert_merges_to_the_model(
    a: &CompactNet,
    b: &CompactNet,
    x: &[f32],
    fresh: &[f32],
    groups: usize,
) {
    use pleas_tests::models::max_rel_diff;
    let net = network(a);
    let n = x.len() / net.input.len();
    let params = CnnMergeParams::default();
    let plan = cnn_merge_plan(&net, Heads::Shared, n, 1.0, &params).unwrap();
    assert_eq!(plan.groups(), groups);
    let mut out = vec![f32::NAN; plan.output_len];
    let mut scratch = vec![f64::NAN; plan.scratch_len];
    let mut forward = vec![f32::NAN; plan.forward_len];
    let mut indices = vec![usize::MAX; plan.index_len];
    let inputs = CnnMergeInputs {
        net,
        heads: Heads::Shared,
        a: &a.params,
        b: &b.params,
        samples: Samples::F32(x),
        budget: 1.0,
    };
    let info = cnn_merge(
        &plan,
        &inputs,
        &params,
        &mut out,
        &mut scratch,
        &mut forward,
        &mut indices,
    )
    .unwrap();
    // Every unit is matched with its copy: every pair merged, at distance zero.
    for (k, gi) in info.groups.iter().enumerate() {
        assert_eq!(gi.merged, gi.width, "group {k}");
        assert!(gi.total_score.abs() < 1e-3, "group {k}: {}", gi.total_score);
    }
    let run = |net: Network<'_>, p: &[f32], xs: &[f32]| -> Vec<f32> {
        let cp = CompactPlan::new(net).unwrap();
        let mut sc = vec![0.0; cp.scratch_len()];
        let mut logits = Vec::new();
        for s in xs.chunks_exact(net.input.len()) {
            cp.input_mut(&mut sc).unwrap().copy_from_slice(s);
            cp.run(p, &mut sc, &mut |_, _| {}).unwrap();
            logits.extend_from_slice(cp.node(net.outputs[0], &sc).unwrap());
        }
        logits
    };
    for xs in [x, fresh] {
        let want = run(network(a), &a.params, xs);
        let got = run(plan.merged_network(), &out, xs);
        let d = max_rel_diff(&want, &got);
        eprintln!("self-merge: logits within {d:.1e} of the model's");
        assert!(d < CNN_SELF_MERGE_LOGIT_REL, "logits differ by {d:e}");
    }
}

#[test]
fn a_cnn_merged_with_its_permuted_copy_is_the_model() {
    use pleas_tests::models::{random_input, random_weights};
    let g = pooled_cnn();
    let a = from_graph(&g, &random_weights(&g, 5)).unwrap();
    let perms = vec![
        vec![3, 0, 5, 1, 4, 2],
        vec![7, 2, 0, 5, 1, 6, 4, 3],
        vec![1, 0, 3, 2, 5, 4, 7, 6],
        vec![5, 3, 1, 0, 2, 4],
    ];
    let b = CompactNet {
        params: permuted(&a, &perms),
        ..a.clone()
    };
    let x = random_input(&g, 40, 6);
    let fresh = random_input(&g, 10, 7);
    assert_merges_to_the_model(&a, &b, &x, &fresh, 4);
}

/// Input `3 x 8 x 8`, two residual blocks: conv -> ReLU -> conv -> batch-norm -> add(skip)
/// -> ReLU, then a strided conv -> ReLU -> conv -> add(skip) -> ReLU, global pooling and the
/// head. Each add ties its two operands' channels: two groups, each produced by two convs.
fn residual_cnn() -> pleas_core::graph::Graph {
    use pleas_core::graph::{Graph, Shape};
    let mut g = Graph::new(Shape::new(3, 8, 8));
    let x = g.push("c1", conv_op("c1", 3, 6, 3, 1, 1), &[0]).unwrap();
    let skip = g.push("r1", Op::Relu, &[x]).unwrap();
    let x = g.push("c2", conv_op("c2", 6, 6, 3, 1, 1), &[skip]).unwrap();
    let x = g
        .push("bn2", pleas_tests::models::bn_op("bn2", 6), &[x])
        .unwrap();
    let x = g.push("add1", Op::Add, &[x, skip]).unwrap();
    let x = g.push("r2", Op::Relu, &[x]).unwrap();
    let x = g.push("c3", conv_op("c3", 6, 8, 3, 2, 1), &[x]).unwrap();
    let skip = g.push("r3", Op::Relu, &[x]).unwrap();
    let x = g.push("c4", conv_op("c4", 8, 8, 3, 1, 1), &[skip]).unwrap();
    // The skip first: the add's first operand need not be the previous layer.
    let x = g.push("add2", Op::Add, &[skip, x]).unwrap();
    let x = g.push("r4", Op::Relu, &[x]).unwrap();
    let x = g.push("gap", Op::GlobalAvgPool, &[x]).unwrap();
    let head = Op::Linear {
        weight: "head.weight".into(),
        bias: Some("head.bias".into()),
        in_features: 8,
        out_features: 4,
    };
    let h = g.push("head", head, &[x]).unwrap();
    g.add_output("head", h).unwrap();
    g
}

/// A host model of `graph` with `weights`, classifying classes `first..first + 4`.
fn host_model(
    name: &str,
    graph: &pleas_core::graph::Graph,
    weights: pleas_core::graph::Weights,
    first: usize,
) -> Model {
    let classes: Vec<String> = (first..first + 4).map(|c| c.to_string()).collect();
    let mut meta = Metadata::new();
    meta.insert("classes".into(), format!("[{}]", classes.join(", ")));
    let path = pleas_tests::scratch::dir("cnn-core-residual").join(name);
    Model::from_parts(&path, "cnn".into(), graph.clone(), weights, meta).unwrap()
}

/// Residual adds on the device: the groups an add ties, the fits of the convs on both
/// branches and the heads are the host's `pleas merge` of the same pair (two differently
/// initialised networks), at budgets where pairs are merged and at 2.0, where every layer is
/// a copy and the merged network is both models.
#[test]
fn a_residual_cnn_merges_as_the_host_merges_it() {
    use pleas_tests::models::{max_rel_diff, random_input, random_weights};
    let g = residual_cnn();
    let (wa, wb) = (random_weights(&g, 11), random_weights(&g, 12));
    let (ma, mb) = (
        host_model("a.safetensors", &g, wa.clone(), 0),
        host_model("b.safetensors", &g, wb.clone(), 4),
    );
    let (a, b) = (from_graph(&g, &wa).unwrap(), from_graph(&g, &wb).unwrap());
    let n = 96;
    let d = g.input_shape().len();
    let x = random_input(&g, n, 13);
    let spec = pleas_tests::npy_data::write(
        pleas_tests::scratch::dir("cnn-core-residual").join("x.npy"),
        &x,
        n,
        d,
    );
    let params = CnnMergeParams::default();
    for budget in [1.0, 1.4, 2.0] {
        let settings = MergeSettings {
            budget,
            ..MergeSettings::default()
        };
        let host = merge(&ma, &mb, &spec, &settings, &mut |_| {}).unwrap();
        let core = core_merge(&a, &b, Samples::F32(&x), budget, &params).unwrap();
        assert_eq!(
            core.plan.groups(),
            2,
            "two adds tie four convs into two groups"
        );
        assert_eq!(host.groups.len(), 2);
        assert_eq!(core.plan.fitted_layers(), 6, "four convs and two heads");
        assert!((core.plan.flop_ratio - host.planned_flop_ratio).abs() < 1e-12);
        compare_with_host(budget, &host, &core);
        // The merged networks compute the same logits on fresh inputs.
        let fresh = random_input(&g, 8, 14);
        let hl = Forward::new(&host.graph, &host.weights)
            .unwrap()
            .logits(&fresh, 8)
            .unwrap();
        let net = core.plan.merged_network();
        let cp = CompactPlan::new(net).unwrap();
        let mut sc = vec![0.0; cp.scratch_len()];
        for (h, &o) in net.outputs.iter().enumerate() {
            let mut got = Vec::new();
            for s in fresh.chunks_exact(d) {
                cp.input_mut(&mut sc).unwrap().copy_from_slice(s);
                cp.run(&core.out, &mut sc, &mut |_, _| {}).unwrap();
                got.extend_from_slice(cp.node(o, &sc).unwrap());
            }
            let diff = max_rel_diff(&hl[h], &got);
            eprintln!("budget {budget} head {h}: logits within {diff:.1e} of the host's");
            assert!(
                f64::from(diff) <= CNN_HOST_WEIGHTS_REL,
                "budget {budget} head {h}: {diff:e}"
            );
        }
        if budget == 2.0 {
            // Every layer is a copy: the merged network is both models.
            assert!(
                core.info
                    .layers
                    .iter()
                    .all(|l| l.primal_blocks + l.dual_blocks == 0)
            );
            let model = |c: &CompactNet| {
                let cp = CompactPlan::new(network(c)).unwrap();
                let mut sc = vec![0.0; cp.scratch_len()];
                let mut z = Vec::new();
                for s in fresh.chunks_exact(d) {
                    cp.input_mut(&mut sc).unwrap().copy_from_slice(s);
                    cp.run(&c.params, &mut sc, &mut |_, _| {}).unwrap();
                    z.extend_from_slice(cp.node(c.outputs[0], &sc).unwrap());
                }
                z
            };
            let mut merged = [Vec::new(), Vec::new()];
            for s in fresh.chunks_exact(d) {
                cp.input_mut(&mut sc).unwrap().copy_from_slice(s);
                cp.run(&core.out, &mut sc, &mut |_, _| {}).unwrap();
                for (h, m) in merged.iter_mut().enumerate() {
                    m.extend_from_slice(cp.node(net.outputs[h], &sc).unwrap());
                }
            }
            for (h, c) in [&a, &b].into_iter().enumerate() {
                let diff = max_rel_diff(&model(c), &merged[h]);
                assert!(diff < CNN_SELF_MERGE_LOGIT_REL, "head {h}: {diff:e}");
            }
        }
    }
}

/// A residual add of the network input has no group to permute: refused, naming the layer.
#[test]
fn a_residual_add_of_the_input_is_refused() {
    let window = Window {
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
    };
    let layers = [
        Layer {
            op: LayerOp::Conv2d {
                out_channels: 1,
                window,
                bias: true,
            },
            input: 0,
        },
        Layer {
            op: LayerOp::Add { other: 0 },
            input: 1,
        },
        Layer {
            op: LayerOp::GlobalAvgPool,
            input: 2,
        },
        Layer {
            op: LayerOp::Linear {
                out_features: 2,
                bias: true,
            },
            input: 3,
        },
    ];
    let net = Network {
        input: MapShape::new(1, 4, 4),
        layers: &layers,
        outputs: &[4],
    };
    let got = cnn_merge_plan(&net, Heads::Separate, 4, 1.0, &CnnMergeParams::default());
    match got {
        Err(CnnMergeError::UnsupportedLayer { layer: 1, what }) => {
            assert!(what.contains("input"), "{what}")
        }
        other => panic!("{other:?}"),
    }
}

/// A fixture with a residual block grafted after its first ReLU: `res` (a 3x3 conv of its
/// channels, small random weights `0.03 x` He, seed `seed`) added to the ReLU's output, so the
/// trained network keeps most of its accuracy and the add ties two convs into one group.
fn grafted(rel: &str, seed: u64) -> Model {
    use pleas_core::graph::{Graph, Tensor};
    let m = Model::load(&fixtures().join(rel), None).unwrap();
    let old = &m.graph;
    let mut g = Graph::new(old.input_shape());
    let mut map = vec![0usize; old.nodes().len()];
    let mut weights = m.weights.clone();
    let mut grafted = false;
    for (id, node) in old.nodes().iter().enumerate().skip(1) {
        let inputs: Vec<usize> = node.inputs.iter().map(|&i| map[i]).collect();
        map[id] = g.push(node.name.clone(), node.op.clone(), &inputs).unwrap();
        if !grafted && node.op == Op::Relu {
            grafted = true;
            let c = old.node(id).shape.c;
            let skip = map[id];
            let x = g
                .push("res", conv_op("res", c, c, 3, 1, 1), &[skip])
                .unwrap();
            map[id] = g.push("res_add", Op::Add, &[x, skip]).unwrap();
            let mut rng = pleas_tests::models::Rng::new(seed);
            let std = 0.03 * (2.0 / (9 * c) as f32).sqrt();
            let w = (0..c * c * 9).map(|_| std * rng.normal_f32()).collect();
            let b = (0..c).map(|_| 0.001 * rng.normal_f32()).collect();
            weights.insert(
                "res.weight".into(),
                Tensor::new(vec![c, c, 3, 3], w).unwrap(),
            );
            weights.insert("res.bias".into(), Tensor::new(vec![c], b).unwrap());
        }
    }
    for o in old.outputs() {
        g.add_output(o.name.clone(), map[o.node]).unwrap();
    }
    let mut meta = m.metadata.clone();
    meta.remove(pleas::io::arch::ARCHITECTURE_KEY);
    Model::from_parts(&m.path, "cnn".into(), g, weights, meta).unwrap()
}

/// Real data through a residual add: the `cnn_split` pair with a residual block grafted on,
/// merged on the device and by `pleas merge` from the same 200 images at budget 1.2: the same
/// layouts, weights within the host tolerance, and the same split-task accuracies to three
/// decimals (measured: 0.8370 and 0.8489 on both, weights within 1.4e-5).
#[test]
fn a_residual_cnn_pair_merges_to_the_hosts_accuracy() {
    let (ma, mb) = (grafted(CNN_A, 21), grafted(CNN_B, 22));
    let (a, b) = (
        from_graph(&ma.graph, &ma.weights).unwrap(),
        from_graph(&mb.graph, &mb.weights).unwrap(),
    );
    let test = test_set(TEST_STRIDE);
    let (test_x, test_y) = (&test.0, &test.1);
    // The graft keeps the trained models working (0.890 and 0.947 on their tasks).
    for (m, task) in [(&ma, 0), (&mb, 1)] {
        let all = Forward::new(&m.graph, &m.weights)
            .unwrap()
            .logits(test_x, test_y.len())
            .unwrap();
        let acc = task_accuracy(|i| vec![all[0][i * 5..(i + 1) * 5].to_vec(); 2], test_y);
        assert!(acc[task] > 0.85, "grafted model of task {task}: {acc:?}");
    }
    let s = samples(MERGE_SAMPLES);
    let (_, core, ca) = merge_both([&ma, &mb], [&a, &b], &s, 1.2, &test);
    assert_eq!(core.plan.groups(), 3);
    assert_eq!(core.plan.fitted_layers(), 6, "four convs and two heads");
    for (h, acc) in ca.iter().enumerate() {
        assert!(*acc > 0.7, "head {h}: {acc}");
    }
}

/// A small network decoded from `codes` (per layer: kind, width, an earlier node, a flag),
/// ending in a linear head of `classes`: convs of kernel 1 or 3 (stride 1 or 2), ReLU, max
/// pooling, global pooling, residual adds of any earlier node, hidden linear layers, each
/// reading the previous node or (with the flag) any earlier one. Many are invalid networks.
fn decoded(codes: &[(u8, usize, usize, bool)], classes: usize) -> Vec<Layer> {
    let mut layers = Vec::new();
    for (l, &(kind, width, pick, any)) in codes.iter().enumerate() {
        let earlier = pick % (l + 1);
        let input = if any { earlier } else { l };
        let k = if width % 2 == 0 { 1 } else { 3 };
        let op = match kind % 6 {
            0 => LayerOp::Conv2d {
                out_channels: width,
                window: Window {
                    kernel: [k, k],
                    stride: [1 + usize::from(any), 1],
                    padding: [k / 2, k / 2],
                },
                bias: width % 3 != 0,
            },
            1 => LayerOp::Relu,
            2 => LayerOp::MaxPool(Window {
                kernel: [2, 2],
                stride: [2, 2],
                padding: [0, 0],
            }),
            3 => LayerOp::GlobalAvgPool,
            4 => LayerOp::Add { other: earlier },
            _ => LayerOp::Linear {
                out_features: width,
                bias: true,
            },
        };
        let input = if kind % 6 == 4 { l } else { input };
        layers.push(Layer { op, input });
    }
    let last = layers.len();
    layers.push(Layer {
        op: LayerOp::Linear {
            out_features: classes,
            bias: true,
        },
        input: last,
    });
    layers
}

proptest::proptest! {
    #![proptest_config(pleas_tests::config(48))]

    /// Any small network (chains, residual adds, pooling, hidden linear layers; valid or
    /// not), any sample count and budget: the plan and the merge either succeed, with finite
    /// merged parameters, or return a typed error that names the problem; they never panic.
    #[test]
    fn merges_of_small_random_networks_succeed_or_fail_cleanly(
        codes in proptest::collection::vec((0u8..6, 1usize..5, 0usize..8, proptest::bool::ANY), 1..7),
        classes in 1usize..4,
        (c, h, w) in (1usize..3, 2usize..6, 2usize..6),
        n in 1usize..6,
        budget in 1.0f64..=2.0,
        shared in proptest::bool::ANY,
        seed in 0u64..1000,
    ) {
        use pleas_tests::models::Rng;
        let layers = decoded(&codes, classes);
        let net = Network {
            input: MapShape::new(c, h, w),
            layers: &layers,
            outputs: &[layers.len()],
        };
        let heads = if shared { Heads::Shared } else { Heads::Separate };
        let params = CnnMergeParams::default();
        let plan = match cnn_merge_plan(&net, heads, n, budget, &params) {
            Ok(plan) => plan,
            Err(e) => {
                proptest::prop_assert!(!e.to_string().is_empty());
                return Ok(());
            }
        };
        let len = CompactPlan::new(net).unwrap().params_len();
        let mut rng = Rng::new(seed);
        let mut draw = |k: usize| -> Vec<f32> { (0..k).map(|_| 0.5 * rng.normal_f32()).collect() };
        let (a, b, x) = (draw(len), draw(len), draw(n * c * h * w));
        let mut out = vec![f32::NAN; plan.output_len];
        let mut scratch = vec![f64::NAN; plan.scratch_len];
        let mut forward = vec![f32::NAN; plan.forward_len];
        let mut indices = vec![usize::MAX; plan.index_len];
        let inputs = CnnMergeInputs {
            net,
            heads,
            a: &a,
            b: &b,
            samples: Samples::F32(&x),
            budget,
        };
        match cnn_merge(&plan, &inputs, &params, &mut out, &mut scratch, &mut forward, &mut indices) {
            Ok(info) => {
                proptest::prop_assert_eq!(info.groups.len(), plan.groups());
                proptest::prop_assert!(out.iter().all(|v| v.is_finite()));
            }
            Err(e) => proptest::prop_assert!(!e.to_string().is_empty()),
        }
    }
}

/// A residual CNN merged with a copy of itself whose groups (each tying two convs through an
/// add, and a batch-norm) are permuted: every unit is matched with its copy, and the merged
/// network computes the model's logits.
#[test]
fn a_residual_cnn_merged_with_its_permuted_copy_is_the_model() {
    use pleas_core::graph::{apply_permutations, permutation_groups};
    use pleas_tests::models::{random_input, random_weights};
    let g = residual_cnn();
    let wa = random_weights(&g, 31);
    let groups = permutation_groups(&g);
    assert_eq!(groups.len(), 2);
    let perms = vec![vec![4, 0, 5, 2, 1, 3], vec![6, 1, 7, 0, 3, 5, 2, 4]];
    let wb = apply_permutations(&groups, &wa, &perms).unwrap();
    let (a, b) = (from_graph(&g, &wa).unwrap(), from_graph(&g, &wb).unwrap());
    let x = random_input(&g, 48, 32);
    let fresh = random_input(&g, 10, 33);
    assert_merges_to_the_model(&a, &b, &x, &fresh, 2);
}
