//! Format v3 end to end: quantize rotated rows, parse, dequantize, dot products (f32 and
//! int8 activations) on every kernel set, what it keeps on matrices built to hurt v2
//! (hot columns, a hot row, Student-t tails), and what the parser refuses.

use adpq_core::harness::{decode_finite, parse_packed, roundtrip_v3};
use adpq_core::kernels::{dot_tolerance, Q8Activations};
use adpq_core::{
    packed_len, AnyKernels, CpuKernels, Error, FormatError, FormatVersion, PackedTensor,
    ParamFields, Params, Scalar, Weights,
};
use proptest::prelude::*;

/// A deterministic stream of uniforms in (0, 1).
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    /// Student-t with `nu` degrees of freedom: a normal over `√(χ²_ν / ν)`.
    fn student_t(&mut self, nu: u32) -> f64 {
        let chi: f64 = (0..nu).map(|_| self.normal().powi(2)).sum();
        self.normal() / (chi / f64::from(nu)).sqrt()
    }
}

/// The stress matrices of docs/FORMAT-v3-experiments.md (256 × 1536, own generators).
fn stress(kind: &str) -> (usize, usize, Vec<f32>) {
    let (rows, cols) = (64, 1536);
    let mut rng = Rng(0x5eed ^ kind.len() as u64);
    let mut w: Vec<f32> = (0..rows * cols)
        .map(|_| match kind {
            "t3" => 0.02 * rng.student_t(3),
            "t2" => 0.02 * rng.student_t(2),
            _ => 0.02 * rng.normal(),
        } as f32)
        .collect();
    for r in 0..rows {
        for c in 0..cols {
            let v = &mut w[r * cols + c];
            match kind {
                "hot-col" if c == 17 => *v *= 40.0,
                "hot-cols" if [17, 300, 901, 1400].contains(&c) => *v *= 20.0,
                "hot-row" if r == 5 => *v *= 40.0,
                _ => {}
            }
        }
    }
    (rows, cols, w)
}

fn quantize<K: CpuKernels>(k: &K, w: &[f32], rows: usize, cols: usize, p: &Params) -> Vec<u8> {
    let sel = adpq_core::select_tensor(k, Weights::F32(w), rows, cols, p).unwrap();
    let mut buf = vec![0u8; packed_len(rows, cols, p.format(), sel.n_outliers).unwrap()];
    adpq_core::quantize_tensor(k, Weights::F32(w), rows, cols, p, &sel, &mut buf).unwrap();
    buf
}

fn dequantize(buf: &[u8]) -> Vec<f32> {
    let t = PackedTensor::parse(buf).unwrap();
    let mut back = vec![0f32; t.rows() * t.cols()];
    Scalar.dequantize_rows(&t, 0, &mut back).unwrap();
    back
}

fn rel_mse(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let den: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum();
    num / den
}

fn bits_per_weight(buf: &[u8], rows: usize, cols: usize) -> f64 {
    8.0 * buf.len() as f64 / (rows * cols) as f64
}

/// On every stress matrix, v3 at 4 bits (fewer bits than v1 and v2 at their defaults)
/// reconstructs at most as badly as v1, the grid the Python reference's matches, and
/// better than v2 where v2 fails (heavy tails).
#[test]
fn v3_holds_on_matrices_built_to_hurt_v2() {
    for kind in ["gauss", "hot-col", "hot-cols", "hot-row", "t3", "t2"] {
        let (rows, cols, w) = stress(kind);
        let b3 = quantize(&Scalar, &w, rows, cols, &Params::V3);
        let b2 = quantize(&Scalar, &w, rows, cols, &Params::V2_PRESET);
        let b1 = quantize(&Scalar, &w, rows, cols, &Params::V1);
        let (e3, e2, e1) = (
            rel_mse(&w, &dequantize(&b3)),
            rel_mse(&w, &dequantize(&b2)),
            rel_mse(&w, &dequantize(&b1)),
        );
        let (n3, n1) = (
            bits_per_weight(&b3, rows, cols),
            bits_per_weight(&b1, rows, cols),
        );
        eprintln!("{kind}: v3 {e3:.5} ({n3:.2} b), v2 {e2:.5}, v1 {e1:.5} ({n1:.2} b)");
        assert!(n3 < n1, "{kind}: {n3} bits vs v1's {n1}");
        assert!(e3 <= e1, "{kind}: v3 {e3} vs v1 {e1}");
        if kind.starts_with('t') {
            assert!(e3 < e2, "{kind}: v3 {e3} vs v2 {e2}");
        }
    }
}

