//! The packed ADPQ format, version 1 (see `docs/FORMAT.md` for the byte layout).
//!
//! A packed tensor is one little-endian buffer: a 64-byte header, per-row outlier
//! offsets, per-group records (two f16 steps, the outlier count, zero points when
//! asymmetric), the codes (one `b`-bit code per weight, each row starting on a byte),
//! and the outlier positions (a bit stream of `ceil(log2 g)`-bit indices within groups).
//! Parsing validates every field, so all accessors are bounds-safe.

use crate::bits::{get_bits, stream_bytes};
use crate::error::{Error, FormatError, Result};
use crate::params::{FormatParams, Grid, SelectionMode};
use crate::quant::{GridScale, MAX_SCALE_EXP, MIN_SCALE_EXP};

/// The four magic bytes.
pub const MAGIC: [u8; 4] = *b"ADPQ";
/// The format version this build writes and reads.
pub const VERSION: u16 = 1;
/// Header size in bytes.
pub const HEADER_LEN: usize = 64;
/// Byte range of the CRC-32 inside the header.
const CRC_RANGE: core::ops::Range<usize> = 56..60;

/// Byte offsets and sizes of a packed tensor's sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Rows of the tensor.
    pub rows: usize,
    /// Columns of the tensor.
    pub cols: usize,
    /// Format parameters.
    pub params: FormatParams,
    /// Outliers in the tensor.
    pub n_outliers: u64,
    /// Groups per row, `ceil(cols / g)`.
    pub groups_per_row: usize,
    /// Bytes of one group record.
    pub record_bytes: usize,
    /// Bytes of one row of codes, `ceil(cols · b / 8)`.
    pub row_code_bytes: usize,
    /// Bits of one outlier position.
    pub position_bits: u32,
    /// Start of the `rows + 1` u32 outlier offsets.
    pub offsets_at: usize,
    /// Start of the group records.
    pub records_at: usize,
    /// Start of the codes.
    pub codes_at: usize,
    /// Start of the position stream.
    pub positions_at: usize,
    /// Total length in bytes.
    pub total_len: usize,
}

impl Layout {
    /// The layout of a `rows × cols` tensor with `n_outliers` outliers.
    pub fn new(rows: usize, cols: usize, params: FormatParams, n_outliers: u64) -> Result<Layout> {
        params.validate()?;
        if rows == 0 || cols == 0 {
            return Err(Error::EmptyTensor);
        }
        let n = rows as u64 * cols as u64;
        if rows as u64 > u64::from(u32::MAX)
            || cols as u64 > u64::from(u32::MAX)
            || n > u64::from(u32::MAX)
        {
            return Err(Error::TensorTooLarge { elements: n });
        }
        if n_outliers > n {
            return Err(Error::OutlierCount {
                expected: n,
                actual: n_outliers,
            });
        }
        let g = usize::from(params.group_size);
        let groups_per_row = cols.div_ceil(g);
        let record_bytes = params.record_bytes();
        let row_code_bytes = (cols as u64 * u64::from(params.bits)).div_ceil(8);
        let position_bits = params.position_bits();
        // All sizes below are bounded by ~ 2^32 · 9 bytes: no u64 overflow.
        let offsets_at = HEADER_LEN as u64;
        let records_at = offsets_at + 4 * (rows as u64 + 1);
        let codes_at = records_at + rows as u64 * groups_per_row as u64 * record_bytes as u64;
        let positions_at = codes_at + rows as u64 * row_code_bytes;
        let total = positions_at + stream_bytes(n_outliers, position_bits);
        // Readers compute bit offsets (`index · bits`) in usize: on 32-bit targets the
        // whole buffer must be addressable in bits, not just in bytes.
        let total_len = usize::try_from(total)
            .ok()
            .filter(|&len| len.checked_mul(8).is_some())
            .ok_or(Error::TensorTooLarge { elements: n })?;
        Ok(Layout {
            rows,
            cols,
            params,
            n_outliers,
            groups_per_row,
            record_bytes,
            row_code_bytes: row_code_bytes as usize,
            position_bits,
            offsets_at: offsets_at as usize,
            records_at: records_at as usize,
            codes_at: codes_at as usize,
            positions_at: positions_at as usize,
            total_len,
        })
    }

    /// Exact bits per weight of this layout: `8 · total_len / (rows · cols)`.
    pub fn bits_per_weight(&self) -> f64 {
        8.0 * self.total_len as f64 / (self.rows as f64 * self.cols as f64)
    }

    /// Length of group `group` of any row (0 past the last group).
    #[inline]
    pub fn group_len(&self, group: usize) -> usize {
        let g = usize::from(self.params.group_size);
        self.cols.saturating_sub(group.saturating_mul(g)).min(g)
    }

    /// Bytes of the records of one row.
    pub fn row_record_bytes(&self) -> usize {
        self.groups_per_row * self.record_bytes
    }

