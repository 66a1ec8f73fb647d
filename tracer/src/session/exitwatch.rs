//! Exit checks for a traced command tree.
//!
//! When a process exits, its address space is torn down before any
//! tracepoint could let userspace read /proc/PID/maps. A seccomp filter,
//! installed in the held command before exec and inherited by every
//! descendant, turns `exit_group` into a user notification: the process
//! waits, whole, while mmtrace compares its model with /proc/PID/maps, then
//! its exit continues. Nothing else is intercepted.
//!
//! If mmtrace is gone, the kernel fails `exit_group` with ENOSYS and the C
//! library falls back to `exit`; when recording stops early, a small
//! process keeps answering until the command tree has exited.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::mpsc,
};

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const NR_EXIT_GROUP: u32 = 231;

fn filter() -> [libc::sock_filter; 6] {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    [
        // seccomp_data.arch
        stmt(ld, 4),
        jeq(AUDIT_ARCH_X86_64, 0, 3),
        // seccomp_data.nr
        stmt(ld, 0),
        jeq(NR_EXIT_GROUP, 0, 1),
        stmt(ret, libc::SECCOMP_RET_USER_NOTIF),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ]
}

/// The prepared filter, built before fork so the child only makes syscalls.
pub struct Filter {
    insns: [libc::sock_filter; 6],
}

impl Default for Filter {
    fn default() -> Filter {
        Filter { insns: filter() }
    }
}

impl Filter {
    /// In the forked child: installs the filter; returns the listener fd or
    /// -errno. Async-signal-safe.
    pub fn install_in_child(&self) -> i32 {
        let prog = libc::sock_fprog {
            len: self.insns.len() as u16,
            filter: self.insns.as_ptr().cast_mut(),
        };
        // SAFETY: a valid program; raw syscalls only.
        unsafe {
            let fd = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &prog as *const libc::sock_fprog,
            );
            if fd < 0 {
                -*libc::__errno_location()
            } else {
                fd as i32
            }
        }
    }
}

/// Copies descriptor `fd` of process `pid` into this process.
pub fn take_fd(pid: u32, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: raw syscalls with plain arguments; results checked.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0);
        if pidfd < 0 {
            return Err(io::Error::last_os_error());
        }
        let pidfd = OwnedFd::from_raw_fd(pidfd as i32);
        let ours = libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0);
        if ours < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(ours as i32))
    }
}

/// A process of the tree is about to exit; it waits until `ack` is sent
/// (or dropped).
pub struct Notice {
    /// The exiting thread (in our pid namespace).
    pub tid: u32,
    pub ack: mpsc::Sender<()>,
}

/// Waits up to `timeout_ms` for a notification; None on timeout, or when
/// every process using the filter is gone (Err(UnexpectedEof)).
fn next(listener: i32, timeout_ms: i32) -> io::Result<Option<libc::seccomp_notif>> {
    let mut pfd = libc::pollfd {
        fd: listener,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(None)
        } else {
            Err(e)
        };
    }
    if n == 0 {
        return Ok(None);
    }
    if pfd.revents & libc::POLLIN == 0 && pfd.revents & libc::POLLHUP != 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    // SAFETY: seccomp_notif is plain data the kernel fills.
    let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: the ioctl writes one seccomp_notif.
    let rc = unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut notif) };
    if rc < 0 {
        // The process was killed meanwhile (ENOENT), or a signal: go on.
        return Ok(None);
    }
    Ok(Some(notif))
}

/// Lets the exit continue.
fn answer(listener: i32, id: u64) {
    let mut resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: 0,
        flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
    };
    // SAFETY: the ioctl reads one seccomp_notif_resp; a failure means the
    // process is gone already.
    unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
}

/// Serves notifications until every process of the tree is gone: each is
/// handed to `tx` and answered once acknowledged (at once if nobody
/// listens any more).
pub fn serve(listener: &OwnedFd, tx: &tokio::sync::mpsc::UnboundedSender<Notice>) {
    let fd = listener.as_raw_fd();
    loop {
        match next(fd, 200) {
            Ok(Some(notif)) => {
                let (ack, wait) = mpsc::channel();
                if tx
                    .send(Notice {
                        tid: notif.pid,
                        ack,
                    })
                    .is_ok()
                {
                    let _ = wait.recv();
                }
                answer(fd, notif.id);
            }
            Ok(None) => {}
            Err(_) => break,
        }
    }
}

/// When mmtrace stops while the tree still runs: a forked process keeps
/// answering exits until the tree is gone, so none of them fails.
pub fn answer_in_background(listener: &OwnedFd) {
    let fd = listener.as_raw_fd();
    // SAFETY: the child only calls poll, ioctl and _exit.
    unsafe {
        if libc::fork() == 0 {
            loop {
                match next(fd, -1) {
                    Ok(Some(notif)) => answer(fd, notif.id),
                    Ok(None) => {}
                    Err(_) => libc::_exit(0),
                }
            }
        }
    }
}
