//! Scaffolding shared by the SIMD backends (AVX2, NEON): no intrinsics here, only the
//! control flow around them, so that both backends classify ties, report rejected weights
//! and fall back to the oracle in exactly the same way.

use crate::error::Error;
use crate::kernels::scalar::histogram_generic;
use crate::select::{
    is_valid_abs_bits, BadValue, HistogramPass, OutlierRule, HIST_BINS, TAKE_ALL_EQUAL,
};
use crate::weights::{Element, Weights};

/// Elements converted per block when the input is f16 or bf16.
const CONVERT_BLOCK: usize = 4096;

/// Runs `f` on `w` as f32 blocks of at most [`CONVERT_BLOCK`] elements (no copy for
/// f32), converting each F16/BF16 block with `convert(block, out)` (a SIMD backend's
/// conversion in its `#[target_feature]` function).
#[inline(always)]
pub(super) fn for_f32_blocks_with(
    w: Weights<'_>,
    mut convert: impl FnMut(Weights<'_>, &mut [f32]),
    mut f: impl FnMut(&[f32]),
) {
    if let Weights::F32(s) = w {
        return f(s);
    }
    let mut buf = [0f32; CONVERT_BLOCK];
    let mut at = 0;
    while let Some(c) = w
        .get(at, (at + CONVERT_BLOCK).min(w.len()))
        .filter(|c| !c.is_empty())
    {
        let b = &mut buf[..c.len()];
        convert(c, b);
        f(b);
        at += c.len();
    }
}

/// A whole histogram pass built from a per-block SIMD kernel.
///
/// `in_contract` says whether `pass` is one the kernel handles; otherwise the oracle does
/// the pass. `kernel(s, bins, sub)` adds block `s` into `bins` (sparse hits) or the four
/// sub-histograms `sub` (dense passes) and returns the block's largest magnitude bits,
/// unvalidated. When any weight is rejected, the oracle rescans to report the first one
/// exactly as it would have.
#[inline(always)]
pub(super) fn histogram_with(
    w: Weights<'_>,
    pass: &HistogramPass,
    bins: &mut [u32; HIST_BINS],
    in_contract: bool,
    convert: impl FnMut(Weights<'_>, &mut [f32]),
    mut kernel: impl FnMut(&[f32], &mut [u32; HIST_BINS], &mut [[u32; HIST_BINS]; 4]) -> u32,
) -> Result<u32, BadValue> {
    if !in_contract {
        return crate::with_weights!(w, s => histogram_generic(s, pass, bins));
    }
    let mut sub = [[0u32; HIST_BINS]; 4];
    let mut max = 0u32;
    for_f32_blocks_with(w, convert, |s| max = max.max(kernel(s, bins, &mut sub)));
    for (i, b) in bins.iter_mut().enumerate() {
        *b += sub[0][i]
            .wrapping_add(sub[1][i])
            .wrapping_add(sub[2][i])
            .wrapping_add(sub[3][i]);
    }
    if !is_valid_abs_bits(max) {
        let mut scratch = [0u32; HIST_BINS];
        return crate::with_weights!(w, s => histogram_generic(s, pass, &mut scratch));
    }
    Ok(max)
}

/// How weights equal to the threshold are classified in one group.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum TieMode {
    /// All of them are outliers.
    All,
    /// None of them are.
    None,
    /// The first `budget` of them in row-major order are (decided per group, in order).
    Limited,
}

impl TieMode {
    /// The mode of `rule` now.
    #[inline(always)]
    pub(super) fn of(rule: &OutlierRule) -> TieMode {
        match rule.equal_budget {
            TAKE_ALL_EQUAL => TieMode::All,
            0 => TieMode::None,
            _ => TieMode::Limited,
        }
    }
}

/// Pass B of a group with a limited tie budget and ties in it: classifies `x` one weight
/// at a time in row-major order (consuming `rule`'s budget), writing one mask bit per
/// weight into `masks` (8 per byte) and counting the ties taken into `equal_taken`.
#[inline(always)]
pub(super) fn classify_in_order(
    x: &[f32],
    rule: &mut OutlierRule,
    masks: &mut [u8],
    equal_taken: &mut u64,
) {
    masks.fill(0);
    for (i, v) in x.iter().enumerate() {
        let b = v.abs_bits();
        if rule.take(b) {
            masks[i / 8] |= 1 << (i % 8);
            if b == rule.threshold_bits {
                *equal_taken += 1;
            }
        }
    }
}

/// The error for the first rejected weight of a group `x` whose first weight has flat
/// index `first` in a tensor of `cols` columns (the caller found one).
#[cold]
pub(super) fn rejected_weight(x: &[f32], first: u64, cols: usize) -> Error {
    let i = x
        .iter()
        .position(|v| !is_valid_abs_bits(v.abs_bits()))
        .unwrap_or(0);
    BadValue {
        index: first + i as u64,
        value: x[i],
    }
    .into_error(0, cols as u64)
}
