//! CudaEngine. Without a driver (this project's CI machines): `new` is an error, never a
//! panic. With a device, the `#[ignore]`d tests check the engine against the CPU oracle:
//! `cargo test -p adpq-cuda --test engine -- --ignored` (they fail, not pass, when no
//! device is there).

use adpq_core::kernels::dot_tolerance;
use adpq_core::{
    packed_len, quantize_tensor, select_tensor, CpuKernels, FormatVersion, Grid, OutDtype,
    PackedTensor, Params, Q8Activations, Scalar, Weights,
};
use adpq_cuda::{driver_present, CudaEngine, CudaError};
use adpq_engine::rtn::row_error_sums;
use adpq_engine::Engine;

/// Without libcuda, `new` returns `NoDriver` (cudarc itself would panic).
#[test]
fn new_without_a_driver_is_an_error() {
    if driver_present() {
        println!("SKIPPED: a CUDA driver is present here; this test needs it absent");
        return;
    }
    match CudaEngine::new() {
        Err(CudaError::NoDriver) => {}
        other => panic!("expected NoDriver, got {other:?}"),
    }
    let msg = CudaEngine::new().unwrap_err().to_string();
    assert!(msg.contains("no CUDA driver"), "{msg}");
}

fn device() -> CudaEngine {
    CudaEngine::new().unwrap_or_else(|e| panic!("these tests need a CUDA device: {e}"))
}

fn weights(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..rows * cols)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let x = ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0;
            // A hot column and a few ties at 0.5.
            if i % cols == 3 {
                x * 40.0
            } else if i % 97 == 0 {
                0.5
            } else {
                x
            }
        })
        .collect()
}

fn params() -> Vec<Params> {
    vec![
        Params::V1,
        Params::new(3, 32, 0.1, Grid::Asymmetric).unwrap(),
        Params::new(4, 300, 0.06, Grid::Symmetric).unwrap(),
        Params::V2,
        Params::new(5, 100, 0.3, Grid::Asymmetric)
            .unwrap()
            .with_version(FormatVersion::V2)
            .unwrap(),
        Params::V3,
        Params::v3_for("down_proj"),
        Params::new(3, 512, 0.0, Grid::Asymmetric)
            .unwrap()
            .with_version(FormatVersion::V3)
            .unwrap(),
    ]
}

