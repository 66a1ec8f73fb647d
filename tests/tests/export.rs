//! `mmtrace export --to perfetto`: records the test workload, exports its
//! v2 timeline and reads the trace back with an independent decoder
//! (`protoc --decode_raw`, installed by `cargo xtask setup`): every region
//! is a slice that begins and ends, every process has its track, and the
//! instants and counters are all there.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use tests::{parse_jsonl, run_mmtrace_raw, run_record};

#[test]
fn workload_exports_to_perfetto() {
    tests::needs_root!();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mmtrace-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("timeline.jsonl");
    let report_path = dir.join("report.json");
    let cmd: Vec<OsString> = vec![
        env!("CARGO_BIN_EXE_workload").into(),
        "--report".into(),
        report_path.into(),
        "--pause-ms".into(),
        "50".into(),
    ];
    let run =
        run_record(&out, &["--reconcile-interval", "0.05"], &cmd).unwrap_or_else(|e| panic!("{e}"));
    assert!(run.status.success(), "{}", run.stderr);
    let lines = parse_jsonl(&std::fs::read_to_string(&out).unwrap()).unwrap();

    let trace = dir.join("trace.pftrace");
    let _ = std::fs::remove_file(&trace);
    let args: Vec<OsString> = vec![
        "export".into(),
        out.clone().into(),
        "--to".into(),
        "perfetto".into(),
        "-o".into(),
        trace.clone().into(),
    ];
    let run = run_mmtrace_raw(&args, std::time::Duration::from_secs(60)).unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    // Never overwritten.
    let again = run_mmtrace_raw(&args, std::time::Duration::from_secs(60)).unwrap();
    assert_eq!(again.status.code(), Some(2), "{}", again.stderr);

    let decoded = Command::new("protoc")
        .arg("--decode_raw")
        .stdin(std::fs::File::open(&trace).unwrap())
        .output()
        .expect("protoc (cargo xtask setup installs it)");
    assert!(decoded.status.success());
    let text = String::from_utf8_lossy(&decoded.stdout);
    // Trace.packet (1) > TracePacket.track_event (11) > TrackEvent.type (9),
    // at the third level of indentation.
    let count = |l: &str| text.lines().filter(|x| *x == l).count();
    let (mut born, mut gone, mut instants, mut counters) = (0, 0, 0, 0);
    let mut procs = std::collections::HashSet::new();
    for l in &lines {
        let t = l["type"].as_str().unwrap_or("");
        if let Some(p) = l["proc"].as_u64() {
            procs.insert(p);
        }
        match (t, l["op"].as_str()) {
            ("region", Some("born")) => born += 1,
            ("region", Some("died" | "end")) => gone += 1,
            ("region", _) | ("process", _) | ("drift", _) | ("uncertain", _) | ("lost", _) => {
                instants += 1
            }
            ("counters", _) => counters += 1,
            _ => {}
        }
    }
    assert!(born > 10, "{born} regions");
    assert_eq!(count("    9: 1"), born, "slice begins");
    assert_eq!(count("    9: 2"), gone, "slice ends");
    assert_eq!(born, gone, "every region ends");
    assert_eq!(count("    9: 3"), instants, "instants");
    assert!(count("    9: 4") >= 3 * counters, "counter samples");
    // Process descriptors: TrackDescriptor (60) > process (3).
    assert_eq!(count("    3 {"), procs.len(), "process tracks");
    let _ = std::fs::remove_dir_all(&dir);
}
