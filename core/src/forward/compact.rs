//! A compact network description that needs no allocation, and its forward pass sample by
//! sample in caller scratch: for devices (the firmware's CNNs) and C callers.
//!
//! A [`Network`] is its per-sample input shape, a list of [`Layer`]s and its outputs. Nodes
//! are numbered: node 0 is the input, node `l + 1` the output of layer `l`, and every layer
//! reads earlier nodes (so the list is in a valid order by construction). Layers:
//! convolution (any kernel, stride and zero padding), linear (reading its input flattened in
//! NCHW order, as PyTorch's `flatten`), eval-mode batch-norm, ReLU, max and average pooling
//! (padding counted as `-inf` / as zeros, PyTorch's `count_include_pad=True`), global average
//! pooling and the residual add of two nodes of one shape.
//!
//! Parameters live one after the other in one f32 buffer, in layer order: a convolution's
//! weight (PyTorch layout `out x in x kh x kw`) then its bias if it has one; a linear layer's
//! weight (`out x in`) then its bias; a batch-norm's weight (gamma), bias (beta), running mean
//! and running variance. [`CompactPlan::param_range`] says where each piece is.
//!
//! [`CompactPlan::new`] checks the description and computes every node's shape, the
//! parameters' layout and the scratch the forward pass needs ([`CompactPlan::scratch_len`]
//! f32 values): activation buffers ("slots") reused as soon as no later layer reads a node, so
//! a chain of layers needs two of them and a residual block three, each as long as the largest
//! activation map, plus the largest kernel scratch of any layer. The caller writes a sample
//! into [`CompactPlan::input_mut`] and runs [`CompactPlan::run`], which calls an observer with
//! every node's activations as it is computed; the outputs are read back with
//! [`CompactPlan::node`].
//!
//! The kernels are those of [`super::layers`] with a batch of one sample, so a network gives
//! the values [`super::Forward`] gives the same graph up to the rounding of a different
//! summation blocking (the tests compare them).

use core::fmt;
use core::ops::Range;

use super::ForwardError;
use super::im2col::ConvGeometry;
use super::layers;
use crate::window::Pair;

/// Most layers a network may have.
pub const MAX_LAYERS: usize = 32;
/// Most nodes (the input and one per layer).
pub const MAX_NODES: usize = MAX_LAYERS + 1;

/// Per-sample shape `channels x height x width` of a node; feature vectors are `D x 1 x 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MapShape {
    /// Channels (features).
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

impl MapShape {
    /// `c x h x w`.
    pub const fn new(c: usize, h: usize, w: usize) -> Self {
        Self { c, h, w }
    }

    /// Values per sample (saturating).
    pub fn len(&self) -> usize {
        self.c.saturating_mul(self.h).saturating_mul(self.w)
    }

    /// Whether the map holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A sliding window: kernel, stride and zero padding along height and width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// `[kh, kw]`.
    pub kernel: Pair,
    /// `[sh, sw]`.
    pub stride: Pair,
    /// `[ph, pw]` on each side.
    pub padding: Pair,
}

/// What a layer computes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LayerOp {
    /// 2-D cross-correlation (no groups); parameters: weight, then bias if `bias`.
    Conv2d {
        /// Output channels.
        out_channels: usize,
        /// Kernel, stride and padding.
        window: Window,
        /// Whether the layer has a bias.
        bias: bool,
    },
    /// `y = x W^T + b` on the input flattened; parameters: weight, then bias if `bias`.
    Linear {
        /// Output features.
        out_features: usize,
        /// Whether the layer has a bias.
        bias: bool,
    },
    /// Eval-mode batch normalisation,
    /// `y = (x - mean) / sqrt(var + eps) * gamma + beta`; parameters: gamma, beta, mean, var.
    BatchNorm {
        /// Variance epsilon (PyTorch's default is `1e-5`).
        eps: f32,
    },
    /// `max(x, 0)`.
    Relu,
    /// Max pooling (padding counts as `-inf`).
    MaxPool(Window),
    /// Average pooling (padded positions count as zeros).
    AvgPool(Window),
    /// Mean over the positions: `C x H x W -> C x 1 x 1`.
    GlobalAvgPool,
    /// The sum of the layer's input and node `other`, of the same shape (residual add).
    Add {
        /// The second node added.
        other: usize,
    },
}

