//! Format v2 end to end on the scalar oracle and every kernel set: quantize, parse,
//! dequantize, dot products, and what the search buys over version 1.

use adpq_core::harness::{decode_finite, parse_packed, roundtrip_v2};
use adpq_core::{
    kernels::dot_tolerance, packed_len, AnyKernels, CpuKernels, Error, FormatError, FormatVersion,
    Grid, PackedTensor, ParamFields, Params, Scalar, Weights,
};
use proptest::prelude::*;

/// Deterministic heavy-tailed weights (a few large ones per row, like LLM projections).
fn weights(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..rows * cols)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = ((s >> 40) as f32 + 0.5) / (1u64 << 24) as f32;
            let z = (u - 0.5) * 0.1;
            if (s >> 20).is_multiple_of(97) {
                z * 30.0
            } else {
                z + 0.01 * ((s >> 12) % 7) as f32 / 7.0
            }
        })
        .collect()
}

fn quantize<K: CpuKernels>(k: &K, w: &[f32], rows: usize, cols: usize, p: &Params) -> Vec<u8> {
    let sel = adpq_core::select_tensor(k, Weights::F32(w), rows, cols, p).unwrap();
    let mut buf = vec![0u8; packed_len(rows, cols, p.format(), sel.n_outliers).unwrap()];
    adpq_core::quantize_tensor(k, Weights::F32(w), rows, cols, p, &sel, &mut buf).unwrap();
    buf
}

fn rel_mse(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let den: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum();
    num / den
}

#[test]
fn v2_roundtrips_and_beats_v1() {
    for (rows, cols) in [(8, 576), (5, 200), (3, 17), (16, 1536)] {
        let w = weights(rows, cols, (rows * cols) as u64);
        let p2 = Params::V2;
        let buf = quantize(&Scalar, &w, rows, cols, &p2);
        let t = PackedTensor::parse(&buf).unwrap();
        assert_eq!(t.version(), FormatVersion::V2);
        let mut back = vec![0f32; rows * cols];
        Scalar.dequantize_rows(&t, 0, &mut back).unwrap();
        let e2 = rel_mse(&w, &back);

        let p1 = ParamFields {
            group_size: 64,
            alpha: 0.05,
            ..Params::V1.fields()
        }
        .validate()
        .unwrap();
        let buf1 = quantize(&Scalar, &w, rows, cols, &p1);
        let t1 = PackedTensor::parse(&buf1).unwrap();
        let mut back1 = vec![0f32; rows * cols];
        Scalar.dequantize_rows(&t1, 0, &mut back1).unwrap();
        let e1 = rel_mse(&w, &back1);
        assert!(e2 < e1, "{rows}x{cols}: v2 {e2} vs v1 {e1}");

        // Every kernel set writes the oracle's bytes and agrees on dot products.
        let k = AnyKernels::detect();
        assert_eq!(quantize(&k, &w, rows, cols, &p2), buf);
        let x: Vec<f32> = (0..cols)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 9.0)
            .collect();
        for r in 0..rows {
            let want: f32 = back[r * cols..(r + 1) * cols]
                .iter()
                .zip(&x)
                .map(|(a, b)| a * b)
                .sum();
            let got = k.dot_row(&t, r, &x).unwrap();
            let tol = dot_tolerance(&t, r, &x).unwrap();
            let oracle = Scalar.dot_row(&t, r, &x).unwrap();
            assert!(
                (got - oracle).abs() <= tol,
                "row {r}: {got} vs {oracle} (tol {tol})"
            );
            assert!(
                (oracle - want).abs() <= 1e-3 * want.abs().max(1.0),
                "{oracle} vs {want}"
            );
        }
        eprintln!("{rows}x{cols}: rel-MSE v2 {e2:.3e}, v1 {e1:.3e}");
    }
}

/// The size formula of format v2 (docs/FORMAT.md), written out independently.
fn formula_len(rows: u64, cols: u64, bits: u64, g: u64, k: u64) -> u64 {
    let pos_bits = 64 - (g - 1).leading_zeros() as u64;
    64 + 4 * (rows + 1)
        + rows * (6 + 3 * cols.div_ceil(g))
        + rows * (cols * bits).div_ceil(8)
        + (k * pos_bits).div_ceil(8)
}

