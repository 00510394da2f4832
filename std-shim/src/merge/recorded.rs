//! A's and B's layer outputs recorded by the matching pass for the least-squares passes.
//!
//! Every least-squares pass of the sequential fit reads, for each layer it fits, that layer's
//! output in A and in B (its targets), and A and B reach it by running forward again. The
//! matching pass has computed those very activations already: both models, every node, every
//! sample, in the same shards and chunks as the least-squares passes. Where the memory budget
//! can hold them, the matching pass keeps them, and the least-squares passes read them instead
//! of running A and B a second time (two of the five model-sized forward passes of a merge).
//! The values are the matching pass's own, so the merge is bit-identical to one that
//! recomputes them; only the time and the memory differ.
//!
//! Recording is chosen before matching, all or nothing: when the sequential fit follows an
//! activation matching and the recorded outputs of this process's shards take at most half of
//! the memory budget (they count against it; the rest stays for the merged network's live
//! activations). Beyond that nothing is recorded and the passes compute A and B as before.
//!
//! Each shard records into one buffer of its own (every recorded node of A, then of B, each
//! node's samples consecutive), made when its first chunk arrives and counted against the
//! budget: one allocation per shard instead of one per node and chunk, its pages made in one
//! call (gigabytes of recorded outputs would otherwise cost a page fault per 4 KiB). The
//! least-squares passes copy a chunk's outputs out of it into the thread's spare buffers.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pleas_core::graph::{Graph, NodeId};

use super::settings::{FitMode, MatchingMode, MergeSettings};
use super::store::{Net, SpillSpace};
use crate::error::Error;

/// The recorded outputs: which nodes, where each sits in a shard's buffer, and the buffers.
pub struct RecordedTargets {
    /// Recorded nodes, increasing, with their values per sample.
    nodes: Vec<(NodeId, usize)>,
    /// Values per sample of every recorded node together (one network).
    per_sample: usize,
    /// Each shard's samples.
    ranges: Vec<Range<usize>>,
    /// Each shard's buffer (empty until its first chunk is recorded).
    shards: Vec<Mutex<Vec<f32>>>,
    /// The budget the buffers count against (and the least-squares passes' stores share).
    space: Arc<SpillSpace>,
    /// Bytes of the buffers made so far (counted against the budget).
    reserved: AtomicUsize,
}

impl RecordedTargets {
    /// Whether `node` is recorded.
    pub fn contains(&self, node: NodeId) -> bool {
        self.slot(node).is_some()
    }

    /// The recorded nodes, increasing.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.iter().map(|&(k, _)| k)
    }

    /// The shards' sample ranges.
    pub fn shard_ranges(&self) -> &[Range<usize>] {
        &self.ranges
    }

    /// The memory budget's space the buffers count against.
    pub fn space(&self) -> &Arc<SpillSpace> {
        &self.space
    }

    /// Node `node`'s position among the recorded ones, and the values per sample before it.
    fn slot(&self, node: NodeId) -> Option<(usize, usize)> {
        let i = self.nodes.binary_search_by_key(&node, |&(k, _)| k).ok()?;
        let before = self.nodes[..i].iter().map(|&(_, len)| len).sum();
        Some((i, before))
    }

    /// Where `count` samples of `node` in `net`, from sample `start` of shard `s`, sit in the
    /// shard's buffer.
    fn span(&self, s: usize, net: Net, node: NodeId, start: usize, count: usize) -> Range<usize> {
        let (i, before) = self.slot(node).expect("a recorded node");
        let len = self.nodes[i].1;
        let range = &self.ranges[s];
        let n = range.len();
        let side = match net {
            Net::A => 0,
            Net::B | Net::M => self.per_sample * n,
        };
        let at = side + before * n + (start - range.start) * len;
        at..at + count * len
    }

    /// Records `count` samples from sample `start` (a chunk of shard `s`) of A's and B's
    /// activations `a` and `b` of `node`, if `node` is recorded.
    pub fn record(
        &self,
        s: usize,
        node: NodeId,
        start: usize,
        count: usize,
        a: &[f32],
        b: &[f32],
    ) -> Result<(), Error> {
        if !self.contains(node) {
            return Ok(());
        }
        let mut buf = self.shards[s].lock().expect("recorded shard lock");
        if buf.is_empty() {
            let len = 2 * self.per_sample * self.ranges[s].len();
            *buf = huge_zeroed(len);
            self.space.repool(0, len * 4);
            self.reserved.fetch_add(len * 4, Ordering::Relaxed);
        }
        for (net, values) in [(Net::A, a), (Net::B, b)] {
            let span = self.span(s, net, node, start, count);
            if values.len() != span.len() {
                return Err(Error::Merge {
                    stage: "matching statistics",
                    reason: format!(
                        "node {node}: {} values recorded for {count} samples of {}",
                        values.len(),
                        span.len() / count.max(1)
                    ),
                });
            }
            buf[span].copy_from_slice(values);
        }
        Ok(())
    }

    /// Copies `count` samples from sample `start` of shard `s` of `net`'s `node` into `out`
    /// (resized); `false` if that shard recorded nothing.
    pub fn read(
        &self,
        s: usize,
        net: Net,
        node: NodeId,
        start: usize,
        count: usize,
        out: &mut Vec<f32>,
    ) -> bool {
        let buf = self.shards[s].lock().expect("recorded shard lock");
        if buf.is_empty() {
            return false;
        }
        out.clear();
        out.extend_from_slice(&buf[self.span(s, net, node, start, count)]);
        true
    }
}

