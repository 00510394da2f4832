//! The least-squares plan of one merged layer: which input columns each output block may use.
//!
//! The merged weight of a layer is fitted block by block with the cross blocks held at zero:
//! merged output units regress on all input columns `[m, A, B]`; A-only outputs on `[m, A]`;
//! B-only outputs on `[m, B]` (docs/ALGORITHM.md section 4). An input channel of a convolution with a
//! `kh x kw` kernel owns `kh * kw` consecutive columns of the im2col patch (PyTorch's
//! `[out, in, kh, kw]` weight order); a bias is one more, constant column at the end.

use alloc::vec::Vec;
use core::ops::Range;

use super::layout::GroupLayout;

/// One output block of a merged layer and the input columns it regresses on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputBlock {
    /// The block's output units in the merged layout.
    pub rows: Range<usize>,
    /// The allowed input columns (patch columns, then the bias column if any), increasing.
    pub cols: Vec<usize>,
}

/// The input side of a layer: its channel layout and patch size.
#[derive(Debug, Clone, Copy)]
pub struct InputSide<'a> {
    /// The group layout of the input channels, or `None` when the input axis is in no group
    /// (the network input): then `channels` channels, all shared.
    pub layout: Option<&'a GroupLayout>,
    /// Input channels of the merged layer when `layout` is `None` (ignored otherwise).
    pub channels: usize,
    /// Columns per input channel (`kh * kw` for a convolution, 1 for a linear layer).
    pub patch: usize,
    /// Whether the layer has a bias (one constant column after the patch columns).
    pub bias: bool,
}

impl InputSide<'_> {
    /// Input channels of the merged layer.
    pub fn merged_channels(&self) -> usize {
        self.layout.map_or(self.channels, GroupLayout::merged_width)
    }

    /// Columns of the merged layer's im2col input (plus the bias column).
    pub fn columns(&self) -> usize {
        self.merged_channels() * self.patch + usize::from(self.bias)
    }

    fn push_channels(&self, channels: Range<usize>, cols: &mut Vec<usize>) {
        for ch in channels {
            cols.extend(ch * self.patch..(ch + 1) * self.patch);
        }
    }

    /// Dense column indices read by an output block that sees the merged input units, plus A's
    /// private units if `use_a` and B's if `use_b` (all channels when the input has no group),
    /// then the bias column. Ascending, patch positions of one channel consecutive.
    pub fn columns_for(&self, use_a: bool, use_b: bool) -> Vec<usize> {
        let mut cols = Vec::new();
        match self.layout {
            None => self.push_channels(0..self.channels, &mut cols),
            Some(l) => {
                self.push_channels(0..l.merged_count(), &mut cols);
                if use_a {
                    self.push_channels(l.a_offset()..l.b_offset(), &mut cols);
                }
                if use_b {
                    self.push_channels(l.b_offset()..l.merged_width(), &mut cols);
                }
            }
        }
        if self.bias {
            cols.push(self.merged_channels() * self.patch);
        }
        cols
    }
}

/// The output blocks of a merged layer. With an output group: merged rows on all columns,
/// A-only rows on `[m, A]`, B-only rows on `[m, B]` (empty blocks are omitted). Without one
/// (`output` is `None`, `outputs` units, e.g. a shared head): one block on all columns.
pub fn output_blocks(
    input: InputSide<'_>,
    output: Option<&GroupLayout>,
    outputs: usize,
) -> Vec<OutputBlock> {
    let mut blocks = Vec::new();
    match output {
        None => {
            if outputs > 0 {
                blocks.push(OutputBlock {
                    rows: 0..outputs,
                    cols: input.columns_for(true, true),
                });
            }
        }
        Some(l) => {
            for (rows, a, b) in [
                (0..l.merged_count(), true, true),
                (l.a_offset()..l.b_offset(), true, false),
                (l.b_offset()..l.merged_width(), false, true),
            ] {
                if !rows.is_empty() {
                    blocks.push(OutputBlock {
                        rows,
                        cols: input.columns_for(a, b),
                    });
                }
            }
        }
    }
    blocks
}
