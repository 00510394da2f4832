//! In-place solves with a lower-triangular f64 matrix and many right-hand sides:
//! `L Y = B` (forward substitution) and `L^T X = Y` (back substitution), the two halves of a
//! solve with a Cholesky factor.
//!
//! Only the lower triangle of `L`, diagonal included, is read; its strict upper triangle may
//! hold anything. The layout of `B` picks the inner loop:
//! - rows of `B` contiguous (`col_stride == 1`): each row of the solution is accumulated as
//!   `row_i -= L[i, k] * row_k` with `wide::f64x4` lanes across right-hand sides;
//! - otherwise (e.g. `B` is a transposed row-major matrix, one right-hand side per row of the
//!   buffer): four right-hand sides at a time, each entry is one `f64x4` dot product of a row
//!   (or column, for `L^T`) of `L` with the solved part of the four columns.
//!
//! Shapes and the diagonal are checked before anything is written. Non-finite values off the
//! diagonal of `L` or in `B` are not rejected; they propagate into the solution.

use core::fmt;

use super::lanes::{Strided, axpy, divide, dots};
use super::view::{MatMut, MatRef};

/// Why a triangular solve was rejected. Nothing is written to `B` on error.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum TriangularError {
    /// `L` is not square.
    NotSquare {
        /// Rows of `L`.
        rows: usize,
        /// Columns of `L`.
        cols: usize,
    },
    /// `B` does not have as many rows as `L`. Both shapes are `(rows, cols)`.
    ShapeMismatch {
        /// Shape of `L`.
        l: (usize, usize),
        /// Shape of `B`.
        b: (usize, usize),
    },
    /// A diagonal element of `L` is zero, NaN or infinite: the first such index.
    InvalidDiagonal {
        /// Index `i` of `L[i, i]`.
        index: usize,
        /// The value of `L[i, i]`.
        value: f64,
    },
}

impl fmt::Display for TriangularError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TriangularError::NotSquare { rows, cols } => {
                write!(f, "triangular matrix must be square, got {rows}x{cols}")
            }
            TriangularError::ShapeMismatch { l, b } => write!(
                f,
                "shape mismatch: L is {}x{}, right-hand sides are {}x{}",
                l.0, l.1, b.0, b.1
            ),
            TriangularError::InvalidDiagonal { index, value } => write!(
                f,
                "triangular matrix has an unusable diagonal element L[{index}, {index}] = {value:e}"
            ),
        }
    }
}

impl core::error::Error for TriangularError {}

fn check(l: MatRef<'_, f64>, b: &MatMut<'_, f64>) -> Result<(), TriangularError> {
    let (rows, cols) = l.shape();
    if rows != cols {
        return Err(TriangularError::NotSquare { rows, cols });
    }
    if b.rows() != rows {
        return Err(TriangularError::ShapeMismatch {
            l: l.shape(),
            b: b.shape(),
        });
    }
    for i in 0..rows {
        let value = l.at(i, i);
        if value == 0.0 || !value.is_finite() {
            return Err(TriangularError::InvalidDiagonal { index: i, value });
        }
    }
    Ok(())
}

/// Solves `L Y = B` for `Y` in place: `b` (`n x m`, `m` right-hand sides) is overwritten by
/// `Y`. `l` is `n x n`; only its lower triangle is read.
pub fn solve_lower_in_place(l: MatRef<'_, f64>, b: MatMut<'_, f64>) -> Result<(), TriangularError> {
    check(l, &b)?;
    solve_lower_unchecked(l, b);
    Ok(())
}

/// Solves `L^T X = Y` for `X` in place: `b` (`n x m`) is overwritten by `X`. `l` is `n x n`;
/// only its lower triangle is read.
pub fn solve_lower_transpose_in_place(
    l: MatRef<'_, f64>,
    b: MatMut<'_, f64>,
) -> Result<(), TriangularError> {
    check(l, &b)?;
    solve_lower_transpose_unchecked(l, b);
    Ok(())
}

/// Whether to run the row-wise (`row_i -= c * row_k`) inner loop.
fn rows_contiguous(b: &MatMut<'_, f64>) -> bool {
    b.col_stride() == 1 && b.cols() > 1
}

