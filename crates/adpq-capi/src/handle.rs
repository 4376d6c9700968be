//! The parsed-tensor handle: caller storage holding a validated, zero-copy view.

use core::mem::{align_of, size_of, MaybeUninit};

use adpq_core::{Grid, PackedTensor};

use crate::adpq_status::{self, *};
use crate::{guard, ptr};

/// Words of caller storage an [`adpq_tensor`] takes.
pub const ADPQ_TENSOR_WORDS: usize = 40;

/// A parsed, validated packed tensor: opaque storage the caller provides (a local, a
/// static, a struct member; no allocation), filled by [`adpq_tensor_parse`].
///
/// It **borrows** the packed buffer it was parsed from: that buffer must stay valid and
/// unmodified for as long as the handle is used. The handle owns nothing and needs no
/// destructor; dropping it is forgetting it, and a bitwise copy is an equal handle.
/// Zero-initialize storage before its first use (`adpq_tensor t = {0};`): a handle that
/// no parse filled is then refused with `ADPQ_STATUS_INVALID_HANDLE`. Reading
/// uninitialized storage is undefined behaviour in C already.
///
/// Thread safety: after a successful parse the handle is immutable; any number of
/// threads may pass it (`const adpq_tensor *`) to the functions of this library at once.
#[repr(C)]
#[derive(Debug)]
pub struct adpq_tensor {
    _opaque: [u64; ADPQ_TENSOR_WORDS],
}

/// What a filled [`adpq_tensor`] holds. `tag` tells a filled handle from zeroed storage.
#[repr(C)]
struct Inner {
    tag: u64,
    tensor: PackedTensor<'static>,
}

const TAG: u64 = 0x4144_5051_5445_4e53; // "ADPQTENS"

const _: () = assert!(size_of::<Inner>() <= size_of::<adpq_tensor>());
const _: () = assert!(align_of::<Inner>() <= align_of::<adpq_tensor>());

/// Format and shape of a parsed tensor, filled by [`adpq_tensor_get_info`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct adpq_tensor_info {
    /// Rows (output features).
    pub rows: u64,
    /// Columns (input features): the length of the activations.
    pub cols: u64,
    /// Packed format version (1 or 2).
    pub version: u32,
    /// Bits per code (2..=8).
    pub bits: u32,
    /// Weights per group along a row (the last group of a row may be shorter).
    pub group_size: u32,
    /// Grid kind (`ADPQ_GRID_SYMMETRIC` or `ADPQ_GRID_ASYMMETRIC`).
    pub grid: u32,
    /// Outliers in the tensor.
    pub n_outliers: u64,
    /// Length of the packed buffer in bytes.
    pub packed_len: u64,
    /// Exact bits per weight: `8 * packed_len / (rows * cols)`.
    pub bits_per_weight: f64,
}

/// Parses and validates the packed tensor `buf[0..len)` (structure, every section and the
/// CRC-32) into `*out`, without copying it.
///
/// On success `*out` borrows `buf`: keep the buffer alive and unmodified while `*out` is
/// used. On failure `*out` is left untouched. `buf` has no alignment requirement.
/// Cost: one pass over the buffer (the CRC) plus the per-row offsets.
///
/// # Safety
/// `buf` must be NULL or point to `len` readable bytes, valid and unmodified for as long
/// as `*out` is used; `out` must be NULL or point to writable storage of an
/// `adpq_tensor` that no other thread accesses during the call.
#[no_mangle]
pub unsafe extern "C" fn adpq_tensor_parse(
    buf: *const u8,
    len: usize,
    out: *mut adpq_tensor,
) -> adpq_status {
    guard(|| {
        ptr::out_ok(out)?;
        // SAFETY: the caller guarantees `len` readable bytes at `buf` (or NULL, refused).
        let bytes: &[u8] = unsafe { ptr::slice(buf, len) }?;
        let tensor = PackedTensor::parse(bytes)?;
        // SAFETY: the 'static lifetime is a promise the caller makes (the buffer outlives
        // every use of the handle, as documented above); the view never outlives a use.
        let tensor: PackedTensor<'static> = unsafe { core::mem::transmute(tensor) };
        let inner = Inner { tag: TAG, tensor };
        // SAFETY: `out` is non-NULL and aligned (checked by out_ok), points to storage of
        // an adpq_tensor (caller contract), which is large and aligned enough for an
        // Inner (the const assertions above).
        unsafe { out.cast::<Inner>().write(inner) };
        Ok(())
    })
}

/// The tensor a handle holds, or INVALID_HANDLE for storage no parse filled.
///
/// # Safety
/// `t` must be NULL or point to an initialized `adpq_tensor` (filled by a parse or
/// zeroed) whose packed buffer is still valid, for `'a`.
pub(crate) unsafe fn tensor<'a>(
    t: *const adpq_tensor,
) -> Result<&'a PackedTensor<'a>, adpq_status> {
    ptr::out_ok(t.cast_mut())?;
    let inner = t.cast::<MaybeUninit<Inner>>();
    // SAFETY: `t` is non-NULL and aligned and points to an initialized adpq_tensor
    // (caller contract); its first word is the tag whether or not a parse filled it.
    let tag = unsafe { t.cast::<u64>().read() };
    if tag != TAG {
        return Err(ADPQ_STATUS_INVALID_HANDLE);
    }
    // SAFETY: the tag is only ever written together with a valid PackedTensor by
    // adpq_tensor_parse (or by a bitwise copy of such storage), whose buffer the caller
    // keeps alive; the storage is large and aligned enough for an Inner.
    Ok(unsafe { &(*inner).assume_init_ref().tensor })
}

/// Writes the shape and format of `*tensor` into `*out`.
///
/// # Safety
/// `tensor` must be NULL or point to an initialized `adpq_tensor` whose buffer is still
/// valid; `out` must be NULL or writable for an `adpq_tensor_info`. Thread-safe on a
/// shared `tensor`.
#[no_mangle]
pub unsafe extern "C" fn adpq_tensor_get_info(
    tensor: *const adpq_tensor,
    out: *mut adpq_tensor_info,
) -> adpq_status {
    guard(|| {
        ptr::out_ok(out)?;
        // SAFETY: forwarded caller contract.
        let t = unsafe { self::tensor(tensor) }?;
        let p = t.params();
        let info = adpq_tensor_info {
            rows: t.rows() as u64,
            cols: t.cols() as u64,
            version: u32::from(t.version().number()),
            bits: u32::from(p.bits),
            group_size: u32::from(p.group_size),
            grid: match p.grid {
                Grid::Symmetric => 0,
                Grid::Asymmetric => 1,
            },
            n_outliers: t.n_outliers(),
            packed_len: t.as_bytes().len() as u64,
            bits_per_weight: t.layout().bits_per_weight(),
        };
        // SAFETY: caller contract on `out`; NULL and alignment checked inside.
        unsafe { ptr::write(out, info) }
    })
}
