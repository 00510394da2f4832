//! Packing of operand panels into the contiguous strip layout the micro-kernel reads.
//!
//! `A` panels are cut into strips of [`MR`] rows stored k-major (for each `p`, the `MR` values
//! of column `p`); `B` panels into strips of [`NR`] columns stored k-major. Rows or columns past
//! the matrix edge are zero. An optional shift is subtracted from every packed value (per row of
//! `A`, per column of `B`); the Gram accumulator uses it to centre samples without a copy.

use super::microkernel::{MR, NR};
use super::view::MatRef;

/// Packs `a[i0..i0+mc, p0..p0+kc]` into `out` (length `round_up(mc, MR) * kc`).
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
    for (strip, chunk) in out[..mc.div_ceil(MR) * MR * kc]
        .chunks_exact_mut(MR * kc)
        .enumerate()
    {
        let r0 = strip * MR;
        let rows = (mc - r0).min(MR);
        let mut shift = [0.0f32; MR];
        if let Some(s) = row_shift {
            shift[..rows].copy_from_slice(&s[i0 + r0..i0 + r0 + rows]);
        }
        if rows == MR && rs == 1 {
            // The strip's MR values of each column are contiguous (A is a transposed
            // row-major matrix, the Gram case).
            for (p, dst) in chunk.chunks_exact_mut(MR).enumerate() {
                let base = (i0 + r0) + (p0 + p) * cs;
                let src = &data[base..base + MR];
                for r in 0..MR {
                    dst[r] = src[r] - shift[r];
                }
            }
        } else {
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
}

/// Packs `b[p0..p0+kc, j0..j0+nc]` into `out` (length `kc * round_up(nc, NR)`).
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
    for (strip, chunk) in out[..nc.div_ceil(NR) * NR * kc]
        .chunks_exact_mut(NR * kc)
        .enumerate()
    {
        let c0 = strip * NR;
        let cols = (nc - c0).min(NR);
        let mut shift = [0.0f32; NR];
        if let Some(s) = col_shift {
            shift[..cols].copy_from_slice(&s[j0 + c0..j0 + c0 + cols]);
        }
        if cols == NR && cs == 1 {
            for (p, dst) in chunk.chunks_exact_mut(NR).enumerate() {
                let base = (p0 + p) * rs + j0 + c0;
                let src = &data[base..base + NR];
                for c in 0..NR {
                    dst[c] = src[c] - shift[c];
                }
            }
        } else {
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
}
