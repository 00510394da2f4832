//! Safetensors read and write.
//!
//! The format: an 8-byte little-endian header length `n`, `n` bytes of UTF-8 JSON mapping each
//! tensor name to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets relative to the
//! data section that follows) plus an optional `"__metadata__"` object of strings, then the
//! tensor bytes, little-endian, C order. The reader checks every offset against the data
//! section, so a truncated file is reported with the first tensor that does not fit.
//!
//! Model weights are read as f32 from F32, F16 or BF16 tensors; PyTorch's integer
//! `*.num_batches_tracked` buffers are skipped. Weights are written as F32.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::path::Path;

use pleas_core::graph::{Tensor, Weights};

use crate::error::Error;

/// String metadata of a safetensors file (`__metadata__`).
pub type Metadata = BTreeMap<String, String>;

/// Largest header accepted (the reference implementation's limit).
const MAX_HEADER: u64 = 100_000_000;

/// Element type of a stored tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dtype {
    /// 64-bit float.
    F64,
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// Signed 64-bit integer.
    I64,
    /// Signed 32-bit integer.
    I32,
    /// Signed 16-bit integer.
    I16,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 8-bit integer.
    U8,
    /// Any other dtype (kept by name; its size is unknown to us).
    Other(String),
}

impl Dtype {
    fn parse(s: &str) -> Dtype {
        match s {
            "F64" => Dtype::F64,
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "I64" => Dtype::I64,
            "I32" => Dtype::I32,
            "I16" => Dtype::I16,
            "I8" => Dtype::I8,
            "U8" => Dtype::U8,
            other => Dtype::Other(other.to_string()),
        }
    }

    /// Bytes per element, or `None` for an unknown dtype.
    pub fn size(&self) -> Option<usize> {
        Some(match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 | Dtype::BF16 | Dtype::I16 => 2,
            Dtype::I8 | Dtype::U8 => 1,
            Dtype::Other(_) => return None,
        })
    }

    /// The safetensors name (`F32`, `U8`, ...).
    pub fn name(&self) -> &str {
        match self {
            Dtype::F64 => "F64",
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I64 => "I64",
            Dtype::I32 => "I32",
            Dtype::I16 => "I16",
            Dtype::I8 => "I8",
            Dtype::U8 => "U8",
            Dtype::Other(s) => s,
        }
    }

    /// Converts the first `out.len()` little-endian values of this dtype in `bytes` to f32:
    /// exactly for U8, F32, F16 and BF16, rounded to nearest for F64 (so a finite F64 beyond
    /// the f32 range becomes infinite). Returns `false`, writing nothing, for any other dtype
    /// or if `bytes` holds fewer values. This is the one conversion of stored values to f32:
    /// model weights and input data both go through it.
    pub fn decode_f32(&self, bytes: &[u8], out: &mut [f32]) -> bool {
        let Some(size) = self.size() else {
            return false;
        };
        if bytes.len() / size < out.len() {
            return false;
        }
        let pairs = bytes.chunks_exact(size).zip(out.iter_mut());
        match self {
            Dtype::U8 => pairs.for_each(|(c, o)| *o = f32::from(c[0])),
            Dtype::F32 => {
                pairs.for_each(|(c, o)| *o = f32::from_le_bytes(c.try_into().expect("4 bytes")))
            }
            Dtype::F16 => {
                pairs.for_each(|(c, o)| *o = f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            }
            Dtype::BF16 => {
                pairs.for_each(|(c, o)| *o = bf16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            }
            Dtype::F64 => pairs.for_each(|(c, o)| {
                *o = f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32;
            }),
            _ => return false,
        }
        true
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One stored tensor: dtype, shape and its little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Raw little-endian bytes, C order.
    pub bytes: Vec<u8>,
}

/// IEEE half to f32 (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if mant == 0 => sign,
        0 => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut m = mant;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((m & 0x3ff) << 13)
        }
        0x1f => sign | 0x7f80_0000 | (mant << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (mant << 13),
    };
    f32::from_bits(bits)
}

