//! One safetensors file, memory-mapped (or held in memory) and validated, and borrowed
//! views of its tensors. Its header is kept as a compact table ([`TensorIndex`]): a
//! tensor is found by name in O(log n) or by its position in data order in O(1).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adpq_core::{bf16, f16, Weights};
use safetensors::Dtype;

use crate::error::{Error, Result};
use crate::header::read_metadata;
use crate::index::TensorIndex;
use crate::mmap::MappedFile;

/// Where the bytes of a [`SafetensorsFile`] live.
#[derive(Debug)]
enum Bytes {
    Mapped(MappedFile),
    Owned(Vec<u8>),
}

impl Bytes {
    fn get(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m.bytes(),
            Bytes::Owned(v) => v,
        }
    }
}

/// One validated safetensors file, memory-mapped ([`SafetensorsFile::open`]) or held in
/// memory ([`SafetensorsFile::from_bytes`]).
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    map: Bytes,
    data_start: usize,
    /// The header's tensors, in data order.
    index: TensorIndex,
    /// The header's `__metadata__`.
    user_metadata: BTreeMap<String, String>,
    /// Released bytes not yet handed to the kernel (a contiguous range): see
    /// [`SafetensorsFile::release`].
    pending: std::sync::Mutex<(usize, usize)>,
}

/// Released ranges are handed to the kernel once they add up to this many bytes.
const RELEASE_BATCH: usize = 1 << 20;

/// A tensor inside a [`SafetensorsFile`].
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    /// Name.
    pub name: &'a str,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: &'a [usize],
    /// Raw little-endian bytes.
    pub data: &'a [u8],
    /// Offset of `data` in the file.
    pub file_offset: usize,
}

impl TensorRef<'_> {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

impl SafetensorsFile {
    /// Opens, maps and validates a safetensors file (header JSON, dtypes, offsets that
    /// tile the data section exactly, sizes that match the shapes).
    pub fn open(path: &Path) -> Result<SafetensorsFile> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            return Err(Error::invalid(
                path,
                format!("not a regular file ({})", crate::checkpoint::kind_of(&meta)),
            ));
        }
        Self::parse(path, Bytes::Mapped(MappedFile::open(path)?))
    }

    /// Validates a safetensors file held in memory (`path` only names it in messages):
    /// the same checks as [`SafetensorsFile::open`], without touching the disk.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<SafetensorsFile> {
        Self::parse(path, Bytes::Owned(bytes))
    }

    fn parse(path: &Path, map: Bytes) -> Result<SafetensorsFile> {
        let bytes = map.get();
        if bytes.len() < 8 {
            return Err(Error::invalid(
                path,
                format!(
                    "not a valid safetensors file: {} bytes is shorter than the 8-byte header length",
                    bytes.len()
                ),
            ));
        }
        let header =
            read_metadata(bytes).map_err(|source| match crate::header::diagnose(bytes) {
                Some(why) => Error::invalid(path, format!("not a valid safetensors file: {why}")),
                None => Error::Safetensors {
                    path: path.to_path_buf(),
                    source,
                },
            })?;
        // Tensors at the same offsets (empty ones) come in hash order: sort each such run by
        // name, so the order is deterministic.
        let crate::header::Header {
            header_len,
            index,
            user,
        } = header;
        let user_metadata = user.into_iter().collect();
        // The header's text is parsed: its pages leave the resident set (10⁶ tensors:
        // about 90 MB of JSON); a later read (a diagnosis) faults them back in.
        if let Bytes::Mapped(m) = &map {
            m.release(0, 8 + header_len);
        }
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            map,
            data_start: 8 + header_len,
            index,
            user_metadata,
            pending: std::sync::Mutex::new((0, 0)),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's name (the last component of its path).
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Size of the file in bytes.
    pub fn len(&self) -> usize {
        self.map.get().len()
    }

    /// True for a file without tensors or metadata (never: a file has a header).
    pub fn is_empty(&self) -> bool {
        self.map.get().is_empty()
    }

    /// Number of tensors.
    pub fn tensor_count(&self) -> usize {
        self.index.len()
    }

    /// Tensor names in data order.
    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> {
        (0..self.index.len()).map(|i| self.index.name(i))
    }

    /// Tensor `i` in data order (`i < tensor_count()`; `None` beyond): O(1).
    pub fn at(&self, i: usize) -> Option<TensorRef<'_>> {
        if i >= self.index.len() {
            return None;
        }
        let (s, e) = self.index.offsets(i);
        let at = self.data_start.checked_add(s)?;
        let data = self.map.get().get(at..self.data_start.checked_add(e)?)?;
        Some(TensorRef {
            name: self.index.name(i),
            dtype: self.index.dtype(i),
            shape: self.index.shape(i),
            data,
            file_offset: at,
        })
    }

    /// The tensor called `name`: O(log n).
    pub fn tensor(&self, name: &str) -> Option<TensorRef<'_>> {
        self.at(self.index.find(name)?)
    }

    /// Whether the file holds a tensor called `name`: O(log n).
    pub fn contains(&self, name: &str) -> bool {
        self.index.find(name).is_some()
    }

    /// All tensors, in data order.
    pub fn tensors(&self) -> Vec<TensorRef<'_>> {
        self.iter().collect()
    }

    /// All tensors, in data order, one at a time (no list of every tensor).
    pub fn iter(&self) -> impl Iterator<Item = TensorRef<'_>> {
        (0..self.index.len()).filter_map(|i| self.at(i))
    }

    /// The `__metadata__` map (empty when absent).
    pub fn user_metadata(&self) -> BTreeMap<String, String> {
        self.user_metadata.clone()
    }

    /// Drops the tensor's pages from the resident set (see the module docs). Small
    /// tensors are gathered into contiguous ranges of at least 1 MiB first: one
    /// `madvise` per tiny tensor would cost a TLB shootdown each and drop pages its
    /// neighbours are still reading.
    pub fn release(&self, t: &TensorRef<'_>) {
        let Bytes::Mapped(m) = &self.map else {
            return;
        };
        let (s, e) = (t.file_offset, t.file_offset + t.data.len());
        if e - s >= RELEASE_BATCH {
            m.release(s, e - s);
            return;
        }
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.1 == s && p.0 < p.1 {
            p.1 = e;
        } else if p.0 == e && p.0 < p.1 {
            p.0 = s;
        } else {
            if p.0 < p.1 {
                m.release(p.0, p.1 - p.0);
            }
            *p = (s, e);
        }
        if p.1 - p.0 >= RELEASE_BATCH {
            m.release(p.0, p.1 - p.0);
            *p = (e, e);
        }
    }
}

