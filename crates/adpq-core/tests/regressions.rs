//! Inputs the fuzz targets (`fuzz/`, `cargo xtask fuzz`) once failed on, replayed through
//! the same harness functions so they stay fixed.

use adpq_core::{CpuKernels, Error, FormatError, PackedTensor, Scalar};

/// `parse_packed` found a structurally valid buffer (bad CRC, so only
/// `parse_skip_checksum` accepted it) with 8-bit asymmetric grids and steps near 1e36:
/// every dequantized value of row 1 was finite, but their sum exceeded `f32::MAX`, so the
/// fused dot product overflowed (`inf − inf` in the per-group form gives NaN). The
/// harness asserted "NaN dot ⇒ some dequantized value is non-finite", which f32
/// arithmetic does not promise; it now checks the dot product against the dequantized
/// row whenever the fused form cannot overflow, and accepts overflow otherwise.
///
/// Since the reader bounds what a code may decode to (2^126, `MAX_DECODED_ABS`), this
/// buffer is refused outright: its grids reach about 255 steps of 1e36.
#[test]
fn parse_packed_dot_overflow_on_finite_values() {
    let data = include_bytes!("data/fuzz/parse_packed-dot-overflow.adpq");
    adpq_core::harness::parse_packed(data);
    adpq_core::harness::decode_finite(data);

    assert!(PackedTensor::parse(data).is_err(), "the CRC is wrong");
    let err = PackedTensor::parse_skip_checksum(data).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Format(FormatError::BadGroup {
                what: "a code decodes above 2^126 in magnitude",
                ..
            })
        ),
        "{err:?}"
    );
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
    let p = Params::V1;
    let sel = adpq_core::select_tensor(&Scalar, Weights::F32(&w), rows, cols, &p).unwrap();
    let mut buf = vec![0u8; packed_len(rows, cols, p.format(), sel.n_outliers).unwrap()];
    adpq_core::quantize_tensor(&Scalar, Weights::F32(&w), rows, cols, &p, &sel, &mut buf).unwrap();
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
    let p = Params::V1;
    let sel = adpq_core::select_tensor(&Scalar, Weights::F32(&w), rows, cols, &p).unwrap();
    let mut buf = vec![0u8; packed_len(rows, cols, p.format(), sel.n_outliers).unwrap()];
    adpq_core::quantize_tensor(&Scalar, Weights::F32(&w), rows, cols, &p, &sel, &mut buf).unwrap();
    let t = PackedTensor::parse(&buf).unwrap();
    let mut back = vec![0f32; cols];
    Scalar.dequantize_rows(&t, 0, &mut back).unwrap();
    let x = vec![1.0f32; cols];
    let y = Scalar.dot_row(&t, 0, &x).unwrap();
    adpq_core::harness::check_dot(&t, 0, &x, &back, y + 0.5);
}

/// `selection`'s first finding was in its oracle: a rejected weight was reported with
/// its magnitude (`inf`) where the kernels rightly report its value (`-inf`). The oracle
/// now keeps the signed values; the selection error names the value as given.
#[test]
fn selection_reports_a_rejected_weight_with_its_sign() {
    use adpq_core::harness::{selection, InputType};
    use adpq_core::{Params, Weights};
    for ty in [InputType::F32, InputType::F16, InputType::Bf16] {
        selection(&[0.5, f32::NEG_INFINITY, -3.0e38], ty, 2, 5, 0.06);
    }
    let w = [0.5f32, f32::NEG_INFINITY];
    assert!(matches!(
        adpq_core::select_tensor(&Scalar, Weights::F32(&w), 1, 2, &Params::V1),
        Err(Error::NonFinite { row: 0, col: 1, value }) if value == f32::NEG_INFINITY
    ));
}

