//! The session's hand on the kernel and on traced processes: what no sink
//! may do.
//!
//! - [`FaultSummaries`] turns the kernel's per-process fault counters
//!   (`--faults summary`) into `fault_summary` events, and forgets each
//!   process's counters at its exit, so the kernel map holds live
//!   processes only.
//! - [`continue_after_exec`] lets a command stopped by the kernel at exec
//!   run once its new address space has been read.
//! - [`LiveProbe`] is what the [`super::checker::Checker`] reads of a
//!   running process.

use std::collections::HashMap;

use tracer_common::{EventKind, FaultCounts};

use super::checker::Probe;
use crate::{
    event::{Body, Event},
    kernel::{clock, proc, Hooks},
    model::{maps, Seed},
};

/// Fault counters already reported, per process.
#[derive(Default)]
pub struct FaultSummaries {
    seen: HashMap<u32, FaultCounts>,
    /// A process's comm since its last exec (the kernel's counters keep
    /// the comm the process had at its first fault).
    exec_comms: HashMap<u32, Vec<u8>>,
    last_ns: u64,
    /// Faults summarised, for the closing tally.
    pub faults: u64,
}

impl FaultSummaries {
    pub fn new(start_ns: u64) -> FaultSummaries {
        FaultSummaries {
            last_ns: start_ns,
            ..FaultSummaries::default()
        }
    }

    /// Before `ev` reaches the sinks: a process's comm after exec; at its
    /// exit, its last faults (as a summary to show before the exit) and
    /// the end of its kernel counters.
    pub fn before_event(&mut self, ev: &Event, hooks: &mut Hooks) -> Option<Event> {
        match ev.body {
            Body::Exec { .. } => {
                self.exec_comms.insert(ev.pid, ev.comm.clone());
                None
            }
            Body::Exit { .. } => {
                let summary = match hooks.fault_counts_of(ev.pid) {
                    Ok(Some(c)) => {
                        let interval = ev.ts_ns.saturating_sub(self.last_ns);
                        self.summarize(ev.pid, c, ev.ts_ns, interval)
                    }
                    Ok(None) => None,
                    Err(e) => {
                        log::warn!("cannot read the fault counters of {}: {e:#}", ev.pid);
                        None
                    }
                };
                self.seen.remove(&ev.pid);
                self.exec_comms.remove(&ev.pid);
                if let Err(e) = hooks.remove_fault_counts(ev.pid) {
                    log::warn!("cannot forget the fault counters of {}: {e:#}", ev.pid);
                }
                summary
            }
            _ => None,
        }
    }

    /// One summary per process whose counts moved since the last tick.
    pub fn tick(&mut self, hooks: &Hooks) -> Vec<Event> {
        let now = clock::monotonic_ns();
        let counts = match hooks.fault_counts() {
            Ok(c) => c,
            Err(e) => {
                log::warn!("cannot read the fault counters: {e:#}");
                return Vec::new();
            }
        };
        let interval = now.saturating_sub(self.last_ns);
        let out = counts
            .into_iter()
            .filter_map(|(tgid, c)| self.summarize(tgid, c, now, interval))
            .collect();
        self.last_ns = now;
        out
    }

    fn summarize(
        &mut self,
        tgid: u32,
        c: FaultCounts,
        ts_ns: u64,
        interval_ns: u64,
    ) -> Option<Event> {
        let seen = self.seen.entry(tgid).or_default();
        let (read, write, exec, present) = (
            c.read.saturating_sub(seen.read),
            c.write.saturating_sub(seen.write),
            c.exec.saturating_sub(seen.exec),
            c.present.saturating_sub(seen.present),
        );
        *seen = c;
        if read + write + exec == 0 {
            return None;
        }
        self.faults += read + write + exec;
        Some(Event {
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
        })
    }
}

/// The `lost` event of `count` events of `kind`.
pub fn lost_event(kind: EventKind, count: u64, now_ns: u64) -> Event {
    Event {
        ts_ns: now_ns,
        cpu: 0,
        pid: 0,
        tid: 0,
        comm: Vec::new(),
        body: Body::Lost {
            count,
            kind: Some(kind),
        },
    }
}

/// A process the kernel stopped at exec (the held command's tree, see
/// `HookConfig::exec_stop`) may run now.
pub fn continue_after_exec(pid: u32) {
    // SAFETY: sending a signal has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
}

/// The running system, for the checker.
pub struct LiveProbe;

impl Probe for LiveProbe {
    fn idle(&mut self, pid: u32) -> bool {
        proc::idle(pid, MEMORY_SYSCALLS)
    }

    fn maps(&mut self, pid: u32) -> std::io::Result<Vec<Seed>> {
        maps::read(pid)
    }

    fn now(&mut self) -> u64 {
        clock::monotonic_ns()
    }
}

/// Syscalls that change mappings (x86_64): a thread inside one is not
/// idle.
const MEMORY_SYSCALLS: &[i64] = tracer_common::memory_syscalls();
