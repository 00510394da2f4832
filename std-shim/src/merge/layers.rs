//! What the merge works on: the conv and linear layers of the (prepared) original graph with
//! their input and output permutation groups, their FLOP costs for the budget, and the stage of
//! every group for the stage schedule.

use pleas_core::graph::{Graph, Groups, NodeId, Op, Pair, node_macs};
use pleas_core::merge::budget::LayerCost;

/// Geometry of a fitted layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// A linear layer on a flat input.
    Linear,
    /// A 2-D convolution.
    Conv {
        /// Kernel `[kh, kw]`.
        kernel: Pair,
        /// Stride.
        stride: Pair,
        /// Zero padding.
        padding: Pair,
    },
}

impl LayerKind {
    /// Kernel positions per input channel (`kh * kw`, 1 for linear).
    pub fn patch(&self) -> usize {
        match self {
            LayerKind::Linear => 1,
            LayerKind::Conv { kernel, .. } => kernel[0] * kernel[1],
        }
    }
}

/// One conv or linear layer of the original architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The layer's node in the original graph.
    pub node: NodeId,
    /// The node it reads.
    pub input: NodeId,
    /// Group of its input channels (`None`: the graph input, or an axis in no group).
    pub input_group: Option<usize>,
    /// Group of its output channels (`None`: a head, or an axis in no group).
    pub output_group: Option<usize>,
    /// Conv or linear geometry.
    pub kind: LayerKind,
    /// Input channels of the original layer.
    pub in_channels: usize,
    /// Output channels of the original layer.
    pub out_channels: usize,
    /// Weight tensor name.
    pub weight: String,
    /// Bias tensor name, if the layer has a bias.
    pub bias: Option<String>,
}

/// The conv and linear layers of `graph`, in node order.
pub fn layers(graph: &Graph, groups: &Groups) -> Vec<Layer> {
    let mut out = Vec::new();
    for (id, node) in graph.nodes().iter().enumerate() {
        let (kind, in_channels, out_channels, weight, bias) = match &node.op {
            Op::Linear {
                weight,
                bias,
                in_features,
                out_features,
            } => (LayerKind::Linear, *in_features, *out_features, weight, bias),
            Op::Conv2d {
                weight,
                bias,
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
            } => (
                LayerKind::Conv {
                    kernel: *kernel,
                    stride: *stride,
                    padding: *padding,
                },
                *in_channels,
                *out_channels,
                weight,
                bias,
            ),
            _ => continue,
        };
        let input = node.inputs[0];
        out.push(Layer {
            node: id,
            input,
            input_group: groups.of_node(input),
            output_group: groups.of_node(id),
            kind,
            in_channels,
            out_channels,
            weight: weight.clone(),
            bias: bias.clone(),
        });
    }
    out
}

/// Budget costs of `layers` (multiply-adds at the graph's input size, weights, biases).
pub fn layer_costs(graph: &Graph, layers: &[Layer]) -> Vec<LayerCost> {
    layers
        .iter()
        .map(|l| LayerCost {
            input_group: l.input_group,
            output_group: l.output_group,
            macs: node_macs(graph, l.node) as f64,
            weights: (l.in_channels * l.out_channels * l.kind.patch()) as f64,
            biases: if l.bias.is_some() {
                l.out_channels as f64
            } else {
                0.0
            },
        })
        .collect()
}

/// The stage of every group for the stage schedule: groups of a convolutional network are
/// staged by the spatial size of their first node (largest maps first, stage 0); in a network
/// of flat features every group is its own stage, in node order.
pub fn group_stages(graph: &Graph, groups: &Groups) -> Vec<usize> {
    let first: Vec<NodeId> = groups
        .groups()
        .iter()
        .map(|g| g.nodes.first().copied().unwrap_or(0))
        .collect();
    let all_flat = first.iter().all(|&n| graph.node(n).shape.is_flat());
    if all_flat {
        let mut order: Vec<usize> = (0..first.len()).collect();
        order.sort_by_key(|&g| first[g]);
        let mut stage = vec![0; first.len()];
        for (s, g) in order.into_iter().enumerate() {
            stage[g] = s;
        }
        return stage;
    }
    let mut sizes: Vec<usize> = first
        .iter()
        .map(|&n| {
            let s = graph.node(n).shape;
            s.h * s.w
        })
        .collect();
    let area = sizes.clone();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes.dedup();
    area.iter()
        .map(|a| sizes.iter().position(|s| s == a).unwrap_or(0))
        .collect()
}
