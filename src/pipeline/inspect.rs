//! `inspect` (list the tensors of a checkpoint, quantized or not) and `verify` (check
//! every packed tensor's structure and checksum).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use adpq_core::kernels::{dequantize_row_pieces, AnyKernels};
use adpq_core::{narrow, Error as CoreError, OutDtype, PackedTensor, Params};
use adpq_io::meta::{
    is_adpq, looks_packed, packed_of, read_adpq_meta, unlisted_packed, AdpqMeta, Original,
    META_PARAMS, META_TENSORS,
};
use adpq_io::{Checkpoint, SafetensorsFile, TensorRef};
use rayon::prelude::*;
use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};

/// One tensor as `inspect` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct InspectTensor {
    /// Name.
    pub name: String,
    /// Stored dtype.
    pub stored_dtype: String,
    /// Stored shape.
    pub stored_shape: Vec<usize>,
    /// Stored bytes.
    pub bytes: u64,
    /// Original dtype (quantized tensors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// Logical shape (quantized tensors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shape: Option<Vec<usize>>,
    /// Packed format version (1 or 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u16>,
    /// Bits per code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bits: Option<u8>,
    /// Group size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_size: Option<u16>,
    /// Grid kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grid: Option<String>,
    /// α recorded in the packed header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Outliers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outliers: Option<u64>,
    /// Threshold magnitude.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// Exact bits per weight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bits_per_weight: Option<f64>,
    /// Why the packed buffer could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A checkpoint opened for `inspect`. Its listing is made while it is printed, one
/// tensor at a time (no list of every tensor: a checkpoint may hold millions), the
/// totals last.
#[derive(Debug)]
pub struct Inspection {
    ckpt: Checkpoint,
}

/// Opens a checkpoint to list its tensors, quantized or not, with
/// [`Inspection::print`] or [`Inspection::write_json`]. A packed tensor's structure and
/// checksum are checked as it is listed; [`verify`] checks more.
pub fn inspect(input: &Path) -> Result<Inspection> {
    Ok(Inspection {
        ckpt: Checkpoint::open(input)?,
    })
}

/// Totals over the tensors listed so far.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    tensors: usize,
    quantized: usize,
    quantized_weights: u64,
    quantized_bytes: u64,
    /// Problems found: packed tensors that failed to parse or are not listed in the
    /// metadata, and files whose adpq metadata is unusable.
    errors: usize,
}

impl Totals {
    fn add(&mut self, t: &InspectTensor) {
        self.tensors += 1;
        if t.bits.is_some() {
            self.quantized += 1;
            self.quantized_weights += t.shape.iter().flatten().product::<usize>() as u64;
            self.quantized_bytes += t.bytes;
        }
        self.errors += usize::from(t.error.is_some());
    }

    /// Bits per weight over the quantized tensors.
    fn bits_per_weight(&self) -> Option<f64> {
        (self.quantized_weights > 0)
            .then(|| 8.0 * self.quantized_bytes as f64 / self.quantized_weights as f64)
    }
}

/// What `inspect` shows of a file before its tensors.
struct FileHead {
    path: String,
    bytes: u64,
    adpq: bool,
    metadata: BTreeMap<String, String>,
    /// What is wrong with the adpq metadata (missing or invalid `adpq.tensors`, unknown
    /// version), if anything.
    error: Option<String>,
    /// The adpq metadata, when it is usable.
    checked: Option<AdpqMeta>,
}

fn file_head(f: &SafetensorsFile) -> FileHead {
    let metadata = f.user_metadata();
    let adpq = is_adpq(&metadata);
    let (checked, error) = if adpq {
        match read_adpq_meta(f, &metadata) {
            Ok(m) => (Some(m), None),
            Err(e) => (None, Some(e.to_string())),
        }
    } else {
        (None, None)
    };
    FileHead {
        path: f.path().display().to_string(),
        bytes: f.len() as u64,
        adpq,
        metadata,
        error,
        checked,
    }
}

/// The JSON listing (`inspect --json`): `{"files": [{..., "tensors": [...]}], totals}`,
/// serialized as it is made.
struct JsonListing<'a> {
    ckpt: &'a Checkpoint,
    totals: &'a Cell<Totals>,
}

impl Serialize for JsonListing<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Inspection", 7)?;
        st.serialize_field("files", &JsonFiles(self))?;
        let t = self.totals.get();
        st.serialize_field("tensors", &t.tensors)?;
        st.serialize_field("quantized", &t.quantized)?;
        st.serialize_field("quantized_weights", &t.quantized_weights)?;
        st.serialize_field("quantized_bytes", &t.quantized_bytes)?;
        st.serialize_field("bits_per_weight", &t.bits_per_weight())?;
        st.serialize_field("errors", &t.errors)?;
        st.end()
    }
}

struct JsonFiles<'a>(&'a JsonListing<'a>);

impl Serialize for JsonFiles<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let files = &self.0.ckpt.files;
        let mut seq = s.serialize_seq(Some(files.len()))?;
        for f in files {
            seq.serialize_element(&JsonFile {
                f,
                totals: self.0.totals,
            })?;
        }
        seq.end()
    }
}

