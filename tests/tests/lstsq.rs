//! Ridge least squares on a principal sub-block of a Gram: against an SVD solve of the
//! augmented problem `[X_c; sqrt(lambda) I] w = [t; 0]` built from the samples, against the
//! same steps done by the scalar twins, against an SVD solve of an ill-conditioned Gram
//! (cond 1e6) given directly; the residual from the sums against the samples' residual; ridge
//! retries; and every typed error with its position.

use nalgebra::{DMatrix, DVector};
use pleas_core::linalg::{
    cholesky_reference, solve_lower_reference, solve_lower_transpose_reference,
};
use pleas_core::lstsq::{
    IndexList, LstsqError, NormalEquations, Operand, RidgeParams, ridge_solve,
    ridge_solve_scratch_len,
};
use pleas_tests::oracle::refined_svd_solve;
use pleas_tests::spd::{
    EDGE_SIZES, Rng, condition_number, geometric_spectrum, normal_matrix, spd_with_cond,
    uniform_matrix, with_failing_pivot, with_spectrum,
};
use pleas_tests::strided_f64::{Layout, StridedF64, layout};
use pleas_tests::tolerance::{
    EXACT_FIT_RESIDUAL, EXACT_FIT_WEIGHT_ABS, FAILING_PIVOT_ABS, PIVOT_AGREEMENT, RIDGE_FORWARD,
    RIDGE_RESIDUAL, RIDGE_VALUE_REL, RIDGE_VS_TWINS, SVD_REFINED,
};
use proptest::prelude::*;

/// `cases` unless `PROPTEST_CASES` asks for another count.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![proptest::sample::select(EDGE_SIZES.to_vec()), 1usize..=80]
}

/// The accumulated sums of one layer, stored in strided buffers: the Gram with only its lower
/// triangle filled (NaN above), the cross moments and the target sums.
struct Sums {
    gram: StridedF64,
    cross: StridedF64,
    target_sq_sums: Vec<f64>,
}

impl Sums {
    fn equations(&self) -> NormalEquations<'_> {
        NormalEquations {
            gram: self.gram.view(),
            cross: self.cross.view(),
            target_sq_sums: &self.target_sq_sums,
        }
    }

    /// From samples `x` (`samples x d`) and targets `t` (`samples x t`).
    fn from_samples(x: &DMatrix<f64>, t: &DMatrix<f64>, g_lay: Layout, r_lay: Layout) -> Self {
        let g = x.transpose() * x;
        let r = x.transpose() * t;
        Sums {
            gram: StridedF64::lower_from_matrix(&g, g_lay),
            cross: StridedF64::from_matrix(&r, r_lay),
            target_sq_sums: t.column_iter().map(|c| c.norm_squared()).collect(),
        }
    }
}

/// A problem: the sums, the chosen columns and targets, and the weights' layout.
struct Solve {
    sums: Sums,
    cols: Vec<usize>,
    targets: Vec<usize>,
    weights: StridedF64,
}

impl Solve {
    fn run(&mut self, params: RidgeParams) -> Result<pleas_core::lstsq::RidgeInfo, LstsqError> {
        let mut scratch =
            vec![f64::NAN; ridge_solve_scratch_len(self.cols.len(), self.targets.len())];
        ridge_solve(
            self.sums.equations(),
            &self.cols,
            &self.targets,
            params,
            self.weights.view_mut(),
            &mut scratch,
        )
    }

    /// `G[c, c]` from the stored lower triangle.
    fn gram_block(&self) -> DMatrix<f64> {
        let c = &self.cols;
        DMatrix::from_fn(c.len(), c.len(), |a, b| {
            let (i, j) = (c[a].max(c[b]), c[a].min(c[b]));
            self.sums.gram.get(i, j)
        })
    }

    /// `R[c, targets]`.
    fn cross_block(&self) -> DMatrix<f64> {
        DMatrix::from_fn(self.cols.len(), self.targets.len(), |a, o| {
            self.sums.cross.get(self.cols[a], self.targets[o])
        })
    }
}

/// `k` distinct indices of `0..n` in random order.
fn pick(rng: &mut Rng, n: usize, k: usize) -> Vec<usize> {
    rng.permutation(n)[..k].to_vec()
}

/// The same ridge solve done by the scalar twins: `cholesky_reference` of `G_cc + lambda I`,
/// then both reference substitutions on `R[c, targets]`. Returns `W^T` (`k x m`).
fn twin_solve(g: &DMatrix<f64>, r: &DMatrix<f64>, lambda: f64) -> DMatrix<f64> {
    let k = g.nrows();
    let a = g + DMatrix::identity(k, k) * lambda;
    let mut l = StridedF64::lower_from_matrix(&a, Layout::ROW_MAJOR);
    cholesky_reference(l.view_mut()).expect("PD with the reported ridge");
    let mut b = StridedF64::from_matrix(r, Layout::ROW_MAJOR);
    solve_lower_reference(l.view(), b.view_mut()).unwrap();
    solve_lower_transpose_reference(l.view(), b.view_mut()).unwrap();
    b.to_matrix()
}

