//! Per-shard storage of activations that stay live between data passes (the sequential fit
//! and batch-norm re-estimation run one pass per layer, and every pass starts from the live
//! activations the previous one left).
//!
//! Chunks are kept in memory while the bytes held by all shards together stay within a budget;
//! beyond it they go to one spill file shared by every shard ([`SpillSpace`]), in extents that
//! are handed back when a node is released, so memory does not grow with the amount of merge
//! data and the file only holds what is live. The spill file is unnamed (`O_TMPFILE`, or
//! created and unlinked at once where that is not available): no path ever names it, so
//! however the process ends, SIGKILL included, the system reclaims its space and nothing is
//! left in the temporary folder.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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

/// Free byte ranges of the spill file (first fit, neighbours coalesced) and its end.
#[derive(Default)]
struct Extents {
    free: BTreeMap<u64, u64>,
    end: u64,
}

impl Extents {
    fn alloc(&mut self, len: u64) -> u64 {
        if let Some((&off, &have)) = self.free.iter().find(|(_, l)| **l >= len) {
            self.free.remove(&off);
            if have > len {
                self.free.insert(off + len, have - len);
            }
            return off;
        }
        let off = self.end;
        self.end += len;
        off
    }

    /// Returns `[off, off + len)`; returns the new end when the file's tail became free.
    fn release(&mut self, mut off: u64, mut len: u64) -> Option<u64> {
        if let Some((&p, &pl)) = self.free.range(..off).next_back()
            && p + pl == off
        {
            self.free.remove(&p);
            off = p;
            len += pl;
        }
        if let Some(nl) = self.free.remove(&(off + len)) {
            len += nl;
        }
        if off + len == self.end {
            self.end = off;
            return Some(off);
        }
        self.free.insert(off, len);
        None
    }
}

/// What every shard's store shares: the in-memory byte budget and the spill file.
pub struct SpillSpace {
    budget: usize,
    in_memory: AtomicUsize,
    /// Bytes of the worker threads' reusable buffers: they count against the budget first.
    pooled: AtomicUsize,
    dir: PathBuf,
    file: OnceLock<File>,
    extents: Mutex<Extents>,
}

