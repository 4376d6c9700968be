//! The conformance suite: every SIMD backend this machine can run against the scalar
//! oracle, on the same inputs.
//!
//! - selection, histograms and counts: identical;
//! - packed bytes: identical (codes, scales, positions, header, checksum);
//! - dequantized values: bit-identical;
//! - `dot_row` / `gemv`: within [`dot_tolerance`] of the oracle.
//!
//! On a machine with no SIMD backend the suite prints a visible SKIP line and passes.

use adpq_core::kernels::{
    dequantize_row_pieces, dot_row_q8_ref, dot_tolerance, AnyKernels, Q8Activations,
};
use adpq_core::select::{HistogramPass, HIST_BINS};
use adpq_core::{
    bf16, f16, packed_len, CpuKernels, FormatVersion, Grid, PackedTensor, Params, Scalar,
    SelectionMode, Weights,
};
use proptest::prelude::*;

/// The SIMD backends this machine can run (everything except the oracle).
fn simd_backends() -> Vec<AnyKernels> {
    let v: Vec<AnyKernels> = AnyKernels::available()
        .filter(|b| !matches!(b, AnyKernels::Scalar(_)))
        .collect();
    if v.is_empty() {
        eprintln!("SKIP conformance: no SIMD backend on this CPU; only the scalar oracle runs");
    }
    v
}

#[derive(Debug, Clone, Copy)]
enum Dtype {
    F32,
    F16,
    Bf16,
}

/// The weights in one dtype, and the f32 values they stand for.
struct Input {
    f32s: Vec<f32>,
    f16s: Vec<f16>,
    bf16s: Vec<bf16>,
    dtype: Dtype,
}

impl Input {
    fn new(values: Vec<f32>, dtype: Dtype) -> Input {
        let f16s: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
        let bf16s: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
        Input {
            f32s: values,
            f16s,
            bf16s,
            dtype,
        }
    }
    fn weights(&self) -> Weights<'_> {
        match self.dtype {
            Dtype::F32 => Weights::F32(&self.f32s),
            Dtype::F16 => Weights::F16(&self.f16s),
            Dtype::Bf16 => Weights::Bf16(&self.bf16s),
        }
    }
}

