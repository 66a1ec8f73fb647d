//! `mmtrace stream`: hooks -> ring buffer -> decode -> output, live.

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io::{self, BufWriter, IsTerminal, Write},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use log::info;
use tracer_common::{FaultCounts, FAULTS_ALL, FAULTS_OFF, FAULTS_SUMMARY};

use crate::{
    cli::{kind_mask, FaultMode, Format, StreamArgs},
    clock,
    decode::decode,
    error::{Error, Result},
    event::{Body, Event},
    hook::{HookConfig, Hooks, StackPath},
    output::{self, Printer},
    preflight,
    signals::StopSignals,
    spawn,
    transport::EventReader,
};

/// How often the reader polls for events submitted without a wakeup.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Everything checked and prepared before anything is attached.
pub struct Prepared {
    args: StreamArgs,
    out: Box<dyn Write>,
    color: bool,
    pids: Vec<u32>,
    command: Option<(PathBuf, spawn::HeldChild)>,
}

/// Validates the arguments and starts the command held. Runs before the
/// async runtime exists: forking needs a single-threaded process.
pub fn prepare(args: StreamArgs) -> Result<Prepared> {
    preflight::check_privileges()?;
    let mut pids = Vec::new();
    for pid in &args.pids {
        let tgid = preflight::process_of(*pid)?;
        if !pids.contains(&tgid) {
            pids.push(tgid);
        }
    }
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
    preflight::check_kernel()?;
    preflight::ensure_tracefs()?;
    let command = match args.command.first() {
        Some(program) => {
            let path = spawn::resolve_program(program)?;
            let held = spawn::spawn_held(&path, &args.command)?;
            Some((path, held))
        }
        None => None,
    };
    Ok(Prepared {
        args,
        out,
        color,
        pids,
        command,
    })
}

/// Per-kind event counts for the closing summary.
#[derive(Default)]
struct Tally {
    by_name: BTreeMap<&'static str, u64>,
    lost: u64,
    malformed: u64,
}

struct Session {
    hooks: Hooks,
    printer: Printer<Box<dyn Write>>,
    tally: Tally,
    fault_mode: u32,
    /// Fault counts already reported per process.
    faults_seen: HashMap<u32, FaultCounts>,
    /// A process's comm since its last exec (the kernel's fault counters
    /// keep the comm the process had at its first fault).
    exec_comms: HashMap<u32, Vec<u8>>,
    last_summary_ns: u64,
    /// The output failed (a closed pipe): stop quietly.
    output_closed: bool,
}

impl Session {
    fn emit(&mut self, ev: &Event) {
        *self.tally.by_name.entry(ev.body.name()).or_default() += 1;
        if self.output_closed {
            return;
        }
        if let Err(e) = self.printer.print(ev) {
            self.note_output_error(e);
        }
    }

    fn note_output_error(&mut self, e: io::Error) {
        if !self.output_closed {
            if e.kind() != io::ErrorKind::BrokenPipe {
                eprintln!("mmtrace: cannot write events: {e}");
            }
            self.output_closed = true;
        }
    }

    fn on_record(&mut self, bytes: &[u8]) {
        match decode(bytes) {
            Ok(ev) => {
                match ev.body {
                    Body::Exec { .. } if self.fault_mode == FAULTS_SUMMARY => {
                        self.exec_comms.insert(ev.pid, ev.comm.clone());
                    }
                    Body::Exit { .. } => {
                        // The process's last faults come before its exit line.
                        self.report_faults_of(ev.pid, ev.ts_ns);
                        self.exec_comms.remove(&ev.pid);
                    }
                    _ => {}
                }
                self.emit(&ev);
            }
            Err(e) => {
                self.tally.malformed += 1;
                log::warn!("dropping a malformed record: {e}");
            }
        }
    }

