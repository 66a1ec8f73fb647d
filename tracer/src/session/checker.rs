//! The [`Checker`]: when to compare a process's model with
//! /proc/PID/maps, and whether a comparison is valid.
//!
//! A comparison needs a consistent cut. /proc/PID/maps is read while every
//! thread of the process is blocked outside a memory syscall (idle before
//! and after the read), or, for a process that never blocks, between two
//! reads of the kernel's count of its address space's memory calls that
//! show none in flight and none ended in between (*bracketed*); the read
//! is then *pending*. The first event after
//! it that changes the process's mappings settles it: stamped well after
//! the read, the model before that event is the state the read saw
//! (compare); stamped during the read or too close to it to tell, the
//! check is void. A pending check that no change follows is compared at the
//! next tick (the events before the read are all in by then).
//!
//! Nothing here reads the kernel: idleness, maps and the clock come through
//! a [`Probe`], so every path is unit-tested.

use crate::model::{CheckReason, Seed, VoidReason};

/// Events of one process may reach the ring buffer out of their time
/// order by this much (threads on different CPUs).
pub const ORDER_MARGIN_NS: u64 = 1_000_000;

/// What the checker reads about a process.
pub trait Probe {
    /// Every thread is blocked, none inside a memory syscall: its mappings
    /// cannot change while it stays so.
    fn idle(&mut self, pid: u32) -> bool;
    fn maps(&mut self, pid: u32) -> std::io::Result<Vec<Seed>>;
    /// CLOCK_MONOTONIC now, ns.
    fn now(&mut self) -> u64;
    /// The kernel's count of memory calls of address space `mm` (`MM_SEQ`):
    /// (in flight, ended); None when it cannot be read.
    fn calls(&mut self, mm: u64) -> Option<(u64, u64)>;
    /// The start of `pid`'s stack as its address space records it
    /// (`mm->start_stack`, /proc/PID/stat), which an exec moves.
    fn start_stack(&mut self, pid: u32) -> Option<u64>;
}

/// What a process that is not idle needs for a bracketed read: its
/// address space as the model knows it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bracket {
    /// The `mm_struct` its last calls were counted in.
    pub mm: u64,
    /// The model's main stack region: the address space read must be the
    /// one modelled (an exec under way has a new one, its stack elsewhere).
    pub stack: (u64, u64),
}

/// What settles a pending check (see [`Checker::on_change`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Change {
    /// A memory syscall (counted in `MM_SEQ`).
    Call,
    /// An exec: a new address space.
    Exec,
    /// Anything else that changes mappings (a stack growth).
    Other,
}

/// A maps read waiting for the events before it.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingCheck {
    /// CLOCK_MONOTONIC before and after the read.
    pub t0: u64,
    pub t1: u64,
    pub snapshot: Vec<Seed>,
    pub reason: CheckReason,
    /// Read between two counts of the address space's calls, not while
    /// the process was idle.
    pub bracketed: bool,
}

/// What a change did to a pending check.
#[derive(Debug, PartialEq)]
pub enum Settle {
    /// No check was pending, or the change came before its read.
    Nothing,
    /// The model as it is now (before the change) is what the read saw.
    Compare(PendingCheck),
    /// Too close to the read to tell: the check is void (and will be made
    /// again: whatever made it due still holds).
    Void(CheckReason),
}

/// What [`Checker::start`] did.
#[derive(Debug, PartialEq)]
pub enum Start {
    /// The process was not idle: nothing read, tried again later.
    Busy,
    /// The read is pending its settlement.
    Pending,
    /// The read of /proc/PID/maps failed: the check is void for this
    /// reason, and not tried again for an interval.
    Failed(VoidReason),
}

#[derive(Debug, Default)]
struct State {
    /// CLOCK_MONOTONIC of the last comparison (or of first sight).
    last_check: u64,
    pending: Option<PendingCheck>,
    /// A check was asked for and none has been compared since.
    requested: bool,
    /// CLOCK_MONOTONIC of the last failed read, if any: none is tried
    /// again for an interval, doubt or not.
    failed_at: Option<u64>,
}

