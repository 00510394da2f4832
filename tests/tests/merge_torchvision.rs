//! Torchvision-layout ResNets merge end to end: small ResNet-18 and ResNet-50 pairs of random
//! weights (randomised batch-norm statistics), written as safetensors under torchvision's
//! tensor names and loaded through architecture recognition, at a 32x32 input. The exact-merge
//! properties of ALGORITHM.md section 6 hold: budget 2.0 reproduces both models, a model merged
//! with a randomly permuted copy of itself at budget 1.0 reproduces the model. ResNet-50's
//! first bottleneck has a stride-1 downsample that shares its data pass with the block's
//! `conv1` (both 1x1 convs of the stem's output), which once left the block's later targets
//! unstored (`output N of A or B missing`).

use std::path::Path;

use pleas::io::arch::resnet::{TorchvisionSpec, build_torchvision};
use pleas::io::data::{DataSpec, Normalize};
use pleas::io::safetensors::{Metadata, save_weights};
use pleas::merge::pipeline::{MergeOutcome, merge};
use pleas::merge::settings::{BnMode, FitMode, MergeSettings};
use pleas::model::Model;
use pleas_core::forward::Forward;
use pleas_core::graph::{Shape, Tensor, Weights, apply_permutations, permutation_groups};
use pleas_tests::models::{Rng, max_rel_diff, random_input, random_weights};
use pleas_tests::scratch::TempDir;
use pleas_tests::tolerance::{MERGE_COPY_LOGIT_REL, MERGE_LOGIT_REL};

const SIDE: usize = 32;
const MERGE_SAMPLES: usize = 24;
const TEST_SAMPLES: usize = 8;
const CLASSES: usize = 10;

/// ResNet-18's or ResNet-50's depth at tiny widths (stem 8; bottleneck outputs 4x planes).
fn spec(depth: usize) -> TorchvisionSpec {
    let mut s = TorchvisionSpec::standard(depth, CLASSES).unwrap();
    s.stem = 8;
    s.planes = if s.bottleneck {
        [4, 4, 8, 8]
    } else {
        [8, 8, 16, 16]
    };
    s
}

/// Writes a model of random weights under torchvision's names (no architecture metadata, so
/// loading recognises it from the names) and loads it. `classes` labels the `fc` units.
fn write_model(dir: &Path, name: &str, depth: usize, seed: u64, classes: &[i64]) -> Model {
    let input = Shape::new(3, SIDE, SIDE);
    let graph = build_torchvision(&spec(depth), input).unwrap();
    let weights = random_weights(&graph, seed);
    let mut meta = Metadata::new();
    meta.insert("input_shape".into(), format!("[3, {SIDE}, {SIDE}]"));
    meta.insert("classes".into(), format!("{classes:?}"));
    let path = dir.join(format!("{name}.safetensors"));
    save_weights(&path, &weights, &meta).unwrap();
    let model = Model::load(&path, None).unwrap();
    assert_eq!(model.arch, format!("resnet{depth} (torchvision)"));
    assert_eq!(model.graph, graph);
    model
}

/// `n` standard-normal images in a safetensors file of their own.
fn write_data(dir: &Path, graph: &pleas_core::graph::Graph, n: usize, seed: u64) -> DataSpec {
    let mut t = Weights::new();
    let x = Tensor::new(vec![n, 3, SIDE, SIDE], random_input(graph, n, seed)).unwrap();
    t.insert("x".into(), x);
    let path = dir.join("data.safetensors");
    save_weights(&path, &t, &Metadata::new()).unwrap();
    DataSpec::unlabelled(path, "x", Normalize::Identity)
}

fn settings(budget: f64) -> MergeSettings {
    MergeSettings {
        budget,
        fit: FitMode::Sequential,
        bn: BnMode::Fold,
        threads: 2,
        batch: 8,
        ..MergeSettings::default()
    }
}

