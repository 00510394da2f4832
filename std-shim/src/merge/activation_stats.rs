//! Step 1 statistics: the streamed moments between A's and B's units for every permutation
//! group, from one forward pass of both models over the merge data (ALGORITHM.md section 2).
//!
//! Every node whose output channel axis belongs to a group contributes: for a batch, its A and
//! B activations are laid out as rows of samples (batch x height x width positions) by columns
//! of units and pushed into the group's accumulator, A's units as samples `x` and B's as
//! targets `t`. The accumulators keep the cross moments, sums and squares (no Gram), so memory
//! is O(n^2) per group whatever the amount of data, and every batch counts.

use std::collections::BTreeMap;

use pleas_core::forward::{Activations, Forward, Observer};
use pleas_core::gram::GramParams;
use pleas_core::graph::{Graph, Groups, NodeId, Weights};
use pleas_core::linalg::{MatMut, MatRef};
use pleas_core::similarity::{Metric, similarity_from_accumulator};

use crate::error::Error;
use crate::par::OwnedGram;

/// NCHW activations as rows of positions: `out[(s * hw + p) * c + ch] = data[(s * c + ch) * hw + p]`.
fn positions_by_channels(act: &Activations<'_>, out: &mut Vec<f32>) {
    let (c, hw) = (act.shape.c, act.shape.h * act.shape.w);
    out.clear();
    out.resize(act.batch * hw * c, 0.0);
    for s in 0..act.batch {
        for ch in 0..c {
            let src = &act.data[(s * c + ch) * hw..(s * c + ch + 1) * hw];
            for (p, &v) in src.iter().enumerate() {
                out[(s * hw + p) * c + ch] = v;
            }
        }
    }
}

/// Keeps A's activations of the watched nodes for the current batch.
struct RecordA<'w> {
    watch: &'w BTreeMap<NodeId, usize>,
    kept: BTreeMap<NodeId, Vec<f32>>,
}

impl Observer for RecordA<'_> {
    fn observe(&mut self, node: NodeId, act: Activations<'_>) {
        if self.watch.contains_key(&node) {
            let buf = self.kept.entry(node).or_default();
            positions_by_channels(&act, buf);
        }
    }
}

/// Pairs B's activations with A's and pushes them into the group accumulators.
struct PushPairs<'w> {
    watch: &'w BTreeMap<NodeId, usize>,
    kept: &'w BTreeMap<NodeId, Vec<f32>>,
    accs: &'w mut [OwnedGram],
    buf: Vec<f32>,
    error: Option<String>,
}

impl Observer for PushPairs<'_> {
    fn observe(&mut self, node: NodeId, act: Activations<'_>) {
        let Some(&g) = self.watch.get(&node) else {
            return;
        };
        if self.error.is_some() {
            return;
        }
        positions_by_channels(&act, &mut self.buf);
        let c = act.shape.c;
        let rows = act.batch * act.shape.h * act.shape.w;
        let a = &self.kept[&node];
        let pushed = MatRef::new(a, rows, c).and_then(|av| {
            MatRef::new(&self.buf, rows, c).map(|bv| self.accs[g].push(av, Some(bv)))
        });
        match pushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.error = Some(format!("node {node}: {e}")),
            Err(e) => self.error = Some(format!("node {node}: {e}")),
        }
    }
}

/// The per-group moment accumulators of A's and B's activations over `x` (`n` samples, the
/// graph's input shape each), in batches of `batch`.
pub fn activation_moments(
    graph: &Graph,
    groups: &Groups,
    a: &Weights,
    b: &Weights,
    x: &[f32],
    n: usize,
    batch: usize,
) -> Result<Vec<OwnedGram>, Error> {
    let stage = "matching statistics";
    let watch: BTreeMap<NodeId, usize> = groups
        .groups()
        .iter()
        .enumerate()
        .flat_map(|(g, pg)| pg.nodes.iter().map(move |&node| (node, g)))
        .collect();
    let mut accs: Vec<OwnedGram> = groups
        .groups()
        .iter()
        .map(|g| OwnedGram::new_owned(g.width, g.width, GramParams::default().without_gram()))
        .collect();
    let mut fa = Forward::new(graph, a)?;
    let mut fb = Forward::new(graph, b)?;
    let per = graph.input_shape().len();
    if x.len() != n * per {
        return Err(Error::Merge {
            stage,
            reason: format!("{} values for {n} samples of {per}", x.len()),
        });
    }
    let batch = batch.max(1);
    let mut rec = RecordA {
        watch: &watch,
        kept: BTreeMap::new(),
    };
    for start in (0..n).step_by(batch) {
        let m = (n - start).min(batch);
        let xb = &x[start * per..(start + m) * per];
        fa.run(xb, m, &mut rec)?;
        let mut push = PushPairs {
            watch: &watch,
            kept: &rec.kept,
            accs: &mut accs,
            buf: Vec::new(),
            error: None,
        };
        fb.run(xb, m, &mut push)?;
        if let Some(reason) = push.error {
            return Err(Error::Merge { stage, reason });
        }
    }
    Ok(accs)
}

/// The `n x n` similarity of every group (row-major, A's units as rows) from its moments.
pub fn group_similarities(accs: &mut [OwnedGram], metric: Metric) -> Result<Vec<Vec<f64>>, Error> {
    accs.iter_mut()
        .enumerate()
        .map(|(g, acc)| {
            let n = acc.dim();
            let mut s = vec![0.0; n * n];
            similarity_from_accumulator(metric, acc, MatMut::new(&mut s, n, n).expect("n x n"))
                .map_err(|e| Error::Merge {
                    stage: "similarity",
                    reason: format!("group {g}: {e}"),
                })?;
            Ok(s)
        })
        .collect()
}
