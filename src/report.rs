//! Reports: per-tensor and total figures of a run, printed as a table or written as JSON.

use std::io::{Seek, Write};
use std::path::PathBuf;
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

/// What happened to one tensor: made when the tensor is reported, handed to the
/// [`TensorLog`] and dropped (a run keeps none to the end). The file name is shared by
/// its tensors, dtypes and reasons are not strings.
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

/// The report of a `quantize` or `dequantize` run, without its per-tensor entries: a
/// run streams those through a [`TensorLog`] as it goes (into the `--report` JSON and the
/// table's rows), so that nothing per tensor is kept to the end. Serialized, it is the
/// head of the `--report` JSON, which the log completes with `tensors` and `totals`.
#[derive(Debug, Default, Serialize)]
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
    /// Totals (written after the tensors by [`TensorLog::finish`]).
    #[serde(skip)]
    pub totals: Totals,
    /// The per-tensor table's rows, as the log spilled them (`None`: no table).
    #[serde(skip)]
    pub(crate) table: Option<TableRows>,
}

/// Running totals of the tensors reported so far.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    tensors: usize,
    converted: usize,
    weights_converted: u64,
    bytes_in: u64,
    bytes_out: u64,
    converted_bytes_out: u64,
    worse_than_rtn: usize,
}

impl Tally {
    fn add(&mut self, r: &TensorReport) {
        self.tensors += 1;
        self.bytes_in += r.bytes_in;
        self.bytes_out += r.bytes_out;
        if r.action != TensorAction::Passthrough {
            self.converted += 1;
            self.weights_converted += r.shape.iter().product::<usize>() as u64;
            self.converted_bytes_out += r.bytes_out;
            if matches!((r.rel_mse, r.rtn_rel_mse), (Some(a), Some(b)) if a > b) {
                self.worse_than_rtn += 1;
            }
        }
    }
}

/// Where a run's per-tensor reports go, one at a time, in input order: the running
/// totals, the `--report` JSON (its `tensors` entries written as they come) and the rows
/// of the per-tensor table (spilled into an anonymous temporary file, printed after the
/// run as before). Its memory does not grow with the number of tensors.
#[derive(Debug)]
pub struct TensorLog {
    json: Option<JsonStream>,
    table: Option<Table>,
    tally: Tally,
}

/// The `--report` file being written.
#[derive(Debug)]
struct JsonStream {
    w: std::io::BufWriter<std::fs::File>,
    shown: PathBuf,
    entries: usize,
}

/// The table's rows being spilled.
#[derive(Debug)]
struct Table {
    rows: std::io::BufWriter<std::fs::File>,
    width: usize,
    quant: bool,
}

/// The spilled rows of a finished run, and the name column's width.
#[derive(Debug)]
pub(crate) struct TableRows {
    file: std::fs::File,
    width: usize,
}

/// The path named when the table's temporary file fails.
fn spill_path() -> PathBuf {
    std::env::temp_dir().join("(adpq report table, anonymous)")
}

/// `json` (pretty, one or more lines) with every line but the first indented by `indent`.
fn indented(json: &str, indent: &str) -> String {
    json.replace('\n', &format!("\n{indent}"))
}

impl TensorLog {
    /// A log writing the JSON report into `report` (the uncommitted `--report` file, if
    /// any) and, when `table`, the table's rows into an anonymous temporary file.
    pub fn new(report: Option<&Output>, table: bool) -> Result<Self> {
        let json = match report {
            Some(out) => {
                let (f, shown) = out.create("")?;
                Some(JsonStream {
                    w: std::io::BufWriter::new(f),
                    shown,
                    entries: 0,
                })
            }
            None => None,
        };
        let table = match table {
            true => Some(Table {
                rows: std::io::BufWriter::new(
                    tempfile::tempfile().map_err(|e| Error::io(spill_path(), e))?,
                ),
                width: 6,
                quant: true,
            }),
            false => None,
        };
        Ok(TensorLog {
            json,
            table,
            tally: Tally::default(),
        })
    }

    /// Starts the run's report: `head` (everything but the tensors and totals) and the
    /// longest tensor name in bytes (the table's name column, at most 60 wide).
    pub fn begin(&mut self, head: &Report, longest_name: usize) -> Result<()> {
        if let Some(t) = &mut self.table {
            t.width = longest_name.clamp(6, 60);
            t.quant = head.command == "quantize";
        }
        if let Some(j) = &mut self.json {
            let text =
                serde_json::to_string_pretty(head).map_err(|e| Error::io(&j.shown, e.into()))?;
            // `{\n  "command": ...\n}`: never empty (`command` is always there).
            let text = text.strip_suffix("\n}").unwrap_or(&text);
            write!(j.w, "{text},\n  \"tensors\": [").map_err(|e| Error::io(&j.shown, e))?;
        }
        Ok(())
    }

    /// Reports the next tensor (in input order).
    pub fn push(&mut self, r: &TensorReport) -> Result<()> {
        self.tally.add(r);
        if let Some(j) = &mut self.json {
            let text =
                serde_json::to_string_pretty(r).map_err(|e| Error::io(&j.shown, e.into()))?;
            let sep = if j.entries == 0 { "\n" } else { ",\n" };
            j.entries += 1;
            write!(j.w, "{sep}    {}", indented(&text, "    "))
                .map_err(|e| Error::io(&j.shown, e))?;
        }
        if let Some(t) = &mut self.table {
            write_row(&mut t.rows, r, t.width, t.quant).map_err(|e| Error::io(spill_path(), e))?;
        }
        Ok(())
    }

