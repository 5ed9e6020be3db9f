//! SIGINT, SIGTERM and SIGHUP: the first asks training to stop after the step
//! in flight (the trainer then writes a checkpoint that `--resume` continues);
//! a second one ends the process at once, with status 130. A second signal
//! within [`SAME_SIGNAL_NS`] of the first is the same request: GNU `timeout`
//! and `kill -- -PGID` signal the process and its group, so it gets two.
//!
//! The handler only stores to an atomic, or calls `_exit`: both are
//! async-signal-safe. Elsewhere than on Unix no handler is installed, and
//! Ctrl-C ends the process as it always did.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Set by the first SIGINT, SIGTERM or SIGHUP.
static STOP: AtomicBool = AtomicBool::new(false);
/// When the first arrived (CLOCK_MONOTONIC, ns).
static FIRST_NS: AtomicU64 = AtomicU64::new(0);
/// Signals closer together than this are one request (a key press is one).
pub const SAME_SIGNAL_NS: u64 = 300_000_000;

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
        libc::signal(libc::SIGHUP, handler);
    }
    &STOP
}

#[cfg(unix)]
extern "C" fn on_signal(_: libc::c_int) {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `clock_gettime` is async-signal-safe and writes only `now`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let now = (now.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(now.tv_nsec as u64);
    // Stored before STOP, so that a second signal never sees STOP without it.
    let _ = FIRST_NS.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
    if STOP.swap(true, Ordering::SeqCst) {
        if now.saturating_sub(FIRST_NS.load(Ordering::SeqCst)) < SAME_SIGNAL_NS {
            return;
        }
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
