//! The blocked SIMD GEMM against its scalar twin and against nalgebra in f64.

use nalgebra::DMatrix;
use pleas_core::linalg::{
    KernelError, MatMut, MatRef, Transpose, cross_update, gemm, gemm_reference, gemm_scratch_len,
};
use pleas_tests::matrices::{StridedMatrix, dim, strided_matrix, to_f64};
use pleas_tests::simd_paths::{each_path, for_each_path};
use pleas_tests::tolerance::F32_DOT_PER_TERM;
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Case {
    a: StridedMatrix,
    op_a: Transpose,
    b: StridedMatrix,
    op_b: Transpose,
    c: StridedMatrix,
    alpha: f32,
    beta: f32,
}

fn op() -> impl Strategy<Value = Transpose> {
    prop_oneof![Just(Transpose::No), Just(Transpose::Yes)]
}

fn case() -> impl Strategy<Value = Case> {
    (dim(140), dim(140), dim(700), op(), op())
        .prop_flat_map(|(m, n, k, op_a, op_b)| {
            let (ar, ac) = if op_a == Transpose::No {
                (m, k)
            } else {
                (k, m)
            };
            let (br, bc) = if op_b == Transpose::No {
                (k, n)
            } else {
                (n, k)
            };
            (
                strided_matrix(ar, ac),
                Just(op_a),
                strided_matrix(br, bc),
                Just(op_b),
                strided_matrix(m, n),
                prop_oneof![Just(1.0f32), Just(-0.5f32), -2.0f32..2.0],
                prop_oneof![Just(0.0f32), Just(1.0f32), -2.0f32..2.0],
            )
        })
        .prop_map(|(a, op_a, b, op_b, c, alpha, beta)| Case {
            a,
            op_a,
            b,
            op_b,
            c,
            alpha,
            beta,
        })
}

fn apply(op: Transpose, m: DMatrix<f64>) -> DMatrix<f64> {
    match op {
        Transpose::No => m,
        Transpose::Yes => m.transpose(),
    }
}

/// Runs one kernel on a copy of `case.c`; returns the output as an f64 matrix.
fn run(case: &Case, blocked: bool) -> DMatrix<f64> {
    let mut c = case.c.clone();
    let (m, n) = (c.rows, c.cols);
    let (rs, cs) = (c.row_stride, c.col_stride);
    let cv = MatMut::from_strided(&mut c.data, m, n, rs, cs).unwrap();
    let k = match case.op_a {
        Transpose::No => case.a.cols,
        Transpose::Yes => case.a.rows,
    };
    if blocked {
        let mut scratch = vec![f32::NAN; gemm_scratch_len(m, n, k)];
        gemm(
            case.alpha,
            case.a.view(),
            case.op_a,
            case.b.view(),
            case.op_b,
            case.beta,
            cv,
            &mut scratch,
        )
        .unwrap();
    } else {
        gemm_reference(
            case.alpha,
            case.a.view(),
            case.op_a,
            case.b.view(),
            case.op_b,
            case.beta,
            cv,
        )
        .unwrap();
    }
    // Elements outside the view must still be NaN (nothing written outside C).
    let out = MatRef::from_strided(&c.data, m, n, rs, cs).unwrap();
    let inside = |idx: usize| (0..m).any(|i| (0..n).any(|j| i * rs + j * cs == idx));
    for (idx, v) in c.data.iter().enumerate() {
        if !v.is_nan() {
            assert!(inside(idx), "write outside the view at {idx}");
        }
    }
    to_f64(out)
}

/// `alpha op(A) op(B) + beta C` in f64 and the matching error scale `|alpha| |A||B| + |beta C|`.
fn exact(case: &Case) -> (DMatrix<f64>, DMatrix<f64>) {
    let a = apply(case.op_a, case.a.to_f64());
    let b = apply(case.op_b, case.b.to_f64());
    let c = case.c.to_f64();
    let (alpha, beta) = (f64::from(case.alpha), f64::from(case.beta));
    let prod = &a * &b * alpha + &c * beta;
    let scale = a.abs() * b.abs() * alpha.abs() + c.abs() * beta.abs();
    (prod, scale)
}

