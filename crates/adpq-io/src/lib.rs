//! `adpq-io`: checkpoint I/O for adpq, with no CLI in it.
//!
//! Its job: read safetensors checkpoints (single files and sharded Hugging Face folders)
//! through a memory map, understand and write the adpq metadata, and write outputs as a
//! stream into a temporary file or folder that is renamed into place only when
//! everything succeeded. It does no arithmetic on weights: selection, quantization and
//! statistics belong to `adpq-engine`, the command pipeline and reports to the `adpq`
//! binary.
//!
//! Where to start reading:
//! - [`Checkpoint::open`]: an input, file or folder, and its [`SafetensorsFile`]s;
//!   [`SafetensorsFile::tensor`] looks a tensor up by name in O(log n) and
//!   [`weight_data`] views its weights.
//! - [`meta`]: the `__metadata__` keys of an adpq checkpoint and the record of each
//!   quantized tensor's original dtype and shape.
//! - [`Output`] (temporary file or folder, then rename), [`TensorWriter`] and
//!   [`with_writer`] (the header first, then the tensors streamed from a writer thread;
//!   see [`write`](mod@write) for why the sizes must be known up front).
//!
//! - [`harness`]: every reader over arbitrary bytes, for the `checkpoint` fuzz target.
//!
//! `unsafe` lives in one private module (the memory map) with its contract documented.
#![deny(missing_docs)]
#![deny(unsafe_code)]

#[cfg(target_endian = "big")]
compile_error!(
    "adpq reads safetensors (little-endian) data in place and supports little-endian targets only"
);

mod checkpoint;
mod error;
mod file;
pub mod harness;
mod header;
mod index;
pub mod meta;
mod mmap;
mod output;
pub mod write;

pub use checkpoint::{is_plain_file_name, Checkpoint, Source, INDEX_FILE, SINGLE_FILE};
pub use error::{Error, Result};
pub use file::{weight_data, SafetensorsFile, TensorRef, WeightData};
pub use output::Output;
pub use safetensors::Dtype;
pub use write::{
    header_bytes, sort_for_output, with_writer, Chunk, Emitter, PlannedTensor, TensorWriter,
};
