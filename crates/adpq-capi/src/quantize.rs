//! Selection and quantization of a caller's matrix into a caller's buffer.

use core::mem::{align_of, size_of};

use adpq_core::{
    bf16, f16, packed_len, quantize_tensor, select_tensor, FormatVersion, Grid, ParamFields,
    Params, Selection, SelectionMode, Weights,
};

use crate::adpq_status::{self, *};
use crate::ops::kernels;
use crate::{guard, ptr};

/// Grid kinds, the `grid` field of [`adpq_params`].
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum adpq_grid {
    /// `code = round(w / Δ)`, no zero point (format v1 only).
    ADPQ_GRID_SYMMETRIC = 0,
    /// Min–max with a zero point (format v1; required by v2).
    ADPQ_GRID_ASYMMETRIC = 1,
}

/// Parameter presets for [`adpq_params_preset`].
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum adpq_preset {
    /// The library's default, `Params::DEFAULT` (what `adpq quantize` gives a Llama
    /// `q_proj`): format v3, 4 bits (the code book), groups of 64, rotated rows, no outlier
    /// split.
    /// (Format v2 with α = 0.04 before format v3 became the default: now
    /// `ADPQ_PRESET_V2_TUNED`.)
    ADPQ_PRESET_DEFAULT = 0,
    /// Format v1's defaults: 4 bits, groups of 128, α = 0.06, symmetric.
    ADPQ_PRESET_V1 = 1,
    /// Format v2's plain defaults: 4 bits, groups of 64, α = 0.05.
    ADPQ_PRESET_V2 = 2,
    /// Format v3's plain defaults: 4 bits (the code book), groups of 64, rotated rows,
    /// no outlier split.
    ADPQ_PRESET_V3 = 3,
    /// Format v2's measured preset base (`adpq quantize --format v2`), the default before
    /// format v3: 4 bits, groups of 64, α = 0.04.
    ADPQ_PRESET_V2_TUNED = 4,
}

/// Quantization parameters as a plain struct. Fill it (or start from
/// [`adpq_params_preset`]); every call that takes it validates it and fails with
/// `ADPQ_STATUS_INVALID_PARAMS` when the format cannot store it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct adpq_params {
    /// Packed format version: 1, 2 or 3 (v3: rows rotated, no outlier split, α 0).
    pub version: u32,
    /// Bits per code, 2..=8.
    pub bits: u32,
    /// Weights per group along a row: 16..=1024 (v2: 16..=255; v3: a power of two up
    /// to 512).
    pub group_size: u32,
    /// `ADPQ_GRID_SYMMETRIC` or `ADPQ_GRID_ASYMMETRIC` (v2 needs asymmetric).
    pub grid: u32,
    /// Target outlier fraction α in `[0, 0.5]`.
    pub alpha: f64,
    /// 0: exact selection (the `round(α·N)` largest weights). Otherwise the iteration cap
    /// of the Python reference's threshold search (its default is 100).
    pub reference_iters: u32,
}

impl adpq_params {
    fn from_params(p: &Params) -> Self {
        adpq_params {
            version: u32::from(p.version().number()),
            bits: u32::from(p.bits()),
            group_size: u32::from(p.group_size()),
            grid: match p.grid() {
                Grid::Symmetric => 0,
                Grid::Asymmetric => 1,
            },
            alpha: p.alpha(),
            reference_iters: match p.selection() {
                SelectionMode::Exact => 0,
                SelectionMode::Reference { n_iters } => n_iters,
            },
        }
    }

    fn validate(&self) -> Result<Params, adpq_status> {
        let bad = ADPQ_STATUS_INVALID_PARAMS;
        ParamFields {
            bits: u8::try_from(self.bits).map_err(|_| bad)?,
            group_size: u16::try_from(self.group_size).map_err(|_| bad)?,
            alpha: self.alpha,
            grid: match self.grid {
                0 => Grid::Symmetric,
                1 => Grid::Asymmetric,
                _ => return Err(bad),
            },
            selection: match self.reference_iters {
                0 => SelectionMode::Exact,
                n_iters => SelectionMode::Reference { n_iters },
            },
            version: match self.version {
                1 => FormatVersion::V1,
                2 => FormatVersion::V2,
                3 => FormatVersion::V3,
                _ => return Err(bad),
            },
        }
        .validate()
        .map_err(Into::into)
    }
}

