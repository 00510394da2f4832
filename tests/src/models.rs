//! Helpers of the model-layer tests: fixture paths, a seeded generator, random weights for a
//! graph, logit comparison, and a small graph with block-structured (merged) layers.

// Blocks read lists of channel ranges; a list of one range is the common case, not a mistake.
#![allow(clippy::single_range_in_vec_init)]

use std::path::PathBuf;

use std::ops::Range;

use pleas_core::graph::{Graph, Op, Shape, Tensor, WeightBlock, Weights};

/// `tests/fixtures` of this package.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Every fixture model (`fashion/*/*.safetensors`), sorted.
pub fn fixture_models() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let root = fixtures().join("fashion");
    for dir in std::fs::read_dir(&root).expect("tests/fixtures/fashion exists") {
        let dir = dir.expect("readable").path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).expect("readable") {
            let f = f.expect("readable").path();
            if f.extension().is_some_and(|e| e == "safetensors") {
                out.push(f);
            }
        }
    }
    out.sort();
    out
}

/// The Fashion-MNIST evaluation file (`x_test`, `y_test`, `x_match`, `y_match`).
pub fn fashion_eval() -> PathBuf {
    fixtures().join("fashion").join("eval.safetensors")
}

pub use crate::rng::Rng;

/// He-initialised weights for every tensor `graph` reads; batch-norm statistics are random but
/// well-conditioned (scale in [0.5, 1.5], variance in [0.5, 1.5]).
pub fn random_weights(graph: &Graph, seed: u64) -> Weights {
    let mut rng = Rng::new(seed);
    let mut w = Weights::new();
    for node in graph.nodes() {
        match &node.op {
            Op::BatchNorm {
                weight,
                bias,
                running_mean,
                running_var,
                channels,
                ..
            } => {
                let c = *channels;
                let mut v = |f: &mut dyn FnMut(&mut Rng) -> f32| -> Tensor {
                    Tensor::new(vec![c], (0..c).map(|_| f(&mut rng)).collect()).unwrap()
                };
                w.insert(weight.clone(), v(&mut |r| 0.5 + r.uniform_f32()));
                w.insert(bias.clone(), v(&mut |r| 0.1 * r.normal_f32()));
                w.insert(running_mean.clone(), v(&mut |r| 0.1 * r.normal_f32()));
                w.insert(running_var.clone(), v(&mut |r| 0.5 + r.uniform_f32()));
            }
            op => {
                for (name, shape) in op.params() {
                    let n: usize = shape.iter().product();
                    let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
                    let std = if shape.len() == 1 {
                        0.1
                    } else {
                        (2.0 / fan_in as f32).sqrt()
                    };
                    let data = (0..n).map(|_| std * rng.normal_f32()).collect();
                    w.insert(name.to_string(), Tensor::new(shape, data).unwrap());
                }
            }
        }
    }
    w
}

/// `n` random inputs for `graph`, standard normal.
pub fn random_input(graph: &Graph, n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n * graph.input_shape().len())
        .map(|_| rng.normal_f32())
        .collect()
}

/// `max |a - b| / max |a|` (0 if `a` is all zeros and `b == a`).
pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "compared buffers differ in length");
    let scale = a
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

/// A block of `rows` outputs reading `inputs`, tensors `{prefix}.blocks.{k}.weight` / `.bias`.
pub fn weight_block(
    prefix: &str,
    k: usize,
    rows: usize,
    inputs: &[Range<usize>],
    bias: bool,
) -> WeightBlock {
    WeightBlock {
        weight: format!("{prefix}.blocks.{k}.weight"),
        bias: bias.then(|| format!("{prefix}.blocks.{k}.bias")),
        rows,
        inputs: inputs.to_vec(),
    }
}

/// A square block conv over `in_c` inputs (outputs: the blocks' rows).
pub fn block_conv_op(in_c: usize, k: usize, s: usize, p: usize, blocks: Vec<WeightBlock>) -> Op {
    Op::BlockConv2d {
        in_channels: in_c,
        out_channels: blocks.iter().map(|b| b.rows).sum(),
        kernel: [k, k],
        stride: [s, s],
        padding: [p, p],
        blocks,
    }
}

/// A block linear layer over `in_f` inputs.
pub fn block_linear_op(in_f: usize, blocks: Vec<WeightBlock>) -> Op {
    Op::BlockLinear {
        in_features: in_f,
        out_features: blocks.iter().map(|b| b.rows).sum(),
        blocks,
    }
}

