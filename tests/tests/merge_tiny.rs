//! Whole merges of tiny in-memory networks: regressions found by fuzzing the merge pipeline
//! (`fuzz/fuzz_targets/whole_merge.rs`).

use std::path::PathBuf;

use pleas::io::safetensors::Metadata;
use pleas::merge::pipeline::merge;
use pleas::merge::settings::{FitMode, MergeSettings};
use pleas::model::Model;
use pleas_core::forward::Forward;
use pleas_core::graph::{
    Graph, Op, Shape, Tensor, Weights, apply_permutations, permutation_groups,
};
use pleas_tests::models::{Rng, max_rel_diff, random_weights};
use pleas_tests::tolerance::{MERGE_COPY_LOGIT_REL, MERGE_LOGIT_REL};

fn tmp(name: &str) -> PathBuf {
    let dir = pleas_tests::scratch::dir("merge-tiny");
    dir.join(name)
}

/// `input -> layers.0 (linear + bias, ReLU) -> head (linear, no bias)`.
fn mlp(d_in: usize, hidden: usize, classes: usize) -> Graph {
    let mut g = Graph::new(Shape::flat(d_in));
    let h = g
        .push(
            "layers.0",
            Op::Linear {
                weight: "layers.0.weight".into(),
                bias: Some("layers.0.bias".into()),
                in_features: d_in,
                out_features: hidden,
            },
            &[0],
        )
        .unwrap();
    let r = g.push("layers.0.relu", Op::Relu, &[h]).unwrap();
    let head = g
        .push(
            "head",
            Op::Linear {
                weight: "head.weight".into(),
                bias: None,
                in_features: hidden,
                out_features: classes,
            },
            &[r],
        )
        .unwrap();
    g.add_output("head", head).unwrap();
    g
}

fn model(name: &str, graph: &Graph, weights: Weights, first_class: usize) -> Model {
    let classes = graph.node(graph.outputs()[0].node).shape.c;
    let list: Vec<String> = (first_class..first_class + classes)
        .map(|c| c.to_string())
        .collect();
    let mut meta = Metadata::new();
    meta.insert("classes".into(), format!("[{}]", list.join(", ")));
    Model::from_parts(&tmp(name), "mlp".into(), graph.clone(), weights, meta).unwrap()
}

fn logits(graph: &Graph, weights: &Weights, x: &[f32], n: usize) -> Vec<Vec<f32>> {
    Forward::new(graph, weights).unwrap().logits(x, n).unwrap()
}

/// Model A's hidden units are all dead on the merge data (bias -100) and its head has no
/// bias, so the blocks of the merged head that read only A's units see inputs that are all
/// zero: a zero Gram block, where the relative ridge is zero too. The merge used to fail
/// ("Gram block is not positive definite: pivot 0 ... with ridge 0"); those blocks now keep
/// their permute-and-average weights (the ridge pulls towards them), so at budget 2.0 the
/// merged model reproduces A even on inputs where its units come alive.
#[test]
fn layers_whose_inputs_are_dead_on_the_merge_data_merge() {
    let (d, hidden, classes, n) = (3, 3, 2, 32);
    let g = mlp(d, hidden, classes);
    let mut wa = random_weights(&g, 1);
    wa.insert(
        "layers.0.bias".into(),
        Tensor::new(vec![hidden], vec![-100.0; hidden]).unwrap(),
    );
    let wb = random_weights(&g, 2);
    // Different label spaces: one head per model.
    let (a, b) = (model("a", &g, wa, 0), model("b", &g, wb, 10));
    let mut rng = Rng::new(3);
    let x: Vec<f32> = (0..n * d).map(|_| rng.normal_f32()).collect();
    let spec = pleas_tests::npy_data::write(tmp("dead.npy"), &x, n, d);
    for budget in [1.0, 1.06, 1.5, 2.0] {
        let s = MergeSettings {
            budget,
            heads: None,
            threads: 1,
            batch: 8,
            ..MergeSettings::default()
        };
        let o = merge(&a, &b, &spec, &s, &mut |_| {})
            .unwrap_or_else(|e| panic!("budget {budget}: {}", pleas::error::chain(&e)));
        if budget == 2.0 {
            // Inputs where A's units are alive (x = 60 lifts some pre-activations above 0).
            let alive: Vec<f32> = (0..4 * d).map(|i| 60.0 * (1.0 + (i % 3) as f32)).collect();
            for (input, m) in [(&x[..], n), (&alive[..], 4)] {
                let got = logits(&o.graph, &o.weights, input, m);
                let la = logits(&a.graph, &a.weights, input, m);
                let lb = logits(&b.graph, &b.weights, input, m);
                let (da, db) = (max_rel_diff(&la[0], &got[0]), max_rel_diff(&lb[0], &got[1]));
                assert!(
                    da <= MERGE_COPY_LOGIT_REL || la[0].iter().all(|v| *v == 0.0) && da == 0.0,
                    "head a: {da}"
                );
                assert!(db <= MERGE_COPY_LOGIT_REL, "head b: {db}");
            }
        }
    }
}

/// `input -> [linear (+ bias), ReLU] per hidden layer -> head`.
fn deep_mlp(d_in: usize, hidden: &[(usize, bool)], classes: usize, head_bias: bool) -> Graph {
    let mut g = Graph::new(Shape::flat(d_in));
    let (mut x, mut width) = (0, d_in);
    let linear = |name: &str, i: usize, o: usize, bias: bool| Op::Linear {
        weight: format!("{name}.weight"),
        bias: bias.then(|| format!("{name}.bias")),
        in_features: i,
        out_features: o,
    };
    for (i, &(h, bias)) in hidden.iter().enumerate() {
        let name = format!("layers.{i}");
        x = g.push(&name, linear(&name, width, h, bias), &[x]).unwrap();
        x = g.push(format!("{name}.relu"), Op::Relu, &[x]).unwrap();
        width = h;
    }
    let head = g
        .push("head", linear("head", width, classes, head_bias), &[x])
        .unwrap();
    g.add_output("head", head).unwrap();
    g
}

