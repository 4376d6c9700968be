//! The scalar oracle for format v3: quantizing rotated rows, dequantizing them, and dot
//! products, and the oracle the SIMD kernels (`kernels/simd/*_v3.rs`) are tested against.
//!
//! A row is worked one rotation segment at a time ([`MAX_SEGMENT`] columns in a stack
//! buffer): rotated, then coded group by group with v2's range search
//! ([`search_group`]) on v3's 6-bit fields and, at 4 bits, the code book. Dot products
//! rotate the activations' segment the same way; a group never straddles two segments.

use super::{check_activations, check_gemv_out, RowJob, RowsDone, RowsOut};
use crate::affine::{search_group, AffineGrid, GroupPasses, LaneSums, RefitSums, RowUnits};
use crate::error::{Error, Result};
use crate::format::record_v3::{decode_record, write_record, write_units};
use crate::format::{code_at, put_code, PackedTensor};
use crate::kernels::rows::RowsV2;
use crate::kernels::scalar_v2::RowExtent;
use crate::params::{FormatParams, CODEBOOK_4BIT};
use crate::quant::round_ties_even;
use crate::rotate::{Rotation, MAX_SEGMENT};
use crate::select::{is_valid_abs_bits, BadValue};
use crate::weights::Element;

/// Midpoints between consecutive code book levels: a value above `MIDPOINTS[k]` is
/// nearer level `k + 1` than level `k` (ties go to the lower level).
pub(crate) const MIDPOINTS: [f32; 15] = {
    let mut m = [0f32; 15];
    let mut k = 0;
    while k < 15 {
        // (T[k] + T[k+1]) / 16: exact in f32.
        m[k] = (CODEBOOK_4BIT[k] as u32 + CODEBOOK_4BIT[k + 1] as u32) as f32 / 16.0;
        k += 1;
    }
    m
};

/// The code of `w` on `grid`: the nearest level to `(w − m)/d` on `[0, code_max]`
/// (uniform: round half to even; code book: the nearest of the 16 levels, ties low).
#[inline(always)]
pub(crate) fn encode(grid: &AffineGrid, w: f32, fp: &FormatParams) -> u8 {
    let u = ((w - grid.min) * grid.inv).clamp(0.0, fp.code_max() as f32);
    if fp.uses_codebook() {
        MIDPOINTS.iter().map(|&m| u8::from(u > m)).sum()
    } else {
        round_ties_even(u) as u8
    }
}

/// The scalar passes over one (rotated) group.
pub(crate) struct PassesV3<'g> {
    pub(crate) vals: &'g [f32],
    pub(crate) fp: FormatParams,
}

impl GroupPasses for PassesV3<'_> {
    fn error(&mut self, grid: &AffineGrid) -> f32 {
        let mut sums = LaneSums::default();
        for (i, &x) in self.vals.iter().enumerate() {
            let level = self.fp.level(encode(grid, x, &self.fp));
            let e = grid.decode_level(level) - x;
            sums.add(i, e * e);
        }
        sums.total()
    }

    fn refit_sums(&mut self, grid: &AffineGrid) -> RefitSums {
        let mut s = RefitSums::default();
        for (i, &x) in self.vals.iter().enumerate() {
            let c = self.fp.level(encode(grid, x, &self.fp));
            s.n += 1;
            s.c.add(i, c);
            s.cc.add(i, c * c);
            s.w.add(i, x);
            s.cw.add(i, c * x);
        }
        s
    }
}

/// Loads columns `start..start + n` of `row` into `buf` as f32 (rotated when the tensor
/// is), rejecting a weight no format may hold.
#[inline(always)]
pub(crate) fn load_segment<T: Element>(
    row: &[T],
    start: usize,
    buf: &mut [f32; MAX_SEGMENT],
    rotation: Option<&Rotation>,
    job: &RowJob,
    r: usize,
) -> Result<usize> {
    let seg = &row[start..(start + MAX_SEGMENT).min(row.len())];
    for (i, (&v, d)) in seg.iter().zip(buf.iter_mut()).enumerate() {
        if !is_valid_abs_bits(v.abs_bits()) {
            let cols = job.cols as u64;
            return Err(BadValue {
                index: (job.first_row + r as u64) * cols + (start + i) as u64,
                value: v.to_f32(),
            }
            .into_error(0, cols));
        }
        *d = v.to_f32();
    }
    if let Some(rot) = rotation {
        rot.forward_at(start, &mut buf[..seg.len()]);
    }
    Ok(seg.len())
}

