//! Stand-ins for the backends of other architectures, so that [`AnyKernels`] and code
//! that names `Avx2`, `AvxVnni` or `Neon` compile everywhere. Each stand-in is uninhabited: its
//! `try_new` returns `None`, so no value (and no call of its methods) can exist.
//!
//! [`AnyKernels`]: super::AnyKernels

macro_rules! stub_backend {
    ($name:ident, $label:literal, $arch:literal) => {
        #[doc = concat!("The ", $label, " backend, which exists on `", $arch, "` only: on this target")]
        /// it is never available and no value of it can be made.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name {
            never: core::convert::Infallible,
        }

        impl $name {
            /// Always false on this target.
            #[inline]
            pub fn is_available() -> bool {
                false
            }

            /// Always `None` on this target.
            #[inline]
            pub fn try_new() -> Option<Self> {
                None
            }

            /// Never returns on this target.
            ///
            /// # Safety
            #[doc = concat!("Only callable where the CPU supports ", $label, ", which no CPU of this target does:")]
            /// this function panics.
            pub unsafe fn new_unchecked() -> Self {
                panic!(concat!($label, " is only available on ", $arch))
            }
        }

        impl super::CpuKernels for $name {
            fn name(&self) -> &'static str {
                match self.never {}
            }
            fn histogram(
                &self,
                _: crate::Weights<'_>,
                _: &crate::select::HistogramPass,
                _: &mut [u32; crate::select::HIST_BINS],
            ) -> Result<u32, crate::select::BadValue> {
                match self.never {}
            }
            fn count_at_least(&self, _: crate::Weights<'_>, _: u32) -> u64 {
                match self.never {}
            }
            fn count_equal(&self, _: crate::Weights<'_>, _: u32) -> u64 {
                match self.never {}
            }
            fn quantize_rows(
                &self,
                _: crate::Weights<'_>,
                _: &super::RowJob,
                _: &mut super::RowsOut<'_>,
            ) -> crate::Result<super::RowsDone> {
                match self.never {}
            }
            fn dequantize_rows(&self, _: &crate::PackedTensor<'_>, _: usize, _: &mut [f32]) -> crate::Result<()> {
                match self.never {}
            }
            fn dequantize_part(&self, _: &crate::PackedTensor<'_>, _: &mut crate::RowCursor, _: &mut [f32]) -> crate::Result<()> {
                match self.never {}
            }
            fn dot_row(&self, _: &crate::PackedTensor<'_>, _: usize, _: &[f32]) -> crate::Result<f32> {
                match self.never {}
            }
        }
    };
}

#[cfg(not(target_arch = "x86_64"))]
stub_backend!(Avx2, "AVX2", "x86_64");
#[cfg(not(target_arch = "x86_64"))]
stub_backend!(AvxVnni, "AVX-VNNI", "x86_64");
#[cfg(not(target_arch = "aarch64"))]
stub_backend!(Neon, "NEON", "aarch64");
