//! Events onto the model: the one place that says which [`AddressSpace`]
//! call an [`Event`] makes. Shared by `mmtrace record` and
//! `mmtrace stream --regions`; process-level events (fork, exec, exit),
//! which create, reseed or end whole address spaces, are their business.

use super::{page_up, sig, AddressSpace, Cause, Seed};
use crate::event::{Body, Event, SysResult};

const ENOMEM: i32 = libc::ENOMEM;
const EACCES: i32 = libc::EACCES;
const EPERM: i32 = libc::EPERM;
const EAGAIN: i32 = libc::EAGAIN;
const MLOCK_ONFAULT: u64 = 1;
const MCL_CURRENT: u64 = libc::MCL_CURRENT as u64;
const MCL_FUTURE: u64 = libc::MCL_FUTURE as u64;
const MCL_ONFAULT: u64 = libc::MCL_ONFAULT as u64;

/// What applying an event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The model follows the event.
    Done,
    /// The model is out of step with the event (a stack growth where no
    /// region started).
    OutOfStep,
    /// The call failed after changing an unknown part of its range.
    Unsure,
}

/// Applies the memory event `ev` (at `t_ns`, the model's time) to `space`.
///
/// `before_seed`: the event is stamped before the /proc snapshot `space`
/// was seeded from, so its effect is already in the model; only a mapping's
/// birth is named after the mmap that made it.
///
/// Failed calls, process events, lost events and fault summaries change
/// nothing. Returns whether the model could follow the event.
pub fn apply_event(space: &mut AddressSpace, ev: &Event, t_ns: u64, before_seed: bool) -> Applied {
    let t = t_ns;
    match &ev.body {
        Body::Brk {
            old_brk,
            new_brk,
            start_brk,
            ..
        } => {
            // The heap's start is the kernel's mm->start_brk, carried in
            // the record; unknown (0), the old break is the start of a
            // heap that does not exist yet.
            // (A model's calls are traced at enter and exit: the old break
            // is read.)
            let Some(old_brk) = old_brk else {
                return Applied::OutOfStep;
            };
            let start = if *start_brk != 0 {
                *start_brk
            } else {
                *old_brk
            };
            if !before_seed {
                space.brk(t, start, *old_brk, *new_brk);
            } else if new_brk > old_brk {
                // Name the seeded heap's birth after the call that made it
                // (exec makes no heap).
                name_seeded_birth(space, start, Cause::Brk, t);
            }
        }
        Body::Mmap {
            len,
            prot,
            flags,
            offset,
            ret: SysResult::Ok(addr),
            file,
            ..
        } => {
            if before_seed {
                // Name the seeded region's birth after the call.
                name_seeded_birth(space, *addr, Cause::Mmap, t);
            } else {
                let file = file
                    .as_ref()
                    .map(|f| (f.path.clone(), (f.dev_major, f.dev_minor), f.ino));
                space.mmap(t, *addr, *len, *prot, *flags, *offset, file);
            }
        }
        Body::Munmap {
            addr,
            len,
            ret: SysResult::Ok(_),
        } => {
            if !before_seed {
                space.munmap(t, *addr, *len);
            }
        }
        Body::Mremap {
            old_addr,
            old_len,
            new_len,
            flags,
            ret: SysResult::Ok(ret),
            ..
        } => {
            if !before_seed {
                space.mremap(t, *old_addr, *old_len, *new_len, *flags, *ret);
            }
        }
        // The snapshot the model was seeded from already holds the rest.
        _ if before_seed && ev.body.changes_mappings() => {}
        Body::Mprotect {
            addr,
            len,
            prot,
            ret,
        }
        | Body::PkeyMprotect {
            addr,
            len,
            prot,
            ret,
            ..
        } => {
            // With pkey -1 pkey_mprotect is mprotect; the model keeps no
            // keys (/proc/PID/maps does not show them).
            let hi = addr.saturating_add(page_up(*len));
            match ret {
                SysResult::Ok(_) => space.mprotect(t, *addr, *len, *prot),
                // Stopped at a hole: the mapped run from addr was changed.
                SysResult::Err(ENOMEM) => {
                    let end = space.mapped_run_end(*addr, hi);
                    space.mprotect(t, *addr, end - addr, *prot);
                }
                // A mapping of the range refused (a sealed one, or a
                // protection its file does not allow): those before it may
                // have changed.
                SysResult::Err(EACCES | EPERM) => return Applied::Unsure,
                SysResult::Err(_) => {}
            }
        }
        Body::Madvise {
            addr,
            len,
            advice,
            ret,
        } => match ret {
            // Over a hole the advice is taken by every mapped part, then
            // the call says ENOMEM.
            SysResult::Ok(_) | SysResult::Err(ENOMEM) => space.madvise(t, *addr, *len, *advice),
            SysResult::Err(_) => {}
        },
        Body::Mlock { addr, len, ret } => lock(space, t, *addr, *len, sig::LOCKED, *ret),
        Body::Mlock2 {
            addr,
            len,
            flags,
            ret,
        } => {
            let onfault = if flags & MLOCK_ONFAULT != 0 {
                sig::LOCKONFAULT
            } else {
                0
            };
            lock(space, t, *addr, *len, sig::LOCKED | onfault, *ret);
        }
        Body::Munlock { addr, len, ret } => lock(space, t, *addr, *len, 0, *ret),
        Body::Mlockall {
            flags,
            ret: SysResult::Ok(_),
        } => {
            let onfault = if flags & MCL_ONFAULT != 0 {
                sig::LOCKONFAULT
            } else {
                0
            };
            let current = (flags & MCL_CURRENT != 0).then_some(sig::LOCKED | onfault);
            let future = if flags & MCL_FUTURE != 0 {
                sig::LOCKED | onfault
            } else {
                0
            };
            space.lock_all(t, current, future);
        }
        Body::Munlockall {
            ret: SysResult::Ok(_),
        } => space.lock_all(t, Some(0), 0),
        Body::Mseal {
            addr,
            len,
            ret: SysResult::Ok(_),
            ..
        } => space.mseal(t, *addr, *len),
        // Its extent is read from /proc (see `apply_shmat`).
        Body::Shmat {
            ret: SysResult::Ok(_),
            ..
        } => return Applied::Unsure,
        Body::Shmdt {
            addr,
            ret: SysResult::Ok(_),
        } => {
            if !space.shmdt(t, *addr) {
                return Applied::OutOfStep;
            }
        }
        Body::RemapFilePages {
            addr,
            size,
            pgoff,
            ret: SysResult::Ok(_),
            ..
        } => {
            if !space.remap_file_pages(t, *addr, *size, *pgoff) {
                return Applied::OutOfStep;
            }
        }
        Body::Userfaultfd {
            register,
            range,
            mode,
            ret: SysResult::Ok(_),
            ..
        } => match range {
            Some((addr, len)) => {
                let mode = if *register { *mode } else { 0 };
                space.userfaultfd(t, *addr, addr.saturating_add(*len), mode);
            }
            // The range could not be read: what changed is not known.
            None => return Applied::Unsure,
        },
        // A failed call changes nothing (those above excepted: they may
        // have changed part of their range).
        Body::Mmap {
            ret: SysResult::Err(_),
            ..
        }
        | Body::Munmap {
            ret: SysResult::Err(_),
            ..
        }
        | Body::Mremap {
            ret: SysResult::Err(_),
            ..
        }
        | Body::Mlockall {
            ret: SysResult::Err(_),
            ..
        }
        | Body::Munlockall {
            ret: SysResult::Err(_),
        }
        // mseal checks the whole range before it seals anything.
        | Body::Mseal {
            ret: SysResult::Err(_),
            ..
        }
        | Body::Shmat {
            ret: SysResult::Err(_),
            ..
        }
        | Body::Shmdt {
            ret: SysResult::Err(_),
            ..
        }
        | Body::RemapFilePages {
            ret: SysResult::Err(_),
            ..
        }
        // Both ioctls check the whole range before they change anything.
        | Body::Userfaultfd {
            ret: SysResult::Err(_),
            ..
        } => {}
        Body::Fault {
            addr,
            access,
            present,
            ..
        } => space.fault(t, *addr, *access, *present),
        Body::Stack {
            old_start,
            new_start,
            ..
        } => {
            if !before_seed && !space.grow_stack(t, *old_start, *new_start) {
                return Applied::OutOfStep;
            }
        }
        // Whole address spaces (the caller's business), and reports made
        // in userspace.
        Body::Exec { .. }
        | Body::Fork { .. }
        | Body::Exit { .. }
        | Body::OomKill { .. }
        | Body::Lost { .. }
        | Body::FaultSummary { .. } => {}
    }
    Applied::Done
}

