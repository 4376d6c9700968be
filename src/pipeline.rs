//! Whole-checkpoint operations: quantize, dequantize, inspect, verify.
//!
//! Quantize runs in two phases (see [`crate::checkpoint`] for why): first the outlier
//! selection of every tensor to quantize (this also finds NaN weights and every other data
//! error before anything is written), then, file by file, the header and the tensors,
//! each quantized in memory right before it is streamed out.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use adpq_core::{packed_len, CpuKernels, PackedTensor, Params, Selection, SelectionMode};
use rayon::prelude::*;
use safetensors::Dtype;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checkpoint::{
    sort_for_output, weight_data, with_writer, Checkpoint, Chunk, Output, PlannedTensor,
    SafetensorsFile, Source, TensorRef, TensorWriter,
};
use crate::driver::{Driver, OutDtype};
use crate::error::{Error, Result};
use crate::filter::{Decision, TensorFilter};
use crate::report::{tool_version, ParamsRecord, Progress, Report, TensorReport};
use crate::rtn::ErrorSums;
use crate::{
    FORMAT_NAME, META_FORMAT, META_ORIGINAL_FORMAT, META_PARAMS, META_TENSORS, META_TOOL,
    META_VERSION,
};

/// Options of [`quantize`].
#[derive(Debug, Clone, Default)]
pub struct QuantizeOptions {
    /// Quantization parameters.
    pub params: Params,
    /// Which tensors to quantize.
    pub filter: TensorFilter,
    /// Plan and select only; write nothing.
    pub dry_run: bool,
    /// Skip the error statistics (AdpQ and RTN relative MSE), saving one pass per tensor.
    pub no_stats: bool,
    /// Replace an existing output folder.
    pub force: bool,
}

/// The original dtype and shape of a quantized tensor, as recorded in the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginalTensor {
    /// The input dtype (`F32`, `F16` or `BF16`).
    pub dtype: String,
    /// The input shape `[rows, cols]`.
    pub shape: Vec<usize>,
}

