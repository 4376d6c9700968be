//! The histogram passes: a k-way bisection over magnitude bit patterns, 11, 11 and 9
//! bits per pass, that finds the exact k-th largest magnitude.

use super::{target_count, BadValue, Selection, HIST_BINS, NON_FINITE_BITS, TAKE_ALL_EQUAL};
use crate::params::SelectionMode;

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

/// Exact selection of `k = round(α·N)` outliers.
///
/// `histogram(pass, bins)` must add the counts of one pass over the whole tensor into
/// `bins` (which it receives zeroed) and return the largest magnitude bits it saw among
/// all weights, or the first rejected weight (a [`TensorScan`](super::TensorScan) pass).
pub(crate) fn select_exact<H>(n: u64, alpha: f64, histogram: H) -> Result<Selection, BadValue>
where
    H: FnMut(&HistogramPass, &mut [u32; HIST_BINS]) -> Result<u32, BadValue>,
{
    select_exact_count(target_count(alpha, n), histogram)
}

/// [`select_exact`] for a given outlier count `k` (at most the number of weights).
pub(crate) fn select_exact_count<H>(k: u64, mut histogram: H) -> Result<Selection, BadValue>
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