/// The live region at `start`, from the snapshot the model was seeded
/// from, was born by `cause` at `t` (a call stamped before the snapshot).
fn name_seeded_birth(space: &mut AddressSpace, start: u64, cause: Cause, t: u64) {
    if let Some(r) = space
        .regions
        .iter_mut()
        .rev()
        .find(|r| r.start == start && r.died_ns.is_none())
    {
        r.born_by = cause;
        r.born_ns = t.min(r.born_ns);
        if let Some(first) = r.history.first_mut() {
            first.t_ns = r.born_ns;
        }
    }
}

/// mlock, mlock2 (`lock`: the lock bits) and munlock (`lock` 0) with
/// result `ret`.
fn lock(space: &mut AddressSpace, t: u64, addr: u64, len: u64, lock: u32, ret: SysResult) {
    match ret {
        // EAGAIN: locked, but not all pages could be brought in.
        SysResult::Ok(_) | SysResult::Err(EAGAIN) => space.lock(t, addr, len, lock),
        // Stopped at a hole: the mapped run from the start was changed
        // (also when pages could not be brought in over a whole range,
        // which the kernel says with ENOMEM too).
        SysResult::Err(ENOMEM) => {
            let lo = super::page_down(addr);
            let hi = lo.saturating_add(page_up(len.saturating_add(addr - lo)));
            let end = space.mapped_run_end(lo, hi);
            space.lock_range(t, lo, end, lock);
        }
        SysResult::Err(_) => {}
    }
}

