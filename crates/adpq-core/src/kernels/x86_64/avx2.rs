//! The AVX2 (+FMA) backend: the token, CPU detection, and the `#[target_feature]` entry
//! points that instantiate the shared kernels of [`kernels::simd`](crate::kernels::simd)
//! with [`Avx2Lanes`] (see there for the exactness contract).
//!
//! Every entry point is `#[target_feature(enable = "avx2,fma,popcnt")]` and private; the
//! only `unsafe` calls into them are the [`Avx2`] methods, whose value proves that the CPU
//! has all three. Only the lane operations themselves (in [`super::lanes`]) are
//! ISA-specific.

use crate::error::Result;
use crate::format::PackedTensor;
use crate::kernels::common::{for_f32_blocks, histogram_with};
use crate::kernels::q8::Q8Activations;
use crate::kernels::simd::{self, histogram_in_contract};
use crate::kernels::{CpuKernels, RowJob, RowsDone, RowsOut};
use crate::select::{BadValue, HistogramPass, RangeScan, HIST_BINS, NON_FINITE_BITS};
use crate::weights::Weights;

use super::lanes::Avx2Lanes;

cpufeatures::new!(cpuid_avx2_fma, "avx2", "fma", "popcnt");

/// The AVX2 backend. Holding a value proves the CPU supports AVX2, FMA and POPCNT (each is
/// checked). BMI2 is not needed: outlier positions are unpacked with shifts, not PDEP
/// (microcoded and slow on AMD Zen1/Zen2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Avx2 {
    _proof: (),
}

impl Avx2 {
    /// Whether this CPU has AVX2, FMA and POPCNT (compile-time target features first, then
    /// CPUID, which `cpufeatures` does without `std` and caches).
    ///
    /// These three are exactly the features every `#[target_feature]` function of this
    /// module enables (`count_ones` compiles to POPCNT; nothing uses BMI1/BMI2, LZCNT or
    /// F16C), and the compile-time shortcut and the CPUID list must both name all of them:
    /// a feature enabled below but missing from either check would let a token exist on a
    /// CPU without it.
    #[inline]
    pub fn is_available() -> bool {
        #[cfg(all(
            target_feature = "avx2",
            target_feature = "fma",
            target_feature = "popcnt"
        ))]
        {
            true
        }
        #[cfg(not(all(
            target_feature = "avx2",
            target_feature = "fma",
            target_feature = "popcnt"
        )))]
        {
            cpuid_avx2_fma::get()
        }
    }

    /// The backend, when the CPU supports it.
    #[inline]
    pub fn try_new() -> Option<Self> {
        if Self::is_available() {
            Some(Avx2 { _proof: () })
        } else {
            None
        }
    }

    /// The backend without checking the CPU.
    ///
    /// # Safety
    /// The CPU running any method of the returned value must support AVX2, FMA and POPCNT.
    #[inline]
    pub unsafe fn new_unchecked() -> Self {
        Avx2 { _proof: () }
    }
}

/// Instantiates the shared kernels for AVX2: each entry point compiles its kernel, lane
/// methods inlined, with the three features enabled.
mod entry {
    use super::*;

    #[target_feature(enable = "avx2,fma,popcnt")]
    pub(super) fn histogram(
        s: Avx2Lanes,
        w: &[f32],
        pass: &HistogramPass,
        bins: &mut [u32; HIST_BINS],
        sub: &mut [[u32; HIST_BINS]; 4],
    ) -> u32 {
        simd::histogram_f32(s, w, pass, bins, sub)
    }

    #[target_feature(enable = "avx2,fma,popcnt")]
    pub(super) fn count(s: Avx2Lanes, w: &[f32], t: u32) -> (u64, u64) {
        simd::count_f32(s, w, t)
    }

    #[target_feature(enable = "avx2,fma,popcnt")]
    pub(super) fn scan_range(
        s: Avx2Lanes,
        w: &[f32],
        base: u64,
        range: (u32, u32),
        out: &mut [u32],
        scan: &mut RangeScan,
    ) -> Result<(), BadValue> {
        simd::scan_range_f32(s, w, base, range, out, scan)
    }

    #[target_feature(enable = "avx2,fma,popcnt")]
    pub(super) fn quantize_rows(
        s: Avx2Lanes,
        w: Weights<'_>,
        job: &RowJob,
        out: &mut RowsOut<'_>,
    ) -> Result<RowsDone> {
        simd::quantize_rows(s, w, job, out)
    }

    #[target_feature(enable = "avx2,fma,popcnt")]
    pub(super) fn dequantize_row(
        s: Avx2Lanes,
        t: &PackedTensor<'_>,
        r: usize,
        out: &mut [f32],
    ) -> Result<()> {
        simd::dequantize_row(s, t, r, out)
    }

