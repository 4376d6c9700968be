//! The codes of a row as byte lanes of levels, 32 (or 64) codes at a time: what the
//! int8-activation dots of formats v2 and v3 multiply the activations by, exactly
//! (`maddubs`-style). 4-bit codes are nibbles (v3: looked up in the code book with a
//! byte shuffle); 5- to 7-bit codes are unpacked with a byte shuffle, a u16 multiply and
//! a shift; 8-bit codes, too large for a byte product, are summed as their two nibbles.
//! The repacked copy ([`Repacked`](crate::kernels::Repacked)) lays 5-bit codes out in
//! planes ([`FivePlanes`]) and 7-bit codes a byte each ([`SevenAsBytes`]).

use super::{arrays, Lanes};
use crate::params::CODEBOOK_4BIT;

/// How the 32 codes of a chunk of a row (whole bytes, since 32 codes of any width are)
/// become 32 bytes of levels in lanes, each at most 127.
pub(super) trait CodeChunks<S: Lanes>: Copy {
    /// Bits per code.
    const BITS: usize;
    /// Bytes of 32 codes.
    const BYTES: usize = 4 * Self::BITS;
    /// The levels of the 32 codes `chunk` (of [`BYTES`](Self::BYTES) bytes).
    fn levels(self, s: S, chunk: &[u8]) -> S::B;
    /// The level of one code (for the columns past the last whole chunk).
    fn level(c: u8) -> i32;
    /// `Σ L[c]·q` of each row over the whole chunks of a group (`codes[n]`: row `n`'s
    /// codes of them, `qs`: their activations), in the i32 lanes of `sums[n]`.
    #[inline(always)]
    fn group_sums<const N: usize>(self, s: S, qs: &[i8], codes: [&[u8]; N], sums: &mut [S::U; N]) {
        self.chunk_sums(s, qs, codes, sums)
    }
    /// [`group_sums`](Self::group_sums) 32 codes at a time through
    /// [`levels`](Self::levels) (what widths that pair their chunks fall back to when a
    /// group's chunks do not pair).
    #[inline(always)]
    fn chunk_sums<const N: usize>(self, s: S, qs: &[i8], codes: [&[u8]; N], sums: &mut [S::U; N]) {
        for (k, qc) in arrays::<i8, 32>(qs).0.enumerate() {
            let q = s.load_q(qc);
            for (sum, codes) in sums.iter_mut().zip(codes) {
                let chunk = &codes[k * Self::BYTES..(k + 1) * Self::BYTES];
                *sum = s.dot_bytes_i8(self.levels(s, chunk), q, *sum);
            }
        }
    }
}

/// 4-bit codes (two to a byte, low nibble first): with `BOOK` each looked up in format
/// v3's code book, else its own level (format v2's raw codes).
#[derive(Clone, Copy)]
pub(super) struct FourBit<S: Lanes, const BOOK: bool> {
    /// The code book's levels in both halves (unused without `BOOK`).
    table: S::B,
}

/// Format v3's 4-bit codes.
pub(super) type CodeBook<S> = FourBit<S, true>;

impl<S: Lanes, const BOOK: bool> FourBit<S, BOOK> {
    #[inline(always)]
    pub(super) fn new(s: S) -> Self {
        FourBit {
            table: s.load_b2(&CODEBOOK_4BIT, &CODEBOOK_4BIT),
        }
    }

    /// The levels of codes in byte lanes.
    #[inline(always)]
    fn look_up(self, s: S, codes: S::B) -> S::B {
        if BOOK {
            s.shuffle_b(self.table, codes)
        } else {
            codes
        }
    }
}

