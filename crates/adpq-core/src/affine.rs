//! Format v2's grid arithmetic, shared by every backend: the per-row units, the inlier
//! grid of a group (`ŵ = c·d + m`), the range search that picks it, and the outlier grid
//! (`ŵ = ±(t + k·h)`).
//!
//! **One rule for every backend.** A backend supplies only the per-weight passes over a
//! group ([`GroupPasses`]: the squared error of a candidate grid, the sums a least-squares
//! refit needs); the choice of grid ([`search_group`]) is written once, here, and is
//! public as the reference a device encoder must match bit for bit. The passes
//! add element `i` of a group into lane `i % 8` and total the lanes in one fixed order
//! (`LaneSums`), with separate multiplies and adds (no FMA), so a SIMD backend's 8-lane
//! sums equal the scalar oracle's bit for bit, and so do the chosen grids and the bytes.
//!
//! **The search** (`docs/FORMAT.md`, version 2): over the group's inliers `[lo, hi]`
//! (`lo = min(w, 0)`, `hi = max(w, 0)`), the 25 ranges `[lo·s_i, hi·s_j]`, `s = 1, .96, .92, .88, .84`,
//! each rounded to the stored fields (`q_d`, `q_m`, u8 multiples of the row's units), keep
//! the least squared error (ties: the first in `i`, then `j`); then one least-squares
//! refit of `(d, m)` for the winner's codes, kept if its stored grid errs less.

use half::f16;

use crate::params::FormatParams;
use crate::quant::{pow2, round_ties_even};

/// Range shrink factors the search tries at each end of a group's inlier range. Five
/// per end (25 ranges) keep SmolLM2-135M within 1.10× of its perplexity at 4.8
/// bits/weight where three (`1, .92, .84`: 9 ranges) measured 1.12×, at about 2.5 times
/// the encoder's candidate passes (docs/FORMAT-v2.md, "Phase 2").
pub const SHRINK: [f32; 5] = [1.0, 0.96, 0.92, 0.88, 0.84];

/// Candidate ranges of the search: every pair of shrink factors.
const CANDIDATES: usize = SHRINK.len() * SHRINK.len();

/// Lanes of [`LaneSums`]: the width of every SIMD backend's f32 vectors.
pub const LANES: usize = 8;

/// A sum over a group kept in 8 lanes: element `i` adds into lane `i % 8`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LaneSums(pub [f32; LANES]);

impl LaneSums {
    /// Adds `v` for element `i` of the group.
    #[inline(always)]
    pub fn add(&mut self, i: usize, v: f32) {
        self.0[i % LANES] += v;
    }

    /// The lanes added in the one order every backend uses.
    #[inline(always)]
    pub fn total(&self) -> f32 {
        let a = &self.0;
        ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))
    }
}

/// The nearest f16 at or above `x` (finite), so that 255 units always reach `x`; 0 for
/// `x ≤ 0` (a zero's sign depends on how `min`/`max` treat ±0, and a unit is never
/// negative).
fn f16_at_least(x: f32) -> u16 {
    if x <= 0.0 {
        return 0;
    }
    let mut h = f16::from_f32(x);
    if h.to_f32() < x {
        h = f16::from_bits(h.to_bits() + 1);
    }
    if h.is_infinite() {
        h = f16::MAX;
    } else if h.to_bits() == 0 {
        h = f16::from_bits(1);
    }
    h.to_bits()
}

/// The nearest f16 to `x` (finite), kept finite; 0 for `x ≤ 0`.
fn f16_nearest(x: f32) -> u16 {
    if x <= 0.0 {
        return 0;
    }
    let h = f16::from_f32(x);
    if h.is_infinite() {
        f16::MAX.to_bits()
    } else {
        h.to_bits()
    }
}

/// A row's stored units (f16 bits) and their values `h · 2^e`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowUnits {
    /// f16 bits of the inlier step unit.
    pub step_unit_bits: u16,
    /// f16 bits of the inlier minimum unit.
    pub min_unit_bits: u16,
    /// f16 bits of the outlier step.
    pub outlier_step_bits: u16,
    /// Inlier step unit `u_d · 2^e`: a group's step is `q_d` of these.
    pub step_unit: f32,
    /// Inlier minimum unit `u_m · 2^e`: a group's minimum is `−q_m` of these.
    pub min_unit: f32,
    /// Outlier step `h_o · 2^e`.
    pub outlier_step: f32,
    /// The tensor's threshold `t`: every outlier decodes to `±(t + k · outlier_step)`.
    pub threshold: f32,
}

