//! `dequantize`: check every file's metadata and packed tensors first (nothing is
//! created for a bad input), then restore file by file, then report.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result};
use adpq_core::Params;
use adpq_engine::{Engine, OutDtype};
use adpq_io::meta::{dequantized_metadata, packed_of, read_adpq_meta, unlisted_packed, AdpqMeta};
use adpq_io::meta::{Original, Originals};
use adpq_io::{
    with_writer, Checkpoint, Chunk, Dtype, Emitter, Output, PlannedTensor, SafetensorsFile,
    TensorRef, TensorWriter,
};

use super::{engine_error, open_output, skipped_warnings, Done};
use crate::progress::Progress;
use crate::report::{tool_version, Report, TensorAction, TensorLog, TensorReport};

/// Options of [`dequantize`].
#[derive(Debug, Clone, Default)]
pub struct DequantizeOptions {
    /// Output dtype of every dequantized tensor (default: each tensor's original dtype).
    pub dtype: Option<OutDtype>,
    /// Replace an existing output folder.
    pub force: bool,
}

/// Turns an adpq checkpoint back into a standard safetensors checkpoint, left for the
/// caller to commit.
pub fn dequantize<E: Engine>(
    engine: &E,
    input: &Path,
    output: &Path,
    opts: &DequantizeOptions,
    progress: &mut dyn Progress,
    mut log: TensorLog,
) -> Result<Done> {
    let start = Instant::now();
    let ckpt = Checkpoint::open(input)?;
    let total = check_input(&ckpt)?;
    let out = open_output(&ckpt, input, output, opts.force)?;
    let warnings = skipped_warnings(&ckpt, progress);
    progress.begin(total);
    let mut report = Report {
        command: "dequantize".into(),
        tool: tool_version(),
        input: input.display().to_string(),
        output: Some(output.display().to_string()),
        backend: engine.name().into(),
        threads: rayon::current_num_threads(),
        warnings,
        ..Default::default()
    };
    log.begin(&report, longest_name(&ckpt))?;
    let mut total_size = 0u64;
    for f in &ckpt.files {
        // Read again rather than kept from the check: one file's metadata in memory at a
        // time (its `adpq.tensors` map costs a few hundred bytes per tensor).
        let meta = read_adpq_meta(f, &f.user_metadata())?;
        total_size += dequantize_file(engine, f, &meta, opts, &out, progress, &mut log)?;
    }
    crate::signals::check()?;
    ckpt.finish_output(&out, total_size)?;
    progress.finish();
    log.finish(&mut report, None, start.elapsed())?;
    Ok(Done {
        report,
        output: Some(out),
    })
}

/// The longest tensor name of the checkpoint, in bytes.
fn longest_name(ckpt: &Checkpoint) -> usize {
    ckpt.files
        .iter()
        .flat_map(|f| f.names())
        .map(str::len)
        .max()
        .unwrap_or(0)
}

/// Validates every file's metadata and packed tensors before anything is created (the
/// checks of `verify` but the checksum, which is verified as each tensor is restored);
/// returns the total weights to restore.
fn check_input(ckpt: &Checkpoint) -> Result<u64> {
    let mut total = 0u64;
    for f in &ckpt.files {
        let meta = read_adpq_meta(f, &f.user_metadata())?;
        if let Some(e) = unlisted_packed(f, &meta).into_iter().next() {
            return Err(e.into());
        }
        for (name, orig) in meta.originals.iter() {
            crate::signals::check()?;
            let t = f.tensor(name).ok_or_else(|| {
                Error::tensor(f.path(), name, "listed in the metadata but missing")
            })?;
            packed_of(f, &t, orig, meta.params_of(name), false)?;
            f.release(&t);
            total += orig.shape.iter().product::<usize>() as u64;
        }
    }
    Ok(total)
}

