//! The state_dict of a `torch.save` file: tensors gathered into C order from their storages.
//!
//! The unpickled object is a state_dict (a dict of tensors) or a dict wrapping one under
//! `state_dict`, `model_state_dict` or `model` (other entries, e.g. an optimizer's state or the
//! epoch, are ignored). A wrapper's `metadata` entry, if it is a dict of strings, becomes the
//! model's metadata (as a safetensors file's `__metadata__`).
//!
//! Each tensor is a strided view of a storage: its elements are `offset + sum(i_k * stride_k)`,
//! which must lie inside the storage (checked with overflow-checked arithmetic). Views
//! (transposes, slices, storage offsets) are gathered into contiguous C order as PyTorch's
//! `.contiguous()` would; several tensors viewing one storage read the one record. Views may
//! repeat elements (stride 0), so the total gathered is bounded: at most [`EXPANSION`] times
//! the file's size plus 1 MiB.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::TorchError;
use super::pickle::{Obj, ObjId, StorageRef, TensorView, Unpickled, unpickle};
use super::zip::Archive;
use crate::error::Error;
use crate::io::safetensors::{Metadata, RawTensor};

/// Keys under which a wrapper dict may hold the state_dict, tried in this order.
pub const STATE_DICT_KEYS: [&str; 3] = ["state_dict", "model_state_dict", "model"];

/// Bound on the bytes of all gathered tensors, relative to the file's size.
pub const EXPANSION: u64 = 16;

/// A checkpoint's state_dict: tensors by name (stored dtype, C order) and metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checkpoint {
    /// Tensors by state_dict key.
    pub tensors: BTreeMap<String, RawTensor>,
    /// A wrapper's `metadata` strings, if any.
    pub metadata: Metadata,
}

/// Reads a `torch.save` file.
pub fn read(path: &Path) -> Result<Checkpoint, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&bytes).map_err(|source| Error::Torch {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses a `torch.save` file held in memory.
pub fn parse(bytes: &[u8]) -> Result<Checkpoint, TorchError> {
    let mut archive = Archive::open(bytes)?;
    let pickle = archive.pickle()?;
    let un = unpickle(&pickle)?;
    let (entries, metadata) = find_state_dict(&un)?;
    let mut reader = StorageReader {
        archive,
        loaded: HashMap::new(),
        budget: EXPANSION
            .saturating_mul(bytes.len() as u64)
            .saturating_add(1 << 20),
    };
    let mut tensors = BTreeMap::new();
    for (name, view) in entries {
        let t = reader.gather(view).map_err(|reason| TorchError::Tensor {
            name: name.clone(),
            reason,
        })?;
        // A repeated key: the last one wins, as in a Python dict.
        tensors.insert(name, t);
    }
    Ok(Checkpoint { tensors, metadata })
}

/// The pairs of dict `id` if every key is a string and every value a tensor.
fn tensor_entries(un: &Unpickled, id: ObjId) -> Option<Vec<(String, &TensorView)>> {
    let Obj::Dict(pairs) = un.get(id) else {
        return None;
    };
    pairs
        .iter()
        .map(|&(k, v)| match (un.get(k), un.get(v)) {
            (Obj::Str(k), Obj::Tensor(t)) => Some((k.clone(), t)),
            _ => None,
        })
        .collect()
}

/// The value under string key `key` of dict `id` (the last one, as in Python).
fn dict_get(un: &Unpickled, id: ObjId, key: &str) -> Option<ObjId> {
    let Obj::Dict(pairs) = un.get(id) else {
        return None;
    };
    pairs
        .iter()
        .rev()
        .find(|&&(k, _)| matches!(un.get(k), Obj::Str(s) if s == key))
        .map(|&(_, v)| v)
}

/// Dict `id` as string metadata, if every key and value is a string.
fn string_dict(un: &Unpickled, id: ObjId) -> Option<Metadata> {
    let Obj::Dict(pairs) = un.get(id) else {
        return None;
    };
    pairs
        .iter()
        .map(|&(k, v)| match (un.get(k), un.get(v)) {
            (Obj::Str(k), Obj::Str(v)) => Some((k.clone(), v.clone())),
            _ => None,
        })
        .collect()
}

type StateDict<'u> = (Vec<(String, &'u TensorView)>, Metadata);

fn find_state_dict(un: &Unpickled) -> Result<StateDict<'_>, TorchError> {
    let root = un.root;
    if !matches!(un.get(root), Obj::Dict(_)) {
        return Err(TorchError::NoStateDict(
            "the checkpoint holds no dict at its top level".into(),
        ));
    }
    if let Some(e) = tensor_entries(un, root).filter(|e| !e.is_empty()) {
        return Ok((e, Metadata::new()));
    }
    for key in STATE_DICT_KEYS {
        if let Some(e) = dict_get(un, root, key).and_then(|v| tensor_entries(un, v)) {
            let metadata = dict_get(un, root, "metadata")
                .and_then(|m| string_dict(un, m))
                .unwrap_or_default();
            return Ok((e, metadata));
        }
    }
    Err(TorchError::NoStateDict(format!(
        "the top-level dict is not a dict of tensors, and none of its entries {} is one",
        STATE_DICT_KEYS.map(|k| format!("`{k}`")).join(", ")
    )))
}

