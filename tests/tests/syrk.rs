//! The blocked SIMD Gram update (SYRK, lower triangle) against its scalar twin and nalgebra.

use pleas_core::linalg::{
    KernelError, MatMut, MatRef, syrk_lower, syrk_lower_reference, syrk_lower_scratch_len,
};
use pleas_tests::matrices::{StridedMatrix, dim, strided_matrix, to_f64};
use pleas_tests::simd_paths::{each_path, for_each_path};
use pleas_tests::tolerance::F32_DOT_PER_TERM;
use proptest::prelude::*;

fn case() -> impl Strategy<Value = (StridedMatrix, Vec<f32>, f32, f32)> {
    (dim(700), dim(140)).prop_flat_map(|(n, d)| {
        (
            strided_matrix(n, d),
            proptest::collection::vec(-1.0f32..1.0, d * d),
            prop_oneof![Just(1.0f32), -2.0f32..2.0],
            prop_oneof![Just(0.0f32), Just(1.0f32), -2.0f32..2.0],
        )
    })
}

proptest! {
    #![proptest_config(pleas_tests::config(64))]

    #[test]
    fn lower_triangle_matches_scalar_twin_and_f64_on_every_path((x, c0, alpha, beta) in case()) {
        let (n, d) = (x.rows, x.cols);
        let mut scalar = c0.clone();
        syrk_lower_reference(alpha, x.view(), beta, MatMut::new(&mut scalar, d, d).unwrap()).unwrap();
        let xf = x.to_f64();
        let truth = xf.transpose() * &xf * f64::from(alpha);
        let scale = xf.abs().transpose() * xf.abs() * f64::from(alpha).abs();
        let per_term = (n as f64 + 2.0) * F32_DOT_PER_TERM;
        each_path(|path| {
            let mut blocked = c0.clone();
            let mut scratch = vec![f32::NAN; syrk_lower_scratch_len(n, d)];
            syrk_lower(alpha, x.view(), beta, MatMut::new(&mut blocked, d, d).unwrap(), &mut scratch).unwrap();
            for i in 0..d {
                for j in 0..d {
                    let (b, s) = (blocked[i * d + j], scalar[i * d + j]);
                    if j > i {
                        // Strict upper triangle: never written.
                        prop_assert_eq!(b.to_bits(), c0[i * d + j].to_bits());
                        prop_assert_eq!(s.to_bits(), c0[i * d + j].to_bits());
                        continue;
                    }
                    let old = f64::from(c0[i * d + j]);
                    let want = truth[(i, j)] + f64::from(beta) * old;
                    let tol = per_term * (scale[(i, j)] + f64::from(beta).abs() * old.abs()) + f64::MIN_POSITIVE;
                    prop_assert!((f64::from(b) - f64::from(s)).abs() <= 2.0 * tol, "{path}: vs scalar ({i},{j})");
                    prop_assert!((f64::from(b) - want).abs() <= tol, "{path}: vs f64 ({i},{j}): {b} vs {want}");
                }
            }
            Ok(())
        })?;
    }
}

/// Shapes crossing every path's block edges (AVX-512: MR = 12, NR = 32, MC = 240, KC = 248;
/// AVX2: 6, 16, 120, 312; portable: 6, 16, 120, 320), on every path, against nalgebra f64.
/// (513, 35) takes three `KC` slices whose rows are contiguous, so the micro-kernels prefetch
/// the next slice while computing one; odd `n` leaves `kc` steps past the unrolled loop.
#[test]
fn block_edges_of_every_path() {
    // (330, 1031): rows a page or more apart, where A's blocks are packed from B's panel (strips
    // of A that straddle two strips of the panel included), over two KC slices on every path,
    // with ragged edges (KC and MC do not divide 330 and 1031).
    for &(n, d) in &[(257, 241), (513, 35), (321, 130), (330, 1031)] {
        let x = pleas_tests::matrices::uniform_values(n * d, 5);
        let xv = MatRef::new(&x, n, d).unwrap();
        let xf = to_f64(xv);
        let truth = xf.transpose() * &xf;
        let scale = xf.abs().transpose() * xf.abs();
        for_each_path(|path| {
            let mut c = vec![f32::NAN; d * d];
            let mut scratch = vec![f32::NAN; syrk_lower_scratch_len(n, d)];
            syrk_lower(
                1.0,
                xv,
                0.0,
                MatMut::new(&mut c, d, d).unwrap(),
                &mut scratch,
            )
            .unwrap();
            for i in 0..d {
                for j in 0..d {
                    let v = c[i * d + j];
                    if j > i {
                        assert!(v.is_nan(), "{path} {n}x{d}: upper ({i},{j}) written");
                        continue;
                    }
                    let tol = (n as f64 + 2.0) * F32_DOT_PER_TERM * scale[(i, j)];
                    assert!(
                        (f64::from(v) - truth[(i, j)]).abs() <= tol,
                        "{path} {n}x{d} ({i},{j}): {v} vs {}",
                        truth[(i, j)]
                    );
                }
            }
        });
    }
}

