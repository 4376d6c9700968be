//! `quantize`, file by file: plan (select every tensor's outliers, which fixes the file's
//! output sizes and finds its data errors before it is written), then quantize and write
//! it, then report its tensors; then the totals. See `adpq_io::write` for why the sizes
//! must be known first.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result};
use adpq_core::{
    packed_len, Error as CoreError, FormatVersion, PackedTensor, Params, Selection, SelectionMode,
};
use adpq_engine::{Engine, EngineError, ErrorSums};
use adpq_io::meta::{
    is_adpq, looks_packed, quantized_metadata, OriginalTensor, OriginalsJson, ParamsRecord,
};
use adpq_io::{
    weight_data, with_writer, Checkpoint, Chunk, Dtype, Emitter, Output, PlannedTensor,
    SafetensorsFile, TensorRef, TensorWriter,
};

use super::{engine_error, open_output, skipped_warnings, Done};
use crate::filter::{Decision, TensorFilter};
use crate::policy::TensorParams;
use crate::progress::Progress;
use crate::report::{tool_version, Report, TensorAction, TensorLog, TensorReport};

/// Options of [`quantize`].
#[derive(Debug, Clone, Default)]
pub struct QuantizeOptions {
    /// Quantization parameters, per tensor.
    pub params: TensorParams,
    /// Which tensors to quantize.
    pub filter: TensorFilter,
    /// Plan and select only; write nothing.
    pub dry_run: bool,
    /// Skip the error statistics (AdpQ and RTN relative MSE), saving one pass per tensor.
    pub no_stats: bool,
    /// Replace an existing output folder.
    pub force: bool,
}

/// Why a tensor is passed through unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PassReason {
    NotFloat,
    NotMatrix,
    ByName,
    /// Narrow tensors (few columns, hence a group per row) grow when packed.
    WouldGrow,
    /// Every weight is below 2^-100: the format cannot represent it faithfully.
    TooSmall,
}

impl PassReason {
    fn as_str(self) -> &'static str {
        match self {
            PassReason::NotFloat => "not F32/F16/BF16",
            PassReason::NotMatrix => "not 2-D",
            PassReason::ByName => "name rule",
            PassReason::WouldGrow => "packing would not shrink it",
            PassReason::TooSmall => "weights too small to quantize (all below 2^-100)",
        }
    }
}

/// What quantize does with one tensor, decided in the planning phase. One per tensor of
/// the file being written, so kept small: the shape is the header's.
#[derive(Debug, Clone, Copy)]
enum Action {
    Pass(PassReason),
    Quantize {
        /// The tensor's parameters.
        params: Params,
        sel: Selection,
        /// Packed bytes.
        len: usize,
    },
}

/// The plan of one file: each tensor's action, in input (data) order: entry `i` is the
/// action of `f.at(i)`.
type FilePlan = Vec<Action>;

/// What writing a tensor finds out, kept per tensor of the file being written until
/// its reports are made (in input order, once the file is written).
#[derive(Debug, Clone, Copy, Default)]
struct Outcome {
    /// Seconds spent on it (selection excluded).
    seconds: f64,
    /// Its error sums (quantized, with statistics).
    sums: Option<ErrorSums>,
}

