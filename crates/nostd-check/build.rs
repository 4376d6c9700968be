//! The binary has no std, so nothing links the C library (which provides the process
//! entry point calling our `main`, and `write`/`exit`) unless asked to.
fn main() {
    println!("cargo:rustc-link-arg-bins=-lc");
}
