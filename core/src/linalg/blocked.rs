//! The cache-blocked product driver shared by GEMM and SYRK (Goto / BLIS loop order).
//!
//! `C += alpha * A B` with `A` packed in `MC x KC` blocks (L2-resident) and `B` in
//! `KC x NC` panels (L3-resident); the micro-kernel of the selected SIMD path walks its
//! `MR x NR` register tiles. When only
//! the lower triangle is wanted (SYRK), blocks and tiles strictly above the diagonal are never
//! computed and diagonal tiles store only their lower part.

#[cfg(target_arch = "x86_64")]
use super::microkernel::{Avx2, Avx512};
use super::microkernel::{MicroKernel, Portable, STEPS_PER_LINE, TILE_COLS, TILE_ROWS};
use super::pack::{pack_a, pack_a_from_b, pack_b};
use super::prefetch::NextSlice;
use super::view::{MatMut, MatRef};
use crate::simd;

// Block sizes (MC, KC, NC) and the register tile (MR x NR) are the micro-kernel's, per path:
// see `microkernel`.

/// Runs `$body` with the type `$k` bound to the micro-kernel of the selected path, read once,
/// compiled for that path's instruction set (so the packing loops vectorise with it too).
macro_rules! with_kernel {
    ($k:ident => $body:expr) => {
        simd::vectorised(
            #[inline(always)]
            || match simd::path() {
                #[cfg(target_arch = "x86_64")]
                simd::Path::Avx512 => {
                    type $k = Avx512;
                    $body
                }
                #[cfg(target_arch = "x86_64")]
                simd::Path::Avx2 => {
                    type $k = Avx2;
                    $body
                }
                _ => {
                    type $k = Portable;
                    $body
                }
            },
        )
    };
}

/// Scratch elements of kernel `K` for a product of an `m x k` by a `k x n` operand.
fn scratch_len_of<K: MicroKernel>(m: usize, n: usize, k: usize) -> usize {
    if m == 0 || n == 0 || k == 0 {
        return 0;
    }
    let kc = k.min(K::KC);
    let packing =
        m.min(K::MC).div_ceil(K::MR) * K::MR * kc + n.min(K::NC).div_ceil(K::NR) * K::NR * kc;
    packing + if k > K::KC { tiled_len(m, n) } else { 0 }
}

/// Scratch elements for a product of an `m x k` by a `k x n` operand: what the most demanding
/// path needs, so a query stays valid whichever path runs.
pub(crate) fn scratch_len(m: usize, n: usize, k: usize) -> usize {
    let len = scratch_len_of::<Portable>(m, n, k);
    #[cfg(target_arch = "x86_64")]
    let len = len
        .max(scratch_len_of::<Avx2>(m, n, k))
        .max(scratch_len_of::<Avx512>(m, n, k));
    len
}

/// Depth values per slice of a product on `path`: each slice of the depth is summed from zero
/// and the slices' sums are added in order ([`product_into`]). A kernel that must give the
/// same bits as [`super::gemm`] (the strided convolution) sums in the same slices.
pub(crate) fn depth_slice(path: simd::Path) -> usize {
    match path {
        #[cfg(target_arch = "x86_64")]
        simd::Path::Avx512 => Avx512::KC,
        #[cfg(target_arch = "x86_64")]
        simd::Path::Avx2 => Avx2::KC,
        _ => Portable::KC,
    }
}

/// `C += alpha * A B` on the chosen part of a strided `C`. When the product takes more than one
/// `KC` slice, it accumulates in a tile-major buffer at the front of `scratch` and adds that
/// into `C` once at the end: revisiting a large row-major `C` once per slice stalls on its
/// cache misses (about 20% of a 65536 x 2304 Gram update here), while the tile-major buffer
/// is walked in memory order.
pub(crate) fn product_into(
    alpha: f32,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    c: MatMut<'_, f32>,
    part: Part,
    shifts: Shifts<'_>,
    scratch: &mut [f32],
) {
    with_kernel!(K => product_into_with::<K>(alpha, a, b, c, part, shifts, scratch))
}

