//! Data passes of the least-squares step: layer by layer, each pass streams the merge data once
//! through A, B and (for the sequential fit and batch-norm re-estimation) the merged network, and
//! accumulates what the next layer needs: the Gram and cross moments of its inputs and targets,
//! or the per-channel moments of a batch-norm input.
//!
//! The data is cut into shards of a fixed number of consecutive samples ([`shard_ranges`]: the
//! number of shards grows with the data, never with the thread count); each shard is processed
//! in chunks, in order, with its own accumulators and its own [`ActivationStore`] for the
//! activations that stay live between passes. Worker threads take the next shard as they
//! finish one (at most two per thread ahead of the fold), and every shard's result is folded
//! into the total in shard order ([`PassResult::combine`]), so a bounded number of shard
//! accumulators is held at once and results are bit-identical for any number of threads
//! ([`crate::ranks`]).

mod shard;

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pleas_core::forward::im2col::ConvGeometry;
use pleas_core::gram::conv::{ConvGram, ConvGramShape, TargetSlots};
use pleas_core::gram::{GramError, GramParams};
use pleas_core::graph::{Graph, NodeId, Op, Weights};
use pleas_core::merge::layout::GroupLayout;

use self::shard::Forwards;
use super::merged_model::MergedModel;
use super::recorded::RecordedTargets;
use super::store::{ActivationStore, Net, SpillSpace};
use crate::error::Error;
use crate::io::data::DataSpec;
use crate::par::{OwnedGram, Parallelism, shard_ranges};
use crate::ranks::{Ranks, fold_shards};
use pleas_core::merge::sources::RowSource;

/// How the passes run.
#[derive(Debug, Clone)]
pub struct StreamParams {
    /// Samples per chunk.
    pub batch: usize,
    /// Worker threads.
    pub par: Parallelism,
    /// Samples per shard (fixed: results do not depend on the thread count).
    pub shard_samples: usize,
    /// Bytes of live activations kept in memory (over all shards) before spilling to disk.
    pub memory_budget: usize,
    /// Directory for spill files.
    pub spill_dir: PathBuf,
}

/// What a pass accumulates.
#[derive(Debug, Clone)]
pub enum Barrier {
    /// Gram and cross moments for these merged layers (one input, targets concatenated).
    Fit {
        /// Indices into the merged model's layers.
        layers: Vec<usize>,
        /// Inputs from the merged network itself instead of the layout of A's and B's.
        sequential: bool,
    },
    /// Per-channel moments of the input of this merged batch-norm node.
    BatchNorm {
        /// The merged node.
        node: NodeId,
    },
}

/// Per-channel count, mean and centred sum of squares (combined with Chan's formula).
#[derive(Debug, Clone, Default)]
pub struct ChannelMoments {
    /// Values seen per channel.
    pub count: f64,
    /// Mean per channel.
    pub mean: Vec<f64>,
    /// Sum of squared deviations per channel.
    pub m2: Vec<f64>,
}

impl ChannelMoments {
    fn merge(&mut self, count: f64, mean: &[f64], m2: &[f64]) {
        if count == 0.0 {
            return;
        }
        if self.count == 0.0 {
            self.count = count;
            self.mean = mean.to_vec();
            self.m2 = m2.to_vec();
            return;
        }
        let total = self.count + count;
        for c in 0..mean.len() {
            let delta = mean[c] - self.mean[c];
            self.mean[c] += delta * count / total;
            self.m2[c] += m2[c] + delta * delta * self.count * count / total;
        }
        self.count = total;
    }

    /// Population variance per channel.
    pub fn variance(&self) -> Vec<f64> {
        self.m2
            .iter()
            .map(|&m| {
                if self.count > 0.0 {
                    m / self.count
                } else {
                    0.0
                }
            })
            .collect()
    }
}

