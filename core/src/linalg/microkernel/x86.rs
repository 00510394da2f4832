//! The x86-64 micro-kernels: `core::arch` intrinsics in `#[target_feature]` functions, so they
//! compile to 256-bit / 512-bit FMAs whatever the crate's baseline target (`wide` picks its
//! implementation at compile time and would give SSE2 code here).
//!
//! Soundness: the blocked driver instantiates [`Avx2`] / [`Avx512`] only when
//! [`crate::simd::path`] returns that path, which [`crate::simd::set_path`] and the probe allow
//! only when the CPU and OS support it.
#![allow(unsafe_code)]

use core::arch::x86_64::{
    __m256, __m512, _MM_HINT_T0, _MM_HINT_T1, _mm_prefetch, _mm256_fmadd_ps, _mm256_loadu_ps,
    _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
};

use super::{Lines, MicroKernel, check_tile};

/// Runs `$body` for `$p` in `0..$kc` in increasing order, four steps
/// ([`super::STEPS_PER_LINE`]) per loop iteration: the rolled loop left the FMA ports idle about
/// 10 % of the time on a Sapphire Rapids core (a cache-resident 6 x 16 tile ran at 102-109
/// GFLOP/s rolled, 109-120 unrolled). Each accumulator still sees the same FMAs in the same
/// order. Each iteration also prefetches one of the `$next` lines into L2 while any are left,
/// and one line of the destination tile `$after` into L1.
macro_rules! unrolled {
    ($kc:expr, $next:expr, $after:expr, $p:ident => $body:block) => {{
        let kc: usize = $kc;
        let next: Lines = $next;
        let after: NextTile = $after;
        let mut $p = 0;
        let mut line = 0;
        let mut tile_line = 0;
        while $p + 4 <= kc {
            if line < next.count {
                // One line of the next slice per four steps.
                _mm_prefetch::<_MM_HINT_T1>(next.at.wrapping_add(line * 16).cast());
                line += 1;
            }
            if tile_line < after.lines() {
                _mm_prefetch::<_MM_HINT_T0>(after.line(tile_line).cast());
                tile_line += 1;
            }
            $body;
            $p += 1;
            $body;
            $p += 1;
            $body;
            $p += 1;
            $body;
            $p += 1;
        }
        while $p < kc {
            $body;
            $p += 1;
        }
    }};
}

/// The destination tile the driver most likely visits after this one: `MR` rows further down
/// the same column strip (the next register tile of the block, in the tile-major buffer and in a
/// strided `C` alike). Its lines are prefetched into L1 during this tile's loop: the final
/// read-modify-write then finds them there, where a burst of prefetches at the start of each
/// tile waited on the destination of large products (the Gram's tile-major buffer at d = 2304
/// is 21 MB; 3-6 % of a 65536 x 2304 `X^T X` on Sapphire Rapids). A hint: nothing is read
/// through it, and past the last tile it points at lines that may not exist.
#[derive(Clone, Copy)]
struct NextTile {
    /// First value of the tile (never read through).
    at: *const f32,
    /// Row stride.
    rs: usize,
    /// Rows.
    rows: usize,
    /// Values per row.
    cols: usize,
}

impl NextTile {
    /// The tile `rows` rows below the one at `c`.
    #[inline(always)]
    fn below(c: *const f32, rs: usize, rows: usize, cols: usize) -> Self {
        NextTile {
            at: c.wrapping_add(rows * rs),
            rs,
            rows,
            cols,
        }
    }

    /// Lines per row: one per 16 values, and one for the last value (a row that does not
    /// start on a line spans one more).
    #[inline(always)]
    fn row_lines(self) -> usize {
        self.cols / 16 + 1
    }

    /// Lines to prefetch.
    #[inline(always)]
    fn lines(self) -> usize {
        self.rows * self.row_lines()
    }

    /// An address in line `i`.
    #[inline(always)]
    fn line(self, i: usize) -> *const f32 {
        let (r, l) = (i / self.row_lines(), i % self.row_lines());
        self.at
            .wrapping_add(r * self.rs + (l * 16).min(self.cols - 1))
    }
}

