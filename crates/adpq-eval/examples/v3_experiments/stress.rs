//! Stress matrices from our own generators (xorshift, no dependency): Gaussian, one hot
//! input channel (a column 40× larger), four hot columns (20×), one hot output row (40×),
//! Student-t with 3 and 2 degrees of freedom.

use crate::rotate::Rng;

pub const ROWS: usize = 256;
pub const COLS: usize = 1536;

/// The stress matrices by name, `ROWS × COLS`.
pub fn matrices() -> Vec<(&'static str, Vec<f32>)> {
    let gauss = |seed: u64| {
        let mut r = Rng(seed);
        (0..ROWS * COLS)
            .map(|_| (0.02 * r.normal()) as f32)
            .collect::<Vec<f32>>()
    };
    let student = |seed: u64, nu: usize| {
        let mut r = Rng(seed);
        (0..ROWS * COLS)
            .map(|_| {
                let chi2: f64 = (0..nu).map(|_| r.normal().powi(2)).sum();
                (0.02 * r.normal() / (chi2 / nu as f64).sqrt()) as f32
            })
            .collect::<Vec<f32>>()
    };
    let mut hot_col = gauss(11);
    for r in 0..ROWS {
        hot_col[r * COLS + 17] *= 40.0;
    }
    let mut hot_cols = gauss(12);
    for r in 0..ROWS {
        for c in [3, 200, 801, 1400] {
            hot_cols[r * COLS + c] *= 20.0;
        }
    }
    let mut hot_row = gauss(13);
    for x in &mut hot_row[5 * COLS..6 * COLS] {
        *x *= 40.0;
    }
    vec![
        ("gauss", gauss(10)),
        ("hot-col×40", hot_col),
        ("4 hot-cols×20", hot_cols),
        ("hot-row×40", hot_row),
        ("student-t3", student(14, 3)),
        ("student-t2", student(15, 2)),
    ]
}

/// `Σ(w − ŵ)² / Σw²`.
pub fn rel_mse(w: &[f32], q: &[f32]) -> f64 {
    let (mut e, mut s) = (0f64, 0f64);
    for (a, b) in w.iter().zip(q) {
        e += f64::from(a - b).powi(2);
        s += f64::from(*a).powi(2);
    }
    e / s
}