fn value_strategy() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -1.0f32..1.0,
        1 => -100.0f32..100.0,
        1 => Just(0.0f32),
        1 => prop::sample::select(vec![0.5f32, -0.5, 0.25, -0.25, 1e-30, 3e30, -7e-20, 65504.0]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Exactly k outliers, the k largest; every weight decodes to the nearest value its
    /// grid holds; the buffer parses and has the documented size.
    #[test]
    fn v2_roundtrip_invariants(
        rows in 1usize..5,
        cols in 1usize..300,
        values in prop::collection::vec(value_strategy(), 1..400),
        bits in 2u8..=8,
        g in prop::sample::select(vec![16u16, 17, 32, 64, 100, 128, 255]),
        alpha in prop_oneof![Just(0.0f64), Just(0.05), 0.0f64..=0.5],
    ) {
        roundtrip_v2(rows, cols, &values, bits, g, alpha);
        let w: Vec<f32> = (0..rows * cols).map(|i| values[i % values.len()]).collect();
        let p = ParamFields { bits, group_size: g, alpha, ..Params::V2.fields()
}
.validate().unwrap();
        let buf = quantize(&Scalar, &w, rows, cols, &p);
        let k = PackedTensor::parse(&buf).unwrap().n_outliers();
        prop_assert_eq!(
            buf.len() as u64,
            formula_len(rows as u64, cols as u64, u64::from(bits), u64::from(g), k)
        );
        // Whatever the parser accepts decodes finitely and dots within tolerance.
        parse_packed(&buf);
        decode_finite(&buf);
    }

    /// Flipping any byte of a v2 buffer is caught: by the checksum, or (checksum
    /// skipped) by the structure checks, or the buffer still decodes finitely.
    #[test]
    fn v2_corruption_is_caught(at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let (rows, cols) = (3, 100);
        let w = weights(rows, cols, 7);
        let mut buf = quantize(&Scalar, &w, rows, cols, &Params::V2);
        let i = at.index(buf.len());
        buf[i] ^= flip;
        prop_assert!(PackedTensor::parse(&buf).is_err());
        parse_packed(&buf);
        decode_finite(&buf);
    }
}

/// A valid v2 buffer with one field changed and the checksum recomputed.
fn tampered(edit: impl FnOnce(&mut Vec<u8>)) -> Result<(), Error> {
    let (rows, cols) = (2, 130);
    let w = weights(rows, cols, 3);
    let mut buf = quantize(&Scalar, &w, rows, cols, &Params::V2);
    edit(&mut buf);
    let crc = adpq_core::format::checksum(&buf);
    buf[56..60].copy_from_slice(&crc.to_le_bytes());
    PackedTensor::parse(&buf).map(|_| ())
}

/// Where row `r`'s records start in a `2 × 130`, g 64 v2 buffer: 64 + 4·3 header and
/// offsets, then `6 + 3·3` bytes per row.
fn records_at(r: usize) -> usize {
    64 + 12 + r * 15
}

#[test]
fn v2_hostile_fields_are_refused_with_their_reason() {
    assert!(tampered(|_| {}).is_ok());
    let bad_row = |e: Result<(), Error>| match e {
        Err(Error::Format(FormatError::BadRow { what, .. })) => what,
        other => panic!("expected a bad row, got {other:?}"),
    };
    // A NaN, an infinite and a negative unit.
    for h in [0x7E00u16, 0x7C00, 0x8001] {
        let what = bad_row(tampered(|b| {
            b[records_at(1)..records_at(1) + 2].copy_from_slice(&h.to_le_bytes())
        }));
        assert!(what.contains("negative, infinite or NaN"), "{what}");
    }
    // An outlier step in a row without outliers (row 0 of this tensor has none).
    let w: Vec<f32> = (0..260)
        .map(|i| if i == 200 { 9.0 } else { 0.01 * (i % 7) as f32 })
        .collect();
    let p = ParamFields {
        alpha: 1.0 / 260.0,
        ..Params::V2.fields()
    }
    .validate()
    .unwrap();
    let mut buf = quantize(&Scalar, &w, 2, 130, &p);
    assert!(PackedTensor::parse(&buf).is_ok());
    buf[records_at(0) + 4] = 1;
    let crc = adpq_core::format::checksum(&buf);
    buf[56..60].copy_from_slice(&crc.to_le_bytes());
    let what = bad_row(PackedTensor::parse(&buf).map(|_| ()));
    assert!(what.contains("row without outliers"), "{what}");
    // A group count above the group length.
    let e = tampered(|b| b[records_at(0) + 6 + 2] = 65);
    assert!(
        matches!(e, Err(Error::Format(FormatError::BadGroup { .. }))),
        "{e:?}"
    );
    // Version 2 with a symmetric grid, or with groups of 256.
    for (at, v) in [(9usize, 0u8), (11, 1)] {
        let e = tampered(|b| b[at] = v);
        assert!(
            matches!(e, Err(Error::Format(FormatError::BadHeader(_)))),
            "byte {at} = {v}: {e:?}"
        );
    }
    // An infinite threshold in a tensor with outliers.
    let e = tampered(|b| b[32..36].copy_from_slice(&f32::INFINITY.to_le_bytes()));
    assert!(
        matches!(e, Err(Error::Format(FormatError::BadHeader("threshold")))),
        "{e:?}"
    );
    // Units large enough to decode above 2^126.
    let what = bad_row(tampered(|b| b[12] = 111)); // the scale exponent
    assert!(what.contains("above 2^126"), "{what}");
}

