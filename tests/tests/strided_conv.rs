//! The direct strided convolution that `block_conv2d` dispatches to (phases of the padded
//! input planes): bit for bit what im2col + GEMM gave before it (the merge's bytes depend on
//! it), over random geometries, blocks, input ranges and depths beyond every path's GEMM depth
//! slice, on every path; against its scalar f64 twin; and the twin against nalgebra's f64
//! product of the weight with the unfolded patch matrix.

// Blocks read lists of channel ranges; a list of one range is the common case.
#![allow(clippy::single_range_in_vec_init)]

use pleas_core::forward::direct_conv::{MAX_TAPS, direct_conv_reference};
use pleas_core::forward::im2col::{ConvGeometry, im2col, im2col_len};
use pleas_core::forward::layers::{BlockRef, block_conv2d, block_conv2d_scratch_len};
use pleas_core::forward::strided_conv::{strided_conv_applies, strided_conv_scratch_len};
use pleas_core::linalg::{MatMut, MatRef, Transpose, gemm, gemm_scratch_len};
use pleas_tests::conv_blocks::{OwnedBlock, max_abs, merged_inputs, twin_against_nalgebra, values};
use pleas_tests::rng::Rng;
use pleas_tests::simd_paths::for_each_path;
use pleas_tests::tolerance::KERNEL_VS_NAIVE_REL;
use proptest::prelude::*;

/// What `block_conv2d` computed for strided windows before the direct kernel: per sample the
/// patch matrix, per block one GEMM per input range accumulating (`beta` 0, then 1), then
/// the bias added.
fn im2col_gemm(geom: &ConvGeometry, blocks: &[BlockRef<'_>], x: &[f32], batch: usize) -> Vec<f32> {
    let (p, taps) = (geom.positions(), geom.kernel[0] * geom.kernel[1]);
    let out_c: usize = blocks.iter().map(|b| b.rows).sum();
    let mut out = vec![0.0f32; batch * out_c * p];
    let mut cols = vec![0.0f32; im2col_len(geom, 1)];
    for s in 0..batch {
        im2col(geom, &x[s * geom.input_len()..], 1, &mut cols);
        let mut r0 = 0;
        for b in blocks {
            let dst = &mut out[(s * out_c + r0) * p..][..b.rows * p];
            let w_stride = b.inputs.iter().map(|r| r.len()).sum::<usize>() * taps;
            let (mut w0, mut beta) = (0, 0.0);
            for r in b.inputs {
                let k = r.len() * taps;
                if k == 0 {
                    continue;
                }
                let a = MatRef::from_strided(&b.weight[w0..], b.rows, k, w_stride, 1).unwrap();
                let xr = MatRef::new(&cols[r.start * taps * p..][..k * p], k, p).unwrap();
                let mut scratch = vec![0.0f32; gemm_scratch_len(b.rows, p, k)];
                let c = MatMut::new(dst, b.rows, p).unwrap();
                gemm(
                    1.0,
                    a,
                    Transpose::No,
                    xr,
                    Transpose::No,
                    beta,
                    c,
                    &mut scratch,
                )
                .unwrap();
                beta = 1.0;
                w0 += k;
            }
            if beta == 0.0 {
                dst.fill(0.0);
            }
            if let Some(bias) = b.bias {
                for (row, &bo) in dst.chunks_exact_mut(p).zip(bias) {
                    row.iter_mut().for_each(|v| *v += bo);
                }
            }
            r0 += b.rows;
        }
    }
    out
}

/// Runs `block_conv2d` on every path: bit for bit im2col + GEMM on that path, and within the
/// kernel tolerance of the scalar twin.
fn check(geom: &ConvGeometry, blocks: &[OwnedBlock], batch: usize, rng: &mut Rng) {
    assert!(strided_conv_applies(geom), "{geom:?}");
    let views: Vec<BlockRef<'_>> = blocks.iter().map(OwnedBlock::view).collect();
    let out_c: usize = blocks.iter().map(|b| b.rows).sum();
    let x = values(rng, batch * geom.input_len());
    let len = block_conv2d_scratch_len(geom, &views, batch);
    assert_eq!(len, strided_conv_scratch_len(geom, &views));
    let mut twin = vec![0.0f32; batch * out_c * geom.positions()];
    direct_conv_reference(geom, &views, &x, batch, &mut twin);
    let scale = max_abs(&twin).max(f32::MIN_POSITIVE);
    for_each_path(|path| {
        // Dirty scratch and output: the kernel must not depend on their contents.
        let mut got = vec![f32::NAN; twin.len()];
        let mut scratch = vec![f32::NAN; len];
        block_conv2d(geom, &views, &x, batch, batch, &mut got, &mut scratch).unwrap();
        let want = im2col_gemm(geom, &views, &x, batch);
        let first = got
            .iter()
            .zip(&want)
            .position(|(a, b)| a.to_bits() != b.to_bits());
        assert!(
            first.is_none(),
            "{path}: {geom:?}: differs from im2col + GEMM at {first:?}"
        );
        let diff = got
            .iter()
            .zip(&twin)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= KERNEL_VS_NAIVE_REL * scale,
            "{path}: {geom:?}: max diff {diff} from the twin, of scale {scale}"
        );
    });
}

