//! The break before a brk call traced at its exit alone, carried from the
//! same address space's previous call.
//!
//! Without a model, brk is traced at its exit alone (the kinds table's
//! `exit_alone`): by then the kernel has moved the break, so the record has
//! the call's request and result, the heap's start, and a key of its
//! address space (its `mm_struct`'s address), but not the break the call
//! found. That break is:
//! - the result itself for a query (`brk(0)`) or a failed call: either
//!   returns the break and leaves it where it was;
//! - else the result of the same address space's previous brk call (what
//!   the kernel returned then is where it left the break);
//! - else, for the first call after an exec seen, the heap's start (exec
//!   leaves the break there), and for a forked child's first call, where
//!   its parent's last call left the break (the child's copy);
//! - else unknown (None): the first call to move the break of a process
//!   seen mid-life.
//!
//! What is carried is the kernel's own answer to an earlier call. It goes
//! wrong only if the break moves by other means (`prctl(PR_SET_MM_BRK)`,
//! as checkpoint/restore tools do), or if two threads of one process race
//! brk (or brk and fork) with no lock between them, so that their records
//! reach the ring buffer in the other order than their changes; allocators
//! hold a lock around brk, and glibc's fork takes it.
//!
//! Bounded: one entry per process seen, forgotten at its exit when exits
//! are traced; at [`MAX_PROCESSES`] the table starts again, and the next
//! move of each process it held is unknown.

use std::collections::HashMap;

use crate::event::{Body, Event};

/// Processes whose break is carried at once.
pub const MAX_PROCESSES: usize = 1 << 16;

/// `clone(2)`'s flag: the child shares the parent's address space.
const CLONE_VM: u64 = 0x100;

/// Where a process's last call (or exec, or fork) left its break.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    /// The address space; 0 for a forked child's copy, whose key is not
    /// known before its first call.
    space: u64,
    /// None: at the heap's start (after an exec).
    brk: Option<u64>,
}

/// The break each process's last brk call left, with its address space.
#[derive(Default)]
pub struct Breaks {
    last: HashMap<u32, Entry>,
}

impl Breaks {
    /// Fills in the old break of `ev`, a brk call whose old break was not
    /// read, made in the address space `space` (None: not read); remembers
    /// where it left the break. Other events are left alone.
    pub fn fill(&mut self, ev: &mut Event, space: Option<u64>) {
        let Body::Brk {
            requested,
            old_brk: old_brk @ None,
            new_brk,
            start_brk,
        } = &mut ev.body
        else {
            return;
        };
        // A successful call returns the break asked for; a query or a
        // failed one returns the break, unmoved.
        if *requested == 0 || *requested != *new_brk {
            *old_brk = Some(*new_brk);
        } else if let (Some(space), Some(e)) = (space, self.last.get(&ev.pid)) {
            if e.space == space || e.space == 0 {
                *old_brk = e.brk.or((*start_brk != 0).then_some(*start_brk));
            }
        }
        let entry = space.map(|space| Entry {
            space,
            brk: Some(*new_brk),
        });
        self.set(ev.pid, entry);
    }

    /// The process `pid` exec'd into the address space `space`.
    pub fn exec(&mut self, pid: u32, space: Option<u64>) {
        self.set(pid, space.map(|space| Entry { space, brk: None }));
    }

    /// `parent` forked `child` with `clone_flags`: the child's break starts
    /// where the parent's is.
    pub fn fork(&mut self, parent: u32, child: u32, clone_flags: u64) {
        let entry = self.last.get(&parent).map(|e| Entry {
            space: if clone_flags & CLONE_VM != 0 {
                e.space
            } else {
                0
            },
            brk: e.brk,
        });
        self.set(child, entry);
    }

    /// The process `pid` exited.
    pub fn forget(&mut self, pid: u32) {
        self.last.remove(&pid);
    }

