//! Patch unfolding (im2col) for convolution as a matrix product.
//!
//! For a chunk of `s` samples of a `C x H x W` input, the patch matrix is row-major
//! `(C * kh * kw) x (s * oh * ow)`: row `(c, ky, kx)`, column `(sample, oy, ox)`, element
//! `x[sample, c, oy * sh + ky - ph, ox * sw + kx - pw]` or zero where that falls in the padding.
//! Then `out[o, (sample, oy, ox)] = sum_r W[o, r] * patches[r, (sample, oy, ox)]` with the
//! PyTorch weight `W` (`out x C x kh x kw`) read as an `out x (C * kh * kw)` matrix.

use crate::window::{Pair, window_out};

/// The geometry of one 2-D convolution (or pooling window) over one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Input channels.
    pub in_c: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Kernel `[kh, kw]`.
    pub kernel: Pair,
    /// Stride `[sh, sw]`.
    pub stride: Pair,
    /// Padding `[ph, pw]`.
    pub padding: Pair,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
}

impl ConvGeometry {
    /// The geometry of a window over a `in_c x in_h x in_w` input, or `None` if the window
    /// does not fit (zero kernel or stride, or kernel larger than the padded input).
    pub fn new(
        in_c: usize,
        in_h: usize,
        in_w: usize,
        kernel: Pair,
        stride: Pair,
        padding: Pair,
    ) -> Option<Self> {
        Some(Self {
            in_c,
            in_h,
            in_w,
            kernel,
            stride,
            padding,
            out_h: window_out(in_h, kernel[0], stride[0], padding[0])?,
            out_w: window_out(in_w, kernel[1], stride[1], padding[1])?,
        })
    }

    /// Rows of the patch matrix, `in_c * kh * kw`.
    pub fn patch_len(&self) -> usize {
        self.in_c * self.kernel[0] * self.kernel[1]
    }

    /// Output positions per sample, `out_h * out_w`.
    pub fn positions(&self) -> usize {
        self.out_h * self.out_w
    }

    /// Input elements per sample.
    pub fn input_len(&self) -> usize {
        self.in_c * self.in_h * self.in_w
    }
}

/// Elements of the patch matrix of `samples` samples.
pub fn im2col_len(geom: &ConvGeometry, samples: usize) -> usize {
    geom.patch_len() * samples * geom.positions()
}

