//! Safetensors checkpoints: single files and sharded Hugging Face folders, read through a
//! memory map, written as a stream into a temporary file or folder that is renamed into
//! place only when everything succeeded.
//!
//! # Output design
//! A safetensors file starts with its header, which holds every tensor's byte range, so
//! every output size must be known before the first data byte is written. The quantize
//! pipeline therefore runs the (cheap, histogram-only) outlier selection of every tensor
//! first: the outlier count fixes the packed length ([`adpq_core::packed_len`]). Then it
//! writes the header and streams the tensors one by one ([`TensorWriter`]), each
//! quantized in memory just before it is written. Peak memory is the largest tensor's
//! packed buffer plus per-thread scratch; the input is only mapped, and the pages of a
//! tensor are released once it is done.
//!
//! Tensors are written in the order the `safetensors` crate uses (larger element size
//! first, then input order), with the header padded to 8 bytes, so every tensor is
//! aligned to its element size; the packed `U8` tensors come last.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use adpq_core::{bf16, f16, Weights};
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::mmap::MappedFile;

/// File name of the index of a sharded Hugging Face checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// File name used for a folder holding a single, unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";

/// One memory-mapped, validated safetensors file.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    map: MappedFile,
    data_start: usize,
    metadata: Metadata,
    order: Vec<String>,
}

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
            return Err(Error::invalid(path, "not a regular file"));
        }
        if meta.len() < 8 {
            return Err(Error::invalid(
                path,
                format!("not a valid safetensors file: {} bytes is shorter than the 8-byte header length", meta.len()),
            ));
        }
        let map = MappedFile::open(path)?;
        let (header_len, metadata) =
            SafeTensors::read_metadata(map.bytes()).map_err(|source| Error::Safetensors {
                path: path.to_path_buf(),
                source,
            })?;
        let order = metadata.offset_keys();
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            map,
            data_start: 8 + header_len,
            metadata,
            order,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the file in bytes.
    pub fn len(&self) -> usize {
        self.map.bytes().len()
    }

    /// True for a file without tensors or metadata (never: a file has a header).
    pub fn is_empty(&self) -> bool {
        self.map.bytes().is_empty()
    }

    /// Tensor names in data order.
    pub fn names(&self) -> &[String] {
        &self.order
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<TensorRef<'_>> {
        let (name, info): (&str, &TensorInfo) = self
            .order
            .iter()
            .find(|n| *n == name)
            .and_then(|n| Some((n.as_str(), self.metadata.info(n)?)))?;
        self.view(name, info)
    }

    fn view<'a>(&'a self, name: &'a str, info: &'a TensorInfo) -> Option<TensorRef<'a>> {
        let (s, e) = info.data_offsets;
        let at = self.data_start.checked_add(s)?;
        let data = self.map.bytes().get(at..self.data_start.checked_add(e)?)?;
        Some(TensorRef {
            name,
            dtype: info.dtype,
            shape: &info.shape,
            data,
            file_offset: at,
        })
    }

    /// All tensors, in data order.
    pub fn tensors(&self) -> Vec<TensorRef<'_>> {
        self.order
            .iter()
            .filter_map(|n| self.view(n, self.metadata.info(n)?))
            .collect()
    }

    /// The `__metadata__` map (empty when absent).
    pub fn user_metadata(&self) -> BTreeMap<String, String> {
        self.metadata
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Drops the tensor's pages from the resident set (see the module docs).
    pub fn release(&self, t: &TensorRef<'_>) {
        self.map.release(t.file_offset, t.data.len());
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

/// How an input checkpoint is laid out.
#[derive(Debug)]
pub enum Source {
    /// A single `.safetensors` file.
    File,
    /// A folder: one or more safetensors files, an optional index, other files (config,
    /// tokenizer) copied as they are.
    Folder {
        /// The folder.
        dir: PathBuf,
        /// The index file's name and JSON, when sharded.
        index: Option<(String, Value)>,
        /// Names of the other regular files in the folder.
        extras: Vec<String>,
    },
}

/// An opened input checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    /// The layout.
    pub source: Source,
    /// The safetensors files (shards in name order).
    pub files: Vec<SafetensorsFile>,
    /// Entries of an input folder that are neither read nor copied to the output, each
    /// with the reason: subfolders, `.safetensors` files the index does not list, and
    /// entries that are not regular files (or links to one) or have non-UTF-8 names.
    pub skipped: Vec<String>,
}

/// Whether `name` is a plain file name (no separators, not `.` or `..`): shard names come
/// from an index file and must not escape the folder.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

impl Checkpoint {
    /// Opens a checkpoint: a `.safetensors` file, a folder holding one or more of them
    /// (with or without a `*.safetensors.index.json`), or an index file.
    pub fn open(input: &Path) -> Result<Checkpoint> {
        let meta = std::fs::metadata(input).map_err(|e| Error::io(input, e))?;
        if meta.is_file() {
            let name = input.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".index.json") {
                let dir = input
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                return Self::open_folder(dir, Some(name.to_string()));
            }
            return Ok(Checkpoint {
                source: Source::File,
                files: vec![SafetensorsFile::open(input)?],
                skipped: Vec::new(),
            });
        }
        Self::open_folder(input, None)
    }

    fn open_folder(dir: &Path, index_name: Option<String>) -> Result<Checkpoint> {
        let mut names = Vec::new();
        let mut skipped = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name();
            let shown = name.to_string_lossy();
            // Follows symlinks: a Hugging Face hub snapshot is a folder of links to blobs.
            match (std::fs::metadata(entry.path()), name.to_str()) {
                (Ok(m), Some(n)) if m.is_file() => names.push(n.to_string()),
                (Ok(m), _) if m.is_dir() => skipped.push(format!("{shown}/ (a subfolder)")),
                (Ok(m), None) if m.is_file() => {
                    skipped.push(format!("{shown} (a file name that is not UTF-8)"))
                }
                (Ok(_), _) => skipped.push(format!("{shown} (not a regular file)")),
                (Err(e), _) => skipped.push(format!("{shown} (cannot be read: {e})")),
            }
        }
        names.sort();
        let index_name = match index_name {
            Some(n) => Some(n),
            None => {
                let idx: Vec<&String> = names
                    .iter()
                    .filter(|n| n.ends_with(".safetensors.index.json"))
                    .collect();
                match idx.as_slice() {
                    [] => None,
                    [one] => Some((*one).clone()),
                    _ => {
                        return Err(Error::invalid(
                            dir,
                            "more than one *.safetensors.index.json; pass the index file",
                        ))
                    }
                }
            }
        };
        let (shards, index) = match index_name {
            Some(idx) => {
                let path = dir.join(&idx);
                let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
                let json: Value = serde_json::from_str(&text)
                    .map_err(|e| Error::invalid(&path, format!("invalid JSON: {e}")))?;
                let map = json
                    .get("weight_map")
                    .and_then(Value::as_object)
                    .ok_or_else(|| Error::invalid(&path, "no `weight_map` object"))?;
                let mut shards: Vec<String> = Vec::new();
                for (tensor, shard) in map {
                    let shard = shard
                        .as_str()
                        .filter(|s| is_plain_file_name(s))
                        .ok_or_else(|| Error::invalid(&path, format!("tensor `{tensor}`: shard must be a file name in the same folder")))?;
                    if !shards.iter().any(|s| s == shard) {
                        shards.push(shard.to_string());
                    }
                }
                shards.sort();
                (shards, Some((idx, json)))
            }
            None => (
                names
                    .iter()
                    .filter(|n| n.ends_with(".safetensors"))
                    .cloned()
                    .collect(),
                None,
            ),
        };
        if shards.is_empty() {
            return Err(Error::invalid(dir, "no .safetensors files found"));
        }
        let files = shards
            .iter()
            .map(|s| SafetensorsFile::open(&dir.join(s)))
            .collect::<Result<Vec<_>>>()?;
        if let Some((idx, json)) = &index {
            let path = dir.join(idx);
            let map = json.get("weight_map").and_then(Value::as_object);
            for (f, shard) in files.iter().zip(&shards) {
                for name in f.names() {
                    if map.and_then(|m| m.get(name)).and_then(Value::as_str) != Some(shard.as_str())
                    {
                        return Err(Error::invalid(&path, format!("tensor `{name}` of {shard} is not listed for that shard in the index")));
                    }
                }
            }
            for (tensor, shard) in map.into_iter().flatten() {
                let i = shards
                    .iter()
                    .position(|s| Some(s.as_str()) == shard.as_str());
                if i.is_none_or(|i| files[i].tensor(tensor).is_none()) {
                    return Err(Error::invalid(
                        &path,
                        format!("tensor `{tensor}` is missing from its shard {shard}"),
                    ));
                }
            }
        }
        let extras = names
            .iter()
            .filter(|n| {
                !shards.contains(n) && Some(n.as_str()) != index.as_ref().map(|(i, _)| i.as_str())
            })
            .filter(|n| !n.ends_with(".safetensors"))
            .cloned()
            .collect();
        if let Some((idx, _)) = &index {
            skipped.extend(
                names
                    .iter()
                    .filter(|n| n.ends_with(".safetensors") && !shards.contains(n))
                    .map(|n| format!("{n} (a .safetensors file that {idx} does not list)")),
            );
        }
        skipped.sort();
        Ok(Checkpoint {
            source: Source::Folder {
                dir: dir.to_path_buf(),
                index,
                extras,
            },
            files,
            skipped,
        })
    }

    /// File names of the shards (the last path component of each file).
    pub fn file_names(&self) -> Vec<String> {
        self.files
            .iter()
            .map(|f| {
                f.path()
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// A tensor as it will be written.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTensor {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Bytes of data.
    pub len: u64,
}

/// Sorts tensors into the output order (larger elements first, stable otherwise).
pub fn sort_for_output(tensors: &mut [PlannedTensor]) {
    tensors.sort_by_key(|t| std::cmp::Reverse(t.dtype.bitsize()));
}

/// The header of a safetensors file holding `tensors` in this order: the 8-byte length and
/// the JSON, padded with spaces to a multiple of 8 bytes.
pub fn header_bytes(metadata: &BTreeMap<String, String>, tensors: &[PlannedTensor]) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    if !metadata.is_empty() {
        map.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).unwrap_or_default(),
        );
    }
    let mut at = 0u64;
    for t in tensors {
        map.insert(
            t.name.clone(),
            serde_json::json!({ "dtype": t.dtype, "shape": t.shape, "data_offsets": [at, at + t.len] }),
        );
        at += t.len;
    }
    let mut json = Value::Object(map).to_string().into_bytes();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out
}

