//! Permutation groups by union-find (docs/ALGORITHM.md section 1).
//!
//! Each node's output channel axis is one union-find element. The rules:
//! - conv / linear: a new channel axis; its output axis owns weight axis 0 and the bias; the
//!   input's axis owns weight axis 1;
//! - batch-norm: input axis = output axis, owning gamma, beta, running mean and variance;
//! - ReLU, max/avg pooling, global average pooling, flatten of a `1 x 1` map: the axis passes
//!   through;
//! - add: every operand's axis and the output's are one;
//! - the graph input and every graph output poison their set (the group is dropped), and so
//!   does a flatten of a spatial map (its features mix channel and position);
//! - a block-structured conv or linear layer (a merged layer) poisons both its output axis and
//!   its input's axis: its blocks read fixed channel ranges, so permuting either axis would
//!   move units across blocks. No group crosses a block layer, and its tensors are in no group.
//!
//! Groups are listed in order of their first node; each is named after its first conv or linear
//! producer (or its first node if it has none).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::{Graph, NodeId, Op, Weights};

/// One axis of one tensor: `tensor`'s dimension `axis`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AxisRef {
    /// Tensor name.
    pub tensor: String,
    /// Dimension index.
    pub axis: usize,
}

/// A set of tensor axes that must be permuted together to keep the network's function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermGroup {
    /// Human-readable name (the first conv/linear node producing the axis).
    pub name: String,
    /// Number of units (channels) permuted.
    pub width: usize,
    /// Every tensor axis in the group, in node order.
    pub members: Vec<AxisRef>,
    /// Every node whose output channel axis is this group, in node order.
    pub nodes: Vec<NodeId>,
}

/// The permutation groups of a graph, and the group of every node's output channel axis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups {
    groups: Vec<PermGroup>,
    node_group: Vec<Option<usize>>,
}

impl Groups {
    /// The groups in order of first node.
    pub fn groups(&self) -> &[PermGroup] {
        &self.groups
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether there is no group.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The group of `node`'s output channel axis, or `None` if that axis is in no group (it
    /// reaches the graph input or an output). The input group of a layer is the group of its
    /// input node.
    pub fn of_node(&self, node: NodeId) -> Option<usize> {
        self.node_group.get(node).copied().flatten()
    }
}

struct UnionFind {
    parent: Vec<usize>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        Self {
            parent: (0..n).collect(),
        }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        // Keep the smaller id as root, so roots are deterministic.
        if ra < rb {
            self.parent[rb] = ra;
        } else if rb < ra {
            self.parent[ra] = rb;
        }
    }
}

