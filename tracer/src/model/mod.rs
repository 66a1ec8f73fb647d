//! Region model: one process's address space, every mapping from birth to
//! death, changed by events with the kernel's semantics (splits at
//! boundaries, merges of compatible neighbours, MAP_FIXED replacement,
//! mremap moves, brk and stack growth) and kept honest against
//! /proc/PID/maps (`maps`).

pub mod apply;
pub mod behaviour;
pub mod counters;
pub mod maps;
pub mod pages;
pub mod tracker;

pub use behaviour::KernelBehaviour;
pub use tracker::{
    ChangeOp, Comparison, ExecSeed, LiveProc, ProcSource, Process, RegionChange, Tracker,
};

use std::collections::BTreeMap;

pub const PAGE: u64 = 4096;

pub fn page_up(v: u64) -> u64 {
    v.saturating_add(PAGE - 1) & !(PAGE - 1)
}

pub fn page_down(v: u64) -> u64 {
    v & !(PAGE - 1)
}

/// Protection and sharing, as the four letters of /proc/PID/maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Perms {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub shared: bool,
}

impl Perms {
    pub fn from_prot(prot: u64, shared: bool) -> Perms {
        Perms {
            read: prot & 1 != 0,
            write: prot & 2 != 0,
            exec: prot & 4 != 0,
            shared,
        }
    }

    pub fn as_string(self) -> String {
        let mut s = String::with_capacity(4);
        s.push(if self.read { 'r' } else { '-' });
        s.push(if self.write { 'w' } else { '-' });
        s.push(if self.exec { 'x' } else { '-' });
        s.push(if self.shared { 's' } else { 'p' });
        s
    }
}

/// What backs a region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    Anon,
    /// The brk heap.
    Heap,
    /// The main thread's stack.
    Stack,
    File {
        path: Vec<u8>,
        dev: (u32, u32),
        ino: u64,
    },
    /// Shared anonymous memory (shown by the kernel as a deleted file):
    /// SysV segments (`/SYSV<key>`), shared anonymous mmaps, memfd.
    Shm {
        path: Option<Vec<u8>>,
        /// The inode of its file (a SysV segment's is its shmid); 0 when
        /// not known.
        ino: u64,
        /// Which opening of the file maps it (the kernel's struct file:
        /// one per shared anonymous mmap, per shmat): the pieces of one
        /// mapping merge again, those of two never. 0 when not known (found
        /// in /proc): never merged.
        file: u64,
    },
    /// `[vdso]`, `[vvar]`, `[vsyscall]` and other kernel-named regions.
    Special(String),
}

impl Backing {
    /// The kernel maps a file there (shared memory has one, in shmem): the
    /// offset into it moves with the region's start.
    pub fn has_file(&self) -> bool {
        matches!(self, Backing::File { .. } | Backing::Shm { .. })
    }

    /// A SysV shared memory segment (what shmdt detaches).
    pub fn is_sysv(&self) -> bool {
        matches!(self, Backing::Shm { path: Some(p), .. } if p.starts_with(b"/SYSV"))
    }
}

/// vm_flags the kernel compares before merging and that maps does not
/// show; tracked so that merges follow the kernel's.
pub mod sig {
    pub const GROWSDOWN: u32 = 1;
    pub const NORESERVE: u32 = 1 << 1;
    pub const NOHUGEPAGE: u32 = 1 << 2;
    pub const HUGEPAGE: u32 = 1 << 3;
    pub const DONTFORK: u32 = 1 << 4;
    pub const DONTDUMP: u32 = 1 << 5;
    pub const WIPEONFORK: u32 = 1 << 6;
    pub const MERGEABLE: u32 = 1 << 7;
    pub const RAND: u32 = 1 << 8;
    pub const SEQ: u32 = 1 << 9;
    pub const LOCKED: u32 = 1 << 10;
    pub const ACCOUNT: u32 = 1 << 11;
    /// MAP_STACK at mmap (only to name the region a thread stack).
    pub const MAP_STACK: u32 = 1 << 12;
    /// Locked as its pages fault in (MLOCK_ONFAULT, MCL_ONFAULT), with
    /// LOCKED.
    pub const LOCKONFAULT: u32 = 1 << 13;
    /// Sealed (mseal): no longer unmapped, moved or reprotected.
    pub const SEALED: u32 = 1 << 14;
    /// Registered with a userfaultfd (UFFDIO_REGISTER_MODE_MISSING, _WP,
    /// _MINOR: the mode's bits, shifted by [`UFFD_SHIFT`]).
    pub const UFFD_MISSING: u32 = 1 << 15;
    pub const UFFD_WP: u32 = 1 << 16;
    pub const UFFD_MINOR: u32 = 1 << 17;
    pub const UFFD_SHIFT: u32 = 15;
    /// The bits UFFDIO_REGISTER and UFFDIO_UNREGISTER change.
    pub const UFFD_MASK: u32 = UFFD_MISSING | UFFD_WP | UFFD_MINOR;
    /// The bits mlock and munlock change.
    pub const LOCK_MASK: u32 = LOCKED | LOCKONFAULT;
    /// Bits that take part in merge decisions.
    pub const MERGE_MASK: u32 = !MAP_STACK;
}

/// Declares a closed vocabulary: an enum serialised as snake_case strings,
/// with `as_str` for text and `ALL` for tests that compare it with the
/// schema.
macro_rules! vocabulary {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),*
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary! {
    /// What made a region, or what removed it.
    Cause {
        Mmap = "mmap",
        Munmap = "munmap",
        Brk = "brk",
        Mremap = "mremap",
        Exec = "exec",
        Exit = "exit",
        Fork = "fork",
        /// Already there: read from /proc/PID/maps.
        Proc = "proc",
        /// Split from another region.
        Split = "split",
        /// Absorbed by its neighbour.
        Merge = "merge",
        /// Replaced by a MAP_FIXED mapping (or a brk/mremap over it).
        Replaced = "replaced",
        /// Found different in /proc/PID/maps at a check: the model resynced.
        Drift = "drift",
        /// Attached SysV shared memory.
        Shmat = "shmat",
        /// Detached SysV shared memory.
        Shmdt = "shmdt",
    }
}

vocabulary! {
    /// How a process's first state was known.
    SeededBy {
        /// Seen being forked: a copy of its parent.
        Fork = "fork",
        /// Seen at its exec.
        Exec = "exec",
        /// Already running: read from /proc.
        Proc = "proc",
    }
}

vocabulary! {
    /// Why the model of a process was compared with /proc/PID/maps.
    CheckReason {
        /// Periodic (`--reconcile-interval`).
        Interval = "interval",
        /// Events were lost: the model may be out of step.
        Lost = "lost",
        /// Asked for (SIGUSR1).
        Request = "request",
        /// The process was about to exit, its address space whole.
        Exit = "exit",
        /// The kernel's counters of the address space after an event
        /// (VMAs, pages) differed from the model's: a change the model
        /// missed or got wrong, caught at that event.
        Counters = "counters",
        /// A call failed after changing part of its range, and the model
        /// cannot tell how much (mprotect or mlock stopped by a sealed or
        /// forbidden mapping).
        Partial = "partial",
        /// The address space read from /proc/PID/maps after an exec was
        /// not settled: a memory call of the process ran during every
        /// read, so the seed may hold part of a change.
        Seed = "seed",
    }
}