/// The rows of a fit, kept when the whole pass has fewer rows (samples x positions) than
/// columns: the fit is then solved in sample space from the rows themselves (see
/// [`pleas_core::lstsq::dual`]), since an f32 Gram of rank below its size leaves the
/// directions the data does not reach to rounding noise divided by the ridge.
#[derive(Debug, Clone, Default)]
pub struct FitRows {
    /// Input rows, `rows x columns` row-major, in sample order (shards concatenated in order).
    pub x: Vec<f32>,
    /// Target rows, `rows x targets` row-major, same order.
    pub t: Vec<f32>,
}

/// What a pass produced.
pub enum PassResult {
    /// The combined moments of a fit (inputs `x`, concatenated targets `t`), and its rows when
    /// there are fewer rows than columns.
    Fit(OwnedGram, Option<Box<FitRows>>),
    /// Batch-norm input moments.
    BatchNorm(ChannelMoments),
}

/// The networks a pass runs.
pub struct Networks<'a> {
    /// A's and B's architecture (as prepared: batch-norm folded or not).
    pub original: &'a Graph,
    /// A's weights.
    pub a: &'a Weights,
    /// B's weights.
    pub b: &'a Weights,
    /// The merged network (graph and layers; its weights are passed per pass).
    pub merged: &'a MergedModel,
    /// Group layouts.
    pub layouts: &'a [GroupLayout],
}

/// The storage and workspace of a folded shard accumulator, kept for the next shard's.
type GramBuffers = (Vec<f64>, Vec<f32>);

/// A lag-based patch-moment accumulator with heap buffers.
type OwnedConvGram = ConvGram<Vec<f64>, Vec<f32>>;

/// The shape of the lag-based patch moments ([`pleas_core::gram::conv`]) of a fit layer, or
/// `None` where the layer keeps im2row: strided and 1 x 1 convolutions (no lags to share; see
/// the module docs) and passes that keep their rows for the sample-space solve.
fn lag_gram_shape(
    geom: &ConvGeometry,
    bias: bool,
    keep_rows: bool,
    targets: usize,
) -> Option<ConvGramShape> {
    (geom.stride == [1, 1] && geom.kernel != [1, 1] && !keep_rows).then_some(ConvGramShape {
        channels: geom.in_c,
        height: geom.in_h,
        width: geom.in_w,
        kernel: geom.kernel,
        padding: geom.padding,
        targets,
        bias,
    })
}

/// The shard's lag-based accumulator for chunks of up to `batch` maps: `lag`, reset, when it
/// has this shape and is unused in this shard (`fresh`), else a new one. Its totals join the
/// shard's Gram accumulator once, at the end of the shard.
fn lag_gram(
    lag: &mut Option<OwnedConvGram>,
    fresh: bool,
    shape: ConvGramShape,
    batch: usize,
) -> Result<&mut OwnedConvGram, GramError> {
    let l = match lag.take() {
        Some(mut l) if l.shape() == shape && l.max_samples() >= batch => {
            if fresh {
                l.reset();
            }
            l
        }
        _ => OwnedConvGram::new_owned(shape, GramParams::default(), batch)?,
    };
    Ok(lag.insert(l))
}

/// The node range one pass computes per network, and what it must keep of A and B.
struct PassSpan<'s> {
    /// Highest node already computed, per network.
    from: [usize; 3],
    /// Highest node this pass computes, per network.
    to: [usize; 3],
    /// Consumers of every node, per network.
    consumers: [&'s [Vec<NodeId>]; 3],
    /// Nodes of A and B this pass or a later one reads.
    keep: &'s BTreeSet<NodeId>,
    /// Nodes of A and B a later pass reads (stored even when no node consumes them).
    pinned: &'s BTreeSet<NodeId>,
    /// Per network, the stored nodes (up to `from`) this pass reads: inputs of the nodes it
    /// computes and what its barrier reads. The other stored nodes stay where they are.
    reads: &'s [Vec<bool>; 3],
    /// The networks this pass runs (computes or reads stored nodes of): A and B for a fit,
    /// unless it is sequential and reads only their recorded outputs; the merged network for
    /// a sequential fit and a batch-norm pass.
    needs: [bool; 3],
}

