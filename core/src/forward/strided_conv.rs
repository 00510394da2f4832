//! Direct convolution of strided windows, without a patch matrix, summing as the GEMM does.
//!
//! A stride-`s` window reads every `s`-th value of a row, so the flat-plane trick of
//! [`super::direct_conv`] does not apply as is. Split each zero-padded input plane into its
//! `sy x sx` *phases* instead: phase `(a, b)` holds the padded values at rows `a, a + sy, ..`
//! and columns `b, b + sx, ..`, rows of `wq = ceil(padded width / sx)` values. Output
//! `(oy, ox)` at flat position `q = oy * wq + ox` reads tap `(ky, kx)` at
//! `q + (ky / sy) * wq + kx / sx` of phase `(ky % sy, kx % sx)`: every tap is again a
//! contiguous slice, of one phase, and the register tiles of the stride-1 kernel apply (the
//! columns `out_w .. wq` of each row are dropped when the rows are copied to the NCHW output).
//! Only the phases some tap reads are kept: `a < min(sy, kh)`, `b < min(sx, kw)` (one for a
//! 1 x 1 window).
//!
//! The strided convolutions ran as im2col + GEMM, and the merge's bytes must not change, so
//! each output is summed exactly as [`crate::linalg::gemm()`] sums it: per input range of a
//! block (one GEMM each), the depth `(channel, tap)` is cut into slices of the selected path's
//! `KC` values, each slice summed from zero by fused multiply-adds in depth order, the slices'
//! sums added in order into the range's sum, and the ranges' sums added in order into the
//! output (from zero); then the bias, if any, is added. [`strided_conv_applies`] says which
//! geometries take this path; [`super::direct_conv::direct_conv_reference`] is the scalar twin
//! (it takes any stride), and the tests also compare with im2col + GEMM bit for bit.

use core::ops::Range;

use super::block_ref::BlockRef;
use super::direct_conv::{
    LANES, MAX_TAPS, add_row, copy_row, group_sizes, pack_weights, store, tile_rows,
};
use super::im2col::ConvGeometry;
use crate::linalg::blocked::depth_slice;
use crate::simd;
use crate::simd::lanes::F32Lanes;

/// Whether `strided_conv` handles `geom`: a stride above 1 on some axis and a window of at
/// most [`MAX_TAPS`] taps.
pub fn strided_conv_applies(geom: &ConvGeometry) -> bool {
    let taps = geom.kernel[0] * geom.kernel[1];
    geom.stride != [1, 1] && geom.stride[0] >= 1 && geom.stride[1] >= 1 && taps <= MAX_TAPS
}

/// The phases of one input channel, flattened one after another.
#[derive(Debug, Clone, Copy)]
struct Phases {
    /// Row length of a phase, `ceil((in_w + 2 pw) / sx)`.
    wq: usize,
    /// Flat output positions computed: `out_h * wq` rounded up to whole vectors.
    q: usize,
    /// Length of one phase: every tap of every computed position lies inside.
    len: usize,
    /// Phase columns kept, `min(sx, kw)` (and rows, `min(sy, kh)`).
    cols: usize,
    rows: usize,
}

impl Phases {
    fn of(geom: &ConvGeometry) -> Self {
        let [sy, sx] = geom.stride;
        let wq = (geom.in_w + 2 * geom.padding[1]).div_ceil(sx);
        let q = (geom.out_h * wq).div_ceil(LANES) * LANES;
        let len = q + (geom.kernel[0] - 1) / sy * wq + (geom.kernel[1] - 1) / sx;
        Self {
            wq,
            q,
            len,
            cols: sx.min(geom.kernel[1]),
            rows: sy.min(geom.kernel[0]),
        }
    }

    /// Values per channel (all its kept phases).
    fn channel_len(self) -> usize {
        self.rows * self.cols * self.len
    }
}

