//! Data-free weight matching (docs/ALGORITHM.md section 6): on a model and a permuted copy of it,
//! every group's matching is the inverse permutation.

use pleas::model::Model;
use pleas_core::graph::{apply_permutations, permutation_groups};
use pleas_core::merge::weight_matching::{WeightMatchParams, weight_matching};
use pleas_tests::models::{Rng, fixtures};

fn recovers_inverse(relative: &str) {
    let model = Model::load(&fixtures().join(relative), None).unwrap();
    let groups = permutation_groups(&model.graph);
    let mut rng = Rng::new(7);
    let perms: Vec<Vec<usize>> = groups
        .groups()
        .iter()
        .map(|g| rng.permutation(g.width))
        .collect();
    // B unit i is A unit perms[g][i], so A unit j sits at B unit inverse[j].
    let b = apply_permutations(&groups, &model.weights, &perms).unwrap();
    let wm = weight_matching(&groups, &model.weights, &b, &WeightMatchParams::default()).unwrap();
    for (g, p) in perms.iter().enumerate() {
        let mut inverse = vec![0usize; p.len()];
        for (i, &pi) in p.iter().enumerate() {
            inverse[pi] = i;
        }
        assert_eq!(
            wm.perms[g],
            inverse,
            "{relative}: group {}",
            groups.groups()[g].name
        );
        // The matched pairs score highest in their rows: the scores are in B's frame.
        let n = p.len();
        for i in 0..n {
            let row = &wm.scores[g][i * n..(i + 1) * n];
            let best = (0..n).max_by(|&x, &y| row[x].total_cmp(&row[y])).unwrap();
            assert_eq!(best, inverse[i]);
        }
    }
    assert!(wm.sweeps >= 2, "a second sweep confirms no change");
}

#[test]
fn weight_matching_recovers_the_permutation_of_an_mlp() {
    recovers_inverse("fashion/mlp_split/fashion_mlp_split_m0_s0.safetensors");
}

#[test]
fn weight_matching_recovers_the_permutation_of_a_resnet20() {
    recovers_inverse("fashion/rn20w1_split/fashion_resnet20_w1_split_m0_s2.safetensors");
}
