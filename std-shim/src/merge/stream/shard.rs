//! What one pass does to one shard: its chunks, in order, run forward through the networks the
//! pass needs, add to the shard's accumulators, and leave behind what later passes read.

use pleas_core::forward::Forward;
use pleas_core::forward::im2col::{ConvGeometry, im2row, im2row_len};
use pleas_core::gram::conv::ConvGramShape;
use pleas_core::gram::{GramError, GramParams};
use pleas_core::graph::{NodeId, Weights};
use pleas_core::linalg::MatRef;
use pleas_core::lstsq::LsForm;
use pleas_core::merge::sources::{RowSource, TargetRule, row_source};

use super::{
    Barrier, ChannelMoments, Dest, FitRows, PassResult, PassSpan, Planes, STAGE, Shard,
    SlotBuffers, Streamer, compose, compose_slots, lag_gram, lag_gram_shape, live, spare_bytes,
    stage_err, take_spare, trim_spares,
};
use crate::error::Error;
use crate::io::data::DataSource;
use crate::merge::layers::LayerKind;
use crate::merge::merged_model::{InputRule, MergedLayer};
use crate::merge::recorded::RecordedTargets;
use crate::merge::store::Net;
use crate::par::OwnedGram;

/// The networks in the order of a pass's per-network arrays.
const NETS: [Net; 3] = [Net::A, Net::B, Net::M];

/// One worker thread's forward passes of one pass, per network in [`NETS`] order (`None`: not
/// bound yet).
pub(super) type Forwards<'w> = [Option<Forward<'w>>; 3];

/// Activations of one chunk, per network, per node (`None`: not computed or not kept).
type ChunkActs = [Vec<Option<Vec<f32>>>; 3];

/// What a shard accumulates in one pass.
enum ShardSums<'m> {
    Fit(Box<FitSums<'m>>),
    BatchNorm(ChannelMoments),
}

/// A fit pass's sums over one shard.
struct FitSums<'m> {
    /// The fitted layers (one input, targets concatenated in this order).
    layers: Vec<&'m MergedLayer>,
    /// Whether inputs come from the merged network itself.
    sequential: bool,
    /// The Gram and cross moments.
    acc: OwnedGram,
    /// The rows themselves, when the pass keeps them for the sample-space solve.
    kept: Option<Box<FitRows>>,
    /// Whether this shard has pushed into the thread's lag-based accumulator yet.
    lag_used: bool,
    /// The first layer's window over its input.
    geom: ConvGeometry,
    /// Columns (the first layer's patch, and its bias column).
    d: usize,
    /// Target columns (every layer's outputs).
    t: usize,
    /// Whether the pass keeps its rows for the sample-space solve.
    keep_rows: bool,
    /// The lag-based accumulator's shape, for a stride-1 convolution that keeps no rows.
    lag_shape: Option<ConvGramShape>,
}

/// The target rows of one fitted layer: their sources, the planes they read, and the width
/// of those planes.
struct TargetSource<'c> {
    rows: Vec<RowSource>,
    planes: Planes<'c>,
    out_w: usize,
}

/// A chunk's layer outputs of A and B the matching recorded.
#[derive(Clone, Copy)]
struct Recorded<'r> {
    targets: &'r RecordedTargets,
    /// The shard's recorded values.
    values: &'r [f32],
    shard: usize,
    chunk: Chunk,
}

impl<'r> Recorded<'r> {
    /// `net`'s output of `node` for the chunk, if recorded.
    fn output(&self, net: Net, node: NodeId) -> Option<&'r [f32]> {
        let (s, c) = (self.shard, self.chunk);
        self.targets
            .values(self.values, s, net, node, c.start, c.count)
    }
}

/// The position of a chunk in its shard.
#[derive(Clone, Copy)]
struct Chunk {
    /// Index within the shard.
    index: usize,
    /// First sample.
    start: usize,
    /// Samples.
    count: usize,
}

