//! The portable scalar backend: plain loops, the oracle for every fast path.

use super::check_activations;
use super::format::{with_format, Format};
use super::rows::{push_position, GroupCursor, GroupDone};
use super::{CpuKernels, RowJob, RowsDone, RowsOut};
use crate::error::{Error, Result};
use crate::format::record::grid_of;
use crate::format::{code_at, put_code, GroupRecord, PackedTensor, RowCursor};
use crate::params::MAX_GROUP_SIZE;
use crate::select::{is_valid_abs_bits, BadValue, HistogramPass, RangeScan, HIST_BINS};
use crate::weights::{Element, Weights};
use crate::with_weights;

/// The scalar backend. Always available.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scalar;

impl Scalar {
    /// The scalar backend (always available).
    pub fn new() -> Self {
        Scalar
    }
}

pub(crate) fn histogram_generic<T: Element>(
    s: &[T],
    pass: &HistogramPass,
    bins: &mut [u32; HIST_BINS],
) -> Result<u32, BadValue> {
    let mut max = 0u32;
    for (i, &v) in s.iter().enumerate() {
        let b = v.abs_bits();
        if !is_valid_abs_bits(b) {
            return Err(BadValue {
                index: i as u64,
                value: v.to_f32(),
            });
        }
        max = max.max(b);
        if let Some(bin) = pass.bin(b) {
            bins[bin] += 1;
        }
    }
    Ok(max)
}

/// The scalar [`CpuKernels::scan_range`].
pub(crate) fn scan_range_generic<T: Element>(
    s: &[T],
    lo: u32,
    hi: u32,
    out: &mut [u32],
) -> Result<RangeScan, BadValue> {
    let mut scan = RangeScan::default();
    for (i, &v) in s.iter().enumerate() {
        let b = v.abs_bits();
        if !is_valid_abs_bits(b) {
            return Err(BadValue {
                index: i as u64,
                value: v.to_f32(),
            });
        }
        scan.max_abs_bits = scan.max_abs_bits.max(b);
        scan.at_least_hi += u64::from(b >= hi);
        if b >= lo && b < hi {
            if let Some(slot) = out.get_mut(scan.in_range as usize) {
                *slot = b;
            }
            scan.in_range += 1;
        }
    }
    Ok(scan)
}

/// Checks that `w` holds whole rows of `job.cols` and that `out` has room for them.
pub(crate) fn check_rows(w_len: usize, job: &RowJob, out: &RowsOut<'_>) -> Result<usize> {
    job.params.validate()?;
    let cols = job.cols;
    if cols == 0 || !w_len.is_multiple_of(cols) {
        return Err(Error::ShapeMismatch {
            expected: (w_len / cols.max(1) * cols) as u64,
            actual: w_len as u64,
        });
    }
    let rows = w_len / cols;
    let fp = &job.params;
    let rec = fp.row_record_bytes(cols);
    let code = (cols * usize::from(fp.bits)).div_ceil(8);
    for (needed, actual) in [
        (rows * fp.row_count_bytes(), out.counts.len()),
        (rows * rec, out.records.len()),
        (rows * code, out.codes.len()),
    ] {
        if needed != actual {
            return Err(Error::BufferSize {
                needed: needed as u64,
                actual: actual as u64,
            });
        }
    }
    Ok(rows)
}

