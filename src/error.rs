//! The CLI's error type and exit codes: `adpq-io`'s file and data errors, plus what only
//! the command line has (a usage error, a signal, a failed `verify`, stdout).

use std::path::PathBuf;

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or data error (names the file and, where it applies, the tensor).
    #[error(transparent)]
    Data(#[from] adpq_io::Error),
    /// The request itself is wrong (exit code 2).
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
    /// Writing the command's output to stdout failed (`> /dev/full`). A closed pipe is
    /// [`Error::BrokenPipe`].
    #[error("stdout: {0}")]
    Stdout(std::io::Error),
    /// stdout is a pipe whose reader has gone (`| head -c1`): the command stops quietly,
    /// as a Unix tool killed by SIGPIPE would (exit 141, no message).
    #[error("stdout: the pipe was closed")]
    BrokenPipe,
}

/// Result alias of the CLI.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exit code of an interrupted run: 128 + the signal.
pub fn signal_exit_code(signal: u8) -> u8 {
    128u8.saturating_add(signal)
}

/// 128 + SIGPIPE: the status of a Unix tool whose stdout reader has gone.
pub const BROKEN_PIPE_EXIT: u8 = 141;

impl Error {
    /// The process exit code this error maps to: 2 for usage errors (also an output path
    /// that cannot be used as asked), 128 + the signal when interrupted (130 for SIGINT,
    /// 143 for SIGTERM, 129 for SIGHUP), 141 for a closed stdout pipe, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::Data(adpq_io::Error::OutputPath { .. }) => 2,
            Error::Interrupted { signal, .. } => signal_exit_code(*signal),
            Error::BrokenPipe => BROKEN_PIPE_EXIT,
            _ => 1,
        }
    }

    /// Whether the error is reported on stderr (a closed pipe is not).
    pub fn is_reported(&self) -> bool {
        !matches!(self, Error::BrokenPipe)
    }

    /// A write to stdout failed.
    pub fn stdout(e: std::io::Error) -> Error {
        match e.kind() {
            std::io::ErrorKind::BrokenPipe => Error::BrokenPipe,
            _ => Error::Stdout(e),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        adpq_io::Error::io(path, source).into()
    }

    /// An unusable file or folder.
    pub fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Error {
        adpq_io::Error::invalid(path, message).into()
    }

    /// An unusable tensor.
    pub fn tensor(path: impl Into<PathBuf>, tensor: &str, message: impl Into<String>) -> Error {
        adpq_io::Error::tensor(path, tensor, message).into()
    }

    /// The core rejected a tensor.
    pub fn core(path: impl Into<PathBuf>, tensor: &str, source: adpq_core::Error) -> Error {
        adpq_io::Error::core(path, tensor, source).into()
    }
}