impl Streamer<'_> {
    /// Runs `barrier`'s pass over one shard, chunk by chunk, with the merged network's current
    /// `m_weights`, and returns the shard's sums.
    ///
    /// `fwds` are the worker thread's forward passes of this pass (A, B, merged): the ones the
    /// pass needs are bound here on the thread's first shard (which checks their weights), and
    /// kept for its next shards.
    pub(super) fn run_shard<'w>(
        &'w self,
        shard: &mut Shard,
        bufs: &mut SlotBuffers,
        fwds: &mut Forwards<'w>,
        barrier: &Barrier,
        m_weights: &'w Weights,
        span: &PassSpan<'_>,
    ) -> Result<PassResult, Error> {
        let nets = &self.nets;
        let mut src = DataSource::open(&self.data)?;
        let per = src.sample_len();
        let mut sums = self.shard_sums(barrier)?;
        for (i, fwd) in fwds.iter_mut().enumerate() {
            if span.needs[i] && fwd.is_none() {
                *fwd = Some(match NETS[i] {
                    Net::A => Forward::new(nets.original, nets.a)?,
                    Net::B => Forward::new(nets.original, nets.b)?,
                    Net::M => Forward::new(&nets.merged.graph, m_weights)?,
                });
            }
        }
        let batch = self.params.batch.max(1);
        let range = shard.samples.clone();
        let mut chunk_bytes = 0;
        for (index, start) in range.clone().step_by(batch).enumerate() {
            let chunk = Chunk {
                index,
                start,
                count: batch.min(range.end - start),
            };
            let mut input = take_spare(&mut bufs.spare, chunk.count * per);
            input.resize(chunk.count * per, 0.0);
            src.read(start, chunk.count, &mut input)?;
            let acts = self.forward_chunk(shard, bufs, fwds, input, chunk, span)?;
            match &mut sums {
                ShardSums::Fit(fit) => self.add_fit_chunk(fit, bufs, &acts, shard.index, chunk)?,
                ShardSums::BatchNorm(moments) => {
                    let Barrier::BatchNorm { node } = barrier else {
                        unreachable!("batch-norm sums belong to a batch-norm pass")
                    };
                    self.add_batch_norm_chunk(moments, *node, &acts, chunk.count)?;
                }
            }
            self.keep_chunk(shard, bufs, acts, chunk, span)?;
            chunk_bytes = chunk_bytes.max(spare_bytes(&bufs.spare));
        }
        // A thread keeps the buffers one chunk of this pass circulated (the next shard needs
        // as many: freeing and making them anew costs page faults and zeroing, and fragments
        // the heap); they count against the memory budget before stored activations.
        trim_spares(&mut bufs.spare, chunk_bytes);
        let pooled = spare_bytes(&bufs.spare);
        self.space.repool(bufs.pooled, pooled);
        bufs.pooled = pooled;
        Ok(match sums {
            ShardSums::Fit(mut fit) => {
                if let (true, Some(lag)) = (fit.lag_used, bufs.lag.as_mut()) {
                    lag.add_to(&mut fit.acc)
                        .map_err(|e| Error::core(STAGE, e))?;
                }
                PassResult::Fit(fit.acc, fit.kept)
            }
            ShardSums::BatchNorm(moments) => PassResult::BatchNorm(moments),
        })
    }

    /// Empty sums for `barrier` over one shard. A fit whose patches go to the lag-based
    /// accumulator pushes no rows into its Gram accumulator (the lag totals are added once, at
    /// the end), so that one gets no block buffer: one sample per block (its results do not
    /// depend on the block size, and a 4096-row block buffer is megabytes per shard).
    fn shard_sums(&self, barrier: &Barrier) -> Result<ShardSums<'_>, Error> {
        let merged = self.nets.merged;
        Ok(match barrier {
            Barrier::Fit { layers, sequential } => {
                let layers: Vec<&MergedLayer> = layers.iter().map(|&l| &merged.layers[l]).collect();
                let Some(first) = layers.first() else {
                    return Err(stage_err("a fit pass needs at least one layer".into()));
                };
                let d = first.columns();
                let t: usize = layers.iter().map(|l| l.outputs).sum();
                let geom = self.fit_geometry(first)?;
                let keep_rows = self.keeps_rows(&geom, d);
                let lag_shape = lag_gram_shape(&geom, first.bias, keep_rows, t);
                let params = match lag_shape {
                    Some(_) => GramParams::with_block_samples(1),
                    None => GramParams::default(),
                };
                ShardSums::Fit(Box::new(FitSums {
                    layers,
                    sequential: *sequential,
                    acc: self.shard_gram(d, t, params)?,
                    kept: None,
                    lag_used: false,
                    geom,
                    d,
                    t,
                    keep_rows,
                    lag_shape,
                }))
            }
            Barrier::BatchNorm { .. } => ShardSums::BatchNorm(ChannelMoments::default()),
        })
    }

    /// A zeroed accumulator of `d` columns and `t` targets, in the buffers of a folded one
    /// when there is one (grown if needed), else in new ones.
    fn shard_gram(&self, d: usize, t: usize, params: GramParams) -> Result<OwnedGram, Error> {
        let spent = self.spent.lock().expect("spent lock").pop();
        let Some((mut storage, mut workspace)) = spent else {
            return Ok(OwnedGram::new_owned(d, t, params));
        };
        storage.resize(OwnedGram::storage_len_for(d, t, params), 0.0);
        workspace.resize(OwnedGram::workspace_len(d, t, params), 0.0);
        OwnedGram::new(d, t, params, storage, workspace).map_err(|e| Error::core(STAGE, e))
    }

    /// Whether a fit over `geom` with `d` columns keeps its rows for the sample-space solve:
    /// fewer rows in the whole pass than columns (the same decision in every shard).
    fn keeps_rows(&self, geom: &ConvGeometry, d: usize) -> bool {
        LsForm::Auto.dual(self.samples.saturating_mul(geom.positions()), d)
    }

    /// Runs one chunk forward through every network the pass runs (`span.needs`), from the
    /// nodes stored by earlier passes up to the span's end; buffers come from the thread's
    /// spares.
    fn forward_chunk(
        &self,
        shard: &mut Shard,
        bufs: &mut SlotBuffers,
        fwds: &mut Forwards<'_>,
        mut input: Vec<f32>,
        chunk: Chunk,
        span: &PassSpan<'_>,
    ) -> Result<ChunkActs, Error> {
        let mut acts: ChunkActs = NETS.map(|net| vec![None; self.graph(net).nodes().len()]);
        let runs: [bool; 3] = std::array::from_fn(|i| span.needs[i] && fwds[i].is_some());
        for (i, net) in NETS.into_iter().enumerate() {
            let (true, Some(fwd)) = (runs[i], fwds[i].as_mut()) else {
                continue;
            };
            let spare = &mut bufs.spare;
            // The last network that reads the input takes the buffer itself (a forward pass
            // may overwrite its input), the others a copy.
            acts[i][0] = Some(if runs[i + 1..].contains(&true) {
                super::spare_copy(spare, &input)
            } else {
                std::mem::take(&mut input)
            });
            for k in 1..=span.from[i] {
                if span.reads[i][k] && shard.store.contains(net, k) {
                    acts[i][k] = shard.store.take(net, k, chunk.index, spare)?;
                }
            }
            // The forward pass draws its buffers from the spares, and works in the thread's
            // one kernel scratch, while it runs.
            std::mem::swap(fwd.spare_buffers(), spare);
            std::mem::swap(fwd.scratch_buffer(), &mut bufs.scratch);
            let computed = self.forward_span(fwd, i, &mut acts[i], chunk.count, span);
            std::mem::swap(fwd.spare_buffers(), &mut bufs.spare);
            std::mem::swap(fwd.scratch_buffer(), &mut bufs.scratch);
            computed?;
        }
        Ok(acts)
    }

    /// Computes nodes `from + 1 ..= to` of network `i` (in [`NETS`] order) for one chunk. The forward pass may reuse an
    /// input's buffer in place when a node is its last reader; inputs of A and B this pass or
    /// a later one reads are copied first.
    fn forward_span(
        &self,
        fwd: &mut Forward<'_>,
        i: usize,
        acts: &mut [Option<Vec<f32>>],
        count: usize,
        span: &PassSpan<'_>,
    ) -> Result<(), Error> {
        let net = NETS[i];
        let consumers = span.consumers[i];
        for k in span.from[i] + 1..=span.to[i] {
            let kept: Vec<(NodeId, Vec<f32>)> = if net == Net::M {
                Vec::new()
            } else {
                self.graph(net)
                    .node(k)
                    .inputs
                    .iter()
                    .filter(|&&j| span.keep.contains(&j) && consumers[j].last() == Some(&k))
                    .filter_map(|&j| {
                        let b = acts[j].as_deref()?;
                        Some((j, super::spare_copy(fwd.spare_buffers(), b)))
                    })
                    .collect()
            };
            let out = fwd.compute_node(k, acts, count)?;
            acts[k] = Some(out);
            for (j, b) in kept {
                match acts[j] {
                    Some(_) => fwd.recycle(b),
                    None => acts[j] = Some(b),
                }
            }
        }
        Ok(())
    }

    /// Adds one chunk's patch rows and target rows to a fit's sums (the lag-based accumulator
    /// for stride-1 convolutions, its targets composed straight into its slots; else im2row
    /// rows and composed target rows into the Gram accumulator).
    fn add_fit_chunk(
        &self,
        fit: &mut FitSums<'_>,
        bufs: &mut SlotBuffers,
        acts: &ChunkActs,
        shard: usize,
        chunk: Chunk,
    ) -> Result<(), Error> {
        let merged = self.nets.merged;
        let first = fit.layers[0];
        self.compose_fit_input(fit, &mut bufs.x, acts, chunk.count)?;
        let xmap: &[f32] = if fit.sequential {
            let in_node = merged.graph.node(first.node).inputs[0];
            acts[2][in_node].as_deref().unwrap_or_default()
        } else {
            &bufs.x
        };
        let recorded = self.recorded.as_ref().map(|r| (r, r.shard(shard)));
        let recorded = recorded.as_ref().map(|(r, values)| Recorded {
            targets: r,
            values,
            shard,
            chunk,
        });
        let targets = self.target_sources(fit, acts, recorded)?;
        let pushed = match fit.lag_shape {
            Some(shape) => {
                let fresh = !std::mem::replace(&mut fit.lag_used, true);
                let batch = self.params.batch.max(1);
                let maps = &xmap[..chunk.count * shape.input_len()];
                lag_gram(&mut bufs.lag, fresh, shape, batch).and_then(|lag| {
                    lag.push_with(maps, chunk.count, |slots| {
                        let mut offset = 0;
                        for tg in &targets {
                            compose_slots(&tg.rows, tg.planes, tg.out_w, offset, slots);
                            offset += tg.rows.len();
                        }
                    })
                })
            }
            None => {
                let rows = (&mut bufs.xrows, &mut bufs.tbuf);
                push_rows(fit, rows, xmap, &targets, chunk.count)?
            }
        };
        pushed.map_err(|e| {
            Error::core_at(
                STAGE,
                format!("layer `{}`", merged.graph.node(first.node).name),
                e.with_sample_offset(chunk.start as u64),
            )
        })
    }

    /// The window of a fitted layer over its input (a linear layer: a 1 x 1 window).
    fn fit_geometry(&self, first: &MergedLayer) -> Result<ConvGeometry, Error> {
        let merged = self.nets.merged;
        let in_node = merged.graph.node(first.node).inputs[0];
        let in_shape = self.nets.original.node(merged.source_node[in_node]).shape;
        let (kernel, stride, padding) = match first.kind {
            LayerKind::Linear => ([1, 1], [1, 1], [0, 0]),
            LayerKind::Conv {
                kernel,
                stride,
                padding,
            } => (kernel, stride, padding),
        };
        let (c, h, w) = (first.in_channels, in_shape.h, in_shape.w);
        ConvGeometry::new(c, h, w, kernel, stride, padding)
            .ok_or_else(|| stage_err("window does not fit".into()))
    }

    /// Checks that the fit's input maps are there and, for a fit on the original models'
    /// inputs, composes them into `x` from A's and B's by the input's layout (NCHW).
    fn compose_fit_input(
        &self,
        fit: &FitSums<'_>,
        x: &mut Vec<f32>,
        acts: &ChunkActs,
        count: usize,
    ) -> Result<(), Error> {
        let (nets, merged) = (&self.nets, self.nets.merged);
        let first = fit.layers[0];
        let in_node = merged.graph.node(first.node).inputs[0];
        if fit.sequential {
            return match acts[2][in_node] {
                Some(_) => Ok(()),
                None => Err(stage_err(format!("merged input {in_node} missing"))),
            };
        }
        let src_in = merged.source_node[in_node];
        let (Some(ua), Some(ub)) = (acts[0][src_in].as_deref(), acts[1][src_in].as_deref()) else {
            return Err(stage_err(format!("input {src_in} of A or B missing")));
        };
        let rule = match first.input_rule {
            InputRule::Layout(g) => TargetRule::Layout(g),
            InputRule::Average => TargetRule::Average,
        };
        let cm = first.in_channels;
        let rows: Vec<RowSource> = (0..cm)
            .map(|r| row_source(rule, |g| &nets.layouts[g], r))
            .collect();
        let in_shape = nets.original.node(src_in).shape;
        let plane = in_shape.h * in_shape.w;
        x.resize(count * cm * plane, 0.0);
        let planes = Planes {
            a: ua,
            b: ub,
            channels: in_shape.c,
            plane,
        };
        compose(&rows, planes, count, Dest::Nchw, x);
        Ok(())
    }

    /// What the target rows of every fitted layer are composed from (their rows' sources'
    /// outputs in A and B), in the order of the target columns.
    fn target_sources<'c>(
        &self,
        fit: &FitSums<'_>,
        acts: &'c ChunkActs,
        recorded: Option<Recorded<'c>>,
    ) -> Result<Vec<TargetSource<'c>>, Error> {
        let (nets, merged) = (&self.nets, self.nets.merged);
        fit.layers
            .iter()
            .map(|l| {
                let sn = merged.source_node[l.node];
                let output = |i: usize, net: Net| {
                    acts[i][sn]
                        .as_deref()
                        .or_else(|| recorded.and_then(|r| r.output(net, sn)))
                };
                let (Some(va), Some(vb)) = (output(0, Net::A), output(1, Net::B)) else {
                    return Err(stage_err(format!("output {sn} of A or B missing")));
                };
                let oshape = nets.original.node(sn).shape;
                let rows = (0..l.outputs)
                    .map(|r| row_source(l.target_rule, |g| &nets.layouts[g], r))
                    .collect();
                let planes = Planes {
                    a: va,
                    b: vb,
                    channels: oshape.c,
                    plane: oshape.h * oshape.w,
                };
                Ok(TargetSource {
                    rows,
                    planes,
                    out_w: oshape.w,
                })
            })
            .collect()
    }

    /// Adds one chunk's per-channel moments of the input of merged batch-norm `node`.
    fn add_batch_norm_chunk(
        &self,
        moments: &mut ChannelMoments,
        node: NodeId,
        acts: &ChunkActs,
        count: usize,
    ) -> Result<(), Error> {
        let merged = self.nets.merged;
        let in_node = merged.graph.node(node).inputs[0];
        let shape = merged.graph.node(in_node).shape;
        let data = acts[2][in_node]
            .as_deref()
            .ok_or_else(|| stage_err(format!("batch-norm input {in_node} missing")))?;
        let (mean, m2) = channel_moments(data, count, shape.c, shape.h * shape.w);
        moments.merge((count * shape.h * shape.w) as f64, &mean, &m2);
        Ok(())
    }

    /// Stores what later passes read of one chunk; the other buffers (and those the store
    /// wrote to disk) become spares.
    fn keep_chunk(
        &self,
        shard: &mut Shard,
        bufs: &mut SlotBuffers,
        mut acts: ChunkActs,
        chunk: Chunk,
        span: &PassSpan<'_>,
    ) -> Result<(), Error> {
        for (i, net) in NETS.into_iter().enumerate() {
            if !span.needs[i] {
                continue;
            }
            let graph = self.graph(net);
            for k in 0..acts[i].len() {
                let pinned = net != Net::M && span.pinned.contains(&k);
                let Some(buf) = acts[i][k].take() else {
                    continue;
                };
                if k > 0 && (pinned || live(graph, span.consumers[i], k, span.to[i])) {
                    bufs.spare
                        .extend(shard.store.put(net, k, chunk.index, buf)?);
                } else {
                    bufs.spare.push(buf);
                }
            }
        }
        Ok(())
    }
}

