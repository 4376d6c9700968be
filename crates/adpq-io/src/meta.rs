//! The adpq checkpoint metadata: the `__metadata__` keys an adpq checkpoint carries, the
//! record of each quantized tensor's original dtype and shape, and the checks that a
//! stored tensor really is the packed buffer the metadata says it is.

use std::collections::{BTreeMap, BTreeSet};

use adpq_core::{FormatVersion, Grid, OutDtype, PackedTensor, ParamFields, Params, SelectionMode};
use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::file::{SafetensorsFile, TensorRef};

mod records;

use records::each_record;
pub use records::{written_version, Original, OriginalTensor, Originals, OriginalsJson};

/// Key of the safetensors `__metadata__` entry naming the format (`"adpq"`).
pub const META_FORMAT: &str = "format";
/// Value of [`META_FORMAT`] in a quantized checkpoint.
pub const FORMAT_NAME: &str = "adpq";
/// Metadata key: the newest packed format version the file's tensors are written in
/// (`1` or `2`; readers accept `1..=adpq_core::format::VERSION`).
pub const META_VERSION: &str = "adpq.version";
/// Metadata key: JSON of the quantization parameters.
pub const META_PARAMS: &str = "adpq.params";
/// Metadata key: JSON map from each quantized tensor's name to its original dtype and shape.
pub const META_TENSORS: &str = "adpq.tensors";
/// Metadata key: the input's own `format` value (e.g. `pt`), restored by dequantize.
pub const META_ORIGINAL_FORMAT: &str = "adpq.original_format";
/// Metadata key: the tool that wrote the file.
pub const META_TOOL: &str = "adpq.tool";
/// Metadata key (only when needed): JSON list of the tensors stored as they were whose
/// bytes nevertheless look packed (1-D `U8` starting with the magic). Readers decide
/// "packed" from [`META_TENSORS`]; this list tells them such a tensor is plain data, so a
/// packed-looking tensor in neither list is an error (the metadata lost an entry).
pub const META_NOT_PACKED: &str = "adpq.not_packed";

/// The dtypes a quantized tensor can come from (and be restored to).
pub const ORIGINAL_DTYPES: [&str; 3] = ["F32", "F16", "BF16"];

/// The quantization parameters as written in reports and in the checkpoint metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamsRecord {
    /// Bits per code.
    pub bits: u8,
    /// Group size.
    pub group_size: u16,
    /// Target outlier fraction.
    pub alpha: f64,
    /// `symmetric` or `asymmetric`.
    pub grid: String,
    /// `exact` or `reference`.
    pub selection: String,
    /// Iteration cap of the reference selection.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reference_iters: Option<u32>,
    /// The packed format: `v2`; absent for version 1 (so version 1 metadata reads as it
    /// always did).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub format: Option<String>,
}

impl ParamsRecord {
    /// The parameters this record stands for, validated.
    pub fn to_params(&self) -> std::result::Result<Params, String> {
        let grid = match self.grid.as_str() {
            "symmetric" => Grid::Symmetric,
            "asymmetric" => Grid::Asymmetric,
            other => return Err(format!("unknown grid `{other}`")),
        };
        let selection = match (self.selection.as_str(), self.reference_iters) {
            ("exact", None) => SelectionMode::Exact,
            ("reference", Some(n_iters)) => SelectionMode::Reference { n_iters },
            (s, n) => {
                return Err(format!(
                    "unknown selection `{s}` with reference_iters {n:?}"
                ))
            }
        };
        let version = match self.format.as_deref() {
            None | Some("v1") => FormatVersion::V1,
            Some("v2") => FormatVersion::V2,
            Some("v3") => FormatVersion::V3,
            Some(other) => return Err(format!("unknown format `{other}` (expected v1, v2 or v3)")),
        };
        ParamFields {
            bits: self.bits,
            group_size: self.group_size,
            alpha: self.alpha,
            grid,
            selection,
            version,
        }
        .validate()
        .map_err(|e| e.to_string())
    }
}

