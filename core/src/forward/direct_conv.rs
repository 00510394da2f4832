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
//!   path's) are computed in register tiles of up to `R` output channels x `V` vectors,
//!   over all input channels and taps, so each accumulator is written once: 4 x 3 vectors of 8
//!   on the portable path ([`ROWS`] x [`VECS`]), 6 x 2 vectors of 8 on AVX2 ([`AVX2_ROWS`] x
//!   [`AVX2_VECS`], 12 of the 16 ymm registers) and 12 x 2 vectors of 16 on AVX-512
//!   ([`WIDE_ROWS`] x [`WIDE_VECS`], 24 of the 32 zmm registers). Tall tiles load fewer
//!   (unaligned) input vectors per multiply-add: each step loads `V` vectors and broadcasts `R`
//!   weights for `R x V` fused multiply-adds. A block's rows are split into as few groups of
//!   at most `R` as possible, of sizes differing by at most one.
//! - The positions are walked in chunks whose windows of every input channel fit in half the
//!   L1 cache (`CHUNK_BYTES`); every row group runs over a chunk before the next one.
//! - The columns `out_w .. wp` of each row are padding and are dropped when the tile rows are
//!   copied to the NCHW output, where the bias is added. The plane fill, the kernel and that
//!   copy run in one per-path function, with vector copies instead of a `memcpy` call per row.
//! - Each output is summed over (input channel, tap) in the same order, from zero, whatever the
//!   path's tile shape, chunk or row group: the tile shapes do not change a bit of the result.
//! - Weights are repacked once per call so that the weights of a row group for one (channel,
//!   tap) step are adjacent.
//!
//! The wasted work is the dropped columns: `2 pw / wp` of the flat positions (7 % at 28 x 28,
//! 12 % at 14 x 14, 22 % at 7 x 7 for a 3 x 3 kernel with padding 1).
//!
//! Blocks ([`BlockRef`]) are handled natively: each block's tile reads only its input ranges.
//! [`direct_conv_reference`] is the scalar twin (f64 accumulation) the property tests compare
//! against.

use core::ops::Range;

use super::block_ref::BlockRef;
use super::im2col::ConvGeometry;
use crate::simd::lanes::F32Lanes;
use crate::simd::{self, Path};

/// Flat positions are computed in multiples of this many lanes (the widest path's vector).
pub(super) const LANES: usize = 16;
/// Output channels per register tile.
pub const ROWS: usize = 4;
/// 8-lane position vectors per register tile (portable and AVX2 paths; AVX-512: 6 of 16).
pub const VECS: usize = 3;

/// Output channels per register tile on the AVX-512 path (32 registers).
pub const WIDE_ROWS: usize = 12;
/// 16-lane position vectors per register tile on the AVX-512 path.
pub const WIDE_VECS: usize = 2;

/// Output channels per register tile on the AVX2 path (16 registers).
pub const AVX2_ROWS: usize = 6;
/// 8-lane position vectors per register tile on the AVX2 path.
pub const AVX2_VECS: usize = 2;

/// Output channels per register tile on `path`.
pub(super) fn tile_rows(path: Path) -> usize {
    match path {
        Path::Avx512 => WIDE_ROWS,
        Path::Avx2 => AVX2_ROWS,
        Path::Portable => ROWS,
    }
}

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
    let rows: usize = blocks.iter().map(|b| b.rows).sum();
    geom.in_c * plane.len + weights_len(blocks, geom.in_c, taps) + rows * plane.q
}

/// Input columns a block reads.
fn block_cols(b: &BlockRef<'_>) -> usize {
    b.inputs.iter().map(|r| r.len()).sum()
}

/// Whether the blocks run as one dense block over all `in_c` inputs, with zero weights where a
/// block does not read a channel: when there are several blocks, each reads its ranges in
/// increasing channel order (so the dense order adds the same products in the same order,
/// the zero ones changing no sum of finite values), and the dense multiply-adds are at most
/// 5/4 of the blocks'. A merged layer's blocks (`[merged | A's own | B's own]` rows, the
/// own rows reading the merged channels and their model's) are mostly tall and wide: run
/// apart, their few own rows fill register tiles of 2 or 3 rows at a fraction of the
/// multiply-add rate.
fn runs_dense(blocks: &[BlockRef<'_>], in_c: usize) -> bool {
    let increasing = |b: &BlockRef<'_>| {
        b.inputs.windows(2).all(|w| w[0].end <= w[1].start)
            && b.inputs.iter().all(|r| r.end <= in_c)
    };
    let sparse: usize = blocks.iter().map(|b| b.rows * block_cols(b)).sum();
    let dense = blocks.iter().map(|b| b.rows).sum::<usize>() * in_c;
    blocks.len() > 1 && blocks.iter().all(increasing) && 4 * dense <= 5 * sparse
}

