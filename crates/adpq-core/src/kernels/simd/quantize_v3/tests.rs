//! Format v3's lane encoder against the scalar oracle: code bins, group code packing and
//! the error and refit passes, bit for bit.

use super::*;
use crate::affine::RowUnits;
use crate::kernels::scalar_v3::PassesV3;
use crate::kernels::simd::entry::Kernel;
use crate::kernels::simd::{refit_bits, xorshift, SimdToken};
use crate::params::{FormatVersion, Grid, Params};
use crate::quant::scale_exponent;

/// One group's error and refit sums on one grid, over lanes.
struct Passes<'a> {
    x: &'a [f32],
    grid: AffineGrid,
    fp: FormatParams,
}

impl<S: Lanes> Kernel<S> for Passes<'_> {
    type Out = (f32, RefitSums, [u8; MAX_CHUNKS * 8], [f32; 2]);
    #[inline(always)]
    fn call(self, s: S) -> Self::Out {
        if self.fp.uses_codebook() {
            self.run::<S, true>(s)
        } else {
            self.run::<S, false>(s)
        }
    }
}

impl Passes<'_> {
    #[inline(always)]
    fn run<S: Lanes, const BOOK: bool>(
        self,
        s: S,
    ) -> (f32, RefitSums, [u8; MAX_CHUNKS * 8], [f32; 2]) {
        let (st, _, _) = stage(s, self.x);
        let coder = Coder::<S, BOOK>::new(s, &self.fp);
        let mut p = passes(s, &st, self.x.len(), coder);
        let gl = GridLanes::new(s, &coder, &self.grid);
        let mut codes = [0u8; MAX_CHUNKS * 8];
        let tail = (st.tail_bits != 0).then_some(&st.tail);
        for (c, v) in st.full.iter().chain(tail).enumerate() {
            let c8 = coder.codes(s, s.load_f(v), &gl);
            codes[c * 8..c * 8 + 8].copy_from_slice(&s.narrow_bytes(c8));
        }
        // The same grid through the sweeps of two (and of one).
        let mut two = [0f32; 2];
        p.errors(&[self.grid, self.grid], &mut two);
        (p.error(&self.grid), p.refit_sums(&self.grid), codes, two)
    }
}

/// Random groups and grids at every width: the lane sums and codes equal the
/// oracle's bit for bit (values on and next to the code book's midpoints included).
fn passes_match<T: SimdToken>(t: T) {
    let mut next = xorshift(0x9E37_79B9_7F4A_7C15u64);
    let mut x = [0f32; MAX_CHUNKS * 8];
    for case in 0..3000 {
        let width = 2 + (case % 7) as u8;
        let n = 1 + (next() % 512) as usize;
        let fp = Params::new(width, 64, 0.0, Grid::Asymmetric)
            .unwrap()
            .with_version(FormatVersion::V3)
            .unwrap()
            .format();
        let scale = [1e-3f32, 0.1, 1.0, 37.0][case % 4];
        let e = scale_exponent(scale, &fp);
        let units = RowUnits::for_row(scale, scale / 2.0, 0.0, f32::INFINITY, &fp, e);
        let grid = AffineGrid::new(1 + (next() % 63) as u8, (next() % 64) as u8, &units);
        for v in x.iter_mut().take(n) {
            *v = if next().is_multiple_of(5) {
                // On a midpoint, or a level, of the grid.
                let k = (next() % 15) as usize;
                let u = if next().is_multiple_of(2) {
                    MIDPOINTS[k]
                } else {
                    fp.level(k as u8)
                };
                u * grid.step + grid.min
            } else {
                ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.4) * scale
            };
        }
        let x = &x[..n];
        let mut oracle = PassesV3 { vals: x, fp };
        let want = (oracle.error(&grid), oracle.refit_sums(&grid));
        let got = t.run(Passes { x, grid, fp });
        assert_eq!(got.0.to_bits(), want.0.to_bits(), "case {case}: error");
        for e in got.3 {
            assert_eq!(e.to_bits(), want.0.to_bits(), "case {case}: swept error");
        }
        assert_eq!(
            refit_bits(&got.1),
            refit_bits(&want.1),
            "case {case}: refit sums"
        );
        for (i, &v) in x.iter().enumerate() {
            let c = crate::kernels::scalar_v3::encode(&grid, v, &fp);
            assert_eq!(got.2[i], c, "case {case}: code {i}");
        }
    }
}

