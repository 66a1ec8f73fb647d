//! `mmtrace export --to perfetto`: records the test workload, exports its
//! v2 timeline and reads the trace back with Perfetto's own schema (the
//! `perfetto` Python package's generated classes, which `cargo xtask setup`
//! installs into target/perfetto-py; the reader is tests/perfetto/check.py):
//! no field the schema does not know, every region a slice from its birth
//! to its death with its arguments, under its kind's lane under its
//! process, every instant, and every counter sample with its value.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use tests::{parse_jsonl, run_mmtrace_raw, run_record, workspace_dir};

/// The trace as Perfetto's schema reads it (see tests/perfetto/check.py).
fn read_with_perfetto_schema(trace: &Path) -> Value {
    let root = workspace_dir();
    let python = root.join("target/perfetto-py/bin/python");
    assert!(
        python.exists(),
        "{} is missing: `cargo xtask setup` installs Perfetto's Python package there",
        python.display()
    );
    let out = Command::new(&python)
        .arg(root.join("tests/perfetto/check.py"))
        .arg(trace)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    assert!(
        out.status.success(),
        "check.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// How many times each item occurs.
fn tally<T: Ord>(items: impl IntoIterator<Item = T>) -> BTreeMap<T, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Records `cmd`, exports the timeline and checks the trace against it.
fn export_checked(name: &str, record_args: &[&str], cmd: &[OsString]) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mmtrace-export-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("timeline.jsonl");
    let run = run_record(&out, record_args, cmd).unwrap_or_else(|e| panic!("{e}"));
    assert!(run.status.success(), "{name}: {}", run.stderr);
    let lines = parse_jsonl(&std::fs::read_to_string(&out).unwrap()).unwrap();

    let trace = dir.join("trace.pftrace");
    let args: Vec<OsString> = vec![
        "export".into(),
        out.clone().into(),
        "--to".into(),
        "perfetto".into(),
        "-o".into(),
        trace.clone().into(),
    ];
    let run = run_mmtrace_raw(&args, std::time::Duration::from_secs(60)).unwrap();
    assert!(run.status.success(), "{name}: {}", run.stderr);
    assert!(
        run.stderr.contains("mmtrace: wrote "),
        "{name}: {}",
        run.stderr
    );
    // Never overwritten.
    let again = run_mmtrace_raw(&args, std::time::Duration::from_secs(60)).unwrap();
    assert_eq!(again.status.code(), Some(2), "{name}: {}", again.stderr);

    let doc = read_with_perfetto_schema(&trace);
    assert_eq!(
        doc["unknown_fields"], 0,
        "{name}: fields Perfetto does not know"
    );
    assert_eq!(
        doc["errors"],
        Value::Array(vec![]),
        "{name}: {}",
        doc["errors"]
    );
    check_against_timeline(&lines, &doc);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn workload_exports_to_perfetto() {
    tests::needs_root!();
    let report = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mmtrace-export-report-{}.json", std::process::id()));
    let cmd: Vec<OsString> = vec![
        env!("CARGO_BIN_EXE_workload").into(),
        "--report".into(),
        report.clone().into(),
        "--pause-ms".into(),
        "50".into(),
    ];
    export_checked("workload", &["--reconcile-interval", "0.05"], &cmd);
    let _ = std::fs::remove_file(report);
}

/// `record --perfetto` writes the trace beside the timeline, the same as
/// an export of it; an existing file there is refused before anything is
/// traced.
#[test]
fn record_writes_the_perfetto_trace_too() {
    tests::needs_root!();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mmtrace-export-{}-record", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("timeline.jsonl");
    let trace = dir.join("trace.pftrace");
    let trace_arg = trace.to_str().unwrap();
    let cmd: Vec<OsString> = vec!["python3".into(), "-c".into(), "import json".into()];
    let run = run_record(&out, &["--perfetto", trace_arg], &cmd).unwrap_or_else(|e| panic!("{e}"));
    assert!(run.status.success(), "{}", run.stderr);
    assert!(run.stderr.contains("mmtrace: wrote "), "{}", run.stderr);
    let lines = parse_jsonl(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let doc = read_with_perfetto_schema(&trace);
    assert_eq!(doc["unknown_fields"], 0);
    assert_eq!(doc["errors"], Value::Array(vec![]), "{}", doc["errors"]);
    check_against_timeline(&lines, &doc);
    // Refused at once when the trace would overwrite a file.
    let again = dir.join("again.jsonl");
    let run =
        run_record(&again, &["--perfetto", trace_arg], &cmd).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    assert!(!again.exists(), "nothing recorded");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn python3_exports_to_perfetto() {
    tests::needs_root!();
    let cmd: Vec<OsString> = vec![
        "python3".into(),
        "-c".into(),
        "import json, zlib; x = [bytearray(1 << 20) for _ in range(16)]".into(),
    ];
    export_checked("python3", &[], &cmd);
}

#[test]
fn a_c_compile_exports_to_perfetto() {
    tests::needs_root!();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mmtrace-export-cc-src-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("prog.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include <stdlib.h>\n\
         int main(void) { char *p = malloc(1 << 20); p[0] = 1; printf(\"%d\\n\", p[0]); return 0; }\n",
    )
    .unwrap();
    let cmd: Vec<OsString> = vec![
        "cc".into(),
        "-O2".into(),
        src.into(),
        "-o".into(),
        dir.join("prog").into(),
    ];
    export_checked("cc", &[], &cmd);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The trace `doc` (as check.py read it) holds what the timeline `lines`
/// says, record for record.
fn check_against_timeline(lines: &[Value], doc: &Value) {
    let tracks = doc["tracks"].as_object().unwrap();
    let track = |uuid: &Value| &tracks[&uuid.as_u64().unwrap().to_string()];
    // Processes: one track each, with its pid.
    let mut pids_by_proc = BTreeMap::new();
    for l in lines.iter().filter(|l| l["proc"].is_u64()) {
        pids_by_proc.insert(l["proc"].as_u64().unwrap(), l["pid"].as_u64().unwrap());
    }
    let process_tracks: Vec<u64> = tracks.values().filter_map(|t| t["pid"].as_u64()).collect();
    assert_eq!(
        tally(process_tracks),
        tally(pids_by_proc.values().copied()),
        "process tracks by pid"
    );

    // Regions: a slice from birth to death, named by path (or kind) and
    // range, with the arguments of its birth and death, on a track under
    // its kind's lane under its process.
    let mut born: BTreeMap<(u64, u64), &Value> = BTreeMap::new();
    let mut want = Vec::new();
    let mut want_instants = Vec::new();
    let mut want_uncertain = Vec::new();
    let mut want_counters: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for l in lines {
        let key = (
            l["proc"].as_u64().unwrap_or(0),
            l["region"].as_u64().unwrap_or(0),
        );
        match (l["type"].as_str().unwrap_or(""), l["op"].as_str()) {
            ("region", Some("born")) => {
                born.insert(key, l);
            }
            ("region", Some("died" | "end")) => {
                let b = born.remove(&key).expect("a region ends after its birth");
                let kind = b["born"]["kind"].as_str().unwrap_or("anon");
                let range = format!("{}-{}", s(&b["start"]), s(&b["end"]));
                let name = match b["born"]["path"].as_str() {
                    Some(path) => format!("{path} {range}"),
                    None => format!("[{kind}] {range}"),
                };
                want.push((
                    name,
                    b["t_ns"].as_u64().unwrap(),
                    l["t_ns"].as_u64().unwrap(),
                    s(&b["perms"]),
                    s(&b["cause"]),
                    s(&l["cause"]),
                    format!("{kind} {range}"),
                    kind.to_owned(),
                    b["pid"].as_u64().unwrap(),
                ));
            }
            ("region", Some(op)) => want_instants.push(op.to_owned()),
            ("process", _) if l["event"] == "start" && l["seeded_by"] == "fork" => {
                want_instants.push("fork".to_owned());
            }
            ("process", _) => want_instants.push(s(&l["event"])),
            ("drift", _) => want_instants.push("drift".to_owned()),
            ("lost", _) => want_instants.push("lost".to_owned()),
            ("uncertain", _) => match l["to_ns"].as_u64() {
                Some(to) => want_uncertain.push((l["from_ns"].as_u64().unwrap(), to)),
                None => want_instants.push("uncertain".to_owned()),
            },
            ("counters", _) => {
                let t = l["t_ns"].as_u64().unwrap();
                for (track, field) in [
                    ("mem.mapped", "mapped"),
                    ("mem.heap", "heap"),
                    ("mem.stack", "stack"),
                    ("mem.rss", "rss"),
                ] {
                    if let Some(v) = l[field].as_u64() {
                        want_counters.entry(track).or_default().push((t, v));
                    }
                }
            }
            _ => {}
        }
    }
    assert!(born.is_empty(), "regions never ended: {born:?}");
    assert!(want.len() > 10, "{} regions", want.len());
    let slices = doc["slices"].as_array().unwrap();
    let mut got = Vec::new();
    let mut got_uncertain = Vec::new();
    for sl in slices {
        let t = track(&sl["track"]);
        if t["name"] == "uncertain" {
            got_uncertain.push((sl["begin"].as_u64().unwrap(), sl["end"].as_u64().unwrap()));
            continue;
        }
        let lane = track(&t["parent"]);
        let process = track(&lane["parent"]);
        got.push((
            s(&sl["name"]),
            sl["begin"].as_u64().unwrap(),
            sl["end"].as_u64().unwrap(),
            s(&sl["args"]["perms"]),
            s(&sl["args"]["born_by"]),
            s(&sl["end_args"]["died_by"]),
            s(&t["name"]),
            s(&lane["name"]),
            process["pid"].as_u64().unwrap(),
        ));
    }
    want.sort();
    got.sort();
    assert_eq!(got.len(), want.len(), "region slices");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(
            g, w,
            "region slice (name, begin, end, perms, born_by, died_by, track, lane, pid)"
        );
    }
    want_uncertain.sort_unstable();
    got_uncertain.sort_unstable();
    assert_eq!(got_uncertain, want_uncertain, "settled uncertain intervals");

    let got_instants = doc["instants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| s(&i["name"]));
    assert_eq!(
        tally(got_instants),
        tally(want_instants),
        "instants by name"
    );

    // Counter samples, with their values, per counter name.
    let mut got_counters: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for (uuid, samples) in doc["counters"].as_object().unwrap() {
        let name = s(&tracks[uuid]["name"]);
        if name == "faults/s" {
            continue;
        }
        for sample in samples.as_array().unwrap() {
            let v = sample[1].as_f64().unwrap();
            got_counters
                .entry(name.clone())
                .or_default()
                .push((sample[0].as_u64().unwrap(), v as u64));
        }
    }
    assert!(!want_counters.is_empty(), "the workload was sampled");
    for (name, mut want) in want_counters {
        let mut got = got_counters.remove(name).unwrap_or_default();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want, "{name} samples");
    }
}
