//! Writing a model in the formats other runtimes load: one writer type per format behind the
//! [`ModelWriter`] trait (the way ripgrep keeps one printer per output format), chosen by
//! [`Format`].
//!
//! - [`onnx`]: an ONNX model (`--blocks split`: each block-structured layer as Slice + one
//!   Conv/Gemm per block + Concat after a per-group channel reorder, at the model's exact
//!   multiply-adds; `--blocks dense`: one Conv/Gemm per layer with zero cross blocks).
//! - [`dense`]: the dense expansion of a block-structured layer, shared by every writer that
//!   needs plain layers.
//! - [`reorder`]: the per-group channel orders under which every block reads one contiguous
//!   input range.
//!
//! Files are written to a temporary name beside the target and renamed ([`write_atomically`]):
//! a failed export leaves nothing behind.

pub mod dense;
pub mod onnx;
pub mod reorder;
pub mod torch;

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::io::atomic::write_atomically;
use crate::model::Model;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// ONNX (`.onnx`).
    Onnx,
    /// A PyTorch state_dict of the dense form (`.pt`, `.pth`, `.bin`) and its `torch.nn`
    /// module file beside it ([`torch`]).
    Torch,
}

impl Format {
    /// Every format, in the order `--format` lists them.
    pub const ALL: &'static [Format] = &[Format::Onnx, Format::Torch];

    /// The format's `--format` name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Onnx => "onnx",
            Format::Torch => "torch",
        }
    }

    /// The format called `name` (`onnx` or `torch`).
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.iter().copied().find(|f| f.name() == name)
    }

    /// The format a file name's extension stands for (`.onnx`; `.pt`, `.pth`, `.bin`), if any.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "onnx" => Some(Format::Onnx),
            "pt" | "pth" | "bin" => Some(Format::Torch),
            _ => None,
        }
    }
}

/// How block-structured (merged) layers are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlockMode {
    /// One operator per output block on one contiguous input range (after a per-group channel
    /// reorder): the model's exact multiply-adds.
    #[default]
    Split,
    /// One dense operator per layer, the cross blocks stored as zeros.
    Dense,
}

impl BlockMode {
    /// The `--blocks` name.
    pub fn name(self) -> &'static str {
        match self {
            BlockMode::Split => "split",
            BlockMode::Dense => "dense",
        }
    }

    /// The mode called `name` (`split` or `dense`).
    pub fn from_name(name: &str) -> Option<BlockMode> {
        match name {
            "split" => Some(BlockMode::Split),
            "dense" => Some(BlockMode::Dense),
            _ => None,
        }
    }
}

/// Export knobs shared by the formats (each writer reads the ones that apply to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportSettings {
    /// How block-structured layers are written.
    pub blocks: BlockMode,
    /// ONNX operator set version ([`onnx::OPSETS`]).
    pub opset: i64,
}

impl ExportSettings {
    /// Settings with block mode `blocks` and ONNX opset `opset`.
    pub fn new(blocks: BlockMode, opset: i64) -> Self {
        Self { blocks, opset }
    }
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            blocks: BlockMode::Split,
            opset: onnx::DEFAULT_OPSET,
        }
    }
}

/// Why a model could not be exported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The ONNX opset asked for is outside the supported range.
    #[error("ONNX opset {opset} is not supported (supported: {} to {})", onnx::OPSETS.start(), onnx::OPSETS.end())]
    Opset {
        /// The opset asked for.
        opset: i64,
    },
    /// A tensor the graph reads is missing or has another shape than its node needs.
    #[error("node `{node}`: tensor `{tensor}` is missing or has the wrong shape")]
    Tensor {
        /// The node.
        node: String,
        /// The tensor.
        tensor: String,
    },
    /// The dense form of a block-structured layer's tensor could not be built.
    #[error("node `{node}`: its dense tensor")]
    DenseTensor {
        /// The node.
        node: String,
        /// The core's refusal.
        #[source]
        source: pleas_core::graph::TensorError,
    },
    /// The graph holds an operation the format cannot express.
    #[error("node `{node}`: {reason}")]
    Unsupported {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
    /// The model has no PyTorch state_dict form (or its state_dict cannot be encoded).
    #[error("{reason}")]
    Torch {
        /// Why.
        reason: String,
    },
    /// The encoded model exceeds the format's size limit.
    #[error("the encoded model has {bytes} bytes, over the format's limit of {limit}")]
    TooLarge {
        /// Encoded size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
}

/// One output format's writer: turns a loaded model into the file's bytes.
pub trait ModelWriter {
    /// The format written.
    fn format(&self) -> Format;

    /// The model encoded in this format.
    fn encode(&self, model: &Model) -> Result<Vec<u8>, ExportError>;
}

/// Writes `model` to `path` in `format` with `settings`, atomically; returns the files written
/// (for [`Format::Torch`], the state_dict and its module file). Settings are checked before
/// anything is encoded (an unsupported opset is an error).
pub fn export_to(
    model: &Model,
    format: Format,
    settings: &ExportSettings,
    path: &Path,
) -> Result<Vec<PathBuf>, Error> {
    match format {
        Format::Onnx => {
            let writer = onnx::OnnxWriter::new(settings).map_err(|source| Error::Export {
                path: path.to_path_buf(),
                format: format.name(),
                source,
            })?;
            export(model, &writer, path)?;
            Ok(vec![path.to_path_buf()])
        }
        Format::Torch => {
            let (module, _) = torch::export(model, path)?;
            Ok(vec![path.to_path_buf(), module])
        }
    }
}

/// Encodes `model` with `writer` and writes it to `path` atomically.
pub fn export(model: &Model, writer: &dyn ModelWriter, path: &Path) -> Result<(), Error> {
    let bytes = writer.encode(model).map_err(|source| Error::Export {
        path: path.to_path_buf(),
        format: writer.format().name(),
        source,
    })?;
    write_atomically(path, &bytes)
}