/// Codes 8 clamped values at a time through [`Coder::book_code`].
struct BookCodes<'a> {
    u: &'a [f32],
    out: &'a mut [u32],
}

impl<S: Lanes> Kernel<S> for BookCodes<'_> {
    type Out = ();
    #[inline(always)]
    fn call(self, s: S) {
        let coder = Coder::<S, true>::new(s, &Params::V3.format());
        for (u, o) in self.u.chunks_exact(8).zip(self.out.chunks_exact_mut(8)) {
            let c = coder.book_code(s, s.load_f(u.try_into().unwrap()));
            o.copy_from_slice(&s.to_u32s(c));
        }
    }
}

/// Every value within 300 ulps of a midpoint, of a half-integer (a bin's end) or of
/// the ends of `[0, 15]`: its bin's base and compare count the midpoints below it,
/// in scalar arithmetic and in lanes. Elsewhere neither the bin nor the count changes
/// between neighbouring values, so this covers every value of `[0, 15]`.
fn bins_match<T: SimdToken>(t: T) {
    let mut centres: std::vec::Vec<f32> = MIDPOINTS.to_vec();
    centres.extend((0..=15).map(|i| i as f32 + 0.5));
    centres.extend([0.0, 15.0]);
    let mut u = std::vec::Vec::new();
    for c in centres {
        for d in -300i32..=300 {
            let v = f32::from_bits((c.to_bits() as i32 + d).max(0) as u32);
            if (0.0..=15.0).contains(&v) {
                u.push(v);
            }
        }
    }
    while u.len() % 8 != 0 {
        u.push(15.0);
    }
    let mut out = std::vec![0u32; u.len()];
    t.run(BookCodes {
        u: &u,
        out: &mut out,
    });
    for (&v, &got) in u.iter().zip(&out) {
        let want = MIDPOINTS.iter().filter(|&&m| v > m).count() as u32;
        let bin = crate::quant::round_ties_even(v * BELOW_ONE) as usize;
        // As signed bits (bin 0's `mid` is −1, below every `u ≥ +0`).
        let above = v.to_bits() as i32 > BINS.1[bin] as i32;
        let scalar = (BINS.0[bin] + i32::from(above)) as u32;
        assert_eq!(scalar, want, "{v} ({:#x}), bin {bin}", v.to_bits());
        assert_eq!(got, want, "{v} ({:#x}) in lanes", v.to_bits());
    }
}

/// Packs groups' codes through [`pack_group_codes`] into a row.
struct Pack<'a> {
    row: &'a mut [u8],
    codes: &'a [u8],
    g: usize,
    bits: u8,
}

impl<S: Lanes> Kernel<S> for Pack<'_> {
    type Out = ();
    #[inline(always)]
    fn call(self, s: S) {
        for (k, group) in self.codes.chunks(self.g).enumerate() {
            pack_group_codes(s, self.row, k * self.g, group, self.bits);
        }
    }
}

/// Every width, group size and row length: the row's bytes are `put_code`'s.
fn packing_matches<T: SimdToken>(t: T) {
    let mut next = xorshift(0x5851_F42D_4C95_7F2D);
    for bits in 2..=8u8 {
        for g in [1usize, 2, 4, 8, 16, 64, 512] {
            for cols in [1usize, 7, 8, 9, 64, 70, 576, 1000] {
                let codes: std::vec::Vec<u8> = (0..cols)
                    .map(|_| (next() >> 32) as u8 & ((1u16 << bits) - 1) as u8)
                    .collect();
                let len = (cols * usize::from(bits)).div_ceil(8);
                let mut want = std::vec![0u8; len];
                for (i, &c) in codes.iter().enumerate() {
                    put_code(&mut want, i, bits, c);
                }
                let mut got = std::vec![0u8; len];
                t.run(Pack {
                    row: &mut got,
                    codes: &codes,
                    g,
                    bits,
                });
                assert_eq!(got, want, "bits {bits}, group {g}, cols {cols}");
            }
        }
    }
}

#[test]
fn group_codes_pack_as_put_code_does() {
    crate::kernels::simd::on_native_lanes!(packing_matches);
}

#[test]
fn bins_count_the_midpoints() {
    crate::kernels::simd::on_native_lanes!(bins_match);
}

#[test]
fn lane_passes_equal_the_oracle_bit_for_bit() {
    crate::kernels::simd::on_native_lanes!(passes_match);
}
