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

use std::collections::VecDeque;

use super::{
    apply::{apply_event, apply_shmat, Applied},
    counters::{CounterCheck, Verdict},
    maps, page_up, seed_of, AddressSpace, Backing, Cause, CheckBasis, CheckReason, Journal,
    KernelBehaviour, Op, Perms, Region, Seed, SeededBy, VoidReason,
};
use crate::{
    event::{Abi, Body, Counters, Event, SysResult},
    kernel::{cgroup, cgroup::Cgroup, proc},
};

/// clone(2): the child runs in the parent's address space.
const CLONE_VM: u64 = 0x100;

/// OOM victims remembered at most while the model does not hold them
/// (see [`Tracker::apply`]'s `OomKill`): the oldest is forgotten first.
pub const MAX_UNSEEN_VICTIMS: usize = 64;
/// A remembered victim's exit carries its kill when it comes within this
/// long (a victim freeing a large address space takes seconds to exit);
/// later, the pid is taken for another process's.
pub const UNSEEN_VICTIM_NS: u64 = 60_000_000_000;

/// What the tracker reads about a process from the kernel (/proc).
pub trait ProcSource {
    /// The process's mappings now.
    fn maps(&mut self, pid: u32) -> std::io::Result<Vec<Seed>>;
    /// Its parent and program, for a process found running.
    fn describe(&mut self, pid: u32) -> (Option<u32>, Option<Vec<u8>>);
    /// The system calls of its program, for a process found running.
    fn abi(&mut self, pid: u32) -> Option<Abi>;
    /// Its control groups now (None: unknown, or gone).
    fn cgroup(&mut self, _pid: u32) -> Option<Cgroup> {
        None
    }
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

    fn abi(&mut self, pid: u32) -> Option<Abi> {
        proc::abi(pid)
    }

    fn cgroup(&mut self, pid: u32) -> Option<Cgroup> {
        cgroup::of_pid(pid)
    }

    fn now(&mut self) -> u64 {
        crate::kernel::clock::monotonic_ns()
    }
}

/// A process's address space read from /proc/PID/maps right after its
/// exec, bracketed by two reads of the kernel's count of its memory calls
/// (`MM_SEQ`).
#[derive(Debug)]
pub struct ExecSeed {
    pub pid: u32,
    pub maps: std::io::Result<Vec<Seed>>,
    /// CLOCK_MONOTONIC after the first count was read, before the maps.
    pub from_ns: u64,
    /// CLOCK_MONOTONIC after the maps were read, before the second count.
    pub until_ns: u64,
    /// No memory call of the address space was in flight at either count
    /// and none ended between them: the maps are exactly the state after
    /// the calls that ended before `from_ns`, and before every call that
    /// ends after `until_ns` (no call ends between them).
    pub settled: bool,
    /// Reads made (1: settled at once).
    pub tries: u32,
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
    /// The system calls of its program, when known. A 32-bit program's are
    /// not traced: its model is what /proc showed at the last check, and
    /// it is uncertain from its exec (or first sight) to its end.
    pub abi: Option<Abi>,
    /// Its control groups: read from /proc/PID/cgroup when it is first
    /// seen, at each exec and at each check with /proc/PID/maps;
    /// inherited at fork. A process moved to another cgroup without an
    /// exec shows the former one until its next check or exec.
    pub cgroup: Option<Cgroup>,
    pub seeded_by: SeededBy,
    pub exec_at: Option<u64>,
    pub exit_at: Option<u64>,
    pub exit_status: Option<i32>,
    /// The OOM killer chose it as its victim at this moment (model time);
    /// its exit (by SIGKILL) follows.
    pub oom_killed_at: Option<u64>,
    pub space: AddressSpace,
    /// Events stamped before this (CLOCK_MONOTONIC) are already in the
    /// snapshot the process was seeded from.
    seeded_until: u64,
    /// The snapshot's read began here: a stack growth stamped between
    /// this and `seeded_until` is in it when the stack already starts
    /// where the growth took it.
    seeded_from: u64,
    /// The check made at its exit, for the sinks (see [`Tracker::apply`]).
    pub exit_check: Option<Comparison>,
    /// Its exec's address space could not be read, and no check has
    /// resynced the model since.
    unseeded: bool,
    /// CLOCK_MONOTONIC of the last event that changed its mappings.
    pub last_change: u64,
    /// Closed spans of uncertainty, and the open one.
    pub uncertain: Vec<Uncertain>,
    pub uncertain_since: Option<u64>,
    /// Why the model must be compared with /proc/PID/maps again soon (set
    /// with the doubt, cleared by the comparison).
    pub recheck: Option<CheckReason>,
    /// The kernel's counters against the model after each change.
    pub counters: CounterCheck,
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
    /// The same by kind: file, anonymous and shared memory pages (the
    /// kernel's MM_FILEPAGES, MM_ANONPAGES, MM_SHMEMPAGES), in bytes.
    pub rss_kinds: Option<[u64; 3]>,
    /// The process whose address space this one shares (a child made with
    /// CLONE_VM, as vfork and posix_spawn make them), until its exec or
    /// exit: its calls change that process's model, and its own stays
    /// empty. The model is one per address space, not one per pid.
    pub shares: Option<u32>,
    /// The process whose address space it shared at its birth (CLONE_VM),
    /// kept after its exec or exit: its calls until then are in that
    /// process's model.
    pub shared_with: Option<u32>,
    /// Its address space's `mm_struct` address (the kernel's key of its
    /// count of memory calls, `MM_SEQ`), from its last event that carried
    /// the counters; None before any, and after its exec until the next.
    pub mm: Option<u64>,
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
            abi: None,
            cgroup: None,
            seeded_by,
            exec_at: None,
            exit_at: None,
            exit_status: None,
            oom_killed_at: None,
            space: AddressSpace::new(bucket_ns).with_kernel(kernel),
            seeded_until: 0,
            seeded_from: 0,
            exit_check: None,
            unseeded: false,
            last_change: 0,
            uncertain: Vec::new(),
            uncertain_since: None,
            recheck: None,
            counters: CounterCheck::default(),
            stack_mismatch: None,
            dirty: true,
            faults_since_sample: 0,
            rss: None,
            rss_kinds: None,
            shares: None,
            shared_with: None,
            mm: None,
        }
    }

    /// A process of `pid` known from nothing, for tests elsewhere.
    #[cfg(test)]
    pub fn new_for_test(pid: u32) -> Process {
        Process::new(pid, 1, SeededBy::Exec, 1, KernelBehaviour::default())
    }

    /// The model may be out of step from `t_ns` on, for `reason`: it is to
    /// be compared with /proc/PID/maps.
    pub fn doubt(&mut self, t_ns: u64, reason: CheckReason) {
        self.uncertain_since.get_or_insert(t_ns);
        self.recheck.get_or_insert(reason);
    }

    /// Compares the kernel's counters after event `ev` (already applied, at
    /// `t_ns` in the model's time) with the model: a difference is a change
    /// the model missed or got wrong, caught here.
    fn check_counters(&mut self, ev: &Event, c: &Counters, t_ns: u64) {
        if self.recheck.is_some() || self.untraced() {
            // A check is coming anyway; or the model is known to miss what
            // the process's syscalls change (the periodic checks resync it).
            return;
        }
        let verdict = self.counters.compare(c, &self.space, ev.ts_ns);
        log::trace!(
            "pid {}: {} at {t_ns} ns: kernel {c:?}, model {:?}: {verdict:?}",
            self.pid,
            ev.body.name(),
            self.space.counts()
        );
        if let Verdict::Differ(r) = verdict {
            log::debug!(
                "pid {}: after {} at {t_ns} ns the kernel counts differ from the model: {}",
                self.pid,
                ev.body.name(),
                r.describe()
            );
            self.doubt(t_ns, CheckReason::Counters);
        }
    }

    /// Takes the kernel's VMAs at the edges of the change `ev` made (read
    /// with its counters, settled with them): the model's merges and
    /// splits there become the kernel's. A model that cannot follow (a hole
    /// where the kernel has a VMA, a region in a gap) is out of step,
    /// found at this event: it is doubted and checked.
    fn follow_kernel(&mut self, ev: &Event, c: &Counters, t_ns: u64) {
        if !c.settled || self.untraced() {
            return;
        }
        let mut agree = true;
        for probe in &c.vmas {
            agree &= self.space.follow_kernel(t_ns, probe);
        }
        if !agree {
            log::debug!(
                "pid {}: after {} at {t_ns} ns the model cannot follow the kernel's VMAs {:?}",
                self.pid,
                ev.body.name(),
                c.vmas
            );
            self.doubt(t_ns, CheckReason::Counters);
        }
    }

    /// Whether `ev` is already in the snapshot the process was seeded
    /// from. Calls are ordered against the read by their stamps: those
    /// ended before it are in it. Settled seeds have none stamped during
    /// the read; an unsettled one (a call ran during every read) may hold
    /// any part of those that were, so they are applied again: a mapping,
    /// unmapping or protection change sets its range whatever was there,
    /// and the kernel's probes at its end correct the edges. Not so a
    /// move or a growth: an mremap stamped during the read is in it when
    /// its result already is (and its source is gone), a break moved when
    /// the heap already ends where the call left it, a stack growth when
    /// the stack already starts where the growth took it.
    fn in_seed(&self, ev: &Event) -> bool {
        if ev.ts_ns < self.seeded_from {
            return true;
        }
        if ev.ts_ns >= self.seeded_until {
            return false;
        }
        match ev.body {
            Body::Stack { new_start, .. } => self.space.live().any(|r| r.start == new_start),
            Body::Mremap {
                old_addr,
                new_len,
                ret: SysResult::Ok(to),
                ..
            } => {
                let end = to + page_up(new_len);
                let result = self.space.live().any(|r| r.start == to && r.end == end);
                let source_gone = to == old_addr || self.space.find(old_addr).is_none();
                result && source_gone
            }
            // The break moves from where the call found it: already in
            // the read when the heap there is as the call left it.
            Body::Brk {
                old_brk: Some(old_brk),
                new_brk,
                ..
            } => {
                let (old, new) = (page_up(old_brk), page_up(new_brk));
                if new > old {
                    self.space
                        .find(new - 1)
                        .is_some_and(|i| self.space.regions[i].start <= old)
                } else {
                    new == old || self.space.overlapping(new, old).is_empty()
                }
            }
            _ => false,
        }
    }

    /// The check at the process's exit: the kernel's counters of the
    /// address space it leaves (`counters`, None when none were read)
    /// against the model; `t_ns`: the exit, in the model's time.
    fn exit_check(&self, counters: Option<&Counters>, t_ns: u64) -> Comparison {
        let regions = self.space.live().count() as u64;
        let mut c = Comparison {
            t_ns,
            regions,
            differences: Vec::new(),
            against: CheckBasis::Counters,
            void: None,
            residual: None,
        };
        match counters {
            _ if self.unseeded => c.void = Some(VoidReason::Unseeded),
            None => c.void = Some(VoidReason::NoAddressSpace),
            Some(k) if !k.settled => c.void = Some(VoidReason::Unsettled),
            Some(k) => {
                let r = self.counters.residual(k, &self.space);
                if !r.is_zero() {
                    c.differences.push(maps::Difference {
                        kind: "counters",
                        model: None,
                        kernel: None,
                        fields: Vec::new(),
                    });
                    c.residual = Some(r.describe());
                }
            }
        }
        c
    }

    /// Its system calls are not traced (a 32-bit program).
    pub fn untraced(&self) -> bool {
        self.abi.is_some_and(|a| !a.traced())
    }

    /// The model of a process whose system calls are not traced is never
    /// sure: uncertain from `t_ns`, until its end.
    fn note_untraced(&mut self, t_ns: u64) {
        if self.untraced() {
            // From the exec, also when an event handled before it (made
            // before it, handled after) already found the program.
            self.uncertain_since = Some(self.uncertain_since.map_or(t_ns, |s| s.min(t_ns)));
        }
    }

    /// The model is known right again at `t_ns` (not for long, for a
    /// process whose system calls are not traced: it stays uncertain).
    fn trust(&mut self, t_ns: u64) {
        self.recheck = None;
        if self.untraced() {
            return;
        }
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
    /// The differences found; kind `counters` (no regions) when the
    /// counters differed.
    pub differences: Vec<maps::Difference>,
    /// What the model was compared with.
    pub against: CheckBasis,
    /// Nothing could be compared, and why.
    pub void: Option<VoidReason>,
    /// The counters that differed, kernel minus model ("map_count +1").
    pub residual: Option<String>,
}

