//! A streaming writer of Perfetto's native protobuf trace (issue 11, step 1).
//!
//! A Perfetto trace is `Trace { repeated TracePacket packet = 1; }`: the file
//! is a sequence of length-delimited field-1 records, so packets can be
//! written one at a time and memory stays bounded by what the caller keeps
//! (for mmtrace: the live regions), never by the trace's length.
//!
//! Only the few messages mmtrace needs are encoded, by hand (varints and
//! length-delimited fields), rather than generating code from Perfetto's
//! `.proto` files: it needs no build-time `protoc`, no new crate, and the
//! field numbers below are Perfetto's stable wire format (read from the
//! public `protos/perfetto/trace/**.proto` documentation; none of their
//! sources is copied here).
//!
//! Tracks: [`TraceWriter::process_track`] (a `ProcessDescriptor`, shown by
//! the UI as the process), [`TraceWriter::child_track`] (a named track with
//! a parent, used for per-kind lanes and per-region tracks) and
//! [`TraceWriter::counter_track`] (a `CounterDescriptor`). Events:
//! slice begin/end, instants, counters, with debug annotations.
//!
//! Every packet carries the same `trusted_packet_sequence_id`; the first one
//! sets `SEQ_INCREMENTAL_STATE_CLEARED` and every track event says
//! `SEQ_NEEDS_INCREMENTAL_STATE`. No interned data is used, so the flags
//! only tell the importer that the sequence starts cleanly.

use std::io::{self, Write};

/// The sequence id of every packet mmtrace writes (any non-zero value).
pub const SEQUENCE_ID: u64 = 1;

// Trace
const TRACE_PACKET: u32 = 1;
// TracePacket
const PACKET_TIMESTAMP: u32 = 8;
const PACKET_SEQUENCE_ID: u32 = 10;
const PACKET_TRACK_EVENT: u32 = 11;
const PACKET_SEQUENCE_FLAGS: u32 = 13;
const PACKET_TRACK_DESCRIPTOR: u32 = 60;
const SEQ_INCREMENTAL_STATE_CLEARED: u64 = 1;
const SEQ_NEEDS_INCREMENTAL_STATE: u64 = 2;
// TrackDescriptor
const TRACK_UUID: u32 = 1;
const TRACK_NAME: u32 = 2;
const TRACK_PROCESS: u32 = 3;
const TRACK_PARENT_UUID: u32 = 5;
const TRACK_COUNTER: u32 = 8;
// ProcessDescriptor
const PROCESS_PID: u32 = 1;
const PROCESS_NAME: u32 = 6;
// CounterDescriptor
const COUNTER_UNIT: u32 = 3;
// TrackEvent
const EVENT_DEBUG_ANNOTATIONS: u32 = 4;
const EVENT_TYPE: u32 = 9;
const EVENT_TRACK_UUID: u32 = 11;
const EVENT_CATEGORIES: u32 = 22;
const EVENT_NAME: u32 = 23;
const EVENT_COUNTER_VALUE: u32 = 30;
const EVENT_DOUBLE_COUNTER_VALUE: u32 = 44;
// DebugAnnotation
const ANNOTATION_UINT: u32 = 3;
const ANNOTATION_INT: u32 = 4;
const ANNOTATION_STRING: u32 = 6;
const ANNOTATION_NAME: u32 = 10;

/// `TrackEvent.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    SliceBegin = 1,
    SliceEnd = 2,
    Instant = 3,
    Counter = 4,
}

/// `CounterDescriptor.Unit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Count = 2,
    Bytes = 3,
}

/// A debug annotation value (the slice's "arguments" in the UI).
#[derive(Clone, Debug, PartialEq)]
pub enum Arg<'a> {
    Str(&'a str),
    Uint(u64),
    Int(i64),
}

/// A counter sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Double(f64),
}

