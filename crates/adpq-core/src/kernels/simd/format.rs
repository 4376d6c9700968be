//! Each format version's row kernels over lanes ([`LaneFormat`], implemented by the
//! version types of `kernels/format.rs`): what the shared `CpuKernels` implementation
//! (`entry.rs`) runs for a tensor's version, picked once per operation by
//! [`with_format!`](crate::kernels::format::with_format).

use super::Lanes;
use crate::error::Result;
use crate::format::{PackedTensor, RowCursor};
use crate::kernels::format::{V1, V2, V3};
use crate::kernels::{check_gemv_out, check_row_range, Q8Activations, RowJob, RowsDone, RowsOut};
use crate::weights::Weights;

/// One format version's kernels over lanes, each equal to the version's scalar oracle
/// ([`Format`](crate::kernels::format::Format)): the same bytes and decoded values, and
/// dots within [`dot_tolerance`](crate::kernels::dot_tolerance) (the int8 dots of
/// versions 2 and 3 the reference's bits).
pub(crate) trait LaneFormat {
    /// Quantizes whole rows of `w` into `out`.
    fn quantize_rows<S: Lanes>(
        s: S,
        w: Weights<'_>,
        job: &RowJob,
        out: &mut RowsOut<'_>,
    ) -> Result<RowsDone>;

    /// Decodes the next `out.len()` columns of a row from `at`; returns the outliers
    /// among them.
    fn dequantize_part<S: Lanes>(
        s: S,
        t: &PackedTensor<'_>,
        at: RowCursor,
        out: &mut [f32],
    ) -> Result<usize>;

    /// Dot product of row `r` with `x`.
    fn dot_row<S: Lanes>(s: S, t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<f32>;

    /// The int8-activation dot of row `r`.
    fn dot_row_q8<S: Lanes>(
        s: S,
        t: &PackedTensor<'_>,
        r: usize,
        a: &Q8Activations<'_>,
    ) -> Result<f32>;

    /// `y = W x`: by default one [`dot_row`](Self::dot_row) per row.
    #[inline(always)]
    fn gemv<S: Lanes>(s: S, t: &PackedTensor<'_>, x: &[f32], y: &mut [f32]) -> Result<()> {
        check_gemv_out(t, y)?;
        for (r, out) in y.iter_mut().enumerate() {
            *out = Self::dot_row(s, t, r, x)?;
        }
        Ok(())
    }

    /// Rows `first..first + y.len()` of `W x̂`, each its [`dot_row_q8`](Self::dot_row_q8)
    /// bit for bit: by default one row at a time.
    #[inline(always)]
    fn gemv_q8_rows<S: Lanes>(
        s: S,
        t: &PackedTensor<'_>,
        first: usize,
        a: &Q8Activations<'_>,
        y: &mut [f32],
    ) -> Result<()> {
        check_row_range(t, first, y.len())?;
        a.check(t)?;
        for (i, out) in y.iter_mut().enumerate() {
            *out = Self::dot_row_q8(s, t, first + i, a)?;
        }
        Ok(())
    }
}

impl LaneFormat for V1 {
    #[inline(always)]
    fn quantize_rows<S: Lanes>(
        s: S,
        w: Weights<'_>,
        job: &RowJob,
        out: &mut RowsOut<'_>,
    ) -> Result<RowsDone> {
        super::quantize_rows(s, w, job, out)
    }
    #[inline(always)]
    fn dequantize_part<S: Lanes>(
        s: S,
        t: &PackedTensor<'_>,
        at: RowCursor,
        out: &mut [f32],
    ) -> Result<usize> {
        super::dequantize_row(s, t, at, out)
    }
    #[inline(always)]
    fn dot_row<S: Lanes>(s: S, t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<f32> {
        super::dot_row(s, t, r, x)
    }
    /// Exact integer `Σ c·q` per group, the outlier corrections in lanes (formats other
    /// than 4-bit codes in groups of 128 use the portable reference).
    #[inline(always)]
    fn dot_row_q8<S: Lanes>(
        s: S,
        t: &PackedTensor<'_>,
        r: usize,
        a: &Q8Activations<'_>,
    ) -> Result<f32> {
        super::dot_row_q8(s, t, r, a)
    }
}

impl LaneFormat for V2 {
    #[inline(always)]
    fn quantize_rows<S: Lanes>(
        s: S,
        w: Weights<'_>,
        job: &RowJob,
        out: &mut RowsOut<'_>,
    ) -> Result<RowsDone> {
        super::quantize_rows_v2(s, w, job, out)
    }
    #[inline(always)]
    fn dequantize_part<S: Lanes>(
        s: S,
        t: &PackedTensor<'_>,
        at: RowCursor,
        out: &mut [f32],
    ) -> Result<usize> {
        super::dequantize_row_v2(s, t, at, out)
    }
    #[inline(always)]
    fn dot_row<S: Lanes>(s: S, t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<f32> {
        super::dot_row_v2(s, t, r, x)
    }
    /// Exact integer `Σ c·q` per group, the outlier corrections summed in lanes.
    #[inline(always)]
    fn dot_row_q8<S: Lanes>(
        s: S,
        t: &PackedTensor<'_>,
        r: usize,
        a: &Q8Activations<'_>,
    ) -> Result<f32> {
        super::dot_row_q8_v2(s, t, r, a)
    }
    #[inline(always)]
    fn gemv<S: Lanes>(s: S, t: &PackedTensor<'_>, x: &[f32], y: &mut [f32]) -> Result<()> {
        super::gemv_v2(s, t, x, y)
    }
    /// Several rows at once (each row's arithmetic that of `dot_row_q8`).
    #[inline(always)]
    fn gemv_q8_rows<S: Lanes>(
        s: S,
        t: &PackedTensor<'_>,
        first: usize,
        a: &Q8Activations<'_>,
        y: &mut [f32],
    ) -> Result<()> {
        super::gemv_q8_rows_v2(s, t, first, a, y)
    }
}

impl LaneFormat for V3 {
    #[inline(always)]
    fn quantize_rows<S: Lanes>(
        s: S,
        w: Weights<'_>,
        job: &RowJob,
        out: &mut RowsOut<'_>,
    ) -> Result<RowsDone> {
        super::quantize_rows_v3(s, w, job, out)
    }
    #[inline(always)]
    fn dequantize_part<S: Lanes>(
        s: S,
        t: &PackedTensor<'_>,
        at: RowCursor,
        out: &mut [f32],
    ) -> Result<usize> {
        super::dequantize_row_v3(s, t, at.row(), at.column(t), out)
    }
    #[inline(always)]
    fn dot_row<S: Lanes>(s: S, t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<f32> {
        super::dot_row_v3(s, t, r, x)
    }
    /// The reference's bits.
    #[inline(always)]
    fn dot_row_q8<S: Lanes>(
        s: S,
        t: &PackedTensor<'_>,
        r: usize,
        a: &Q8Activations<'_>,
    ) -> Result<f32> {
        super::dot_row_q8_v3(s, t, r, a)
    }
    #[inline(always)]
    fn gemv<S: Lanes>(s: S, t: &PackedTensor<'_>, x: &[f32], y: &mut [f32]) -> Result<()> {
        super::gemv_v3(s, t, x, y)
    }
    /// Several rows at once, the reference's bits.
    #[inline(always)]
    fn gemv_q8_rows<S: Lanes>(
        s: S,
        t: &PackedTensor<'_>,
        first: usize,
        a: &Q8Activations<'_>,
        y: &mut [f32],
    ) -> Result<()> {
        super::gemv_q8_rows_v3(s, t, first, a, y)
    }
}
