//! Moments of activations laid out as NCHW channel planes, without transposing them to rows.
//!
//! Matching statistics pair every output position of every sample of model A's layer with the
//! same position of model B's: the rows of the accumulator are the positions, its columns the
//! channels. The forward pass produces NCHW maps, where one channel of one sample is a
//! contiguous *plane* of positions, so the cross moment `sum_p a_i(p) b_j(p)` is a product of
//! two matrices whose shared dimension (positions) is contiguous in both. This module computes
//! it there, in two steps per chunk of at most [`PLANE_CHUNK`] positions (fewer when the
//! accumulator's block is shorter):
//!
//! - the chunk is copied once, centred on the accumulator's shifts, into caller scratch
//!   (channel-major rows of the chunk's positions, zero-padded to whole vectors), adding the
//!   per-channel sums and squares on the way;
//! - [`plane_cross`] multiplies the centred rows in register tiles of channels x channels
//!   (vectors along the positions, one horizontal sum per tile entry at the end of the chunk).
//!
//! As in the row-wise [`GramAccumulator::push`], the products are f32 sums over at most
//! [`GramParams::block_samples`](super::GramParams::block_samples) positions, folded into the
//! f64 totals at the end of each block, so the accuracy is the same; only the summation order
//! differs. [`plane_cross_reference`] is the scalar twin (f64 sums) the tests compare against.

use wide::f32x8;

use super::{GramAccumulator, GramError, Operand};
use crate::linalg::KernelError;
use crate::simd::lanes::F32Lanes;
use crate::simd::{self, Path};

/// Positions per centred chunk: the rows of A and B channels for one chunk stay in L2.
pub const PLANE_CHUNK: usize = 256;

/// Positions per centred chunk of an accumulator with blocks of `block` samples: a chunk
/// never spans more than a block, so short blocks need no long chunk scratch.
fn plane_chunk(block: usize) -> usize {
    block.next_multiple_of(16).min(PLANE_CHUNK)
}

/// Scratch elements the plane path of an accumulator with `dim` features, `targets` targets
/// and blocks of `block` samples needs for its centred chunks (part of its workspace).
pub(super) fn plane_scratch_len(dim: usize, targets: usize, block: usize) -> usize {
    (dim + targets) * plane_chunk(block)
}

/// `out[i * rows_b + j] += sum_{p < len} a[i * stride + p] * b[j * stride + p]` for the
/// `rows_a` rows of `a` and the `rows_b` rows of `b` (each row starting `stride` elements after
/// the previous one), in f32 on the selected SIMD path.
pub fn plane_cross(
    a: &[f32],
    rows_a: usize,
    b: &[f32],
    rows_b: usize,
    len: usize,
    stride: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_rows("rows of A", a.len(), rows_a, len, stride)?;
    check_rows("rows of B", b.len(), rows_b, len, stride)?;
    if out.len() < rows_a * rows_b {
        return Err(KernelError::ShapeMismatch {
            operands: "output vs A B^T",
            left: (out.len(), 1),
            right: (rows_a, rows_b),
        });
    }
    let args = Args {
        a,
        rows_a,
        b,
        rows_b,
        len,
        stride,
    };
    cross_on(simd::path(), args, out);
    Ok(())
}

/// Whether `rows` rows of `len` values, `stride` apart, fit in `have` elements.
fn check_rows(
    operands: &'static str,
    have: usize,
    rows: usize,
    len: usize,
    stride: usize,
) -> Result<(), KernelError> {
    let need = if rows == 0 {
        0
    } else {
        (rows - 1) * stride + len
    };
    if len > stride && rows > 1 || have < need {
        return Err(KernelError::ShapeMismatch {
            operands,
            left: (rows, len),
            right: (have, stride),
        });
    }
    Ok(())
}

