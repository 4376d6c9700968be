//! Stopping cleanly on a signal, for the commands that write.
//!
//! Killed by SIGINT or SIGTERM mid-run, the process would leave its hidden temporary
//! output (`.NAME.adpq-tmp-*`) behind. Instead, [`install`] makes the first such signal
//! only set a flag; the pipeline polls it between tensors ([`check`]) and returns
//! [`Error::Interrupted`], so the temporaries are removed on the ordinary error path and
//! the process exits with 128 + the signal (130, 143). A second signal terminates at
//! once, as usual (for a run stuck in a system call).
//!
//! SIGXFSZ (a write past `ulimit -f`) would kill the process the same way; with a
//! handler installed, the write fails with `EFBIG` instead and the run ends as any I/O
//! error does (exit 1, the file named, the temporaries removed).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use adpq_io::{Error, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGXFSZ};

/// The signal that asked us to stop (0: none yet).
static CAUGHT: AtomicUsize = AtomicUsize::new(0);
/// Set once a stop was asked for: a second signal then terminates the process.
static STOPPING: AtomicBool = AtomicBool::new(false);
/// Set by SIGXFSZ; only there so the signal does not kill the process.
static FILE_TOO_LARGE: AtomicBool = AtomicBool::new(false);

const STOP_SIGNALS: [(i32, &str); 3] =
    [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM"), (SIGHUP, "SIGHUP")];

/// Installs the handlers (once, before a command that writes starts).
pub fn install() -> Result<()> {
    let failed = |e: std::io::Error| Error::invalid("signal handler", e.to_string());
    for (sig, _) in STOP_SIGNALS {
        // Registered first, so it runs before the flag is set: only a second signal
        // finds STOPPING true and terminates.
        signal_hook::flag::register_conditional_default(sig, &STOPPING).map_err(failed)?;
        signal_hook::flag::register_usize(sig, &CAUGHT, sig as usize).map_err(failed)?;
        signal_hook::flag::register(sig, &STOPPING).map_err(failed)?;
    }
    signal_hook::flag::register(SIGXFSZ, &FILE_TOO_LARGE).map_err(failed)?;
    Ok(())
}

/// [`Error::Interrupted`] once a stop signal arrived.
pub fn check() -> Result<()> {
    match CAUGHT.load(Ordering::SeqCst) {
        0 => Ok(()),
        sig => {
            let name = STOP_SIGNALS
                .iter()
                .find(|(s, _)| *s as usize == sig)
                .map_or("a signal", |(_, n)| *n);
            Err(Error::Interrupted {
                name,
                signal: u8::try_from(sig).unwrap_or(127),
            })
        }
    }
}
