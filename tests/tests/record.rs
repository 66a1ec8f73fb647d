//! End-to-end tests of `mmtrace record` (the `mmtrace.timeline/v1` document,
//! tracer/src/timeline.rs) against the real kernel.
//!
//! The `workload` binary (src/bin/workload.rs) is recorded once per test
//! binary (see [`traced`]) with `--pause-ms 300`: between its steps it reads
//! /proc/self/maps and then sleeps with no memory activity, and its report
//! holds those maps with CLOCK_MONOTONIC times. The timeline's model of the
//! workload's regions, taken at the same instant, must be exactly those maps;
//! the report's addresses and the pauses' times (which bracket every step)
//! say which regions and changes the timeline must hold. Nothing here
//! hard-codes addresses.
//!
//! Needs a built mmtrace (`$MMTRACE_BIN`, else
//! `<workspace>/target/debug/mmtrace`): without it, every test fails with a
//! message saying so. Needs root: without it, every test is skipped with a
//! line on stderr (see `tests::needs_root!`), or fails when
//! `MMTRACE_TESTS_REQUIRE_ROOT` is set, as `cargo xtask test` does.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;
use tests::{addr, read_timeline, run_record, MapsLine, MmtraceRun, Pause, Report};

/// `--pause-ms` given to the workload.
const PAUSE_MS: u64 = 300;
/// A pause window at least this long must contain a check.
const CHECKED_WINDOW_NS: u64 = 300_000_000;
const SCHEMA: &str = "mmtrace.timeline/v1";

