//! f64 reference solutions for the ridge tests: nalgebra's SVD solve of a square system,
//! refined with residuals computed in twice the working precision, so that the oracle's own
//! error is `~ eps ||w||` rather than `~ eps cond ||w||` and the comparison measures the solver
//! under test alone.

use nalgebra::DMatrix;

/// `b - a w` with every product and sum error-free transformed (Ogita-Rump-Oishi `Dot2`):
/// accurate as if computed in twice the working precision, then rounded.
pub fn residual_dot2(a: &DMatrix<f64>, w: &DMatrix<f64>, b: &DMatrix<f64>) -> DMatrix<f64> {
    DMatrix::from_fn(b.nrows(), b.ncols(), |i, c| {
        let mut sum = b[(i, c)];
        let mut err = 0.0;
        for k in 0..a.ncols() {
            // TwoProduct: p + e == -a_ik w_kc exactly.
            let p = -a[(i, k)] * w[(k, c)];
            let e = (-a[(i, k)]).mul_add(w[(k, c)], -p);
            // TwoSum: t + s_err == sum + p exactly.
            let t = sum + p;
            let z = t - sum;
            let s_err = (sum - (t - z)) + (p - z);
            sum = t;
            err += s_err + e;
        }
        sum + err
    })
}

/// The solution of the square, non-singular system `a w = b`: nalgebra's SVD solve followed
/// by `steps` rounds of iterative refinement with [`residual_dot2`] residuals, the corrections
/// solved by LU with full pivoting. For `cond(a) eps << 1` each round gains a factor
/// `~ cond eps` of accuracy, so two or three rounds reach the working precision.
///
/// The corrections do not reuse the SVD: on some small ill-conditioned matrices nalgebra's SVD
/// is off by more than `1 / cond` (seen: a 3 x 3 block with cond 6.6e4 whose SVD solve left a
/// residual 1e5 times the Cholesky one), and refinement with an operator that inaccurate does
/// not converge. Full-pivot LU is backward stable and independent of the Cholesky under test.
pub fn refined_svd_solve(a: &DMatrix<f64>, b: &DMatrix<f64>, steps: usize) -> DMatrix<f64> {
    let svd = a.clone().svd(true, true);
    let mut w = svd.solve(b, 0.0).expect("U and V were computed");
    let lu = a.clone().full_piv_lu();
    for _ in 0..steps {
        let r = residual_dot2(a, &w, b);
        if let Some(dw) = lu.solve(&r) {
            w += dw;
        }
    }
    w
}
