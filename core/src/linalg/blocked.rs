//! The cache-blocked product driver shared by GEMM and SYRK (Goto / BLIS loop order).
//!
//! `C += alpha * A B` with `A` packed in `MC x KC` blocks (L2-resident) and `B` in
//! `KC x NC` panels (L3-resident); the micro-kernel walks `MR x NR` register tiles. When only
//! the lower triangle is wanted (SYRK), blocks and tiles strictly above the diagonal are never
//! computed and diagonal tiles store only their lower part.

use super::microkernel::{MR, NR, store_full, tile_product, tile_values};
use super::pack::{pack_a, pack_b};
use super::view::{MatMut, MatRef};

// Block sizes follow the Goto/BLIS analysis for a 6 x 16 f32 tile on Zen/Haswell-class cores
// (32 KiB L1d, 512 KiB L2): a KC x NR micro-panel of B (20 KiB) plus a KC x MR micro-panel of A
// (7.5 KiB) fit in L1, an MC x KC block of A (150 KiB) in L2, and a KC x NC panel of B in L3.
// KC = 320 beat BLIS's 256 here by 5-15% at d = 1024 and 2304 (alternating runs, CPU time):
// fewer passes over C.

/// Samples (the shared `k` dimension) per packed slice.
pub(crate) const KC: usize = 320;
/// Rows of `A` per packed block.
pub(crate) const MC: usize = 120;
/// Columns of `B` per packed panel.
pub(crate) const NC: usize = 4080;

/// Scratch elements for a product of an `m x k` by a `k x n` operand.
pub(crate) fn scratch_len(m: usize, n: usize, k: usize) -> usize {
    if m == 0 || n == 0 || k == 0 {
        return 0;
    }
    let kc = k.min(KC);
    let packing = m.min(MC).div_ceil(MR) * MR * kc + n.min(NC).div_ceil(NR) * NR * kc;
    packing + if k > KC { tiled_len(m, n) } else { 0 }
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
    mut c: MatMut<'_, f32>,
    part: Part,
    shifts: Shifts<'_>,
    scratch: &mut [f32],
) {
    let (m, k) = a.shape();
    let n = b.cols();
    if k <= KC || m == 0 || n == 0 {
        product(alpha, a, b, Dest::Strided(c), part, shifts, scratch);
        return;
    }
    let (tiles, pack) = scratch.split_at_mut(tiled_len(m, n));
    tiles.fill(0.0);
    let row_strips = tiled_row_strips(m);
    product(
        alpha,
        a,
        b,
        Dest::Tiled {
            data: tiles,
            row_strips,
        },
        part,
        shifts,
        pack,
    );
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
    /// A tile-major buffer: the `MR x NR` tile of rows `is * MR..` and columns `js * NR..`
    /// is stored contiguously (row-major within the tile) at
    /// `(js * row_strips + is) * MR * NR`. Tiles are visited in memory order, so the
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
    rows.div_ceil(MR) * MR * cols.div_ceil(NR) * NR
}

/// Row strips of a tile-major buffer for `rows` rows.
pub(crate) fn tiled_row_strips(rows: usize) -> usize {
    rows.div_ceil(MR)
}

/// Adds row `i`, columns `0..cols`, of a tile-major buffer into `dst` (length `cols`), in f64.
/// Within a tile a row's `NR` values are contiguous, so this walks runs of `NR`.
pub(crate) fn add_tiled_row_f64(tiles: &[f32], i: usize, row_strips: usize, dst: &mut [f64]) {
    for (js, chunk) in dst.chunks_mut(NR).enumerate() {
        let at = ((js * row_strips + i / MR) * MR + i % MR) * NR;
        let len = chunk.len();
        for (d, &v) in chunk.iter_mut().zip(&tiles[at..at + len]) {
            *d += f64::from(v);
        }
    }
}

/// Index of element `(i, j)` in a tile-major buffer with `row_strips` row strips.
#[inline]
pub(crate) fn tiled_index(i: usize, j: usize, row_strips: usize) -> usize {
    ((j / NR) * row_strips + i / MR) * (MR * NR) + (i % MR) * NR + j % NR
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
    let (m, k) = a.shape();
    let n = b.cols();
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let kc_max = k.min(KC);
    let (apack, bpack) = scratch.split_at_mut(m.min(MC).div_ceil(MR) * MR * kc_max);
    // Strided destinations: (data, row stride, column stride); tiled: (data, row strips).
    let (mut strided, mut tiled) = (None, None);
    match c {
        Dest::Strided(v) => {
            let (rs, cs) = (v.row_stride(), v.col_stride());
            strided = Some((v.into_raw(), rs, cs));
        }
        Dest::Tiled { data, row_strips } => tiled = Some((data, row_strips)),
    }

    for jc in (0..n).step_by(NC) {
        let nc = (n - jc).min(NC);
        for pc in (0..k).step_by(KC) {
            let kc = (k - pc).min(KC);
            // In the lower case rows < jc never touch this panel.
            let ic_start = if part == Part::Lower { jc - jc % MC } else { 0 };
            if ic_start >= m {
                continue;
            }
            pack_b(b, pc, kc, jc, nc, shifts.b_cols, bpack);
            for ic in (ic_start..m).step_by(MC) {
                let mc = (m - ic).min(MC);
                // Columns this row block needs: all of the panel, or up to its last row.
                let nc_used = match part {
                    Part::Full => nc,
                    Part::Lower => nc.min((ic + mc).saturating_sub(jc)),
                };
                if nc_used == 0 {
                    continue;
                }
                pack_a(a, ic, mc, pc, kc, shifts.a_rows, apack);
                for jr in (0..nc_used).step_by(NR) {
                    let ncols = (nc_used - jr).min(NR);
                    let j0 = jc + jr;
                    let bstrip = &bpack[jr * kc..(jr + NR) * kc];
                    for ir in (0..mc).step_by(MR) {
                        let nrows = (mc - ir).min(MR);
                        let i0 = ic + ir;
                        if part == Part::Lower && i0 + nrows <= j0 {
                            continue; // tile strictly above the diagonal
                        }
                        let astrip = &apack[ir * kc..(ir + MR) * kc];
                        let tile = tile_product(astrip, bstrip, kc);
                        if let Some((data, row_strips)) = tiled.as_mut() {
                            let at = ((j0 / NR) * *row_strips + i0 / MR) * (MR * NR);
                            store_full(&tile, alpha, &mut data[at..at + MR * NR], NR);
                            continue;
                        }
                        let (cdata, crs, ccs) = strided.as_mut().expect("one destination");
                        let (crs, ccs) = (*crs, *ccs);
                        let diagonal = part == Part::Lower && j0 + ncols > i0 + 1;
                        if nrows == MR && ncols == NR && ccs == 1 && !diagonal {
                            store_full(&tile, alpha, &mut cdata[i0 * crs + j0..], crs);
                        } else {
                            let vals = tile_values(&tile);
                            for r in 0..nrows {
                                let i = i0 + r;
                                let cmax = match part {
                                    Part::Full => ncols,
                                    Part::Lower => ncols.min((i + 1).saturating_sub(j0)),
                                };
                                for cc in 0..cmax {
                                    let idx = i * crs + (j0 + cc) * ccs;
                                    cdata[idx] += alpha * vals[r][cc];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
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
