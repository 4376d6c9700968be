//! Format v2's per-row units and 3-byte group records as little-endian structs.
//!
//! Each row's records start with its units (three f16: inlier step unit, inlier minimum
//! unit, outlier step; 6 bytes), followed by one record per group: u8 step multiple
//! `q_d`, u8 minimum multiple `q_m`, u8 outlier count (`docs/FORMAT.md`, version 2).

use zerocopy::little_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::affine::{AffineGrid, RowUnits};

/// The units at the start of a row's records.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
struct UnitBytes {
    step_unit: U16,
    min_unit: U16,
    outlier_step: U16,
}

/// One group record.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
struct RecordBytes {
    q_step: u8,
    q_min: u8,
    count: u8,
}

/// Bytes of a row's units.
pub(crate) const UNIT_BYTES: usize = core::mem::size_of::<UnitBytes>();
/// Bytes of one v2 group record.
pub(crate) const RECORD_BYTES: usize = core::mem::size_of::<RecordBytes>();
const _: () = assert!(UNIT_BYTES == 6 && RECORD_BYTES == 3);

/// One decoded v2 group record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AffineRecord {
    /// The inlier grid.
    pub grid: AffineGrid,
    /// Outliers in the group.
    pub count: usize,
}

/// The stored unit fields (f16 bits) at the start of a row's records (zeros if short).
#[inline(always)]
pub fn read_units(row_records: &[u8]) -> [u16; 3] {
    UnitBytes::ref_from_prefix(row_records).map_or([0; 3], |(u, _)| {
        [u.step_unit.get(), u.min_unit.get(), u.outlier_step.get()]
    })
}

/// Writes a row's units at the start of its records.
#[inline(always)]
pub fn write_units(row_records: &mut [u8], units: &RowUnits) {
    if let Ok((u, _)) = UnitBytes::mut_from_prefix(row_records) {
        let [s, m, o] = units.stored();
        *u = UnitBytes {
            step_unit: U16::new(s),
            min_unit: U16::new(m),
            outlier_step: U16::new(o),
        };
    }
}

/// The stored fields `(q_d, q_m, count)` of group `g` of a row's records (zeros if short).
#[inline(always)]
pub fn read_record(row_records: &[u8], g: usize) -> (u8, u8, usize) {
    row_records
        .get(UNIT_BYTES + g * RECORD_BYTES..)
        .and_then(|b| RecordBytes::ref_from_prefix(b).ok())
        .map_or((0, 0, 0), |(r, _)| {
            (r.q_step, r.q_min, usize::from(r.count))
        })
}

/// Writes group `g`'s record into a row's records.
#[inline(always)]
pub fn write_record(row_records: &mut [u8], g: usize, grid: &AffineGrid, count: usize) {
    if let Some(Ok((r, _))) = row_records
        .get_mut(UNIT_BYTES + g * RECORD_BYTES..)
        .map(RecordBytes::mut_from_prefix)
    {
        *r = RecordBytes {
            q_step: grid.q_step,
            q_min: grid.q_min,
            // At most `g ≤ 255` by the v2 parameters.
            count: count as u8,
        };
    }
}

/// Decodes group `g` of a row whose units are `units`.
#[inline(always)]
pub fn decode_record(row_records: &[u8], g: usize, units: &RowUnits) -> AffineRecord {
    let (q_step, q_min, count) = read_record(row_records, g);
    AffineRecord {
        grid: AffineGrid::new(q_step, q_min, units),
        count,
    }
}
