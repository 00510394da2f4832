//! The layer-graph IR: nodes with an op, their inputs and their inferred output shape;
//! parameters are referenced by tensor name (PyTorch state_dict names) and live in a separate
//! [`Weights`] map.
//!
//! A [`Graph`] is built node by node with [`Graph::push`]; every node's inputs must already be in
//! the graph, so the node list is always in topological order and shape inference runs as each
//! node is added. Activations are per-sample `C x H x W` ([`Shape`]); a feature vector of length
//! `D` is `D x 1 x 1`, so flattening is a no-op in memory (NCHW row-major).
//!
//! - [`shape`]: output-shape inference per op, the checks of block-structured layers and the
//!   graph's error type.
//! - [`groups`]: permutation groups by union-find (docs/ALGORITHM.md section 1) and applying
//!   permutations to weights.
//! - [`cost`](mod@cost): multiply-add (FLOP) and parameter counts.
//! - [`weights`]: named f32 tensors.

pub mod cost;
pub mod groups;
pub mod shape;
pub mod weights;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

pub use cost::{Cost, cost, node_macs};
pub use groups::{AxisRef, Groups, PermGroup, apply_permutations, permutation_groups};
pub use shape::{BlockFault, GraphError};
pub use weights::{Tensor, TensorError, Weights};

/// Index of a node in its [`Graph`] (node 0 is the graph input).
pub type NodeId = usize;

/// Per-sample activation shape `channels x height x width`. Feature vectors are `D x 1 x 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Channels (or features).
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

impl Shape {
    /// A `c x h x w` map.
    pub const fn new(c: usize, h: usize, w: usize) -> Self {
        Self { c, h, w }
    }

    /// A feature vector of length `d` (`d x 1 x 1`).
    pub const fn flat(d: usize) -> Self {
        Self { c: d, h: 1, w: 1 }
    }

    /// Elements per sample, `c * h * w`.
    pub const fn len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Whether the shape holds no element.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the spatial size is `1 x 1` (a feature vector).
    pub const fn is_flat(&self) -> bool {
        self.h == 1 && self.w == 1
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_flat() {
            write!(f, "[{}]", self.c)
        } else {
            write!(f, "[{}x{}x{}]", self.c, self.h, self.w)
        }
    }
}

pub use crate::window::Pair;

/// One output block of a block-structured layer: `rows` consecutive output channels reading
/// the input channel ranges `inputs` (ascending, disjoint, non-empty list) of the layer input.
///
/// The layer's weight matrix is zero outside its blocks; those zeros are neither stored nor
/// computed. Shape inference requires at least one row and non-empty ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightBlock {
    /// Weight tensor name: `[rows, cols, kh, kw]` for a conv, `[rows, cols]` for a linear,
    /// where `cols` is the total length of `inputs` (columns ordered as the ranges are listed).
    pub weight: String,
    /// Bias tensor name, shape `[rows]`.
    pub bias: Option<String>,
    /// Output channels of this block (blocks are stacked in order).
    pub rows: usize,
    /// Input channel ranges read by this block.
    pub inputs: Vec<core::ops::Range<usize>>,
}

impl WeightBlock {
    /// Input channels read, the total length of `inputs` (saturating; empty or reversed ranges
    /// count 0).
    pub fn cols(&self) -> usize {
        self.inputs
            .iter()
            .fold(0usize, |acc, r| acc.saturating_add(r.len()))
    }
}

