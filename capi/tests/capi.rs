//! The C API called as C would call it (through the `extern "C"` functions and raw pointers):
//! results against direct computations, and every error status the checks and the core's
//! errors map to.

use std::ffi::CStr;
use std::ptr::{null, null_mut};

use pleas_capi::auction::*;
use pleas_capi::gram::*;
use pleas_capi::pleas_status::{self, *};
use pleas_capi::ridge::*;

/// A small deterministic generator (xorshift) of values in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn name(s: i32) -> String {
    // SAFETY: `pleas_status_name` returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(pleas_capi::pleas_status_name(s)) }
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn status_names() {
    assert_eq!(name(0), "PLEAS_SUCCESS");
    assert_eq!(name(PLEAS_ERROR_NAN_INF as i32), "PLEAS_ERROR_NAN_INF");
    assert_eq!(name(-11), "PLEAS_ERROR_INTERNAL");
    assert_eq!(name(1), "PLEAS_STATUS_UNKNOWN");
    assert_eq!(name(i32::MIN), "PLEAS_STATUS_UNKNOWN");
    // The CMSIS-DSP values.
    assert_eq!(
        [
            PLEAS_ERROR_ARGUMENT,
            PLEAS_ERROR_LENGTH,
            PLEAS_ERROR_SIZE_MISMATCH,
            PLEAS_ERROR_NAN_INF,
            PLEAS_ERROR_SINGULAR,
        ]
        .map(|s| s as i32),
        [-1, -2, -3, -4, -5]
    );
}

/// A Gram accumulator with its state buffer.
struct Gram {
    inst: Box<pleas_gram_instance_f32>,
    _state: Vec<f64>,
}

fn state_size(dim: usize, targets: usize, block: usize) -> Result<usize, pleas_status> {
    let mut len = 0;
    // SAFETY: `len` is a valid output.
    match unsafe { pleas_gram_state_size_f32(dim, targets, block, &mut len) } {
        PLEAS_SUCCESS => Ok(len),
        s => Err(s),
    }
}

fn gram(dim: usize, targets: usize, block: usize) -> Gram {
    let len = state_size(dim, targets, block).unwrap();
    let mut state = vec![f64::NAN; len];
    // SAFETY: all-zero bits are a valid instance (the library overwrites it).
    let mut inst: Box<pleas_gram_instance_f32> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: valid instance and state of `len` doubles.
    let s =
        unsafe { pleas_gram_init_f32(&mut *inst, dim, targets, block, state.as_mut_ptr(), len) };
    assert_eq!(s, PLEAS_SUCCESS);
    Gram {
        inst,
        _state: state,
    }
}

impl Gram {
    fn update(&mut self, x: &[f32], t: &[f32], n: usize) -> pleas_status {
        let tp = if t.is_empty() { null() } else { t.as_ptr() };
        // SAFETY: the instance is initialised; `x` and `t` hold `n` rows.
        unsafe { pleas_gram_update_f32(&mut *self.inst, x.as_ptr(), tp, n) }
    }

    fn count(&self) -> u64 {
        let mut c = u64::MAX;
        // SAFETY: valid instance and output.
        let s = unsafe { pleas_gram_count_f32(&*self.inst, &mut c) };
        assert_eq!(s, PLEAS_SUCCESS);
        c
    }

    fn moments(&mut self) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (d, t) = (self.inst.dim, self.inst.targets);
        let (mut g, mut r, mut s) = (vec![0.0; d * d], vec![0.0; d * t], vec![0.0; t]);
        // SAFETY: outputs of the documented lengths.
        let st = unsafe {
            pleas_gram_moments_f32(
                &mut *self.inst,
                g.as_mut_ptr(),
                r.as_mut_ptr(),
                s.as_mut_ptr(),
            )
        };
        assert_eq!(st, PLEAS_SUCCESS);
        (g, r, s)
    }
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

