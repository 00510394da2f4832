//! The dense expansion of a conv or linear layer: one weight tensor over all input channels
//! (`[out, in, kh, kw]` or `[out, in]`, PyTorch layout) and one bias. For a block-structured
//! (merged) layer the cross blocks are zeros, so the dense layer computes exactly what the
//! blocks compute, at `out x in` multiply-adds per position instead of the blocks' sum. Every
//! writer that needs plain layers (ONNX `--blocks dense`, a PyTorch state_dict) uses
//! [`dense_layer`].

use pleas_core::graph::{Node, Op, Tensor, WeightBlock, Weights};

use super::ExportError;

/// A conv or linear layer's weights as one dense weight and an optional bias.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseLayer {
    /// `[out, in, kh, kw]` (conv) or `[out, in]` (linear).
    pub weight: Tensor,
    /// `[out]`; `None` when the layer (no block of it) has a bias.
    pub bias: Option<Tensor>,
}

fn tensor<'w>(
    node: &Node,
    weights: &'w Weights,
    name: &str,
    shape: &[usize],
) -> Result<&'w Tensor, ExportError> {
    weights
        .get(name)
        .filter(|t| t.shape() == shape)
        .ok_or_else(|| ExportError::Tensor {
            node: node.name.clone(),
            tensor: name.to_string(),
        })
}

/// Expands `blocks` into an `out x in x patch` weight (zeros outside the blocks) and a bias
/// (zeros for blocks without one; `None` if no block has one).
fn expand_blocks(
    node: &Node,
    weights: &Weights,
    blocks: &[WeightBlock],
    in_channels: usize,
    out_channels: usize,
    kernel: [usize; 2],
) -> Result<(Vec<f32>, Option<Vec<f32>>), ExportError> {
    let patch = kernel[0] * kernel[1];
    let mut w = vec![0.0f32; out_channels * in_channels * patch];
    let has_bias = blocks.iter().any(|b| b.bias.is_some());
    let mut bias = has_bias.then(|| vec![0.0f32; out_channels]);
    let mut row0 = 0;
    for b in blocks {
        let cols = b.cols();
        let shape: Vec<usize> = if patch == 1 && node_is_linear(node) {
            vec![b.rows, cols]
        } else {
            vec![b.rows, cols, kernel[0], kernel[1]]
        };
        let wt = tensor(node, weights, &b.weight, &shape)?.data();
        let channels: Vec<usize> = b.inputs.iter().flat_map(|r| r.clone()).collect();
        for r in 0..b.rows {
            let dst_row = (row0 + r) * in_channels * patch;
            for (j, &ch) in channels.iter().enumerate() {
                let src = (r * cols + j) * patch;
                let dst = dst_row + ch * patch;
                w[dst..dst + patch].copy_from_slice(&wt[src..src + patch]);
            }
        }
        if let (Some(name), Some(out)) = (&b.bias, bias.as_mut()) {
            let bt = tensor(node, weights, name, &[b.rows])?.data();
            out[row0..row0 + b.rows].copy_from_slice(bt);
        }
        row0 += b.rows;
    }
    Ok((w, bias))
}

fn node_is_linear(node: &Node) -> bool {
    matches!(node.op, Op::Linear { .. } | Op::BlockLinear { .. })
}

fn made(shape: Vec<usize>, data: Vec<f32>, node: &Node) -> Result<Tensor, ExportError> {
    Tensor::new(shape, data).map_err(|source| ExportError::DenseTensor {
        node: node.name.clone(),
        source,
    })
}

/// The dense weights of `node` if it is a conv or linear layer (dense or block-structured),
/// `None` for any other op. A dense layer's tensors are returned as stored; a block layer's
/// are expanded with zero cross blocks. A missing tensor or one of the wrong shape is an
/// error naming it.
pub fn dense_layer(node: &Node, weights: &Weights) -> Result<Option<DenseLayer>, ExportError> {
    let get = |name: &str, shape: &[usize]| tensor(node, weights, name, shape).cloned();
    let layer = match &node.op {
        Op::Linear {
            weight,
            bias,
            in_features,
            out_features,
        } => DenseLayer {
            weight: get(weight, &[*out_features, *in_features])?,
            bias: bias
                .as_deref()
                .map(|b| get(b, &[*out_features]))
                .transpose()?,
        },
        Op::Conv2d {
            weight,
            bias,
            in_channels,
            out_channels,
            kernel,
            ..
        } => DenseLayer {
            weight: get(weight, &[*out_channels, *in_channels, kernel[0], kernel[1]])?,
            bias: bias
                .as_deref()
                .map(|b| get(b, &[*out_channels]))
                .transpose()?,
        },
        Op::BlockLinear {
            in_features,
            out_features,
            blocks,
        } => {
            let (w, b) = expand_blocks(node, weights, blocks, *in_features, *out_features, [1, 1])?;
            DenseLayer {
                weight: made(vec![*out_features, *in_features], w, node)?,
                bias: b.map(|b| made(vec![*out_features], b, node)).transpose()?,
            }
        }
        Op::BlockConv2d {
            in_channels,
            out_channels,
            kernel,
            blocks,
            ..
        } => {
            let (w, b) =
                expand_blocks(node, weights, blocks, *in_channels, *out_channels, *kernel)?;
            DenseLayer {
                weight: made(
                    vec![*out_channels, *in_channels, kernel[0], kernel[1]],
                    w,
                    node,
                )?,
                bias: b.map(|b| made(vec![*out_channels], b, node)).transpose()?,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(layer))
}