/// What a node computes. Parameters are tensor names looked up in [`Weights`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Op {
    /// The graph input (node 0 only).
    Input,
    /// `y = x W^T + b` on a flat input; `weight` is `out x in` (PyTorch layout).
    Linear {
        /// Weight tensor name, shape `[out_features, in_features]`.
        weight: String,
        /// Bias tensor name, shape `[out_features]`.
        bias: Option<String>,
        /// Input features.
        in_features: usize,
        /// Output features.
        out_features: usize,
    },
    /// 2-D cross-correlation; `weight` is `out x in x kh x kw` (PyTorch layout), no groups.
    Conv2d {
        /// Weight tensor name, shape `[out_channels, in_channels, kh, kw]`.
        weight: String,
        /// Bias tensor name, shape `[out_channels]`.
        bias: Option<String>,
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel size `[kh, kw]`.
        kernel: Pair,
        /// Stride `[sh, sw]`.
        stride: Pair,
        /// Zero padding `[ph, pw]` on each side.
        padding: Pair,
    },
    /// Eval-mode batch normalisation: `y = (x - mean) / sqrt(var + eps) * weight + bias`.
    BatchNorm {
        /// Scale (gamma) tensor name, shape `[channels]`.
        weight: String,
        /// Shift (beta) tensor name, shape `[channels]`.
        bias: String,
        /// Running mean tensor name, shape `[channels]`.
        running_mean: String,
        /// Running variance tensor name, shape `[channels]`.
        running_var: String,
        /// Channels.
        channels: usize,
        /// Variance epsilon (PyTorch default `1e-5`).
        eps: f32,
    },
    /// `max(x, 0)` elementwise.
    Relu,
    /// Elementwise sum of two or more inputs of one shape (residual add).
    Add,
    /// Max pooling (padding counts as `-inf`).
    MaxPool {
        /// Window `[kh, kw]`.
        kernel: Pair,
        /// Stride `[sh, sw]`.
        stride: Pair,
        /// Padding `[ph, pw]`.
        padding: Pair,
    },
    /// Average pooling; padded positions count as zeros in the window (PyTorch's
    /// `count_include_pad=True`).
    AvgPool {
        /// Window `[kh, kw]`.
        kernel: Pair,
        /// Stride `[sh, sw]`.
        stride: Pair,
        /// Padding `[ph, pw]`.
        padding: Pair,
    },
    /// A 2-D convolution whose weight is block-structured (a merged layer): output channels
    /// are split into consecutive [`WeightBlock`]s, each reading only some input channel
    /// ranges. Same geometry rules as [`Op::Conv2d`]; every block has the kernel `kernel`.
    BlockConv2d {
        /// Input channels of the layer.
        in_channels: usize,
        /// Output channels, the sum of the blocks' rows.
        out_channels: usize,
        /// Kernel size `[kh, kw]`.
        kernel: Pair,
        /// Stride `[sh, sw]`.
        stride: Pair,
        /// Zero padding `[ph, pw]` on each side.
        padding: Pair,
        /// Output blocks, stacked in order.
        blocks: Vec<WeightBlock>,
    },
    /// A linear layer whose weight is block-structured (see [`Op::BlockConv2d`]).
    BlockLinear {
        /// Input features.
        in_features: usize,
        /// Output features, the sum of the blocks' rows.
        out_features: usize,
        /// Output blocks, stacked in order.
        blocks: Vec<WeightBlock>,
    },
    /// Mean over the spatial positions: `C x H x W -> C x 1 x 1`.
    GlobalAvgPool,
    /// `C x H x W -> (C*H*W) x 1 x 1` (no data movement in NCHW).
    Flatten,
}

impl Op {
    /// Short lower-case name of the op kind (`"conv2d"`, `"linear"`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Linear { .. } => "linear",
            Op::Conv2d { .. } => "conv2d",
            Op::BlockConv2d { .. } => "block_conv2d",
            Op::BlockLinear { .. } => "block_linear",
            Op::BatchNorm { .. } => "batchnorm",
            Op::Relu => "relu",
            Op::Add => "add",
            Op::MaxPool { .. } => "maxpool",
            Op::AvgPool { .. } => "avgpool",
            Op::GlobalAvgPool => "global_avgpool",
            Op::Flatten => "flatten",
        }
    }

    /// The parameter tensors this op reads, with the shape each must have.
    pub fn params(&self) -> Vec<(&str, Vec<usize>)> {
        let mut out = Vec::new();
        match self {
            Op::Linear {
                weight,
                bias,
                in_features,
                out_features,
            } => {
                out.push((weight.as_str(), alloc::vec![*out_features, *in_features]));
                if let Some(b) = bias {
                    out.push((b.as_str(), alloc::vec![*out_features]));
                }
            }
            Op::Conv2d {
                weight,
                bias,
                in_channels,
                out_channels,
                kernel,
                ..
            } => {
                out.push((
                    weight.as_str(),
                    alloc::vec![*out_channels, *in_channels, kernel[0], kernel[1]],
                ));
                if let Some(b) = bias {
                    out.push((b.as_str(), alloc::vec![*out_channels]));
                }
            }
            Op::BatchNorm {
                weight,
                bias,
                running_mean,
                running_var,
                channels,
                ..
            } => {
                for t in [weight, bias, running_mean, running_var] {
                    out.push((t.as_str(), alloc::vec![*channels]));
                }
            }
            Op::BlockConv2d { kernel, blocks, .. } => {
                for b in blocks {
                    out.push((
                        b.weight.as_str(),
                        alloc::vec![b.rows, b.cols(), kernel[0], kernel[1]],
                    ));
                    if let Some(bias) = &b.bias {
                        out.push((bias.as_str(), alloc::vec![b.rows]));
                    }
                }
            }
            Op::BlockLinear { blocks, .. } => {
                for b in blocks {
                    out.push((b.weight.as_str(), alloc::vec![b.rows, b.cols()]));
                    if let Some(bias) = &b.bias {
                        out.push((bias.as_str(), alloc::vec![b.rows]));
                    }
                }
            }
            _ => {}
        }
        out
    }
}

/// One node: a named op over earlier nodes, with its inferred per-sample output shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Unique name (for layers, the PyTorch module path, e.g. `layers.3.conv1`).
    pub name: String,
    /// What the node computes.
    pub op: Op,
    /// Nodes read, in order (all earlier in the graph).
    pub inputs: Vec<NodeId>,
    /// Per-sample output shape.
    pub shape: Shape,
}

/// A named graph output (a classification head, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Output name (e.g. `head`).
    pub name: String,
    /// The node whose activations are this output.
    pub node: NodeId,
}

