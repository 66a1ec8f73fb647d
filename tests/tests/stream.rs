//! End-to-end tests of `mmtrace stream --format jsonl` against the real
//! kernel.
//!
//! The `workload` binary (src/bin/workload.rs) is traced once per test binary
//! (see [`traced`]); it writes a report of exactly what it did, with the
//! addresses and results the kernel returned, and every test checks
//! mmtrace's events against that report. Nothing here hard-codes addresses.
//!
//! Needs a built mmtrace (`$MMTRACE_BIN`, else
//! `<workspace>/target/debug/mmtrace`): without it, every test fails with a
//! message saying so. Needs root: without it, every test is skipped with a
//! line on stderr (see `tests::needs_root!`), or fails when
//! `MMTRACE_TESTS_REQUIRE_ROOT` is set, as `cargo xtask test` does.

mod jsonl_check;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;
use tests::{
    addr, closing_summary, event_addr, lost_in_stream, parse_flags, parse_prot, read_jsonl,
    run_mmtrace_raw, run_stream, BrkCall, Call, MmapCall, MmtraceRun, MprotectCall, MremapCall,
    MunmapCall, PkeyMprotectCall, Report, MMAP_FLAG_NAMES, MMTRACE_TIMEOUT, MREMAP_FLAG_NAMES,
};

// ---------------------------------------------------------------------------
// The shared traced run
// ---------------------------------------------------------------------------

struct Traced {
    run: MmtraceRun,
    report: Report,
    events_path: PathBuf,
}

static TRACED: OnceLock<Result<Traced, String>> = OnceLock::new();

/// The one traced run of the workload shared by all tests of this binary.
fn traced() -> &'static Traced {
    match TRACED.get_or_init(trace_workload) {
        Ok(t) => t,
        Err(e) => panic!("tracing the workload with mmtrace failed:\n{e}"),
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mmtrace-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn trace_workload() -> Result<Traced, String> {
    let dir = scratch_dir("stream");
    let events_path = dir.join("events.jsonl");
    let report_path = dir.join("report.json");
    let _ = std::fs::remove_file(&report_path);
    let cmd: Vec<OsString> = vec![
        env!("CARGO_BIN_EXE_workload").into(),
        "--report".into(),
        report_path.clone().into(),
    ];
    let run = run_stream(&events_path, &cmd)?;
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
    Ok(Traced {
        run,
        report,
        events_path,
    })
}

// ---------------------------------------------------------------------------
// Event helpers
// ---------------------------------------------------------------------------

fn kind(e: &Value) -> &str {
    e.get("event").and_then(Value::as_str).unwrap_or("")
}

fn pid(e: &Value) -> Option<i64> {
    e.get("pid").and_then(Value::as_i64)
}

fn tid(e: &Value) -> Option<i64> {
    e.get("tid").and_then(Value::as_i64)
}

fn t_ns(e: &Value) -> u64 {
    e.get("t_ns").and_then(Value::as_u64).unwrap_or(0)
}

/// An address field (`"0x..."`); None when missing, null or malformed.
fn faddr(e: &Value, f: &str) -> Option<u64> {
    event_addr(e.get(f)?).ok()
}

fn fu64(e: &Value, f: &str) -> Option<u64> {
    e.get(f)?.as_u64()
}

fn fi64(e: &Value, f: &str) -> Option<i64> {
    e.get(f)?.as_i64()
}

fn fstr<'a>(e: &'a Value, f: &str) -> Option<&'a str> {
    e.get(f)?.as_str()
}

/// One expected operation: an event of `kind` by `pid` (and `tid` if given)
/// for which `pred` holds.
struct Op<'a> {
    what: String,
    kind: &'static str,
    pid: i32,
    tid: Option<i32>,
    expected: String,
    pred: Box<dyn Fn(&Value) -> bool + 'a>,
}

impl Op<'_> {
    fn matches(&self, e: &Value) -> bool {
        kind(e) == self.kind
            && pid(e) == Some(self.pid as i64)
            && self.tid.is_none_or(|t| tid(e) == Some(t as i64))
            && (self.pred)(e)
    }
}

