//! The loads of `cargo xtask bench`'s tracer comparison. Each mode does a
//! fixed amount of work and prints one line with the CPU it took, measured
//! by the load itself (so a tracer that wraps it, or one that watches the
//! whole machine, is measured the same way):
//!
//! `cpu_ns=N wall_ns=N total_cpu_ns=N ops=N`
//!
//! to the file `$BENCHLOAD_OUT` names (a tracer wrapping the load may own
//! standard output), or to standard output.
//!
//! `cpu_ns` and `wall_ns` cover the work only; `total_cpu_ns` is the whole
//! process's CPU with its waited-for children (start-up included), which a
//! tracer's own CPU is told apart from.
//!
//! Modes:
//! - `faults PAGES`: writes PAGES fresh pages (64 MiB mappings, THP off),
//!   one first-write fault each;
//! - `mmap N`: N times map and unmap one untouched 4 KiB page;
//! - `brk N`: N times grow the break by a page and shrink it back;
//! - `pair N`: two processes at once, each `mmap N`;
//! - `run N CMD ARGS...`: runs CMD N times, one after the other (a
//!   python3 start-up, a C compile); the CPU is its children's.

use std::time::Instant;

const CHUNK: usize = 64 << 20;
const PAGE: usize = 4096;

fn cpu_ns(who: libc::c_int) -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1000;
    ns(ru.ru_utime) + ns(ru.ru_stime)
}

fn all_cpu_ns() -> u64 {
    cpu_ns(libc::RUSAGE_SELF) + cpu_ns(libc::RUSAGE_CHILDREN)
}

fn faults(pages: u64) {
    let mut left = pages as usize;
    while left > 0 {
        let len = (left * PAGE).min(CHUNK);
        // SAFETY: a private anonymous mapping, written page by page, then
        // unmapped.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert!(p != libc::MAP_FAILED, "mmap failed");
            libc::madvise(p, len, libc::MADV_NOHUGEPAGE);
            for off in (0..len).step_by(PAGE) {
                std::ptr::write_volatile(p.cast::<u8>().add(off), 1);
            }
            libc::munmap(p, len);
        }
        left -= len / PAGE;
    }
}

fn mmaps(n: u64) {
    for _ in 0..n {
        // SAFETY: one untouched anonymous page, mapped and unmapped.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert!(p != libc::MAP_FAILED, "mmap failed");
            libc::munmap(p, PAGE);
        }
    }
}

fn brks(n: u64) {
    for _ in 0..n {
        // SAFETY: the break moves up a page and back; nothing lives there.
        unsafe {
            assert!(libc::sbrk(PAGE as libc::intptr_t) != usize::MAX as *mut libc::c_void);
            libc::sbrk(-(PAGE as libc::intptr_t));
        }
    }
}

fn wait_all(children: &[libc::pid_t]) {
    for &pid in children {
        let mut status = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child {pid} failed: status {status:#x}"
        );
    }
}

fn pair(n: u64) {
    let children: Vec<libc::pid_t> = (0..2)
        .map(|_| {
            // SAFETY: the child only loops over mmap/munmap and exits.
            match unsafe { libc::fork() } {
                0 => {
                    mmaps(n);
                    unsafe { libc::_exit(0) }
                }
                -1 => panic!("fork failed"),
                pid => pid,
            }
        })
        .collect();
    wait_all(&children);
}

fn run(n: u64, cmd: &[String]) {
    for _ in 0..n {
        let status = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", cmd[0]));
        assert!(status.success(), "{} failed: {status}", cmd[0]);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: benchload faults|mmap|brk|pair N | run N CMD ARGS...";
    let (mode, n) = match (
        args.first(),
        args.get(1).and_then(|s| s.parse::<u64>().ok()),
    ) {
        (Some(m), Some(n)) => (m.as_str(), n),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let cpu0 = all_cpu_ns();
    let wall0 = Instant::now();
    match mode {
        "faults" => faults(n),
        "mmap" => mmaps(n),
        "brk" => brks(n),
        "pair" => pair(n),
        "run" if args.len() > 2 => run(n, &args[2..]),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
    let wall = wall0.elapsed().as_nanos();
    let total = all_cpu_ns();
    let line = format!(
        "cpu_ns={} wall_ns={wall} total_cpu_ns={total} ops={n}\n",
        total - cpu0
    );
    // A tracer wrapping the load may own standard output.
    match std::env::var_os("BENCHLOAD_OUT") {
        Some(path) => std::fs::write(&path, line)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.to_string_lossy())),
        None => print!("{line}"),
    }
}
