//! The auction on arbitrary score matrices (f32 or f64, raw bits or small integers), with
//! default or arbitrary parameters, cold or warm-started from arbitrary prices, with any
//! scratch contents on entry: it never
//! panics; a matrix with a NaN or infinity is rejected with the position of the first one, bad
//! parameters and prices with typed errors; otherwise
//! - every row gets its own column;
//! - the certified bound is at most the last phase's `n * epsilon`, below 1 for integer scores,
//!   and within the documented tolerance (`rel_tol * n * range`, or the f64 price resolution
//!   `2^-40` of the largest magnitude when that is coarser);
//! - the total is never below the identity assignment's (row `i` to column `i`) by more than
//!   the certified bound (not at all for integer scores);
//! - for `n <= 7`, the total is within the certified bound of the brute-force optimum (equal
//!   to it for integer scores);
//! - a warm start returns finite prices whose lowest is 0 and which, with `u_i = max_j (s_ij -
//!   p_j)`, form a dual of the (padded, square) problem exceeding the total by at most the
//!   certified bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pleas_core::assign::{
    AuctionError, AuctionInfo, AuctionParams, auction, auction_scratch_len, auction_warm,
};
use pleas_core::linalg::MatRef;

fn brute_force(s: &[f64], rows: usize, cols: usize, i: usize, used: u32) -> f64 {
    if i == rows {
        return 0.0;
    }
    (0..cols)
        .filter(|j| used & (1 << j) == 0)
        .map(|j| s[i * cols + j] + brute_force(s, rows, cols, i + 1, used | (1 << j)))
        .fold(f64::NEG_INFINITY, f64::max)
}

/// A parameter value from one byte: mostly the default, else a table value (some invalid).
fn param(b: u8, default: f64, table: &[f64]) -> f64 {
    match usize::from(b) {
        i if i < table.len() => table[i],
        _ => default,
    }
}

