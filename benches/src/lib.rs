//! Inputs shared by the criterion benches of `adpq-bench` (see `ops.rs` beside `src/`).
//!
//! Every backend and every peer (candle-core, with the `candle` feature) is measured on
//! the same deterministic data: a Gaussian-like weight matrix and activation vector.
#![deny(missing_docs)]

/// The bench shape: `ADPQ_BENCH_SHAPE=ROWSxCOLS` or 4096x4096.
pub fn shape() -> (usize, usize) {
    std::env::var("ADPQ_BENCH_SHAPE")
        .ok()
        .and_then(|s| {
            let (r, c) = s.split_once('x')?;
            Some((r.trim().parse().ok()?, c.trim().parse().ok()?))
        })
        .unwrap_or((4096, 4096))
}

/// Whether `ADPQ_BENCH_QUICK` asks for short measurements (what `cargo xtask bench` sets).
pub fn quick() -> bool {
    std::env::var_os("ADPQ_BENCH_QUICK").is_some_and(|v| v != "0")
}

/// Deterministic pseudo-Gaussian values (sum of four uniforms, σ ≈ 0.03), like the
/// weights of a trained linear layer, with a heavier tail from every 97th value.
pub fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut u = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n)
        .map(|i| {
            let g = (u() + u() + u() + u() - 2.0) * 0.05;
            if i % 97 == 0 {
                g * 4.0
            } else {
                g
            }
        })
        .collect()
}
