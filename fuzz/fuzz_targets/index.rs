//! Arbitrary bytes as a sharded folder's `model.safetensors.index.json`
//! (`adpq_io::harness::index`), in memory: the shard names it lists never leave the
//! folder, an index accepted against the shards lists exactly their tensors, and the
//! output index (with `metadata.total_size`) reads back the same. Errors, never panics,
//! bounded memory.
//!
//! Seeds (`fuzz/seeds/index`): the index of the sharded MiniLM checkpoint
//! (`target/data/minilm-sharded`), one that matches the harness's two in-memory shards,
//! and one with a shard name that tries to leave the folder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    adpq_io::harness::index(data);
});