/// `[min(x, 0), max(x, 0)]` of a group.
#[inline(always)]
fn range(xs: &[f32]) -> (f32, f32) {
    xs.iter()
        .fold((0f32, 0f32), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

/// Quantizes whole rows into format v3 (scalar oracle).
pub(crate) fn quantize_rows<T: Element>(
    s: &[T],
    job: &RowJob,
    out: &mut RowsOut<'_>,
) -> Result<RowsDone> {
    let walk = RowsV2::new(s.len(), job, out)?;
    out.records.fill(0);
    let fp = job.params;
    let cols = job.cols;
    let g = usize::from(fp.group_size);
    let rotation = job.rotation.as_ref();
    let mut buf = [0f32; MAX_SEGMENT];
    for r in 0..walk.rows {
        let row = &s[r * cols..(r + 1) * cols];
        // Pass 1: the extent of the row's rotated groups.
        let mut extent = RowExtent::default();
        for start in (0..cols).step_by(MAX_SEGMENT) {
            let n = load_segment(row, start, &mut buf, rotation, job, r)?;
            for chunk in buf[..n].chunks(g) {
                let (lo, hi) = range(chunk);
                extent.add_group(lo, hi, 0.0);
            }
        }
        let units = extent.units(job);
        let row_out = walk.row(out, r);
        write_units(row_out.records, &units);
        // Pass 2: each group's grid and codes.
        for start in (0..cols).step_by(MAX_SEGMENT) {
            let n = load_segment(row, start, &mut buf, rotation, job, r)?;
            for (k, chunk) in buf[..n].chunks(g).enumerate() {
                let (lo, hi) = range(chunk);
                let mut passes = PassesV3 { vals: chunk, fp };
                let grid = search_group(&mut passes, lo, hi, &units, &fp);
                let first = start + k * g;
                for (i, &x) in chunk.iter().enumerate() {
                    put_code(row_out.codes, first + i, fp.bits, encode(&grid, x, &fp));
                }
                write_record(row_out.records, first / g, &grid);
            }
        }
    }
    Ok(RowsDone::default())
}

/// The rotation of a v3 tensor's rows.
fn rotation_of(t: &PackedTensor<'_>) -> Option<Rotation> {
    t.info().rotation
}

/// Row `r`'s records, codes and units.
fn row_parts<'a>(t: &PackedTensor<'a>, r: usize) -> Result<(&'a [u8], &'a [u8], RowUnits)> {
    let row = t.row(r)?;
    let units = t.units_of(&row);
    Ok((row.records, row.codes, units))
}

/// Decodes the groups of columns `start..start + out.len()` of row `r` (in the rotated
/// basis).
#[inline(always)]
fn decode_segment(
    fp: &FormatParams,
    parts: &(&[u8], &[u8], RowUnits),
    start: usize,
    out: &mut [f32],
) {
    let (records, codes, units) = parts;
    let g = usize::from(fp.group_size);
    for (k, chunk) in out.chunks_mut(g).enumerate() {
        let first = start + k * g;
        let grid = decode_record(records, first / g, units);
        for (i, o) in chunk.iter_mut().enumerate() {
            *o = grid.decode_level(fp.level(code_at(codes, first + i, fp.bits)));
        }
    }
}

/// Dequantizes columns `start..start + out.len()` of row `r` of a v3 tensor (scalar
/// oracle; `start` and the piece's length whole rotation segments, or the piece reaching
/// the row's end): each group's levels, then the inverse rotation. Returns the outliers
/// decoded: none, v3 has no outlier split.
pub(crate) fn dequantize_cols(
    t: &PackedTensor<'_>,
    r: usize,
    start: usize,
    out: &mut [f32],
) -> Result<usize> {
    let fp = t.params();
    let parts = row_parts(t, r)?;
    decode_segment(&fp, &parts, start, out);
    if let Some(rot) = rotation_of(t) {
        rot.inverse_at(start, out);
    }
    Ok(0)
}

/// `Σ` over the groups of columns `start..start + x.len()` of a row of
/// `d·Σ L[c]·x + m·Σ x` (`x` in the rotated basis).
#[inline(always)]
fn dot_segment(
    fp: &FormatParams,
    parts: &(&[u8], &[u8], RowUnits),
    start: usize,
    x: &[f32],
) -> f32 {
    let (records, codes, units) = parts;
    let g = usize::from(fp.group_size);
    let mut acc = 0f32;
    for (k, xs) in x.chunks(g).enumerate() {
        let first = start + k * g;
        let grid = decode_record(records, first / g, units);
        let (mut lx, mut sx) = (0f32, 0f32);
        for (i, &xi) in xs.iter().enumerate() {
            lx += fp.level(code_at(codes, first + i, fp.bits)) * xi;
            sx += xi;
        }
        acc += lx * grid.step + sx * grid.min;
    }
    acc
}

/// The segment of `x` at `start` in the tensor's rotated basis, in `buf`.
#[inline(always)]
fn rotated_segment<'b>(
    rotation: Option<&Rotation>,
    x: &[f32],
    start: usize,
    buf: &'b mut [f32; MAX_SEGMENT],
) -> &'b [f32] {
    let seg = &x[start..(start + MAX_SEGMENT).min(x.len())];
    let b = &mut buf[..seg.len()];
    b.copy_from_slice(seg);
    if let Some(rot) = rotation {
        rot.forward_at(start, b);
    }
    b
}

