//! The per-path entry of the direct convolutions' per-sample kernels.

/// Defines `sample_on(path, a, x, planes, flat, out)`, which runs the calling module's
/// `$sample::<S, R, VT>(a, x, planes, flat, out)` (an `#[inline(always)]` kernel taking a
/// `$layer`) on the selected SIMD path: compiled into a `#[target_feature]` function with the
/// path's vector type and register tile ([`direct_conv`](super::direct_conv)'s `ROWS` x `VECS`,
/// `AVX2_ROWS` x `AVX2_VECS`, `WIDE_ROWS` x `WIDE_VECS`).
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

            #[target_feature(enable = "avx2,fma")]
            pub(super) unsafe fn sample_avx2(
                a: $layer<'_>,
                x: &[f32],
                planes: &mut [f32],
                flat: &mut [f32],
                out: &mut [f32],
            ) {
                // SAFETY: this function runs only on the AVX2 path.
                unsafe { $sample::<__m256, AVX2_ROWS, AVX2_VECS>(a, x, planes, flat, out) }
            }

            #[target_feature(enable = "avx512f,avx2,fma")]
            pub(super) unsafe fn sample_avx512(
                a: $layer<'_>,
                x: &[f32],
                planes: &mut [f32],
                flat: &mut [f32],
                out: &mut [f32],
            ) {
                // SAFETY: this function runs only on the AVX-512 path.
                unsafe { $sample::<__m512, WIDE_ROWS, WIDE_VECS>(a, x, planes, flat, out) }
            }
        }
    };
}
