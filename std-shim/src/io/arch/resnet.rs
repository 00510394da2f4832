//! ResNets: the CIFAR-style ResNet-20 family of the fixtures and torchvision ResNet-18/34/50/101.
//!
//! CIFAR family (`conv1`, `bn1`, `layers.{k}.{conv1,bn1,conv2,bn2,shortcut.0,shortcut.1}`,
//! `head`): a 3x3 stem, then BasicBlocks; a block with a `shortcut` projection downsamples with
//! stride 2 unless it is block 0; global average pool, linear `head`.
//!
//! torchvision (`conv1`, `bn1`, `layer{1..4}.{j}.{conv1..3,bn1..3,downsample.0/1}`, `fc`): a 7x7
//! stride-2 stem, 3x3 stride-2 max-pool, four stages of BasicBlocks (ResNet-18/34) or
//! Bottlenecks (50/101, stride on the 3x3 conv as in torchvision v1.5); the first block of stages
//! 2-4 has stride 2. Global average pool, linear `fc`.

use pleas_core::graph::{Graph, GraphError, NodeId, Op, Shape, Weights};

/// Batch-norm epsilon of PyTorch's `BatchNorm2d` default.
pub const BN_EPS: f32 = 1e-5;

fn conv(
    g: &mut Graph,
    x: NodeId,
    name: &str,
    in_c: usize,
    out_c: usize,
    k: usize,
    s: usize,
    p: usize,
) -> Result<NodeId, GraphError> {
    g.push(
        name,
        Op::Conv2d {
            weight: format!("{name}.weight"),
            bias: None,
            in_channels: in_c,
            out_channels: out_c,
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
        },
        &[x],
    )
}

fn bn(g: &mut Graph, x: NodeId, name: &str, c: usize) -> Result<NodeId, GraphError> {
    g.push(
        name,
        Op::BatchNorm {
            weight: format!("{name}.weight"),
            bias: format!("{name}.bias"),
            running_mean: format!("{name}.running_mean"),
            running_var: format!("{name}.running_var"),
            channels: c,
            eps: BN_EPS,
        },
        &[x],
    )
}

fn relu(g: &mut Graph, x: NodeId, name: &str) -> Result<NodeId, GraphError> {
    g.push(name, Op::Relu, &[x])
}

fn head(
    g: &mut Graph,
    x: NodeId,
    name: &str,
    in_f: usize,
    classes: usize,
) -> Result<(), GraphError> {
    let p = g.push("pool", Op::GlobalAvgPool, &[x])?;
    let h = g.push(
        name,
        Op::Linear {
            weight: format!("{name}.weight"),
            bias: Some(format!("{name}.bias")),
            in_features: in_f,
            out_features: classes,
        },
        &[p],
    )?;
    g.add_output(name, h)
}

/// One BasicBlock of the CIFAR family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CifarBlock {
    /// Output channels (both convs).
    pub out: usize,
    /// Stride of `conv1` (and of the shortcut).
    pub stride: usize,
    /// Whether the block has a `shortcut.0/1` projection.
    pub shortcut: bool,
}

/// A CIFAR-style ResNet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CifarSpec {
    /// Input channels (1 for the Fashion-MNIST fixtures).
    pub in_channels: usize,
    /// Stem width.
    pub stem: usize,
    /// Blocks in order.
    pub blocks: Vec<CifarBlock>,
    /// Head outputs.
    pub classes: usize,
}

impl CifarSpec {
    /// ResNet-20 at width multiplier `w`: stages of 3 blocks, widths 16w / 32w / 64w.
    pub fn resnet20(w: usize, in_channels: usize, classes: usize) -> Self {
        let mut blocks = Vec::new();
        for (stage, width) in [16 * w, 32 * w, 64 * w].into_iter().enumerate() {
            for j in 0..3 {
                let down = stage > 0 && j == 0;
                blocks.push(CifarBlock {
                    out: width,
                    stride: if down { 2 } else { 1 },
                    shortcut: down,
                });
            }
        }
        Self {
            in_channels,
            stem: 16 * w,
            blocks,
            classes,
        }
    }

