//! Budget -> per-group ratios: FLOP accounting, bisection, stage cuts and weighted greedy.

use pleas_core::merge::budget::{
    BudgetError, LayerCost, flop_ratio, layer_multiplier, param_ratio, stage_cuts, stage_schedule,
    uniform_ratio, weighted_ratios,
};
use proptest::prelude::*;

fn layer(i: Option<usize>, o: Option<usize>, macs: f64) -> LayerCost {
    LayerCost {
        input_group: i,
        output_group: o,
        macs,
        weights: macs,
        biases: 0.0,
    }
}

/// A 784-512-512-10 MLP: groups 0 and 1 are the hidden layers.
fn mlp() -> Vec<LayerCost> {
    vec![
        layer(None, Some(0), 784.0 * 512.0),
        layer(Some(0), Some(1), 512.0 * 512.0),
        layer(Some(1), None, 512.0 * 10.0),
    ]
}

#[test]
fn multiplier_counts_the_structural_zero_blocks() {
    assert_eq!(layer_multiplier(0.0, 0.0), 1.0);
    assert_eq!(layer_multiplier(1.0, 1.0), 2.0);
    assert_eq!(layer_multiplier(0.5, 0.0), 1.5);
    // Both axes half separate: merged block (m x m) plus A-only and B-only blocks.
    assert_eq!(layer_multiplier(0.5, 0.5), 1.75);
    let layers = mlp();
    let r = [0.5, 0.25];
    let want = (784.0 * 512.0 * 1.5 + 512.0 * 512.0 * layer_multiplier(0.5, 0.25) + 5120.0 * 1.25)
        / (784.0 * 512.0 + 512.0 * 512.0 + 5120.0);
    assert!((flop_ratio(&layers, &r) - want).abs() < 1e-12);
    assert_eq!(flop_ratio(&layers, &[0.0, 0.0]), 1.0);
    assert_eq!(flop_ratio(&layers, &[1.0, 1.0]), 2.0);
}

#[test]
fn parameter_ratio_weighs_biases_by_output_width() {
    let layers = vec![LayerCost {
        input_group: None,
        output_group: Some(0),
        macs: 10.0,
        weights: 10.0,
        biases: 10.0,
    }];
    assert!((param_ratio(&layers, &[0.5]) - 1.5).abs() < 1e-12);
    let layers = vec![LayerCost {
        input_group: Some(0),
        output_group: None,
        macs: 10.0,
        weights: 10.0,
        biases: 10.0,
    }];
    assert!(
        (param_ratio(&layers, &[1.0]) - 1.5).abs() < 1e-12,
        "biases of ungrouped outputs are shared"
    );
}

proptest! {
    #[test]
    fn uniform_ratio_hits_the_budget(budget in 1.0f64..=2.0, macs in proptest::collection::vec(1.0f64..1e6, 3)) {
        let layers = vec![
            layer(None, Some(0), macs[0]),
            layer(Some(0), Some(1), macs[1]),
            layer(Some(1), None, macs[2]),
        ];
        let r = uniform_ratio(&layers, 2, budget).unwrap();
        prop_assert!((0.0..=1.0).contains(&r));
        prop_assert!((flop_ratio(&layers, &[r, r]) - budget).abs() < 1e-9);
    }

    #[test]
    fn weighted_ratios_fit_the_budget_and_leave_no_unit_that_fits(
        budget in 1.0f64..=2.0, w0 in 0.0f64..5.0, w1 in 0.0f64..5.0, n0 in 1usize..12, n1 in 1usize..12,
    ) {
        let layers = mlp();
        let r = weighted_ratios(&layers, &[n0, n1], &[w0, w1], budget).unwrap();
        let cost = flop_ratio(&layers, &r);
        prop_assert!(cost <= budget + 1e-9, "cost {cost} over budget {budget}");
        // Maximal: one more unit in any group would exceed the budget.
        for (g, n) in [n0, n1].into_iter().enumerate() {
            let mut more = r.clone();
            if (more[g] * n as f64).round() as usize >= n {
                continue;
            }
            more[g] += 1.0 / n as f64;
            prop_assert!(flop_ratio(&layers, &more) > budget - 1e-9, "group {g} could grow");
        }
    }
}

#[test]
fn weighted_ratios_prefer_heavy_groups() {
    let layers = mlp();
    let r = weighted_ratios(&layers, &[512, 512], &[0.0, 10.0], 1.3).unwrap();
    assert!(r[1] > 0.0 && r[0] < r[1], "{r:?}");
    // A budget of 2 separates everything, a budget of 1 nothing.
    assert_eq!(
        weighted_ratios(&layers, &[8, 8], &[1.0, 1.0], 2.0).unwrap(),
        vec![1.0, 1.0]
    );
    assert_eq!(
        weighted_ratios(&layers, &[8, 8], &[1.0, 1.0], 1.0).unwrap(),
        vec![0.0, 0.0]
    );
}

#[test]
fn stage_cuts_run_from_two_to_one() {
    // Two stages: groups 0 and 1 in stage 0, group 2 in stage 1.
    let layers = vec![
        layer(None, Some(0), 10.0),
        layer(Some(0), Some(1), 10.0),
        layer(Some(1), Some(2), 10.0),
        layer(Some(2), None, 10.0),
    ];
    let cuts = stage_cuts(&layers, &[0, 0, 1]).unwrap();
    assert_eq!(cuts.len(), 3);
    assert_eq!(cuts[0].flop_ratio, 2.0);
    assert_eq!(cuts[2].flop_ratio, 1.0);
    // Cut 1: stage 0 merged, stage 1 separate: layers cost 1, 1, 1 + 0 + 1 = 2, 2.
    assert!((cuts[1].flop_ratio - 1.5).abs() < 1e-12);
    let chosen = stage_schedule(&layers, &[0, 0, 1], 1.7).unwrap();
    assert_eq!(
        (chosen.cut, chosen.ratios.clone()),
        (1, vec![0.0, 0.0, 1.0])
    );
    assert_eq!(stage_schedule(&layers, &[0, 0, 1], 1.2).unwrap().cut, 2);
}

#[test]
fn bad_budgets_and_inputs_are_named() {
    let layers = mlp();
    for b in [0.99, 2.01, f64::NAN] {
        let err = uniform_ratio(&layers, 2, b).unwrap_err();
        assert!(matches!(err, BudgetError::OutOfRange { .. }));
        assert!(err.to_string().contains("outside [1, 2]"));
    }
    let err = uniform_ratio(&layers, 1, 1.5).unwrap_err();
    assert_eq!(
        err,
        BudgetError::UnknownGroup {
            layer: 1,
            group: 1,
            groups: 1
        }
    );
    let err = weighted_ratios(&layers, &[4, 4], &[1.0], 1.5).unwrap_err();
    assert!(matches!(err, BudgetError::LengthMismatch { .. }));
    let err = weighted_ratios(&layers, &[4, 4], &[1.0, -1.0], 1.5).unwrap_err();
    assert_eq!(
        err,
        BudgetError::InvalidValue {
            what: "group weight",
            index: 1
        }
    );
    assert_eq!(uniform_ratio(&[], 0, 1.5).unwrap_err(), BudgetError::NoCost);
}