/// Checks one backend against the oracle on one input; panics with context on a mismatch.
fn check_backend(
    b: AnyKernels,
    input: &Input,
    rows: usize,
    cols: usize,
    params: &Params,
    x: &[f32],
) {
    let w = input.weights();
    let ctx = format!(
        "backend {} {:?} {rows}x{cols} {:?}",
        b.name(),
        input.dtype,
        params
    );

    // Histograms of every level and counts, on the whole tensor and on an odd sub-slice.
    for sub in [
        w,
        w.get(
            1.min(w.len()),
            w.len().saturating_sub(3).max(1.min(w.len())),
        )
        .unwrap(),
    ] {
        let mut prefix = 0;
        for level in 0..3 {
            let pass = HistogramPass::level(level, prefix);
            let (mut hs, mut hb) = ([0u32; HIST_BINS], [0u32; HIST_BINS]);
            let rs = Scalar.histogram(sub, &pass, &mut hs);
            let rb = b.histogram(sub, &pass, &mut hb);
            assert_eq!(
                format!("{rs:?}"),
                format!("{rb:?}"),
                "{ctx}: histogram level {level} result"
            );
            if rs.is_err() {
                break;
            }
            assert!(hs == hb, "{ctx}: histogram level {level} bins");
            // Descend into the fullest bin, so deeper levels see matches.
            let top = (0..HIST_BINS).max_by_key(|&i| (hs[i], i)).unwrap() as u32;
            prefix = (prefix << pass.mask.count_ones()) | top;
        }
        for t in [0u32, 1, 0x3F80_0000, 0x7F80_0000, 0x8000_0000, u32::MAX] {
            assert_eq!(
                Scalar.count_at_least(sub, t),
                b.count_at_least(sub, t),
                "{ctx}: count_at_least {t:#x}"
            );
            assert_eq!(
                Scalar.count_equal(sub, t),
                b.count_equal(sub, t),
                "{ctx}: count_equal {t:#x}"
            );
        }
        if let Some(v) = sub.value(sub.len() / 2) {
            let t = v.to_bits() & 0x7FFF_FFFF;
            assert_eq!(
                Scalar.count_at_least(sub, t),
                b.count_at_least(sub, t),
                "{ctx}: count_at_least"
            );
            assert_eq!(
                Scalar.count_equal(sub, t),
                b.count_equal(sub, t),
                "{ctx}: count_equal"
            );
        }
    }

    // Selection and packed bytes.
    let sel_s = adpq_core::select_tensor(&Scalar, w, rows, cols, params);
    let sel_b = adpq_core::select_tensor(&b, w, rows, cols, params);
    match (&sel_s, &sel_b) {
        (Ok(s), Ok(bb)) => {
            assert_eq!(s.threshold_bits, bb.threshold_bits, "{ctx}: threshold");
            assert_eq!(s.take_equal, bb.take_equal, "{ctx}: take_equal");
            assert_eq!(s.n_outliers, bb.n_outliers, "{ctx}: n_outliers");
            assert_eq!(s.max_abs_bits, bb.max_abs_bits, "{ctx}: max_abs");
            assert_eq!(s.passes, bb.passes, "{ctx}: passes");
            assert_eq!(
                s.lambda_prime.to_bits(),
                bb.lambda_prime.to_bits(),
                "{ctx}: lambda'"
            );
        }
        _ => assert_eq!(
            format!("{sel_s:?}"),
            format!("{sel_b:?}"),
            "{ctx}: selection"
        ),
    }
    let Ok(sel) = sel_s else { return };
    let len = packed_len(rows, cols, params.format(), sel.n_outliers).unwrap();
    let (mut ps, mut pb) = (vec![0u8; len], vec![0xA5u8; len]);
    let qs = adpq_core::quantize_tensor(&Scalar, w, rows, cols, params, &sel, &mut ps);
    let qb = adpq_core::quantize_tensor(&b, w, rows, cols, params, &sel, &mut pb);
    assert_eq!(
        format!("{qs:?}"),
        format!("{qb:?}"),
        "{ctx}: quantize result"
    );
    if qs.is_err() {
        return;
    }
    if ps != pb {
        let i = ps.iter().zip(&pb).position(|(a, c)| a != c).unwrap();
        panic!(
            "{ctx}: packed bytes differ first at byte {i} of {len}: scalar {:#04x}, {} {:#04x}",
            ps[i],
            b.name(),
            pb[i]
        );
    }

    // Dequantize: whole tensor and a row range.
    let t = PackedTensor::parse(&ps).expect("oracle output parses");
    let n = rows * cols;
    let (mut ds, mut db) = (vec![0f32; n], vec![f32::NAN; n]);
    Scalar.dequantize_rows(&t, 0, &mut ds).unwrap();
    b.dequantize_rows(&t, 0, &mut db).unwrap();
    for i in 0..n {
        assert_eq!(
            ds[i].to_bits(),
            db[i].to_bits(),
            "{ctx}: dequant element {i}: {} vs {}",
            ds[i],
            db[i]
        );
    }
    if rows > 1 {
        let mut part = vec![0f32; (rows - 1) * cols];
        b.dequantize_rows(&t, 1, &mut part).unwrap();
        assert!(
            part.iter()
                .zip(&ds[cols..])
                .all(|(a, c)| a.to_bits() == c.to_bits()),
            "{ctx}: dequant rows 1.."
        );
    }

    // Rows decoded in pieces of 1, 2 and 3 groups (and a whole row), by both kernel
    // sets: the values of the whole-tensor decode, bit for bit.
    // (For v3, pieces of whole rotation segments: `piece_unit`.)
    let (g, unit) = (usize::from(params.group_size()), t.piece_unit());
    for k in [Scalar.into(), b] {
        let k: AnyKernels = k;
        for groups in [1, 2, 3, cols.div_ceil(unit)] {
            let mut buf = vec![f32::NAN; groups * unit];
            for r in 0..rows {
                let mut seen = 0;
                dequantize_row_pieces(&k, &t, r, &mut buf, |col, v| {
                    assert_eq!(col, seen, "{ctx}: piece order");
                    let want = &ds[r * cols + col..][..v.len()];
                    assert!(
                        v.iter().zip(want).all(|(a, c)| a.to_bits() == c.to_bits()),
                        "{ctx}: {} row {r} in pieces of {groups} groups, from column {col}",
                        k.name()
                    );
                    seen += v.len();
                    Ok(())
                })
                .unwrap();
                assert_eq!(seen, cols, "{ctx}: row {r} in pieces");
            }
        }
        // A piece that ends inside a group, or a cursor past the row's end, is an error.
        let mut at = t.row_cursor(0).unwrap();
        if cols > unit + 1 {
            let mut short = vec![0f32; unit + 1];
            assert!(k.dequantize_part(&t, &mut at, &mut short).is_err(), "{ctx}");
        }
        let mut all = vec![0f32; cols];
        k.dequantize_part(&t, &mut at, &mut all).unwrap();
        assert_eq!(at.group(), cols.div_ceil(g), "{ctx}");
        assert!(
            k.dequantize_part(&t, &mut at, &mut [0f32; 1]).is_err(),
            "{ctx}"
        );
        k.dequantize_part(&t, &mut at, &mut []).unwrap();
        assert!(t.row_cursor(rows).is_err(), "{ctx}");
    }

    // Dot and gemv within the documented tolerance.
    let (mut ys, mut yb) = (vec![0f32; rows], vec![0f32; rows]);
    Scalar.gemv(&t, x, &mut ys).unwrap();
    b.gemv(&t, x, &mut yb).unwrap();
    for r in 0..rows {
        let tol = dot_tolerance(&t, r, x).unwrap();
        let d = b.dot_row(&t, r, x).unwrap();
        let s = Scalar.dot_row(&t, r, x).unwrap();
        assert_eq!(s.to_bits(), ys[r].to_bits(), "{ctx}: scalar gemv row {r}");
        assert!(
            (d - s).abs() <= tol,
            "{ctx}: dot row {r}: {d} vs {s}, tolerance {tol}"
        );
        assert!(
            (yb[r] - s).abs() <= tol,
            "{ctx}: gemv row {r}: {} vs {s}, tolerance {tol}",
            yb[r]
        );
    }
    // Int8 activations: the reference against the f32 oracle on the dequantized
    // activations, and the backend against the reference, both within the tolerance.
    let groups = cols.div_ceil(g);
    let (mut q, mut sc, mut su) = (vec![0i8; cols], vec![0f32; groups], vec![0i32; groups]);
    // Format v3's activations are quantized in the tensor's rotated basis.
    let rotated = params.version() == FormatVersion::V3;
    let a = if rotated {
        Q8Activations::quantize_for(&t, x, &mut q, &mut sc, &mut su).unwrap()
    } else {
        Q8Activations::quantize(x, params.group_size(), &mut q, &mut sc, &mut su).unwrap()
    };
    let mut xh = vec![0f32; cols];
    a.dequantize(&mut xh);
    for (i, (&xi, &hi)) in x.iter().zip(&xh).enumerate() {
        if rotated {
            break;
        }
        assert!(
            (xi - hi).abs() <= a.scales()[i / g] * 0.5 * (1.0 + 1e-5),
            "{ctx}: q8 activation {i}"
        );
    }
    let mut yq = vec![0f32; rows];
    b.gemv_q8(&t, &a, &mut yq).unwrap();
    for (r, &yr) in yq.iter().enumerate() {
        let tol = dot_tolerance(&t, r, &xh).unwrap();
        if tol.is_nan() || tol >= 1e30 {
            // Weights near f32's range (~1e36 in the pool): the int8 path's intermediate
            // `Δ·Σ c·q` may overflow where the f32 order does not. Out of its scope.
            continue;
        }
        let reference = dot_row_q8_ref(&t, r, &a).unwrap();
        // The trait's q8 methods: gemv_q8 is dot_row_q8 row by row, the scalar default is
        // the reference, and formats without a SIMD path fall back to it exactly.
        let dq = b.dot_row_q8(&t, r, &a).unwrap();
        assert_eq!(
            dq.to_bits(),
            yr.to_bits(),
            "{ctx}: q8 dot row {r} vs gemv_q8"
        );
        let sq = Scalar.dot_row_q8(&t, r, &a).unwrap();
        assert_eq!(
            sq.to_bits(),
            reference.to_bits(),
            "{ctx}: scalar q8 row {r}"
        );
        // The SIMD q8 paths: version 1's 4-bit groups of 128, version 2's 4-bit groups of
        // 64; everything else computes exactly what the reference does (version 3's
        // lanes included).
        let q8_simd = params.bits() == 4
            && match params.version() {
                FormatVersion::V1 => params.group_size() == 128,
                FormatVersion::V2 => params.group_size() == 64,
                FormatVersion::V3 => false,
            };
        if !q8_simd {
            assert_eq!(
                dq.to_bits(),
                reference.to_bits(),
                "{ctx}: q8 fallback row {r}"
            );
        }
        if rotated {
            // `xh` is in the rotated basis, which the f32 dot products rotate into: no
            // f32 counterpart here (tests/v3.rs checks v3's int8 dots against the
            // dequantized rows).
            continue;
        }
        let f32_dot = Scalar.dot_row(&t, r, &xh).unwrap();
        assert!(
            (reference - f32_dot).abs() <= tol,
            "{ctx}: q8 reference row {r}: {reference} vs {f32_dot}, tolerance {tol}"
        );
        assert!(
            (yr - reference).abs() <= tol,
            "{ctx}: q8 gemv row {r}: {yr} vs {reference}, tolerance {tol}"
        );
    }

    // Errors agree too.
    assert_eq!(
        Scalar.dot_row(&t, rows, x),
        b.dot_row(&t, rows, x),
        "{ctx}: dot_row past the end"
    );
    assert_eq!(
        Scalar.dot_row(&t, 0, &x[1..]),
        b.dot_row(&t, 0, &x[1..]),
        "{ctx}: dot_row short x"
    );
}

