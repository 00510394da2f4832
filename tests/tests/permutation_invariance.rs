//! Permuting every permutation group of a model leaves its logits unchanged (docs/ALGORITHM.md
//! section 1 self-test), on every fixture model and on random torchvision ResNet-18/50.

use pleas::io::arch::resnet::{TorchvisionSpec, build_torchvision};
use pleas::io::data::{DataSpec, Normalize, load};
use pleas::model::Model;
use pleas_core::forward::{Forward, fold_batchnorm};
use pleas_core::graph::{Graph, Shape, Weights, apply_permutations, permutation_groups};
use pleas_tests::models::{
    Rng, fashion_eval, fixture_models, max_rel_diff, random_input, random_weights,
};
use pleas_tests::tolerance::{BN_FOLD_REL, PERMUTATION_INVARIANCE_REL};

/// Logits of `graph` with `weights` and with every group randomly permuted; returns the relative
/// max difference and checks that the permutation really moved some weights.
fn permuted_diff(graph: &Graph, weights: &Weights, x: &[f32], n: usize, seed: u64) -> f32 {
    let groups = permutation_groups(graph);
    assert!(!groups.is_empty());
    let mut rng = Rng::new(seed);
    let perms: Vec<Vec<usize>> = groups
        .groups()
        .iter()
        .map(|g| rng.permutation(g.width))
        .collect();
    let permuted = apply_permutations(&groups, weights, &perms).unwrap();
    assert_ne!(&permuted, weights, "the permutation changed no weight");
    let a = Forward::new(graph, weights).unwrap().logits(x, n).unwrap();
    let b = Forward::new(graph, &permuted)
        .unwrap()
        .logits(x, n)
        .unwrap();
    a.iter()
        .zip(&b)
        .map(|(a, b)| max_rel_diff(a, b))
        .fold(0.0, f32::max)
}

#[test]
fn fixture_models_are_permutation_invariant() {
    for path in fixture_models() {
        let m = Model::load(&path, None).unwrap();
        let data = load(&DataSpec::unlabelled(
            fashion_eval(),
            "x_test",
            Normalize::Symmetric,
        ))
        .unwrap();
        let n = 64;
        let x = &data.x[..n * 784];
        let d = permuted_diff(&m.graph, &m.weights, x, n, 7);
        eprintln!("{}: max rel diff {d:e}", path.display());
        assert!(d <= PERMUTATION_INVARIANCE_REL, "{}: {d}", path.display());
    }
}

#[test]
fn torchvision_resnets_are_permutation_invariant() {
    for depth in [18, 50] {
        let spec = TorchvisionSpec::standard(depth, 10).unwrap();
        // 64x64 keeps the test quick; the groups do not depend on the resolution.
        let graph = build_torchvision(&spec, Shape::new(3, 64, 64)).unwrap();
        let weights = random_weights(&graph, depth as u64);
        let n = 4;
        let x = random_input(&graph, n, 99);
        let d = permuted_diff(&graph, &weights, &x, n, 11);
        eprintln!("ResNet-{depth}: max rel diff {d:e}");
        assert!(d <= PERMUTATION_INVARIANCE_REL, "ResNet-{depth}: {d}");
    }
}

#[test]
fn a_wrong_permutation_is_detected() {
    // The check above can fail: permuting only a weight's output axis (not its consumers)
    // changes the logits far beyond the tolerance.
    let path = fixture_models()
        .into_iter()
        .find(|p| p.to_string_lossy().contains("rn20"))
        .unwrap();
    let m = Model::load(&path, None).unwrap();
    let mut broken = m.weights.clone();
    let t = broken.get_mut("layers.4.conv1.weight").unwrap();
    let mut rng = Rng::new(3);
    *t = t.permute_axis(0, &rng.permutation(32)).unwrap();
    let x = random_input(&m.graph, 8, 5);
    let a = Forward::new(&m.graph, &m.weights)
        .unwrap()
        .logits(&x, 8)
        .unwrap();
    let b = Forward::new(&m.graph, &broken)
        .unwrap()
        .logits(&x, 8)
        .unwrap();
    assert!(max_rel_diff(&a[0], &b[0]) > 100.0 * PERMUTATION_INVARIANCE_REL);
}

#[test]
fn batchnorm_folding_keeps_the_function() {
    let spec = TorchvisionSpec::standard(18, 10).unwrap();
    let tv = build_torchvision(&spec, Shape::new(3, 48, 48)).unwrap();
    let tv_w = random_weights(&tv, 1);
    let mut cases = vec![(String::from("resnet18"), tv, tv_w)];
    for path in fixture_models()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("rn20"))
    {
        let m = Model::load(&path, None).unwrap();
        cases.push((path.display().to_string(), m.graph, m.weights));
    }
    for (name, graph, weights) in cases {
        let folded = fold_batchnorm(&graph, &weights).unwrap();
        assert!(
            folded
                .graph
                .nodes()
                .iter()
                .all(|n| n.op.kind() != "batchnorm"),
            "{name}: a batch-norm was not folded"
        );
        let n = 4;
        let x = random_input(&graph, n, 2);
        let a = Forward::new(&graph, &weights)
            .unwrap()
            .logits(&x, n)
            .unwrap();
        let b = Forward::new(&folded.graph, &folded.weights)
            .unwrap()
            .logits(&x, n)
            .unwrap();
        let d = max_rel_diff(&a[0], &b[0]);
        eprintln!("{name}: folded max rel diff {d:e}");
        assert!(d <= BN_FOLD_REL, "{name}: {d}");
        // The node map sends every original node to one computing the same activations.
        let bn = graph
            .find("layers.0.bn1")
            .or_else(|| graph.find("layer1.0.bn1"))
            .unwrap();
        let conv = graph.node(bn).inputs[0];
        assert_eq!(folded.node_map[bn], folded.node_map[conv]);
    }
}
