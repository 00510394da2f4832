//! The dual (sample-space) ridge solve and the packed Cholesky kernels under it: against an
//! SVD ridge solution of the samples in f64 (nalgebra), against the primal solve of the Gram
//! (`ridge_solve`), on well-conditioned, rank-deficient (repeated samples, constant columns)
//! and wide (`k > N`) problems; the ridge it reports; its residual; retries; and every typed
//! error. Packed Cholesky against nalgebra's.

use nalgebra::DMatrix;
use pleas_core::linalg::{
    MatMut, MatRef, PackedError, cholesky_packed, packed_index, packed_len, solve_packed,
};
use pleas_core::lstsq::dual::{
    DualError, DualOperand, DualParams, dual_factor, dual_kernel_len, dual_ridge_scratch_len,
    dual_ridge_solve, dual_solve,
};
use pleas_core::lstsq::{NormalEquations, RidgeParams, ridge_solve, ridge_solve_scratch_len};
use pleas_tests::oracle::refined_svd_solve;
use pleas_tests::spd::{Rng, spd_with_cond, with_failing_pivot};
use pleas_tests::tolerance::{
    CHOLESKY_BACKWARD, DUAL_FORWARD, DUAL_RESIDUAL, FAILING_PIVOT_ABS, PRIMAL_SHARE,
    RIDGE_VALUE_REL, SVD_REFINED, TRIANGULAR_FORWARD,
};
use proptest::prelude::*;

const EPS: f64 = f64::EPSILON;

/// How the samples are drawn.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Standard normal entries.
    Gaussian,
    /// Normal entries, then every sample repeated once (`X X^T` is singular without the ridge).
    Repeated,
    /// Normal entries with a few constant columns (collinear with the intercept).
    ConstantColumns,
    /// Normal entries scaled by `10^e`.
    Scaled(i32),
}

/// One problem: samples `x` (`n x kp`, f32), intercept flag, targets `t` (`n x m`, f32), prior
/// `w0` (`m x k`, f32) or none.
#[derive(Debug, Clone)]
struct Problem {
    n: usize,
    kp: usize,
    m: usize,
    intercept: bool,
    x: Vec<f32>,
    t: Vec<f32>,
    w0: Option<Vec<f32>>,
}

impl Problem {
    fn new(
        seed: u64,
        n: usize,
        kp: usize,
        m: usize,
        intercept: bool,
        prior: bool,
        kind: Kind,
    ) -> Self {
        let mut rng = Rng::new(seed);
        let scale = match kind {
            Kind::Scaled(e) => 10f32.powi(e),
            _ => 1.0,
        };
        let mut x: Vec<f32> = (0..n * kp).map(|_| scale * rng.normal_f32()).collect();
        match kind {
            Kind::Repeated => {
                for s in (1..n).step_by(2) {
                    for j in 0..kp {
                        x[s * kp + j] = x[(s - 1) * kp + j];
                    }
                }
            }
            Kind::ConstantColumns => {
                for j in (0..kp).step_by(3) {
                    for s in 0..n {
                        x[s * kp + j] = -1.0;
                    }
                }
            }
            _ => {}
        }
        let k = kp + usize::from(intercept);
        let t = (0..n * m).map(|_| rng.normal_f32()).collect();
        let w0 = prior.then(|| (0..m * k).map(|_| 0.3 * rng.normal_f32()).collect());
        Problem {
            n,
            kp,
            m,
            intercept,
            x,
            t,
            w0,
        }
    }

    fn k(&self) -> usize {
        self.kp + usize::from(self.intercept)
    }

    /// `X` with the intercept column, in f64.
    fn x_aug(&self) -> DMatrix<f64> {
        DMatrix::from_fn(self.n, self.k(), |s, j| {
            if j < self.kp {
                f64::from(self.x[s * self.kp + j])
            } else {
                1.0
            }
        })
    }

    fn t(&self) -> DMatrix<f64> {
        DMatrix::from_fn(self.n, self.m, |s, o| f64::from(self.t[s * self.m + o]))
    }

