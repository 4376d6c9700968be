//! Round-to-nearest (RTN) baselines, applied on the fly to dense weights.
//!
//! Symmetric: per group `Δ = max|w| / (2^(b−1) − 1)`, `code = round(w / Δ)` clamped to
//! `±(2^(b−1) − 1)` (the baseline of `adpq quantize`'s report, `adpq_engine::rtn`).
//! Asymmetric (min-max): `Δ = (max − min) / (2^b − 1)`, `z = round(−min / Δ)`,
//! `code = clamp(round(w / Δ) + z, 0, 2^b − 1)`, `ŵ = (code − z) · Δ`.
//! Steps stay f32 (a stored format would round them to f16), so the baseline is, if
//! anything, flattered.

use std::fmt;
use std::str::FromStr;

/// An RTN grid: bits, group size along a row, symmetric or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtnSpec {
    /// Bits per code (2..=8).
    pub bits: u8,
    /// Weights per group along a row.
    pub group_size: usize,
    /// Min-max grid with a zero point instead of a symmetric absmax grid.
    pub asymmetric: bool,
}

impl RtnSpec {
    /// Nominal storage per weight: the codes plus an f16 step per group (and an f16
    /// minimum for the asymmetric grid).
    pub fn bits_per_weight(&self) -> f64 {
        let per_group = if self.asymmetric { 32.0 } else { 16.0 };
        f64::from(self.bits) + per_group / self.group_size as f64
    }

    /// Writes the RTN reconstruction of one row `w` into `out`.
    pub fn fake_quantize_row(&self, w: &[f32], out: &mut [f32]) {
        for (wg, og) in w
            .chunks(self.group_size)
            .zip(out.chunks_mut(self.group_size))
        {
            if self.asymmetric {
                self.asymmetric_group(wg, og);
            } else {
                self.symmetric_group(wg, og);
            }
        }
    }

    fn symmetric_group(&self, w: &[f32], out: &mut [f32]) {
        let qmax = ((1i32 << (self.bits - 1)) - 1) as f32;
        let max = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        if max == 0.0 {
            out.fill(0.0);
            return;
        }
        let (step, inv) = (max / qmax, qmax / max);
        for (o, &v) in out.iter_mut().zip(w) {
            *o = round_small((v * inv).clamp(-qmax, qmax)) * step;
        }
    }

    fn asymmetric_group(&self, w: &[f32], out: &mut [f32]) {
        let levels = ((1u32 << self.bits) - 1) as f32;
        let (lo, hi) = w
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        if hi <= lo {
            out.copy_from_slice(w);
            return;
        }
        let step = (hi - lo) / levels;
        let inv = 1.0 / step;
        let zero = (-lo * inv).round_ties_even();
        for (o, &v) in out.iter_mut().zip(w) {
            // Clamping to the integer bounds first rounds the same as rounding first.
            let code = round_small((v * inv + zero).clamp(0.0, levels));
            *o = (code - zero) * step;
        }
    }
}

/// Round half to even of `|x| ≤ 2^22` without a libm call (`round_ties_even` is one
/// without SSE4.1): adding and subtracting 1.5·2^23 leaves no fraction bits.
#[inline]
fn round_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

impl fmt::Display for RtnSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let grid = if self.asymmetric { "asym" } else { "sym" };
        write!(f, "rtn-{grid}-g{}-b{}", self.group_size, self.bits)
    }
}

impl FromStr for RtnSpec {
    type Err = String;

    /// `sym` or `asym`, then optional `-gN` (group size, default 128) and `-bN` (bits,
    /// default 4), in any order: `sym`, `asym-g64`, `sym-g32-b3`; an `rtn-` prefix (as
    /// [`Display`](fmt::Display) writes) is accepted.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.strip_prefix("rtn-").unwrap_or(s).split('-');
        let asymmetric = match parts.next() {
            Some("sym") => false,
            Some("asym") => true,
            _ => return Err(format!("`{s}`: an RTN grid starts with sym or asym")),
        };
        let mut spec = RtnSpec {
            bits: 4,
            group_size: 128,
            asymmetric,
        };
        for p in parts {
            let num = |v: &str| v.parse::<usize>().map_err(|e| format!("`{s}`: {p}: {e}"));
            if let Some(v) = p.strip_prefix('g') {
                spec.group_size = num(v)?;
            } else if let Some(v) = p.strip_prefix('b') {
                spec.bits = u8::try_from(num(v)?).map_err(|e| format!("`{s}`: {e}"))?;
            } else {
                return Err(format!("`{s}`: unknown part `{p}` (gN or bN)"));
            }
        }
        if !(2..=8).contains(&spec.bits) || spec.group_size == 0 {
            return Err(format!(
                "`{s}`: bits must be 2..=8 and the group size positive"
            ));
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_small_is_round_half_to_even() {
        for x in [-7.5f32, -6.5, -0.5, 0.49, 0.5, 1.5, 2.5, 3.7, 14.5, 15.0] {
            assert_eq!(round_small(x), x.round_ties_even(), "{x}");
        }
    }

    #[test]
    fn parses_names_and_round_trips_display() {
        let s: RtnSpec = "asym-g64".parse().unwrap();
        assert_eq!(
            s,
            RtnSpec {
                bits: 4,
                group_size: 64,
                asymmetric: true
            }
        );
        assert_eq!(s.to_string().parse::<RtnSpec>().unwrap(), s);
        assert_eq!("sym-b3-g32".parse::<RtnSpec>().unwrap().bits, 3);
        assert!("sym-b9".parse::<RtnSpec>().is_err());
        assert!("rtn".parse::<RtnSpec>().is_err());
        assert!((s.bits_per_weight() - 4.5).abs() < 1e-12);
    }

    #[test]
    fn reconstructions_lie_on_the_grid_within_half_a_step() {
        let w: Vec<f32> = (0..300)
            .map(|i| ((i * 37 % 101) as f32 - 40.0) / 17.0)
            .collect();
        for asymmetric in [false, true] {
            let spec = RtnSpec {
                bits: 4,
                group_size: 128,
                asymmetric,
            };
            let mut out = vec![0f32; w.len()];
            spec.fake_quantize_row(&w, &mut out);
            for (wg, og) in w.chunks(128).zip(out.chunks(128)) {
                let (lo, hi) = wg
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
                let step = if asymmetric {
                    (hi - lo) / 15.0
                } else {
                    lo.abs().max(hi.abs()) / 7.0
                };
                let mut distinct: Vec<i64> = og.iter().map(|v| (v / step).round() as i64).collect();
                distinct.sort_unstable();
                distinct.dedup();
                assert!(distinct.len() <= 16, "{} levels", distinct.len());
                for (&a, &b) in wg.iter().zip(og) {
                    assert!(
                        (a - b).abs() <= step * 0.5 + 1e-5,
                        "{a} -> {b}, step {step}"
                    );
                }
            }
        }
    }
}