    /// Splits a buffer of exactly `total_len` bytes into its sections.
    ///
    /// # Panics
    /// When `buf.len() != self.total_len`.
    pub fn split_mut<'b>(&self, buf: &'b mut [u8]) -> Sections<'b> {
        assert_eq!(
            buf.len(),
            self.total_len,
            "buffer length must equal the layout's total_len"
        );
        let (header, rest) = buf.split_at_mut(self.offsets_at + 4);
        let (counts, rest) = rest.split_at_mut(self.records_at - self.offsets_at - 4);
        let (records, rest) = rest.split_at_mut(self.codes_at - self.records_at);
        let (codes, positions) = rest.split_at_mut(self.positions_at - self.codes_at);
        Sections {
            header,
            counts,
            records,
            codes,
            positions,
        }
    }
}

/// The sections of a packed buffer under construction, as disjoint mutable slices.
#[derive(Debug)]
pub struct Sections<'b> {
    /// Header plus the first (always zero) row offset.
    pub header: &'b mut [u8],
    /// Per-row outlier counts (4 bytes per row), turned into offsets by [`finish`].
    pub counts: &'b mut [u8],
    /// Group records, `row_record_bytes()` per row.
    pub records: &'b mut [u8],
    /// Codes, `row_code_bytes` per row.
    pub codes: &'b mut [u8],
    /// The outlier position stream.
    pub positions: &'b mut [u8],
}

/// Exact size in bytes of a packed `rows × cols` tensor with `n_outliers` outliers.
pub fn packed_len(
    rows: usize,
    cols: usize,
    params: FormatParams,
    n_outliers: u64,
) -> Result<usize> {
    Ok(Layout::new(rows, cols, params, n_outliers)?.total_len)
}

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
}

/// One decoded group record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupRecord {
    /// Inlier grid.
    pub inliers: GridScale,
    /// Outlier grid.
    pub outliers: GridScale,
    /// Outliers in the group.
    pub count: usize,
}

#[inline(always)]
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
#[inline(always)]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes the record at the start of `rec` (caller guarantees its length).
#[inline(always)]
pub(crate) fn decode_record(rec: &[u8], fp: &FormatParams, scale_exp: i8) -> GroupRecord {
    let h_in = u16_at(rec, 0);
    let h_out = u16_at(rec, 2);
    let (count, zeros_at) = if fp.count_bytes() == 1 {
        (usize::from(rec[4]), 5)
    } else {
        (usize::from(u16_at(rec, 4)), 6)
    };
    let (z_in, z_out) = match fp.grid {
        Grid::Symmetric => (1i32 << (fp.bits - 1), 1i32 << (fp.bits - 1)),
        Grid::Asymmetric => (i32::from(rec[zeros_at]), i32::from(rec[zeros_at + 1])),
    };
    GroupRecord {
        inliers: GridScale::from_stored(h_in, z_in, scale_exp),
        outliers: GridScale::from_stored(h_out, z_out, scale_exp),
        count,
    }
}

/// Encodes a record into `rec` (exactly `record_bytes` long).
pub(crate) fn encode_record(
    rec: &mut [u8],
    fp: &FormatParams,
    inliers: &GridScale,
    outliers: &GridScale,
    count: usize,
) {
    rec[0..2].copy_from_slice(&inliers.h.to_le_bytes());
    rec[2..4].copy_from_slice(&outliers.h.to_le_bytes());
    let zeros_at = if fp.count_bytes() == 1 {
        rec[4] = count as u8;
        5
    } else {
        rec[4..6].copy_from_slice(&(count as u16).to_le_bytes());
        6
    };
    if fp.grid == Grid::Asymmetric {
        rec[zeros_at] = inliers.offset as u8;
        rec[zeros_at + 1] = outliers.offset as u8;
    }
}

