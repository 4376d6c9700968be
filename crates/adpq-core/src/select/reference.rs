//! Reference-compatible selection: auto_adpq 0.3.5's Brent-style search for λ', step
//! for step, so that λ' comes out bit-identical.

use super::{Selection, NON_FINITE_BITS, TAKE_ALL_EQUAL};
use crate::error::{Error, Result};
use crate::params::SelectionMode;

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
pub(crate) fn reference_threshold_bits(lambda: f64) -> u32 {
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
pub(crate) fn select_reference<C>(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
