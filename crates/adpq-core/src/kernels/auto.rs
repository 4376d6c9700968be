//! Picking a backend at run time, and the documented tolerance of SIMD dot products.

use super::check_activations;
use core::fmt;

use super::format::{with_format, Format};
use super::{
    Avx2, AvxVnni, CpuKernels, Neon, Q8Activations, Repacked, RowJob, RowsDone, RowsOut, Scalar,
};
use crate::error::Result;
use crate::format::PackedTensor;
use crate::select::{BadValue, HistogramPass, RangeScan, HIST_BINS};
use crate::weights::Weights;

/// Any CPU backend, chosen at run time. Detect once ([`AnyKernels::detect`]), then pass
/// the (`Copy`) value into parallel closures.
///
/// Every variant exists on every target: on a target without the ISA, the variant's
/// type is uninhabited, so it can never be constructed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnyKernels {
    /// The portable oracle.
    Scalar(Scalar),
    /// AVX2 with FMA, POPCNT and F16C (x86_64).
    Avx2(Avx2),
    /// The AVX2 set with AVX-VNNI's int8 dot (x86_64).
    AvxVnni(AvxVnni),
    /// NEON (aarch64, always present there).
    Neon(Neon),
}

/// Why [`AnyKernels::by_name`] refused a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelChoiceError<'a> {
    /// Not one of [`AnyKernels::NAMES`].
    Unknown(&'a str),
    /// A known backend this CPU (or target) cannot run.
    Unavailable(&'static str),
}

impl fmt::Display for KernelChoiceError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelChoiceError::Unknown(n) => write!(
                f,
                "unknown backend `{n}` (expected one of: auto, scalar, avx2, avx-vnni, neon)"
            ),
            KernelChoiceError::Unavailable(n) => {
                write!(f, "backend `{n}` is not available on this CPU")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for KernelChoiceError<'_> {}

impl AnyKernels {
    /// The names [`AnyKernels::by_name`] accepts besides `auto`.
    pub const NAMES: [&'static str; 4] = ["scalar", "avx2", "avx-vnni", "neon"];

    /// The fastest backend this CPU supports: AVX-VNNI, else AVX2, else NEON, else
    /// scalar.
    pub fn detect() -> AnyKernels {
        if let Some(b) = AvxVnni::try_new() {
            AnyKernels::AvxVnni(b)
        } else if let Some(b) = Avx2::try_new() {
            AnyKernels::Avx2(b)
        } else if let Some(b) = Neon::try_new() {
            AnyKernels::Neon(b)
        } else {
            AnyKernels::Scalar(Scalar)
        }
    }

    /// The backend called `name` (`auto`, `scalar`, `avx2`, `avx-vnni`, `neon`;
    /// case-insensitive).
    ///
    /// ```
    /// use adpq_core::kernels::AnyKernels;
    /// assert_eq!(AnyKernels::by_name("scalar").unwrap().name(), "scalar");
    /// assert!(AnyKernels::by_name("sse9").is_err());
    /// # use adpq_core::CpuKernels;
    /// ```
    pub fn by_name(name: &str) -> core::result::Result<AnyKernels, KernelChoiceError<'_>> {
        let is = |s: &str| name.eq_ignore_ascii_case(s);
        if is("auto") {
            Ok(Self::detect())
        } else if is("scalar") {
            Ok(AnyKernels::Scalar(Scalar))
        } else if is("avx2") {
            Avx2::try_new()
                .map(AnyKernels::Avx2)
                .ok_or(KernelChoiceError::Unavailable("avx2"))
        } else if is("avx-vnni") {
            AvxVnni::try_new()
                .map(AnyKernels::AvxVnni)
                .ok_or(KernelChoiceError::Unavailable("avx-vnni"))
        } else if is("neon") {
            Neon::try_new()
                .map(AnyKernels::Neon)
                .ok_or(KernelChoiceError::Unavailable("neon"))
        } else {
            Err(KernelChoiceError::Unknown(name))
        }
    }

    /// Every backend this CPU can run, scalar first.
    pub fn available() -> impl Iterator<Item = AnyKernels> {
        [
            Some(AnyKernels::Scalar(Scalar)),
            Avx2::try_new().map(AnyKernels::Avx2),
            AvxVnni::try_new().map(AnyKernels::AvxVnni),
            Neon::try_new().map(AnyKernels::Neon),
        ]
        .into_iter()
        .flatten()
    }
}

impl From<Scalar> for AnyKernels {
    fn from(b: Scalar) -> Self {
        AnyKernels::Scalar(b)
    }
}
impl From<Avx2> for AnyKernels {
    fn from(b: Avx2) -> Self {
        AnyKernels::Avx2(b)
    }
}
impl From<AvxVnni> for AnyKernels {
    fn from(b: AvxVnni) -> Self {
        AnyKernels::AvxVnni(b)
    }
}
impl From<Neon> for AnyKernels {
    fn from(b: Neon) -> Self {
        AnyKernels::Neon(b)
    }
}

macro_rules! dispatch {
    ($self:expr, $b:ident => $e:expr) => {
        match $self {
            AnyKernels::Scalar($b) => $e,
            AnyKernels::Avx2($b) => $e,
            AnyKernels::AvxVnni($b) => $e,
            AnyKernels::Neon($b) => $e,
        }
    };
}

impl CpuKernels for AnyKernels {
    fn name(&self) -> &'static str {
        dispatch!(self, b => b.name())
    }
    fn histogram(
        &self,
        w: Weights<'_>,
        pass: &HistogramPass,
        bins: &mut [u32; HIST_BINS],
    ) -> core::result::Result<u32, BadValue> {
        dispatch!(self, b => b.histogram(w, pass, bins))
    }
    fn count_at_least(&self, w: Weights<'_>, threshold_bits: u32) -> u64 {
        dispatch!(self, b => b.count_at_least(w, threshold_bits))
    }
    fn count_equal(&self, w: Weights<'_>, threshold_bits: u32) -> u64 {
        dispatch!(self, b => b.count_equal(w, threshold_bits))
    }
    fn scan_range(
        &self,
        w: Weights<'_>,
        lo: u32,
        hi: u32,
        out: &mut [u32],
    ) -> Result<RangeScan, BadValue> {
        dispatch!(self, b => b.scan_range(w, lo, hi, out))
    }
    fn quantize_rows(
        &self,
        w: Weights<'_>,
        job: &RowJob,
        out: &mut RowsOut<'_>,
    ) -> Result<RowsDone> {
        dispatch!(self, b => b.quantize_rows(w, job, out))
    }
    fn dequantize_rows(
        &self,
        t: &PackedTensor<'_>,
        first_row: usize,
        out: &mut [f32],
    ) -> Result<()> {
        dispatch!(self, b => b.dequantize_rows(t, first_row, out))
    }
    fn dequantize_part(
        &self,
        t: &PackedTensor<'_>,
        at: &mut crate::format::RowCursor,
        out: &mut [f32],
    ) -> Result<()> {
        dispatch!(self, b => b.dequantize_part(t, at, out))
    }
    fn dot_row(&self, t: &PackedTensor<'_>, row: usize, x: &[f32]) -> Result<f32> {
        dispatch!(self, b => b.dot_row(t, row, x))
    }
    fn gemv(&self, t: &PackedTensor<'_>, x: &[f32], y: &mut [f32]) -> Result<()> {
        dispatch!(self, b => b.gemv(t, x, y))
    }
    fn dot_row_q8(&self, t: &PackedTensor<'_>, row: usize, a: &Q8Activations<'_>) -> Result<f32> {
        dispatch!(self, b => b.dot_row_q8(t, row, a))
    }
    fn gemv_q8(&self, t: &PackedTensor<'_>, a: &Q8Activations<'_>, y: &mut [f32]) -> Result<()> {
        dispatch!(self, b => b.gemv_q8(t, a, y))
    }
    fn gemv_q8_rows(
        &self,
        t: &PackedTensor<'_>,
        first: usize,
        a: &Q8Activations<'_>,
        y: &mut [f32],
    ) -> Result<()> {
        dispatch!(self, b => b.gemv_q8_rows(t, first, a, y))
    }
    fn gemv_q8_repacked(
        &self,
        r: &Repacked<'_>,
        first: usize,
        a: &Q8Activations<'_>,
        y: &mut [f32],
    ) -> Result<()> {
        dispatch!(self, b => b.gemv_q8_repacked(r, first, a, y))
    }
    fn quantize_activations<'a>(
        &self,
        t: &PackedTensor<'_>,
        x: &[f32],
        q: &'a mut [i8],
        scales: &'a mut [f32],
        sums: &'a mut [i32],
    ) -> Result<Q8Activations<'a>> {
        dispatch!(self, b => b.quantize_activations(t, x, q, scales, sums))
    }
    fn add_error_sums(
        &self,
        sums: &mut [f64; 3],
        w: Weights<'_>,
        deq: &[f32],
        bits: u8,
        group_size: usize,
    ) {
        dispatch!(self, b => b.add_error_sums(sums, w, deq, bits, group_size))
    }
}

