//! Stopping cleanly on a signal, from the first instant of the process.
//!
//! [`install`] runs first thing in `main`, before anything can create a file. From then
//! on SIGINT, SIGTERM and SIGHUP never take their default action (which would kill the
//! process and leave a hidden temporary, `.NAME.adpq-tmp-*`, behind). A watcher thread
//! receives them instead and, at once, whatever the main thread is doing (planning,
//! inside the selection passes or the row blocks of one long tensor, blocked in a write):
//!
//! 1. takes the registry lock, so it never runs while a temporary is being created
//!    ([`create`]) or the outputs are being renamed into place ([`commit`]);
//! 2. removes every registered temporary (a folder with what it holds);
//! 3. prints `adpq: error: interrupted by SIGINT: nothing was written` and exits with 128
//!    + the signal (130, 143, 129).
//!
//! A second signal while the watcher cleans up is only queued: the process still
//! cleans up before it exits. A signal that arrives once [`commit`] has put the outputs in
//! place is ignored (the run has succeeded; it ends on its own). Only SIGKILL can leave a
//! temporary behind.
//!
//! The pipeline's [`check`] between tensors still returns [`Error::Interrupted`] once a
//! signal was received; `main` then waits for the watcher, which owns the exit.
//!
//! SIGXFSZ (a write past `ulimit -f`) would kill the process the same way; with a
//! handler installed, the write fails with `EFBIG` instead and the run ends as any I/O
//! error does (exit 1, the file named, the temporaries removed).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::error::{Error, Result};
use adpq_io::Output;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGXFSZ};
use signal_hook::iterator::Signals;

/// The signal that asked us to stop (0: none yet).
static CAUGHT: AtomicUsize = AtomicUsize::new(0);
/// Set by SIGXFSZ; only there so the signal does not kill the process.
static FILE_TOO_LARGE: AtomicBool = AtomicBool::new(false);
/// Set by the watcher once it has begun to remove the temporaries (it then always exits).
static STOPPING: AtomicBool = AtomicBool::new(false);

/// The temporaries to remove on a signal, and whether the outputs are already in place.
struct Registry {
    temps: Vec<PathBuf>,
    committed: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    temps: Vec::new(),
    committed: false,
});

const STOP_SIGNALS: [(i32, &str); 3] =
    [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM"), (SIGHUP, "SIGHUP")];

fn registry() -> MutexGuard<'static, Registry> {
    // A panic while holding the lock leaves a consistent list (pushes only).
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

fn name_of(sig: usize) -> &'static str {
    STOP_SIGNALS
        .iter()
        .find(|(s, _)| *s as usize == sig)
        .map_or("a signal", |(_, n)| *n)
}

/// Installs the handlers and starts the watcher thread. Called first thing in `main`.
pub fn install() -> Result<()> {
    let failed = |e: std::io::Error| Error::invalid("signal handler", e.to_string());
    let mut signals = Signals::new(STOP_SIGNALS.map(|(s, _)| s)).map_err(failed)?;
    signal_hook::flag::register(SIGXFSZ, &FILE_TOO_LARGE).map_err(failed)?;
    std::thread::Builder::new()
        .name("adpq-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                stop(sig);
            }
        })
        .map_err(failed)?;
    Ok(())
}

/// The watcher's work on a stop signal: remove the temporaries and exit, unless the run
/// has already committed its outputs.
fn stop(sig: i32) {
    let sig = usize::try_from(sig).unwrap_or(0);
    let _ = CAUGHT.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    let reg = registry();
    if reg.committed {
        return;
    }
    STOPPING.store(true, Ordering::SeqCst);
    for t in &reg.temps {
        remove(t);
    }
    let first = CAUGHT.load(Ordering::SeqCst);
    crate::progress::stderr_line(&format!(
        "adpq: error: interrupted by {}: nothing was written",
        name_of(first)
    ));
    // Exits with the lock held: no temporary can be created after the cleanup.
    std::process::exit(i32::from(exit_code(first)));
}

/// 128 + the signal.
fn exit_code(sig: usize) -> u8 {
    crate::error::signal_exit_code(u8::try_from(sig).unwrap_or(127))
}

/// Removes a temporary file or folder. The main thread may still be creating a file
/// inside a folder, so its removal is retried until the folder is gone.
fn remove(path: &Path) {
    for _ in 0..100 {
        let gone = match std::fs::symlink_metadata(path) {
            Err(_) => true,
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).is_ok(),
            Ok(_) => std::fs::remove_file(path).is_ok(),
        };
        if gone {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Creates an output through `make` with the watcher held off, and registers its
/// temporary for removal on a signal. Every temporary output of the CLI is made here.
pub fn create(make: impl FnOnce() -> adpq_io::Result<Output>) -> Result<Output> {
    let mut reg = registry();
    check()?;
    let out = make()?;
    reg.temps.push(out.temp_path().to_path_buf());
    Ok(out)
}

/// Runs `commit` (the renames that put the outputs in place) with the watcher held off;
/// once it succeeds, later signals are ignored. [`Error::Interrupted`] instead if a
/// signal arrived before.
pub fn commit<T>(commit: impl FnOnce() -> Result<T>) -> Result<T> {
    let mut reg = registry();
    check()?;
    let done = commit()?;
    reg.committed = true;
    reg.temps.clear();
    Ok(done)
}

/// [`Error::Interrupted`] once a stop signal arrived.
pub fn check() -> Result<()> {
    match CAUGHT.load(Ordering::SeqCst) {
        0 => Ok(()),
        sig => Err(Error::Interrupted {
            name: name_of(sig),
            signal: u8::try_from(sig).unwrap_or(127),
        }),
    }
}

/// Whether the watcher is removing the temporaries and will exit the process: an error
/// the run meets now (a temporary gone from under it) is the signal's doing, and `main`
/// leaves the report and the exit code to the watcher.
pub fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// Called by `main` for [`Error::Interrupted`]: the watcher is cleaning up and will exit
/// the process; wait for it (with a bound, in case it cannot).
pub fn wait_for_watcher(code: u8) -> u8 {
    std::thread::sleep(std::time::Duration::from_secs(30));
    code
}