impl Drop for RecordedTargets {
    fn drop(&mut self) {
        self.space.repool(self.reserved.load(Ordering::Relaxed), 0);
    }
}

/// `len` zeros, their pages made at once (on Linux: `calloc`'s untouched pages populated by
/// one `MADV_POPULATE_WRITE` call rather than one page fault per page on first write).
fn huge_zeroed(len: usize) -> Vec<f32> {
    let buf = vec![0.0f32; len];
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    populate(&buf);
    buf
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn populate(buf: &[f32]) {
    const PAGE: usize = 4096;
    let (start, end) = (
        buf.as_ptr() as usize,
        buf.as_ptr() as usize + size_of_val(buf),
    );
    let (lo, hi) = (start.next_multiple_of(PAGE), end / PAGE * PAGE);
    if hi > lo {
        // SAFETY: `[lo, hi)` lies inside `buf`'s allocation, which is readable and writable;
        // MADV_POPULATE_WRITE faults its pages in (zero pages stay zero) and changes no
        // contents. A failure (an older kernel) is harmless: the pages fault in on first write.
        unsafe {
            libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_POPULATE_WRITE);
        }
    }
}

/// The recording for a merge of `graph` whose fitted layers are `layer_nodes`, over the
/// shards `ranges` of which this process computes about one in `ranks`: `None` where the
/// settings do not read A and B this way or where half of the memory budget cannot hold them.
pub fn plan(
    graph: &Graph,
    layer_nodes: impl IntoIterator<Item = NodeId>,
    settings: &MergeSettings,
    ranges: Vec<Range<usize>>,
    ranks: usize,
) -> Option<RecordedTargets> {
    if settings.fit != FitMode::Sequential || settings.matching != MatchingMode::Activation {
        return None;
    }
    let mut nodes: Vec<(NodeId, usize)> = layer_nodes
        .into_iter()
        .map(|k| (k, graph.node(k).shape.len()))
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    let per_sample: usize = nodes.iter().map(|&(_, len)| len).sum();
    let samples: usize = ranges.iter().map(|r| r.len()).sum();
    let mine = samples.div_ceil(ranks.max(1));
    let bytes = per_sample.checked_mul(2 * 4)?.checked_mul(mine)?;
    if nodes.is_empty() || bytes > settings.memory_budget / 2 {
        return None;
    }
    let space = SpillSpace::new(settings.memory_budget, settings.spill_dir.clone());
    let shards = ranges.iter().map(|_| Mutex::new(Vec::new())).collect();
    Some(RecordedTargets {
        nodes,
        per_sample,
        ranges,
        shards,
        space,
        reserved: AtomicUsize::new(0),
    })
}