/// The AVX2 + FMA kernel, 6 x 16 (12 of the 16 ymm registers accumulate).
pub(crate) struct Avx2;

// Same tile and blocking as the portable kernel (tuned for 32 KiB L1d / 512 KiB L2 cores).
impl MicroKernel for Avx2 {
    const MR: usize = 6;
    const NR: usize = 16;
    const MC: usize = 120;
    const KC: usize = 312;
    const NC: usize = 4080;

    #[inline]
    fn tile(a: &[f32], b: &[f32], kc: usize, alpha: f32, c: &mut [f32], rs: usize, next: Lines) {
        check_tile::<Self>(a, b, kc, c, rs);
        // SAFETY: lengths checked above; the driver uses this kernel only on the AVX2 path.
        unsafe { tile_avx2(a.as_ptr(), b.as_ptr(), kc, alpha, c.as_mut_ptr(), rs, next) }
    }

    #[inline]
    fn tile_left_half(
        a: &[f32],
        b: &[f32],
        kc: usize,
        alpha: f32,
        c: &mut [f32],
        rs: usize,
        next: Lines,
    ) {
        check_tile::<Self>(a, b, kc, c, rs);
        // SAFETY: lengths checked above (the half tile reads and writes less); the driver uses
        // this kernel only on the AVX2 path.
        unsafe { tile_left_half_avx2(a.as_ptr(), b.as_ptr(), kc, alpha, c.as_mut_ptr(), rs, next) }
    }
}

/// Asks for the `rows` rows of `cols` values of a destination tile (row stride `rs`) in L1
/// while the micro-kernel runs its `kc` loop: a large destination (the Gram's tile-major buffer
/// at d = 2304 is 21 MB) misses L2, and the final read-modify-write would otherwise wait for it.
/// Most tiles find their lines there already, prefetched by the tile before ([`NextTile`]);
/// this covers the first tile of each column strip. A prefetch is a hint: it changes no value.
///
/// # Safety
/// `c + r * rs + j` must lie in one allocation for `r < rows`, `j < cols`.
#[inline(always)]
unsafe fn prefetch_tile(c: *const f32, rows: usize, cols: usize, rs: usize) {
    for r in 0..rows {
        // SAFETY: the caller guarantees the rows are in bounds; values 0, 16, ..., and the
        // last cover every cache line of a row.
        unsafe {
            let row = c.add(r * rs);
            for j in (0..cols).step_by(16) {
                _mm_prefetch::<_MM_HINT_T0>(row.add(j).cast());
            }
            _mm_prefetch::<_MM_HINT_T0>(row.add(cols - 1).cast());
        }
    }
}

/// The AVX-512 kernel, 12 x 32 (24 of the 32 zmm registers accumulate; each step loads two
/// `B` vectors and broadcasts twelve `A` values for 24 FMAs).
pub(crate) struct Avx512;

// Sapphire Rapids: 48 KiB L1d, 2 MiB L2. A KC x NR micro-panel of B (KC = 256: 32 KiB) stays
// in L1 while the MR-row strips of the MC x KC block of A (240 KiB) stream from L2.
impl MicroKernel for Avx512 {
    const MR: usize = 12;
    const NR: usize = 32;
    const MC: usize = 240;
    const KC: usize = 248;
    const NC: usize = 4096;

    #[inline]
    fn tile(a: &[f32], b: &[f32], kc: usize, alpha: f32, c: &mut [f32], rs: usize, next: Lines) {
        check_tile::<Self>(a, b, kc, c, rs);
        // SAFETY: lengths checked above; the driver uses this kernel only on the AVX-512 path.
        unsafe { tile_avx512(a.as_ptr(), b.as_ptr(), kc, alpha, c.as_mut_ptr(), rs, next) }
    }

    #[inline]
    fn tile_left_half(
        a: &[f32],
        b: &[f32],
        kc: usize,
        alpha: f32,
        c: &mut [f32],
        rs: usize,
        next: Lines,
    ) {
        check_tile::<Self>(a, b, kc, c, rs);
        // SAFETY: lengths checked above (the half tile reads and writes less); the driver uses
        // this kernel only on the AVX-512 path.
        unsafe {
            tile_left_half_avx512(a.as_ptr(), b.as_ptr(), kc, alpha, c.as_mut_ptr(), rs, next)
        }
    }
}