#[inline(always)]
fn product_into_with<K: MicroKernel>(
    alpha: f32,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    mut c: MatMut<'_, f32>,
    part: Part,
    shifts: Shifts<'_>,
    scratch: &mut [f32],
) {
    let (m, k) = a.shape();
    let n = b.cols();
    if k <= K::KC || m == 0 || n == 0 {
        product_with::<K>(alpha, a, b, Dest::Strided(c), part, shifts, scratch);
        return;
    }
    let (tiles, pack) = scratch.split_at_mut(tiled_len(m, n));
    tiles.fill(0.0);
    let row_strips = tiled_row_strips(m);
    let dest = Dest::Tiled {
        data: tiles,
        row_strips,
    };
    product_with::<K>(alpha, a, b, dest, part, shifts, pack);
    for i in 0..m {
        let cmax = match part {
            Part::Full => n,
            Part::Lower => n.min(i + 1),
        };
        for j in 0..cmax {
            *c.at_mut(i, j) += tiles[tiled_index(i, j, row_strips)];
        }
    }
}

/// Which part of `C` to update.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// Every element.
    Full,
    /// Elements with row >= column only.
    Lower,
}

/// Optional per-row shift of `A` and per-column shift of `B`, subtracted while packing.
#[derive(Clone, Copy, Default)]
pub(crate) struct Shifts<'s> {
    pub(crate) a_rows: Option<&'s [f32]>,
    pub(crate) b_cols: Option<&'s [f32]>,
}

/// Where a product goes.
pub(crate) enum Dest<'c> {
    /// A strided matrix view.
    Strided(MatMut<'c, f32>),
    /// A tile-major buffer: the `TILE_ROWS x TILE_COLS` tile of rows `is * TILE_ROWS..` and
    /// columns `js * TILE_COLS..` is stored contiguously (row-major within the tile) at
    /// `(js * row_strips + is) * TILE_ROWS * TILE_COLS`. The storage tile is a multiple of every
    /// micro-kernel's register tile, so the layout is the same on every SIMD path. Tiles are visited in memory order, so the
    /// hardware prefetcher streams them; whole tiles are written (padding and, for the lower
    /// part, the diagonal tiles' upper halves hold values that readers must ignore).
    Tiled {
        /// `tiled_len(rows, cols)` elements.
        data: &'c mut [f32],
        /// `tiled_row_strips(rows)`.
        row_strips: usize,
    },
}

/// Elements of a tile-major buffer for a `rows x cols` product.
pub(crate) fn tiled_len(rows: usize, cols: usize) -> usize {
    rows.div_ceil(TILE_ROWS) * TILE_ROWS * cols.div_ceil(TILE_COLS) * TILE_COLS
}

/// Zeroes the tiles of a `dim x dim` tile-major buffer that a lower-triangle product writes:
/// those with an element on or below the diagonal. The others are never written or read, so
/// their pages stay untouched (half the buffer at large `dim`).
pub(crate) fn zero_lower_tiles(tiles: &mut [f32], dim: usize) {
    let row_strips = tiled_row_strips(dim);
    let tile = TILE_ROWS * TILE_COLS;
    for js in 0..dim.div_ceil(TILE_COLS) {
        // Row strip `is` reaches the diagonal of column strip `js` once its last row
        // `is * TILE_ROWS + TILE_ROWS - 1` is at least the strip's first column.
        let first = js * TILE_COLS / TILE_ROWS;
        if first < row_strips {
            tiles[(js * row_strips + first) * tile..(js + 1) * row_strips * tile].fill(0.0);
        }
    }
}

/// Row strips of a tile-major buffer for `rows` rows.
pub(crate) fn tiled_row_strips(rows: usize) -> usize {
    rows.div_ceil(TILE_ROWS)
}

/// Adds row `i`, columns `0..cols`, of a tile-major buffer into `dst` (length `cols`), in f64.
#[inline(always)]
/// Within a tile a row's `TILE_COLS` values are contiguous, so this walks runs of them.
pub(crate) fn add_tiled_row_f64(tiles: &[f32], i: usize, row_strips: usize, dst: &mut [f64]) {
    for (js, chunk) in dst.chunks_mut(TILE_COLS).enumerate() {
        let at = ((js * row_strips + i / TILE_ROWS) * TILE_ROWS + i % TILE_ROWS) * TILE_COLS;
        let len = chunk.len();
        for (d, &v) in chunk.iter_mut().zip(&tiles[at..at + len]) {
            *d += f64::from(v);
        }
    }
}

/// Index of element `(i, j)` in a tile-major buffer with `row_strips` row strips.
#[inline]
pub(crate) fn tiled_index(i: usize, j: usize, row_strips: usize) -> usize {
    ((j / TILE_COLS) * row_strips + i / TILE_ROWS) * (TILE_ROWS * TILE_COLS)
        + (i % TILE_ROWS) * TILE_COLS
        + j % TILE_COLS
}

