//! The register-blocked f32 micro-kernels: an `MR x NR` tile of `C` accumulated in vector
//! registers over one packed `kc` slice of `A` and `B`, one kernel per [`crate::simd::Path`].
//!
//! | path | tile | accumulators | vectors |
//! | --- | --- | --- | --- |
//! | portable | 6 x 16 | 12 | `wide::f32x8` |
//! | AVX2 + FMA | 6 x 16 | 12 of 16 ymm | `__m256` |
//! | AVX-512 | 12 x 32 | 24 of 32 zmm | `__m512` |
//!
//! Each kernel adds `alpha * tile` into a row-major destination with row stride `rs`; the
//! cache-block sizes (`MC`, `KC`, `NC`) are chosen per kernel (see each one's comment).

mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

pub(crate) use portable::Portable;
#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

/// SIMD width of the portable f32 micro-kernel, in lanes (`wide::f32x8`; benches report it).
pub const LANES: usize = 8;

/// Rows of the tile-major storage tile ([`super::blocked::Dest::Tiled`]): a multiple of every
/// kernel's `MR`, so any kernel's tiles nest in it and the layout does not depend on the path.
pub(crate) const TILE_ROWS: usize = 12;
/// Columns of the storage tile: a multiple of every kernel's `NR`.
pub(crate) const TILE_COLS: usize = 32;
/// The largest `MC` of any kernel (stack buffers of the packing code).
pub(crate) const MAX_MC: usize = 240;

/// `kc` steps per prefetched line in the x86 kernels' loops (their four-step unrolled loop issues
/// one per iteration), so a tile of `kc` steps prefetches at most `kc / STEPS_PER_LINE` lines.
pub(crate) const STEPS_PER_LINE: usize = 4;

/// Cache lines a micro-kernel may prefetch into L2 while it runs: `count` consecutive 64-byte
/// lines from `at` (a hint: nothing is read through `at`, and any address is allowed).
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the portable kernel ignores it
pub(crate) struct Lines {
    /// Address in the first line.
    pub(crate) at: *const f32,
    /// Lines to prefetch.
    pub(crate) count: usize,
}

impl Lines {
    /// No lines.
    pub(crate) const NONE: Lines = Lines {
        at: core::ptr::null(),
        count: 0,
    };
}

/// One register-blocked f32 micro-kernel with its cache-block sizes.
pub(crate) trait MicroKernel {
    /// Rows of the register tile (broadcast values of `A`); divides [`TILE_ROWS`] and `MC`.
    const MR: usize;
    /// Columns of the register tile (vectors of `B`); divides [`TILE_COLS`] and `NC`.
    const NR: usize;
    /// Rows of `A` per packed block (L2-resident).
    const MC: usize;
    /// Samples (the shared `k` dimension) per packed slice.
    const KC: usize;
    /// Columns of `B` per packed panel.
    const NC: usize;

    /// `c[r * rs + j] += alpha * sum_p a[p * MR + r] * b[p * NR + j]` for `r < MR`, `j < NR`,
    /// `p < kc`. Panics if a slice is too short.
    /// While it runs, the kernel may prefetch the cache lines of `next` into L2 (a hint).
    fn tile(a: &[f32], b: &[f32], kc: usize, alpha: f32, c: &mut [f32], rs: usize, next: Lines);

    /// [`Self::tile`] for the left `NR / 2` columns only (the right half of `c` may be left
    /// alone): the diagonal tiles of a lower-triangle product whose right half lies above the
    /// diagonal. Each value is summed exactly as [`Self::tile`] sums it. The default computes
    /// the whole tile.
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
        Self::tile(a, b, kc, alpha, c, rs, next);
    }
}

/// Panics unless the operands of one [`MicroKernel::tile`] call are long enough.
#[inline(always)]
pub(crate) fn check_tile<K: MicroKernel>(a: &[f32], b: &[f32], kc: usize, c: &[f32], rs: usize) {
    assert!(
        a.len() >= kc * K::MR && b.len() >= kc * K::NR && rs >= K::NR,
        "micro-kernel operands too short"
    );
    assert!(
        c.len() >= (K::MR - 1) * rs + K::NR,
        "micro-kernel destination too short"
    );
}
