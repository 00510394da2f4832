//! Channel orders for a split export: a permutation of each channel group under which every
//! output block of every block-structured layer reads one contiguous range of its input.
//!
//! A *channel class* is a set of nodes whose output channel axis is one: batch-norm, ReLU,
//! pooling, residual adds and a flatten of a `1 x 1` map pass it through (the same rules as
//! permutation groups, but across block layers). Permuting a class's channels, consistently in
//! its producers' output rows, its batch-norms and its consumers' input columns, leaves the
//! network's function unchanged. Classes that touch the graph input, a graph output or a
//! flatten of a spatial map keep their order.
//!
//! Within a class the block boundaries (producers' output blocks, consumers' input ranges) cut
//! the channels into *atoms*; the order permutes whole atoms. A merged group `[m | A | B]`
//! whose blocks read `[m A B]`, `[m A]` and `[m B]` becomes `[A | m | B]`, where all three are
//! contiguous. The first atom order (lexicographically, identity first) under which every
//! consumer block's input is contiguous is taken; a class with more than [`MAX_ATOMS`] atoms,
//! or none such order, keeps its order (the writer then gathers a block's ranges with one
//! Concat, still at the exact multiply-adds).

use std::ops::Range;

use pleas_core::graph::{Graph, NodeId, Op};

/// Most atoms a class may have for the order search (`8! = 40320` candidate orders).
pub const MAX_ATOMS: usize = 8;

/// The export order of every node's output channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelOrder {
    /// Per node: its class, if its order is not the identity.
    class_of: Vec<Option<usize>>,
    /// Per class: `order[new] = old`.
    orders: Vec<Vec<usize>>,
    /// Per class: `position[old] = new`.
    positions: Vec<Vec<usize>>,
}

fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// The input channel ranges of each output block of a layer node, and the blocks' row counts
/// (a dense layer is one block over all its input channels); `None` for other ops.
// A block reading one range is the common case: its list of ranges has one element.
#[allow(clippy::single_range_in_vec_init)]
pub fn layer_blocks(graph: &Graph, id: NodeId) -> Option<Vec<(usize, Vec<Range<usize>>)>> {
    let node = graph.node(id);
    let in_c = node.inputs.first().map_or(0, |&i| graph.node(i).shape.c);
    match &node.op {
        Op::Linear { out_features, .. } => Some(vec![(*out_features, vec![0..in_c])]),
        Op::Conv2d { out_channels, .. } => Some(vec![(*out_channels, vec![0..in_c])]),
        Op::BlockLinear { blocks, .. } | Op::BlockConv2d { blocks, .. } => {
            Some(blocks.iter().map(|b| (b.rows, b.inputs.clone())).collect())
        }
        _ => None,
    }
}

