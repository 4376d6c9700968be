//! The NEON backend (aarch64, where NEON is baseline): the token and the
//! `#[target_feature]` entry point that instantiates the shared kernels of
//! [`kernels::simd`](crate::kernels::simd) with [`NeonLanes`] (see there for the
//! exactness contract).
//!
//! NEON is baseline on `aarch64-unknown-linux-gnu`, but rustc still requires a
//! `#[target_feature(enable = "neon")]` context to call the intrinsics safely ("the neon
//! target feature being enabled in the build configuration does not remove the
//! requirement"), so each kernel is compiled inside `with_neon`, and the only `unsafe` call
//! into it is [`SimdToken::run`], whose `Neon` value proves NEON is present.

use crate::kernels::simd::entry::Kernel;
use crate::kernels::simd::{simd_kernels, SimdToken};

use super::lanes::NeonLanes;

/// The NEON backend. Holding a value proves the CPU has NEON (baseline on aarch64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neon {
    _proof: (),
}

impl Neon {
    /// Whether NEON is available: the target's baseline (`aarch64-*` targets other than
    /// the soft-float bare-metal ones).
    #[inline]
    pub fn is_available() -> bool {
        cfg!(target_feature = "neon")
    }

    /// The backend, when available.
    #[inline]
    pub fn try_new() -> Option<Self> {
        if Self::is_available() {
            Some(Neon { _proof: () })
        } else {
            None
        }
    }

    /// The backend without checking.
    ///
    /// # Safety
    /// The CPU running any method of the returned value must support NEON.
    #[inline]
    pub unsafe fn new_unchecked() -> Self {
        Neon { _proof: () }
    }
}

impl SimdToken for Neon {
    type Lanes = NeonLanes;

    #[inline(always)]
    fn run<K: Kernel<Self::Lanes>>(self, k: K) -> K::Out {
        // SAFETY: holding `self` proves NEON is available.
        unsafe { with_neon(NeonLanes::new(self), k) }
    }
}

/// Compiles kernel `k` (inlined) with NEON enabled.
#[target_feature(enable = "neon")]
fn with_neon<K: Kernel<NeonLanes>>(s: NeonLanes, k: K) -> K::Out {
    k.call(s)
}

simd_kernels!(Neon, "neon");
