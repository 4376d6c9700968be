//! Exact selection against a sort-based oracle, through every path and kernel set.

use std::vec::Vec;

use half::{bf16, f16};

use super::outlier_mask;
use crate::error::Error;
use crate::format::{packed_len, PackedTensor};
use crate::kernels::KernelScan;
use crate::kernels::{AnyKernels, CpuKernels};
use crate::params::{Grid, Params, SelectionMode};
use crate::quant::MIN_MAX_ABS;
use crate::select::{
    select_by_passes, select_outliers, target_count, Selection, NON_FINITE_BITS, OUT_OF_RANGE_BITS,
    TAKE_ALL_EQUAL,
};
use crate::weights::Weights;

/// The element type a fuzzed tensor is given to the kernels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    /// f32, as given.
    F32,
    /// Each value rounded to f16 (huge values become ±inf).
    F16,
    /// Each value rounded to bf16.
    Bf16,
}

/// Tensors up to this size are also quantized and checked weight by weight.
const SORT_LIMIT: usize = 1 << 16;

/// Exact selection of a `rows × cols` tensor made of `pattern` repeated in row-major
/// order, converted to `ty`, with outlier fraction `alpha`.
///
/// Every kernel set of the host ([`AnyKernels::available`]) selects through
/// [`select_outliers`] (the sampled one-pass path when the tensor has at least 2^20
/// weights) and, on tensors of at most 2^16 weights, [`select_by_passes`]; each result must equal the oracle: exactly
/// `k = round(α·N)` outliers, the `k` largest `|w|`, ties at the threshold to the earliest
/// in row-major order; a NaN, infinite or `|w| ≥ 2^124` weight rejected at the smallest
/// such index; a nonzero tensor below 2^-100 rejected as too small. Small tensors are also
/// quantized by every kernel set: identical bytes, and the outliers are the oracle's. On
/// small tensors the reference mode must agree on rejections and count the outliers it
/// reports.
pub fn selection(pattern: &[f32], ty: InputType, rows: usize, cols: usize, alpha: f64) {
    let Ok(params) = Params::new(4, 128, alpha, Grid::Symmetric) else {
        return;
    };
    let (rows, cols) = (rows.max(1), cols.max(1));
    if pattern.is_empty() || rows * cols > 1 << 22 {
        return;
    }
    let n = rows * cols;
    let f32s: Vec<f32> = (0..n).map(|i| pattern[i % pattern.len()]).collect();
    let f16s: Vec<f16>;
    let bf16s: Vec<bf16>;
    let w = match ty {
        InputType::F32 => Weights::F32(&f32s),
        InputType::F16 => {
            f16s = f32s.iter().map(|&v| f16::from_f32(v)).collect();
            Weights::F16(&f16s)
        }
        InputType::Bf16 => {
            bf16s = f32s.iter().map(|&v| bf16::from_f32(v)).collect();
            Weights::Bf16(&bf16s)
        }
    };
    // The pattern as the kernels see it (after rounding to the input type).
    let seen: Vec<f32> = (0..pattern.len().min(n))
        .map(|i| w.value(i).unwrap())
        .collect();
    let want = oracle(&seen, n, cols, alpha);
    let small = n <= SORT_LIMIT;
    let abs_bits: Vec<u32> = if small {
        (0..n)
            .map(|i| w.value(i).unwrap().to_bits() & 0x7FFF_FFFF)
            .collect()
    } else {
        Vec::new()
    };
    for kernels in AnyKernels::available() {
        let scan = KernelScan::new(kernels, w);
        let got = select_outliers(&scan, rows, cols, &params);
        check_selection(&want, got, n, kernels, "select_outliers");
        if !small {
            // The passes are the same code on small tensors; the reference search makes
            // dozens of passes. Both are too slow for the fuzzer here.
            continue;
        }
        let got = select_by_passes(&scan, rows, cols, &params);
        check_selection(&want, got, n, kernels, "select_by_passes");
        let reference = params
            .with_selection(SelectionMode::Reference { n_iters: 20 })
            .expect("20 iterations are valid");
        match (select_by_passes(&scan, rows, cols, &reference), &want) {
            (Err(e), Err(w)) => assert_eq!(
                std::format!("{e:?}"),
                std::format!("{w:?}"),
                "reference mode"
            ),
            (Err(Error::NotBracketed), Ok(_)) => {}
            (Ok(sel), Ok(_)) => {
                assert_eq!(
                    sel.take_equal, TAKE_ALL_EQUAL,
                    "reference mode takes all ties"
                );
                let count = abs_bits
                    .iter()
                    .filter(|&&b| b >= sel.threshold_bits)
                    .count();
                assert_eq!(sel.n_outliers, count as u64, "reference mode count");
            }
            (got, want) => panic!("reference mode: {got:?}, exact oracle {want:?}"),
        }
    }
    if let (Ok(sel), true) = (want, small) {
        check_quantized(w, rows, cols, &params, &sel, &abs_bits);
    }
}