fn column_err(a: &DMatrix<f64>, b: &DMatrix<f64>, c: usize) -> f64 {
    (a.column(c) - b.column(c)).norm()
}

proptest! {
    #![proptest_config(pleas_tests::config(40))]

    /// From samples: the weights match the (refined) SVD solution of the ridge system and the
    /// scalar twins; the ridge is the documented one; the residual from the sums matches the
    /// samples' residual; only the weights' view is written.
    #[test]
    fn matches_augmented_svd_and_scalar_twins(
        d in size(), ncols_frac in 0.05f64..=1.0, samples_per_col in 0.3f64..3.0,
        ntargets in 1usize..=9, extra_targets in 0usize..3, col_decay in 0.0f64..=3.0,
        noise in 0.0f64..1.0, relative in prop_oneof![Just(1e-6), Just(1e-9), Just(1e-3)],
        absolute in prop_oneof![Just(0.0), 0.0f64..1e-3],
        g_lay in layout(), r_lay in layout(), w_lay in layout(), seed in any::<u64>()
    ) {
        let mut rng = Rng::new(seed);
        let k = ((d as f64 * ncols_frac).ceil() as usize).clamp(1, d);
        let samples = ((k as f64 * samples_per_col).ceil() as usize).max(1);
        let t_all = ntargets + extra_targets;
        // Columns scaled geometrically over `col_decay` decades: cond(G) up to ~1e6 plus the
        // randomness of X (and singular when samples < k).
        let scale = geometric_spectrum(d, 10f64.powf(col_decay));
        let mut x = normal_matrix(&mut rng, samples, d);
        for j in 0..d {
            x.column_mut(j).scale_mut(scale[j]);
        }
        let w_true = uniform_matrix(&mut rng, d, t_all);
        let t = &x * &w_true + normal_matrix(&mut rng, samples, t_all) * noise;
        let cols = pick(&mut rng, d, k);
        let targets = pick(&mut rng, t_all, ntargets);
        let mut p = Solve {
            sums: Sums::from_samples(&x, &t, g_lay, r_lay),
            weights: StridedF64::nan(ntargets, k, w_lay),
            cols: cols.clone(),
            targets: targets.clone(),
        };
        let params = RidgeParams::default().with_relative_ridge(relative).with_absolute_ridge(absolute);
        let info = p.run(params).unwrap();
        prop_assert!(p.weights.outside_untouched());

        let g = p.gram_block();
        let r = p.cross_block();
        let mean_diag = g.diagonal().sum() / k as f64;
        let lambda = relative * mean_diag + absolute;
        prop_assert_eq!(info.retries, 0);
        prop_assert!((info.ridge - lambda).abs() <= RIDGE_VALUE_REL * lambda, "ridge {} vs {lambda}", info.ridge);

        let w = p.weights.to_matrix(); // ntargets x k
        let wt = w.transpose();
        let xc = DMatrix::from_fn(samples, k, |s, a| x[(s, cols[a])]);
        let tc = DMatrix::from_fn(samples, ntargets, |s, o| t[(s, targets[o])]);

        // The terms of the RIDGE_FORWARD bound.
        let reg = &g + DMatrix::identity(k, k) * info.ridge;
        let reg_sv = reg.singular_values();
        let sigma_min = reg_sv.min();
        let abs_gram = xc.abs().transpose() * xc.abs() + DMatrix::identity(k, k) * info.ridge;
        let abs_gram_norm = abs_gram.singular_values().max();
        let abs_cross = xc.abs().transpose() * tc.abs();
        let kappa = abs_gram_norm / sigma_min;
        // The oracle: an SVD solve of the ridge system (G_cc + lambda I) W^T = R_c, refined
        // with double-precision residuals until its own error is ~ eps ||w|| (a raw SVD solve
        // carries ~ 40 eps cond ||w|| and made this comparison flaky on cond ~ 1e3 blocks).
        let w_svd = refined_svd_solve(&reg, &r, 3);
        let w_twin = twin_solve(&g, &r, info.ridge);

        let eps = f64::EPSILON;
        let gamma = RIDGE_FORWARD * (k + samples) as f64 * eps;
        for o in 0..ntargets {
            let wn = w_svd.column(o).norm();
            let solver = gamma / sigma_min * (abs_gram_norm * wn + abs_cross.column(o).norm());
            let oracle = SVD_REFINED * eps * wn;
            let tol = solver + oracle;
            let e = column_err(&wt, &w_svd, o);
            prop_assert!(e <= tol, "target {o} vs SVD: {e:e} > {tol:e} (kappa {kappa:e})");
            let tol = RIDGE_VS_TWINS * k as f64 * eps * kappa * wn;
            let e = column_err(&wt, &w_twin, o);
            prop_assert!(e <= tol, "target {o} vs twins: {e:e} > {tol:e}");
        }

        // Residual from the sums against the samples.
        let fit = &xc * &wt - &tc;
        let num: f64 = fit.column_iter().map(|c| c.norm_squared()).sum();
        let den: f64 = tc.column_iter().map(|c| c.norm_squared()).sum();
        let mut bound = 0.0;
        for o in 0..ntargets {
            let wa = wt.column(o).abs();
            let scale = tc.column(o).norm_squared()
                + 2.0 * wa.dot(&r.column(o).abs())
                + wa.dot(&(g.abs() * &wa));
            bound += RIDGE_RESIDUAL * (k + samples) as f64 * eps * scale;
        }
        let want = if den > 0.0 { num / den } else { 0.0 };
        prop_assert!(
            (info.relative_residual - want).abs() <= bound / den.max(f64::MIN_POSITIVE),
            "residual {} vs {want}", info.relative_residual
        );
        prop_assert!(info.relative_residual >= 0.0);

        // Pivots are those of G_cc + lambda I.
        let reg_cond = condition_number(&reg);
        let l = reg.cholesky().expect("PD").l();
        let piv: Vec<f64> = (0..k).map(|j| l[(j, j)] * l[(j, j)]).collect();
        let max = piv.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let min = piv.iter().cloned().fold(f64::INFINITY, f64::min);
        let tol = PIVOT_AGREEMENT * k as f64 * eps * reg_cond * max;
        prop_assert!((info.max_pivot - max).abs() <= tol && (info.min_pivot - min).abs() <= tol);
    }

    /// An ill-conditioned Gram (cond up to 1e6, any scale) given directly: the weights match an
    /// SVD solve of the same ridge system, refined to working precision. Only the selected block's lower triangle, the
    /// selected cross entries and target sums are read: everything else is NaN.
    #[test]
    fn ill_conditioned_gram_matches_svd(
        d in size(), ncols_frac in 0.05f64..=1.0, ntargets in 1usize..=6,
        cond_exp in 0.0f64..=6.0, scale_exp in -3.0f64..=3.0,
        relative in prop_oneof![Just(0.0), Just(1e-12), Just(1e-6)],
        g_lay in layout(), r_lay in layout(), w_lay in layout(), seed in any::<u64>()
    ) {
        let mut rng = Rng::new(seed);
        let k = ((d as f64 * ncols_frac).ceil() as usize).clamp(1, d);
        let t_all = ntargets + 2;
        let cols = pick(&mut rng, d, k);
        let targets = pick(&mut rng, t_all, ntargets);
        let block = spd_with_cond(&mut rng, k, 10f64.powf(cond_exp)) * 10f64.powf(scale_exp);
        let r_block = uniform_matrix(&mut rng, k, ntargets);
        let mut gram = StridedF64::nan(d, d, g_lay);
        let mut cross = StridedF64::nan(d, t_all, r_lay);
        let mut target_sq_sums = vec![f64::NAN; t_all];
        for a in 0..k {
            for b in 0..k {
                if cols[a] >= cols[b] {
                    gram.set(cols[a], cols[b], block[(a, b)]);
                }
            }
            for o in 0..ntargets {
                cross.set(cols[a], targets[o], r_block[(a, o)]);
            }
        }
        for &o in &targets {
            target_sq_sums[o] = 1.0 + rng.unit();
        }
        let mut p = Solve {
            sums: Sums { gram, cross, target_sq_sums },
            weights: StridedF64::nan(ntargets, k, w_lay),
            cols,
            targets,
        };
        let info = p.run(RidgeParams::default().with_relative_ridge(relative)).unwrap();
        prop_assert!(p.weights.outside_untouched());
        prop_assert_eq!(info.retries, 0);
        prop_assert!(info.relative_residual.is_finite() && info.relative_residual >= 0.0);

        let reg = &block + DMatrix::identity(k, k) * info.ridge;
        let kappa = condition_number(&reg);
        let w_ref = refined_svd_solve(&reg, &r_block, 3);
        let wt = p.weights.to_matrix().transpose();
        for o in 0..ntargets {
            let tol = RIDGE_FORWARD * k as f64 * f64::EPSILON * kappa * w_ref.column(o).norm();
            let e = column_err(&wt, &w_ref, o);
            prop_assert!(e <= tol, "target {o}: {e:e} > {tol:e} (kappa {kappa:e})");
        }
    }

    /// An indefinite block with one eigenvalue `-delta` is solved after exactly the retries
    /// that lift the ridge above `delta`; with fewer retries allowed the error reports the
    /// last ridge and the retry count.
    #[test]
    fn retries_lift_the_ridge_above_a_negative_eigenvalue(
        d in 2usize..=40, ncols_frac in 0.05f64..=1.0, needed in 1u32..=4,
        delta in 1e-3f64..1e-1, seed in any::<u64>()
    ) {
        let mut rng = Rng::new(seed);
        let k = ((d as f64 * ncols_frac).ceil() as usize).clamp(2, d);
        let mut s = geometric_spectrum(k, 10.0);
        s[k - 1] = -delta;
        let block = with_spectrum(&mut rng, &s);
        let mean_diag = block.diagonal().sum() / k as f64;
        // lambda_0 * 10^(needed - 1/2) = delta: one retry short is sqrt(10) below delta.
        let relative = delta / (mean_diag * 10f64.powf(needed as f64 - 0.5));
        let cols = pick(&mut rng, d, k);
        let full = embed(&block, &cols, d);
        let make = |rng: &mut Rng| Solve {
            sums: Sums {
                gram: StridedF64::lower_from_matrix(&full, Layout::ROW_MAJOR),
                cross: StridedF64::from_matrix(&uniform_matrix(rng, d, 2), Layout::ROW_MAJOR),
                target_sq_sums: vec![1.0, 2.0],
            },
            weights: StridedF64::nan(2, k, Layout::ROW_MAJOR),
            cols: cols.clone(),
            targets: vec![1, 0],
        };
        let params = RidgeParams::default().with_relative_ridge(relative);
        let lambda0 = relative * mean_diag;

        let mut p = make(&mut rng);
        let info = p.run(params.with_max_retries(needed + 1)).unwrap();
        prop_assert_eq!(info.retries, needed);
        let want = lambda0 * 10f64.powi(needed as i32);
        prop_assert!((info.ridge - want).abs() <= RIDGE_VALUE_REL * want);
        prop_assert!(info.min_pivot > 0.0);

        let mut p = make(&mut rng);
        match p.run(params.with_max_retries(needed - 1)) {
            Err(LstsqError::NotPositiveDefinite { index, column, pivot, ridge, retries }) => {
                prop_assert_eq!(retries, needed - 1);
                let want = lambda0 * 10f64.powi(needed as i32 - 1);
                prop_assert!((ridge - want).abs() <= RIDGE_VALUE_REL * want);
                prop_assert!(index < k && column == cols[index]);
                prop_assert!(pivot.is_nan() || pivot <= 0.0);
            }
            other => prop_assert!(false, "expected NotPositiveDefinite, got {other:?}"),
        }
        prop_assert!(p.weights.outside_untouched() && p.weights.to_matrix().iter().all(|v| v.is_nan()));
    }

    /// Reordering `cols` and `targets` reorders the weights the same way and changes nothing
    /// else: the ridge is the same and the weights agree to rounding (the factorization order
    /// differs, so they are compared with the forward-error bound of the twins).
    #[test]
    fn reordering_cols_and_targets_permutes_the_weights(
        d in 1usize..=40, ncols_frac in 0.05f64..=1.0, ntargets in 1usize..=5,
        seed in any::<u64>()
    ) {
        let mut rng = Rng::new(seed);
        let k = ((d as f64 * ncols_frac).ceil() as usize).clamp(1, d);
        let x = normal_matrix(&mut rng, d + 3, d);
        let t = normal_matrix(&mut rng, d + 3, ntargets + 1);
        let cols = pick(&mut rng, d, k);
        let targets = pick(&mut rng, ntargets + 1, ntargets);
        let col_perm = rng.permutation(k);
        let target_perm = rng.permutation(ntargets);
        let mut first = Solve {
            sums: Sums::from_samples(&x, &t, Layout::ROW_MAJOR, Layout::ROW_MAJOR),
            weights: StridedF64::nan(ntargets, k, Layout::ROW_MAJOR),
            cols: cols.clone(),
            targets: targets.clone(),
        };
        let mut second = Solve {
            sums: Sums::from_samples(&x, &t, Layout::ROW_MAJOR, Layout::ROW_MAJOR),
            weights: StridedF64::nan(ntargets, k, Layout::ROW_MAJOR),
            cols: col_perm.iter().map(|&a| cols[a]).collect(),
            targets: target_perm.iter().map(|&o| targets[o]).collect(),
        };
        let i1 = first.run(RidgeParams::default()).unwrap();
        let i2 = second.run(RidgeParams::default()).unwrap();
        prop_assert!((i1.ridge - i2.ridge).abs() <= RIDGE_VALUE_REL * i1.ridge);
        let reg = first.gram_block() + DMatrix::identity(k, k) * i1.ridge;
        let kappa = condition_number(&reg);
        for o in 0..ntargets {
            let w1: Vec<f64> = (0..k).map(|a| first.weights.get(target_perm[o], col_perm[a])).collect();
            let w2: Vec<f64> = (0..k).map(|a| second.weights.get(o, a)).collect();
            let norm = w1.iter().map(|v| v * v).sum::<f64>().sqrt();
            let diff = w1.iter().zip(&w2).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
            let tol = RIDGE_VS_TWINS * k as f64 * f64::EPSILON * kappa * norm;
            prop_assert!(diff <= tol, "target {o}: {diff:e} > {tol:e}");
        }
    }

    /// A pivot built to be negative at position `index` of `cols` is reported there, with the
    /// Gram column it stands for, when no retry is allowed.
    #[test]
    fn failing_pivot_is_reported_at_its_position(
        d in 1usize..=40, ncols_frac in 0.05f64..=1.0, seed in any::<u64>(),
        at in any::<proptest::sample::Index>(), pivot in -2.0f64..-0.01
    ) {
        let mut rng = Rng::new(seed);
        let k = ((d as f64 * ncols_frac).ceil() as usize).clamp(1, d);
        let index = at.index(k);
        let block = with_failing_pivot(&mut rng, k, 10.0, index, pivot);
        let cols = pick(&mut rng, d, k);
        let mut p = Solve {
            sums: Sums {
                gram: StridedF64::lower_from_matrix(&embed(&block, &cols, d), Layout::ROW_MAJOR),
                cross: StridedF64::from_matrix(&uniform_matrix(&mut rng, d, 1), Layout::ROW_MAJOR),
                target_sq_sums: vec![1.0],
            },
            weights: StridedF64::nan(1, k, Layout::ROW_MAJOR),
            cols: cols.clone(),
            targets: vec![0],
        };
        let params = RidgeParams::default().with_relative_ridge(1e-12).with_max_retries(0);
        match p.run(params) {
            Err(LstsqError::NotPositiveDefinite { index: got, column, pivot: value, ridge, retries }) => {
                prop_assert_eq!(got, index);
                prop_assert_eq!(column, cols[index]);
                prop_assert_eq!(retries, 0);
                prop_assert!((value - (pivot + ridge)).abs() <= FAILING_PIVOT_ABS, "{value} vs {pivot}");
            }
            other => prop_assert!(false, "expected NotPositiveDefinite, got {other:?}"),
        }
    }

    /// A non-finite value is reported at its position in its operand if the solve reads it,
    /// and ignored otherwise (upper triangle, unselected rows, columns and targets).
    #[test]
    fn non_finite_input_is_reported_where_it_is_read(
        d in 1usize..=30, ncols_frac in 0.05f64..=1.0, which in 0usize..3,
        i in any::<proptest::sample::Index>(), j in any::<proptest::sample::Index>(),
        v in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)],
        seed in any::<u64>()
    ) {
        let mut rng = Rng::new(seed);
        let k = ((d as f64 * ncols_frac).ceil() as usize).clamp(1, d);
        let t_all = 3;
        let x = normal_matrix(&mut rng, 2 * d, d);
        let t = normal_matrix(&mut rng, 2 * d, t_all);
        let cols = pick(&mut rng, d, k);
        let targets = vec![2, 0];
        let mut sums = Sums::from_samples(&x, &t, Layout::ROW_MAJOR, Layout::ROW_MAJOR);
        let (row, col, operand, read) = match which {
            0 => {
                let (r, c) = (i.index(d), j.index(d));
                sums.gram.set(r, c, v);
                (r, c, Operand::Gram, r >= c && cols.contains(&r) && cols.contains(&c))
            }
            1 => {
                let (r, c) = (i.index(d), j.index(t_all));
                sums.cross.set(r, c, v);
                (r, c, Operand::Cross, cols.contains(&r) && targets.contains(&c))
            }
            _ => {
                let r = i.index(t_all);
                sums.target_sq_sums[r] = v;
                (r, 0, Operand::TargetSqSums, targets.contains(&r))
            }
        };
        let mut p = Solve { sums, weights: StridedF64::nan(2, k, Layout::ROW_MAJOR), cols, targets };
        let r = p.run(RidgeParams::default());
        if read {
            prop_assert_eq!(r, Err(LstsqError::NonFinite { operand, row, col }));
            prop_assert!(p.weights.to_matrix().iter().all(|v| v.is_nan()));
        } else {
            prop_assert!(r.is_ok(), "{r:?}");
            prop_assert!(p.weights.to_matrix().iter().all(|v| v.is_finite()));
        }
    }
}

