//! Batched inference over a [`Graph`]: conv as im2col + the blocked GEMM, linear as one GEMM,
//! eval-mode batch-norm as a per-channel affine map.
//!
//! A [`Forward`] binds a graph to its weights once (checking every tensor) and then runs batches
//! of NCHW f32 samples. After each node is computed, an [`Observer`] sees its activations: that is
//! how merge statistics are gathered while streaming data. Buffers are recycled as soon as their
//! last consumer has run, so memory is a few activation maps of one batch, not the whole graph.
//!
//! - [`im2col`]: patch unfolding with its length query.
//! - [`layers`]: the batched kernels (conv, linear, affine, pooling), scratch-sized.
//! - [`fold`]: folding eval-mode batch-norm into the preceding conv or linear layer.

pub mod fold;
pub mod im2col;
pub mod layers;

use alloc::vec::Vec;
use core::fmt;

use crate::graph::{Graph, GraphError, NodeId, Op, Shape, Weights};
use crate::linalg::{KernelError, ViewError};
use im2col::ConvGeometry;

pub use fold::{Folded, fold_batchnorm};

/// Why a forward pass failed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ForwardError {
    /// The weights do not fit the graph.
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
}

impl fmt::Display for ForwardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
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
        }
    }
}

impl core::error::Error for ForwardError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            ForwardError::Graph(e) => Some(e),
            ForwardError::Kernel(e) => Some(e),
            ForwardError::View(e) => Some(e),
            _ => None,
        }
    }
}

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
pub trait Observer {
    /// Called once per node per batch, right after the node is computed (node 0 is the input).
    fn observe(&mut self, node: NodeId, activations: Activations<'_>);
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

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
pub struct Forward<'a> {
    graph: &'a Graph,
    weights: &'a Weights,
    params: ForwardParams,
    /// For each node, the last node reading it (`usize::MAX` for outputs: never released).
    last_use: Vec<usize>,
    /// Batch-norm nodes' `(scale, shift)`.
    affine: Vec<Option<(Vec<f32>, Vec<f32>)>>,
    scratch: Vec<f32>,
    pool: Vec<Vec<f32>>,
}

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
        Ok(Self {
            graph,
            weights,
            params,
            last_use,
            affine,
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
        let expected = batch * self.graph.input_shape().len();
        if input.len() != expected {
            return Err(ForwardError::InputLength {
                expected,
                found: input.len(),
            });
        }
        let mut acts: Vec<Option<Vec<f32>>> = alloc::vec![None; nodes.len()];
        for (id, node) in nodes.iter().enumerate() {
            let len = batch * node.shape.len();
            let buf = self.compute(id, &mut acts, input, batch, len)?;
            observer.observe(
                id,
                Activations {
                    batch,
                    shape: node.shape,
                    data: &buf,
                },
            );
            acts[id] = Some(buf);
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

    fn compute(
        &mut self,
        id: NodeId,
        acts: &mut [Option<Vec<f32>>],
        input: &[f32],
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
                b.copy_from_slice(input);
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