/// The value of a stored unit field `h` (f16 bits) in a tensor of scale exponent
/// `scale_exp`: `h · 2^scale_exp`.
#[inline(always)]
pub(crate) fn unit_value(h: u16, scale_exp: i8) -> f32 {
    crate::weights::f16_bits_to_f32(h) * pow2(i32::from(scale_exp))
}

impl RowUnits {
    /// The units of stored fields.
    #[inline]
    pub fn from_stored(bits: [u16; 3], scale_exp: i8, threshold: f32) -> RowUnits {
        let value = |h: u16| unit_value(h, scale_exp);
        RowUnits {
            step_unit_bits: bits[0],
            min_unit_bits: bits[1],
            outlier_step_bits: bits[2],
            step_unit: value(bits[0]),
            min_unit: value(bits[1]),
            outlier_step: value(bits[2]),
            threshold,
        }
    }

    /// The units of a row whose groups' inlier ranges reach at most `span_max` wide and
    /// `neg_max` below zero, and whose outliers reach `out_max` (0 without outliers):
    /// [`FormatParams::field_max`] units reach them.
    pub fn for_row(
        span_max: f32,
        neg_max: f32,
        out_max: f32,
        threshold: f32,
        fp: &FormatParams,
        scale_exp: i8,
    ) -> RowUnits {
        let down = pow2(-i32::from(scale_exp));
        let code_max = fp.code_max() as f32;
        let field_max = f32::from(fp.field_max());
        let step = f16_at_least(((span_max * down) / code_max) / field_max);
        let min = f16_at_least((neg_max * down) / field_max);
        let out = if out_max > 0.0 && out_max > threshold {
            f16_nearest(((out_max - threshold) * down) / fp.magnitude_max() as f32)
        } else {
            0
        };
        RowUnits::from_stored([step, min, out], scale_exp, threshold)
    }

    /// The stored fields in byte order.
    pub fn stored(&self) -> [u16; 3] {
        [
            self.step_unit_bits,
            self.min_unit_bits,
            self.outlier_step_bits,
        ]
    }

    /// The value of outlier code `code` of a `bits`-bit grid: the top bit is the sign, the
    /// rest `k` in `t + k · h`.
    #[inline(always)]
    pub fn outlier(&self, code: u8, bits: u8) -> f32 {
        let k = code & ((1u8 << (bits - 1)) - 1);
        let magnitude = self.threshold + f32::from(k) * self.outlier_step;
        if code >> (bits - 1) != 0 {
            -magnitude
        } else {
            magnitude
        }
    }

    /// The outlier code of `w` (`|w| ≥ t`): the sign bit and the nearest `k`.
    #[inline(always)]
    pub fn encode_outlier(&self, w: f32, fp: &FormatParams) -> u8 {
        let inv = if self.outlier_step > 0.0 {
            1.0 / self.outlier_step
        } else {
            0.0
        };
        let k = round_ties_even(
            ((w.abs() - self.threshold) * inv).clamp(0.0, fp.magnitude_max() as f32),
        );
        (k as u8) | (((w.to_bits() >> 31) as u8) << (fp.bits - 1))
    }
}

/// The inlier grid of one group: `ŵ = c·d + m`, `d = q_d · u_d`, `m = −q_m · u_m`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AffineGrid {
    /// Stored step multiple `q_d`.
    pub q_step: u8,
    /// Stored minimum multiple `q_m`.
    pub q_min: u8,
    /// The step `d`.
    pub step: f32,
    /// The minimum `m` (≤ 0).
    pub min: f32,
    /// `1/d` (0 when `d` is 0).
    pub inv: f32,
}

