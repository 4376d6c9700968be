//! The 64-byte header as a little-endian struct, and the fields it holds beyond the layout.

use zerocopy::little_endian::{F32, F64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::layout::Layout;
use super::{HEADER_LEN, MAGIC, VERSION};
use crate::error::{Error, FormatError, Result};
use crate::params::FormatVersion;
use crate::params::{FormatParams, Grid, SelectionMode};
use crate::quant::{MAX_SCALE_EXP, MIN_SCALE_EXP};
use crate::rotate::Rotation;

/// The header bytes, field by field (`docs/FORMAT.md`, "Header"). Every field has
/// alignment 1, so the struct views any 64 bytes of a buffer in place.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub(crate) struct Header {
    pub(crate) magic: [u8; 4],
    pub(crate) version: U16,
    pub(crate) header_len: U16,
    pub(crate) bits: u8,
    /// 0 symmetric, 1 asymmetric.
    pub(crate) grid: u8,
    pub(crate) group_size: U16,
    pub(crate) scale_exp: i8,
    /// 0 exact, 1 reference.
    pub(crate) selection_mode: u8,
    /// Version 3: `log2` of the rotation segment (0: rows not rotated); else 0.
    pub(crate) rotation_log2: u8,
    pub(crate) reserved0: u8,
    pub(crate) rows: U32,
    pub(crate) cols: U32,
    pub(crate) n_outliers: U64,
    pub(crate) threshold: F32,
    /// Reference mode: its iteration budget; exact mode: 0.
    pub(crate) reference_iters: U32,
    pub(crate) alpha: F64,
    pub(crate) total_len: U64,
    pub(crate) crc: U32,
    /// Version 3: the seed of the rotation's signs (0 without rotation); else 0.
    pub(crate) rotation_seed: U32,
}

// The byte offsets of docs/FORMAT.md, checked at compile time.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<Header>() == HEADER_LEN);
    assert!(offset_of!(Header, version) == 4);
    assert!(offset_of!(Header, header_len) == 6);
    assert!(offset_of!(Header, bits) == 8);
    assert!(offset_of!(Header, grid) == 9);
    assert!(offset_of!(Header, group_size) == 10);
    assert!(offset_of!(Header, scale_exp) == 12);
    assert!(offset_of!(Header, selection_mode) == 13);
    assert!(offset_of!(Header, rotation_log2) == 14);
    assert!(offset_of!(Header, rows) == 16);
    assert!(offset_of!(Header, cols) == 20);
    assert!(offset_of!(Header, n_outliers) == 24);
    assert!(offset_of!(Header, threshold) == 32);
    assert!(offset_of!(Header, reference_iters) == 36);
    assert!(offset_of!(Header, alpha) == 40);
    assert!(offset_of!(Header, total_len) == 48);
    assert!(offset_of!(Header, crc) == CRC_AT);
    assert!(offset_of!(Header, rotation_seed) == 60);
};

/// Byte offset of the CRC-32 inside the header.
pub(crate) const CRC_AT: usize = 56;

/// Header fields that are not part of the layout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeaderInfo {
    /// Per-tensor step exponent `e` (every step is `h · 2^e`).
    pub scale_exp: i8,
    /// The selection mode that chose the outliers.
    pub selection: SelectionMode,
    /// The threshold magnitude `t` (`+inf` when there are no outliers).
    pub threshold: f32,
    /// The requested outlier fraction α.
    pub alpha: f64,
    /// Version 3: the rotation of the rows (`None`: not rotated; always `None` before v3).
    pub rotation: Option<Rotation>,
}

fn bad(what: &'static str) -> Error {
    Error::Format(FormatError::BadHeader(what))
}

/// True when the threshold field holds anything but `+inf` (the value without outliers).
fn threshold_is_set(h: &Header) -> bool {
    h.threshold.get() != f32::INFINITY
}

impl Header {
    /// The header of a tensor with this layout, its CRC field zero.
    pub(crate) fn new(layout: &Layout, info: &HeaderInfo) -> Header {
        let p = &layout.params;
        let (selection_mode, iters) = match info.selection {
            SelectionMode::Exact => (0u8, 0u32),
            SelectionMode::Reference { n_iters } => (1, n_iters),
        };
        Header {
            magic: MAGIC,
            version: U16::new(p.version.number()),
            header_len: U16::new(HEADER_LEN as u16),
            bits: p.bits,
            grid: match p.grid {
                Grid::Symmetric => 0,
                Grid::Asymmetric => 1,
            },
            group_size: U16::new(p.group_size),
            scale_exp: info.scale_exp,
            selection_mode,
            rotation_log2: info.rotation.map_or(0, |r| r.log2_segment()),
            reserved0: 0,
            rows: U32::new(layout.rows as u32),
            cols: U32::new(layout.cols as u32),
            n_outliers: U64::new(layout.n_outliers),
            threshold: F32::new(info.threshold),
            reference_iters: U32::new(iters),
            alpha: F64::new(info.alpha),
            total_len: U64::new(layout.total_len as u64),
            crc: U32::ZERO,
            rotation_seed: U32::new(info.rotation.map_or(0, |r| r.seed())),
        }
    }

