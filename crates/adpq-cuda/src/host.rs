//! The device arithmetic (`kernels/adpq_math.cuh`) built for the host by `build.rs`
//! (feature `host-math`), behind safe wrappers: what the tests compare with the Rust
//! scalar oracle. Not part of the stable API. This module holds the crate's FFI `unsafe`.

use std::ffi::c_void;

use crate::job::{rotation_fields, QuantJob};
use crate::Sections;
use adpq_core::rotate::Rotation;
use adpq_core::{FormatParams, FormatVersion, PackedTensor, Q8Activations, Weights};

extern "C" {
    fn adpq_host_quantize(
        w: *const c_void,
        dtype: i32,
        rows: u32,
        cols: u32,
        job: *const QuantJob,
        counts: *mut u8,
        records: *mut u8,
        codes: *mut u8,
        positions: *mut u8,
        positions_len: u64,
        bad: *mut u64,
    ) -> i64;
    fn adpq_host_quantize_v3(
        w: *const c_void,
        dtype: i32,
        rows: u32,
        cols: u32,
        job: *const QuantJob,
        records: *mut u8,
        codes: *mut u8,
        bad: *mut u64,
    ) -> i64;
    fn adpq_host_rotate(seed: u32, log2: u32, start: u64, x: *mut f32, n: u32, inverse: i32);
    fn adpq_host_v3_level(bits: i32, code: u32) -> f32;
    fn adpq_host_v3_encode(
        bits: i32,
        step_unit: u16,
        min_unit: u16,
        q_step: u32,
        q_min: u32,
        w: f32,
    ) -> u32;
    fn adpq_host_dequantize_row(
        job: *const QuantJob,
        cols: u32,
        records: *const u8,
        codes: *const u8,
        positions: *const u8,
        positions_len: u64,
        offsets: *const u32,
        r: u32,
        out: *mut f32,
    );
    fn adpq_host_dot_row(
        job: *const QuantJob,
        cols: u32,
        records: *const u8,
        codes: *const u8,
        positions: *const u8,
        positions_len: u64,
        offsets: *const u32,
        r: u32,
        x: *const f32,
    ) -> f32;
    fn adpq_host_dot_row_q8(
        job: *const QuantJob,
        cols: u32,
        records: *const u8,
        codes: *const u8,
        positions: *const u8,
        positions_len: u64,
        offsets: *const u32,
        r: u32,
        q: *const i8,
        scales: *const f32,
        sums: *const i32,
    ) -> f32;
    fn adpq_host_error_sums(
        w: *const c_void,
        dtype: i32,
        deq: *const f32,
        rows: u32,
        cols: u32,
        bits: i32,
        group_size: u32,
        out: *mut f64,
    );
    fn adpq_host_bf16_from_f32(x: f32) -> u16;
    fn adpq_host_f16_from_f32(x: f32) -> u16;
    fn adpq_host_f16_to_f32(h: u16) -> f32;
}

/// What a tensor is quantized with: its format, step exponent and selection (format v3:
/// rotated as the core's writer rotates it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostJob {
    /// Format parameters.
    pub format: FormatParams,
    /// Per-tensor step exponent (`adpq_core::quant::scale_exponent`).
    pub scale_exp: i8,
    /// Bits of the threshold magnitude.
    pub threshold_bits: u32,
    /// Ties at the threshold taken, earliest first (`u64::MAX`: all).
    pub take_equal: u64,
}

impl HostJob {
    /// The job as the C side reads it.
    pub(crate) fn c(&self) -> QuantJob {
        QuantJob::new(
            &self.format,
            self.scale_exp,
            self.threshold_bits,
            self.take_equal,
        )
    }
}

/// Why the host build of the device arithmetic refused a tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HostError {
    /// A NaN, infinite or `|w| ≥ 2^124` weight at this flat index.
    Rejected(u64),
    /// The selection marks more outliers than the position stream holds.
    PositionsFull,
    /// Shape or format parameters out of range.
    Invalid,
}