fn op_mmap<'a>(what: &str, pid: i32, tid: Option<i32>, m: &'a MmapCall) -> Op<'a> {
    Op {
        what: what.into(),
        kind: "mmap",
        pid,
        tid,
        expected: format!("{m:?}"),
        pred: Box::new(move |e| {
            faddr(e, "addr") == Some(addr(&m.addr))
                && fu64(e, "len") == Some(m.len)
                && e.get("prot").and_then(parse_prot) == Some(m.prot)
                && e.get("flags").and_then(|f| parse_flags(f, MMAP_FLAG_NAMES)) == Some(m.flags)
                && fi64(e, "fd") == Some(m.fd as i64)
                && fu64(e, "offset") == Some(m.offset)
                && faddr(e, "ret") == Some(addr(&m.result))
        }),
    }
}

fn op_munmap<'a>(what: &str, pid: i32, tid: Option<i32>, m: &'a MunmapCall) -> Op<'a> {
    Op {
        what: what.into(),
        kind: "munmap",
        pid,
        tid,
        expected: format!("{m:?}"),
        pred: Box::new(move |e| {
            faddr(e, "addr") == Some(addr(&m.addr))
                && fu64(e, "len") == Some(m.len)
                && fi64(e, "ret") == Some(m.result)
        }),
    }
}

fn op_mremap<'a>(what: &str, pid: i32, tid: Option<i32>, m: &'a MremapCall) -> Op<'a> {
    Op {
        what: what.into(),
        kind: "mremap",
        pid,
        tid,
        expected: format!("{m:?}"),
        pred: Box::new(move |e| {
            faddr(e, "old_addr") == Some(addr(&m.old_addr))
                && fu64(e, "old_len") == Some(m.old_len)
                && fu64(e, "new_len") == Some(m.new_len)
                && e.get("flags")
                    .and_then(|f| parse_flags(f, MREMAP_FLAG_NAMES))
                    == Some(m.flags)
                && faddr(e, "ret") == Some(addr(&m.result))
        }),
    }
}

fn op_mprotect<'a>(what: &str, pid: i32, tid: Option<i32>, m: &'a MprotectCall) -> Op<'a> {
    Op {
        what: what.into(),
        kind: "mprotect",
        pid,
        tid,
        expected: format!("{m:?}"),
        pred: Box::new(move |e| {
            faddr(e, "addr") == Some(addr(&m.addr))
                && fu64(e, "len") == Some(m.len)
                && e.get("prot").and_then(parse_prot) == Some(m.prot)
                && fi64(e, "ret") == Some(m.result)
        }),
    }
}

fn op_pkey_mprotect<'a>(what: &str, pid: i32, tid: Option<i32>, m: &'a PkeyMprotectCall) -> Op<'a> {
    Op {
        what: what.into(),
        kind: "pkey_mprotect",
        pid,
        tid,
        expected: format!("{m:?}"),
        pred: Box::new(move |e| {
            faddr(e, "addr") == Some(addr(&m.addr))
                && fu64(e, "len") == Some(m.len)
                && e.get("prot").and_then(parse_prot) == Some(m.prot)
                && fi64(e, "pkey") == Some(m.pkey as i64)
                && fi64(e, "ret") == Some(m.result)
        }),
    }
}

