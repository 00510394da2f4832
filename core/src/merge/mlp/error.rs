//! Why an MLP merge was refused or failed.

use core::fmt;

use crate::assign::{AuctionError, SelectError};
use crate::lstsq::dual::DualError;
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
    /// The similarity of a hidden layer is not finite (activations overflowed).
    NonFiniteSimilarity {
        /// The hidden layer.
        group: usize,
        /// A unit.
        row: usize,
        /// B unit.
        col: usize,
    },
    /// The assignment of a hidden layer failed.
    Assignment {
        /// The hidden layer.
        group: usize,
        /// The auction's error.
        error: AuctionError,
    },
    /// The selection of the pairs to merge failed.
    Selection {
        /// The hidden layer.
        group: usize,
        /// The selection's error.
        error: SelectError,
    },
    /// A block's regularised system is not positive definite even with the last ridge tried
    /// (e.g. every input of the block is zero, so the relative ridge is zero).
    Singular {
        /// The fitted layer (hidden layers, then the heads).
        layer: usize,
        /// The block's first output row.
        first_row: usize,
        /// The failing pivot's position (a column of the block in the primal form, a sample
        /// in the dual form).
        index: usize,
        /// The pivot.
        pivot: f64,
        /// The last ridge tried.
        ridge: f64,
        /// How many times the ridge was multiplied by 10.
        retries: u32,
    },
    /// A dual (sample-space) solve failed otherwise (activations of the merged network
    /// overflowed, or the solution did).
    DualSolve {
        /// The fitted layer.
        layer: usize,
        /// The block's first output row.
        first_row: usize,
        /// The solver's error.
        error: DualError,
    },
    /// The device source was asked for a pass an MLP has no data for (batch-norm
    /// statistics: an MLP has no batch-norm), or with moments that do not match the pass.
    UnsupportedPass,
    /// A merged weight is not finite (the solve overflowed): its position in the output.
    NonFiniteResult {
        /// Position in the output buffer.
        index: usize,
    },
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
            MlpMergeError::NonFiniteSimilarity { group, row, col } => write!(
                f,
                "hidden layer {group}: non-finite similarity of A unit {row} and B unit {col}"
            ),
            MlpMergeError::Assignment { group, error } => {
                write!(f, "hidden layer {group}: assignment: {error}")
            }
            MlpMergeError::Selection { group, error } => {
                write!(f, "hidden layer {group}: pair selection: {error}")
            }
            MlpMergeError::Singular {
                layer,
                first_row,
                index,
                pivot,
                ridge,
                retries,
            } => write!(
                f,
                "layer {layer}, block from row {first_row}: the system is not positive definite \
                 (pivot {index} is {pivot:e} with ridge {ridge:e} after {retries} retries)"
            ),
            MlpMergeError::DualSolve {
                layer,
                first_row,
                error,
            } => write!(f, "layer {layer}, block from row {first_row}: {error}"),
            MlpMergeError::UnsupportedPass => {
                f.write_str("the MLP pass source cannot run this pass")
            }
            MlpMergeError::NonFiniteResult { index } => {
                write!(
                    f,
                    "merged weight {index} is not finite (the solve overflowed)"
                )
            }
        }
    }
}

impl core::error::Error for MlpMergeError {}

impl From<DriverError> for MlpMergeError {
    fn from(e: DriverError) -> Self {
        match e {
            DriverError::NonFiniteSimilarity { group, row, col } => {
                MlpMergeError::NonFiniteSimilarity { group, row, col }
            }
            DriverError::Assignment { group, error } => MlpMergeError::Assignment { group, error },
            DriverError::Selection { group, error } => MlpMergeError::Selection { group, error },
            DriverError::Singular {
                layer,
                first_row,
                index,
                pivot,
                ridge,
                retries,
            } => MlpMergeError::Singular {
                layer,
                first_row,
                index,
                pivot,
                ridge,
                retries,
            },
            DriverError::DualSolve {
                layer,
                first_row,
                error,
            } => MlpMergeError::DualSolve {
                layer,
                first_row,
                error,
            },
            DriverError::SizeOverflow => MlpMergeError::SizeOverflow,
            DriverError::NonFiniteResult { index } => MlpMergeError::NonFiniteResult { index },
        }
    }
}
