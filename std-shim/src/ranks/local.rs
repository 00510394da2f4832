//! Ranks as threads of one process, joined by channels: the multi-process protocol without
//! MPI, for tests (a merge run on K such ranks must give the single-process bytes).

use std::cell::Cell;
use std::sync::mpsc::{Receiver, Sender, channel};

use super::Ranks;

/// One of `size` ranks that live in threads of this process (see [`LocalRanks::group`]).
pub struct LocalRanks {
    rank: usize,
    /// `to[r]`: the channel to rank `r`.
    to: Vec<Sender<Vec<u8>>>,
    /// `from[r]`: the channel from rank `r`.
    from: Vec<Receiver<Vec<u8>>>,
    fail_at: Option<u64>,
    agreements: Cell<u64>,
}

impl LocalRanks {
    /// `size` connected ranks; move each into its own thread.
    pub fn group(size: usize) -> Vec<LocalRanks> {
        let size = size.max(1);
        // channels[from][to]
        let mut senders: Vec<Vec<Option<Sender<Vec<u8>>>>> = (0..size)
            .map(|_| (0..size).map(|_| None).collect())
            .collect();
        let mut receivers: Vec<Vec<Option<Receiver<Vec<u8>>>>> = (0..size)
            .map(|_| (0..size).map(|_| None).collect())
            .collect();
        for from in 0..size {
            for to in 0..size {
                let (s, r) = channel();
                senders[from][to] = Some(s);
                receivers[to][from] = Some(r);
            }
        }
        senders
            .into_iter()
            .zip(receivers)
            .enumerate()
            .map(|(rank, (to, from))| LocalRanks {
                rank,
                to: to.into_iter().map(|s| s.expect("every pair")).collect(),
                from: from.into_iter().map(|r| r.expect("every pair")).collect(),
                fail_at: None,
                agreements: Cell::new(0),
            })
            .collect()
    }

    /// This rank fails at its `n`-th agreement (counted from 1), as
    /// `PLEAS_MPI_TEST_FAIL_AT` does for an MPI rank.
    pub fn fail_at(mut self, n: u64) -> Self {
        self.fail_at = Some(n);
        self
    }
}

impl Ranks for LocalRanks {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.to.len()
    }

    fn send(&self, to: usize, bytes: &[u8]) {
        self.to[to]
            .send(bytes.to_vec())
            .expect("the receiving rank is alive");
    }

    fn receive(&self, from: usize) -> Vec<u8> {
        self.from[from].recv().expect("the sending rank is alive")
    }

    fn broadcast(&self, root: usize, bytes: &mut Vec<u8>) {
        if self.rank == root {
            for r in (0..self.size()).filter(|&r| r != root) {
                self.send(r, bytes);
            }
        } else {
            *bytes = self.receive(root);
        }
    }

    fn min_over_ranks(&self, value: u64) -> u64 {
        for r in (0..self.size()).filter(|&r| r != self.rank) {
            self.send(r, &value.to_le_bytes());
        }
        let mut min = value;
        for r in (0..self.size()).filter(|&r| r != self.rank) {
            let b = self.receive(r);
            let v = u64::from_le_bytes(b.as_slice().try_into().expect("one u64"));
            min = min.min(v);
        }
        min
    }

    fn injected_failure(&self) -> Option<String> {
        let n = self.agreements.get() + 1;
        self.agreements.set(n);
        (self.fail_at == Some(n)).then(|| format!("failure injected at agreement {n}"))
    }
}