/// Streams the tensors of one safetensors file, in planned order, into a file.
#[derive(Debug)]
pub struct TensorWriter {
    out: BufWriter<File>,
    path: PathBuf,
    plan: Vec<(String, u64)>,
    next: usize,
    written: u64,
}

impl TensorWriter {
    /// Writes the header of `tensors` (already in output order) into `file`. `path` names
    /// the output in error messages.
    pub fn new(
        file: File,
        path: &Path,
        metadata: &BTreeMap<String, String>,
        tensors: &[PlannedTensor],
    ) -> Result<Self> {
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let header = header_bytes(metadata, tensors);
        out.write_all(&header).map_err(|e| Error::io(path, e))?;
        Ok(TensorWriter {
            out,
            path: path.to_path_buf(),
            plan: tensors.iter().map(|t| (t.name.clone(), t.len)).collect(),
            next: 0,
            written: header.len() as u64,
        })
    }

    /// Writes the data of the next planned tensor.
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        match self.plan.get(self.next) {
            Some((n, len)) if n == name && *len == bytes.len() as u64 => {}
            other => {
                return Err(Error::tensor(
                    &self.path,
                    name,
                    format!(
                        "internal error: expected {other:?}, got {} bytes",
                        bytes.len()
                    ),
                ))
            }
        }
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(&self.path, e))?;
        self.next += 1;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Checks that every tensor was written, flushes and syncs. Returns the file size.
    pub fn finish(self) -> Result<u64> {
        if self.next != self.plan.len() {
            return Err(Error::invalid(
                &self.path,
                "internal error: not every tensor was written",
            ));
        }
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::io(&self.path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.path, e))?;
        Ok(self.written)
    }
}

