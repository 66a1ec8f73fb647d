//! `docs/timeline-v1.schema.json` is a valid JSON Schema (draft 2020-12), it
//! is as strict as the contract says (every field required, no other field),
//! and what the real `mmtrace record --format v1` writes validates against
//! it.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tests::{run_mmtrace_raw, workspace_dir, MMTRACE_TIMEOUT};

fn schema_path() -> PathBuf {
    workspace_dir().join("docs").join("timeline-v1.schema.json")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn schema() -> Value {
    read_json(&schema_path())
}

fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema())
        .unwrap_or_else(|e| panic!("cannot build a validator from the schema: {e}"))
}

/// Every validation error of `doc`, one per line: `/json/pointer: message`.
fn errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| {
            let at = e.instance_path().to_string();
            format!("{}: {e}", if at.is_empty() { "/" } else { &at })
        })
        .collect()
}

/// Panics, listing every error, unless `doc` (read from `what`) validates.
fn assert_valid(doc: &Value, what: &str) {
    let errs = errors(&validator(), doc);
    assert!(
        errs.is_empty(),
        "{what} does not validate against {} ({} errors):\n  {}",
        schema_path().display(),
        errs.len(),
        errs.join("\n  ")
    );
}

/// The errors of `doc`, which must not validate; `needle` must be in one.
fn assert_invalid(doc: &Value, needle: &str) {
    let errs = errors(&validator(), doc);
    assert!(!errs.is_empty(), "expected validation errors for:\n{doc:#}");
    assert!(
        errs.iter().any(|e| e.contains(needle)),
        "expected an error containing {needle:?}, got:\n  {}",
        errs.join("\n  ")
    );
}

