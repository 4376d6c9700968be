//! Whatever the parser accepts decodes to finite numbers, on every kernel set.

use std::vec::Vec;

use super::check_dot;
use crate::format::{PackedTensor, MAX_DECODED_ABS};
use crate::kernels::{dot_row_q8_ref, dot_tolerance, AnyKernels, CpuKernels, Q8Activations};
use crate::Scalar;

/// Parses `data` (checksum skipped, so that the fuzzer reaches the structure); when it is
/// accepted, checks with every kernel set of the host:
/// - every dequantized value is finite and at most [`MAX_DECODED_ABS`], bit-identical
///   across kernel sets;
/// - for activations whose absolute sum is 1/2 (signs matched to the weights, one spike,
///   alternating), `dot_row` and `gemv` are finite and within
///   [`dot_tolerance`] of the scalar oracle, which agrees with the dequantized row;
/// - with int8 activations ([`Q8Activations`]), `dot_row_q8` and `gemv_q8` are finite and
///   within the tolerance of the f32 dot product.
pub fn decode_finite(data: &[u8]) {
    let Ok(t) = PackedTensor::parse_skip_checksum(data) else {
        return;
    };
    let (rows, cols) = (t.rows(), t.cols());
    // Keep the fuzzer's memory bounded: the buffer is at least ~n/4 bytes anyway.
    if rows * cols > 1 << 20 {
        return;
    }
    let mut back = std::vec![0f32; rows * cols];
    Scalar.dequantize_rows(&t, 0, &mut back).unwrap();
    for (i, v) in back.iter().enumerate() {
        assert!(
            v.is_finite() && v.abs() <= MAX_DECODED_ABS,
            "weight {i} decodes to {v}"
        );
    }
    for kernels in AnyKernels::available().skip(1) {
        let mut other = std::vec![f32::NAN; rows * cols];
        kernels.dequantize_rows(&t, 0, &mut other).unwrap();
        assert!(
            back.iter()
                .zip(&other)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{} dequantizes differently",
            kernels.name()
        );
    }
    for x in activations(&back, cols) {
        check_dots(&t, &back, &x);
    }
}

/// Three activation vectors with `Σ|x| = 1/2` (or all zero).
fn activations(back: &[f32], cols: usize) -> [Vec<f32>; 3] {
    let c = 0.5 / cols as f32;
    // Signs of row 0: every product positive, the largest sum the row allows.
    let matched = back[..cols]
        .iter()
        .map(|&v| if v < 0.0 { -c } else { c })
        .collect();
    let largest = (0..cols)
        .max_by(|&a, &b| back[a].abs().total_cmp(&back[b].abs()))
        .unwrap_or(0);
    let spike = (0..cols)
        .map(|i| if i == largest { 0.5 } else { 0.0 })
        .collect();
    let alternating = (0..cols).map(|i| if i % 2 == 0 { c } else { -c }).collect();
    [matched, spike, alternating]
}

/// Dot products and gemv, f32 and int8 activations, on every kernel set.
fn check_dots(t: &PackedTensor<'_>, back: &[f32], x: &[f32]) {
    let (rows, cols) = (t.rows(), t.cols());
    let mut scalar = std::vec![0f32; rows];
    for (r, y) in scalar.iter_mut().enumerate() {
        *y = Scalar.dot_row(t, r, x).unwrap();
        assert!(y.is_finite(), "row {r}: scalar dot {y}");
        check_dot(t, r, x, &back[r * cols..(r + 1) * cols], *y);
    }
    let g = t.params().group_size;
    let groups = cols.div_ceil(usize::from(g));
    let (mut q, mut sc, mut su) = (
        std::vec![0i8; cols],
        std::vec![0f32; groups],
        std::vec![0i32; groups],
    );
    let a = Q8Activations::quantize_for(t, x, &mut q, &mut sc, &mut su).unwrap();
    let mut xh = std::vec![0f32; cols];
    a.dequantize(&mut xh);
    // The values the int8 dot multiplies by, back in the tensor's own basis.
    if let Some(rot) = t.info().rotation {
        rot.inverse(&mut xh);
    }
    for kernels in AnyKernels::available() {
        let name = kernels.name();
        let mut y = std::vec![0f32; rows];
        kernels.gemv(t, x, &mut y).unwrap();
        let mut yq = std::vec![0f32; rows];
        kernels.gemv_q8(t, &a, &mut yq).unwrap();
        for r in 0..rows {
            let tol = dot_tolerance(t, r, x).unwrap();
            let d = kernels.dot_row(t, r, x).unwrap();
            for (what, v) in [("dot", d), ("gemv", y[r])] {
                assert!(
                    v.is_finite() && (v - scalar[r]).abs() <= tol,
                    "{name} {what} row {r}: {v} vs {}, tolerance {tol}",
                    scalar[r]
                );
            }
            let dq = kernels.dot_row_q8(t, r, &a).unwrap();
            let slack = super::v3::rotation_slack(t, &back[r * cols..(r + 1) * cols], &xh);
            let tol = dot_tolerance(t, r, &xh).unwrap() + slack as f32;
            let f32_dot = Scalar.dot_row(t, r, &xh).unwrap();
            let reference = dot_row_q8_ref(t, r, &a).unwrap();
            for (what, v) in [
                ("q8 reference", reference),
                ("q8 dot", dq),
                ("q8 gemv", yq[r]),
            ] {
                assert!(
                    v.is_finite() && (v - f32_dot).abs() <= 2.0 * tol,
                    "{name} {what} row {r}: {v} vs {f32_dot}, tolerance {tol}"
                );
            }
        }
    }
}
