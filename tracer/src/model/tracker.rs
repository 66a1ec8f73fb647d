//! The [`Tracker`]: every traced process's address space, kept by one set
//! of rules whatever the command.
//!
//! A process is seeded from /proc/PID/maps at first sight, copied at fork,
//! reseeded at exec and ended at exit; every other memory event goes
//! through [`apply_event`]. After each event, [`Tracker::changes`] lists
//! what it changed (for `stream --regions`), and [`Tracker::end_event`]
//! hands over the processes that left the model (for `record`'s
//! timelines). The tracker reads /proc only through a [`ProcSource`], so it
//! is tested without a kernel.

use std::collections::HashMap;

use super::{
    apply::apply_event, maps, seed_of, AddressSpace, Cause, Journal, KernelBehaviour, Op, Perms,
    Region, Seed, SeededBy,
};
use crate::{
    event::{Body, Event},
    kernel::proc,
};

/// What the tracker reads about a process from the kernel (/proc).
pub trait ProcSource {
    /// The process's mappings now.
    fn maps(&mut self, pid: u32) -> std::io::Result<Vec<Seed>>;
    /// Its parent and program, for a process found running.
    fn describe(&mut self, pid: u32) -> (Option<u32>, Option<Vec<u8>>);
    /// CLOCK_MONOTONIC now, ns.
    fn now(&mut self) -> u64;
}

/// The running system's /proc.
pub struct LiveProc;

impl ProcSource for LiveProc {
    fn maps(&mut self, pid: u32) -> std::io::Result<Vec<Seed>> {
        maps::read(pid)
    }

    fn describe(&mut self, pid: u32) -> (Option<u32>, Option<Vec<u8>>) {
        (proc::ppid(pid), proc::exe(pid))
    }

    fn now(&mut self) -> u64 {
        crate::kernel::clock::monotonic_ns()
    }
}

/// A span of time (ns since the start) during which the model of a process
/// may be out of step with the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uncertain {
    pub from_ns: u64,
    /// None: still open.
    pub to_ns: Option<u64>,
}

/// One process as the model knows it.
#[derive(Debug)]
pub struct Process {
    pub pid: u32,
    /// Order of first sight, across the whole session.
    pub seq: u64,
    /// task->start_time (ns since boot), once an exec or exit told it.
    pub start_time: Option<u64>,
    pub ppid: Option<u32>,
    pub comm: Vec<u8>,
    pub exe: Option<Vec<u8>>,
    pub seeded_by: SeededBy,
    pub exec_at: Option<u64>,
    pub exit_at: Option<u64>,
    pub exit_status: Option<i32>,
    pub space: AddressSpace,
    /// Events stamped before this (CLOCK_MONOTONIC) are already in the
    /// snapshot the process was seeded from.
    seeded_until: u64,
    /// CLOCK_MONOTONIC of the last event that changed its mappings.
    pub last_change: u64,
    /// Closed spans of uncertainty, and the open one.
    pub uncertain: Vec<Uncertain>,
    pub uncertain_since: Option<u64>,
    /// A stack growth that matched no region, when the model doubts from:
    /// unless the process's next event is its exec (the exec sets up the
    /// new program's stack before its tracepoint, and kernels that allow
    /// fexit report that growth).
    stack_mismatch: Option<u64>,
    /// Events arrived since the last counter sample.
    pub dirty: bool,
    pub faults_since_sample: u64,
    /// Resident bytes, when the session could read them for this sample.
    pub rss: Option<u64>,
}

impl Process {
    fn new(
        pid: u32,
        seq: u64,
        seeded_by: SeededBy,
        bucket_ns: u64,
        kernel: KernelBehaviour,
    ) -> Process {
        Process {
            pid,
            seq,
            start_time: None,
            ppid: None,
            comm: Vec::new(),
            exe: None,
            seeded_by,
            exec_at: None,
            exit_at: None,
            exit_status: None,
            space: AddressSpace::new(bucket_ns).with_kernel(kernel),
            seeded_until: 0,
            last_change: 0,
            uncertain: Vec::new(),
            uncertain_since: None,
            stack_mismatch: None,
            dirty: true,
            faults_since_sample: 0,
            rss: None,
        }
    }