proptest! {
    #![proptest_config(pleas_tests::config(48))]

    /// Random strided geometries and blocks (depths up to 14 x 25 = 350, beyond the GEMM's
    /// depth slice on every path): im2col + GEMM's bits, and the twin's values.
    #[test]
    fn kernel_equals_im2col_gemm_and_matches_the_twin(
        in_c in 1usize..15, h in 1usize..14, w in 1usize..20, kh in 1usize..6, kw in 1usize..6,
        sy in 1usize..4, sx in 1usize..4, ph in 0usize..3, pw in 0usize..3,
        blocks in 1usize..4, batch in 1usize..3, seed in 0u64..10_000,
    ) {
        let taps = kh * kw;
        prop_assume!((sy, sx) != (1, 1) && taps <= MAX_TAPS);
        let pad = [ph.min(kh - 1), pw.min(kw - 1)];
        let Some(geom) = ConvGeometry::new(in_c, h, w, [kh, kw], [sy, sx], pad) else {
            return Ok(());
        };
        let mut rng = Rng::new(seed);
        let owned = OwnedBlock::random_layer(&mut rng, blocks, in_c, taps);
        check(&geom, &owned, batch, &mut rng);
    }

    /// The scalar twin of a dense strided layer equals nalgebra's f64 product
    /// `W * im2col(x) + b`.
    #[test]
    fn twin_matches_nalgebra(
        in_c in 1usize..5, h in 2usize..12, w in 2usize..12, k in 1usize..4, s in 2usize..4,
        p in 0usize..2, out_c in 1usize..7, seed in 0u64..10_000,
    ) {
        let Some(geom) = ConvGeometry::new(in_c, h, w, [k, k], [s, s], [p.min(k - 1); 2]) else {
            return Ok(());
        };
        twin_against_nalgebra(&geom, out_c, seed)?;
    }
}

/// The strided layers of the ResNet-20 merges (3 x 3 and 1 x 1 at stride 2 from 32 x 32 and
/// 16 x 16, 28 x 28 and 14 x 14; merged-model blocks `[merged | A's own | B's own]` whose
/// depths cross the GEMM's depth slice): im2col + GEMM's bits on every path.
#[test]
fn resnet_strided_layers_equal_im2col_gemm() {
    let mut rng = Rng::new(22);
    for (c, hw, k, pad, rows) in [
        (16, 32, 3, 1, &[32][..]),
        (32, 16, 3, 1, &[64][..]),
        (16, 32, 1, 0, &[32][..]),
        (32, 16, 1, 0, &[64][..]),
        (19, 28, 3, 1, &[27, 5, 5][..]),
        (38, 14, 3, 1, &[58, 6, 6][..]),
        (38, 14, 1, 0, &[58, 6, 6][..]),
    ] {
        let geom = ConvGeometry::new(c, hw, hw, [k, k], [2, 2], [pad, pad]).unwrap();
        let m = c * 5 / 6;
        let owned: Vec<OwnedBlock> = rows
            .iter()
            .enumerate()
            .map(|(i, &r)| OwnedBlock::random(&mut rng, r, merged_inputs(c, m, i), k * k))
            .collect();
        check(&geom, &owned, 2, &mut rng);
    }
}
