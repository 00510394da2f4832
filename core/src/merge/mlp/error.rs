//! Why an MLP merge was refused or failed.

use core::fmt;

use crate::merge::driver::DriverError;
pub use crate::merge::driver::Model;

/// Which input an error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlpOperand {
    /// The list of a model's layers.
    Layers(Model),
    /// The weight of layer `layer` (hidden layers first, the head last) of a model.
    Weight(Model, usize),
    /// The bias of layer `layer` of a model.
    Bias(Model, usize),
    /// The merge samples.
    Samples,
}

impl fmt::Display for MlpOperand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MlpOperand::Layers(m) => write!(f, "the layers of {m}"),
            MlpOperand::Weight(m, l) => write!(f, "the weight of layer {l} of {m}"),
            MlpOperand::Bias(m, l) => write!(f, "the bias of layer {l} of {m}"),
            MlpOperand::Samples => f.write_str("the merge samples"),
        }
    }
}

/// Which caller buffer is too short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScratchKind {
    /// The merged weights (`f32`).
    Output,
    /// The f64 scratch.
    Scratch,
    /// The index scratch.
    Indices,
}

impl fmt::Display for ScratchKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScratchKind::Output => "output buffer",
            ScratchKind::Scratch => "f64 scratch",
            ScratchKind::Indices => "index scratch",
        })
    }
}

/// Why [`mlp_merge_plan`](super::mlp_merge_plan) or [`mlp_merge`](super::mlp_merge) refused
/// or failed. Nothing panics on bad input; every refusal names what is wrong.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum MlpMergeError {
    /// More hidden layers than [`MAX_HIDDEN`](super::MAX_HIDDEN).
    TooManyLayers {
        /// Hidden layers given.
        hidden: usize,
        /// The most supported.
        max: usize,
    },
    /// A width is zero: `layer` is the hidden layer, `None` for the inputs or classes.
    EmptyLayer {
        /// The hidden layer of width 0, or `None` (inputs or classes).
        layer: Option<usize>,
    },
    /// There are no merge samples.
    NoSamples,
    /// An input has the wrong size: `expected` is its shape `(rows, cols)` (a bias or a layer
    /// list is `(n, 1)`; for samples whose length is not a multiple of the inputs, the whole
    /// samples given), `found` the number of values (or layers) given.
    ShapeMismatch {
        /// The input.
        operand: MlpOperand,
        /// Its expected shape.
        expected: (usize, usize),
        /// Values (or layers) found.
        found: usize,
    },
    /// A model has biases and the dims say it has none, or the other way round.
    BiasMismatch {
        /// The input.
        operand: MlpOperand,
        /// Whether the dims call for a bias.
        expected: bool,
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
        kind: ScratchKind,
        /// Elements needed.
        needed: usize,
        /// Elements provided.
        provided: usize,
    },
    /// An input value is NaN or infinite: the first one, by its position in the operand.
    NonFinite {
        /// The operand holding it.
        operand: MlpOperand,
        /// Its position (row-major).
        index: usize,
    },
    /// The device source was asked for a pass an MLP has no data for (batch-norm
    /// statistics: an MLP has no batch-norm), or with moments that do not match the pass.
    UnsupportedPass,
    /// The driver failed (similarity, assignment, solve, non-finite result); layers are
    /// numbered as fitted (hidden layers, then the heads), groups are the hidden layers.
    Driver(DriverError),
}

impl fmt::Display for MlpMergeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MlpMergeError::TooManyLayers { hidden, max } => {
                write!(f, "{hidden} hidden layers; at most {max} are supported")
            }
            MlpMergeError::EmptyLayer { layer: Some(l) } => {
                write!(f, "hidden layer {l} has width 0")
            }
            MlpMergeError::EmptyLayer { layer: None } => {
                f.write_str("the models have no inputs or no classes")
            }
            MlpMergeError::NoSamples => f.write_str("no merge samples"),
            MlpMergeError::ShapeMismatch {
                operand,
                expected,
                found,
            } => write!(
                f,
                "{operand} should be {}x{} ({} values), found {found}",
                expected.0,
                expected.1,
                expected.0.saturating_mul(expected.1)
            ),
            MlpMergeError::BiasMismatch { operand, expected } => {
                if expected {
                    write!(f, "{operand} is missing (the dims say layers have biases)")
                } else {
                    write!(f, "{operand} is given but the dims say layers have none")
                }
            }
            MlpMergeError::BudgetOutOfRange { budget } => write!(
                f,
                "budget {budget} is outside [1, 2] (a FLOP ratio to one model)"
            ),
            MlpMergeError::InvalidRidge { relative } => {
                write!(f, "ridge {relative} must be a finite positive number")
            }
            MlpMergeError::SizeOverflow => f.write_str("buffer sizes overflow usize"),
            MlpMergeError::ScratchTooSmall {
                kind,
                needed,
                provided,
            } => write!(
                f,
                "{kind} too small: {needed} elements needed, {provided} provided"
            ),
            MlpMergeError::NonFinite { operand, index } => {
                write!(f, "{operand} has a non-finite value at {index}")
            }
            MlpMergeError::UnsupportedPass => {
                f.write_str("the MLP pass source cannot run this pass")
            }
            MlpMergeError::Driver(_) => f.write_str("the merge failed"),
        }
    }
}

impl core::error::Error for MlpMergeError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            MlpMergeError::Driver(e) => Some(e),
            _ => None,
        }
    }
}

impl From<DriverError> for MlpMergeError {
    fn from(e: DriverError) -> Self {
        MlpMergeError::Driver(e)
    }
}
