//! Batched inference over a [`Graph`]: conv as im2col + the blocked GEMM, linear as one GEMM,
//! block-structured (merged) conv and linear layers as one GEMM per block and input range over
//! the same patch matrix, eval-mode batch-norm as a per-channel affine map.
//!
//! A [`Forward`] (feature `alloc`) binds a graph to its weights once (checking every tensor) and then runs batches
//! of NCHW f32 samples. After each node is computed, an [`Observer`] sees its activations: that is
//! how merge statistics are gathered while streaming data. Buffers are recycled as soon as their
//! last consumer has run, so memory is a few activation maps of one batch, not the whole graph.
//! [`Forward::compute_node`] computes one node from caller-held activations, for pipelines that
//! schedule nodes themselves.
//!
//! - [`compact`]: a network description without allocation and its sample-by-sample forward
//!   pass in caller scratch (devices, C callers).
//! - [`block_ref`]: one output block of a block-structured layer, as the kernels read it.
//! - [`im2col`]: patch unfolding with its length query.
//! - [`direct_conv`]: stride-1 convolution read straight from padded input planes.
//! - [`strided_conv`]: strided convolution read from the phases of the padded input planes,
//!   summed as im2col + GEMM sums.
//! - [`layers`]: the batched kernels (conv, linear, affine, pooling), scratch-sized.
//! - [`fold`]: folding eval-mode batch-norm into the preceding conv or linear layer.

#[macro_use]
mod sample_paths;

pub mod block_ref;
pub mod compact;
pub mod compact_fold;
pub mod direct_conv;
#[cfg(feature = "alloc")]
pub mod fold;
pub mod im2col;
pub mod layers;
pub mod strided_conv;

#[cfg(feature = "alloc")]
use alloc::vec::Vec;
use core::fmt;

#[cfg(feature = "alloc")]
use crate::graph::{Graph, GraphError, NodeId, Op, Shape, Weights};
/// Node numbers (the graph's `NodeId`, which needs `alloc`).
#[cfg(not(feature = "alloc"))]
type NodeId = usize;
use crate::linalg::{KernelError, ViewError};
#[cfg(feature = "alloc")]
use im2col::ConvGeometry;

#[cfg(feature = "alloc")]
pub use fold::{Folded, fold_batchnorm};

/// Why a forward pass failed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ForwardError {
    /// The weights do not fit the graph.
    #[cfg(feature = "alloc")]
    Graph(GraphError),
    /// The input slice does not hold `batch` samples of the graph's input shape.
    InputLength {
        /// Elements expected (`batch * C * H * W`).
        expected: usize,
        /// Elements given.
        found: usize,
    },
    /// A buffer handed to a layer kernel is too short.
    Buffer {
        /// Which buffer.
        what: &'static str,
        /// Elements needed.
        needed: usize,
        /// Elements provided.
        provided: usize,
    },
    /// A matrix kernel rejected its operands.
    Kernel(KernelError),
    /// A matrix view did not fit its slice.
    View(ViewError),
    /// A block of a block-structured kernel reads an input range that is reversed or reaches
    /// past the layer's input channels.
    BlockInputs {
        /// The block's index.
        block: usize,
        /// The offending range.
        range: core::ops::Range<usize>,
        /// The layer's input channels.
        channels: usize,
    },
    /// [`Forward::compute_node`] was asked for a node the graph does not have.
    UnknownNode {
        /// The node id asked for.
        node: NodeId,
    },
    /// [`Forward::compute_node`] found no activations for an input of the node.
    MissingInput {
        /// The node being computed.
        node: NodeId,
        /// The input node whose activations are missing.
        input: NodeId,
    },
    /// The activations given for a node do not hold `batch` samples of its shape.
    ActivationLength {
        /// The node whose activations have the wrong length.
        node: NodeId,
        /// Elements expected (`batch * C * H * W`).
        expected: usize,
        /// Elements given.
        found: usize,
    },
}

