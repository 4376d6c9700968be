//! The seam between outlier selection and whatever holds the tensor: a [`TensorScan`]
//! makes whole-tensor passes, [`select_outliers`](super::select_outliers) decides what
//! to ask for.

use super::{BadValue, HistogramPass, HIST_BINS};

/// What one [`scan_range`](TensorScan::scan_range) pass found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RangeScan {
    /// Weights with `bits(|w|) >= hi`.
    pub at_least_hi: u64,
    /// Weights with `lo <= bits(|w|) < hi` (all counted, even past the output's capacity).
    pub in_range: u64,
    /// Largest magnitude bits of all weights.
    pub max_abs_bits: u32,
}

/// Passes over a whole tensor, the only thing outlier selection needs from its holder.
///
/// `bits(|w|)` is the bit pattern of a weight's magnitude as an f32. Every pass that
/// reads all weights also validates them: a NaN, infinite or `|w| ≥ 2^124` weight is a
/// [`BadValue`], the one with the smallest flat index when there are several.
/// [`KernelScan`](crate::KernelScan) implements it over a host slice with any
/// [`CpuKernels`](crate::CpuKernels); a parallel
/// engine splits the passes into chunks, a device engine runs them where the tensor lives.
/// Results must not depend on how the work is split.
pub trait TensorScan {
    /// Number of weights in the tensor (row-major).
    fn weight_count(&self) -> usize;

    /// One histogram pass over all weights (see [`HistogramPass`]), adding into `bins`.
    /// Returns the largest magnitude bits of all weights, or the first rejected weight.
    fn histogram(&self, pass: &HistogramPass, bins: &mut [u32; HIST_BINS])
        -> Result<u32, BadValue>;

    /// Number of weights with `bits(|w|) >= threshold_bits`.
    fn count_at_least(&self, threshold_bits: u32) -> u64;

    /// Magnitude bits of the weights `start..start + out.len()` into `out` (the sampled
    /// one-pass selection reads 64 runs of 1024 this way). False when the range is out
    /// of bounds or the holder cannot sample: then the histogram passes run instead.
    fn sample(&self, start: usize, out: &mut [u32]) -> bool {
        let _ = (start, out);
        false
    }

    /// One validating pass that counts the weights with `bits(|w|) >= hi` and writes the
    /// magnitude bits of those with `lo <= bits(|w|) < hi` into `out`, in row-major order
    /// (as many as fit; all are counted). `None` when the holder does not support it.
    fn scan_range(&self, lo: u32, hi: u32, out: &mut [u32]) -> Option<Result<RangeScan, BadValue>> {
        let _ = (lo, hi, out);
        None
    }
}
