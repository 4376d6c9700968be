//! Idea 1: a randomized Hadamard transform along each row. Random signs `D` (one per
//! column, from a seed), then a normalised Walsh–Hadamard `H` on blocks of at most
//! `max_block` columns (block-diagonal: a row of 576 is split 512 + 64, greedy powers of
//! two). A row `r` becomes `H D r`; the engine would apply the same to the activation
//! vector (`W x = (W D H)(H D x)`, `H` symmetric and orthogonal); the inverse on a row is
//! `D H r'`.

/// A randomized Hadamard transform of rows of `cols` columns.
pub struct Rht {
    signs: Vec<f32>,
    blocks: Vec<usize>,
}

/// xorshift64*: the experiments' only random source (no dependency).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

impl Rht {
    pub fn new(cols: usize, max_block: usize, seed: u64) -> Rht {
        let mut rng = Rng(seed | 1);
        let signs = (0..cols)
            .map(|_| if rng.next_u64() >> 63 == 0 { 1.0 } else { -1.0 })
            .collect();
        let mut blocks = Vec::new();
        let mut rest = cols;
        while rest > 0 {
            let mut b = 1;
            while b * 2 <= rest.min(max_block) {
                b *= 2;
            }
            blocks.push(b);
            rest -= b;
        }
        Rht { signs, blocks }
    }

    /// `r ← H D r`.
    pub fn forward(&self, r: &mut [f32]) {
        for (x, s) in r.iter_mut().zip(&self.signs) {
            *x *= s;
        }
        self.hadamard(r);
    }

    /// `r ← D H r` (the inverse of [`forward`](Self::forward)).
    pub fn inverse(&self, r: &mut [f32]) {
        self.hadamard(r);
        for (x, s) in r.iter_mut().zip(&self.signs) {
            *x *= s;
        }
    }

    /// The block-diagonal normalised Walsh–Hadamard transform, in place.
    pub fn hadamard(&self, r: &mut [f32]) {
        let mut start = 0;
        for &b in &self.blocks {
            fwht(&mut r[start..start + b]);
            start += b;
        }
    }
}

/// In-place fast Walsh–Hadamard transform of a power-of-two length, scaled by `1/√n`.
pub fn fwht(v: &mut [f32]) {
    let n = v.len();
    let mut h = 1;
    while h < n {
        for i in (0..n).step_by(2 * h) {
            for j in i..i + h {
                let (a, b) = (v[j], v[j + h]);
                v[j] = a + b;
                v[j + h] = a - b;
            }
        }
        h *= 2;
    }
    let s = 1.0 / (n as f32).sqrt();
    for x in v {
        *x *= s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_undoes_forward() {
        let t = Rht::new(576, 512, 7);
        let r0: Vec<f32> = (0..576).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut r = r0.clone();
        t.forward(&mut r);
        t.inverse(&mut r);
        for (a, b) in r.iter().zip(&r0) {
            assert!((a - b).abs() < 1e-5);
        }
    }
}
