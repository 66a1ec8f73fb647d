//! `mmtrace record`: every region of every traced process from birth to
//! death, checked against /proc/PID/maps, written as one
//! `mmtrace.timeline/v1` document.
//!
//! Checking against the kernel needs a consistent cut: /proc/PID/maps is
//! read while the process is idle, and the comparison is made a tick later
//! only if no event of the process changed its mappings from the read on
//! (the events before it are all in by then).

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io::{BufWriter, Write},
    time::Duration,
};

use tracer_common::{EventKind, FAULTS_ALL};

use crate::{
    cli::RecordArgs,
    error::{Error, Result},
    event::{split_status, Body, Event},
    kernel::{clock, preflight, Hooks, StackPath},
    model::{apply::apply_event, maps, seed_of, AddressSpace, Backing, Seed},
    output::{
        names::{dev_str, hex, signal_name},
        timeline::{self, Timeline},
    },
    session::{self, exitwatch, Sink, Target},
};

/// Ticks: checks are started and resolved, counters sampled.
const TICK: Duration = Duration::from_millis(50);
/// Events of one process may reach the ring buffer out of their time
/// order by this much (threads on different CPUs).
const ORDER_MARGIN_NS: u64 = 1_000_000;

pub struct Prepared {
    args: RecordArgs,
    out: File,
    target: Target,
}

pub fn prepare(mut args: RecordArgs) -> Result<Prepared> {
    let pids = session::check(&args.trace)?;
    let out = File::create(&args.output)
        .map_err(|e| Error::Usage(format!("cannot write {}: {e}", args.output.display())))?;
    let trace = std::mem::take(&mut args.trace);
    // Exit checks need a seccomp filter in the command, installed without
    // no_new_privs (which would change what the command may do).
    let watch_exits = !trace.command.is_empty() && preflight::has_sys_admin();
    if !trace.command.is_empty() && !watch_exits {
        log::warn!("no exit checks: they need CAP_SYS_ADMIN");
    }
    let target = session::start(trace, pids, watch_exits)?;
    Ok(Prepared { args, out, target })
}

/// A maps read waiting for the events before it.
struct PendingCheck {
    /// CLOCK_MONOTONIC before and after the read.
    t0: u64,
    t1: u64,
    snapshot: Vec<Seed>,
    reason: &'static str,
}

struct Proc {
    pid: u32,
    start_time: Option<u64>,
    ppid: Option<u32>,
    comm: Vec<u8>,
    exe: Option<Vec<u8>>,
    seeded_by: &'static str,
    exec_at: Option<u64>,
    exit_at: Option<u64>,
    exit_status: Option<i32>,
    space: AddressSpace,
    /// Events stamped before this (CLOCK_MONOTONIC) are already in the
    /// snapshot the process was seeded from.
    seeded_until: u64,
    /// CLOCK_MONOTONIC of the last event that changed its mappings.
    last_change: u64,
    last_check: u64,
    pending: Option<PendingCheck>,
    /// Lost events may have touched it since this time (relative ns).
    uncertain_since: Option<u64>,
    /// A check was asked for (SIGUSR1) and not started yet.
    check_requested: bool,
    counters: Vec<timeline::CounterSample>,
    /// Events arrived since the last counter sample.
    dirty: bool,
    faults_since_sample: u64,
    drift: Vec<timeline::Drift>,
    checks: Vec<timeline::Check>,
    uncertain: Vec<timeline::Interval>,
}

struct RecordSink {
    start_ns: u64,
    bucket_ns: u64,
    interval_ns: u64,
    /// Every process seen, in order; `live` maps a pid to its current one.
    procs: Vec<Proc>,
    live: HashMap<u32, usize>,
    lost_by_kind: BTreeMap<String, u64>,
    lost_events: u64,
    /// Ours: the held command is stopped at exec until we continue it.
    exec_stop: bool,
    /// Processes to seed from /proc as soon as tracing starts.
    seed_pids: Vec<u32>,
}

impl RecordSink {
    fn rel(&self, mono: u64) -> u64 {
        mono.saturating_sub(self.start_ns)
    }

    fn new_proc(&self, pid: u32, seeded_by: &'static str, now: u64) -> Proc {
        Proc {
            pid,
            start_time: None,
            ppid: None,
            comm: Vec::new(),
            exe: None,
            seeded_by,
            exec_at: None,
            exit_at: None,
            exit_status: None,
            space: AddressSpace::new(self.bucket_ns),
            seeded_until: 0,
            last_change: 0,
            last_check: now,
            pending: None,
            uncertain_since: None,
            check_requested: false,
            counters: Vec::new(),
            dirty: true,
            faults_since_sample: 0,
            drift: Vec::new(),
            checks: Vec::new(),
            uncertain: Vec::new(),
        }
    }