vocabulary! {
    /// What a check compared the model with.
    CheckBasis {
        /// /proc/PID/maps, region by region.
        Maps = "maps",
        /// The kernel's counters of the address space (VMAs, pages): at
        /// exit, where the maps can no longer be read.
        Counters = "counters",
    }
}

vocabulary! {
    /// Why a check compared nothing.
    VoidReason {
        /// The kernel had taken the address space away before its exit
        /// hook ran (kernels before 6.16 run it after `exit_mm`).
        NoAddressSpace = "no_address_space",
        /// The counters read at exit were not the process's alone (a call
        /// of the address space was counted in flight).
        Unsettled = "unsettled",
        /// The model never had the address space the process's exec made
        /// (the process was gone before it could be read), nor a check
        /// since: it is known incomplete.
        Unseeded = "unseeded",
        /// The process was gone when its /proc/PID/maps was read for a
        /// periodic or asked-for check (it is about to exit).
        Gone = "gone",
        /// /proc/PID/maps could not be read for a check for another
        /// reason (permission, a malformed line): retried an interval
        /// later.
        ReadFailed = "read_failed",
    }
}

vocabulary! {
    /// One entry of a region's history.
    Op {
        Born = "born",
        Grow = "grow",
        Shrink = "shrink",
        Split = "split",
        Protect = "protect",
        Move = "move",
        Merge = "merge",
        Advise = "advise",
        /// Locked in memory (mlock, mlock2, mlockall).
        Lock = "lock",
        /// Unlocked (munlock, munlockall).
        Unlock = "unlock",
        /// Sealed (mseal).
        Seal = "seal",
        /// Registered with a userfaultfd, or unregistered (the ioctls
        /// UFFDIO_REGISTER and UFFDIO_UNREGISTER).
        Userfaultfd = "userfaultfd",
        /// Found different in /proc/PID/maps at a check (its extent,
        /// protection, offset or backing), at the same start: the region
        /// goes on, as the kernel has it.
        Drift = "drift",
    }
}

impl Op {
    /// The entry changed the region's extent: the range before it is worth
    /// showing.
    pub const fn moves_extent(self) -> bool {
        matches!(
            self,
            Op::Grow | Op::Shrink | Op::Split | Op::Move | Op::Merge | Op::Drift
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub t_ns: u64,
    pub op: Op,
    pub start: u64,
    pub end: u64,
    pub perms: Perms,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Region {
    pub id: u64,
    pub start: u64,
    pub end: u64,
    pub perms: Perms,
    pub backing: Backing,
    /// File offset of `start` (0 for anonymous memory).
    pub offset: u64,
    pub sig: u32,
    /// Identity of the kernel's anon_vma (given on the first write fault),
    /// which decides whether two anonymous neighbours may merge.
    pub anon_vma: Option<u64>,
    pub born_ns: u64,
    pub born_by: Cause,
    pub parent: Option<u64>,
    pub died_ns: Option<u64>,
    pub died_by: Option<Cause>,
    pub history: Vec<Change>,
    /// Faults taken in this region (see [`pages`] for the rule).
    pub faults: pages::FaultCounts,
    /// The pages of its extent that faulted (address / PAGE).
    pub pages: pages::PageSet,
    /// Faults taken while this region existed, by time bucket; kept only
    /// with the history (`AddressSpace::keep_journal` not called).
    pub buckets: Vec<u64>,
}

impl Region {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// A region always covers at least one page; for symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The region's kind, as the timeline names it.
    pub fn kind(&self) -> &'static str {
        match &self.backing {
            Backing::Heap => "heap",
            Backing::Stack => "stack",
            Backing::File { .. } => "file",
            Backing::Shm { .. } => "shm",
            Backing::Special(name) => match name.as_str() {
                "[vdso]" => "vdso",
                "[vsyscall]" => "vsyscall",
                n if n.starts_with("[vvar") => "vvar",
                n if n.starts_with("[stack") => "thread_stack",
                _ => "anon",
            },
            Backing::Anon => {
                if !self.perms.read && !self.perms.write && !self.perms.exec {
                    "guard"
                } else if self.sig & sig::MAP_STACK != 0 {
                    "thread_stack"
                } else {
                    "anon"
                }
            }
        }
    }

    fn record(&mut self, t_ns: u64, op: Op) {
        self.history.push(Change {
            t_ns,
            op,
            start: self.start,
            end: self.end,
            perms: self.perms,
        });
    }
}

/// One process's address space and every region it ever had.
#[derive(Clone, Debug, Default)]
pub struct AddressSpace {
    /// Live regions by start address: index into `regions`.
    live: BTreeMap<u64, usize>,
    /// Every region, alive or dead, in birth order.
    pub regions: Vec<Region>,
    next_id: u64,
    next_anon_vma: u64,
    /// The last identity given to a shared mapping's file (`Backing::Shm`).
    next_file: u64,
    /// Width of a fault bucket, ns.
    pub bucket_ns: u64,
    /// Faults that fell in no region.
    pub unattributed_faults: u64,
    /// Changes in order, when kept (`keep_journal`).
    journal: Option<Vec<Journal>>,
    /// What the live regions make of the kernel's counters, kept as they
    /// change.
    counts: counters::Counts,
    /// The lock bits new mappings get (`mm->def_flags`: mlockall with
    /// MCL_FUTURE).
    def_sig: u32,
    /// How the running kernel changes mappings where kernels differ.
    kernel: KernelBehaviour,
    /// Faults are counted per region only: no fault-time buckets, no set
    /// of the pages touched (the daemon over its memory cap).
    pub coarse_faults: bool,
}

/// One change to the regions, for `AddressSpace::journal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Journal {
    /// Region `region` got history entry `entry` (its birth, or a change).
    Change {
        region: usize,
        entry: usize,
    },
    Died {
        region: usize,
    },
}

/// A region as the kernel describes it, for seeding and resync.
#[derive(Clone, Debug, PartialEq)]
pub struct Seed {
    pub start: u64,
    pub end: u64,
    pub perms: Perms,
    pub offset: u64,
    pub backing: Backing,
}

impl AddressSpace {
    pub fn new(bucket_ns: u64) -> AddressSpace {
        AddressSpace {
            bucket_ns: bucket_ns.max(1),
            ..Default::default()
        }
    }

    /// Follows `kernel`'s behaviour where kernels differ (the default is
    /// the newest kernels').
    #[must_use]
    pub fn with_kernel(mut self, kernel: KernelBehaviour) -> AddressSpace {
        self.kernel = kernel;
        self
    }

    pub fn live(&self) -> impl Iterator<Item = &Region> {
        self.live.values().map(|&i| &self.regions[i])
    }

    /// The kernel's counters as the live regions make them.
    pub fn counts(&self) -> counters::Counts {
        self.counts
    }

    /// Region `idx` (live) leaves the counts, before a change.
    fn uncount(&mut self, idx: usize) {
        self.counts.remove(&self.regions[idx]);
    }