pub struct Tracker {
    live: crate::FastMap<u32, Process>,
    /// Processes that left the model during the current event.
    ended: Vec<Process>,
    /// Processes the current event changed, with their journal marks.
    touched: Vec<(u32, usize)>,
    start_ns: u64,
    bucket_ns: u64,
    /// Keep dead regions (for timelines); otherwise they are dropped once
    /// the event that killed them has been reported.
    keep_history: bool,
    /// The seed of the exec about to be applied, read by the session.
    exec_seed: Option<ExecSeed>,
    next_seq: u64,
    source: Box<dyn ProcSource>,
    /// Where kernels differ, how this one changes mappings.
    kernel: KernelBehaviour,
    /// Faults counted per region only ([`AddressSpace::coarse_faults`]).
    coarse_faults: bool,
    /// No new process is modelled: the events of a process not known
    /// are ignored, a fork makes no child.
    refuse_new: bool,
    /// OOM victims the model did not hold at the kill (a quiet process of
    /// a system-wide recording, never seen): pid and kill time, for the
    /// exit that models them to carry it. Bounded: [`MAX_UNSEEN_VICTIMS`];
    /// an entry goes at that pid's exit or at a fork that reuses the pid.
    unseen_victims: VecDeque<(u32, u64)>,
}

impl Tracker {
    /// `bucket_ns`: width of the fault-count buckets of each region.
    pub fn new(bucket_ns: u64, keep_history: bool, source: Box<dyn ProcSource>) -> Tracker {
        Tracker {
            live: crate::FastMap::default(),
            ended: Vec::new(),
            touched: Vec::new(),
            start_ns: 0,
            bucket_ns,
            keep_history,
            exec_seed: None,
            next_seq: 0,
            source,
            kernel: KernelBehaviour::default(),
            coarse_faults: false,
            refuse_new: false,
            unseen_victims: VecDeque::new(),
        }
    }

    /// Degrades the model to spare memory (the daemon over its cap):
    /// `coarse_faults`, faults counted per region only (no page sets, no
    /// time buckets) from now on; `refuse_new`, no new process modelled
    /// (the processes known go on).
    pub fn degrade(&mut self, coarse_faults: bool, refuse_new: bool) {
        self.coarse_faults = coarse_faults;
        self.refuse_new = refuse_new;
    }

    /// `pid` is gone without its exit having been seen (lost events): it
    /// leaves the model (see [`Tracker::end_event`]), its end in doubt.
    pub fn retire(&mut self, pid: u32, now_ns: u64) {
        let t = self.rel(now_ns);
        let _ = self.hand_over_space(pid);
        if let Some(mut p) = self.live.remove(&pid) {
            p.doubt(t, CheckReason::Lost);
            self.ended.push(p);
        }
    }

    /// Whether `ev` is of a process the model does not know while new
    /// processes are refused: then it is not applied.
    pub fn refuses(&self, ev: &Event) -> bool {
        self.refuse_new
            && !self.live.contains_key(&ev.pid)
            && !matches!(
                ev.body,
                Body::OomKill { .. } | Body::Lost { .. } | Body::FaultSummary { .. }
            )
    }