    fn w0(&self) -> DMatrix<f64> {
        match &self.w0 {
            Some(w) => DMatrix::from_fn(self.m, self.k(), |o, j| f64::from(w[o * self.k() + j])),
            None => DMatrix::zeros(self.m, self.k()),
        }
    }

    /// The dual solve: weights (`m x k`) and its info.
    fn dual(
        &self,
        params: DualParams,
    ) -> Result<(DMatrix<f64>, pleas_core::lstsq::dual::DualInfo), DualError> {
        let x = MatRef::new(&self.x, self.n, self.kp).unwrap();
        let t = MatRef::new(&self.t, self.n, self.m).unwrap();
        let prior = self
            .w0
            .as_ref()
            .map(|w| MatRef::new(w, self.m, self.k()).unwrap());
        let mut w = vec![f64::NAN; self.m * self.k()];
        let mut scratch = vec![f64::NAN; dual_ridge_scratch_len(self.n, self.m)];
        let info = dual_ridge_solve(
            x,
            self.intercept,
            t,
            prior,
            params,
            MatMut::new(&mut w, self.m, self.k()).unwrap(),
            &mut scratch,
        )?;
        Ok((DMatrix::from_row_slice(self.m, self.k(), &w), info))
    }

    /// `mean(diag X^T X)` and the ridge of `params`, computed here.
    fn ridge(&self, params: DualParams) -> f64 {
        let x = self.x_aug();
        let mean = (0..self.k())
            .map(|j| x.column(j).norm_squared())
            .sum::<f64>()
            / self.k() as f64;
        params.relative_ridge * mean + params.absolute_ridge
    }

    /// The ridge solution by nalgebra's SVD of the augmented least-squares problem
    /// `[X; sqrt(lambda) I] dW^T = [E; 0]` (tall, full column rank for `lambda > 0`), and the
    /// oracle's own error bound. The SVD of the samples themselves is no oracle: nalgebra's SVD
    /// of some exactly rank-deficient matrices (repeated samples) does not reconstruct them
    /// (seen: a 6 x 19 matrix of rank 3 off by 2e-2). Even on the augmented matrix its
    /// reconstruction is only good to `~1e-12` relative, so the measured reconstruction error
    /// `||dA||` is taken as the oracle's backward error, which moves a least-squares solution by
    /// `||dA|| / s_min (||x|| + ||r|| / s_min)` to first order (Wedin); 2 covers the second
    /// order and the solve itself.
    fn svd_oracle(&self, lambda: f64) -> (DMatrix<f64>, f64) {
        let x = self.x_aug();
        let (n, k) = (self.n, self.k());
        let e = self.t() - &x * self.w0().transpose();
        let a = DMatrix::from_fn(n + k, k, |i, j| {
            if i < n {
                x[(i, j)]
            } else if i - n == j {
                lambda.sqrt()
            } else {
                0.0
            }
        });
        let b = DMatrix::from_fn(n + k, self.m, |i, o| if i < n { e[(i, o)] } else { 0.0 });
        let svd = a.clone().svd(true, true);
        let (u, vt) = (svd.u.clone().unwrap(), svd.v_t.clone().unwrap());
        let recon = (&u * DMatrix::from_diagonal(&svd.singular_values) * &vt - &a).norm();
        assert!(recon <= 1e-8 * a.norm(), "oracle SVD off by {recon:e}");
        let smin = svd.singular_values.min();
        let dw = svd.solve(&b, 0.0).expect("U and V were computed");
        let r = &a * &dw - &b;
        let share = 2.0 * (recon + EPS * a.norm()) / smin * (dw.norm() + r.norm() / smin);
        (self.w0() + dw.transpose(), share)
    }

