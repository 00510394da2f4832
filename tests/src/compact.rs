//! Dense graphs as [`pleas_core::forward::compact`] networks, to compare the compact forward
//! pass with [`pleas_core::forward::Forward`].

use pleas_core::forward::compact::{Layer, LayerOp, MapShape, Window};
use pleas_core::graph::{Graph, Op, Weights};

/// A graph as a compact network: its layers, outputs and flat parameters.
#[derive(Debug, Clone)]
pub struct CompactNet {
    /// Per-sample input shape.
    pub input: MapShape,
    /// The layers.
    pub layers: Vec<Layer>,
    /// Output nodes, in the graph's output order.
    pub outputs: Vec<usize>,
    /// Parameters in layer order.
    pub params: Vec<f32>,
}

/// `graph` with `weights` as a compact network. Flatten nodes are dropped (a linear layer
/// reads its input flattened); graphs with block-structured layers, or adds of more than two
/// inputs, are refused with `None`.
pub fn from_graph(graph: &Graph, weights: &Weights) -> Option<CompactNet> {
    let s = graph.input_shape();
    let mut net = CompactNet {
        input: MapShape::new(s.c, s.h, s.w),
        layers: Vec::new(),
        outputs: Vec::new(),
        params: Vec::new(),
    };
    // Graph node -> compact node.
    let mut node_of = vec![0usize; graph.nodes().len()];
    for (id, node) in graph.nodes().iter().enumerate().skip(1) {
        let input = node_of[node.inputs[0]];
        let mut take = |name: &str| net.params.extend_from_slice(weights[name].data());
        let op = match &node.op {
            Op::Conv2d {
                weight,
                bias,
                out_channels,
                kernel,
                stride,
                padding,
                ..
            } => {
                take(weight);
                bias.iter().for_each(|b| take(b));
                LayerOp::Conv2d {
                    out_channels: *out_channels,
                    window: Window {
                        kernel: *kernel,
                        stride: *stride,
                        padding: *padding,
                    },
                    bias: bias.is_some(),
                }
            }
            Op::Linear {
                weight,
                bias,
                out_features,
                ..
            } => {
                take(weight);
                bias.iter().for_each(|b| take(b));
                LayerOp::Linear {
                    out_features: *out_features,
                    bias: bias.is_some(),
                }
            }
            Op::BatchNorm {
                weight,
                bias,
                running_mean,
                running_var,
                eps,
                ..
            } => {
                for t in [weight, bias, running_mean, running_var] {
                    take(t);
                }
                LayerOp::BatchNorm { eps: *eps }
            }
            Op::Relu => LayerOp::Relu,
            Op::MaxPool {
                kernel,
                stride,
                padding,
            } => LayerOp::MaxPool(Window {
                kernel: *kernel,
                stride: *stride,
                padding: *padding,
            }),
            Op::AvgPool {
                kernel,
                stride,
                padding,
            } => LayerOp::AvgPool(Window {
                kernel: *kernel,
                stride: *stride,
                padding: *padding,
            }),
            Op::GlobalAvgPool => LayerOp::GlobalAvgPool,
            Op::Add if node.inputs.len() == 2 => LayerOp::Add {
                other: node_of[node.inputs[1]],
            },
            Op::Flatten => {
                node_of[id] = input;
                continue;
            }
            _ => return None,
        };
        net.layers.push(Layer { op, input });
        node_of[id] = net.layers.len();
    }
    net.outputs = graph.outputs().iter().map(|o| node_of[o.node]).collect();
    Some(net)
}
