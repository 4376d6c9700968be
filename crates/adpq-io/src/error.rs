//! The error type of the std crates and the CLI: every error names the file and, where it
//! applies, the tensor.

use std::path::PathBuf;

/// Result alias of the std crates.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reading, quantizing or writing a checkpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error on a path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file.
    #[error("{}: not a valid safetensors file: {source}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the safetensors parser reported.
        source: safetensors::SafeTensorError,
    },
    /// The core rejected a tensor (NaN weight, corrupt packed buffer, ...).
    #[error("{}: tensor `{tensor}`: {source}", path.display())]
    Core {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The core's error.
        source: adpq_core::Error,
    },
    /// A tensor is unusable for another reason (dtype, shape, metadata).
    #[error("{}: tensor `{tensor}`: {message}", path.display())]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// What is wrong.
        message: String,
    },
    /// A file or folder is unusable (bad index, bad metadata, missing shard...).
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The request itself is wrong (maps to exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The run was stopped by a signal (SIGINT, SIGTERM...) before it committed anything;
    /// the temporary outputs are removed on the way out.
    #[error("interrupted by {name}: nothing was written")]
    Interrupted {
        /// The signal's name (`SIGINT`).
        name: &'static str,
        /// Its number: the exit code is 128 plus it.
        signal: u8,
    },
    /// `verify` found problems; each line names a file and tensor.
    #[error("verification failed for {} tensor(s):\n{}", .0.len(), .0.join("\n"))]
    VerifyFailed(Vec<String>),
}

impl Error {
    /// The process exit code this error maps to: 2 for usage errors, 128 + the signal
    /// when interrupted (130 for SIGINT, 143 for SIGTERM), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::Interrupted { signal, .. } => 128u8.saturating_add(*signal),
            _ => 1,
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An unusable file or folder.
    pub fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Error {
        Error::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    /// An unusable tensor.
    pub fn tensor(path: impl Into<PathBuf>, tensor: &str, message: impl Into<String>) -> Error {
        Error::Tensor {
            path: path.into(),
            tensor: tensor.to_string(),
            message: message.into(),
        }
    }

    /// The core rejected a tensor.
    pub fn core(path: impl Into<PathBuf>, tensor: &str, source: adpq_core::Error) -> Error {
        Error::Core {
            path: path.into(),
            tensor: tensor.to_string(),
            source,
        }
    }
}
