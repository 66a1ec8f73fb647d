//! The session's hand on the kernel and on traced processes: what no sink
//! may do.
//!
//! - [`FaultSummaries`] turns the kernel's per-process fault counters
//!   (`--faults summary`) into `fault_summary` events, and forgets each
//!   process's counters at its exit, so the kernel map holds live
//!   processes only.
//! - [`exec_seed`] reads a process's address space right after its exec,
//!   as a cut between its memory calls.
//! - [`LiveProbe`] is what the [`super::checker::Checker`] reads of a
//!   running process.

use std::collections::HashMap;

use tracer_common::{EventKind, FaultCounts};

use super::checker::Probe;
use crate::{
    event::{Body, Event},
    kernel::{clock, proc, Hooks},
    model::{maps, ExecSeed, Seed},
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
            counters: None,
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
        counters: None,
    }
}

/// Reads of /proc/PID/maps after an exec before giving up on a settled
/// one.
const SEED_TRIES: u32 = 64;
/// Time spent on those reads at most: the event loop waits meanwhile.
const SEED_BUDGET_NS: u64 = 4_000_000;

/// The text of /proc/PID/maps, in as few reads as can be (each read of
/// the file is a pass of the kernel under the address space's lock).
fn read_maps_text(pid: u32) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(format!("/proc/{pid}/maps"))?;
    let mut text = Vec::with_capacity(256 * 1024);
    f.read_to_end(&mut text)?;
    // Gone during the read: the text may stop short (see maps::read).
    if !proc::has_address_space(pid) {
        return Err(std::io::ErrorKind::NotFound.into());
    }
    Ok(text)
}

/// Reads `pid`'s address space right after its exec (the new `mm_struct`
/// at `mm`), between two reads of the kernel's count of its memory calls
/// (`MM_SEQ`): settled when no call was in flight at either and none ended
/// in between, so the maps hold exactly the calls ended before the read.
/// Retried (the loader is busy right after exec) for a few milliseconds at
/// most; the last read stands if none settled.
pub fn exec_seed(hooks: &Hooks, pid: u32, mm: Option<u64>, exec_ns: u64) -> ExecSeed {
    let started = clock::monotonic_ns();
    let seq = |mm: Option<u64>| -> Option<(u64, u64)> {
        let mm = mm?;
        match hooks.mm_seq(mm) {
            // No call ever entered: none in flight, none ended.
            Ok(s) => Some(s.map_or((0, 0), |s| (s.in_flight, s.exited))),
            Err(e) => {
                log::debug!("cannot read MM_SEQ: {e:#}");
                None
            }
        }
    };
    let mut tries = 0;
    loop {
        tries += 1;
        let before = seq(mm);
        let from_ns = clock::monotonic_ns();
        let text = read_maps_text(pid);
        let until_ns = clock::monotonic_ns();
        let after = seq(mm);
        // Parsed out of the bracket: the shorter it is, the likelier a
        // moment with no call running. A zombie's maps are empty: its
        // address space is gone.
        let maps = text.and_then(|t| {
            maps::parse(&t).map_err(|line| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("/proc/{pid}/maps: cannot parse line {line}"),
                )
            })
        });
        let maps = maps.and_then(|m| {
            if m.is_empty() {
                Err(std::io::ErrorKind::NotFound.into())
            } else {
                Ok(m)
            }
        });
        let settled = matches!(
            (before, after),
            (Some((0, a)), Some((0, b))) if a == b
        );
        let gone = maps.is_err();
        if settled
            || gone
            || tries >= SEED_TRIES
            || until_ns.saturating_sub(started) >= SEED_BUDGET_NS
        {
            let outcome = match &maps {
                Err(e) => format!("not read ({e})"),
                Ok(_) if settled => "settled".to_owned(),
                Ok(_) => "not settled".to_owned(),
            };
            log::debug!(
                "pid {pid}: exec seed {outcome} after {tries} read(s) in {} us, {} us after the exec",
                until_ns.saturating_sub(started) / 1000,
                started.saturating_sub(exec_ns) / 1000
            );
            return ExecSeed {
                pid,
                maps,
                from_ns,
                until_ns,
                settled,
                tries,
            };
        }
        std::hint::spin_loop();
    }
}

/// The running system, for the checker.
pub struct LiveProbe<'a> {
    pub hooks: &'a Hooks,
}

impl Probe for LiveProbe<'_> {
    fn calls(&mut self, mm: u64) -> Option<(u64, u64)> {
        match self.hooks.mm_seq(mm) {
            // No call ever entered: none in flight, none ended.
            Ok(s) => Some(s.map_or((0, 0), |s| (s.in_flight, s.exited))),
            Err(e) => {
                log::debug!("cannot read MM_SEQ: {e:#}");
                None
            }
        }
    }

    fn start_stack(&mut self, pid: u32) -> Option<u64> {
        proc::start_stack(pid)
    }

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
