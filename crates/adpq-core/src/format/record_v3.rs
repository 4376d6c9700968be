//! Format v3's per-row units and 12-bit group records.
//!
//! Each row's records start with its units (two little-endian f16: step unit `u_d`,
//! minimum unit `u_m`; 4 bytes), followed by one 12-bit record per group in an LSB-first
//! bit stream: the 6-bit step multiple `q_d`, then the 6-bit minimum multiple `q_m`. The
//! row's last byte is padded with zero bits (`docs/FORMAT.md`, version 3).

use crate::affine::{AffineGrid, RowUnits};
use crate::bits::{get_bits, or_bits};

/// Bytes of a row's units.
pub(crate) const UNIT_BYTES: usize = 4;
/// Bits of one group record.
pub(crate) const RECORD_BITS: usize = 12;

/// The stored unit fields (f16 bits) at the start of a row's records (zeros if short).
#[inline(always)]
pub fn read_units(row_records: &[u8]) -> [u16; 2] {
    match row_records {
        [a, b, c, d, ..] => [u16::from_le_bytes([*a, *b]), u16::from_le_bytes([*c, *d])],
        _ => [0; 2],
    }
}

/// Writes a row's units at the start of its records (nothing if short).
#[inline(always)]
pub fn write_units(row_records: &mut [u8], units: &RowUnits) {
    if let Some(u) = row_records.get_mut(..UNIT_BYTES) {
        u[..2].copy_from_slice(&units.step_unit_bits.to_le_bytes());
        u[2..].copy_from_slice(&units.min_unit_bits.to_le_bytes());
    }
}

/// The stored fields `(q_d, q_m)` of group `g` of a row's records (zeros if short).
#[inline(always)]
pub fn read_record(row_records: &[u8], g: usize) -> (u8, u8) {
    let fields = row_records
        .get(UNIT_BYTES..)
        .map_or(0, |r| get_bits(r, g * RECORD_BITS, RECORD_BITS as u32));
    ((fields & 63) as u8, (fields >> 6) as u8)
}

/// Writes group `g`'s record into a row's records whose record bits are zero (fields
/// above 63 are cut to their low 6 bits; encoders never make them).
#[inline(always)]
pub fn write_record(row_records: &mut [u8], g: usize, grid: &AffineGrid) {
    let fields = u32::from(grid.q_step & 63) | (u32::from(grid.q_min & 63) << 6);
    if let Some(r) = row_records.get_mut(UNIT_BYTES..) {
        or_bits(r, g * RECORD_BITS, RECORD_BITS as u32, fields);
    }
}

/// Decodes group `g`'s grid of a row whose units are `units`.
#[inline(always)]
pub fn decode_record(row_records: &[u8], g: usize, units: &RowUnits) -> AffineGrid {
    let (q_step, q_min) = read_record(row_records, g);
    AffineGrid::new(q_step, q_min, units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let units = RowUnits::from_stored([0x3c00, 0x3800, 0], 0, f32::INFINITY);
        let mut recs = [0u8; UNIT_BYTES + 8];
        write_units(&mut recs, &units);
        assert_eq!(read_units(&recs), [0x3c00, 0x3800]);
        let fields = [(1u8, 0u8), (63, 63), (17, 42), (0, 5), (33, 1)];
        for (g, &(d, m)) in fields.iter().enumerate() {
            write_record(&mut recs, g, &AffineGrid::new(d, m, &units));
        }
        for (g, &f) in fields.iter().enumerate() {
            assert_eq!(read_record(&recs, g), f);
        }
        // Five records: 60 bits; the last 4 bits of the 8th byte stay zero.
        assert_eq!(recs[UNIT_BYTES + 7] >> 4, 0);
        assert_eq!(decode_record(&recs, 2, &units).step, 17.0);
        assert_eq!(decode_record(&recs, 2, &units).min, -21.0);
    }
}
