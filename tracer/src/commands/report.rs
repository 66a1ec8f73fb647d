//! `mmtrace report FILE`: a plain text summary of an `mmtrace.timeline/v1`
//! document (what `mmtrace record` writes), for a person who has never seen
//! mmtrace.
//!
//! The report has a header (the command, host, kernel, when and how long,
//! lost events and drift), then one section per process: its lifetime and
//! exit, peak memory, biggest regions, regions with the most page faults,
//! short-lived mappings, memory mapped but never touched, checks and drift
//! against /proc/PID/maps, and intervals when the model was uncertain.
//!
//! Lines fit in [`WIDTH`] columns (long paths are shortened from the left).
//! Every string from the file goes through [`escape_text`], so a hostile
//! file cannot send escape sequences to the terminal.

use std::{collections::BTreeMap, fmt::Write as _, io, path::Path};

use crate::model::{Cause, CheckBasis};
use crate::output::{
    names::{escape_text, hex, human_size},
    timeline::{self, MapsEntry, Process, Region, Timeline},
    timeline2::{self as v2, Record},
};

/// Lines of the report fit in this many columns.
pub const WIDTH: usize = 100;

/// Width of the labels of `Label  value` lines.
const LABEL: usize = 14;

/// What the report shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportOptions {
    /// A region unmapped at most this long after it was mapped is
    /// "short-lived" (ns). Default: 100 ms.
    pub short_lived_ns: u64,
    /// Length of the "top" lists (biggest regions, most faults, ...).
    /// Default: 10.
    pub top: usize,
    /// Larger files are refused.
    pub max_size: u64,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            short_lived_ns: 100_000_000,
            top: 10,
            max_size: 256 << 20,
        }
    }
}

/// Why there is no report. Each message is one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: io::Error },
    #[error("{path} is not a regular file")]
    NotFile { path: String },
    #[error("{path} has {size} bytes, more than --max-size ({max}); raise it to read this file")]
    TooLarge { path: String, size: u64, max: u64 },
    #[error("{path} is empty")]
    Empty { path: String },
    #[error("{path} is not JSON: {error}")]
    NotJson {
        path: String,
        error: serde_json::Error,
    },
    #[error("{path} is truncated ({error})")]
    Truncated {
        path: String,
        error: serde_json::Error,
    },
    /// `found` says what the file holds instead: `schema "X"`, `no "schema"
    /// field`, ...
    #[error(
        "{path} is not an mmtrace timeline ({found}; this mmtrace reads {})",
        timeline::SCHEMA
    )]
    NotTimeline { path: String, found: String },
    /// The right schema, but the document does not have its shape.
    #[error("{path} does not match {}: {detail}", timeline::SCHEMA)]
    Shape { path: String, detail: String },
    /// A v2 recording with a line that is not a record of its schema.
    #[error("{path} does not match {}: {detail}", v2::SCHEMA)]
    ShapeV2 { path: String, detail: String },
    #[error("cannot write the report: {0}")]
    Write(io::Error),
}

/// `mmtrace report FILE`: reads the timeline at `path` and writes the report
/// to `out`.
pub fn run(path: &Path, opts: &ReportOptions, out: &mut dyn io::Write) -> Result<(), ReportError> {
    let text = match open_v2(path)? {
        // A v2 recording is read one line at a time: no size limit.
        // An OOM kill is explained from a second pass over the file.
        Some(input) => render_v2(&path.display().to_string(), input, opts, || {
            open_v2(path)?.ok_or_else(|| ReportError::ShapeV2 {
                path: path.display().to_string(),
                detail: "the file changed while it was read".to_string(),
            })
        })?,
        None => render(&load(path, opts.max_size)?, opts),
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(ReportError::Write)
}

/// The file, opened for reading, when it is a v2 recording (its first
/// line is a v2 header); None for anything else (read as v1).
fn open_v2(path: &Path) -> Result<Option<io::BufReader<std::fs::File>>, ReportError> {
    use std::io::{BufRead, Seek};
    let name = path.display().to_string();
    let read_error = |error| ReportError::Read {
        path: name.clone(),
        error,
    };
    let meta = std::fs::metadata(path).map_err(read_error)?;
    if !meta.is_file() {
        return Err(ReportError::NotFile { path: name });
    }
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut input = io::BufReader::new(file);
    // A v2 header line starts so (mmtrace writes it first).
    let head = input.fill_buf().map_err(read_error)?;
    if !head.starts_with(b"{\"type\":\"header\"") {
        return Ok(None);
    }
    input.rewind().map_err(read_error)?;
    Ok(Some(input))
}

/// Reads a v2 recording from `input` in one pass and renders its report.
/// Memory follows what is alive at each line (open regions, live
/// processes), plus each finished process's summary (its section, written
/// at its exit, and its drift), kept for the end: the header, first in the
/// report, needs the totals.
///
/// When a process was OOM-killed, `again` gives the recording once more:
/// a second pass gathers what grew before each kill (see [`oom_kills`]),
/// for a section that opens the report.
pub fn render_v2<R: io::BufRead, A: io::BufRead>(
    name: &str,
    input: R,
    opts: &ReportOptions,
    again: impl FnOnce() -> Result<A, ReportError>,
) -> Result<String, ReportError> {
    let (meta, done) = read_v2(name, input, opts, &mut |_| {})?;
    // (proc, kill, index among the summaries)
    let kills: Vec<(u64, u64, usize)> = done
        .iter()
        .enumerate()
        .filter_map(|(i, (proc, s))| Some((*proc, s.oom_kill_ns?, i)))
        .collect();
    let summaries: Vec<Summary> = done.into_values().collect();
    let mut oom = String::new();
    if !kills.is_empty() {
        let procs: Vec<(u64, u64)> = kills.iter().map(|k| (k.0, k.1)).collect();
        let growth = oom_kills(name, again()?, &procs, opts.top)?;
        for (k, g) in kills.iter().zip(&growth) {
            oom.push('\n');
            oom_section(&mut oom, &summaries[k.2], g);
        }
    }
    Ok(render_summaries_with(&meta, summaries, &oom))
}

/// Reads a v2 recording in one pass (see [`render_v2`]), showing each
/// record to `observe` first: the header's facts and each process's
/// summary, by `proc`.
fn read_v2<R: io::BufRead>(
    name: &str,
    input: R,
    opts: &ReportOptions,
    observe: &mut dyn FnMut(&Record),
) -> Result<(Meta, BTreeMap<u64, Summary>), ReportError> {
    let mut r = v2::Reader::new(input);
    let shape = |detail: String| ReportError::ShapeV2 {
        path: name.to_string(),
        detail,
    };
    let line_error = |e: v2::LineError| match e {
        v2::LineError::Io(error) => ReportError::Read {
            path: name.to_string(),
            error,
        },
        e => ReportError::ShapeV2 {
            path: name.to_string(),
            detail: e.to_string(),
        },
    };
    let first = r.next_record().map_err(|e| match e {
        v2::LineError::Json { .. } => ReportError::NotTimeline {
            path: name.to_string(),
            found: "a first line that is not a v2 header".to_string(),
        },
        e => line_error(e),
    })?;
    let header = match first {
        Some(Record::Header(h)) if h.schema == v2::SCHEMA => h,
        Some(Record::Header(h)) => {
            return Err(ReportError::NotTimeline {
                path: name.to_string(),
                found: format!(
                    "schema {}",
                    shorten_json(&serde_json::Value::String(h.schema))
                ),
            })
        }
        None if r.cut => {
            return Err(ReportError::ShapeV2 {
                path: name.to_string(),
                detail: "line 1: cut short".to_string(),
            })
        }
        None => return Err(ReportError::Empty { path: name.into() }),
        Some(_) => return Err(shape("line 1: not a header".to_string())),
    };
    let mut meta = Meta {
        command: header.command,
        host: header.host,
        kernel: header.kernel,
        started_at: header.started_at,
        incomplete: true,
        ..Meta::default()
    };
    let mut live: std::collections::HashMap<u64, Live> = std::collections::HashMap::new();
    let mut done: BTreeMap<u64, Summary> = BTreeMap::new();
    let mut last_t = 0u64;
    loop {
        let line = r.line + 1;
        let Some(rec) = r.next_record().map_err(line_error)? else {
            break;
        };
        if !meta.incomplete {
            return Err(shape(format!("line {line}: a record after the end record")));
        }
        let at_line = |e: String| shape(format!("line {line}: {e}"));
        observe(&rec);
        match rec {
            Record::Header(_) => return Err(at_line("a second header".into())),
            Record::Process(p) => {
                last_t = last_t.max(p.t_ns);
                let l = live.entry(p.proc).or_insert_with(|| Live::new(&p, opts));
                l.process(&p);
                if matches!(p.event, v2::ProcessEvent::Exit | v2::ProcessEvent::End) {
                    if let Some(l) = live.remove(&p.proc) {
                        let mut sum = l.finish();
                        sum.render_early(&meta);
                        done.insert(p.proc, sum);
                    }
                }
            }
            Record::Region(rr) => {
                last_t = last_t.max(rr.t_ns);
                let l = live.get_mut(&rr.proc).ok_or_else(|| {
                    at_line(format!("a region of process {}, never started", rr.proc))
                })?;
                l.region(rr).map_err(at_line)?;
            }
            Record::Counters(c) => {
                if let Some(l) = live.get_mut(&c.proc) {
                    l.sum.counters(&timeline::CounterSample {
                        t_ns: c.t_ns,
                        mapped: c.mapped,
                        heap: c.heap,
                        stack: c.stack,
                        rss: c.rss,
                        faults: c.faults,
                    });
                }
            }
            Record::Check(c) => {
                // A check voided by a change near its read is made again:
                // not counted; an exit check with nothing to compare is.
                let counted = !c.void || c.void_reason.is_some();
                if let (Some(l), true) = (live.get_mut(&c.proc), counted) {
                    l.sum.check(&timeline::Check {
                        t_ns: c.t_ns,
                        reason: c.reason,
                        regions: c.regions,
                        drift: c.drift,
                        against: c.against,
                        void: c.void_reason,
                    });
                }
            }
            Record::Drift(d) => {
                for e in d.model.iter().chain(d.kernel.iter()) {
                    for a in [&e.start, &e.end] {
                        if parse_addr(a).is_none() {
                            return Err(at_line(format!("drift: {a:?} is not an address")));
                        }
                    }
                }
                if let Some(l) = live.get_mut(&d.proc) {
                    l.sum.drift.push(timeline::Drift {
                        t_ns: d.t_ns,
                        kind: d.kind,
                        model: d.model,
                        kernel: d.kernel,
                        fields: d.fields,
                        counters: d.counters,
                    });
                }
            }
            Record::Uncertain(u) => {
                if let Some(l) = live.get_mut(&u.proc) {
                    l.sum.uncertain.push(timeline::Interval {
                        from_ns: u.from_ns,
                        to_ns: u.to_ns,
                    });
                }
            }
            Record::Lost(lost) => {
                meta.lost_events = meta.lost_events.saturating_add(lost.count);
                let n = meta.lost_by_kind.entry(lost.kind).or_default();
                *n = n.saturating_add(lost.count);
            }
            Record::End(end) => {
                meta.incomplete = false;
                meta.duration_ns = end.duration_ns;
                meta.stack_source = end.stack_source;
                meta.lost_events = end.lost_events;
                meta.lost_by_kind = end.lost_by_kind;
            }
        }
    }
    if meta.incomplete {
        meta.duration_ns = last_t;
        meta.stack_source = "unknown (the recording was cut short)".to_string();
    }
    // Processes still open (a recording cut short): as they were.
    for (proc, l) in live {
        done.insert(proc, l.finish());
    }
    Ok((meta, done))
}

/// `mmtrace report FILE --html OUT`: reads the v2 recording at `path` in
/// one pass (a v1 document whole) and writes the page (see
/// [`crate::output::html`]) to `out`.
pub fn html(
    path: &Path,
    opts: &ReportOptions,
    out: &mut dyn io::Write,
) -> Result<crate::output::html::HtmlStats, ReportError> {
    let name = path.display().to_string();
    let mut collector = crate::output::html::Collector::new();
    let Some(input) = open_v2(path)? else {
        // A v1 document, read whole (within --max-size), shown to the
        // page as the records a v2 recording of it would have.
        let t = load(path, opts.max_size)?;
        let meta = Meta::of(&t);
        let mut sections = std::collections::HashMap::new();
        let mut summaries = Vec::new();
        for (i, p) in t.processes.iter().enumerate() {
            let proc = i as u64 + 1;
            for rec in v1_records(proc, p) {
                collector.observe(&rec);
            }
            let mut sum = Summary::new(p, opts);
            for r in &p.regions {
                sum.region(r);
            }
            for c in &p.counters {
                sum.counters(c);
            }
            for c in &p.checks {
                sum.check(c);
            }
            sum.drift.extend(p.drift.iter().cloned());
            sum.uncertain.extend(p.uncertain.iter().cloned());
            let mut text = String::new();
            process(&mut text, &meta, &sum);
            sections.insert(proc, text);
            summaries.push(sum);
        }
        collector.observe(&Record::End(v2::End {
            t_ns: t.duration_ns,
            duration_ns: t.duration_ns,
            stack_source: t.stack_source.clone(),
            events: 0,
            lost_events: t.lost_events,
            lost_by_kind: t.lost_by_kind.clone(),
            processes: 0,
            regions: 0,
            region_records: 0,
            checks: 0,
            drift: 0,
        }));
        for (i, g) in oom_kills_v1(&t, opts.top) {
            let mut text = String::new();
            oom_section(&mut text, &summaries[i], &g);
            collector.oom_section(i as u64 + 1, text);
        }
        let mut head = String::new();
        header(&mut head, &meta, &summaries);
        return collector
            .write(out, &title_of(&meta), &head, &sections, false)
            .map_err(ReportError::Write);
    };
    let (meta, done) = read_v2(&name, input, opts, &mut |rec| collector.observe(rec))?;
    // An OOM kill's section (what grew, the curves) goes above its
    // process's picture: from a second pass, as `report` does.
    let kills: Vec<(u64, u64)> = done
        .iter()
        .filter_map(|(proc, s)| Some((*proc, s.oom_kill_ns?)))
        .collect();
    if !kills.is_empty() {
        let again = open_v2(path)?.ok_or_else(|| ReportError::ShapeV2 {
            path: name.clone(),
            detail: "the file changed while it was read".to_string(),
        })?;
        let growth = oom_kills(&name, again, &kills, opts.top)?;
        for (k, g) in kills.iter().zip(&growth) {
            let mut text = String::new();
            oom_section(&mut text, &done[&k.0], g);
            collector.oom_section(k.0, text);
        }
    }
    let summaries: Vec<&Summary> = done.values().collect();
    let mut head = String::new();
    header_of(&mut head, &meta, &summaries);
    let sections: std::collections::HashMap<u64, String> = done
        .iter()
        .map(|(proc, sum)| {
            let mut s = String::new();
            process(&mut s, &meta, sum);
            (*proc, s)
        })
        .collect();
    collector
        .write(out, &title_of(&meta), &head, &sections, meta.incomplete)
        .map_err(ReportError::Write)
}

/// The page's title: the command recorded, or the host.
fn title_of(meta: &Meta) -> String {
    match &meta.command {
        Some(argv) if !argv.is_empty() => command_line(argv),
        _ => format!("recording of {}", esc(&meta.host)),
    }
}

/// The records a v2 recording of a v1 process would hold (for the HTML
/// page): its start and exit, each region's birth, changes and death, its
/// counter samples (v1 counts faults per sample; v2, since the start).
fn v1_records(proc: u64, p: &Process) -> Vec<Record> {
    let mut out = Vec::new();
    let first = p
        .regions
        .iter()
        .map(|r| r.born_ns)
        .chain(p.exec_at_ns)
        .min()
        .unwrap_or(0);
    let process = |t_ns: u64, event: v2::ProcessEvent| {
        Record::Process(v2::ProcessRecord {
            t_ns,
            proc,
            pid: p.pid,
            event,
            ppid: p.ppid,
            comm: p.comm.clone(),
            exe: p.exe.clone(),
            abi: None,
            shared_with: None,
            seeded_by: None,
            start_time: None,
            exit_code: p.exit_code,
            exit_signal: p.exit_signal.clone(),
            oom_kill_ns: p.oom_kill_ns.filter(|_| event == v2::ProcessEvent::Exit),
            cgroup: None,
        })
    };
    out.push(process(first, v2::ProcessEvent::Start));
    for r in &p.regions {
        let record =
            |t_ns: u64, op: v2::RegionOp, start: &str, end: &str, perms: &str| v2::RegionRecord {
                t_ns,
                proc,
                pid: p.pid,
                region: r.id,
                op,
                start: start.to_string(),
                end: end.to_string(),
                perms: perms.to_string(),
                cause: None,
                born: None,
                old_start: None,
                old_end: None,
                faults: None,
            };
        let born_entry = r.history.first().filter(|c| c.op == crate::model::Op::Born);
        let (start, end, perms) = born_entry.map_or((&r.start, &r.end, &r.perms), |c| {
            (&c.start, &c.end, &c.perms)
        });
        let mut born = record(r.born_ns, v2::RegionOp::Born, start, end, perms);
        born.cause = Some(r.born_by);
        born.born = Some(v2::Birth {
            kind: r.kind.clone(),
            path: r.path.clone(),
            offset: r.offset,
            dev: r.dev.clone(),
            inode: r.inode,
            parent: r.parent,
        });
        out.push(Record::Region(born));
        for c in &r.history {
            if c.op == crate::model::Op::Born {
                continue;
            }
            let op = v2::RegionOp::of(crate::model::ChangeOp::Entry(c.op));
            out.push(Record::Region(record(
                c.t_ns, op, &c.start, &c.end, &c.perms,
            )));
        }
        let mut last = match r.died_ns {
            Some(t) => record(t, v2::RegionOp::Died, &r.start, &r.end, &r.perms),
            None => record(
                p.exit_at_ns.unwrap_or(r.born_ns),
                v2::RegionOp::End,
                &r.start,
                &r.end,
                &r.perms,
            ),
        };
        last.cause = r.died_by;
        let f = &r.faults;
        last.faults = Some(v2::Faults {
            total: f.total,
            read: f.read,
            write: f.write,
            exec: f.exec,
            present: f.present,
            first_ns: f.first_ns,
            last_ns: None,
            touched_bytes: f.touched_bytes,
            mapped_bytes: f.mapped_bytes,
        });
        out.push(Record::Region(last));
    }
    let mut faults = 0u64;
    for c in &p.counters {
        faults = faults.saturating_add(c.faults);
        out.push(Record::Counters(v2::Counters {
            t_ns: c.t_ns,
            proc,
            pid: p.pid,
            mapped: c.mapped,
            heap: c.heap,
            stack: c.stack,
            rss: c.rss,
            faults,
        }));
    }
    if let Some(t) = p.exit_at_ns {
        out.push(process(t, v2::ProcessEvent::Exit));
    }
    out
}

/// A live process of a v2 recording being read: its summary so far and
/// its open regions.
struct Live {
    p: Process,
    sum: Summary,
    regions: std::collections::HashMap<u64, Region>,
}

impl Live {
    fn new(rec: &v2::ProcessRecord, opts: &ReportOptions) -> Live {
        let p = Process {
            pid: rec.pid,
            start_time: None,
            ppid: None,
            comm: String::new(),
            exe: None,
            abi: None,
            shared_with: rec.shared_with,
            seeded_by: rec.seeded_by.unwrap_or(crate::model::SeededBy::Proc),
            exec_at_ns: None,
            exit_at_ns: None,
            exit_code: None,
            exit_signal: None,
            oom_kill_ns: None,
            regions: Vec::new(),
            counters: Vec::new(),
            drift: Vec::new(),
            checks: Vec::new(),
            uncertain: Vec::new(),
        };
        Live {
            sum: Summary::new(&p, opts),
            p,
            regions: std::collections::HashMap::new(),
        }
    }

    fn process(&mut self, rec: &v2::ProcessRecord) {
        let p = &mut self.p;
        p.ppid = rec.ppid;
        p.comm.clone_from(&rec.comm);
        p.exe.clone_from(&rec.exe);
        if rec.abi.is_some() {
            p.abi.clone_from(&rec.abi);
        }
        if rec.start_time.is_some() {
            p.start_time = rec.start_time;
        }
        match rec.event {
            v2::ProcessEvent::Start => {
                if let Some(s) = rec.seeded_by {
                    p.seeded_by = s;
                }
                if p.seeded_by == crate::model::SeededBy::Exec {
                    p.exec_at_ns = Some(rec.t_ns);
                }
            }
            v2::ProcessEvent::Exec => {
                p.exec_at_ns = Some(rec.t_ns);
                if let Some(s) = rec.seeded_by {
                    p.seeded_by = s;
                }
            }
            v2::ProcessEvent::Exit => {
                p.exit_at_ns = Some(rec.t_ns);
                p.exit_code = rec.exit_code;
                p.exit_signal.clone_from(&rec.exit_signal);
            }
            v2::ProcessEvent::End => {}
        }
        if rec.oom_kill_ns.is_some() {
            p.oom_kill_ns = rec.oom_kill_ns;
            self.sum.oom_kill_ns = rec.oom_kill_ns;
        }
        if let Some(cg) = &rec.cgroup {
            self.sum.cgroup = Some(cgroup_text(cg));
        }
        self.sum.set_process(p);
    }

    fn region(&mut self, rr: v2::RegionRecord) -> Result<(), String> {
        let addr_of = |s: &str| parse_addr(s).ok_or_else(|| format!("{s:?} is not an address"));
        let (start, end) = (addr_of(&rr.start)?, addr_of(&rr.end)?);
        if end < start {
            return Err(format!("end {} is below start {}", rr.end, rr.start));
        }
        for a in rr.old_start.iter().chain(rr.old_end.iter()) {
            addr_of(a)?;
        }
        if rr.op == v2::RegionOp::Born {
            let b = rr.born.clone().unwrap_or(v2::Birth {
                kind: "anon".to_string(),
                path: None,
                offset: 0,
                dev: None,
                inode: None,
                parent: None,
            });
            self.regions.insert(
                rr.region,
                Region {
                    id: rr.region,
                    start: String::new(),
                    end: String::new(),
                    perms: String::new(),
                    kind: b.kind,
                    path: b.path,
                    offset: b.offset,
                    dev: b.dev,
                    inode: b.inode,
                    born_ns: rr.t_ns,
                    born_by: rr.cause.unwrap_or(Cause::Proc),
                    parent: b.parent,
                    died_ns: None,
                    died_by: None,
                    history: Vec::new(),
                    faults: timeline::Faults::default(),
                },
            );
        }
        let Some(r) = self.regions.get_mut(&rr.region) else {
            return Err(format!("region {} was never born", rr.region));
        };
        r.start = rr.start;
        r.end = rr.end;
        r.perms = rr.perms;
        // Its kind as at its end (only an anonymous region's follows its
        // protection).
        if matches!(r.kind.as_str(), "anon" | "guard") {
            r.kind = if r.perms.starts_with("---") {
                "guard"
            } else {
                "anon"
            }
            .to_string();
        }
        if matches!(rr.op, v2::RegionOp::Died | v2::RegionOp::End) {
            if rr.op == v2::RegionOp::Died {
                r.died_ns = Some(rr.t_ns.max(r.born_ns));
                r.died_by = Some(rr.cause.unwrap_or(Cause::Munmap));
            }
            if let Some(f) = rr.faults {
                r.faults = timeline::Faults {
                    total: f.total,
                    read: f.read,
                    write: f.write,
                    exec: f.exec,
                    present: f.present,
                    first_ns: f.first_ns,
                    touched_bytes: f.touched_bytes,
                    mapped_bytes: f.mapped_bytes,
                    bucket_ns: 0,
                    buckets: Vec::new(),
                };
            }
            if let Some(r) = self.regions.remove(&rr.region) {
                if !discarded_seed(&r) {
                    self.sum.region(&r);
                }
            }
        }
        Ok(())
    }

    /// The summary, with the regions never closed (as they were last).
    fn finish(mut self) -> Summary {
        let mut open: Vec<Region> = self.regions.into_values().collect();
        open.sort_by_key(|r| r.id);
        for r in &open {
            self.sum.region(r);
        }
        self.sum.settle();
        self.sum
    }
}

/// A region read from /proc after an exec that the model had not applied
/// yet, dropped at the exec (it ends at its birth): it describes the new
/// program, which the exec's own regions describe. A v1 document never
/// holds one.
fn discarded_seed(r: &Region) -> bool {
    r.born_by == Cause::Proc && r.died_by == Some(Cause::Exec) && r.died_ns == Some(r.born_ns)
}

/// Reads and checks a timeline file.
pub fn load(path: &Path, max_size: u64) -> Result<Timeline, ReportError> {
    use std::io::Read;
    let name = path.display().to_string();
    let read_error = |error| ReportError::Read {
        path: name.clone(),
        error,
    };
    // Not a FIFO or a device: what has no end cannot be read whole.
    let meta = std::fs::metadata(path).map_err(read_error)?;
    if !meta.is_file() {
        return Err(ReportError::NotFile { path: name });
    }
    if meta.len() > max_size {
        return Err(ReportError::TooLarge {
            path: name,
            size: meta.len(),
            max: max_size,
        });
    }
    let file = std::fs::File::open(path).map_err(read_error)?;
    // The file may grow while it is read: never past the bound.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max_size.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > max_size {
        return Err(ReportError::TooLarge {
            path: name,
            size: bytes.len() as u64,
            max: max_size,
        });
    }
    parse(&name, &bytes)
}

