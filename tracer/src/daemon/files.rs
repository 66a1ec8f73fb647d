//! Names of the daemon's timeline files: `ls` sorts them by time, and a
//! person finds a process by pid and comm, e.g.
//! `20261130T214501.123Z-1234-python3.jsonl`.

use std::time::{Duration, UNIX_EPOCH};

/// The comm with every byte outside `[A-Za-z0-9._-]` as `%XX` (so a name
/// never holds a slash, a space or a control character, and stays unique).
pub fn escape_comm(comm: &[u8]) -> String {
    let mut out = String::with_capacity(comm.len());
    for &b in comm {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            use std::fmt::Write;
            let _ = write!(out, "%{b:02X}");
        }
    }
    if out.is_empty() || out.starts_with('.') {
        // No empty or hidden-looking names.
        out.insert(0, '_');
    }
    out
}

/// `YYYYMMDDTHHMMSS.mmmZ-PID-COMM.jsonl` for a process that ended at
/// `since_epoch` (UTC).
pub fn timeline_name(since_epoch: Duration, pid: u32, comm: &[u8]) -> String {
    let secs = since_epoch.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{:03}Z-{pid}-{}.jsonl",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since_epoch.subsec_millis(),
        escape_comm(comm)
    )
}

/// The name for a process that ended now.
pub fn timeline_name_now(pid: u32, comm: &[u8]) -> String {
    let now = UNIX_EPOCH.elapsed().unwrap_or_default();
    timeline_name(now, pid, comm)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (the well-known era algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_time_and_show_pid_and_comm() {
        // 2026-11-30T21:45:01.123Z
        let t = Duration::from_millis(1_796_075_101_123);
        assert_eq!(
            timeline_name(t, 1234, b"python3"),
            "20261130T214501.123Z-1234-python3.jsonl"
        );
        assert_eq!(
            timeline_name(Duration::ZERO, 1, b"init"),
            "19700101T000000.000Z-1.jsonl".replace(".jsonl", "-init.jsonl")
        );
        let leap_day = 11_016 * 86_400; // 2000-02-29
        let a = timeline_name(Duration::from_secs(leap_day), 9, b"x");
        assert!(a.starts_with("20000229T000000.000Z-9-x"), "{a}");
    }

    #[test]
    fn comms_are_escaped() {
        assert_eq!(escape_comm(b"kworker/0:1"), "kworker%2F0%3A1");
        assert_eq!(escape_comm(b"a b\n"), "a%20b%0A");
        assert_eq!(escape_comm(b"..x"), "_..x");
        assert_eq!(escape_comm(b""), "_");
        assert_eq!(escape_comm(b"%"), "%25");
    }
}