    /// Region `idx` (live) enters the counts, after a change.
    fn count(&mut self, idx: usize) {
        self.counts.add(&self.regions[idx]);
    }

    #[cfg(test)]
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// Bytes mapped now, and of those the heap and stack.
    pub fn sizes(&self) -> (u64, u64, u64) {
        let (mut mapped, mut heap, mut stack) = (0, 0, 0);
        for r in self.live() {
            mapped += r.len();
            match r.backing {
                Backing::Heap => heap += r.len(),
                Backing::Stack => stack += r.len(),
                _ => {}
            }
        }
        (mapped, heap, stack)
    }

    fn new_region(&mut self, start: u64, end: u64, t_ns: u64, born_by: Cause) -> Region {
        self.next_id += 1;
        Region {
            id: self.next_id,
            start,
            end,
            perms: Perms::default(),
            backing: Backing::Anon,
            offset: 0,
            sig: 0,
            anon_vma: None,
            born_ns: t_ns,
            born_by,
            parent: None,
            died_ns: None,
            died_by: None,
            history: Vec::new(),
            faults: pages::FaultCounts::default(),
            pages: pages::PageSet::default(),
            buckets: Vec::new(),
        }
    }

    /// Adds a region to the live set, recording its birth.
    fn insert(&mut self, mut r: Region) -> usize {
        r.record(r.born_ns, Op::Born);
        let idx = self.regions.len();
        self.live.insert(r.start, idx);
        self.regions.push(r);
        self.count(idx);
        self.journal_change(idx);
        idx
    }

    /// Journals the last history entry of region `idx`.
    fn journal_change(&mut self, idx: usize) {
        if let Some(j) = &mut self.journal {
            let entry = self.regions[idx].history.len() - 1;
            j.push(Journal::Change { region: idx, entry });
        }
    }

    /// The extent of the main stack (`[stack]`), when the model has one.
    pub fn main_stack(&self) -> Option<(u64, u64)> {
        self.live()
            .find(|r| r.backing == Backing::Stack)
            .map(|r| (r.start, r.end))
    }

    /// Keeps a journal of changes from now on (for a consumer that shows
    /// each event's effect).
    pub fn keep_journal(&mut self) {
        self.journal.get_or_insert_with(Vec::new);
    }

    /// Whether changes are journaled (see `keep_journal`).
    pub fn keeps_journal(&self) -> bool {
        self.journal.is_some()
    }

    /// The changes since the journal was started or last cleared, in order;
    /// indexes are valid until regions are forgotten.
    pub fn journal(&self) -> &[Journal] {
        self.journal.as_deref().unwrap_or(&[])
    }

    fn clear_journal(&mut self) {
        if let Some(j) = &mut self.journal {
            j.clear();
        }
    }

    fn kill(&mut self, idx: usize, t_ns: u64, cause: Cause) {
        self.uncount(idx);
        let r = &mut self.regions[idx];
        self.live.remove(&r.start);
        r.died_ns = Some(t_ns.max(r.born_ns));
        r.died_by = Some(cause);
        if let Some(j) = &mut self.journal {
            j.push(Journal::Died { region: idx });
        }
    }

    /// The live region containing `addr`.
    pub fn find(&self, addr: u64) -> Option<usize> {
        let (_, &idx) = self.live.range(..=addr).next_back()?;
        (self.regions[idx].end > addr).then_some(idx)
    }

    /// Live regions overlapping [lo, hi), in address order.
    pub fn overlapping(&self, lo: u64, hi: u64) -> Vec<usize> {
        let mut out = Vec::new();
        if let Some(i) = self.find(lo) {
            out.push(i);
        }
        for (_, &i) in self.live.range(lo..hi) {
            if out.last() != Some(&i) {
                out.push(i);
            }
        }
        out
    }

    /// Splits the live region containing `addr` so that a region starts
    /// there. The left part keeps the identity.
    fn split_at(&mut self, addr: u64, t_ns: u64) {
        let Some(idx) = self.find(addr) else {
            return;
        };
        if self.regions[idx].start == addr {
            return;
        }
        let (left_id, left_start, left_end, perms, backing, offset, sig_bits, anon_vma) = {
            let l = &self.regions[idx];
            (
                l.id,
                l.start,
                l.end,
                l.perms,
                l.backing.clone(),
                l.offset,
                l.sig,
                l.anon_vma,
            )
        };
        let mut right = self.new_region(addr, left_end, t_ns, Cause::Split);
        right.perms = perms;
        right.offset = if backing.has_file() {
            offset + (addr - left_start)
        } else {
            0
        };
        right.backing = backing;
        right.sig = sig_bits;
        right.anon_vma = anon_vma;
        right.parent = Some(left_id);
        self.uncount(idx);
        let l = &mut self.regions[idx];
        right.pages = l.pages.split_off(addr / PAGE);
        l.end = addr;
        l.record(t_ns, Op::Split);
        self.count(idx);
        self.journal_change(idx);
        self.insert(right);
    }

    /// Unmaps [lo, hi): regions inside die of `cause`, regions across an
    /// edge shrink, a region around the hole keeps its left part and its
    /// right part is born by a split.
    pub fn carve(&mut self, lo: u64, hi: u64, t_ns: u64, cause: Cause) {
        if lo >= hi {
            return;
        }
        for idx in self.overlapping(lo, hi) {
            let (start, end) = (self.regions[idx].start, self.regions[idx].end);
            if start >= lo && end <= hi {
                self.kill(idx, t_ns, cause);
            } else if start < lo && end > hi {
                self.split_at(hi, t_ns);
                self.uncount(idx);
                let r = &mut self.regions[idx];
                // One change: [start, lo) stays, [hi, end) was split off
                // (the journal already holds this entry, from split_at).
                r.history.pop();
                r.end = lo;
                let _ = r.pages.split_off(lo / PAGE);
                r.record(t_ns, Op::Split);
                self.count(idx);
            } else if start < lo {
                self.uncount(idx);
                let r = &mut self.regions[idx];
                r.end = lo;
                let _ = r.pages.split_off(lo / PAGE);
                r.record(t_ns, Op::Shrink);
                self.count(idx);
                self.journal_change(idx);
            } else {
                self.live.remove(&start);
                self.uncount(idx);
                let r = &mut self.regions[idx];
                if r.backing.has_file() {
                    r.offset += hi - start;
                }
                r.start = hi;
                r.pages = r.pages.split_off(hi / PAGE);
                r.record(t_ns, Op::Shrink);
                self.count(idx);
                self.journal_change(idx);
                self.live.insert(hi, idx);
            }
        }
    }

    fn mergeable(a: &Region, b: &Region) -> bool {
        if a.end != b.start
            || a.perms != b.perms
            || (a.sig & sig::MERGE_MASK) != (b.sig & sig::MERGE_MASK)
            || a.sig & sig::GROWSDOWN != 0
        {
            return false;
        }
        if let (Some(x), Some(y)) = (a.anon_vma, b.anon_vma) {
            if x != y {
                return false;
            }
        }
        match (&a.backing, &b.backing) {
            (Backing::Anon, Backing::Anon) | (Backing::Heap, Backing::Heap) => true,
            // Pieces of one shared mapping (split by mlock, mprotect...).
            (Backing::Shm { file, .. }, Backing::Shm { file: file2, .. }) => {
                *file != 0 && file == file2 && a.offset + a.len() == b.offset
            }
            (
                Backing::File { dev, ino, .. },
                Backing::File {
                    dev: dev2,
                    ino: ino2,
                    ..
                },
            ) => dev == dev2 && ino == ino2 && a.offset + a.len() == b.offset,
            _ => false,
        }
    }

