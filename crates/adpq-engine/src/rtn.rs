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
    let mut scratch = Vec::new();
    for (r, deq_row) in deq.chunks_exact(cols).enumerate() {
        if let Some(row) = w.get(r * cols, (r + 1) * cols) {
            add_error_sums(&mut s, row, deq_row, bits, group_size, &mut scratch);
        }
    }
    s
}

/// Adds to `s` the error sums (as [`row_error_sums`] computes them) of consecutive whole
/// groups of one row, from a group boundary: `w` original, `deq` dequantized, of the same
/// length (the last group may be a row's short one). Adding a row's pieces in column
/// order gives exactly the sums of the whole row, so a long row needs only a piece in
/// memory. `scratch` holds F16/BF16 weights converted to f32 (F32 ones are read in place).
pub fn add_error_sums(
    s: &mut ErrorSums,
    w: Weights<'_>,
    deq: &[f32],
    bits: u8,
    group_size: usize,
    scratch: &mut Vec<f32>,
) {
    let qmax = ((1i32 << (bits - 1)) - 1) as f32;
    let orig = match w {
        Weights::F32(v) => v,
        _ => {
            scratch.resize(w.len(), 0.0);
            to_f32(w, scratch);
            scratch.as_slice()
        }
    };
    for (wg, dg) in orig.chunks(group_size).zip(deq.chunks(group_size)) {
        let g = group_sums(wg, dg, qmax);
        s.signal += g[0];
        s.adpq += g[1];
        s.rtn += g[2];
    }
    s.count += w.len() as u64;
}

const LANES: usize = 8;

/// `[Σw², Σ(w − ŵ)², Σ(w − rtn(w))²]` of one group, summed in f64.
#[inline]
fn group_sums(wg: &[f32], dg: &[f32], qmax: f32) -> [f64; 3] {
    let n = wg.len() / LANES * LANES;
    let mut m = [0f32; LANES];
    for c in wg[..n].chunks_exact(LANES) {
        for l in 0..LANES {
            m[l] = m[l].max(c[l].abs());
        }
    }
    let max = wg[n..]
        .iter()
        .fold(m.iter().fold(0f32, |a, &b| a.max(b)), |a, v| a.max(v.abs()));
    let (step, inv) = if max > 0.0 {
        (max / qmax, qmax / max)
    } else {
        (0.0, 0.0)
    };
    // Round half to even for |x| <= 2^22 (x is clamped to ±qmax first): what numpy does.
    const MAGIC: f32 = 12_582_912.0;
    let one = |v: f32, d: f32| -> [f64; 3] {
        let x = (v * inv).clamp(-qmax, qmax);
        let q = ((x + MAGIC) - MAGIC) * step;
        let (v, d, q) = (f64::from(v), f64::from(d), f64::from(q));
        [v * v, (v - d) * (v - d), (v - q) * (v - q)]
    };
    let mut acc = [[0f64; LANES]; 3];
    for (wc, dc) in wg[..n].chunks_exact(LANES).zip(dg[..n].chunks_exact(LANES)) {
        for l in 0..LANES {
            let e = one(wc[l], dc[l]);
            acc[0][l] += e[0];
            acc[1][l] += e[1];
            acc[2][l] += e[2];
        }
    }
    let mut out = [0f64; 3];
    for (o, a) in out.iter_mut().zip(&acc) {
        *o = a.iter().sum();
    }
    for (&v, &d) in wg[n..].iter().zip(&dg[n..]) {
        let e = one(v, d);
        for k in 0..3 {
            out[k] += e[k];
        }
    }
    out
}

/// Converts weights to f32 into `out` (`out.len() == w.len()`).
pub fn to_f32(w: Weights<'_>, out: &mut [f32]) {
    match w {
        Weights::F32(s) => out.copy_from_slice(s),
        Weights::F16(s) => out.iter_mut().zip(s).for_each(|(o, v)| *o = v.to_f32()),
        Weights::Bf16(s) => adpq_core::bf16_to_f32_slice(s, out),
    }
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
                let (mut s, mut scratch) = (ErrorSums::default(), Vec::new());
                for r in 0..2 {
                    for c in (0..cols).step_by(piece) {
                        let end = (c + piece).min(cols);
                        let wp = w.get(r * cols + c, r * cols + end).unwrap();
                        let dp = &deq[r * cols + c..r * cols + end];
                        add_error_sums(&mut s, wp, dp, 4, g, &mut scratch);
                    }
                }
                assert_eq!(s, whole, "pieces of {piece}");
            }
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
