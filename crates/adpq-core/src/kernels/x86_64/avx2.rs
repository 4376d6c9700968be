//! The AVX2 (+FMA) backend: the token, CPU detection, and the `#[target_feature]` entry
//! point that instantiates the shared kernels of [`kernels::simd`](crate::kernels::simd)
//! with [`Avx2Lanes`] (see there for the exactness contract).
//!
//! Every kernel runs inside `with_avx2`,
//! `#[target_feature(enable = "avx2,fma,popcnt,f16c")]`
//! and private; the only `unsafe` call into it is [`SimdToken::run`], whose `Avx2` value
//! proves that the CPU has all four. Only the lane operations themselves (in
//! `x86_64/lanes.rs`) are ISA-specific.

use core::arch::x86_64::__cpuid;
use core::sync::atomic::AtomicU8;

use crate::kernels::simd::entry::Kernel;
use crate::kernels::simd::{simd_kernels, SimdToken};

use super::cached_cpuid;
use super::lanes::Avx2Lanes;

cpufeatures::new!(cpuid_avx2_fma, "avx2", "fma", "popcnt");

/// CPUID's answer for F16C ([`cached_cpuid`]).
static F16C_CPUID: AtomicU8 = AtomicU8::new(0);

/// Whether CPUID reports F16C (leaf 1, ECX bit 29), asked once (`cpufeatures` does not
/// know the feature).
fn f16c_cpuid() -> bool {
    cached_cpuid(&F16C_CPUID, || {
        // `unsafe` on the MSRV (1.89): newer Rust made CPUID a safe intrinsic.
        #[allow(unused_unsafe)]
        // SAFETY: CPUID exists on every x86_64 CPU, and leaf 1 always answers.
        let ecx = unsafe { __cpuid(1) }.ecx;
        (ecx >> 29) & 1 == 1
    })
}

/// The AVX2 backend. Holding a value proves the CPU supports AVX2, FMA, POPCNT and F16C
/// (each is checked; every AVX2 CPU has F16C, so only a virtual CPU hiding it would fall
/// back to the scalar set). BMI2 is not needed: outlier positions are unpacked with
/// shifts, not PDEP (microcoded and slow on AMD Zen1/Zen2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Avx2 {
    _proof: (),
}

impl Avx2 {
    /// Whether this CPU has AVX2, FMA, POPCNT and F16C (compile-time target features
    /// first, then CPUID: `cpufeatures`, which works without `std` and caches, and for
    /// F16C, which it does not know, one cached question of our own).
    ///
    /// These four are exactly the features every `#[target_feature]` function of this
    /// module enables (`count_ones` compiles to POPCNT, f16 input converts with F16C;
    /// nothing uses BMI1/BMI2 or LZCNT), and the compile-time shortcut and the CPUID
    /// checks must both name all of them: a feature enabled below but missing from either
    /// check would let a token exist on a CPU without it.
    #[inline]
    pub fn is_available() -> bool {
        #[cfg(all(
            target_feature = "avx2",
            target_feature = "fma",
            target_feature = "popcnt",
            target_feature = "f16c"
        ))]
        {
            true
        }
        #[cfg(not(all(
            target_feature = "avx2",
            target_feature = "fma",
            target_feature = "popcnt",
            target_feature = "f16c"
        )))]
        {
            cpuid_avx2_fma::get() && f16c_cpuid()
        }
    }

    /// The backend, when the CPU supports it.
    #[inline]
    pub fn try_new() -> Option<Self> {
        if Self::is_available() {
            Some(Avx2 { _proof: () })
        } else {
            None
        }
    }

    /// The backend without checking the CPU.
    ///
    /// # Safety
    /// The CPU running any method of the returned value must support AVX2, FMA, POPCNT and
    /// F16C.
    #[inline]
    pub unsafe fn new_unchecked() -> Self {
        Avx2 { _proof: () }
    }
}

impl SimdToken for Avx2 {
    type Lanes = Avx2Lanes<false>;

    #[inline(always)]
    fn run<K: Kernel<Self::Lanes>>(self, k: K) -> K::Out {
        // SAFETY: holding `self` proves AVX2, FMA, POPCNT and F16C are available.
        unsafe { with_avx2(Avx2Lanes::new(self), k) }
    }
}

/// Compiles kernel `k` (inlined) with the four features enabled.
#[target_feature(enable = "avx2,fma,popcnt,f16c")]
fn with_avx2<K: Kernel<Avx2Lanes<false>>>(s: Avx2Lanes<false>, k: K) -> K::Out {
    k.call(s)
}

simd_kernels!(Avx2, "avx2");

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::Avx2;

    /// The token exists exactly when the CPU has every feature the module's functions enable.
    #[test]
    fn token_requires_every_enabled_feature() {
        let all = std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("popcnt")
            && std::is_x86_feature_detected!("f16c");
        assert_eq!(Avx2::is_available(), all);
        assert_eq!(Avx2::try_new().is_some(), all);
    }
}
