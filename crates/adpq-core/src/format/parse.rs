//! Parsing: a validated, zero-copy view of a packed tensor and its rows and groups.

use super::header::{Header, HeaderInfo};
use super::layout::Layout;
use super::record::{decode_record, GroupRecord, RecordFields};
use super::record_v2::{self, AffineRecord};
use super::record_v3;
use super::write::checksum;
use super::MAX_DECODED_ABS;
use crate::affine::{unit_value, RowUnits};
use crate::bits::get_bits;
use crate::error::{Error, FormatError, Result};
use crate::params::FormatVersion;
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

/// A stored f16 step or unit is valid when non-negative and finite.
fn f16_ok(h: u16) -> bool {
    h & 0x8000 == 0 && (h & 0x7C00) != 0x7C00
}

/// Checks group `g` of a version 2 row (`recs` its records) of `len` columns (the row's
/// units are checked once per row); returns its count.
fn check_record_v2(recs: &[u8], g: usize, len: usize) -> Result<usize, &'static str> {
    let (q_step, q_min, count) = record_v2::read_record(recs, g);
    if count > len {
        return Err("outlier count exceeds group length");
    }
    if count == len && (q_step != 0 || q_min != 0) {
        return Err("inlier grid set in a group without inliers");
    }
    Ok(count)
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

/// One group of a packed row: where it sits, its record, and its outliers. `R` is the
/// record of the tensor's format: [`GroupRecord`] (version 1) or [`AffineRecord`] (2).
#[derive(Debug, Clone, Copy)]
pub struct RowGroup<'a, R = GroupRecord> {
    /// First column of the group.
    pub start: usize,
    /// Columns in the group (the last group of a row may be shorter).
    pub len: usize,
    /// The group's grids and outlier count.
    pub record: R,
    /// The codes of the whole row (the group's are `start..start + len`).
    pub codes: &'a [u8],
    positions: &'a [u8],
    first_bit: usize,
    position_bits: u32,
}

impl<'a, R: Record> RowGroup<'a, R> {
    /// Positions within the group of its outliers, increasing (validated by the parser to
    /// be below `len`).
    #[inline]
    pub fn outliers(&self) -> impl Iterator<Item = usize> + 'a {
        let (data, first, width) = (self.positions, self.first_bit, self.position_bits);
        (0..self.record.count())
            .map(move |k| get_bits(data, first + k * width as usize, width) as usize)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::GroupRecord {}
    impl Sealed for super::AffineRecord {}
}

/// A group record of one format version (sealed: [`GroupRecord`], [`AffineRecord`]).
pub trait Record: sealed::Sealed + Copy {
    /// The format version whose records these are.
    const VERSION: FormatVersion;
    /// Decodes group `g` of `row` (whose units are `units` in version 2).
    fn decode(t: &PackedTensor<'_>, row: &PackedRow<'_>, units: &RowUnits, g: usize) -> Self;
    /// Outliers in the group.
    fn count(&self) -> usize;
}

impl Record for GroupRecord {
    const VERSION: FormatVersion = FormatVersion::V1;
    #[inline(always)]
    fn decode(t: &PackedTensor<'_>, row: &PackedRow<'_>, _: &RowUnits, g: usize) -> Self {
        t.record(row, g)
    }
    #[inline(always)]
    fn count(&self) -> usize {
        self.count
    }
}

impl Record for AffineRecord {
    const VERSION: FormatVersion = FormatVersion::V2;
    #[inline(always)]
    fn decode(_: &PackedTensor<'_>, row: &PackedRow<'_>, units: &RowUnits, g: usize) -> Self {
        record_v2::decode_record(row.records, g, units)
    }
    #[inline(always)]
    fn count(&self) -> usize {
        self.count
    }
}

/// A place in one packed row at a group boundary, from which
/// [`CpuKernels::dequantize_part`](crate::CpuKernels::dequantize_part) decodes the next
/// groups and moves on: a long row decoded in pieces of bounded size, each group read
/// once. Made at a row's start by [`PackedTensor::row_cursor`] and moved only by a
/// decode, so it always points at a group's first outlier. (A cursor of another tensor
/// is checked against the row's bounds but may decode wrong values: never a panic.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowCursor {
    row: usize,
    group: usize,
    /// The group's first outlier, counted from the row's first.
    outlier: usize,
}

impl RowCursor {
    /// The row.
    pub fn row(&self) -> usize {
        self.row
    }

    /// The next group to decode (the row's group count once it is all decoded).
    pub fn group(&self) -> usize {
        self.group
    }

    /// Moves past `groups` groups that held `outliers` outliers.
    pub(crate) fn advance(&mut self, groups: usize, outliers: usize) {
        self.group += groups;
        self.outlier += outliers;
    }

