//! The no_std canary binary: computes a small Gram matrix, a 3 x 3 assignment and a whole MLP
//! merge (in static buffers) with the core, and exits 0 when the results are right, 1
//! otherwise.
#![no_std]
#![no_main]

use core::panic::PanicInfo;

use pleas_core::assign::{AuctionParams, auction, auction_scratch_len};
use pleas_core::gram::{GramAccumulator, GramParams};
use pleas_core::linalg::{MatMut, MatRef};
use pleas_core::merge::mlp::{
    Heads, LayerRef, MlpDims, MlpMergeInputs, MlpMergeParams, Samples, mlp_merge, mlp_merge_plan,
};

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
    // The workspace query covers every SIMD path's packing (the 512-bit tiles need the most).
    let mut workspace = [0.0f32; 16384];
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
    let ok = ok && mlp_check();
    #[cfg(feature = "alloc")]
    let ok = ok && {
        let v = alloc_check();
        v == 6
    };
    if ok { 0 } else { 1 }
}

/// `y = relu?(W x + b)` of one layer.
fn layer(w: &[f32], b: &[f32], x: &[f32], y: &mut [f32], relu: bool) {
    let cols = x.len();
    for (o, v) in y.iter_mut().enumerate() {
        let mut acc = b[o];
        for j in 0..cols {
            acc += w[o * cols + j] * x[j];
        }
        *v = if relu { acc.max(0.0) } else { acc };
    }
}

/// A 4-3-2 MLP merged at budget 1.0 with a copy of itself whose hidden units are reversed:
/// the merged network computes the model's logits.
fn mlp_check() -> bool {
    let w0 = [
        0.5f32, -0.2, 0.1, 0.3, -0.4, 0.6, 0.2, -0.1, 0.3, 0.3, -0.5, 0.2,
    ];
    let b0 = [0.1f32, 0.2, -0.1];
    let w1 = [0.7f32, -0.3, 0.2, -0.6, 0.4, 0.5];
    let b1 = [0.05f32, -0.05];
    // The copy: hidden unit i is unit 2 - i of the model.
    let mut v0 = [0.0f32; 12];
    let mut c0 = [0.0f32; 3];
    let mut v1 = [0.0f32; 6];
    for i in 0..3 {
        v0[i * 4..(i + 1) * 4].copy_from_slice(&w0[(2 - i) * 4..(3 - i) * 4]);
        c0[i] = b0[2 - i];
        for o in 0..2 {
            v1[o * 3 + i] = w1[o * 3 + (2 - i)];
        }
    }
    let a = [
        LayerRef {
            weight: &w0,
            bias: Some(&b0),
        },
        LayerRef {
            weight: &w1,
            bias: Some(&b1),
        },
    ];
    let b = [
        LayerRef {
            weight: &v0,
            bias: Some(&c0),
        },
        LayerRef {
            weight: &v1,
            bias: Some(&b1),
        },
    ];
    let mut samples = [0.0f32; 8 * 4];
    for (i, x) in samples.iter_mut().enumerate() {
        *x = ((i * 7 + 3) % 11) as f32 / 5.0 - 1.0;
    }
    let dims = MlpDims {
        inputs: 4,
        hidden: &[3],
        classes: 2,
        bias: true,
    };
    let params = MlpMergeParams::default();
    let Ok(plan) = mlp_merge_plan(&dims, Heads::Shared, 8, 1.0, &params) else {
        return false;
    };
    let mut out = [0.0f32; 64];
    let mut scratch = [0.0f64; 512];
    let mut indices = [0usize; 16];
    if plan.output_len > out.len() || plan.scratch_len > scratch.len() || plan.index_len > 16 {
        return false;
    }
    let inputs = MlpMergeInputs {
        dims,
        heads: Heads::Shared,
        a: &a,
        b: &b,
        samples: Samples::F32(&samples),
        budget: 1.0,
    };
    if mlp_merge(&inputs, &params, &mut out, &mut scratch, &mut indices).is_err() {
        return false;
    }
    let (Some(b0r), Some(b1r)) = (plan.bias_range(0), plan.bias_range(1)) else {
        return false;
    };
    let x = &samples[..4];
    let (mut h, mut y, mut hm, mut ym) = ([0.0f32; 3], [0.0f32; 2], [0.0f32; 3], [0.0f32; 2]);
    layer(&w0, &b0, x, &mut h, true);
    layer(&w1, &b1, &h, &mut y, false);
    layer(&out[plan.weight_range(0)], &out[b0r], x, &mut hm, true);
    layer(&out[plan.weight_range(1)], &out[b1r], &hm, &mut ym, false);
    y.iter().zip(&ym).all(|(p, q)| (p - q).abs() < 1e-4)
}

#[cfg(feature = "alloc")]
fn alloc_check() -> usize {
    extern crate alloc;
    let mut v = alloc::vec::Vec::new();
    v.extend_from_slice(&[1usize, 2, 3]);
    v.iter().sum()
}