/// Scalar twin of [`plane_cross`]: each entry summed in f64 and added to `out` in f32.
/// Panics if a buffer is too short; for tests, not for speed.
pub fn plane_cross_reference(
    a: &[f32],
    rows_a: usize,
    b: &[f32],
    rows_b: usize,
    len: usize,
    stride: usize,
    out: &mut [f32],
) {
    for i in 0..rows_a {
        for j in 0..rows_b {
            let ai = &a[i * stride..][..len];
            let bj = &b[j * stride..][..len];
            let s: f64 = ai
                .iter()
                .zip(bj)
                .map(|(&x, &y)| f64::from(x) * f64::from(y))
                .sum();
            out[i * rows_b + j] = (f64::from(out[i * rows_b + j]) + s) as f32;
        }
    }
}

/// The operands of one [`plane_cross`] call (checked).
#[derive(Clone, Copy)]
struct Args<'a> {
    a: &'a [f32],
    rows_a: usize,
    b: &'a [f32],
    rows_b: usize,
    len: usize,
    stride: usize,
}

#[allow(unsafe_code)]
fn cross_on(path: Path, args: Args<'_>, out: &mut [f32]) {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the selected path is supported by this CPU.
        Path::Avx512 => unsafe { x86::cross_avx512(args, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Path::Avx2 => unsafe { x86::cross_avx2(args, out) },
        // SAFETY: `f32x8` runs everywhere.
        _ => unsafe { cross_with::<f32x8, 2, 2>(args, out) },
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use core::arch::x86_64::{__m256, __m512};

    use super::{Args, cross_with};

    /// 2 x 4 tiles of 8 lanes: 8 accumulators of the 16 ymm registers.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn cross_avx2(args: Args<'_>, out: &mut [f32]) {
        // SAFETY: runs only on the AVX2 path.
        unsafe { cross_with::<__m256, 2, 4>(args, out) }
    }

    /// 4 x 4 tiles of 16 lanes: 16 accumulators of the 32 zmm registers.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    pub(super) unsafe fn cross_avx512(args: Args<'_>, out: &mut [f32]) {
        // SAFETY: runs only on the AVX-512 path.
        unsafe { cross_with::<__m512, 4, 4>(args, out) }
    }
}

/// All tiles: `R x C` where both fit, then single rows / columns at the edges.
///
/// Safety: `S` is the vector type of the selected SIMD path.
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn cross_with<S: F32Lanes, const R: usize, const C: usize>(args: Args<'_>, out: &mut [f32]) {
    let full_rows = args.rows_a / R * R;
    let full_cols = args.rows_b / C * C;
    // SAFETY: forwarded to the caller.
    unsafe {
        for i0 in (0..full_rows).step_by(R) {
            for j0 in (0..full_cols).step_by(C) {
                tile::<S, R, C>(&args, i0, j0, out);
            }
            for j0 in full_cols..args.rows_b {
                tile::<S, R, 1>(&args, i0, j0, out);
            }
        }
        for i0 in full_rows..args.rows_a {
            for j0 in (0..full_cols).step_by(C) {
                tile::<S, 1, C>(&args, i0, j0, out);
            }
            for j0 in full_cols..args.rows_b {
                tile::<S, 1, 1>(&args, i0, j0, out);
            }
        }
    }
}

/// Rows `i0 .. i0 + R` of A against rows `j0 .. j0 + C` of B: `R * C` vector accumulators
/// over the whole length, then one horizontal sum each (lanes in order), the scalar tail, and
/// the add into `out`.
///
/// Safety: `S` is the vector type of the selected SIMD path.
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn tile<S: F32Lanes, const R: usize, const C: usize>(
    args: &Args<'_>,
    i0: usize,
    j0: usize,
    out: &mut [f32],
) {
    let len = args.len;
    let a_rows: [&[f32]; R] = core::array::from_fn(|r| &args.a[(i0 + r) * args.stride..][..len]);
    let b_rows: [&[f32]; C] = core::array::from_fn(|c| &args.b[(j0 + c) * args.stride..][..len]);
    let vectors = len / S::LANES;
    let a_ptrs = a_rows.map(<[f32]>::as_ptr);
    let b_ptrs = b_rows.map(<[f32]>::as_ptr);
    // SAFETY: the caller runs on the path of `S`; every row is a checked slice of `len`
    // values and the unchecked loads read `p .. p + LANES` with `p + LANES <= len`.
    unsafe {
        let mut acc = [[S::zero(); C]; R];
        for v in 0..vectors {
            let p = v * S::LANES;
            let bv: [S; C] = core::array::from_fn(|c| S::load_at(b_ptrs[c].add(p)));
            for r in 0..R {
                let av = S::load_at(a_ptrs[r].add(p));
                for c in 0..C {
                    acc[r][c] = av.mul_add(bv[c], acc[r][c]);
                }
            }
        }
        let mut lanes = [0.0f32; 16];
        for r in 0..R {
            for c in 0..C {
                acc[r][c].store(&mut lanes);
                let mut s = lanes[..S::LANES].iter().sum::<f32>();
                for p in vectors * S::LANES..len {
                    s += a_rows[r][p] * b_rows[c][p];
                }
                out[(i0 + r) * args.rows_b + j0 + c] += s;
            }
        }
    }
}