    fn set(&mut self, pid: u32, entry: Option<Entry>) {
        let Some(entry) = entry else {
            self.last.remove(&pid);
            return;
        };
        if self.last.len() >= MAX_PROCESSES && !self.last.contains_key(&pid) {
            self.last.clear();
        }
        self.last.insert(pid, entry);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brk(pid: u32, requested: u64, new_brk: u64) -> Event {
        Event {
            ts_ns: 0,
            cpu: 0,
            pid,
            tid: pid,
            comm: b"t".to_vec(),
            body: Body::Brk {
                requested,
                old_brk: None,
                new_brk,
                start_brk: 0x1000,
            },
            counters: None,
        }
    }

    fn old(b: &mut Breaks, pid: u32, space: u64, requested: u64, new_brk: u64) -> Option<u64> {
        let mut ev = brk(pid, requested, new_brk);
        b.fill(&mut ev, Some(space));
        match ev.body {
            Body::Brk { old_brk, .. } => old_brk,
            _ => unreachable!(),
        }
    }

    #[test]
    fn queries_and_failures_give_the_break_then_moves_carry_it() {
        let mut b = Breaks::default();
        // A process seen mid-life, its first call a grow: unknown.
        assert_eq!(old(&mut b, 7, 1, 0x3000, 0x3000), None);
        assert_eq!(old(&mut b, 7, 1, 0x5000, 0x5000), Some(0x3000));
        // A failed grow returns the break where it stays.
        assert_eq!(old(&mut b, 7, 1, 0x9000_0000, 0x5000), Some(0x5000));
        assert_eq!(old(&mut b, 7, 1, 0x4000, 0x4000), Some(0x5000));
        // A query, then a grow.
        assert_eq!(old(&mut b, 8, 2, 0, 0x2000), Some(0x2000));
        assert_eq!(old(&mut b, 8, 2, 0x2800, 0x2800), Some(0x2000));
    }

    #[test]
    fn another_address_space_under_the_same_pid_starts_unknown() {
        let mut b = Breaks::default();
        assert_eq!(old(&mut b, 7, 1, 0, 0x3000), Some(0x3000));
        // An exec (or a reused pid): a new address space.
        assert_eq!(old(&mut b, 7, 2, 0x5000, 0x5000), None);
        assert_eq!(old(&mut b, 7, 2, 0x6000, 0x6000), Some(0x5000));
        // An exit forgets it.
        b.forget(7);
        assert_eq!(old(&mut b, 7, 2, 0x7000, 0x7000), None);
        // No key read: nothing carried from or to it.
        let mut ev = brk(7, 0x8000, 0x8000);
        b.fill(&mut ev, None);
        assert!(matches!(ev.body, Body::Brk { old_brk: None, .. }));
        assert_eq!(old(&mut b, 7, 2, 0x9000, 0x9000), None);
    }

    #[test]
    fn exec_starts_at_the_heap_start_and_fork_copies_the_parent() {
        let mut b = Breaks::default();
        b.exec(7, Some(1));
        // start_brk is 0x1000 in these records.
        assert_eq!(old(&mut b, 7, 1, 0x3000, 0x3000), Some(0x1000));
        b.fork(7, 8, 0x11); // SIGCHLD: a copy
        assert_eq!(old(&mut b, 8, 2, 0x5000, 0x5000), Some(0x3000));
        assert_eq!(old(&mut b, 8, 2, 0x6000, 0x6000), Some(0x5000));
        // The parent's own break is its own.
        assert_eq!(old(&mut b, 7, 1, 0x4000, 0x4000), Some(0x3000));
        // vfork shares the address space: its key is the parent's.
        b.fork(7, 9, CLONE_VM);
        assert_eq!(old(&mut b, 9, 2, 0x4800, 0x4800), None);
        b.fork(7, 10, CLONE_VM);
        assert_eq!(old(&mut b, 10, 1, 0x4800, 0x4800), Some(0x4000));
        // A parent never seen gives its child nothing.
        b.fork(70, 71, 0x11);
        assert_eq!(old(&mut b, 71, 3, 0x4800, 0x4800), None);
    }

    #[test]
    fn a_read_old_break_is_kept_and_the_table_is_bounded() {
        let mut b = Breaks::default();
        let mut ev = brk(7, 0x5000, 0x5000);
        if let Body::Brk { old_brk, .. } = &mut ev.body {
            *old_brk = Some(0x4000);
        }
        b.fill(&mut ev, Some(1));
        assert!(matches!(
            ev.body,
            Body::Brk {
                old_brk: Some(0x4000),
                ..
            }
        ));
        assert_eq!(b.len(), 0);
        for pid in 0..MAX_PROCESSES as u32 + 10 {
            old(&mut b, pid, 1, 0, 0x1000);
        }
        assert!(b.len() <= MAX_PROCESSES);
    }
}