/// Packed weight elements of `blocks` ([`runs_dense`] or apart).
fn weights_len(blocks: &[BlockRef<'_>], in_c: usize, taps: usize) -> usize {
    if runs_dense(blocks, in_c) {
        blocks.iter().map(|b| b.rows).sum::<usize>() * in_c * taps
    } else {
        blocks.iter().map(|b| b.rows * block_cols(b) * taps).sum()
    }
}

/// The weight of output row `row` (rows of the blocks stacked) at input channel `c` and tap
/// `tap`: the block's weight if it reads `c`, else zero.
fn dense_weight(blocks: &[BlockRef<'_>], row: usize, c: usize, tap: usize, taps: usize) -> f32 {
    let mut r0 = 0;
    for b in blocks {
        if row < r0 + b.rows {
            let mut col = 0;
            for range in b.inputs {
                if range.contains(&c) {
                    let at = ((row - r0) * block_cols(b) + col + c - range.start) * taps + tap;
                    return b.weight[at];
                }
                col += range.len();
            }
            return 0.0;
        }
        r0 += b.rows;
    }
    0.0
}

/// [`pack_weights`] of the dense block of [`runs_dense`]: all rows, every input channel.
fn pack_dense(blocks: &[BlockRef<'_>], in_c: usize, taps: usize, group: usize, packed: &mut [f32]) {
    let rows: usize = blocks.iter().map(|b| b.rows).sum();
    let steps = in_c * taps;
    let (mut at, mut r0) = (0, 0);
    for g in group_sizes(rows, group) {
        for m in 0..g {
            for step in 0..steps {
                packed[at + step * g + m] =
                    dense_weight(blocks, r0 + m, step / taps, step % taps, taps);
            }
        }
        at += steps * g;
        r0 += g;
    }
}

/// Copies the weights of every block so that, per group of up to `group` output rows ([`tile_rows`]), the
/// values of one (column, tap) step are adjacent: `packed[step * g + m]` for a group of `g`
/// rows, groups one after another.
pub(super) fn pack_weights(blocks: &[BlockRef<'_>], taps: usize, group: usize, packed: &mut [f32]) {
    let mut at = 0;
    for b in blocks {
        let steps = b.inputs.iter().map(|r| r.len()).sum::<usize>() * taps;
        let mut r0 = 0;
        for g in group_sizes(b.rows, group) {
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

/// The sizes of the row groups of a block of `rows` rows with at most `max` per group: as few
/// groups as that allows, their sizes differing by at most one (18 rows in groups of at most
/// 12 are 9 + 9, not 12 + 6: a small group does as many loads per multiply-add as a full one).
pub(super) fn group_sizes(rows: usize, max: usize) -> impl Iterator<Item = usize> {
    let groups = rows.div_ceil(max.max(1));
    let base = rows.checked_div(groups).unwrap_or(0);
    let extra = rows.checked_rem(groups).unwrap_or(0);
    (0..groups).map(move |i| base + usize::from(i < extra))
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

/// Computes `G` rows of a block over the flat positions of vectors `vectors` into `flat` (`G`
/// rows of `q`), in tiles of `VT` vectors of `S`.
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
    vectors: Range<usize>,
    flat: &mut [f32],
) {
    let mut v0 = vectors.start;
    // SAFETY: forwarded to the caller.
    unsafe {
        while v0 < vectors.end {
            let q0 = v0 * S::LANES;
            let args = (planes, plane.len, block, offsets, weights, q0);
            macro_rules! run {
                ($v:expr) => {{
                    let t = tile::<S, G, { $v }>(args.0, args.1, args.2, args.3, args.4, args.5);
                    store(&t, flat, plane.q, q0);
                    v0 += $v;
                }};
            }
            match (vectors.end - v0).min(VT) {
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
pub(super) unsafe fn store<S: F32Lanes, const G: usize, const V: usize>(
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

/// What every sample of one call shares: the geometry, the blocks and their packed weights.
#[derive(Clone, Copy)]
struct Layer<'a> {
    geom: &'a ConvGeometry,
    plane: Plane,
    /// The blocks computed: the caller's, or one dense block ([`runs_dense`]).
    blocks: &'a [BlockRef<'a>],
    /// The caller's blocks, for the biases of the output rows.
    outputs: &'a [BlockRef<'a>],
    offsets: &'a [usize],
    packed: &'a [f32],
    taps: usize,
}

/// The rows of every block for one sample (padded planes in `planes`) into `flat`, with
/// vectors `S` in tiles of `VT` vectors.
///
/// Safety: `S` is the vector type of the selected SIMD path (see [`crate::simd::lanes`]).
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn sample_rows<S: F32Lanes, const R: usize, const VT: usize>(
    a: Layer<'_>,
    planes: &[f32],
    flat: &mut [f32],
) {
    let vectors = a.plane.q / S::LANES;
    let chunk = chunk_vectors(a.geom, a.plane, S::LANES, VT);
    let mut c0 = 0;
    while c0 < vectors {
        let c1 = (c0 + chunk).min(vectors);
        let mut w0 = 0;
        let mut r0 = 0;
        for b in a.blocks {
            let steps = b.inputs.iter().map(|r| r.len()).sum::<usize>() * a.taps;
            let mut g0 = 0;
            for g in group_sizes(b.rows, R) {
                let w = &a.packed[w0..][..steps * g];
                let f = &mut flat[(r0 + g0) * a.plane.q..][..g * a.plane.q];
                let (p, pl, o, v) = (planes, a.plane, a.offsets, c0..c1);
                // SAFETY: forwarded to the caller.
                unsafe {
                    match g {
                        12 => row_group::<S, 12, VT>(p, pl, b, o, w, v, f),
                        11 => row_group::<S, 11, VT>(p, pl, b, o, w, v, f),
                        10 => row_group::<S, 10, VT>(p, pl, b, o, w, v, f),
                        9 => row_group::<S, 9, VT>(p, pl, b, o, w, v, f),
                        8 => row_group::<S, 8, VT>(p, pl, b, o, w, v, f),
                        7 => row_group::<S, 7, VT>(p, pl, b, o, w, v, f),
                        6 => row_group::<S, 6, VT>(p, pl, b, o, w, v, f),
                        5 => row_group::<S, 5, VT>(p, pl, b, o, w, v, f),
                        4 => row_group::<S, 4, VT>(p, pl, b, o, w, v, f),
                        3 => row_group::<S, 3, VT>(p, pl, b, o, w, v, f),
                        2 => row_group::<S, 2, VT>(p, pl, b, o, w, v, f),
                        _ => row_group::<S, 1, VT>(p, pl, b, o, w, v, f),
                    }
                }
                w0 += steps * g;
                g0 += g;
            }
            r0 += b.rows;
        }
        c0 = c1;
    }
}

/// Plane bytes one chunk of positions may read: every row group of every block runs over a
/// chunk before the next, so the chunk's windows of all input channels stay in the L1 cache
/// (48 KiB on recent x86 cores; half of it leaves room for the weights).
const CHUNK_BYTES: usize = 24 * 1024;

/// Vectors of `lanes` positions per chunk: as many as keep the windows of all channels within
/// [`CHUNK_BYTES`], in whole tiles of `vt` vectors, the chunks of a plane balanced.
fn chunk_vectors(geom: &ConvGeometry, plane: Plane, lanes: usize, vt: usize) -> usize {
    let vectors = plane.q / lanes;
    // Each channel's window: the chunk's positions plus the reach of the taps.
    let reach = plane.len - plane.q;
    let per_channel = CHUNK_BYTES / core::mem::size_of::<f32>() / geom.in_c.max(1);
    let fit = (per_channel.saturating_sub(reach) / lanes / vt).max(1) * vt;
    let chunks = vectors.div_ceil(fit).max(1);
    vectors.div_ceil(chunks).div_ceil(vt) * vt
}

/// `dst[i] = src[i]` for every `i`, in vectors of `S` without a call to `memcpy` (the rows
/// are short: a call per row cost as much as the copy).
///
/// Safety: `S` is the vector type of the selected SIMD path.
#[inline(always)]
#[allow(unsafe_code)]
pub(super) unsafe fn copy_row<S: F32Lanes>(src: &[f32], dst: &mut [f32]) {
    let n = src.len();
    assert_eq!(n, dst.len(), "rows of equal length");
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    // SAFETY: every access below is inside `0 .. n` of both slices (checked by each branch's
    // condition); `S` runs on this CPU (forwarded to the caller).
    unsafe {
        if n >= S::LANES {
            let mut i = 0;
            while i + S::LANES <= n {
                S::load_at(s.add(i)).store_at(d.add(i));
                i += S::LANES;
            }
            if i < n {
                // The last vector ends at `n`, overlapping values already written.
                S::load_at(s.add(n - S::LANES)).store_at(d.add(n - S::LANES));
            }
            return;
        }
        // Fewer than `S::LANES` (at most 15) values: fixed-size moves, no loop to become a call.
        let mut i = 0;
        macro_rules! part {
            ($k:expr) => {
                if n - i >= $k {
                    let v = core::ptr::read_unaligned(s.add(i).cast::<[f32; $k]>());
                    core::ptr::write_unaligned(d.add(i).cast::<[f32; $k]>(), v);
                    i += $k;
                }
            };
        }
        part!(8);
        part!(4);
        part!(2);
        part!(1);
        debug_assert_eq!(i, n);
    }
}

/// `dst[i] = src[i] + bias` for every `i`, in vectors of `S`.
///
/// Safety: `S` is the vector type of the selected SIMD path.
#[inline(always)]
#[allow(unsafe_code)]
pub(super) unsafe fn add_row<S: F32Lanes>(src: &[f32], bias: f32, dst: &mut [f32]) {
    let n = src.len();
    assert_eq!(n, dst.len(), "rows of equal length");
    if n < S::LANES {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = v + bias;
        }
        return;
    }
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    // SAFETY: as in `copy_row`; the overlapping last vector recomputes the same sums.
    unsafe {
        let b = S::splat(bias);
        let mut i = 0;
        while i + S::LANES <= n {
            S::load_at(s.add(i)).add(b).store_at(d.add(i));
            i += S::LANES;
        }
        if i < n {
            S::load_at(s.add(n - S::LANES))
                .add(b)
                .store_at(d.add(n - S::LANES));
        }
    }
}

/// One sample `x`: its padded planes (interiors only: the caller zeroed the borders once),
/// every block's rows into `flat`, then `out` (NCHW, the padding columns dropped, the biases
/// added).
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
    let (ih, iw) = (g.in_h, g.in_w);
    let (ph, pw) = (g.padding[0], g.padding[1]);
    let (wp, len, q) = (a.plane.wp, a.plane.len, a.plane.q);
    // SAFETY (every block below): forwarded to the caller.
    for c in 0..g.in_c {
        let dst = &mut planes[c * len..][..len];
        for y in 0..ih {
            let src = &x[(c * ih + y) * iw..][..iw];
            unsafe { copy_row::<S>(src, &mut dst[(y + ph) * wp + pw..][..iw]) };
        }
    }
    unsafe { sample_rows::<S, R, VT>(a, planes, flat) };
    let p = g.positions();
    let mut o = 0;
    for b in a.outputs {
        for local in 0..b.rows {
            let bias = b.bias.map_or(0.0, |bias| bias[local]);
            let src = &flat[o * q..][..q];
            let dst = &mut out[o * p..][..p];
            for oy in 0..g.out_h {
                let d = &mut dst[oy * g.out_w..][..g.out_w];
                unsafe { add_row::<S>(&src[oy * wp..][..g.out_w], bias, d) };
            }
            o += 1;
        }
    }
}

sample_on_paths!(Layer, sample);

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
    let (planes, rest) = scratch.split_at_mut(geom.in_c * plane.len);
    let (packed, rest) = rest.split_at_mut(weights_len(blocks, geom.in_c, taps));
    let flat = &mut rest[..out_c * plane.q];
    let all_inputs = 0..geom.in_c;
    let all = core::slice::from_ref(&all_inputs);
    let dense = [BlockRef {
        weight: &[],
        bias: None,
        rows: out_c,
        inputs: all,
    }];
    let computed = if runs_dense(blocks, geom.in_c) {
        pack_dense(blocks, geom.in_c, taps, tile_rows(path), packed);
        &dense[..]
    } else {
        pack_weights(blocks, taps, tile_rows(path), packed);
        blocks
    };
    planes.fill(0.0);
    let layer = Layer {
        geom,
        plane,
        blocks: computed,
        outputs: blocks,
        offsets,
        packed,
        taps,
    };
    let in_len = geom.input_len();
    let out_len = out_c * geom.positions();
    for s in 0..batch {
        let x = &input[s * in_len..][..in_len];
        let out = &mut output[s * out_len..][..out_len];
        sample_on(path, layer, x, planes, flat, out);
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