    /// The process `pid` is now, seeding it from /proc on first sight.
    fn proc_for(&mut self, pid: u32, comm: &[u8]) -> usize {
        if let Some(&i) = self.live.get(&pid) {
            return i;
        }
        let now = clock::monotonic_ns();
        let mut p = self.new_proc(pid, "proc", now);
        p.comm = comm.to_vec();
        p.ppid = read_ppid(pid);
        p.exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|e| std::os::unix::ffi::OsStrExt::as_bytes(e.as_os_str()).to_vec());
        match maps::read(pid) {
            Ok(seeds) => {
                p.space.seed(self.rel(now), &seeds, "proc");
                p.seeded_until = clock::monotonic_ns();
            }
            Err(_) => {
                // Gone already, or not readable: what we know is uncertain.
                p.uncertain_since = Some(self.rel(now));
            }
        }
        self.procs.push(p);
        let i = self.procs.len() - 1;
        self.live.insert(pid, i);
        i
    }

    fn apply(&mut self, ev: &Event, hooks: &mut Hooks) {
        let t = self.rel(ev.ts_ns);
        let i = match &ev.body {
            // The child's own events come after the parent's fork.
            Body::Fork { child_pid, .. } => {
                let parent = self.proc_for(ev.pid, &ev.comm);
                let copy = self.procs[parent].space.fork_copy(t);
                if let Some(old) = self.live.remove(child_pid) {
                    // A pid we still held: that process is gone unseen.
                    self.procs[old].uncertain_since.get_or_insert(t);
                }
                let mut child = self.new_proc(*child_pid, "fork", ev.ts_ns);
                child.space = copy;
                child.ppid = Some(ev.pid);
                child.comm = ev.comm.clone();
                child.exe = self.procs[parent].exe.clone();
                child.last_change = ev.ts_ns;
                self.procs.push(child);
                self.live.insert(*child_pid, self.procs.len() - 1);
                return;
            }
            _ => self.proc_for(ev.pid, &ev.comm),
        };
        let exec_stop = self.exec_stop;
        let start_ns = self.start_ns;
        let p = &mut self.procs[i];
        p.dirty = true;
        if matches!(ev.body, Body::Fault { .. }) {
            p.faults_since_sample += 1;
        } else {
            // A pending check is settled by the first change after its read:
            // well after it, the model before this event is the state the
            // read saw; during it (or too close to tell), the check is void.
            if let Some(pc) = &p.pending {
                if ev.ts_ns >= pc.t0 {
                    if ev.ts_ns > pc.t1 + ORDER_MARGIN_NS {
                        compare(p, start_ns, ev.ts_ns);
                    } else {
                        p.pending = None;
                    }
                }
            }
            p.last_change = p.last_change.max(ev.ts_ns);
        }
        // Events already reflected in the seed snapshot.
        let before_seed = ev.ts_ns < p.seeded_until;
        if !apply_event(&mut p.space, ev, t, before_seed) {
            // No region started where the stack grew: the model is out of
            // step.
            p.uncertain_since.get_or_insert(t);
        }
        match &ev.body {
            Body::Exec {
                path, start_time, ..
            } => {
                p.space.discard_seeded_after(t);
                p.space.end_all(t, "exec");
                p.exec_at = Some(t);
                p.exe = Some(path.clone());
                p.comm = ev.comm.clone();
                p.start_time = Some(*start_time);
                if p.seeded_by == "proc" && p.space.regions.is_empty() {
                    p.seeded_by = "exec";
                }
                let read_at = clock::monotonic_ns();
                match maps::read(ev.pid) {
                    Ok(seeds) => {
                        p.space.seed(t, &seeds, "exec");
                        p.seeded_until = clock::monotonic_ns();
                        p.uncertain_since = None;
                    }
                    Err(_) => {
                        p.uncertain_since
                            .get_or_insert(read_at.saturating_sub(start_ns));
                    }
                }
                if exec_stop {
                    // Stopped by the kernel at exec: let it run.
                    // SAFETY: signalling a traced process.
                    unsafe { libc::kill(ev.pid as i32, libc::SIGCONT) };
                }
            }
            Body::Exit { status, start_time } => {
                p.space.end_all(t, "exit");
                p.exit_at = Some(t);
                p.exit_status = Some(*status);
                p.start_time = Some(*start_time);
                p.pending = None;
                self.live.remove(&ev.pid);
                hooks.forget_rss(ev.pid);
            }
            _ => {}
        }
    }

    /// Starts and resolves checks, samples counters.
    fn check_all(&mut self, hooks: &Hooks, final_pass: bool) {
        let now = clock::monotonic_ns();
        let interval = self.interval_ns;
        let live: Vec<usize> = self.live.values().copied().collect();
        for i in live {
            self.resolve(i, now);
            let p = &mut self.procs[i];
            // Counters move only with events: sample each tick that had some.
            if p.dirty || final_pass {
                let rss = hooks.rss(p.pid);
                sample(p, now.saturating_sub(self.start_ns), rss);
                p.dirty = false;
            }
            let due = now.saturating_sub(p.last_check) >= interval
                || p.uncertain_since.is_some()
                || p.check_requested;
            if (due || final_pass) && p.pending.is_none() && idle(p.pid) {
                let reason = if p.uncertain_since.is_some() {
                    "lost"
                } else if p.check_requested {
                    "request"
                } else {
                    "interval"
                };
                let t0 = clock::monotonic_ns();
                if let Ok(snapshot) = maps::read(p.pid) {
                    let t1 = clock::monotonic_ns();
                    if idle(p.pid) {
                        p.check_requested = false;
                        p.pending = Some(PendingCheck {
                            t0,
                            t1,
                            snapshot,
                            reason,
                        });
                    }
                }
            }
        }
    }

    /// A pending check with no change since its read: compare now.
    fn resolve(&mut self, i: usize, now: u64) {
        let start_ns = self.start_ns;
        let p = &mut self.procs[i];
        if p.pending.as_ref().is_some_and(|pc| p.last_change < pc.t0) {
            compare(p, start_ns, now);
        }
    }

    fn timeline(self, target: &Target, duration_ns: u64, stack_path: StackPath) -> Timeline {
        let RecordSink {
            start_ns,
            bucket_ns,
            procs,
            lost_by_kind,
            lost_events,
            ..
        } = self;
        let wall = std::time::SystemTime::now() - Duration::from_nanos(duration_ns);
        Timeline {
            schema: timeline::SCHEMA.to_string(),
            started_at: humantime::format_rfc3339_millis(wall).to_string(),
            monotonic_start_ns: start_ns,
            duration_ns,
            host: read_trim("/proc/sys/kernel/hostname"),
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            command: target
                .command_line()
                .map(|c| c.iter().map(|a| a.to_string_lossy().into_owned()).collect()),
            lost_events,
            lost_by_kind,
            stack_source: match stack_path {
                StackPath::Fexit => "fexit",
                StackPath::FaultFallback => "fault",
                StackPath::Off => "off",
            }
            .to_string(),
            processes: procs
                .into_iter()
                .map(|p| process_doc(p, bucket_ns, duration_ns))
                .collect(),
        }
    }
}