    /// The primal solve of the same problem with `ridge_solve` on the f64 Gram and
    /// `X^T (T - X W0^T)`, then `W0` added.
    fn primal(&self, params: DualParams) -> (DMatrix<f64>, f64) {
        let x = self.x_aug();
        let k = self.k();
        let g = x.transpose() * &x;
        let e = self.t() - &x * self.w0().transpose();
        let r = x.transpose() * &e;
        let g_rows: Vec<f64> = (0..k * k).map(|i| g[(i / k, i % k)]).collect();
        let r_rows: Vec<f64> = (0..k * self.m)
            .map(|i| r[(i / self.m, i % self.m)])
            .collect();
        let tt: Vec<f64> = e.column_iter().map(|c| c.norm_squared()).collect();
        let eqs = NormalEquations {
            gram: MatRef::new(&g_rows, k, k).unwrap(),
            cross: MatRef::new(&r_rows, k, self.m).unwrap(),
            target_sq_sums: &tt,
        };
        let cols: Vec<usize> = (0..k).collect();
        let targets: Vec<usize> = (0..self.m).collect();
        let mut w = vec![0.0; self.m * k];
        let mut scratch = vec![0.0; ridge_solve_scratch_len(k, self.m)];
        let rp = RidgeParams::default()
            .with_relative_ridge(params.relative_ridge)
            .with_absolute_ridge(params.absolute_ridge)
            .with_max_retries(params.max_retries);
        let info = ridge_solve(
            eqs,
            &cols,
            &targets,
            rp,
            MatMut::new(&mut w, self.m, k).unwrap(),
            &mut scratch,
        )
        .expect("the primal solve of a ridge problem");
        (
            self.w0() + DMatrix::from_row_slice(self.m, k, &w),
            info.ridge,
        )
    }

    /// The kernel `X X^T + lambda I`, `Z = K^{-1} E` and the dual error bound of
    /// `DUAL_FORWARD` for this problem.
    fn dual_bound(&self, lambda: f64) -> f64 {
        let x = self.x_aug();
        let kernel = &x * x.transpose() + DMatrix::identity(self.n, self.n) * lambda;
        let e = self.t() - &x * self.w0().transpose();
        let lmin = kernel.symmetric_eigenvalues().min();
        let z = refined_svd_solve(&kernel, &e, 3);
        let (xn, kn, zn) = (x.norm(), kernel.norm(), z.norm());
        DUAL_FORWARD
            * (self.n + self.k()) as f64
            * EPS
            * (xn * (kn * zn + xn * self.w0().norm()) / lmin + xn * zn)
    }

    /// The primal oracle's share of `PRIMAL_SHARE`.
    fn primal_bound(&self, lambda: f64, dw: f64) -> f64 {
        let x = self.x_aug();
        let a = x.transpose() * &x + DMatrix::identity(self.k(), self.k()) * lambda;
        let e = self.t() - &x * self.w0().transpose();
        let lmin = a.symmetric_eigenvalues().min();
        PRIMAL_SHARE * (self.n + self.k()) as f64 * EPS * (a.norm() * dw + x.norm() * e.norm())
            / lmin
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Gaussian),
        Just(Kind::Repeated),
        Just(Kind::ConstantColumns),
        (-3i32..=3).prop_map(Kind::Scaled),
    ]
}

/// Checks the dual solve of `p` against both oracles and its reported ridge and residual.
fn check(p: &Problem, params: DualParams) {
    let (w, info) = p
        .dual(params)
        .expect("a ridge problem with a positive ridge");
    let lambda = p.ridge(params);
    assert!(
        (info.factor.ridge - lambda).abs() <= RIDGE_VALUE_REL * lambda,
        "ridge {} vs {lambda}",
        info.factor.ridge
    );
    let bound = p.dual_bound(lambda);
    let (svd, share) = p.svd_oracle(lambda);
    let err = (&w - &svd).norm();
    assert!(
        err <= bound + share,
        "{p:?}: dual vs SVD {err:e} > {bound:e} + {share:e}"
    );
    let (primal, primal_ridge) = p.primal(params);
    assert!((primal_ridge - info.factor.ridge).abs() <= RIDGE_VALUE_REL * lambda);
    let dw = (&svd - p.w0()).norm();
    let both = bound + p.primal_bound(lambda, dw);
    let err = (&w - &primal).norm();
    assert!(err <= both, "{p:?}: dual vs primal {err:e} > {both:e}");
    // The residual from Z against the samples' residual of the returned weights.
    let x = p.x_aug();
    let t = p.t();
    let r = &x * w.transpose() - &t;
    let tt = t.norm_squared();
    if tt > 0.0 {
        let direct = r.norm_squared() / tt;
        let scale = (x.norm() * w.norm() + t.norm()).powi(2) / tt;
        let tol = DUAL_RESIDUAL * (p.n + p.k()) as f64 * EPS * scale + bound * x.norm() * 2.0;
        assert!(
            (info.relative_residual - direct).abs() <= tol,
            "residual {} vs {direct}, tol {tol:e}",
            info.relative_residual
        );
    }
}

