//! The one driver of the allocation-free device merge: matching over a source of data passes
//! -> the layouts in the caller's index scratch -> the sequential least-squares fits of every
//! layer with the permute-and-average prior, the exact-copy rule and the ridge retries.
//!
//! The driver never touches samples or activations. It reads a [`MergeSchedule`] (the groups,
//! the fitted layers, where their weights go) and asks a [`DeviceSource`] (a
//! [`PassSource`] that also hands out the original models' weight rows) for every moment it
//! needs. The MLP merge ([`mlp`](super::mlp)) and the CNN merge ([`cnn`](super::cnn)) are the
//! same driver with their own schedule and in-place source.
//!
//! Arithmetic: all sums are the source's (f64 on the device); the prior is formed in f32 by
//! [`write_prior_row`](crate::merge::prior::write_prior_row); fitted weights are stored as
//! `f32(W0 + delta)` with `delta` in f64, as the host stores them.

mod fit;
mod matching;
mod schedule;

use core::fmt;

pub use fit::{block_scratch_len, fit_layers};
pub use matching::{match_groups, matching_scratch_len};
pub use schedule::{
    Block, Columns, FittedLayer, GroupPlan, LayerInput, MAX_FITTED, MAX_GROUPS, MergeSchedule,
};

use crate::assign::{AuctionError, AuctionInfo, AuctionParams, SelectError};
use crate::lstsq::dual::DualError;
use crate::merge::layout::LayoutError;
use crate::merge::pass::PassSource;
use crate::merge::prior::UnitWeights;

/// One of the two original models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// Model A.
    A,
    /// Model B.
    B,
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Model::A => "model A",
            Model::B => "model B",
        })
    }
}

/// The merge samples, `N x inputs` row-major.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Samples<'a> {
    /// Values as the models take them (already normalised).
    F32(&'a [f32]),
    /// Bytes (8-bit pixels, say) and the value the models take for each byte value:
    /// `table[v]` is the normalised `v` (e.g. `v / 255 * 2 - 1` computed in f32, as the
    /// host's data pipeline computes it). The merge reads every sample through the table, so
    /// the samples can stay where they are (in flash on a microcontroller) and no normalised
    /// copy is needed; the result is the one of [`Samples::F32`] on the mapped values, bit
    /// for bit.
    U8 {
        /// The bytes.
        data: &'a [u8],
        /// The value of each byte.
        table: &'a [f32; 256],
    },
}

impl<'a> Samples<'a> {
    /// Values (`N x inputs`).
    pub fn len(&self) -> usize {
        match self {
            Samples::F32(x) => x.len(),
            Samples::U8 { data, .. } => data.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value `i` as the models take it.
    #[inline]
    pub fn at(&self, i: usize) -> f32 {
        match self {
            Samples::F32(x) => x[i],
            Samples::U8 { data, table } => table[usize::from(data[i])],
        }
    }

    /// Values `range` (one sample's, in the merge).
    pub(crate) fn slice(&self, range: core::ops::Range<usize>) -> Self {
        match *self {
            Samples::F32(x) => Samples::F32(&x[range]),
            Samples::U8 { data, table } => Samples::U8 {
                data: &data[range],
                table,
            },
        }
    }

    /// The first non-finite value (for bytes: of the table's values of the bytes present).
    pub fn first_non_finite(&self) -> Option<usize> {
        match *self {
            Samples::F32(x) => x.iter().position(|v| !v.is_finite()),
            Samples::U8 { data, table } => data
                .iter()
                .position(|&v| !table[usize::from(v)].is_finite()),
        }
    }
}

impl<'a> From<&'a [f32]> for Samples<'a> {
    fn from(x: &'a [f32]) -> Self {
        Samples::F32(x)
    }
}

/// The knobs of the driver's solves and assignments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SolveKnobs {
    /// Ridge relative to the mean diagonal of each block's Gram.
    pub relative_ridge: f64,
    /// How many times a block's ridge may be multiplied by 10 after a failed factorization.
    pub max_retries: u32,
    /// The assignment's knobs.
    pub auction: AuctionParams,
}