fn file_name(f: &SafetensorsFile) -> String {
    f.path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn is_adpq(meta: &BTreeMap<String, String>) -> bool {
    meta.get(META_FORMAT).map(String::as_str) == Some(FORMAT_NAME)
}

/// `path` made absolute and free of symlinks, also when it does not exist yet (its
/// parent is resolved then).
fn resolve(path: &Path) -> Option<std::path::PathBuf> {
    path.canonicalize().ok().or_else(|| {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        Some(parent.canonicalize().ok()?.join(path.file_name()?))
    })
}

/// Every path an input checkpoint reads: the path given, the folder, the safetensors
/// files, the index and the extra files (each resolved, so symlinks count where they
/// point).
fn input_paths(ckpt: &Checkpoint, input: &Path) -> Vec<std::path::PathBuf> {
    let mut paths = vec![input.to_path_buf()];
    paths.extend(ckpt.files.iter().map(|f| f.path().to_path_buf()));
    if let Source::Folder { dir, index, extras } = &ckpt.source {
        paths.push(dir.clone());
        paths.extend(index.iter().map(|(name, _)| dir.join(name)));
        paths.extend(extras.iter().map(|e| dir.join(e)));
    }
    paths.iter().filter_map(|p| resolve(p)).collect()
}

/// Whether writing `target` (replacing it, and for a folder everything in it) could touch
/// the input: `target` is one of the input's paths, inside the input folder, or a folder
/// that holds (at any depth) the input folder or any input file.
fn touches_input(inputs: &[std::path::PathBuf], target: &Path) -> bool {
    let Some(t) = resolve(target) else {
        return false;
    };
    inputs
        .iter()
        .any(|x| x == &t || x.starts_with(&t) || (x.is_dir() && t.starts_with(x)))
}

/// Refuses (usage error) a `--report` path that would overwrite the input or the output:
/// one of the input's paths or inside the input folder, the output or inside the output
/// folder. An input that cannot be opened is checked by its path only (the command then
/// fails on it anyway).
pub fn check_report_path(report: &Path, input: &Path, output: Option<&Path>) -> Result<()> {
    let Some(r) = resolve(report) else {
        return Ok(());
    };
    let inputs = match Checkpoint::open(input) {
        Ok(c) => input_paths(&c, input),
        Err(_) => resolve(input).into_iter().collect(),
    };
    if inputs
        .iter()
        .any(|x| x == &r || (x.is_dir() && r.starts_with(x)))
    {
        return Err(Error::Usage(format!(
            "--report {} is the input or inside the input folder",
            report.display()
        )));
    }
    if let Some(o) = output.and_then(resolve) {
        if r.starts_with(&o) {
            return Err(Error::Usage(format!(
                "--report {} is the output or inside the output folder",
                report.display()
            )));
        }
    }
    Ok(())
}

/// Opens the output matching the input's layout (file for a file, folder for a folder).
fn open_output(ckpt: &Checkpoint, input: &Path, output: &Path, force: bool) -> Result<Output> {
    if touches_input(&input_paths(ckpt, input), output) {
        return Err(Error::Usage(format!(
            "output {} is the input, inside it, or a folder holding it; the input is never modified",
            output.display()
        )));
    }
    match ckpt.source {
        Source::File => Output::file(output),
        Source::Folder { .. } => Output::dir(output, force),
    }
}

/// The warnings for the entries of an input folder that the output will not hold,
/// printed through `progress` (also with `-q`).
fn skipped_warnings(ckpt: &Checkpoint, progress: &mut dyn Progress) -> Vec<String> {
    let dir = match &ckpt.source {
        Source::Folder { dir, .. } => dir.as_path(),
        Source::File => return Vec::new(),
    };
    let warnings: Vec<String> = ckpt
        .skipped
        .iter()
        .map(|s| format!("{}: not copied to the output: {s}", dir.display()))
        .collect();
    for w in &warnings {
        progress.warn(w);
    }
    warnings
}

/// Writes the index and the extra files of a folder checkpoint into `out`.
fn finish_folder(ckpt: &Checkpoint, out: &Output, total_size: u64) -> Result<()> {
    if let Source::Folder { dir, index, extras } = &ckpt.source {
        for e in extras {
            out.copy_in(&dir.join(e), e)?;
        }
        if let Some((name, json)) = index {
            let mut json = json.clone();
            if let Some(obj) = json.as_object_mut() {
                let meta = obj
                    .entry("metadata")
                    .or_insert_with(|| Value::Object(Default::default()));
                if let Some(m) = meta.as_object_mut() {
                    m.insert("total_size".into(), total_size.into());
                }
            }
            let (mut f, shown) = out.create(name)?;
            let mut text =
                serde_json::to_vec_pretty(&json).map_err(|e| Error::io(&shown, e.into()))?;
            text.push(b'\n');
            std::io::Write::write_all(&mut f, &text).map_err(|e| Error::io(&shown, e))?;
            f.sync_all().map_err(|e| Error::io(&shown, e))?;
        }
    }
    Ok(())
}

enum Action {
    Pass(&'static str),
    Quant {
        sel: Selection,
        rows: usize,
        cols: usize,
        len: usize,
    },
}

fn reason(d: Decision) -> &'static str {
    match d {
        Decision::Quantize => "",
        Decision::NotFloat => "not F32/F16/BF16",
        Decision::NotMatrix => "not 2-D",
        Decision::ByName => "name rule",
    }
}

/// Quantizes a checkpoint (file or folder) into `output` (see the module docs).
pub fn quantize<B: CpuKernels>(
    driver: &Driver<B>,
    input: &Path,
    output: &Path,
    opts: &QuantizeOptions,
    progress: &mut dyn Progress,
) -> Result<Report> {
    let start = Instant::now();
    let params = opts.params;
    params
        .validate()
        .map_err(|e| Error::Usage(format!("invalid parameters: {e}")))?;
    if matches!(params.selection, SelectionMode::Reference { .. }) && params.alpha <= 0.0 {
        return Err(Error::Usage(
            "--reference-iters needs --alpha > 0: the reference search looks for the \
             threshold that leaves a fraction alpha of outliers and cannot bracket zero \
             (for --alpha 0 use the default exact selection)"
                .into(),
        ));
    }
    let ckpt = Checkpoint::open(input)?;
    let out = if opts.dry_run {
        None
    } else {
        Some(open_output(&ckpt, input, output, opts.force)?)
    };
    let warnings = skipped_warnings(&ckpt, progress);

    // Phase 1: plan and select.
    let mut plans: Vec<Vec<(String, Action)>> = Vec::new();
    let mut total_weights = 0u64;
    for f in &ckpt.files {
        let meta = f.user_metadata();
        if is_adpq(&meta) {
            return Err(Error::invalid(f.path(), "is already an adpq checkpoint"));
        }
        for t in f.tensors() {
            if opts.filter.decide(t.name, t.dtype, t.shape) == Decision::Quantize {
                total_weights += t.numel() as u64;
            }
        }
    }
    progress.begin(if opts.dry_run { 1 } else { 2 } * total_weights);
    for f in &ckpt.files {
        let mut plan = Vec::new();
        for t in f.tensors() {
            let d = opts.filter.decide(t.name, t.dtype, t.shape);
            let action = if d == Decision::Quantize {
                progress.message(&format!("select {}", t.name));
                let (rows, cols) = (t.shape[0], t.shape[1]);
                let wd = weight_data(&t)
                    .ok_or_else(|| Error::tensor(f.path(), t.name, "not a float tensor"))?;
                let sel = driver
                    .select(wd.weights(), rows, cols, &params)
                    .map_err(|e| Error::core(f.path(), t.name, e))?;
                let len = packed_len(rows, cols, params.format(), sel.n_outliers)
                    .map_err(|e| Error::core(f.path(), t.name, e))?;
                f.release(&t);
                progress.advance(t.numel() as u64);
                let grows = len as u64 >= t.data.len() as u64;
                progress.note(&format!(
                    "selected {} ({rows}x{cols}): {} outliers{}",
                    t.name,
                    sel.n_outliers,
                    if grows {
                        ", packing would not shrink it: passthrough"
                    } else {
                        ""
                    }
                ));
                if grows {
                    // Narrow tensors (few columns, hence a group per row) grow when packed.
                    if !opts.dry_run {
                        progress.advance(t.numel() as u64);
                    }
                    Action::Pass("packing would not shrink it")
                } else {
                    Action::Quant {
                        sel,
                        rows,
                        cols,
                        len,
                    }
                }
            } else {
                Action::Pass(reason(d))
            };
            plan.push((t.name.to_string(), action));
        }
        plans.push(plan);
    }

    // Phase 2: write.
    let mut report = Report {
        command: "quantize".into(),
        tool: tool_version(),
        input: input.display().to_string(),
        output: (!opts.dry_run).then(|| output.display().to_string()),
        dry_run: opts.dry_run,
        params: Some(ParamsRecord::from(&params)),
        backend: driver.backend().name().into(),
        threads: rayon::current_num_threads(),
        warnings,
        ..Default::default()
    };
    let mut sums = (!opts.dry_run && !opts.no_stats).then(ErrorSums::default);
    let mut total_size = 0u64;
    for (f, plan) in ckpt.files.iter().zip(&plans) {
        let fname = file_name(f);
        let mut originals = BTreeMap::new();
        let mut planned = Vec::new();
        for (name, action) in plan {
            let t = f
                .tensor(name)
                .ok_or_else(|| Error::tensor(f.path(), name, "vanished"))?;
            planned.push(match action {
                Action::Pass(_) => PlannedTensor {
                    name: name.clone(),
                    dtype: t.dtype,
                    shape: t.shape.to_vec(),
                    len: t.data.len() as u64,
                },
                Action::Quant { len, .. } => {
                    originals.insert(
                        name.clone(),
                        OriginalTensor {
                            dtype: t.dtype.to_string(),
                            shape: t.shape.to_vec(),
                        },
                    );
                    PlannedTensor {
                        name: name.clone(),
                        dtype: Dtype::U8,
                        shape: vec![*len],
                        len: *len as u64,
                    }
                }
            });
        }
        sort_for_output(&mut planned);
        let mut meta = f.user_metadata();
        if let Some(orig) = meta.remove(META_FORMAT) {
            meta.insert(META_ORIGINAL_FORMAT.into(), orig);
        }
        meta.insert(META_FORMAT.into(), FORMAT_NAME.into());
        meta.insert(META_VERSION.into(), adpq_core::format::VERSION.to_string());
        meta.insert(META_TOOL.into(), tool_version());
        meta.insert(
            META_PARAMS.into(),
            json_string(&ParamsRecord::from(&params)),
        );
        meta.insert(META_TENSORS.into(), json_string(&originals));

        let writer = match &out {
            Some(o) => {
                let (file, shown) = o.create(&fname)?;
                Some(TensorWriter::new(file, &shown, &meta, &planned)?)
            }
            None => None,
        };
        let mut reports: BTreeMap<String, TensorReport> = BTreeMap::new();
        with_writer(f, writer, |emit| {
            for p in &planned {
                let t = f
                    .tensor(&p.name)
                    .ok_or_else(|| Error::tensor(f.path(), &p.name, "vanished"))?;
                let action = &plan
                    .iter()
                    .find(|(n, _)| *n == p.name)
                    .ok_or_else(|| Error::tensor(f.path(), &p.name, "vanished"))?
                    .1;
                let tstart = Instant::now();
                let mut r = TensorReport {
                    file: fname.clone(),
                    name: p.name.clone(),
                    dtype: t.dtype.to_string(),
                    shape: t.shape.to_vec(),
                    bytes_in: t.data.len() as u64,
                    bytes_out: p.len,
                    ..Default::default()
                };
                match action {
                    Action::Pass(why) => {
                        r.action = "passthrough".into();
                        r.reason = Some((*why).into());
                        emit.put(Chunk::Mapped(t))?;
                    }
                    Action::Quant {
                        sel,
                        rows,
                        cols,
                        len,
                    } => {
                        r.action = "quantized".into();
                        r.outliers = Some(sel.n_outliers);
                        r.bits_per_weight = Some(8.0 * *len as f64 / (*rows as f64 * *cols as f64));
                        if !opts.dry_run {
                            progress.message(&format!("quantize {}", p.name));
                            let (buf, s) = quantize_one(
                                driver,
                                f,
                                &t,
                                &params,
                                sel,
                                *rows,
                                *cols,
                                *len,
                                sums.is_some(),
                            )?;
                            f.release(&t);
                            emit.put(Chunk::Owned(p.name.clone(), buf))?;
                            if let (Some(s), Some(total)) = (s, sums.as_mut()) {
                                *total = total.merge(s);
                                r.rel_mse = Some(s.rel_mse());
                                r.rtn_rel_mse = Some(s.rtn_rel_mse());
                                r.sqnr_db = Some(s.sqnr_db()).filter(|v| v.is_finite());
                                r.rtn_sqnr_db = Some(s.rtn_sqnr_db()).filter(|v| v.is_finite());
                            }
                            progress.advance((rows * cols) as u64);
                        }
                    }
                }
                r.seconds = tstart.elapsed().as_secs_f64();
                if r.action == "quantized" && !opts.dry_run {
                    progress.line(&format!(
                        "quantized {} ({}x{}) {:.2} -> {:.2} MiB{}",
                        r.name,
                        r.shape[0],
                        r.shape[1],
                        r.bytes_in as f64 / 1048576.0,
                        r.bytes_out as f64 / 1048576.0,
                        r.rel_mse.map_or(String::new(), |m| format!(
                            ", rel MSE {m:.3e} (RTN {:.3e})",
                            r.rtn_rel_mse.unwrap_or(0.0)
                        ))
                    ));
                }
                reports.insert(p.name.clone(), r);
            }
            Ok(())
        })?;
        total_size += planned.iter().map(|p| p.len).sum::<u64>();
        // Report in input order.
        for (name, _) in plan {
            if let Some(r) = reports.remove(name.as_str()) {
                report.tensors.push(r);
            }
        }
    }
    if let Some(o) = out {
        finish_folder(&ckpt, &o, total_size)?;
        o.commit()?;
    }
    progress.finish();
    report.finish_totals(sums, start.elapsed());
    Ok(report)
}

/// Quantizes one tensor into a new buffer, with its error sums when `stats`.
#[allow(clippy::too_many_arguments)]
fn quantize_one<B: CpuKernels>(
    driver: &Driver<B>,
    f: &SafetensorsFile,
    t: &TensorRef<'_>,
    params: &Params,
    sel: &Selection,
    rows: usize,
    cols: usize,
    len: usize,
    stats: bool,
) -> Result<(Vec<u8>, Option<ErrorSums>)> {
    let wd = weight_data(t).ok_or_else(|| Error::tensor(f.path(), t.name, "not a float tensor"))?;
    let w = wd.weights();
    let core = |e| Error::core(f.path(), t.name, e);
    let mut buf = vec![0u8; len];
    driver
        .quantize(w, rows, cols, params, sel, &mut buf)
        .map_err(core)?;
    let sums = if stats {
        let packed = PackedTensor::parse(&buf).map_err(core)?;
        Some(driver.error_sums(w, &packed).map_err(core)?)
    } else {
        None
    };
    Ok((buf, sums))
}

fn json_string(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn originals_of(
    f: &SafetensorsFile,
    meta: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, OriginalTensor>> {
    if !is_adpq(meta) {
        return Err(Error::invalid(
            f.path(),
            "not an adpq checkpoint (its __metadata__ has no format=adpq)",
        ));
    }
    match meta.get(META_VERSION).map(String::as_str) {
        Some(v) if v == adpq_core::format::VERSION.to_string() => {}
        other => {
            return Err(Error::invalid(
                f.path(),
                format!(
                    "unsupported adpq format version {other:?} (this build reads {})",
                    adpq_core::format::VERSION
                ),
            ))
        }
    }
    let text = meta.get(META_TENSORS).ok_or_else(|| {
        Error::invalid(
            f.path(),
            format!("adpq checkpoint without the {META_TENSORS} metadata key"),
        )
    })?;
    serde_json::from_str(text)
        .map_err(|e| Error::invalid(f.path(), format!("bad {META_TENSORS} metadata: {e}")))
}

/// Whether a stored tensor looks like a packed buffer: 1-D `U8` starting with the magic.
fn looks_packed(t: &TensorRef<'_>) -> bool {
    t.dtype == Dtype::U8 && t.shape.len() == 1 && t.data.starts_with(&adpq_core::format::MAGIC)
}

/// The errors for the packed-looking tensors of `f` that `origs` does not list: passed
/// through, they would end up as opaque bytes in a "standard" checkpoint.
fn unlisted_packed(f: &SafetensorsFile, origs: &BTreeMap<String, OriginalTensor>) -> Vec<Error> {
    f.tensors()
        .iter()
        .filter(|t| looks_packed(t) && !origs.contains_key(t.name))
        .map(|t| {
            Error::invalid(
                f.path(),
                format!("packed tensor `{}` not listed in {META_TENSORS}", t.name),
            )
        })
        .collect()
}

/// Checks that a stored tensor is a packed buffer matching its recorded original; returns
/// the parsed tensor (checksum verified when `crc`).
fn packed_of<'a>(
    f: &SafetensorsFile,
    t: &TensorRef<'a>,
    orig: &OriginalTensor,
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
    Ok(packed)
}

fn out_dtype(name: &str) -> Option<OutDtype> {
    match name {
        "F32" => Some(OutDtype::F32),
        "F16" => Some(OutDtype::F16),
        "BF16" => Some(OutDtype::Bf16),
        _ => None,
    }
}

fn st_dtype(d: OutDtype) -> Dtype {
    match d {
        OutDtype::F32 => Dtype::F32,
        OutDtype::F16 => Dtype::F16,
        OutDtype::Bf16 => Dtype::BF16,
    }
}

/// Options of [`dequantize`].
#[derive(Debug, Clone, Default)]
pub struct DequantizeOptions {
    /// Output dtype of every dequantized tensor (default: each tensor's original dtype).
    pub dtype: Option<OutDtype>,
    /// Replace an existing output folder.
    pub force: bool,
}

/// Turns an adpq checkpoint back into a standard safetensors checkpoint.
pub fn dequantize<B: CpuKernels>(
    driver: &Driver<B>,
    input: &Path,
    output: &Path,
    opts: &DequantizeOptions,
    progress: &mut dyn Progress,
) -> Result<Report> {
    let start = Instant::now();
    let ckpt = Checkpoint::open(input)?;
    // Validate every file's metadata and packed tensors before creating anything.
    let mut originals = Vec::new();
    let mut total = 0u64;
    for f in &ckpt.files {
        let o = originals_of(f, &f.user_metadata())?;
        if let Some(e) = unlisted_packed(f, &o).into_iter().next() {
            return Err(e);
        }
        for (name, orig) in &o {
            let t = f.tensor(name).ok_or_else(|| {
                Error::tensor(f.path(), name, "listed in the metadata but missing")
            })?;
            packed_of(f, &t, orig, false)?;
            f.release(&t);
            if opts.dtype.is_none() && out_dtype(&orig.dtype).is_none() {
                return Err(Error::tensor(
                    f.path(),
                    name,
                    format!("unknown original dtype {}", orig.dtype),
                ));
            }
            total += orig.shape.iter().product::<usize>() as u64;
        }
        originals.push(o);
    }
    let out = open_output(&ckpt, input, output, opts.force)?;
    let warnings = skipped_warnings(&ckpt, progress);
    progress.begin(total);
    let mut report = Report {
        command: "dequantize".into(),
        tool: tool_version(),
        input: input.display().to_string(),
        output: Some(output.display().to_string()),
        backend: driver.backend().name().into(),
        threads: rayon::current_num_threads(),
        warnings,
        ..Default::default()
    };
    let mut total_size = 0u64;
    for (f, origs) in ckpt.files.iter().zip(&originals) {
        let fname = file_name(f);
        let mut planned: Vec<PlannedTensor> = f
            .tensors()
            .iter()
            .map(|t| match origs.get(t.name) {
                Some(o) => {
                    let d = opts
                        .dtype
                        .or_else(|| out_dtype(&o.dtype))
                        .unwrap_or(OutDtype::F32);
                    PlannedTensor {
                        name: t.name.into(),
                        dtype: st_dtype(d),
                        shape: o.shape.clone(),
                        len: (o.shape.iter().product::<usize>() * d.size()) as u64,
                    }
                }
                None => PlannedTensor {
                    name: t.name.into(),
                    dtype: t.dtype,
                    shape: t.shape.to_vec(),
                    len: t.data.len() as u64,
                },
            })
            .collect();
        sort_for_output(&mut planned);
        let mut meta = f.user_metadata();
        meta.retain(|k, _| k != META_FORMAT && !k.starts_with("adpq."));
        if let Some(orig) = f.user_metadata().get(META_ORIGINAL_FORMAT) {
            meta.insert(META_FORMAT.into(), orig.clone());
        }
        let (file, shown) = out.create(&fname)?;
        let writer = TensorWriter::new(file, &shown, &meta, &planned)?;
        let mut reports = BTreeMap::new();
        with_writer(f, Some(writer), |emit| {
            for p in &planned {
                let t = f
                    .tensor(&p.name)
                    .ok_or_else(|| Error::tensor(f.path(), &p.name, "vanished"))?;
                let tstart = Instant::now();
                let mut r = TensorReport {
                    file: fname.clone(),
                    name: p.name.clone(),
                    dtype: p.dtype.to_string(),
                    shape: p.shape.clone(),
                    bytes_in: t.data.len() as u64,
                    bytes_out: p.len,
                    ..Default::default()
                };
                match origs.get(&p.name) {
                    Some(o) => {
                        progress.message(&format!("dequantize {}", p.name));
                        let packed = packed_of(f, &t, o, true)?;
                        let d = out_dtype(&p.dtype.to_string()).unwrap_or(OutDtype::F32);
                        let mut buf = vec![0u8; p.len as usize];
                        driver
                            .dequantize_bytes(&packed, d, &mut buf)
                            .map_err(|e| Error::core(f.path(), &p.name, e))?;
                        f.release(&t);
                        emit.put(Chunk::Owned(p.name.clone(), buf))?;
                        r.action = "dequantized".into();
                        progress.advance((packed.rows() * packed.cols()) as u64);
                        progress.line(&format!(
                            "dequantized {} ({}x{}) {:.2} -> {:.2} MiB {}",
                            p.name,
                            packed.rows(),
                            packed.cols(),
                            r.bytes_in as f64 / 1048576.0,
                            r.bytes_out as f64 / 1048576.0,
                            p.dtype
                        ));
                    }
                    None => {
                        emit.put(Chunk::Mapped(t))?;
                        r.action = "passthrough".into();
                    }
                }
                r.seconds = tstart.elapsed().as_secs_f64();
                reports.insert(p.name.clone(), r);
            }
            Ok(())
        })?;
        total_size += planned.iter().map(|p| p.len).sum::<u64>();
        for n in f.names() {
            if let Some(r) = reports.remove(n) {
                report.tensors.push(r);
            }
        }
    }
    finish_folder(&ckpt, &out, total_size)?;
    out.commit()?;
    progress.finish();
    report.finish_totals(None, start.elapsed());
    Ok(report)
}

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
    let mut files = Vec::new();
    let (mut n, mut q, mut qw, mut qb, mut errors) = (0, 0, 0u64, 0u64, 0);
    for f in &ckpt.files {
        let meta = f.user_metadata();
        let adpq = is_adpq(&meta);
        let (origs, error) = if adpq {
            match originals_of(f, &meta) {
                Ok(o) => (o, None),
                Err(e) => (BTreeMap::new(), Some(e.to_string())),
            }
        } else {
            (BTreeMap::new(), None)
        };
        errors += usize::from(error.is_some());
        let mut tensors = Vec::new();
        for t in f.tensors() {
            n += 1;
            let mut it = InspectTensor {
                name: t.name.into(),
                stored_dtype: t.dtype.to_string(),
                stored_shape: t.shape.to_vec(),
                bytes: t.data.len() as u64,
                dtype: None,
                shape: None,
                bits: None,
                group_size: None,
                grid: None,
                alpha: None,
                outliers: None,
                threshold: None,
                bits_per_weight: None,
                error: None,
            };
            if let Some(o) = origs.get(t.name) {
                it.dtype = Some(o.dtype.clone());
                it.shape = Some(o.shape.clone());
                let parsed = packed_of(f, &t, o, false);
                f.release(&t);
                match parsed {
                    Ok(p) => {
                        q += 1;
                        qw += (p.rows() * p.cols()) as u64;
                        qb += t.data.len() as u64;
                        let fp = p.params();
                        it.bits = Some(fp.bits);
                        it.group_size = Some(fp.group_size);
                        it.grid = Some(format!("{:?}", fp.grid).to_lowercase());
                        it.alpha = Some(p.info().alpha);
                        it.outliers = Some(p.n_outliers());
                        it.threshold = Some(p.info().threshold);
                        it.bits_per_weight = Some(p.layout().bits_per_weight());
                    }
                    Err(e) => {
                        errors += 1;
                        it.error = Some(e.to_string());
                    }
                }
            } else if adpq && error.is_none() && looks_packed(&t) {
                errors += 1;
                it.error = Some(format!("packed tensor not listed in {META_TENSORS}"));
            }
            tensors.push(it);
        }
        files.push(InspectFile {
            path: f.path().display().to_string(),
            bytes: f.len() as u64,
            adpq,
            metadata: meta,
            error,
            tensors,
        });
    }
    Ok(Inspection {
        files,
        tensors: n,
        quantized: q,
        quantized_weights: qw,
        quantized_bytes: qb,
        bits_per_weight: (qw > 0).then(|| 8.0 * qb as f64 / qw as f64),
        errors,
    })
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
                        "  {:<w$}  {:>13}  {:>5} -> adpq b{} g{} {}  outliers {}  {:.3} bits/w  {:.3} MiB",
                        t.name,
                        dims(shape),
                        t.dtype.as_deref().unwrap_or("?"),
                        bits,
                        t.group_size.unwrap_or(0),
                        t.grid.as_deref().unwrap_or(""),
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

/// Checks every packed tensor of an adpq checkpoint (structure, checksum, recorded shape),
/// in parallel. Returns the number of packed tensors checked, or
/// [`Error::VerifyFailed`] listing every failure.
pub fn verify(input: &Path) -> Result<usize> {
    let ckpt = Checkpoint::open(input)?;
    let mut failures = Vec::new();
    let mut checked = 0;
    for f in &ckpt.files {
        let origs = originals_of(f, &f.user_metadata())?;
        let list: Vec<(&String, &OriginalTensor)> = origs.iter().collect();
        let results: Vec<Option<String>> = list
            .par_iter()
            .map(|(name, orig)| match f.tensor(name) {
                None => Some(format!(
                    "{}: tensor `{name}`: listed in the metadata but missing",
                    f.path().display()
                )),
                Some(t) => {
                    let r = packed_of(f, &t, orig, true).err().map(|e| e.to_string());
                    f.release(&t);
                    r
                }
            })
            .collect();
        checked += results.len();
        failures.extend(results.into_iter().flatten());
        failures.extend(unlisted_packed(f, &origs).iter().map(|e| e.to_string()));
    }
    if failures.is_empty() {
        Ok(checked)
    } else {
        Err(Error::VerifyFailed(failures))
    }
}
