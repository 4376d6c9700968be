//! The one-pass sampled selection (taken by `select_outliers`, so by `select_tensor`,
//! on large tensors) must give exactly the selection of the histogram passes
//! (`select::select_by_passes`), on every backend, or decline.

use adpq_core::select::select_by_passes;
use adpq_core::{
    bf16, f16, AnyKernels, CpuKernels, Error, KernelScan, Params, Scalar, Selection, Weights,
};

const ROWS: usize = 1024;
const COLS: usize = 1100; // 1.1 M weights: above the sampled path's minimum

fn histogram_passes<B: CpuKernels>(b: &B, w: Weights<'_>, params: &Params) -> Selection {
    let sel = select_by_passes(&KernelScan::new(*b, w), ROWS, COLS, params).unwrap();
    assert_eq!(sel.passes, 3, "the histogram passes");
    sel
}

fn lcg(seed: u64) -> impl FnMut() -> f32 {
    let mut x = seed;
    move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }
}

fn cases() -> Vec<(&'static str, Vec<f32>)> {
    let n = ROWS * COLS;
    let mut r = lcg(7);
    let uniform: Vec<f32> = (0..n).map(|_| r()).collect();
    let mut r = lcg(8);
    let heavy: Vec<f32> = (0..n)
        .map(|_| {
            let u = r();
            u * u * u * 40.0 + u * 0.01
        })
        .collect();
    // Few distinct values: ties at the threshold, taken in row-major order.
    let mut r = lcg(9);
    let ties: Vec<f32> = (0..n).map(|_| ((r() * 16.0).round()) / 8.0).collect();
    // Mostly zeros with sparse large values.
    let mut r = lcg(10);
    let sparse: Vec<f32> = (0..n)
        .map(|i| if i % 13 == 0 { r() * 1e3 } else { 0.0 })
        .collect();
    vec![
        ("uniform", uniform),
        ("heavy", heavy),
        ("ties", ties),
        ("sparse", sparse),
    ]
}

fn backends() -> Vec<AnyKernels> {
    let mut v = vec![AnyKernels::Scalar(Scalar)];
    if !matches!(AnyKernels::detect(), AnyKernels::Scalar(_)) {
        v.push(AnyKernels::detect());
    }
    v
}

#[test]
fn sampled_selection_equals_histogram_passes() {
    let mut sampled_used = 0;
    for (name, w) in cases() {
        // Half inputs on one distribution keep the run short (debug builds, qemu).
        let (h, b16): (Vec<f16>, Vec<bf16>) = if name == "heavy" {
            (
                w.iter().map(|&v| f16::from_f32(v)).collect(),
                w.iter().map(|&v| bf16::from_f32(v)).collect(),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let mut inputs = vec![Weights::F32(&w)];
        if !h.is_empty() {
            inputs.extend([Weights::F16(&h), Weights::Bf16(&b16)]);
        }
        for alpha in [0.06, 0.3] {
            let params = Params::new(4, 128, alpha, adpq_core::Grid::Symmetric).unwrap();
            for &ww in &inputs {
                for b in backends() {
                    let expected = histogram_passes(&b, ww, &params);
                    let got = adpq_core::select_tensor(&b, ww, ROWS, COLS, &params).unwrap();
                    let same = |s: &Selection| {
                        (s.threshold_bits, s.take_equal, s.n_outliers, s.max_abs_bits)
                            == (
                                expected.threshold_bits,
                                expected.take_equal,
                                expected.n_outliers,
                                expected.max_abs_bits,
                            )
                    };
                    assert!(
                        same(&got),
                        "{name} alpha {alpha} {}: {got:?} vs {expected:?}",
                        b.name()
                    );
                    // One pass: the sampled path's bracket held.
                    if got.passes == 1 {
                        sampled_used += 1;
                    }
                }
            }
        }
    }
    // The bracket must hit on ordinary data, or the fast path is dead code.
    assert!(
        sampled_used >= 12,
        "sampled path used only {sampled_used} times"
    );
}

#[test]
fn sampled_selection_reports_the_first_bad_weight() {
    let (_, mut w) = cases().remove(0);
    w[5 * COLS + 17] = f32::NAN;
    w[900 * COLS + 3] = f32::INFINITY;
    for b in backends() {
        let err =
            adpq_core::select_tensor(&b, Weights::F32(&w), ROWS, COLS, &Params::V1).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NonFinite {
                    row: 5,
                    col: 17,
                    ..
                }
            ),
            "{}: {err:?}",
            b.name()
        );
    }
}
