//! Stopping a merge safely: on SIGINT or SIGTERM a watcher thread removes what the command
//! was writing (its temporary files in OUT_DIR, and OUT_DIR itself if the command created it),
//! prints one line and exits with status 128 + the signal (130, 143). Spill data needs no
//! cleanup: the spill file is unnamed, so the system reclaims it when the process ends, by a
//! signal or otherwise (SIGKILL included).
//!
//! Output is written under a lock ([`OutputGuard::writing`]) that the watcher takes before
//! cleaning, so it never deletes files half way through a commit; once the outputs are
//! committed they are kept.
//!
//! One rank of a multi-process (MPI) merge that receives SIGINT or SIGTERM is a failed rank,
//! not an interrupted command: it prints which rank stopped and exits with status 2, which
//! the launcher (`mpirun`, `srun`) reports as the job's status after it has stopped the other
//! ranks ([`set_rank`]). Only SIGKILL cannot be turned into 2: the launcher then reports
//! 128 + 9.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// An output directory a running command writes into.
struct Registered {
    dir: PathBuf,
    /// The command created it (so an interrupt removes it whole).
    created: bool,
    /// Its outputs are complete: leave them.
    committed: bool,
}

static OUTPUTS: Mutex<BTreeMap<u64, Registered>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(0);
static WATCHER: OnceLock<Result<(), String>> = OnceLock::new();
/// This process's rank and the number of ranks, when it is one of several.
static RANK: OnceLock<(usize, usize)> = OnceLock::new();

/// Exit status of a rank of a multi-rank job stopped by a signal: the job failed.
const RANK_STOPPED: i32 = 2;

/// Records that this process is rank `rank` of `size` (from then on, with `size > 1`, a
/// signal ends it as a failed rank, status 2).
#[cfg(feature = "mpi")]
pub(super) fn set_rank(rank: usize, size: usize) {
    if size > 1 {
        let _ = RANK.set((rank, size));
    }
}

fn outputs() -> MutexGuard<'static, BTreeMap<u64, Registered>> {
    OUTPUTS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The name of this process's temporary output files: `.{name}.tmp-{pid}`.
pub(super) fn temp_name(name: &str) -> String {
    format!(".{name}.tmp-{}", std::process::id())
}

fn is_our_temp(file: &Path) -> bool {
    let suffix = format!(".tmp-{}", std::process::id());
    file.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') && n.ends_with(&suffix))
}

fn clean(r: &Registered) {
    if r.committed {
        return;
    }
    if r.created {
        let _ = std::fs::remove_dir_all(&r.dir);
        return;
    }
    if let Ok(entries) = std::fs::read_dir(&r.dir) {
        for e in entries.flatten() {
            if is_our_temp(&e.path()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn watch(mut signals: Signals) {
    if let Some(sig) = signals.forever().next() {
        let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
        // Holding the lock, no output is being written or committed.
        let outs = outputs();
        let dirs: Vec<String> = outs
            .values()
            .filter(|r| !r.committed)
            .map(|r| {
                clean(r);
                r.dir.display().to_string()
            })
            .collect();
        let what = if dirs.is_empty() {
            String::new()
        } else {
            format!("; nothing written to {}", dirs.join(", "))
        };
        match RANK.get() {
            Some((rank, size)) => {
                eprintln!("error: rank {rank} of {size} stopped by {name}; the job fails{what}");
                std::process::exit(RANK_STOPPED);
            }
            None => {
                eprintln!("pleas: interrupted by {name}{what}");
                std::process::exit(128 + sig);
            }
        }
    }
}

/// Starts the watcher once per process (before a long merge: from then on SIGINT and SIGTERM
/// end the process cleanly).
pub(super) fn install() -> Result<(), String> {
    WATCHER
        .get_or_init(|| {
            let signals = Signals::new([SIGINT, SIGTERM]).map_err(|e| e.to_string())?;
            std::thread::Builder::new()
                .name("pleas-signals".into())
                .spawn(move || watch(signals))
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// An output directory registered with the watcher for as long as it lives.
pub(super) struct OutputGuard {
    id: u64,
}

impl OutputGuard {
    /// Registers `dir` (`created`: the command made it) and starts the watcher if needed.
    pub(super) fn register(dir: &Path, created: bool) -> Result<Self, String> {
        install()?;
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        outputs().insert(
            id,
            Registered {
                dir: dir.to_path_buf(),
                created,
                committed: false,
            },
        );
        Ok(Self { id })
    }

    /// Holds off an interrupt's cleanup while outputs are written and committed.
    pub(super) fn writing(&self) -> WritingLock {
        WritingLock {
            id: self.id,
            lock: outputs(),
        }
    }
}

impl Drop for OutputGuard {
    fn drop(&mut self) {
        outputs().remove(&self.id);
    }
}

/// While held, an interrupt waits; [`WritingLock::committed`] marks the outputs complete.
pub(super) struct WritingLock {
    id: u64,
    lock: MutexGuard<'static, BTreeMap<u64, Registered>>,
}

impl WritingLock {
    /// The outputs are complete: an interrupt from now on leaves them.
    pub(super) fn committed(&mut self) {
        if let Some(r) = self.lock.get_mut(&self.id) {
            r.committed = true;
        }
    }
}