#[test]
fn v2_params_are_checked() {
    let sym = ParamFields {
        grid: Grid::Symmetric,
        ..Params::V2.fields()
    };
    assert!(matches!(sym.validate(), Err(Error::Unsupported(_))));
    let wide = ParamFields {
        group_size: 256,
        ..Params::V2.fields()
    };
    assert!(matches!(wide.validate(), Err(Error::Unsupported(_))));
    assert_eq!(Params::V2.fields().validate(), Ok(Params::V2));
    // v2's preset (the CLI's `--format v2`): α 0.04, and 6 bits, α 0.05 for v_proj.
    assert_eq!(Params::V2_PRESET.version(), FormatVersion::V2);
    assert_eq!(Params::V2_PRESET.alpha(), 0.04);
    let v = Params::v2_for("model.layers.3.self_attn.v_proj.weight");
    assert_eq!((v.bits(), v.alpha(), v.group_size()), (6, 0.05, 64));
    assert_eq!(
        Params::v2_for("model.layers.3.mlp.up_proj.weight"),
        Params::V2_PRESET
    );
    // The library's defaults are the CLI's (src/policy.rs holds the preset to them):
    // format v3, with preset v3's per-name bits.
    assert_eq!(Params::default(), Params::DEFAULT);
    assert_eq!(Params::DEFAULT, Params::V3);
    let v = Params::default_for("model.layers.3.self_attn.v_proj.weight");
    assert_eq!(
        (v.version(), v.bits(), v.group_size()),
        (FormatVersion::V3, 6, 128)
    );
    assert_eq!(
        Params::default_for("model.layers.3.self_attn.q_proj.weight"),
        Params::V3
    );
}

#[test]
fn v2_groups_are_read_with_their_own_accessor() {
    let w = weights(2, 64, 1);
    let buf = quantize(&Scalar, &w, 2, 64, &Params::V2);
    let t = PackedTensor::parse(&buf).unwrap();
    assert!(matches!(t.groups(0), Err(Error::Unsupported(_))));
    assert_eq!(t.affine_groups(1).unwrap().count(), 1);
    let v1 = quantize(&Scalar, &w, 2, 64, &Params::V1);
    let t1 = PackedTensor::parse(&v1).unwrap();
    assert!(matches!(t1.affine_groups(0), Err(Error::Unsupported(_))));
}

/// f16 and bf16 inputs quantize like their f32 values.
#[test]
fn v2_half_inputs_match_f32() {
    let (rows, cols) = (4, 190);
    let w = weights(rows, cols, 11);
    let h: Vec<adpq_core::f16> = w.iter().map(|&v| adpq_core::f16::from_f32(v)).collect();
    let back: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
    let p = Params::V2;
    let via_f32 = quantize(&Scalar, &back, rows, cols, &p);
    let sel = adpq_core::select_tensor(&Scalar, Weights::F16(&h), rows, cols, &p).unwrap();
    let mut buf = vec![0u8; packed_len(rows, cols, p.format(), sel.n_outliers).unwrap()];
    adpq_core::quantize_tensor(&Scalar, Weights::F16(&h), rows, cols, &p, &sel, &mut buf).unwrap();
    assert_eq!(buf, via_f32);
}

