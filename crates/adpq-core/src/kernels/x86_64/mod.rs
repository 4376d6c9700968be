//! x86_64 backends.

mod avx2;

pub use avx2::Avx2;
