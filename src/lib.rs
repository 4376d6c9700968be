//! `adpq`: the std side of the AdpQ toolkit: safetensors checkpoint I/O, the
//! rayon-parallel quantization driver and the `adpq` command line.
//!
//! - [`checkpoint`]: reading `.safetensors` files and sharded Hugging Face folders
//!   through a memory map, and writing them atomically (temporary file, then rename).
//! - [`driver`]: one tensor at a time, selection and quantization split into row blocks
//!   that run in parallel; the result is byte-identical to the single-threaded
//!   [`CpuKernels::quantize`](adpq_core::CpuKernels::quantize) for any thread count.
//! - [`pipeline`]: the `quantize`, `dequantize`, `inspect` and `verify` operations on
//!   whole checkpoints.
//! - [`report`]: per-tensor and total figures (sizes, outliers, relative MSE, SQNR and the
//!   round-to-nearest baseline), as a table or JSON.
//!
//! # Exit codes of the `adpq` binary
//! `0` success; `1` a runtime or data error (I/O, a malformed checkpoint, a NaN weight,
//! a corrupt packed tensor found by `verify`); `2` a usage error (bad flags, output equal
//! to input, an existing output folder without `--force`).
#![deny(missing_docs)]
#![deny(unsafe_code)]

#[cfg(target_endian = "big")]
compile_error!(
    "adpq reads safetensors (little-endian) data in place and supports little-endian targets only"
);

pub use adpq_core as core;

pub mod checkpoint;
pub mod driver;
mod error;
pub mod filter;
mod mmap;
pub mod pipeline;
pub mod report;
pub mod rtn;

pub use error::{Error, Result};

/// Key of the safetensors `__metadata__` entry naming the format (`"adpq"`).
pub const META_FORMAT: &str = "format";
/// Value of [`META_FORMAT`] in a quantized checkpoint.
pub const FORMAT_NAME: &str = "adpq";
/// Metadata key: the packed format version (`adpq_core::format::VERSION`).
pub const META_VERSION: &str = "adpq.version";
/// Metadata key: JSON of the quantization parameters.
pub const META_PARAMS: &str = "adpq.params";
/// Metadata key: JSON map from each quantized tensor's name to its original dtype and shape.
pub const META_TENSORS: &str = "adpq.tensors";
/// Metadata key: the input's own `format` value (e.g. `pt`), restored by dequantize.
pub const META_ORIGINAL_FORMAT: &str = "adpq.original_format";
/// Metadata key: the tool that wrote the file.
pub const META_TOOL: &str = "adpq.tool";
