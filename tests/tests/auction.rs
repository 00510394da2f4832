//! Property tests of `assign::auction`: permutations, optimality against brute force (n <= 8)
//! and a Hungarian oracle (n <= 300) on uniform, integer, tied, rank-1 and planted matrices,
//! invariances, rectangular problems, edge cases and errors; and the SIMD bidding scan against
//! its scalar twin.

use pleas_core::assign::scan::{
    CANDIDATE_SLOTS, best_two, best_two_cached, best_two_candidates, best_two_const,
    best_two_reference,
};
use pleas_core::assign::{
    AuctionError, AuctionInfo, AuctionParams, Score, auction, auction_scratch_len, auction_warm,
};
use pleas_core::linalg::MatRef;
use pleas_tests::assignment::{
    KINDS, Kind, brute_force_max, hungarian_max, is_injective, kind, matrix, total,
};
use pleas_tests::tolerance::{AUCTION_REL_TOL, AUCTION_SUM_REL};
use proptest::prelude::*;

/// Case count: `PROPTEST_CASES` if set, else a default that keeps the suite to seconds.
/// Default parameters with one change (the struct is `#[non_exhaustive]`).
fn params_with(change: impl FnOnce(&mut AuctionParams)) -> AuctionParams {
    let mut p = AuctionParams::default();
    change(&mut p);
    p
}

fn solve<T: Score>(s: &[T], rows: usize, cols: usize) -> (Vec<usize>, AuctionInfo) {
    let mut perm = vec![usize::MAX; rows];
    let mut scratch = vec![f64::NAN; auction_scratch_len(cols)];
    let m = MatRef::new(s, rows, cols).unwrap();
    let info = auction(m, &AuctionParams::default(), &mut perm, &mut scratch).unwrap();
    (perm, info)
}

/// Asserts the contract: injective, and the total within the documented tolerance of `opt`
/// (exactly `opt` for integer scores), and the certified bound honest.
fn check_against(
    s: &[f64],
    rows: usize,
    cols: usize,
    perm: &[usize],
    info: &AuctionInfo,
    opt: f64,
) {
    assert!(is_injective(perm, cols), "not injective: {perm:?}");
    if rows == 0 {
        assert_eq!(info.bids, 0);
        return;
    }
    let got = total(s, cols, perm);
    let lo = s.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mag = lo.abs().max(hi.abs());
    let n = cols as f64;
    let slack = AUCTION_SUM_REL * n * mag;
    if s.iter().all(|v| v.fract() == 0.0) {
        assert!(info.integer, "integer scores not detected");
        assert_eq!(
            got, opt,
            "integer scores must be solved exactly ({rows}x{cols})"
        );
        assert!(info.optimality_bound < 1.0, "{info:?}");
    } else {
        let tol = AUCTION_REL_TOL * n * (hi - lo) + slack;
        assert!(
            got >= opt - tol,
            "total {got} < optimum {opt} - {tol} ({rows}x{cols})"
        );
    }
    assert!(
        opt - got <= info.optimality_bound + slack,
        "bound not honest: {info:?}, gap {}",
        opt - got
    );
    assert!(
        info.optimality_bound <= info.epsilon_bound * (1.0 + 1e-9),
        "{info:?}"
    );
    assert!(
        (info.epsilon_bound - n * info.epsilon).abs() <= 1e-12 * info.epsilon_bound,
        "{info:?}"
    );
}