/// `block` (`k x k`) placed at `G[cols, cols]` of a `d x d` matrix that is NaN elsewhere.
fn embed(block: &DMatrix<f64>, cols: &[usize], d: usize) -> DMatrix<f64> {
    let mut g = DMatrix::from_element(d, d, f64::NAN);
    for (a, &ca) in cols.iter().enumerate() {
        for (b, &cb) in cols.iter().enumerate() {
            g[(ca, cb)] = block[(a, b)];
        }
    }
    g
}

/// A small well-posed problem for the error tests: `d = 4` inputs, `t = 3` targets.
fn small() -> (Sums, DMatrix<f64>) {
    let mut rng = Rng::new(11);
    let x = normal_matrix(&mut rng, 12, 4);
    let t = normal_matrix(&mut rng, 12, 3);
    (
        Sums::from_samples(&x, &t, Layout::ROW_MAJOR, Layout::ROW_MAJOR),
        x,
    )
}

fn solve_small(
    sums: &Sums,
    cols: &[usize],
    targets: &[usize],
    params: RidgeParams,
    weights: &mut StridedF64,
    scratch_len: usize,
) -> Result<pleas_core::lstsq::RidgeInfo, LstsqError> {
    let mut scratch = vec![0.0; scratch_len];
    ridge_solve(
        sums.equations(),
        cols,
        targets,
        params,
        weights.view_mut(),
        &mut scratch,
    )
}

