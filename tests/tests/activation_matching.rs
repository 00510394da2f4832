//! Activation matching end to end (docs/ALGORITHM.md section 6): streaming both models over real
//! merge data, every group's assignment on a permuted copy of the model is the inverse
//! permutation, for every metric.

use pleas::io::data::{DataSpec, Normalize, load};
use pleas::merge::activation_stats::{activation_moments, group_similarities};
use pleas::model::Model;
use pleas_core::assign::AuctionParams;
use pleas_core::graph::{apply_permutations, permutation_groups};
use pleas_core::linalg::MatRef;
use pleas_core::merge::matching::match_group;
use pleas_core::similarity::Metric;
use pleas_tests::models::{Rng, fashion_eval, fixtures};

fn recovers_inverse(relative: &str, samples: usize, metrics: &[Metric]) {
    let model = Model::load(&fixtures().join(relative), None).unwrap();
    let groups = permutation_groups(&model.graph);
    let mut rng = Rng::new(11);
    let perms: Vec<Vec<usize>> = groups
        .groups()
        .iter()
        .map(|g| rng.permutation(g.width))
        .collect();
    let b = apply_permutations(&groups, &model.weights, &perms).unwrap();
    let data = load(&DataSpec::unlabelled(
        fashion_eval(),
        "x_match",
        Normalize::Symmetric,
    ))
    .unwrap();
    let x = &data.x[..samples * data.sample_len()];
    // Batches of 48 do not divide the sample count: the last batch is partial.
    let mut accs =
        activation_moments(&model.graph, &groups, &model.weights, &b, x, samples, 48).unwrap();
    for acc in &accs {
        // Every node of the group contributes all its positions.
        assert!(acc.count() >= samples as u64);
    }
    for &metric in metrics {
        let sims = group_similarities(&mut accs, metric).unwrap();
        for (g, p) in perms.iter().enumerate() {
            let n = p.len();
            let mut inverse = vec![0usize; n];
            for (i, &pi) in p.iter().enumerate() {
                inverse[pi] = i;
            }
            let m = match_group(
                MatRef::new(&sims[g], n, n).unwrap(),
                0.0,
                &AuctionParams::default(),
            )
            .unwrap();
            assert_eq!(
                m.layout.perm(),
                inverse,
                "{relative} {metric}: group {}",
                groups.groups()[g].name
            );
        }
    }
}

#[test]
fn mlp_activation_matching_recovers_the_permutation() {
    recovers_inverse(
        "fashion/mlp_split/fashion_mlp_split_m0_s0.safetensors",
        500,
        &[Metric::NegL2, Metric::Correlation, Metric::Inner],
    );
}

#[test]
fn resnet20_activation_matching_recovers_the_permutation() {
    recovers_inverse(
        "fashion/rn20w1_split/fashion_resnet20_w1_split_m0_s2.safetensors",
        200,
        &[Metric::NegL2, Metric::Correlation],
    );
}
