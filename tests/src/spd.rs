//! Seeded generators of f64 test matrices for the Cholesky, triangular-solve and ridge tests:
//! random dense matrices, symmetric positive definite matrices with a prescribed condition
//! number, and symmetric matrices whose Cholesky factorization fails at a chosen pivot.

use nalgebra::{DMatrix, DVector};

/// Sizes that sit on SIMD (4 lanes) and block edges, plus small ones.
pub const EDGE_SIZES: &[usize] = &[1, 2, 7, 8, 9, 15, 17, 63, 65, 129];

pub use crate::rng::Rng;

/// A `rows x cols` matrix with entries uniform in `[-1, 1)`.
pub fn uniform_matrix(rng: &mut Rng, rows: usize, cols: usize) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |_, _| rng.symmetric())
}

/// A `rows x cols` matrix with standard normal entries.
pub fn normal_matrix(rng: &mut Rng, rows: usize, cols: usize) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |_, _| rng.normal())
}

/// A Haar-like random orthogonal `n x n` matrix: the Q of a Gaussian matrix's QR.
pub fn orthogonal(rng: &mut Rng, n: usize) -> DMatrix<f64> {
    normal_matrix(rng, n, n).qr().q()
}

/// Geometric spectrum from 1 down to `1 / cond` over `n` values (`[1]` for `n == 1`).
pub fn geometric_spectrum(n: usize, cond: f64) -> DVector<f64> {
    DVector::from_fn(n, |i, _| {
        if n == 1 {
            1.0
        } else {
            cond.powf(-(i as f64) / (n - 1) as f64)
        }
    })
}

/// `Q diag(s) Q^T` for a random orthogonal `Q`, symmetrised exactly.
pub fn with_spectrum(rng: &mut Rng, s: &DVector<f64>) -> DMatrix<f64> {
    let q = orthogonal(rng, s.len());
    let a = &q * DMatrix::from_diagonal(s) * q.transpose();
    (&a + a.transpose()) * 0.5
}

/// A symmetric positive definite `n x n` matrix with eigenvalues spread geometrically from 1
/// to `1 / cond` (so its 2-norm condition number is `cond`, up to rounding).
pub fn spd_with_cond(rng: &mut Rng, n: usize, cond: f64) -> DMatrix<f64> {
    with_spectrum(rng, &geometric_spectrum(n, cond))
}

/// A symmetric matrix whose leading `index x index` block is positive definite (condition
/// number at most `cond`) and whose Cholesky pivot `index` is exactly `pivot` (< 0) in exact
/// arithmetic: an SPD matrix with its diagonal element `index` lowered by its own pivot plus
/// `-pivot`.
pub fn with_failing_pivot(
    rng: &mut Rng,
    n: usize,
    cond: f64,
    index: usize,
    pivot: f64,
) -> DMatrix<f64> {
    let mut a = spd_with_cond(rng, n, cond);
    let l = a.clone().cholesky().expect("SPD by construction").l();
    let own = l[(index, index)] * l[(index, index)];
    a[(index, index)] -= own - pivot;
    a
}

/// 2-norm condition number from the singular values (`inf` for a singular matrix).
pub fn condition_number(m: &DMatrix<f64>) -> f64 {
    let s = m.singular_values();
    let max = s.max();
    let min = s.min();
    if min == 0.0 { f64::INFINITY } else { max / min }
}