/// Writes the header, turns the per-row outlier counts (left in the offsets section by
/// [`CpuKernels::quantize_rows`](crate::CpuKernels::quantize_rows)) into offsets, and seals the
/// buffer with its checksum.
pub fn finish(buf: &mut [u8], layout: &Layout, info: &HeaderInfo) -> Result<()> {
    if buf.len() != layout.total_len {
        return Err(Error::BufferSize {
            needed: layout.total_len as u64,
            actual: buf.len() as u64,
        });
    }
    let mut acc = 0u64;
    buf[layout.offsets_at..layout.offsets_at + 4].copy_from_slice(&0u32.to_le_bytes());
    for r in 0..layout.rows {
        let at = layout.offsets_at + 4 * (r + 1);
        acc += u64::from(u32_at(buf, at));
        buf[at..at + 4].copy_from_slice(&(acc.min(u64::from(u32::MAX)) as u32).to_le_bytes());
    }
    if acc != layout.n_outliers {
        return Err(Error::OutlierCount {
            expected: layout.n_outliers,
            actual: acc,
        });
    }
    let p = &layout.params;
    let h = &mut buf[..HEADER_LEN];
    h.fill(0);
    h[0..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_le_bytes());
    h[6..8].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
    h[8] = p.bits;
    h[9] = match p.grid {
        Grid::Symmetric => 0,
        Grid::Asymmetric => 1,
    };
    h[10..12].copy_from_slice(&p.group_size.to_le_bytes());
    h[12] = info.scale_exp as u8;
    let (mode, iters) = match info.selection {
        SelectionMode::Exact => (0u8, 0u32),
        SelectionMode::Reference { n_iters } => (1, n_iters),
    };
    h[13] = mode;
    h[16..20].copy_from_slice(&(layout.rows as u32).to_le_bytes());
    h[20..24].copy_from_slice(&(layout.cols as u32).to_le_bytes());
    h[24..32].copy_from_slice(&layout.n_outliers.to_le_bytes());
    h[32..36].copy_from_slice(&info.threshold.to_bits().to_le_bytes());
    h[36..40].copy_from_slice(&iters.to_le_bytes());
    h[40..48].copy_from_slice(&info.alpha.to_bits().to_le_bytes());
    h[48..56].copy_from_slice(&(layout.total_len as u64).to_le_bytes());
    let crc = checksum(buf);
    buf[CRC_RANGE].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// CRC-32 (IEEE) of the buffer with the checksum field read as zero.
pub fn checksum(buf: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[..CRC_RANGE.start]);
    h.update(&[0u8; 4]);
    h.update(&buf[CRC_RANGE.end..]);
    h.finalize()
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

fn bad(what: &'static str) -> Error {
    Error::Format(FormatError::BadHeader(what))
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
        if bytes.len() < HEADER_LEN {
            return Err(FormatError::Truncated {
                needed: HEADER_LEN as u64,
                actual: bytes.len() as u64,
            }
            .into());
        }
        let h = &bytes[..HEADER_LEN];
        if h[0..4] != MAGIC {
            return Err(FormatError::BadMagic.into());
        }
        let version = u16_at(h, 4);
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion(version).into());
        }
        if usize::from(u16_at(h, 6)) != HEADER_LEN {
            return Err(bad("header length"));
        }
        let declared = u64_at(h, 48);
        if declared != bytes.len() as u64 {
            return Err(if declared > bytes.len() as u64 {
                FormatError::Truncated {
                    needed: declared,
                    actual: bytes.len() as u64,
                }
            } else {
                FormatError::LengthMismatch {
                    expected: declared,
                    actual: bytes.len() as u64,
                }
            }
            .into());
        }
        if verify_crc {
            let stored = u32_at(h, CRC_RANGE.start);
            let computed = checksum(bytes);
            if stored != computed {
                return Err(FormatError::ChecksumMismatch { stored, computed }.into());
            }
        }
        let grid = match h[9] {
            0 => Grid::Symmetric,
            1 => Grid::Asymmetric,
            _ => return Err(bad("grid kind")),
        };
        let params = FormatParams {
            bits: h[8],
            group_size: u16_at(h, 10),
            grid,
        };
        params.validate().map_err(|_| bad("bits or group size"))?;
        let scale_exp = h[12] as i8;
        if !(MIN_SCALE_EXP..=MAX_SCALE_EXP).contains(&i32::from(scale_exp)) {
            return Err(bad("scale exponent"));
        }
        let iters = u32_at(h, 36);
        let selection = match (h[13], iters) {
            (0, 0) => SelectionMode::Exact,
            (1, n) if n > 0 => SelectionMode::Reference { n_iters: n },
            _ => return Err(bad("selection mode")),
        };
        if h[14] != 0 || h[15] != 0 || u32_at(h, 60) != 0 {
            return Err(bad("reserved bytes"));
        }
        let rows = u32_at(h, 16) as usize;
        let cols = u32_at(h, 20) as usize;
        let n_outliers = u64_at(h, 24);
        let threshold = f32::from_bits(u32_at(h, 32));
        if threshold.is_nan() || threshold < 0.0 {
            return Err(bad("threshold"));
        }
        let alpha = f64::from_bits(u64_at(h, 40));
        if !(0.0..=0.5).contains(&alpha) {
            return Err(bad("alpha"));
        }
        let layout = Layout::new(rows, cols, params, n_outliers).map_err(|e| match e {
            Error::EmptyTensor => bad("empty shape"),
            Error::OutlierCount { .. } => bad("more outliers than weights"),
            _ => bad("shape too large"),
        })?;
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
            info: HeaderInfo {
                scale_exp,
                selection,
                threshold,
                alpha,
            },
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
                let h_in = u16_at(rec, 0);
                let h_out = u16_at(rec, 2);
                if !f16_ok(h_in) || !f16_ok(h_out) {
                    return Err(bad_group("step is negative, infinite or NaN"));
                }
                let d = decode_record(rec, p, self.info.scale_exp);
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
