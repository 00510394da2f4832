//! The unpacked `A^T B` of row-stored operands (`rows_at_b`, used by the lag-based convolution
//! Gram) against its scalar twin on every SIMD path and the twin against nalgebra f64.

use nalgebra::DMatrix;
use pleas_core::linalg::{KernelError, Rows, rows_at_b, rows_at_b_reference};
use pleas_tests::matrices::uniform_values;
use pleas_tests::simd_paths::each_path;
use pleas_tests::tolerance::F32_DOT_PER_TERM;
use proptest::prelude::*;

/// An operand of `k` rows of `cols` values `stride` apart (rows overlap when
/// `stride < cols`, as the lag products' do), with `tail` spare values after the last row.
fn operand(k: usize, cols: usize, stride: usize, tail: usize, seed: u64) -> Vec<f32> {
    let len = if k == 0 { 0 } else { (k - 1) * stride + cols } + tail;
    uniform_values(len, seed)
}

proptest! {
    #![proptest_config(pleas_tests::config(64))]

    /// Any shape, stride (overlapping rows included) and spare tail (so both the whole-vector
    /// loads and the scalar strips run), on every path, within the f32 dot-product bound.
    #[test]
    fn kernel_matches_the_scalar_twin(
        k in 0usize..300, m in 1usize..30, n in 1usize..100,
        a_extra in 0usize..20, b_pick in 0usize..3, b_extra in 0usize..20,
        tail in prop_oneof![Just(0usize), 0usize..40], seed in any::<u64>(),
    ) {
        let a_stride = m + a_extra;
        // B's rows: overlapping (stride below n), packed, or spaced.
        let b_stride = match b_pick { 0 => (n / 3).max(1), 1 => n, _ => n + b_extra };
        let ad = operand(k, m, a_stride, 0, seed);
        let bd = operand(k, n, b_stride, tail, seed ^ 1);
        let a = Rows { data: &ad, rows: k, cols: m, stride: a_stride };
        let b = Rows { data: &bd, rows: k, cols: n, stride: b_stride };
        let init = uniform_values(m * n, seed ^ 2);
        let mut want = init.clone();
        rows_at_b_reference(a, b, &mut want);
        each_path(|path| {
            let mut got = init.clone();
            rows_at_b(a, b, &mut got).unwrap();
            for i in 0..m {
                for j in 0..n {
                    let scale: f64 = (0..k)
                        .map(|p| f64::from(ad[p * a_stride + i] * bd[p * b_stride + j]).abs())
                        .sum::<f64>()
                        + f64::from(init[i * n + j].abs());
                    let tol = F32_DOT_PER_TERM * (k + 2) as f64 * scale;
                    let (g, w) = (f64::from(got[i * n + j]), f64::from(want[i * n + j]));
                    prop_assert!((g - w).abs() <= tol, "{path}: ({i}, {j}) {g} vs {w} (tol {tol})");
                }
            }
            Ok(())
        })?;
    }

    /// The scalar twin equals `A^T B` in nalgebra f64 up to the final rounding to f32.
    #[test]
    fn twin_matches_nalgebra(k in 1usize..200, m in 1usize..12, n in 1usize..40, seed in any::<u64>()) {
        let ad = operand(k, m, m, 0, seed);
        let bd = operand(k, n, n, 0, seed ^ 1);
        let mut got = vec![0.0f32; m * n];
        rows_at_b_reference(
            Rows { data: &ad, rows: k, cols: m, stride: m },
            Rows { data: &bd, rows: k, cols: n, stride: n },
            &mut got,
        );
        let am = DMatrix::from_row_slice(k, m, &ad).map(f64::from);
        let bm = DMatrix::from_row_slice(k, n, &bd).map(f64::from);
        let want = am.transpose() * bm;
        for i in 0..m {
            for j in 0..n {
                let w = want[(i, j)];
                prop_assert!((f64::from(got[i * n + j]) - w).abs() <= F32_DOT_PER_TERM * w.abs().max(f64::MIN_POSITIVE));
            }
        }
    }
}

#[test]
fn rejects_short_operands_and_outputs() {
    let d = [1.0f32; 12];
    let ok = Rows {
        data: &d,
        rows: 3,
        cols: 4,
        stride: 4,
    };
    let mut out = [0.0f32; 16];
    let short = Rows {
        data: &d[..11],
        ..ok
    };
    assert!(matches!(
        rows_at_b(short, ok, &mut out),
        Err(KernelError::ShapeMismatch {
            operands: "rows of A",
            ..
        })
    ));
    assert!(matches!(
        rows_at_b(ok, short, &mut out),
        Err(KernelError::ShapeMismatch {
            operands: "rows of B",
            ..
        })
    ));
    let fewer = Rows { rows: 2, ..ok };
    assert!(matches!(
        rows_at_b(ok, fewer, &mut out),
        Err(KernelError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        rows_at_b(ok, ok, &mut out[..15]),
        Err(KernelError::ShapeMismatch {
            operands: "output vs A^T B",
            ..
        })
    ));
    rows_at_b(ok, ok, &mut out).unwrap();
    assert_eq!(out, [3.0; 16]);
}
