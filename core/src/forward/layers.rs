//! Batched layer kernels over NCHW f32 buffers. None allocates: conv and linear take scratch
//! sized by their `*_scratch_len` query.
//!
//! Conv and linear layers may be block-structured ([`BlockRef`], merged models): output rows
//! in consecutive blocks, each reading only some input channel ranges. The dense kernels
//! ([`conv2d`], [`linear`]) are the single-block case of [`block_conv2d`] and
//! [`block_linear`].

use super::ForwardError;
pub use super::block_ref::BlockRef;
use super::direct_conv::{direct_conv, direct_conv_applies, direct_conv_scratch_len};
use super::im2col::{ConvGeometry, im2col, im2col_len};
use super::strided_conv::{strided_conv, strided_conv_applies, strided_conv_scratch_len};
use crate::linalg::{MatMut, MatRef, Transpose, gemm, gemm_scratch_len};

fn need(what: &'static str, needed: usize, provided: usize) -> Result<(), ForwardError> {
    if provided < needed {
        return Err(ForwardError::Buffer {
            what,
            needed,
            provided,
        });
    }
    Ok(())
}

/// Output positions per sample from which [`block_conv2d`] multiplies each sample straight
/// into its output; smaller maps are batched into one wider product and scattered.
const DIRECT_POSITIONS: usize = 256;

