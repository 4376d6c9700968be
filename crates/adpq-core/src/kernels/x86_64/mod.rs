//! x86_64 backends.

mod avx2;
mod lanes;

pub use avx2::Avx2;
