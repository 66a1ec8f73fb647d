//! The `mmtrace.timeline/v1` document: what `mmtrace record` writes and
//! `mmtrace report` reads. A stable interface, described by
//! `docs/timeline-v1.schema.json`.
//!
//! Times are ns since the recording started. Addresses are hex strings.

use serde::{Deserialize, Serialize};

use super::names::{dev_str, hex, signal_name};
use crate::{
    event::split_status,
    model::{
        self,
        maps::{kind_of, strip_deleted},
        Backing, Cause, CheckBasis, CheckReason, Op, Seed, SeededBy, VoidReason,
    },
};

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
    /// Its system calls (`x86_64`, or `i386` and `x32`: 32-bit, not
    /// traced), from its ELF header; absent from older recordings.
    #[serde(default)]
    pub abi: Option<String>,
    /// How the process's first state was known: "fork", "exec", "proc".
    pub seeded_by: SeededBy,
    /// Made with CLONE_VM (vfork, posix_spawn): the process whose address
    /// space it shared until its exec or exit, whose timeline holds the
    /// changes it made then. Absent from older recordings.
    #[serde(default)]
    pub shared_with: Option<u32>,
    pub exec_at_ns: Option<u64>,
    pub exit_at_ns: Option<u64>,
    /// Exit code, or null when killed by a signal or still running.
    pub exit_code: Option<i32>,
    pub exit_signal: Option<String>,
    /// The kernel's OOM killer chose it as its victim at this time (its
    /// exit by SIGKILL follows); null otherwise. Absent from older
    /// recordings.
    #[serde(default)]
    pub oom_kill_ns: Option<u64>,
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
    /// What made it (see [`Cause`]).
    pub born_by: Cause,
    /// The region this one was split from or copied from (fork).
    pub parent: Option<u64>,
    pub died_ns: Option<u64>,
    /// What removed it (see [`Cause`]).
    pub died_by: Option<Cause>,
    /// Every change, in time order; each entry holds the state after it.
    pub history: Vec<Change>,
    pub faults: Faults,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub t_ns: u64,
    pub op: Op,
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
    /// For `different`: the attributes that differ (end, perms, offset,
    /// kind, path, device, inode). Absent in files of earlier mmtrace versions.
    #[serde(default)]
    pub fields: Vec<String>,
    /// Kind `counters`: the counters that differed at exit, kernel minus
    /// model ("map_count +1, total_vm +4").
    #[serde(default)]
    pub counters: Option<String>,
}

/// One line of /proc/PID/maps, or the model's region in the same terms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapsEntry {
    pub start: String,
    pub end: String,
    pub perms: String,
    pub offset: u64,
    pub path: Option<String>,
    /// anon, heap, stack, file, shm (shared memory, however named) or
    /// special (vdso and the like). Absent in files of earlier mmtrace versions.
    #[serde(default)]
    pub kind: Option<String>,
    /// A file's device (`major:minor`, hex as in /proc) and inode.
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub inode: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub t_ns: u64,
    /// interval, lost, exec, exit, request
    pub reason: CheckReason,
    /// Regions compared.
    pub regions: u64,
    /// Differences found (each is a `drift` record).
    pub drift: u64,
    /// What the model was compared with: maps (/proc/PID/maps), or
    /// counters (the kernel's counters of the address space, at exit).
    #[serde(default = "maps_basis")]
    pub against: CheckBasis,
    /// Nothing could be compared, and why.
    #[serde(default)]
    pub void: Option<VoidReason>,
}

fn maps_basis() -> CheckBasis {
    CheckBasis::Maps
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub from_ns: u64,
    /// Null while still uncertain at the end.
    pub to_ns: Option<u64>,
}

impl Drift {
    /// A difference a comparison at `t_ns` found; `residual`: the counters
    /// that differed (a difference of kind `counters`, with no regions).
    pub fn of(t_ns: u64, d: &model::maps::Difference, residual: Option<&str>) -> Drift {
        Drift {
            t_ns,
            kind: d.kind.to_string(),
            model: d.model.as_ref().map(MapsEntry::of),
            kernel: d.kernel.as_ref().map(MapsEntry::of),
            fields: d.fields.iter().map(|f| (*f).to_string()).collect(),
            counters: residual
                .filter(|_| d.model.is_none() && d.kernel.is_none())
                .map(str::to_string),
        }
    }
}

impl MapsEntry {
    /// A region or kernel entry as a /proc/PID/maps line.
    pub fn of(s: &Seed) -> MapsEntry {
        let path = match &s.backing {
            Backing::Anon => None,
            Backing::Heap => Some("[heap]".to_string()),
            Backing::Stack => Some("[stack]".to_string()),
            Backing::File { path, .. } => Some(String::from_utf8_lossy(strip_deleted(path)).into()),
            Backing::Shm { path, .. } => path
                .as_ref()
                .map(|p| String::from_utf8_lossy(strip_deleted(p)).into_owned()),
            Backing::Special(name) => Some(name.clone()),
        };
        let (device, inode) = match &s.backing {
            Backing::File { dev, ino, .. } => (Some(dev_str(dev.0, dev.1)), Some(*ino)),
            _ => (None, None),
        };
        MapsEntry {
            start: hex(s.start),
            end: hex(s.end),
            perms: s.perms.as_string(),
            offset: s.offset,
            path,
            kind: Some(kind_of(&s.backing).to_string()),
            device,
            inode,
        }
    }
}

