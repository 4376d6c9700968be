//! Format v2 end to end on the scalar oracle and every kernel set: quantize, parse,
//! dequantize, dot products, and what the search buys over version 1.

use adpq_core::{
    kernels::dot_tolerance, packed_len, AnyKernels, CpuKernels, FormatVersion, PackedTensor,
    Params, Scalar, Weights,
};

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
    let sel = k.select(Weights::F32(w), rows, cols, p).unwrap();
    let mut buf = vec![0u8; packed_len(rows, cols, p.format(), sel.n_outliers).unwrap()];
    k.quantize(Weights::F32(w), rows, cols, p, &sel, &mut buf)
        .unwrap();
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

        let p1 = Params {
            group_size: 64,
            alpha: 0.05,
            ..Params::DEFAULT
        };
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