/// [`solve_lower_in_place`] without the checks: the caller guarantees a square `l` with as
/// many rows as `b` and a usable diagonal.
pub(crate) fn solve_lower_unchecked(l: MatRef<'_, f64>, mut b: MatMut<'_, f64>) {
    let (n, m) = b.shape();
    if n == 0 || m == 0 {
        return;
    }
    let rows_path = rows_contiguous(&b);
    let (lrs, lcs) = (l.row_stride(), l.col_stride());
    let ld = l.raw();
    let (brs, bcs) = (b.row_stride(), b.col_stride());
    let bd = b.raw_mut();
    if rows_path {
        for i in 0..n {
            // Rows k < i end before row i starts (row stride >= m).
            let (done, rest) = bd.split_at_mut(i * brs);
            let yi = &mut rest[..m];
            for k in 0..i {
                axpy(
                    -ld[i * lrs + k * lcs],
                    Strided::new(done, k * brs, 1),
                    yi,
                    m,
                );
            }
            divide(yi, ld[i * (lrs + lcs)]);
        }
        return;
    }
    let mut c = 0;
    while c < m {
        let w = (m - c).min(4);
        for i in 0..n {
            let x = Strided::new(ld, i * lrs, lcs);
            let lii = ld[i * (lrs + lcs)];
            let s: [f64; 4] = if w == 4 {
                let ys = [0, 1, 2, 3].map(|q| Strided::new(bd, (c + q) * bcs, brs));
                dots::<4>(x, ys, i)
            } else {
                let mut s = [0.0; 4];
                for q in 0..w {
                    s[q] = dots::<1>(x, [Strided::new(bd, (c + q) * bcs, brs)], i)[0];
                }
                s
            };
            for q in 0..w {
                let v = &mut bd[i * brs + (c + q) * bcs];
                *v = (*v - s[q]) / lii;
            }
        }
        c += w;
    }
}

/// [`solve_lower_transpose_in_place`] without the checks (same preconditions as
/// [`solve_lower_unchecked`]).
pub(crate) fn solve_lower_transpose_unchecked(l: MatRef<'_, f64>, mut b: MatMut<'_, f64>) {
    let (n, m) = b.shape();
    if n == 0 || m == 0 {
        return;
    }
    let rows_path = rows_contiguous(&b);
    let (lrs, lcs) = (l.row_stride(), l.col_stride());
    let ld = l.raw();
    let (brs, bcs) = (b.row_stride(), b.col_stride());
    let bd = b.raw_mut();
    if rows_path {
        for i in (0..n).rev() {
            // Rows k > i start at or after the end of row i (row stride >= m).
            let (head, solved) = bd.split_at_mut(i * brs + m);
            let xi = &mut head[i * brs..];
            for k in i + 1..n {
                let xk = Strided::new(solved, k * brs - (i * brs + m), 1);
                axpy(-ld[k * lrs + i * lcs], xk, xi, m);
            }
            divide(xi, ld[i * (lrs + lcs)]);
        }
        return;
    }
    let mut c = 0;
    while c < m {
        let w = (m - c).min(4);
        for i in (0..n).rev() {
            // Column i of L below the diagonal against the solved part of each column of B.
            let x = Strided::new(ld, (i + 1) * lrs + i * lcs, lrs);
            let lii = ld[i * (lrs + lcs)];
            let len = n - 1 - i;
            let s: [f64; 4] = if len == 0 {
                [0.0; 4]
            } else if w == 4 {
                let ys = [0, 1, 2, 3].map(|q| Strided::new(bd, (i + 1) * brs + (c + q) * bcs, brs));
                dots::<4>(x, ys, len)
            } else {
                let mut s = [0.0; 4];
                for q in 0..w {
                    let y = Strided::new(bd, (i + 1) * brs + (c + q) * bcs, brs);
                    s[q] = dots::<1>(x, [y], len)[0];
                }
                s
            };
            for q in 0..w {
                let v = &mut bd[i * brs + (c + q) * bcs];
                *v = (*v - s[q]) / lii;
            }
        }
        c += w;
    }
}

/// Scalar twin of [`solve_lower_in_place`]: one right-hand side at a time,
/// `y_i = (b_i - sum_{k<i} L[i, k] y_k) / L[i, i]` with the sum in increasing `k`.
pub fn solve_lower_reference(
    l: MatRef<'_, f64>,
    mut b: MatMut<'_, f64>,
) -> Result<(), TriangularError> {
    check(l, &b)?;
    let (n, m) = b.shape();
    for c in 0..m {
        for i in 0..n {
            let mut s = b.at(i, c);
            for k in 0..i {
                s -= l.at(i, k) * b.at(k, c);
            }
            *b.at_mut(i, c) = s / l.at(i, i);
        }
    }
    Ok(())
}

/// Scalar twin of [`solve_lower_transpose_in_place`]: one right-hand side at a time,
/// `x_i = (y_i - sum_{k>i} L[k, i] x_k) / L[i, i]` for `i` from `n - 1` down.
pub fn solve_lower_transpose_reference(
    l: MatRef<'_, f64>,
    mut b: MatMut<'_, f64>,
) -> Result<(), TriangularError> {
    check(l, &b)?;
    let (n, m) = b.shape();
    for c in 0..m {
        for i in (0..n).rev() {
            let mut s = b.at(i, c);
            for k in i + 1..n {
                s -= l.at(k, i) * b.at(k, c);
            }
            *b.at_mut(i, c) = s / l.at(i, i);
        }
    }
    Ok(())
}
