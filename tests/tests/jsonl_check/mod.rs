//! Validation of JSONL lines against docs/jsonl-v1.schema.json, shared by
//! the test binaries that have a real stream at hand (`mod jsonl_check;`).

// Each test binary uses part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;
use tests::workspace_dir;

pub fn schema_path() -> PathBuf {
    workspace_dir().join("docs").join("jsonl-v1.schema.json")
}

pub fn schema() -> Value {
    let path = schema_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The validator of the schema, built once per test binary.
pub fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema())
            .unwrap_or_else(|e| panic!("cannot build a validator from the schema: {e}"))
    })
}

/// Every validation error of one line: `/json/pointer: message`.
pub fn line_errors(line: &Value) -> Vec<String> {
    validator()
        .iter_errors(line)
        .map(|e| {
            let at = e.instance_path().to_string();
            format!("{}: {e}", if at.is_empty() { "/" } else { &at })
        })
        .collect()
}

/// Panics, listing the first lines that do not validate and why, unless
/// every line of `events` (read from `what`) validates.
pub fn assert_lines_valid(events: &[Value], what: &str) {
    assert!(!events.is_empty(), "{what}: no lines to validate");
    let bad: Vec<String> = events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let errs = line_errors(e);
            (!errs.is_empty()).then(|| format!("line {}: {e}\n    {}", i + 1, errs.join("\n    ")))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} lines do not validate against {}:\n{}",
        bad.len(),
        events.len(),
        schema_path().display(),
        bad.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}
