//! The TOML architecture file with block-structured layers, its writer (`to_toml` then `parse`
//! gives the same graph: MLP, ResNet-20, torchvision ResNet-18 and graphs with block layers),
//! and models that carry their architecture in the `pleas.architecture` metadata key (`save` then
//! `load` gives the same graph, weights and logits).

// Blocks read lists of channel ranges; a list of one range is the common case, not a mistake.
#![allow(clippy::single_range_in_vec_init)]

use std::path::{Path, PathBuf};

use pleas::Error;
use pleas::error::chain;
use pleas::io::arch::ARCHITECTURE_KEY;
use pleas::io::arch::mlp;
use pleas::io::arch::resnet::{CifarSpec, TorchvisionSpec, build_cifar, build_torchvision};
use pleas::io::arch::toml_file::{parse, to_toml};
use pleas::io::safetensors::{load_weights, save_weights};
use pleas::model::Model;
use pleas_core::forward::Forward;
use pleas_core::graph::{Graph, Op, Shape, Tensor, Weights};
use pleas_tests::models::{
    block_conv_op, block_linear_op, block_resnet, bn_op, random_input, random_weights, weight_block,
};

fn tmp(name: &str) -> PathBuf {
    let dir = pleas_tests::scratch::dir("arch-file");
    dir.join(name)
}

/// Zero tensors of every shape `graph` reads (the parser only looks at shapes).
fn shapes_of(graph: &Graph) -> Weights {
    graph
        .param_specs()
        .into_iter()
        .map(|(_, name, shape)| (name.to_string(), Tensor::zeros(shape)))
        .collect()
}

fn round_trip(graph: &Graph, weights: &Weights) -> String {
    let text = to_toml(graph).unwrap();
    let back = parse(&text, weights).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(&back, graph, "{text}");
    text
}

#[test]
fn family_graphs_round_trip_through_the_writer() {
    for bias in [true, false] {
        let g = mlp::build(784, &[64, 32], 10, bias).unwrap();
        round_trip(&g, &shapes_of(&g));
    }
    let spec = CifarSpec::resnet20(1, 1, 10);
    let g = build_cifar(&spec, spec.default_input()).unwrap();
    let text = round_trip(&g, &shapes_of(&g));
    assert!(
        text.starts_with("input = [1, 28, 28]\noutputs = [\"head\"]\n"),
        "{text}"
    );
    let spec = TorchvisionSpec::standard(18, 1000).unwrap();
    let g = build_torchvision(&spec, spec.default_input()).unwrap();
    round_trip(&g, &shapes_of(&g));
}

/// Every op the format knows, odd names, a tensor prefix other than the node name, asymmetric
/// windows, a non-default epsilon, block layers with and without biases, two outputs.
fn every_op() -> Graph {
    let mut g = Graph::new(Shape::new(5, 11, 10));
    let c = g
        .push(
            "stem \"conv\" \\ ü",
            Op::Conv2d {
                weight: "features.0.weight".into(),
                bias: Some("features.0.bias".into()),
                in_channels: 5,
                out_channels: 6,
                kernel: [3, 2],
                stride: [2, 1],
                padding: [1, 0],
            },
            &[0],
        )
        .unwrap();
    let mut norm = bn_op("features.1", 6);
    if let Op::BatchNorm { eps, .. } = &mut norm {
        *eps = 0.1 + 1e-9;
    }
    let b = g.push("bn", norm, &[c]).unwrap();
    let r = g.push("relu", Op::Relu, &[b]).unwrap();
    let blocks = vec![
        weight_block("merged", 0, 4, &[0..2, 3..6], true),
        weight_block("merged", 1, 2, &[0..6], false),
    ];
    let mut conv = block_conv_op(6, 3, 2, 1, blocks);
    if let Op::BlockConv2d {
        stride, padding, ..
    } = &mut conv
    {
        *stride = [1, 2];
        *padding = [0, 1];
    }
    let m = g.push("merged", conv, &[r]).unwrap();
    let a = g.push("add", Op::Add, &[m, m]).unwrap();
    let mp = g
        .push(
            "mp",
            Op::MaxPool {
                kernel: [3, 2],
                stride: [1, 2],
                padding: [1, 0],
            },
            &[a],
        )
        .unwrap();
    let ap = g
        .push(
            "ap",
            Op::AvgPool {
                kernel: [2, 2],
                stride: [1, 1],
                padding: [1, 1],
            },
            &[mp],
        )
        .unwrap();
    let f = g.push("flat", Op::Flatten, &[ap]).unwrap();
    let features = g.node(f).shape.c;
    let head = block_linear_op(
        features,
        vec![
            weight_block("head", 0, 3, &[0..7, 20..features], true),
            weight_block("head", 1, 4, &[5..9], false),
        ],
    );
    let h = g.push("head", head, &[f]).unwrap();
    let gp = g.push("gap", Op::GlobalAvgPool, &[ap]).unwrap();
    let l = g
        .push(
            "aux",
            Op::Linear {
                weight: "aux.weight".into(),
                bias: None,
                in_features: 6,
                out_features: 2,
            },
            &[gp],
        )
        .unwrap();
    g.add_output("head", h).unwrap();
    g.add_output("task b", l).unwrap();
    g
}

