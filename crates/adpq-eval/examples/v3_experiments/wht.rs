//! The gemv cost of a rotation: a fast Walsh–Hadamard transform of the activation vector
//! (random signs, then blocks of at most 512) against a v2 gemv of the same width through
//! the engine. A timing example (median of repeated batches), not a test.

use std::time::Instant;

use adpq_core::{packed_len, AnyKernels, PackedTensor, Params, Weights};
use adpq_engine::{CpuEngine, Engine};

use crate::rotate::{Rht, Rng};

/// Median seconds per call of `f`, over 7 batches of enough calls for ~30 ms each.
fn time(mut f: impl FnMut()) -> f64 {
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed().as_secs_f64() < 0.03 {
        f();
        n += 1;
    }
    let mut v: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_secs_f64() / n as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[3]
}

/// One thread for both (the engine's gemv is rayon-parallel over rows; the transform
/// would run once per vector on one thread).
pub fn run() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(run_1);
}

fn run_1() {
    let engine = CpuEngine::new(AnyKernels::detect());
    println!("| rows × cols | v2 gemv (µs) | FWHT of x (µs) | FWHT / gemv |");
    println!("|---|---|---|---|");
    for (rows, cols) in [
        (576, 576),
        (1536, 576),
        (576, 1536),
        (2048, 2048),
        (4096, 4096),
    ] {
        let mut rng = Rng(rows as u64 * 31 + cols as u64);
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.normal() as f32).collect();
        let p = Params::V2_PRESET;
        let t = engine.load(Weights::F32(&w), rows, cols).unwrap();
        let sel = engine.select(&t, &p).unwrap();
        let mut buf = vec![0u8; packed_len(rows, cols, p.format(), sel.n_outliers).unwrap()];
        engine.quantize(&t, &p, &sel, &mut buf).unwrap();
        let packed = engine
            .load_packed(PackedTensor::parse(&buf).unwrap())
            .unwrap();
        let x: Vec<f32> = (0..cols).map(|_| rng.normal() as f32).collect();
        let mut y = vec![0f32; rows];
        let gemv = time(|| engine.gemv(&packed, &x, &mut y).unwrap());
        let h = Rht::new(cols, 512, 1);
        let mut xr = x.clone();
        let fwht = time(|| {
            xr.copy_from_slice(&x);
            h.forward(&mut xr);
        });
        println!(
            "| {rows} × {cols} | {:.1} | {:.2} | {:.1} % |",
            gemv * 1e6,
            fwht * 1e6,
            100.0 * fwht / gemv
        );
    }
}
