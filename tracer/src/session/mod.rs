//! A tracing session, shared by `stream` and `record`: checks, the held
//! command, hooks -> ring buffer -> decode, handing each event to a
//! [`Sink`], until a signal, the duration or the command's exit; then the
//! closing summary.

use std::{
    ffi::OsString,
    os::unix::ffi::OsStrExt,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use log::info;
use tracer_common::{EventKind, FAULTS_ALL, FAULTS_OFF, FAULTS_SUMMARY};

use crate::{
    cli::{FaultMode, TraceArgs},
    error::{Error, Result},
    event::{
        decode::{decode, exec_record},
        Body, Event,
    },
    kernel::{cgroup, clock, preflight, proc, ring::EventReader, HookConfig, Hooks, StackPath},
    model::{
        CheckReason, Comparison, KernelBehaviour, LiveProc, Process, RegionChange, Tracker,
        VoidReason,
    },
};

use self::{
    checker::{Bracket, Change, Checker, PendingCheck, Settle, Start},
    command as spawn,
    control::{FaultSummaries, LiveProbe},
    signals::StopSignals,
};

pub mod checker;
pub mod command;
pub mod control;
pub mod signals;

/// How often the reader polls for events submitted without a wakeup.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Records handled at a time: the exec records among them are found
/// first, so that the address spaces they made are read at once.
const DRAIN_BATCH: usize = 16384;
/// How long the session waits for the command's exec record once it has
/// let it exec, before its event loop starts.
const EXEC_WAIT: Duration = Duration::from_millis(5);

/// What a command does with the session's events. Sinks render; they
/// never touch the kernel or the traced processes.
pub trait Sink {
    /// Programs are attached; times count from `start_ns` (CLOCK_MONOTONIC).
    fn started(&mut self, _start_ns: u64) {}
    /// How stack growth is observed (right after [`Sink::started`]).
    fn attached(&mut self, _stack: StackPath) {}
    /// The session received a signal: SIGHUP (the daemon only), or a stop
    /// signal (SIGINT, SIGTERM), just before it stops.
    fn signal(&mut self, _name: &'static str) {}
    /// One event the command asked for, with the region changes it made
    /// (empty without a model).
    fn event(&mut self, ev: &Event, changes: &[RegionChange]);
    /// The kernel could not deliver `count` events of `kind`.
    fn lost(&mut self, kind: EventKind, count: u64, now_ns: u64);
    /// `p`'s model was compared with /proc/PID/maps (and resynced where
    /// they differed).
    fn check(&mut self, _p: &Process, _reason: CheckReason, _c: &Comparison) {}
    /// A check of `pid` was void: a change came too close to its read to
    /// tell (it is made again; `why` None), or its read of /proc/PID/maps
    /// failed (`why` says how).
    fn void_check(
        &mut self,
        _pid: u32,
        _reason: CheckReason,
        _ts_ns: u64,
        _why: Option<VoidReason>,
    ) {
    }
    /// The processes an event touched (first sight, fork, exec, exit), as
    /// the model has them after it; called before [`Sink::event`].
    fn processes(&mut self, _ev: &Event, _touched: &[&Process]) {}
    /// `p` had events since its last sample: its counters now.
    fn sample(&mut self, _now_ns: u64, _p: &Process) {}
    /// `p` left the model: it exited, its pid was reused unseen, or the
    /// session ended.
    fn ended(&mut self, _p: Process) {}
    /// Processes (pids) the sink wants compared with /proc/PID/maps as
    /// soon as can be (the daemon's `dump`); asked at each tick.
    fn wanted_checks(&mut self) -> Vec<u32> {
        Vec::new()
    }
    /// How the model should spare memory (the daemon over its cap),
    /// asked at each tick: (faults counted per region only, no new
    /// processes modelled); see [`Tracker::degrade`].
    fn degrade(&mut self) -> (bool, bool) {
        (false, false)
    }
    /// Flushes output; false once the output is gone (a closed pipe).
    fn flush(&mut self) -> bool;
}

/// What a command needs from the session.
pub struct Plan {
    /// EventKind bits of the events the sinks get.
    pub events: u32,
    pub faults: FaultMode,
    /// Keep a model of every traced process.
    pub model: Option<ModelPlan>,
    /// How often summaries, counters and checks are made.
    pub tick: Duration,
}

/// The model a command keeps.
pub struct ModelPlan {
    /// Width of each region's fault-count buckets.
    pub bucket_ns: u64,
    /// Keep dead regions and every history entry (timelines); otherwise a
    /// region is forgotten once its death is reported.
    pub keep_history: bool,
    /// Compare each process with /proc/PID/maps this often.
    pub check_interval: Option<Duration>,
    /// Sample counters (resident memory from the kernel).
    pub counters: bool,
    /// Seed every running process (of the selected comms) from /proc at
    /// the start, not only those named with --pid (the daemon).
    pub seed_running: bool,
}

impl Plan {
    /// The kinds the kernel must send: a model needs every event.
    fn kernel_kinds(&self) -> u32 {
        if self.model.is_none() {
            return self.events;
        }
        let mut mask = 0;
        for k in EventKind::ALL {
            mask |= k.bit();
        }
        if self.faults == FaultMode::Off {
            mask &= !EventKind::Fault.bit();
        }
        mask
    }
}

/// Who is traced, checked and prepared before anything is attached.
pub struct Target {
    pub args: TraceArgs,
    /// Processes named with --pid (tgids).
    pub pids: Vec<u32>,
    /// Cgroups named with --cgroup.
    pub cgroups: Vec<cgroup::Selected>,
    pub command: Option<(PathBuf, spawn::HeldChild)>,
    /// Kinds left out of the kernel, for testing (`MMTRACE_UNHOOK`).
    pub unhooked: u32,
}

/// At most this many processes found running in the --cgroup selection
/// are seeded at the start (the others are seeded at their first event).
const SEED_CGROUP_MAX: usize = 65_536;

/// What the selection names, checked.
pub struct Chosen {
    /// --pid, as tgids.
    pub pids: Vec<u32>,
    /// --cgroup, resolved.
    pub cgroups: Vec<cgroup::Selected>,
}

/// Privileges, pids and cgroups: the checks made before any output file
/// exists.
pub fn check(args: &TraceArgs) -> Result<Chosen> {
    preflight::check_privileges()?;
    let mut pids = Vec::new();
    for pid in &args.pids {
        let tgid = preflight::process_of(*pid)?;
        if !pids.contains(&tgid) {
            pids.push(tgid);
        }
    }
    if args.cgroups.len() > tracer_common::CGROUP_FILTER_MAX as usize {
        return Err(Error::Usage(format!(
            "--cgroup: at most {} cgroups",
            tracer_common::CGROUP_FILTER_MAX
        )));
    }
    let mut cgroups: Vec<cgroup::Selected> = Vec::new();
    for dir in &args.cgroups {
        let c = cgroup::select(dir, cgroup::mounts()).map_err(Error::Usage)?;
        if !cgroups
            .iter()
            .any(|o| o.hierarchy == c.hierarchy && o.id == c.id)
        {
            cgroups.push(c);
        }
    }
    Ok(Chosen { pids, cgroups })
}

/// Kernel features, tracefs, and the command started held. Runs before the
/// async runtime exists: forking needs a single-threaded process.
pub fn start(args: TraceArgs, chosen: Chosen) -> Result<Target> {
    let Chosen { pids, cgroups } = chosen;
    let unhooked = crate::kernel::unhooked_kinds().map_err(Error::Usage)?;
    for k in EventKind::ALL.iter().filter(|k| unhooked & k.bit() != 0) {
        info!(
            "{} events are not hooked ({}): what they change goes unseen",
            k.name(),
            crate::kernel::UNHOOK_ENV
        );
    }
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
    Ok(Target {
        args,
        pids,
        cgroups,
        command,
        unhooked,
    })
}

impl Target {
    /// The kernel-side selection for this target and plan.
    pub fn hook_config(&self, plan: &Plan) -> HookConfig {
        let mut pids = self.pids.clone();
        if let Some((_, held)) = &self.command {
            pids.push(held.pid);
        }
        let a = &self.args;
        let mut kind_mask = plan.kernel_kinds() & !self.unhooked;
        if plan.model.as_ref().is_some_and(|m| m.counters) {
            // A process's kernel counters are forgotten at its exit.
            kind_mask |= EventKind::Exit.bit();
        }
        if plan.faults == FaultMode::Summary {
            // Also: a summary names the process by its comm since exec.
            kind_mask |= EventKind::Exit.bit() | EventKind::Exec.bit();
        }
        HookConfig {
            kind_mask,
            fault_mode: match plan.faults {
                FaultMode::Off => FAULTS_OFF,
                FaultMode::Summary => FAULTS_SUMMARY,
                FaultMode::All => FAULTS_ALL,
            },
            pids,
            comms: a.comms.iter().map(|c| c.as_bytes().to_vec()).collect(),
            cgroups: self.cgroups.clone(),
            follow: a.follow || self.command.is_some(),
            // Following the children of comm- or cgroup-selected processes
            // adds them to the pid set, which then selects too.
            pid_filter: !a.pids.is_empty()
                || self.command.is_some()
                || (a.follow && (!a.comms.is_empty() || !self.cgroups.is_empty())),
            buffer_bytes: a.buffer_size,
            track_rss: plan.model.as_ref().is_some_and(|m| m.counters),
            // The model compares itself with them after each change.
            mm_counters: plan.model.is_some(),
        }
    }

    fn scope(&self) -> String {
        match (
            &self.command,
            self.args.pids.is_empty(),
            self.args.comms.is_empty() && self.cgroups.is_empty(),
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
    pub by_name: Counts,
    pub lost: u64,
    pub malformed: u64,
    /// Failures of the kernel programs (reads, full maps).
    pub kernel_errors: u64,
}

/// Events counted by name, in the order first seen: a short list, looked
/// up by the name's address first (a per-event tally with no hashing and
/// no string comparison in the common case).
#[derive(Default)]
pub struct Counts(Vec<(&'static str, u64)>);

impl Counts {
    pub fn add(&mut self, name: &'static str, n: u64) {
        let found = self
            .0
            .iter_mut()
            .find(|(k, _)| std::ptr::eq(*k, name) || *k == name);
        match found {
            Some((_, count)) => *count += n,
            None => self.0.push((name, n)),
        }
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }

    /// The counts sorted by name.
    pub fn sorted(&self) -> Vec<(&'static str, u64)> {
        let mut v = self.0.clone();
        v.sort_unstable_by_key(|(k, _)| *k);
        v
    }
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
    /// CLOCK_MONOTONIC of the attach, where the session's times start.
    pub start_ns: u64,
}

/// The session's state while tracing: the kernel, the model, the checks.
struct Core {
    hooks: Hooks,
    stack_path: StackPath,
    tracker: Option<Tracker>,
    checker: Option<Checker>,
    faults: Option<FaultSummaries>,
    tally: Tally,
    /// EventKind bits of the events the sinks get.
    events: u32,
    counters: bool,
    /// Exec records seen.
    execs: u64,
    /// Seeds read for exec records not handled yet, by (pid, stamp).
    seeds: std::collections::HashMap<(u32, u64), crate::model::ExecSeed>,
    /// The records of a batch (with a model), one after the other, and
    /// where each ends; kept to reuse their allocations.
    batch: (Vec<u8>, Vec<usize>),
    /// Malformed records already logged.
    malformed_logged: bool,
    /// The system calls of each process's program, once looked at (see
    /// [`Core::check_abi`]).
    abi_seen: crate::FastMap<u32, Option<crate::event::Abi>>,
    /// A process in `abi_seen`, the last one looked up.
    abi_last: Option<u32>,
    /// Processes found gone (no /proc/PID) at a due check, and since when:
    /// retired once gone for [`GONE_GRACE_NS`] (their exit was lost).
    gone: std::collections::HashMap<u32, u64>,
}

/// Processes whose program's system calls are remembered at once.
const ABI_SEEN_MAX: usize = 1 << 16;

/// How long a process is seen gone before it is retired: its exit record,
/// if still on its way, is handled by then.
const GONE_GRACE_NS: u64 = 1_000_000_000;

impl Core {
    fn record<S: Sink>(&mut self, bytes: &[u8], sink: &mut S) {
        match decode(bytes) {
            Ok(mut ev) => {
                if matches!(ev.body, Body::Exec { .. }) {
                    self.execs += 1;
                }
                if let (Some(tracker), Body::Exec { .. }) = (self.tracker.as_mut(), &ev.body) {
                    // Read when the exec was found in the buffer, or now.
                    let seed = self.seeds.remove(&(ev.pid, ev.ts_ns)).unwrap_or_else(|| {
                        let mm = exec_record(bytes).and_then(|(_, _, mm)| mm);
                        control::exec_seed(&self.hooks, ev.pid, mm, ev.ts_ns)
                    });
                    tracker.set_exec_seed(seed);
                }
                self.event(&mut ev, sink);
            }
            Err(e) => {
                self.tally.malformed += 1;
                if !self.malformed_logged {
                    log::warn!("dropping a malformed record: {e} (further ones are only counted)");
                    self.malformed_logged = true;
                }
            }
        }
    }

    /// Hands every waiting record to the model and the sinks, a batch at a
    /// time. The exec records of a batch are looked for first: a new
    /// address space is read as soon as its exec is in the buffer, not
    /// once the records before it (thousands of faults, say) are handled.
    ///
    /// Without a model nothing needs the batch ahead: each record is
    /// handled as it is read, in place. With one, the batch is copied into
    /// one buffer kept from batch to batch (no allocation per record).
    fn drain<S: Sink>(&mut self, reader: &mut EventReader, sink: &mut S) {
        if self.tracker.is_none() {
            while reader.drain_some(DRAIN_BATCH, |b| self.record(b, sink)) == DRAIN_BATCH {}
            return;
        }
        let (mut bytes, mut ends) = std::mem::take(&mut self.batch);
        loop {
            bytes.clear();
            ends.clear();
            let n = reader.drain_some(DRAIN_BATCH, |b| {
                bytes.extend_from_slice(b);
                ends.push(bytes.len());
            });
            let records = || {
                ends.iter().scan(0, |start, &end| {
                    let r = &bytes[*start..end];
                    *start = end;
                    Some(r)
                })
            };
            // The last exec of each process in the batch: an earlier
            // one's address space is already gone.
            let mut last = std::collections::HashMap::new();
            for (pid, ts, mm) in records().filter_map(exec_record) {
                last.insert(pid, (ts, mm));
            }
            for (pid, (ts, mm)) in last {
                let seed = control::exec_seed(&self.hooks, pid, mm, ts);
                self.seeds.insert((pid, ts), seed);
            }
            for b in records() {
                self.record(b, sink);
            }
            // Left only by exec records that did not decode.
            self.seeds.clear();
            if n < DRAIN_BATCH {
                break;
            }
        }
        self.batch = (bytes, ends);
    }

    fn deliver<S: Sink>(
        tally: &mut Tally,
        events: u32,
        sink: &mut S,
        ev: &Event,
        changes: &[RegionChange],
    ) {
        match (&ev.body, ev.body.kind()) {
            (
                Body::FaultSummary {
                    read, write, exec, ..
                },
                _,
            ) => {
                tally.by_name.add("fault", read + write + exec);
            }
            (_, Some(kind)) if events & kind.bit() == 0 => return,
            (body, _) => tally.by_name.add(body.name(), 1),
        }
        sink.event(ev, changes);
    }

    /// With `--faults summary` the kernel counts each process's faults:
    /// its counters' `faults` come from the summaries.
    fn count_summary(tracker: Option<&mut Tracker>, summary: &Event) {
        let (
            Some(tracker),
            Body::FaultSummary {
                read, write, exec, ..
            },
        ) = (tracker, &summary.body)
        else {
            return;
        };
        let pid = tracker.owner_of(summary.pid);
        if let Some(p) = tracker.get_mut(pid) {
            p.faults_since_sample += read + write + exec;
            p.dirty = true;
        }
    }

    /// A 32-bit program's system calls are not traced (the kernel's
    /// `syscalls:sys_enter_*` tracepoints do not fire for compat syscalls):
    /// say so, on stderr and in its exec event, whenever a process is seen
    /// running one, at its exec or at first sight.
    fn check_abi(&mut self, ev: &mut Event) {
        match &ev.body {
            // An OOM kill's pid is the killer's, which may be untraced.
            Body::Lost { .. } | Body::FaultSummary { .. } | Body::OomKill { .. } => return,
            Body::Exit { .. } => {
                self.abi_seen.remove(&ev.pid);
                self.abi_last = None;
                return;
            }
            Body::Exec { .. } => {}
            // The same process as the last event's: seen (most events).
            _ if self.abi_last == Some(ev.pid) => return,
            _ if self.abi_seen.contains_key(&ev.pid) => {
                self.abi_last = Some(ev.pid);
                return;
            }
            _ => {}
        }
        // Read when the event is handled: an event from before an exec may
        // find the new program already (then its exec says nothing new).
        let abi = proc::abi(ev.pid);
        if let Body::Exec { abi: a, cgroup, .. } = &mut ev.body {
            *a = abi;
            // Where the new program runs: a container runtime moves its
            // process between its fork and its exec.
            *cgroup = cgroup::of_pid(ev.pid).map(Box::new);
        }
        // Bounded: without exits traced (a system-wide stream) processes
        // are never forgotten; past this many the table starts again (a
        // 32-bit program may then be named once more).
        if self.abi_seen.len() >= ABI_SEEN_MAX && !self.abi_seen.contains_key(&ev.pid) {
            self.abi_seen.clear();
            self.abi_last = None;
        }
        if self.abi_seen.insert(ev.pid, abi) == Some(abi) {
            return;
        }
        if let Some(abi) = abi.filter(|a| !a.traced()) {
            let exe = proc::exe(ev.pid).map_or_else(
                || crate::output::names::escape_text(&ev.comm),
                |e| crate::output::names::escape_text(&e),
            );
            log::warn!(
                "pid {} ({exe}) runs a 32-bit program ({}): its system calls are not \
                 traced, so its mmap, munmap, brk... are missing here (faults, stack \
                 growth, fork, exec and exit are seen)",
                ev.pid,
                abi.name()
            );
        }
    }

    fn event<S: Sink>(&mut self, ev: &mut Event, sink: &mut S) {
        self.check_abi(ev);
        // Kernel-map housekeeping, whatever the sinks want: the last fault
        // summary of a process comes before its exit.
        if let Some(faults) = self.faults.as_mut() {
            if let Some(summary) = faults.before_event(ev, &mut self.hooks) {
                Self::count_summary(self.tracker.as_mut(), &summary);
                Self::deliver(&mut self.tally, self.events, sink, &summary, &[]);
            }
        }
        if let (Body::Exit { .. }, Some(p)) = (
            &ev.body,
            self.tracker.as_mut().and_then(|t| t.get_mut(ev.pid)),
        ) {
            // The last sample, its resident memory as the process left.
            sample(&self.hooks, self.counters, sink, p, ev.ts_ns);
        }
        if self.counters && matches!(ev.body, Body::Exit { .. }) {
            self.hooks.forget_rss(ev.pid);
        }
        let Some(tracker) = self.tracker.as_mut() else {
            Self::deliver(&mut self.tally, self.events, sink, ev, &[]);
            return;
        };
        if let Some(checker) = self.checker.as_mut() {
            if ev.body.changes_mappings() {
                // A change settles the checks of the address space it made.
                let pid = tracker.owner_of(ev.pid);
                let change = match ev.body {
                    Body::Exec { .. } => Change::Exec,
                    Body::Stack { .. } => Change::Other,
                    _ => Change::Call,
                };
                match checker.on_change(pid, ev.ts_ns, change) {
                    Settle::Compare(pending) => {
                        compare(tracker, checker, sink, pid, &pending, ev.ts_ns);
                    }
                    Settle::Void(reason) => sink.void_check(pid, reason, ev.ts_ns, None),
                    Settle::Nothing => {}
                }
            }
        }
        tracker.apply(ev);
        let touched = tracker.touched();
        if !touched.is_empty() {
            sink.processes(ev, &touched);
        }
        drop(touched);
        let changes = tracker.changes();
        Self::deliver(&mut self.tally, self.events, sink, ev, &changes);
        drop(changes);
        for mut p in tracker.end_event() {
            if let Some(checker) = self.checker.as_mut() {
                checker.forget(p.pid);
            }
            if let Some(c) = p.exit_check.take() {
                sink.check(&p, CheckReason::Exit, &c);
            }
            sink.ended(p);
        }
    }

    /// New lost events; `last`: the final count, at the end.
    fn lost<S: Sink>(&mut self, sink: &mut S, last: bool) {
        match self.hooks.new_lost().map(|mut lost| {
            lost.extend(self.hooks.new_misses(last));
            lost
        }) {
            Ok(lost) => {
                let now = clock::monotonic_ns();
                for (kind, count) in lost {
                    self.tally.lost += count;
                    sink.lost(kind, count, now);
                    // Any process may have lost events: its model is
                    // uncertain until its next comparison.
                    if let Some(tracker) = self.tracker.as_mut() {
                        tracker.doubt_all(now);
                    }
                }
            }
            Err(e) => log::warn!("cannot read the lost-event counters: {e:#}"),
        }
    }

    /// After the ring buffer is drained: fault summaries, pending checks
    /// settled by quiet, counters sampled, due checks started.
    fn tick<S: Sink>(&mut self, sink: &mut S) {
        if let Some(faults) = self.faults.as_mut() {
            for summary in faults.tick(&self.hooks) {
                Self::count_summary(self.tracker.as_mut(), &summary);
                Self::deliver(&mut self.tally, self.events, sink, &summary, &[]);
            }
        }
        let Some(tracker) = self.tracker.as_mut() else {
            return;
        };
        let now = clock::monotonic_ns();
        let mut retire = Vec::new();
        for pid in tracker.pids() {
            if let Some(checker) = self.checker.as_mut() {
                let last_change = tracker.get(pid).map_or(0, |p| p.last_change);
                if let Some(pending) = checker.quiet(pid, last_change) {
                    compare(tracker, checker, sink, pid, &pending, now);
                }
            }
            let Some(p) = tracker.get_mut(pid) else {
                continue;
            };
            // Counters move only with events: sample each tick that had some.
            if p.dirty {
                sample(&self.hooks, self.counters, sink, p, now);
            }
            if let Some(checker) = self.checker.as_mut() {
                checker.track(pid, now);
                if let Some(reason) = checker.due(pid, now, p.recheck) {
                    let bracket =
                        p.mm.zip(p.space.main_stack())
                            .map(|(mm, stack)| Bracket { mm, stack });
                    let probe = &mut LiveProbe { hooks: &self.hooks };
                    match checker.start(pid, reason, bracket, probe) {
                        Start::Failed(why) => sink.void_check(pid, reason, now, Some(why)),
                        // Never idle because it is gone: its exit was lost.
                        Start::Busy if !proc::exists(pid) => {
                            let since = *self.gone.entry(pid).or_insert(now);
                            if now.saturating_sub(since) >= GONE_GRACE_NS {
                                retire.push(pid);
                            }
                        }
                        _ => {
                            self.gone.remove(&pid);
                        }
                    }
                }
            }
        }
        self.retire(&retire, sink, now);
    }

    /// Processes gone without their exit seen (lost events) leave the
    /// model: otherwise they would stay, never checked, for ever.
    fn retire<S: Sink>(&mut self, pids: &[u32], sink: &mut S, now: u64) {
        let Some(tracker) = self.tracker.as_mut() else {
            return;
        };
        for &pid in pids {
            self.gone.remove(&pid);
            tracker.retire(pid, now);
            log::debug!("pid {pid} is gone and its exit was not seen (lost events): retired");
        }
        for p in tracker.end_event() {
            if let Some(checker) = self.checker.as_mut() {
                checker.forget(p.pid);
            }
            sink.ended(p);
        }
    }

    /// A check of each of `pids` that the model knows, as soon as each can
    /// be made.
    fn request_checks(&mut self, pids: &[u32]) {
        if pids.is_empty() {
            return;
        }
        if let (Some(tracker), Some(checker)) = (self.tracker.as_ref(), self.checker.as_mut()) {
            let known: Vec<u32> = pids
                .iter()
                .copied()
                .filter(|&p| tracker.get(p).is_some())
                .collect();
            checker.request(&known, clock::monotonic_ns());
        }
    }

    /// SIGUSR1: a check of every process, as soon as each can be made.
    fn request(&mut self) {
        if let (Some(tracker), Some(checker)) = (self.tracker.as_ref(), self.checker.as_mut()) {
            checker.request(&tracker.pids(), clock::monotonic_ns());
        }
    }
}

/// Compares `pid`'s model with a settled check's snapshot and tells the
/// sinks.
fn compare<S: Sink>(
    tracker: &mut Tracker,
    checker: &mut Checker,
    sink: &mut S,
    pid: u32,
    pending: &PendingCheck,
    now: u64,
) {
    if let Some(c) = tracker.compare(pid, pending.t0, &pending.snapshot) {
        checker.compared(pid, now);
        if let Some(p) = tracker.get(pid) {
            sink.check(p, pending.reason, &c);
        }
    }
}

/// Hands a process's counters to the sinks. Resident memory comes from
/// the kernel's kmem:rss_stat counters, else /proc/PID/status.
fn sample<S: Sink>(hooks: &Hooks, counters: bool, sink: &mut S, p: &mut Process, now: u64) {
    p.rss_kinds = if counters {
        hooks.rss_kinds(p.pid).or_else(|| {
            proc::rss_counters(p.pid).map(|c| [c[0], c[1], c[3]].map(|n| n.max(0) as u64))
        })
    } else {
        None
    };
    p.rss = p.rss_kinds.map(|k| k.iter().sum());
    sink.sample(now, p);
    p.dirty = false;
    p.faults_since_sample = 0;
}

/// Attaches, runs until the end condition, detaches.
pub async fn run<S: Sink>(target: &mut Target, plan: &Plan, sink: &mut S) -> Result<Outcome> {
    let cfg = target.hook_config(plan);
    // Blocked since main: one sent while loading waits here.
    let mut stop = StopSignals::new().context("signalfd")?;
    // Where kernels change mappings differently, ask this one (on scratch
    // mappings of ours, before anything is attached).
    let kernel = plan.model.as_ref().map(|_| KernelBehaviour::probe());
    let mut hooks = Hooks::load(&cfg)?;
    let started = Instant::now();
    let ring = hooks.take_events()?;
    let mut reader = EventReader::new(ring)?;
    let start_ns = hooks.attached_ns;
    let tracker = plan.model.as_ref().map(|m| {
        let mut t = Tracker::new(m.bucket_ns, m.keep_history, Box::new(LiveProc))
            .with_kernel(kernel.unwrap_or_default());
        t.set_start(start_ns);
        // Processes named with --pid are known from the start, busy or not,
        // and so are those running in a --cgroup.
        for &pid in &target.pids {
            t.ensure(pid, &proc::comm(pid));
        }
        for c in &target.cgroups {
            for pid in cgroup::procs_below(&c.dir, SEED_CGROUP_MAX) {
                if pid != std::process::id() && proc::exe(pid).is_some() {
                    t.ensure(pid, &proc::comm(pid));
                }
            }
        }
        if m.seed_running {
            for pid in proc::running() {
                let comm = proc::comm(pid);
                // With --cgroup alone, those running in them are seeded
                // above.
                let chosen = if target.args.comms.is_empty() {
                    target.cgroups.is_empty()
                } else {
                    target
                        .args
                        .comms
                        .iter()
                        .any(|c| c.as_bytes() == comm.as_slice())
                };
                if chosen && target.args.pids.is_empty() {
                    t.ensure(pid, &comm);
                }
            }
        }
        t
    });
    let checker = plan
        .model
        .as_ref()
        .and_then(|m| m.check_interval)
        .map(|i| Checker::new(i.as_nanos() as u64));
    let mut core = Core {
        stack_path: hooks.stack_path,
        hooks,
        tracker,
        checker,
        faults: (cfg.fault_mode == FAULTS_SUMMARY).then(|| FaultSummaries::new(start_ns)),
        tally: Tally::default(),
        events: plan.events,
        counters: cfg.track_rss,
        execs: 0,
        seeds: std::collections::HashMap::new(),
        batch: (Vec::new(), Vec::new()),
        malformed_logged: false,
        abi_seen: crate::FastMap::default(),
        abi_last: None,
        gone: std::collections::HashMap::new(),
    };
    sink.started(start_ns);
    sink.attached(core.stack_path);
    if let Some(tracker) = core.tracker.as_mut() {
        // The processes seeded from /proc (--pid, or all of them): the
        // sinks learn them, their regions and counters now, before any
        // event of theirs (which reports only what it changes).
        let now = clock::monotonic_ns();
        for pid in tracker.pids() {
            if core.counters {
                core.hooks.seed_rss(pid);
            }
            if let Some(p) = tracker.get_mut(pid) {
                sample(&core.hooks, core.counters, sink, p, now);
            }
        }
    }
    let stack = match core.stack_path {
        StackPath::Fexit => "stack growth via fexit",
        StackPath::FaultFallback => "stack growth via faults",
        StackPath::Off => "no stack events",
    };
    info!("tracing {} ({stack}); Ctrl-C to stop", target.scope());

    // The command runs only now that its pid is in the filter.
    let mut child_wait = None;
    if let Some((path, held)) = target.command.as_mut() {
        if let Some(tracker) = core.tracker.as_mut() {
            tracker.expect_exec(held.pid);
        }
        held.release(path)?;
        // It is exec'ing: read its new address space as soon as the exec
        // record is there, while the loader has barely started (the exec
        // reports success a little before its tracepoint runs). Bounded:
        // the record may be lost, or the exec not followed at all.
        let execs = core.execs;
        let deadline = Instant::now() + EXEC_WAIT;
        loop {
            core.drain(&mut reader, sink);
            if core.execs != execs || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        let pid = held.pid;
        // A thread of its own, not the runtime's blocking pool: the runtime
        // must not wait for the command when tracing stops first.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send(spawn::wait(pid));
        });
        child_wait = Some(rx);
    }

    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = tokio::time::interval(plan.tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let deadline = target.args.duration.map(Duration::from_secs_f64);
    let sleep = tokio::time::sleep(deadline.unwrap_or(Duration::from_secs(u64::from(u32::MAX))));
    tokio::pin!(sleep);

    let end = loop {
        tokio::select! {
            r = reader.readable() => {
                r?;
                core.drain(&mut reader, sink);
            }
            _ = poll.tick() => {
                core.drain(&mut reader, sink);
            }
            _ = ticks.tick() => {
                core.drain(&mut reader, sink);
                core.lost(sink, false);
                core.request_checks(&sink.wanted_checks());
                if let Some(tracker) = core.tracker.as_mut() {
                    let (coarse, refuse_new) = sink.degrade();
                    tracker.degrade(coarse, refuse_new);
                }
                core.tick(sink);
            }
            status = async {
                match child_wait.as_mut() {
                    Some(wait) => wait.await,
                    None => std::future::pending().await,
                }
            } => {
                let status = status.context("waiting for the command")?.context("waitpid")?;
                child_wait = None;
                break End::CommandExited(status);
            }
            name = stop.recv() => match name.context("reading signals")? {
                "SIGUSR1" => {
                    // Events submitted before the signal belong to the
                    // processes it asks about.
                    core.drain(&mut reader, sink);
                    core.request();
                }
                "SIGHUP" => sink.signal("SIGHUP"),
                name => {
                    sink.signal(name);
                    break End::Signal(name);
                }
            },
            () = &mut sleep, if deadline.is_some() => break End::Duration,
        }
        if !sink.flush() {
            break End::OutputClosed;
        }
    };

    if let (Some(wait), Some((_, held))) = (child_wait.as_mut(), &target.command) {
        if target.args.kill_on_stop {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(held.pid as i32, libc::SIGKILL) };
            // Reaped at once (it cannot ignore SIGKILL); bounded all the same.
            let _ = tokio::time::timeout(Duration::from_secs(1), wait).await;
        }
    }

    // Everything submitted before the end is still in the buffer.
    core.drain(&mut reader, sink);
    core.lost(sink, true);
    match core.hooks.new_errors() {
        Ok(errors) => core.tally.kernel_errors = errors.iter().map(|(_, n)| n).sum(),
        Err(e) => log::warn!("cannot read the kernel error counters: {e:#}"),
    }
    core.tick(sink);
    if let Some(tracker) = core.tracker.as_mut() {
        for p in tracker.drain() {
            sink.ended(p);
        }
    }
    sink.flush();
    let elapsed = started.elapsed();
    let stack_path = core.stack_path;
    let tally = std::mem::take(&mut core.tally);
    drop(reader);
    drop(core);
    Ok(Outcome {
        end,
        tally,
        elapsed,
        stack_path,
        start_ns,
    })
}

/// Prints the closing summary on stderr; returns mmtrace's exit code.
pub fn finish(outcome: &Outcome, target: &Target) -> i32 {
    use std::fmt::Write as _;
    let tally = &outcome.tally;
    let mut line = format!(
        "mmtrace: {} events in {:.2} s",
        tally.by_name.total(),
        outcome.elapsed.as_secs_f64()
    );
    // Writing to a String cannot fail.
    for (name, n) in tally.by_name.sorted() {
        if name != "fault_summary" && name != "lost" {
            let _ = write!(line, ", {name} {n}");
        }
    }
    let _ = write!(line, "; lost {}", tally.lost);
    if tally.malformed > 0 {
        let _ = write!(line, "; malformed {}", tally.malformed);
    }
    if tally.kernel_errors > 0 {
        let _ = write!(line, "; errors {}", tally.kernel_errors);
    }
    let code = match outcome.end {
        End::CommandExited(status) => {
            let _ = write!(line, "; command exited ({})", describe_status(status));
            spawn::exit_code_of(status)
        }
        End::Signal(_) | End::Duration | End::OutputClosed => {
            match outcome.end {
                End::Signal(name) => {
                    let _ = write!(line, "; stopped by {name}");
                }
                End::Duration => line.push_str("; stopped after --duration"),
                End::OutputClosed | End::CommandExited(_) => {
                    line.push_str("; stopped: the output is closed");
                }
            }
            if let Some((_, held)) = &target.command {
                let fate = if target.args.kill_on_stop {
                    "killed"
                } else {
                    // Detached, as a debugger detaches: say so.
                    "left running"
                };
                let _ = write!(line, " (command pid {} {fate})", held.pid);
            }
            0
        }
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
