//! The `mmtrace.timeline/v2` recording: JSON Lines, written as the
//! recording goes (what `mmtrace record` writes by default and `mmtrace
//! report` reads in one pass). A stable interface, described by
//! `docs/timeline-v2.schema.json` (one `$defs` entry per record type).
//!
//! Each line is one JSON object whose `type` says what it is:
//!
//! - `header` (the first line): schema, tool version, start time, clocks,
//!   host, command, selection and options.
//! - `process`: a process's `start` (first sight: copied at fork, seen at
//!   exec, or found running), `exec`, `exit`, and `end` (still running when
//!   the recording ended). `proc` numbers processes in the recording (a pid
//!   may be reused); `pid` is the kernel's.
//! - `region`: a region's life, one line per entry of its history: `born`
//!   (how it was made, what backs it), every change (`grow`, `shrink`,
//!   `split`, `protect`, `move`, `merge`, `advise`, `lock`, `unlock`,
//!   `seal`), `died` (with the cause) or `end` (alive when its process
//!   left the recording). `region` is its id, unique within its process:
//!   changes name it. `died` and `end` carry its fault counts.
//! - `counters`: a process's memory counters, sampled.
//! - `check`: a comparison with /proc/PID/maps (`void` when a change came
//!   too close to the read to tell); `drift`: one difference it found (the
//!   model then resynced: the region records of the resync follow).
//! - `lost`: events the kernel could not deliver; `uncertain`: an interval
//!   when a process's model may have been wrong.
//! - `end` (the last line): totals; its presence marks the file complete.
//!
//! Times (`t_ns`) are ns since the recording started (`monotonic_start_ns`
//! in CLOCK_MONOTONIC). Addresses are hex strings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    names::{dev_str, hex, signal_name},
    timeline::MapsEntry,
};
use crate::{
    event::split_status,
    model::{
        self, Backing, Cause, ChangeOp, CheckBasis, CheckReason, Op, RegionChange, SeededBy,
        VoidReason,
    },
};

pub const SCHEMA: &str = "mmtrace.timeline/v2";

/// Lines longer than this are refused by readers (the writer's longest
/// lines, a region's birth with a 4 KiB path, are far shorter).
pub const MAX_LINE: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Header(Header),
    Process(ProcessRecord),
    Region(RegionRecord),
    Counters(Counters),
    Check(Check),
    Drift(Drift),
    Lost(Lost),
    Uncertain(Uncertain),
    End(End),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The format's major version (2).
    pub version: u32,
    /// The mmtrace that wrote it.
    pub mmtrace: String,
    /// Wall clock at the start, RFC 3339.
    pub started_at: String,
    /// CLOCK_MONOTONIC at the start (t_ns = 0).
    pub monotonic_start_ns: u64,
    /// The clock of every `t_ns`: "monotonic" (ns since the start).
    pub clock: String,
    pub host: String,
    pub kernel: String,
    /// The traced command, when one was given.
    pub command: Option<Vec<String>>,
    pub selection: Selection,
    pub options: Options,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// --pid.
    pub pids: Vec<u32>,
    /// --comm.
    pub comms: Vec<String>,
    /// --cgroup: `v2:PATH` or `v1-memory:PATH`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cgroups: Vec<String>,
    /// Children are followed.
    pub follow: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Options {
    pub reconcile_interval_ns: u64,
    pub duration_ns: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessEvent {
    /// First sight (see `seeded_by`).
    Start,
    Exec,
    Exit,
    /// Still running when the recording ended.
    End,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub t_ns: u64,
    pub proc: u64,
    pub pid: u32,
    pub event: ProcessEvent,
    pub ppid: Option<u32>,
    pub comm: String,
    pub exe: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abi: Option<String>,
    /// Made with CLONE_VM: the pid whose address space it shares until
    /// its exec or exit (its changes are that process's regions').
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_with: Option<u32>,
    /// `start` (and `exec`, when what was known before it was dropped):
    /// how its first state was known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeded_by: Option<SeededBy>,
    /// task->start_time, ns since boot, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    /// `exit`: the exit code, or the signal that killed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<String>,
    /// `exit` (or `end`): the OOM killer chose it as its victim at this
    /// moment (the timeline's time, as `t_ns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kill_ns: Option<u64>,
    /// Its control groups, when /proc/PID/cgroup could be read: at its
    /// first sight, its exec and each check (inherited at fork).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<CgroupRecord>,
}

/// A process's control groups (paths as /proc/PID/cgroup shows them, at
/// most 4096 bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupRecord {
    /// Its path in the unified (cgroup v2) hierarchy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v2: Option<String>,
    /// That cgroup's id (its directory's inode number in the cgroup2
    /// mount; `bpf_get_current_cgroup_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v2_id: Option<u64>,
    /// Its path in the v1 memory controller's hierarchy, where that
    /// controller is on v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v1_memory: Option<String>,
}