proptest! {
    #![proptest_config(pleas_tests::config(256))]

    #[test]
    fn optimal_against_brute_force(k in kind(), rows in 0usize..=8, extra in 0usize..=3, seed: u64) {
        let cols = (rows + extra).min(8);
        let s = matrix(k, rows, cols, seed);
        let (perm, info) = solve(&s, rows, cols);
        prop_assert_eq!(perm.len(), rows);
        check_against(&s, rows, cols, &perm, &info, brute_force_max(&s, rows, cols));
        // The same problem in f32 (values exactly representable after widening).
        let s32: Vec<f32> = s.iter().map(|&v| v as f32).collect();
        let w: Vec<f64> = s32.iter().map(|&v| f64::from(v)).collect();
        let (perm, info) = solve(&s32, rows, cols);
        check_against(&w, rows, cols, &perm, &info, brute_force_max(&w, rows, cols));
    }

    #[test]
    fn optimal_against_hungarian(k in kind(), n in 1usize..=300, seed: u64) {
        let s = matrix(k, n, n, seed);
        let (perm, info) = solve(&s, n, n);
        let opt = total(&s, n, &hungarian_max(&s, n, n));
        check_against(&s, n, n, &perm, &info, opt);
    }

    #[test]
    fn rectangular_against_hungarian(k in kind(), rows in 1usize..=120, extra in 0usize..=60, seed: u64) {
        let cols = rows + extra;
        let s = matrix(k, rows, cols, seed);
        let (perm, info) = solve(&s, rows, cols);
        let opt = total(&s, cols, &hungarian_max(&s, rows, cols));
        check_against(&s, rows, cols, &perm, &info, opt);
    }

    #[test]
    fn f32_scores_against_hungarian(k in kind(), n in 1usize..=200, seed: u64) {
        let s32: Vec<f32> = matrix(k, n, n, seed).iter().map(|&v| v as f32).collect();
        let w: Vec<f64> = s32.iter().map(|&v| f64::from(v)).collect();
        let (perm, info) = solve(&s32, n, n);
        let opt = total(&w, n, &hungarian_max(&w, n, n));
        check_against(&w, n, n, &perm, &info, opt);
    }

    /// Adding a constant to one row or one column adds it to every total: the answer on the
    /// shifted matrix is still optimal for the original one.
    #[test]
    fn row_and_column_shifts_keep_optimality(
        k in kind(), n in 2usize..=80, seed: u64, line in 0usize..80,
        shift in -1000i32..=1000, by_column: bool,
    ) {
        let s = matrix(k, n, n, seed);
        let line = line % n;
        let mut t = s.clone();
        for x in 0..n {
            let idx = if by_column { x * n + line } else { line * n + x };
            t[idx] += f64::from(shift);
        }
        let (perm, info) = solve(&t, n, n);
        let opt = total(&s, n, &hungarian_max(&s, n, n));
        // Judge on the original scores; the shifted matrix's range sets the tolerance.
        let got = total(&s, n, &perm);
        let (lo, hi) = t.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let tol = AUCTION_REL_TOL * n as f64 * (hi - lo) + AUCTION_SUM_REL * n as f64 * lo.abs().max(hi.abs());
        prop_assert!(is_injective(&perm, n));
        if info.integer { prop_assert_eq!(got, opt); } else { prop_assert!(got >= opt - tol, "{} < {} - {}", got, opt, tol); }
    }

    /// Permuting the rows permutes the answer: same total always; the very same pairs when the
    /// optimum is unique (a planted permutation worth 100 over integer noise below 10).
    #[test]
    fn row_permutation_permutes_the_answer(n in 1usize..=120, seed: u64, pseed: u64) {
        let order = {
            let keys = matrix(Kind::Uniform, 1, n, pseed);
            let mut o: Vec<usize> = (0..n).collect();
            o.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
            o
        };
        for k in KINDS {
            let s = matrix(k, n, n, seed);
            let t: Vec<f64> = order.iter().flat_map(|&r| s[r * n..(r + 1) * n].to_vec()).collect();
            let (p, _) = solve(&s, n, n);
            let (q, _) = solve(&t, n, n);
            let (a, b) = (total(&s, n, &p), total(&t, n, &q));
            let mag = s.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            prop_assert!((a - b).abs() <= AUCTION_REL_TOL * n as f64 * 2.0 * mag + AUCTION_SUM_REL * n as f64 * mag, "{:?}: {} vs {}", k, a, b);
        }
        let noise = matrix(Kind::Tied, n, n, seed);
        let plant = matrix(Kind::Planted, n, n, seed);
        let s: Vec<f64> = (0..n * n).map(|x| noise[x] * 4.0 + if plant[x] > 0.5 { 100.0 } else { 0.0 }).collect();
        let t: Vec<f64> = order.iter().flat_map(|&r| s[r * n..(r + 1) * n].to_vec()).collect();
        let (p, _) = solve(&s, n, n);
        let (q, _) = solve(&t, n, n);
        for (new_row, &old_row) in order.iter().enumerate() {
            prop_assert_eq!(q[new_row], p[old_row]);
        }
    }

    #[test]
    fn deterministic(k in kind(), n in 1usize..=100, seed: u64) {
        let s = matrix(k, n, n, seed);
        let (p1, i1) = solve(&s, n, n);
        let (p2, i2) = solve(&s, n, n);
        prop_assert_eq!(p1, p2);
        prop_assert_eq!(i1, i2);
    }

    /// The vector scan equals its scalar twin on random rows of every length around the
    /// 8-column step, with ties (values from a small set) and with an integer-mode factor.
    #[test]
    fn scan_matches_scalar_twin(len in 1usize..=70, seed: u64, tied: bool, k in prop_oneof![Just(1.0f64), Just(301.0)]) {
        let kind = if tied { Kind::Tied } else { Kind::Uniform };
        let row = matrix(kind, 1, len, seed);
        let prices: Vec<f64> = matrix(kind, 1, len, seed ^ 1).iter().map(|v| -v).collect();
        prop_assert_eq!(best_two(&row, k, &prices), best_two_reference(&row, k, &prices));
        let row32: Vec<f32> = row.iter().map(|&v| v as f32).collect();
        prop_assert_eq!(best_two(&row32, k, &prices), best_two_reference(&row32, k, &prices));
        let c = vec![0.5f64; len];
        prop_assert_eq!(best_two_const(0.5, &prices), best_two_reference(&c, 1.0, &prices));
    }
}

