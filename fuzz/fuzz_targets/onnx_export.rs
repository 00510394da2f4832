//! The ONNX writer's round trip on small random graphs with block-structured layers (an MLP or
//! a CNN with residual adds, batch-norms and one or two outputs; random blocks, each reading
//! random channel ranges): both block modes encode, decode back to the same message, name
//! the input and outputs as the graph does, hold exactly the model's weights (split: every
//! weight element once; dense: the dense layers'), define every value before it is read,
//! and cost exactly the model's multiply-adds (split) or the dense layers' (dense).
#![no_main]

use std::collections::HashSet;
use std::ops::Range;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pleas::export::onnx::{OnnxWriter, decode};
use pleas::export::{BlockMode, ExportSettings, ModelWriter};
use pleas::model::Model;
use pleas_core::graph::{Graph, NodeId, Op, Shape, WeightBlock, cost};
use pleas_tests::models::{bn_op, random_weights};
use pleas_tests::onnx::{dense_macs, floats, graph_macs};

/// Bytes as small choices; zeros once they run out.
struct Choices<'a>(&'a [u8]);

impl Choices<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    /// A value in `lo..=hi`.
    fn pick(&mut self, lo: usize, hi: usize) -> usize {
        lo + usize::from(self.byte()) % (hi - lo + 1)
    }
}

/// Random output blocks over `inputs` channels: 1-3 blocks of at least one row, each reading
/// a non-empty set of channels as maximal ranges.
fn blocks(c: &mut Choices<'_>, prefix: &str, inputs: usize, outputs: usize) -> Vec<WeightBlock> {
    let n = c.pick(1, 3).min(outputs);
    let mut rows = vec![1; n];
    for _ in n..outputs {
        let k = c.pick(0, n - 1);
        rows[k] += 1;
    }
    rows.into_iter()
        .enumerate()
        .map(|(k, rows)| {
            let mask = u16::from(c.byte()) | (u16::from(c.byte()) << 8);
            let mut ranges: Vec<Range<usize>> = Vec::new();
            for ch in (0..inputs).filter(|&ch| mask >> (ch % 16) & 1 == 1) {
                match ranges.last_mut() {
                    Some(r) if r.end == ch => r.end += 1,
                    _ => ranges.push(ch..ch + 1),
                }
            }
            if ranges.is_empty() {
                ranges.push(0..inputs);
            }
            WeightBlock {
                weight: format!("{prefix}.blocks.{k}.weight"),
                bias: (c.byte() & 1 == 1).then(|| format!("{prefix}.blocks.{k}.bias")),
                rows,
                inputs: ranges,
            }
        })
        .collect()
}

fn layer(c: &mut Choices<'_>, g: &mut Graph, x: NodeId, name: &str, conv: bool) -> Option<NodeId> {
    let inputs = g.node(x).shape.c;
    let outputs = c.pick(1, 8);
    let b = blocks(c, name, inputs, outputs);
    let op = if conv {
        let k = c.pick(0, 1) * 2 + 1;
        Op::BlockConv2d {
            in_channels: inputs,
            out_channels: outputs,
            kernel: [k, k],
            stride: [1, 1],
            padding: [k / 2, k / 2],
            blocks: b,
        }
    } else {
        Op::BlockLinear {
            in_features: inputs,
            out_features: outputs,
            blocks: b,
        }
    };
    g.push(name, op, &[x]).ok()
}

fn graph(c: &mut Choices<'_>) -> Option<Graph> {
    let conv = c.byte() & 1 == 1;
    let channels = c.pick(1, 4);
    let mut g = Graph::new(if conv {
        let side = c.pick(2, 5);
        Shape::new(channels, side, side)
    } else {
        Shape::flat(channels)
    });
    let mut x = 0;
    for i in 0..c.pick(1, 3) {
        let name = format!("l{i}");
        let y = layer(c, &mut g, x, &name, conv)?;
        let mut z = y;
        if c.byte() & 1 == 1 {
            let width = g.node(y).shape.c;
            z = g.push(format!("{name}.bn"), bn_op(&format!("{name}.bn"), width), &[z]).ok()?;
        }
        z = g.push(format!("{name}.relu"), Op::Relu, &[z]).ok()?;
        if c.byte() & 1 == 1 && g.node(x).shape == g.node(z).shape && x != 0 {
            z = g.push(format!("{name}.add"), Op::Add, &[z, x]).ok()?;
        }
        x = z;
    }
    let features = if conv {
        g.push("pool", Op::GlobalAvgPool, &[x]).ok()?
    } else {
        x
    };
    let head = layer(c, &mut g, features, "head", false)?;
    g.add_output("head", head).ok()?;
    if c.byte() & 1 == 1 {
        g.add_output("features", features).ok()?;
    }
    Some(g)
}

fn check(model: &Model, blocks: BlockMode) {
    let writer = OnnxWriter::new(&ExportSettings::new(blocks, 17)).expect("opset 17");
    let proto = writer.model_proto(model).expect("a checked model exports");
    let bytes = writer.encode(model).expect("small models encode");
    let back = decode(&bytes).expect("the writer's bytes decode");
    assert_eq!(back, proto);
    let g = back.graph.as_ref().expect("a graph");
    assert_eq!(g.input.len(), 1);
    let outs: Vec<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    let names: Vec<&str> = model.graph.outputs().iter().map(|o| o.name.as_str()).collect();
    assert_eq!(outs, names);
    let mut defined: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(defined.len(), g.initializer.len(), "initialiser names unique");
    defined.insert(g.input[0].name.as_str());
    for n in &g.node {
        for i in &n.input {
            assert!(defined.contains(i.as_str()), "`{i}` read before it is defined");
        }
        for o in &n.output {
            assert!(defined.insert(o.as_str()), "`{o}` defined twice");
        }
    }
    for o in &outs {
        assert!(defined.contains(o), "output `{o}` never computed");
    }
    let weights: usize = model.weights.values().map(|t| t.len()).sum();
    let stored: usize = g
        .initializer
        .iter()
        .filter(|t| t.data_type == 1)
        .map(|t| floats(t).len())
        .sum();
    let macs = graph_macs(&back).expect("shapes of every Conv and Gemm");
    match blocks {
        BlockMode::Split => {
            assert_eq!(stored, weights);
            assert_eq!(macs, cost(&model.graph).macs);
        }
        BlockMode::Dense => {
            assert!(stored >= weights);
            assert_eq!(macs, dense_macs(&model.graph));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut c = Choices(data);
    let seed = u64::from(c.byte());
    let Some(graph) = graph(&mut c) else {
        return;
    };
    let weights = random_weights(&graph, seed);
    let model = Model::from_parts(
        Path::new("fuzz.safetensors"),
        "fuzz".into(),
        graph,
        weights,
        Default::default(),
    )
    .expect("random weights fit their graph");
    check(&model, BlockMode::Split);
    check(&model, BlockMode::Dense);
});
