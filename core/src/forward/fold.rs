//! Folding eval-mode batch-norm into the conv or linear layer before it.
//!
//! A batch-norm node whose input is a conv or linear node read by nothing else (and not a graph
//! output) is removed; the layer's weight rows are scaled by `s = gamma / sqrt(var + eps)` and
//! its bias becomes `(b - mean) * s + beta` (`b = 0` if it had none). The folded graph computes
//! the same function up to rounding. Arithmetic is in f64, rounded once to f32.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::graph::{Graph, GraphError, NodeId, Op, Tensor, Weights};

/// A graph with its batch-norms folded, its weights, and where each original node went.
#[derive(Debug, Clone)]
pub struct Folded {
    /// The folded graph.
    pub graph: Graph,
    /// Its weights (folded layers rewritten, folded batch-norm tensors removed).
    pub weights: Weights,
    /// For every node of the original graph, the node of the folded graph that computes the
    /// same activations (a folded batch-norm maps to its layer).
    pub node_map: Vec<NodeId>,
}

/// Name of the bias a folded layer gets when it had none: `x.weight` -> `x.bias`.
fn bias_name(weight: &str) -> String {
    match weight.strip_suffix(".weight") {
        Some(stem) => format!("{stem}.bias"),
        None => format!("{weight}.folded_bias"),
    }
}

/// Folds every foldable batch-norm of `graph` (see the module docs).
pub fn fold_batchnorm(graph: &Graph, weights: &Weights) -> Result<Folded, GraphError> {
    graph.check_weights(weights)?;
    let nodes = graph.nodes();
    let consumers = graph.consumers();
    let is_output = |id: NodeId| graph.outputs().iter().any(|o| o.node == id);
    // fold_into[layer] = the batch-norm folded into it.
    let mut fold_into: Vec<Option<NodeId>> = alloc::vec![None; nodes.len()];
    let mut folded_bn = alloc::vec![false; nodes.len()];
    for (id, node) in nodes.iter().enumerate() {
        if let Op::BatchNorm { .. } = node.op {
            let src = node.inputs[0];
            let layer = matches!(nodes[src].op, Op::Conv2d { .. } | Op::Linear { .. });
            if layer && consumers[src].len() == 1 && !is_output(src) {
                fold_into[src] = Some(id);
                folded_bn[id] = true;
            }
        }
    }
    let mut out_w = weights.clone();
    let mut g = Graph::new(graph.input_shape());
    let mut map: Vec<NodeId> = alloc::vec![0; nodes.len()];
    for (id, node) in nodes.iter().enumerate().skip(1) {
        if folded_bn[id] {
            map[id] = map[node.inputs[0]];
            continue;
        }
        let inputs: Vec<NodeId> = node.inputs.iter().map(|&i| map[i]).collect();
        let mut op = node.op.clone();
        if let Some(bn) = fold_into[id] {
            let Op::BatchNorm {
                weight: gamma,
                bias: beta,
                running_mean,
                running_var,
                channels,
                eps,
            } = &nodes[bn].op
            else {
                unreachable!("only batch-norm nodes are folded")
            };
            let (w_name, b_name) = match &mut op {
                Op::Conv2d { weight, bias, .. } | Op::Linear { weight, bias, .. } => {
                    let b = bias.get_or_insert_with(|| bias_name(weight)).clone();
                    (weight.clone(), b)
                }
                _ => unreachable!("only conv and linear layers take a fold"),
            };
            let c = *channels;
            let old_bias: Vec<f32> = match weights.get(&b_name) {
                Some(t) if t.len() == c => t.data().to_vec(),
                _ => alloc::vec![0.0; c],
            };
            let (gm, bt, mu, var) = (
                weights[gamma].data(),
                weights[beta].data(),
                weights[running_mean].data(),
                weights[running_var].data(),
            );
            let w = &weights[&w_name];
            let row = w.len() / c.max(1);
            let mut new_w = w.data().to_vec();
            let mut new_b = alloc::vec![0.0f32; c];
            for o in 0..c {
                let s = gm[o] as f64 / libm::sqrt(var[o] as f64 + *eps as f64);
                for v in &mut new_w[o * row..(o + 1) * row] {
                    *v = (*v as f64 * s) as f32;
                }
                new_b[o] = ((old_bias[o] as f64 - mu[o] as f64) * s + bt[o] as f64) as f32;
            }
            let shape = w.shape().to_vec();
            out_w.insert(
                w_name,
                Tensor::new(shape, new_w).expect("same shape as the original"),
            );
            out_w.insert(
                b_name,
                Tensor::new(alloc::vec![c], new_b).expect("one value per channel"),
            );
            for t in [gamma, beta, running_mean, running_var] {
                out_w.remove(t);
            }
        }
        map[id] = g.push(node.name.clone(), op, &inputs)?;
    }
    for o in graph.outputs() {
        g.add_output(o.name.clone(), map[o.node])?;
    }
    Ok(Folded {
        graph: g,
        weights: out_w,
        node_map: map,
    })
}