#[test]
fn index_errors_carry_list_position_and_bound() {
    let (sums, _) = small();
    let cases: [(&[usize], &[usize], LstsqError); 4] = [
        (
            &[0, 4],
            &[0],
            LstsqError::IndexOutOfRange {
                list: IndexList::Cols,
                position: 1,
                index: 4,
                bound: 4,
            },
        ),
        (
            &[1],
            &[2, 0, 3],
            LstsqError::IndexOutOfRange {
                list: IndexList::Targets,
                position: 2,
                index: 3,
                bound: 3,
            },
        ),
        (
            &[3, 1, 2, 1],
            &[0],
            LstsqError::DuplicateIndex {
                list: IndexList::Cols,
                index: 1,
                first: 1,
                second: 3,
            },
        ),
        (
            &[0],
            &[2, 2],
            LstsqError::DuplicateIndex {
                list: IndexList::Targets,
                index: 2,
                first: 0,
                second: 1,
            },
        ),
    ];
    for (cols, targets, want) in cases {
        let mut w = StridedF64::nan(targets.len(), cols.len(), Layout::ROW_MAJOR);
        let len = ridge_solve_scratch_len(cols.len(), targets.len());
        assert_eq!(
            solve_small(&sums, cols, targets, RidgeParams::default(), &mut w, len),
            Err(want)
        );
        assert!(w.to_matrix().iter().all(|v| v.is_nan()));
        let text = want.to_string();
        match want {
            LstsqError::IndexOutOfRange { .. } => assert!(text.contains("out of range"), "{text}"),
            _ => assert!(text.contains("twice"), "{text}"),
        }
    }
}

