//! Streaming Gram accumulation: `G = sum x x^T`, `R = sum x t^T` and `sum t^2` over samples
//! `x` (length `dim`) with targets `t` (length `targets`), fed in batches of any size.
//!
//! ```c
//! size_t len;
//! pleas_gram_state_size_f32(dim, targets, block, &len);    /* doubles */
//! double *state = ...;                                      /* len doubles, caller-owned */
//! pleas_gram_instance_f32 g;
//! pleas_gram_init_f32(&g, dim, targets, block, state, len);
//! pleas_gram_update_f32(&g, x, t, n);                        /* as often as needed */
//! pleas_gram_moments_f32(&g, G, R, sum_tt);                  /* f64 results */
//! ```
//!
//! Samples are multiplied in f32, `block_samples` at a time, and each block is folded into
//! f64 totals, centred on the mean of the first block (see `pleas_core::gram`). The state
//! buffer holds the totals, the centring shift, the pending block and the packing space of the
//! products: it must stay untouched between calls. Its size grows with
//! `dim * (dim + targets)` and, for blocks of up to 320 samples, with
//! `block_samples * (dim + targets)`: small blocks keep it small on a microcontroller.

use pleas_core::gram::{GramAccumulator, GramParams, GramState};
use pleas_core::linalg::{MatMut, MatRef};

use crate::check::{self, disjoint, input, output, product};
use crate::pleas_status::{
    self, PLEAS_ERROR_ARGUMENT, PLEAS_ERROR_LENGTH, PLEAS_ERROR_SCRATCH, PLEAS_ERROR_STATE,
};
use crate::status::run;

/// Marks an instance set up by `pleas_gram_init_f32()` ("PLGR").
const MAGIC: u32 = 0x504C_4752;

/// A Gram accumulator over f32 samples. Set up by `pleas_gram_init_f32()`; every field is
/// written by the library only (read them, never write them).
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy)]
pub struct pleas_gram_instance_f32 {
    /// Features per sample (columns of `x`).
    pub dim: usize,
    /// Targets per sample (columns of `t`); 0 accumulates the Gram only.
    pub targets: usize,
    /// Samples multiplied in f32 before they are folded into the f64 totals.
    pub block_samples: usize,
    /// The caller's state buffer.
    pub state: *mut f64,
    /// Its length in doubles.
    pub state_len: usize,
    /// Samples folded into the f64 totals.
    pub folded: u64,
    /// Samples in the current f32 block, not yet folded (below `block_samples`).
    pub pending: usize,
    /// 1 once the centring shift is set (by the first update), else 0.
    pub shift_set: u32,
    /// Set by `pleas_gram_init_f32()`; other values mean "not initialised".
    pub magic: u32,
}

type Acc<'a> = GramAccumulator<&'a mut [f64], &'a mut [f32]>;

/// The block length for a requested one (0: the core's default).
fn params(block_samples: usize) -> GramParams {
    if block_samples == 0 {
        GramParams::default()
    } else {
        GramParams::with_block_samples(block_samples)
    }
}

/// Element counts of the accumulator's buffers inside the state.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// f64 totals at the front of the state.
    storage: usize,
    /// f32 workspace after them.
    workspace: usize,
    /// The whole state in doubles.
    total: usize,
}

/// The state layout for these dimensions; `PLEAS_ERROR_LENGTH` when `dim` is 0 or the sizes
/// would not fit in memory.
fn layout(dim: usize, targets: usize, params: GramParams) -> Result<Layout, pleas_status> {
    if dim == 0 {
        return Err(PLEAS_ERROR_LENGTH);
    }
    // Keeps the core's size arithmetic far from overflow: with s = dim + targets + 32 (the
    // dimensions rounded up to whole micro-kernel tiles), its buffers are shorter than
    // 3 s^2 + 646 s elements (two tile-major products, packing for up to 320 samples of both
    // operands, the products spilled when a block exceeds 320 samples, and vectors).
    let s = dim as u128 + targets as u128 + 32;
    let bound = s.checked_mul(s + 344).and_then(|v| v.checked_mul(4));
    if bound.is_none_or(|b| b > usize::MAX as u128) {
        return Err(PLEAS_ERROR_LENGTH);
    }
    let storage = Acc::storage_len_for(dim, targets, params);
    let workspace = Acc::workspace_len(dim, targets, params);
    let total = storage
        .checked_add(workspace.div_ceil(2))
        .filter(|&t| t <= isize::MAX as usize / 8)
        .ok_or(PLEAS_ERROR_LENGTH)?;
    Ok(Layout {
        storage,
        workspace,
        total,
    })
}

