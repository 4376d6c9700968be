//! The row and group loop every `quantize_rows` shares (scalar, AVX2, NEON): buffer
//! checks, group records, per-row outlier counts and position overflow, written once.

use super::scalar::check_rows;
use super::{RowJob, RowsOut};
use crate::bits::BitWriter;
use crate::error::{Error, Result};
use crate::format::encode_record;
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

/// Checks the buffers of a block of `w_len` weights, then for each row zeroes its codes
/// and calls `group(row, group_index, row_codes, positions)` on each of its groups in
/// order, writing the group's record and, at the row's end, its outlier count. Returns
/// the number of outliers written.
#[inline(always)]
pub(crate) fn quantize_groups(
    w_len: usize,
    job: &RowJob,
    out: &mut RowsOut<'_>,
    mut group: impl FnMut(usize, usize, &mut [u8], &mut BitWriter<'_>) -> Result<GroupDone>,
) -> Result<u64> {
    let rows = check_rows(w_len, job, out)?;
    let fp = job.params;
    let groups = job.cols.div_ceil(usize::from(fp.group_size));
    let rec_bytes = fp.record_bytes();
    let row_code_bytes = (job.cols * usize::from(fp.bits)).div_ceil(8);
    let mut outliers = 0u64;
    for r in 0..rows {
        let recs = &mut out.records[r * groups * rec_bytes..(r + 1) * groups * rec_bytes];
        let codes = &mut out.codes[r * row_code_bytes..(r + 1) * row_code_bytes];
        codes.fill(0);
        let mut row_count = 0u32;
        for (gi, rec) in recs.chunks_exact_mut(rec_bytes).enumerate() {
            let done = group(r, gi, codes, &mut out.positions)?;
            encode_record(rec, &fp, &done.gin, &done.gout, done.n_out);
            row_count += done.n_out as u32;
        }
        out.counts[r * 4..r * 4 + 4].copy_from_slice(&row_count.to_le_bytes());
        outliers += u64::from(row_count);
    }
    Ok(outliers)
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
