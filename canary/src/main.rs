//! The no_std canary binary: computes a small Gram matrix and a 3 x 3 assignment with the core
//! and exits 0 when the results are right, 1 otherwise.
#![no_std]
#![no_main]

use core::panic::PanicInfo;

use pleas_core::assign::{AuctionParams, auction, auction_scratch_len};
use pleas_core::gram::{GramAccumulator, GramParams};
use pleas_core::linalg::{MatMut, MatRef};

#[panic_handler]
fn panic(_: &PanicInfo<'_>) -> ! {
    loop {}
}

/// The host's precompiled `core` is built with unwinding and references this symbol even under
/// `panic = "abort"`; nothing ever calls it.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

#[cfg(feature = "alloc")]
mod heap {
    //! A bump allocator over a static arena, enough for the canary.
    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicUsize, Ordering};

    const ARENA: usize = 1 << 20;

    pub struct Bump {
        arena: UnsafeCell<[u8; ARENA]>,
        next: AtomicUsize,
    }

    // SAFETY: allocation only hands out disjoint ranges, reserved with an atomic counter.
    unsafe impl Sync for Bump {}

    // SAFETY: returned pointers are inside the arena, aligned, disjoint, or null when full.
    unsafe impl GlobalAlloc for Bump {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let base = self.arena.get() as usize;
            let mut start = 0;
            let fetched = self
                .next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |next| {
                    start = (base + next).next_multiple_of(layout.align()) - base;
                    let end = start.checked_add(layout.size())?;
                    (end <= ARENA).then_some(end)
                });
            match fetched {
                Ok(_) => (base + start) as *mut u8,
                Err(_) => core::ptr::null_mut(),
            }
        }

        unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
    }

    #[global_allocator]
    static HEAP: Bump = Bump {
        arena: UnsafeCell::new([0; ARENA]),
        next: AtomicUsize::new(0),
    };
}

#[link(name = "c")]
unsafe extern "C" {}

/// The C entry point (the C runtime provides `_start`).
#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: i32, _argv: *const *const u8) -> i32 {
    const D: usize = 3;
    const N: usize = 4;
    let x: [f32; N * D] = [1.0, 2.0, 0.0, 0.0, 1.0, 1.0, 3.0, 0.0, 2.0, 1.0, 1.0, 1.0];
    let params = GramParams::default();
    let mut storage = [0.0f64; 64];
    let mut workspace = [0.0f32; 8192];
    let len = GramAccumulator::<&mut [f64], &mut [f32]>::workspace_len(D, 0, params);
    if len > workspace.len() {
        return 1;
    }
    let Ok(mut acc) = GramAccumulator::new(D, 0, params, &mut storage[..], &mut workspace[..])
    else {
        return 1;
    };
    let Ok(xv) = MatRef::new(&x[..], N, D) else {
        return 1;
    };
    if acc.push(xv, None).is_err() {
        return 1;
    }
    let mut g = [0.0f64; D * D];
    let Ok(gv) = MatMut::new(&mut g[..], D, D) else {
        return 1;
    };
    if acc.write_gram(gv).is_err() {
        return 1;
    }
    // X^T X, lower triangle: [11; 3 6; 7 2 6].
    let want = [11.0, 0.0, 0.0, 3.0, 6.0, 0.0, 7.0, 2.0, 6.0];
    let ok = g.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-9);
    // The auction matcher on a 3 x 3 similarity: the diagonal is the best assignment.
    let s = [0.9f32, 0.1, 0.3, 0.2, 0.8, 0.1, 0.4, 0.7, 0.6];
    let mut perm = [usize::MAX; 3];
    let mut scratch = [0.0f64; 256];
    let ok = ok
        && match MatRef::new(&s[..], 3, 3) {
            Ok(m) if auction_scratch_len(3) <= scratch.len() => {
                let params = AuctionParams::default();
                auction(m, &params, &mut perm, &mut scratch[..]).is_ok() && perm == [0, 1, 2]
            }
            _ => false,
        };
    #[cfg(feature = "alloc")]
    let ok = ok && {
        let v = alloc_check();
        v == 6
    };
    if ok { 0 } else { 1 }
}

#[cfg(feature = "alloc")]
fn alloc_check() -> usize {
    extern crate alloc;
    let mut v = alloc::vec::Vec::new();
    v.extend_from_slice(&[1usize, 2, 3]);
    v.iter().sum()
}
