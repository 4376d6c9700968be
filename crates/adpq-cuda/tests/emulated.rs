//! The `.cu` kernels themselves, run on emulated CUDA threads (`host/emulate.hpp`: OS
//! threads per block, barriers, atomics), against the scalar oracle: the selection
//! passes give the oracle's selection, the quantize launches the oracle's bytes (through
//! the core's write path), dequantize its values, the error kernel its sums; the warp
//! products are within the CPU's dot tolerance. Several launch shapes, so grid-stride
//! loops, many blocks, shared-memory histograms merged by atomics, the scans and the
//! atomic byte ORs all run. Format v3 runs its own launches (rows rotated into scratch,
//! extents, units, groups; the inverse rotation after decoding; the activations rotated
//! before the gemm). What this cannot show: a real device's memory model and speed.
//!
//! Needs a C++20 compiler at build time (build.rs); without one the file holds a single
//! test that says SKIPPED, or fails when `ADPQ_REQUIRE_EMULATION=1`.
#![cfg(not(adpq_no_emulation))]

use adpq_core::kernels::dot_tolerance;
use adpq_core::quant::scale_exponent;
use adpq_core::select::select_by_passes;
use adpq_core::{
    bf16, f16, packed_len, quantize_tensor, select_tensor, CpuKernels, FormatVersion, Grid,
    PackedTensor, Params, Q8Activations, Scalar, Weights,
};
use adpq_cuda::emulated::{self, EmulatedScan, Shape};
use adpq_cuda::host::HostJob;
use adpq_engine::rtn::row_error_sums;
use proptest::prelude::*;

const SHAPES: [Shape; 3] = [
    Shape {
        blocks: 1,
        threads: 32,
    },
    Shape {
        blocks: 3,
        threads: 64,
    },
    Shape {
        blocks: 2,
        threads: 256,
    },
];

fn weights(rows: usize, cols: usize, seed: u64, ties: bool) -> Vec<f32> {
    let mut s = seed | 1;
    let hot = (seed as usize) % cols;
    (0..rows * cols)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            let x = (u - 0.5) * 2.0;
            if ties && s.is_multiple_of(5) {
                0.5
            } else if i % cols == hot {
                x * 50.0
            } else if ties && s.is_multiple_of(7) {
                0.0
            } else {
                x * x * x
            }
        })
        .collect()
}

