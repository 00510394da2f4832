//! A's and B's layer outputs recorded by the matching pass for the least-squares passes.
//!
//! Every least-squares pass of the sequential fit reads, for each layer it fits, that layer's
//! output in A and in B (its targets), and A and B reach it by running forward again. The
//! matching pass has computed those very activations already: both models, every node, every
//! sample, in the same shards and chunks as the least-squares passes. Where the memory budget
//! can hold them, the matching pass keeps them in the shards' activation stores, and the
//! least-squares passes read them there instead of running A and B a second time (two of the
//! five model-sized forward passes of a merge). The values are the matching pass's own, so the
//! merge is bit-identical to one that recomputes them; only the time and the memory differ.
//!
//! Recording is chosen before matching, all or nothing: when the sequential fit follows an
//! activation matching and the recorded outputs of this process's shards take at most half of
//! the memory budget (the other half stays for the merged network's live activations). Beyond
//! that nothing is recorded and the passes compute A and B as before, in bounded memory.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use pleas_core::graph::{Graph, NodeId};

use super::settings::{FitMode, MatchingMode, MergeSettings};
use super::store::{ActivationStore, Net, SpillSpace};
use crate::error::Error;

/// The recorded outputs: which nodes, and per shard, their chunks in A and B.
pub struct RecordedTargets {
    nodes: BTreeSet<NodeId>,
    space: Arc<SpillSpace>,
    shards: Vec<Mutex<ActivationStore>>,
}

impl RecordedTargets {
    /// Records `nodes` over `shards` shards, in stores sharing `space`.
    pub fn new(nodes: BTreeSet<NodeId>, space: Arc<SpillSpace>, shards: usize) -> Self {
        let shards = (0..shards)
            .map(|_| Mutex::new(ActivationStore::new(space.clone())))
            .collect();
        Self {
            nodes,
            space,
            shards,
        }
    }

    /// The recorded nodes (of the graph A and B share).
    pub fn nodes(&self) -> &BTreeSet<NodeId> {
        &self.nodes
    }

    /// Stores chunk `chunk` of A's and B's activations of `node` in shard `store` (copies: the
    /// matching pass goes on with its own buffers) when `node` is recorded.
    pub fn record(
        &self,
        store: &mut ActivationStore,
        node: NodeId,
        chunk: usize,
        a: &[f32],
        b: &[f32],
    ) -> Result<(), Error> {
        if self.nodes.contains(&node) {
            store.put(Net::A, node, chunk, a.to_vec())?;
            store.put(Net::B, node, chunk, b.to_vec())?;
        }
        Ok(())
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Shard `s`'s store.
    pub fn shard(&self, s: usize) -> MutexGuard<'_, ActivationStore> {
        self.shards[s].lock().expect("recorded shard lock")
    }

    /// The shared space and the shards' stores, for the least-squares passes to go on with.
    pub fn into_stores(self) -> (Arc<SpillSpace>, Vec<ActivationStore>) {
        let stores = self
            .shards
            .into_iter()
            .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
            .collect();
        (self.space, stores)
    }
}

/// The recording for a merge of `samples` samples of `graph` whose fitted layers are
/// `layer_nodes`, cut into `shards` shards of which this process computes about one in
/// `ranks`: `None` where the settings do not read A and B this way or where half of the memory
/// budget cannot hold them.
pub fn plan(
    graph: &Graph,
    layer_nodes: impl IntoIterator<Item = NodeId>,
    settings: &MergeSettings,
    samples: usize,
    shards: usize,
    ranks: usize,
) -> Option<RecordedTargets> {
    if settings.fit != FitMode::Sequential || settings.matching != MatchingMode::Activation {
        return None;
    }
    let nodes: BTreeSet<NodeId> = layer_nodes.into_iter().collect();
    let per_sample: usize = nodes.iter().map(|&k| graph.node(k).shape.len()).sum();
    let mine = samples.div_ceil(ranks.max(1));
    let bytes = per_sample.checked_mul(2 * 4)?.checked_mul(mine)?;
    if nodes.is_empty() || bytes > settings.memory_budget / 2 {
        return None;
    }
    let space = SpillSpace::new(settings.memory_budget, settings.spill_dir.clone());
    Some(RecordedTargets::new(nodes, space, shards))
}
