//! `mmtrace record`'s v2 recording read as it is, line by line (no
//! assembly into v1): replaying the region records of the workload up to
//! each of its pauses gives exactly the /proc/self/maps it read there.
//!
//! The workload (src/bin/workload.rs) runs with `--pause-ms 300` and
//! reports its maps at each pause with CLOCK_MONOTONIC times (see
//! tests/record.rs, which checks the same through the v1 shape).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use serde_json::Value;
use tests::{parse_jsonl, run_record, Report};

/// A region's state as records tell it: (end, perms, path).
type State = (u64, String, Option<String>);

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn addr(v: &Value) -> u64 {
    tests::addr(v.as_str().unwrap_or("0x0"))
}

/// The regions of process `proc` alive at `t` (ns since the start), by
/// start address, from the records alone.
fn alive_at(lines: &[Value], proc: u64, t: u64) -> BTreeMap<u64, State> {
    // region id -> (start, state, path)
    let mut live: BTreeMap<u64, (u64, State)> = BTreeMap::new();
    let mut paths: BTreeMap<u64, Option<String>> = BTreeMap::new();
    for l in lines {
        if l["type"] != "region" || num(&l["proc"]) != proc || num(&l["t_ns"]) > t {
            continue;
        }
        let id = num(&l["region"]);
        let op = l["op"].as_str().unwrap_or("");
        if op == "born" {
            paths.insert(id, l["born"]["path"].as_str().map(str::to_string));
        }
        match op {
            "died" => {
                live.remove(&id);
            }
            "end" => {}
            _ => {
                let path = paths.get(&id).cloned().flatten();
                let state = (
                    addr(&l["end"]),
                    l["perms"].as_str().unwrap_or("").to_string(),
                    path,
                );
                live.insert(id, (addr(&l["start"]), state));
            }
        }
    }
    live.into_values().collect()
}

#[test]
fn regions_alive_at_each_pause_are_the_maps() {
    tests::needs_root!();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mmtrace-record-v2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("timeline.jsonl");
    let report_path = dir.join("report.json");
    let cmd: Vec<OsString> = vec![
        env!("CARGO_BIN_EXE_workload").into(),
        "--report".into(),
        report_path.clone().into(),
        "--pause-ms".into(),
        "300".into(),
    ];
    let run =
        run_record(&out, &["--reconcile-interval", "0.05"], &cmd).unwrap_or_else(|e| panic!("{e}"));
    assert!(run.status.success(), "{}", run.stderr);
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let lines = parse_jsonl(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(lines[0]["schema"], tests::TIMELINE_V2);
    assert_eq!(lines.last().unwrap()["type"], "end");
    let start = num(&lines[0]["monotonic_start_ns"]);
    // The workload's process number (a pid is not enough: it may be reused).
    let proc = lines
        .iter()
        .find(|l| l["type"] == "process" && l["pid"] == report.pid)
        .map(|l| num(&l["proc"]))
        .expect("the workload's process");
    let mut failures = Vec::new();
    for pause in &report.pauses {
        let t = pause.after_ns - start;
        let model = alive_at(&lines, proc, t);
        let maps: BTreeMap<u64, (u64, String)> = pause
            .maps
            .iter()
            .map(|m| {
                (
                    tests::addr(&m.start),
                    (tests::addr(&m.end), m.perms.clone()),
                )
            })
            .collect();
        let model_short: BTreeMap<u64, (u64, String)> = model
            .iter()
            .map(|(s, (e, p, _))| (*s, (*e, p.clone())))
            .collect();
        if model_short != maps {
            let only_model: Vec<_> = model_short
                .iter()
                .filter(|(s, v)| maps.get(s) != Some(v))
                .map(|(s, (e, p))| format!("{s:#x}-{e:#x} {p}"))
                .collect();
            let only_maps: Vec<_> = maps
                .iter()
                .filter(|(s, v)| model_short.get(s) != Some(v))
                .map(|(s, (e, p))| format!("{s:#x}-{e:#x} {p}"))
                .collect();
            failures.push(format!(
                "pause {:?} (t_ns {t}): only in the records {only_model:?}, only in the maps {only_maps:?}",
                pause.name
            ));
        }
        // Paths agree where the maps name a file.
        for m in &pause.maps {
            let (Some(path), Some((_, _, mp))) = (&m.path, model.get(&tests::addr(&m.start)))
            else {
                continue;
            };
            let strip = |p: &str| p.trim_end_matches(" (deleted)").to_string();
            if m.inode != 0 && mp.as_deref().map(strip) != Some(strip(path)) {
                failures.push(format!(
                    "pause {:?}: {} is {mp:?} in the records",
                    pause.name, m.start
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        out.display()
    );
}
