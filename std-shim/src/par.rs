//! Explicit parallelism: a [`Parallelism`] value and the threaded Gram accumulation built on it.
//!
//! Work is split into a fixed number of contiguous shards that does not depend on the thread
//! count, each shard is accumulated sequentially, and shard results are combined in shard order.
//! The result is therefore bit-identical for any number of threads.

use std::fmt;
use std::num::NonZeroUsize;
use std::ops::Range;

use pleas_core::gram::{GramAccumulator, GramError, GramParams};
use pleas_core::linalg::MatRef;

/// How many threads a computation may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Parallelism {
    /// Everything on the calling thread.
    #[default]
    Sequential,
    /// Up to this many scoped threads (`std::thread::scope`).
    Threads(NonZeroUsize),
}

impl Parallelism {
    /// `Sequential` for 0 or 1, else `Threads(n)`.
    pub fn from_count(n: usize) -> Self {
        match NonZeroUsize::new(n) {
            Some(n) if n.get() > 1 => Parallelism::Threads(n),
            _ => Parallelism::Sequential,
        }
    }

    /// One thread per available CPU.
    pub fn available() -> Self {
        Self::from_count(std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
    }

    /// Number of threads (1 when sequential).
    pub fn threads(self) -> usize {
        match self {
            Parallelism::Sequential => 1,
            Parallelism::Threads(n) => n.get(),
        }
    }
}

impl fmt::Display for Parallelism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Parallelism::Sequential => f.write_str("sequential"),
            Parallelism::Threads(n) => write!(f, "{n} threads"),
        }
    }
}

/// Runs `work(i)` for every `i in 0..jobs`, on up to `par.threads()` scoped threads, and returns
/// the results in job order. Jobs are handed out round-robin in fixed order (job `i` goes to
/// thread `i % threads`), so which thread ran a job never changes a result that depends only on
/// the job.
pub fn map_jobs<T, F>(par: Parallelism, jobs: usize, work: F) -> Vec<T>
where
    T: Send,
    F: Fn(usize) -> T + Sync,
{
    let threads = par.threads().min(jobs.max(1));
    if threads <= 1 {
        return (0..jobs).map(&work).collect();
    }
    let mut slots: Vec<Option<T>> = (0..jobs).map(|_| None).collect();
    std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..jobs)
                        .step_by(threads)
                        .map(|i| (i, work(i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(done) => {
                    for (i, v) in done {
                        slots[i] = Some(v);
                    }
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    slots
        .into_iter()
        .map(|s| s.expect("every job ran"))
        .collect()
}

/// The shards of `n` samples: consecutive ranges of `shard_samples` (the last one shorter),
/// at least one shard. They depend on `n` and the shard size only.
pub fn shard_ranges(n: usize, shard_samples: usize) -> Vec<Range<usize>> {
    let size = shard_samples.max(1);
    let count = n.div_ceil(size).max(1);
    (0..count)
        .map(|s| (s * size).min(n)..((s + 1) * size).min(n))
        .collect()
}

/// Most shards a threaded accumulation splits its samples into, whatever the thread count.
pub const GRAM_SHARDS: usize = 16;

/// Shards for `n` samples: [`GRAM_SHARDS`], or fewer so that each shard holds at least two
/// f32 blocks (every shard costs a reset and a combination of `dim^2` totals). It depends on
/// `n` and the block length only, never on the thread count.
pub fn gram_shards(n: usize, block_samples: usize) -> usize {
    (n / (2 * block_samples.max(1))).clamp(1, GRAM_SHARDS)
}

/// An owned Gram accumulator (heap buffers).
pub type OwnedGram = GramAccumulator<Vec<f64>, Vec<f32>>;

/// Accumulates `sum x x^T` (and `sum x t^T` when `t` is given) over all rows of `x` with up to
/// `par.threads()` threads. The samples are cut into [`gram_shards`] contiguous shards, all
/// shards share the shift of the first block, and shard totals are combined in order: the
/// result does not depend on the thread count.
pub fn accumulate_gram(
    x: MatRef<'_, f32>,
    t: Option<MatRef<'_, f32>>,
    params: GramParams,
    par: Parallelism,
) -> Result<OwnedGram, GramError> {
    let dim = x.cols();
    let targets = t.map_or(0, |t| t.cols());
    let n = x.rows();
    // The shared shift: the mean of the first (up to 1024) samples.
    let head = n.min(1024);
    let mut total = OwnedGram::new_owned(dim, targets, params);
    total.set_shift_to_mean(
        x.submatrix(0, 0, head, dim).expect("in range"),
        t.map(|t| t.submatrix(0, 0, head, targets).expect("in range")),
    )?;
    let (xs, ts) = (total.x_shift().to_vec(), total.t_shift().to_vec());

    let shard_len = n.div_ceil(gram_shards(n, params.block_samples)).max(1);
    let shards = n.div_ceil(shard_len);
    // Shards run in waves of `threads`; each thread slot reuses one accumulator, and a wave's
    // results are combined into the total in shard order before the next wave starts.
    let threads = par.threads().clamp(1, shards.max(1));
    let mut slots = Vec::with_capacity(threads);
    for _ in 0..threads {
        let mut acc = OwnedGram::new_owned(dim, targets, params);
        acc.set_shift(&xs, &ts)?;
        slots.push(acc);
    }
    let accumulate_shard = |acc: &mut OwnedGram, s: usize| -> Result<(), GramError> {
        let start = s * shard_len;
        let rows = (n - start).min(shard_len);
        acc.reset();
        let xb = x.submatrix(start, 0, rows, dim).expect("in range");
        let tb = t.map(|t| t.submatrix(start, 0, rows, targets).expect("in range"));
        // Positions are reported in the whole input, not in the shard.
        acc.push(xb, tb)
            .map_err(|e| e.with_sample_offset(start as u64))?;
        acc.flush();
        Ok(())
    };
    for wave in (0..shards).step_by(threads) {
        let in_wave = (shards - wave).min(threads);
        let results: Vec<Result<(), GramError>> = if in_wave == 1 {
            vec![accumulate_shard(&mut slots[0], wave)]
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = slots[..in_wave]
                    .iter_mut()
                    .enumerate()
                    .map(|(j, acc)| {
                        let work = &accumulate_shard;
                        scope.spawn(move || work(acc, wave + j))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            })
        };
        for (r, acc) in results.into_iter().zip(slots.iter_mut()) {
            r?;
            total.combine(acc)?;
        }
    }
    Ok(total)
}
