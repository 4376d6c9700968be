//! Reports: per-tensor and total figures of a run, printed as a table or written as JSON.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use adpq_engine::ErrorSums;
use adpq_io::meta::ParamsRecord;
use adpq_io::Dtype;
use adpq_io::Output;
use serde::Serialize;

const MIB: f64 = 1024.0 * 1024.0;

/// What a run did with one tensor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TensorAction {
    /// Copied byte for byte.
    #[default]
    Passthrough,
    /// Packed by `quantize`.
    Quantized,
    /// Restored by `dequantize`.
    Dequantized,
}

impl TensorAction {
    /// The name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            TensorAction::Passthrough => "passthrough",
            TensorAction::Quantized => "quantized",
            TensorAction::Dequantized => "dequantized",
        }
    }
}

impl std::fmt::Display for TensorAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What happened to one tensor. Kept small (about 200 bytes and three short heap
/// strings or slices), since a run holds one per tensor of the checkpoint: the file name
/// is shared by its tensors, dtypes and reasons are not strings. Serialized as before
/// (strings, arrays, numbers).
#[derive(Debug, Clone, Serialize)]
pub struct TensorReport {
    /// The file (shard) holding it.
    pub file: Arc<str>,
    /// Name.
    pub name: Box<str>,
    /// Input dtype.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Box<[usize]>,
    /// What was done.
    pub action: TensorAction,
    /// Why a tensor was passed through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Bytes of input data.
    pub bytes_in: u64,
    /// Bytes of output data.
    pub bytes_out: u64,
    /// The tensor's own parameters when they are not the run's (a `--tensor-params` rule
    /// or a preset's), as the checkpoint's metadata records them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<Box<ParamsRecord>>,
    /// Outliers (quantized tensors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outliers: Option<u64>,
    /// Exact bits per weight of the packed tensor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bits_per_weight: Option<f64>,
    /// AdpQ relative MSE, `Σ(w − ŵ)² / Σw²`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rel_mse: Option<f64>,
    /// AdpQ SQNR in dB (`null` when the error is zero).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqnr_db: Option<f64>,
    /// Relative MSE of the round-to-nearest baseline at the same bits and group size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtn_rel_mse: Option<f64>,
    /// SQNR of the round-to-nearest baseline in dB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtn_sqnr_db: Option<f64>,
    /// Seconds spent on this tensor (selection excluded).
    pub seconds: f64,
}

impl TensorReport {
    /// A passthrough entry; the pipeline fills in the rest.
    pub fn new(
        file: &Arc<str>,
        name: &str,
        dtype: Dtype,
        shape: &[usize],
        bytes_in: u64,
        bytes_out: u64,
    ) -> Self {
        TensorReport {
            file: Arc::clone(file),
            name: name.into(),
            dtype,
            shape: shape.into(),
            action: TensorAction::Passthrough,
            reason: None,
            bytes_in,
            bytes_out,
            params: None,
            outliers: None,
            bits_per_weight: None,
            rel_mse: None,
            sqnr_db: None,
            rtn_rel_mse: None,
            rtn_sqnr_db: None,
            seconds: 0.0,
        }
    }

    /// Records a quantized tensor's error figures (an SQNR of +inf, zero error, is left
    /// out: JSON `null`).
    pub fn set_error_sums(&mut self, s: &ErrorSums) {
        self.rel_mse = Some(s.rel_mse());
        self.rtn_rel_mse = Some(s.rtn_rel_mse());
        self.sqnr_db = Some(s.sqnr_db()).filter(|v| v.is_finite());
        self.rtn_sqnr_db = Some(s.rtn_sqnr_db()).filter(|v| v.is_finite());
    }

    /// The progress line of a quantized 2-D tensor.
    pub fn quantized_line(&self) -> String {
        format!(
            "quantized {} ({}x{}) {:.2} -> {:.2} MiB{}",
            self.name,
            self.shape[0],
            self.shape[1],
            self.bytes_in as f64 / MIB,
            self.bytes_out as f64 / MIB,
            self.rel_mse.map_or(String::new(), |m| format!(
                ", rel MSE {m:.3e} (RTN {:.3e})",
                self.rtn_rel_mse.unwrap_or(0.0)
            ))
        )
    }
}

/// Totals of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Tensors seen.
    pub tensors: usize,
    /// Tensors quantized (or dequantized).
    pub converted: usize,
    /// Tensors passed through.
    pub passthrough: usize,
    /// Weights in converted tensors.
    pub weights_converted: u64,
    /// Input tensor data bytes.
    pub bytes_in: u64,
    /// Output tensor data bytes.
    pub bytes_out: u64,
    /// Output bytes of the converted tensors.
    pub converted_bytes_out: u64,
    /// Bits per weight over the quantized tensors (packed bytes · 8 / weights).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bits_per_weight: Option<f64>,
    /// Aggregate AdpQ relative MSE over the quantized tensors (`ΣΣ err / ΣΣ w²`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rel_mse: Option<f64>,
    /// Aggregate RTN relative MSE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtn_rel_mse: Option<f64>,
    /// Aggregate AdpQ relative MSE as a percentage of RTN's; `null` when RTN's error is
    /// zero (or without statistics).
    pub rel_mse_pct_of_rtn: Option<f64>,
    /// Aggregate AdpQ SQNR in dB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqnr_db: Option<f64>,
    /// Aggregate RTN SQNR in dB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtn_sqnr_db: Option<f64>,
    /// Quantized tensors whose relative MSE is above RTN's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worse_than_rtn: Option<usize>,
    /// Wall-clock seconds of the whole command.
    pub seconds: f64,
    /// Converted weights per second.
    pub weights_per_second: f64,
    /// Input MiB per second.
    pub mib_per_second: f64,
}

