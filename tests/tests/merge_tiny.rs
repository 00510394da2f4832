//! Whole merges of tiny in-memory networks: regressions found by fuzzing the merge pipeline
//! (`fuzz/fuzz_targets/whole_merge.rs`).

use std::path::PathBuf;

use pleas::io::data::{DataSpec, Normalize};
use pleas::io::npy;
use pleas::io::safetensors::{Dtype, Metadata, RawTensor};
use pleas::merge::pipeline::merge;
use pleas::merge::settings::{HeadChoice, MergeSettings};
use pleas::model::Model;
use pleas_core::forward::Forward;
use pleas_core::graph::{Graph, Op, Shape, Tensor, Weights};
use pleas_tests::models::{Rng, max_rel_diff, random_weights};
use pleas_tests::tolerance::MERGE_LOGIT_REL;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pleas-merge-tiny-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
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

fn npy_data(name: &str, x: &[f32], n: usize, d: usize) -> DataSpec {
    let path = tmp(name);
    let raw = RawTensor {
        dtype: Dtype::F32,
        shape: vec![n, d],
        bytes: x.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    std::fs::write(&path, npy::to_bytes(&raw)).unwrap();
    DataSpec {
        path,
        data_key: "x".into(),
        label_key: None,
        labels_path: None,
        normalize: Normalize::Identity,
    }
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
    let spec = npy_data("dead.npy", &x, n, d);
    for budget in [1.0, 1.06, 1.5, 2.0] {
        let s = MergeSettings {
            budget,
            heads: HeadChoice::Auto,
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
                    da <= MERGE_LOGIT_REL || la[0].iter().all(|v| *v == 0.0) && da == 0.0,
                    "head a: {da}"
                );
                assert!(db <= MERGE_LOGIT_REL, "head b: {db}");
            }
        }
    }
}
