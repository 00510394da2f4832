//! The SIMD triangular solves `L Y = B` and `L^T X = Y` against their scalar twins and
//! nalgebra, with many right-hand sides, strided and transposed views of both operands, and
//! their typed errors.

use nalgebra::DMatrix;
use pleas_core::linalg::{
    MatMut, MatRef, TriangularError, solve_lower_in_place, solve_lower_reference,
    solve_lower_transpose_in_place, solve_lower_transpose_reference,
};
use pleas_tests::spd::{EDGE_SIZES, Rng, condition_number, spd_with_cond, uniform_matrix};
use pleas_tests::strided_f64::{Layout, StridedF64, layout};
use pleas_tests::tolerance::{TRIANGULAR_FORWARD, TRIANGULAR_RESIDUAL};
use proptest::prelude::*;

/// `cases` unless `PROPTEST_CASES` asks for another count.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![proptest::sample::select(EDGE_SIZES.to_vec()), 1usize..=80]
}

/// Right-hand-side counts around the 4-lane width.
fn rhs_count() -> impl Strategy<Value = usize> {
    prop_oneof![
        proptest::sample::select(vec![1usize, 2, 3, 4, 5, 7, 8, 9, 17]),
        1usize..=24
    ]
}

/// Which system is solved.
#[derive(Debug, Clone, Copy)]
enum System {
    /// `L Y = B`.
    Lower,
    /// `L^T X = Y`.
    LowerTranspose,
}

type Solver = fn(MatRef<'_, f64>, MatMut<'_, f64>) -> Result<(), TriangularError>;

impl System {
    fn kernel(self) -> Solver {
        match self {
            System::Lower => solve_lower_in_place,
            System::LowerTranspose => solve_lower_transpose_in_place,
        }
    }

    fn twin(self) -> Solver {
        match self {
            System::Lower => solve_lower_reference,
            System::LowerTranspose => solve_lower_transpose_reference,
        }
    }

    /// The matrix actually applied: `L` or `L^T`.
    fn operator(self, l: &DMatrix<f64>) -> DMatrix<f64> {
        match self {
            System::Lower => l.clone(),
            System::LowerTranspose => l.transpose(),
        }
    }

    fn nalgebra(self, l: &DMatrix<f64>, b: &DMatrix<f64>) -> DMatrix<f64> {
        match self {
            System::Lower => l.solve_lower_triangular(b),
            System::LowerTranspose => l.tr_solve_lower_triangular(b),
        }
        .expect("non-singular")
    }
}

fn system() -> impl Strategy<Value = System> {
    prop_oneof![Just(System::Lower), Just(System::LowerTranspose)]
}

/// A lower-triangular factor (of an SPD matrix with cond in 1..1e6, so cond(L) <= 1e3) stored
/// in `lay` with NaN above the diagonal.
fn factor(rng: &mut Rng, n: usize, cond: f64, lay: Layout) -> (DMatrix<f64>, StridedF64) {
    let l = spd_with_cond(rng, n, cond).cholesky().expect("SPD").l();
    let s = StridedF64::lower_from_matrix(&l, lay);
    (l, s)
}

