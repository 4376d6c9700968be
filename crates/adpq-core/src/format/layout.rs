//! Where each section of a packed tensor starts, from its shape and parameters.

use super::HEADER_LEN;
use crate::bits::stream_bytes;
use crate::error::{Error, Result};
use crate::params::FormatParams;

/// Byte offsets and sizes of a packed tensor's sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) params: FormatParams,
    pub(crate) n_outliers: u64,
    /// Groups per row, `ceil(cols / g)`.
    pub(crate) groups_per_row: usize,
    /// Bytes of one group record.
    pub(crate) record_bytes: usize,
    /// Bytes of one row's records: its units (v2) and its group records.
    pub(crate) row_record_bytes: usize,
    /// Bytes of one row of codes, `ceil(cols · b / 8)`.
    pub(crate) row_code_bytes: usize,
    /// Bits of one outlier position.
    pub(crate) position_bits: u32,
    /// Start of the `rows + 1` u32 outlier offsets.
    pub(crate) offsets_at: usize,
    /// Start of the group records.
    pub(crate) records_at: usize,
    /// Start of the codes.
    pub(crate) codes_at: usize,
    /// Start of the position stream.
    pub(crate) positions_at: usize,
    /// Total length in bytes.
    pub(crate) total_len: usize,
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
        // Version 3 has no outlier split, hence no offsets.
        let offsets_len = if params.version.has_outliers() {
            4 * (rows as u64 + 1)
        } else {
            0
        };
        let records_at = offsets_at + offsets_len;
        let row_record_bytes = params.row_record_bytes(cols);
        let codes_at = records_at + rows as u64 * row_record_bytes as u64;
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
            row_record_bytes,
            row_code_bytes: row_code_bytes as usize,
            position_bits,
            offsets_at: offsets_at as usize,
            records_at: records_at as usize,
            codes_at: codes_at as usize,
            positions_at: positions_at as usize,
            total_len,
        })
    }

    /// Rows of the tensor.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the tensor.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Format parameters.
    pub fn params(&self) -> FormatParams {
        self.params
    }

    /// Outliers in the tensor.
    pub fn n_outliers(&self) -> u64 {
        self.n_outliers
    }

    /// Total length of the packed buffer in bytes.
    pub fn total_len(&self) -> usize {
        self.total_len
    }

    /// Bits of one outlier position in the position stream.
    pub fn position_bits(&self) -> u32 {
        self.position_bits
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

    /// Groups per row, `ceil(cols / g)`.
    pub fn groups_per_row(&self) -> usize {
        self.groups_per_row
    }

    /// Bytes of one group record.
    pub fn record_bytes(&self) -> usize {
        self.record_bytes
    }

    /// Bytes of one row of codes, `ceil(cols · b / 8)` (each row starts on a byte).
    pub fn row_code_bytes(&self) -> usize {
        self.row_code_bytes
    }

    /// Start of the `rows + 1` little-endian u32 row offsets of the outlier positions
    /// (version 3: an empty section, at [`records_at`](Self::records_at)).
    pub fn offsets_at(&self) -> usize {
        self.offsets_at
    }

    /// Start of the group records (`row_record_bytes()` per row).
    pub fn records_at(&self) -> usize {
        self.records_at
    }

    /// Start of the codes (`row_code_bytes()` per row).
    pub fn codes_at(&self) -> usize {
        self.codes_at
    }

    /// Start of the outlier position stream (`position_bits()` bits per outlier, in
    /// row-major order, each a position within its group).
    pub fn positions_at(&self) -> usize {
        self.positions_at
    }

    /// Bytes of the records of one row (v2: its units first).
    pub fn row_record_bytes(&self) -> usize {
        self.row_record_bytes
    }

    /// Splits a buffer of exactly `total_len` bytes into its sections.
    ///
    /// # Panics
    /// When `buf.len() != self.total_len`.
    pub(crate) fn split_mut<'b>(&self, buf: &'b mut [u8]) -> Sections<'b> {
        assert_eq!(
            buf.len(),
            self.total_len,
            "buffer length must equal the layout's total_len"
        );
        // The header and the first (always zero) row offset are written by `finish`.
        let first_offset = self.params.row_count_bytes();
        let (_header, rest) = buf.split_at_mut(self.offsets_at + first_offset);
        let (counts, rest) = rest.split_at_mut(self.records_at - self.offsets_at - first_offset);
        let (records, rest) = rest.split_at_mut(self.codes_at - self.records_at);
        let (codes, positions) = rest.split_at_mut(self.positions_at - self.codes_at);
        Sections {
            counts,
            records,
            codes,
            positions,
        }
    }
}

/// The sections of a packed buffer under construction, as disjoint mutable slices.
#[derive(Debug)]
pub(crate) struct Sections<'b> {
    /// Per-row outlier counts (4 bytes per row; none in v3), turned into offsets by `finish`.
    pub(crate) counts: &'b mut [u8],
    /// Group records, `row_record_bytes()` per row.
    pub(crate) records: &'b mut [u8],
    /// Codes, `row_code_bytes` per row.
    pub(crate) codes: &'b mut [u8],
    /// The outlier position stream.
    pub(crate) positions: &'b mut [u8],
}