#[test]
fn graphs_with_block_layers_round_trip_through_the_writer() {
    let g = every_op();
    let mut w = shapes_of(&g);
    // A tensor named like a bias the graph does not read must not turn into one.
    w.insert("merged.blocks.1.bias".into(), Tensor::zeros(vec![2]));
    w.insert("aux.bias".into(), Tensor::zeros(vec![2]));
    let text = round_trip(&g, &w);
    assert!(
        text.contains("{ params = \"merged.blocks.0\", inputs = [[0, 2], [3, 6]], bias = true }"),
        "{text}"
    );
    // An output named otherwise than its node is a table.
    assert!(
        text.contains("outputs = [\"head\", { name = \"task b\", node = \"aux\" }]"),
        "{text}"
    );
    let g = block_resnet();
    round_trip(&g, &shapes_of(&g));
    // A graph re-shaped to another input keeps its shapes through the file.
    let big = g.with_input_shape(Shape::new(3, 16, 12)).unwrap();
    round_trip(&big, &shapes_of(&big));
}

#[test]
fn the_writer_rejects_graphs_the_format_cannot_express() {
    let mut g = Graph::new(Shape::flat(4));
    let l = g
        .push(
            "fc",
            Op::Linear {
                weight: "fc.w".into(),
                bias: None,
                in_features: 4,
                out_features: 2,
            },
            &[0],
        )
        .unwrap();
    g.add_output("fc", l).unwrap();
    let e = to_toml(&g).unwrap_err();
    assert!(e.contains("`fc.w`") && e.contains("{prefix}.weight"), "{e}");

    let mut g = Graph::new(Shape::flat(4));
    let blocks = vec![weight_block("fc", 0, 2, &[0..4], false)];
    let mut op = block_linear_op(4, blocks);
    if let Op::BlockLinear { blocks, .. } = &mut op {
        blocks[0].bias = Some("fc.bias".into());
    }
    let l = g.push("fc", op, &[0]).unwrap();
    g.add_output("logits", l).unwrap();
    let e = to_toml(&g).unwrap_err();
    assert!(
        e.contains("`fc.bias`") && e.contains("fc.blocks.0.bias"),
        "{e}"
    );

    let mut g = Graph::new(Shape::new(2, 3, 3));
    let mut op = bn_op("bn", 2);
    if let Op::BatchNorm { running_var, .. } = &mut op {
        *running_var = "stats.var".into();
    }
    g.push("bn", op, &[0]).unwrap();
    let e = to_toml(&g).unwrap_err();
    assert!(
        e.contains("`stats.var`") && e.contains("bn.running_var"),
        "{e}"
    );
}

/// The error of parsing one block-conv node with `blocks` over a 4-channel input, against
/// tensors `m.blocks.0.weight` (`[3, 3, 3, 3]`), `m.blocks.1.weight` (`[2, 4, 1, 1]`) and
/// `m.blocks.0.bias`.
fn block_parse_error(blocks: &str) -> String {
    let mut w = Weights::new();
    w.insert("m.blocks.0.weight".into(), Tensor::zeros(vec![3, 3, 3, 3]));
    w.insert("m.blocks.0.bias".into(), Tensor::zeros(vec![3]));
    w.insert("m.blocks.1.weight".into(), Tensor::zeros(vec![2, 4, 1, 1]));
    w.insert("lin.weight".into(), Tensor::zeros(vec![2, 3]));
    let text = format!(
        "input = [4, 6, 6]\n[[node]]\nname = \"merged\"\nop = \"block_conv2d\"\npadding = 1\n{blocks}\n"
    );
    // The whole cause chain, as the CLI prints it.
    let e = chain(&parse(&text, &w).unwrap_err());
    assert!(e.contains("merged"), "the error names the node: {e}");
    e
}