/// One layer: its op and the node it reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layer {
    /// What it computes.
    pub op: LayerOp,
    /// The node it reads: 0 for the network input, `l + 1` for layer `l`'s output.
    pub input: usize,
}

/// A network: input shape, layers in order, outputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Network<'a> {
    /// Per-sample input shape.
    pub input: MapShape,
    /// Layers; layer `l` computes node `l + 1`.
    pub layers: &'a [Layer],
    /// Nodes the caller reads after a run (kept until the run ends).
    pub outputs: &'a [usize],
}

/// Why a network description or a forward pass was refused.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CompactError {
    /// More layers than [`MAX_LAYERS`], or none.
    LayerCount {
        /// Layers given.
        layers: usize,
    },
    /// The input shape has no value.
    EmptyInput,
    /// A layer reads a node that is not earlier than its own.
    NodeOrder {
        /// The layer.
        layer: usize,
        /// The node it reads.
        node: usize,
    },
    /// An output names no node.
    UnknownOutput {
        /// Position in the outputs.
        output: usize,
        /// The node named.
        node: usize,
    },
    /// A conv or pooling window does not fit its input (zero kernel or stride, kernel larger
    /// than the padded input, padding as large as the kernel).
    Window {
        /// The layer.
        layer: usize,
        /// Its input shape.
        input: MapShape,
        /// The window.
        window: Window,
    },
    /// A conv or linear layer with no output, or a layer whose sizes overflow.
    Size {
        /// The layer.
        layer: usize,
    },
    /// The two inputs of an add differ in shape.
    AddShapes {
        /// The layer.
        layer: usize,
        /// Its input's shape.
        input: MapShape,
        /// The other node's shape.
        other: MapShape,
    },
    /// A buffer is shorter (or, for the parameters, not exactly as long) as needed.
    Buffer {
        /// Which buffer.
        what: &'static str,
        /// Values needed.
        needed: usize,
        /// Values given.
        provided: usize,
    },
    /// A layer kernel failed.
    Kernel {
        /// The layer.
        layer: usize,
        /// The kernel's error.
        source: ForwardError,
    },
}

impl fmt::Display for CompactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompactError::LayerCount { layers } => {
                write!(f, "{layers} layers: a network has 1 to {MAX_LAYERS}")
            }
            CompactError::EmptyInput => write!(f, "the input shape holds no value"),
            CompactError::NodeOrder { layer, node } => write!(
                f,
                "layer {layer} reads node {node}, which is not earlier than its own node {}",
                layer + 1
            ),
            CompactError::UnknownOutput { output, node } => {
                write!(f, "output {output} names node {node}, which does not exist")
            }
            CompactError::Window {
                layer,
                input,
                window,
            } => write!(
                f,
                "layer {layer}: window {:?} stride {:?} padding {:?} does not fit its \
                 {}x{}x{} input",
                window.kernel, window.stride, window.padding, input.c, input.h, input.w
            ),
            CompactError::Size { layer } => {
                write!(f, "layer {layer} has no output or sizes that overflow")
            }
            CompactError::AddShapes {
                layer,
                input,
                other,
            } => write!(
                f,
                "layer {layer} adds a {}x{}x{} map to a {}x{}x{} map",
                other.c, other.h, other.w, input.c, input.h, input.w
            ),
            CompactError::Buffer {
                what,
                needed,
                provided,
            } => write!(f, "{what} holds {provided} values, {needed} needed"),
            CompactError::Kernel { layer, .. } => write!(f, "layer {layer}: kernel failed"),
        }
    }
}

impl core::error::Error for CompactError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            CompactError::Kernel { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A checked network with its shapes, parameter layout and buffer plan.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactPlan<'a> {
    net: Network<'a>,
    shapes: heapless::Vec<MapShape, MAX_NODES>,
    /// Per layer: where its parameters start.
    param_start: heapless::Vec<usize, MAX_LAYERS>,
    params_len: usize,
    /// Per node: its activation slot.
    slot: heapless::Vec<usize, MAX_NODES>,
    slots: usize,
    slot_len: usize,
    kernel_len: usize,
}