/// What a recording knows of a process besides its model.
#[derive(Clone, Debug, Default)]
pub struct Record {
    pub counters: Vec<CounterSample>,
    pub drift: Vec<Drift>,
    pub checks: Vec<Check>,
}

impl Process {
    /// The document of a process that left the model.
    pub fn of(p: model::Process, record: Record, bucket_ns: u64) -> Process {
        let (exit_code, exit_signal) = match p.exit_status.map(split_status) {
            Some((code, sig)) => (code, sig.map(signal_name)),
            None => (None, None),
        };
        let mut uncertain: Vec<Interval> = p
            .uncertain
            .iter()
            .map(|u| Interval {
                from_ns: u.from_ns,
                to_ns: u.to_ns,
            })
            .collect();
        if let Some(from) = p.uncertain_since {
            uncertain.push(Interval {
                from_ns: from,
                to_ns: None,
            });
        }
        Process {
            pid: p.pid,
            start_time: p.start_time,
            ppid: p.ppid,
            comm: String::from_utf8_lossy(&p.comm).into_owned(),
            exe: p.exe.map(|e| String::from_utf8_lossy(&e).into_owned()),
            abi: p.abi.map(|a| a.name().to_string()),
            seeded_by: p.seeded_by,
            shared_with: p.shared_with,
            exec_at_ns: p.exec_at,
            exit_at_ns: p.exit_at,
            exit_code,
            exit_signal,
            oom_kill_ns: p.oom_killed_at,
            regions: p
                .space
                .regions
                .iter()
                .map(|r| Region::of(r, bucket_ns))
                .collect(),
            counters: record.counters,
            drift: record.drift,
            checks: record.checks,
            uncertain,
        }
    }
}

impl Region {
    pub fn of(r: &model::Region, bucket_ns: u64) -> Region {
        let (path, dev, inode) = match &r.backing {
            Backing::File { path, dev, ino } => (
                Some(String::from_utf8_lossy(path).into_owned()),
                Some(dev_str(dev.0, dev.1)),
                Some(*ino),
            ),
            Backing::Shm { path, .. } => (
                path.as_ref()
                    .map(|p| String::from_utf8_lossy(p).into_owned()),
                None,
                None,
            ),
            Backing::Special(name) => (Some(name.clone()), None, None),
            Backing::Heap => (Some("[heap]".into()), None, None),
            Backing::Stack => (Some("[stack]".into()), None, None),
            Backing::Anon => (None, None, None),
        };
        let c = &r.faults;
        let f = Faults {
            total: c.total(),
            read: c.read,
            write: c.write,
            exec: c.exec,
            present: c.present,
            first_ns: c.first_ns,
            touched_bytes: r.pages.len() * model::PAGE,
            mapped_bytes: r.len(),
            bucket_ns,
            buckets: r.buckets.clone(),
        };
        Region {
            id: r.id,
            start: hex(r.start),
            end: hex(r.end),
            perms: r.perms.as_string(),
            kind: r.kind().to_string(),
            path,
            offset: r.offset,
            dev,
            inode,
            born_ns: r.born_ns,
            born_by: r.born_by,
            parent: r.parent,
            died_ns: r.died_ns,
            died_by: r.died_by,
            history: r
                .history
                .iter()
                .map(|c| Change {
                    t_ns: c.t_ns,
                    op: c.op,
                    start: hex(c.start),
                    end: hex(c.end),
                    perms: c.perms.as_string(),
                })
                .collect(),
            faults: f,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    const SCHEMA_TEXT: &str = include_str!("../../../docs/timeline-v1.schema.json");

    /// The strings a schema property's `enum` allows (nulls aside).
    fn allowed(schema: &Value, def: &str, property: &str) -> BTreeSet<String> {
        schema["$defs"][def]["properties"][property]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{def}.{property} has no enum"))
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    }

    fn names<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> BTreeSet<String> {
        all.iter().map(|v| name(*v).to_string()).collect()
    }

    /// The documented vocabularies are exactly the code's.
    #[test]
    fn schema_enums_match_the_code() {
        let schema: Value = serde_json::from_str(SCHEMA_TEXT).unwrap();
        assert_eq!(
            allowed(&schema, "process", "seeded_by"),
            names(SeededBy::ALL, SeededBy::as_str)
        );
        assert_eq!(allowed(&schema, "change", "op"), names(Op::ALL, Op::as_str));
        assert_eq!(
            allowed(&schema, "check", "reason"),
            names(CheckReason::ALL, CheckReason::as_str)
        );
        assert_eq!(
            allowed(&schema, "check", "against"),
            names(CheckBasis::ALL, CheckBasis::as_str)
        );
        assert_eq!(
            allowed(&schema, "check", "void"),
            names(VoidReason::ALL, VoidReason::as_str)
        );
        let causes: BTreeSet<String> = allowed(&schema, "region", "born_by")
            .union(&allowed(&schema, "region", "died_by"))
            .cloned()
            .collect();
        assert_eq!(causes, names(Cause::ALL, Cause::as_str));
        // Serialised as documented.
        for c in Cause::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }

    /// A recording made before processes had an `abi` still reads.
    #[test]
    fn a_process_without_abi_reads() {
        let p = model::Process::new_for_test(7);
        let doc = Process::of(p, Record::default(), 1);
        let mut v = serde_json::to_value(&doc).unwrap();
        assert_eq!(v["abi"], Value::Null);
        v.as_object_mut().unwrap().remove("abi");
        let back: Process = serde_json::from_value(v).unwrap();
        assert_eq!(back, doc);
    }
}
