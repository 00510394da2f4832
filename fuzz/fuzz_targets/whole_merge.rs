//! The whole host merge pipeline (`pleas::merge::pipeline::merge`) on two tiny networks built
//! from the input: MLPs or small CNNs (conv, batch-norm, ReLU, a residual block, a strided block
//! with a 1x1 shortcut, pooling or flatten), widths 1-6, with random weights, random merge data
//! and random settings (budget, ratios, matching, metric, fit, batch-norm mode, ridge and its
//! prior, heads, batch size, spilling).
//!
//! Invariants:
//! - never panics: bad inputs (non-finite or huge weights and data, a bad budget or ridge,
//!   different architectures, no samples) are errors;
//! - a merge that succeeds gives a graph that reads exactly its weights, all finite;
//! - budget 2.0 merges no pair, budget 1.0 merges every pair (uniform or stage ratios);
//! - with well-conditioned inputs (He-initialised weights, batch-norm scales and variances in
//!   [0.5, 1.5], standard normal data, more samples than any layer has columns):
//!   - each layer's least-squares loss is at most its permute-and-average loss (ridge towards the
//!     average weights; ALGORITHM.md section 6);
//!   - at budget 2.0, with the ridge towards the permute-and-average weights (the default) and
//!     every hidden layer's output in a permutation group (no flatten of a spatial map), every
//!     block is a copy (no layer reports a ridge) and the merged model reproduces both models'
//!     logits (each head its model's, or a shared head their mean) within `MERGE_LOGIT_REL` of
//!     the logit scale, on the merge data and on fresh inputs. (Copies differ from the models
//!     only by the kernels' summation order, but that rounding is relative to the terms, not
//!     to the logits: random tiny networks whose logits cancel down to 3e-4 of their terms
//!     showed 1.5e-5 of the logit scale, so `MERGE_COPY_LOGIT_REL` holds only for real
//!     models.)
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use pleas::io::data::{DataSpec, Normalize};
use pleas::io::npy;
use pleas::io::safetensors::{Dtype, Metadata, RawTensor};
use pleas::merge::pipeline::{MergeOutcome, merge};
use pleas::merge::settings::{
    BnMode, FitMode, Heads, MatchingMode, MergeSettings, RatioMode, RidgeToward,
};
use pleas::model::Model;
use pleas_core::forward::Forward;
use pleas_core::graph::{
    Graph, GraphError, NodeId, Op, Shape, Tensor, Weights, permutation_groups,
};
use pleas_core::similarity::Metric;
use pleas_tests::models::{Rng, bn_op, random_weights};
use pleas_tests::tolerance::{FIT_LOSS_REL, GRAM_MOMENTS_REL, MERGE_LOGIT_REL};

/// The fuzz input as a stream of choices; past its end every byte reads 0, so short inputs are
/// complete cases and the fuzzer can grow them.
struct Choices<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Choices<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// A number in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + usize::from(self.byte()) % (hi - lo + 1)
    }

    fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |a, _| a << 8 | u64::from(self.byte()))
    }

    /// A value for a raw weight or datum: mostly small, sometimes extreme (huge, tiny,
    /// denormal, the largest f32, rarely NaN or infinite). Past the end of the input, values
    /// come from `rng` so that every tensor is filled.
    fn value(&mut self, rng: &mut Rng) -> f32 {
        if self.pos >= self.data.len() {
            return rng.normal_f32();
        }
        let b = self.byte();
        const EXTREME: [f32; 16] = [
            0.0,
            -0.0,
            1e-45,
            f32::MIN_POSITIVE,
            1e-20,
            1e-6,
            1e6,
            -1e6,
            1e20,
            -1e20,
            1e38,
            f32::MAX,
            f32::MIN,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        match b {
            0..=239 => (f32::from(b) - 120.0) / 40.0,
            _ => EXTREME[usize::from(b - 240)],
        }
    }
}

/// The architecture both models share (B may get a different hidden width).
#[derive(Debug, Clone)]
enum Arch {
    Mlp {
        input: usize,
        hidden: Vec<(usize, bool)>,
        classes: usize,
        head_bias: bool,
    },
    Cnn {
        input: Shape,
        stem: usize,
        stem_kernel: usize,
        stem_bn: bool,
        residual: bool,
        down: Option<usize>,
        flatten: bool,
        classes: usize,
    },
}

