//! Output-shape inference per op, and the error type of graph construction and checking.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::{Op, Pair, Shape, WeightBlock};
pub use crate::window::window_out;

/// What is wrong with the blocks of a block-structured layer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlockFault {
    /// The layer has no block.
    NoBlocks,
    /// A block has no output row.
    NoRows {
        /// The block's index.
        block: usize,
    },
    /// A block reads no input range.
    NoInputs {
        /// The block's index.
        block: usize,
    },
    /// A block's input range is empty, reaches past the layer's input channels, or does not
    /// start at or after the end of the block's previous range (ranges are ascending and
    /// disjoint).
    Range {
        /// The block's index.
        block: usize,
        /// The offending range.
        range: core::ops::Range<usize>,
        /// The layer's input channels.
        channels: usize,
    },
    /// The blocks' rows do not add up to the layer's output channels.
    RowSum {
        /// Output channels the layer declares.
        expected: usize,
        /// Sum of the blocks' rows (saturating).
        found: usize,
    },
}

impl fmt::Display for BlockFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockFault::NoBlocks => write!(f, "the layer has no block"),
            BlockFault::NoRows { block } => write!(f, "block {block} has no output row"),
            BlockFault::NoInputs { block } => write!(f, "block {block} reads no input range"),
            BlockFault::Range {
                block,
                range,
                channels,
            } => write!(
                f,
                "block {block}: input range {}..{} is empty, beyond the {channels} input \
                 channels, or not after the block's previous range",
                range.start, range.end
            ),
            BlockFault::RowSum { expected, found } => write!(
                f,
                "the blocks have {found} rows in all, the layer declares {expected} outputs"
            ),
        }
    }
}

impl core::error::Error for BlockFault {}

/// Checks the blocks of a block-structured layer over `in_channels` inputs with
/// `out_channels` outputs: at least one block, each with at least one row and a non-empty list
/// of non-empty, ascending, disjoint ranges within `0..in_channels`, rows adding up to
/// `out_channels`. Blocks are given as `(rows, input ranges)`.
pub fn check_blocks<'b>(
    in_channels: usize,
    out_channels: usize,
    blocks: impl IntoIterator<Item = (usize, &'b [core::ops::Range<usize>])>,
) -> Result<(), BlockFault> {
    let mut total = 0usize;
    let mut count = 0usize;
    for (block, (rows, ranges)) in blocks.into_iter().enumerate() {
        count += 1;
        if rows == 0 {
            return Err(BlockFault::NoRows { block });
        }
        if ranges.is_empty() {
            return Err(BlockFault::NoInputs { block });
        }
        let mut next = 0usize;
        for r in ranges {
            if r.start >= r.end || r.start < next || r.end > in_channels {
                return Err(BlockFault::Range {
                    block,
                    range: r.clone(),
                    channels: in_channels,
                });
            }
            next = r.end;
        }
        total = total.saturating_add(rows);
    }
    if count == 0 {
        return Err(BlockFault::NoBlocks);
    }
    if total != out_channels {
        return Err(BlockFault::RowSum {
            expected: out_channels,
            found: total,
        });
    }
    Ok(())
}

fn blocks(
    node: &str,
    in_channels: usize,
    out_channels: usize,
    blocks: &[WeightBlock],
) -> Result<(), GraphError> {
    check_blocks(
        in_channels,
        out_channels,
        blocks.iter().map(|b| (b.rows, b.inputs.as_slice())),
    )
    .map_err(|fault| GraphError::Block {
        node: String::from(node),
        fault,
    })
}