/// The expected selection of `n` weights made of `seen` repeated, by sorting the
/// pattern's magnitudes and counting each with its number of occurrences.
fn oracle(seen: &[f32], n: usize, cols: usize, alpha: f64) -> Result<Selection, Error> {
    let abs_bits: Vec<u32> = seen.iter().map(|v| v.to_bits() & 0x7FFF_FFFF).collect();
    // Pattern index `i` occurs at flat indices `i, i + len, …`: its first is `i`.
    if let Some(i) = abs_bits.iter().position(|&b| b >= OUT_OF_RANGE_BITS) {
        let (row, col) = ((i / cols) as u64, (i % cols) as u64);
        let value = seen[i];
        return Err(if abs_bits[i] >= NON_FINITE_BITS {
            Error::NonFinite { row, col, value }
        } else {
            Error::OutOfRange { row, col, value }
        });
    }
    let max_abs_bits = abs_bits.iter().copied().max().unwrap_or(0);
    let max_abs = f32::from_bits(max_abs_bits);
    if max_abs > 0.0 && max_abs < MIN_MAX_ABS {
        return Err(Error::TooSmall { max_abs });
    }
    let k = target_count(alpha, n as u64);
    if k == 0 {
        return Ok(Selection {
            threshold_bits: NON_FINITE_BITS,
            take_equal: 0,
            n_outliers: 0,
            max_abs_bits,
            lambda_prime: f64::INFINITY,
            passes: 0,
            mode: SelectionMode::Exact,
        });
    }
    let len = abs_bits.len();
    let occurrences = |i: usize| (n / len + usize::from(i < n % len)) as u64;
    let mut order: Vec<usize> = (0..len).collect();
    order.sort_by_key(|&i| core::cmp::Reverse(abs_bits[i]));
    let mut taken = 0u64;
    let mut threshold_bits = 0;
    for &i in &order {
        taken += occurrences(i);
        if taken >= k {
            threshold_bits = abs_bits[i];
            break;
        }
    }
    let count = |keep: &dyn Fn(u32) -> bool| -> u64 {
        (0..len)
            .filter(|&i| keep(abs_bits[i]))
            .map(occurrences)
            .sum()
    };
    let above = count(&|b| b > threshold_bits);
    let equal = count(&|b| b == threshold_bits);
    let need = k - above;
    let t = f64::from(f32::from_bits(threshold_bits));
    Ok(Selection {
        threshold_bits,
        take_equal: if need >= equal { TAKE_ALL_EQUAL } else { need },
        n_outliers: k,
        max_abs_bits,
        lambda_prime: t * t,
        passes: 0,
        mode: SelectionMode::Exact,
    })
}

/// Compares a selection with the oracle's (all fields but the number of passes).
fn check_selection(
    want: &Result<Selection, Error>,
    got: Result<Selection, Error>,
    n: usize,
    kernels: AnyKernels,
    path: &str,
) {
    let name = kernels.name();
    match (want, got) {
        (Ok(w), Ok(g)) => {
            let g = Selection { passes: 0, ..g };
            assert_eq!(*w, g, "{path} on {name}, {n} weights");
        }
        (Err(w), Err(g)) => {
            // Compare values by their bits (NaN).
            assert_eq!(
                std::format!("{w:?}"),
                std::format!("{g:?}"),
                "{path} on {name}"
            );
        }
        (w, g) => panic!("{path} on {name}: got {g:?}, oracle {w:?}"),
    }
}

/// Quantizes with every kernel set: identical bytes, outliers exactly the oracle's.
fn check_quantized(
    w: Weights<'_>,
    rows: usize,
    cols: usize,
    params: &Params,
    sel: &Selection,
    abs_bits: &[u32],
) {
    let len = packed_len(rows, cols, params.format(), sel.n_outliers).unwrap();
    let mut first: Option<Vec<u8>> = None;
    for kernels in AnyKernels::available() {
        let mut buf = std::vec![0u8; len];
        crate::quantize_tensor(&kernels, w, rows, cols, params, sel, &mut buf).unwrap();
        match &first {
            Some(f) => assert!(*f == buf, "{} bytes differ from scalar", kernels.name()),
            None => first = Some(buf),
        }
    }
    let buf = first.unwrap();
    let mask = outlier_mask(&PackedTensor::parse(&buf).unwrap());
    let mut budget = sel.take_equal;
    for (i, (&b, &is_out)) in abs_bits.iter().zip(&mask).enumerate() {
        let expected = b > sel.threshold_bits
            || b == sel.threshold_bits && budget > 0 && {
                if budget != TAKE_ALL_EQUAL {
                    budget -= 1;
                }
                true
            };
        assert_eq!(is_out, expected, "outlier flag of weight {i}");
    }
}