/// Quantizes a `rows × cols` tensor with the device arithmetic; `n_outliers` sizes the
/// position stream (the selection's count).
pub fn quantize(
    w: Weights<'_>,
    rows: usize,
    cols: usize,
    job: &HostJob,
    n_outliers: u64,
) -> Result<Sections, HostError> {
    let fp = job.format;
    if fp.validate().is_err()
        || rows == 0
        || cols == 0
        || rows.checked_mul(cols) != Some(w.len())
        || w.len() > u32::MAX as usize
        || !(-126..=126).contains(&i32::from(job.scale_exp))
    {
        return Err(HostError::Invalid);
    }
    if fp.version == FormatVersion::V3 {
        return quantize_v3(w, rows, cols, job);
    }
    let row_codes = (cols * usize::from(fp.bits)).div_ceil(8);
    let mut counts = vec![0u8; 4 * rows];
    let mut records = vec![0u8; rows * fp.row_record_bytes(cols)];
    let mut codes = vec![0u8; rows * row_codes];
    let pos_len = (n_outliers * u64::from(fp.position_bits())).div_ceil(8);
    let mut positions = vec![0u8; usize::try_from(pos_len).map_err(|_| HostError::Invalid)?];
    let (ptr, dtype) = raw(w);
    let c = job.c();
    let mut bad = 0u64;
    // SAFETY: `ptr` points at `rows · cols` elements of the type `dtype` names; the
    // output buffers have exactly the sizes the C side writes for this shape and format
    // (counts 4·rows, records rows·row_record_bytes, codes rows·row_code_bytes, and
    // positions `pos_len`, which the C side checks before writing); the parameters were
    // validated above, so its group and bit arithmetic stays in range.
    let n = unsafe {
        adpq_host_quantize(
            ptr,
            dtype,
            rows as u32,
            cols as u32,
            &c,
            counts.as_mut_ptr(),
            records.as_mut_ptr(),
            codes.as_mut_ptr(),
            positions.as_mut_ptr(),
            pos_len,
            &mut bad,
        )
    };
    match n {
        -1 => Err(HostError::Rejected(bad)),
        -2 => Err(HostError::PositionsFull),
        n if n < 0 => Err(HostError::Invalid),
        _ => Ok(Sections {
            row_counts: counts
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            records,
            codes,
            positions,
        }),
    }
}

/// Format v3 (no counts, no positions), its shape and parameters validated by `quantize`.
fn quantize_v3(
    w: Weights<'_>,
    rows: usize,
    cols: usize,
    job: &HostJob,
) -> Result<Sections, HostError> {
    let fp = job.format;
    let mut records = vec![0u8; rows * fp.row_record_bytes(cols)];
    let mut codes = vec![0u8; rows * (cols * usize::from(fp.bits)).div_ceil(8)];
    let (ptr, dtype) = raw(w);
    let c = job.c();
    let mut bad = 0u64;
    // SAFETY: `ptr` points at `rows · cols` elements of the type `dtype` names; records and
    // codes have exactly the sizes the C side writes for this shape and format (rows ·
    // row_record_bytes, rows · row_code_bytes); the parameters were validated by the
    // caller, so its group, chunk and bit arithmetic stays in range.
    let n = unsafe {
        adpq_host_quantize_v3(
            ptr,
            dtype,
            rows as u32,
            cols as u32,
            &c,
            records.as_mut_ptr(),
            codes.as_mut_ptr(),
            &mut bad,
        )
    };
    match n {
        -1 => Err(HostError::Rejected(bad)),
        n if n < 0 => Err(HostError::Invalid),
        _ => Ok(Sections {
            row_counts: Vec::new(),
            records,
            codes,
            positions: Vec::new(),
        }),
    }
}