fn check_all(values: Vec<f32>, dtype: Dtype, rows: usize, cols: usize, params: &Params, x: &[f32]) {
    let input = Input::new(values, dtype);
    for b in simd_backends() {
        check_backend(b, &input, rows, cols, params, x);
    }
}

fn value_strategy() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -1.0f32..1.0,
        1 => -100.0f32..100.0,
        2 => Just(0.0f32),
        // Ties: a few magnitudes repeated many times.
        3 => prop::sample::select(vec![0.5f32, -0.5, 0.25, -0.25, 1.0, -1.0, 0.75]),
        // Denormals, huge values, f16 edge values, negative zero.
        1 => prop::sample::select(vec![1e-40f32, -1e-42, 1e-45, 3e30, -2e36, -7e-20, 65504.0, -0.0, 6.1e-5, 5.96e-8]),
    ]
}

fn params_strategy() -> impl Strategy<Value = Params> {
    (
        2u8..=8,
        prop_oneof![
            prop::sample::select(vec![16u16, 32, 64, 100, 128, 255, 256, 1000, 1024]),
            16u16..=1024,
        ],
        prop_oneof![Just(0.0f64), Just(0.06), 0.0f64..=0.5, Just(0.5)],
        any::<bool>(),
        prop::sample::select(vec![None, Some(100u32), Some(4)]),
    )
        .prop_map(|(bits, g, alpha, asym, reference)| {
            let grid = if asym {
                Grid::Asymmetric
            } else {
                Grid::Symmetric
            };
            let p = Params::new(bits, g, alpha, grid).unwrap();
            match reference {
                Some(n_iters) if alpha > 0.0 => p
                    .with_selection(SelectionMode::Reference { n_iters })
                    .unwrap(),
                _ => p,
            }
        })
}

