//! The split-task checks shared by the device-merge tests (`mlp_merge_core`,
//! `cnn_merge_core`): the Fashion-MNIST test images, per-head accuracies, the host merge's
//! layers as dense weights, and relative distances.

use pleas::io::data::Normalize;
use pleas::io::safetensors;
use pleas::merge::pipeline::MergeOutcome;
use pleas_core::forward::Forward;
use pleas_core::graph::Op;

use crate::models::fashion_eval;

/// Values of one Fashion-MNIST image.
pub const IMAGE: usize = 784;

/// Classes per task (A: 0-4, B: 5-9).
pub const TASK_CLASSES: usize = 5;

/// Every `stride`-th Fashion-MNIST test image (normalised to [-1, 1]) and its label.
pub fn test_set(stride: usize) -> (Vec<f32>, Vec<u8>) {
    let file = safetensors::read(&fashion_eval()).unwrap();
    let x = &file.tensors["x_test"].bytes;
    let y = &file.tensors["y_test"].bytes;
    let rows: Vec<usize> = (0..y.len()).step_by(stride).collect();
    let xs = rows
        .iter()
        .flat_map(|&r| x[r * IMAGE..(r + 1) * IMAGE].iter())
        .map(|&v| Normalize::Symmetric.apply(f32::from(v)))
        .collect();
    (xs, rows.iter().map(|&r| y[r]).collect())
}

/// Split-task accuracies: head `a` on the images of classes 0-4, head `b` on classes 5-9
/// (labels mapped to 0-4; a single shared head answers both); the prediction is the first
/// unit of maximal logit. `logits(i)` gives image `i`'s logits per head.
pub fn task_accuracy(mut logits: impl FnMut(usize) -> Vec<Vec<f32>>, labels: &[u8]) -> [f64; 2] {
    let (mut correct, mut seen) = ([0usize; 2], [0usize; 2]);
    for (i, &label) in labels.iter().enumerate() {
        let label = usize::from(label);
        let (head, unit) = (label / TASK_CLASSES, label % TASK_CLASSES);
        let out = logits(i);
        let row = &out[head.min(out.len() - 1)];
        let mut best = 0;
        for (j, &v) in row.iter().enumerate() {
            if v > row[best] {
                best = j;
            }
        }
        seen[head] += 1;
        correct[head] += usize::from(best == unit);
    }
    [0, 1].map(|h| correct[h] as f64 / seen[h] as f64)
}

/// The split-task accuracies of the host's merged network (its reference forward pass).
pub fn host_accuracy(o: &MergeOutcome, x: &[f32], labels: &[u8]) -> [f64; 2] {
    let all = Forward::new(&o.graph, &o.weights)
        .unwrap()
        .logits(x, labels.len())
        .unwrap();
    let t = TASK_CLASSES;
    task_accuracy(
        |i| all.iter().map(|h| h[i * t..(i + 1) * t].to_vec()).collect(),
        labels,
    )
}

/// The host's merged conv and linear layers (block nodes in node order: for an MLP the hidden
/// layers, then the heads) as dense weights (`out x in x patch`, the device merge's layout)
/// and biases.
pub fn host_layers(o: &MergeOutcome) -> Vec<(Vec<f32>, Vec<f32>)> {
    let mut out = Vec::new();
    for node in o.graph.nodes() {
        let (in_ch, rows, patch, blocks) = match &node.op {
            Op::BlockConv2d {
                in_channels,
                out_channels,
                kernel,
                blocks,
                ..
            } => (*in_channels, *out_channels, kernel[0] * kernel[1], blocks),
            Op::BlockLinear {
                in_features,
                out_features,
                blocks,
            } => (*in_features, *out_features, 1, blocks),
            _ => continue,
        };
        let mut w = vec![0.0f32; rows * in_ch * patch];
        let mut bias = vec![0.0f32; rows];
        let mut row0 = 0;
        for b in blocks {
            let wt = o.weights[&b.weight].data();
            let cols = b.cols() * patch;
            for r in 0..b.rows {
                for (c, ch) in b.inputs.iter().flat_map(|r| r.clone()).enumerate() {
                    for t in 0..patch {
                        w[((row0 + r) * in_ch + ch) * patch + t] = wt[r * cols + c * patch + t];
                    }
                }
                if let Some(bn) = &b.bias {
                    bias[row0 + r] = o.weights[bn].data()[r];
                }
            }
            row0 += b.rows;
        }
        out.push((w, bias));
    }
    out
}

/// `||a - b||_F / ||b||_F` in f64.
pub fn rel_fro(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    let n: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (d / n.max(f64::MIN_POSITIVE)).sqrt()
}
