//! In-place solves with a lower-triangular f64 matrix and many right-hand sides:
//! `L Y = B` (forward substitution) and `L^T X = Y` (back substitution), the two halves of a
//! solve with a Cholesky factor.
//!
//! Only the lower triangle of `L`, diagonal included, is read; its strict upper triangle may
//! hold anything. The layout of `B` picks the inner loop (all use `wide::f64x4` lanes):
//! - rows of `B` contiguous (`col_stride == 1`, more than one right-hand side): each row of the
//!   solution is accumulated as `row_i -= sum_k L[i, k] row_k`, four rows `k` per pass, with
//!   lanes across right-hand sides;
//! - otherwise (e.g. `B` is a transposed row-major matrix, one right-hand side per row of the
//!   buffer), panels of 16 right-hand sides: for `L Y = B` each entry is a dot product of a row
//!   of `L` with the solved part of its column, four columns per register tile; for
//!   `L^T X = Y` with contiguous rows of `L`, four entries at a time are solved from a `4 x 4`
//!   diagonal block and their multiples of four rows of `L` subtracted from the rest of the
//!   column in one pass; with other layouts of `L`, each entry is a dot product of a column of
//!   `L` with the solved part.
//!
//! Shapes and the diagonal are checked before anything is written. Non-finite values off the
//! diagonal of `L` or in `B` are not rejected; they propagate into the solution.

use core::fmt;

use super::lanes::{Strided, axpy, axpy4, divide, dots};
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

/// Right-hand sides per panel in the column-wise loops: the row (or column) of `L` in use is
/// read from memory once per panel and then from L1 for each group of four columns.
const PANEL: usize = 16;

/// A lower-triangular matrix as its slice and strides.
#[derive(Clone, Copy)]
struct Tri<'a> {
    data: &'a [f64],
    rs: usize,
    cs: usize,
}

impl Tri<'_> {
    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.rs + j * self.cs]
    }

    /// Row `i` from column 0, as a strided vector.
    #[inline(always)]
    fn row(&self, i: usize) -> Strided<'_> {
        Strided::new(self.data, i * self.rs, self.cs)
    }
}

/// The right-hand sides as their slice and strides.
struct Rhs<'a> {
    data: &'a mut [f64],
    n: usize,
    m: usize,
    rs: usize,
    cs: usize,
}

impl Rhs<'_> {
    /// Column `c` from row `i`, as a strided vector.
    #[inline(always)]
    fn column(&self, i: usize, c: usize) -> Strided<'_> {
        Strided::new(self.data, i * self.rs + c * self.cs, self.rs)
    }

    #[inline(always)]
    fn at_mut(&mut self, i: usize, c: usize) -> &mut f64 {
        &mut self.data[i * self.rs + c * self.cs]
    }
}

fn split<'a>(l: MatRef<'a, f64>, b: &'a mut MatMut<'_, f64>) -> (Tri<'a>, Rhs<'a>) {
    let (n, m) = b.shape();
    let (rs, cs) = (b.row_stride(), b.col_stride());
    let tri = Tri {
        data: l.raw(),
        rs: l.row_stride(),
        cs: l.col_stride(),
    };
    let rhs = Rhs {
        data: b.raw_mut(),
        n,
        m,
        rs,
        cs,
    };
    (tri, rhs)
}

/// [`solve_lower_in_place`] without the checks: the caller guarantees a square `l` with as
/// many rows as `b` and a usable diagonal.
pub(crate) fn solve_lower_unchecked(l: MatRef<'_, f64>, mut b: MatMut<'_, f64>) {
    let (n, m) = b.shape();
    if n == 0 || m == 0 {
        return;
    }
    let (l, b) = split(l, &mut b);
    if b.cs == 1 && m > 1 {
        forward_rows(l, b);
    } else {
        forward_columns(l, b);
    }
}

/// [`solve_lower_transpose_in_place`] without the checks (same preconditions as
/// [`solve_lower_unchecked`]).
pub(crate) fn solve_lower_transpose_unchecked(l: MatRef<'_, f64>, mut b: MatMut<'_, f64>) {
    let (n, m) = b.shape();
    if n == 0 || m == 0 {
        return;
    }
    let (l, b) = split(l, &mut b);
    if b.cs == 1 && m > 1 {
        backward_rows(l, b);
    } else if l.cs == 1 {
        backward_columns_axpy(l, b);
    } else {
        backward_columns_dot(l, b);
    }
}

/// `L Y = B` with contiguous rows of `B`: `row_i -= sum_{k<i} L[i, k] row_k`, four rows `k`
/// per pass over `row_i`, then `row_i /= L[i, i]`.
fn forward_rows(l: Tri<'_>, b: Rhs<'_>) {
    let (n, m, brs) = (b.n, b.m, b.rs);
    for i in 0..n {
        // Rows k < i end before row i starts (row stride >= m).
        let (done, rest) = b.data.split_at_mut(i * brs);
        let yi = &mut rest[..m];
        let row = |k: usize| &done[k * brs..k * brs + m];
        let mut k = 0;
        while k + 4 <= i {
            let alpha = [0, 1, 2, 3].map(|q| -l.at(i, k + q));
            axpy4(alpha, [row(k), row(k + 1), row(k + 2), row(k + 3)], yi, m);
            k += 4;
        }
        for k in k..i {
            axpy(-l.at(i, k), Strided::new(done, k * brs, 1), yi, m);
        }
        divide(yi, l.at(i, i));
    }
}