/// The documented bound on how far a SIMD backend's [`CpuKernels::dot_row`] may be from the
/// scalar oracle's on the same row and `x`.
///
/// Codes, scales and dequantized values are bit-identical across backends; dot products
/// are not, because SIMD backends sum in another order (8 or 4 lanes, FMA). Both results
/// are sums of the same `n + k` terms (`n = cols`, `k` outliers of the row), and any two
/// orders of a floating-point sum of `m` terms differ by at most `2·m·u·Σ|term|` with
/// `u = 2^-24`. The bound returned is `2·(m + 8)·u·S + f32::MIN_POSITIVE`, where
/// `S = Σ_i |x_i|·(|c_i − z_in|·Δ_in + [i is an outlier]·(|c_i − z_out|·Δ_out + |c_i − z_in|·Δ_in))`
/// covers the dense terms and the outlier corrections (the `+ 8` covers the scale
/// multiplications and the lane reduction). Version 2 sums `Σc·x` and `Σx` per group, so
/// its dense term is `|x_i|·(c_i·d + |m|)` and an outlier's `|x_p|·(|ŵ_p| + c_p·d + |m|)`.
/// Version 3 sums the same per group over the rotated activations `x'`, with the code book
/// level `L[c_i]` for `c_i`.
/// The conformance suite enforces it.
pub fn dot_tolerance(t: &PackedTensor<'_>, r: usize, x: &[f32]) -> Result<f32> {
    check_activations(t, x)?;
    let (s, n_outliers) = with_format!(t.version(), F => F::dot_magnitude(t, r, x))?;
    let m = (t.cols() + n_outliers + 8) as f64;
    Ok((2.0 * m * libm::ldexp(1.0, -24) * s) as f32 + f32::MIN_POSITIVE)
}
