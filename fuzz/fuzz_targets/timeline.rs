//! `mmtrace report`'s readers of timelines (a v1 document, a v2 recording
//! read one line at a time), and the report of whatever they accept: a
//! hostile but well-formed input must get an error or a report, never a
//! panic, and the report must hold no control character but the newlines
//! (no escape sequence reaches the terminal).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::commands::report::{parse, render, render_v2, ReportOptions};

fn check(report: &str) {
    if let Some(line) = report
        .lines()
        .find(|line| line.chars().any(char::is_control))
    {
        panic!("a control character in the report line {line:?}");
    }
}

fuzz_target!(|document: &[u8]| {
    // The default options, and their extremes: one-line lists, every region
    // short-lived.
    let narrow = ReportOptions {
        short_lived_ns: u64::MAX,
        top: 1,
        ..ReportOptions::default()
    };
    let options = [ReportOptions::default(), narrow];
    // As a v2 recording (JSON Lines), whatever its first line.
    for opts in &options {
        if let Ok(report) = render_v2("fuzz.jsonl", document, opts) {
            check(&report);
        }
    }
    let Ok(timeline) = parse("fuzz.json", document) else {
        return;
    };
    for opts in &options {
        check(&render(&timeline, opts));
    }
});
