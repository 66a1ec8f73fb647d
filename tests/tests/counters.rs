//! The kernel's counters of an address space, read at the end of every
//! change, catch a change the model did not see at the very next event.
//!
//! `untraced` (src/bin/untraced.rs) splits a mapping with madvise, which
//! mmtrace is told not to hook (`MMTRACE_UNHOOK=madvise`, as if it did not
//! know that call), then makes one more mapping. `mmtrace record` runs with
//! checks so rare (`--reconcile-interval 100`) that only a doubt can make
//! one before the exit: the model must be doubted at that next mmap (its
//! uncertain interval starts at the mmap's time), a check made for reason
//! `counters` must find the split and resync the model, and the model must
//! then equal /proc/self/maps.
//!
//! Needs root and a built mmtrace, as the other tests (see tests/record.rs).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tests::{addr, read_timeline, run_mmtrace_env, UntracedReport, MMTRACE_TIMEOUT};

fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mmtrace-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn u64_of(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} of {v} is not a number"))
}

fn hex(v: &Value) -> u64 {
    tests::event_addr(v).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn an_unseen_change_is_caught_at_the_next_event() {
    tests::needs_root!();
    let dir = scratch_dir("counters");
    let timeline = dir.join("timeline.json");
    let report_path = dir.join("report.json");
    let _ = std::fs::remove_file(&timeline);
    let _ = std::fs::remove_file(&report_path);
    let args: Vec<OsString> = vec![
        "record".into(),
        "--output".into(),
        timeline.clone().into(),
        "--reconcile-interval".into(),
        "100".into(),
        "--".into(),
        env!("CARGO_BIN_EXE_untraced").into(),
        "--report".into(),
        report_path.clone().into(),
    ];
    let run = run_mmtrace_env(&args, &[("MMTRACE_UNHOOK", "madvise")], MMTRACE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let context = format!(
        "`{}` ({}), stderr:\n{}",
        run.command, run.status, run.stderr
    );
    assert_eq!(run.status.code(), Some(0), "{context}");
    assert!(
        run.stderr.contains("madvise events are not hooked"),
        "{context}"
    );
    let report: UntracedReport = serde_json::from_str(
        &std::fs::read_to_string(&report_path)
            .unwrap_or_else(|e| panic!("no report {} ({e}); {context}", report_path.display())),
    )
    .unwrap_or_else(|e| panic!("bad report: {e}"));
    let tl = read_timeline(&timeline).unwrap_or_else(|e| panic!("{e}; {context}"));
    assert_eq!(tl["lost_events"], 0, "{context}");
    let start = u64_of(&tl, "monotonic_start_ns");
    let p = tl["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .find(|p| p["pid"] == report.pid)
        .unwrap_or_else(|| panic!("no process {} in {}", report.pid, timeline.display()));
    let regions = p["regions"].as_array().expect("regions");

    // The model was seeded after the exec and before the unseen change
    // (the program gives the read 200 ms: a machine too busy for that
    // makes the change part of the seed, and this test meaningless).
    let split_at = addr(&report.split);
    let first = regions
        .iter()
        .find(|r| hex(&r["start"]) == split_at)
        .unwrap_or_else(|| panic!("no region at {split_at:#x}: {p:#}"));
    assert_ne!(
        first["born_ns"], p["exec_at_ns"],
        "the exec's seed was read after the program's first steps ({context})"
    );

    // The next event: the read-only mapping, born when mmap returned.
    let next = addr(&report.next);
    let born = regions
        .iter()
        .find(|r| hex(&r["start"]) == next && r["born_by"] == "mmap")
        .unwrap_or_else(|| panic!("no region born by mmap at {next:#x}: {p:#}"));
    let t_next = u64_of(born, "born_ns");
    let (lo, hi) = (report.next_before_ns - start, report.next_after_ns - start);
    assert!(
        (lo..=hi).contains(&t_next),
        "the mmap's region is born at {t_next}, outside the call [{lo}, {hi}]"
    );

    // Doubted at that very event, once, until the check.
    let uncertain = p["uncertain"].as_array().expect("uncertain");
    assert_eq!(
        uncertain.len(),
        1,
        "one uncertain interval expected: {uncertain:?} ({})",
        timeline.display()
    );
    assert_eq!(
        u64_of(&uncertain[0], "from_ns"),
        t_next,
        "the doubt starts at the next event ({})",
        timeline.display()
    );
    let checks = p["checks"].as_array().expect("checks");
    let check = checks
        .iter()
        .find(|c| c["reason"] == "counters")
        .unwrap_or_else(|| panic!("no check for reason counters: {checks:?}"));
    assert!(
        u64_of(check, "drift") >= 1,
        "the check found the split: {check}"
    );
    assert_eq!(uncertain[0]["to_ns"], check["t_ns"], "closed by the check");
    // No other reason made a check before the exit.
    assert!(
        checks
            .iter()
            .all(|c| c["reason"] == "counters" || c["reason"] == "exit"),
        "{checks:?}"
    );

    // Resynced: the mapping is the three VMAs the maps show, to the exit.
    let split = addr(&report.split);
    let ps = report.page_size;
    let mut model: Vec<(u64, u64, &str)> = regions
        .iter()
        .filter(|r| r["died_ns"].is_null() || r["died_by"] == "exit")
        .map(|r| {
            let perms = r["perms"].as_str().unwrap_or("?");
            (hex(&r["start"]), hex(&r["end"]), perms)
        })
        .filter(|(s, e, _)| *s < split + 3 * ps && *e > split)
        .collect();
    model.sort();
    let kernel: Vec<(u64, u64, &str)> = report
        .maps
        .iter()
        .map(|l| (addr(&l.start), addr(&l.end), l.perms.as_str()))
        .collect();
    assert_eq!(model, kernel, "({})", timeline.display());
    assert_eq!(kernel.len(), 3, "madvise split the mapping in three");
}
