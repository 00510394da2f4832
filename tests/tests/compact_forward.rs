//! The compact forward pass (`pleas_core::forward::compact`, no allocation, one sample at a
//! time in caller scratch) against the batched graph forward pass (`Forward`) on the same
//! network, on every SIMD path: a small residual CNN using every layer kind, and the
//! `cnn_split` fixture pair on Fashion-MNIST test images. Bad descriptions and short buffers
//! are typed errors; the activation slots follow the liveness of the nodes.

use pleas::io::data::{self, DataSpec, Normalize};
use pleas::model::Model;
use pleas_core::forward::Forward;
use pleas_core::forward::compact::{
    CompactError, CompactPlan, Layer, LayerOp, MAX_LAYERS, MapShape, Network, Window,
};
use pleas_core::graph::{Graph, Op, Shape};
use pleas_tests::compact::{CompactNet, from_graph};
use pleas_tests::models::{
    bn_op, fashion_eval, fixtures, max_rel_diff, random_input, random_weights,
};
use pleas_tests::simd_paths::for_each_path;
use pleas_tests::tolerance::COMPACT_FORWARD_REL;

fn conv(name: &str, i: usize, o: usize, k: usize, s: usize, p: usize, bias: bool) -> Op {
    Op::Conv2d {
        weight: format!("{name}.weight"),
        bias: bias.then(|| format!("{name}.bias")),
        in_channels: i,
        out_channels: o,
        kernel: [k, k],
        stride: [s, s],
        padding: [p, p],
    }
}

/// Input `2 x 11 x 11`: conv, batch-norm, ReLU, a residual block, max pooling, a strided conv,
/// average pooling, a 1x1 conv, global pooling and a linear head; a second head reads the
/// average-pooled map flattened.
fn every_layer_cnn() -> Graph {
    let mut g = Graph::new(Shape::new(2, 11, 11));
    let x = g
        .push("stem", conv("stem", 2, 6, 3, 1, 1, false), &[0])
        .unwrap();
    let x = g.push("stem.bn", bn_op("stem.bn", 6), &[x]).unwrap();
    let x = g.push("stem.relu", Op::Relu, &[x]).unwrap();
    let y = g
        .push("b.conv", conv("b.conv", 6, 6, 3, 1, 1, true), &[x])
        .unwrap();
    let y = g.push("b.bn", bn_op("b.bn", 6), &[y]).unwrap();
    let y = g.push("b.add", Op::Add, &[y, x]).unwrap();
    let y = g.push("b.relu", Op::Relu, &[y]).unwrap();
    let max = Op::MaxPool {
        kernel: [2, 2],
        stride: [2, 2],
        padding: [0, 0],
    };
    let y = g.push("max", max, &[y]).unwrap();
    let y = g
        .push("down", conv("down", 6, 8, 3, 2, 1, true), &[y])
        .unwrap();
    let y = g.push("down.relu", Op::Relu, &[y]).unwrap();
    let avg = Op::AvgPool {
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
    };
    let a = g.push("avg", avg, &[y]).unwrap();
    let y = g
        .push("mix", conv("mix", 8, 8, 1, 1, 0, false), &[a])
        .unwrap();
    let y = g.push("gap", Op::GlobalAvgPool, &[y]).unwrap();
    let lin = |o: usize, i: usize, name: &str| Op::Linear {
        weight: format!("{name}.weight"),
        bias: Some(format!("{name}.bias")),
        in_features: i,
        out_features: o,
    };
    let h = g.push("head", lin(4, 8, "head"), &[y]).unwrap();
    let f = g.push("flat", Op::Flatten, &[a]).unwrap();
    let h2 = g.push("head2", lin(3, 72, "head2"), &[f]).unwrap();
    g.add_output("head", h).unwrap();
    g.add_output("head2", h2).unwrap();
    g
}

fn network(c: &CompactNet) -> Network<'_> {
    Network {
        input: c.input,
        layers: &c.layers,
        outputs: &c.outputs,
    }
}

