//! Whole-checkpoint operations, each read top-down: [`quantize()`] (plan, then quantize
//! and write, then report), [`dequantize()`], [`inspect()`] and [`verify()`]. Generic over the
//! compute [`Engine`](adpq_engine::Engine); files come from `adpq-io`.
//!
//! This module holds what they share: where an output may go (never onto the input),
//! and the warnings for input entries the output will not hold.

mod allocate;
mod dequantize;
mod inspect;
mod quantize;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use adpq_core::Error as CoreError;
use adpq_engine::EngineError;
use adpq_io::{Checkpoint, Output, SafetensorsFile, Source};

use crate::progress::Progress;
use crate::report::Report;

pub use dequantize::{dequantize, DequantizeOptions};
pub use inspect::{inspect, verify};
pub use quantize::{quantize, QuantizeOptions};

/// Maps an engine error on tensor `name` of `f` to the CLI's error (the core's errors
/// keep their message and exit code).
fn engine_error<'f>(f: &'f SafetensorsFile, name: &str) -> impl Fn(EngineError) -> Error + 'f {
    let name = name.to_string();
    move |e| match e {
        EngineError::Core(e @ CoreError::NotRepresentable { value, .. }) if value.is_finite() => {
            Error::tensor(
                f.path(),
                &name,
                format!("{e}; dequantize with --dtype f32 or --dtype bf16, which hold it"),
            )
        }
        EngineError::Core(e) => Error::core(f.path(), &name, e),
        other => Error::tensor(f.path(), &name, other.to_string()),
    }
}

/// A finished `quantize` or `dequantize`: everything written and synced into the
/// temporary output, which [`Done::commit`] renames into place. The caller commits only
/// once whatever else it must write (the `--report`) is written too, so a failure there
/// leaves nothing behind.
#[derive(Debug)]
pub struct Done {
    /// The run's report.
    pub report: Report,
    /// The output (`None` on a dry run).
    output: Option<Output>,
}

impl Done {
    /// Renames the output into place and returns the report.
    pub fn commit(self) -> Result<Report> {
        if let Some(o) = self.output {
            o.commit()?;
        }
        Ok(self.report)
    }
}

/// `path` made absolute and free of symlinks, also when it does not exist yet (its
/// parent is resolved then).
fn resolve(path: &Path) -> Option<PathBuf> {
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
fn input_paths(ckpt: &Checkpoint, input: &Path) -> Vec<PathBuf> {
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
fn touches_input(inputs: &[PathBuf], target: &Path) -> bool {
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
    crate::signals::create(|| match ckpt.source {
        Source::File => Output::file(output),
        Source::Folder { .. } => Output::dir(output, force),
    })
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