struct Shard {
    /// Its position among the shards.
    index: usize,
    samples: Range<usize>,
    store: ActivationStore,
}

/// Keeps the largest spare buffers whose capacities together stay within `cap_bytes` (those
/// are the ones that cost page faults to make anew) and frees the others.
fn trim_spares(spare: &mut Vec<Vec<f32>>, cap_bytes: usize) {
    spare.sort_unstable_by_key(|b| std::cmp::Reverse(b.capacity()));
    let mut held = 0usize;
    spare.retain(|b| {
        let bytes = b.capacity() * size_of::<f32>();
        let keep = held + bytes <= cap_bytes;
        if keep {
            held += bytes;
        }
        keep
    });
}

/// Bytes of the spare buffers' capacities together.
fn spare_bytes(spare: &[Vec<f32>]) -> usize {
    spare.iter().map(|b| b.capacity() * size_of::<f32>()).sum()
}

/// Buffers one worker thread reuses from shard to shard: activation buffers the forward passes
/// draw from and the store reads into, the forward kernels' scratch, and the patch and target
/// rows of the fits. Fresh multi-megabyte buffers for every node of every shard cost zeroing
/// and page faults (about 15 % of a merge's profile). The spare buffers count against the
/// memory budget before stored activations ([`SpillSpace::repool`]).
#[derive(Default)]
struct SlotBuffers {
    /// Spare activation buffers.
    spare: Vec<Vec<f32>>,
    /// Composed inputs of a fit on the original models' inputs.
    x: Vec<f32>,
    /// im2row patch rows.
    xrows: Vec<f32>,
    /// Composed target rows.
    tbuf: Vec<f32>,
    /// The lag-based accumulator of the last shard (reset for the next one of its shape).
    lag: Option<OwnedConvGram>,
    /// The kernel scratch the forward passes take turns with.
    scratch: Vec<f32>,
    /// Bytes of `spare` as last reported to the spill space.
    pooled: usize,
}

/// The spare buffer that best fits `len` values (the smallest that holds them, else the
/// largest), emptied, or a new one.
fn take_spare(spare: &mut Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let fits = spare
        .iter()
        .enumerate()
        .filter(|(_, b)| b.capacity() >= len)
        .min_by_key(|(_, b)| b.capacity())
        .or_else(|| spare.iter().enumerate().max_by_key(|(_, b)| b.capacity()))
        .map(|(i, _)| i);
    let mut b = fits.map(|i| spare.swap_remove(i)).unwrap_or_default();
    b.clear();
    b
}

/// A spare buffer (or a new one) holding a copy of `data`.
fn spare_copy(spare: &mut Vec<Vec<f32>>, data: &[f32]) -> Vec<f32> {
    let mut b = take_spare(spare, data.len());
    b.extend_from_slice(data);
    b
}

/// Runs passes over the merge data, keeping each network's live activations between them.
pub struct Streamer<'a> {
    nets: Networks<'a>,
    params: StreamParams,
    data: DataSpec,
    shards: Vec<Mutex<Shard>>,
    /// The memory budget and spill file every shard's store shares.
    space: Arc<SpillSpace>,
    /// Reused buffers, one set per worker thread.
    slots: Vec<Mutex<SlotBuffers>>,
    /// Buffers of shard accumulators already folded: the next shards' sums are built in them
    /// (a fresh multi-megabyte accumulator per shard and pass cost page faults and zeroing).
    spent: Mutex<Vec<GramBuffers>>,
    /// A's and B's layer outputs the matching recorded (see [`super::recorded`]): passes
    /// reading only these do not run A and B.
    recorded: Option<RecordedTargets>,
    /// Highest node computed so far, per network (0: only the input).
    frontier: [usize; 3],
    /// Samples over all shards.
    samples: usize,
}

fn net_index(net: Net) -> usize {
    match net {
        Net::A => 0,
        Net::B => 1,
        Net::M => 2,
    }
}

/// The merge step a pass belongs to, in errors.
const STAGE: &str = "least squares";

