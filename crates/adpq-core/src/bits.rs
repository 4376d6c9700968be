//! LSB-first bit streams: codes within a row and outlier positions across a tensor.

/// Reads `n` (≤ 16) bits at bit offset `off` of `data`, LSB first. Bits past the end read
/// as zero, so a validated buffer can never make this go out of bounds.
#[inline(always)]
pub fn get_bits(data: &[u8], off: usize, n: u32) -> u32 {
    let byte = off >> 3;
    let shift = (off & 7) as u32;
    let b0 = u32::from(data.get(byte).copied().unwrap_or(0));
    let b1 = u32::from(data.get(byte + 1).copied().unwrap_or(0));
    let b2 = u32::from(data.get(byte + 2).copied().unwrap_or(0));
    let word = b0 | (b1 << 8) | (b2 << 16);
    (word >> shift) & ((1u32 << n) - 1)
}

/// ORs the low `n` (≤ 16) bits of `v` in at bit offset `off`. The target bits must be
/// zero. Returns false (writing nothing) when the value would not fit in `data`.
#[inline(always)]
pub fn or_bits(data: &mut [u8], off: usize, n: u32, v: u32) -> bool {
    let end = off + n as usize;
    if end > data.len() * 8 {
        return false;
    }
    let byte = off >> 3;
    let shift = (off & 7) as u32;
    let word = (v & ((1u32 << n) - 1)) << shift;
    let mut i = 0;
    let mut w = word;
    while w != 0 {
        data[byte + i] |= w as u8;
        w >>= 8;
        i += 1;
    }
    true
}

/// Appends fixed-width values to a bit stream that starts at a given bit.
#[derive(Debug)]
pub struct BitWriter<'a> {
    data: &'a mut [u8],
    bit: usize,
    width: u32,
    written: u64,
}

impl<'a> BitWriter<'a> {
    /// A writer of `width`-bit values into `data` from bit 0. `data` is zeroed first.
    pub fn new(data: &'a mut [u8], width: u32) -> Self {
        data.fill(0);
        BitWriter {
            data,
            bit: 0,
            width,
            written: 0,
        }
    }

    /// Appends one value; false when the stream is full.
    #[inline]
    pub fn push(&mut self, v: u32) -> bool {
        if or_bits(self.data, self.bit, self.width, v) {
            self.bit += self.width as usize;
            self.written += 1;
            true
        } else {
            false
        }
    }

    /// Values written so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}

/// Copies `count` values of `width` bits from the start of `src` into `dst` at value index
/// `dst_index`, a byte at a time (a parallel writer concatenates its blocks' position
/// streams with this). Returns false if either side is too short. The target bits must
/// be zero.
pub fn copy_values(src: &[u8], count: usize, width: u32, dst: &mut [u8], dst_index: usize) -> bool {
    let nbits = count as u64 * u64::from(width);
    let start = dst_index as u64 * u64::from(width);
    if nbits == 0 {
        return true;
    }
    let nbytes = nbits.div_ceil(8) as usize;
    if nbytes > src.len() || start + nbits > dst.len() as u64 * 8 {
        return false;
    }
    let byte0 = (start / 8) as usize;
    let shift = (start % 8) as u32;
    let tail_bits = (nbits % 8) as u32;
    for (i, &s) in src[..nbytes].iter().enumerate() {
        // Bits of the last source byte past the copied values are not ours to copy.
        let s = if i + 1 == nbytes && tail_bits != 0 {
            s & ((1u8 << tail_bits) - 1)
        } else {
            s
        };
        let v = u16::from(s) << shift;
        dst[byte0 + i] |= v as u8;
        let hi = (v >> 8) as u8;
        if hi != 0 {
            // Nonzero high bits lie inside the copied range, so inside `dst`.
            dst[byte0 + i + 1] |= hi;
        }
    }
    true
}

/// Bytes needed for `count` values of `width` bits.
pub fn stream_bytes(count: u64, width: u32) -> u64 {
    (count * u64::from(width)).div_ceil(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `copy_values` equals appending the values one by one, for every width and offset.
    #[test]
    fn copy_values_matches_value_by_value() {
        for width in 1u32..=10 {
            for (first, second) in [(0usize, 5usize), (3, 9), (7, 1), (13, 0), (1, 17)] {
                let cap = ((first + second) * width as usize).div_ceil(8);
                let mut expected = [0u8; 32];
                let mut got = [0u8; 32];
                let mut src = [0u8; 32];
                let value = |i: usize| ((i * 2654435761) >> 3) as u32 & ((1 << width) - 1);
                for i in 0..first + second {
                    assert!(or_bits(
                        &mut expected[..cap],
                        i * width as usize,
                        width,
                        value(i)
                    ));
                }
                for (start, count) in [(0, first), (first, second)] {
                    let mut w = BitWriter::new(&mut src, width);
                    for i in start..start + count {
                        assert!(w.push(value(i)));
                    }
                    assert!(copy_values(&src, count, width, &mut got[..cap], start));
                }
                assert_eq!(
                    expected[..cap],
                    got[..cap],
                    "width {width}, split {first}+{second}"
                );
            }
        }
        assert!(!copy_values(&[0xFF; 4], 40, 1, &mut [0u8; 4], 1));
    }
}