struct JsonFile<'a> {
    f: &'a SafetensorsFile,
    totals: &'a Cell<Totals>,
}

impl Serialize for JsonFile<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let head = file_head(self.f);
        let mut totals = self.totals.get();
        totals.errors += usize::from(head.error.is_some());
        self.totals.set(totals);
        let mut st = s.serialize_struct("InspectFile", 6)?;
        st.serialize_field("path", &head.path)?;
        st.serialize_field("bytes", &head.bytes)?;
        st.serialize_field("adpq", &head.adpq)?;
        st.serialize_field("metadata", &head.metadata)?;
        match &head.error {
            Some(e) => st.serialize_field("error", e)?,
            None => st.skip_field("error")?,
        }
        st.serialize_field(
            "tensors",
            &JsonTensors {
                f: self.f,
                checked: head.checked.as_ref(),
                totals: self.totals,
            },
        )?;
        st.end()
    }
}

struct JsonTensors<'a> {
    f: &'a SafetensorsFile,
    checked: Option<&'a AdpqMeta>,
    totals: &'a Cell<Totals>,
}

impl Serialize for JsonTensors<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.f.tensor_count()))?;
        for t in self.f.iter() {
            let it = inspect_tensor(self.f, &t, self.checked);
            let mut totals = self.totals.get();
            totals.add(&it);
            self.totals.set(totals);
            seq.serialize_element(&it)?;
        }
        seq.end()
    }
}

/// One tensor as `inspect` shows it; `meta` is the file's adpq metadata when it is
/// usable (then a packed-looking tensor it lists neither as quantized nor as plain data
/// is an error).
fn inspect_tensor(
    f: &SafetensorsFile,
    t: &TensorRef<'_>,
    meta: Option<&AdpqMeta>,
) -> InspectTensor {
    let mut it = InspectTensor {
        name: t.name.into(),
        stored_dtype: t.dtype.to_string(),
        stored_shape: t.shape.to_vec(),
        bytes: t.data.len() as u64,
        dtype: None,
        shape: None,
        version: None,
        bits: None,
        group_size: None,
        grid: None,
        alpha: None,
        outliers: None,
        threshold: None,
        bits_per_weight: None,
        error: None,
    };
    let Some(meta) = meta else {
        return it;
    };
    let Some(o) = meta.originals.get(t.name) else {
        if looks_packed(t) && !meta.not_packed.contains(t.name) {
            it.error = Some(format!("packed tensor not listed in {META_TENSORS}"));
        }
        return it;
    };
    it.dtype = Some(o.dtype.name().into());
    it.shape = Some(o.shape.to_vec());
    let parsed = packed_of(f, t, o, meta.params_of(t.name), true);
    f.release(t);
    match parsed {
        Ok(p) => {
            let fp = p.params();
            it.version = Some(fp.version.number());
            it.bits = Some(fp.bits);
            it.group_size = Some(fp.group_size);
            it.grid = Some(format!("{:?}", fp.grid).to_lowercase());
            it.alpha = Some(p.info().alpha);
            it.outliers = Some(p.n_outliers());
            it.threshold = Some(p.info().threshold);
            it.bits_per_weight = Some(p.layout().bits_per_weight());
        }
        Err(e) => it.error = Some(e.to_string()),
    }
    it
}

/// Elements per block of [`fits_original`].
const FIT_BLOCK: usize = 1 << 16;

/// Whether every value of `packed` can be restored as `dtype` (its recorded original
/// dtype, `F32`, `F16` or `BF16`) under the saturation rule of `dequantize`
/// (`adpq_core::narrow::write_rows`), decoded block by block and discarded; the first
/// value refused, as a message naming its row and column.
fn fits_original(packed: &PackedTensor<'_>, dtype: OutDtype) -> std::result::Result<(), String> {
    // The parser bounds every decoded value by 2^126 in magnitude, which F32 and BF16
    // hold: only an F16 original can refuse a value (no need to decode the others).
    if dtype.max_finite() > 2f32.powi(126) {
        return Ok(());
    }
    let kernels = AnyKernels::detect();
    let cols = packed.cols();
    // Rows (or, for a long row, whole groups of it) about FIT_BLOCK values at a time.
    let piece = cols.min(FIT_BLOCK.max(packed.piece_unit()));
    let (mut values, mut bytes) = (vec![0f32; piece], vec![0u8; piece * dtype.size()]);
    for r in 0..packed.rows() {
        let fits = dequantize_row_pieces(&kernels, packed, r, &mut values, |c, v| {
            let out = &mut bytes[..v.len() * dtype.size()];
            narrow::write_part(packed, (r, c), v, dtype, out)
        });
        fits.map_err(|e| match e {
            CoreError::NotRepresentable { value, .. } if value.is_finite() => format!(
                "{e}: its original dtype {dtype} cannot hold it, so `dequantize` fails \
                 (with --dtype f32 or --dtype bf16 it would not)"
            ),
            e => e.to_string(),
        })?;
    }
    Ok(())
}

