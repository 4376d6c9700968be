//! The `CpuKernels` contract and its implementations.
//!
//! A backend value is a token: holding one proves the hardware it needs is present.
//! Operations are coarse (a whole histogram pass, a block of rows, a whole row dot
//! product) so that a GPU backend can implement them with batched launches. The
//! [`Scalar`] backend is the oracle every other backend is tested against.

#[cfg(target_arch = "aarch64")]
mod aarch64;
mod auto;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod common;
pub(crate) mod format;
mod prefetch;
mod q8;
pub mod repacked;
mod rows;
mod scalar;
mod scalar_v2;
pub(crate) mod scalar_v3;
mod scan;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod simd;
mod stubs;
#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(target_arch = "aarch64")]
pub use aarch64::Neon;
pub use auto::{dot_tolerance, AnyKernels, KernelChoiceError};
pub use prefetch::prefetch_rows;
pub use q8::{dot_row_q8_ref, Q8Activations};
pub use repacked::Repacked;
pub use scalar::Scalar;
pub use scan::KernelScan;
#[cfg(not(target_arch = "aarch64"))]
pub use stubs::Neon;
#[cfg(not(target_arch = "x86_64"))]
pub use stubs::{Avx2, AvxVnni};
#[cfg(target_arch = "x86_64")]
pub use x86_64::{Avx2, AvxVnni};

use crate::bits::BitWriter;
use crate::error::{Error, Result};
use crate::format::{PackedTensor, RowCursor};
use crate::params::FormatParams;
use crate::select::{BadValue, HistogramPass, OutlierRule, RangeScan, Selection, HIST_BINS};
use crate::weights::Weights;

/// What a block of rows is quantized with (built by [`QuantizePlan`](crate::QuantizePlan)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowJob {
    /// Columns of the tensor.
    pub(crate) cols: usize,
    pub(crate) params: FormatParams,
    /// Outlier rule for this block (see `Selection::rule_after`).
    pub(crate) rule: OutlierRule,
    /// Per-tensor step exponent.
    pub(crate) scale_exp: i8,
    /// Index of the block's first row in the tensor (for error messages).
    pub(crate) first_row: u64,
    /// The rows' rotation (format v3).
    pub(crate) rotation: Option<crate::rotate::Rotation>,
}

/// Where a block of rows is written: its share of the packed buffer (built by
/// [`QuantizePlan`](crate::QuantizePlan)).
#[derive(Debug)]
pub struct RowsOut<'a> {
    /// Per-row outlier counts, u32 little-endian, 4 bytes per row (none in v3).
    pub(crate) counts: &'a mut [u8],
    /// The rows' group records.
    pub(crate) records: &'a mut [u8],
    /// The rows' codes.
    pub(crate) codes: &'a mut [u8],
    /// Receives the outlier positions in order.
    pub(crate) positions: BitWriter<'a>,
}

/// What quantizing a block of rows produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RowsDone {
    /// Outliers written.
    pub(crate) outliers: u64,
    /// Weights exactly at the threshold that were taken as outliers.
    pub(crate) equal_taken: u64,
}

/// Summary of a whole-tensor quantization.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantized {
    /// The selection used.
    pub selection: Selection,
    /// Bytes written (the packed length).
    pub bytes: usize,
    /// Exact bits per weight.
    pub bits_per_weight: f64,
}

mod sealed {
    /// Only this crate implements [`CpuKernels`](super::CpuKernels): its row-level
    /// methods take jobs that only [`QuantizePlan`](crate::QuantizePlan) builds.
    pub trait Sealed {}
    impl Sealed for super::Scalar {}
    impl Sealed for super::Avx2 {}
    impl Sealed for super::AvxVnni {}
    impl Sealed for super::Neon {}
    impl Sealed for super::AnyKernels {}
}

/// The operations every CPU kernel set provides (sealed: implemented by this crate's
/// tokens only).
pub trait CpuKernels: sealed::Sealed + Copy + Send + Sync + core::fmt::Debug {
    /// Short lowercase name (`scalar`, `avx2`, `neon`, `cuda`).
    fn name(&self) -> &'static str;

    /// One histogram pass over `w` (see [`HistogramPass`]), adding into `bins`. Returns the
    /// largest magnitude bits of all weights in `w` or the first rejected weight
    /// (NaN, infinite, or `|w| ≥ 2^124`).
    fn histogram(
        &self,
        w: Weights<'_>,
        pass: &HistogramPass,
        bins: &mut [u32; HIST_BINS],
    ) -> Result<u32, BadValue>;

