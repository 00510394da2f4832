//! The streaming Gram accumulator: moments against f64 sums, block folding, combination of
//! accumulators, the threaded reduction, and typed errors.

use nalgebra::DMatrix;
use pleas::par::{OwnedGram, Parallelism, accumulate_gram};
use pleas_core::gram::{GramError, GramParams, Operand};
use pleas_core::linalg::{MatMut, MatRef};
use pleas_tests::matrices::{dim, uniform_values};
use pleas_tests::simd_paths::{each_path, for_each_path};
use pleas_tests::tolerance::{COVARIANCE_REL_FROBENIUS, GRAM_COMBINE_REL, GRAM_MOMENTS_REL};
use proptest::prelude::*;

/// Lower triangle of the Gram, the cross moment and the sums read from an accumulator.
struct Moments {
    gram: DMatrix<f64>,
    cross: DMatrix<f64>,
    sum_x: Vec<f64>,
    sum_t: Vec<f64>,
    sum_tt: Vec<f64>,
}

fn read(acc: &mut OwnedGram) -> Moments {
    let (d, t) = (acc.dim(), acc.targets());
    let mut g = vec![0.0; d * d];
    acc.write_gram(MatMut::new(&mut g, d, d).unwrap()).unwrap();
    let mut r = vec![0.0; d * t];
    acc.write_cross(MatMut::new(&mut r, d, t).unwrap()).unwrap();
    let (mut sx, mut st, mut stt) = (vec![0.0; d], vec![0.0; t], vec![0.0; t]);
    acc.write_sum_x(&mut sx).unwrap();
    acc.write_sum_t(&mut st).unwrap();
    acc.write_sum_tt(&mut stt).unwrap();
    Moments {
        gram: DMatrix::from_fn(d, d, |i, j| if j <= i { g[i * d + j] } else { 0.0 }),
        cross: DMatrix::from_row_slice(d, t, &r),
        sum_x: sx,
        sum_t: st,
        sum_tt: stt,
    }
}

fn assert_close(got: f64, want: f64, scale: f64, rel: f64, what: &str) {
    assert!(
        (got - want).abs() <= rel * scale.max(f64::MIN_POSITIVE),
        "{what}: {got} vs {want} (scale {scale})"
    );
}

fn check_against_f64(m: &Moments, x: &DMatrix<f64>, t: &DMatrix<f64>, rel: f64) {
    let g = x.transpose() * x;
    let r = x.transpose() * t;
    let (xa, ta) = (x.abs(), t.abs());
    let gs = xa.transpose() * &xa;
    let rs = xa.transpose() * &ta;
    for i in 0..x.ncols() {
        for j in 0..=i {
            assert_close(m.gram[(i, j)], g[(i, j)], gs[(i, j)], rel, "gram");
        }
        for j in 0..t.ncols() {
            assert_close(m.cross[(i, j)], r[(i, j)], rs[(i, j)], rel, "cross");
        }
        let col = x.column(i);
        assert_close(m.sum_x[i], col.sum(), col.abs().sum(), rel, "sum x");
    }
    for j in 0..t.ncols() {
        let col = t.column(j);
        assert_close(m.sum_t[j], col.sum(), col.abs().sum(), rel, "sum t");
        assert_close(
            m.sum_tt[j],
            col.norm_squared(),
            col.norm_squared(),
            rel,
            "sum t^2",
        );
    }
}

fn data(n: usize, d: usize, offset: f32, seed: u64) -> Vec<f32> {
    uniform_values(n * d, seed)
        .into_iter()
        .map(|v| v + offset)
        .collect()
}