/// The length in doubles of the state buffer of an accumulator of `dim` features (at least
/// 1), `targets` targets and blocks of `block_samples` samples (0: the default, 4096).
///
/// Errors: `PLEAS_ERROR_ARGUMENT` (`state_len` NULL), `PLEAS_ERROR_LENGTH` (`dim` is 0 or the
/// state would not fit in memory).
///
/// # Safety
///
/// `state_len` must be NULL or point to a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_gram_state_size_f32(
    dim: usize,
    targets: usize,
    block_samples: usize,
    state_len: *mut usize,
) -> pleas_status {
    run(|| {
        check::required(state_len.cast_const(), true)?;
        let lay = layout(dim, targets, params(block_samples))?;
        // SAFETY: checked non-NULL and aligned; writable by contract.
        unsafe { state_len.write(lay.total) };
        Ok(())
    })
}

/// Splits the state into the accumulator's f64 storage and f32 workspace.
///
/// # Safety
///
/// As for `check::Out::slice`: `state` addresses `state_len` doubles owned by this call.
unsafe fn buffers<'a>(state: &mut check::Out<f64>, lay: Layout) -> (&'a mut [f64], &'a mut [f32]) {
    // SAFETY: forwarded contract.
    let whole = unsafe { state.slice() };
    let (storage, rest) = whole.split_at_mut(lay.storage);
    let rest = &mut rest[..lay.workspace.div_ceil(2)];
    // SAFETY: `rest` holds `workspace.div_ceil(2)` doubles, i.e. at least `workspace` f32
    // (same memory, alignment of f64 >= that of f32, every bit pattern is a valid f32), and
    // it is borrowed mutably for as long as the new slice lives.
    let workspace =
        unsafe { core::slice::from_raw_parts_mut(rest.as_mut_ptr().cast::<f32>(), lay.workspace) };
    (storage, workspace)
}

/// Sets up `instance` over the caller's `state` buffer of `state_len` doubles (at least
/// `pleas_gram_state_size_f32()`) for samples of `dim` features (at least 1) and `targets`
/// targets, multiplied in blocks of `block_samples` (0: the default, 4096). The state is
/// cleared; it must not be touched until the accumulator is no longer used.
///
/// Errors: `PLEAS_ERROR_ARGUMENT` (NULL or misaligned pointer, `state` overlapping
/// `instance`), `PLEAS_ERROR_LENGTH` (`dim` 0, sizes beyond memory), `PLEAS_ERROR_SCRATCH`
/// (`state_len` too small).
///
/// # Safety
///
/// `instance` must point to a writable instance, `state` to `state_len` writable doubles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_gram_init_f32(
    instance: *mut pleas_gram_instance_f32,
    dim: usize,
    targets: usize,
    block_samples: usize,
    state: *mut f64,
    state_len: usize,
) -> pleas_status {
    run(|| {
        let this = check::required(instance.cast_const(), true)?;
        let params = params(block_samples);
        let lay = layout(dim, targets, params)?;
        if state_len < lay.total {
            return Err(PLEAS_ERROR_SCRATCH);
        }
        let mut buf = output(state, state_len)?;
        disjoint(&[this, buf.region])?;
        // SAFETY: the state is the caller's for the accumulator (contract), checked above and
        // disjoint from the instance.
        let (storage, workspace) = unsafe { buffers(&mut buf, lay) };
        let acc = Acc::new(dim, targets, params, storage, workspace)?;
        let st = acc.state();
        let value = pleas_gram_instance_f32 {
            dim,
            targets,
            block_samples: acc.params().block_samples,
            state,
            state_len,
            folded: st.folded,
            pending: st.pending,
            shift_set: u32::from(st.shift_set),
            magic: MAGIC,
        };
        // SAFETY: checked non-NULL and aligned; writable by contract.
        unsafe { instance.write(value) };
        Ok(())
    })
}

/// Reads and checks an instance, and gives its state buffer's layout.
///
/// # Safety
///
/// `instance` must be NULL or point to a readable instance.
unsafe fn load(
    instance: *const pleas_gram_instance_f32,
    writable: bool,
) -> Result<
    (
        pleas_gram_instance_f32,
        check::Region,
        Layout,
        check::Out<f64>,
    ),
    pleas_status,
