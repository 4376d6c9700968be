//! Builds the device code for the host when the `host-math` feature is on (the tests'
//! dev-dependency turns it on): `host/host_math.c` over `kernels/adpq_math.cuh`, and the
//! `.cu` kernels themselves under the CUDA emulation of `host/emulate.hpp`.

fn main() {
    for f in [
        "host/host_math.c",
        "host/emulate.hpp",
        "host/emu_select.cpp",
        "host/emu_quantize.cpp",
        "host/emu_dequantize.cpp",
        "host/emu_gemv.cpp",
        "kernels/adpq_math.cuh",
        "kernels/device.cuh",
        "kernels/select.cu",
        "kernels/quantize.cu",
        "kernels/dequantize.cu",
        "kernels/gemv.cu",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    // Set by host_math() when no C++20 compiler builds the kernel emulation.
    println!("cargo:rustc-check-cfg=cfg(adpq_no_emulation)");
    #[cfg(feature = "host-math")]
    host_math();
}

#[cfg(feature = "host-math")]
fn host_math() {
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
    // The kernels on emulated CUDA threads (OS threads, barriers, std::atomic_ref): the
    // same contraction rule as NVRTC's --fmad=false. Needs a C++20 compiler; without one
    // the emulated-kernel tests say SKIPPED (and fail under ADPQ_REQUIRE_EMULATION=1,
    // which scripts/cuda-check.sh sets after installing g++).
    let emulation = cc::Build::new()
        .cpp(true)
        .std("c++20")
        .files([
            "host/emu_select.cpp",
            "host/emu_quantize.cpp",
            "host/emu_dequantize.cpp",
            "host/emu_gemv.cpp",
        ])
        .opt_level(1)
        .flag("-ffp-contract=off")
        .flag("-pthread")
        .warnings(true)
        .try_compile("adpq_emulated_kernels");
    match emulation {
        Ok(()) => println!("cargo:rustc-link-lib=pthread"),
        Err(e) => {
            println!(
                "cargo:warning=adpq-cuda: no C++20 compiler ({e}); emulated-kernel tests skipped"
            );
            println!("cargo:rustc-cfg=adpq_no_emulation");
        }
    }
}
