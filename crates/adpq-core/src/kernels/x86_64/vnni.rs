//! The AVX-VNNI backend: AVX2 + FMA with `vpdpbusd`, the one-instruction u8·i8 dot of
//! four bytes into an i32 lane (Intel since Alder Lake and Sapphire Rapids, AMD since
//! Zen 4 through AVX512-VNNI's VEX twin). Every kernel is the shared one of
//! [`kernels::simd`](crate::kernels::simd) over [`Avx2Lanes<true>`](Avx2Lanes), which
//! differs from the AVX2 set only in [`Lanes::dot_bytes_i8`](crate::kernels::simd::Lanes):
//! the int8-activation dots take a third of the instructions, with the same sums.

use core::arch::x86_64::__cpuid_count;
use core::sync::atomic::AtomicU8;

use crate::kernels::simd::entry::Kernel;
use crate::kernels::simd::{simd_kernels, SimdToken};

use super::avx2::Avx2;
use super::cached_cpuid;
use super::lanes::Avx2Lanes;

/// The AVX-VNNI backend. Holding a value proves the CPU supports AVX2, FMA, POPCNT, F16C
/// and AVX-VNNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvxVnni {
    avx2: Avx2,
}

/// CPUID's answer for AVX-VNNI ([`cached_cpuid`]).
static VNNI_CPUID: AtomicU8 = AtomicU8::new(0);

/// Whether CPUID reports AVX-VNNI (leaf 7, sub-leaf 1, EAX bit 4), asked once.
fn vnni_cpuid() -> bool {
    cached_cpuid(&VNNI_CPUID, || {
        // `unsafe` on the MSRV (1.89): newer Rust made CPUID a safe intrinsic.
        #[allow(unused_unsafe)]
        // SAFETY: CPUID exists on every x86_64 CPU; leaf 7 is asked only when leaf 0
        // reports it, sub-leaf 1 only when sub-leaf 0 does.
        unsafe {
            __cpuid_count(0, 0).eax >= 7
                && __cpuid_count(7, 0).eax >= 1
                && (__cpuid_count(7, 1).eax >> 4) & 1 == 1
        }
    })
}

impl AvxVnni {
    /// Whether this CPU has AVX2, FMA, POPCNT, F16C ([`Avx2::is_available`], which also checks
    /// that the OS saves the YMM registers) and AVX-VNNI (compile-time target feature
    /// first, then CPUID, asked once).
    #[inline]
    pub fn is_available() -> bool {
        #[cfg(target_feature = "avxvnni")]
        let vnni = true;
        #[cfg(not(target_feature = "avxvnni"))]
        let vnni = vnni_cpuid();
        Avx2::is_available() && vnni
    }

    /// The backend, when the CPU supports it.
    #[inline]
    pub fn try_new() -> Option<Self> {
        let avx2 = Avx2::try_new()?;
        Self::is_available().then_some(AvxVnni { avx2 })
    }

    /// The backend without checking the CPU.
    ///
    /// # Safety
    /// The CPU running any method of the returned value must support AVX2, FMA, POPCNT, F16C
    /// and AVX-VNNI.
    #[inline]
    pub unsafe fn new_unchecked() -> Self {
        AvxVnni {
            // SAFETY: the caller promises AVX2, FMA, POPCNT and F16C among the rest.
            avx2: unsafe { Avx2::new_unchecked() },
        }
    }

    /// The AVX2 token this one implies.
    #[inline(always)]
    pub(super) fn avx2(self) -> Avx2 {
        self.avx2
    }
}

impl SimdToken for AvxVnni {
    type Lanes = Avx2Lanes<true>;

    #[inline(always)]
    fn run<K: Kernel<Self::Lanes>>(self, k: K) -> K::Out {
        // SAFETY: holding `self` proves AVX2, FMA, POPCNT, F16C and AVX-VNNI are available.
        unsafe { with_avx_vnni(Avx2Lanes::with_vnni(self), k) }
    }
}

/// Compiles kernel `k` (inlined) with the five features enabled.
#[target_feature(enable = "avx2,fma,popcnt,f16c,avxvnni")]
fn with_avx_vnni<K: Kernel<Avx2Lanes<true>>>(s: Avx2Lanes<true>, k: K) -> K::Out {
    k.call(s)
}

simd_kernels!(AvxVnni, "avx-vnni");

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::AvxVnni;

    /// The token exists exactly when the CPU has every feature the module's functions
    /// enable.
    #[test]
    fn token_requires_every_enabled_feature() {
        let all = std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("popcnt")
            && std::is_x86_feature_detected!("f16c")
            && std::is_x86_feature_detected!("avxvnni");
        assert_eq!(AvxVnni::is_available(), all);
        assert_eq!(AvxVnni::try_new().is_some(), all);
    }
}
