//! Maps, loader-set globals, filtering and the record header: what every
//! hook shares.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
    },
    macros::map,
    maps::{ring_buf::RingBufEntry, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    Global,
};
use tracer_common::{
    Config, EventHeader, EventKind, FaultCounts, MmCounters, MmSeq, Offsets, CGROUP_FILTER_MAX,
    CGROUP_MAX_DEPTH, CGROUP_V1_MEMORY, CGROUP_V2, COMM_LEN, ERRORS_NO_KIND,
    FILTER_CGROUP_V1_MEMORY, FILTER_CGROUP_V2, FILTER_COMM, FILTER_PID, KIND_SLOTS, MM_SETTLED,
    RSS_MEMBERS,
};

use crate::kernel::{current_task, read, read_counters};

#[unsafe(no_mangle)]
pub static CONFIG: Global<Config> = Global::new(Config::ZERO);

/// Set by the loader. Read in place through [`offsets`], never copied: a
/// copy is 300 bytes of a 512-byte stack (and 5.10's verifier counts
/// every frame of a call chain against it).
#[unsafe(no_mangle)]
pub static OFFSETS: Offsets = Offsets::ZERO;

/// The records. Its size is set by the loader (`--buffer-size`).
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Events that could not be reserved, per CPU and per kind.
#[map(name = "LOST")]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(KIND_SLOTS as u32, 0);

/// Failures, per CPU and per kind (slot ERRORS_NO_KIND: of no kind): a
/// record or kernel field that could not be read, a full map. The event is
/// dropped, or made without the field.
#[map(name = "ERRORS")]
pub static ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(KIND_SLOTS as u32, 0);

/// Traced processes (tgid) when FILTER_PID is set.
#[map(name = "PID_FILTER")]
pub static PID_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

/// Traced comms when FILTER_COMM is set.
#[map(name = "COMM_FILTER")]
pub static COMM_FILTER: HashMap<[u8; COMM_LEN], u8> = HashMap::with_max_entries(256, 0);

/// Selected cgroups when FILTER_CGROUP_* is set: `[CGROUP_V2 or
/// CGROUP_V1_MEMORY, the cgroup's kernfs id]`.
#[map(name = "CGROUP_FILTER")]
pub static CGROUP_FILTER: HashMap<[u64; 2], u8> = HashMap::with_max_entries(CGROUP_FILTER_MAX, 0);

/// RSS counters per process (bytes), when `track_rss` is set.
#[map(name = "RSS")]
pub static RSS: HashMap<u32, [i64; RSS_MEMBERS]> = HashMap::with_max_entries(16384, 0);

/// Fault counts per process for `--faults summary`.
#[map(name = "FAULT_COUNTS")]
pub static FAULT_COUNTS: PerCpuHashMap<u32, FaultCounts> =
    PerCpuHashMap::with_max_entries(16384, 0);

/// Memory syscalls in flight and exited, per address space (the address of
/// its mm_struct), when `Config::mm_counters` is set. LRU: an address
/// space that is gone (or a call whose exit was never seen) cannot fill it.
#[map(name = "MM_SEQ")]
pub static MM_SEQ: LruHashMap<u64, MmSeq> = LruHashMap::with_max_entries(16384, 0);

#[inline(always)]
pub fn config() -> Config {
    CONFIG.load()
}

/// [`OFFSETS`], through a pointer the compiler cannot see through (the
/// loader rewrites the value it was compiled with).
#[inline(always)]
pub fn offsets() -> &'static Offsets {
    let p: *const Offsets = &raw const OFFSETS;
    // SAFETY: a volatile read of a local; the pointer read is the static's,
    // valid for the program's life.
    unsafe { &*core::ptr::read_volatile(&p) }
}

/// (tgid, tid) of the current task.
#[inline(always)]
pub fn current_ids() -> (u32, u32) {
    let id = bpf_get_current_pid_tgid();
    ((id >> 32) as u32, id as u32)
}

#[inline(always)]
pub fn kind_enabled(cfg: &Config, kind: EventKind) -> bool {
    cfg.kind_mask & kind.bit() != 0
}