/// A call of steps 11 to 16: its event has the call's arguments, in the
/// stream's terms, and its result.
fn op_call<'a>(what: &str, pid: i32, tid: Option<i32>, c: &'a Call) -> Op<'a> {
    let kind: &'static str = match c.name.as_str() {
        "mlock" => "mlock",
        "mlock2" => "mlock2",
        "munlock" => "munlock",
        "mlockall" => "mlockall",
        "munlockall" => "munlockall",
        "mseal" => "mseal",
        "shmat" => "shmat",
        "shmdt" => "shmdt",
        "remap_file_pages" => "remap_file_pages",
        "mprotect" => "mprotect",
        "madvise" => "madvise",
        "munmap" => "munmap",
        other => panic!("the workload reports a call op_call does not know: {other}"),
    };
    let a = c.args.clone();
    let range = move |e: &Value| faddr(e, "addr") == Some(a[0]) && fu64(e, "len") == Some(a[1]);
    let args: Box<dyn Fn(&Value) -> bool> = match kind {
        "mlock" | "munlock" | "munmap" => Box::new(range),
        "mlock2" => Box::new(move |e| {
            let flags = if c.args[2] == 1 { "MLOCK_ONFAULT" } else { "0" };
            range(e) && fstr(e, "flags") == Some(flags)
        }),
        "mlockall" => Box::new(move |e| {
            c.args[0] == (libc::MCL_CURRENT | libc::MCL_FUTURE) as u64
                && fstr(e, "flags") == Some("MCL_CURRENT|MCL_FUTURE")
        }),
        "munlockall" => Box::new(|_| true),
        "mseal" => Box::new(move |e| range(e) && fu64(e, "flags") == Some(c.args[2])),
        "shmat" => Box::new(move |e| {
            let flags = if c.args[2] == libc::SHM_RDONLY as u64 {
                "SHM_RDONLY"
            } else {
                "0"
            };
            fi64(e, "shmid") == Some(c.args[0] as i64)
                && faddr(e, "addr") == Some(c.args[1])
                && fstr(e, "flags") == Some(flags)
        }),
        "shmdt" => Box::new(move |e| faddr(e, "addr") == Some(c.args[0])),
        "remap_file_pages" => Box::new(move |e| {
            faddr(e, "addr") == Some(c.args[0])
                && fu64(e, "size") == Some(c.args[1])
                && fu64(e, "pgoff") == Some(c.args[3])
        }),
        "mprotect" => Box::new(move |e| {
            range(e) && e.get("prot").and_then(parse_prot) == Some(c.args[2] as i32)
        }),
        "madvise" => Box::new(move |e| {
            range(e)
                && c.args[2] == libc::MADV_DONTFORK as u64
                && fstr(e, "advice") == Some("MADV_DONTFORK")
        }),
        _ => unreachable!(),
    };
    Op {
        what: what.into(),
        kind,
        pid,
        tid,
        expected: format!("{c:?}"),
        pred: Box::new(move |e| {
            let ret = match c.result {
                r if r < 0 => {
                    e.get("ret").is_some_and(Value::is_null)
                        && (r != -i64::from(libc::ENOMEM) || fstr(e, "errno") == Some("ENOMEM"))
                }
                r if kind == "shmat" => faddr(e, "ret") == Some(r as u64),
                r => fi64(e, "ret") == Some(r),
            };
            ret && args(e)
        }),
    }
}

fn op_brk<'a>(what: &str, pid: i32, tid: Option<i32>, b: &'a BrkCall) -> Op<'a> {
    Op {
        what: what.into(),
        kind: "brk",
        pid,
        tid,
        expected: format!("{b:?}"),
        pred: Box::new(move |e| {
            faddr(e, "requested") == Some(addr(&b.requested))
                && faddr(e, "new_brk") == Some(addr(&b.result))
                && faddr(e, "old_brk") == Some(addr(&b.before))
        }),
    }
}

fn describe_candidates(events: &[Value], op: &Op) -> String {
    let same: Vec<&Value> = events
        .iter()
        .filter(|e| kind(e) == op.kind && pid(e) == Some(op.pid as i64))
        .collect();
    let mut s = format!(
        "{} `{}` event(s) of pid {} in the stream",
        same.len(),
        op.kind,
        op.pid
    );
    if !same.is_empty() {
        s.push_str(", e.g.:");
        for e in same.iter().take(25) {
            s.push_str(&format!("\n    {e}"));
        }
        if same.len() > 25 {
            s.push_str("\n    ...");
        }
    }
    s
}

/// Assert that `ops` appear in the stream, in this order (by `t_ns`).
/// Returns the index of each matched event.
fn expect_ops(t: &Traced, ops: &[Op]) -> Vec<usize> {
    let events = &t.run.events;
    let mut after: Option<u64> = None;
    let mut found = Vec::new();
    for op in ops {
        let hit = events
            .iter()
            .position(|e| op.matches(e) && after.is_none_or(|a| t_ns(e) > a));
        match hit {
            Some(i) => {
                after = Some(t_ns(&events[i]));
                found.push(i);
            }
            None => {
                let unordered = events.iter().position(|e| op.matches(e));
                let order_note = match unordered {
                    Some(i) => format!(
                        "\n(a matching event exists but not after the previous step's event: {})",
                        events[i]
                    ),
                    None => String::new(),
                };
                panic!(
                    "no `{}` event for {} (pid {}, tid {:?}); the workload did {}{order_note}\n{}\n(events file: {})",
                    op.kind,
                    op.what,
                    op.pid,
                    op.tid,
                    op.expected,
                    describe_candidates(events, op),
                    t.events_path.display()
                );
            }
        }
    }
    found
}