    /// Number of weights with `bits(|w|) >= threshold_bits`.
    fn count_at_least(&self, w: Weights<'_>, threshold_bits: u32) -> u64;

    /// One pass that validates every weight (as [`CpuKernels::histogram`] does), counts the
    /// weights with `bits(|w|) >= hi`, and writes the magnitude bits of those with
    /// `lo <= bits(|w|) < hi` into `out` in order (as many as fit; all are counted).
    fn scan_range(
        &self,
        w: Weights<'_>,
        lo: u32,
        hi: u32,
        out: &mut [u32],
    ) -> Result<RangeScan, BadValue> {
        crate::with_weights!(w, s => scalar::scan_range_generic(s, lo, hi, out))
    }

    /// Number of weights with `bits(|w|) == threshold_bits`.
    fn count_equal(&self, w: Weights<'_>, threshold_bits: u32) -> u64;

    /// Quantizes whole rows (`w.len()` a multiple of `job.cols`) into `out`.
    fn quantize_rows(
        &self,
        w: Weights<'_>,
        job: &RowJob,
        out: &mut RowsOut<'_>,
    ) -> Result<RowsDone>;

    /// Dequantizes rows `first_row..first_row + out.len() / cols` into `out`.
    fn dequantize_rows(
        &self,
        t: &PackedTensor<'_>,
        first_row: usize,
        out: &mut [f32],
    ) -> Result<()>;

    /// Dequantizes the next `out.len()` columns of a row from the cursor `at`, then moves
    /// it past them: a row decoded in pieces of bounded size (see
    /// [`PackedTensor::row_cursor`]). `out.len()` is a multiple of
    /// [`PackedTensor::piece_unit`] or reaches the row's end; the values are exactly those of
    /// [`dequantize_rows`](CpuKernels::dequantize_rows).
    fn dequantize_part(
        &self,
        t: &PackedTensor<'_>,
        at: &mut RowCursor,
        out: &mut [f32],
    ) -> Result<()>;

    /// Dot product of packed row `row` with `x` (`x.len() == cols`).
    fn dot_row(&self, t: &PackedTensor<'_>, row: usize, x: &[f32]) -> Result<f32>;

    /// `y = W x` for the whole tensor.
    fn gemv(&self, t: &PackedTensor<'_>, x: &[f32], y: &mut [f32]) -> Result<()> {
        gemv_by_rows(self, t, x, y)
    }

    /// Dot product of packed row `row` with int8 activations `a` (see [`Q8Activations`]).
    /// The default is the portable reference [`dot_row_q8_ref`]; SIMD backends may sum in
    /// another order, within [`dot_tolerance`] of the dequantized activations.
    fn dot_row_q8(&self, t: &PackedTensor<'_>, row: usize, a: &Q8Activations<'_>) -> Result<f32> {
        dot_row_q8_ref(t, row, a)
    }

    /// `y = W x̂` with int8 activations `x̂` (see [`CpuKernels::dot_row_q8`]).
    fn gemv_q8(&self, t: &PackedTensor<'_>, a: &Q8Activations<'_>, y: &mut [f32]) -> Result<()> {
        check_gemv_out(t, y)?;
        self.gemv_q8_rows(t, 0, a, y)
    }

    /// Rows `first..first + y.len()` of `W x̂` (see [`CpuKernels::gemv_q8`]): each output
    /// is [`dot_row_q8`](CpuKernels::dot_row_q8) of its row, bit for bit (a SIMD backend
    /// works on several rows at once, sharing each activation load). An error when a row
    /// is out of range.
    fn gemv_q8_rows(
        &self,
        t: &PackedTensor<'_>,
        first: usize,
        a: &Q8Activations<'_>,
        y: &mut [f32],
    ) -> Result<()> {
        gemv_q8_rows_by_rows(self, t, first, a, y)
    }

    /// Rows `first..first + y.len()` of `W x̂` for a v3 tensor whose rows an engine
    /// repacked at load ([`Repacked`]): each output that of
    /// [`gemv_q8_rows`](CpuKernels::gemv_q8_rows) on the packed tensor, bit for bit, the
    /// whole blocks read from the repacked rows. The default is that call.
    fn gemv_q8_repacked(
        &self,
        r: &Repacked<'_>,
        first: usize,
        a: &Q8Activations<'_>,
        y: &mut [f32],
    ) -> Result<()> {
        self.gemv_q8_rows(r.packed(), first, a, y)
    }

    /// [`Q8Activations::quantize_for`]: `x` quantized for the int8 dots of `t` (rotated
    /// first for a v3 tensor), its rotation and rounding in this kernel set's lanes, the
    /// same bits.
    fn quantize_activations<'a>(
        &self,
        t: &PackedTensor<'_>,
        x: &[f32],
        q: &'a mut [i8],
        scales: &'a mut [f32],
        sums: &'a mut [i32],
    ) -> Result<Q8Activations<'a>> {
        Q8Activations::quantize_for(t, x, q, scales, sums)
    }

    /// Adds to `sums` the error statistics (`[Σ w², Σ (w − ŵ)², Σ (w − rtn(w))²]`) of
    /// consecutive whole groups of one row: [`stats::add_error_sums`](crate::stats::add_error_sums),
    /// the same sums bit for bit on every kernel set (a SIMD one runs the same code with
    /// its vector registers).
    fn add_error_sums(
        &self,
        sums: &mut [f64; 3],
        w: Weights<'_>,
        deq: &[f32],
        bits: u8,
        group_size: usize,
    ) {
        crate::stats::add_error_sums(sums, w, deq, bits, group_size)
    }
}

/// [`CpuKernels::gemv_q8_rows`] one [`dot_row_q8`](CpuKernels::dot_row_q8) at a time: its
/// default.
fn gemv_q8_rows_by_rows<K: CpuKernels>(
    k: &K,
    t: &PackedTensor<'_>,
    first: usize,
    a: &Q8Activations<'_>,
    y: &mut [f32],
) -> Result<()> {
    check_row_range(t, first, y.len())?;
    a.check(t)?;
    for (i, out) in y.iter_mut().enumerate() {
        *out = k.dot_row_q8(t, first + i, a)?;
    }
    Ok(())
}

/// Checks that rows `first..first + n` are rows of `t`.
pub(crate) fn check_row_range(t: &PackedTensor<'_>, first: usize, n: usize) -> Result<()> {
    match first.checked_add(n) {
        Some(end) if end <= t.rows() => Ok(()),
        _ => Err(Error::RowOutOfRange {
            row: first.saturating_add(n).saturating_sub(1) as u64,
            rows: t.rows() as u64,
        }),
    }
}

/// `y = W x` row by row with `k`'s dot product: [`CpuKernels::gemv`]'s default.
fn gemv_by_rows<K: CpuKernels>(
    k: &K,
    t: &PackedTensor<'_>,
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    check_gemv_out(t, y)?;
    for (r, out) in y.iter_mut().enumerate() {
        *out = k.dot_row(t, r, x)?;
    }
    Ok(())
}

/// Dequantizes row `row` of `t` with `k` in pieces of at most `buf.len()` values (rounded
/// down to whole [`PackedTensor::piece_unit`]s), calling `each(first_col, values)` on each piece in column order:
/// a row of any length decoded in `buf.len()` floats, each group read once. The values
/// are exactly [`CpuKernels::dequantize_rows`]'s. A `buf` shorter than one unit (of a
/// row with more columns than that) is [`Error::BufferSize`].
pub fn dequantize_row_pieces<K: CpuKernels>(
    k: &K,
    t: &PackedTensor<'_>,
    row: usize,
    buf: &mut [f32],
    mut each: impl FnMut(usize, &[f32]) -> Result<()>,
) -> Result<()> {
    let (cols, g) = (t.cols(), t.piece_unit());
    let piece = if buf.len() >= cols {
        cols
    } else {
        buf.len() / g * g
    };
    if piece == 0 && cols > 0 {
        return Err(Error::BufferSize {
            needed: g.min(cols) as u64,
            actual: buf.len() as u64,
        });
    }
    let mut at = t.row_cursor(row)?;
    let mut col = 0;
    while col < cols {
        let n = piece.min(cols - col);
        let values = &mut buf[..n];
        k.dequantize_part(t, &mut at, values)?;
        each(col, values)?;
        col += n;
    }
    Ok(())
}

/// Checks that `y` holds one output per row of `t`.
pub(crate) fn check_gemv_out(t: &PackedTensor<'_>, y: &[f32]) -> Result<()> {
    if y.len() != t.rows() {
        return Err(Error::BufferSize {
            needed: t.rows() as u64,
            actual: y.len() as u64,
        });
    }
    Ok(())
}

/// Checks that activations `x` have one value per column of `t` (every dot product and
/// the dot tolerance start with it).
pub(crate) fn check_activations(t: &PackedTensor<'_>, x: &[f32]) -> Result<()> {
    if x.len() != t.cols() {
        return Err(Error::ShapeMismatch {
            expected: t.cols() as u64,
            actual: x.len() as u64,
        });
    }
    Ok(())
}