/// The bytes of one tensor on their way to the writer thread.
#[derive(Debug)]
pub enum Chunk<'a> {
    /// A tensor copied from the input map (its pages are released once written).
    Mapped(TensorRef<'a>),
    /// A tensor computed in memory.
    Owned(String, Vec<u8>),
}

/// Hands tensors to the writer thread of [`with_writer`] (or drops them on a dry run).
#[derive(Debug)]
pub struct Emitter<'a> {
    tx: Option<std::sync::mpsc::SyncSender<Chunk<'a>>>,
    stopped: bool,
}

impl<'a> Emitter<'a> {
    /// Queues the next tensor (in planned order). Blocks while one tensor is already
    /// queued, so at most two computed tensors are in memory besides the one being built.
    pub fn put(&mut self, c: Chunk<'a>) -> Result<()> {
        match &self.tx {
            None => Ok(()),
            Some(tx) => tx.send(c).map_err(|_| {
                self.stopped = true;
                Error::Usage("the output writer stopped".into())
            }),
        }
    }
}

/// Runs `produce` on this thread while a second thread writes what it emits through
/// `writer`, so computing tensor `i + 1` overlaps writing tensor `i`. With no writer
/// (a dry run), emitted tensors are dropped. Returns the first real error: the
/// producer's, or the writer's when the writer stopped first.
pub fn with_writer<'a, F>(
    file: &'a SafetensorsFile,
    writer: Option<TensorWriter>,
    produce: F,
) -> Result<()>
where
    F: FnOnce(&mut Emitter<'a>) -> Result<()>,
{
    let Some(writer) = writer else {
        return produce(&mut Emitter {
            tx: None,
            stopped: false,
        });
    };
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk<'a>>(1);
        let handle = s.spawn(move || -> Result<u64> {
            let mut writer = writer;
            for c in rx {
                match c {
                    Chunk::Mapped(t) => {
                        writer.write(t.name, t.data)?;
                        file.release(&t);
                    }
                    Chunk::Owned(name, buf) => writer.write(&name, &buf)?,
                }
            }
            writer.finish()
        });
        let mut emitter = Emitter {
            tx: Some(tx),
            stopped: false,
        };
        let produced = produce(&mut emitter);
        let stopped = emitter.stopped;
        drop(emitter); // closes the channel: the writer finishes
        let written = handle.join().unwrap_or_else(|_| {
            Err(Error::invalid(
                file.path(),
                "internal error: the writer thread panicked",
            ))
        });
        match (produced, written) {
            (Err(e), _) if !stopped => Err(e),
            (_, Err(e)) => Err(e),
            (Err(e), Ok(_)) => Err(e),
            (Ok(()), Ok(_)) => Ok(()),
        }
    })
}