/// A protobuf message under construction (fields appended in order).
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn key(&mut self, field: u32, wire: u8) {
        put_varint(&mut self.0, (u64::from(field) << 3) | u64::from(wire));
    }
    fn uint(&mut self, field: u32, v: u64) {
        self.key(field, 0);
        put_varint(&mut self.0, v);
    }
    fn int(&mut self, field: u32, v: i64) {
        // int64 is two's complement in a varint (not zigzag).
        self.uint(field, v as u64);
    }
    fn double(&mut self, field: u32, v: f64) {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        put_varint(&mut self.0, b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }
    fn msg(&mut self, field: u32, m: &Msg) {
        self.bytes(field, &m.0);
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Writes a Perfetto trace packet by packet.
pub struct TraceWriter<W: Write> {
    out: W,
    first: bool,
    next_uuid: u64,
}

impl<W: Write> TraceWriter<W> {
    pub fn new(out: W) -> Self {
        TraceWriter {
            out,
            first: true,
            next_uuid: 1,
        }
    }

    fn uuid(&mut self) -> u64 {
        let u = self.next_uuid;
        self.next_uuid += 1;
        u
    }

    fn packet(&mut self, ts: Option<u64>, field: u32, body: &Msg, event: bool) -> io::Result<()> {
        let mut p = Msg::default();
        if let Some(ts) = ts {
            p.uint(PACKET_TIMESTAMP, ts);
        }
        p.uint(PACKET_SEQUENCE_ID, SEQUENCE_ID);
        let mut flags = 0;
        if self.first {
            flags |= SEQ_INCREMENTAL_STATE_CLEARED;
            self.first = false;
        }
        if event {
            flags |= SEQ_NEEDS_INCREMENTAL_STATE;
        }
        if flags != 0 {
            p.uint(PACKET_SEQUENCE_FLAGS, flags);
        }
        p.msg(field, body);
        let mut t = Msg::default();
        t.msg(TRACE_PACKET, &p);
        self.out.write_all(&t.0)
    }

    /// Declares a process track; returns its uuid.
    pub fn process_track(&mut self, pid: u32, comm: &str) -> io::Result<u64> {
        let uuid = self.uuid();
        let mut pd = Msg::default();
        pd.uint(PROCESS_PID, u64::from(pid));
        pd.str(PROCESS_NAME, comm);
        let mut td = Msg::default();
        td.uint(TRACK_UUID, uuid);
        td.msg(TRACK_PROCESS, &pd);
        self.packet(None, PACKET_TRACK_DESCRIPTOR, &td, false)?;
        Ok(uuid)
    }

    /// Declares a named track under `parent`; returns its uuid.
    pub fn child_track(&mut self, parent: u64, name: &str) -> io::Result<u64> {
        let uuid = self.uuid();
        let mut td = Msg::default();
        td.uint(TRACK_UUID, uuid);
        td.str(TRACK_NAME, name);
        td.uint(TRACK_PARENT_UUID, parent);
        self.packet(None, PACKET_TRACK_DESCRIPTOR, &td, false)?;
        Ok(uuid)
    }

    /// Declares a named top-level track; returns its uuid.
    pub fn root_track(&mut self, name: &str) -> io::Result<u64> {
        let uuid = self.uuid();
        let mut td = Msg::default();
        td.uint(TRACK_UUID, uuid);
        td.str(TRACK_NAME, name);
        self.packet(None, PACKET_TRACK_DESCRIPTOR, &td, false)?;
        Ok(uuid)
    }

    /// Declares a counter track under `parent`; returns its uuid.
    pub fn counter_track(&mut self, parent: u64, name: &str, unit: Unit) -> io::Result<u64> {
        let uuid = self.uuid();
        let mut cd = Msg::default();
        cd.uint(COUNTER_UNIT, unit as u64);
        let mut td = Msg::default();
        td.uint(TRACK_UUID, uuid);
        td.str(TRACK_NAME, name);
        td.uint(TRACK_PARENT_UUID, parent);
        td.msg(TRACK_COUNTER, &cd);
        self.packet(None, PACKET_TRACK_DESCRIPTOR, &td, false)?;
        Ok(uuid)
    }

    fn event(
        &mut self,
        ts: u64,
        track: u64,
        kind: EventType,
        name: Option<&str>,
        args: &[(&str, Arg)],
        value: Option<Value>,
    ) -> io::Result<()> {
        let mut ev = Msg::default();
        for (key, arg) in args {
            let mut a = Msg::default();
            a.str(ANNOTATION_NAME, key);
            match arg {
                Arg::Str(s) => a.str(ANNOTATION_STRING, s),
                Arg::Uint(u) => a.uint(ANNOTATION_UINT, *u),
                Arg::Int(i) => a.int(ANNOTATION_INT, *i),
            }
            ev.msg(EVENT_DEBUG_ANNOTATIONS, &a);
        }
        ev.uint(EVENT_TYPE, kind as u64);
        ev.uint(EVENT_TRACK_UUID, track);
        if kind != EventType::Counter && kind != EventType::SliceEnd {
            ev.str(EVENT_CATEGORIES, "mmtrace");
        }
        if let Some(name) = name {
            ev.str(EVENT_NAME, name);
        }
        match value {
            Some(Value::Int(v)) => ev.int(EVENT_COUNTER_VALUE, v),
            Some(Value::Double(v)) => ev.double(EVENT_DOUBLE_COUNTER_VALUE, v),
            None => {}
        }
        self.packet(Some(ts), PACKET_TRACK_EVENT, &ev, true)
    }

    /// Opens a slice on `track` (a region's birth).
    pub fn slice_begin(
        &mut self,
        ts: u64,
        track: u64,
        name: &str,
        args: &[(&str, Arg)],
    ) -> io::Result<()> {
        self.event(ts, track, EventType::SliceBegin, Some(name), args, None)
    }

    /// Closes the innermost open slice on `track` (a region's death).
    pub fn slice_end(&mut self, ts: u64, track: u64, args: &[(&str, Arg)]) -> io::Result<()> {
        self.event(ts, track, EventType::SliceEnd, None, args, None)
    }

    /// An instant on `track` (exec, fork, exit, grow, split, ...).
    pub fn instant(
        &mut self,
        ts: u64,
        track: u64,
        name: &str,
        args: &[(&str, Arg)],
    ) -> io::Result<()> {
        self.event(ts, track, EventType::Instant, Some(name), args, None)
    }

    /// A sample on a counter track.
    pub fn counter(&mut self, ts: u64, track: u64, value: Value) -> io::Result<()> {
        self.event(ts, track, EventType::Counter, None, &[], Some(value))
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// What [`export_v2`] wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    pub processes: u64,
    /// Region slices, one per region.
    pub slices: u64,
    /// Closed uncertain intervals, as slices.
    pub uncertain: u64,
    pub instants: u64,
    pub counters: u64,
}

struct Proc {
    track: u64,
    kinds: std::collections::HashMap<String, u64>,
    /// mapped, heap, stack, rss, faults/s
    counters: Option<[u64; 5]>,
    last_faults: Option<(u64, u64)>,
    /// The track of its uncertain intervals (they never overlap).
    uncertain: Option<u64>,
}

/// Refuses `output` when something is there already: an export never
/// overwrites.
pub fn check_new(output: &std::path::Path) -> Result<(), crate::error::Error> {
    if output.symlink_metadata().is_ok() {
        return Err(crate::error::Error::Usage(format!(
            "{}: already exists (mmtrace never overwrites an export)",
            output.display()
        )));
    }
    super::file::check(output)
}

/// Exports the v2 timeline `input` into a new file `output` (private, or
/// its group's; written whole or not at all); returns what it wrote.
pub fn export_file(
    input: &std::path::Path,
    output: &std::path::Path,
    access: super::file::Access,
) -> Result<ExportStats, crate::error::Error> {
    use crate::error::Error;
    check_new(output)?;
    let file = std::fs::File::open(input)
        .map_err(|e| Error::Usage(format!("{}: {e}", input.display())))?;
    let mut out = super::file::Replace::create(output, access)?;
    let buffered = io::BufWriter::new(out.file());
    let stats = export_v2(io::BufReader::new(file), buffered)
        .and_then(|(stats, w)| w.into_inner().map(|_| stats).map_err(|e| e.to_string()))
        .map_err(|e| Error::Usage(format!("{}: {e}", input.display())))?;
    out.commit().map_err(anyhow::Error::from)?;
    Ok(stats)
}

/// The line that says what an export wrote.
pub fn summary(output: &std::path::Path, stats: &ExportStats) -> String {
    format!(
        "mmtrace: wrote {}: {} processes, {} regions, {} uncertain intervals, {} instants, {} counter samples",
        super::names::escape_text(std::os::unix::ffi::OsStrExt::as_bytes(output.as_os_str())),
        stats.processes,
        stats.slices,
        stats.uncertain,
        stats.instants,
        stats.counters
    )
}

/// The name a unit enum has in the timeline (`"exec"`, `"split"`), bare.
fn name_of<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Converts a v2 streaming timeline (JSON Lines) into a Perfetto trace in one
/// pass. Memory: one line at a time (at most [`super::timeline2::MAX_LINE`]),
/// the processes, their per-kind lanes and the live regions.
///
/// Each region is a slice from birth to death on its own track (a child of
/// its process's per-kind lane track); its changes are instants on it. An
/// OOM kill is an `oom_kill` instant on the process's track at the kill's
/// moment (written with the exit that carries it: Perfetto sorts).
// One match over the record types, written under the deadline: the lints
// below are style (short names, `expect` on entries inserted just above).
#[allow(
    clippy::many_single_char_names,
    clippy::redundant_closure_for_method_calls,
    clippy::map_unwrap_or,
    clippy::expect_used,
    clippy::single_match_else
)]
pub fn export_v2<R: io::BufRead, W: Write>(
    mut input: R,
    out: W,
) -> Result<(ExportStats, W), String> {
    use super::timeline2::{self as v2, Record, RegionOp};
    use std::collections::HashMap;
    use std::io::BufRead;
    let mut w = TraceWriter::new(out);
    let io = |e: io::Error| format!("writing the trace: {e}");
    let mut stats = ExportStats::default();
    let mut procs: HashMap<u64, Proc> = HashMap::new();
    let mut regions: HashMap<(u64, u64), u64> = HashMap::new();
    let mut global: Option<u64> = None;
    let mut line = Vec::new();
    let mut line_no = 0u64;
    loop {
        line.clear();
        line_no += 1;
        let got = io::Read::take(&mut input, v2::MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("reading line {line_no}: {e}"))?;
        if got == 0 {
            break;
        }
        if line.len() > v2::MAX_LINE {
            return Err(format!(
                "line {line_no}: longer than {} bytes",
                v2::MAX_LINE
            ));
        }
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let rec: Record = match serde_json::from_slice(&line) {
            Ok(r) => r,
            Err(_) if line_no == 1 => {
                return Err(format!(
                    "line 1: not a {} recording (only v2 timelines are exported)",
                    v2::SCHEMA
                ))
            }
            Err(e) => return Err(format!("line {line_no}: {e}")),
        };
        if line_no == 1 && !matches!(rec, Record::Header(ref h) if h.schema == v2::SCHEMA) {
            return Err(format!("line 1: not a {} header", v2::SCHEMA));
        }
        let mut proc_track = |w: &mut TraceWriter<W>,
                              proc: u64,
                              pid: u32,
                              comm: &str,
                              stats: &mut ExportStats|
         -> io::Result<u64> {
            if let Some(p) = procs.get(&proc) {
                return Ok(p.track);
            }
            let track = w.process_track(pid, comm)?;
            stats.processes += 1;
            procs.insert(
                proc,
                Proc {
                    track,
                    kinds: HashMap::new(),
                    counters: None,
                    last_faults: None,
                    uncertain: None,
                },
            );
            Ok(track)
        };
        match rec {
            Record::Header(_) | Record::Check(_) | Record::End(_) => {}
            Record::Process(p) => {
                let t = proc_track(&mut w, p.proc, p.pid, &p.comm, &mut stats).map_err(io)?;
                // A process first seen being forked starts with `fork`.
                let forked = matches!(p.event, v2::ProcessEvent::Start)
                    && p.seeded_by == Some(crate::model::SeededBy::Fork);
                let name = if forked {
                    "fork".to_owned()
                } else {
                    name_of(&p.event)
                };
                let mut args = vec![("comm", Arg::Str(&p.comm))];
                if let Some(exe) = &p.exe {
                    args.push(("exe", Arg::Str(exe)));
                }
                if let Some(ppid) = p.ppid {
                    args.push(("ppid", Arg::Uint(u64::from(ppid))));
                }
                w.instant(p.t_ns, t, &name, &args).map_err(io)?;
                stats.instants += 1;
                // The kill, at its own moment (before the exit that
                // carries it), on the process's track beside its curves.
                if let Some(kill) = p.oom_kill_ns {
                    let before = p.t_ns.saturating_sub(kill);
                    w.instant(
                        kill,
                        t,
                        "oom_kill",
                        &[
                            ("victim_pid", Arg::Uint(u64::from(p.pid))),
                            ("exit_after_ns", Arg::Uint(before)),
                        ],
                    )
                    .map_err(io)?;
                    stats.instants += 1;
                }
            }
            Record::Region(r) => {
                let t = proc_track(&mut w, r.proc, r.pid, "", &mut stats).map_err(io)?;
                let range = format!("{}-{}", r.start, r.end);
                match r.op {
                    RegionOp::Born => {
                        let b = r.born.as_ref();
                        let kind = b.map(|b| b.kind.as_str()).unwrap_or("anon");
                        let p = procs.get_mut(&r.proc).expect("inserted above");
                        let lane = match p.kinds.get(kind) {
                            Some(&l) => l,
                            None => {
                                let l = w.child_track(t, kind).map_err(io)?;
                                p.kinds.insert(kind.to_owned(), l);
                                l
                            }
                        };
                        let path = b.and_then(|b| b.path.as_deref());
                        let track = w
                            .child_track(lane, &format!("{kind} {range}"))
                            .map_err(io)?;
                        let name = match path {
                            Some(path) => format!("{path} {range}"),
                            None => format!("[{kind}] {range}"),
                        };
                        let born_by = r.cause.as_ref().map(name_of);
                        let mut args = vec![
                            ("perms", Arg::Str(&r.perms)),
                            ("offset", Arg::Uint(b.map_or(0, |b| b.offset))),
                        ];
                        if let Some(path) = path {
                            args.push(("path", Arg::Str(path)));
                        }
                        if let Some(by) = &born_by {
                            args.push(("born_by", Arg::Str(by)));
                        }
                        w.slice_begin(r.t_ns, track, &name, &args).map_err(io)?;
                        regions.insert((r.proc, r.region), track);
                        stats.slices += 1;
                    }
                    RegionOp::Died | RegionOp::End => {
                        let Some(track) = regions.remove(&(r.proc, r.region)) else {
                            return Err(format!(
                                "line {line_no}: region {} ends but was never born",
                                r.region
                            ));
                        };
                        let died_by = r.cause.as_ref().map(name_of);
                        let mut args = vec![];
                        if let Some(by) = &died_by {
                            args.push(("died_by", Arg::Str(by)));
                        }
                        if let Some(f) = &r.faults {
                            args.push(("faults", Arg::Uint(f.total)));
                        }
                        w.slice_end(r.t_ns, track, &args).map_err(io)?;
                    }
                    op => {
                        let Some(&track) = regions.get(&(r.proc, r.region)) else {
                            return Err(format!(
                                "line {line_no}: region {} changes but was never born",
                                r.region
                            ));
                        };
                        let name = name_of(&op);
                        w.instant(
                            r.t_ns,
                            track,
                            &name,
                            &[("range", Arg::Str(&range)), ("perms", Arg::Str(&r.perms))],
                        )
                        .map_err(io)?;
                        stats.instants += 1;
                    }
                }
            }
            Record::Counters(c) => {
                let t = proc_track(&mut w, c.proc, c.pid, "", &mut stats).map_err(io)?;
                let p = procs.get_mut(&c.proc).expect("inserted above");
                let tracks = match p.counters {
                    Some(ts) => ts,
                    None => {
                        let ts = [
                            w.counter_track(t, "mem.mapped", Unit::Bytes).map_err(io)?,
                            w.counter_track(t, "mem.heap", Unit::Bytes).map_err(io)?,
                            w.counter_track(t, "mem.stack", Unit::Bytes).map_err(io)?,
                            w.counter_track(t, "mem.rss", Unit::Bytes).map_err(io)?,
                            w.counter_track(t, "faults/s", Unit::Count).map_err(io)?,
                        ];
                        p.counters = Some(ts);
                        ts
                    }
                };
                let mut put = |w: &mut TraceWriter<W>, i: usize, v: Value| -> io::Result<()> {
                    stats.counters += 1;
                    w.counter(c.t_ns, tracks[i], v)
                };
                put(&mut w, 0, Value::Int(c.mapped as i64)).map_err(io)?;
                put(&mut w, 1, Value::Int(c.heap as i64)).map_err(io)?;
                put(&mut w, 2, Value::Int(c.stack as i64)).map_err(io)?;
                if let Some(rss) = c.rss {
                    put(&mut w, 3, Value::Int(rss as i64)).map_err(io)?;
                }
                if let Some((t0, f0)) = p.last_faults {
                    if c.t_ns > t0 {
                        let rate = c.faults.saturating_sub(f0) as f64 * 1e9 / (c.t_ns - t0) as f64;
                        put(&mut w, 4, Value::Double(rate)).map_err(io)?;
                    }
                }
                p.last_faults = Some((c.t_ns, c.faults));
            }
            Record::Drift(d) => {
                let t = proc_track(&mut w, d.proc, d.pid, "", &mut stats).map_err(io)?;
                w.instant(d.t_ns, t, "drift", &[("kind", Arg::Str(&d.kind))])
                    .map_err(io)?;
                stats.instants += 1;
            }
            Record::Uncertain(u) => {
                let t = proc_track(&mut w, u.proc, u.pid, "", &mut stats).map_err(io)?;
                match u.to_ns {
                    // A closed interval: a slice on the process's
                    // `uncertain` track, from the doubt to the check that
                    // settled it.
                    Some(settled) => {
                        let owner = procs.get_mut(&u.proc).expect("inserted above");
                        let track = match owner.uncertain {
                            Some(track) => track,
                            None => {
                                let track = w.child_track(t, "uncertain").map_err(io)?;
                                owner.uncertain = Some(track);
                                track
                            }
                        };
                        w.slice_begin(u.from_ns, track, "uncertain", &[])
                            .map_err(io)?;
                        w.slice_end(settled.max(u.from_ns), track, &[])
                            .map_err(io)?;
                        stats.uncertain += 1;
                    }
                    // Never settled: from then to the process's end.
                    None => {
                        w.instant(u.from_ns, t, "uncertain", &[("until", Arg::Str("its end"))])
                            .map_err(io)?;
                        stats.instants += 1;
                    }
                }
            }
            Record::Lost(l) => {
                let g = match global {
                    Some(g) => g,
                    None => {
                        let g = w.root_track("mmtrace").map_err(io)?;
                        global = Some(g);
                        g
                    }
                };
                w.instant(
                    l.t_ns,
                    g,
                    "lost",
                    &[("kind", Arg::Str(&l.kind)), ("count", Arg::Uint(l.count))],
                )
                .map_err(io)?;
                stats.instants += 1;
            }
        }
    }
    w.flush().map_err(io)?;
    Ok((stats, w.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal wire-format reader, written from the protobuf encoding
    /// spec, independent of the writer above.
    #[derive(Clone, Debug, PartialEq)]
    enum F {
        V(u64),
        D(u64),
        B(Vec<u8>),
    }

    fn varint(b: &[u8], i: &mut usize) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let byte = b[*i];
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }

    fn fields(b: &[u8]) -> Vec<(u32, F)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let key = varint(b, &mut i);
            let f = match key & 7 {
                0 => F::V(varint(b, &mut i)),
                1 => {
                    let v = u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
                    i += 8;
                    F::D(v)
                }
                2 => {
                    let n = varint(b, &mut i) as usize;
                    let v = b[i..i + n].to_vec();
                    i += n;
                    F::B(v)
                }
                w => panic!("wire type {w}"),
            };
            out.push(((key >> 3) as u32, f));
        }
        out
    }

    fn get(fs: &[(u32, F)], n: u32) -> Vec<&F> {
        fs.iter().filter(|(k, _)| *k == n).map(|(_, f)| f).collect()
    }

    fn sub(f: &F) -> Vec<(u32, F)> {
        match f {
            F::B(b) => fields(b),
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn varints() {
        for (v, want) in [
            (0u64, vec![0u8]),
            (1, vec![1]),
            (127, vec![0x7f]),
            (128, vec![0x80, 1]),
            (300, vec![0xac, 2]),
            (
                u64::MAX,
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1],
            ),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out, want, "{v}");
            let mut i = 0;
            assert_eq!(varint(&out, &mut i), v);
        }
    }

    #[test]
    fn trace_round_trips() {
        let mut w = TraceWriter::new(Vec::new());
        let p = w.process_track(42, "work</script>").unwrap();
        let lane = w.child_track(p, "heap").unwrap();
        let c = w.counter_track(p, "mem.mapped", Unit::Bytes).unwrap();
        w.slice_begin(
            10,
            lane,
            "[heap] 0x1000-0x2000",
            &[("perms", Arg::Str("rw-p")), ("offset", Arg::Uint(0))],
        )
        .unwrap();
        w.instant(15, lane, "grow", &[("delta", Arg::Int(-4096))])
            .unwrap();
        w.counter(16, c, Value::Int(8192)).unwrap();
        w.counter(17, c, Value::Double(1.5)).unwrap();
        w.slice_end(20, lane, &[]).unwrap();
        let bytes = w.into_inner();

        let packets: Vec<Vec<(u32, F)>> = fields(&bytes)
            .iter()
            .map(|(k, f)| {
                assert_eq!(*k, TRACE_PACKET);
                sub(f)
            })
            .collect();
        assert_eq!(packets.len(), 8);
        for (i, p) in packets.iter().enumerate() {
            assert_eq!(get(p, PACKET_SEQUENCE_ID), [&F::V(SEQUENCE_ID)]);
            let flags = get(p, PACKET_SEQUENCE_FLAGS);
            if i == 0 {
                assert_eq!(flags, [&F::V(SEQ_INCREMENTAL_STATE_CLEARED)]);
            }
            if i >= 3 {
                assert_eq!(flags, [&F::V(SEQ_NEEDS_INCREMENTAL_STATE)]);
            }
        }
        // Process track.
        let td = sub(get(&packets[0], PACKET_TRACK_DESCRIPTOR)[0]);
        assert_eq!(get(&td, TRACK_UUID), [&F::V(p)]);
        let pd = sub(get(&td, TRACK_PROCESS)[0]);
        assert_eq!(get(&pd, PROCESS_PID), [&F::V(42)]);
        assert_eq!(get(&pd, PROCESS_NAME), [&F::B(b"work</script>".to_vec())]);
        // Child and counter tracks.
        let td = sub(get(&packets[1], PACKET_TRACK_DESCRIPTOR)[0]);
        assert_eq!(get(&td, TRACK_PARENT_UUID), [&F::V(p)]);
        assert_eq!(get(&td, TRACK_NAME), [&F::B(b"heap".to_vec())]);
        let td = sub(get(&packets[2], PACKET_TRACK_DESCRIPTOR)[0]);
        let cd = sub(get(&td, TRACK_COUNTER)[0]);
        assert_eq!(get(&cd, COUNTER_UNIT), [&F::V(Unit::Bytes as u64)]);
        // Slice begin with annotations.
        assert_eq!(get(&packets[3], PACKET_TIMESTAMP), [&F::V(10)]);
        let ev = sub(get(&packets[3], PACKET_TRACK_EVENT)[0]);
        assert_eq!(get(&ev, EVENT_TYPE), [&F::V(EventType::SliceBegin as u64)]);
        assert_eq!(get(&ev, EVENT_TRACK_UUID), [&F::V(lane)]);
        assert_eq!(
            get(&ev, EVENT_NAME),
            [&F::B(b"[heap] 0x1000-0x2000".to_vec())]
        );
        let anns = get(&ev, EVENT_DEBUG_ANNOTATIONS);
        assert_eq!(anns.len(), 2);
        let a = sub(anns[0]);
        assert_eq!(get(&a, ANNOTATION_NAME), [&F::B(b"perms".to_vec())]);
        assert_eq!(get(&a, ANNOTATION_STRING), [&F::B(b"rw-p".to_vec())]);
        // Instant with a negative int annotation.
        let ev = sub(get(&packets[4], PACKET_TRACK_EVENT)[0]);
        assert_eq!(get(&ev, EVENT_TYPE), [&F::V(EventType::Instant as u64)]);
        let a = sub(get(&ev, EVENT_DEBUG_ANNOTATIONS)[0]);
        assert_eq!(get(&a, ANNOTATION_INT), [&F::V(-4096i64 as u64)]);
        // Counters.
        let ev = sub(get(&packets[5], PACKET_TRACK_EVENT)[0]);
        assert_eq!(get(&ev, EVENT_COUNTER_VALUE), [&F::V(8192)]);
        let ev = sub(get(&packets[6], PACKET_TRACK_EVENT)[0]);
        assert_eq!(
            get(&ev, EVENT_DOUBLE_COUNTER_VALUE),
            [&F::D(1.5f64.to_bits())]
        );
        // Slice end.
        assert_eq!(get(&packets[7], PACKET_TIMESTAMP), [&F::V(20)]);
        let ev = sub(get(&packets[7], PACKET_TRACK_EVENT)[0]);
        assert_eq!(get(&ev, EVENT_TYPE), [&F::V(EventType::SliceEnd as u64)]);
        assert!(get(&ev, EVENT_NAME).is_empty());
    }

    #[test]
    fn exports_the_small_v2_timeline() {
        let text = include_str!("../../../tests/data/timeline-v2-small.jsonl");
        let (stats, bytes) = export_v2(text.as_bytes(), Vec::new()).unwrap();
        let mut born = 0;
        let mut gone = 0;
        let mut procs = std::collections::HashSet::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            match (v["type"].as_str(), v["op"].as_str()) {
                (Some("region"), Some("born")) => born += 1,
                (Some("region"), Some("died" | "end")) => gone += 1,
                _ => {}
            }
            if let Some(p) = v["proc"].as_u64() {
                procs.insert(p);
            }
        }
        assert!(born > 0);
        assert_eq!(stats.slices, born);
        assert_eq!(stats.processes, procs.len() as u64);
        // Decode: every begin has its end, on the same track.
        let mut open = std::collections::HashSet::new();
        let (mut begins, mut ends, mut descriptors) = (0, 0, 0);
        for (_, p) in fields(&bytes) {
            let p = sub(&p);
            if !get(&p, PACKET_TRACK_DESCRIPTOR).is_empty() {
                descriptors += 1;
            }
            for ev in get(&p, PACKET_TRACK_EVENT) {
                let ev = sub(ev);
                let F::V(track) = get(&ev, EVENT_TRACK_UUID)[0] else {
                    panic!()
                };
                // Annotation values are bare names, never JSON text.
                for a in get(&ev, EVENT_DEBUG_ANNOTATIONS) {
                    for v in get(&sub(a), ANNOTATION_STRING) {
                        let F::B(v) = v else { panic!() };
                        assert!(!v.starts_with(b"\""), "{}", String::from_utf8_lossy(v));
                    }
                }
                match get(&ev, EVENT_TYPE)[0] {
                    F::V(1) => {
                        begins += 1;
                        assert!(open.insert(*track));
                    }
                    F::V(2) => {
                        ends += 1;
                        assert!(open.remove(track));
                    }
                    _ => {}
                }
            }
        }
        // The small timeline has one closed uncertain interval.
        assert_eq!(stats.uncertain, 1);
        assert_eq!(begins, born + stats.uncertain);
        assert_eq!(ends, gone + stats.uncertain);
        assert!(descriptors as u64 >= stats.processes + stats.slices);
    }

    /// An exit that carries an OOM kill: an `oom_kill` instant on the
    /// process's track at the kill's moment, beside the exit's.
    #[test]
    fn an_oom_kill_is_an_instant_at_its_moment() {
        let text = include_str!("../../../tests/data/timeline-v2-small.jsonl").replace(
            r#""start_time":900000,"exit_code":0}"#,
            r#""start_time":900000,"exit_signal":"SIGKILL","oom_kill_ns":99000000}"#,
        );
        assert!(text.contains("oom_kill_ns"));
        let (stats, bytes) = export_v2(text.as_bytes(), Vec::new()).unwrap();
        let (plain, _) = export_v2(
            include_str!("../../../tests/data/timeline-v2-small.jsonl").as_bytes(),
            Vec::new(),
        )
        .unwrap();
        assert_eq!(stats.instants, plain.instants + 1);
        let mut process_track = None;
        let mut kills = Vec::new();
        let mut exits = Vec::new();
        for (_, p) in fields(&bytes) {
            let p = sub(&p);
            for td in get(&p, PACKET_TRACK_DESCRIPTOR) {
                let td = sub(td);
                if !get(&td, TRACK_PROCESS).is_empty() {
                    process_track = Some(get(&td, TRACK_UUID)[0].clone());
                }
            }
            for ev in get(&p, PACKET_TRACK_EVENT) {
                let ev = sub(ev);
                let name = get(&ev, EVENT_NAME);
                let at = (
                    get(&p, PACKET_TIMESTAMP)[0].clone(),
                    get(&ev, EVENT_TRACK_UUID)[0].clone(),
                );
                if name == [&F::B(b"oom_kill".to_vec())] {
                    kills.push(at);
                } else if name == [&F::B(b"exit".to_vec())] {
                    exits.push(at);
                }
            }
        }
        let track = process_track.unwrap();
        assert_eq!(kills, [(F::V(99_000_000), track.clone())]);
        assert_eq!(exits, [(F::V(100_000_000), track)]);
    }
}