/// Quantizes a checkpoint (file or folder) into `output`, left for the caller to commit.
/// Each tensor's report goes to `log` once its file is written.
pub fn quantize<E: Engine>(
    engine: &E,
    input: &Path,
    output: &Path,
    opts: &QuantizeOptions,
    progress: &mut dyn Progress,
    log: TensorLog,
) -> Result<Done> {
    let start = Instant::now();
    for params in opts.params.all() {
        check_params(&params)?;
    }
    let ckpt = Checkpoint::open(input)?;
    // Whether the token embedding is tied is a fact of the whole checkpoint.
    let resolved = QuantizeOptions {
        filter: opts
            .filter
            .for_checkpoint(ckpt.files.iter().flat_map(|f| f.names())),
        ..opts.clone()
    };
    let opts = &resolved;
    let out = match opts.dry_run {
        true => None,
        false => Some(open_output(&ckpt, input, output, opts.force)?),
    };
    let warnings = skipped_warnings(&ckpt, progress);
    let longest_name = survey(&ckpt, opts, progress)?;
    // Presets v3-auto and v3 (the tensors its rules do not name): parameters chosen over
    // the whole checkpoint before the first file is planned.
    let allocated;
    let opts = match opts.params.budget() {
        Some(budget) => {
            allocated = QuantizeOptions {
                params: super::allocate::allocate_bits(engine, &ckpt, opts, budget, progress)?,
                ..opts.clone()
            };
            &allocated
        }
        None => opts,
    };

    let mut report = Report {
        command: "quantize".into(),
        tool: tool_version(),
        input: input.display().to_string(),
        output: (!opts.dry_run).then(|| output.display().to_string()),
        dry_run: opts.dry_run,
        params: Some(ParamsRecord::from(opts.params.base())),
        tensor_params: opts.params.rules().to_vec(),
        backend: engine.name().into(),
        threads: rayon::current_num_threads(),
        warnings,
        ..Default::default()
    };
    let mut run = Run {
        engine,
        opts,
        progress,
        sums: (!opts.dry_run && !opts.no_stats).then(ErrorSums::default),
        log,
    };
    run.log.begin(&report, longest_name)?;
    // One file at a time: its plan (every outlier selection, which fixes its output
    // sizes), then its output.
    let mut total_size = 0u64;
    for f in &ckpt.files {
        let plan = plan_file(engine, f, opts, run.progress)?;
        total_size += run.write_file(f, &plan, out.as_ref())?;
    }
    if let Some(o) = &out {
        crate::signals::check()?;
        ckpt.finish_output(o, total_size)?;
    }
    run.progress.finish();
    run.log.finish(&mut report, run.sums, start.elapsed())?;
    Ok(Done {
        report,
        output: out,
    })
}

/// Usage errors in the parameters, found before any file is opened.
fn check_params(params: &Params) -> Result<()> {
    if matches!(params.selection(), SelectionMode::Reference { .. }) && params.alpha() <= 0.0 {
        return Err(Error::Usage(
            "--reference-iters needs --alpha > 0: the reference search looks for the \
             threshold that leaves a fraction alpha of outliers and cannot bracket zero \
             (for --alpha 0 use the default exact selection)"
                .into(),
        ));
    }
    Ok(())
}

/// A first pass over the headers only: refuses an adpq checkpoint, starts the progress
/// (selection, then unless a dry run quantization, advance the bar per weight) and
/// returns the longest tensor name in bytes (the report table's column).
fn survey(ckpt: &Checkpoint, opts: &QuantizeOptions, progress: &mut dyn Progress) -> Result<usize> {
    let mut total_weights = 0u64;
    let mut longest_name = 0;
    for f in &ckpt.files {
        if is_adpq(&f.user_metadata()) {
            return Err(Error::invalid(f.path(), "is already an adpq checkpoint"));
        }
        for t in f.iter() {
            longest_name = longest_name.max(t.name.len());
            if opts.filter.decide(t.name, t.dtype, t.shape) == Decision::Quantize {
                total_weights += t.numel() as u64;
            }
        }
    }
    progress.begin(if opts.dry_run { 1 } else { 2 } * total_weights);
    Ok(longest_name)
}

/// Phase 1, per file: every tensor's action; the outliers of the tensors to quantize
/// are selected here, so data errors surface before the file's output is written.
fn plan_file<E: Engine>(
    engine: &E,
    f: &SafetensorsFile,
    opts: &QuantizeOptions,
    progress: &mut dyn Progress,
) -> Result<FilePlan> {
    let mut plan = FilePlan::with_capacity(f.tensor_count());
    for t in f.iter() {
        crate::signals::check()?;
        let action = match opts.filter.decide(t.name, t.dtype, t.shape) {
            Decision::Quantize => select_one(engine, f, &t, opts, progress)?,
            Decision::NotFloat => Action::Pass(PassReason::NotFloat),
            Decision::NotMatrix => Action::Pass(PassReason::NotMatrix),
            Decision::ByName => Action::Pass(PassReason::ByName),
        };
        plan.push(action);
    }
    Ok(plan)
}

