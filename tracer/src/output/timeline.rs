//! The `mmtrace.timeline/v1` document: what `mmtrace record` writes and
//! `mmtrace report` reads. A stable interface, described by
//! `docs/timeline-v1.schema.json`.
//!
//! Times are ns since the recording started. Addresses are hex strings.

use serde::{Deserialize, Serialize};

pub const SCHEMA: &str = "mmtrace.timeline/v1";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Wall clock at the start, RFC 3339.
    pub started_at: String,
    /// CLOCK_MONOTONIC at the start (t_ns = 0), to line times up with other
    /// tools' monotonic timestamps.
    pub monotonic_start_ns: u64,
    pub duration_ns: u64,
    pub host: String,
    /// `uname -r`.
    pub kernel: String,
    /// The traced command, when one was given.
    pub command: Option<Vec<String>>,
    /// Events the kernel could not deliver (all kinds).
    pub lost_events: u64,
    /// Lost events by kind name.
    pub lost_by_kind: std::collections::BTreeMap<String, u64>,
    /// How stack growth was observed: "fexit", "fault" or "off".
    pub stack_source: String,
    pub processes: Vec<Process>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    /// Start time of the process, ns since boot (CLOCK_MONOTONIC), from the
    /// kernel; with `pid` it names one process even when pids are reused.
    pub start_time: Option<u64>,
    pub ppid: Option<u32>,
    pub comm: String,
    /// Program path at the last exec seen (or from /proc/PID/exe).
    pub exe: Option<String>,
    /// How the process's first state was known: "fork", "exec", "proc".
    pub seeded_by: String,
    pub exec_at_ns: Option<u64>,
    pub exit_at_ns: Option<u64>,
    /// Exit code, or null when killed by a signal or still running.
    pub exit_code: Option<i32>,
    pub exit_signal: Option<String>,
    pub regions: Vec<Region>,
    pub counters: Vec<CounterSample>,
    pub drift: Vec<Drift>,
    /// Comparisons with /proc/PID/maps.
    pub checks: Vec<Check>,
    /// Intervals when the model may have been wrong (events lost).
    pub uncertain: Vec<Interval>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Region {
    /// Unique within the process.
    pub id: u64,
    /// Bounds at the end of the region's life (or of the recording).
    pub start: String,
    pub end: String,
    /// As in /proc/PID/maps: `rwxp`, `r--s`, ...
    pub perms: String,
    /// heap, stack, anon, file, shm, vdso, vvar, vsyscall, guard, thread_stack
    pub kind: String,
    pub path: Option<String>,
    pub offset: u64,
    /// "major:minor" in hex, as in /proc/PID/maps.
    pub dev: Option<String>,
    pub inode: Option<u64>,
    pub born_ns: u64,
    /// mmap, brk, mremap, exec, fork, proc, split, stack
    pub born_by: String,
    /// The region this one was split from or copied from (fork).
    pub parent: Option<u64>,
    pub died_ns: Option<u64>,
    /// munmap, mremap, brk, exec, exit, merge, replaced (MAP_FIXED), drift
    pub died_by: Option<String>,
    /// Every change, in time order; each entry holds the state after it.
    pub history: Vec<Change>,
    pub faults: Faults,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub t_ns: u64,
    /// born, grow, shrink, split, protect, move, merge, advise, resync
    pub op: String,
    pub start: String,
    pub end: String,
    pub perms: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    pub total: u64,
    pub read: u64,
    pub write: u64,
    pub exec: u64,
    /// Faults on present pages (protection faults).
    pub present: u64,
    pub first_ns: Option<u64>,
    /// Distinct pages that faulted, in bytes, and the region's size.
    pub touched_bytes: u64,
    pub mapped_bytes: u64,
    /// Fault counts per `bucket_ns` interval, from the recording's start.
    pub bucket_ns: u64,
    pub buckets: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CounterSample {
    pub t_ns: u64,
    /// Bytes mapped in all regions.
    pub mapped: u64,
    pub heap: u64,
    pub stack: u64,
    /// Resident set size from /proc/PID/statm at sampling, when readable.
    pub rss: Option<u64>,
    /// Faults since the previous sample.
    pub faults: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    pub t_ns: u64,
    /// missing (the kernel has it, the model not), extra (the model has it,
    /// the kernel not), different (same start, other attributes).
    pub kind: String,
    pub model: Option<MapsEntry>,
    pub kernel: Option<MapsEntry>,
}

/// One line of /proc/PID/maps, or the model's region in the same terms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapsEntry {
    pub start: String,
    pub end: String,
    pub perms: String,
    pub offset: u64,
    pub path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub t_ns: u64,
    /// interval, lost, exec, exit, request
    pub reason: String,
    /// Regions compared.
    pub regions: u64,
    /// Differences found (each is a `drift` record).
    pub drift: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub from_ns: u64,
    /// Null while still uncertain at the end.
    pub to_ns: Option<u64>,
}
