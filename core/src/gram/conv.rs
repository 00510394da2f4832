//! The exact Gram and cross moments of convolution patches from per-lag channel products,
//! without unfolding the patches (im2col).
//!
//! For a stride-1 convolution with kernel `kh x kw` and zero padding `(ph, pw)` over
//! `C x H x W` maps, every output position `o` of every sample has a patch: column
//! `(c, ky, kx)` (index `(c * kh + ky) * kw + kx`, the im2col / im2row order) holds
//! `x[c, oy + ky - ph, ox + kx - pw]`, or zero where that falls in the padding. The patch Gram
//! `G = sum_o p_o p_o^T` has the entry
//!
//! ```text
//! G[(c, k), (c', k')] = sum_{o in O} x_c(o + k - p) x_c'(o + k' - p),
//! ```
//!
//! a cross-correlation of channels `c` and `c'` at the *lag* `d = k' - k`, summed over the
//! input positions `q = o + k - p` of the first tap. A 3 x 3 kernel has 25 lags, 13 up to
//! symmetry (`G` is symmetric, and the lag `-d` is the transpose of the lag `d`), against 81
//! tap pairs: at C channels and H x W positions the lags cost about `13 C^2 H W`
//! multiply-adds, the im2col SYRK `(9 C)^2 / 2 H W`.
//!
//! # Formulation
//!
//! Each sample batch is repacked once, centred (see below), into a buffer ordered
//! `[y][sample][x'][c]` with rows of `Ws = W + g` slots: the `g >= kw - 1` slots after each
//! map row, and one whole row of slots before and after the batch, hold zeros. In that order a
//! lag `(dy, dx)` is a constant offset `dy * N * Ws + dx` between slots, a shift in `x` that
//! leaves the map lands in a gap (zeros), and a run of consecutive map rows of all samples is
//! one contiguous range. So for one vertical lag `dy >= 0` the products of all horizontal lags
//! `dx` at once are *one* matrix product `A^T B`: `A` the slots of the rows (one row per slot,
//! `C` columns), `B` the same buffer read from the slot `dy * N * Ws + dx_min` on, with
//! `(dx, c')` as its `(2 kw - 1) C` columns (consecutive slots overlap by `C - 1` values, a
//! plain strided view). These products run unpacked on
//! [`rows_at_b`], whose register tiles fit the `C x (2 kw - 1) C`
//! outputs of few channels without padding them to the blocked GEMM's 12 x 32 tiles.
//!
//! The sum over `o in O` differs from the whole-map correlation only where the padding cuts
//! the patch: a first-tap position `q` counts for the tap `k` only if `q - k + p` is an output
//! position. For stride 1 every map row counts for every tap except at most `kh - 1 - ph` rows
//! at the top and the bottom (*border rows*), and likewise for columns. So the rows are cut
//! into bands -- each border row alone, and the interior rows as one band -- and every band's
//! product is accumulated separately, together with the products of each border column
//! within the band (a strided view, one slot per sample and row). The entry of a tap pair is
//! then the sum of the bands its first tap covers, minus, in each, the border columns it does
//! not cover: exact, and all inclusion decisions depend on the tap alone. Its cost over the
//! ideal lag count is the gap slots (`g / W`) and the border columns (`2 (kw - 1 - pw) / W`):
//! at 3 x 3 with padding 1 the whole kernel does about 2.8x / 2.6x / 2.4x fewer multiply-adds
//! than the im2col SYRK at 28 x 28 / 14 x 14 / 7 x 7 (BENCHMARKS.md has the count and timings).
//!
//! The cross moments `sum_o p_o t_o^T` against targets (one row per output position, as the
//! rows of im2row) need no border terms: per kernel row `ky` one product of the packed
//! targets (same slot order, zero in the gaps) against the packed input read at the tap's
//! offset with `(kx, c)` as columns covers every tap of the row, and positions outside the
//! output meet zero targets.
//!
//! The targets come as rows ([`ConvGram::push`]) or are written by the caller straight into
//! their slots ([`ConvGram::push_with`], [`TargetSlots`]): the merge composes them there from
//! the planes of A and B, without rows in between. Both check every value first and give the
//! same moments bit for bit.
//!
//! # Centring and accuracy
//!
//! As in [`GramAccumulator`], the products are of centred values in f32, at most
//! [`GramParams::block_samples`] slots per product, each folded into f64 totals at once. Each
//! channel is centred on one shift `s_c` (the mean of the first batch, rounded to f32) at its
//! map positions only: padding stays zero, so a patch column `(c, k)` is `u = x - s_c` where
//! the tap is inside the map and `0` where it is not. The uncentred moments follow in f64 from
//! per-position sums of the centred maps `M_c(y, x) = sum_samples u` (rectangle sums by
//! prefix sums) and the counts of rows where a tap, or both taps of a pair, are inside:
//! with `I_a` the indicator that column `a` is inside the map and `S_a` any other shift,
//!
//! ```text
//! sum (x_a - S_a)(x_b - S_b) = sum I_a I_b u_a u_b + s_b U_a|b - S_b U_a + s_a U_b|a - S_a U_b
//!                              + s_a s_b n_ab - s_a S_b n_a - S_a s_b n_b + S_a S_b n,
//! ```
//!
//! with `U_a = sum I_a u_a`, `U_a|b = sum I_a I_b u_a`, `n_a = sum I_a`, `n_ab = sum I_a I_b`.
//! [`ConvGram::add_to`] uses it to add the totals to a [`GramAccumulator`] centred on that
//! accumulator's shifts (`S`), exactly as if the im2row rows had been pushed into it; the
//! constant bias column, when asked for, is a column with `u = 0`, `s = 1`, `I = 1`.
//!
//! # Strided convolutions
//!
//! Not handled (the constructor takes no stride). With stride 2 the first-tap positions of a
//! tap are one of four phase classes, so a lag's products split by the phase of the tap: a
//! 3 x 3 kernel has 25 (lag, phase) classes against 45 tap pairs, at most 1.8x fewer
//! multiply-adds before the border terms, on layers that cost a quarter of a stride-1 layer
//! of the same input. In the merge of a CIFAR ResNet that is about 3% of the Gram work, so the
//! merge keeps im2row for strided layers.