/// Scratch elements `strided_conv` needs for `blocks` over `geom`: the phases of one sample,
/// the repacked weights and one sample's flat output rows.
pub fn strided_conv_scratch_len(geom: &ConvGeometry, blocks: &[BlockRef<'_>]) -> usize {
    let ph = Phases::of(geom);
    let taps = geom.kernel[0] * geom.kernel[1];
    let rows: usize = blocks.iter().map(|b| b.rows).sum();
    let weights: usize = blocks.iter().map(|b| b.rows * b.cols() * taps).sum();
    geom.in_c * ph.channel_len() + weights + rows * ph.q
}

/// The sum over depth steps `steps` of one input range (step `(c - first) * taps + tap`) for
/// `G` output rows x `V` vectors at flat position `q0`, from zero, in step order. `weights`
/// holds `G` values per step from `steps.start` on.
///
/// Safety: `S` is the vector type of the selected SIMD path.
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn slice_sum<S: F32Lanes, const G: usize, const V: usize>(
    planes: &[f32],
    channel_len: usize,
    first: usize,
    offsets: &[usize],
    weights: &[f32],
    steps: Range<usize>,
    q0: usize,
) -> [[S; V]; G] {
    let taps = offsets.len();
    let span = offsets.iter().max().copied().unwrap_or(0) + V * S::LANES;
    let n = steps.len();
    assert!(weights.len() >= n * G, "packed weights cover the slice");
    let (c0, c1) = (first + steps.start / taps, first + (steps.end - 1) / taps);
    assert!(
        c1 * channel_len + q0 + span <= planes.len(),
        "windows inside the phases"
    );
    // SAFETY: the caller runs on the path of `S`; every channel's window (`span` values from
    // `c * channel_len + q0`, `c0 <= c <= c1`) lies inside `planes` (asserted above) and every
    // load reads `off + v * LANES .. + LANES <= span` of it; the weights hold `G` values per
    // step (asserted above).
    unsafe {
        let mut acc = [[S::zero(); V]; G];
        let mut w = weights.as_ptr();
        let mut base = planes.as_ptr().add(c0 * channel_len + q0);
        let mut tap = steps.start % taps;
        for _ in 0..n {
            let off = *offsets.get_unchecked(tap);
            let mut x = [S::zero(); V];
            for (v, xv) in x.iter_mut().enumerate() {
                *xv = S::load_at(base.add(off + v * S::LANES));
            }
            for m in 0..G {
                let wm = S::splat(*w.add(m));
                for v in 0..V {
                    acc[m][v] = wm.mul_add(x[v], acc[m][v]);
                }
            }
            w = w.add(G);
            tap += 1;
            if tap == taps {
                tap = 0;
                base = base.add(channel_len);
            }
        }
        acc
    }
}

/// `acc[m][v] += x[m][v]` for a whole tile.
///
/// Safety: `S` is the vector type of the selected SIMD path.
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn add_tile<S: F32Lanes, const G: usize, const V: usize>(
    acc: &mut [[S; V]; G],
    x: &[[S; V]; G],
) {
    for (a, x) in acc.iter_mut().zip(x) {
        for (a, &x) in a.iter_mut().zip(x) {
            // SAFETY: forwarded to the caller.
            *a = unsafe { a.add(x) };
        }
    }
}

/// What every sample of one call shares.
#[derive(Clone, Copy)]
struct Layer<'a> {
    geom: &'a ConvGeometry,
    phases: Phases,
    blocks: &'a [BlockRef<'a>],
    offsets: &'a [usize],
    packed: &'a [f32],
    /// Depth values per slice ([`depth_slice`] of the path).
    slice: usize,
}