fn stage_err(reason: String) -> Error {
    Error::Merge {
        stage: STAGE,
        reason,
    }
}

/// The networks (A, B, merged) a pass accumulating `barrier` runs, `recorded` saying whether
/// A's and B's outputs it reads were recorded ([`Streamer::recorded_reads`]). A sequential fit
/// served by recorded outputs computes nothing of A and B (their frontier stays) and reads
/// neither their input nor a stored node of theirs, so it runs only the merged network.
fn pass_needs(barrier: &Barrier, recorded: bool) -> [bool; 3] {
    match barrier {
        Barrier::Fit { sequential, .. } => {
            let originals = !(*sequential && recorded);
            [originals, originals, *sequential]
        }
        Barrier::BatchNorm { .. } => [false, false, true],
    }
}

/// Whether node `k` is still needed once every node up to `frontier` is computed.
fn live(graph: &Graph, consumers: &[Vec<NodeId>], k: NodeId, frontier: usize) -> bool {
    k <= frontier
        && (consumers[k].iter().any(|&j| j > frontier)
            || graph.outputs().iter().any(|o| o.node == k))
}

/// The frontier (highest node computed) at or after `from`, reached over cheap nodes only
/// (no weights: activations, adds, pooling, batch-norm, flatten), that leaves the fewest
/// activation values stored after the pass (live nodes and the `pinned` ones later passes
/// read; ties go to the earliest). A and B run on past their targets this way where that
/// shrinks what they keep: after a residual block's `conv2`, its add and ReLU leave one map
/// live instead of two.
fn leanest_frontier(
    graph: &Graph,
    consumers: &[Vec<NodeId>],
    pinned: &BTreeSet<NodeId>,
    from: usize,
) -> usize {
    let held = |f: usize| -> usize {
        (0..=f)
            .filter(|&k| pinned.contains(&k) || live(graph, consumers, k, f))
            .map(|k| graph.node(k).shape.len())
            .sum()
    };
    let (mut best, mut at) = (held(from), from);
    let mut f = from;
    while let Some(next) = graph.nodes().get(f + 1)
        && !matches!(
            next.op,
            Op::Input
                | Op::Linear { .. }
                | Op::Conv2d { .. }
                | Op::BlockConv2d { .. }
                | Op::BlockLinear { .. }
        )
    {
        f += 1;
        let h = held(f);
        if h < best {
            (best, at) = (h, f);
        }
    }
    at
}

/// Where [`compose`] writes.
#[derive(Debug, Clone, Copy)]
enum Dest {
    /// NCHW maps of `rows` channels.
    Nchw,
    /// Row-major samples: position `(s, p)` is row `s * plane + p` of `stride` values, and
    /// output row `r` is its column `offset + r`.
    Rows { stride: usize, offset: usize },
}

/// The NCHW feature planes of A and B that composed rows read.
#[derive(Clone, Copy)]
struct Planes<'p> {
    a: &'p [f32],
    b: &'p [f32],
    /// Channels per sample.
    channels: usize,
    /// Positions per plane.
    plane: usize,
}

impl Planes<'_> {
    /// Positions `p0..p0 + dst.len()` of sample `s` of the row with sources `src`:
    /// `sum of alpha * source plane`.
    fn compose_run(&self, src: &RowSource, s: usize, p0: usize, dst: &mut [f32]) {
        let at = |i: usize| (s * self.channels + i) * self.plane + p0;
        let len = dst.len();
        match (src.a, src.b) {
            (Some((ia, wa)), Some((ib, wb))) => {
                let pa = &self.a[at(ia)..][..len];
                let pb = &self.b[at(ib)..][..len];
                for ((d, &x), &y) in dst.iter_mut().zip(pa).zip(pb) {
                    *d = wa * x + wb * y;
                }
            }
            (Some((i, w)), None) | (None, Some((i, w))) => {
                let src = if src.a.is_some() { self.a } else { self.b };
                for (d, &x) in dst.iter_mut().zip(&src[at(i)..][..len]) {
                    *d = w * x;
                }
            }
            (None, None) => dst.fill(0.0),
        }
    }
}