    #[target_feature(enable = "avx2,fma,popcnt")]
    pub(super) fn dot_row(s: Avx2Lanes, t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<f32> {
        simd::dot_row(s, t, r, x)
    }

    #[target_feature(enable = "avx2,fma,popcnt")]
    pub(super) fn dot_row_q8(
        s: Avx2Lanes,
        t: &PackedTensor<'_>,
        r: usize,
        a: &Q8Activations<'_>,
    ) -> Result<f32> {
        simd::dot_row_q8(s, t, r, a)
    }
}

impl CpuKernels for Avx2 {
    fn name(&self) -> &'static str {
        "avx2"
    }

    fn histogram(
        &self,
        w: Weights<'_>,
        pass: &HistogramPass,
        bins: &mut [u32; HIST_BINS],
    ) -> Result<u32, BadValue> {
        let s = Avx2Lanes::new(*self);
        histogram_with(
            w,
            pass,
            bins,
            histogram_in_contract(pass),
            |w, bins, sub| {
                // SAFETY: holding `self` proves AVX2, FMA and POPCNT are available.
                unsafe { entry::histogram(s, w, pass, bins, sub) }
            },
        )
    }

    fn count_at_least(&self, w: Weights<'_>, threshold_bits: u32) -> u64 {
        let (s, mut lt) = (Avx2Lanes::new(*self), 0);
        // SAFETY: holding `self` proves AVX2, FMA and POPCNT are available.
        for_f32_blocks(w, |w| lt += unsafe { entry::count(s, w, threshold_bits) }.0);
        w.len() as u64 - lt
    }

    fn count_equal(&self, w: Weights<'_>, threshold_bits: u32) -> u64 {
        let (s, mut eq) = (Avx2Lanes::new(*self), 0);
        // SAFETY: holding `self` proves AVX2, FMA and POPCNT are available.
        for_f32_blocks(w, |w| eq += unsafe { entry::count(s, w, threshold_bits) }.1);
        eq
    }

    fn scan_range(
        &self,
        w: Weights<'_>,
        lo: u32,
        hi: u32,
        out: &mut [u32],
    ) -> Result<RangeScan, BadValue> {
        let s = Avx2Lanes::new(*self);
        let range = (lo.min(NON_FINITE_BITS), hi.min(NON_FINITE_BITS));
        let (mut scan, mut base, mut result) = (RangeScan::default(), 0u64, Ok(()));
        for_f32_blocks(w, |w| {
            if result.is_ok() {
                // SAFETY: holding `self` proves AVX2, FMA and POPCNT are available.
                result = unsafe { entry::scan_range(s, w, base, range, out, &mut scan) };
                base += w.len() as u64;
            }
        });
        result.map(|()| scan)
    }

    fn quantize_rows(
        &self,
        w: Weights<'_>,
        job: &RowJob,
        out: &mut RowsOut<'_>,
    ) -> Result<RowsDone> {
        // SAFETY: holding `self` proves AVX2, FMA and POPCNT are available.
        unsafe { entry::quantize_rows(Avx2Lanes::new(*self), w, job, out) }
    }

    fn dequantize_rows(
        &self,
        t: &PackedTensor<'_>,
        first_row: usize,
        out: &mut [f32],
    ) -> Result<()> {
        simd::dequantize_rows(t, first_row, out, |r, row_out| {
            // SAFETY: holding `self` proves AVX2, FMA and POPCNT are available.
            unsafe { entry::dequantize_row(Avx2Lanes::new(*self), t, r, row_out) }
        })
    }

    fn dot_row(&self, t: &PackedTensor<'_>, row: usize, x: &[f32]) -> Result<f32> {
        // SAFETY: holding `self` proves AVX2, FMA and POPCNT are available.
        unsafe { entry::dot_row(Avx2Lanes::new(*self), t, row, x) }
    }

    /// Exact integer `Σ c·q` per group with `maddubs`, vectorized outlier corrections;
    /// formats other than 4-bit codes in groups of 128 use the portable reference.
    fn dot_row_q8(&self, t: &PackedTensor<'_>, row: usize, a: &Q8Activations<'_>) -> Result<f32> {
        // SAFETY: holding `self` proves AVX2, FMA and POPCNT are available.
        unsafe { entry::dot_row_q8(Avx2Lanes::new(*self), t, row, a) }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::Avx2;

    /// The token exists exactly when the CPU has every feature the module's functions enable.
    #[test]
    fn token_requires_every_enabled_feature() {
        let all = std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("popcnt");
        assert_eq!(Avx2::is_available(), all);
        assert_eq!(Avx2::try_new().is_some(), all);
    }
}