    /// The default input: 28x28 for 1 channel (Fashion-MNIST / MNIST), else 32x32 (CIFAR).
    pub fn default_input(&self) -> Shape {
        let side = if self.in_channels == 1 { 28 } else { 32 };
        Shape::new(self.in_channels, side, side)
    }
}

/// The graph of a CIFAR-style ResNet.
pub fn build_cifar(spec: &CifarSpec, input: Shape) -> Result<Graph, GraphError> {
    let mut g = Graph::new(input);
    let x = conv(&mut g, 0, "conv1", spec.in_channels, spec.stem, 3, 1, 1)?;
    let x = bn(&mut g, x, "bn1", spec.stem)?;
    let mut x = relu(&mut g, x, "relu")?;
    let mut c = spec.stem;
    for (k, b) in spec.blocks.iter().enumerate() {
        let p = format!("layers.{k}");
        let y = conv(&mut g, x, &format!("{p}.conv1"), c, b.out, 3, b.stride, 1)?;
        let y = bn(&mut g, y, &format!("{p}.bn1"), b.out)?;
        let y = relu(&mut g, y, &format!("{p}.relu1"))?;
        let y = conv(&mut g, y, &format!("{p}.conv2"), b.out, b.out, 3, 1, 1)?;
        let y = bn(&mut g, y, &format!("{p}.bn2"), b.out)?;
        let s = if b.shortcut {
            let s = conv(
                &mut g,
                x,
                &format!("{p}.shortcut.0"),
                c,
                b.out,
                1,
                b.stride,
                0,
            )?;
            bn(&mut g, s, &format!("{p}.shortcut.1"), b.out)?
        } else {
            x
        };
        let a = g.push(format!("{p}.add"), Op::Add, &[y, s])?;
        x = relu(&mut g, a, &format!("{p}.relu2"))?;
        c = b.out;
    }
    head(&mut g, x, "head", c, spec.classes)?;
    Ok(g)
}

fn dim(weights: &Weights, name: &str, axis: usize) -> usize {
    weights
        .get(name)
        .and_then(|t| t.shape().get(axis).copied())
        .unwrap_or(0)
}

/// Whether the names look like the CIFAR family.
pub fn matches_cifar(weights: &Weights) -> bool {
    weights.contains_key("conv1.weight")
        && weights.contains_key("layers.0.conv1.weight")
        && weights.contains_key("head.weight")
}

/// The CIFAR spec the tensors describe (widths from weight shapes).
pub fn cifar_spec(weights: &Weights) -> CifarSpec {
    let mut blocks = Vec::new();
    let mut k = 0;
    while weights.contains_key(&format!("layers.{k}.conv1.weight")) {
        let shortcut = weights.contains_key(&format!("layers.{k}.shortcut.0.weight"));
        blocks.push(CifarBlock {
            out: dim(weights, &format!("layers.{k}.conv1.weight"), 0),
            stride: if shortcut && k > 0 { 2 } else { 1 },
            shortcut,
        });
        k += 1;
    }
    CifarSpec {
        in_channels: dim(weights, "conv1.weight", 1),
        stem: dim(weights, "conv1.weight", 0),
        blocks,
        classes: dim(weights, "head.weight", 0),
    }
}

/// A torchvision ResNet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorchvisionSpec {
    /// Bottleneck blocks (ResNet-50/101) rather than BasicBlocks (18/34).
    pub bottleneck: bool,
    /// Blocks per stage.
    pub blocks: [usize; 4],
    /// Input channels.
    pub in_channels: usize,
    /// Stem width (64).
    pub stem: usize,
    /// Inner width of each stage (64, 128, 256, 512); outputs are 4x that for bottlenecks.
    pub planes: [usize; 4],
    /// `fc` outputs.
    pub classes: usize,
}

impl TorchvisionSpec {
    /// ResNet-18, -34, -50 or -101 with `classes` outputs, or `None` for another depth.
    pub fn standard(depth: usize, classes: usize) -> Option<Self> {
        let (bottleneck, blocks) = match depth {
            18 => (false, [2, 2, 2, 2]),
            34 => (false, [3, 4, 6, 3]),
            50 => (true, [3, 4, 6, 3]),
            101 => (true, [3, 4, 23, 3]),
            _ => return None,
        };
        Some(Self {
            bottleneck,
            blocks,
            in_channels: 3,
            stem: 64,
            planes: [64, 128, 256, 512],
            classes,
        })
    }

