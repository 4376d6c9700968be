//! Checkpoints as a whole: a single `.safetensors` file, or a (sharded) Hugging Face
//! folder with its index and other files.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::file::SafetensorsFile;
use crate::output::Output;

/// File name of the index of a sharded Hugging Face checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// File name used for a folder holding a single, unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";

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
        if !meta.is_file() && !meta.is_dir() {
            return Err(Error::invalid(
                input,
                format!(
                    "not a regular file or folder ({}); give a .safetensors file, a folder or an index",
                    kind_of(&meta)
                ),
            ));
        }
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
        let (names, mut skipped) = list_folder(dir)?;
        let index_name = match index_name {
            Some(n) => Some(n),
            None => find_index(dir, &names)?,
        };
        let (shards, index) = match index_name {
            Some(idx) => {
                let (shards, json) = read_index(&dir.join(&idx))?;
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
            check_index(&dir.join(idx), json, &shards, &files)?;
        }
        let shard_set: HashSet<&str> = shards.iter().map(String::as_str).collect();
        let index_file = index.as_ref().map(|(i, _)| i.as_str());
        let extras = names
            .iter()
            .filter(|n| !shard_set.contains(n.as_str()) && Some(n.as_str()) != index_file)
            .filter(|n| !n.ends_with(".safetensors"))
            .cloned()
            .collect();
        if let Some(idx) = index_file {
            skipped.extend(
                names
                    .iter()
                    .filter(|n| n.ends_with(".safetensors") && !shard_set.contains(n.as_str()))
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

    /// Completes a folder output (no-op for a file): copies the extra files (config,
    /// tokenizer) and writes the index with its `metadata.total_size` set to
    /// `total_size`, the bytes of tensor data written.
    pub fn finish_output(&self, out: &Output, total_size: u64) -> Result<()> {
        let Source::Folder { dir, index, extras } = &self.source else {
            return Ok(());
        };
        for e in extras {
            out.copy_in(&dir.join(e), e)?;
        }
        if let Some((name, json)) = index {
            let (f, shown) = out.create(name)?;
            let mut w = std::io::BufWriter::new(f);
            write_index_output(&mut w, json, total_size)
                .map_err(|e| Error::io(&shown, e.into()))?;
            let f = w
                .into_inner()
                .map_err(|e| Error::io(&shown, e.into_error()))?;
            f.sync_all().map_err(|e| Error::io(&shown, e))?;
        }
        Ok(())
    }
}

/// What kind of file system entry `meta` describes, in words (for messages).
pub(crate) fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a folder"
    } else if t.is_file() {
        "a regular file"
    } else {
        "an unknown kind of file"
    }
}

/// The regular files of a folder (sorted, symlinks followed) and the entries that are
/// not, each with the reason.
fn list_folder(dir: &Path) -> Result<(Vec<String>, Vec<String>)> {
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
    Ok((names, skipped))
}

/// The one `*.safetensors.index.json` among `names`, if any (more than one is an error).
fn find_index(dir: &Path, names: &[String]) -> Result<Option<String>> {
    let idx: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with(".safetensors.index.json"))
        .collect();
    match idx.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some((*one).clone())),
        _ => Err(Error::invalid(
            dir,
            "more than one *.safetensors.index.json; pass the index file",
        )),
    }
}

/// Reads an index file: the shard names it lists (sorted, each a plain file name) and
/// its JSON.
fn read_index(path: &Path) -> Result<(Vec<String>, Value)> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_index(path, &text)
}

/// Parses the bytes of an index file (`path` only names it in messages): the shard
/// names its `weight_map` lists (sorted, unique, each a plain file name) and its JSON.
pub(crate) fn parse_index(path: &Path, text: &[u8]) -> Result<(Vec<String>, Value)> {
    let json: Value = serde_json::from_slice(text)
        .map_err(|e| Error::invalid(path, format!("invalid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::invalid(path, "no `weight_map` object"))?;
    let mut shards: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for (tensor, shard) in map {
        let shard = shard
            .as_str()
            .filter(|s| is_plain_file_name(s))
            .ok_or_else(|| {
                Error::invalid(
                    path,
                    format!("tensor `{tensor}`: shard must be a file name in the same folder"),
                )
            })?;
        if seen.insert(shard) {
            shards.push(shard.to_string());
        }
    }
    shards.sort();
    Ok((shards, json))
}

/// The output's index file: the input's JSON with `metadata.total_size` set to
/// `total_size` (the bytes of tensor data written), pretty-printed.
pub(crate) fn index_output(json: &Value, total_size: u64) -> serde_json::Result<Vec<u8>> {
    let mut text = Vec::new();
    write_index_output(&mut text, json, total_size)?;
    Ok(text)
}

/// Writes [`index_output`] into `out` as a stream: no copy of the index's JSON tree
/// (with 10⁶ tensors, a few hundred megabytes) and no text of it in memory. The text is
/// that of the tree with the total set (keys in the tree's order, `metadata` and
/// `total_size` inserted where the tree's map would put them).
pub(crate) fn write_index_output<W: std::io::Write>(
    out: W,
    json: &Value,
    total_size: u64,
) -> serde_json::Result<()> {
    let mut out = out;
    serde_json::to_writer_pretty(&mut out, &WithTotal { json, total_size })?;
    out.write_all(b"\n").map_err(serde_json::Error::io)
}

/// An index's JSON with `metadata.total_size` set, serialized as the modified tree.
struct WithTotal<'a> {
    json: &'a Value,
    total_size: u64,
}

impl serde::Serialize for WithTotal<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let Some(obj) = self.json.as_object() else {
            return self.json.serialize(s);
        };
        match obj.get("metadata") {
            // Not an object: left as it is.
            Some(m) if !m.is_object() => self.json.serialize(s),
            m => {
                let meta = Meta {
                    map: m.and_then(Value::as_object),
                    total_size: self.total_size,
                };
                with_entry(s, Some(obj), "metadata", &meta)
            }
        }
    }
}

