//! Times the Gram update `G += X^T X` (lower triangle) for the comparison script
//! `benches/scripts/gram_vs_numpy.py`.
//!
//! Usage: `gram_timing SAMPLES DIM REPEATS THREADS [kernel|accumulator] [numpy|plain]`. Prints one line per
//! repeat: `wall_seconds cpu_seconds`, where the CPU time is the calling thread's (from
//! `/proc/thread-self/schedstat`; meaningful for single-threaded runs, and robust to other load
//! on a shared machine). `kernel` times `syrk_lower` on one `SAMPLES x DIM` matrix in one call;
//! `accumulator` times the threaded `accumulate_gram` (f32 blocks folded into f64, sharded over
//! `THREADS` threads) on the same matrix. `numpy` (the default) allocates `X`, `G` and the
//! scratch as numpy allocates its arrays (huge pages advised for large buffers: see
//! [`Pages::Numpy`]), `plain` without advice.

use std::time::Instant;

use pleas::par::{Parallelism, accumulate_gram};
use pleas_benches::{Pages, random_matrix, zeroed};
use pleas_core::gram::GramParams;
use pleas_core::linalg::{MatMut, MatRef, syrk_lower, syrk_lower_scratch_len};

/// CPU time of the calling thread in seconds (0 where `/proc` does not tell).
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 * 1e-9)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!(
            "usage: gram_timing SAMPLES DIM REPEATS THREADS [kernel|accumulator] [numpy|plain]"
        );
        std::process::exit(2);
    }
    let parse = |i: usize| -> usize {
        args[i].parse().unwrap_or_else(|_| {
            eprintln!("argument {i} ({}) is not a number", args[i]);
            std::process::exit(2)
        })
    };
    let (n, d, repeats, threads) = (parse(1), parse(2), parse(3), parse(4));
    match pleas::simd_env::select_from_env() {
        Ok(path) => eprintln!("simd path: {path}"),
        Err(e) => {
            eprintln!("error: {}", pleas::error::chain(&e));
            std::process::exit(2);
        }
    }
    let mode = args.get(5).map_or("kernel", String::as_str);
    let Some(pages) = Pages::parse(args.get(6).map_or("numpy", String::as_str)) else {
        eprintln!("pages must be numpy or plain, not {}", args[6]);
        std::process::exit(2);
    };
    let mut x = zeroed(n * d, pages);
    x.copy_from_slice(&random_matrix(n, d, 42));
    let xv = MatRef::new(&x, n, d).expect("sized");
    let mut g = zeroed(d * d, pages);
    let mut scratch = zeroed(syrk_lower_scratch_len(n, d), pages);
    for _ in 0..repeats {
        let start = Instant::now();
        let cpu_start = thread_cpu_seconds();
        match mode {
            "kernel" => {
                syrk_lower(
                    1.0,
                    xv,
                    0.0,
                    MatMut::new(&mut g, d, d).expect("sized"),
                    &mut scratch,
                )
                .expect("shapes agree");
            }
            "accumulator" => {
                let acc = accumulate_gram(
                    xv,
                    None,
                    GramParams::default(),
                    Parallelism::from_count(threads),
                )
                .expect("finite input");
                std::hint::black_box(&acc);
            }
            other => {
                eprintln!("unknown mode {other}");
                std::process::exit(2);
            }
        }
        let wall = start.elapsed().as_secs_f64();
        println!("{wall:.6} {:.6}", thread_cpu_seconds() - cpu_start);
    }
    std::hint::black_box(&g);
}
