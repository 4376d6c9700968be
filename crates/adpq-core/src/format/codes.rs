//! Code packing: one `b`-bit code per weight, LSB first, each row starting on a byte.

use crate::bits::{get_bits, or_bits};

/// Writes one `bits`-wide code at index `i` of a zeroed row.
#[inline(always)]
pub(crate) fn put_code(row_codes: &mut [u8], i: usize, bits: u8, code: u8) {
    match bits {
        8 => row_codes[i] = code,
        4 => row_codes[i >> 1] |= code << ((i & 1) * 4),
        _ => {
            or_bits(
                row_codes,
                i * usize::from(bits),
                u32::from(bits),
                u32::from(code),
            );
        }
    }
}

/// Reads the `bits`-wide code at index `i` of a row (0 past its end).
#[inline(always)]
pub(crate) fn code_at(row_codes: &[u8], i: usize, bits: u8) -> u8 {
    match bits {
        8 => row_codes.get(i).copied().unwrap_or(0),
        4 => (row_codes.get(i >> 1).copied().unwrap_or(0) >> ((i & 1) * 4)) & 0xF,
        _ => get_bits(row_codes, i * usize::from(bits), u32::from(bits)) as u8,
    }
}
