//! The committed header `include/pleas.h` is what cbindgen generates from the sources now.
//!
//! Regenerates the header in memory and compares; with `PLEAS_BLESS=1` in the environment it
//! writes the new header instead (then review and commit it).

use std::path::Path;

#[test]
fn header_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let generated = String::from_utf8(generated).expect("UTF-8 header");
    let path = dir.join("include/pleas.h");
    if std::env::var_os("PLEAS_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write include/pleas.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or(
                committed.lines().count().min(generated.lines().count()),
                |i| i,
            );
        panic!(
            "include/pleas.h is stale (first difference at line {}): run \
             `PLEAS_BLESS=1 cargo test --test header` in capi/ and commit the header",
            line + 1
        );
    }
}
