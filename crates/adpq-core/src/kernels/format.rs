//! Each packed format version as a type ([`V1`], [`V2`], [`V3`]).
//!
//! [`Format`] is what a version implements for the scalar oracle: quantize whole rows,
//! decode a row's columns, the f32 dot and gemv, the int8-activation dot, and the
//! magnitude the dot tolerance scales. The SIMD kernel sets add the same operations over lanes for each
//! type (`simd/format.rs`, `LaneFormat`). [`with_format!`] picks the type of a tensor's
//! version once per operation, so a new version is one more type, its implementations
//! and one more arm there, not a `match` in every operation of every kernel set.
//! (Record layouts and sizes stay with the format module: `format/layout.rs`.)

use super::q8::{dot_row_q8_v1, Q8Activations};
use super::{check_gemv_out, scalar, scalar_v2, scalar_v3, RowJob, RowsDone, RowsOut};
use crate::error::Result;
use crate::format::{PackedTensor, RowCursor};
use crate::weights::Element;

/// Format version 1: two f16 grids per group (inliers, outliers), outlier positions.
pub(crate) struct V1;
/// Format version 2: per-row units, searched inlier grids, offset outliers.
pub(crate) struct V2;
/// Format version 3: rotated rows, a 4-bit code book, 6-bit group fields, no outliers.
pub(crate) struct V3;

/// One format version's scalar kernels: the oracle every fast path matches.
pub(crate) trait Format {
    /// Quantizes whole rows of `w` (`w.len()` a multiple of `job.cols`) into `out`.
    fn quantize_rows<T: Element>(w: &[T], job: &RowJob, out: &mut RowsOut<'_>) -> Result<RowsDone>;

    /// Decodes the next `out.len()` columns of a row from `at` (whole pieces, or reaching
    /// the row's end). Returns the outliers among them.
    fn dequantize_part(t: &PackedTensor<'_>, at: RowCursor, out: &mut [f32]) -> Result<usize>;

    /// Dot product of row `r` with `x`.
    fn dot_row(t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<f32>;

    /// `y = W x`, each output [`dot_row`](Self::dot_row)'s bits: by default one row at a
    /// time.
    fn gemv(t: &PackedTensor<'_>, x: &[f32], y: &mut [f32]) -> Result<()> {
        check_gemv_out(t, y)?;
        for (r, out) in y.iter_mut().enumerate() {
            *out = Self::dot_row(t, r, x)?;
        }
        Ok(())
    }

    /// The int8-activation dot of row `r` ([`dot_row_q8_ref`](super::dot_row_q8_ref),
    /// `a` already checked against `t`).
    fn dot_row_q8(t: &PackedTensor<'_>, r: usize, a: &Q8Activations<'_>) -> Result<f32>;

    /// `S` of [`dot_tolerance`](super::dot_tolerance) for row `r` and `x`, with the row's
    /// outlier count.
    fn dot_magnitude(t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<(f64, usize)>;
}

/// Runs `$body` with `$F` the [`Format`] type of version `$version`.
macro_rules! with_format {
    ($version:expr, $F:ident => $body:expr) => {
        match $version {
            $crate::params::FormatVersion::V1 => {
                type $F = $crate::kernels::format::V1;
                $body
            }
            $crate::params::FormatVersion::V2 => {
                type $F = $crate::kernels::format::V2;
                $body
            }
            $crate::params::FormatVersion::V3 => {
                type $F = $crate::kernels::format::V3;
                $body
            }
        }
    };
}
pub(crate) use with_format;

impl Format for V1 {
    fn quantize_rows<T: Element>(w: &[T], job: &RowJob, out: &mut RowsOut<'_>) -> Result<RowsDone> {
        scalar::quantize_rows_generic(w, job, out)
    }
    fn dequantize_part(t: &PackedTensor<'_>, at: RowCursor, out: &mut [f32]) -> Result<usize> {
        scalar::dequantize_groups(t, at, out)
    }
    fn dot_row(t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<f32> {
        scalar::dot_row(t, r, x)
    }
    fn dot_row_q8(t: &PackedTensor<'_>, r: usize, a: &Q8Activations<'_>) -> Result<f32> {
        dot_row_q8_v1(t, r, a)
    }
    fn dot_magnitude(t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<(f64, usize)> {
        scalar::dot_magnitude(t, r, x)
    }
}

impl Format for V2 {
    fn quantize_rows<T: Element>(w: &[T], job: &RowJob, out: &mut RowsOut<'_>) -> Result<RowsDone> {
        scalar_v2::quantize_rows(w, job, out)
    }
    fn dequantize_part(t: &PackedTensor<'_>, at: RowCursor, out: &mut [f32]) -> Result<usize> {
        scalar_v2::dequantize_groups(t, at, out)
    }
    fn dot_row(t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<f32> {
        scalar_v2::dot_row(t, r, x)
    }
    fn dot_row_q8(t: &PackedTensor<'_>, r: usize, a: &Q8Activations<'_>) -> Result<f32> {
        scalar_v2::dot_row_q8(t, r, a)
    }
    fn dot_magnitude(t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<(f64, usize)> {
        scalar_v2::dot_magnitude(t, r, x)
    }
}

impl Format for V3 {
    fn quantize_rows<T: Element>(w: &[T], job: &RowJob, out: &mut RowsOut<'_>) -> Result<RowsDone> {
        scalar_v3::quantize_rows(w, job, out)
    }
    fn dequantize_part(t: &PackedTensor<'_>, at: RowCursor, out: &mut [f32]) -> Result<usize> {
        scalar_v3::dequantize_cols(t, at.row(), at.column(t), out)
    }
    fn dot_row(t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<f32> {
        scalar_v3::dot_row(t, r, x)
    }
    /// Each segment of `x` rotated once for every row, not once per row.
    fn gemv(t: &PackedTensor<'_>, x: &[f32], y: &mut [f32]) -> Result<()> {
        scalar_v3::gemv(t, x, y)
    }
    fn dot_row_q8(t: &PackedTensor<'_>, r: usize, a: &Q8Activations<'_>) -> Result<f32> {
        scalar_v3::dot_row_q8(t, r, a.q(), a.scales(), a.sums())
    }
    fn dot_magnitude(t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<(f64, usize)> {
        Ok((scalar_v3::dot_magnitude(t, r, x)?, 0))
    }
}
