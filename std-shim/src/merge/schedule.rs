//! The schedule of the least-squares stage: which data passes run in which order, what each
//! costs (for the ETA), how many samples a chunk holds, and which merged channels are exact
//! copies of one model's units (the core's exact-copy rule applied to the merged graph).

use std::collections::BTreeMap;

use pleas_core::graph::{Graph, Op, node_macs};
use pleas_core::merge::blocks::OutputBlock;
use pleas_core::merge::layout::GroupLayout;
use pleas_core::merge::prior::row_is_exact;
use pleas_core::merge::sources::row_source;

use super::merged_model::{MergedLayer, MergedModel};
use super::settings::{BnMode, FitMode, MergeSettings};
use super::stream::Barrier;

/// Bytes of activations one chunk of one thread may hold, A's, B's and the merged network's
/// together: a chunk keeps every node a pass computes for its samples, so at 224x224 a
/// ResNet-50 sample holds about 92 MB per network and 64 samples per chunk held 17 GB.
pub const CHUNK_BYTES: usize = 1 << 30;

/// Samples per chunk: `batch`, or fewer so that four networks' activations of one chunk (A, B
/// and a merged network up to twice as wide) fit in [`CHUNK_BYTES`]; at least 1. It depends on
/// the architecture only, never on the thread count (chunks are the f32 accumulation blocks).
pub fn chunk_samples(graph: &Graph, batch: usize) -> usize {
    let per_sample: usize = graph.nodes().iter().map(|n| n.shape.len() * 4).sum();
    (CHUNK_BYTES / (4 * per_sample).max(1)).clamp(1, batch.max(1))
}

/// Estimated arithmetic of one least-squares pass over `samples` samples, in multiply-adds:
/// for a fit, the forward steps of A, B and the merged network through its layers, the Gram
/// and cross moments (`positions x (d^2 / 2 + d t)` per sample) and the Cholesky solve of each
/// output block (`k^3 / 3 + k^2 rows` for `k` columns); for a batch-norm pass, the merged
/// network's step to it. Only the ratios matter (the ETA scales elapsed time by them).
pub fn pass_cost(merged: &MergedModel, original: &Graph, barrier: &Barrier, samples: usize) -> f64 {
    let n = samples as f64;
    match barrier {
        Barrier::Fit { layers, .. } => {
            let Some(first) = layers.first().map(|&l| &merged.layers[l]) else {
                return 0.0;
            };
            let shape = merged.graph.node(first.node).shape;
            let positions = (shape.h * shape.w) as f64;
            let d = first.columns() as f64;
            let t: f64 = layers
                .iter()
                .map(|&l| merged.layers[l].outputs as f64)
                .sum();
            let forward: f64 = layers
                .iter()
                .map(|&l| {
                    let node = merged.layers[l].node;
                    let src = merged.source_node[node];
                    node_macs(&merged.graph, node) as f64 + 2.0 * node_macs(original, src) as f64
                })
                .sum();
            let solve: f64 = layers
                .iter()
                .flat_map(|&l| &merged.layers[l].blocks)
                .map(|b| {
                    let k = b.cols.len() as f64;
                    k * k * k / 3.0 + k * k * b.rows.len() as f64
                })
                .sum();
            n * (forward + positions * (d * d / 2.0 + d * t)) + solve
        }
        Barrier::BatchNorm { node } => n * merged.graph.node(*node).shape.len() as f64,
    }
}

/// The data passes in order: fits (layers reading the same input with the same geometry share
/// one pass) and, with batch-norm kept, one pass per batch-norm node (after all fits for
/// original inputs; interleaved in node order for the sequential fit).
pub(crate) fn pass_schedule(
    merged: &MergedModel,
    settings: &MergeSettings,
    exact: &[Vec<bool>],
) -> Vec<Barrier> {
    let mut fits: Vec<(usize, Vec<usize>)> = Vec::new();
    if settings.fit != FitMode::Average {
        let mut by_input: BTreeMap<(usize, String, bool), usize> = BTreeMap::new();
        for (i, l) in merged.layers.iter().enumerate() {
            let input = merged.graph.node(l.node).inputs[0];
            let key = (input, format!("{:?}", l.kind), l.bias);
            match by_input.get(&key) {
                Some(&f) => fits[f].1.push(i),
                None => {
                    by_input.insert(key, fits.len());
                    fits.push((l.node, vec![i]));
                }
            }
        }
    }
    let sequential = settings.fit == FitMode::Sequential;
    let mut passes: Vec<(usize, u8, Barrier)> = fits
        .into_iter()
        .map(|(node, layers)| (node, 0, Barrier::Fit { layers, sequential }))
        .collect();
    if settings.bn == BnMode::Keep {
        for (id, node) in merged.graph.nodes().iter().enumerate() {
            if matches!(node.op, Op::BatchNorm { .. }) && exact[id].iter().any(|&e| !e) {
                let key = if sequential || settings.fit == FitMode::Average {
                    id
                } else {
                    usize::MAX / 2 + id
                };
                passes.push((key, 1, Barrier::BatchNorm { node: id }));
            }
        }
    }
    passes.sort_by_key(|(k, o, _)| (*k, *o));
    passes.into_iter().map(|(_, _, b)| b).collect()
}

/// Per merged node and channel: whether the activation is, by construction, exactly one
/// original model's unit (a private unit computed only from exact channels of its own side).
/// Batch-norm statistics of exact channels are the model's own and are not re-estimated, so a
/// merge that keeps everything separate (budget 2.0) reproduces both models.
pub(crate) fn exact_channels(merged: &MergedModel, layouts: &[GroupLayout]) -> Vec<Vec<bool>> {
    let graph = &merged.graph;
    let mut exact: Vec<Vec<bool>> = Vec::with_capacity(graph.nodes().len());
    let layer_at: BTreeMap<usize, &MergedLayer> =
        merged.layers.iter().map(|l| (l.node, l)).collect();
    for (id, node) in graph.nodes().iter().enumerate() {
        let c = node.shape.c;
        let e = if id == 0 {
            vec![true; c]
        } else if let Some(l) = layer_at.get(&id) {
            let input = &exact[node.inputs[0]];
            let mut row_exact = vec![false; c];
            for b in &l.blocks {
                let reads_exact = reads_exact(l, b, input);
                for r in b.rows.clone() {
                    let source = row_source(l.target_rule, |g| &layouts[g], r);
                    row_exact[r] = row_is_exact(source, reads_exact);
                }
            }
            row_exact
        } else {
            match &node.op {
                Op::Add => (0..c)
                    .map(|ch| node.inputs.iter().all(|&i| exact[i][ch]))
                    .collect(),
                Op::Flatten => {
                    let i = &exact[node.inputs[0]];
                    let per = c / i.len().max(1);
                    (0..c).map(|ch| i[ch / per.max(1)]).collect()
                }
                _ => exact[node.inputs[0]].clone(),
            }
        };
        exact.push(e);
    }
    exact
}

/// Whether every input column of `block` of `layer` (the bias aside) reads a channel that
/// `input_exact` marks exact.
pub(crate) fn reads_exact(layer: &MergedLayer, block: &OutputBlock, input_exact: &[bool]) -> bool {
    let patch = layer.kind.patch();
    block.cols[..block.cols.len() - usize::from(layer.bias)]
        .iter()
        .all(|&col| input_exact[col / patch])
}
