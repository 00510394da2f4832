//! Helpers shared by the `pleas` benches: deterministic input generation.

/// A deterministic pseudo-random f32 matrix (row-major `rows x cols`) in `[-1, 1)`, from a
/// 64-bit linear congruential generator (so benches need no RNG dependency).
pub fn random_matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..rows * cols)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// How a bench allocates its large buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pages {
    /// As numpy allocates its arrays on Linux: a buffer of 4 MiB or more is advised to the
    /// kernel for transparent huge pages (`madvise(MADV_HUGEPAGE)` from its first whole 4 KiB
    /// page on, numpy's default since 1.20 on kernels from 4.6). Comparisons with numpy use it
    /// for both sides' operands and outputs, so neither reads memory through a different page
    /// size.
    Numpy,
    /// Plain allocations (4 KiB pages unless the system backs every allocation with huge
    /// pages).
    Plain,
}

impl Pages {
    /// `numpy` or `plain`.
    pub fn parse(name: &str) -> Option<Pages> {
        match name {
            "numpy" => Some(Pages::Numpy),
            "plain" => Some(Pages::Plain),
            _ => None,
        }
    }
}

/// A `Vec` of `len` zeros allocated by the policy `pages`.
pub fn zeroed(len: usize, pages: Pages) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    let bytes = len * size_of::<f32>();
    #[cfg(target_os = "linux")]
    if pages == Pages::Numpy && bytes >= 4 << 20 {
        let p = v.as_mut_ptr() as usize;
        let offset = 4096 - p % 4096;
        // SAFETY: advises the kernel about pages of the allocation just made (a hint: contents
        // and validity are unchanged; it fails harmlessly where huge pages are unsupported).
        #[allow(unsafe_code)]
        unsafe {
            libc::madvise(
                (p + offset) as *mut libc::c_void,
                bytes - offset,
                libc::MADV_HUGEPAGE,
            );
        }
    }
    v.resize(len, 0.0);
    v
}