/// The hand-written timeline of the report golden test (also valid).
fn small_timeline() -> Value {
    read_json(&workspace_dir().join("tests/data/timeline-small.json"))
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

/// Walks every subschema; calls `f(pointer, subschema)` for each object.
fn walk(v: &Value, at: &str, f: &mut dyn FnMut(&str, &serde_json::Map<String, Value>)) {
    match v {
        Value::Object(map) => {
            f(at, map);
            for (k, child) in map {
                walk(child, &format!("{at}/{k}"), f);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                walk(child, &format!("{at}/{i}"), f);
            }
        }
        _ => {}
    }
}

#[test]
fn every_object_requires_all_its_fields_and_no_other() {
    let s = schema();
    let mut objects = 0;
    let mut problems = Vec::new();
    walk(&s, "#", &mut |at, map| {
        // Only schemas (not the `properties` maps themselves).
        if at.ends_with("/properties") || at.ends_with("/$defs") {
            return;
        }
        // Every schema but the trivial ones (array items, oneOf branches,
        // the values of the lost_by_kind map) says what it is.
        let trivial = at.ends_with("/items")
            || at.contains("/oneOf/")
            || at == "#/properties/lost_by_kind/additionalProperties";
        if !trivial && !map.contains_key("description") {
            problems.push(format!("{at}: no description"));
        }
        let Some(Value::Object(props)) = map.get("properties") else {
            if map.get("type") == Some(&json!("object")) && at != "#/properties/lost_by_kind" {
                problems.push(format!("{at}: an object without properties"));
            }
            return;
        };
        objects += 1;
        if map.get("type") != Some(&json!("object")) {
            problems.push(format!("{at}: has properties but is not of type object"));
        }
        if map.get("additionalProperties") != Some(&json!(false)) {
            problems.push(format!("{at}: additionalProperties is not false"));
        }
        let mut required: Vec<&str> = map
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut names: Vec<&str> = props.keys().map(String::as_str).collect();
        required.sort_unstable();
        names.sort_unstable();
        if required != names {
            problems.push(format!(
                "{at}: required {required:?} is not the list of properties {names:?}"
            ));
        }
    });
    // timeline, process, region, change, faults, counter_sample, drift,
    // maps_entry, check, interval.
    assert_eq!(objects, 10, "object schemas found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn hand_written_timeline_is_valid() {
    assert_valid(&small_timeline(), "tests/data/timeline-small.json");
}

// ---------------------------------------------------------------------------
// Documents that must not validate
// ---------------------------------------------------------------------------

#[test]
fn wrong_schema_value_is_invalid() {
    let mut doc = small_timeline();
    doc["schema"] = json!("mmtrace.timeline/v2");
    assert_invalid(&doc, "/schema");
    doc.as_object_mut().unwrap().remove("schema");
    assert_invalid(&doc, "\"schema\" is a required property");
}

#[test]
fn extra_field_is_invalid() {
    let mut doc = small_timeline();
    doc["extra"] = json!(1);
    assert_invalid(&doc, "extra");

    let mut doc = small_timeline();
    doc["processes"][0]["regions"][0]["faults"]["minor"] = json!(3);
    assert_invalid(&doc, "/processes/0/regions/0/faults");

    let mut doc = small_timeline();
    doc["processes"][1]["nickname"] = json!("x");
    assert_invalid(&doc, "/processes/1");
}

#[test]
fn missing_or_null_field_is_invalid() {
    let mut doc = small_timeline();
    doc["processes"][0]["regions"][2]
        .as_object_mut()
        .unwrap()
        .remove("died_by");
    assert_invalid(&doc, "\"died_by\" is a required property");

    let mut doc = small_timeline();
    doc["processes"][0]["regions"][2]["born_ns"] = Value::Null;
    assert_invalid(&doc, "/processes/0/regions/2/born_ns");
}

#[test]
fn non_hex_address_is_invalid() {
    for bad in [
        "7f3a12340000",
        "0x7F3A12340000",
        "0x",
        "0xzz",
        "140737488355328",
    ] {
        let mut doc = small_timeline();
        doc["processes"][0]["regions"][0]["start"] = json!(bad);
        assert_invalid(&doc, "/processes/0/regions/0/start");
    }
    let mut doc = small_timeline();
    doc["processes"][0]["regions"][0]["history"][0]["end"] = json!(4096);
    assert_invalid(&doc, "/processes/0/regions/0/history/0/end");
}

#[test]
fn bad_values_are_invalid() {
    let cases: &[(&str, Value, &str)] = &[
        ("/processes/0/regions/0/perms", json!("rwx"), "perms"),
        ("/processes/0/regions/0/perms", json!("rw-x"), "perms"),
        ("/processes/0/regions/0/kind", json!("mmap"), "kind"),
        ("/processes/0/regions/0/born_by", json!("clone"), "born_by"),
        ("/processes/0/regions/0/died_by", json!("free"), "died_by"),
        ("/processes/0/regions/0/history/0/op", json!("grew"), "op"),
        ("/processes/0/seeded_by", json!("clone"), "seeded_by"),
        ("/processes/0/checks/0/reason", json!("timer"), "reason"),
        ("/processes/0/regions/0/faults/total", json!(-1), "total"),
        ("/processes/0/regions/0/faults/read", json!(1.5), "read"),
        ("/processes/0/pid", json!(4294967296u64), "pid"),
        ("/processes/0/exit_code", json!("0"), "exit_code"),
        ("/stack_source", json!("kprobe"), "stack_source"),
        ("/started_at", json!("yesterday"), "started_at"),
        ("/lost_by_kind", json!({"mmap": -2}), "lost_by_kind"),
        ("/command", json!("python3 -c 1"), "command"),
    ];
    for (pointer, value, needle) in cases {
        let mut doc = small_timeline();
        *doc.pointer_mut(pointer)
            .unwrap_or_else(|| panic!("no {pointer} in the document")) = value.clone();
        let errs = errors(&validator(), &doc);
        assert!(
            errs.iter().any(|e| e.contains(needle)),
            "{pointer} = {value}: expected an error about {needle}, got {errs:?}"
        );
    }
    let mut doc = small_timeline();
    doc["processes"][0]["drift"] = json!([{
        "t_ns": 1, "kind": "vanished", "model": null, "kernel": null
    }]);
    assert_invalid(&doc, "/processes/0/drift/0/kind");
}

// ---------------------------------------------------------------------------
// Real recordings
// ---------------------------------------------------------------------------

fn scratch(name: &str) -> PathBuf {
    let dir = workspace_dir().join("target").join("tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("mmtrace-schema-{}-{name}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// `mmtrace record --format v1 --output FILE -- CMD...`, then validates
/// FILE (v2, the default, is tests/timeline_v2_schema.rs's).
fn record_and_validate(name: &str, cmd: &[&str]) {
    let out = scratch(name);
    let mut args = vec![
        "record".to_string(),
        "--format".to_string(),
        "v1".to_string(),
        "--output".to_string(),
        out.display().to_string(),
        "--".to_string(),
    ];
    args.extend(cmd.iter().map(|s| s.to_string()));
    let run = run_mmtrace_raw(&args, MMTRACE_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        run.status.success(),
        "`{}` failed: {}\nstderr:\n{}",
        run.command,
        run.status,
        run.stderr
    );
    let text = std::fs::read_to_string(&out).unwrap_or_else(|e| {
        panic!(
            "`{}` wrote no {}: {e}\nstderr:\n{}",
            run.command,
            out.display(),
            run.stderr
        )
    });
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "`{}` wrote something that is not JSON ({e}) to {}",
            run.command,
            out.display()
        )
    });
    assert_valid(
        &doc,
        &format!("the output of `{}` ({})", run.command, out.display()),
    );

    // And it is about the command.
    assert_eq!(
        doc["command"],
        json!(cmd),
        "`command` of `{}` ({})",
        run.command,
        out.display()
    );
    let processes = doc["processes"].as_array().expect("processes");
    assert!(
        processes
            .iter()
            .any(|p| !p["regions"].as_array().expect("regions").is_empty()),
        "no process with regions in {}",
        out.display()
    );
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
