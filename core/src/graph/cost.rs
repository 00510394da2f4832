//! FLOP (multiply-add) and parameter accounting at the graph's input size.
//!
//! FLOPs here are the multiply-adds of conv and linear layers only (ALGORITHM.md section 3
//! budgets count exactly these); batch-norm, ReLU, pooling and adds are not counted. Parameters
//! are the learnable tensors (conv and linear weights and biases, batch-norm scale and shift);
//! batch-norm running statistics are buffers, counted separately.

use super::{Graph, NodeId, Op};

/// Cost totals of a graph at its input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    /// Multiply-adds of conv and linear layers per sample.
    pub macs: u64,
    /// Learnable parameters.
    pub params: u64,
    /// Non-learnable buffers (batch-norm running mean and variance).
    pub buffers: u64,
}

/// Multiply-adds per sample of node `id` (0 for anything but conv and linear).
pub fn node_macs(graph: &Graph, id: NodeId) -> u64 {
    let node = graph.node(id);
    match &node.op {
        Op::Linear {
            in_features,
            out_features,
            ..
        } => (*in_features as u64) * (*out_features as u64),
        Op::Conv2d {
            in_channels,
            kernel,
            ..
        } => {
            let s = node.shape;
            (s.c as u64)
                * (s.h as u64)
                * (s.w as u64)
                * (*in_channels as u64)
                * (kernel[0] as u64)
                * (kernel[1] as u64)
        }
        _ => 0,
    }
}

/// Multiply-adds, parameters and buffers of the whole graph.
pub fn cost(graph: &Graph) -> Cost {
    let mut c = Cost::default();
    for (id, node) in graph.nodes().iter().enumerate() {
        c.macs += node_macs(graph, id);
        match &node.op {
            Op::BatchNorm { channels, .. } => {
                c.params += 2 * *channels as u64;
                c.buffers += 2 * *channels as u64;
            }
            op => {
                for (_, shape) in op.params() {
                    c.params += shape.iter().map(|&d| d as u64).product::<u64>();
                }
            }
        }
    }
    c
}
