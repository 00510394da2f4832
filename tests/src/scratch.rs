//! Scratch directories for tests that write files, removed when the test process exits.
//!
//! The test harness runs a binary's tests on several threads that share one directory per
//! binary and name (files inside are per test). Nothing can remove such a directory at the end
//! of one test, and statics are never dropped, so the first call registers a C `atexit` handler
//! that removes every directory handed out. The harness ends by returning from `main` or
//! through `std::process::exit`, and both run `atexit` handlers; a process killed by a signal
//! leaves its directory behind (its name carries the process id, so runs never collide).
//!
//! [`TempDir`] is one test's own directory inside such a directory, removed when the test
//! ends (and with its parent at exit if the test panicked).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

/// Directories to remove at exit.
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static REGISTER: Once = Once::new();

extern "C" fn remove_all() {
    let dirs = match DIRS.lock() {
        Ok(dirs) => dirs,
        Err(poisoned) => poisoned.into_inner(),
    };
    for dir in dirs.iter() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// `$TMPDIR/pleas-{name}-{pid}`, created if missing and removed when the process exits.
pub fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pleas-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    REGISTER.call_once(|| {
        // SAFETY: `remove_all` is a plain `extern "C" fn()` that neither unwinds (it ignores
        // every error and recovers a poisoned lock) nor calls `exit`.
        let status = unsafe { libc::atexit(remove_all) };
        assert_eq!(status, 0, "atexit failed");
    });
    let mut dirs = DIRS.lock().unwrap();
    if !dirs.contains(&dir) {
        dirs.push(dir.clone());
    }
    dir
}

/// One test's directory, `dir(group)/name`: emptied when made, removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// `dir(group)/name`, empty.
    pub fn new(group: &str, name: &str) -> Self {
        let path = dir(group).join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
