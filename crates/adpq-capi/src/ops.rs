//! Kernels choice, dequantization, dot products and gemv on a parsed tensor.

use adpq_core::narrow::write_rows;
use adpq_core::{AnyKernels, CpuKernels, OutDtype, PackedTensor};

use crate::adpq_status::{self, *};
use crate::handle::{adpq_tensor, tensor};
use crate::{guard, ptr};

/// CPU kernel sets, passed as `uint32_t backend`. Every set computes the scalar oracle's
/// dequantized values exactly; dot products differ from the oracle only in summation
/// order (within the core's documented tolerance).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum adpq_backend {
    /// The fastest set this CPU runs, detected at run time (AVX-VNNI, AVX2, NEON,
    /// else scalar).
    ADPQ_BACKEND_AUTO = 0,
    /// The portable scalar oracle, on every target.
    ADPQ_BACKEND_SCALAR = 1,
    /// AVX2 with FMA, POPCNT and F16C (x86_64 CPUs that have all four).
    ADPQ_BACKEND_AVX2 = 2,
    /// NEON (aarch64).
    ADPQ_BACKEND_NEON = 3,
    /// The AVX2 set with AVX-VNNI's int8 dot (x86_64 CPUs that have all five).
    ADPQ_BACKEND_AVX_VNNI = 4,
}

/// Element types, passed as `uint32_t dtype`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum adpq_dtype {
    /// IEEE binary32 (`float`), 4-byte aligned.
    ADPQ_DTYPE_F32 = 0,
    /// IEEE binary16, little-endian `uint16_t`, 2-byte aligned for input.
    ADPQ_DTYPE_F16 = 1,
    /// bfloat16, little-endian `uint16_t`, 2-byte aligned for input.
    ADPQ_DTYPE_BF16 = 2,
}

pub(crate) fn dtype(v: u32) -> Result<OutDtype, adpq_status> {
    match v {
        0 => Ok(OutDtype::F32),
        1 => Ok(OutDtype::F16),
        2 => Ok(OutDtype::Bf16),
        _ => Err(ADPQ_STATUS_INVALID_ARGUMENT),
    }
}

/// The kernels `backend` names, detected or checked now (cheap: detection is cached).
pub(crate) fn kernels(backend: u32) -> Result<AnyKernels, adpq_status> {
    let name = match backend {
        0 => return Ok(AnyKernels::detect()),
        1 => "scalar",
        2 => "avx2",
        3 => "neon",
        4 => "avx-vnni",
        _ => return Err(ADPQ_STATUS_INVALID_ARGUMENT),
    };
    AnyKernels::by_name(name).map_err(|_| ADPQ_STATUS_BACKEND_UNAVAILABLE)
}

/// Resolves `backend` to the set it runs: `ADPQ_BACKEND_AUTO` becomes the detected one.
/// Fails with `ADPQ_STATUS_BACKEND_UNAVAILABLE` for a set this CPU cannot run and
/// `ADPQ_STATUS_INVALID_ARGUMENT` for an unknown value; `*out` is written on success.
///
/// # Safety
/// `out` must be NULL or writable for a `uint32_t`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn adpq_backend_resolve(backend: u32, out: *mut u32) -> adpq_status {
    guard(|| {
        ptr::out_ok(out)?;
        let v = match kernels(backend)? {
            AnyKernels::Scalar(_) => adpq_backend::ADPQ_BACKEND_SCALAR,
            AnyKernels::Avx2(_) => adpq_backend::ADPQ_BACKEND_AVX2,
            AnyKernels::AvxVnni(_) => adpq_backend::ADPQ_BACKEND_AVX_VNNI,
            AnyKernels::Neon(_) => adpq_backend::ADPQ_BACKEND_NEON,
        };
        // SAFETY: caller contract on `out`.
        unsafe { ptr::write(out, v as u32) }
    })
}