/// Rotates `x`, columns `start..` of a row (`start` a multiple of the segment), in place
/// with the device arithmetic; `inverse` undoes the rotation.
///
/// # Panics
/// When `x` has more than `u32::MAX` values.
pub fn rotate(rotation: Rotation, start: usize, x: &mut [f32], inverse: bool) {
    let n = u32::try_from(x.len()).expect("at most u32::MAX values");
    let (seed, log2) = rotation_fields(Some(rotation));
    // SAFETY: `x` holds `n` values, which the C side reads and writes in place.
    unsafe {
        adpq_host_rotate(
            seed,
            log2,
            start as u64,
            x.as_mut_ptr(),
            n,
            i32::from(inverse),
        )
    }
}

/// The level of a format v3 code at `bits` bits, as the kernels decode it.
pub fn v3_level(bits: u8, code: u8) -> f32 {
    // SAFETY: a pure function of its arguments (the code is masked to the book's 16).
    unsafe { adpq_host_v3_level(i32::from(bits), u32::from(code)) }
}

/// The format v3 code of `w` at `bits` bits on the grid `d = q_step · u_d`,
/// `m = −q_min · u_m` (units as f16 bits, step exponent 0), as the kernels encode it.
pub fn v3_encode(bits: u8, units: [u16; 2], q_step: u8, q_min: u8, w: f32) -> u8 {
    // SAFETY: a pure function of its arguments.
    let c = unsafe {
        adpq_host_v3_encode(
            i32::from(bits),
            units[0],
            units[1],
            u32::from(q_step),
            u32::from(q_min),
            w,
        )
    };
    c as u8
}

/// The pointer and C storage code of weights.
fn raw(w: Weights<'_>) -> (*const c_void, i32) {
    match w {
        Weights::F32(s) => (s.as_ptr().cast::<c_void>(), 0),
        Weights::F16(s) => (s.as_ptr().cast::<c_void>(), 1),
        Weights::Bf16(s) => (s.as_ptr().cast::<c_void>(), 2),
    }
}

/// A validated packed tensor's sections, as the C side reads them.
struct Packed<'a> {
    job: QuantJob,
    cols: u32,
    records: &'a [u8],
    codes: &'a [u8],
    positions: &'a [u8],
    offsets: Vec<u32>,
}

fn sections<'a>(t: &PackedTensor<'a>) -> Packed<'a> {
    let (cols, fp, l) = (t.cols(), t.params(), t.layout());
    let b = t.as_bytes();
    let (offsets_at, records_at) = (l.offsets_at(), l.records_at());
    let (codes_at, positions_at) = (l.codes_at(), l.positions_at());
    let info = t.info();
    Packed {
        job: HostJob {
            format: fp,
            scale_exp: info.scale_exp,
            threshold_bits: info.threshold.to_bits(),
            take_equal: 0,
        }
        .c()
        .with_rotation(info.rotation),
        cols: cols as u32,
        records: &b[records_at..codes_at],
        codes: &b[codes_at..positions_at],
        positions: &b[positions_at..],
        offsets: b[offsets_at..records_at]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    }
}

/// Dequantizes row `r` of a parsed (validated) packed tensor with the device arithmetic.
///
/// # Panics
/// When `r` is not a row of `t`.
pub fn dequantize_row(t: &PackedTensor<'_>, r: usize) -> Vec<f32> {
    assert!(r < t.rows(), "row {r} out of range");
    let p = sections(t);
    let mut out = vec![0f32; t.cols()];
    // SAFETY: `t` was validated by the core's parser, so its records, codes, positions and
    // offsets are consistent with its shape and format (every group record, code and
    // position the C side reads lies inside these slices); `r < rows` and `out` holds
    // `cols` values.
    unsafe {
        adpq_host_dequantize_row(
            &p.job,
            p.cols,
            p.records.as_ptr(),
            p.codes.as_ptr(),
            p.positions.as_ptr(),
            p.positions.len() as u64,
            p.offsets.as_ptr(),
            r as u32,
            out.as_mut_ptr(),
        )
    };
    out
}

