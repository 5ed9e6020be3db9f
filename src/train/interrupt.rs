//! SIGINT and SIGTERM: the first asks training to stop after the step in
//! flight (the trainer then writes a checkpoint that `--resume` continues);
//! a second one ends the process at once, with status 130.
//!
//! The handler only stores to an atomic, or calls `_exit`: both are
//! async-signal-safe. Elsewhere than on Unix no handler is installed, and
//! Ctrl-C ends the process as it always did.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the first SIGINT or SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

/// The exit status of a process stopped by SIGINT, by shell convention (128 + 2).
pub const EXIT_STATUS: u8 = 130;

/// Installs the handlers; returns the flag they set, for `train::train_from`.
pub fn install() -> &'static AtomicBool {
    #[cfg(unix)]
    // SAFETY: `on_signal` is async-signal-safe (an atomic swap, `write`, `_exit`).
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    &STOP
}

#[cfg(unix)]
extern "C" fn on_signal(_: libc::c_int) {
    if STOP.swap(true, Ordering::SeqCst) {
        // SAFETY: `_exit` is async-signal-safe; the lock file stays, and the
        // next writer takes it over (its process is gone).
        unsafe { libc::_exit(EXIT_STATUS as libc::c_int) };
    }
    let note = b"\nstopping after this step; press Ctrl-C again to quit at once\n";
    // SAFETY: `write` is async-signal-safe; a failed write is of no consequence.
    unsafe { libc::write(libc::STDERR_FILENO, note.as_ptr().cast(), note.len()) };
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
