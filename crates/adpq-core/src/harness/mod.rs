//! Entry points for fuzz targets and property tests (needs `std`).
//!
//! Each function checks the core's invariants on arbitrary input and panics only when an
//! invariant is broken, which is what a fuzzer reports.

use std::vec;

use crate::format::{packed_len, PackedTensor, Record, RowGroups};
use crate::kernels::{CpuKernels, Scalar};
use crate::params::{FormatVersion, Grid, ParamFields, Params, SelectionMode};
use crate::weights::Weights;

mod affine;
mod decode;
mod narrowing;
mod selection;
mod v3;

pub use decode::decode_finite;
pub use narrowing::check_narrowing;
pub use selection::{selection, InputType};

/// Parses arbitrary bytes; whatever is accepted must dequantize and dot without error,
/// and narrow to every output dtype by the saturation rule ([`check_narrowing`]).
pub fn parse_packed(data: &[u8]) {
    for parsed in [
        PackedTensor::parse(data),
        PackedTensor::parse_skip_checksum(data),
    ] {
        let Ok(t) = parsed else { continue };
        let n = t.rows() * t.cols();
        // Keep the fuzzer's memory bounded: the buffer is at least ~n/4 bytes anyway.
        if n > 1 << 22 {
            continue;
        }
        let mut out = vec![0f32; n];
        Scalar
            .dequantize_rows(&t, 0, &mut out)
            .expect("accepted buffer must dequantize");
        check_narrowing(&t, &out, &outlier_mask(&t));
        let cols = t.cols();
        // Alternating signs, so positive and negative terms meet in the sums.
        let x: std::vec::Vec<f32> = (0..cols)
            .map(|i| if i % 3 == 2 { -0.5 } else { 1.0 })
            .collect();
        for r in 0..t.rows() {
            let y = Scalar.dot_row(&t, r, &x).expect("accepted buffer must dot");
            check_dot(&t, r, &x, &out[r * cols..(r + 1) * cols], y);
        }
    }
}

/// Checks the fused dot product `y` of row `r` with `x` against the dequantized row
/// `back`.
///
/// The fused form computes, per group, `Δ_in · Σ (code − z_in) · x` over every code and
/// then `x_p · (decode_out(c) − decode_in(c))` at each outlier. When no term or partial sum
/// of that form can exceed `f32::MAX` (checked in f64), `y` must be finite and equal
/// `Σ back · x` up to f32 rounding. Otherwise `y` may be ±inf or NaN (`inf − inf`) even
/// though every dequantized value is finite: a buffer with huge steps (valid, if never
/// written by an honest quantizer) makes the arithmetic overflow, which is not a
/// violation.
pub fn check_dot(t: &PackedTensor<'_>, r: usize, x: &[f32], back: &[f32], y: f32) {
    let fp = t.params();
    // Σ of the magnitudes of every term of the fused form: bounds all its partial sums.
    let magnitude = match t.version() {
        FormatVersion::V1 => fused_magnitude_v1(t, r, x),
        FormatVersion::V2 => affine::fused_magnitude(t, r, x),
        FormatVersion::V3 => v3::fused_magnitude(t, r, x, back),
    };
    // Leave room for rounding on the way (each step rounds by at most 2^-24 relative).
    if magnitude >= f64::from(f32::MAX) * 0.5 {
        return;
    }
    let exact: f64 = back
        .iter()
        .zip(x)
        .map(|(&v, &xi)| f64::from(v) * f64::from(xi))
        .sum();
    // Every rounding error is at most 2^-24 of a partial sum, and the partial sums are
    // bounded by `magnitude`; a few roundings per term, `cols` terms plus the groups'.
    let ops = 4.0 * (x.len() + 2 * x.len().div_ceil(usize::from(fp.group_size))) as f64;
    let tol = ops * f64::from(f32::EPSILON) * magnitude + f64::from(f32::MIN_POSITIVE);
    assert!(
        y.is_finite() && (f64::from(y) - exact).abs() <= tol,
        "row {r}: dot {y} but the dequantized row gives {exact} (tolerance {tol})"
    );
}

