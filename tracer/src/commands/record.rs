//! `mmtrace record`: every region of every traced process from birth to
//! death, checked against /proc/PID/maps, written as an
//! `mmtrace.timeline/v2` recording (JSON Lines, written as it goes), or
//! with `--format v1` as one `mmtrace.timeline/v1` document at the end.
//!
//! The session keeps the model ([`crate::model::Tracker`]) and makes the
//! checks ([`crate::session::checker`]). For v2 the model keeps no history
//! (a dead region is dropped once its death is written), and [`V2Sink`]
//! writes each change as a line: memory follows what is alive. For v1,
//! [`V1Sink`] collects what each process's document needs (counters,
//! checks, drift) and the model keeps every region until the end.

use std::{
    collections::{BTreeMap, HashMap},
    io::{BufWriter, Write},
    path::PathBuf,
    time::{Duration, Instant},
};

use tracer_common::EventKind;

use crate::{
    cli::{kind_mask, FaultMode, RecordArgs, TimelineFormat},
    error::{Result, EXIT_OUTPUT_INCOMPLETE},
    event::{Body, Event},
    kernel::{clock, StackPath},
    model::{
        tracker::journal_changes, ChangeOp, CheckBasis, CheckReason, Comparison, Op, Process,
        RegionChange, VoidReason,
    },
    output::{
        file::{self, LineFile, Replace},
        timeline::{self, Timeline},
        timeline2::{self as v2, ProcessEvent, Record, RegionRecord},
    },
    session::{self, command, ModelPlan, Plan, Sink, Target},
};

/// Ticks: checks are started and resolved, counters sampled.
const TICK: Duration = Duration::from_millis(50);

pub struct Prepared {
    args: RecordArgs,
    target: Target,
}

pub fn prepare(mut args: RecordArgs) -> Result<Prepared> {
    let pids = session::check(&args.trace)?;
    if let Some(program) = args.trace.command.first() {
        command::resolve_program(program)?;
    }
    // Written at the end, through a temporary file; checked now.
    file::check(&args.output)?;
    if let Some(trace) = &args.perfetto {
        if args.format != TimelineFormat::V2 {
            return Err(crate::error::Error::Usage(
                "--perfetto needs --format v2 (the trace is made from the v2 timeline)".into(),
            ));
        }
        if trace == &args.output {
            return Err(crate::error::Error::Usage(
                "--perfetto and --output name the same file".into(),
            ));
        }
        crate::output::perfetto::check_new(trace)?;
    }
    let trace = std::mem::take(&mut args.trace);
    let target = session::start(trace, pids)?;
    Ok(Prepared { args, target })
}

/// Collects each process's document (v1).
struct V1Sink {
    start_ns: u64,
    bucket_ns: u64,
    /// What is known of each live process besides its model, by its order
    /// of first sight (a pid may be reused).
    records: HashMap<u64, timeline::Record>,
    /// The documents of the processes that left the model, by order of
    /// first sight.
    done: BTreeMap<u64, timeline::Process>,
    lost_by_kind: BTreeMap<String, u64>,
    lost_events: u64,
}

impl Sink for V1Sink {
    fn started(&mut self, start_ns: u64) {
        self.start_ns = start_ns;
    }

    fn event(&mut self, _ev: &Event, _changes: &[RegionChange]) {}

    fn lost(&mut self, kind: EventKind, count: u64, _now_ns: u64) {
        self.lost_events += count;
        *self
            .lost_by_kind
            .entry(kind.name().to_string())
            .or_default() += count;
    }

    fn check(&mut self, p: &Process, reason: CheckReason, c: &Comparison) {
        let r = self.records.entry(p.seq).or_default();
        for d in &c.differences {
            r.drift
                .push(timeline::Drift::of(c.t_ns, d, c.residual.as_deref()));
        }
        r.checks.push(timeline::Check {
            t_ns: c.t_ns,
            reason,
            regions: c.regions,
            drift: c.differences.len() as u64,
            against: c.against,
            void: c.void,
        });
    }