impl Inspection {
    /// Prints a human-readable listing.
    pub fn print(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let mut totals = Totals::default();
        for f in &self.ckpt.files {
            let head = file_head(f);
            writeln!(
                out,
                "{} ({:.2} MiB){}",
                head.path,
                head.bytes as f64 / 1048576.0,
                if head.adpq { ", adpq" } else { "" }
            )?;
            if let Some(p) = head.metadata.get(META_PARAMS) {
                writeln!(out, "  params: {p}")?;
            }
            if let Some(e) = &head.error {
                writeln!(out, "  INVALID metadata: {e}")?;
                totals.errors += 1;
            }
            let w = f.names().map(str::len).max().unwrap_or(6).clamp(6, 60);
            for t in f.iter() {
                let t = inspect_tensor(f, &t, head.checked.as_ref());
                totals.add(&t);
                print_tensor(out, &t, w)?;
            }
        }
        write!(
            out,
            "{} tensors, {} quantized",
            totals.tensors, totals.quantized
        )?;
        if let Some(b) = totals.bits_per_weight() {
            write!(
                out,
                " ({:.2} M weights at {b:.3} bits/weight)",
                totals.quantized_weights as f64 / 1e6
            )?;
        }
        if totals.errors > 0 {
            write!(out, ", {} INVALID", totals.errors)?;
        }
        writeln!(out)
    }

    /// Writes the listing as pretty-printed JSON.
    pub fn write_json(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let totals = Cell::new(Totals::default());
        let listing = JsonListing {
            ckpt: &self.ckpt,
            totals: &totals,
        };
        serde_json::to_writer_pretty(&mut *out, &listing)?;
        writeln!(out)
    }
}

/// One line of the human-readable listing; `w` is the width of the name column.
fn print_tensor(out: &mut dyn std::io::Write, t: &InspectTensor, w: usize) -> std::io::Result<()> {
    let dims = |s: &[usize]| {
        s.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x")
    };
    if let Some(e) = &t.error {
        writeln!(out, "  {:<w$}  INVALID: {e}", t.name)
    } else if let (Some(shape), Some(bits)) = (&t.shape, t.bits) {
        writeln!(
            out,
            "  {:<w$}  {:>13}  {:>5} -> adpq v{} b{} g{} {} alpha {}  outliers {}  {:.3} bits/w  {:.3} MiB",
            t.name,
            dims(shape),
            t.dtype.as_deref().unwrap_or("?"),
            t.version.unwrap_or(0),
            bits,
            t.group_size.unwrap_or(0),
            t.grid.as_deref().unwrap_or(""),
            t.alpha.unwrap_or(0.0),
            t.outliers.unwrap_or(0),
            t.bits_per_weight.unwrap_or(0.0),
            t.bytes as f64 / 1048576.0
        )
    } else {
        writeln!(
            out,
            "  {:<w$}  {:>13}  {:>5}  {:.3} MiB",
            t.name,
            dims(&t.stored_shape),
            t.stored_dtype,
            t.bytes as f64 / 1048576.0
        )
    }
}

/// Checks an adpq checkpoint as `dequantize` would before restoring it, and more: the
/// metadata (format, version, parameters, every record), then every packed tensor
/// (structure, checksum, recorded shape, agreement with the parameters, and every value
/// restorable as its recorded original dtype under the saturation rule, so that `verify`
/// accepts exactly what `dequantize` restores with its default dtype) in parallel.
/// Returns the number of packed tensors checked, or [`Error::VerifyFailed`] listing
/// every failure.
pub fn verify(input: &Path) -> Result<usize> {
    let ckpt = Checkpoint::open(input)?;
    let mut failures = Vec::new();
    let mut checked = 0;
    for f in &ckpt.files {
        let meta = read_adpq_meta(f, &f.user_metadata())?;
        let list: Vec<(&str, &Original)> = meta.originals.iter().collect();
        let check = |name: &str, orig: &Original, params: &Params| match f.tensor(name) {
            None => Some(format!(
                "{}: tensor `{name}`: listed in the metadata but missing",
                f.path().display()
            )),
            Some(t) => {
                let r = match packed_of(f, &t, orig, params, true) {
                    Err(e) => Some(e.to_string()),
                    Ok(p) => fits_original(&p, orig.dtype)
                        .err()
                        .map(|e| Error::tensor(f.path(), name, e).to_string()),
                };
                f.release(&t);
                r
            }
        };
        let results: Vec<Option<String>> = list
            .par_iter()
            .map(|(name, orig)| check(name, orig, meta.params_of(name)))
            .collect();
        checked += results.len();
        failures.extend(results.into_iter().flatten());
        failures.extend(unlisted_packed(f, &meta).iter().map(|e| e.to_string()));
    }
    if failures.is_empty() {
        Ok(checked)
    } else {
        Err(Error::VerifyFailed(failures))
    }
}
