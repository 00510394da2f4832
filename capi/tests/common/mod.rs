//! What the C API's test binaries share: reading the fixtures' safetensors files.

use std::collections::HashMap;
use std::path::PathBuf;

/// The tensors of a safetensors file (F32 as f32, U8 as bytes), by name.
pub struct Tensors {
    /// F32 tensors.
    pub f32: HashMap<String, Vec<f32>>,
    /// U8 tensors.
    pub u8: HashMap<String, Vec<u8>>,
}

/// Reads a safetensors file.
pub fn read_safetensors(path: &PathBuf) -> Tensors {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut t = Tensors {
        f32: HashMap::new(),
        u8: HashMap::new(),
    };
    for (name, info) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        let off = &info["data_offsets"];
        let (a, b) = (
            off[0].as_u64().unwrap() as usize,
            off[1].as_u64().unwrap() as usize,
        );
        match info["dtype"].as_str().unwrap() {
            "F32" => {
                let v = data[a..b]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                t.f32.insert(name.clone(), v);
            }
            "U8" => {
                t.u8.insert(name.clone(), data[a..b].to_vec());
            }
            _ => {}
        }
    }
    t
}

/// tests/fixtures/fashion of the repository.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/fashion")
}

/// The bits of each value, to compare results bit for bit with readable failures.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `v / 255 * 2 - 1` in f32, as the host normalises the fixtures' images.
pub fn symmetric_table() -> [f32; 256] {
    std::array::from_fn(|v| v as f32 / 255.0 * 2.0 - 1.0)
}
