//! `adpq`: the std side of the AdpQ toolkit (checkpoint I/O, parallel driver, CLI).
#![deny(missing_docs)]

pub use adpq_core as core;
