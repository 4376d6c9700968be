//! Sealing a packed buffer: row offsets, header and checksum.

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, IntoBytes};

use super::header::{Header, HeaderInfo, CRC_AT};
use super::layout::Layout;
use super::HEADER_LEN;
use crate::error::{Error, Result};

/// Writes the header, turns the per-row outlier counts (left in the offsets section by
/// [`CpuKernels::quantize_rows`](crate::CpuKernels::quantize_rows)) into offsets, and seals the
/// buffer with its checksum.
pub(crate) fn finish(buf: &mut [u8], layout: &Layout, info: &HeaderInfo) -> Result<()> {
    if buf.len() != layout.total_len {
        return Err(Error::BufferSize {
            needed: layout.total_len as u64,
            actual: buf.len() as u64,
        });
    }
    let offsets = &mut buf[layout.offsets_at..layout.records_at];
    // The layout gives the offsets section exactly rows + 1 u32 values (none in v3).
    let offsets = <[U32]>::mut_from_bytes(offsets).map_err(|_| Error::BufferSize {
        needed: 4 * (layout.rows as u64 + 1),
        actual: (layout.records_at - layout.offsets_at) as u64,
    })?;
    let mut acc = 0u64;
    if let Some((first, rest)) = offsets.split_first_mut() {
        *first = U32::ZERO;
        for offset in rest {
            acc += u64::from(offset.get());
            *offset = U32::new(acc.min(u64::from(u32::MAX)) as u32);
        }
    }
    if acc != layout.n_outliers {
        return Err(Error::OutlierCount {
            expected: layout.n_outliers,
            actual: acc,
        });
    }
    buf[..HEADER_LEN].copy_from_slice(Header::new(layout, info).as_bytes());
    let crc = checksum(buf);
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// CRC-32 (IEEE) of the buffer with the checksum field read as zero.
pub fn checksum(buf: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[..CRC_AT]);
    h.update(&[0u8; 4]);
    h.update(&buf[CRC_AT + 4..]);
    h.finalize()
}