impl fmt::Display for ForwardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            #[cfg(feature = "alloc")]
            ForwardError::Graph(e) => write!(f, "{e}"),
            ForwardError::InputLength { expected, found } => {
                write!(f, "input holds {found} values, the batch needs {expected}")
            }
            ForwardError::Buffer {
                what,
                needed,
                provided,
            } => write!(f, "{what} buffer holds {provided} values, {needed} needed"),
            ForwardError::Kernel(e) => write!(f, "{e}"),
            ForwardError::View(e) => write!(f, "{e}"),
            ForwardError::BlockInputs {
                block,
                range,
                channels,
            } => write!(
                f,
                "block {block} reads input range {}..{}, outside the {channels} input channels",
                range.start, range.end
            ),
            ForwardError::UnknownNode { node } => write!(f, "the graph has no node {node}"),
            ForwardError::MissingInput { node, input } => write!(
                f,
                "node {node} cannot be computed: the activations of its input node {input} \
                 are missing"
            ),
            ForwardError::ActivationLength {
                node,
                expected,
                found,
            } => write!(
                f,
                "activations of node {node} hold {found} values, the batch needs {expected}"
            ),
        }
    }
}

impl core::error::Error for ForwardError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            #[cfg(feature = "alloc")]
            ForwardError::Graph(e) => Some(e),
            ForwardError::Kernel(e) => Some(e),
            ForwardError::View(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(feature = "alloc")]
impl From<GraphError> for ForwardError {
    fn from(e: GraphError) -> Self {
        ForwardError::Graph(e)
    }
}

impl From<KernelError> for ForwardError {
    fn from(e: KernelError) -> Self {
        ForwardError::Kernel(e)
    }
}

impl From<ViewError> for ForwardError {
    fn from(e: ViewError) -> Self {
        ForwardError::View(e)
    }
}

/// The geometry of a conv or pooling window over `input`, or the graph error naming the node.
#[cfg(feature = "alloc")]
fn window_geometry(
    node: &str,
    input: Shape,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> Result<ConvGeometry, ForwardError> {
    ConvGeometry::new(input.c, input.h, input.w, kernel, stride, padding).ok_or_else(|| {
        ForwardError::Graph(GraphError::Window {
            node: alloc::string::String::from(node),
            input,
            kernel,
            stride,
            padding,
        })
    })
}

/// One node's activations for one batch: `batch` samples of `shape`, NCHW row-major.
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, Copy)]
pub struct Activations<'a> {
    /// Samples in the batch.
    pub batch: usize,
    /// Per-sample shape.
    pub shape: Shape,
    /// `batch * shape.len()` values.
    pub data: &'a [f32],
}

/// Sees every node's activations, node by node in graph order, batch by batch.
#[cfg(feature = "alloc")]
pub trait Observer {
    /// Called once per node per batch, right after the node is computed (node 0 is the input).
    fn observe(&mut self, node: NodeId, activations: Activations<'_>);
}

/// An observer that ignores everything.
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

#[cfg(feature = "alloc")]
impl Observer for NoObserver {
    fn observe(&mut self, _node: NodeId, _activations: Activations<'_>) {}
}

/// Tuning knobs of the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForwardParams {
    /// Target number of patch columns (samples x output positions) per conv GEMM: larger
    /// amortises packing, smaller keeps the patch matrix in cache.
    pub conv_columns: usize,
}

impl Default for ForwardParams {
    fn default() -> Self {
        Self { conv_columns: 4096 }
    }
}

/// A graph bound to its weights, ready to run batches.
#[cfg(feature = "alloc")]
pub struct Forward<'a> {
    graph: &'a Graph,
    weights: &'a Weights,
    params: ForwardParams,
    /// For each node, the last node reading it (`usize::MAX` for outputs: never released).
    last_use: Vec<usize>,
    /// Batch-norm nodes' `(scale, shift)`.
    affine: Vec<Option<(Vec<f32>, Vec<f32>)>>,
    /// Block-structured layers' blocks, bound to their weights (empty for other nodes).
    blocks: Vec<Vec<layers::BlockRef<'a>>>,
    scratch: Vec<f32>,
    pool: Vec<Vec<f32>>,
}

#[cfg(feature = "alloc")]
impl<'a> Forward<'a> {
    /// Binds `graph` to `weights` after checking every tensor it reads (presence, shape,
    /// finiteness).
    pub fn new(graph: &'a Graph, weights: &'a Weights) -> Result<Self, ForwardError> {
        Self::with_params(graph, weights, ForwardParams::default())
    }

