//! Similarities from streamed moments against direct f64 computations on the activations.

use nalgebra::DMatrix;
use pleas::par::OwnedGram;
use pleas_core::gram::GramParams;
use pleas_core::linalg::{MatMut, MatRef};
use pleas_core::similarity::{Metric, SimilarityError, similarity_from_accumulator};
use pleas_tests::matrices::uniform_values;
use pleas_tests::tolerance::SIMILARITY_REL;
use proptest::prelude::*;

fn direct(metric: Metric, a: &DMatrix<f64>, b: &DMatrix<f64>) -> DMatrix<f64> {
    DMatrix::from_fn(a.ncols(), b.ncols(), |i, j| {
        let (x, y) = (a.column(i), b.column(j));
        match metric {
            Metric::NegL2 => -(x - y).norm(),
            Metric::Inner => x.dot(&y),
            Metric::Correlation => {
                let xc = x.add_scalar(-x.mean());
                let yc = y.add_scalar(-y.mean());
                let d = xc.norm() * yc.norm();
                if d > 0.0 { xc.dot(&yc) / d } else { 0.0 }
            }
        }
    })
}

proptest! {
    #![proptest_config(pleas_tests::config(32))]

    #[test]
    fn streamed_similarity_matches_direct(
        n in 2usize..400, na in 1usize..40, nb in 1usize..40, offset in 0.0f32..20.0,
        seed in any::<u64>(), metric in prop_oneof![Just(Metric::NegL2), Just(Metric::Inner), Just(Metric::Correlation)],
    ) {
        // ReLU-like activations: non-negative, offset from zero (cancellation-prone).
        let a: Vec<f32> = uniform_values(n * na, seed).iter().map(|v| v.abs() + offset).collect();
        let b: Vec<f32> = uniform_values(n * nb, seed ^ 9).iter().map(|v| v.abs() * 2.0 + offset).collect();
        let mut acc = OwnedGram::new_owned(na, nb, GramParams::default().without_gram());
        for (lo, hi) in [(0, n / 2), (n / 2, n)] {
            acc.push(
                MatRef::new(&a[lo * na..hi * na], hi - lo, na).unwrap(),
                Some(MatRef::new(&b[lo * nb..hi * nb], hi - lo, nb).unwrap()),
            ).unwrap();
        }
        let mut s = vec![0.0; na * nb];
        similarity_from_accumulator(metric, &mut acc, MatMut::new(&mut s, na, nb).unwrap()).unwrap();
        let am = DMatrix::from_row_slice(n, na, &a).map(f64::from);
        let bm = DMatrix::from_row_slice(n, nb, &b).map(f64::from);
        let want = direct(metric, &am, &bm);
        // Scale of each entry: what a relative error is measured against.
        let scale = match metric {
            Metric::NegL2 => (am.norm() + bm.norm()) / (na.min(nb) as f64).sqrt(),
            Metric::Inner => want.amax(),
            Metric::Correlation => 1.0,
        };
        for i in 0..na {
            for j in 0..nb {
                prop_assert!((s[i * nb + j] - want[(i, j)]).abs() <= SIMILARITY_REL * scale.max(1e-30),
                    "{metric} ({i},{j}): {} vs {}", s[i * nb + j], want[(i, j)]);
            }
        }
    }
}

#[test]
fn matched_permuted_copy_scores_best() {
    // B's units are A's in another order: every metric ranks the true partner first.
    let (n, units) = (300, 12);
    let a: Vec<f32> = uniform_values(n * units, 5)
        .iter()
        .map(|v| v.max(0.0) * 3.0)
        .collect();
    let perm: Vec<usize> = (0..units).map(|i| (i * 5 + 3) % units).collect();
    let mut b = vec![0.0f32; n * units];
    for s in 0..n {
        for i in 0..units {
            b[s * units + perm[i]] = a[s * units + i];
        }
    }
    for metric in [Metric::NegL2, Metric::Correlation] {
        let mut acc = OwnedGram::new_owned(units, units, GramParams::default().without_gram());
        acc.push(
            MatRef::new(&a, n, units).unwrap(),
            Some(MatRef::new(&b, n, units).unwrap()),
        )
        .unwrap();
        let mut s = vec![0.0; units * units];
        similarity_from_accumulator(metric, &mut acc, MatMut::new(&mut s, units, units).unwrap())
            .unwrap();
        for i in 0..units {
            let row = &s[i * units..(i + 1) * units];
            let best = (0..units)
                .max_by(|&x, &y| row[x].total_cmp(&row[y]))
                .unwrap();
            assert_eq!(best, perm[i], "{metric}: unit {i}");
        }
    }
}

