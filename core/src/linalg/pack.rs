//! Packing of operand panels into the contiguous strip layout the micro-kernel reads.
//!
//! `A` panels are cut into strips of [`MR`] rows stored k-major (for each `p`, the `MR` values
//! of column `p`); `B` panels into strips of [`NR`] columns stored k-major. Rows or columns past
//! the matrix edge are zero. An optional shift is subtracted from every packed value (per row of
//! `A`, per column of `B`); the Gram accumulator uses it to centre samples without a copy.

use super::blocked::MC;
use super::microkernel::{MR, NR};
use super::view::MatRef;

/// Packs `a[i0..i0+mc, p0..p0+kc]` into `out` (length `round_up(mc, MR) * kc`).
#[inline(never)]
pub(crate) fn pack_a(
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
    let strips = mc.div_ceil(MR);
    let out = &mut out[..strips * MR * kc];
    if rs == 1 {
        // A is a transposed row-major matrix (the Gram case): column p of A is a contiguous
        // run of memory. Sweep it once per p, in memory order, and scatter into the strips, so
        // the source streams through the cache instead of being walked with a large stride.
        let full = mc / MR;
        let mut shifted = [0.0f32; MC];
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
                out[strip * MR * kc + p * MR..][..MR]
                    .copy_from_slice(&src[strip * MR..strip * MR + MR]);
            }
            if full < strips {
                let rows = mc - full * MR;
                let dst = &mut out[full * MR * kc + p * MR..][..MR];
                dst[..rows].copy_from_slice(&src[full * MR..mc]);
                dst[rows..].fill(0.0);
            }
        }
        return;
    }
    for (strip, chunk) in out.chunks_exact_mut(MR * kc).enumerate() {
        let r0 = strip * MR;
        let rows = (mc - r0).min(MR);
        let mut shift = [0.0f32; MR];
        if let Some(s) = row_shift {
            shift[..rows].copy_from_slice(&s[i0 + r0..i0 + r0 + rows]);
        }
        for (p, dst) in chunk.chunks_exact_mut(MR).enumerate() {
            let col = (p0 + p) * cs;
            for r in 0..MR {
                dst[r] = if r < rows {
                    data[(i0 + r0 + r) * rs + col] - shift[r]
                } else {
                    0.0
                };
            }
        }
    }
}

/// Packs `b[p0..p0+kc, j0..j0+nc]` into `out` (length `kc * round_up(nc, NR)`).
#[inline(never)]
pub(crate) fn pack_b(
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
    let strips = nc.div_ceil(NR);
    let out = &mut out[..strips * NR * kc];
    if cs == 1 {
        // Row-major B: sweep each row once, in memory order, scattering into the strips.
        let full = nc / NR;
        for p in 0..kc {
            let base = (p0 + p) * rs + j0;
            let src = &data[base..base + nc];
            for strip in 0..full {
                let dst = &mut out[strip * NR * kc + p * NR..][..NR];
                let s = &src[strip * NR..strip * NR + NR];
                match col_shift {
                    Some(sh) => {
                        let sh = &sh[j0 + strip * NR..j0 + strip * NR + NR];
                        for c in 0..NR {
                            dst[c] = s[c] - sh[c];
                        }
                    }
                    None => dst.copy_from_slice(s),
                }
            }
            if full < strips {
                let cols = nc - full * NR;
                let dst = &mut out[full * NR * kc + p * NR..][..NR];
                for c in 0..NR {
                    dst[c] = if c < cols {
                        src[full * NR + c] - col_shift.map_or(0.0, |sh| sh[j0 + full * NR + c])
                    } else {
                        0.0
                    };
                }
            }
        }
        return;
    }
    for (strip, chunk) in out.chunks_exact_mut(NR * kc).enumerate() {
        let c0 = strip * NR;
        let cols = (nc - c0).min(NR);
        let mut shift = [0.0f32; NR];
        if let Some(s) = col_shift {
            shift[..cols].copy_from_slice(&s[j0 + c0..j0 + c0 + cols]);
        }
        for (p, dst) in chunk.chunks_exact_mut(NR).enumerate() {
            let row = (p0 + p) * rs;
            for c in 0..NR {
                dst[c] = if c < cols {
                    data[row + (j0 + c0 + c) * cs] - shift[c]
                } else {
                    0.0
                };
            }
        }
    }
}
