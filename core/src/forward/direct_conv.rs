//! Direct convolution of stride-1 windows, without a patch matrix.
//!
//! im2col copies every input value `kh * kw` times and the GEMM packs that copy once more; for
//! the narrow layers of small CNNs (16 channels at 28 x 28) the copies cost as much as the
//! multiply-adds. This kernel reads the input in place instead:
//!
//! - Each input channel of a sample is copied once into a zero-padded plane of row length
//!   `wp = in_w + 2 pw`, flattened. With stride 1, output `(oy, ox)` at flat position
//!   `q = oy * wp + ox` is `sum_{c, ky, kx} W[o, c, ky, kx] * plane_c[q + ky * wp + kx]`: every
//!   tap is a contiguous slice of the plane shifted by `ky * wp + kx`.
//! - The flat positions `0 .. out_h * wp` (rounded up to whole 16-lane vectors, the widest
//!   path's) are computed in register tiles of [`ROWS`] output channels x [`VECS`] vectors of 8
//!   positions (12 accumulators for `f32x8` / `__m256` on the portable and AVX2 paths), or 4 x 6
//!   vectors of 16 (24 of the 32 zmm registers, AVX-512), over all input channels and taps, so
//!   each accumulator is written once. The columns `out_w .. wp` of each row are padding and are dropped when the tile rows
//!   are copied to the NCHW output, where the bias is added.
//! - Weights are repacked once per call so that a tap's [`ROWS`] weights are adjacent.
//!
//! The wasted work is the dropped columns: `2 pw / wp` of the flat positions (7 % at 28 x 28,
//! 12 % at 14 x 14, 22 % at 7 x 7 for a 3 x 3 kernel with padding 1).
//!
//! Blocks ([`BlockRef`]) are handled natively: each block's tile reads only its input ranges.
//! [`direct_conv_reference`] is the scalar twin (f64 accumulation) the property tests compare
//! against.

use wide::f32x8;

use super::block_ref::BlockRef;
use super::im2col::ConvGeometry;
use crate::simd::lanes::F32Lanes;
use crate::simd::{self, Path};

/// Flat positions are computed in multiples of this many lanes (the widest path's vector).
const LANES: usize = 16;
/// Output channels per register tile.
pub const ROWS: usize = 4;
/// 8-lane position vectors per register tile (portable and AVX2 paths; AVX-512: 6 of 16).
pub const VECS: usize = 3;

/// Largest window (taps) the direct kernel takes; wider windows use im2col.
pub const MAX_TAPS: usize = 49;

/// Whether `direct_conv` handles `geom`: stride 1 and a window of 2 to [`MAX_TAPS`] taps (a
/// 1 x 1 window is a plain matrix product, which the GEMM path does without copies).
pub fn direct_conv_applies(geom: &ConvGeometry) -> bool {
    let taps = geom.kernel[0] * geom.kernel[1];
    geom.stride == [1, 1] && taps > 1 && taps <= MAX_TAPS
}

/// The flattened padded plane of one input channel.
#[derive(Debug, Clone, Copy)]
struct Plane {
    /// Row length, `in_w + 2 pw`.
    wp: usize,
    /// Flat output positions computed: `out_h * wp` rounded up to whole vectors.
    q: usize,
    /// Plane length: every tap of every computed position lies inside.
    len: usize,
}

impl Plane {
    fn of(geom: &ConvGeometry) -> Self {
        let wp = geom.in_w + 2 * geom.padding[1];
        let q = (geom.out_h * wp).div_ceil(LANES) * LANES;
        // The last computed position, q - 1, reads up to q - 1 + (kh - 1) wp + kw - 1; with
        // stride 1, out_h + kh - 1 = in_h + 2 ph, so this also covers every padded row.
        let len = q + (geom.kernel[0] - 1) * wp + geom.kernel[1] - 1;
        Self { wp, q, len }
    }
}