/// The report of a `quantize` or `dequantize` run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `quantize` or `dequantize`.
    pub command: String,
    /// Tool and version.
    pub tool: String,
    /// Input path.
    pub input: String,
    /// Output path (`null` on a dry run).
    pub output: Option<String>,
    /// True when nothing was written.
    pub dry_run: bool,
    /// Parameters (quantize).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<ParamsRecord>,
    /// The per-tensor rules (`--tensor-params`, then the preset's), in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tensor_params: Vec<String>,
    /// CpuKernels name.
    pub backend: String,
    /// Worker threads.
    pub threads: usize,
    /// Warnings, e.g. entries of the input folder that the output does not hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// One entry per tensor, in input order.
    pub tensors: Vec<TensorReport>,
    /// Totals.
    pub totals: Totals,
}

/// The tool's name and version, as recorded in files and reports.
pub fn tool_version() -> String {
    format!("adpq {}", env!("CARGO_PKG_VERSION"))
}

impl Report {
    /// Computes the totals from the tensors, given the error sums of the quantized ones.
    pub fn finish_totals(&mut self, sums: Option<ErrorSums>, elapsed: Duration) {
        let t = &mut self.totals;
        t.tensors = self.tensors.len();
        t.converted = self
            .tensors
            .iter()
            .filter(|r| r.action != TensorAction::Passthrough)
            .count();
        t.passthrough = t.tensors - t.converted;
        t.bytes_in = self.tensors.iter().map(|r| r.bytes_in).sum();
        t.bytes_out = self.tensors.iter().map(|r| r.bytes_out).sum();
        let conv = self
            .tensors
            .iter()
            .filter(|r| r.action != TensorAction::Passthrough);
        t.weights_converted = conv
            .clone()
            .map(|r| r.shape.iter().product::<usize>() as u64)
            .sum();
        t.converted_bytes_out = conv.clone().map(|r| r.bytes_out).sum();
        if self.command == "quantize" && t.weights_converted > 0 {
            t.bits_per_weight =
                Some(8.0 * t.converted_bytes_out as f64 / t.weights_converted as f64);
        }
        if let Some(s) = sums.filter(|s| s.count > 0) {
            t.rel_mse = Some(s.rel_mse());
            t.rtn_rel_mse = Some(s.rtn_rel_mse());
            t.rel_mse_pct_of_rtn = (s.rtn > 0.0 && s.signal > 0.0)
                .then(|| 100.0 * s.adpq / s.rtn)
                .filter(|v| v.is_finite());
            t.sqnr_db = Some(s.sqnr_db()).filter(|v| v.is_finite());
            t.rtn_sqnr_db = Some(s.rtn_sqnr_db()).filter(|v| v.is_finite());
            t.worse_than_rtn = Some(
                conv.filter(|r| matches!((r.rel_mse, r.rtn_rel_mse), (Some(a), Some(b)) if a > b))
                    .count(),
            );
        }
        t.seconds = elapsed.as_secs_f64();
        let secs = t.seconds.max(1e-9);
        t.weights_per_second = t.weights_converted as f64 / secs;
        t.mib_per_second = t.bytes_in as f64 / MIB / secs;
    }