/// A successful shmat at the address `ev` returned, whose segment is
/// `seg` as /proc/PID/maps shows it (its extent, file and inode), read by
/// the caller; None when it could not be found there (then the model
/// cannot follow).
pub fn apply_shmat(space: &mut AddressSpace, ev: &Event, t_ns: u64, seg: Option<Seed>) -> Applied {
    let Body::Shmat { .. } = ev.body else {
        return Applied::Done;
    };
    match seg {
        Some(seg) => {
            space.shmat(t_ns, &seg);
            Applied::Done
        }
        None => Applied::Unsure,
    }
}

impl AddressSpace {
    /// Drops the dead regions (for a consumer that has reported the deaths
    /// and needs no history). With a journal, only the regions it says died
    /// are looked at (the live ones may change order); without, every one
    /// (the live ones keep their birth order).
    pub fn forget_dead(&mut self) {
        // Reported: a changed region keeps only its last entry (what the
        // next change is told from), so that a long life costs nothing.
        let mut dead = Vec::new();
        for j in self.journal.as_deref().unwrap_or(&[]) {
            match *j {
                super::Journal::Change { region, .. } => {
                    if let Some(r) = self.regions.get_mut(region) {
                        if r.history.len() > 1 {
                            r.history.drain(..r.history.len() - 1);
                        }
                    }
                }
                super::Journal::Died { region } => dead.push(region),
            }
        }
        let journaled = self.journal.is_some();
        // Its indexes are about to change, and it has been reported.
        self.clear_journal();
        if self.regions.len() == self.live.len() {
            return;
        }
        if journaled {
            // Every death is in the journal: drop those alone, each in
            // O(log n) (the last region takes its place), whatever the
            // number of live regions.
            dead.sort_unstable();
            dead.dedup();
            for &i in dead.iter().rev() {
                if self.regions.get(i).is_none_or(|r| r.died_ns.is_none()) {
                    continue;
                }
                self.regions.swap_remove(i);
                if let Some(moved) = self.regions.get(i) {
                    if moved.died_ns.is_none() {
                        self.live.insert(moved.start, i);
                    }
                }
            }
            if self.regions.len() == self.live.len() {
                return;
            }
        }
        let mut keep = vec![false; self.regions.len()];
        for &i in self.live.values() {
            keep[i] = true;
        }
        // Old index -> new index, for the kept ones.
        let mut new_index = vec![usize::MAX; self.regions.len()];
        for (n, i) in (0..keep.len()).filter(|&i| keep[i]).enumerate() {
            new_index[i] = n;
        }
        let mut i = 0;
        self.regions.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        for idx in self.live.values_mut() {
            *idx = new_index[*idx];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Access, StackSource};
    use crate::model::{Op, PAGE};

    fn ev(body: Body) -> Event {
        Event {
            ts_ns: 0,
            cpu: 0,
            pid: 1,
            tid: 1,
            comm: b"t".to_vec(),
            body,
            counters: None,
        }
    }

    fn mmap(addr: u64, len: u64) -> Event {
        ev(Body::Mmap {
            addr: 0,
            len,
            prot: 3,
            flags: 0x22,
            fd: -1,
            offset: 0,
            ret: SysResult::Ok(addr),
            file: None,
        })
    }

    #[test]
    fn syscalls_change_the_model() {
        let mut a = AddressSpace::new(1);
        assert_eq!(
            Applied::Done,
            apply_event(&mut a, &mmap(0x10000, 4 * PAGE), 1, false)
        );
        let munmap = ev(Body::Munmap {
            addr: 0x12000,
            len: 2 * PAGE,
            ret: SysResult::Ok(0),
        });
        assert_eq!(Applied::Done, apply_event(&mut a, &munmap, 2, false));
        let failed = ev(Body::Mprotect {
            addr: 0x10000,
            len: PAGE,
            prot: 1,
            ret: SysResult::Err(22),
        });
        assert_eq!(Applied::Done, apply_event(&mut a, &failed, 3, false));
        let spans: Vec<_> = a.live().map(|r| (r.start, r.end)).collect();
        assert_eq!(spans, [(0x10000, 0x12000)]);
        let ops: Vec<_> = a.regions[0].history.iter().map(|c| c.op).collect();
        assert_eq!(ops, [Op::Born, Op::Shrink]);
    }

    #[test]
    fn before_the_seed_only_names_the_birth() {
        let mut a = AddressSpace::new(1);
        a.mmap(5, 0x10000, PAGE, 3, 0x22, 0, None);
        a.regions[0].born_by = Cause::Proc;
        assert_eq!(
            Applied::Done,
            apply_event(&mut a, &mmap(0x10000, PAGE), 2, true)
        );
        assert_eq!(a.regions.len(), 1);
        assert_eq!(a.regions[0].born_by, Cause::Mmap);
        assert_eq!(a.regions[0].born_ns, 2);
        assert_eq!(a.regions[0].history[0].t_ns, 2);
        let munmap = ev(Body::Munmap {
            addr: 0x10000,
            len: PAGE,
            ret: SysResult::Ok(0),
        });
        assert_eq!(Applied::Done, apply_event(&mut a, &munmap, 3, true));
        assert_eq!(a.live().count(), 1);
    }

    #[test]
    fn stack_growth_out_of_step() {
        let mut a = AddressSpace::new(1);
        let grow = ev(Body::Stack {
            old_start: 0x7000_0000,
            new_start: 0x6fff_f000,
            source: StackSource::Fexit,
        });
        assert_eq!(apply_event(&mut a, &grow, 1, false), Applied::OutOfStep);
        let fault = ev(Body::Fault {
            addr: 0x1234,
            ip: 0,
            access: Access::Read,
            present: false,
        });
        assert_eq!(Applied::Done, apply_event(&mut a, &fault, 1, false));
        assert_eq!(a.unattributed_faults, 1);
    }

    #[test]
    fn forgetting_the_dead_keeps_the_live() {
        let mut a = AddressSpace::new(1);
        a.mmap(1, 0x10000, PAGE, 3, 0x22, 0, None);
        a.mmap(1, 0x20000, PAGE, 1, 0x22, 0, None);
        a.mmap(1, 0x30000, PAGE, 3, 0x22, 0, None);
        a.munmap(2, 0x20000, PAGE);
        a.forget_dead();
        let starts: Vec<_> = a.regions.iter().map(|r| r.start).collect();
        assert_eq!(starts, [0x10000, 0x30000]);
        assert_eq!(a.find(0x30000), Some(1));
        a.munmap(3, 0x10000, PAGE);
        a.forget_dead();
        assert_eq!(a.regions.len(), 1);
        assert_eq!(a.find(0x30000), Some(0));
    }

    #[test]
    fn with_a_journal_only_the_dead_are_looked_at() {
        let mut a = AddressSpace::new(1);
        a.keep_journal();
        for i in 0..6 {
            a.mmap(1, 0x10000 * (i + 1), PAGE, 3 - (i % 2), 0x22, 0, None);
        }
        a.munmap(2, 0x20000, PAGE);
        a.munmap(2, 0x50000, PAGE);
        a.forget_dead();
        assert_eq!(a.regions.len(), 4);
        assert!(a.regions.iter().all(|r| r.died_ns.is_none()));
        for r in a.live() {
            assert_eq!(a.regions[a.find(r.start).unwrap()].start, r.start);
        }
        let starts: Vec<u64> = a.live().map(|r| r.start).collect();
        assert_eq!(starts, [0x10000, 0x30000, 0x40000, 0x60000]);
        a.munmap(3, 0x10000, PAGE);
        a.forget_dead();
        assert_eq!(a.regions.len(), 3);
        assert_eq!(a.find(0x10000), None);
        assert!(a.find(0x60000).is_some());
    }

    #[test]
    fn calls_that_fail_part_way_change_what_the_kernel_changed() {
        let mut a = AddressSpace::new(1);
        // [0x10000, 0x12000) rw, a hole, [0x13000, 0x14000) rw.
        a.mmap(1, 0x10000, 2 * PAGE, 3, 0x22, 0, None);
        a.mmap(1, 0x13000, PAGE, 3, 0x22, 0, None);
        // mprotect over the hole: the run before it changed, then ENOMEM.
        let mprotect = ev(Body::Mprotect {
            addr: 0x11000,
            len: 3 * PAGE,
            prot: 1,
            ret: SysResult::Err(libc::ENOMEM),
        });
        assert_eq!(apply_event(&mut a, &mprotect, 2, false), Applied::Done);
        let spans: Vec<_> = a
            .live()
            .map(|r| (r.start, r.end, r.perms.as_string()))
            .collect();
        assert_eq!(
            spans,
            [
                (0x10000, 0x11000, "rw-p".to_string()),
                (0x11000, 0x12000, "r--p".to_string()),
                (0x13000, 0x14000, "rw-p".to_string())
            ]
        );
        // madvise over the hole: every mapped part took the advice.
        let madvise = ev(Body::Madvise {
            addr: 0x10000,
            len: 4 * PAGE,
            advice: libc::MADV_DONTFORK as u64,
            ret: SysResult::Err(libc::ENOMEM),
        });
        assert_eq!(apply_event(&mut a, &madvise, 3, false), Applied::Done);
        assert!(a.live().all(|r| r.sig & sig::DONTFORK != 0));
        // mlock from a hole: nothing.
        let mlock = ev(Body::Mlock {
            addr: 0x12000,
            len: 2 * PAGE,
            ret: SysResult::Err(libc::ENOMEM),
        });
        assert_eq!(apply_event(&mut a, &mlock, 4, false), Applied::Done);
        assert_eq!(a.counts().locked_vm, 0);
        // A mapping that refused: how much changed before it is not known.
        let refused = ev(Body::Mprotect {
            addr: 0x10000,
            len: PAGE,
            prot: 7,
            ret: SysResult::Err(libc::EACCES),
        });
        assert_eq!(apply_event(&mut a, &refused, 5, false), Applied::Unsure);
    }
}