// ---------------------------------------------------------------------------
// The timeline document (the parts these tests read; field names and types
// as in tracer/src/timeline.rs)
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Timeline {
    schema: String,
    started_at: String,
    monotonic_start_ns: u64,
    duration_ns: u64,
    command: Option<Vec<String>>,
    lost_events: u64,
    lost_by_kind: BTreeMap<String, u64>,
    stack_source: String,
    processes: Vec<Process>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Process {
    pid: u32,
    start_time: Option<u64>,
    ppid: Option<u32>,
    comm: String,
    exe: Option<String>,
    seeded_by: String,
    exec_at_ns: Option<u64>,
    exit_at_ns: Option<u64>,
    exit_code: Option<i32>,
    exit_signal: Option<String>,
    regions: Vec<Region>,
    drift: Vec<Value>,
    checks: Vec<Check>,
    uncertain: Vec<Value>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Region {
    id: u64,
    start: String,
    end: String,
    perms: String,
    kind: String,
    path: Option<String>,
    offset: u64,
    dev: Option<String>,
    inode: Option<u64>,
    born_ns: u64,
    born_by: String,
    parent: Option<u64>,
    died_ns: Option<u64>,
    died_by: Option<String>,
    history: Vec<Change>,
}

#[derive(Debug, Deserialize)]
struct Change {
    t_ns: u64,
    op: String,
    start: String,
    end: String,
    perms: String,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Check {
    t_ns: u64,
    reason: String,
    regions: u64,
    drift: u64,
}

impl Process {
    fn label(&self) -> String {
        format!(
            "pid {} ({}, start_time {:?}, seeded_by {}, exec_at_ns {:?}, exit_at_ns {:?})",
            self.pid, self.comm, self.start_time, self.seeded_by, self.exec_at_ns, self.exit_at_ns
        )
    }
}

impl Region {
    /// The region's state at `t` (the last history entry at or before it).
    fn state_at(&self, t: u64) -> Option<&Change> {
        self.history.iter().rev().find(|c| c.t_ns <= t)
    }

    fn alive_at(&self, t: u64) -> bool {
        self.born_ns <= t && self.died_ns.is_none_or(|d| d > t)
    }

    fn label(&self) -> String {
        format!(
            "region #{} {}-{} {} {} {:?} born {} by {}, died {:?} by {:?}",
            self.id,
            self.start,
            self.end,
            self.perms,
            self.kind,
            self.path,
            self.born_ns,
            self.born_by,
            self.died_ns,
            self.died_by
        )
    }

    fn history_text(&self) -> String {
        self.history
            .iter()
            .map(|c| {
                format!(
                    "\n      {:>13} {:<8} {}-{} {}",
                    c.t_ns, c.op, c.start, c.end, c.perms
                )
            })
            .collect()
    }

    /// The file offset at `t`. The document gives the offset at the end of
    /// the region's life; walking the history back, a change that moves the
    /// start of a file mapping moves its offset by as much, except a `move`
    /// (mremap keeps the offset).
    fn offset_at(&self, t: u64) -> i128 {
        let mut offset = self.offset as i128;
        if !self.is_file_backed() {
            return offset;
        }
        let Some(last) = self.history.len().checked_sub(1) else {
            return offset;
        };
        let mut cur_start = hex(&self.start) as i128;
        for i in (1..=last).rev() {
            if self.history[i].t_ns <= t {
                break;
            }
            let prev_start = hex(&self.history[i - 1].start) as i128;
            if self.history[i].op != "move" {
                offset -= cur_start - prev_start;
            }
            cur_start = prev_start;
        }
        offset
    }

    fn is_file_backed(&self) -> bool {
        self.path.is_some() && !PSEUDO_KINDS.contains(&self.kind.as_str())
    }

    /// The path as /proc/PID/maps would show it (see [`maps_path`]).
    fn maps_path(&self) -> Option<String> {
        if PSEUDO_KINDS.contains(&self.kind.as_str()) {
            Some(format!("[{}]", self.kind))
        } else {
            self.path.clone()
        }
    }
}

/// Kinds /proc/PID/maps names with a pseudo path `[kind]`.
const PSEUDO_KINDS: &[&str] = &["heap", "stack", "vdso", "vvar", "vsyscall"];

/// The path of a maps line in the terms of [`Region::maps_path`]:
/// `[vvar_vclock]` is a `vvar` region, and a ` (deleted)` suffix is dropped.
fn maps_path(m: &MapsLine) -> Option<String> {
    let p = m.path.as_deref()?;
    if p == "[vvar_vclock]" {
        return Some("[vvar]".into());
    }
    Some(p.strip_suffix(" (deleted)").unwrap_or(p).to_string())
}

/// Parse a document address (strict: `0x` + lowercase hex).
fn hex(s: &str) -> u64 {
    tests::event_addr(&Value::String(s.to_string()))
        .unwrap_or_else(|e| panic!("bad address in the timeline: {e}"))
}

// ---------------------------------------------------------------------------
// The shared recorded run
// ---------------------------------------------------------------------------

struct Traced {
    run: MmtraceRun,
    report: Report,
    timeline_path: PathBuf,
    tl: Timeline,
}

static TRACED: OnceLock<Result<Traced, String>> = OnceLock::new();

/// The one recorded run of the workload shared by all tests of this binary.
fn traced() -> &'static Traced {
    match TRACED.get_or_init(record_workload) {
        Ok(t) => t,
        Err(e) => panic!("recording the workload with `mmtrace record` failed:\n{e}"),
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mmtrace-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Read the document at `path` (after `run`) as JSON and as [`Timeline`].
fn load_timeline(path: &Path, run: &MmtraceRun) -> Result<Timeline, String> {
    let context = || {
        format!(
            "`{}` exited with {}; stderr:\n{}",
            run.command, run.status, run.stderr
        )
    };
    let doc = read_timeline(path).map_err(|e| format!("{e}\n{}", context()))?;
    let tl: Timeline = serde_json::from_value(doc).map_err(|e| {
        format!(
            "{} does not match the mmtrace.timeline/v1 types: {e}\n{}",
            path.display(),
            context()
        )
    })?;
    if tl.schema != SCHEMA {
        return Err(format!(
            "{}: schema is {:?}, expected {SCHEMA:?}",
            path.display(),
            tl.schema
        ));
    }
    Ok(tl)
}

fn record_workload() -> Result<Traced, String> {
    let dir = scratch_dir("record");
    let timeline_path = dir.join("timeline.json");
    let report_path = dir.join("report.json");
    let _ = std::fs::remove_file(&report_path);
    let cmd: Vec<OsString> = vec![
        env!("CARGO_BIN_EXE_workload").into(),
        "--report".into(),
        report_path.clone().into(),
        "--pause-ms".into(),
        PAUSE_MS.to_string().into(),
    ];
    let run = run_record(&timeline_path, &["--reconcile-interval", "0.05"], &cmd)?;
    let report_text = std::fs::read_to_string(&report_path).map_err(|e| {
        format!(
            "the workload wrote no report at {} ({e}); `{}` exited with {}\nstderr:\n{}",
            report_path.display(),
            run.command,
            run.status,
            run.stderr
        )
    })?;
    let report: Report = serde_json::from_str(&report_text)
        .map_err(|e| format!("bad workload report {}: {e}", report_path.display()))?;
    if report.pauses.is_empty() {
        return Err(format!(
            "the workload report {} has no pauses",
            report_path.display()
        ));
    }
    let tl = load_timeline(&timeline_path, &run)?;
    Ok(Traced {
        run,
        report,
        timeline_path,
        tl,
    })
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

impl Traced {
    /// CLOCK_MONOTONIC `mono` as t_ns of the document.
    fn t(&self, mono: u64) -> u64 {
        assert!(
            mono >= self.tl.monotonic_start_ns,
            "monotonic time {mono} precedes the recording's start (monotonic_start_ns {}) in {}",
            self.tl.monotonic_start_ns,
            self.timeline_path.display()
        );
        mono - self.tl.monotonic_start_ns
    }

    fn pause(&self, name: &str) -> &Pause {
        self.report
            .pauses
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| {
                let names: Vec<&str> = self.report.pauses.iter().map(|p| p.name.as_str()).collect();
                panic!("the workload report has no pause {name:?} (pauses: {names:?})")
            })
    }

    /// The t_ns interval in which the step that ends at pause `name` ran:
    /// from the end of the previous pause (or the workload's exec) to the
    /// start of this one.
    fn step_window(&self, name: &str) -> (u64, u64) {
        let i = self
            .report
            .pauses
            .iter()
            .position(|p| p.name == name)
            .unwrap_or_else(|| {
                panic!("the workload report has no pause {name:?}");
            });
        let lo = match i {
            0 => self.workload().exec_at_ns.unwrap_or(0),
            _ => self.t(self.report.pauses[i - 1].resume_ns),
        };
        (lo, self.t(self.report.pauses[i].before_ns))
    }

    /// The T of a pause: its `after_ns` in t_ns.
    fn pause_t(&self, name: &str) -> u64 {
        self.t(self.pause(name).after_ns)
    }

    fn processes_by_pid(&self, pid: i32) -> Vec<&Process> {
        self.tl
            .processes
            .iter()
            .filter(|p| p.pid as i64 == pid as i64)
            .collect()
    }

    /// The workload's process (pid of the report, alive during the pauses).
    fn workload(&self) -> &Process {
        let first = self.report.pauses.first().map(|p| p.after_ns);
        let last = self.report.pauses.last().map(|p| p.resume_ns);
        let mut c = self.processes_by_pid(self.report.pid);
        if c.len() > 1 {
            if let (Some(first), Some(last)) = (first, last) {
                let (first, last) = (self.t(first), self.t(last));
                c.retain(|p| {
                    p.exec_at_ns.is_none_or(|e| e <= first)
                        && p.exit_at_ns.is_none_or(|x| x >= last)
                });
            }
        }
        match c.as_slice() {
            [p] => p,
            _ => panic!(
                "expected one process with the workload's pid {} in {}, found {}: {:#?}",
                self.report.pid,
                self.timeline_path.display(),
                c.len(),
                self.tl
                    .processes
                    .iter()
                    .map(Process::label)
                    .collect::<Vec<_>>()
            ),
        }
    }
}

/// Regions of `p` alive at `t` with their state then, sorted by start.
fn alive_at(p: &Process, t: u64) -> Vec<(&Region, &Change)> {
    let mut v: Vec<(&Region, &Change)> = p
        .regions
        .iter()
        .filter(|r| r.alive_at(t))
        .filter_map(|r| r.state_at(t).map(|c| (r, c)))
        .collect();
    v.sort_by_key(|(_, c)| (hex(&c.start), hex(&c.end)));
    v
}

fn page_up(v: u64, ps: u64) -> u64 {
    v.div_ceil(ps) * ps
}

fn in_window(t: u64, (lo, hi): (u64, u64)) -> bool {
    lo <= t && t <= hi
}

fn regions_text<'a>(rs: impl IntoIterator<Item = &'a Region>) -> String {
    let mut s = String::new();
    for r in rs {
        let _ = write!(s, "\n    {}{}", r.label(), r.history_text());
    }
    if s.is_empty() {
        s.push_str("\n    (none)");
    }
    s
}

/// One row of the comparison, in /proc/PID/maps terms.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    start: u64,
    end: u64,
    perms: String,
    offset: i128,
    path: Option<String>,
}

impl Row {
    fn text(&self) -> String {
        format!(
            "{:x}-{:x} {} {:08x} {}",
            self.start,
            self.end,
            self.perms,
            self.offset,
            self.path.as_deref().unwrap_or("")
        )
    }
}

/// Compare the model of `p` at `t` with `maps`; None when equal, else a
/// side-by-side table of both (only the rows that differ unless `full`).
fn compare_with_maps(p: &Process, t: u64, maps: &[MapsLine], full: bool) -> Option<String> {
    let kernel: Vec<Row> = maps
        .iter()
        .map(|m| Row {
            start: addr(&m.start),
            end: addr(&m.end),
            perms: m.perms.clone(),
            offset: m.offset as i128,
            path: maps_path(m),
        })
        .collect();
    let model: Vec<(Row, String)> = alive_at(p, t)
        .into_iter()
        .map(|(r, c)| {
            (
                Row {
                    start: hex(&c.start),
                    end: hex(&c.end),
                    perms: c.perms.clone(),
                    offset: r.offset_at(t),
                    path: r.maps_path(),
                },
                format!("#{} {} born_by {}", r.id, r.kind, r.born_by),
            )
        })
        .collect();
    if kernel.len() == model.len() && kernel.iter().zip(&model).all(|(k, (m, _))| k == m) {
        return None;
    }

    // Merge the two sorted lists by start address.
    let width = kernel
        .iter()
        .map(|r| r.text().len())
        .max()
        .unwrap_or(0)
        .max(16);
    let mut out = format!(
        "  {:<width$} | model (region id, kind, born_by)\n",
        "/proc/PID/maps"
    );
    let (mut i, mut j) = (0, 0);
    while i < kernel.len() || j < model.len() {
        let k = kernel.get(i);
        let m = model.get(j);
        let (mark, left, right) = match (k, m) {
            (Some(k), Some((m, info))) if k.start == m.start => {
                i += 1;
                j += 1;
                let mark = if k == m { ' ' } else { '!' };
                (mark, k.text(), format!("{}  {info}", m.text()))
            }
            (Some(k), Some((m, _))) if k.start < m.start => {
                i += 1;
                ('<', k.text(), String::new())
            }
            (Some(k), None) => {
                i += 1;
                ('<', k.text(), String::new())
            }
            (_, Some((m, info))) => {
                j += 1;
                ('>', String::new(), format!("{}  {info}", m.text()))
            }
            (None, None) => unreachable!(),
        };
        if full || mark != ' ' {
            let _ = writeln!(out, "{mark} {left:<width$} | {right}");
        }
    }
    out.push_str(
        "  (! differ, < only in /proc/PID/maps, > only in the model; offsets in hex; \
         pseudo paths from the region kind)\n",
    );
    Some(out)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn record_exits_with_the_commands_status() {
    tests::needs_root!();
    let t = traced();
    assert_eq!(
        t.run.status.code(),
        Some(0),
        "`{}` should exit like the workload (0), got {}; stderr:\n{}",
        t.run.command,
        t.run.status,
        t.run.stderr
    );
    let cmd = t.tl.command.as_ref().expect("command of the recording");
    assert!(
        cmd.first().is_some_and(|c| c.ends_with("workload")),
        "command of the recording: {cmd:?}"
    );
    let w = t.workload();
    assert_eq!(w.exit_code, Some(0), "exit code of {}", w.label());
    assert!(w.exit_at_ns.is_some(), "no exit_at_ns for {}", w.label());

    let dir = scratch_dir("record-exit5");
    let out = dir.join("timeline.json");
    let cmd = ["sh", "-c", "exit 5"];
    let _ = std::fs::remove_file(&out);
    let args: Vec<OsString> = ["record", "-o"]
        .into_iter()
        .map(OsString::from)
        .chain([out.clone().into_os_string(), "--".into()])
        .chain(cmd.iter().map(OsString::from))
        .collect();
    let run =
        tests::run_mmtrace_raw(&args, tests::MMTRACE_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        run.status.code(),
        Some(5),
        "`{}` should exit with sh's status 5, got {}; stderr:\n{}",
        run.command,
        run.status,
        run.stderr
    );
    let tl = load_timeline(&out, &run).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        tl.command.as_deref(),
        Some(&cmd.map(String::from)[..]),
        "command of {}",
        out.display()
    );
    let exited5: Vec<&Process> = tl
        .processes
        .iter()
        .filter(|p| p.exit_code == Some(5))
        .collect();
    assert!(
        exited5.len() == 1 && exited5[0].exit_at_ns.is_some() && exited5[0].exit_signal.is_none(),
        "expected one process that exited with code 5 in {}: {:#?}",
        out.display(),
        tl.processes.iter().map(Process::label).collect::<Vec<_>>()
    );
}

#[test]
fn model_equals_maps_at_every_pause() {
    tests::needs_root!();
    let t = traced();
    let w = t.workload();
    let mut failures = String::new();
    for pause in &t.report.pauses {
        let at = t.t(pause.after_ns);
        // The whole table for the first pause that differs, then only the
        // rows that differ.
        if let Some(table) = compare_with_maps(w, at, &pause.maps, failures.is_empty()) {
            let _ = write!(
                failures,
                "\npause {:?} (t_ns {at}, {} maps lines): the model of {} differs from /proc/self/maps:\n{table}",
                pause.name,
                pause.maps.len(),
                w.label()
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{}\ntimeline: {}",
        failures,
        t.timeline_path.display()
    );
}

#[test]
fn checks_found_no_drift() {
    tests::needs_root!();
    let t = traced();
    let w = t.workload();
    assert_eq!(t.tl.lost_events, 0, "lost events: {:?}", t.tl.lost_by_kind);
    let mut problems = Vec::new();
    let mut long_windows = 0;
    for pause in &t.report.pauses {
        let (lo, hi) = (t.t(pause.after_ns), t.t(pause.resume_ns));
        if hi - lo < CHECKED_WINDOW_NS {
            continue;
        }
        long_windows += 1;
        let inside: Vec<&Check> = w
            .checks
            .iter()
            .filter(|c| in_window(c.t_ns, (lo, hi)))
            .collect();
        if inside.is_empty() {
            problems.push(format!(
                "no check of the workload in pause {:?} [{lo}, {hi}] ({} ms)",
                pause.name,
                (hi - lo) / 1_000_000
            ));
        }
        for c in inside {
            if c.drift != 0 || c.regions == 0 {
                problems.push(format!("pause {:?}: check {c:?}", pause.name));
            }
        }
    }
    assert!(
        long_windows > 0,
        "no pause window of >= {CHECKED_WINDOW_NS} ns"
    );
    for c in &w.checks {
        if c.drift != 0 {
            problems.push(format!("check with drift: {c:?}"));
        }
        // The kernel's counters after every change agreed with the model.
        if c.reason == "counters" || c.reason == "partial" {
            problems.push(format!("check made because the model was doubted: {c:?}"));
        }
    }
    if !w.uncertain.is_empty() {
        problems.push(format!("uncertain intervals: {:?}", w.uncertain));
    }
    if !w.drift.is_empty() {
        problems.push(format!(
            "drift records of the workload:\n{}",
            serde_json::to_string_pretty(&w.drift).unwrap_or_default()
        ));
    }
    for r in &w.regions {
        if r.born_by == "drift" || r.died_by.as_deref() == Some("drift") {
            problems.push(format!(
                "region corrected from /proc: {}{}",
                r.label(),
                r.history_text()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} (checks of {}: {:?})\n{}",
        t.timeline_path.display(),
        w.label(),
        w.checks,
        problems.join("\n")
    );
}

#[test]
fn histories_are_consistent() {
    tests::needs_root!();
    let t = traced();
    let mut problems = Vec::new();
    for p in &t.tl.processes {
        let mut ids = BTreeSet::new();
        for r in &p.regions {
            let mut bad = |what: String| {
                problems.push(format!(
                    "{}: {}: {what}{}",
                    p.label(),
                    r.label(),
                    r.history_text()
                ))
            };
            if !ids.insert(r.id) {
                bad("duplicate region id".into());
            }
            if let Some(d) = r.died_ns {
                if d < r.born_ns {
                    bad("died before it was born".into());
                }
            }
            if r.died_ns.is_some() != r.died_by.is_some() {
                bad("died_ns and died_by disagree".into());
            }
            let Some(first) = r.history.first() else {
                bad("empty history".into());
                continue;
            };
            if first.op != "born" {
                bad(format!("first history op is {:?}, not \"born\"", first.op));
            }
            if first.t_ns != r.born_ns {
                bad("the born entry is not at born_ns".into());
            }
            if r.history[1..].iter().any(|c| c.op == "born") {
                bad("\"born\" after the first history entry".into());
            }
            if r.history.windows(2).any(|w| w[1].t_ns < w[0].t_ns) {
                bad("history not in time order".into());
            }
            if r.history
                .iter()
                .any(|c| c.t_ns < r.born_ns || r.died_ns.is_some_and(|d| c.t_ns > d))
            {
                bad("history entry outside [born_ns, died_ns]".into());
            }
            if r.history.iter().any(|c| hex(&c.start) >= hex(&c.end)) {
                bad("history state with start >= end".into());
            }
            let last = r.history.last().unwrap();
            if (&last.start, &last.end, &last.perms) != (&r.start, &r.end, &r.perms) {
                bad("the last history state is not the region's start/end/perms".into());
            }
            if hex(&r.start) >= hex(&r.end) {
                bad("start >= end".into());
            }
            if r.died_by.as_deref() == Some("exit")
                && (p.exit_at_ns.is_none() || r.died_ns != p.exit_at_ns)
            {
                bad("died_by exit, but died_ns is not the process's exit_at_ns".into());
            }
            if p.exit_at_ns.is_some() && r.died_ns.is_none() {
                bad("still alive at the end, but the process exited".into());
            }
            if let Some(x) = p.exit_at_ns {
                if r.born_ns > x {
                    bad("born after the process exited".into());
                }
            }
        }

        // At every instant something changed, the regions alive do not
        // overlap.
        let mut times = BTreeSet::new();
        for r in &p.regions {
            times.insert(r.born_ns);
            times.extend(r.died_ns);
            times.extend(r.history.iter().map(|c| c.t_ns));
        }
        for &at in &times {
            let alive = alive_at(p, at);
            for w in alive.windows(2) {
                let ((ra, a), (rb, b)) = (w[0], w[1]);
                if hex(&b.start) < hex(&a.end) {
                    problems.push(format!(
                        "{}: at t_ns {at}, overlapping regions:\n    {}{}\n    {}{}",
                        p.label(),
                        ra.label(),
                        ra.history_text(),
                        rb.label(),
                        rb.history_text()
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}: {} problems:\n{}",
        t.timeline_path.display(),
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn fork_and_thread_are_attributed() {
    tests::needs_root!();
    let t = traced();
    let r = &t.report;
    let ps = r.page_size;
    let w = t.workload();

    // The fork child.
    let f = &r.fork;
    let children = t.processes_by_pid(f.child_pid);
    assert_eq!(
        children.len(),
        1,
        "expected one process for the fork child (pid {}): {:#?}",
        f.child_pid,
        children.iter().map(|p| p.label()).collect::<Vec<_>>()
    );
    let child = children[0];
    assert_eq!(child.seeded_by, "fork", "{}", child.label());
    assert_eq!(child.exit_code, Some(0), "{}", child.label());
    if let Some(ppid) = child.ppid {
        assert_eq!(ppid as i64, r.pid as i64, "ppid of {}", child.label());
    }
    let a = addr(&f.child_mmap.result);
    let fork_window = t.step_window("after_fork");
    let found = child.regions.iter().any(|g| {
        g.born_by == "mmap"
            && in_window(g.born_ns, fork_window)
            && hex(&g.history[0].start) == a
            && hex(&g.history[0].end) == a + ps
    });
    assert!(
        found,
        "the fork child has no region born_by mmap at {a:#x}-{:#x} during the fork step {fork_window:?}; its regions:{}",
        a + ps,
        regions_text(child.regions.iter().filter(|g| g.born_ns >= fork_window.0))
    );
    assert!(
        !w.regions.iter().any(|g| g.born_by == "mmap"
            && in_window(g.born_ns, fork_window)
            && hex(&g.history[0].start) == a),
        "the fork child's mmap at {a:#x} is (also) a region of the parent {}",
        w.label()
    );

    // The thread's mmap belongs to the process.
    let a = addr(&r.thread.mmap.result);
    let thread_window = t.step_window("after_thread");
    let found = w.regions.iter().any(|g| {
        g.born_by == "mmap"
            && in_window(g.born_ns, thread_window)
            && hex(&g.history[0].start) == a
            && hex(&g.history[0].end) == a + ps
    });
    assert!(
        found,
        "{} has no region born_by mmap at {a:#x}-{:#x} (the thread's mmap) during the thread step {thread_window:?}; regions born then:{}",
        w.label(),
        a + ps,
        regions_text(w.regions.iter().filter(|g| in_window(g.born_ns, thread_window)))
    );
    let tid_processes = t.processes_by_pid(r.thread.tid);
    assert!(
        tid_processes.is_empty(),
        "the thread (tid {}) is a process of its own: {:#?}",
        r.thread.tid,
        tid_processes.iter().map(|p| p.label()).collect::<Vec<_>>()
    );
}

#[test]
fn regions_record_their_operations() {
    tests::needs_root!();
    let t = traced();
    let r = &t.report;
    let ps = r.page_size;
    let w = t.workload();
    let exec = w.exec_at_ns.unwrap_or(0);
    let mut problems = Vec::new();
    let image = || {
        w.regions
            .iter()
            .filter(|g| g.died_ns.is_none_or(|d| d > exec))
    };

    // Step 1: the heap follows the break.
    let win = t.step_window("after_brk");
    let grow = page_up(addr(&r.brk[1].result), ps);
    let shrink = page_up(addr(&r.brk[2].result), ps);
    let mut ends: Vec<(u64, u64)> = image()
        .filter(|g| g.kind == "heap")
        .flat_map(|g| g.history.iter())
        .filter(|c| in_window(c.t_ns, win))
        .map(|c| (c.t_ns, hex(&c.end)))
        .collect();
    ends.sort_by_key(|e| e.0);
    let grown_at = ends.iter().position(|e| e.1 == grow);
    let next = grown_at.and_then(|i| ends[i..].iter().find(|e| e.1 != grow));
    if grown_at.is_none() || next.map(|e| e.1) != Some(shrink) {
        problems.push(format!(
            "heap: expected its end to become {grow:#x} then {shrink:#x} during step 1 {win:?}; heap regions:{}",
            regions_text(image().filter(|g| g.kind == "heap"))
        ));
    }
    let at = t.pause_t("after_brk");
    if !alive_at(w, at)
        .iter()
        .any(|(g, c)| g.kind == "heap" && hex(&c.end) == shrink)
    {
        problems.push(format!(
            "heap: no heap region ending at {shrink:#x} at t_ns {at}"
        ));
    }

    // Step 2: the 1 MiB anonymous mmap.
    let win = t.step_window("after_anon_mmap");
    let a = addr(&r.mmap_anon.result);
    let len = r.mmap_anon.len;
    if !image().any(|g| {
        g.born_by == "mmap"
            && in_window(g.born_ns, win)
            && hex(&g.history[0].start) == a
            && hex(&g.history[0].end) == a + len
            && g.history[0].perms == "rw-p"
            && g.kind == "anon"
    }) {
        problems.push(format!(
            "anonymous mmap: no anon region born_by mmap as {a:#x}-{:#x} rw-p during step 2 {win:?}; regions born then:{}",
            a + len,
            regions_text(image().filter(|g| in_window(g.born_ns, win)))
        ));
    }

    // Step 3: the file mapping.
    let win = t.step_window("after_file_mmap");
    let fm = &r.mmap_file;
    let a = addr(&fm.mmap.result);
    if !image().any(|g| {
        g.born_by == "mmap"
            && in_window(g.born_ns, win)
            && hex(&g.history[0].start) == a
            && hex(&g.history[0].end) == a + fm.mmap.len
            && g.kind == "file"
            && g.path.as_deref() == Some(fm.path.as_str())
            && g.inode == Some(fm.ino)
            && g.dev.as_deref() == Some(fm.dev.as_str())
            && g.offset == 0
    }) {
        problems.push(format!(
            "file mmap: no file region born_by mmap as {a:#x}-{:#x} of {} (dev {}, inode {}) during step 3 {win:?}; regions born then:{}",
            a + fm.mmap.len,
            fm.path,
            fm.dev,
            fm.ino,
            regions_text(image().filter(|g| in_window(g.born_ns, win)))
        ));
    }
    let unmapped_at = t.step_window("before_exit");
    if !image().any(|g| {
        g.path.as_deref() == Some(fm.path.as_str())
            && g.died_by.as_deref() == Some("munmap")
            && g.died_ns.is_some_and(|d| in_window(d, unmapped_at))
    }) {
        problems.push(format!(
            "file mmap: no region of {} died_by munmap in {unmapped_at:?}; its regions:{}",
            fm.path,
            regions_text(image().filter(|g| g.path.as_deref() == Some(fm.path.as_str())))
        ));
    }

    // Step 4: the partial munmap leaves [A, A+2p).
    let win = t.step_window("after_partial_munmap");
    let a = addr(&r.munmap_partial.mmap.result);
    let at = t.pause_t("after_partial_munmap");
    let kept = image().find(|g| {
        g.alive_at(at)
            && g.state_at(at)
                .is_some_and(|c| hex(&c.start) == a && hex(&c.end) == a + 2 * ps)
    });
    match kept {
        None => problems.push(format!(
            "partial munmap: no region {a:#x}-{:#x} at t_ns {at}; regions then:{}",
            a + 2 * ps,
            regions_text(
                alive_at(w, at)
                    .into_iter()
                    .map(|(g, _)| g)
                    .filter(|g| hex(&g.end) > a - 8 * ps && hex(&g.start) < a + 8 * ps)
            )
        )),
        Some(g) => {
            // Reached by the munmap: a shrink (or the piece of a split made
            // then: the kernel had merged the 4 pages with a neighbour).
            let by_munmap = g.history.iter().any(|c| {
                in_window(c.t_ns, win)
                    && hex(&c.start) == a
                    && hex(&c.end) == a + 2 * ps
                    && (c.op == "shrink"
                        || c.op == "split"
                        || (c.op == "born" && g.born_by == "split"))
            });
            if !by_munmap {
                problems.push(format!(
                    "partial munmap: region {a:#x}-{:#x} has no shrink (or split) to those bounds during step 4 {win:?}:{}",
                    a + 2 * ps,
                    regions_text([g])
                ));
            }
        }
    }

    // Step 5b: the moved mremap.
    let win = t.step_window("after_mremap");
    let mv = &r.mremap_move;
    let b = addr(&mv.mremap.result);
    let new_len = mv.mremap.new_len;
    let moved = image().any(|g| {
        let at_b =
            |c: &Change| hex(&c.start) == b && hex(&c.end) == b + new_len && in_window(c.t_ns, win);
        g.history.iter().any(|c| c.op == "move" && at_b(c))
            || (g.born_by == "mremap" && at_b(&g.history[0]))
    });
    if !moved {
        problems.push(format!(
            "mremap move: no region with a \"move\" to (or born_by mremap as) {b:#x}-{:#x} during step 5 {win:?}; regions changed then:{}",
            b + new_len,
            regions_text(image().filter(|g| g.history.iter().any(|c| in_window(c.t_ns, win))))
        ));
    }
    let old = addr(&mv.mremap.old_addr);
    let at = t.pause_t("after_mremap");
    if alive_at(w, at)
        .iter()
        .any(|(_, c)| hex(&c.start) <= old && old < hex(&c.end))
    {
        problems.push(format!(
            "mremap move: the old address {old:#x} is still mapped in the model at t_ns {at}"
        ));
    }

    // Step 6: mprotect of the middle page splits the region in three.
    let win = t.step_window("after_mprotect");
    let p = addr(&r.mprotect.mmap.result);
    let mid = addr(&r.mprotect.mprotect.addr);
    let at = t.pause_t("after_mprotect");
    let alive = alive_at(w, at);
    let covering = |x: u64| {
        alive
            .iter()
            .find(|(_, c)| hex(&c.start) <= x && x < hex(&c.end))
            .copied()
    };
    let pieces = [covering(p), covering(mid), covering(mid + ps)];
    let ok = match pieces {
        [Some((_, lo)), Some((gm, m)), Some((_, hi))] => {
            hex(&lo.end) == mid
                && lo.perms == "rw-p"
                && hex(&m.start) == mid
                && hex(&m.end) == mid + ps
                && m.perms == "r--p"
                && hex(&hi.start) == mid + ps
                && hi.perms == "rw-p"
                && (in_window(gm.born_ns, win) || gm.history.iter().any(|c| in_window(c.t_ns, win)))
        }
        _ => false,
    };
    if !ok {
        problems.push(format!(
            "mprotect: expected [.., {mid:#x}) rw-p, [{mid:#x}, {:#x}) r--p (changed during step 6 {win:?}), [{:#x}, ..) rw-p at t_ns {at}; regions then:{}",
            mid + ps,
            mid + ps,
            regions_text(pieces.iter().flatten().map(|(g, _)| *g))
        ));
    }

    // Step 8: the stack grows down to start_deepest.
    let win = t.step_window("after_stack_growth");
    let deepest = addr(&r.stack.start_deepest);
    let stacks: Vec<&Region> = image().filter(|g| g.kind == "stack").collect();
    let grows: Vec<&Change> = stacks
        .iter()
        .flat_map(|g| g.history.iter())
        .filter(|c| c.op == "grow" && in_window(c.t_ns, win))
        .collect();
    if !grows.iter().any(|c| hex(&c.start) == deepest)
        || grows.iter().any(|c| hex(&c.start) < deepest)
    {
        problems.push(format!(
            "stack: expected \"grow\" changes down to {deepest:#x} (and no lower) during step 8 {win:?}; stack regions:{}",
            regions_text(stacks.iter().copied())
        ));
    }

    assert!(
        problems.is_empty(),
        "{} ({}):\n{}",
        t.timeline_path.display(),
        w.label(),
        problems.join("\n\n")
    );
}

/// No two processes of the workload's timeline are named by the same
/// (pid, start_time), two processes with the same pid never live at the
/// same time, and each exec lies within its process's life. (The workload
/// reuses no pid: record_programs.rs's pid_reuse_gives_two_timelines makes
/// the kernel reuse one.)
#[test]
fn process_identities_and_lives_are_consistent() {
    tests::needs_root!();
    let t = traced();
    let start = t.tl.monotonic_start_ns as i128;
    // Each process's life in t_ns: from its start_time (or the first thing
    // seen of it) to its exit (or forever).
    let life = |p: &Process| -> (i128, i128) {
        let from = match p.start_time {
            Some(s) => s as i128 - start,
            None => p
                .regions
                .iter()
                .map(|g| g.born_ns)
                .chain(p.exec_at_ns)
                .min()
                .unwrap_or(0) as i128,
        };
        (from, p.exit_at_ns.map_or(i128::MAX, |x| x as i128))
    };
    let mut names = BTreeMap::new();
    let mut problems = Vec::new();
    for p in &t.tl.processes {
        if let Some(other) = names.insert((p.pid, p.start_time), p) {
            problems.push(format!(
                "two processes named (pid {}, start_time {:?}):\n    {}\n    {}",
                p.pid,
                p.start_time,
                other.label(),
                p.label()
            ));
        }
        let (from, to) = life(p);
        if let Some(x) = p.exec_at_ns {
            if (x as i128) < from || (x as i128) > to {
                problems.push(format!("exec outside the life of {}", p.label()));
            }
        }
    }
    for (i, a) in t.tl.processes.iter().enumerate() {
        for b in &t.tl.processes[i + 1..] {
            if a.pid != b.pid {
                continue;
            }
            let ((a0, a1), (b0, b1)) = (life(a), life(b));
            if a0 < b1 && b0 < a1 {
                problems.push(format!(
                    "two processes with pid {} overlap in time:\n    {}\n    {}",
                    a.pid,
                    a.label(),
                    b.label()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}:\n{}",
        t.timeline_path.display(),
        problems.join("\n")
    );
}
