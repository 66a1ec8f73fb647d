//! `oomer CGROUP_PROCS [CAP_MIB [hold]]`: moves itself into a memory cgroup
//! (by writing its pid to that cgroup's `cgroup.procs`), then maps and
//! touches memory 1 MiB at a time until the OOM killer kills it. It never
//! takes more than CAP_MIB (default 1024): past it, it exits with code 3
//! (the cgroup's limit did not hold), so a broken test cannot exhaust the
//! machine.
//!
//! With `hold`, it makes itself the OOM killer's first choice
//! (`oom_score_adj` 1000), takes CAP_MIB, says `held` on stdout and then
//! waits, doing nothing, until it is killed: a quiet victim for another
//! process's allocations.

use std::io::Write;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(procs) = args.next() else {
        eprintln!("usage: oomer CGROUP_PROCS [CAP_MIB [hold]]");
        std::process::exit(2);
    };
    let cap: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1024);
    let hold = args.next().as_deref() == Some("hold");
    if hold {
        if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "1000") {
            eprintln!("oomer: cannot raise its oom_score_adj: {e}");
            std::process::exit(2);
        }
    }
    let moved = std::fs::OpenOptions::new()
        .write(true)
        .open(&procs)
        .and_then(|mut f| f.write_all(format!("{}\n", std::process::id()).as_bytes()));
    if let Err(e) = moved {
        eprintln!("oomer: cannot join the cgroup ({procs}): {e}");
        std::process::exit(2);
    }
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for _ in 0..cap {
        let mut chunk: Vec<u8> = Vec::with_capacity(1 << 20);
        // Touch every page: resident memory is what the limit counts.
        chunk.resize(1 << 20, 1);
        for i in (0..chunk.len()).step_by(4096) {
            chunk[i] = std::hint::black_box(2);
        }
        kept.push(chunk);
    }
    if hold {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "held").and_then(|()| out.flush());
        loop {
            std::thread::park();
            std::hint::black_box(&kept);
        }
    }
    eprintln!("oomer: {cap} MiB taken and not killed: the cgroup's limit did not hold");
    std::process::exit(3);
}
