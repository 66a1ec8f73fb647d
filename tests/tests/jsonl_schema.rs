//! `docs/jsonl-v1.schema.json` is a valid JSON Schema (draft 2020-12) for
//! the lines of `mmtrace stream --format jsonl` (and `--regions`), as
//! strict as README says (each event's fields and no other), and the lines
//! the real mmtrace prints validate against it.
//!
//! Real streams are validated here (a program that makes every optional
//! field appear, the default fault summaries) and where a test binary
//! already has one: stream.rs (every event class, every fault), regions.rs
//! (region lines), lost.rs (lost lines), errors.rs (hostile names).

mod jsonl_check;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use jsonl_check::{assert_lines_valid, line_errors, schema, schema_path, validator};
use serde_json::{json, Value};
use tests::{
    is_ring_event, read_jsonl, run_mmtrace_raw, workspace_dir, MMTRACE_TIMEOUT, STREAM_EVENTS,
};

/// The fields of every line.
const HEAD: &[&str] = &["t_ns", "pid", "tid", "comm", "comm_hex", "event"];

/// The `event`s the schema knows: every raw stream event, and `region`.
fn schema_events() -> Vec<String> {
    schema()["properties"]["event"]["enum"]
        .as_array()
        .expect("an enum of events")
        .iter()
        .map(|e| e.as_str().expect("event names").to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// The schema itself
// ---------------------------------------------------------------------------

#[test]
fn schema_is_a_valid_draft_2020_12_schema() {
    let s = schema();
    assert_eq!(
        s["$schema"], "https://json-schema.org/draft/2020-12/schema",
        "the schema declares draft 2020-12"
    );
    if let Err(e) = jsonschema::meta::validate(&s) {
        panic!(
            "the schema is not a valid JSON Schema: {e} (at {})",
            e.instance_path()
        );
    }
    // And it compiles (every $ref resolves, every pattern is a regex).
    validator();
}

#[test]
fn every_event_is_a_closed_object() {
    let s = schema();
    let events = schema_events();
    let mut problems = Vec::new();
    for event in &events {
        let at = format!("#/$defs/{event}");
        let def = &s["$defs"][event];
        // The top level sends this event to its definition.
        let routed = s["allOf"].as_array().into_iter().flatten().any(|b| {
            b["if"]["properties"]["event"]["const"] == json!(event)
                && b["then"]["$ref"] == json!(at)
        });
        if !routed {
            problems.push(format!(
                "no `if event = {event:?} then {at}` at the top level"
            ));
        }
        if def["type"] != "object" || def["additionalProperties"] != false {
            problems.push(format!(
                "{at}: not an object with additionalProperties false"
            ));
        }
        if !def["description"].is_string() {
            problems.push(format!("{at}: no description"));
        }
        let props = def["properties"].as_object().cloned().unwrap_or_default();
        if def["properties"]["event"]["const"] != json!(event) {
            problems.push(format!("{at}: `event` is not the constant {event:?}"));
        }
        for h in HEAD {
            if !props.contains_key(*h) {
                problems.push(format!("{at}: no `{h}`"));
            }
        }
        for (name, p) in &props {
            if !p["description"].is_string() {
                problems.push(format!("{at}/properties/{name}: no description"));
            }
        }
        for r in def["required"].as_array().into_iter().flatten() {
            if !r.as_str().is_some_and(|r| props.contains_key(r)) {
                problems.push(format!("{at}: requires {r}, which it does not define"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The rows of README's JSONL table: event -> the cell of its fields.
fn readme_table() -> Vec<(String, String)> {
    let path = workspace_dir().join("README.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let section = text
        .split("\n### ")
        .find(|s| s.starts_with("JSON lines"))
        .expect("README has a `### JSON lines` section");
    section
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            match cells[..] {
                ["", event, fields, ""] if event.starts_with('`') => {
                    Some((event.trim_matches('`').to_string(), fields.to_string()))
                }
                _ => None,
            }
        })
        .collect()
}

#[test]
fn events_and_fields_are_those_of_readme() {
    let readme = readme_table();
    let readme_events: Vec<&str> = readme.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        readme_events, STREAM_EVENTS,
        "README's JSONL table and tests::STREAM_EVENTS list different events"
    );
    let mut with_region: Vec<&str> = STREAM_EVENTS.to_vec();
    with_region.push("region");
    assert_eq!(
        schema_events(),
        with_region,
        "the schema's events are not tests::STREAM_EVENTS and region"
    );
    // The kinds a lost line may name.
    let s = schema();
    let mut lost_kinds: Vec<Value> = STREAM_EVENTS
        .iter()
        .filter(|k| is_ring_event(k))
        .map(|k| json!(k))
        .collect();
    lost_kinds.push(Value::Null);
    assert_eq!(
        s["$defs"]["lost"]["properties"]["kind"]["enum"],
        json!(lost_kinds),
        "the kinds of lost lines"
    );
    // Every field the schema gives an event is in README's row for it
    // (the head, errno and the *_hex fields are described in the text).
    let mut undocumented = Vec::new();
    for (event, fields) in &readme {
        let props = s["$defs"][event]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("no $defs/{event} in the schema"));
        for name in props.keys() {
            let documented =
                fields.contains(&format!("`{name}`")) || fields.contains(&format!("`{name}:"));
            let elsewhere =
                HEAD.contains(&name.as_str()) || name == "errno" || name.ends_with("_hex");
            if !documented && !elsewhere {
                undocumented.push(format!("{event}.{name}"));
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "fields of the schema not in README's JSONL table: {undocumented:?}"
    );
}

/// Lines as mmtrace prints them (README's examples, tracer/src/output/
/// json.rs's unit tests, real runs), one or more of every kind.
fn good_lines() -> Vec<Value> {
    let head = |event: &str| json!({"t_ns": 500, "pid": 1234, "tid": 1236, "comm": "python3", "event": event});
    let line = |event: &str, body: Value| {
        let mut l = head(event);
        l.as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        l
    };
    vec![
        line(
            "brk",
            json!({"requested": "0x0", "old_brk": "0x55d00000", "new_brk": "0x55d00000"}),
        ),
        line(
            "mmap",
            json!({"addr": "0x0", "len": 8192, "prot": "rw-", "flags": "MAP_PRIVATE|MAP_ANONYMOUS", "fd": -1, "offset": 0, "ret": "0x7f2613717000"}),
        ),
        line(
            "mmap",
            json!({"addr": "0x0", "len": 1099511627776u64, "prot": "rw-", "flags": "MAP_PRIVATE|MAP_ANONYMOUS", "fd": -1, "offset": 0, "ret": null, "errno": "ENOMEM"}),
        ),
        line(
            "mmap",
            json!({"addr": "0x0", "len": 12288, "prot": "r--", "flags": "MAP_PRIVATE", "fd": 3, "offset": 0, "ret": "0x7f2613711000", "path": "/tmp/mmtrace-workload-834.dat", "dev": "fe:00", "ino": 10010689}),
        ),
        line(
            "mmap",
            json!({"addr": "0x0", "len": 4096, "prot": "r--", "flags": "MAP_SHARED", "fd": 4, "offset": 0, "ret": "0x7f0000000000", "path": "deep/na\u{fffd}me", "path_hex": "646565702f6e61ff6d65", "dev": "08:00", "ino": 7, "path_truncated": true}),
        ),
        line(
            "mmap",
            json!({"addr": "0x0", "len": 4096, "prot": "rw-|PROT_GROWSDOWN", "flags": "MAP_PRIVATE|MAP_ANONYMOUS|MAP_HUGETLB|MAP_HUGE_2MB|0x200", "fd": -1, "offset": 0, "ret": "0x1000"}),
        ),
        line(
            "munmap",
            json!({"addr": "0x7f261370e000", "len": 35603, "ret": 0}),
        ),
        line(
            "munmap",
            json!({"addr": "0x1001", "len": 4096, "ret": null, "errno": "EINVAL"}),
        ),
        line(
            "mremap",
            json!({"old_addr": "0x1000", "old_len": 4096, "new_len": 8192, "flags": "MREMAP_MAYMOVE", "ret": "0x9000"}),
        ),
        line(
            "mremap",
            json!({"old_addr": "0x1000", "old_len": 4096, "new_len": 8192, "flags": "MREMAP_MAYMOVE|MREMAP_FIXED", "new_addr": "0x20000", "ret": null, "errno": "ENOMEM"}),
        ),
        line(
            "mremap",
            json!({"old_addr": "0x1", "old_len": 4096, "new_len": 8192, "flags": "0", "ret": null, "errno": "EINVAL"}),
        ),
        line(
            "mprotect",
            json!({"addr": "0x1000", "len": 4096, "prot": "rwx", "ret": null, "errno": "EACCES"}),
        ),
        line(
            "pkey_mprotect",
            json!({"addr": "0x1000", "len": 4096, "prot": "r--", "pkey": -1, "ret": 0}),
        ),
        line(
            "pkey_mprotect",
            json!({"addr": "0x1000", "len": 4096, "prot": "rw-", "pkey": 3, "ret": null, "errno": "EINVAL"}),
        ),
        line(
            "madvise",
            json!({"addr": "0x1000", "len": 4096, "advice": "MADV_DONTNEED", "ret": 0}),
        ),
        line("mlock", json!({"addr": "0x1000", "len": 8192, "ret": 0})),
        line(
            "mlock2",
            json!({"addr": "0x1000", "len": 4096, "flags": "MLOCK_ONFAULT", "ret": null, "errno": "ENOMEM"}),
        ),
        line("munlock", json!({"addr": "0x1000", "len": 4096, "ret": 0})),
        line(
            "mlockall",
            json!({"flags": "MCL_CURRENT|MCL_FUTURE", "ret": 0}),
        ),
        line("munlockall", json!({"ret": 0})),
        line(
            "mseal",
            json!({"addr": "0x1000", "len": 4096, "flags": 0, "ret": null, "errno": "EPERM"}),
        ),
        line(
            "shmat",
            json!({"shmid": 32769, "addr": "0x0", "flags": "SHM_RDONLY", "ret": "0x7f0000000000"}),
        ),
        line(
            "shmat",
            json!({"shmid": 5, "addr": "0x7f0000000000", "flags": "0", "ret": null, "errno": "EINVAL"}),
        ),
        line("shmdt", json!({"addr": "0x7f0000000000", "ret": 0})),
        line(
            "remap_file_pages",
            json!({"addr": "0x1000", "size": 4096, "prot": "---", "pgoff": 3, "flags": "0", "ret": 0}),
        ),
        line(
            "userfaultfd",
            json!({"op": "register", "fd": 3, "addr": "0x7f0000000000", "len": 16384, "mode": "MISSING", "ret": 0}),
        ),
        line(
            "userfaultfd",
            json!({"op": "unregister", "fd": 3, "addr": null, "len": null, "mode": "0", "ret": null, "errno": "EFAULT"}),
        ),
        line(
            "madvise",
            json!({"addr": "0x1000", "len": 4096, "advice": "77", "ret": null, "errno": "EINVAL"}),
        ),
        line(
            "fault",
            json!({"addr": "0xdead000", "ip": "0x401000", "access": "exec", "present": false}),
        ),
        line(
            "fault_summary",
            json!({"interval_ns": 1000000000, "read": 10, "write": 5, "exec": 1, "present": 2, "total": 16}),
        ),
        line(
            "stack",
            json!({"old_start": "0x7ffd0000", "new_start": "0x7ffcf000", "source": "fexit"}),
        ),
        line(
            "exec",
            json!({"path": "/bin/\u{fffd}", "path_hex": "2f62696e2ffe", "old_pid": 1236}),
        ),
        line("fork", json!({"child_pid": 99})),
        line("exit", json!({"code": 3, "signal": null})),
        line("exit", json!({"code": null, "signal": "SIGKILL"})),
        line("oom_kill", json!({"victim_pid": 4321})),
        json!({"t_ns": 5, "pid": 0, "tid": 0, "comm": "", "event": "lost", "count": 7, "kind": "mmap"}),
        json!({"t_ns": 5, "pid": 0, "tid": 0, "comm": "", "event": "lost", "count": 7, "kind": null}),
        json!({"t_ns": 5, "pid": 7, "tid": 7, "comm": "a\u{fffd}b\u{1b}", "comm_hex": "61ff621b", "event": "exit", "code": 0, "signal": null}),
        line(
            "region",
            json!({"op": "born", "region": 3, "start": "0x7f2613617000", "end": "0x7f2613717000", "perms": "rw-p", "kind": "anon", "cause": "mmap"}),
        ),
        line(
            "region",
            json!({"op": "grow", "region": 3, "start": "0x1000", "end": "0x3000", "perms": "rw-p", "kind": "heap", "path": "[heap]", "old_start": "0x1000", "old_end": "0x2000"}),
        ),
        line(
            "region",
            json!({"op": "protect", "region": 4, "start": "0x1000", "end": "0x2000", "perms": "r--p", "kind": "file", "path": "/usr/lib/libc.so.6"}),
        ),
        line(
            "region",
            json!({"op": "died", "region": 4, "start": "0x1000", "end": "0x2000", "perms": "r--p", "kind": "file", "path": "/x/\u{fffd}", "path_hex": "2f782fff", "cause": "munmap"}),
        ),
    ]
}

#[test]
fn documented_lines_are_valid() {
    let lines = good_lines();
    let kinds: BTreeSet<&str> = lines.iter().filter_map(|l| l["event"].as_str()).collect();
    assert_eq!(
        kinds.len(),
        schema_events().len(),
        "an example of every event: {kinds:?}"
    );
    assert_lines_valid(&lines, "the hand-written lines");
}

#[test]
fn lines_that_break_the_format_are_invalid() {
    let good = good_lines();
    let find = |event: &str, has: &str| -> Value {
        good.iter()
            .find(|l| l["event"] == event && l.get(has).is_some())
            .unwrap_or_else(|| panic!("no {event} example with {has}"))
            .clone()
    };
    let with = |mut l: Value, field: &str, v: Value| {
        l[field] = v;
        l
    };
    let without = |mut l: Value, field: &str| {
        l.as_object_mut().unwrap().remove(field);
        l
    };
    let anon = find("mmap", "ret");
    let file = find("mmap", "ino");
    let region = |op: &str| -> Value {
        good.iter()
            .find(|l| l["event"] == "region" && l["op"] == op)
            .unwrap_or_else(|| panic!("no region example with op {op}"))
            .clone()
    };
    let cases: Vec<(Value, &str)> = vec![
        // A field no event has, or another event's field.
        (with(anon.clone(), "extra", json!(1)), "extra"),
        (with(anon.clone(), "child_pid", json!(1)), "child_pid"),
        (with(find("fork", "child_pid"), "code", json!(0)), "code"),
        // Wrong types.
        (with(anon.clone(), "len", json!("8192")), "/len"),
        (with(anon.clone(), "len", json!(-1)), "/len"),
        (with(anon.clone(), "fd", json!(4294967295u64)), "/fd"),
        (with(anon.clone(), "t_ns", json!(1.5)), "/t_ns"),
        (with(anon.clone(), "pid", json!("1234")), "/pid"),
        (with(anon.clone(), "prot", json!(3)), "/prot"),
        (with(anon.clone(), "flags", json!(34)), "/flags"),
        (
            with(find("fault", "present"), "present", json!(0)),
            "/present",
        ),
        // Values not in the documented format.
        (with(anon.clone(), "addr", json!("0X0")), "/addr"),
        (with(anon.clone(), "ret", json!("7f2613717000")), "/ret"),
        (with(anon.clone(), "ret", json!("0x07f2613717000")), "/ret"),
        (
            with(anon.clone(), "ret", json!(139_802_169_028_608u64)),
            "/ret",
        ),
        (
            with(anon.clone(), "prot", json!("PROT_READ|PROT_WRITE")),
            "/prot",
        ),
        (with(anon.clone(), "prot", json!("wr-")), "/prot"),
        (
            with(anon.clone(), "flags", json!("MAP_PRIVATE | MAP_ANONYMOUS")),
            "/flags",
        ),
        (with(anon.clone(), "flags", json!("")), "/flags"),
        (with(file.clone(), "dev", json!("254:0")), "/dev"),
        (
            with(find("fault", "access"), "access", json!("rw")),
            "/access",
        ),
        (
            with(find("stack", "source"), "source", json!("kprobe")),
            "/source",
        ),
        (
            with(find("madvise", "advice"), "advice", json!("dontneed")),
            "/advice",
        ),
        (with(find("exit", "signal"), "signal", json!(9)), "/signal"),
        // A missing field.
        (without(anon.clone(), "fd"), "\"fd\" is a required property"),
        (
            without(anon.clone(), "comm"),
            "\"comm\" is a required property",
        ),
        (
            without(find("exit", "code"), "signal"),
            "\"signal\" is a required property",
        ),
        // ret and errno go together.
        (with(anon.clone(), "errno", json!("ENOMEM")), "errno"),
        (with(anon.clone(), "ret", Value::Null), "errno"),
        (with(find("munmap", "ret"), "ret", json!(1)), "/ret"),
        // File fields go together, the *_hex fields with their string.
        (without(file.clone(), "ino"), "ino"),
        (with(anon.clone(), "path_truncated", json!(true)), "path"),
        (
            with(file.clone(), "path_truncated", json!(false)),
            "path_truncated",
        ),
        (with(file.clone(), "path_hex", json!("2f")), "path"),
        (
            with(anon.clone(), "comm_hex", json!("707974686f6e33")),
            "comm",
        ),
        (with(anon.clone(), "comm_hex", json!("7Z")), "comm_hex"),
        // new_addr exactly with MREMAP_FIXED.
        (
            with(find("mremap", "ret"), "new_addr", json!("0x20000")),
            "new_addr",
        ),
        (without(find("mremap", "new_addr"), "new_addr"), "new_addr"),
        // One of code and signal.
        (
            with(find("exit", "code"), "signal", json!("SIGKILL")),
            "signal",
        ),
        (with(find("exit", "code"), "code", Value::Null), "signal"),
        // Lost lines name a kind of event.
        (
            with(find("lost", "count"), "kind", json!("fault_summary")),
            "/kind",
        ),
        (with(find("lost", "count"), "count", json!(0)), "/count"),
        // Unknown events.
        (with(anon.clone(), "event", json!("mmap2")), "/event"),
        (
            without(anon.clone(), "event"),
            "\"event\" is a required property",
        ),
        // Region lines: op, cause and the old range go together.
        (with(region("born"), "op", json!("grew")), "/op"),
        (with(region("born"), "cause", json!("munmap")), "/cause"),
        (without(region("born"), "cause"), "cause"),
        (with(region("grow"), "cause", json!("brk")), "cause"),
        (without(region("grow"), "old_end"), "old_end"),
        (
            with(region("protect"), "old_start", json!("0x1000")),
            "old_start",
        ),
        (with(region("protect"), "perms", json!("r--")), "/perms"),
        (with(region("protect"), "kind", json!("mmap")), "/kind"),
        (with(region("protect"), "region", json!("4")), "/region"),
    ];
    let mut problems = Vec::new();
    for (line, needle) in &cases {
        let errs = line_errors(line);
        if errs.is_empty() {
            problems.push(format!("valid, but should not be: {line}"));
        } else if !errs.iter().any(|e| e.contains(needle)) {
            problems.push(format!(
                "invalid, but no error mentions {needle:?}: {line}\n    {}",
                errs.join("\n    ")
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------
// Real streams
// ---------------------------------------------------------------------------

fn scratch(name: &str) -> PathBuf {
    let dir = workspace_dir().join("target").join("tmp").join(format!(
        "mmtrace-jsonl-schema-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `mmtrace stream --format jsonl -o OUT OPTIONS... -- CMD...`: its lines,
/// after checking it exited with 0.
fn stream(out: &Path, options: &[&str], cmd: &[OsString]) -> Vec<Value> {
    let mut args: Vec<OsString> = vec!["stream".into(), "--format".into(), "jsonl".into()];
    args.extend(options.iter().map(OsString::from));
    args.extend(["-o".into(), out.into(), "--".into()]);
    args.extend(cmd.iter().cloned());
    let run = run_mmtrace_raw(&args, MMTRACE_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        run.status.success(),
        "`{}` failed: {}\nstderr:\n{}",
        run.command,
        run.status,
        run.stderr
    );
    read_jsonl(out).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_stream_with_every_optional_field_validates() {
    tests::needs_root!();
    let dir = scratch("oddities");
    let out = dir.join("out.jsonl");
    let events = stream(
        &out,
        &["--faults", "all"],
        &[
            env!("CARGO_BIN_EXE_oddities").into(),
            dir.join("files").into(),
        ],
    );
    assert_lines_valid(&events, &out.display().to_string());
    // The oddities program made each of these appear.
    let has = |what: &str, f: &dyn Fn(&Value) -> bool| {
        assert!(
            events.iter().any(f),
            "no line with {what} in {}",
            out.display()
        );
    };
    for event in ["mmap", "munmap", "mremap", "mprotect", "madvise"] {
        has(&format!("a failed {event}"), &|e| {
            e["event"] == event && e["ret"].is_null() && e["errno"].is_string()
        });
    }
    has("new_addr", &|e| {
        e["event"] == "mremap" && e["new_addr"].is_string()
    });
    has("path_hex", &|e| {
        e["event"] == "mmap" && e["path_hex"].is_string()
    });
    has("path_truncated", &|e| e["path_truncated"] == true);
    has("comm_hex", &|e| e["comm_hex"] == "6f6464ff636f6d6d");
    has("old_pid", &|e| {
        e["event"] == "exec" && e["old_pid"].is_u64()
    });
    has("an exit by SIGKILL", &|e| {
        e["event"] == "exit" && e["signal"] == "SIGKILL" && e["code"].is_null()
    });
    for event in ["fault", "fork", "exec", "exit", "brk"] {
        has(&format!("a {event} line"), &|e| e["event"] == event);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stream_of_fault_summaries_validates() {
    tests::needs_root!();
    let dir = scratch("summary");
    let out = dir.join("out.jsonl");
    let events = stream(
        &out,
        &["--faults", "summary", "--summary-interval", "0.1"],
        &[
            env!("CARGO_BIN_EXE_workload").into(),
            "--report".into(),
            dir.join("report.json").into(),
            "--pause-ms".into(),
            "150".into(),
        ],
    );
    assert_lines_valid(&events, &out.display().to_string());
    assert!(
        events.iter().any(|e| e["event"] == "fault_summary"),
        "no fault_summary line in {}",
        out.display()
    );
    assert!(
        events.iter().all(|e| e["event"] != "fault"),
        "single faults without --faults all in {}",
        out.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_schema_is_where_readme_says() {
    let readme = std::fs::read_to_string(workspace_dir().join("README.md")).unwrap();
    let rel = schema_path()
        .strip_prefix(workspace_dir())
        .unwrap()
        .display()
        .to_string();
    assert!(readme.contains(&rel), "README does not point to {rel}");
}