proptest! {
    #![proptest_config(pleas_tests::config(64))]

    /// Random problems, wide and tall, well-conditioned and rank-deficient.
    #[test]
    fn dual_matches_svd_and_primal(
        seed in any::<u64>(),
        n in 1usize..=24,
        kp in 0usize..=40,
        m in 1usize..=4,
        intercept in any::<bool>(),
        prior in any::<bool>(),
        kind in kind(),
        rel in prop_oneof![Just(1e-6), Just(1e-3), Just(1e-9)],
    ) {
        prop_assume!(kp + usize::from(intercept) > 0);
        let p = Problem::new(seed, n, kp, m, intercept, prior, kind);
        check(&p, DualParams::default().with_relative_ridge(rel));
    }

    /// The packed factor against nalgebra's Cholesky: backward error and the solve.
    #[test]
    fn packed_cholesky_matches_nalgebra(
        seed in any::<u64>(),
        n in 1usize..=40,
        cond in prop_oneof![Just(1.0), Just(1e3), Just(1e8)],
        m in 1usize..=3,
    ) {
        let mut rng = Rng::new(seed);
        let a = spd_with_cond(&mut rng, n, cond);
        let mut packed = vec![f64::NAN; packed_len(n)];
        for i in 0..n {
            for j in 0..=i {
                packed[packed_index(i, j)] = a[(i, j)];
            }
        }
        let info = cholesky_packed(&mut packed, n).unwrap();
        let l = DMatrix::from_fn(n, n, |i, j| if j <= i { packed[packed_index(i, j)] } else { 0.0 });
        let back = &l * l.transpose() - &a;
        for i in 0..n {
            for j in 0..n {
                let bound = CHOLESKY_BACKWARD * (n + 1) as f64 * (a[(i, i)] * a[(j, j)]).sqrt();
                prop_assert!(back[(i, j)].abs() <= bound, "({i}, {j}): {:e} > {bound:e}", back[(i, j)]);
            }
        }
        // Pivots are reported before their square root: L[j, j]^2 gives them back to 2 ulps.
        let pivots: Vec<f64> = (0..n).map(|j| l[(j, j)] * l[(j, j)]).collect();
        let min = pivots.iter().copied().fold(f64::INFINITY, f64::min);
        let max = pivots.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        prop_assert!((info.min_pivot - min).abs() <= 4.0 * EPS * min);
        prop_assert!((info.max_pivot - max).abs() <= 4.0 * EPS * max);
        // L L^T X = B against a refined SVD solve.
        let b = DMatrix::from_fn(n, m, |_, _| rng.normal());
        let mut x: Vec<f64> = (0..n * m).map(|i| b[(i / m, i % m)]).collect();
        solve_packed(&packed, n, MatMut::new(&mut x, n, m).unwrap()).unwrap();
        let want = refined_svd_solve(&a, &b, 3);
        for c in 0..m {
            let got = DMatrix::from_fn(n, 1, |i, _| x[i * m + c]);
            let err = (&got - want.column(c)).norm();
            let bound = (2.0 * TRIANGULAR_FORWARD * n as f64 * cond + SVD_REFINED) * EPS * want.column(c).norm();
            prop_assert!(err <= bound, "column {c}: {err:e} > {bound:e}");
        }
    }
}

/// The first-layer shape of an MLP merge: 785 columns (784 and the intercept) against 120
/// samples, two kinds of data.
#[test]
fn wide_first_layer_shape() {
    for (seed, kind) in [(1, Kind::Gaussian), (2, Kind::ConstantColumns)] {
        let p = Problem::new(seed, 120, 784, 8, true, true, kind);
        check(&p, DualParams::default());
    }
}

