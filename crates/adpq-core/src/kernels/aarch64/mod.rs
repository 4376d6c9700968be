//! aarch64 backends.

mod neon;

pub use neon::Neon;