proptest! {
    #![proptest_config(pleas_tests::config(48))]

    /// Any batch split and any block length give the f64 moments.
    #[test]
    fn moments_match_f64_sums(
        n in 1usize..700, d in dim(70), t in 0usize..12, offset in -5.0f32..5.0,
        block in prop_oneof![Just(1usize), 2usize..40, Just(4096usize)],
        cuts in proptest::collection::vec(0usize..700, 0..4), seed in any::<u64>(),
    ) {
        each_path(|_| {
            let xs = data(n, d, offset, seed);
            let ts = data(n, t, -offset, seed ^ 1);
            let mut acc = OwnedGram::new_owned(d, t, GramParams::with_block_samples(block));
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (n + 1)).collect();
            cuts.push(0);
            cuts.push(n);
            cuts.sort_unstable();
            for w in cuts.windows(2) {
                let rows = w[1] - w[0];
                let xb = MatRef::new(&xs[w[0] * d..w[1] * d], rows, d).unwrap();
                let tb = MatRef::new(&ts[w[0] * t..w[1] * t], rows, t).unwrap();
                acc.push(xb, (t > 0).then_some(tb)).unwrap();
            }
            prop_assert_eq!(acc.count(), n as u64);
            let m = read(&mut acc);
            let x = DMatrix::from_row_slice(n, d, &xs).map(f64::from);
            let tm = DMatrix::from_row_slice(n, t, &ts).map(f64::from);
            check_against_f64(&m, &x, &tm, GRAM_MOMENTS_REL);

            // Centred moments, also from an accumulator that skips the Gram.
            let mut lean = OwnedGram::new_owned(d, t, GramParams::with_block_samples(block).without_gram());
            lean.push(MatRef::new(&xs, n, d).unwrap(), (t > 0).then(|| MatRef::new(&ts, n, t).unwrap())).unwrap();
            prop_assert_eq!(
                lean.write_gram(MatMut::new(&mut vec![0.0; d * d], d, d).unwrap()),
                Err(GramError::GramNotAccumulated)
            );
            let xc = DMatrix::from_fn(n, d, |i, j| x[(i, j)] - x.column(j).mean());
            let tc = DMatrix::from_fn(n, t, |i, j| tm[(i, j)] - tm.column(j).mean());
            for a in [&mut acc, &mut lean] {
                let mut c = vec![0.0; d * t];
                a.write_centred_cross(MatMut::new(&mut c, d, t).unwrap()).unwrap();
                let (mut sx, mut st) = (vec![0.0; d], vec![0.0; t]);
                a.write_centred_squares_x(&mut sx).unwrap();
                a.write_centred_squares_t(&mut st).unwrap();
                let want = xc.transpose() * &tc;
                let scale = xc.abs().transpose() * tc.abs();
                for i in 0..d {
                    for j in 0..t {
                        assert_close(c[i * t + j], want[(i, j)], scale[(i, j)], GRAM_MOMENTS_REL, "centred cross");
                    }
                    let v = xc.column(i).norm_squared();
                    assert_close(sx[i], v, v.max(x.column(i).norm_squared() * 1e-3), GRAM_MOMENTS_REL, "x squares");
                }
                for j in 0..t {
                    let v = tc.column(j).norm_squared();
                    assert_close(st[j], v, v.max(tm.column(j).norm_squared() * 1e-3), GRAM_MOMENTS_REL, "t squares");
                }
            }
            Ok(())
        })?;
    }

    /// Combining accumulators with different shifts equals one accumulator over all samples.
    #[test]
    fn combine_moves_between_shifts(
        n1 in 1usize..300, n2 in 1usize..300, d in dim(40), t in 0usize..5, seed in any::<u64>(),
    ) {
        each_path(|_| {
            let x1 = data(n1, d, 3.0, seed);
            let x2 = data(n2, d, -2.0, seed ^ 2);
            let t1 = data(n1, t, 1.0, seed ^ 3);
            let t2 = data(n2, t, 7.0, seed ^ 4);
            let params = GramParams::default();
            let mut a = OwnedGram::new_owned(d, t, params);
            let mut b = OwnedGram::new_owned(d, t, params);
            a.push(MatRef::new(&x1, n1, d).unwrap(), (t > 0).then(|| MatRef::new(&t1, n1, t).unwrap())).unwrap();
            b.push(MatRef::new(&x2, n2, d).unwrap(), (t > 0).then(|| MatRef::new(&t2, n2, t).unwrap())).unwrap();
            prop_assert_ne!(a.x_shift(), b.x_shift());
            a.combine(&mut b).unwrap();
            prop_assert_eq!(a.count(), (n1 + n2) as u64);
            let m = read(&mut a);
            let xs: Vec<f32> = x1.iter().chain(&x2).copied().collect();
            let ts: Vec<f32> = t1.iter().chain(&t2).copied().collect();
            let x = DMatrix::from_row_slice(n1 + n2, d, &xs).map(f64::from);
            let tm = DMatrix::from_row_slice(n1 + n2, t, &ts).map(f64::from);
            check_against_f64(&m, &x, &tm, GRAM_COMBINE_REL);
            Ok(())
        })?;
    }
}

