//! In-kernel filters: --pid, --comm and --events select exactly the
//! processes and events asked for, from processes already running.

use std::{
    collections::BTreeSet,
    process::{Child, Command, Stdio},
};

use serde_json::Value;
use tests::{read_jsonl, run_mmtrace_raw, workspace_dir, MMTRACE_TIMEOUT};

struct Spinner(Child);

impl Drop for Spinner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the spinner under `name` (a link, so its comm is `name`).
fn spinner(name: &str) -> Spinner {
    spinner_with(name, &[])
}

fn spinner_with(name: &str, args: &[&str]) -> Spinner {
    let dir = workspace_dir()
        .join("target")
        .join("tmp")
        .join(format!("mmtrace-filters-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join(name);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_spinner"), &link).unwrap();
    let child = Command::new(&link)
        .arg("60")
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .expect("start spinner");
    Spinner(child)
}

fn trace(args: &[&str], name: &str) -> Vec<Value> {
    let out = workspace_dir().join("target").join("tmp").join(format!(
        "mmtrace-filters-{}-{name}.jsonl",
        std::process::id()
    ));
    let out_s = out.to_str().unwrap().to_owned();
    let mut all = vec![
        "stream",
        "--format",
        "jsonl",
        "--duration",
        "1.5",
        "-o",
        &out_s,
    ];
    all.extend_from_slice(args);
    let run = run_mmtrace_raw(&all, MMTRACE_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(run.status.success(), "{}: {}", run.command, run.stderr);
    read_jsonl(&out).unwrap_or_else(|e| panic!("{e}"))
}

fn field_set(events: &[Value], field: &str) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e["event"] != "lost")
        .map(|e| e[field].to_string())
        .collect()
}

/// Minor faults of a running process so far.
fn minflt(pid: u32) -> u64 {
    tests::proc_stat(pid as i32)
        .unwrap_or_else(|| panic!("pid {pid} is gone"))
        .minflt
}

/// A process met mid-life: each brk's old break is where its previous call
/// left the break. Traced at the exit alone (no model), the first move
/// seen has none to take it from: null, never a guess; traced at enter and
/// exit, it is read.
#[test]
fn old_breaks_of_a_process_met_mid_life() {
    tests::needs_root!();
    let s = spinner_with("spin-brk", &["--brk"]);
    let pid = s.0.id().to_string();
    let events = trace(&["--pid", &pid, "--events", "brk"], "brk");
    let brks: Vec<&Value> = events.iter().filter(|e| e["event"] == "brk").collect();
    assert!(brks.len() >= 20, "two brk calls every 5 ms: {}", brks.len());
    let hex = |v: &Value| v.as_str().and_then(tests::parse_hex);
    for w in brks.windows(2) {
        assert_eq!(w[1]["old_brk"], w[0]["new_brk"], "{} then {}", w[0], w[1]);
    }
    let first = brks[0];
    if !first["old_brk"].is_null() {
        let (old, new) = (hex(&first["old_brk"]), hex(&first["new_brk"]));
        assert_eq!(old.unwrap().abs_diff(new.unwrap()), 4096, "{first}");
    }
}

#[test]
fn pid_filter_selects_one_process() {
    tests::needs_root!();
    let a = spinner("spin-a");
    let _b = spinner("spin-b");
    let pid = a.0.id().to_string();
    let events = trace(&["--pid", &pid, "--events", "mmap,munmap"], "pid");
    assert!(
        events.len() >= 20,
        "the spinner maps every 5 ms: {}",
        events.len()
    );
    assert_eq!(field_set(&events, "pid"), BTreeSet::from([pid.clone()]));
    assert_eq!(
        field_set(&events, "comm"),
        BTreeSet::from(["\"spin-a\"".to_string()])
    );
    // Times count from the stream's start: none is clamped to it.
    for e in &events {
        assert!(
            e["t_ns"].as_u64().unwrap() > 0,
            "event at the stream's start: {e}"
        );
    }
}