impl From<&Params> for ParamsRecord {
    fn from(p: &Params) -> Self {
        let (selection, reference_iters) = match p.selection() {
            SelectionMode::Exact => ("exact", None),
            SelectionMode::Reference { n_iters } => ("reference", Some(n_iters)),
        };
        ParamsRecord {
            bits: p.bits(),
            group_size: p.group_size(),
            alpha: p.alpha(),
            grid: match p.grid() {
                Grid::Symmetric => "symmetric",
                Grid::Asymmetric => "asymmetric",
            }
            .into(),
            selection: selection.into(),
            reference_iters,
            format: match p.version() {
                FormatVersion::V1 => None,
                FormatVersion::V2 => Some("v2".into()),
                FormatVersion::V3 => Some("v3".into()),
            },
        }
    }
}

/// Whether a `__metadata__` map marks an adpq checkpoint.
pub fn is_adpq(meta: &BTreeMap<String, String>) -> bool {
    meta.get(META_FORMAT).map(String::as_str) == Some(FORMAT_NAME)
}

/// `v` as compact JSON.
fn json_string(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The `__metadata__` of a quantized file made from an input file's `input` metadata:
/// the input's `format` moves to [`META_ORIGINAL_FORMAT`], the input's own `adpq.*` keys
/// are dropped (the namespace is ours: a stale key would make the output unreadable),
/// and the adpq keys are set ([`META_NOT_PACKED`] only when `not_packed` is not empty).
/// `params` are the file's parameters; a tensor quantized with others carries them in
/// its record.
pub fn quantized_metadata(
    mut input: BTreeMap<String, String>,
    params: &Params,
    originals: OriginalsJson,
    not_packed: &BTreeSet<String>,
    tool: &str,
) -> BTreeMap<String, String> {
    input.retain(|k, _| !k.starts_with("adpq."));
    // An original `format` of `adpq` is not kept: restored, it would mark the
    // dequantized file as packed.
    if let Some(orig) = input.remove(META_FORMAT).filter(|f| f != FORMAT_NAME) {
        input.insert(META_ORIGINAL_FORMAT.into(), orig);
    }
    input.insert(META_FORMAT.into(), FORMAT_NAME.into());
    let version = originals.newest.max(params.version().number());
    input.insert(META_VERSION.into(), version.to_string());
    input.insert(META_TOOL.into(), tool.into());
    input.insert(META_PARAMS.into(), json_string(&ParamsRecord::from(params)));
    input.insert(META_TENSORS.into(), originals.finish());
    if !not_packed.is_empty() {
        input.insert(META_NOT_PACKED.into(), json_string(not_packed));
    }
    input
}

/// The `__metadata__` of a dequantized file made from a quantized file's metadata: the
/// adpq keys removed, the original `format` restored (unless it is `adpq`, which would
/// mark the output as packed: a hand-edited file can say so).
pub fn dequantized_metadata(quantized: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    // Only the kept entries are copied: `adpq.tensors` alone is tens of bytes per tensor.
    let mut meta: BTreeMap<String, String> = quantized
        .iter()
        .filter(|(k, _)| k.as_str() != META_FORMAT && !k.starts_with("adpq."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(orig) = quantized
        .get(META_ORIGINAL_FORMAT)
        .filter(|f| f.as_str() != FORMAT_NAME)
    {
        meta.insert(META_FORMAT.into(), orig.clone());
    }
    meta
}

/// What the metadata of an adpq file says, checked: the format version, the parameters,
/// the quantized tensors and the packed-looking tensors that are plain data.
#[derive(Debug, Clone)]
pub struct AdpqMeta {
    /// The format version ([`META_VERSION`]): the newest its tensors are written in.
    pub version: u16,
    /// The quantization parameters ([`META_PARAMS`]), validated.
    pub params: Params,
    /// The quantized tensors (name → original dtype and shape, [`META_TENSORS`]).
    pub originals: Originals,
    /// Tensors stored as they were although they look packed ([`META_NOT_PACKED`]).
    pub not_packed: BTreeSet<String>,
    /// The validated parameters of the tensors whose records carry their own.
    tensor_params: BTreeMap<String, Params>,
}

impl AdpqMeta {
    /// The parameters quantized tensor `name` was written with: its record's own, else
    /// the file's.
    pub fn params_of(&self, name: &str) -> &Params {
        self.tensor_params.get(name).unwrap_or(&self.params)
    }
}

fn meta_json<T: serde::de::DeserializeOwned>(
    f: &SafetensorsFile,
    meta: &BTreeMap<String, String>,
    key: &str,
) -> Result<Option<T>> {
    meta.get(key)
        .map(|text| {
            serde_json::from_str(text)
                .map_err(|e| Error::invalid(f.path(), format!("bad {key} metadata: {e}")))
        })
        .transpose()
}

/// Reads and checks the adpq metadata of `f` (its `meta`): the format and version (one
/// this build reads, `1..=adpq_core::format::VERSION`), the parameters (valid, of a
/// version no newer than the file's), every quantized tensor's record (a known dtype, a
/// 2-D shape, a tensor of that name in the file, valid parameters of its own if any) and
/// the not-packed list (tensors of the file, not quantized). An error for a file that
/// is not an adpq checkpoint of a version this build reads.
///
/// `verify`, `dequantize` and `inspect` all start here, so they accept the same files.
pub fn read_adpq_meta(f: &SafetensorsFile, meta: &BTreeMap<String, String>) -> Result<AdpqMeta> {
    if !is_adpq(meta) {
        return Err(Error::invalid(
            f.path(),
            "not an adpq checkpoint (its __metadata__ has no format=adpq)",
        ));
    }
    let newest = adpq_core::format::VERSION;
    let version = match meta.get(META_VERSION).map(|v| (v, v.parse::<u16>())) {
        Some((_, Ok(v))) if (1..=newest).contains(&v) => v,
        Some((v, _)) => {
            return Err(Error::invalid(
                f.path(),
                format!(
                    "unsupported adpq format version {v:?} (this build reads versions 1 to \
                     {newest}; a newer adpq wrote it?)"
                ),
            ))
        }
        None => {
            return Err(Error::invalid(
                f.path(),
                format!("adpq checkpoint without the {META_VERSION} metadata key"),
            ))
        }
    };
    let too_new = |p: &Params| p.version().number() > version;
    let missing = |key: &str| {
        Error::invalid(
            f.path(),
            format!("adpq checkpoint without the {key} metadata key"),
        )
    };
    let record: ParamsRecord =
        meta_json(f, meta, META_PARAMS)?.ok_or_else(|| missing(META_PARAMS))?;
    let params = record
        .to_params()
        .map_err(|e| Error::invalid(f.path(), format!("bad {META_PARAMS} metadata: {e}")))?;
    if too_new(&params) {
        return Err(Error::invalid(
            f.path(),
            format!(
                "{META_PARAMS} is format v{} but {META_VERSION} is {version}",
                params.version().number()
            ),
        ));
    }
    let text = meta
        .get(META_TENSORS)
        .ok_or_else(|| missing(META_TENSORS))?;
    let mut entries = Vec::new();
    let mut tensor_params = BTreeMap::new();
    let mut check = |name: String, o: OriginalTensor| -> Result<()> {
        let bad = |what: String| {
            Error::tensor(
                f.path(),
                &name,
                format!("bad {META_TENSORS} record: {what}"),
            )
        };
        let Some(dtype) = OutDtype::from_name(&o.dtype) else {
            return Err(bad(format!(
                "unknown original dtype {:?} (expected one of {ORIGINAL_DTYPES:?})",
                o.dtype
            )));
        };
        let &[rows, cols] = o.shape.as_slice() else {
            return Err(bad(format!("shape {:?} is not 2-D", o.shape)));
        };
        if !f.contains(&name) {
            return Err(Error::tensor(
                f.path(),
                &name,
                "listed in the metadata but missing",
            ));
        }
        if let Some(record) = &o.params {
            let p = record.to_params().map_err(|e| bad(e.to_string()))?;
            if too_new(&p) {
                return Err(bad(format!(
                    "format v{} parameters but {META_VERSION} is {version}",
                    p.version().number()
                )));
            }
            tensor_params.insert(name.clone(), p);
        }
        let shape = [rows, cols];
        entries.push((name.into_boxed_str(), Original { dtype, shape }));
        Ok(())
    };
    each_record(text, &mut check, |e| {
        Error::invalid(f.path(), format!("bad {META_TENSORS} metadata: {e}"))
    })?;
    let originals = Originals::new(entries).map_err(|name| {
        Error::tensor(f.path(), &name, format!("listed twice in {META_TENSORS}"))
    })?;
    let not_packed: BTreeSet<String> = meta_json(f, meta, META_NOT_PACKED)?.unwrap_or_default();
    for name in &not_packed {
        if !f.contains(name) || originals.contains_key(name) {
            return Err(Error::tensor(
                f.path(),
                name,
                format!(
                    "listed in {META_NOT_PACKED} but {}",
                    if f.contains(name) {
                        "also quantized"
                    } else {
                        "missing"
                    }
                ),
            ));
        }
    }
    Ok(AdpqMeta {
        version,
        params,
        originals,
        not_packed,
        tensor_params,
    })
}

/// Whether a stored tensor looks like a packed buffer: 1-D `U8` starting with the magic.
/// Only a hint: whether a tensor IS packed is decided by [`META_TENSORS`].
pub fn looks_packed(t: &TensorRef<'_>) -> bool {
    t.dtype == Dtype::U8 && t.shape.len() == 1 && t.data.starts_with(&adpq_core::format::MAGIC)
}

/// The errors for the packed-looking tensors of `f` that the metadata lists neither as
/// quantized nor as plain data: passed through, they would end up as opaque bytes in a
/// "standard" checkpoint, so the metadata must have lost their entries.
pub fn unlisted_packed(f: &SafetensorsFile, meta: &AdpqMeta) -> Vec<Error> {
    f.iter()
        .filter(|t| {
            looks_packed(t)
                && !meta.originals.contains_key(t.name)
                && !meta.not_packed.contains(t.name)
        })
        .map(|t| {
            Error::invalid(
                f.path(),
                format!("packed tensor `{}` not listed in {META_TENSORS}", t.name),
            )
        })
        .collect()
}

/// Checks that a stored tensor is a packed buffer matching its recorded original and its
/// parameters (`params`: [`AdpqMeta::params_of`]); returns the parsed tensor (checksum
/// verified when `crc`).
pub fn packed_of<'a>(
    f: &SafetensorsFile,
    t: &TensorRef<'a>,
    orig: &Original,
    params: &Params,
    crc: bool,
) -> Result<PackedTensor<'a>> {
    if t.dtype != Dtype::U8 || t.shape.len() != 1 {
        return Err(Error::tensor(
            f.path(),
            t.name,
            format!("packed tensors are 1-D U8, found {} {:?}", t.dtype, t.shape),
        ));
    }
    let packed = if crc {
        PackedTensor::parse(t.data)
    } else {
        PackedTensor::parse_skip_checksum(t.data)
    }
    .map_err(|e| Error::core(f.path(), t.name, e))?;
    if orig.shape != [packed.rows(), packed.cols()] {
        return Err(Error::tensor(
            f.path(),
            t.name,
            format!(
                "packed shape {}x{} differs from the recorded shape {:?}",
                packed.rows(),
                packed.cols(),
                orig.shape
            ),
        ));
    }
    let (fp, info) = (packed.params(), packed.info());
    if fp != params.format() || info.selection != params.selection() || info.alpha != params.alpha()
    {
        return Err(Error::tensor(
            f.path(),
            t.name,
            format!(
                "packed header (format v{}, bits {}, group size {}, {:?} grid, {:?} selection, \
                 alpha {}) disagrees with {META_PARAMS} (format v{}, bits {}, group size {}, \
                 {:?} grid, {:?} selection, alpha {})",
                fp.version.number(),
                fp.bits,
                fp.group_size,
                fp.grid,
                info.selection,
                info.alpha,
                params.version().number(),
                params.bits(),
                params.group_size(),
                params.grid(),
                params.selection(),
                params.alpha()
            ),
        ));
    }
    Ok(packed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trip_restores_the_input() {
        let input = BTreeMap::from([
            ("format".to_string(), "pt".to_string()),
            ("note".to_string(), "kept".to_string()),
        ]);
        let originals = BTreeMap::from([(
            "w".to_string(),
            OriginalTensor {
                dtype: "BF16".into(),
                shape: vec![4, 128],
                params: None,
            },
        )]);
        let q = quantized_metadata(
            input.clone(),
            &Params::V1,
            OriginalsJson::from_map(&originals),
            &BTreeSet::new(),
            "adpq 0.0",
        );
        assert!(!q.contains_key(META_NOT_PACKED));
        assert!(is_adpq(&q));
        assert_eq!(q[META_ORIGINAL_FORMAT], "pt");
        assert_eq!(q[META_TOOL], "adpq 0.0");
        assert_eq!(q[META_VERSION], "1");
        let params: ParamsRecord = serde_json::from_str(&q[META_PARAMS]).unwrap();
        assert_eq!(params, ParamsRecord::from(&Params::V1));
        assert_eq!(params.to_params().unwrap(), Params::V1);
        let back: BTreeMap<String, OriginalTensor> =
            serde_json::from_str(&q[META_TENSORS]).unwrap();
        assert_eq!(back, originals);
        assert_eq!(dequantized_metadata(&q), input);
    }

    /// An original format of `adpq` (a hand-edited file; the fuzzer found one) is
    /// neither recorded nor restored: the dequantized file must not read as packed.
    #[test]
    fn an_original_format_of_adpq_is_not_restored() {
        let quantized = BTreeMap::from([
            (META_ORIGINAL_FORMAT.to_string(), FORMAT_NAME.to_string()),
            (META_NOT_PACKED.to_string(), r#"["magic"]"#.to_string()),
        ]);
        let restored = dequantized_metadata(&quantized);
        assert!(!is_adpq(&restored));
        assert!(restored.is_empty());
        let input = BTreeMap::from([(META_FORMAT.to_string(), FORMAT_NAME.to_string())]);
        let q = quantized_metadata(
            input,
            &Params::V1,
            OriginalsJson::from_map(&BTreeMap::new()),
            &BTreeSet::new(),
            "adpq 0.0",
        );
        assert!(!q.contains_key(META_ORIGINAL_FORMAT));
        assert!(!is_adpq(&dequantized_metadata(&q)));
    }

    /// `adpq.*` keys of the input do not survive into the output, where a stale
    /// `adpq.not_packed` or `adpq.original_format` would be taken for ours.
    #[test]
    fn input_adpq_keys_are_dropped() {
        let input = BTreeMap::from([
            (META_NOT_PACKED.to_string(), r#"["gone"]"#.to_string()),
            (META_ORIGINAL_FORMAT.to_string(), "tf".to_string()),
            ("adpq.anything".to_string(), "x".to_string()),
            ("note".to_string(), "kept".to_string()),
        ]);
        let q = quantized_metadata(
            input,
            &Params::V1,
            OriginalsJson::new(),
            &BTreeSet::new(),
            "adpq 0.0",
        );
        let keys: Vec<&str> = q.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                META_PARAMS,
                META_TENSORS,
                META_TOOL,
                META_VERSION,
                META_FORMAT,
                "note"
            ]
        );
    }

    /// Version 1 metadata is written exactly as before format v2 existed (version `1`, no
    /// `format` field, no per-tensor parameters), so version 1 outputs stay byte-identical.
    #[test]
    fn version_1_metadata_is_unchanged() {
        let originals = BTreeMap::from([(
            "w".to_string(),
            OriginalTensor {
                dtype: "F32".into(),
                shape: vec![2, 64],
                params: None,
            },
        )]);
        let q = quantized_metadata(
            BTreeMap::new(),
            &Params::V1,
            OriginalsJson::from_map(&originals),
            &BTreeSet::new(),
            "t",
        );
        assert_eq!(q[META_VERSION], "1");
        assert_eq!(
            q[META_PARAMS],
            r#"{"bits":4,"group_size":128,"alpha":0.06,"grid":"symmetric","selection":"exact"}"#
        );
        assert_eq!(q[META_TENSORS], r#"{"w":{"dtype":"F32","shape":[2,64]}}"#);
    }

    /// A version 2 file says so twice (`adpq.version` 2, `"format":"v2"`), and a tensor
    /// with parameters of its own carries them in its record; both read back.
    #[test]
    fn version_2_and_per_tensor_parameters_round_trip() {
        let six = ParamFields {
            bits: 6,
            ..Params::V2.fields()
        }
        .validate()
        .unwrap();
        let originals = BTreeMap::from([
            (
                "v".to_string(),
                OriginalTensor {
                    dtype: "F32".into(),
                    shape: vec![2, 64],
                    params: Some(Box::new(ParamsRecord::from(&six))),
                },
            ),
            (
                "w".to_string(),
                OriginalTensor {
                    dtype: "F32".into(),
                    shape: vec![2, 64],
                    params: None,
                },
            ),
        ]);
        // The same bytes as the map's JSON.
        assert_eq!(
            OriginalsJson::from_map(&originals).finish(),
            json_string(&originals)
        );
        // Entries out of name order are refused.
        let mut j = OriginalsJson::new();
        assert!(j.push("w", &originals["w"]) && !j.push("v", &originals["v"]));
        assert!(!j.push("w", &originals["w"]));
        let q = quantized_metadata(
            BTreeMap::new(),
            &Params::V1,
            OriginalsJson::from_map(&originals),
            &BTreeSet::new(),
            "t",
        );
        assert_eq!(q[META_VERSION], "2");
        let q = quantized_metadata(
            BTreeMap::new(),
            &Params::V2,
            OriginalsJson::from_map(&originals),
            &BTreeSet::new(),
            "t",
        );
        assert_eq!(q[META_VERSION], "2");
        let record: ParamsRecord = serde_json::from_str(&q[META_PARAMS]).unwrap();
        assert_eq!(record.format.as_deref(), Some("v2"));
        assert_eq!(record.to_params().unwrap(), Params::V2);
        let back: BTreeMap<String, OriginalTensor> =
            serde_json::from_str(&q[META_TENSORS]).unwrap();
        assert_eq!(back, originals);
        assert_eq!(back["v"].params.as_ref().unwrap().to_params().unwrap(), six);
        // A version 2 tensor in a file of version 1 parameters makes the file version 2.
        assert_eq!(written_version(&Params::V1, &originals), 2);
        let v1_only = BTreeMap::from([("w".to_string(), originals["w"].clone())]);
        assert_eq!(written_version(&Params::V1, &v1_only), 1);
    }

    #[test]
    fn unknown_formats_and_invalid_v2_parameters_are_refused() {
        let mut r = ParamsRecord::from(&Params::V2);
        r.format = Some("v4".into());
        assert!(r.to_params().unwrap_err().contains("unknown format `v4`"));
        // Version 3 reads back, and holds its own rules (no outlier split).
        let v3 = ParamsRecord::from(&Params::V3);
        assert_eq!(v3.format.as_deref(), Some("v3"));
        assert_eq!(v3.to_params().unwrap(), Params::V3);
        r.format = Some("v3".into());
        assert!(r.to_params().is_err(), "v3 has alpha 0");
        r.format = Some("v2".into());
        r.group_size = 256;
        assert!(r.to_params().is_err(), "v2 groups are below 256");
        let mut sym = ParamsRecord::from(&Params::V1);
        sym.format = Some("v2".into());
        assert!(sym.to_params().is_err(), "v2 is asymmetric");
        sym.format = Some("v1".into());
        assert_eq!(sym.to_params().unwrap(), Params::V1);
    }
}
