//! `adpq-cuda`: adpq on NVIDIA GPUs.
//!
//! - `kernels/adpq_math.cuh`: the per-group arithmetic of formats v1 and v2 (grids,
//!   v2's range search and refit, records, code packing, decode, dot products, error
//!   sums), written once as `__host__ __device__` functions. The host build of the same
//!   header (`host/`, feature `host-math`) is tested byte for byte against the core's
//!   scalar oracle.
//! - `kernels/*.cu`: the selection passes, quantization, dequantization, error sums and
//!   gemv/gemm kernels, compiled at run time by NVRTC ([`ptx`]) with `--fmad=false`.
//! - [`CudaEngine`]: the [`adpq_engine::Engine`] over them. Without a driver, a device or
//!   NVRTC, [`CudaEngine::new`] returns an error (never panics), so callers fall back to
//!   the CPU.
#![deny(missing_docs)]

mod engine;
mod error;
mod job;
pub mod ptx;
mod sections;

pub use engine::{driver_present, CudaDense, CudaEngine, CudaPacked, DeviceVectors};
pub use error::CudaError;
pub use sections::Sections;

#[cfg(all(feature = "host-math", not(adpq_no_emulation)))]
#[doc(hidden)]
pub mod emulated;
#[cfg(feature = "host-math")]
#[doc(hidden)]
pub mod host;