    fn sample(&mut self, now_ns: u64, p: &Process) {
        let (mapped, heap, stack) = p.space.sizes();
        self.records
            .entry(p.seq)
            .or_default()
            .counters
            .push(timeline::CounterSample {
                t_ns: now_ns.saturating_sub(self.start_ns),
                mapped,
                heap,
                stack,
                rss: p.rss,
                faults: p.faults_since_sample,
            });
    }

    fn ended(&mut self, p: Process) {
        let seq = p.seq;
        let record = self.records.remove(&seq).unwrap_or_default();
        self.done
            .insert(seq, timeline::Process::of(p, record, self.bucket_ns));
    }

    fn flush(&mut self) -> bool {
        true
    }
}

impl V1Sink {
    fn timeline(self, target: &Target, duration_ns: u64, stack_path: StackPath) -> Timeline {
        let wall = std::time::SystemTime::now() - Duration::from_nanos(duration_ns);
        Timeline {
            schema: timeline::SCHEMA.to_string(),
            started_at: humantime::format_rfc3339_millis(wall).to_string(),
            monotonic_start_ns: self.start_ns,
            duration_ns,
            host: read_trim("/proc/sys/kernel/hostname"),
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            command: target
                .command_line()
                .map(|c| c.iter().map(|a| a.to_string_lossy().into_owned()).collect()),
            lost_events: self.lost_events,
            lost_by_kind: self.lost_by_kind,
            stack_source: stack_path.name().to_string(),
            processes: self.done.into_values().collect(),
        }
    }
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// What the v2 writer knows of a live process.
#[derive(Default)]
struct Written {
    /// The exec its last record told.
    exec_at: Option<u64>,
    /// The start of the last closed interval of uncertainty written.
    uncertain_from: Option<u64>,
    /// The process whose address space it shared, as last written.
    shares: Option<u32>,
}

/// Where [`V2Sink`]'s records go: one file (`record`), or one file per
/// process (the daemon, [`crate::daemon::sink`]). The records are the same.
pub trait V2Out {
    /// One record, in the recording's order.
    fn put(&mut self, rec: &Record);
    /// Flushes; false once the output is gone.
    fn flush(&mut self) -> bool;
    /// How stack growth is observed (known once attached).
    fn attached(&mut self, _stack: StackPath) {}
    /// The session received this signal (SIGHUP; or a stop signal, just
    /// before it stops).
    fn signal(&mut self, _name: &'static str) {}
    /// The events handled so far (the end line's `events`), before each
    /// flush.
    fn events(&mut self, _total: u64) {}
}

/// `record`'s output: the whole recording in one file.
struct FileOut {
    out: LineFile,
    path: PathBuf,
    line: Vec<u8>,
    /// The first write that failed: nothing is written after it.
    failed: Option<std::io::Error>,
    /// A traced command waits on mmtrace (stopped at each exec until its
    /// maps are read, held at exit for a check): after a failed write the
    /// session goes on, writing nothing, until the command ends, so that
    /// it is never left waiting.
    serve_command: bool,
    last_flush: Instant,
}

impl FileOut {
    fn fail(&mut self, e: std::io::Error) {
        if self.failed.is_none() {
            let goes_on = if self.serve_command {
                " (the command runs on, untraced, to its end)"
            } else {
                ""
            };
            eprintln!(
                "mmtrace: cannot write {}: {e}; recording stops, the timeline is incomplete{goes_on}",
                self.path.display()
            );
            self.failed = Some(e);
        }
    }
}

impl V2Out for FileOut {
    fn put(&mut self, rec: &Record) {
        if self.failed.is_some() {
            return;
        }
        self.line.clear();
        v2::write_record(&mut self.line, rec);
        if let Err(e) = self.out.write_all(&self.line) {
            self.fail(e);
        }
    }

