//! Property tests of the core: round trips, exact selection, the error bound, the format's
//! size formula and its rejection of corrupt buffers.

use adpq_core::harness::{check_roundtrip, outlier_mask};
use adpq_core::quant::MIN_MAX_ABS;
use adpq_core::select::target_count;
use adpq_core::{
    bf16, f16, packed_len, CpuKernels, Error, FormatError, Grid, PackedTensor, Params, Scalar,
    SelectionMode, Weights,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn quantize(w: Weights<'_>, rows: usize, cols: usize, params: &Params) -> Result<Vec<u8>, Error> {
    let sel = adpq_core::select_tensor(&Scalar, w, rows, cols, params)?;
    let mut buf = vec![0u8; packed_len(rows, cols, params.format(), sel.n_outliers)?];
    adpq_core::quantize_tensor(&Scalar, w, rows, cols, params, &sel, &mut buf)?;
    Ok(buf)
}

/// The size formula of docs/FORMAT.md, written out independently of the implementation.
fn formula_len(rows: u64, cols: u64, bits: u64, g: u64, asym: bool, k: u64) -> u64 {
    let record = 4 + if g < 256 { 1 } else { 2 } + if asym { 2 } else { 0 };
    let pos_bits = 64 - (g - 1).leading_zeros() as u64;
    64 + 4 * (rows + 1)
        + rows * cols.div_ceil(g) * record
        + rows * (cols * bits).div_ceil(8)
        + (k * pos_bits).div_ceil(8)
}

fn value_strategy() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -1.0f32..1.0,
        1 => -100.0f32..100.0,
        1 => Just(0.0f32),
        1 => prop::sample::select(vec![0.5f32, -0.5, 0.25, 1e-40, -1e-42, 3e30, -7e-20, 65504.0]),
    ]
}

fn params_strategy() -> impl Strategy<Value = Params> {
    (
        2u8..=8,
        prop::sample::select(vec![16u16, 32, 64, 100, 128, 255, 256, 1024]),
        prop_oneof![Just(0.0f64), Just(0.06), 0.0f64..=0.5, Just(0.5)],
        any::<bool>(),
    )
        .prop_map(|(bits, g, alpha, asym)| {
            Params::new(
                bits,
                g,
                alpha,
                if asym {
                    Grid::Asymmetric
                } else {
                    Grid::Symmetric
                },
            )
            .unwrap()
        })
}

