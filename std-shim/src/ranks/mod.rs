//! The processes (ranks) of a merge: one process, or several over MPI (`--features mpi`,
//! `mpirun -n K pleas merge ...`).
//!
//! Every rank runs the same deterministic plan. A data pass's shards run in waves of one shard
//! per thread per rank ([`wave_shards`]); each rank computes the accumulators of its shards of
//! the wave (and keeps their live activations), and rank 0 folds every shard's accumulator in
//! shard order exactly as one process does, receiving the other ranks' as it goes; after the
//! last wave it broadcasts the total ([`fold_shards`]). So floating-point sums, and hence the
//! merged model, do not depend on the number of ranks or threads, and memory holds a wave of
//! accumulators, not one per shard.
//!
//! Failures are agreed ([`agree`]): at every pass, and once at the end, the ranks exchange
//! whether they failed; if any did, every rank returns [`Error::RankFailed`] with the message
//! of the lowest failing rank, and no rank communicates afterwards. A rank that fails between
//! two agreements goes straight to the final one, which meets the other ranks' next agreement
//! (every agreement is the same two collectives), so the job always ends together.
//!
//! This module needs no MPI: [`Single`] is one process, [`LocalRanks`] runs ranks as threads
//! of one process (for tests), and the MPI glue (`mpi`, behind the feature) only moves bytes.

mod local;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod wire;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, mpsc};

pub use local::LocalRanks;
pub use wire::Wire;

use crate::error::{Error, chain};
use crate::par::{Parallelism, map_jobs};

/// The rank that folds the shards' results, solves first and writes the output.
pub const ROOT: usize = 0;

/// The processes of one merge, as the reduction needs them: who I am, and moving bytes.
///
/// Messages between two ranks arrive in the order they were sent; collective calls
/// ([`broadcast`](Self::broadcast), [`min_over_ranks`](Self::min_over_ranks)) must be made by
/// every rank in the same order.
pub trait Ranks {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Sends `bytes` to rank `to`.
    fn send(&self, to: usize, bytes: &[u8]);
    /// Receives the next message from rank `from`.
    fn receive(&self, from: usize) -> Vec<u8>;
    /// Every rank ends with `root`'s `bytes` (the other ranks' are replaced).
    fn broadcast(&self, root: usize, bytes: &mut Vec<u8>);
    /// The smallest of the ranks' `value`s, on every rank.
    fn min_over_ranks(&self, value: u64) -> u64;
    /// Test hook, asked once per [`agree`]: `Some(reason)` makes this rank fail there.
    fn injected_failure(&self) -> Option<String> {
        None
    }
}

/// One process: no communication.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl Ranks for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn send(&self, _to: usize, _bytes: &[u8]) {
        unreachable!("a single process sends nothing")
    }
    fn receive(&self, _from: usize) -> Vec<u8> {
        unreachable!("a single process receives nothing")
    }
    fn broadcast(&self, _root: usize, _bytes: &mut Vec<u8>) {}
    fn min_over_ranks(&self, value: u64) -> u64 {
        value
    }
}

/// The shards of one wave that rank `rank` computes. Shards run in waves of `per_rank` shards
/// per rank, `size * per_rank` in all; wave `w` starts at shard `w * size * per_rank` and rank
/// `r` computes its `r`-th run of `per_rank` shards (clipped to `shards`). A shard's rank is
/// therefore the same in every pass, so its live activations stay where they were made.
pub fn wave_shards(wave_start: usize, rank: usize, per_rank: usize, shards: usize) -> Range<usize> {
    let start = (wave_start + rank * per_rank).min(shards);
    start..(start + per_rank).min(shards)
}

/// Every rank's verdict on `local`: `local` itself when every rank succeeded, else
/// [`Error::RankFailed`] with the lowest failing rank's message, on every rank. An
/// `Error::RankFailed` passed in is already agreed and is returned without communicating.
pub fn agree<T>(ranks: &dyn Ranks, local: Result<T, Error>) -> Result<T, Error> {
    if matches!(local, Err(Error::RankFailed { .. })) {
        return local;
    }
    let local = match ranks.injected_failure() {
        Some(reason) => Err(Error::Merge {
            stage: "test hook",
            reason,
        }),
        None => local,
    };
    if ranks.size() <= 1 {
        return local;
    }
    let me = ranks.rank() as u64;
    let first = ranks.min_over_ranks(if local.is_err() { me } else { u64::MAX });
    if first == u64::MAX {
        return local;
    }
    let mut message = match &local {
        Err(e) if first == me => chain(e).into_bytes(),
        _ => Vec::new(),
    };
    ranks.broadcast(first as usize, &mut message);
    Err(Error::RankFailed {
        rank: first as usize,
        ranks: ranks.size(),
        message: String::from_utf8_lossy(&message).into_owned(),
    })
}