/// Scratch elements `direct_conv` needs for `blocks` over `geom`: the padded planes of one
/// sample, the repacked weights and one sample's flat output rows.
pub fn direct_conv_scratch_len(geom: &ConvGeometry, blocks: &[BlockRef<'_>]) -> usize {
    let plane = Plane::of(geom);
    let taps = geom.kernel[0] * geom.kernel[1];
    let (rows, weights) = blocks.iter().fold((0usize, 0usize), |(r, w), b| {
        let cols = b.inputs.iter().map(|r| r.len()).sum::<usize>();
        (r + b.rows, w + b.rows * cols * taps)
    });
    geom.in_c * plane.len + weights + rows * plane.q
}

/// Copies the weights of every block so that, per group of up to [`ROWS`] output rows, the
/// values of one (column, tap) step are adjacent: `packed[step * g + m]` for a group of `g`
/// rows, groups one after another.
fn pack_weights(blocks: &[BlockRef<'_>], taps: usize, packed: &mut [f32]) {
    let mut at = 0;
    for b in blocks {
        let steps = b.inputs.iter().map(|r| r.len()).sum::<usize>() * taps;
        let mut r0 = 0;
        while r0 < b.rows {
            let g = ROWS.min(b.rows - r0);
            for step in 0..steps {
                for m in 0..g {
                    packed[at + step * g + m] = b.weight[(r0 + m) * steps + step];
                }
            }
            at += steps * g;
            r0 += g;
        }
    }
}

/// One register tile: `G` output rows x `V` vectors starting at flat position `q0`, summed over
/// the block's input ranges and the taps (plane offsets `offsets`).
///
/// Safety: `S` is the vector type of the selected SIMD path (see [`crate::simd::lanes`]).
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn tile<S: F32Lanes, const G: usize, const V: usize>(
    planes: &[f32],
    plane_len: usize,
    block: &BlockRef<'_>,
    offsets: &[usize],
    weights: &[f32],
    q0: usize,
) -> [[S; V]; G] {
    let span = offsets.iter().max().copied().unwrap_or(0) + V * S::LANES;
    let taps = offsets.len();
    let steps: usize = block.inputs.iter().map(|r| r.len()).sum::<usize>() * taps;
    // Invariants of the callers (scratch and packing sized by `direct_conv_scratch_len`):
    // without them the unchecked loads below would read out of bounds.
    assert!(weights.len() >= steps * G, "packed weights cover the tile");
    // SAFETY: the caller runs on the path of `S`. Every channel's window (`span` values from
    // `c * plane_len + q0`) lies inside `planes` (asserted per range), and
    // `off + v * LANES + LANES <= span` for every offset and `v < V`, so the unchecked loads
    // stay inside it; the weights hold `G` values per step (asserted above).
    unsafe {
        let mut acc = [[S::zero(); V]; G];
        let mut w = weights.as_ptr();
        for range in block.inputs {
            if range.is_empty() {
                continue;
            }
            let first = range.start * plane_len + q0;
            assert!(
                (range.end - 1) * plane_len + q0 + span <= planes.len(),
                "windows inside the planes"
            );
            // One flat loop over (channel, tap): no loop nest for the accumulators to be
            // spilled across.
            let mut base = planes.as_ptr().add(first);
            let mut tap = 0;
            for _ in 0..range.len() * taps {
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
                    base = base.add(plane_len);
                }
            }
        }
        acc
    }
}

/// Computes `G` rows of a block over every flat position into `flat` (`G` rows of `q`), in
/// tiles of `VT` vectors of `S`.
///
/// Safety: `S` is the vector type of the selected SIMD path.
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn row_group<S: F32Lanes, const G: usize, const VT: usize>(
    planes: &[f32],
    plane: Plane,
    block: &BlockRef<'_>,
    offsets: &[usize],
    weights: &[f32],
    flat: &mut [f32],
) {
    let vectors = plane.q / S::LANES;
    let mut v0 = 0;
    // SAFETY: forwarded to the caller.
    unsafe {
        while v0 < vectors {
            let q0 = v0 * S::LANES;
            let args = (planes, plane.len, block, offsets, weights, q0);
            macro_rules! run {
                ($v:expr) => {{
                    let t = tile::<S, G, { $v }>(args.0, args.1, args.2, args.3, args.4, args.5);
                    store(&t, flat, plane.q, q0);
                    v0 += $v;
                }};
            }
            match (vectors - v0).min(VT) {
                1 => run!(1),
                2 => run!(2),
                3 => run!(3),
                4 => run!(4),
                5 => run!(5),
                _ => run!(VT),
            }
        }
    }
}

/// Copies a tile's rows into `flat` (rows of `q`) at position `q0`.
///
/// Safety: `S` is the vector type of the selected SIMD path.
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn store<S: F32Lanes, const G: usize, const V: usize>(
    tile: &[[S; V]; G],
    flat: &mut [f32],
    q: usize,
    q0: usize,
) {
    for (m, row) in tile.iter().enumerate() {
        let dst = &mut flat[m * q + q0..][..V * S::LANES];
        for (d, v) in dst.chunks_exact_mut(S::LANES).zip(row) {
            // SAFETY: forwarded to the caller.
            unsafe { v.store(d) };
        }
    }
}

/// Every block's rows of one sample (padded planes in `planes`) into `flat`.
#[derive(Clone, Copy)]
struct SampleArgs<'a> {
    planes: &'a [f32],
    plane: Plane,
    blocks: &'a [BlockRef<'a>],
    offsets: &'a [usize],
    packed: &'a [f32],
    taps: usize,
}