proptest! {
    // Failing cases are saved beside this file (cargo runs tests from the package root)
    // and replayed first on later runs.
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("tests/props.proptest-regressions"))),
        .. ProptestConfig::default()
    })]

    /// Exactly k outliers, the k largest magnitudes, every weight within its bound, and a
    /// buffer of exactly the promised size that parses back to the same fields.
    #[test]
    fn roundtrip_invariants(
        rows in 1usize..12,
        cols in 1usize..700,
        params in params_strategy(),
        seed in prop::collection::vec(value_strategy(), 1..64),
    ) {
        let w: Vec<f32> = (0..rows * cols).map(|i| seed[(i * 7 + i / 3) % seed.len()] * (1.0 + (i % 13) as f32 / 64.0)).collect();
        // A nonzero tensor entirely below 2^-100 (the strategy's subnormals alone) is refused,
        // not quantized to zeros: the refusal is the invariant then.
        let max_abs = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        if max_abs > 0.0 && max_abs < MIN_MAX_ABS {
            prop_assert_eq!(quantize(Weights::F32(&w), rows, cols, &params), Err(Error::TooSmall { max_abs }));
            return Ok(());
        }
        let buf = quantize(Weights::F32(&w), rows, cols, &params).unwrap();
        let k = target_count(params.alpha(), (rows * cols) as u64);
        prop_assert_eq!(buf.len() as u64, formula_len(rows as u64, cols as u64, params.bits().into(), params.group_size().into(), params.grid() == Grid::Asymmetric, k));
        let t = PackedTensor::parse(&buf).unwrap();
        prop_assert_eq!((t.rows(), t.cols(), t.n_outliers()), (rows, cols, k));
        prop_assert_eq!(t.params(), params.format());
        prop_assert_eq!(t.info().alpha, params.alpha());
        check_roundtrip(&t, &w);
        // Deterministic: the same input gives the same bytes.
        prop_assert_eq!(quantize(Weights::F32(&w), rows, cols, &params).unwrap(), buf);
    }

    /// Ties at the threshold: exactly k outliers, the earliest ones in row-major order.
    #[test]
    fn ties_go_to_earliest(rows in 1usize..6, cols in 16usize..300, alpha in 0.0f64..=0.5, level in 1u8..4) {
        let w: Vec<f32> = (0..rows * cols).map(|i| if i % 5 == 0 { 0.5 } else { f32::from(level) * 0.125 }).collect();
        let params = Params::new(4, 64, alpha, Grid::Symmetric).unwrap();
        let buf = quantize(Weights::F32(&w), rows, cols, &params).unwrap();
        let t = PackedTensor::parse(&buf).unwrap();
        let mask = outlier_mask(&t);
        let k = target_count(alpha, (rows * cols) as u64) as usize;
        prop_assert_eq!(mask.iter().filter(|&&o| o).count(), k);
        // Reference order: larger magnitude first, then row-major index.
        let mut order: Vec<usize> = (0..w.len()).collect();
        order.sort_by(|&a, &b| w[b].abs().total_cmp(&w[a].abs()).then(a.cmp(&b)));
        let mut expected = vec![false; w.len()];
        for &i in &order[..k] { expected[i] = true; }
        prop_assert_eq!(mask, expected);
        check_roundtrip(&t, &w);
    }

    /// f16 and bf16 inputs give the same bytes as their exact f32 widening.
    #[test]
    fn half_inputs_match_f32(rows in 1usize..5, cols in 1usize..300, seed in prop::collection::vec(-4.0f32..4.0, 1..40)) {
        let w: Vec<f32> = (0..rows * cols).map(|i| seed[i % seed.len()] * (1.0 + i as f32 / 1000.0)).collect();
        let params = Params::V1;
        let h: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let hf: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
        prop_assert_eq!(quantize(Weights::F16(&h), rows, cols, &params).unwrap(), quantize(Weights::F32(&hf), rows, cols, &params).unwrap());
        let b: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let bf: Vec<f32> = b.iter().map(|v| v.to_f32()).collect();
        prop_assert_eq!(quantize(Weights::Bf16(&b), rows, cols, &params).unwrap(), quantize(Weights::F32(&bf), rows, cols, &params).unwrap());
    }

    /// Any single corrupted byte or truncation is rejected (never a panic).
    #[test]
    fn corruption_is_detected(pos in any::<prop::sample::Index>(), flip in 1u8..=255, cut in any::<prop::sample::Index>()) {
        let w: Vec<f32> = (0..3 * 200).map(|i| ((i * 29 % 97) as f32 - 48.0) / 10.0).collect();
        let buf = quantize(Weights::F32(&w), 3, 200, &Params::V1).unwrap();
        let mut bad = buf.clone();
        bad[pos.index(buf.len())] ^= flip;
        prop_assert!(PackedTensor::parse(&bad).is_err());
        let _ = PackedTensor::parse_skip_checksum(&bad);
        let short = &buf[..cut.index(buf.len())];
        prop_assert!(PackedTensor::parse(short).is_err());
    }

    /// The dot product equals the dot of the dequantized row (up to summation order).
    #[test]
    fn dot_matches_dequantized(rows in 1usize..6, cols in 1usize..600, params in params_strategy(), xs in prop::collection::vec(-2.0f32..2.0, 1..50)) {
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 300.0).collect();
        let buf = quantize(Weights::F32(&w), rows, cols, &params).unwrap();
        let t = PackedTensor::parse(&buf).unwrap();
        let x: Vec<f32> = (0..cols).map(|i| xs[i % xs.len()]).collect();
        let mut back = vec![0f32; rows * cols];
        Scalar.dequantize_rows(&t, 0, &mut back).unwrap();
        let mut y = vec![0f32; rows];
        Scalar.gemv(&t, &x, &mut y).unwrap();
        for r in 0..rows {
            let exact: f64 = back[r * cols..(r + 1) * cols].iter().zip(&x).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
            let scale: f64 = back[r * cols..(r + 1) * cols].iter().zip(&x).map(|(a, b)| (f64::from(*a) * f64::from(*b)).abs()).sum();
            prop_assert!((f64::from(y[r]) - exact).abs() <= 1e-5 * scale + 1e-6, "row {}: {} vs {}", r, y[r], exact);
        }
    }
}