    /// Merges the live region starting at `start` with its compatible
    /// neighbours, as the kernel does after a change.
    fn merge_around(&mut self, start: u64, t_ns: u64) {
        let Some(&idx) = self.live.get(&start) else {
            return;
        };
        // The changed mapping's anon_vma, which the kernel offers to the
        // neighbours it merges with.
        let incoming = self.regions[idx].anon_vma;
        // With the previous region.
        let mut idx = idx;
        if let Some((_, &prev)) = self.live.range(..start).next_back() {
            if Self::mergeable(&self.regions[prev], &self.regions[idx])
                && self.anon_vma_joins(incoming, self.regions[prev].anon_vma)
            {
                self.join(prev, idx, t_ns);
                idx = prev;
            }
        }
        let end = self.regions[idx].end;
        if let Some(&next) = self.live.get(&end) {
            if Self::mergeable(&self.regions[idx], &self.regions[next])
                && self.anon_vma_joins(incoming, self.regions[next].anon_vma)
            {
                self.join(idx, next, t_ns);
            }
        }
    }

    /// Whether a changed mapping with anon_vma `incoming` may merge with
    /// a neighbour whose anon_vma is `target` (`mergeable` has checked that
    /// two anon_vmas are the same one). Kernels that do not dup an anon_vma
    /// into a neighbour without one (5.10 and 6.1; see
    /// [`KernelBehaviour::faulted_merges_unfaulted`]) refuse that case.
    fn anon_vma_joins(&self, incoming: Option<u64>, target: Option<u64>) -> bool {
        self.kernel.faulted_merges_unfaulted || incoming.is_none() || target.is_some()
    }

    /// Whether `a` and `b` (`a` just below `b`) may share an anon_vma, as
    /// the kernel's `anon_vma_compatible`: adjacent, the same flags but
    /// for the access bits, the same memory (the file's pages following
    /// on).
    fn anon_vma_compatible(a: &Region, b: &Region) -> bool {
        a.end == b.start
            && a.perms.shared == b.perms.shared
            && (a.sig & sig::MERGE_MASK) == (b.sig & sig::MERGE_MASK)
            && match (&a.backing, &b.backing) {
                (Backing::Anon, Backing::Anon) | (Backing::Heap, Backing::Heap) => true,
                (
                    Backing::File { dev, ino, .. },
                    Backing::File {
                        dev: dev2,
                        ino: ino2,
                        ..
                    },
                ) => dev == dev2 && ino == ino2 && a.offset + a.len() == b.offset,
                _ => false,
            }
    }

    /// Gives region `idx` its anon_vma, as the kernel does at the first
    /// private write to it (a fault, or populating it): that of a
    /// compatible neighbour when it has one (`find_mergeable_anon_vma`:
    /// the next mapping first, then the previous), a new one otherwise.
    fn give_anon_vma(&mut self, idx: usize) {
        let r = &self.regions[idx];
        if r.anon_vma.is_some() {
            return;
        }
        let next = self
            .live
            .get(&r.end)
            .map(|&n| &self.regions[n])
            .filter(|n| Self::anon_vma_compatible(r, n))
            .and_then(|n| n.anon_vma);
        let prev = || {
            self.live
                .range(..r.start)
                .next_back()
                .map(|(_, &p)| &self.regions[p])
                .filter(|p| Self::anon_vma_compatible(p, r))
                .and_then(|p| p.anon_vma)
        };
        let found = next.or_else(prev);
        let id = found.unwrap_or_else(|| {
            self.next_anon_vma += 1;
            self.next_anon_vma
        });
        self.regions[idx].anon_vma = Some(id);
    }

    /// The kernel populates [lo, hi) (mlock, MAP_POPULATE, MAP_LOCKED,
    /// mlockall): it writes to the private writable mappings there, which
    /// gives them an anon_vma (a mapping locked on fault is left alone).
    fn populate(&mut self, lo: u64, hi: u64) {
        for idx in self.overlapping(lo, hi) {
            let r = &self.regions[idx];
            if r.perms.write
                && !r.perms.shared
                && r.sig & sig::LOCKONFAULT == 0
                && !matches!(r.backing, Backing::Special(_))
            {
                self.give_anon_vma(idx);
            }
        }
    }

    /// `left` absorbs `right`, its neighbour.
    fn join(&mut self, left: usize, right: usize, t_ns: u64) {
        // The pages (and their faults) go with the memory to the survivor.
        let r = &mut self.regions[right];
        let (end, anon_vma, mut pages) = (r.end, r.anon_vma, std::mem::take(&mut r.pages));
        self.kill(right, t_ns, Cause::Merge);
        self.uncount(left);
        let l = &mut self.regions[left];
        l.end = end;
        l.anon_vma = l.anon_vma.or(anon_vma);
        l.pages.append(&mut pages);
        l.record(t_ns, Op::Merge);
        self.count(left);
        self.journal_change(left);
    }

    /// Takes the kernel's VMA tree at a probe after a change: where the
    /// kernel has one VMA, the model has one region (its regions there are
    /// split at the VMA's edges and joined inside them); where the kernel
    /// has a gap, the model has none. The model's rules predict merges
    /// the kernel may not make (a moved region keeps its page offset, a
    /// forked one its anon_vma chain, ...): the kernel decides. False when
    /// the two cannot be made to agree this way (a hole in the model where
    /// the kernel has a VMA, other protections inside one VMA, a region
    /// in a gap): the model is out of step.
    pub fn follow_kernel(&mut self, t_ns: u64, probe: &crate::event::Probe) -> bool {
        use crate::event::Probe;
        match *probe {
            Probe::None | Probe::Unread => true,
            Probe::Gap { at } => self.find(at).is_none(),
            Probe::Mapped { start, end, .. } => {
                let inside = self.overlapping(start, end);
                let Some(&first) = inside.first() else {
                    return false;
                };
                // The regions must cover the VMA without a hole, and be of
                // one mapping (the kernel joins nothing else).
                let mut at = self.regions[first].start.max(start);
                if at != start {
                    return false;
                }
                for &i in &inside {
                    let r = &self.regions[i];
                    if r.start.max(start) != at
                        || r.perms != self.regions[first].perms
                        || std::mem::discriminant(&r.backing)
                            != std::mem::discriminant(&self.regions[first].backing)
                    {
                        return false;
                    }
                    at = r.end;
                }
                if at < end {
                    return false;
                }
                self.split_at(start, t_ns);
                self.split_at(end, t_ns);
                let inside = self.overlapping(start, end);
                if let Some((&left, rest)) = inside.split_first() {
                    for &right in rest {
                        self.join(left, right, t_ns);
                    }
                }
                true
            }
        }
    }

