//! Parsing: a validated, zero-copy view of a packed tensor and its rows and groups.

use super::header::{Header, HeaderInfo};
use super::layout::Layout;
use super::record::{decode_record, GroupRecord, RecordFields};
use super::write::checksum;
use super::MAX_DECODED_ABS;
use crate::bits::get_bits;
use crate::error::{Error, FormatError, Result};
use crate::params::{FormatParams, Grid};
use crate::quant::GridScale;

/// The little-endian u32 at byte `at` (caller guarantees the bounds).
#[inline(always)]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The largest magnitude any code `0..=code_max` decodes to on `grid` (computed in f64,
/// so it cannot overflow).
fn largest_decoded(grid: &GridScale, p: &FormatParams) -> f64 {
    let reach = grid.offset.max(p.code_max() - grid.offset);
    f64::from(reach) * f64::from(grid.step)
}

/// A validated, zero-copy view of a packed tensor.
#[derive(Debug, Clone, Copy)]
pub struct PackedTensor<'a> {
    bytes: &'a [u8],
    layout: Layout,
    info: HeaderInfo,
}

/// One row of a packed tensor.
#[derive(Debug, Clone, Copy)]
pub struct PackedRow<'a> {
    /// The row's group records.
    pub records: &'a [u8],
    /// The row's codes.
    pub codes: &'a [u8],
    /// The whole position stream of the tensor.
    pub positions: &'a [u8],
    /// Index of the row's first outlier in the position stream.
    pub first_outlier: usize,
    /// Outliers in the row.
    pub n_outliers: usize,
}

/// One group of a packed row: where it sits, its grids, and its outliers.
#[derive(Debug, Clone, Copy)]
pub struct RowGroup<'a> {
    /// First column of the group.
    pub start: usize,
    /// Columns in the group (the last group of a row may be shorter).
    pub len: usize,
    /// The group's grids and outlier count.
    pub record: GroupRecord,
    /// The codes of the whole row (the group's are `start..start + len`).
    pub codes: &'a [u8],
    positions: &'a [u8],
    first_bit: usize,
    position_bits: u32,
}

impl<'a> RowGroup<'a> {
    /// Positions within the group of its outliers, increasing (validated by the parser to
    /// be below `len`).
    #[inline]
    pub fn outliers(&self) -> impl Iterator<Item = usize> + 'a {
        let (data, first, width) = (self.positions, self.first_bit, self.position_bits);
        (0..self.record.count)
            .map(move |k| get_bits(data, first + k * width as usize, width) as usize)
    }
}

/// The groups of one packed row, in order (see [`PackedTensor::groups`]).
#[derive(Debug, Clone)]
pub struct RowGroups<'a> {
    tensor: PackedTensor<'a>,
    row: PackedRow<'a>,
    next_group: usize,
    next_outlier: usize,
}

impl<'a> Iterator for RowGroups<'a> {
    type Item = RowGroup<'a>;

    #[inline]
    fn next(&mut self) -> Option<RowGroup<'a>> {
        let l = &self.tensor.layout;
        if self.next_group >= l.groups_per_row {
            return None;
        }
        let gi = self.next_group;
        let record = self.tensor.record(&self.row, gi);
        let group = RowGroup {
            start: gi * usize::from(l.params.group_size),
            len: l.group_len(gi),
            record,
            codes: self.row.codes,
            positions: self.row.positions,
            first_bit: self.next_outlier * l.position_bits as usize,
            position_bits: l.position_bits,
        };
        self.next_group += 1;
        self.next_outlier += record.count;
        Some(group)
    }
}