pub struct Checker {
    interval_ns: u64,
    states: crate::FastMap<u32, State>,
}

impl Checker {
    pub fn new(interval_ns: u64) -> Checker {
        Checker {
            interval_ns,
            states: crate::FastMap::default(),
        }
    }

    fn state(&mut self, pid: u32, now: u64) -> &mut State {
        self.states.entry(pid).or_insert_with(|| State {
            last_check: now,
            ..State::default()
        })
    }

    /// `pid` is known from `now` on: its first periodic check is an
    /// interval later.
    pub fn track(&mut self, pid: u32, now: u64) {
        self.state(pid, now);
    }

    /// `pid` left the model.
    pub fn forget(&mut self, pid: u32) {
        self.states.remove(&pid);
    }

    /// A check of each of `pids` was asked for (SIGUSR1). It stays asked
    /// for until a comparison is made.
    pub fn request(&mut self, pids: &[u32], now: u64) {
        for &pid in pids {
            self.state(pid, now).requested = true;
        }
    }

    /// Why `pid` should be checked now, if it should; `recheck`: why its
    /// model is in doubt (lost events, a difference of counters), if it is.
    pub fn due(&self, pid: u32, now: u64, recheck: Option<CheckReason>) -> Option<CheckReason> {
        let s = self.states.get(&pid)?;
        if s.pending.is_some() {
            return None;
        }
        if s.failed_at
            .is_some_and(|f| now.saturating_sub(f) < self.interval_ns)
        {
            return None;
        }
        if recheck.is_some() {
            recheck
        } else if s.requested {
            Some(CheckReason::Request)
        } else if now.saturating_sub(s.last_check) >= self.interval_ns {
            Some(CheckReason::Interval)
        } else {
            None
        }
    }

