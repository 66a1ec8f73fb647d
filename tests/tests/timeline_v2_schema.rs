//! `docs/timeline-v2.schema.json` is a valid JSON Schema (draft 2020-12),
//! strict (no unknown field, required fields required), and every line of
//! what the real `mmtrace record` writes (v2, JSON Lines) validates against
//! it; the recording is whole: a header first, an end record last whose
//! totals agree with the lines.

use std::path::PathBuf;

use serde_json::{json, Value};
use tests::{parse_jsonl, run_mmtrace_raw, workspace_dir, MMTRACE_TIMEOUT};

fn schema() -> Value {
    let path = workspace_dir().join("docs").join("timeline-v2.schema.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema())
        .unwrap_or_else(|e| panic!("cannot build a validator from the schema: {e}"))
}

fn errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| {
            let at = e.instance_path().to_string();
            format!("{}: {e}", if at.is_empty() { "/" } else { &at })
        })
        .collect()
}

#[test]
fn schema_is_a_valid_draft_2020_12_schema() {
    let s = schema();
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    if let Err(e) = jsonschema::meta::validate(&s) {
        panic!("not a valid draft 2020-12 schema: {e}");
    }
}

/// A region's death, as mmtrace writes it.
fn died() -> Value {
    json!({
        "type": "region", "t_ns": 5, "proc": 1, "pid": 42, "region": 3, "op": "died",
        "start": "0x1000", "end": "0x3000", "perms": "rw-p", "cause": "munmap",
        "faults": {
            "total": 2, "read": 1, "write": 1, "exec": 0, "present": 0, "first_ns": 4,
            "last_ns": 4, "touched_bytes": 4096, "mapped_bytes": 8192
        }
    })
}

#[test]
fn records_are_strict() {
    let v = validator();
    assert!(errors(&v, &died()).is_empty(), "{:?}", errors(&v, &died()));
    let mut extra = died();
    extra["colour"] = json!("red");
    assert!(!errors(&v, &extra).is_empty());
    let mut missing = died();
    missing.as_object_mut().unwrap().remove("region");
    assert!(!errors(&v, &missing).is_empty());
    let mut bad = died();
    bad["start"] = json!("4096");
    assert!(!errors(&v, &bad).is_empty());
    let mut op = died();
    op["op"] = json!("vanished");
    assert!(!errors(&v, &op).is_empty());
    let mut kind = died();
    kind["type"] = json!("regions");
    assert!(!errors(&v, &kind).is_empty());
}

fn scratch(name: &str) -> PathBuf {
    let dir = workspace_dir().join("target").join("tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "mmtrace-schema2-{}-{name}.jsonl",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    path
}

/// `mmtrace record --output FILE -- CMD...`, then validates each line.
fn record_and_validate(name: &str, cmd: &[&str]) {
    let out = scratch(name);
    let mut args = vec!["record".to_string(), "--output".to_string()];
    args.push(out.display().to_string());
    args.push("--".to_string());
    args.extend(cmd.iter().map(|s| s.to_string()));
    let run = run_mmtrace_raw(&args, MMTRACE_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(run.status.success(), "`{}`: {}", run.command, run.stderr);
    let text = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("{e}"));
    assert!(text.ends_with('\n'));
    let lines = parse_jsonl(&text).unwrap_or_else(|e| panic!("{e}"));
    let v = validator();
    let mut bad = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        for e in errors(&v, l) {
            bad.push(format!("line {}: {e}\n    {l}", i + 1));
        }
    }
    assert!(
        bad.is_empty(),
        "{} lines of {} do not validate:\n{}",
        bad.len(),
        out.display(),
        bad.join("\n")
    );
    // A header first, an end last, and nothing of either between.
    assert_eq!(lines[0]["type"], "header");
    assert_eq!(lines[0]["command"], json!(cmd));
    let end = lines.last().unwrap();
    assert_eq!(end["type"], "end", "{}", out.display());
    let count = |t: &str| lines.iter().filter(|l| l["type"] == t).count() as u64;
    assert_eq!(count("header") + count("end"), 2);
    assert_eq!(end["region_records"], count("region"));
    assert_eq!(end["checks"], count("check"));
    assert_eq!(end["drift"], count("drift"));
    let born = lines
        .iter()
        .filter(|l| l["type"] == "region" && l["op"] == "born")
        .count() as u64;
    assert_eq!(end["regions"], born);
    assert!(born > 0);
    // Every region's records name one born earlier in its process, and
    // each region ends once (died or end).
    let mut open = std::collections::BTreeSet::new();
    for l in lines.iter().filter(|l| l["type"] == "region") {
        let key = (l["proc"].as_u64().unwrap(), l["region"].as_u64().unwrap());
        match l["op"].as_str().unwrap() {
            "born" => assert!(open.insert(key), "born twice: {l}"),
            "died" | "end" => assert!(open.remove(&key), "ends unborn: {l}"),
            _ => assert!(open.contains(&key), "changes unborn: {l}"),
        }
    }
    assert!(open.is_empty(), "regions never ended: {open:?}");
    let _ = std::fs::remove_file(&out);
}

#[test]
fn recording_of_true_validates() {
    tests::needs_root!();
    record_and_validate("true", &["/bin/true"]);
}

#[test]
fn recording_of_python_validates() {
    tests::needs_root!();
    record_and_validate("python", &["/usr/bin/python3", "-c", "import json"]);
}
