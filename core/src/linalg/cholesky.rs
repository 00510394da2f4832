//! Lower Cholesky factorization `A = L L^T` of a symmetric positive definite f64 matrix, in
//! place on its lower triangle.
//!
//! The blocked kernel is left-looking: block column `J = [j0, j1)` is first updated by all
//! columns left of it, `A[i, j] -= L[i, 0..j0] . L[j, 0..j0]` for `i >= j` (the `wide::f64x4`
//! inner loop: rows `i` two at a time against four block rows `j`, a `2 x 4` tile of dot
//! products in registers), then factored column by column. The `nb` rows of the block stay in
//! cache while the rows below stream past them.
//!
//! Both kernels read only the lower triangle (`row >= col`) and write `L` there; the strict
//! upper triangle is never touched, so it can hold other data (the ridge solver keeps the
//! original Gram block there).
//!
//! **Pivots.** The pivot of column `j` is the Schur-complement diagonal
//! `d_j = A[j, j] - sum_{k<j} L[j, k]^2`, i.e. `L[j, j]^2`. A pivot that is not strictly
//! positive (including NaN) stops the factorization with
//! [`CholeskyError::NonPositivePivot`]; [`CholeskyInfo`] reports the smallest and largest
//! pivot on success, whose ratio estimates how close `A` is to singular.

use core::fmt;
use core::ops::Range;

use super::lanes::{Strided, dot, dot_tile, dots};
use super::view::MatMut;

/// Tuning knobs of [`cholesky_in_place`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CholeskyParams {
    /// Columns per block (values below 1 are treated as 1). Default 32: the block's rows of
    /// `L` (`32 x j0` doubles) stay in L2 for the sizes pleas sees (a few thousand inputs),
    /// while the per-block column factorization, which is not tiled, stays a small share.
    pub block_size: usize,
}

impl CholeskyParams {
    /// These params with `block_size` replaced.
    pub const fn with_block_size(mut self, block_size: usize) -> Self {
        self.block_size = block_size;
        self
    }
}

impl Default for CholeskyParams {
    fn default() -> Self {
        Self { block_size: 32 }
    }
}

/// What a successful factorization reports. Pivots are `L[j, j]^2` (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct CholeskyInfo {
    /// Smallest pivot (`+inf` for a `0 x 0` matrix).
    pub min_pivot: f64,
    /// Largest pivot (`-inf` for a `0 x 0` matrix).
    pub max_pivot: f64,
}

/// Why a Cholesky factorization failed.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum CholeskyError {
    /// The matrix is not square. Nothing was written.
    NotSquare {
        /// Rows of the matrix.
        rows: usize,
        /// Columns of the matrix.
        cols: usize,
    },
    /// An element of the lower triangle is NaN or infinite: the first one in row-major order
    /// (`col <= row`). Nothing was written.
    NonFinite {
        /// Row of the element.
        row: usize,
        /// Column of the element.
        col: usize,
    },
    /// The pivot of column `index` is not strictly positive: the leading
    /// `(index + 1) x (index + 1)` block is not (numerically) positive definite. `value` is
    /// that pivot; it is NaN or `-inf` when the factorization overflowed. Columns before
    /// `index` hold their part of `L`; the rest of the lower triangle is partly updated.
    NonPositivePivot {
        /// Column of the failing pivot.
        index: usize,
        /// The pivot `A[j, j] - sum_k L[j, k]^2`.
        value: f64,
    },
}

impl fmt::Display for CholeskyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CholeskyError::NotSquare { rows, cols } => {
                write!(f, "Cholesky needs a square matrix, got {rows}x{cols}")
            }
            CholeskyError::NonFinite { row, col } => {
                write!(f, "non-finite matrix element at ({row}, {col})")
            }
            CholeskyError::NonPositivePivot { index, value } => write!(
                f,
                "matrix is not positive definite: pivot {index} is {value:e}"
            ),
        }
    }
}

impl core::error::Error for CholeskyError {}

/// Shape and finiteness checks shared by both kernels; nothing is written on error.
fn check(a: &MatMut<'_, f64>) -> Result<(), CholeskyError> {
    let (rows, cols) = a.shape();
    if rows != cols {
        return Err(CholeskyError::NotSquare { rows, cols });
    }
    for i in 0..rows {
        for j in 0..=i {
            if !a.at(i, j).is_finite() {
                return Err(CholeskyError::NonFinite { row: i, col: j });
            }
        }
    }
    Ok(())
}

/// A pivot that is not strictly positive: column `index`, pivot `value`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PivotFailure {
    pub(crate) index: usize,
    pub(crate) value: f64,
}

