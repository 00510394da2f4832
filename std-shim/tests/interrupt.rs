//! Stopping a merge: the `pleas` binary is interrupted mid-pass, while it spills live
//! activations (`--memory 1`), by SIGINT, SIGTERM or SIGKILL. Afterwards its private temporary
//! folder holds no spill data and OUT_DIR does not exist; SIGINT and SIGTERM end it with
//! status 130 and 143 and one line on stderr. No timing is assumed: the test waits (with
//! generous bounds) for the spill file to be open, then for the process to end.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use pleas::io::safetensors::{self, Metadata};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/fashion")
}

/// A temporary directory removed when dropped.
struct TmpDir(PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The first `n` merge samples of the fixture data in a file of their own.
fn merge_data(path: &Path, n: usize) {
    let file = safetensors::read(&fixtures().join("eval.safetensors")).unwrap();
    let mut t = file.tensors["x_match"].clone();
    let per = t.bytes.len() / t.shape[0];
    t.shape[0] = n;
    t.bytes.truncate(n * per);
    let mut tensors = BTreeMap::new();
    tensors.insert("x_match".to_string(), t);
    std::fs::write(path, safetensors::raw_to_bytes(&tensors, &Metadata::new())).unwrap();
}

/// Polls `done` every 20 ms for up to `limit`; whether it became true.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// Whether process `pid` has a file open in `dir` (the unnamed spill file shows as
/// `dir/#inode (deleted)` or `dir/.tmpXXXX (deleted)` among its descriptors).
fn has_file_open_in(pid: u32, dir: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| target.starts_with(dir))
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let mut status = None;
    let ended = wait_for(Duration::from_secs(300), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !ended {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the merge did not end within 300 s of the signal");
    }
    status.unwrap()
}

/// Starts a spilling merge, sends `signal` once its spill file is open, and checks what is
/// left. Returns the exit status and stderr.
fn interrupt_merge(name: &str, signal: &str) -> (ExitStatus, String) {
    let root =
        TmpDir(std::env::temp_dir().join(format!("pleas-interrupt-{}-{name}", std::process::id())));
    let tmp = root.0.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let data = root.0.join("data.safetensors");
    merge_data(&data, 512);
    let out = root.0.join("out");
    let rn20 = |i: usize| {
        fixtures().join(format!(
            "rn20w1_split/fashion_resnet20_w1_split_m{i}_s{}.safetensors",
            2 + i
        ))
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_pleas"))
        .arg("merge")
        .arg(rn20(0))
        .arg(rn20(1))
        .arg("--data")
        .arg(&data)
        .arg("-o")
        .arg(&out)
        .args(["--memory", "1", "--threads", "1", "--budget", "1.2"])
        .env("TMPDIR", &tmp)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let spilling = wait_for(Duration::from_secs(600), || {
        has_file_open_in(pid, &tmp) || child.try_wait().unwrap().is_some()
    });
    assert!(
        spilling && child.try_wait().unwrap().is_none(),
        "the merge ended (or never spilled) before it could be interrupted"
    );
    let sent = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = wait_exit(&mut child);
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    let left: Vec<PathBuf> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "{signal}: left in TMPDIR: {left:?}");
    assert!(!out.exists(), "{signal}: OUT_DIR was left behind");
    (status, err)
}

fn check_graceful(signal: &str, name: &str, code: i32) {
    let (status, err) = interrupt_merge(name, signal);
    assert_eq!(
        status.code(),
        Some(code),
        "{signal}: {status:?}, stderr: {err}"
    );
    assert_eq!(err.lines().count(), 1, "{signal}: not one line: {err}");
    assert!(
        err.starts_with(&format!("pleas: interrupted by {name}")),
        "{err}"
    );
}

#[test]
fn sigint_mid_pass_leaves_nothing_and_exits_130() {
    check_graceful("-INT", "SIGINT", 130);
}

#[test]
fn sigterm_mid_pass_leaves_nothing_and_exits_143() {
    check_graceful("-TERM", "SIGTERM", 143);
}

#[test]
fn sigkill_mid_pass_leaves_no_spill_data() {
    let (status, _) = interrupt_merge("SIGKILL", "-KILL");
    assert_eq!(status.signal(), Some(9), "{status:?}");
}
