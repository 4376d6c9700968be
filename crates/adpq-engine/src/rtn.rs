//! Error statistics, and the baseline every report compares AdpQ with: plain symmetric
//! round-to-nearest (RTN) at the same bits and group size.
//!
//! RTN here is per-group absmax scaling: `Δ = max|w| / (2^(b−1) − 1)`,
//! `code = round_ties_even(w / Δ)` clamped to `±(2^(b−1) − 1)`, `ŵ = code · Δ`, with Δ kept
//! in f32 (a real RTN format would store it rounded, e.g. as f16: the baseline is, if
//! anything, slightly flattered).

use adpq_core::Weights;
use serde::Serialize;

/// Sums of squares over some weights, accumulated in f64.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ErrorSums {
    /// Weights counted.
    pub count: u64,
    /// `Σ w²`.
    pub signal: f64,
    /// `Σ (w − ŵ)²` of AdpQ.
    pub adpq: f64,
    /// `Σ (w − ŵ)²` of the RTN baseline.
    pub rtn: f64,
}

impl ErrorSums {
    /// Adds another block's sums.
    pub fn merge(self, o: ErrorSums) -> ErrorSums {
        ErrorSums {
            count: self.count + o.count,
            signal: self.signal + o.signal,
            adpq: self.adpq + o.adpq,
            rtn: self.rtn + o.rtn,
        }
    }

    /// AdpQ's relative MSE, `Σ(w − ŵ)² / Σ w²` (0 for an all-zero tensor).
    pub fn rel_mse(&self) -> f64 {
        ratio(self.adpq, self.signal)
    }

    /// The RTN baseline's relative MSE.
    pub fn rtn_rel_mse(&self) -> f64 {
        ratio(self.rtn, self.signal)
    }

    /// AdpQ's signal-to-quantization-noise ratio in dB, `10·log10(Σw² / Σ(w − ŵ)²)`
    /// (`+inf` when the error is zero).
    pub fn sqnr_db(&self) -> f64 {
        sqnr(self.signal, self.adpq)
    }

    /// The RTN baseline's SQNR in dB.
    pub fn rtn_sqnr_db(&self) -> f64 {
        sqnr(self.signal, self.rtn)
    }
}

fn ratio(err: f64, signal: f64) -> f64 {
    if signal > 0.0 {
        err / signal
    } else {
        0.0
    }
}

fn sqnr(signal: f64, err: f64) -> f64 {
    if err > 0.0 {
        10.0 * (signal / err).log10()
    } else {
        f64::INFINITY
    }
}

/// Error sums of whole rows: `w` (original) against `deq` (AdpQ dequantized), plus RTN at
/// `bits` and `group_size` computed on the fly. `w.len() == deq.len()`, a multiple of `cols`.
///
/// The RTN reconstruction is computed in f32 (as a real RTN kernel would); differences
/// and squares are taken and summed in f64, over 8 independent lanes within a group, so
/// weights near the f32 limit (|w| ~ 1e36, whose squares overflow f32) give finite sums.
/// The order is fixed (it depends on the shape only), so the result is deterministic.
pub fn row_error_sums(
    w: Weights<'_>,
    deq: &[f32],
    cols: usize,
    bits: u8,
    group_size: usize,
) -> ErrorSums {
    let mut s = ErrorSums::default();
    for (r, deq_row) in deq.chunks_exact(cols).enumerate() {
        if let Some(row) = w.get(r * cols, (r + 1) * cols) {
            add_error_sums(&mut s, row, deq_row, bits, group_size);
        }
    }
    s
}

/// Adds to `s` the error sums (as [`row_error_sums`] computes them) of consecutive whole
/// groups of one row, from a group boundary: `w` original, `deq` dequantized, of the same
/// length (the last group may be a row's short one). Adding a row's pieces in column
/// order gives exactly the sums of the whole row, so a long row needs only a piece in
/// memory. The arithmetic is the core's [`adpq_core::stats::add_error_sums`] (what every
/// kernel set's [`CpuKernels::add_error_sums`](adpq_core::CpuKernels::add_error_sums)
/// runs, bit for bit).
pub fn add_error_sums(s: &mut ErrorSums, w: Weights<'_>, deq: &[f32], bits: u8, group_size: usize) {
    add_sums(
        s,
        &adpq_core::kernels::Scalar::new(),
        w,
        deq,
        bits,
        group_size,
    );
}

