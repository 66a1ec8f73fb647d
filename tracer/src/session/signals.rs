//! SIGINT and SIGTERM (stop), and SIGUSR1 (check now), read through a
//! signalfd.
//!
//! Both are blocked from the very start of mmtrace, so one that arrives
//! while the programs load is held pending and handled as soon as the
//! event loop runs: it can be neither lost nor fatal halfway through.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use tokio::io::{unix::AsyncFd, Interest};

/// SIGHUP is read too (the daemon: reread the configuration); otherwise
/// it keeps its default action.
static HANGUP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn stop_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        if HANGUP.load(std::sync::atomic::Ordering::Relaxed) {
            libc::sigaddset(&mut set, libc::SIGHUP);
        }
        set
    }
}

/// Blocks SIGHUP too, to be read by the session ([`StopSignals::recv`]
/// returns "SIGHUP"): for the daemon, while still single-threaded.
pub fn block_hangup() -> io::Result<()> {
    HANGUP.store(true, std::sync::atomic::Ordering::Relaxed);
    block()
}

/// Blocks SIGINT, SIGTERM and SIGUSR1 for this (still single-threaded)
/// process.
/// A command started afterwards must unblock them before exec (see spawn).
pub fn block() -> io::Result<()> {
    let set = stop_set();
    // SAFETY: a valid set; the old mask is not needed.
    let rc = unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Clears the signal mask: for a child between fork and exec
/// (async-signal-safe).
pub fn unblock_all_in_child() {
    // SAFETY: sigprocmask with an empty set is async-signal-safe.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

pub struct StopSignals {
    fd: AsyncFd<OwnedFd>,
}

impl StopSignals {
    /// Must be called inside the runtime, after [`block`].
    pub fn new() -> io::Result<StopSignals> {
        let set = stop_set();
        // SAFETY: a valid set; a new descriptor is returned or -1.
        let raw = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that we own.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the OwnedFd keeps the descriptor open and unchanged for
        // the AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(StopSignals { fd })
    }

    /// Waits for SIGINT, SIGTERM or SIGUSR1; returns its name.
    pub async fn recv(&mut self) -> io::Result<&'static str> {
        loop {
            let mut guard = self.fd.readable().await?;
            // SAFETY: signalfd_siginfo is plain data, filled by read.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = size_of::<libc::signalfd_siginfo>();
            let n = unsafe {
                libc::read(
                    guard.get_inner().as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    size,
                )
            };
            if n == size as isize {
                return Ok(match info.ssi_signo as i32 {
                    libc::SIGINT => "SIGINT",
                    libc::SIGUSR1 => "SIGUSR1",
                    libc::SIGHUP => "SIGHUP",
                    _ => "SIGTERM",
                });
            }
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock {
                guard.clear_ready();
                continue;
            }
            return Err(err);
        }
    }
}
