//! x86_64 backends.

mod avx2;
mod lanes;
mod vnni;

pub use avx2::Avx2;
pub use vnni::AvxVnni;

/// A hint to load the cache line holding `line`'s first byte into every cache level.
#[inline(always)]
pub(crate) fn prefetch(line: &[u8]) {
    use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: SSE is part of the x86_64 baseline, and a prefetch never dereferences its
    // address: it cannot fault, and it writes nothing.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) }
}
