//! Builds the device arithmetic for the host when the `host-math` feature is on (the
//! tests' dev-dependency turns it on): one C file that includes `kernels/adpq_math.cuh`.

fn main() {
    println!("cargo:rerun-if-changed=host/host_math.c");
    println!("cargo:rerun-if-changed=kernels/adpq_math.cuh");
    #[cfg(feature = "host-math")]
    cc::Build::new()
        .file("host/host_math.c")
        .std("c11")
        .opt_level(2)
        // Byte identity with the Rust oracle: every f32 product and sum rounded on its
        // own (NVRTC gets --fmad=false for the same reason), no excess precision.
        .flag("-ffp-contract=off")
        .flag_if_supported("-fexcess-precision=standard")
        .warnings(true)
        .extra_warnings(true)
        .compile("adpq_host_math");
}
