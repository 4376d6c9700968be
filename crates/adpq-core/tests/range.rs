//! The edges of the numeric range: tensors too small for the format are refused instead
//! of silently zeroed, the reader bounds what a buffer may decode to, and the error bound
//! holds at the top of the f16 and of the accepted f32 range.

use adpq_core::format::{checksum, MAX_DECODED_ABS};
use adpq_core::harness::{check_roundtrip, decode_finite};
use adpq_core::quant::MIN_MAX_ABS;
use adpq_core::{
    bf16, f16, packed_len, AnyKernels, CpuKernels, Error, FormatError, Grid, PackedTensor, Params,
    QuantizePlan, Scalar, Weights,
};

fn quantize(w: Weights<'_>, rows: usize, cols: usize, params: &Params) -> Result<Vec<u8>, Error> {
    let sel = adpq_core::select_tensor(&Scalar, w, rows, cols, params)?;
    let mut buf = vec![0u8; packed_len(rows, cols, params.format(), sel.n_outliers)?];
    adpq_core::quantize_tensor(&Scalar, w, rows, cols, params, &sel, &mut buf)?;
    Ok(buf)
}

/// A smooth pattern with both signs and a spread of magnitudes, largest `scale`.
fn pattern(n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let v = ((i * 37 % 101) as f32 - 50.0) / 50.0;
            v * scale
        })
        .collect()
}

fn every_params() -> Vec<Params> {
    let mut v = Vec::new();
    for bits in 2..=8 {
        for grid in [Grid::Symmetric, Grid::Asymmetric] {
            for alpha in [0.0, 0.06, 0.5] {
                v.push(Params::new(bits, 64, alpha, grid).unwrap());
            }
        }
    }
    v
}

/// All-subnormal tensors (F32 and BF16, ~1e-40) and ~1e-38 ones were quantized to zeros
/// or lost part of their energy (the step exponent is clamped at -102). Every path and
/// kernel set now refuses them with `Error::TooSmall`, naming the largest magnitude.
#[test]
fn tensors_below_the_range_are_refused() {
    let (rows, cols) = (3, 100);
    for scale in [1e-40f32, 1e-38, 1e-35, MIN_MAX_ABS * 0.99] {
        let w = pattern(rows * cols, scale);
        let max_abs = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        let bf: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let bf_max = bf.iter().fold(0f32, |m, v| m.max(v.to_f32().abs()));
        for params in every_params() {
            for k in AnyKernels::available() {
                assert_eq!(
                    adpq_core::select_tensor(&k, Weights::F32(&w), rows, cols, &params),
                    Err(Error::TooSmall { max_abs }),
                    "{scale:e} on {}",
                    k.name()
                );
                assert_eq!(
                    adpq_core::select_tensor(&k, Weights::Bf16(&bf), rows, cols, &params),
                    Err(Error::TooSmall { max_abs: bf_max }),
                    "bf16 {scale:e} on {}",
                    k.name()
                );
            }
        }
    }
    // The reference mode too.
    let w = pattern(rows * cols, 1e-40);
    let reference = Params::V1
        .with_selection(adpq_core::SelectionMode::Reference { n_iters: 20 })
        .unwrap();
    assert!(matches!(
        adpq_core::select_tensor(&Scalar, Weights::F32(&w), rows, cols, &reference),
        Err(Error::TooSmall { .. })
    ));
    let msg = Error::TooSmall { max_abs: 1e-40 }.to_string();
    assert!(
        msg.contains("2^-100") && msg.contains("unquantized"),
        "{msg}"
    );
}

/// A selection made elsewhere (a parallel or device engine) is held to the same range.
#[test]
fn a_plan_refuses_a_selection_below_the_range() {
    let (rows, cols) = (2, 64);
    let w = pattern(rows * cols, 1.0);
    let p = Params::V1;
    let mut sel = adpq_core::select_tensor(&Scalar, Weights::F32(&w), rows, cols, &p).unwrap();
    sel.max_abs_bits = 1e-40f32.to_bits();
    assert_eq!(
        QuantizePlan::new(rows, cols, &p, &sel, rows),
        Err(Error::TooSmall { max_abs: 1e-40 })
    );
}

