//! `mmtrace stream`: every event, live, as text or JSON lines; with
//! `--regions`, the region changes the events make instead (see
//! [`crate::output::changes`]).
//!
//! In region mode the session keeps a model of each traced process
//! ([`crate::model::Tracker`]): seeded from /proc/PID/maps at first sight,
//! copied at fork, reseeded at exec (read right after it, while the
//! program runs on: see the README's "Kept honest"). A process found
//! running has its regions born (`proc`) at first sight, a child its copies
//! (`fork`, under its own pid). Unlike `record`, nothing is checked against
//! /proc afterwards: after lost events the model may be out of step.
//! Fault summaries and lost events print as in the raw stream; individual
//! faults (`--faults all`) only feed the model.

use std::{
    io::{self, BufWriter, IsTerminal, Write},
    time::Duration,
};

use tracer_common::EventKind;

use crate::{
    cli::{kind_mask, Format, StreamArgs},
    error::{Result, EXIT_OUTPUT_INCOMPLETE},
    event::{Body, Event},
    model::RegionChange,
    output::{
        file::{self, LineFile},
        Printer,
    },
    session::{self, command, control::lost_event, ModelPlan, Plan, Sink, Target},
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
    // Nothing is opened before the command is known to be runnable.
    if let Some(program) = args.trace.command.first() {
        command::resolve_program(program)?;
    }
    let (out, color) = open_output(&args)?;
    let trace = std::mem::take(&mut args.trace);
    let target = session::start(trace, pids)?;
    Ok(Prepared {
        args,
        out,
        color,
        target,
    })
}

/// Opens `--output` (private, see [`file::create`]) or standard output;
/// and whether to colour (text on a terminal, without NO_COLOR).
pub fn open_output(args: &StreamArgs) -> Result<(Box<dyn Write>, bool)> {
    Ok(if let Some(path) = &args.output {
        let access = file::Access {
            group: args.output_group,
        };
        (Box::new(LineFile::new(file::create(path, access)?)), false)
    } else {
        let tty = io::stdout().is_terminal();
        let color = tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        (
            Box::new(BufWriter::new(io::stdout())),
            color && args.format == Format::Text,
        )
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
    /// The reader went away (a closed pipe): stop quietly.
    output_closed: bool,
    /// Writing failed (a full disk): nothing more is written, tracing goes
    /// on to the end, and the exit status says the output is incomplete.
    output_failed: Option<io::Error>,
}

impl StreamSink {
    fn writing(&self) -> bool {
        !self.output_closed && self.output_failed.is_none()
    }

    fn note_output_error(&mut self, e: io::Error) {
        if !self.writing() {
            return;
        }
        if e.kind() == io::ErrorKind::BrokenPipe {
            self.output_closed = true;
        } else {
            eprintln!("mmtrace: cannot write events: {e}; the output stops at its last whole line");
            self.output_failed = Some(e);
        }
    }
}

impl Sink for StreamSink {
    fn started(&mut self, start_ns: u64) {
        if let Some(out) = self.out.take() {
            // Whole lines, 32 KiB at a time: one copy and one write each.
            let printer = Printer::new(out, self.format, self.color, start_ns);
            self.printer = Some(printer.batched(32 << 10));
        }
    }

    fn event(&mut self, ev: &Event, changes: &[RegionChange]) {
        if !self.writing() {
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
            self.note_output_error(e);
        }
    }

    fn lost(&mut self, kind: EventKind, count: u64, now_ns: u64) {
        self.event(&lost_event(kind, count, now_ns), &[]);
    }

    fn flush(&mut self) -> bool {
        if self.writing() {
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
            seed_running: false,
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
        output_failed: None,
    };
    let outcome = session::run(&mut target, &plan, &mut sink).await?;
    let code = session::finish(&outcome, &target);
    match sink.output_failed {
        Some(e) => {
            eprintln!("mmtrace: the output is incomplete: {e}");
            Ok(EXIT_OUTPUT_INCOMPLETE)
        }
        None => Ok(code),
    }
}