/// `in_shape`'s output under `window` with `c` channels, if the window fits.
fn window_shape(in_shape: MapShape, window: &Window, c: usize) -> Option<MapShape> {
    let g = geometry(in_shape, window)?;
    Some(MapShape::new(c, g.out_h, g.out_w))
}

fn geometry(s: MapShape, w: &Window) -> Option<ConvGeometry> {
    if w.padding[0] >= w.kernel[0] || w.padding[1] >= w.kernel[1] || s.h == 0 || s.w == 0 {
        return None;
    }
    ConvGeometry::new(s.c, s.h, s.w, w.kernel, w.stride, w.padding)
}

impl<'a> CompactPlan<'a> {
    /// Checks `net` and plans its forward pass.
    pub fn new(net: Network<'a>) -> Result<Self, CompactError> {
        let n = net.layers.len();
        if n == 0 || n > MAX_LAYERS {
            return Err(CompactError::LayerCount { layers: n });
        }
        if net.input.is_empty() || net.input.len() == usize::MAX {
            return Err(CompactError::EmptyInput);
        }
        let mut plan = CompactPlan {
            net,
            shapes: heapless::Vec::new(),
            param_start: heapless::Vec::new(),
            params_len: 0,
            slot: heapless::Vec::new(),
            slots: 0,
            slot_len: 0,
            kernel_len: 0,
        };
        let _ = plan.shapes.push(net.input);
        for (l, layer) in net.layers.iter().enumerate() {
            plan.add_layer(l, layer)?;
        }
        for (output, &node) in net.outputs.iter().enumerate() {
            if node > n {
                return Err(CompactError::UnknownOutput { output, node });
            }
        }
        plan.assign_slots();
        Ok(plan)
    }

    /// Shape, parameters and kernel scratch of layer `l`.
    fn add_layer(&mut self, l: usize, layer: &Layer) -> Result<(), CompactError> {
        let read = |node: usize| {
            self.shapes
                .get(node)
                .copied()
                .ok_or(CompactError::NodeOrder { layer: l, node })
        };
        let s = read(layer.input)?;
        let size = || CompactError::Size { layer: l };
        let bad_window = |window: Window| CompactError::Window {
            layer: l,
            input: s,
            window,
        };
        let (shape, params, kernel) = match layer.op {
            LayerOp::Conv2d {
                out_channels,
                window,
                bias,
            } => {
                let g = geometry(s, &window).ok_or_else(|| bad_window(window))?;
                let w = out_channels.checked_mul(g.patch_len()).ok_or_else(size)?;
                let scratch = layers::conv2d_scratch_len(&g, out_channels, 1);
                let out = MapShape::new(out_channels, g.out_h, g.out_w);
                (
                    out,
                    w.saturating_add(usize::from(bias) * out_channels),
                    scratch,
                )
            }
            LayerOp::Linear { out_features, bias } => {
                let w = out_features.checked_mul(s.len()).ok_or_else(size)?;
                let scratch = layers::linear_scratch_len(1, s.len(), out_features);
                let out = MapShape::new(out_features, 1, 1);
                (
                    out,
                    w.saturating_add(usize::from(bias) * out_features),
                    scratch,
                )
            }
            LayerOp::BatchNorm { .. } => (s, s.c.saturating_mul(4), s.c.saturating_mul(2)),
            LayerOp::Relu => (s, 0, 0),
            LayerOp::MaxPool(window) | LayerOp::AvgPool(window) => (
                window_shape(s, &window, s.c).ok_or_else(|| bad_window(window))?,
                0,
                0,
            ),
            LayerOp::GlobalAvgPool => (MapShape::new(s.c, 1, 1), 0, 0),
            LayerOp::Add { other } => {
                let o = read(other)?;
                if o != s {
                    return Err(CompactError::AddShapes {
                        layer: l,
                        input: s,
                        other: o,
                    });
                }
                (s, 0, 0)
            }
        };
        if shape.is_empty() || shape.len() == usize::MAX || params == usize::MAX {
            return Err(size());
        }
        let _ = self.param_start.push(self.params_len);
        self.params_len = self.params_len.checked_add(params).ok_or_else(size)?;
        self.kernel_len = self.kernel_len.max(kernel);
        let _ = self.shapes.push(shape);
        Ok(())
    }