    /// The seed of the exec event applied next (of `seed.pid`). Without
    /// one, an exec reads /proc/PID/maps through the [`ProcSource`] once
    /// and takes it as settled (the tests' sources never change).
    pub fn set_exec_seed(&mut self, seed: ExecSeed) {
        self.exec_seed = Some(seed);
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

    /// The processes with an address space of their own (those sharing
    /// one are checked and sampled through its owner).
    pub fn pids(&self) -> Vec<u32> {
        self.live
            .iter()
            .filter(|(_, p)| p.shares.is_none())
            .map(|(&pid, _)| pid)
            .collect()
    }

    /// The process whose model `pid`'s calls change: `pid` itself, or the
    /// owner of the address space it shares.
    pub fn owner_of(&self, pid: u32) -> u32 {
        self.live.get(&pid).and_then(|p| p.shares).unwrap_or(pid)
    }

    /// `pid` leaves its address space (exit, exec): if other processes
    /// share it, it lives on in them. The lowest of their pids takes the
    /// model over, with its history, and the others share it from then on.
    /// Returns the process that took it over.
    fn hand_over_space(&mut self, pid: u32) -> Option<u32> {
        let heir = self
            .live
            .iter()
            .filter(|(_, p)| p.shares == Some(pid))
            .map(|(&h, _)| h)
            .min()?;
        let p = self.live.get_mut(&pid)?;
        let space = std::mem::replace(&mut p.space, AddressSpace::new(self.bucket_ns));
        let counters = std::mem::take(&mut p.counters);
        let (last_change, seeded_until, mm) = (p.last_change, p.seeded_until, p.mm);
        let (uncertain_since, recheck) = (p.uncertain_since.take(), p.recheck.take());
        if !self.keep_history {
            p.space.keep_journal();
        }
        for q in self.live.values_mut() {
            if q.shares == Some(pid) {
                q.shares = Some(heir);
            }
        }
        // The heir is touched: the sinks learn that it holds the space
        // (its regions, until now the owner's) with this event.
        self.touched.push((heir, space.journal().len()));
        if let Some(h) = self.live.get_mut(&heir) {
            h.shares = None;
            h.space = space;
            h.counters = counters;
            h.last_change = last_change;
            h.seeded_until = seeded_until;
            h.mm = mm;
            h.uncertain_since = uncertain_since;
            h.recheck = recheck;
            h.dirty = true;
        }
        log::debug!("pid {pid} left its address space; pid {heir}, sharing it, keeps its model");
        Some(heir)
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
            let p = new_process(
                pid,
                SeededBy::Proc,
                next_seq,
                (*bucket_ns, *kernel),
                *keep_history,
            );
            read_from_proc(p, source.as_mut(), *start_ns, comm)
        })
    }

    /// `pid` is mmtrace's own child about to exec the command: known from
    /// nothing until its exec seeds it (its address space before that is a
    /// copy of mmtrace's, not worth a read of /proc).
    pub fn expect_exec(&mut self, pid: u32) {
        let p = self.new_process(pid, SeededBy::Exec);
        self.live.insert(pid, p);
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
        if self.refuses(ev) {
            return;
        }
        let t = self.rel(ev.ts_ns);
        if let Some(p) = self.live.get_mut(&ev.pid) {
            if let Some(at) = p.stack_mismatch.take() {
                if !matches!(ev.body, Body::Exec { .. }) {
                    p.doubt(at, CheckReason::Lost);
                }
            }
        }
        if let Body::Fork { child_pid, .. } = &ev.body {
            // A new process with that pid: a victim remembered was another.
            self.unseen_victims.retain(|v| v.0 != *child_pid);
        }
        match &ev.body {
            // The child's own events come after the parent's fork.
            Body::Fork { child_pid, .. } if self.refuse_new => {
                // The parent goes on; its child is not modelled.
                if let Some(mut old) = self.live.remove(child_pid) {
                    // A pid still held: that process is gone unseen.
                    old.doubt(t, CheckReason::Lost);
                    self.ended.push(old);
                }
            }
            Body::Fork {
                child_pid,
                clone_flags,
            } => {
                let parent = self.ensure_touched(ev.pid, &ev.comm);
                let (exe, abi, cg) = (parent.exe.clone(), parent.abi, parent.cgroup.clone());
                let owner = self.owner_of(ev.pid);
                let shared = clone_flags & CLONE_VM != 0;
                // The parent's model was read from /proc after the fork (its
                // exec was handled late: it may hold the parent's changes
                // made since, which the child does not have), or is in
                // doubt, or was never read: the child is read from /proc
                // itself rather than copied (but for a program whose calls
                // are not traced, in doubt for good: its copy is as good).
                let read_later = !shared
                    && self.live.get(&owner).is_some_and(|o| {
                        o.seeded_from > ev.ts_ns
                            || o.unseeded
                            || (o.uncertain_since.is_some() && !o.untraced())
                    });
                // CLONE_VM: the child runs in the parent's address space
                // (vfork, posix_spawn): no copy, one model.
                let space = if shared || read_later {
                    None
                } else {
                    self.live.get(&owner).map(|o| o.space.fork_copy(t))
                };
                if let Some(mut old) = self.live.remove(child_pid) {
                    // A pid still held: that process is gone unseen.
                    old.doubt(t, CheckReason::Lost);
                    self.ended.push(old);
                }
                let mut child = if read_later {
                    let p = self.new_process(*child_pid, SeededBy::Proc);
                    read_from_proc(p, self.source.as_mut(), self.start_ns, &ev.comm)
                } else {
                    self.new_process(*child_pid, SeededBy::Fork)
                };
                if let Some(space) = space {
                    child.space = space;
                } else if shared {
                    child.shares = Some(owner);
                    child.shared_with = Some(owner);
                }
                child.ppid = Some(ev.pid);
                child.comm.clone_from(&ev.comm);
                child.exe = exe;
                child.abi = abi;
                if !read_later {
                    child.cgroup = cg;
                }
                child.note_untraced(t);
                child.last_change = ev.ts_ns;
                self.live.insert(*child_pid, child);
                self.touched.push((*child_pid, 0));
            }
            Body::Exec {
                path,
                start_time,
                abi,
                cgroup: exec_cgroup,
                ..
            } => {
                // The old address space lives on in the processes that
                // share it; this one gets a new one.
                self.hand_over_space(ev.pid);
                let known = self.live.contains_key(&ev.pid);
                // Without history, everything from here on is reported
                // (a first sight's seeds too, and their discarding).
                let seen = self.live.get(&ev.pid).map(|p| p.space.journal().len());
                let keep_history = self.keep_history;
                let p = self.ensure(ev.pid, &ev.comm);
                p.shares = None;
                p.dirty = true;
                p.last_change = p.last_change.max(ev.ts_ns);
                // Regions read from /proc after the exec describe the new
                // program: they are not the old one's. But a stream has
                // shown those read at an earlier event (one stamped before
                // the exec, such as the exec's own stack growth, made the
                // tracker read /proc after it): they stay, for the exec to
                // end with the rest.
                let nothing_before = p
                    .space
                    .regions
                    .iter()
                    .all(|r| r.born_by == Cause::Proc && r.born_ns > t && r.died_ns.is_none());
                if !(known && p.space.keeps_journal()) {
                    p.space.discard_seeded_after(t);
                }
                let mark = if keep_history {
                    p.space.journal().len()
                } else {
                    seen.unwrap_or(0)
                };
                p.space.end_all(t, Cause::Exec);
                p.space.new_mm();
                p.mm = ev.counters.and_then(|c| c.mm);
                p.exec_at = Some(t);
                p.exe = Some(path.clone());
                p.comm.clone_from(&ev.comm);
                p.start_time = Some(*start_time);
                p.abi = *abi;
                // Container runtimes move a process after its fork, before
                // its exec: what the parent had may no longer hold.
                let cg = match exec_cgroup {
                    Some(cg) => Some((**cg).clone()),
                    None => self.source.cgroup(ev.pid),
                };
                let p = self.ensure(ev.pid, &ev.comm);
                if cg.is_some() {
                    p.cgroup = cg;
                }
                if p.seeded_by == SeededBy::Proc && nothing_before {
                    // First seen at this exec: nothing before it was known.
                    p.seeded_by = SeededBy::Exec;
                }
                p.counters.reset();
                self.touched.push((ev.pid, mark));
                let seed = match self.exec_seed.take() {
                    Some(seed) if seed.pid == ev.pid => seed,
                    _ => {
                        let from_ns = self.source.now();
                        let maps = self.source.maps(ev.pid);
                        ExecSeed {
                            pid: ev.pid,
                            maps,
                            from_ns,
                            until_ns: self.source.now(),
                            settled: true,
                            tries: 1,
                        }
                    }
                };
                let p = self.ensure(ev.pid, &ev.comm);
                p.unseeded = seed.maps.is_err();
                match seed.maps {
                    Ok(seeds) => {
                        // Everything the process did between its exec and
                        // the read is in the seed: regions born then are
                        // seeded by the exec (an mmap's or brk's own event
                        // renames the birth, see `apply_event`).
                        p.space.seed(t, &seeds, Cause::Exec);
                        p.seeded_from = seed.from_ns;
                        p.seeded_until = seed.until_ns;
                        p.trust(t);
                        p.note_untraced(t);
                        if !seed.settled {
                            // A call ran during every read: the seed may
                            // hold part of it until the next check.
                            p.doubt(t, CheckReason::Seed);
                        }
                    }
                    // Gone before its maps could be read (the exec was
                    // handled late): nothing of the new program is known,
                    // from the exec on, never to be settled.
                    _ => p.doubt(t, CheckReason::Lost),
                }
            }
            Body::Exit { status, start_time } => {
                let unseen_kill = self
                    .unseen_victims
                    .iter()
                    .position(|v| v.0 == ev.pid)
                    .and_then(|i| self.unseen_victims.remove(i))
                    .map(|v| v.1)
                    .filter(|&kill| t.saturating_sub(kill) <= UNSEEN_VICTIM_NS);
                self.ensure_touched(ev.pid, &ev.comm);
                // A space shared with others lives on in them; a sharer's
                // own is empty.
                let heir = self.hand_over_space(ev.pid);
                if let Some(mut p) = self.live.remove(&ev.pid) {
                    if let Some(kill) = unseen_kill {
                        p.oom_killed_at.get_or_insert(kill);
                    }
                    // The counters are those of the address space it
                    // leaves: the model of whoever holds it now.
                    let holder = heir.or(p.shares).and_then(|h| self.live.get(&h));
                    let check = match holder {
                        Some(h) => h.exit_check(ev.counters.as_ref(), t),
                        None => p.exit_check(ev.counters.as_ref(), t),
                    };
                    p.exit_check = Some(check);
                    p.space.end_all(t, Cause::Exit);
                    p.exit_at = Some(t);
                    p.exit_status = Some(*status);
                    p.start_time = Some(*start_time);
                    p.dirty = true;
                    self.ended.push(p);
                }
            }
            Body::OomKill { victim_pid } => {
                // The killer's context: the event belongs to the victim,
                // when it is one of the traced processes. A victim never
                // seen is not read from /proc now (it is being killed):
                // remembered, its exit (which models it) carries the kill.
                if let Some(p) = self.live.get_mut(victim_pid) {
                    p.oom_killed_at.get_or_insert(t);
                    p.dirty = true;
                } else if !self.refuse_new {
                    let victims = &mut self.unseen_victims;
                    if !victims.iter().any(|v| v.0 == *victim_pid) {
                        if victims.len() >= MAX_UNSEEN_VICTIMS {
                            victims.pop_front();
                        }
                        victims.push_back((*victim_pid, t));
                    }
                }
            }
            Body::FaultSummary { .. } | Body::Lost { .. } => {}
            Body::Fault { .. } => {
                // A fault changes no region: no need to look for changes
                // (there are many), except of a process seen first.
                let pid = self.owner_of(ev.pid);
                let coarse = self.coarse_faults;
                let p = if self.live.contains_key(&pid) {
                    self.ensure(pid, &ev.comm)
                } else {
                    self.ensure_touched(pid, &ev.comm)
                };
                p.space.coarse_faults = coarse;
                p.dirty = true;
                p.faults_since_sample += 1;
                // A fault only counts: it always applies.
                let before_seed = p.in_seed(ev);
                apply_event(&mut p.space, ev, t, before_seed);
            }
            Body::Brk { .. }
            | Body::Mmap { .. }
            | Body::Munmap { .. }
            | Body::Mremap { .. }
            | Body::Mprotect { .. }
            | Body::PkeyMprotect { .. }
            | Body::Madvise { .. }
            | Body::Mlock { .. }
            | Body::Mlock2 { .. }
            | Body::Munlock { .. }
            | Body::Mlockall { .. }
            | Body::Munlockall { .. }
            | Body::Mseal { .. }
            | Body::Shmat { .. }
            | Body::Shmdt { .. }
            | Body::RemapFilePages { .. }
            | Body::Userfaultfd { .. }
            | Body::Stack { .. } => {
                // The model of the address space the call changed.
                let pid = self.owner_of(ev.pid);
                let p = self.ensure_touched(pid, &ev.comm);
                let before_seed = p.in_seed(ev);
                // An attached segment's extent is not in the call: read it.
                let segment = match ev.body {
                    Body::Shmat {
                        shmid,
                        flags,
                        ret: SysResult::Ok(addr),
                        ..
                    } if !before_seed => Some(self.shm_segment(ev.pid, addr, shmid, flags)),
                    _ => None,
                };
                let p = self.ensure(pid, &ev.comm);
                p.dirty = true;
                p.last_change = p.last_change.max(ev.ts_ns);
                if let Some(mm) = ev.counters.and_then(|c| c.mm) {
                    p.mm = Some(mm);
                }
                // A break moved during the seed's read, not already in it:
                // the read may have seen the heap end anywhere, so it is
                // made to end where the call found it first.
                if let Body::Brk {
                    old_brk: Some(old_brk),
                    new_brk,
                    start_brk,
                    ..
                } = ev.body
                {
                    if !before_seed && ev.ts_ns < p.seeded_until {
                        p.space.reset_break(t, start_brk, old_brk, new_brk);
                    }
                }
                let applied = match segment {
                    Some(seg) => apply_shmat(&mut p.space, ev, t, seg),
                    None => apply_event(&mut p.space, ev, t, before_seed),
                };
                match applied {
                    Applied::Done => {}
                    // No region started where the stack grew: the model is
                    // out of step, unless an exec is under way (see
                    // `stack_mismatch`; nor are the counters worth comparing
                    // then).
                    Applied::OutOfStep if matches!(ev.body, Body::Stack { .. }) => {
                        p.stack_mismatch = Some(t);
                        return;
                    }
                    Applied::OutOfStep => p.doubt(t, CheckReason::Lost),
                    Applied::Unsure => p.doubt(t, CheckReason::Partial),
                }
                // The snapshot the model was seeded from is later than the
                // event: the counters describe an earlier state.
                if let (false, Some(c)) = (before_seed, &ev.counters) {
                    p.follow_kernel(ev, c, t);
                    p.check_counters(ev, c, t);
                }
            }
        }
    }

    /// The SysV segment `shmid` that `pid` attached at `addr` with `flags`
    /// (shmat's), as /proc/PID/maps shows it: its pieces from `addr` on, at
    /// their places in the segment. None when it is not there (any more).
    fn shm_segment(&mut self, pid: u32, addr: u64, shmid: i32, flags: u64) -> Option<Seed> {
        let maps = self.source.maps(pid).ok()?;
        let first = maps.iter().position(|s| s.start == addr)?;
        let ino = match &maps[first].backing {
            Backing::Shm { ino, .. } if maps[first].backing.is_sysv() => *ino,
            _ => return None,
        };
        if u64::try_from(shmid).ok() != Some(ino) || maps[first].offset != 0 {
            return None;
        }
        let mut end = maps[first].end;
        for s in &maps[first + 1..] {
            let same = matches!(s.backing, Backing::Shm { ino: i, .. } if i == ino);
            if s.start != end || !same || s.offset != s.start - addr {
                break;
            }
            end = s.end;
        }
        // The protection the call asked for (later calls may have changed
        // the maps' since).
        let prot = libc::PROT_READ as u64
            | if flags & libc::SHM_RDONLY as u64 != 0 {
                0
            } else {
                libc::PROT_WRITE as u64
            }
            | if flags & libc::SHM_EXEC as u64 != 0 {
                libc::PROT_EXEC as u64
            } else {
                0
            };
        Some(Seed {
            start: addr,
            end,
            perms: Perms::from_prot(prot, true),
            offset: 0,
            backing: maps[first].backing.clone(),
        })
    }

    /// What the current event changed, in print order: births, deaths and
    /// changes first, then merges (which the kernel makes last) and the
    /// regions they absorbed; but a merge that a later change of the same
    /// region follows (the kernel's edges undoing a merge the rules made)
    /// is printed before that change, so each region's last record is its
    /// extent. Empty when the tracker keeps history (no
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
                    keep_last_uncertain(p);
                }
            }
        }
        self.touched.clear();
        std::mem::take(&mut self.ended)
    }

    /// The processes the current event touched (live or just ended), each
    /// once, in the order the event touched them.
    pub fn touched(&self) -> Vec<&Process> {
        let mut out: Vec<&Process> = Vec::new();
        for &(pid, _) in &self.touched {
            let p = self
                .live
                .get(&pid)
                .or_else(|| self.ended.iter().rev().find(|p| p.pid == pid));
            if let Some(p) = p {
                if !out.iter().any(|o| o.seq == p.seq) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// Every process's model may be out of step from `now_ns` (events were
    /// lost).
    pub fn doubt_all(&mut self, now_ns: u64) {
        let t = self.rel(now_ns);
        for p in self.live.values_mut() {
            p.doubt(t, CheckReason::Lost);
        }
    }

    /// Compares `pid`'s model with `snapshot`, read at `t0` (monotonic)
    /// when the model held every event before the read and none after it.
    /// Differences resync the model.
    pub fn compare(&mut self, pid: u32, t0: u64, snapshot: &[Seed]) -> Option<Comparison> {
        let t = self.rel(t0);
        let pid = self.owner_of(pid);
        // A process moved to another cgroup without an exec (by systemd,
        // a runtime, an admin) shows it from its next check on.
        let cg = self.source.cgroup(pid);
        let p = self.live.get_mut(&pid)?;
        if cg.is_some() {
            p.cgroup = cg;
        }
        if !self.keep_history {
            // What the events did was reported: the journal holds only what
            // the resync does, for the sink's `check`.
            p.space.forget_dead();
            keep_last_uncertain(p);
        }
        let model: Vec<Seed> = p.space.live().map(seed_of).collect();
        let differences = maps::diff(&model, snapshot);
        if !differences.is_empty() {
            p.space.resync(t, snapshot);
        }
        p.unseeded = false;
        if let Some(r) = p.counters.checked(!differences.is_empty(), p.last_change) {
            log::debug!(
                "pid {pid}: the maps explain no difference of counters; expected from now on: {}",
                r.describe()
            );
        }
        p.trust(t);
        Some(Comparison {
            t_ns: t,
            regions: snapshot.len() as u64,
            differences,
            against: CheckBasis::Maps,
            void: None,
            residual: None,
        })
    }

    /// Hands over every process still alive (at the end of the session).
    pub fn drain(&mut self) -> Vec<Process> {
        let mut all: Vec<Process> = self.live.drain().map(|(_, p)| p).collect();
        all.sort_by_key(|p| p.seq);
        all
    }
}

/// Without history, a process keeps only its last closed interval of
/// uncertainty (the sinks have seen the others).
fn keep_last_uncertain(p: &mut Process) {
    if p.uncertain.len() > 1 {
        p.uncertain.drain(..p.uncertain.len() - 1);
    }
}

/// Process `p` (new) as /proc shows it: its address space as read now.
/// One whose maps cannot be read, or are empty (it is exiting: its address
/// space is gone), is in doubt from now on and unseeded (its exit is not
/// compared with a model that never held anything).
fn read_from_proc(
    mut p: Process,
    source: &mut dyn ProcSource,
    start_ns: u64,
    comm: &[u8],
) -> Process {
    let t = source.now().saturating_sub(start_ns);
    p.comm = comm.to_vec();
    (p.ppid, p.exe) = source.describe(p.pid);
    p.abi = source.abi(p.pid);
    p.cgroup = source.cgroup(p.pid);
    p.note_untraced(t);
    let from = source.now();
    match source.maps(p.pid) {
        Ok(seeds) if !seeds.is_empty() => {
            p.space.seed(t, &seeds, Cause::Proc);
            p.seeded_from = from;
            p.seeded_until = source.now();
        }
        // Gone already, or not readable: what we know is uncertain.
        _ => {
            p.unseeded = true;
            p.doubt(t, CheckReason::Lost);
        }
    }
    p
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
                    // A merge the kernel's edges then undid (the rules
                    // merged, the kernel did not): in the order made.
                    if merges.iter().any(|m| std::ptr::eq(m.region, r)) {
                        out.append(&mut merges);
                        out.append(&mut merged);
                    }
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
        maps: std::collections::HashMap<u32, Vec<Seed>>,
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

        fn abi(&mut self, _pid: u32) -> Option<Abi> {
            Some(Abi::X86_64)
        }

        fn cgroup(&mut self, pid: u32) -> Option<Cgroup> {
            self.maps.contains_key(&pid).then(|| cg(b"/found"))
        }

        fn now(&mut self) -> u64 {
            self.now += 1;
            self.now
        }
    }

    fn cg(path: &[u8]) -> Cgroup {
        Cgroup {
            v2: Some(b"/".to_vec()),
            v2_id: Some(1),
            v1_memory: Some(path.to_vec()),
        }
    }

    /// Found running: read; forked: the parent's; exec'd: what the exec
    /// found (a runtime moved it in between), else read again; checked:
    /// read again.
    #[test]
    fn cgroups_are_read_inherited_and_reread_at_exec() {
        let mut t = tracker(false, &[(7, vec![seed(0x10000, 1)])]);
        t.apply(&ev(
            5000,
            7,
            Body::Fork {
                child_pid: 8,
                clone_flags: 0,
            },
        ));
        t.end_event();
        assert_eq!(t.get(7).unwrap().cgroup, Some(cg(b"/found")));
        assert_eq!(t.get(8).unwrap().cgroup, Some(cg(b"/found")));
        t.apply(&ev(
            6000,
            8,
            Body::Exec {
                path: b"/bin/y".to_vec(),
                old_pid: 8,
                start_time: 42,
                abi: None,
                cgroup: Some(Box::new(cg(b"/docker/abc"))),
            },
        ));
        t.end_event();
        assert_eq!(t.get(8).unwrap().cgroup, Some(cg(b"/docker/abc")));
        // Not told by the exec: the kernel's answer now (gone: kept).
        t.apply(&ev(
            7000,
            8,
            Body::Exec {
                path: b"/bin/z".to_vec(),
                old_pid: 8,
                start_time: 42,
                abi: None,
                cgroup: None,
            },
        ));
        t.end_event();
        assert_eq!(t.get(8).unwrap().cgroup, Some(cg(b"/docker/abc")));
        // Moved without an exec: seen at the next check.
        t.get_mut(7).unwrap().cgroup = Some(cg(b"/before"));
        let snapshot = vec![seed(0x10000, 1)];
        assert!(t.compare(7, 8000, &snapshot).is_some());
        assert_eq!(t.get(7).unwrap().cgroup, Some(cg(b"/found")));
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
            counters: None,
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

    /// A process gone unseen is retired in doubt; while new processes are
    /// refused, a fork makes no child and the events of unknown processes
    /// change nothing.
    #[test]
    fn retired_and_refused_processes() {
        let mut t = tracker(false, &[(7, vec![seed(0x10000, 2)])]);
        t.apply(&ev(
            5000,
            7,
            Body::Fork {
                child_pid: 8,
                clone_flags: 0,
            },
        ));
        let _ = t.end_event();
        t.retire(8, 6000);
        let ended = t.end_event();
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].pid, 8);
        assert!(ended[0].uncertain_since.is_some(), "its end is in doubt");
        assert!(ended[0].exit_at.is_none());
        assert!(t.get(8).is_none());
        t.degrade(true, true);
        t.apply(&ev(
            7000,
            7,
            Body::Fork {
                child_pid: 9,
                clone_flags: 0,
            },
        ));
        assert!(t.get(9).is_none(), "no child while refusing");
        assert!(t.refuses(&ev(
            8000,
            9,
            Body::Exit {
                status: 0,
                start_time: 1
            }
        )));
        t.apply(&ev(
            8000,
            9,
            Body::Exit {
                status: 0,
                start_time: 1,
            },
        ));
        assert!(t.end_event().is_empty());
        assert!(t.get(7).is_some(), "the known process goes on");
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

    /// The OOM kill comes in the killer's context: it marks the victim,
    /// whose exit carries it; a victim never seen is not read from /proc.
    #[test]
    fn an_oom_kill_marks_its_victim() {
        let mut t = tracker(false, &[(7, vec![seed(0x10000, 1)])]);
        t.apply(&ev(5000, 7, mmap(0x20000, 1)));
        t.end_event();
        // Killer 9 (never seen), victims 7 and 11 (never seen).
        t.apply(&ev(6000, 9, Body::OomKill { victim_pid: 7 }));
        t.apply(&ev(6100, 9, Body::OomKill { victim_pid: 11 }));
        t.end_event();
        assert!(t.get(9).is_none() && t.get(11).is_none());
        assert_eq!(t.get(7).unwrap().oom_killed_at, Some(6000));
        t.apply(&ev(
            7000,
            7,
            Body::Exit {
                status: 9,
                start_time: 42,
            },
        ));
        let ended = t.end_event();
        assert_eq!(ended[0].oom_killed_at, Some(6000));
    }

    /// A victim the model never saw (a quiet process of a system-wide
    /// recording) is remembered until its exit, which carries the kill;
    /// a fork that reuses the pid, or the kill's age, forgets it; at most
    /// MAX_UNSEEN_VICTIMS are remembered.
    #[test]
    fn an_oom_kill_of_an_unseen_process_reaches_its_exit() {
        let exit = |ts, pid| {
            ev(
                ts,
                pid,
                Body::Exit {
                    status: 9,
                    start_time: 42,
                },
            )
        };
        let mut t = tracker(false, &[(7, vec![seed(0x10000, 1)])]);
        t.apply(&ev(6000, 9, Body::OomKill { victim_pid: 11 }));
        t.apply(&ev(6050, 9, Body::OomKill { victim_pid: 11 })); // told twice
        t.apply(&ev(6100, 9, Body::OomKill { victim_pid: 12 }));
        t.apply(&ev(6200, 9, Body::OomKill { victim_pid: 13 }));
        t.end_event();
        assert!(t.get(11).is_none(), "a victim is not read from /proc");
        t.apply(&exit(7000, 11));
        let ended = t.end_event();
        assert_eq!((ended[0].pid, ended[0].oom_killed_at), (11, Some(6000)));
        // 12's pid is taken by a new process before its exit is seen.
        t.apply(&ev(
            7100,
            7,
            Body::Fork {
                child_pid: 12,
                clone_flags: 0,
            },
        ));
        t.end_event();
        t.apply(&exit(7200, 12));
        let ended = t.end_event();
        assert_eq!((ended[0].pid, ended[0].oom_killed_at), (12, None));
        // 13's exit comes too late to be its.
        let late = 6200 + UNSEEN_VICTIM_NS + 1;
        t.apply(&exit(late, 13));
        let ended = t.end_event();
        assert_eq!((ended[0].pid, ended[0].oom_killed_at), (13, None));
        // Bounded: the oldest is forgotten.
        for pid in 100..=(100 + MAX_UNSEEN_VICTIMS as u32) {
            t.apply(&ev(late + 100, 9, Body::OomKill { victim_pid: pid }));
        }
        assert_eq!(t.unseen_victims.len(), MAX_UNSEEN_VICTIMS);
        t.apply(&exit(late + 200, 100));
        assert_eq!(t.end_event()[0].oom_killed_at, None);
        t.apply(&exit(late + 200, 101));
        assert_eq!(t.end_event()[0].oom_killed_at, Some(late + 100));
    }

    /// A CLONE_VM child (vfork, posix_spawn) changes its parent's model;
    /// its exec leaves the parent's alone.
    #[test]
    fn a_clone_vm_child_shares_its_parent_s_model() {
        let mut t = tracker(
            false,
            &[(7, vec![seed(0x10000, 2)]), (8, vec![seed(0x90000, 1)])],
        );
        t.apply(&ev(
            5000,
            7,
            Body::Fork {
                child_pid: 8,
                clone_flags: CLONE_VM | 0x4000, // CLONE_VFORK
            },
        ));
        // The parent's regions found running; the child has no copies.
        assert_eq!(ops(&t), [(7, "born")]);
        t.end_event();
        assert_eq!(t.get(8).unwrap().shares, Some(7));
        assert!(t.get(8).unwrap().space.regions.is_empty());
        assert_eq!(t.pids(), [7]);

        t.apply(&ev(5100, 8, mmap(0x20000, 1)));
        assert_eq!(ops(&t), [(7, "born")]);
        t.end_event();
        assert_eq!(t.get(7).unwrap().space.live().count(), 2);

        // The child's exec gives it an address space of its own.
        t.apply(&ev(
            5200,
            8,
            Body::Exec {
                path: b"/bin/true".to_vec(),
                start_time: 1,
                old_pid: 8,
                abi: None,
                cgroup: None,
            },
        ));
        t.end_event();
        assert_eq!(t.get(8).unwrap().shares, None);
        assert_eq!(t.get(8).unwrap().space.live().count(), 1);
        assert_eq!(t.get(7).unwrap().space.live().count(), 2);
    }

    /// A process leaving an address space that others share hands its
    /// model over: the regions live on.
    #[test]
    fn a_shared_space_outlives_its_first_owner() {
        let mut t = tracker(false, &[(7, vec![seed(0x10000, 2)])]);
        t.apply(&ev(
            5000,
            7,
            Body::Fork {
                child_pid: 8,
                clone_flags: CLONE_VM,
            },
        ));
        t.end_event();
        t.apply(&ev(
            6000,
            7,
            Body::Exit {
                status: 0,
                start_time: 42,
            },
        ));
        // Nothing died: the space is pid 8's now.
        assert!(ops(&t).is_empty(), "{:?}", ops(&t));
        let ended = t.end_event();
        assert_eq!(ended.len(), 1);
        assert!(ended[0].space.regions.is_empty());
        let heir = t.get(8).unwrap();
        assert_eq!(heir.shares, None);
        assert_eq!(heir.space.live().count(), 1);
        assert_eq!(t.pids(), [8]);
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
                abi: None,
                cgroup: None,
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
                abi: None,
                cgroup: None,
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
            abi: None,
            cgroup: None,
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

    fn exec(ts: u64, pid: u32) -> Event {
        ev(
            ts,
            pid,
            Body::Exec {
                path: b"/bin/y".to_vec(),
                old_pid: pid,
                start_time: 42,
                abi: None,
                cgroup: None,
            },
        )
    }

    fn exec_seed(
        pid: u32,
        maps: Vec<Seed>,
        from_ns: u64,
        until_ns: u64,
        settled: bool,
    ) -> ExecSeed {
        ExecSeed {
            pid,
            maps: Ok(maps),
            from_ns,
            until_ns,
            settled,
            tries: 1,
        }
    }

    #[test]
    fn calls_before_a_settled_exec_seed_are_in_it_later_ones_apply() {
        let mut t = tracker(false, &[]);
        // The seed, read from 6100 to 6200, already holds the mmap at
        // 0x20000 (made at 6050).
        t.set_exec_seed(exec_seed(
            7,
            vec![seed(0x50000, 1), seed(0x20000, 1)],
            6100,
            6200,
            true,
        ));
        t.apply(&exec(6000, 7));
        t.end_event();
        t.apply(&ev(6050, 7, mmap(0x20000, 1)));
        assert!(ops(&t).is_empty(), "not applied twice: {:?}", ops(&t));
        t.end_event();
        t.apply(&ev(6300, 7, mmap(0x30000, 1)));
        assert_eq!(ops(&t), [(7, "born")]);
        t.end_event();
        let p = t.get(7).unwrap();
        let live: Vec<(u64, Cause)> = p.space.live().map(|r| (r.start, r.born_by)).collect();
        assert_eq!(
            live,
            [
                (0x20000, Cause::Mmap),
                (0x30000, Cause::Mmap),
                (0x50000, Cause::Exec)
            ]
        );
        assert_eq!((p.uncertain_since, p.recheck), (None, None));
    }

    #[test]
    fn an_unsettled_exec_seed_is_uncertain_until_checked() {
        let mut t = tracker(true, &[]);
        t.expect_exec(7);
        t.set_exec_seed(exec_seed(7, vec![seed(0x50000, 1)], 6100, 6200, false));
        t.apply(&exec(6000, 7));
        t.end_event();
        let p = t.get(7).unwrap();
        assert_eq!(
            (p.uncertain_since, p.recheck),
            (Some(6000), Some(CheckReason::Seed))
        );
        t.compare(7, 9000, &[seed(0x50000, 1)]).unwrap();
        let p = t.get(7).unwrap();
        assert_eq!(p.recheck, None);
        assert_eq!(
            p.uncertain,
            [Uncertain {
                from_ns: 6000,
                to_ns: Some(9000)
            }]
        );
    }

    /// A call ran during every read of the exec seed: the calls stamped
    /// during the read are applied over it (the read may hold any part of
    /// them), so what it missed is not lost.
    #[test]
    fn calls_during_an_unsettled_exec_seed_are_applied() {
        let mut t = tracker(true, &[]);
        t.expect_exec(7);
        // Read from 6100 to 6200: it saw 0x50000 (unmapped at 6160) and
        // missed 0x20000 (mapped at 6150).
        t.set_exec_seed(exec_seed(
            7,
            vec![
                seed(0x50000, 1),
                seed(0x70000, 2),
                Seed {
                    backing: Backing::Heap,
                    ..seed(0x80000, 3)
                },
            ],
            6100,
            6200,
            false,
        ));
        t.apply(&exec(6000, 7));
        t.end_event();
        t.apply(&ev(6150, 7, mmap(0x20000, 1)));
        t.end_event();
        t.apply(&ev(
            6160,
            7,
            Body::Munmap {
                addr: 0x50000,
                len: PAGE,
                ret: SysResult::Ok(0),
            },
        ));
        t.end_event();
        // A move already in the read is not made again.
        t.apply(&ev(
            6170,
            7,
            Body::Mremap {
                old_addr: 0x60000,
                old_len: PAGE,
                new_len: 2 * PAGE,
                flags: 1,
                new_addr: 0,
                ret: SysResult::Ok(0x70000),
            },
        ));
        t.end_event();
        // Nor the break's moves the read already holds; those it does not
        // hold set the heap's end where they left it.
        for (i, (old, new)) in [(0x80000, 0x80000), (0x80000, 0x81000), (0x81000, 0x83000)]
            .into_iter()
            .enumerate()
        {
            t.apply(&ev(
                6180 + i as u64,
                7,
                Body::Brk {
                    requested: new,
                    old_brk: Some(old),
                    new_brk: new,
                    start_brk: 0x80000,
                },
            ));
            t.end_event();
        }
        let p = t.get(7).unwrap();
        let live: Vec<(u64, u64)> = p.space.live().map(|r| (r.start, r.end)).collect();
        assert_eq!(
            live,
            [(0x20000, 0x21000), (0x70000, 0x72000), (0x80000, 0x83000)]
        );
        assert_eq!(p.recheck, Some(CheckReason::Seed));
    }

    /// Calls to brk during an unsettled seed's read: the read saw the heap
    /// end further on (it grew later); shrinking from where each call found
    /// it and growing again leave one heap ending at the last break.
    #[test]
    fn breaks_during_an_unsettled_seed_leave_one_heap() {
        let mut t = tracker(true, &[]);
        t.expect_exec(7);
        t.set_exec_seed(exec_seed(
            7,
            vec![Seed {
                backing: Backing::Heap,
                ..seed(0x80000, 16)
            }],
            6100,
            6200,
            false,
        ));
        t.apply(&exec(6000, 7));
        t.end_event();
        for (i, (old, new)) in [(0x83000, 0x82000), (0x82000, 0x81000), (0x81000, 0x85000)]
            .into_iter()
            .enumerate()
        {
            t.apply(&ev(
                6150 + i as u64,
                7,
                Body::Brk {
                    requested: new,
                    old_brk: Some(old),
                    new_brk: new,
                    start_brk: 0x80000,
                },
            ));
            t.end_event();
        }
        let p = t.get(7).unwrap();
        let live: Vec<(u64, u64)> = p.space.live().map(|r| (r.start, r.end)).collect();
        assert_eq!(live, [(0x80000, 0x85000)]);
    }

    /// The parent's exec was handled (and its address space read) after
    /// it forked: its model may hold what it did since, which the child
    /// does not have. The child is read from /proc, not copied.
    #[test]
    fn a_child_forked_before_its_parent_s_seed_is_read_from_proc() {
        let mut t = tracker(true, &[(8, vec![seed(0x50000, 1)])]);
        t.expect_exec(7);
        // 0x60000 was mapped at 6080, after the fork at 6050.
        t.set_exec_seed(exec_seed(
            7,
            vec![seed(0x50000, 1), seed(0x60000, 1)],
            6100,
            6200,
            true,
        ));
        t.apply(&exec(6000, 7));
        t.end_event();
        t.apply(&ev(
            6050,
            7,
            Body::Fork {
                child_pid: 8,
                clone_flags: 0,
            },
        ));
        t.end_event();
        let child = t.get(8).unwrap();
        assert_eq!(child.seeded_by, SeededBy::Proc);
        assert_eq!(child.ppid, Some(7));
        let live: Vec<u64> = child.space.live().map(|r| r.start).collect();
        assert_eq!(live, [0x50000]);
        assert_eq!(child.space.regions[0].born_by, Cause::Proc);
    }

    /// First seen at its exit: /proc shows nothing (its address space is
    /// gone), so there is no model to compare, and the check says so
    /// rather than finding every VMA missing.
    #[test]
    fn a_process_first_seen_at_its_exit_is_not_compared() {
        let mut t = tracker(true, &[(9, Vec::new())]);
        let exit = counted(
            ev(
                7000,
                9,
                Body::Exit {
                    status: 0,
                    start_time: 42,
                },
            ),
            36,
            700,
        );
        t.apply(&exit);
        let p = t.end_event().pop().unwrap();
        let c = p.exit_check.unwrap();
        assert_eq!(c.void, Some(VoidReason::Unseeded));
        assert!(c.differences.is_empty());
    }

    #[test]
    fn exit_is_checked_by_counters_or_said_void() {
        let exit = |ts| {
            ev(
                ts,
                7,
                Body::Exit {
                    status: 0,
                    start_time: 42,
                },
            )
        };
        let run = |counters: Option<(bool, u64)>, seeded: bool| {
            let mut t = tracker(true, &[]);
            t.expect_exec(7);
            let maps = vec![seed(0x50000, 2)];
            let mut s = exec_seed(7, maps, 6100, 6200, true);
            if !seeded {
                s.maps = Err(std::io::ErrorKind::NotFound.into());
            }
            t.set_exec_seed(s);
            t.apply(&exec(6000, 7));
            t.end_event();
            let mut e = exit(7000);
            if let Some((settled, vmas)) = counters {
                e = counted(e, vmas, 2);
                e.counters.as_mut().unwrap().settled = settled;
            }
            t.apply(&e);
            let mut ended = t.end_event();
            ended.pop().unwrap().exit_check.unwrap()
        };
        let c = run(Some((true, 1)), true);
        assert_eq!(
            (c.against, c.void, c.regions),
            (CheckBasis::Counters, None, 1)
        );
        assert!(c.differences.is_empty());
        let c = run(Some((true, 2)), true);
        assert_eq!(c.differences.len(), 1);
        assert_eq!(c.residual.as_deref(), Some("map_count +1"));
        assert_eq!(run(None, true).void, Some(VoidReason::NoAddressSpace));
        assert_eq!(
            run(Some((false, 1)), true).void,
            Some(VoidReason::Unsettled)
        );
        assert_eq!(run(Some((true, 1)), false).void, Some(VoidReason::Unseeded));
    }

    #[test]
    fn a_process_gone_before_its_exec_seed_is_uncertain_from_the_exec() {
        let mut t = tracker(true, &[]);
        t.expect_exec(7);
        let mut s = exec_seed(7, Vec::new(), 9100, 9200, true);
        s.maps = Err(std::io::ErrorKind::NotFound.into());
        t.set_exec_seed(s);
        t.apply(&exec(6000, 7));
        t.end_event();
        t.apply(&ev(
            7000,
            7,
            Body::Exit {
                status: 0,
                start_time: 42,
            },
        ));
        let p = t.end_event().pop().unwrap();
        // Not from the read, handled after the exit.
        assert_eq!(p.uncertain_since, Some(6000));
        assert_eq!(p.exit_at, Some(7000));
    }

    #[test]
    fn a_stack_growth_during_the_seed_read_is_in_it_when_the_stack_is_there() {
        let stack = |start: u64| Seed {
            start,
            end: 0x80000,
            perms: Perms::from_prot(3, false),
            offset: 0,
            backing: Backing::Stack,
        };
        let grow = |ts, old_start, new_start| {
            ev(
                ts,
                7,
                Body::Stack {
                    old_start,
                    new_start,
                    source: crate::event::StackSource::Fault,
                },
            )
        };
        let mut t = tracker(false, &[]);
        t.expect_exec(7);
        t.set_exec_seed(exec_seed(7, vec![stack(0x70000)], 6100, 6200, true));
        t.apply(&exec(6000, 7));
        t.end_event();
        // Stamped during the read, already in it.
        t.apply(&grow(6150, 0x71000, 0x70000));
        assert!(ops(&t).is_empty());
        t.end_event();
        // Stamped during the read, not in it: applied.
        t.apply(&grow(6160, 0x70000, 0x6f000));
        assert_eq!(ops(&t), [(7, "grow")]);
        t.end_event();
        assert_eq!(t.get(7).unwrap().recheck, None);
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
        assert_eq!(c.differences[0].kind, "extra");
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

    /// Settled counters of `vmas` VMAs and `pages` private writable pages.
    fn counted(mut e: Event, vmas: u64, pages: u64) -> Event {
        e.counters = Some(Counters {
            settled: true,
            map_count: Some(vmas),
            total_vm: Some(pages),
            locked_vm: Some(0),
            data_vm: Some(pages),
            exec_vm: Some(0),
            stack_vm: Some(0),
            mm: None,
            vmas: Default::default(),
        });
        e
    }

    #[test]
    fn counters_that_agree_leave_the_model_trusted() {
        let mut t = tracker(true, &[(7, vec![seed(0x10000, 1)])]);
        t.apply(&ev(5000, 7, mmap(0x20000, 1)));
        t.end_event();
        t.apply(&counted(ev(6000, 7, mmap(0x30000, 2)), 3, 4));
        t.end_event();
        let p = t.get(7).unwrap();
        assert_eq!((p.uncertain_since, p.recheck), (None, None));
        assert_eq!((p.counters.compared, p.counters.mismatches), (1, 0));
    }

    #[test]
    fn a_change_the_model_missed_is_caught_at_the_next_event() {
        let mut t = tracker(true, &[(7, vec![seed(0x10000, 1)])]);
        t.apply(&ev(5000, 7, mmap(0x20000, 1)));
        t.end_event();
        // The kernel has one VMA and one page more than the model: an
        // unseen mapping.
        t.apply(&counted(ev(6000, 7, mmap(0x30000, 1)), 4, 4));
        t.end_event();
        let p = t.get(7).unwrap();
        assert_eq!(p.uncertain_since, Some(6000));
        assert_eq!(p.recheck, Some(CheckReason::Counters));
        assert_eq!(p.counters.mismatches, 1);
        // Doubted: the next events are not compared again.
        t.apply(&counted(ev(6500, 7, mmap(0x50000, 1)), 5, 5));
        t.end_event();
        assert_eq!(t.get(7).unwrap().counters.mismatches, 1);
        // The check finds the mapping and resyncs: trusted again, nothing
        // learnt.
        let maps = [
            seed(0x10000, 1),
            seed(0x20000, 1),
            seed(0x30000, 1),
            seed(0x40000, 1),
            seed(0x50000, 1),
        ];
        let c = t.compare(7, 7000, &maps).unwrap();
        assert_eq!(c.differences.len(), 1);
        let p = t.get(7).unwrap();
        assert_eq!((p.uncertain_since, p.recheck), (None, None));
        assert_eq!(
            p.uncertain,
            [Uncertain {
                from_ns: 6000,
                to_ns: Some(7000)
            }]
        );
        t.apply(&counted(ev(8000, 7, mmap(0x60000, 1)), 6, 6));
        t.end_event();
        assert_eq!(t.get(7).unwrap().recheck, None);
    }

    #[test]
    fn what_the_maps_do_not_show_is_learnt() {
        let mut t = tracker(true, &[(7, vec![seed(0x10000, 1)])]);
        t.apply(&ev(5000, 7, mmap(0x20000, 1)));
        t.end_event();
        // Two pages locked by a driver, say: locked_vm is 2.
        let mut e = counted(ev(6000, 7, mmap(0x30000, 1)), 3, 3);
        e.counters.as_mut().unwrap().locked_vm = Some(2);
        t.apply(&e);
        t.end_event();
        assert_eq!(t.get(7).unwrap().recheck, Some(CheckReason::Counters));
        // The maps are the model's: the difference is the kernel's own.
        let maps = [seed(0x10000, 1), seed(0x20000, 1), seed(0x30000, 1)];
        assert!(t.compare(7, 7000, &maps).unwrap().differences.is_empty());
        let mut e = counted(ev(8000, 7, mmap(0x40000, 1)), 4, 4);
        e.counters.as_mut().unwrap().locked_vm = Some(2);
        t.apply(&e);
        t.end_event();
        let p = t.get(7).unwrap();
        assert_eq!((p.recheck, p.counters.mismatches), (None, 1));
    }

    #[test]
    fn unsettled_counters_are_not_compared() {
        let mut t = tracker(true, &[(7, vec![seed(0x10000, 1)])]);
        t.apply(&ev(5000, 7, mmap(0x20000, 1)));
        t.end_event();
        let mut e = counted(ev(6000, 7, mmap(0x30000, 1)), 9, 9);
        e.counters.as_mut().unwrap().settled = false;
        t.apply(&e);
        t.end_event();
        let p = t.get(7).unwrap();
        assert_eq!((p.recheck, p.counters.compared), (None, 0));
    }

    #[test]
    fn a_stack_growth_on_its_way_is_not_drift_for_long() {
        let stack = Seed {
            start: 0x7ff0_0000,
            end: 0x7ff0_2000,
            perms: Perms::from_prot(3, false),
            offset: 0,
            backing: Backing::Stack,
        };
        let mut t = tracker(true, &[(7, vec![stack])]);
        t.apply(&ev(5000, 7, mmap(0x20000, 1)));
        t.end_event();
        // Another thread's fault grew the stack by a page; its event is
        // on its way.
        let grown = |ts: u64| {
            let mut e = counted(ev(ts, 7, mmap(0x30000 + ts, 1)), 3, 5);
            let c = e.counters.as_mut().unwrap();
            (c.data_vm, c.stack_vm) = (Some(2), Some(3));
            e
        };
        t.apply(&grown(6000));
        t.end_event();
        assert_eq!(t.get(7).unwrap().recheck, None);
        // Still not reported well after: drift.
        t.apply(&grown(6000 + 2_000_000));
        t.end_event();
        let p = t.get(7).unwrap();
        assert_eq!(p.recheck, Some(CheckReason::Counters));
        assert_eq!(p.uncertain_since, Some(6000 + 2_000_000));
    }

    #[test]
    fn a_difference_gone_by_the_check_is_not_learnt() {
        let mut t = tracker(true, &[(7, vec![seed(0x10000, 1)])]);
        t.apply(&ev(5000, 7, mmap(0x20000, 1)));
        t.end_event();
        t.apply(&counted(ev(6000, 7, mmap(0x30000, 1)), 4, 4));
        t.end_event();
        // More changes before the check: what the counters saw may be gone.
        t.apply(&ev(6500, 7, mmap(0x40000, 1)));
        t.end_event();
        let maps = [
            seed(0x10000, 1),
            seed(0x20000, 1),
            seed(0x30000, 1),
            seed(0x40000, 1),
        ];
        assert!(t.compare(7, 7000, &maps).unwrap().differences.is_empty());
        // Nothing was learnt: the same difference is doubted again.
        t.apply(&counted(ev(8000, 7, mmap(0x50000, 1)), 6, 6));
        t.end_event();
        let p = t.get(7).unwrap();
        assert_eq!(
            (p.recheck, p.counters.mismatches),
            (Some(CheckReason::Counters), 2)
        );
    }

    #[test]
    fn a_32_bit_program_stays_uncertain_from_its_exec_to_its_end() {
        let mut t = tracker(true, &[(7, vec![seed(0x10000, 1)]), (8, vec![])]);
        t.apply(&ev(5000, 7, mmap(0x20000, 1)));
        t.end_event();
        t.apply(&ev(
            6000,
            7,
            Body::Exec {
                path: b"/opt/t32".to_vec(),
                old_pid: 7,
                start_time: 42,
                abi: Some(Abi::I386),
                cgroup: None,
            },
        ));
        t.end_event();
        let p = t.get(7).unwrap();
        assert!(p.untraced());
        assert_eq!((p.uncertain_since, p.recheck), (Some(6000), None));
        // Its counters say nothing the model could follow: not compared.
        t.apply(&counted(ev(7000, 7, mmap(0x30000, 1)), 9, 9));
        t.end_event();
        assert_eq!(t.get(7).unwrap().counters.compared, 0);
        // A check resyncs it; it stays uncertain.
        t.compare(7, 8000, &[seed(0x50000, 1)]).unwrap();
        assert_eq!(t.get(7).unwrap().uncertain_since, Some(6000));
        // A child runs the same program.
        t.apply(&ev(
            9000,
            7,
            Body::Fork {
                child_pid: 8,
                clone_flags: 0,
            },
        ));
        t.end_event();
        let child = t.get(8).unwrap();
        assert_eq!(
            (child.abi, child.uncertain_since),
            (Some(Abi::I386), Some(9000))
        );
        // Exec of a 64-bit program: trusted again at its exec.
        t.apply(&ev(
            10000,
            8,
            Body::Exec {
                path: b"/bin/y".to_vec(),
                old_pid: 8,
                start_time: 43,
                abi: Some(Abi::X86_64),
                cgroup: None,
            },
        ));
        t.end_event();
        let child = t.get(8).unwrap();
        assert_eq!(child.uncertain_since, None);
        assert_eq!(
            child.uncertain,
            [Uncertain {
                from_ns: 9000,
                to_ns: Some(10000)
            }]
        );
    }
}
