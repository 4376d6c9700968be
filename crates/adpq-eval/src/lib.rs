//! `adpq-eval`: how much of a model's quality an adpq checkpoint keeps, measured in Rust.
//!
//! Its job: run a Llama-architecture causal LM (SmolLM2, Llama, ...) over fixed windows
//! of tokenized text, once with the input checkpoint's weights and once with each
//! candidate's (an adpq checkpoint's packed weights, or a round-to-nearest baseline),
//! and report perplexity, the mean KL divergence of the candidate's next-token
//! distributions from the input's, and top-1 agreement. It knows no command line (that
//! is `adpq eval`); files come through `adpq-io`, packed rows are dequantized by an
//! [`Engine`](adpq_engine::Engine) (the CPU's, or a device's). It is also the worked
//! example of an inference engine on the core.
//!
//! Where to start reading:
//! - [`evaluate`] (module [`eval`]): windows, the comparison loop, the metrics.
//! - [`forward::logits`]: the forward pass over one window.
//! - [`decode::Decoder`]: token-by-token decoding with a KV cache, every packed product
//!   a fused int8-activation dot on the packed rows (`adpq generate`).
//! - [`Model::load`]: weights by Hugging Face name, dense or packed; [`Model::with_rtn`]
//!   for the RTN baselines ([`RtnSpec`]).
//! - [`Linear::matmul`]: `Y = X Wᵀ`, a block of weight rows at a time (about rows /
//!   threads rows, at most 1024, dequantized into a per-thread buffer when packed),
//!   one GEMM per block, blocks in parallel.
//! - [`LlamaConfig`] (`config.json`) and [`TextTokenizer`] (`tokenizer.json`).
//! - [`PackedProjections`]: a model's projections quantized in memory with any
//!   parameters (a sweep's variants, no files written).
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod config;
pub mod decode;
pub mod eval;
pub mod forward;
mod linear;
mod model;
pub mod peer;
mod repack;
mod rtn;
mod tokenizer;
mod variant;

use std::path::{Path, PathBuf};

pub use config::LlamaConfig;
pub use eval::{evaluate, windows, Candidate, EvalReport, Score, Step};
pub use linear::Linear;
pub use model::{Layer, Model};
pub use repack::RepackedRows;
pub use rtn::RtnSpec;
pub use tokenizer::TextTokenizer;
pub use variant::PackedProjections;

/// What an evaluation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// An I/O error on a file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The checkpoint could not be read (or a packed tensor is invalid).
    #[error(transparent)]
    Checkpoint(#[from] adpq_io::Error),
    /// The core rejected a packed tensor while dequantizing it.
    #[error(transparent)]
    Core(#[from] adpq_core::Error),
    /// `config.json` is unusable.
    #[error("config: {0}")]
    Config(String),
    /// `tokenizer.json` is unusable or the text cannot be encoded.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A tensor the model needs is absent.
    #[error("tensor `{0}` is missing from the checkpoint")]
    MissingTensor(String),
    /// A tensor or buffer has the wrong shape.
    #[error("{0}")]
    Shape(String),
    /// The text is unusable (too short for the windows, a token outside the vocabulary).
    #[error("text: {0}")]
    Text(String),
    /// llama.cpp's quantizer (the peer) failed on a tensor.
    #[error("llama.cpp peer, tensor `{tensor}`: {source}")]
    Peer {
        /// The tensor.
        tensor: String,
        /// What the peer said.
        source: peer::PeerError,
    },
    /// The engine failed otherwise than on the core's terms (a device error).
    #[error(transparent)]
    Engine(adpq_engine::EngineError),
}

impl EvalError {
    /// An engine's error: the core's keep their variant.
    fn from_engine(e: adpq_engine::EngineError) -> EvalError {
        match e {
            adpq_engine::EngineError::Core(e) => EvalError::Core(e),
            other => EvalError::Engine(other),
        }
    }

    fn io(path: &Path, source: std::io::Error) -> EvalError {
        EvalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = EvalError> = std::result::Result<T, E>;