    /// Writes the per-tensor table (unless `summary_only`) and the totals.
    pub fn print(&self, out: &mut dyn Write, summary_only: bool) -> std::io::Result<()> {
        if !summary_only {
            self.print_table(out)?;
        }
        let quant = self.command == "quantize";
        let t = &self.totals;
        let verb = if quant { "quantized" } else { "dequantized" };
        writeln!(
            out,
            "{verb} {} of {} tensors ({:.2} M weights), {} passed through{}",
            t.converted,
            t.tensors,
            t.weights_converted as f64 / 1e6,
            t.passthrough,
            if self.dry_run {
                " [dry run: nothing written]"
            } else {
                ""
            }
        )?;
        let (a, b) = (t.bytes_in as f64, t.bytes_out as f64);
        let ratio = if a >= b {
            format!("{:.2}x smaller", a / b.max(1.0))
        } else {
            format!("{:.2}x larger", b / a.max(1.0))
        };
        writeln!(
            out,
            "tensor data: {:.2} MiB -> {:.2} MiB ({ratio})",
            a / MIB,
            b / MIB
        )?;
        if let Some(b) = t.bits_per_weight {
            writeln!(out, "bits per weight (quantized tensors): {b:.3}")?;
        }
        if let (Some(a), Some(r)) = (t.rel_mse, t.rtn_rel_mse) {
            let db = |v: Option<f64>| v.map_or("inf".to_string(), |v| format!("{v:.2}"));
            let pct = t
                .rel_mse_pct_of_rtn
                .map_or("n/a".to_string(), |p| format!("{p:.1}%"));
            writeln!(
                out,
                "relative MSE: AdpQ {a:.4e} vs RTN {r:.4e} ({pct} of RTN); SQNR {} dB vs {} dB; {} tensor(s) worse than RTN",
                db(t.sqnr_db),
                db(t.rtn_sqnr_db),
                t.worse_than_rtn.unwrap_or(0)
            )?;
        }
        writeln!(
            out,
            "time {:.2} s on {} thread(s), backend {}: {:.1} M weights/s, {:.1} MiB/s of input",
            t.seconds,
            self.threads,
            self.backend,
            t.weights_per_second / 1e6,
            t.mib_per_second
        )?;
        Ok(())
    }

    /// The per-tensor table.
    fn print_table(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let quant = self.command == "quantize";
        let w = self
            .tensors
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(6)
            .clamp(6, 60);
        if quant {
            writeln!(
                out,
                "{:<w$}  {:>13}  {:>5}  {:>19}  {:>9}  {:>6}  {:>9}  {:>9}  {:>7}",
                "tensor",
                "shape",
                "dtype",
                "MiB in -> out",
                "outliers",
                "bits/w",
                "rel MSE",
                "RTN MSE",
                "SQNR dB"
            )?;
        } else {
            writeln!(
                out,
                "{:<w$}  {:>13}  {:>5}  {:>19}  {:>11}",
                "tensor", "shape", "dtype", "MiB in -> out", "action"
            )?;
        }
        for t in &self.tensors {
            let shape = t
                .shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x");
            let sizes = format!(
                "{:.3} -> {:.3}",
                t.bytes_in as f64 / MIB,
                t.bytes_out as f64 / MIB
            );
            if quant && t.action == TensorAction::Quantized {
                let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3e}"));
                writeln!(
                    out,
                    "{:<w$}  {:>13}  {:>5}  {:>19}  {:>9}  {:>6.3}  {:>9}  {:>9}  {:>7}",
                    t.name,
                    shape,
                    t.dtype.to_string(),
                    sizes,
                    t.outliers.unwrap_or(0),
                    t.bits_per_weight.unwrap_or(0.0),
                    f(t.rel_mse),
                    f(t.rtn_rel_mse),
                    t.sqnr_db.map_or("-".to_string(), |v| format!("{v:.2}")),
                )?;
            } else if quant {
                writeln!(
                    out,
                    "{:<w$}  {:>13}  {:>5}  {:>19}  passthrough ({})",
                    t.name,
                    shape,
                    t.dtype.to_string(),
                    sizes,
                    t.reason.unwrap_or("")
                )?;
            } else {
                writeln!(
                    out,
                    "{:<w$}  {:>13}  {:>5}  {:>19}  {:>11}",
                    t.name,
                    shape,
                    t.dtype.to_string(),
                    sizes,
                    t.action
                )?;
            }
        }
        Ok(())
    }
}

/// Writes `value` as pretty JSON into the (uncommitted) file output `out` and syncs it;
/// the caller commits `out`.
pub fn write_json(out: &Output, value: &impl Serialize) -> Result<()> {
    let (f, shown) = out.create("")?;
    let mut w = std::io::BufWriter::new(f);
    serde_json::to_writer_pretty(&mut w, value).map_err(|e| Error::io(&shown, e.into()))?;
    w.write_all(b"\n").map_err(|e| Error::io(&shown, e))?;
    let f = w
        .into_inner()
        .map_err(|e| Error::io(&shown, e.into_error()))?;
    f.sync_all().map_err(|e| Error::io(&shown, e))
}