/// Parses a timeline document; `name` names it in errors.
pub fn parse(name: &str, bytes: &[u8]) -> Result<Timeline, ReportError> {
    let path = name.to_string();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ReportError::Empty { path });
    }
    // First as any JSON, to tell another document from a broken timeline.
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|error| {
        if error.is_eof() {
            ReportError::Truncated {
                path: path.clone(),
                error,
            }
        } else {
            ReportError::NotJson {
                path: path.clone(),
                error,
            }
        }
    })?;
    let found = match &value {
        serde_json::Value::Object(map) => match map.get("schema") {
            Some(serde_json::Value::String(s)) if s == timeline::SCHEMA => None,
            Some(v) => Some(format!("schema {}", shorten_json(v))),
            None => Some("no \"schema\" field".to_string()),
        },
        v => Some(format!("a JSON {}, not an object", json_type(v))),
    };
    if let Some(found) = found {
        return Err(ReportError::NotTimeline { path, found });
    }
    // Again from the bytes, so that errors have a line and column.
    let timeline: Timeline = serde_json::from_slice(bytes).map_err(|e| ReportError::Shape {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    check_addresses(&timeline).map_err(|detail| ReportError::Shape { path, detail })?;
    Ok(timeline)
}

/// A JSON value in one short line, for messages.
fn shorten_json(v: &serde_json::Value) -> String {
    // serde_json escapes control characters in strings.
    fit_right(&v.to_string(), 60)
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Parses a `0x...` address.
fn parse_addr(s: &str) -> Option<u64> {
    let digits = s.strip_prefix("0x")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// An address already checked by [`check_addresses`].
fn addr(s: &str) -> u64 {
    parse_addr(s).unwrap_or(0)
}

/// Every address in the timeline is `0x` + hex, and no region ends before
/// it starts.
fn check_addresses(t: &Timeline) -> Result<(), String> {
    fn check(what: impl Fn() -> String, field: &str, s: &str) -> Result<u64, String> {
        parse_addr(s).ok_or_else(|| {
            format!(
                "{}: {field} {} is not an address (0x and hex digits)",
                what(),
                shorten_json(&serde_json::Value::String(s.to_string()))
            )
        })
    }
    for p in &t.processes {
        for r in &p.regions {
            let what = || format!("process {}, region {}", p.pid, r.id);
            let start = check(what, "start", &r.start)?;
            let end = check(what, "end", &r.end)?;
            if end < start {
                return Err(format!(
                    "{}: end {} is below start {}",
                    what(),
                    r.end,
                    r.start
                ));
            }
            for c in &r.history {
                check(what, "history start", &c.start)?;
                check(what, "history end", &c.end)?;
            }
        }
        for d in &p.drift {
            let what = || format!("process {}, drift at {} ns", p.pid, d.t_ns);
            for e in d.model.iter().chain(d.kernel.iter()) {
                check(what, "start", &e.start)?;
                check(what, "end", &e.end)?;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

/// Appends one line to a String.
macro_rules! ln {
    ($s:expr) => {
        $s.push('\n')
    };
    ($s:expr, $($arg:tt)*) => {{
        let _ = write!($s, $($arg)*);
        $s.push('\n');
    }};
}

/// The report for a (checked) timeline.
pub fn render(t: &Timeline, opts: &ReportOptions) -> String {
    let meta = Meta::of(t);
    let summaries: Vec<Summary> = t
        .processes
        .iter()
        .map(|p| {
            let mut sum = Summary::new(p, opts);
            for r in &p.regions {
                sum.region(r);
            }
            for c in &p.counters {
                sum.counters(c);
            }
            for c in &p.checks {
                sum.check(c);
            }
            sum.drift.extend(p.drift.iter().cloned());
            sum.uncertain.extend(p.uncertain.iter().cloned());
            sum
        })
        .collect();
    let mut oom = String::new();
    for (i, g) in oom_kills_v1(t, opts.top) {
        oom.push('\n');
        oom_section(&mut oom, &summaries[i], &g);
    }
    render_summaries_with(&meta, summaries, &oom)
}

/// The report of a recording's header and its processes' summaries, with
/// `first` (sections that open the report, each starting with an empty
/// line) after the header. The sections
/// written at the processes' exits move into the report (sized for them
/// first): they are not held twice.
fn render_summaries_with(meta: &Meta, mut summaries: Vec<Summary>, first: &str) -> String {
    let mut head = String::new();
    header(&mut head, meta, &summaries);
    head.push_str(first);
    let written: usize = summaries
        .iter()
        .map(|p| p.section.as_ref().map_or(0, |s| s.len() + 1))
        .sum();
    let mut s = String::with_capacity(head.len() + written);
    s.push_str(&head);
    drop(head);
    for p in &mut summaries {
        ln!(s);
        match p.section.take() {
            Some(section) => s.push_str(&section),
            None => process(&mut s, meta, p),
        }
    }
    s
}

/// Looked at before an OOM kill: this long.
pub const OOM_WINDOW_NS: u64 = 60_000_000_000;

/// What grew in one process in the [`OOM_WINDOW_NS`] before its OOM kill.
#[derive(Debug, Default)]
pub struct OomGrowth {
    pub kill_ns: u64,
    /// The last counters sample at or before the kill: t_ns, mapped, RSS.
    pub sample: Option<(u64, u64, Option<u64>)>,
    /// Bytes added (births and growths) in the window, by region kind.
    pub by_kind: BTreeMap<String, u64>,
    /// The regions that grew most: bytes added, then the region as last
    /// seen before the kill.
    pub regions: Vec<(u64, Region)>,
    pub total: u64,
    /// Its mapped and resident memory, step by step, up to the kill (from
    /// the process's first record in the recording when it came later
    /// than a minute before the kill).
    pub curve: Option<OomCurve>,
}

/// Rows of an [`OomCurve`] at most.
pub const CURVE_ROWS: u64 = 12;
/// The shortest step of an [`OomCurve`]: `record` and the daemon sample a
/// process at most once a tick (50 ms), so shorter steps would be mostly
/// empty.
pub const CURVE_MIN_STEP_NS: u64 = 50_000_000;
/// Columns of an [`OomCurve`]'s bars.
const CURVE_BAR: u64 = 40;

/// The mapped and resident curves of a process before its OOM kill: the
/// window (the last minute, or the process's life when shorter) cut into
/// at most [`CURVE_ROWS`] steps of a round length (1, 2 or 5 times a power
/// of ten, [`CURVE_MIN_STEP_NS`] at least), the last ending at the kill;
/// each step holds the
/// last counters sample taken in it, or none (mmtrace samples a process
/// only when it had events: a step without a sample is shown as such, not
/// filled in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OomCurve {
    pub from_ns: u64,
    pub kill_ns: u64,
    pub step_ns: u64,
    /// Oldest first: the last sample of each step (t_ns, mapped, RSS).
    pub steps: Vec<Option<(u64, u64, Option<u64>)>>,
    /// Samples taken in the steps.
    pub samples: u64,
}

impl OomCurve {
    /// The steps from `from_ns` to `kill_ns`.
    pub fn new(from_ns: u64, kill_ns: u64) -> OomCurve {
        let span = kill_ns.saturating_sub(from_ns);
        let mut step = 10_000_000u64;
        'round: loop {
            for m in [1, 2, 5] {
                let s = step.saturating_mul(m);
                if (s >= CURVE_MIN_STEP_NS && span.div_ceil(s) <= CURVE_ROWS) || s == u64::MAX {
                    step = s;
                    break 'round;
                }
            }
            step = step.saturating_mul(10);
        }
        let n = usize::try_from(span.div_ceil(step).max(1)).unwrap_or(1);
        OomCurve {
            from_ns: kill_ns.saturating_sub(span),
            kill_ns,
            step_ns: step,
            steps: vec![None; n],
            samples: 0,
        }
    }

    /// A counters sample, in time order: kept as its step's last. Step `k`
    /// from the end holds the times in `(kill - (k+1) step, kill - k step]`
    /// (the first step also its start); a sample before `from_ns` or after
    /// the kill is in none.
    pub fn offer(&mut self, t_ns: u64, mapped: u64, rss: Option<u64>) {
        if t_ns > self.kill_ns || t_ns < self.from_ns {
            return;
        }
        let n = self.steps.len() as u64;
        // `from_ns` is at most n steps before the kill.
        let from_end = ((self.kill_ns - t_ns) / self.step_ns).min(n - 1);
        self.steps[(n - 1 - from_end) as usize] = Some((t_ns, mapped, rss));
        self.samples += 1;
    }

    /// When step `i` ends.
    fn step_end(&self, i: usize) -> u64 {
        let n = self.steps.len() as u64;
        self.kill_ns
            .saturating_sub((n - 1 - i as u64).saturating_mul(self.step_ns))
    }

    /// The table: one row per step (its end, how long before the kill,
    /// mapped and resident bytes, a bar: `#` resident, `.` mapped beyond
    /// it, to the scale of the highest value shown).
    fn render(&self, s: &mut String) {
        ln!(
            s,
            "  Mapped and resident memory before the kill ({} steps of {}, from {})",
            self.steps.len(),
            duration(self.step_ns),
            at(self.from_ns)
        );
        if self.samples == 0 {
            ln!(
                s,
                "    no counters sample in that time: mmtrace samples a process after its events"
            );
            return;
        }
        let max = self
            .steps
            .iter()
            .flatten()
            .map(|&(_, m, r)| m.max(r.unwrap_or(0)))
            .max()
            .unwrap_or(0)
            .max(1);
        let cols = |v: u64| -> usize {
            let c = (u128::from(v) * u128::from(CURVE_BAR) + u128::from(max) / 2) / u128::from(max);
            usize::try_from(c).unwrap_or(0).max(usize::from(v > 0))
        };
        let rows = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let end = self.step_end(i);
                let before = match self.kill_ns - end {
                    0 => "the kill".to_string(),
                    d => format!("-{}", duration(d)),
                };
                let (mapped, rss, bar) = match *step {
                    None => ("-".to_string(), "-".to_string(), "no sample".to_string()),
                    Some((_, mapped, rss)) => {
                        let (m, r) = (cols(mapped), rss.map_or(0, cols));
                        let bar = format!("{}{}", "#".repeat(r), ".".repeat(m.saturating_sub(r)));
                        (
                            human_size(mapped),
                            rss.map_or("unknown".to_string(), human_size),
                            bar,
                        )
                    }
                };
                Row {
                    cells: vec![at(end), before, mapped, rss],
                    tail: Tail::new(bar, "", ""),
                }
            })
            .collect();
        let scale = format!("# resident, . mapped: {} = {}", CURVE_BAR, human_size(max));
        table(
            s,
            &[
                ("STEP ENDS", Align::Right),
                ("TO KILL", Align::Right),
                ("MAPPED", Align::Right),
                ("RESIDENT", Align::Right),
                (scale.as_str(), Align::Left),
            ],
            rows,
        );
        ln!(
            s,
            "    (each step: the last of {} taken in it; -: none, no value is made up)",
            plural(self.samples, "sample", "samples")
        );
    }
}

/// The second pass over a recording (see [`oom_kills`]): for each
/// `(proc, kill_ns)`, the bytes each region of the process gained by
/// births and growths within the minute before the kill (a region merged
/// into another hands its gain to the survivor), the last counters sample
/// and the curves. Memory: one entry per region of those processes.
struct OomPass {
    accs: Vec<OomAcc>,
    index: std::collections::HashMap<u64, usize>,
    top: usize,
}

struct OomSeen {
    region: Region,
    size: u64,
    gained: u64,
}

#[derive(Default)]
struct OomAcc {
    regions: std::collections::HashMap<u64, OomSeen>,
    /// The gain of a region that died merged before its survivor's
    /// merge record came.
    merged: u64,
    /// The last merge record: (t_ns, the survivor), for the death of
    /// the region it absorbed when that comes after it.
    last_merge: Option<(u64, u64)>,
    out: OomGrowth,
}

impl OomPass {
    fn new(kills: &[(u64, u64)], top: usize) -> OomPass {
        OomPass {
            accs: kills
                .iter()
                .map(|&(_, kill_ns)| OomAcc {
                    out: OomGrowth {
                        kill_ns,
                        ..OomGrowth::default()
                    },
                    ..OomAcc::default()
                })
                .collect(),
            index: kills
                .iter()
                .enumerate()
                .map(|(i, &(proc, _))| (proc, i))
                .collect(),
            top,
        }
    }

    /// The accumulator of `proc`, its curve started at its first record.
    fn acc(&mut self, proc: u64, t_ns: u64) -> Option<&mut OomAcc> {
        let a = &mut self.accs[*self.index.get(&proc)?];
        if a.out.curve.is_none() {
            let kill = a.out.kill_ns;
            let from = kill.saturating_sub(OOM_WINDOW_NS).max(t_ns.min(kill));
            a.out.curve = Some(OomCurve::new(from, kill));
        }
        Some(a)
    }

    /// One record, in the recording's order.
    fn observe(&mut self, rec: Record) {
        let top = self.top;
        match rec {
            Record::Process(p) => {
                self.acc(p.proc, p.t_ns);
            }
            Record::Counters(c) => {
                if let Some(a) = self.acc(c.proc, c.t_ns) {
                    if c.t_ns <= a.out.kill_ns {
                        a.out.sample = Some((c.t_ns, c.mapped, c.rss));
                    }
                    if let Some(curve) = a.out.curve.as_mut() {
                        curve.offer(c.t_ns, c.mapped, c.rss);
                    }
                }
            }
            Record::Region(rr) => {
                let Some(a) = self.acc(rr.proc, rr.t_ns) else {
                    return;
                };
                if rr.t_ns > a.out.kill_ns {
                    return;
                }
                let window = rr.t_ns.saturating_add(OOM_WINDOW_NS) >= a.out.kill_ns;
                let size = addr(&rr.end).saturating_sub(addr(&rr.start));
                if rr.op == v2::RegionOp::Born {
                    let b = rr.born.clone().unwrap_or(v2::Birth {
                        kind: "anon".to_string(),
                        path: None,
                        offset: 0,
                        dev: None,
                        inode: None,
                        parent: None,
                    });
                    a.regions.insert(
                        rr.region,
                        OomSeen {
                            region: Region {
                                id: rr.region,
                                start: String::new(),
                                end: String::new(),
                                perms: String::new(),
                                kind: b.kind,
                                path: b.path,
                                offset: b.offset,
                                dev: b.dev,
                                inode: b.inode,
                                born_ns: rr.t_ns,
                                born_by: rr.cause.unwrap_or(Cause::Proc),
                                parent: b.parent,
                                died_ns: None,
                                died_by: None,
                                history: Vec::new(),
                                faults: timeline::Faults::default(),
                            },
                            size: 0,
                            gained: 0,
                        },
                    );
                }
                let Some(seen) = a.regions.get_mut(&rr.region) else {
                    return;
                };
                let added = size.saturating_sub(seen.size);
                let (op, cause) = (rr.op, rr.cause);
                seen.size = size;
                seen.region.start = rr.start;
                seen.region.end = rr.end;
                seen.region.perms = rr.perms;
                match op {
                    v2::RegionOp::Born | v2::RegionOp::Grow if window && added > 0 => {
                        seen.gained = seen.gained.saturating_add(added);
                        let kind = seen.region.kind.clone();
                        let k = a.out.by_kind.entry(kind).or_default();
                        *k = k.saturating_add(added);
                        a.out.total = a.out.total.saturating_add(added);
                    }
                    v2::RegionOp::Merge => {
                        seen.gained = seen.gained.saturating_add(std::mem::take(&mut a.merged));
                        a.last_merge = Some((rr.t_ns, rr.region));
                    }
                    v2::RegionOp::Died | v2::RegionOp::End => {
                        if let Some(gone) = a.regions.remove(&rr.region) {
                            if op == v2::RegionOp::Died && cause == Some(Cause::Merge) {
                                // Its gain goes to the region that absorbed it.
                                let survivor = a
                                    .last_merge
                                    .filter(|m| m.0 == rr.t_ns)
                                    .and_then(|m| a.regions.get_mut(&m.1));
                                match survivor {
                                    Some(s) => s.gained = s.gained.saturating_add(gone.gained),
                                    None => a.merged = a.merged.saturating_add(gone.gained),
                                }
                            } else if gone.gained > 0 {
                                // Gone before the kill: shown as it died.
                                let mut region = gone.region;
                                region.died_ns = Some(rr.t_ns);
                                region.died_by = cause;
                                offer_grown(&mut a.out.regions, gone.gained, region, top);
                            }
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn finish(self) -> Vec<OomGrowth> {
        let top = self.top;
        self.accs
            .into_iter()
            .map(|mut a| {
                for seen in a.regions.into_values() {
                    if seen.gained > 0 {
                        offer_grown(&mut a.out.regions, seen.gained, seen.region, top);
                    }
                }
                a.out
                    .regions
                    .sort_by(|x, y| y.0.cmp(&x.0).then(x.1.id.cmp(&y.1.id)));
                a.out.regions.truncate(top);
                a.out
            })
            .collect()
    }
}

/// The second pass over a v2 recording: what grew before each OOM kill
/// (`(proc, kill_ns)`, see [`OomPass`]).
fn oom_kills<R: io::BufRead>(
    name: &str,
    input: R,
    kills: &[(u64, u64)],
    top: usize,
) -> Result<Vec<OomGrowth>, ReportError> {
    let mut pass = OomPass::new(kills, top);
    let mut r = v2::Reader::new(input);
    loop {
        match r.next_record() {
            Ok(Some(rec)) => pass.observe(rec),
            Ok(None) => break,
            // The first pass read it all: only a file changed since fails.
            Err(e) => {
                return Err(ReportError::ShapeV2 {
                    path: name.to_string(),
                    detail: e.to_string(),
                })
            }
        }
    }
    Ok(pass.finish())
}

/// [`oom_kills`] of a v1 document: each killed process's records as a v2
/// recording of it would hold them, in time order.
fn oom_kills_v1(t: &Timeline, top: usize) -> Vec<(usize, OomGrowth)> {
    let killed: Vec<(usize, u64)> = t
        .processes
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i, p.oom_kill_ns?)))
        .collect();
    let kills: Vec<(u64, u64)> = killed.iter().map(|&(i, k)| (i as u64 + 1, k)).collect();
    let mut pass = OomPass::new(&kills, top);
    for &(i, _) in &killed {
        let mut recs = v1_records(i as u64 + 1, &t.processes[i]);
        recs.sort_by_key(record_time);
        for rec in recs {
            pass.observe(rec);
        }
    }
    killed.iter().map(|k| k.0).zip(pass.finish()).collect()
}

/// A record's time (a v1 document's records sorted into a recording's
/// order).
fn record_time(rec: &Record) -> u64 {
    match rec {
        Record::Process(p) => p.t_ns,
        Record::Region(r) => r.t_ns,
        Record::Counters(c) => c.t_ns,
        _ => 0,
    }
}

/// Keeps the `top` regions that gained most, in bounded memory.
fn offer_grown(v: &mut Vec<(u64, Region)>, gained: u64, r: Region, top: usize) {
    v.push((gained, r));
    if v.len() >= 2 * top + 16 {
        v.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.id.cmp(&y.1.id)));
        v.truncate(top);
    }
}

/// The section of an OOM-killed process: the kill, its memory at the last
/// sample, and what grew in the minute before.
fn oom_section(s: &mut String, sum: &Summary, g: &OomGrowth) {
    let p = &sum.p;
    let title = format!("OOM kill: process {} ({})", p.pid, esc(&p.comm));
    let title = fit_right(&title, WIDTH);
    ln!(s, "{title}");
    ln!(s, "{}", "-".repeat(title.chars().count()));
    let mut when = format!("{} (chosen by the kernel's OOM killer)", at(g.kill_ns));
    if let Some(exit) = p.exit_at_ns {
        let _ = write!(
            when,
            "; exit {} later",
            duration(exit.saturating_sub(g.kill_ns))
        );
    }
    field(s, "Killed at", &when);
    match g.sample {
        Some((t, mapped, rss)) => {
            let rss = rss.map_or("unknown".to_string(), human_size);
            field(
                s,
                "Memory",
                &format!(
                    "{} mapped, {rss} resident (last sample, at {})",
                    human_size(mapped),
                    at(t)
                ),
            );
        }
        None => field(s, "Memory", "no counters sample before the kill"),
    }
    let from = g.kill_ns.saturating_sub(OOM_WINDOW_NS);
    if g.total == 0 {
        field(
            s,
            "Grew",
            &format!(
                "nothing mapped in the last minute ({} to the kill)",
                at(from)
            ),
        );
    } else {
        oom_growth(s, g, from);
    }
    if let Some(curve) = &g.curve {
        ln!(s);
        curve.render(s);
    }
}

/// What grew before an OOM kill: by kind, and the regions that grew most.
fn oom_growth(s: &mut String, g: &OomGrowth, from: u64) {
    let mut kinds: Vec<(&String, &u64)> = g.by_kind.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    // The four that grew most (a line's worth), and how many others.
    let more = kinds.len().saturating_sub(4);
    let mut kinds = kinds
        .iter()
        .take(4)
        .map(|(k, n)| format!("{} {}", esc(k), human_size(**n)))
        .collect::<Vec<_>>()
        .join(", ");
    if more > 0 {
        let _ = write!(kinds, " and {}", plural(more as u64, "other", "others"));
    }
    field(
        s,
        "Grew",
        &format!(
            "{} mapped in the last minute ({} to the kill)",
            human_size(g.total),
            at(from)
        ),
    );
    field_more(s, &format!("by kind: {kinds}"));
    ln!(s);
    ln!(
        s,
        "  Regions that grew most before the kill (by bytes added)"
    );
    let rows = g
        .regions
        .iter()
        .map(|(gained, r)| {
            let note = match (&r.died_by, r.died_ns) {
                (Some(by), Some(ns)) => format!("  (gone at {}: {})", at(ns), by),
                _ => String::new(),
            };
            Row {
                cells: vec![
                    format!("+{}", human_size(*gained)),
                    range(r),
                    human_size(region_size(r)),
                ],
                tail: Tail::new("", mapping(r), note),
            }
        })
        .collect();
    table(
        s,
        &[
            ("ADDED", Align::Right),
            ("ADDRESS RANGE", Align::Left),
            ("SIZE", Align::Right),
            ("MAPPING", Align::Left),
        ],
        rows,
    );
}

/// What the report's header says of a recording.
#[derive(Clone, Debug, Default)]
pub struct Meta {
    pub command: Option<Vec<String>>,
    pub host: String,
    pub kernel: String,
    pub started_at: String,
    pub duration_ns: u64,
    pub stack_source: String,
    pub lost_events: u64,
    pub lost_by_kind: BTreeMap<String, u64>,
    /// A v2 recording with no end record: cut short.
    pub incomplete: bool,
}

impl Meta {
    fn of(t: &Timeline) -> Meta {
        Meta {
            command: t.command.clone(),
            host: t.host.clone(),
            kernel: t.kernel.clone(),
            started_at: t.started_at.clone(),
            duration_ns: t.duration_ns,
            stack_source: t.stack_source.clone(),
            lost_events: t.lost_events,
            lost_by_kind: t.lost_by_kind.clone(),
            incomplete: false,
        }
    }
}

/// Keeps the `n` first items by `key` among those offered, in bounded
/// memory.
struct Top<K: Ord> {
    n: usize,
    items: Vec<(K, Region)>,
}

impl<K: Ord> Top<K> {
    fn new(n: usize) -> Self {
        Top {
            n,
            items: Vec::new(),
        }
    }

    fn offer(&mut self, key: K, r: &Region) {
        // What the tables show: no history, no fault buckets (a report of
        // many processes keeps a few regions of each until its end).
        let light = Region {
            id: r.id,
            start: r.start.clone(),
            end: r.end.clone(),
            perms: r.perms.clone(),
            kind: r.kind.clone(),
            path: r.path.clone(),
            offset: r.offset,
            dev: r.dev.clone(),
            inode: r.inode,
            born_ns: r.born_ns,
            born_by: r.born_by,
            parent: r.parent,
            died_ns: r.died_ns,
            died_by: r.died_by,
            history: Vec::new(),
            faults: timeline::Faults {
                buckets: Vec::new(),
                ..r.faults.clone()
            },
        };
        self.items.push((key, light));
        if self.items.len() >= 2 * self.n + 16 {
            self.trim();
        }
    }

    fn trim(&mut self) {
        self.items.sort_by(|a, b| a.0.cmp(&b.0));
        self.items.truncate(self.n);
    }

    /// Nothing more will be offered: only the `n` kept take memory.
    fn settle(&mut self) {
        self.trim();
        self.items.shrink_to_fit();
    }

    fn sorted(&self) -> Vec<&Region> {
        let mut v: Vec<&(K, Region)> = self.items.iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter().take(self.n).map(|(_, r)| r).collect()
    }
}

/// The highest value of a counter and the first time it was reached.
type Peak = Option<(u64, u64)>;

fn raise(peak: &mut Peak, v: Option<u64>, t: u64) {
    if let Some(v) = v {
        match peak {
            Some((bv, _)) if *bv >= v => {}
            _ => *peak = Some((v, t)),
        }
    }
}

/// What one process's section needs, gathered one region, sample and
/// check at a time: counts, and the few regions each table shows.
pub struct Summary {
    /// The process, without regions, counters, checks, drift, uncertain.
    p: Process,
    /// Its control groups, as the header shows them (v2 recordings).
    cgroup: Option<String>,
    short_lived_ns: u64,
    /// The earliest birth of a region.
    first_born: Option<u64>,
    regions: u64,
    alive: u64,
    samples: u64,
    peaks: [Peak; 4],
    /// Biggest regions: size desc, start, id.
    biggest: Top<(std::cmp::Reverse<u64>, u64, u64)>,
    candidates: u64,
    lives_on: u64,
    /// Most faults: total desc, start, id.
    faulty: Top<(std::cmp::Reverse<u64>, u64, u64)>,
    faults_total: u64,
    with_faults: u64,
    /// Short-lived: born_ns, id.
    short: Top<(u64, u64)>,
    short_count: u64,
    short_bytes: u64,
    /// Mapped but never touched, at the end: untouched desc, start, id.
    untouched: Top<(std::cmp::Reverse<u64>, u64, u64)>,
    anon_at_end: u64,
    untouched_count: u64,
    untouched_total: u64,
    checks: u64,
    /// Checks that compared something (not void).
    compared: u64,
    reasons: BTreeMap<String, u64>,
    checks_with_drift: u64,
    pub drift: Vec<timeline::Drift>,
    pub uncertain: Vec<timeline::Interval>,
    /// The OOM kill of the process (`oom_kill_ns`).
    pub oom_kill_ns: Option<u64>,
    /// Its section, written at its exit (see `render_early`).
    section: Option<String>,
}

impl Summary {
    pub fn new(p: &Process, opts: &ReportOptions) -> Summary {
        let top = opts.top;
        Summary {
            p: Process {
                regions: Vec::new(),
                counters: Vec::new(),
                drift: Vec::new(),
                checks: Vec::new(),
                uncertain: Vec::new(),
                ..p.clone_meta()
            },
            short_lived_ns: opts.short_lived_ns,
            first_born: None,
            regions: 0,
            alive: 0,
            samples: 0,
            peaks: [None; 4],
            biggest: Top::new(top),
            candidates: 0,
            lives_on: 0,
            faulty: Top::new(top),
            faults_total: 0,
            with_faults: 0,
            short: Top::new(top),
            short_count: 0,
            short_bytes: 0,
            untouched: Top::new(top),
            anon_at_end: 0,
            untouched_count: 0,
            untouched_total: 0,
            checks: 0,
            compared: 0,
            reasons: BTreeMap::new(),
            checks_with_drift: 0,
            drift: Vec::new(),
            uncertain: Vec::new(),
            oom_kill_ns: p.oom_kill_ns,
            cgroup: None,
            section: None,
        }
    }

    /// The process's own fields changed (an exec, its exit).
    pub fn set_process(&mut self, p: &Process) {
        self.p = p.clone_meta();
    }

    /// The process ended: its tables keep only what they show.
    fn settle(&mut self) {
        self.biggest.settle();
        self.faulty.settle();
        self.short.settle();
        self.untouched.settle();
    }

    /// The process exited: its section is written now (it depends on
    /// nothing the recording says later), and its tables are let go. A
    /// recording of many thousands of processes keeps a few KB of text for
    /// each, not their regions.
    fn render_early(&mut self, meta: &Meta) {
        if self.p.exit_at_ns.is_none() {
            return;
        }
        let mut s = String::new();
        process(&mut s, meta, self);
        self.section = Some(s);
        for items in [
            &mut self.biggest.items,
            &mut self.faulty.items,
            &mut self.untouched.items,
        ] {
            *items = Vec::new();
        }
        self.short.items = Vec::new();
    }

    /// One region, whole (its last state, its death if it died).
    pub fn region(&mut self, r: &Region) {
        let (start, size) = (addr(&r.start), region_size(r));
        self.regions += 1;
        self.first_born = Some(self.first_born.map_or(r.born_ns, |f| f.min(r.born_ns)));
        if r.died_ns.is_none() {
            self.alive += 1;
        }
        if lives_on_elsewhere(r) {
            self.lives_on += 1;
        } else {
            self.candidates += 1;
            self.biggest
                .offer((std::cmp::Reverse(size), start, r.id), r);
        }
        // Saturating: the counts come from the file.
        self.faults_total = self.faults_total.saturating_add(r.faults.total);
        if r.faults.total > 0 {
            self.with_faults += 1;
            self.faulty
                .offer((std::cmp::Reverse(r.faults.total), start, r.id), r);
        }
        if is_short_lived(r, self.short_lived_ns) {
            self.short_count += 1;
            self.short_bytes = self.short_bytes.saturating_add(size);
            self.short.offer((r.born_ns, r.id), r);
        }
        if ANON_KINDS.contains(&r.kind.as_str()) && mapped_at_end(r) {
            self.anon_at_end += 1;
            let u = untouched_of(r);
            if u > 0 {
                self.untouched_count += 1;
                self.untouched_total = self.untouched_total.saturating_add(u);
                self.untouched.offer((std::cmp::Reverse(u), start, r.id), r);
            }
        }
    }

    pub fn counters(&mut self, c: &timeline::CounterSample) {
        self.samples += 1;
        raise(&mut self.peaks[0], Some(c.mapped), c.t_ns);
        raise(&mut self.peaks[1], Some(c.heap), c.t_ns);
        raise(&mut self.peaks[2], Some(c.stack), c.t_ns);
        raise(&mut self.peaks[3], c.rss, c.t_ns);
    }

    pub fn check(&mut self, c: &timeline::Check) {
        self.checks += 1;
        if c.void.is_none() {
            self.compared += 1;
        }
        let key = match (c.against, c.void) {
            (_, Some(why)) => format!("{} void ({})", c.reason.as_str(), why.as_str()),
            (CheckBasis::Counters, None) => format!("{} by counters", c.reason.as_str()),
            (CheckBasis::Maps, None) => c.reason.as_str().to_string(),
        };
        *self.reasons.entry(key).or_default() += 1;
        if c.drift > 0 {
            self.checks_with_drift += 1;
        }
    }
}

impl Process {
    /// The process's own fields, without its lists.
    fn clone_meta(&self) -> Process {
        Process {
            pid: self.pid,
            start_time: self.start_time,
            ppid: self.ppid,
            comm: self.comm.clone(),
            exe: self.exe.clone(),
            abi: self.abi.clone(),
            shared_with: self.shared_with,
            seeded_by: self.seeded_by,
            exec_at_ns: self.exec_at_ns,
            exit_at_ns: self.exit_at_ns,
            exit_code: self.exit_code,
            exit_signal: self.exit_signal.clone(),
            oom_kill_ns: self.oom_kill_ns,
            regions: Vec::new(),
            counters: Vec::new(),
            drift: Vec::new(),
            checks: Vec::new(),
            uncertain: Vec::new(),
        }
    }
}

/// A string from the file, safe for a terminal.
fn esc(s: &str) -> String {
    escape_text(s.as_bytes())
}

/// A process's cgroups for its header: `v1 memory PATH, v2 PATH (id N)`,
/// escaped.
pub fn cgroup_text(cg: &v2::CgroupRecord) -> String {
    let mut parts = Vec::new();
    if let Some(m) = &cg.v1_memory {
        parts.push(format!("v1 memory {}", esc(m)));
    }
    if let Some(p) = &cg.v2 {
        let id = cg.v2_id.map(|id| format!(" (id {id})")).unwrap_or_default();
        parts.push(format!("v2 {}{id}", esc(p)));
    }
    if parts.is_empty() {
        "(unknown)".to_string()
    } else {
        parts.join(", ")
    }
}

/// `Label         value`, the value cut to fit.
fn field(s: &mut String, label: &str, value: &str) {
    ln!(s, "{label:<LABEL$}{}", fit_right(value, WIDTH - LABEL));
}

/// A continuation line of a [`field`].
fn field_more(s: &mut String, value: &str) {
    ln!(s, "{:LABEL$}{}", "", fit_right(value, WIDTH - LABEL));
}

fn header(s: &mut String, t: &Meta, procs: &[Summary]) {
    let refs: Vec<&Summary> = procs.iter().collect();
    header_of(s, t, &refs);
}

fn header_of(s: &mut String, t: &Meta, procs: &[&Summary]) {
    let title = "mmtrace timeline report";
    ln!(s, "{title}");
    ln!(s, "{}", "=".repeat(title.len()));
    if t.incomplete {
        field(
            s,
            "INCOMPLETE",
            "the recording has no end record (cut short): what follows is what it holds",
        );
    }
    let command = match &t.command {
        Some(argv) if !argv.is_empty() => command_line(argv),
        Some(_) => "(empty)".to_string(),
        None => "none (processes already running were recorded)".to_string(),
    };
    field(s, "Command", &command);
    field(
        s,
        "Host",
        &format!("{}, Linux kernel {}", esc(&t.host), esc(&t.kernel)),
    );
    field(s, "Started at", &esc(&t.started_at));
    field(s, "Duration", &duration(t.duration_ns));
    field(s, "Processes", &procs.len().to_string());
    let stack = match t.stack_source.as_str() {
        "fexit" => "observed in the kernel (a hook on stack expansion)".to_string(),
        "fault" => "inferred from page faults below the stack".to_string(),
        "off" => "not observed: stack sizes may be too small".to_string(),
        other => esc(other),
    };
    field(s, "Stack growth", &stack);

    if t.lost_events == 0 {
        field(s, "Lost events", "none");
    } else {
        let mut by_kind: Vec<(&String, &u64)> =
            t.lost_by_kind.iter().filter(|(_, &n)| n > 0).collect();
        by_kind.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let kinds = by_kind
            .iter()
            .map(|(k, n)| format!("{} {n}", esc(k)))
            .collect::<Vec<_>>()
            .join(", ");
        let value = if kinds.is_empty() {
            t.lost_events.to_string()
        } else {
            format!("{} ({kinds})", t.lost_events)
        };
        field(s, "Lost events", &value);
        field_more(
            s,
            "WARNING: the kernel dropped these events, so the data below may be incomplete.",
        );
    }

    let checks: u64 = procs.iter().map(|p| p.checks).sum();
    let drift: usize = procs.iter().map(|p| p.drift.len()).sum();
    let drifted = procs.iter().filter(|p| !p.drift.is_empty()).count();
    let value = if checks == 0 && drift == 0 {
        "not checked (the model was never compared with /proc/PID/maps)".to_string()
    } else if drift == 0 {
        format!(
            "none: {} of the model with /proc/PID/maps found no difference",
            plural(checks, "check", "checks")
        )
    } else {
        format!(
            "{} between the model and /proc/PID/maps, in {} (see below)",
            plural(drift as u64, "difference", "differences"),
            plural(drifted as u64, "process", "processes")
        )
    };
    field(s, "Drift", &value);
    if procs.is_empty() {
        ln!(s);
        ln!(s, "no processes were recorded");
    }
}

/// The command line, each argument escaped and quoted as a shell would
/// need it.
fn command_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(&esc(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./=:,+@%-".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn process(s: &mut String, t: &Meta, sum: &Summary) {
    if let Some(section) = &sum.section {
        s.push_str(section);
        return;
    }
    let p = &sum.p;
    let title = format!("Process {} ({})", p.pid, esc(&p.comm));
    let title = fit_right(&title, WIDTH);
    ln!(s, "{title}");
    ln!(s, "{}", "-".repeat(title.chars().count()));
    let exe = p.exe.as_deref().map(esc);
    field(
        s,
        "Program",
        &fit_left(exe.as_deref().unwrap_or("(unknown)"), WIDTH - LABEL),
    );
    field(
        s,
        "Parent",
        &p.ppid.map_or("(unknown)".to_string(), |pp| pp.to_string()),
    );
    let from = match p.seeded_by.as_str() {
        "fork" => "its fork: its whole life was seen".to_string(),
        "exec" => "its exec".to_string(),
        "proc" => "first sight (its first state was read from /proc/PID/maps)".to_string(),
        other => esc(other),
    };
    field(s, "Traced from", &from);
    if let Some(cg) = &sum.cgroup {
        field(s, "Cgroup", cg);
    }
    if let Some(owner) = p.shared_with {
        field(
            s,
            "Memory",
            &format!("shared with {owner} (CLONE_VM) until exec or exit: see its regions"),
        );
    }
    if let Some(abi) = p.abi.as_deref().filter(|a| *a != "x86_64") {
        field(
            s,
            "Syscalls",
            &format!(
                "not traced: a 32-bit program ({}); its regions are what /proc showed at each check",
                esc(abi)
            ),
        );
    }

    let first = sum
        .first_born
        .into_iter()
        .chain(p.exec_at_ns)
        .min()
        .unwrap_or(0);
    let last = p.exit_at_ns.unwrap_or(t.duration_ns).max(first);
    let end = match p.exit_at_ns {
        Some(ns) => at(ns),
        None => "the end".to_string(),
    };
    let mut lifetime = format!("{} to {end} ({})", at(first), duration(last - first));
    if let Some(exec) = p.exec_at_ns {
        let _ = write!(lifetime, "; exec at {}", at(exec));
    }
    field(s, "Lifetime", &lifetime);
    let exit = match (p.exit_at_ns, p.exit_code, &p.exit_signal) {
        (_, _, Some(sig)) => format!("killed by {}", esc(sig)),
        (_, Some(code), None) => format!("exited with code {code}"),
        (Some(_), None, None) => "exited (status unknown)".to_string(),
        (None, None, None) => "still running when the recording ended".to_string(),
    };
    let exit = match sum.oom_kill_ns {
        Some(ns) => format!("{exit}: chosen by the OOM killer at {} (see above)", at(ns)),
        None => exit,
    };
    field(s, "Exit", &exit);

    ln!(s);
    peaks(s, sum);
    ln!(s);
    biggest(s, sum);
    ln!(s);
    faults(s, sum);
    ln!(s);
    short_lived(s, sum);
    ln!(s);
    untouched(s, sum);
    ln!(s);
    checks_and_drift(s, sum);
    uncertain(s, sum);
}

fn peaks(s: &mut String, sum: &Summary) {
    let regions = if sum.p.exit_at_ns.is_some() {
        format!("{} over its life", sum.regions)
    } else {
        format!("{} ({} still mapped at the end)", sum.regions, sum.alive)
    };
    if sum.samples == 0 {
        ln!(
            s,
            "  Peak memory: unknown (no samples of the memory counters were recorded)"
        );
        ln!(s, "    {:<22}{regions}", "regions");
        return;
    }
    ln!(
        s,
        "  Peak memory (the highest of {})",
        plural(sum.samples, "sample", "samples")
    );
    let names = ["mapped (all regions)", "heap", "stack", "resident (RSS)"];
    for (name, v) in names.into_iter().zip(sum.peaks) {
        if let Some((bytes, t)) = v {
            ln!(s, "    {name:<22}{:>10}  at {}", human_size(bytes), at(t));
        } else {
            ln!(s, "    {name:<22}{:>10}", "unknown");
        }
    }
    ln!(s, "    {:<22}{regions}", "regions");
}

fn region_size(r: &Region) -> u64 {
    addr(&r.end).saturating_sub(addr(&r.start))
}

fn range(r: &Region) -> String {
    format!("{}-{}", hex(addr(&r.start)), hex(addr(&r.end)))
}

/// What is mapped: the file's path, or the kind in brackets (`[anon]`).
fn mapping(r: &Region) -> String {
    match &r.path {
        Some(path) if r.kind == "file" || path.starts_with('[') => esc(path),
        Some(path) => format!("{} ({})", esc(path), esc(&r.kind)),
        None => format!("[{}]", esc(&r.kind)),
    }
}

fn biggest(s: &mut String, sum: &Summary) {
    if sum.regions == 0 {
        ln!(s, "  no regions");
        return;
    }
    // A region merged into another or moved lives on in that one.
    let regions = sum.biggest.sorted();
    ln!(
        s,
        "  Biggest regions ({}, by size)",
        some_of(regions.len(), sum.candidates as usize)
    );
    let rows = regions
        .iter()
        .map(|r| {
            let note = match (&r.died_by, r.died_ns) {
                (Some(by), Some(ns)) if *by != Cause::Exit => {
                    format!("  (gone at {}: {})", at(ns), by)
                }
                _ => String::new(),
            };
            Row {
                cells: vec![range(r), human_size(region_size(r)), esc(&r.perms)],
                tail: Tail::new("", mapping(r), note),
            }
        })
        .collect();
    table(
        s,
        &[
            ("ADDRESS RANGE", Align::Left),
            ("SIZE", Align::Right),
            ("PERMS", Align::Left),
            ("MAPPING", Align::Left),
        ],
        rows,
    );
    if sum.lives_on > 0 {
        ln!(
            s,
            "    ({} merged into or moved to another left out)",
            plural(sum.lives_on, "region", "regions")
        );
    }
}

/// The region ended by becoming part of another: merged into a neighbour
/// or moved by mremap.
fn lives_on_elsewhere(r: &Region) -> bool {
    matches!(r.died_by, Some(Cause::Merge | Cause::Mremap))
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".to_string();
    }
    let pct = (u128::from(part) * 100 + u128::from(whole) / 2) / u128::from(whole);
    format!("{pct}%")
}

fn faults(s: &mut String, sum: &Summary) {
    let regions = sum.faulty.sorted();
    if regions.is_empty() {
        ln!(s, "  no page faults recorded");
        return;
    }
    let with_faults = sum.with_faults as usize;
    ln!(
        s,
        "  Page faults: {} in {}; by region ({}, the most first):",
        sum.faults_total,
        plural(with_faults as u64, "region", "regions"),
        some_of(regions.len(), with_faults)
    );
    let rows = regions
        .iter()
        .map(|r| {
            let f = &r.faults;
            Row {
                cells: vec![
                    f.total.to_string(),
                    f.read.to_string(),
                    f.write.to_string(),
                    f.exec.to_string(),
                    human_size(f.touched_bytes),
                    human_size(f.mapped_bytes),
                    percent(f.touched_bytes, f.mapped_bytes),
                ],
                tail: Tail::new(
                    format!("{} {} ", hex(addr(&r.start)), esc(&r.perms)),
                    mapping(r),
                    "",
                ),
            }
        })
        .collect();
    table(
        s,
        &[
            ("FAULTS", Align::Right),
            ("READ", Align::Right),
            ("WRITE", Align::Right),
            ("EXEC", Align::Right),
            ("TOUCHED", Align::Right),
            ("MAPPED", Align::Right),
            ("%", Align::Right),
            ("REGION", Align::Left),
        ],
        rows,
    );
    ln!(
        s,
        "    (touched: the distinct pages that faulted, in bytes; %: touched of mapped)"
    );
}

/// A region unmapped within `short_lived_ns` of being mapped. Only
/// mappings made and unmapped by the process count: not pieces cut from a
/// region (split), copies (fork), what was there (proc, exec), nor regions
/// that ended with the process (exit, exec) or live on in another (merge,
/// mremap).
fn is_short_lived(r: &Region, short_lived_ns: u64) -> bool {
    !matches!(
        r.born_by,
        Cause::Split | Cause::Fork | Cause::Proc | Cause::Exec
    ) && !matches!(r.died_by, Some(Cause::Exit | Cause::Exec))
        && !lives_on_elsewhere(r)
        && r.died_ns
            .is_some_and(|died| died.saturating_sub(r.born_ns) <= short_lived_ns)
}

fn short_lived(s: &mut String, sum: &Summary) {
    let within = duration(sum.short_lived_ns);
    if sum.short_count == 0 {
        ln!(
            s,
            "  no short-lived mappings (none unmapped within {within} of being mapped)"
        );
        return;
    }
    ln!(
        s,
        "  Short-lived mappings (unmapped within {within} of being mapped): {}, {} in all",
        sum.short_count,
        human_size(sum.short_bytes)
    );
    let shown = sum.short.sorted();
    if (shown.len() as u64) < sum.short_count {
        ln!(s, "    the first {}:", shown.len());
    }
    let rows = shown
        .iter()
        .map(|r| {
            let lived = r.died_ns.unwrap_or(r.born_ns).saturating_sub(r.born_ns);
            Row {
                cells: vec![
                    at(r.born_ns),
                    duration(lived),
                    human_size(region_size(r)),
                    format!("{} -> {}", r.born_by, r.died_by.map_or("?", Cause::as_str)),
                    hex(addr(&r.start)),
                ],
                tail: Tail::new("", mapping(r), ""),
            }
        })
        .collect();
    table(
        s,
        &[
            ("BORN AT", Align::Right),
            ("LIVED", Align::Right),
            ("SIZE", Align::Right),
            ("HOW", Align::Left),
            ("ADDRESS", Align::Left),
            ("MAPPING", Align::Left),
        ],
        rows,
    );
}

/// Kinds of anonymous memory, counted in "mapped but never touched".
const ANON_KINDS: [&str; 4] = ["anon", "heap", "stack", "thread_stack"];

/// Mapped at the end of the process (or of the recording).
fn mapped_at_end(r: &Region) -> bool {
    matches!(r.died_by, None | Some(Cause::Exit))
}

fn untouched_of(r: &Region) -> u64 {
    r.faults.mapped_bytes.saturating_sub(r.faults.touched_bytes)
}

fn untouched(s: &mut String, sum: &Summary) {
    // Regions at the end only: over the whole life, a page would count
    // again in every region that took it over (merge, mremap, split).
    if sum.anon_at_end == 0 {
        ln!(
            s,
            "  no anonymous memory (heap, stack, anon) mapped at the end, so nothing untouched"
        );
        return;
    }
    if sum.with_faults == 0 {
        ln!(
            s,
            "  mapped but never touched: unknown (no page faults were recorded for this process)"
        );
        return;
    }
    if sum.untouched_count == 0 {
        ln!(
            s,
            "  no mapped but never touched memory at the end: every anonymous page was touched"
        );
        return;
    }
    ln!(
        s,
        "  Mapped but never touched, at the end: {} in {} of {} (heap, stacks, anon)",
        human_size(sum.untouched_total),
        sum.untouched_count,
        plural(sum.anon_at_end, "anonymous region", "anonymous regions")
    );
    let regions = sum.untouched.sorted();
    let inherited = regions
        .iter()
        .any(|r| matches!(r.born_by, Cause::Fork | Cause::Proc));
    let rows = regions
        .iter()
        .map(|r| Row {
            cells: vec![
                human_size(untouched_of(r)),
                human_size(r.faults.mapped_bytes),
                range(r),
            ],
            tail: Tail::new("", mapping(r), ""),
        })
        .collect();
    table(
        s,
        &[
            ("UNTOUCHED", Align::Right),
            ("MAPPED", Align::Right),
            ("ADDRESS RANGE", Align::Left),
            ("MAPPING", Align::Left),
        ],
        rows,
    );
    ln!(
        s,
        "    (touched: a page fault was seen; untouched memory takes address space, not RAM)"
    );
    if inherited {
        ln!(
            s,
            "    (regions inherited at fork or there at the start may have been touched before)"
        );
    }
}

fn maps_line(e: Option<&MapsEntry>) -> String {
    match e {
        None => "(nothing)".to_string(),
        Some(e) => {
            let mut l = format!(
                "{}-{} {} {:08x}",
                hex(addr(&e.start)),
                hex(addr(&e.end)),
                esc(&e.perms),
                e.offset
            );
            if let Some(path) = &e.path {
                let _ = write!(l, " {}", esc(path));
            }
            l
        }
    }
}

fn checks_and_drift(s: &mut String, sum: &Summary) {
    let pid = sum.p.pid;
    if sum.checks == 0 {
        ln!(
            s,
            "  Checks: none (the model was never compared with /proc/{}/maps)",
            pid
        );
    } else {
        let reasons = sum
            .reasons
            .iter()
            .map(|(r, n)| format!("{} {n}", esc(r)))
            .collect::<Vec<_>>()
            .join(", ");
        let found = match sum.checks_with_drift {
            0 => "none found drift".to_string(),
            n => format!("{n} found drift"),
        };
        ln!(
            s,
            "  Checks: {} with /proc/{}/maps ({reasons}); {found}",
            plural(sum.checks, "comparison", "comparisons"),
            pid
        );
    }
    if sum.drift.is_empty() {
        if sum.compared == 0 {
            // Never compared (no check, or only void ones): no difference
            // found says nothing.
            ln!(s, "  drift unknown: never checked");
        } else {
            ln!(s, "  no drift");
        }
        return;
    }
    ln!(
        s,
        "  Drift: {} between the model and /proc/{}/maps",
        plural(sum.drift.len() as u64, "difference", "differences"),
        pid
    );
    for d in &sum.drift {
        let when = at(d.t_ns);
        let kind = esc(&d.kind);
        let width = WIDTH - 4 - when.len() - 2 - 10 - 8;
        ln!(
            s,
            "    {when}  {kind:<10}model   {}",
            fit_right(&maps_line(d.model.as_ref()), width)
        );
        ln!(
            s,
            "    {:w$}  {:<10}kernel  {}",
            "",
            "",
            fit_right(&maps_line(d.kernel.as_ref()), width),
            w = when.len()
        );
        if !d.fields.is_empty() {
            let fields: Vec<String> = d.fields.iter().map(|f| esc(f)).collect();
            ln!(
                s,
                "    {:w$}  {:<10}differ  {}",
                "",
                "",
                fields.join(", "),
                w = when.len()
            );
        }
    }
}

fn uncertain(s: &mut String, sum: &Summary) {
    if sum.uncertain.is_empty() {
        ln!(s, "  no uncertain intervals");
        return;
    }
    // Why, as the checks it made say: events lost, a change the kernel's
    // counters showed the model had missed, a call it could not follow;
    // and a 32-bit program's system calls, never traced.
    let why = if sum.p.abi.as_deref().is_some_and(|a| a != "x86_64") {
        "a 32-bit program: syscalls not traced"
    } else {
        "lost events, or changes it missed"
    };
    ln!(
        s,
        "  Uncertain: {} when the model may be wrong ({why})",
        plural(sum.uncertain.len() as u64, "interval", "intervals")
    );
    for i in &sum.uncertain {
        if let Some(to) = i.to_ns {
            ln!(
                s,
                "    {} to {} ({})",
                at(i.from_ns),
                at(to),
                duration(to.saturating_sub(i.from_ns))
            );
        } else {
            ln!(s, "    {} to the end", at(i.from_ns));
        }
    }
}

// ---------------------------------------------------------------------------
// Formatting helpers
// ---------------------------------------------------------------------------

/// `all 8` when every item is shown, else `top 10 of 42`.
fn some_of(shown: usize, total: usize) -> String {
    if shown == total {
        format!("all {total}")
    } else {
        format!("top {shown} of {total}")
    }
}

/// `3 regions`, `1 region`.
fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A time since the start of the recording: `1.234567 s`.
fn at(ns: u64) -> String {
    format!("{}.{:06} s", ns / 1_000_000_000, ns % 1_000_000_000 / 1_000)
}

/// A length of time: `350 ns`, `12.5 us`, `100.0 ms`, `2.345 s`.
fn duration(ns: u64) -> String {
    if ns < 1_000 {
        return format!("{ns} ns");
    }
    for (div, unit) in [(1_000u128, "us"), (1_000_000, "ms")] {
        let tenths = (u128::from(ns) * 10 + div / 2) / div;
        if tenths < 10_000 {
            return format!("{}.{} {unit}", tenths / 10, tenths % 10);
        }
    }
    let ms = (u128::from(ns) + 500_000) / 1_000_000;
    format!("{}.{:03} s", ms / 1000, ms % 1000)
}

/// `s` cut to `width` characters, ending with `...` when cut.
fn fit_right(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width {
        return s.to_string();
    }
    if width <= 3 {
        return ".".repeat(width);
    }
    let mut out: String = s.chars().take(width - 3).collect();
    out.push_str("...");
    out
}

/// `s` cut to `width` characters, starting with `...` when cut (for paths:
/// the file name is at the end).
fn fit_left(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width {
        return s.to_string();
    }
    if width <= 3 {
        return ".".repeat(width);
    }
    let tail: String = s.chars().skip(n - (width - 3)).collect();
    // Cut at a `/` when that leaves a whole file name.
    let tail = match tail.find('/') {
        Some(i) if i > 0 && i + 1 < tail.len() => &tail[i..],
        _ => &tail[..],
    };
    format!("...{tail}")
}

#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// The last column of a table: `before` and `after` are kept, `elide` is
/// cut from the left to fit the line in [`WIDTH`].
struct Tail {
    before: String,
    elide: String,
    after: String,
}

impl Tail {
    fn new(before: impl Into<String>, elide: impl Into<String>, after: impl Into<String>) -> Self {
        Self {
            before: before.into(),
            elide: elide.into(),
            after: after.into(),
        }
    }

    fn fit(&self, width: usize) -> String {
        let kept = self.before.chars().count() + self.after.chars().count();
        let room = width.saturating_sub(kept).max(8);
        format!(
            "{}{}{}",
            self.before,
            fit_left(&self.elide, room),
            self.after
        )
    }
}

struct Row {
    cells: Vec<String>,
    tail: Tail,
}

/// A table indented by 4, columns 2 apart; `cols` has one more entry than
/// each row's `cells`: the header of the tail.
fn table(s: &mut String, cols: &[(&str, Align)], rows: Vec<Row>) {
    const INDENT: usize = 4;
    const GAP: usize = 2;
    let n = cols.len() - 1;
    let mut widths: Vec<usize> = cols[..n].iter().map(|(h, _)| h.len()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(&row.cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    let used = INDENT + widths.iter().map(|w| w + GAP).sum::<usize>();
    let room = WIDTH.saturating_sub(used);
    let mut emit = |cells: &[String], tail: String| {
        let mut l = " ".repeat(INDENT);
        for ((c, w), (_, align)) in cells.iter().zip(&widths).zip(cols) {
            let pad = w - c.chars().count();
            match align {
                Align::Left => {
                    l.push_str(c);
                    l.push_str(&" ".repeat(pad + GAP));
                }
                Align::Right => {
                    l.push_str(&" ".repeat(pad));
                    l.push_str(c);
                    l.push_str(&" ".repeat(GAP));
                }
            }
        }
        l.push_str(&tail);
        ln!(s, "{}", l.trim_end());
    };
    let headers: Vec<String> = cols[..n].iter().map(|(h, _)| h.to_string()).collect();
    emit(&headers, cols[n].0.to_string());
    for row in rows {
        let tail = row.tail.fit(room);
        emit(&row.cells, tail);
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        path::PathBuf,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use super::*;
    use crate::model::{CheckBasis, CheckReason, SeededBy, VoidReason};
    use crate::output::timeline::{Change, Check, CounterSample, Drift, Faults, Interval};

    const MS: u64 = 1_000_000;

    fn region(id: u64, start: u64, end: u64, kind: &str, born_ns: u64, born_by: &str) -> Region {
        Region {
            id,
            start: hex(start),
            end: hex(end),
            perms: "rw-p".to_string(),
            kind: kind.to_string(),
            path: match kind {
                "heap" => Some("[heap]".to_string()),
                "stack" => Some("[stack]".to_string()),
                _ => None,
            },
            offset: 0,
            dev: None,
            inode: None,
            born_ns,
            born_by: serde_json::from_value(serde_json::json!(born_by)).unwrap(),
            parent: None,
            died_ns: None,
            died_by: None,
            history: vec![Change {
                t_ns: born_ns,
                op: crate::model::Op::Born,
                start: hex(start),
                end: hex(end),
                perms: "rw-p".to_string(),
            }],
            faults: Faults {
                mapped_bytes: end - start,
                bucket_ns: 10 * MS,
                ..Faults::default()
            },
        }
    }

    fn died(mut r: Region, ns: u64, by: &str) -> Region {
        r.died_ns = Some(ns);
        r.died_by = Some(serde_json::from_value(serde_json::json!(by)).unwrap());
        r
    }

    fn faulted(mut r: Region, read: u64, write: u64, exec: u64, touched: u64) -> Region {
        r.faults.read = read;
        r.faults.write = write;
        r.faults.exec = exec;
        r.faults.total = read + write + exec;
        r.faults.touched_bytes = touched;
        r.faults.first_ns = Some(r.born_ns);
        r
    }

    fn file(mut r: Region, path: &str, perms: &str) -> Region {
        r.kind = "file".to_string();
        r.path = Some(path.to_string());
        r.perms = perms.to_string();
        r.dev = Some("fd:01".to_string());
        r.inode = Some(1234);
        r
    }

    fn sample(t_ns: u64, mapped: u64, heap: u64, stack: u64, rss: Option<u64>) -> CounterSample {
        CounterSample {
            t_ns,
            mapped,
            heap,
            stack,
            rss,
            faults: 0,
        }
    }

    fn process(pid: u32, comm: &str, regions: Vec<Region>) -> Process {
        Process {
            pid,
            start_time: Some(1_000_000_000),
            ppid: Some(1),
            comm: comm.to_string(),
            exe: Some(format!("/usr/bin/{comm}")),
            abi: Some("x86_64".to_string()),
            shared_with: None,
            seeded_by: SeededBy::Exec,
            exec_at_ns: Some(0),
            exit_at_ns: Some(900 * MS),
            exit_code: Some(0),
            exit_signal: None,
            oom_kill_ns: None,
            regions,
            counters: Vec::new(),
            drift: Vec::new(),
            checks: Vec::new(),
            uncertain: Vec::new(),
        }
    }

    fn timeline(processes: Vec<Process>) -> Timeline {
        Timeline {
            schema: timeline::SCHEMA.to_string(),
            started_at: "2025-01-02T03:04:05.678Z".to_string(),
            monotonic_start_ns: 5_000_000_000,
            duration_ns: 1_000 * MS,
            host: "testhost".to_string(),
            kernel: "6.1.0-test".to_string(),
            command: Some(vec!["./demo".to_string(), "a b".to_string()]),
            lost_events: 0,
            lost_by_kind: BTreeMap::new(),
            stack_source: "fexit".to_string(),
            processes,
        }
    }

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;

    /// A process with a bit of everything.
    fn sample_process() -> Process {
        let heap = 0x5555_0000_0000;
        let anon = 0x7f00_0000_0000;
        let stack = 0x7ffd_0000_0000;
        let mut p = process(
            100,
            "demo",
            vec![
                // 1 MiB heap, 256 KiB touched.
                faulted(
                    region(1, heap, heap + MIB, "heap", MS, "brk"),
                    4,
                    60,
                    0,
                    256 * KIB,
                ),
                // 8 MiB anon, 2 MiB touched.
                faulted(
                    region(2, anon, anon + 8 * MIB, "anon", 2 * MS, "mmap"),
                    0,
                    512,
                    0,
                    2 * MIB,
                ),
                // Short-lived: 64 KiB for 5 ms, and 128 KiB for 50 ms.
                died(
                    faulted(
                        region(
                            3,
                            anon + 16 * MIB,
                            anon + 16 * MIB + 64 * KIB,
                            "anon",
                            10 * MS,
                            "mmap",
                        ),
                        0,
                        16,
                        0,
                        64 * KIB,
                    ),
                    15 * MS,
                    "munmap",
                ),
                died(
                    region(
                        4,
                        anon + 32 * MIB,
                        anon + 32 * MIB + 128 * KIB,
                        "anon",
                        20 * MS,
                        "mmap",
                    ),
                    70 * MS,
                    "replaced",
                ),
                // Merged into region 2 and moved (it lives on elsewhere);
                // a piece split off and merged back: none is short-lived
                // nor among the biggest.
                died(
                    region(9, anon + 8 * MIB, anon + 9 * MIB, "anon", 30 * MS, "mmap"),
                    31 * MS,
                    "merge",
                ),
                died(
                    region(
                        10,
                        anon + 10 * MIB,
                        anon + 14 * MIB,
                        "anon",
                        30 * MS,
                        "mmap",
                    ),
                    31 * MS,
                    "mremap",
                ),
                died(
                    region(
                        11,
                        anon + 15 * MIB,
                        anon + 15 * MIB + 4 * KIB,
                        "anon",
                        40 * MS,
                        "split",
                    ),
                    41 * MS,
                    "munmap",
                ),
                // Lived 300 ms: not short-lived.
                died(
                    region(
                        5,
                        anon + 48 * MIB,
                        anon + 49 * MIB,
                        "anon",
                        100 * MS,
                        "mmap",
                    ),
                    400 * MS,
                    "munmap",
                ),
                // Died with the process after 1 ms: not counted as short-lived.
                died(
                    region(
                        6,
                        anon + 64 * MIB,
                        anon + 64 * MIB + 4 * KIB,
                        "anon",
                        899 * MS,
                        "mmap",
                    ),
                    900 * MS,
                    "exit",
                ),
                // 132 KiB stack, 8 KiB touched.
                faulted(
                    region(7, stack, stack + 132 * KIB, "stack", 0, "exec"),
                    0,
                    2,
                    0,
                    8 * KIB,
                ),
                // A file: faults but not counted as untouched.
                faulted(
                    file(
                        region(8, anon + 96 * MIB, anon + 98 * MIB, "anon", MS, "mmap"),
                        "/usr/lib/libdemo.so",
                        "r-xp",
                    ),
                    1,
                    0,
                    99,
                    400 * KIB,
                ),
            ],
        );
        p.counters = vec![
            sample(100 * MS, 10 * MIB, MIB, 128 * KIB, Some(3 * MIB)),
            sample(200 * MS, 12 * MIB, 512 * KIB, 132 * KIB, Some(5 * MIB)),
            sample(300 * MS, 12 * MIB, 768 * KIB, 132 * KIB, None),
        ];
        p.checks = vec![
            Check {
                t_ns: 100 * MS,
                reason: CheckReason::Interval,
                regions: 6,
                drift: 0,
                against: CheckBasis::Maps,
                void: None,
            },
            Check {
                t_ns: 200 * MS,
                reason: CheckReason::Interval,
                regions: 6,
                drift: 1,
                against: CheckBasis::Maps,
                void: None,
            },
            Check {
                t_ns: 900 * MS,
                reason: CheckReason::Exit,
                regions: 5,
                drift: 0,
                against: CheckBasis::Maps,
                void: None,
            },
        ];
        p.drift = vec![Drift {
            t_ns: 200 * MS,
            kind: "missing".to_string(),
            model: None,
            kernel: Some(MapsEntry {
                start: "0x7f0010000000".to_string(),
                end: "0x7f0010001000".to_string(),
                perms: "rw-p".to_string(),
                offset: 0,
                path: None,
                kind: Some("anon".to_string()),
                device: None,
                inode: None,
            }),
            fields: Vec::new(),
            counters: None,
        }];
        p.uncertain = vec![
            Interval {
                from_ns: 150 * MS,
                to_ns: Some(200 * MS),
            },
            Interval {
                from_ns: 800 * MS,
                to_ns: None,
            },
        ];
        p
    }

    fn report(t: &Timeline, opts: &ReportOptions) -> String {
        let text = render(t, opts);
        for l in text.lines() {
            assert!(l.chars().count() <= WIDTH, "line wider than {WIDTH}: {l:?}");
            assert!(!l.chars().any(char::is_control), "control character: {l:?}");
        }
        text
    }

    /// The lines of `text` from the one starting with `heading` (trimmed) to
    /// the next blank line.
    fn section<'a>(text: &'a str, heading: &str) -> Vec<&'a str> {
        let mut lines = text
            .lines()
            .skip_while(|l| !l.trim_start().starts_with(heading));
        let first = lines
            .next()
            .unwrap_or_else(|| panic!("no line starting with {heading:?} in:\n{text}"));
        std::iter::once(first)
            .chain(lines.take_while(|l| !l.trim().is_empty()))
            .collect()
    }

    fn has_line(text: &str, needle: &str) {
        assert!(
            text.lines().any(|l| l.contains(needle)),
            "no line containing {needle:?} in:\n{text}"
        );
    }

    #[test]
    fn header() {
        let mut t = timeline(vec![sample_process()]);
        let text = report(&t, &ReportOptions::default());
        let head: Vec<&str> = text.lines().take(10).collect();
        assert_eq!(
            head,
            [
                "mmtrace timeline report",
                "=======================",
                "Command       ./demo 'a b'",
                "Host          testhost, Linux kernel 6.1.0-test",
                "Started at    2025-01-02T03:04:05.678Z",
                "Duration      1.000 s",
                "Processes     1",
                "Stack growth  observed in the kernel (a hook on stack expansion)",
                "Lost events   none",
                "Drift         1 difference between the model and /proc/PID/maps, in 1 process (see below)",
            ]
        );

        t.lost_events = 12;
        t.lost_by_kind = BTreeMap::from([
            ("fault".to_string(), 10),
            ("mmap".to_string(), 2),
            ("brk".to_string(), 0),
        ]);
        t.command = None;
        t.processes[0].drift.clear();
        let text = report(&t, &ReportOptions::default());
        has_line(
            &text,
            "Command       none (processes already running were recorded)",
        );
        has_line(&text, "Lost events   12 (fault 10, mmap 2)");
        has_line(
            &text,
            "              WARNING: the kernel dropped these events, so the data below may be incomplete.",
        );
        has_line(
            &text,
            "Drift         none: 3 checks of the model with /proc/PID/maps found no difference",
        );

        t.processes.clear();
        let text = report(&t, &ReportOptions::default());
        has_line(&text, "no processes were recorded");
    }

    #[test]
    fn process_lines() {
        let mut p = sample_process();
        p.seeded_by = SeededBy::Proc;
        p.exec_at_ns = None;
        p.exit_at_ns = None;
        p.exit_code = None;
        let text = report(&timeline(vec![p.clone()]), &ReportOptions::default());
        has_line(&text, "Process 100 (demo)");
        has_line(&text, "Program       /usr/bin/demo");
        has_line(&text, "Parent        1");
        has_line(
            &text,
            "Traced from   first sight (its first state was read from /proc/PID/maps)",
        );
        has_line(&text, "Lifetime      0.000000 s to the end (1.000 s)");
        has_line(
            &text,
            "Exit          still running when the recording ended",
        );
        has_line(
            &text,
            "regions               11 (4 still mapped at the end)",
        );

        assert!(!text.contains("Syscalls"), "{text}");

        p.exit_at_ns = Some(500 * MS);
        p.exit_signal = Some("SIGKILL".to_string());
        p.abi = Some("i386".to_string());
        let text = report(&timeline(vec![p]), &ReportOptions::default());
        has_line(&text, "Exit          killed by SIGKILL");
        has_line(
            &text,
            "Syscalls      not traced: a 32-bit program (i386); its regions are what /proc showed at each check",
        );
        has_line(&text, "Lifetime      0.000000 s to 0.500000 s (500.0 ms)");
        has_line(&text, "regions               11 over its life");
    }

    #[test]
    fn peaks() {
        let text = report(&timeline(vec![sample_process()]), &ReportOptions::default());
        assert_eq!(
            section(&text, "Peak memory"),
            [
                "  Peak memory (the highest of 3 samples)",
                "    mapped (all regions)    12.0 MiB  at 0.200000 s",
                "    heap                     1.0 MiB  at 0.100000 s",
                "    stack                  132.0 KiB  at 0.200000 s",
                "    resident (RSS)           5.0 MiB  at 0.200000 s",
                "    regions               11 over its life",
            ]
        );

        let mut p = sample_process();
        for c in &mut p.counters {
            c.rss = None;
        }
        let text = report(&timeline(vec![p.clone()]), &ReportOptions::default());
        has_line(&text, "    resident (RSS)           unknown");
        p.counters.clear();
        let text = report(&timeline(vec![p]), &ReportOptions::default());
        has_line(
            &text,
            "  Peak memory: unknown (no samples of the memory counters were recorded)",
        );
    }

    #[test]
    fn biggest_regions() {
        let opts = ReportOptions {
            top: 3,
            ..ReportOptions::default()
        };
        let text = report(&timeline(vec![sample_process()]), &opts);
        assert_eq!(
            section(&text, "Biggest regions"),
            [
                "  Biggest regions (top 3 of 9, by size)",
                "    ADDRESS RANGE                     SIZE  PERMS  MAPPING",
                "    0x7f0000000000-0x7f0000800000  8.0 MiB  rw-p   [anon]",
                "    0x7f0006000000-0x7f0006200000  2.0 MiB  r-xp   /usr/lib/libdemo.so",
                "    0x555500000000-0x555500100000  1.0 MiB  rw-p   [heap]",
                "    (2 regions merged into or moved to another left out)",
            ]
        );
        let text = report(&timeline(vec![sample_process()]), &ReportOptions::default());
        has_line(&text, "  Biggest regions (all 9, by size)");
        has_line(
            &text,
            "    0x7f0003000000-0x7f0003100000    1.0 MiB  rw-p   [anon]  (gone at 0.400000 s: munmap)",
        );
        // Died with the process: no note.
        assert!(
            text.lines()
                .any(|l| l == "    0x7f0004000000-0x7f0004001000    4.0 KiB  rw-p   [anon]"),
            "{text}"
        );
    }

    #[test]
    fn faults() {
        let opts = ReportOptions {
            top: 2,
            ..ReportOptions::default()
        };
        let text = report(&timeline(vec![sample_process()]), &opts);
        assert_eq!(
            section(&text, "Page faults"),
            [
                "  Page faults: 694 in 5 regions; by region (top 2 of 5, the most first):",
                "    FAULTS  READ  WRITE  EXEC    TOUCHED   MAPPED    %  REGION",
                "       512     0    512     0    2.0 MiB  8.0 MiB  25%  0x7f0000000000 rw-p [anon]",
                "       100     1      0    99  400.0 KiB  2.0 MiB  20%  0x7f0006000000 r-xp /usr/lib/libdemo.so",
                "    (touched: the distinct pages that faulted, in bytes; %: touched of mapped)",
            ]
        );

        let mut p = sample_process();
        for r in &mut p.regions {
            r.faults = Faults::default();
        }
        let text = report(&timeline(vec![p]), &opts);
        has_line(&text, "  no page faults recorded");
        has_line(
            &text,
            "  mapped but never touched: unknown (no page faults were recorded for this process)",
        );
    }

    #[test]
    fn short_lived() {
        let text = report(&timeline(vec![sample_process()]), &ReportOptions::default());
        assert_eq!(
            section(&text, "Short-lived"),
            [
                "  Short-lived mappings (unmapped within 100.0 ms of being mapped): 2, 192.0 KiB in all",
                "       BORN AT    LIVED       SIZE  HOW               ADDRESS         MAPPING",
                "    0.010000 s   5.0 ms   64.0 KiB  mmap -> munmap    0x7f0001000000  [anon]",
                "    0.020000 s  50.0 ms  128.0 KiB  mmap -> replaced  0x7f0002000000  [anon]",
            ]
        );

        let opts = ReportOptions {
            short_lived_ns: 10 * MS,
            ..ReportOptions::default()
        };
        let text = report(&timeline(vec![sample_process()]), &opts);
        has_line(
            &text,
            "Short-lived mappings (unmapped within 10.0 ms of being mapped): 1, 64.0 KiB",
        );

        let opts = ReportOptions {
            short_lived_ns: 400 * MS,
            top: 1,
            ..ReportOptions::default()
        };
        let text = report(&timeline(vec![sample_process()]), &opts);
        has_line(
            &text,
            "Short-lived mappings (unmapped within 400.0 ms of being mapped): 3, 1.2 MiB",
        );
        has_line(&text, "    the first 1:");

        let opts = ReportOptions {
            short_lived_ns: MS,
            ..ReportOptions::default()
        };
        let text = report(&timeline(vec![sample_process()]), &opts);
        has_line(
            &text,
            "  no short-lived mappings (none unmapped within 1.0 ms of being mapped)",
        );
    }

    #[test]
    fn untouched() {
        let text = report(&timeline(vec![sample_process()]), &ReportOptions::default());
        // The anonymous regions mapped at the end: heap 768 KiB + anon 6 MiB
        // + stack 124 KiB + 4 KiB (died at exit).
        let total = 768 * KIB + 6 * MIB + 124 * KIB + 4 * KIB;
        assert_eq!(human_size(total), "6.9 MiB");
        assert_eq!(
            section(&text, "Mapped but never touched"),
            [
                "  Mapped but never touched, at the end: 6.9 MiB in 4 of 4 anonymous regions \
                 (heap, stacks, anon)",
                "    UNTOUCHED     MAPPED  ADDRESS RANGE                  MAPPING",
                "      6.0 MiB    8.0 MiB  0x7f0000000000-0x7f0000800000  [anon]",
                "    768.0 KiB    1.0 MiB  0x555500000000-0x555500100000  [heap]",
                "    124.0 KiB  132.0 KiB  0x7ffd00000000-0x7ffd00021000  [stack]",
                "      4.0 KiB    4.0 KiB  0x7f0004000000-0x7f0004001000  [anon]",
                "    (touched: a page fault was seen; untouched memory takes address space, not RAM)",
            ]
        );

        let mut p = sample_process();
        for r in &mut p.regions {
            if r.faults.total > 0 {
                r.faults.touched_bytes = r.faults.mapped_bytes;
            }
        }
        p.regions.retain(|r| r.id != 6);
        let text = report(&timeline(vec![p.clone()]), &ReportOptions::default());
        has_line(
            &text,
            "  no mapped but never touched memory at the end: every anonymous page was touched",
        );
        p.regions
            .retain(|r| !ANON_KINDS.contains(&r.kind.as_str()) || !mapped_at_end(r));
        let text = report(&timeline(vec![p]), &ReportOptions::default());
        has_line(
            &text,
            "  no anonymous memory (heap, stack, anon) mapped at the end, so nothing untouched",
        );
    }

    /// Found by fuzzing (fuzz/, `cargo xtask fuzz`): the totals of fault
    /// counts, short-lived sizes and untouched bytes overflowed on counts
    /// and sizes near u64::MAX (a panic with overflow checks, a wrong total
    /// without). They saturate.
    #[test]
    fn totals_of_huge_counts_saturate() {
        let half = u64::MAX / 2 + 1;
        let (a, b) = (0x7f00_0000_0000, 0x7f00_0010_0000);
        let mut p = process(
            1,
            "huge",
            vec![
                faulted(region(1, a, a + MIB, "anon", MS, "mmap"), half, 0, 0, 0),
                faulted(region(2, b, b + MIB, "anon", MS, "mmap"), half, 0, 0, 0),
                died(region(3, 0, u64::MAX, "anon", MS, "mmap"), 2 * MS, "munmap"),
                died(region(4, 0, u64::MAX, "anon", MS, "mmap"), 2 * MS, "munmap"),
            ],
        );
        for r in &mut p.regions[..2] {
            r.faults.mapped_bytes = u64::MAX;
        }
        // Not `report`: 20-digit counts make the faults table wider than
        // WIDTH.
        let text = render(&timeline(vec![p]), &ReportOptions::default());
        let max = human_size(u64::MAX);
        has_line(&text, &format!("  Page faults: {} in 2 regions", u64::MAX));
        has_line(&text, &format!("of being mapped): 2, {max} in all"));
        has_line(&text, &format!("at the end: {max} in 2 of 2 anonymous"));
    }

    #[test]
    fn checks_drift_uncertain() {
        let text = report(&timeline(vec![sample_process()]), &ReportOptions::default());
        assert_eq!(
            section(&text, "Checks"),
            [
                "  Checks: 3 comparisons with /proc/100/maps (exit 1, interval 2); 1 found drift",
                "  Drift: 1 difference between the model and /proc/100/maps",
                "    0.200000 s  missing   model   (nothing)",
                "                          kernel  0x7f0010000000-0x7f0010001000 rw-p 00000000",
                "  Uncertain: 2 intervals when the model may be wrong (lost events, or changes it missed)",
                "    0.150000 s to 0.200000 s (50.0 ms)",
                "    0.800000 s to the end",
            ]
        );

        let mut p = sample_process();
        p.checks.clear();
        p.drift.clear();
        p.uncertain.clear();
        let text = report(&timeline(vec![p]), &ReportOptions::default());
        assert_eq!(
            section(&text, "Checks"),
            [
                "  Checks: none (the model was never compared with /proc/100/maps)",
                "  drift unknown: never checked",
                "  no uncertain intervals",
            ]
        );

        // Only void checks (the process was gone at the read): still never
        // compared.
        let mut p = sample_process();
        p.drift.clear();
        p.uncertain.clear();
        p.checks = vec![Check {
            t_ns: 100 * MS,
            reason: CheckReason::Interval,
            regions: 6,
            drift: 0,
            against: CheckBasis::Maps,
            void: Some(VoidReason::Gone),
        }];
        let text = report(&timeline(vec![p]), &ReportOptions::default());
        assert!(section(&text, "Checks").contains(&"  drift unknown: never checked"));
    }

    #[test]
    fn hostile_strings_are_escaped_and_lines_fit() {
        let mut p = sample_process();
        p.comm = "evil\u{1b}[31m".to_string();
        let long = format!("/opt/{}/lib\u{7}x.so", "d".repeat(150));
        p.regions.iter_mut().find(|r| r.id == 8).unwrap().path = Some(long);
        p.regions[0].kind = "heap\u{1b}]0;pwned\u{7}".to_string();
        p.exe = Some(format!("/{}", "e".repeat(200)));
        let mut t = timeline(vec![p]);
        t.host = "h\r\nost".to_string();
        t.command = Some((0..50).map(|i| format!("argument-{i}")).collect());
        // `report` checks the width and for control characters.
        let text = report(&t, &ReportOptions::default());
        has_line(&text, "Process 100 (evil\\x1b[31m)");
        has_line(&text, "Host          h\\r\\nost, Linux kernel");
        has_line(&text, "/lib\\x07x.so");
        has_line(&text, "Program       ...eeee");
    }

    #[test]
    fn formats() {
        assert_eq!(duration(0), "0 ns");
        assert_eq!(duration(999), "999 ns");
        assert_eq!(duration(1_000), "1.0 us");
        assert_eq!(duration(420_000), "420.0 us");
        assert_eq!(duration(999_960), "1.0 ms");
        assert_eq!(duration(100 * MS), "100.0 ms");
        assert_eq!(duration(999_960_000), "1.000 s");
        assert_eq!(duration(61_234_567_890), "61.235 s");
        assert_eq!(at(0), "0.000000 s");
        assert_eq!(at(1_234_567_891), "1.234567 s");
        assert_eq!(fit_right("abcdef", 6), "abcdef");
        assert_eq!(fit_right("abcdefg", 6), "abc...");
        assert_eq!(fit_left("/usr/lib/libc.so.6", 18), "/usr/lib/libc.so.6");
        assert_eq!(fit_left("/usr/lib/libc.so.6", 16), ".../libc.so.6");
        assert_eq!(fit_left("abcdefghij", 6), "...hij");
        assert_eq!(shell_quote("a-b_c/d.e=f"), "a-b_c/d.e=f");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(percent(1, 3), "33%");
        assert_eq!(percent(2, 3), "67%");
        assert_eq!(percent(1, 0), "-");
        assert_eq!(plural(1, "a", "b"), "1 a");
        assert_eq!(plural(0, "a", "b"), "0 b");
        assert_eq!(some_of(3, 3), "all 3");
        assert_eq!(some_of(2, 3), "top 2 of 3");
    }

    // --- Errors ------------------------------------------------------------

    /// A fresh file under the temporary directory holding `contents`.
    fn temp_file(contents: &[u8]) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "mmtrace-report-test-{}-{}.json",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// `run` on a file holding `contents`: the error message, with the
    /// path replaced by FILE.
    fn error_for(contents: &[u8]) -> String {
        let path = temp_file(contents);
        let mut out = Vec::new();
        let result = run(&path, &ReportOptions::default(), &mut out);
        std::fs::remove_file(&path).unwrap();
        let e = result.expect_err("an error");
        assert!(out.is_empty(), "nothing written on error");
        let msg = e.to_string();
        assert_eq!(msg.lines().count(), 1, "one line: {msg:?}");
        msg.replace(&path.display().to_string(), "FILE")
    }

    fn json(t: &Timeline) -> Vec<u8> {
        serde_json::to_vec_pretty(t).unwrap()
    }

    #[test]
    fn good_file() {
        let t = timeline(vec![sample_process()]);
        let path = temp_file(&json(&t));
        let mut out = Vec::new();
        run(&path, &ReportOptions::default(), &mut out).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            render(&t, &ReportOptions::default())
        );
    }

    #[test]
    fn unreadable() {
        let path =
            std::env::temp_dir().join(format!("mmtrace-report-missing-{}", std::process::id()));
        let e = run(&path, &ReportOptions::default(), &mut Vec::new()).unwrap_err();
        assert!(matches!(e, ReportError::Read { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "cannot read {}: No such file or directory (os error 2)",
                path.display()
            )
        );
    }

    #[test]
    fn empty() {
        assert_eq!(error_for(b""), "FILE is empty");
        assert_eq!(error_for(b"  \n"), "FILE is empty");
    }

    #[test]
    fn not_json() {
        assert_eq!(
            error_for(b"mmtrace record output\n"),
            "FILE is not JSON: expected value at line 1 column 1"
        );
        assert_eq!(
            error_for(b"{\"schema\": \"mmtrace.timeline/v1\",\n  oops}"),
            "FILE is not JSON: key must be a string at line 2 column 3"
        );
        assert_eq!(
            error_for(b"{} {}"),
            "FILE is not JSON: trailing characters at line 1 column 4"
        );
    }

    #[test]
    fn truncated() {
        let bytes = json(&timeline(vec![sample_process()]));
        let msg = error_for(&bytes[..bytes.len() / 2]);
        assert!(
            msg.starts_with("FILE is truncated (EOF while parsing "),
            "{msg}"
        );
        assert!(msg.contains(" at line "), "{msg}");
        assert_eq!(
            error_for(b"{\"schema\": \"mmtrace.timeline/v1\""),
            "FILE is truncated (EOF while parsing an object at line 1 column 32)"
        );
    }

    #[test]
    fn other_schema() {
        let tail = "this mmtrace reads mmtrace.timeline/v1)";
        assert_eq!(
            error_for(br#"{"schema": "mmtrace.timeline/v2", "x": 1}"#),
            format!("FILE is not an mmtrace timeline (schema \"mmtrace.timeline/v2\"; {tail}")
        );
        assert_eq!(
            error_for(br#"{"schema": 1}"#),
            format!("FILE is not an mmtrace timeline (schema 1; {tail}")
        );
        assert_eq!(
            error_for(br#"{"t_ns": 1, "event": "mmap"}"#),
            format!("FILE is not an mmtrace timeline (no \"schema\" field; {tail}")
        );
        assert_eq!(
            error_for(b"[1, 2]"),
            format!("FILE is not an mmtrace timeline (a JSON array, not an object; {tail}")
        );
        // A control character in the schema is escaped, a long one cut.
        let msg =
            error_for(format!(r#"{{"schema": "a\u001b[31m{}"}}"#, "x".repeat(100)).as_bytes());
        assert!(msg.contains(r#"(schema "a\u001b[31mxxx"#), "{msg}");
        assert!(msg.contains("x...; this mmtrace reads"), "{msg}");
        assert!(!msg.contains('\u{1b}'), "{msg}");
    }

    #[test]
    fn wrong_shape() {
        let prefix = "FILE does not match mmtrace.timeline/v1: ";
        assert_eq!(
            error_for(br#"{"schema": "mmtrace.timeline/v1"}"#),
            format!("{prefix}missing field `started_at` at line 1 column 33")
        );
        let mut v = serde_json::to_value(timeline(vec![sample_process()])).unwrap();
        v["processes"][0]["regions"][1]["faults"]["total"] = serde_json::json!(-1);
        let msg = error_for(serde_json::to_string(&v).unwrap().as_bytes());
        assert!(
            msg.starts_with(&format!(
                "{prefix}invalid value: integer `-1`, expected u64 at line 1 column "
            )),
            "{msg}"
        );

        let mut t = timeline(vec![sample_process()]);
        t.processes[0].regions[1].start = "0xzz".to_string();
        assert_eq!(
            error_for(&json(&t)),
            format!("{prefix}process 100, region 2: start \"0xzz\" is not an address (0x and hex digits)")
        );
        let mut t = timeline(vec![sample_process()]);
        t.processes[0].regions[1].end = "0x1".to_string();
        assert_eq!(
            error_for(&json(&t)),
            format!("{prefix}process 100, region 2: end 0x1 is below start 0x7f0000000000")
        );
        let mut t = timeline(vec![sample_process()]);
        t.processes[0].drift[0].kernel.as_mut().unwrap().end = "12".to_string();
        assert_eq!(
            error_for(&json(&t)),
            format!("{prefix}process 100, drift at 200000000 ns: end \"12\" is not an address (0x and hex digits)")
        );
    }

    const SEC: u64 = 1_000_000_000;

    /// The steps of a curve are round, at most [`CURVE_ROWS`], and the last
    /// ends at the kill.
    #[test]
    fn oom_curve_steps_are_round() {
        let c = OomCurve::new(0, 60 * SEC);
        assert_eq!((c.step_ns, c.steps.len()), (5 * SEC, 12));
        // A life of 247.85 ms: 5 steps of 50 ms (the first starts before it).
        let c = OomCurve::new(10 * MS, 10 * MS + 247_850_000);
        assert_eq!((c.step_ns, c.steps.len()), (50 * MS, 5));
        assert_eq!(c.step_end(4), c.kill_ns);
        assert_eq!(c.step_end(0), c.kill_ns - 200 * MS);
        // Killed at its first sight: one step, of the shortest.
        let c = OomCurve::new(7 * SEC, 7 * SEC);
        assert_eq!((c.step_ns, c.steps.len()), (CURVE_MIN_STEP_NS, 1));
        // Never shorter than mmtrace's sampling tick.
        let c = OomCurve::new(0, 120 * MS);
        assert_eq!((c.step_ns, c.steps.len()), (50 * MS, 3));
        // 600 ms: 12 steps of 50 ms; 601 ms: 7 of 100 ms.
        let c = OomCurve::new(0, 600 * MS);
        assert_eq!((c.step_ns, c.steps.len()), (50 * MS, 12));
        let c = OomCurve::new(0, 601 * MS);
        assert_eq!((c.step_ns, c.steps.len()), (100 * MS, 7));
        // 13 s: 13 steps of 1 s are too many, 7 of 2 s are not.
        let c = OomCurve::new(0, 13 * SEC);
        assert_eq!((c.step_ns, c.steps.len()), (2 * SEC, 7));
    }

    /// Each step keeps its last sample; a sample at the kill is in the last
    /// step, one after it or before the window in none; a step without a
    /// sample says so and no value is made up for it.
    #[test]
    fn oom_curve_shows_gaps() {
        let kill = 100 * SEC;
        let mut c = OomCurve::new(40 * SEC, kill);
        assert_eq!((c.step_ns, c.steps.len()), (5 * SEC, 12));
        c.offer(39 * SEC, 1, Some(1)); // before the window
        c.offer(41 * SEC, 1 << 20, Some(512 << 10));
        c.offer(44 * SEC, 32 << 20, Some(16 << 20)); // the same step, later
        c.offer(47 * SEC, 8 << 20, None); // rss unknown
        c.offer(kill, 64 << 20, Some(60 << 20)); // at the kill
        c.offer(kill + 1, 1, Some(1)); // after it
        assert_eq!(c.samples, 4);
        assert_eq!(c.steps[0], Some((44 * SEC, 32 << 20, Some(16 << 20))));
        assert_eq!(c.steps[1], Some((47 * SEC, 8 << 20, None)));
        assert!(c.steps[2..11].iter().all(Option::is_none));
        assert_eq!(c.steps[11], Some((kill, 64 << 20, Some(60 << 20))));
        // A sample on a step's end belongs to that step.
        c.offer(kill - 5 * SEC, 9 << 20, Some(9 << 20));
        assert_eq!(c.steps[10], Some((kill - 5 * SEC, 9 << 20, Some(9 << 20))));

        let mut s = String::new();
        c.render(&mut s);
        let lines: Vec<&str> = s.lines().collect();
        assert!(
            lines[0].contains("12 steps of 5.000 s, from 40.000000 s"),
            "{s}"
        );
        assert!(
            lines[1].contains("STEP ENDS") && lines[1].contains("64.0 MiB"),
            "{s}"
        );
        let row = |t: &str| {
            *lines
                .iter()
                .find(|l| l.trim_start().starts_with(t))
                .unwrap_or_else(|| panic!("no row {t}:\n{s}"))
        };
        let first = row("45.000000 s");
        assert!(
            first.contains("-55.000 s") && first.contains("32.0 MiB"),
            "{s}"
        );
        // 16 and 32 of 64 MiB: 10 columns resident, 10 more mapped.
        assert!(
            first.ends_with(&format!("16.0 MiB  {}{}", "#".repeat(10), ".".repeat(10))),
            "{s}"
        );
        assert!(row("50.000000 s").ends_with("unknown  ....."), "{s}");
        let gap = row("55.000000 s");
        assert!(
            gap.contains("-45.000 s") && gap.ends_with("-         -  no sample"),
            "{s}"
        );
        let last = row("100.000000 s");
        assert!(
            last.contains("the kill") && last.contains("64.0 MiB"),
            "{s}"
        );
        // 60 of 64 MiB resident: 38 of 40 columns, then 2 mapped.
        assert!(last.ends_with(&format!("{}..", "#".repeat(38))), "{s}");
        assert!(lines.iter().all(|l| l.chars().count() <= WIDTH), "{s}");
        assert!(s.contains("the last of 5 samples taken in it"), "{s}");
    }

    /// No sample in the window: said in one line.
    #[test]
    fn oom_curve_without_samples() {
        let mut s = String::new();
        OomCurve::new(0, 3 * SEC).render(&mut s);
        assert!(s.contains("no counters sample in that time"), "{s}");
        assert_eq!(s.lines().count(), 2, "{s}");
    }

    /// A v2 recording whose process lived 20 s before its OOM kill: the
    /// report's OOM section shows its curves over its life, in steps of
    /// 2 s, from its first record.
    #[test]
    fn oom_section_shows_the_curves_of_a_short_life() {
        let mut lines = vec![
            include_str!("../../../tests/data/timeline-v2-small.jsonl")
                .lines()
                .next()
                .unwrap()
                .to_string(),
            format!(
                r#"{{"type":"process","t_ns":{},"proc":1,"pid":77,"event":"start","ppid":1,"comm":"hog","exe":"/bin/hog","abi":"x86_64","seeded_by":"exec","start_time":1}}"#,
                10 * SEC
            ),
            format!(
                r#"{{"type":"region","t_ns":{},"proc":1,"pid":77,"region":1,"op":"born","start":"0x7f0000000000","end":"0x7f0000100000","perms":"rw-p","cause":"mmap","born":{{"kind":"anon","path":null,"offset":0,"dev":null,"inode":null,"parent":null}}}}"#,
                10 * SEC
            ),
        ];
        for i in 0..10u64 {
            // One sample every 2 s but none between 16 s and 22 s.
            let t = 11 * SEC + i * 2 * SEC;
            if (16 * SEC..22 * SEC).contains(&t) {
                continue;
            }
            lines.push(format!(
                r#"{{"type":"counters","t_ns":{t},"proc":1,"pid":77,"mapped":{},"heap":0,"stack":0,"rss":{},"faults":0}}"#,
                (i + 1) << 20,
                i << 20
            ));
        }
        lines.push(format!(r#"{{"type":"region","t_ns":{},"proc":1,"pid":77,"region":1,"op":"grow","start":"0x7f0000000000","end":"0x7f0000a00000","perms":"rw-p"}}"#, 29 * SEC));
        lines.push(format!(r#"{{"type":"region","t_ns":{},"proc":1,"pid":77,"region":1,"op":"end","start":"0x7f0000000000","end":"0x7f0000a00000","perms":"rw-p","faults":{{"total":0,"read":0,"write":0,"exec":0,"present":0,"first_ns":null,"last_ns":null,"touched_bytes":0,"mapped_bytes":10485760}}}}"#, 30 * SEC + 5));
        lines.push(format!(r#"{{"type":"process","t_ns":{},"proc":1,"pid":77,"event":"exit","ppid":1,"comm":"hog","exe":"/bin/hog","exit_signal":"SIGKILL","oom_kill_ns":{}}}"#, 30 * SEC + 5, 30 * SEC));
        lines.push(format!(r#"{{"type":"end","t_ns":{0},"duration_ns":{0},"stack_source":"fexit","events":9,"lost_events":0,"lost_by_kind":{{}},"processes":1,"regions":1,"region_records":3,"checks":0,"drift":0}}"#, 31 * SEC));
        let text = lines.join("\n") + "\n";
        let report = render_v2(
            "t.jsonl",
            text.as_bytes(),
            &ReportOptions::default(),
            || Ok(text.as_bytes()),
        )
        .unwrap();
        let oom = &report[report.find("OOM kill: process 77 (hog)").expect(&report)
            ..report.find("Process 77 (hog)").unwrap()];
        assert!(oom.contains("10.0 MiB mapped in the last minute"), "{oom}");
        assert!(
            oom.contains("(10 steps of 2.000 s, from 10.000000 s)"),
            "{oom}"
        );
        let row = |t: &str| {
            oom.lines()
                .find(|l| l.trim_start().starts_with(t))
                .unwrap_or_else(|| panic!("no row {t}:\n{oom}"))
        };
        assert!(row("12.000000 s").contains("1.0 MiB"), "{oom}");
        for t in ["18.000000 s", "20.000000 s"] {
            assert!(row(t).ends_with("no sample"), "{oom}");
        }
        assert!(row("30.000000 s").contains("the kill"), "{oom}");
        assert!(row("30.000000 s").contains("10.0 MiB"), "{oom}");
        assert!(oom.contains("the last of 7 samples"), "{oom}");
    }

    /// A v1 document carries the kill too (`oom_kill_ns`): its report opens
    /// with the same section, curves included, and its page has it.
    #[test]
    fn a_v1_oom_kill_is_explained() {
        let anon = 0x7f00_0000_0000;
        let mut grown = region(2, anon, anon + MIB, "anon", 100 * MS, "mmap");
        grown.end = hex(anon + 40 * MIB);
        grown.history.push(Change {
            t_ns: 500 * MS,
            op: crate::model::Op::Grow,
            start: hex(anon),
            end: hex(anon + 40 * MIB),
            perms: "rw-p".to_string(),
        });
        grown.died_ns = Some(900 * MS);
        grown.died_by = Some(Cause::Exit);
        let mut p = process(100, "hog", vec![grown]);
        (p.exit_code, p.exit_signal) = (None, Some("SIGKILL".to_string()));
        p.oom_kill_ns = Some(890 * MS);
        p.counters = vec![
            sample(200 * MS, MIB, 0, 0, Some(MIB)),
            sample(600 * MS, 40 * MIB, 0, 0, Some(30 * MIB)),
            sample(895 * MS, 40 * MIB, 0, 0, Some(39 * MIB)), // after the kill
        ];
        let t = timeline(vec![p, sample_process()]);
        let text = render(&t, &ReportOptions::default());
        let oom = &text[text.find("OOM kill: process 100 (hog)").expect(&text)
            ..text.find("Process 100 (hog)").unwrap()];
        assert!(oom.contains("Killed at     0.890000 s"), "{oom}");
        assert!(
            oom.contains("40.0 MiB mapped, 30.0 MiB resident (last sample, at 0.600000 s)"),
            "{oom}"
        );
        assert!(oom.contains("40.0 MiB mapped in the last minute"), "{oom}");
        assert!(
            oom.contains("+40.0 MiB  0x7f0000000000-0x7f0002800000"),
            "{oom}"
        );
        // Its life from 0 (its exec) to the kill: 9 steps of 100 ms.
        assert!(
            oom.contains("(9 steps of 100.0 ms, from 0.000000 s)"),
            "{oom}"
        );
        assert!(oom.contains("the last of 2 samples"), "{oom}");
        // One OOM section only: the other process was not killed.
        assert_eq!(text.matches("OOM kill:").count(), 1, "{text}");

        // Written and read back by serde, the field goes with it; a
        // document without it (older) reads as not killed.
        let mut v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["processes"][0]["oom_kill_ns"], 890 * MS);
        v["processes"][0]
            .as_object_mut()
            .unwrap()
            .remove("oom_kill_ns");
        let back: Timeline = serde_json::from_value(v).unwrap();
        assert_eq!(back.processes[0].oom_kill_ns, None);
    }
}