#[test]
fn default_params_cost_at_most_4_8_bits_per_weight() {
    // A real 256×4096 quantization checks the formula; the formula gives 4096×4096.
    let (rows, cols) = (256usize, 4096usize);
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| ((i as u64 * 2654435761 % 10007) as f32 - 5003.0) / 5003.0)
        .collect();
    let buf = quantize(Weights::F32(&w), rows, cols, &Params::V1).unwrap();
    let k = target_count(0.06, (rows * cols) as u64);
    assert_eq!(
        buf.len() as u64,
        formula_len(rows as u64, cols as u64, 4, 128, false, k)
    );
    let n = 4096u64 * 4096;
    let bpw = 8.0 * formula_len(4096, 4096, 4, 128, false, target_count(0.06, n)) as f64 / n as f64;
    eprintln!("bits per weight at 4096x4096, b=4, g=128, alpha=0.06: {bpw:.4}");
    assert!(bpw <= 4.8, "{bpw}");
    assert!((bpw - 4.7403).abs() < 1e-3, "{bpw}");
}

#[test]
fn non_finite_weights_name_their_position() {
    let (rows, cols) = (3, 50);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut w = vec![0.1f32; rows * cols];
        w[2 * cols + 17] = bad;
        let err = adpq_core::select_tensor(&Scalar, Weights::F32(&w), rows, cols, &Params::V1)
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::NonFinite {
                    row: 2,
                    col: 17,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("row 2, column 17"), "{err}");
    }
    let mut w = vec![0.1f32; rows * cols];
    w[5] = 3e38;
    let err =
        adpq_core::select_tensor(&Scalar, Weights::F32(&w), rows, cols, &Params::V1).unwrap_err();
    assert!(
        matches!(err, Error::OutOfRange { row: 0, col: 5, .. }),
        "{err:?}"
    );
}

#[test]
fn degenerate_tensors_quantize() {
    // All zeros, the smallest accepted magnitudes, a single element, huge-but-valid
    // values. (Denormals only are refused: `tests/range.rs`.)
    let cases: Vec<(usize, usize, Vec<f32>)> = vec![
        (4, 130, vec![0.0; 520]),
        (2, 64, (0..128).map(|i| (i as f32) * 1e-32).collect()),
        (1, 1, vec![-3.5]),
        (3, 40, (0..120).map(|i| (i as f32 - 60.0) * 1e35).collect()),
    ];
    for (rows, cols, w) in cases {
        for grid in [Grid::Symmetric, Grid::Asymmetric] {
            for alpha in [0.0, 0.06, 0.5] {
                let params = Params::new(4, 128, alpha, grid).unwrap();
                let buf = quantize(Weights::F32(&w), rows, cols, &params).unwrap();
                let t = PackedTensor::parse(&buf).unwrap();
                check_roundtrip(&t, &w);
            }
        }
    }
}

