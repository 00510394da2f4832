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

use pleas_core::forward::Forward;
use pleas_core::gram::GramParams;
use pleas_core::graph::{Graph, Groups, NodeId, Shape, Weights};
use pleas_core::linalg::{MatMut, MatRef};
use pleas_core::similarity::{Metric, similarity_from_accumulator};

use super::recorded::RecordedTargets;
use crate::error::{CoreError, Error};
use crate::io::data::{DataSource, DataSpec};
use crate::par::{OwnedGram, Parallelism, shard_ranges};
use crate::ranks::{Ranks, fold_shards_reporting};

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
        moments.push(&x[start * per..(start + m) * per], m, &mut accs, None)?;
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
/// once with `done = 0` before the first wave, then after every wave (for progress). With
/// `record`, the recorded nodes' activations of A and B go into each shard's store on the way.
#[allow(clippy::too_many_arguments)]
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
    record: Option<&RecordedTargets>,
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
            let rec = record.map(|targets| Recording {
                targets,
                shard: s,
                start,
            });
            pushed = src
                .read(start, m, &mut x)
                .and_then(|()| moments.push(&x, m, &mut accs, rec));
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
    spare_a: Vec<Vec<f32>>,
    spare_b: Vec<Vec<f32>>,
    /// The kernel scratch both forward passes take turns with.
    scratch: Vec<f32>,
}

/// Where a batch's recorded activations go: the batch from sample `start` of shard `shard`.
struct Recording<'r> {
    targets: &'r RecordedTargets,
    shard: usize,
    start: usize,
}

/// One batch at a time, both models in lockstep: node by node, A's and B's activations are
/// computed, a watched node's pair is pushed into its group's accumulator, and every input is
/// released after its last reader, so only the live nodes of one batch are held (not every
/// watched node of A's whole pass) and nothing is copied.
struct MomentsPass<'g> {
    watch: BTreeMap<NodeId, usize>,
    /// For each node, the last node reading it (itself if none).
    last_use: Vec<NodeId>,
    fa: Forward<'g>,
    fb: Forward<'g>,
    scratch: Vec<f32>,
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
        let mut last_use: Vec<NodeId> = (0..graph.nodes().len()).collect();
        for (id, node) in graph.nodes().iter().enumerate() {
            for &i in &node.inputs {
                last_use[i] = last_use[i].max(id);
            }
        }
        Ok(Self {
            watch,
            last_use,
            fa: Forward::new(graph, a)?,
            fb: Forward::new(graph, b)?,
            scratch: Vec::new(),
        })
    }

    /// Exchanges this pass's reusable buffers with `bufs`.
    fn swap_buffers(&mut self, bufs: &mut PassBuffers) {
        std::mem::swap(self.fa.spare_buffers(), &mut bufs.spare_a);
        std::mem::swap(self.fb.spare_buffers(), &mut bufs.spare_b);
        std::mem::swap(&mut self.scratch, &mut bufs.scratch);
    }

    fn push(
        &mut self,
        x: &[f32],
        m: usize,
        accs: &mut [OwnedGram],
        rec: Option<Recording<'_>>,
    ) -> Result<(), Error> {
        let nodes = self.fa.graph().nodes();
        let mut acts_a: Vec<Option<Vec<f32>>> = vec![None; nodes.len()];
        let mut acts_b: Vec<Option<Vec<f32>>> = vec![None; nodes.len()];
        acts_a[0] = Some(input_copy(&mut self.fa, x));
        acts_b[0] = Some(input_copy(&mut self.fb, x));
        let result = self.push_nodes(m, accs, &mut acts_a, &mut acts_b, rec);
        acts_a
            .into_iter()
            .flatten()
            .for_each(|b| self.fa.recycle(b));
        acts_b
            .into_iter()
            .flatten()
            .for_each(|b| self.fb.recycle(b));
        result
    }

    /// Computes every node of both models for one batch (inputs in `acts_*[0]`), pushing the
    /// watched pairs, recording the recorded nodes and releasing dead activations as it goes.
    fn push_nodes(
        &mut self,
        m: usize,
        accs: &mut [OwnedGram],
        acts_a: &mut [Option<Vec<f32>>],
        acts_b: &mut [Option<Vec<f32>>],
        rec: Option<Recording<'_>>,
    ) -> Result<(), Error> {
        let nodes = self.fa.graph().nodes();
        for (id, node) in nodes.iter().enumerate() {
            if id > 0 {
                acts_a[id] = Some(compute_in(&mut self.fa, &mut self.scratch, id, acts_a, m)?);
                acts_b[id] = Some(compute_in(&mut self.fb, &mut self.scratch, id, acts_b, m)?);
            }
            if let (Some(r), Some(a), Some(b)) = (&rec, &acts_a[id], &acts_b[id]) {
                r.targets.record(r.shard, id, r.start, m, a, b)?;
            }
            if let Some(&g) = self.watch.get(&id) {
                let (a, b) = (acts_a[id].as_deref(), acts_b[id].as_deref());
                push_pair(
                    &mut accs[g],
                    a.unwrap_or(&[]),
                    b.unwrap_or(&[]),
                    m,
                    node.shape,
                )
                .map_err(|e| Error::core_at(STAGE, format!("node {id}"), e))?;
            }
            let dead = node.inputs.iter().copied().chain([id]);
            for i in dead.filter(|&i| self.last_use[i] == id) {
                if let Some(buf) = acts_a[i].take() {
                    self.fa.recycle(buf);
                }
                if let Some(buf) = acts_b[i].take() {
                    self.fb.recycle(buf);
                }
            }
        }
        Ok(())
    }
}

/// Node `id` of `forward` for a batch of `m` samples, computed in `scratch`.
fn compute_in(
    forward: &mut Forward<'_>,
    scratch: &mut Vec<f32>,
    id: NodeId,
    acts: &mut [Option<Vec<f32>>],
    m: usize,
) -> Result<Vec<f32>, Error> {
    std::mem::swap(forward.scratch_buffer(), scratch);
    let out = forward.compute_node(id, acts, m);
    std::mem::swap(forward.scratch_buffer(), scratch);
    Ok(out?)
}

/// A copy of the batch input from `forward`'s spare buffers.
fn input_copy(forward: &mut Forward<'_>, x: &[f32]) -> Vec<f32> {
    let spare = forward.spare_buffers();
    let mut buf = spare.pop().unwrap_or_default();
    buf.clear();
    buf.extend_from_slice(x);
    buf
}

/// Pushes one node's A and B activations of a batch of `m` samples into its group's
/// accumulator: NCHW maps straight from the forward pass (every position of every sample is a
/// row, no transposition); vectors (one position) are rows already.
fn push_pair(
    acc: &mut OwnedGram,
    a: &[f32],
    b: &[f32],
    m: usize,
    shape: Shape,
) -> Result<(), CoreError> {
    let (c, hw) = (shape.c, shape.h * shape.w);
    if hw == 1 {
        let (av, bv) = (MatRef::new(a, m, c)?, MatRef::new(b, m, c)?);
        Ok(acc.push(av, Some(bv))?)
    } else {
        Ok(acc.push_planes(a, Some(b), m, hw)?)
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