pub(crate) fn quantize_rows_generic<T: Element>(
    s: &[T],
    job: &RowJob,
    out: &mut RowsOut<'_>,
) -> Result<RowsDone> {
    let fp = job.params;
    let cols = job.cols;
    let g = usize::from(fp.group_size);
    let code_max = fp.code_max();
    let mut rule = job.rule;
    let mut done = RowsDone::default();
    let mut vals = [0f32; MAX_GROUP_SIZE as usize];
    let mut is_out = [false; MAX_GROUP_SIZE as usize];
    let mut cursor = GroupCursor::new(s.len(), job, out)?;
    for r in 0..cursor.rows() {
        let row = &s[r * cols..(r + 1) * cols];
        for (gi, chunk) in row.chunks(g).enumerate() {
            let (codes, positions) = cursor.codes();
            let (mut in_max, mut in_lo, mut in_hi, mut n_in) = (0f32, 0f32, 0f32, 0usize);
            let (mut out_max, mut out_lo, mut out_hi, mut n_out) = (0f32, 0f32, 0f32, 0usize);
            for (i, &v) in chunk.iter().enumerate() {
                let b = v.abs_bits();
                let x = v.to_f32();
                if !is_valid_abs_bits(b) {
                    let flat = (job.first_row + r as u64) * cols as u64 + (gi * g + i) as u64;
                    return Err(BadValue {
                        index: flat,
                        value: x,
                    }
                    .into_error(0, cols as u64));
                }
                let o = rule.take(b);
                if o && b == rule.threshold_bits {
                    done.equal_taken += 1;
                }
                vals[i] = x;
                is_out[i] = o;
                let a = f32::from_bits(b);
                if o {
                    out_max = out_max.max(a);
                    out_lo = out_lo.min(x);
                    out_hi = out_hi.max(x);
                    n_out += 1;
                } else {
                    in_max = in_max.max(a);
                    in_lo = in_lo.min(x);
                    in_hi = in_hi.max(x);
                    n_in += 1;
                }
            }
            let gin = grid_of(&fp, job.scale_exp, in_max, in_lo, in_hi, n_in);
            let gout = grid_of(&fp, job.scale_exp, out_max, out_lo, out_hi, n_out);
            let base = gi * g;
            for i in 0..chunk.len() {
                let (grid, o) = if is_out[i] {
                    (&gout, true)
                } else {
                    (&gin, false)
                };
                put_code(codes, base + i, fp.bits, grid.encode(vals[i], code_max));
                if o {
                    push_position(positions, i as u32)?;
                }
            }
            cursor.done(&GroupDone { gin, gout, n_out });
        }
    }
    done.outliers = cursor.outliers();
    Ok(done)
}

/// Checks a row range against a tensor and returns the number of rows.
pub(crate) fn check_out_rows(
    t: &PackedTensor<'_>,
    first_row: usize,
    out_len: usize,
) -> Result<usize> {
    let cols = t.cols();
    if !out_len.is_multiple_of(cols) {
        return Err(Error::ShapeMismatch {
            expected: (out_len / cols * cols) as u64,
            actual: out_len as u64,
        });
    }
    let n = out_len / cols;
    if first_row.checked_add(n).is_none_or(|end| end > t.rows()) {
        return Err(Error::RowOutOfRange {
            row: (first_row + n) as u64,
            rows: t.rows() as u64,
        });
    }
    Ok(n)
}

/// Dequantizes the groups of a row from `at` on into `out` (scalar oracle): a dense pass
/// on the inlier grid, then the outlier patch. Returns the outliers of those groups.
pub(crate) fn dequantize_groups(
    t: &PackedTensor<'_>,
    at: RowCursor,
    out: &mut [f32],
) -> Result<usize> {
    let bits = t.params().bits;
    let mut outliers = 0;
    for (group, chunk) in t
        .groups_at::<GroupRecord>(&at)?
        .zip(out.chunks_mut(usize::from(t.params().group_size)))
    {
        let rec = group.record;
        outliers += rec.count;
        for (i, o) in chunk.iter_mut().enumerate() {
            *o = rec
                .inliers
                .decode(code_at(group.codes, group.start + i, bits));
        }
        for p in group.outliers() {
            if let Some(o) = chunk.get_mut(p) {
                *o = rec
                    .outliers
                    .decode(code_at(group.codes, group.start + p, bits));
            }
        }
    }
    Ok(outliers)
}

