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
//!
//! The passes run behind [`TensorScan`], implemented by whatever holds the tensor
//! ([`KernelScan`](crate::KernelScan): a host slice and [`CpuKernels`](crate::CpuKernels); a parallel or
//! device engine: its own); [`select_outliers`] decides which passes to make.

mod passes;
mod reference;
#[cfg(feature = "std")]
mod sampled;
mod scan;

pub use passes::HistogramPass;
pub use scan::{RangeScan, TensorScan};

use crate::error::{Error, Result};
use crate::params::{Params, SelectionMode};
use crate::quant::check_magnitude;
pub use crate::weights::{NON_FINITE_BITS, OUT_OF_RANGE_BITS};

/// Bins of one histogram pass.
pub const HIST_BINS: usize = 2048;

/// `take_equal` value meaning "every weight equal to the threshold is an outlier".
pub const TAKE_ALL_EQUAL: u64 = u64::MAX;

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
pub(crate) fn is_valid_abs_bits(abs_bits: u32) -> bool {
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
    pub(crate) fn rule_after(&self, equal_before: u64) -> OutlierRule {
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

/// Selects the outliers of a `rows × cols` tensor in the mode `params` asks for.
///
/// Exact mode on a large tensor first tries the sampled one-pass path (with `std`, when
/// the scanner can [`sample`](TensorScan::sample) and
/// [`scan_range`](TensorScan::scan_range)); otherwise, or when its bracket misses, it
/// runs the histogram passes. Both give the same [`Selection`].
///
/// Fails on a NaN, infinite or `|w| ≥ 2^124` weight ([`Error::NonFinite`],
/// [`Error::OutOfRange`]) and on a nonzero tensor whose every weight is below 2^-100
/// ([`Error::TooSmall`]).
pub fn select_outliers<S: TensorScan + ?Sized>(
    scan: &S,
    rows: usize,
    cols: usize,
    params: &Params,
) -> Result<Selection> {
    check_shape(scan.weight_count(), rows, cols)?;
    #[cfg(feature = "std")]
    if params.selection() == SelectionMode::Exact {
        if let Some(sel) = sampled::select_sampled(scan, params.alpha()) {
            let sel = sel.map_err(|e| e.into_error(0, cols as u64))?;
            check_magnitude(sel.max_abs())?;
            return Ok(sel);
        }
    }
    select_with_passes(scan, cols, params)
}

/// [`select_outliers`] without the sampled path: always the histogram passes (three in
/// exact mode), or the reference search. The oracle the sampled path is tested against.
pub fn select_by_passes<S: TensorScan + ?Sized>(
    scan: &S,
    rows: usize,
    cols: usize,
    params: &Params,
) -> Result<Selection> {
    check_shape(scan.weight_count(), rows, cols)?;
    select_with_passes(scan, cols, params)
}

/// The histogram passes or the reference search over a checked tensor, refusing a tensor
/// too small to quantize faithfully ([`Error::TooSmall`]).
fn select_with_passes<S: TensorScan + ?Sized>(
    scan: &S,
    cols: usize,
    params: &Params,
) -> Result<Selection> {
    let sel = passes_or_reference(scan, cols, params)?;
    check_magnitude(sel.max_abs())?;
    Ok(sel)
}

/// The histogram passes or the reference search over a checked tensor.
fn passes_or_reference<S: TensorScan + ?Sized>(
    scan: &S,
    cols: usize,
    params: &Params,
) -> Result<Selection> {
    let n = scan.weight_count() as u64;
    let at = |e: BadValue| e.into_error(0, cols as u64);
    let histogram = |pass: &HistogramPass, bins: &mut [u32; HIST_BINS]| scan.histogram(pass, bins);
    match params.selection() {
        SelectionMode::Exact => passes::select_exact(n, params.alpha(), histogram).map_err(at),
        SelectionMode::Reference { n_iters } => {
            let mut bins = [0u32; HIST_BINS];
            let max_abs_bits = histogram(&HistogramPass::level(0, 0), &mut bins).map_err(at)?;
            // Before the search, which may fail to bracket on such a tensor.
            check_magnitude(f32::from_bits(max_abs_bits))?;
            let zeros = n - scan.count_at_least(1);
            reference::select_reference(n, params.alpha(), n_iters, zeros, max_abs_bits, |t| {
                scan.count_at_least(t)
            })
        }
    }
}

/// Validates a `rows × cols` shape against a slice of `len` weights
/// (what [`select_tensor`](crate::select_tensor) checks first).
pub fn check_shape(len: usize, rows: usize, cols: usize) -> Result<()> {
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
    use crate::kernels::Scalar;
    use crate::weights::Weights;

    #[test]
    fn exact_selection_takes_three_passes_or_one() {
        let w: [f32; 300] = core::array::from_fn(|i| (i as f32 - 150.0) * 0.01);
        let p = Params::V1;
        let s = crate::select_tensor(&Scalar, Weights::F32(&w), 3, 100, &p).unwrap();
        assert_eq!((s.passes, s.n_outliers), (3, 18));
        // t is the 18th largest |w|.
        let mut mags = w.map(f32::abs);
        mags.sort_by(|a, b| b.total_cmp(a));
        assert_eq!(s.threshold(), mags[17]);
        let p0 = Params::new(4, 128, 0.0, crate::Grid::Symmetric).unwrap();
        let s0 = crate::select_tensor(&Scalar, Weights::F32(&w), 3, 100, &p0).unwrap();
        assert_eq!((s0.passes, s0.n_outliers), (1, 0));
        assert!(s0.threshold().is_infinite());
    }

    #[test]
    fn target_count_rounds_half_away_from_zero() {
        assert_eq!(target_count(0.5, 3), 2);
        assert_eq!(target_count(0.06, 100), 6);
        assert_eq!(target_count(0.0, 100), 0);
        assert_eq!(target_count(0.5, 1), 1);
    }
}