/// Every kernel set writes the oracle's bytes and dequantizes to the oracle's bits; its
/// dot products (f32: per row and whole-tensor gemv, within `dot_tolerance` of the
/// oracle; int8 activations: the reference's bits) agree with the dequantized rows.
#[test]
fn kernel_sets_agree_and_dots_match_the_dequantized_rows() {
    for (rows, cols, bits, g) in [
        (6, 1536, 4, 64),
        (5, 600, 5, 32),
        (3, 88, 6, 16),
        (2, 7, 4, 16),
        (2, 4200, 4, 32),
        (3, 1030, 8, 128),
        (2, 520, 3, 512),
        (2, 1100, 2, 256),
        (2, 300, 7, 64),
        (2, 4500, 4, 512),
        (3, 1040, 4, 16),
        (2, 1056, 4, 32),
        // The last segment's blocks of 64, 16 and 8 columns: a group spans blocks.
        (2, 600, 4, 64),
    ] {
        let (_, _, all) = stress("hot-col");
        let w = &all[..rows * cols];
        let p = ParamFields {
            bits,
            group_size: g,
            ..Params::V3.fields()
        }
        .validate()
        .unwrap();
        let buf = quantize(&Scalar, w, rows, cols, &p);
        for k in AnyKernels::available() {
            assert_eq!(quantize(&k, w, rows, cols, &p), buf, "{}", k.name());
        }
        let t = PackedTensor::parse(&buf).unwrap();
        assert_eq!(t.version(), FormatVersion::V3);
        assert_eq!(t.n_outliers(), 0);
        assert!(t.info().rotation.is_some());
        let back = dequantize(&buf);
        let x: Vec<f32> = (0..cols)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 9.0)
            .collect();
        let groups = cols.div_ceil(usize::from(g));
        let (mut q, mut s, mut sums) = (vec![0i8; cols], vec![0f32; groups], vec![0i32; groups]);
        let a = Q8Activations::quantize_for(&t, &x, &mut q, &mut s, &mut sums).unwrap();
        for k in AnyKernels::available() {
            let mut other = vec![f32::NAN; rows * cols];
            k.dequantize_rows(&t, 0, &mut other).unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&other), bits(&back), "{}: dequantized bits", k.name());
            let mut y = vec![0f32; rows];
            k.gemv(&t, &x, &mut y).unwrap();
            for (r, &yr) in y.iter().enumerate() {
                let (oracle, dot) = (
                    Scalar.dot_row(&t, r, &x).unwrap(),
                    k.dot_row(&t, r, &x).unwrap(),
                );
                assert_eq!(
                    yr.to_bits(),
                    dot.to_bits(),
                    "{}: row {r}: gemv sums as dot_row does",
                    k.name()
                );
                let tol = dot_tolerance(&t, r, &x).unwrap();
                assert!(
                    (dot - oracle).abs() <= tol,
                    "{}: row {r}: {dot} vs {oracle}",
                    k.name()
                );
                let q8 = k.dot_row_q8(&t, r, &a).unwrap();
                let reference = adpq_core::kernels::dot_row_q8_ref(&t, r, &a).unwrap();
                assert_eq!(
                    q8.to_bits(),
                    reference.to_bits(),
                    "{}: q8 row {r}",
                    k.name()
                );
            }
        }
        let mut y = vec![0f32; rows];
        AnyKernels::detect().gemv(&t, &x, &mut y).unwrap();
        let mut yq = vec![0f32; rows];
        AnyKernels::detect().gemv_q8(&t, &a, &mut yq).unwrap();
        for r in 0..rows {
            let want: f64 = back[r * cols..(r + 1) * cols]
                .iter()
                .zip(&x)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            let scale: f64 = back[r * cols..(r + 1) * cols]
                .iter()
                .zip(&x)
                .map(|(a, b)| f64::from((a * b).abs()))
                .sum();
            let oracle = Scalar.dot_row(&t, r, &x).unwrap();
            assert!((y[r] - oracle).abs() <= dot_tolerance(&t, r, &x).unwrap());
            assert!(
                (f64::from(oracle) - want).abs() <= 1e-4 * scale,
                "{oracle} vs {want}"
            );
            let tol = dot_tolerance(&t, r, &x).unwrap();
            assert!(tol > 0.0);
            // int8 activations: within what rounding x to 8 bits per group costs.
            assert!(
                (f64::from(yq[r]) - want).abs() <= 2e-2 * scale,
                "q8 {} vs {want}",
                yq[r]
            );
        }
        // Activations quantized without the tensor's rotation are refused, not misused.
        let (mut q, mut s, mut sums) = (vec![0i8; cols], vec![0f32; groups], vec![0i32; groups]);
        let plain = Q8Activations::quantize(&x, g, &mut q, &mut s, &mut sums).unwrap();
        assert!(matches!(
            Scalar.dot_row_q8(&t, 0, &plain),
            Err(Error::Unsupported(_))
        ));
    }
}