#[test]
fn shape_errors_carry_both_shapes() {
    let (sums, _) = small();
    let len = ridge_solve_scratch_len(2, 1);
    // Weights of the wrong shape.
    let mut w = StridedF64::nan(2, 2, Layout::ROW_MAJOR);
    assert_eq!(
        solve_small(&sums, &[0, 1], &[0], RidgeParams::default(), &mut w, len),
        Err(LstsqError::ShapeMismatch {
            operand: Operand::Weights,
            expected: (1, 2),
            found: (2, 2)
        })
    );
    let mut w = StridedF64::nan(1, 2, Layout::ROW_MAJOR);
    let mut scratch = vec![0.0; len];
    let g = StridedF64::nan(4, 5, Layout::ROW_MAJOR);
    let r3 = StridedF64::nan(3, 3, Layout::ROW_MAJOR);
    let cases = [
        (
            g.view(),
            sums.cross.view(),
            &sums.target_sq_sums[..],
            Operand::Gram,
            (4, 4),
            (4, 5),
        ),
        (
            sums.gram.view(),
            r3.view(),
            &sums.target_sq_sums[..],
            Operand::Cross,
            (4, 3),
            (3, 3),
        ),
        (
            sums.gram.view(),
            sums.cross.view(),
            &sums.target_sq_sums[..2],
            Operand::TargetSqSums,
            (3, 1),
            (2, 1),
        ),
    ];
    for (gram, cross, target_sq_sums, operand, expected, found) in cases {
        let eqs = NormalEquations {
            gram,
            cross,
            target_sq_sums,
        };
        let r = ridge_solve(
            eqs,
            &[0, 1],
            &[0],
            RidgeParams::default(),
            w.view_mut(),
            &mut scratch,
        );
        assert_eq!(
            r,
            Err(LstsqError::ShapeMismatch {
                operand,
                expected,
                found
            })
        );
    }
    assert!(w.to_matrix().iter().all(|v| v.is_nan()));
}