/// Index of the workload's `exec` event (panics if missing).
fn exec_index(t: &Traced) -> usize {
    let r = &t.report;
    t.run
        .events
        .iter()
        .position(|e| {
            kind(e) == "exec"
                && pid(e) == Some(r.pid as i64)
                && fstr(e, "path").is_some_and(|p| p.ends_with("workload"))
        })
        .unwrap_or_else(|| {
            let execs: Vec<String> = t
                .run
                .events
                .iter()
                .filter(|e| kind(e) == "exec")
                .map(|e| e.to_string())
                .collect();
            panic!(
                "no `exec` event of pid {} with a path ending in \"workload\"; exec events: {execs:#?}",
                r.pid
            )
        })
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn mmtrace_exit_status_is_the_workloads() {
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
}

#[test]
fn every_line_has_the_common_fields() {
    tests::needs_root!();
    let t = traced();
    assert!(!t.run.events.is_empty(), "mmtrace wrote no events");
    for (i, e) in t.run.events.iter().enumerate() {
        assert!(
            e.get("t_ns").is_some_and(Value::is_u64),
            "line {}: no integer t_ns: {e}",
            i + 1
        );
        assert!(pid(e).is_some(), "line {}: no integer pid: {e}", i + 1);
        assert!(tid(e).is_some(), "line {}: no integer tid: {e}", i + 1);
        assert!(fstr(e, "comm").is_some(), "line {}: no comm: {e}", i + 1);
        assert!(fstr(e, "event").is_some(), "line {}: no event: {e}", i + 1);
    }
}

#[test]
fn every_line_matches_the_jsonl_schema() {
    tests::needs_root!();
    let t = traced();
    jsonl_check::assert_lines_valid(&t.run.events, &t.events_path.display().to_string());
}

#[test]
fn addresses_are_lowercase_unpadded_hex() {
    tests::needs_root!();
    let t = traced();
    let fields: &[(&str, &[&str])] = &[
        ("brk", &["requested", "old_brk", "new_brk"]),
        ("mmap", &["addr", "ret"]),
        ("munmap", &["addr"]),
        ("mremap", &["old_addr", "ret", "new_addr"]),
        ("mprotect", &["addr"]),
        ("pkey_mprotect", &["addr"]),
        ("mlock", &["addr"]),
        ("mlock2", &["addr"]),
        ("munlock", &["addr"]),
        ("mseal", &["addr"]),
        ("shmat", &["addr", "ret"]),
        ("shmdt", &["addr"]),
        ("remap_file_pages", &["addr"]),
        ("fault", &["addr", "ip"]),
        ("stack", &["old_start", "new_start"]),
    ];
    for e in &t.run.events {
        let Some((_, fs)) = fields.iter().find(|(k, _)| *k == kind(e)) else {
            continue;
        };
        for f in *fs {
            match e.get(*f) {
                // new_addr only with MREMAP_FIXED; ret is null on failure.
                None | Some(Value::Null) if matches!(*f, "new_addr" | "ret") => {}
                None | Some(Value::Null) => panic!("`{f}` missing in {e}"),
                Some(v) => {
                    if let Err(msg) = event_addr(v) {
                        panic!("`{f}`: {msg} in {e}");
                    }
                }
            }
        }
    }
}

#[test]
fn prot_and_flags_are_in_the_documented_format() {
    tests::needs_root!();
    let t = traced();
    let mut seen = 0;
    for e in &t.run.events {
        let (prot, flags) = match kind(e) {
            "mmap" => (true, Some(MMAP_FLAG_NAMES)),
            "mprotect" => (true, None),
            "mremap" => (false, Some(MREMAP_FLAG_NAMES)),
            _ => continue,
        };
        let field = |f: &str| e.get(f).unwrap_or(&Value::Null);
        assert!(
            !prot || parse_prot(field("prot")).is_some(),
            "`prot` is not in the documented format (see README): {e}"
        );
        assert!(
            flags.is_none_or(|names| parse_flags(field("flags"), names).is_some()),
            "`flags` is not in the documented format (see README): {e}"
        );
        seen += 1;
    }
    assert!(seen > 0, "no mmap, mprotect or mremap lines");
}

#[test]
fn brk_calls_are_traced() {
    tests::needs_root!();
    let t = traced();
    let r = &t.report;
    assert_eq!(r.brk.len(), 3, "workload report should have 3 brk calls");
    let ops = [
        op_brk("brk(0) (query)", r.pid, Some(r.tid), &r.brk[0]),
        op_brk("brk grow by 64 KiB", r.pid, Some(r.tid), &r.brk[1]),
        op_brk("brk shrink by 32 KiB", r.pid, Some(r.tid), &r.brk[2]),
    ];
    let idx = expect_ops(t, &ops);
    // Spelled out: the grow's old_brk is the break the query returned.
    let grow = &t.run.events[idx[1]];
    assert_eq!(
        faddr(grow, "old_brk"),
        Some(addr(&r.brk[0].result)),
        "old_brk of the grow: {grow}"
    );
}

#[test]
fn anonymous_mmap_is_traced() {
    tests::needs_root!();
    let t = traced();
    let r = &t.report;
    expect_ops(
        t,
        &[op_mmap(
            "the 1 MiB anonymous mmap",
            r.pid,
            Some(r.tid),
            &r.mmap_anon,
        )],
    );
}

#[test]
fn file_mmap_carries_path_dev_ino() {
    tests::needs_root!();
    let t = traced();
    let r = &t.report;
    let f = &r.mmap_file;
    let idx = expect_ops(
        t,
        &[
            op_mmap("the 3-page file mmap", r.pid, Some(r.tid), &f.mmap),
            op_munmap(
                "the munmap of the file mapping",
                r.pid,
                Some(r.tid),
                &f.munmap,
            ),
        ],
    );
    let e = &t.run.events[idx[0]];
    assert_eq!(fstr(e, "path"), Some(f.path.as_str()), "path of {e}");
    assert_eq!(
        fstr(e, "dev"),
        Some(f.dev.as_str()),
        "dev of {e} (fstat: major {} minor {})",
        f.dev_major,
        f.dev_minor
    );
    assert_eq!(fu64(e, "ino"), Some(f.ino), "ino of {e}");
}

#[test]
fn anonymous_mmaps_have_no_file_fields() {
    tests::needs_root!();
    let t = traced();
    let r = &t.report;
    let idx = expect_ops(
        t,
        &[op_mmap(
            "the 1 MiB anonymous mmap",
            r.pid,
            Some(r.tid),
            &r.mmap_anon,
        )],
    );
    let e = &t.run.events[idx[0]];
    for f in ["path", "dev", "ino"] {
        assert!(
            e.get(f).is_none_or(Value::is_null),
            "anonymous mmap has `{f}`: {e}"
        );
    }
}

#[test]
fn partial_munmap_is_traced() {
    tests::needs_root!();
    let t = traced();
    let r = &t.report;
    let s = &r.munmap_partial;
    expect_ops(
        t,
        &[
            op_mmap("the 4-page mmap", r.pid, Some(r.tid), &s.mmap),
            op_munmap(
                "the munmap of its last 2 pages",
                r.pid,
                Some(r.tid),
                &s.munmap,
            ),
        ],
    );
}

#[test]
fn mremap_in_place_is_traced() {
    tests::needs_root!();
    let t = traced();
    let r = &t.report;
    let s = &r.mremap_in_place;
    assert!(s.stayed);
    assert_eq!(s.mremap.result, s.mremap.old_addr);
    expect_ops(
        t,
        &[
            op_mmap("the 4-page mmap", r.pid, Some(r.tid), &s.mmap),
            op_munmap(
                "the munmap of its last 2 pages",
                r.pid,
                Some(r.tid),
                &s.munmap,
            ),
            op_mremap(
                "the in-place mremap 2 -> 4 pages",
                r.pid,
                Some(r.tid),
                &s.mremap,
            ),
        ],
    );
}

#[test]
fn mremap_move_is_traced() {
    tests::needs_root!();
    let t = traced();
    let r = &t.report;
    let s = &r.mremap_move;
    assert!(s.moved);
    assert_ne!(s.mremap.result, s.mremap.old_addr);
    expect_ops(
        t,
        &[
            op_mmap("the 2-page reserve mmap", r.pid, Some(r.tid), &s.reserve),
            op_munmap(
                "the munmap of the reserve's upper page",
                r.pid,
                Some(r.tid),
                &s.reserve_unmap,
            ),
            op_mmap(
                "the MAP_FIXED_NOREPLACE blocker mmap",
                r.pid,
                Some(r.tid),
                &s.blocker,
            ),
            op_mremap(
                "the moving mremap 1 -> 2 pages",
                r.pid,
                Some(r.tid),
                &s.mremap,
            ),
        ],
    );
}

#[test]
fn mprotect_is_traced() {
    tests::needs_root!();
    let t = traced();
    let r = &t.report;
    let s = &r.mprotect;
    expect_ops(
        t,
        &[
            op_mmap("the 3-page mmap", r.pid, Some(r.tid), &s.mmap),
            op_mprotect(
                "the mprotect of its middle page",
                r.pid,
                Some(r.tid),
                &s.mprotect,
            ),
        ],
    );
}

#[test]
fn pkey_mprotect_is_traced() {
    tests::needs_root!();
    let t = traced();
    let r = &t.report;
    let Some(s) = &r.pkey_mprotect else {
        eprintln!("this kernel has no pkey_mprotect (ENOSYS): nothing to check");
        return;
    };
    let idx = expect_ops(
        t,
        &[
            op_mmap("the 2-page mmap", r.pid, Some(r.tid), &s.mmap),
            op_pkey_mprotect(
                "the pkey_mprotect of its first page",
                r.pid,
                Some(r.tid),
                &s.pkey_mprotect,
            ),
        ],
    );
    // /proc/self/maps right after the call agrees with the event: the pages
    // it names have its protection, the others are as mapped.
    let e = &t.run.events[idx[1]];
    let (start, len) = (faddr(e, "addr").unwrap(), fu64(e, "len").unwrap());
    let prot = e.get("prot").and_then(parse_prot).unwrap();
    assert_eq!(prot, libc::PROT_READ, "{e}");
    let end = addr(&s.mmap.result) + s.mmap.len;
    let maps: Vec<(u64, u64, &str)> = s
        .maps
        .iter()
        // Clipped to the mapping: a neighbour may have merged with it.
        .map(|l| {
            let lo = addr(&l.start).max(start);
            (lo, addr(&l.end).min(end), l.perms.as_str())
        })
        .collect();
    assert_eq!(
        maps,
        [(start, start + len, "r--p"), (start + len, end, "rw-p")],
        "maps after the call: {:?}; event {e}",
        s.maps
    );
}

/// Steps 11 to 17: every call is in the stream, in order, as the workload
/// made it (steps the kernel refused are said and skipped).
#[test]
fn locks_seals_shm_remaps_and_partial_calls_are_traced() {
    tests::needs_root!();
    let t = traced();
    let r = &t.report;
    let names: Vec<&str> = r.calls.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "mlock",
            "mlockall",
            "mseal",
            "shm",
            "remap_file_pages",
            "partial",
            "kernel_files"
        ],
        "the workload's steps 11 to 17"
    );
    let mut ops = Vec::new();
    for step in &r.calls {
        if let Some(why) = &step.skipped {
            eprintln!("step {} not made: {why}", step.name);
            continue;
        }
        for (i, m) in step.mmaps.iter().enumerate() {
            // An mmap of the step comes before its calls (mlockall's after
            // the mlockall).
            if step.name != "mlockall" {
                ops.push(op_mmap(
                    &format!("{} mmap {i}", step.name),
                    r.pid,
                    Some(r.tid),
                    m,
                ));
            }
        }
        for (i, c) in step.calls.iter().enumerate() {
            ops.push(op_call(
                &format!("{} call {i} ({})", step.name, c.name),
                r.pid,
                Some(r.tid),
                c,
            ));
            if step.name == "mlockall" && c.name == "mlockall" {
                ops.push(op_mmap(
                    "the mmap after mlockall",
                    r.pid,
                    Some(r.tid),
                    &step.mmaps[0],
                ));
            }
        }
    }
    expect_ops(t, &ops);
}

