//! Times the patch moments of one merge shard of a 3 x 3, padding-1, stride-1 convolution
//! (the `rn20w1_split` layer shapes at budget 1.2 by default) two ways, interleaved, on one
//! thread: the im2col route (im2row + [`GramAccumulator`](pleas_core::gram::GramAccumulator)
//! push per chunk, as the merge did) and the lag-based [`ConvGram`] (push per chunk, then
//! `add_to` the shard's accumulator once).
//!
//! Usage: `conv_gram_timing [REPEATS [SAMPLES [BATCH [lag]]]]` (defaults 5, 250, 64: one of
//! the merge's 8 shards of 2000 samples, in its chunks; `lag` runs only the lag route, for a
//! profiler). Prints per shape the thread CPU seconds
//! (from `/proc/thread-self/schedstat`, robust to other load) of each route per repeat, their
//! medians, the ratio, and the share of `add_to` in the lag route.

use std::time::Instant;

use pleas::par::OwnedGram;
use pleas_benches::random_matrix;
use pleas_core::forward::im2col::{ConvGeometry, im2row, im2row_len};
use pleas_core::gram::GramParams;
use pleas_core::gram::conv::{ConvGram, ConvGramShape};
use pleas_core::linalg::MatRef;

/// CPU time of the calling thread in seconds (0 where `/proc` does not tell).
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 * 1e-9)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Non-negative maps (post-ReLU-like: half zeros) and targets, one shard's worth.
fn inputs(shape: &ConvGramShape, samples: usize) -> (Vec<f32>, Vec<f32>) {
    let maps = random_matrix(samples, shape.input_len(), 3)
        .into_iter()
        .map(|v| v.max(0.0))
        .collect();
    let t = random_matrix(samples * shape.positions(), shape.targets, 5);
    (maps, t)
}

fn im2col_route(shape: &ConvGramShape, maps: &[f32], t: &[f32], samples: usize, batch: usize) {
    let geom = ConvGeometry::new(
        shape.channels,
        shape.height,
        shape.width,
        shape.kernel,
        [1, 1],
        shape.padding,
    )
    .expect("fits");
    let (d, nt, p) = (shape.dim(), shape.targets, shape.positions());
    let mut acc = OwnedGram::new_owned(d, nt, GramParams::default());
    let mut rows = Vec::new();
    for start in (0..samples).step_by(batch) {
        let n = batch.min(samples - start);
        rows.resize(im2row_len(&geom, n, d), 0.0);
        let per = shape.input_len();
        im2row(
            &geom,
            &maps[start * per..(start + n) * per],
            n,
            d,
            &mut rows,
        );
        for r in rows.chunks_exact_mut(d) {
            r[d - 1] = 1.0;
        }
        let tv = MatRef::new(&t[start * p * nt..(start + n) * p * nt], n * p, nt).unwrap();
        acc.push(MatRef::new(&rows, n * p, d).unwrap(), Some(tv))
            .unwrap();
    }
    acc.flush();
}

/// Returns the CPU seconds spent in `add_to`.
fn lag_route(shape: &ConvGramShape, maps: &[f32], t: &[f32], samples: usize, batch: usize) -> f64 {
    let (nt, p) = (shape.targets, shape.positions());
    let mut acc = OwnedGram::new_owned(shape.dim(), nt, GramParams::default());
    let mut cg =
        ConvGram::<Vec<f64>, Vec<f32>>::new_owned(*shape, GramParams::default(), batch).unwrap();
    for start in (0..samples).step_by(batch) {
        let n = batch.min(samples - start);
        let per = shape.input_len();
        let tv = MatRef::new(&t[start * p * nt..(start + n) * p * nt], n * p, nt).unwrap();
        cg.push(&maps[start * per..(start + n) * per], n, Some(tv))
            .unwrap();
    }
    let t0 = thread_cpu_seconds();
    cg.add_to(&mut acc).unwrap();
    thread_cpu_seconds() - t0
}

fn main() {
    let only_lag = std::env::args().nth(4).is_some_and(|a| a == "lag");
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .take(3)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let repeats = args.first().copied().unwrap_or(5);
    let samples = args.get(1).copied().unwrap_or(250);
    let batch = args.get(2).copied().unwrap_or(64);
    // (channels, map side, outputs): the merged widths of rn20w1_split at budget 1.2.
    for (c, side, outputs) in [(18usize, 28usize, 18usize), (35, 14, 35), (71, 7, 71)] {
        let shape = ConvGramShape {
            channels: c,
            height: side,
            width: side,
            kernel: [3, 3],
            padding: [1, 1],
            targets: outputs,
            bias: true,
        };
        let (maps, t) = inputs(&shape, samples);
        let (mut old, mut new, mut adds) = (Vec::new(), Vec::new(), Vec::new());
        let wall = Instant::now();
        for _ in 0..repeats {
            let t0 = thread_cpu_seconds();
            if !only_lag {
                im2col_route(&shape, &maps, &t, samples, batch);
            }
            let t1 = thread_cpu_seconds();
            let add = lag_route(&shape, &maps, &t, samples, batch);
            let t2 = thread_cpu_seconds();
            println!(
                "C={c} {side}x{side} d={} t={outputs}: im2col {:.4} s, lag {:.4} s (add_to {:.4} s)",
                shape.dim(),
                t1 - t0,
                t2 - t1,
                add
            );
            old.push(t1 - t0);
            new.push(t2 - t1);
            adds.push(add);
        }
        let (mo, mn, ma) = (median(&mut old), median(&mut new), median(&mut adds));
        println!(
            "C={c} {side}x{side}: median im2col {mo:.4} s, lag {mn:.4} s, ratio {:.2}x, add_to {:.0}% of lag ({} repeats, {samples} samples, batch {batch}, {:.1} s wall)",
            mo / mn,
            100.0 * ma / mn,
            repeats,
            wall.elapsed().as_secs_f64()
        );
    }
}