/// Selects the outliers of one tensor: it is quantized unless packing would not shrink it.
fn select_one<E: Engine>(
    engine: &E,
    f: &SafetensorsFile,
    t: &TensorRef<'_>,
    opts: &QuantizeOptions,
    progress: &mut dyn Progress,
) -> Result<Action> {
    progress.message(&format!("select {}", t.name));
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let wd = weight_data(t).ok_or_else(|| Error::tensor(f.path(), t.name, "not a float tensor"))?;
    let err = engine_error(f, t.name);
    let dense = engine.load(wd.weights(), rows, cols).map_err(&err)?;
    let params = opts.params.of(t.name);
    let sel = match engine.select(&dense, &params) {
        Ok(sel) => sel,
        // Kept exactly rather than quantized to zeros (the format's steps bottom out).
        Err(EngineError::Core(e @ CoreError::TooSmall { .. })) => {
            f.release(t);
            progress.warn(&format!("{}: {e}", t.name));
            progress.advance(t.numel() as u64);
            if !opts.dry_run {
                progress.advance(t.numel() as u64);
            }
            return Ok(Action::Pass(PassReason::TooSmall));
        }
        Err(e) => return Err(err(e)),
    };
    let len = packed_len(rows, cols, params.format(), sel.n_outliers)
        .map_err(|e| Error::core(f.path(), t.name, e))?;
    f.release(t);
    progress.advance(t.numel() as u64);
    let grows = len as u64 >= t.data.len() as u64;
    // Format v3 has no outlier split: its "selection" only checks the weights.
    let what = match params.version() {
        FormatVersion::V3 => format!("checked, {} bits", params.bits()),
        _ => format!("{} outliers", sel.n_outliers),
    };
    progress.note(&format!(
        "selected {} ({rows}x{cols}): {what}{}",
        t.name,
        if grows {
            ", packing would not shrink it: passthrough"
        } else {
            ""
        }
    ));
    if grows {
        if !opts.dry_run {
            progress.advance(t.numel() as u64);
        }
        return Ok(Action::Pass(PassReason::WouldGrow));
    }
    Ok(Action::Quantize { params, sel, len })
}

/// Phase 2 and the figures for phase 3: the state of a run while it writes.
struct Run<'r, E> {
    engine: &'r E,
    opts: &'r QuantizeOptions,
    progress: &'r mut dyn Progress,
    /// Error sums over every quantized tensor (`None`: no statistics).
    sums: Option<ErrorSums>,
    /// Where the per-tensor reports go, in input order.
    log: TensorLog,
}