/// The rows of every block for one sample, with vectors `S` in tiles of `VT` vectors.
///
/// Safety: `S` is the vector type of the selected SIMD path.
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn sample_rows<S: F32Lanes, const VT: usize>(a: SampleArgs<'_>, flat: &mut [f32]) {
    let mut w0 = 0;
    let mut r0 = 0;
    for b in a.blocks {
        let steps = b.inputs.iter().map(|r| r.len()).sum::<usize>() * a.taps;
        let mut g0 = 0;
        while g0 < b.rows {
            let g = ROWS.min(b.rows - g0);
            let w = &a.packed[w0..][..steps * g];
            let f = &mut flat[(r0 + g0) * a.plane.q..][..g * a.plane.q];
            let (p, pl, o) = (a.planes, a.plane, a.offsets);
            // SAFETY: forwarded to the caller.
            unsafe {
                match g {
                    4 => row_group::<S, 4, VT>(p, pl, b, o, w, f),
                    3 => row_group::<S, 3, VT>(p, pl, b, o, w, f),
                    2 => row_group::<S, 2, VT>(p, pl, b, o, w, f),
                    _ => row_group::<S, 1, VT>(p, pl, b, o, w, f),
                }
            }
            w0 += steps * g;
            g0 += g;
        }
        r0 += b.rows;
    }
}