proptest! {
    #![proptest_config(pleas_tests::config(256))]

    /// The candidate scan: same best two as the scalar twin, a bound that covers every column
    /// outside the list, and a cached answer that, after prices rise, is either declined or
    /// equal to a fresh full scan.
    #[test]
    fn candidate_lists_are_sound(len in 1usize..=90, seed: u64, tied: bool, rises in proptest::collection::vec((0usize..90, 0.0f64..0.5), 0..12)) {
        let kind = if tied { Kind::Tied } else { Kind::Uniform };
        let row = matrix(kind, 1, len, seed);
        let mut prices: Vec<f64> = matrix(kind, 1, len, seed ^ 3).iter().map(|v| -v).collect();
        let mut cands = vec![f64::NAN; 2 * CANDIDATE_SLOTS];
        let (bt, bound) = best_two_candidates(&row, 1.0, &prices, &mut cands);
        prop_assert_eq!(bt, best_two_reference(&row, 1.0, &prices));
        prop_assert!(bound <= bt.second);
        let listed: Vec<usize> = cands[..CANDIDATE_SLOTS].iter().filter(|&&c| c >= 0.0).map(|&c| c as usize).collect();
        let mut sorted = listed.clone();
        sorted.sort_unstable();
        sorted.dedup();
        prop_assert_eq!(sorted.len(), listed.len(), "duplicate candidates");
        prop_assert!(listed.contains(&bt.col));
        for j in (0..len).filter(|j| !listed.contains(j)) {
            prop_assert!(row[j] + prices[j] <= bound, "column {} above the bound", j);
        }
        for (j, rise) in rises {
            if j < len {
                prices[j] -= rise;
            }
        }
        let fresh = best_two_reference(&row, 1.0, &prices);
        if let Some(c) = best_two_cached(&prices, &cands, bound) {
            prop_assert_eq!((c.best, c.second), (fresh.best, fresh.second));
            prop_assert_eq!(row[c.col] + prices[c.col], fresh.best);
        }
    }
}

/// Solves from `prices` (replaced by the final prices), asserting the contract against the
/// Hungarian optimum and that the returned prices are a dual certificate: with
/// `u_i = max_j (s_ij - p_j)`, `sum u + sum p` lies between the optimum and the returned total
/// plus the certified bound.
fn check_warm(s: &[f64], n: usize, prices: &mut [f64]) -> AuctionInfo {
    let mut perm = vec![usize::MAX; n];
    let mut scratch = vec![f64::NAN; auction_scratch_len(n)];
    let m = MatRef::new(s, n, n).unwrap();
    let info = auction_warm(
        m,
        &AuctionParams::default(),
        prices,
        &mut perm,
        &mut scratch,
    )
    .unwrap();
    let opt = total(s, n, &hungarian_max(s, n, n));
    check_against(s, n, n, &perm, &info, opt);
    let dual: f64 = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| s[i * n + j] - prices[j])
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .sum::<f64>()
        + prices.iter().sum::<f64>();
    let mag = s.iter().fold(0.0f64, |a, v| a.max(v.abs()))
        + prices.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let slack = AUCTION_SUM_REL * 4.0 * n as f64 * mag;
    let got = total(s, n, &perm);
    assert!(dual >= opt - slack, "dual {dual} below the optimum {opt}");
    assert!(
        dual - got <= info.optimality_bound + slack,
        "dual gap {} > bound {info:?}",
        dual - got
    );
    assert!(prices.iter().all(|p| p.is_finite() && *p >= 0.0));
    info
}

