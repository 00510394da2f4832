//! The blocked SIMD Cholesky factorization against its scalar twin and nalgebra's `Cholesky`,
//! on strided views, random and ill-conditioned (cond up to 1e6) matrices, and its typed
//! errors: non-finite input, non-positive pivots, non-square shapes.

use nalgebra::DMatrix;
use pleas_core::linalg::{
    CholeskyError, CholeskyParams, MatMut, cholesky_in_place, cholesky_reference,
};
use pleas_tests::spd::{EDGE_SIZES, Rng, spd_with_cond, with_failing_pivot};
use pleas_tests::strided_f64::{Layout, StridedF64, layout};
use pleas_tests::tolerance::{
    CHOLESKY_BACKWARD, CHOLESKY_FACTOR, FAILING_PIVOT_ABS, PIVOT_AGREEMENT,
};
use proptest::prelude::*;

/// `cases` unless `PROPTEST_CASES` asks for another count.
/// A size: one of the edge sizes or anything up to 80.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![proptest::sample::select(EDGE_SIZES.to_vec()), 1usize..=80]
}

/// Block sizes across and around the 4-lane width, and the default.
fn block_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(CholeskyParams::default().block_size),
        proptest::sample::select(vec![0usize, 1, 2, 3, 4, 5, 8, 13, 16, 64]),
    ]
}

/// Condition numbers from 1 to 1e6, log-uniform.
fn condition() -> impl Strategy<Value = f64> {
    (0.0f64..=6.0).prop_map(|e| 10f64.powf(e))
}

fn params(nb: usize) -> CholeskyParams {
    CholeskyParams::default().with_block_size(nb)
}

fn frobenius(m: &DMatrix<f64>) -> f64 {
    m.norm()
}