/// Acceptance: 1,000,000 samples of dimension 64 around a mean of 10; the covariance is within
/// 1e-6 relative Frobenius error of a (two-pass) f64 sum.
#[test]
fn covariance_of_a_million_offset_samples() {
    const N: usize = 1_000_000;
    const D: usize = 64;
    const BATCH: usize = 10_000;
    let batch = |b: usize| -> Vec<f32> {
        // Unit-scale noise around 10, with per-feature structure (feature j scaled by 1 + j/64).
        uniform_values(BATCH * D, 1000 + b as u64)
            .into_iter()
            .enumerate()
            .map(|(k, v)| 10.0 + v * (1.0 + (k % D) as f32 / 64.0))
            .collect()
    };
    let mut acc = OwnedGram::new_owned(D, 0, GramParams::default());
    let mut mean = [0.0f64; D];
    for b in 0..N / BATCH {
        let xs = batch(b);
        acc.push(MatRef::new(&xs, BATCH, D).unwrap(), None).unwrap();
        for row in xs.chunks_exact(D) {
            for j in 0..D {
                mean[j] += f64::from(row[j]);
            }
        }
    }
    for m in &mut mean {
        *m /= N as f64;
    }
    let mut reference = vec![0.0f64; D * D];
    for b in 0..N / BATCH {
        for row in batch(b).chunks_exact(D) {
            let c: Vec<f64> = row
                .iter()
                .zip(&mean)
                .map(|(v, m)| f64::from(*v) - m)
                .collect();
            for i in 0..D {
                for j in 0..=i {
                    reference[i * D + j] += c[i] * c[j];
                }
            }
        }
    }
    let mut cov = vec![0.0f64; D * D];
    acc.write_covariance(MatMut::new(&mut cov, D, D).unwrap())
        .unwrap();
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for i in 0..D {
        for j in 0..=i {
            let w = if i == j { 1.0 } else { 2.0 };
            let r = reference[i * D + j] / N as f64;
            err += w * (cov[i * D + j] - r).powi(2);
            norm += w * r * r;
        }
    }
    let rel = (err / norm).sqrt();
    println!("relative Frobenius error of the covariance: {rel:.3e}");
    assert!(
        rel <= COVARIANCE_REL_FROBENIUS,
        "relative Frobenius error {rel:.3e}"
    );
}

/// The threaded accumulation gives bit-identical totals for any thread count.
#[test]
fn threaded_result_does_not_depend_on_thread_count() {
    for_each_path(|_| threaded_result_on_the_selected_path());
}

