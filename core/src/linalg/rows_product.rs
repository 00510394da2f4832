//! `C += A^T B` for two operands stored as rows (`k x m` and `k x n`, unit column stride, any
//! row stride), without packing, for the small and narrow products of the lag-based
//! convolution Gram (`m`, `n` of a few dozen to a few hundred, `k` up to a block of samples).
//!
//! The blocked GEMM packs both operands into `MR x KC` / `KC x NR` panels and pads `m` and `n`
//! to its register tile: for the lag products of 16 channels (`16 x 80` outputs) the AVX-512
//! tile (12 x 32) pads them to `24 x 96`, so a third of its multiply-adds are wasted, and every
//! product re-packs its operands. Here the register tile is `R` output rows (broadcast values
//! of a row of `A`) by `V` vectors of output columns (loaded straight from a row of `B`), walked
//! once over all `k` rows, with `V` chosen from `n` so the tiles cover the output without
//! padding more than the last vector, and `R` as tall as the registers allow for that `V`
//! (AVX-512: 16 / 12 / 8 / 6 rows for 1-4 vectors; AVX2: 12 / 6 / 4 for 1-3), the rows
//! cut into tiles of even heights. The sums are f32, accumulated in order over `k` per lane,
//! so the tile shapes never change a result; [`rows_at_b_reference`] is the scalar twin (f64
//! sums).

use wide::f32x8;

use super::KernelError;
use crate::simd::lanes::F32Lanes;
use crate::simd::{self, Path};

/// An operand stored as `rows` rows of `cols` values, row `p` starting at `p * stride`.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    /// The values (at least `(rows - 1) * stride + cols` of them when `rows > 0`).
    pub data: &'a [f32],
    /// Rows (the shared dimension `k`).
    pub rows: usize,
    /// Values per row used.
    pub cols: usize,
    /// Distance between row starts (at least 1; rows may overlap).
    pub stride: usize,
}

impl Rows<'_> {
    fn check(&self, operands: &'static str) -> Result<(), KernelError> {
        let need = match self.rows {
            0 => 0,
            r => (r - 1) * self.stride + self.cols,
        };
        if self.data.len() < need || self.stride == 0 && self.rows > 1 {
            return Err(KernelError::ShapeMismatch {
                operands,
                left: (self.rows, self.cols),
                right: (self.data.len(), self.stride),
            });
        }
        Ok(())
    }
}

/// `out[i * b.cols + j] += sum_p a[p, i] * b[p, j]` for `i < a.cols`, `j < b.cols`, with
/// `out` row-major `a.cols x b.cols`, in f32 on the selected SIMD path.
pub fn rows_at_b(a: Rows<'_>, b: Rows<'_>, out: &mut [f32]) -> Result<(), KernelError> {
    a.check("rows of A")?;
    b.check("rows of B")?;
    if a.rows != b.rows {
        return Err(KernelError::ShapeMismatch {
            operands: "A^T B (rows of A vs rows of B)",
            left: (a.rows, a.cols),
            right: (b.rows, b.cols),
        });
    }
    if out.len() < a.cols * b.cols {
        return Err(KernelError::ShapeMismatch {
            operands: "output vs A^T B",
            left: (out.len(), 1),
            right: (a.cols, b.cols),
        });
    }
    product_on(simd::path(), a, b, out);
    Ok(())
}

/// Scalar twin of [`rows_at_b`]: each entry summed in f64 and added to `out` in f32. Panics if
/// an operand is too short; for tests, not for speed.
pub fn rows_at_b_reference(a: Rows<'_>, b: Rows<'_>, out: &mut [f32]) {
    for i in 0..a.cols {
        for j in 0..b.cols {
            let s: f64 = (0..a.rows)
                .map(|p| f64::from(a.data[p * a.stride + i]) * f64::from(b.data[p * b.stride + j]))
                .sum();
            let o = &mut out[i * b.cols + j];
            *o = (f64::from(*o) + s) as f32;
        }
    }
}

