//! The `CpuKernels` implementation every SIMD ISA shares, generated for its token.

/// Implements [`CpuKernels`](crate::kernels::CpuKernels) for the ISA token `$token`
/// (a [`SimdToken`](crate::kernels::simd::SimdToken)) named `$name`: every operation runs
/// its shared kernel through [`SimdToken::run`](crate::kernels::simd::SimdToken::run).
macro_rules! simd_kernels {
    ($token:ty, $name:literal) => {
        const _: () = {
            use core::marker::PhantomData;
            use $crate::error::Result;
            use $crate::format::PackedTensor;
            use $crate::kernels::common::{for_f32_blocks_with, histogram_with};
            use $crate::kernels::format::with_format;
            use $crate::kernels::simd::entry::*;
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
                        |w, out| t.run(ToF32 { w, out }),
                        |w, bins, sub| t.run(Histogram { w, pass, bins, sub }),
                    )
                }

                fn count_at_least(&self, w: Weights<'_>, threshold_bits: u32) -> u64 {
                    let (t, mut lt) = (*self, 0);
                    for_f32_blocks_with(
                        w,
                        |w, out| t.run(ToF32 { w, out }),
                        |w| {
                            lt += t
                                .run(Count {
                                    w,
                                    t: threshold_bits,
                                })
                                .0
                        },
                    );
                    w.len() as u64 - lt
                }

                fn count_equal(&self, w: Weights<'_>, threshold_bits: u32) -> u64 {
                    let (t, mut eq) = (*self, 0);
                    for_f32_blocks_with(
                        w,
                        |w, out| t.run(ToF32 { w, out }),
                        |w| {
                            eq += t
                                .run(Count {
                                    w,
                                    t: threshold_bits,
                                })
                                .1
                        },
                    );
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
                    for_f32_blocks_with(
                        w,
                        |w, out| t.run(ToF32 { w, out }),
                        |w| {
                            if result.is_ok() {
                                result = t.run(ScanRange {
                                    w,
                                    base,
                                    range,
                                    out,
                                    scan: &mut scan,
                                });
                                base += w.len() as u64;
                            }
                        },
                    );
                    result.map(|()| scan)
                }

                fn quantize_rows(
                    &self,
                    w: Weights<'_>,
                    job: &RowJob,
                    out: &mut RowsOut<'_>,
                ) -> Result<RowsDone> {
                    with_format!(job.params.version, F => self.run(QuantizeRows::<F> {
                        w,
                        job,
                        out,
                        format: PhantomData,
                    }))
                }

                fn dequantize_rows(
                    &self,
                    t: &PackedTensor<'_>,
                    first_row: usize,
                    out: &mut [f32],
                ) -> Result<()> {
                    simd::dequantize_rows(t, first_row, out, |r, row_out| {
                        let at = t.row_cursor(r)?;
                        with_format!(t.version(), F => self.run(DequantizePart::<F> {
                            t,
                            at,
                            out: row_out,
                            format: PhantomData,
                        }))
                        .map(drop)
                    })
                }

                fn dequantize_part(
                    &self,
                    t: &PackedTensor<'_>,
                    at: &mut $crate::format::RowCursor,
                    out: &mut [f32],
                ) -> Result<()> {
                    let (_, groups) = t.check_part(at, out.len())?;
                    let outliers = with_format!(t.version(), F => self.run(DequantizePart::<F> {
                        t,
                        at: *at,
                        out,
                        format: PhantomData,
                    }))?;
                    at.advance(groups, outliers);
                    Ok(())
                }

                fn dot_row(&self, t: &PackedTensor<'_>, row: usize, x: &[f32]) -> Result<f32> {
                    with_format!(t.version(), F => self.run(DotRow::<F> {
                        t,
                        r: row,
                        x,
                        format: PhantomData,
                    }))
                }

                fn gemv(&self, t: &PackedTensor<'_>, x: &[f32], y: &mut [f32]) -> Result<()> {
                    with_format!(t.version(), F => self.run(Gemv::<F> {
                        t,
                        x,
                        y,
                        format: PhantomData,
                    }))
                }

                /// Exact integer `Σ c·q` per group (each version's `LaneFormat::dot_row_q8`).
                fn dot_row_q8(
                    &self,
                    t: &PackedTensor<'_>,
                    row: usize,
                    a: &Q8Activations<'_>,
                ) -> Result<f32> {
                    with_format!(t.version(), F => self.run(DotRowQ8::<F> {
                        t,
                        r: row,
                        a,
                        format: PhantomData,
                    }))
                }

                /// Versions 2 and 3 work on several rows at once (each row's arithmetic
                /// that of `dot_row_q8`); version 1 one row at a time (`LaneFormat`).
                fn gemv_q8_rows(
                    &self,
                    t: &PackedTensor<'_>,
                    first: usize,
                    a: &Q8Activations<'_>,
                    y: &mut [f32],
                ) -> Result<()> {
                    with_format!(t.version(), F => self.run(GemvQ8Rows::<F> {
                        t,
                        first,
                        a,
                        y,
                        format: PhantomData,
                    }))
                }

                /// Whole blocks from the repacked rows, the rest as `gemv_q8_rows`.
                fn gemv_q8_repacked(
                    &self,
                    r: &$crate::kernels::Repacked<'_>,
                    first: usize,
                    a: &Q8Activations<'_>,
                    y: &mut [f32],
                ) -> Result<()> {
                    self.run(GemvQ8Repacked { r, first, a, y })
                }

                fn quantize_activations<'a>(
                    &self,
                    t: &PackedTensor<'_>,
                    x: &[f32],
                    q: &'a mut [i8],
                    scales: &'a mut [f32],
                    sums: &'a mut [i32],
                ) -> Result<Q8Activations<'a>> {
                    self.run(QuantizeActivations {
                        t,
                        x,
                        q,
                        scales,
                        sums,
                    })
                }

                fn add_error_sums(
                    &self,
                    sums: &mut [f64; 3],
                    w: Weights<'_>,
                    deq: &[f32],
                    bits: u8,
                    group_size: usize,
                ) {
                    self.run(ErrorSums {
                        sums,
                        w,
                        deq,
                        bits,
                        group_size,
                    })
                }
            }
        };
    };
}