/// The compact pass's outputs for `n` samples of `x`, output-major like `Forward::logits`.
fn compact_outputs(c: &CompactNet, x: &[f32], n: usize) -> Vec<Vec<f32>> {
    let plan = CompactPlan::new(network(c)).unwrap();
    let mut scratch = vec![f32::NAN; plan.scratch_len()];
    let mut outs = vec![Vec::new(); c.outputs.len()];
    let per = c.input.len();
    let mut seen = 0;
    for s in 0..n {
        plan.input_mut(&mut scratch)
            .unwrap()
            .copy_from_slice(&x[s * per..(s + 1) * per]);
        plan.run(&c.params, &mut scratch, &mut |node, act| {
            assert_eq!(act.len(), plan.shape(node).unwrap().len());
            seen += 1;
        })
        .unwrap();
        for (o, &node) in c.outputs.iter().enumerate() {
            outs[o].extend_from_slice(plan.node(node, &scratch).unwrap());
        }
    }
    assert_eq!(
        seen,
        n * (c.layers.len() + 1),
        "every node observed once per sample"
    );
    outs
}

fn assert_close(a: &[Vec<f32>], b: &[Vec<f32>], what: &str) {
    for (o, (x, y)) in a.iter().zip(b).enumerate() {
        let d = max_rel_diff(x, y);
        assert!(
            d <= COMPACT_FORWARD_REL,
            "{what}: output {o} differs by {d:e}"
        );
    }
}

#[test]
fn every_layer_kind_runs_as_the_graph_forward_pass_does() {
    let g = every_layer_cnn();
    let w = random_weights(&g, 11);
    let c = from_graph(&g, &w).unwrap();
    let n = 5;
    let x = random_input(&g, n, 12);
    for_each_path(|path| {
        let want = Forward::new(&g, &w).unwrap().logits(&x, n).unwrap();
        let got = compact_outputs(&c, &x, n);
        assert_close(&want, &got, &format!("{path:?}"));
    });
}

#[test]
fn the_cnn_pair_runs_as_pleas_eval_runs_it() {
    let images = data::load(&DataSpec::unlabelled(
        fashion_eval(),
        "x_test",
        Normalize::Symmetric,
    ))
    .unwrap();
    let n = 200;
    let x = &images.x[..n * 784];
    for m in ["fashion_cnn_split_m0_s8", "fashion_cnn_split_m1_s9"] {
        let path = fixtures().join(format!("fashion/cnn_split/{m}.safetensors"));
        let model = Model::load(&path, None).unwrap();
        let c = from_graph(&model.graph, &model.weights).unwrap();
        let plan = CompactPlan::new(network(&c)).unwrap();
        // A chain of layers: two activation slots.
        assert_eq!(plan.slots(), 2, "{m}");
        for_each_path(|path| {
            let want = Forward::new(&model.graph, &model.weights)
                .unwrap()
                .logits(x, n)
                .unwrap();
            assert_close(&want, &compact_outputs(&c, x, n), &format!("{m} {path:?}"));
        });
    }
}

#[test]
fn slots_are_reused_once_no_layer_reads_a_node() {
    let g = every_layer_cnn();
    let c = from_graph(&g, &random_weights(&g, 1)).unwrap();
    let plan = CompactPlan::new(network(&c)).unwrap();
    // The residual block keeps its input while computing its branch (3 slots); the flattened
    // map stays alive for the second head while the first head's branch runs (3 again).
    assert_eq!(plan.slots(), 3);
    let biggest = 6 * 11 * 11;
    let kernel = plan.scratch_len() - 3 * biggest;
    assert!(kernel > 0, "the convolutions need kernel scratch");
    assert_eq!(plan.params_len(), c.params.len());
}

fn chain(layers: &[Layer]) -> Result<CompactPlan<'_>, CompactError> {
    CompactPlan::new(Network {
        input: MapShape::new(1, 8, 8),
        layers,
        outputs: &[],
    })
}

const W3: Window = Window {
    kernel: [3, 3],
    stride: [1, 1],
    padding: [1, 1],
};

