//! Input weights: f32, f16 or bf16 slices. All math happens in f32.

use half::{bf16, f16};

/// Bit pattern of `|w|` at or above which a weight is rejected as non-finite.
pub const NON_FINITE_BITS: u32 = 0x7F80_0000;
/// Bit pattern of 2^124: finite weights at or above it are rejected as out of range
/// (the per-tensor scale exponent could not represent their steps).
pub const OUT_OF_RANGE_BITS: u32 = (124 + 127) << 23;

pub(crate) mod sealed {
    use super::Weights;

    /// Seals [`Element`](super::Element), and holds what only the crate uses.
    pub trait Sealed: Sized {
        /// The slice as [`Weights`].
        fn weights(src: &[Self]) -> Weights<'_>;
    }
    impl Sealed for f32 {
        #[inline(always)]
        fn weights(src: &[Self]) -> Weights<'_> {
            Weights::F32(src)
        }
    }
    impl Sealed for half::f16 {
        #[inline(always)]
        fn weights(src: &[Self]) -> Weights<'_> {
            Weights::F16(src)
        }
    }
    impl Sealed for half::bf16 {
        #[inline(always)]
        fn weights(src: &[Self]) -> Weights<'_> {
            Weights::Bf16(src)
        }
    }
}

/// A weight element type the core reads. Sealed: f32, f16 and bf16.
pub trait Element: Copy + Send + Sync + 'static + sealed::Sealed {
    /// Value as f32 (exact for all three types).
    fn to_f32(self) -> f32;
    /// `src` as f32 into `dst` (of the same length), the same values as
    /// [`to_f32`](Self::to_f32) in a loop the compiler vectorizes.
    fn to_f32_slice(src: &[Self], dst: &mut [f32]);
    /// Bit pattern of `|self|` as an f32. Non-negative floats order like these integers.
    #[inline(always)]
    fn abs_bits(self) -> u32 {
        self.to_f32().to_bits() & 0x7FFF_FFFF
    }
}

impl Element for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn to_f32_slice(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
}
impl Element for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn to_f32_slice(src: &[Self], dst: &mut [f32]) {
        f16_to_f32_slice(src, dst);
    }
}
impl Element for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn to_f32_slice(src: &[Self], dst: &mut [f32]) {
        bf16_to_f32_slice(src, dst);
    }
    #[inline(always)]
    fn abs_bits(self) -> u32 {
        (u32::from(self.to_bits()) << 16) & 0x7FFF_FFFF
    }
}

/// A borrowed slice of weights, row-major.
#[derive(Debug, Clone, Copy)]
pub enum Weights<'a> {
    /// 32-bit floats.
    F32(&'a [f32]),
    /// IEEE half floats.
    F16(&'a [f16]),
    /// bfloat16.
    Bf16(&'a [bf16]),
}

impl<'a> Weights<'a> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Weights::F32(s) => s.len(),
            Weights::F16(s) => s.len(),
            Weights::Bf16(s) => s.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sub-slice `start..end`, or `None` when out of bounds.
    pub fn get(&self, start: usize, end: usize) -> Option<Weights<'a>> {
        Some(match self {
            Weights::F32(s) => Weights::F32(s.get(start..end)?),
            Weights::F16(s) => Weights::F16(s.get(start..end)?),
            Weights::Bf16(s) => Weights::Bf16(s.get(start..end)?),
        })
    }

    /// Element `i` as f32, or `None` when out of bounds.
    pub fn value(&self, i: usize) -> Option<f32> {
        match self {
            Weights::F32(s) => s.get(i).map(|v| v.to_f32()),
            Weights::F16(s) => s.get(i).map(|v| v.to_f32()),
            Weights::Bf16(s) => s.get(i).map(|v| v.to_f32()),
        }
    }

    /// The weights as f32 into `out` (`out.len() == self.len()`), exactly as
    /// [`Element::to_f32`] converts each, in loops the compiler vectorizes: inlined into a
    /// SIMD kernel's `#[target_feature]` function they run in its lanes.
    ///
    /// # Panics
    /// When `out.len() != self.len()`.
    #[inline(always)]
    pub fn to_f32_slice(&self, out: &mut [f32]) {
        assert_eq!(out.len(), self.len(), "f32 output of another length");
        match self {
            Weights::F32(s) => f32::to_f32_slice(s, out),
            Weights::F16(s) => f16::to_f32_slice(s, out),
            Weights::Bf16(s) => bf16::to_f32_slice(s, out),
        }
    }

    /// Size of one element in bytes.
    pub fn element_bytes(&self) -> usize {
        match self {
            Weights::F32(_) => 4,
            Weights::F16(_) | Weights::Bf16(_) => 2,
        }
    }
}