    /// A successful mmap.
    #[allow(clippy::too_many_arguments)]
    pub fn mmap(
        &mut self,
        t_ns: u64,
        addr: u64,
        len: u64,
        prot: u64,
        flags: u64,
        offset: u64,
        file: Option<(Vec<u8>, (u32, u32), u64)>,
    ) {
        const MAP_SHARED: u64 = 0x01;
        const MAP_SHARED_VALIDATE: u64 = 0x03;
        const MAP_ANONYMOUS: u64 = 0x20;
        const MAP_GROWSDOWN: u64 = 0x100;
        const MAP_LOCKED: u64 = 0x2000;
        const MAP_NORESERVE: u64 = 0x4000;
        const MAP_POPULATE: u64 = 0x8000;
        const MAP_STACK: u64 = 0x20000;
        let end = addr + page_up(len);
        self.carve(addr, end, t_ns, Cause::Replaced);
        let shared = flags & MAP_SHARED_VALIDATE == MAP_SHARED
            || flags & MAP_SHARED_VALIDATE == MAP_SHARED_VALIDATE;
        let mut r = self.new_region(addr, end, t_ns, Cause::Mmap);
        r.perms = Perms::from_prot(prot, shared);
        r.backing = match file {
            Some((path, dev, ino)) if flags & MAP_ANONYMOUS == 0 => {
                Backing::File { path, dev, ino }
            }
            _ if shared => Backing::Shm {
                path: None,
                ino: 0,
                file: self.new_file(),
            },
            _ => Backing::Anon,
        };
        if matches!(r.backing, Backing::File { .. }) {
            r.offset = offset;
        }
        if flags & MAP_GROWSDOWN != 0 {
            r.sig |= sig::GROWSDOWN;
        }
        if flags & MAP_LOCKED != 0 {
            r.sig |= sig::LOCKED;
        }
        // mlockall(MCL_FUTURE): every new mapping is locked.
        r.sig |= self.def_sig;
        if flags & MAP_STACK != 0 {
            r.sig |= sig::MAP_STACK;
            // Since 6.7 MAP_STACK also sets VM_NOHUGEPAGE, which keeps the
            // stack from merging with plain anonymous neighbours.
            if self.kernel.map_stack_nohugepage {
                r.sig |= sig::NOHUGEPAGE;
            }
        }
        let noreserve = flags & MAP_NORESERVE != 0;
        if noreserve {
            r.sig |= sig::NORESERVE;
        }
        if !shared && r.perms.write && !noreserve {
            r.sig |= sig::ACCOUNT;
        }
        let populate = flags & MAP_POPULATE != 0 || r.sig & sig::LOCKED != 0;
        self.insert(r);
        self.merge_around(addr, t_ns);
        // After the merge, as the kernel does.
        if populate {
            self.populate(addr, end);
        }
    }

    pub fn munmap(&mut self, t_ns: u64, addr: u64, len: u64) {
        self.carve(addr, addr + page_up(len), t_ns, Cause::Munmap);
    }

    /// Applies `change` to every live region in [lo, hi) whose attributes
    /// it changes, splitting at the edges only where something changes,
    /// then merges as the kernel does.
    fn modify(
        &mut self,
        lo: u64,
        hi: u64,
        t_ns: u64,
        op: Op,
        change: impl Fn(&Region) -> (Perms, u32),
    ) {
        for idx in self.overlapping(lo, hi) {
            let r = &self.regions[idx];
            let (perms, sig) = change(r);
            if perms == r.perms && sig == r.sig {
                continue;
            }
            let (start, end) = (r.start.max(lo), r.end.min(hi));
            self.split_at(start, t_ns);
            self.split_at(end, t_ns);
            if let Some(&i) = self.live.get(&start) {
                self.uncount(i);
                let r = &mut self.regions[i];
                r.perms = perms;
                r.sig = sig;
                r.record(t_ns, op);
                self.count(i);
                self.journal_change(i);
                self.merge_around(start, t_ns);
            }
        }
    }

    pub fn mprotect(&mut self, t_ns: u64, addr: u64, len: u64, prot: u64) {
        let hi = addr + page_up(len);
        let unaccounts = self.kernel.mprotect_unaccounts_unfaulted;
        self.modify(addr, hi, t_ns, Op::Protect, |r| {
            let perms = Perms::from_prot(prot, r.perms.shared);
            let mut s = r.sig;
            let private = !r.perms.shared;
            if perms.write && private && s & sig::NORESERVE == 0 {
                // Private writable memory is charged (VM_ACCOUNT).
                s |= sig::ACCOUNT;
            } else if unaccounts
                && !perms.write
                && s & sig::ACCOUNT != 0
                && matches!(r.backing, Backing::Anon | Backing::Heap)
                && r.anon_vma.is_none()
            {
                // A read-only anonymous mapping with no pages is uncharged
                // (not on 5.10 or 6.1: KernelBehaviour).
                s &= !sig::ACCOUNT;
            }
            (perms, s)
        });
    }

    /// mprotect that also tags the pages with protection key `pkey` (-1:
    /// none). /proc/PID/maps does not show keys (smaps does), and the
    /// model keeps none: the mappings change as with mprotect.
    pub fn pkey_mprotect(&mut self, t_ns: u64, addr: u64, len: u64, prot: u64, _pkey: i32) {
        self.mprotect(t_ns, addr, len, prot);
    }

    /// The end of the mapped run that starts at `lo`, up to `hi`: the
    /// first hole (`lo` itself when `lo` is not mapped). A call that walks
    /// the range and stops with ENOMEM at a hole (mprotect, mlock) has
    /// changed [lo, that end).
    pub fn mapped_run_end(&self, lo: u64, hi: u64) -> u64 {
        let mut end = lo;
        while end < hi {
            match self.find(end) {
                Some(i) => end = self.regions[i].end,
                None => break,
            }
        }
        end.min(hi).max(lo)
    }

    /// mlock, mlock2 and munlock of [addr, addr + len), which the kernel
    /// widens to whole pages: each mapping's lock bits become `lock`
    /// (LOCKED, LOCKED | LOCKONFAULT, or nothing to unlock), splitting at
    /// the edges and merging as mprotect does. Special mappings (`[vdso]`,
    /// `[vvar]`) are never locked.
    pub fn lock(&mut self, t_ns: u64, addr: u64, len: u64, lock: u32) {
        let lo = page_down(addr);
        let hi = lo.saturating_add(page_up(len.saturating_add(addr - lo)));
        self.lock_range(t_ns, lo, hi, lock);
    }

    /// [`AddressSpace::lock`] of [lo, hi), page aligned.
    pub fn lock_range(&mut self, t_ns: u64, lo: u64, hi: u64, lock: u32) {
        let op = if lock == 0 { Op::Unlock } else { Op::Lock };
        self.modify(lo, hi, t_ns, op, |r| {
            if matches!(r.backing, Backing::Special(_)) {
                return (r.perms, r.sig);
            }
            (r.perms, (r.sig & !sig::LOCK_MASK) | lock)
        });
        // Locked pages are faulted in once the mappings are changed.
        if lock & sig::LOCKED != 0 {
            self.populate(lo, hi);
        }
    }

