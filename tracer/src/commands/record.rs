//! `mmtrace record`: every region of every traced process from birth to
//! death, checked against /proc/PID/maps, written as one
//! `mmtrace.timeline/v1` document.
//!
//! The session keeps the model ([`crate::model::Tracker`]) and makes the
//! checks ([`crate::session::checker`]); this sink collects what each
//! process's document needs (counters, checks, drift) and writes the
//! document at the end.

use std::{
    collections::{BTreeMap, HashMap},
    io::{BufWriter, Write},
    time::Duration,
};

use tracer_common::EventKind;

use crate::{
    cli::{kind_mask, FaultMode, RecordArgs},
    error::{Result, EXIT_OUTPUT_INCOMPLETE},
    event::Event,
    kernel::StackPath,
    model::{CheckReason, Comparison, Process, RegionChange},
    output::{
        file::{self, Replace},
        timeline::{self, MapsEntry, Timeline},
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
    let trace = std::mem::take(&mut args.trace);
    let target = session::start(trace, pids)?;
    Ok(Prepared { args, target })
}

/// Collects each process's document.
struct RecordSink {
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

impl Sink for RecordSink {
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
            r.drift.push(timeline::Drift {
                t_ns: c.t_ns,
                kind: d.kind.to_string(),
                model: d.model.as_ref().map(MapsEntry::of),
                kernel: d.kernel.as_ref().map(MapsEntry::of),
                fields: d.fields.iter().map(|f| (*f).to_string()).collect(),
                counters: c
                    .residual
                    .clone()
                    .filter(|_| d.model.is_none() && d.kernel.is_none()),
            });
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

impl RecordSink {
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

/// Records until the end condition, writes the timeline; returns mmtrace's
/// exit code.
pub async fn run(p: Prepared) -> Result<i32> {
    let Prepared { args, mut target } = p;
    let plan = Plan {
        // Every event feeds the model; all are counted in the summary.
        events: kind_mask(&[], FaultMode::All),
        faults: FaultMode::All,
        model: Some(ModelPlan {
            bucket_ns: (args.fault_bucket * 1e9) as u64,
            keep_history: true,
            check_interval: Some(Duration::from_secs_f64(args.reconcile_interval)),
            counters: true,
        }),
        tick: TICK,
    };
    let mut sink = RecordSink {
        start_ns: 0,
        bucket_ns: plan.model.as_ref().map_or(0, |m| m.bucket_ns),
        records: HashMap::new(),
        done: BTreeMap::new(),
        lost_by_kind: BTreeMap::new(),
        lost_events: 0,
    };
    let outcome = session::run(&mut target, &plan, &mut sink).await?;
    let duration_ns = outcome.elapsed.as_nanos() as u64;
    let doc = sink.timeline(&target, duration_ns, outcome.stack_path);
    let written = write_doc(&doc, &args.output);
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

/// Writes the document whole, or leaves the target as it was.
fn write_doc(doc: &Timeline, path: &std::path::Path) -> std::io::Result<()> {
    let mut out = Replace::create(path).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut w = BufWriter::new(out.file());
    serde_json::to_writer(&mut w, doc)?;
    w.write_all(b"\n")?;
    w.flush()?;
    drop(w);
    out.commit()
}
