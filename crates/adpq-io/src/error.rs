//! The error type of the std crates: file and data errors, each naming the file and, where
//! it applies, the tensor. (The CLI's own errors, usage, interruption, failed
//! verification, and its exit codes live in the `adpq` binary.)

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
    /// The output path cannot be used as asked: a folder where a file output goes, a
    /// file where a folder output goes, a non-empty folder without `force`. The caller's
    /// request is at fault, not the data (the CLI maps it to its usage exit code).
    #[error("{}: {message}", path.display())]
    OutputPath {
        /// The output path.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The writer thread of [`with_writer`](crate::with_writer) stopped (on its own error,
    /// which `with_writer` returns instead) before the producer was done.
    #[error("the output writer stopped")]
    WriterStopped,
}

impl Error {
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
