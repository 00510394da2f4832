//! The direct (im2col-free) stride-1 convolution that `block_conv2d` dispatches to: against its
//! scalar f64 twin over random geometries, blocks, ranges, biases and batches (blocks of 1-30
//! rows: one to three row groups of every register-tile height, and remainders of 1-2
//! vectors; the ResNet shapes span several position chunks), and the twin against nalgebra's f64 matrix
//! product of the weight with the unfolded patch matrix.

// Blocks read lists of channel ranges; a list of one range is the common case.
#![allow(clippy::single_range_in_vec_init)]

use pleas_core::forward::direct_conv::{
    MAX_TAPS, direct_conv_applies, direct_conv_reference, direct_conv_scratch_len,
};
use pleas_core::forward::im2col::ConvGeometry;
use pleas_core::forward::layers::{BlockRef, block_conv2d, block_conv2d_scratch_len};
use pleas_tests::conv_blocks::{OwnedBlock, max_abs, merged_inputs, twin_against_nalgebra, values};
use pleas_tests::rng::Rng;
use pleas_tests::simd_paths::for_each_path;
use pleas_tests::tolerance::KERNEL_VS_NAIVE_REL;
use proptest::prelude::*;

fn check(geom: &ConvGeometry, blocks: &[OwnedBlock], batch: usize, rng: &mut Rng) {
    assert!(direct_conv_applies(geom));
    let views: Vec<BlockRef<'_>> = blocks.iter().map(OwnedBlock::view).collect();
    let out_c: usize = blocks.iter().map(|b| b.rows).sum();
    let x = values(rng, batch * geom.input_len());
    let mut got = vec![f32::NAN; batch * out_c * geom.positions()];
    let len = block_conv2d_scratch_len(geom, &views, batch);
    assert_eq!(len, direct_conv_scratch_len(geom, &views));
    let mut want = vec![0.0f32; got.len()];
    direct_conv_reference(geom, &views, &x, batch, &mut want);
    let scale = max_abs(&want).max(f32::MIN_POSITIVE);
    for_each_path(|path| {
        // Dirty scratch and output: the kernel must not depend on their contents.
        got.fill(f32::NAN);
        let mut scratch = vec![f32::NAN; len];
        block_conv2d(geom, &views, &x, batch, batch, &mut got, &mut scratch).unwrap();
        let diff = got
            .iter()
            .zip(&want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= KERNEL_VS_NAIVE_REL * scale,
            "{path}: {geom:?}: max diff {diff} of scale {scale}"
        );
    });
}

proptest! {
    #![proptest_config(pleas_tests::config(64))]

    /// The SIMD kernel equals the scalar twin for random stride-1 geometries and blocks.
    #[test]
    fn kernel_matches_the_scalar_twin(
        in_c in 1usize..7, h in 1usize..12, w in 1usize..20, kh in 1usize..5, kw in 1usize..5,
        ph in 0usize..3, pw in 0usize..3, blocks in 1usize..4, batch in 1usize..4,
        seed in 0u64..10_000,
    ) {
        let taps = kh * kw;
        prop_assume!(taps > 1 && taps <= MAX_TAPS);
        let Some(geom) = ConvGeometry::new(in_c, h, w, [kh, kw], [1, 1], [ph.min(kh - 1), pw.min(kw - 1)]) else {
            return Ok(());
        };
        let mut rng = Rng::new(seed);
        let owned = OwnedBlock::random_layer(&mut rng, blocks, in_c, taps);
        check(&geom, &owned, batch, &mut rng);
    }

    /// The scalar twin of a dense layer equals nalgebra's f64 product `W * im2col(x) + b`.
    #[test]
    fn twin_matches_nalgebra(
        in_c in 1usize..5, h in 2usize..10, w in 2usize..10, k in 2usize..4, p in 0usize..2,
        out_c in 1usize..7, seed in 0u64..10_000,
    ) {
        let Some(geom) = ConvGeometry::new(in_c, h, w, [k, k], [1, 1], [p, p]) else {
            return Ok(());
        };
        twin_against_nalgebra(&geom, out_c, seed)?;
    }
}

