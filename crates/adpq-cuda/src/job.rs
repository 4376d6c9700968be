//! The quantize job as the C side reads it: one `#[repr(C)]` struct for the kernels'
//! `adpq_job` (quantize.cu) and the host build's `adpq_host_job` (host/host_math.c), which
//! have the same fields, so the Rust side writes the conversion once.

use adpq_core::{FormatParams, FormatVersion, Grid};

/// A tensor's format, step exponent and selection, as C integers.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QuantJob {
    /// Format version number (1 or 2).
    pub(crate) version: i32,
    /// Bits per code.
    pub(crate) bits: i32,
    /// Weights per group.
    pub(crate) group_size: i32,
    /// 1 for asymmetric grids.
    pub(crate) asymmetric: i32,
    /// Per-tensor step exponent.
    pub(crate) scale_exp: i32,
    /// Bits of the threshold magnitude.
    pub(crate) threshold_bits: u32,
    /// Ties at the threshold taken, earliest first (`u64::MAX`: all).
    pub(crate) take_equal: u64,
}

// Five i32, one u32, one u64: 32 bytes, no padding before the u64 at offset 24.
const _: () = assert!(std::mem::size_of::<QuantJob>() == 32);

impl QuantJob {
    /// The job of a tensor in format `fp` with step exponent `scale_exp` and a selection
    /// at `threshold_bits` taking `take_equal` ties.
    pub(crate) fn new(
        fp: &FormatParams,
        scale_exp: i8,
        threshold_bits: u32,
        take_equal: u64,
    ) -> QuantJob {
        QuantJob {
            version: version_number(fp.version),
            bits: i32::from(fp.bits),
            group_size: i32::from(fp.group_size),
            asymmetric: i32::from(fp.grid == Grid::Asymmetric),
            scale_exp: i32::from(scale_exp),
            threshold_bits,
            take_equal,
        }
    }
}

/// The version number the C side switches on.
pub(crate) fn version_number(v: FormatVersion) -> i32 {
    match v {
        FormatVersion::V1 => 1,
        FormatVersion::V2 => 2,
        // Refused before any launch (`no_v3`): the kernels have no version 3 yet.
        FormatVersion::V3 => 3,
    }
}
