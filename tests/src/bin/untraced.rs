//! `untraced --report PATH`: a change of the address space that mmtrace is
//! told not to see (`MMTRACE_UNHOOK=madvise`), then the next memory event,
//! for tests/tests/counters.rs:
//!
//! 0. sleep 200 ms: mmtrace reads the new address space right after the
//!    exec, while the program runs (it does not stop it); the read must
//!    come before the unseen change for the model to miss it;
//! 1. map 3 pages read-write;
//! 2. madvise its middle page MADV_DONTFORK, which splits the mapping into
//!    three VMAs (the unseen change);
//! 3. map 1 page read-only (not mergeable with the first): the next memory
//!    event, its CLOCK_MONOTONIC bracketed;
//! 4. sleep 500 ms with no memory activity (a check can be made);
//! 5. read /proc/self/maps and write the report ([`tests::UntracedReport`]).
//!
//! Steps 1 to 3 are raw syscalls with nothing allocated between them.
//! Anything unexpected makes it print a message and exit with status 1.

use std::path::PathBuf;
use std::ptr;

use tests::{hex_addr, parse_proc_maps, UntracedReport};

fn fail(msg: &str) -> ! {
    eprintln!("untraced: {msg}");
    std::process::exit(1);
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn map(len: usize, prot: i32) -> usize {
    // SAFETY: a fresh anonymous mapping.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        fail(&format!("mmap of {len} bytes: {}", errno()));
    }
    p as usize
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        fail(&format!("clock_gettime: {}", errno()));
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn main() {
    let mut args = std::env::args_os().skip(1);
    let report = match (args.next(), args.next(), args.next()) {
        (Some(flag), Some(path), None) if flag == "--report" => PathBuf::from(path),
        _ => {
            eprintln!("usage: untraced --report PATH");
            std::process::exit(2);
        }
    };
    // SAFETY: sysconf has no preconditions.
    let ps = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    std::thread::sleep(std::time::Duration::from_millis(200));

    let split = map(3 * ps, libc::PROT_READ | libc::PROT_WRITE);
    // SAFETY: advice on a page of our own mapping.
    if unsafe { libc::madvise((split + ps) as *mut libc::c_void, ps, libc::MADV_DONTFORK) } != 0 {
        fail(&format!("madvise(MADV_DONTFORK): {}", errno()));
    }
    let next_before_ns = monotonic_ns();
    let next = map(ps, libc::PROT_READ);
    let next_after_ns = monotonic_ns();
    std::thread::sleep(std::time::Duration::from_millis(500));

    let text = std::fs::read_to_string("/proc/self/maps")
        .unwrap_or_else(|e| fail(&format!("reading /proc/self/maps: {e}")));
    let maps = parse_proc_maps(&text)
        .unwrap_or_else(|e| fail(&e))
        .into_iter()
        .filter(|l| {
            let (s, e) = (tests::addr(&l.start) as usize, tests::addr(&l.end) as usize);
            s < split + 3 * ps && e > split
        })
        .collect();
    let r = UntracedReport {
        // SAFETY: getpid has no preconditions.
        pid: unsafe { libc::getpid() },
        page_size: ps as u64,
        split: hex_addr(split as u64),
        next: hex_addr(next as u64),
        next_before_ns,
        next_after_ns,
        maps,
    };
    let json = serde_json::to_string_pretty(&r).expect("report serializes");
    std::fs::write(&report, json + "\n")
        .unwrap_or_else(|e| fail(&format!("writing {}: {e}", report.display())));
}
