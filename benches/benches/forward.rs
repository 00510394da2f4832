//! Forward-pass throughput: ResNet-20 (width 1 and 4, Fashion-MNIST input 1x28x28) inference on
//! 1024 images in batches of 256, batch-norm folded into the convs. Reported as images/s
//! (criterion "elements"). `scripts/forward_vs_numpy.py` runs the NumPy reference in the same
//! run and prints the ratio.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pleas::io::arch::resnet::{CifarSpec, build_cifar};
use pleas_benches::random_matrix;
use pleas_core::forward::{Forward, fold_batchnorm};
use pleas_core::graph::{Op, Tensor, Weights};

const IMAGES: usize = 1024;
const BATCH: usize = 256;

/// Deterministic weights: conv/linear scaled by sqrt(2 / fan_in), BN near identity.
fn weights(graph: &pleas_core::graph::Graph) -> Weights {
    let mut w = Weights::new();
    let mut seed = 1u64;
    for node in graph.nodes() {
        for (name, shape) in node.op.params() {
            seed += 1;
            let n: usize = shape.iter().product();
            let r = random_matrix(1, n, seed);
            let data: Vec<f32> = match (&node.op, name.rsplit('.').next()) {
                (Op::BatchNorm { .. }, Some("weight" | "running_var")) => {
                    r.iter().map(|v| 1.0 + 0.25 * v).collect()
                }
                (Op::BatchNorm { .. }, _) => r.iter().map(|v| 0.1 * v).collect(),
                _ => {
                    let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
                    let s = (6.0 / fan_in as f32).sqrt();
                    r.iter().map(|v| s * v).collect()
                }
            };
            w.insert(name.to_string(), Tensor::new(shape, data).unwrap());
        }
    }
    w
}

fn forward(c: &mut Criterion) {
    let mut group = c.benchmark_group("resnet20_forward");
    group.sample_size(10);
    group.throughput(Throughput::Elements(IMAGES as u64));
    for width in [1usize, 4] {
        let spec = CifarSpec::resnet20(width, 1, 10);
        let graph = build_cifar(&spec, spec.default_input()).unwrap();
        let w = weights(&graph);
        let folded = fold_batchnorm(&graph, &w).unwrap();
        let x = random_matrix(IMAGES, 784, 7);
        let mut fwd = Forward::new(&folded.graph, &folded.weights).unwrap();
        group.bench_function(format!("width{width}_1024_images"), |b| {
            b.iter(|| {
                let mut sum = 0.0f32;
                for chunk in x.chunks(BATCH * 784) {
                    let out = fwd.logits(chunk, chunk.len() / 784).unwrap();
                    sum += out[0][0];
                }
                sum
            })
        });
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