impl Arch {
    fn read(c: &mut Choices<'_>, cnn: bool) -> Arch {
        if cnn {
            Arch::Cnn {
                input: Shape::new(c.range(1, 3), c.range(1, 5), c.range(1, 5)),
                stem: c.range(1, 6),
                stem_kernel: if c.flag() { 3 } else { 1 },
                stem_bn: c.flag(),
                residual: c.flag(),
                down: c.flag().then(|| c.range(1, 6)),
                flatten: c.flag(),
                classes: c.range(1, 6),
            }
        } else {
            let layers = c.range(0, 3);
            Arch::Mlp {
                input: c.range(1, 6),
                hidden: (0..layers).map(|_| (c.range(1, 6), c.flag())).collect(),
                classes: c.range(1, 6),
                head_bias: c.flag(),
            }
        }
    }

    /// The same architecture with its first width changed (a pair that must be refused).
    fn other(&self) -> Arch {
        let mut a = self.clone();
        match &mut a {
            Arch::Mlp { hidden, input, .. } => match hidden.first_mut() {
                Some((w, _)) => *w = *w % 6 + 1,
                None => *input = *input % 6 + 1,
            },
            Arch::Cnn { stem, .. } => *stem = *stem % 6 + 1,
        }
        a
    }

    fn graph(&self) -> Result<Graph, GraphError> {
        match self {
            Arch::Mlp {
                input,
                hidden,
                classes,
                head_bias,
            } => {
                let mut g = Graph::new(Shape::flat(*input));
                let (mut x, mut width) = (g.input(), *input);
                for (i, &(h, bias)) in hidden.iter().enumerate() {
                    let name = format!("layers.{i}");
                    x = g.push(&name, linear(&name, width, h, bias), &[x])?;
                    x = g.push(format!("{name}.relu"), Op::Relu, &[x])?;
                    width = h;
                }
                let head = g.push("head", linear("head", width, *classes, *head_bias), &[x])?;
                g.add_output("head", head)?;
                Ok(g)
            }
            Arch::Cnn {
                input,
                stem,
                stem_kernel,
                stem_bn,
                residual,
                down,
                flatten,
                classes,
            } => {
                let mut g = Graph::new(*input);
                let k = *stem_kernel;
                let x = g.push(
                    "conv1",
                    conv("conv1", input.c, *stem, k, 1, k / 2, true),
                    &[0],
                )?;
                let x = if *stem_bn {
                    g.push("bn1", bn_op("bn1", *stem), &[x])?
                } else {
                    x
                };
                let mut x = g.push("relu1", Op::Relu, &[x])?;
                let mut c = *stem;
                if *residual {
                    x = basic_block(&mut g, "block1", x, c, c, 1)?;
                }
                if let Some(out) = *down {
                    x = basic_block(&mut g, "block2", x, c, out, 2)?;
                    c = out;
                }
                let x = if *flatten {
                    g.push("flatten", Op::Flatten, &[x])?
                } else {
                    g.push("pool", Op::GlobalAvgPool, &[x])?
                };
                let features = g.node(x).shape.len();
                debug_assert!(*flatten || features == c);
                let head = g.push("head", linear("head", features, *classes, true), &[x])?;
                g.add_output("head", head)?;
                Ok(g)
            }
        }
    }
}

fn linear(name: &str, in_f: usize, out_f: usize, bias: bool) -> Op {
    Op::Linear {
        weight: format!("{name}.weight"),
        bias: bias.then(|| format!("{name}.bias")),
        in_features: in_f,
        out_features: out_f,
    }
}

fn conv(name: &str, in_c: usize, out_c: usize, k: usize, s: usize, p: usize, bias: bool) -> Op {
    Op::Conv2d {
        weight: format!("{name}.weight"),
        bias: bias.then(|| format!("{name}.bias")),
        in_channels: in_c,
        out_channels: out_c,
        kernel: [k, k],
        stride: [s, s],
        padding: [p, p],
    }
}