/// Compares the model with the pending check's snapshot: the model has all
/// the events before the read and none after it. Differences become drift
/// records and the model resyncs.
fn compare(p: &mut Proc, start_ns: u64, now: u64) {
    let Some(pending) = p.pending.take() else {
        return;
    };
    let t = pending.t0.saturating_sub(start_ns);
    let model: Vec<Seed> = p.space.live().map(seed_of).collect();
    let differences = maps::diff(&model, &pending.snapshot);
    for (kind, m, k) in &differences {
        p.drift.push(timeline::Drift {
            t_ns: t,
            kind: kind.to_string(),
            model: m.as_ref().map(maps::entry),
            kernel: k.as_ref().map(maps::entry),
        });
    }
    if !differences.is_empty() {
        p.space.resync(t, &pending.snapshot);
    }
    p.checks.push(timeline::Check {
        t_ns: t,
        reason: pending.reason.to_string(),
        regions: pending.snapshot.len() as u64,
        drift: differences.len() as u64,
    });
    if let Some(from) = p.uncertain_since.take() {
        p.uncertain.push(timeline::Interval {
            from_ns: from,
            to_ns: Some(t),
        });
    }
    p.last_check = now;
}

/// All threads of `pid` are blocked (not running): its mappings cannot
/// change while it stays so.
fn idle(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            return false;
        };
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .unwrap_or("R");
        if !matches!(state, "S" | "T" | "t" | "D" | "I") {
            return false;
        }
        // A memory syscall in progress (brk, mmap, munmap, mremap,
        // mprotect, madvise) can still change the mappings.
        if let Ok(sc) = std::fs::read_to_string(t.path().join("syscall")) {
            if let Some(nr) = sc
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<i64>().ok())
            {
                if matches!(nr, 9 | 10 | 11 | 12 | 25 | 28) {
                    return false;
                }
            }
        }
    }
    true
}