/// Format v2 parameters: any width, groups of 16..=255 (odd ones included).
fn params_v2_strategy() -> impl Strategy<Value = Params> {
    (
        2u8..=8,
        prop_oneof![
            prop::sample::select(vec![16u16, 17, 32, 63, 64, 100, 128, 200, 255]),
            16u16..=255,
        ],
        prop_oneof![Just(0.0f64), Just(0.05), 0.0f64..=0.5, Just(0.5)],
        prop::sample::select(vec![None, Some(100u32), Some(4)]),
    )
        .prop_map(|(bits, g, alpha, reference)| {
            let p = Params::new(bits, g, alpha, Grid::Asymmetric)
                .unwrap()
                .with_version(FormatVersion::V2)
                .unwrap();
            match reference {
                Some(n_iters) if alpha > 0.0 => p
                    .with_selection(SelectionMode::Reference { n_iters })
                    .unwrap(),
                _ => p,
            }
        })
}

/// Format v3 parameters: any width, power-of-two groups of 16..=512.
fn params_v3_strategy() -> impl Strategy<Value = Params> {
    (
        2u8..=8,
        prop::sample::select(vec![16u16, 32, 64, 128, 256, 512]),
    )
        .prop_map(|(bits, g)| {
            Params::new(bits, g, 0.0, Grid::Asymmetric)
                .unwrap()
                .with_version(FormatVersion::V3)
                .unwrap()
        })
}

