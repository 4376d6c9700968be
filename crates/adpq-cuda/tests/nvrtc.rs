//! The compile check: every kernel file through the crate's own NVRTC path
//! (`adpq_cuda::ptx::compile_all`, the function `CudaEngine` uses, with its options) for
//! sm_80 and sm_90, the PTX written to `target/cuda-check/<arch>/` and assembled by
//! `ptxas`. Needs libnvrtc on the library path and `ADPQ_PTXAS` naming ptxas, which
//! `scripts/cuda-check.sh` sets up from NVIDIA's PyPI wheels; ignored by default.
//! No GPU is involved: this proves the kernels compile and assemble, not that they run.

use std::path::PathBuf;
use std::process::Command;

use adpq_cuda::ptx::{compile, compile_all, nvrtc_present, Arch, KERNELS};
use adpq_cuda::CudaError;

fn out_dir(arch: Arch) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/cuda-check")
        .join(arch.name());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
#[ignore = "needs NVRTC and ptxas: run scripts/cuda-check.sh"]
fn kernels_compile_and_assemble() {
    assert!(
        nvrtc_present(),
        "libnvrtc not found: run scripts/cuda-check.sh"
    );
    let ptxas = std::env::var("ADPQ_PTXAS").expect("ADPQ_PTXAS must name ptxas");
    for arch in [Arch::SM80, Arch::SM90] {
        let ptx = compile_all(arch).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ptx.len(), KERNELS.len());
        let dir = out_dir(arch);
        for k in &ptx {
            assert!(
                k.ptx.contains(".entry"),
                "{}: no kernel entry in the PTX",
                k.name
            );
            // Byte identity with the oracle needs every product and sum rounded on its
            // own and subnormals kept: no fused multiply-add, no flush to zero.
            assert!(
                !k.ptx.contains("fma.rn"),
                "{}: fused multiply-add in the PTX",
                k.name
            );
            assert!(
                !k.ptx.contains(".ftz"),
                "{}: flush to zero in the PTX",
                k.name
            );
            let ptx_path = dir.join(format!("{}.ptx", k.name));
            let cubin = dir.join(format!("{}.cubin", k.name));
            std::fs::write(&ptx_path, &k.ptx).unwrap();
            let out = Command::new(&ptxas)
                .arg(format!("-arch={}", arch.name()))
                .arg("-v")
                .arg(&ptx_path)
                .arg("-o")
                .arg(&cubin)
                .output()
                .expect("ptxas runs");
            assert!(
                out.status.success(),
                "ptxas {} {}: {}",
                arch.name(),
                k.name,
                String::from_utf8_lossy(&out.stderr)
            );
            let usage = String::from_utf8_lossy(&out.stderr);
            let entries = usage.matches("Compiling entry function").count();
            println!(
                "{} {}: {} bytes of PTX, {} entries assembled ({} bytes of cubin)",
                arch.name(),
                k.name,
                k.ptx.len(),
                entries,
                std::fs::metadata(&cubin).unwrap().len()
            );
        }
    }
}

/// The check fails on a kernel that does not compile, with NVRTC's log in the error.
#[test]
#[ignore = "needs NVRTC: run scripts/cuda-check.sh"]
fn a_broken_kernel_is_an_error() {
    assert!(
        nvrtc_present(),
        "libnvrtc not found: run scripts/cuda-check.sh"
    );
    let src = "#include \"device.cuh\"\nextern \"C\" __global__ void k(float *y) { y[0] = no_such_function(); }\n";
    match compile("broken", src, Arch::SM90) {
        Err(CudaError::Compile { kernel, log, .. }) => {
            assert_eq!(kernel, "broken");
            assert!(log.contains("no_such_function"), "{log}");
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
}

/// Without libnvrtc the compile path is an error, not a panic (cudarc panics on first use
/// of a missing library).
#[test]
fn without_nvrtc_compiling_is_an_error() {
    if nvrtc_present() {
        println!("SKIPPED: libnvrtc is loadable here; the error path needs it absent");
        return;
    }
    assert!(matches!(compile_all(Arch::SM90), Err(CudaError::NoNvrtc)));
}
