//! Stands in for `tests/emulated.rs` when build.rs found no C++20 compiler for the kernel
//! emulation: says SKIPPED, or fails when `ADPQ_REQUIRE_EMULATION=1` (CI's cuda step).
#![cfg(adpq_no_emulation)]

#[test]
fn emulated_kernels_were_not_built() {
    let msg = "no C++20 compiler when adpq-cuda was built: emulated-kernel tests not run \
               (install g++, or run scripts/cuda-check.sh)";
    if std::env::var_os("ADPQ_REQUIRE_EMULATION").is_some_and(|v| v == "1") {
        panic!("{msg}");
    }
    println!("SKIPPED: {msg}");
}
