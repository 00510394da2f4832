//! PyTorch checkpoints: the zip container `torch.save` writes (PyTorch >= 1.6), read with a
//! restricted unpickler, and written back for `pleas export --format torch`.
//!
//! The container is a zip archive of one folder (`archive/` or the file's stem) holding
//! `data.pkl`, the pickled object, and `data/<key>`, one record per storage, raw little-endian
//! bytes; `byteorder` (if present) says `little`. Tensors in the pickle are calls of
//! `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` whose storage is a
//! persistent id `('storage', torch.FloatStorage, key, location, numel)`.
//!
//! - [`zip`]: the archive: finding `*/data.pkl` and reading records with size limits.
//! - [`pickle`]: the restricted unpickler. It accepts what `torch.load(weights_only=True)`
//!   accepts for a state_dict (tensor rebuilds, storage types, `collections.OrderedDict`,
//!   `torch.Size`, plain containers and scalars) and refuses any other global, naming it,
//!   before anything is built: nothing in a checkpoint is ever called.
//! - [`checkpoint`]: the state_dict (plain, or wrapped under `state_dict`, `model_state_dict` or
//!   `model`) with every tensor gathered into C order, views and shared storages as PyTorch
//!   reads them.
//! - [`write`](mod@write): a state_dict of f32 tensors as a `torch.save`-compatible file.

pub mod checkpoint;
pub mod pickle;
pub mod write;
pub mod zip;

/// What is wrong with a PyTorch checkpoint (the file is named by [`crate::Error::Torch`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TorchError {
    /// The zip container is unreadable (truncated, not a zip archive, bad entry).
    #[error("zip container")]
    Zip(#[source] ::zip::result::ZipError),
    /// A record of the archive is missing, too large or unreadable.
    #[error("record `{name}`: {reason}")]
    Record {
        /// The record's name in the archive.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The pickle is malformed or uses something the reader does not support.
    #[error("pickle byte {offset}: {reason}")]
    Pickle {
        /// Offset of the opcode in `data.pkl`.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// The pickle refers to a global a weights-only load refuses.
    #[error(
        "the pickle refers to the global `{module}.{name}`, which a weights-only load refuses \
         (only tensor rebuilds, storage types, collections.OrderedDict, torch.Size and plain \
         containers are accepted); nothing was executed"
    )]
    ForbiddenGlobal {
        /// The global's module.
        module: String,
        /// The global's name.
        name: String,
    },
    /// A bare pickle rather than the zip container.
    #[error(
        "a bare pickle (PyTorch < 1.6, or _use_new_zipfile_serialization=False), not the zip \
         container; re-save it with a current torch.save"
    )]
    Legacy,
    /// The unpickled object holds no state_dict.
    #[error("no state_dict: {0}")]
    NoStateDict(String),
    /// A tensor of the state_dict is inconsistent with its storage.
    #[error("tensor `{name}`: {reason}")]
    Tensor {
        /// The state_dict key.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// Whether `front` (a file's first bytes) starts like a zip archive (a local file header, or
/// the end record of an empty archive).
pub fn is_zip(front: &[u8]) -> bool {
    front.starts_with(b"PK\x03\x04") || front.starts_with(b"PK\x05\x06")
}

/// Whether `front` starts like a bare pickle (protocol 2 or later), as PyTorch < 1.6 and
/// `_use_new_zipfile_serialization=False` write checkpoints.
pub fn is_legacy_pickle(front: &[u8]) -> bool {
    matches!(front, [0x80, 2..=5, ..])
}
