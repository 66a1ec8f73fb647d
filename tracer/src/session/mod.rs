//! A tracing session, shared by `stream` and `record`: checks, the held
//! command, hooks -> ring buffer -> decode, handing each event to a
//! [`Sink`], until a signal, the duration or the command's exit; then the
//! closing summary.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    os::unix::ffi::OsStrExt,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use log::info;
use tracer_common::EventKind;

use crate::{
    cli::TraceArgs,
    error::Result,
    event::{decode::decode, Event},
    kernel::{preflight, ring::EventReader, HookConfig, Hooks, StackPath},
};

use self::{command as spawn, signals::StopSignals};

pub mod command;
pub mod exitwatch;
pub mod signals;

/// How often the reader polls for events submitted without a wakeup.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// What a command does with the events.
pub trait Sink {
    /// Programs are attached; times count from `start_ns` (CLOCK_MONOTONIC).
    fn started(&mut self, start_ns: u64, hooks: &Hooks);
    fn event(&mut self, ev: Event, hooks: &mut Hooks);
    /// The kernel could not deliver `count` events of `kind`.
    fn lost(&mut self, kind: EventKind, count: u64, now_ns: u64);
    /// Called every tick, after the ring buffer has been drained.
    fn tick(&mut self, hooks: &mut Hooks);
    /// Flushes output; false once the output is gone (a closed pipe).
    fn flush(&mut self) -> bool;
    /// A traced thread waits to exit, its address space whole: read it.
    /// Every event it made has been handed over already.
    fn exit_snapshot(&mut self, _tid: u32, _hooks: &mut Hooks) {}
    /// SIGUSR1: someone asked for a check of the model now.
    fn request(&mut self) {}
    /// After the events submitted during the snapshot: compare.
    fn exit_resolve(&mut self, _tid: u32) {}
}

/// Who is traced, checked and prepared before anything is attached.
pub struct Target {
    pub args: TraceArgs,
    /// Processes named with --pid (tgids).
    pub pids: Vec<u32>,
    pub command: Option<(PathBuf, spawn::HeldChild)>,
}

/// Privileges and pids: the checks made before any output file exists.
pub fn check(args: &TraceArgs) -> Result<Vec<u32>> {
    preflight::check_privileges()?;
    let mut pids = Vec::new();
    for pid in &args.pids {
        let tgid = preflight::process_of(*pid)?;
        if !pids.contains(&tgid) {
            pids.push(tgid);
        }
    }
    Ok(pids)
}

/// Kernel features, tracefs, and the command started held. Runs before the
/// async runtime exists: forking needs a single-threaded process.
pub fn start(args: TraceArgs, pids: Vec<u32>, watch_exits: bool) -> Result<Target> {
    preflight::check_kernel()?;
    preflight::ensure_tracefs()?;
    let command = match args.command.first() {
        Some(program) => {
            let path = spawn::resolve_program(program)?;
            let held = spawn::spawn_held(&path, &args.command, watch_exits)?;
            Some((path, held))
        }
        None => None,
    };
    Ok(Target {
        args,
        pids,
        command,
    })
}

impl Target {
    /// The kernel-side selection for this target.
    pub fn hook_config(
        &self,
        kind_mask: u32,
        fault_mode: u32,
        exec_stop: bool,
        track_rss: bool,
    ) -> HookConfig {
        let mut pids = self.pids.clone();
        if let Some((_, held)) = &self.command {
            pids.push(held.pid);
        }
        let a = &self.args;
        HookConfig {
            kind_mask,
            fault_mode,
            pids,
            comms: a.comms.iter().map(|c| c.as_bytes().to_vec()).collect(),
            follow: a.follow || self.command.is_some(),
            // Following the children of comm-selected processes adds them
            // to the pid set, which then selects too.
            pid_filter: !a.pids.is_empty()
                || self.command.is_some()
                || (a.follow && !a.comms.is_empty()),
            buffer_bytes: a.buffer_size,
            exec_stop: exec_stop && self.command.is_some(),
            track_rss,
        }
    }

    fn scope(&self) -> String {
        match (
            &self.command,
            self.args.pids.is_empty(),
            self.args.comms.is_empty(),
        ) {
            (Some((path, held)), _, _) => {
                format!("{} (pid {}) and its descendants", path.display(), held.pid)
            }
            (None, true, true) => "system-wide".to_string(),
            _ => "the chosen processes".to_string(),
        }
    }

    /// The command line, for records.
    pub fn command_line(&self) -> Option<Vec<OsString>> {
        self.command.as_ref().map(|_| self.args.command.clone())
    }
}

/// Per-kind event counts for the closing summary.
#[derive(Default)]
pub struct Tally {
    pub by_name: BTreeMap<&'static str, u64>,
    pub lost: u64,
    pub malformed: u64,
}

