//! The activation observer: every node is seen once per batch, in graph order, with its shape,
//! and the values it sees are the ones the network computes (even where later ops work in
//! place).

use pleas::io::arch::resnet::{CifarSpec, build_cifar};
use pleas_core::forward::{Activations, Forward, NoObserver, Observer};
use pleas_core::graph::{NodeId, Op};
use pleas_tests::models::{random_input, random_weights};

#[derive(Default)]
struct Record {
    seen: Vec<(NodeId, usize, usize)>,
    copies: Vec<Vec<f32>>,
}

impl Observer for Record {
    fn observe(&mut self, node: NodeId, a: Activations<'_>) {
        assert_eq!(a.data.len(), a.batch * a.shape.len());
        self.seen.push((node, a.batch, a.shape.len()));
        self.copies.push(a.data.to_vec());
    }
}

#[test]
fn observer_sees_every_node_with_the_computed_values() {
    let spec = CifarSpec::resnet20(1, 1, 10);
    let g = build_cifar(&spec, spec.default_input()).unwrap();
    let w = random_weights(&g, 4);
    let n = 3;
    let x = random_input(&g, n, 8);
    let mut f = Forward::new(&g, &w).unwrap();
    let mut rec = Record::default();
    let out = f.run(&x, n, &mut rec).unwrap();
    for batch in 0..2 {
        // Two batches: the second reuses recycled buffers and must see the same values.
        let mut again = Record::default();
        let out2 = f.run(&x, n, &mut again).unwrap();
        assert_eq!(out, out2, "batch {batch}");
        assert_eq!(rec.copies, again.copies);
    }
    assert_eq!(rec.seen.len(), g.nodes().len());
    for (i, &(node, batch, len)) in rec.seen.iter().enumerate() {
        assert_eq!(node, i);
        assert_eq!(batch, n);
        assert_eq!(len, g.node(node).shape.len());
    }
    assert_eq!(rec.copies[0], x);
    let head = g.outputs()[0].node;
    assert_eq!(rec.copies[head], out[0]);
    for (id, node) in g.nodes().iter().enumerate() {
        let seen = &rec.copies[id];
        match node.op {
            Op::Relu => {
                // ReLU works in place on its input's buffer: the input's observed values must
                // be the pre-activation, and the ReLU's their positive part.
                let before = &rec.copies[node.inputs[0]];
                assert!(
                    before.iter().any(|&v| v < 0.0),
                    "{}: no negative input",
                    node.name
                );
                let want: Vec<f32> = before.iter().map(|v| v.max(0.0)).collect();
                assert_eq!(seen, &want, "{}", node.name);
            }
            Op::Add => {
                let (a, b) = (&rec.copies[node.inputs[0]], &rec.copies[node.inputs[1]]);
                let want: Vec<f32> = a.iter().zip(b).map(|(x, y)| x + y).collect();
                assert_eq!(seen, &want, "{}", node.name);
            }
            _ => {}
        }
    }
    // Running without an observer gives the same logits.
    assert_eq!(f.run(&x, n, &mut NoObserver).unwrap(), out);
}

#[test]
fn wrong_input_length_is_an_error_not_a_panic() {
    let spec = CifarSpec::resnet20(1, 1, 10);
    let g = build_cifar(&spec, spec.default_input()).unwrap();
    let w = random_weights(&g, 4);
    let mut f = Forward::new(&g, &w).unwrap();
    let e = f.logits(&[0.0; 100], 1).unwrap_err();
    assert!(e.to_string().contains("784"), "{e}");
    let mut missing = w.clone();
    missing.remove("layers.2.bn2.bias");
    let e = Forward::new(&g, &missing).err().unwrap();
    assert!(e.to_string().contains("layers.2.bn2.bias"), "{e}");
}