    /// [`Forward::new`] with explicit knobs.
    pub fn with_params(
        graph: &'a Graph,
        weights: &'a Weights,
        params: ForwardParams,
    ) -> Result<Self, ForwardError> {
        graph.check_weights(weights)?;
        let n = graph.nodes().len();
        let mut last_use: Vec<usize> = (0..n).collect();
        for (id, node) in graph.nodes().iter().enumerate() {
            for &i in &node.inputs {
                last_use[i] = last_use[i].max(id);
            }
        }
        for out in graph.outputs() {
            last_use[out.node] = usize::MAX;
        }
        let mut affine = Vec::with_capacity(n);
        for node in graph.nodes() {
            affine.push(match &node.op {
                Op::BatchNorm {
                    weight,
                    bias,
                    running_mean,
                    running_var,
                    channels,
                    eps,
                } => {
                    let mut scale = alloc::vec![0.0; *channels];
                    let mut shift = alloc::vec![0.0; *channels];
                    layers::batchnorm_coefficients(
                        weights[weight].data(),
                        weights[bias].data(),
                        weights[running_mean].data(),
                        weights[running_var].data(),
                        *eps,
                        &mut scale,
                        &mut shift,
                    );
                    Some((scale, shift))
                }
                _ => None,
            });
        }
        let blocks = graph
            .nodes()
            .iter()
            .map(|node| match &node.op {
                Op::BlockConv2d { blocks, .. } | Op::BlockLinear { blocks, .. } => blocks
                    .iter()
                    .map(|b| layers::BlockRef {
                        weight: weights[&b.weight].data(),
                        bias: b.bias.as_ref().map(|t| weights[t].data()),
                        rows: b.rows,
                        inputs: &b.inputs,
                    })
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        Ok(Self {
            graph,
            weights,
            params,
            last_use,
            affine,
            blocks,
            scratch: Vec::new(),
            pool: Vec::new(),
        })
    }

    /// The graph being run.
    pub fn graph(&self) -> &'a Graph {
        self.graph
    }

    /// Runs `batch` samples (`input` is `batch x C x H x W`, NCHW row-major) and returns one
    /// `batch x D` buffer per graph output, in output order.
    pub fn logits(&mut self, input: &[f32], batch: usize) -> Result<Vec<Vec<f32>>, ForwardError> {
        self.run(input, batch, &mut NoObserver)
    }

    /// Like [`Forward::logits`], showing every node's activations to `observer` as they are
    /// computed.
    pub fn run(
        &mut self,
        input: &[f32],
        batch: usize,
        observer: &mut dyn Observer,
    ) -> Result<Vec<Vec<f32>>, ForwardError> {
        let nodes = self.graph.nodes();
        let expected = batch.saturating_mul(self.graph.input_shape().len());
        if input.len() != expected {
            return Err(ForwardError::InputLength {
                expected,
                found: input.len(),
            });
        }
        let mut acts: Vec<Option<Vec<f32>>> = alloc::vec![None; nodes.len()];
        let mut x = self.buffer(expected);
        x.copy_from_slice(input);
        acts[0] = Some(x);
        for (id, node) in nodes.iter().enumerate() {
            if id > 0 {
                match self.compute_node(id, &mut acts, batch) {
                    Ok(buf) => acts[id] = Some(buf),
                    Err(e) => {
                        acts.into_iter().flatten().for_each(|b| self.pool.push(b));
                        return Err(e);
                    }
                }
            }
            let buf = acts[id].as_deref().unwrap_or(&[]);
            observer.observe(
                id,
                Activations {
                    batch,
                    shape: node.shape,
                    data: buf,
                },
            );
            for &i in &node.inputs {
                if self.last_use[i] == id
                    && let Some(b) = acts[i].take()
                {
                    self.pool.push(b);
                }
            }
            if self.last_use[id] == id {
                // Nobody reads it (a dangling node): release at once.
                if let Some(b) = acts[id].take() {
                    self.pool.push(b);
                }
            }
        }
        let mut outs = Vec::with_capacity(self.graph.outputs().len());
        for out in self.graph.outputs() {
            outs.push(acts[out.node].clone().unwrap_or_default());
        }
        for b in acts.into_iter().flatten() {
            self.pool.push(b);
        }
        Ok(outs)
    }

    /// Computes node `id` for a batch of `batch` samples whose input activations are in `acts`
    /// (indexed by node id; `acts[0]` holds the batch input). An input whose last consumer in the
    /// graph is `id` may be taken from `acts` (its buffer reused). Returns the node's output.
    ///
    /// Every input of the node must be present in `acts` with `batch` samples of its shape
    /// (else [`ForwardError::MissingInput`] or [`ForwardError::ActivationLength`]); for node 0
    /// the result is a copy of `acts[0]`. Inputs not taken stay in `acts`; buffers the caller
    /// no longer needs can go back to the pool with [`Forward::recycle`].
    pub fn compute_node(
        &mut self,
        id: NodeId,
        acts: &mut [Option<Vec<f32>>],
        batch: usize,
    ) -> Result<Vec<f32>, ForwardError> {
        let graph = self.graph;
        let Some(node) = graph.nodes().get(id) else {
            return Err(ForwardError::UnknownNode { node: id });
        };
        let reads: &[NodeId] = if id == 0 { &[0] } else { &node.inputs };
        for &i in reads {
            let expected = batch.saturating_mul(graph.node(i).shape.len());
            match acts.get(i) {
                Some(Some(b)) if b.len() == expected => {}
                Some(Some(b)) => {
                    return Err(ForwardError::ActivationLength {
                        node: i,
                        expected,
                        found: b.len(),
                    });
                }
                _ => return Err(ForwardError::MissingInput { node: id, input: i }),
            }
        }
        let len = batch.saturating_mul(node.shape.len());
        self.compute(id, acts, batch, len)
    }

    /// Returns a buffer to the pool the forward pass draws its activation buffers from (e.g. one
    /// returned by [`Forward::compute_node`] once the caller is done with it).
    pub fn recycle(&mut self, buf: Vec<f32>) {
        self.pool.push(buf);
    }

    /// The pool of spare activation buffers ([`Forward::recycle`] adds to it; every op draws its
    /// output from it): a caller running several forward passes in turn can move the spare
    /// buffers from one to the next instead of allocating (and zeroing) new ones.
    pub fn spare_buffers(&mut self) -> &mut Vec<Vec<f32>> {
        &mut self.pool
    }

    /// The scratch buffer the kernels work in (grown on demand, never shrunk): a caller running
    /// several forward passes in turn can move it from one to the next, as with
    /// [`Forward::spare_buffers`].
    pub fn scratch_buffer(&mut self) -> &mut Vec<f32> {
        &mut self.scratch
    }

    fn buffer(&mut self, len: usize) -> Vec<f32> {
        let pick = self
            .pool
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        let mut b = match pick {
            Some(i) => self.pool.swap_remove(i),
            None => self.pool.pop().unwrap_or_default(),
        };
        // Every op overwrites its whole output, so stale values need not be cleared.
        if b.len() >= len {
            b.truncate(len);
        } else {
            b.resize(len, 0.0);
        }
        b
    }

    /// The input buffer of node `id` for in-place use if `id` is its last reader and reads it
    /// only once; otherwise a copy.
    fn take_or_copy(&mut self, acts: &mut [Option<Vec<f32>>], id: NodeId, src: NodeId) -> Vec<f32> {
        let once = self
            .graph
            .node(id)
            .inputs
            .iter()
            .filter(|&&i| i == src)
            .count()
            == 1;
        if self.last_use[src] == id
            && once
            && let Some(b) = acts[src].take()
        {
            return b;
        }
        let data = acts[src].as_deref().unwrap_or(&[]);
        let mut b = self.pool.pop().unwrap_or_default();
        b.clear();
        b.extend_from_slice(data);
        b
    }

    /// Computes node `id`; its inputs are in `acts` with the right lengths (checked by
    /// [`Forward::compute_node`]).
    fn compute(
        &mut self,
        id: NodeId,
        acts: &mut [Option<Vec<f32>>],
        batch: usize,
        len: usize,
    ) -> Result<Vec<f32>, ForwardError> {
        let graph = self.graph;
        let node = graph.node(id);
        let weights = self.weights;
        let in_shape = |k: usize| graph.node(node.inputs[k]).shape;
        match &node.op {
            Op::Input => {
                let mut b = self.buffer(len);
                b.copy_from_slice(acts[0].as_deref().unwrap_or(&[]));
                Ok(b)
            }
            Op::Linear {
                weight,
                bias,
                in_features,
                out_features,
            } => {
                let need = layers::linear_scratch_len(batch, *in_features, *out_features);
                if self.scratch.len() < need {
                    self.scratch.resize(need, 0.0);
                }
                let mut out = self.buffer(len);
                let x = acts[node.inputs[0]].as_deref().unwrap_or(&[]);
                layers::linear(
                    weights[weight].data(),
                    bias.as_ref().map(|b| weights[b].data()),
                    *in_features,
                    *out_features,
                    x,
                    batch,
                    &mut out,
                    &mut self.scratch,
                )?;
                Ok(out)
            }
            Op::Conv2d {
                weight,
                bias,
                out_channels,
                kernel,
                stride,
                padding,
                ..
            } => {
                let s = in_shape(0);
                let geom = window_geometry(&node.name, s, *kernel, *stride, *padding)?;
                let chunk =
                    (self.params.conv_columns / geom.positions().max(1)).clamp(1, batch.max(1));
                let need = layers::conv2d_scratch_len(&geom, *out_channels, chunk);
                if self.scratch.len() < need {
                    self.scratch.resize(need, 0.0);
                }
                let mut out = self.buffer(len);
                let x = acts[node.inputs[0]].as_deref().unwrap_or(&[]);
                layers::conv2d(
                    &geom,
                    *out_channels,
                    weights[weight].data(),
                    bias.as_ref().map(|b| weights[b].data()),
                    x,
                    batch,
                    chunk,
                    &mut out,
                    &mut self.scratch,
                )?;
                Ok(out)
            }
            Op::BlockConv2d {
                kernel,
                stride,
                padding,
                ..
            } => {
                let s = in_shape(0);
                let geom = window_geometry(&node.name, s, *kernel, *stride, *padding)?;
                let chunk =
                    (self.params.conv_columns / geom.positions().max(1)).clamp(1, batch.max(1));
                let need = layers::block_conv2d_scratch_len(&geom, &self.blocks[id], chunk);
                if self.scratch.len() < need {
                    self.scratch.resize(need, 0.0);
                }
                let mut out = self.buffer(len);
                let x = acts[node.inputs[0]].as_deref().unwrap_or(&[]);
                layers::block_conv2d(
                    &geom,
                    &self.blocks[id],
                    x,
                    batch,
                    chunk,
                    &mut out,
                    &mut self.scratch,
                )?;
                Ok(out)
            }
            Op::BlockLinear { in_features, .. } => {
                let need = layers::block_linear_scratch_len(batch, &self.blocks[id]);
                if self.scratch.len() < need {
                    self.scratch.resize(need, 0.0);
                }
                let mut out = self.buffer(len);
                let x = acts[node.inputs[0]].as_deref().unwrap_or(&[]);
                layers::block_linear(
                    &self.blocks[id],
                    *in_features,
                    x,
                    batch,
                    &mut out,
                    &mut self.scratch,
                )?;
                Ok(out)
            }
            Op::BatchNorm { channels, .. } => {
                let mut b = self.take_or_copy(acts, id, node.inputs[0]);
                let s = in_shape(0);
                if let Some((scale, shift)) = &self.affine[id] {
                    layers::channel_affine(&mut b, *channels, s.h * s.w, scale, shift);
                }
                Ok(b)
            }
            Op::Relu => {
                let mut b = self.take_or_copy(acts, id, node.inputs[0]);
                layers::relu(&mut b);
                Ok(b)
            }
            Op::Add => {
                let mut b = self.take_or_copy(acts, id, node.inputs[0]);
                for &i in &node.inputs[1..] {
                    let x = acts[i].as_deref().unwrap_or(&[]);
                    layers::add_assign(&mut b, x);
                }
                Ok(b)
            }
            Op::MaxPool {
                kernel,
                stride,
                padding,
            }
            | Op::AvgPool {
                kernel,
                stride,
                padding,
            } => {
                let s = in_shape(0);
                let geom = window_geometry(&node.name, s, *kernel, *stride, *padding)?;
                let mut out = self.buffer(len);
                let x = acts[node.inputs[0]].as_deref().unwrap_or(&[]);
                let is_max = matches!(node.op, Op::MaxPool { .. });
                layers::pool2d(&geom, is_max, x, batch, &mut out);
                Ok(out)
            }
            Op::GlobalAvgPool => {
                let s = in_shape(0);
                let mut out = self.buffer(len);
                let x = acts[node.inputs[0]].as_deref().unwrap_or(&[]);
                layers::global_avg_pool(x, batch * s.c, s.h * s.w, &mut out);
                Ok(out)
            }
            Op::Flatten => Ok(self.take_or_copy(acts, id, node.inputs[0])),
        }
    }
}