proptest! {
    #![proptest_config(pleas_tests::config(48))]

    /// Blocked kernel, scalar twin and nalgebra agree; `L L^T` reproduces `A`; the strict upper
    /// triangle (NaN) is never read nor written; nothing outside the view is touched.
    #[test]
    fn factor_matches_twin_and_nalgebra(
        n in size(), lay in layout(), nb in block_size(), cond in condition(), seed in any::<u64>()
    ) {
        let a = spd_with_cond(&mut Rng::new(seed), n, cond);
        let mut blocked = StridedF64::lower_from_matrix(&a, lay);
        let mut scalar = StridedF64::lower_from_matrix(&a, Layout::ROW_MAJOR);
        let info = cholesky_in_place(blocked.view_mut(), params(nb)).unwrap();
        let info_ref = cholesky_reference(scalar.view_mut()).unwrap();
        prop_assert!(blocked.outside_untouched());
        for i in 0..n {
            for j in i + 1..n {
                prop_assert!(blocked.get(i, j).is_nan() && scalar.get(i, j).is_nan());
            }
        }

        let l = blocked.lower_to_matrix();
        let l_ref = scalar.lower_to_matrix();
        let l_na = a.clone().cholesky().expect("SPD").l();
        let bound = CHOLESKY_FACTOR * n as f64 * f64::EPSILON * cond * frobenius(&l_na);
        prop_assert!(frobenius(&(&l - &l_ref)) <= bound, "vs twin: {:e} > {bound:e}", frobenius(&(&l - &l_ref)));
        prop_assert!(frobenius(&(&l - &l_na)) <= bound, "vs nalgebra: {:e} > {bound:e}", frobenius(&(&l - &l_na)));

        let back = &l * l.transpose();
        for i in 0..n {
            for j in 0..=i {
                let tol = CHOLESKY_BACKWARD * (n + 1) as f64 * (a[(i, i)] * a[(j, j)]).sqrt();
                prop_assert!((back[(i, j)] - a[(i, j)]).abs() <= tol, "backward ({i},{j})");
            }
        }

        // Pivots are L[j, j]^2.
        let pivots: Vec<f64> = (0..n).map(|j| l_na[(j, j)] * l_na[(j, j)]).collect();
        let min = pivots.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = pivots.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let rel = PIVOT_AGREEMENT * n as f64 * f64::EPSILON * cond;
        prop_assert!((info.min_pivot - min).abs() <= rel * max, "{} vs {min}", info.min_pivot);
        prop_assert!((info.max_pivot - max).abs() <= rel * max, "{} vs {max}", info.max_pivot);
        prop_assert!((info_ref.min_pivot - min).abs() <= rel * max);
        prop_assert!((info_ref.max_pivot - max).abs() <= rel * max);
    }

    /// A pivot built to be negative at `index` is reported at `index` with its value, by both
    /// kernels, whatever the layout and block size.
    #[test]
    fn non_positive_pivot_is_reported_at_its_index(
        n in size(), lay in layout(), nb in block_size(), seed in any::<u64>(),
        at in any::<proptest::sample::Index>(), pivot in -2.0f64..-0.01
    ) {
        let index = at.index(n);
        let a = with_failing_pivot(&mut Rng::new(seed), n, 10.0, index, pivot);
        let mut blocked = StridedF64::lower_from_matrix(&a, lay);
        let mut scalar = StridedF64::lower_from_matrix(&a, Layout::ROW_MAJOR);
        for r in [
            cholesky_in_place(blocked.view_mut(), params(nb)),
            cholesky_reference(scalar.view_mut()),
        ] {
            match r {
                Err(CholeskyError::NonPositivePivot { index: got, value }) => {
                    prop_assert_eq!(got, index);
                    prop_assert!((value - pivot).abs() <= FAILING_PIVOT_ABS, "{value} vs {pivot}");
                }
                other => prop_assert!(false, "expected a pivot error at {index}, got {other:?}"),
            }
        }
        prop_assert!(blocked.outside_untouched());
    }

    /// NaN and infinities in the lower triangle are reported at the first position in row-major
    /// order before anything is written; the same values in the upper triangle are ignored.
    #[test]
    fn non_finite_input_is_reported_at_its_position(
        n in size(), lay in layout(), nb in block_size(), seed in any::<u64>(),
        spots in proptest::collection::vec((any::<proptest::sample::Index>(), any::<proptest::sample::Index>(), 0usize..3), 1..4)
    ) {
        let a = spd_with_cond(&mut Rng::new(seed), n, 100.0);
        let bad = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
        let mut m = StridedF64::lower_from_matrix(&a, lay);
        let mut first: Option<(usize, usize)> = None;
        for (i, j, v) in &spots {
            let (i, j) = (i.index(n), j.index(n));
            let (r, c) = (i.max(j), i.min(j));
            m.set(r, c, bad[*v]);
            first = Some(first.map_or((r, c), |f| f.min((r, c))));
            if r != c {
                // Upper-triangle garbage must not matter.
                m.set(c, r, bad[*v]);
            }
        }
        let (row, col) = first.unwrap();
        let want = Err(CholeskyError::NonFinite { row, col });
        let mut scalar = m.clone();
        let before = m.clone();
        prop_assert_eq!(cholesky_in_place(m.view_mut(), params(nb)), want);
        prop_assert_eq!(cholesky_reference(scalar.view_mut()), want);
        prop_assert!(m.same_bits(&before));
        prop_assert!(scalar.same_bits(&before));
    }
}

#[test]
fn non_square_is_rejected_without_writing() {
    let mut buf = vec![1.0; 12];
    for (r, c) in [(3, 4), (4, 3), (0, 2)] {
        let e = Err(CholeskyError::NotSquare { rows: r, cols: c });
        assert_eq!(
            cholesky_in_place(MatMut::new(&mut buf, r, c).unwrap(), Default::default()),
            e
        );
        assert_eq!(cholesky_reference(MatMut::new(&mut buf, r, c).unwrap()), e);
        assert!(buf.iter().all(|&v| v == 1.0));
    }
}

