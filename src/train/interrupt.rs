//! SIGINT, SIGTERM and SIGHUP: the first asks training to stop after the step
//! in flight (the trainer then writes a checkpoint that `--resume` continues);
//! a second one ends the process at once, with status 130. A second signal
//! sent by the same process as the first, within [`SAME_REQUEST_NS`], is the
//! same request: GNU `timeout` signals the process and then its process
//! group, which delivers two. (A key press is sent by the kernel, sender 0:
//! two Ctrl-Cs are always two.)
//!
//! The handler only stores to atomics, or calls `_exit`: both are
//! async-signal-safe. Elsewhere than on Unix no handler is installed, and
//! Ctrl-C ends the process as it always did.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

/// Set by the first SIGINT, SIGTERM or SIGHUP.
static STOP: AtomicBool = AtomicBool::new(false);
/// When the first arrived (CLOCK_MONOTONIC, ns), and who sent it.
static FIRST_NS: AtomicU64 = AtomicU64::new(0);
static FIRST_SENDER: AtomicI32 = AtomicI32::new(0);
/// How close a sender's repeat must follow its first signal to be the same request.
pub const SAME_REQUEST_NS: u64 = 1_000_000_000;

/// The exit status of a process stopped by SIGINT, by shell convention (128 + 2).
pub const EXIT_STATUS: u8 = 130;

/// Installs the handlers; returns the flag they set, for `train::train_from`.
pub fn install() -> &'static AtomicBool {
    #[cfg(unix)]
    // SAFETY: `on_signal` is async-signal-safe (atomics, `clock_gettime`,
    // `write`, `_exit`); the sigaction is fully initialized.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction =
            on_signal as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
    &STOP
}

#[cfg(unix)]
extern "C" fn on_signal(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO.
    let sender = if info.is_null() { 0 } else { unsafe { (*info).si_pid() } };
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `clock_gettime` is async-signal-safe and writes only `now`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let now = (now.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(now.tv_nsec as u64);
    if !STOP.load(Ordering::SeqCst) {
        FIRST_NS.store(now, Ordering::SeqCst);
        FIRST_SENDER.store(sender, Ordering::SeqCst);
    }
    if STOP.swap(true, Ordering::SeqCst) {
        let repeat = sender != 0 && sender == FIRST_SENDER.load(Ordering::SeqCst);
        if repeat && now.saturating_sub(FIRST_NS.load(Ordering::SeqCst)) < SAME_REQUEST_NS {
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
