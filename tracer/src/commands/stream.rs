//! `mmtrace stream`: every event, live, as text or JSON lines (or, with
//! `--regions`, the region changes they make: see [`crate::commands::regions`]).

use std::{
    collections::HashMap,
    fs::File,
    io::{self, BufWriter, IsTerminal, Write},
};

use tracer_common::{EventKind, FaultCounts, FAULTS_ALL, FAULTS_OFF, FAULTS_SUMMARY};

use crate::{
    cli::{kind_mask, FaultMode, Format, StreamArgs},
    commands::regions::RegionSink,
    error::{Error, Result},
    event::{Body, Event},
    kernel::{clock, Hooks},
    output::{self, Printer},
    session::{self, Sink, Target},
};

/// Everything checked and prepared before anything is attached.
pub struct Prepared {
    args: StreamArgs,
    out: Box<dyn Write>,
    color: bool,
    target: Target,
}

/// Validates the arguments, opens the output, starts the command held.
/// Runs before the async runtime exists.
pub fn prepare(mut args: StreamArgs) -> Result<Prepared> {
    let pids = session::check(&args.trace)?;
    let (out, color): (Box<dyn Write>, bool) = match &args.output {
        Some(path) => {
            let file = File::create(path)
                .map_err(|e| Error::Usage(format!("cannot write {}: {e}", path.display())))?;
            (Box::new(BufWriter::new(file)), false)
        }
        None => {
            let tty = io::stdout().is_terminal();
            let color = tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            (
                Box::new(BufWriter::new(io::stdout())),
                color && args.format == Format::Text,
            )
        }
    };
    let trace = std::mem::take(&mut args.trace);
    let target = session::start(trace, pids, false)?;
    Ok(Prepared {
        args,
        out,
        color,
        target,
    })
}

/// Prints events; also the fault summaries and lost lines of
/// `stream --regions` ([`crate::commands::regions`]).
pub(crate) struct StreamSink {
    out: Option<Box<dyn Write>>,
    printer: Option<Printer<Box<dyn Write>>>,
    format: output::Format,
    color: bool,
    fault_mode: u32,
    /// Fault counts already reported per process.
    faults_seen: HashMap<u32, FaultCounts>,
    /// A process's comm since its last exec (the kernel's fault counters
    /// keep the comm the process had at its first fault).
    exec_comms: HashMap<u32, Vec<u8>>,
    last_summary_ns: u64,
    /// The output failed (a closed pipe): stop quietly.
    output_closed: bool,
    /// Fault counts summarised, for the closing tally.
    summarised_faults: u64,
}

impl StreamSink {
    pub(crate) fn new(
        out: Box<dyn Write>,
        format: output::Format,
        color: bool,
        fault_mode: u32,
    ) -> StreamSink {
        StreamSink {
            out: Some(out),
            printer: None,
            format,
            color,
            fault_mode,
            faults_seen: HashMap::new(),
            exec_comms: HashMap::new(),
            last_summary_ns: 0,
            output_closed: false,
            summarised_faults: 0,
        }
    }

    /// Fault counts summarised, for the closing tally.
    pub(crate) fn summarised_faults(&self) -> u64 {
        self.summarised_faults
    }

    /// The output failed (a closed pipe): nothing more is written.
    pub(crate) fn output_closed(&self) -> bool {
        self.output_closed
    }

    /// Keeps the fault summaries right before `ev` is printed: a process's
    /// comm after exec, its last faults before its exit.
    pub(crate) fn before_event(&mut self, ev: &Event, hooks: &mut Hooks) {
        match ev.body {
            Body::Exec { .. } if self.fault_mode == FAULTS_SUMMARY => {
                self.exec_comms.insert(ev.pid, ev.comm.clone());
            }
            Body::Exit { .. } => {
                // The process's last faults come before its exit line.
                self.report_faults_of(hooks, ev.pid, ev.ts_ns);
                self.exec_comms.remove(&ev.pid);
            }
            _ => {}
        }
    }

    fn emit(&mut self, ev: &Event) {
        if self.output_closed {
            return;
        }
        let Some(printer) = self.printer.as_mut() else {
            return;
        };
        if let Err(e) = printer.print(ev) {
            self.note_output_error(e);
        }
    }

    pub(crate) fn note_output_error(&mut self, e: io::Error) {
        if !self.output_closed {
            if e.kind() != io::ErrorKind::BrokenPipe {
                eprintln!("mmtrace: cannot write events: {e}");
            }
            self.output_closed = true;
        }
    }

