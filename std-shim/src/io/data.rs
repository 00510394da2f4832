//! Input data: a safetensors or `.npy` file of `N x D` or `N x C x H x W` samples, U8 or
//! float, normalised to f32; optional integer labels.
//!
//! In a safetensors file with one tensor, that tensor is the data. With several, the data is
//! the tensor named by `data_key` (commands default to `x_test` for eval and `x_match` for merge)
//! and the labels the one named by `label_key` (default `y_test`). A `.npy` file holds the data
//! only; labels then come from a second file.
//!
//! [`DataSource`] reads the data in chunks of samples with memory independent of their number
//! (the merge streams its data through it); [`load`] reads it whole, through the same code.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::npy;
use super::safetensors::{self, Dtype, RawTensor};
use crate::error::Error;

/// How raw values become network inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Normalize {
    /// Values as they are.
    Identity,
    /// `x / 255`.
    Unit,
    /// `x / 255 * 2 - 1` (the fixtures' convention).
    Symmetric,
    /// `(x - mean) / std`, one mean and std for every value.
    MeanStd {
        /// Subtracted.
        mean: f32,
        /// Divided by.
        std: f32,
    },
}

impl Normalize {
    /// Parses `none`, `x/255`, `x/255*2-1` or `mean,std` (e.g. `0.5,0.25`); spaces are ignored.
    pub fn parse(s: &str) -> Option<Normalize> {
        let t: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        match t.as_str() {
            "none" | "x" | "identity" => Some(Normalize::Identity),
            "x/255" => Some(Normalize::Unit),
            "x/255*2-1" | "2*x/255-1" => Some(Normalize::Symmetric),
            _ => {
                let (m, sd) = t.split_once(',')?;
                let (mean, std) = (m.parse().ok()?, sd.parse::<f32>().ok()?);
                (std != 0.0 && std.is_finite()).then_some(Normalize::MeanStd { mean, std })
            }
        }
    }

    /// Applies the map to one value (computed as PyTorch data pipelines do, in f32).
    pub fn apply(&self, x: f32) -> f32 {
        match *self {
            Normalize::Identity => x,
            Normalize::Unit => x / 255.0,
            Normalize::Symmetric => x / 255.0 * 2.0 - 1.0,
            Normalize::MeanStd { mean, std } => (x - mean) / std,
        }
    }
}

/// Which tensors to read and how.
#[derive(Debug, Clone)]
pub struct DataSpec {
    /// The data file (safetensors or `.npy`).
    pub path: PathBuf,
    /// Data tensor name in a multi-tensor safetensors file.
    pub data_key: String,
    /// Label tensor name in a multi-tensor safetensors file (`None`: no labels wanted).
    pub label_key: Option<String>,
    /// A separate labels file (`.npy` or single-tensor safetensors), overriding `label_key`.
    pub labels_path: Option<PathBuf>,
    /// Normalisation of the data values.
    pub normalize: Normalize,
}

impl DataSpec {
    /// The data tensor `data_key` of `path`, without labels.
    pub fn unlabelled(path: impl Into<PathBuf>, data_key: &str, normalize: Normalize) -> Self {
        Self {
            path: path.into(),
            data_key: data_key.into(),
            label_key: None,
            labels_path: None,
            normalize,
        }
    }
}

/// Loaded samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Number of samples.
    pub n: usize,
    /// Shape of one sample (`[D]` or `[C, H, W]`).
    pub sample_shape: Vec<usize>,
    /// `n * prod(sample_shape)` normalised values, sample-major.
    pub x: Vec<f32>,
    /// One label per sample, if asked for.
    pub labels: Option<Vec<i64>>,
}

impl Dataset {
    /// Values per sample.
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }
}

/// Bytes read from the file at a time: bounds a [`DataSource`]'s buffer whatever the read.
const READ_BYTES: usize = 1 << 18;

/// An open data file read in chunks of samples; memory does not depend on the number of
/// samples.
///
/// [`open`](DataSource::open) reads and checks the header only; [`read`](DataSource::read)
/// seeks to the requested samples and converts them through one reusable buffer of at most
/// 256 KiB, so any read, however long, costs no memory beyond its output.
#[derive(Debug)]
pub struct DataSource {
    path: PathBuf,
    /// The data tensor's name (`array` for a `.npy` file).
    tensor: String,
    file: File,
    /// Byte offset of the first sample in the file.
    data_start: u64,
    /// U8 or a float type.
    dtype: Dtype,
    elem_size: usize,
    n: usize,
    sample_shape: Vec<usize>,
    sample_len: usize,
    normalize: Normalize,
    buf: Vec<u8>,
}

// A source moves to the thread that reads it.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<DataSource>();
};