fn logits(graph: &pleas_core::graph::Graph, w: &Weights, x: &[f32]) -> Vec<Vec<f32>> {
    Forward::new(graph, w)
        .unwrap()
        .logits(x, TEST_SAMPLES)
        .unwrap()
}

fn merged_logits(o: &MergeOutcome, x: &[f32]) -> Vec<Vec<f32>> {
    logits(&o.graph, &o.weights, x)
}

fn permuted_copy(model: &Model, seed: u64) -> Model {
    let groups = permutation_groups(&model.graph);
    let mut rng = Rng::new(seed);
    let perms: Vec<Vec<usize>> = groups
        .groups()
        .iter()
        .map(|g| rng.permutation(g.width))
        .collect();
    let mut m = model.clone();
    m.weights = apply_permutations(&groups, &model.weights, &perms).unwrap();
    m
}

fn check_exact_merges(depth: usize) {
    let dir = TempDir::new("merge-torchvision", &format!("rn{depth}"));
    let own: Vec<i64> = (0..CLASSES as i64).collect();
    let other: Vec<i64> = (CLASSES as i64..2 * CLASSES as i64).collect();
    let a = write_model(dir.path(), "a", depth, 1, &own);
    let b = write_model(dir.path(), "b", depth, 2, &other);
    let data = write_data(dir.path(), &a.graph, MERGE_SAMPLES, 3);
    let x = random_input(&a.graph, TEST_SAMPLES, 4);
    let (la, lb) = (
        logits(&a.graph, &a.weights, &x),
        logits(&b.graph, &b.weights, &x),
    );

    // Budget 2.0: nothing merged, both models copied (two heads: the classes differ).
    let o = merge(&a, &b, &data, &settings(2.0), &mut |_| {}).unwrap();
    assert!(o.groups.iter().all(|g| g.merged == 0));
    let got = merged_logits(&o, &x);
    assert_eq!(got.len(), 2, "separate heads");
    let (da, db) = (max_rel_diff(&la[0], &got[0]), max_rel_diff(&lb[0], &got[1]));
    eprintln!("resnet{depth} budget 2.0: head a {da:e}, head b {db:e}");
    assert!(da <= MERGE_COPY_LOGIT_REL, "head a {da}");
    assert!(db <= MERGE_COPY_LOGIT_REL, "head b {db}");

    // Self-merge at budget 1.0 with a permuted copy: every unit merged, the model reproduced.
    let copy = permuted_copy(&a, 5);
    assert_ne!(copy.weights, a.weights);
    let o = merge(&a, &copy, &data, &settings(1.0), &mut |_| {}).unwrap();
    assert!(o.groups.iter().all(|g| g.merged == g.width));
    assert!((o.flop_ratio - 1.0).abs() < 1e-12, "{}", o.flop_ratio);
    let got = merged_logits(&o, &x);
    let d = max_rel_diff(&la[0], &got[0]);
    eprintln!("resnet{depth} self-merge: {d:e}");
    assert!(d <= MERGE_LOGIT_REL, "self-merge {d}");

    // A real merge in between runs too, on the merged network's inputs and on the original
    // models', and every layer is fitted.
    let convs = a
        .graph
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, pleas_core::graph::Op::Conv2d { .. }))
        .count();
    for fit in [FitMode::Sequential, FitMode::Original] {
        let s = MergeSettings {
            fit,
            ..settings(1.2)
        };
        let o = merge(&a, &b, &data, &s, &mut |_| {}).unwrap();
        assert_eq!(
            o.layers.len(),
            convs + 2,
            "every conv and both heads fitted"
        );
        assert!(o.layers.iter().all(|l| l.relative_residual.is_finite()));
    }
}

#[test]
fn torchvision_resnet18_merges_exactly() {
    check_exact_merges(18);
}

#[test]
fn torchvision_resnet50_merges_exactly() {
    check_exact_merges(50);
}
