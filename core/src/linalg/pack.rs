//! Packing of operand panels into the contiguous strip layout the micro-kernel reads.
//!
//! `A` panels are cut into strips of the micro-kernel's `MR` rows stored k-major (for each `p`,
//! the `MR` values of column `p`); `B` panels into strips of `NR` columns stored k-major. Rows or columns past
//! the matrix edge are zero. An optional shift is subtracted from every packed value (per row of
//! `A`, per column of `B`); the Gram accumulator uses it to centre samples without a copy.

use super::microkernel::{MAX_MC, MicroKernel, TILE_COLS, TILE_ROWS};
use super::view::MatRef;

/// Packs `a[i0..i0+mc, p0..p0+kc]` into `out` (length `round_up(mc, K::MR) * kc`).
#[inline(always)]
pub(crate) fn pack_a<K: MicroKernel>(
    a: MatRef<'_, f32>,
    i0: usize,
    mc: usize,
    p0: usize,
    kc: usize,
    row_shift: Option<&[f32]>,
    out: &mut [f32],
) {
    let data = a.raw();
    let (rs, cs) = (a.row_stride(), a.col_stride());
    let strips = mc.div_ceil(K::MR);
    let out = &mut out[..strips * K::MR * kc];
    if rs == 1 {
        // A is a transposed row-major matrix (the Gram case): column p of A is a contiguous
        // run of memory. Sweep it once per p, in memory order, and scatter into the strips, so
        // the source streams through the cache instead of being walked with a large stride.
        let full = mc / K::MR;
        let mut shifted = [0.0f32; MAX_MC];
        for p in 0..kc {
            let base = i0 + (p0 + p) * cs;
            let mut src = &data[base..base + mc];
            if let Some(sh) = row_shift {
                // Subtract the shift once per column, vectorised, then scatter.
                for ((t, &v), &c) in shifted.iter_mut().zip(src).zip(&sh[i0..i0 + mc]) {
                    *t = v - c;
                }
                src = &shifted[..mc];
            }
            for strip in 0..full {
                out[strip * K::MR * kc + p * K::MR..][..K::MR]
                    .copy_from_slice(&src[strip * K::MR..strip * K::MR + K::MR]);
            }
            if full < strips {
                let rows = mc - full * K::MR;
                let dst = &mut out[full * K::MR * kc + p * K::MR..][..K::MR];
                dst[..rows].copy_from_slice(&src[full * K::MR..mc]);
                dst[rows..].fill(0.0);
            }
        }
        return;
    }
    for (strip, chunk) in out.chunks_exact_mut(K::MR * kc).enumerate() {
        let r0 = strip * K::MR;
        let rows = (mc - r0).min(K::MR);
        let mut shift = [0.0f32; TILE_ROWS];
        if let Some(s) = row_shift {
            shift[..rows].copy_from_slice(&s[i0 + r0..i0 + r0 + rows]);
        }
        for (p, dst) in chunk.chunks_exact_mut(K::MR).enumerate() {
            let col = (p0 + p) * cs;
            for r in 0..K::MR {
                dst[r] = if r < rows {
                    data[(i0 + r0 + r) * rs + col] - shift[r]
                } else {
                    0.0
                };
            }
        }
    }
}