impl AffineGrid {
    /// The grid of stored multiples of a row's units.
    #[inline(always)]
    pub fn new(q_step: u8, q_min: u8, units: &RowUnits) -> AffineGrid {
        let step = f32::from(q_step) * units.step_unit;
        AffineGrid {
            q_step,
            q_min,
            step,
            min: -(f32::from(q_min) * units.min_unit),
            inv: if step > 0.0 { 1.0 / step } else { 0.0 },
        }
    }

    /// The value code `c` stands for: `c·d + m`, multiply then add (never fused).
    #[inline(always)]
    pub fn decode(&self, code: u8) -> f32 {
        f32::from(code) * self.step + self.min
    }

    /// The value a code book level `L` stands for: `L·d + m` (format v3).
    #[inline(always)]
    pub fn decode_level(&self, level: f32) -> f32 {
        level * self.step + self.min
    }

    /// The code of `w`, as an f32: `round((w − m) / d)` clamped to `0..=code_max`.
    #[inline(always)]
    pub fn encode(&self, w: f32, code_max: f32) -> f32 {
        round_ties_even(((w - self.min) * self.inv).clamp(0.0, code_max))
    }
}

/// The sums a least-squares refit of `(d, m)` needs, over a group's inliers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RefitSums {
    /// Inliers.
    pub n: u32,
    /// `Σ c`.
    pub c: LaneSums,
    /// `Σ c²`.
    pub cc: LaneSums,
    /// `Σ w`.
    pub w: LaneSums,
    /// `Σ c·w`.
    pub cw: LaneSums,
}

/// The per-weight passes over one group's inliers that [`search_group`] needs.
pub trait GroupPasses {
    /// `Σ (grid.decode(grid.encode(w)) − w)²` over the inliers, as [`LaneSums`].
    fn error(&mut self, grid: &AffineGrid) -> f32;
    /// `errors[k] = error(grids[k])` for every `k`: a backend may sweep the group once for
    /// all of them (the candidates are independent).
    #[inline(always)]
    fn errors(&mut self, grids: &[AffineGrid], errors: &mut [f32]) {
        for (grid, e) in grids.iter().zip(errors) {
            *e = self.error(grid);
        }
    }
    /// The candidate grids of a group whose inliers span `[lo, hi]` (`lo < hi`), as
    /// [`Candidates::compute`] makes them: a backend may compute them in lanes, with the
    /// same f32 operations.
    #[inline(always)]
    fn candidates(&mut self, lo: f32, hi: f32, units: &RowUnits, fp: &FormatParams) -> Candidates {
        Candidates::compute(lo, hi, units, fp)
    }
    /// The refit sums of the inliers' codes on `grid` (format v3: of their code book
    /// levels, so that the refit fits `w ≈ d·L[c] + m`).
    fn refit_sums(&mut self, grid: &AffineGrid) -> RefitSums;
    /// The first least error among candidates `order` of `c` (`order` not empty): `(j,
    /// error(c.grid(order[j])))` for the least such error, the smallest `j` on ties. A
    /// backend may take the grids' fields from `c` without making each grid; by
    /// default, [`errors`](Self::errors) of the grids.
    #[inline(always)]
    fn least_error(&mut self, c: &Candidates, order: &[u8]) -> (usize, f32) {
        let mut grids = [c.grid(0); CANDIDATES];
        for (g, &k) in grids.iter_mut().zip(order) {
            *g = c.grid(usize::from(k));
        }
        let n = order.len();
        let mut errors = [0f32; CANDIDATES];
        self.errors(&grids[..n], &mut errors[..n]);
        first_least(&errors[..n])
    }
}

/// The index and value of the first least of `errors` (not empty), without branches
/// (the outcomes are data-dependent, so branches would mispredict).
#[inline(always)]
pub(crate) fn first_least(errors: &[f32]) -> (usize, f32) {
    let (mut best_k, mut best_err) = (0, errors[0]);
    for (k, &err) in errors.iter().enumerate().skip(1) {
        let better = err < best_err;
        best_k = if better { k } else { best_k };
        best_err = if better { err } else { best_err };
    }
    (best_k, best_err)
}

/// Slots of [`Candidates`]: the candidates rounded up to whole 8-lane vectors.
pub const CANDIDATE_SLOTS: usize = CANDIDATES.div_ceil(LANES) * LANES;