impl<S, W> GramAccumulator<S, W>
where
    S: AsRef<[f64]> + AsMut<[f64]>,
    W: AsRef<[f32]> + AsMut<[f32]>,
{
    /// Adds `samples` samples given as NCHW planes: `x` holds `samples x dim x positions`
    /// values (sample, feature, position), `t` (required when the accumulator has targets)
    /// `samples x targets x positions`. Each position of each sample is one row, in the order
    /// `(sample, position)`: the result is that of [`Self::push`] with the rows laid out so,
    /// up to the f32 summation order. Checked like [`Self::push`] (the sample index of an
    /// error is the row's), and the pending block is folded first.
    pub fn push_planes(
        &mut self,
        x: &[f32],
        t: Option<&[f32]>,
        samples: usize,
        positions: usize,
    ) -> Result<(), GramError> {
        let rows = samples.saturating_mul(positions);
        self.check_len(
            "length of the X planes",
            rows.saturating_mul(self.dim),
            x.len(),
        )?;
        match t {
            Some(t) => self.check_len(
                "length of the T planes",
                rows.saturating_mul(self.targets),
                t.len(),
            )?,
            None => self.check_len("columns of T (no T given)", self.targets, 0)?,
        }
        let first = self.count();
        self.check_planes(x, self.dim, positions, Operand::Samples, first)?;
        if let Some(t) = t {
            self.check_planes(t, self.targets, positions, Operand::Targets, first)?;
        }
        if rows == 0 {
            return Ok(());
        }
        if !self.shift_set {
            self.choose_plane_shift(x, t, positions, rows.min(self.params.block_samples));
        }
        self.flush();
        let mut row = 0;
        while row < rows {
            let take = (rows - row).min(self.params.block_samples);
            self.push_plane_block(x, t, positions, row..row + take);
            row += take;
        }
        Ok(())
    }

    /// Rejects non-finite values and values beyond [`Self::value_limit`], naming the first in
    /// row order (sample, position, then channel), as [`Self::push`] does.
    fn check_planes(
        &self,
        planes: &[f32],
        channels: usize,
        positions: usize,
        operand: Operand,
        first: u64,
    ) -> Result<(), GramError> {
        let limit = self.value_limit();
        if crate::linalg::all_within(planes, limit) {
            return Ok(());
        }
        let bad = |v: f32| v.is_nan() || v.abs() > limit;
        let per_sample = channels * positions;
        for (s, sample) in planes.chunks_exact(per_sample.max(1)).enumerate() {
            let hit = sample
                .chunks_exact(positions.max(1))
                .enumerate()
                .filter_map(|(c, plane)| plane.iter().position(|&v| bad(v)).map(|p| (p, c)))
                .min();
            if let Some((p, column)) = hit {
                let row = (s * positions + p) as u64;
                let value = sample[column * positions + p];
                return Err(super::conv::bad_value(
                    value,
                    operand,
                    first + row,
                    column,
                    limit,
                ));
            }
        }
        Ok(())
    }

    /// Centres on the mean of the first `rows` rows (in row order), rounded to f32, as
    /// [`Self::push`] would choose it.
    fn choose_plane_shift(&mut self, x: &[f32], t: Option<&[f32]>, positions: usize, rows: usize) {
        // The first `rows` rows are whole samples and a first part of the next: per channel,
        // plane runs summed in eight f64 lanes (vectorises; the mean rounded to f32 is what a
        // single running sum gives).
        let mean = |planes: &[f32], channels: usize, c: usize| {
            let mut lanes = [0.0f64; 8];
            let mut r = 0;
            while r < rows {
                let run = positions.min(rows - r);
                let plane = &planes[((r / positions) * channels + c) * positions..][..run];
                let mut chunks = plane.chunks_exact(8);
                for chunk in &mut chunks {
                    for (l, &v) in lanes.iter_mut().zip(chunk) {
                        *l += f64::from(v);
                    }
                }
                for (l, &v) in lanes.iter_mut().zip(chunks.remainder()) {
                    *l += f64::from(v);
                }
                r += run;
            }
            (lanes.iter().sum::<f64>() / rows as f64) as f32
        };
        let (d, nt) = (self.dim, self.targets);
        let w = self.wlay;
        let ws = self.workspace.as_mut();
        for c in 0..d {
            ws[w.shift_x + c] = mean(x, d, c);
        }
        if let Some(t) = t {
            for c in 0..nt {
                ws[w.shift_t + c] = mean(t, nt, c);
            }
        }
        self.shift_set = true;
    }

    /// One block of rows (at most `block_samples`): chunk by chunk, centred into the packing
    /// scratch and multiplied in f32, then folded into the f64 totals.
    fn push_plane_block(
        &mut self,
        x: &[f32],
        t: Option<&[f32]>,
        positions: usize,
        rows: core::ops::Range<usize>,
    ) {
        let (d, nt) = (self.dim, self.targets);
        let (w, s) = (self.wlay, self.slay);
        let gram = self.params.gram;
        let ws = self.workspace.as_mut();
        let store = self.storage.as_mut();
        let (products, rest) = ws.split_at_mut(w.sum_x);
        let (sums32, rest) = rest.split_at_mut(w.shift_x - w.sum_x);
        let (shifts, pack) = rest.split_at_mut(w.pack - w.shift_x);
        let (sx, st) = shifts.split_at(d);
        let (g32, r32) = products.split_at_mut(w.cross);
        let (g32, r32) = (&mut g32[..if gram { d * d } else { 0 }], &mut r32[..d * nt]);
        g32.fill(0.0);
        r32.fill(0.0);
        sums32.fill(0.0);
        let chunk = plane_chunk(self.params.block_samples);
        let (xc, rest) = pack.split_at_mut(d * chunk);
        let tc = &mut rest[..nt * chunk];
        let (sum_x, sum_xx) = sums32.split_at_mut(d);
        let (sum_t, sum_tt) = store[s.sum_t..s.sum_tt + nt].split_at_mut(nt);
        let mut r0 = rows.start;
        while r0 < rows.end {
            let len = (rows.end - r0).min(chunk);
            let padded = len.next_multiple_of(16).min(chunk);
            simd::vectorised(
                #[inline(always)]
                || {
                    centre_chunk(x, d, positions, r0..r0 + len, sx, xc, chunk);
                    if let Some(t) = t {
                        centre_chunk(t, nt, positions, r0..r0 + len, st, tc, chunk);
                    }
                    for (c, row) in xc.chunks_exact_mut(chunk).enumerate() {
                        row[len..padded].fill(0.0);
                        let (s, q) = sum_and_squares(&row[..padded]);
                        sum_x[c] += s;
                        sum_xx[c] += q;
                    }
                    if t.is_some() {
                        for (c, row) in tc.chunks_exact_mut(chunk).enumerate() {
                            row[len..padded].fill(0.0);
                            let (s, q) = sum_and_squares(&row[..padded]);
                            sum_t[c] += f64::from(s);
                            sum_tt[c] += f64::from(q);
                        }
                    }
                },
            );
            let args = Args {
                a: xc,
                rows_a: d,
                b: tc,
                rows_b: nt,
                len: padded,
                stride: chunk,
            };
            if t.is_some() {
                cross_on(simd::path(), args, r32);
            }
            if gram {
                cross_on(
                    simd::path(),
                    Args {
                        b: xc,
                        rows_b: d,
                        ..args
                    },
                    g32,
                );
            }
            r0 += len;
        }
        for i in 0..d {
            if gram {
                let row = &mut store[s.gram + i * d..][..=i];
                for (o, &v) in row.iter_mut().zip(&g32[i * d..]) {
                    *o += f64::from(v);
                }
            }
            let row = &mut store[s.cross + i * nt..][..nt];
            for (o, &v) in row.iter_mut().zip(&r32[i * nt..]) {
                *o += f64::from(v);
            }
            store[s.sum_x + i] += f64::from(sum_x[i]);
            store[s.sum_xx + i] += f64::from(sum_xx[i]);
        }
        self.folded += rows.len() as u64;
    }
}