/// The `whole_merge` fuzz target's finding `fuzz/corpus/whole_merge/open-finding-*`: a
/// 5-1-6-4-3 MLP whose first hidden layer has a single unit, so the next layers' inputs are
/// functions of one scalar and their Grams are numerically rank-deficient. Solving those blocks
/// at budget 2.0 set the directions the merge data does not excite from f32 rounding divided by
/// the ridge, and the merged model missed both models by 1.4e-3 of the logit scale on fresh
/// inputs. A block whose rows are private units reading only exact copies of their model's
/// units has the permute-and-average weights as its exact least-squares solution (zero loss,
/// zero ridge penalty), so it keeps them without a solve; budget 2.0 then copies both models
/// whatever the conditioning.
#[test]
fn budget_two_copies_both_models_through_rank_deficient_layers() {
    let (d, classes) = (5, 3);
    let g = deep_mlp(d, &[(1, false), (6, true), (4, true)], classes, false);
    let seed = u64::from_be_bytes(*b"ad.block");
    let (a, b) = (
        model("deficient-a", &g, random_weights(&g, seed), 0),
        model("deficient-b", &g, random_weights(&g, seed ^ 0x5eed), 0),
    );
    let mut rng = Rng::new(seed);
    let n = 19;
    let x: Vec<f32> = (0..n * d).map(|_| rng.normal_f32()).collect();
    let fresh: Vec<f32> = (0..8 * d).map(|_| rng.normal_f32()).collect();
    let spec = pleas_tests::npy_data::write(tmp("deficient.npy"), &x, n, d);
    for batch in [1, 8] {
        let s = MergeSettings {
            budget: 2.0,
            threads: 1,
            batch,
            ..MergeSettings::default()
        };
        let o = merge(&a, &b, &spec, &s, &mut |_| {})
            .unwrap_or_else(|e| panic!("batch {batch}: {}", pleas::error::chain(&e)));
        for (input, m) in [(&x[..], n), (&fresh[..], 8)] {
            let got = logits(&o.graph, &o.weights, input, m);
            let la = logits(&a.graph, &a.weights, input, m);
            let lb = logits(&b.graph, &b.weights, input, m);
            // One shared head (same classes): the mean of the two models' logits.
            assert_eq!(got.len(), 1);
            let mean: Vec<f32> = la[0]
                .iter()
                .zip(&lb[0])
                .map(|(p, q)| 0.5 * (p + q))
                .collect();
            let scale_ref: Vec<f32> = la[0].iter().chain(&lb[0]).copied().collect();
            let scale = scale_ref.iter().fold(0.0f32, |s, v| s.max(v.abs()));
            let diff = got[0]
                .iter()
                .zip(&mean)
                .fold(0.0f32, |s, (p, q)| s.max((p - q).abs()));
            assert!(
                diff <= MERGE_COPY_LOGIT_REL * scale,
                "batch {batch}: {:e} of the logit scale",
                diff / scale
            );
        }
    }
}

/// A self-merge at budget 1.0 (a model with a permuted copy of itself) from fewer samples than
/// the second layer has input columns (20 samples; 40 merged units and the bias). That layer's
/// inputs are merged units, so its blocks are solved (the first layer, which reads the shared
/// input, is a copy), and the pass keeps its rows for the sample-space solve: the directions
/// the 20 samples do not reach keep the prior, which is the model (matching recovers the
/// permutation), and the merged network reproduces it on fresh inputs. Solved from the
/// rank-deficient f32 Gram instead, those directions are set by rounding divided by the ridge:
/// 1.1e-2 of the logit scale on the fresh inputs.
#[test]
fn self_merge_from_fewer_samples_than_columns_reproduces_the_model() {
    let (d, hidden, classes, n) = (4, 40, 3, 20);
    let g = deep_mlp(d, &[(hidden, true), (hidden, true)], classes, true);
    let wa = random_weights(&g, 21);
    let groups = permutation_groups(&g);
    let mut rng = Rng::new(22);
    let perms: Vec<Vec<usize>> = groups
        .groups()
        .iter()
        .map(|p| rng.permutation(p.width))
        .collect();
    let wb = apply_permutations(&groups, &wa, &perms).unwrap();
    let (a, b) = (model("self-a", &g, wa, 0), model("self-b", &g, wb, 0));
    let x: Vec<f32> = (0..n * d).map(|_| rng.normal_f32()).collect();
    let fresh: Vec<f32> = (0..64 * d).map(|_| rng.normal_f32()).collect();
    let spec = pleas_tests::npy_data::write(tmp("self.npy"), &x, n, d);
    for fit in [FitMode::Sequential, FitMode::Original] {
        let s = MergeSettings {
            budget: 1.0,
            fit,
            threads: 1,
            ..MergeSettings::default()
        };
        let o = merge(&a, &b, &spec, &s, &mut |_| {})
            .unwrap_or_else(|e| panic!("{fit:?}: {}", pleas::error::chain(&e)));
        assert!(o.groups.iter().all(|g| g.merged == g.width));
        for (input, m) in [(&x[..], n), (&fresh[..], 64)] {
            let want = logits(&a.graph, &a.weights, input, m);
            let got = logits(&o.graph, &o.weights, input, m);
            let diff = max_rel_diff(&want[0], &got[0]);
            eprintln!("{fit:?} {m}: {diff:e}");
            assert!(diff <= MERGE_LOGIT_REL, "{fit:?}, {m} inputs: {diff:e}");
        }
    }
}
