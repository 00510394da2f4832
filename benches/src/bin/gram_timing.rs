//! Times the Gram update `G += X^T X` (lower triangle) for the comparison script
//! `benches/scripts/gram_vs_numpy.py`.
//!
//! Usage: `gram_timing SAMPLES DIM REPEATS THREADS [kernel|accumulator]`. Prints one line per
//! repeat: `seconds`. `kernel` times `syrk_lower` on one `SAMPLES x DIM` matrix in one call;
//! `accumulator` times the threaded `accumulate_gram` (f32 blocks folded into f64, sharded over
//! `THREADS` threads) on the same matrix.

use std::time::Instant;

use pleas::par::{Parallelism, accumulate_gram};
use pleas_benches::random_matrix;
use pleas_core::gram::GramParams;
use pleas_core::linalg::{MatMut, MatRef, syrk_lower, syrk_lower_scratch_len};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: gram_timing SAMPLES DIM REPEATS THREADS [kernel|accumulator]");
        std::process::exit(2);
    }
    let parse = |i: usize| -> usize {
        args[i].parse().unwrap_or_else(|_| {
            eprintln!("argument {i} ({}) is not a number", args[i]);
            std::process::exit(2)
        })
    };
    let (n, d, repeats, threads) = (parse(1), parse(2), parse(3), parse(4));
    let mode = args.get(5).map_or("kernel", String::as_str);
    let x = random_matrix(n, d, 42);
    let xv = MatRef::new(&x, n, d).expect("sized");
    let mut g = vec![0.0f32; d * d];
    let mut scratch = vec![0.0f32; syrk_lower_scratch_len(n, d)];
    for _ in 0..repeats {
        let start = Instant::now();
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
        println!("{:.6}", start.elapsed().as_secs_f64());
    }
    std::hint::black_box(&g);
}
