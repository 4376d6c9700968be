//! Per-tensor outlier selection.
//!
//! A weight is an outlier when its magnitude is at or above a threshold `t`. Non-negative
//! IEEE floats order like their bit patterns, so the search runs over the integers
//! `bits(|w|)`: a k-way bisection that histograms 11, 11 and then 9 bits per pass finds the
//! exact k-th largest magnitude in three passes (one when `k` is 0).
//!
//! **Tie rule.** When several weights share the threshold magnitude and only some of them
//! are needed to reach exactly `k`, the earliest ones in row-major order are taken.
//! [`Selection::take_equal`] records how many.

use crate::error::{Error, Result};
use crate::params::{Params, SelectionMode};
pub use crate::weights::{NON_FINITE_BITS, OUT_OF_RANGE_BITS};

/// Bins of one histogram pass.
pub const HIST_BINS: usize = 2048;

/// `take_equal` value meaning "every weight equal to the threshold is an outlier".
pub const TAKE_ALL_EQUAL: u64 = u64::MAX;

/// One histogram pass: count the weights whose `bits(|w|) >> prefix_shift == prefix`
/// into bin `(bits(|w|) >> shift) & mask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistogramPass {
    /// Shift that isolates the prefix already fixed by earlier passes.
    pub prefix_shift: u32,
    /// The prefix a weight must have to be counted.
    pub prefix: u32,
    /// Shift of the bits this pass resolves.
    pub shift: u32,
    /// Mask of the bits this pass resolves (at most `HIST_BINS - 1`).
    pub mask: u32,
}

/// The three passes, given the prefixes found so far.
const PASS_SHIFTS: [(u32, u32); 3] = [(20, 0x7FF), (9, 0x7FF), (0, 0x1FF)];

impl HistogramPass {
    /// Pass `level` (0, 1, 2) below `prefix` (bits fixed by earlier passes).
    ///
    /// # Panics
    /// When `level > 2`.
    pub fn level(level: usize, prefix: u32) -> HistogramPass {
        let (shift, mask) = PASS_SHIFTS[level];
        let prefix_shift = if level == 0 {
            31
        } else {
            PASS_SHIFTS[level - 1].0
        };
        HistogramPass {
            prefix_shift,
            prefix,
            shift,
            mask,
        }
    }

    /// Whether a weight with these magnitude bits is counted, and into which bin.
    #[inline(always)]
    pub fn bin(&self, abs_bits: u32) -> Option<usize> {
        if abs_bits.checked_shr(self.prefix_shift).unwrap_or(0) == self.prefix {
            Some((abs_bits.checked_shr(self.shift).unwrap_or(0) & self.mask) as usize)
        } else {
            None
        }
    }
}

/// A rejected weight found by a scan: its flat index and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BadValue {
    /// Flat index into the scanned slice.
    pub index: u64,
    /// The value.
    pub value: f32,
}

impl BadValue {
    /// The error naming row and column, for a tensor of `cols` columns whose slice
    /// started at flat index `base`.
    pub fn into_error(self, base: u64, cols: u64) -> Error {
        let flat = base + self.index;
        let (row, col) = (flat / cols.max(1), flat % cols.max(1));
        if (self.value.to_bits() & 0x7FFF_FFFF) >= NON_FINITE_BITS {
            Error::NonFinite {
                row,
                col,
                value: self.value,
            }
        } else {
            Error::OutOfRange {
                row,
                col,
                value: self.value,
            }
        }
    }
}

/// Whether magnitude bits are accepted by the quantizer.
#[inline(always)]
pub fn is_valid_abs_bits(abs_bits: u32) -> bool {
    abs_bits < OUT_OF_RANGE_BITS
}