    /// mlockall (`lock_current`: MCL_CURRENT locks every mapping now,
    /// with `lock` bits) and munlockall (`lock` 0, every mapping). `future`:
    /// the lock bits of the mappings to come (MCL_FUTURE), which replace
    /// the former ones.
    pub fn lock_all(&mut self, t_ns: u64, lock: Option<u32>, future: u32) {
        self.def_sig = future & sig::LOCK_MASK;
        if let Some(lock) = lock {
            self.lock_range(t_ns, 0, u64::MAX, lock);
        }
    }

    /// mseal of [addr, addr + len) (page aligned, all mapped, or the call
    /// fails): the mappings become sealed, split at the edges.
    pub fn mseal(&mut self, t_ns: u64, addr: u64, len: u64) {
        let hi = addr.saturating_add(page_up(len));
        self.modify(addr, hi, t_ns, Op::Seal, |r| (r.perms, r.sig | sig::SEALED));
    }

    /// UFFDIO_REGISTER (`mode`: UFFDIO_REGISTER_MODE_* bits) or
    /// UFFDIO_UNREGISTER (`mode` 0) of [lo, hi), which the kernel checked
    /// whole before changing anything: the mappings' userfaultfd modes
    /// become `mode`'s, split at the edges and merged as mprotect does.
    /// /proc/PID/maps shows the pieces, not the modes.
    pub fn userfaultfd(&mut self, t_ns: u64, lo: u64, hi: u64, mode: u64) {
        let bits = ((mode & 7) as u32) << sig::UFFD_SHIFT;
        self.modify(lo, hi, t_ns, Op::Userfaultfd, |r| {
            (r.perms, (r.sig & !sig::UFFD_MASK) | bits)
        });
    }

    /// A new identity for a shared mapping's file (see `Backing::Shm`).
    fn new_file(&mut self) -> u64 {
        self.next_file += 1;
        self.next_file
    }

    /// A SysV segment attached at `seg.start` (its extent and file as the
    /// kernel shows them), replacing what was there (SHM_REMAP). Each
    /// attach maps the segment through a file of its own: two attaches
    /// never merge.
    pub fn shmat(&mut self, t_ns: u64, seg: &Seed) {
        self.carve(seg.start, seg.end, t_ns, Cause::Replaced);
        let mut r = self.new_region(seg.start, seg.end, t_ns, Cause::Shmat);
        r.perms = seg.perms;
        r.backing = match &seg.backing {
            Backing::Shm { path, ino, .. } => Backing::Shm {
                path: path.clone(),
                ino: *ino,
                file: self.new_file(),
            },
            other => other.clone(),
        };
        r.offset = seg.offset;
        r.sig = self.def_sig;
        self.insert(r);
    }

    /// shmdt of the segment attached at `addr`, as the kernel finds it:
    /// the first SysV mapping at or above `addr` whose offset in the
    /// segment is its distance from `addr`, and with it every other piece
    /// of that segment above `addr` at its place (a segment split by
    /// mprotect, mlock or munmap). Returns false when there is none (the
    /// model is out of step: the call succeeded).
    pub fn shmdt(&mut self, t_ns: u64, addr: u64) -> bool {
        let at_its_place = |r: &Region| r.backing.is_sysv() && r.offset == r.start - addr;
        let first = self
            .live
            .range(addr..)
            .map(|(_, &i)| i)
            .find(|&i| at_its_place(&self.regions[i]));
        let Some(first) = first else {
            return false;
        };
        let ino = match &self.regions[first].backing {
            Backing::Shm { ino, .. } => *ino,
            _ => 0,
        };
        let pieces: Vec<(u64, u64)> = self
            .live
            .range(addr..)
            .map(|(_, &i)| &self.regions[i])
            .filter(|r| {
                at_its_place(r) && matches!(r.backing, Backing::Shm { ino: i, .. } if i == ino)
            })
            .map(|r| (r.start, r.end))
            .collect();
        for (start, end) in pieces {
            self.carve(start, end, t_ns, Cause::Shmdt);
        }
        true
    }

    /// remap_file_pages of [addr, addr + size) to the pages from `pgoff`
    /// of the file of the shared mapping at `addr`. Since 4.0 the kernel
    /// does it as an mmap (MAP_SHARED | MAP_FIXED, the mapping's
    /// protection, MAP_LOCKED if it was locked) of that file at
    /// `pgoff`: a new mapping over the range, merged with its neighbours
    /// where the file's pages follow on. Returns false when no shared file
    /// mapping starts the range (the model is out of step: the call
    /// succeeded).
    pub fn remap_file_pages(&mut self, t_ns: u64, addr: u64, size: u64, pgoff: u64) -> bool {
        let lo = page_down(addr);
        let hi = lo.saturating_add(page_down(size));
        let Some(src) = self.find(lo) else {
            return false;
        };
        let s = &self.regions[src];
        if !s.perms.shared || !s.backing.has_file() || hi <= lo {
            return false;
        }
        let (perms, backing, locked, parent) =
            (s.perms, s.backing.clone(), s.sig & sig::LOCKED, s.id);
        self.carve(lo, hi, t_ns, Cause::Replaced);
        let mut r = self.new_region(lo, hi, t_ns, Cause::Mmap);
        r.perms = perms;
        r.backing = backing;
        r.offset = pgoff.saturating_mul(PAGE);
        r.sig = locked | self.def_sig;
        r.parent = Some(parent);
        self.insert(r);
        self.merge_around(lo, t_ns);
        true
    }

    pub fn madvise(&mut self, t_ns: u64, addr: u64, len: u64, advice: u64) {
        let (set, clear) = match advice as i32 {
            libc::MADV_NORMAL => (0, sig::RAND | sig::SEQ),
            libc::MADV_RANDOM => (sig::RAND, sig::SEQ),
            libc::MADV_SEQUENTIAL => (sig::SEQ, sig::RAND),
            libc::MADV_DONTFORK => (sig::DONTFORK, 0),
            libc::MADV_DOFORK => (0, sig::DONTFORK),
            libc::MADV_DONTDUMP => (sig::DONTDUMP, 0),
            libc::MADV_DODUMP => (0, sig::DONTDUMP),
            libc::MADV_WIPEONFORK => (sig::WIPEONFORK, 0),
            libc::MADV_KEEPONFORK => (0, sig::WIPEONFORK),
            libc::MADV_HUGEPAGE => (sig::HUGEPAGE, sig::NOHUGEPAGE),
            libc::MADV_NOHUGEPAGE => (sig::NOHUGEPAGE, sig::HUGEPAGE),
            libc::MADV_MERGEABLE => (sig::MERGEABLE, 0),
            libc::MADV_UNMERGEABLE => (0, sig::MERGEABLE),
            // The others change pages, not mappings.
            _ => return,
        };
        let hi = addr + page_up(len);
        self.modify(addr, hi, t_ns, Op::Advise, |r| {
            (r.perms, (r.sig | set) & !clear)
        });
    }

