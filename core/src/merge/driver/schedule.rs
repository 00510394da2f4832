//! The plan of a device merge as the driver reads it: the permutation groups (widths and
//! merged pairs), the fitted layers (what each reads, how its rows are formed, where its
//! weights go in the output buffer), their output blocks and columns, the exact-copy rule and
//! the layouts ([`GroupLayout`]) the matching leaves in the caller's index scratch.

use core::ops::Range;

use crate::lstsq::LsForm;
use crate::merge::layout::GroupLayout;
use crate::merge::prior::{RidgeToward, block_is_copy};
use crate::merge::sources::{RowSource, TargetRule, row_source};

/// Most permutation groups a schedule holds.
pub const MAX_GROUPS: usize = 16;
/// Most fitted layers a schedule holds (one per group and two heads).
pub const MAX_FITTED: usize = MAX_GROUPS + 2;

/// One permutation group: `width` units per model, `merged` pairs merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupPlan {
    /// Units per model `n`.
    pub width: usize,
    /// Merged pairs `k`.
    pub merged: usize,
}

impl GroupPlan {
    /// Width of the merged group, `2n - k`.
    pub fn merged_width(&self) -> usize {
        2 * self.width - self.merged
    }
}

/// What a fitted layer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerInput {
    /// The merge samples (channels no group permutes).
    Samples,
    /// A merged permutation group (after its activation).
    Group(usize),
}

/// One fitted (conv or linear) layer of the merged network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FittedLayer {
    /// What it reads.
    pub input: LayerInput,
    /// Input channels of the original layer.
    pub in_channels: usize,
    /// Columns per input channel (`kh * kw`, 1 for a linear layer).
    pub patch: usize,
    /// How its rows are formed from A's and B's outputs.
    pub target: TargetRule,
    /// Output rows of the merged layer.
    pub outputs: usize,
    /// Whether it has a bias (the constant column).
    pub bias: bool,
    /// Where its dense weight (`outputs x in_width x patch`, row-major) starts in the output
    /// buffer.
    pub weight_start: usize,
    /// Where its bias starts in the output buffer.
    pub bias_start: usize,
    /// Rows of its fit per sample (output positions; 1 for a linear layer).
    pub rows_per_sample: usize,
}

/// One output block: its rows and which private input units it may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Output rows.
    pub rows: Range<usize>,
    /// Reads the A-only input units.
    pub use_a: bool,
    /// Reads the B-only input units.
    pub use_b: bool,
}

/// The input columns of a block: up to two ranges of merged input channels, each channel
/// owning `patch` consecutive columns, then the bias column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// Ranges of input channels, in increasing order (the second may be empty).
    pub ranges: [Range<usize>; 2],
    /// Columns per channel.
    pub patch: usize,
    /// Whether the bias column follows.
    pub bias: bool,
}

impl Columns {
    /// Input columns without the bias.
    pub fn inputs(&self) -> usize {
        (self.ranges[0].len() + self.ranges[1].len()) * self.patch
    }

    /// Columns, bias included.
    pub fn len(&self) -> usize {
        self.inputs() + usize::from(self.bias)
    }

    /// Whether there is no column at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The merged input channel of block channel `i` (`i < channels`).
    pub fn channel(&self, i: usize) -> usize {
        let first = self.ranges[0].len();
        if i < first {
            self.ranges[0].start + i
        } else {
            self.ranges[1].start + (i - first)
        }
    }

    /// The column of a dense weight row of block column `a` (`a < inputs()`).
    pub fn at(&self, a: usize) -> usize {
        let p = self.patch.max(1);
        self.channel(a / p) * p + a % p
    }

    /// Whether merged input channel `c` is one of the block's.
    pub fn contains(&self, c: usize) -> bool {
        self.ranges[0].contains(&c) || self.ranges[1].contains(&c)
    }
}

/// Everything the driver decides from: groups, fitted layers in order, samples and the
/// knobs that change which blocks are solved and how.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeSchedule {
    /// The permutation groups.
    pub groups: heapless::Vec<GroupPlan, MAX_GROUPS>,
    /// The fitted layers, in the order they are fitted.
    pub layers: heapless::Vec<FittedLayer, MAX_FITTED>,
    /// Merge samples.
    pub samples: usize,
    /// What the ridge pulls towards (copies need the permute-and-average prior).
    pub ridge_toward: RidgeToward,
    /// Which form solves a block.
    pub form: LsForm,
    /// Right-hand sides per solve (at least 1).
    pub rhs_chunk: usize,
}

impl MergeSchedule {
    /// Where group `g`'s layout lists are in the index scratch
    /// ([`GroupLayout::lists_len`] per group).
    pub fn index_range(&self, g: usize) -> Range<usize> {
        let start: usize = self.groups[..g]
            .iter()
            .map(|p| GroupLayout::lists_len(p.width))
            .sum();
        start..start + GroupLayout::lists_len(self.groups[g].width)
    }