/// Selection, packed bytes, dequantized values and error sums equal the CPU oracle's;
/// gemv, gemm and int8 gemv are within the CPU's dot tolerance. Formats v1, v2 and v3.
#[test]
#[ignore = "needs a CUDA device"]
fn engine_matches_the_oracle() {
    let e = device();
    for (rows, cols) in [(1, 16), (7, 200), (33, 576), (64, 1031)] {
        let v = weights(rows, cols, (rows * cols) as u64);
        let w = Weights::F32(&v);
        for p in params() {
            let want = select_tensor(&Scalar, w, rows, cols, &p).unwrap();
            let t = e.load(w, rows, cols).unwrap();
            let sel = e.select(&t, &p).unwrap();
            assert_eq!(sel.threshold_bits, want.threshold_bits);
            assert_eq!(sel.take_equal, want.take_equal);
            assert_eq!(sel.n_outliers, want.n_outliers);
            assert_eq!(sel.max_abs_bits, want.max_abs_bits);
            let n = packed_len(rows, cols, p.format(), sel.n_outliers).unwrap();
            let (mut got, mut oracle) = (vec![0u8; n], vec![0u8; n]);
            e.quantize(&t, &p, &sel, &mut got).unwrap();
            quantize_tensor(&Scalar, w, rows, cols, &p, &sel, &mut oracle).unwrap();
            assert!(got == oracle, "{rows}x{cols} {p:?}: packed bytes differ");

            let packed = PackedTensor::parse(&got).unwrap();
            let dp = e.load_packed(packed).unwrap();
            let mut deq = vec![0u8; rows * cols * 4];
            e.dequantize(&dp, OutDtype::F32, &mut deq).unwrap();
            let mut want = vec![0f32; rows * cols];
            Scalar.dequantize_rows(&packed, 0, &mut want).unwrap();
            let want_bytes: Vec<u8> = want.iter().flat_map(|x| x.to_le_bytes()).collect();
            assert!(deq == want_bytes, "dequantized values differ");

            let sums = e.error_sums(&t, &dp).unwrap();
            let cpu = row_error_sums(w, &want, cols, p.bits(), usize::from(p.group_size()));
            assert_eq!(
                (sums.signal, sums.adpq, sums.rtn),
                (cpu.signal, cpu.adpq, cpu.rtn)
            );

            let xs: Vec<f32> = (0..3 * cols).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut y = vec![0f32; 3 * rows];
            e.gemm(&dp, &xs, 3, &mut y).unwrap();
            // Resident vectors: the same products without a host round trip in between.
            let dx = e.upload(&xs, 3).unwrap();
            let mut dy = e.upload(&[0f32; 3], 3).unwrap();
            e.gemm_resident(&dp, &dx, &mut dy).unwrap();
            let mut back = vec![0f32; 3 * rows];
            e.download(&dy, &mut back).unwrap();
            assert_eq!(back, y, "resident gemm");
            let mut part = vec![0f32; cols * rows.min(2)];
            e.dequantize_rows(&dp, rows - rows.min(2), &mut part)
                .unwrap();
            assert_eq!(
                &part[..],
                &want[(rows - rows.min(2)) * cols..],
                "dequantize_rows"
            );
            for b in 0..3 {
                let x = &xs[b * cols..(b + 1) * cols];
                let mut y1 = vec![0f32; rows];
                e.gemv(&dp, x, &mut y1).unwrap();
                assert_eq!(&y1[..], &y[b * rows..(b + 1) * rows], "gemm vector {b}");
                for (r, &got) in y1.iter().enumerate() {
                    let cpu = Scalar.dot_row(&packed, r, x).unwrap();
                    let tol = dot_tolerance(&packed, r, x).unwrap();
                    assert!((got - cpu).abs() <= tol, "row {r}: {got} vs {cpu}");
                }
            }
            let g = usize::from(p.group_size());
            let groups = cols.div_ceil(g);
            let (mut q, mut sc, mut su) = (vec![0i8; cols], vec![0f32; groups], vec![0i32; groups]);
            // In the tensor's basis (v3: rotated).
            let a = Q8Activations::quantize_for(&packed, &xs[..cols], &mut q, &mut sc, &mut su)
                .unwrap();
            let mut yq = vec![0f32; rows];
            e.gemv_q8(&dp, &a, &mut yq).unwrap();
            let mut cpu = vec![0f32; rows];
            Scalar.gemv_q8(&packed, &a, &mut cpu).unwrap();
            let mut xq = vec![0f32; cols];
            a.dequantize(&mut xq);
            for (r, (&got, &want)) in yq.iter().zip(&cpu).enumerate() {
                let tol = dot_tolerance(&packed, r, &xq).unwrap();
                assert!((got - want).abs() <= tol, "q8 row {r}");
            }
        }
    }
}

/// f16 and bf16 weights are read as stored; a NaN is the core's error naming it.
#[test]
#[ignore = "needs a CUDA device"]
fn half_weights_and_rejected_values() {
    let e = device();
    let (rows, cols) = (9, 130);
    let v = weights(rows, cols, 5);
    let h: Vec<adpq_core::f16> = v.iter().map(|&x| adpq_core::f16::from_f32(x)).collect();
    let b: Vec<adpq_core::bf16> = v.iter().map(|&x| adpq_core::bf16::from_f32(x)).collect();
    for w in [Weights::F16(&h), Weights::Bf16(&b)] {
        for p in params() {
            let sel = select_tensor(&Scalar, w, rows, cols, &p).unwrap();
            let t = e.load(w, rows, cols).unwrap();
            assert_eq!(e.select(&t, &p).unwrap(), sel);
            let n = packed_len(rows, cols, p.format(), sel.n_outliers).unwrap();
            let (mut got, mut oracle) = (vec![0u8; n], vec![0u8; n]);
            e.quantize(&t, &p, &sel, &mut got).unwrap();
            quantize_tensor(&Scalar, w, rows, cols, &p, &sel, &mut oracle).unwrap();
            assert!(got == oracle, "packed bytes differ");
        }
    }
    let mut bad = v.clone();
    bad[150] = f32::NAN;
    let t = e.load(Weights::F32(&bad), rows, cols).unwrap();
    let err = e.select(&t, &Params::V1).unwrap_err().to_string();
    let want = select_tensor(&Scalar, Weights::F32(&bad), rows, cols, &Params::V1)
        .unwrap_err()
        .to_string();
    assert_eq!(err, want);
}