/// A batch-norm of `c` channels with PyTorch names under `name`, epsilon `1e-5`.
pub fn bn_op(name: &str, c: usize) -> Op {
    Op::BatchNorm {
        weight: format!("{name}.weight"),
        bias: format!("{name}.bias"),
        running_mean: format!("{name}.running_mean"),
        running_var: format!("{name}.running_var"),
        channels: c,
        eps: 1e-5,
    }
}

/// A small ResNet-like graph (input `3 x 9 x 9`) mixing dense and block-structured layers: a
/// dense stem, a residual block of block convs, a downsampling block with a block-conv shortcut,
/// batch-norms after block layers, global pooling, a block linear head `head` and a second
/// output `features` (the pooled features).
pub fn block_resnet() -> Graph {
    let mut g = Graph::new(Shape::new(3, 9, 9));
    let stem = g
        .push(
            "stem",
            Op::Conv2d {
                weight: "stem.weight".into(),
                bias: None,
                in_channels: 3,
                out_channels: 8,
                kernel: [3, 3],
                stride: [1, 1],
                padding: [1, 1],
            },
            &[0],
        )
        .unwrap();
    let x = g.push("stem.bn", bn_op("stem.bn", 8), &[stem]).unwrap();
    let x = g.push("stem.relu", Op::Relu, &[x]).unwrap();
    // Block 1: two block convs (each output block reads its own half, one also the other's
    // first channels), residual add.
    let b1 = vec![
        weight_block("b1.conv1", 0, 4, &[0..4], false),
        weight_block("b1.conv1", 1, 4, &[0..2, 4..8], true),
    ];
    let y = g
        .push("b1.conv1", block_conv_op(8, 3, 1, 1, b1), &[x])
        .unwrap();
    let y = g.push("b1.bn1", bn_op("b1.bn1", 8), &[y]).unwrap();
    let y = g.push("b1.relu1", Op::Relu, &[y]).unwrap();
    let b2 = vec![
        weight_block("b1.conv2", 0, 5, &[0..8], false),
        weight_block("b1.conv2", 1, 3, &[4..8], false),
    ];
    let y = g
        .push("b1.conv2", block_conv_op(8, 3, 1, 1, b2), &[y])
        .unwrap();
    let y = g.push("b1.bn2", bn_op("b1.bn2", 8), &[y]).unwrap();
    let a = g.push("b1.add", Op::Add, &[y, x]).unwrap();
    let x = g.push("b1.relu2", Op::Relu, &[a]).unwrap();
    // Block 2: stride 2, 8 -> 12, block-conv shortcut.
    let b3 = vec![
        weight_block("b2.conv1", 0, 6, &[0..4], true),
        weight_block("b2.conv1", 1, 6, &[4..8], true),
    ];
    let y = g
        .push("b2.conv1", block_conv_op(8, 3, 2, 1, b3), &[x])
        .unwrap();
    let y = g.push("b2.relu1", Op::Relu, &[y]).unwrap();
    let b4 = vec![weight_block("b2.conv2", 0, 12, &[0..3, 6..12], false)];
    let y = g
        .push("b2.conv2", block_conv_op(12, 3, 1, 1, b4), &[y])
        .unwrap();
    let b5 = vec![
        weight_block("b2.short", 0, 7, &[0..8], false),
        weight_block("b2.short", 1, 5, &[4..8], false),
    ];
    let s = g
        .push("b2.short", block_conv_op(8, 1, 2, 0, b5), &[x])
        .unwrap();
    let s = g
        .push("b2.short.bn", bn_op("b2.short.bn", 12), &[s])
        .unwrap();
    let a = g.push("b2.add", Op::Add, &[y, s]).unwrap();
    let x = g.push("b2.relu2", Op::Relu, &[a]).unwrap();
    let p = g.push("pool", Op::GlobalAvgPool, &[x]).unwrap();
    let hb = vec![
        weight_block("head", 0, 3, &[0..6], true),
        weight_block("head", 1, 2, &[0..12], true),
    ];
    let h = g.push("head", block_linear_op(12, hb), &[p]).unwrap();
    g.add_output("head", h).unwrap();
    g.add_output("features", p).unwrap();
    g
}