    /// Index scratch the layouts take.
    pub fn index_len(&self) -> usize {
        self.groups
            .iter()
            .map(|p| GroupLayout::lists_len(p.width))
            .sum()
    }

    /// The layout of group `g` in `indices` (after the matching).
    pub fn layout<'a>(&self, indices: &'a [usize], g: usize) -> GroupLayout<&'a [usize]> {
        GroupLayout::view(self.groups[g].merged, &indices[self.index_range(g)])
    }

    /// The sources of row `r` of fitted layer `f`.
    pub fn row_source(&self, indices: &[usize], f: usize, r: usize) -> RowSource {
        row_source(self.layers[f].target, |g| self.layout(indices, g), r)
    }

    /// Merged input channels of fitted layer `f`.
    pub fn in_width(&self, f: usize) -> usize {
        let l = &self.layers[f];
        match l.input {
            LayerInput::Samples => l.in_channels,
            LayerInput::Group(g) => self.groups[g].merged_width(),
        }
    }

    /// f32 values of one dense weight row of fitted layer `f`.
    pub fn row_len(&self, f: usize) -> usize {
        self.in_width(f) * self.layers[f].patch
    }

    /// The output blocks of fitted layer `f`. A layer reading the samples has one block over
    /// all its rows: every block would read all columns, so their systems are identical.
    pub fn blocks(&self, f: usize) -> heapless::Vec<Block, 3> {
        let l = &self.layers[f];
        let rows = l.outputs;
        let mut out = heapless::Vec::new();
        let mut push = |rows: Range<usize>, use_a: bool, use_b: bool| {
            if !rows.is_empty() {
                // At most three blocks are pushed.
                let _ = out.push(Block { rows, use_a, use_b });
            }
        };
        match (l.input, l.target) {
            (LayerInput::Samples, _) => push(0..rows, true, true),
            (_, TargetRule::Layout(g)) => {
                let (k, n) = (self.groups[g].merged, self.groups[g].width);
                push(0..k, true, true);
                push(k..n, true, false);
                push(n..rows, false, true);
            }
            (_, TargetRule::Average) => push(0..rows, true, true),
            (_, TargetRule::OnlyA) => push(0..rows, true, false),
            (_, TargetRule::OnlyB) => push(0..rows, false, true),
        }
        out
    }

    /// The input columns of `block` of fitted layer `f`.
    pub fn columns(&self, f: usize, block: &Block) -> Columns {
        let l = &self.layers[f];
        let ranges = match l.input {
            LayerInput::Samples => [0..l.in_channels, 0..0],
            LayerInput::Group(g) => {
                let p = self.groups[g];
                let (k, n, m) = (p.merged, p.width, p.merged_width());
                match (block.use_a, block.use_b) {
                    (true, true) => [0..m, 0..0],
                    (true, false) => [0..n, 0..0],
                    (false, true) => [0..k, n..m],
                    (false, false) => [0..k, 0..0],
                }
            }
        };
        Columns {
            ranges,
            patch: l.patch,
            bias: l.bias,
        }
    }

    /// Whether fitted layer `f` keeps its permute-and-average weights without a solve
    /// ([`block_is_copy`]): with the ridge towards them, when it reads only exact copies of
    /// the models' units.
    pub fn copies(&self, f: usize) -> bool {
        block_is_copy(self.ridge_toward, self.reads_exact(f))
    }

    /// Whether every input channel of fitted layer `f` is an exact copy of one model's unit
    /// ([`row_is_exact`](crate::merge::prior::row_is_exact)): the merge samples are; a
    /// group's units are when none is merged and every layer producing them before `f` (one
    /// in a chain; the two branches of a residual add) read only exact channels (a block of
    /// a layer with a merged pair reads the merged units).
    pub fn reads_exact(&self, f: usize) -> bool {
        // exact[p]: layer p reads only exact channels; each depends on earlier layers only.
        let mut exact = [false; MAX_FITTED];
        for p in 0..=f.min(self.layers.len().saturating_sub(1)) {
            exact[p] = match self.layers[p].input {
                LayerInput::Samples => true,
                LayerInput::Group(g) => {
                    let mut producers = (0..p)
                        .filter(|&q| self.layers[q].target == TargetRule::Layout(g))
                        .peekable();
                    self.groups[g].merged == 0
                        && producers.peek().is_some()
                        && producers.all(|q| exact[q])
                }
            };
        }
        f < self.layers.len() && exact[f]
    }

    /// The first fitted layer whose rows are group `g` (a residual add gives a group several).
    pub fn producer(&self, g: usize) -> Option<usize> {
        self.layers
            .iter()
            .position(|l| l.target == TargetRule::Layout(g))
    }

    /// Whether a block of fitted layer `f` with `columns` columns (bias included) is solved
    /// in the dual form.
    pub fn dual(&self, f: usize, columns: usize) -> bool {
        let rows = self.samples.saturating_mul(self.layers[f].rows_per_sample);
        self.form.dual(rows, columns)
    }

    /// Fit rows of fitted layer `f` over all samples.
    pub fn fit_rows(&self, f: usize) -> usize {
        self.samples.saturating_mul(self.layers[f].rows_per_sample)
    }

    /// Right-hand sides per solve for a block of `rows` rows.
    pub fn chunk(&self, rows: usize) -> usize {
        self.rhs_chunk.min(rows).max(1)
    }

    /// `t - W0[r, cols] x - b0[r]` in f64 for fitted layer `f`'s row `r`, target `t`,
    /// `x(a)` the block's input of block column `a`, `W0` read from `weights`.
    pub fn residual(
        &self,
        f: usize,
        r: usize,
        t: f32,
        cols: &Columns,
        weights: &[f32],
        x: impl Fn(usize) -> f64,
    ) -> f64 {
        let l = &self.layers[f];
        let row = l.weight_start + r * self.row_len(f);
        let mut p = 0.0;
        for a in 0..cols.inputs() {
            p += f64::from(weights[row + cols.at(a)]) * x(a);
        }
        if l.bias {
            p += f64::from(weights[l.bias_start + r]);
        }
        f64::from(t) - p
    }

    /// Where fitted layer `f`'s weight and bias end in the output buffer.
    pub fn layer_end(&self, f: usize) -> usize {
        let l = &self.layers[f];
        let w = l.weight_start + l.outputs * self.row_len(f);
        if l.bias {
            w.max(l.bias_start + l.outputs)
        } else {
            w
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(merged: [usize; 2]) -> MergeSchedule {
        let mut groups = heapless::Vec::new();
        for k in merged {
            let _ = groups.push(GroupPlan {
                width: 4,
                merged: k,
            });
        }
        let layer = |input, target, in_channels, patch, outputs| FittedLayer {
            input,
            in_channels,
            patch,
            target,
            outputs,
            bias: true,
            weight_start: 0,
            bias_start: 0,
            rows_per_sample: 1,
        };
        let mut layers = heapless::Vec::new();
        let w = |g: usize| 8 - merged[g];
        let _ = layers.push(layer(
            LayerInput::Samples,
            TargetRule::Layout(0),
            3,
            9,
            w(0),
        ));
        let _ = layers.push(layer(
            LayerInput::Group(0),
            TargetRule::Layout(1),
            4,
            9,
            w(1),
        ));
        let _ = layers.push(layer(LayerInput::Group(1), TargetRule::OnlyB, 4, 1, 5));
        MergeSchedule {
            groups,
            layers,
            samples: 10,
            ridge_toward: RidgeToward::Average,
            form: LsForm::Auto,
            rhs_chunk: 16,
        }
    }

    #[test]
    fn block_columns_are_channels_times_taps() {
        let s = schedule([1, 1]);
        // Group 0: 1 merged pair, width 7: [m | A 1..4 | B 4..7]. A B-only block of layer 1
        // reads channels 0..1 and 4..7, 9 taps each, then the bias.
        let blocks = s.blocks(1);
        assert_eq!(blocks.len(), 3);
        let cols = s.columns(1, &blocks[2]);
        assert_eq!((cols.inputs(), cols.len()), (36, 37));
        assert_eq!(cols.at(8), 8);
        assert_eq!(cols.at(9), 4 * 9);
        assert_eq!(cols.at(35), 7 * 9 - 1);
        assert!(cols.contains(5) && !cols.contains(2));
        assert_eq!(s.row_len(1), 7 * 9);
    }

    #[test]
    fn copies_follow_exact_channels_through_the_chain() {
        // The first layer reads the samples: always a copy.
        let s = schedule([1, 0]);
        assert!(s.copies(0));
        assert!(!s.copies(1), "group 0 has a merged pair");
        assert!(!s.copies(2), "its private units come from a solved layer");
        let s = schedule([0, 0]);
        assert!(s.copies(0) && s.copies(1) && s.copies(2));
        let s = MergeSchedule {
            ridge_toward: RidgeToward::Zero,
            ..s
        };
        assert!(!s.copies(0));
    }

    #[test]
    fn the_dual_form_counts_rows_per_sample() {
        let mut s = schedule([1, 1]);
        // 10 samples x 1 row against 64 columns: dual; with 49 positions per sample: primal.
        assert!(s.dual(1, 64));
        s.layers[1].rows_per_sample = 49;
        assert!(!s.dual(1, 64));
    }
}
