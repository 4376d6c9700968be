//! Progress of a long command on stderr: a bar on a terminal, plain lines otherwise.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Writes one line on stderr. A failed write (stderr closed, a full disk) is ignored:
/// progress and messages must never stop or crash a run (`eprintln!` would panic).
pub fn stderr_line(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Progress of a long command.
pub trait Progress {
    /// The work ahead: `total` units (weights).
    fn begin(&mut self, total: u64);
    /// A new phase or item starts.
    fn message(&mut self, msg: &str);
    /// `n` units are done.
    fn advance(&mut self, n: u64);
    /// A line for the log (printed above the bar, or as a plain line).
    fn line(&mut self, line: &str);
    /// A line printed only where there is no bar (progress as plain lines): per-item
    /// detail that the bar's message stands for on a terminal.
    fn note(&mut self, _line: &str) {}
    /// A warning: something the user should know about the result. Printed even by a
    /// quiet display; the default prints it on stderr.
    fn warn(&mut self, msg: &str) {
        stderr_line(&format!("adpq: warning: {msg}"));
    }
    /// The command is over.
    fn finish(&mut self);
}

/// Progress on stderr: a bar when stderr is a terminal, otherwise one plain line per event.
#[derive(Debug)]
pub struct ConsoleProgress {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl ConsoleProgress {
    /// A bar on a terminal, plain lines otherwise; `quiet` prints nothing.
    pub fn new(quiet: bool) -> Self {
        ConsoleProgress { bar: None, quiet }
    }
}

impl Progress for ConsoleProgress {
    fn begin(&mut self, total: u64) {
        if self.quiet || !std::io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% eta {eta} {msg}",
        ) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bar = Some(bar);
    }
    fn message(&mut self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(msg.to_string());
        }
    }
    fn advance(&mut self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }
    fn line(&mut self, line: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(b) => b.println(line),
            None => stderr_line(line),
        }
    }
    fn note(&mut self, line: &str) {
        if !self.quiet && self.bar.is_none() {
            stderr_line(line);
        }
    }
    fn warn(&mut self, msg: &str) {
        let line = format!("adpq: warning: {msg}");
        match &self.bar {
            Some(b) => b.println(line),
            None => stderr_line(&line),
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
