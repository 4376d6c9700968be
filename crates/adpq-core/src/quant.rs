//! The per-group grid arithmetic, shared by every backend.
//!
//! Each grid (inliers, outliers) of a group has a step `Δ = h · 2^e`, where `h` is an f16
//! stored in the group record and `e` is one per-tensor exponent (header field
//! `scale_exp`). `h` is the exact step rounded to the nearest f16 (rounding up instead
//! measured about 0.1 % more squared error on the parity vectors). Every member of a grid
//! reconstructs within `Δ/2 + (2^b − 1) · |Δ − Δ_exact|` of its value: half a step, plus
//! the f16 rounding of the step at the clamped end of the range. Codes are
//! `round_ties_even(w · (1/Δ))` with `1/Δ` computed once per grid in f32: SIMD backends
//! perform the same f32 operations and so produce identical codes.
//!
//! The range is bounded at both ends: weights at or above 2^124 are rejected (the
//! exponent cannot go higher), and so are nonzero tensors whose largest magnitude is
//! below [`MIN_MAX_ABS`] (2^-100): with the exponent clamped at [`MIN_SCALE_EXP`] their
//! steps would fall below f16's normal range and the tensor would come back zeroed.
//! Keeping `e ≥ -102` also keeps every step a normal f32, so `1/Δ` never overflows.

use half::f16;

use crate::error::{Error, Result};
use crate::params::{FormatParams, FormatVersion, Grid};

/// Smallest per-tensor scale exponent: keeps `h · 2^e` a normal f32 for every f16 `h`.
pub const MIN_SCALE_EXP: i32 = -102;
/// Largest per-tensor scale exponent: keeps `65504 · 2^e` finite.
pub const MAX_SCALE_EXP: i32 = 111;

/// Smallest nonzero largest-magnitude of a tensor the quantizer accepts: 2^-100
/// (about 7.9e-31). Below it the tensor's largest step (`max|W| / L`, `L ≤ 127.5`) would be
/// below f16's normal range even at [`MIN_SCALE_EXP`], so the steps lose precision and
/// all-subnormal tensors decode to zero; such tensors are refused with
/// [`Error::TooSmall`]. At and above it the largest step is a normal f16 and the error
/// bound holds relative to the tensor's scale as for any other tensor.
pub const MIN_MAX_ABS: f32 = f32::from_bits((127 - 100) << 23);

/// Checks that a tensor whose largest magnitude is `max_abs` can be quantized faithfully:
/// zero (every code decodes to 0, exactly) or at least [`MIN_MAX_ABS`].
pub fn check_magnitude(max_abs: f32) -> Result<()> {
    if max_abs > 0.0 && max_abs < MIN_MAX_ABS {
        return Err(Error::TooSmall { max_abs });
    }
    Ok(())
}

/// `2^e` as an f32, for `e` in `-126..=127`.
#[inline]
pub fn pow2(e: i32) -> f32 {
    f32::from_bits(((e + 127) as u32) << 23)
}

/// The per-tensor scale exponent for a tensor whose largest magnitude is `max_abs`.
///
/// It puts the largest possible step of the tensor in `[2^14, 2^15)` in f16 units, which
/// leaves f16's whole normal range (2^29) for groups with smaller values.
pub fn scale_exponent(max_abs: f32, fp: &FormatParams) -> i8 {
    // NaN never reaches here (inputs are validated); zero needs no exponent.
    if max_abs.is_nan() || max_abs <= 0.0 {
        return 0;
    }
    // v2's largest stored field is the outlier step, at most `max_abs / (2^(b-1) - 1)`;
    // its inlier units are 255 times smaller than their steps.
    // v3's largest is the minimum unit, at most `√B · max_abs / 63` after rotation
    // (`√B ≤ 32`).
    let levels = match (fp.version, fp.grid) {
        (FormatVersion::V2, _) | (FormatVersion::V1, Grid::Symmetric) => f64::from(fp.sym_qmax()),
        (FormatVersion::V1, Grid::Asymmetric) => f64::from(fp.code_max()) / 2.0,
        (FormatVersion::V3, _) => f64::from(fp.field_max()) / 32.0,
    };
    let largest_step = f64::from(max_abs) / levels;
    let e = libm::floor(libm::log2(largest_step)) as i32 - 14;
    e.clamp(MIN_SCALE_EXP, MAX_SCALE_EXP) as i8
}

