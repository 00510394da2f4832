//! Random blocks and weights for the property tests of the direct convolutions (stride 1 and
//! strided): owned [`BlockRef`]s, random input ranges, the merged-model block layout, and the
//! check of the scalar twin against nalgebra's f64 product.

// Blocks read lists of channel ranges; a list of one range is the common case.
#![allow(clippy::single_range_in_vec_init)]

use std::ops::Range;

use nalgebra::DMatrix;
use pleas_core::forward::direct_conv::direct_conv_reference;
use pleas_core::forward::im2col::{ConvGeometry, im2col_len, im2col_reference};
use pleas_core::forward::layers::BlockRef;
use proptest::prop_assert;
use proptest::test_runner::TestCaseError;

use crate::rng::Rng;
use crate::tolerance::TWIN_VS_NALGEBRA_REL;

/// `n` normal values as f32.
pub fn values(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

/// The largest magnitude in `x` (0 when empty).
pub fn max_abs(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Cuts `0..in_c` at random points and keeps a random non-empty subset of the segments.
pub fn random_ranges(rng: &mut Rng, in_c: usize) -> Vec<Range<usize>> {
    let mut cuts: Vec<usize> = (1..in_c).filter(|_| rng.below(3) == 0).collect();
    cuts.insert(0, 0);
    cuts.push(in_c);
    let segments: Vec<Range<usize>> = cuts.windows(2).map(|w| w[0]..w[1]).collect();
    let mut kept: Vec<Range<usize>> = segments
        .iter()
        .filter(|_| rng.below(2) == 0)
        .cloned()
        .collect();
    if kept.is_empty() {
        kept.push(segments[rng.below(segments.len())].clone());
    }
    kept
}

/// Input ranges of block `i` of a merged layer of `c` input channels laid out
/// `[m merged | A's own | B's own]`: the merged block (0) reads all inputs, the others the
/// merged channels and their own model's.
pub fn merged_inputs(c: usize, m: usize, i: usize) -> Vec<Range<usize>> {
    let own = (c - m) / 2;
    match i {
        0 => vec![0..c],
        1 => vec![0..m, m..m + own],
        _ => vec![0..m, m + own..c],
    }
}

/// A block of a block-structured convolution with owned weights.
pub struct OwnedBlock {
    /// `rows x (input channels x taps)`, row-major.
    pub weight: Vec<f32>,
    /// One value per row, if any.
    pub bias: Option<Vec<f32>>,
    /// Output channels.
    pub rows: usize,
    /// Input channel ranges read, in weight column order.
    pub inputs: Vec<Range<usize>>,
}

impl OwnedBlock {
    /// Normal weights for `rows` outputs reading `inputs` over `taps` taps, and a normal bias
    /// half of the time.
    pub fn random(rng: &mut Rng, rows: usize, inputs: Vec<Range<usize>>, taps: usize) -> Self {
        let cols: usize = inputs.iter().map(|r| r.len()).sum();
        OwnedBlock {
            weight: values(rng, rows * cols * taps),
            bias: (rng.below(2) == 0).then(|| values(rng, rows)),
            rows,
            inputs,
        }
    }

    /// Normal weights and bias for `rows` outputs reading `inputs` over `taps` taps.
    pub fn biased(rng: &mut Rng, rows: usize, inputs: Vec<Range<usize>>, taps: usize) -> Self {
        let cols: usize = inputs.iter().map(|r| r.len()).sum();
        OwnedBlock {
            weight: values(rng, rows * cols * taps),
            bias: Some(values(rng, rows)),
            rows,
            inputs,
        }
    }

    /// `blocks` random blocks of 1 to 30 rows, each reading [`random_ranges`] of `in_c`.
    pub fn random_layer(rng: &mut Rng, blocks: usize, in_c: usize, taps: usize) -> Vec<Self> {
        (0..blocks)
            .map(|_| {
                let rows = 1 + rng.below(30);
                let inputs = random_ranges(rng, in_c);
                OwnedBlock::random(rng, rows, inputs, taps)
            })
            .collect()
    }

    /// The block as the kernels read it.
    pub fn view(&self) -> BlockRef<'_> {
        BlockRef {
            weight: &self.weight,
            bias: self.bias.as_deref(),
            rows: self.rows,
            inputs: &self.inputs,
        }
    }
}

/// The scalar twin of a dense layer of `out_c` outputs with a bias, random weights and input
/// from `seed`, equals nalgebra's f64 product `W * im2col(x) + b` within
/// [`TWIN_VS_NALGEBRA_REL`].
pub fn twin_against_nalgebra(
    geom: &ConvGeometry,
    out_c: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let mut rng = Rng::new(seed);
    let patch = geom.patch_len();
    let block = OwnedBlock {
        weight: values(&mut rng, out_c * patch),
        bias: Some(values(&mut rng, out_c)),
        rows: out_c,
        inputs: vec![0..geom.in_c],
    };
    let x = values(&mut rng, geom.input_len());
    let mut twin = vec![0.0f32; out_c * geom.positions()];
    direct_conv_reference(geom, &[block.view()], &x, 1, &mut twin);
    let mut cols = vec![0.0f32; im2col_len(geom, 1)];
    im2col_reference(geom, &x, 1, &mut cols);
    let wide = |v: &f32| f64::from(*v);
    let wm = DMatrix::from_row_iterator(out_c, patch, block.weight.iter().map(wide));
    let cm = DMatrix::from_row_iterator(patch, geom.positions(), cols.iter().map(wide));
    let mut prod = wm * cm;
    for (o, &b) in block.bias.as_ref().unwrap().iter().enumerate() {
        for v in prod.row_mut(o).iter_mut() {
            *v += f64::from(b);
        }
    }
    let scale = prod
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    for o in 0..out_c {
        for q in 0..geom.positions() {
            let d = (f64::from(twin[o * geom.positions() + q]) - prod[(o, q)]).abs();
            prop_assert!(d <= TWIN_VS_NALGEBRA_REL * scale, "diff {d} at ({o}, {q})");
        }
    }
    Ok(())
}