/// The result of outlier selection for one tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Selection {
    /// Bits of the threshold magnitude `t`: weights above are outliers.
    pub threshold_bits: u32,
    /// How many weights exactly at `t` are outliers, earliest first in row-major order
    /// ([`TAKE_ALL_EQUAL`]: all of them).
    pub take_equal: u64,
    /// Number of outliers selected.
    pub n_outliers: u64,
    /// Bits of the largest `|w|` of the tensor.
    pub max_abs_bits: u32,
    /// λ' of the adaptive-LASSO rule: `t²` in exact mode, the searched value in reference mode.
    pub lambda_prime: f64,
    /// Passes over the tensor the search made.
    pub passes: u32,
    /// The mode that produced it.
    pub mode: SelectionMode,
}

impl Selection {
    /// The threshold magnitude `t` (`+inf` when there are no outliers).
    pub fn threshold(&self) -> f32 {
        f32::from_bits(self.threshold_bits)
    }

    /// The largest weight magnitude of the tensor.
    pub fn max_abs(&self) -> f32 {
        f32::from_bits(self.max_abs_bits)
    }

    /// The outlier rule for a range of rows, given how many weights equal to the threshold
    /// come before the range in row-major order.
    pub fn rule_after(&self, equal_before: u64) -> OutlierRule {
        OutlierRule {
            threshold_bits: self.threshold_bits,
            equal_budget: if self.take_equal == TAKE_ALL_EQUAL {
                TAKE_ALL_EQUAL
            } else {
                self.take_equal.saturating_sub(equal_before)
            },
        }
    }

    /// True when a row range can be quantized without knowing what came before it
    /// (no partial tie at the threshold).
    pub fn is_row_independent(&self) -> bool {
        self.take_equal == TAKE_ALL_EQUAL || self.take_equal == 0
    }
}

/// Decides, element by element in row-major order, which weights are outliers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierRule {
    /// Magnitude bits of the threshold.
    pub threshold_bits: u32,
    /// Weights exactly at the threshold still to take ([`TAKE_ALL_EQUAL`]: unlimited).
    pub equal_budget: u64,
}

impl OutlierRule {
    /// Classifies one weight, consuming the tie budget when it is taken at the threshold.
    #[inline(always)]
    pub fn take(&mut self, abs_bits: u32) -> bool {
        if abs_bits > self.threshold_bits {
            true
        } else if abs_bits == self.threshold_bits && self.equal_budget > 0 {
            if self.equal_budget != TAKE_ALL_EQUAL {
                self.equal_budget -= 1;
            }
            true
        } else {
            false
        }
    }
}

/// Target outlier count `k = round(α·N)` (half away from zero), capped at `N`.
pub fn target_count(alpha: f64, n: u64) -> u64 {
    let k = libm::round(alpha * n as f64);
    if k <= 0.0 {
        0
    } else if k >= n as f64 {
        n
    } else {
        k as u64
    }
}

/// Exact selection of `k = round(α·N)` outliers.
///
/// `histogram(pass, bins)` must add the counts of one pass over the whole tensor into
/// `bins` (which it receives zeroed) and return the largest magnitude bits it saw among
/// all weights, or the first rejected weight. Backends implement it; a parallel driver
/// can sum per-chunk histograms.
pub fn select_exact<H>(n: u64, alpha: f64, histogram: H) -> Result<Selection, BadValue>
where
    H: FnMut(&HistogramPass, &mut [u32; HIST_BINS]) -> Result<u32, BadValue>,
{
    select_exact_count(target_count(alpha, n), histogram)
}

