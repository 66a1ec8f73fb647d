//! No silent loss: when the ring buffer is full, the kernel counts what it
//! could not reserve, per kind, and mmtrace reports it in the stream and in
//! its closing summary.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use tests::{mmtrace_bin, read_jsonl, workspace_dir};

#[test]
fn a_stalled_reader_loses_events_and_says_so() {
    tests::needs_root!();
    let out = workspace_dir()
        .join("target")
        .join("tmp")
        .join(format!("mmtrace-lost-{}.jsonl", std::process::id()));
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    // The smallest ring buffer, every fault streamed, a process that maps,
    // touches and unmaps a page every 5 ms for 2 s.
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
        .args([env!("CARGO_BIN_EXE_spinner"), "2"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mmtrace");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("tracing ") {
            break;
        }
    }
    // Stop the reader for 0.6 s: ~120 loops of 3+ events each cannot fit
    // in 4 KiB (about 60 records).
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(600));
    unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "stderr: {rest:?}");

    let events = read_jsonl(&out).unwrap_or_else(|e| panic!("{e}"));
    let lost: Vec<_> = events.iter().filter(|e| e["event"] == "lost").collect();
    assert!(
        !lost.is_empty(),
        "no lost line although the reader was stopped"
    );
    let mut total = 0;
    for l in &lost {
        let count = l["count"].as_u64().expect("lost count");
        assert!(count > 0, "{l}");
        let kind = l["kind"].as_str().expect("lost kind named");
        assert!(
            [
                "brk", "mmap", "munmap", "mremap", "mprotect", "fault", "stack", "exec", "fork",
                "exit"
            ]
            .contains(&kind),
            "{l}"
        );
        total += count;
    }
    let summary = rest
        .iter()
        .find(|l| l.contains(" events in "))
        .unwrap_or_else(|| panic!("no closing summary: {rest:?}"));
    assert!(
        summary.contains(&format!("; lost {total}")),
        "summary {summary:?} should report the {total} lost events of the stream"
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