/// `C += alpha * (A - sa) (B - sb)` on the chosen part. Shapes and scratch are checked by the
/// callers.
pub(crate) fn product(
    alpha: f32,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    c: Dest<'_>,
    part: Part,
    shifts: Shifts<'_>,
    scratch: &mut [f32],
) {
    with_kernel!(K => product_with::<K>(alpha, a, b, c, part, shifts, scratch))
}

/// Where one product writes: a strided view (data, row stride, column stride) or a tile-major
/// buffer (data, row strips).
enum Target<'c> {
    Strided(&'c mut [f32], usize, usize),
    Tiled(&'c mut [f32], usize),
}

/// [`product`] with the micro-kernel `K`.
#[inline(always)]
fn product_with<K: MicroKernel>(
    alpha: f32,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    c: Dest<'_>,
    part: Part,
    shifts: Shifts<'_>,
    scratch: &mut [f32],
) {
    let (m, k) = a.shape();
    let n = b.cols();
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let kc_max = k.min(K::KC);
    let (apack, bpack) = scratch.split_at_mut(m.min(K::MC).div_ceil(K::MR) * K::MR * kc_max);
    let mut target = match c {
        Dest::Strided(v) => {
            let (rs, cs) = (v.row_stride(), v.col_stride());
            Target::Strided(v.into_raw(), rs, cs)
        }
        Dest::Tiled { data, row_strips } => Target::Tiled(data, row_strips),
    };
    // Packing A from B's panel pays where X's rows are a page or more apart (each packed
    // column of A touches kc pages); below that, X's rows stay in L2 and TLB, and the direct
    // pack is faster (d = 256: 107 vs 98 GFLOP/s on AVX-512).
    let gram = is_gram(a, b, shifts) && b.row_stride() >= FAR_ROWS;
    for jc in (0..n).step_by(K::NC) {
        let nc = (n - jc).min(K::NC);
        // Tile calls of the previous slice: each slice but the last has as many.
        let mut last_tiles = 0;
        for pc in (0..k).step_by(K::KC) {
            let kc = (k - pc).min(K::KC);
            let next = pc + kc;
            let mut prefetch = NextSlice::new(b, next, (k - next).min(K::KC), jc, nc, last_tiles);
            let mut tiles = 0;
            // In the lower case rows < jc never touch this panel.
            let ic_start = if part == Part::Lower {
                jc - jc % K::MC
            } else {
                0
            };
            if ic_start >= m {
                continue;
            }
            pack_b::<K>(b, pc, kc, jc, nc, shifts.b_cols, bpack);
            for ic in (ic_start..m).step_by(K::MC) {
                let mc = (m - ic).min(K::MC);
                // Columns this row block needs: all of the panel, or up to its last row.
                let nc_used = match part {
                    Part::Full => nc,
                    Part::Lower => nc.min((ic + mc).saturating_sub(jc)),
                };
                if nc_used == 0 {
                    continue;
                }
                if gram && ic >= jc && ic + mc <= jc + nc {
                    pack_a_from_b::<K>(bpack, kc, ic - jc, mc, apack);
                } else {
                    pack_a::<K>(a, ic, mc, pc, kc, shifts.a_rows, apack);
                }
                let block = Block {
                    ic,
                    mc,
                    jc,
                    nc_used,
                    kc,
                    part,
                    alpha,
                };
                tiles += block_tiles::<K>(block, apack, bpack, &mut target, &mut prefetch);
            }
            last_tiles = tiles;
        }
    }
}

/// Row stride (in values) from which Gram products pack `A` from `B`'s panel: 4 KiB pages.
const FAR_ROWS: usize = 1024;

/// Whether `A` is `B` transposed, shifts included (`X^T X`, as SYRK and the Gram accumulator
/// call it): then `A`'s blocks can be packed from `B`'s packed panel.
fn is_gram(a: MatRef<'_, f32>, b: MatRef<'_, f32>, shifts: Shifts<'_>) -> bool {
    let same = |x: Option<&[f32]>, y: Option<&[f32]>| match (x, y) {
        (None, None) => true,
        (Some(x), Some(y)) => core::ptr::eq(x, y),
        _ => false,
    };
    core::ptr::eq(a.raw(), b.raw())
        && a.shape() == (b.cols(), b.rows())
        && (a.row_stride(), a.col_stride()) == (b.col_stride(), b.row_stride())
        && same(shifts.a_rows, shifts.b_cols)
}

/// One packed `mc x kc` block of `A` against the packed `kc x nc_used` panel of `B`.
#[derive(Clone, Copy)]
struct Block {
    ic: usize,
    mc: usize,
    jc: usize,
    nc_used: usize,
    kc: usize,
    part: Part,
    alpha: f32,
}

/// Runs the micro-kernel over the register tiles of one block and adds them into `target`,
/// prefetching part of the next slice after each tile; returns the number of tiles.
#[inline(always)]
fn block_tiles<K: MicroKernel>(
    blk: Block,
    apack: &[f32],
    bpack: &[f32],
    target: &mut Target<'_>,
    prefetch: &mut NextSlice,
) -> usize {
    let Block {
        ic,
        mc,
        jc,
        nc_used,
        kc,
        part,
        alpha,
    } = blk;
    let mut tiles = 0;
    for jr in (0..nc_used).step_by(K::NR) {
        let ncols = (nc_used - jr).min(K::NR);
        let j0 = jc + jr;
        let bstrip = &bpack[jr * kc..(jr + K::NR) * kc];
        for ir in (0..mc).step_by(K::MR) {
            let nrows = (mc - ir).min(K::MR);
            let i0 = ic + ir;
            if part == Part::Lower && i0 + nrows <= j0 {
                continue; // tile strictly above the diagonal
            }
            let astrip = &apack[ir * kc..(ir + K::MR) * kc];
            // A diagonal tile whose right half lies wholly above the diagonal: only the left
            // half is computed (the lower product stores nothing above the diagonal).
            let half = part == Part::Lower && j0 + K::NR / 2 >= i0 + nrows;
            let tile = if half { K::tile_left_half } else { K::tile };
            let next = prefetch.take(kc / STEPS_PER_LINE);
            tiles += 1;
            match target {
                Target::Tiled(data, row_strips) => {
                    // Whole tiles, padding included: the storage tile holds every kernel tile.
                    let at = tiled_index(i0, j0, *row_strips);
                    tile(astrip, bstrip, kc, alpha, &mut data[at..], TILE_COLS, next);
                }
                Target::Strided(cdata, crs, ccs) => {
                    let diagonal = part == Part::Lower && j0 + ncols > i0 + 1;
                    if nrows == K::MR && ncols == K::NR && *ccs == 1 && !diagonal {
                        K::tile(
                            astrip,
                            bstrip,
                            kc,
                            alpha,
                            &mut cdata[i0 * *crs + j0..],
                            *crs,
                            next,
                        );
                        continue;
                    }
                    let mut vals = [0.0f32; TILE_ROWS * TILE_COLS];
                    tile(astrip, bstrip, kc, alpha, &mut vals, K::NR, next);
                    for r in 0..nrows {
                        let i = i0 + r;
                        let cmax = match part {
                            Part::Full => ncols,
                            Part::Lower => ncols.min((i + 1).saturating_sub(j0)),
                        };
                        for cc in 0..cmax {
                            cdata[i * *crs + (j0 + cc) * *ccs] += vals[r * K::NR + cc];
                        }
                    }
                }
            }
        }
    }
    tiles
}

/// `C <- beta * C` on the chosen part; `beta == 0` writes zeros (NaN in `C` is not propagated),
/// as in BLAS.
pub(crate) fn scale(beta: f32, c: &mut MatMut<'_, f32>, part: Part) {
    if beta == 1.0 {
        return;
    }
    let (rows, cols) = c.shape();
    for i in 0..rows {
        let cmax = match part {
            Part::Full => cols,
            Part::Lower => cols.min(i + 1),
        };
        if let Some(row) = c.row_mut(i) {
            let row = &mut row[..cmax];
            if beta == 0.0 {
                row.fill(0.0);
            } else {
                row.iter_mut().for_each(|v| *v *= beta);
            }
            continue;
        }
        for j in 0..cmax {
            let v = c.at_mut(i, j);
            *v = if beta == 0.0 { 0.0 } else { beta * *v };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    #[test]
    fn zeroed_lower_tiles_cover_the_lower_triangle() {
        for dim in [1, 12, 13, 32, 33, 100] {
            let mut tiles = vec![f32::NAN; tiled_len(dim, dim)];
            zero_lower_tiles(&mut tiles, dim);
            let strips = tiled_row_strips(dim);
            for i in 0..dim {
                for j in 0..=i {
                    assert_eq!(tiles[tiled_index(i, j, strips)], 0.0, "dim {dim} ({i},{j})");
                }
            }
            // Tiles wholly above the diagonal stay untouched once dim spans several of them.
            if dim >= 2 * TILE_COLS {
                assert!(tiles[tiled_index(0, dim - 1, strips)].is_nan());
            }
        }
    }
}
