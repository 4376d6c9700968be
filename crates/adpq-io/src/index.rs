//! The tensors of a safetensors header in a compact table, kept for the life of a
//! [`SafetensorsFile`](crate::SafetensorsFile).
//!
//! The `safetensors` crate's `Metadata` (a hash index of the names, a list of
//! `(String, TensorInfo)`, each shape its own `Vec`) costs about 250 bytes per tiny
//! tensor, held while the file is open, for every shard of a folder. The same facts fit
//! in a 32-byte entry per tensor, one string of every name and one list of every shape,
//! with lookups by name over a sorted list of entry numbers: about 50 bytes plus the
//! name. A header is read straight into this table (`header.rs`), checked by the crate's
//! rules ([`TensorIndex::tiled_len`]).

use safetensors::tensor::Metadata;
use safetensors::Dtype;

/// One tensor of the table: where its name and shape are in the shared arenas.
#[derive(Debug, Clone, Copy)]
struct Entry {
    name_start: u32,
    name_len: u32,
    shape_start: u32,
    rank: u32,
    dtype: Dtype,
    /// Start and end of the data, relative to the data section.
    offsets: (usize, usize),
}

/// A header's tensors in data order (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct TensorIndex {
    /// Every name, concatenated in data order.
    names: String,
    /// Every shape, concatenated in data order.
    shapes: Vec<usize>,
    entries: Vec<Entry>,
    /// Entry numbers sorted by name.
    by_name: Vec<u32>,
}

impl TensorIndex {
    /// Adds a tensor (any order: [`finish`](Self::finish) sorts). `None` if an arena
    /// would outgrow `u32` positions, which a header of at most 100 MB (the crate's
    /// limit) never does.
    pub(crate) fn push(
        &mut self,
        name: &str,
        dtype: Dtype,
        shape: &[usize],
        offsets: (usize, usize),
    ) -> Option<()> {
        self.entries.push(Entry {
            name_start: u32::try_from(self.names.len()).ok()?,
            name_len: u32::try_from(name.len()).ok()?,
            shape_start: u32::try_from(self.shapes.len()).ok()?,
            rank: u32::try_from(shape.len()).ok()?,
            dtype,
            offsets,
        });
        self.names.push_str(name);
        self.shapes.extend_from_slice(shape);
        Some(())
    }

    /// Puts the tensors in data order (by offsets; tensors at the same offsets, empty
    /// ones, by name, so the order never depends on a hash) and indexes the names.
    /// `None` if a name is there twice.
    pub(crate) fn finish(mut self) -> Option<TensorIndex> {
        let names = &self.names;
        let name_of = |e: &Entry| {
            let start = e.name_start as usize;
            &names[start..start + e.name_len as usize]
        };
        self.entries
            .sort_unstable_by(|a, b| (a.offsets, name_of(a)).cmp(&(b.offsets, name_of(b))));
        self.entries.shrink_to_fit();
        self.shapes.shrink_to_fit();
        self.names.shrink_to_fit();
        let count = u32::try_from(self.entries.len()).ok()?;
        let mut by_name: Vec<u32> = (0..count).collect();
        by_name.sort_unstable_by(|&a, &b| self.name(a as usize).cmp(self.name(b as usize)));
        if by_name
            .windows(2)
            .any(|w| self.name(w[0] as usize) == self.name(w[1] as usize))
        {
            return None;
        }
        self.by_name = by_name;
        Some(self)
    }

    /// The table of a header the `safetensors` crate validated.
    pub(crate) fn from_metadata(metadata: &Metadata) -> Option<TensorIndex> {
        let mut index = TensorIndex::default();
        for name in metadata.offset_keys() {
            let info = metadata.info(&name)?;
            index.push(&name, info.dtype, &info.shape, info.data_offsets)?;
        }
        index.finish()
    }

    /// The length of the data section when the tensors tile it as the `safetensors` crate
    /// requires (`Metadata::validate`): in data order each starts where the previous
    /// ended, from 0, and holds exactly the bytes its shape and dtype need (whole bytes,
    /// no overflow). `None` for anything else.
    pub(crate) fn tiled_len(&self) -> Option<usize> {
        let mut end = 0usize;
        for (i, e) in self.entries.iter().enumerate() {
            let (s, t) = e.offsets;
            if s != end || t < s {
                return None;
            }
            let elements = self
                .shape(i)
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))?;
            let bits = elements.checked_mul(e.dtype.bitsize())?;
            if bits % 8 != 0 || t - s != bits / 8 {
                return None;
            }
            end = t;
        }
        Some(end)
    }

    /// Number of tensors.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Name of tensor `i` (data order).
    pub(crate) fn name(&self, i: usize) -> &str {
        let e = &self.entries[i];
        let start = e.name_start as usize;
        &self.names[start..start + e.name_len as usize]
    }

    /// Shape of tensor `i`.
    pub(crate) fn shape(&self, i: usize) -> &[usize] {
        let e = &self.entries[i];
        let start = e.shape_start as usize;
        &self.shapes[start..start + e.rank as usize]
    }

    /// Element type of tensor `i`.
    pub(crate) fn dtype(&self, i: usize) -> Dtype {
        self.entries[i].dtype
    }

    /// Data offsets of tensor `i`, relative to the data section.
    pub(crate) fn offsets(&self, i: usize) -> (usize, usize) {
        self.entries[i].offsets
    }

    /// The data-order position of the tensor called `name`: O(log n).
    pub(crate) fn find(&self, name: &str) -> Option<usize> {
        let at = self
            .by_name
            .binary_search_by(|&i| self.name(i as usize).cmp(name))
            .ok()?;
        Some(self.by_name[at] as usize)
    }
}
