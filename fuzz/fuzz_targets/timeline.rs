//! `mmtrace report`'s reader of timeline documents, and the report of
//! whatever it accepts: a hostile but well-formed document must get an error
//! or a report, never a panic, and the report must hold no control
//! character but the newlines (no escape sequence reaches the terminal).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::commands::report::{parse, render, ReportOptions};

fuzz_target!(|document: &[u8]| {
    let Ok(timeline) = parse("fuzz.json", document) else {
        return;
    };
    // The default options, and their extremes: one-line lists, every region
    // short-lived.
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