    fn flush(&mut self) -> bool {
        // Whole lines reach the file about every second (a killed
        // recording leaves a valid prefix), and when the buffer fills.
        if self.failed.is_none() && self.last_flush.elapsed() >= Duration::from_secs(1) {
            self.last_flush = Instant::now();
            if let Err(e) = self.out.flush() {
                self.fail(e);
            }
        }
        self.failed.is_none() || self.serve_command
    }
}

/// Renders the session's events as v2 records, as they happen.
pub struct V2Sink<O: V2Out> {
    start_ns: u64,
    /// The header, written at the start (times filled in then).
    header: v2::Header,
    pub out: O,
    /// Live processes by order of first sight, and their pids.
    procs: crate::FastMap<u64, Written>,
    seq_of: crate::FastMap<u32, u64>,
    totals: v2::End,
}

impl<O: V2Out> V2Sink<O> {
    /// A sink writing `header` then every record to `out`.
    pub fn new(header: v2::Header, out: O) -> V2Sink<O> {
        V2Sink {
            start_ns: 0,
            header,
            out,
            procs: crate::FastMap::default(),
            seq_of: crate::FastMap::default(),
            totals: v2::End::default(),
        }
    }

    fn rel(&self, mono: u64) -> u64 {
        mono.saturating_sub(self.start_ns)
    }

    /// CLOCK_MONOTONIC ns where the records' times start.
    pub fn start_ns(&self) -> u64 {
        self.start_ns
    }

    /// Whether process `pid` has records (it is modelled).
    pub fn knows(&self, pid: u32) -> bool {
        self.seq_of.contains_key(&pid)
    }

    fn put(&mut self, rec: &Record) {
        self.out.put(rec);
    }

    fn region(&mut self, rec: RegionRecord) {
        self.totals.region_records += 1;
        if rec.op == v2::RegionOp::Born {
            self.totals.regions += 1;
        }
        self.put(&Record::Region(rec));
    }

    /// Writes `p`'s start the first time it is seen, its exec when it
    /// made one since, and its newly closed intervals of uncertainty.
    /// `in_event`: an event touched it (its changes come with the event);
    /// otherwise (a process named with --pid, seeded at the start) its
    /// regions are written here.
    fn know(&mut self, t_ns: u64, p: &Process, in_event: bool) {
        if !self.procs.contains_key(&p.seq) {
            self.totals.processes += 1;
            let rec = v2::ProcessRecord::of(t_ns, p, ProcessEvent::Start);
            self.put(&Record::Process(rec));
            if !in_event {
                self.live_regions(p);
            }
            self.procs.insert(
                p.seq,
                Written {
                    exec_at: p.exec_at,
                    uncertain_from: None,
                    shares: p.shares,
                },
            );
            self.seq_of.insert(p.pid, p.seq);
        }
        let w = self.procs.entry(p.seq).or_default();
        let exec = p.exec_at.is_some() && p.exec_at != w.exec_at;
        w.exec_at = p.exec_at;
        // It shared an address space whose owner left (exit or exec): it
        // holds that space now, whose regions were the owner's records.
        let inherited = w.shares.is_some() && p.shares.is_none() && !exec;
        w.shares = p.shares;
        let since = w.uncertain_from;
        let fresh: Vec<v2::Uncertain> = p
            .uncertain
            .iter()
            .filter(|u| since.is_none_or(|s| u.from_ns > s))
            .map(|u| v2::Uncertain {
                proc: p.seq,
                pid: p.pid,
                from_ns: u.from_ns,
                to_ns: u.to_ns,
            })
            .collect();
        if let Some(last) = fresh.last() {
            w.uncertain_from = Some(last.from_ns);
        }
        if exec {
            let t = p.exec_at.unwrap_or(t_ns);
            let rec = v2::ProcessRecord::of(t, p, ProcessEvent::Exec);
            self.put(&Record::Process(rec));
        }
        for u in fresh {
            self.put(&Record::Uncertain(u));
        }
        if inherited {
            self.live_regions(p);
        }
    }