/// The total of one pass over `shards` shards: every rank computes its shards with
/// `run(shard, worker)` (on `par`'s threads, `worker` being the thread's index, a wave at a
/// time: see [`wave_shards`]; one process needs no waves and folds each shard as it
/// finishes) and rank 0 folds every shard's result in shard order with `fold` (the first shard's result is the start value, as in a single
/// process). Every rank returns that total (rank 0 included, decoded from the bytes it
/// broadcast, so all ranks hold identical values); with one rank nothing is encoded. At most
/// a wave of results is held at once (on rank 0: its own wave, the total and one received
/// result), whatever the number of shards. Every rank must pass the same thread count, so that
/// all cut the same waves (`pleas merge` agrees on the smallest).
pub fn fold_shards<T: Wire + Send>(
    ranks: &dyn Ranks,
    par: Parallelism,
    shards: usize,
    run: impl Fn(usize, usize) -> Result<T, Error> + Sync,
    fold: impl FnMut(T, T) -> Result<T, Error>,
) -> Result<T, Error> {
    fold_shards_reporting(ranks, par, shards, run, fold, |_| {})
}

/// [`fold_shards`], calling `on_wave(done)` on every rank after each wave with the number of
/// shards finished so far (all ranks' shards of the waves done), for progress reports.
pub fn fold_shards_reporting<T: Wire + Send>(
    ranks: &dyn Ranks,
    par: Parallelism,
    shards: usize,
    run: impl Fn(usize, usize) -> Result<T, Error> + Sync,
    mut fold: impl FnMut(T, T) -> Result<T, Error>,
    mut on_wave: impl FnMut(usize),
) -> Result<T, Error> {
    let (rank, size) = (ranks.rank(), ranks.size().max(1));
    let per_rank = par.threads().max(1);
    if size == 1 && per_rank > 1 && shards > 1 {
        let total = fold_in_order(per_rank, shards, &run, &mut fold, &mut on_wave);
        return agree(ranks, total);
    }
    let mut total: Result<Option<T>, Error> = Ok(None);
    for wave_start in (0..shards).step_by(size * per_rank) {
        let mine = wave_shards(wave_start, rank, per_rank, shards);
        let local: Result<Vec<T>, Error> = map_jobs(par, mine.len(), |j| run(mine.start + j, j))
            .into_iter()
            .collect();
        let local = agree(ranks, local)?;
        let wave_end = (wave_start + size * per_rank).min(shards);
        if rank != ROOT {
            for r in local {
                let mut bytes = Vec::new();
                r.encode(&mut bytes);
                ranks.send(ROOT, &bytes);
            }
            on_wave(wave_end);
            continue;
        }
        let mut local = local.into_iter();
        for s in wave_start..wave_end {
            let owner = (s - wave_start) / per_rank;
            let next = match owner {
                ROOT => local.next().ok_or_else(no_shards),
                _ => T::decode(&ranks.receive(owner)),
            };
            // Keep receiving after a failure: every other rank sends all its results.
            total = match (total, next) {
                (Ok(None), Ok(n)) => Ok(Some(n)),
                (Ok(Some(t)), Ok(n)) => fold(t, n).map(Some),
                (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            };
        }
        on_wave(wave_end);
    }
    let total = total.and_then(|t| t.ok_or_else(no_shards));
    if size <= 1 {
        return total;
    }
    let mut bytes = Vec::new();
    if rank == ROOT {
        agree(ranks, total)?.encode(&mut bytes);
    } else {
        agree(ranks, Ok(()))?;
    }
    ranks.broadcast(ROOT, &mut bytes);
    T::decode(&bytes)
}

/// Shards (beyond the next one to fold) that may be computed ahead of the fold, per thread.
const AHEAD_PER_THREAD: usize = 2;

/// One process's pass without waves: `threads` workers take shards in increasing order as they
/// become free (none waits for a slower one), and this thread folds the results in shard order
/// as they arrive, so the total is the same as a sequential fold. A worker computes shard `s`
/// only once `s` is within [`AHEAD_PER_THREAD`] `x threads` of the next shard to fold, so at
/// most that many results are held. `on_fold(done)` is called after every `threads` folds and
/// after the last. The first failure in shard order is returned; once a shard fails, no new
/// shard starts.
fn fold_in_order<T: Send>(
    threads: usize,
    shards: usize,
    run: &(impl Fn(usize, usize) -> Result<T, Error> + Sync),
    fold: &mut impl FnMut(T, T) -> Result<T, Error>,
    on_fold: &mut impl FnMut(usize),
) -> Result<T, Error> {
    let ahead = AHEAD_PER_THREAD * threads;
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let folded = (Mutex::new(0usize), Condvar::new());
    let (tx, rx) = mpsc::channel::<(usize, Result<T, Error>)>();
    std::thread::scope(|scope| {
        for worker in 0..threads {
            let (tx, next, stop, folded) = (tx.clone(), &next, &stop, &folded);
            scope.spawn(move || {
                let _wake = WakeOnPanic { stop, folded };
                loop {
                    let s = next.fetch_add(1, Ordering::Relaxed);
                    if s >= shards || !wait_turn(s, ahead, folded, stop) {
                        break;
                    }
                    if tx.send((s, run(s, worker))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut pending: BTreeMap<usize, Result<T, Error>> = BTreeMap::new();
        let mut total: Result<Option<T>, Error> = Ok(None);
        let mut done = 0;
        for (s, result) in rx {
            pending.insert(s, result);
            while total.is_ok()
                && let Some(result) = pending.remove(&done)
            {
                total = match (total, result) {
                    (Ok(None), next) => next.map(Some),
                    (Ok(Some(t)), Ok(n)) => fold(t, n).map(Some),
                    (_, Err(e)) | (Err(e), _) => Err(e),
                };
                done += 1;
                *folded.0.lock().expect("fold counter lock") = done;
                if total.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                folded.1.notify_all();
                if done % threads == 0 || done == shards {
                    on_fold(done);
                }
            }
        }
        match total {
            Ok(Some(t)) if done == shards => Ok(t),
            Ok(_) => Err(no_shards()),
            Err(e) => Err(e),
        }
    })
}

/// Stops a pass and wakes the workers waiting for their turn when a worker panics, so that
/// they end (and the scope passes the panic on) rather than wait for a result that never comes.
struct WakeOnPanic<'a> {
    stop: &'a AtomicBool,
    folded: &'a (Mutex<usize>, Condvar),
}

impl Drop for WakeOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.stop.store(true, Ordering::Relaxed);
            self.folded.1.notify_all();
        }
    }
}

/// Waits until shard `s` may start (within `ahead` of the next shard to fold); false when the
/// pass stopped on a failure.
fn wait_turn(s: usize, ahead: usize, folded: &(Mutex<usize>, Condvar), stop: &AtomicBool) -> bool {
    let mut done = folded.0.lock().expect("fold counter lock");
    while s >= *done + ahead && !stop.load(Ordering::Relaxed) {
        done = folded.1.wait(done).expect("fold counter lock");
    }
    !stop.load(Ordering::Relaxed)
}

fn no_shards() -> Error {
    Error::Merge {
        stage: "data",
        reason: "no shards".into(),
    }
}

#[cfg(test)]
mod tests {
    use pleas_core::gram::GramParams;
    use pleas_core::linalg::{MatMut, MatRef};

    use super::*;
    use crate::par::OwnedGram;

    /// Shard `s`'s accumulator: 37 samples of 6 features and 2 targets, its own shift.
    fn shard(s: usize) -> OwnedGram {
        let (n, d, t) = (37, 6, 2);
        let v = |i: usize| ((i * 7919 + s * 104_729) % 1000) as f32 / 250.0 - 1.0 + s as f32;
        let x: Vec<f32> = (0..n * d).map(v).collect();
        let y: Vec<f32> = (0..n * t).map(|i| v(i + 5000)).collect();
        let mut acc = OwnedGram::new_owned(d, t, GramParams::with_block_samples(16));
        acc.push(
            MatRef::new(&x, n, d).unwrap(),
            Some(MatRef::new(&y, n, t).unwrap()),
        )
        .unwrap();
        acc
    }

    fn fold(mut a: OwnedGram, mut b: OwnedGram) -> Result<OwnedGram, Error> {
        a.combine(&mut b).unwrap();
        Ok(a)
    }

    fn gram_bits(mut acc: OwnedGram) -> Vec<u64> {
        let d = acc.dim();
        let mut g = vec![0.0; d * d];
        acc.write_gram(MatMut::new(&mut g, d, d).unwrap()).unwrap();
        g.iter().map(|v| v.to_bits()).collect()
    }

    /// The reduction on K thread ranks with `threads` threads each.
    fn reduce_on(k: usize, threads: usize, shards: usize) -> Vec<Vec<u64>> {
        let par = Parallelism::from_count(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = LocalRanks::group(k)
                .into_iter()
                .map(|r| {
                    scope.spawn(move || {
                        let run = |s: usize, _worker: usize| Ok(shard(s));
                        gram_bits(fold_shards(&r, par, shards, run, fold).unwrap())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn the_reduction_is_the_sequential_fold_for_any_number_of_ranks_and_threads() {
        let shards = 7;
        let sequential = (1..shards).fold(shard(0), |a, s| fold(a, shard(s)).unwrap());
        let want = gram_bits(sequential);
        for k in 1..=9 {
            for threads in 1..=3 {
                for (rank, got) in reduce_on(k, threads, shards).into_iter().enumerate() {
                    assert!(got == want, "{k} ranks of {threads} threads, rank {rank}");
                }
            }
        }
        // The check can tell orders apart: per-rank partial sums combined afterwards (a tree)
        // round differently.
        let halves = fold(
            (1..3).fold(shard(0), |a, s| fold(a, shard(s)).unwrap()),
            (4..shards).fold(shard(3), |a, s| fold(a, shard(s)).unwrap()),
        );
        assert!(gram_bits(halves.unwrap()) != want);
    }

    /// Shard `s` takes longer the smaller `s % 3` is, so workers finish out of order.
    fn uneven(s: usize) {
        std::thread::sleep(std::time::Duration::from_millis(3 * (3 - s as u64 % 3)));
    }

    #[test]
    fn one_process_folds_in_shard_order_with_a_bounded_lead() {
        let shards = 23;
        let want = (0..shards).collect::<Vec<_>>();
        for threads in 2..=4 {
            let running = AtomicUsize::new(0);
            let most = AtomicUsize::new(0);
            let folded = Mutex::new(0usize);
            let run = |s: usize, worker: usize| {
                assert!(worker < threads);
                // Shards start at most AHEAD_PER_THREAD x threads past the next one to fold
                // (this count of folded shards lags by one: a fold starts from the first
                // shard's result, so the first fold counts two).
                let lead = s - *folded.lock().unwrap();
                most.fetch_max(lead, Ordering::Relaxed);
                running.fetch_add(1, Ordering::Relaxed);
                // Shard 0 is slow: without the bound, the other workers would run far ahead.
                if s == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(60));
                }
                uneven(s);
                Ok(vec![s])
            };
            let mut reports = Vec::new();
            let order = fold_in_order(
                threads,
                shards,
                &run,
                &mut |mut a: Vec<usize>, b: Vec<usize>| {
                    a.extend(b);
                    *folded.lock().unwrap() = a.len();
                    Ok(a)
                },
                &mut |done| reports.push(done),
            )
            .unwrap();
            assert_eq!(order, want, "{threads} threads");
            assert_eq!(running.load(Ordering::Relaxed), shards);
            assert!(most.load(Ordering::Relaxed) <= AHEAD_PER_THREAD * threads);
            assert_eq!(reports.last(), Some(&shards));
        }
    }

    #[test]
    fn one_process_returns_the_first_failure_in_shard_order() {
        let run = |s: usize, _worker: usize| {
            uneven(s);
            match s {
                5 | 9 => Err(Error::Merge {
                    stage: "test",
                    reason: format!("shard {s} failed"),
                }),
                _ => Ok(s),
            }
        };
        for threads in 2..=3 {
            let got = fold_in_order(threads, 40, &run, &mut |a, b| Ok(a + b), &mut |_| {});
            match got {
                Err(Error::Merge { reason, .. }) => assert_eq!(reason, "shard 5 failed"),
                other => panic!("{threads} threads: {other:?}"),
            }
        }
    }

    #[test]
    fn waves_cover_every_shard_once_in_order() {
        for shards in [0usize, 1, 2, 3, 7, 8, 64, 100] {
            for size in 1..=9 {
                for per_rank in 1..=3 {
                    let mut next = 0;
                    for wave_start in (0..shards).step_by(size * per_rank) {
                        for r in 0..size {
                            let own = wave_shards(wave_start, r, per_rank, shards);
                            assert_eq!(own.start, next.min(shards), "{shards}/{size}/{per_rank}");
                            assert!(own.len() <= per_rank);
                            next = own.end;
                        }
                    }
                    assert_eq!(next, shards);
                }
            }
        }
    }
}