mod slots;
mod totals;

pub use slots::TargetSlots;

use super::{GramAccumulator, GramError, GramParams, Operand};
use crate::linalg::{MatRef, Rows, all_within, first_outside, rows_at_b};

/// The geometry of a stride-1 convolution whose patch moments a [`ConvGram`] accumulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGramShape {
    /// Input channels `C`.
    pub channels: usize,
    /// Map height `H`.
    pub height: usize,
    /// Map width `W`.
    pub width: usize,
    /// Kernel `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Zero padding `[ph, pw]`.
    pub padding: [usize; 2],
    /// Target columns (0: the Gram only).
    pub targets: usize,
    /// Whether the patch rows end with a constant `1` column (a bias).
    pub bias: bool,
}

impl ConvGramShape {
    /// Output height `H + 2 ph - kh + 1` (0 when the kernel is larger than the padded map).
    pub fn out_h(&self) -> usize {
        (self.height + 2 * self.padding[0] + 1).saturating_sub(self.kernel[0])
    }

    /// Output width `W + 2 pw - kw + 1` (0 when the kernel is larger than the padded map).
    pub fn out_w(&self) -> usize {
        (self.width + 2 * self.padding[1] + 1).saturating_sub(self.kernel[1])
    }

    /// Output positions per sample: rows of the patch matrix per sample.
    pub fn positions(&self) -> usize {
        self.out_h() * self.out_w()
    }

    /// Patch columns `C * kh * kw`.
    pub fn patch_len(&self) -> usize {
        self.channels * self.kernel[0] * self.kernel[1]
    }

    /// Columns of the moments: the patch plus the bias column, if any.
    pub fn dim(&self) -> usize {
        self.patch_len() + usize::from(self.bias)
    }