fn read_comm(pid: u32) -> Vec<u8> {
    let mut comm = std::fs::read(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.last() == Some(&b'\n') {
        comm.pop();
    }
    comm
}

fn read_ppid(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Samples the counters; RSS from the kernel's kmem:rss_stat counters,
/// else /proc/PID/statm.
fn sample(p: &mut Proc, t_ns: u64, rss: Option<u64>) {
    let (mapped, heap, stack) = p.space.sizes();
    let rss = rss.or_else(|| {
        std::fs::read_to_string(format!("/proc/{}/statm", p.pid))
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map(|pages| pages * 4096)
    });
    p.counters.push(timeline::CounterSample {
        t_ns,
        mapped,
        heap,
        stack,
        rss,
        faults: std::mem::take(&mut p.faults_since_sample),
    });
}

fn process_doc(p: Proc, bucket_ns: u64, duration_ns: u64) -> timeline::Process {
    let (exit_code, exit_signal) = match p.exit_status.map(split_status) {
        Some((code, sig)) => (code, sig.map(signal_name)),
        None => (None, None),
    };
    let mut uncertain = p.uncertain;
    if let Some(from) = p.uncertain_since {
        uncertain.push(timeline::Interval {
            from_ns: from,
            to_ns: None,
        });
    }
    let _ = duration_ns;
    timeline::Process {
        pid: p.pid,
        start_time: p.start_time,
        ppid: p.ppid,
        comm: String::from_utf8_lossy(&p.comm).into_owned(),
        exe: p.exe.map(|e| String::from_utf8_lossy(&e).into_owned()),
        seeded_by: p.seeded_by.to_string(),
        exec_at_ns: p.exec_at,
        exit_at_ns: p.exit_at,
        exit_code,
        exit_signal,
        regions: p
            .space
            .regions
            .iter()
            .map(|r| region_doc(r, bucket_ns))
            .collect(),
        counters: p.counters,
        drift: p.drift,
        checks: p.checks,
        uncertain,
    }
}

fn region_doc(r: &crate::model::Region, bucket_ns: u64) -> timeline::Region {
    let (path, dev, inode) = match &r.backing {
        Backing::File { path, dev, ino } => (
            Some(String::from_utf8_lossy(path).into_owned()),
            Some(dev_str(dev.0, dev.1)),
            Some(*ino),
        ),
        Backing::Shm { path } => (
            path.as_ref()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            None,
            None,
        ),
        Backing::Special(name) => (Some(name.clone()), None, None),
        Backing::Heap => (Some("[heap]".into()), None, None),
        Backing::Stack => (Some("[stack]".into()), None, None),
        Backing::Anon => (None, None, None),
    };
    let mut f = timeline::Faults {
        bucket_ns,
        buckets: r.buckets.clone(),
        mapped_bytes: r.len(),
        touched_bytes: r.pages.len() as u64 * crate::model::PAGE,
        ..Default::default()
    };
    for pf in r.pages.values() {
        f.read += u64::from(pf.read);
        f.write += u64::from(pf.write);
        f.exec += u64::from(pf.exec);
        f.present += u64::from(pf.present);
        f.first_ns = Some(f.first_ns.map_or(pf.first_ns, |x: u64| x.min(pf.first_ns)));
    }
    f.total = f.read + f.write + f.exec;
    timeline::Region {
        id: r.id,
        start: hex(r.start),
        end: hex(r.end),
        perms: r.perms.as_string(),
        kind: r.kind().to_string(),
        path,
        offset: r.offset,
        dev,
        inode,
        born_ns: r.born_ns,
        born_by: r.born_by.to_string(),
        parent: r.parent,
        died_ns: r.died_ns,
        died_by: r.died_by.map(str::to_string),
        history: r
            .history
            .iter()
            .map(|c| timeline::Change {
                t_ns: c.t_ns,
                op: c.op.to_string(),
                start: hex(c.start),
                end: hex(c.end),
                perms: c.perms.as_string(),
            })
            .collect(),
        faults: f,
    }
}

impl Sink for RecordSink {
    fn started(&mut self, start_ns: u64, _hooks: &Hooks) {
        self.start_ns = start_ns;
        // Processes named with --pid are known from the start, busy or not.
        for pid in std::mem::take(&mut self.seed_pids) {
            self.proc_for(pid, &read_comm(pid));
        }
    }

    fn event(&mut self, ev: Event, hooks: &mut Hooks) {
        self.apply(&ev, hooks);
    }

    fn lost(&mut self, kind: EventKind, count: u64, now_ns: u64) {
        self.lost_events += count;
        *self
            .lost_by_kind
            .entry(kind.name().to_string())
            .or_default() += count;
        // Any process may have lost events: its model is uncertain until
        // the next successful check.
        let t = self.rel(now_ns);
        for &i in self.live.values() {
            self.procs[i].uncertain_since.get_or_insert(t);
        }
    }

    fn tick(&mut self, hooks: &mut Hooks) {
        self.check_all(hooks, false);
    }

    fn request(&mut self) {
        for &i in self.live.values() {
            self.procs[i].check_requested = true;
        }
    }

    fn flush(&mut self) -> bool {
        true
    }

    fn exit_snapshot(&mut self, tid: u32, hooks: &mut Hooks) {
        let Some(tgid) = crate::kernel::preflight::process_of(tid).ok() else {
            return;
        };
        let Some(&i) = self.live.get(&tgid) else {
            return;
        };
        let p = &mut self.procs[i];
        // The last counters, while the process is whole.
        let rss = hooks.rss(tgid);
        sample(p, clock::monotonic_ns().saturating_sub(self.start_ns), rss);
        p.dirty = false;
        // The exiting thread waits in the seccomp notification; any other
        // thread must be blocked too for the read to be a cut.
        if !idle(tgid) {
            return;
        }
        let t0 = clock::monotonic_ns();
        if let Ok(snapshot) = maps::read(tgid) {
            let t1 = clock::monotonic_ns();
            if idle(tgid) {
                p.pending = Some(PendingCheck {
                    t0,
                    t1,
                    snapshot,
                    reason: "exit",
                });
            }
        }
    }

    fn exit_resolve(&mut self, tid: u32) {
        let Some(tgid) = crate::kernel::preflight::process_of(tid).ok() else {
            return;
        };
        if let Some(&i) = self.live.get(&tgid) {
            if self.procs[i]
                .pending
                .as_ref()
                .is_some_and(|c| c.reason == "exit")
            {
                self.resolve(i, clock::monotonic_ns());
            }
        }
    }
}

/// Records until the end condition, writes the timeline; returns mmtrace's
/// exit code.
pub async fn run(p: Prepared) -> Result<i32> {
    let Prepared {
        args,
        out,
        mut target,
    } = p;
    let mut mask = 0;
    for k in EventKind::ALL {
        mask |= k.bit();
    }
    let cfg = target.hook_config(mask, FAULTS_ALL, true, true);
    let mut sink = RecordSink {
        start_ns: 0,
        bucket_ns: (args.fault_bucket * 1e9) as u64,
        interval_ns: (args.reconcile_interval * 1e9) as u64,
        procs: Vec::new(),
        live: HashMap::new(),
        lost_by_kind: BTreeMap::new(),
        lost_events: 0,
        exec_stop: cfg.exec_stop,
        seed_pids: target.pids.clone(),
    };
    // Exits of the command tree wait for a check (see exitwatch).
    let listener = target
        .command
        .as_mut()
        .and_then(|(_, held)| held.exit_listener.take());
    let mut spare = None;
    let exits = match listener {
        Some(l) => {
            spare = l.try_clone().ok();
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            std::thread::spawn(move || exitwatch::serve(l, tx));
            Some(rx)
        }
        None => None,
    };
    let outcome = session::run(&mut target, &cfg, TICK, &mut sink, exits).await?;
    if let (session::End::Signal(_), Some(l)) = (&outcome.end, &spare) {
        // The command goes on without us: keep its exits working.
        exitwatch::answer_in_background(l);
    }
    let duration_ns = outcome.elapsed.as_nanos() as u64;
    let doc = sink.timeline(&target, duration_ns, outcome.stack_path);
    write_doc(&doc, out, &args.output)?;
    Ok(session::finish(&outcome, &target))
}

fn write_doc(doc: &Timeline, out: File, path: &std::path::Path) -> Result<()> {
    let mut w = BufWriter::new(out);
    serde_json::to_writer(&mut w, doc)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    w.write_all(b"\n")
        .and_then(|()| w.flush())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}
