//! `cargo xtask fuzz` (not implemented yet).
use crate::DynResult;

/// Entry point.
pub fn run(_args: &[String]) -> DynResult {
    Err("not implemented yet".into())
}