    /// Writes `p`'s live regions as born (as they were born): a process
    /// seeded at the start, or one that inherited a shared address space.
    fn live_regions(&mut self, p: &Process) {
        for r in p.space.live() {
            let born = RegionChange {
                pid: p.pid,
                op: ChangeOp::Entry(Op::Born),
                region: r,
                start: r.start,
                end: r.end,
                perms: r.perms,
                old: None,
                cause: Some(r.born_by),
            };
            self.region(RegionRecord::of(r.born_ns, p.seq, &born));
        }
    }
}

impl<O: V2Out> Sink for V2Sink<O> {
    fn started(&mut self, start_ns: u64) {
        self.start_ns = start_ns;
        self.header.monotonic_start_ns = start_ns;
        let wall = std::time::SystemTime::now()
            - Duration::from_nanos(clock::monotonic_ns().saturating_sub(start_ns));
        self.header.started_at = humantime::format_rfc3339_millis(wall).to_string();
        let header = Record::Header(self.header.clone());
        self.put(&header);
    }

    fn processes(&mut self, ev: &Event, touched: &[&Process]) {
        let t = self.rel(ev.ts_ns);
        for p in touched {
            self.know(t, p, true);
        }
    }

    fn event(&mut self, ev: &Event, changes: &[RegionChange]) {
        if !matches!(ev.body, Body::FaultSummary { .. } | Body::Lost { .. }) {
            self.totals.events += 1;
        }
        if changes.is_empty() {
            return;
        }
        let t = self.rel(ev.ts_ns);
        for c in changes {
            let seq = self.seq_of.get(&c.pid).copied().unwrap_or(0);
            self.region(RegionRecord::of(t, seq, c));
        }
    }

    fn lost(&mut self, kind: EventKind, count: u64, now_ns: u64) {
        self.totals.lost_events += count;
        *self
            .totals
            .lost_by_kind
            .entry(kind.name().to_string())
            .or_default() += count;
        let rec = Record::Lost(v2::Lost {
            t_ns: self.rel(now_ns),
            kind: kind.name().to_string(),
            count,
        });
        self.put(&rec);
    }

    fn check(&mut self, p: &Process, reason: CheckReason, c: &Comparison) {
        self.know(c.t_ns, p, false);
        self.totals.checks += 1;
        self.totals.drift += c.differences.len() as u64;
        let rec = Record::Check(v2::Check {
            t_ns: c.t_ns,
            proc: p.seq,
            pid: p.pid,
            reason,
            void: c.void.is_some(),
            regions: c.regions,
            drift: c.differences.len() as u64,
            against: c.against,
            void_reason: c.void,
        });
        self.put(&rec);
        for d in &c.differences {
            let dr = timeline::Drift::of(c.t_ns, d, c.residual.as_deref());
            let rec = Record::Drift(v2::Drift {
                t_ns: dr.t_ns,
                proc: p.seq,
                pid: p.pid,
                kind: dr.kind,
                model: dr.model,
                kernel: dr.kernel,
                fields: dr.fields,
                counters: dr.counters,
            });
            self.put(&rec);
        }
        // What the resync did (the tracker cleared the journal before it).
        // An exit check (by counters) resyncs nothing: the exit's changes
        // were written with its event.
        if c.against == CheckBasis::Maps {
            for change in journal_changes(p.pid, &p.space, 0) {
                self.region(RegionRecord::of(c.t_ns, p.seq, &change));
            }
        }
        // The comparison ended an interval of uncertainty.
        self.know(c.t_ns, p, false);
    }

    fn void_check(&mut self, pid: u32, reason: CheckReason, ts_ns: u64, why: Option<VoidReason>) {
        let Some(&seq) = self.seq_of.get(&pid) else {
            return;
        };
        self.totals.checks += 1;
        let rec = Record::Check(v2::Check {
            t_ns: self.rel(ts_ns),
            proc: seq,
            pid,
            reason,
            void: true,
            regions: 0,
            drift: 0,
            against: CheckBasis::Maps,
            void_reason: why,
        });
        self.put(&rec);
    }

