//! The plane path of the Gram accumulator (NCHW maps, no transposition): the `plane_cross`
//! kernel against its scalar twin and nalgebra f64 on every SIMD path, and `push_planes`
//! against `push` of the same rows and against f64 sums.

use nalgebra::DMatrix;
use pleas::par::OwnedGram;
use pleas_core::gram::planes::{plane_cross, plane_cross_reference};
use pleas_core::gram::{GramError, GramParams, Operand};
use pleas_core::linalg::{KernelError, MatMut, MatRef};
use pleas_tests::matrices::uniform_values;
use pleas_tests::simd_paths::each_path;
use pleas_tests::tolerance::{F32_DOT_PER_TERM, GRAM_MOMENTS_REL};
use proptest::prelude::*;

/// `samples x channels x positions` planes as rows of positions (`samples * positions` rows).
fn rows_of(planes: &[f32], samples: usize, channels: usize, positions: usize) -> Vec<f32> {
    let mut rows = vec![0.0; planes.len()];
    for s in 0..samples {
        for c in 0..channels {
            for p in 0..positions {
                rows[(s * positions + p) * channels + c] =
                    planes[(s * channels + c) * positions + p];
            }
        }
    }
    rows
}

fn planes(len: usize, offset: f32, seed: u64) -> Vec<f32> {
    uniform_values(len, seed)
        .into_iter()
        .map(|v| v + offset)
        .collect()
}

/// Every moment an accumulator reports, uncentred and centred, flattened.
fn moments(acc: &mut OwnedGram) -> Vec<f64> {
    let (d, t) = (acc.dim(), acc.targets());
    let mut out = Vec::new();
    if acc.params().gram {
        let mut g = vec![0.0; d * d];
        acc.write_gram(MatMut::new(&mut g, d, d).unwrap()).unwrap();
        out.extend(
            (0..d)
                .flat_map(|i| (0..=i).map(move |j| (i, j)))
                .map(|(i, j)| g[i * d + j]),
        );
    }
    let mut r = vec![0.0; d * t];
    acc.write_cross(MatMut::new(&mut r, d, t).unwrap()).unwrap();
    out.extend(&r);
    acc.write_centred_cross(MatMut::new(&mut r, d, t).unwrap())
        .unwrap();
    out.extend(&r);
    for f in [OwnedGram::write_sum_x, OwnedGram::write_centred_squares_x] {
        let mut v = vec![0.0; d];
        f(acc, &mut v).unwrap();
        out.extend(v);
    }
    for f in [
        OwnedGram::write_sum_t,
        OwnedGram::write_sum_tt,
        OwnedGram::write_centred_squares_t,
    ] {
        let mut v = vec![0.0; t];
        f(acc, &mut v).unwrap();
        out.extend(v);
    }
    out
}