#[test]
fn empty_matrix_has_empty_pivot_range() {
    let mut buf: [f64; 0] = [];
    let info = cholesky_in_place(MatMut::new(&mut buf, 0, 0).unwrap(), Default::default()).unwrap();
    assert_eq!(info.min_pivot, f64::INFINITY);
    assert_eq!(info.max_pivot, f64::NEG_INFINITY);
}

#[test]
fn one_by_one_is_the_square_root() {
    for (v, ok) in [
        (4.0, Some(2.0)),
        (2f64.powi(-1000), Some(2f64.powi(-500))),
        (0.0, None),
        (-1.0, None),
    ] {
        let mut buf = [v];
        let r = cholesky_in_place(MatMut::new(&mut buf, 1, 1).unwrap(), Default::default());
        match ok {
            Some(l) => {
                let info = r.unwrap();
                assert_eq!(buf[0], l);
                assert_eq!((info.min_pivot, info.max_pivot), (v, v));
            }
            None => assert_eq!(
                r,
                Err(CholeskyError::NonPositivePivot { index: 0, value: v })
            ),
        }
    }
}

/// Subnormal pivots: `diag(4^-530 * 4^j)` has exact square roots `2^-530 * 2^j`, some of whose
/// squares are subnormal; both kernels must return them exactly (9 columns: two 4-lane groups
/// and a tail).
#[test]
fn subnormal_pivots_are_exact() {
    let n = 9;
    let a = DMatrix::from_fn(n, n, |i, j| {
        if i == j {
            2f64.powi(-1060 + 2 * i as i32)
        } else {
            0.0
        }
    });
    assert!(a[(0, 0)] > 0.0 && a[(0, 0)] < f64::MIN_POSITIVE);
    for nb in [1, 4, 32] {
        let mut fast = StridedF64::lower_from_matrix(&a, Layout::ROW_MAJOR);
        let mut twin = fast.clone();
        let info = cholesky_in_place(fast.view_mut(), params(nb)).unwrap();
        cholesky_reference(twin.view_mut()).unwrap();
        for i in 0..n {
            let want = 2f64.powi(-530 + i as i32);
            assert_eq!(fast.get(i, i), want);
            assert_eq!(twin.get(i, i), want);
            for j in 0..i {
                assert_eq!(fast.get(i, j), 0.0);
            }
        }
        assert_eq!(info.min_pivot, a[(0, 0)]);
        assert_eq!(info.max_pivot, a[(n - 1, n - 1)]);
    }
}

/// A matrix whose entries overflow during the factorization fails with a typed pivot error,
/// never with an `Ok` holding infinities.
#[test]
fn overflow_is_a_pivot_error() {
    // L[1, 0] = 1e300 / 1e-10 overflows; the next pivot is 1 - inf^2 = -inf.
    let n = 3;
    let mut a = DMatrix::<f64>::identity(n, n);
    a[(0, 0)] = 1e-20;
    a[(1, 0)] = 1e300;
    a[(2, 0)] = 1.0;
    let mut m = StridedF64::lower_from_matrix(&a, Layout::ROW_MAJOR);
    let r = cholesky_in_place(m.view_mut(), Default::default());
    match r {
        Err(CholeskyError::NonPositivePivot { index: 1, value }) => {
            assert!(value == f64::NEG_INFINITY || value.is_nan())
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn errors_display_where_they_failed() {
    let e = CholeskyError::NonPositivePivot {
        index: 7,
        value: -0.5,
    };
    assert!(e.to_string().contains("pivot 7"));
    let e = CholeskyError::NonFinite { row: 3, col: 1 };
    assert!(e.to_string().contains("(3, 1)"));
    let e: &dyn std::error::Error = &CholeskyError::NotSquare { rows: 2, cols: 3 };
    assert!(e.to_string().contains("2x3"));
}