/// Rounds to the nearest integer, ties to even, for `|x| <= 2^22` (callers clamp first).
/// The magic-number trick is what SIMD `round` instructions compute.
#[inline(always)]
pub fn round_ties_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    (x + MAGIC) - MAGIC
}

/// One grid of one group, ready to encode and decode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridScale {
    /// Stored f16 step bits (`h`).
    pub h: u16,
    /// Stored zero point (asymmetric) or the fixed offset `2^(b-1)` (symmetric).
    pub offset: i32,
    /// `Δ = h · 2^e` in f32.
    pub step: f32,
    /// `1/Δ` in f32 (0 when Δ is 0).
    pub inv: f32,
}

impl GridScale {
    /// A grid with no members: step 0, every code decodes to 0.
    pub fn empty(fp: &FormatParams) -> GridScale {
        GridScale {
            h: 0,
            offset: match fp.grid {
                Grid::Symmetric => 1 << (fp.bits - 1),
                Grid::Asymmetric => 0,
            },
            step: 0.0,
            inv: 0.0,
        }
    }

    /// The grid of a symmetric group whose members have largest magnitude `max_abs`.
    #[inline]
    pub fn symmetric(max_abs: f32, fp: &FormatParams, scale_exp: i8) -> GridScale {
        let mut g = GridScale::empty(fp);
        if max_abs > 0.0 {
            let scaled = (max_abs * pow2(-i32::from(scale_exp))) / fp.sym_qmax() as f32;
            g.set_step(scaled, scale_exp);
        }
        g
    }

    /// The grid of an asymmetric group whose members span `[lo, hi]`.
    #[inline]
    pub fn asymmetric(lo: f32, hi: f32, fp: &FormatParams, scale_exp: i8) -> GridScale {
        let mut g = GridScale::empty(fp);
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        if hi > lo {
            let scaled = ((hi - lo) * pow2(-i32::from(scale_exp))) / fp.code_max() as f32;
            g.set_step(scaled, scale_exp);
            let z = round_ties_even((-lo * g.inv).clamp(0.0, fp.code_max() as f32));
            g.offset = z as i32;
        }
        g
    }

    fn set_step(&mut self, scaled: f32, scale_exp: i8) {
        let mut h = f16::from_f32(scaled);
        if h.is_infinite() {
            // Only reachable with a selection whose `max_abs_bits` understates the data:
            // keep the buffer valid (the error bound then no longer holds).
            h = f16::MAX;
        } else if h.to_bits() == 0 {
            // A positive step too small for f16 becomes the smallest subnormal: the
            // members still reconstruct within half of it.
            h = f16::from_bits(1);
        }
        self.h = h.to_bits();
        self.step = h.to_f32() * pow2(i32::from(scale_exp));
        self.inv = 1.0 / self.step;
    }

    /// Rebuilds a grid from its stored fields.
    #[inline]
    pub fn from_stored(h: u16, offset: i32, scale_exp: i8) -> GridScale {
        let step = f16::from_bits(h).to_f32() * pow2(i32::from(scale_exp));
        GridScale {
            h,
            offset,
            step,
            inv: if step > 0.0 { 1.0 / step } else { 0.0 },
        }
    }

    /// The stored code of `w` on this grid.
    #[inline(always)]
    pub fn encode(&self, w: f32, code_max: i32) -> u8 {
        let q = round_ties_even((w * self.inv).clamp(-512.0, 512.0)) as i32 + self.offset;
        q.clamp(0, code_max) as u8
    }

    /// The value a stored code stands for.
    #[inline(always)]
    pub fn decode(&self, code: u8) -> f32 {
        (i32::from(code) - self.offset) as f32 * self.step
    }
}