fn dtype_strategy() -> impl Strategy<Value = Dtype> {
    prop::sample::select(vec![Dtype::F32, Dtype::F16, Dtype::Bf16])
}

fn shape_strategy() -> impl Strategy<Value = (usize, usize)> {
    (
        1usize..=4,
        prop_oneof![
            prop::sample::select(vec![1usize, 7, 8, 16, 17, 200, 576, 1000, 1024, 1031, 2048]),
            1usize..=1200,
        ],
    )
}

proptest! {
    // PROPTEST_CASES lowers the count under emulation (scripts/neon-test.sh).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(160),
        ..ProptestConfig::default()
    })]

    #[test]
    fn simd_backends_match_the_oracle(
        (rows, cols) in shape_strategy(),
        params in params_strategy(),
        dtype in dtype_strategy(),
        pool in prop::collection::vec(value_strategy(), 1..64),
        scale in prop::sample::select(vec![1.0f32, 1e-3, 1e3, 1e-30]),
        seed in any::<u64>(),
    ) {
        // Fill the tensor from a small pool so that ties at the threshold are common.
        let mut s = seed | 1;
        let values: Vec<f32> = (0..rows * cols)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                pool[(s % pool.len() as u64) as usize] * scale
            })
            .collect();
        let x: Vec<f32> = (0..cols).map(|i| ((i * 2654435761usize % 1000) as f32 - 500.0) / 250.0).collect();
        check_all(values, dtype, rows, cols, &params, &x);
    }

    #[test]
    fn simd_backends_match_the_oracle_v2(
        (rows, cols) in shape_strategy(),
        params in params_v2_strategy(),
        dtype in dtype_strategy(),
        pool in prop::collection::vec(value_strategy(), 1..64),
        scale in prop::sample::select(vec![1.0f32, 1e-3, 1e3, 1e-30]),
        seed in any::<u64>(),
        continuous in any::<bool>(),
    ) {
        // A small pool (ties at the threshold, all-zero groups) or continuous values.
        let mut s = seed | 1;
        let values: Vec<f32> = (0..rows * cols)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                if continuous {
                    ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0 * scale
                } else {
                    pool[(s % pool.len() as u64) as usize] * scale
                }
            })
            .collect();
        let x: Vec<f32> = (0..cols).map(|i| ((i * 2654435761usize % 1000) as f32 - 500.0) / 250.0).collect();
        check_all(values, dtype, rows, cols, &params, &x);
    }

    #[test]
    fn simd_backends_match_the_oracle_v3(
        (rows, cols) in shape_strategy(),
        params in params_v3_strategy(),
        dtype in dtype_strategy(),
        pool in prop::collection::vec(value_strategy(), 1..64),
        scale in prop::sample::select(vec![1.0f32, 1e-3, 1e3, 1e-30]),
        seed in any::<u64>(),
        continuous in any::<bool>(),
    ) {
        // Rotated rows: ties at a code book midpoint, all-zero groups, huge values that
        // rotation could grow past the format (refused alike).
        let mut s = seed | 1;
        let values: Vec<f32> = (0..rows * cols)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                if continuous {
                    ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0 * scale
                } else {
                    pool[(s % pool.len() as u64) as usize] * scale
                }
            })
            .collect();
        let x: Vec<f32> = (0..cols).map(|i| ((i * 2654435761usize % 1000) as f32 - 500.0) / 250.0).collect();
        check_all(values, dtype, rows, cols, &params, &x);
    }

    #[test]
    fn simd_backends_match_on_continuous_values(
        (rows, cols) in shape_strategy(),
        params in params_strategy(),
        dtype in dtype_strategy(),
        values in prop::collection::vec(-4.0f32..4.0, 8192),
    ) {
        let values = values[..rows * cols].to_vec();
        let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
        check_all(values, dtype, rows, cols, &params, &x);
    }
}

