//! The selection kernels: histogram passes, threshold counts and the range scan.

use super::{arrays, Lanes};
use crate::kernels::scalar::scan_range_generic;
use crate::select::{BadValue, HistogramPass, RangeScan, HIST_BINS, OUT_OF_RANGE_BITS};
use crate::weights::Element;

/// Whether [`histogram_f32`] handles `pass` (its shifts must fit every ISA's lane shifts).
pub(crate) fn histogram_in_contract(pass: &HistogramPass) -> bool {
    (pass.mask as usize) < HIST_BINS && pass.shift < 32 && pass.prefix_shift <= 32
}

/// One histogram pass over f32 weights (see [`histogram_in_contract`]); returns the
/// largest magnitude bits (unvalidated).
///
/// Dense passes (every weight counted: the first pass) spread the increments over four
/// sub-histograms so that runs of equal bins do not stall on store forwarding. Sparse
/// passes compare 8 prefixes at once and only touch the bins on a match.
#[inline(always)]
pub(crate) fn histogram_f32<S: Lanes>(
    s: S,
    w: &[f32],
    pass: &HistogramPass,
    bins: &mut [u32; HIST_BINS],
    sub: &mut [[u32; HIST_BINS]; 4],
) -> u32 {
    let absmask = s.splat_u(0x7FFF_FFFF);
    let maskv = s.splat_u(pass.mask & (HIST_BINS as u32 - 1));
    let mut maxv = s.splat_u(0);
    // Locals, so that the shift counts are set up once, outside the loops.
    let (shift, prefix_shift) = (pass.shift, pass.prefix_shift);
    let (chunks, tail) = arrays::<f32, 8>(w);
    let dense = pass.prefix_shift >= 31 && pass.prefix == 0;
    if dense {
        for c in chunks {
            let a = s.and(s.bits(s.load_f(c)), absmask);
            maxv = s.max_u(maxv, a);
            let idx = s.to_u32s(s.and(s.shr(a, shift), maskv));
            for (j, &k) in idx.iter().enumerate() {
                sub[j & 3][k as usize & (HIST_BINS - 1)] += 1;
            }
        }
    } else {
        let prefix = s.splat_u(pass.prefix);
        for c in chunks {
            let a = s.and(s.bits(s.load_f(c)), absmask);
            maxv = s.max_u(maxv, a);
            let mut m = s.movemask(s.eq(s.shr(a, prefix_shift), prefix));
            if m != 0 {
                let idx = s.to_u32s(s.and(s.shr(a, shift), maskv));
                while m != 0 {
                    let j = m.trailing_zeros() as usize;
                    bins[idx[j] as usize & (HIST_BINS - 1)] += 1;
                    m &= m - 1;
                }
            }
        }
    }
    let mut max = s.hmax_u(maxv);
    for &v in tail {
        let b = v.abs_bits();
        max = max.max(b);
        if let Some(bin) = pass.bin(b) {
            bins[bin & (HIST_BINS - 1)] += 1;
        }
    }
    max
}

/// Counts of `bits(|w|) < t` (`lt`) and `bits(|w|) == t` (`eq`) over f32 weights.
#[inline(always)]
pub(crate) fn count_f32<S: Lanes>(s: S, w: &[f32], t: u32) -> (u64, u64) {
    if t > i32::MAX as u32 {
        // Every magnitude is below 2^31.
        return (w.len() as u64, 0);
    }
    // Signed compares are exact: `a < 2^31` and `t < 2^31`.
    let absmask = s.splat_u(0x7FFF_FFFF);
    let tv = s.splat_u(t);
    let (mut lt, mut eq) = (0u64, 0u64);
    let (chunks, tail) = arrays::<f32, 8>(w);
    for c in chunks {
        let a = s.and(s.bits(s.load_f(c)), absmask);
        lt += u64::from(s.movemask(s.gt_i(tv, a)).count_ones());
        eq += u64::from(s.movemask(s.eq(tv, a)).count_ones());
    }
    for &v in tail {
        let b = v.abs_bits();
        lt += u64::from(b < t);
        eq += u64::from(b == t);
    }
    (lt, eq)
}

/// [`CpuKernels::scan_range`](crate::kernels::CpuKernels::scan_range) over f32 weights
/// whose first flat index is `base`, adding into `scan`; `lo, hi <= NON_FINITE_BITS`.
#[inline(always)]
pub(crate) fn scan_range_f32<S: Lanes>(
    s: S,
    w: &[f32],
    base: u64,
    (lo, hi): (u32, u32),
    out: &mut [u32],
    scan: &mut RangeScan,
) -> Result<(), BadValue> {
    // Signed compares are exact: magnitudes are below 2^31 and so are `lo`, `hi`.
    let absmask = s.splat_u(0x7FFF_FFFF);
    let last_valid = s.splat_u(OUT_OF_RANGE_BITS - 1);
    let (lo_v, hi_v) = (s.splat_u(lo), s.splat_u(hi));
    let mut max = s.splat_u(0);
    // Counted in locals: `scan` and `out` reach here through a kernel value, where the
    // compiler no longer knows that they do not alias, and would store every increment.
    let (mut at_least_hi, mut in_range) = (0u64, scan.in_range);
    let (chunks, tail) = arrays::<f32, 8>(w);
    for (ci, c) in chunks.enumerate() {
        let a = s.and(s.bits(s.load_f(c)), absmask);
        let bad = s.movemask(s.gt_i(a, last_valid));
        if bad != 0 {
            let lane = bad.trailing_zeros() as usize;
            return Err(BadValue {
                index: base + (ci * 8 + lane) as u64,
                value: c[lane],
            });
        }
        max = s.max_u(max, a);
        let below_hi = s.gt_i(hi_v, a);
        let below_lo = s.gt_i(lo_v, a);
        at_least_hi += u64::from(8 - s.movemask(below_hi).count_ones());
        let mut inside = s.movemask(s.andnot(below_lo, below_hi));
        if inside != 0 {
            let lanes = s.to_u32s(a);
            while inside != 0 {
                let lane = inside.trailing_zeros() as usize;
                if let Some(slot) = out.get_mut(in_range as usize) {
                    *slot = lanes[lane];
                }
                in_range += 1;
                inside &= inside - 1;
            }
        }
    }
    let tail_base = base + (w.len() - tail.len()) as u64;
    let free = out.get_mut(in_range as usize..).unwrap_or_default();
    let rest = scan_range_generic(tail, lo, hi, free).map_err(|e| BadValue {
        index: tail_base + e.index,
        value: e.value,
    })?;
    scan.at_least_hi += at_least_hi + rest.at_least_hi;
    scan.in_range = in_range + rest.in_range;
    scan.max_abs_bits = scan.max_abs_bits.max(rest.max_abs_bits).max(s.hmax_u(max));
    Ok(())
}
