//! Programs that notice when a tracer changes them, for the tests that
//! mmtrace does not (tests/tests/nohold.rs, tests/tests/killnine.rs).
//!
//! `nohold MODE MARKS MS CODE`: writes its pid to `MARKS.pid` once
//! running, does MODE's work for about MS milliseconds, writes `MARKS.done`
//! and exits with CODE (exit_group, while any other thread still maps):
//!
//! - `single`: one thread maps, touches and unmaps pages;
//! - `threads`: four more threads do the same until the exit;
//! - `seccomp`: first installs a seccomp filter of its own with a user
//!   notification listener (SECCOMP_FILTER_FLAG_NEW_LISTENER), which fails
//!   with EBUSY when an inherited filter already has one (exit 90), then
//!   maps as `single`;
//! - `waitpid`: forks a child that maps and exits with CODE, waits for it
//!   with WUNTRACED and exits 91 when it saw it stopped, 92 when it did
//!   not exit with CODE, else CODE.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

static STOP: AtomicBool = AtomicBool::new(false);

fn map_some() {
    // SAFETY: an anonymous private mapping, written then unmapped.
    unsafe {
        let len = 4 * 4096;
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p != libc::MAP_FAILED {
            std::ptr::write_volatile(p.cast::<u8>(), 1);
            libc::mprotect(p, 4096, libc::PROT_READ);
            libc::munmap(p, len);
        }
    }
}

fn busy(ms: u64) {
    let end = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < end {
        map_some();
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Installs a filter whose listener would get `acct` (never called here).
fn own_listener() -> Result<i32, std::io::Error> {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
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
    let insns = [
        stmt(ld, 4),
        jeq(AUDIT_ARCH_X86_64, 0, 3),
        stmt(ld, 0),
        jeq(libc::SYS_acct as u32, 0, 1),
        stmt(ret, libc::SECCOMP_RET_USER_NOTIF),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: insns.len() as u16,
        filter: insns.as_ptr().cast_mut(),
    };
    // SAFETY: a valid program; plain syscalls.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const libc::sock_fprog,
        );
        if fd < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(fd as i32)
        }
    }
}

fn waitpid_parent(ms: u64, code: i32) -> i32 {
    // SAFETY: the child only maps and exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        busy(ms);
        // SAFETY: leaving the child.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let rc = unsafe { libc::waitpid(child, &mut status, libc::WUNTRACED) };
    if rc < 0 {
        eprintln!("waitpid: {}", std::io::Error::last_os_error());
        return 93;
    }
    if libc::WIFSTOPPED(status) {
        eprintln!("the child was stopped by signal {}", libc::WSTOPSIG(status));
        return 91;
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == code {
        return code;
    }
    eprintln!("the child ended with status {status:#x}");
    92
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, marks, ms, code] = &args[..] else {
        eprintln!("usage: nohold single|threads|seccomp|waitpid MARKS MS CODE");
        std::process::exit(2);
    };
    let ms: u64 = ms.parse().expect("MS");
    let code: i32 = code.parse().expect("CODE");
    std::fs::write(format!("{marks}.pid"), std::process::id().to_string()).expect("pid file");
    let status = match mode.as_str() {
        "single" => {
            busy(ms);
            code
        }
        "threads" => {
            for _ in 0..4 {
                std::thread::spawn(|| {
                    while !STOP.load(Ordering::Relaxed) {
                        map_some();
                    }
                });
            }
            busy(ms);
            code
        }
        "seccomp" => match own_listener() {
            Ok(_) => {
                busy(ms);
                code
            }
            Err(e) => {
                eprintln!("cannot install a seccomp listener: {e}");
                90
            }
        },
        "waitpid" => waitpid_parent(ms, code),
        _ => {
            eprintln!("unknown mode {mode}");
            2
        }
    };
    std::fs::write(format!("{marks}.done"), status.to_string()).expect("done file");
    // exit_group, the other threads (if any) still mapping.
    std::process::exit(status);
}