/// One tile of `G` rows of `block` x `V` vectors at `q0`, summed as the GEMM sums it.
///
/// Safety: `S` is the vector type of the selected SIMD path.
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn tile<S: F32Lanes, const G: usize, const V: usize>(
    a: Layer<'_>,
    planes: &[f32],
    block: &BlockRef<'_>,
    weights: &[f32],
    q0: usize,
) -> [[S; V]; G] {
    let taps = a.offsets.len();
    let cl = a.phases.channel_len();
    // SAFETY (every block below): forwarded to the caller.
    let mut out = unsafe { [[S::zero(); V]; G] };
    let mut w0 = 0;
    for range in block.inputs {
        let depth = range.len() * taps;
        if depth == 0 {
            continue;
        }
        let mut sum = unsafe { [[S::zero(); V]; G] };
        let mut k0 = 0;
        while k0 < depth {
            let k1 = (k0 + a.slice).min(depth);
            let w = &weights[(w0 + k0) * G..];
            let part =
                unsafe { slice_sum::<S, G, V>(planes, cl, range.start, a.offsets, w, k0..k1, q0) };
            unsafe { add_tile(&mut sum, &part) };
            k0 = k1;
        }
        unsafe { add_tile(&mut out, &sum) };
        w0 += depth;
    }
    out
}

/// `G` rows of `block` over the vectors `vectors` into `flat` (`G` rows of `q`), in tiles of
/// up to `VT` vectors.
///
/// Safety: `S` is the vector type of the selected SIMD path.
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn row_group<S: F32Lanes, const G: usize, const VT: usize>(
    a: Layer<'_>,
    planes: &[f32],
    block: &BlockRef<'_>,
    weights: &[f32],
    vectors: Range<usize>,
    flat: &mut [f32],
) {
    let mut v0 = vectors.start;
    // SAFETY: forwarded to the caller.
    unsafe {
        while v0 < vectors.end {
            let q0 = v0 * S::LANES;
            macro_rules! run {
                ($v:expr) => {{
                    let t = tile::<S, G, { $v }>(a, planes, block, weights, q0);
                    store(&t, flat, a.phases.q, q0);
                    v0 += $v;
                }};
            }
            match (vectors.end - v0).min(VT) {
                1 => run!(1),
                2 => run!(2),
                _ => run!(VT),
            }
        }
    }
}

/// Vectors of `lanes` positions per chunk: the chunk's windows of every channel's read phases
/// stay within 24 KiB (half the L1 cache), in whole tiles of `vt` vectors, chunks balanced.
fn chunk_vectors(geom: &ConvGeometry, ph: Phases, lanes: usize, vt: usize) -> usize {
    let vectors = ph.q / lanes;
    let reach = ph.len - ph.q;
    let phases = geom.in_c * ph.rows * ph.cols;
    let per_phase = 24 * 1024 / core::mem::size_of::<f32>() / phases.max(1);
    let fit = (per_phase.saturating_sub(reach) / lanes / vt).max(1) * vt;
    let chunks = vectors.div_ceil(fit).max(1);
    vectors.div_ceil(chunks).div_ceil(vt) * vt
}

/// Every block's rows for one sample (phases in `planes`) into `flat`.
///
/// Safety: `S` is the vector type of the selected SIMD path.
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn sample_rows<S: F32Lanes, const R: usize, const VT: usize>(
    a: Layer<'_>,
    planes: &[f32],
    flat: &mut [f32],
) {
    let q = a.phases.q;
    let vectors = q / S::LANES;
    let chunk = chunk_vectors(a.geom, a.phases, S::LANES, VT);
    let taps = a.offsets.len();
    let mut c0 = 0;
    while c0 < vectors {
        let c1 = (c0 + chunk).min(vectors);
        let (mut w0, mut r0) = (0, 0);
        for b in a.blocks {
            let steps = b.cols() * taps;
            for g in group_sizes(b.rows, R) {
                let w = &a.packed[w0..][..steps * g];
                let f = &mut flat[r0 * q..][..g * q];
                let v = c0..c1;
                // SAFETY: forwarded to the caller.
                unsafe {
                    match g {
                        12 => row_group::<S, 12, VT>(a, planes, b, w, v, f),
                        11 => row_group::<S, 11, VT>(a, planes, b, w, v, f),
                        10 => row_group::<S, 10, VT>(a, planes, b, w, v, f),
                        9 => row_group::<S, 9, VT>(a, planes, b, w, v, f),
                        8 => row_group::<S, 8, VT>(a, planes, b, w, v, f),
                        7 => row_group::<S, 7, VT>(a, planes, b, w, v, f),
                        6 => row_group::<S, 6, VT>(a, planes, b, w, v, f),
                        5 => row_group::<S, 5, VT>(a, planes, b, w, v, f),
                        4 => row_group::<S, 4, VT>(a, planes, b, w, v, f),
                        3 => row_group::<S, 3, VT>(a, planes, b, w, v, f),
                        2 => row_group::<S, 2, VT>(a, planes, b, w, v, f),
                        _ => row_group::<S, 1, VT>(a, planes, b, w, v, f),
                    }
                }
                w0 += steps * g;
                r0 += g;
            }
        }
        c0 = c1;
    }
}