#[test]
fn touched_pages_fault_once_each() {
    tests::needs_root!();
    let t = traced();
    let r = &t.report;
    let s = &r.touch;
    expect_ops(
        t,
        &[op_mmap("the 64-page mmap", r.pid, Some(r.tid), &s.mmap)],
    );
    let (start, end, ps) = (addr(&s.start), addr(&s.end), s.page_size);
    assert_eq!(end - start, s.pages * ps);

    let mut per_page: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for e in &t.run.events {
        if kind(e) != "fault" || pid(e) != Some(r.pid as i64) {
            continue;
        }
        let Some(a) = faddr(e, "addr") else { continue };
        if (start..end).contains(&a) {
            per_page.entry((a - start) / ps).or_default().push(e);
        }
    }
    let missing: Vec<u64> = (0..s.pages).filter(|p| !per_page.contains_key(p)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} touched pages have no fault event in [{}, {}); missing page indexes {missing:?}",
        missing.len(),
        s.pages,
        s.start,
        s.end
    );
    assert_eq!(per_page.len() as u64, s.pages, "distinct faulting pages");
    assert_eq!(
        s.minflt, s.pages,
        "the kernel's minor fault count across the touch loop (one per page)"
    );
    for (page, evs) in &per_page {
        assert_eq!(
            evs.len(),
            1,
            "page {page} of the touched region should fault exactly once: {evs:#?}"
        );
        let e = evs[0];
        assert_eq!(fstr(e, "access"), Some("write"), "access of {e}");
        assert_eq!(
            e.get("present").and_then(Value::as_bool),
            Some(false),
            "first touch of a fresh anonymous page is a not-present fault: {e}"
        );
        assert_eq!(tid(e), Some(r.tid as i64), "faulting tid of {e}");
        assert!(faddr(e, "ip").is_some(), "fault without ip: {e}");
    }
}