/// The ResNet-20 shapes the merge runs (16/32/64 channels at 28/14/7, merged-model blocks of
/// uneven rows) against the twin.
#[test]
fn resnet_shapes_match_the_scalar_twin() {
    let mut rng = Rng::new(20);
    for (c, hw, rows) in [
        (16, 28, &[16][..]),
        (19, 28, &[13, 3, 3][..]),
        (32, 14, &[27, 5, 5][..]),
        (64, 7, &[64][..]),
        (70, 7, &[58, 6, 6][..]),
    ] {
        let geom = ConvGeometry::new(c, hw, hw, [3, 3], [1, 1], [1, 1]).unwrap();
        let m = rows[0];
        let owned: Vec<OwnedBlock> = rows
            .iter()
            .enumerate()
            .map(|(i, &r)| OwnedBlock::biased(&mut rng, r, merged_inputs(c, m, i), 9))
            .collect();
        check(&geom, &owned, 2, &mut rng);
    }
}

/// The blocks of a merged layer run as one dense block with zero weights where a block does not
/// read a channel: the result must be bit for bit the blocks' (same products in the same order;
/// the zero ones change no sum), on every path. Compared with the same weights expanded by hand
/// into one dense block, which the kernel runs as given.
#[test]
fn merged_blocks_equal_their_dense_expansion_bitwise() {
    let mut rng = Rng::new(21);
    for (c, hw, rows) in [
        (18, 12, &[14, 2, 2][..]),
        (35, 9, &[29, 3, 3][..]),
        (70, 7, &[58, 6, 6][..]),
        (20, 5, &[16, 2, 2][..]),
    ] {
        let geom = ConvGeometry::new(c, hw, hw, [3, 3], [1, 1], [1, 1]).unwrap();
        let m = rows[0];
        let blocks: Vec<OwnedBlock> = rows
            .iter()
            .enumerate()
            .map(|(i, &r)| OwnedBlock::biased(&mut rng, r, merged_inputs(c, m, i), 9))
            .collect();
        // The dense expansion: row by row, channel by channel, zero where the block skips.
        let out_c: usize = rows.iter().sum();
        let mut weight = vec![0.0f32; out_c * c * 9];
        let mut bias = Vec::new();
        let mut row = 0;
        for b in &blocks {
            let cols: usize = b.inputs.iter().map(|r| r.len()).sum();
            for local in 0..b.rows {
                let mut col = 0;
                for range in &b.inputs {
                    for ch in range.clone() {
                        let src = &b.weight[(local * cols + col) * 9..][..9];
                        weight[(row * c + ch) * 9..][..9].copy_from_slice(src);
                        col += 1;
                    }
                }
                bias.push(b.bias.as_ref().unwrap()[local]);
                row += 1;
            }
        }
        let dense = OwnedBlock {
            weight,
            bias: Some(bias),
            rows: out_c,
            inputs: vec![0..c],
        };
        let batch = 3;
        let x = values(&mut rng, batch * geom.input_len());
        let run = |owned: &[&OwnedBlock]| {
            let views: Vec<BlockRef<'_>> = owned.iter().map(|b| b.view()).collect();
            let mut out = vec![0.0f32; batch * out_c * geom.positions()];
            let mut scratch = vec![0.0f32; block_conv2d_scratch_len(&geom, &views, batch)];
            block_conv2d(&geom, &views, &x, batch, batch, &mut out, &mut scratch).unwrap();
            out
        };
        for_each_path(|path| {
            let apart = run(&blocks.iter().collect::<Vec<_>>());
            let whole = run(&[&dense]);
            let same = apart
                .iter()
                .zip(&whole)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{path}: {c} channels at {hw} x {hw}, rows {rows:?}");
        });
    }
}
