//! The kernels' sources and their compilation to PTX with NVRTC: the one path
//! [`CudaEngine`](crate::CudaEngine) and the compile check (`tests/nvrtc.rs`) share.
//!
//! The `.cu` files include `device.cuh` and `adpq_math.cuh`; the sources are embedded in
//! the library and the includes resolved here, so nothing is read from disk at run time.

use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};

use crate::error::CudaError;

/// The kernel files, by name, as embedded in the library.
pub const KERNELS: [(&str, &str); 4] = [
    ("select", include_str!("../kernels/select.cu")),
    ("quantize", include_str!("../kernels/quantize.cu")),
    ("dequantize", include_str!("../kernels/dequantize.cu")),
    ("gemv", include_str!("../kernels/gemv.cu")),
];

/// The headers the kernels include, by file name.
const HEADERS: [(&str, &str); 2] = [
    ("device.cuh", include_str!("../kernels/device.cuh")),
    ("adpq_math.cuh", include_str!("../kernels/adpq_math.cuh")),
];

/// A GPU architecture the kernels are compiled for (`sm_XX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Arch {
    /// Compute capability major version.
    pub major: u32,
    /// Compute capability minor version.
    pub minor: u32,
}

impl Arch {
    /// Ampere (A100).
    pub const SM80: Arch = Arch { major: 8, minor: 0 };
    /// Hopper (H100, H200).
    pub const SM90: Arch = Arch { major: 9, minor: 0 };

    /// `sm_XX`, as NVRTC and ptxas name it.
    pub fn name(&self) -> String {
        format!("sm_{}{}", self.major, self.minor)
    }
}

/// NVRTC options of every compilation. `--fmad=false`: no multiply-add contraction, so
/// each f32/f64 product and sum rounds on its own, as in the Rust oracle (byte identity
/// of the codes and grids depends on it); IEEE division and square root, no flush of
/// subnormals to zero (the format stores subnormal steps).
fn options(arch: Arch) -> CompileOptions {
    CompileOptions {
        fmad: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        ftz: Some(false),
        use_fast_math: Some(false),
        // NVRTC wants a `'static` name; the few architectures are leaked once each.
        arch: Some(arch_name(arch)),
        options: vec!["--std=c++14".into()],
        ..CompileOptions::default()
    }
}

fn arch_name(arch: Arch) -> &'static str {
    match arch {
        Arch::SM80 => "sm_80",
        Arch::SM90 => "sm_90",
        a => Box::leak(a.name().into_boxed_str()),
    }
}

/// The source of kernel file `src` with its `#include "..."` lines of the crate's
/// headers replaced by the headers (recursively, each once).
pub(crate) fn expand(src: &str) -> String {
    fn go(src: &str, seen: &mut Vec<&'static str>, out: &mut String) {
        for line in src.lines() {
            let inc = line
                .trim()
                .strip_prefix("#include \"")
                .and_then(|r| r.strip_suffix('"'));
            match inc.and_then(|name| HEADERS.iter().find(|(n, _)| *n == name)) {
                Some((name, text)) => {
                    if !seen.contains(name) {
                        seen.push(name);
                        go(text, seen, out);
                    }
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
    }
    let mut out = String::new();
    go(src, &mut Vec::new(), &mut out);
    out
}

/// PTX of one kernel file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPtx {
    /// The file's name (`select`, `quantize`...).
    pub name: &'static str,
    /// The PTX text.
    pub ptx: String,
}

/// Whether NVRTC's library can be loaded (cudarc panics on first use otherwise).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to open the library (libloading); it calls nothing in it.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles every kernel file for `arch` with NVRTC; the first failure is an error that
/// carries NVRTC's log.
pub fn compile_all(arch: Arch) -> Result<Vec<KernelPtx>, CudaError> {
    KERNELS
        .iter()
        .map(|&(name, src)| compile(name, src, arch).map(|ptx| KernelPtx { name, ptx }))
        .collect()
}

/// Compiles one kernel source (its includes of the crate's headers resolved) for `arch`
/// with the options every kernel gets, into PTX text.
pub fn compile(name: &'static str, src: &str, arch: Arch) -> Result<String, CudaError> {
    if !nvrtc_present() {
        return Err(CudaError::NoNvrtc);
    }
    let mut opts = options(arch);
    opts.name = Some(format!("{name}.cu"));
    compile_ptx_with_opts(expand(src), opts)
        .map(|ptx| ptx.to_src())
        .map_err(|e| CudaError::Compile {
            kernel: name,
            arch: arch.name(),
            log: e.to_string(),
        })
}