/// Mean and centred sum of squares per channel of `count` NCHW maps of `c` channels of `plane`
/// positions, in f64 (two passes: the mean first).
fn channel_moments(data: &[f32], count: usize, c: usize, plane: usize) -> (Vec<f64>, Vec<f64>) {
    let mut mean = vec![0.0f64; c];
    let mut m2 = vec![0.0f64; c];
    let planes = |ch: usize| (0..count).map(move |smp| (smp * c + ch) * plane);
    for ch in 0..c {
        let s: f64 = planes(ch)
            .flat_map(|at| &data[at..at + plane])
            .map(|&v| f64::from(v))
            .sum();
        let mu = s / (count * plane) as f64;
        let q: f64 = planes(ch)
            .flat_map(|at| &data[at..at + plane])
            .map(|&v| {
                let dv = f64::from(v) - mu;
                dv * dv
            })
            .sum();
        mean[ch] = mu;
        m2[ch] = q;
    }
    (mean, m2)
}

/// The im2row route of [`Streamer::add_fit_chunk`]: the patch rows of `xmap` and the composed
/// target rows (in the buffers `rows`), kept when the pass keeps its rows, pushed into the Gram
/// accumulator.
fn push_rows(
    fit: &mut FitSums<'_>,
    (xrows, tbuf): (&mut Vec<f32>, &mut Vec<f32>),
    xmap: &[f32],
    targets: &[TargetSource<'_>],
    count: usize,
) -> Result<Result<(), GramError>, Error> {
    let (geom, d, t) = (fit.geom, fit.d, fit.t);
    let ncols = count * geom.positions();
    xrows.resize(im2row_len(&geom, count, d), 0.0);
    im2row(&geom, xmap, count, d, xrows);
    if fit.layers[0].bias {
        let k = geom.patch_len();
        for row in xrows.chunks_exact_mut(d) {
            row[k] = 1.0;
        }
    }
    tbuf.resize(t * ncols, 0.0);
    let mut offset = 0;
    for tg in targets {
        let dest = Dest::Rows { stride: t, offset };
        compose(&tg.rows, tg.planes, count, dest, tbuf);
        offset += tg.rows.len();
    }
    if fit.keep_rows {
        let r = fit.kept.get_or_insert_with(Box::default);
        r.x.extend_from_slice(&xrows[..ncols * d]);
        r.t.extend_from_slice(&tbuf[..ncols * t]);
    }
    let tv = MatRef::new(tbuf, ncols, t).map_err(|e| Error::core(STAGE, e))?;
    let xv = MatRef::new(xrows, ncols, d).map_err(|e| Error::core(STAGE, e))?;
    Ok(fit.acc.push(xv, Some(tv)))
}
