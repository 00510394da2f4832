//! Named f32 tensors: a model's parameters keyed by PyTorch state_dict names.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// A model's tensors by name (e.g. `layers.0.conv1.weight`), in name order.
pub type Weights = BTreeMap<String, Tensor>;

/// Why a tensor could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorError {
    /// The shape asked for.
    pub shape: Vec<usize>,
    /// Elements provided.
    pub len: usize,
}

impl fmt::Display for TensorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a tensor of shape {:?} needs {} elements, {} given",
            self.shape,
            self.shape
                .iter()
                .try_fold(1usize, |a, &b| a.checked_mul(b))
                .unwrap_or(usize::MAX),
            self.len
        )
    }
}

impl core::error::Error for TensorError {}

/// A dense row-major (C-order) f32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Tensor {
    /// A tensor of `shape` over `data` (row-major); the lengths must agree.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, TensorError> {
        let n = shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        if n != Some(data.len()) {
            return Err(TensorError {
                shape,
                len: data.len(),
            });
        }
        Ok(Self { shape, data })
    }

    /// A tensor of `shape` filled with zeros.
    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Self {
            shape,
            data: alloc::vec![0.0; n],
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The elements, row-major, mutable.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor holds no element.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Shape and elements.
    pub fn into_parts(self) -> (Vec<usize>, Vec<f32>) {
        (self.shape, self.data)
    }

    /// The tensor with `axis` permuted: `out[.., i, ..] = self[.., perm[i], ..]`.
    /// `perm` must be a permutation of `0..shape[axis]` (checked), else `None`.
    pub fn permute_axis(&self, axis: usize, perm: &[usize]) -> Option<Tensor> {
        let n = *self.shape.get(axis)?;
        if perm.len() != n {
            return None;
        }
        let mut seen = alloc::vec![false; n];
        for &p in perm {
            if p >= n || seen[p] {
                return None;
            }
            seen[p] = true;
        }
        let inner: usize = self.shape[axis + 1..].iter().product();
        let outer: usize = self.shape[..axis].iter().product();
        let mut data = alloc::vec![0.0; self.data.len()];
        for o in 0..outer {
            for (i, &p) in perm.iter().enumerate() {
                let dst = (o * n + i) * inner;
                let src = (o * n + p) * inner;
                data[dst..dst + inner].copy_from_slice(&self.data[src..src + inner]);
            }
        }
        Some(Tensor {
            shape: self.shape.clone(),
            data,
        })
    }
}