impl SpillSpace {
    /// Up to `budget_bytes` of activations in memory over all shards, the rest in an unnamed
    /// file in `dir` (created on first use).
    pub fn new(budget_bytes: usize, dir: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            budget: budget_bytes,
            in_memory: AtomicUsize::new(0),
            pooled: AtomicUsize::new(0),
            dir,
            file: OnceLock::new(),
            extents: Mutex::new(Extents::default()),
        })
    }

    /// Bytes held in memory over all shards.
    pub fn memory_bytes(&self) -> usize {
        self.in_memory.load(Ordering::Relaxed)
    }

    /// Records that a worker thread's reusable buffers went from `old` to `new` bytes: they
    /// count against the budget before stored activations (a thread needs them for every
    /// chunk, so the store gets what they leave).
    pub fn repool(&self, old: usize, new: usize) {
        if new >= old {
            self.pooled.fetch_add(new - old, Ordering::Relaxed);
        } else {
            self.pooled.fetch_sub(old - new, Ordering::Relaxed);
        }
    }

    /// Bytes of the spill file in use (its length).
    pub fn spilled_bytes(&self) -> u64 {
        self.extents.lock().expect("extents lock").end
    }

    fn write_err(&self, source: std::io::Error) -> Error {
        Error::Write {
            path: self.dir.join("<unnamed spill file>"),
            source,
        }
    }

    fn file(&self) -> Result<&File, Error> {
        if let Some(f) = self.file.get() {
            return Ok(f);
        }
        let f = tempfile::tempfile_in(&self.dir).map_err(|e| self.write_err(e))?;
        // Another shard may have won the race; its file is kept and ours closed (unnamed: gone).
        Ok(self.file.get_or_init(|| f))
    }

    /// Reserves `bytes` of the memory budget, if they fit.
    fn reserve(&self, bytes: usize) -> bool {
        let before = self.in_memory.fetch_add(bytes, Ordering::Relaxed);
        if before + self.pooled.load(Ordering::Relaxed) + bytes <= self.budget {
            return true;
        }
        self.in_memory.fetch_sub(bytes, Ordering::Relaxed);
        false
    }

    fn unreserve(&self, bytes: usize) {
        self.in_memory.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn spill(&self, data: &[f32]) -> Result<u64, Error> {
        let file = self.file()?;
        let bytes = le_bytes(data);
        let off = self
            .extents
            .lock()
            .expect("extents lock")
            .alloc(bytes.len() as u64);
        file.write_all_at(&bytes, off)
            .map_err(|e| self.write_err(e))?;
        Ok(off)
    }

    /// Reads `len` values at `offset` into `out` (resized; its capacity is reused, and the
    /// values it already holds are overwritten rather than zeroed first).
    fn read(&self, offset: u64, len: usize, out: &mut Vec<f32>) -> Result<(), Error> {
        let file = self.file()?;
        out.truncate(len);
        out.resize(len, 0.0);
        let read_err = |source| Error::Read {
            path: self.dir.join("<unnamed spill file>"),
            source,
        };
        if cfg!(target_endian = "little") {
            // The file holds little-endian f32: read straight into the values.
            file.read_exact_at(bytemuck::cast_slice_mut(out.as_mut_slice()), offset)
                .map_err(read_err)?;
        } else {
            let mut bytes = vec![0u8; len * 4];
            file.read_exact_at(&mut bytes, offset).map_err(read_err)?;
            for (v, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Ok(())
    }

    fn free_disk(&self, offset: u64, len: usize) {
        let mut ext = self.extents.lock().expect("extents lock");
        if let Some(end) = ext.release(offset, len as u64 * 4)
            && let Some(f) = self.file.get()
        {
            // Give the tail's blocks back to the file system (best effort: a failure only
            // leaves the file longer than needed until it is closed).
            let _ = f.set_len(end);
        }
    }
}

/// The little-endian bytes of `data`: the values themselves where the machine is little-endian
/// (no copy), else a converted copy.
fn le_bytes(data: &[f32]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        std::borrow::Cow::Borrowed(bytemuck::cast_slice(data))
    } else {
        std::borrow::Cow::Owned(data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

/// Live activations of one shard, per (network, node), per chunk.
pub struct ActivationStore {
    entries: BTreeMap<(Net, usize), BTreeMap<usize, Slot>>,
    space: Arc<SpillSpace>,
}

impl ActivationStore {
    /// An empty store sharing `space` with the other shards.
    pub fn new(space: Arc<SpillSpace>) -> Self {
        Self {
            entries: BTreeMap::new(),
            space,
        }
    }

    /// Whether `(net, node)` is stored.
    pub fn contains(&self, net: Net, node: usize) -> bool {
        self.entries.contains_key(&(net, node))
    }

    /// Stores chunk `chunk` of `(net, node)`. A chunk already on disk is left there (the data
    /// of a node never changes once computed). Returns `data`'s buffer when the values went to
    /// (or already were on) disk, for the caller to reuse.
    pub fn put(
        &mut self,
        net: Net,
        node: usize,
        chunk: usize,
        data: Vec<f32>,
    ) -> Result<Option<Vec<f32>>, Error> {
        let entry = self.entries.entry((net, node)).or_default();
        match entry.remove(&chunk) {
            Some(Slot::Disk { offset, len }) => {
                entry.insert(chunk, Slot::Disk { offset, len });
                return Ok(Some(data));
            }
            Some(Slot::Memory(old)) => self.space.unreserve(old.len() * 4),
            None => {}
        }
        if self.space.reserve(data.len() * 4) {
            let mut data = data;
            // The budget counts values: a reused buffer much larger than its values gives the
            // excess back (one copy) rather than hold it unaccounted.
            if data.capacity() > data.len() + data.len() / 4 {
                data.shrink_to_fit();
            }
            entry.insert(chunk, Slot::Memory(data));
            return Ok(None);
        }
        let offset = self.space.spill(&data)?;
        entry.insert(
            chunk,
            Slot::Disk {
                offset,
                len: data.len(),
            },
        );
        Ok(Some(data))
    }

    /// Chunk `chunk` of `(net, node)`: moved out of memory (give it back with [`Self::put`]) or
    /// read from disk into a buffer from `spare` (a new one when `spare` is empty).
    pub fn take(
        &mut self,
        net: Net,
        node: usize,
        chunk: usize,
        spare: &mut Vec<Vec<f32>>,
    ) -> Result<Option<Vec<f32>>, Error> {
        let Some(entry) = self.entries.get_mut(&(net, node)) else {
            return Ok(None);
        };
        match entry.get(&chunk) {
            None => Ok(None),
            Some(Slot::Memory(_)) => match entry.remove(&chunk) {
                Some(Slot::Memory(v)) => {
                    self.space.unreserve(v.len() * 4);
                    Ok(Some(v))
                }
                _ => Ok(None),
            },
            Some(&Slot::Disk { offset, len }) => {
                let fits = spare
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.capacity() >= len)
                    .min_by_key(|(_, b)| b.capacity())
                    .map(|(i, _)| i);
                let mut out = fits.map(|i| spare.swap_remove(i)).unwrap_or_default();
                self.space.read(offset, len, &mut out)?;
                Ok(Some(out))
            }
        }
    }

    /// Forgets `(net, node)` (memory freed, disk extents handed back).
    pub fn release(&mut self, net: Net, node: usize) {
        if let Some(e) = self.entries.remove(&(net, node)) {
            self.free(e);
        }
    }

    fn free(&self, chunks: BTreeMap<usize, Slot>) {
        for s in chunks.into_values() {
            match s {
                Slot::Memory(v) => self.space.unreserve(v.len() * 4),
                Slot::Disk { offset, len } => self.space.free_disk(offset, len),
            }
        }
    }

    /// The stored `(net, node)` keys.
    pub fn keys(&self) -> Vec<(Net, usize)> {
        self.entries.keys().copied().collect()
    }
}

impl Drop for ActivationStore {
    fn drop(&mut self) {
        let entries = std::mem::take(&mut self.entries);
        for chunks in entries.into_values() {
            self.free(chunks);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_reuse_freed_ranges_and_shrink_the_tail() {
        let mut e = Extents::default();
        let a = e.alloc(10);
        let b = e.alloc(20);
        let c = e.alloc(5);
        assert_eq!((a, b, c, e.end), (0, 10, 30, 35));
        assert_eq!(e.release(a, 10), None);
        // First fit reuses the hole.
        assert_eq!(e.alloc(4), 0);
        assert_eq!(e.release(0, 4), None);
        // Freeing b coalesces with the hole before it; freeing c then frees the whole tail.
        assert_eq!(e.release(b, 20), None);
        assert_eq!(e.free.len(), 1);
        assert_eq!(e.release(c, 5), Some(0));
        assert!(e.free.is_empty());
        assert_eq!(e.end, 0);
    }

    #[test]
    fn spilled_chunks_read_back_and_leave_no_file() {
        let dir = std::env::temp_dir().join(format!("pleas-store-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let space = SpillSpace::new(16, dir.clone());
        let mut store = ActivationStore::new(space.clone());
        let data: Vec<f32> = (0..100).map(|i| i as f32 * 0.5).collect();
        assert_eq!(store.put(Net::A, 3, 0, vec![1.0, 2.0]).unwrap(), None);
        // Spilled: the buffer comes back for reuse.
        assert_eq!(
            store.put(Net::A, 3, 1, data.clone()).unwrap(),
            Some(data.clone())
        );
        assert_eq!(space.memory_bytes(), 8);
        assert_eq!(space.spilled_bytes(), 400);
        // Nothing in the folder names the spill file.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let mut spare = vec![vec![9.0; 3], vec![9.0; 200]];
        assert_eq!(store.take(Net::A, 3, 1, &mut spare).unwrap(), Some(data));
        assert_eq!(spare.len(), 1, "the read reused the spare buffer that fits");
        assert_eq!(spare[0].len(), 3);
        assert_eq!(
            store.take(Net::A, 3, 0, &mut spare).unwrap(),
            Some(vec![1.0, 2.0])
        );
        assert_eq!(space.memory_bytes(), 0);
        store.release(Net::A, 3);
        assert_eq!(space.spilled_bytes(), 0);
        std::fs::remove_dir(&dir).unwrap();
    }
}