impl<S: Lanes, const BOOK: bool> CodeChunks<S> for FourBit<S, BOOK> {
    const BITS: usize = 4;
    #[inline(always)]
    fn levels(self, s: S, chunk: &[u8]) -> S::B {
        let codes: &[u8; 16] = chunk.try_into().expect("16 bytes");
        self.look_up(s, s.nibbles32(codes))
    }
    #[inline(always)]
    fn level(c: u8) -> i32 {
        if BOOK {
            i32::from(CODEBOOK_4BIT[usize::from(c & 15)])
        } else {
            i32::from(c & 15)
        }
    }
    #[inline(always)]
    fn group_sums<const N: usize>(self, s: S, qs: &[i8], codes: [&[u8]; N], sums: &mut [S::U; N]) {
        self.paired_sums(s, qs, codes, sums)
    }
}

impl<S: Lanes, const BOOK: bool> PairedChunks<S> for FourBit<S, BOOK> {
    /// The even and the odd codes of 32 bytes as they lie (two `and`s and a shift).
    #[inline(always)]
    fn pair_levels(self, s: S, pair: &[u8]) -> (S::B, S::B) {
        let (even, odd) = s.nibbles64(pair.try_into().expect("32 bytes"));
        (self.look_up(s, even), self.look_up(s, odd))
    }
}

/// Widths whose group sums take 64 codes at a time where a group's chunks pair up: the
/// levels of the even and of the odd codes as they lie (no interleave), against the
/// activations de-interleaved once for all the rows.
pub(super) trait PairedChunks<S: Lanes>: CodeChunks<S> {
    /// The levels of the even and of the odd codes of 64 (`2 · BYTES` bytes).
    fn pair_levels(self, s: S, pair: &[u8]) -> (S::B, S::B);
    /// [`group_sums`](CodeChunks::group_sums) a pair at a time, or a chunk at a time
    /// ([`chunk_sums`](CodeChunks::chunk_sums)) where a group's chunks do not pair. The
    /// sum is exact, so its order does not matter.
    #[inline(always)]
    fn paired_sums<const N: usize>(self, s: S, qs: &[i8], codes: [&[u8]; N], sums: &mut [S::U; N]) {
        let (pairs, rest) = arrays::<i8, 64>(qs);
        if !rest.is_empty() {
            return self.chunk_sums(s, qs, codes, sums);
        }
        let pair_bytes = 2 * Self::BYTES;
        for (k, q64) in pairs.enumerate() {
            let (q_even, q_odd) = s.deinterleave_q(q64);
            for (sum, codes) in sums.iter_mut().zip(codes) {
                let pair = &codes[k * pair_bytes..(k + 1) * pair_bytes];
                let (even, odd) = self.pair_levels(s, pair);
                *sum = s.dot_bytes_i8(odd, q_odd, s.dot_bytes_i8(even, q_even, *sum));
            }
        }
    }
}

/// 5-bit codes as [`Repacked`](crate::kernels::Repacked) lays them out: per 32 codes
/// their low 4 bits as 4-bit codes (16 bytes packed as in a row) and their top bits as
/// one little-endian u32 (bit `j`: code `j`); where a group pairs its chunks, per 64
/// codes the low 4 bits (32 bytes) then the top bits of the even codes and of the odd
/// codes (a u32 each), for the products with de-interleaved activations that the code
/// book's chunks use. The same 5 bits per code as a packed row, unpacked with fewer
/// operations than [`Uniform`]'s byte shuffles and multiplies.
#[derive(Clone, Copy)]
pub(super) struct FivePlanes;

impl FivePlanes {
    /// The levels of the codes whose low 4 bits are `low` (byte lanes) and top bits
    /// `top`.
    #[inline(always)]
    fn join<S: Lanes>(s: S, low: S::B, top: &[u8]) -> S::B {
        let top = u32::from_le_bytes(top.try_into().expect("4 bytes"));
        s.or_b(low, s.bit_bytes(top, 16))
    }
}

impl<S: Lanes> CodeChunks<S> for FivePlanes {
    const BITS: usize = 5;
    #[inline(always)]
    fn levels(self, s: S, chunk: &[u8]) -> S::B {
        let low: &[u8; 16] = chunk[..16].try_into().expect("16 bytes");
        Self::join(s, s.nibbles32(low), &chunk[16..20])
    }
    #[inline(always)]
    fn level(c: u8) -> i32 {
        i32::from(c)
    }
    #[inline(always)]
    fn group_sums<const N: usize>(self, s: S, qs: &[i8], codes: [&[u8]; N], sums: &mut [S::U; N]) {
        self.paired_sums(s, qs, codes, sums)
    }
}

