//! Exact selection in about one pass, from a sample (large tensors, `std` only).

use std::vec::Vec;

use super::passes::select_exact_count;
use super::scan::TensorScan;
use super::{target_count, BadValue, Selection, NON_FINITE_BITS};
use crate::params::SelectionMode;

/// Exact selection in about one pass over the tensor, for large tensors (needs `std`).
///
/// A sample of 64 evenly spaced runs of 1024 weights, sorted, brackets the k-th largest
/// magnitude with a margin of four binomial standard deviations. One
/// [`scan_range`](TensorScan::scan_range) pass then counts the weights above the
/// bracket and collects those inside it (in row-major order); the exact threshold and
/// tie count come from [`select_exact_count`] over the collected few. The result is the
/// same [`Selection`] as the histogram passes give. `None` when the tensor is too small
/// to bother, the holder cannot sample or scan, or the bracket missed (the caller then
/// runs the histogram passes).
pub(crate) fn select_sampled<S: TensorScan + ?Sized>(
    scan: &S,
    alpha: f64,
) -> Option<Result<Selection, BadValue>> {
    const RUN: usize = 1024;
    const RUNS: usize = 64;
    let n = scan.weight_count();
    let k = target_count(alpha, n as u64);
    if n < 16 * RUN * RUNS || k == 0 || k >= n as u64 {
        return None;
    }
    let mut sample: Vec<u32> = std::vec![0; RUN * RUNS];
    for (run, out) in sample.chunks_exact_mut(RUN).enumerate() {
        let start = run * (n - RUN) / (RUNS - 1);
        if !scan.sample(start, out) {
            return None;
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
    let found = match scan.scan_range(lo, hi, &mut candidates)? {
        Ok(found) => found,
        Err(e) => return Some(Err(e)),
    };
    if found.at_least_hi >= k
        || found.at_least_hi + found.in_range < k
        || found.in_range > capacity as u64
    {
        return None;
    }
    let candidates = &candidates[..found.in_range as usize];
    let as_f32: &[f32] = bytemuck::cast_slice(candidates);
    let need = k - found.at_least_hi;
    let sub = select_exact_count(need, |pass, bins| {
        crate::CpuKernels::histogram(&crate::Scalar, crate::Weights::F32(as_f32), pass, bins)
    });
    Some(sub.map(|sub| {
        let t = f64::from(f32::from_bits(sub.threshold_bits));
        Selection {
            threshold_bits: sub.threshold_bits,
            take_equal: sub.take_equal,
            n_outliers: k,
            max_abs_bits: found.max_abs_bits,
            lambda_prime: t * t,
            passes: 1,
            mode: SelectionMode::Exact,
        }
    }))
}