    /// Input values per sample, `C * H * W`.
    pub fn input_len(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// Derived sizes: gaps, bands and border columns.
#[derive(Debug, Clone, Copy)]
struct Geo {
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    ph: usize,
    pw: usize,
    oh: usize,
    ow: usize,
    t: usize,
    bias: bool,
    /// Slots per packed map row, `W + gap`.
    ws: usize,
    /// Border rows at each end (at most `H`; all rows are bands of their own when `2 by >= H`).
    by: usize,
    /// Border columns at each end.
    bx: usize,
    bands: usize,
    border_cols: usize,
}

impl Geo {
    fn new(s: &ConvGramShape) -> Self {
        let [kh, kw] = s.kernel;
        let [ph, pw] = s.padding;
        let (h, w) = (s.height, s.width);
        let gap = (kw.saturating_sub(1))
            .max(pw)
            .max((2 * pw + 1).saturating_sub(kw));
        let by = kh.saturating_sub(1 + ph).min(h);
        let bx = kw.saturating_sub(1 + pw).min(w);
        let bands = if 2 * by >= h { h } else { 2 * by + 1 };
        let border_cols = if 2 * bx >= w { w } else { 2 * bx };
        Self {
            c: s.channels,
            h,
            w,
            kh,
            kw,
            ph,
            pw,
            oh: s.out_h(),
            ow: s.out_w(),
            t: s.targets,
            bias: s.bias,
            ws: w + gap,
            by,
            bx,
            bands,
            border_cols,
        }
    }

    fn kk(&self) -> usize {
        self.kh * self.kw
    }

    fn patch_len(&self) -> usize {
        self.c * self.kk()
    }

    fn dim(&self) -> usize {
        self.patch_len() + usize::from(self.bias)
    }

    /// Rows `[y0, y1)` of band `b`.
    fn band(&self, b: usize) -> (usize, usize) {
        if 2 * self.by >= self.h || b < self.by {
            (b, b + 1)
        } else if b == self.by {
            (self.by, self.h - self.by)
        } else {
            let y = self.h - self.by + (b - self.by - 1);
            (y, y + 1)
        }
    }

    /// Map column of border column `i`.
    fn border_col(&self, i: usize) -> usize {
        if 2 * self.bx >= self.w || i < self.bx {
            i
        } else {
            self.w - 2 * self.bx + i
        }
    }

    /// Horizontal lags of the vertical lag `dy`: `dx` in `0..kw` for `dy = 0` (the others
    /// are transposes), `-(kw - 1)..kw` otherwise.
    fn lag_blocks(&self, dy: usize) -> usize {
        if dy == 0 { self.kw } else { 2 * self.kw - 1 }
    }

    fn dx_min(&self, dy: usize) -> isize {
        if dy == 0 { 0 } else { 1 - self.kw as isize }
    }

    /// f64 values of one band's (or border column's) product at lag `dy`.
    fn lag_len(&self, dy: usize) -> usize {
        self.c * self.lag_blocks(dy) * self.c
    }

    /// Products per band: the band and its border columns.
    fn slots(&self) -> usize {
        1 + self.border_cols
    }

    /// Offset of the products of lag `dy` among the lag totals.
    fn lag_offset(&self, dy: usize) -> usize {
        let per = self.bands * self.slots() * self.c * self.c;
        if dy == 0 {
            0
        } else {
            per * (self.kw + (dy - 1) * (2 * self.kw - 1))
        }
    }

    /// Input rows covered by tap row `ky` (first-tap coordinates), `[lo, hi)` possibly empty.
    fn tap_rows(&self, ky: usize) -> (isize, isize) {
        let lo = ky as isize - self.ph as isize;
        (lo, lo + self.oh as isize)
    }

    fn tap_cols(&self, kx: usize) -> (isize, isize) {
        let lo = kx as isize - self.pw as isize;
        (lo, lo + self.ow as isize)
    }
}

/// Offsets of the f64 totals (and the f64 tables `add_to` builds) in the storage. Everything
/// before `prefix_u` is accumulated (zeroed by a reset); the tables after it are written before
/// they are read.
#[derive(Debug, Clone, Copy)]
struct Totals {
    lags: usize,
    cross: usize,
    map_u: usize,
    /// Per-position sums of the centred targets, position-major (`[oy][ox][t]`).
    map_t: usize,
    sq_t: usize,
    prefix_u: usize,
    prefix_t: usize,
    /// One tap pair's channel products (`C x C`, as stored: first tap's channel first).
    pair: usize,
    /// The products of one first tap `ka` with every tap `kb`, `[c][c'][kb]`: the row of
    /// patch column `(c, ka)` against the patch columns `(c', kb)`, in column order.
    pairs: usize,
    /// For the first tap `ka`: `sum I_ka I_kb u_(c, ka)`, `[c][kb]`.
    tap_u: usize,
    /// For the first tap `ka`: `sum I_ka I_kb u_(c', kb)`, `[c'][kb]` (patch column order).
    partner_u: usize,
    /// For the first tap `ka`: rows where taps `ka` and `kb` are both inside, per `kb`.
    pair_n: usize,
    /// `tap_u` and `pair_n` of one Gram row spread over its patch columns.
    row_u: usize,
    row_n: usize,
    /// The columns' `s`, `S`, `U` and `n` (module docs), four runs of `dim`.
    columns: usize,
    /// Per tap and target: the target sums over the positions where the tap is inside.
    tap_t: usize,
    /// Per target: the sum over all positions, and the shift difference to the accumulator's.
    all_t: usize,
    delta_t: usize,
    /// Eight f64 partial sums per channel of the maps that choose the shift.
    lanes: usize,
    len: usize,
}

impl Totals {
    fn new(g: &Geo) -> Self {
        let lags = 0;
        let cross = lags + g.lag_offset(g.kh);
        let map_u = cross + g.kh * g.kw * g.c * g.t;
        let map_t = map_u + g.c * g.h * g.w;
        let sq_t = map_t + g.t * g.oh * g.ow;
        let prefix_u = sq_t + g.t;
        let prefix_t = prefix_u + g.c * (g.h + 1) * (g.w + 1);
        let pair = prefix_t + g.t * (g.oh + 1) * (g.ow + 1);
        let pairs = pair + g.c * g.c;
        let tap_u = pairs + g.kk() * g.c * g.c;
        let partner_u = tap_u + g.c * g.kk();
        let pair_n = partner_u + g.patch_len();
        let row_u = pair_n + g.kk();
        let row_n = row_u + g.patch_len();
        let columns = row_n + g.patch_len();
        let tap_t = columns + 4 * g.dim();
        let all_t = tap_t + g.kk() * g.t;
        let delta_t = all_t + g.t;
        let lanes = delta_t + g.t;
        let len = lanes + 8 * g.c;
        Self {
            lags,
            cross,
            map_u,
            map_t,
            sq_t,
            prefix_u,
            prefix_t,
            pair,
            pairs,
            tap_u,
            partner_u,
            pair_n,
            row_u,
            row_n,
            columns,
            tap_t,
            all_t,
            delta_t,
            lanes,
            len,
        }
    }
}

/// Offsets of the f32 shifts, packed batch and product in the workspace.
#[derive(Debug, Clone, Copy)]
struct Work {
    shift_x: usize,
    shift_t: usize,
    xbuf: usize,
    tbuf: usize,
    prod: usize,
    len: usize,
}

impl Work {
    fn new(g: &Geo, max_samples: usize) -> Self {
        let shift_x = 0;
        let shift_t = shift_x + g.c;
        let xbuf = shift_t + g.t;
        let tbuf = xbuf + (g.h * max_samples + 2) * g.ws * g.c;
        let prod = tbuf + (g.oh * max_samples + 2) * g.ws * g.t;
        let wide = (2 * g.kw).saturating_sub(1) * g.c;
        // The products run unpacked (`rows_at_b`): no GEMM scratch.
        let len = prod + (g.c * wide).max(g.kw * g.c * g.t);
        Self {
            shift_x,
            shift_t,
            xbuf,
            tbuf,
            prod,
            len,
        }
    }
}

/// Streaming accumulator of the patch moments of a stride-1 convolution by lags (see the
/// module docs), over caller-owned storage `S` (f64) and workspace `W` (f32). Its totals go
/// into a [`GramAccumulator`] of the im2row rows with [`ConvGram::add_to`].
pub struct ConvGram<S, W> {
    shape: ConvGramShape,
    geo: Geo,
    params: GramParams,
    max_samples: usize,
    storage: S,
    workspace: W,
    totals: Totals,
    work: Work,
    /// Samples (maps) accumulated.
    samples: u64,
    shift_set: bool,
    /// Maps per batch the packed buffers were last laid out for (0: never). Packing writes
    /// only map slots, so with the same count the gaps and pads are still zero.
    packed_for: usize,
}

impl<S, W> core::fmt::Debug for ConvGram<S, W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ConvGram")
            .field("shape", &self.shape)
            .field("samples", &self.samples)
            .finish()
    }
}