fn threaded_result_on_the_selected_path() {
    let (n, d, t) = (5003, 37, 3);
    let xs = data(n, d, 2.0, 11);
    let ts = data(n, t, 0.5, 12);
    let x = MatRef::new(&xs, n, d).unwrap();
    let tm = MatRef::new(&ts, n, t).unwrap();
    let params = GramParams::with_block_samples(256);
    let mut base = accumulate_gram(x, Some(tm), params, Parallelism::Sequential).unwrap();
    let want = read(&mut base);
    for threads in [2, 3, 4, 7, 16, 33] {
        let mut acc =
            accumulate_gram(x, Some(tm), params, Parallelism::from_count(threads)).unwrap();
        let got = read(&mut acc);
        assert_eq!(acc.count(), n as u64);
        let bits = |m: &DMatrix<f64>| m.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got.gram), bits(&want.gram), "{threads} threads: gram");
        assert_eq!(
            bits(&got.cross),
            bits(&want.cross),
            "{threads} threads: cross"
        );
        assert_eq!(got.sum_x, want.sum_x);
        assert_eq!(got.sum_tt, want.sum_tt);
    }
    let x64 = DMatrix::from_row_slice(n, d, &xs).map(f64::from);
    let t64 = DMatrix::from_row_slice(n, t, &ts).map(f64::from);
    check_against_f64(&want, &x64, &t64, GRAM_MOMENTS_REL);
}

#[test]
fn non_finite_samples_are_rejected_with_their_position() {
    let mut acc = OwnedGram::new_owned(3, 1, GramParams::default());
    let good = [1.0f32; 6];
    let t = [0.0f32; 2];
    acc.push(
        MatRef::new(&good, 2, 3).unwrap(),
        Some(MatRef::new(&t, 2, 1).unwrap()),
    )
    .unwrap();
    let mut bad = [1.0f32; 6];
    bad[4] = f32::NAN;
    let err = acc
        .push(
            MatRef::new(&bad, 2, 3).unwrap(),
            Some(MatRef::new(&t, 2, 1).unwrap()),
        )
        .unwrap_err();
    assert_eq!(
        err,
        GramError::NonFinite {
            operand: Operand::Samples,
            sample: 3,
            column: 1
        }
    );
    assert_eq!(acc.count(), 2, "nothing of the rejected batch is counted");
    let tbad = [0.0f32, f32::INFINITY];
    let err = acc
        .push(
            MatRef::new(&good, 2, 3).unwrap(),
            Some(MatRef::new(&tbad, 2, 1).unwrap()),
        )
        .unwrap_err();
    assert_eq!(
        err,
        GramError::NonFinite {
            operand: Operand::Targets,
            sample: 3,
            column: 0
        }
    );
    assert!(err.to_string().contains("targets T at sample 3, column 0"));

    // The threaded path reports positions in the whole input.
    let n = 1000;
    let mut xs = vec![0.5f32; n * 2];
    xs[900 * 2 + 1] = f32::NEG_INFINITY;
    let err = accumulate_gram(
        MatRef::new(&xs, n, 2).unwrap(),
        None,
        GramParams::default(),
        Parallelism::from_count(2),
    )
    .unwrap_err();
    assert_eq!(
        err,
        GramError::NonFinite {
            operand: Operand::Samples,
            sample: 900,
            column: 1
        }
    );
}

#[test]
fn values_whose_squares_overflow_f32_are_rejected() {
    let mut acc = OwnedGram::new_owned(2, 0, GramParams::default());
    let limit = acc.value_limit();
    // At the limit, a full block of squares of twice the value still fits in f32.
    assert!((2.0 * limit) * (2.0 * limit) * 4096.0 <= f32::MAX);
    let x = [1.0f32, 2.0, 3.0, limit * 2.0];
    let err = acc.push(MatRef::new(&x, 2, 2).unwrap(), None).unwrap_err();
    assert_eq!(
        err,
        GramError::OutOfRange {
            operand: Operand::Samples,
            sample: 1,
            column: 1,
            limit
        }
    );
    assert!(err.to_string().contains("sample 1, column 1 exceeds"));
    assert_eq!(acc.count(), 0);
    let x = [1.0f32, 2.0, 3.0, limit];
    acc.push(MatRef::new(&x, 2, 2).unwrap(), None).unwrap();
    let mut g = [0.0f64; 4];
    acc.write_gram(MatMut::new(&mut g, 2, 2).unwrap()).unwrap();
    assert!(g.iter().all(|v| v.is_finite()));
}

