//! The kernel's counters of an address space (`mm_struct`: `map_count`,
//! `total_vm`, `locked_vm`, `data_vm`, `exec_vm`, `stack_vm`), read at the
//! end of every change, against the model's regions.
//!
//! What the counters count, as the kernel (5.10 to 6.18) keeps them:
//! - `map_count`: the VMAs of the address space. /proc/PID/maps shows one
//!   line per VMA plus, on x86_64, the `[vsyscall]` page: the "gate area",
//!   a VMA of no mm, shown by every process's maps and counted by none.
//!   The vDSO's mappings (`[vdso]`, `[vvar]`, `[vvar_vclock]`) are VMAs of
//!   the mm and are counted.
//! - `total_vm`: pages of all those VMAs (the gate area aside).
//! - `data_vm`, `exec_vm`, `stack_vm`: the same pages by kind
//!   (`vm_stat_account`): private writable (`VM_WRITE` without `VM_SHARED`
//!   or `VM_STACK`), executable (`VM_EXEC` without `VM_WRITE` or
//!   `VM_STACK`), grows-down (`VM_STACK`, which is `VM_GROWSDOWN` on x86).
//!   A mapping can be in none of them (read-only data, shared writable).
//! - `locked_vm`: pages of `VM_LOCKED` VMAs, to which some drivers add
//!   pages they pin (VFIO, RDMA): /proc cannot show those, so a process's
//!   lasting difference there is learnt (see [`Baseline`]).
//!
//! The model holds what /proc/PID/maps shows, so it counts the same way.

use super::{sig, AddressSpace, Backing, Region, PAGE};
use crate::event::Counters;

/// The counters the model's regions make, in the kernel's units (VMAs,
/// pages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub map_count: u64,
    pub total_vm: u64,
    pub locked_vm: u64,
    pub data_vm: u64,
    pub exec_vm: u64,
    pub stack_vm: u64,
}

/// Whether a region of the model is a VMA of the process's mm.
fn is_vma(r: &Region) -> bool {
    !matches!(&r.backing, Backing::Special(name) if name == "[vsyscall]")
}

impl Counts {
    /// What region `r` adds to the counters: (field, pages or VMAs).
    fn of(r: &Region) -> Counts {
        let mut c = Counts::default();
        if !is_vma(r) {
            return c;
        }
        let pages = r.len() / PAGE;
        c.map_count = 1;
        c.total_vm = pages;
        if r.sig & sig::LOCKED != 0 {
            c.locked_vm = pages;
        }
        if r.sig & sig::GROWSDOWN != 0 {
            c.stack_vm = pages;
        } else if r.perms.write && !r.perms.shared {
            c.data_vm = pages;
        } else if r.perms.exec && !r.perms.write {
            c.exec_vm = pages;
        }
        c
    }

    fn apply(&mut self, d: &Counts, f: fn(u64, u64) -> u64) {
        self.map_count = f(self.map_count, d.map_count);
        self.total_vm = f(self.total_vm, d.total_vm);
        self.locked_vm = f(self.locked_vm, d.locked_vm);
        self.data_vm = f(self.data_vm, d.data_vm);
        self.exec_vm = f(self.exec_vm, d.exec_vm);
        self.stack_vm = f(self.stack_vm, d.stack_vm);
    }

    /// A live region enters the counts.
    pub fn add(&mut self, r: &Region) {
        self.apply(&Counts::of(r), u64::wrapping_add);
    }

    /// A live region leaves them (as it was when it entered).
    pub fn remove(&mut self, r: &Region) {
        self.apply(&Counts::of(r), u64::wrapping_sub);
    }
}

/// The counters of the model's live regions, counted anew (the address
/// space keeps them as it changes: [`AddressSpace::counts`]).
pub fn recount(space: &AddressSpace) -> Counts {
    let mut c = Counts::default();
    for r in space.live() {
        c.add(r);
    }
    c
}

/// Kernel minus model, for each counter the kernel gave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Residual {
    pub map_count: i64,
    pub total_vm: i64,
    pub locked_vm: i64,
    pub data_vm: i64,
    pub exec_vm: i64,
    pub stack_vm: i64,
}

impl Residual {
    pub fn of(kernel: &Counters, model: &Counts) -> Residual {
        let d = |k: Option<u64>, m: u64| k.map_or(0, |k| k as i64 - m as i64);
        Residual {
            map_count: d(kernel.map_count, model.map_count),
            total_vm: d(kernel.total_vm, model.total_vm),
            locked_vm: d(kernel.locked_vm, model.locked_vm),
            data_vm: d(kernel.data_vm, model.data_vm),
            exec_vm: d(kernel.exec_vm, model.exec_vm),
            stack_vm: d(kernel.stack_vm, model.stack_vm),
        }
    }

    /// The counters that differ, as "name kernel-model" words.
    pub fn describe(&self) -> String {
        let fields = [
            ("map_count", self.map_count),
            ("total_vm", self.total_vm),
            ("locked_vm", self.locked_vm),
            ("data_vm", self.data_vm),
            ("exec_vm", self.exec_vm),
            ("stack_vm", self.stack_vm),
        ];
        let parts: Vec<String> = fields
            .iter()
            .filter(|(_, d)| *d != 0)
            .map(|(name, d)| format!("{name} {d:+}"))
            .collect();
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(", ")
        }
    }
}