/// [`sample_rows`] on the selected path.
#[allow(unsafe_code)]
fn sample_rows_on(path: Path, a: SampleArgs<'_>, flat: &mut [f32]) {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `path` is the selected path, which the CPU supports.
        Path::Avx512 => unsafe { x86::sample_rows_avx512(a, flat) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Path::Avx2 => unsafe { x86::sample_rows_avx2(a, flat) },
        // SAFETY: `f32x8` runs everywhere.
        _ => unsafe { sample_rows::<f32x8, VECS>(a, flat) },
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use core::arch::x86_64::{__m256, __m512};

    use super::{SampleArgs, VECS, sample_rows};

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sample_rows_avx2(a: SampleArgs<'_>, flat: &mut [f32]) {
        // SAFETY: this function runs only on the AVX2 path.
        unsafe { sample_rows::<__m256, VECS>(a, flat) }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn sample_rows_avx512(a: SampleArgs<'_>, flat: &mut [f32]) {
        // SAFETY: this function runs only on the AVX-512 path.
        unsafe { sample_rows::<__m512, 6>(a, flat) }
    }
}

/// Convolution of `batch` NCHW samples with stride 1 ([`direct_conv_applies`]), the output
/// channels being the blocks' rows stacked in order. Same contract as
/// [`super::layers::block_conv2d`], which dispatches here; the caller has checked the blocks
/// and the buffer lengths. `scratch` holds [`direct_conv_scratch_len`] elements.
pub(crate) fn direct_conv(
    geom: &ConvGeometry,
    blocks: &[BlockRef<'_>],
    input: &[f32],
    batch: usize,
    output: &mut [f32],
    scratch: &mut [f32],
) {
    let plane = Plane::of(geom);
    let path = simd::path();
    let (kh, kw) = (geom.kernel[0], geom.kernel[1]);
    let (ph, pw) = (geom.padding[0], geom.padding[1]);
    let taps = kh * kw;
    // Tap offsets in the flat plane, in the weight layout's (ky, kx) order.
    let mut offset_buf = [0usize; MAX_TAPS];
    for ky in 0..kh {
        for kx in 0..kw {
            offset_buf[ky * kw + kx] = ky * plane.wp + kx;
        }
    }
    let offsets = &offset_buf[..taps];
    let out_c: usize = blocks.iter().map(|b| b.rows).sum();
    let weights_len: usize = blocks
        .iter()
        .map(|b| b.rows * b.inputs.iter().map(|r| r.len()).sum::<usize>() * taps)
        .sum();
    let (planes, rest) = scratch.split_at_mut(geom.in_c * plane.len);
    let (packed, rest) = rest.split_at_mut(weights_len);
    let flat = &mut rest[..out_c * plane.q];
    pack_weights(blocks, taps, packed);
    planes.fill(0.0);
    let in_len = geom.input_len();
    let p = geom.positions();
    let (ih, iw) = (geom.in_h, geom.in_w);
    for s in 0..batch {
        let x = &input[s * in_len..][..in_len];
        // Interior of each padded plane; the borders stay zero from the fill above.
        for c in 0..geom.in_c {
            let dst = &mut planes[c * plane.len..][..plane.len];
            for y in 0..ih {
                dst[(y + ph) * plane.wp + pw..][..iw]
                    .copy_from_slice(&x[(c * ih + y) * iw..][..iw]);
            }
        }
        let args = SampleArgs {
            planes,
            plane,
            blocks,
            offsets,
            packed,
            taps,
        };
        sample_rows_on(path, args, flat);
        // Drop the padding columns and add the biases.
        let out = &mut output[s * out_c * p..][..out_c * p];
        let mut o = 0;
        for b in blocks {
            for local in 0..b.rows {
                let bias = b.bias.map_or(0.0, |bias| bias[local]);
                let src = &flat[o * plane.q..][..plane.q];
                let dst = &mut out[o * p..][..p];
                for oy in 0..geom.out_h {
                    let d = &mut dst[oy * geom.out_w..][..geom.out_w];
                    let r = &src[oy * plane.wp..][..geom.out_w];
                    for (d, &v) in d.iter_mut().zip(r) {
                        *d = v + bias;
                    }
                }
                o += 1;
            }
        }
    }
}

/// The scalar twin of the block-structured convolution for any geometry (any stride, f64
/// accumulation, rounded once to f32): `output` as [`super::layers::block_conv2d`] computes it.
/// Panics if a buffer is too short; for tests and audits, not for speed.
pub fn direct_conv_reference(
    geom: &ConvGeometry,
    blocks: &[BlockRef<'_>],
    input: &[f32],
    batch: usize,
    output: &mut [f32],
) {
    let (kh, kw) = (geom.kernel[0], geom.kernel[1]);
    let taps = kh * kw;
    let out_c: usize = blocks.iter().map(|b| b.rows).sum();
    let p = geom.positions();
    let in_len = geom.input_len();
    for s in 0..batch {
        let x = &input[s * in_len..][..in_len];
        let mut o = 0;
        for b in blocks {
            let steps = b.inputs.iter().map(|r| r.len()).sum::<usize>() * taps;
            for local in 0..b.rows {
                let w = &b.weight[local * steps..][..steps];
                for oy in 0..geom.out_h {
                    for ox in 0..geom.out_w {
                        let mut sum = b.bias.map_or(0.0, |bias| f64::from(bias[local]));
                        let mut col = 0;
                        for range in b.inputs {
                            for c in range.clone() {
                                for ky in 0..kh {
                                    for kx in 0..kw {
                                        let iy = (oy * geom.stride[0] + ky) as isize
                                            - geom.padding[0] as isize;
                                        let ix = (ox * geom.stride[1] + kx) as isize
                                            - geom.padding[1] as isize;
                                        if iy < 0
                                            || ix < 0
                                            || iy >= geom.in_h as isize
                                            || ix >= geom.in_w as isize
                                        {
                                            continue;
                                        }
                                        let v = x[(c * geom.in_h + iy as usize) * geom.in_w
                                            + ix as usize];
                                        sum +=
                                            f64::from(w[col * taps + ky * kw + kx]) * f64::from(v);
                                    }
                                }
                                col += 1;
                            }
                        }
                        output[(s * out_c + o) * p + oy * geom.out_w + ox] = sum as f32;
                    }
                }
                o += 1;
            }
        }
    }
}