/// Copies sample `x`'s channels into the kept phases (row `i`, column `j` of phase `(a, b)`
/// is padded row `i sy + a`, column `j sx + b`), interiors only: the caller zeroed the
/// padding once. Inlined into the path's entry point, so the copies use its vectors.
#[inline(always)]
fn fill_phases(geom: &ConvGeometry, ph: Phases, x: &[f32], planes: &mut [f32]) {
    let [sy, sx] = geom.stride;
    let [py, px] = geom.padding;
    let (ih, iw) = (geom.in_h, geom.in_w);
    for c in 0..geom.in_c {
        let channel = &mut planes[c * ph.channel_len()..][..ph.channel_len()];
        for y in 0..ih {
            let (a, i) = ((y + py) % sy, (y + py) / sy);
            let src = &x[(c * ih + y) * iw..][..iw];
            if a >= ph.rows || i * ph.wq >= ph.len {
                continue;
            }
            let rows = &mut channel[a * ph.cols * ph.len..][..ph.cols * ph.len];
            if sx == 2 && ph.cols == 2 && (i + 1) * ph.wq <= ph.len {
                let (even, odd) = rows.split_at_mut(ph.len);
                let at = i * ph.wq..(i + 1) * ph.wq;
                deinterleave(src, px, &mut even[at.clone()], &mut odd[at]);
                continue;
            }
            for b in 0..ph.cols {
                // Input columns x with (x + px) % sx == b land at (x + px) / sx.
                let x0 = (b + sx - px % sx) % sx;
                let j0 = (x0 + px) / sx;
                let row = &mut rows[b * ph.len..][..ph.len][i * ph.wq..];
                let n = if x0 < iw { (iw - x0).div_ceil(sx) } else { 0 };
                let n = n.min(row.len().saturating_sub(j0));
                if n == 0 {
                    continue; // no input column lands in this phase (a map narrower than the stride)
                }
                for (d, &v) in row[j0..j0 + n].iter_mut().zip(src[x0..].iter().step_by(sx)) {
                    *d = v;
                }
            }
        }
    }
}

/// One input row `src` with `px` columns of left padding into the rows of its two column
/// phases (stride 2): padded column `x + px` goes to `even` or `odd` by its parity, at
/// `(x + px) / 2`. Each row holds `ceil((len + 2 px) / 2)` values.
#[inline(always)]
fn deinterleave(src: &[f32], px: usize, even: &mut [f32], odd: &mut [f32]) {
    let (h, pairs) = (px / 2, src.len() / 2);
    let last = src.chunks_exact(2).remainder().first().copied();
    if px.is_multiple_of(2) {
        let dst = even[h..h + pairs].iter_mut().zip(&mut odd[h..h + pairs]);
        for ((e, o), p) in dst.zip(src.chunks_exact(2)) {
            *e = p[0];
            *o = p[1];
        }
        if let Some(v) = last {
            even[h + pairs] = v;
        }
    } else {
        let dst = odd[h..h + pairs]
            .iter_mut()
            .zip(&mut even[h + 1..h + 1 + pairs]);
        for ((o, e), p) in dst.zip(src.chunks_exact(2)) {
            *o = p[0];
            *e = p[1];
        }
        if let Some(v) = last {
            odd[h + pairs] = v;
        }
    }
}

