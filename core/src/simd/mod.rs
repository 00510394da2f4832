//! Run-time selection of the instruction-set path of the SIMD kernels.
//!
//! The GEMM/SYRK micro-kernels, the direct convolution, the value checks and the f64 dot
//! products of the Cholesky factorization and triangular solves each exist in up to three
//! variants ([`Path`]):
//!
//! - [`Path::Portable`]: `wide` vectors as compiled for the target (SSE2 on baseline x86-64,
//!   scalar lanes on Cortex-M). Always available.
//! - [`Path::Avx2`]: 256-bit `core::arch::x86_64` intrinsics in `#[target_feature(enable =
//!   "avx2,fma")]` functions.
//! - [`Path::Avx512`]: 512-bit intrinsics in `#[target_feature(enable = "avx512f,...")]`
//!   functions, with 32 vector registers and wider register tiles.
//!
//! The first kernel call probes the CPU once (CPUID, and XGETBV for whether the operating
//! system saves the YMM / ZMM state) and caches the widest supported path in an atomic;
//! [`set_path`] overrides it (the std shim reads `PLEAS_SIMD=portable|avx2|avx512`) and refuses
//! a path the CPU or OS lacks. Targets other than x86-64 have no probe and run the portable path.
//!
//! Paths may differ in the last bits of a result (different tile shapes change the order of
//! f32 sums); a given path gives the same result for any thread count.

use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};

pub(crate) mod lanes;
mod probe;

/// An instruction-set path of the SIMD kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// `wide` vectors as compiled for the target; always available.
    Portable,
    /// 256-bit AVX2 + FMA (x86-64).
    Avx2,
    /// 512-bit AVX-512 F/BW/DQ/VL (x86-64).
    Avx512,
}

impl Path {
    /// Every path, narrowest first.
    pub const ALL: [Path; 3] = [Path::Portable, Path::Avx2, Path::Avx512];

    /// The name [`Path::parse`] accepts: `portable`, `avx2` or `avx512`.
    pub const fn name(self) -> &'static str {
        match self {
            Path::Portable => "portable",
            Path::Avx2 => "avx2",
            Path::Avx512 => "avx512",
        }
    }

    /// The path named `name` (as [`Path::name`], ASCII case-insensitive).
    pub fn parse(name: &str) -> Result<Path, SimdError> {
        Path::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name.trim()))
            .ok_or(SimdError::UnknownName)
    }

    /// Whether this CPU (and its operating system) can run the path.
    pub fn supported(self) -> bool {
        match self {
            Path::Portable => true,
            Path::Avx2 => probe::features().avx2,
            Path::Avx512 => probe::features().avx512,
        }
    }

    const fn code(self) -> u8 {
        match self {
            Path::Portable => 1,
            Path::Avx2 => 2,
            Path::Avx512 => 3,
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a path cannot be selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdError {
    /// The name is none of `portable`, `avx2`, `avx512`.
    UnknownName,
    /// The CPU, or its operating system's saved register state, lacks the path's instructions.
    Unsupported {
        /// The refused path.
        path: Path,
    },
}

impl fmt::Display for SimdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimdError::UnknownName => {
                f.write_str("unknown SIMD path: expected portable, avx2 or avx512")
            }
            SimdError::Unsupported { path } => write!(
                f,
                "SIMD path {path} is not supported by this CPU (or its operating system does not \
                 save the vector registers); the widest supported path is {}",
                best()
            ),
        }
    }
}

impl core::error::Error for SimdError {}

/// The selected path: 0 until the first probe or [`set_path`], else [`Path::code`].
static SELECTED: AtomicU8 = AtomicU8::new(0);

/// The widest path this CPU supports.
pub fn best() -> Path {
    [Path::Avx512, Path::Avx2]
        .into_iter()
        .find(|p| p.supported())
        .unwrap_or(Path::Portable)
}

/// The path the kernels use: the one set by [`set_path`], else [`best`] (probed once).
#[inline]
pub fn path() -> Path {
    match SELECTED.load(Ordering::Relaxed) {
        1 => Path::Portable,
        2 => Path::Avx2,
        3 => Path::Avx512,
        _ => {
            let p = best();
            SELECTED.store(p.code(), Ordering::Relaxed);
            p
        }
    }
}

/// Makes every later kernel call use `path`, for all threads. Refuses (and keeps the current
/// path) when the CPU lacks it. Switching while another thread is inside a kernel is safe; that
/// call finishes on the path it started with.
pub fn set_path(path: Path) -> Result<(), SimdError> {
    if !path.supported() {
        return Err(SimdError::Unsupported { path });
    }
    SELECTED.store(path.code(), Ordering::Relaxed);
    Ok(())
}

/// Runs `f` compiled for the selected path's instruction set: `f` (an `#[inline(always)]`
/// closure) is inlined into a `#[target_feature]` function per path, so plain loops in it are
/// auto-vectorised with 256 or 512-bit vectors, and the x86 kernels it calls can inline.
/// Functions that `f` calls without inlining keep the baseline instruction set.
#[inline(always)]
#[allow(unsafe_code)]
pub(crate) fn vectorised<R>(f: impl FnOnce() -> R) -> R {
    match path() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the selected path is supported by this CPU and OS.
        Path::Avx512 => unsafe { features::avx512(f) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Path::Avx2 => unsafe { features::avx2(f) },
        _ => f(),
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod features {
    /// `f` with AVX2 and FMA enabled. Safety: the CPU supports them.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    /// `f` with AVX-512 F/BW/DQ/VL enabled. Safety: the CPU supports them.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    pub(super) unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}