    /// The model may be out of step from `t_ns` on.
    pub fn doubt(&mut self, t_ns: u64) {
        self.uncertain_since.get_or_insert(t_ns);
    }

    /// The model is known right again at `t_ns`.
    fn trust(&mut self, t_ns: u64) {
        if let Some(from) = self.uncertain_since.take() {
            self.uncertain.push(Uncertain {
                from_ns: from,
                to_ns: Some(t_ns.max(from)),
            });
        }
    }
}

/// What happened to a region, as a change line shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeOp {
    Entry(Op),
    Died,
}

impl ChangeOp {
    pub const fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Entry(op) => op.as_str(),
            ChangeOp::Died => "died",
        }
    }
}

/// One change an event made to a region.
#[derive(Clone, Copy, Debug)]
pub struct RegionChange<'a> {
    /// The process whose region it is (a fork's child has its own).
    pub pid: u32,
    pub op: ChangeOp,
    pub region: &'a Region,
    pub start: u64,
    pub end: u64,
    pub perms: Perms,
    /// The range before the change, when it moved the region's extent.
    pub old: Option<(u64, u64)>,
    /// For births and deaths: what caused them.
    pub cause: Option<Cause>,
}

/// The differences found by comparing the model with /proc/PID/maps.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// ns since the start, at the read.
    pub t_ns: u64,
    pub regions: u64,
    /// (kind, model's region, kernel's region).
    pub differences: Vec<(&'static str, Option<Seed>, Option<Seed>)>,
}

pub struct Tracker {
    live: HashMap<u32, Process>,
    /// Processes that left the model during the current event.
    ended: Vec<Process>,
    /// Processes the current event changed, with their journal marks.
    touched: Vec<(u32, usize)>,
    start_ns: u64,
    bucket_ns: u64,
    /// Keep dead regions (for timelines); otherwise they are dropped once
    /// the event that killed them has been reported.
    keep_history: bool,
    next_seq: u64,
    source: Box<dyn ProcSource>,
    /// Where kernels differ, how this one changes mappings.
    kernel: KernelBehaviour,
}

impl Tracker {
    /// `bucket_ns`: width of the fault-count buckets of each region.
    pub fn new(bucket_ns: u64, keep_history: bool, source: Box<dyn ProcSource>) -> Tracker {
        Tracker {
            live: HashMap::new(),
            ended: Vec::new(),
            touched: Vec::new(),
            start_ns: 0,
            bucket_ns,
            keep_history,
            next_seq: 0,
            source,
            kernel: KernelBehaviour::default(),
        }
    }

    /// Models the address spaces as `kernel` changes them (the default is
    /// the newest kernels' behaviour).
    #[must_use]
    pub fn with_kernel(mut self, kernel: KernelBehaviour) -> Tracker {
        self.kernel = kernel;
        self
    }

    /// Times count from `start_ns` (CLOCK_MONOTONIC) on.
    pub fn set_start(&mut self, start_ns: u64) {
        self.start_ns = start_ns;
    }

    fn rel(&self, mono: u64) -> u64 {
        mono.saturating_sub(self.start_ns)
    }

    pub fn get(&self, pid: u32) -> Option<&Process> {
        self.live.get(&pid)
    }

    pub fn get_mut(&mut self, pid: u32) -> Option<&mut Process> {
        self.live.get_mut(&pid)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.live.keys().copied().collect()
    }

    pub fn processes_mut(&mut self) -> impl Iterator<Item = &mut Process> {
        self.live.values_mut()
    }

    fn new_process(&mut self, pid: u32, seeded_by: SeededBy) -> Process {
        new_process(
            pid,
            seeded_by,
            &mut self.next_seq,
            (self.bucket_ns, self.kernel),
            self.keep_history,
        )
    }

