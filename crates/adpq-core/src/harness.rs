//! Entry points for fuzz targets and property tests (needs `std`).
//!
//! Each function checks the core's invariants on arbitrary input and panics only when an
//! invariant is broken, which is what a fuzzer reports.

use std::vec;

use crate::backend::{Backend, Scalar};
use crate::format::{packed_len, PackedTensor};
use crate::params::{Grid, Params, SelectionMode};
use crate::weights::Weights;

/// Parses arbitrary bytes; whatever is accepted must dequantize and dot without error.
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
        let x = vec![1.0f32; t.cols()];
        for r in 0..t.rows() {
            let y = Scalar.dot_row(&t, r, &x).expect("accepted buffer must dot");
            assert!(
                !y.is_nan()
                    || out[r * t.cols()..(r + 1) * t.cols()]
                        .iter()
                        .any(|v| !v.is_finite())
            );
        }
    }
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
    let Ok(params) = Params::new(bits, group_size, alpha, grid) else {
        return;
    };
    let params = params.with_selection(SelectionMode::Exact);
    let (rows, cols) = (rows.max(1), cols.max(1));
    if values.is_empty() || rows * cols > 1 << 16 {
        return;
    }
    let w: std::vec::Vec<f32> = (0..rows * cols).map(|i| values[i % values.len()]).collect();
    let backend = Scalar;
    let sel = match backend.select(Weights::F32(&w), rows, cols, &params) {
        Ok(s) => s,
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
    backend
        .quantize(Weights::F32(&w), rows, cols, &params, &sel, &mut buf)
        .unwrap();
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
    let ulp = (half::f16::from_bits(grid.h + 1).to_f32() - h.to_f32())
        * crate::quant::pow2(i32::from(scale_exp));
    (grid.step * 0.5 + code_max as f32 * ulp * 0.5) * (1.0 + 1e-5) + f32::MIN_POSITIVE
}

/// The outlier flags of a packed tensor, row-major.
pub fn outlier_mask(t: &PackedTensor<'_>) -> std::vec::Vec<bool> {
    let (rows, cols) = (t.rows(), t.cols());
    let g = usize::from(t.params().group_size);
    let pb = t.layout().position_bits;
    let mut mask = vec![false; rows * cols];
    for r in 0..rows {
        let row = t.row(r).unwrap();
        let mut next = row.first_outlier;
        for gi in 0..cols.div_ceil(g) {
            let rec = t.record(&row, gi);
            for k in next..next + rec.count {
                let p = crate::bits::get_bits(row.positions, k * pb as usize, pb) as usize;
                mask[r * cols + gi * g + p] = true;
            }
            next += rec.count;
        }
    }
    mask
}