/// Deterministic pseudo-Gaussian weights (sum of uniforms).
fn gaussish(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    let mut u = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n)
        .map(|_| (u() + u() + u() + u() - 2.0) * 0.05)
        .collect()
}

#[test]
fn default_params_on_a_layer_shape() {
    // The shape and parameters the benches use, scaled down: the 4-bit, g = 128 fast paths.
    let (rows, cols) = (32, 4096);
    let values = gaussish(rows * cols, 7);
    let x = gaussish(cols, 9);
    for dtype in [Dtype::F32, Dtype::F16, Dtype::Bf16] {
        check_all(values.clone(), dtype, rows, cols, &Params::V1, &x);
    }
    // Many outliers per group: several batches of the vectorized outlier correction.
    for alpha in [0.02, 0.3, 0.5] {
        let p = Params::new(4, 128, alpha, Grid::Symmetric).unwrap();
        check_all(values.clone(), Dtype::F32, rows, cols, &p, &x);
    }
}

#[test]
fn smollm_shape_with_a_short_last_group() {
    let (rows, cols) = (8, 576);
    let values = gaussish(rows * cols, 11);
    let x = gaussish(cols, 13);
    for bits in 2..=8 {
        for grid in [Grid::Symmetric, Grid::Asymmetric] {
            let p = Params::new(bits, 128, 0.06, grid).unwrap();
            check_all(values.clone(), Dtype::F32, rows, cols, &p, &x);
        }
    }
}

#[test]
fn partial_ties_at_the_threshold() {
    // Half the weights share the threshold magnitude: the tie budget runs out mid-row.
    let (rows, cols) = (6, 300);
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| {
            if i % 2 == 0 {
                0.5
            } else {
                -0.125 * (i % 7) as f32 / 7.0
            }
        })
        .collect();
    for alpha in [0.1, 0.25, 0.37, 0.5] {
        let p = Params::new(4, 64, alpha, Grid::Symmetric).unwrap();
        let x = vec![1.0f32; cols];
        check_all(values.clone(), Dtype::F32, rows, cols, &p, &x);
    }
}

#[test]
fn all_zero_and_rejected_inputs() {
    let (rows, cols) = (3, 100);
    let x = vec![1.0f32; cols];
    check_all(
        vec![0.0; rows * cols],
        Dtype::F32,
        rows,
        cols,
        &Params::V1,
        &x,
    );
    for bad in [f32::NAN, f32::INFINITY, -f32::INFINITY, 3e37] {
        for at in [0, 5, 150, 299] {
            let mut v = gaussish(rows * cols, 3);
            v[at] = bad;
            check_all(v, Dtype::F32, rows, cols, &Params::V1, &x);
        }
    }
}

#[test]
fn v2_shapes_widths_and_dtypes() {
    // Odd columns and short last groups, every width, groups 16..255, all dtypes; α = 0
    // gives rows without outliers.
    for (rows, cols) in [(3, 576), (2, 1031), (4, 17), (1, 7), (2, 255)] {
        let values = gaussish(rows * cols, cols as u64);
        let x = gaussish(cols, 5);
        for bits in 2..=8 {
            for g in [16u16, 33, 64, 128, 255] {
                for alpha in [0.0, 0.05] {
                    let p = Params::new(bits, g, alpha, Grid::Asymmetric)
                        .unwrap()
                        .with_version(FormatVersion::V2)
                        .unwrap();
                    check_all(values.clone(), Dtype::F32, rows, cols, &p, &x);
                }
            }
        }
        for dtype in [Dtype::F16, Dtype::Bf16] {
            check_all(values.clone(), dtype, rows, cols, &Params::V2, &x);
        }
    }
}

