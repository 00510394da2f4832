//! The instruction-set path of the SIMD kernels (`pleas_core::simd`).
//!
//! The first kernel call picks the widest path the CPU supports. Paths may differ in the last
//! bits of a result (different tile shapes change the order of f32 sums); the portable path
//! computes what a microcontroller computes, so a host tool that must reproduce a device's
//! bits (the firmware example's CNN merge) selects it first:
//!
//! ```c
//! pleas_simd_set_path(PLEAS_SIMD_PATH_PORTABLE);
//! ```

use pleas_core::simd::{Path, set_path};

use crate::pleas_status::{self, PLEAS_ERROR_ARGUMENT, PLEAS_SUCCESS};

/// `pleas_simd_set_path()`: `wide` vectors as compiled for the target (SSE2 on x86-64,
/// scalar lanes on a Cortex-M); always available.
pub const PLEAS_SIMD_PATH_PORTABLE: u32 = 0;
/// `pleas_simd_set_path()`: 256-bit AVX2 + FMA (x86-64).
pub const PLEAS_SIMD_PATH_AVX2: u32 = 1;
/// `pleas_simd_set_path()`: 512-bit AVX-512 (x86-64).
pub const PLEAS_SIMD_PATH_AVX512: u32 = 2;

/// Makes every later kernel call, on every thread, use `path` (`PLEAS_SIMD_PATH_*`).
///
/// Errors: `PLEAS_ERROR_ARGUMENT` (an unknown path, or one this CPU or its operating system
/// cannot run; the current path is kept).
#[unsafe(no_mangle)]
pub extern "C" fn pleas_simd_set_path(path: u32) -> pleas_status {
    let path = match path {
        PLEAS_SIMD_PATH_PORTABLE => Path::Portable,
        PLEAS_SIMD_PATH_AVX2 => Path::Avx2,
        PLEAS_SIMD_PATH_AVX512 => Path::Avx512,
        _ => return PLEAS_ERROR_ARGUMENT,
    };
    match set_path(path) {
        Ok(()) => PLEAS_SUCCESS,
        Err(_) => PLEAS_ERROR_ARGUMENT,
    }
}
