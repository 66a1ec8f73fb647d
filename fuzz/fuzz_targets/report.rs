//! The report of well-formed but hostile timelines. Byte mutations of JSON
//! seldom keep a document that parses, so this target reads its input as
//! choices: starting from tests/data/timeline-small.json (with drift and
//! uncertain intervals added), it replaces numbers, addresses and strings
//! (extremes, any text, the vocabularies' words), and drops or repeats
//! array elements. Each document that parses must render, with no control
//! character but the newlines.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::{
    arbitrary::{Result, Unstructured},
    fuzz_target,
};
use serde_json::{json, Value};
use tracer::commands::report::{parse, render, ReportOptions};

const SMALL: &[u8] = include_bytes!("../../tests/data/timeline-small.json");

/// timeline-small.json, whose processes have no drift nor uncertain
/// intervals, with some of each in the first process.
fn template() -> &'static Value {
    static TEMPLATE: OnceLock<Value> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let mut doc: Value = serde_json::from_slice(SMALL).expect("the template is JSON");
        let entry = |start: &str, end: &str, perms: &str, path: Value| {
            json!({ "start": start, "end": end, "perms": perms, "offset": 4096, "path": path })
        };
        let p = &mut doc["processes"][0];
        p["drift"] = json!([
            { "t_ns": 50_000_000, "kind": "missing", "model": null,
              "kernel": entry("0x7f3a12340000", "0x7f3a12341000", "rw-p", Value::Null) },
            { "t_ns": 60_000_000, "kind": "extra",
              "model": entry("0x7f3a12350000", "0x7f3a12352000", "r--p", json!("/usr/lib/x.so")),
              "kernel": null },
            { "t_ns": 70_000_000, "kind": "different",
              "model": entry("0x7f3a12360000", "0x7f3a12361000", "rw-p", json!("[heap]")),
              "kernel": entry("0x7f3a12360000", "0x7f3a12362000", "rw-s", json!("/dev/shm/y (deleted)")) },
        ]);
        p["uncertain"] = json!([
            { "from_ns": 40_000_000, "to_ns": 45_000_000 },
            { "from_ns": 100_000_000, "to_ns": null },
        ]);
        p["checks"]
            .as_array_mut()
            .expect("checks")
            .push(json!({ "t_ns": 50_000_000, "reason": "lost", "regions": 7, "drift": 3 }));
        doc
    })
}

/// Words of the closed vocabularies (causes, ops, reasons, seeded_by,
/// kinds), so that enum fields still parse after a change.
const WORDS: &[&str] = &[
    "mmap",
    "munmap",
    "brk",
    "mremap",
    "exec",
    "exit",
    "fork",
    "proc",
    "split",
    "merge",
    "replaced",
    "drift",
    "born",
    "grow",
    "shrink",
    "protect",
    "move",
    "advise",
    "interval",
    "lost",
    "request",
    "missing",
    "extra",
    "different",
    "heap",
    "stack",
    "anon",
    "file",
    "shm",
    "vdso",
    "vvar",
    "vsyscall",
    "guard",
    "thread_stack",
    "fexit",
    "fault",
    "off",
    "[heap]",
    "[stack]",
    "r--p",
    "rwxs",
    "---p",
];

fuzz_target!(|choices: &[u8]| {
    let mut doc = template().clone();
    // Running out of choices ends the changes, nothing else.
    let _ = change(&mut doc, &mut Unstructured::new(choices));
    let bytes = serde_json::to_vec(&doc).expect("a Value serialises");
    let Ok(timeline) = parse("fuzz.json", &bytes) else {
        return;
    };
    let narrow = ReportOptions {
        short_lived_ns: u64::MAX,
        top: 1,
        ..ReportOptions::default()
    };
    for opts in [ReportOptions::default(), narrow] {
        let report = render(&timeline, &opts);
        if let Some(line) = report
            .lines()
            .find(|line| line.chars().any(char::is_control))
        {
            panic!("a control character in the report line {line:?}");
        }
    }
});

fn change(v: &mut Value, u: &mut Unstructured) -> Result<()> {
    match v {
        Value::Object(map) => {
            for (_, field) in map.iter_mut() {
                change(field, u)?;
            }
        }
        Value::Array(items) => {
            match u.int_in_range(0u8..=7)? {
                0 => {
                    let keep = u.int_in_range(0..=items.len())?;
                    items.truncate(keep);
                }
                1 if !items.is_empty() => {
                    let copy = items[u.choose_index(items.len())?].clone();
                    items.push(copy);
                }
                _ => {}
            }
            for item in items {
                change(item, u)?;
            }
        }
        Value::Number(n) => {
            if u.ratio(1u8, 4)? {
                *v = number(n.as_u64(), u)?;
            }
        }
        Value::String(s) => {
            if u.ratio(1u8, 4)? {
                *v = Value::String(if s.starts_with("0x") {
                    format!("0x{:x}", address(s, u)?)
                } else {
                    text(u)?
                });
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
    Ok(())
}

fn number(old: Option<u64>, u: &mut Unstructured) -> Result<Value> {
    let old = old.unwrap_or(0);
    Ok(match u.int_in_range(0u8..=9)? {
        0 => 0.into(),
        1 => 1.into(),
        2 => u64::MAX.into(),
        3 => (u64::MAX - 1).into(),
        4 => u32::MAX.into(),
        5 => i32::MIN.into(),
        6 => (-1).into(),
        7 => old.wrapping_add(u.int_in_range(0..=4096)?).into(),
        8 => old.saturating_sub(u.int_in_range(0..=4096)?).into(),
        _ => u.arbitrary::<u64>()?.into(),
    })
}

fn address(old: &str, u: &mut Unstructured) -> Result<u64> {
    let old = u64::from_str_radix(&old[2..], 16).unwrap_or(0);
    Ok(match u.int_in_range(0u8..=5)? {
        0 => 0,
        1 => u64::MAX,
        2 => old.wrapping_add(u.int_in_range(0..=0x10_0000)?),
        3 => old.wrapping_sub(u.int_in_range(0..=0x10_0000)?),
        4 => old ^ (1 << u.int_in_range(0..=63)?),
        _ => u.arbitrary()?,
    })
}

fn text(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0u8..=3)? {
        0 => u.choose(WORDS)?.to_string(),
        1 => {
            // Long text, to be cut to fit.
            let piece: &str = u.arbitrary()?;
            piece.repeat(u.int_in_range(1..=200)?)
        }
        _ => u.arbitrary::<&str>()?.to_string(),
    })
}
