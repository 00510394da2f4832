//! Where the samples of a call are (`*_f32` or `*_u8` entry points), and their checked form.

use pleas_core::merge::driver::Samples;

use crate::check::{In, Region, input};
use crate::status::pleas_status::{self, PLEAS_ERROR_INTERNAL};

/// The sample pointers of an `*_f32` entry point (the values) or an `*_u8` one (bytes and the
/// table of their 256 values).
#[derive(Clone, Copy)]
pub(crate) enum SamplePtr {
    F32(*const f32),
    U8 { data: *const u8, table: *const f32 },
}

/// The samples after their checks (non-NULL, aligned, lengths), and their regions.
pub(crate) enum SampleIn {
    F32(In<f32>),
    U8 { data: In<u8>, table: In<f32> },
}

impl SampleIn {
    /// Checks `len` values (or bytes, and a table of 256 values) at `ptr`.
    pub(crate) fn new(ptr: SamplePtr, len: usize) -> Result<Self, pleas_status> {
        Ok(match ptr {
            SamplePtr::F32(x) => SampleIn::F32(input(x, len)?),
            SamplePtr::U8 { data, table } => SampleIn::U8 {
                data: input(data, len)?,
                table: input(table, 256)?,
            },
        })
    }

    /// The regions read (the second is empty for f32 samples), for the overlap check.
    pub(crate) fn regions(&self) -> [Region; 2] {
        match self {
            SampleIn::F32(x) => [x.region, Region::EMPTY],
            SampleIn::U8 { data, table } => [data.region, table.region],
        }
    }

    /// The core's view.
    ///
    /// # Safety
    ///
    /// As for [`In::slice`].
    pub(crate) unsafe fn samples<'a>(&self) -> Result<Samples<'a>, pleas_status> {
        Ok(match self {
            // SAFETY: forwarded contract.
            SampleIn::F32(x) => Samples::F32(unsafe { x.slice() }),
            SampleIn::U8 { data, table } => Samples::U8 {
                // SAFETY: forwarded contract.
                data: unsafe { data.slice() },
                // SAFETY: forwarded contract. The table was checked with 256 values.
                table: unsafe { table.slice() }
                    .try_into()
                    .map_err(|_| PLEAS_ERROR_INTERNAL)?,
            },
        })
    }
}