    /// Makes sure `pid` has a model: a process found running is seeded
    /// from /proc.
    pub fn ensure(&mut self, pid: u32, comm: &[u8]) -> &mut Process {
        let Tracker {
            live,
            source,
            start_ns,
            bucket_ns,
            keep_history,
            next_seq,
            kernel,
            ..
        } = self;
        live.entry(pid).or_insert_with(|| {
            let now = source.now();
            let t = now.saturating_sub(*start_ns);
            let mut p = new_process(
                pid,
                SeededBy::Proc,
                next_seq,
                (*bucket_ns, *kernel),
                *keep_history,
            );
            p.comm = comm.to_vec();
            (p.ppid, p.exe) = source.describe(pid);
            match source.maps(pid) {
                Ok(seeds) => {
                    p.space.seed(t, &seeds, Cause::Proc);
                    p.seeded_until = source.now();
                }
                // Gone already, or not readable: what we know is uncertain.
                Err(_) => p.doubt(t),
            }
            p
        })
    }

    /// [`Tracker::ensure`], and notes where `pid`'s journal stands, so that
    /// [`Tracker::changes`] shows what the event changes (and, for a process
    /// seen for the first time, the regions found running).
    fn ensure_touched(&mut self, pid: u32, comm: &[u8]) -> &mut Process {
        let mark = self.live.get(&pid).map_or(0, |p| p.space.journal().len());
        self.touched.push((pid, mark));
        self.ensure(pid, comm)
    }

    /// Applies one event. Events of processes not seen before seed them
    /// from /proc first.
    pub fn apply(&mut self, ev: &Event) {
        let t = self.rel(ev.ts_ns);
        if let Some(p) = self.live.get_mut(&ev.pid) {
            if let Some(at) = p.stack_mismatch.take() {
                if !matches!(ev.body, Body::Exec { .. }) {
                    p.doubt(at);
                }
            }
        }
        match &ev.body {
            // The child's own events come after the parent's fork.
            Body::Fork { child_pid, .. } => {
                let parent = self.ensure_touched(ev.pid, &ev.comm);
                let space = parent.space.fork_copy(t);
                let exe = parent.exe.clone();
                if let Some(mut old) = self.live.remove(child_pid) {
                    // A pid still held: that process is gone unseen.
                    old.doubt(t);
                    self.ended.push(old);
                }
                let mut child = self.new_process(*child_pid, SeededBy::Fork);
                child.space = space;
                child.ppid = Some(ev.pid);
                child.comm.clone_from(&ev.comm);
                child.exe = exe;
                child.last_change = ev.ts_ns;
                self.live.insert(*child_pid, child);
                self.touched.push((*child_pid, 0));
            }
            Body::Exec {
                path, start_time, ..
            } => {
                let known = self.live.contains_key(&ev.pid);
                let p = self.ensure(ev.pid, &ev.comm);
                p.dirty = true;
                p.last_change = p.last_change.max(ev.ts_ns);
                // Regions read from /proc after the exec describe the new
                // program: they are not the old one's. But a stream has
                // shown those read at an earlier event (one stamped before
                // the exec, such as the exec's own stack growth, made the
                // tracker read /proc after it): they stay, for the exec to
                // end with the rest.
                if !(known && p.space.keeps_journal()) {
                    p.space.discard_seeded_after(t);
                }
                let mark = p.space.journal().len();
                p.space.end_all(t, Cause::Exec);
                p.exec_at = Some(t);
                p.exe = Some(path.clone());
                p.comm.clone_from(&ev.comm);
                p.start_time = Some(*start_time);
                if p.seeded_by == SeededBy::Proc && p.space.regions.is_empty() {
                    // First seen at this exec: nothing before it was known.
                    p.seeded_by = SeededBy::Exec;
                }
                self.touched.push((ev.pid, mark));
                let read_at = self.source.now();
                let seeds = self.source.maps(ev.pid);
                let until = self.source.now();
                let read_at = self.rel(read_at);
                let p = self.ensure(ev.pid, &ev.comm);
                if let Ok(seeds) = seeds {
                    p.space.seed(t, &seeds, Cause::Exec);
                    p.seeded_until = until;
                    p.trust(t);
                } else {
                    p.doubt(read_at);
                }
            }
            Body::Exit { status, start_time } => {
                self.ensure_touched(ev.pid, &ev.comm);
                if let Some(mut p) = self.live.remove(&ev.pid) {
                    p.space.end_all(t, Cause::Exit);
                    p.exit_at = Some(t);
                    p.exit_status = Some(*status);
                    p.start_time = Some(*start_time);
                    p.dirty = true;
                    self.ended.push(p);
                }
            }
            Body::FaultSummary { .. } | Body::Lost { .. } => {}
            Body::Fault { .. } => {
                // A fault changes no region: no need to look for changes
                // (there are many), except of a process seen first.
                let p = if self.live.contains_key(&ev.pid) {
                    self.ensure(ev.pid, &ev.comm)
                } else {
                    self.ensure_touched(ev.pid, &ev.comm)
                };
                p.dirty = true;
                p.faults_since_sample += 1;
                apply_event(&mut p.space, ev, t, ev.ts_ns < p.seeded_until);
            }
            Body::Brk { .. }
            | Body::Mmap { .. }
            | Body::Munmap { .. }
            | Body::Mremap { .. }
            | Body::Mprotect { .. }
            | Body::PkeyMprotect { .. }
            | Body::Madvise { .. }
            | Body::Stack { .. } => {
                let p = self.ensure_touched(ev.pid, &ev.comm);
                p.dirty = true;
                p.last_change = p.last_change.max(ev.ts_ns);
                let before_seed = ev.ts_ns < p.seeded_until;
                if !apply_event(&mut p.space, ev, t, before_seed) {
                    // No region started where the stack grew: the model is
                    // out of step, unless an exec is under way (see
                    // `stack_mismatch`).
                    if matches!(ev.body, Body::Stack { .. }) {
                        p.stack_mismatch = Some(t);
                    } else {
                        p.doubt(t);
                    }
                }
            }
        }
    }