/// The selection harness passes on ordinary and tie-heavy tensors of every input type
/// (its oracle agrees with every path), and on the edges of the range.
#[test]
fn selection_harness_accepts_exact_selections() {
    use adpq_core::harness::{selection, InputType};
    let ties: Vec<f32> = (0..37).map(|i| ((i % 7) as f32 - 3.0) / 4.0).collect();
    let edges = [65504.0, -65504.0, 1e-40, 0.0, -0.0, 5.96e-8, 2.126_764_6e37];
    for ty in [InputType::F32, InputType::F16, InputType::Bf16] {
        for alpha in [0.0, 0.06, 0.3, 0.5] {
            selection(&ties, ty, 5, 33, alpha);
            selection(&edges, ty, 3, 7, alpha);
            selection(&[1e-40, -2e-41], ty, 2, 3, alpha);
        }
    }
}

/// The `selection` target's large inputs replicate a pattern of at most 512 values to
/// 2^20+ weights. With few distinct magnitudes the sampled path declines (its bracket
/// holds too many ties) and the passes run; with a few hundred it is taken. The seed
/// `f32_big_distinct` is such a pattern: this checks it takes the sampled path and that
/// the harness accepts it.
#[test]
fn selection_harness_reaches_the_sampled_path() {
    use adpq_core::harness::{selection, InputType};
    use adpq_core::{Params, Weights};
    // As gen_seeds writes it: ±(i + 1) · 2^-7.
    let pattern: Vec<f32> = (0..500)
        .map(|i| (i + 1) as f32 * if i % 2 == 0 { 1.0 } else { -1.0 } / 128.0)
        .collect();
    let (rows, cols) = (1024, 1024);
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| pattern[i % pattern.len()])
        .collect();
    let sel = adpq_core::select_tensor(&Scalar, Weights::F32(&w), rows, cols, &Params::V1).unwrap();
    assert_eq!(sel.passes, 1, "the sampled path");
    selection(&pattern, InputType::F32, rows, cols, 0.06);
}

/// Issue 14's hostile v2 buffer: an honest tensor with the header's exponent raised by 60
/// and every row's outlier step zeroed, CRC fixed. The parser accepts it (nothing in a
/// buffer ties an inlier grid to the threshold); its inliers decode to about 10¹⁶ while
/// the threshold still fits F16. Narrowing to F16 used to saturate every such inlier
/// (an infinite bound "since the threshold fits"): now a value saturates only within its
/// own grid's quantization error, which the harness invariant checks for every dtype.
#[test]
fn hostile_v2_inliers_do_not_saturate() {
    use adpq_core::narrow::write_rows;
    use adpq_core::{packed_len, OutDtype, Params, Weights};
    let (rows, cols) = (16, 128);
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 300.0)
        .collect();
    let p = Params::V2;
    let sel = adpq_core::select_tensor(&Scalar, Weights::F32(&w), rows, cols, &p).unwrap();
    let mut buf = vec![0u8; packed_len(rows, cols, p.format(), sel.n_outliers).unwrap()];
    adpq_core::quantize_tensor(&Scalar, Weights::F32(&w), rows, cols, &p, &sel, &mut buf).unwrap();
    let (records_at, row_bytes) = {
        let t = PackedTensor::parse(&buf).unwrap();
        let l = t.layout();
        (l.records_at(), l.row_record_bytes())
    };
    buf[12] = (buf[12] as i8 + 60) as u8;
    for r in 0..rows {
        let units = records_at + r * row_bytes;
        buf[units + 4..units + 6].fill(0);
    }
    let crc = adpq_core::format::checksum(&buf);
    buf[56..60].copy_from_slice(&crc.to_le_bytes());

    let t = PackedTensor::parse(&buf).expect("accepted");
    assert!(t.info().threshold <= OutDtype::F16.max_finite());
    let mut back = vec![0f32; rows * cols];
    Scalar.dequantize_rows(&t, 0, &mut back).unwrap();
    assert!(back.iter().any(|v| v.abs() > 1e15));
    adpq_core::harness::parse_packed(&buf);
    let mut out = vec![0u8; rows * cols * 2];
    assert!(matches!(
        write_rows(&t, 0, &back, OutDtype::F16, &mut out),
        Err(Error::NotRepresentable { .. })
    ));
    let mut out = vec![0u8; rows * cols * 4];
    write_rows(&t, 0, &back, OutDtype::F32, &mut out).unwrap();
}
