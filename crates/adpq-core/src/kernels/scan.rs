//! A kernel set's passes over a host slice as a [`TensorScan`], the selection's seam.

use super::CpuKernels;
use crate::select::{BadValue, HistogramPass, RangeScan, TensorScan, HIST_BINS};
use crate::weights::Weights;

/// A [`TensorScan`] over a host slice, one pass at a time on one thread.
#[derive(Debug, Clone, Copy)]
pub struct KernelScan<'w, K> {
    kernels: K,
    w: Weights<'w>,
}

impl<'w, K: CpuKernels> KernelScan<'w, K> {
    /// Scans the weights `w` with `kernels`.
    pub fn new(kernels: K, w: Weights<'w>) -> Self {
        KernelScan { kernels, w }
    }
}

impl<K: CpuKernels> TensorScan for KernelScan<'_, K> {
    fn weight_count(&self) -> usize {
        self.w.len()
    }

    fn histogram(
        &self,
        pass: &HistogramPass,
        bins: &mut [u32; HIST_BINS],
    ) -> Result<u32, BadValue> {
        self.kernels.histogram(self.w, pass, bins)
    }

    fn count_at_least(&self, threshold_bits: u32) -> u64 {
        self.kernels.count_at_least(self.w, threshold_bits)
    }

    fn sample(&self, start: usize, out: &mut [u32]) -> bool {
        for (o, i) in out.iter_mut().zip(start..) {
            match self.w.value(i) {
                Some(v) => *o = v.to_bits() & 0x7FFF_FFFF,
                None => return false,
            }
        }
        true
    }

    fn scan_range(&self, lo: u32, hi: u32, out: &mut [u32]) -> Option<Result<RangeScan, BadValue>> {
        Some(self.kernels.scan_range(self.w, lo, hi, out))
    }
}