#[test]
fn gram_streams_the_moments() {
    let (d, t, n) = (4, 2, 29);
    let mut rng = Rng(7);
    let x: Vec<f32> = rng.vec(n * d).iter().map(|v| v + 3.0).collect();
    let y = rng.vec(n * t);
    // Blocks of 4 samples, batches that leave partial blocks pending.
    let mut g = gram(d, t, 4);
    assert_eq!(g.inst.block_samples, 4);
    let mut start = 0;
    for len in [1, 5, 0, 3, 20] {
        let s = g.update(&x[start * d..], &y[start * t..], len);
        assert_eq!(s, PLEAS_SUCCESS);
        start += len;
    }
    assert_eq!(g.count(), n as u64);
    let (gm, rm, sm) = g.moments();
    for i in 0..d {
        for j in 0..d {
            let want: f64 = (0..n)
                .map(|s| f64::from(x[s * d + i]) * f64::from(x[s * d + j]))
                .sum();
            assert!(close(gm[i * d + j], want, 1e-5), "G[{i},{j}]");
        }
        for o in 0..t {
            let want: f64 = (0..n)
                .map(|s| f64::from(x[s * d + i]) * f64::from(y[s * t + o]))
                .sum();
            assert!(close(rm[i * t + o], want, 1e-5), "R[{i},{o}]");
        }
    }
    for o in 0..t {
        let want: f64 = (0..n).map(|s| f64::from(y[s * t + o]).powi(2)).sum();
        assert!(close(sm[o], want, 1e-5), "sum t^2 [{o}]");
    }
    // Reading folded the pending block; the moments are unchanged by a second read, and NULL
    // outputs are skipped.
    assert_eq!(g.inst.pending, 0);
    let (g2, _, _) = g.moments();
    assert_eq!(gm, g2);
    // SAFETY: NULL outputs are allowed.
    let s = unsafe { pleas_gram_moments_f32(&mut *g.inst, null_mut(), null_mut(), null_mut()) };
    assert_eq!(s, PLEAS_SUCCESS);
    // Reset forgets the samples.
    // SAFETY: initialised instance.
    assert_eq!(unsafe { pleas_gram_reset_f32(&mut *g.inst) }, PLEAS_SUCCESS);
    assert_eq!(g.count(), 0);
    assert!(g.moments().0.iter().all(|v| *v == 0.0));
}

#[test]
fn gram_without_targets_and_empty_batches() {
    let mut g = gram(3, 0, 0);
    assert_eq!(g.inst.block_samples, 4096);
    // n = 0: any pointer, NULL included.
    // SAFETY: nothing is read for n = 0.
    let s = unsafe { pleas_gram_update_f32(&mut *g.inst, null(), null(), 0) };
    assert_eq!(s, PLEAS_SUCCESS);
    assert_eq!(g.update(&[1.0, 2.0, 3.0], &[], 1), PLEAS_SUCCESS);
    let (gm, r, s) = g.moments();
    assert_eq!(gm, [1.0, 2.0, 3.0, 2.0, 4.0, 6.0, 3.0, 6.0, 9.0]);
    assert!(r.is_empty() && s.is_empty());
}