/// [`select_exact`] for a given outlier count `k` (at most the number of weights).
pub fn select_exact_count<H>(k: u64, mut histogram: H) -> Result<Selection, BadValue>
where
    H: FnMut(&HistogramPass, &mut [u32; HIST_BINS]) -> Result<u32, BadValue>,
{
    let mut bins = [0u32; HIST_BINS];
    let max_abs_bits = histogram(&HistogramPass::level(0, 0), &mut bins)?;
    let mut passes = 1;
    if k == 0 {
        return Ok(Selection {
            threshold_bits: NON_FINITE_BITS,
            take_equal: 0,
            n_outliers: 0,
            max_abs_bits,
            lambda_prime: f64::INFINITY,
            passes,
            mode: SelectionMode::Exact,
        });
    }
    let mut prefix = 0u32;
    let mut greater = 0u64; // outliers strictly above the current prefix's bucket
    let mut level = 0;
    loop {
        let pass = HistogramPass::level(level, prefix);
        // Walk bins from the top until the bucket that holds the k-th largest.
        let mut bin = pass.mask as usize;
        loop {
            let c = u64::from(bins[bin]);
            if greater + c >= k || bin == 0 {
                break;
            }
            greater += c;
            bin -= 1;
        }
        prefix = (prefix << (PASS_SHIFTS[level].1.count_ones())) | bin as u32;
        if level == 2 {
            let equal = u64::from(bins[bin]);
            let need = k - greater;
            let t = f64::from(f32::from_bits(prefix));
            return Ok(Selection {
                threshold_bits: prefix,
                take_equal: if need >= equal { TAKE_ALL_EQUAL } else { need },
                n_outliers: k,
                max_abs_bits,
                lambda_prime: t * t,
                passes,
                mode: SelectionMode::Exact,
            });
        }
        level += 1;
        bins = [0u32; HIST_BINS];
        histogram(&HistogramPass::level(level, prefix), &mut bins)?;
        passes += 1;
    }
}

/// What one [`scan_range`](crate::CpuKernels::scan_range) pass found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RangeScan {
    /// Weights with `bits(|w|) >= hi`.
    pub at_least_hi: u64,
    /// Weights with `lo <= bits(|w|) < hi` (all counted, even past the output's capacity).
    pub in_range: u64,
    /// Largest magnitude bits of all weights.
    pub max_abs_bits: u32,
}

/// Exact selection in about one pass over the tensor, for large tensors (needs `std`).
///
/// A sample of 64 evenly spaced runs of 1024 weights, sorted, brackets the k-th largest
/// magnitude with a margin of four binomial standard deviations. One
/// [`scan_range`](crate::CpuKernels::scan_range) pass then counts the weights above the
/// bracket and collects those inside it (in row-major order); the exact threshold and
/// tie count come from [`select_exact_count`] over the collected few. The result is the
/// same [`Selection`] as the histogram passes give. `None` when the tensor is too small
/// to bother or the bracket missed (the caller then runs the histogram passes).
#[cfg(feature = "std")]
pub fn select_exact_sampled<B: crate::CpuKernels>(
    backend: &B,
    w: crate::Weights<'_>,
    alpha: f64,
) -> Option<Result<Selection, BadValue>> {
    select_exact_sampled_with(w, alpha, |lo, hi, out| backend.scan_range(w, lo, hi, out))
}