/// The name (`"scalar"`, `"avx2"`, `"avx-vnni"`, `"neon"`) of the kernels `backend` runs
/// (`ADPQ_BACKEND_AUTO`: the detected set), as a static NUL-terminated string; NULL
/// when the value is unknown or the set cannot run here. Thread-safe.
#[no_mangle]
pub extern "C" fn adpq_backend_name(backend: u32) -> *const core::ffi::c_char {
    match kernels(backend) {
        Ok(AnyKernels::Scalar(_)) => c"scalar".as_ptr(),
        Ok(AnyKernels::Avx2(_)) => c"avx2".as_ptr(),
        Ok(AnyKernels::AvxVnni(_)) => c"avx-vnni".as_ptr(),
        Ok(AnyKernels::Neon(_)) => c"neon".as_ptr(),
        Err(_) => core::ptr::null(),
    }
}

/// Zero-fills `out` when `r` failed: a bulk output is all result or all zeros.
fn zero_on_error<T: bytemuck::Zeroable + Copy>(
    r: Result<(), adpq_status>,
    out: &mut [T],
) -> Result<(), adpq_status> {
    if r.is_err() {
        out.fill(T::zeroed());
    }
    r
}

/// Dequantizes rows `first_row .. first_row + n_rows` of `*tensor` into `out` as `dtype`
/// elements, row-major: exactly `out_len = n_rows * cols * size(dtype)` bytes.
///
/// - `ADPQ_DTYPE_F32`: `out` must be 4-byte aligned; `scratch` is unused (may be NULL).
/// - `ADPQ_DTYPE_F16` / `ADPQ_DTYPE_BF16`: `out` needs no alignment (little-endian
///   16-bit elements). The rows are dequantized to f32 in `scratch` (4-byte aligned,
///   `scratch_len` >= `cols` floats; more lets it work on several rows at a time) and
///   narrowed by the core's rule: a value beyond the dtype's largest finite value by no
///   more than its quantization error saturates, beyond that the call fails with
///   `ADPQ_STATUS_NOT_REPRESENTABLE`. Never a silent infinity.
///
/// On failure after writing started, `out` is zero-filled.
///
/// # Safety
/// `tensor` must be NULL or an initialized `adpq_tensor` whose buffer is valid; `out`
/// must be NULL or writable for `out_len` bytes; `scratch` NULL or writable for
/// `scratch_len` floats; `out` and `scratch` must not overlap each other or the packed
/// buffer. Thread-safe on a shared `tensor` with distinct `out`/`scratch`.
#[no_mangle]
pub unsafe extern "C" fn adpq_dequantize_rows(
    tensor: *const adpq_tensor,
    backend: u32,
    first_row: usize,
    n_rows: usize,
    dtype: u32,
    out: *mut core::ffi::c_void,
    out_len: usize,
    scratch: *mut f32,
    scratch_len: usize,
) -> adpq_status {
    guard(|| {
        // SAFETY: forwarded caller contract.
        let t = unsafe { self::tensor(tensor) }?;
        let k = kernels(backend)?;
        let dt = self::dtype(dtype)?;
        let cols = t.cols();
        match first_row.checked_add(n_rows) {
            Some(end) if end <= t.rows() => {}
            _ => return Err(ADPQ_STATUS_INVALID_ARGUMENT),
        }
        let n = n_rows.checked_mul(cols).ok_or(ADPQ_STATUS_BUFFER_SIZE)?;
        if n.checked_mul(dt.size()) != Some(out_len) {
            return Err(ADPQ_STATUS_BUFFER_SIZE);
        }
        if dt == OutDtype::F32 {
            // SAFETY: caller contract: `out` writable for out_len = n * 4 bytes.
            let out = unsafe { ptr::slice_mut(out.cast::<f32>(), n) }?;
            let r = k.dequantize_rows(t, first_row, out).map_err(Into::into);
            return zero_on_error(r, out);
        }
        // SAFETY: caller contract on `scratch`.
        let scratch = unsafe { ptr::slice_mut(scratch, scratch_len) }?;
        // SAFETY: caller contract on `out` (bytes: no alignment needed).
        let out = unsafe { ptr::slice_mut(out.cast::<u8>(), out_len) }?;
        let per = scratch.len() / cols;
        if per == 0 {
            return Err(ADPQ_STATUS_BUFFER_SIZE);
        }
        let r = narrow_rows(k, t, first_row, n_rows, dt, scratch, per, out);
        zero_on_error(r, out)
    })
}