impl Residual {
    pub fn is_zero(&self) -> bool {
        *self == Residual::default()
    }

    fn zip(&self, o: &Residual, f: impl Fn(i64, i64) -> i64) -> Residual {
        Residual {
            map_count: f(self.map_count, o.map_count),
            total_vm: f(self.total_vm, o.total_vm),
            locked_vm: f(self.locked_vm, o.locked_vm),
            data_vm: f(self.data_vm, o.data_vm),
            exec_vm: f(self.exec_vm, o.exec_vm),
            stack_vm: f(self.stack_vm, o.stack_vm),
        }
    }

    #[must_use]
    pub fn plus(&self, o: &Residual) -> Residual {
        self.zip(o, i64::saturating_add)
    }

    #[must_use]
    pub fn minus(&self, o: &Residual) -> Residual {
        self.zip(o, i64::saturating_sub)
    }

    /// Only a stack grown by so many pages: its growth not reported yet
    /// (made by a fault of another thread, whose event comes later).
    fn is_stack_growth(&self) -> bool {
        self.stack_vm > 0
            && self.total_vm == self.stack_vm
            && (self.locked_vm == 0 || self.locked_vm == self.stack_vm)
            && self.map_count == 0
            && self.data_vm == 0
            && self.exec_vm == 0
    }
}

/// A stack growth is reported this soon after the kernel counts it (the
/// fault's page charged, or the expansion returned); a difference of stack
/// pages older than this is no growth in flight.
pub const STACK_REPORT_NS: u64 = 1_000_000;

/// A process's counters against its model, event after event.
#[derive(Clone, Debug, Default)]
pub struct CounterCheck {
    /// What the kernel counts and /proc does not show (pages drivers lock,
    /// a grows-down mapping found running), learnt when a check found the
    /// model equal to the maps in spite of a difference.
    baseline: Residual,
    /// The difference that made the model doubted, and the stamp of the
    /// event after which it was seen, until the check.
    suspect: Option<(Residual, u64)>,
    /// Since when (CLOCK_MONOTONIC) the stack has been bigger than the
    /// model's, its growth not reported.
    stack_since: Option<u64>,
    /// Settled counters compared with the model, and differences found.
    pub compared: u64,
    pub mismatches: u64,
}

/// What a comparison found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The model counts as the kernel does.
    Agree,
    /// Not compared: the counters are not this event's alone, or the model
    /// is already in doubt.
    Skipped,
    /// A stack growth on its way (see [`STACK_REPORT_NS`]).
    StackInFlight,
    /// The model is wrong: the kernel minus the model.
    Differ(Residual),
}

impl CounterCheck {
    /// Compares the kernel's counters after an event stamped `ts_ns`
    /// (CLOCK_MONOTONIC) with the model's, once the model has applied it.
    pub fn compare(&mut self, kernel: &Counters, space: &AddressSpace, ts_ns: u64) -> Verdict {
        if !kernel.settled || self.suspect.is_some() {
            return Verdict::Skipped;
        }
        self.compared += 1;
        let r = Residual::of(kernel, &space.counts()).minus(&self.baseline);
        if r.is_zero() {
            self.stack_since = None;
            return Verdict::Agree;
        }
        if r.is_stack_growth() {
            let since = *self.stack_since.get_or_insert(ts_ns);
            if ts_ns.saturating_sub(since) <= STACK_REPORT_NS {
                return Verdict::StackInFlight;
            }
        }
        self.stack_since = None;
        self.mismatches += 1;
        self.suspect = Some((r, ts_ns));
        Verdict::Differ(r)
    }

    /// Kernel minus model, what is known to differ aside (for the check
    /// at exit).
    pub fn residual(&self, kernel: &Counters, space: &AddressSpace) -> Residual {
        Residual::of(kernel, &space.counts()).minus(&self.baseline)
    }

    /// The model was compared with /proc/PID/maps (and resynced if
    /// `resynced`); `last_change`: the stamp of the last event it had
    /// applied then. A difference of counters that the maps did not
    /// explain, when nothing changed between the event it was seen after
    /// and the read, is something the kernel counts and /proc does not
    /// show: it is expected from now on. (With changes in between it may
    /// have come and gone: then it is only forgotten, and found again if
    /// it is still there.) Returns it, when one was learnt.
    pub fn checked(&mut self, resynced: bool, last_change: u64) -> Option<Residual> {
        self.stack_since = None;
        let (suspect, seen_after) = self.suspect.take()?;
        if resynced || last_change != seen_after {
            return None;
        }
        self.baseline = self.baseline.plus(&suspect);
        Some(suspect)
    }

    /// A new address space (exec): nothing learnt holds.
    pub fn reset(&mut self) {
        *self = CounterCheck {
            compared: self.compared,
            mismatches: self.mismatches,
            ..CounterCheck::default()
        };
    }
}