#[test]
fn scratch_and_ridge_params_are_checked() {
    let (sums, _) = small();
    let mut w = StridedF64::nan(2, 3, Layout::ROW_MAJOR);
    let needed = ridge_solve_scratch_len(3, 2);
    assert_eq!(
        solve_small(
            &sums,
            &[0, 1, 2],
            &[0, 1],
            RidgeParams::default(),
            &mut w,
            needed - 1
        ),
        Err(LstsqError::ScratchTooSmall {
            needed,
            provided: needed - 1
        })
    );
    for (relative, absolute) in [
        (-1e-6, 0.0),
        (f64::NAN, 0.0),
        (1e-6, f64::INFINITY),
        (0.0, -1.0),
    ] {
        let params = RidgeParams::default()
            .with_relative_ridge(relative)
            .with_absolute_ridge(absolute);
        match solve_small(&sums, &[0, 1, 2], &[0, 1], params, &mut w, needed) {
            Err(LstsqError::InvalidRidge {
                relative: r,
                absolute: a,
            }) => {
                assert_eq!(
                    (r.to_bits(), a.to_bits()),
                    (relative.to_bits(), absolute.to_bits())
                )
            }
            other => panic!("expected InvalidRidge, got {other:?}"),
        }
    }
    assert!(w.to_matrix().iter().all(|v| v.is_nan()));
}