#[test]
fn gram_errors() {
    // Size queries.
    // SAFETY: NULL output is rejected before any write.
    let s = unsafe { pleas_gram_state_size_f32(3, 1, 0, null_mut()) };
    assert_eq!(s, PLEAS_ERROR_ARGUMENT);
    assert_eq!(state_size(0, 1, 0), Err(PLEAS_ERROR_LENGTH));
    assert_eq!(state_size(usize::MAX / 2, 1, 0), Err(PLEAS_ERROR_LENGTH));
    assert_eq!(state_size(1 << 31, 1 << 31, 0), Err(PLEAS_ERROR_LENGTH));
    let needed = state_size(3, 1, 8).unwrap();

    // Init.
    let mut state = vec![0.0f64; needed + 1];
    // SAFETY: all-zero bits are a valid instance.
    let mut inst: pleas_gram_instance_f32 = unsafe { std::mem::zeroed() };
    // SAFETY: the calls below pass valid or NULL pointers with matching lengths.
    unsafe {
        let p = state.as_mut_ptr();
        assert_eq!(
            pleas_gram_init_f32(null_mut(), 3, 1, 8, p, needed),
            PLEAS_ERROR_ARGUMENT
        );
        assert_eq!(
            pleas_gram_init_f32(&mut inst, 3, 1, 8, null_mut(), needed),
            PLEAS_ERROR_ARGUMENT
        );
        assert_eq!(
            pleas_gram_init_f32(&mut inst, 3, 1, 8, p, needed - 1),
            PLEAS_ERROR_SCRATCH
        );
        assert_eq!(
            pleas_gram_init_f32(&mut inst, 0, 1, 8, p, needed),
            PLEAS_ERROR_LENGTH
        );
        // A misaligned state.
        let odd = p.cast::<u8>().add(1).cast::<f64>();
        assert_eq!(
            pleas_gram_init_f32(&mut inst, 3, 1, 8, odd, needed),
            PLEAS_ERROR_ARGUMENT
        );
        // The instance inside its own state.
        let mut big = vec![0.0f64; needed + 16];
        let inside = big.as_mut_ptr().add(2).cast::<pleas_gram_instance_f32>();
        assert_eq!(
            pleas_gram_init_f32(inside, 3, 1, 8, big.as_mut_ptr(), needed + 16),
            PLEAS_ERROR_ARGUMENT
        );
    }

    // Update and read on an instance that was never initialised.
    // SAFETY: all-zero instance, valid data.
    unsafe {
        let mut zero: pleas_gram_instance_f32 = std::mem::zeroed();
        let x = [1.0f32; 3];
        let t = [1.0f32];
        assert_eq!(
            pleas_gram_update_f32(&mut zero, x.as_ptr(), t.as_ptr(), 1),
            PLEAS_ERROR_ARGUMENT
        );
        assert_eq!(
            pleas_gram_moments_f32(&mut zero, null_mut(), null_mut(), null_mut()),
            PLEAS_ERROR_ARGUMENT
        );
        let mut c = 0;
        assert_eq!(pleas_gram_count_f32(&zero, &mut c), PLEAS_ERROR_ARGUMENT);
        assert_eq!(pleas_gram_count_f32(null(), &mut c), PLEAS_ERROR_ARGUMENT);
        assert_eq!(pleas_gram_reset_f32(null_mut()), PLEAS_ERROR_ARGUMENT);
    }

    let mut g = gram(3, 1, 8);
    let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let t = [1.0f32, 2.0];
    assert_eq!(g.update(&x, &t, 2), PLEAS_SUCCESS);
    // Data errors leave the accumulator unchanged.
    let before = g.moments();
    let bad = |v: f32| {
        let mut x = x;
        x[4] = v;
        x
    };
    assert_eq!(g.update(&bad(f32::NAN), &t, 2), PLEAS_ERROR_NAN_INF);
    assert_eq!(
        g.update(&bad(f32::NEG_INFINITY), &t, 2),
        PLEAS_ERROR_NAN_INF
    );
    assert_eq!(g.update(&x, &[1.0, f32::INFINITY], 2), PLEAS_ERROR_NAN_INF);
    assert_eq!(g.update(&bad(1e30), &t, 2), PLEAS_ERROR_OUT_OF_RANGE);
    assert_eq!(g.count(), 2);
    assert_eq!(g.moments(), before);
    // SAFETY: the pointers below are NULL, misaligned or overlapping, all rejected unread.
    unsafe {
        let p = &mut *g.inst as *mut pleas_gram_instance_f32;
        // Targets missing, samples missing.
        assert_eq!(
            pleas_gram_update_f32(p, x.as_ptr(), null(), 2),
            PLEAS_ERROR_ARGUMENT
        );
        assert_eq!(
            pleas_gram_update_f32(p, null(), t.as_ptr(), 2),
            PLEAS_ERROR_ARGUMENT
        );
        // Misaligned samples.
        let odd = x.as_ptr().cast::<u8>().add(2).cast::<f32>();
        assert_eq!(
            pleas_gram_update_f32(p, odd, t.as_ptr(), 1),
            PLEAS_ERROR_ARGUMENT
        );
        // n * dim overflows.
        assert_eq!(
            pleas_gram_update_f32(p, x.as_ptr(), t.as_ptr(), usize::MAX / 2),
            PLEAS_ERROR_LENGTH
        );
        // Samples read from the state itself.
        let st = (*p).state.cast::<f32>().cast_const();
        assert_eq!(
            pleas_gram_update_f32(p, st, t.as_ptr(), 1),
            PLEAS_ERROR_ARGUMENT
        );
        // An output overlapping the state, or another output.
        let mut out = vec![0.0f64; 9];
        assert_eq!(
            pleas_gram_moments_f32(p, (*p).state, null_mut(), null_mut()),
            PLEAS_ERROR_ARGUMENT
        );
        assert_eq!(
            pleas_gram_moments_f32(p, out.as_mut_ptr(), out.as_mut_ptr().add(8), null_mut()),
            PLEAS_ERROR_ARGUMENT
        );
    }
    assert_eq!(g.count(), 2);
    // Counters changed behind the library's back.
    g.inst.pending = 8;
    assert_eq!(g.update(&x, &t, 2), PLEAS_ERROR_STATE);
    g.inst.pending = 1;
    g.inst.shift_set = 0;
    assert_eq!(g.update(&x, &t, 2), PLEAS_ERROR_STATE);
    g.inst.shift_set = 1;
    g.inst.state_len -= 1;
    assert_eq!(g.update(&x, &t, 2), PLEAS_ERROR_SCRATCH);
    g.inst.state_len += 1;
    g.inst.magic ^= 1;
    assert_eq!(g.update(&x, &t, 2), PLEAS_ERROR_ARGUMENT);
}