/// Dequantizes and narrows `n_rows` rows, `per` rows at a time through `scratch`.
#[allow(clippy::too_many_arguments)]
fn narrow_rows(
    k: AnyKernels,
    t: &PackedTensor<'_>,
    first_row: usize,
    n_rows: usize,
    dt: OutDtype,
    scratch: &mut [f32],
    per: usize,
    out: &mut [u8],
) -> Result<(), adpq_status> {
    let cols = t.cols();
    let row_bytes = cols * dt.size();
    let mut done = 0;
    while done < n_rows {
        let m = per.min(n_rows - done);
        let vals = &mut scratch[..m * cols];
        let r = first_row + done;
        k.dequantize_rows(t, r, vals)?;
        write_rows(
            t,
            r,
            vals,
            dt,
            &mut out[done * row_bytes..(done + m) * row_bytes],
        )?;
        done += m;
    }
    Ok(())
}

/// Dot product of packed row `row` of `*tensor` with `x[0..x_len)` (`x_len == cols`,
/// `x` 4-byte aligned), written to `*out` on success.
///
/// # Safety
/// `tensor`: NULL or an initialized `adpq_tensor` with its buffer valid; `x`: NULL or
/// `x_len` readable floats; `out`: NULL or writable for a float. Thread-safe on a shared
/// `tensor`.
#[no_mangle]
pub unsafe extern "C" fn adpq_dot_row(
    tensor: *const adpq_tensor,
    backend: u32,
    row: usize,
    x: *const f32,
    x_len: usize,
    out: *mut f32,
) -> adpq_status {
    guard(|| {
        ptr::out_ok(out)?;
        // SAFETY: forwarded caller contract.
        let t = unsafe { self::tensor(tensor) }?;
        let k = kernels(backend)?;
        // SAFETY: caller contract on `x`.
        let x = unsafe { ptr::slice(x, x_len) }?;
        let v = k.dot_row(t, row, x)?;
        // SAFETY: caller contract on `out`.
        unsafe { ptr::write(out, v) }
    })
}

/// `y = W x` for the whole tensor: `x` has `x_len == cols` floats, `y` `y_len == rows`
/// floats, both 4-byte aligned, not overlapping. On failure after writing started `y`
/// is zero-filled.
///
/// # Safety
/// `tensor`: NULL or an initialized `adpq_tensor` with its buffer valid; `x`: NULL or
/// `x_len` readable floats; `y`: NULL or `y_len` writable floats. Thread-safe on a shared
/// `tensor` with distinct `y`.
#[no_mangle]
pub unsafe extern "C" fn adpq_gemv(
    tensor: *const adpq_tensor,
    backend: u32,
    x: *const f32,
    x_len: usize,
    y: *mut f32,
    y_len: usize,
) -> adpq_status {
    guard(|| {
        // SAFETY: forwarded caller contract.
        let t = unsafe { self::tensor(tensor) }?;
        let k = kernels(backend)?;
        // SAFETY: caller contract on `x`.
        let x = unsafe { ptr::slice(x, x_len) }?;
        // SAFETY: caller contract on `y`.
        let y = unsafe { ptr::slice_mut(y, y_len) }?;
        if x.len() != t.cols() {
            return Err(ADPQ_STATUS_SHAPE_MISMATCH);
        }
        if y.len() != t.rows() {
            return Err(ADPQ_STATUS_BUFFER_SIZE);
        }
        let r = k.gemv(t, x, y).map_err(Into::into);
        zero_on_error(r, y)
    })
}

