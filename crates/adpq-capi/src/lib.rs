//! `adpq-capi`: the C ABI of adpq's `#![no_std]` core, for C and C++ programs (inference
//! engines, embedded firmware) that link a static or shared library and include
//! `include/adpq.h` (generated from this crate by cbindgen; `tests/header.rs` fails when
//! the checked-in header is stale).
//!
//! What C can do:
//! - parse and validate a packed tensor (zero-copy, CRC included) from its own buffer
//!   into an [`adpq_tensor`] that borrows the buffer ([`adpq_tensor_parse`]), then query
//!   its shape and format ([`adpq_tensor_get_info`]);
//! - dequantize a row range as f32, f16 or bf16 by the core's narrowing rule
//!   ([`adpq_dequantize_rows`]);
//! - dot products and gemv with f32 activations ([`adpq_dot_row`], [`adpq_gemv`]) and
//!   with int8 activations ([`adpq_gemv_q8`]: quantizes the activations, then gemv);
//! - select and quantize a row-major f32/f16/bf16 matrix into its own buffer
//!   ([`adpq_quantize_select`], which also gives the packed length, then
//!   [`adpq_quantize`]), parameters as a plain struct ([`adpq_params`]);
//! - choose the CPU kernels ([`adpq_backend`]: the best at run time, or the scalar
//!   oracle) and read their name ([`adpq_backend_name`]).
//!
//! # Conventions (after rustls-ffi)
//! - Every fallible function returns an [`adpq_status`]; its values are stable (new ones
//!   are only added). [`adpq_status_message`] gives a static message for each.
//! - Output parameters (handles, infos, lengths, scalars) are written only on success.
//!   Bulk output buffers (dequantized rows, `y`, packed bytes) are written as the work
//!   proceeds and are zero-filled when the call fails after it started writing, so a
//!   caller that ignores the status never reads half a result as data.
//! - Every pointer is checked for NULL ([`adpq_status::ADPQ_STATUS_NULL_POINTER`]) and
//!   typed element pointers for their alignment
//!   ([`adpq_status::ADPQ_STATUS_MISALIGNED`]); lengths are always passed and checked.
//! - Enumerations coming *from* C (backend, dtype, grid, version) are plain `uint32_t`
//!   parameters, checked on entry, so no out-of-range value ever becomes a Rust enum.
//! - No allocation: handles live in caller storage, scratch comes from the caller.
//! - No unwinding across the boundary. With the `std` feature every entry point runs
//!   under `catch_unwind` and a panic becomes [`adpq_status::ADPQ_STATUS_PANIC`]. Without
//!   it (`no_std`, bare metal) the build uses `panic = "abort"`: a panic cannot unwind at
//!   all and ends in this crate's `#[panic_handler]`, which never returns. Either way no
//!   unwinding reaches C; besides, every entry point is `extern "C"`, and Rust aborts
//!   when a panic would unwind out of such a function, so a std build with
//!   `panic = "abort"` (where `catch_unwind` catches nothing) aborts the process: no
//!   undefined behaviour either. `scripts/capi-embedded.sh` checks that the bare-metal
//!   link holds no unwinding machinery (`_Unwind_*`, `eh_personality`). The core reports
//!   bad input as error values and is fuzzed for it (target `capi` drives these entry
//!   points), so a panic would be a bug, not a code path.
//! - Thread safety: the library has no global mutable state (CPU detection caches in an
//!   atomic). A parsed [`adpq_tensor`] is immutable: any number of threads may use it at
//!   once; parsing into storage that another thread is reading is a data race.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]
// C names: the header reads like a C library (`adpq_tensor`, `ADPQ_STATUS_OK`).
#![allow(non_camel_case_types)]

mod handle;
#[cfg(feature = "std")]
pub mod harness;
mod ops;
mod quantize;
mod status;

pub use handle::{adpq_tensor, adpq_tensor_get_info, adpq_tensor_info, adpq_tensor_parse};
pub use ops::{
    adpq_backend, adpq_backend_name, adpq_backend_resolve, adpq_dequantize_rows, adpq_dot_row,
    adpq_dtype, adpq_gemv, adpq_gemv_q8, adpq_q8_scratch_len,
};
pub use quantize::{
    adpq_grid, adpq_params, adpq_params_preset, adpq_preset, adpq_quantize, adpq_quantize_select,
    adpq_selection,
};
pub use status::{adpq_status, adpq_status_message};

/// Major version of this library (the crate's version).
pub const ADPQ_VERSION_MAJOR: u32 = 0;
/// Minor version of this library.
pub const ADPQ_VERSION_MINOR: u32 = 2;
/// Patch version of this library.
pub const ADPQ_VERSION_PATCH: u32 = 0;
/// `MAJOR * 10000 + MINOR * 100 + PATCH`, what [`adpq_version_number`] returns; compare
/// it with the header's value to detect a header/library mismatch.
pub const ADPQ_VERSION_NUMBER: u32 =
    ADPQ_VERSION_MAJOR * 10000 + ADPQ_VERSION_MINOR * 100 + ADPQ_VERSION_PATCH;

