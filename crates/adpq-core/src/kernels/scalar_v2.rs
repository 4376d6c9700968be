//! The scalar oracle for format v2: quantizing rows, dequantizing them, and dot products.
//!
//! The grid of each group is chosen by [`search_group`] (shared with every backend); this
//! file supplies the scalar per-weight passes and the row walk.

use super::rows::{push_position, RowV2, RowsV2};
use super::{check_activations, Q8Activations, RowJob, RowsDone, RowsOut};
use crate::affine::{search_group, AffineGrid, GroupPasses, LaneSums, RefitSums, RowUnits};
use crate::error::Result;
use crate::format::record_v2::{write_record, write_units};
use crate::format::{code_at, put_code, AffineRecord, PackedTensor, RowCursor};
use crate::params::MAX_GROUP_SIZE_V2;
use crate::select::{is_valid_abs_bits, BadValue};
use crate::weights::Element;

/// The scalar passes over one group: its values and which of them are outliers.
pub(crate) struct ScalarPasses<'g> {
    pub(crate) vals: &'g [f32],
    pub(crate) is_out: &'g [bool],
    pub(crate) code_max: f32,
}

impl GroupPasses for ScalarPasses<'_> {
    fn error(&mut self, grid: &AffineGrid) -> f32 {
        let mut sums = LaneSums::default();
        for (i, (&x, &o)) in self.vals.iter().zip(self.is_out).enumerate() {
            if !o {
                let c = grid.encode(x, self.code_max);
                let e = (c * grid.step + grid.min) - x;
                sums.add(i, e * e);
            }
        }
        sums.total()
    }

    fn refit_sums(&mut self, grid: &AffineGrid) -> RefitSums {
        let mut s = RefitSums::default();
        for (i, (&x, &o)) in self.vals.iter().zip(self.is_out).enumerate() {
            if !o {
                let c = grid.encode(x, self.code_max);
                s.n += 1;
                s.c.add(i, c);
                s.cc.add(i, c * c);
                s.w.add(i, x);
                s.cw.add(i, c * x);
            }
        }
        s
    }
}

/// What the pre-pass over a row finds: the extent of its groups' inlier ranges and of its
/// outliers, from which the row's units follow.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct RowExtent {
    /// Widest inlier range of a group, `max(hi − lo)`.
    pub(crate) span_max: f32,
    /// Deepest inlier minimum below zero, `max(−lo)`.
    pub(crate) neg_max: f32,
    /// Largest outlier magnitude (0 without outliers).
    pub(crate) out_max: f32,
}

impl RowExtent {
    /// Adds a group whose inliers span `[lo, hi]` (`lo ≤ 0 ≤ hi`) and whose outliers reach
    /// `out_max`.
    #[inline(always)]
    pub(crate) fn add_group(&mut self, lo: f32, hi: f32, out_max: f32) {
        self.span_max = self.span_max.max(hi - lo);
        self.neg_max = self.neg_max.max(-lo);
        self.out_max = self.out_max.max(out_max);
    }

    /// The row's units.
    #[inline(always)]
    pub(crate) fn units(&self, job: &RowJob) -> RowUnits {
        RowUnits::for_row(
            self.span_max,
            self.neg_max,
            self.out_max,
            f32::from_bits(job.rule.threshold_bits),
            &job.params,
            job.scale_exp,
        )
    }
}

/// The error for a rejected weight `v` at column `col` of block row `r`.
#[cold]
fn rejected<T: Element>(job: &RowJob, r: usize, col: usize, v: T) -> crate::error::Error {
    let cols = job.cols as u64;
    BadValue {
        index: (job.first_row + r as u64) * cols + col as u64,
        value: v.to_f32(),
    }
    .into_error(0, cols)
}

/// Quantizes whole rows into format v2 (scalar oracle).
pub(crate) fn quantize_rows<T: Element>(
    s: &[T],
    job: &RowJob,
    out: &mut RowsOut<'_>,
) -> Result<RowsDone> {
    let walk = RowsV2::new(s.len(), job, out)?;
    let fp = job.params;
    let cols = job.cols;
    let g = usize::from(fp.group_size);
    let code_max = fp.code_max() as f32;
    let mut rule = job.rule;
    let mut done = RowsDone::default();
    let mut vals = [0f32; MAX_GROUP_SIZE_V2 as usize];
    let mut is_out = [false; MAX_GROUP_SIZE_V2 as usize];
    for r in 0..walk.rows {
        let row = &s[r * cols..(r + 1) * cols];
        // Pass 1: the row's extent (with a copy of the rule: pass 2 classifies again).
        let mut pre = rule;
        let mut extent = RowExtent::default();
        for (gi, chunk) in row.chunks(g).enumerate() {
            let (mut lo, mut hi, mut out_max) = (0f32, 0f32, 0f32);
            for (i, &v) in chunk.iter().enumerate() {
                let b = v.abs_bits();
                if !is_valid_abs_bits(b) {
                    return Err(rejected(job, r, gi * g + i, v));
                }
                let x = v.to_f32();
                if pre.take(b) {
                    out_max = out_max.max(f32::from_bits(b));
                } else {
                    (lo, hi) = (lo.min(x), hi.max(x));
                }
            }
            extent.add_group(lo, hi, out_max);
        }
        let units = extent.units(job);
        let RowV2 {
            records: recs,
            codes,
            positions,
        } = walk.row(out, r);
        write_units(recs, &units);
        // Pass 2: each group's grid and codes.
        let mut row_count = 0u32;
        for (gi, chunk) in row.chunks(g).enumerate() {
            let n = chunk.len();
            let (mut lo, mut hi, mut n_out) = (0f32, 0f32, 0usize);
            for (i, &v) in chunk.iter().enumerate() {
                let b = v.abs_bits();
                let x = v.to_f32();
                let o = rule.take(b);
                if o && b == rule.threshold_bits {
                    done.equal_taken += 1;
                }
                (vals[i], is_out[i]) = (x, o);
                if o {
                    n_out += 1;
                } else {
                    (lo, hi) = (lo.min(x), hi.max(x));
                }
            }
            let mut passes = ScalarPasses {
                vals: &vals[..n],
                is_out: &is_out[..n],
                code_max,
            };
            let grid = search_group(&mut passes, lo, hi, &units, &fp);
            for i in 0..n {
                let code = if is_out[i] {
                    push_position(positions, i as u32)?;
                    units.encode_outlier(vals[i], &fp)
                } else {
                    grid.encode(vals[i], code_max) as u8
                };
                put_code(codes, gi * g + i, fp.bits, code);
            }
            write_record(recs, gi, &grid, n_out);
            row_count += n_out as u32;
        }
        walk.finish_row(out, r, row_count, &mut done);
    }
    Ok(done)
}

