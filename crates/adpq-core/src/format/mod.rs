//! The packed ADPQ format, version 1 (see `docs/FORMAT.md` for the byte layout).
//!
//! A packed tensor is one little-endian buffer: a 64-byte header, per-row outlier
//! offsets, per-group records (two f16 steps, the outlier count, zero points when
//! asymmetric), the codes (one `b`-bit code per weight, each row starting on a byte),
//! and the outlier positions (a bit stream of `ceil(log2 g)`-bit indices within groups).
//! Parsing validates every field, so all accessors are bounds-safe.
//!
//! One job per file: the header and group records are little-endian structs read
//! and written in place (`header.rs`, `record.rs`), `layout.rs` places the sections,
//! `codes.rs` packs codes, `write.rs` seals a buffer and `parse.rs` validates one.

mod codes;
mod header;
mod layout;
mod parse;
pub mod record;
pub mod record_v2;
pub mod record_v3;
mod write;

pub(crate) use codes::{code_at, put_code};
pub use header::HeaderInfo;
pub use layout::Layout;
pub use parse::{PackedRow, PackedTensor, Record, RowCursor, RowGroup, RowGroups};
pub use record::GroupRecord;
pub use record_v2::AffineRecord;
pub use write::checksum;
pub(crate) use write::finish;

use crate::error::Result;

/// The four magic bytes.
pub const MAGIC: [u8; 4] = *b"ADPQ";
/// The newest format version this build writes and reads (it reads every version from 1).
pub const VERSION: u16 = 3;
/// Header size in bytes.
pub const HEADER_LEN: usize = 64;
/// The largest magnitude any code of an accepted buffer may decode to: 2^126.
///
/// Honest writers stay below about 2^125 (weights are below 2^124; a grid reaches at most
/// about twice its members' magnitude), so this leaves a factor of two. Without it, a
/// buffer with valid fields (`e = 111`, `h` near 65504, an 8-bit code far from its zero
/// point) could decode to infinity. With it, every dequantized value is finite, and a dot
/// product with activations whose absolute sum is at most 1/2 (after int8 rounding, at
/// most 1) stays below `f32::MAX` however it is summed.
pub const MAX_DECODED_ABS: f32 = f32::from_bits((127 + 126) << 23);

/// Exact size in bytes of a packed `rows × cols` tensor with `n_outliers` outliers.
pub fn packed_len(
    rows: usize,
    cols: usize,
    params: crate::params::FormatParams,
    n_outliers: u64,
) -> Result<usize> {
    Ok(Layout::new(rows, cols, params, n_outliers)?.total_len)
}