/// Where a command writes: a temporary file or folder next to the final path, renamed into
/// place by [`Output::commit`]. Dropped without a commit, it removes the temporary.
#[derive(Debug)]
pub struct Output {
    final_path: PathBuf,
    tmp: Tmp,
    force: bool,
}

#[derive(Debug)]
enum Tmp {
    File(tempfile::NamedTempFile),
    Dir(tempfile::TempDir),
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn tmp_prefix(path: &Path) -> String {
    format!(
        ".{}.adpq-tmp-",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    )
}

fn check_parent(path: &Path) -> Result<PathBuf> {
    let parent = parent_of(path);
    match std::fs::metadata(&parent) {
        Ok(m) if m.is_dir() => Ok(parent),
        Ok(_) => Err(Error::invalid(&parent, "output folder is not a folder")),
        Err(e) => Err(Error::Io {
            path: parent,
            source: std::io::Error::new(
                e.kind(),
                format!("output folder does not exist or is not accessible: {e}"),
            ),
        }),
    }
}

fn cannot_create(folder: &Path, e: std::io::Error) -> Error {
    let kind = e.kind();
    // tempfile appends the path to the message; the folder is named by the error already.
    let msg = e.to_string();
    let msg = msg.split(" at path ").next().unwrap_or(&msg).to_string();
    Error::io(
        folder,
        std::io::Error::new(kind, format!("cannot write in the output folder: {msg}")),
    )
}

impl Output {
    /// A single output file at `path` (an existing file is replaced on commit).
    pub fn file(path: &Path) -> Result<Output> {
        if path.is_dir() {
            return Err(Error::Usage(format!(
                "output {} is a folder; give a file name",
                path.display()
            )));
        }
        let parent = check_parent(path)?;
        let prefix = tmp_prefix(path);
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix);
        // The usual mode of a new file (the umask applies), not tempfile's private 0600.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        let tmp = builder
            .tempfile_in(&parent)
            .map_err(|e| cannot_create(&parent, e))?;
        Ok(Output {
            final_path: path.to_path_buf(),
            tmp: Tmp::File(tmp),
            force: true,
        })
    }