proptest! {
    #![proptest_config(pleas_tests::config(128))]

    /// Warm starts from arbitrary prices (wild ones included) and from the final prices of a
    /// previous solve keep the contract, and the prices returned certify the result.
    #[test]
    fn warm_starts_keep_the_contract(k in kind(), n in 1usize..=120, seed: u64, scale in prop_oneof![Just(0.0), Just(1.0), Just(1e6)]) {
        let s = matrix(k, n, n, seed);
        let mut prices: Vec<f64> = matrix(Kind::Uniform, 1, n, seed ^ 5).iter().map(|v| (v - 0.5) * scale).collect();
        check_warm(&s, n, &mut prices);
        // Again from the prices just returned, on the same matrix and on a perturbed one.
        check_warm(&s, n, &mut prices);
        let t: Vec<f64> = s.iter().zip(matrix(k, n, n, seed ^ 9)).map(|(a, b)| a + 0.1 * b).collect();
        check_warm(&t, n, &mut prices);
    }
}

#[test]
fn warm_start_errors_leave_the_prices_alone() {
    let n = 4;
    let mut s = matrix(Kind::Uniform, n, n, 2);
    let m = MatRef::new(&s, n, n).unwrap();
    let p = AuctionParams::default();
    let mut perm = vec![0; n];
    let mut scratch = vec![0.0; auction_scratch_len(n)];
    assert_eq!(
        auction_warm(m, &p, &mut [0.0; 3], &mut perm, &mut scratch),
        Err(AuctionError::PriceLength { cols: 4, len: 3 })
    );
    let mut prices = [0.5, 1.0, f64::INFINITY, 2.0];
    assert!(matches!(
        auction_warm(m, &p, &mut prices, &mut perm, &mut scratch),
        Err(AuctionError::NonFinitePrice { col: 2, .. })
    ));
    s[5] = f64::NAN;
    let m = MatRef::new(&s, n, n).unwrap();
    let mut prices = [0.5, 1.0, 1.5, 2.0];
    assert!(matches!(
        auction_warm(m, &p, &mut prices, &mut perm, &mut scratch),
        Err(AuctionError::NonFinite { row: 1, col: 1, .. })
    ));
    assert_eq!(prices, [0.5, 1.0, 1.5, 2.0]);
}

/// Whatever the scratch holds on entry (here: values that are no valid column index, such as
/// infinities and huge numbers, as well as valid but wrong ones), the result is the same.
#[test]
fn scratch_contents_do_not_matter() {
    let s = [
        0.1f32, 0.9, 0.3, 0.0, 0.8, 0.7, 0.1, 0.2, 0.4, 0.6, 0.2, 0.5,
    ];
    for (rows, cols) in [(3, 4), (3, 3), (2, 4), (1, 4)] {
        let m = MatRef::new(&s[..rows * cols], rows, cols).unwrap();
        let mut want = vec![0usize; rows];
        let mut zeros = vec![0.0; auction_scratch_len(cols)];
        auction(m, &AuctionParams::default(), &mut want, &mut zeros).unwrap();
        for fill in [f64::INFINITY, f64::NEG_INFINITY, 1e300, 3.0, -0.0, f64::NAN] {
            let mut scratch = vec![fill; auction_scratch_len(cols)];
            let mut perm = vec![usize::MAX; rows];
            auction(m, &AuctionParams::default(), &mut perm, &mut scratch).unwrap();
            assert_eq!(perm, want, "{rows}x{cols}, scratch filled with {fill}");
        }
    }
}

#[test]
fn empty_and_single() {
    let (perm, info) = solve::<f64>(&[], 0, 0);
    assert!(perm.is_empty());
    assert_eq!(info.bids, 0);
    let (perm, _) = solve(&[-3.5f32], 1, 1);
    assert_eq!(perm, [0]);
    // Zero rows against columns; one row against many columns picks the best column.
    let (perm, _) = solve::<f64>(&[], 0, 5);
    assert!(perm.is_empty());
    let row = [0.1, 0.9, 0.3, 0.9];
    let (perm, _) = solve(&row, 1, 4);
    assert_eq!(row[perm[0]], 0.9, "{perm:?}");
}

