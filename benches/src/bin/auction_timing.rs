//! Times `pleas_core::assign::auction` on score matrices stored as raw little-endian files
//! (the comparison script `benches/scripts/auction_vs_scipy.py` writes them).
//!
//! Usage: `auction_timing [--reps R] FILE:N:DTYPE...` where `FILE` holds an `N x N` row-major
//! matrix of `DTYPE` (`f32` or `f64`). For each matrix it solves once untimed (warm-up), then
//! `R` timed times (the solve only: scratch and output are allocated outside the timed region),
//! writes the assignment to `FILE.perm` (little-endian u32) and prints one line:
//! `FILE median_s min_s total phases bids rescans optimality_bound full_scans`.
//!
//! Environment knobs for experiments: `AUCTION_INITIAL_EPSILON`, `AUCTION_SCALING`, and
//! `AUCTION_WARM_FROM=FILE` (same size and dtype): solve `FILE` once, untimed, and time
//! `auction_warm` on each matrix from the final prices of that solve (a fresh copy per repeat).

use std::time::Instant;

use pleas_core::assign::{
    AuctionInfo, AuctionParams, Score, auction, auction_scratch_len, auction_warm,
};
use pleas_core::linalg::MatRef;

fn read<T>(path: &str, n: usize, width: usize, conv: impl Fn(&[u8]) -> T) -> Vec<T> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    assert_eq!(
        bytes.len(),
        n * n * width,
        "{path}: expected {n}x{n} elements"
    );
    bytes.chunks_exact(width).map(conv).collect()
}

fn solve<T: Score>(
    data: &[T],
    n: usize,
    params: &AuctionParams,
    reps: usize,
    warm_from: Option<&[T]>,
) -> (Vec<f64>, Vec<usize>, AuctionInfo) {
    let m = MatRef::new(data, n, n).expect("square view");
    let mut scratch = vec![0.0f64; auction_scratch_len(n)];
    let mut perm = vec![0usize; n];
    let start_prices = warm_from.map(|w| {
        let mut prices = vec![0.0f64; n];
        let w = MatRef::new(w, n, n).expect("square view");
        auction_warm(w, params, &mut prices, &mut perm, &mut scratch).expect("auction");
        prices
    });
    let run = |perm: &mut [usize], scratch: &mut [f64], prices: &mut Option<Vec<f64>>| {
        match prices {
            Some(p) => auction_warm(m, params, p, perm, scratch),
            None => auction(m, params, perm, scratch),
        }
        .expect("auction")
    };
    let mut info = run(&mut perm, &mut scratch, &mut start_prices.clone());
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let mut prices = start_prices.clone();
        let t = Instant::now();
        info = run(&mut perm, &mut scratch, &mut prices);
        times.push(t.elapsed().as_secs_f64());
    }
    (times, perm, info)
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let mut reps = 5usize;
    let mut params = AuctionParams::default();
    if let Ok(v) = std::env::var("AUCTION_INITIAL_EPSILON") {
        params.initial_epsilon = v.parse().expect("AUCTION_INITIAL_EPSILON");
    }
    if let Ok(v) = std::env::var("AUCTION_SCALING") {
        params.scaling = v.parse().expect("AUCTION_SCALING");
    }
    let warm_from = std::env::var("AUCTION_WARM_FROM").ok();
    while let Some(arg) = args.next() {
        if arg == "--reps" {
            reps = args.next().and_then(|r| r.parse().ok()).expect("--reps R");
            continue;
        }
        let mut parts = arg.rsplitn(3, ':');
        let dtype = parts.next().expect("FILE:N:DTYPE");
        let n: usize = parts
            .next()
            .and_then(|s| s.parse().ok())
            .expect("FILE:N:DTYPE");
        let path = parts.next().expect("FILE:N:DTYPE");
        let (mut times, perm, info, total) = match dtype {
            "f32" => {
                let conv = |b: &[u8]| f32::from_le_bytes(b.try_into().unwrap());
                let d = read(path, n, 4, conv);
                let w = warm_from.as_deref().map(|f| read(f, n, 4, conv));
                let (t, p, i) = solve(&d, n, &params, reps, w.as_deref());
                let total: f64 = (0..n).map(|r| f64::from(d[r * n + p[r]])).sum();
                (t, p, i, total)
            }
            "f64" => {
                let conv = |b: &[u8]| f64::from_le_bytes(b.try_into().unwrap());
                let d = read(path, n, 8, conv);
                let w = warm_from.as_deref().map(|f| read(f, n, 8, conv));
                let (t, p, i) = solve(&d, n, &params, reps, w.as_deref());
                let total: f64 = (0..n).map(|r| d[r * n + p[r]]).sum();
                (t, p, i, total)
            }
            other => panic!("unknown dtype {other}"),
        };
        let out: Vec<u8> = perm
            .iter()
            .flat_map(|&c| (c as u32).to_le_bytes())
            .collect();
        std::fs::write(format!("{path}.perm"), out).expect("writing the assignment");
        times.sort_by(f64::total_cmp);
        println!(
            "{path} {:.6e} {:.6e} {total:.9e} {} {} {} {:.3e} {}",
            times[times.len() / 2],
            times[0],
            info.phases,
            info.bids,
            info.rescans,
            info.optimality_bound,
            info.full_scans
        );
    }
}
