//! Idea 2: non-uniform 4-bit code books with a scale and an offset per group,
//! `ŵ = m + d · L[c]`, the 16 levels `L` spread over `[0, 15]` (so v2's records, range
//! search and refit apply unchanged: the search's candidate `(d, m)` span the same
//! range, and the refit fits `w ≈ d·L[c] + m`). Decode is a 16-entry table lookup.

use crate::rotate::Rng;

/// A code book: 16 increasing levels with `L[0] = 0`, `L[15] = 15`.
#[derive(Clone, Debug)]
pub struct Levels(pub [f32; 16]);

impl Levels {
    /// Levels `v` (increasing) mapped affinely onto `[0, 15]`.
    fn spread(v: [f64; 16]) -> Levels {
        let (lo, hi) = (v[0], v[15]);
        Levels(v.map(|x| ((x - lo) / (hi - lo) * 15.0) as f32))
    }

    /// Lloyd–Max levels of the standard normal (Max 1960), the full unbounded optimum.
    pub fn lloyd_max_gaussian() -> Levels {
        let h = [
            0.1284, 0.3881, 0.6568, 0.9424, 1.2562, 1.6181, 2.0690, 2.7326,
        ];
        Levels::spread(std::array::from_fn(|i| {
            if i < 8 {
                -h[7 - i]
            } else {
                h[i - 8]
            }
        }))
    }

    /// NF4 (QLoRA): quantiles of the normal, with an exact zero.
    pub fn nf4() -> Levels {
        Levels::spread([
            -1.0, -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0.0, 0.0796, 0.1609,
            0.2461, 0.3379, 0.4407, 0.5626, 0.7230, 1.0,
        ])
    }

    /// llama.cpp's IQ4_NL table.
    pub fn iq4_nl() -> Levels {
        Levels::spread(
            [
                -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
            ]
            .map(f64::from),
        )
    }

    /// Lloyd's algorithm on what a group's grid sees when the weights are Gaussian (as
    /// rotated weights nearly are): groups of `g` normals mapped onto `[0, 15]` by their own
    /// min and max. The end levels stay at 0 and 15 (each group's extremes); the 14 inner
    /// levels move to the centroids of their cells. Data-free (synthetic samples).
    pub fn lloyd_groups(g: usize) -> Levels {
        let mut rng = Rng(0x5eed_0f11);
        let mut xs = Vec::with_capacity(4000 * g);
        for _ in 0..4000 {
            let v: Vec<f64> = (0..g).map(|_| rng.normal()).collect();
            let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            xs.extend(v.iter().map(|x| (x - lo) / (hi - lo) * 15.0));
        }
        let mut l: [f64; 16] = std::array::from_fn(|i| i as f64);
        for _ in 0..100 {
            let mut sum = [0f64; 16];
            let mut n = [0f64; 16];
            for &x in &xs {
                let i = nearest64(&l, x);
                sum[i] += x;
                n[i] += 1.0;
            }
            for i in 1..15 {
                if n[i] > 0.0 {
                    l[i] = sum[i] / n[i];
                }
            }
        }
        Levels(l.map(|x| x as f32))
    }

    /// The index of the level nearest `u` (ties: the lower).
    #[inline]
    pub fn nearest(&self, u: f32) -> usize {
        // Binary search over the 15 cell boundaries (the same answer as a linear scan).
        let l = &self.0;
        let mut i = 0;
        for step in [8, 4, 2, 1] {
            let j = i + step - 1;
            if u > 0.5 * (l[j] + l[j + 1]) {
                i += step;
            }
        }
        i
    }
}

fn nearest64(l: &[f64; 16], x: f64) -> usize {
    let mut i = 0;
    while i < 15 && x > 0.5 * (l[i] + l[i + 1]) {
        i += 1;
    }
    i
}