/// All-zero inputs: with no absolute ridge the ridge is 0 and the solve is rejected at once
/// (retrying a zero ridge is pointless); with an absolute ridge the weights are 0 and the
/// whole target energy is residual. Zero targets give a residual of 0 by convention.
#[test]
fn degenerate_inputs_and_targets() {
    let d = 5;
    let zeros = DMatrix::<f64>::zeros(d, d);
    let sums = Sums {
        gram: StridedF64::lower_from_matrix(&zeros, Layout::ROW_MAJOR),
        cross: StridedF64::from_matrix(&DMatrix::zeros(d, 2), Layout::ROW_MAJOR),
        target_sq_sums: vec![3.0, 0.0],
    };
    let mut w = StridedF64::nan(1, 3, Layout::ROW_MAJOR);
    let len = ridge_solve_scratch_len(3, 1);
    assert_eq!(
        solve_small(&sums, &[4, 0, 2], &[0], RidgeParams::default(), &mut w, len),
        Err(LstsqError::NotPositiveDefinite {
            index: 0,
            column: 4,
            pivot: 0.0,
            ridge: 0.0,
            retries: 0
        })
    );
    let params = RidgeParams::default().with_absolute_ridge(1e-3);
    let info = solve_small(&sums, &[4, 0, 2], &[0], params, &mut w, len).unwrap();
    assert_eq!(info.ridge, 1e-3);
    assert_eq!(info.relative_residual, 1.0);
    assert!(w.to_matrix().iter().all(|&v| v == 0.0));
    let info = solve_small(&sums, &[4, 0, 2], &[1], params, &mut w, len).unwrap();
    assert_eq!(info.relative_residual, 0.0);

    // No columns: nothing explains the targets. No targets: nothing to fit.
    let (sums, _) = small();
    let mut w = StridedF64::nan(2, 0, Layout::ROW_MAJOR);
    let info = solve_small(&sums, &[], &[0, 2], RidgeParams::default(), &mut w, 0).unwrap();
    assert_eq!(info.relative_residual, 1.0);
    let mut w = StridedF64::nan(0, 2, Layout::ROW_MAJOR);
    let len = ridge_solve_scratch_len(2, 0);
    let info = solve_small(&sums, &[1, 3], &[], RidgeParams::default(), &mut w, len).unwrap();
    assert_eq!(info.relative_residual, 0.0);
    assert!(info.min_pivot > 0.0);
}