/// Why the session ended.
pub enum End {
    Signal(&'static str),
    Duration,
    CommandExited(i32),
    OutputClosed,
}

pub struct Outcome {
    pub end: End,
    pub tally: Tally,
    pub elapsed: Duration,
    pub stack_path: StackPath,
}

/// Reads every waiting record into the sink.
fn drain<S: Sink>(reader: &mut EventReader, hooks: &mut Hooks, sink: &mut S, tally: &mut Tally) {
    reader.drain(|bytes| match decode(bytes) {
        Ok(ev) => {
            *tally.by_name.entry(ev.body.name()).or_default() += 1;
            sink.event(ev, hooks);
        }
        Err(e) => {
            tally.malformed += 1;
            log::warn!("dropping a malformed record: {e}");
        }
    });
}

fn report_lost<S: Sink>(hooks: &mut Hooks, sink: &mut S, tally: &mut Tally) {
    match hooks.new_lost() {
        Ok(lost) => {
            let now = crate::kernel::clock::monotonic_ns();
            for (kind, count) in lost {
                tally.lost += count;
                sink.lost(kind, count, now);
            }
        }
        Err(e) => log::warn!("cannot read the lost-event counters: {e:#}"),
    }
}

/// Attaches, runs until the end condition, detaches.
pub async fn run<S: Sink>(
    target: &mut Target,
    cfg: &HookConfig,
    tick: Duration,
    sink: &mut S,
    mut exits: Option<tokio::sync::mpsc::UnboundedReceiver<crate::session::exitwatch::Notice>>,
) -> Result<Outcome> {
    // Blocked since main: one sent while loading waits here.
    let mut stop = StopSignals::new().context("signalfd")?;
    let mut hooks = Hooks::load(cfg)?;
    let started = Instant::now();
    let ring = hooks.take_events()?;
    let mut reader = EventReader::new(ring)?;
    sink.started(hooks.attached_ns, &hooks);
    let stack = match hooks.stack_path {
        StackPath::Fexit => "stack growth via fexit",
        StackPath::FaultFallback => "stack growth via faults",
        StackPath::Off => "no stack events",
    };
    info!("tracing {} ({stack}); Ctrl-C to stop", target.scope());

    // The command runs only now that its pid is in the filter.
    let mut child_wait = None;
    if let Some((path, held)) = target.command.as_mut() {
        held.release(path)?;
        let pid = held.pid;
        child_wait = Some(tokio::task::spawn_blocking(move || spawn::wait(pid)));
    }

    let mut tally = Tally::default();
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let deadline = target.args.duration.map(Duration::from_secs_f64);
    let sleep = tokio::time::sleep(deadline.unwrap_or(Duration::from_secs(u32::MAX as u64)));
    tokio::pin!(sleep);

    let end = loop {
        tokio::select! {
            r = reader.readable() => {
                r?;
                drain(&mut reader, &mut hooks, sink, &mut tally);
            }
            _ = poll.tick() => {
                drain(&mut reader, &mut hooks, sink, &mut tally);
            }
            _ = ticks.tick() => {
                drain(&mut reader, &mut hooks, sink, &mut tally);
                report_lost(&mut hooks, sink, &mut tally);
                sink.tick(&mut hooks);
            }
            status = async { child_wait.as_mut().unwrap().await }, if child_wait.is_some() => {
                let status = status.context("waiting for the command")?.context("waitpid")?;
                break End::CommandExited(status);
            }
            Some(notice) = async { exits.as_mut().unwrap().recv().await }, if exits.is_some() => {
                drain(&mut reader, &mut hooks, sink, &mut tally);
                sink.exit_snapshot(notice.tid, &mut hooks);
                drain(&mut reader, &mut hooks, sink, &mut tally);
                sink.exit_resolve(notice.tid);
                let _ = notice.ack.send(());
            }
            name = stop.recv() => match name.context("reading signals")? {
                "SIGUSR1" => sink.request(),
                name => break End::Signal(name),
            },
            _ = &mut sleep, if deadline.is_some() => break End::Duration,
        }
        if !sink.flush() {
            break End::OutputClosed;
        }
    };

    // Everything submitted before the end is still in the buffer.
    drain(&mut reader, &mut hooks, sink, &mut tally);
    report_lost(&mut hooks, sink, &mut tally);
    sink.tick(&mut hooks);
    sink.flush();
    let elapsed = started.elapsed();
    let stack_path = hooks.stack_path;
    drop(reader);
    drop(hooks);
    Ok(Outcome {
        end,
        tally,
        elapsed,
        stack_path,
    })
}

/// Prints the closing summary on stderr; returns mmtrace's exit code.
pub fn finish(outcome: &Outcome, target: &Target) -> i32 {
    let tally = &outcome.tally;
    let mut line = format!(
        "mmtrace: {} events in {:.2} s",
        tally.by_name.values().sum::<u64>(),
        outcome.elapsed.as_secs_f64()
    );
    for (name, n) in &tally.by_name {
        if *name != "fault_summary" && *name != "lost" {
            line.push_str(&format!(", {name} {n}"));
        }
    }
    line.push_str(&format!("; lost {}", tally.lost));
    if tally.malformed > 0 {
        line.push_str(&format!("; malformed {}", tally.malformed));
    }
    let code = match outcome.end {
        End::CommandExited(status) => {
            line.push_str(&format!("; command exited ({})", describe_status(status)));
            spawn::exit_code_of(status)
        }
        End::Signal(name) => {
            line.push_str(&format!("; stopped by {name}"));
            if let Some((_, held)) = &target.command {
                // The command keeps running; say so rather than kill it.
                line.push_str(&format!(" (command pid {} left running)", held.pid));
            }
            0
        }
        End::Duration | End::OutputClosed => 0,
    };
    eprintln!("{line}");
    code
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
