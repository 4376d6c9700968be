//! The quantize job as the C side reads it: one `#[repr(C)]` struct for the kernels'
//! `adpq_job` (quantize.cu) and the host build's `adpq_host_job` (host/host_math.c), which
//! have the same fields, so the Rust side writes the conversion once.

use adpq_core::rotate::Rotation;
use adpq_core::{FormatParams, FormatVersion, Grid};

/// A tensor's format, step exponent, selection and (v3) rotation, as C integers.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QuantJob {
    /// Format version number (1, 2 or 3).
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
    /// Seed of the rows' rotation signs (v3; 0 without rotation).
    pub(crate) rot_seed: u32,
    /// `log2` of the rotation segment (v3; 0: rows not rotated).
    pub(crate) rot_log2: u32,
}

// Five i32, one u32, one u64 at offset 24, two u32: 40 bytes, no padding.
const _: () = assert!(std::mem::size_of::<QuantJob>() == 40);

impl QuantJob {
    /// The job of a tensor in format `fp` with step exponent `scale_exp` and a selection
    /// at `threshold_bits` taking `take_equal` ties, rotated as the core's writer rotates
    /// that format ([`writer_rotation`]).
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
            rot_seed: 0,
            rot_log2: 0,
        }
        .with_rotation(writer_rotation(fp))
    }

    /// The same job with the rows' rotation `rotation` (a parsed tensor's header's).
    pub(crate) fn with_rotation(self, rotation: Option<Rotation>) -> QuantJob {
        let (rot_seed, rot_log2) = rotation_fields(rotation);
        QuantJob {
            rot_seed,
            rot_log2,
            ..self
        }
    }
}

/// The rotation the core's write path stores for format `fp` (`QuantizePlan::new`: the
/// default v3 rotation for v3, none before). The written header is checked against the
/// oracle's bytes by the tests, so a change in the core shows there.
pub(crate) fn writer_rotation(fp: &FormatParams) -> Option<Rotation> {
    (fp.version == FormatVersion::V3).then(Rotation::default_v3)
}

/// A rotation as the C side's `(seed, log2)`; `(0, 0)` for none.
pub(crate) fn rotation_fields(rotation: Option<Rotation>) -> (u32, u32) {
    rotation.map_or((0, 0), |r| (r.seed(), u32::from(r.log2_segment())))
}

/// The version number the C side switches on.
pub(crate) fn version_number(v: FormatVersion) -> i32 {
    match v {
        FormatVersion::V1 => 1,
        FormatVersion::V2 => 2,
        FormatVersion::V3 => 3,
    }
}