impl<E: Engine> Run<'_, E> {
    /// Writes one output file (or, on a dry run, only reports it) and returns its bytes
    /// of tensor data.
    ///
    /// Bookkeeping per tensor stays small and lasts the file only: the output order is a
    /// list of input indices (no map by name), the planned header is dropped once
    /// written, and each tensor's [`Outcome`] goes straight to its input position; the
    /// reports are made from plan and outcome once the file is written.
    fn write_file(
        &mut self,
        f: &SafetensorsFile,
        plan: &FilePlan,
        out: Option<&Output>,
    ) -> Result<u64> {
        let base = self.opts.params.base();
        let (size, order, writer) = {
            let (planned, order, originals, not_packed) = output_plan(f, plan, base)?;
            let meta = quantized_metadata(
                f.user_metadata(),
                base,
                originals,
                &not_packed,
                &tool_version(),
            );
            // Gone before the header is written: only the metadata's JSON is needed.
            drop(not_packed);
            let writer = match out {
                Some(o) => {
                    let (file, shown) = o.create(&f.file_name())?;
                    Some(TensorWriter::new(file, &shown, &meta, &planned)?)
                }
                None => None,
            };
            (planned.iter().map(|p| p.len).sum(), order, writer)
        };
        let file: Arc<str> = f.file_name().into();
        let tensor = |i: usize| {
            f.at(i)
                .ok_or_else(|| Error::invalid(f.path(), format!("tensor {i} of the plan vanished")))
        };
        let mut outcomes = vec![Outcome::default(); plan.len()];
        with_writer(f, writer, |emit| -> Result<()> {
            for &i in &order {
                crate::signals::check()?;
                outcomes[i] = self.write_tensor((f, &file), tensor(i)?, &plan[i], emit)?;
            }
            Ok(())
        })?;
        for (i, (action, outcome)) in plan.iter().zip(&outcomes).enumerate() {
            let r = self.report(&file, &tensor(i)?, action, outcome);
            self.log.push(&r)?;
        }
        Ok(size)
    }

    /// The report of tensor `t` of `file`, planned `action`, written with `outcome`.
    fn report(
        &self,
        file: &Arc<str>,
        t: &TensorRef<'_>,
        action: &Action,
        outcome: &Outcome,
    ) -> TensorReport {
        let bytes_in = t.data.len() as u64;
        let mut r = match *action {
            Action::Pass(why) => {
                let mut r = TensorReport::new(file, t.name, t.dtype, t.shape, bytes_in, bytes_in);
                r.reason = Some(why.as_str());
                r
            }
            Action::Quantize { params, sel, len } => {
                let mut r = TensorReport::new(file, t.name, t.dtype, t.shape, bytes_in, len as u64);
                r.action = TensorAction::Quantized;
                r.params = own_params(&params, self.opts.params.base()).map(Box::new);
                r.outliers = Some(sel.n_outliers);
                r.bits_per_weight = Some(8.0 * len as f64 / t.numel() as f64);
                if let Some(s) = &outcome.sums {
                    r.set_error_sums(s);
                }
                r
            }
        };
        r.seconds = outcome.seconds;
        r
    }

    /// Quantizes (or passes through) one tensor and hands it to the writer.
    fn write_tensor<'a>(
        &mut self,
        (f, file): (&SafetensorsFile, &Arc<str>),
        t: TensorRef<'a>,
        action: &Action,
        emit: &mut Emitter<'a>,
    ) -> Result<Outcome> {
        let tstart = Instant::now();
        let mut outcome = Outcome::default();
        match *action {
            Action::Pass(_) => emit.put(Chunk::Mapped(t))?,
            Action::Quantize { params, sel, len } => {
                let (rows, cols) = (t.shape[0], t.shape[1]);
                if self.opts.dry_run {
                    return Ok(outcome);
                }
                self.progress.message(&format!("quantize {}", t.name));
                let (buf, sums) = self.quantize_one(f, &t, &params, &sel, (rows, cols), len)?;
                f.release(&t);
                emit.put(Chunk::Owned(t.name.to_string(), buf))?;
                if let (Some(s), Some(total)) = (sums, self.sums.as_mut()) {
                    *total = total.merge(s);
                    outcome.sums = Some(s);
                }
                self.progress.advance((rows * cols) as u64);
                outcome.seconds = tstart.elapsed().as_secs_f64();
                let line = self.report(file, &t, action, &outcome).quantized_line();
                self.progress.line(&line);
            }
        }
        outcome.seconds = tstart.elapsed().as_secs_f64();
        Ok(outcome)
    }

    /// Quantizes one tensor into a new buffer, with its error sums when statistics are on.
    fn quantize_one(
        &self,
        f: &SafetensorsFile,
        t: &TensorRef<'_>,
        params: &Params,
        sel: &Selection,
        (rows, cols): (usize, usize),
        len: usize,
    ) -> Result<(Vec<u8>, Option<ErrorSums>)> {
        let wd =
            weight_data(t).ok_or_else(|| Error::tensor(f.path(), t.name, "not a float tensor"))?;
        let err = engine_error(f, t.name);
        let dense = self.engine.load(wd.weights(), rows, cols).map_err(&err)?;
        let mut buf = vec![0u8; len];
        self.engine
            .quantize(&dense, params, sel, &mut buf)
            .map_err(&err)?;
        if self.sums.is_none() {
            return Ok((buf, None));
        }
        let sums = {
            let parsed = PackedTensor::parse(&buf).map_err(|e| Error::core(f.path(), t.name, e))?;
            let packed = self.engine.load_packed(parsed).map_err(&err)?;
            self.engine.error_sums(&dense, &packed).map_err(&err)?
        };
        Ok((buf, Some(sums)))
    }
}

