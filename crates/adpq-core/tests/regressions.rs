//! Inputs the fuzz targets (`fuzz/`, `cargo xtask fuzz`) once failed on, replayed through
//! the same harness functions so they stay fixed.

use adpq_core::{CpuKernels, PackedTensor, Scalar};

/// `parse_packed` found a structurally valid buffer (bad CRC, so only
/// `parse_skip_checksum` accepts it) with 8-bit asymmetric grids and steps near 1e36:
/// every dequantized value of row 1 is finite, but their sum exceeds `f32::MAX`, so the
/// fused dot product overflows (`inf − inf` in the per-group form gives NaN). The
/// harness asserted "NaN dot ⇒ some dequantized value is non-finite", which f32
/// arithmetic does not promise. The harness now checks the dot product against the
/// dequantized row whenever the fused form cannot overflow, and accepts overflow
/// otherwise.
#[test]
fn parse_packed_dot_overflow_on_finite_values() {
    let data = include_bytes!("data/fuzz/parse_packed-dot-overflow.adpq");
    adpq_core::harness::parse_packed(data);

    // The input still reaches the dot product: structurally valid, finite values, and a
    // row whose exact dot product with ones does not fit in f32.
    assert!(PackedTensor::parse(data).is_err(), "the CRC is wrong");
    let t = PackedTensor::parse_skip_checksum(data).expect("structurally valid");
    let mut back = vec![0f32; t.rows() * t.cols()];
    Scalar.dequantize_rows(&t, 0, &mut back).unwrap();
    let row1 = &back[t.cols()..2 * t.cols()];
    assert!(row1.iter().all(|v| v.is_finite()));
    let exact: f64 = row1.iter().map(|&v| f64::from(v)).sum();
    assert!(exact.abs() > f64::from(f32::MAX));
    let y = Scalar.dot_row(&t, 1, &vec![1.0; t.cols()]).unwrap();
    assert!(!y.is_finite());
}

/// The harness's dot check is not vacuous: on an honest buffer it compares the fused dot
/// product with the dequantized row.
#[test]
fn check_dot_accepts_honest_buffers() {
    use adpq_core::{packed_len, Params, Weights};
    let (rows, cols) = (3, 200);
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 10.0)
        .collect();
    let p = Params::DEFAULT;
    let sel = Scalar.select(Weights::F32(&w), rows, cols, &p).unwrap();
    let mut buf = vec![0u8; packed_len(rows, cols, p.format(), sel.n_outliers).unwrap()];
    Scalar
        .quantize(Weights::F32(&w), rows, cols, &p, &sel, &mut buf)
        .unwrap();
    let t = PackedTensor::parse(&buf).unwrap();
    let mut back = vec![0f32; rows * cols];
    Scalar.dequantize_rows(&t, 0, &mut back).unwrap();
    let x: Vec<f32> = (0..cols).map(|i| (i % 5) as f32 - 2.0).collect();
    for r in 0..rows {
        let y = Scalar.dot_row(&t, r, &x).unwrap();
        adpq_core::harness::check_dot(&t, r, &x, &back[r * cols..(r + 1) * cols], y);
    }
    adpq_core::harness::parse_packed(&buf);
}

/// A wrong dot product is caught.
#[test]
#[should_panic(expected = "dot")]
fn check_dot_rejects_a_wrong_result() {
    use adpq_core::{packed_len, Params, Weights};
    let (rows, cols) = (1, 64);
    let w: Vec<f32> = (0..cols).map(|i| i as f32 / 7.0 - 4.0).collect();
    let p = Params::DEFAULT;
    let sel = Scalar.select(Weights::F32(&w), rows, cols, &p).unwrap();
    let mut buf = vec![0u8; packed_len(rows, cols, p.format(), sel.n_outliers).unwrap()];
    Scalar
        .quantize(Weights::F32(&w), rows, cols, &p, &sel, &mut buf)
        .unwrap();
    let t = PackedTensor::parse(&buf).unwrap();
    let mut back = vec![0f32; cols];
    Scalar.dequantize_rows(&t, 0, &mut back).unwrap();
    let x = vec![1.0f32; cols];
    let y = Scalar.dot_row(&t, 0, &x).unwrap();
    adpq_core::harness::check_dot(&t, 0, &x, &back, y + 0.5);
}
