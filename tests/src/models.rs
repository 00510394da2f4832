//! Helpers of the model-layer tests: fixture paths, a seeded generator, random weights for a
//! graph, and logit comparison.

use std::path::PathBuf;

use pleas_core::graph::{Graph, Op, Tensor, Weights};

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
