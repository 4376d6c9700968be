//! Cache prefetch hints for rows a gemv will read next.
//!
//! A fused gemv streams each packed row once, and a row's dot is too short for the
//! hardware prefetcher to run far enough ahead: without a hint every row waits on its
//! own cache misses one after the other. A hint is only a hint: it reads nothing, cannot
//! fault, and changes no result.

use crate::format::PackedTensor;

/// Bytes one prefetch hint covers (the cache line of every x86_64 and aarch64 core
/// this crate targets).
const LINE: usize = 64;

/// Asks the cache to load rows `first..first + n` of `t` (their codes and records),
/// clipped to the tensor's rows. Returns at once.
#[inline]
pub fn prefetch_rows(t: &PackedTensor<'_>, first: usize, n: usize) {
    let end = (first.saturating_add(n)).min(t.rows());
    if first >= end {
        return;
    }
    let l = t.layout();
    let bytes = t.as_bytes();
    let records = l.row_record_bytes();
    let span = |at: usize, per_row: usize| &bytes[at + first * per_row..at + end * per_row];
    prefetch_lines(span(l.records_at(), records));
    prefetch_lines(span(l.codes_at(), l.row_code_bytes()));
}

/// One hint per cache line of `bytes` (by its first byte: a hint covers the line, and
/// a one-byte slice needs no per-line length arithmetic).
#[inline]
pub(crate) fn prefetch_lines(bytes: &[u8]) {
    for first in bytes.iter().step_by(LINE) {
        hint(core::slice::from_ref(first));
    }
}

#[cfg(target_arch = "x86_64")]
use super::x86_64::prefetch as hint;

#[cfg(target_arch = "aarch64")]
use super::aarch64::prefetch as hint;

/// No hint on other targets.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
#[inline(always)]
fn hint(_: &[u8]) {}
