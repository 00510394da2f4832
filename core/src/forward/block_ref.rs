//! One output block of a block-structured (merged) conv or linear layer, as the batched
//! kernels of [`super::layers`] and [`super::direct_conv`] read it.

use core::ops::Range;

/// One output block of a block-structured layer as the kernels read it: `rows` consecutive
/// output channels computed from the input channel ranges `inputs` only.
///
/// A dense layer is the single block of every output row reading `0..in_channels`.
#[derive(Debug, Clone, Copy)]
pub struct BlockRef<'a> {
    /// Row-major `rows x (cols * kh * kw)` (the PyTorch layout `[rows, cols, kh, kw]`;
    /// `kh = kw = 1` for a linear layer), `cols` being the total length of `inputs`; the
    /// columns of each range follow those of the previous one.
    pub weight: &'a [f32],
    /// `rows` values added to the block's outputs, if any.
    pub bias: Option<&'a [f32]>,
    /// Output channels of the block; blocks are stacked in order.
    pub rows: usize,
    /// Input channel ranges read, each within the layer's input channels.
    pub inputs: &'a [Range<usize>],
}

impl BlockRef<'_> {
    /// Total length of the input ranges (saturating).
    pub(crate) fn cols(&self) -> usize {
        self.inputs
            .iter()
            .fold(0usize, |acc, r| acc.saturating_add(r.len()))
    }
}
