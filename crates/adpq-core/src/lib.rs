//! `adpq-core`: the `#![no_std]` heart of adpq.
//!
//! AdpQ (arXiv 2405.13358) quantizes a weight matrix without calibration data: per
//! tensor, the largest-magnitude fraction α of the weights (the outliers, chosen by
//! adaptive soft-thresholding, i.e. a magnitude threshold) are quantized on their own
//! grid, the rest on another, per group of `g` weights along each row.
//!
//! This crate owns the bytes and the math and needs no allocator:
//! - [`Params`]: bits, group size, α, grid kind, selection mode, validated.
//! - Outlier selection ([`select_outliers`], module [`select`]): exact `k = round(α·N)`
//!   by a 3-pass k-way bisection over magnitude bit patterns (about one pass on large
//!   tensors, from a sample), or a mode that reproduces the Python reference. The passes
//!   run behind [`TensorScan`], so a parallel or device engine supplies its own.
//! - The packed format ([`format`], `docs/FORMAT.md`): one self-describing, checksummed
//!   buffer per tensor, parsed zero-copy with full validation.
//! - [`QuantizePlan`]: a selected tensor as independent row blocks, each writing its own
//!   share of the packed buffer, stitched (positions, offsets, header, CRC) in place.
//!   The sequential path and a parallel driver run the same code.
//! - The [`CpuKernels`] trait (sealed), implemented by [`Scalar`] (the oracle), [`Avx2`]
//!   (x86_64, detected at run time with `cpufeatures`, which needs no std), [`AvxVnni`]
//!   (AVX2 with AVX-VNNI's int8 dot, detected by CPUID) and [`Neon`] (aarch64);
//!   [`AnyKernels::detect`] picks the best one. Fast paths produce the oracle's bytes.
//!
//! ```
//! use adpq_core::{packed_len, CpuKernels, PackedTensor, Params, Scalar, Weights};
//!
//! let (rows, cols) = (4, 200); // rows end in a 72-wide group: fine
//! let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 100.0).collect();
//! let params = Params::V1;
//! let backend = Scalar::new();
//! let sel = adpq_core::select_tensor(&backend, Weights::F32(&w), rows, cols, &params)?;
//! assert_eq!(sel.n_outliers, 48); // round(0.06 · 800)
//! let mut buf = vec![0u8; packed_len(rows, cols, params.format(), sel.n_outliers)?];
//! adpq_core::quantize_tensor(&backend, Weights::F32(&w), rows, cols, &params, &sel, &mut buf)?;
//!
//! let packed = PackedTensor::parse(&buf)?; // validates structure and checksum
//! let mut back = vec![0f32; rows * cols];
//! backend.dequantize_rows(&packed, 0, &mut back)?;
//! let x = vec![1.0f32; cols];
//! let y0 = backend.dot_row(&packed, 0, &x)?;
//! assert!((y0 - back[..cols].iter().sum::<f32>()).abs() < 1e-3);
//! # Ok::<(), adpq_core::Error>(())
//! ```
#![no_std]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "std")]
extern crate std;

pub mod affine;
mod bits;
mod dtype;
pub mod error;
pub mod format;
pub mod kernels;
pub mod narrow;
pub mod params;
mod plan;
pub mod quant;
pub mod rotate;
pub mod select;
pub mod stats;
mod tensor;
mod weights;

#[cfg(feature = "std")]
pub mod harness;

pub use dtype::OutDtype;
pub use error::{Error, FormatError, Result};
pub use format::{packed_len, Layout, PackedTensor, RowCursor, RowGroup};
pub use kernels::{
    AnyKernels, Avx2, AvxVnni, CpuKernels, KernelChoiceError, KernelScan, Neon, Q8Activations,
    Quantized, Scalar,
};
pub use params::{FormatParams, FormatVersion, Grid, ParamFields, Params, SelectionMode};
pub use plan::{BlockDone, BlockOut, BlockSections, Blocks, QuantizePlan};
pub use select::{select_outliers, Selection, TensorScan};
pub use tensor::{quantize_tensor, select_tensor};
pub use weights::{bf16_to_f32_slice, Element, Weights};

/// Re-export of the `half` crate's f16 and bf16, the element types [`Weights`] accepts.
pub use half::{bf16, f16};

/// The README's Rust examples are compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
