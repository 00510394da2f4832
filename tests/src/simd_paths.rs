//! Running a test body on every SIMD path this machine supports.
//!
//! The selected path is process-wide, so the bodies run under one lock: tests of one binary that
//! use [`each_path`] take turns. Paths the CPU lacks are skipped with a `SKIP:` line on stderr
//! (once per test binary).

use std::sync::{Mutex, Once};

use pleas_core::simd::{self, Path};

static LOCK: Mutex<()> = Mutex::new(());
static REPORT: Once = Once::new();

/// The paths this machine runs, narrowest first.
pub fn supported_paths() -> Vec<Path> {
    Path::ALL.into_iter().filter(|p| p.supported()).collect()
}

/// Runs `body` once per supported path with that path selected, stopping at the first error;
/// restores the previous path afterwards.
pub fn each_path<E>(mut body: impl FnMut(Path) -> Result<(), E>) -> Result<(), E> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    REPORT.call_once(|| {
        for p in Path::ALL.into_iter().filter(|p| !p.supported()) {
            eprintln!("SKIP: SIMD path {p}: this CPU lacks it");
        }
    });
    let before = simd::path();
    let mut result = Ok(());
    for p in supported_paths() {
        simd::set_path(p).expect("a supported path");
        result = body(p);
        if result.is_err() {
            break;
        }
    }
    simd::set_path(before).expect("the previous path");
    result
}

/// [`each_path`] for bodies that assert (panic) instead of returning errors.
pub fn for_each_path(mut body: impl FnMut(Path)) {
    let _ = each_path::<()>(|p| {
        body(p);
        Ok(())
    });
}