    /// One `fault_summary` line per process whose counts moved.
    fn report_faults(&mut self, hooks: &Hooks) {
        if self.fault_mode != FAULTS_SUMMARY {
            return;
        }
        let now = clock::monotonic_ns();
        let counts = match hooks.fault_counts() {
            Ok(c) => c,
            Err(e) => {
                log::warn!("cannot read the fault counters: {e:#}");
                return;
            }
        };
        let interval = now.saturating_sub(self.last_summary_ns);
        for (tgid, c) in counts {
            self.summarize(tgid, c, now, interval);
        }
        self.last_summary_ns = now;
    }

    fn report_faults_of(&mut self, hooks: &mut Hooks, tgid: u32, ts_ns: u64) {
        if self.fault_mode != FAULTS_SUMMARY {
            return;
        }
        let counts = hooks.fault_counts().unwrap_or_default();
        if let Some(c) = counts.get(&tgid) {
            let interval = ts_ns.saturating_sub(self.last_summary_ns);
            self.summarize(tgid, *c, ts_ns, interval);
        }
        self.faults_seen.remove(&tgid);
        if let Err(e) = hooks.remove_fault_counts(tgid) {
            log::warn!("cannot forget the fault counters of {tgid}: {e:#}");
        }
    }

    fn summarize(&mut self, tgid: u32, c: FaultCounts, ts_ns: u64, interval_ns: u64) {
        let seen = self.faults_seen.entry(tgid).or_default();
        let (read, write, exec, present) = (
            c.read - seen.read.min(c.read),
            c.write - seen.write.min(c.write),
            c.exec - seen.exec.min(c.exec),
            c.present - seen.present.min(c.present),
        );
        *seen = c;
        if read + write + exec == 0 {
            return;
        }
        let ev = Event {
            ts_ns,
            cpu: 0,
            pid: tgid,
            tid: tgid,
            comm: match self.exec_comms.get(&tgid) {
                Some(comm) => comm.clone(),
                None => c.comm.iter().take_while(|&&b| b != 0).copied().collect(),
            },
            body: Body::FaultSummary {
                interval_ns,
                read,
                write,
                exec,
                present,
            },
        };
        self.summarised_faults += read + write + exec;
        self.emit(&ev);
    }
}

impl Sink for StreamSink {
    fn started(&mut self, start_ns: u64, _hooks: &Hooks) {
        self.last_summary_ns = start_ns;
        if let Some(out) = self.out.take() {
            self.printer = Some(Printer::new(out, self.format, self.color, start_ns));
        }
    }

    fn event(&mut self, ev: Event, hooks: &mut Hooks) {
        self.before_event(&ev, hooks);
        self.emit(&ev);
    }

    fn lost(&mut self, kind: EventKind, count: u64, now_ns: u64) {
        let ev = Event {
            ts_ns: now_ns,
            cpu: 0,
            pid: 0,
            tid: 0,
            comm: Vec::new(),
            body: Body::Lost {
                count,
                kind: Some(kind),
            },
        };
        self.emit(&ev);
    }

    fn tick(&mut self, hooks: &mut Hooks) {
        self.report_faults(hooks);
    }

    fn flush(&mut self) -> bool {
        if !self.output_closed {
            if let Some(p) = self.printer.as_mut() {
                if let Err(e) = p.flush() {
                    self.note_output_error(e);
                }
            }
        }
        !self.output_closed
    }
}

/// Streams until the end condition; returns mmtrace's exit code.
pub async fn run(p: Prepared) -> Result<i32> {
    let Prepared {
        args,
        out,
        color,
        mut target,
    } = p;
    let fault_mode = match args.faults {
        FaultMode::Off => FAULTS_OFF,
        FaultMode::Summary => FAULTS_SUMMARY,
        FaultMode::All => FAULTS_ALL,
    };
    let format = match args.format {
        Format::Text => output::Format::Text,
        Format::Jsonl => output::Format::Jsonl,
    };
    let interval = std::time::Duration::from_secs_f64(args.summary_interval);
    let (mut outcome, summarised_faults) = if args.regions {
        // The model needs every kind of event (--regions excludes --events),
        // and the address space of an exec'd command read before it runs.
        let cfg = target.hook_config(kind_mask(&[], args.faults), fault_mode, true, false);
        let mut sink = RegionSink::new(out, format, color, fault_mode, cfg.exec_stop);
        let outcome = session::run(&mut target, &cfg, interval, &mut sink, None).await?;
        (outcome, sink.summarised_faults())
    } else {
        let cfg = target.hook_config(
            kind_mask(&args.events, args.faults),
            fault_mode,
            false,
            false,
        );
        let mut sink = StreamSink::new(out, format, color, fault_mode);
        let outcome = session::run(&mut target, &cfg, interval, &mut sink, None).await?;
        (outcome, sink.summarised_faults)
    };
    if summarised_faults > 0 {
        *outcome.tally.by_name.entry("fault").or_default() += summarised_faults;
    }
    Ok(session::finish(&outcome, &target))
}
