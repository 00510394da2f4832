//! Turning C pointers and lengths into slices, after every check that can be made on them.

use core::mem::{align_of, size_of};

use crate::pleas_status::{self, PLEAS_ERROR_ARGUMENT, PLEAS_ERROR_LENGTH};

/// The address range of one buffer of a call, for the overlap checks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Region {
    start: usize,
    end: usize,
    writable: bool,
}

impl Region {
    /// The region of an empty buffer, which overlaps nothing.
    pub(crate) const EMPTY: Self = Self {
        start: 0,
        end: 0,
        writable: false,
    };
}

/// `len` elements of `T` from `ptr`: checks that the pointer is non-NULL (unless `len` is 0)
/// and aligned, that the size in bytes fits in `isize` and that the range does not wrap
/// around the address space. Returns the byte range.
fn region<T>(ptr: *const T, len: usize, writable: bool) -> Result<Region, pleas_status> {
    if len == 0 {
        return Ok(Region::EMPTY);
    }
    if ptr.is_null() || !(ptr as usize).is_multiple_of(align_of::<T>()) {
        return Err(PLEAS_ERROR_ARGUMENT);
    }
    let bytes = len
        .checked_mul(size_of::<T>())
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or(PLEAS_ERROR_LENGTH)?;
    let start = ptr as usize;
    let end = start.checked_add(bytes).ok_or(PLEAS_ERROR_ARGUMENT)?;
    Ok(Region {
        start,
        end,
        writable,
    })
}

/// Fails with `PLEAS_ERROR_ARGUMENT` if a writable region overlaps any other region.
pub(crate) fn disjoint(regions: &[Region]) -> Result<(), pleas_status> {
    for (i, a) in regions.iter().enumerate() {
        for b in &regions[i + 1..] {
            let overlap = a.start < b.end && b.start < a.end;
            if overlap && (a.writable || b.writable) {
                return Err(PLEAS_ERROR_ARGUMENT);
            }
        }
    }
    Ok(())
}

/// `rows * cols`, or `PLEAS_ERROR_LENGTH` on overflow.
pub(crate) fn product(rows: usize, cols: usize) -> Result<usize, pleas_status> {
    rows.checked_mul(cols).ok_or(PLEAS_ERROR_LENGTH)
}

/// A checked read-only buffer: its region, and the slice once every check has passed.
pub(crate) struct In<T> {
    ptr: *const T,
    len: usize,
    pub(crate) region: Region,
}

/// A checked writable buffer.
pub(crate) struct Out<T> {
    ptr: *mut T,
    len: usize,
    pub(crate) region: Region,
}

/// Checks a read-only buffer of `len` elements (see [`region`]).
pub(crate) fn input<T>(ptr: *const T, len: usize) -> Result<In<T>, pleas_status> {
    Ok(In {
        ptr,
        len,
        region: region(ptr, len, false)?,
    })
}

/// Checks a writable buffer of `len` elements (see [`region`]).
pub(crate) fn output<T>(ptr: *mut T, len: usize) -> Result<Out<T>, pleas_status> {
    Ok(Out {
        ptr,
        len,
        region: region(ptr.cast_const(), len, true)?,
    })
}

impl<T> In<T> {
    /// An empty buffer (no elements), for unused slots.
    pub(crate) const fn empty() -> Self {
        Self {
            ptr: core::ptr::null(),
            len: 0,
            region: Region::EMPTY,
        }
    }

    /// The slice.
    ///
    /// # Safety
    ///
    /// The caller's pointer must address `len` initialised elements that nothing writes for
    /// `'a`.
    pub(crate) unsafe fn slice<'a>(&self) -> &'a [T] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: non-NULL, aligned, size within isize and not wrapping (checked by `region`);
        // validity and the absence of writers are the caller's contract.
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl<T> Out<T> {
    /// The slice.
    ///
    /// # Safety
    ///
    /// The caller's pointer must address `len` elements (initialised: they are plain floats or
    /// integers here) that nothing else reads or writes for `'a`; within the call, [`disjoint`]
    /// must have passed over every buffer of the call.
    pub(crate) unsafe fn slice<'a>(&mut self) -> &'a mut [T] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: as for `In::slice`, and no other buffer of the call overlaps this one.
        unsafe { core::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

/// Reads an optional parameter struct: the defaults when `ptr` is NULL.
///
/// # Safety
///
/// A non-NULL `ptr` must point to a valid `T`.
pub(crate) unsafe fn optional<T: Copy>(ptr: *const T, default: T) -> Result<T, pleas_status> {
    if ptr.is_null() {
        return Ok(default);
    }
    if !(ptr as usize).is_multiple_of(align_of::<T>()) {
        return Err(PLEAS_ERROR_ARGUMENT);
    }
    // SAFETY: non-NULL and aligned; validity is the caller's contract.
    Ok(unsafe { ptr.read() })
}

/// Writes an optional result struct: nothing when `ptr` is NULL.
///
/// # Safety
///
/// A non-NULL `ptr` must point to writable memory for a `T`.
pub(crate) unsafe fn write_optional<T>(ptr: *mut T, value: T) -> Result<(), pleas_status> {
    if ptr.is_null() {
        return Ok(());
    }
    if !(ptr as usize).is_multiple_of(align_of::<T>()) {
        return Err(PLEAS_ERROR_ARGUMENT);
    }
    // SAFETY: non-NULL and aligned; writability is the caller's contract.
    unsafe { ptr.write(value) };
    Ok(())
}

/// Checks a required pointer to one `T` (non-NULL, aligned) and gives its region.
pub(crate) fn required<T>(ptr: *const T, writable: bool) -> Result<Region, pleas_status> {
    if ptr.is_null() {
        return Err(PLEAS_ERROR_ARGUMENT);
    }
    region(ptr, 1, writable)
}

/// The region of an optional output struct (empty when NULL), after the same checks as
/// [`write_optional`].
pub(crate) fn optional_region<T>(ptr: *mut T) -> Result<Region, pleas_status> {
    region(ptr.cast_const(), usize::from(!ptr.is_null()), true)
}

/// The region of an optional input struct (empty when NULL), after the alignment check of
/// [`optional`].
pub(crate) fn optional_input_region<T>(ptr: *const T) -> Result<Region, pleas_status> {
    region(ptr, usize::from(!ptr.is_null()), false)
}