/// Unfolds `samples` consecutive samples of `input` (NCHW, starting at the first sample of the
/// slice) into `cols` (at least [`im2col_len`] elements), layout as in the module docs.
/// Panics if a slice is too short (callers size them with the `*_len` queries).
pub fn im2col(geom: &ConvGeometry, input: &[f32], samples: usize, cols: &mut [f32]) {
    let (kh, kw) = (geom.kernel[0], geom.kernel[1]);
    let (sh, sw) = (geom.stride[0], geom.stride[1]);
    let (ph, pw) = (geom.padding[0] as isize, geom.padding[1] as isize);
    let (oh, ow) = (geom.out_h, geom.out_w);
    let (ih, iw) = (geom.in_h as isize, geom.in_w as isize);
    let plane = geom.in_h * geom.in_w;
    let width = samples * oh * ow;
    let input = &input[..samples * geom.input_len()];
    let cols = &mut cols[..geom.patch_len() * width];
    for c in 0..geom.in_c {
        for ky in 0..kh {
            for kx in 0..kw {
                let row = (c * kh + ky) * kw + kx;
                let dst_row = &mut cols[row * width..(row + 1) * width];
                for s in 0..samples {
                    let src_plane = &input[(s * geom.in_c + c) * plane..][..plane];
                    for oy in 0..oh {
                        let dst = &mut dst_row[(s * oh + oy) * ow..][..ow];
                        let iy = (oy * sh) as isize + ky as isize - ph;
                        if iy < 0 || iy >= ih {
                            dst.fill(0.0);
                            continue;
                        }
                        let src = &src_plane[iy as usize * geom.in_w..][..geom.in_w];
                        let x0 = kx as isize - pw;
                        if sw == 1 {
                            // Contiguous: zeros left of the input, a copy, zeros right of it.
                            let lo = (-x0).clamp(0, ow as isize) as usize;
                            let hi = (iw - x0).clamp(lo as isize, ow as isize) as usize;
                            dst[..lo].fill(0.0);
                            if hi > lo {
                                let start = (lo as isize + x0) as usize;
                                dst[lo..hi].copy_from_slice(&src[start..start + hi - lo]);
                            }
                            dst[hi..].fill(0.0);
                        } else {
                            for (ox, d) in dst.iter_mut().enumerate() {
                                let ix = (ox * sw) as isize + x0;
                                *d = if ix < 0 || ix >= iw {
                                    0.0
                                } else {
                                    src[ix as usize]
                                };
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Elements of the row-major patch matrix of `samples` samples with rows of `row_len`
/// (at least [`ConvGeometry::patch_len`]) values.
pub fn im2row_len(geom: &ConvGeometry, samples: usize, row_len: usize) -> usize {
    samples * geom.positions() * row_len
}

/// The transpose of [`im2col`]: one row per output position (`(sample, oy, ox)`, rows
/// `row_len` apart), holding that position's patch in columns `(c, ky, kx)`; the columns of a
/// row past [`ConvGeometry::patch_len`] are left untouched (room for a bias column).
/// This is the layout of samples the Gram accumulator reads fastest. Panics if a slice is too
/// short (callers size them with [`im2row_len`]) or `row_len < patch_len`.
pub fn im2row(
    geom: &ConvGeometry,
    input: &[f32],
    samples: usize,
    row_len: usize,
    rows: &mut [f32],
) {
    let (kh, kw) = (geom.kernel[0], geom.kernel[1]);
    let (sh, sw) = (geom.stride[0], geom.stride[1]);
    let (ph, pw) = (geom.padding[0] as isize, geom.padding[1] as isize);
    let (oh, ow) = (geom.out_h, geom.out_w);
    let (ih, iw) = (geom.in_h as isize, geom.in_w as isize);
    let plane = geom.in_h * geom.in_w;
    assert!(
        row_len >= geom.patch_len(),
        "row_len below the patch length"
    );
    let input = &input[..samples * geom.input_len()];
    let rows = &mut rows[..im2row_len(geom, samples, row_len)];
    for s in 0..samples {
        let sample = &input[s * geom.input_len()..][..geom.input_len()];
        for oy in 0..oh {
            for ox in 0..ow {
                let r = (s * oh + oy) * ow + ox;
                let row = &mut rows[r * row_len..][..geom.patch_len()];
                for c in 0..geom.in_c {
                    let src_plane = &sample[c * plane..][..plane];
                    for ky in 0..kh {
                        let dst = &mut row[(c * kh + ky) * kw..][..kw];
                        let iy = (oy * sh) as isize + ky as isize - ph;
                        if iy < 0 || iy >= ih {
                            dst.fill(0.0);
                            continue;
                        }
                        let src = &src_plane[iy as usize * geom.in_w..][..geom.in_w];
                        let x0 = (ox * sw) as isize - pw;
                        if x0 >= 0 && x0 + kw as isize <= iw {
                            dst.copy_from_slice(&src[x0 as usize..x0 as usize + kw]);
                        } else {
                            for (kx, d) in dst.iter_mut().enumerate() {
                                let ix = x0 + kx as isize;
                                *d = if ix < 0 || ix >= iw {
                                    0.0
                                } else {
                                    src[ix as usize]
                                };
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Scalar twin of [`im2col`]: element by element from the definition.
pub fn im2col_reference(geom: &ConvGeometry, input: &[f32], samples: usize, cols: &mut [f32]) {
    let (kh, kw) = (geom.kernel[0], geom.kernel[1]);
    let width = samples * geom.positions();
    for c in 0..geom.in_c {
        for ky in 0..kh {
            for kx in 0..kw {
                let row = (c * kh + ky) * kw + kx;
                for s in 0..samples {
                    for oy in 0..geom.out_h {
                        for ox in 0..geom.out_w {
                            let iy = (oy * geom.stride[0] + ky) as isize - geom.padding[0] as isize;
                            let ix = (ox * geom.stride[1] + kx) as isize - geom.padding[1] as isize;
                            let inside = iy >= 0
                                && ix >= 0
                                && (iy as usize) < geom.in_h
                                && (ix as usize) < geom.in_w;
                            let v = if inside {
                                input[((s * geom.in_c + c) * geom.in_h + iy as usize) * geom.in_w
                                    + ix as usize]
                            } else {
                                0.0
                            };
                            cols[row * width + (s * geom.out_h + oy) * geom.out_w + ox] = v;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    #[test]
    fn matches_reference_over_strides_and_paddings() {
        for &(c, h, w, k, s, p) in &[
            (1, 5, 5, 3, 1, 1),
            (2, 7, 6, 3, 2, 1),
            (3, 4, 9, 1, 2, 0),
            (2, 8, 8, 7, 2, 3),
            (1, 3, 3, 3, 1, 2),
        ] {
            let g = ConvGeometry::new(c, h, w, [k, k], [s, s], [p, p]).unwrap();
            // Under Miri (`scripts/miri.sh`), one sample per geometry.
            let samples = if cfg!(miri) { 1 } else { 3 };
            let input: vec::Vec<f32> = (0..samples * g.input_len())
                .map(|i| i as f32 + 1.0)
                .collect();
            let mut a = vec![f32::NAN; im2col_len(&g, samples)];
            let mut b = vec![f32::NAN; im2col_len(&g, samples)];
            im2col(&g, &input, samples, &mut a);
            im2col_reference(&g, &input, samples, &mut b);
            assert_eq!(a, b, "c{c} {h}x{w} k{k} s{s} p{p}");
        }
    }
}
