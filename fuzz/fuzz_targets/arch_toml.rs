//! The TOML architecture file on arbitrary text, against the weights of a small real
//! convolutional network (plus block-structured layer tensors): never panics; an accepted graph
//! passes its own weight check, and the writer expresses it as text that parses back to the same
//! graph. What the merge does with a graph next never panics either: permutation groups (each
//! group's nodes have its width), batch-norm folding, and a forward pass of small graphs, whose
//! outputs have their nodes' sizes.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pleas::io::arch::toml_file::{parse, to_toml};
use pleas_core::forward::{Forward, fold_batchnorm};
use pleas_core::graph::{Op, Tensor, Weights, cost, permutation_groups};

fn weights() -> &'static Weights {
    static W: OnceLock<Weights> = OnceLock::new();
    W.get_or_init(|| {
        let t = |shape: Vec<usize>| {
            let n = shape.iter().product();
            Tensor::new(shape, vec![0.5; n]).expect("sized")
        };
        let mut w = Weights::new();
        w.insert("conv1.weight".into(), t(vec![4, 1, 3, 3]));
        for p in ["weight", "bias", "running_mean", "running_var"] {
            w.insert(format!("bn1.{p}"), t(vec![4]));
        }
        w.insert("head.weight".into(), t(vec![3, 4]));
        w.insert("head.bias".into(), t(vec![3]));
        // A block conv (2 + 3 rows over 4 input channels) and a block linear layer.
        w.insert("merged.blocks.0.weight".into(), t(vec![2, 3, 3, 3]));
        w.insert("merged.blocks.0.bias".into(), t(vec![2]));
        w.insert("merged.blocks.1.weight".into(), t(vec![3, 4, 3, 3]));
        w.insert("fc.blocks.0.weight".into(), t(vec![2, 5]));
        w.insert("fc.blocks.1.weight".into(), t(vec![1, 2]));
        w
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(graph) = parse(text, weights()) {
        let checked = graph.check_weights(weights()).is_ok();
        let groups = permutation_groups(&graph);
        for g in groups.groups() {
            for &id in &g.nodes {
                assert_eq!(graph.node(id).shape.c, g.width, "group `{}`", g.name);
                assert_eq!(
                    groups.of_node(id).map(|i| &groups.groups()[i].name),
                    Some(&g.name)
                );
            }
        }
        // Activations of every node, summed (checked: shapes may be absurd).
        let values = graph.nodes().iter().try_fold(0usize, |acc, n| {
            let s = n.shape;
            s.c.checked_mul(s.h)?.checked_mul(s.w)?.checked_add(acc)
        });
        if checked && values.is_some_and(|v| v < 1_000_000) && cost(&graph).macs < 1_000_000 {
            let input = graph.input_shape().len();
            let _ = fold_batchnorm(&graph, weights());
            if let Ok(mut fwd) = Forward::new(&graph, weights()) {
                let x = vec![0.5f32; 2 * input];
                if let Ok(out) = fwd.logits(&x, 2) {
                    assert_eq!(out.len(), graph.outputs().len());
                    for (o, v) in graph.outputs().iter().zip(&out) {
                        assert_eq!(v.len(), 2 * graph.node(o.node).shape.len());
                    }
                }
            }
        }
        let written = to_toml(&graph).expect("the writer expresses every parsed graph");
        let back = parse(&written, weights()).expect("the written text parses");
        // NaN epsilons aside (NaN != NaN), the text is the same graph.
        let nan_eps = graph
            .nodes()
            .iter()
            .any(|n| matches!(n.op, Op::BatchNorm { eps, .. } if eps.is_nan()));
        if !nan_eps {
            assert_eq!(back, graph, "{written}");
        }
    }
});