    /// The ImageNet input, `C x 224 x 224`.
    pub fn default_input(&self) -> Shape {
        Shape::new(self.in_channels, 224, 224)
    }
}

/// Whether the names look like a torchvision ResNet.
pub fn matches_torchvision(weights: &Weights) -> bool {
    weights.contains_key("conv1.weight")
        && weights.contains_key("layer1.0.conv1.weight")
        && weights.contains_key("fc.weight")
}

/// The torchvision spec the tensors describe.
pub fn torchvision_spec(weights: &Weights) -> TorchvisionSpec {
    let bottleneck = weights.contains_key("layer1.0.conv3.weight");
    let mut blocks = [0; 4];
    let mut planes = [0; 4];
    for s in 0..4 {
        while weights.contains_key(&format!("layer{}.{}.conv1.weight", s + 1, blocks[s])) {
            blocks[s] += 1;
        }
        planes[s] = dim(weights, &format!("layer{}.0.conv1.weight", s + 1), 0);
    }
    TorchvisionSpec {
        bottleneck,
        blocks,
        in_channels: dim(weights, "conv1.weight", 1),
        stem: dim(weights, "conv1.weight", 0),
        planes,
        classes: dim(weights, "fc.weight", 0),
    }
}

/// The graph of a torchvision ResNet.
pub fn build_torchvision(spec: &TorchvisionSpec, input: Shape) -> Result<Graph, GraphError> {
    let mut g = Graph::new(input);
    let x = conv(&mut g, 0, "conv1", spec.in_channels, spec.stem, 7, 2, 3)?;
    let x = bn(&mut g, x, "bn1", spec.stem)?;
    let x = relu(&mut g, x, "relu")?;
    let mut x = g.push(
        "maxpool",
        Op::MaxPool {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
        },
        &[x],
    )?;
    let mut c = spec.stem;
    let expansion = if spec.bottleneck { 4 } else { 1 };
    for s in 0..4 {
        let planes = spec.planes[s];
        let out = planes * expansion;
        for j in 0..spec.blocks[s] {
            let p = format!("layer{}.{j}", s + 1);
            let stride = if s > 0 && j == 0 { 2 } else { 1 };
            let y = if spec.bottleneck {
                let y = conv(&mut g, x, &format!("{p}.conv1"), c, planes, 1, 1, 0)?;
                let y = bn(&mut g, y, &format!("{p}.bn1"), planes)?;
                let y = relu(&mut g, y, &format!("{p}.relu1"))?;
                let y = conv(
                    &mut g,
                    y,
                    &format!("{p}.conv2"),
                    planes,
                    planes,
                    3,
                    stride,
                    1,
                )?;
                let y = bn(&mut g, y, &format!("{p}.bn2"), planes)?;
                let y = relu(&mut g, y, &format!("{p}.relu2"))?;
                let y = conv(&mut g, y, &format!("{p}.conv3"), planes, out, 1, 1, 0)?;
                bn(&mut g, y, &format!("{p}.bn3"), out)?
            } else {
                let y = conv(&mut g, x, &format!("{p}.conv1"), c, planes, 3, stride, 1)?;
                let y = bn(&mut g, y, &format!("{p}.bn1"), planes)?;
                let y = relu(&mut g, y, &format!("{p}.relu1"))?;
                let y = conv(&mut g, y, &format!("{p}.conv2"), planes, planes, 3, 1, 1)?;
                bn(&mut g, y, &format!("{p}.bn2"), planes)?
            };
            let short = if stride != 1 || c != out {
                let d = conv(
                    &mut g,
                    x,
                    &format!("{p}.downsample.0"),
                    c,
                    out,
                    1,
                    stride,
                    0,
                )?;
                bn(&mut g, d, &format!("{p}.downsample.1"), out)?
            } else {
                x
            };
            let a = g.push(format!("{p}.add"), Op::Add, &[y, short])?;
            x = relu(&mut g, a, &format!("{p}.relu"))?;
            c = out;
        }
    }
    head(&mut g, x, "fc", c, spec.classes)?;
    Ok(g)
}
