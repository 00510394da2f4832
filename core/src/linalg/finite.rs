//! Locating non-finite values (NaN, +-infinity) in f32 matrices, a vector of the selected SIMD
//! path (8 or 16 lanes) at a time.

use wide::f32x8;

use super::view::MatRef;
use crate::simd;
use crate::simd::lanes::F32Lanes;

/// True when every value of `values` is finite (neither NaN nor infinite).
#[inline]
pub fn all_finite(values: &[f32]) -> bool {
    all_within(values, f32::MAX)
}

/// `|v| > limit`, or `v` is NaN.
#[inline]
fn outside(v: f32, limit: f32) -> bool {
    !matches!(
        v.abs().partial_cmp(&limit),
        Some(core::cmp::Ordering::Less | core::cmp::Ordering::Equal)
    )
}

/// True when every value of `values` satisfies `|v| <= limit` (false for NaN).
#[allow(unsafe_code)]
pub fn all_within(values: &[f32], limit: f32) -> bool {
    match simd::path() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the selected path is supported by the CPU.
        simd::Path::Avx512 => unsafe { x86::all_within_avx512(values, limit) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        simd::Path::Avx2 => unsafe { x86::all_within_avx2(values, limit) },
        // SAFETY: `f32x8` runs everywhere.
        _ => unsafe { all_within_with::<f32x8>(values, limit) },
    }
}

/// [`all_within`] with vectors `S`, four per step, stopping at the first step with a value
/// outside.
///
/// Safety: `S` is the vector type of the selected SIMD path.
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn all_within_with<S: F32Lanes>(values: &[f32], limit: f32) -> bool {
    // SAFETY: forwarded to the caller; loads are bounds-checked slices.
    unsafe {
        let lim = S::splat(limit);
        let step = 4 * S::LANES;
        let mut chunks = values.chunks_exact(step);
        for c in &mut chunks {
            let (a, b) = (S::load(c), S::load(&c[S::LANES..]));
            let (d, e) = (S::load(&c[2 * S::LANES..]), S::load(&c[3 * S::LANES..]));
            let ok = a.all_within(lim) & b.all_within(lim) & d.all_within(lim) & e.all_within(lim);
            if !ok {
                return false;
            }
        }
        let mut rest = chunks.remainder().chunks_exact(S::LANES);
        for c in &mut rest {
            if !S::load(c).all_within(lim) {
                return false;
            }
        }
        !rest.remainder().iter().any(|&v| outside(v, limit))
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use core::arch::x86_64::{__m256, __m512};

    use super::all_within_with;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn all_within_avx2(values: &[f32], limit: f32) -> bool {
        // SAFETY: runs only on the AVX2 path.
        unsafe { all_within_with::<__m256>(values, limit) }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn all_within_avx512(values: &[f32], limit: f32) -> bool {
        // SAFETY: runs only on the AVX-512 path.
        unsafe { all_within_with::<__m512>(values, limit) }
    }
}

/// Scalar twin of [`all_within`].
pub fn all_within_reference(values: &[f32], limit: f32) -> bool {
    values.iter().all(|v| !v.is_nan() && v.abs() <= limit)
}

/// The first element of `m` (row by row) with `|v| > limit` or NaN, as `(row, col)`.
pub fn first_outside(m: MatRef<'_, f32>, limit: f32) -> Option<(usize, usize)> {
    if m.rows() == 0 || m.cols() == 0 {
        return None;
    }
    if m.col_stride() == 1 || m.cols() == 1 {
        for i in 0..m.rows() {
            let row = m.row(i).expect("unit column stride");
            if !all_within(row, limit) {
                return row.iter().position(|&v| outside(v, limit)).map(|j| (i, j));
            }
        }
        None
    } else {
        m.find(|v| outside(v, limit))
    }
}

/// Scalar twin of [`all_finite`].
pub fn all_finite_reference(values: &[f32]) -> bool {
    values.iter().all(|v| v.is_finite())
}

/// The first non-finite element of `m`, row by row, as `(row, col)`.
pub fn first_non_finite(m: MatRef<'_, f32>) -> Option<(usize, usize)> {
    if m.rows() == 0 || m.cols() == 0 {
        return None;
    }
    if m.col_stride() == 1 || m.cols() == 1 {
        for i in 0..m.rows() {
            let row = m.row(i).expect("unit column stride");
            if !all_finite(row) {
                return row.iter().position(|v| !v.is_finite()).map(|j| (i, j));
            }
        }
        None
    } else {
        m.find(|v| !v.is_finite())
    }
}
