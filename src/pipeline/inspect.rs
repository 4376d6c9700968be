//! `inspect` (list the tensors of a checkpoint, quantized or not) and `verify` (check
//! every packed tensor's structure and checksum).

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
use serde::Serialize;

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

/// One file as `inspect` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct InspectFile {
    /// Path.
    pub path: String,
    /// File size.
    pub bytes: u64,
    /// Whether it is an adpq checkpoint.
    pub adpq: bool,
    /// `__metadata__`.
    pub metadata: BTreeMap<String, String>,
    /// What is wrong with the adpq metadata (missing or invalid `adpq.tensors`, unknown
    /// version), if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Tensors in data order.
    pub tensors: Vec<InspectTensor>,
}

/// What `inspect` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// The files.
    pub files: Vec<InspectFile>,
    /// Tensors in all files.
    pub tensors: usize,
    /// Quantized tensors.
    pub quantized: usize,
    /// Weights of the quantized tensors.
    pub quantized_weights: u64,
    /// Bytes of the quantized tensors.
    pub quantized_bytes: u64,
    /// Bits per weight over the quantized tensors.
    pub bits_per_weight: Option<f64>,
    /// Problems found: packed tensors that failed to parse or are not listed in the
    /// metadata, and files whose adpq metadata is unusable.
    pub errors: usize,
}

/// Lists the tensors of a checkpoint, quantized or not (no checksum verification: use
/// [`verify`] for that).
pub fn inspect(input: &Path) -> Result<Inspection> {
    let ckpt = Checkpoint::open(input)?;
    let files: Vec<InspectFile> = ckpt.files.iter().map(inspect_file).collect();
    let quantized = || {
        files
            .iter()
            .flat_map(|f| &f.tensors)
            .filter(|t| t.bits.is_some())
    };
    let weights: u64 = quantized()
        .map(|t| t.shape.iter().flatten().product::<usize>() as u64)
        .sum();
    let bytes: u64 = quantized().map(|t| t.bytes).sum();
    let errors = files
        .iter()
        .map(|f| {
            usize::from(f.error.is_some()) + f.tensors.iter().filter(|t| t.error.is_some()).count()
        })
        .sum();
    Ok(Inspection {
        tensors: files.iter().map(|f| f.tensors.len()).sum(),
        quantized: quantized().count(),
        quantized_weights: weights,
        quantized_bytes: bytes,
        bits_per_weight: (weights > 0).then(|| 8.0 * bytes as f64 / weights as f64),
        errors,
        files,
    })
}

/// One file as `inspect` shows it.
fn inspect_file(f: &SafetensorsFile) -> InspectFile {
    let meta = f.user_metadata();
    let adpq = is_adpq(&meta);
    let (checked, error) = if adpq {
        match read_adpq_meta(f, &meta) {
            Ok(m) => (Some(m), None),
            Err(e) => (None, Some(e.to_string())),
        }
    } else {
        (None, None)
    };
    let tensors = f
        .iter()
        .map(|t| inspect_tensor(f, &t, checked.as_ref()))
        .collect();
    InspectFile {
        path: f.path().display().to_string(),
        bytes: f.len() as u64,
        adpq,
        metadata: meta,
        error,
        tensors,
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
        for f in &self.files {
            writeln!(
                out,
                "{} ({:.2} MiB){}",
                f.path,
                f.bytes as f64 / 1048576.0,
                if f.adpq { ", adpq" } else { "" }
            )?;
            if let Some(p) = f.metadata.get(META_PARAMS) {
                writeln!(out, "  params: {p}")?;
            }
            if let Some(e) = &f.error {
                writeln!(out, "  INVALID metadata: {e}")?;
            }
            let w = f
                .tensors
                .iter()
                .map(|t| t.name.len())
                .max()
                .unwrap_or(6)
                .clamp(6, 60);
            for t in &f.tensors {
                let dims = |s: &[usize]| {
                    s.iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join("x")
                };
                if let Some(e) = &t.error {
                    writeln!(out, "  {:<w$}  INVALID: {e}", t.name)?;
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
                    )?;
                } else {
                    writeln!(
                        out,
                        "  {:<w$}  {:>13}  {:>5}  {:.3} MiB",
                        t.name,
                        dims(&t.stored_shape),
                        t.stored_dtype,
                        t.bytes as f64 / 1048576.0
                    )?;
                }
            }
        }
        write!(
            out,
            "{} tensors, {} quantized",
            self.tensors, self.quantized
        )?;
        if let Some(b) = self.bits_per_weight {
            write!(
                out,
                " ({:.2} M weights at {b:.3} bits/weight)",
                self.quantized_weights as f64 / 1e6
            )?;
        }
        if self.errors > 0 {
            write!(out, ", {} INVALID", self.errors)?;
        }
        writeln!(out)
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