impl From<PivotFailure> for CholeskyError {
    fn from(p: PivotFailure) -> Self {
        CholeskyError::NonPositivePivot {
            index: p.index,
            value: p.value,
        }
    }
}

/// Running minimum and maximum of the pivots.
struct PivotRange {
    min: f64,
    max: f64,
}

impl PivotRange {
    fn new() -> Self {
        Self {
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// Checks pivot `d` of column `index` and returns `L[index, index] = sqrt(d)`.
    #[inline]
    fn accept(&mut self, index: usize, d: f64) -> Result<f64, PivotFailure> {
        if d.is_nan() || d <= 0.0 {
            return Err(PivotFailure { index, value: d });
        }
        self.min = self.min.min(d);
        self.max = self.max.max(d);
        Ok(libm::sqrt(d))
    }

    fn info(&self) -> CholeskyInfo {
        CholeskyInfo {
            min_pivot: self.min,
            max_pivot: self.max,
        }
    }
}

/// Factors `A = L L^T` in place: reads the lower triangle of the `n x n` view `a`, writes `L`
/// over it, leaves the strict upper triangle untouched. Any strides are accepted; unit column
/// stride (row-major rows) is the fast layout.
///
/// Errors: [`CholeskyError::NotSquare`] and [`CholeskyError::NonFinite`] are detected before
/// anything is written; [`CholeskyError::NonPositivePivot`] reports the first failing column.
pub fn cholesky_in_place(
    a: MatMut<'_, f64>,
    params: CholeskyParams,
) -> Result<CholeskyInfo, CholeskyError> {
    check(&a)?;
    Ok(cholesky_unchecked(a, params)?)
}

/// `A[r, j] -= L[r, 0..k] . L[j, 0..k]` for `j` in `cols`, four columns at a time.
fn update_row(data: &mut [f64], rs: usize, cs: usize, r: usize, cols: Range<usize>, k: usize) {
    let at = |i: usize, j: usize| i * rs + j * cs;
    let mut j = cols.start;
    while j + 4 <= cols.end {
        let x = Strided::new(data, at(r, 0), cs);
        let ys = [0, 1, 2, 3].map(|q| Strided::new(data, at(j + q, 0), cs));
        let d = dots::<4>(x, ys, k);
        for q in 0..4 {
            data[at(r, j + q)] -= d[q];
        }
        j += 4;
    }
    for j in j..cols.end {
        let d = dot(
            Strided::new(data, at(r, 0), cs),
            Strided::new(data, at(j, 0), cs),
            k,
        );
        data[at(r, j)] -= d;
    }
}

/// [`cholesky_in_place`] without the shape and finiteness checks: the caller guarantees a
/// square matrix with a finite lower triangle, so only a pivot can fail.
pub(crate) fn cholesky_unchecked(
    mut a: MatMut<'_, f64>,
    params: CholeskyParams,
) -> Result<CholeskyInfo, PivotFailure> {
    let n = a.rows();
    let nb = params.block_size.max(1);
    let (rs, cs) = (a.row_stride(), a.col_stride());
    let data = a.raw_mut();
    let at = |i: usize, j: usize| i * rs + j * cs;
    let mut pivots = PivotRange::new();

    for j0 in (0..n).step_by(nb) {
        let j1 = (j0 + nb).min(n);

        // 1. Update block column J by the factored columns 0..j0, two rows at a time.
        if j0 > 0 {
            let mut i = j0;
            while i + 1 < n {
                // Columns in the lower triangle of both rows i and i + 1.
                let both = (i + 1).min(j1);
                let mut j = j0;
                while j + 4 <= both {
                    let xs = [i, i + 1].map(|r| Strided::new(data, at(r, 0), cs));
                    let ys = [0, 1, 2, 3].map(|q| Strided::new(data, at(j + q, 0), cs));
                    let d = dot_tile::<2, 4>(xs, ys, j0);
                    for r in 0..2 {
                        for q in 0..4 {
                            data[at(i + r, j + q)] -= d[r][q];
                        }
                    }
                    j += 4;
                }
                update_row(data, rs, cs, i, j..(i + 1).min(j1), j0);
                update_row(data, rs, cs, i + 1, j..(i + 2).min(j1), j0);
                i += 2;
            }
            if i < n {
                update_row(data, rs, cs, i, j0..(i + 1).min(j1), j0);
            }
        }

        // 2. Factor block column J using its own columns j0..j.
        for j in j0..j1 {
            let len = j - j0;
            let lj = Strided::new(data, at(j, j0), cs);
            let d = data[at(j, j)] - dot(lj, lj, len);
            let ljj = pivots.accept(j, d)?;
            data[at(j, j)] = ljj;
            let mut i = j + 1;
            while i + 4 <= n {
                let xs = [0, 1, 2, 3].map(|r| Strided::new(data, at(i + r, j0), cs));
                let lj = Strided::new(data, at(j, j0), cs);
                let s = dot_tile::<4, 1>(xs, [lj], len);
                for r in 0..4 {
                    let v = &mut data[at(i + r, j)];
                    *v = (*v - s[r][0]) / ljj;
                }
                i += 4;
            }
            for i in i..n {
                let li = Strided::new(data, at(i, j0), cs);
                let lj = Strided::new(data, at(j, j0), cs);
                let s = dot(li, lj, len);
                let v = &mut data[at(i, j)];
                *v = (*v - s) / ljj;
            }
        }
    }
    Ok(pivots.info())
}

/// Scalar twin of [`cholesky_in_place`], the unblocked textbook algorithm (column by column,
/// `L[i, j] = (A[i, j] - sum_{k<j} L[i, k] L[j, k]) / L[j, j]`, sums in increasing `k`). Same
/// contract, same errors.
pub fn cholesky_reference(mut a: MatMut<'_, f64>) -> Result<CholeskyInfo, CholeskyError> {
    check(&a)?;
    let n = a.rows();
    let mut pivots = PivotRange::new();
    for j in 0..n {
        let mut d = a.at(j, j);
        for k in 0..j {
            d -= a.at(j, k) * a.at(j, k);
        }
        let ljj = pivots.accept(j, d)?;
        *a.at_mut(j, j) = ljj;
        for i in j + 1..n {
            let mut s = a.at(i, j);
            for k in 0..j {
                s -= a.at(i, k) * a.at(j, k);
            }
            *a.at_mut(i, j) = s / ljj;
        }
    }
    Ok(pivots.info())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// `A = B B^T + n I` for a deterministic `B`, row-major `n x n`.
    fn spd(n: usize) -> Vec<f64> {
        let b: Vec<f64> = (0..n * n)
            .map(|i| ((i * 7919) % 101) as f64 / 50.0 - 1.0)
            .collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                let s: f64 = (0..n).map(|k| b[i * n + k] * b[j * n + k]).sum();
                a[i * n + j] = s + if i == j { n as f64 } else { 0.0 };
            }
        }
        a
    }

