//! The per-path entry of the direct convolutions' per-sample kernels.

/// Defines `sample_on(path, a, x, planes, flat, out)`, which runs the calling module's
/// `$sample::<S, R, VT>(a, x, planes, flat, out)` (an `#[inline(always)]` kernel taking a
/// `$layer`) on the selected SIMD path: compiled into a `#[target_feature]` function with the
/// path's vector type and register tile ([`direct_conv`](super::direct_conv)'s `ROWS` x `VECS`,
/// `AVX2_ROWS` x `AVX2_VECS`, `WIDE_ROWS` x `WIDE_VECS`). The `@wrapper` arm writes one such
/// function.
macro_rules! sample_on_paths {
    ($layer:ident, $sample:ident) => {
        /// The per-sample kernel on the selected path.
        #[allow(unsafe_code)]
        fn sample_on(
            path: $crate::simd::Path,
            a: $layer<'_>,
            x: &[f32],
            planes: &mut [f32],
            flat: &mut [f32],
            out: &mut [f32],
        ) {
            use $crate::forward::direct_conv::{ROWS, VECS};
            match path {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `path` is the selected path, which the CPU supports.
                $crate::simd::Path::Avx512 => unsafe {
                    x86::sample_avx512(a, x, planes, flat, out)
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                $crate::simd::Path::Avx2 => unsafe { x86::sample_avx2(a, x, planes, flat, out) },
                // SAFETY: `f32x8` runs everywhere.
                _ => unsafe { $sample::<::wide::f32x8, ROWS, VECS>(a, x, planes, flat, out) },
            }
        }

        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        mod x86 {
            use core::arch::x86_64::{__m256, __m512};

            use super::{$layer, $sample};
            use $crate::forward::direct_conv::{AVX2_ROWS, AVX2_VECS, WIDE_ROWS, WIDE_VECS};

            sample_on_paths!(@wrapper $layer, $sample, sample_avx2, "avx2,fma",
                __m256, AVX2_ROWS, AVX2_VECS);
            sample_on_paths!(@wrapper $layer, $sample, sample_avx512, "avx512f,avx2,fma",
                __m512, WIDE_ROWS, WIDE_VECS);
        }
    };
    (@wrapper $layer:ident, $sample:ident, $name:ident, $features:literal, $vector:ty,
        $rows:ident, $vecs:ident) => {
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name(
            a: $layer<'_>,
            x: &[f32],
            planes: &mut [f32],
            flat: &mut [f32],
            out: &mut [f32],
        ) {
            // SAFETY: `sample_on` calls this function only on the path whose instruction sets
            // it enables, the path of `$vector`.
            unsafe { $sample::<$vector, $rows, $vecs>(a, x, planes, flat, out) }
        }
    };
}
