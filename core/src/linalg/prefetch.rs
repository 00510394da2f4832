//! Software prefetch of the next `KC` slice of `B` while the micro-kernel works on this one.
//!
//! The blocked product packs each `KC x NC` slice of `B` from memory and then computes with
//! it; packing from memory leaves the FMA ports idle while the slice streams in (a 65536 x 256
//! `X^T X` on AVX-512 spent about a fifth of its time there: `X` is read once, from DRAM). The
//! [`NextSlice`] cursor hands each of this slice's tile calls a run of the next slice's cache
//! lines, which the micro-kernel prefetches into L2 one every few steps of its loop (a burst
//! of prefetches per tile stalled on the line fill buffers), so the next pack reads from
//! cache. Prefetches are hints: no value changes.

use super::microkernel::Lines;
use super::view::MatRef;

/// Values per 64-byte cache line.
const LINE: usize = 16;

/// Largest next slice prefetched, in bytes: a quarter of a 2 MiB L2 (Sapphire Rapids). A
/// larger one pushes the packed block of `A` and the panel of `B` out of L2: prefetching the
/// 1 MB slices of a 65536 x 1024 `X^T X` made it 6 % slower on AVX-512, while the 248 KiB
/// slices at d = 256 gained 4-6 % on both paths (interleaved runs, thread CPU time).
const MAX_BYTES: usize = 512 << 10;

/// Smallest slice prefetched again past [`MAX_BYTES`]: one as large as a 2 MiB L2, whose panel
/// of `B` does not stay in L2 anyway, so the prefetch has nothing of it to push out (the 2.3
/// MB slices of a 65536 x 2304 `X^T X` on AVX-512: 1-3 % faster; neutral on AVX2).
const PANEL_OUTGROWS_L2: usize = 2 << 20;

/// A cursor over the cache lines of the next slice's rows of a row-major `B`, handed to the
/// micro-kernel a run at a time.
pub(crate) struct NextSlice {
    /// First value of the slice's first row (never read through: only prefetched).
    base: *const f32,
    /// Row stride of `B`, in values.
    row_stride: usize,
    /// Rows of the slice (1 when its rows are contiguous: then one run covers them all).
    rows: usize,
    /// Lines per row, counted from the row's first value (one more than its values fill, for
    /// the line holding the last value when the row does not start on a line).
    row_lines: usize,
    /// Next line: row, and line within the row.
    row: usize,
    line: usize,
    /// Lines to hand out per tile.
    per_tile: usize,
}

impl NextSlice {
    /// A cursor that prefetches nothing.
    pub(crate) fn none() -> Self {
        NextSlice {
            base: core::ptr::null(),
            row_stride: 0,
            rows: 0,
            row_lines: 0,
            row: 0,
            line: 0,
            per_tile: 0,
        }
    }

    /// The slice of `b` at rows `p0..p0 + kc`, columns `j0..j0 + nc`, spread over `tiles` tile
    /// calls. Prefetches nothing when `b` is not row-major, the slice is empty or larger than
    /// [`MAX_BYTES`] but smaller than [`PANEL_OUTGROWS_L2`], or `tiles` is 0 (not known yet).
    pub(crate) fn new(
        b: MatRef<'_, f32>,
        p0: usize,
        kc: usize,
        j0: usize,
        nc: usize,
        tiles: usize,
    ) -> Self {
        let bytes = kc * nc * core::mem::size_of::<f32>();
        let would_evict = bytes > MAX_BYTES && bytes < PANEL_OUTGROWS_L2;
        if b.col_stride() != 1 || kc == 0 || nc == 0 || tiles == 0 || would_evict {
            return Self::none();
        }
        // Rows that follow each other in memory form one run.
        let (rows, len) = if b.row_stride() == nc {
            (1, kc * nc)
        } else {
            (kc, nc)
        };
        let row_lines = len.div_ceil(LINE) + 1;
        NextSlice {
            base: b.raw().as_ptr().wrapping_add(p0 * b.row_stride() + j0),
            row_stride: b.row_stride(),
            rows,
            row_lines,
            row: 0,
            line: 0,
            per_tile: (rows * row_lines).div_ceil(tiles),
        }
    }

    /// The next run of lines for one tile: at most `max` lines (what the kernel can issue over
    /// its loop) and no further than the end of the current row.
    #[inline(always)]
    pub(crate) fn take(&mut self, max: usize) -> Lines {
        if self.row >= self.rows {
            return Lines::NONE;
        }
        let count = self.per_tile.min(max).min(self.row_lines - self.line);
        let at = self
            .base
            .wrapping_add(self.row * self.row_stride + self.line * LINE);
        self.line += count;
        if self.line == self.row_lines {
            self.row += 1;
            self.line = 0;
        }
        Lines { at, count }
    }
}
