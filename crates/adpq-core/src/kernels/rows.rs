//! The row and group walk every `quantize_rows` shares (scalar, AVX2, NEON): buffer
//! checks, group records, per-row outlier counts and position overflow, written once
//! (version 1: [`GroupCursor`]; version 2: [`RowsV2`]).

use super::scalar::check_rows;
use super::{RowJob, RowsDone, RowsOut};
use crate::bits::BitWriter;
use crate::error::{Error, Result};
use crate::format::record::encode_record;
use crate::params::FormatParams;
use crate::quant::GridScale;

/// What quantizing one group produced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupDone {
    /// The inliers' grid.
    pub gin: GridScale,
    /// The outliers' grid.
    pub gout: GridScale,
    /// Outliers in the group.
    pub n_out: usize,
}

/// Walks the groups of a block of rows in row-major order (with [`GroupCursor::next`],
/// or nested loops over [`GroupCursor::rows`] and the groups: either way, one
/// [`GroupCursor::done`] per group in order), writing each group's record and, at each
/// row's end, the row's outlier count.
///
/// A cursor rather than a loop taking a closure: the SIMD kernels run the group bodies
/// inline in their `#[target_feature]` function, where a closure could be left out of
/// line and compiled without the features.
pub(crate) struct GroupCursor<'o, 'a> {
    out: &'o mut RowsOut<'a>,
    fp: FormatParams,
    rows: usize,
    groups: usize,
    row_code_bytes: usize,
    r: usize,
    gi: usize,
    row_count: u32,
    outliers: u64,
}

impl<'o, 'a> GroupCursor<'o, 'a> {
    /// Checks the buffers of a block of `w_len` weights and zeroes its codes.
    #[inline(always)]
    pub(crate) fn new(w_len: usize, job: &RowJob, out: &'o mut RowsOut<'a>) -> Result<Self> {
        let rows = check_rows(w_len, job, out)?;
        let fp = job.params;
        out.codes.fill(0);
        Ok(GroupCursor {
            out,
            fp,
            rows,
            groups: job.cols.div_ceil(usize::from(fp.group_size)),
            row_code_bytes: (job.cols * usize::from(fp.bits)).div_ceil(8),
            r: 0,
            gi: 0,
            row_count: 0,
            outliers: 0,
        })
    }

    /// Rows in the block.
    #[inline(always)]
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// The row and group index of the next group, until every group is done.
    /// (Read by the SIMD kernels only, which targets without them do not build.)
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    #[inline(always)]
    pub(crate) fn next(&self) -> Option<(usize, usize)> {
        (self.r < self.rows).then_some((self.r, self.gi))
    }

    /// The current row's codes (zeroed, then filled group by group) and the positions.
    #[inline(always)]
    pub(crate) fn codes(&mut self) -> (&mut [u8], &mut BitWriter<'a>) {
        let n = self.row_code_bytes;
        let codes = &mut self.out.codes[self.r * n..(self.r + 1) * n];
        (codes, &mut self.out.positions)
    }

    /// Finishes the current group: writes its record, and the row's count after its last.
    #[inline(always)]
    pub(crate) fn done(&mut self, group: &GroupDone) {
        let rb = self.fp.record_bytes();
        let at = (self.r * self.groups + self.gi) * rb;
        let rec = &mut self.out.records[at..at + rb];
        encode_record(rec, &self.fp, &group.gin, &group.gout, group.n_out);
        self.row_count += group.n_out as u32;
        self.gi += 1;
        if self.gi == self.groups {
            let r = self.r;
            self.out.counts[r * 4..r * 4 + 4].copy_from_slice(&self.row_count.to_le_bytes());
            self.outliers += u64::from(self.row_count);
            (self.r, self.gi, self.row_count) = (r + 1, 0, 0);
        }
    }

    /// Outliers written so far.
    #[inline(always)]
    pub(crate) fn outliers(&self) -> u64 {
        self.outliers
    }
}

/// Appends outlier position `i` (within its group) to the stream, or the error for a
/// full stream.
#[inline(always)]
pub(crate) fn push_position(positions: &mut BitWriter<'_>, i: u32) -> Result<()> {
    if positions.push(i) {
        Ok(())
    } else {
        Err(Error::BufferSize {
            needed: positions.written() + 1,
            actual: positions.written(),
        })
    }
}

/// The row walk of a version 2 quantizer (scalar and SIMD): the buffer checks, each row's
/// records (units first) and codes, and each row's outlier count once its groups are done.
pub(crate) struct RowsV2 {
    /// Rows in the block.
    pub(crate) rows: usize,
    row_records: usize,
    row_code_bytes: usize,
}

/// One row's share of the output while its groups are quantized.
pub(crate) struct RowV2<'o, 'a> {
    /// The row's records: units, then one record per group.
    pub(crate) records: &'o mut [u8],
    /// The row's codes (zeroed).
    pub(crate) codes: &'o mut [u8],
    /// The position stream.
    pub(crate) positions: &'o mut BitWriter<'a>,
}

impl RowsV2 {
    /// Checks the buffers of a block of `w_len` weights and zeroes its codes.
    #[inline(always)]
    pub(crate) fn new(w_len: usize, job: &RowJob, out: &mut RowsOut<'_>) -> Result<Self> {
        let rows = check_rows(w_len, job, out)?;
        let fp = job.params;
        out.codes.fill(0);
        Ok(RowsV2 {
            rows,
            row_records: fp.row_record_bytes(job.cols),
            row_code_bytes: (job.cols * usize::from(fp.bits)).div_ceil(8),
        })
    }

    /// Row `r`'s records, codes and the position stream.
    #[inline(always)]
    pub(crate) fn row<'o, 'a>(&self, out: &'o mut RowsOut<'a>, r: usize) -> RowV2<'o, 'a> {
        let (nr, nc) = (self.row_records, self.row_code_bytes);
        RowV2 {
            records: &mut out.records[r * nr..(r + 1) * nr],
            codes: &mut out.codes[r * nc..(r + 1) * nc],
            positions: &mut out.positions,
        }
    }

    /// Records row `r`'s outlier count, once all its groups are written.
    #[inline(always)]
    pub(crate) fn finish_row(
        &self,
        out: &mut RowsOut<'_>,
        r: usize,
        count: u32,
        done: &mut RowsDone,
    ) {
        out.counts[r * 4..r * 4 + 4].copy_from_slice(&count.to_le_bytes());
        done.outliers += u64::from(count);
    }
}
