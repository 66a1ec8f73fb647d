//! The /proc/PID/maps parser. A path may hold any byte but NUL, and the
//! parser must never panic, whatever the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &[u8]| {
    if let Ok(seeds) = tracer::model::maps::parse(text) {
        // What parsed must compare with itself without a panic.
        let _ = tracer::model::maps::diff(&seeds, &seeds);
    }
});
