//! Tests of `assign::select_top`: the k best pairs of an assignment against a full-sort
//! reference, deterministic tie-breaking, layout order, and errors.

use pleas_core::assign::{SelectError, select_top};
use pleas_core::linalg::MatRef;
use pleas_tests::assignment::{Kind, matrix};
use proptest::prelude::*;

/// Reference: sort all rows by (score descending, row ascending), take the first k.
fn reference(s: &[f64], cols: usize, perm: &[usize], k: usize) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..perm.len()).collect();
    order.sort_by(|&a, &b| {
        s[b * cols + perm[b]]
            .partial_cmp(&s[a * cols + perm[a]])
            .unwrap()
            .then(a.cmp(&b))
    });
    let (mut top, mut rest) = (order[..k].to_vec(), order[k..].to_vec());
    top.sort_unstable();
    rest.sort_unstable();
    (top, rest)
}

/// A pseudo-random permutation of `0..n` from a seed.
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let keys = matrix(Kind::Uniform, 1, n.max(1), seed);
    let mut p: Vec<usize> = (0..n).collect();
    p.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
    p
}

proptest! {
    #![proptest_config(pleas_tests::config(256))]

    #[test]
    fn matches_full_sort(n in 0usize..=200, k_frac in 0.0f64..=1.0, seed: u64, tied: bool) {
        let kind = if tied { Kind::Tied } else { Kind::Uniform };
        let s = matrix(kind, n, n, seed);
        let perm = permutation(n, seed ^ 7);
        let k = ((n as f64) * k_frac).round() as usize;
        let mut out = vec![usize::MAX; n + 3];
        select_top(MatRef::new(&s, n, n).unwrap(), &perm, k, &mut out).unwrap();
        let (top, rest) = reference(&s, n, &perm, k);
        prop_assert_eq!(&out[..k], &top[..]);
        prop_assert_eq!(&out[k..n], &rest[..]);
        prop_assert!(out[n..].iter().all(|&x| x == usize::MAX), "wrote past the rows");
        // f32 scores give the same ranking (the values are exact in f32 for the tied kind).
        if tied {
            let s32: Vec<f32> = s.iter().map(|&v| v as f32).collect();
            let mut out32 = vec![0; n];
            select_top(MatRef::new(&s32, n, n).unwrap(), &perm, k, &mut out32).unwrap();
            prop_assert_eq!(&out32[..], &out[..n]);
        }
    }
}

#[test]
fn ties_prefer_lower_rows_and_zeros_compare_equal() {
    // Scores along the identity: rows 1, 3, 4 tie at the top, 0 and 2 (+0 / -0) tie below.
    let d = [0.0, 5.0, -0.0, 5.0, 5.0];
    let n = d.len();
    let mut s = vec![-9.0f64; n * n];
    for i in 0..n {
        s[i * n + i] = d[i];
    }
    let perm: Vec<usize> = (0..n).collect();
    let mut out = vec![0; n];
    let m = MatRef::new(&s, n, n).unwrap();
    select_top(m, &perm, 2, &mut out).unwrap();
    assert_eq!(out, [1, 3, 0, 2, 4]);
    select_top(m, &perm, 4, &mut out).unwrap();
    assert_eq!(out, [0, 1, 3, 4, 2]);
    select_top(m, &perm, 0, &mut out).unwrap();
    assert_eq!(out, [0, 1, 2, 3, 4]);
    select_top(m, &perm, 5, &mut out).unwrap();
    assert_eq!(out, [0, 1, 2, 3, 4]);
}

#[test]
fn infinities_are_ordered() {
    let s = [f64::NEG_INFINITY, 0.0, 1.0, f64::INFINITY];
    let m = MatRef::new(&s, 2, 2).unwrap();
    let mut out = [9; 2];
    select_top(m, &[0, 1], 1, &mut out).unwrap();
    assert_eq!(out, [1, 0]);
}

#[test]
fn errors_name_the_problem() {
    let mut s = matrix(Kind::Uniform, 3, 3, 1);
    let m = MatRef::new(&s, 3, 3).unwrap();
    let mut out = [0usize; 3];
    assert_eq!(
        select_top(m, &[0, 1], 1, &mut out),
        Err(SelectError::PermLength { rows: 3, len: 2 })
    );
    assert_eq!(
        select_top(m, &[0, 1, 2], 4, &mut out),
        Err(SelectError::TooMany { k: 4, rows: 3 })
    );
    assert_eq!(
        select_top(m, &[0, 1, 2], 1, &mut out[..2]),
        Err(SelectError::OutputTooSmall {
            needed: 3,
            provided: 2
        })
    );
    assert_eq!(
        select_top(m, &[0, 3, 2], 1, &mut out),
        Err(SelectError::ColumnOutOfRange {
            row: 1,
            col: 3,
            cols: 3
        })
    );
    s[2 * 3 + 1] = f64::NAN;
    let m = MatRef::new(&s, 3, 3).unwrap();
    let err = select_top(m, &[0, 2, 1], 1, &mut out).unwrap_err();
    assert_eq!(err, SelectError::NanScore { row: 2, col: 1 });
    assert!(err.to_string().contains("(2, 1)"));
    // A NaN off the assignment is not looked at.
    select_top(m, &[0, 1, 2], 1, &mut out).unwrap();
}