/// The search's candidate grids field by field, in search order: candidate `k` is the
/// range `[lo·s_i, hi·s_j]` with `(i, j) = (k / 5, k % 5)` in [`SHRINK`]. Slots past
/// the last candidate are unused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidates {
    /// `q_d`, an integer in `1..=field_max`.
    pub q_step: [f32; CANDIDATE_SLOTS],
    /// `q_m`, an integer in `0..=field_max`.
    pub q_min: [f32; CANDIDATE_SLOTS],
    /// The step `d = q_d · u_d`.
    pub step: [f32; CANDIDATE_SLOTS],
    /// The minimum `m = −(q_m · u_m)`.
    pub min: [f32; CANDIDATE_SLOTS],
    /// `1/d` (0 when `d` is 0).
    pub inv: [f32; CANDIDATE_SLOTS],
}

impl Candidates {
    /// The candidates of a group whose inliers span `[lo, hi]`, one at a time (the
    /// reference every lanes version must equal bit for bit): `q_d = round((hi·s_j −
    /// lo·s_i) / (code_max · u_d))` clamped to `1..=field_max`, `q_m = round(−lo·s_i /
    /// u_m)` clamped to `0..=field_max` (0 when `u_m` is 0), then [`AffineGrid::new`].
    pub fn compute(lo: f32, hi: f32, units: &RowUnits, fp: &FormatParams) -> Candidates {
        let top = f32::from(fp.field_max());
        let step_scale = fp.code_max() as f32 * units.step_unit;
        let mut c = Candidates {
            q_step: [1.0; CANDIDATE_SLOTS],
            q_min: [0.0; CANDIDATE_SLOTS],
            step: [0.0; CANDIDATE_SLOTS],
            min: [0.0; CANDIDATE_SLOTS],
            inv: [0.0; CANDIDATE_SLOTS],
        };
        for (i, si) in SHRINK.iter().enumerate() {
            let lo_i = lo * si;
            let q_min = if units.min_unit > 0.0 {
                round_ties_even((-lo_i / units.min_unit).clamp(0.0, top))
            } else {
                0.0
            };
            for (j, sj) in SHRINK.iter().enumerate() {
                let k = i * SHRINK.len() + j;
                let q_step = round_ties_even(((hi * sj - lo_i) / step_scale).clamp(1.0, top));
                let g = AffineGrid::new(q_step as u8, q_min as u8, units);
                (c.q_step[k], c.q_min[k]) = (q_step, q_min);
                (c.step[k], c.min[k], c.inv[k]) = (g.step, g.min, g.inv);
            }
        }
        c
    }

    /// Candidate `k`'s grid.
    #[inline(always)]
    pub fn grid(&self, k: usize) -> AffineGrid {
        AffineGrid {
            q_step: small_int(self.q_step[k]),
            q_min: small_int(self.q_min[k]),
            step: self.step[k],
            min: self.min[k],
            inv: self.inv[k],
        }
    }
}

/// `x as u8` for an integer `x` in `0..=255` (a stored multiple), without the saturating
/// cast's range checks: `x + 2^23` is exact and holds `x` in its low mantissa bits.
#[inline(always)]
fn small_int(x: f32) -> u8 {
    debug_assert!(x == x as u8 as f32, "{x} is not an integer in 0..=255");
    (x + 8_388_608.0).to_bits() as u8
}

/// Rounds a stored multiple to `lo..=max` (`lo ≥ 0`): `floor(v + 0.5)` of the clamped
/// value, which is positive, so truncating (`as`) is the floor (and needs no `libm`
/// call).
#[inline(always)]
fn multiple(v: f64, lo: f64, max: u8) -> u8 {
    if v.is_nan() {
        return lo as u8;
    }
    (v.clamp(lo, f64::from(max)) + 0.5) as u8
}