    /// An output folder at `path`; it must not exist (or be empty) unless `force`, which
    /// replaces it on commit.
    pub fn dir(path: &Path, force: bool) -> Result<Output> {
        if let Ok(m) = std::fs::metadata(path) {
            let empty = m.is_dir()
                && std::fs::read_dir(path)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false);
            if !m.is_dir() {
                return Err(Error::Usage(format!(
                    "output {} exists and is not a folder",
                    path.display()
                )));
            }
            if !empty && !force {
                return Err(Error::Usage(format!(
                    "output folder {} exists and is not empty (use --force to replace it)",
                    path.display()
                )));
            }
        }
        let parent = check_parent(path)?;
        let tmp = tempfile::Builder::new()
            .prefix(&tmp_prefix(path))
            .tempdir_in(&parent)
            .map_err(|e| cannot_create(&parent, e))?;
        Ok(Output {
            final_path: path.to_path_buf(),
            tmp: Tmp::Dir(tmp),
            force,
        })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.final_path
    }

    /// A writable handle for the file called `name` of the output (for a single-file
    /// output, `name` is ignored) and the path to name in messages.
    pub fn create(&self, name: &str) -> Result<(File, PathBuf)> {
        match &self.tmp {
            Tmp::File(f) => {
                let file = f.reopen().map_err(|e| Error::io(&self.final_path, e))?;
                Ok((file, self.final_path.clone()))
            }
            Tmp::Dir(d) => {
                let shown = self.final_path.join(name);
                let file = File::create(d.path().join(name)).map_err(|e| Error::io(&shown, e))?;
                Ok((file, shown))
            }
        }
    }

    /// Copies a file into an output folder (no-op for a file output).
    pub fn copy_in(&self, from: &Path, name: &str) -> Result<()> {
        if let Tmp::Dir(d) = &self.tmp {
            std::fs::copy(from, d.path().join(name)).map_err(|e| Error::io(from, e))?;
        }
        Ok(())
    }

    /// Renames the temporary into place.
    pub fn commit(self) -> Result<()> {
        let path = self.final_path;
        match self.tmp {
            Tmp::File(f) => {
                f.persist(&path).map_err(|e| Error::io(&path, e.error))?;
            }
            Tmp::Dir(d) => {
                let tmp = d.keep();
                let result = (|| {
                    if path.exists() && self.force {
                        // Move the old folder aside first, so a failure leaves one of the two.
                        let old = tempfile::Builder::new()
                            .prefix(&tmp_prefix(&path))
                            .tempdir_in(parent_of(&path))
                            .map_err(|e| Error::io(&path, e))?;
                        let aside = old.path().join("old");
                        std::fs::rename(&path, &aside).map_err(|e| Error::io(&path, e))?;
                        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
                        drop(old); // removes the old folder
                    } else {
                        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
                    }
                    Ok(())
                })();
                if result.is_err() {
                    let _ = std::fs::remove_dir_all(&tmp);
                }
                result?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_padded_and_tensors_aligned() {
        let mut tensors = vec![
            PlannedTensor {
                name: "packed".into(),
                dtype: Dtype::U8,
                shape: vec![13],
                len: 13,
            },
            PlannedTensor {
                name: "h".into(),
                dtype: Dtype::F16,
                shape: vec![3],
                len: 6,
            },
            PlannedTensor {
                name: "ids".into(),
                dtype: Dtype::I64,
                shape: vec![1],
                len: 8,
            },
            PlannedTensor {
                name: "w".into(),
                dtype: Dtype::F32,
                shape: vec![3],
                len: 12,
            },
        ];
        sort_for_output(&mut tensors);
        let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["ids", "w", "h", "packed"]);
        let meta = BTreeMap::from([("format".to_string(), "adpq".to_string())]);
        let mut file = header_bytes(&meta, &tensors);
        assert_eq!(file.len() % 8, 0);
        let mut at = file.len();
        for t in &tensors {
            assert_eq!(at % (t.dtype.bitsize() / 8), 0, "{} misaligned", t.name);
            at += t.len as usize;
        }
        file.resize(at, 0);
        let (_, m) = SafeTensors::read_metadata(&file).unwrap();
        assert_eq!(m.metadata().as_ref().unwrap()["format"], "adpq");
        assert_eq!(m.offset_keys(), names);
    }

    #[test]
    fn shard_names_must_be_plain() {
        for bad in [
            "",
            ".",
            "..",
            "../x.safetensors",
            "a/b",
            "a\\b",
            "/etc/passwd",
        ] {
            assert!(!is_plain_file_name(bad), "{bad}");
        }
        assert!(is_plain_file_name("model-00001-of-00002.safetensors"));
    }
}
