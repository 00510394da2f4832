//! Criterion benches of the auction matcher: the bidding scan (SIMD vs scalar twin) and whole
//! solves by size and matrix kind (uniform, planted permutation + noise). The comparison with
//! scipy and lapx is `benches/scripts/auction_vs_scipy.py`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pleas_benches::random_matrix;
use pleas_core::assign::scan::{
    CANDIDATE_SLOTS, best_two, best_two_cached, best_two_candidates, best_two_reference,
};
use pleas_core::assign::{AuctionParams, auction, auction_scratch_len};
use pleas_core::linalg::MatRef;

/// Uniform [0, 1) or a planted permutation (i -> (7 i + 3) mod n) worth 1 plus noise in
/// [-0.25, 0.25).
fn scores(kind: &str, n: usize) -> Vec<f32> {
    let noise = random_matrix(n, n, n as u64);
    match kind {
        "uniform" => noise.iter().map(|v| 0.5 * v + 0.5).collect(),
        _ => {
            let mut s: Vec<f32> = noise.iter().map(|v| 0.25 * v).collect();
            for i in 0..n {
                s[i * n + (7 * i + 3) % n] += 1.0;
            }
            s
        }
    }
}

fn scan(c: &mut Criterion) {
    let mut g = c.benchmark_group("auction_scan");
    for n in [256usize, 2048] {
        let row = random_matrix(1, n, 1);
        let prices: Vec<f64> = random_matrix(1, n, 2)
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("simd_f32", n), &n, |b, _| {
            b.iter(|| best_two(black_box(&row), 1.0, black_box(&prices)))
        });
        g.bench_with_input(BenchmarkId::new("scalar_f32", n), &n, |b, _| {
            b.iter(|| best_two_reference(black_box(&row), 1.0, black_box(&prices)))
        });
        let mut cands = vec![0.0f64; 2 * CANDIDATE_SLOTS];
        g.bench_with_input(BenchmarkId::new("simd_candidates_f32", n), &n, |b, _| {
            b.iter(|| best_two_candidates(black_box(&row), 1.0, black_box(&prices), &mut cands))
        });
        let (_, bound) = best_two_candidates(&row, 1.0, &prices, &mut cands);
        g.bench_with_input(BenchmarkId::new("cached", n), &n, |b, _| {
            b.iter(|| best_two_cached(black_box(&prices), black_box(&cands), bound))
        });
    }
    g.finish();
}

fn solve(c: &mut Criterion) {
    let mut g = c.benchmark_group("auction_solve");
    g.sample_size(10);
    for kind in ["uniform", "planted"] {
        for n in [256usize, 1024] {
            let s = scores(kind, n);
            let m = MatRef::new(&s, n, n).unwrap();
            let mut perm = vec![0usize; n];
            let mut scratch = vec![0.0f64; auction_scratch_len(n)];
            let params = AuctionParams::default();
            g.bench_with_input(BenchmarkId::new(kind, n), &n, |b, _| {
                b.iter(|| auction(black_box(m), &params, &mut perm, &mut scratch).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, scan, solve);
criterion_main!(benches);