/// Dot product of one packed row with `x` (scalar oracle).
pub(crate) fn dot_row(t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<f32> {
    check_activations(t, x)?;
    let bits = t.params().bits;
    let mut acc = 0f32;
    for (group, xs) in t
        .groups(r)?
        .zip(x.chunks(usize::from(t.params().group_size)))
    {
        let rec = group.record;
        // Σ (code − offset_in) · x over the whole group, then the outliers' correction.
        let mut dense = 0f32;
        for (i, &xi) in xs.iter().enumerate() {
            let c = code_at(group.codes, group.start + i, bits);
            dense += (i32::from(c) - rec.inliers.offset) as f32 * xi;
        }
        acc += dense * rec.inliers.step;
        for p in group.outliers() {
            if let Some(&xp) = xs.get(p) {
                let c = code_at(group.codes, group.start + p, bits);
                acc += xp * (rec.outliers.decode(c) - rec.inliers.decode(c));
            }
        }
    }
    Ok(acc)
}

/// `S` of [`dot_tolerance`](super::dot_tolerance) for a version 1 row, with the row's
/// outlier count.
pub(crate) fn dot_magnitude(t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<(f64, usize)> {
    let bits = t.params().bits;
    let mut s = 0f64;
    let mut n_outliers = 0;
    for (group, xs) in t
        .groups(r)?
        .zip(x.chunks(usize::from(t.params().group_size)))
    {
        let rec = group.record;
        let dense = |c: u8| {
            f64::from((i32::from(c) - rec.inliers.offset).unsigned_abs())
                * f64::from(rec.inliers.step)
        };
        for (i, &xi) in xs.iter().enumerate() {
            s += f64::from(xi.abs()) * dense(code_at(group.codes, group.start + i, bits));
        }
        for p in group.outliers() {
            if let Some(&xp) = xs.get(p) {
                let c = code_at(group.codes, group.start + p, bits);
                let out = f64::from((i32::from(c) - rec.outliers.offset).unsigned_abs())
                    * f64::from(rec.outliers.step);
                s += f64::from(xp.abs()) * (out + dense(c));
            }
        }
        n_outliers += rec.count;
    }
    Ok((s, n_outliers))
}

impl CpuKernels for Scalar {
    fn name(&self) -> &'static str {
        "scalar"
    }

    fn histogram(
        &self,
        w: Weights<'_>,
        pass: &HistogramPass,
        bins: &mut [u32; HIST_BINS],
    ) -> Result<u32, BadValue> {
        with_weights!(w, s => histogram_generic(s, pass, bins))
    }

    fn count_at_least(&self, w: Weights<'_>, threshold_bits: u32) -> u64 {
        with_weights!(w, s => s.iter().filter(|v| v.abs_bits() >= threshold_bits).count() as u64)
    }

    fn count_equal(&self, w: Weights<'_>, threshold_bits: u32) -> u64 {
        with_weights!(w, s => s.iter().filter(|v| v.abs_bits() == threshold_bits).count() as u64)
    }

    fn quantize_rows(
        &self,
        w: Weights<'_>,
        job: &RowJob,
        out: &mut RowsOut<'_>,
    ) -> Result<RowsDone> {
        with_format!(job.params.version, F => with_weights!(w, s => F::quantize_rows(s, job, out)))
    }

    fn dequantize_rows(
        &self,
        t: &PackedTensor<'_>,
        first_row: usize,
        out: &mut [f32],
    ) -> Result<()> {
        check_out_rows(t, first_row, out.len())?;
        for (i, row_out) in out.chunks_mut(t.cols()).enumerate() {
            let at = t.row_cursor(first_row + i)?;
            with_format!(t.version(), F => F::dequantize_part(t, at, row_out))?;
        }
        Ok(())
    }

    fn dequantize_part(
        &self,
        t: &PackedTensor<'_>,
        at: &mut RowCursor,
        out: &mut [f32],
    ) -> Result<()> {
        let (_, groups) = t.check_part(at, out.len())?;
        let outliers = with_format!(t.version(), F => F::dequantize_part(t, *at, out))?;
        at.advance(groups, outliers);
        Ok(())
    }

    fn dot_row(&self, t: &PackedTensor<'_>, row: usize, x: &[f32]) -> Result<f32> {
        with_format!(t.version(), F => F::dot_row(t, row, x))
    }

    fn gemv(&self, t: &PackedTensor<'_>, x: &[f32], y: &mut [f32]) -> Result<()> {
        with_format!(t.version(), F => F::gemv(t, x, y))
    }
}
