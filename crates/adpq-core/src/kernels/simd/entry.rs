//! The `CpuKernels` implementation every SIMD ISA shares, generated for its token.

/// Implements [`CpuKernels`](crate::kernels::CpuKernels) for the ISA token `$token`
/// (a [`SimdToken`](crate::kernels::simd::SimdToken)) named `$name`: every operation runs
/// its shared kernel through [`SimdToken::run`](crate::kernels::simd::SimdToken::run).
macro_rules! simd_kernels {
    ($token:ty, $name:literal) => {
        const _: () = {
            use $crate::error::Result;
            use $crate::format::PackedTensor;
            use $crate::kernels::common::{for_f32_blocks, histogram_with};
            use $crate::kernels::simd::{self, SimdToken};
            use $crate::kernels::{CpuKernels, Q8Activations, RowJob, RowsDone, RowsOut};
            use $crate::select::{BadValue, HistogramPass, RangeScan, HIST_BINS, NON_FINITE_BITS};
            use $crate::weights::Weights;

            impl CpuKernels for $token {
                fn name(&self) -> &'static str {
                    $name
                }

                fn histogram(
                    &self,
                    w: Weights<'_>,
                    pass: &HistogramPass,
                    bins: &mut [u32; HIST_BINS],
                ) -> Result<u32, BadValue> {
                    let t = *self;
                    histogram_with(
                        w,
                        pass,
                        bins,
                        simd::histogram_in_contract(pass),
                        |w, bins, sub| t.run(|s| simd::histogram_f32(s, w, pass, bins, sub)),
                    )
                }

                fn count_at_least(&self, w: Weights<'_>, threshold_bits: u32) -> u64 {
                    let (t, mut lt) = (*self, 0);
                    for_f32_blocks(w, |w| {
                        lt += t.run(|s| simd::count_f32(s, w, threshold_bits)).0
                    });
                    w.len() as u64 - lt
                }

                fn count_equal(&self, w: Weights<'_>, threshold_bits: u32) -> u64 {
                    let (t, mut eq) = (*self, 0);
                    for_f32_blocks(w, |w| {
                        eq += t.run(|s| simd::count_f32(s, w, threshold_bits)).1
                    });
                    eq
                }

                fn scan_range(
                    &self,
                    w: Weights<'_>,
                    lo: u32,
                    hi: u32,
                    out: &mut [u32],
                ) -> Result<RangeScan, BadValue> {
                    let t = *self;
                    let range = (lo.min(NON_FINITE_BITS), hi.min(NON_FINITE_BITS));
                    let (mut scan, mut base, mut result) = (RangeScan::default(), 0u64, Ok(()));
                    for_f32_blocks(w, |w| {
                        if result.is_ok() {
                            result =
                                t.run(|s| simd::scan_range_f32(s, w, base, range, out, &mut scan));
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
                    self.run(|s| simd::quantize_rows(s, w, job, out))
                }

                fn dequantize_rows(
                    &self,
                    t: &PackedTensor<'_>,
                    first_row: usize,
                    out: &mut [f32],
                ) -> Result<()> {
                    simd::dequantize_rows(t, first_row, out, |r, row_out| {
                        self.run(|s| simd::dequantize_row(s, t, r, row_out))
                    })
                }

                fn dot_row(&self, t: &PackedTensor<'_>, row: usize, x: &[f32]) -> Result<f32> {
                    self.run(|s| simd::dot_row(s, t, row, x))
                }

                /// Exact integer `Σ c·q` per group, vectorized outlier corrections; formats other
                /// than 4-bit codes in groups of 128 use the portable reference.
                fn dot_row_q8(
                    &self,
                    t: &PackedTensor<'_>,
                    row: usize,
                    a: &Q8Activations<'_>,
                ) -> Result<f32> {
                    self.run(|s| simd::dot_row_q8(s, t, row, a))
                }
            }
        };
    };
}

pub(crate) use simd_kernels;