/// Weights borrowed from the map, or copied when the data is not aligned for its type.
#[derive(Debug)]
pub enum WeightData<'a> {
    /// Aligned: used in place.
    Borrowed(Weights<'a>),
    /// Misaligned f32 data, copied.
    F32(Vec<f32>),
    /// Misaligned f16 data, copied.
    F16(Vec<f16>),
    /// Misaligned bf16 data, copied.
    Bf16(Vec<bf16>),
}

impl WeightData<'_> {
    /// The weights.
    pub fn weights(&self) -> Weights<'_> {
        match self {
            WeightData::Borrowed(w) => *w,
            WeightData::F32(v) => Weights::F32(v),
            WeightData::F16(v) => Weights::F16(v),
            WeightData::Bf16(v) => Weights::Bf16(v),
        }
    }
}

fn cast_or_copy<T: bytemuck::Pod>(data: &[u8]) -> std::result::Result<&[T], Vec<T>> {
    match bytemuck::try_cast_slice::<u8, T>(data) {
        Ok(s) => Ok(s),
        Err(_) => {
            let n = data.len() / std::mem::size_of::<T>();
            let mut v = vec![T::zeroed(); n];
            bytemuck::cast_slice_mut::<T, u8>(&mut v)
                .copy_from_slice(&data[..n * std::mem::size_of::<T>()]);
            Err(v)
        }
    }
}

/// The weights of a F32, F16 or BF16 tensor; `None` for other dtypes.
pub fn weight_data<'a>(t: &TensorRef<'a>) -> Option<WeightData<'a>> {
    Some(match t.dtype {
        Dtype::F32 => cast_or_copy::<f32>(t.data)
            .map_or_else(WeightData::F32, |s| WeightData::Borrowed(Weights::F32(s))),
        Dtype::F16 => cast_or_copy::<f16>(t.data)
            .map_or_else(WeightData::F16, |s| WeightData::Borrowed(Weights::F16(s))),
        Dtype::BF16 => cast_or_copy::<bf16>(t.data)
            .map_or_else(WeightData::Bf16, |s| WeightData::Borrowed(Weights::Bf16(s))),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    /// Lookup by name, data order, and weights viewed in place or copied when misaligned.
    #[test]
    fn tensors_by_name_and_weights() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let a: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let b = vec![7u8; 3];
        let views = vec![
            (
                "b".to_string(),
                TensorView::new(Dtype::U8, vec![3], &b).unwrap(),
            ),
            (
                "a".to_string(),
                TensorView::new(Dtype::F32, vec![2, 2], &a).unwrap(),
            ),
        ];
        safetensors::serialize_to_file(views, None, &path).unwrap();
        let f = SafetensorsFile::open(&path).unwrap();
        assert_eq!(f.file_name(), "m.safetensors");
        assert_eq!(f.names().collect::<Vec<_>>(), ["a", "b"]);
        assert!(f.contains("a") && !f.contains("c"));
        assert!(f.tensor("c").is_none());
        let t = f.tensor("a").unwrap();
        assert_eq!(
            (t.name, t.dtype, t.shape, t.numel()),
            ("a", Dtype::F32, &[2, 2][..], 4)
        );
        let wd = weight_data(&t).unwrap();
        assert!(matches!(wd.weights(), Weights::F32(w) if w == [1.0, 2.0, 3.0, 4.0]));
        assert!(weight_data(&f.tensor("b").unwrap()).is_none());
        // The same bytes one byte off: copied, same values.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&a);
        let odd = TensorRef {
            data: &shifted[1..],
            ..t
        };
        let wd = weight_data(&odd).unwrap();
        assert!(matches!(wd.weights(), Weights::F32(w) if w == [1.0, 2.0, 3.0, 4.0]));
    }

    /// Empty tensors share offsets with each other and with their neighbours: every one is
    /// found by name, and their order is by name (not hash order).
    #[test]
    fn empty_tensors_at_one_offset_are_found() {
        let mut json = String::from("{");
        let mut names = Vec::new();
        for i in (0..50).rev() {
            names.push(format!("e{i:02}"));
            json.push_str(&format!(
                "\"e{i:02}\":{{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}},"
            ));
        }
        json.push_str("\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},");
        json.push_str("\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}");
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(json.as_bytes());
        bytes.extend_from_slice(&[0u8; 8]);
        let f = SafetensorsFile::from_bytes(Path::new("mem"), bytes).unwrap();
        names.sort();
        let mut expect = vec!["a".to_string()];
        expect.extend(names.iter().cloned());
        expect.push("b".into());
        assert_eq!(f.names().collect::<Vec<_>>(), expect);
        for n in &expect {
            assert_eq!(f.tensor(n).unwrap().name, n);
            assert!(f.contains(n));
        }
        assert_eq!(f.tensor("b").unwrap().data.len(), 4);
        assert!(f.tensor("e").is_none() && !f.contains("e"));
    }
}
