//! Criterion benches of the Gram update: `syrk_lower` (one call) and the streaming accumulator
//! (f32 blocks folded into f64), single-threaded and on all cores. Throughput is reported in
//! "elements" = N d^2 flops, so criterion's elem/s reads as flop/s.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pleas::par::{Parallelism, accumulate_gram};
use pleas_benches::random_matrix;
use pleas_core::gram::GramParams;
use pleas_core::linalg::{LANES, MatMut, MatRef, syrk_lower, syrk_lower_scratch_len};

fn gram(c: &mut Criterion) {
    let n = 8192;
    let mut group = c.benchmark_group(format!("gram_n{n}_f32x{LANES}"));
    group.sample_size(10);
    for d in [64usize, 256, 1024] {
        let x = random_matrix(n, d, 7);
        let xv = MatRef::new(&x, n, d).unwrap();
        group.throughput(Throughput::Elements((n * d * d) as u64));
        let mut g = vec![0.0f32; d * d];
        let mut scratch = vec![0.0f32; syrk_lower_scratch_len(n, d)];
        group.bench_with_input(BenchmarkId::new("syrk_lower", d), &d, |b, &d| {
            b.iter(|| {
                syrk_lower(
                    1.0,
                    xv,
                    0.0,
                    MatMut::new(&mut g, d, d).unwrap(),
                    &mut scratch,
                )
                .unwrap()
            })
        });
        for (name, par) in [
            ("accumulate_1t", Parallelism::Sequential),
            ("accumulate_all", Parallelism::available()),
        ] {
            group.bench_with_input(BenchmarkId::new(name, d), &d, |b, _| {
                b.iter(|| accumulate_gram(xv, None, GramParams::default(), par).unwrap())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, gram);
criterion_main!(benches);
