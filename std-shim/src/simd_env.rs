//! The `PLEAS_SIMD` environment variable: forces the SIMD path of the core's kernels
//! (`portable`, `avx2` or `avx512`; see [`pleas_core::simd`]). Unset or empty: the widest path
//! the CPU supports.

use pleas_core::simd::{self, Path};

use crate::error::Error;

/// The variable's name.
pub const VAR: &str = "PLEAS_SIMD";

/// Selects the path `PLEAS_SIMD` names, if set; returns the path in use. An unknown name, or a
/// path this CPU lacks, is an error naming the value.
pub fn select_from_env() -> Result<Path, Error> {
    let value = match std::env::var(VAR) {
        Ok(v) if !v.trim().is_empty() => v,
        Ok(_) | Err(std::env::VarError::NotPresent) => return Ok(simd::path()),
        Err(std::env::VarError::NotUnicode(v)) => {
            return Err(Error::SimdPath {
                value: v.to_string_lossy().into_owned(),
                source: simd::SimdError::UnknownName,
            });
        }
    };
    let refused = |source| Error::SimdPath {
        value: value.clone(),
        source,
    };
    let path = Path::parse(&value).map_err(refused)?;
    simd::set_path(path).map_err(refused)?;
    Ok(path)
}
