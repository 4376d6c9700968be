//! The only module with `unsafe` code: read-only memory maps of input files.
//!
//! # The contract
//! A memory map is sound only while nobody modifies or truncates the file: Rust assumes
//! the bytes behind a `&[u8]` do not change. adpq opens inputs read-only and never writes
//! them, but another process could. Like every mmap-based safetensors loader, we accept
//! that risk and document it: **do not modify a checkpoint while adpq reads it.**
#![allow(unsafe_code)]

use std::fs::File;
use std::path::Path;

use memmap2::{Mmap, UncheckedAdvice};

use crate::error::{Error, Result};

/// A read-only map of a whole file.
#[derive(Debug)]
pub(crate) struct MappedFile {
    map: Mmap,
}

impl MappedFile {
    /// Maps `path` read-only.
    pub(crate) fn open(path: &Path) -> Result<MappedFile> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the file is opened read-only and adpq never writes its inputs; the
        // module documentation states the remaining requirement on other processes
        // (the file must not be modified or truncated while mapped).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(MappedFile { map })
    }

    /// The file's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Tells the kernel that `range` will not be read again soon, so its pages leave this
    /// process's resident set (peak memory then stays near the largest tensor instead of
    /// growing to the model size). Best effort: errors are ignored.
    pub(crate) fn release(&self, start: usize, len: usize) {
        if len == 0 || start >= self.map.len() {
            return;
        }
        let len = len.min(self.map.len() - start);
        // SAFETY: `MADV_DONTNEED` on a shared, read-only, file-backed mapping only drops
        // the page-table entries: the next access faults the same file contents back in.
        // No byte any live slice can observe changes (the map is never written, so there
        // are no private dirty pages to lose), and the range is inside the map.
        let _ = unsafe {
            self.map
                .unchecked_advise_range(UncheckedAdvice::DontNeed, start, len)
        };
    }
}
