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

    /// Bits written so far.
    pub fn bit_len(&self) -> usize {
        self.bit
    }
}

/// Copies `count` values of `width` bits from the start of `src` into `dst` at value index
/// `dst_index`. Returns false if either side is too short. The target bits must be zero.
pub fn copy_values(src: &[u8], count: usize, width: u32, dst: &mut [u8], dst_index: usize) -> bool {
    let w = width as usize;
    if count * w > src.len() * 8 || (dst_index + count) * w > dst.len() * 8 {
        return false;
    }
    for i in 0..count {
        let v = get_bits(src, i * w, width);
        or_bits(dst, (dst_index + i) * w, width, v);
    }
    true
}

/// Bytes needed for `count` values of `width` bits.
pub fn stream_bytes(count: u64, width: u32) -> u64 {
    (count * u64::from(width)).div_ceil(8)
}