/// All zeros stay accepted (exact), and so does the smallest accepted magnitude, which
/// keeps its energy: the relative error is that of the same tensor at an ordinary scale.
#[test]
fn zeros_and_the_smallest_accepted_tensors_quantize_faithfully() {
    let (rows, cols) = (4, 256);
    let zeros = vec![0f32; rows * cols];
    let buf = quantize(Weights::F32(&zeros), rows, cols, &Params::V1).unwrap();
    let t = PackedTensor::parse(&buf).unwrap();
    let mut back = vec![1f32; rows * cols];
    Scalar.dequantize_rows(&t, 0, &mut back).unwrap();
    assert!(back.iter().all(|&v| v == 0.0));

    let relative_error = |w: &[f32], params: &Params| {
        let buf = quantize(Weights::F32(w), rows, cols, params).unwrap();
        let t = PackedTensor::parse(&buf).unwrap();
        check_roundtrip(&t, w);
        let mut back = vec![0f32; rows * cols];
        Scalar.dequantize_rows(&t, 0, &mut back).unwrap();
        let (mut err, mut energy) = (0f64, 0f64);
        for (&a, &b) in w.iter().zip(&back) {
            err += (f64::from(a) - f64::from(b)).powi(2);
            energy += f64::from(a).powi(2);
        }
        err / energy
    };
    let ordinary = pattern(rows * cols, 1.0);
    for params in every_params() {
        let base = relative_error(&ordinary, &params);
        // Exactly representable scalings: same relative error up to f16 rounding of steps.
        let tiny: Vec<f32> = ordinary.iter().map(|&v| v * MIN_MAX_ABS).collect();
        let small = relative_error(&tiny, &params);
        assert!(
            small <= base * 1.05 + 1e-12,
            "{params:?}: relative squared error {small:e} at 2^-100 vs {base:e} at 1"
        );
    }
}

/// Rewrites a packed buffer's scale exponent, every inlier step and the CRC, as a
/// hostile writer could.
fn forge(buf: &[u8], scale_exp: i8, h_in: u16) -> Vec<u8> {
    let mut b = buf.to_vec();
    b[12] = scale_exp as u8;
    let t = PackedTensor::parse_skip_checksum(buf).unwrap();
    let records_at = 64 + 4 * (t.rows() + 1);
    let stride = t.params().record_bytes();
    let records = t.rows() * t.cols().div_ceil(usize::from(t.params().group_size));
    for i in 0..records {
        let at = records_at + i * stride;
        b[at..at + 2].copy_from_slice(&h_in.to_le_bytes());
    }
    let crc = checksum(&b);
    b[56..60].copy_from_slice(&crc.to_le_bytes());
    b
}

/// A buffer with a valid CRC and every field in its documented range (e = 111,
/// h = 65504, 8-bit codes) decoded to inf. The parser now bounds the largest decodable
/// magnitude at 2^126 and names the group.
#[test]
fn buffers_that_would_decode_to_inf_are_refused() {
    let (rows, cols) = (2, 64);
    let w = pattern(rows * cols, 1.0);
    for grid in [Grid::Symmetric, Grid::Asymmetric] {
        let p = Params::new(8, 64, 0.0, grid).unwrap();
        let honest = quantize(Weights::F32(&w), rows, cols, &p).unwrap();
        let hostile = forge(&honest, 111, f16::MAX.to_bits());
        // What such a group decoded to before: 128 (or up to 255) steps of 65504 · 2^111.
        assert!((f16::MAX.to_f32() * 2f32.powi(111) * 128.0).is_infinite());
        assert_eq!(
            PackedTensor::parse(&hostile).unwrap_err(),
            Error::Format(FormatError::BadGroup {
                row: 0,
                group: 0,
                what: "a code decodes above 2^126 in magnitude"
            })
        );
        decode_finite(&hostile);
    }
    // At the bound exactly: 8-bit symmetric codes reach 128 = 2^7 steps from the offset,
    // so at e = 111 a step of h = 256 decodes to at most 2^126 (accepted), h = 257 beyond.
    let p = Params::new(8, 64, 0.0, Grid::Symmetric).unwrap();
    let honest = quantize(Weights::F32(&w), rows, cols, &p).unwrap();
    let edge = forge(&honest, 111, f16::from_f32(256.0).to_bits());
    let t = PackedTensor::parse(&edge).unwrap();
    let mut back = vec![0f32; rows * cols];
    Scalar.dequantize_rows(&t, 0, &mut back).unwrap();
    assert!(back
        .iter()
        .all(|v| v.is_finite() && v.abs() <= MAX_DECODED_ABS));
    decode_finite(&edge);
    let beyond = forge(&honest, 111, f16::from_f32(257.0).to_bits());
    assert!(matches!(
        PackedTensor::parse(&beyond),
        Err(Error::Format(FormatError::BadGroup {
            row: 0,
            group: 0,
            ..
        }))
    ));
}