fn check(w: Weights<'_>, rows: usize, cols: usize, params: &Params, shape: Shape) {
    // Selection: the core's histogram passes over the emulated kernels.
    let want = select_tensor(&Scalar, w, rows, cols, params).unwrap();
    let by_passes = select_by_passes(&EmulatedScan::new(w, shape), rows, cols, params).unwrap();
    assert_eq!(by_passes.threshold_bits, want.threshold_bits);
    assert_eq!(by_passes.take_equal, want.take_equal);
    assert_eq!(by_passes.n_outliers, want.n_outliers);
    assert_eq!(by_passes.max_abs_bits, want.max_abs_bits);
    let sel = want;

    let fp = params.format();
    let n = packed_len(rows, cols, fp, sel.n_outliers).unwrap();
    let mut oracle = vec![0u8; n];
    quantize_tensor(&Scalar, w, rows, cols, params, &sel, &mut oracle).unwrap();
    let job = HostJob {
        format: fp,
        scale_exp: scale_exponent(sel.max_abs(), &fp),
        threshold_bits: sel.threshold_bits,
        take_equal: sel.take_equal,
    };
    let sections = emulated::quantize(w, rows, cols, &job, sel.n_outliers, shape).unwrap();
    let mut got = vec![0u8; n];
    sections.write(rows, cols, params, &sel, &mut got).unwrap();
    assert!(
        got == oracle,
        "{rows}x{cols} {params:?} {shape:?}: packed bytes differ"
    );

    let t = PackedTensor::parse(&got).unwrap();
    let mut deq = vec![0f32; rows * cols];
    Scalar.dequantize_rows(&t, 0, &mut deq).unwrap();
    let back = emulated::dequantize(&t, shape);
    assert!(
        back.iter()
            .zip(&deq)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "dequantized values differ"
    );
    let sums = emulated::error_sums(w, &deq, cols, fp.bits, fp.group_size, shape);
    let cpu = row_error_sums(w, &deq, cols, fp.bits, usize::from(fp.group_size));
    assert_eq!(sums, [cpu.signal, cpu.adpq, cpu.rtn], "error sums");

    let batch = 3;
    let xs: Vec<f32> = (0..batch * cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let y = emulated::gemm(&t, &xs, batch, shape);
    for b in 0..batch {
        let x = &xs[b * cols..(b + 1) * cols];
        for r in 0..rows {
            let want = Scalar.dot_row(&t, r, x).unwrap();
            let tol = dot_tolerance(&t, r, x).unwrap();
            let got = y[b * rows + r];
            assert!(
                (got - want).abs() <= tol,
                "gemm {b} row {r}: {got} vs {want}"
            );
        }
    }
    let groups = cols.div_ceil(usize::from(fp.group_size));
    let (mut q, mut sc, mut su) = (vec![0i8; cols], vec![0f32; groups], vec![0i32; groups]);
    // In the tensor's basis (v3: rotated), as the engine's callers make them.
    let a = Q8Activations::quantize_for(&t, &xs[..cols], &mut q, &mut sc, &mut su).unwrap();
    let yq = emulated::gemv_q8(&t, &a, shape);
    let mut cpu = vec![0f32; rows];
    Scalar.gemv_q8(&t, &a, &mut cpu).unwrap();
    let mut xq = vec![0f32; cols];
    a.dequantize(&mut xq);
    for (r, (&got, &want)) in yq.iter().zip(&cpu).enumerate() {
        let tol = dot_tolerance(&t, r, &xq).unwrap();
        assert!((got - want).abs() <= tol, "q8 row {r}: {got} vs {want}");
    }
}

fn v1_params() -> impl Strategy<Value = Params> {
    (
        2u8..=8,
        prop::sample::select(vec![16u16, 20, 64, 128, 300]),
        prop::sample::select(vec![0.0f64, 0.06, 0.2]),
        any::<bool>(),
    )
        .prop_map(|(bits, g, alpha, asym)| {
            let grid = if asym {
                Grid::Asymmetric
            } else {
                Grid::Symmetric
            };
            Params::new(bits, g, alpha, grid).unwrap()
        })
}

fn v2_params() -> impl Strategy<Value = Params> {
    (
        2u8..=8,
        prop::sample::select(vec![16u16, 17, 64, 255]),
        prop::sample::select(vec![0.0f64, 0.05, 0.2]),
    )
        .prop_map(|(bits, g, alpha)| {
            Params::new(bits, g, alpha, Grid::Asymmetric)
                .unwrap()
                .with_version(FormatVersion::V2)
                .unwrap()
        })
}

fn v3_params() -> impl Strategy<Value = Params> {
    (2u8..=8, prop::sample::select(vec![16u16, 32, 64, 512])).prop_map(|(bits, g)| {
        Params::new(bits, g, 0.0, Grid::Asymmetric)
            .unwrap()
            .with_version(FormatVersion::V3)
            .unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        ..ProptestConfig::default()
    })]

    #[test]
    fn v1_kernels_match_the_oracle(
        params in v1_params(),
        rows in 1usize..=9,
        cols in prop::sample::select(vec![1usize, 16, 33, 200, 601]),
        shape in prop::sample::select(SHAPES.to_vec()),
        ties in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let v = weights(rows, cols, seed, ties);
        check(Weights::F32(&v), rows, cols, &params, shape);
    }

    #[test]
    fn v2_kernels_match_the_oracle(
        params in v2_params(),
        rows in 1usize..=9,
        cols in prop::sample::select(vec![1usize, 16, 33, 200, 601]),
        shape in prop::sample::select(SHAPES.to_vec()),
        ties in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let v = weights(rows, cols, seed, ties);
        check(Weights::F32(&v), rows, cols, &params, shape);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        ..ProptestConfig::default()
    })]

    #[test]
    fn v3_kernels_match_the_oracle(
        params in v3_params(),
        rows in 1usize..=9,
        cols in prop::sample::select(vec![1usize, 16, 33, 200, 601, 1100]),
        shape in prop::sample::select(SHAPES.to_vec()),
        ties in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let v = weights(rows, cols, seed, ties);
        check(Weights::F32(&v), rows, cols, &params, shape);
    }
}

/// f16 and bf16 storage, read by the kernels as stored.
#[test]
fn half_storage() {
    let (rows, cols) = (5, 130);
    let v = weights(rows, cols, 3, true);
    let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
    let b: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
    for p in [
        Params::V1,
        Params::V2,
        Params::V3,
        Params::v3_for("down_proj"),
    ] {
        check(Weights::F16(&h), rows, cols, &p, SHAPES[1]);
        check(Weights::Bf16(&b), rows, cols, &p, SHAPES[1]);
    }
}

/// Many groups per thread and a long scan (1031 groups over 64 threads).
#[test]
fn many_groups() {
    let (rows, cols) = (41, 401);
    let v = weights(rows, cols, 9, true);
    check(Weights::F32(&v), rows, cols, &Params::V2, SHAPES[1]);
    check(Weights::F32(&v), rows, cols, &Params::V3, SHAPES[2]);
    check(
        Weights::F32(&v),
        rows,
        cols,
        &Params::new(3, 16, 0.1, Grid::Asymmetric).unwrap(),
        SHAPES[0],
    );
}

/// A rejected weight: the histogram reports the first one, the quantize launches refuse.
#[test]
fn rejected_weights() {
    let (rows, cols) = (3, 100);
    let mut v = weights(rows, cols, 4, false);
    v[250] = f32::INFINITY;
    v[170] = f32::NAN;
    let want = select_tensor(&Scalar, Weights::F32(&v), rows, cols, &Params::V1).unwrap_err();
    let got = select_by_passes(
        &EmulatedScan::new(Weights::F32(&v), SHAPES[2]),
        rows,
        cols,
        &Params::V1,
    )
    .unwrap_err();
    assert_eq!(got.to_string(), want.to_string());
    let job = HostJob {
        format: Params::V1.format(),
        scale_exp: 0,
        threshold_bits: 0x3F00_0000,
        take_equal: u64::MAX,
    };
    assert!(emulated::quantize(Weights::F32(&v), rows, cols, &job, 300, SHAPES[1]).is_none());
    let v3 = HostJob {
        format: Params::V3.format(),
        ..job
    };
    assert!(emulated::quantize(Weights::F32(&v), rows, cols, &v3, 0, SHAPES[1]).is_none());
}