#[test]
fn shape_errors_name_what_is_wrong() {
    let mut acc = OwnedGram::new_owned(3, 2, GramParams::default());
    let x = [0.0f32; 8];
    let err = acc.push(MatRef::new(&x, 2, 4).unwrap(), None).unwrap_err();
    assert_eq!(
        err,
        GramError::ShapeMismatch {
            what: "columns of X",
            expected: 3,
            found: 4
        }
    );
    let err = acc
        .push(MatRef::new(&x[..6], 2, 3).unwrap(), None)
        .unwrap_err();
    assert_eq!(
        err,
        GramError::ShapeMismatch {
            what: "columns of T (no T given)",
            expected: 2,
            found: 0
        }
    );
    let err = acc
        .push(
            MatRef::new(&x[..6], 2, 3).unwrap(),
            Some(MatRef::new(&x[..6], 3, 2).unwrap()),
        )
        .unwrap_err();
    assert_eq!(
        err,
        GramError::ShapeMismatch {
            what: "rows of T (must equal rows of X)",
            expected: 2,
            found: 3
        }
    );
    acc.push(
        MatRef::new(&x[..6], 2, 3).unwrap(),
        Some(MatRef::new(&x[..4], 2, 2).unwrap()),
    )
    .unwrap();
    assert_eq!(
        acc.set_shift(&[0.0; 3], &[0.0; 2]),
        Err(GramError::ShiftAfterData)
    );
    let mut other = OwnedGram::new_owned(4, 2, GramParams::default());
    assert!(matches!(
        acc.combine(&mut other),
        Err(GramError::ShapeMismatch { .. })
    ));
    // Caller buffers that are too short are refused.
    let err = pleas_core::gram::GramAccumulator::new(
        3,
        2,
        GramParams::default(),
        vec![0.0f64; 3],
        vec![0.0f32; 10_000],
    )
    .unwrap_err();
    assert!(matches!(
        err,
        GramError::ShapeMismatch {
            what: "storage length",
            ..
        }
    ));
}

#[test]
fn empty_accumulator_reads_zeros() {
    let mut acc = OwnedGram::new_owned(2, 1, GramParams::default());
    let m = read(&mut acc);
    assert!(m.gram.iter().all(|v| *v == 0.0) && m.cross.iter().all(|v| *v == 0.0));
    let mut cov = [1.0f64; 4];
    acc.write_covariance(MatMut::new(&mut cov, 2, 2).unwrap())
        .unwrap();
    assert_eq!(cov, [0.0, 1.0, 0.0, 0.0]);
    acc.push(
        MatRef::new(&[], 0, 2).unwrap(),
        Some(MatRef::new(&[], 0, 1).unwrap()),
    )
    .unwrap();
    assert_eq!(acc.count(), 0);
}

#[test]
fn map_jobs_returns_results_in_job_order() {
    use pleas::par::map_jobs;
    for threads in [1, 2, 3, 8] {
        let out = map_jobs(Parallelism::from_count(threads), 11, |i| i * i);
        assert_eq!(out, (0..11).map(|i| i * i).collect::<Vec<_>>());
    }
    assert!(map_jobs(Parallelism::from_count(4), 0, |i| i).is_empty());
    assert_eq!(Parallelism::from_count(0), Parallelism::Sequential);
    assert_eq!(Parallelism::from_count(1).threads(), 1);
    assert_eq!(Parallelism::from_count(3).to_string(), "3 threads");
}

/// An accumulator taken apart after each batch (buffers + `state()`) and rebuilt with
/// `resume` gives exactly the sums of one that lived throughout, including batches that leave
/// a partly filled block pending; impossible states are refused.
#[test]
fn resume_continues_exactly() {
    for_each_path(|_| resume_on_the_selected_path());
}

