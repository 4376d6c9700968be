//! The NEON backend (aarch64, where NEON is baseline): the token and the
//! `#[target_feature]` entry points that instantiate the shared kernels of
//! [`kernels::simd`](crate::kernels::simd) with [`NeonLanes`] (see there for the
//! exactness contract).
//!
//! NEON is baseline on `aarch64-unknown-linux-gnu`, but rustc still requires a
//! `#[target_feature(enable = "neon")]` context to call the intrinsics safely ("the neon
//! target feature being enabled in the build configuration does not remove the
//! requirement"), so each kernel is compiled inside such an entry point, and the only
//! `unsafe` calls into them are the [`Neon`] methods.

use crate::error::Result;
use crate::format::PackedTensor;
use crate::kernels::common::{for_f32_blocks, histogram_with};
use crate::kernels::q8::Q8Activations;
use crate::kernels::simd::{self, histogram_in_contract};
use crate::kernels::{CpuKernels, RowJob, RowsDone, RowsOut};
use crate::select::{BadValue, HistogramPass, RangeScan, HIST_BINS, NON_FINITE_BITS};
use crate::weights::Weights;

use super::lanes::NeonLanes;

/// The NEON backend. Holding a value proves the CPU has NEON (baseline on aarch64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neon {
    _proof: (),
}

impl Neon {
    /// Whether NEON is available: the target's baseline (`aarch64-*` targets other than
    /// the soft-float bare-metal ones).
    #[inline]
    pub fn is_available() -> bool {
        cfg!(target_feature = "neon")
    }

    /// The backend, when available.
    #[inline]
    pub fn try_new() -> Option<Self> {
        if Self::is_available() {
            Some(Neon { _proof: () })
        } else {
            None
        }
    }

    /// The backend without checking.
    ///
    /// # Safety
    /// The CPU running any method of the returned value must support NEON.
    #[inline]
    pub unsafe fn new_unchecked() -> Self {
        Neon { _proof: () }
    }
}

/// Instantiates the shared kernels for NEON: each entry point compiles its kernel, lane
/// methods inlined, with NEON enabled.
mod entry {
    use super::*;

    #[target_feature(enable = "neon")]
    pub(super) fn histogram(
        s: NeonLanes,
        w: &[f32],
        pass: &HistogramPass,
        bins: &mut [u32; HIST_BINS],
        sub: &mut [[u32; HIST_BINS]; 4],
    ) -> u32 {
        simd::histogram_f32(s, w, pass, bins, sub)
    }

    #[target_feature(enable = "neon")]
    pub(super) fn count(s: NeonLanes, w: &[f32], t: u32) -> (u64, u64) {
        simd::count_f32(s, w, t)
    }

    #[target_feature(enable = "neon")]
    pub(super) fn scan_range(
        s: NeonLanes,
        w: &[f32],
        base: u64,
        range: (u32, u32),
        out: &mut [u32],
        scan: &mut RangeScan,
    ) -> Result<(), BadValue> {
        simd::scan_range_f32(s, w, base, range, out, scan)
    }

    #[target_feature(enable = "neon")]
    pub(super) fn quantize_rows(
        s: NeonLanes,
        w: Weights<'_>,
        job: &RowJob,
        out: &mut RowsOut<'_>,
    ) -> Result<RowsDone> {
        simd::quantize_rows(s, w, job, out)
    }

    #[target_feature(enable = "neon")]
    pub(super) fn dequantize_row(
        s: NeonLanes,
        t: &PackedTensor<'_>,
        r: usize,
        out: &mut [f32],
    ) -> Result<()> {
        simd::dequantize_row(s, t, r, out)
    }

    #[target_feature(enable = "neon")]
    pub(super) fn dot_row(s: NeonLanes, t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<f32> {
        simd::dot_row(s, t, r, x)
    }

    #[target_feature(enable = "neon")]
    pub(super) fn dot_row_q8(
        s: NeonLanes,
        t: &PackedTensor<'_>,
        r: usize,
        a: &Q8Activations<'_>,
    ) -> Result<f32> {
        simd::dot_row_q8(s, t, r, a)
    }
}

impl CpuKernels for Neon {
    fn name(&self) -> &'static str {
        "neon"
    }

    fn histogram(
        &self,
        w: Weights<'_>,
        pass: &HistogramPass,
        bins: &mut [u32; HIST_BINS],
    ) -> Result<u32, BadValue> {
        let s = NeonLanes::new(*self);
        histogram_with(
            w,
            pass,
            bins,
            histogram_in_contract(pass),
            |w, bins, sub| {
                // SAFETY: holding `self` proves NEON is available.
                unsafe { entry::histogram(s, w, pass, bins, sub) }
            },
        )
    }

    fn count_at_least(&self, w: Weights<'_>, threshold_bits: u32) -> u64 {
        let (s, mut lt) = (NeonLanes::new(*self), 0);
        // SAFETY: holding `self` proves NEON is available.
        for_f32_blocks(w, |w| lt += unsafe { entry::count(s, w, threshold_bits) }.0);
        w.len() as u64 - lt
    }

    fn count_equal(&self, w: Weights<'_>, threshold_bits: u32) -> u64 {
        let (s, mut eq) = (NeonLanes::new(*self), 0);
        // SAFETY: holding `self` proves NEON is available.
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
        let s = NeonLanes::new(*self);
        let range = (lo.min(NON_FINITE_BITS), hi.min(NON_FINITE_BITS));
        let (mut scan, mut base, mut result) = (RangeScan::default(), 0u64, Ok(()));
        for_f32_blocks(w, |w| {
            if result.is_ok() {
                // SAFETY: holding `self` proves NEON is available.
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
        // SAFETY: holding `self` proves NEON is available.
        unsafe { entry::quantize_rows(NeonLanes::new(*self), w, job, out) }
    }

    fn dequantize_rows(
        &self,
        t: &PackedTensor<'_>,
        first_row: usize,
        out: &mut [f32],
    ) -> Result<()> {
        simd::dequantize_rows(t, first_row, out, |r, row_out| {
            // SAFETY: holding `self` proves NEON is available.
            unsafe { entry::dequantize_row(NeonLanes::new(*self), t, r, row_out) }
        })
    }

    fn dot_row(&self, t: &PackedTensor<'_>, row: usize, x: &[f32]) -> Result<f32> {
        // SAFETY: holding `self` proves NEON is available.
        unsafe { entry::dot_row(NeonLanes::new(*self), t, row, x) }
    }

    /// Exact integer `Σ c·q` per group with widening multiplies, vectorized outlier
    /// corrections; formats other than 4-bit codes in groups of 128 use the reference.
    fn dot_row_q8(&self, t: &PackedTensor<'_>, row: usize, a: &Q8Activations<'_>) -> Result<f32> {
        // SAFETY: holding `self` proves NEON is available.
        unsafe { entry::dot_row_q8(NeonLanes::new(*self), t, row, a) }
    }
}
