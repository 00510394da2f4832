//! The MPI world as [`Ranks`] (`--features mpi`, the `mpi` crate over the system's MPI): a thin
//! layer that moves bytes; what is sent and when is decided in [`crate::ranks`].
//!
//! MPI is called from the main thread only (`MPI_THREAD_FUNNELED`); the worker threads of a
//! rank compute, they never communicate. Messages longer than [`CHUNK`] bytes go in pieces, as
//! MPI counts are C ints.
//!
//! Test hook: `PLEAS_MPI_TEST_FAIL_RANK=R` makes rank `R` fail at its `PLEAS_MPI_TEST_FAIL_AT`-th
//! agreement (default 2: in `pleas merge`, agreement 1 is on the arguments and models, 2 on the
//! matching statistics' pass; every data pass then takes two), as an error on that rank would;
//! CI uses it to check that the whole job fails and writes nothing.

use std::cell::Cell;

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Destination, Root, Source};

use super::Ranks;
use crate::error::Error;

/// Largest piece of a message, in bytes (below `i32::MAX`).
pub const CHUNK: usize = 1 << 30;

/// This process's place in the MPI world; MPI is finalised when it is dropped.
pub struct World {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    fail_at: Option<u64>,
    agreements: Cell<u64>,
    // Dropped last: finalises MPI.
    _universe: Universe,
}

impl World {
    /// Initialises MPI (a process started without `mpirun`/`srun` is a world of one).
    pub fn init() -> Result<Self, Error> {
        let (universe, _) =
            mpi::initialize_with_threading(mpi::Threading::Funneled).ok_or_else(|| {
                Error::RankMessage {
                    reason: "MPI was already initialised in this process".into(),
                }
            })?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        let env = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let fail_at = match env("PLEAS_MPI_TEST_FAIL_RANK") {
            Some(r) if r == rank as u64 => Some(env("PLEAS_MPI_TEST_FAIL_AT").unwrap_or(2)),
            _ => None,
        };
        Ok(Self {
            world,
            rank,
            size,
            fail_at,
            agreements: Cell::new(0),
            _universe: universe,
        })
    }
}

fn peer(r: usize) -> i32 {
    i32::try_from(r).expect("MPI ranks are C ints")
}

impl Ranks for World {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn send(&self, to: usize, bytes: &[u8]) {
        let p = self.world.process_at_rank(peer(to));
        p.send(&(bytes.len() as u64));
        for piece in bytes.chunks(CHUNK) {
            p.send(piece);
        }
    }

    fn receive(&self, from: usize) -> Vec<u8> {
        let p = self.world.process_at_rank(peer(from));
        let (len, _) = p.receive::<u64>();
        let mut bytes = vec![0u8; len as usize];
        for piece in bytes.chunks_mut(CHUNK) {
            p.receive_into(piece);
        }
        bytes
    }

    fn broadcast(&self, root: usize, bytes: &mut Vec<u8>) {
        let p = self.world.process_at_rank(peer(root));
        let mut len = bytes.len() as u64;
        p.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        for piece in bytes.chunks_mut(CHUNK) {
            p.broadcast_into(piece);
        }
    }

    fn min_over_ranks(&self, value: u64) -> u64 {
        let mut min = value;
        self.world
            .all_reduce_into(&value, &mut min, SystemOperation::min());
        min
    }

    fn injected_failure(&self) -> Option<String> {
        let n = self.agreements.get() + 1;
        self.agreements.set(n);
        (self.fail_at == Some(n)).then(|| {
            format!(
                "failure injected by PLEAS_MPI_TEST_FAIL_RANK={} at agreement {n}",
                self.rank
            )
        })
    }
}
