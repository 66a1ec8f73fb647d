//! No silent loss: when the ring buffer is full, the kernel counts what it
//! could not reserve, per kind, and mmtrace reports it in the stream and in
//! its closing summary.

mod jsonl_check;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use tests::{
    closing_summary, lost_in_stream, mmtrace_bin, proc_stat, read_jsonl, traced_pid, wait_running,
    wait_until, workspace_dir,
};

/// Lets a process stopped with SIGSTOP go on when dropped, even when the
/// test fails while it is stopped.
struct Stopped(i32);

impl Stopped {
    fn stop(pid: i32) -> Stopped {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[test]
fn a_stalled_reader_loses_events_and_says_so() {
    tests::needs_root!();
    let out = workspace_dir()
        .join("target")
        .join("tmp")
        .join(format!("mmtrace-lost-{}.jsonl", std::process::id()));
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    // The smallest ring buffer, every fault streamed, a process that maps,
    // touches and unmaps a page every 5 ms for 3 s.
    let mut child = Command::new(mmtrace_bin().unwrap_or_else(|e| panic!("{e}")))
        .args([
            "stream",
            "--format",
            "jsonl",
            "--faults",
            "all",
            "--buffer-size",
            "4K",
            "-o",
        ])
        .arg(&out)
        .arg("--")
        .args([env!("CARGO_BIN_EXE_spinner"), "3"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mmtrace");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut spinner = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        spinner = traced_pid(&line);
        seen.push(line);
        if spinner.is_some() {
            break;
        }
    }
    let spinner = spinner.unwrap_or_else(|| panic!("no `tracing ... (pid N)` line: {seen:?}"));
    wait_running(spinner, "spinner").unwrap_or_else(|e| panic!("{e}"));
    // Stop the reader until the spinner has made 100 more loops: a fault,
    // an mmap and a munmap each, 300 records that cannot fit in 4 KiB
    // (about 60 records).
    let minflt = || proc_stat(spinner).map_or(0, |s| s.minflt);
    let before = minflt();
    let stopped = Stopped::stop(child.id() as i32);
    wait_until(
        Duration::from_secs(60),
        "100 faults of the spinner while mmtrace is stopped",
        || minflt() >= before + 100,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    drop(stopped);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "stderr: {rest:?}");

    let events = read_jsonl(&out).unwrap_or_else(|e| panic!("{e}"));
    let lost: Vec<_> = events.iter().filter(|e| e["event"] == "lost").collect();
    assert!(
        !lost.is_empty(),
        "no lost line although the reader was stopped"
    );
    jsonl_check::assert_lines_valid(&events, &out.display().to_string());
    // Each with a count and the kind of an event (README's list).
    let by_kind = lost_in_stream(&events).unwrap_or_else(|e| panic!("{e}"));
    let total: u64 = by_kind.values().sum();
    let summary = closing_summary(&rest.join("\n")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        summary.lost, total,
        "the closing summary should report the lost events of the stream ({by_kind:?}): {summary:?}"
    );
    assert_eq!(
        summary.end.as_deref(),
        Some("command exited (code 0)"),
        "{summary:?}"
    );
    // Events kept flowing after the stall.
    let last_lost_t = lost
        .iter()
        .map(|l| l["t_ns"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "mmap" && e["t_ns"].as_u64().unwrap() > last_lost_t),
        "events after the loss was reported"
    );
}