proptest! {
    #![proptest_config(pleas_tests::config(48))]

    /// The SIMD kernel equals its scalar twin within the f32 dot-product bound, on every path,
    /// for any tile remainder, length (vector tail) and row stride.
    #[test]
    fn plane_cross_matches_the_scalar_twin(
        ra in 0usize..11, rb in 0usize..11, len in 0usize..300, pad in 0usize..20,
        seed in any::<u64>(),
    ) {
        let stride = len + pad;
        let a = planes(ra * stride, 0.0, seed);
        let b = planes(rb * stride, 0.0, seed ^ 1);
        let init = planes(ra * rb, 0.0, seed ^ 2);
        let mut want = init.clone();
        plane_cross_reference(&a, ra, &b, rb, len, stride, &mut want);
        each_path(|path| {
            let mut got = init.clone();
            plane_cross(&a, ra, &b, rb, len, stride, &mut got).unwrap();
            for i in 0..ra {
                for j in 0..rb {
                    let scale: f64 = (0..len)
                        .map(|p| f64::from(a[i * stride + p] * b[j * stride + p]).abs())
                        .sum::<f64>()
                        + f64::from(init[i * rb + j].abs());
                    let tol = F32_DOT_PER_TERM * (len + 2) as f64 * scale;
                    let (g, w) = (f64::from(got[i * rb + j]), f64::from(want[i * rb + j]));
                    prop_assert!((g - w).abs() <= tol, "{path}: ({i}, {j}) {g} vs {w} (tol {tol})");
                }
            }
            Ok(())
        })?;
    }

    /// The scalar twin equals `A B^T` in nalgebra f64, up to the final rounding to f32.
    #[test]
    fn plane_cross_twin_matches_nalgebra(
        ra in 1usize..9, rb in 1usize..9, len in 1usize..200, seed in any::<u64>(),
    ) {
        let a = planes(ra * len, 0.5, seed);
        let b = planes(rb * len, -0.5, seed ^ 1);
        let mut got = vec![0.0f32; ra * rb];
        plane_cross_reference(&a, ra, &b, rb, len, len, &mut got);
        let am = DMatrix::from_row_slice(ra, len, &a).map(f64::from);
        let bm = DMatrix::from_row_slice(rb, len, &b).map(f64::from);
        let want = &am * bm.transpose();
        for i in 0..ra {
            for j in 0..rb {
                let w = want[(i, j)];
                prop_assert!((f64::from(got[i * rb + j]) - w).abs() <= F32_DOT_PER_TERM * w.abs().max(f64::MIN_POSITIVE));
            }
        }
    }

    /// `push_planes` gives the moments of `push` over the same rows (and the same shift), with
    /// and without the Gram, for any block length, batch split and map size, on every path.
    #[test]
    fn push_planes_matches_push_of_rows(
        samples in 1usize..9, positions in 1usize..90, d in 1usize..14, t in 0usize..11,
        offset in -4.0f32..4.0, gram in any::<bool>(),
        block in prop_oneof![Just(1usize), 2usize..300, Just(4096usize)],
        cut in 0usize..9, seed in any::<u64>(),
    ) {
        let cut = cut % (samples + 1);
        let xs = planes(samples * d * positions, offset, seed);
        let ts = planes(samples * t * positions, -offset, seed ^ 1);
        let lean = GramParams::with_block_samples(block).without_gram();
        let params = if gram { GramParams::with_block_samples(block) } else { lean };
        let n = samples * positions;
        let (xr, tr) = (rows_of(&xs, samples, d, positions), rows_of(&ts, samples, t, positions));
        // The same two pushes (the first one chooses the shift).
        let mut by_rows = OwnedGram::new_owned(d, t, params);
        for (r0, r1) in [(0, cut * positions), (cut * positions, n)] {
            let xb = MatRef::new(&xr[r0 * d..r1 * d], r1 - r0, d).unwrap();
            let tb = MatRef::new(&tr[r0 * t..r1 * t], r1 - r0, t).unwrap();
            by_rows.push(xb, (t > 0).then_some(tb)).unwrap();
        }
        let want = moments(&mut by_rows);
        let xm = DMatrix::from_row_slice(n, d, &xr).map(|v| f64::from(v).abs());
        let tm = DMatrix::from_row_slice(n, t, &tr).map(|v| f64::from(v).abs());
        // One scale for every entry: the largest absolute moment any of them can reach.
        let scale = (xm.transpose() * &xm).max().max((xm.transpose() * &tm).max()).max(
            (tm.transpose() * &tm).max(),
        );
        each_path(|path| {
            let mut acc = OwnedGram::new_owned(d, t, params);
            let (at_x, at_t) = (cut * d * positions, cut * t * positions);
            for (s0, s1, x, tt) in [
                (0, cut, &xs[..at_x], &ts[..at_t]),
                (cut, samples, &xs[at_x..], &ts[at_t..]),
            ] {
                acc.push_planes(x, (t > 0).then_some(tt), s1 - s0, positions).unwrap();
            }
            prop_assert_eq!(acc.count(), n as u64);
            // The same shift up to the f64 summation order of the mean (then rounded to f32).
            for (got, want) in [(acc.x_shift(), by_rows.x_shift()), (acc.t_shift(), by_rows.t_shift())] {
                prop_assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(want) {
                    prop_assert!((g - w).abs() <= f32::EPSILON * w.abs().max(1.0), "shift {g} vs {w}");
                }
            }
            let got = moments(&mut acc);
            prop_assert_eq!(got.len(), want.len());
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                prop_assert!(
                    (g - w).abs() <= GRAM_MOMENTS_REL * scale.max(f64::MIN_POSITIVE),
                    "{path}: moment {k}: {g} vs {w} (scale {scale})"
                );
            }
            Ok(())
        })?;
    }

    /// A bad value is reported at the same sample (row) and column as `push` reports it, and
    /// nothing is counted.
    #[test]
    fn push_planes_names_the_first_bad_value_in_row_order(
        samples in 1usize..5, positions in 1usize..40, d in 1usize..6, t in 1usize..6,
        bad in proptest::collection::vec((any::<bool>(), 0usize..10_000), 1..4),
        kind in 0usize..3, seed in any::<u64>(),
    ) {
        let mut xs = planes(samples * d * positions, 0.0, seed);
        let mut ts = planes(samples * t * positions, 0.0, seed ^ 1);
        let value = [f32::NAN, f32::INFINITY, 1e30][kind];
        for &(in_t, at) in &bad {
            if in_t {
                let k = at % ts.len();
                ts[k] = value;
            } else {
                let k = at % xs.len();
                xs[k] = value;
            }
        }
        let n = samples * positions;
        let (xr, tr) = (rows_of(&xs, samples, d, positions), rows_of(&ts, samples, t, positions));
        let mut by_rows = OwnedGram::new_owned(d, t, GramParams::default().without_gram());
        let want = by_rows
            .push(MatRef::new(&xr, n, d).unwrap(), Some(MatRef::new(&tr, n, t).unwrap()))
            .unwrap_err();
        let mut acc = OwnedGram::new_owned(d, t, GramParams::default().without_gram());
        let got = acc.push_planes(&xs, Some(&ts), samples, positions).unwrap_err();
        let _ = format!("{got}");
        prop_assert_eq!(got, want);
        prop_assert_eq!(acc.count(), 0);
    }
}