/// The inlier grid of one group whose inliers span `[lo, hi]` (`lo ≤ 0 ≤ hi`), chosen by
/// the search of the module docs.
#[inline(always)] // into each SIMD ISA's `#[target_feature]` function, with its passes
pub fn search_group(
    passes: &mut impl GroupPasses,
    lo: f32,
    hi: f32,
    units: &RowUnits,
    fp: &FormatParams,
) -> AffineGrid {
    if hi <= lo {
        // No inliers, or all of them zero: code 0 decodes to exactly 0.
        return AffineGrid::new(0, 0, units);
    }
    let field_max = fp.field_max();
    let c = passes.candidates(lo, hi, units, fp);
    // The candidates in order (a repeat of the one before is skipped: ranges that round
    // to the same stored fields are the same grid, and only the first of equal errors
    // can win, so skipping repeats never changes the choice), their errors, then the
    // first least.
    // Without branches: each candidate's index is written at slot `n`, which moves on
    // only past a new grid (the outcomes are data-dependent, so branches would
    // mispredict).
    let mut order = [0u8; CANDIDATES];
    let mut n = 1;
    for k in 1..CANDIDATES {
        let new = (c.q_step[k], c.q_min[k]) != (c.q_step[k - 1], c.q_min[k - 1]);
        order[n] = k as u8;
        n += usize::from(new);
    }
    let (best_j, best_err) = passes.least_error(&c, &order[..n]);
    let mut best = c.grid(usize::from(order[best_j]));
    // One least-squares refit of (d, m) for the winner's codes.
    let s = passes.refit_sums(&best);
    let n = f64::from(s.n);
    let (sc, scc) = (f64::from(s.c.total()), f64::from(s.cc.total()));
    let (sw, scw) = (f64::from(s.w.total()), f64::from(s.cw.total()));
    let det = n * scc - sc * sc;
    if det > 0.0 {
        let d = (n * scw - sc * sw) / det;
        let m = (sw - d * sc) / n;
        let q_step = multiple(d / f64::from(units.step_unit), 1.0, field_max);
        let q_min = if units.min_unit > 0.0 {
            multiple(-m / f64::from(units.min_unit), 0.0, field_max)
        } else {
            0
        };
        if (q_step, q_min) != (best.q_step, best.q_min) {
            let grid = AffineGrid::new(q_step, q_min, units);
            if passes.error(&grid) < best_err {
                best = grid;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Params;

    #[test]
    fn lane_total_is_fixed_order() {
        let mut s = LaneSums::default();
        for i in 0..20 {
            s.add(i, i as f32);
        }
        assert_eq!(s.0[3], 3.0 + 11.0 + 19.0);
        assert_eq!(s.total(), (0..20).sum::<i32>() as f32);
    }

    #[test]
    fn units_reach_the_row_range() {
        let fp = Params::V2.format();
        for span in [1e-3f32, 0.37, 5.0, 1234.5] {
            let e = crate::quant::scale_exponent(span, &fp);
            let u = RowUnits::for_row(span, span / 2.0, 0.0, f32::INFINITY, &fp, e);
            // Reached up to the f32 roundings of the unit's computation.
            let reach = 255.0 * u.step_unit * fp.code_max() as f32;
            assert!(reach >= span * (1.0 - 1e-6), "{span}: {reach}");
            assert!(255.0 * u.min_unit >= span / 2.0 * (1.0 - 1e-6));
            assert_eq!(u.outlier_step_bits, 0);
        }
    }

    /// A negative zero extent (`max(0, -0)` may return either zero) stores a +0 unit.
    #[test]
    fn negative_zero_extent_stores_zero_units() {
        let fp = Params::V2.format();
        let u = RowUnits::for_row(-0.0, -0.0, 1.0, 1.0, &fp, -14);
        assert_eq!(u.stored(), [0, 0, 0]);
    }

    #[test]
    fn outliers_decode_sign_and_offset() {
        let fp = Params::V2.format();
        let u = RowUnits::for_row(1.0, 0.5, 2.0, 1.3, &fp, -16);
        for w in [1.3f32, -1.3, 1.75, -2.0, 2.0] {
            let c = u.encode_outlier(w, &fp);
            let back = u.outlier(c, fp.bits);
            assert_eq!(back.is_sign_negative(), w < 0.0);
            assert!(
                (back - w).abs() <= u.outlier_step / 2.0 + 1e-6,
                "{w} -> {back}"
            );
        }
    }
}