impl CgroupRecord {
    pub fn of(c: &crate::kernel::cgroup::Cgroup) -> CgroupRecord {
        CgroupRecord {
            v2: c.v2.as_deref().map(text),
            v2_id: c.v2_id,
            v1_memory: c.v1_memory.as_deref().map(text),
        }
    }

    /// The path a user groups by: v1 memory where it is, else v2.
    pub fn main_path(&self) -> Option<&str> {
        self.v1_memory.as_deref().or(self.v2.as_deref())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionOp {
    Born,
    Grow,
    Shrink,
    Split,
    Protect,
    Move,
    Merge,
    Advise,
    Lock,
    Unlock,
    Seal,
    Userfaultfd,
    Drift,
    Died,
    /// Alive when its process left the recording.
    End,
}

impl RegionOp {
    pub const ALL: [RegionOp; 15] = [
        RegionOp::Born,
        RegionOp::Grow,
        RegionOp::Shrink,
        RegionOp::Split,
        RegionOp::Protect,
        RegionOp::Move,
        RegionOp::Merge,
        RegionOp::Advise,
        RegionOp::Lock,
        RegionOp::Unlock,
        RegionOp::Seal,
        RegionOp::Userfaultfd,
        RegionOp::Drift,
        RegionOp::Died,
        RegionOp::End,
    ];

    /// Its name in the records.
    pub const fn as_str(self) -> &'static str {
        match self {
            RegionOp::Born => "born",
            RegionOp::Grow => "grow",
            RegionOp::Shrink => "shrink",
            RegionOp::Split => "split",
            RegionOp::Protect => "protect",
            RegionOp::Move => "move",
            RegionOp::Merge => "merge",
            RegionOp::Advise => "advise",
            RegionOp::Lock => "lock",
            RegionOp::Unlock => "unlock",
            RegionOp::Seal => "seal",
            RegionOp::Userfaultfd => "userfaultfd",
            RegionOp::Drift => "drift",
            RegionOp::Died => "died",
            RegionOp::End => "end",
        }
    }

    pub fn of(op: ChangeOp) -> RegionOp {
        match op {
            ChangeOp::Died => RegionOp::Died,
            ChangeOp::Entry(op) => match op {
                Op::Born => RegionOp::Born,
                Op::Grow => RegionOp::Grow,
                Op::Shrink => RegionOp::Shrink,
                Op::Split => RegionOp::Split,
                Op::Protect => RegionOp::Protect,
                Op::Move => RegionOp::Move,
                Op::Merge => RegionOp::Merge,
                Op::Advise => RegionOp::Advise,
                Op::Lock => RegionOp::Lock,
                Op::Unlock => RegionOp::Unlock,
                Op::Seal => RegionOp::Seal,
                Op::Userfaultfd => RegionOp::Userfaultfd,
                Op::Drift => RegionOp::Drift,
            },
        }
    }

    /// The history entry it is, for a change (not `born`, `died`, `end`).
    pub fn history_op(self) -> Option<Op> {
        Some(match self {
            RegionOp::Born => Op::Born,
            RegionOp::Grow => Op::Grow,
            RegionOp::Shrink => Op::Shrink,
            RegionOp::Split => Op::Split,
            RegionOp::Protect => Op::Protect,
            RegionOp::Move => Op::Move,
            RegionOp::Merge => Op::Merge,
            RegionOp::Advise => Op::Advise,
            RegionOp::Lock => Op::Lock,
            RegionOp::Unlock => Op::Unlock,
            RegionOp::Seal => Op::Seal,
            RegionOp::Userfaultfd => Op::Userfaultfd,
            RegionOp::Drift => Op::Drift,
            RegionOp::Died | RegionOp::End => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegionRecord {
    pub t_ns: u64,
    pub proc: u64,
    pub pid: u32,
    pub region: u64,
    pub op: RegionOp,
    /// The region after the change (at its death: as it died).
    pub start: String,
    pub end: String,
    pub perms: String,
    /// `born`, `died`: what made it, what removed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// `born`: what it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub born: Option<Birth>,
    /// Changes of extent: the range before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_end: Option<String>,
    /// `died`, `end`: its page faults over its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faults: Option<Faults>,
}

/// What a region is, at its birth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Birth {
    /// heap, stack, anon, file, shm, vdso, vvar, vsyscall, guard, thread_stack
    pub kind: String,
    pub path: Option<String>,
    pub offset: u64,
    pub dev: Option<String>,
    pub inode: Option<u64>,
    /// The region it was split or copied (fork, mremap) from.
    pub parent: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    pub total: u64,
    pub read: u64,
    pub write: u64,
    pub exec: u64,
    pub present: u64,
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
    /// Pages of its last extent that ever faulted, in bytes; its size.
    pub touched_bytes: u64,
    pub mapped_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub t_ns: u64,
    pub proc: u64,
    pub pid: u32,
    pub mapped: u64,
    pub heap: u64,
    pub stack: u64,
    pub rss: Option<u64>,
    pub faults: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub t_ns: u64,
    pub proc: u64,
    pub pid: u32,
    pub reason: CheckReason,
    /// Nothing was compared: a change came too close to the read to tell
    /// (the check is made again), or, with `void_reason`, an exit check
    /// found nothing to compare.
    pub void: bool,
    pub regions: u64,
    pub drift: u64,
    /// What the model was compared with: /proc/PID/maps, or the kernel's
    /// counters (exit checks). Absent in the first v2 recordings: maps.
    #[serde(default = "maps_basis")]
    pub against: CheckBasis,
    /// Why an exit check compared nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub void_reason: Option<VoidReason>,
}

fn maps_basis() -> CheckBasis {
    CheckBasis::Maps
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    pub t_ns: u64,
    pub proc: u64,
    pub pid: u32,
    /// missing, extra, different
    pub kind: String,
    pub model: Option<MapsEntry>,
    pub kernel: Option<MapsEntry>,
    /// For `different`: the attributes that differ.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Kind `counters`: the counters that differed, kernel minus model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lost {
    pub t_ns: u64,
    /// The kind of the events lost.
    pub kind: String,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Uncertain {
    pub proc: u64,
    pub pid: u32,
    pub from_ns: u64,
    /// Null: still uncertain when the process left the recording.
    pub to_ns: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct End {
    pub t_ns: u64,
    pub duration_ns: u64,
    /// How stack growth was observed: "fexit", "fault" or "off".
    pub stack_source: String,
    /// Events handled.
    pub events: u64,
    pub lost_events: u64,
    pub lost_by_kind: BTreeMap<String, u64>,
    pub processes: u64,
    /// Regions born in the recording (and found at the start).
    pub regions: u64,
    /// Region records written.
    pub region_records: u64,
    /// Checks made (void ones included) and the differences they found.
    pub checks: u64,
    pub drift: u64,
}

/// A string from the kernel (a path, a comm), as text.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Birth {
    pub fn of(r: &model::Region, perms: model::Perms) -> Birth {
        let (path, dev, inode) = match &r.backing {
            Backing::File { path, dev, ino } => {
                (Some(text(path)), Some(dev_str(dev.0, dev.1)), Some(*ino))
            }
            Backing::Shm { path, .. } => (path.as_deref().map(text), None, None),
            Backing::Special(name) => (Some(name.clone()), None, None),
            Backing::Heap => (Some("[heap]".into()), None, None),
            Backing::Stack => (Some("[stack]".into()), None, None),
            Backing::Anon => (None, None, None),
        };
        Birth {
            kind: super::changes::kind_at(r, perms).to_string(),
            path,
            offset: r.offset,
            dev,
            inode,
            parent: r.parent,
        }
    }
}

impl Faults {
    pub fn of(r: &model::Region) -> Faults {
        let c = &r.faults;
        Faults {
            total: c.total(),
            read: c.read,
            write: c.write,
            exec: c.exec,
            present: c.present,
            first_ns: c.first_ns,
            last_ns: c.last_ns,
            touched_bytes: r.pages.len() * model::PAGE,
            mapped_bytes: r.len(),
        }
    }
}

impl RegionRecord {
    /// The record of one change an event (or a resync) made.
    pub fn of(t_ns: u64, proc: u64, c: &RegionChange) -> RegionRecord {
        let op = RegionOp::of(c.op);
        // A birth or death at the region's own time (a seed read after the
        // event, an empty life).
        let t_ns = match op {
            RegionOp::Born => c.region.born_ns,
            RegionOp::Died => c.region.died_ns.unwrap_or(t_ns),
            _ => t_ns,
        };
        RegionRecord {
            t_ns,
            proc,
            pid: c.pid,
            region: c.region.id,
            op,
            start: hex(c.start),
            end: hex(c.end),
            perms: c.perms.as_string(),
            cause: c.cause,
            born: (op == RegionOp::Born).then(|| Birth::of(c.region, c.perms)),
            old_start: c.old.map(|o| hex(o.0)),
            old_end: c.old.map(|o| hex(o.1)),
            faults: (op == RegionOp::Died).then(|| Faults::of(c.region)),
        }
    }

    /// A region alive when its process left the recording.
    pub fn end(t_ns: u64, proc: u64, pid: u32, r: &model::Region) -> RegionRecord {
        RegionRecord {
            t_ns,
            proc,
            pid,
            region: r.id,
            op: RegionOp::End,
            start: hex(r.start),
            end: hex(r.end),
            perms: r.perms.as_string(),
            cause: None,
            born: None,
            old_start: None,
            old_end: None,
            faults: Some(Faults::of(r)),
        }
    }
}

impl ProcessRecord {
    pub fn of(t_ns: u64, p: &model::Process, event: ProcessEvent) -> ProcessRecord {
        let (exit_code, exit_signal) = match (event, p.exit_status.map(split_status)) {
            (ProcessEvent::Exit, Some((code, sig))) => (code, sig.map(signal_name)),
            _ => (None, None),
        };
        ProcessRecord {
            t_ns,
            proc: p.seq,
            pid: p.pid,
            event,
            ppid: p.ppid,
            comm: text(&p.comm),
            exe: p.exe.as_deref().map(text),
            abi: p.abi.map(|a| a.name().to_string()),
            shared_with: p.shared_with,
            // At an exec too: a process first seen just before its exec
            // (what was read then described the new program) is seen from
            // its exec.
            seeded_by: match event {
                ProcessEvent::Start => Some(p.seeded_by),
                ProcessEvent::Exec => (p.seeded_by == SeededBy::Exec).then_some(p.seeded_by),
                ProcessEvent::Exit | ProcessEvent::End => None,
            },
            start_time: p.start_time,
            exit_code,
            exit_signal,
            oom_kill_ns: match event {
                ProcessEvent::Exit | ProcessEvent::End => p.oom_killed_at,
                ProcessEvent::Start | ProcessEvent::Exec => None,
            },
            cgroup: p.cgroup.as_ref().map(CgroupRecord::of),
        }
    }
}

/// Why a line is not a v2 record.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("line {line}: longer than {max} bytes")]
    TooLong { line: u64, max: usize },
    #[error("line {line}: {error}")]
    Json { line: u64, error: serde_json::Error },
    #[error("line {line}: {detail}")]
    Shape { line: u64, detail: String },
    #[error("{0}")]
    Io(std::io::Error),
}

/// Reads records one line at a time, never holding more than one line
/// (at most [`MAX_LINE`] bytes).
pub struct Reader<R> {
    input: R,
    buf: Vec<u8>,
    pub line: u64,
    max: usize,
    /// The last line had no newline: the file was cut there.
    pub cut: bool,
}

impl<R: std::io::BufRead> Reader<R> {
    pub fn new(input: R) -> Reader<R> {
        Reader::with_max(input, MAX_LINE)
    }

    pub fn with_max(input: R, max: usize) -> Reader<R> {
        Reader {
            input,
            buf: Vec::new(),
            line: 0,
            max,
            cut: false,
        }
    }

    /// The next line's bytes (without its newline); None at the end.
    pub fn next_line(&mut self) -> Result<Option<&[u8]>, LineError> {
        use std::io::{BufRead, Read};
        self.buf.clear();
        self.line += 1;
        let limit = (self.max as u64).saturating_add(1);
        let n = (&mut self.input)
            .take(limit)
            .read_until(b'\n', &mut self.buf)
            .map_err(LineError::Io)?;
        if n == 0 {
            return Ok(None);
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        } else if self.buf.len() > self.max {
            return Err(LineError::TooLong {
                line: self.line,
                max: self.max,
            });
        } else {
            self.cut = true;
        }
        Ok(Some(&self.buf))
    }

    /// The next record; None at the end. A last line cut short (no
    /// newline: the recording was killed) ends the records too.
    pub fn next_record(&mut self) -> Result<Option<Record>, LineError> {
        let line = self.line + 1;
        if self.next_line()?.is_none() || self.cut {
            return Ok(None);
        }
        serde_json::from_slice(&self.buf)
            .map(Some)
            .map_err(|error| LineError::Json { line, error })
    }
}

/// Writes records as lines into `out`.
pub fn write_record(out: &mut Vec<u8>, rec: &Record) {
    match rec {
        Record::Region(r) => write_region(out, r),
        // Plain strings, numbers and maps: serialising cannot fail.
        _ => {
            let _ = serde_json::to_writer(&mut *out, rec);
        }
    }
    out.push(b'\n');
}

/// A region record (without its newline), byte for byte as serde writes
/// it, by hand: the most frequent record (a tenth of `record`'s CPU went to
/// serde's maps and escaping). The tests compare both.
fn write_region(out: &mut Vec<u8>, r: &RegionRecord) {
    use super::json::{write_str, write_u64};
    fn opt_u64(out: &mut Vec<u8>, key: &[u8], v: Option<u64>) {
        out.extend_from_slice(key);
        match v {
            Some(v) => write_u64(out, v),
            None => out.extend_from_slice(b"null"),
        }
    }
    fn opt_str(out: &mut Vec<u8>, key: &[u8], v: Option<&str>) {
        out.extend_from_slice(key);
        match v {
            Some(v) => write_str(out, v),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b"{\"type\":\"region\",\"t_ns\":");
    write_u64(out, r.t_ns);
    out.extend_from_slice(b",\"proc\":");
    write_u64(out, r.proc);
    out.extend_from_slice(b",\"pid\":");
    write_u64(out, u64::from(r.pid));
    out.extend_from_slice(b",\"region\":");
    write_u64(out, r.region);
    out.extend_from_slice(b",\"op\":");
    write_str(out, r.op.as_str());
    out.extend_from_slice(b",\"start\":");
    write_str(out, &r.start);
    out.extend_from_slice(b",\"end\":");
    write_str(out, &r.end);
    out.extend_from_slice(b",\"perms\":");
    write_str(out, &r.perms);
    if let Some(cause) = r.cause {
        out.extend_from_slice(b",\"cause\":");
        write_str(out, cause.as_str());
    }
    if let Some(b) = &r.born {
        out.extend_from_slice(b",\"born\":{\"kind\":");
        write_str(out, &b.kind);
        opt_str(out, b",\"path\":", b.path.as_deref());
        opt_u64(out, b",\"offset\":", Some(b.offset));
        opt_str(out, b",\"dev\":", b.dev.as_deref());
        opt_u64(out, b",\"inode\":", b.inode);
        opt_u64(out, b",\"parent\":", b.parent);
        out.push(b'}');
    }
    if let Some(v) = &r.old_start {
        opt_str(out, b",\"old_start\":", Some(v));
    }
    if let Some(v) = &r.old_end {
        opt_str(out, b",\"old_end\":", Some(v));
    }
    if let Some(f) = &r.faults {
        opt_u64(out, b",\"faults\":{\"total\":", Some(f.total));
        opt_u64(out, b",\"read\":", Some(f.read));
        opt_u64(out, b",\"write\":", Some(f.write));
        opt_u64(out, b",\"exec\":", Some(f.exec));
        opt_u64(out, b",\"present\":", Some(f.present));
        opt_u64(out, b",\"first_ns\":", f.first_ns);
        opt_u64(out, b",\"last_ns\":", f.last_ns);
        opt_u64(out, b",\"touched_bytes\":", Some(f.touched_bytes));
        opt_u64(out, b",\"mapped_bytes\":", Some(f.mapped_bytes));
        out.push(b'}');
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    const SCHEMA_TEXT: &str = include_str!("../../../docs/timeline-v2.schema.json");

    fn allowed(schema: &Value, def: &str, property: &str) -> BTreeSet<String> {
        schema["$defs"][def]["properties"][property]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{def}.{property} has no enum"))
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    }

    /// The hand-written region records are serde's, byte for byte.
    #[test]
    fn region_records_are_written_as_serde_writes_them() {
        let paths = [
            "/usr/lib/libc.so.6",
            "a \"quoted\" \\ path\n\t\u{1b}[31m",
            "caf\u{e9} \u{7f}",
            "",
        ];
        let causes = Cause::ALL;
        let mut n = 0u64;
        for (i, op) in RegionOp::ALL.iter().enumerate() {
            for variant in 0..8u64 {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let some = |bit: u64| variant & bit != 0;
                let rec = RegionRecord {
                    t_ns: n >> 3,
                    proc: variant,
                    pid: (n >> 40) as u32,
                    region: i as u64 * 1000 + variant,
                    op: *op,
                    start: hex(n & 0x7fff_ffff_f000),
                    end: hex(u64::MAX - variant),
                    perms: ["rw-p", "r-xs", "---p"][variant as usize % 3].into(),
                    cause: some(1).then_some(causes[(i + variant as usize) % causes.len()]),
                    born: some(2).then(|| Birth {
                        kind: "thread_stack".into(),
                        path: some(4).then(|| paths[(i + variant as usize) % paths.len()].into()),
                        offset: n,
                        dev: some(1).then(|| "fd:01".into()),
                        inode: some(4).then_some(n >> 7),
                        parent: some(1).then_some(0),
                    }),
                    old_start: some(4).then(|| hex(0)),
                    old_end: some(2).then(|| hex(n)),
                    faults: some(4).then(|| Faults {
                        total: n % 1000,
                        read: 1,
                        write: 0,
                        exec: u64::MAX,
                        present: 10,
                        first_ns: some(1).then_some(n),
                        last_ns: some(2).then_some(99),
                        touched_bytes: 4096,
                        mapped_bytes: 1 << 40,
                    }),
                };
                let rec = Record::Region(rec);
                let mut fast = Vec::new();
                write_record(&mut fast, &rec);
                let mut slow = serde_json::to_vec(&rec).unwrap();
                slow.push(b'\n');
                assert_eq!(
                    String::from_utf8_lossy(&fast),
                    String::from_utf8_lossy(&slow)
                );
            }
        }
    }

    /// The documented vocabularies are exactly the code's.
    #[test]
    fn schema_enums_match_the_code() {
        let schema: Value = serde_json::from_str(SCHEMA_TEXT).unwrap();
        let names = |v: Vec<String>| v.into_iter().collect::<BTreeSet<String>>();
        assert_eq!(
            allowed(&schema, "process", "seeded_by"),
            names(
                SeededBy::ALL
                    .iter()
                    .map(|s| s.as_str().to_string())
                    .collect()
            )
        );
        assert_eq!(
            allowed(&schema, "check", "reason"),
            names(
                CheckReason::ALL
                    .iter()
                    .map(|s| s.as_str().to_string())
                    .collect()
            )
        );
        assert_eq!(
            allowed(&schema, "region", "cause"),
            names(Cause::ALL.iter().map(|s| s.as_str().to_string()).collect())
        );
        let mut ops = names(Op::ALL.iter().map(|s| s.as_str().to_string()).collect());
        ops.insert("died".into());
        ops.insert("end".into());
        assert_eq!(allowed(&schema, "region", "op"), ops);
        for op in Op::ALL {
            let r = RegionOp::of(ChangeOp::Entry(*op));
            assert_eq!(serde_json::to_value(r).unwrap(), op.as_str());
            assert_eq!(r.history_op(), Some(*op));
        }
    }

    #[test]
    fn lines_are_read_one_at_a_time() {
        let text = b"{\"type\":\"lost\",\"t_ns\":1,\"kind\":\"mmap\",\"count\":2}\n{\"type\":\"lo";
        let mut r = Reader::new(&text[..]);
        let rec = r.next_record().unwrap().unwrap();
        assert!(matches!(rec, Record::Lost(Lost { count: 2, .. })));
        // Cut short: the end, and said so.
        assert!(r.next_record().unwrap().is_none());
        assert!(r.cut);
        let long = [b'x'; 100];
        let mut r = Reader::with_max(&long[..], 10);
        assert!(matches!(r.next_line(), Err(LineError::TooLong { .. })));
    }
}