impl<'a> PackedTensor<'a> {
    /// Parses and validates a buffer, checksum included.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        Self::parse_impl(bytes, true)
    }

    /// Parses and validates every structural field but skips the CRC (for callers that
    /// verified the bytes already). Still memory-safe and panic-free on any input.
    pub fn parse_skip_checksum(bytes: &'a [u8]) -> Result<Self> {
        Self::parse_impl(bytes, false)
    }

    fn parse_impl(bytes: &'a [u8], verify_crc: bool) -> Result<Self> {
        let header = Header::read(bytes)?;
        if verify_crc {
            let stored = header.crc.get();
            let computed = checksum(bytes);
            if stored != computed {
                return Err(FormatError::ChecksumMismatch { stored, computed }.into());
            }
        }
        let (layout, info) = header.fields()?;
        if layout.total_len != bytes.len() {
            return Err(FormatError::LengthMismatch {
                expected: layout.total_len as u64,
                actual: bytes.len() as u64,
            }
            .into());
        }
        let t = PackedTensor {
            bytes,
            layout,
            info,
        };
        t.validate_body()?;
        Ok(t)
    }

    /// Checks offsets, records and positions: O(groups + outliers).
    fn validate_body(&self) -> Result<()> {
        let l = &self.layout;
        let p = &l.params;
        let b = self.bytes;
        let offset = |r: usize| u32_at(b, l.offsets_at + 4 * r);
        if offset(0) != 0 || u64::from(offset(l.rows)) != l.n_outliers {
            return Err(FormatError::BadRowOffsets { row: 0 }.into());
        }
        let pos_bits = l.position_bits;
        let positions = &b[l.positions_at..];
        let f16_ok = |h: u16| h & 0x8000 == 0 && (h & 0x7C00) != 0x7C00;
        for r in 0..l.rows {
            let (start, end) = (offset(r), offset(r + 1));
            if end < start || (end - start) as usize > l.cols {
                return Err(FormatError::BadRowOffsets { row: r as u64 }.into());
            }
            let mut next = start as usize;
            let recs = &b[l.records_at + r * l.row_record_bytes()..][..l.row_record_bytes()];
            for g in 0..l.groups_per_row {
                let bad_group = |what| {
                    Error::Format(FormatError::BadGroup {
                        row: r as u64,
                        group: g as u64,
                        what,
                    })
                };
                let rec = &recs[g * l.record_bytes..][..l.record_bytes];
                let RecordFields { h_in, h_out, .. } = RecordFields::read(rec, p);
                if !f16_ok(h_in) || !f16_ok(h_out) {
                    return Err(bad_group("step is negative, infinite or NaN"));
                }
                let d = decode_record(rec, p, self.info.scale_exp);
                if largest_decoded(&d.inliers, p) > f64::from(MAX_DECODED_ABS)
                    || largest_decoded(&d.outliers, p) > f64::from(MAX_DECODED_ABS)
                {
                    return Err(bad_group("a code decodes above 2^126 in magnitude"));
                }
                let len = l.group_len(g);
                if d.count > len {
                    return Err(bad_group("outlier count exceeds group length"));
                }
                if p.grid == Grid::Asymmetric
                    && (d.inliers.offset > p.code_max() || d.outliers.offset > p.code_max())
                {
                    return Err(bad_group("zero point out of range"));
                }
                if d.count == 0 && h_out != 0 {
                    return Err(bad_group("outlier step set in a group without outliers"));
                }
                if d.count == len && h_in != 0 {
                    return Err(bad_group("inlier step set in a group without inliers"));
                }
                if next + d.count > end as usize {
                    return Err(FormatError::BadRowOffsets { row: r as u64 }.into());
                }
                let mut prev: Option<u32> = None;
                for i in next..next + d.count {
                    let pos = get_bits(positions, i * pos_bits as usize, pos_bits);
                    if pos as usize >= len || prev.is_some_and(|q| pos <= q) {
                        return Err(bad_group(
                            "outlier positions not increasing within the group",
                        ));
                    }
                    prev = Some(pos);
                }
                next += d.count;
            }
            if next != end as usize {
                return Err(FormatError::BadRowOffsets { row: r as u64 }.into());
            }
        }
        Ok(())
    }

    /// The layout (shape, parameters, section offsets).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    /// The header fields beyond the layout.
    pub fn info(&self) -> &HeaderInfo {
        &self.info
    }
    /// Rows.
    pub fn rows(&self) -> usize {
        self.layout.rows
    }
    /// Columns.
    pub fn cols(&self) -> usize {
        self.layout.cols
    }
    /// Format parameters.
    pub fn params(&self) -> FormatParams {
        self.layout.params
    }
    /// Outliers in the tensor.
    pub fn n_outliers(&self) -> u64 {
        self.layout.n_outliers
    }
    /// The underlying bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Row `r`, or an error when out of range.
    #[inline]
    pub fn row(&self, r: usize) -> Result<PackedRow<'a>> {
        let l = &self.layout;
        if r >= l.rows {
            return Err(Error::RowOutOfRange {
                row: r as u64,
                rows: l.rows as u64,
            });
        }
        let b = self.bytes;
        let first = u32_at(b, l.offsets_at + 4 * r) as usize;
        let next = u32_at(b, l.offsets_at + 4 * (r + 1)) as usize;
        Ok(PackedRow {
            records: &b[l.records_at + r * l.row_record_bytes()..][..l.row_record_bytes()],
            codes: &b[l.codes_at + r * l.row_code_bytes..][..l.row_code_bytes],
            positions: &b[l.positions_at..],
            first_outlier: first,
            n_outliers: next - first,
        })
    }

    /// The groups of row `r` with their grids and outlier positions, or an error when the
    /// row is out of range.
    pub fn groups(&self, r: usize) -> Result<RowGroups<'a>> {
        let row = self.row(r)?;
        Ok(RowGroups {
            tensor: *self,
            row,
            next_group: 0,
            next_outlier: row.first_outlier,
        })
    }

    /// The record of group `g` of a row.
    #[inline(always)]
    pub fn record(&self, row: &PackedRow<'_>, g: usize) -> GroupRecord {
        let rb = self.layout.record_bytes;
        decode_record(
            &row.records[g * rb..(g + 1) * rb],
            &self.layout.params,
            self.info.scale_exp,
        )
    }
}