/// The fuzz seeds (both versions) pass the harness: they parse, decode finitely on every
/// kernel set, and dot within tolerance.
#[test]
fn fuzz_seeds_pass_the_harness() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/seeds");
    let mut v2 = 0;
    for target in ["parse_packed", "decode_finite"] {
        for entry in std::fs::read_dir(format!("{root}/{target}")).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let t = PackedTensor::parse(&bytes).expect("seeds are valid buffers");
            v2 += usize::from(t.version() == FormatVersion::V2);
            parse_packed(&bytes);
            decode_finite(&bytes);
        }
    }
    assert!(v2 >= 20, "only {v2} v2 seeds");
}

/// Found by the roundtrip fuzz target: a row with no inliers has a zero extent whose sign
/// depends on how the compiler lowers `f32::max(0.0, -0.0)`; its units must still be +0.
#[test]
fn v2_rows_without_inliers_store_positive_zero_units() {
    roundtrip_v2(4, 1097, &[1.0], 2, 16, 0.5);
    roundtrip_v2(2, 40, &[-1.0, 1.0], 4, 16, 0.5);
}

/// Found by the roundtrip fuzz target: with half the weights −0 and half +0, selection
/// takes zeros as outliers at threshold 0, and a −0 outlier decodes to −0 (its sign bit
/// kept): the harness must compare sign bits, not `v < 0`.
#[test]
fn v2_negative_zero_outliers_keep_their_sign() {
    roundtrip_v2(1, 985, &[-0.0, 0.0], 6, 32, 0.5);
}

/// The int8 dot products of many rows at once (`gemv_q8`, `gemv_q8_rows` from any first
/// row, blocks of rows and their remainders) are `dot_row_q8`'s bits, row by row, and
/// within the tolerance of the reference; at every width but 4 bits (whose groups of 64
/// add their outlier corrections in lanes) the reference's bits.
#[test]
fn q8_rows_equal_the_row_dots() {
    use adpq_core::kernels::{dot_row_q8_ref, Q8Activations};
    let rows = 11;
    let shapes = [(64u16, 576), (64, 100), (128, 1536), (32, 96)];
    for (bits, (g, cols)) in [3u8, 4, 5, 6, 7, 8]
        .into_iter()
        .flat_map(|b| shapes.map(|s| (b, s)))
    {
        let w = weights(rows, cols, 7);
        let p = ParamFields {
            group_size: g,
            bits,
            ..Params::V2.fields()
        }
        .validate()
        .unwrap();
        let buf = quantize(&Scalar, &w, rows, cols, &p);
        let t = PackedTensor::parse(&buf).unwrap();
        let x: Vec<f32> = (0..cols)
            .map(|i| ((i * 7 % 31) as f32 - 15.0) / 4.0)
            .collect();
        let groups = cols.div_ceil(usize::from(g));
        let (mut q, mut sc, mut su) = (vec![0i8; cols], vec![0f32; groups], vec![0i32; groups]);
        let a = Q8Activations::quantize_for(&t, &x, &mut q, &mut sc, &mut su).unwrap();
        let mut xh = vec![0f32; cols];
        a.dequantize(&mut xh);
        for k in AnyKernels::available() {
            let ctx = format!("{}: {bits} bits, g {g}, {cols} columns", k.name());
            let want: Vec<u32> = (0..rows)
                .map(|r| k.dot_row_q8(&t, r, &a).unwrap().to_bits())
                .collect();
            for (r, &got_bits) in want.iter().enumerate() {
                let (got, reference) =
                    (f32::from_bits(got_bits), dot_row_q8_ref(&t, r, &a).unwrap());
                let tol = dot_tolerance(&t, r, &xh).unwrap();
                assert!((got - reference).abs() <= tol, "{ctx}: row {r}");
                if bits != 4 {
                    assert_eq!(got_bits, reference.to_bits(), "{ctx}: row {r}");
                }
            }
            let mut y = vec![0f32; rows];
            k.gemv_q8(&t, &a, &mut y).unwrap();
            let got: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "{ctx}: gemv_q8");
            for first in [0, 1, 3, 6] {
                for n in [1, 4, 5] {
                    let n = n.min(rows - first);
                    let mut y = vec![0f32; n];
                    k.gemv_q8_rows(&t, first, &a, &mut y).unwrap();
                    let got: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(got, want[first..first + n], "{ctx}: rows from {first}");
                }
            }
        }
    }
}