/// [`add_error_sums`] with kernel set `k`.
pub(crate) fn add_sums<K: adpq_core::CpuKernels>(
    s: &mut ErrorSums,
    k: &K,
    w: Weights<'_>,
    deq: &[f32],
    bits: u8,
    group_size: usize,
) {
    let mut sums = [s.signal, s.adpq, s.rtn];
    k.add_error_sums(&mut sums, w, deq, bits, group_size);
    [s.signal, s.adpq, s.rtn] = sums;
    s.count += w.len() as u64;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtn_exact_on_grid_values() {
        // Values on the 4-bit grid of their group: RTN is exact.
        let w: Vec<f32> = (0..32).map(|i| ((i % 15) as f32 - 7.0) * 0.5).collect();
        let s = row_error_sums(Weights::F32(&w), &w, 32, 4, 16);
        assert_eq!(s.rtn, 0.0);
        assert_eq!(s.adpq, 0.0);
        assert_eq!(s.count, 32);
        assert!(s.sqnr_db().is_infinite());
    }

    #[test]
    fn huge_weights_give_finite_sums() {
        // Squares of 1e36 overflow f32 (max ~3.4e38); the sums are f64.
        let w: Vec<f32> = (0..256)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 1e36)
            .collect();
        let deq: Vec<f32> = w.iter().map(|v| v * 0.99).collect();
        let s = row_error_sums(Weights::F32(&w), &deq, 128, 4, 128);
        assert!(s.signal.is_finite() && s.signal > 1e72, "{s:?}");
        assert!(s.adpq.is_finite() && s.rtn.is_finite(), "{s:?}");
        assert!((s.rel_mse() - 1e-4).abs() < 1e-6, "{s:?}");
        assert!(s.rtn_rel_mse() > 0.0 && s.rtn_rel_mse() < 1.0, "{s:?}");
        // Same relative figures as the same weights scaled down.
        let small: Vec<f32> = w.iter().map(|v| v * 1e-36).collect();
        let small_deq: Vec<f32> = small.iter().map(|v| v * 0.99).collect();
        let t = row_error_sums(Weights::F32(&small), &small_deq, 128, 4, 128);
        assert!((s.rtn_rel_mse() / t.rtn_rel_mse() - 1.0).abs() < 1e-3);
        // Opposite signs at the f32 limit: the difference overflows f32, not f64.
        let w = [f32::MAX; 16];
        let deq = [-f32::MAX; 16];
        let s = row_error_sums(Weights::F32(&w), &deq, 16, 4, 16);
        assert!(
            s.adpq.is_finite() && (s.rel_mse() - 4.0).abs() < 1e-9,
            "{s:?}"
        );
    }

    /// A row's sums added piece by piece (whole groups, F32 and F16) equal its sums.
    #[test]
    fn pieces_add_up_to_the_row() {
        let (cols, g) = (1000, 64);
        let w: Vec<f32> = (0..2 * cols)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let deq: Vec<f32> = w.iter().map(|v| v * 0.97 + 0.001).collect();
        let h: Vec<adpq_core::f16> = w.iter().map(|&v| adpq_core::f16::from_f32(v)).collect();
        for w in [Weights::F32(&w), Weights::F16(&h)] {
            let whole = row_error_sums(w, &deq, cols, 4, g);
            for piece in [g, 3 * g, cols] {
                let mut s = ErrorSums::default();
                for r in 0..2 {
                    for c in (0..cols).step_by(piece) {
                        let end = (c + piece).min(cols);
                        let wp = w.get(r * cols + c, r * cols + end).unwrap();
                        let dp = &deq[r * cols + c..r * cols + end];
                        add_error_sums(&mut s, wp, dp, 4, g);
                    }
                }
                assert_eq!(s, whole, "pieces of {piece}");
            }
        }
    }

    /// Every kernel set adds the same sums bit for bit (the SIMD ones run the core's code
    /// in their vector registers), for every dtype, short groups and tails; and a group
    /// longer than the core's conversion buffer (BF16, one weight at a time) sums as its
    /// F32 values do.
    #[test]
    fn kernel_sets_add_identical_sums() {
        use adpq_core::kernels::{AnyKernels, Scalar};
        use adpq_core::{bf16, f16, CpuKernels};
        let n = 3000;
        let w: Vec<f32> = (0..n)
            .map(|i| {
                let x = ((i * 7919 % 1013) as f32 / 506.0) - 1.0;
                x * x * x * [1.0, 3e-3, 40.0][i % 3]
            })
            .collect();
        let deq: Vec<f32> = w.iter().map(|v| v * 0.97 + 0.001).collect();
        let h: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let b: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let b32: Vec<f32> = b.iter().map(|v| v.to_f32()).collect();
        let sums = |k: &dyn Fn(&mut [f64; 3], Weights<'_>, usize), w: Weights<'_>, g| {
            let mut s = [0f64; 3];
            k(&mut s, w, g);
            s.map(f64::to_bits)
        };
        let oracle = |s: &mut [f64; 3], w: Weights<'_>, g| {
            Scalar::new().add_error_sums(s, w, &deq[..w.len()], 5, g)
        };
        let best = |s: &mut [f64; 3], w: Weights<'_>, g| {
            AnyKernels::detect().add_error_sums(s, w, &deq[..w.len()], 5, g)
        };
        for g in [1, 7, 8, 64, 100, 1024, 1500, 3000] {
            for w in [Weights::F32(&w), Weights::F16(&h), Weights::Bf16(&b)] {
                assert_eq!(sums(&best, w, g), sums(&oracle, w, g), "g {g} {w:?}");
                let short = w.get(0, n - 5).unwrap();
                assert_eq!(sums(&best, short, g), sums(&oracle, short, g), "g {g}");
            }
            let (wb, wf) = (Weights::Bf16(&b), Weights::F32(&b32));
            assert_eq!(
                sums(&best, wb, g),
                sums(&oracle, wf, g),
                "g {g}: bf16 = f32"
            );
            assert_ne!(sums(&oracle, wf, g)[1], 0, "g {g}");
        }
    }

    #[test]
    fn rtn_error_bounded_by_half_step() {
        let w: Vec<f32> = (0..200)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let s = row_error_sums(Weights::F32(&w), &w, 100, 4, 32);
        let max_step = 1.0f64 / 7.0;
        assert!(s.rtn > 0.0 && s.rtn <= 200.0 * (max_step / 2.0).powi(2));
        assert!(s.rtn_rel_mse() > 0.0 && s.rtn_sqnr_db() > 0.0);
    }
}