/// Checks a successful solve. `w` are the scores widened to f64.
fn check(
    w: &[f64],
    rows: usize,
    cols: usize,
    perm: &[usize],
    info: &AuctionInfo,
    p: &AuctionParams,
    prices: Option<&[f64]>,
) {
    let mut seen = vec![false; cols];
    for &j in perm {
        assert!(j < cols && !seen[j], "not a permutation: {perm:?}");
        seen[j] = true;
    }
    if rows == 0 {
        return;
    }
    let (lo, hi) = w
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    let magnitude = lo.abs().max(hi.abs());
    let n = cols as f64;
    // Totals, bounds and duals need sums of `n` scores and prices to be finite.
    if !(magnitude * 4.0 * n).is_finite() || !(hi - lo).is_finite() {
        return;
    }
    let range = hi - lo;
    // Rounding of f64 sums of `n` terms of size <= 2 * magnitude, in different orders, and of
    // the price updates behind the certificate (`~1e-16` relative each).
    let slack = 1e-12 * n * magnitude.max(f64::MIN_POSITIVE);
    let bound = info.optimality_bound;
    assert!(bound.is_finite() && bound >= 0.0, "bound {bound}");
    assert!(
        bound <= info.epsilon_bound + slack,
        "bound {bound} above n * epsilon {}",
        info.epsilon_bound
    );
    if info.integer {
        assert!(bound < 1.0, "integer scores with bound {bound}");
    } else {
        let eps_final =
            (p.rel_tol.max(2f64.powi(-40)) * range).max(2f64.powi(-40) * magnitude.max(range));
        assert!(
            bound <= n * eps_final * (1.0 + 1e-9) + slack,
            "bound {bound} above the tolerance n * {eps_final:e}"
        );
    }
    let total: f64 = perm.iter().enumerate().map(|(i, &j)| w[i * cols + j]).sum();
    let identity: f64 = (0..rows).map(|i| w[i * cols + i]).sum();
    if info.integer {
        assert!(
            total >= identity,
            "total {total} below the identity's {identity}"
        );
    } else {
        assert!(
            total >= identity - bound - slack,
            "total {total} below the identity's {identity} by more than the bound {bound}"
        );
    }
    if cols <= 7 {
        let best = brute_force(w, rows, cols, 0, 0);
        if info.integer {
            assert_eq!(total, best, "integer scores, not optimal");
        } else {
            assert!(
                best - total <= bound + slack,
                "total {total}, optimum {best}: gap above the certified bound {bound}"
            );
        }
    }
    if let Some(prices) = prices {
        assert!(prices.iter().all(|q| q.is_finite()), "prices {prices:?}");
        let low = prices.iter().copied().fold(f64::INFINITY, f64::min);
        assert_eq!(low, 0.0, "lowest price {low}");
        // Dual of the square problem padded with rows of value `lo`.
        let row_dual = |i: usize| {
            (0..cols)
                .map(|j| if i < rows { w[i * cols + j] } else { lo } - prices[j])
                .fold(f64::NEG_INFINITY, f64::max)
        };
        let dual: f64 = (0..cols).map(row_dual).sum::<f64>() + prices.iter().sum::<f64>();
        let primal = total + (cols - rows) as f64 * lo;
        let pslack = slack + 1e-12 * n * prices.iter().fold(0.0f64, |m, q| m.max(q.abs()));
        assert!(
            dual - primal <= bound + pslack,
            "dual {dual} exceeds the total {primal} by more than the bound {bound}"
        );
        assert!(
            dual - primal >= -pslack,
            "dual {dual} below the primal {primal}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let cols = usize::from(data[0] % 24);
    let rows = if cols == 0 {
        0
    } else {
        usize::from(data[1]) % (cols + 1)
    };
    // Mode byte: bit 0 raw bits (NaN, infinities, denormals...) or small integers; bit 1 f64 or
    // f32; bit 2 warm start; bit 3 non-default parameters (next three bytes); bits 4-5 the
    // scratch's contents on entry.
    let mode = data[2];
    let raw = mode & 1 == 0;
    let wide = mode & 2 != 0;
    let warm = mode & 4 != 0;
    let mut rest = &data[3..];
    let mut params = AuctionParams::default();
    if mode & 8 != 0 && rest.len() >= 3 {
        params.rel_tol = param(
            rest[0],
            1e-9,
            &[
                0.0,
                -1.0,
                f64::NAN,
                f64::INFINITY,
                1e-300,
                1e-15,
                0.1,
                1.0,
                1e3,
            ],
        );
        params.initial_epsilon = param(
            rest[1],
            0.003,
            &[
                0.0,
                -1.0,
                f64::NAN,
                f64::INFINITY,
                1e-300,
                1e-12,
                1.0,
                1e3,
                1e300,
                f64::MAX,
            ],
        );
        params.scaling = param(
            rest[2],
            5.0,
            &[
                1.0,
                0.5,
                f64::NAN,
                f64::INFINITY,
                1.0 + 1e-12,
                1.5,
                1e6,
                1.09,
                1.1,
            ],
        );
        rest = &rest[3..];
    }
    let size = if wide { 8 } else { 4 };
    let values: Vec<f64> = if raw {
        rest.chunks_exact(size)
            .map(|c| match c.len() {
                8 => f64::from_le_bytes(c.try_into().expect("8 bytes")),
                _ => f64::from(f32::from_le_bytes(c.try_into().expect("4 bytes"))),
            })
            .collect()
    } else {
        rest.iter().map(|&b| f64::from(b as i8 % 8)).collect()
    };
    let consumed = if raw { rows * cols * size } else { rows * cols };
    if values.len() < rows * cols {
        return;
    }
    // Prices for a warm start: the next raw f64 values (or defaults past the end); a length byte
    // of 255 gives a wrong length.
    let tail = &rest[consumed.min(rest.len())..];
    let mut prices: Vec<f64> = (0..cols)
        .map(|j| {
            tail.get(1 + 8 * j..9 + 8 * j).map_or(0.5 * j as f64, |c| {
                f64::from_le_bytes(c.try_into().expect("8 bytes"))
            })
        })
        .collect();
    if tail.first() == Some(&255) {
        prices.push(0.0);
    }
    let w: Vec<f64> = if wide {
        values[..rows * cols].to_vec()
    } else {
        values[..rows * cols]
            .iter()
            .map(|&v| f64::from(v as f32))
            .collect()
    };
    let s32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
    let mut perm = vec![usize::MAX; rows];
    // The scratch's contents on entry do not matter (bits 4-5: what an earlier solve may leave).
    let fill = [0.0, 7.0, 1e6, f64::NAN][usize::from(mode >> 4 & 3)];
    let mut scratch = vec![fill; auction_scratch_len(cols)];
    let before = prices.clone();
    let result = match (wide, warm) {
        (true, false) => auction(
            MatRef::new(&w, rows, cols).expect("sized"),
            &params,
            &mut perm,
            &mut scratch,
        ),
        (false, false) => auction(
            MatRef::new(&s32, rows, cols).expect("sized"),
            &params,
            &mut perm,
            &mut scratch,
        ),
        (true, true) => auction_warm(
            MatRef::new(&w, rows, cols).expect("sized"),
            &params,
            &mut prices,
            &mut perm,
            &mut scratch,
        ),
        (false, true) => auction_warm(
            MatRef::new(&s32, rows, cols).expect("sized"),
            &params,
            &mut prices,
            &mut perm,
            &mut scratch,
        ),
    };
    match result {
        Ok(info) => {
            assert!(w.iter().all(|v| v.is_finite()));
            check(
                &w,
                rows,
                cols,
                &perm,
                &info,
                &params,
                warm.then_some(&prices[..]),
            );
        }
        Err(e) => {
            let _ = e.to_string();
            if warm {
                assert_eq!(prices.len(), before.len());
                assert!(
                    prices
                        .iter()
                        .zip(&before)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "prices changed on error {e}"
                );
            }
            match e {
                AuctionError::NonFinite { row, col, .. } => {
                    let first = w.iter().position(|v| !v.is_finite()).expect("a bad value");
                    assert_eq!(first, row * cols + col);
                }
                AuctionError::InvalidParam { .. } => assert!(params != AuctionParams::default()),
                AuctionError::PriceLength { cols: c, len } => {
                    assert!(warm && c == cols && len == cols + 1)
                }
                AuctionError::NonFinitePrice { col, .. } => {
                    assert!(warm && !prices[col].is_finite())
                }
                other => panic!("unexpected error {other}"),
            }
        }
    }
});
