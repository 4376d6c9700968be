//! `adpq-engine`: whole-tensor compute for adpq, behind one trait.
//!
//! Its job: select outliers, quantize, dequantize, measure the error against the
//! round-to-nearest baseline and multiply a packed tensor by a vector, each on a WHOLE
//! tensor. It knows nothing of files (that is `adpq-io`) nor of the command line (the
//! `adpq` binary); `adpq-core` supplies the format and the row-level kernels.
//!
//! Where to start reading:
//! - [`Engine`]: the seam every backend implements. An engine owns its context (for the
//!   CPU, the kernel token that proves the CPU features; for a GPU, a device context and
//!   streams) and loads a tensor before working on it, so a device engine uploads it once
//!   and keeps it resident for the selection passes and the quantization, or for
//!   repeated gemv.
//! - [`CpuEngine`]: the engine over any [`CpuKernels`](adpq_core::CpuKernels), parallel
//!   inside over row blocks and chunks (the private `driver` module); its output is
//!   byte-identical to the single-threaded core for any thread count.
//! - [`rtn`]: the error statistics ([`ErrorSums`]) and the RTN baseline.
//! - Dequantized values reach F16/BF16/F32 through the core's narrowing rule
//!   ([`adpq_core::narrow`]): saturated within the quantization error, refused beyond it.
//!
//! # Adding a backend
//! Implement [`Engine`]: `load` turns borrowed host weights into the engine's dense
//! tensor (an upload, for a device), `load_packed` does the same for a packed buffer,
//! and the other methods work on those. The packed bytes must equal
//! [`adpq_core::quantize_tensor`]'s for the same selection; the pipeline in the
//! `adpq` binary is generic over `Engine` and needs nothing else.
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod cpu;
mod driver;
pub mod rtn;

pub use adpq_core::OutDtype;
pub use cpu::{CpuDense, CpuEngine, HostVectors};
pub use rtn::ErrorSums;

use adpq_core::{PackedTensor, Params, Quantized, Selection, Weights};

/// What an engine can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The core rejected the tensor or a buffer (NaN weight, bad shape, corrupt packed
    /// tensor, wrong buffer size...).
    #[error(transparent)]
    Core(#[from] adpq_core::Error),
    /// The engine's own machinery failed (no device, a driver or compiler error, out of
    /// device memory...): what failed, and the error that said so.
    #[error("{what}: {source}")]
    Device {
        /// What the engine was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

/// Result alias of engine operations.
pub type EngineResult<T> = Result<T, EngineError>;

/// Whole-tensor quantization, dequantization and products: the seam between the
/// pipeline and a compute backend.
///
/// A run on one tensor is `load` → `select` (once) → `quantize` into a buffer of
/// [`adpq_core::packed_len`] bytes → optionally `load_packed` and `error_sums`. The
/// dense and packed types are the engine's: borrowed host slices for the CPU, device
/// buffers for a GPU engine, so a tensor crosses to the device once however many passes
/// run on it. Every method takes `&self`: an engine is shared, not mutated, by a run.
///
/// Contract: for the same weights, parameters and selection, `quantize` writes the bytes
/// of [`adpq_core::quantize_tensor`] (the scalar kernels are the oracle), and
/// `select` returns the selection of [`adpq_core::select_tensor`].
///
/// Why associated types rather than host slices everywhere: the dense and packed types
/// are where an engine keeps a tensor between calls (for the CPU, borrowed host slices,
/// so loading is free). Results that the pipeline writes to a file (packed bytes,
/// dequantized bytes) come back in host buffers the caller lends.
pub trait Engine {
    /// A dense `rows × cols` tensor loaded for selection and quantization.
    type Dense<'a>
    where
        Self: 'a;
    /// A packed tensor loaded for dequantization, error statistics and gemv.
    type Packed<'a>
    where
        Self: 'a;

    /// A short name for reports (`scalar`, `avx2`, `cuda`...).
    fn name(&self) -> &str;

    /// Loads the weights of a `rows × cols` tensor (row-major).
    fn load<'a>(
        &'a self,
        w: Weights<'a>,
        rows: usize,
        cols: usize,
    ) -> EngineResult<Self::Dense<'a>>;

    /// Selects the outliers of a loaded tensor.
    fn select(&self, t: &Self::Dense<'_>, params: &Params) -> EngineResult<Selection>;

    /// Quantizes a loaded tensor with a selection from [`Engine::select`] into `out`,
    /// exactly [`adpq_core::packed_len`] bytes (on the host).
    fn quantize(
        &self,
        t: &Self::Dense<'_>,
        params: &Params,
        sel: &Selection,
        out: &mut [u8],
    ) -> EngineResult<Quantized>;

    /// Loads a parsed packed tensor.
    fn load_packed<'a>(&'a self, p: PackedTensor<'a>) -> EngineResult<Self::Packed<'a>>;

    /// Error sums of a packed tensor against the dense tensor it came from: AdpQ and the
    /// RTN baseline at the same bits and group size.
    fn error_sums(&self, t: &Self::Dense<'_>, packed: &Self::Packed<'_>)
        -> EngineResult<ErrorSums>;

    /// Dequantizes a whole packed tensor into little-endian `dtype` elements in `out`
    /// (`rows · cols · dtype.size()` bytes, on the host). A value the dtype cannot hold
    /// is saturated when it exceeds the dtype's range by no more than the quantization
    /// error, else [`adpq_core::Error::NotRepresentable`] (see [`adpq_core::narrow`]): never a silent infinity.
    fn dequantize(
        &self,
        packed: &Self::Packed<'_>,
        dtype: OutDtype,
        out: &mut [u8],
    ) -> EngineResult<()>;

    /// Dequantizes rows `first_row..first_row + out.len() / cols` of a packed tensor as
    /// f32 into `out` (on the host), exactly the scalar oracle's values.
    fn dequantize_rows(
        &self,
        packed: &Self::Packed<'_>,
        first_row: usize,
        out: &mut [f32],
    ) -> EngineResult<()>;

    /// `y = W x` for a packed `W` (`x.len() == cols`, `y.len() == rows`).
    fn gemv(&self, packed: &Self::Packed<'_>, x: &[f32], y: &mut [f32]) -> EngineResult<()>;

    /// `Y = X Wᵀ` for `count` activation vectors at once: `x` is `count × cols` and `y`
    /// `count × rows`, row-major (a forward pass over a few tokens). Each output equals
    /// [`gemv`](Engine::gemv)'s for its vector within `adpq_core::kernels::dot_tolerance`.
    fn gemm(
        &self,
        packed: &Self::Packed<'_>,
        x: &[f32],
        count: usize,
        y: &mut [f32],
    ) -> EngineResult<()>;

    /// Activation vectors where the engine computes (host memory for the CPU, device
    /// memory for a GPU), so that a chain of products never crosses to the host.
    type Vectors;

    /// Puts `count` vectors of `x.len() / count` values where the engine computes.
    fn upload(&self, x: &[f32], count: usize) -> EngineResult<Self::Vectors>;

    /// Copies vectors back to the host (`out.len()` equals their total length).
    fn download(&self, v: &Self::Vectors, out: &mut [f32]) -> EngineResult<()>;

    /// [`gemm`](Engine::gemm) on resident vectors: `y` becomes `count × rows` vectors.
    fn gemm_resident(
        &self,
        packed: &Self::Packed<'_>,
        x: &Self::Vectors,
        y: &mut Self::Vectors,
    ) -> EngineResult<()>;
}
