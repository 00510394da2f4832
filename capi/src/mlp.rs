//! Reserved: the whole-MLP merge, `pleas_mlp_merge_f32`.
//!
//! Nothing is exported yet. The `no_std` whole-MLP merge is being added to `pleas-core` on
//! its own branch (`mlp-merge-core`); once it lands, this module wraps it with the same
//! conventions as the other groups, and the firmware example (`examples/firmware/`) runs it on
//! weights and merge samples embedded as const arrays. The intended shape, to be fixed against
//! the core's API when it exists (names of the core items are not known yet):
//!
//! - a `#[repr(C)]` description of the two models (layer widths, pointers to the f32 weights
//!   and biases of each, read-only, so they can stay in flash) and of the merge (budget or
//!   per-layer ratios, ridge), filled by the caller;
//! - a plan query, `pleas_mlp_merge_plan_f32(...)`, that validates the description and
//!   writes the sizes the caller must provide: the merged model's weight buffer and the
//!   scratch (Gram state, activations of one batch, auction scratch), in elements, like the
//!   other `*_size` queries;
//! - `pleas_mlp_merge_f32(models, samples, n, ..., merged, scratch, scratch_len)`: inputs,
//!   then outputs (merged weights, an info struct), then caller-owned scratch;
//! - every error of the core's merge mapped onto `pleas_status` in `status.rs`, extending the
//!   enum only where no existing status fits.
//!
//! The header (`include/pleas.h`) is regenerated from this crate, so the new functions appear
//! there as soon as they are written here.
