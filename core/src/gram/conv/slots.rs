//! Targets written straight into the packed slots: [`ConvGram::push_with`] hands a writer the
//! slots of a batch's targets ([`TargetSlots`]) instead of taking target rows, so a caller that
//! composes its targets (from planes of other networks, say) writes them once, where the
//! products read them, rather than into rows that are then re-laid.

use super::{ConvGram, GramError, Operand, bad_value, mismatch};
use crate::linalg::all_within;

/// The target slots of one batch of `samples` maps, for a writer ([`ConvGram::push_with`]):
/// the targets of output position `(oy, ox)` of sample `i` (within the batch) are the `targets`
/// values `positions(i, oy)[ox * targets..][..targets]`, in the order of the target columns.
/// The writer must write every value of every position; the slots hold what the last batch
/// left there.
pub struct TargetSlots<'a> {
    data: &'a mut [f32],
    samples: usize,
    slots_per_row: usize,
    out_w: usize,
    targets: usize,
}

impl TargetSlots<'_> {
    /// Maps in the batch.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Target columns per position.
    pub fn targets(&self) -> usize {
        self.targets
    }

    /// Index of the first value of output row `oy` of sample `i` in the slot buffer.
    fn start(&self, i: usize, oy: usize) -> usize {
        (1 + oy * self.samples + i) * self.slots_per_row * self.targets
    }

    /// The targets of output row `oy` of sample `i`: `out_w` positions of `targets` values
    /// each, position after position. Panics when `i` or `oy` is out of range.
    pub fn positions(&mut self, i: usize, oy: usize) -> &mut [f32] {
        assert!(i < self.samples, "sample outside the batch");
        let at = self.start(i, oy);
        &mut self.data[at..at + self.out_w * self.targets]
    }
}

impl<S, W> ConvGram<S, W>
where
    S: AsRef<[f64]> + AsMut<[f64]>,
    W: AsRef<[f32]> + AsMut<[f32]>,
{
    /// [`ConvGram::push`] with targets written by `write` straight into their slots: adds
    /// `samples` maps (`input`: NCHW, at most [`ConvGram::max_samples`] of them) and the
    /// targets `write` puts in the [`TargetSlots`] it is given (once, for all the maps). As
    /// `push`, everything is checked before anything is counted, and a bad value is reported
    /// at its im2row row and column; the accumulated moments are those `push` of the same
    /// targets as rows gives, bit for bit.
    pub fn push_with(
        &mut self,
        input: &[f32],
        samples: usize,
        write: impl FnOnce(&mut TargetSlots<'_>),
    ) -> Result<(), GramError> {
        let g = self.geo;
        mismatch(
            "length of the input maps (samples x C x H x W)",
            samples * self.shape.input_len(),
            input.len(),
        )?;
        if samples > self.max_samples {
            mismatch(
                "samples of one push_with (at most max_samples)",
                self.max_samples,
                samples,
            )?;
        }
        let first = self.count();
        let sum_maps = if self.shift_set { 0 } else { samples };
        self.check_input(input, samples, first, sum_maps)?;
        if samples == 0 {
            return Ok(());
        }
        self.layout(samples);
        let w = self.work;
        let ws = self.workspace.as_mut();
        write(&mut TargetSlots {
            data: &mut ws[w.tbuf..w.prod],
            samples,
            slots_per_row: g.ws,
            out_w: g.ow,
            targets: g.t,
        });
        self.check_slot_targets(samples, first, !self.shift_set)?;
        if !self.shift_set {
            self.choose_shift(samples, None);
            self.choose_slot_target_shift(samples);
        }
        self.pack_maps(input, samples);
        if g.t > 0 {
            self.pack_targets(None, samples);
        }
        self.lag_products(samples);
        if g.t > 0 {
            self.cross_products(samples);
        }
        self.samples += samples as u64;
        Ok(())
    }

    /// Rejects a target outside the limit in the slots of `n` maps, naming the first one in
    /// row order (sample, output row, output column) as the target row `first + row`; with
    /// `sum`, adds each column over the rows in row order (as [`ConvGram::push`] sums target
    /// rows for the shift) into `Totals::all_t`, an output row at a time while it is in cache.
    fn check_slot_targets(&mut self, n: usize, first: u64, sum: bool) -> Result<(), GramError> {
        let (g, w, tl) = (self.geo, self.work, self.totals);
        if g.t == 0 {
            return Ok(());
        }
        let limit = self.value_limit();
        let sums = &mut self.storage.as_mut()[tl.all_t..][..g.t];
        sums.fill(0.0);
        let tbuf = &self.workspace.as_ref()[w.tbuf..w.prod];
        for i in 0..n {
            for oy in 0..g.oh {
                let at = (1 + oy * n + i) * g.ws * g.t;
                let run = &tbuf[at..at + g.ow * g.t];
                if !all_within(run, limit) {
                    let k = run
                        .iter()
                        .position(|v| v.is_nan() || v.abs() > limit)
                        .expect("a value outside the limit");
                    let row = (i * g.oh + oy) * g.ow + k / g.t;
                    return Err(bad_value(
                        run[k],
                        Operand::Targets,
                        first + row as u64,
                        k % g.t,
                        limit,
                    ));
                }
                if sum {
                    for row in run.chunks_exact(g.t) {
                        for (s, &v) in sums.iter_mut().zip(row) {
                            *s += f64::from(v);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The target shift from the column sums [`Self::check_slot_targets`] left for `n` maps:
    /// each column's mean, rounded to f32.
    fn choose_slot_target_shift(&mut self, n: usize) {
        let (g, w, tl) = (self.geo, self.work, self.totals);
        let sums = &self.storage.as_ref()[tl.all_t..][..g.t];
        let rows = (n * g.oh * g.ow) as f64;
        let shift = &mut self.workspace.as_mut()[w.shift_t..][..g.t];
        for (shift, s) in shift.iter_mut().zip(sums) {
            *shift = (s / rows) as f32;
        }
    }
}