/// [`select_exact_sampled`] with the scan pass given as a closure (what
/// [`CpuKernels::scan_range`](crate::CpuKernels::scan_range) does over all of `w`), so that a
/// parallel driver can split it.
#[cfg(feature = "std")]
pub fn select_exact_sampled_with<S>(
    w: crate::Weights<'_>,
    alpha: f64,
    mut scan_range: S,
) -> Option<Result<Selection, BadValue>>
where
    S: FnMut(u32, u32, &mut [u32]) -> Result<RangeScan, BadValue>,
{
    use std::vec::Vec;
    const RUN: usize = 1024;
    const RUNS: usize = 64;
    let n = w.len();
    let k = target_count(alpha, n as u64);
    if n < 16 * RUN * RUNS || k == 0 || k >= n as u64 {
        return None;
    }
    let mut sample: Vec<u32> = Vec::with_capacity(RUN * RUNS);
    for run in 0..RUNS {
        let start = run * (n - RUN) / (RUNS - 1);
        for i in start..start + RUN {
            sample.push(w.value(i)?.to_bits() & 0x7FFF_FFFF);
        }
    }
    sample.sort_unstable();
    let m = sample.len() as f64;
    let k_sample = k as f64 * m / n as f64;
    let margin = 4.0 * libm::sqrt(k_sample * (1.0 - k_sample / m)) + 16.0;
    // The weight of descending rank r (1 = largest) in the ascending sample.
    let at_rank = |r: f64| sample[(m - r.clamp(1.0, m)) as usize];
    let lo = at_rank(k_sample + margin);
    let hi = if k_sample - margin < 1.0 {
        NON_FINITE_BITS
    } else {
        at_rank(k_sample - margin)
            .saturating_add(1)
            .min(NON_FINITE_BITS)
    };
    let capacity = (2.0 * (2.0 * margin / m) * n as f64) as usize + 4096;
    let mut candidates = std::vec![0u32; capacity];
    let scan = match scan_range(lo, hi, &mut candidates) {
        Ok(scan) => scan,
        Err(e) => return Some(Err(e)),
    };
    if scan.at_least_hi >= k
        || scan.at_least_hi + scan.in_range < k
        || scan.in_range > capacity as u64
    {
        return None;
    }
    let candidates = &candidates[..scan.in_range as usize];
    let as_f32: &[f32] = bytemuck::cast_slice(candidates);
    let need = k - scan.at_least_hi;
    let sub = select_exact_count(need, |pass, bins| {
        crate::CpuKernels::histogram(&crate::Scalar, crate::Weights::F32(as_f32), pass, bins)
    });
    Some(sub.map(|sub| {
        let t = f64::from(f32::from_bits(sub.threshold_bits));
        Selection {
            threshold_bits: sub.threshold_bits,
            take_equal: sub.take_equal,
            n_outliers: k,
            max_abs_bits: scan.max_abs_bits,
            lambda_prime: t * t,
            passes: 1,
            mode: SelectionMode::Exact,
        }
    }))
}

/// `np.finfo(float).eps`: the reference counts `|w| = 0` as this value in its search.
const REFERENCE_EPS: f64 = 2.220_446_049_250_313e-16;

/// The reference's outlier predicate `|w| − λ'/|w| > 0`, in f64.
#[inline]
fn reference_predicate(abs: f64, lambda: f64) -> bool {
    abs - lambda / abs > 0.0
}