#[test]
fn stack_growth_is_traced() {
    tests::needs_root!();
    let t = traced();
    let r = &t.report;
    let before = addr(&r.stack.start_before);
    let deepest = addr(&r.stack.start_deepest);
    assert!(deepest < before && before - deepest >= 1280 * 1024);

    // Only events of the workload image: before its exec the pid belongs to
    // mmtrace's child (and the exec itself sets up the new stack).
    let exec_t = t_ns(&t.run.events[exec_index(t)]);
    let stack: Vec<&Value> = t
        .run
        .events
        .iter()
        .filter(|e| kind(e) == "stack" && pid(e) == Some(r.pid as i64) && t_ns(e) >= exec_t)
        .collect();
    assert!(
        !stack.is_empty(),
        "no `stack` events of pid {} (the stack grew from {} to {})",
        r.pid,
        r.stack.start_before,
        r.stack.start_deepest
    );
    let mut chain: Vec<(u64, u64, u64, &Value)> = stack
        .iter()
        .map(|e| {
            let old = faddr(e, "old_start").unwrap_or_else(|| panic!("bad old_start in {e}"));
            let new = faddr(e, "new_start").unwrap_or_else(|| panic!("bad new_start in {e}"));
            assert!(
                fstr(e, "source").is_some(),
                "stack event without source: {e}"
            );
            assert!(old > new, "stack event does not grow down: {e}");
            (t_ns(e), old, new, *e)
        })
        .collect();
    chain.sort_by_key(|c| c.0);

    let min_new = chain.iter().map(|c| c.2).min().unwrap();
    assert_eq!(
        min_new, deepest,
        "deepest stack start seen by mmtrace ({min_new:#x}) != [stack] start at the deepest point ({deepest:#x})"
    );
    for w in chain.windows(2) {
        let (a, b) = (w[0], w[1]);
        assert!(
            b.2 < a.2,
            "stack events not monotonic:\n  {}\n  {}",
            a.3,
            b.3
        );
        assert_eq!(
            b.1, a.2,
            "stack events do not chain (old_start of one != new_start of the previous):\n  {}\n  {}",
            a.3, b.3
        );
    }
    assert!(
        chain.iter().any(|c| c.1 == before || c.2 == before),
        "the [stack] start before the recursion ({before:#x}) is not in the chain of stack events"
    );
}

