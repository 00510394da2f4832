//! What a merge reports: progress events while it runs, and per group and per layer what
//! it did.

use pleas_core::graph::{Graph, Weights};
use pleas_core::merge::Heads;

/// A progress event.
#[derive(Debug, Clone)]
pub enum Event {
    /// A stage starts.
    Stage {
        /// Stage name.
        name: &'static str,
        /// Units of work in it.
        total: usize,
    },
    /// One unit of the current stage is done.
    Step {
        /// Stage name.
        stage: &'static str,
        /// Units done.
        done: usize,
        /// Units in the stage.
        total: usize,
        /// What was done.
        what: String,
        /// Seconds since the stage started.
        elapsed: f64,
        /// Estimated seconds left in the stage, where the stage's work is estimated: the
        /// least-squares passes are weighted by their arithmetic (forward passes, Gram and
        /// cross moments over every sample, the block solves), so an early pass over a wide,
        /// cheap layer does not promise a fast finish
        /// ([`pass_cost`](super::schedule::pass_cost)).
        eta: Option<f64>,
    },
}

/// Per-group outcome.
#[derive(Debug, Clone)]
pub struct GroupReport {
    /// Group name.
    pub name: String,
    /// Units per model.
    pub width: usize,
    /// Fraction kept separate.
    pub ratio: f64,
    /// Pairs merged.
    pub merged: usize,
    /// Width in the merged model.
    pub merged_width: usize,
    /// Mean score of the merged pairs (NaN if none).
    pub mean_merged_score: f64,
    /// Sum of the matched pairs' scores.
    pub total_score: f64,
    /// Assignment phases, bids and certified optimality bound.
    pub auction: Option<(u32, u64, f64)>,
}

/// Per-layer outcome of the least-squares fit.
#[derive(Debug, Clone)]
pub struct LayerReport {
    /// Node name in the merged graph.
    pub name: String,
    /// Dense columns of its normal equations.
    pub columns: usize,
    /// Output channels.
    pub outputs: usize,
    /// Largest ridge used over its blocks.
    pub ridge: f64,
    /// `||X W - T||^2 / ||T||^2` with the fitted weights (for solved blocks, the solve's own
    /// measure of its f64 solution before the weights are stored as f32).
    pub relative_residual: f64,
    /// The same with the permute-and-average weights.
    pub average_relative_residual: f64,
    /// Seconds of its data pass and solve.
    pub seconds: f64,
    /// With `diagnose`: the fitted weights' relative residual on the merged network's own
    /// inputs (for fits on the original models' inputs).
    pub own_input_relative_residual: Option<f64>,
}

/// Everything a merge produced.
#[derive(Debug, Clone)]
pub struct MergeOutcome {
    /// The merged graph.
    pub graph: Graph,
    /// Its weights.
    pub weights: Weights,
    /// Head names and their classes (`classes.{output}` metadata).
    pub head_classes: Vec<(String, Vec<i64>)>,
    /// One head or two, resolved.
    pub heads: Heads,
    /// Groups.
    pub groups: Vec<GroupReport>,
    /// Fitted layers.
    pub layers: Vec<LayerReport>,
    /// FLOP ratio of the merged graph (counted on it) to one model.
    pub flop_ratio: f64,
    /// Parameter ratio likewise.
    pub param_ratio: f64,
    /// FLOP ratio the budget model predicted.
    pub planned_flop_ratio: f64,
    /// Merge samples used.
    pub samples: usize,
    /// Processes that computed it (MPI ranks; 1 without MPI).
    pub ranks: usize,
    /// Whether the matching recorded A's and B's layer outputs for the least-squares passes
    /// (see [`crate::merge::recorded`]; the result is the same either way).
    pub recorded_targets: bool,
    /// Seconds per stage.
    pub timings: Vec<(&'static str, f64)>,
}
