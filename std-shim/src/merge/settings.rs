//! Every choice of a merge, resolved before it starts (and written into the report).

use std::path::PathBuf;

pub use pleas_core::merge::{Heads, RidgeToward};
use pleas_core::similarity::Metric;

/// How the budget becomes per-group ratios (docs/ALGORITHM.md section 3).
#[derive(Debug, Clone, PartialEq)]
pub enum RatioMode {
    /// One ratio for every group, by bisection on the FLOP ratio.
    Uniform,
    /// Whole stages merged up to a cut, later stages separate.
    Stages,
    /// Greedy by per-group weight per marginal FLOP: weights from a TOML/JSON file mapping
    /// group names to numbers, or measured (1 - mean correlation of the matched pairs).
    Weighted {
        /// The weights file; `None`: measured on the merge data.
        file: Option<PathBuf>,
    },
}

impl RatioMode {
    /// Short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            RatioMode::Uniform => "uniform",
            RatioMode::Stages => "stages",
            RatioMode::Weighted { .. } => "weighted",
        }
    }
}

/// How units are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchingMode {
    /// Activation similarity on the merge data (PLeaS).
    Activation,
    /// Weight matching (data-free, Git Re-Basin).
    Weight,
    /// No permutation: unit `i` of A with unit `i` of B (naive weight averaging).
    Identity,
}

impl MatchingMode {
    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            MatchingMode::Activation => "activation",
            MatchingMode::Weight => "weight",
            MatchingMode::Identity => "identity",
        }
    }
}

/// Batch-norm handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BnMode {
    /// Fold each model's eval-mode batch-norm into its conv first (targets are post-BN, the
    /// merged network has no batch-norm).
    Fold,
    /// Keep batch-norm: fit pre-BN outputs, average the BN parameters of merged units, copy
    /// private ones, re-estimate running statistics on the merge data.
    Keep,
}

/// How weights are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FitMode {
    /// No least squares: permute-and-average weights (a baseline).
    Average,
    /// Least squares with inputs from the original models (PLeaS as the paper states it).
    Original,
    /// Least squares with the merged network's own inputs, layer by layer.
    Sequential,
}

impl FitMode {
    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            FitMode::Average => "average",
            FitMode::Original => "original-inputs",
            FitMode::Sequential => "sequential",
        }
    }
}

/// The settings of one merge.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeSettings {
    /// FLOP ratio to one model, in [1, 2].
    pub budget: f64,
    /// Budget to ratios.
    pub ratios: RatioMode,
    /// Activation similarity.
    pub metric: Metric,
    /// Matching.
    pub matching: MatchingMode,
    /// Relative ridge (times the mean diagonal of each block's Gram).
    pub ridge: f64,
    /// What the ridge pulls towards.
    pub ridge_toward: RidgeToward,
    /// Batch-norm handling.
    pub bn: BnMode,
    /// Weights by least squares or not.
    pub fit: FitMode,
    /// Heads: one or two; `None` chooses by the models' metadata (two heads if their
    /// `classes` differ, else one).
    pub heads: Option<Heads>,
    /// Worker threads (results do not depend on it).
    pub threads: usize,
    /// Samples per chunk, at most ([`crate::merge::pipeline::chunk_samples`] lowers it so a
    /// chunk's activations fit in [`crate::merge::pipeline::CHUNK_BYTES`]).
    pub batch: usize,
    /// Bytes of activations kept in memory between passes (together with the worker threads'
    /// reusable activation buffers) before spilling to a temporary file. The default is
    /// [`crate::merge::memory::default_budget`]: a quarter of the memory available.
    pub memory_budget: usize,
    /// Directory for spill files.
    pub spill_dir: PathBuf,
    /// Also measure each layer's residual on the merged network's own inputs (one more pass
    /// per layer; for fits on the original models' inputs).
    pub diagnose: bool,
}

impl Default for MergeSettings {
    fn default() -> Self {
        Self {
            budget: 1.0,
            ratios: RatioMode::Uniform,
            metric: Metric::NegL2,
            matching: MatchingMode::Activation,
            ridge: 1e-6,
            ridge_toward: RidgeToward::Average,
            bn: BnMode::Fold,
            fit: FitMode::Sequential,
            heads: None,
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            batch: 64,
            memory_budget: crate::merge::memory::default_budget(),
            spill_dir: std::env::temp_dir(),
            diagnose: false,
        }
    }
}

/// Samples per data shard. Shards are fixed in size, so their number grows with the merge
/// data (every thread of a large machine gets work: 1,563 shards for 10^5 samples) and never
/// depends on the thread count: results are identical for any thread count. Each shard costs
/// one accumulator reset and one combination per pass (`d^2` for a fit of `d` columns), small
/// next to accumulating 64 samples' patches (`64 x positions x d^2`).
pub const SHARD_SAMPLES: usize = 64;