/// Whether events of process `tgid` (the current task's) are wanted.
#[inline(always)]
pub fn traced(cfg: &Config, tgid: u32) -> bool {
    if tgid == cfg.self_tgid {
        return false;
    }
    if cfg.filter & (FILTER_PID | FILTER_COMM | FILTER_CGROUPS) == 0 {
        return true;
    }
    if cfg.filter & FILTER_PID != 0 && PID_FILTER.get_ptr(tgid).is_some() {
        return true;
    }
    if cfg.filter & FILTER_COMM != 0 {
        if let Ok(comm) = bpf_get_current_comm() {
            if COMM_FILTER.get_ptr(comm).is_some() {
                return true;
            }
        }
    }
    cfg.filter & FILTER_CGROUPS != 0 && in_selected_cgroup(cfg)
}

const FILTER_CGROUPS: u32 = FILTER_CGROUP_V2 | FILTER_CGROUP_V1_MEMORY;

/// Whether the current task is in a selected cgroup or below one (at most
/// [`CGROUP_MAX_DEPTH`] levels), in either hierarchy selected. Its cgroup
/// now, read from the task (`task->cgroups`): a process moved in or out
/// is selected from its next event on.
#[inline(always)]
fn in_selected_cgroup(cfg: &Config) -> bool {
    let off = offsets();
    let Ok(cset) = read::<u64>(current_task(), off.task_cgroups) else {
        return false;
    };
    if cfg.filter & FILTER_CGROUP_V2 != 0 {
        if let Ok(cgrp) = read::<u64>(cset, off.css_set_dfl_cgrp) {
            if cgroup_selected(CGROUP_V2, cgrp, off) {
                return true;
            }
        }
    }
    if cfg.filter & FILTER_CGROUP_V1_MEMORY != 0 {
        if let Ok(css) = read::<u64>(cset, off.css_set_memory) {
            if let Ok(cgrp) = read::<u64>(css, off.css_cgroup) {
                return cgroup_selected(CGROUP_V1_MEMORY, cgrp, off);
            }
        }
    }
    false
}

/// Whether `cgrp` (a `struct cgroup *` of `hierarchy`) or one of its
/// ancestors is in `CGROUP_FILTER`: up its kernfs directories.
#[inline(always)]
fn cgroup_selected(hierarchy: u64, cgrp: u64, off: &Offsets) -> bool {
    let Ok(mut kn) = read::<u64>(cgrp, off.cgroup_kn) else {
        return false;
    };
    for _ in 0..CGROUP_MAX_DEPTH + 1 {
        let Ok(id) = read::<u64>(kn, off.kn_id) else {
            return false;
        };
        if CGROUP_FILTER.get_ptr([hierarchy, id]).is_some() {
            return true;
        }
        match read::<u64>(kn, off.kn_parent) {
            // 0 above the top: `read` refuses it.
            Ok(parent) => kn = parent,
            Err(_) => return false,
        }
    }
    false
}

/// Fills a record header for the current task.
///
/// # Safety
/// `h` points into a reserved ring buffer record.
#[inline(always)]
pub unsafe fn fill_header(h: *mut EventHeader, kind: EventKind) {
    let id = bpf_get_current_pid_tgid();
    unsafe {
        (*h).ts_ns = bpf_ktime_get_ns();
        (*h).kind = kind as u32;
        (*h).cpu = bpf_get_smp_processor_id();
        (*h).tgid = (id >> 32) as u32;
        (*h).tid = id as u32;
        (*h).comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
    }
}

/// Counts an event of `kind` that could not be reserved.
#[inline(always)]
pub fn count_lost(kind: EventKind) {
    if let Some(slot) = LOST.get_ptr_mut(kind as u32) {
        // SAFETY: a per-CPU slot; no other writer on this CPU meanwhile.
        unsafe { *slot += 1 };
    }
}

/// A failed helper call: what the program was doing, and the error.
#[derive(Clone, Copy)]
pub struct Fail {
    pub what: &'static str,
    pub err: i64,
}