proptest! {
    #![proptest_config(pleas_tests::config(64))]

    #[test]
    fn blocked_matches_scalar_twin_and_f64_on_every_path(case in case()) {
        let k = match case.op_a { Transpose::No => case.a.cols, Transpose::Yes => case.a.rows };
        let scalar = run(&case, false);
        let (truth, scale) = exact(&case);
        let per_term = (k as f64 + 2.0) * F32_DOT_PER_TERM;
        each_path(|path| {
            let blocked = run(&case, true);
            for i in 0..truth.nrows() {
                for j in 0..truth.ncols() {
                    let tol = per_term * scale[(i, j)] + f64::MIN_POSITIVE;
                    prop_assert!((blocked[(i, j)] - scalar[(i, j)]).abs() <= 2.0 * tol,
                        "{path}: vs scalar at ({i},{j}): {} vs {}", blocked[(i, j)], scalar[(i, j)]);
                    prop_assert!((blocked[(i, j)] - truth[(i, j)]).abs() <= tol,
                        "{path}: vs f64 at ({i},{j}): {} vs {}", blocked[(i, j)], truth[(i, j)]);
                }
            }
            Ok(())
        })?;
    }
}

#[test]
fn beta_zero_ignores_nan_in_c() {
    let a = [1.0f32, 2.0, 3.0, 4.0];
    let mut c = [f32::NAN; 4];
    let av = MatRef::new(&a, 2, 2).unwrap();
    let mut scratch = vec![0.0; gemm_scratch_len(2, 2, 2)];
    gemm(
        1.0,
        av,
        Transpose::No,
        av,
        Transpose::No,
        0.0,
        MatMut::new(&mut c, 2, 2).unwrap(),
        &mut scratch,
    )
    .unwrap();
    assert_eq!(c, [7.0, 10.0, 15.0, 22.0]);
}

#[test]
fn nan_in_inputs_propagates() {
    let a = [1.0f32, f32::NAN, 3.0, 4.0];
    let mut c = [0.0f32; 4];
    let av = MatRef::new(&a, 2, 2).unwrap();
    let mut scratch = vec![0.0; gemm_scratch_len(2, 2, 2)];
    gemm(
        1.0,
        av,
        Transpose::No,
        av,
        Transpose::No,
        1.0,
        MatMut::new(&mut c, 2, 2).unwrap(),
        &mut scratch,
    )
    .unwrap();
    assert!(c[0].is_nan() && c[1].is_nan());
}

#[test]
fn shape_and_scratch_errors_name_the_problem() {
    let a = vec![0.0f32; 6];
    let b = vec![0.0f32; 12];
    let mut c = vec![0.0f32; 8];
    let av = MatRef::new(&a, 2, 3).unwrap();
    let bv = MatRef::new(&b, 4, 3).unwrap();
    let mut scratch = vec![0.0; 4096];
    let err = gemm(
        1.0,
        av,
        Transpose::No,
        bv,
        Transpose::No,
        0.0,
        MatMut::new(&mut c, 2, 4).unwrap(),
        &mut scratch,
    )
    .unwrap_err();
    assert_eq!(
        err,
        KernelError::ShapeMismatch {
            operands: "op(A) * op(B)",
            left: (2, 3),
            right: (4, 3)
        }
    );
    assert!(err.to_string().contains("2x3 vs 4x3"));
    let err = gemm(
        1.0,
        av,
        Transpose::No,
        bv,
        Transpose::Yes,
        0.0,
        MatMut::new(&mut c, 4, 2).unwrap(),
        &mut scratch,
    )
    .unwrap_err();
    assert_eq!(
        err,
        KernelError::ShapeMismatch {
            operands: "C vs op(A) * op(B)",
            left: (4, 2),
            right: (2, 4)
        }
    );
    let needed = gemm_scratch_len(2, 4, 3);
    let err = gemm(
        1.0,
        av,
        Transpose::No,
        bv,
        Transpose::Yes,
        0.0,
        MatMut::new(&mut c, 2, 4).unwrap(),
        &mut scratch[..needed - 1],
    )
    .unwrap_err();
    assert_eq!(
        err,
        KernelError::ScratchTooSmall {
            needed,
            provided: needed - 1
        }
    );
}