impl<S: Lanes> PairedChunks<S> for FivePlanes {
    /// The low 4 bits of 64 codes as the code book's, then the even and the odd codes'
    /// top bits.
    #[inline(always)]
    fn pair_levels(self, s: S, pair: &[u8]) -> (S::B, S::B) {
        let (even, odd) = s.nibbles64(pair[..32].try_into().expect("32 bytes"));
        (
            Self::join(s, even, &pair[32..36]),
            Self::join(s, odd, &pair[36..40]),
        )
    }
}

/// 7-bit codes a byte each, as [`Repacked`](crate::kernels::Repacked) stores them:
/// their levels as they lie (at most 127, so one byte product).
#[derive(Clone, Copy)]
pub(super) struct SevenAsBytes;

impl<S: Lanes> CodeChunks<S> for SevenAsBytes {
    const BITS: usize = 8;
    #[inline(always)]
    fn levels(self, s: S, chunk: &[u8]) -> S::B {
        s.load_b(chunk.try_into().expect("32 bytes"))
    }
    #[inline(always)]
    fn level(c: u8) -> i32 {
        i32::from(c)
    }
}

/// 8-bit codes, their own levels up to 255: too large for one `maddubs`-style product
/// (two products of 255·128 overflow its i16 pair sums), so each code is split into its
/// nibbles as they lie and `Σ c·q = 16·Σ hi·q + Σ lo·q`, exact in i32.
#[derive(Clone, Copy)]
pub(super) struct EightBit;

impl<S: Lanes> CodeChunks<S> for EightBit {
    const BITS: usize = 8;
    /// Not used: [`group_sums`](CodeChunks::group_sums) splits the codes itself, since
    /// 8-bit levels do not fit a byte product.
    #[inline(always)]
    fn levels(self, _: S, _: &[u8]) -> S::B {
        unreachable!("8-bit codes are summed by nibbles")
    }
    #[inline(always)]
    fn level(c: u8) -> i32 {
        i32::from(c)
    }
    #[inline(always)]
    fn group_sums<const N: usize>(self, s: S, qs: &[i8], codes: [&[u8]; N], sums: &mut [S::U; N]) {
        let mut high = [s.splat_u(0); N];
        for (k, qc) in arrays::<i8, 32>(qs).0.enumerate() {
            let q = s.load_q(qc);
            for ((sum, high), codes) in sums.iter_mut().zip(&mut high).zip(codes) {
                let chunk: &[u8; 32] = codes[k * 32..(k + 1) * 32].try_into().expect("32 bytes");
                let (lo, hi) = s.nibbles64(chunk);
                *sum = s.dot_bytes_i8(lo, q, *sum);
                *high = s.dot_bytes_i8(hi, q, *high);
            }
        }
        for (sum, high) in sums.iter_mut().zip(high) {
            // `16·Σ hi·q` by four doublings; exact: a group's sum is below
            // 512·255·128 < 2^24 in magnitude.
            let mut h = high;
            for _ in 0..4 {
                h = s.add_i(h, h);
            }
            *sum = s.add_i(*sum, h);
        }
    }
}

/// `$body` with `$chunks` bound to format v3's byte-lane codes of `$bits` bits (4: the
/// code book; 5 to 7: [`Uniform`]; 8: [`EightBit`]) for the lanes `$s`, or `$other` for
/// the widths without them (2 and 3 bits): the one choice of unpacker for every v3 int8
/// gemv.
macro_rules! with_v3_code_chunks {
    ($s:expr, $bits:expr, $chunks:ident => $body:expr, _ => $other:expr) => {{
        use $crate::kernels::simd::code_chunks::{CodeBook, EightBit, Uniform};
        match $bits {
            4 => {
                let $chunks = CodeBook::new($s);
                $body
            }
            5 => {
                let $chunks = Uniform::<_, 5>::new($s);
                $body
            }
            6 => {
                let $chunks = Uniform::<_, 6>::new($s);
                $body
            }
            7 => {
                let $chunks = Uniform::<_, 7>::new($s);
                $body
            }
            8 => {
                let $chunks = EightBit;
                $body
            }
            _ => $other,
        }
    }};
}
pub(super) use with_v3_code_chunks;