    /// Gives every node a slot no node alive at the same time has: a node lives from its
    /// computation to its last reader (to the end for outputs).
    fn assign_slots(&mut self) {
        let nodes = self.shapes.len();
        let mut last = [0usize; MAX_NODES];
        for (l, layer) in self.net.layers.iter().enumerate() {
            last[layer.input] = last[layer.input].max(l + 1);
            if let LayerOp::Add { other } = layer.op {
                last[other] = last[other].max(l + 1);
            }
        }
        for &o in self.net.outputs {
            last[o] = usize::MAX;
        }
        // free_at[s]: the first node that may reuse slot s.
        let mut free_at: heapless::Vec<usize, MAX_NODES> = heapless::Vec::new();
        for node in 0..nodes {
            let reusable = free_at.iter().position(|&f| f <= node);
            let s = match reusable {
                Some(s) => s,
                None => {
                    let _ = free_at.push(0);
                    free_at.len() - 1
                }
            };
            // A node nobody reads is still written (and observed) at its own step.
            free_at[s] = last[node].max(node).saturating_add(1);
            let _ = self.slot.push(s);
            self.slot_len = self.slot_len.max(self.shapes[node].len());
        }
        self.slots = free_at.len();
    }

    /// The network planned.
    pub fn network(&self) -> &Network<'a> {
        &self.net
    }

    /// Per-sample shape of `node` (`None` past the last node).
    pub fn shape(&self, node: usize) -> Option<MapShape> {
        self.shapes.get(node).copied()
    }

    /// f32 values of all parameters.
    pub fn params_len(&self) -> usize {
        self.params_len
    }

    /// Where layer `l`'s parameters are in the parameter buffer (empty for layers without).
    pub fn param_range(&self, l: usize) -> Range<usize> {
        let start = self.param_start.get(l).copied().unwrap_or(self.params_len);
        let end = self
            .param_start
            .get(l + 1)
            .copied()
            .unwrap_or(self.params_len);
        start..end
    }

    /// Activation slots the run keeps at once.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// f32 values of scratch [`CompactPlan::run`] needs: the activation slots, then the
    /// kernels' scratch.
    pub fn scratch_len(&self) -> usize {
        self.slots
            .saturating_mul(self.slot_len)
            .saturating_add(self.kernel_len)
    }

    fn slot_range(&self, node: usize) -> Range<usize> {
        let start = self.slot[node] * self.slot_len;
        start..start + self.shapes[node].len()
    }

    /// Where the caller writes one sample (`input.len()` values, NCHW) before a run.
    pub fn input_mut<'s>(&self, scratch: &'s mut [f32]) -> Result<&'s mut [f32], CompactError> {
        self.check_scratch(scratch.len())?;
        Ok(&mut scratch[self.slot_range(0)])
    }

    /// The activations of `node` after a run: valid for the outputs, and for any node inside
    /// the observer of its own step. `None` past the last node or for a short scratch.
    pub fn node<'s>(&self, node: usize, scratch: &'s [f32]) -> Option<&'s [f32]> {
        if node >= self.shapes.len() || scratch.len() < self.scratch_len() {
            return None;
        }
        Some(&scratch[self.slot_range(node)])
    }

    fn check_scratch(&self, provided: usize) -> Result<(), CompactError> {
        let needed = self.scratch_len();
        if provided < needed {
            return Err(CompactError::Buffer {
                what: "scratch",
                needed,
                provided,
            });
        }
        Ok(())
    }

    /// Runs the sample in [`CompactPlan::input_mut`] through the network with `params`
    /// (exactly [`CompactPlan::params_len`] values), calling `observe(node, activations)`
    /// for the input and then for each layer's output as it is computed.
    pub fn run(
        &self,
        params: &[f32],
        scratch: &mut [f32],
        observe: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<(), CompactError> {
        self.run_to(params, scratch, self.net.layers.len(), observe)
    }

    /// [`CompactPlan::run`] up to node `last` only (layers `0..last`; later layers, and
    /// their parameters, are not read). Afterwards [`CompactPlan::node`] of `last` holds its
    /// activations, whether or not it is an output.
    pub fn run_to(
        &self,
        params: &[f32],
        scratch: &mut [f32],
        last: usize,
        observe: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<(), CompactError> {
        if params.len() != self.params_len {
            return Err(CompactError::Buffer {
                what: "parameters",
                needed: self.params_len,
                provided: params.len(),
            });
        }
        self.check_scratch(scratch.len())?;
        let (acts, kernel) = scratch.split_at_mut(self.slots * self.slot_len);
        observe(0, &acts[self.slot_range(0)]);
        for (l, layer) in self.net.layers.iter().enumerate().take(last) {
            let node = l + 1;
            let out = self.slot_range(node);
            // The output's slot differs from every live input's, so split around it.
            let (before, rest) = acts.split_at_mut(out.start);
            let (dst, after) = rest.split_at_mut(out.len());
            let src = |n: usize| -> &[f32] {
                let r = self.slot_range(n);
                if r.start < out.start {
                    &before[r]
                } else {
                    &after[r.start - out.end..r.end - out.end]
                }
            };
            let other = match layer.op {
                LayerOp::Add { other } => src(other),
                _ => &[],
            };
            let p = &params[self.param_range(l)];
            self.compute(l, layer, p, [src(layer.input), other], dst, kernel)
                .map_err(|source| CompactError::Kernel { layer: l, source })?;
            observe(node, dst);
        }
        Ok(())
    }

    /// Computes layer `l` with parameters `p` from its input `x` (and, for an add, the other
    /// node `y`) into `dst`.
    fn compute(
        &self,
        l: usize,
        layer: &Layer,
        p: &[f32],
        [x, y]: [&[f32]; 2],
        dst: &mut [f32],
        kernel: &mut [f32],
    ) -> Result<(), ForwardError> {
        let s = self.shapes[layer.input];
        let out = self.shapes[l + 1];
        match layer.op {
            LayerOp::Conv2d { window, bias, .. } => {
                let g = geometry(s, &window).expect("checked by the plan");
                let (w, b) = p.split_at(out.c * g.patch_len());
                let b = bias.then_some(b);
                layers::conv2d(&g, out.c, w, b, x, 1, 1, dst, kernel)
            }
            LayerOp::Linear { bias, .. } => {
                let (w, b) = p.split_at(out.c * s.len());
                let b = bias.then_some(b);
                layers::linear(w, b, s.len(), out.c, x, 1, dst, kernel)
            }
            LayerOp::BatchNorm { eps } => {
                let c = s.c;
                let (scale, shift) = kernel[..2 * c].split_at_mut(c);
                let (gamma, rest) = p.split_at(c);
                let (beta, rest) = rest.split_at(c);
                let (mean, var) = rest.split_at(c);
                layers::batchnorm_coefficients(gamma, beta, mean, var, eps, scale, shift);
                dst.copy_from_slice(x);
                layers::channel_affine(dst, c, s.h * s.w, scale, shift);
                Ok(())
            }
            LayerOp::Relu => {
                dst.copy_from_slice(x);
                layers::relu(dst);
                Ok(())
            }
            LayerOp::MaxPool(window) | LayerOp::AvgPool(window) => {
                let g = geometry(s, &window).expect("checked by the plan");
                let is_max = matches!(layer.op, LayerOp::MaxPool(_));
                layers::pool2d(&g, is_max, x, 1, dst);
                Ok(())
            }
            LayerOp::GlobalAvgPool => {
                layers::global_avg_pool(x, s.c, s.h * s.w, dst);
                Ok(())
            }
            LayerOp::Add { .. } => {
                dst.copy_from_slice(x);
                layers::add_assign(dst, y);
                Ok(())
            }
        }
    }
}