/// The size formula of format v3 (docs/FORMAT.md), written out independently.
/// The int8 dot products of many rows at once (`gemv_q8`, `gemv_q8_rows` from any first
/// row, blocks of rows and their remainders, the last rows of the buffer) are the
/// reference's bits at every width and group size.
#[test]
fn q8_rows_equal_the_reference_at_every_width() {
    let (_, cols, all) = stress("student-t");
    let rows = 11;
    for bits in 2..=8u8 {
        for (g, cols) in [(32u16, 96), (64, 576), (128, cols), (512, 1100)] {
            let p = ParamFields {
                bits,
                group_size: g,
                ..Params::V3.fields()
            }
            .validate()
            .unwrap();
            let buf = quantize(&Scalar, &all[..rows * cols], rows, cols, &p);
            let t = PackedTensor::parse(&buf).unwrap();
            let x: Vec<f32> = (0..cols)
                .map(|i| ((i * 7 % 31) as f32 - 15.0) / 4.0)
                .collect();
            let groups = cols.div_ceil(usize::from(g));
            let (mut q, mut sc, mut su) = (vec![0i8; cols], vec![0f32; groups], vec![0i32; groups]);
            let a = Q8Activations::quantize_for(&t, &x, &mut q, &mut sc, &mut su).unwrap();
            let want: Vec<u32> = (0..rows)
                .map(|r| {
                    adpq_core::kernels::dot_row_q8_ref(&t, r, &a)
                        .unwrap()
                        .to_bits()
                })
                .collect();
            for k in AnyKernels::available() {
                let ctx = format!("{}: {bits} bits, g {g}", k.name());
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
                let mut y = vec![0f32; 2];
                assert_eq!(
                    k.gemv_q8_rows(&t, rows - 1, &a, &mut y),
                    Err(Error::RowOutOfRange {
                        row: rows as u64,
                        rows: rows as u64
                    }),
                    "{ctx}"
                );
            }
        }
    }
}