/// Writes, for every output row, `sum of alpha * source plane` of its sources: the layout map
/// of a group (or plain average / one side) applied to whole feature planes.
fn compose(
    sources_rows: &[RowSource],
    planes: Planes<'_>,
    batch: usize,
    dest: Dest,
    out: &mut [f32],
) {
    let (rows, plane) = (sources_rows.len(), planes.plane);
    // For row-major output, a run of positions at a time, so that the output rows being
    // written stay in L1 (writing each output column down a whole map missed it).
    let run = match dest {
        Dest::Nchw => plane.max(1),
        Dest::Rows { .. } => COMPOSE_RUN,
    };
    let mut tmp = [0.0f32; COMPOSE_RUN];
    for s in 0..batch {
        for p0 in (0..plane).step_by(run) {
            let p1 = (p0 + run).min(plane);
            for (r, src) in sources_rows.iter().enumerate() {
                let dst: &mut [f32] = match dest {
                    Dest::Nchw => &mut out[(s * rows + r) * plane + p0..][..p1 - p0],
                    Dest::Rows { .. } => &mut tmp[..p1 - p0],
                };
                planes.compose_run(src, s, p0, dst);
                if let Dest::Rows { stride, offset } = dest {
                    for (p, &v) in (p0..p1).zip(tmp.iter()) {
                        out[(s * plane + p) * stride + offset + r] = v;
                    }
                }
            }
        }
    }
}

/// [`compose`] into the target slots of a lag-based accumulator: output row `r` of the
/// planes (`out_w` positions wide) is target column `offset + r`.
fn compose_slots(
    sources_rows: &[RowSource],
    planes: Planes<'_>,
    out_w: usize,
    offset: usize,
    slots: &mut TargetSlots<'_>,
) {
    let t = slots.targets();
    let out_h = planes.plane / out_w.max(1);
    let mut tmp = [0.0f32; COMPOSE_RUN];
    for s in 0..slots.samples() {
        for oy in 0..out_h {
            let block = slots.positions(s, oy);
            for x0 in (0..out_w).step_by(COMPOSE_RUN) {
                let x1 = (x0 + COMPOSE_RUN).min(out_w);
                for (r, src) in sources_rows.iter().enumerate() {
                    planes.compose_run(src, s, oy * out_w + x0, &mut tmp[..x1 - x0]);
                    for (x, &v) in (x0..x1).zip(tmp.iter()) {
                        block[x * t + offset + r] = v;
                    }
                }
            }
        }
    }
}

/// Positions per run of [`compose`] into rows.
const COMPOSE_RUN: usize = 32;

impl PassResult {
    /// Folds `other` (the next shard's result) into `self`: the reduction every pass applies
    /// in shard order.
    pub fn combine(self, other: PassResult) -> Result<PassResult, Error> {
        self.combine_into(other, &mut Vec::new())
    }

    /// [`Self::combine`], handing `other`'s accumulator buffers to `spent` for reuse.
    fn combine_into(self, other: PassResult, spent: &mut Vec<GramBuffers>) -> Result<Self, Error> {
        Ok(match (self, other) {
            (PassResult::Fit(mut acc, rows), PassResult::Fit(mut other, more)) => {
                acc.combine(&mut other).map_err(|e| Error::core(STAGE, e))?;
                spent.push(other.into_buffers());
                let rows = match (rows, more) {
                    (Some(mut r), Some(m)) => {
                        r.x.extend_from_slice(&m.x);
                        r.t.extend_from_slice(&m.t);
                        Some(r)
                    }
                    (None, None) => None,
                    _ => return Err(stage_err("shards kept rows differently".into())),
                };
                PassResult::Fit(acc, rows)
            }
            (PassResult::BatchNorm(mut m), PassResult::BatchNorm(o)) => {
                m.merge(o.count, &o.mean, &o.m2);
                PassResult::BatchNorm(m)
            }
            _ => return Err(stage_err("shards returned different results".into())),
        })
    }
}