/// Converts bf16 values to f32 exactly as `half`'s conversion does (a NaN gets its quiet
/// bit), written as one branch-free loop that the compiler vectorizes: inlined into a
/// SIMD kernel's `#[target_feature]` function it runs 8 or 16 lanes at a time (`half`'s
/// slice conversion goes one element at a time).
#[inline(always)]
pub fn bf16_to_f32_slice(src: &[bf16], dst: &mut [f32]) {
    for (o, v) in dst.iter_mut().zip(src) {
        let b = v.to_bits();
        let quiet = if b & 0x7FFF > 0x7F80 { 0x0040 } else { 0 };
        *o = f32::from_bits(u32::from(b | quiet) << 16);
    }
}

/// Converts f16 values to f32 exactly as `half`'s conversion does (a NaN gets its quiet
/// bit), as one branch-free loop that the compiler vectorizes (`half`'s slice conversion
/// calls an F16C function out of line per 8 values, or converts one at a time).
#[inline(always)]
pub(crate) fn f16_to_f32_slice(src: &[f16], dst: &mut [f32]) {
    for (o, v) in dst.iter_mut().zip(src) {
        *o = f16_bits_to_f32(v.to_bits());
    }
}

/// `f16::from_bits(h).to_f32()` in a few branch-free instructions (`to_f32` makes a call
/// and a runtime choice of F16C per value). No float operand or result is subnormal, so a
/// host that flushes subnormals to zero (a C program built with `-ffast-math`) gets the
/// same bits.
#[inline(always)]
pub(crate) fn f16_bits_to_f32(h: u16) -> f32 {
    /// `2^-14`, the least f16 normal.
    const LEAST_NORMAL: f32 = f32::from_bits((127 - 14) << 23);
    let h = u32::from(h);
    let magnitude = h & 0x7FFF;
    // A normal: the same mantissa, the exponent rebiased (15 → 127) by an integer add. A
    // subnormal (or zero) `m·2^-24`: read as the normal `2^-14 + m·2^-24` (one more
    // exponent step), less `2^-14`, exact (Sterbenz).
    let subnormal = magnitude < 0x0400;
    let rebias = if subnormal { 113 << 23 } else { 112 << 23 };
    let less = if subnormal { LEAST_NORMAL } else { 0.0 };
    let finite = (f32::from_bits((magnitude << 13) + rebias) - less).to_bits();
    // Infinities and NaNs: every exponent bit set, a NaN's quiet bit too.
    let quiet = if magnitude > 0x7C00 { 0x0040_0000 } else { 0 };
    let special = 0x7F80_0000 | (magnitude << 13) | quiet;
    let bits = if magnitude >= 0x7C00 { special } else { finite };
    f32::from_bits(bits | (h & 0x8000) << 16)
}

impl<'a> From<&'a [f32]> for Weights<'a> {
    fn from(s: &'a [f32]) -> Self {
        Weights::F32(s)
    }
}
impl<'a> From<&'a [f16]> for Weights<'a> {
    fn from(s: &'a [f16]) -> Self {
        Weights::F16(s)
    }
}
impl<'a> From<&'a [bf16]> for Weights<'a> {
    fn from(s: &'a [bf16]) -> Self {
        Weights::Bf16(s)
    }
}

/// Calls `$body` with `$s` bound to the typed slice inside a [`Weights`].
#[macro_export]
#[doc(hidden)]
macro_rules! with_weights {
    ($w:expr, $s:ident => $body:expr) => {
        match $w {
            $crate::Weights::F32($s) => $body,
            $crate::Weights::F16($s) => $body,
            $crate::Weights::Bf16($s) => $body,
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every bf16 bit pattern, NaNs included, converts to `half`'s f32 bits.
    #[test]
    fn bf16_slice_conversion_is_halfs() {
        let src: [bf16; 65536] = core::array::from_fn(|i| bf16::from_bits(i as u16));
        let mut got = [0f32; 65536];
        bf16_to_f32_slice(&src, &mut got);
        for (v, g) in src.iter().zip(&got) {
            assert_eq!(g.to_bits(), v.to_f32().to_bits(), "{:#06x}", v.to_bits());
        }
    }

    /// Every f16 bit pattern, subnormals and NaNs included, converts to `half`'s f32 bits.
    #[test]
    fn f16_slice_conversion_is_halfs() {
        let src: [f16; 65536] = core::array::from_fn(|i| f16::from_bits(i as u16));
        let mut got = [0f32; 65536];
        f16_to_f32_slice(&src, &mut got);
        for (v, g) in src.iter().zip(&got) {
            assert_eq!(g.to_bits(), v.to_f32().to_bits(), "{:#06x}", v.to_bits());
        }
    }
}
