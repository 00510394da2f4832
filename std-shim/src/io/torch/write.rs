//! Writes a state_dict as `torch.save` does: a zip archive of one folder (`archive/`) holding
//! `data.pkl` (pickle protocol 2: an `OrderedDict` of `torch._utils._rebuild_tensor_v2` calls
//! whose storages are persistent ids), one stored record `data/<i>` per tensor (64-byte
//! aligned, as PyTorch aligns them), `byteorder` and `version`. The pickle names only globals
//! `torch.load(weights_only=True)` accepts, and [`super::checkpoint::parse`] reads it back.

use std::io::{Cursor, Write};
use std::path::Path;

use ::zip::ZipWriter;
use ::zip::write::SimpleFileOptions;

use crate::error::Error;
use crate::io::safetensors::{Dtype, RawTensor};

/// The folder inside the archive.
const PREFIX: &str = "archive";

fn op_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn op_int(out: &mut Vec<u8>, v: u64) {
    match i32::try_from(v) {
        Ok(v) => {
            out.push(b'J');
            out.extend_from_slice(&v.to_le_bytes());
        }
        Err(_) => {
            // LONG1 with 8 bytes, plus a zero byte to keep it non-negative.
            out.extend_from_slice(&[0x8a, 9]);
            out.extend_from_slice(&v.to_le_bytes());
            out.push(0);
        }
    }
}

fn op_global(out: &mut Vec<u8>, module: &str, name: &str) {
    out.push(b'c');
    out.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
}

fn op_int_tuple(out: &mut Vec<u8>, v: &[usize]) {
    out.push(b'(');
    for &d in v {
        op_int(out, d as u64);
    }
    out.push(b't');
}

/// The storage class of a dtype the writer supports.
fn storage_class(dtype: &Dtype) -> Option<&'static str> {
    match dtype {
        Dtype::F32 => Some("FloatStorage"),
        Dtype::I64 => Some("LongStorage"),
        _ => None,
    }
}

/// `_rebuild_tensor_v2(storage, 0, shape, contiguous strides, False, OrderedDict())`.
fn op_tensor(out: &mut Vec<u8>, key: usize, t: &RawTensor, class: &str) {
    op_global(out, "torch._utils", "_rebuild_tensor_v2");
    out.push(b'(');
    out.push(b'(');
    op_str(out, "storage");
    op_global(out, "torch", class);
    op_str(out, &key.to_string());
    op_str(out, "cpu");
    op_int(out, t.numel() as u64);
    out.extend_from_slice(b"tQ");
    op_int(out, 0);
    op_int_tuple(out, &t.shape);
    let mut strides = vec![0usize; t.shape.len()];
    let mut s = 1usize;
    for (st, &d) in strides.iter_mut().zip(&t.shape).rev() {
        *st = s;
        s *= d;
    }
    op_int_tuple(out, &strides);
    out.push(0x89);
    op_global(out, "collections", "OrderedDict");
    out.extend_from_slice(b")Rt");
    out.push(b'R');
}

/// The pickle of an `OrderedDict` of `tensors`, in order, tensor `i` in storage `i`.
pub fn state_dict_pickle(tensors: &[(String, RawTensor)]) -> Result<Vec<u8>, String> {
    let mut out = vec![0x80, 2];
    op_global(&mut out, "collections", "OrderedDict");
    out.extend_from_slice(b")R(");
    for (i, (name, t)) in tensors.iter().enumerate() {
        let class = storage_class(&t.dtype)
            .ok_or_else(|| format!("tensor `{name}`: dtype {} cannot be written", t.dtype))?;
        op_str(&mut out, name);
        op_tensor(&mut out, i, t, class);
    }
    out.extend_from_slice(b"u.");
    Ok(out)
}

/// The bytes of a `torch.save` file holding `tensors` as a state_dict.
pub fn to_bytes(tensors: &[(String, RawTensor)]) -> Result<Vec<u8>, String> {
    let pickle = state_dict_pickle(tensors)?;
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let zip_err = |e: ::zip::result::ZipError| format!("zip: {e}");
    let io_err = |e: std::io::Error| format!("zip: {e}");
    let total: usize = tensors.iter().map(|(_, t)| t.bytes.len()).sum();
    let opts = SimpleFileOptions::default()
        .compression_method(::zip::CompressionMethod::Stored)
        .with_alignment(64)
        .large_file(total + pickle.len() > u32::MAX as usize / 2);
    let mut record = |name: String, bytes: &[u8]| -> Result<(), String> {
        zip.start_file(name, opts).map_err(zip_err)?;
        zip.write_all(bytes).map_err(io_err)
    };
    record(format!("{PREFIX}/data.pkl"), &pickle)?;
    record(format!("{PREFIX}/byteorder"), b"little")?;
    for (i, (_, t)) in tensors.iter().enumerate() {
        record(format!("{PREFIX}/data/{i}"), &t.bytes)?;
    }
    record(format!("{PREFIX}/version"), b"3\n")?;
    Ok(zip.finish().map_err(zip_err)?.into_inner())
}

/// Writes `tensors` as a `torch.save` state_dict file at `path`, atomically: the bytes go to a
/// temporary name beside it that is renamed once complete, so an error leaves nothing behind.
pub fn save(path: &Path, tensors: &[(String, RawTensor)]) -> Result<(), Error> {
    let bytes = to_bytes(tensors).map_err(|reason| Error::Export {
        path: path.to_path_buf(),
        format: "torch",
        source: crate::export::ExportError::Torch { reason },
    })?;
    crate::io::atomic::write_atomically(path, &bytes)
}