/// Packs `b[p0..p0+kc, j0..j0+nc]` into `out` (length `kc * round_up(nc, K::NR)`).
#[inline(always)]
pub(crate) fn pack_b<K: MicroKernel>(
    b: MatRef<'_, f32>,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    col_shift: Option<&[f32]>,
    out: &mut [f32],
) {
    let data = b.raw();
    let (rs, cs) = (b.row_stride(), b.col_stride());
    let strips = nc.div_ceil(K::NR);
    let out = &mut out[..strips * K::NR * kc];
    if cs == 1 {
        // Row-major B: sweep each row once, in memory order, scattering into the strips.
        let full = nc / K::NR;
        for p in 0..kc {
            let base = (p0 + p) * rs + j0;
            let src = &data[base..base + nc];
            for strip in 0..full {
                let dst = &mut out[strip * K::NR * kc + p * K::NR..][..K::NR];
                let s = &src[strip * K::NR..strip * K::NR + K::NR];
                match col_shift {
                    Some(sh) => {
                        let sh = &sh[j0 + strip * K::NR..j0 + strip * K::NR + K::NR];
                        for c in 0..K::NR {
                            dst[c] = s[c] - sh[c];
                        }
                    }
                    None => dst.copy_from_slice(s),
                }
            }
            if full < strips {
                let cols = nc - full * K::NR;
                let dst = &mut out[full * K::NR * kc + p * K::NR..][..K::NR];
                for c in 0..K::NR {
                    dst[c] = if c < cols {
                        src[full * K::NR + c]
                            - col_shift.map_or(0.0, |sh| sh[j0 + full * K::NR + c])
                    } else {
                        0.0
                    };
                }
            }
        }
        return;
    }
    for (strip, chunk) in out.chunks_exact_mut(K::NR * kc).enumerate() {
        let c0 = strip * K::NR;
        let cols = (nc - c0).min(K::NR);
        let mut shift = [0.0f32; TILE_COLS];
        if let Some(s) = col_shift {
            shift[..cols].copy_from_slice(&s[j0 + c0..j0 + c0 + cols]);
        }
        for (p, dst) in chunk.chunks_exact_mut(K::NR).enumerate() {
            let row = (p0 + p) * rs;
            for c in 0..K::NR {
                dst[c] = if c < cols {
                    data[row + (j0 + c0 + c) * cs] - shift[c]
                } else {
                    0.0
                };
            }
        }
    }
}

/// Packs rows `r0..r0 + mc` of `A` into `out` as [`pack_a`] does, read from a `B` panel that
/// [`pack_b`] packed (`kc` steps, `nc` columns) when `A` is that panel's matrix transposed (a
/// Gram product `X^T X`, shifts included): row `r` of `A` is panel column `r`. The panel is
/// contiguous and cache-resident, where `X`'s columns are a row stride apart.
#[inline(always)]
pub(crate) fn pack_a_from_b<K: MicroKernel>(
    bpack: &[f32],
    kc: usize,
    r0: usize,
    mc: usize,
    out: &mut [f32],
) {
    let strips = mc.div_ceil(K::MR);
    for (strip, chunk) in out[..strips * K::MR * kc]
        .chunks_exact_mut(K::MR * kc)
        .enumerate()
    {
        let first = r0 + strip * K::MR;
        let rows = (mc - strip * K::MR).min(K::MR);
        let off = first % K::NR;
        let at0 = (first / K::NR) * K::NR * kc + off;
        if rows == K::MR && off + K::MR <= K::NR {
            // The strip's rows are one run of a panel strip: one fixed-size copy per step.
            for (p, dst) in chunk.chunks_exact_mut(K::MR).enumerate() {
                dst.copy_from_slice(&bpack[at0 + p * K::NR..][..K::MR]);
            }
        } else if rows == K::MR {
            // The rows straddle two panel strips: the first `head` from the end of one, the
            // rest from the start of the next. Two fixed-size copies per step keep them inline:
            // the first runs past its strip's row into values the second overwrites, and the
            // second runs into the next step's slot, which that step then overwrites (the last
            // step goes through a window instead).
            let head = K::NR - off;
            let at1 = at0 - off + K::NR * kc;
            for p in 0..kc - 1 {
                chunk[p * K::MR..][..K::MR].copy_from_slice(&bpack[at0 + p * K::NR..][..K::MR]);
                chunk[p * K::MR + head..][..K::MR]
                    .copy_from_slice(&bpack[at1 + p * K::NR..][..K::MR]);
            }
            let p = kc - 1;
            let mut window = [0.0f32; 2 * TILE_ROWS];
            window[..K::MR].copy_from_slice(&bpack[at0 + p * K::NR..][..K::MR]);
            window[head..head + K::MR].copy_from_slice(&bpack[at1 + p * K::NR..][..K::MR]);
            chunk[p * K::MR..].copy_from_slice(&window[..K::MR]);
        } else {
            for (p, dst) in chunk.chunks_exact_mut(K::MR).enumerate() {
                for (r, v) in dst.iter_mut().enumerate() {
                    let col = first + r;
                    *v = if r < rows {
                        bpack[(col / K::NR) * K::NR * kc + p * K::NR + col % K::NR]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}