/// The index's `metadata` object (`None`: absent) with `total_size` set.
struct Meta<'a> {
    map: Option<&'a serde_json::Map<String, Value>>,
    total_size: u64,
}

impl serde::Serialize for Meta<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        with_entry(s, self.map, "total_size", &self.total_size)
    }
}

/// Serializes the entries of `map` (none when `None`) with `key` set to `value`, in the
/// map's order: a key already there keeps its place, a new one goes where the map (sorted
/// by key) would insert it.
fn with_entry<S: serde::Serializer, T: serde::Serialize>(
    s: S,
    map: Option<&serde_json::Map<String, Value>>,
    key: &str,
    value: &T,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(None)?;
    let mut placed = false;
    for (k, v) in map.into_iter().flatten() {
        if !placed && k.as_str() >= key {
            m.serialize_entry(key, value)?;
            placed = true;
            if k == key {
                continue;
            }
        }
        m.serialize_entry(k, v)?;
    }
    if !placed {
        m.serialize_entry(key, value)?;
    }
    m.end()
}

/// Checks that the index lists every tensor of every shard under that shard, and that
/// every tensor it lists is in its shard.
pub(crate) fn check_index(
    path: &Path,
    json: &Value,
    shards: &[String],
    files: &[SafetensorsFile],
) -> Result<()> {
    let map = json.get("weight_map").and_then(Value::as_object);
    for (f, shard) in files.iter().zip(shards) {
        for name in f.names() {
            if map.and_then(|m| m.get(name)).and_then(Value::as_str) != Some(shard.as_str()) {
                return Err(Error::invalid(
                    path,
                    format!("tensor `{name}` of {shard} is not listed for that shard in the index"),
                ));
            }
        }
    }
    let file_of: HashMap<&str, &SafetensorsFile> =
        shards.iter().map(String::as_str).zip(files).collect();
    for (tensor, shard) in map.into_iter().flatten() {
        let found = shard
            .as_str()
            .and_then(|s| file_of.get(s))
            .is_some_and(|f| f.contains(tensor));
        if !found {
            return Err(Error::invalid(
                path,
                format!("tensor `{tensor}` is missing from its shard {shard}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`index_output`] as it was made before it was streamed: a modified copy of the tree.
    fn index_output_via_tree(json: &Value, total_size: u64) -> Vec<u8> {
        let mut json = json.clone();
        if let Some(obj) = json.as_object_mut() {
            let meta = obj
                .entry("metadata")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(m) = meta.as_object_mut() {
                m.insert("total_size".into(), total_size.into());
            }
        }
        let mut text = serde_json::to_vec_pretty(&json).unwrap();
        text.push(b'\n');
        text
    }

    #[test]
    fn streamed_index_equals_the_modified_tree() {
        let cases = [
            r#"{"metadata":{"total_size":5,"a":1,"z":[1]},"weight_map":{"x":"a.safetensors"}}"#,
            r#"{"metadata":{"a":1,"z":{"k":null}},"weight_map":{}}"#,
            r#"{"metadata":{},"weight_map":{"b":"s","a":"s"}}"#,
            r#"{"weight_map":{"x":"a.safetensors"},"a":1,"metadatb":2,"metadat":3}"#,
            r#"{"metadata":"text","weight_map":{}}"#,
            r#"{"metadata":{"total_size":{"x":1},"u":2,"totals":3}}"#,
            r#"{}"#,
            r#"[1,2]"#,
            r#""s""#,
        ];
        for c in cases {
            let json: Value = serde_json::from_str(c).unwrap();
            assert_eq!(
                String::from_utf8(index_output(&json, 1234).unwrap()).unwrap(),
                String::from_utf8(index_output_via_tree(&json, 1234)).unwrap(),
                "{c}"
            );
        }
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