#[test]
fn bad_descriptions_are_typed_errors() {
    let relu = Layer {
        op: LayerOp::Relu,
        input: 0,
    };
    assert_eq!(chain(&[]), Err(CompactError::LayerCount { layers: 0 }));
    let many = vec![relu; MAX_LAYERS + 1];
    assert!(matches!(chain(&many), Err(CompactError::LayerCount { .. })));
    let ahead = [Layer {
        op: LayerOp::Relu,
        input: 1,
    }];
    assert_eq!(
        chain(&ahead),
        Err(CompactError::NodeOrder { layer: 0, node: 1 })
    );
    let wide = Window {
        kernel: [11, 11],
        ..W3
    };
    let too_wide = [Layer {
        op: LayerOp::MaxPool(wide),
        input: 0,
    }];
    assert!(matches!(
        chain(&too_wide),
        Err(CompactError::Window { layer: 0, .. })
    ));
    let pad = Window {
        padding: [3, 3],
        ..W3
    };
    let all_padding = [Layer {
        op: LayerOp::Conv2d {
            out_channels: 2,
            window: pad,
            bias: false,
        },
        input: 0,
    }];
    assert!(matches!(
        chain(&all_padding),
        Err(CompactError::Window { .. })
    ));
    let empty = [Layer {
        op: LayerOp::Linear {
            out_features: 0,
            bias: true,
        },
        input: 0,
    }];
    assert_eq!(chain(&empty), Err(CompactError::Size { layer: 0 }));
    let mismatch = [
        Layer {
            op: LayerOp::Conv2d {
                out_channels: 2,
                window: W3,
                bias: false,
            },
            input: 0,
        },
        Layer {
            op: LayerOp::Add { other: 0 },
            input: 1,
        },
    ];
    assert!(matches!(
        chain(&mismatch),
        Err(CompactError::AddShapes { layer: 1, .. })
    ));
    let relus = [relu];
    let out = CompactPlan::new(Network {
        input: MapShape::new(1, 8, 8),
        layers: &relus,
        outputs: &[2],
    });
    assert_eq!(out, Err(CompactError::UnknownOutput { output: 0, node: 2 }));
    let none = CompactPlan::new(Network {
        input: MapShape::new(0, 8, 8),
        layers: &relus,
        outputs: &[],
    });
    assert_eq!(none, Err(CompactError::EmptyInput));
}

#[test]
fn short_buffers_are_typed_errors() {
    let layers = [Layer {
        op: LayerOp::Conv2d {
            out_channels: 2,
            window: W3,
            bias: true,
        },
        input: 0,
    }];
    let plan = chain(&layers).unwrap();
    assert_eq!(plan.params_len(), 2 * 9 + 2);
    assert_eq!(plan.param_range(0), 0..20);
    let mut scratch = vec![0.0; plan.scratch_len()];
    let err = plan.run(&[0.0; 19], &mut scratch, &mut |_, _| {});
    assert_eq!(
        err,
        Err(CompactError::Buffer {
            what: "parameters",
            needed: 20,
            provided: 19
        })
    );
    let mut short = vec![0.0; plan.scratch_len() - 1];
    let err = plan.run(&[0.0; 20], &mut short, &mut |_, _| {});
    assert!(matches!(
        err,
        Err(CompactError::Buffer {
            what: "scratch",
            ..
        })
    ));
    assert!(plan.input_mut(&mut short).is_err());
    assert!(plan.node(1, &short).is_none());
    assert!(plan.node(2, &scratch).is_none());
    // A 1-channel 8 x 8 ramp through a 3 x 3 box filter with bias 1: interior values are
    // 9 x the centre value + 1.
    let mut params = vec![1.0; 20];
    params[9..18].fill(0.0);
    plan.input_mut(&mut scratch)
        .unwrap()
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = i as f32);
    plan.run(&params, &mut scratch, &mut |_, _| {}).unwrap();
    let y = plan.node(1, &scratch).unwrap();
    assert_eq!(y[9], 9.0 * 9.0 + 1.0);
    assert_eq!(y[64 + 9], 1.0, "the second channel has zero weights");
}