> {
    let this = check::required(instance, writable)?;
    // SAFETY: checked non-NULL and aligned; readable by contract. Read as a copy, so no
    // reference to the caller's instance is held while its state is borrowed.
    let inst = unsafe { instance.read() };
    if inst.magic != MAGIC || inst.block_samples == 0 {
        return Err(PLEAS_ERROR_ARGUMENT);
    }
    let params = GramParams::with_block_samples(inst.block_samples);
    let lay = layout(inst.dim, inst.targets, params)?;
    if inst.state_len < lay.total {
        return Err(PLEAS_ERROR_SCRATCH);
    }
    let buf = output(inst.state, inst.state_len)?;
    disjoint(&[this, buf.region])?;
    Ok((inst, this, lay, buf))
}

/// Rebuilds the accumulator of an instance over its state.
fn resume<'a>(
    inst: &pleas_gram_instance_f32,
    storage: &'a mut [f64],
    workspace: &'a mut [f32],
) -> Result<Acc<'a>, pleas_status> {
    let state = GramState::new(inst.folded, inst.pending, inst.shift_set != 0);
    let params = GramParams::with_block_samples(inst.block_samples);
    Ok(Acc::resume(
        inst.dim,
        inst.targets,
        params,
        storage,
        workspace,
        state,
    )?)
}

/// Writes the accumulator's counters back into the caller's instance.
///
/// # Safety
///
/// `instance` was checked by [`load`] with `writable` and is writable by contract.
unsafe fn store(
    instance: *mut pleas_gram_instance_f32,
    mut inst: pleas_gram_instance_f32,
    st: GramState,
) {
    inst.folded = st.folded;
    inst.pending = st.pending;
    inst.shift_set = u32::from(st.shift_set);
    // SAFETY: forwarded contract.
    unsafe { instance.write(inst) };
}

/// Adds `n` samples: `x` is `n x dim` and `t` is `n x targets` (row-major; `t` may be NULL
/// when `targets` is 0). The whole batch is checked before anything is counted: on error the
/// accumulator is unchanged.
///
/// Errors: `PLEAS_ERROR_ARGUMENT` (NULL or misaligned pointer, uninitialised instance, a batch
/// overlapping the state), `PLEAS_ERROR_LENGTH` (`n * dim` overflows),
/// `PLEAS_ERROR_NAN_INF` (a NaN or infinity in `x` or `t`), `PLEAS_ERROR_OUT_OF_RANGE` (a
/// value beyond `sqrt(FLT_MAX / block_samples) / 2` in magnitude, whose square could overflow
/// the f32 block products), `PLEAS_ERROR_SCRATCH` (the instance's state is too short),
/// `PLEAS_ERROR_STATE` (the instance's counters were changed by the caller).
///
/// # Safety
///
/// `instance` must point to an instance set up by `pleas_gram_init_f32()` whose state buffer
/// is still valid; `x` and `t` must address `n * dim` and `n * targets` floats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_gram_update_f32(
    instance: *mut pleas_gram_instance_f32,
    x: *const f32,
    t: *const f32,
    n: usize,
) -> pleas_status {
    run(|| {
        // SAFETY: readable by contract (checked for NULL inside).
        let (inst, this, lay, mut buf) = unsafe { load(instance, true) }?;
        let xin = input(x, product(n, inst.dim)?)?;
        let tin = input(t, product(n, inst.targets)?)?;
        disjoint(&[this, buf.region, xin.region, tin.region])?;
        // SAFETY: all buffers checked and disjoint from the writable ones; sizes by contract.
        let (xs, ts) = unsafe { (xin.slice(), tin.slice()) };
        // SAFETY: the state is the instance's, checked by `load`.
        let (storage, workspace) = unsafe { buffers(&mut buf, lay) };
        let mut acc = resume(&inst, storage, workspace)?;
        let xv = MatRef::new(xs, n, inst.dim)?;
        let tv = if inst.targets > 0 {
            Some(MatRef::new(ts, n, inst.targets)?)
        } else {
            None
        };
        let result = acc.push(xv, tv);
        let st = acc.state();
        // SAFETY: checked writable by `load`.
        unsafe { store(instance, inst, st) };
        Ok(result?)
    })
}