#[test]
fn fork_child_mmap_is_attributed_to_the_child() {
    tests::needs_root!();
    let t = traced();
    let f = &t.report.fork;
    expect_ops(
        t,
        &[op_mmap(
            "the fork child's 1-page mmap",
            f.child_pid,
            Some(f.child_pid),
            &f.child_mmap,
        )],
    );
}

#[test]
fn thread_mmap_is_attributed_to_the_thread() {
    tests::needs_root!();
    let t = traced();
    let r = &t.report;
    assert_ne!(r.thread.tid, r.pid);
    expect_ops(
        t,
        &[op_mmap(
            "the second thread's 1-page mmap",
            r.pid,
            Some(r.thread.tid),
            &r.thread.mmap,
        )],
    );
}

/// The exit events of a process: its main thread's, or any if the tracer
/// does not report the main tid.
fn process_exits(t: &Traced, p: i32) -> Vec<&Value> {
    let all: Vec<&Value> = t
        .run
        .events
        .iter()
        .filter(|e| kind(e) == "exit" && pid(e) == Some(p as i64))
        .collect();
    let main: Vec<&Value> = all
        .iter()
        .copied()
        .filter(|e| tid(e) == Some(p as i64))
        .collect();
    if main.is_empty() {
        all
    } else {
        main
    }
}

