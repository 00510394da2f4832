//! The zip container of a `torch.save` file: one folder holding `data.pkl`, `data/<key>` per
//! storage and optionally `byteorder` and `version`. Records are read whole into memory, each
//! with a size limit checked while reading, so a lying header (or a compressed record that
//! inflates without end) allocates no more than the limit.

use std::io::{Cursor, Read};

use ::zip::ZipArchive;
use ::zip::read::{ArchiveOffset, Config};

use super::TorchError;

/// Largest `data.pkl` accepted: a state_dict's pickle holds names and shapes only.
pub const MAX_PICKLE: u64 = 256 << 20;

/// An open checkpoint archive.
pub struct Archive<'a> {
    zip: ZipArchive<Cursor<&'a [u8]>>,
    /// The folder holding `data.pkl` (`archive`, or the stem of the file's first name).
    prefix: String,
    /// Length of the whole archive: no record's buffer is reserved larger than this.
    total: u64,
}

fn record_err(name: &str, reason: impl Into<String>) -> TorchError {
    TorchError::Record {
        name: name.to_string(),
        reason: reason.into(),
    }
}

impl<'a> Archive<'a> {
    /// Opens the archive held in `bytes` and finds its one `FOLDER/data.pkl`.
    pub fn open(bytes: &'a [u8]) -> Result<Self, TorchError> {
        // The archive starts at byte 0, as torch.save writes it. (Letting the crate detect a
        // prefix can lock onto a stray central-directory signature inside tensor data: seen on
        // a real ResNet-20 checkpoint.)
        let config = Config {
            archive_offset: ArchiveOffset::Known(0),
        };
        let zip = ZipArchive::with_config(config, Cursor::new(bytes)).map_err(TorchError::Zip)?;
        let names: Vec<String> = zip
            .file_names()
            .filter_map(Result::ok)
            .map(|n| n.into_owned())
            .collect();
        let mut pickles = names
            .iter()
            .filter_map(|n| n.strip_suffix("/data.pkl"))
            .filter(|p| !p.is_empty() && !p.contains('/'));
        let prefix = match (pickles.next(), pickles.next()) {
            (Some(p), None) => p.to_string(),
            (None, _) => return Err(record_err("*/data.pkl", "missing from the archive")),
            (Some(_), Some(_)) => {
                return Err(record_err("*/data.pkl", "found in more than one folder"));
            }
        };
        let mut archive = Archive {
            zip,
            prefix,
            total: bytes.len() as u64,
        };
        archive.check_byteorder()?;
        Ok(archive)
    }

    /// Refuses a big-endian archive (`byteorder` = `big`); no record means little-endian.
    fn check_byteorder(&mut self) -> Result<(), TorchError> {
        let name = format!("{}/byteorder", self.prefix);
        if self.zip.index_for_name(&name).is_none() {
            return Ok(());
        }
        let order = self.record(&name, 16)?;
        match order.as_slice() {
            b"little" => Ok(()),
            other => Err(record_err(
                &name,
                format!(
                    "byte order `{}`; only little-endian checkpoints are supported",
                    String::from_utf8_lossy(other)
                ),
            )),
        }
    }

    /// The bytes of `data.pkl`.
    pub fn pickle(&mut self) -> Result<Vec<u8>, TorchError> {
        let name = format!("{}/data.pkl", self.prefix);
        self.record(&name, MAX_PICKLE)
    }

    /// The bytes of storage `key`, which must hold exactly `len` bytes.
    pub fn storage(&mut self, key: &str, len: u64) -> Result<Vec<u8>, TorchError> {
        let name = format!("{}/data/{key}", self.prefix);
        let bytes = self.record(&name, len)?;
        if bytes.len() as u64 != len {
            return Err(record_err(
                &name,
                format!(
                    "holds {} bytes, its storage needs {len} (numel times element size)",
                    bytes.len()
                ),
            ));
        }
        Ok(bytes)
    }

    /// Reads record `name`, failing if it holds more than `limit` bytes.
    fn record(&mut self, name: &str, limit: u64) -> Result<Vec<u8>, TorchError> {
        let mut file = match self.zip.by_name(name) {
            Ok(f) => f,
            Err(::zip::result::ZipError::FileNotFound) => {
                return Err(record_err(name, "missing from the archive"));
            }
            Err(e) => return Err(TorchError::Zip(e)),
        };
        // Never trust the declared size for the allocation: read at most limit + 1 bytes.
        let mut out = Vec::with_capacity(file.size().min(limit).min(self.total) as usize);
        (&mut file)
            .take(limit.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| record_err(name, format!("unreadable: {e}")))?;
        if out.len() as u64 > limit {
            return Err(record_err(
                name,
                format!("holds more than the {limit} bytes expected"),
            ));
        }
        Ok(out)
    }
}