proptest! {
    #![proptest_config(pleas_tests::config(64))]

    /// Kernel, scalar twin and nalgebra agree column by column; the residual is at rounding
    /// level; `L`'s upper triangle (NaN) is not read; nothing outside `B`'s view is written.
    #[test]
    fn solves_match_twin_and_nalgebra(
        sys in system(), n in size(), m in rhs_count(), l_lay in layout(), b_lay in layout(),
        cond_exp in 0.0f64..=6.0, seed in any::<u64>()
    ) {
        let mut rng = Rng::new(seed);
        let (l, ls) = factor(&mut rng, n, 10f64.powf(cond_exp), l_lay);
        let b = uniform_matrix(&mut rng, n, m);
        let mut fast = StridedF64::from_matrix(&b, b_lay);
        let mut twin = StridedF64::from_matrix(&b, Layout::ROW_MAJOR);
        (sys.kernel())(ls.view(), fast.view_mut()).unwrap();
        (sys.twin())(ls.view(), twin.view_mut()).unwrap();
        prop_assert!(fast.outside_untouched());

        let x = fast.to_matrix();
        let x_twin = twin.to_matrix();
        let x_na = sys.nalgebra(&l, &b);
        let op = sys.operator(&l);
        let cond_l = condition_number(&l);
        let eps_n = n as f64 * f64::EPSILON;
        let residual = &op * &x - &b;
        for c in 0..m {
            let xn = x_na.column(c).norm();
            let forward = TRIANGULAR_FORWARD * eps_n * cond_l * xn;
            let d_twin = (x.column(c) - x_twin.column(c)).norm();
            let d_na = (x.column(c) - x_na.column(c)).norm();
            prop_assert!(d_twin <= forward, "column {c} vs twin: {d_twin:e} > {forward:e}");
            prop_assert!(d_na <= forward, "column {c} vs nalgebra: {d_na:e} > {forward:e}");
            let back = TRIANGULAR_RESIDUAL * eps_n * l.norm() * x.column(c).norm();
            let r = residual.column(c).norm();
            prop_assert!(r <= back, "column {c} residual {r:e} > {back:e}");
        }
    }

    /// A zero or non-finite diagonal element is reported at the first such index, before
    /// anything is written; garbage above the diagonal does not matter.
    #[test]
    fn unusable_diagonal_is_reported_at_its_index(
        sys in system(), n in size(), m in rhs_count(), l_lay in layout(), b_lay in layout(),
        seed in any::<u64>(),
        spots in proptest::collection::vec((any::<proptest::sample::Index>(), 0usize..4), 1..3)
    ) {
        let mut rng = Rng::new(seed);
        let (_, mut ls) = factor(&mut rng, n, 10.0, l_lay);
        let bad = [0.0, -0.0, f64::NAN, f64::INFINITY];
        let mut first = usize::MAX;
        let mut first_value = 0.0;
        for (at, v) in &spots {
            let i = at.index(n);
            ls.set(i, i, bad[*v]);
            if i <= first {
                first = i;
                first_value = bad[*v];
            }
        }
        let b = StridedF64::from_matrix(&uniform_matrix(&mut rng, n, m), b_lay);
        for solver in [sys.kernel(), sys.twin()] {
            let mut out = b.clone();
            match solver(ls.view(), out.view_mut()) {
                Err(TriangularError::InvalidDiagonal { index, value }) => {
                    prop_assert_eq!(index, first);
                    prop_assert_eq!(value.to_bits(), first_value.to_bits());
                }
                other => prop_assert!(false, "expected a diagonal error at {first}, got {other:?}"),
            }
            prop_assert!(out.same_bits(&b));
        }
    }

    /// `B` with the wrong number of rows, or a non-square `L`, is rejected with both shapes.
    #[test]
    fn shape_errors_carry_both_shapes(
        sys in system(), n in 1usize..20, extra in 1usize..4, m in 1usize..6, seed in any::<u64>()
    ) {
        let mut rng = Rng::new(seed);
        let (_, ls) = factor(&mut rng, n, 10.0, Layout::ROW_MAJOR);
        let b = StridedF64::from_matrix(&uniform_matrix(&mut rng, n + extra, m), Layout::ROW_MAJOR);
        let rect = StridedF64::from_matrix(&uniform_matrix(&mut rng, n, n + extra), Layout::ROW_MAJOR);
        for solver in [sys.kernel(), sys.twin()] {
            let mut out = b.clone();
            prop_assert_eq!(
                solver(ls.view(), out.view_mut()),
                Err(TriangularError::ShapeMismatch { l: (n, n), b: (n + extra, m) })
            );
            prop_assert!(out.same_bits(&b));
            prop_assert_eq!(
                solver(rect.view(), out.view_mut()),
                Err(TriangularError::NotSquare { rows: n, cols: n + extra })
            );
        }
    }
}

/// Infinity and NaN in a right-hand side stay in the columns that hold them, exactly like the
/// scalar twin (lane by lane: column 5 sits in the tail after one 4-wide group).
#[test]
fn non_finite_right_hand_sides_stay_in_their_columns() {
    let n = 9;
    let mut rng = Rng::new(3);
    for sys in [System::Lower, System::LowerTranspose] {
        for b_lay in [
            Layout::ROW_MAJOR,
            Layout {
                col_major: true,
                ..Layout::ROW_MAJOR
            },
        ] {
            let (_, ls) = factor(&mut rng, n, 10.0, Layout::ROW_MAJOR);
            let mut b = uniform_matrix(&mut rng, n, 6);
            b[(4, 1)] = f64::NAN;
            b[(6, 5)] = f64::INFINITY;
            let mut fast = StridedF64::from_matrix(&b, b_lay);
            let mut twin = StridedF64::from_matrix(&b, b_lay);
            (sys.kernel())(ls.view(), fast.view_mut()).unwrap();
            (sys.twin())(ls.view(), twin.view_mut()).unwrap();
            for c in 0..6 {
                let mut poisoned = false;
                for i in 0..n {
                    let (f, t) = (fast.get(i, c), twin.get(i, c));
                    assert_eq!(f.is_finite(), t.is_finite(), "{sys:?} ({i},{c})");
                    poisoned |= !f.is_finite();
                }
                assert_eq!(poisoned, c == 1 || c == 5, "{sys:?} column {c}");
            }
        }
    }
}

#[test]
fn empty_systems_are_no_ops() {
    let l: [f64; 0] = [];
    let mut b: [f64; 0] = [];
    let lv = MatRef::new(&l, 0, 0).unwrap();
    assert_eq!(
        solve_lower_in_place(lv, MatMut::new(&mut b, 0, 3).unwrap()),
        Ok(())
    );
    let l = [2.0];
    let mut b: [f64; 0] = [];
    let lv = MatRef::new(&l, 1, 1).unwrap();
    assert_eq!(
        solve_lower_transpose_in_place(lv, MatMut::new(&mut b, 1, 0).unwrap()),
        Ok(())
    );
}

#[test]
fn errors_display_where_they_failed() {
    let e = TriangularError::InvalidDiagonal {
        index: 4,
        value: 0.0,
    };
    assert!(e.to_string().contains("L[4, 4]"));
    let e: &dyn std::error::Error = &TriangularError::ShapeMismatch {
        l: (3, 3),
        b: (4, 2),
    };
    assert!(e.to_string().contains("3x3") && e.to_string().contains("4x2"));
}
