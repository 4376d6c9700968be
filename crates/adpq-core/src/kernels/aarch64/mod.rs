//! aarch64 backends.

mod lanes;
mod neon;

pub use neon::Neon;