    /// The first [`HEADER_LEN`] bytes of `bytes`, checked for magic, version, header
    /// length and declared total length (so that the caller may checksum the buffer).
    pub(crate) fn read(bytes: &[u8]) -> Result<&Header> {
        let Ok((h, _)) = Header::ref_from_prefix(bytes) else {
            return Err(FormatError::Truncated {
                needed: HEADER_LEN as u64,
                actual: bytes.len() as u64,
            }
            .into());
        };
        if h.magic != MAGIC {
            return Err(FormatError::BadMagic.into());
        }
        if !(1..=VERSION).contains(&h.version.get()) {
            return Err(FormatError::UnsupportedVersion(h.version.get()).into());
        }
        if usize::from(h.header_len.get()) != HEADER_LEN {
            return Err(bad("header length"));
        }
        let declared = h.total_len.get();
        let actual = bytes.len() as u64;
        if declared != actual {
            return Err(if declared > actual {
                FormatError::Truncated {
                    needed: declared,
                    actual,
                }
            } else {
                FormatError::LengthMismatch {
                    expected: declared,
                    actual,
                }
            }
            .into());
        }
        Ok(h)
    }

    /// The layout and header fields, validated (but not against the buffer's body).
    pub(crate) fn fields(&self) -> Result<(Layout, HeaderInfo)> {
        let grid = match self.grid {
            0 => Grid::Symmetric,
            1 => Grid::Asymmetric,
            _ => return Err(bad("grid kind")),
        };
        let version = match self.version.get() {
            1 => FormatVersion::V1,
            2 => FormatVersion::V2,
            _ => FormatVersion::V3,
        };
        let params = FormatParams {
            bits: self.bits,
            group_size: self.group_size.get(),
            grid,
            version,
        };
        params.validate().map_err(|e| match e {
            Error::Unsupported(_) => bad("grid kind or group size not allowed in this version"),
            _ => bad("bits or group size"),
        })?;
        if !(MIN_SCALE_EXP..=MAX_SCALE_EXP).contains(&i32::from(self.scale_exp)) {
            return Err(bad("scale exponent"));
        }
        let selection = match (self.selection_mode, self.reference_iters.get()) {
            (0, 0) => SelectionMode::Exact,
            (1, n) if n > 0 => SelectionMode::Reference { n_iters: n },
            _ => return Err(bad("selection mode")),
        };
        if self.reserved0 != 0 {
            return Err(bad("reserved bytes"));
        }
        let (log2, seed) = (self.rotation_log2, self.rotation_seed.get());
        let rotation = match (version, log2) {
            (FormatVersion::V3, 0) if seed == 0 => None,
            (FormatVersion::V3, _) => match Rotation::new(seed, log2) {
                // A group never straddles two segments.
                Some(r) if r.segment() >= usize::from(params.group_size) => Some(r),
                _ => return Err(bad("rotation segment")),
            },
            (_, 0) if seed == 0 => None,
            _ => return Err(bad("reserved bytes")),
        };
        if version == FormatVersion::V3 && (self.n_outliers.get() != 0 || threshold_is_set(self)) {
            return Err(bad("outliers in a version without an outlier split"));
        }
        let threshold = self.threshold.get();
        if threshold.is_nan() || threshold < 0.0 {
            return Err(bad("threshold"));
        }
        // Version 2 decodes outliers as offsets from the threshold.
        if version == FormatVersion::V2 && self.n_outliers.get() > 0 && !threshold.is_finite() {
            return Err(bad("threshold"));
        }
        let alpha = self.alpha.get();
        if !(0.0..=0.5).contains(&alpha) {
            return Err(bad("alpha"));
        }
        let (rows, cols) = (self.rows.get() as usize, self.cols.get() as usize);
        let layout =
            Layout::new(rows, cols, params, self.n_outliers.get()).map_err(|e| match e {
                Error::EmptyTensor => bad("empty shape"),
                Error::OutlierCount { .. } => bad("more outliers than weights"),
                _ => bad("shape too large"),
            })?;
        let info = HeaderInfo {
            scale_exp: self.scale_exp,
            selection,
            threshold,
            alpha,
            rotation,
        };
        Ok((layout, info))
    }
}