/// Dot product of one v3 row with `x` (scalar oracle): `x` rotated one segment at a
/// time, then each group's `d·Σ L[c]·x + m·Σ x`, summed segment by segment.
pub(crate) fn dot_row(t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<f32> {
    check_activations(t, x)?;
    let fp = t.params();
    let parts = row_parts(t, r)?;
    let rotation = rotation_of(t);
    let mut buf = [0f32; MAX_SEGMENT];
    let mut acc = 0f32;
    for start in (0..x.len()).step_by(MAX_SEGMENT) {
        let xs = rotated_segment(rotation.as_ref(), x, start, &mut buf);
        acc += dot_segment(&fp, &parts, start, xs);
    }
    Ok(acc)
}

/// `y = W x` of a v3 tensor: each segment of `x` rotated once, then every row's share of
/// it (the same sums, in the same order, as [`dot_row`]).
pub(crate) fn gemv(t: &PackedTensor<'_>, x: &[f32], y: &mut [f32]) -> Result<()> {
    check_activations(t, x)?;
    check_gemv_out(t, y)?;
    let fp = t.params();
    let rotation = rotation_of(t);
    let mut buf = [0f32; MAX_SEGMENT];
    y.fill(0.0);
    for start in (0..x.len()).step_by(MAX_SEGMENT) {
        let xs = rotated_segment(rotation.as_ref(), x, start, &mut buf);
        for (r, out) in y.iter_mut().enumerate() {
            *out += dot_segment(&fp, &row_parts(t, r)?, start, xs);
        }
    }
    Ok(())
}

/// Checks that int8 activations were made for this tensor's basis
/// ([`Q8Activations::quantize_for`](super::Q8Activations::quantize_for)).
pub(crate) fn check_basis(t: &PackedTensor<'_>, rotation: Option<Rotation>) -> Result<()> {
    if rotation != rotation_of(t) {
        return Err(Error::Unsupported(
            "activations were quantized for another rotation than the tensor's",
        ));
    }
    Ok(())
}

/// The int8-activation dot product of a v3 row (`q` already in the rotated basis):
/// per group `s·d·Σ L[c]·q + s·m·Σ q`, the levels in eighths at 4 bits (exact integers).
pub(crate) fn dot_row_q8(
    t: &PackedTensor<'_>,
    r: usize,
    q: &[i8],
    scales: &[f32],
    sums: &[i32],
) -> Result<f32> {
    let fp = t.params();
    let (records, codes, units) = row_parts(t, r)?;
    let g = usize::from(fp.group_size);
    // Code book levels are integers in eighths.
    let (unit, level_of): (f32, fn(u8) -> i32) = if fp.uses_codebook() {
        (0.125, |c| i32::from(CODEBOOK_4BIT[usize::from(c & 15)]))
    } else {
        (1.0, i32::from)
    };
    let mut acc = 0f32;
    for (gi, qs) in q.chunks(g).enumerate() {
        let grid = decode_record(records, gi, &units);
        let mut isum = 0i32;
        for (i, &qi) in qs.iter().enumerate() {
            isum += level_of(code_at(codes, gi * g + i, fp.bits)) * i32::from(qi);
        }
        let sx = scales[gi];
        acc += (sx * (grid.step * unit)) * isum as f32 + (sx * grid.min) * sums[gi] as f32;
    }
    Ok(acc)
}

/// `S = Σ_i |x'_i|·(L[c_i]·d + |m|)` of a v3 row over its rotated activations `x'`:
/// what [`dot_tolerance`](super::dot_tolerance) scales.
pub(crate) fn dot_magnitude(t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<f64> {
    let fp = t.params();
    let parts = row_parts(t, r)?;
    let (records, codes, units) = &parts;
    let g = usize::from(fp.group_size);
    let rotation = rotation_of(t);
    let mut buf = [0f32; MAX_SEGMENT];
    let mut s = 0f64;
    for start in (0..x.len()).step_by(MAX_SEGMENT) {
        let xs = rotated_segment(rotation.as_ref(), x, start, &mut buf);
        for (k, chunk) in xs.chunks(g).enumerate() {
            let first = start + k * g;
            let grid = decode_record(records, first / g, units);
            for (i, &xi) in chunk.iter().enumerate() {
                let level = f64::from(fp.level(code_at(codes, first + i, fp.bits)));
                s += f64::from(xi.abs())
                    * (level * f64::from(grid.step) + f64::from(grid.min.abs()));
            }
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn midpoints_split_the_levels() {
        let fp = crate::Params::V3.format();
        for c in 0..16u8 {
            let units = RowUnits::from_stored([0x3c00, 0, 0], 0, f32::INFINITY);
            let grid = AffineGrid::new(1, 0, &units);
            // Each level encodes to itself, and a hair above a midpoint to the next.
            assert_eq!(encode(&grid, fp.level(c), &fp), c);
            if c < 15 {
                let m = MIDPOINTS[usize::from(c)];
                assert_eq!(encode(&grid, m, &fp), c);
                assert_eq!(encode(&grid, m + 1e-3, &fp), c + 1);
            }
        }
    }
}
