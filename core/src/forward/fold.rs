//! Folding eval-mode batch-norm into the conv or linear layer before it.
//!
//! A batch-norm node whose input is a conv or linear node read by nothing else (and not a graph
//! output) is removed; the layer's weight rows are scaled by `s = gamma / sqrt(var + eps)` and
//! its bias becomes `(b - mean) * s + beta` (`b = 0` if it had none). The folded graph computes
//! the same function up to rounding. Arithmetic is in f64, rounded once to f32.
//!
//! Block-structured layers ([`Op::BlockConv2d`], [`Op::BlockLinear`]) fold the same way, block
//! by block: block `k`'s weight rows and bias take the batch-norm channels its rows produce.
//!
//! A layer without a bias gets one named after its weight (`x.weight` -> `x.bias`, else
//! `{weight}.folded_bias`); should that name be taken by another tensor, `.folded` is appended
//! until it is free.

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

/// Name of the bias a folded layer gets when it had none: `x.weight` -> `x.bias`, made unique
/// against `taken`.
fn bias_name(weight: &str, taken: &Weights) -> String {
    let mut name = match weight.strip_suffix(".weight") {
        Some(stem) => format!("{stem}.bias"),
        None => format!("{weight}.folded_bias"),
    };
    while taken.contains_key(&name) {
        name.push_str(".folded");
    }
    name
}

/// Eval-mode batch-norm as per-channel `s` and `mean`, `beta` (f64).
struct BnFold<'w> {
    scale: Vec<f64>,
    mean: &'w [f32],
    beta: &'w [f32],
}

/// Folds the batch-norm channels `r0 .. r0 + rows` into one layer block: `weight`'s rows are
/// scaled, its bias (created if `bias` is `None`) becomes `(b - mean) * s + beta`.
fn fold_rows(
    weights: &Weights,
    out_w: &mut Weights,
    weight: &str,
    bias: &mut Option<String>,
    bn: &BnFold<'_>,
    r0: usize,
    rows: usize,
) {
    let old_bias: Option<&[f32]> = bias
        .as_ref()
        .and_then(|b| weights.get(b))
        .map(Tensor::data)
        .filter(|d| d.len() == rows);
    let b_name = bias.get_or_insert_with(|| bias_name(weight, out_w)).clone();
    let w = &weights[weight];
    let row = w.len() / rows.max(1);
    let mut new_w = w.data().to_vec();
    let mut new_b = alloc::vec![0.0f32; rows];
    for o in 0..rows {
        let c = r0 + o;
        let s = bn.scale[c];
        for v in &mut new_w[o * row..(o + 1) * row] {
            *v = (*v as f64 * s) as f32;
        }
        let b = old_bias.map_or(0.0, |b| b[o] as f64);
        new_b[o] = ((b - bn.mean[c] as f64) * s + bn.beta[c] as f64) as f32;
    }
    let shape = w.shape().to_vec();
    out_w.insert(
        String::from(weight),
        Tensor::new(shape, new_w).expect("same shape as the original"),
    );
    out_w.insert(
        b_name,
        Tensor::new(alloc::vec![rows], new_b).expect("one value per row"),
    );
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
            let layer = matches!(
                nodes[src].op,
                Op::Conv2d { .. }
                    | Op::Linear { .. }
                    | Op::BlockConv2d { .. }
                    | Op::BlockLinear { .. }
            );
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
            let (gm, var) = (weights[gamma].data(), weights[running_var].data());
            let fold = BnFold {
                scale: (0..*channels)
                    .map(|o| gm[o] as f64 / libm::sqrt(var[o] as f64 + *eps as f64))
                    .collect(),
                mean: weights[running_mean].data(),
                beta: weights[beta].data(),
            };
            match &mut op {
                Op::Conv2d { weight, bias, .. } | Op::Linear { weight, bias, .. } => {
                    fold_rows(weights, &mut out_w, weight, bias, &fold, 0, *channels);
                }
                Op::BlockConv2d { blocks, .. } | Op::BlockLinear { blocks, .. } => {
                    let mut r0 = 0;
                    for b in blocks {
                        fold_rows(
                            weights,
                            &mut out_w,
                            &b.weight,
                            &mut b.bias,
                            &fold,
                            r0,
                            b.rows,
                        );
                        r0 += b.rows;
                    }
                }
                _ => unreachable!("only conv and linear layers take a fold"),
            }
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