/// conv-bn-relu-conv-bn, plus the input (or a strided 1x1 conv-bn shortcut when the stride or
/// width changes), then ReLU.
fn basic_block(
    g: &mut Graph,
    name: &str,
    x: NodeId,
    in_c: usize,
    out_c: usize,
    stride: usize,
) -> Result<NodeId, GraphError> {
    let n = |s: &str| format!("{name}.{s}");
    let y = g.push(
        n("conv1"),
        conv(&n("conv1"), in_c, out_c, 3, stride, 1, false),
        &[x],
    )?;
    let y = g.push(n("bn1"), bn_op(&n("bn1"), out_c), &[y])?;
    let y = g.push(n("relu1"), Op::Relu, &[y])?;
    let y = g.push(
        n("conv2"),
        conv(&n("conv2"), out_c, out_c, 3, 1, 1, false),
        &[y],
    )?;
    let y = g.push(n("bn2"), bn_op(&n("bn2"), out_c), &[y])?;
    let short = if stride != 1 || in_c != out_c {
        let s = g.push(
            n("short"),
            conv(&n("short"), in_c, out_c, 1, stride, 0, false),
            &[x],
        )?;
        g.push(n("short.bn"), bn_op(&n("short.bn"), out_c), &[s])?
    } else {
        x
    };
    let a = g.push(n("add"), Op::Add, &[y, short])?;
    g.push(n("relu2"), Op::Relu, &[a])
}

/// Weights for every tensor of `graph` from the input's raw values.
fn raw_weights(graph: &Graph, c: &mut Choices<'_>, rng: &mut Rng) -> Weights {
    let mut w = Weights::new();
    for (_, name, shape) in graph.param_specs() {
        let n: usize = shape.iter().product();
        let data = (0..n).map(|_| c.value(rng)).collect();
        w.insert(name.to_string(), Tensor::new(shape, data).expect("sized"));
    }
    w
}

/// Largest number of columns (inputs, plus the bias) of any conv or linear layer's normal
/// equations, and the fewest rows a sample contributes to them.
fn columns_per_row(graph: &Graph) -> (usize, usize) {
    let mut cols = 1;
    let mut rows = usize::MAX;
    for node in graph.nodes() {
        match &node.op {
            Op::Linear { in_features, .. } => {
                cols = cols.max(in_features + 1);
                rows = rows.min(1);
            }
            Op::Conv2d {
                in_channels,
                kernel,
                ..
            } => {
                cols = cols.max(in_channels * kernel[0] * kernel[1] + 1);
                rows = rows.min(node.shape.h * node.shape.w);
            }
            _ => {}
        }
    }
    (cols, rows.max(1))
}

/// Whether the output axis of every conv and linear layer but the heads is in a permutation
/// group.
fn every_hidden_axis_grouped(graph: &Graph) -> bool {
    let groups = permutation_groups(graph);
    graph.nodes().iter().enumerate().all(|(id, node)| {
        !matches!(node.op, Op::Linear { .. } | Op::Conv2d { .. })
            || graph.outputs().iter().any(|o| o.node == id)
            || groups.of_node(id).is_some()
    })
}

fn logits(graph: &Graph, weights: &Weights, x: &[f32], n: usize) -> Vec<Vec<f32>> {
    Forward::new(graph, weights)
        .expect("a checked model")
        .logits(x, n)
        .expect("finite well-conditioned inputs")
}

/// `max |got - want| / scale`.
fn rel_diff(got: &[f32], want: &[f32], scale: f32) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f32::max)
        / scale
}

fn check_budget_two(a: &Model, b: &Model, o: &MergeOutcome, x: &[f32], n: usize) {
    let (la, lb) = (
        logits(&a.graph, &a.weights, x, n),
        logits(&b.graph, &b.weights, x, n),
    );
    let got = logits(&o.graph, &o.weights, x, n);
    let scale = la[0]
        .iter()
        .chain(&lb[0])
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    let d = if got.len() == 2 {
        rel_diff(&got[0], &la[0], scale).max(rel_diff(&got[1], &lb[0], scale))
    } else {
        let mean: Vec<f32> = la[0]
            .iter()
            .zip(&lb[0])
            .map(|(p, q)| 0.5 * (p + q))
            .collect();
        rel_diff(&got[0], &mean, scale)
    };
    assert!(
        d <= MERGE_LOGIT_REL,
        "budget 2.0: max logit difference {d:e} of the logit scale {scale:e} ({} heads)",
        got.len()
    );
}

