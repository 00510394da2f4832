//! Running the `pleas` command in-process ([`pleas::cli::run`]), as the CLI tests do.

use std::ffi::{OsStr, OsString};

/// Runs `pleas ARGS...`; returns (exit code, stdout, stderr).
pub fn pleas<S: AsRef<OsStr>>(args: &[S]) -> (i32, String, String) {
    let mut full: Vec<OsString> = vec!["pleas".into()];
    full.extend(args.iter().map(|a| a.as_ref().to_os_string()));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = pleas::cli::run(full, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

/// Arguments of mixed kinds (`&str`, paths, ...) as one list.
pub fn args(v: &[&dyn AsRef<OsStr>]) -> Vec<OsString> {
    v.iter().map(|a| a.as_ref().to_os_string()).collect()
}