#[test]
fn edge_values_propagate_like_the_scalar_twin() {
    // Infinity and NaN in one sample reach exactly the entries that touch their columns.
    let x = [
        1.0f32,
        f32::INFINITY,
        0.5,
        2.0,
        1.0,
        f32::NAN,
        1e-40,
        1.0,
        1.0,
    ];
    let xv = MatRef::new(&x, 3, 3).unwrap();
    let mut blocked = vec![0.0f32; 9];
    let mut scalar = vec![0.0f32; 9];
    let mut scratch = vec![0.0; syrk_lower_scratch_len(3, 3)];
    syrk_lower(
        1.0,
        xv,
        0.0,
        MatMut::new(&mut blocked, 3, 3).unwrap(),
        &mut scratch,
    )
    .unwrap();
    syrk_lower_reference(1.0, xv, 0.0, MatMut::new(&mut scalar, 3, 3).unwrap()).unwrap();
    for i in 0..3 {
        for j in 0..=i {
            let (b, s) = (blocked[i * 3 + j], scalar[i * 3 + j]);
            assert_eq!(b.is_nan(), s.is_nan(), "({i},{j})");
            if !s.is_nan() {
                assert_eq!(b, s, "({i},{j})");
            }
        }
    }
    assert!(blocked[0].is_finite() && blocked[4] == f32::INFINITY && blocked[8].is_nan());
}

#[test]
fn wrong_output_shape_is_reported() {
    let x = vec![0.0f32; 12];
    let mut c = vec![0.0f32; 9];
    let err = syrk_lower(
        1.0,
        MatRef::new(&x, 4, 3).unwrap(),
        0.0,
        MatMut::new(&mut c, 3, 3).unwrap(),
        &mut [],
    )
    .unwrap_err();
    assert!(matches!(err, KernelError::ScratchTooSmall { .. }));
    let mut c = vec![0.0f32; 8];
    let err = syrk_lower(
        1.0,
        MatRef::new(&x, 4, 3).unwrap(),
        0.0,
        MatMut::new(&mut c, 2, 4).unwrap(),
        &mut [],
    )
    .unwrap_err();
    assert_eq!(
        err,
        KernelError::ShapeMismatch {
            operands: "C vs X^T X",
            left: (2, 4),
            right: (3, 3)
        }
    );
    // A nalgebra cross-check of a tiny exact case.
    let x = [1.0f32, 2.0, 3.0, 4.0];
    let mut c = [0.0f32; 4];
    syrk_lower(
        1.0,
        MatRef::new(&x, 2, 2).unwrap(),
        0.0,
        MatMut::new(&mut c, 2, 2).unwrap(),
        &mut vec![0.0; syrk_lower_scratch_len(2, 2)],
    )
    .unwrap();
    let xf = to_f64(MatRef::new(&x, 2, 2).unwrap());
    let g = xf.transpose() * xf;
    assert_eq!(
        (c[0], c[2], c[3]),
        (g[(0, 0)] as f32, g[(1, 0)] as f32, g[(1, 1)] as f32)
    );
}