fn work_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("pleas-fuzz-merge-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fuzz_target!(|data: &[u8]| {
    let mut c = Choices { data, pos: 0 };
    let flags = c.byte();
    let cnn = flags & 1 != 0;
    let well = flags & 2 != 0;
    let different = flags & 4 != 0 && flags & 8 != 0;
    let other_classes = flags & 16 != 0;
    let budget = match c.byte() {
        b @ 0..=199 => 1.0 + f64::from(b) / 199.0,
        200..=249 => 2.0,
        b => [0.5, 2.5, f64::NAN, f64::INFINITY, -1.0, 0.0][usize::from(b - 250)],
    };
    let modes = c.byte();
    let ratios = match modes % 3 {
        0 => RatioMode::Uniform,
        1 => RatioMode::Stages,
        _ => RatioMode::Weighted { file: None },
    };
    let fit =
        [FitMode::Sequential, FitMode::Original, FitMode::Average][usize::from(modes / 3 % 3)];
    let bn = [BnMode::Fold, BnMode::Keep][usize::from(modes / 9 % 2)];
    let ridge_toward = [RidgeToward::Average, RidgeToward::Zero][usize::from(modes / 18 % 2)];
    let heads =
        [None, Some(Heads::Shared), Some(Heads::Separate)][usize::from(modes / 36 % 3)];
    let m = c.byte();
    let matching = [
        MatchingMode::Activation,
        MatchingMode::Weight,
        MatchingMode::Identity,
    ][usize::from(m % 3)];
    let metric = [Metric::NegL2, Metric::Inner, Metric::Correlation][usize::from(m / 3 % 3)];
    let batch = usize::from(m / 9 % 8) + 1;
    let diagnose = m >= 216;
    let ridge = match c.byte() {
        0..=239 => 1e-6,
        b => [
            0.0,
            -1e-6,
            f64::NAN,
            f64::INFINITY,
            1e-15,
            1e-3,
            1.0,
            1e300,
            f64::MIN_POSITIVE,
            1e-30,
            1e-9,
            10.0,
            1e-6,
            1e-6,
            1e-6,
            1e-6,
        ][usize::from(b - 240)],
    };
    let memory_budget = match c.byte() {
        0..=223 => 128 << 20,
        b => usize::from(b - 224) * 256,
    };
    let samples_byte = c.byte();
    let seed = c.u64();
    let arch = Arch::read(&mut c, cnn);
    let Ok(graph) = arch.graph() else {
        return;
    };
    let graph_b = if different {
        match arch.other().graph() {
            Ok(g) => g,
            Err(_) => return,
        }
    } else {
        graph.clone()
    };
    let (cols, rows_per_sample) = columns_per_row(&graph);
    let mut rng = Rng::new(seed);
    let (wa, wb) = if well {
        (
            random_weights(&graph, seed),
            random_weights(&graph_b, seed ^ 0x5eed),
        )
    } else {
        (
            raw_weights(&graph, &mut c, &mut rng),
            raw_weights(&graph_b, &mut c, &mut rng),
        )
    };
    // Enough samples for every layer's normal equations to be determined when well-conditioned.
    let n = if well {
        (2 * cols).div_ceil(rows_per_sample) + usize::from(samples_byte % 8)
    } else if samples_byte == 255 {
        0
    } else {
        usize::from(samples_byte % 12) + 1
    };
    let per = graph.input_shape().len();
    let x: Vec<f32> = (0..n * per)
        .map(|_| {
            if well {
                rng.normal_f32()
            } else {
                c.value(&mut rng)
            }
        })
        .collect();

    let dir = work_dir();
    let classes = |g: &Graph, offset: usize| {
        let w = g.node(g.outputs()[0].node).shape.len();
        let list: Vec<String> = (offset..offset + w).map(|i| i.to_string()).collect();
        let mut meta = Metadata::new();
        meta.insert("classes".into(), format!("[{}]", list.join(", ")));
        meta
    };
    let model = |name: &str, g: Graph, w: Weights, meta: Metadata| {
        Model::from_parts(&dir.join(name), "fuzz".into(), g, w, meta)
    };
    let a = model("a.safetensors", graph.clone(), wa, classes(&graph, 0));
    let b = model(
        "b.safetensors",
        graph_b.clone(),
        wb,
        classes(&graph_b, if other_classes { 100 } else { 0 }),
    );
    let (a, b) = match (a, b) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => {
            // Only non-finite weights are refused: the graphs and shapes are right.
            assert!(!well, "well-conditioned models are accepted");
            for e in [a.err(), b.err()].into_iter().flatten() {
                let _ = pleas::error::chain(&e);
            }
            return;
        }
    };
    let mut shape = vec![n];
    let input = graph.input_shape();
    if input.is_flat() {
        shape.push(input.c);
    } else {
        shape.extend([input.c, input.h, input.w]);
    }
    let path = dir.join("data.npy");
    let bytes = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let raw = RawTensor {
        dtype: Dtype::F32,
        shape,
        bytes,
    };
    std::fs::write(&path, npy::to_bytes(&raw)).expect("write the merge data");
    let spec = DataSpec {
        path,
        data_key: "x".into(),
        label_key: None,
        labels_path: None,
        normalize: Normalize::Identity,
    };
    let settings = MergeSettings {
        budget,
        ratios: ratios.clone(),
        metric,
        matching,
        ridge,
        ridge_toward,
        bn,
        fit,
        heads,
        threads: 1,
        batch,
        memory_budget,
        spill_dir: dir.clone(),
        diagnose,
    };
    let mut events = 0usize;
    let outcome = merge(&a, &b, &spec, &settings, &mut |_| events += 1);
    let o = match outcome {
        Ok(o) => o,
        Err(e) => {
            let msg = pleas::error::chain(&e);
            // Well-conditioned inputs with valid settings merge; only a refused pair, bad
            // settings or a shared head over different widths may fail. A relative ridge below
            // the rounding of the f32-accumulated Gram (`GRAM_MOMENTS_REL`) cannot make a block
            // the merge data leave undetermined positive definite (pooled ReLU features of tiny
            // CNNs are often collinear): that fails with a typed error and a hint.
            let undetermined = ridge < GRAM_MOMENTS_REL && msg.contains("not positive definite");
            let valid =
                (1.0..=2.0).contains(&budget) && ridge.is_finite() && ridge > 0.0 && !undetermined;
            // Measured group weights need activation statistics.
            let unmeasured = matches!(ratios, RatioMode::Weighted { .. })
                && matching != MatchingMode::Activation;
            assert!(
                !(well && valid && !different && !unmeasured),
                "a well-conditioned merge failed: {msg}"
            );
            return;
        }
    };
    assert!(!different, "different architectures were merged");
    assert!(o.graph.unused_tensors(&o.weights).is_empty());
    o.graph
        .check_weights(&o.weights)
        .expect("merged weights fit");
    assert!(
        o.weights
            .values()
            .all(|t| t.data().iter().all(|v| v.is_finite())),
        "non-finite merged weights"
    );
    if budget == 2.0 {
        assert!(
            o.groups.iter().all(|g| g.merged == 0),
            "budget 2.0 merged units"
        );
    }
    if budget == 1.0 && !matches!(ratios, RatioMode::Weighted { .. }) {
        assert!(
            o.groups.iter().all(|g| g.merged == g.width),
            "budget 1.0 kept units separate"
        );
    }
    if !well || ridge != 1e-6 {
        return;
    }
    if ridge_toward == RidgeToward::Average {
        for l in &o.layers {
            assert!(
                l.relative_residual <= l.average_relative_residual + FIT_LOSS_REL,
                "layer {}: least-squares loss {} above permute-and-average {}",
                l.name,
                l.relative_residual,
                l.average_relative_residual
            );
        }
    }
    // Budget 2.0 is exact when every hidden conv/linear output is in a permutation group
    // (ALGORITHM.md section 6: `r = 1` for every group): a flatten of a spatial map ends the
    // groups that reach it (docs/ARCHITECTURE_FILE.md), and axes in no group are averaged. With
    // the ridge towards the copied weights every block then reads exact copies of its model's
    // units and keeps those weights without a solve, whatever the merge data. A
    // ridge towards zero shrinks the directions the merge data excites weakly, and tiny
    // networks have many (pooled ReLU features of one input channel are nearly collinear), so
    // it reproduces the models only approximately (`merge_exact.rs` shows it failing on
    // foreign data); it is not checked here.
    if budget == 2.0 && ridge_toward == RidgeToward::Average && every_hidden_axis_grouped(&graph) {
        for l in &o.layers {
            assert!(
                l.ridge == 0.0,
                "budget 2.0: layer {} was solved (ridge {:e}), not copied",
                l.name,
                l.ridge
            );
        }
        check_budget_two(&a, &b, &o, &x, n);
        let fresh: Vec<f32> = (0..8 * per).map(|_| rng.normal_f32()).collect();
        check_budget_two(&a, &b, &o, &fresh, 8);
    }
});