#[test]
fn empty_dimensions_are_fine() {
    let a: Vec<f32> = vec![];
    let mut c = vec![5.0f32; 6];
    let av = MatRef::new(&a, 2, 0).unwrap();
    let bv = MatRef::new(&a, 0, 3).unwrap();
    gemm(
        1.0,
        av,
        Transpose::No,
        bv,
        Transpose::No,
        2.0,
        MatMut::new(&mut c, 2, 3).unwrap(),
        &mut [],
    )
    .unwrap();
    assert_eq!(c, vec![10.0; 6]);
}

#[test]
fn cross_update_accumulates_x_transpose_t() {
    let (n, d, t) = (70, 9, 5);
    let x = pleas_tests::matrices::uniform_values(n * d, 1);
    let tv = pleas_tests::matrices::uniform_values(n * t, 2);
    let mut r = vec![1.0f32; d * t];
    let mut scratch = vec![0.0; gemm_scratch_len(d, t, n)];
    let xv = MatRef::new(&x, n, d).unwrap();
    let tm = MatRef::new(&tv, n, t).unwrap();
    cross_update(xv, tm, MatMut::new(&mut r, d, t).unwrap(), &mut scratch).unwrap();
    let want = to_f64(xv).transpose() * to_f64(tm);
    for i in 0..d {
        for j in 0..t {
            let tol = (n as f64 + 2.0) * F32_DOT_PER_TERM * n as f64;
            assert!((f64::from(r[i * t + j]) - 1.0 - want[(i, j)]).abs() <= tol);
        }
    }
}

/// Shapes crossing every path's block edges (AVX-512: MR = 12, NR = 32, MC = 240, KC = 256;
/// AVX2 and portable: 6, 16, 120, 320), with transposed operands, on every path, against
/// nalgebra f64.
#[test]
fn block_edges_of_every_path() {
    for &(m, n, k) in &[(241, 33, 257), (13, 250, 513), (121, 65, 321)] {
        for (op_a, op_b) in [
            (Transpose::No, Transpose::No),
            (Transpose::Yes, Transpose::Yes),
        ] {
            let (ar, ac) = if op_a == Transpose::No {
                (m, k)
            } else {
                (k, m)
            };
            let (br, bc) = if op_b == Transpose::No {
                (k, n)
            } else {
                (n, k)
            };
            let a = pleas_tests::matrices::uniform_values(ar * ac, 3);
            let b = pleas_tests::matrices::uniform_values(br * bc, 4);
            let (av, bv) = (
                MatRef::new(&a, ar, ac).unwrap(),
                MatRef::new(&b, br, bc).unwrap(),
            );
            let af = apply(op_a, to_f64(av));
            let bf = apply(op_b, to_f64(bv));
            let truth = &af * &bf;
            let scale = af.abs() * bf.abs();
            for_each_path(|path| {
                let mut c = vec![f32::NAN; m * n];
                let mut scratch = vec![f32::NAN; gemm_scratch_len(m, n, k)];
                let cv = MatMut::new(&mut c, m, n).unwrap();
                gemm(1.0, av, op_a, bv, op_b, 0.0, cv, &mut scratch).unwrap();
                for i in 0..m {
                    for j in 0..n {
                        let v = f64::from(c[i * n + j]);
                        let tol = (k as f64 + 2.0) * F32_DOT_PER_TERM * scale[(i, j)];
                        assert!(
                            (v - truth[(i, j)]).abs() <= tol,
                            "{path} {m}x{n}x{k} ({i},{j}): {v} vs {}",
                            truth[(i, j)]
                        );
                    }
                }
            });
        }
    }
}