    /// A successful brk from `old` to `new` (the program breaks, not page
    /// aligned); the heap spans [start_brk, page_up(brk)).
    pub fn brk(&mut self, t_ns: u64, start_brk: u64, old: u64, new: u64) {
        let (old_end, new_end) = (page_up(old.max(start_brk)), page_up(new.max(start_brk)));
        if new_end < old_end {
            self.carve(new_end, old_end, t_ns, Cause::Brk);
            return;
        }
        if new_end == old_end {
            return;
        }
        // Grow: expand the heap region that ends at the old break, if any.
        if let Some(idx) = old_end.checked_sub(1).and_then(|a| self.find(a)) {
            let r = &self.regions[idx];
            if r.end == old_end
                && r.start >= page_down(start_brk)
                && matches!(r.backing, Backing::Heap | Backing::Anon)
                && r.perms == Perms::from_prot(3, false)
                // The kernel only extends a heap whose flags are those of
                // the new pages (locked or not, since mlockall).
                && r.sig & sig::LOCK_MASK == self.def_sig
            {
                self.uncount(idx);
                let r = &mut self.regions[idx];
                r.end = new_end;
                r.backing = Backing::Heap;
                r.record(t_ns, Op::Grow);
                self.count(idx);
                self.journal_change(idx);
                return;
            }
        }
        self.carve(old_end, new_end, t_ns, Cause::Replaced);
        let mut r = self.new_region(old_end, new_end, t_ns, Cause::Brk);
        r.perms = Perms::from_prot(3, false);
        r.backing = Backing::Heap;
        r.sig = sig::ACCOUNT | self.def_sig;
        self.insert(r);
    }

    /// Before a brk from `old` to `new` is applied again over a snapshot
    /// read while it ran: the heap is made to end at `old`, where the call
    /// found it (the snapshot may show it ending anywhere), and the room a
    /// growth takes is cleared. The brk then applies as it did.
    pub fn reset_break(&mut self, t_ns: u64, start_brk: u64, old: u64, new: u64) {
        let old_end = page_up(old.max(start_brk));
        let mut to = page_up(new.max(start_brk)).max(old_end);
        if let Some(i) = old_end.checked_sub(1).and_then(|a| self.find(a)) {
            if self.regions[i].backing == Backing::Heap {
                to = to.max(self.regions[i].end);
            }
        }
        self.carve(old_end, to, t_ns, Cause::Brk);
    }

    /// The grows-down stack moved its start from `old_start` to `new_start`.
    /// Returns false when no region started at `old_start`.
    pub fn grow_stack(&mut self, t_ns: u64, old_start: u64, new_start: u64) -> bool {
        let Some(idx) = self.live.remove(&old_start) else {
            return false;
        };
        self.uncount(idx);
        let r = &mut self.regions[idx];
        r.start = new_start;
        r.record(t_ns, Op::Grow);
        self.count(idx);
        self.live.insert(new_start, idx);
        self.journal_change(idx);
        true
    }

    /// A successful mremap.
    #[allow(clippy::too_many_arguments)]
    pub fn mremap(
        &mut self,
        t_ns: u64,
        old_addr: u64,
        old_len: u64,
        new_len: u64,
        flags: u64,
        ret: u64,
    ) {
        const MREMAP_FIXED: u64 = 2;
        const MREMAP_DONTUNMAP: u64 = 4;
        let (old_len, new_len) = (page_up(old_len), page_up(new_len));
        if old_len == 0 {
            // A second mapping of shared memory.
            if let Some(src) = self.find(old_addr) {
                let s = self.regions[src].clone();
                let mut r = self.new_region(ret, ret + new_len, t_ns, Cause::Mremap);
                r.perms = s.perms;
                r.backing = s.backing.clone();
                r.offset = s.offset + (old_addr - s.start);
                r.sig = s.sig;
                r.parent = Some(s.id);
                self.carve(ret, ret + new_len, t_ns, Cause::Replaced);
                self.insert(r);
            }
            return;
        }
        if ret == old_addr {
            if new_len < old_len {
                self.carve(old_addr + new_len, old_addr + old_len, t_ns, Cause::Mremap);
            } else if new_len > old_len {
                if let Some(idx) = self.find(old_addr + old_len - 1) {
                    self.uncount(idx);
                    let r = &mut self.regions[idx];
                    r.end = old_addr + new_len;
                    r.record(t_ns, Op::Grow);
                    let start = r.start;
                    self.count(idx);
                    self.journal_change(idx);
                    // Before 5.19 the kernel only extends the mapping.
                    if self.kernel.mremap_grow_merges {
                        self.merge_around(start, t_ns);
                    }
                }
            }
            return;
        }
        // Moved.
        if flags & MREMAP_FIXED != 0 {
            self.carve(ret, ret + new_len, t_ns, Cause::Replaced);
        }
        if new_len < old_len {
            self.carve(old_addr + new_len, old_addr + old_len, t_ns, Cause::Mremap);
        }
        self.split_at(old_addr, t_ns);
        self.split_at(old_addr + old_len.min(new_len), t_ns);
        let Some(&idx) = self.live.get(&old_addr) else {
            return;
        };
        if flags & MREMAP_DONTUNMAP != 0 {
            let s = self.regions[idx].clone();
            let mut r = self.new_region(ret, ret + new_len, t_ns, Cause::Mremap);
            r.perms = s.perms;
            r.backing = s.backing.clone();
            r.offset = s.offset;
            r.sig = s.sig;
            r.anon_vma = s.anon_vma;
            r.parent = Some(s.id);
            r.pages = s.pages.shifted(old_addr / PAGE, ret / PAGE);
            self.regions[idx].pages = pages::PageSet::default();
            self.insert(r);
            self.merge_around(ret, t_ns);
            return;
        }
        self.live.remove(&old_addr);
        self.uncount(idx);
        let r = &mut self.regions[idx];
        r.pages = r.pages.shifted(old_addr / PAGE, ret / PAGE);
        r.start = ret;
        r.end = ret + new_len;
        r.record(t_ns, Op::Move);
        self.count(idx);
        self.live.insert(ret, idx);
        self.journal_change(idx);
        self.merge_around(ret, t_ns);
    }

    /// Forgets live regions seeded from /proc after `t_ns`: a snapshot read
    /// after that moment (say, of a process already past an exec the model
    /// has not applied yet) describes a later state, not one to end.
    pub fn discard_seeded_after(&mut self, t_ns: u64) {
        if self.journal.is_some() {
            // Their births may have been reported: report their end too
            // (at their birth: their life is empty).
            let later: Vec<usize> = self
                .live
                .values()
                .copied()
                .filter(|&i| {
                    let r = &self.regions[i];
                    r.born_by == Cause::Proc && r.born_ns > t_ns
                })
                .collect();
            for idx in later {
                self.kill(idx, t_ns, Cause::Exec);
            }
            return;
        }
        self.regions
            .retain(|r| !(r.died_ns.is_none() && r.born_by == Cause::Proc && r.born_ns > t_ns));
        self.live = self
            .regions
            .iter()
            .enumerate()
            .filter(|(_, r)| r.died_ns.is_none())
            .map(|(i, r)| (r.start, i))
            .collect();
        self.counts = counters::recount(self);
        self.clear_journal();
    }

    /// A new address space (exec): mlockall's MCL_FUTURE does not carry
    /// over.
    pub fn new_mm(&mut self) {
        self.def_sig = 0;
    }

