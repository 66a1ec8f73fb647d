//! End-to-end tests of `mmtrace stream --regions` against the real kernel:
//! the region changes streamed for the `workload` binary
//! (src/bin/workload.rs) are checked against the report of what it did.
//!
//! Needs a built mmtrace (`$MMTRACE_BIN`, else
//! `<workspace>/target/debug/mmtrace`): without it, every test fails with a
//! message saying so. Needs root: without it, every test is skipped with a
//! line on stderr (see `tests::needs_root!`), or fails when
//! `MMTRACE_TESTS_REQUIRE_ROOT` is set, as `cargo xtask test` does.

mod jsonl_check;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;
use tests::{addr, event_addr, read_jsonl, run_mmtrace_raw, MmtraceRun, Report, MMTRACE_TIMEOUT};

struct Traced {
    run: MmtraceRun,
    report: Report,
}

static JSONL: OnceLock<Result<Traced, String>> = OnceLock::new();

fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mmtrace-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// `mmtrace stream --regions [--format jsonl] -o OUT -- workload --report R`:
/// the run (its events parsed when `jsonl`) and the workload's report.
fn trace_workload(name: &str, jsonl: bool) -> Result<Traced, String> {
    let dir = scratch_dir(name);
    let out = dir.join("out");
    let report_path = dir.join("report.json");
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&report_path);
    let mut args: Vec<OsString> = vec!["stream".into(), "--regions".into()];
    if jsonl {
        args.extend(["--format".into(), "jsonl".into()]);
    }
    args.extend([
        "-o".into(),
        out.clone().into(),
        "--".into(),
        env!("CARGO_BIN_EXE_workload").into(),
        "--report".into(),
        report_path.clone().into(),
    ]);
    let mut run = run_mmtrace_raw(&args, MMTRACE_TIMEOUT)?;
    let failed = |what: String| {
        format!(
            "{what}\n`{}` exited with {}; stderr:\n{}",
            run.command, run.status, run.stderr
        )
    };
    if !run.status.success() {
        return Err(failed("mmtrace failed".into()));
    }
    let report_text = std::fs::read_to_string(&report_path)
        .map_err(|e| failed(format!("the workload wrote no report ({e})")))?;
    let report: Report = serde_json::from_str(&report_text)
        .map_err(|e| failed(format!("bad workload report: {e}")))?;
    if jsonl {
        run.events = read_jsonl(&out).map_err(&failed)?;
    } else {
        run.stdout = std::fs::read_to_string(&out)
            .map_err(|e| failed(format!("cannot read {}: {e}", out.display())))?;
    }
    Ok(Traced { run, report })
}

/// The JSONL run shared by the tests of this binary.
fn traced() -> &'static Traced {
    match JSONL.get_or_init(|| trace_workload("regions-jsonl", true)) {
        Ok(t) => t,
        Err(e) => panic!("tracing the workload with mmtrace failed:\n{e}"),
    }
}

fn s<'a>(e: &'a Value, f: &str) -> &'a str {
    e.get(f).and_then(Value::as_str).unwrap_or("")
}

fn a(e: &Value, f: &str) -> Option<u64> {
    event_addr(e.get(f)?).ok()
}

fn pid(e: &Value) -> i64 {
    e.get("pid").and_then(Value::as_i64).unwrap_or(-1)
}

fn region(e: &Value) -> Option<u64> {
    e.get("region").and_then(Value::as_u64)
}

/// The region lines of `pid` with `op`.
fn ops<'a>(t: &'a Traced, pid_: i32, op: &str) -> Vec<&'a Value> {
    t.run
        .events
        .iter()
        .filter(|e| s(e, "event") == "region" && pid(e) == pid_ as i64 && s(e, "op") == op)
        .collect()
}

fn page_up(len: u64, page: u64) -> u64 {
    len.div_ceil(page) * page
}