#[test]
fn the_parser_reads_block_layers_and_rejects_bad_ones() {
    let mut w = Weights::new();
    w.insert("m.blocks.0.weight".into(), Tensor::zeros(vec![3, 3, 3, 3]));
    w.insert("m.blocks.0.bias".into(), Tensor::zeros(vec![3]));
    w.insert("m.blocks.1.weight".into(), Tensor::zeros(vec![2, 4, 3, 3]));
    w.insert("fc.blocks.0.weight".into(), Tensor::zeros(vec![2, 5]));
    let text = r#"
input = [4, 6, 6]
[[node]]
name = "merged"
op = "block_conv2d"
stride = [1, 2]
padding = 1
blocks = [
  { params = "m.blocks.0", inputs = [[0, 1], [2, 4]] },
  { params = "m.blocks.1", inputs = [[0, 4]] },
]
[[node]]
name = "pool"
op = "global_avgpool"
[[node]]
name = "fc"
op = "block_linear"
blocks = [{ params = "fc.blocks.0", inputs = [[0, 5]], bias = false }]
"#;
    let g = parse(text, &w).unwrap();
    let merged = g.node(g.find("merged").unwrap());
    assert_eq!(merged.shape, Shape::new(5, 6, 3));
    let Op::BlockConv2d {
        in_channels,
        out_channels,
        kernel,
        blocks,
        ..
    } = &merged.op
    else {
        panic!("{:?}", merged.op)
    };
    assert_eq!((*in_channels, *out_channels, *kernel), (4, 5, [3, 3]));
    assert_eq!(blocks[0].bias.as_deref(), Some("m.blocks.0.bias"));
    assert_eq!(blocks[1].bias, None);
    assert_eq!(blocks[0].inputs, vec![0..1, 2..4]);
    assert_eq!(g.outputs()[0].name, "fc");
    assert_eq!(g.node(g.outputs()[0].node).shape, Shape::flat(2));

    for (blocks, says) in [
        ("", "missing `blocks"),
        ("blocks = []", "`blocks` is empty"),
        ("blocks = [1]", "block 0 is not a table"),
        (
            "blocks = [{ inputs = [[0, 3]] }]",
            "block 0 has no `params`",
        ),
        (
            "blocks = [{ params = \"m.blocks.0\", inputs = [[0, -3]] }]",
            "[start, end] pairs",
        ),
        (
            "blocks = [{ params = \"m.blocks.0\", inputs = [0, 3] }]",
            "[start, end] pairs",
        ),
        (
            "blocks = [{ params = \"m.blocks.9\", inputs = [[0, 3]] }]",
            "`m.blocks.9.weight` is missing",
        ),
        (
            "blocks = [{ params = \"lin\", inputs = [[0, 3]] }]",
            "not 4-D",
        ),
        (
            "blocks = [{ params = \"m.blocks.0\", inputs = [[0, 4]] }]",
            "ranges hold 4 channels",
        ),
        (
            "blocks = [{ params = \"m.blocks.0\", inputs = [[0, 3]] }, { params = \"m.blocks.1\", inputs = [[0, 4]] }]",
            "kernel 1x1 differs",
        ),
        (
            "blocks = [{ params = \"m.blocks.0\", inputs = [[0, 3]], bias = 1 }]",
            "`bias` must be true or false",
        ),
        (
            "blocks = [{ params = \"m.blocks.0\", inputs = [[2, 5]] }]",
            "input range 2..5",
        ),
        (
            "blocks = [{ params = \"m.blocks.0\", inputs = [[2, 3], [0, 2]] }]",
            "input range 0..2",
        ),
    ] {
        let e = block_parse_error(blocks);
        assert!(e.contains(says), "`{blocks}`: {e}");
    }
}

/// A model of `graph` with random weights and per-head classes in its metadata.
fn model(graph: Graph, seed: u64) -> Model {
    let w = random_weights(&graph, seed);
    let mut meta = pleas::io::safetensors::Metadata::new();
    meta.insert("classes.head".into(), "[3, 1, 4, 0, 2]".into());
    meta.insert("task".into(), "merged".into());
    Model::from_parts(Path::new("memory"), "test".into(), graph, w, meta).unwrap()
}