/// An exact linear relation is recovered (up to the ridge's bias) with a near-zero residual.
#[test]
fn exact_fit_has_zero_residual() {
    let mut rng = Rng::new(5);
    let x = normal_matrix(&mut rng, 200, 6);
    let w_true = DVector::from_vec(vec![1.0, -2.0, 0.5, 0.0, 3.0, -1.0]);
    let t = DMatrix::from_columns(&[&x * &w_true]);
    let sums = Sums::from_samples(&x, &t, Layout::ROW_MAJOR, Layout::ROW_MAJOR);
    let mut w = StridedF64::nan(1, 6, Layout::ROW_MAJOR);
    let cols = [0, 1, 2, 3, 4, 5];
    let info = solve_small(
        &sums,
        &cols,
        &[0],
        RidgeParams::default(),
        &mut w,
        ridge_solve_scratch_len(6, 1),
    )
    .unwrap();
    assert!(
        info.relative_residual < EXACT_FIT_RESIDUAL,
        "{}",
        info.relative_residual
    );
    for a in 0..6 {
        assert!(
            (w.get(0, a) - w_true[a]).abs() < EXACT_FIT_WEIGHT_ABS,
            "{a}: {}",
            w.get(0, a)
        );
    }
}

#[test]
fn errors_display_where_they_failed() {
    let e = LstsqError::NotPositiveDefinite {
        index: 2,
        column: 9,
        pivot: -1.0,
        ridge: 1e-3,
        retries: 4,
    };
    let s = e.to_string();
    assert!(
        s.contains("pivot 2") && s.contains("column 9") && s.contains("4 retries"),
        "{s}"
    );
    let e: &dyn std::error::Error = &LstsqError::NonFinite {
        operand: Operand::Cross,
        row: 3,
        col: 1,
    };
    assert!(e.to_string().contains("cross") && e.to_string().contains("(3, 1)"));
    let e = LstsqError::ShapeMismatch {
        operand: Operand::Weights,
        expected: (1, 2),
        found: (2, 2),
    };
    assert!(e.to_string().contains("weights is 2x2, expected 1x2"));
}

/// Found by fuzzing: finite but huge normal equations on a nearly singular block used to
/// return infinite weights as a success; now the overflow is a typed error and nothing is
/// written.
#[test]
fn overflowing_solution_is_a_typed_error() {
    use pleas_core::linalg::{MatMut, MatRef};
    use pleas_core::lstsq::{
        LstsqError, NormalEquations, RidgeParams, ridge_solve, ridge_solve_scratch_len,
    };
    let gram = [1e-300f64, 0.0, 0.0, 1e-300];
    let cross = [1e300f64, -1e300];
    let sq = [1.0f64];
    let eqs = NormalEquations {
        gram: MatRef::new(&gram, 2, 2).unwrap(),
        cross: MatRef::new(&cross, 2, 1).unwrap(),
        target_sq_sums: &sq,
    };
    let mut w = [7.0f64; 2];
    let mut scratch = vec![0.0; ridge_solve_scratch_len(2, 1)];
    let err = ridge_solve(
        eqs,
        &[0, 1],
        &[0],
        RidgeParams::default(),
        MatMut::new(&mut w, 1, 2).unwrap(),
        &mut scratch,
    )
    .unwrap_err();
    assert!(
        matches!(err, LstsqError::SolutionOverflow { target: 0, .. }),
        "{err}"
    );
    assert_eq!(w, [7.0, 7.0], "nothing written on error");
}

/// Target energies whose sum exceeds `f64::MAX` (each one finite): the relative residual is
/// still a number (found by fuzzing `ridge_solve`: it was `inf / inf = NaN`).
#[test]
fn relative_residual_of_huge_target_energies_is_finite() {
    use pleas_core::linalg::{MatMut, MatRef};
    let gram = [1.0f64, 0.0, 0.0, 1.0];
    let cross = [0.0f64; 6];
    let sq = [1.3e308f64, 9e307, 9e307];
    let eqs = NormalEquations {
        gram: MatRef::new(&gram, 2, 2).unwrap(),
        cross: MatRef::new(&cross, 2, 3).unwrap(),
        target_sq_sums: &sq,
    };
    for cols in [&[][..], &[0, 1]] {
        let mut w = vec![f64::NAN; 3 * cols.len()];
        let mut scratch = vec![0.0; ridge_solve_scratch_len(cols.len(), 3)];
        let info = ridge_solve(
            eqs,
            cols,
            &[0, 1, 2],
            RidgeParams::default(),
            MatMut::new(&mut w, 3, cols.len()).unwrap(),
            &mut scratch,
        )
        .unwrap();
        // Nothing explains the targets (no columns, or zero cross moments).
        assert!(
            (info.relative_residual - 1.0).abs() < 1e-15,
            "{cols:?}: {}",
            info.relative_residual
        );
    }
}
