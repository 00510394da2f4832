//! The error type of the std layer: every variant names the file (and, where there is one, the
//! tensor) it is about, so one line tells the user what to fix.

use std::path::PathBuf;

use pleas_core::forward::ForwardError;
use pleas_core::graph::GraphError;

/// Anything that can go wrong reading models and data or running a command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write `{}`", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A safetensors file is malformed (truncated, bad header, bad offsets).
    #[error("`{}` is not a valid safetensors file: {reason}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor of a safetensors file was refused by the core (its values do not fill its
    /// shape).
    #[error("`{}`: tensor `{tensor}`", path.display())]
    SafetensorsTensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The core's refusal.
        #[source]
        source: pleas_core::graph::TensorError,
    },
    /// A PyTorch checkpoint is malformed or refers to something a weights-only load refuses.
    #[error("`{}` is not a readable PyTorch checkpoint", path.display())]
    Torch {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: crate::io::torch::TorchError,
    },
    /// A model file is neither safetensors nor a PyTorch checkpoint.
    #[error(
        "`{}` is neither a safetensors file (8-byte header length, then a JSON header) nor a \
         PyTorch checkpoint (the zip archive torch.save writes)",
        path.display()
    )]
    Format {
        /// The file.
        path: PathBuf,
    },
    /// A `.npy` file is malformed or uses an unsupported layout.
    #[error("`{}` is not a readable .npy file: {reason}", path.display())]
    Npy {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor has a dtype this use does not accept.
    #[error("`{}`: tensor `{tensor}` has dtype {dtype}, expected {expected}", path.display())]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its dtype.
        dtype: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// The model's tensors do not fit its architecture (missing tensor, wrong shape, NaN).
    #[error("model `{}` does not fit its {arch} architecture", path.display())]
    Model {
        /// The model file.
        path: PathBuf,
        /// The architecture name.
        arch: String,
        /// The first mismatch.
        #[source]
        source: Box<GraphError>,
    },
    /// The model file holds a tensor its architecture does not use.
    #[error(
        "model `{}`: unexpected tensor `{tensor}`, not part of the recognised {arch} architecture",
        path.display()
    )]
    ExtraTensor {
        /// The model file.
        path: PathBuf,
        /// The unexpected tensor.
        tensor: String,
        /// The architecture name.
        arch: String,
    },
    /// The architecture could not be recognised from the tensor names.
    #[error(
        "model `{}`: cannot recognise the architecture ({reason}); describe it with --arch FILE.toml",
        path.display()
    )]
    Unrecognised {
        /// The model file.
        path: PathBuf,
        /// Why no family matched.
        reason: String,
    },
    /// An architecture (TOML) file is invalid.
    #[error("architecture file `{}`", path.display())]
    ArchFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: Box<crate::io::arch::toml_file::ArchFileError>,
    },
    /// The architecture a model's metadata holds (`pleas.architecture`) is invalid.
    #[error("model `{}`: metadata `{key}`", path.display())]
    MetadataArchitecture {
        /// The model file.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// What is wrong.
        #[source]
        source: Box<crate::io::arch::toml_file::ArchFileError>,
    },
    /// A data file does not fit the model or the command.
    #[error("data file `{}`: {reason}", path.display())]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The data's sample shape does not fit a model's graph (a spatial size its layers
    /// cannot take).
    #[error("data file `{}`: samples of {shape} do not fit the model", path.display())]
    DataShape {
        /// The data file.
        path: PathBuf,
        /// The samples' shape (`CxHxW`).
        shape: String,
        /// The graph's refusal.
        #[source]
        source: Box<GraphError>,
    },
    /// A metadata entry of a model is malformed.
    #[error("model `{}`: metadata `{key}`: {reason}", path.display())]
    Metadata {
        /// The model file.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A command-line value is invalid.
    #[error("{0}")]
    Usage(String),
    /// A step of a merge failed (a refusal of the merge itself: bad settings, data that do
    /// not fit).
    #[error("merge: {stage}: {reason}")]
    Merge {
        /// The step (e.g. "matching statistics").
        stage: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A step of a merge failed in the core: the core's error, typed, is the source.
    #[error("merge: {stage}{}", what.as_ref().map(|w| format!(": {w}")).unwrap_or_default())]
    MergeCore {
        /// The step (e.g. "budget").
        stage: &'static str,
        /// What it was working on (a layer, a group), if anything.
        what: Option<String>,
        /// The core's error.
        #[source]
        source: Box<CoreError>,
    },
    /// A rank of a multi-process merge failed; every rank returns this, with the failing
    /// rank's message (the lowest failing rank when several failed).
    #[error("rank {rank} of {ranks} failed: {message}")]
    RankFailed {
        /// The failing rank.
        rank: usize,
        /// Ranks in the job.
        ranks: usize,
        /// Its error, with its causes.
        message: String,
    },
    /// A message between the ranks of a multi-process merge does not hold what it should.
    #[error("message between ranks: {reason}")]
    RankMessage {
        /// What is wrong with it.
        reason: String,
    },
    /// A model could not be exported.
    #[error("cannot export `{}` as {format}", path.display())]
    Export {
        /// The output file.
        path: PathBuf,
        /// The format's name.
        format: &'static str,
        /// What went wrong.
        #[source]
        source: crate::export::ExportError,
    },
    /// The forward pass failed.
    #[error("forward pass failed")]
    Forward(#[source] Box<ForwardError>),
    /// The `PLEAS_SIMD` environment variable names a path that cannot be selected.
    #[error("PLEAS_SIMD=`{value}`")]
    SimdPath {
        /// The variable's value.
        value: String,
        /// Why the path was refused.
        #[source]
        source: pleas_core::simd::SimdError,
    },
}

/// A typed error of the core, as a merge step meets it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The graph (folding, building the merged graph).
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// A tensor of the merged model.
    #[error(transparent)]
    Tensor(#[from] pleas_core::graph::TensorError),
    /// Budget to ratios.
    #[error(transparent)]
    Budget(#[from] pleas_core::merge::budget::BudgetError),
    /// Weight matching.
    #[error(transparent)]
    WeightMatching(#[from] pleas_core::merge::weight_matching::WeightMatchError),
    /// Matching one group.
    #[error(transparent)]
    Matching(#[from] pleas_core::merge::matching::MatchError),
    /// Similarities from moments.
    #[error(transparent)]
    Similarity(#[from] pleas_core::similarity::SimilarityFromMomentsError),
    /// A matrix view.
    #[error(transparent)]
    View(#[from] pleas_core::linalg::ViewError),
    /// Moments (Gram accumulation).
    #[error(transparent)]
    Gram(#[from] pleas_core::gram::GramError),
    /// The least-squares fit of a layer.
    #[error(transparent)]
    Fit(#[from] pleas_core::merge::fit::FitError),
    /// The sample-space (dual) fit.
    #[error(transparent)]
    Dual(#[from] pleas_core::lstsq::dual::DualError),
    /// The sample-space fit of a pass's kept rows.
    #[error(transparent)]
    SampleSpace(#[from] crate::merge::solve::SampleSpaceError),
}

impl Error {
    /// A core error met by merge step `stage`.
    pub fn core(stage: &'static str, source: impl Into<CoreError>) -> Self {
        Error::MergeCore {
            stage,
            what: None,
            source: Box::new(source.into()),
        }
    }

    /// A core error met by merge step `stage` working on `what`.
    pub fn core_at(
        stage: &'static str,
        what: impl Into<String>,
        source: impl Into<CoreError>,
    ) -> Self {
        Error::MergeCore {
            stage,
            what: Some(what.into()),
            source: Box::new(source.into()),
        }
    }
}

impl From<ForwardError> for Error {
    fn from(e: ForwardError) -> Self {
        Error::Forward(Box::new(e))
    }
}

/// The error and its causes on one line, joined by `": "`.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