#[cfg(feature = "alloc")]
impl ConvGram<alloc::vec::Vec<f64>, alloc::vec::Vec<f32>> {
    /// An accumulator that owns heap buffers of the right sizes.
    pub fn new_owned(
        shape: ConvGramShape,
        params: GramParams,
        max_samples: usize,
    ) -> Result<Self, GramError> {
        let storage = alloc::vec![0.0; Self::storage_len(&shape)];
        let workspace = alloc::vec![0.0; Self::workspace_len(&shape, max_samples, params)];
        Self::new(shape, params, max_samples, storage, workspace)
    }
}

fn mismatch(what: &'static str, expected: usize, found: usize) -> Result<(), GramError> {
    if expected == found {
        Ok(())
    } else {
        Err(GramError::ShapeMismatch {
            what,
            expected,
            found,
        })
    }
}

impl<S, W> ConvGram<S, W>
where
    S: AsRef<[f64]> + AsMut<[f64]>,
    W: AsRef<[f32]> + AsMut<[f32]>,
{
    /// f64 elements of storage for `shape`.
    pub fn storage_len(shape: &ConvGramShape) -> usize {
        Totals::new(&Geo::new(shape)).len
    }

    /// f32 elements of workspace for `shape` and batches of up to `max_samples` maps (larger
    /// pushes are taken in parts). The products run unpacked, so no part of it depends on
    /// the parameters (kept in the signature for callers that size for any accumulator).
    pub fn workspace_len(shape: &ConvGramShape, max_samples: usize, _params: GramParams) -> usize {
        Work::new(&Geo::new(shape), max_samples.max(1)).len
    }

    /// An empty accumulator over caller buffers (their contents are overwritten). The shape
    /// must have a kernel of at least 1 x 1 that fits the padded map.
    pub fn new(
        shape: ConvGramShape,
        params: GramParams,
        max_samples: usize,
        mut storage: S,
        mut workspace: W,
    ) -> Result<Self, GramError> {
        let params = GramParams {
            block_samples: params.block_samples.max(1),
            ..params
        };
        let max_samples = max_samples.max(1);
        if shape.kernel[0] == 0 || shape.kernel[1] == 0 {
            return Err(GramError::ShapeMismatch {
                what: "kernel size (at least 1 x 1)",
                expected: 1,
                found: 0,
            });
        }
        if shape.positions() == 0 {
            return Err(GramError::ShapeMismatch {
                what: "output positions (the kernel must fit the padded map)",
                expected: 1,
                found: 0,
            });
        }
        let geo = Geo::new(&shape);
        let totals = Totals::new(&geo);
        let work = Work::new(&geo, max_samples);
        let (slen, wlen) = (storage.as_ref().len(), workspace.as_ref().len());
        if slen < totals.len {
            mismatch("storage length", totals.len, slen)?;
        }
        if wlen < work.len {
            mismatch("workspace length", work.len, wlen)?;
        }
        storage.as_mut()[..totals.len].fill(0.0);
        workspace.as_mut()[..work.len].fill(0.0);
        Ok(Self {
            shape,
            geo,
            params,
            max_samples,
            storage,
            workspace,
            totals,
            work,
            samples: 0,
            shift_set: false,
            packed_for: 0,
        })
    }

    /// Forgets every sample and the shifts, as a new accumulator over the same buffers (the
    /// packed buffers keep their zero gaps, so the next push of as many maps as the last one
    /// skips laying them out again).
    pub fn reset(&mut self) {
        self.storage.as_mut()[..self.totals.prefix_u].fill(0.0);
        self.samples = 0;
        self.shift_set = false;
    }

    /// The geometry.
    pub fn shape(&self) -> ConvGramShape {
        self.shape
    }

    /// Most maps one product batch takes (larger pushes are taken in parts).
    pub fn max_samples(&self) -> usize {
        self.max_samples
    }

    /// Samples (maps) accumulated.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Patch rows accumulated: samples times output positions.
    pub fn count(&self) -> u64 {
        self.samples * self.shape.positions() as u64
    }

    /// The per-channel shift (zeros until set or chosen by the first push).
    pub fn channel_shift(&self) -> &[f32] {
        &self.workspace.as_ref()[self.work.shift_x..self.work.shift_x + self.geo.c]
    }

    /// The per-target shift.
    pub fn target_shift(&self) -> &[f32] {
        &self.workspace.as_ref()[self.work.shift_t..self.work.shift_t + self.geo.t]
    }

    /// Sets the centring shifts: one per channel (applied at map positions only) and one per
    /// target column. Only allowed before the first sample.
    pub fn set_shift(&mut self, channel: &[f32], target: &[f32]) -> Result<(), GramError> {
        if self.samples > 0 {
            return Err(GramError::ShiftAfterData);
        }
        mismatch("channel shift length", self.geo.c, channel.len())?;
        mismatch("target shift length", self.geo.t, target.len())?;
        for (operand, v) in [(Operand::Samples, channel), (Operand::Targets, target)] {
            if let Some(column) = v.iter().position(|v| !v.is_finite()) {
                return Err(GramError::NonFinite {
                    operand,
                    sample: 0,
                    column,
                });
            }
        }
        let w = self.work;
        let ws = self.workspace.as_mut();
        ws[w.shift_x..w.shift_x + channel.len()].copy_from_slice(channel);
        ws[w.shift_t..w.shift_t + target.len()].copy_from_slice(target);
        self.shift_set = true;
        Ok(())
    }

    /// The largest magnitude accepted, as [`GramAccumulator::value_limit`]: `(2 v)^2`,
    /// summed over a block, must stay below `f32::MAX`.
    pub fn value_limit(&self) -> f32 {
        libm::sqrtf(f32::MAX / self.params.block_samples as f32) / 2.0
    }

    /// Adds `samples` maps (`input`: `samples x C x H x W`, NCHW) and, when the shape has
    /// targets, their target rows `t` (`samples * positions x targets`, rows in the order
    /// `(sample, oy, ox)` as im2row's). Everything is checked before anything is counted;
    /// a bad value is reported at its im2row row and column, as [`GramAccumulator::push`]
    /// of the im2row rows would.
    pub fn push(
        &mut self,
        input: &[f32],
        samples: usize,
        t: Option<MatRef<'_, f32>>,
    ) -> Result<(), GramError> {
        let g = self.geo;
        let per = self.shape.input_len();
        mismatch(
            "length of the input maps (samples x C x H x W)",
            samples * per,
            input.len(),
        )?;
        let rows = samples * self.shape.positions();
        match t {
            Some(t) => {
                mismatch("columns of T", g.t, t.cols())?;
                mismatch("rows of T (samples x output positions)", rows, t.rows())?;
            }
            None => mismatch("columns of T (no T given)", g.t, 0)?,
        }
        let first = self.count();
        let sum_maps = if self.shift_set {
            0
        } else {
            samples.min(self.max_samples)
        };
        self.check_input(input, samples, first, sum_maps)?;
        if let Some(t) = t {
            let limit = self.value_limit();
            if let Some((r, column)) = first_outside(t, limit) {
                return Err(bad_value(
                    t.at(r, column),
                    Operand::Targets,
                    first + r as u64,
                    column,
                    limit,
                ));
            }
        }
        if samples == 0 {
            return Ok(());
        }
        if !self.shift_set {
            self.choose_shift(samples.min(self.max_samples), t);
        }
        let positions = self.shape.positions();
        for start in (0..samples).step_by(self.max_samples) {
            let n = (samples - start).min(self.max_samples);
            let maps = &input[start * per..(start + n) * per];
            let tb = t.map(|t| {
                t.submatrix(start * positions, 0, n * positions, g.t)
                    .expect("rows checked")
            });
            self.layout(n);
            self.pack_maps(maps, n);
            if let Some(tb) = tb {
                self.pack_targets(Some(tb), n);
            }
            self.lag_products(n);
            if tb.is_some() {
                self.cross_products(n);
            }
        }
        self.samples += samples as u64;
        Ok(())
    }

    /// Rejects a value outside the limit, naming the first im2row (row, column) holding it;
    /// adds the channels of the first `sum_maps` maps to the partial sums that choose the
    /// shift (`Totals::lanes`), map by map while it is in cache.
    fn check_input(
        &mut self,
        input: &[f32],
        samples: usize,
        first: u64,
        sum_maps: usize,
    ) -> Result<(), GramError> {
        let g = self.geo;
        let plane = g.h * g.w;
        if g.c * plane == 0 {
            return Ok(()); // no values
        }
        let limit = self.value_limit();
        let lanes = &mut self.storage.as_mut()[self.totals.lanes..][..8 * g.c];
        lanes.fill(0.0);
        let mut bad = None;
        'maps: for (i, sample) in input.chunks_exact(g.c * plane).take(samples).enumerate() {
            for (map, lanes) in sample.chunks_exact(plane).zip(lanes.chunks_exact_mut(8)) {
                if !all_within(map, limit) {
                    bad = Some(i);
                    break 'maps;
                }
                if i < sum_maps {
                    add_lanes(lanes, map);
                }
            }
        }
        match bad {
            Some(n) => self.locate_input(input, n, first),
            None => Ok(()),
        }
    }

    /// The error for the first value outside the limit in sample `n`, at its im2row row and
    /// column (`Ok` if no patch reads it).
    fn locate_input(&self, input: &[f32], n: usize, first: u64) -> Result<(), GramError> {
        let per = self.shape.input_len();
        let limit = self.value_limit();
        let g = self.geo;
        let map = &input[n * per..(n + 1) * per];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                for col in 0..g.patch_len() {
                    let (c, k) = (col / g.kk(), col % g.kk());
                    let iy = (oy + k / g.kw) as isize - g.ph as isize;
                    let ix = (ox + k % g.kw) as isize - g.pw as isize;
                    if iy < 0 || ix < 0 || iy as usize >= g.h || ix as usize >= g.w {
                        continue;
                    }
                    let v = map[(c * g.h + iy as usize) * g.w + ix as usize];
                    if v.is_nan() || v.abs() > limit {
                        let row = (n * g.oh + oy) * g.ow + ox;
                        return Err(bad_value(
                            v,
                            Operand::Samples,
                            first + row as u64,
                            col,
                            limit,
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Channel means over the map positions of the first `n` maps (from the partial sums
    /// [`Self::check_input`] left), and target means over their rows ([`super::column_means`]),
    /// rounded to f32.
    fn choose_shift(&mut self, n: usize, t: Option<MatRef<'_, f32>>) {
        let g = self.geo;
        let plane = g.h * g.w;
        let w = self.work;
        let ws = self.workspace.as_mut();
        let lanes = &self.storage.as_ref()[self.totals.lanes..][..8 * g.c];
        for (c, lanes) in lanes.chunks_exact(8).enumerate() {
            let s: f64 = lanes.iter().sum();
            ws[w.shift_x + c] = (s / (n * plane) as f64) as f32;
        }
        if let Some(t) = t {
            let rows = n * g.oh * g.ow;
            super::column_means(t, rows, &mut ws[w.shift_t..][..g.t]);
        }
        self.shift_set = true;
    }

    /// Lays the packed buffers out for batches of `n` maps: zeros everywhere (gaps and pads
    /// included) unless the last batch had as many maps (packing writes only map slots).
    fn layout(&mut self, n: usize) {
        if self.packed_for == n {
            return;
        }
        let (g, w) = (self.geo, self.work);
        let ws = self.workspace.as_mut();
        ws[w.xbuf..][..(g.h * n + 2) * g.ws * g.c].fill(0.0);
        ws[w.tbuf..][..(g.oh * n + 2) * g.ws * g.t].fill(0.0);
        self.packed_for = n;
    }

    /// Packs `n` maps (centred) into the slot order of the module docs, and adds the centred
    /// values to the per-position sums.
    fn pack_maps(&mut self, maps: &[f32], n: usize) {
        let g = self.geo;
        let (w, tl) = (self.work, self.totals);
        let ws = self.workspace.as_mut();
        let (shifts, rest) = ws.split_at_mut(w.xbuf);
        let xbuf = &mut rest[..(g.h * n + 2) * g.ws * g.c];
        let st = self.storage.as_mut();
        let shift_x = &shifts[w.shift_x..][..g.c];
        for i in 0..n {
            for y in 0..g.h {
                // The map row y of sample i: W slots of C values each.
                let base = (1 + y * n + i) * g.ws;
                let dst = &mut xbuf[base * g.c..(base + g.w) * g.c];
                for (c, &s) in shift_x.iter().enumerate() {
                    let src = &maps[((i * g.c + c) * g.h + y) * g.w..][..g.w];
                    let sums = &mut st[tl.map_u + (c * g.h + y) * g.w..][..g.w];
                    for ((cell, &v), m) in dst.chunks_exact_mut(g.c).zip(src).zip(sums) {
                        let u = v - s;
                        cell[c] = u;
                        *m += f64::from(u);
                    }
                }
            }
        }
    }

    /// Centres the targets of `n` maps into their slots (from the rows of `t`, or, without
    /// `t`, the values already in the slots), and adds them to the per-position sums and the
    /// sums of squares.
    fn pack_targets(&mut self, t: Option<MatRef<'_, f32>>, n: usize) {
        let g = self.geo;
        let (w, tl) = (self.work, self.totals);
        let ws = self.workspace.as_mut();
        let (head, rest) = ws.split_at_mut(w.tbuf);
        let shift_t = &head[w.shift_t..][..g.t];
        let tbuf = &mut rest[..(g.oh * n + 2) * g.ws * g.t];
        let st = self.storage.as_mut();
        let (map_t, rest) = st[tl.map_t..].split_at_mut(tl.sq_t - tl.map_t);
        let sq_t = &mut rest[..g.t];
        for i in 0..n {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let r = (i * g.oh + oy) * g.ow + ox;
                    let slot = ((1 + oy * n + i) * g.ws + ox) * g.t;
                    let dst = &mut tbuf[slot..slot + g.t];
                    // Position-major sums: one contiguous run of `t` per position.
                    let sums = &mut map_t[(oy * g.ow + ox) * g.t..][..g.t];
                    let centre = |(((d, m), q), &u): (((&mut f32, &mut f64), &mut f64), &f32),
                                  x: f32| {
                        let v = x - u;
                        *d = v;
                        *m += f64::from(v);
                        *q += f64::from(v) * f64::from(v);
                    };
                    let cells = dst.iter_mut().zip(sums.iter_mut()).zip(sq_t.iter_mut());
                    match t.map(|t| (t, t.row(r))) {
                        // In place: a loop the compiler vectorises.
                        None => cells.zip(shift_t).for_each(|c| {
                            let x = *c.0.0.0;
                            centre(c, x);
                        }),
                        // Contiguous rows (the merge's): vectorises too.
                        Some((_, Some(row))) => {
                            cells.zip(shift_t).zip(row).for_each(|(c, &x)| centre(c, x))
                        }
                        Some((t, None)) => cells
                            .zip(shift_t)
                            .enumerate()
                            .for_each(|(j, c)| centre(c, t.at(r, j))),
                    }
                }
            }
        }
    }

    /// The products of every vertical lag, band and border column for the packed batch.
    fn lag_products(&mut self, n: usize) {
        let g = self.geo;
        for dy in 0..g.kh.min(g.h) {
            for b in 0..g.bands {
                let (y0, y1) = g.band(b);
                let y1 = y1.min(g.h - dy);
                if y0 >= y1 {
                    continue;
                }
                let start = (1 + y0 * n) * g.ws;
                let dest = self.totals.lags + g.lag_offset(dy) + b * g.slots() * g.lag_len(dy);
                self.lag_product(dy, n, start, (y1 - y0) * n * g.ws, 1, dest);
                for i in 0..g.border_cols {
                    let dest = dest + (1 + i) * g.lag_len(dy);
                    let start = start + g.border_col(i);
                    self.lag_product(dy, n, start, (y1 - y0) * n, g.ws, dest);
                }
            }
        }
    }

    /// `totals[dest..] += A^T B` for the `rows` slots `start, start + step, ...` of the
    /// packed input (`A`, `C` columns) and the slots `dy * n * Ws + dx_min` further on (`B`,
    /// `(dx, c')` columns), in products of at most a block of slots each folded into f64.
    fn lag_product(
        &mut self,
        dy: usize,
        n: usize,
        start: usize,
        rows: usize,
        step: usize,
        dest: usize,
    ) {
        let g = self.geo;
        let w = self.work;
        let cols = g.lag_blocks(dy) * g.c;
        let offset = ((dy * n * g.ws) as isize + g.dx_min(dy)) as usize;
        let ws = self.workspace.as_mut();
        let (head, rest) = ws.split_at_mut(w.prod);
        let xbuf = &head[w.xbuf..w.tbuf];
        let prod = &mut rest[..w.len - w.prod];
        let prod = &mut prod[..g.c * cols];
        let block = self.params.block_samples;
        let store = self.storage.as_mut();
        for r0 in (0..rows).step_by(block) {
            let k = (rows - r0).min(block);
            let p0 = start + r0 * step;
            // The views fit: the packed buffer has a zero row of slots at each end (module docs).
            let a = Rows {
                data: &xbuf[p0 * g.c..],
                rows: k,
                cols: g.c,
                stride: step * g.c,
            };
            let b = Rows {
                data: &xbuf[(p0 + offset) * g.c..],
                rows: k,
                cols,
                stride: step * g.c,
            };
            prod.fill(0.0);
            rows_at_b(a, b, prod).expect("slots inside the packed batch");
            for (d, &v) in store[dest..dest + g.c * cols].iter_mut().zip(prod.iter()) {
                *d += f64::from(v);
            }
        }
    }

    /// The cross products of every kernel row for the packed batch.
    ///
    /// Each is computed transposed, `T^T X` (`targets x (kx, c)`), and added to the totals
    /// (`(kx, c) x targets`) transposed back: the vectors of [`rows_at_b`] then run along the
    /// `kw * C` patch columns rather than along the few targets (18 targets fill two 16-lane
    /// vectors to 56 %, 54 patch columns fill four to 84 %). Each entry is the same f32 sum in
    /// the same order either way.
    fn cross_products(&mut self, n: usize) {
        let g = self.geo;
        let w = self.work;
        let cols = g.kw * g.c;
        let block = self.params.block_samples;
        let ws = self.workspace.as_mut();
        let (head, rest) = ws.split_at_mut(w.prod);
        let (xbuf, tbuf) = (&head[w.xbuf..w.tbuf], &head[w.tbuf..w.prod]);
        let prod = &mut rest[..w.len - w.prod];
        let prod = &mut prod[..cols * g.t];
        let store = self.storage.as_mut();
        for ky in 0..g.kh {
            // Output rows whose tap row ky is inside the map.
            let oy0 = g.ph.saturating_sub(ky);
            let oy1 = g.oh.min((g.h + g.ph).saturating_sub(ky));
            if oy0 >= oy1 {
                continue;
            }
            let start = (1 + oy0 * n) * g.ws;
            let rows = (oy1 - oy0) * n * g.ws;
            let shift = (ky as isize - g.ph as isize) * (n * g.ws) as isize - g.pw as isize;
            let dest = self.totals.cross + ky * cols * g.t;
            for r0 in (0..rows).step_by(block) {
                let k = (rows - r0).min(block);
                let tp = start + r0;
                let xp = (tp as isize + shift) as usize;
                let x = Rows {
                    data: &xbuf[xp * g.c..],
                    rows: k,
                    cols,
                    stride: g.c,
                };
                let t = Rows {
                    data: &tbuf[tp * g.t..],
                    rows: k,
                    cols: g.t,
                    stride: g.t,
                };
                prod.fill(0.0);
                rows_at_b(t, x, prod).expect("slots inside the packed batch and targets");
                let totals = &mut store[dest..dest + cols * g.t];
                for (j, row) in prod.chunks_exact(cols).enumerate() {
                    for (i, &v) in row.iter().enumerate() {
                        totals[i * g.t + j] += f64::from(v);
                    }
                }
            }
        }
    }
}

/// Adds `map` to eight interleaved f64 partial sums: vectorises (a single running sum is one
/// dependent add per value), and the mean rounded to f32 is what one sum gives.
fn add_lanes(lanes: &mut [f64], map: &[f32]) {
    let mut chunks = map.chunks_exact(8);
    for chunk in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l += f64::from(v);
        }
    }
    for (l, &v) in lanes.iter_mut().zip(chunks.remainder()) {
        *l += f64::from(v);
    }
}

/// The error for value `v` at `sample`, `column` that failed the accumulator's check: out of
/// range when finite, else non-finite.
pub(super) fn bad_value(
    v: f32,
    operand: Operand,
    sample: u64,
    column: usize,
    limit: f32,
) -> GramError {
    if v.is_finite() {
        GramError::OutOfRange {
            operand,
            sample,
            column,
            limit,
        }
    } else {
        GramError::NonFinite {
            operand,
            sample,
            column,
        }
    }
}