pub trait OrFail<T> {
    /// Names the failure.
    fn or_fail(self, what: &'static str) -> Result<T, Fail>;
}

impl<T> OrFail<T> for Result<T, i64> {
    #[inline(always)]
    fn or_fail(self, what: &'static str) -> Result<T, Fail> {
        self.map_err(|err| Fail { what, err })
    }
}

/// Helpers and maps return a C `long`, an i32 on this target.
impl<T> OrFail<T> for Result<T, i32> {
    #[inline(always)]
    fn or_fail(self, what: &'static str) -> Result<T, Fail> {
        self.map_err(|err| Fail {
            what,
            err: err.into(),
        })
    }
}

/// Counts a failure of a program making events of `kind` (None: of no
/// kind), and with diagnostics on says why (only failures log: the hot
/// path never reaches this).
#[inline(always)]
pub fn failed(kind: Option<EventKind>, fail: Fail) {
    let slot = match kind {
        Some(k) => k as u32,
        None => ERRORS_NO_KIND,
    };
    if let Some(n) = ERRORS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot; no other writer on this CPU meanwhile.
        unsafe { *n += 1 };
    }
    if config().diagnostics != 0 {
        let of = match kind {
            Some(k) => k.name(),
            None => "rss",
        };
        // The context argument is only evaluated by the macro.
        aya_log_ebpf::debug!(
            &(),
            "{} event: {} failed (error {})",
            of,
            fail.what,
            fail.err
        );
    }
}

/// An entry point's return value; a failure is counted.
#[inline(always)]
pub fn done(kind: Option<EventKind>, r: Result<u32, Fail>) -> u32 {
    match r {
        Ok(v) => v,
        Err(f) => {
            failed(kind, f);
            0
        }
    }
}

/// A field the event can go on without: its value, or after counting the
/// failure the default (0, which the decoder takes as unknown).
#[inline(always)]
pub fn or_zero<T: Default>(kind: EventKind, r: Result<T, i64>, what: &'static str) -> T {
    match r {
        Ok(v) => v,
        Err(err) => {
            failed(Some(kind), Fail { what, err });
            T::default()
        }
    }
}

/// Submits a record, waking the reader only once `wakeup_bytes` are
/// waiting; below that it polls on its timer (a wakeup per event costs
/// microseconds per event).
///
/// Above it, every record wakes the reader. Waking it only with the record
/// that crosses the threshold was tried: a reader that lags then stops
/// slowing the traced program by these interrupts, and the debug build's
/// `record` lost 40% of a 500 000 events/s burst of five threads that it
/// keeps whole with this rule (the release build lost nothing either way).
/// So the interrupts are, in effect, the back-pressure that keeps loss
/// away (README, "How it works", the ring buffer).
#[inline(always)]
pub fn submit<T>(entry: RingBufEntry<T>, cfg: &Config) {
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= cfg.wakeup_bytes {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags as u64);
}

/// Adds `v` (wrapping) to a shared counter of `MM_SEQ` in one atomic
/// instruction (BPF_XADD, which every kernel has): the threads of a process
/// run on several CPUs. Rust has no atomic read-modify-write for BPF, so it
/// is written out.
#[inline(always)]
pub fn atomic_add(p: *mut u64, v: u64) {
    #[cfg(target_arch = "bpf")]
    // SAFETY: `p` points into a map value, 8-byte aligned.
    unsafe {
        core::arch::asm!("lock *(u64 *)({p} + 0) += {v}", p = in(reg) p, v = in(reg) v);
    }
    #[cfg(not(target_arch = "bpf"))]
    let _ = (p, v);
}

/// Reads a shared counter of `MM_SEQ`.
#[inline(always)]
pub fn atomic_load(p: *mut u64) -> u64 {
    // SAFETY: `p` points into a map value, 8-byte aligned; an aligned 8-byte
    // load is never torn.
    unsafe { core::ptr::read_volatile(p) }
}

/// Counts a memory syscall of address space `mm` in flight; false when it
/// could not be counted (then its exit must not count it out).
#[inline(always)]
pub fn mm_call_enter(mm: u64) -> bool {
    if MM_SEQ.get_ptr_mut(mm).is_none() {
        // Another thread may insert it meanwhile: either entry will do.
        let _ = MM_SEQ.insert(mm, MmSeq::default(), BPF_NOEXIST as u64);
    }
    match MM_SEQ.get_ptr_mut(mm) {
        Some(s) => {
            // SAFETY: a value of MM_SEQ.
            atomic_add(unsafe { &raw mut (*s).in_flight }, 1);
            true
        }
        None => false,
    }
}