/// Copies `rows` (row `r` is position `r % positions` of sample `r / positions`) of the
/// `channels` planes, centred on `shift`, into `dst` (channel `c` at `c * chunk`).
#[inline(always)]
fn centre_chunk(
    planes: &[f32],
    channels: usize,
    positions: usize,
    rows: core::ops::Range<usize>,
    shift: &[f32],
    dst: &mut [f32],
    chunk: usize,
) {
    let mut r = rows.start;
    while r < rows.end {
        let (sample, p0) = (r / positions, r % positions);
        let run = (positions - p0).min(rows.end - r);
        let at = r - rows.start;
        let base = sample * channels * positions + p0;
        for (c, &sh) in shift.iter().enumerate().take(channels) {
            let src = &planes[base + c * positions..][..run];
            let out = &mut dst[c * chunk + at..][..run];
            for (o, &v) in out.iter_mut().zip(src) {
                *o = v - sh;
            }
        }
        r += run;
    }
}

/// Lanes of one set of partial sums of [`sum_and_squares`].
const SUM_LANES: usize = 16;
/// Independent sets of partial sums (four vectors' worth, so the adds do not wait on each
/// other's latency).
const SUM_SETS: usize = 4;

/// The sum and the sum of squares of `row` (a multiple of [`SUM_LANES`] long), in f32 with
/// `SUM_SETS x SUM_LANES` partial sums added in a fixed order at the end: element-wise over
/// the lanes, so it vectorises without reassociating and gives the same bits on every path.
#[inline(always)]
fn sum_and_squares(row: &[f32]) -> (f32, f32) {
    let mut sums = [[0.0f32; SUM_LANES]; SUM_SETS];
    let mut squares = [[0.0f32; SUM_LANES]; SUM_SETS];
    let mut wide = row.chunks_exact(SUM_LANES * SUM_SETS);
    for group in &mut wide {
        for ((s, q), chunk) in sums
            .iter_mut()
            .zip(squares.iter_mut())
            .zip(group.chunks_exact(SUM_LANES))
        {
            add_lanes(s, q, chunk);
        }
    }
    for (k, chunk) in wide.remainder().chunks_exact(SUM_LANES).enumerate() {
        add_lanes(&mut sums[k], &mut squares[k], chunk);
    }
    let total = |sets: &[[f32; SUM_LANES]; SUM_SETS]| -> f32 {
        let mut lanes = [0.0f32; SUM_LANES];
        for set in sets {
            for (l, &v) in lanes.iter_mut().zip(set) {
                *l += v;
            }
        }
        lanes.iter().sum()
    };
    (total(&sums), total(&squares))
}

/// `sums += chunk`, `squares += chunk^2`, lane by lane.
#[inline(always)]
fn add_lanes(sums: &mut [f32; SUM_LANES], squares: &mut [f32; SUM_LANES], chunk: &[f32]) {
    for ((s, q), &v) in sums.iter_mut().zip(squares.iter_mut()).zip(chunk) {
        *s += v;
        *q += v * v;
    }
}