/// `L^T X = Y` with contiguous rows of `B`: `row_i -= sum_{k>i} L[k, i] row_k` from the last
/// row up, four rows `k` per pass, then `row_i /= L[i, i]`.
fn backward_rows(l: Tri<'_>, b: Rhs<'_>) {
    let (n, m, brs) = (b.n, b.m, b.rs);
    for i in (0..n).rev() {
        // Rows k > i start at or after the end of row i (row stride >= m).
        let split_at = i * brs + m;
        let (head, solved) = b.data.split_at_mut(split_at);
        let xi = &mut head[i * brs..];
        let row = |k: usize| &solved[k * brs - split_at..k * brs - split_at + m];
        let mut k = i + 1;
        while k + 4 <= n {
            let alpha = [0, 1, 2, 3].map(|q| -l.at(k + q, i));
            axpy4(alpha, [row(k), row(k + 1), row(k + 2), row(k + 3)], xi, m);
            k += 4;
        }
        for k in k..n {
            axpy(
                -l.at(k, i),
                Strided::new(solved, k * brs - split_at, 1),
                xi,
                m,
            );
        }
        divide(xi, l.at(i, i));
    }
}

/// `L Y = B` one panel of columns at a time: `y_i = (b_i - L[i, 0..i] . y[0..i]) / L[i, i]`,
/// four columns per dot-product tile.
fn forward_columns(l: Tri<'_>, mut b: Rhs<'_>) {
    let (n, m) = (b.n, b.m);
    for c0 in (0..m).step_by(PANEL) {
        let c1 = (c0 + PANEL).min(m);
        for i in 0..n {
            let x = l.row(i);
            let lii = l.at(i, i);
            let mut c = c0;
            while c + 4 <= c1 {
                let s = dots::<4>(x, [0, 1, 2, 3].map(|q| b.column(0, c + q)), i);
                for q in 0..4 {
                    let v = b.at_mut(i, c + q);
                    *v = (*v - s[q]) / lii;
                }
                c += 4;
            }
            for c in c..c1 {
                let s = dots::<1>(x, [b.column(0, c)], i)[0];
                let v = b.at_mut(i, c);
                *v = (*v - s) / lii;
            }
        }
    }
}

/// `L^T X = Y` for rows of `L` contiguous, one panel of columns at a time, right-looking in
/// groups of four rows: solve `x[lo..lo + 4]` from the `4 x 4` diagonal block, then
/// `y[0..lo] -= sum_r x_r L[r, 0..lo]` in one pass over `y` (rows of `L` are contiguous).
fn backward_columns_axpy(l: Tri<'_>, mut b: Rhs<'_>) {
    let (n, m, brs, bcs) = (b.n, b.m, b.rs, b.cs);
    for c0 in (0..m).step_by(PANEL) {
        let c1 = (c0 + PANEL).min(m);
        let mut hi = n;
        while hi >= 4 {
            let lo = hi - 4;
            let rows = [0, 1, 2, 3].map(|q| &l.data[(lo + q) * l.rs..(lo + q) * l.rs + lo]);
            for c in c0..c1 {
                let mut x = [0.0; 4];
                for r in (lo..hi).rev() {
                    let mut v = *b.at_mut(r, c);
                    for s in r + 1..hi {
                        v -= l.at(s, r) * x[s - lo];
                    }
                    v /= l.at(r, r);
                    x[r - lo] = v;
                    *b.at_mut(r, c) = v;
                }
                let alpha = x.map(|v| -v);
                if brs == 1 {
                    axpy4(alpha, rows, &mut b.data[c * bcs..], lo);
                } else {
                    for p in 0..lo {
                        let s: f64 = (0..4).map(|q| alpha[q] * rows[q][p]).sum();
                        *b.at_mut(p, c) += s;
                    }
                }
            }
            hi = lo;
        }
        for i in (0..hi).rev() {
            let lii = l.at(i, i);
            for c in c0..c1 {
                let v = b.at_mut(i, c);
                *v /= lii;
                let xi = *v;
                for p in 0..i {
                    *b.at_mut(p, c) -= xi * l.at(i, p);
                }
            }
        }
    }
}

/// `L^T X = Y` for any strides of `L`, one panel of columns at a time, left-looking:
/// `x_i = (y_i - L[i+1.., i] . x[i+1..]) / L[i, i]`, four columns per dot-product tile.
fn backward_columns_dot(l: Tri<'_>, mut b: Rhs<'_>) {
    let (n, m) = (b.n, b.m);
    for c0 in (0..m).step_by(PANEL) {
        let c1 = (c0 + PANEL).min(m);
        for i in (0..n).rev() {
            let len = n - 1 - i;
            let lii = l.at(i, i);
            // Column i of L below the diagonal.
            let x = Strided::new(l.data, (i + 1) * l.rs + i * l.cs, l.rs);
            let mut c = c0;
            while c + 4 <= c1 {
                let s = if len == 0 {
                    [0.0; 4]
                } else {
                    dots::<4>(x, [0, 1, 2, 3].map(|q| b.column(i + 1, c + q)), len)
                };
                for q in 0..4 {
                    let v = b.at_mut(i, c + q);
                    *v = (*v - s[q]) / lii;
                }
                c += 4;
            }
            for c in c..c1 {
                let s = if len == 0 {
                    0.0
                } else {
                    dots::<1>(x, [b.column(i + 1, c)], len)[0]
                };
                let v = b.at_mut(i, c);
                *v = (*v - s) / lii;
            }
        }
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