/// Why a graph could not be built, re-shaped or checked against its weights.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GraphError {
    /// Two nodes would share a name.
    DuplicateName {
        /// The repeated name.
        node: String,
    },
    /// A node reads a node id that is not (yet) in the graph.
    UnknownInput {
        /// The node being added.
        node: String,
        /// The offending input id.
        input: usize,
    },
    /// A node got the wrong number of inputs.
    InputCount {
        /// The node.
        node: String,
        /// What the op needs (for `add`, the minimum).
        expected: usize,
        /// What it got.
        found: usize,
    },
    /// The input's channels (or features) differ from what the op's parameters expect.
    ChannelMismatch {
        /// The node.
        node: String,
        /// Channels the op expects.
        expected: usize,
        /// Channels of its input.
        found: usize,
    },
    /// A linear layer got a spatial map (it needs `D x 1 x 1`; insert a flatten or pool).
    NotFlat {
        /// The node.
        node: String,
        /// Its input's shape.
        input: Shape,
    },
    /// The operands of an add differ in shape.
    AddShapes {
        /// The node.
        node: String,
        /// Shape of the first operand.
        first: Shape,
        /// Shape of the differing operand.
        other: Shape,
    },
    /// A kernel (after padding) is larger than its input, a stride is zero or a size is zero.
    Window {
        /// The node.
        node: String,
        /// Its input's shape.
        input: Shape,
        /// Kernel `[kh, kw]`.
        kernel: Pair,
        /// Stride `[sh, sw]`.
        stride: Pair,
        /// Padding `[ph, pw]`.
        padding: Pair,
    },
    /// The blocks of a block-structured layer do not fit it.
    Block {
        /// The node.
        node: String,
        /// What is wrong.
        fault: BlockFault,
    },
    /// A tensor a node reads is not in the weights.
    MissingTensor {
        /// The tensor name.
        tensor: String,
        /// The node that reads it.
        node: String,
    },
    /// A tensor has another shape than its node requires.
    TensorShape {
        /// The tensor name.
        tensor: String,
        /// Required shape.
        expected: Vec<usize>,
        /// Shape found.
        found: Vec<usize>,
    },
    /// A tensor holds a NaN or infinity.
    NonFinite {
        /// The tensor name.
        tensor: String,
        /// Flat index of the first non-finite element.
        index: usize,
    },
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GraphError::DuplicateName { node } => write!(f, "two nodes are named `{node}`"),
            GraphError::UnknownInput { node, input } => {
                write!(
                    f,
                    "node `{node}` reads node {input}, which is not in the graph yet"
                )
            }
            GraphError::InputCount {
                node,
                expected,
                found,
            } => write!(f, "node `{node}` needs {expected} input(s), got {found}"),
            GraphError::ChannelMismatch {
                node,
                expected,
                found,
            } => write!(
                f,
                "node `{node}` expects {expected} input channels, its input has {found}"
            ),
            GraphError::NotFlat { node, input } => write!(
                f,
                "linear node `{node}` needs a flat input, got {input} (add a flatten or pool)"
            ),
            GraphError::AddShapes { node, first, other } => {
                write!(f, "add node `{node}` mixes shapes {first} and {other}")
            }
            GraphError::Window {
                node,
                input,
                kernel,
                stride,
                padding,
            } => write!(
                f,
                "node `{node}`: kernel {}x{}, stride {}x{}, padding {}x{} do not fit input {input}",
                kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1]
            ),
            GraphError::Block { node, fault } => write!(f, "block layer `{node}`: {fault}"),
            GraphError::MissingTensor { tensor, node } => {
                write!(f, "tensor `{tensor}` (read by `{node}`) is missing")
            }
            GraphError::TensorShape {
                tensor,
                expected,
                found,
            } => write!(
                f,
                "tensor `{tensor}` has shape {found:?}, the architecture needs {expected:?}"
            ),
            GraphError::NonFinite { tensor, index } => {
                write!(
                    f,
                    "tensor `{tensor}` holds a non-finite value at flat index {index}"
                )
            }
        }
    }
}

// The block fault is part of the message, so it is not also reported as a source (error
// chains would print it twice).
impl core::error::Error for GraphError {}