/// Writes the parameters of `preset` (`ADPQ_PRESET_*`) into `*out`.
///
/// # Safety
/// `out` must be NULL or writable for an `adpq_params`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn adpq_params_preset(preset: u32, out: *mut adpq_params) -> adpq_status {
    guard(|| {
        let p = match preset {
            0 => Params::DEFAULT,
            1 => Params::V1,
            2 => Params::V2,
            3 => Params::V3,
            4 => Params::V2_PRESET,
            _ => return Err(ADPQ_STATUS_INVALID_ARGUMENT),
        };
        // SAFETY: caller contract on `out`.
        unsafe { ptr::write(out, adpq_params::from_params(&p)) }
    })
}

/// Words of caller storage an [`adpq_selection`] takes.
pub const ADPQ_SELECTION_WORDS: usize = 12;

/// The outliers chosen for one matrix ([`adpq_quantize_select`]), opaque caller storage
/// that [`adpq_quantize`] consumes. A plain value: it borrows nothing, needs no
/// destructor, may be copied bitwise and shared between threads. Zero-initialize it
/// before first use; unfilled storage is refused with `ADPQ_STATUS_INVALID_HANDLE`.
#[repr(C)]
#[derive(Debug)]
pub struct adpq_selection {
    _opaque: [u64; ADPQ_SELECTION_WORDS],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct SelInner {
    tag: u64,
    selection: Selection,
}

const SEL_TAG: u64 = 0x4144_5051_5345_4c45; // "ADPQSELE"

const _: () = assert!(size_of::<SelInner>() <= size_of::<adpq_selection>());
const _: () = assert!(align_of::<SelInner>() <= align_of::<adpq_selection>());

/// The caller's matrix as core weights, after dtype, alignment and size checks.
///
/// # Safety
/// `w` NULL or `rows * cols` readable elements of `dtype`, unmodified during `'a`.
unsafe fn weights<'a>(
    w: *const core::ffi::c_void,
    dtype: u32,
    rows: usize,
    cols: usize,
) -> Result<Weights<'a>, adpq_status> {
    let n = rows.checked_mul(cols).ok_or(ADPQ_STATUS_TENSOR_TOO_LARGE)?;
    let w = match crate::ops::dtype(dtype)? {
        // SAFETY: caller contract: `n` readable f32 at `w` (alignment checked by slice).
        adpq_core::OutDtype::F32 => Weights::F32(unsafe { ptr::slice(w.cast::<f32>(), n) }?),
        // SAFETY: as above; f16 is a `repr(transparent)` u16, any bits are valid.
        adpq_core::OutDtype::F16 => Weights::F16(unsafe { ptr::slice(w.cast::<f16>(), n) }?),
        // SAFETY: as above; bf16 is a `repr(transparent)` u16, any bits are valid.
        adpq_core::OutDtype::Bf16 => Weights::Bf16(unsafe { ptr::slice(w.cast::<bf16>(), n) }?),
    };
    Ok(w)
}

/// Selects the outliers of the row-major `rows × cols` matrix `weights` (`dtype`:
/// `ADPQ_DTYPE_F32`, 4-byte aligned, or `ADPQ_DTYPE_F16`/`ADPQ_DTYPE_BF16`, 2-byte
/// aligned) under `*params`, and reports the exact packed length. On success
/// `*selection` and `*packed_len_out` are written; allocate `*packed_len_out` bytes and
/// call [`adpq_quantize`] with the same weights and parameters.
///
/// Weights are checked here: NaN/Inf (`ADPQ_STATUS_NON_FINITE`), |w| >= 2^124
/// (`ADPQ_STATUS_OUT_OF_RANGE`), tensors too small for the format
/// (`ADPQ_STATUS_TOO_SMALL`). Costs two or three passes over the matrix.
///
/// # Safety
/// `weights`: NULL or `rows * cols` readable elements of `dtype`; `params`: NULL or a
/// readable `adpq_params`; `selection` and `packed_len_out`: NULL or writable. Thread-safe
/// with distinct outputs.
#[no_mangle]
pub unsafe extern "C" fn adpq_quantize_select(
    backend: u32,
    weights: *const core::ffi::c_void,
    dtype: u32,
    rows: usize,
    cols: usize,
    params: *const adpq_params,
    selection: *mut adpq_selection,
    packed_len_out: *mut usize,
) -> adpq_status {
    guard(|| {
        ptr::out_ok(selection)?;
        ptr::out_ok(packed_len_out)?;
        // SAFETY: caller contract on `params` (one readable struct).
        let params = unsafe { ptr::slice(params, 1) }?[0].validate()?;
        let k = kernels(backend)?;
        // SAFETY: forwarded caller contract on `weights`.
        let w = unsafe { self::weights(weights, dtype, rows, cols) }?;
        let sel = select_tensor(&k, w, rows, cols, &params)?;
        let len = packed_len(rows, cols, params.format(), sel.n_outliers)?;
        let inner = SelInner {
            tag: SEL_TAG,
            selection: sel,
        };
        // SAFETY: `selection` is non-NULL, aligned (out_ok) and writable storage of an
        // adpq_selection (caller contract), large and aligned enough for a SelInner.
        unsafe { selection.cast::<SelInner>().write(inner) };
        // SAFETY: caller contract on `packed_len_out`.
        unsafe { ptr::write(packed_len_out, len) }
    })
}

