//! Symmetric matrices in packed lower-triangular storage: Cholesky factorization in place and
//! the two triangular solves, in f64.
//!
//! An `n x n` symmetric matrix is stored as its lower triangle, row after row: element
//! `(i, j)` with `j <= i` sits at [`packed_index`]`(i, j) = i (i + 1) / 2 + j`, and the whole
//! matrix takes [`packed_len`]`(n) = n (n + 1) / 2` values, about half of the dense layout.
//! That halves the memory of the Gram or kernel matrices of the heap-free MLP merge
//! ([`merge::mlp`](crate::merge::mlp)), where memory, not speed, is the constraint.
//!
//! The factorization is the row-oriented (Cholesky-Banachiewicz) scheme: row `i` of `L` is
//! computed from the rows above it, so every inner product runs over two contiguous rows.
//! Pivots follow [`cholesky`](super::cholesky): the pivot of column `j` is
//! `d_j = A[j, j] - sum_{k<j} L[j, k]^2`; one that is not strictly positive (or NaN) stops the
//! factorization. The kernels are scalar and allocation-free; they are `O(n^3 / 6)` and meant
//! for matrices of a few hundred rows.

use core::fmt;

use super::cholesky::CholeskyInfo;
use super::view::MatMut;

/// Values in the packed lower triangle of an `n x n` matrix, `n (n + 1) / 2` (saturating).
pub fn packed_len(n: usize) -> usize {
    let (a, b) = if n.is_multiple_of(2) {
        (n / 2, n + 1)
    } else {
        (n, n.div_ceil(2))
    };
    a.saturating_mul(b)
}

/// Position of element `(i, j)`, `j <= i`, in the packed lower triangle.
#[inline]
pub fn packed_index(i: usize, j: usize) -> usize {
    debug_assert!(j <= i);
    i * (i + 1) / 2 + j
}

/// Why a packed kernel refused or failed.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum PackedError {
    /// The packed storage is shorter than [`packed_len`]`(n)`. Nothing was written.
    Length {
        /// Order of the matrix.
        n: usize,
        /// Values needed.
        needed: usize,
        /// Values given.
        found: usize,
    },
    /// The right-hand sides do not have `n` rows. Nothing was written.
    RhsRows {
        /// Order of the matrix.
        n: usize,
        /// Rows of the right-hand sides.
        found: usize,
    },
    /// The pivot of column `index` is not strictly positive (NaN included): the leading
    /// `(index + 1) x (index + 1)` block is not numerically positive definite. Rows before
    /// `index` hold their part of `L`.
    NonPositivePivot {
        /// Column of the failing pivot.
        index: usize,
        /// The pivot `A[j, j] - sum_k L[j, k]^2`.
        value: f64,
    },
}

impl fmt::Display for PackedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PackedError::Length { n, needed, found } => write!(
                f,
                "packed storage of a {n}x{n} matrix needs {needed} values, found {found}"
            ),
            PackedError::RhsRows { n, found } => {
                write!(
                    f,
                    "right-hand sides have {found} rows, the matrix is {n}x{n}"
                )
            }
            PackedError::NonPositivePivot { index, value } => write!(
                f,
                "matrix is not positive definite: pivot {index} is {value:e}"
            ),
        }
    }
}

impl core::error::Error for PackedError {}

fn check_len(n: usize, found: usize) -> Result<(), PackedError> {
    let needed = packed_len(n);
    if found < needed {
        return Err(PackedError::Length { n, needed, found });
    }
    Ok(())
}

/// `sum_k a[k] b[k]` in order (one rounding per term, as a plain loop).
#[inline]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut s = 0.0;
    for (x, y) in a.iter().zip(b) {
        s += x * y;
    }
    s
}

/// Factors the packed `n x n` symmetric matrix `a = L L^T` in place (`L` over the lower
/// triangle). Reports the smallest and largest pivot (`L[j, j]^2`).
pub fn cholesky_packed(a: &mut [f64], n: usize) -> Result<CholeskyInfo, PackedError> {
    check_len(n, a.len())?;
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for i in 0..n {
        let ri = packed_index(i, 0);
        let (above, rest) = a.split_at_mut(ri);
        let row = &mut rest[..=i];
        for j in 0..i {
            let rj = packed_index(j, 0);
            let lj = &above[rj..rj + j + 1];
            let s = row[j] - dot(&row[..j], &lj[..j]);
            row[j] = s / lj[j];
        }
        let d = row[i] - dot(&row[..i], &row[..i]);
        if d.is_nan() || d <= 0.0 {
            return Err(PackedError::NonPositivePivot { index: i, value: d });
        }
        min = min.min(d);
        max = max.max(d);
        row[i] = libm::sqrt(d);
    }
    Ok(CholeskyInfo {
        min_pivot: min,
        max_pivot: max,
    })
}

/// Solves `L L^T X = B` in place for the packed factor `l` of [`cholesky_packed`]: `b` holds
/// `B` (`n x m`, any strides) and receives `X`.
pub fn solve_packed(l: &[f64], n: usize, mut b: MatMut<'_, f64>) -> Result<(), PackedError> {
    check_len(n, l.len())?;
    if b.rows() != n {
        return Err(PackedError::RhsRows { n, found: b.rows() });
    }
    let m = b.cols();
    // L Y = B, row by row: y_i = (b_i - sum_{k<i} L[i, k] y_k) / L[i, i].
    for i in 0..n {
        let ri = packed_index(i, 0);
        for k in 0..i {
            let lik = l[ri + k];
            for c in 0..m {
                let v = b.at(k, c);
                *b.at_mut(i, c) -= lik * v;
            }
        }
        let d = l[ri + i];
        for c in 0..m {
            *b.at_mut(i, c) /= d;
        }
    }
    // L^T X = Y, from the last row up: x_i = y_i / L[i, i], then y_k -= L[i, k] x_i for k < i
    // (row i of L is contiguous).
    for i in (0..n).rev() {
        let ri = packed_index(i, 0);
        let d = l[ri + i];
        for c in 0..m {
            *b.at_mut(i, c) /= d;
        }
        for k in 0..i {
            let lik = l[ri + k];
            for c in 0..m {
                let v = b.at(i, c);
                *b.at_mut(k, c) -= lik * v;
            }
        }
    }
    Ok(())
}