/// The largest weights accepted (the largest f32 below 2^124, and ±65504 from an F16
/// checkpoint) reconstruct within the documented bound, decode finite, and dot finite.
#[test]
fn the_error_bound_holds_at_the_top_of_the_range() {
    let (rows, cols) = (2, 64);
    let top = f32::from_bits(adpq_core::select::OUT_OF_RANGE_BITS - 1);
    for hi in [top, 65504.0] {
        let mut w = pattern(rows * cols, hi);
        w[3] = hi;
        w[70] = -hi;
        w[71] = hi;
        for params in every_params() {
            let buf = quantize(Weights::F32(&w), rows, cols, &params).unwrap();
            let t = PackedTensor::parse(&buf).unwrap();
            check_roundtrip(&t, &w);
            decode_finite(&buf);
        }
    }
    // From F16 input: ±65504 itself, alone and in a tensor.
    let w16: Vec<f16> = (0..rows * cols)
        .map(|i| match i % 3 {
            0 => f16::MAX,
            1 => f16::MIN,
            _ => f16::from_f32((i as f32 - 60.0) * 100.0),
        })
        .collect();
    let w32: Vec<f32> = w16.iter().map(|v| v.to_f32()).collect();
    for params in every_params() {
        let buf = quantize(Weights::F16(&w16), rows, cols, &params).unwrap();
        let t = PackedTensor::parse(&buf).unwrap();
        check_roundtrip(&t, &w32);
        decode_finite(&buf);
    }
}

/// At the edges of the accepted range every kernel set writes the scalar oracle's bytes
/// (the SIMD kernels share the grid arithmetic of `quant.rs`).
#[test]
fn edge_tensors_pack_identically_on_every_kernel_set() {
    let (rows, cols) = (3, 200);
    let top = f32::from_bits(adpq_core::select::OUT_OF_RANGE_BITS - 1);
    for scale in [MIN_MAX_ABS, MIN_MAX_ABS * 3.0, 65504.0, top] {
        let w = pattern(rows * cols, scale);
        for params in every_params() {
            let want = quantize(Weights::F32(&w), rows, cols, &params).unwrap();
            for k in AnyKernels::available() {
                let sel =
                    adpq_core::select_tensor(&k, Weights::F32(&w), rows, cols, &params).unwrap();
                let mut buf = vec![0u8; want.len()];
                adpq_core::quantize_tensor(
                    &k,
                    Weights::F32(&w),
                    rows,
                    cols,
                    &params,
                    &sel,
                    &mut buf,
                )
                .unwrap();
                assert!(buf == want, "{} at {scale:e}, {params:?}", k.name());
            }
        }
    }
}

/// Int8-activation dot products on an accepted buffer whose inlier steps sit at the
/// format's bound (4-bit codes, g 128, so the SIMD fast path runs too) were inf: they
/// formed `q · Δ` (up to 127 · 2^123) before the activation scale. They scale first now
/// and stay finite; `decode_finite` asserts it (with f32 dots, on every kernel set).
#[test]
fn int8_dots_stay_finite_at_the_decoding_bound() {
    let (rows, cols) = (3, 300); // a short last group too
    let w = pattern(rows * cols, 1.0);
    let p = Params::new(4, 128, 0.06, Grid::Symmetric).unwrap();
    let honest = quantize(Weights::F32(&w), rows, cols, &p).unwrap();
    // 4-bit symmetric codes reach 8 steps from the offset: h = 2^15 at e = 108 decodes
    // to at most 2^126, the largest the parser accepts (the outlier steps, below 2^15 in
    // units of 2^e by construction, stay under it too).
    let edge = forge(&honest, 108, f16::from_f32(32768.0).to_bits());
    let t = PackedTensor::parse(&edge).unwrap();
    assert!(t.n_outliers() > 0);
    let x: Vec<f32> = (0..cols)
        .map(|i| if i % 3 == 0 { 1e-3 } else { -1e-3 })
        .collect();
    let groups = cols.div_ceil(128);
    let (mut q, mut sc, mut su) = (vec![0i8; cols], vec![0f32; groups], vec![0i32; groups]);
    let a = adpq_core::Q8Activations::quantize(&x, 128, &mut q, &mut sc, &mut su).unwrap();
    for kernels in adpq_core::AnyKernels::available() {
        for r in 0..rows {
            let y = kernels.dot_row_q8(&t, r, &a).unwrap();
            assert!(y.is_finite(), "{} row {r}: {y}", kernels.name());
        }
    }
    decode_finite(&edge);
}