/// Every kernel set's `quantize_activations` gives `Q8Activations::quantize_for`'s bits
/// (values, scales, sums), rotated (v3) or not (v2): long and short groups, ties, an
/// all-zero group and groups too small for their scale's inverse.
#[test]
fn activations_quantize_alike_on_every_kernel_set() {
    let mut rng = Rng(0xac7);
    for (params, g, cols) in [
        (Params::V3, 64u16, 576usize),
        (Params::V3, 32, 1100),
        (Params::V3, 512, 1536),
        (Params::V2, 64, 200),
    ] {
        let p = ParamFields {
            group_size: g,
            ..params.fields()
        }
        .validate()
        .unwrap();
        let w: Vec<f32> = (0..2 * cols).map(|_| rng.normal() as f32).collect();
        let buf = quantize(&Scalar, &w, 2, cols, &p);
        let t = PackedTensor::parse(&buf).unwrap();
        let mut x: Vec<f32> = (0..cols).map(|_| (rng.normal() * 3.0) as f32).collect();
        // Ties of the rounding: halves of the group's step.
        for (i, v) in x.iter_mut().enumerate().take(24) {
            *v = (i as f32 - 12.0) * 0.5;
        }
        x[23] = 127.0 / 12.0 * 11.5;
        let g = usize::from(g);
        if cols > 2 * g {
            x[g..2 * g].fill(0.0);
        }
        if cols > 3 * g {
            for (i, v) in x[2 * g..3 * g].iter_mut().enumerate() {
                // Scales below 2^-128: their inverses overflow to infinity.
                *v = 4e-38 * (1 + i % 7) as f32 * if i % 2 == 0 { 1.0 } else { -1.0 };
            }
        }
        let groups = cols.div_ceil(g);
        let quantized = |k: Option<&AnyKernels>| {
            let (mut q, mut sc, mut su) = (vec![0i8; cols], vec![0f32; groups], vec![0i32; groups]);
            let a = match k {
                Some(k) => k.quantize_activations(&t, &x, &mut q, &mut sc, &mut su),
                None => Q8Activations::quantize_for(&t, &x, &mut q, &mut sc, &mut su),
            }
            .unwrap();
            let scales: Vec<u32> = a.scales().iter().map(|s| s.to_bits()).collect();
            (a.q().to_vec(), scales, a.sums().to_vec())
        };
        let want = quantized(None);
        for k in AnyKernels::available() {
            assert_eq!(
                quantized(Some(&k)),
                want,
                "{}: {params:?} g {g}, {cols} columns",
                k.name()
            );
        }
    }
}

#[test]
fn v3_size_formula() {
    for (rows, cols, bits, g) in [(3u64, 576u64, 4u64, 64u64), (2, 1536, 5, 32), (1, 7, 6, 16)] {
        let p = ParamFields {
            bits: bits as u8,
            group_size: g as u16,
            ..Params::V3.fields()
        }
        .validate()
        .unwrap();
        let want = 64
            + rows * (4 + (12 * cols.div_ceil(g)).div_ceil(8))
            + rows * (cols * bits).div_ceil(8);
        assert_eq!(
            packed_len(rows as usize, cols as usize, p.format(), 0).unwrap() as u64,
            want
        );
    }
}

#[test]
fn v3_parameters_are_validated() {
    let with = |f: ParamFields| f.validate();
    assert!(with(ParamFields {
        alpha: 0.04,
        ..Params::V3.fields()
    })
    .is_err());
    assert!(with(ParamFields {
        group_size: 48,
        ..Params::V3.fields()
    })
    .is_err());
    assert!(with(ParamFields {
        group_size: 1024,
        ..Params::V3.fields()
    })
    .is_err());
    assert!(with(ParamFields {
        grid: adpq_core::Grid::Symmetric,
        ..Params::V3.fields()
    })
    .is_err());
    assert_eq!(
        Params::v3_for("model.layers.0.self_attn.v_proj.weight").bits(),
        6
    );
    assert_eq!(
        Params::v3_for("model.layers.0.mlp.down_proj.weight").bits(),
        5
    );
    assert_eq!(
        Params::v3_for("model.layers.0.mlp.up_proj.weight").bits(),
        5
    );
    assert_eq!(
        Params::v3_for("model.layers.0.mlp.gate_proj.weight").bits(),
        4
    );
    // Whole name components: Phi-3's fused matrices are not the projections they end in.
    for fused in [
        "model.layers.0.self_attn.qkv_proj.weight",
        "model.layers.0.mlp.gate_up_proj.weight",
    ] {
        assert_eq!(Params::v3_for(fused), Params::V3, "{fused}");
    }
    assert_eq!(Params::v3_for("v_proj").bits(), 6);
    // Weights rotation could grow past the decode bound are refused with a reason.
    let w = vec![1e36f32; 64];
    let sel = adpq_core::select_tensor(&Scalar, Weights::F32(&w), 1, 64, &Params::V3).unwrap();
    let mut buf = vec![0u8; packed_len(1, 64, Params::V3.format(), 0).unwrap()];
    let r = adpq_core::quantize_tensor(
        &Scalar,
        Weights::F32(&w),
        1,
        64,
        &Params::V3,
        &sel,
        &mut buf,
    );
    assert!(matches!(r, Err(Error::Unsupported(_))), "{r:?}");
}

