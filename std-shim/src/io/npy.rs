//! `.npy` reader (NumPy format versions 1, 2 and 3): little-endian or byte-sized dtypes
//! (`u1`, `i1`, `i2`, `i4`, `i8`, `f2`, `f4`, `f8`), C order. The array comes back as a
//! [`RawTensor`] with the safetensors dtype of the same meaning.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::safetensors::{Dtype, RawTensor};
use crate::error::Error;

fn dtype_of(descr: &str) -> Result<Dtype, String> {
    // Split after the first character (a byte-order mark in valid files), not the first byte:
    // the header is arbitrary text.
    let first = descr.char_indices().nth(1).map_or(descr.len(), |(i, _)| i);
    let (order, code) = descr.split_at(first);
    if code.len() >= 2 && code.ends_with('1') {
        // Byte-sized: any order mark.
    } else if order != "<" {
        return Err(format!(
            "dtype `{descr}` is not little-endian (only `<` and byte-sized dtypes are read)"
        ));
    }
    Ok(match code {
        "u1" => Dtype::U8,
        "i1" => Dtype::I8,
        "i2" => Dtype::I16,
        "i4" => Dtype::I32,
        "i8" => Dtype::I64,
        "f2" => Dtype::F16,
        "f4" => Dtype::F32,
        "f8" => Dtype::F64,
        _ => return Err(format!("dtype `{descr}` is not supported")),
    })
}

/// The value of `'key': <value>` in the header dict, up to the next top-level `,` or `}`.
fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat1 = format!("'{key}'");
    let pat2 = format!("\"{key}\"");
    let start = header
        .find(&pat1)
        .map(|i| i + pat1.len())
        .or_else(|| header.find(&pat2).map(|i| i + pat2.len()))?;
    let rest = header[start..].trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0i32;
    for (i, ch) in rest.char_indices() {
        match ch {
            '(' | '[' => depth += 1,
            ')' | ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&rest[..=i]);
                }
            }
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

/// What the header of a `.npy` file says: the array's dtype and shape and where its bytes lie.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Element type (the safetensors dtype of the same meaning).
    pub dtype: Dtype,
    /// Shape (C order).
    pub shape: Vec<usize>,
    /// Byte offset of the array data in the file (the end of the header).
    pub data_start: u64,
    /// Bytes of array data (elements times element size).
    pub data_len: u64,
}

/// Header length and where the header text starts, from the first bytes of a file (`front`
/// holds at least its first 12 bytes, or the whole file if it is shorter).
fn preamble(front: &[u8]) -> Result<(usize, usize), String> {
    if front.len() < 10 || &front[..6] != b"\x93NUMPY" {
        return Err("missing the \\x93NUMPY magic".to_string());
    }
    match front[6] {
        1 => Ok((u16::from_le_bytes([front[8], front[9]]) as usize, 10)),
        2 | 3 => {
            let Some(b) = front.get(8..12) else {
                return Err("truncated header".to_string());
            };
            Ok((
                u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize,
                12,
            ))
        }
        v => Err(format!("format version {v} is not supported")),
    }
}

/// Parses the header of a `.npy` file of `file_len` bytes from `front`, its first bytes (at
/// least up to the end of the header, or the whole file if it is shorter; the data may be
/// absent). Checks that the file holds exactly the data the shape needs (a truncated file and
/// trailing bytes are errors). The error is the reason, without the path.
pub fn parse_header(front: &[u8], file_len: u64) -> Result<Header, String> {
    let (hlen, start) = preamble(front)?;
    let end = start.checked_add(hlen);
    let Some(header) = end
        .and_then(|end| front.get(start..end))
        .filter(|_| (start + hlen) as u64 <= file_len)
    else {
        return Err(format!("truncated: the header needs {hlen} bytes"));
    };
    let header = std::str::from_utf8(header).map_err(|_| "header is not text".to_string())?;
    let descr = field(header, "descr").ok_or("header has no `descr`")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let dtype = dtype_of(descr)?;
    let fortran = field(header, "fortran_order").ok_or("header has no `fortran_order`")?;
    if fortran != "False" {
        return Err("Fortran-order arrays are not supported (save with C order)".to_string());
    }
    let shape_s = field(header, "shape").ok_or("header has no `shape`")?;
    let inner = shape_s
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("shape `{shape_s}` is not a tuple"))?;
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("shape `{shape_s}` holds a non-integer"))?;
    let size = dtype.size().expect("known dtype");
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("shape overflows")?;
    let need = numel.checked_mul(size).ok_or("shape overflows")? as u64;
    let data_start = (start + hlen) as u64;
    let have = file_len - data_start;
    if have < need {
        return Err(format!(
            "truncated: shape {shape:?} of {dtype} needs {need} data bytes, the file has {have}"
        ));
    }
    if have > need {
        return Err(format!(
            "{} trailing bytes after the {need} data bytes of shape {shape:?}",
            have - need
        ));
    }
    Ok(Header {
        dtype,
        shape,
        data_start,
        data_len: need,
    })
}