/// A failing pivot is reported at its position, as the primal factorization reports it.
#[test]
fn packed_cholesky_reports_the_failing_pivot() {
    let mut rng = Rng::new(7);
    let (n, index, pivot) = (12, 5, -0.25);
    let a = with_failing_pivot(&mut rng, n, 10.0, index, pivot);
    let mut packed = vec![0.0; packed_len(n)];
    for i in 0..n {
        for j in 0..=i {
            packed[packed_index(i, j)] = a[(i, j)];
        }
    }
    match cholesky_packed(&mut packed, n) {
        Err(PackedError::NonPositivePivot { index: i, value }) => {
            assert_eq!(i, index);
            assert!((value - pivot).abs() <= FAILING_PIVOT_ABS, "{value}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        cholesky_packed(&mut packed[..10], n),
        Err(PackedError::Length {
            n,
            needed: 78,
            found: 10
        })
    );
    let mut b = vec![0.0; 3];
    assert_eq!(
        solve_packed(&packed, n, MatMut::new(&mut b, 3, 1).unwrap()),
        Err(PackedError::RhsRows { n, found: 3 })
    );
    assert_eq!(packed_len(0), 0);
    assert_eq!(packed_len(785), 308_505);
    assert_eq!(packed_len(usize::MAX), usize::MAX);
}

/// Zero samples and no intercept: the relative ridge is 0, which is never retried (as in the
/// primal solve); an absolute ridge makes it solvable. A factorization that fails is retried
/// with ten times the ridge.
#[test]
fn zero_inputs_and_retries() {
    let mut p = Problem::new(3, 6, 9, 2, false, false, Kind::Gaussian);
    p.x.fill(0.0);
    match p.dual(DualParams::default()) {
        Err(DualError::NotPositiveDefinite {
            index: 0,
            ridge,
            retries: 0,
            ..
        }) => assert_eq!(ridge, 0.0),
        other => panic!("{other:?}"),
    }
    let (w, info) = p
        .dual(DualParams::default().with_absolute_ridge(1e-3))
        .unwrap();
    assert_eq!(info.factor.retries, 0);
    assert!(w.iter().all(|&v| v == 0.0), "no data, no update");
    assert!((info.relative_residual - 1.0).abs() < 1e-12);
    // A kernel that is indefinite by the ridge: a negative absolute ridge is refused, so
    // exercise the retry through a tiny ridge on exactly repeated samples instead: the
    // factorization of [[a, a], [a, a]] + lambda I succeeds, so no retry happens there.
    let q = Problem::new(4, 8, 3, 1, true, false, Kind::Repeated);
    let (_, info) = q.dual(DualParams::default()).unwrap();
    assert_eq!(info.factor.retries, 0);
}

/// Every typed error, in the documented order.
#[test]
fn errors_name_the_problem() {
    let p = Problem::new(5, 4, 6, 2, true, true, Kind::Gaussian);
    let x = MatRef::new(&p.x, 4, 6).unwrap();
    let t = MatRef::new(&p.t, 4, 2).unwrap();
    let w0 = p.w0.as_ref().unwrap();
    let prior = Some(MatRef::new(w0, 2, 7).unwrap());
    let mut w = vec![0.0; 14];
    let mut scratch = vec![0.0; dual_ridge_scratch_len(4, 2)];
    let run = |x: MatRef<'_, f32>,
               t: MatRef<'_, f32>,
               prior: Option<MatRef<'_, f32>>,
               params: DualParams,
               w: &mut [f64],
               scratch: &mut [f64],
               wshape: (usize, usize)| {
        dual_ridge_solve(
            x,
            true,
            t,
            prior,
            params,
            MatMut::new(w, wshape.0, wshape.1).unwrap(),
            scratch,
        )
    };
    assert_eq!(
        run(
            x,
            t,
            prior,
            DualParams::default().with_relative_ridge(-1.0),
            &mut w,
            &mut scratch,
            (2, 7)
        ),
        Err(DualError::InvalidRidge {
            relative: -1.0,
            absolute: 0.0
        })
    );
    assert_eq!(
        run(
            x,
            t,
            prior,
            DualParams::default().with_absolute_ridge(f64::NAN),
            &mut w,
            &mut scratch,
            (2, 7)
        )
        .map_err(|e| matches!(e, DualError::InvalidRidge { .. })),
        Err(true)
    );
    let t3 = MatRef::new(&p.t[..6], 3, 2).unwrap();
    assert_eq!(
        run(
            x,
            t3,
            prior,
            DualParams::default(),
            &mut w,
            &mut scratch,
            (2, 7)
        ),
        Err(DualError::ShapeMismatch {
            operand: DualOperand::Targets,
            expected: (4, 2),
            found: (3, 2)
        })
    );
    assert_eq!(
        run(
            x,
            t,
            prior,
            DualParams::default(),
            &mut w[..12],
            &mut scratch,
            (2, 6)
        ),
        Err(DualError::ShapeMismatch {
            operand: DualOperand::Weights,
            expected: (2, 7),
            found: (2, 6)
        })
    );
    let small = Some(MatRef::new(&w0[..12], 2, 6).unwrap());
    assert_eq!(
        run(
            x,
            t,
            small,
            DualParams::default(),
            &mut w,
            &mut scratch,
            (2, 7)
        ),
        Err(DualError::ShapeMismatch {
            operand: DualOperand::Prior,
            expected: (2, 7),
            found: (2, 6)
        })
    );
    let needed = dual_ridge_scratch_len(4, 2);
    assert_eq!(needed, 10 + 8);
    assert_eq!(
        run(
            x,
            t,
            prior,
            DualParams::default(),
            &mut w,
            &mut scratch[..needed - 1],
            (2, 7)
        ),
        Err(DualError::ScratchTooSmall {
            needed,
            provided: needed - 1
        })
    );
    let mut bad = p.clone();
    bad.x[2 * 6 + 3] = f32::NAN;
    bad.t[1] = f32::INFINITY;
    assert_eq!(
        bad.dual(DualParams::default()).unwrap_err(),
        DualError::NonFinite {
            operand: DualOperand::Samples,
            row: 2,
            col: 3
        }
    );
    bad.x[2 * 6 + 3] = 0.0;
    assert_eq!(
        bad.dual(DualParams::default()).unwrap_err(),
        DualError::NonFinite {
            operand: DualOperand::Targets,
            row: 0,
            col: 1
        }
    );
    bad.t[1] = 0.0;
    bad.w0.as_mut().unwrap()[7 + 2] = f32::NAN;
    assert_eq!(
        bad.dual(DualParams::default()).unwrap_err(),
        DualError::NonFinite {
            operand: DualOperand::Prior,
            row: 1,
            col: 2
        }
    );
    // The steps on their own: a short kernel and right-hand sides of the wrong height.
    let mut kernel = vec![0.0; dual_kernel_len(4) - 1];
    assert!(matches!(
        dual_factor(x, true, DualParams::default(), &mut kernel),
        Err(DualError::ShapeMismatch {
            operand: DualOperand::Kernel,
            ..
        })
    ));
    let mut kernel = vec![0.0; dual_kernel_len(4)];
    dual_factor(x, true, DualParams::default(), &mut kernel).unwrap();
    let mut rhs = vec![0.0; 3];
    assert_eq!(
        dual_solve(&kernel, 4, MatMut::new(&mut rhs, 3, 1).unwrap()),
        Err(DualError::ShapeMismatch {
            operand: DualOperand::Rhs,
            expected: (4, 1),
            found: (3, 1)
        })
    );
}

/// Degenerate sizes: no samples (the prior is returned), no columns (nothing to fit).
#[test]
fn degenerate_sizes() {
    let p = Problem::new(6, 0, 5, 2, true, true, Kind::Gaussian);
    let (w, info) = p.dual(DualParams::default()).unwrap();
    assert_eq!(w, p.w0());
    assert_eq!(info.relative_residual, 0.0);
    let q = Problem::new(6, 5, 0, 2, false, false, Kind::Gaussian);
    let (w, info) = q.dual(DualParams::default()).unwrap();
    assert_eq!(w.len(), 0);
    assert_eq!(info.relative_residual, 1.0);
}