/// The library's version as a static NUL-terminated string (`"0.2.0"`). Never NULL;
/// the string lives as long as the program. Thread-safe.
#[no_mangle]
pub extern "C" fn adpq_version() -> *const core::ffi::c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The library's version as `MAJOR * 10000 + MINOR * 100 + PATCH` (compare with
/// `ADPQ_VERSION_NUMBER` from the header). Thread-safe.
#[no_mangle]
pub extern "C" fn adpq_version_number() -> u32 {
    ADPQ_VERSION_NUMBER
}

/// Runs `f`, turning a panic into [`adpq_status::ADPQ_STATUS_PANIC`] where std can catch
/// it. Without std the build aborts on panic (see the crate docs), so `f` runs as is.
fn guard(f: impl FnOnce() -> Result<(), adpq_status>) -> adpq_status {
    #[cfg(feature = "std")]
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or(Err(adpq_status::ADPQ_STATUS_PANIC));
    #[cfg(not(feature = "std"))]
    let r = f();
    match r {
        Ok(()) => adpq_status::ADPQ_STATUS_OK,
        Err(s) => s,
    }
}

/// Without std, a panic (a bug: the core reports bad input as errors) stops here and
/// never returns: nothing unwinds into C. Bare-metal builds set `panic = "abort"`.
#[cfg(all(not(feature = "std"), not(test)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// Raw-pointer helpers: every pointer argument goes through one of these.
mod ptr {
    use crate::adpq_status::{self, *};

    /// `p[..len]` as a slice after the NULL, alignment and size checks.
    ///
    /// # Safety
    /// When `p` is not NULL it must point to `len` readable, initialized `T` that nothing
    /// writes during `'a`.
    pub(crate) unsafe fn slice<'a, T>(p: *const T, len: usize) -> Result<&'a [T], adpq_status> {
        check::<T>(p.cast(), len)?;
        // SAFETY: `p` is non-NULL and aligned for `T` and `len * size_of::<T>()` fits in
        // isize (checked above); the caller guarantees `len` readable, initialized
        // elements that nothing mutates during 'a.
        Ok(unsafe { core::slice::from_raw_parts(p, len) })
    }

    /// `p[..len]` as a mutable slice after the NULL, alignment and size checks.
    ///
    /// # Safety
    /// When `p` is not NULL it must point to `len` writable `T` (any bits are valid for
    /// the `T` used here) that nothing else reads or writes during `'a`.
    pub(crate) unsafe fn slice_mut<'a, T: bytemuck::Pod>(
        p: *mut T,
        len: usize,
    ) -> Result<&'a mut [T], adpq_status> {
        check::<T>(p.cast_const().cast(), len)?;
        // SAFETY: as in `slice`, plus exclusive access granted by the caller; `T: Pod`,
        // so whatever bytes the caller's memory holds are a valid `T`.
        Ok(unsafe { core::slice::from_raw_parts_mut(p, len) })
    }

    fn check<T>(p: *const u8, len: usize) -> Result<(), adpq_status> {
        if p.is_null() {
            return Err(ADPQ_STATUS_NULL_POINTER);
        }
        if !(p as usize).is_multiple_of(core::mem::align_of::<T>()) {
            return Err(ADPQ_STATUS_MISALIGNED);
        }
        match len.checked_mul(core::mem::size_of::<T>()) {
            Some(b) if b <= isize::MAX as usize => Ok(()),
            _ => Err(ADPQ_STATUS_BUFFER_SIZE),
        }
    }

    /// Writes `v` through `out` (NULL-checked, alignment-checked).
    ///
    /// # Safety
    /// When `out` is not NULL it must be valid for a write of a `T`.
    pub(crate) unsafe fn write<T>(out: *mut T, v: T) -> Result<(), adpq_status> {
        check::<T>(out.cast_const().cast(), 1)?;
        // SAFETY: non-NULL and aligned (checked), writable per the caller's contract;
        // `write` does not read or drop the old (maybe uninitialized) value.
        unsafe { out.write(v) };
        Ok(())
    }

    /// Checks that `out` may be written before any work starts (so that a NULL output
    /// fails fast, before side effects on other buffers).
    pub(crate) fn out_ok<T>(out: *mut T) -> Result<(), adpq_status> {
        check::<T>(out.cast_const().cast(), 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_matches_the_crate() {
        let v = env!("CARGO_PKG_VERSION");
        assert_eq!(
            v,
            format!("{ADPQ_VERSION_MAJOR}.{ADPQ_VERSION_MINOR}.{ADPQ_VERSION_PATCH}")
        );
        // SAFETY: adpq_version returns a static NUL-terminated string.
        let s = unsafe { core::ffi::CStr::from_ptr(adpq_version()) };
        assert_eq!(s.to_str().unwrap(), v);
        assert_eq!(adpq_version_number(), ADPQ_VERSION_NUMBER);
    }

    #[test]
    fn a_panic_becomes_a_status() {
        let s = guard(|| panic!("test panic inside an entry point"));
        assert_eq!(s, adpq_status::ADPQ_STATUS_PANIC);
        assert_eq!(guard(|| Ok(())), adpq_status::ADPQ_STATUS_OK);
    }
}
