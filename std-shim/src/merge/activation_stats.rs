//! Step 1 statistics: the streamed moments between A's and B's units for every permutation
//! group, from one forward pass of both models over the merge data (docs/ALGORITHM.md section 2).
//!
//! Every node whose output channel axis belongs to a group contributes: for a batch, its A and
//! B activations (NCHW maps: rows of samples x height x width positions by columns of units)
//! are pushed into the group's accumulator, A's units as samples `x` and B's as
//! targets `t`. The accumulators keep the cross moments, sums and squares (no Gram), so memory
//! is O(n^2) per group whatever the amount of data, and every batch counts.

use std::collections::BTreeMap;
use std::sync::Mutex;

use pleas_core::forward::{Activations, Forward, Observer};
use pleas_core::gram::GramParams;
use pleas_core::graph::{Graph, Groups, NodeId, Weights};
use pleas_core::linalg::{MatMut, MatRef};
use pleas_core::similarity::{Metric, similarity_from_accumulator};

use crate::error::Error;
use crate::io::data::{DataSource, DataSpec};
use crate::par::{OwnedGram, Parallelism, shard_ranges};
use crate::ranks::{Ranks, fold_shards_reporting};

struct RecordA<'w> {
    watch: &'w BTreeMap<NodeId, usize>,
    kept: BTreeMap<NodeId, Vec<f32>>,
}

impl Observer for RecordA<'_> {
    fn observe(&mut self, node: NodeId, act: Activations<'_>) {
        if self.watch.contains_key(&node) {
            let buf = self.kept.entry(node).or_default();
            buf.clear();
            buf.extend_from_slice(act.data);
        }
    }
}

/// Pairs B's activations with A's and pushes them into the group accumulators.
struct PushPairs<'w> {
    watch: &'w BTreeMap<NodeId, usize>,
    kept: &'w BTreeMap<NodeId, Vec<f32>>,
    accs: &'w mut [OwnedGram],
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
        let (c, hw) = (act.shape.c, act.shape.h * act.shape.w);
        let a = &self.kept[&node];
        let acc = &mut self.accs[g];
        // NCHW maps straight from the forward pass: every position of every sample is a row
        // (no transposition); vectors (one position) are rows already.
        let pushed = if hw == 1 {
            MatRef::new(a, act.batch, c)
                .and_then(|av| MatRef::new(act.data, act.batch, c).map(|bv| acc.push(av, Some(bv))))
        } else {
            Ok(acc.push_planes(a, Some(act.data), act.batch, hw))
        };
        match pushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.error = Some(format!("node {node}: {e}")),
            Err(e) => self.error = Some(format!("node {node}: {e}")),
        }
    }
}

/// Streams both models over the samples of `x` (`n` samples, in memory) in batches of
/// `batch` and returns one accumulator per group (A's units as `x`, B's as targets, no Gram).
pub fn activation_moments(
    graph: &Graph,
    groups: &Groups,
    a: &Weights,
    b: &Weights,
    x: &[f32],
    n: usize,
    batch: usize,
) -> Result<Vec<OwnedGram>, Error> {
    let per = graph.input_shape().len();
    if x.len() != n * per {
        return Err(Error::Merge {
            stage: STAGE,
            reason: format!("{} values for {n} samples of {per}", x.len()),
        });
    }
    let mut accs = new_accumulators(groups);
    let mut moments = MomentsPass::new(graph, groups, a, b)?;
    let batch = batch.max(1);
    for start in (0..n).step_by(batch) {
        let m = (n - start).min(batch);
        moments.push(&x[start * per..(start + m) * per], m, &mut accs)?;
    }
    Ok(accs)
}