#[allow(unsafe_code)]
fn product_on(path: Path, a: Rows<'_>, b: Rows<'_>, out: &mut [f32]) {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the selected path is supported by this CPU.
        Path::Avx512 => unsafe { x86::product_avx512(a, b, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Path::Avx2 => unsafe { x86::product_avx2(a, b, out) },
        // SAFETY: `f32x8` runs everywhere.
        _ => unsafe { product_with::<f32x8, 2, PORTABLE>(a, b, out) },
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use core::arch::x86_64::{__m256, __m512};

    use super::{AVX2, AVX512, Rows, product_with};

    /// Up to 3 vectors of 8 columns (tiles of up to 12 accumulators of 16 ymm registers).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn product_avx2(a: Rows<'_>, b: Rows<'_>, out: &mut [f32]) {
        // SAFETY: runs only on the AVX2 path.
        unsafe { product_with::<__m256, 3, AVX2>(a, b, out) }
    }

    /// Up to 4 vectors of 16 columns (tiles of up to 24 accumulators of 32 zmm registers; a
    /// strip of 4 x 16 columns x `K_BLOCK` rows stays in L1, one of 5 did not).
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    pub(super) unsafe fn product_avx512(a: Rows<'_>, b: Rows<'_>, out: &mut [f32]) {
        // SAFETY: runs only on the AVX-512 path.
        unsafe { product_with::<__m512, 4, AVX512>(a, b, out) }
    }
}

/// Register budgets of the paths (the `P` parameter of the kernels).
const PORTABLE: u8 = 0;
const AVX2: u8 = 1;
const AVX512: u8 = 2;

/// The most output rows per tile of `v` vectors on path `P`: as many as the registers hold
/// besides the `v` loaded vectors and one broadcast (every step loads `v` vectors and
/// broadcasts `R` values of `A` for `R x v` multiply-adds, so tall tiles load less per
/// multiply-add). The portable path (`wide` on SSE2: two registers per vector) keeps 8 rows
/// for one or two vectors and 4 for more.
const fn max_rows<const P: u8>(v: usize) -> usize {
    match (P, v) {
        (AVX512, 1) => 16,
        (AVX512, 2) => 12,
        (AVX512, 3) => 8,
        (AVX512, 4) => 6,
        (AVX2, 1) => 12,
        (AVX2, 2) => 6,
        (_, 1 | 2) => 8,
        _ => 4,
    }
}

/// All tiles, in passes over [`K_BLOCK`] rows of the operands: the columns in strips of at
/// most `VMAX` vectors (the strips' widths as even as the vector count allows), each strip
/// over all output rows.
///
/// Safety: `S` is the vector type of the selected SIMD path.
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn product_with<S: F32Lanes, const VMAX: usize, const P: u8>(
    a: Rows<'_>,
    b: Rows<'_>,
    out: &mut [f32],
) {
    for k0 in (0..a.rows).step_by(K_BLOCK) {
        let rows = (a.rows - k0).min(K_BLOCK);
        let a = Rows {
            data: &a.data[k0 * a.stride..],
            rows,
            ..a
        };
        let b = Rows {
            data: &b.data[k0 * b.stride..],
            rows,
            ..b
        };
        // SAFETY: forwarded to the caller.
        unsafe { strips::<S, VMAX, P>(a, b, out) };
    }
}

/// Rows of the operands per pass over all tiles: a strip of `B` (up to 80 columns, rows
/// `stride` apart) and the rows of `A` stay in L1 / L2 while every tile of the strip uses them.
const K_BLOCK: usize = 128;

/// One pass of [`product_with`] over at most [`K_BLOCK`] rows.
///
/// Safety: `S` is the vector type of the selected SIMD path.
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn strips<S: F32Lanes, const VMAX: usize, const P: u8>(
    a: Rows<'_>,
    b: Rows<'_>,
    out: &mut [f32],
) {
    let vectors = b.cols.div_ceil(S::LANES);
    let strips = vectors.div_ceil(VMAX);
    let mut j0 = 0;
    for s in 0..strips {
        // Vectors of this strip: the remaining ones spread over the remaining strips.
        let left = vectors - j0 / S::LANES;
        let v = left.div_ceil(strips - s);
        let cols = (v * S::LANES).min(b.cols - j0);
        // SAFETY: forwarded to the caller.
        unsafe {
            match v {
                1 => strip::<S, 1>(a, b, j0, cols, max_rows::<P>(1), out),
                2 => strip::<S, 2>(a, b, j0, cols, max_rows::<P>(2), out),
                3 => strip::<S, 3>(a, b, j0, cols, max_rows::<P>(3), out),
                4 => strip::<S, 4>(a, b, j0, cols, max_rows::<P>(4), out),
                _ => strip::<S, 5>(a, b, j0, cols, max_rows::<P>(5), out),
            }
        }
        j0 += cols;
    }
}

/// Output columns `j0 .. j0 + cols` (at most `V` vectors) for every output row, in tiles of
/// at most `rmax` rows: as few tiles as that allows, their heights differing by at most one
/// (18 rows at most 8 high are 6 + 6 + 6, not 8 + 8 + 1 + 1: a short tile loads as much per
/// step as a tall one).
///
/// Safety: `S` is the vector type of the selected SIMD path; `rmax <= 16`, and `rmax <= 8`
/// when `V > 2`.
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn strip<S: F32Lanes, const V: usize>(
    a: Rows<'_>,
    b: Rows<'_>,
    j0: usize,
    cols: usize,
    rmax: usize,
    out: &mut [f32],
) {
    // Whole vectors are loaded even past `cols` (the extra lanes are dropped): only when the
    // last row still has them inside `b.data`; otherwise the scalar loop takes the strip.
    let k = a.rows;
    let fits = k == 0 || (k - 1) * b.stride + j0 + V * S::LANES <= b.data.len();
    let tiles = a.cols.div_ceil(rmax.max(1));
    let mut i0 = 0;
    for t in 0..tiles {
        let r = (a.cols - i0).div_ceil(tiles - t);
        if !fits {
            scalar_tile(a, b, i0..i0 + r, j0..j0 + cols, out);
            i0 += r;
            continue;
        }
        let args = (a, b, i0, j0, cols);
        macro_rules! heights {
            ($($n:literal)*) => {
                match r {
                    // SAFETY: forwarded to the caller; bounds as checked above, and
                    // `i0 + r <= a.cols`.
                    $($n => unsafe { tile::<S, $n, V>(args.0, args.1, args.2, args.3, args.4, out) },)*
                    _ => unreachable!("tile heights are at most rmax"),
                }
            };
        }
        if V <= 2 {
            heights!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
        } else {
            heights!(1 2 3 4 5 6 7 8);
        }
        i0 += r;
    }
}

/// The f32 sums of one tile in the order of [`tile`]'s lanes (for the rare strip whose whole
/// vectors would read past `b`).
fn scalar_tile(
    a: Rows<'_>,
    b: Rows<'_>,
    rows: core::ops::Range<usize>,
    cols: core::ops::Range<usize>,
    out: &mut [f32],
) {
    for i in rows {
        for j in cols.clone() {
            let mut s = 0.0f32;
            for p in 0..a.rows {
                s += a.data[p * a.stride + i] * b.data[p * b.stride + j];
            }
            out[i * b.cols + j] += s;
        }
    }
}

/// Rows `i0 .. i0 + R` of the output, columns `j0 .. j0 + cols` (`V` vectors): `R x V` vector
/// accumulators over all `k` rows of the operands, then added into `out`.
///
/// Safety: `S` is the vector type of the selected SIMD path; `i0 + R <= a.cols` and the
/// operands were checked ([`Rows::check`]), and `(k - 1) * b.stride + j0 + V * LANES` is
/// inside `b.data`.
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn tile<S: F32Lanes, const R: usize, const V: usize>(
    a: Rows<'_>,
    b: Rows<'_>,
    i0: usize,
    j0: usize,
    cols: usize,
    out: &mut [f32],
) {
    // SAFETY: every read of `a` is `p * a.stride + i0 + r` with `p < k`, `i0 + r < a.cols`,
    // inside the checked operand; every load of `b` ends at most at
    // `(k - 1) * b.stride + j0 + V * LANES`, inside `b.data` (the caller's condition).
    unsafe {
        let mut acc = [[S::zero(); V]; R];
        let (mut ap, mut bp) = (a.data.as_ptr().add(i0), b.data.as_ptr().add(j0));
        for _ in 0..a.rows {
            let bv: [S; V] = core::array::from_fn(|v| S::load_at(bp.add(v * S::LANES)));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let ar = S::splat(*ap.add(r));
                for v in 0..V {
                    acc_r[v] = ar.mul_add(bv[v], acc_r[v]);
                }
            }
            // Wrapping: after the last row the pointers may point past the operands (never read).
            ap = ap.wrapping_add(a.stride);
            bp = bp.wrapping_add(b.stride);
        }
        let mut lanes = [0.0f32; 16];
        for (r, acc_r) in acc.iter().enumerate() {
            let row = &mut out[(i0 + r) * b.cols + j0..][..cols];
            for (v, dst) in row.chunks_mut(S::LANES).enumerate() {
                acc_r[v].store(&mut lanes);
                for (d, &x) in dst.iter_mut().zip(&lanes) {
                    *d += x;
                }
            }
        }
    }
}
