//! The host's [`PassSource`]: the sharded, threaded, spilling streamer of [`stream`](super::stream)
//! behind the core's pass contract.
//!
//! The least-squares stage asks it for each scheduled pass (a fit of the layers that share an
//! input, or the batch-norm statistics of one node) and receives the totals in its own buffers:
//! the dense Gram, the cross moments and the targets' sums of squares of a fit (and its rows,
//! when it has fewer rows than columns and is solved in sample space), or the channel moments.
//! The streamer works in shards of [`SHARD_SAMPLES`](super::settings::SHARD_SAMPLES) samples
//! folded in shard order (any thread count, any number of ranks, the same bits) and keeps the
//! activations later passes read, spilling them to disk beyond the memory budget; so it writes
//! totals into the (zeroed) buffers and needs no scratch from the caller.
//!
//! The matching statistics are not a pass of this source: the host accumulates them with a
//! centring shift and reads the similarity from the accumulator
//! ([`activation_stats`](super::activation_stats)), which raw sums would not reproduce.

use pleas_core::graph::Weights;
use pleas_core::linalg::MatMut;
use pleas_core::merge::pass::{
    ChannelMoments as ChannelOut, FitMoments, GramOut, InputForm, Moments, Pass, PassSource,
};

use super::prepare::err;
use super::store::Net;
use super::stream::{Barrier, ChannelMoments, FitRows, PassResult, Streamer};
use crate::error::Error;
use crate::par::OwnedGram;
use crate::ranks::Ranks;

/// The merge step the passes belong to, in errors.
const STAGE: &str = "least squares";

/// The host's pass source over a schedule of passes.
pub(crate) struct HostSource<'a> {
    streamer: Streamer<'a>,
    schedule: Vec<Barrier>,
    ranks: &'a dyn Ranks,
}

impl<'a> HostSource<'a> {
    /// The source running the passes of `schedule` (in order: each pass keeps what the later
    /// ones read) through `streamer`.
    pub(crate) fn new(
        streamer: Streamer<'a>,
        schedule: Vec<Barrier>,
        ranks: &'a dyn Ranks,
    ) -> Self {
        Self {
            streamer,
            schedule,
            ranks,
        }
    }

    /// Drops what the streamer keeps of network `net` (it is not read again).
    pub(crate) fn reset(&mut self, net: Net) {
        self.streamer.reset(net);
    }

    /// Runs the same streamer over another schedule from now on.
    pub(crate) fn set_schedule(&mut self, schedule: Vec<Barrier>) {
        self.schedule = schedule;
    }

    /// The position of `pass` in the schedule.
    fn position(&self, pass: &Pass<'_>) -> Result<usize, Error> {
        self.schedule
            .iter()
            .position(|b| match (b, pass) {
                (Barrier::Fit { layers, sequential }, Pass::Fit(p)) => {
                    layers.as_slice() == p.layers && *sequential == (p.input == InputForm::Merged)
                }
                (Barrier::BatchNorm { node }, Pass::Channels { node: n }) => node == n,
                _ => false,
            })
            .ok_or_else(|| err(STAGE, "a pass that is not in the schedule"))
    }
}

/// Writes a fit's totals into the wanted parts of `m`.
fn write_fit(
    acc: &mut OwnedGram,
    rows: Option<&FitRows>,
    m: &mut FitMoments<'_>,
) -> Result<(), Error> {
    let (d, t) = (acc.dim(), acc.targets());
    let view = |e| Error::core(STAGE, e);
    if let GramOut::Dense(g) = &mut m.gram {
        let g = MatMut::new(g, d, d).map_err(view)?;
        acc.write_gram(g).map_err(|e| Error::core(STAGE, e))?;
    }
    if let Some(r) = m.cross.as_deref_mut() {
        let r = MatMut::new(r, d, t).map_err(view)?;
        acc.write_cross(r).map_err(|e| Error::core(STAGE, e))?;
    }
    if let Some(tt) = m.target_sq_sums.as_deref_mut() {
        acc.write_sum_tt(tt).map_err(|e| Error::core(STAGE, e))?;
    }
    for (out, kept) in [
        (m.inputs.as_deref_mut(), rows.map(|r| &r.x)),
        (m.targets.as_deref_mut(), rows.map(|r| &r.t)),
    ] {
        match (out, kept) {
            (Some(out), Some(kept)) if out.len() == kept.len() => {
                for (o, &v) in out.iter_mut().zip(kept) {
                    *o = f64::from(v);
                }
            }
            (Some(_), _) => return Err(err(STAGE, "the pass kept no rows of the asked size")),
            (None, _) => {}
        }
    }
    Ok(())
}

/// Writes channel moments into `m`.
fn write_channels(c: &ChannelMoments, m: &mut ChannelOut<'_>) -> Result<(), Error> {
    if m.mean.len() != c.mean.len() || m.m2.len() != c.m2.len() {
        return Err(err(STAGE, "channel moments of the wrong width"));
    }
    *m.count = c.count;
    m.mean.copy_from_slice(&c.mean);
    m.m2.copy_from_slice(&c.m2);
    Ok(())
}

impl PassSource for HostSource<'_> {
    type Weights = Weights;
    type Error = Error;

    /// The host's source allocates its own buffers.
    fn scratch_len(&self, _pass: &Pass<'_>) -> usize {
        0
    }

    fn run(
        &mut self,
        pass: &Pass<'_>,
        weights: &Weights,
        moments: &mut Moments<'_>,
        _scratch: &mut [f64],
    ) -> Result<(), Error> {
        let i = self.position(pass)?;
        let (barrier, later) = (&self.schedule[i], &self.schedule[i + 1..]);
        match (
            self.streamer.pass(barrier, later, weights, self.ranks)?,
            moments,
        ) {
            (PassResult::Fit(mut acc, rows), Moments::Fit(m)) => {
                write_fit(&mut acc, rows.as_deref(), m)
            }
            (PassResult::BatchNorm(c), Moments::Channels(m)) => write_channels(&c, m),
            _ => Err(err(STAGE, "pass returned the wrong result")),
        }
    }
}