    /// Reads `pid`'s maps for a check if it is idle before and after the
    /// read, or else, with `bracket`, if no call of its address space was
    /// in flight or ended across the read (and the address space is still
    /// the modelled one); the check is then pending. A failed read is a
    /// void check, not tried again for an interval.
    pub fn start(
        &mut self,
        pid: u32,
        reason: CheckReason,
        bracket: Option<Bracket>,
        probe: &mut dyn Probe,
    ) -> Start {
        let idle = probe.idle(pid);
        let modelled = |probe: &mut dyn Probe, b: &Bracket| {
            probe
                .start_stack(pid)
                .is_some_and(|s| b.stack.0 <= s && s <= b.stack.1)
        };
        let before = match (idle, &bracket) {
            (true, _) => None,
            (false, Some(b)) if modelled(probe, b) => match probe.calls(b.mm) {
                Some((0, ended)) => Some((b, ended)),
                _ => return Start::Busy,
            },
            (false, _) => return Start::Busy,
        };
        let t0 = probe.now();
        let snapshot = match probe.maps(pid) {
            Ok(s) if s.is_empty() => Err(VoidReason::Gone),
            Ok(s) => Ok(s),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ESRCH) =>
            {
                Err(VoidReason::Gone)
            }
            Err(e) => {
                log::debug!("pid {pid}: cannot read /proc/{pid}/maps for a check: {e}");
                Err(VoidReason::ReadFailed)
            }
        };
        let snapshot = match snapshot {
            Ok(s) => s,
            Err(why) => {
                self.state(pid, t0).failed_at = Some(t0);
                return Start::Failed(why);
            }
        };
        let t1 = probe.now();
        let cut = match before {
            None => probe.idle(pid),
            Some((b, ended)) => probe.calls(b.mm) == Some((0, ended)) && modelled(probe, b),
        };
        if !cut {
            return Start::Busy;
        }
        let s = self.state(pid, t0);
        s.failed_at = None;
        s.pending = Some(PendingCheck {
            t0,
            t1,
            snapshot,
            reason,
            bracketed: before.is_some(),
        });
        Start::Pending
    }

    /// An event stamped `ts_ns` changes `pid`'s mappings; call before the
    /// model applies it. Events of a process may arrive out of their time
    /// order by [`ORDER_MARGIN_NS`], so one that close after the read
    /// voids it; but not a call after a bracketed read (no call ended
    /// across it: every call stamped after it ended after it), and an exec
    /// always does (the read may have seen its new address space).
    pub fn on_change(&mut self, pid: u32, ts_ns: u64, change: Change) -> Settle {
        let Some(s) = self.states.get_mut(&pid) else {
            return Settle::Nothing;
        };
        match s.pending.take() {
            Some(pc) if ts_ns >= pc.t0 => {
                let margin = if pc.bracketed && change == Change::Call {
                    0
                } else {
                    ORDER_MARGIN_NS
                };
                if ts_ns > pc.t1 + margin && !(pc.bracketed && change == Change::Exec) {
                    Settle::Compare(pc)
                } else {
                    Settle::Void(pc.reason)
                }
            }
            pending => {
                s.pending = pending;
                Settle::Nothing
            }
        }
    }

    /// The pending check of `pid`, if no change has come since its read
    /// (`last_change`: the last change's stamp): compare it now.
    pub fn quiet(&mut self, pid: u32, last_change: u64) -> Option<PendingCheck> {
        let s = self.states.get_mut(&pid)?;
        if s.pending.as_ref().is_some_and(|pc| last_change < pc.t0) {
            s.pending.take()
        } else {
            None
        }
    }

    /// The reason of `pid`'s pending check.
    pub fn pending_reason(&self, pid: u32) -> Option<CheckReason> {
        self.states.get(&pid)?.pending.as_ref().map(|p| p.reason)
    }

    /// A comparison of `pid` was made at `now`.
    pub fn compared(&mut self, pid: u32, now: u64) {
        let s = self.state(pid, now);
        s.last_check = now;
        s.requested = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Backing, Perms};

    /// A process whose idleness and clock the test sets.
    struct Fake {
        idle: bool,
        now: u64,
        /// The clock advances by this much at each read.
        read_takes: u64,
        reads: u32,
        /// The read fails with this error kind.
        fails: Option<std::io::ErrorKind>,
        /// The count of calls (in flight, ended), and what it becomes
        /// during the read.
        calls: Option<(u64, u64)>,
        calls_after_read: Option<(u64, u64)>,
        start_stack: Option<u64>,
    }

    impl Probe for Fake {
        fn idle(&mut self, _pid: u32) -> bool {
            self.idle
        }

        fn maps(&mut self, _pid: u32) -> std::io::Result<Vec<Seed>> {
            self.reads += 1;
            self.now += self.read_takes;
            if let Some(c) = self.calls_after_read {
                self.calls = Some(c);
            }
            if let Some(kind) = self.fails {
                return Err(kind.into());
            }
            Ok(vec![Seed {
                start: 0x1000,
                end: 0x2000,
                perms: Perms::from_prot(3, false),
                offset: 0,
                backing: Backing::Anon,
            }])
        }

        fn now(&mut self) -> u64 {
            self.now
        }

        fn calls(&mut self, _mm: u64) -> Option<(u64, u64)> {
            self.calls
        }

        fn start_stack(&mut self, _pid: u32) -> Option<u64> {
            self.start_stack
        }
    }

    fn fake() -> Fake {
        Fake {
            idle: true,
            now: 1_000_000_000,
            read_takes: 100_000,
            reads: 0,
            fails: None,
            calls: Some((0, 5)),
            calls_after_read: None,
            start_stack: Some(0x7fff_0000),
        }
    }

    const BRACKET: Option<Bracket> = Some(Bracket {
        mm: 0xffff_8880_1234_0000,
        stack: (0x7ffe_0000, 0x7fff_1000),
    });

    /// A process that never blocks is read between two counts of its
    /// calls: none in flight, none ended in between.
    #[test]
    fn a_busy_process_is_read_between_two_counts_of_its_calls() {
        let mut c = Checker::new(0);
        c.track(7, 0);
        let mut p = fake();
        p.idle = false;
        // Without its address space known: not read.
        assert_eq!(c.start(7, CheckReason::Interval, None, &mut p), Start::Busy);
        assert_eq!(p.reads, 0);
        // A call in flight: not read.
        p.calls = Some((1, 5));
        assert_eq!(
            c.start(7, CheckReason::Interval, BRACKET, &mut p),
            Start::Busy
        );
        assert_eq!(p.reads, 0);
        // A call ended during the read: not kept.
        p.calls = Some((0, 5));
        p.calls_after_read = Some((0, 6));
        assert_eq!(
            c.start(7, CheckReason::Interval, BRACKET, &mut p),
            Start::Busy
        );
        assert_eq!(c.pending_reason(7), None);
        // An exec under way: the stack is not the modelled one.
        p.calls_after_read = None;
        p.start_stack = Some(0x5555_0000);
        assert_eq!(
            c.start(7, CheckReason::Interval, BRACKET, &mut p),
            Start::Busy
        );
        // A cut: pending; the next call, however soon, settles it.
        p.start_stack = Some(0x7fff_0000);
        assert_eq!(
            c.start(7, CheckReason::Interval, BRACKET, &mut p),
            Start::Pending
        );
        let t1 = p.now;
        assert!(matches!(
            c.on_change(7, t1 + 1, Change::Call),
            Settle::Compare(pc) if pc.bracketed
        ));
        // A stack growth so soon may be out of order: void.
        assert_eq!(
            c.start(7, CheckReason::Interval, BRACKET, &mut p),
            Start::Pending
        );
        assert!(matches!(
            c.on_change(7, p.now + 1, Change::Other),
            Settle::Void(_)
        ));
        // An exec after a bracketed read voids it, whenever it comes.
        assert_eq!(
            c.start(7, CheckReason::Interval, BRACKET, &mut p),
            Start::Pending
        );
        assert!(matches!(
            c.on_change(7, p.now + 10 * MS, Change::Exec),
            Settle::Void(_)
        ));
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn due_by_interval_request_and_loss() {
        let mut c = Checker::new(1000 * MS);
        c.track(7, 0);
        assert_eq!(c.due(7, 999 * MS, None), None);
        assert_eq!(c.due(7, 1000 * MS, None), Some(CheckReason::Interval));
        let lost = Some(CheckReason::Lost);
        assert_eq!(c.due(7, 1, lost), lost);
        let counters = Some(CheckReason::Counters);
        assert_eq!(c.due(7, 1, counters), counters);
        c.request(&[7], 1);
        assert_eq!(c.due(7, 1, None), Some(CheckReason::Request));
        // A doubt comes first.
        assert_eq!(c.due(7, 1, counters), counters);
        // Unknown processes are never due.
        assert_eq!(c.due(8, u64::MAX, lost), None);
    }

    #[test]
    fn a_busy_process_is_not_read() {
        let mut c = Checker::new(0);
        let mut p = fake();
        p.idle = false;
        c.track(7, 0);
        assert_eq!(c.start(7, CheckReason::Interval, None, &mut p), Start::Busy);
        assert_eq!(p.reads, 0);
        assert_eq!(c.pending_reason(7), None);
    }

    #[test]
    fn a_change_well_after_the_read_compares() {
        let mut c = Checker::new(0);
        let mut p = fake();
        c.track(7, 0);
        assert_eq!(
            c.start(7, CheckReason::Interval, None, &mut p),
            Start::Pending
        );
        // Before the read: nothing settles.
        assert_eq!(
            c.on_change(7, p.now - 200_000, Change::Other),
            Settle::Nothing
        );
        let t1 = p.now;
        match c.on_change(7, t1 + 2 * MS, Change::Other) {
            Settle::Compare(pc) => {
                assert_eq!(pc.reason, CheckReason::Interval);
                assert_eq!(pc.t1, t1);
                assert_eq!(pc.snapshot.len(), 1);
            }
            s => panic!("{s:?}"),
        }
        assert_eq!(c.pending_reason(7), None);
    }

    #[test]
    fn a_quiet_process_compares_at_the_next_tick() {
        let mut c = Checker::new(0);
        let mut p = fake();
        c.track(7, 0);
        let before = p.now - 1;
        assert_eq!(
            c.start(7, CheckReason::Interval, None, &mut p),
            Start::Pending
        );
        assert!(c.quiet(7, before).is_some());
        assert!(c.quiet(7, before).is_none(), "taken once");
    }

    #[test]
    fn a_voided_request_is_asked_again() {
        let mut c = Checker::new(1000 * MS);
        let mut p = fake();
        c.track(7, p.now);
        c.request(&[7], p.now);
        let reason = c.due(7, p.now, None).expect("requested");
        assert_eq!(reason, CheckReason::Request);
        assert_eq!(c.start(7, reason, None, &mut p), Start::Pending);
        // The next change comes right after the read: void.
        assert_eq!(
            c.on_change(7, p.now + 10, Change::Other),
            Settle::Void(CheckReason::Request)
        );
        // The request still stands.
        assert_eq!(c.due(7, p.now, None), Some(CheckReason::Request));
        assert_eq!(
            c.start(7, CheckReason::Request, None, &mut p),
            Start::Pending
        );
        let t1 = p.now;
        assert!(matches!(
            c.on_change(7, t1 + 5 * MS, Change::Other),
            Settle::Compare(_)
        ));
        c.compared(7, t1 + 5 * MS);
        // Answered: not due until the interval has passed.
        assert_eq!(c.due(7, t1 + 6 * MS, None), None);
    }

    #[test]
    fn a_voided_interval_check_is_due_again() {
        let mut c = Checker::new(10 * MS);
        let mut p = fake();
        c.track(7, 0);
        assert_eq!(c.due(7, p.now, None), Some(CheckReason::Interval));
        assert_eq!(
            c.start(7, CheckReason::Interval, None, &mut p),
            Start::Pending
        );
        assert!(matches!(
            c.on_change(7, p.now, Change::Other),
            Settle::Void(_)
        ));
        assert_eq!(c.due(7, p.now, None), Some(CheckReason::Interval));
    }

    #[test]
    fn a_pending_check_is_not_started_twice() {
        let mut c = Checker::new(0);
        let mut p = fake();
        c.track(7, 0);
        assert_eq!(
            c.start(7, CheckReason::Interval, None, &mut p),
            Start::Pending
        );
        assert_eq!(c.due(7, u64::MAX, Some(CheckReason::Lost)), None);
        c.forget(7);
        assert_eq!(c.pending_reason(7), None);
        assert_eq!(c.on_change(7, u64::MAX, Change::Other), Settle::Nothing);
    }

    #[test]
    fn a_failed_read_is_a_void_check_not_retried_for_an_interval() {
        let mut c = Checker::new(10 * MS);
        let mut p = fake();
        c.track(7, 0);
        p.fails = Some(std::io::ErrorKind::NotFound);
        assert_eq!(
            c.start(7, CheckReason::Interval, None, &mut p),
            Start::Failed(VoidReason::Gone)
        );
        // Not even a doubt asks again at once.
        assert_eq!(c.due(7, p.now + MS, Some(CheckReason::Lost)), None);
        p.now += 10 * MS;
        assert_eq!(c.due(7, p.now, None), Some(CheckReason::Interval));
        p.fails = Some(std::io::ErrorKind::PermissionDenied);
        assert_eq!(
            c.start(7, CheckReason::Interval, None, &mut p),
            Start::Failed(VoidReason::ReadFailed)
        );
        p.fails = None;
        p.now += 10 * MS;
        assert_eq!(
            c.start(7, CheckReason::Interval, None, &mut p),
            Start::Pending
        );
    }
}
