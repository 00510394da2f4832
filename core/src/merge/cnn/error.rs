//! Why a CNN merge was refused or failed.

use core::fmt;

use crate::forward::compact::CompactError;
use crate::merge::driver::{DriverError, Model};

/// Which input an error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CnnOperand {
    /// A model's parameters.
    Params(Model),
    /// The merge samples.
    Samples,
}

impl fmt::Display for CnnOperand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CnnOperand::Params(m) => write!(f, "the parameters of {m}"),
            CnnOperand::Samples => f.write_str("the merge samples"),
        }
    }
}

/// Which caller buffer is too short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CnnBuffer {
    /// The merged parameters (`f32`).
    Output,
    /// The f64 scratch.
    Scratch,
    /// The f32 scratch of the forward passes.
    Forward,
    /// The index scratch.
    Indices,
}

impl fmt::Display for CnnBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CnnBuffer::Output => "output buffer",
            CnnBuffer::Scratch => "f64 scratch",
            CnnBuffer::Forward => "forward scratch",
            CnnBuffer::Indices => "index scratch",
        })
    }
}

/// Why [`cnn_merge_plan`](super::cnn_merge_plan) or [`cnn_merge`](super::cnn_merge) refused
/// or failed. Nothing panics on bad input; every refusal names what is wrong.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CnnMergeError {
    /// The network description was refused by the compact forward pass.
    Network(CompactError),
    /// A layer the device merge does not handle (a batch-norm that cannot be folded, a
    /// residual add of the network input).
    UnsupportedLayer {
        /// The layer.
        layer: usize,
        /// What it is.
        what: &'static str,
    },
    /// More conv and linear layers (the head included) than the schedule holds.
    TooManyFitted {
        /// Conv and linear layers found.
        layers: usize,
        /// The most supported.
        max: usize,
    },
    /// The network does not end in one linear head, its single output.
    NoHead,
    /// A linear layer reads a spatial map of a group (only flat group outputs, after global
    /// pooling, can be read by a linear layer).
    SpatialLinear {
        /// The layer.
        layer: usize,
    },
    /// More permutation groups than the schedule holds.
    TooManyGroups {
        /// Groups found.
        groups: usize,
        /// The most supported.
        max: usize,
    },
    /// There are no merge samples.
    NoSamples,
    /// The plan given to [`cnn_merge`](super::cnn_merge) is not the one of its inputs.
    PlanMismatch,
    /// An input has the wrong number of values.
    ShapeMismatch {
        /// The input.
        operand: CnnOperand,
        /// Values expected (for samples: per sample).
        expected: usize,
        /// Values found.
        found: usize,
    },
    /// The budget is not a number in `[1, 2]`.
    BudgetOutOfRange {
        /// The budget given.
        budget: f64,
    },
    /// The relative ridge is not a finite positive number.
    InvalidRidge {
        /// The ridge given.
        relative: f64,
    },
    /// A buffer size overflows `usize`.
    SizeOverflow,
    /// A caller buffer is shorter than the plan asks for.
    ScratchTooSmall {
        /// Which buffer.
        kind: CnnBuffer,
        /// Elements needed.
        needed: usize,
        /// Elements provided.
        provided: usize,
    },
    /// An input value is NaN or infinite: the first one.
    NonFinite {
        /// The operand holding it.
        operand: CnnOperand,
        /// Its position.
        index: usize,
    },
    /// The driver failed (similarity, assignment, solve, non-finite result).
    Driver(DriverError),
    /// A forward pass failed.
    Forward(CompactError),
    /// The CNN source was asked for a pass it has no data for.
    UnsupportedPass,
}

impl From<DriverError> for CnnMergeError {
    fn from(e: DriverError) -> Self {
        CnnMergeError::Driver(e)
    }
}

impl fmt::Display for CnnMergeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CnnMergeError::Network(_) => f.write_str("the network description was refused"),
            CnnMergeError::UnsupportedLayer { layer, what } => {
                write!(
                    f,
                    "layer {layer}: {what} is not supported by the device merge"
                )
            }
            CnnMergeError::TooManyFitted { layers, max } => write!(
                f,
                "{layers} conv and linear layers; at most {max} are supported"
            ),
            CnnMergeError::NoHead => {
                f.write_str("the network must end in one linear head, its only output")
            }
            CnnMergeError::SpatialLinear { layer } => write!(
                f,
                "linear layer {layer} reads a spatial map (pool it to 1x1 first)"
            ),
            CnnMergeError::TooManyGroups { groups, max } => {
                write!(
                    f,
                    "{groups} permutation groups; at most {max} are supported"
                )
            }
            CnnMergeError::NoSamples => f.write_str("no merge samples"),
            CnnMergeError::PlanMismatch => {
                f.write_str("the plan is not the one of these inputs (budget, samples, params)")
            }
            CnnMergeError::ShapeMismatch {
                operand,
                expected,
                found,
            } => write!(f, "{operand}: {expected} values expected, {found} found"),
            CnnMergeError::BudgetOutOfRange { budget } => write!(
                f,
                "budget {budget} is outside [1, 2] (a FLOP ratio to one model)"
            ),
            CnnMergeError::InvalidRidge { relative } => {
                write!(f, "ridge {relative} must be a finite positive number")
            }
            CnnMergeError::SizeOverflow => f.write_str("buffer sizes overflow usize"),
            CnnMergeError::ScratchTooSmall {
                kind,
                needed,
                provided,
            } => write!(
                f,
                "{kind} too small: {needed} elements needed, {provided} provided"
            ),
            CnnMergeError::NonFinite { operand, index } => {
                write!(f, "{operand} has a non-finite value at {index}")
            }
            CnnMergeError::Driver(_) => f.write_str("the merge failed"),
            CnnMergeError::Forward(_) => f.write_str("a forward pass failed"),
            CnnMergeError::UnsupportedPass => {
                f.write_str("the CNN pass source cannot run this pass")
            }
        }
    }
}

impl core::error::Error for CnnMergeError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            CnnMergeError::Network(e) | CnnMergeError::Forward(e) => Some(e),
            CnnMergeError::Driver(e) => Some(e),
            _ => None,
        }
    }
}
