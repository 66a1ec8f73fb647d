//! mmtrace changes nothing the traced program can see: no seccomp filter
//! in its tree (it may install its own listener), no stop (a parent
//! waiting with WUNTRACED sees none), and its exit checks come from the
//! kernel's counters rather than a hold.

use std::path::PathBuf;

use serde_json::Value;
use tests::{read_timeline, run_record, workspace_dir};

fn scratch(name: &str) -> PathBuf {
    let dir = workspace_dir()
        .join("target")
        .join("tmp")
        .join(format!("mmtrace-nohold-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Records `nohold MODE` exiting with `code`; returns the document.
fn record(mode: &str, code: i32) -> Value {
    let dir = scratch(mode);
    let out = dir.join("timeline.json");
    let marks = dir.join("marks");
    let cmd = [
        env!("CARGO_BIN_EXE_nohold").to_string(),
        mode.to_string(),
        marks.display().to_string(),
        "100".to_string(),
        code.to_string(),
    ];
    let run = run_record::<&str, String>(&out, &[], &cmd).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        run.status.code(),
        Some(code),
        "{}: the command's own status is mmtrace's\n{}",
        run.command,
        run.stderr
    );
    read_timeline(&out).unwrap_or_else(|e| panic!("{e}"))
}

/// Whether `sched_process_exit` runs while the process still has its
/// address space: since 6.16 it runs before `exit_mm`, and has the
/// `group_dead` field that came with that move.
fn exit_hook_sees_the_address_space() -> bool {
    std::fs::read_to_string("/sys/kernel/tracing/events/sched/sched_process_exit/format")
        .is_ok_and(|f| f.contains("group_dead"))
}

/// Every process was checked at its exit, by counters, with no drift
/// (unless `doubted_ok` and the model was already in doubt before the exit:
/// a busy process may never be quiet enough for the check a doubt asks
/// for, and then the exit check says what the doubt was about).
fn checked_at_exit(doc: &Value, doubted_ok: bool) {
    assert_eq!(doc["lost_events"], 0);
    for p in doc["processes"].as_array().unwrap() {
        let who = format!("pid {} ({})", p["pid"], p["comm"]);
        let checks = p["checks"].as_array().unwrap();
        let exit = checks
            .iter()
            .find(|c| c["reason"] == "exit")
            .unwrap_or_else(|| panic!("{who}: no exit check: {checks:?}"));
        assert_eq!(exit["against"], "counters", "{who}: {exit}");
        if !exit_hook_sees_the_address_space() {
            // Before 6.16 the exit hook runs after the kernel took the
            // address space away: the check says so.
            assert_eq!(exit["void"], "no_address_space", "{who}: {exit}");
            continue;
        }
        assert!(exit["void"].is_null(), "{who}: {exit}");
        let doubted = p["uncertain"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["to_ns"].is_null() && u["from_ns"].as_u64() < exit["t_ns"].as_u64());
        if doubted_ok && doubted {
            eprintln!("{who}: in doubt at its exit: {}", p["drift"]);
            continue;
        }
        assert!(checks.iter().all(|c| c["drift"] == 0), "{who}: {checks:?}");
        assert!(p["drift"].as_array().unwrap().is_empty(), "{who}");
    }
}

#[test]
fn a_traced_program_installs_its_own_seccomp_listener() {
    tests::needs_root!();
    let doc = record("seccomp", 3);
    checked_at_exit(&doc, false);
}

#[test]
fn a_waitpid_parent_sees_no_stop() {
    tests::needs_root!();
    // 91: the parent saw its traced child stopped.
    let doc = record("waitpid", 5);
    let procs = doc["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 2, "parent and child");
    checked_at_exit(&doc, false);
}

#[test]
fn a_multi_threaded_exit_is_checked_by_counters() {
    tests::needs_root!();
    let doc = record("threads", 4);
    checked_at_exit(&doc, true);
}
