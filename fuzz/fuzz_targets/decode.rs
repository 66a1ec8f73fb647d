//! The ring-buffer record decoder: bytes straight from the kernel. Any
//! record, however short, long or garbled, must decode or give an error;
//! what decodes must print as a text line free of control characters and as
//! a JSON line that parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::output::{Format, Printer};

fuzz_target!(|record: &[u8]| {
    let Ok(event) = tracer::event::decode::decode(record) else {
        return;
    };

    let mut text = Vec::new();
    Printer::new(&mut text, Format::Text, false, 0)
        .print(&event)
        .expect("a Vec takes any write");
    let text = String::from_utf8(text).expect("text lines are UTF-8");
    let line = text.strip_suffix('\n').expect("one line, ended");
    assert!(
        !line.chars().any(char::is_control),
        "a control character in {line:?}"
    );

    let mut json = Vec::new();
    Printer::new(&mut json, Format::Jsonl, false, 0)
        .print(&event)
        .expect("a Vec takes any write");
    let line = json.strip_suffix(b"\n").expect("one line, ended");
    assert!(!line.contains(&b'\n'), "JSON line of several lines");
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(line) {
        panic!("not JSON ({e}): {}", String::from_utf8_lossy(line));
    }
});