/// Bytes of scratch [`adpq_gemv_q8`] needs for `*tensor` (the int8 activations, their
/// per-group scales and sums, and up to 3 bytes to align them), written to `*out`.
///
/// # Safety
/// `tensor`: NULL or an initialized `adpq_tensor` with its buffer valid; `out`: NULL or
/// writable for a `size_t`.
#[no_mangle]
pub unsafe extern "C" fn adpq_q8_scratch_len(
    tensor: *const adpq_tensor,
    out: *mut usize,
) -> adpq_status {
    guard(|| {
        ptr::out_ok(out)?;
        // SAFETY: forwarded caller contract.
        let t = unsafe { self::tensor(tensor) }?;
        let (groups, cols) = q8_shape(t);
        // SAFETY: caller contract on `out`.
        unsafe { ptr::write(out, q8_scratch_bytes(groups, cols)) }
    })
}

fn q8_shape(t: &PackedTensor<'_>) -> (usize, usize) {
    let g = usize::from(t.params().group_size);
    (t.cols().div_ceil(g), t.cols())
}

fn q8_scratch_bytes(groups: usize, cols: usize) -> usize {
    // scales (f32) and sums (i32) first, aligned; then the int8 values.
    3 + groups * 8 + cols
}

/// `y ≈ W x` with int8 activations: quantizes `x` per group of the tensor's group size
/// (`x_i ≈ s_G · q_i`, `s_G = max|x_G| / 127`) into `scratch`, then runs the int8 gemv.
/// `scratch` is any byte buffer (no alignment needed) of at least the length
/// [`adpq_q8_scratch_len`] gives; `x` (`x_len == cols`) and `y` (`y_len == rows`) are
/// 4-byte aligned floats. On failure after writing started `y` is zero-filled.
///
/// # Safety
/// `tensor`: NULL or an initialized `adpq_tensor` with its buffer valid; `x`: NULL or
/// `x_len` readable floats; `scratch`: NULL or `scratch_len` writable bytes; `y`: NULL or
/// `y_len` writable floats; none overlapping. Thread-safe on a shared `tensor` with
/// distinct `scratch` and `y`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn adpq_gemv_q8(
    tensor: *const adpq_tensor,
    backend: u32,
    x: *const f32,
    x_len: usize,
    scratch: *mut u8,
    scratch_len: usize,
    y: *mut f32,
    y_len: usize,
) -> adpq_status {
    guard(|| {
        // SAFETY: forwarded caller contract.
        let t = unsafe { self::tensor(tensor) }?;
        let k = kernels(backend)?;
        // SAFETY: caller contract on `x`.
        let x = unsafe { ptr::slice(x, x_len) }?;
        // SAFETY: caller contract on `scratch`.
        let scratch = unsafe { ptr::slice_mut(scratch, scratch_len) }?;
        // SAFETY: caller contract on `y`.
        let y = unsafe { ptr::slice_mut(y, y_len) }?;
        if x.len() != t.cols() {
            return Err(ADPQ_STATUS_SHAPE_MISMATCH);
        }
        if y.len() != t.rows() {
            return Err(ADPQ_STATUS_BUFFER_SIZE);
        }
        let (groups, cols) = q8_shape(t);
        if scratch.len() < q8_scratch_bytes(groups, cols) {
            return Err(ADPQ_STATUS_BUFFER_SIZE);
        }
        let skip = scratch.as_ptr().align_offset(4).min(3);
        let (words, q) = scratch[skip..].split_at_mut(groups * 8);
        let (scales, sums) = words.split_at_mut(groups * 4);
        let scales: &mut [f32] =
            bytemuck::try_cast_slice_mut(scales).map_err(|_| ADPQ_STATUS_MISALIGNED)?;
        let sums: &mut [i32] =
            bytemuck::try_cast_slice_mut(sums).map_err(|_| ADPQ_STATUS_MISALIGNED)?;
        let q: &mut [i8] = bytemuck::cast_slice_mut(&mut q[..cols]);
        let r = (|| {
            let a = k.quantize_activations(t, x, q, scales, sums)?;
            k.gemv_q8(t, &a, y)
        })()
        .map_err(Into::into);
        zero_on_error(r, y)
    })
}