/// What one output file will hold: its tensors in output order, the input index of each
/// (the order), the original dtype and shape of each quantized one (the metadata's JSON,
/// written in name order without a map of every tensor), and the passed-through tensors
/// that look packed (both for the metadata, so that readers never take the one for the
/// other).
type OutputPlan<'a> = (
    Vec<PlannedTensor<'a>>,
    Vec<usize>,
    OriginalsJson,
    BTreeSet<String>,
);

/// A tensor's parameters as its metadata record and report entry hold them: only when
/// they are not the run's `base`.
fn own_params(params: &Params, base: &Params) -> Option<ParamsRecord> {
    (params != base).then(|| ParamsRecord::from(params))
}

/// The [`OutputPlan`] of one file quantized with base parameters `base`.
fn output_plan<'a>(
    f: &'a SafetensorsFile,
    plan: &'a FilePlan,
    base: &Params,
) -> Result<OutputPlan<'a>> {
    let mut not_packed = BTreeSet::new();
    // The order `sort_for_output` gives (a stable sort on the same key), as input indices.
    let stored = |i: usize| match plan[i] {
        Action::Pass(_) => f.at(i).map_or(Dtype::U8, |t| t.dtype),
        Action::Quantize { .. } => Dtype::U8,
    };
    let mut order: Vec<usize> = (0..plan.len().min(f.tensor_count())).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(stored(i).bitsize()));
    let tensor = |i: usize| {
        f.at(i)
            .ok_or_else(|| Error::invalid(f.path(), format!("tensor {i} of the plan vanished")))
    };
    let mut planned = Vec::with_capacity(order.len());
    for &i in &order {
        let t = tensor(i)?;
        planned.push(match &plan[i] {
            Action::Pass(_) => {
                if looks_packed(&t) {
                    not_packed.insert(t.name.to_string());
                }
                PlannedTensor {
                    name: t.name,
                    dtype: t.dtype,
                    shape: t.shape,
                    len: t.data.len() as u64,
                }
            }
            Action::Quantize { len, .. } => PlannedTensor {
                name: t.name,
                dtype: Dtype::U8,
                // The packed tensor's shape `[len]`, borrowed from the plan.
                shape: std::slice::from_ref(len),
                len: *len as u64,
            },
        });
    }
    // The quantized tensors' records, in name order (the metadata's JSON map order).
    let name = |i: usize| f.at(i).map_or("", |t| t.name);
    let mut quantized: Vec<usize> = (0..order.len())
        .filter(|&i| matches!(plan[i], Action::Quantize { .. }))
        .collect();
    quantized.sort_unstable_by(|&a, &b| name(a).cmp(name(b)));
    let mut originals = OriginalsJson::new();
    for i in quantized {
        let Action::Quantize { params, .. } = &plan[i] else {
            continue;
        };
        let t = tensor(i)?;
        let record = OriginalTensor {
            dtype: t.dtype.to_string(),
            shape: t.shape.to_vec(),
            params: own_params(params, base).map(Box::new),
        };
        if !originals.push(t.name, &record) {
            return Err(Error::tensor(f.path(), t.name, "name listed twice"));
        }
    }
    Ok((planned, order, originals, not_packed))
}