/// The address space `mm` freshly made by exec: whatever was counted for a
/// former one at the same address is void.
#[inline(always)]
pub fn mm_forget(mm: u64) {
    let _ = MM_SEQ.remove(mm);
}

/// A change of an address space being recorded, for settling its counters
/// ([`MM_SETTLED`]).
///
/// Order: [`MmRecord::begin`] before the record is reserved, then
/// [`MmRecord::counters`] into the reserved record, then (for a syscall)
/// [`MmRecord::exited`] after it is submitted. The counters belong to the
/// record alone when, once they are read, no call of the address space but
/// the caller's is in flight and none has exited since `begin`: every
/// change they hold then has its record before this one in the ring buffer
/// (a call counts itself out only after submitting), and every later change
/// will have its record after it.
pub struct MmRecord {
    mm: u64,
    /// Null when the address space has no entry. (Not an Option: its None
    /// leaves the pointer undefined, and a register spilled undefined is
    /// refused by the verifier.)
    seq: *mut MmSeq,
    exited_before: u64,
    /// A syscall the enter counted in flight (its exit counts it out).
    counted: bool,
}

impl MmRecord {
    /// `mm`: the address space (0: unknown, nothing is read). `counted`:
    /// the caller is a syscall its enter counted in flight.
    #[inline(always)]
    pub fn begin(mm: u64, counted: bool) -> MmRecord {
        let seq = if mm != 0 {
            MM_SEQ.get_ptr_mut(mm).unwrap_or(core::ptr::null_mut())
        } else {
            core::ptr::null_mut()
        };
        let exited_before = if seq.is_null() {
            0
        } else {
            // SAFETY: a value of MM_SEQ.
            atomic_load(unsafe { &raw mut (*seq).exited })
        };
        MmRecord {
            mm,
            seq,
            exited_before,
            counted,
        }
    }

    /// The address space whose counters are read (0: none are).
    #[inline(always)]
    pub fn mm(&self) -> u64 {
        self.mm
    }

    /// The counters now, settled or not. An address space no call was
    /// ever counted for has none in flight.
    #[inline(always)]
    pub fn counters(&self, off: &Offsets) -> MmCounters {
        if self.mm == 0 {
            return MmCounters::ZERO;
        }
        let mut c = read_counters(self.mm, off);
        c.mm = self.mm;
        let (in_flight, exited) = match (!self.seq.is_null()).then_some(self.seq) {
            // SAFETY: a value of MM_SEQ.
            Some(s) => unsafe {
                (
                    atomic_load(&raw mut (*s).in_flight),
                    atomic_load(&raw mut (*s).exited),
                )
            },
            None => (0, 0),
        };
        let own = u64::from(self.counted);
        if c.flags != 0 && in_flight == own && exited == self.exited_before {
            c.flags |= MM_SETTLED;
        }
        c
    }

    /// A syscall's record is submitted (or dropped): it is no longer in
    /// flight.
    #[inline(always)]
    pub fn exited(self) {
        if !self.counted {
            return;
        }
        if let Some(s) = (!self.seq.is_null()).then_some(self.seq) {
            // SAFETY: a value of MM_SEQ.
            let (exited, in_flight) = unsafe { (&raw mut (*s).exited, &raw mut (*s).in_flight) };
            atomic_add(exited, 1);
            // Not below 0, should the entry have been evicted and made anew
            // since the enter (then the address space stays unsettled).
            if atomic_load(in_flight) != 0 {
                atomic_add(in_flight, u64::MAX);
            }
        }
    }
}

/// A change by the current task outside any traced syscall (exec, stack
/// growth) of address space `mm`, to begin before its record is reserved;
/// its counters are read only when they are wanted.
#[inline(always)]
pub fn mm_change(cfg: &Config, mm: u64) -> MmRecord {
    MmRecord::begin(if cfg.mm_counters != 0 { mm } else { 0 }, false)
}
