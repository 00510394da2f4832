//! The register-blocked f32 micro-kernel: an `MR x NR` tile of `C` accumulated in SIMD
//! registers over one packed `kc` slice of `A` and `B`.
//!
//! With 8-lane `f32x8` (AVX2 + FMA on x86-64; a portable fallback elsewhere) the 6 x 16 tile
//! keeps 12 accumulators, 2 `B` vectors and 1 broadcast `A` value in the 16 vector registers,
//! the classic layout for two FMA pipes.

use wide::f32x8;

/// Rows of the register tile.
pub(crate) const MR: usize = 6;
/// Columns of the register tile (two 8-lane vectors).
pub(crate) const NR: usize = 16;
/// SIMD width of the f32 micro-kernel, in lanes (`wide::f32x8`; benches report it).
pub const LANES: usize = 8;

/// `tile = sum_p a[p] (outer) b[p]` over `kc` packed steps, returned row-major `MR x NR`.
#[inline(always)]
pub(crate) fn tile_product(a: &[f32], b: &[f32], kc: usize) -> [[f32x8; 2]; MR] {
    let mut acc = [[f32x8::ZERO; 2]; MR];
    let a = &a[..kc * MR];
    let b = &b[..kc * NR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        let b0 = f32x8::from(<[f32; 8]>::try_from(&bp[..8]).unwrap());
        let b1 = f32x8::from(<[f32; 8]>::try_from(&bp[8..16]).unwrap());
        for r in 0..MR {
            let ar = f32x8::splat(ap[r]);
            acc[r][0] = ar.mul_add(b0, acc[r][0]);
            acc[r][1] = ar.mul_add(b1, acc[r][1]);
        }
    }
    acc
}

/// Adds `alpha * tile` into `c` (row-major slice, row stride `rs`, unit column stride) for a
/// full `MR x NR` tile starting at `c[0]`.
#[inline(always)]
pub(crate) fn store_full(tile: &[[f32x8; 2]; MR], alpha: f32, c: &mut [f32], rs: usize) {
    let al = f32x8::splat(alpha);
    for r in 0..MR {
        let row = &mut c[r * rs..r * rs + NR];
        let (lo, hi) = row.split_at_mut(8);
        let c0 = f32x8::from(<[f32; 8]>::try_from(&*lo).unwrap());
        let c1 = f32x8::from(<[f32; 8]>::try_from(&*hi).unwrap());
        lo.copy_from_slice(&al.mul_add(tile[r][0], c0).to_array());
        hi.copy_from_slice(&al.mul_add(tile[r][1], c1).to_array());
    }
}

/// The tile as plain row-major values.
#[inline(always)]
pub(crate) fn tile_values(tile: &[[f32x8; 2]; MR]) -> [[f32; NR]; MR] {
    let mut out = [[0.0; NR]; MR];
    for r in 0..MR {
        out[r][..8].copy_from_slice(&tile[r][0].to_array());
        out[r][8..].copy_from_slice(&tile[r][1].to_array());
    }
    out
}