#[test]
fn no_samples_and_constant_units() {
    let mut acc = OwnedGram::new_owned(2, 2, GramParams::default().without_gram());
    let mut s = vec![0.0; 4];
    let err =
        similarity_from_accumulator(Metric::NegL2, &mut acc, MatMut::new(&mut s, 2, 2).unwrap())
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "similarity: no samples: the similarity is undefined"
    );
    assert!(matches!(
        err,
        pleas_core::similarity::SimilarityFromMomentsError::Similarity(SimilarityError::NoSamples)
    ));
    // A constant (dead) unit has correlation 0 with everything.
    let a = [1.0f32, 0.0, 1.0, 2.0, 1.0, 4.0];
    let b = [1.0f32, 5.0, 2.0, 5.0, 3.0, 5.0];
    acc.push(
        MatRef::new(&a, 3, 2).unwrap(),
        Some(MatRef::new(&b, 3, 2).unwrap()),
    )
    .unwrap();
    similarity_from_accumulator(
        Metric::Correlation,
        &mut acc,
        MatMut::new(&mut s, 2, 2).unwrap(),
    )
    .unwrap();
    assert_eq!((s[0], s[1]), (0.0, 0.0));
    assert!(
        (s[2] - 1.0).abs() < 1e-9,
        "unit 1 of A and unit 0 of B are perfectly correlated"
    );
    assert_eq!(Metric::from_name("neg-l2"), Some(Metric::NegL2));
    assert_eq!(Metric::from_name("cosine"), None);
}

/// docs/ALGORITHM.md section 6: matching A against a permuted copy of itself recovers the
/// permutation, and at ratio 0 every pair is merged with its true partner.
#[test]
fn matching_a_permuted_copy_recovers_the_permutation() {
    use pleas_core::assign::AuctionParams;
    use pleas_core::merge::matching::{match_group, merged_pairs};
    let (n, units) = (500, 40);
    let a: Vec<f32> = uniform_values(n * units, 21)
        .iter()
        .map(|v| v.max(0.0) * 2.0)
        .collect();
    let perm: Vec<usize> = (0..units).map(|i| (i * 7 + 5) % units).collect();
    let mut b = vec![0.0f32; n * units];
    for s in 0..n {
        for i in 0..units {
            b[s * units + perm[i]] = a[s * units + i];
        }
    }
    let mut acc = OwnedGram::new_owned(units, units, GramParams::default().without_gram());
    acc.push(
        MatRef::new(&a, n, units).unwrap(),
        Some(MatRef::new(&b, n, units).unwrap()),
    )
    .unwrap();
    let mut s = vec![0.0; units * units];
    similarity_from_accumulator(
        Metric::NegL2,
        &mut acc,
        MatMut::new(&mut s, units, units).unwrap(),
    )
    .unwrap();
    let sm = MatRef::new(&s, units, units).unwrap();
    let m = match_group(sm, 0.0, &AuctionParams::default()).unwrap();
    assert_eq!(m.layout.perm(), perm);
    assert_eq!(m.layout.merged_count(), units);
    // Identical units are at distance 0, up to the square root of the moments' rounding
    // (sqrt(1e-7 * sum a^2) here), far below the distance between different units.
    let typical = -s.iter().sum::<f64>() / (units * units) as f64;
    assert!(
        m.mean_merged_score.abs() < 1e-3 * typical,
        "{} vs typical distance {typical}",
        m.mean_merged_score
    );
    let half = match_group(sm, 0.5, &AuctionParams::default()).unwrap();
    assert_eq!(half.layout.merged_count(), merged_pairs(units, 0.5));
    assert_eq!(half.layout.merged_width(), units + units / 2);
    assert!(match_group(sm, 1.5, &AuctionParams::default()).is_err());
    assert_eq!(
        (
            merged_pairs(10, 0.25),
            merged_pairs(10, 1.0),
            merged_pairs(0, 0.3)
        ),
        (8, 0, 0)
    );
}
