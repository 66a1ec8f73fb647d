//! `mmtrace export --to perfetto`: records the test workload, exports its
//! v2 timeline and reads the trace back with Perfetto's own schema (the
//! `perfetto` Python package's generated classes, which `cargo xtask setup`
//! installs into target/perfetto-py; the reader is tests/perfetto/check.py):
//! no field the schema does not know, every region a slice from its birth
//! to its death with its arguments, under its kind's lane under its
//! process, every instant, and every counter sample with its value.

use std::ffi::OsString;
use std::path::Path;

use serde_json::Value;
use tests::viewers::{check_against_timeline, read_with_perfetto_schema};
use tests::{parse_jsonl, run_mmtrace_raw, run_record};

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
