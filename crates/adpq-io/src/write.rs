//! Writing safetensors files as a stream.
//!
//! # Output design
//! A safetensors file starts with its header, which holds every tensor's byte range, so
//! every output size must be known before the first data byte is written. The quantize
//! pipeline therefore runs the (cheap, histogram-only) outlier selection of every tensor
//! of a file first: the outlier count fixes the packed length ([`adpq_core::packed_len`]). Then it
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
use std::sync::atomic::{AtomicBool, Ordering};

use safetensors::Dtype;

use crate::error::{Error, Result};
use crate::file::{SafetensorsFile, TensorRef};

/// A tensor as it will be written: borrowed from the input and the plan, since a file
/// may plan millions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlannedTensor<'a> {
    /// Name.
    pub name: &'a str,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: &'a [usize],
    /// Bytes of data.
    pub len: u64,
}

/// The largest header (JSON bytes) safetensors readers accept, the `safetensors` crate's
/// limit: a longer one would make an output that nothing reads back.
pub const MAX_HEADER_LEN: usize = 100_000_000;

/// Sorts tensors into the output order (larger elements first, stable otherwise).
pub fn sort_for_output(tensors: &mut [PlannedTensor<'_>]) {
    tensors.sort_by_key(|t| std::cmp::Reverse(t.dtype.bitsize()));
}

/// The header of a safetensors file holding `tensors` in this order: the 8-byte length and
/// the JSON, padded with spaces to a multiple of 8 bytes.
pub fn header_bytes(metadata: &BTreeMap<String, String>, tensors: &[PlannedTensor<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = write_header(&mut out, metadata, tensors);
    out
}

/// Counts the bytes written through it.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes [`header_bytes`] into `out` as a stream and returns its length: the JSON is
/// produced twice (once counted, for the length that comes first, once written), so a
/// header of 10⁶ tensors costs 16 bytes per tensor of memory, not its own size or a
/// JSON tree. Keys come in name order (`__metadata__` among them), as a `serde_json`
/// map writes them.
pub fn write_header<W: Write>(
    out: &mut W,
    metadata: &BTreeMap<String, String>,
    tensors: &[PlannedTensor<'_>],
) -> std::io::Result<u64> {
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut at = 0u64;
    for t in tensors {
        offsets.push(at);
        at += t.len;
    }
    let mut by_name: Vec<usize> = (0..tensors.len()).collect();
    by_name.sort_unstable_by(|&a, &b| tensors[a].name.cmp(tensors[b].name));
    let json = |w: &mut dyn Write| -> std::io::Result<()> {
        const META_KEY: &str = "__metadata__";
        let put_meta = |w: &mut dyn Write| -> std::io::Result<()> {
            serde_json::to_writer(&mut *w, META_KEY)?;
            w.write_all(b":")?;
            serde_json::to_writer(&mut *w, metadata)?;
            Ok(())
        };
        w.write_all(b"{")?;
        let mut first = true;
        let mut meta_done = metadata.is_empty();
        for &i in &by_name {
            let t = &tensors[i];
            if !std::mem::take(&mut first) {
                w.write_all(b",")?;
            }
            if !meta_done && META_KEY < t.name {
                put_meta(w)?;
                w.write_all(b",")?;
                meta_done = true;
            }
            serde_json::to_writer(&mut *w, &t.name)?;
            // Inner keys in name order too, as a `serde_json` map writes them.
            write!(
                w,
                ":{{\"data_offsets\":[{},{}],\"dtype\":",
                offsets[i],
                offsets[i] + t.len
            )?;
            serde_json::to_writer(&mut *w, &t.dtype)?;
            w.write_all(b",\"shape\":")?;
            serde_json::to_writer(&mut *w, &t.shape)?;
            w.write_all(b"}")?;
        }
        if !meta_done {
            if !first {
                w.write_all(b",")?;
            }
            put_meta(w)?;
        }
        w.write_all(b"}")
    };
    let mut counter = Counter(0);
    json(&mut counter)?;
    let pad = (8 - counter.0 % 8) % 8;
    let len = counter.0 + pad;
    out.write_all(&len.to_le_bytes())?;
    json(out)?;
    out.write_all(&b"       "[..pad as usize])?;
    Ok(8 + len)
}

/// An error when a header of `json_len` bytes would be too long for readers.
fn check_header_len(path: &Path, json_len: usize) -> Result<()> {
    if json_len > MAX_HEADER_LEN {
        return Err(Error::invalid(
            path,
            format!(
                "the output's header would be {json_len} bytes, above the {MAX_HEADER_LEN} that \
                 safetensors readers accept (too many tensors or too much metadata for one file)"
            ),
        ));
    }
    Ok(())
}

/// A name's fingerprint (a fixed-key SipHash), for [`TensorWriter`]'s check.
fn fingerprint(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

/// Streams the tensors of one safetensors file, in planned order, into a file.
#[derive(Debug)]
pub struct TensorWriter {
    out: BufWriter<File>,
    path: PathBuf,
    /// Each planned tensor's name fingerprint and length: the check of what is written,
    /// without a second copy of every name.
    plan: Vec<(u64, u64)>,
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
        tensors: &[PlannedTensor<'_>],
    ) -> Result<Self> {
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut counter = Counter(0);
        let header_len =
            write_header(&mut counter, metadata, tensors).map_err(|e| Error::io(path, e))?;
        check_header_len(path, header_len as usize - 8)?;
        write_header(&mut out, metadata, tensors).map_err(|e| Error::io(path, e))?;
        Ok(TensorWriter {
            out,
            path: path.to_path_buf(),
            plan: tensors
                .iter()
                .map(|t| (fingerprint(t.name), t.len))
                .collect(),
            next: 0,
            written: header_len,
        })
    }

    /// Writes the data of the next planned tensor.
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        match self.plan.get(self.next) {
            Some(&(n, len)) if n == fingerprint(name) && len == bytes.len() as u64 => {}
            other => {
                return Err(Error::tensor(
                    &self.path,
                    name,
                    format!(
                    "internal error: not planned next (tensor {} of {}, {:?} bytes), got {} bytes",
                    self.next,
                    self.plan.len(),
                    other.map(|p| p.1),
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
                Error::WriterStopped
            }),
        }
    }
}

/// Runs `produce` on this thread while a second thread writes what it emits through
/// `writer`, so computing tensor `i + 1` overlaps writing tensor `i`. With no writer
/// (a dry run), emitted tensors are dropped. Returns the first real error: the
/// producer's, or the writer's when the writer stopped first.
pub fn with_writer<'a, F, E>(
    file: &'a SafetensorsFile,
    writer: Option<TensorWriter>,
    produce: F,
) -> Result<(), E>
where
    F: FnOnce(&mut Emitter<'a>) -> Result<(), E>,
    E: From<Error>,
{
    let Some(writer) = writer else {
        return produce(&mut Emitter {
            tx: None,
            stopped: false,
        });
    };
    // Set when the producer succeeded: only then does the writer flush and sync (a failed
    // or interrupted run's output is removed; syncing it would only delay the exit).
    let complete = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk<'a>>(1);
        let complete = &complete;
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
            if !complete.load(Ordering::SeqCst) {
                return Ok(0);
            }
            writer.finish()
        });
        let mut emitter = Emitter {
            tx: Some(tx),
            stopped: false,
        };
        let produced = produce(&mut emitter);
        complete.store(produced.is_ok(), Ordering::SeqCst);
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
            (_, Err(e)) => Err(e.into()),
            (Err(e), Ok(_)) => Err(e),
            (Ok(()), Ok(_)) => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header as a `serde_json` tree used to write it, byte for byte.
    fn header_via_tree(
        metadata: &BTreeMap<String, String>,
        tensors: &[PlannedTensor<'_>],
    ) -> Vec<u8> {
        let mut map = serde_json::Map::new();
        if !metadata.is_empty() {
            map.insert(
                "__metadata__".into(),
                serde_json::to_value(metadata).unwrap(),
            );
        }
        let mut at = 0u64;
        for t in tensors {
            map.insert(
                t.name.to_string(),
                serde_json::json!({ "dtype": t.dtype, "shape": t.shape, "data_offsets": [at, at + t.len] }),
            );
            at += t.len;
        }
        let mut json = serde_json::Value::Object(map).to_string().into_bytes();
        while !json.len().is_multiple_of(8) {
            json.push(b' ');
        }
        let mut out = (json.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&json);
        out
    }

    #[test]
    fn streamed_header_equals_the_json_tree() {
        let t = |name, dtype, shape, len| PlannedTensor {
            name,
            dtype,
            shape,
            len,
        };
        let tensors = [
            t("z.weight", Dtype::F32, &[2, 3], 24),
            t("A \"quoted\" \\ name\u{e9}\n", Dtype::BF16, &[3], 6),
            t("_", Dtype::U8, &[], 1),
            t("__metadata__x", Dtype::U8, &[0], 0),
            t("a", Dtype::U8, &[7], 7),
        ];
        let mut meta = BTreeMap::new();
        for m in [BTreeMap::new(), {
            meta.insert("format".to_string(), "pt".to_string());
            meta.insert("adpq.tensors".to_string(), "{\"x\": [1]}".to_string());
            meta.clone()
        }] {
            for n in 0..=tensors.len() {
                assert_eq!(
                    header_bytes(&m, &tensors[..n]),
                    header_via_tree(&m, &tensors[..n]),
                    "{n} tensors, metadata {m:?}"
                );
            }
        }
    }
    use safetensors::SafeTensors;

    /// A header above the readers' limit is refused before anything is written.
    #[test]
    fn oversized_header_is_refused() {
        let path = Path::new("out.safetensors");
        check_header_len(path, MAX_HEADER_LEN).unwrap();
        let err = check_header_len(path, MAX_HEADER_LEN + 1).unwrap_err();
        assert!(
            err.to_string().contains("safetensors readers accept"),
            "{err}"
        );
        // The limit is the safetensors crate's: one byte more is refused there too.
        let json = format!(
            "{{\"__metadata__\":{{\"k\":\"{}\"}}}}",
            "x".repeat(MAX_HEADER_LEN - 24)
        );
        let mut file = (json.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(json.as_bytes());
        assert_eq!(json.len(), MAX_HEADER_LEN + 1);
        assert!(SafeTensors::read_metadata(&file).is_err());
    }

    #[test]
    fn header_is_padded_and_tensors_aligned() {
        let mut tensors = vec![
            PlannedTensor {
                name: "packed",
                dtype: Dtype::U8,
                shape: &[13],
                len: 13,
            },
            PlannedTensor {
                name: "h",
                dtype: Dtype::F16,
                shape: &[3],
                len: 6,
            },
            PlannedTensor {
                name: "ids",
                dtype: Dtype::I64,
                shape: &[1],
                len: 8,
            },
            PlannedTensor {
                name: "w",
                dtype: Dtype::F32,
                shape: &[3],
                len: 12,
            },
        ];
        sort_for_output(&mut tensors);
        let names: Vec<&str> = tensors.iter().map(|t| t.name).collect();
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
}
