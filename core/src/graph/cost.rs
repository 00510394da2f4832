//! FLOP (multiply-add) and parameter accounting at the graph's input size.
//!
//! FLOPs here are the multiply-adds of conv and linear layers only (docs/ALGORITHM.md section 3
//! budgets count exactly these); batch-norm, ReLU, pooling and adds are not counted. Parameters
//! are the learnable tensors (conv and linear weights and biases, batch-norm scale and shift);
//! batch-norm running statistics are buffers, counted separately. Block-structured layers
//! count only their stored blocks: `sum over blocks of rows * cols * kh * kw` multiply-adds per
//! output position, and the blocks' weights and biases as parameters.

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

/// Multiply-adds per sample of node `id` (0 for anything but conv and linear layers, dense or
/// block-structured).
pub fn node_macs(graph: &Graph, id: NodeId) -> u64 {
    let node = graph.node(id);
    let block_macs = |blocks: &[super::WeightBlock], per_weight: u64| {
        blocks.iter().fold(0u64, |acc, b| {
            let w = (b.rows as u64).saturating_mul(b.cols() as u64);
            acc.saturating_add(w.saturating_mul(per_weight))
        })
    };
    match &node.op {
        Op::BlockLinear { blocks, .. } => block_macs(blocks, 1),
        Op::BlockConv2d { kernel, blocks, .. } => {
            let s = node.shape;
            let per_weight = (s.h as u64)
                .saturating_mul(s.w as u64)
                .saturating_mul(kernel[0] as u64)
                .saturating_mul(kernel[1] as u64);
            block_macs(blocks, per_weight)
        }
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
