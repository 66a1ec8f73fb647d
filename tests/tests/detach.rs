//! SIGTERM and SIGINT detach cleanly: none of mmtrace's programs stay
//! loaded in the kernel. The programs are those the mmtrace under test
//! holds (its fds), so another mmtrace running on the machine meanwhile
//! (a second test run, a daemon) is not taken for this one.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tests::{closing_summary, mmtrace_bin};

/// Whether a program is named like one of mmtrace's, as the kernel names
/// them (at most 15 bytes): a syscall's enter or exit (or exit alone), or
/// one of the other hooks `stream --faults all` attaches.
fn like_ours(name: &str) -> bool {
    name.starts_with("sys_enter_")
        || name.starts_with("sys_exit_")
        || ["page_fault_user", "sched_process_e"].contains(&name)
}

/// At least this many of them while `stream --faults all` runs: the
/// memory syscalls' exits, faults, and process events.
const OURS_AT_LEAST: usize = 8;

/// Ids of the programs loaded in the kernel now that are named like ours.
fn ours_loaded() -> BTreeSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| like_ours(&String::from_utf8_lossy(p.name())))
        .map(|p| p.id())
        .collect()
}

/// Ids of the BPF programs `pid` holds (program and link fds name them in
/// their fdinfo).
fn held_by(pid: u32) -> BTreeSet<u32> {
    let mut ids = BTreeSet::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for entry in dir.filter_map(Result::ok) {
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in info.lines() {
            if let Some(id) = line.strip_prefix("prog_id:") {
                if let Ok(id) = id.trim().parse() {
                    ids.insert(id);
                }
            }
        }
    }
    ids
}

/// The two tests must not overlap: each counts every loaded program.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn detaches_on(signal: libc::c_int, signal_name: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Programs of other tracers (another mmtrace, one still detaching)
    // are not this run's.
    let before = ours_loaded();
    let mut child = Command::new(mmtrace_bin().unwrap_or_else(|e| panic!("{e}")))
        .args(["stream", "--faults", "all", "--output", "/dev/null"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mmtrace");
    // mmtrace says "tracing ..." once everything is attached.
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("tracing ") {
            break;
        }
    }
    let held = held_by(child.id());
    let loaded: BTreeSet<u32> = ours_loaded()
        .difference(&before)
        .copied()
        .filter(|id| held.contains(id))
        .collect();
    assert!(
        loaded.len() >= OURS_AT_LEAST,
        "mmtrace's programs should be loaded while it runs, found {loaded:?}; stderr: {seen:?}"
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "mmtrace did not stop on signal {signal}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(status.code(), Some(0), "stderr: {rest:?}");
    // The closing summary: counts by kind, a lost figure (not necessarily
    // 0: every fault of the machine is streamed), and the signal.
    let summary = closing_summary(&rest.join("\n")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        summary.end.as_deref(),
        Some(format!("stopped by {signal_name}").as_str()),
        "the closing summary says what stopped mmtrace: {summary:?}"
    );
    assert_eq!(summary.malformed, 0, "{summary:?}");
    // Program release is asynchronous in the kernel (RCU): allow a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let still = || -> Vec<u32> { ours_loaded().intersection(&loaded).copied().collect() };
    while !still().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        still().is_empty(),
        "programs still loaded after mmtrace exited: {:?}",
        still()
    );
}

#[test]
fn sigterm_detaches_everything() {
    tests::needs_root!();
    detaches_on(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sigint_detaches_everything() {
    tests::needs_root!();
    detaches_on(libc::SIGINT, "SIGINT");
}