    /// Every live region dies (exec replaces the address space, exit
    /// tears it down).
    pub fn end_all(&mut self, t_ns: u64, cause: Cause) {
        let all: Vec<usize> = self.live.values().copied().collect();
        for idx in all {
            self.kill(idx, t_ns, cause);
        }
    }

    /// Adds regions as the kernel shows them (at exec, for a process found
    /// running, or after drift).
    pub fn seed(&mut self, t_ns: u64, seeds: &[Seed], born_by: Cause) {
        for s in seeds {
            let mut r = self.new_region(s.start, s.end, t_ns, born_by);
            r.perms = s.perms;
            r.backing = s.backing.clone();
            r.offset = s.offset;
            if r.backing == Backing::Stack {
                r.sig |= sig::GROWSDOWN;
            }
            if !r.perms.shared && r.perms.write {
                r.sig |= sig::ACCOUNT;
            }
            self.insert(r);
        }
        // Neighbours the maps show apart although they look mergeable
        // differ in what the maps do not show (an anon_vma of copied
        // pages, VM_ACCOUNT kept by an mprotect that dropped write: a
        // library's RELRO part beside its read-only part): they stay
        // apart, as in the kernel, whatever later changes around them.
        let seeded: Vec<usize> = seeds
            .iter()
            .filter_map(|s| self.live.get(&s.start).copied())
            .collect();
        for pair in seeded.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if Self::mergeable(&self.regions[a], &self.regions[b]) {
                for idx in [a, b] {
                    if self.regions[idx].anon_vma.is_none() {
                        self.next_anon_vma += 1;
                        self.regions[idx].anon_vma = Some(self.next_anon_vma);
                    }
                }
            }
        }
    }

    /// The child's copy at fork: every live region but MADV_DONTFORK ones,
    /// with `parent` naming the parent's region.
    #[must_use]
    pub fn fork_copy(&self, t_ns: u64) -> AddressSpace {
        let mut child = AddressSpace::new(self.bucket_ns).with_kernel(self.kernel);
        if self.journal.is_some() {
            child.keep_journal();
        }
        // The child maps the parent's files (the same ones): its own come
        // after them.
        child.next_file = self.next_file;
        for r in self.live() {
            if r.sig & sig::DONTFORK != 0 {
                continue;
            }
            let mut c = child.new_region(r.start, r.end, t_ns, Cause::Fork);
            c.perms = r.perms;
            c.backing = r.backing.clone();
            c.offset = r.offset;
            // Locks are not inherited (nor is mlockall's MCL_FUTURE), nor
            // a userfaultfd registration, unless the userfaultfd asked for
            // fork events (UFFD_FEATURE_EVENT_FORK, not seen here: then
            // the counters catch the difference at the child's next call).
            c.sig = r.sig & !(sig::LOCK_MASK | sig::UFFD_MASK);
            c.parent = Some(r.id);
            // The child gets anon_vmas of its own.
            if r.anon_vma.is_some() {
                child.next_anon_vma += 1;
                c.anon_vma = Some(child.next_anon_vma);
            }
            child.insert(c);
        }
        child
    }

    /// Counts a fault at `addr`. A fault just below a grows-down region
    /// belongs to it: the stack grows to take it.
    pub fn fault(&mut self, t_ns: u64, addr: u64, access: crate::event::Access, present: bool) {
        let idx = match self.find(addr) {
            Some(i) => Some(i),
            None => self
                .live
                .range(addr..)
                .next()
                .map(|(_, &i)| i)
                .filter(|&i| self.regions[i].sig & sig::GROWSDOWN != 0),
        };
        let Some(idx) = idx else {
            self.unattributed_faults += 1;
            return;
        };
        let keep_buckets = self.journal.is_none() && !self.coarse_faults;
        let bucket = (t_ns / self.bucket_ns) as usize;
        let r = &mut self.regions[idx];
        if keep_buckets {
            if r.buckets.len() <= bucket {
                r.buckets.resize(bucket + 1, 0);
            }
            r.buckets[bucket] += 1;
        }
        if !self.coarse_faults {
            r.pages.insert(addr / PAGE);
        }
        let f = &mut r.faults;
        f.first_ns.get_or_insert(t_ns);
        f.last_ns = Some(t_ns);
        match access {
            crate::event::Access::Read => f.read += 1,
            crate::event::Access::Write => f.write += 1,
            crate::event::Access::Exec => f.exec += 1,
        }
        if present {
            f.present += 1;
        }
        let private_write = access == crate::event::Access::Write && !r.perms.shared;
        if private_write {
            self.give_anon_vma(idx);
        }
    }

    /// Makes the live regions the kernel's, keeping matches intact: a
    /// region the kernel has at the same start but otherwise different goes
    /// on as the kernel has it (a `drift` entry in its history); any other
    /// mismatch dies (`drift`), and what the kernel has that the model does
    /// not is born (`drift`).
    pub fn resync(&mut self, t_ns: u64, kernel: &[Seed]) {
        let model: Vec<(usize, Seed)> = self
            .live
            .values()
            .map(|&i| (i, seed_of(&self.regions[i])))
            .collect();
        let missing: Vec<Seed> = kernel
            .iter()
            .filter(|k| !model.iter().any(|(_, s)| maps::same(k, s)))
            .cloned()
            .collect();
        let mut resynced: Vec<(usize, Seed)> = Vec::new();
        for (idx, s) in &model {
            if kernel.iter().any(|k| maps::same(k, s)) {
                continue;
            }
            match missing.iter().find(|k| k.start == s.start) {
                Some(k) => resynced.push((*idx, k.clone())),
                None => self.kill(*idx, t_ns, Cause::Drift),
            }
        }
        for (idx, k) in &resynced {
            // Out of the live set while its new extent is cleared.
            self.uncount(*idx);
            self.live.remove(&k.start);
            self.carve(k.start, k.end, t_ns, Cause::Drift);
            let r = &mut self.regions[*idx];
            r.end = k.end;
            r.perms = k.perms;
            r.offset = k.offset;
            let same_file = match (&r.backing, &k.backing) {
                (Backing::Shm { ino: a, .. }, Backing::Shm { ino: b, .. }) => a == b,
                (a, b) => a == b,
            };
            if !same_file {
                r.backing = k.backing.clone();
            }
            if r.backing == Backing::Stack {
                r.sig |= sig::GROWSDOWN;
            }
            let _ = r.pages.split_off(k.end / PAGE);
            r.record(t_ns, Op::Drift);
            self.live.insert(k.start, *idx);
            self.count(*idx);
            self.journal_change(*idx);
        }
        let born: Vec<Seed> = missing
            .into_iter()
            .filter(|k| !resynced.iter().any(|(_, r)| r.start == k.start))
            .collect();
        for s in &born {
            self.carve(s.start, s.end, t_ns, Cause::Drift);
        }
        // Found in /proc at the check: the history starts there.
        self.seed(t_ns, &born, Cause::Drift);
    }
}

/// A region in the kernel's terms.
pub fn seed_of(r: &Region) -> Seed {
    Seed {
        start: r.start,
        end: r.end,
        perms: r.perms,
        offset: r.offset,
        backing: r.backing.clone(),
    }
}

#[cfg(test)]
mod tests;