    /// What the current event changed, in print order: births, deaths and
    /// changes first, then merges (which the kernel makes last) and the
    /// regions they absorbed. Empty when the tracker keeps history (no
    /// journal is kept then).
    pub fn changes(&self) -> Vec<RegionChange<'_>> {
        let mut out = Vec::new();
        for &(pid, mark) in &self.touched {
            let p = self
                .live
                .get(&pid)
                .or_else(|| self.ended.iter().rev().find(|p| p.pid == pid));
            if let Some(p) = p {
                changes_since(pid, &p.space, mark, &mut out);
            }
        }
        out
    }

    /// Ends the current event: forgets reported dead regions (unless
    /// history is kept) and hands over the processes that left the model.
    pub fn end_event(&mut self) -> Vec<Process> {
        if !self.keep_history {
            for (pid, _) in self.touched.drain(..) {
                if let Some(p) = self.live.get_mut(&pid) {
                    p.space.forget_dead();
                }
            }
        }
        self.touched.clear();
        std::mem::take(&mut self.ended)
    }

    /// Every process's model may be out of step from `now_ns` (events were
    /// lost).
    pub fn doubt_all(&mut self, now_ns: u64) {
        let t = self.rel(now_ns);
        for p in self.live.values_mut() {
            p.doubt(t);
        }
    }

    /// Compares `pid`'s model with `snapshot`, read at `t0` (monotonic)
    /// when the model held every event before the read and none after it.
    /// Differences resync the model.
    pub fn compare(&mut self, pid: u32, t0: u64, snapshot: &[Seed]) -> Option<Comparison> {
        let t = self.rel(t0);
        let p = self.live.get_mut(&pid)?;
        let model: Vec<Seed> = p.space.live().map(seed_of).collect();
        let differences = maps::diff(&model, snapshot);
        if !differences.is_empty() {
            p.space.resync(t, snapshot);
        }
        p.trust(t);
        Some(Comparison {
            t_ns: t,
            regions: snapshot.len() as u64,
            differences,
        })
    }

    /// Hands over every process still alive (at the end of the session).
    pub fn drain(&mut self) -> Vec<Process> {
        let mut all: Vec<Process> = self.live.drain().map(|(_, p)| p).collect();
        all.sort_by_key(|p| p.seq);
        all
    }
}