/// Union-find over nodes: the channel classes, and whether each root must keep its order.
fn classes(graph: &Graph) -> (Vec<usize>, Vec<bool>) {
    let nodes = graph.nodes();
    let mut parent: Vec<usize> = (0..nodes.len()).collect();
    let mut fixed = vec![false; nodes.len()];
    fixed[graph.input()] = true;
    for (id, node) in nodes.iter().enumerate() {
        let through = match &node.op {
            Op::BatchNorm { .. }
            | Op::Relu
            | Op::Add
            | Op::MaxPool { .. }
            | Op::AvgPool { .. }
            | Op::GlobalAvgPool => true,
            Op::Flatten => {
                let flat = nodes[node.inputs[0]].shape.is_flat();
                if !flat {
                    fixed[id] = true;
                    fixed[node.inputs[0]] = true;
                }
                flat
            }
            Op::Linear { .. }
            | Op::Conv2d { .. }
            | Op::BlockLinear { .. }
            | Op::BlockConv2d { .. }
            | Op::Input => false,
            // An op this module does not know: its channels keep their order.
            _ => {
                fixed[id] = true;
                node.inputs.iter().for_each(|&i| fixed[i] = true);
                false
            }
        };
        if through {
            for &i in &node.inputs {
                let (a, b) = (find(&mut parent, id), find(&mut parent, i));
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    for out in graph.outputs() {
        fixed[out.node] = true;
    }
    let roots: Vec<usize> = (0..nodes.len()).map(|i| find(&mut parent, i)).collect();
    let mut root_fixed = vec![false; nodes.len()];
    for i in 0..nodes.len() {
        if fixed[i] {
            root_fixed[roots[i]] = true;
        }
    }
    (roots, root_fixed)
}

/// Whether the atoms of `set` (a bit mask) sit next to each other in `order`.
fn contiguous(order: &[usize], set: u64) -> bool {
    let at: Vec<usize> = (0..order.len())
        .filter(|&p| set >> order[p] & 1 == 1)
        .collect();
    at.is_empty() || at[at.len() - 1] - at[0] + 1 == at.len()
}

/// Next permutation in lexicographic order; `false` after the last.
fn next_permutation(p: &mut [usize]) -> bool {
    let Some(i) = (1..p.len()).rev().find(|&i| p[i - 1] < p[i]) else {
        return false;
    };
    let j = (i..p.len()).rev().find(|&j| p[j] > p[i - 1]).unwrap_or(i);
    p.swap(i - 1, j);
    p[i..].reverse();
    true
}

/// The first atom order under which every set is contiguous, if any.
fn atom_order(atoms: usize, sets: &[u64]) -> Option<Vec<usize>> {
    let mut order: Vec<usize> = (0..atoms).collect();
    loop {
        if sets.iter().all(|&s| contiguous(&order, s)) {
            return Some(order);
        }
        if !next_permutation(&mut order) {
            return None;
        }
    }
}

/// The channel order of one class (`order[new] = old`), or `None` to keep it.
fn class_order(graph: &Graph, members: &[NodeId], readers: &[NodeId]) -> Option<Vec<usize>> {
    let width = graph.node(members[0]).shape.c;
    let mut cuts = vec![0, width];
    for &m in members {
        if let Some(blocks) = layer_blocks(graph, m) {
            let mut row = 0;
            for (rows, _) in blocks {
                row += rows;
                cuts.push(row);
            }
        }
    }
    let mut reads: Vec<Vec<Range<usize>>> = Vec::new();
    for &r in readers {
        for (_, ranges) in layer_blocks(graph, r).unwrap_or_default() {
            cuts.extend(ranges.iter().flat_map(|r| [r.start, r.end]));
            reads.push(ranges);
        }
    }
    cuts.retain(|&c| c <= width);
    cuts.sort_unstable();
    cuts.dedup();
    let atoms: Vec<Range<usize>> = cuts.windows(2).map(|w| w[0]..w[1]).collect();
    if atoms.len() < 2 || atoms.len() > MAX_ATOMS {
        return None;
    }
    let sets: Vec<u64> = reads
        .iter()
        .map(|ranges| {
            atoms.iter().enumerate().fold(0u64, |s, (k, a)| {
                let inside = ranges.iter().any(|r| r.start <= a.start && a.end <= r.end);
                s | (u64::from(inside) << k)
            })
        })
        .collect();
    let order = atom_order(atoms.len(), &sets)?;
    if order.iter().enumerate().all(|(i, &k)| i == k) {
        return None;
    }
    Some(order.iter().flat_map(|&k| atoms[k].clone()).collect())
}

impl ChannelOrder {
    /// Every node keeps its channel order (the dense export).
    pub fn identity(graph: &Graph) -> Self {
        Self {
            class_of: vec![None; graph.nodes().len()],
            orders: Vec::new(),
            positions: Vec::new(),
        }
    }

    /// The orders under which every block reads one contiguous input range (module docs).
    pub fn contiguous(graph: &Graph) -> Self {
        let (roots, fixed) = classes(graph);
        let n = graph.nodes().len();
        let mut members: Vec<Vec<NodeId>> = vec![Vec::new(); n];
        let mut readers: Vec<Vec<NodeId>> = vec![Vec::new(); n];
        for id in 0..n {
            members[roots[id]].push(id);
            if layer_blocks(graph, id).is_some()
                && let Some(&i) = graph.node(id).inputs.first()
            {
                readers[roots[i]].push(id);
            }
        }
        let mut out = Self::identity(graph);
        for root in 0..n {
            if fixed[root] || members[root].is_empty() {
                continue;
            }
            if let Some(order) = class_order(graph, &members[root], &readers[root]) {
                let mut position = vec![0; order.len()];
                for (new, &old) in order.iter().enumerate() {
                    position[old] = new;
                }
                for &m in &members[root] {
                    out.class_of[m] = Some(out.orders.len());
                }
                out.orders.push(order);
                out.positions.push(position);
            }
        }
        out
    }

    /// `order[new] = old` for `node`'s output channels, or `None` if they keep their order.
    pub fn order(&self, node: NodeId) -> Option<&[usize]> {
        self.class_of
            .get(node)
            .copied()
            .flatten()
            .map(|c| self.orders[c].as_slice())
    }

    /// `position[old] = new` for `node`'s output channels, or `None` if they keep their order.
    pub fn position(&self, node: NodeId) -> Option<&[usize]> {
        self.class_of
            .get(node)
            .copied()
            .flatten()
            .map(|c| self.positions[c].as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_layout_becomes_a_then_merged_then_b() {
        // atoms m=0, A=1, B=2; reads [m A B], [m A], [m B]
        let sets = [0b111, 0b011, 0b101];
        assert_eq!(atom_order(3, &sets), Some(vec![1, 0, 2]));
    }

    #[test]
    fn identity_kept_when_already_contiguous() {
        assert_eq!(atom_order(3, &[0b011, 0b110]), Some(vec![0, 1, 2]));
    }

    #[test]
    fn impossible_sets_have_no_order() {
        // {0,1}, {1,2}, {0,2} on three atoms: any order leaves one pair apart.
        assert_eq!(atom_order(3, &[0b011, 0b110, 0b101]), None);
    }
}