    /// Lost events since the last check become `lost` lines.
    fn report_lost(&mut self) {
        let lost = match self.hooks.new_lost() {
            Ok(l) => l,
            Err(e) => {
                log::warn!("cannot read the lost-event counters: {e:#}");
                return;
            }
        };
        for (kind, count) in lost {
            self.tally.lost += count;
            let ev = Event {
                ts_ns: clock::monotonic_ns(),
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
    }

    /// One `fault_summary` line per process whose counts moved.
    fn report_faults(&mut self) {
        if self.fault_mode != FAULTS_SUMMARY {
            return;
        }
        let now = clock::monotonic_ns();
        let counts = match self.hooks.fault_counts() {
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

    fn report_faults_of(&mut self, tgid: u32, ts_ns: u64) {
        if self.fault_mode != FAULTS_SUMMARY {
            return;
        }
        let counts = self.hooks.fault_counts().unwrap_or_default();
        if let Some(c) = counts.get(&tgid) {
            let interval = ts_ns.saturating_sub(self.last_summary_ns);
            self.summarize(tgid, *c, ts_ns, interval);
        }
        self.faults_seen.remove(&tgid);
        if let Err(e) = self.hooks.remove_fault_counts(tgid) {
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
        *self.tally.by_name.entry("fault").or_default() += read + write + exec;
        self.emit(&ev);
    }

    fn flush(&mut self) {
        if !self.output_closed {
            if let Err(e) = self.printer.flush() {
                self.note_output_error(e);
            }
        }
    }
}

/// Why the stream ended.
enum End {
    Signal(&'static str),
    Duration,
    CommandExited(i32),
    OutputClosed,
}

/// Attaches, streams until the end condition, prints the summary; returns
/// mmtrace's exit code.
pub async fn run(p: Prepared) -> Result<i32> {
    let Prepared {
        args,
        out,
        color,
        pids,
        mut command,
    } = p;
    let fault_mode = match args.faults {
        FaultMode::Off => FAULTS_OFF,
        FaultMode::Summary => FAULTS_SUMMARY,
        FaultMode::All => FAULTS_ALL,
    };
    let mut pids = pids;
    if let Some((_, held)) = &command {
        pids.push(held.pid);
    }
    let follow = args.follow || command.is_some();
    let cfg = HookConfig {
        kind_mask: kind_mask(&args.events, args.faults),
        fault_mode,
        pids,
        comms: args
            .comms
            .iter()
            .map(|c| std::os::unix::ffi::OsStrExt::as_bytes(c.as_os_str()).to_vec())
            .collect(),
        follow,
        // Following the children of comm-selected processes adds them to
        // the pid set, which then selects too.
        pid_filter: !args.pids.is_empty()
            || command.is_some()
            || (args.follow && !args.comms.is_empty()),
        buffer_bytes: args.buffer_size,
        exec_stop: false,
    };
    // Blocked since main: one sent while loading waits here.
    let mut stop = StopSignals::new().context("signalfd")?;
    let mut hooks = Hooks::load(&cfg)?;
    // Times count from just before the first program was attached, so no
    // event predates the stream.
    let start_ns = hooks.attached_ns;
    let started = Instant::now();
    let ring = hooks.take_events()?;
    let mut reader = EventReader::new(ring)?;
    let fmt = match args.format {
        Format::Text => output::Format::Text,
        Format::Jsonl => output::Format::Jsonl,
    };
    let scope = match (&command, args.pids.is_empty(), args.comms.is_empty()) {
        (Some((path, held)), _, _) => {
            format!("{} (pid {}) and its descendants", path.display(), held.pid)
        }
        (None, true, true) => "system-wide".to_string(),
        _ => "the chosen processes".to_string(),
    };
    let stack = match hooks.stack_path {
        StackPath::Fexit => "stack growth via fexit",
        StackPath::FaultFallback => "stack growth via faults",
        StackPath::Off => "no stack events",
    };
    info!("tracing {scope} ({stack}); Ctrl-C to stop");

    let mut session = Session {
        hooks,
        printer: Printer::new(out, fmt, color, start_ns),
        tally: Tally::default(),
        fault_mode,
        faults_seen: HashMap::new(),
        exec_comms: HashMap::new(),
        last_summary_ns: start_ns,
        output_closed: false,
    };

    // The command runs only now that its pid is in the filter.
    let mut child_wait = None;
    if let Some((path, held)) = command.as_mut() {
        held.release(path)?;
        let pid = held.pid;
        child_wait = Some(tokio::task::spawn_blocking(move || spawn::wait(pid)));
    }

    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut summary = tokio::time::interval(Duration::from_secs_f64(args.summary_interval));
    summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    summary.tick().await;
    let deadline = args.duration.map(Duration::from_secs_f64);
    let sleep = tokio::time::sleep(deadline.unwrap_or(Duration::from_secs(u32::MAX as u64)));
    tokio::pin!(sleep);

    let end = loop {
        tokio::select! {
            r = reader.readable() => {
                r?;
                reader.drain(|b| session.on_record(b));
                session.flush();
            }
            _ = poll.tick() => {
                reader.drain(|b| session.on_record(b));
                session.flush();
            }
            _ = summary.tick() => {
                session.report_faults();
                session.report_lost();
                session.flush();
            }
            status = async { child_wait.as_mut().unwrap().await }, if child_wait.is_some() => {
                let status = status.context("waiting for the command")?.context("waitpid")?;
                break End::CommandExited(status);
            }
            name = stop.recv() => break End::Signal(name.context("reading signals")?),
            _ = &mut sleep, if deadline.is_some() => break End::Duration,
        }
        if session.output_closed {
            break End::OutputClosed;
        }
    };

    // Everything submitted before the end is still in the buffer.
    reader.drain(|b| session.on_record(b));
    session.report_faults();
    session.report_lost();
    session.flush();
    let elapsed = started.elapsed();
    drop(reader);
    drop(session.hooks);

    let mut line = format!(
        "mmtrace: {} events in {:.2} s",
        session.tally.by_name.values().sum::<u64>(),
        elapsed.as_secs_f64()
    );
    for (name, n) in &session.tally.by_name {
        if *name != "fault_summary" && *name != "lost" {
            line.push_str(&format!(", {name} {n}"));
        }
    }
    line.push_str(&format!("; lost {}", session.tally.lost));
    if session.tally.malformed > 0 {
        line.push_str(&format!("; malformed {}", session.tally.malformed));
    }
    let code = match end {
        End::CommandExited(status) => {
            line.push_str(&format!("; command exited ({})", describe_status(status)));
            spawn::exit_code_of(status)
        }
        End::Signal(name) => {
            line.push_str(&format!("; stopped by {name}"));
            if let Some((_, held)) = &command {
                // The command keeps running; say so rather than kill it.
                line.push_str(&format!(" (command pid {} left running)", held.pid));
            }
            0
        }
        End::Duration => 0,
        End::OutputClosed => 0,
    };
    eprintln!("{line}");
    Ok(code)
}

fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("status {status}")
    }
}