/// A layer graph in topological order, with its outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    nodes: Vec<Node>,
    outputs: Vec<Output>,
}

impl Graph {
    /// A graph holding only its input node (named `input`) of the given per-sample shape.
    pub fn new(input: Shape) -> Self {
        Self {
            nodes: alloc::vec![Node {
                name: String::from("input"),
                op: Op::Input,
                inputs: Vec::new(),
                shape: input,
            }],
            outputs: Vec::new(),
        }
    }

    /// The input node (always 0).
    pub const fn input(&self) -> NodeId {
        0
    }

    /// Per-sample input shape.
    pub fn input_shape(&self) -> Shape {
        self.nodes[0].shape
    }

    /// Appends a node after checking its inputs and inferring its output shape.
    pub fn push(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: &[NodeId],
    ) -> Result<NodeId, GraphError> {
        let name = name.into();
        if self.nodes.iter().any(|n| n.name == name) {
            return Err(GraphError::DuplicateName { node: name });
        }
        for &i in inputs {
            if i >= self.nodes.len() {
                return Err(GraphError::UnknownInput {
                    node: name,
                    input: i,
                });
            }
        }
        let in_shapes: Vec<Shape> = inputs.iter().map(|&i| self.nodes[i].shape).collect();
        let shape = shape::infer(&name, &op, &in_shapes)?;
        self.nodes.push(Node {
            name,
            op,
            inputs: inputs.to_vec(),
            shape,
        });
        Ok(self.nodes.len() - 1)
    }

    /// Declares `node` a graph output called `name`.
    pub fn add_output(&mut self, name: impl Into<String>, node: NodeId) -> Result<(), GraphError> {
        let name = name.into();
        if node >= self.nodes.len() {
            return Err(GraphError::UnknownInput {
                node: name,
                input: node,
            });
        }
        self.outputs.push(Output { name, node });
        Ok(())
    }

    /// All nodes, in topological order (node 0 is the input).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `id`. Panics if out of range (like slice indexing).
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// The graph outputs, in declaration order.
    pub fn outputs(&self) -> &[Output] {
        &self.outputs
    }

    /// The node called `name`, if any.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// For every node, the nodes that read it.
    pub fn consumers(&self) -> Vec<Vec<NodeId>> {
        let mut out = alloc::vec![Vec::new(); self.nodes.len()];
        for (id, n) in self.nodes.iter().enumerate() {
            for &i in &n.inputs {
                out[i].push(id);
            }
        }
        out
    }

    /// The same graph with another per-sample input shape, every shape inferred anew
    /// (e.g. a ResNet evaluated at another resolution).
    pub fn with_input_shape(&self, input: Shape) -> Result<Graph, GraphError> {
        let mut g = Graph::new(input);
        g.nodes[0].name = self.nodes[0].name.clone();
        for n in &self.nodes[1..] {
            g.push(n.name.clone(), n.op.clone(), &n.inputs)?;
        }
        g.outputs = self.outputs.clone();
        Ok(g)
    }

    /// Every parameter tensor the graph reads, with its required shape and reading node, in node
    /// order.
    pub fn param_specs(&self) -> Vec<(NodeId, &str, Vec<usize>)> {
        let mut out = Vec::new();
        for (id, n) in self.nodes.iter().enumerate() {
            for (t, s) in n.op.params() {
                out.push((id, t, s));
            }
        }
        out
    }

    /// Checks that every tensor the graph reads is in `weights` with the right shape and holds
    /// only finite values. Tensors the graph does not read are allowed here (see
    /// [`Graph::unused_tensors`]).
    pub fn check_weights(&self, weights: &Weights) -> Result<(), GraphError> {
        for (id, t, expected) in self.param_specs() {
            let node = &self.nodes[id].name;
            let Some(tensor) = weights.get(t) else {
                return Err(GraphError::MissingTensor {
                    tensor: String::from(t),
                    node: node.clone(),
                });
            };
            if tensor.shape() != expected.as_slice() {
                return Err(GraphError::TensorShape {
                    tensor: String::from(t),
                    expected,
                    found: tensor.shape().to_vec(),
                });
            }
            // The SIMD check first (every forward pass and merge shard runs this over all
            // weights); the scalar scan only locates a bad value.
            if crate::linalg::all_finite(tensor.data()) {
                continue;
            }
            if let Some(index) = tensor.data().iter().position(|v| !v.is_finite()) {
                return Err(GraphError::NonFinite {
                    tensor: String::from(t),
                    index,
                });
            }
        }
        Ok(())
    }

    /// Names of tensors in `weights` that no node reads, in name order.
    pub fn unused_tensors<'w>(&self, weights: &'w Weights) -> Vec<&'w str> {
        let used: alloc::collections::BTreeSet<&str> =
            self.param_specs().into_iter().map(|(_, t, _)| t).collect();
        weights
            .keys()
            .map(String::as_str)
            .filter(|k| !used.contains(k))
            .collect()
    }
}
