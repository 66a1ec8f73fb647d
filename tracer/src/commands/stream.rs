//! `mmtrace stream`: every event, live, as text or JSON lines; with
//! `--regions`, the region changes the events make instead (see
//! [`crate::output::changes`]).
//!
//! In region mode the session keeps a model of each traced process
//! ([`crate::model::Tracker`]): seeded from /proc/PID/maps at first sight,
//! copied at fork, reseeded at exec; a command started with `-- CMD` is
//! stopped at exec until its address space is read. A process found
//! running has its regions born (`proc`) at first sight, a child its copies
//! (`fork`, under its own pid). Unlike `record`, nothing is checked against
//! /proc afterwards: after lost events the model may be out of step.
//! Fault summaries and lost events print as in the raw stream; individual
//! faults (`--faults all`) only feed the model.

use std::{
    fs::File,
    io::{self, BufWriter, IsTerminal, Write},
    time::Duration,
};

use tracer_common::EventKind;

use crate::{
    cli::{kind_mask, Format, StreamArgs},
    error::{Error, Result},
    event::{Body, Event},
    model::RegionChange,
    output::Printer,
    session::{self, control::lost_event, ModelPlan, Plan, Sink, Target},
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

/// Prints events, or the region changes they make.
struct StreamSink {
    out: Option<Box<dyn Write>>,
    printer: Option<Printer<Box<dyn Write>>>,
    format: Format,
    color: bool,
    /// Print region changes instead of memory events.
    regions: bool,
    /// The output failed (a closed pipe): stop quietly.
    output_closed: bool,
}

impl StreamSink {
    fn note_output_error(&mut self, e: &io::Error) {
        if !self.output_closed {
            if e.kind() != io::ErrorKind::BrokenPipe {
                eprintln!("mmtrace: cannot write events: {e}");
            }
            self.output_closed = true;
        }
    }
}

impl Sink for StreamSink {
    fn started(&mut self, start_ns: u64) {
        if let Some(out) = self.out.take() {
            self.printer = Some(Printer::new(out, self.format, self.color, start_ns));
        }
    }

    fn event(&mut self, ev: &Event, changes: &[RegionChange]) {
        if self.output_closed {
            return;
        }
        let Some(printer) = self.printer.as_mut() else {
            return;
        };
        // In region mode, memory events show as the changes they made;
        // fault summaries and lost events print as they are.
        let as_changes =
            self.regions && !matches!(ev.body, Body::FaultSummary { .. } | Body::Lost { .. });
        let printed = if as_changes {
            printer.print_changes(ev, changes)
        } else {
            printer.print(ev)
        };
        if let Err(e) = printed {
            self.note_output_error(&e);
        }
    }

    fn lost(&mut self, kind: EventKind, count: u64, now_ns: u64) {
        self.event(&lost_event(kind, count, now_ns), &[]);
    }

    fn flush(&mut self) -> bool {
        if !self.output_closed {
            if let Some(p) = self.printer.as_mut() {
                if let Err(e) = p.flush() {
                    self.note_output_error(&e);
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
    let plan = Plan {
        // --regions excludes --events: the model needs every kind.
        events: kind_mask(&args.events, args.faults),
        faults: args.faults,
        model: args.regions.then_some(ModelPlan {
            // Faults attributed in one bucket: the stream keeps no timeline.
            bucket_ns: u64::MAX,
            keep_history: false,
            check_interval: None,
            counters: false,
        }),
        tick: Duration::from_secs_f64(args.summary_interval),
    };
    let mut sink = StreamSink {
        out: Some(out),
        printer: None,
        format: args.format,
        color,
        regions: args.regions,
        output_closed: false,
    };
    let outcome = session::run(&mut target, &plan, &mut sink, None).await?;
    Ok(session::finish(&outcome, &target))
}