/// [`activation_moments`] streamed from a data file: the samples are cut into shards of
/// `shard_samples` consecutive samples ([`shard_ranges`]: independent of the thread count),
/// each read in chunks of `batch` by one of `par`'s threads into its own accumulators; shards
/// run in waves of one per thread and are folded into the total in shard order, so the result
/// is the same for any number of threads and at most a wave of accumulators is held. With
/// several `ranks`, each computes its shards of every wave and rank 0 folds them all in shard
/// order ([`fold_shards`](crate::ranks::fold_shards)). `on_shards(done, total)` is called
/// once with `done = 0` before the first wave, then after every wave (for progress).
pub fn activation_moments_streamed(
    graph: &Graph,
    groups: &Groups,
    a: &Weights,
    b: &Weights,
    data: &DataSpec,
    batch: usize,
    shard_samples: usize,
    par: Parallelism,
    ranks: &dyn Ranks,
    on_shards: &mut dyn FnMut(usize, usize),
) -> Result<Vec<OwnedGram>, Error> {
    let n = DataSource::open(data)?.len();
    let shards = shard_ranges(n, shard_samples);
    let total = shards.len();
    let batch = batch.max(1);
    // One set of buffers per worker thread.
    let slots: Vec<Mutex<PassBuffers>> = (0..par.threads().max(1))
        .map(|_| Mutex::default())
        .collect();
    let run_shard = |s: usize, worker: usize| -> Result<Vec<OwnedGram>, Error> {
        let mut src = DataSource::open(data)?;
        let per = src.sample_len();
        let mut accs = new_accumulators(groups);
        let mut moments = MomentsPass::new(graph, groups, a, b)?;
        let mut slot = slots[worker].lock().expect("slot lock");
        moments.swap_buffers(&mut slot);
        let range = shards[s].clone();
        let mut x = Vec::new();
        let mut pushed = Ok(());
        for start in range.clone().step_by(batch) {
            let m = batch.min(range.end - start);
            x.resize(m * per, 0.0);
            pushed = src
                .read(start, m, &mut x)
                .and_then(|()| moments.push(&x, m, &mut accs));
            if pushed.is_err() {
                break;
            }
        }
        moments.swap_buffers(&mut slot);
        pushed.map(|()| accs)
    };
    on_shards(0, total);
    fold_shards_reporting(
        ranks,
        par,
        total,
        run_shard,
        |mut sum, mut next| {
            for (acc, other) in sum.iter_mut().zip(next.iter_mut()) {
                acc.combine(other).map_err(|e| Error::core(STAGE, e))?;
            }
            Ok(sum)
        },
        |done| on_shards(done, total),
    )
}

/// The stage's name in errors and progress.
pub(super) const STAGE: &str = "matching statistics";

fn new_accumulators(groups: &Groups) -> Vec<OwnedGram> {
    groups
        .groups()
        .iter()
        .map(|g| OwnedGram::new_owned(g.width, g.width, GramParams::default().without_gram()))
        .collect()
}

/// Buffers a [`MomentsPass`] reuses: the next shard on the same thread takes them over, so
/// the multi-megabyte activation buffers are not allocated (zeroed,
/// page-faulted) anew for every shard.
#[derive(Default)]
struct PassBuffers {
    kept: BTreeMap<NodeId, Vec<f32>>,
    spare_a: Vec<Vec<f32>>,
    spare_b: Vec<Vec<f32>>,
}

/// One batch at a time: A's watched activations are recorded, then B's are paired with them.
struct MomentsPass<'g> {
    watch: BTreeMap<NodeId, usize>,
    fa: Forward<'g>,
    fb: Forward<'g>,
    kept: BTreeMap<NodeId, Vec<f32>>,
}

impl<'g> MomentsPass<'g> {
    fn new(
        graph: &'g Graph,
        groups: &Groups,
        a: &'g Weights,
        b: &'g Weights,
    ) -> Result<Self, Error> {
        let watch = groups
            .groups()
            .iter()
            .enumerate()
            .flat_map(|(g, pg)| pg.nodes.iter().map(move |&node| (node, g)))
            .collect();
        Ok(Self {
            watch,
            fa: Forward::new(graph, a)?,
            fb: Forward::new(graph, b)?,
            kept: BTreeMap::new(),
        })
    }

    /// Exchanges this pass's reusable buffers with `bufs`.
    fn swap_buffers(&mut self, bufs: &mut PassBuffers) {
        std::mem::swap(&mut self.kept, &mut bufs.kept);
        std::mem::swap(self.fa.spare_buffers(), &mut bufs.spare_a);
        std::mem::swap(self.fb.spare_buffers(), &mut bufs.spare_b);
    }

    fn push(&mut self, x: &[f32], m: usize, accs: &mut [OwnedGram]) -> Result<(), Error> {
        let mut rec = RecordA {
            watch: &self.watch,
            kept: std::mem::take(&mut self.kept),
        };
        self.fa.run(x, m, &mut rec)?;
        self.kept = rec.kept;
        let mut push = PushPairs {
            watch: &self.watch,
            kept: &self.kept,
            accs,
            error: None,
        };
        self.fb.run(x, m, &mut push)?;
        match push.error {
            Some(reason) => Err(Error::Merge {
                stage: STAGE,
                reason,
            }),
            None => Ok(()),
        }
    }
}

/// The `n x n` similarity of every group (row-major, A's units as rows) from its moments.
pub fn group_similarities(accs: &mut [OwnedGram], metric: Metric) -> Result<Vec<Vec<f64>>, Error> {
    accs.iter_mut()
        .enumerate()
        .map(|(g, acc)| {
            let n = acc.dim();
            let mut s = vec![0.0; n * n];
            similarity_from_accumulator(metric, acc, MatMut::new(&mut s, n, n).expect("n x n"))
                .map_err(|e| Error::core_at("similarity", format!("group {g}"), e))?;
            Ok(s)
        })
        .collect()
}
