//! `pleas-capi`: the C API of `pleas-core`, for firmware and other C callers.
//!
//! The header is `include/pleas.h`, generated from this crate by cbindgen (`cbindgen.toml`);
//! a test fails when the committed header is stale.
//!
//! # Conventions (those of CMSIS-DSP)
//!
//! - Names are `pleas_<group>_<op>_<type>`, `<type>` being the element type of the data the
//!   function reads (`pleas_gram_update_f32` takes f32 samples; `pleas_ridge_solve_f64` takes
//!   the f64 moments the Gram accumulator produces).
//! - Every function returns a `pleas_status()`; results go to output pointers.
//! - Arguments come in the order: instance (if any), inputs, outputs, caller-owned scratch
//!   with its length. Each scratch or state buffer has a `*_size` query giving its length in
//!   elements.
//! - Nothing allocates, nothing is global: all memory is the caller's, and instances are plain
//!   `#[repr(C)]` structs the caller owns.
//! - Matrices are dense, row-major, without padding: element `(i, j)` of an `r x c` matrix is
//!   at `p[i * c + j]`.
//!
//! # Checks
//!
//! Before any slice is built, every pointer is checked for NULL and alignment, every length
//! for overflow (a buffer's size in bytes must fit in `isize`), and every output or scratch
//! buffer for overlap with the other buffers of the call: these fail with
//! [`pleas_status::PLEAS_ERROR_ARGUMENT`] or [`pleas_status::PLEAS_ERROR_LENGTH`]. A pointer
//! whose length is 0 may be NULL. Pointers documented as optional may be NULL. What cannot be
//! checked stays the caller's duty: that each pointer really addresses as many elements as its
//! length says, and that no other thread writes them during the call.
//!
//! Errors of the core map onto the statuses as documented on `pleas_status()`. On error no
//! output is written (for the Gram accumulator: no sample of the call is counted), except
//! the merged network's buffer of the MLP merge, whose content is then unspecified.
//!
//! # Groups
//!
//! - [`gram`]: streaming accumulation of `sum x x^T`, `sum x t^T` and `sum t^2`.
//! - [`auction`]: maximum-score assignment (auction algorithm) and top-k pair selection.
//! - [`ridge`]: ridge least squares on a principal sub-block of accumulated moments.
//! - [`mlp`]: the whole PLeaS merge of two MLPs (`pleas_mlp_merge_plan_f32`,
//!   `pleas_mlp_merge_f32`).
//! - [`cnn`]: convolutional networks from a compact graph description: the forward pass of
//!   one sample (`pleas_cnn_forward_plan_f32`, `pleas_cnn_forward_f32`, `pleas_cnn_forward_u8`).
//!
//! # Runtime
//!
//! The crate is `#![no_std]`. On bare-metal targets (`target_os = "none"`) it brings its own
//! panic handler, which traps (`udf`) on Arm so that the firmware's fault handler sees it;
//! none of the checked entry points is expected to panic. On hosted targets it links `std`,
//! which provides the panic runtime (and lets the Rust tests call the functions directly).
#![no_std]

#[cfg(not(target_os = "none"))]
extern crate std;

pub mod auction;
mod check;
pub mod cnn;
pub mod cnn_merge;
pub mod gram;
pub mod mlp;
pub mod ridge;
mod samples;
pub mod simd;
mod status;

pub use status::{pleas_status, pleas_status_name};

/// A Rust panic cannot cross into C. Every entry point validates its arguments first, so this
/// is reached only through a bug; on Arm it executes a permanently undefined instruction, which
/// raises a fault that the firmware can report.
#[cfg(all(target_os = "none", not(test)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    #[cfg(target_arch = "arm")]
    // SAFETY: `udf` only raises an exception; it reads and writes no memory.
    unsafe {
        core::arch::asm!("udf #0", options(noreturn, nomem, nostack))
    }
    #[cfg(not(target_arch = "arm"))]
    loop {
        core::hint::spin_loop();
    }
}