fn window(
    node: &str,
    input: Shape,
    c: usize,
    kernel: Pair,
    stride: Pair,
    padding: Pair,
) -> Result<Shape, GraphError> {
    let err = || GraphError::Window {
        node: String::from(node),
        input,
        kernel,
        stride,
        padding,
    };
    let h = window_out(input.h, kernel[0], stride[0], padding[0]).ok_or_else(err)?;
    let w = window_out(input.w, kernel[1], stride[1], padding[1]).ok_or_else(err)?;
    // A window made only of padding would read no input at all.
    if padding[0] >= kernel[0] || padding[1] >= kernel[1] || input.h == 0 || input.w == 0 {
        return Err(err());
    }
    Ok(Shape::new(c, h, w))
}

fn inputs(node: &str, expected: usize, found: &[Shape]) -> Result<(), GraphError> {
    if found.len() != expected {
        return Err(GraphError::InputCount {
            node: String::from(node),
            expected,
            found: found.len(),
        });
    }
    Ok(())
}

fn channels(node: &str, expected: usize, found: Shape) -> Result<(), GraphError> {
    if expected != found.c {
        return Err(GraphError::ChannelMismatch {
            node: String::from(node),
            expected,
            found: found.c,
        });
    }
    Ok(())
}

/// The per-sample output shape of `op` over inputs of shapes `ins`.
pub fn infer(node: &str, op: &Op, ins: &[Shape]) -> Result<Shape, GraphError> {
    match op {
        Op::Input => Err(GraphError::InputCount {
            node: String::from(node),
            expected: 0,
            found: ins.len(),
        }),
        Op::Linear {
            in_features,
            out_features,
            ..
        } => {
            inputs(node, 1, ins)?;
            if !ins[0].is_flat() {
                return Err(GraphError::NotFlat {
                    node: String::from(node),
                    input: ins[0],
                });
            }
            channels(node, *in_features, ins[0])?;
            Ok(Shape::flat(*out_features))
        }
        Op::Conv2d {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            ..
        } => {
            inputs(node, 1, ins)?;
            channels(node, *in_channels, ins[0])?;
            window(node, ins[0], *out_channels, *kernel, *stride, *padding)
        }
        Op::BlockLinear {
            in_features,
            out_features,
            blocks: b,
        } => {
            inputs(node, 1, ins)?;
            if !ins[0].is_flat() {
                return Err(GraphError::NotFlat {
                    node: String::from(node),
                    input: ins[0],
                });
            }
            channels(node, *in_features, ins[0])?;
            blocks(node, *in_features, *out_features, b)?;
            Ok(Shape::flat(*out_features))
        }
        Op::BlockConv2d {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            blocks: b,
        } => {
            inputs(node, 1, ins)?;
            channels(node, *in_channels, ins[0])?;
            blocks(node, *in_channels, *out_channels, b)?;
            window(node, ins[0], *out_channels, *kernel, *stride, *padding)
        }
        Op::BatchNorm { channels: c, .. } => {
            inputs(node, 1, ins)?;
            channels(node, *c, ins[0])?;
            Ok(ins[0])
        }
        Op::Relu => {
            inputs(node, 1, ins)?;
            Ok(ins[0])
        }
        Op::Add => {
            if ins.len() < 2 {
                return Err(GraphError::InputCount {
                    node: String::from(node),
                    expected: 2,
                    found: ins.len(),
                });
            }
            if let Some(other) = ins.iter().find(|s| **s != ins[0]) {
                return Err(GraphError::AddShapes {
                    node: String::from(node),
                    first: ins[0],
                    other: *other,
                });
            }
            Ok(ins[0])
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
            inputs(node, 1, ins)?;
            window(node, ins[0], ins[0].c, *kernel, *stride, *padding)
        }
        Op::GlobalAvgPool => {
            inputs(node, 1, ins)?;
            if ins[0].h == 0 || ins[0].w == 0 {
                return Err(GraphError::Window {
                    node: String::from(node),
                    input: ins[0],
                    kernel: [ins[0].h, ins[0].w],
                    stride: [1, 1],
                    padding: [0, 0],
                });
            }
            Ok(Shape::flat(ins[0].c))
        }
        Op::Flatten => {
            inputs(node, 1, ins)?;
            Ok(Shape::flat(ins[0].len()))
        }
    }
}