/// Quantizes the matrix `weights` (as in [`adpq_quantize_select`]) with `*selection`
/// into `out`, exactly the `packed_len` that call reported. On success `out` holds a
/// complete packed tensor (header, sections, CRC), ready for [`crate::adpq_tensor_parse`]
/// or to be stored in a checkpoint. Weights or parameters other than those of the
/// selection give `ADPQ_STATUS_SELECTION_MISMATCH` (or another error); on failure after
/// writing started `out` is zero-filled. `out` needs no alignment.
///
/// # Safety
/// `weights`: NULL or `rows * cols` readable elements of `dtype`; `params`: NULL or a
/// readable `adpq_params`; `selection`: NULL or an initialized `adpq_selection`; `out`:
/// NULL or `out_len` writable bytes not overlapping the weights. Thread-safe with distinct
/// `out`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn adpq_quantize(
    backend: u32,
    weights: *const core::ffi::c_void,
    dtype: u32,
    rows: usize,
    cols: usize,
    params: *const adpq_params,
    selection: *const adpq_selection,
    out: *mut u8,
    out_len: usize,
) -> adpq_status {
    guard(|| {
        // SAFETY: caller contract on `params`.
        let params = unsafe { ptr::slice(params, 1) }?[0].validate()?;
        // SAFETY: caller contract on `selection` (one initialized struct; u64 words).
        let words = unsafe { ptr::slice(selection.cast::<u64>(), ADPQ_SELECTION_WORDS) }?;
        if words[0] != SEL_TAG {
            return Err(ADPQ_STATUS_INVALID_HANDLE);
        }
        // SAFETY: the tag is written only together with a valid Selection by
        // adpq_quantize_select (or a bitwise copy of that storage); storage size and
        // alignment fit a SelInner (const assertions).
        let sel = unsafe { selection.cast::<SelInner>().read() }.selection;
        let k = kernels(backend)?;
        // SAFETY: forwarded caller contract on `weights`.
        let w = unsafe { self::weights(weights, dtype, rows, cols) }?;
        // SAFETY: caller contract on `out`.
        let out = unsafe { ptr::slice_mut(out, out_len) }?;
        let r = quantize_tensor(&k, w, rows, cols, &params, &sel, out)
            .map(|_| ())
            .map_err(Into::into);
        if r.is_err() {
            out.fill(0);
        }
        r
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_round_trip_through_the_c_struct() {
        for p in [
            Params::DEFAULT,
            Params::V1,
            Params::V2,
            Params::V3,
            Params::V2_PRESET,
        ] {
            assert_eq!(adpq_params::from_params(&p).validate(), Ok(p));
        }
        let mut c = adpq_params::from_params(&Params::V2);
        c.grid = 0; // v2 needs asymmetric grids
        assert_eq!(c.validate(), Err(ADPQ_STATUS_INVALID_PARAMS));
        c = adpq_params::from_params(&Params::V1);
        c.bits = 260; // would wrap to 4 as a u8
        assert_eq!(c.validate(), Err(ADPQ_STATUS_INVALID_PARAMS));
        c.bits = 4;
        c.version = 3; // v3 has no outlier split: α must be 0
        assert_eq!(c.validate(), Err(ADPQ_STATUS_INVALID_PARAMS));
        c.version = 4;
        c.alpha = 0.0;
        assert_eq!(c.validate(), Err(ADPQ_STATUS_INVALID_PARAMS));
    }
}
