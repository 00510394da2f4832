//! The vectorised non-finite scan against its scalar twin, lane by lane on edge values first.

use pleas_core::linalg::{
    MatRef, all_finite, all_finite_reference, all_within, all_within_reference, first_non_finite,
    first_outside,
};
use pleas_tests::simd_paths::{each_path, for_each_path};
use proptest::prelude::*;

const EDGES: [f32; 9] = [
    0.0,
    -0.0,
    f32::MIN_POSITIVE / 4.0, // denormal
    f32::MAX,
    f32::MIN,
    1.0,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
];

#[test]
fn every_edge_value_in_every_lane_and_tail_position() {
    for_each_path(every_edge_value_on_the_selected_path);
}

fn every_edge_value_on_the_selected_path(path: pleas_core::simd::Path) {
    // Tails of every vector width (8, 16) and of the four-vector steps (32, 64).
    for len in [1usize, 7, 8, 9, 16, 17, 31, 33, 63, 64, 65, 79] {
        for pos in 0..len {
            for &v in &EDGES {
                let mut values = vec![1.5f32; len];
                values[pos] = v;
                assert_eq!(
                    all_finite(&values),
                    all_finite_reference(&values),
                    "{path}: len {len}, value {v} at {pos}"
                );
                for limit in [1.5f32, 2.0, f32::MAX, f32::INFINITY] {
                    assert_eq!(
                        all_within(&values, limit),
                        all_within_reference(&values, limit),
                        "{path}: len {len}, value {v} at {pos}, limit {limit}"
                    );
                }
            }
        }
    }
    // Two infinities of opposite sign must not cancel.
    let mut values = vec![0.0f32; 16];
    values[0] = f32::INFINITY;
    values[8] = f32::NEG_INFINITY;
    assert!(!all_finite(&values));
    assert!(all_finite(&[]));
}

fn value() -> impl Strategy<Value = f32> {
    prop_oneof![8 => -1e30f32..1e30, 1 => proptest::sample::select(EDGES.to_vec())]
}

proptest! {
    #[test]
    fn scan_matches_scalar_twin(values in proptest::collection::vec(value(), 0..100)) {
        each_path(|_| {
            prop_assert_eq!(all_finite(&values), all_finite_reference(&values));
            Ok(())
        })?;
    }

    #[test]
    fn bounded_scan_matches_scalar_twin(
        values in proptest::collection::vec(value(), 0..100), limit in 0.0f32..1e31,
    ) {
        each_path(|_| {
            prop_assert_eq!(all_within(&values, limit), all_within_reference(&values, limit));
            let m = MatRef::new(&values, values.len(), 1).unwrap();
            let want = values.iter().position(|v| v.is_nan() || v.abs() > limit).map(|i| (i, 0));
            prop_assert_eq!(first_outside(m, limit), want);
            Ok(())
        })?;
    }

    #[test]
    fn first_position_matches_a_plain_search(
        rows in 1usize..12, cols in 1usize..40, transpose in any::<bool>(),
        bad in proptest::collection::vec((0usize..12, 0usize..40), 0..3),
    ) {
        let mut data = vec![0.25f32; rows * cols];
        for &(r, c) in &bad {
            data[(r % rows) * cols + c % cols] = f32::NAN;
        }
        let m = MatRef::new(&data, rows, cols).unwrap();
        let m = if transpose { m.transpose() } else { m };
        let want = (0..m.rows())
            .flat_map(|i| (0..m.cols()).map(move |j| (i, j)))
            .find(|&(i, j)| !m.at(i, j).is_finite());
        each_path(|_| {
            prop_assert_eq!(first_non_finite(m), want);
            Ok(())
        })?;
    }
}
