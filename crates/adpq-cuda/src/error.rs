//! What the CUDA backend can fail with, before any kernel runs or while one does.

/// An error of the CUDA backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CudaError {
    /// libcuda (the driver) cannot be loaded: no NVIDIA driver on this machine.
    #[error("no CUDA driver: libcuda could not be loaded")]
    NoDriver,
    /// libnvrtc cannot be loaded (it compiles the kernels at run time).
    #[error("no NVRTC: libnvrtc could not be loaded (install the CUDA 12 runtime compiler)")]
    NoNvrtc,
    /// The driver loaded but reports no device.
    #[error("no CUDA device")]
    NoDevice,
    /// A kernel file did not compile.
    #[error("kernel {kernel} did not compile for {arch}: {log}")]
    Compile {
        /// The kernel file.
        kernel: &'static str,
        /// The architecture.
        arch: String,
        /// NVRTC's message and log.
        log: String,
    },
    /// A driver call failed.
    #[error("CUDA driver: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
}