/// Smallest nonzero magnitude bit pattern that satisfies the reference predicate for
/// `lambda` ([`NON_FINITE_BITS`] when none does). The predicate is monotone in `|w|`
/// (rounded division and subtraction are monotone), so a binary search finds it.
pub fn reference_threshold_bits(lambda: f64) -> u32 {
    let (mut lo, mut hi) = (1u32, NON_FINITE_BITS);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if reference_predicate(f64::from(f32::from_bits(mid)), lambda) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// Reference-compatible selection (auto_adpq 0.3.5's `lasso_outlier_detection`).
///
/// `count_at_least(bits)` must return how many weights have `bits(|w|) >= bits`;
/// `zeros` is the number of exact zeros and `max_abs_bits` the largest magnitude (both
/// from a validating scan). The Brent-style loop is followed step for step, including
/// its quirks, so λ' comes out bit-identical to the reference run in f64.
pub fn select_reference<C>(
    n: u64,
    alpha: f64,
    n_iters: u32,
    zeros: u64,
    max_abs_bits: u32,
    mut count_at_least: C,
) -> Result<Selection>
where
    C: FnMut(u32) -> u64,
{
    let mut passes = 0u32;
    // A few recent evaluations: the loop re-evaluates its three points every step.
    let mut cache: [(u64, f64); 8] = [(u64::MAX, 0.0); 8];
    let mut cache_next = 0usize;
    let target = alpha * n as f64;
    let mut f = |lambda: f64| -> f64 {
        let key = lambda.to_bits();
        if let Some(&(_, v)) = cache.iter().find(|(k, _)| *k == key) {
            return v;
        }
        passes += 1;
        // The search's count treats |w| = 0 as machine epsilon.
        let zero_counted = reference_predicate(REFERENCE_EPS, lambda);
        let count =
            count_at_least(reference_threshold_bits(lambda)) + if zero_counted { zeros } else { 0 };
        let v = count as f64 - target;
        cache[cache_next] = (key, v);
        cache_next = (cache_next + 1) % cache.len();
        v
    };

    let (mut x0, mut x1) = (0.0f64, 1e7f64);
    let (mut fx0, mut fx1) = (f(x0), f(x1));
    // `(fx0 * fx1) < 0` is the reference's assertion.
    let product = fx0 * fx1;
    if product.is_nan() || product >= 0.0 {
        return Err(Error::NotBracketed);
    }
    if fx0.abs() < fx1.abs() {
        core::mem::swap(&mut x0, &mut x1);
        core::mem::swap(&mut fx0, &mut fx1);
    }
    let mut x2 = x0;
    let mut mflag = true;
    let tolerance = 1e-5;
    let tolerance_outliers = 1e-3 * target;
    let mut d = f64::NAN; // unset until the first step (only read when !mflag)
    let mut new: Option<f64> = None;
    let mut ite = 0u32;
    while ite < n_iters && (x1 - x0).abs() > tolerance {
        let fx0 = f(x0);
        let fx1 = f(x1);
        let fx2 = f(x2);
        if fx0.abs() <= tolerance_outliers {
            new = Some(x0);
            break;
        }
        if fx1.abs() <= tolerance_outliers {
            new = Some(x1);
            break;
        }
        if fx2.abs() <= tolerance_outliers {
            new = Some(x2);
            break;
        }
        let mut step = if fx0 != fx2 && fx1 != fx2 {
            let l0 = (x0 * fx1 * fx2) / ((fx0 - fx1) * (fx0 - fx2));
            let l1 = (x1 * fx0 * fx2) / ((fx1 - fx0) * (fx1 - fx2));
            let l2 = (x2 * fx1 * fx0) / ((fx2 - fx0) * (fx2 - fx1));
            l0 + l1 + l2
        } else if (fx1 - fx0) == 0.0 && fx1 == 0.0 {
            x1
        } else if (fx1 - fx0) == 0.0 {
            x0
        } else {
            x1 - ((fx1 * (x1 - x0)) / (fx1 - fx0))
        };
        let bisect = (step < ((3.0 * x0 + x1) / 4.0) || step > x1)
            || (mflag && (step - x1).abs() >= ((x1 - x2).abs() / 2.0))
            || (!mflag && (step - x1).abs() >= ((x2 - d).abs() / 2.0))
            || (mflag && (x1 - x2).abs() < tolerance)
            || (!mflag && (x2 - d).abs() < tolerance);
        if bisect {
            step = (x0 + x1) / 2.0;
            mflag = true;
        } else {
            mflag = false;
        }
        let fnew = f(step);
        d = x2;
        x2 = x1;
        if fx0 * fnew < 0.0 {
            x1 = step;
        } else {
            x0 = step;
        }
        // The reference swaps the points but compares the values of the step's start.
        if fx0.abs() < fx1.abs() {
            core::mem::swap(&mut x0, &mut x1);
        }
        new = Some(step);
        ite += 1;
    }
    let lambda = new.ok_or(Error::NotBracketed)?;
    // The final selection does not apply the epsilon substitute: zeros are never outliers.
    let threshold_bits = reference_threshold_bits(lambda);
    let n_outliers = count_at_least(threshold_bits);
    Ok(Selection {
        threshold_bits,
        take_equal: TAKE_ALL_EQUAL,
        n_outliers,
        max_abs_bits,
        lambda_prime: lambda,
        passes: passes + 1,
        mode: SelectionMode::Reference { n_iters },
    })
}

/// Selects the outliers of a tensor of `n` weights and `cols` columns in the mode
/// `params` asks for, given the two passes a backend provides: `histogram` (one
/// [`HistogramPass`] over the whole tensor, as in [`select_exact`]) and `count_at_least`
/// (weights with `bits(|w|) >= t`). A parallel driver passes parallel versions of both.
pub fn select_with<H, C>(
    n: u64,
    cols: usize,
    params: &Params,
    mut histogram: H,
    mut count_at_least: C,
) -> Result<Selection>
where
    H: FnMut(&HistogramPass, &mut [u32; HIST_BINS]) -> Result<u32, BadValue>,
    C: FnMut(u32) -> u64,
{
    let at = |e: BadValue| e.into_error(0, cols as u64);
    match params.selection {
        SelectionMode::Exact => select_exact(n, params.alpha, histogram).map_err(at),
        SelectionMode::Reference { n_iters } => {
            let mut bins = [0u32; HIST_BINS];
            let max_abs_bits = histogram(&HistogramPass::level(0, 0), &mut bins).map_err(at)?;
            let zeros = n - count_at_least(1);
            select_reference(
                n,
                params.alpha,
                n_iters,
                zeros,
                max_abs_bits,
                count_at_least,
            )
        }
    }
}

/// Validates the parameters and a `rows × cols` shape against a slice of `len` weights
/// (what [`CpuKernels::select`](crate::CpuKernels::select) checks first).
pub fn check_shape(len: usize, rows: usize, cols: usize, params: &Params) -> Result<()> {
    params.validate()?;
    if rows == 0 || cols == 0 {
        return Err(Error::EmptyTensor);
    }
    let n = (rows as u64)
        .checked_mul(cols as u64)
        .ok_or(Error::TensorTooLarge { elements: u64::MAX })?;
    if n > u64::from(u32::MAX) || rows as u64 > u64::from(u32::MAX) {
        return Err(Error::TensorTooLarge { elements: n });
    }
    if len as u64 != n {
        return Err(Error::ShapeMismatch {
            expected: n,
            actual: len as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{CpuKernels, Scalar};
    use crate::weights::Weights;

    #[test]
    fn exact_selection_takes_three_passes_or_one() {
        let w: [f32; 300] = core::array::from_fn(|i| (i as f32 - 150.0) * 0.01);
        let p = Params::DEFAULT;
        let s = Scalar.select(Weights::F32(&w), 3, 100, &p).unwrap();
        assert_eq!((s.passes, s.n_outliers), (3, 18));
        // t is the 18th largest |w|.
        let mut mags = w.map(f32::abs);
        mags.sort_by(|a, b| b.total_cmp(a));
        assert_eq!(s.threshold(), mags[17]);
        let p0 = Params::new(4, 128, 0.0, crate::Grid::Symmetric).unwrap();
        let s0 = Scalar.select(Weights::F32(&w), 3, 100, &p0).unwrap();
        assert_eq!((s0.passes, s0.n_outliers), (1, 0));
        assert!(s0.threshold().is_infinite());
    }

    #[test]
    fn reference_threshold_matches_predicate_at_the_boundary() {
        for lambda in [0.0, 1e-30, 3.5e-3, 0.25, 1.0, 7.0, 1e7] {
            let t = reference_threshold_bits(lambda);
            let above = f64::from(f32::from_bits(t));
            assert!(reference_predicate(above, lambda), "{lambda}");
            if t > 1 {
                let below = f64::from(f32::from_bits(t - 1));
                assert!(!reference_predicate(below, lambda), "{lambda}");
            }
        }
        assert_eq!(reference_threshold_bits(f64::NAN), NON_FINITE_BITS);
    }

    #[test]
    fn target_count_rounds_half_away_from_zero() {
        assert_eq!(target_count(0.5, 3), 2);
        assert_eq!(target_count(0.06, 100), 6);
        assert_eq!(target_count(0.0, 100), 0);
        assert_eq!(target_count(0.5, 1), 1);
    }
}
