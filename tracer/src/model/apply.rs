//! Events onto the model: the one place that says which [`AddressSpace`]
//! call an [`Event`] makes. Shared by `mmtrace record` and
//! `mmtrace stream --regions`; process-level events (fork, exec, exit),
//! which create, reseed or end whole address spaces, are their business.

use super::{AddressSpace, Cause};
use crate::event::{Body, Event, SysResult};

/// Applies the memory event `ev` (at `t_ns`, the model's time) to `space`.
///
/// `before_seed`: the event is stamped before the /proc snapshot `space`
/// was seeded from, so its effect is already in the model; only a mapping's
/// birth is named after the mmap that made it.
///
/// Failed calls, process events, lost events and fault summaries change
/// nothing. Returns false when the model is out of step with the event (a
/// stack growth where no region started); true otherwise.
pub fn apply_event(space: &mut AddressSpace, ev: &Event, t_ns: u64, before_seed: bool) -> bool {
    let t = t_ns;
    match &ev.body {
        Body::Brk {
            old_brk,
            new_brk,
            start_brk,
            ..
        } => {
            if !before_seed {
                // The heap's start is the kernel's mm->start_brk, carried in
                // the record; unknown (0), the old break is the start of a
                // heap that does not exist yet.
                let start = if *start_brk != 0 {
                    *start_brk
                } else {
                    *old_brk
                };
                space.brk(t, start, *old_brk, *new_brk);
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
                if let Some(r) = space
                    .regions
                    .iter_mut()
                    .rev()
                    .find(|r| r.start == *addr && r.died_ns.is_none())
                {
                    r.born_by = Cause::Mmap;
                    r.born_ns = t.min(r.born_ns);
                    if let Some(first) = r.history.first_mut() {
                        first.t_ns = r.born_ns;
                    }
                }
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
        Body::Mprotect {
            addr,
            len,
            prot,
            ret: SysResult::Ok(_),
        } => {
            if !before_seed {
                space.mprotect(t, *addr, *len, *prot);
            }
        }
        Body::Madvise {
            addr,
            len,
            advice,
            ret: SysResult::Ok(_),
        } => {
            if !before_seed {
                space.madvise(t, *addr, *len, *advice);
            }
        }
        Body::PkeyMprotect {
            addr,
            len,
            prot,
            pkey,
            ret: SysResult::Ok(_),
        } => {
            if !before_seed {
                space.pkey_mprotect(t, *addr, *len, *prot, *pkey);
            }
        }
        // A failed call changes nothing.
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
        | Body::Mprotect {
            ret: SysResult::Err(_),
            ..
        }
        | Body::Madvise {
            ret: SysResult::Err(_),
            ..
        }
        | Body::PkeyMprotect {
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
            if !before_seed {
                return space.grow_stack(t, *old_start, *new_start);
            }
        }
        // Whole address spaces (the caller's business), and reports made
        // in userspace.
        Body::Exec { .. }
        | Body::Fork { .. }
        | Body::Exit { .. }
        | Body::Lost { .. }
        | Body::FaultSummary { .. } => {}
    }
    true
}

impl AddressSpace {
    /// Drops the dead regions, keeping the live ones in birth order (for a
    /// consumer that has reported the deaths and needs no history).
    pub fn forget_dead(&mut self) {
        // Its indexes are about to change, and it has been reported.
        self.clear_journal();
        if self.regions.len() == self.live.len() {
            return;
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
        assert!(apply_event(&mut a, &mmap(0x10000, 4 * PAGE), 1, false));
        let munmap = ev(Body::Munmap {
            addr: 0x12000,
            len: 2 * PAGE,
            ret: SysResult::Ok(0),
        });
        assert!(apply_event(&mut a, &munmap, 2, false));
        let failed = ev(Body::Mprotect {
            addr: 0x10000,
            len: PAGE,
            prot: 1,
            ret: SysResult::Err(22),
        });
        assert!(apply_event(&mut a, &failed, 3, false));
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
        assert!(apply_event(&mut a, &mmap(0x10000, PAGE), 2, true));
        assert_eq!(a.regions.len(), 1);
        assert_eq!(a.regions[0].born_by, Cause::Mmap);
        assert_eq!(a.regions[0].born_ns, 2);
        assert_eq!(a.regions[0].history[0].t_ns, 2);
        let munmap = ev(Body::Munmap {
            addr: 0x10000,
            len: PAGE,
            ret: SysResult::Ok(0),
        });
        assert!(apply_event(&mut a, &munmap, 3, true));
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
        assert!(!apply_event(&mut a, &grow, 1, false));
        let fault = ev(Body::Fault {
            addr: 0x1234,
            ip: 0,
            access: Access::Read,
            present: false,
        });
        assert!(apply_event(&mut a, &fault, 1, false));
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
}