/// A process not seen before, numbered in order of first sight.
fn new_process(
    pid: u32,
    seeded_by: SeededBy,
    next_seq: &mut u64,
    (bucket_ns, kernel): (u64, KernelBehaviour),
    keep_history: bool,
) -> Process {
    *next_seq += 1;
    let mut p = Process::new(pid, *next_seq, seeded_by, bucket_ns, kernel);
    if !keep_history {
        p.space.keep_journal();
    }
    p
}

/// The changes in `space`'s journal from `mark` on, in print order (see
/// [`Tracker::changes`]).
pub fn journal_changes(pid: u32, space: &AddressSpace, mark: usize) -> Vec<RegionChange<'_>> {
    let mut out = Vec::new();
    changes_since(pid, space, mark, &mut out);
    out
}

fn changes_since<'a>(
    pid: u32,
    space: &'a AddressSpace,
    mark: usize,
    out: &mut Vec<RegionChange<'a>>,
) {
    let mut merges = Vec::new();
    let mut merged = Vec::new();
    let mut last = None;
    for j in space.journal().iter().skip(mark) {
        // The same entry twice (rewritten in place): report it once.
        if last == Some(*j) {
            continue;
        }
        last = Some(*j);
        match *j {
            Journal::Change { region, entry } => {
                let r = &space.regions[region];
                let Some(c) = r.history.get(entry) else {
                    continue;
                };
                let prev = entry.checked_sub(1).map(|k| &r.history[k]);
                let change = RegionChange {
                    pid,
                    op: ChangeOp::Entry(c.op),
                    region: r,
                    start: c.start,
                    end: c.end,
                    perms: c.perms,
                    old: if c.op.moves_extent() {
                        prev.map(|p| (p.start, p.end))
                    } else {
                        None
                    },
                    cause: (c.op == Op::Born).then_some(r.born_by),
                };
                if c.op == Op::Merge {
                    merges.push(change);
                } else {
                    out.push(change);
                }
            }
            Journal::Died { region } => {
                let r = &space.regions[region];
                let Some(cause) = r.died_by else {
                    continue;
                };
                let change = RegionChange {
                    pid,
                    op: ChangeOp::Died,
                    region: r,
                    start: r.start,
                    end: r.end,
                    perms: r.perms,
                    old: None,
                    cause: Some(cause),
                };
                if cause == Cause::Merge {
                    merged.push(change);
                } else {
                    out.push(change);
                }
            }
        }
    }
    out.append(&mut merges);
    out.append(&mut merged);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::SysResult,
        model::{Backing, PAGE},
    };

    /// /proc as the test sets it: maps per pid, a clock that ticks.
    #[derive(Default)]
    struct FakeProc {
        maps: HashMap<u32, Vec<Seed>>,
        now: u64,
    }

    impl ProcSource for FakeProc {
        fn maps(&mut self, pid: u32) -> std::io::Result<Vec<Seed>> {
            self.maps
                .get(&pid)
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }

        fn describe(&mut self, _pid: u32) -> (Option<u32>, Option<Vec<u8>>) {
            (Some(1), Some(b"/bin/x".to_vec()))
        }

        fn now(&mut self) -> u64 {
            self.now += 1;
            self.now
        }
    }

    fn seed(start: u64, pages: u64) -> Seed {
        Seed {
            start,
            end: start + pages * PAGE,
            perms: Perms::from_prot(3, false),
            offset: 0,
            backing: Backing::Anon,
        }
    }

    fn tracker(keep_history: bool, maps: &[(u32, Vec<Seed>)]) -> Tracker {
        let source = FakeProc {
            maps: maps.iter().cloned().collect(),
            now: 1000,
        };
        let mut t = Tracker::new(u64::MAX, keep_history, Box::new(source));
        t.set_start(0);
        t
    }

    fn ev(ts_ns: u64, pid: u32, body: Body) -> Event {
        Event {
            ts_ns,
            cpu: 0,
            pid,
            tid: pid,
            comm: b"t".to_vec(),
            body,
        }
    }

    fn mmap(addr: u64, pages: u64) -> Body {
        Body::Mmap {
            addr: 0,
            len: pages * PAGE,
            prot: 3,
            flags: 0x22,
            fd: -1,
            offset: 0,
            ret: SysResult::Ok(addr),
            file: None,
        }
    }

    fn ops(t: &Tracker) -> Vec<(u32, &'static str)> {
        t.changes().iter().map(|c| (c.pid, c.op.as_str())).collect()
    }

    #[test]
    fn a_running_process_is_seeded_once() {
        let mut t = tracker(true, &[(7, vec![seed(0x10000, 1)])]);
        t.apply(&ev(5000, 7, mmap(0x20000, 1)));
        t.end_event();
        t.apply(&ev(6000, 7, mmap(0x30000, 1)));
        t.end_event();
        let p = t.get(7).unwrap();
        assert_eq!(p.seeded_by, SeededBy::Proc);
        assert_eq!(p.ppid, Some(1));
        assert_eq!(p.space.live_count(), 3);
        assert_eq!(p.space.regions[0].born_by, Cause::Proc);
    }

    #[test]
    fn an_event_before_the_seed_is_not_applied_twice() {
        let mut t = tracker(true, &[(7, vec![seed(0x10000, 1)])]);
        // Stamped before the /proc read (clock 1001..1002): already in it.
        t.apply(&ev(500, 7, mmap(0x10000, 1)));
        let p = t.get(7).unwrap();
        assert_eq!(p.space.live_count(), 1);
        assert_eq!(p.space.regions[0].born_by, Cause::Mmap);
    }

    #[test]
    fn fork_copies_and_exit_hands_over() {
        let mut t = tracker(false, &[(7, vec![seed(0x10000, 2)])]);
        t.apply(&ev(
            5000,
            7,
            Body::Fork {
                child_pid: 8,
                clone_flags: 0,
            },
        ));
        // The parent's regions found running, then the child's copies.
        assert_eq!(ops(&t), [(7, "born"), (8, "born")]);
        assert!(t.end_event().is_empty());
        let child = t.get(8).unwrap();
        assert_eq!(child.seeded_by, SeededBy::Fork);
        assert_eq!(child.ppid, Some(7));
        assert_eq!(child.space.regions[0].born_by, Cause::Fork);

        t.apply(&ev(
            6000,
            8,
            Body::Exit {
                status: 3 << 8,
                start_time: 42,
            },
        ));
        assert_eq!(ops(&t), [(8, "died")]);
        let ended = t.end_event();
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].pid, 8);
        assert_eq!(ended[0].exit_status, Some(3 << 8));
        assert!(t.get(8).is_none());
        assert!(t.get(7).is_some());
    }

    #[test]
    fn exec_reseeds_from_proc() {
        let mut t = tracker(true, &[(7, vec![seed(0x50000, 1)])]);
        t.apply(&ev(5000, 7, mmap(0x20000, 1)));
        t.end_event();
        t.apply(&ev(
            6000,
            7,
            Body::Exec {
                path: b"/bin/y".to_vec(),
                old_pid: 7,
                start_time: 42,
            },
        ));
        t.end_event();
        let p = t.get(7).unwrap();
        let live: Vec<(u64, Cause)> = p.space.live().map(|r| (r.start, r.born_by)).collect();
        assert_eq!(live, [(0x50000, Cause::Exec)]);
        assert!(p
            .space
            .regions
            .iter()
            .filter(|r| r.died_ns.is_some())
            .all(|r| r.died_by == Some(Cause::Exec)));
        assert_eq!(p.exe.as_deref(), Some(&b"/bin/y"[..]));
    }

    /// Streaming: a process first seen through an event stamped before its
    /// exec (the exec's own stack growth) is seeded from /proc after the
    /// exec. Those regions were shown born, so the exec ends them, at their
    /// birth, rather than forgetting them.
    #[test]
    fn regions_shown_before_a_late_exec_die_by_it() {
        // The /proc clock starts at 1000: the exec at 500 comes before it.
        let mut t = tracker(false, &[(7, vec![seed(0x50000, 1)])]);
        t.apply(&ev(400, 7, mmap(0x20000, 1)));
        assert_eq!(ops(&t), [(7, "born")]);
        t.end_event();
        t.apply(&ev(
            500,
            7,
            Body::Exec {
                path: b"/bin/y".to_vec(),
                old_pid: 7,
                start_time: 42,
            },
        ));
        assert_eq!(ops(&t), [(7, "died"), (7, "born")]);
        t.end_event();
    }

    /// Kernels that allow fexit report the stack the exec sets up for the
    /// new program before the exec's own event: no region of the old
    /// program matches it, and that is no reason to doubt the model. A
    /// growth that matches nothing and is not followed by an exec is.
    #[test]
    fn a_stack_growth_of_an_exec_under_way_is_no_doubt() {
        let stack = |old_start| Body::Stack {
            old_start,
            new_start: old_start - 8 * PAGE,
            source: crate::event::StackSource::Fexit,
        };
        let exec = Body::Exec {
            path: b"/bin/y".to_vec(),
            old_pid: 7,
            start_time: 42,
        };
        let mut t = tracker(true, &[(7, vec![seed(0x50000, 1)])]);
        t.apply(&ev(5000, 7, mmap(0x20000, 1)));
        t.end_event();
        t.apply(&ev(6000, 7, stack(0x7fff_0000_0000)));
        t.end_event();
        t.apply(&ev(6001, 7, exec));
        t.end_event();
        assert!(t.get(7).unwrap().uncertain_since.is_none());
        assert!(t.get(7).unwrap().uncertain.is_empty());

        t.apply(&ev(7000, 7, stack(0x7fff_0000_0000)));
        t.end_event();
        t.apply(&ev(7001, 7, mmap(0x30000, 1)));
        t.end_event();
        assert!(t.get(7).unwrap().uncertain_since.is_some());
    }

    #[test]
    fn a_reused_pid_ends_the_old_process() {
        let mut t = tracker(true, &[(7, vec![seed(0x10000, 1)]), (9, vec![])]);
        t.apply(&ev(5000, 9, mmap(0x20000, 1)));
        t.end_event();
        // 9 was never seen exiting: a fork that reuses it ends it, in doubt.
        t.apply(&ev(
            6000,
            7,
            Body::Fork {
                child_pid: 9,
                clone_flags: 0,
            },
        ));
        let ended = t.end_event();
        assert_eq!(ended.len(), 1);
        assert!(ended[0].uncertain_since.is_some());
        assert_eq!(t.get(9).unwrap().seeded_by, SeededBy::Fork);
    }

    #[test]
    fn without_history_dead_regions_are_forgotten() {
        let mut t = tracker(false, &[(7, vec![])]);
        t.apply(&ev(5000, 7, mmap(0x20000, 1)));
        t.end_event();
        t.apply(&ev(
            6000,
            7,
            Body::Munmap {
                addr: 0x20000,
                len: PAGE,
                ret: SysResult::Ok(0),
            },
        ));
        assert_eq!(ops(&t), [(7, "died")]);
        t.end_event();
        assert!(t.get(7).unwrap().space.regions.is_empty());
    }

    #[test]
    fn a_comparison_resyncs_and_ends_the_doubt() {
        let mut t = tracker(true, &[(7, vec![seed(0x10000, 1)])]);
        t.apply(&ev(5000, 7, mmap(0x20000, 1)));
        t.end_event();
        t.doubt_all(5500);
        let c = t.compare(7, 7000, &[seed(0x10000, 1)]).unwrap();
        assert_eq!(c.differences.len(), 1);
        assert_eq!(c.differences[0].0, "extra");
        let p = t.get(7).unwrap();
        assert_eq!(p.space.live_count(), 1);
        assert_eq!(p.uncertain_since, None);
        assert_eq!(
            p.uncertain,
            [Uncertain {
                from_ns: 5500,
                to_ns: Some(7000)
            }]
        );
    }
}