/// bfloat16 to f32 (exact).
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

impl RawTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values as f32 if the dtype is a float type (F32, F16, BF16, F64).
    pub fn float_to_f32(&self) -> Option<Vec<f32>> {
        if !matches!(
            self.dtype,
            Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64
        ) {
            return None;
        }
        let mut out = vec![0.0; self.bytes.len() / self.dtype.size()?];
        self.dtype.decode_f32(&self.bytes, &mut out).then_some(out)
    }

    /// The values as i64 if the dtype is an integer type.
    pub fn int_to_i64(&self) -> Option<Vec<i64>> {
        let b = &self.bytes;
        Some(match self.dtype {
            Dtype::U8 => b.iter().map(|&v| v as i64).collect(),
            Dtype::I8 => b.iter().map(|&v| v as i8 as i64).collect(),
            Dtype::I16 => b
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            Dtype::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
            Dtype::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
            _ => return None,
        })
    }
}

/// A parsed safetensors file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SafetensorsFile {
    /// Tensors by name.
    pub tensors: BTreeMap<String, RawTensor>,
    /// `__metadata__` strings.
    pub metadata: Metadata,
}

fn usize_of(v: &serde_json::Value) -> Option<usize> {
    v.as_u64().and_then(|x| usize::try_from(x).ok())
}

/// Where one tensor lies in a safetensors file, as its header says.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// `data_offsets`: the tensor's bytes, relative to the start of the data section.
    pub offsets: Range<usize>,
}

/// The header of a safetensors file: where every tensor lies, and the metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Header {
    /// Tensors by name.
    pub tensors: BTreeMap<String, TensorEntry>,
    /// `__metadata__` strings.
    pub metadata: Metadata,
    /// Byte offset of the data section in the file (8 plus the header length).
    pub data_start: u64,
}

impl Header {
    /// The bytes of `entry` as offsets from the start of the file.
    pub fn file_range(&self, entry: &TensorEntry) -> Range<u64> {
        self.data_start + entry.offsets.start as u64..self.data_start + entry.offsets.end as u64
    }
}

/// Header length and where the JSON header ends, from the first bytes of a file of `file_len`
/// bytes (`front` holds at least its first 8 bytes, or the whole file if it is shorter).
fn header_end(front: &[u8], file_len: u64) -> Result<u64, String> {
    let Some(len_bytes) = front.get(..8) else {
        return Err(format!(
            "file is {file_len} bytes long, shorter than the 8-byte header length"
        ));
    };
    let n = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
    if n > MAX_HEADER {
        return Err(format!(
            "header length {n} exceeds the {MAX_HEADER}-byte limit"
        ));
    }
    Ok(8 + n)
}