/// Re-seals a buffer whose bytes were changed, so the parser looks past the CRC.
fn reseal(buf: &mut [u8]) {
    buf[56..60].fill(0);
    let crc = adpq_core::format::checksum(buf);
    buf[56..60].copy_from_slice(&crc.to_le_bytes());
}

/// Rotation segments other than the writers' 512 (a header a reader must accept: from the
/// group size up): every kernel set dequantizes to the oracle's bits, whole rows and in
/// pieces of 1 to 3 units, and its gemv equals its dot_row, within tolerance of the
/// oracle's.
#[test]
fn every_rotation_segment_reads_as_the_oracle() {
    use adpq_core::kernels::dequantize_row_pieces;
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    let (_, _, all) = stress("hot-col");
    for (g, b) in [(16u16, 4u8), (32, 5), (64, 4), (64, 7), (128, 3)] {
        for cols in [88usize, 136, 600, 1004, 4104] {
            let rows = 2;
            let p = ParamFields {
                bits: b,
                group_size: g,
                ..Params::V3.fields()
            }
            .validate()
            .unwrap();
            let buf0 = quantize(&Scalar, &all[..rows * cols], rows, cols, &p);
            let x: Vec<f32> = (0..cols)
                .map(|i| {
                    if i % 97 == 3 {
                        30.0
                    } else {
                        ((i * 13 % 29) as f32 - 14.0) / 9.0
                    }
                })
                .collect();
            for log2 in g.trailing_zeros() as u8..=9 {
                let mut buf = buf0.clone();
                buf[14] = log2;
                reseal(&mut buf);
                let t = PackedTensor::parse(&buf).unwrap();
                let mut want = vec![0f32; rows * cols];
                Scalar.dequantize_rows(&t, 0, &mut want).unwrap();
                for k in AnyKernels::available() {
                    let at = format!(
                        "{}: g {g}, {b} bits, {cols} columns, segment 2^{log2}",
                        k.name()
                    );
                    let mut got = vec![f32::NAN; rows * cols];
                    k.dequantize_rows(&t, 0, &mut got).unwrap();
                    assert_eq!(bits(&got), bits(&want), "{at}");
                    for units in 1..=3 {
                        let mut piece = vec![f32::NAN; units * t.piece_unit()];
                        for r in 0..rows {
                            dequantize_row_pieces(&k, &t, r, &mut piece, |col, v| {
                                assert_eq!(
                                    bits(v),
                                    bits(&want[r * cols + col..][..v.len()]),
                                    "{at}: row {r} in pieces of {units}"
                                );
                                Ok(())
                            })
                            .unwrap();
                        }
                    }
                    let mut y = vec![0f32; rows];
                    k.gemv(&t, &x, &mut y).unwrap();
                    for (r, &yr) in y.iter().enumerate() {
                        let (dot, oracle) = (
                            k.dot_row(&t, r, &x).unwrap(),
                            Scalar.dot_row(&t, r, &x).unwrap(),
                        );
                        assert_eq!(
                            yr.to_bits(),
                            dot.to_bits(),
                            "{at}: row {r}: gemv vs dot_row"
                        );
                        let tol = dot_tolerance(&t, r, &x).unwrap();
                        assert!(
                            (dot - oracle).abs() <= tol,
                            "{at}: row {r}: {dot} vs {oracle}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn the_parser_refuses_what_v3_cannot_hold() {
    let (rows, cols) = (2, 600);
    let (_, _, all) = stress("gauss");
    let buf = quantize(&Scalar, &all[..rows * cols], rows, cols, &Params::V3);
    PackedTensor::parse(&buf).unwrap();
    let bad_header = |what: &str| {
        Error::Format(FormatError::BadHeader(match what {
            "rotation" => "rotation segment",
            "outliers" => "outliers in a version without an outlier split",
            _ => "reserved bytes",
        }))
    };
    // A rotation segment below the group size, or above 512.
    for log2 in [5u8, 10] {
        let mut b = buf.clone();
        b[14] = log2;
        reseal(&mut b);
        assert_eq!(PackedTensor::parse(&b).unwrap_err(), bad_header("rotation"));
    }
    // No rotation with a seed left.
    let mut b = buf.clone();
    b[14] = 0;
    reseal(&mut b);
    assert_eq!(PackedTensor::parse(&b).unwrap_err(), bad_header("rotation"));
    // An outlier count or a threshold.
    let mut b = buf.clone();
    b[24] = 1;
    reseal(&mut b);
    assert!(PackedTensor::parse(&b).is_err());
    let mut b = buf.clone();
    b[32..36].copy_from_slice(&1.0f32.to_le_bytes());
    reseal(&mut b);
    assert_eq!(PackedTensor::parse(&b).unwrap_err(), bad_header("outliers"));
    // A NaN unit; a unit so large its codes would decode above 2^126 once rotated back.
    let records_at = 64;
    for unit in [0x7e00u16, 0x7bff] {
        let mut b = buf.clone();
        b[records_at..records_at + 2].copy_from_slice(&unit.to_le_bytes());
        b[12] = 100; // scale exponent
        reseal(&mut b);
        assert!(matches!(
            PackedTensor::parse(&b).unwrap_err(),
            Error::Format(FormatError::BadRow { row: 0, .. })
                | Error::Format(FormatError::BadHeader(_))
        ));
    }
    // Padding bits after the last record of a row (600 / 64 = 10 groups: 120 bits, none;
    // 600 / 32 = 19 groups: 228 bits, 4 bits of padding).
    let p32 = ParamFields {
        group_size: 32,
        ..Params::V3.fields()
    }
    .validate()
    .unwrap();
    let buf32 = quantize(&Scalar, &all[..rows * cols], rows, cols, &p32);
    let mut b = buf32.clone();
    let last = records_at + 4 + (12 * 19usize).div_ceil(8) - 1;
    b[last] |= 0x80;
    reseal(&mut b);
    assert!(matches!(
        PackedTensor::parse(&b).unwrap_err(),
        Error::Format(FormatError::BadRow { row: 0, .. })
    ));
    // The version 2 reader's header fields stay refused there.
    let mut b = quantize(&Scalar, &all[..rows * cols], rows, cols, &Params::V2_PRESET);
    b[14] = 9;
    reseal(&mut b);
    assert_eq!(PackedTensor::parse(&b).unwrap_err(), bad_header("reserved"));
}

/// Byte flips of valid v3 buffers: whatever parses dequantizes finite, dots, and narrows
/// by the saturation rule (the fuzz targets' harness, on v3 seeds).
#[test]
fn mutated_v3_buffers_hold_the_harness_invariants() {
    let (_, _, all) = stress("t3");
    let buf = quantize(&Scalar, &all[..3 * 200], 3, 200, &Params::v3_for("up_proj"));
    let mut rng = Rng(9);
    for _ in 0..400 {
        let mut b = buf.clone();
        for _ in 0..1 + (rng.uniform() * 4.0) as usize {
            let at = (rng.uniform() * b.len() as f64) as usize;
            b[at] ^= 1 << (rng.uniform() * 8.0) as u32;
        }
        if rng.uniform() < 0.8 {
            reseal(&mut b);
        }
        parse_packed(&b);
        decode_finite(&b);
    }
}

fn value_strategy() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -1.0f32..1.0,
        1 => -100.0f32..100.0,
        1 => Just(0.0f32),
        1 => prop::sample::select(vec![0.5f32, -0.5, 1e-30, 3e30, -7e-20, 65504.0, 1e36]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn v3_roundtrips(
        rows in 1usize..4,
        cols in 1usize..1100,
        values in prop::collection::vec(value_strategy(), 1..64),
        bits in 2u8..=8,
        g in prop::sample::select(vec![16u16, 32, 64, 128, 256, 512, 48]),
    ) {
        roundtrip_v3(rows, cols, &values, bits, g);
    }
}
