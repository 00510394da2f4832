//! `.npy` reader (NumPy format versions 1, 2 and 3): little-endian or byte-sized dtypes
//! (`u1`, `i1`, `i2`, `i4`, `i8`, `f2`, `f4`, `f8`), C order. The array comes back as a
//! [`RawTensor`] with the safetensors dtype of the same meaning.

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

/// Parses a whole `.npy` file held in memory; the error is the reason, without the path.
pub fn parse(bytes: &[u8]) -> Result<RawTensor, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("missing the \\x93NUMPY magic".to_string());
    }
    let major = bytes[6];
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            let Some(b) = bytes.get(8..12) else {
                return Err("truncated header".to_string());
            };
            (
                u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize,
                12,
            )
        }
        v => return Err(format!("format version {v} is not supported")),
    };
    let Some(header) = bytes.get(start..start + hlen) else {
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
    let need = numel.checked_mul(size).ok_or("shape overflows")?;
    let data = &bytes[start + hlen..];
    if data.len() < need {
        return Err(format!(
            "truncated: shape {shape:?} of {dtype} needs {need} data bytes, the file has {}",
            data.len()
        ));
    }
    if data.len() > need {
        return Err(format!(
            "{} trailing bytes after the {need} data bytes of shape {shape:?}",
            data.len() - need
        ));
    }
    Ok(RawTensor {
        dtype,
        shape,
        bytes: data.to_vec(),
    })
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