    fn sample(&mut self, now_ns: u64, p: &Process) {
        let t = self.rel(now_ns);
        self.know(t, p, false);
        let (mapped, heap, stack) = p.space.sizes();
        let rec = Record::Counters(v2::Counters {
            t_ns: t,
            proc: p.seq,
            pid: p.pid,
            mapped,
            heap,
            stack,
            rss: p.rss,
            faults: p.faults_since_sample,
        });
        self.put(&rec);
    }

    fn ended(&mut self, p: Process) {
        let now = self.rel(clock::monotonic_ns());
        let t = p.exit_at.unwrap_or(now);
        self.know(t, &p, false);
        for r in p.space.live() {
            self.region(RegionRecord::end(t, p.seq, p.pid, r));
        }
        if let Some(from) = p.uncertain_since {
            let rec = Record::Uncertain(v2::Uncertain {
                proc: p.seq,
                pid: p.pid,
                from_ns: from,
                to_ns: None,
            });
            self.put(&rec);
        }
        let event = if p.exit_at.is_some() {
            ProcessEvent::Exit
        } else {
            ProcessEvent::End
        };
        let rec = Record::Process(v2::ProcessRecord::of(t, &p, event));
        self.put(&rec);
        self.procs.remove(&p.seq);
        if self.seq_of.get(&p.pid) == Some(&p.seq) {
            self.seq_of.remove(&p.pid);
        }
    }

    fn flush(&mut self) -> bool {
        self.out.events(self.totals.events);
        self.out.flush()
    }

    fn attached(&mut self, stack: StackPath) {
        self.out.attached(stack);
    }