/// Lines near an address, for failure messages.
fn around(t: &Traced, pid_: i32, lo: u64, hi: u64) -> String {
    t.run
        .events
        .iter()
        .filter(|e| pid(e) == pid_ as i64)
        .filter(|e| {
            let (st, en) = (a(e, "start").unwrap_or(0), a(e, "end").unwrap_or(0));
            st < hi && en > lo
        })
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn only_region_lines() {
    tests::needs_root!();
    let t = traced();
    let mut kinds = BTreeSet::new();
    for e in &t.run.events {
        kinds.insert(s(e, "event"));
    }
    assert!(kinds.contains("region"), "no region lines at all");
    assert!(
        kinds
            .iter()
            .all(|k| ["region", "fault_summary"].contains(k)),
        "unexpected events in the region stream (lost events?): {kinds:?}"
    );
    for e in &t.run.events {
        if s(e, "event") != "region" {
            continue;
        }
        for f in [
            "t_ns", "pid", "tid", "comm", "op", "region", "start", "end", "perms", "kind",
        ] {
            assert!(e.get(f).is_some(), "no `{f}` in {e}");
        }
        let op = s(e, "op");
        assert!(
            [
                "born", "grow", "shrink", "split", "protect", "move", "merge", "advise", "lock",
                "unlock", "seal", "died"
            ]
            .contains(&op),
            "unknown op in {e}"
        );
        assert_eq!(
            e.get("cause").is_some(),
            op == "born" || op == "died",
            "`cause` goes with born and died only: {e}"
        );
        assert!(a(e, "start") < a(e, "end"), "empty range: {e}");
    }
}

#[test]
fn every_line_matches_the_jsonl_schema() {
    tests::needs_root!();
    let t = traced();
    jsonl_check::assert_lines_valid(&t.run.events, &t.run.command);
}

#[test]
fn anon_mmap_is_born() {
    tests::needs_root!();
    let t = traced();
    let r = &t.report;
    let m = &r.mmap_anon;
    let (start, end) = (
        addr(&m.result),
        addr(&m.result) + page_up(m.len, r.page_size),
    );
    let born: Vec<_> = ops(t, r.pid, "born")
        .into_iter()
        .filter(|e| a(e, "start") == Some(start) && a(e, "end") == Some(end))
        .collect();
    assert_eq!(
        born.len(),
        1,
        "the 1 MiB mmap {m:?} is not born once; lines there:\n{}",
        around(t, r.pid, start, end)
    );
    let b = born[0];
    assert_eq!(
        (s(b, "perms"), s(b, "kind"), s(b, "cause")),
        ("rw-p", "anon", "mmap"),
        "{b}"
    );
}

#[test]
fn mprotect_of_the_middle_page() {
    tests::needs_root!();
    let t = traced();
    let r = &t.report;
    let p = &r.mprotect.mprotect;
    let (start, end) = (addr(&p.addr), addr(&p.addr) + page_up(p.len, r.page_size));
    let found = ops(t, r.pid, "protect").into_iter().any(|e| {
        a(e, "start") == Some(start) && a(e, "end") == Some(end) && s(e, "perms") == "r--p"
    });
    assert!(
        found,
        "no protect r--p of exactly {start:#x}-{end:#x} ({p:?}); lines there:\n{}",
        around(t, r.pid, start, end)
    );
}

#[test]
fn moving_mremap() {
    tests::needs_root!();
    let t = traced();
    let r = &t.report;
    let m = &r.mremap_move.mremap;
    assert!(r.mremap_move.moved);
    let (old, new) = (addr(&m.old_addr), addr(&m.result));
    let old_end = old + page_up(m.old_len, r.page_size);
    let new_end = new + page_up(m.new_len, r.page_size);
    let moved = ops(t, r.pid, "move").into_iter().any(|e| {
        a(e, "old_start") == Some(old)
            && a(e, "old_end") == Some(old_end)
            && a(e, "start") == Some(new)
            && a(e, "end") == Some(new_end)
    });
    // Or, equally true: a death at the old range and a birth at the new.
    let died = ops(t, r.pid, "died")
        .into_iter()
        .find(|e| a(e, "start") == Some(old) && a(e, "end") == Some(old_end));
    let born = ops(t, r.pid, "born")
        .into_iter()
        .find(|e| a(e, "start") == Some(new) && a(e, "end") == Some(new_end));
    assert!(
        moved || (died.is_some() && born.is_some()),
        "no move {old:#x}-{old_end:#x} -> {new:#x}-{new_end:#x} ({m:?}); lines there:\n{}\n{}",
        around(t, r.pid, old, old_end),
        around(t, r.pid, new, new_end)
    );
}

#[test]
fn partial_munmap_leaves_the_rest() {
    tests::needs_root!();
    let t = traced();
    let r = &t.report;
    let step = &r.munmap_partial;
    let (start, hole) = (addr(&step.mmap.result), addr(&step.munmap.addr));
    let hole_end = hole + page_up(step.munmap.len, r.page_size);
    // The remaining [start, hole) ends the region (its neighbours may have
    // merged with it, so it may start lower).
    let found = t.run.events.iter().any(|e| {
        s(e, "event") == "region"
            && pid(e) == r.pid as i64
            && ["shrink", "split"].contains(&s(e, "op"))
            && a(e, "end") == Some(hole)
            && a(e, "start").is_some_and(|st| st <= start)
            && a(e, "old_end").is_some_and(|oe| oe >= hole_end)
    });
    assert!(
        found,
        "no shrink or split to end at {hole:#x} ({step:?}); lines there:\n{}",
        around(t, r.pid, start, hole_end)
    );
}

#[test]
fn every_region_born_dies() {
    tests::needs_root!();
    let t = traced();
    let r = &t.report;
    for p in [r.pid, r.fork.child_pid] {
        // region -> (born at, died at, died by)
        let mut life: BTreeMap<u64, (u64, Option<(u64, String)>)> = BTreeMap::new();
        let mut last_t = 0;
        for e in t.run.events.iter().filter(|e| pid(e) == p as i64) {
            if s(e, "event") != "region" {
                continue;
            }
            let t_ns = e["t_ns"].as_u64().unwrap_or(0);
            last_t = last_t.max(t_ns);
            let id = region(e).unwrap_or_else(|| panic!("no region id: {e}"));
            match s(e, "op") {
                "born" => {
                    let old = life.insert(id, (t_ns, None));
                    assert!(old.is_none(), "region {id} of {p} born twice: {e}");
                }
                op => {
                    let Some(l) = life.get_mut(&id) else {
                        panic!("region {id} of {p} changes before its birth: {e}")
                    };
                    assert!(
                        l.1.is_none(),
                        "region {id} of {p} changes after its death: {e}"
                    );
                    if op == "died" {
                        l.1 = Some((t_ns, s(e, "cause").to_string()));
                    }
                }
            }
        }
        assert!(!life.is_empty(), "no region of pid {p}");
        let exit_t = life
            .values()
            .filter_map(|(_, d)| d.as_ref())
            .filter(|(_, cause)| cause == "exit")
            .map(|(t, _)| *t)
            .collect::<BTreeSet<_>>();
        assert_eq!(
            exit_t.len(),
            1,
            "pid {p}: regions die by exit at {exit_t:?}, not at one time"
        );
        let exit_t = *exit_t.first().unwrap();
        assert_eq!(
            exit_t, last_t,
            "pid {p}: lines after its regions died by exit"
        );
        for (id, (born, died)) in &life {
            let Some((t_died, cause)) = died else {
                panic!("region {id} of pid {p} (born at {born} ns) never dies")
            };
            assert!(t_died >= born, "region {id} of {p} dies before its birth");
            assert!(
                cause == "exit" || *t_died <= exit_t,
                "region {id} of {p} dies ({cause}) after the exit"
            );
        }
    }
}

#[test]
fn text_has_no_raw_lines() {
    tests::needs_root!();
    let t = match trace_workload("regions-text", false) {
        Ok(t) => t,
        Err(e) => panic!("tracing the workload with mmtrace failed:\n{e}"),
    };
    let text = &t.run.stdout;
    let mut regions = 0;
    for line in text.lines() {
        assert!(!line.contains('\x1b'), "colour in a file: {line:?}");
        // time, comm, pid/tid, event (the workload's comm has no space).
        let event = line.split_whitespace().nth(3).unwrap_or("");
        assert!(
            ["region", "fault_summary"].contains(&event),
            "not a region line: {line:?}"
        );
        if event == "region" {
            regions += 1;
        }
    }
    assert!(regions > 0, "no region lines:\n{text}");
    let start = addr(&t.report.mmap_anon.result);
    let needle = format!("born     {start:#x}-");
    assert!(
        text.lines()
            .any(|l| l.contains(&needle) && l.ends_with("1.0 MiB rw-p anon (mmap)")),
        "no birth of the 1 MiB mapping ({needle}) in:\n{text}"
    );
}