/// Derives the permutation groups of `graph` by union-find over the rules of the module docs.
pub fn permutation_groups(graph: &Graph) -> Groups {
    let nodes = graph.nodes();
    let n = nodes.len();
    let mut uf = UnionFind::new(n);
    let mut poisoned = alloc::vec![false; n];
    let axis = |t: &str, a: usize| AxisRef {
        tensor: String::from(t),
        axis: a,
    };
    poisoned[graph.input()] = true;
    for (id, node) in nodes.iter().enumerate() {
        match &node.op {
            Op::Input => poisoned[id] = true,
            Op::Linear { .. } | Op::Conv2d { .. } => {}
            Op::BlockConv2d { .. } | Op::BlockLinear { .. } => {
                poisoned[id] = true;
                for &i in &node.inputs {
                    poisoned[i] = true;
                }
            }
            Op::BatchNorm { .. }
            | Op::Relu
            | Op::MaxPool { .. }
            | Op::AvgPool { .. }
            | Op::GlobalAvgPool
            | Op::Add => {
                for &i in &node.inputs {
                    uf.union(id, i);
                }
            }
            Op::Flatten => {
                let src = node.inputs[0];
                if nodes[src].shape.is_flat() {
                    uf.union(id, src);
                } else {
                    poisoned[id] = true;
                    poisoned[src] = true;
                }
            }
        }
    }
    for out in graph.outputs() {
        poisoned[out.node] = true;
    }
    let mut root_poisoned = alloc::vec![false; n];
    for id in 0..n {
        if poisoned[id] {
            let r = uf.find(id);
            root_poisoned[r] = true;
        }
    }
    let mut root_group: Vec<Option<usize>> = alloc::vec![None; n];
    let mut groups: Vec<PermGroup> = Vec::new();
    let mut node_group = alloc::vec![None; n];
    for id in 0..n {
        let r = uf.find(id);
        if root_poisoned[r] {
            continue;
        }
        let g = *root_group[r].get_or_insert_with(|| {
            groups.push(PermGroup {
                name: String::new(),
                width: nodes[id].shape.c,
                members: Vec::new(),
                nodes: Vec::new(),
            });
            groups.len() - 1
        });
        node_group[id] = Some(g);
        groups[g].nodes.push(id);
    }
    // Members in node order: walk nodes again so that the weight axis 1 of a consumer comes
    // where the consumer is, not where its input is.
    for (id, node) in nodes.iter().enumerate() {
        match &node.op {
            Op::Linear { weight, bias, .. } | Op::Conv2d { weight, bias, .. } => {
                if let Some(g) = node_group[node.inputs[0]] {
                    groups[g].members.push(axis(weight, 1));
                }
                if let Some(g) = node_group[id] {
                    groups[g].members.push(axis(weight, 0));
                    if let Some(b) = bias {
                        groups[g].members.push(axis(b, 0));
                    }
                }
            }
            Op::BatchNorm {
                weight,
                bias,
                running_mean,
                running_var,
                ..
            } => {
                if let Some(g) = node_group[id] {
                    for t in [weight, bias, running_mean, running_var] {
                        groups[g].members.push(axis(t, 0));
                    }
                }
            }
            _ => {}
        }
    }
    for g in &mut groups {
        let producer = g
            .nodes
            .iter()
            .find(|&&id| matches!(nodes[id].op, Op::Linear { .. } | Op::Conv2d { .. }))
            .unwrap_or(&g.nodes[0]);
        g.name = nodes[*producer].name.clone();
    }
    Groups { groups, node_group }
}

/// Why permutations could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PermuteError {
    /// The number of permutations differs from the number of groups.
    GroupCount {
        /// Groups.
        expected: usize,
        /// Permutations given.
        found: usize,
    },
    /// A permutation has the wrong length or repeats / skips an index.
    NotAPermutation {
        /// The group's index.
        group: usize,
        /// The group's width.
        width: usize,
    },
    /// A member tensor is missing from the weights or its axis is too short.
    Tensor {
        /// The tensor.
        tensor: String,
        /// The axis.
        axis: usize,
    },
}

impl fmt::Display for PermuteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PermuteError::GroupCount { expected, found } => {
                write!(f, "{found} permutations given for {expected} groups")
            }
            PermuteError::NotAPermutation { group, width } => {
                write!(
                    f,
                    "permutation of group {group} is not a permutation of 0..{width}"
                )
            }
            PermuteError::Tensor { tensor, axis } => write!(
                f,
                "tensor `{tensor}` is missing or its axis {axis} does not match its group"
            ),
        }
    }
}

impl core::error::Error for PermuteError {}

/// Applies one permutation per group to a copy of `weights`: for every member axis,
/// `new[.., i, ..] = old[.., perm[i], ..]` (new unit `i` is old unit `perm[i]`).
/// Tensors in no group are copied unchanged.
pub fn apply_permutations(
    groups: &Groups,
    weights: &Weights,
    perms: &[Vec<usize>],
) -> Result<Weights, PermuteError> {
    if perms.len() != groups.len() {
        return Err(PermuteError::GroupCount {
            expected: groups.len(),
            found: perms.len(),
        });
    }
    let mut out = weights.clone();
    for (gi, (g, perm)) in groups.groups().iter().zip(perms).enumerate() {
        if perm.len() != g.width {
            return Err(PermuteError::NotAPermutation {
                group: gi,
                width: g.width,
            });
        }
        for m in &g.members {
            let err = || PermuteError::Tensor {
                tensor: m.tensor.clone(),
                axis: m.axis,
            };
            let t = out.get_mut(&m.tensor).ok_or_else(err)?;
            if t.shape().get(m.axis) != Some(&g.width) {
                return Err(err());
            }
            *t = t
                .permute_axis(m.axis, perm)
                .ok_or(PermuteError::NotAPermutation {
                    group: gi,
                    width: g.width,
                })?;
        }
    }
    Ok(out)
}