/// Parses the header of a safetensors file of `file_len` bytes from `front`, its first bytes
/// (at least up to the end of the header, or the whole file if it is shorter; the data section
/// may be absent). Checks every tensor's `data_offsets` against its dtype and shape and against
/// the data section the file length leaves, so a truncated file is reported with the first
/// tensor that does not fit. The error is the reason, without the path.
pub fn parse_header(front: &[u8], file_len: u64) -> Result<Header, String> {
    let data_start = header_end(front, file_len)?;
    let n = data_start - 8;
    let Some(header) = usize::try_from(data_start)
        .ok()
        .and_then(|end| front.get(8..end))
        .filter(|_| data_start <= file_len)
    else {
        return Err(format!(
            "truncated: the header needs {n} bytes, the file has {} after the length",
            file_len.saturating_sub(8)
        ));
    };
    let header = std::str::from_utf8(header).map_err(|e| format!("header is not UTF-8: {e}"))?;
    let json: serde_json::Value =
        serde_json::from_str(header).map_err(|e| format!("header is not valid JSON: {e}"))?;
    let serde_json::Value::Object(entries) = json else {
        return Err("header is not a JSON object".to_string());
    };
    let data_len = file_len - data_start;
    let mut out = Header {
        data_start,
        ..Header::default()
    };
    for (name, entry) in entries {
        if name == "__metadata__" {
            let serde_json::Value::Object(m) = entry else {
                return Err("`__metadata__` is not an object".to_string());
            };
            for (k, v) in m {
                let serde_json::Value::String(s) = v else {
                    return Err(format!("metadata `{k}` is not a string"));
                };
                out.metadata.insert(k, s);
            }
            continue;
        }
        let bad = |what: &str| format!("tensor `{name}`: {what}");
        let dtype = entry
            .get("dtype")
            .and_then(|d| d.as_str())
            .map(Dtype::parse)
            .ok_or_else(|| bad("missing or non-string `dtype`"))?;
        let shape: Vec<usize> = entry
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("missing `shape`"))?
            .iter()
            .map(usize_of)
            .collect::<Option<_>>()
            .ok_or_else(|| bad("`shape` holds a non-integer"))?;
        let offsets = entry
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .filter(|a| a.len() == 2)
            .ok_or_else(|| bad("missing `data_offsets` pair"))?;
        let (Some(begin), Some(end)) = (usize_of(&offsets[0]), usize_of(&offsets[1])) else {
            return Err(bad("`data_offsets` are not integers"));
        };
        if end < begin {
            return Err(bad("`data_offsets` end before they begin"));
        }
        let numel = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad("shape overflows"))?;
        if let Some(size) = dtype.size()
            && numel.checked_mul(size) != Some(end - begin)
        {
            return Err(bad(&format!(
                "{dtype} shape {shape:?} needs {} bytes, `data_offsets` span {}",
                numel.saturating_mul(size),
                end - begin
            )));
        }
        if end as u64 > data_len {
            return Err(format!(
                "truncated: tensor `{name}` ends at byte {end} of the data section, which holds {data_len} bytes"
            ));
        }
        out.tensors.insert(
            name,
            TensorEntry {
                dtype,
                shape,
                offsets: begin..end,
            },
        );
    }
    Ok(out)
}

/// Parses a whole safetensors file held in memory; the error is the reason, without the path.
pub fn parse(bytes: &[u8]) -> Result<SafetensorsFile, String> {
    let header = parse_header(bytes, bytes.len() as u64)?;
    // `parse_header` checked every tensor against the data section.
    let data = &bytes[header.data_start as usize..];
    let tensors = header
        .tensors
        .into_iter()
        .map(|(name, e)| {
            let bytes = data[e.offsets].to_vec();
            let t = RawTensor {
                dtype: e.dtype,
                shape: e.shape,
                bytes,
            };
            (name, t)
        })
        .collect();
    Ok(SafetensorsFile {
        tensors,
        metadata: header.metadata,
    })
}

/// Opens a safetensors file and reads its header only (no tensor data), checking that the file
/// holds every tensor's bytes. Returns the open file with the header.
pub fn read_header(path: &Path) -> Result<(File, Header), Error> {
    let read_err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let file_len = file.metadata().map_err(read_err)?.len();
    let parse_err = |reason| Error::Safetensors {
        path: path.to_path_buf(),
        reason,
    };
    let mut front = Vec::new();
    (&mut file)
        .take(8)
        .read_to_end(&mut front)
        .map_err(read_err)?;
    let end = header_end(&front, file_len).map_err(parse_err)?;
    // Never more than the file holds, so a bogus length allocates nothing.
    (&mut file)
        .take(end.min(file_len).saturating_sub(front.len() as u64))
        .read_to_end(&mut front)
        .map_err(read_err)?;
    let header = parse_header(&front, file_len).map_err(parse_err)?;
    Ok((file, header))
}

/// Reads and parses a safetensors file.
pub fn read(path: &Path) -> Result<SafetensorsFile, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&bytes).map_err(|reason| Error::Safetensors {
        path: path.to_path_buf(),
        reason,
    })
}

