//! Input data: a safetensors or `.npy` file of `N x D` or `N x C x H x W` samples, U8 or
//! float, normalised to f32; optional integer labels.
//!
//! In a safetensors file with one tensor, that tensor is the data. With several, the data is
//! the tensor named by `data_key` (commands default to `x_test` for eval and `x_match` for merge)
//! and the labels the one named by `label_key` (default `y_test`). A `.npy` file holds the data
//! only; labels then come from a second file.

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

/// The one tensor of a file, or (safetensors with several) the one named `key`.
fn pick(path: &Path, key: &str, what: &str) -> Result<(String, RawTensor), Error> {
    if is_npy(path) {
        return Ok((String::from("array"), npy::read(path)?));
    }
    let mut file = safetensors::read(path)?;
    if file.tensors.len() == 1 {
        let (k, t) = file.tensors.pop_first().expect("one tensor");
        return Ok((k, t));
    }
    match file.tensors.remove(key) {
        Some(t) => Ok((key.to_string(), t)),
        None => Err(data_err(
            path,
            format!(
                "no {what} tensor `{key}` (tensors: {}); choose one with --{}",
                file.tensors.keys().cloned().collect::<Vec<_>>().join(", "),
                if what == "data" {
                    "data-key"
                } else {
                    "label-key"
                }
            ),
        )),
    }
}

/// Loads data (and labels) as `spec` says. Data must be U8 or float (F32, F16, BF16, F64) of
/// rank 2 or 4; labels an integer vector with one entry per sample.
pub fn load(spec: &DataSpec) -> Result<Dataset, Error> {
    let path = spec.path.as_path();
    let (name, raw) = pick(path, &spec.data_key, "data")?;
    if raw.shape.len() != 2 && raw.shape.len() != 4 {
        return Err(data_err(
            path,
            format!(
                "tensor `{name}` has shape {:?}; data must be N x D or N x C x H x W",
                raw.shape
            ),
        ));
    }
    let values: Vec<f32> = match raw.dtype {
        Dtype::U8 => raw.bytes.iter().map(|&b| b as f32).collect(),
        Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64 => {
            raw.float_to_f32().expect("float dtype")
        }
        ref d => {
            return Err(Error::Dtype {
                path: path.to_path_buf(),
                tensor: name,
                dtype: d.to_string(),
                expected: "U8 or a float type (F32, F16, BF16, F64)",
            });
        }
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(data_err(
            path,
            format!("tensor `{name}` holds a non-finite value at flat index {i}"),
        ));
    }
    let x: Vec<f32> = values.iter().map(|&v| spec.normalize.apply(v)).collect();
    let n = raw.shape[0];
    let labels = match (&spec.labels_path, &spec.label_key) {
        (Some(lp), key) => Some(load_labels(lp, key.as_deref().unwrap_or("y_test"), n)?),
        (None, Some(key)) if !is_npy(path) => {
            let (lname, lraw) = pick(path, key, "label")?;
            if lname == name {
                return Err(data_err(
                    path,
                    format!("holds only `{name}`; labels need a `{key}` tensor or --labels FILE"),
                ));
            }
            Some(labels_from(path, &lname, lraw, n)?)
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
        sample_shape: raw.shape[1..].to_vec(),
        x,
        labels,
    })
}

fn labels_from(path: &Path, name: &str, raw: RawTensor, n: usize) -> Result<Vec<i64>, Error> {
    let squeezed = raw.shape.iter().filter(|&&d| d != 1).count() <= 1;
    if raw.numel() != n || !squeezed {
        return Err(data_err(
            path,
            format!(
                "label tensor `{name}` has shape {:?}, expected [{n}] (one label per sample)",
                raw.shape
            ),
        ));
    }
    raw.int_to_i64().ok_or_else(|| Error::Dtype {
        path: path.to_path_buf(),
        tensor: name.to_string(),
        dtype: raw.dtype.to_string(),
        expected: "an integer type (U8, I8, I16, I32, I64)",
    })
}

/// Labels from their own file (`.npy` or single-tensor safetensors, or `key` in a
/// multi-tensor one).
pub fn load_labels(path: &Path, key: &str, n: usize) -> Result<Vec<i64>, Error> {
    let (name, raw) = pick(path, key, "label")?;
    labels_from(path, &name, raw, n)
}