/// The magnitude of every term of version 1's fused dot product of row `r` with `x`.
fn fused_magnitude_v1(t: &PackedTensor<'_>, r: usize, x: &[f32]) -> f64 {
    let fp = t.params();
    let bits = u32::from(fp.bits);
    let code =
        |codes: &[u8], i: usize| crate::bits::get_bits(codes, i * bits as usize, bits) as i32;
    let mut magnitude = 0f64;
    for (group, xs) in t
        .groups(r)
        .unwrap()
        .zip(x.chunks(usize::from(fp.group_size)))
    {
        let rec = group.record;
        let mut dense = 0f64;
        for (i, &xi) in xs.iter().enumerate() {
            dense += (f64::from(code(group.codes, group.start + i) - rec.inliers.offset)
                * f64::from(xi))
            .abs();
        }
        magnitude += dense * f64::from(rec.inliers.step);
        for p in group.outliers() {
            let c = code(group.codes, group.start + p);
            let out = f64::from(c - rec.outliers.offset) * f64::from(rec.outliers.step);
            let inl = f64::from(c - rec.inliers.offset) * f64::from(rec.inliers.step);
            magnitude += f64::from(xs[p]).abs() * (out.abs() + inl.abs());
        }
    }
    magnitude
}

/// Structured round trip: quantize, pack, parse, dequantize, and check the invariants:
/// exactly `k` outliers, the outliers are the `k` largest magnitudes, every weight is
/// within half a step of its grid, and the buffer is the size `packed_len` promised.
pub fn roundtrip(
    rows: usize,
    cols: usize,
    values: &[f32],
    bits: u8,
    group_size: u16,
    alpha: f64,
    asymmetric: bool,
) {
    let grid = if asymmetric {
        Grid::Asymmetric
    } else {
        Grid::Symmetric
    };
    roundtrip_with(
        rows,
        cols,
        values,
        bits,
        group_size,
        alpha,
        grid,
        FormatVersion::V1,
    );
}

/// [`roundtrip`] in format v2 (asymmetric inliers; group sizes above 255 are refused).
pub fn roundtrip_v2(
    rows: usize,
    cols: usize,
    values: &[f32],
    bits: u8,
    group_size: u16,
    alpha: f64,
) {
    let grid = Grid::Asymmetric;
    roundtrip_with(
        rows,
        cols,
        values,
        bits,
        group_size,
        alpha,
        grid,
        FormatVersion::V2,
    );
}

/// [`roundtrip`] in format v3 (rotated rows, no outliers; group sizes that are not a
/// power of two or above 512 are refused).
pub fn roundtrip_v3(rows: usize, cols: usize, values: &[f32], bits: u8, group_size: u16) {
    roundtrip_with(
        rows,
        cols,
        values,
        bits,
        group_size,
        0.0,
        Grid::Asymmetric,
        FormatVersion::V3,
    );
}

#[allow(clippy::too_many_arguments)]
fn roundtrip_with(
    rows: usize,
    cols: usize,
    values: &[f32],
    bits: u8,
    group_size: u16,
    alpha: f64,
    grid: Grid,
    version: FormatVersion,
) {
    let Ok(params) = Params::new(bits, group_size, alpha, grid) else {
        return;
    };
    let Ok(params) = ParamFields {
        version,
        selection: SelectionMode::Exact,
        ..params.fields()
    }
    .validate() else {
        match version {
            FormatVersion::V2 => assert!(group_size > 255 || grid != Grid::Asymmetric),
            FormatVersion::V3 => assert!(
                !group_size.is_power_of_two() || group_size > 512 || grid != Grid::Asymmetric
            ),
            FormatVersion::V1 => panic!("valid v1 parameters refused"),
        }
        return;
    };
    let (rows, cols) = (rows.max(1), cols.max(1));
    if values.is_empty() || rows * cols > 1 << 16 {
        return;
    }
    let w: std::vec::Vec<f32> = (0..rows * cols).map(|i| values[i % values.len()]).collect();
    let backend = Scalar;
    let sel = match crate::select_tensor(&backend, Weights::F32(&w), rows, cols, &params) {
        Ok(s) => s,
        Err(crate::Error::TooSmall { max_abs }) => {
            let max = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(max > 0.0 && max < crate::quant::MIN_MAX_ABS && max == max_abs);
            return;
        }
        Err(_) => {
            assert!(w
                .iter()
                .any(|v| !v.is_finite() || v.abs() >= 2f32.powi(124)));
            return;
        }
    };
    let k = crate::select::target_count(alpha, (rows * cols) as u64);
    assert_eq!(sel.n_outliers, k);
    let len = packed_len(rows, cols, params.format(), sel.n_outliers).unwrap();
    let mut buf = vec![0u8; len];
    let quantized = crate::quantize_tensor(
        &backend,
        Weights::F32(&w),
        rows,
        cols,
        &params,
        &sel,
        &mut buf,
    );
    if version == FormatVersion::V3 && sel.max_abs() > 2f32.powi(116) {
        // Rotation could grow such weights beyond what a buffer may decode to.
        assert!(matches!(quantized, Err(crate::Error::Unsupported(_))));
        return;
    }
    quantized.unwrap();
    let t = PackedTensor::parse(&buf).expect("own output must parse");
    assert_eq!(t.n_outliers(), k);
    check_roundtrip(&t, &w);
}

