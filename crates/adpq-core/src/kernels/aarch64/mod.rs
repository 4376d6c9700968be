//! aarch64 backends.

mod lanes;
mod neon;

pub use neon::Neon;

/// A hint to load the cache line holding `line`'s first byte into the level-1 cache.
#[inline(always)]
pub(crate) fn prefetch(line: &[u8]) {
    // SAFETY: `prfm` is a hint: it never faults, reads no register but its address and
    // writes no memory, register or flag.
    unsafe {
        core::arch::asm!(
            "prfm pldl1keep, [{0}]",
            in(reg) line.as_ptr(),
            options(nostack, preserves_flags, readonly)
        )
    }
}