/// Output channels of `blocks` (sum of rows, saturating).
fn total_rows(blocks: &[BlockRef<'_>]) -> usize {
    blocks
        .iter()
        .fold(0usize, |acc, b| acc.saturating_add(b.rows))
}

/// Checks every block against a layer of `in_c` inputs whose weight rows hold `per_col`
/// values per input channel (`kh * kw`): ranges within `0..in_c` and ordered, weight and bias
/// long enough.
fn check_blocks(blocks: &[BlockRef<'_>], in_c: usize, per_col: usize) -> Result<(), ForwardError> {
    for (block, b) in blocks.iter().enumerate() {
        for r in b.inputs {
            if r.start > r.end || r.end > in_c {
                return Err(ForwardError::BlockInputs {
                    block,
                    range: r.clone(),
                    channels: in_c,
                });
            }
        }
        let len = b.rows.saturating_mul(b.cols()).saturating_mul(per_col);
        need("block weight", len, b.weight.len())?;
        need(
            "block bias",
            b.bias.map_or(0, |_| b.rows),
            b.bias.map_or(0, <[f32]>::len),
        )?;
    }
    Ok(())
}

/// `dst (rows x n, contiguous) = W_blk * X[block's rows, col0 .. col0 + n]`, one GEMM per input
/// range accumulating into `dst`. `x` is a row-major matrix with `x_stride` columns whose row
/// `c * per_col + j` belongs to input channel `c` (an im2col patch matrix, or a transposed
/// linear input with `per_col = 1`).
fn block_product(
    b: &BlockRef<'_>,
    per_col: usize,
    x: &[f32],
    x_stride: usize,
    col0: usize,
    n: usize,
    dst: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), ForwardError> {
    if b.rows == 0 {
        return Ok(());
    }
    let w_stride = b.cols() * per_col;
    let mut w0 = 0;
    let mut beta = 0.0;
    for r in b.inputs {
        let k = r.len() * per_col;
        if k == 0 {
            continue;
        }
        let a = MatRef::from_strided(&b.weight[w0..], b.rows, k, w_stride, 1)?;
        let xr =
            MatRef::from_strided(&x[r.start * per_col * x_stride + col0..], k, n, x_stride, 1)?;
        let c = MatMut::new(dst, b.rows, n)?;
        gemm(1.0, a, Transpose::No, xr, Transpose::No, beta, c, scratch)?;
        beta = 1.0;
        w0 += k;
    }
    if beta == 0.0 {
        // No input read at all: the block's outputs are its bias alone.
        dst[..b.rows * n].fill(0.0);
    }
    Ok(())
}

/// Scratch elements of a block convolution of `out_c` outputs whose blocks need at most
/// `gemm_len` GEMM scratch.
fn conv_scratch(geom: &ConvGeometry, out_c: usize, chunk: usize, gemm_len: usize) -> usize {
    let cols = chunk.saturating_mul(geom.positions());
    im2col_len(geom, chunk)
        .saturating_add(out_c.saturating_mul(cols))
        .saturating_add(gemm_len)
}

/// Scratch elements [`conv2d`] needs when it processes `chunk` samples per matrix product:
/// those of its one block of every output reading every input channel.
pub fn conv2d_scratch_len(geom: &ConvGeometry, out_c: usize, chunk: usize) -> usize {
    let all = 0..geom.in_c;
    let block = [BlockRef {
        weight: &[],
        bias: None,
        rows: out_c,
        inputs: core::slice::from_ref(&all),
    }];
    block_conv2d_scratch_len(geom, &block, chunk)
}

/// Scratch elements [`block_conv2d`] needs for `blocks` when it processes `chunk` samples per
/// matrix product.
pub fn block_conv2d_scratch_len(
    geom: &ConvGeometry,
    blocks: &[BlockRef<'_>],
    chunk: usize,
) -> usize {
    if direct_conv_applies(geom) {
        return direct_conv_scratch_len(geom, blocks);
    }
    if strided_conv_applies(geom) {
        return strided_conv_scratch_len(geom, blocks);
    }
    let cols = chunk * geom.positions();
    let per_col = geom.kernel[0] * geom.kernel[1];
    let gemm_len = blocks
        .iter()
        .flat_map(|b| {
            b.inputs
                .iter()
                .map(move |r| gemm_scratch_len(b.rows, cols, r.len() * per_col))
        })
        .max()
        .unwrap_or(0);
    conv_scratch(geom, total_rows(blocks), chunk, gemm_len)
}

/// Convolution of `batch` NCHW samples: `output` (`batch x out_c x out_h x out_w`) gets
/// `W * im2col(input) + bias`, `chunk` samples per GEMM. `weight` is `out_c x patch_len`
/// row-major (the PyTorch layout). `scratch` holds [`conv2d_scratch_len`] elements.
///
/// This is [`block_conv2d`] with one block of every output reading every input channel.
pub fn conv2d(
    geom: &ConvGeometry,
    out_c: usize,
    weight: &[f32],
    bias: Option<&[f32]>,
    input: &[f32],
    batch: usize,
    chunk: usize,
    output: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), ForwardError> {
    let all = 0..geom.in_c;
    let block = [BlockRef {
        weight,
        bias,
        rows: out_c,
        inputs: core::slice::from_ref(&all),
    }];
    block_conv2d(geom, &block, input, batch, chunk, output, scratch)
}

/// Block-structured convolution of `batch` NCHW samples: the output channels are the blocks'
/// rows stacked in order (`out_c` = their sum), each block computed from its input channel
/// ranges only, `chunk` samples per matrix product. The patch matrix of a chunk is unfolded
/// once; its rows are channel-major, so an input range `r` is the row range
/// `r.start * kh * kw .. r.end * kh * kw`, multiplied by the block's matching weight columns
/// (one GEMM per range, accumulating). `scratch` holds [`block_conv2d_scratch_len`] elements.
pub fn block_conv2d(
    geom: &ConvGeometry,
    blocks: &[BlockRef<'_>],
    input: &[f32],
    batch: usize,
    chunk: usize,
    output: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), ForwardError> {
    let chunk = chunk.clamp(1, batch.max(1));
    let p = geom.positions();
    let per_col = geom.kernel[0] * geom.kernel[1];
    let out_c = total_rows(blocks);
    check_blocks(blocks, geom.in_c, per_col)?;
    let in_len = geom.input_len();
    let out_len = out_c.saturating_mul(p);
    // Input and output first: once they fit, every size below is bounded by a real buffer.
    need("conv input", batch.saturating_mul(in_len), input.len())?;
    need("conv output", batch.saturating_mul(out_len), output.len())?;
    need(
        "conv scratch",
        block_conv2d_scratch_len(geom, blocks, chunk),
        scratch.len(),
    )?;
    if direct_conv_applies(geom) {
        direct_conv(geom, blocks, input, batch, output, scratch);
        return Ok(());
    }
    if strided_conv_applies(geom) {
        strided_conv(geom, blocks, input, batch, output, scratch);
        return Ok(());
    }
    let (cols_buf, rest) = scratch.split_at_mut(im2col_len(geom, chunk));
    let (tmp, gemm_scratch) = rest.split_at_mut(out_c * chunk * p);
    let mut s0 = 0;
    while s0 < batch {
        let s = chunk.min(batch - s0);
        let ncols = s * p;
        im2col(geom, &input[s0 * in_len..], s, cols_buf);
        if p >= DIRECT_POSITIONS {
            // Wide maps: one product per sample and range straight into the NCHW output (no
            // scatter).
            for si in 0..s {
                let out = &mut output[(s0 + si) * out_len..][..out_len];
                let mut r0 = 0;
                for b in blocks {
                    let dst = &mut out[r0 * p..][..b.rows * p];
                    block_product(b, per_col, cols_buf, ncols, si * p, p, dst, gemm_scratch)?;
                    if let Some(bias) = b.bias {
                        for (row, &bo) in dst.chunks_exact_mut(p).zip(bias) {
                            for v in row {
                                *v += bo;
                            }
                        }
                    }
                    r0 += b.rows;
                }
            }
            s0 += s;
            continue;
        }
        let mut r0 = 0;
        for b in blocks {
            let dst = &mut tmp[r0 * ncols..][..b.rows * ncols];
            block_product(b, per_col, cols_buf, ncols, 0, ncols, dst, gemm_scratch)?;
            r0 += b.rows;
        }
        for si in 0..s {
            let out = &mut output[(s0 + si) * out_len..][..out_len];
            let mut o = 0;
            for b in blocks {
                for local in 0..b.rows {
                    let src = &tmp[o * ncols + si * p..][..p];
                    let dst = &mut out[o * p..][..p];
                    match b.bias {
                        Some(bias) => {
                            let bo = bias[local];
                            for (d, &x) in dst.iter_mut().zip(src) {
                                *d = x + bo;
                            }
                        }
                        None => dst.copy_from_slice(src),
                    }
                    o += 1;
                }
            }
        }
        s0 += s;
    }
    Ok(())
}

/// Scratch elements [`linear`] needs for `batch` samples.
pub fn linear_scratch_len(batch: usize, in_f: usize, out_f: usize) -> usize {
    gemm_scratch_len(batch, out_f, in_f)
}

/// Scratch elements [`block_linear`] needs for `batch` samples.
pub fn block_linear_scratch_len(batch: usize, blocks: &[BlockRef<'_>]) -> usize {
    blocks
        .iter()
        .flat_map(|b| {
            b.inputs
                .iter()
                .map(move |r| gemm_scratch_len(batch, b.rows, r.len()))
        })
        .max()
        .unwrap_or(0)
}

/// `output (batch x out_f) = input (batch x in_f) * W^T + bias`, `W` being `out_f x in_f`.
///
/// This is [`block_linear`] with one block of every output reading every input feature.
pub fn linear(
    weight: &[f32],
    bias: Option<&[f32]>,
    in_f: usize,
    out_f: usize,
    input: &[f32],
    batch: usize,
    output: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), ForwardError> {
    let all = 0..in_f;
    let block = [BlockRef {
        weight,
        bias,
        rows: out_f,
        inputs: core::slice::from_ref(&all),
    }];
    block_linear(&block, in_f, input, batch, output, scratch)
}

/// Block-structured linear layer: `output` (`batch x out_f`, `out_f` the sum of the blocks'
/// rows) gets, for each block occupying output columns `o0 .. o0 + rows`,
/// `Y[:, o0..] = sum over its ranges r of X[:, r] * W_blk[:, cols of r]^T + bias` (strided
/// views, one GEMM per range). `input` is `batch x in_f`; `scratch` holds
/// [`block_linear_scratch_len`] elements.
pub fn block_linear(
    blocks: &[BlockRef<'_>],
    in_f: usize,
    input: &[f32],
    batch: usize,
    output: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), ForwardError> {
    let out_f = total_rows(blocks);
    check_blocks(blocks, in_f, 1)?;
    need("linear input", batch.saturating_mul(in_f), input.len())?;
    need("linear output", batch.saturating_mul(out_f), output.len())?;
    need(
        "linear scratch",
        block_linear_scratch_len(batch, blocks),
        scratch.len(),
    )?;
    if batch == 0 {
        return Ok(());
    }
    let mut o0 = 0;
    for b in blocks {
        if b.rows == 0 {
            continue;
        }
        let cols = b.cols();
        let mut w0 = 0;
        let mut beta = 0.0;
        for r in b.inputs {
            if r.is_empty() {
                continue;
            }
            let x = MatRef::from_strided(&input[r.start..], batch, r.len(), in_f, 1)?;
            let w = MatRef::from_strided(&b.weight[w0..], b.rows, r.len(), cols, 1)?;
            let y = MatMut::from_strided(&mut output[o0..], batch, b.rows, out_f, 1)?;
            gemm(1.0, x, Transpose::No, w, Transpose::Yes, beta, y, scratch)?;
            beta = 1.0;
            w0 += r.len();
        }
        let rows = output[..batch * out_f]
            .chunks_exact_mut(out_f)
            .map(|row| &mut row[o0..o0 + b.rows]);
        match (b.bias, beta == 0.0) {
            (Some(bias), true) => rows.for_each(|y| y.copy_from_slice(&bias[..y.len()])),
            (Some(bias), false) => rows.for_each(|y| {
                for (y, &bo) in y.iter_mut().zip(bias) {
                    *y += bo;
                }
            }),
            (None, true) => rows.for_each(|y| y.fill(0.0)),
            (None, false) => {}
        }
        o0 += b.rows;
    }
    Ok(())
}

/// Per-channel affine map in place: `x[n, c, ..] = x[n, c, ..] * scale[c] + shift[c]`
/// (eval-mode batch-norm after [`batchnorm_coefficients`]).
pub fn channel_affine(
    data: &mut [f32],
    channels: usize,
    plane: usize,
    scale: &[f32],
    shift: &[f32],
) {
    if channels == 0 || plane == 0 {
        return;
    }
    for sample in data.chunks_exact_mut(channels * plane) {
        for (c, x) in sample.chunks_exact_mut(plane).enumerate() {
            let (a, b) = (scale[c], shift[c]);
            for v in x {
                *v = *v * a + b;
            }
        }
    }
}

/// Eval-mode batch-norm as `scale * x + shift`: `scale = gamma / sqrt(var + eps)`,
/// `shift = beta - mean * scale` (computed in f64, rounded to f32).
pub fn batchnorm_coefficients(
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
    scale: &mut [f32],
    shift: &mut [f32],
) {
    for c in 0..gamma.len() {
        let s = gamma[c] as f64 / libm::sqrt(var[c] as f64 + eps as f64);
        scale[c] = s as f32;
        shift[c] = (beta[c] as f64 - mean[c] as f64 * s) as f32;
    }
}

/// `max(x, 0)` in place (NaN becomes 0).
///
/// On x86-64 the loop runs with the selected SIMD path's vectors (`simd::vectorised`):
/// there `f32::max(x, 0.0)` has always compiled to `maxps(x, 0)`, which is `x > 0 ? x : +0`
/// for every `x` (NaN and -0 included), so the loop spells out that select, which every
/// vector width computes the same. Elsewhere (the device) it stays `f32::max`, bit for bit.
pub fn relu(data: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    crate::simd::vectorised(
        #[inline(always)]
        || {
            for v in data.iter_mut() {
                *v = if *v > 0.0 { *v } else { 0.0 };
            }
        },
    );
    #[cfg(not(target_arch = "x86_64"))]
    for v in data {
        *v = v.max(0.0);
    }
}

/// `acc += x` elementwise, with the selected SIMD path's vectors.
pub fn add_assign(acc: &mut [f32], x: &[f32]) {
    crate::simd::vectorised(
        #[inline(always)]
        || {
            for (a, &b) in acc.iter_mut().zip(x) {
                *a += b;
            }
        },
    );
}

/// Max (`is_max`) or average (count including padding) pooling of `batch` samples.
pub fn pool2d(geom: &ConvGeometry, is_max: bool, input: &[f32], batch: usize, output: &mut [f32]) {
    let (kh, kw) = (geom.kernel[0], geom.kernel[1]);
    let area = (kh * kw) as f32;
    let plane_in = geom.in_h * geom.in_w;
    let plane_out = geom.positions();
    for plane in 0..batch * geom.in_c {
        let src = &input[plane * plane_in..][..plane_in];
        let dst = &mut output[plane * plane_out..][..plane_out];
        for oy in 0..geom.out_h {
            for ox in 0..geom.out_w {
                let mut acc = if is_max { f32::NEG_INFINITY } else { 0.0 };
                for ky in 0..kh {
                    let iy = (oy * geom.stride[0] + ky) as isize - geom.padding[0] as isize;
                    if iy < 0 || iy as usize >= geom.in_h {
                        continue;
                    }
                    for kx in 0..kw {
                        let ix = (ox * geom.stride[1] + kx) as isize - geom.padding[1] as isize;
                        if ix < 0 || ix as usize >= geom.in_w {
                            continue;
                        }
                        let v = src[iy as usize * geom.in_w + ix as usize];
                        if is_max {
                            acc = acc.max(v);
                        } else {
                            acc += v;
                        }
                    }
                }
                dst[oy * geom.out_w + ox] = if is_max { acc } else { acc / area };
            }
        }
    }
}

/// Mean over each `plane`-element channel plane: `output[n, c] = mean(input[n, c, ..])`.
pub fn global_avg_pool(input: &[f32], planes: usize, plane: usize, output: &mut [f32]) {
    let inv = 1.0 / plane as f32;
    for (o, x) in output[..planes].iter_mut().zip(input.chunks_exact(plane)) {
        *o = x.iter().sum::<f32>() * inv;
    }
}