#[test]
fn invalid_parameters_and_shapes_are_errors() {
    assert_eq!(
        Params::new(1, 128, 0.06, Grid::Symmetric),
        Err(Error::InvalidBits(1))
    );
    assert_eq!(
        Params::new(9, 128, 0.06, Grid::Symmetric),
        Err(Error::InvalidBits(9))
    );
    assert_eq!(
        Params::new(4, 8, 0.06, Grid::Symmetric),
        Err(Error::InvalidGroupSize(8))
    );
    assert!(matches!(
        Params::new(4, 128, 0.7, Grid::Symmetric),
        Err(Error::InvalidAlpha(_))
    ));
    assert!(matches!(
        Params::new(4, 128, f64::NAN, Grid::Symmetric),
        Err(Error::InvalidAlpha(_))
    ));
    let w = vec![0.5f32; 10];
    assert_eq!(
        adpq_core::select_tensor(&Scalar, Weights::F32(&w), 3, 4, &Params::V1).unwrap_err(),
        Error::ShapeMismatch {
            expected: 12,
            actual: 10
        }
    );
    assert_eq!(
        adpq_core::select_tensor(&Scalar, Weights::F32(&[]), 0, 4, &Params::V1).unwrap_err(),
        Error::EmptyTensor
    );
    // Invalid parameters cannot be made, so nothing downstream meets them.
    assert_eq!(
        Params::V1
            .with_selection(SelectionMode::Reference { n_iters: 0 })
            .unwrap_err(),
        Error::InvalidIterations(0)
    );
    // The reference cannot bracket α = 0; it is an error, not a panic.
    let p = Params::new(4, 16, 0.0, Grid::Symmetric)
        .unwrap()
        .with_selection(SelectionMode::Reference { n_iters: 100 })
        .unwrap();
    assert_eq!(
        adpq_core::select_tensor(&Scalar, Weights::F32(&w), 2, 5, &p).unwrap_err(),
        Error::NotBracketed
    );
    // Wrong output buffer size.
    let sel = adpq_core::select_tensor(&Scalar, Weights::F32(&w), 2, 5, &Params::V1).unwrap();
    let mut small = vec![0u8; 10];
    assert!(matches!(
        adpq_core::quantize_tensor(
            &Scalar,
            Weights::F32(&w),
            2,
            5,
            &Params::V1,
            &sel,
            &mut small
        ),
        Err(Error::BufferSize { .. })
    ));
}

#[test]
fn header_fields_are_validated() {
    let w: Vec<f32> = (0..2 * 64).map(|i| i as f32 / 64.0 - 1.0).collect();
    let buf = quantize(Weights::F32(&w), 2, 64, &Params::V1).unwrap();
    assert!(PackedTensor::parse(&buf).is_ok());
    let mut bad = buf.clone();
    bad[0] = b'X';
    assert_eq!(
        PackedTensor::parse(&bad).unwrap_err(),
        Error::Format(FormatError::BadMagic)
    );
    let mut bad = buf.clone();
    bad[4] = 9;
    assert_eq!(
        PackedTensor::parse(&bad).unwrap_err(),
        Error::Format(FormatError::UnsupportedVersion(9))
    );
    // Structural checks run even without the checksum: an out-of-range bits field.
    let mut bad = buf.clone();
    bad[8] = 12;
    assert!(matches!(
        PackedTensor::parse_skip_checksum(&bad),
        Err(Error::Format(FormatError::BadHeader(_)))
    ));
    // A header that lies about the length.
    let mut bad = buf.clone();
    bad[48] = bad[48].wrapping_add(1);
    assert!(PackedTensor::parse_skip_checksum(&bad).is_err());
    // Rows out of range are errors, not panics.
    let t = PackedTensor::parse(&buf).unwrap();
    assert!(matches!(
        t.row(2),
        Err(Error::RowOutOfRange { row: 2, rows: 2 })
    ));
    assert!(Scalar.dot_row(&t, 0, &[0.0; 3]).is_err());
    let mut out = vec![0f32; 64];
    assert!(Scalar.dequantize_rows(&t, 2, &mut out).is_err());
}
