//! x86_64 backends.

use core::sync::atomic::{AtomicU8, Ordering};

mod avx2;
mod lanes;
mod vnni;

pub use avx2::Avx2;
pub use vnni::AvxVnni;

/// A CPUID answer asked once and kept in `cache` (0 not yet, 1 no, 2 yes): under a
/// hypervisor CPUID traps, so it is worth caching. For the features `cpufeatures` does
/// not know.
fn cached_cpuid(cache: &AtomicU8, ask: fn() -> bool) -> bool {
    match cache.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let has = ask();
            cache.store(if has { 2 } else { 1 }, Ordering::Relaxed);
            has
        }
    }
}

/// A hint to load the cache line holding `line`'s first byte into every cache level.
#[inline(always)]
pub(crate) fn prefetch(line: &[u8]) {
    use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: SSE is part of the x86_64 baseline, and a prefetch never dereferences its
    // address: it cannot fault, and it writes nothing.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use core::arch::asm;
    use half::f16;
    use std::vec::Vec;

    /// MXCSR's DAZ (subnormal operands read as zero) and FTZ (subnormal results flushed)
    /// bits, which a host built with `-ffast-math` sets for its threads.
    const FLUSH_SUBNORMALS: u32 = (1 << 6) | (1 << 15);

    fn mxcsr() -> u32 {
        let mut v = 0u32;
        // SAFETY: `stmxcsr` stores the 4-byte MXCSR register at the pointer, which is a
        // live, writable u32; SSE is part of the x86_64 baseline.
        unsafe { asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack, preserves_flags)) };
        v
    }

    fn set_mxcsr(v: u32) {
        // SAFETY: `ldmxcsr` loads MXCSR from a live u32, here MXCSR's own value with only
        // the DAZ/FTZ bits changed (no reserved bit, no exception unmasked), on this
        // test's thread only. Rust's model assumes the default floating-point
        // environment, so the flushed region is kept to the conversions under test (no
        // allocation, no assertion inside; MXCSR restored before any check), to emulate
        // the C host that would call them so.
        unsafe { asm!("ldmxcsr [{}]", in(reg) &v, options(nostack, preserves_flags)) };
    }

    /// The core's f16 conversions give `half`'s bits for every pattern even on a thread
    /// that flushes subnormals, as a `-ffast-math` C host calling the C ABI would: f16
    /// subnormals are common among small weights.
    #[test]
    fn f16_conversion_ignores_flushing_of_subnormals() {
        let src: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        let want: Vec<u32> = src.iter().map(|v| v.to_f32().to_bits()).collect();
        let mut got = std::vec![0f32; src.len()];
        // The packed format's row units (f16 fields) decode through the same conversion.
        let mut units = std::vec![0f32; src.len()];
        let saved = mxcsr();
        set_mxcsr(saved | FLUSH_SUBNORMALS);
        crate::weights::f16_to_f32_slice(&src, &mut got);
        for (u, v) in units.iter_mut().zip(&src) {
            *u = crate::affine::unit_value(v.to_bits(), 0);
        }
        set_mxcsr(saved);
        for (((v, w), g), u) in src.iter().zip(&want).zip(&got).zip(&units) {
            assert_eq!(g.to_bits(), *w, "{:#06x}", v.to_bits());
            assert_eq!(u.to_bits(), *w, "unit {:#06x}", v.to_bits());
        }
        // The AVX2 lanes' F16C conversion too, against the portable one (just checked).
        if let Some(t) = super::Avx2::try_new() {
            use crate::kernels::simd::tests::{
                check_f16_conversion, f16_conversion_buffers, F16Conversion,
            };
            use crate::kernels::simd::SimdToken;
            let (src, mut lanes, mut slice) = f16_conversion_buffers();
            let run = F16Conversion {
                src: &src,
                lanes: &mut lanes,
                slice: &mut slice,
            };
            set_mxcsr(saved | FLUSH_SUBNORMALS);
            t.run(run);
            set_mxcsr(saved);
            check_f16_conversion(&src, &lanes, &slice);
        }
    }
}