pub(crate) use simd_kernels;

use core::marker::PhantomData;

use super::format::LaneFormat;
use super::Lanes;
use crate::error::Result;
use crate::format::{PackedTensor, RowCursor};
use crate::kernels::{Q8Activations, RowJob, RowsDone, RowsOut};
use crate::select::{BadValue, HistogramPass, RangeScan, HIST_BINS};
use crate::weights::Weights;

/// One call of a shared kernel, which [`SimdToken::run`](super::SimdToken::run) makes with the ISA's lanes.
///
/// A trait rather than a closure: `call` is `#[inline(always)]`, so the kernel always
/// inlines into the ISA's `#[target_feature]` trampoline (a closure may be left out of
/// line, compiled without the features, and run many times slower).
pub(crate) trait Kernel<S: Lanes> {
    /// What the kernel returns.
    type Out;
    /// Runs the kernel.
    fn call(self, s: S) -> Self::Out;
}

macro_rules! kernel {
    ($(#[$doc:meta])* $name:ident<$($l:lifetime),*> { $($f:ident: $t:ty),* } -> $out:ty = $kernel:path) => {
        $(#[$doc])*
        pub(crate) struct $name<$($l),*> {
            $(pub(crate) $f: $t),*
        }

        impl<$($l,)* S: Lanes> Kernel<S> for $name<$($l),*> {
            type Out = $out;
            #[inline(always)]
            fn call(self, s: S) -> $out {
                let $name { $($f),* } = self;
                $kernel(s, $($f),*)
            }
        }
    };
}

/// A kernel of one format version: `$name<F>` runs `F`'s [`LaneFormat`] method `$method`.
macro_rules! format_kernel {
    ($(#[$doc:meta])* $name:ident<$($l:lifetime),*> { $($f:ident: $t:ty),* } -> $out:ty = $method:ident) => {
        $(#[$doc])*
        pub(crate) struct $name<$($l,)* F> {
            $(pub(crate) $f: $t,)*
            /// The format version.
            pub(crate) format: PhantomData<F>,
        }

        impl<$($l,)* F: LaneFormat, S: Lanes> Kernel<S> for $name<$($l,)* F> {
            type Out = $out;
            #[inline(always)]
            fn call(self, s: S) -> $out {
                let $name { $($f,)* format: _ } = self;
                F::$method(s, $($f),*)
            }
        }
    };
}

format_kernel!(
    /// [`LaneFormat::quantize_rows`].
    QuantizeRows<'a, 'b> {
        w: Weights<'a>,
        job: &'a RowJob,
        out: &'a mut RowsOut<'b>
    } -> Result<RowsDone> = quantize_rows
);
format_kernel!(
    /// [`LaneFormat::dequantize_part`].
    DequantizePart<'a, 'b> {
        t: &'a PackedTensor<'b>,
        at: RowCursor,
        out: &'a mut [f32]
    } -> Result<usize> = dequantize_part
);
format_kernel!(
    /// [`LaneFormat::dot_row`].
    DotRow<'a, 'b> { t: &'a PackedTensor<'b>, r: usize, x: &'a [f32] } -> Result<f32> = dot_row
);
format_kernel!(
    /// [`LaneFormat::gemv`].
    Gemv<'a, 'b> {
        t: &'a PackedTensor<'b>,
        x: &'a [f32],
        y: &'a mut [f32]
    } -> Result<()> = gemv
);
format_kernel!(
    /// [`LaneFormat::dot_row_q8`].
    DotRowQ8<'a, 'b> {
        t: &'a PackedTensor<'b>,
        r: usize,
        a: &'a Q8Activations<'b>
    } -> Result<f32> = dot_row_q8
);
format_kernel!(
    /// [`LaneFormat::gemv_q8_rows`].
    GemvQ8Rows<'a, 'b> {
        t: &'a PackedTensor<'b>,
        first: usize,
        a: &'a Q8Activations<'b>,
        y: &'a mut [f32]
    } -> Result<()> = gemv_q8_rows
);

kernel!(
    /// [`super::gemv_q8_repacked`].
    GemvQ8Repacked<'a, 'b> {
        r: &'a crate::kernels::Repacked<'b>,
        first: usize,
        a: &'a Q8Activations<'b>,
        y: &'a mut [f32]
    } -> Result<()> = super::gemv_q8_repacked
);
kernel!(
    /// [`super::histogram_f32`].
    Histogram<'a, 'b> {
        w: &'a [f32],
        pass: &'a HistogramPass,
        bins: &'b mut [u32; HIST_BINS],
        sub: &'b mut [[u32; HIST_BINS]; 4]
    } -> u32 = super::histogram_f32
);
kernel!(
    /// [`super::count_f32`].
    Count<'a> { w: &'a [f32], t: u32 } -> (u64, u64) = super::count_f32
);
kernel!(
    /// [`super::scan_range_f32`].
    ScanRange<'a, 'b> {
        w: &'a [f32],
        base: u64,
        range: (u32, u32),
        out: &'b mut [u32],
        scan: &'b mut RangeScan
    } -> Result<(), BadValue> = super::scan_range_f32
);
kernel!(
    /// [`Q8Activations::quantize_for`] in lanes.
    QuantizeActivations<'a, 'b, 'c> {
        t: &'a PackedTensor<'b>,
        x: &'a [f32],
        q: &'c mut [i8],
        scales: &'c mut [f32],
        sums: &'c mut [i32]
    } -> Result<Q8Activations<'c>> = super::quantize_activations
);
kernel!(
    /// [`crate::stats::add_error_sums`], in the ISA's `#[target_feature]` function.
    ErrorSums<'a, 'b> {
        sums: &'a mut [f64; 3],
        w: Weights<'b>,
        deq: &'a [f32],
        bits: u8,
        group_size: usize
    } -> () = error_sums
);

/// [`crate::stats::add_error_sums`] (the lanes unused: the compiler vectorizes its f64
/// lanes with the ISA's registers).
#[inline(always)]
fn error_sums<S: Lanes>(
    _: S,
    sums: &mut [f64; 3],
    w: Weights<'_>,
    deq: &[f32],
    bits: u8,
    group_size: usize,
) {
    crate::stats::add_error_sums(sums, w, deq, bits, group_size)
}
kernel!(
    /// F16/BF16 weights to f32 in the ISA's `#[target_feature]` function
    /// ([`weights_to_f32`](super::weights_to_f32): F16C on x86, else the portable
    /// conversions, which vectorize there).
    ToF32<'a, 'b> { w: Weights<'b>, out: &'a mut [f32] } -> () = to_f32
);

/// `w` as f32 into `out` (`out.len() == w.len()`).
#[inline(always)]
fn to_f32<S: Lanes>(s: S, w: Weights<'_>, out: &mut [f32]) {
    super::weights_to_f32(s, w, out);
}
