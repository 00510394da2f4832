//! Merge data written as a `.npy` file, for tests that build their samples in memory.

use std::path::PathBuf;

use pleas::io::data::{DataSpec, Normalize};
use pleas::io::npy;
use pleas::io::safetensors::{Dtype, RawTensor};

/// Writes the `n x d` f32 samples `x` to `path` as `.npy` and returns the spec that reads
/// them back unchanged (no labels, no normalisation).
pub fn write(path: PathBuf, x: &[f32], n: usize, d: usize) -> DataSpec {
    assert_eq!(x.len(), n * d, "samples are n x d");
    let raw = RawTensor {
        dtype: Dtype::F32,
        shape: vec![n, d],
        bytes: x.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    std::fs::write(&path, npy::to_bytes(&raw)).unwrap();
    DataSpec::unlabelled(path, "x", Normalize::Identity)
}