fn assert_clean_exit(t: &Traced, p: i32, who: &str) {
    let exits = process_exits(t, p);
    assert!(!exits.is_empty(), "no `exit` event for {who} (pid {p})");
    for e in exits {
        assert_eq!(fi64(e, "code"), Some(0), "exit code of {who}: {e}");
        assert!(
            e.get("signal")
                .is_none_or(|s| s.is_null() || s.as_i64() == Some(0)),
            "{who} should not have been killed by a signal: {e}"
        );
    }
}

#[test]
fn process_events_exec_fork_exit() {
    tests::needs_root!();
    let t = traced();
    let r = &t.report;
    let exec = exec_index(t);

    let child = r.fork.child_pid;
    let fork = t.run.events.iter().position(|e| {
        kind(e) == "fork"
            && pid(e) == Some(r.pid as i64)
            && fi64(e, "child_pid") == Some(child as i64)
    });
    let fork = fork.unwrap_or_else(|| {
        let forks: Vec<String> = t
            .run
            .events
            .iter()
            .filter(|e| kind(e) == "fork")
            .map(|e| e.to_string())
            .collect();
        panic!(
            "no `fork` event from pid {} with child_pid {child}; fork events: {forks:#?}",
            r.pid
        )
    });
    assert!(
        t_ns(&t.run.events[fork]) >= t_ns(&t.run.events[exec]),
        "fork event precedes the workload's exec"
    );

    assert_eq!(r.fork.exit_code, Some(0));
    assert_clean_exit(t, child, "the fork child");
    assert_clean_exit(t, r.pid, "the workload");
}

#[test]
fn no_events_lost() {
    tests::needs_root!();
    let t = traced();
    let lost = lost_in_stream(&t.run.events).unwrap_or_else(|e| panic!("{e}"));
    assert!(lost.is_empty(), "the stream has lost lines: {lost:?}");
    let summary = closing_summary(&t.run.stderr).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        summary.lost, 0,
        "mmtrace's closing summary reports lost events: {summary:?}"
    );
}

#[test]
fn no_kernel_errors() {
    tests::needs_root!();
    let t = traced();
    let summary = closing_summary(&t.run.stderr).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.errors, 0, "the kernel programs failed: {summary:?}");
}

#[test]
fn closing_summary_counts_the_stream() {
    tests::needs_root!();
    let t = traced();
    let summary = closing_summary(&t.run.stderr).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        summary.end.as_deref(),
        Some("command exited (code 0)"),
        "how the run ended: {summary:?}"
    );
    assert_eq!(summary.malformed, 0, "{summary:?}");
    // With --faults all every event is a line: no fault summaries, and
    // (see no_events_lost) no lost lines.
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    for e in &t.run.events {
        *lines.entry(kind(e).to_string()).or_default() += 1;
    }
    assert_eq!(
        summary.by_kind,
        lines,
        "the summary's counts by kind are not the stream's ({})",
        t.events_path.display()
    );
    assert_eq!(summary.events, t.run.events.len() as u64, "{summary:?}");
}

#[test]
fn mmtrace_propagates_the_exit_status() {
    tests::needs_root!();
    let dir = scratch_dir("exit7");
    let out = dir.join("events.jsonl");
    let _ = std::fs::remove_file(&out);
    let args: Vec<OsString> = vec![
        "stream".into(),
        "--format".into(),
        "jsonl".into(),
        "-o".into(),
        out.clone().into(),
        "--".into(),
        "sh".into(),
        "-c".into(),
        "exit 7".into(),
    ];
    let run = run_mmtrace_raw(&args, MMTRACE_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        run.status.code(),
        Some(7),
        "`{}` should exit with sh's status 7, got {}; stderr:\n{}",
        run.command,
        run.status,
        run.stderr
    );
    let events = read_jsonl(&out).unwrap_or_else(|e| panic!("{e}"));
    let exits: Vec<&Value> = events.iter().filter(|e| kind(e) == "exit").collect();
    assert!(
        exits.iter().any(|e| fi64(e, "code") == Some(7)),
        "no `exit` event with code 7 in {}: {exits:?}",
        out.display()
    );
    let summary = closing_summary(&run.stderr).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        summary.end.as_deref(),
        Some("command exited (code 7)"),
        "{summary:?}"
    );
}