#[test]
fn v2_partial_ties_zero_groups_and_rejected_inputs() {
    // Half the weights share the threshold magnitude: the tie budget runs out mid-row; a
    // few groups are all zero, others all positive or all negative.
    let (rows, cols) = (6, 300);
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| match (i / 64) % 5 {
            0 => 0.0,
            1 => 0.01 * (i % 13) as f32,
            2 => -0.01 * (i % 11) as f32,
            _ if i % 2 == 0 => 0.5,
            _ => -0.125 * (i % 7) as f32 / 7.0,
        })
        .collect();
    let x = gaussish(cols, 3);
    for alpha in [0.0, 0.1, 0.25, 0.37, 0.5] {
        for g in [16u16, 64, 100] {
            let p = Params::new(4, g, alpha, Grid::Asymmetric)
                .unwrap()
                .with_version(FormatVersion::V2)
                .unwrap();
            check_all(values.clone(), Dtype::F32, rows, cols, &p, &x);
        }
    }
    check_all(
        vec![0.0; rows * cols],
        Dtype::F32,
        rows,
        cols,
        &Params::V2,
        &x,
    );
    for bad in [f32::NAN, f32::INFINITY, -f32::INFINITY, 3e37] {
        for at in [0, 5, 150, 299, 1799] {
            let mut v = gaussish(rows * cols, 3);
            v[at] = bad;
            check_all(v, Dtype::F32, rows, cols, &Params::V2, &x);
        }
    }
}

#[test]
fn v2_long_rows() {
    // Long rows (over 1024 groups of 16, or 2048 chunks of 8) with ties at the threshold
    // that the budget takes only in part.
    let (rows, cols) = (2, 16411);
    let values: Vec<f32> = gaussish(rows * cols, 17)
        .iter()
        .enumerate()
        .map(|(i, &v)| if i % 5 == 0 { 0.125 } else { v })
        .collect();
    let x = gaussish(cols, 19);
    for (g, alpha) in [(16u16, 0.05), (64, 0.3), (255, 0.05)] {
        let p = Params::new(4, g, alpha, Grid::Asymmetric)
            .unwrap()
            .with_version(FormatVersion::V2)
            .unwrap();
        check_all(values.clone(), Dtype::F32, rows, cols, &p, &x);
    }
}

#[test]
fn backend_selection_by_name() {
    assert_eq!(AnyKernels::by_name("scalar").unwrap().name(), "scalar");
    assert!(AnyKernels::by_name("nope").is_err());
    let auto = AnyKernels::by_name("auto").unwrap();
    assert_eq!(auto, AnyKernels::detect());
    for name in AnyKernels::NAMES {
        match AnyKernels::by_name(name) {
            Ok(b) => assert_eq!(b.name(), name),
            Err(e) => eprintln!("backend {name}: {e}"),
        }
    }
    #[cfg(target_arch = "aarch64")]
    assert_eq!(auto.name(), "neon");
}

#[test]
fn quantize_reports_the_same_rejected_weight() {
    // Selection on clean weights, quantization of weights that gained a bad value (or a
    // subnormal, which is not bad): every format version, every input type, positions in
    // the first, second and last rotation segment of a v3 row.
    let (rows, cols) = (3, 600);
    let clean = gaussish(rows * cols, 5);
    for p in [Params::V1, Params::V2, Params::V3] {
        let sel = adpq_core::select_tensor(&Scalar, Weights::F32(&clean), rows, cols, &p).unwrap();
        let len = packed_len(rows, cols, p.format(), sel.n_outliers).unwrap();
        for b in simd_backends() {
            for bad in [f32::NAN, f32::NEG_INFINITY, 3e37, -3e37, 1e-40] {
                for at in [0, 7, 513, 1799] {
                    let mut v = clean.clone();
                    v[at] = bad;
                    let f16s: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
                    let bf16s: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
                    let inputs = [
                        ("f32", Weights::F32(&v)),
                        ("f16", Weights::F16(&f16s)),
                        ("bf16", Weights::Bf16(&bf16s)),
                    ];
                    for (dtype, w) in inputs {
                        let (mut ps, mut pb) = (vec![0u8; len], vec![0u8; len]);
                        let es =
                            adpq_core::quantize_tensor(&Scalar, w, rows, cols, &p, &sel, &mut ps);
                        let eb = adpq_core::quantize_tensor(&b, w, rows, cols, &p, &sel, &mut pb);
                        let ctx =
                            format!("{} {:?} {dtype} bad {bad} at {at}", b.name(), p.format());
                        // 3e37 is past 2^124 (and f16's infinity). 1e-40 is a valid value,
                        // which may still contradict the clean weights' selection (an
                        // error then, the same from both).
                        assert!(es.is_err() || bad == 1e-40, "{ctx}");
                        assert_eq!(format!("{es:?}"), format!("{eb:?}"), "{ctx}");
                        assert_eq!(ps, pb, "{ctx}");
                    }
                }
            }
        }
    }
}