/// `B`-bit codes (`5 <= B <= 7`: 32 codes are 20 to 28 bytes, and at most 127), which are
/// their own levels, unpacked in u16 lanes.
///
/// Codes `0..16` are bytes `0..2B` of the chunk's `4B`, codes `16..32` the next `2B`:
/// one 16-byte half each, the first loaded from the chunk's start, the second ending at
/// its end (so nothing past the chunk is read). Each half's even codes go to one
/// register and its odd codes to another, code `c` as the two bytes holding its bits (a
/// byte shuffle); a multiply by `2^(16 − B − o)` (`o`: the code's bit offset in the
/// pair) moves its top bit to bit 15, a shift right by `16 − B` brings it down alone, and
/// the odd codes shifted into the high bytes join the even ones.
#[derive(Clone, Copy)]
pub(super) struct Uniform<S: Lanes, const B: usize> {
    /// The byte shuffle and u16 multipliers of the even codes, then of the odd codes.
    even: (S::B, S::B),
    odd: (S::B, S::B),
}

impl<S: Lanes, const B: usize> Uniform<S, B> {
    #[inline(always)]
    pub(super) fn new(s: S) -> Self {
        let [even_shuffle, even_mul, odd_shuffle, odd_mul] = &UNPACK[B];
        Uniform {
            even: (s.load_b(even_shuffle), s.load_b(even_mul)),
            odd: (s.load_b(odd_shuffle), s.load_b(odd_mul)),
        }
    }
}

impl<S: Lanes, const B: usize> CodeChunks<S> for Uniform<S, B> {
    const BITS: usize = B;
    #[inline(always)]
    fn levels(self, s: S, chunk: &[u8]) -> S::B {
        let lo: &[u8; 16] = chunk[..16].try_into().expect("16 bytes");
        let hi: &[u8; 16] = chunk[Self::BYTES - 16..].try_into().expect("16 bytes");
        let v = s.load_b2(lo, hi);
        let unpack = |(shuffle, mul): (S::B, S::B)| {
            s.shr_u16(s.mul_lo_u16(s.shuffle_b(v, shuffle), mul), 16 - B as u32)
        };
        s.or_b(unpack(self.even), s.shl_u16(unpack(self.odd), 8))
    }
    #[inline(always)]
    fn level(c: u8) -> i32 {
        i32::from(c)
    }
}

/// Per code width `B` (the index, 4 to 7 used), what [`Uniform`] unpacks 32 codes with:
/// the byte shuffle and the u16 multipliers of the even codes, then of the odd codes.
/// The second half's bytes sit at `16 − 2B` in its register (loaded to end at the
/// chunk's end).
const UNPACK: [[[u8; 32]; 4]; 8] = {
    let mut t = [[[0x80u8; 32]; 4]; 8];
    let mut bits = 4;
    while bits < 8 {
        let mut c = 0;
        while c < 32 {
            // Code `c % 16` of half `c / 16`, in u16 lane `c % 16 / 2` of that half.
            let (half, i) = (c / 16, c % 16);
            let byte = i * bits / 8 + half * (16 - 2 * bits);
            let off = i * bits % 8;
            let at = half * 16 + i / 2 * 2;
            let parity = 2 * (c % 2);
            t[bits][parity][at] = byte as u8;
            if off + bits > 8 {
                t[bits][parity][at + 1] = byte as u8 + 1;
            }
            let m = (1u16 << (16 - bits - off)).to_le_bytes();
            t[bits][parity + 1][at] = m[0];
            t[bits][parity + 1][at + 1] = m[1];
            c += 1;
        }
        bits += 1;
    }
    t
};
