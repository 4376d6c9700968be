//! `cargo xtask demo` (not implemented yet).
use crate::DynResult;

/// Entry point.
pub fn run(_args: &[String]) -> DynResult {
    Err("not implemented yet".into())
}

/// `cargo xtask fetch`.
pub fn fetch(_args: &[String]) -> DynResult {
    Err("not implemented yet".into())
}