/// The source of a device merge: its data passes, and the original models' weight rows for
/// the prior (`'a`: the lifetime of the models and the samples).
pub trait DeviceSource<'a>: PassSource<Weights = [f32]> {
    /// The schedule the source was built for.
    fn schedule(&self) -> &MergeSchedule;

    /// Weight row (`in_channels x patch` values, PyTorch order) and bias of `unit` of
    /// fitted layer `f` of `model`.
    fn unit_weights(&self, model: Model, f: usize, unit: usize) -> UnitWeights<'a>;

    /// The merge samples as rows of fitted layer `f`'s inputs, when they are (a linear layer
    /// reading the samples); `None` otherwise (the dual form then gathers the rows through
    /// an inputs pass).
    fn sample_rows(&self, f: usize) -> Option<Samples<'a>>;
}

/// Why the driver failed.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum DriverError {
    /// The similarity of a group is not finite (activations overflowed).
    NonFiniteSimilarity {
        /// The group.
        group: usize,
        /// A unit.
        row: usize,
        /// B unit.
        col: usize,
    },
    /// The assignment of a group failed.
    Assignment {
        /// The group.
        group: usize,
        /// The auction's error.
        error: AuctionError,
    },
    /// The selection of the pairs to merge failed.
    Selection {
        /// The group.
        group: usize,
        /// The selection's error.
        error: SelectError,
    },
    /// The assignment and the selection of a group do not make a layout (a permutation and
    /// distinct merged units).
    Layout {
        /// The group.
        group: usize,
        /// The layout's error.
        error: LayoutError,
    },
    /// A block's regularised system is not positive definite even with the last ridge tried.
    Singular {
        /// The fitted layer.
        layer: usize,
        /// The block's first output row.
        first_row: usize,
        /// The failing pivot's position.
        index: usize,
        /// The pivot.
        pivot: f64,
        /// The last ridge tried.
        ridge: f64,
        /// How many times the ridge was multiplied by 10.
        retries: u32,
    },
    /// A dual (sample-space) solve failed otherwise.
    DualSolve {
        /// The fitted layer.
        layer: usize,
        /// The block's first output row.
        first_row: usize,
        /// The solver's error.
        error: DualError,
    },
    /// A buffer size overflows `usize` (or a view of the scratch does not fit).
    SizeOverflow,
    /// A merged weight is not finite (the solve overflowed): its position in the output.
    NonFiniteResult {
        /// Position in the output buffer.
        index: usize,
    },
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DriverError::NonFiniteSimilarity { group, row, col } => write!(
                f,
                "group {group}: non-finite similarity of A unit {row} and B unit {col}"
            ),
            DriverError::Assignment { group, .. } => write!(f, "group {group}: assignment failed"),
            DriverError::Selection { group, .. } => {
                write!(f, "group {group}: pair selection failed")
            }
            DriverError::Layout { group, .. } => write!(f, "group {group}: no valid layout"),
            DriverError::Singular {
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
            DriverError::DualSolve {
                layer, first_row, ..
            } => write!(
                f,
                "layer {layer}, block from row {first_row}: the sample-space solve failed"
            ),
            DriverError::SizeOverflow => f.write_str("buffer sizes overflow usize"),
            DriverError::NonFiniteResult { index } => write!(
                f,
                "merged weight {index} is not finite (the solve overflowed)"
            ),
        }
    }
}

impl core::error::Error for DriverError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            DriverError::Assignment { error, .. } => Some(error),
            DriverError::Selection { error, .. } => Some(error),
            DriverError::Layout { error, .. } => Some(error),
            DriverError::DualSolve { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// How one permutation group was matched.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct GroupInfo {
    /// Units per model.
    pub width: usize,
    /// Pairs merged.
    pub merged: usize,
    /// Width in the merged model, `2 width - merged`.
    pub merged_width: usize,
    /// `sum_i S[i, P(i)]` of the assignment.
    pub total_score: f64,
    /// Mean score of the merged pairs (NaN when none is merged).
    pub mean_merged_score: f64,
    /// What the auction reports.
    pub auction: AuctionInfo,
}

/// How one merged layer was fitted.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct LayerFitInfo {
    /// Output blocks that kept their permute-and-average weights without a solve (the layer
    /// reads only exact copies of the models' units, with the ridge towards the average).
    pub copied_blocks: usize,
    /// Output blocks solved in the primal form (Gram of the block's columns).
    pub primal_blocks: usize,
    /// Output blocks solved in the dual form (kernel of the samples).
    pub dual_blocks: usize,
    /// Largest ridge used over the blocks.
    pub ridge: f64,
    /// Most retries of any block.
    pub retries: u32,
}