#[test]
fn plane_cross_rejects_short_buffers() {
    let a = [1.0f32; 10];
    let mut out = [0.0f32; 4];
    let e = plane_cross(&a, 2, &a, 2, 6, 6, &mut out).unwrap_err();
    assert!(
        matches!(
            e,
            KernelError::ShapeMismatch {
                operands: "rows of A",
                ..
            }
        ),
        "{e}"
    );
    let e = plane_cross(&a, 2, &a, 2, 5, 4, &mut out).unwrap_err();
    assert!(matches!(e, KernelError::ShapeMismatch { .. }), "{e}");
    let e = plane_cross(&a, 2, &a, 2, 5, 5, &mut out[..3]).unwrap_err();
    assert!(
        matches!(
            e,
            KernelError::ShapeMismatch {
                operands: "output vs A B^T",
                ..
            }
        ),
        "{e}"
    );
    plane_cross(&a, 2, &a, 2, 5, 5, &mut out).unwrap();
    assert_eq!(out, [5.0; 4]);
}

#[test]
fn push_planes_rejects_wrong_lengths() {
    let mut acc = OwnedGram::new_owned(3, 2, GramParams::default().without_gram());
    let x = vec![0.5f32; 2 * 3 * 4];
    let t = vec![0.5f32; 2 * 2 * 4];
    assert_eq!(
        acc.push_planes(&x[1..], Some(&t), 2, 4),
        Err(GramError::ShapeMismatch {
            what: "length of the X planes",
            expected: 24,
            found: 23
        })
    );
    assert_eq!(
        acc.push_planes(&x, Some(&t[1..]), 2, 4),
        Err(GramError::ShapeMismatch {
            what: "length of the T planes",
            expected: 16,
            found: 15
        })
    );
    assert!(matches!(
        acc.push_planes(&x, None, 2, 4),
        Err(GramError::ShapeMismatch { .. })
    ));
    assert_eq!(acc.count(), 0);
    acc.push_planes(&x, Some(&t), 2, 4).unwrap();
    assert_eq!(acc.count(), 8);
    let mut bad = x.clone();
    bad[5] = f32::NAN; // sample 0, channel 1, position 1: row 1
    assert_eq!(
        acc.push_planes(&bad, Some(&t), 2, 4),
        Err(GramError::NonFinite {
            operand: Operand::Samples,
            sample: 9,
            column: 1
        })
    );
    assert_eq!(acc.count(), 8);
}