/// Loads storages once each and gathers tensor views from them.
struct StorageReader<'a> {
    archive: Archive<'a>,
    /// Storages read so far: their reference (to check later uses agree) and bytes.
    loaded: HashMap<String, (StorageRef, Vec<u8>)>,
    /// Bytes that may still be gathered.
    budget: u64,
}

fn to_usize(v: u64, what: &str) -> Result<usize, String> {
    usize::try_from(v).map_err(|_| format!("{what} {v} does not fit this machine"))
}

impl StorageReader<'_> {
    fn storage(&mut self, s: &StorageRef, elem: u64) -> Result<&[u8], String> {
        if !self.loaded.contains_key(&s.key) {
            let len = s
                .numel
                .checked_mul(elem)
                .ok_or_else(|| format!("storage `{}` of {} elements overflows", s.key, s.numel))?;
            let bytes = self
                .archive
                .storage(&s.key, len)
                .map_err(|e| crate::error::chain(&e))?;
            self.loaded.insert(s.key.clone(), (s.clone(), bytes));
        }
        let (first, bytes) = &self.loaded[&s.key];
        if first != s {
            return Err(format!(
                "storage `{}` is named as {:?} of {} elements and elsewhere as {:?} of {}",
                s.key, first.kind, first.numel, s.kind, s.numel
            ));
        }
        Ok(bytes)
    }

    /// The view's elements in C order, as the stored dtype's bytes.
    fn gather(&mut self, v: &TensorView) -> Result<RawTensor, String> {
        let dtype = v.storage.kind.dtype();
        let Some(elem) = dtype.size() else {
            return Err(format!("dtype {dtype} is not supported"));
        };
        let numel = checked_numel(&v.size)?;
        check_in_bounds(v)?;
        let out_len = numel
            .checked_mul(elem as u64)
            .filter(|&n| n <= self.budget)
            .ok_or_else(|| {
                format!(
                    "shape {:?} expands to more than the {} bytes left to read",
                    v.size, self.budget
                )
            })?;
        self.budget -= out_len;
        let shape: Vec<usize> = v
            .size
            .iter()
            .map(|&d| to_usize(d, "dimension"))
            .collect::<Result<_, _>>()?;
        let stride: Vec<usize> = v
            .stride
            .iter()
            .zip(&v.size)
            .map(|(&s, &d)| if d <= 1 { Ok(0) } else { to_usize(s, "stride") })
            .collect::<Result<_, _>>()?;
        let offset = to_usize(v.offset, "storage offset")?;
        let src = self.storage(&v.storage, elem as u64)?;
        let mut bytes = Vec::with_capacity(to_usize(out_len, "tensor size")?);
        if numel > 0 {
            copy_strided(src, elem, offset, &shape, &stride, &mut bytes);
        }
        Ok(RawTensor {
            dtype,
            shape,
            bytes,
        })
    }
}

fn checked_numel(size: &[u64]) -> Result<u64, String> {
    size.iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {size:?} overflows"))
}

/// Checks that every element of the view lies inside its storage.
fn check_in_bounds(v: &TensorView) -> Result<(), String> {
    let n = v.storage.numel;
    let too_small = |last: String| {
        format!(
            "shape {:?}, stride {:?} and offset {} reach element {last} of storage `{}`, which holds {n}",
            v.size, v.stride, v.offset, v.storage.key
        )
    };
    if v.size.contains(&0) {
        // An empty tensor reads nothing; PyTorch still wants its offset inside the storage.
        return if v.offset <= n {
            Ok(())
        } else {
            Err(too_small(v.offset.to_string()))
        };
    }
    let last = v
        .size
        .iter()
        .zip(&v.stride)
        .try_fold(v.offset, |a, (&d, &s)| {
            (d - 1).checked_mul(s).and_then(|x| a.checked_add(x))
        })
        .ok_or_else(|| too_small("beyond 2^64".into()))?;
    if last >= n {
        return Err(too_small(last.to_string()));
    }
    Ok(())
}

/// Appends the elements of a strided view (all inside `src`, non-empty) to `out` in C order.
fn copy_strided(
    src: &[u8],
    elem: usize,
    offset: usize,
    shape: &[usize],
    stride: &[usize],
    out: &mut Vec<u8>,
) {
    let Some((&inner, outer_shape)) = shape.split_last() else {
        out.extend_from_slice(&src[offset * elem..(offset + 1) * elem]);
        return;
    };
    let inner_stride = stride[shape.len() - 1];
    let outer_stride = &stride[..shape.len() - 1];
    let rows: usize = outer_shape.iter().product();
    let mut index = vec![0usize; outer_shape.len()];
    let mut start = offset;
    for _ in 0..rows {
        if inner_stride == 1 {
            out.extend_from_slice(&src[start * elem..(start + inner) * elem]);
        } else {
            for i in 0..inner {
                let p = (start + i * inner_stride) * elem;
                out.extend_from_slice(&src[p..p + elem]);
            }
        }
        // Odometer over the outer axes; every reached start is in bounds (checked above).
        for d in (0..outer_shape.len()).rev() {
            index[d] += 1;
            start = start.wrapping_add(outer_stride[d]);
            if index[d] < outer_shape[d] {
                break;
            }
            start = start.wrapping_sub(outer_stride[d].wrapping_mul(outer_shape[d]));
            index[d] = 0;
        }
    }
}