/// The dot product of row `r` of a parsed packed tensor with `x`, in the oracle's order.
///
/// # Panics
/// When `r` is not a row of `t` or `x.len() != t.cols()`.
pub fn dot_row(t: &PackedTensor<'_>, r: usize, x: &[f32]) -> f32 {
    assert!(
        r < t.rows() && x.len() == t.cols(),
        "row or activations out of range"
    );
    let p = sections(t);
    // SAFETY: as in `dequantize_row`; `x` holds `cols` values.
    unsafe {
        adpq_host_dot_row(
            &p.job,
            p.cols,
            p.records.as_ptr(),
            p.codes.as_ptr(),
            p.positions.as_ptr(),
            p.positions.len() as u64,
            p.offsets.as_ptr(),
            r as u32,
            x.as_ptr(),
        )
    }
}

/// The int8-activation dot product of row `r` of a parsed packed tensor, in the order
/// of the core's `dot_row_q8_ref`.
///
/// # Panics
/// When `r` is not a row of `t` or `a` does not fit `t`.
pub fn dot_row_q8(t: &PackedTensor<'_>, r: usize, a: &Q8Activations<'_>) -> f32 {
    assert!(r < t.rows(), "row {r} out of range");
    let groups = t.cols().div_ceil(usize::from(t.params().group_size));
    assert!(
        a.group_size() == t.params().group_size
            && a.rotation() == t.info().rotation
            && a.q().len() == t.cols()
            && a.scales().len() == groups
            && a.sums().len() == groups,
        "activations do not fit the tensor"
    );
    let p = sections(t);
    // SAFETY: as in `dequantize_row`; `a` was checked against `t` above: `cols` values
    // and one scale and sum per group.
    unsafe {
        adpq_host_dot_row_q8(
            &p.job,
            p.cols,
            p.records.as_ptr(),
            p.codes.as_ptr(),
            p.positions.as_ptr(),
            p.positions.len() as u64,
            p.offsets.as_ptr(),
            r as u32,
            a.q().as_ptr(),
            a.scales().as_ptr(),
            a.sums().as_ptr(),
        )
    }
}

/// `[Σw², Σ(w − ŵ)², Σ(w − rtn(w))²]` of whole rows as the error kernel computes them per
/// group, added in row-major group order.
///
/// # Panics
/// When `deq` and `w` differ in length, or it is not `rows · cols` with `cols` a whole
/// number of columns, or the bits or group size are out of range.
pub fn error_sums(
    w: Weights<'_>,
    deq: &[f32],
    cols: usize,
    bits: u8,
    group_size: usize,
) -> [f64; 3] {
    assert!(
        w.len() == deq.len()
            && cols > 0
            && deq.len().is_multiple_of(cols)
            && deq.len() <= u32::MAX as usize,
        "shape"
    );
    assert!((2..=8).contains(&bits) && group_size > 0 && group_size <= u32::MAX as usize);
    let (ptr, dtype) = raw(w);
    let mut out = [0f64; 3];
    // SAFETY: `w` and `deq` hold `rows · cols` values (checked above); `out` holds 3.
    unsafe {
        adpq_host_error_sums(
            ptr,
            dtype,
            deq.as_ptr(),
            (deq.len() / cols) as u32,
            cols as u32,
            i32::from(bits),
            group_size as u32,
            out.as_mut_ptr(),
        )
    };
    out
}

/// f32 to bf16 bits as the kernels round.
pub fn bf16_from_f32(x: f32) -> u16 {
    // SAFETY: a pure function of its argument.
    unsafe { adpq_host_bf16_from_f32(x) }
}

/// f32 to f16 bits as the kernels round.
pub fn f16_from_f32(x: f32) -> u16 {
    // SAFETY: a pure function of its argument.
    unsafe { adpq_host_f16_from_f32(x) }
}

/// f16 bits to f32 as the kernels widen.
pub fn f16_to_f32(h: u16) -> f32 {
    // SAFETY: a pure function of its argument.
    unsafe { adpq_host_f16_to_f32(h) }
}
