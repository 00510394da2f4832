//! Selecting the SIMD path: names, the `PLEAS_SIMD` values the std shim accepts or refuses, and
//! that a refused path leaves the current one in place.

use std::ffi::OsStr;

use pleas::error::chain;
use pleas::simd_env::select;
use pleas_core::simd::{self, Path, SimdError};
use pleas_tests::simd_paths::for_each_path;

#[test]
fn names_round_trip_and_unknown_names_are_refused() {
    for p in Path::ALL {
        assert_eq!(Path::parse(p.name()), Ok(p));
        assert_eq!(Path::parse(&p.name().to_uppercase()), Ok(p));
    }
    assert_eq!(Path::parse("sse9"), Err(SimdError::UnknownName));
    assert!(Path::Portable.supported());
    assert!(simd::best().supported());
}

#[test]
fn pleas_simd_values_select_or_fail_with_the_value_named() {
    for_each_path(|current| {
        // Blank or unset: the current path stays.
        assert_eq!(select(None).unwrap(), current);
        assert_eq!(select(Some(OsStr::new(" "))).unwrap(), current);
        let err = select(Some(OsStr::new("avx1024"))).unwrap_err();
        let text = chain(&err);
        assert!(
            text.contains("PLEAS_SIMD=`avx1024`") && text.contains("portable, avx2 or avx512"),
            "{text}"
        );
        assert_eq!(simd::path(), current, "a refused value keeps the path");
        for p in Path::ALL {
            match select(Some(OsStr::new(p.name()))) {
                Ok(got) => {
                    assert!(p.supported());
                    assert_eq!((got, simd::path()), (p, p));
                }
                Err(e) => {
                    assert!(!p.supported(), "{p} refused on a CPU that has it");
                    assert!(
                        chain(&e).contains("not supported by this CPU"),
                        "{}",
                        chain(&e)
                    );
                }
            }
            simd::set_path(current).unwrap();
        }
    });
}

/// Prints the paths this machine runs and `SKIP:` for the others (CI shows it with
/// `--nocapture`); the kernel tests run each supported one through `for_each_path`.
#[test]
fn report_the_paths_the_kernel_tests_run() {
    let mut ran = Vec::new();
    for_each_path(|p| ran.push(p));
    assert_eq!(
        ran.first(),
        Some(&Path::Portable),
        "the portable path always runs"
    );
    let names: Vec<&str> = ran.iter().map(|p| p.name()).collect();
    println!("SIMD paths the kernel tests run here: {}", names.join(", "));
    for p in Path::ALL.into_iter().filter(|p| !ran.contains(p)) {
        println!("SKIP: SIMD path {p}: this CPU lacks it");
    }
}