    /// The group's first outlier, counted from the row's first.
    /// (Read by the SIMD kernels only, which targets without them do not build.)
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    pub(crate) fn outlier(&self) -> usize {
        self.outlier
    }

    /// The first column of the next group, in a row of `t`.
    pub(crate) fn column(&self, t: &PackedTensor<'_>) -> usize {
        self.group * usize::from(t.params().group_size)
    }
}

/// The groups of one packed row, in order (see [`PackedTensor::groups`]).
#[derive(Debug, Clone)]
pub struct RowGroups<'a, R = GroupRecord> {
    tensor: PackedTensor<'a>,
    row: PackedRow<'a>,
    units: RowUnits,
    next_group: usize,
    next_outlier: usize,
    _record: core::marker::PhantomData<R>,
}

impl<'a, R: Record> RowGroups<'a, R> {
    /// The row's units (version 2; zero in version 1).
    pub fn units(&self) -> &RowUnits {
        &self.units
    }
}

impl<'a, R: Record> Iterator for RowGroups<'a, R> {
    type Item = RowGroup<'a, R>;

    #[inline]
    fn next(&mut self) -> Option<RowGroup<'a, R>> {
        let l = &self.tensor.layout;
        if self.next_group >= l.groups_per_row {
            return None;
        }
        let gi = self.next_group;
        let record = R::decode(&self.tensor, &self.row, &self.units, gi);
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
        self.next_outlier += record.count();
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
        if p.version == FormatVersion::V3 {
            return self.validate_rows_v3();
        }
        let offset = |r: usize| u32_at(b, l.offsets_at + 4 * r);
        if offset(0) != 0 || u64::from(offset(l.rows)) != l.n_outliers {
            return Err(FormatError::BadRowOffsets { row: 0 }.into());
        }
        let pos_bits = l.position_bits;
        let positions = &b[l.positions_at..];
        for r in 0..l.rows {
            let (start, end) = (offset(r), offset(r + 1));
            if end < start || (end - start) as usize > l.cols {
                return Err(FormatError::BadRowOffsets { row: r as u64 }.into());
            }
            let mut next = start as usize;
            let recs = &b[l.records_at + r * l.row_record_bytes()..][..l.row_record_bytes()];
            let units = match p.version {
                FormatVersion::V2 => Some(self.check_units(r, recs, end > start)?),
                // Version 3 returned above.
                FormatVersion::V1 | FormatVersion::V3 => None,
            };
            for g in 0..l.groups_per_row {
                let bad_group = |what| {
                    Error::Format(FormatError::BadGroup {
                        row: r as u64,
                        group: g as u64,
                        what,
                    })
                };
                let len = l.group_len(g);
                let count = match &units {
                    None => {
                        self.check_record_v1(&recs[g * l.record_bytes..][..l.record_bytes], len)
                    }
                    Some(_) => check_record_v2(recs, g, len),
                }
                .map_err(bad_group)?;
                if next + count > end as usize {
                    return Err(FormatError::BadRowOffsets { row: r as u64 }.into());
                }
                let mut prev: Option<u32> = None;
                for i in next..next + count {
                    let pos = get_bits(positions, i * pos_bits as usize, pos_bits);
                    if pos as usize >= len || prev.is_some_and(|q| pos <= q) {
                        return Err(bad_group(
                            "outlier positions not increasing within the group",
                        ));
                    }
                    prev = Some(pos);
                }
                next += count;
            }
            if next != end as usize {
                return Err(FormatError::BadRowOffsets { row: r as u64 }.into());
            }
        }
        Ok(())
    }

    /// Checks every row of a version 3 tensor: its units, and the zero padding after its
    /// records. Every 6-bit field is valid; the units bound what any code decodes to.
    fn validate_rows_v3(&self) -> Result<()> {
        let l = &self.layout;
        let record_bits = 12 * l.groups_per_row;
        for r in 0..l.rows {
            let recs =
                &self.bytes[l.records_at + r * l.row_record_bytes()..][..l.row_record_bytes()];
            self.check_units_v3(r, recs)?;
            let fields = &recs[record_v3::UNIT_BYTES..];
            let pad = (8 - record_bits % 8) % 8;
            if pad > 0 && get_bits(fields, record_bits, pad as u32) != 0 {
                return Err(FormatError::BadRow {
                    row: r as u64,
                    what: "padding bits after the group records are set",
                }
                .into());
            }
        }
        Ok(())
    }

    /// Checks the units of version 3 row `r`: valid f16, and no code decoding (after the
    /// inverse rotation, which grows a magnitude at most by its gain bound) above 2^126.
    fn check_units_v3(&self, r: usize, recs: &[u8]) -> Result<RowUnits> {
        let p = &self.layout.params;
        let bad_row = |what| {
            Error::Format(FormatError::BadRow {
                row: r as u64,
                what,
            })
        };
        let [d, m] = record_v3::read_units(recs);
        if !f16_ok(d) || !f16_ok(m) {
            return Err(bad_row("unit is negative, infinite or NaN"));
        }
        let units = RowUnits::from_stored([d, m, 0], self.info.scale_exp, f32::INFINITY);
        let top = f64::from(p.field_max());
        let reach = f64::from(p.code_max()) * top * f64::from(units.step_unit)
            + top * f64::from(units.min_unit);
        let gain = self
            .info
            .rotation
            .map_or(1.0, |rot| f64::from(rot.gain_bound()));
        if reach * gain > f64::from(MAX_DECODED_ABS) {
            return Err(bad_row("a code decodes above 2^126 in magnitude"));
        }
        Ok(units)
    }

    /// Checks one version 1 group record of a group of `len` columns; returns its count.
    fn check_record_v1(&self, rec: &[u8], len: usize) -> Result<usize, &'static str> {
        let p = &self.layout.params;
        let RecordFields { h_in, h_out, .. } = RecordFields::read(rec, p);
        if !f16_ok(h_in) || !f16_ok(h_out) {
            return Err("step is negative, infinite or NaN");
        }
        let d = decode_record(rec, p, self.info.scale_exp);
        if largest_decoded(&d.inliers, p) > f64::from(MAX_DECODED_ABS)
            || largest_decoded(&d.outliers, p) > f64::from(MAX_DECODED_ABS)
        {
            return Err("a code decodes above 2^126 in magnitude");
        }
        if d.count > len {
            return Err("outlier count exceeds group length");
        }
        if p.grid == Grid::Asymmetric
            && (d.inliers.offset > p.code_max() || d.outliers.offset > p.code_max())
        {
            return Err("zero point out of range");
        }
        if d.count == 0 && h_out != 0 {
            return Err("outlier step set in a group without outliers");
        }
        if d.count == len && h_in != 0 {
            return Err("inlier step set in a group without inliers");
        }
        Ok(d.count)
    }

    /// Checks the units of version 2 row `r` (`recs` its records); returns them.
    fn check_units(&self, r: usize, recs: &[u8], has_outliers: bool) -> Result<RowUnits> {
        let p = &self.layout.params;
        let bad_row = |what| {
            Error::Format(FormatError::BadRow {
                row: r as u64,
                what,
            })
        };
        let stored = record_v2::read_units(recs);
        if !stored.iter().all(|&h| f16_ok(h)) {
            return Err(bad_row("unit is negative, infinite or NaN"));
        }
        if !has_outliers && stored[2] != 0 {
            return Err(bad_row("outlier step set in a row without outliers"));
        }
        let units = RowUnits::from_stored(stored, self.info.scale_exp, self.info.threshold);
        let inlier_reach = f64::from(p.code_max()) * 255.0 * f64::from(units.step_unit)
            + 255.0 * f64::from(units.min_unit);
        let outlier_reach = if has_outliers {
            f64::from(units.threshold)
                + f64::from(p.magnitude_max()) * f64::from(units.outlier_step)
        } else {
            0.0
        };
        if inlier_reach.max(outlier_reach) > f64::from(MAX_DECODED_ABS) {
            return Err(bad_row("a code decodes above 2^126 in magnitude"));
        }
        Ok(units)
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

    /// The records and the codes of rows `first..first + n`: `n` rows' records (codes)
    /// one after the other, or an error when a row is out of range.
    #[inline]
    pub(crate) fn row_spans(&self, first: usize, n: usize) -> Result<(&'a [u8], &'a [u8])> {
        let l = &self.layout;
        let end = first.checked_add(n).filter(|&end| end <= l.rows);
        let Some(end) = end else {
            return Err(Error::RowOutOfRange {
                row: first.saturating_add(n).saturating_sub(1) as u64,
                rows: l.rows as u64,
            });
        };
        let (rb, cb) = (l.row_record_bytes(), l.row_code_bytes);
        let b = self.bytes;
        Ok((
            &b[l.records_at + first * rb..l.records_at + end * rb],
            &b[l.codes_at + first * cb..l.codes_at + end * cb],
        ))
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
        let (first, next) = if l.params.version.has_outliers() {
            (
                u32_at(b, l.offsets_at + 4 * r) as usize,
                u32_at(b, l.offsets_at + 4 * (r + 1)) as usize,
            )
        } else {
            (0, 0)
        };
        Ok(PackedRow {
            records: &b[l.records_at + r * l.row_record_bytes()..][..l.row_record_bytes()],
            codes: &b[l.codes_at + r * l.row_code_bytes..][..l.row_code_bytes],
            positions: &b[l.positions_at..],
            first_outlier: first,
            n_outliers: next - first,
        })
    }

    /// The groups of row `r` of a version 1 tensor with their grids and outlier
    /// positions, or an error when the row is out of range or the tensor is version 2
    /// (read with [`affine_groups`](Self::affine_groups)).
    pub fn groups(&self, r: usize) -> Result<RowGroups<'a, GroupRecord>> {
        self.groups_of(r)
    }

    /// The groups of row `r` of a version 2 tensor, or an error when the row is out of
    /// range or the tensor is version 1 (read with [`groups`](Self::groups)).
    pub fn affine_groups(&self, r: usize) -> Result<RowGroups<'a, AffineRecord>> {
        self.groups_of(r)
    }

    /// The groups of row `r` with records of kind `R`.
    pub fn groups_of<R: Record>(&self, r: usize) -> Result<RowGroups<'a, R>> {
        if self.version() != R::VERSION {
            return Err(Error::Unsupported(match self.version() {
                FormatVersion::V1 => "a version 1 tensor's groups are read with groups",
                FormatVersion::V2 => "a version 2 tensor's groups are read with affine_groups",
                FormatVersion::V3 => "a version 3 tensor has no outlier groups",
            }));
        }
        let row = self.row(r)?;
        Ok(RowGroups {
            tensor: *self,
            row,
            units: self.units_of(&row),
            next_group: 0,
            next_outlier: row.first_outlier,
            _record: core::marker::PhantomData,
        })
    }

    /// A cursor at the start of row `r` (see [`RowCursor`]), or an error when the row is
    /// out of range.
    pub fn row_cursor(&self, r: usize) -> Result<RowCursor> {
        self.row(r)?;
        Ok(RowCursor {
            row: r,
            group: 0,
            outlier: 0,
        })
    }

    /// What the columns of a piece of a row (see [`RowCursor`]) are a multiple of, but
    /// for the row's last piece: the group size, or for a rotated (v3) tensor the larger
    /// of it and the rotation's segment, which is undone whole.
    pub fn piece_unit(&self) -> usize {
        let g = usize::from(self.layout.params.group_size);
        match self.info().rotation {
            Some(rot) => g.max(rot.segment()),
            None => g,
        }
    }

    /// Checks a piece of `len` columns from `at`: inside the row, starting at a group
    /// boundary, ending at one or at the row's end. Returns the row and the groups in
    /// the piece.
    pub(crate) fn check_part(&self, at: &RowCursor, len: usize) -> Result<(PackedRow<'a>, usize)> {
        let row = self.row(at.row)?;
        let l = &self.layout;
        let g = usize::from(l.params.group_size);
        let unit = self.piece_unit();
        let start = at.group.saturating_mul(g);
        let left = l.cols.saturating_sub(start);
        if at.group > l.groups_per_row
            || at.outlier > row.n_outliers
            || !(start.is_multiple_of(unit) || at.group == l.groups_per_row)
        {
            return Err(Error::RowOutOfRange {
                row: at.row as u64,
                rows: l.rows as u64,
            });
        }
        if len > left || (len != left && !len.is_multiple_of(unit)) {
            return Err(Error::ShapeMismatch {
                expected: (len.min(left) / unit * unit) as u64,
                actual: len as u64,
            });
        }
        Ok((row, len.div_ceil(g)))
    }

    /// The groups of a row from the cursor `at` on, with records of kind `R`.
    pub(crate) fn groups_at<R: Record>(&self, at: &RowCursor) -> Result<RowGroups<'a, R>> {
        let mut groups = self.groups_of::<R>(at.row)?;
        groups.next_group = at.group;
        groups.next_outlier += at.outlier;
        Ok(groups)
    }

    /// The format version.
    pub fn version(&self) -> FormatVersion {
        self.layout.params.version
    }

    /// The units of a row (versions 2 and 3; all zero in version 1).
    pub fn units_of(&self, row: &PackedRow<'_>) -> RowUnits {
        self.units_of_records(row.records)
    }

    /// The units of a row whose records are `records`.
    #[inline]
    pub(crate) fn units_of_records(&self, records: &[u8]) -> RowUnits {
        let units = match self.version() {
            FormatVersion::V1 => [0; 3],
            FormatVersion::V2 => record_v2::read_units(records),
            FormatVersion::V3 => {
                let [d, m] = record_v3::read_units(records);
                [d, m, 0]
            }
        };
        RowUnits::from_stored(units, self.info.scale_exp, self.info.threshold)
    }

    /// The step and minimum units of a v3 row whose records are `records` (what
    /// [`units_of_records`](Self::units_of_records) gives them), inlined: the per-row
    /// setup of the int8 dot products, where a call costs as much as a group.
    #[inline(always)]
    pub(crate) fn v3_units(&self, records: &[u8]) -> (f32, f32) {
        let [d, m] = record_v3::read_units(records);
        let e = self.info.scale_exp;
        (unit_value(d, e), unit_value(m, e))
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
