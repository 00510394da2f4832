//! `W G` for a symmetric f64 matrix `G` of which only the lower triangle is stored (a Gram
//! from [`crate::gram`]) and a row-major `W`: the product the least-squares fit needs for the
//! loss of any weights (`w^T G w` per row) and for a ridge towards prior weights (`R - G W0`).
//!
//! Row `i` of the lower triangle is read once per block of four rows of `W`, contiguously: its
//! part left of the diagonal gives `out[o][i]` as a dot product with `w_o` and, by symmetry,
//! adds `w_o[i]` times itself to `out[o][..i]` (the column of `G` below the diagonal). So the
//! stored triangle is walked row by row, never down a column, with `wide::f64x4` dot and axpy
//! loops; every output row is computed by the same operations in the same order whichever rows
//! it is computed with, so a caller may split `W`'s rows over threads without changing a bit.

use super::error::KernelError;
use super::lanes::{Strided, dot_tile};
use super::view::{MatMut, MatRef};

/// Rows of `W` processed together (one pass over the triangle per block).
const ROWS: usize = 4;

fn check(
    lower: &MatRef<'_, f64>,
    w: &MatRef<'_, f64>,
    out: &MatMut<'_, f64>,
) -> Result<(), KernelError> {
    let d = lower.rows();
    if lower.cols() != d || w.cols() != d {
        return Err(KernelError::ShapeMismatch {
            operands: "W * G",
            left: w.shape(),
            right: lower.shape(),
        });
    }
    if out.shape() != w.shape() {
        return Err(KernelError::ShapeMismatch {
            operands: "out vs W * G",
            left: out.shape(),
            right: w.shape(),
        });
    }
    Ok(())
}

/// `out = W G` (`W` and `out` are `n x d`, `G` is `d x d` symmetric and only its lower
/// triangle, `row >= col`, is read). `out` is overwritten.
pub fn symm_rows(
    lower: MatRef<'_, f64>,
    w: MatRef<'_, f64>,
    mut out: MatMut<'_, f64>,
) -> Result<(), KernelError> {
    check(&lower, &w, &out)?;
    let (n, d) = w.shape();
    out.fill(0.0);
    let mut first = 0;
    while first < n {
        let rows = (n - first).min(ROWS);
        if rows == ROWS {
            block::<ROWS>(&lower, &w, &mut out, first, d);
        } else {
            for r in first..n {
                block::<1>(&lower, &w, &mut out, r, d);
            }
        }
        first += rows;
    }
    Ok(())
}

/// Rows `first .. first + R` of `out = W G`.
#[inline(always)]
fn block<const R: usize>(
    lower: &MatRef<'_, f64>,
    w: &MatRef<'_, f64>,
    out: &mut MatMut<'_, f64>,
    first: usize,
    d: usize,
) {
    let (lrs, lcs) = (lower.row_stride(), lower.col_stride());
    let ldata = lower.raw();
    let (wrs, wcs) = (w.row_stride(), w.col_stride());
    let wdata = w.raw();
    for i in 0..d {
        let row = Strided::new(ldata, i * lrs, lcs);
        let ws: [Strided<'_>; R] =
            core::array::from_fn(|r| Strided::new(wdata, (first + r) * wrs, wcs));
        // Left of the diagonal: out[o][i] += L[i][..i] . w_o[..i].
        let dots = dot_tile::<1, R>([row], ws, i)[0];
        let diag = ldata[i * lrs + i * lcs];
        for r in 0..R {
            let wi = wdata[(first + r) * wrs + i * wcs];
            *out.at_mut(first + r, i) += dots[r] + diag * wi;
            // The column below the diagonal, by symmetry: out[o][..i] += w_o[i] L[i][..i].
            if wi != 0.0 && i > 0 {
                axpy_row(wi, row, out, first + r, i);
            }
        }
    }
}

/// `out[o][..len] += alpha * x[..len]`.
#[inline(always)]
fn axpy_row(alpha: f64, x: Strided<'_>, out: &mut MatMut<'_, f64>, o: usize, len: usize) {
    if out.col_stride() == 1
        && let Some(y) = out.row_mut(o)
    {
        super::lanes::axpy(alpha, x, y, len);
        return;
    }
    for p in 0..len {
        *out.at_mut(o, p) += alpha * x.data[x.offset + p * x.stride];
    }
}

/// Scalar twin of [`symm_rows`]: `out[o][j] = sum_i w[o][i] G[i][j]` with `G[i][j]` read from
/// the lower triangle.
pub fn symm_rows_reference(
    lower: MatRef<'_, f64>,
    w: MatRef<'_, f64>,
    mut out: MatMut<'_, f64>,
) -> Result<(), KernelError> {
    check(&lower, &w, &out)?;
    let (n, d) = w.shape();
    for o in 0..n {
        for j in 0..d {
            let mut s = 0.0;
            for i in 0..d {
                let g = if i >= j {
                    lower.at(i, j)
                } else {
                    lower.at(j, i)
                };
                s += w.at(o, i) * g;
            }
            *out.at_mut(o, j) = s;
        }
    }
    Ok(())
}
