//! The `PLEAS_SIMD` environment variable: forces the SIMD path of the core's kernels
//! (`portable`, `avx2` or `avx512`; see [`pleas_core::simd`]). Unset or empty: the widest path
//! the CPU supports.

use std::ffi::OsStr;

use pleas_core::simd::{self, Path, SimdError};

use crate::error::Error;

/// The variable's name.
pub const VAR: &str = "PLEAS_SIMD";

/// Selects the path `PLEAS_SIMD` names, if set ([`select`]); returns the path in use.
pub fn select_from_env() -> Result<Path, Error> {
    select(std::env::var_os(VAR).as_deref())
}

/// Selects the path `value` names (a value of `PLEAS_SIMD`); `None` or blank keeps the current
/// one. Returns the path in use. An unknown name, or a path this CPU lacks, is an error naming
/// the value; the current path is then kept.
pub fn select(value: Option<&OsStr>) -> Result<Path, Error> {
    let Some(value) = value.filter(|v| !v.to_string_lossy().trim().is_empty()) else {
        return Ok(simd::path());
    };
    let refused = |source| Error::SimdPath {
        value: value.to_string_lossy().into_owned(),
        source,
    };
    let name = value.to_str().ok_or(refused(SimdError::UnknownName))?;
    let path = Path::parse(name).map_err(refused)?;
    simd::set_path(path).map_err(refused)?;
    Ok(path)
}
