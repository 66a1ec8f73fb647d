//! Maps, loader-set globals, filtering and the record header: what every
//! hook shares.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
    },
    macros::map,
    maps::{HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    Global,
};
use tracer_common::{
    Config, EventHeader, EventKind, FaultCounts, Offsets, COMM_LEN, ERRORS_NO_KIND, FILTER_COMM,
    FILTER_PID, KIND_SLOTS, RSS_MEMBERS,
};

#[unsafe(no_mangle)]
pub static CONFIG: Global<Config> = Global::new(Config::ZERO);

#[unsafe(no_mangle)]
pub static OFFSETS: Global<Offsets> = Global::new(Offsets::ZERO);

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

/// RSS counters per process (bytes), when `track_rss` is set.
#[map(name = "RSS")]
pub static RSS: HashMap<u32, [i64; RSS_MEMBERS]> = HashMap::with_max_entries(16384, 0);

/// Fault counts per process for `--faults summary`.
#[map(name = "FAULT_COUNTS")]
pub static FAULT_COUNTS: PerCpuHashMap<u32, FaultCounts> =
    PerCpuHashMap::with_max_entries(16384, 0);

#[inline(always)]
pub fn config() -> Config {
    CONFIG.load()
}

#[inline(always)]
pub fn offsets() -> Offsets {
    OFFSETS.load()
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
    if cfg.filter & (FILTER_PID | FILTER_COMM) == 0 {
        return true;
    }
    if cfg.filter & FILTER_PID != 0 && PID_FILTER.get_ptr(tgid).is_some() {
        return true;
    }
    if cfg.filter & FILTER_COMM != 0 {
        if let Ok(comm) = bpf_get_current_comm() {
            return COMM_FILTER.get_ptr(comm).is_some();
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

/// Submit flags: wake the reader only once enough data is waiting; below
/// that it polls (a wakeup per event costs microseconds per event).
#[inline(always)]
pub fn submit_flags(cfg: &Config) -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= cfg.wakeup_bytes {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}
