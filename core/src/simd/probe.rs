//! The CPU-feature probe: CPUID for the instructions, XGETBV for whether the operating system
//! saves the wider register state on a context switch (without it, using YMM / ZMM registers
//! corrupts them). Probed once, cached in an atomic.

use core::sync::atomic::{AtomicU8, Ordering};

/// What the probe found.
#[derive(Clone, Copy)]
pub(crate) struct Features {
    /// AVX2 + FMA with the YMM state saved.
    pub(crate) avx2: bool,
    /// AVX-512 F, BW, DQ and VL, plus AVX2 + FMA, with the ZMM and mask state saved.
    pub(crate) avx512: bool,
}

/// Bit 0: probed; bit 1: AVX2 + FMA; bit 2: AVX-512.
static FEATURES: AtomicU8 = AtomicU8::new(0);

/// The cached probe result.
#[inline]
pub(crate) fn features() -> Features {
    let mut bits = FEATURES.load(Ordering::Relaxed);
    if bits == 0 {
        let f = detect();
        bits = 1 | (u8::from(f.avx2) << 1) | (u8::from(f.avx512) << 2);
        FEATURES.store(bits, Ordering::Relaxed);
    }
    Features {
        avx2: bits & 2 != 0,
        avx512: bits & 4 != 0,
    }
}

/// No probe off x86-64, and none under Miri (which cannot run CPUID): the portable path only.
#[cfg(any(not(target_arch = "x86_64"), miri))]
fn detect() -> Features {
    Features {
        avx2: false,
        avx512: false,
    }
}

#[cfg(all(target_arch = "x86_64", not(miri)))]
#[allow(unsafe_code)]
fn detect() -> Features {
    use core::arch::x86_64::{__cpuid, __cpuid_count};
    let bit = |v: u32, b: u32| v >> b & 1 == 1;
    // CPUID is always present on x86-64 (the intrinsics are safe from Rust 1.9x on).
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86-64 CPU.
    let (max_leaf, l1, l7) = unsafe { (__cpuid(0).eax, __cpuid(1), __cpuid_count(7, 0)) };
    let osxsave = bit(l1.ecx, 27);
    let (avx, fma) = (bit(l1.ecx, 28), bit(l1.ecx, 12));
    if !osxsave || !avx || max_leaf < 7 {
        return Features {
            avx2: false,
            avx512: false,
        };
    }
    // SAFETY: OSXSAVE is set, so XGETBV is enabled and XCR0 readable.
    let xcr0 = unsafe { xcr0() };
    let ymm_saved = xcr0 & 0b110 == 0b110; // SSE and AVX state
    let zmm_saved = xcr0 & 0b1110_0000 == 0b1110_0000; // opmask, ZMM_Hi256, Hi16_ZMM
    let avx2 = fma && bit(l7.ebx, 5) && ymm_saved;
    // F (16), DQ (17), BW (30), VL (31).
    let avx512 = avx2
        && zmm_saved
        && bit(l7.ebx, 16)
        && bit(l7.ebx, 17)
        && bit(l7.ebx, 30)
        && bit(l7.ebx, 31);
    Features { avx2, avx512 }
}

#[cfg(all(target_arch = "x86_64", not(miri)))]
#[allow(unsafe_code)]
#[target_feature(enable = "xsave")]
unsafe fn xcr0() -> u64 {
    // SAFETY: the caller checked OSXSAVE.
    unsafe { core::arch::x86_64::_xgetbv(0) }
}
