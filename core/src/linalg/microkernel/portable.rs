//! The portable micro-kernel: `wide::f32x8` (SSE2 pairs on baseline x86-64, scalar lanes on
//! Cortex-M), 6 x 16. Twelve accumulators, two `B` vectors and one broadcast `A` value fit in
//! 16 vector registers.

use wide::f32x8;

use super::{Lines, MicroKernel, check_tile};

/// The `wide::f32x8` kernel.
pub(crate) struct Portable;

// Block sizes follow the Goto/BLIS analysis for a 6 x 16 f32 tile on Zen/Haswell-class cores
// (32 KiB L1d, 512 KiB L2): a KC x NR micro-panel of B (20 KiB) plus a KC x MR micro-panel of A
// (7.5 KiB) fit in L1, an MC x KC block of A (150 KiB) in L2, and a KC x NC panel of B in L3.
// KC = 320 beat BLIS's 256 by 5-15% at d = 1024 and 2304 on a Zen 3 (alternating runs, CPU
// time): fewer passes over C.
impl MicroKernel for Portable {
    const MR: usize = 6;
    const NR: usize = 16;
    const MC: usize = 120;
    const KC: usize = 320;
    const NC: usize = 4080;

    #[inline]
    fn tile(a: &[f32], b: &[f32], kc: usize, alpha: f32, c: &mut [f32], rs: usize, _: Lines) {
        check_tile::<Self>(a, b, kc, c, rs);
        let mut acc = [[f32x8::ZERO; 2]; 6];
        for (ap, bp) in a[..kc * 6]
            .chunks_exact(6)
            .zip(b[..kc * 16].chunks_exact(16))
        {
            let b0 = f32x8::from(<[f32; 8]>::try_from(&bp[..8]).unwrap());
            let b1 = f32x8::from(<[f32; 8]>::try_from(&bp[8..16]).unwrap());
            for r in 0..6 {
                let ar = f32x8::splat(ap[r]);
                acc[r][0] = ar.mul_add(b0, acc[r][0]);
                acc[r][1] = ar.mul_add(b1, acc[r][1]);
            }
        }
        let al = f32x8::splat(alpha);
        for (r, tile_row) in acc.iter().enumerate() {
            let row = &mut c[r * rs..r * rs + 16];
            let (lo, hi) = row.split_at_mut(8);
            let c0 = f32x8::from(<[f32; 8]>::try_from(&*lo).unwrap());
            let c1 = f32x8::from(<[f32; 8]>::try_from(&*hi).unwrap());
            lo.copy_from_slice(&al.mul_add(tile_row[0], c0).to_array());
            hi.copy_from_slice(&al.mul_add(tile_row[1], c1).to_array());
        }
    }
}
