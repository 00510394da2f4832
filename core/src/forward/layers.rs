//! Batched layer kernels over NCHW f32 buffers. None allocates: conv and linear take scratch
//! sized by their `*_scratch_len` query.

use super::ForwardError;
use super::im2col::{ConvGeometry, im2col, im2col_len};
use crate::linalg::{MatMut, MatRef, Op, gemm, gemm_scratch_len};

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

/// Output positions per sample from which [`conv2d`] multiplies each sample straight into its
/// output; smaller maps are batched into one wider product and scattered.
const DIRECT_POSITIONS: usize = 256;

/// Scratch elements [`conv2d`] needs when it processes `chunk` samples per matrix product.
pub fn conv2d_scratch_len(geom: &ConvGeometry, out_c: usize, chunk: usize) -> usize {
    let cols = chunk * geom.positions();
    im2col_len(geom, chunk) + out_c * cols + gemm_scratch_len(out_c, cols, geom.patch_len())
}

/// Convolution of `batch` NCHW samples: `output` (`batch x out_c x out_h x out_w`) gets
/// `W * im2col(input) + bias`, `chunk` samples per GEMM. `weight` is `out_c x patch_len`
/// row-major (the PyTorch layout). `scratch` holds [`conv2d_scratch_len`] elements.
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
    let chunk = chunk.clamp(1, batch.max(1));
    let p = geom.positions();
    let k = geom.patch_len();
    need(
        "conv scratch",
        conv2d_scratch_len(geom, out_c, chunk),
        scratch.len(),
    )?;
    need("conv input", batch * geom.input_len(), input.len())?;
    need("conv output", batch * out_c * p, output.len())?;
    need(
        "conv bias",
        bias.map_or(0, |_| out_c),
        bias.map_or(0, <[f32]>::len),
    )?;
    let w = MatRef::new(weight, out_c, k)?;
    let (cols_buf, rest) = scratch.split_at_mut(im2col_len(geom, chunk));
    let (tmp, gemm_scratch) = rest.split_at_mut(out_c * chunk * p);
    let in_len = geom.input_len();
    let out_len = out_c * p;
    let mut s0 = 0;
    while s0 < batch {
        let s = chunk.min(batch - s0);
        let ncols = s * p;
        im2col(geom, &input[s0 * in_len..], s, cols_buf);
        if p >= DIRECT_POSITIONS {
            // Wide maps: one product per sample straight into its NCHW output (no scatter).
            for si in 0..s {
                let cols = MatRef::from_strided(&cols_buf[si * p..], k, p, ncols, 1)?;
                let out = &mut output[(s0 + si) * out_len..][..out_len];
                let c = MatMut::new(out, out_c, p)?;
                gemm(
                    1.0,
                    w,
                    Op::Identity,
                    cols,
                    Op::Identity,
                    0.0,
                    c,
                    gemm_scratch,
                )?;
                if let Some(b) = bias {
                    for (row, &bo) in out.chunks_exact_mut(p).zip(b) {
                        for v in row {
                            *v += bo;
                        }
                    }
                }
            }
            s0 += s;
            continue;
        }
        let cols = MatRef::new(&cols_buf[..k * ncols], k, ncols)?;
        let c = MatMut::new(&mut tmp[..out_c * ncols], out_c, ncols)?;
        gemm(
            1.0,
            w,
            Op::Identity,
            cols,
            Op::Identity,
            0.0,
            c,
            gemm_scratch,
        )?;
        for si in 0..s {
            let out = &mut output[(s0 + si) * out_len..][..out_len];
            for o in 0..out_c {
                let src = &tmp[o * ncols + si * p..][..p];
                let dst = &mut out[o * p..][..p];
                match bias {
                    Some(b) => {
                        let bo = b[o];
                        for (d, &x) in dst.iter_mut().zip(src) {
                            *d = x + bo;
                        }
                    }
                    None => dst.copy_from_slice(src),
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

/// `output (batch x out_f) = input (batch x in_f) * W^T + bias`, `W` being `out_f x in_f`.
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
    need(
        "linear bias",
        bias.map_or(0, |_| out_f),
        bias.map_or(0, <[f32]>::len),
    )?;
    let x = MatRef::new(input, batch, in_f)?;
    let w = MatRef::new(weight, out_f, in_f)?;
    let y = MatMut::new(output, batch, out_f)?;
    gemm(1.0, x, Op::Identity, w, Op::Transpose, 0.0, y, scratch)?;
    if let Some(b) = bias {
        for row in output[..batch * out_f].chunks_exact_mut(out_f) {
            for (y, &b) in row.iter_mut().zip(b) {
                *y += b;
            }
        }
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

/// `max(x, 0)` in place.
pub fn relu(data: &mut [f32]) {
    for v in data {
        *v = v.max(0.0);
    }
}

/// `acc += x` elementwise.
pub fn add_assign(acc: &mut [f32], x: &[f32]) {
    for (a, &b) in acc.iter_mut().zip(x) {
        *a += b;
    }
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
