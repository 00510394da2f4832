//! Times the direct (stride-1) convolution on the `rn20w1_split` merge's shapes: 3 x 3,
//! padding 1, input = output channels of 16/18 at 28 x 28, 32/35 at 14 x 14 and 64/70 at 7 x 7
//! (the end models' widths and the merged model's at budget 1.2), one thread, on the path
//! `PLEAS_SIMD` names (default: the CPU probe's).
//!
//! Usage: `direct_conv_timing [REPEATS [BATCH]]` (defaults 7 and 512). Prints per shape the
//! median thread CPU seconds (`CLOCK_THREAD_CPUTIME_ID`, robust to other load; Linux x86-64)
//! of one batch and the useful GFLOP/s (2 x out_c x in_c x 9 x H x W per sample, padding excluded).

use pleas_benches::random_matrix;
use pleas_core::forward::im2col::ConvGeometry;
use pleas_core::forward::layers::{BlockRef, block_conv2d, block_conv2d_scratch_len};
use pleas_core::simd::{self, Path};

/// `struct timespec` of 64-bit Linux.
#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

unsafe extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// CPU time of the calling thread in seconds, to the nanosecond (`CLOCK_THREAD_CPUTIME_ID`;
/// `/proc/thread-self/schedstat` moves only at scheduler ticks, 4 ms here).
#[allow(unsafe_code)]
fn thread_cpu_seconds() -> f64 {
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid `timespec` for the call to fill.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.sec as f64 + ts.nsec as f64 * 1e-9
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let repeats: usize = args.first().map_or(7, |a| a.parse().expect("REPEATS"));
    let batch: usize = args.get(1).map_or(512, |a| a.parse().expect("BATCH"));
    if let Ok(name) = std::env::var("PLEAS_SIMD") {
        simd::set_path(Path::parse(&name).expect("PLEAS_SIMD")).expect("supported path");
    }
    println!("path {}, batch {batch}, median of {repeats}", simd::path());
    println!("| channels | map | ms / batch | GFLOP/s |");
    println!("|---|---|---|---|");
    for (c, hw) in [(16, 28), (18, 28), (32, 14), (35, 14), (64, 7), (70, 7)] {
        let geom = ConvGeometry::new(c, hw, hw, [3, 3], [1, 1], [1, 1]).expect("fits");
        let weight = random_matrix(c, c * 9, 1);
        let bias = random_matrix(1, c, 2);
        let all_inputs = 0..c;
        let all = std::slice::from_ref(&all_inputs);
        let blocks = [BlockRef {
            weight: &weight,
            bias: Some(&bias),
            rows: c,
            inputs: all,
        }];
        let input = random_matrix(batch, c * hw * hw, 3);
        let mut output = vec![0.0f32; batch * c * hw * hw];
        let mut scratch = vec![0.0f32; block_conv2d_scratch_len(&geom, &blocks, batch)];
        let mut times = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            let t0 = thread_cpu_seconds();
            block_conv2d(
                &geom,
                &blocks,
                &input,
                batch,
                batch,
                &mut output,
                &mut scratch,
            )
            .expect("valid conv");
            times.push(thread_cpu_seconds() - t0);
        }
        let t = median(&mut times);
        let flops = 2.0 * (c * c * 9 * hw * hw * batch) as f64;
        println!(
            "| {c} | {hw}x{hw} | {:.3} | {:.1} |",
            t * 1e3,
            flops / t * 1e-9
        );
        std::hint::black_box(&output);
    }
}