/// Dequantizes the groups of a v2 row from `at` on into `out` (scalar oracle): the
/// inlier grid everywhere, then the outliers. Returns the outliers of those groups.
pub(crate) fn dequantize_groups(
    t: &PackedTensor<'_>,
    at: RowCursor,
    out: &mut [f32],
) -> Result<usize> {
    let bits = t.params().bits;
    let groups = t.groups_at::<AffineRecord>(&at)?;
    let units = *groups.units();
    let mut outliers = 0;
    for (group, chunk) in groups.zip(out.chunks_mut(usize::from(t.params().group_size))) {
        let grid = group.record.grid;
        outliers += group.record.count;
        for (i, o) in chunk.iter_mut().enumerate() {
            *o = grid.decode(code_at(group.codes, group.start + i, bits));
        }
        for p in group.outliers() {
            if let Some(o) = chunk.get_mut(p) {
                *o = units.outlier(code_at(group.codes, group.start + p, bits), bits);
            }
        }
    }
    Ok(outliers)
}

/// Dot product of one v2 row with `x` (scalar oracle): per group `d·Σc·x + m·Σx`, then
/// each outlier's correction.
pub(crate) fn dot_row(t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<f32> {
    check_activations(t, x)?;
    let bits = t.params().bits;
    let groups = t.affine_groups(r)?;
    let units = *groups.units();
    let mut acc = 0f32;
    for (group, xs) in groups.zip(x.chunks(usize::from(t.params().group_size))) {
        let grid = group.record.grid;
        let (mut cx, mut sx) = (0f32, 0f32);
        for (i, &xi) in xs.iter().enumerate() {
            cx += f32::from(code_at(group.codes, group.start + i, bits)) * xi;
            sx += xi;
        }
        acc += cx * grid.step + sx * grid.min;
        for p in group.outliers() {
            if let Some(&xp) = xs.get(p) {
                let c = code_at(group.codes, group.start + p, bits);
                acc += xp * (units.outlier(c, bits) - grid.decode(c));
            }
        }
    }
    Ok(acc)
}

/// The portable reference of the int8-activation dot product of a v2 row.
pub(crate) fn dot_row_q8(t: &PackedTensor<'_>, r: usize, a: &Q8Activations<'_>) -> Result<f32> {
    let bits = t.params().bits;
    let groups = t.affine_groups(r)?;
    let units = *groups.units();
    let mut acc = 0f32;
    for ((gi, group), qs) in groups
        .enumerate()
        .zip(a.q().chunks(usize::from(t.params().group_size)))
    {
        let grid = group.record.grid;
        let sx = a.scales()[gi];
        let mut isum = 0i32;
        for (i, &qi) in qs.iter().enumerate() {
            isum += i32::from(code_at(group.codes, group.start + i, bits)) * i32::from(qi);
        }
        // The activation scale multiplies first, as in version 1 (no overflow near the
        // format's bound).
        let mut corr = 0f32;
        for p in group.outliers() {
            if let Some(&qp) = qs.get(p) {
                let c = code_at(group.codes, group.start + p, bits);
                corr += (sx * f32::from(qp)) * (units.outlier(c, bits) - grid.decode(c));
            }
        }
        acc += (sx * grid.step) * isum as f32 + (sx * grid.min) * a.sums()[gi] as f32 + corr;
    }
    Ok(acc)
}

/// `S = Σ_i |x_i|·(|c_i·d + m| + [outlier]·(|outlier value| + |c_i·d + m|))` of a v2 row,
/// with the number of outliers: what [`dot_tolerance`](super::dot_tolerance) scales.
pub(crate) fn dot_magnitude(t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<(f64, usize)> {
    let bits = t.params().bits;
    let groups = t.affine_groups(r)?;
    let units = *groups.units();
    let (mut s, mut n_outliers) = (0f64, 0);
    for (group, xs) in groups.zip(x.chunks(usize::from(t.params().group_size))) {
        let grid = group.record.grid;
        // |c·d| + |m| bounds every partial sum of the two-term formula.
        let dense = |c: u8| f64::from(c) * f64::from(grid.step) + f64::from(grid.min.abs());
        for (i, &xi) in xs.iter().enumerate() {
            s += f64::from(xi.abs()) * dense(code_at(group.codes, group.start + i, bits));
        }
        for p in group.outliers() {
            if let Some(&xp) = xs.get(p) {
                let c = code_at(group.codes, group.start + p, bits);
                s += f64::from(xp.abs()) * (f64::from(units.outlier(c, bits).abs()) + dense(c));
            }
        }
        n_outliers += group.record.count;
    }
    Ok((s, n_outliers))
}