fn logits(m: &Model, n: usize) -> Vec<Vec<f32>> {
    let x = random_input(&m.graph, n, 99);
    Forward::new(&m.graph, &m.weights)
        .unwrap()
        .logits(&x, n)
        .unwrap()
}

#[test]
fn saved_block_models_load_with_the_same_graph_and_logits() {
    let m = model(block_resnet(), 5);
    let path = tmp("block_resnet.safetensors");
    m.save(&path).unwrap();
    let back = Model::load(&path, None).unwrap();
    assert_eq!(back.arch, ARCHITECTURE_KEY);
    assert_eq!(back.graph, m.graph);
    assert_eq!(back.weights, m.weights);
    assert_eq!(back.heads, m.heads);
    assert_eq!(back.metadata["task"], "merged");
    // The same weights through the same graph: the same computation.
    assert_eq!(logits(&back, 3), logits(&m, 3));
    // Saving the loaded model again writes the same file.
    let again = tmp("block_resnet_again.safetensors");
    back.save(&again).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&again).unwrap()
    );
}

#[test]
fn the_embedded_architecture_comes_before_families_and_after_an_arch_file() {
    // An MLP's tensors with an embedded graph that has no ReLU between the layers.
    let mut g = Graph::new(Shape::flat(6));
    let a = g
        .push(
            "layers.0",
            Op::Linear {
                weight: "layers.0.weight".into(),
                bias: Some("layers.0.bias".into()),
                in_features: 6,
                out_features: 4,
            },
            &[0],
        )
        .unwrap();
    let h = g
        .push(
            "head",
            Op::Linear {
                weight: "head.weight".into(),
                bias: Some("head.bias".into()),
                in_features: 4,
                out_features: 5,
            },
            &[a],
        )
        .unwrap();
    g.add_output("head", h).unwrap();
    let m = model(g.clone(), 7);
    let path = tmp("linear_mlp.safetensors");
    m.save(&path).unwrap();
    let loaded = Model::load(&path, None).unwrap();
    assert_eq!(loaded.graph, g, "the metadata wins over MLP recognition");
    // An --arch file still wins over the metadata.
    let family = mlp::build(6, &[4], 5, true).unwrap();
    let arch = tmp("mlp.toml");
    std::fs::write(&arch, to_toml(&family).unwrap()).unwrap();
    let loaded = Model::load(&path, Some(&arch)).unwrap();
    assert_eq!(loaded.arch, "toml");
    assert_eq!(loaded.graph, family);
}

#[test]
fn a_bad_embedded_architecture_names_the_file_and_the_key() {
    let m = model(block_resnet(), 9);
    let path = tmp("bad_arch.safetensors");
    let mut meta = m.metadata.clone();
    for (text, says) in [
        ("input = [3, 9, 9", "TOML"),
        (
            "input = [3, 9, 9]\n[[node]]\nname = \"x\"\nop = \"conv9d\"\n",
            "unknown op `conv9d`",
        ),
    ] {
        meta.insert(ARCHITECTURE_KEY.into(), text.into());
        save_weights(&path, &m.weights, &meta).unwrap();
        let e = Model::load(&path, None).unwrap_err();
        assert!(
            matches!(e, Error::MetadataArchitecture { ref key, .. } if key == ARCHITECTURE_KEY),
            "{e:?}"
        );
        let msg = chain(&e);
        assert!(
            msg.contains("bad_arch.safetensors") && msg.contains(ARCHITECTURE_KEY),
            "{msg}"
        );
        if says != "TOML" {
            assert!(msg.contains(says), "{msg}");
        }
    }
    // A graph the format cannot express is not saved at all.
    let mut g = Graph::new(Shape::flat(3));
    let l = g
        .push(
            "fc",
            Op::Linear {
                weight: "fc_w".into(),
                bias: None,
                in_features: 3,
                out_features: 5,
            },
            &[0],
        )
        .unwrap();
    g.add_output("head", l).unwrap();
    let unsaved = tmp("unsaved.safetensors");
    let e = model(g, 3).save(&unsaved).unwrap_err();
    assert!(e.to_string().contains(ARCHITECTURE_KEY), "{e}");
    assert!(!unsaved.exists());
    // The metadata a save writes is the TOML text itself.
    let ok = tmp("ok.safetensors");
    m.save(&ok).unwrap();
    let (_, meta) = load_weights(&ok).unwrap();
    assert_eq!(meta[ARCHITECTURE_KEY], to_toml(&m.graph).unwrap());
}