    fn signal(&mut self, name: &'static str) {
        self.out.signal(name);
    }
}

/// Records until the end condition, writes the timeline; returns mmtrace's
/// exit code.
pub async fn run(p: Prepared) -> Result<i32> {
    match p.args.format {
        TimelineFormat::V2 => run_v2(p).await,
        TimelineFormat::V1 => run_v1(p).await,
    }
}

/// The plan of a recording: every event, the model, checks and counters.
fn plan(args: &RecordArgs, keep_history: bool) -> Plan {
    Plan {
        // Every event feeds the model; all are counted in the summary.
        events: kind_mask(&[], FaultMode::All),
        faults: FaultMode::All,
        model: Some(ModelPlan {
            bucket_ns: (args.fault_bucket * 1e9) as u64,
            keep_history,
            check_interval: Some(Duration::from_secs_f64(args.reconcile_interval)),
            counters: true,
            seed_running: false,
        }),
        tick: TICK,
    }
}

/// Runs the session.
async fn record<S: Sink>(
    target: &mut Target,
    plan: &Plan,
    sink: &mut S,
) -> Result<session::Outcome> {
    session::run(target, plan, sink).await
}

async fn run_v2(p: Prepared) -> Result<i32> {
    let Prepared { args, mut target } = p;
    let plan = plan(&args, false);
    // A temporary file beside the target, renamed over it once complete.
    let mut out = Replace::create(&args.output, access(&args))?;
    let file = out.file().try_clone().map_err(|e| {
        crate::error::Error::Usage(format!("cannot write {}: {e}", args.output.display()))
    })?;
    let a = &target.args;
    let header = v2::Header {
        schema: v2::SCHEMA.to_string(),
        version: 2,
        mmtrace: env!("CARGO_PKG_VERSION").to_string(),
        started_at: String::new(),
        monotonic_start_ns: 0,
        clock: "monotonic".to_string(),
        host: read_trim("/proc/sys/kernel/hostname"),
        kernel: read_trim("/proc/sys/kernel/osrelease"),
        command: target
            .command_line()
            .map(|c| c.iter().map(|a| a.to_string_lossy().into_owned()).collect()),
        selection: v2::Selection {
            pids: a.pids.clone(),
            comms: a
                .comms
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect(),
            cgroups: crate::kernel::cgroup::selection_names(&target.cgroups),
            follow: a.follow || target.command.is_some(),
        },
        options: v2::Options {
            reconcile_interval_ns: (args.reconcile_interval * 1e9) as u64,
            duration_ns: a.duration.map(|d| (d * 1e9) as u64),
        },
    };
    let file_out = FileOut {
        out: LineFile::new(file),
        path: args.output.clone(),
        line: Vec::with_capacity(512),
        failed: None,
        serve_command: target.command.is_some(),
        last_flush: Instant::now(),
    };
    let mut sink = V2Sink::new(header, file_out);
    let outcome = record(&mut target, &plan, &mut sink).await?;
    let duration_ns = outcome.elapsed.as_nanos() as u64;
    let mut end = std::mem::take(&mut sink.totals);
    end.t_ns = sink.rel(clock::monotonic_ns());
    end.duration_ns = duration_ns;
    end.stack_source = outcome.stack_path.name().to_string();
    sink.put(&Record::End(end));
    if sink.out.failed.is_none() {
        if let Err(e) = sink.out.out.flush() {
            sink.out.fail(e);
        }
    }
    let code = session::finish(&outcome, &target);
    if sink.out.failed.is_some() {
        // The temporary file goes with `out`: nothing appears at the target.
        drop(out);
        return Ok(EXIT_OUTPUT_INCOMPLETE);
    }
    drop(sink);
    match out.commit() {
        Ok(()) => match &args.perfetto {
            Some(trace) => {
                match crate::output::perfetto::export_file(&args.output, trace, access(&args)) {
                    Ok(stats) => {
                        eprintln!("{}", crate::output::perfetto::summary(trace, &stats));
                        Ok(code)
                    }
                    Err(e) => {
                        eprintln!(
                            "mmtrace: cannot write the Perfetto trace {}: {e} (the timeline is complete)",
                            trace.display()
                        );
                        Ok(EXIT_OUTPUT_INCOMPLETE)
                    }
                }
            }
            None => Ok(code),
        },
        Err(e) => {
            eprintln!(
                "mmtrace: cannot write {}: {e}; nothing was written there",
                args.output.display()
            );
            Ok(EXIT_OUTPUT_INCOMPLETE)
        }
    }
}

async fn run_v1(p: Prepared) -> Result<i32> {
    let Prepared { args, mut target } = p;
    let plan = plan(&args, true);
    let mut sink = V1Sink {
        start_ns: 0,
        bucket_ns: plan.model.as_ref().map_or(0, |m| m.bucket_ns),
        records: HashMap::new(),
        done: BTreeMap::new(),
        lost_by_kind: BTreeMap::new(),
        lost_events: 0,
    };
    let outcome = record(&mut target, &plan, &mut sink).await?;
    let duration_ns = outcome.elapsed.as_nanos() as u64;
    let doc = sink.timeline(&target, duration_ns, outcome.stack_path);
    let written = write_doc(&doc, &args.output, access(&args));
    let code = session::finish(&outcome, &target);
    match written {
        Ok(()) => Ok(code),
        Err(e) => {
            eprintln!(
                "mmtrace: cannot write {}: {e}; nothing was written there",
                args.output.display()
            );
            Ok(EXIT_OUTPUT_INCOMPLETE)
        }
    }
}

/// Who may read the timeline (`--output-group`).
fn access(args: &RecordArgs) -> file::Access {
    file::Access {
        group: args.output_group,
    }
}

/// Writes the document whole, or leaves the target as it was.
fn write_doc(doc: &Timeline, path: &std::path::Path, access: file::Access) -> std::io::Result<()> {
    let mut out =
        Replace::create(path, access).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut w = BufWriter::new(out.file());
    serde_json::to_writer(&mut w, doc)?;
    w.write_all(b"\n")?;
    w.flush()?;
    drop(w);
    out.commit()
}