#[test]
fn comm_filter_selects_by_name() {
    tests::needs_root!();
    let _a = spinner("spin-c");
    let b = spinner("spin-d");
    let events = trace(&["--comm", "spin-d", "--events", "mmap"], "comm");
    assert!(
        events.len() >= 20,
        "the spinner maps every 5 ms: {}",
        events.len()
    );
    assert_eq!(
        field_set(&events, "pid"),
        BTreeSet::from([b.0.id().to_string()])
    );
    assert_eq!(
        field_set(&events, "event"),
        BTreeSet::from(["\"mmap\"".to_string()])
    );
}

#[test]
fn fault_summary_counts_the_spinners_faults() {
    tests::needs_root!();
    let a = spinner("spin-e");
    let pid = a.0.id().to_string();
    // The kernel's own count of the spinner's minor faults, around the trace.
    let before = minflt(a.0.id());
    let events = trace(
        &["--pid", &pid, "--faults", "summary", "--events", "fault"],
        "summary",
    );
    let after = minflt(a.0.id());
    let summaries: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "fault_summary")
        .collect();
    assert!(!summaries.is_empty(), "no fault_summary lines: {events:?}");
    // One write fault per page mapped: 200 per second at most, and some.
    let writes: u64 = summaries.iter().map(|s| s["write"].as_u64().unwrap()).sum();
    let total: u64 = summaries.iter().map(|s| s["total"].as_u64().unwrap()).sum();
    assert!(writes >= 50, "write faults in 1.5 s: {writes}");
    // mmtrace traced a window inside [before, after]: it cannot have seen
    // more faults than the kernel counted over the whole of it.
    assert!(
        total <= after - before,
        "mmtrace counted {total} faults, the kernel {} over a longer window",
        after - before
    );
    for s in &summaries {
        assert_eq!(s["pid"].to_string(), pid);
        let total = s["total"].as_u64().unwrap();
        let parts = ["read", "write", "exec"]
            .iter()
            .map(|k| s[*k].as_u64().unwrap())
            .sum::<u64>();
        assert_eq!(total, parts, "{s}");
    }
}

#[test]
fn follow_adds_the_children_of_comm_selected_processes() {
    tests::needs_root!();
    use std::io::{BufRead, BufReader};
    let dir = workspace_dir()
        .join("target")
        .join("tmp")
        .join(format!("mmtrace-filters-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("follow-sh");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/bin/sh", &link).unwrap();
    let out = dir.join("follow.jsonl");
    let mut mmtrace = Command::new(tests::mmtrace_bin().unwrap_or_else(|e| panic!("{e}")))
        .args(["stream", "--format", "jsonl", "--events", "process"])
        .args(["--comm", "follow-sh", "--follow", "-o"])
        .arg(&out)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mmtrace");
    let mut lines = BufReader::new(mmtrace.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("tracing ") {
            break;
        }
    }
    let sh = Command::new(&link)
        .args(["-c", "/bin/true; exit 0"])
        .status();
    // Everything sh and its child did is in the ring buffer once sh has
    // been reaped; mmtrace reads what is left when it stops.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(mmtrace.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = mmtrace.wait().unwrap();
    assert!(sh.expect("run follow-sh").success());
    assert!(status.success(), "{status}: {rest:?}");
    let events = read_jsonl(&out).unwrap_or_else(|e| panic!("{e}"));
    let fork = events
        .iter()
        .find(|e| e["event"] == "fork" && e["comm"] == "follow-sh")
        .unwrap_or_else(|| panic!("no fork of follow-sh: {events:?}"));
    let child = fork["child_pid"].clone();
    // The child is traced although its comm becomes "true" at exec.
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "exec" && e["pid"] == child && e["comm"] == "true"),
        "the child's exec is traced: {events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "exit" && e["pid"] == child),
        "the child's exit is traced: {events:?}"
    );
}
