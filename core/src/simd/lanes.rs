//! A small f32 vector trait over which kernels are written once and monomorphised per path:
//! `wide::f32x8` (portable), `__m256` (AVX2 + FMA) and `__m512` (AVX-512).
//!
//! The x86 methods are `#[inline(always)]` wrappers of `core::arch` intrinsics; they compile to
//! 256 / 512-bit instructions only once inlined into a `#[target_feature]` function (each
//! kernel's per-path entry point), and may only run on a CPU with the feature: callers reach
//! them only when [`crate::simd::path`] selects that path. Hence every method is `unsafe`.
#![allow(unsafe_code)]

use wide::f32x8;

/// Operations of one f32 vector type.
// Without `alloc` only the value checks use it (the direct convolution is an `alloc` layer).
#[cfg_attr(not(feature = "alloc"), allow(dead_code))]
pub(crate) trait F32Lanes: Copy {
    /// Lanes per vector.
    const LANES: usize;
    /// All lanes zero.
    unsafe fn zero() -> Self;
    /// All lanes `v`.
    unsafe fn splat(v: f32) -> Self;
    /// The first `LANES` values of `s` (panics if shorter).
    unsafe fn load(s: &[f32]) -> Self;
    /// `LANES` values from `p` on, without a bounds check (for inner loops whose bounds the
    /// caller checked once). Safety: `p .. p + LANES` lies inside one live `f32` slice.
    unsafe fn load_at(p: *const f32) -> Self;
    /// Writes the lanes to the first `LANES` values of `s` (panics if shorter).
    unsafe fn store(self, s: &mut [f32]);
    /// Writes the lanes to `p .. p + LANES` without a bounds check. Safety: that range lies
    /// inside one live, writable `f32` slice.
    unsafe fn store_at(self, p: *mut f32);
    /// `self + b`, lane by lane.
    unsafe fn add(self, b: Self) -> Self;
    /// `self * b + c`, fused.
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    /// Whether every lane `v` has `|v| <= limit` (false for NaN).
    unsafe fn all_within(self, limit: Self) -> bool;
}

impl F32Lanes for f32x8 {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> Self {
        f32x8::ZERO
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        f32x8::splat(v)
    }
    #[inline(always)]
    unsafe fn load(s: &[f32]) -> Self {
        f32x8::from(<[f32; 8]>::try_from(&s[..8]).unwrap())
    }
    #[inline(always)]
    unsafe fn load_at(p: *const f32) -> Self {
        // SAFETY: the caller guarantees `p .. p + 8` is readable.
        f32x8::from(unsafe { core::ptr::read_unaligned(p.cast::<[f32; 8]>()) })
    }
    #[inline(always)]
    unsafe fn store(self, s: &mut [f32]) {
        s[..8].copy_from_slice(&self.to_array());
    }
    #[inline(always)]
    unsafe fn store_at(self, p: *mut f32) {
        // SAFETY: the caller guarantees `p .. p + 8` is writable.
        unsafe { core::ptr::write_unaligned(p.cast::<[f32; 8]>(), self.to_array()) }
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        self + b
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        f32x8::mul_add(self, b, c)
    }
    #[inline(always)]
    unsafe fn all_within(self, limit: Self) -> bool {
        self.abs().simd_le(limit).all()
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    use super::F32Lanes;

    impl F32Lanes for __m256 {
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            unsafe { _mm256_set1_ps(v) }
        }
        #[inline(always)]
        unsafe fn load(s: &[f32]) -> Self {
            unsafe { _mm256_loadu_ps(s[..8].as_ptr()) }
        }
        #[inline(always)]
        unsafe fn load_at(p: *const f32) -> Self {
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(self, s: &mut [f32]) {
            unsafe { _mm256_storeu_ps(s[..8].as_mut_ptr(), self) }
        }
        #[inline(always)]
        unsafe fn store_at(self, p: *mut f32) {
            unsafe { _mm256_storeu_ps(p, self) }
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            unsafe { _mm256_add_ps(self, b) }
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            unsafe { _mm256_fmadd_ps(self, b, c) }
        }
        #[inline(always)]
        unsafe fn all_within(self, limit: Self) -> bool {
            unsafe {
                let abs = _mm256_andnot_ps(_mm256_set1_ps(-0.0), self);
                _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(abs, limit)) == 0xff
            }
        }
    }

    impl F32Lanes for __m512 {
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            unsafe { _mm512_set1_ps(v) }
        }
        #[inline(always)]
        unsafe fn load(s: &[f32]) -> Self {
            unsafe { _mm512_loadu_ps(s[..16].as_ptr()) }
        }
        #[inline(always)]
        unsafe fn load_at(p: *const f32) -> Self {
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(self, s: &mut [f32]) {
            unsafe { _mm512_storeu_ps(s[..16].as_mut_ptr(), self) }
        }
        #[inline(always)]
        unsafe fn store_at(self, p: *mut f32) {
            unsafe { _mm512_storeu_ps(p, self) }
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            unsafe { _mm512_add_ps(self, b) }
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, c: Self) -> Self {
            unsafe { _mm512_fmadd_ps(self, b, c) }
        }
        #[inline(always)]
        unsafe fn all_within(self, limit: Self) -> bool {
            unsafe { _mm512_cmp_ps_mask::<_CMP_LE_OQ>(_mm512_abs_ps(self), limit) == 0xffff }
        }
    }
}