/// Defines one register-tile kernel: `acc[r][v] += a[p * MR + r] * b[p * NR + v * LANES..]` for
/// `r < MR` rows and the first `VECS` vectors of each `NR`-value row of `B`, then
/// `c[r * rs + v * LANES..] += alpha * acc[r][v]`. A half tile (`VECS` half of `NR / LANES`)
/// runs the same per-value FMA sequence as the whole one. Every kernel prefetches the next
/// tile's destination ([`NextTile`]); `own_prefetch` also asks for its own at the start.
///
/// The generated function is `unsafe`: `a` must hold `kc * MR` values, `b` `kc * NR`, and `c`
/// `MR` rows of `NR` values at stride `rs`; the CPU must have `features`.
macro_rules! register_tile {
    (
        $(#[$doc:meta])*
        fn $name:ident, features $features:literal, $vec:ty, lanes $lanes:literal,
        tile $mr:literal x $nr:literal, vecs $vecs:literal, own_prefetch $own:literal,
        $zero:ident, $load:ident, $set1:ident, $fmadd:ident, $store:ident
    ) => {
        $(#[$doc])*
        #[target_feature(enable = $features)]
        unsafe fn $name(
            a: *const f32,
            b: *const f32,
            kc: usize,
            alpha: f32,
            c: *mut f32,
            rs: usize,
            next: Lines,
        ) {
            let mut acc: [[$vec; $vecs]; $mr] = [[$zero(); $vecs]; $mr];
            // SAFETY (whole body): the caller guarantees the lengths above.
            unsafe {
                if $own {
                    prefetch_tile(c, $mr, $nr, rs);
                }
                unrolled!(kc, next, NextTile::below(c.cast_const(), rs, $mr, $nr), p => {
                    let bp = b.add(p * $nr);
                    let mut bv: [$vec; $vecs] = [$zero(); $vecs];
                    for (v, bv_v) in bv.iter_mut().enumerate() {
                        *bv_v = $load(bp.add(v * $lanes));
                    }
                    let ap = a.add(p * $mr);
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let ar = $set1(*ap.add(r));
                        for (acc_rv, &bv_v) in acc_r.iter_mut().zip(&bv) {
                            *acc_rv = $fmadd(ar, bv_v, *acc_rv);
                        }
                    }
                });
                let al = $set1(alpha);
                for (r, acc_r) in acc.iter().enumerate() {
                    let row = c.add(r * rs);
                    for (v, &t) in acc_r.iter().enumerate() {
                        let dst = row.add(v * $lanes);
                        $store(dst, $fmadd(al, t, $load(dst)));
                    }
                }
            }
        }
    };
}

register_tile! {
    /// The AVX2 + FMA tile, 6 x 16.
    fn tile_avx2, features "avx2,fma", __m256, lanes 8, tile 6 x 16, vecs 2, own_prefetch true,
    _mm256_setzero_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_storeu_ps
}

register_tile! {
    /// The left 6 x 8 of [`tile_avx2`], with the same per-value FMA sequence.
    fn tile_left_half_avx2, features "avx2,fma", __m256, lanes 8, tile 6 x 16, vecs 1,
    own_prefetch false,
    _mm256_setzero_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_storeu_ps
}

register_tile! {
    /// The AVX-512 tile, 12 x 32.
    fn tile_avx512, features "avx512f,avx2,fma", __m512, lanes 16, tile 12 x 32, vecs 2,
    own_prefetch true,
    _mm512_setzero_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_storeu_ps
}

register_tile! {
    /// The left 12 x 16 of [`tile_avx512`], with the same per-value FMA sequence.
    fn tile_left_half_avx512, features "avx512f,avx2,fma", __m512, lanes 16, tile 12 x 32,
    vecs 1, own_prefetch false,
    _mm512_setzero_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_storeu_ps
}