/// One sample: its phases, every block's rows into `flat`, then `out` (NCHW, the dropped
/// columns left out, the biases added).
///
/// Safety: `S` is the vector type of the selected SIMD path.
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn sample<S: F32Lanes, const R: usize, const VT: usize>(
    a: Layer<'_>,
    x: &[f32],
    planes: &mut [f32],
    flat: &mut [f32],
    out: &mut [f32],
) {
    let g = a.geom;
    fill_phases(g, a.phases, x, planes);
    // SAFETY (both blocks): forwarded to the caller.
    unsafe { sample_rows::<S, R, VT>(a, planes, flat) };
    let (p, q, wq) = (g.positions(), a.phases.q, a.phases.wq);
    let mut o = 0;
    for b in a.blocks {
        for local in 0..b.rows {
            let src = &flat[o * q..][..q];
            let dst = &mut out[o * p..][..p];
            for oy in 0..g.out_h {
                let (s, d) = (
                    &src[oy * wq..][..g.out_w],
                    &mut dst[oy * g.out_w..][..g.out_w],
                );
                match b.bias {
                    Some(bias) => unsafe { add_row::<S>(s, bias[local], d) },
                    None => unsafe { copy_row::<S>(s, d) },
                }
            }
            o += 1;
        }
    }
}

sample_on_paths!(Layer, sample);

/// Convolution of `batch` NCHW samples with a strided window ([`strided_conv_applies`]), the
/// output channels being the blocks' rows stacked in order: the bits of im2col + GEMM. Same
/// contract as [`super::layers::block_conv2d`], which dispatches here; the caller has checked
/// the blocks and the buffer lengths. `scratch` holds [`strided_conv_scratch_len`] elements.
pub(crate) fn strided_conv(
    geom: &ConvGeometry,
    blocks: &[BlockRef<'_>],
    input: &[f32],
    batch: usize,
    output: &mut [f32],
    scratch: &mut [f32],
) {
    let ph = Phases::of(geom);
    let path = simd::path();
    let ([kh, kw], [sy, sx]) = (geom.kernel, geom.stride);
    let taps = kh * kw;
    // Tap offsets in a channel's phases, in the weight layout's (ky, kx) order.
    let mut offset_buf = [0usize; MAX_TAPS];
    for ky in 0..kh {
        for kx in 0..kw {
            let phase = (ky % sy) * ph.cols + kx % sx;
            offset_buf[ky * kw + kx] = phase * ph.len + ky / sy * ph.wq + kx / sx;
        }
    }
    let out_c: usize = blocks.iter().map(|b| b.rows).sum();
    let weights: usize = blocks.iter().map(|b| b.rows * b.cols() * taps).sum();
    let (planes, rest) = scratch.split_at_mut(geom.in_c * ph.channel_len());
    let (packed, rest) = rest.split_at_mut(weights);
    let flat = &mut rest[..out_c * ph.q];
    pack_weights(blocks, taps, tile_rows(path), packed);
    planes.fill(0.0);
    let layer = Layer {
        geom,
        phases: ph,
        blocks,
        offsets: &offset_buf[..taps],
        packed,
        slice: depth_slice(path),
    };
    let (in_len, out_len) = (geom.input_len(), out_c * geom.positions());
    for s in 0..batch {
        let x = &input[s * in_len..][..in_len];
        let out = &mut output[s * out_len..][..out_len];
        sample_on(path, layer, x, planes, flat, out);
    }
}