/// Reads model weights: every float tensor converted to f32 (F32, F16, BF16), PyTorch's
/// `*.num_batches_tracked` counters skipped; any other dtype is an error naming the tensor.
pub fn load_weights(path: &Path) -> Result<(Weights, Metadata), Error> {
    let file = read(path)?;
    Ok((weights_from_raw(path, file.tensors)?, file.metadata))
}

/// Converts raw tensors (of `path`, for errors) to model weights as [`load_weights`] does.
pub fn weights_from_raw(
    path: &Path,
    tensors: BTreeMap<String, RawTensor>,
) -> Result<Weights, Error> {
    let mut weights = Weights::new();
    for (name, raw) in tensors {
        if name.ends_with(".num_batches_tracked") {
            continue;
        }
        let data = match raw.dtype {
            Dtype::F32 | Dtype::F16 | Dtype::BF16 => raw.float_to_f32(),
            _ => None,
        };
        let Some(data) = data else {
            return Err(Error::Dtype {
                path: path.to_path_buf(),
                tensor: name,
                dtype: raw.dtype.to_string(),
                expected: "F32, F16 or BF16",
            });
        };
        let t = Tensor::new(raw.shape, data).map_err(|source| Error::SafetensorsTensor {
            path: path.to_path_buf(),
            tensor: name.clone(),
            source,
        })?;
        weights.insert(name, t);
    }
    Ok(weights)
}

/// Serialises f32 tensors (as F32) and metadata strings to safetensors bytes.
pub fn to_bytes(weights: &Weights, metadata: &Metadata) -> Vec<u8> {
    let raw: BTreeMap<String, RawTensor> = weights
        .iter()
        .map(|(name, t)| {
            let bytes = t.data().iter().flat_map(|v| v.to_le_bytes()).collect();
            let raw = RawTensor {
                dtype: Dtype::F32,
                shape: t.shape().to_vec(),
                bytes,
            };
            (name.clone(), raw)
        })
        .collect();
    raw_to_bytes(&raw, metadata)
}

/// Writes f32 tensors and metadata strings as a safetensors file. The bytes go to a temporary
/// file beside `path` that is renamed over it once complete, so an error never leaves a
/// partial file behind.
pub fn save_weights(path: &Path, weights: &Weights, metadata: &Metadata) -> Result<(), Error> {
    super::atomic::write_atomically(path, &to_bytes(weights, metadata))
}

/// Serialises raw tensors (any dtype) and metadata, e.g. to write test data.
pub fn raw_to_bytes(tensors: &BTreeMap<String, RawTensor>, metadata: &Metadata) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let m: serde_json::Map<String, serde_json::Value> = metadata
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        header.insert("__metadata__".to_string(), serde_json::Value::Object(m));
    }
    let mut offset = 0usize;
    for (name, t) in tensors {
        let end = offset + t.bytes.len();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": t.dtype.name(), "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut h = serde_json::Value::Object(header).to_string().into_bytes();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + offset);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    for t in tensors.values() {
        out.extend_from_slice(&t.bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_conversions_are_exact_on_edge_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14));
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc040), -3.0);
    }

    #[test]
    fn round_trip_keeps_tensors_and_metadata() {
        let mut w = Weights::new();
        w.insert(
            "a.weight".into(),
            Tensor::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap(),
        );
        w.insert("b".into(), Tensor::new(vec![1], vec![-0.5]).unwrap());
        let mut m = Metadata::new();
        m.insert("arch".into(), "mlp".into());
        let f = parse(&to_bytes(&w, &m)).unwrap();
        assert_eq!(f.metadata, m);
        assert_eq!(
            f.tensors["a.weight"].float_to_f32().unwrap(),
            vec![1., 2., 3., 4., 5., 6.]
        );
        assert_eq!(f.tensors["b"].shape, vec![1]);
    }
}