fn resume_on_the_selected_path() {
    use pleas_core::gram::{GramAccumulator, GramState};
    let (d, t, n) = (5, 3, 23);
    let params = GramParams::with_block_samples(4);
    let x = data(n, d, 2.0, 11);
    let y = data(n, t, -1.0, 12);
    let batches = [0..3, 3..4, 4..11, 11..11, 11..23];

    let mut whole = OwnedGram::new_owned(d, t, params);
    let slen = GramAccumulator::<Vec<f64>, Vec<f32>>::storage_len_for(d, t, params);
    let wlen = GramAccumulator::<Vec<f64>, Vec<f32>>::workspace_len(d, t, params);
    let (mut storage, mut workspace) = (vec![7.0f64; slen], vec![7.0f32; wlen]);
    let mut state = GramAccumulator::new(d, t, params, &mut storage[..], &mut workspace[..])
        .unwrap()
        .state();
    assert_eq!(state, GramState::default());
    for r in batches {
        let xb = MatRef::new(&x[r.start * d..r.end * d], r.len(), d).unwrap();
        let tb = MatRef::new(&y[r.start * t..r.end * t], r.len(), t).unwrap();
        whole.push(xb, Some(tb)).unwrap();
        let mut acc =
            GramAccumulator::resume(d, t, params, &mut storage[..], &mut workspace[..], state)
                .unwrap();
        acc.push(xb, Some(tb)).unwrap();
        state = acc.state();
        assert_eq!(acc.count(), whole.count());
    }
    assert_eq!(state.pending, 23 % 4);
    let mut acc =
        GramAccumulator::resume(d, t, params, storage.clone(), workspace.clone(), state).unwrap();
    let (a, b) = (read(&mut acc), read(&mut whole));
    assert_eq!(a.gram, b.gram);
    assert_eq!(a.cross, b.cross);
    assert_eq!((a.sum_x, a.sum_t, a.sum_tt), (b.sum_x, b.sum_t, b.sum_tt));

    let resume = |state| {
        GramAccumulator::resume(d, t, params, storage.clone(), workspace.clone(), state).map(|_| ())
    };
    assert!(matches!(
        resume(GramState::new(0, 4, true)),
        Err(GramError::InvalidState { .. })
    ));
    assert!(matches!(
        resume(GramState::new(5, 0, false)),
        Err(GramError::InvalidState { .. })
    ));
    let short = GramAccumulator::resume(d, t, params, vec![0.0; 1], workspace.clone(), state);
    assert!(matches!(short, Err(GramError::ShapeMismatch { .. })));
}

/// An owned accumulator given up with `into_buffers` (a partly filled block pending) and
/// rebuilt with `resume` continues exactly like the one that lived throughout.
#[test]
fn into_buffers_then_resume_continues_exactly() {
    use pleas_core::gram::GramAccumulator;
    let (d, t, n) = (4, 2, 13);
    let params = GramParams::with_block_samples(4);
    let x = data(n, d, 1.5, 21);
    let y = data(n, t, -0.5, 22);
    let rows = |r: std::ops::Range<usize>| {
        (
            MatRef::new(&x[r.start * d..r.end * d], r.len(), d).unwrap(),
            MatRef::new(&y[r.start * t..r.end * t], r.len(), t).unwrap(),
        )
    };
    let mut whole = OwnedGram::new_owned(d, t, params);
    let mut first = OwnedGram::new_owned(d, t, params);
    let (x0, t0) = rows(0..6);
    whole.push(x0, Some(t0)).unwrap();
    first.push(x0, Some(t0)).unwrap();
    let state = first.state();
    assert_eq!(state.pending, 2);
    let (storage, workspace) = first.into_buffers();
    let mut acc = GramAccumulator::resume(d, t, params, storage, workspace, state).unwrap();
    let (x1, t1) = rows(6..n);
    whole.push(x1, Some(t1)).unwrap();
    acc.push(x1, Some(t1)).unwrap();
    let (a, b) = (read(&mut acc), read(&mut whole));
    assert_eq!(a.gram, b.gram);
    assert_eq!(a.cross, b.cross);
    assert_eq!((a.sum_x, a.sum_t, a.sum_tt), (b.sum_x, b.sum_t, b.sum_tt));
}