impl DataSource {
    /// Opens `spec` (same tensor selection rules and error messages as [`load`]: the
    /// safetensors tensor named `data_key` or the file's only tensor, or a `.npy` array),
    /// validating the header, dtype (U8, F32, F16, BF16, F64), shape (`N x D` or
    /// `N x C x H x W`), and that the file holds all the bytes. Reads no sample data; ignores
    /// the label fields of `spec`.
    pub fn open(spec: &DataSpec) -> Result<DataSource, Error> {
        let path = spec.path.as_path();
        let loc = locate(path, &spec.data_key, "data")?;
        if loc.shape.len() != 2 && loc.shape.len() != 4 {
            return Err(data_err(
                path,
                format!(
                    "tensor `{}` has shape {:?}; data must be N x D or N x C x H x W",
                    loc.name, loc.shape
                ),
            ));
        }
        let elem_size = match loc.dtype {
            Dtype::U8 | Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64 => loc.dtype.size(),
            _ => None,
        };
        let Some(elem_size) = elem_size else {
            return Err(Error::Dtype {
                path: path.to_path_buf(),
                tensor: loc.name,
                dtype: loc.dtype.to_string(),
                expected: "U8 or a float type (F32, F16, BF16, F64)",
            });
        };
        // The header parsers checked that the tensor's element count fits in usize, but with no
        // samples (N = 0) that count is 0 whatever one sample's size is: check it here.
        let sample_shape = loc.shape[1..].to_vec();
        let Some(sample_len) = sample_shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
        else {
            return Err(data_err(
                path,
                format!(
                    "tensor `{}` has shape {:?}: one sample's size overflows",
                    loc.name, loc.shape
                ),
            ));
        };
        Ok(DataSource {
            path: path.to_path_buf(),
            tensor: loc.name,
            file: loc.file,
            data_start: loc.data_start,
            dtype: loc.dtype,
            elem_size,
            n: loc.shape[0],
            sample_len,
            sample_shape,
            normalize: spec.normalize,
            buf: Vec::new(),
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the file holds no samples.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Per-sample shape (e.g. `[784]` or `[1, 28, 28]`).
    pub fn sample_shape(&self) -> &[usize] {
        &self.sample_shape
    }

    /// Values per sample.
    pub fn sample_len(&self) -> usize {
        self.sample_len
    }

    /// Reads samples `start .. start + count` normalised into `out[.. count * sample_len]`
    /// (f32, sample-major; the rest of `out` is untouched). Errors, naming the file and the
    /// sample index, if the range is out of bounds or `out` too short, on I/O failure, or if a
    /// value is NaN or infinite after conversion to f32 or after normalisation (`out` then
    /// holds partial results).
    pub fn read(&mut self, start: usize, count: usize, out: &mut [f32]) -> Result<(), Error> {
        let path = self.path.as_path();
        if start.checked_add(count).is_none_or(|end| end > self.n) {
            return Err(data_err(
                path,
                format!(
                    "cannot read {count} samples from sample {start}: tensor `{}` holds {} samples",
                    self.tensor, self.n
                ),
            ));
        }
        // Within the tensor, so no overflow: the header parsers checked its byte count.
        let values = count * self.sample_len;
        let Some(out) = out.get_mut(..values) else {
            return Err(data_err(
                path,
                format!(
                    "reading {count} samples from sample {start} needs room for {values} values, the output holds {}",
                    out.len()
                ),
            ));
        };
        let first = start * self.sample_len;
        let per_read = (READ_BYTES / self.elem_size).max(1);
        // Names the samples asked for and the one where reading failed.
        let io_err = |v0: usize, e: std::io::Error| Error::Read {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                e.kind(),
                format!(
                    "samples {start}..{} of tensor `{}`, at sample {}: {e}",
                    start + count,
                    self.tensor,
                    v0 / self.sample_len,
                ),
            ),
        };
        let offset = self.data_start + (first * self.elem_size) as u64;
        if values > 0 {
            self.file
                .seek(SeekFrom::Start(offset))
                .map_err(|e| io_err(first, e))?;
        }
        for (k, piece) in out.chunks_mut(per_read).enumerate() {
            let v0 = first + k * per_read;
            self.buf.resize(piece.len() * self.elem_size, 0);
            self.file
                .read_exact(&mut self.buf)
                .map_err(|e| io_err(v0, e))?;
            if !self.dtype.decode_f32(&self.buf, piece) {
                return Err(data_err(
                    path,
                    format!(
                        "tensor `{}`: cannot convert {} to f32",
                        self.tensor, self.dtype
                    ),
                ));
            }
            for (j, v) in piece.iter_mut().enumerate() {
                let x = *v;
                let y = self.normalize.apply(x);
                if !y.is_finite() {
                    let sample = (v0 + j) / self.sample_len;
                    let at = (v0 + j) % self.sample_len;
                    let reason = if x.is_finite() {
                        format!(
                            "tensor `{}`: sample {sample} value {at} ({x}) normalises to {y}",
                            self.tensor
                        )
                    } else {
                        format!(
                            "tensor `{}` holds a non-finite value ({x}) in sample {sample} at value {at}",
                            self.tensor
                        )
                    };
                    return Err(data_err(path, reason));
                }
                *v = y;
            }
        }
        Ok(())
    }
}

fn is_npy(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

fn data_err(path: &Path, reason: String) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        reason,
    }
}

/// A tensor picked from a file by its header, its bytes not read yet.
struct Located {
    file: File,
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte offset of the tensor's data in the file.
    data_start: u64,
    /// Bytes of data.
    data_len: u64,
}

/// The one tensor of a file, or (safetensors with several) the one named `key`.
fn locate(path: &Path, key: &str, what: &str) -> Result<Located, Error> {
    if is_npy(path) {
        let (file, h) = npy::read_header(path)?;
        return Ok(Located {
            file,
            name: String::from("array"),
            dtype: h.dtype,
            shape: h.shape,
            data_start: h.data_start,
            data_len: h.data_len,
        });
    }
    let (file, mut header) = safetensors::read_header(path)?;
    let picked = if header.tensors.len() == 1 {
        header.tensors.pop_first()
    } else {
        header.tensors.remove_entry(key)
    };
    let Some((name, entry)) = picked else {
        return Err(data_err(
            path,
            format!(
                "no {what} tensor `{key}` (tensors: {}); choose one with --{}",
                header
                    .tensors
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                if what == "data" {
                    "data-key"
                } else {
                    "label-key"
                }
            ),
        ));
    };
    let range = header.file_range(&entry);
    Ok(Located {
        file,
        name,
        dtype: entry.dtype,
        shape: entry.shape,
        data_start: range.start,
        data_len: range.end - range.start,
    })
}

/// Loads data (and labels) as `spec` says: a [`DataSource`] read whole. Data must be U8 or
/// float (F32, F16, BF16, F64) of rank 2 or 4; labels an integer vector with one entry per
/// sample.
pub fn load(spec: &DataSpec) -> Result<Dataset, Error> {
    let path = spec.path.as_path();
    let mut source = DataSource::open(spec)?;
    let n = source.len();
    let mut x = vec![0.0; n * source.sample_len()];
    source.read(0, n, &mut x)?;
    let labels = match (&spec.labels_path, &spec.label_key) {
        (Some(lp), key) => Some(load_labels(lp, key.as_deref().unwrap_or("y_test"), n)?),
        (None, Some(key)) if !is_npy(path) => {
            let loc = locate(path, key, "label")?;
            if loc.name == source.tensor {
                return Err(data_err(
                    path,
                    format!(
                        "holds only `{}`; labels need a `{key}` tensor or --labels FILE",
                        source.tensor
                    ),
                ));
            }
            Some(labels_from(path, loc, n)?)
        }
        (None, Some(_)) => {
            return Err(data_err(
                path,
                "a .npy file holds no labels; pass them with --labels FILE".to_string(),
            ));
        }
        (None, None) => None,
    };
    Ok(Dataset {
        n,
        sample_shape: source.sample_shape,
        x,
        labels,
    })
}

/// Checks the located label tensor (one integer per sample), then reads it.
fn labels_from(path: &Path, loc: Located, n: usize) -> Result<Vec<i64>, Error> {
    let squeezed = loc.shape.iter().filter(|&&d| d != 1).count() <= 1;
    let numel = loc.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if numel != Some(n) || !squeezed {
        return Err(data_err(
            path,
            format!(
                "label tensor `{}` has shape {:?}, expected [{n}] (one label per sample)",
                loc.name, loc.shape
            ),
        ));
    }
    let dtype_err = |dtype: &Dtype| Error::Dtype {
        path: path.to_path_buf(),
        tensor: loc.name.clone(),
        dtype: dtype.to_string(),
        expected: "an integer type (U8, I8, I16, I32, I64)",
    };
    if !matches!(
        loc.dtype,
        Dtype::U8 | Dtype::I8 | Dtype::I16 | Dtype::I32 | Dtype::I64
    ) {
        return Err(dtype_err(&loc.dtype));
    }
    let read_err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = loc.file;
    file.seek(SeekFrom::Start(loc.data_start))
        .map_err(read_err)?;
    // At most 8 bytes per sample: the header parsers checked the byte count against the shape.
    let mut bytes = Vec::new();
    file.take(loc.data_len)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if (bytes.len() as u64) < loc.data_len {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "label tensor `{}` ends after {} of its {} bytes",
                loc.name,
                bytes.len(),
                loc.data_len
            ),
        )));
    }
    let raw = RawTensor {
        dtype: loc.dtype,
        shape: loc.shape,
        bytes,
    };
    raw.int_to_i64().ok_or_else(|| dtype_err(&raw.dtype))
}

/// Labels from their own file (`.npy` or single-tensor safetensors, or `key` in a
/// multi-tensor one).
pub fn load_labels(path: &Path, key: &str, n: usize) -> Result<Vec<i64>, Error> {
    let loc = locate(path, key, "label")?;
    labels_from(path, loc, n)
}