fn auction(
    scores: &[f32],
    rows: usize,
    cols: usize,
) -> Result<(Vec<usize>, pleas_auction_info), pleas_status> {
    let mut len = 0;
    // SAFETY: valid output.
    let s = unsafe { pleas_auction_scratch_size_f32(rows, cols, &mut len) };
    if s != PLEAS_SUCCESS {
        return Err(s);
    }
    let mut scratch = vec![0.0; len];
    let mut perm = vec![usize::MAX; rows];
    let mut info = pleas_auction_info::default();
    // SAFETY: buffers of the documented lengths.
    let s = unsafe {
        pleas_auction_f32(
            scores.as_ptr(),
            rows,
            cols,
            null(),
            perm.as_mut_ptr(),
            &mut info,
            scratch.as_mut_ptr(),
            len,
        )
    };
    if s != PLEAS_SUCCESS {
        return Err(s);
    }
    Ok((perm, info))
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for i in 0..n {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

#[test]
fn auction_finds_the_best_assignment() {
    let s = [0.9f32, 0.1, 0.3, 0.2, 0.8, 0.1, 0.4, 0.7, 0.6];
    let (perm, info) = auction(&s, 3, 3).unwrap();
    assert_eq!(perm, [0, 1, 2]);
    assert!(info.optimality_bound < 1e-9 && info.integer == 0);
    // Integer scores are solved exactly, against brute force.
    let mut rng = Rng(3);
    for _ in 0..20 {
        let n = 5;
        let s: Vec<f32> = rng.vec(n * n).iter().map(|v| (v * 20.0).round()).collect();
        let (perm, info) = auction(&s, n, n).unwrap();
        assert_eq!(info.integer, 1);
        let total = |p: &[usize]| -> f32 { p.iter().enumerate().map(|(i, &j)| s[i * n + j]).sum() };
        let best = permutations(n)
            .iter()
            .map(|p| total(p))
            .fold(f32::MIN, f32::max);
        assert_eq!(total(&perm), best);
    }
    // Rectangular: two rows, three columns.
    let (perm, _) = auction(&[0.0, 0.0, 1.0, 1.0, 0.0, 0.0], 2, 3).unwrap();
    assert_eq!(perm, [2, 0]);
    // Empty.
    assert_eq!(auction(&[], 0, 0).unwrap().0, Vec::<usize>::new());
    // Doubles, with explicit parameters, on a 5 x 5 matrix (the 3 x 3 one above is too short
    // for the 5 x 5 call below: Miri caught the out-of-bounds read in an earlier version).
    let s64: Vec<f64> = rng.vec(25).iter().map(|&v| f64::from(v)).collect();
    assert_eq!(s64.len(), 5 * 5);
    let mut params = pleas_auction_params {
        rel_tol: 0.0,
        initial_epsilon: 0.0,
        scaling: 0.0,
    };
    // SAFETY: valid output.
    let s = unsafe { pleas_auction_params_init(&mut params) };
    assert_eq!(s, PLEAS_SUCCESS);
    assert_eq!(params.scaling, 5.0);
    let (mut perm, mut scratch) = (vec![0usize; 5], vec![0.0; 5 * 64]);
    // SAFETY: buffers of the documented lengths.
    let st = unsafe {
        pleas_auction_f64(
            s64.as_ptr(),
            5,
            5,
            &params,
            perm.as_mut_ptr(),
            null_mut(),
            scratch.as_mut_ptr(),
            scratch.len(),
        )
    };
    assert_eq!(st, PLEAS_SUCCESS);
    let mut sorted = perm.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [0, 1, 2, 3, 4]);
}

#[test]
fn auction_errors() {
    let s = [0.9f32, 0.1, 0.3, 0.2, 0.8, 0.1, 0.4, 0.7, 0.6];
    assert_eq!(auction(&s, 3, 2).unwrap_err(), PLEAS_ERROR_SIZE_MISMATCH);
    let mut nan = s;
    nan[5] = f32::NAN;
    assert_eq!(auction(&nan, 3, 3).unwrap_err(), PLEAS_ERROR_NAN_INF);
    nan[5] = f32::INFINITY;
    assert_eq!(auction(&nan, 3, 3).unwrap_err(), PLEAS_ERROR_NAN_INF);
    let mut len = 0;
    // SAFETY: the calls below pass valid, NULL, short or overlapping buffers, all checked.
    unsafe {
        assert_eq!(
            pleas_auction_scratch_size_f32(3, 3, null_mut()),
            PLEAS_ERROR_ARGUMENT
        );
        assert_eq!(
            pleas_auction_scratch_size_f32(usize::MAX, usize::MAX, &mut len),
            PLEAS_ERROR_LENGTH
        );
        assert_eq!(
            pleas_auction_scratch_size_f32(3, 3, &mut len),
            PLEAS_SUCCESS
        );
        let mut scratch = vec![0.0; len];
        let mut perm = [0usize; 3];
        let call = |scores: *const f32,
                    params: *const pleas_auction_params,
                    perm: *mut usize,
                    scratch: *mut f64,
                    slen: usize| {
            pleas_auction_f32(scores, 3, 3, params, perm, null_mut(), scratch, slen)
        };
        let (sp, pp, wp) = (s.as_ptr(), perm.as_mut_ptr(), scratch.as_mut_ptr());
        assert_eq!(call(sp, null(), pp, wp, len), PLEAS_SUCCESS);
        assert_eq!(call(sp, null(), pp, wp, len - 1), PLEAS_ERROR_SCRATCH);
        assert_eq!(call(null(), null(), pp, wp, len), PLEAS_ERROR_ARGUMENT);
        assert_eq!(call(sp, null(), null_mut(), wp, len), PLEAS_ERROR_ARGUMENT);
        assert_eq!(call(sp, null(), pp, null_mut(), len), PLEAS_ERROR_ARGUMENT);
        // The permutation inside the scratch.
        assert_eq!(call(sp, null(), wp.cast(), wp, len), PLEAS_ERROR_ARGUMENT);
        // Parameters out of range.
        let mut params = pleas_auction_params {
            rel_tol: 1e-9,
            initial_epsilon: 0.003,
            scaling: 1.0,
        };
        assert_eq!(call(sp, &params, pp, wp, len), PLEAS_ERROR_ARGUMENT);
        params.scaling = 5.0;
        params.rel_tol = f64::NAN;
        assert_eq!(call(sp, &params, pp, wp, len), PLEAS_ERROR_ARGUMENT);
        // Rows > cols also through the solver itself.
        assert_eq!(
            pleas_auction_f32(sp, 3, 2, null(), pp, null_mut(), wp, len),
            PLEAS_ERROR_SIZE_MISMATCH
        );
        assert_eq!(
            pleas_auction_f32(sp, usize::MAX, 2, null(), pp, null_mut(), wp, len),
            PLEAS_ERROR_LENGTH
        );
    }
}

#[test]
fn select_top_orders_pairs() {
    let s = [0.9f32, 0.1, 0.3, 0.2, 0.8, 0.1, 0.4, 0.7, 0.6];
    let perm = [0usize, 1, 2];
    let mut order = [usize::MAX; 3];
    // SAFETY: the calls below pass buffers of the documented lengths, or invalid ones that
    // are rejected unread.
    unsafe {
        let st = pleas_select_top_f32(s.as_ptr(), 3, 3, perm.as_ptr(), 2, order.as_mut_ptr());
        assert_eq!(st, PLEAS_SUCCESS);
        assert_eq!(order, [0, 1, 2]);
        let st = pleas_select_top_f32(s.as_ptr(), 3, 3, perm.as_ptr(), 1, order.as_mut_ptr());
        assert_eq!(st, PLEAS_SUCCESS);
        assert_eq!(order, [0, 1, 2]);
        let worst = [2usize, 1, 0];
        let st = pleas_select_top_f32(s.as_ptr(), 3, 3, worst.as_ptr(), 1, order.as_mut_ptr());
        assert_eq!(st, PLEAS_SUCCESS);
        assert_eq!(order, [1, 0, 2]);
        let st = pleas_select_top_f32(s.as_ptr(), 3, 3, perm.as_ptr(), 4, order.as_mut_ptr());
        assert_eq!(st, PLEAS_ERROR_LENGTH);
        let bad = [0usize, 1, 3];
        let st = pleas_select_top_f32(s.as_ptr(), 3, 3, bad.as_ptr(), 1, order.as_mut_ptr());
        assert_eq!(st, PLEAS_ERROR_INDEX);
        let mut nan = s;
        nan[4] = f32::NAN;
        let st = pleas_select_top_f32(nan.as_ptr(), 3, 3, perm.as_ptr(), 1, order.as_mut_ptr());
        assert_eq!(st, PLEAS_ERROR_NAN_INF);
        let st = pleas_select_top_f32(s.as_ptr(), 3, 3, null(), 1, order.as_mut_ptr());
        assert_eq!(st, PLEAS_ERROR_ARGUMENT);
        let mut alias = [0usize, 1, 2];
        let st = pleas_select_top_f32(s.as_ptr(), 3, 3, alias.as_ptr(), 1, alias.as_mut_ptr());
        assert_eq!(st, PLEAS_ERROR_ARGUMENT);
    }
}

/// Moments of samples whose targets are an exact linear function of them.
fn planted(d: usize, t: usize, n: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f32>) {
    let mut rng = Rng(11);
    let w: Vec<f32> = rng.vec(t * d);
    let x = rng.vec(n * d);
    let y: Vec<f32> = (0..n)
        .flat_map(|s| {
            let (x, w) = (&x, &w);
            (0..t).map(move |o| (0..d).map(|i| w[o * d + i] * x[s * d + i]).sum::<f32>())
        })
        .collect();
    let mut g = gram(d, t, 16);
    assert_eq!(g.update(&x, &y, n), PLEAS_SUCCESS);
    let (gm, rm, sm) = g.moments();
    (gm, rm, sm, w)
}

fn solve(
    eqs: &pleas_normal_equations_f64,
    cols: &[usize],
    outs: &[usize],
    params: Option<&pleas_ridge_params>,
) -> Result<(Vec<f64>, pleas_ridge_info), pleas_status> {
    let mut len = 0;
    // SAFETY: valid output.
    let s = unsafe { pleas_ridge_scratch_size_f64(cols.len(), outs.len(), &mut len) };
    assert_eq!(s, PLEAS_SUCCESS);
    let mut scratch = vec![0.0; len];
    let mut w = vec![0.0; cols.len() * outs.len()];
    let mut info = pleas_ridge_info::default();
    // SAFETY: buffers of the documented lengths.
    let s = unsafe {
        pleas_ridge_solve_f64(
            eqs,
            cols.as_ptr(),
            cols.len(),
            outs.as_ptr(),
            outs.len(),
            params.map_or(null(), |p| p as *const _),
            w.as_mut_ptr(),
            &mut info,
            scratch.as_mut_ptr(),
            len,
        )
    };
    if s != PLEAS_SUCCESS {
        return Err(s);
    }
    Ok((w, info))
}

#[test]
fn ridge_recovers_planted_weights() {
    let (d, t, n) = (5, 3, 40);
    let (gm, rm, sm, w) = planted(d, t, n);
    let eqs = pleas_normal_equations_f64 {
        dim: d,
        targets: t,
        gram: gm.as_ptr(),
        cross: rm.as_ptr(),
        sum_tt: sm.as_ptr(),
    };
    let cols: Vec<usize> = (0..d).collect();
    let (got, info) = solve(&eqs, &cols, &[2, 0], None).unwrap();
    for (a, o) in [2usize, 0].iter().enumerate() {
        for i in 0..d {
            let want = f64::from(w[o * d + i]);
            assert!((got[a * d + i] - want).abs() < 1e-3, "w[{o},{i}]");
        }
    }
    assert!(info.relative_residual < 1e-6 && info.ridge > 0.0 && info.retries == 0);
    assert!(info.min_pivot > 0.0 && info.max_pivot >= info.min_pivot);
    // A sub-block of columns, no ridge at all, explicit params.
    let mut params = pleas_ridge_params {
        relative_ridge: 1.0,
        absolute_ridge: 1.0,
        max_retries: 0,
    };
    // SAFETY: valid output.
    let s = unsafe { pleas_ridge_params_init(&mut params) };
    assert_eq!(s, PLEAS_SUCCESS);
    assert_eq!(params.relative_ridge, 1e-6);
    params.relative_ridge = 0.0;
    let (_, info) = solve(&eqs, &[4, 1], &[1], Some(&params)).unwrap();
    assert_eq!(info.ridge, 0.0);
    assert!(info.relative_residual > 0.0);
}

#[test]
fn ridge_errors() {
    let (d, t, n) = (4, 2, 20);
    let (gm, rm, sm, _) = planted(d, t, n);
    let eqs = |g: &[f64], r: &[f64]| pleas_normal_equations_f64 {
        dim: d,
        targets: t,
        gram: g.as_ptr(),
        cross: r.as_ptr(),
        sum_tt: sm.as_ptr(),
    };
    let ok = eqs(&gm, &rm);
    let all = [0usize, 1, 2, 3];
    assert!(solve(&ok, &all, &[0, 1], None).is_ok());
    assert_eq!(
        solve(&ok, &[0, 4], &[0], None).unwrap_err(),
        PLEAS_ERROR_INDEX
    );
    assert_eq!(
        solve(&ok, &[1, 1], &[0], None).unwrap_err(),
        PLEAS_ERROR_INDEX
    );
    assert_eq!(solve(&ok, &all, &[2], None).unwrap_err(), PLEAS_ERROR_INDEX);
    // A NaN in the Gram block read (lower triangle), in the cross moments read.
    let mut g = gm.clone();
    g[2 * d + 1] = f64::NAN;
    assert_eq!(
        solve(&eqs(&g, &rm), &all, &[0], None).unwrap_err(),
        PLEAS_ERROR_NAN_INF
    );
    // The upper triangle is not read.
    let mut g = gm.clone();
    g[d + 2] = f64::NAN;
    assert!(solve(&eqs(&g, &rm), &all, &[0], None).is_ok());
    let mut r = rm.clone();
    r[3 * t + 1] = f64::INFINITY;
    assert_eq!(
        solve(&eqs(&gm, &r), &all, &[1], None).unwrap_err(),
        PLEAS_ERROR_NAN_INF
    );
    // Not positive definite: a zero Gram with no ridge at all, and an indefinite one.
    let zeros = vec![0.0; d * d];
    let params = pleas_ridge_params {
        relative_ridge: 0.0,
        absolute_ridge: 0.0,
        max_retries: 4,
    };
    assert_eq!(
        solve(&eqs(&zeros, &rm), &all, &[0], Some(&params)).unwrap_err(),
        PLEAS_ERROR_SINGULAR
    );
    let mut neg = zeros.clone();
    neg[0] = 1.0;
    neg[d + 1] = -1.0;
    assert_eq!(
        solve(&eqs(&neg, &rm), &[0, 1], &[0], None).unwrap_err(),
        PLEAS_ERROR_SINGULAR
    );
    // Finite inputs whose weights overflow.
    let mut tiny = zeros.clone();
    tiny[0] = 1e-300;
    let huge = vec![1e300; d * t];
    assert_eq!(
        solve(&eqs(&tiny, &huge), &[0], &[0], None).unwrap_err(),
        PLEAS_ERROR_OVERFLOW
    );
    // Ridge parameters out of range.
    let bad = pleas_ridge_params {
        relative_ridge: -1.0,
        ..params
    };
    assert_eq!(
        solve(&ok, &all, &[0], Some(&bad)).unwrap_err(),
        PLEAS_ERROR_ARGUMENT
    );
    let bad = pleas_ridge_params {
        absolute_ridge: f64::NAN,
        ..params
    };
    assert_eq!(
        solve(&ok, &all, &[0], Some(&bad)).unwrap_err(),
        PLEAS_ERROR_ARGUMENT
    );

    // Pointer and length checks.
    let mut w = vec![0.0; 8];
    let mut len = 0;
    // SAFETY: the calls below pass valid buffers, or invalid ones that are rejected unread.
    unsafe {
        assert_eq!(
            pleas_ridge_scratch_size_f64(4, 2, null_mut()),
            PLEAS_ERROR_ARGUMENT
        );
        assert_eq!(
            pleas_ridge_scratch_size_f64(usize::MAX, 2, &mut len),
            PLEAS_ERROR_LENGTH
        );
        assert_eq!(pleas_ridge_scratch_size_f64(4, 2, &mut len), PLEAS_SUCCESS);
        assert_eq!(len, 4 * (4 + 2 + 1));
        let mut scratch = vec![0.0; len];
        let outs = [0usize, 1];
        let call = |e: *const pleas_normal_equations_f64, w: *mut f64, sc: *mut f64, l: usize| {
            pleas_ridge_solve_f64(
                e,
                all.as_ptr(),
                4,
                outs.as_ptr(),
                2,
                null(),
                w,
                null_mut(),
                sc,
                l,
            )
        };
        let (wp, sp) = (w.as_mut_ptr(), scratch.as_mut_ptr());
        assert_eq!(call(&ok, wp, sp, len), PLEAS_SUCCESS);
        assert_eq!(call(&ok, wp, sp, len - 1), PLEAS_ERROR_SCRATCH);
        assert_eq!(call(null(), wp, sp, len), PLEAS_ERROR_ARGUMENT);
        assert_eq!(call(&ok, null_mut(), sp, len), PLEAS_ERROR_ARGUMENT);
        assert_eq!(call(&ok, wp, null_mut(), len), PLEAS_ERROR_ARGUMENT);
        // Weights inside the scratch; scratch over the Gram.
        assert_eq!(call(&ok, sp.add(1), sp, len), PLEAS_ERROR_ARGUMENT);
        assert_eq!(
            call(&ok, wp, gm.as_ptr().cast_mut(), len),
            PLEAS_ERROR_ARGUMENT
        );
        let null_gram = pleas_normal_equations_f64 { gram: null(), ..ok };
        assert_eq!(call(&null_gram, wp, sp, len), PLEAS_ERROR_ARGUMENT);
        let huge_dim = pleas_normal_equations_f64 {
            dim: usize::MAX,
            ..ok
        };
        assert_eq!(call(&huge_dim, wp, sp, len), PLEAS_ERROR_LENGTH);
    }
}
