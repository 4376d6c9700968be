//! `adpq-cuda`: adpq on NVIDIA GPUs.
//!
//! - `kernels/adpq_math.cuh`: the per-group arithmetic of formats v1 and v2 (grids,
//!   v2's range search and refit, records, code packing, decode), written once as
//!   `__host__ __device__` functions. The host build of the same header (`host/`,
//!   feature `host-math`) is tested byte for byte against the core's scalar oracle.
#![deny(missing_docs)]

#[cfg(feature = "host-math")]
#[doc(hidden)]
pub mod host;
