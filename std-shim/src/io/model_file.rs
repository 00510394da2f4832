//! Model files: safetensors or a PyTorch checkpoint (`torch.save`'s zip container), told apart
//! by their first bytes, not by their extension.

use std::io::Read;
use std::path::Path;

use pleas_core::graph::Weights;

use crate::error::Error;
use crate::io::safetensors::{self, Metadata};
use crate::io::torch::{self, TorchError};

/// The format of a model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Safetensors.
    Safetensors,
    /// A PyTorch zip checkpoint.
    Torch,
}

/// Tells the format from a file's first bytes: a zip archive is a PyTorch checkpoint; a file
/// whose header length is followed by `{` (or too short to say) is safetensors. A bare pickle
/// and anything else are errors naming the file.
pub fn detect(path: &Path) -> Result<Format, Error> {
    let mut front = Vec::with_capacity(9);
    std::fs::File::open(path)
        .and_then(|f| f.take(9).read_to_end(&mut front))
        .map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if torch::is_zip(&front) {
        return Ok(Format::Torch);
    }
    if torch::is_legacy_pickle(&front) {
        return Err(Error::Torch {
            path: path.to_path_buf(),
            source: TorchError::Legacy,
        });
    }
    match front.get(8) {
        None | Some(b'{') => Ok(Format::Safetensors),
        Some(_) => Err(Error::Format {
            path: path.to_path_buf(),
        }),
    }
}

/// Reads model weights from either format: every float tensor converted to f32 (F32, F16,
/// BF16), PyTorch's `*.num_batches_tracked` counters skipped; any other dtype is an error
/// naming the tensor. A checkpoint's metadata is its wrapper's `metadata` strings, if any.
pub fn load_weights(path: &Path) -> Result<(Weights, Metadata), Error> {
    match detect(path)? {
        Format::Safetensors => safetensors::load_weights(path),
        Format::Torch => {
            let c = torch::checkpoint::read(path)?;
            Ok((safetensors::weights_from_raw(path, c.tensors)?, c.metadata))
        }
    }
}