/// Parses a whole `.npy` file held in memory; the error is the reason, without the path.
pub fn parse(bytes: &[u8]) -> Result<RawTensor, String> {
    let h = parse_header(bytes, bytes.len() as u64)?;
    // `parse_header` checked that the data runs exactly to the end of `bytes`.
    Ok(RawTensor {
        dtype: h.dtype,
        shape: h.shape,
        bytes: bytes[h.data_start as usize..].to_vec(),
    })
}

/// Opens a `.npy` file and reads its header only (no array data), checking that the file holds
/// exactly the data the shape needs. Returns the open file with the header.
pub fn read_header(path: &Path) -> Result<(File, Header), Error> {
    let read_err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let parse_err = |reason| Error::Npy {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let file_len = file.metadata().map_err(read_err)?.len();
    let mut front = Vec::new();
    (&mut file)
        .take(12)
        .read_to_end(&mut front)
        .map_err(read_err)?;
    let (hlen, start) = preamble(&front).map_err(parse_err)?;
    // Never more than the file holds, so a bogus length allocates nothing.
    let end = (start as u64 + hlen as u64).min(file_len);
    (&mut file)
        .take(end.saturating_sub(front.len() as u64))
        .read_to_end(&mut front)
        .map_err(read_err)?;
    let header = parse_header(&front, file_len).map_err(parse_err)?;
    Ok((file, header))
}

/// Reads a `.npy` file.
pub fn read(path: &Path) -> Result<RawTensor, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&bytes).map_err(|reason| Error::Npy {
        path: path.to_path_buf(),
        reason,
    })
}

/// Serialises a tensor as a version-1 `.npy` file (used by tests and scripts).
pub fn to_bytes(t: &RawTensor) -> Vec<u8> {
    let descr = match t.dtype {
        Dtype::U8 => "|u1",
        Dtype::I8 => "|i1",
        Dtype::I16 => "<i2",
        Dtype::I32 => "<i4",
        Dtype::I64 => "<i8",
        Dtype::F16 => "<f2",
        Dtype::F32 => "<f4",
        Dtype::F64 => "<f8",
        Dtype::BF16 | Dtype::Other(_) => "|V0",
    };
    let shape = match t.shape.len() {
        1 => format!("({},)", t.shape[0]),
        _ => format!(
            "({})",
            t.shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&t.bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_u8_and_f32() {
        for t in [
            RawTensor {
                dtype: Dtype::U8,
                shape: vec![2, 3],
                bytes: vec![1, 2, 3, 4, 5, 6],
            },
            RawTensor {
                dtype: Dtype::F32,
                shape: vec![2],
                bytes: [1.5f32, -2.0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            },
        ] {
            assert_eq!(parse(&to_bytes(&t)).unwrap(), t);
        }
    }

    #[test]
    fn truncated_and_big_endian_are_rejected() {
        let t = RawTensor {
            dtype: Dtype::F32,
            shape: vec![4],
            bytes: vec![0; 16],
        };
        let b = to_bytes(&t);
        assert!(parse(&b[..b.len() - 1]).unwrap_err().contains("truncated"));
        let mut big = b.clone();
        let at = big.windows(3).position(|w| w == b"<f4").unwrap();
        big[at] = b'>';
        assert!(parse(&big).unwrap_err().contains("little-endian"));
        // A multi-byte character where the byte-order mark belongs (found by fuzzing: the
        // split used to cut inside the character and panic).
        let mut odd = b.clone();
        let at = odd.windows(3).position(|w| w == b"<f4").unwrap();
        odd.splice(at..at + 3, "\u{648}f4".bytes());
        assert!(parse(&odd).is_err());
    }
}