impl<'a> Streamer<'a> {
    /// A streamer over `n` samples of `data`, going on from the layer outputs the matching
    /// `recorded` (cut into the same shards), if it did.
    pub fn new(
        nets: Networks<'a>,
        params: StreamParams,
        data: DataSpec,
        n: usize,
        recorded: Option<RecordedTargets>,
    ) -> Self {
        let ranges = shard_ranges(n, params.shard_samples);
        let recorded = recorded.filter(|r| r.shard_ranges() == ranges.as_slice());
        let space = match &recorded {
            Some(r) => r.space().clone(),
            None => SpillSpace::new(params.memory_budget, params.spill_dir.clone()),
        };
        let shards = ranges
            .into_iter()
            .enumerate()
            .map(|(index, samples)| {
                Mutex::new(Shard {
                    index,
                    samples,
                    store: ActivationStore::new(space.clone()),
                })
            })
            .collect();
        let slots = (0..params.par.threads().max(1))
            .map(|_| Mutex::default())
            .collect();
        Self {
            nets,
            params,
            data,
            shards,
            space,
            slots,
            spent: Mutex::default(),
            recorded,
            frontier: [0; 3],
            samples: n,
        }
    }

    fn graph(&self, net: Net) -> &'a Graph {
        match net {
            Net::A | Net::B => self.nets.original,
            Net::M => &self.nets.merged.graph,
        }
    }

    /// Forgets everything stored for `net` (its frontier goes back to the input).
    pub fn reset(&mut self, net: Net) {
        let graph = self.graph(net);
        for shard in &self.shards {
            let mut s = shard.lock().expect("shard lock");
            for k in 0..graph.nodes().len() {
                s.store.release(net, k);
            }
        }
        self.frontier[net_index(net)] = 0;
    }

    /// The nodes of A and B (one graph) that `barrier` reads: its layers' outputs (the
    /// targets) and, for a fit on the original models' inputs, the layers' input.
    fn original_reads(&self, barrier: &Barrier) -> Vec<NodeId> {
        let merged = self.nets.merged;
        let Barrier::Fit { layers, sequential } = barrier else {
            return Vec::new();
        };
        let mut reads: Vec<NodeId> = layers
            .iter()
            .map(|&l| merged.source_node[merged.layers[l].node])
            .collect();
        if let (false, Some(&first)) = (*sequential, layers.first()) {
            let in_node = merged.graph.node(merged.layers[first].node).inputs[0];
            reads.push(merged.source_node[in_node]);
        }
        reads
    }

    /// Whether every node of A and B that `barrier` reads was recorded by the matching.
    fn recorded_reads(&self, barrier: &Barrier) -> bool {
        let reads = self.original_reads(barrier);
        let Some(r) = &self.recorded else {
            return false;
        };
        !reads.is_empty() && reads.iter().all(|&k| r.contains(k))
    }

    /// Per network, which nodes up to `from` a pass computing up to `to` and accumulating
    /// `barrier` reads: the inputs of the nodes it computes, and the barrier's own inputs
    /// (targets and layout inputs of A and B, the merged input of a sequential fit or of a
    /// batch-norm node).
    fn stored_reads(&self, barrier: &Barrier, from: [usize; 3], to: [usize; 3]) -> [Vec<bool>; 3] {
        let merged = self.nets.merged;
        let mut reads =
            [Net::A, Net::B, Net::M].map(|net| vec![false; self.graph(net).nodes().len()]);
        for (i, net) in [Net::A, Net::B, Net::M].into_iter().enumerate() {
            let graph = self.graph(net);
            for k in from[i] + 1..=to[i] {
                for &j in &graph.node(k).inputs {
                    reads[i][j] = true;
                }
            }
        }
        for k in self.original_reads(barrier) {
            reads[0][k] = true;
            reads[1][k] = true;
        }
        match barrier {
            Barrier::Fit {
                layers,
                sequential: true,
            } => {
                for &l in layers {
                    reads[2][merged.graph.node(merged.layers[l].node).inputs[0]] = true;
                }
            }
            Barrier::Fit { .. } => {}
            Barrier::BatchNorm { node } => reads[2][merged.graph.node(*node).inputs[0]] = true,
        }
        reads
    }

    /// Runs one pass accumulating `barrier`, with the merged network's current `m_weights`.
    /// `later` are the passes still to come: what they read of A and B stays stored even when
    /// this pass computes past it (layers reading one input share a pass, and a bottleneck's
    /// downsample comes after the block's other convs). Runs this rank's shards of `ranks`
    /// (see [`crate::ranks`]); every rank returns the same total.
    pub fn pass(
        &mut self,
        barrier: &Barrier,
        later: &[Barrier],
        m_weights: &Weights,
        ranks: &dyn Ranks,
    ) -> Result<PassResult, Error> {
        let merged = self.nets.merged;
        let pinned: BTreeSet<NodeId> = later.iter().flat_map(|b| self.original_reads(b)).collect();
        let mut keep = pinned.clone();
        keep.extend(self.original_reads(barrier));
        // Consumer lists, built once per graph (A and B share the original one).
        let (original, merged_consumers) =
            (self.nets.original.consumers(), merged.graph.consumers());
        let consumers = [&original[..], &original[..], &merged_consumers[..]];
        let mut target = self.frontier;
        let recorded = self.recorded_reads(barrier);
        match barrier {
            Barrier::Fit { layers, .. } if layers.is_empty() => {
                return Err(stage_err("a fit pass needs at least one layer".into()));
            }
            Barrier::Fit { layers, sequential } => {
                let src = layers
                    .iter()
                    .map(|&l| merged.source_node[merged.layers[l].node])
                    .max()
                    .unwrap_or(0);
                if !recorded {
                    target[0] = target[0].max(src);
                    target[0] =
                        leanest_frontier(self.nets.original, consumers[0], &pinned, target[0]);
                    target[1] = target[0];
                }
                if *sequential {
                    let first = layers.iter().map(|&l| merged.layers[l].node).min();
                    target[2] = target[2].max(first.unwrap_or(1) - 1);
                }
            }
            Barrier::BatchNorm { node } => {
                target[2] = target[2].max(node - 1);
            }
        }
        let needs = pass_needs(barrier, recorded);
        let from = self.frontier;
        let reads = self.stored_reads(barrier, from, target);
        let this = &*self;
        let span = PassSpan {
            from,
            to: target,
            consumers,
            keep: &keep,
            pinned: &pinned,
            reads: &reads,
            needs,
        };
        // This rank's shards, a wave at a time; every shard's result is folded in shard order,
        // whatever the number of ranks and threads.
        // Each worker thread binds the networks once per pass, not once per shard (binding
        // checks every weight).
        let forwards: Vec<Mutex<Forwards<'_>>> = (0..this.slots.len())
            .map(|_| Mutex::new([None, None, None]))
            .collect();
        let combined = fold_shards(
            ranks,
            this.params.par,
            this.shards.len(),
            |s, worker| {
                let mut shard = this.shards[s].lock().expect("shard lock");
                let mut bufs = this.slots[worker].lock().expect("slot lock");
                let mut fwds = forwards[worker].lock().expect("forward lock");
                this.run_shard(&mut shard, &mut bufs, &mut fwds, barrier, m_weights, &span)
            },
            |sum, next| {
                let mut spent = this.spent.lock().expect("spent lock");
                sum.combine_into(next, &mut spent)
            },
        )?;
        self.frontier = target;
        // Release what no later node reads.
        for net in [Net::A, Net::B, Net::M] {
            let i = net_index(net);
            let graph = self.graph(net);
            for shard in &self.shards {
                let mut sh = shard.lock().expect("shard lock");
                for (n, k) in sh.store.keys() {
                    let pinned = n != Net::M && pinned.contains(&k);
                    if n == net && !pinned && !live(graph, consumers[i], k, target[i]) {
                        sh.store.release(net, k);
                    }
                }
            }
        }
        Ok(combined)
    }
}