/// Restores one file into `out`, then hands its reports (in input order) to `log`;
/// returns its bytes of tensor data.
fn dequantize_file<E: Engine>(
    engine: &E,
    f: &SafetensorsFile,
    meta: &AdpqMeta,
    opts: &DequantizeOptions,
    out: &Output,
    progress: &mut dyn Progress,
    log: &mut TensorLog,
) -> Result<u64> {
    let (planned, order) = output_plan(f, &meta.originals, opts);
    let out_meta = dequantized_metadata(&f.user_metadata());
    let (file, shown) = out.create(&f.file_name())?;
    let writer = TensorWriter::new(file, &shown, &out_meta, &planned)?;
    drop(out_meta);
    // Each tensor's seconds go straight to its input position (no map by name).
    let mut seconds = vec![0.0; order.len()];
    with_writer(f, Some(writer), |emit| -> Result<()> {
        for (p, &i) in planned.iter().zip(&order) {
            crate::signals::check()?;
            let t = f
                .tensor(p.name)
                .ok_or_else(|| Error::tensor(f.path(), p.name, "vanished"))?;
            let original = meta
                .originals
                .get(p.name)
                .map(|o| (o, meta.params_of(p.name)));
            seconds[i] = dequantize_tensor(engine, f, t, p, original, emit, progress)?;
        }
        Ok(())
    })?;
    // The reports in input order: where each input tensor is in the output order.
    let mut at = vec![0; order.len()];
    for (j, &i) in order.iter().enumerate() {
        at[i] = j;
    }
    let file: Arc<str> = f.file_name().into();
    for (i, &j) in at.iter().enumerate() {
        let p = &planned[j];
        let t = f
            .tensor(p.name)
            .ok_or_else(|| Error::tensor(f.path(), p.name, "vanished"))?;
        let mut r = TensorReport::new(&file, p.name, p.dtype, p.shape, t.data.len() as u64, p.len);
        if meta.originals.contains_key(p.name) {
            r.action = TensorAction::Dequantized;
        }
        r.seconds = seconds[i];
        log.push(&r)?;
    }
    Ok(planned.iter().map(|p| p.len).sum())
}

/// The tensors of one output file, in output order, and the input index of each.
fn output_plan<'a>(
    f: &'a SafetensorsFile,
    origs: &'a Originals,
    opts: &DequantizeOptions,
) -> (Vec<PlannedTensor<'a>>, Vec<usize>) {
    let plan = |t: TensorRef<'a>| match origs.get(t.name) {
        Some(o) => {
            let d = opts.dtype.unwrap_or(o.dtype);
            PlannedTensor {
                name: t.name,
                dtype: st_dtype(d),
                shape: &o.shape,
                len: (o.shape.iter().product::<usize>() * d.size()) as u64,
            }
        }
        None => PlannedTensor {
            name: t.name,
            dtype: t.dtype,
            shape: t.shape,
            len: t.data.len() as u64,
        },
    };
    // The order of `adpq_io::sort_for_output` (a stable sort on the same key), as input
    // indices first: one list of planned tensors, not two.
    let dtype = |i: usize| f.at(i).map_or(Dtype::U8, |t| plan(t).dtype);
    let mut order: Vec<usize> = (0..f.tensor_count())
        .filter(|&i| f.at(i).is_some())
        .collect();
    // Each key once: it looks the record up by name.
    order.sort_by_cached_key(|&i| std::cmp::Reverse(dtype(i).bitsize()));
    let mut planned = Vec::with_capacity(order.len());
    planned.extend(order.iter().filter_map(|&i| f.at(i).map(plan)));
    (planned, order)
}

/// Restores (or passes through) one tensor and hands it to the writer; returns the
/// seconds it took.
fn dequantize_tensor<'a, E: Engine>(
    engine: &E,
    f: &SafetensorsFile,
    t: TensorRef<'a>,
    p: &PlannedTensor<'_>,
    orig: Option<(&Original, &Params)>,
    emit: &mut Emitter<'a>,
    progress: &mut dyn Progress,
) -> Result<f64> {
    let tstart = Instant::now();
    match orig {
        Some((o, params)) => {
            progress.message(&format!("dequantize {}", p.name));
            let parsed = packed_of(f, &t, o, params, true)?;
            let (rows, cols) = (parsed.rows(), parsed.cols());
            let d = OutDtype::from_name(&p.dtype.to_string()).unwrap_or(OutDtype::F32);
            let mut buf = vec![0u8; p.len as usize];
            let err = engine_error(f, p.name);
            let packed = engine.load_packed(parsed).map_err(&err)?;
            engine.dequantize(&packed, d, &mut buf).map_err(&err)?;
            let bytes_in = t.data.len();
            f.release(&t);
            emit.put(Chunk::Owned(p.name.into(), buf))?;
            progress.advance((rows * cols) as u64);
            progress.line(&format!(
                "dequantized {} ({rows}x{cols}) {:.2} -> {:.2} MiB {}",
                p.name,
                bytes_in as f64 / 1048576.0,
                p.len as f64 / 1048576.0,
                p.dtype
            ));
        }
        None => emit.put(Chunk::Mapped(t))?,
    }
    Ok(tstart.elapsed().as_secs_f64())
}

fn st_dtype(d: OutDtype) -> Dtype {
    match d {
        OutDtype::F32 => Dtype::F32,
        OutDtype::F16 => Dtype::F16,
        OutDtype::Bf16 => Dtype::BF16,
    }
}