    #[test]
    fn blocked_matches_reference_across_block_edges() {
        // Under Miri (`scripts/miri.sh`): fewer sizes, still across a block edge.
        let (sizes, blocks): (&[usize], &[usize]) = if cfg!(miri) {
            (&[0, 1, 3, 5, 9], &[1, 4, 100])
        } else {
            (&[0, 1, 3, 4, 5, 31, 32, 33, 70], &[1, 3, 4, 32, 100])
        };
        for &n in sizes {
            for &nb in blocks {
                let a = spd(n);
                let mut x = a.clone();
                let mut y = a.clone();
                let p = CholeskyParams::default().with_block_size(nb);
                let i1 = cholesky_in_place(MatMut::new(&mut x, n, n).unwrap(), p).unwrap();
                let i2 = cholesky_reference(MatMut::new(&mut y, n, n).unwrap()).unwrap();
                for i in 0..n {
                    for j in 0..n {
                        let (u, v) = (x[i * n + j], y[i * n + j]);
                        if j > i {
                            assert_eq!(u, a[i * n + j]);
                        } else {
                            assert!((u - v).abs() <= 1e-12 * (1.0 + v.abs()), "n {n} nb {nb}");
                        }
                    }
                }
                if n > 0 {
                    assert!((i1.min_pivot - i2.min_pivot).abs() <= 1e-10 * i2.min_pivot);
                    assert!((i1.max_pivot - i2.max_pivot).abs() <= 1e-10 * i2.max_pivot);
                }
            }
        }
    }

    #[test]
    fn errors_carry_position() {
        let mut a = spd(5);
        a[3 * 5 + 1] = f64::NAN;
        let e = cholesky_in_place(MatMut::new(&mut a, 5, 5).unwrap(), Default::default());
        assert_eq!(e, Err(CholeskyError::NonFinite { row: 3, col: 1 }));
        let mut a = [1.0, 0.0, 2.0, 1.0];
        let e = cholesky_in_place(MatMut::new(&mut a, 2, 2).unwrap(), Default::default());
        assert_eq!(
            e,
            Err(CholeskyError::NonPositivePivot {
                index: 1,
                value: -3.0
            })
        );
        let mut a = [0.0; 6];
        let e = cholesky_reference(MatMut::new(&mut a, 2, 3).unwrap());
        assert_eq!(e, Err(CholeskyError::NotSquare { rows: 2, cols: 3 }));
    }
}