    /// Ends the run: computes `report`'s totals (given the error sums of the quantized
    /// tensors), writes them and syncs the JSON report, and hands the table's rows to
    /// `report` for [`Report::print`].
    pub fn finish(
        self,
        report: &mut Report,
        sums: Option<ErrorSums>,
        elapsed: Duration,
    ) -> Result<()> {
        report.finish_totals(self.tally, sums, elapsed);
        if let Some(mut j) = self.json {
            let totals = serde_json::to_string_pretty(&report.totals)
                .map_err(|e| Error::io(&j.shown, e.into()))?;
            let close = if j.entries == 0 { "]" } else { "\n  ]" };
            write!(
                j.w,
                "{close},\n  \"totals\": {}\n}}\n",
                indented(&totals, "  ")
            )
            .map_err(|e| Error::io(&j.shown, e))?;
            let f =
                j.w.into_inner()
                    .map_err(|e| Error::io(&j.shown, e.into_error()))?;
            f.sync_all().map_err(|e| Error::io(&j.shown, e))?;
        }
        if let Some(t) = self.table {
            let file = t
                .rows
                .into_inner()
                .map_err(|e| Error::io(spill_path(), e.into_error()))?;
            report.table = Some(TableRows {
                file,
                width: t.width,
            });
        }
        Ok(())
    }
}

/// The tool's name and version, as recorded in files and reports.
pub fn tool_version() -> String {
    format!("adpq {}", env!("CARGO_PKG_VERSION"))
}

impl Report {
    /// Computes the totals from the tally of the tensors, given the error sums of the
    /// quantized ones.
    fn finish_totals(&mut self, tally: Tally, sums: Option<ErrorSums>, elapsed: Duration) {
        let t = &mut self.totals;
        t.tensors = tally.tensors;
        t.converted = tally.converted;
        t.passthrough = t.tensors - t.converted;
        t.bytes_in = tally.bytes_in;
        t.bytes_out = tally.bytes_out;
        t.weights_converted = tally.weights_converted;
        t.converted_bytes_out = tally.converted_bytes_out;
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
            t.worse_than_rtn = Some(tally.worse_than_rtn);
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

    /// The per-tensor table: its head, then the rows the log spilled.
    fn print_table(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let Some(rows) = &self.table else {
            return Ok(());
        };
        let w = rows.width;
        if self.command == "quantize" {
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
        let mut file = &rows.file;
        file.seek(std::io::SeekFrom::Start(0))?;
        std::io::copy(&mut file, out)?;
        Ok(())
    }
}

/// One row of the per-tensor table, name column `w` wide.
fn write_row(out: &mut dyn Write, t: &TensorReport, w: usize, quant: bool) -> std::io::Result<()> {
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
        )
    } else if quant {
        writeln!(
            out,
            "{:<w$}  {:>13}  {:>5}  {:>19}  passthrough ({})",
            t.name,
            shape,
            t.dtype.to_string(),
            sizes,
            t.reason.unwrap_or("")
        )
    } else {
        writeln!(
            out,
            "{:<w$}  {:>13}  {:>5}  {:>19}  {:>11}",
            t.name,
            shape,
            t.dtype.to_string(),
            sizes,
            t.action
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The report serialized in one go, as it was before it was streamed.
    fn whole(head: &Report, tensors: &[TensorReport]) -> String {
        #[derive(Serialize)]
        struct Whole<'a> {
            #[serde(flatten)]
            head: &'a Report,
            tensors: &'a [TensorReport],
            totals: &'a Totals,
        }
        let w = Whole {
            head,
            tensors,
            totals: &head.totals,
        };
        serde_json::to_string_pretty(&w).unwrap() + "\n"
    }

    fn tensor(name: &str, quantized: bool) -> TensorReport {
        let file: Arc<str> = "model.safetensors".into();
        let mut r = TensorReport::new(&file, name, Dtype::F16, &[2, 64], 256, 100);
        if quantized {
            r.action = TensorAction::Quantized;
            r.outliers = Some(3);
            r.bits_per_weight = Some(6.25);
            r.set_error_sums(&ErrorSums {
                count: 128,
                signal: 2.0,
                adpq: 0.01,
                rtn: 0.02,
            });
        } else {
            r.reason = Some("name rule");
        }
        r
    }

    /// The streamed JSON is the one-go text, byte for byte, for 0, 1 and 3 tensors; the
    /// table has a head and a row per tensor.
    #[test]
    fn streamed_json_equals_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        for n in [0, 1, 3] {
            let path = dir.path().join(format!("r{n}.json"));
            let out = Output::file(&path).unwrap();
            let mut log = TensorLog::new(Some(&out), true).unwrap();
            let mut head = Report {
                command: "quantize".into(),
                tool: "adpq test".into(),
                input: "in \"q\"\n".into(),
                warnings: vec!["w1".into(), "w2".into()],
                ..Default::default()
            };
            log.begin(&head, 8).unwrap();
            let tensors: Vec<_> = (0..n).map(|i| tensor(&format!("t{i}"), i != 1)).collect();
            for t in &tensors {
                log.push(t).unwrap();
            }
            let sums = ErrorSums {
                count: 256,
                signal: 4.0,
                adpq: 0.02,
                rtn: 0.04,
            };
            log.finish(&mut head, Some(sums), Duration::from_secs(1))
                .unwrap();
            out.commit().unwrap();
            assert_eq!(head.totals.tensors, n);
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                whole(&head, &tensors),
                "{n} tensors"
            );
            let mut table = Vec::new();
            head.print(&mut table, false).unwrap();
            let table = String::from_utf8(table).unwrap();
            assert!(table.starts_with("tensor  "), "{table}");
            let rows = table
                .lines()
                .filter(|l| l.starts_with("t0 ") || l.starts_with("t1 ") || l.starts_with("t2 "));
            assert_eq!(rows.count(), n, "{table}");
        }
    }
}