/// Checks a packed tensor against the weights it was made from: outlier set and error
/// bound. Panics on a violation.
pub fn check_roundtrip(t: &PackedTensor<'_>, w: &[f32]) {
    let (rows, cols) = (t.rows(), t.cols());
    let mut back = vec![0f32; rows * cols];
    Scalar.dequantize_rows(t, 0, &mut back).unwrap();
    let is_out = outlier_mask(t);
    let k = t.n_outliers() as usize;
    assert_eq!(is_out.iter().filter(|&&o| o).count(), k);
    // Outliers are the k largest magnitudes: min |outlier| >= max |inlier|.
    let min_out = w
        .iter()
        .zip(&is_out)
        .filter(|(_, &o)| o)
        .map(|(v, _)| v.abs())
        .fold(f32::INFINITY, f32::min);
    let max_in = w
        .iter()
        .zip(&is_out)
        .filter(|(_, &o)| !o)
        .map(|(v, _)| v.abs())
        .fold(0f32, f32::max);
    assert!(
        k == 0 || min_out >= max_in,
        "outlier {min_out} below inlier {max_in}"
    );
    match t.version() {
        FormatVersion::V1 => {}
        FormatVersion::V2 => return affine::check_nearest(t, w, &back, &is_out),
        FormatVersion::V3 => return v3::check_nearest(t, w, &back),
    }
    let g = usize::from(t.params().group_size);
    for r in 0..rows {
        let row = t.row(r).unwrap();
        for gi in 0..cols.div_ceil(g) {
            let rec = t.record(&row, gi);
            for i in gi * g..((gi + 1) * g).min(cols) {
                let idx = r * cols + i;
                let grid = if is_out[idx] {
                    rec.outliers
                } else {
                    rec.inliers
                };
                let err = (back[idx] - w[idx]).abs();
                let bound = error_bound(&grid, t.params().code_max(), t.info().scale_exp);
                assert!(
                    err <= bound,
                    "row {r} col {i}: |{} - {}| = {err} > {bound}",
                    back[idx],
                    w[idx]
                );
            }
        }
    }
}

/// The largest reconstruction error a member of `grid` may have: half a step plus the
/// f16 rounding of the step at the clamped end of the range (`code_max` steps away).
pub fn error_bound(grid: &crate::quant::GridScale, code_max: i32, scale_exp: i8) -> f32 {
    let h = half::f16::from_bits(grid.h);
    // The spacing of f16 values at `h` (below it at f16::MAX, whose successor is inf).
    let ulp = if h == half::f16::MAX {
        h.to_f32() - half::f16::from_bits(grid.h - 1).to_f32()
    } else {
        half::f16::from_bits(grid.h + 1).to_f32() - h.to_f32()
    };
    let ulp = ulp * crate::quant::pow2(i32::from(scale_exp));
    (grid.step * 0.5 + code_max as f32 * ulp * 0.5) * (1.0 + 1e-5) + f32::MIN_POSITIVE
}

/// The outlier flags of a packed tensor, row-major.
pub fn outlier_mask(t: &PackedTensor<'_>) -> std::vec::Vec<bool> {
    let (rows, cols) = (t.rows(), t.cols());
    let mut mask = vec![false; rows * cols];
    for (r, row) in mask.chunks_mut(cols).enumerate() {
        match t.version() {
            FormatVersion::V1 => mark_outliers(t.groups(r).unwrap(), row),
            FormatVersion::V2 => mark_outliers(t.affine_groups(r).unwrap(), row),
            FormatVersion::V3 => {}
        }
    }
    mask
}

/// Sets the flags of a row's outliers.
fn mark_outliers<R: Record>(groups: RowGroups<'_, R>, row: &mut [bool]) {
    for group in groups {
        for p in group.outliers() {
            row[group.start + p] = true;
        }
    }
}