/// Writes the moments of the samples so far, each to an optional output (NULL: not written):
/// `gram` (`dim x dim`, the full symmetric `sum x x^T`), `cross` (`dim x targets`,
/// `sum x t^T`) and `sum_tt` (`targets`, `sum t^2` per target), in double precision. Reading
/// folds the pending block into the totals (this changes `folded` and `pending`, not the
/// moments); accumulation can go on afterwards.
///
/// Errors: `PLEAS_ERROR_ARGUMENT` (NULL instance, misaligned pointer, uninitialised instance,
/// an output overlapping another buffer), `PLEAS_ERROR_SCRATCH` / `PLEAS_ERROR_STATE` (as for
/// `pleas_gram_update_f32()`).
///
/// # Safety
///
/// `instance` as for `pleas_gram_update_f32()`; each non-NULL output must address as many
/// writable doubles as stated above.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_gram_moments_f32(
    instance: *mut pleas_gram_instance_f32,
    gram: *mut f64,
    cross: *mut f64,
    sum_tt: *mut f64,
) -> pleas_status {
    run(|| {
        // SAFETY: readable by contract (checked for NULL inside).
        let (inst, this, lay, mut buf) = unsafe { load(instance, true) }?;
        let (d, nt) = (inst.dim, inst.targets);
        let optional = |p: *mut f64, len: usize| output(p, if p.is_null() { 0 } else { len });
        let mut g = optional(gram, product(d, d)?)?;
        let mut r = optional(cross, product(d, nt)?)?;
        let mut s = optional(sum_tt, nt)?;
        disjoint(&[this, buf.region, g.region, r.region, s.region])?;
        // SAFETY: the state is the instance's, checked by `load`.
        let (storage, workspace) = unsafe { buffers(&mut buf, lay) };
        let mut acc = resume(&inst, storage, workspace)?;
        let result = (|| {
            if !gram.is_null() {
                // SAFETY: checked, disjoint, writable by contract.
                let g = unsafe { g.slice() };
                acc.write_gram(MatMut::new(&mut *g, d, d)?)?;
                for i in 0..d {
                    for j in 0..i {
                        g[j * d + i] = g[i * d + j];
                    }
                }
            }
            if !cross.is_null() {
                // SAFETY: checked, disjoint, writable by contract.
                acc.write_cross(MatMut::new(unsafe { r.slice() }, d, nt)?)?;
            }
            if !sum_tt.is_null() {
                // SAFETY: checked, disjoint, writable by contract.
                acc.write_sum_tt(unsafe { s.slice() })?;
            }
            Ok::<(), pleas_status>(())
        })();
        let st = acc.state();
        // SAFETY: checked writable by `load`.
        unsafe { store(instance, inst, st) };
        result
    })
}

/// The number of samples accumulated so far, into `count`.
///
/// Errors: `PLEAS_ERROR_ARGUMENT` (NULL or misaligned pointer, uninitialised instance).
///
/// # Safety
///
/// `instance` must point to a readable instance, `count` to a writable `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_gram_count_f32(
    instance: *const pleas_gram_instance_f32,
    count: *mut u64,
) -> pleas_status {
    run(|| {
        let this = check::required(instance, false)?;
        let out = check::required(count.cast_const(), true)?;
        disjoint(&[this, out])?;
        // SAFETY: checked non-NULL and aligned; readable by contract.
        let inst = unsafe { instance.read() };
        if inst.magic != MAGIC {
            return Err(PLEAS_ERROR_ARGUMENT);
        }
        let total = inst
            .folded
            .checked_add(inst.pending as u64)
            .ok_or(PLEAS_ERROR_STATE)?;
        // SAFETY: checked non-NULL and aligned; writable by contract.
        unsafe { count.write(total) };
        Ok(())
    })
}

/// Forgets every sample (the totals go back to zero) and keeps the centring shift, so one
/// instance can accumulate another batch of data of the same kind.
///
/// Errors: as for `pleas_gram_update_f32()` without the data errors.
///
/// # Safety
///
/// As for `pleas_gram_update_f32()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pleas_gram_reset_f32(
    instance: *mut pleas_gram_instance_f32,
) -> pleas_status {
    run(|| {
        // SAFETY: readable by contract (checked for NULL inside).
        let (inst, _, lay, mut buf) = unsafe { load(instance, true) }?;
        // SAFETY: the state is the instance's, checked by `load`.
        let (storage, workspace) = unsafe { buffers(&mut buf, lay) };
        let mut acc = resume(&inst, storage, workspace)?;
        acc.reset();
        let st = acc.state();
        // SAFETY: checked writable by `load`.
        unsafe { store(instance, inst, st) };
        Ok(())
    })
}