#[test]
fn constant_and_fully_tied_matrices_terminate() {
    for n in [2, 3, 17, 64, 200] {
        let s = vec![7.0f64; n * n];
        let (perm, info) = solve(&s, n, n);
        assert!(is_injective(&perm, n));
        assert_eq!(info.bids, 0, "a constant matrix needs no bids");
        // Two values only, in a checkerboard: many optimal assignments.
        let s: Vec<f64> = (0..n * n).map(|x| ((x / n + x % n) % 2) as f64).collect();
        let (perm, _) = solve(&s, n, n);
        assert!(is_injective(&perm, n));
        assert_eq!(total(&s, n, &perm), total(&s, n, &hungarian_max(&s, n, n)));
        // Real-valued ties: every row identical.
        let row: Vec<f64> = (0..n).map(|j| (j as f64 * 0.37).sin()).collect();
        let s: Vec<f64> = (0..n).flat_map(|_| row.clone()).collect();
        let (perm, info) = solve(&s, n, n);
        assert!(is_injective(&perm, n));
        assert!(info.optimality_bound <= AUCTION_REL_TOL * n as f64 * 2.0);
    }
}

#[test]
fn non_finite_scores_are_rejected_with_their_position() {
    let n = 6;
    for (bad, at) in [
        (f64::NAN, (2, 3)),
        (f64::INFINITY, (0, 5)),
        (f64::NEG_INFINITY, (5, 0)),
    ] {
        let mut s = matrix(Kind::Uniform, n, n, 9);
        s[at.0 * n + at.1] = bad;
        s[n * n - 1] = f64::NAN; // a later bad value must not be the one reported
        if at == (5, 0) {
            s[n * n - 1] = 0.5;
        }
        let mut perm = vec![usize::MAX; n];
        let mut scratch = vec![0.0; auction_scratch_len(n)];
        let err = auction(
            MatRef::new(&s, n, n).unwrap(),
            &AuctionParams::default(),
            &mut perm,
            &mut scratch,
        )
        .unwrap_err();
        match err {
            AuctionError::NonFinite { row, col, value } => {
                assert_eq!((row, col), at);
                assert!(value.is_nan() == bad.is_nan());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains(&format!("({}, {})", at.0, at.1)));
        assert!(
            perm.iter().all(|&p| p == usize::MAX),
            "outputs written on error"
        );
    }
    let s32 = [1.0f32, f32::NAN, 0.0, 2.0];
    let err = auction(
        MatRef::new(&s32, 2, 2).unwrap(),
        &AuctionParams::default(),
        &mut [0; 2],
        &mut vec![0.0; auction_scratch_len(2)],
    );
    assert!(matches!(
        err,
        Err(AuctionError::NonFinite { row: 0, col: 1, .. })
    ));
}

#[test]
fn shape_scratch_and_param_errors() {
    let s = matrix(Kind::Uniform, 3, 4, 1);
    let m = MatRef::new(&s, 3, 4).unwrap();
    let p = AuctionParams::default();
    let mut scratch = vec![0.0; auction_scratch_len(4)];
    assert_eq!(
        auction(m.transpose(), &p, &mut [0; 4], &mut scratch),
        Err(AuctionError::TooManyRows { rows: 4, cols: 3 })
    );
    assert_eq!(
        auction(m, &p, &mut [0; 2], &mut scratch),
        Err(AuctionError::PermLength { rows: 3, len: 2 })
    );
    assert_eq!(
        auction(m, &p, &mut [0; 3], &mut scratch[..5]),
        Err(AuctionError::ScratchTooSmall {
            needed: auction_scratch_len(4),
            provided: 5
        })
    );
    let sq = MatRef::new(&s[..9], 3, 3).unwrap();
    assert!(matches!(
        auction(sq.transpose(), &p, &mut [0; 3], &mut scratch),
        Err(AuctionError::StridedColumns { col_stride: 3 })
    ));
    for (name, params) in [
        ("rel_tol", params_with(|q| q.rel_tol = 0.0)),
        ("rel_tol", params_with(|q| q.rel_tol = f64::NAN)),
        ("initial_epsilon", params_with(|q| q.initial_epsilon = -1.0)),
        ("scaling", params_with(|q| q.scaling = 1.0)),
    ] {
        match auction(m, &params, &mut [0; 3], &mut scratch) {
            Err(AuctionError::InvalidParam { name: got, .. }) => assert_eq!(got, name),
            other => panic!("expected a parameter error for {name}, got {other:?}"),
        }
    }
}

/// A scratch reused from a wider problem (stale candidate lists naming columns beyond `n`)
/// gives the same result as a fresh one, for every kind of matrix (it once panicked: the
/// cached scan read the stale columns before comparing with the reset bound).
#[test]
fn scratch_left_by_a_wider_problem_is_harmless() {
    for (i, &kind) in KINDS.iter().enumerate() {
        let (wide, n) = (24, 9);
        let big = matrix(kind, wide, wide, 40 + i as u64);
        let small = matrix(kind, n, n, 80 + i as u64);
        let mut scratch = vec![0.0; auction_scratch_len(wide)];
        let mut perm = vec![0; wide];
        let p = AuctionParams::default();
        auction(
            MatRef::new(&big, wide, wide).unwrap(),
            &p,
            &mut perm,
            &mut scratch,
        )
        .unwrap();
        let mut reused = vec![0; n];
        let info = auction(
            MatRef::new(&small, n, n).unwrap(),
            &p,
            &mut reused,
            &mut scratch[..auction_scratch_len(n)],
        )
        .unwrap();
        let (fresh, fresh_info) = solve(&small, n, n);
        assert_eq!(reused, fresh, "{kind:?}");
        assert_eq!(info, fresh_info, "{kind:?}");
    }
}

#[test]
fn strided_rows_are_accepted() {
    // Rows with padding between them (row stride > cols) are fine; only columns must be dense.
    let (n, stride) = (40, 47);
    let s = matrix(Kind::Integer, n, stride, 5);
    let m = MatRef::from_strided(&s, n, n, stride, 1).unwrap();
    let mut perm = vec![0; n];
    let mut scratch = vec![0.0; auction_scratch_len(n)];
    auction(m, &AuctionParams::default(), &mut perm, &mut scratch).unwrap();
    let dense: Vec<f64> = (0..n)
        .flat_map(|i| s[i * stride..i * stride + n].to_vec())
        .collect();
    assert_eq!(
        total(&dense, n, &perm),
        total(&dense, n, &hungarian_max(&dense, n, n))
    );
}

#[test]
fn looser_tolerance_is_honoured_and_reported() {
    let n = 150;
    let s = matrix(Kind::Uniform, n, n, 77);
    let params = params_with(|q| q.rel_tol = 1e-3);
    let mut perm = vec![0; n];
    let mut scratch = vec![0.0; auction_scratch_len(n)];
    let info = auction(
        MatRef::new(&s, n, n).unwrap(),
        &params,
        &mut perm,
        &mut scratch,
    )
    .unwrap();
    let opt = total(&s, n, &hungarian_max(&s, n, n));
    let got = total(&s, n, &perm);
    assert!(got >= opt - 1e-3 * n as f64 - 1e-9);
    assert!(opt - got <= info.optimality_bound + 1e-9);
    assert!(info.optimality_bound <= 1e-3 * n as f64);
}

#[test]
fn large_integer_scores_fall_back_to_the_real_contract() {
    // (n + 1) * max|s| above 2^40: solved under the real-score tolerance, and says so.
    let n = 50;
    let s: Vec<f64> = matrix(Kind::Integer, n, n, 3)
        .iter()
        .map(|v| v * 1e11)
        .collect();
    let (perm, info) = solve(&s, n, n);
    assert!(!info.integer);
    let opt = total(&s, n, &hungarian_max(&s, n, n));
    let got = total(&s, n, &perm);
    assert!(got >= opt - AUCTION_REL_TOL * n as f64 * 1e13 - 1.0);
}

/// Scores near the largest f64 or subnormal (found by fuzzing: `k s - p` overflowed to infinity, so the
/// certified bound was infinite or NaN and a debug assertion failed), and huge warm-start
/// prices or a huge first epsilon: the solve stays finite and optimal within its bound.
#[test]
fn scores_and_prices_near_the_f64_limit() {
    let s = [
        -1.5373271349120864e173,
        -1.1173896544144197e308,
        -1.1234083766122848e308,
        1.3869620883606e-309,
    ];
    let m = MatRef::new(&s, 2, 2).unwrap();
    let mut scratch = vec![0.0; auction_scratch_len(2)];
    let mut perm = [0; 2];
    let check = |info: AuctionInfo, perm: &[usize]| {
        assert_eq!(perm, [0, 1]);
        assert!(info.optimality_bound.is_finite() && info.epsilon_bound.is_finite());
    };
    let info = auction(m, &AuctionParams::default(), &mut perm, &mut scratch).unwrap();
    check(info, &perm);
    let mut prices = [2.03e-322, 1.231858753802978e103];
    let info = auction_warm(
        m,
        &AuctionParams::default(),
        &mut prices,
        &mut perm,
        &mut scratch,
    )
    .unwrap();
    check(info, &perm);
    assert!(prices.iter().all(|p| p.is_finite()) && prices.contains(&0.0));
    // The whole f64 range: max - min is not representable.
    let s = [
        f64::MAX,
        -f64::MAX,
        -f64::MAX,
        f64::MAX,
        0.0,
        1.0,
        0.5,
        -1.0,
        2.0,
    ];
    let m = MatRef::new(&s, 3, 3).unwrap();
    let mut scratch = vec![0.0; auction_scratch_len(3)];
    let mut perm = [0; 3];
    let mut prices = [f64::MAX, -f64::MAX, 0.0];
    auction_warm(
        m,
        &AuctionParams::default(),
        &mut prices,
        &mut perm,
        &mut scratch,
    )
    .unwrap();
    assert_eq!(perm, [0, 2, 1]);
    assert!(prices.iter().all(|p| p.is_finite()));
    // Subnormal scores: the final epsilon (2^-40 of the magnitude) used to round to 0, and
    // bids that raise no price never end (found by fuzzing: a timeout).
    let s = [1.215e-321f64, 0.0, 0.0, 0.0, 0.0, 0.0];
    let m = MatRef::new(&s, 1, 6).unwrap();
    let mut scratch = vec![0.0; auction_scratch_len(6)];
    let mut perm = [9; 1];
    let mut prices = [
        1.0843967485505004e16,
        1.0843961455707782e16,
        0.0,
        0.0,
        0.0,
        0.0,
    ];
    auction_warm(
        m,
        &AuctionParams::default(),
        &mut prices,
        &mut perm,
        &mut scratch,
    )
    .unwrap();
    assert_eq!(perm, [0]);
    let s = [5e-324f64, 0.0, 0.0, 1e-323];
    let m = MatRef::new(&s, 2, 2).unwrap();
    let mut perm = [9; 2];
    auction(m, &AuctionParams::default(), &mut perm, &mut scratch).unwrap();
    assert_eq!(perm, [0, 1]);
    // A huge first epsilon acts as the whole range (it used to overflow to infinity).
    for (scores, want) in [
        (&[3.0f64, 1.0, 0.0, 2.0][..], [0, 1]),
        (&[0.5, 0.25, 0.0, 0.75], [0, 1]),
    ] {
        let m = MatRef::new(scores, 2, 2).unwrap();
        let mut scratch = vec![0.0; auction_scratch_len(2)];
        let mut perm = [0; 2];
        let p = params_with(|q| q.initial_epsilon = f64::MAX);
        auction(m, &p, &mut perm, &mut scratch).unwrap();
        assert_eq!(perm, want);
    }
}

/// A tolerance above the whole range (`rel_tol` 1e3) with scores up to 2e306 (found by
/// fuzzing): the final epsilon, `rel_tol` times the scaled range, pushed prices beyond what the
/// huge-score scaling keeps finite, and the certified bound came back infinite. A tolerance is
/// now at most the range (any assignment is within `n` ranges of the optimum anyway).
#[test]
fn a_tolerance_above_the_range_keeps_the_bound_finite() {
    let bits: [u64; 39] = [
        0x8585855e85850d10,
        0x8585858585858585,
        0x8585858585858585,
        0x8585858585858585,
        0x8585858585858585,
        0x8585858585858585,
        0x8585858585858585,
        0x4885858585858585,
        0x4848484848484848,
        0x4848484848484848,
        0x4848484848484848,
        0x4848484848484848,
        0x4848484848484848,
        0x4848484848484848,
        0x4848484848484848,
        0x4848484848484848,
        0x4848484848484848,
        0x4848484848484848,
        0x4848484848484848,
        0x4848484848484848,
        0x4848484848484848,
        0x4848484848484848,
        0x8585858585858548,
        0x8585858585858585,
        0x8585858585858585,
        0x8585858585858585,
        0x8585858585858585,
        0xfe02858585858585,
        0x8585858585858585,
        0x8585858585858585,
        0x8585858585858585,
        0xff87cb8585858585,
        0x7bffffffffffffff,
        0x2c2c2cc9045b0000,
        0x2c2c2c2c2c2c2c2c,
        0x8585858585858585,
        0x87cb858585858585,
        0x2c2cc9045b00007b,
        0x2c2c2c2c2c2c2c2c,
    ];
    let price_bits: [u64; 13] = [
        0x8585858585858585,
        0x8585858585858585,
        0x8585858585858585,
        0x8585858585858585,
        0x8585858585858585,
        0x8585858585858585,
        0x8585858585858585,
        0x8585858585858585,
        0x8585858585858585,
        0x8585858585858585,
        0xc9045b00007b87cb,
        0x2c2c2c2c2c2c2c2c,
        0x858585858585852c,
    ];
    let s: Vec<f64> = bits.iter().map(|&b| f64::from_bits(b)).collect();
    let (rows, cols) = (3, 13);
    let m = MatRef::new(&s, rows, cols).unwrap();
    let mut scratch = vec![0.0; auction_scratch_len(cols)];
    let mut perm = [0; 3];
    for rel_tol in [1e3, 1.0, 1e-9] {
        let p = params_with(|q| q.rel_tol = rel_tol);
        let mut prices: Vec<f64> = price_bits.iter().map(|&b| f64::from_bits(b)).collect();
        for warm in [false, true] {
            let info = if warm {
                auction_warm(m, &p, &mut prices, &mut perm, &mut scratch)
            } else {
                auction(m, &p, &mut perm, &mut scratch)
            }
            .unwrap();
            let bound = info.optimality_bound;
            assert!(
                bound.is_finite() && bound >= 0.0,
                "rel_tol {rel_tol}, warm {warm}: {bound}"
            );
            let mut seen = [false; 13];
            for &j in &perm {
                assert!(!seen[j]);
                seen[j] = true;
            }
            assert!(prices.iter().all(|q| q.is_finite()));
        }
    }
}

/// The scratch's contents on entry do not matter: not even numbers that read as column indices
/// beyond this solve's `n` (an earlier, larger solve leaves such numbers; they were read as
/// candidate columns: an index panic, found while writing the tests for the fuzz findings).
#[test]
fn scratch_contents_on_entry_do_not_matter() {
    let small = [0.1f64, 0.9, 0.8, 0.2];
    for fill in [0.0, 1.0, 7.0, 1e6, -1.0, f64::NAN] {
        let mut scratch = vec![fill; auction_scratch_len(2)];
        let mut perm = [9; 2];
        let m = MatRef::new(&small, 2, 2).unwrap();
        auction(m, &AuctionParams::default(), &mut perm, &mut scratch).unwrap();
        assert_eq!(perm, [1, 0], "scratch filled with {fill}");
    }
}

/// The speed knobs are clamped to efficient ranges (found by fuzzing: a scaling of `1 + 1e-12`
/// meant tens of millions of phases, a first epsilon of `1e-300` a price war of ~1e9 bids; both
/// were accepted and ran for minutes). Extreme values now solve quickly and correctly.
#[test]
fn extreme_speed_knobs_are_clamped() {
    let s: [f32; 9] = [
        1.5518507e-36,
        6.92574e-22,
        7.382084e-22,
        -390.06497,
        4.3921882e-5,
        4.3921376e-5,
        4.3921376e-5,
        4.3921376e-5,
        4.3921376e-5,
    ];
    let m = MatRef::new(&s, 1, 9).unwrap();
    let start = [7e-38, 7e-38, 7e-38, 7e-38, 1.5e82, 4e-319, 3.0, 3.5, 4.0];
    for (scaling, initial) in [
        (1.0 + 1e-12, 0.003),
        (5.0, 1e-300),
        (1e300, 0.003),
        (1.0 + 1e-12, 1e-300),
    ] {
        let p = params_with(|q| {
            q.scaling = scaling;
            q.initial_epsilon = initial;
        });
        let mut scratch = vec![7.0; auction_scratch_len(9)];
        let mut perm = [0; 1];
        let mut prices = start;
        let t = std::time::Instant::now();
        let info = auction_warm(m, &p, &mut prices, &mut perm, &mut scratch).unwrap();
        // Column 4 is the best, column 5 within 5e-10 of it (inside the tolerance).
        let gap = f64::from(s[4]) - f64::from(s[perm[0]]);
        assert!(
            gap <= info.optimality_bound,
            "{scaling} {initial}: {perm:?} {info:?}"
        );
        assert!(info.optimality_bound <= 1e-9 * 9.0 * 391.0);
        assert!(info.phases <= 300, "{} phases", info.phases);
        assert!(
            t.elapsed().as_secs_f64() < 5.0,
            "{scaling} {initial}: {:?}",
            t.elapsed()
        );
    }
}
