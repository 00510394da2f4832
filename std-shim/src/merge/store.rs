//! Per-shard storage of activations that stay live between data passes (the sequential fit
//! and batch-norm re-estimation run one pass per layer, and every pass starts from the live
//! activations the previous one left).
//!
//! Chunks are kept in memory up to a byte budget; beyond it they go to a temporary file per
//! stored node (removed when the node is released or the store dropped), so memory does not
//! grow with the amount of merge data.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::Error;

/// Which network an activation belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Net {
    /// Model A.
    A,
    /// Model B.
    B,
    /// The merged model.
    M,
}

enum Slot {
    Memory(Vec<f32>),
    Disk { offset: u64, len: usize },
}

struct Spill {
    path: PathBuf,
    file: File,
    end: u64,
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(Default)]
struct Entry {
    chunks: BTreeMap<usize, Slot>,
    spill: Option<Spill>,
}

static SPILL_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Live activations of one shard, per (network, node), per chunk.
pub struct ActivationStore {
    entries: BTreeMap<(Net, usize), Entry>,
    in_memory: usize,
    budget: usize,
    dir: PathBuf,
}

impl ActivationStore {
    /// An empty store keeping up to `budget_bytes` in memory, spilling into `dir`.
    pub fn new(budget_bytes: usize, dir: PathBuf) -> Self {
        Self {
            entries: BTreeMap::new(),
            in_memory: 0,
            budget: budget_bytes,
            dir,
        }
    }

    /// Whether `(net, node)` is stored.
    pub fn contains(&self, net: Net, node: usize) -> bool {
        self.entries.contains_key(&(net, node))
    }

    /// Bytes held in memory.
    pub fn memory_bytes(&self) -> usize {
        self.in_memory
    }

    fn io_err(path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Write {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Stores chunk `chunk` of `(net, node)`. A chunk already on disk is left there (the data
    /// of a node never changes once computed).
    pub fn put(
        &mut self,
        net: Net,
        node: usize,
        chunk: usize,
        data: Vec<f32>,
    ) -> Result<(), Error> {
        let bytes = data.len() * 4;
        let fits = self.in_memory + bytes <= self.budget;
        let dir = self.dir.clone();
        let entry = self.entries.entry((net, node)).or_default();
        if let Some(Slot::Disk { .. }) = entry.chunks.get(&chunk) {
            return Ok(());
        }
        if let Some(Slot::Memory(old)) = entry.chunks.remove(&chunk) {
            self.in_memory -= old.len() * 4;
        }
        if fits {
            self.in_memory += bytes;
            entry.chunks.insert(chunk, Slot::Memory(data));
            return Ok(());
        }
        if entry.spill.is_none() {
            let id = SPILL_COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("pleas-spill-{}-{id}.f32", std::process::id()));
            let file = File::options()
                .create_new(true)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| Self::io_err(&path, e))?;
            entry.spill = Some(Spill { path, file, end: 0 });
        }
        let spill = entry.spill.as_mut().expect("just created");
        let mut bytes_buf = Vec::with_capacity(bytes);
        for v in &data {
            bytes_buf.extend_from_slice(&v.to_le_bytes());
        }
        spill
            .file
            .seek(SeekFrom::Start(spill.end))
            .and_then(|_| spill.file.write_all(&bytes_buf))
            .map_err(|e| Self::io_err(&spill.path, e))?;
        entry.chunks.insert(
            chunk,
            Slot::Disk {
                offset: spill.end,
                len: data.len(),
            },
        );
        spill.end += bytes as u64;
        Ok(())
    }

    /// Chunk `chunk` of `(net, node)`: moved out of memory (give it back with [`Self::put`]) or
    /// read from disk.
    pub fn take(&mut self, net: Net, node: usize, chunk: usize) -> Result<Option<Vec<f32>>, Error> {
        let Some(entry) = self.entries.get_mut(&(net, node)) else {
            return Ok(None);
        };
        match entry.chunks.get(&chunk) {
            None => Ok(None),
            Some(Slot::Memory(_)) => match entry.chunks.remove(&chunk) {
                Some(Slot::Memory(v)) => {
                    self.in_memory -= v.len() * 4;
                    Ok(Some(v))
                }
                _ => Ok(None),
            },
            Some(&Slot::Disk { offset, len }) => {
                let spill = entry.spill.as_mut().expect("disk slot has a file");
                let mut bytes = vec![0u8; len * 4];
                spill
                    .file
                    .seek(SeekFrom::Start(offset))
                    .and_then(|_| spill.file.read_exact(&mut bytes))
                    .map_err(|source| Error::Read {
                        path: spill.path.clone(),
                        source,
                    })?;
                Ok(Some(
                    bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                ))
            }
        }
    }

    /// Forgets `(net, node)` (memory freed, spill file removed).
    pub fn release(&mut self, net: Net, node: usize) {
        if let Some(e) = self.entries.remove(&(net, node)) {
            for s in e.chunks.values() {
                if let Slot::Memory(v) = s {
                    self.in_memory -= v.len() * 4;
                }
            }
        }
    }

    /// The stored `(net, node)` keys.
    pub fn keys(&self) -> Vec<(Net, usize)> {
        self.entries.keys().copied().collect()
    }
}
