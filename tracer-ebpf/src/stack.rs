//! Stack growth.
//!
//! Where the kernel allows fexit programs, `expand_downwards` reports each
//! growth directly. Elsewhere (no fentry/fexit, no kprobes) growth is seen
//! from the fault that causes it: a user fault below the stack, within the
//! process's stack size limit (RLIMIT_STACK, which the kernel enforces on
//! growth), is remembered per thread, and once the fault has been handled
//! (the next `kmem:rss_stat` of that thread, when the new page is charged,
//! or its next fault) the mm's stack size (`mm->stack_vm`, in pages) tells
//! whether the stack grew, and by how much. The kernel moves the stack's
//! start to the faulting address rounded down to its page, so the new start
//! is exact.
//!
//! The other faults (heap, mappings: below the stack by more than its
//! limit, as the kernel lays them out) pay a few reads; while no candidate
//! waits anywhere (`PENDING_COUNT`), neither the fault nor `rss_stat` looks
//! one up. Where only this needs `rss_stat` (no RSS counters kept), it is a
//! BTF raw tracepoint, which skips the tracepoint's record (summing the
//! mm's per-CPU counter for it cost about 190 ns per page charged).
//!
//! Other regions mapped with MAP_GROWSDOWN grow the same way (and count in
//! the same stack size), wherever they are. Their faults are candidates in
//! the processes that made one (or descend from one that did), which the
//! mmap exit marks in `GROWSDOWN`; nothing is paid elsewhere.

use aya_ebpf::{
    macros::{btf_tracepoint, fentry, fexit, map, tracepoint},
    maps::{Array, LruHashMap},
    programs::{BtfTracePointContext, FEntryContext, FExitContext, TracePointContext},
};
use tracer_common::{
    tp::RssStat, Config, EventKind, StackEvent, RSS_MEMBERS, STACK_SOURCE_FAULT, STACK_SOURCE_FEXIT,
};

use crate::{
    common::{
        atomic_add, atomic_load, config, count_lost, current_ids, failed, fill_header,
        kind_enabled, mm_change, offsets, submit, traced, Fail, OrFail, EVENTS, RSS,
    },
    kernel::{current_mm, current_task, read},
};

const PAGE_SIZE: u64 = 4096;
/// Faults at most this far below the stack's top are candidates, when the
/// stack size limit is larger (unlimited). Stack growth is confirmed by the
/// stack size, so a larger window costs only a map update per candidate
/// fault, never a wrong event.
const STACK_WINDOW: u64 = 1 << 30;
/// `RLIMIT_STACK`, and the size of a `struct rlimit`.
const RLIMIT_STACK: u64 = 3;
const RLIMIT_SIZE: u64 = 16;

#[derive(Clone, Copy)]
#[repr(C)]
pub struct StackPending {
    addr: u64,
    stack_vm: u64,
}

/// A candidate fault per thread, awaiting confirmation.
#[map(name = "STACK_PENDING")]
static STACK_PENDING: LruHashMap<u32, StackPending> = LruHashMap::with_max_entries(8192, 0);

/// Entries put in `STACK_PENDING` less those taken out, at least as many
/// as it holds (an entry the LRU drops is not counted out): while 0, no
/// thread has a candidate to look up.
#[map(name = "STACK_PENDING_COUNT")] // tracer_common::MAP_STACK_PENDING_COUNT
static PENDING_COUNT: Array<u64> = Array::with_max_entries(1, 0);

#[inline(always)]
fn pending_count_add(v: u64) {
    if let Some(p) = PENDING_COUNT.get_ptr_mut(0) {
        atomic_add(p, v);
    }
}

/// Whether any thread may have a candidate waiting.
#[inline(always)]
fn any_pending() -> bool {
    PENDING_COUNT
        .get_ptr_mut(0)
        .is_none_or(|p| atomic_load(p) != 0)
}

/// The stack's start at fentry of expand_downwards, per thread.
#[map(name = "STACK_FENTRY")]
static STACK_FENTRY: LruHashMap<u32, u64> = LruHashMap::with_max_entries(8192, 0);

/// Slot 0: the active STACK_SOURCE_*, set by the loader once it knows
/// whether the fexit programs could be attached. Slot 1: non-zero once a
/// MAP_GROWSDOWN mapping was seen (until then no fault looks at
/// `GROWSDOWN`).
#[map(name = "RUNTIME")]
static RUNTIME: Array<u32> = Array::with_max_entries(2, 0);

/// Processes (tgid) that mapped a MAP_GROWSDOWN region, or were forked by
/// one that had: any of their faults may grow such a region. An entry
/// left behind (an exec, an exit) costs only a confirmation read.
#[map(name = "GROWSDOWN")]
static GROWSDOWN: LruHashMap<u32, u8> = LruHashMap::with_max_entries(4096, 0);

const RUNTIME_GROWSDOWN: u32 = 1;

/// A successful mmap with MAP_GROWSDOWN by process `tgid`.
#[inline(always)]
pub fn growsdown_mapped(tgid: u32) {
    count(
        GROWSDOWN
            .insert(tgid, 1, 0)
            .or_fail("GROWSDOWN insert")
            .and_then(|()| {
                if let Some(seen) = RUNTIME.get_ptr_mut(RUNTIME_GROWSDOWN) {
                    // SAFETY: one u32 of the array, only ever set to 1.
                    unsafe { *seen = 1 };
                }
                Ok(())
            }),
    );
}

/// Process `parent` made process `child` (a copy of its address space, or
/// a share of it): the child has the parent's MAP_GROWSDOWN regions.
#[inline(always)]
pub fn growsdown_forked(parent: u32, child: u32) {
    if !growsdown_seen() || GROWSDOWN.get_ptr(parent).is_none() {
        return;
    }
    count(GROWSDOWN.insert(child, 1, 0).or_fail("GROWSDOWN insert"));
}

/// Process `tgid` has a new program: none of its old regions is left.
#[inline(always)]
pub fn growsdown_exec(tgid: u32) {
    if growsdown_seen() {
        let _ = GROWSDOWN.remove(tgid);
    }
}

#[inline(always)]
fn growsdown_seen() -> bool {
    RUNTIME.get(RUNTIME_GROWSDOWN).is_some_and(|v| *v != 0)
}

/// A failure of stack tracking: a growth may go unseen.
#[inline(always)]
fn count(r: Result<(), Fail>) {
    if let Err(f) = r {
        failed(Some(EventKind::Stack), f);
    }
}

/// Called from the user fault hook (the fault is not handled yet).
#[inline(always)]
pub fn on_fault(cfg: &Config, tgid: u32, tid: u32, addr: u64) {
    if RUNTIME.get(0).copied() != Some(STACK_SOURCE_FAULT) {
        return;
    }
    // A previous candidate of this thread not confirmed yet.
    if any_pending() {
        confirm(cfg, tid);
    }
    count(candidate(tgid, tid, addr));
}

/// Remembers the fault at `addr` if it is below the stack, or if the
/// process may have another region that grows down.
#[inline(always)]
fn candidate(tgid: u32, tid: u32, addr: u64) -> Result<(), Fail> {
    let off = offsets();
    let mm = current_mm(off.task_mm).or_fail("current->mm")?;
    let start_stack = read::<u64>(mm, off.mm_start_stack).or_fail("mm->start_stack")?;
    let under_stack = addr < start_stack && start_stack - addr <= stack_limit(&off);
    if !under_stack && !(growsdown_seen() && GROWSDOWN.get_ptr(tgid).is_some()) {
        return Ok(());
    }
    let stack_vm = read::<u64>(mm, off.mm_stack_vm).or_fail("mm->stack_vm")?;
    STACK_PENDING
        .insert(tid, StackPending { addr, stack_vm }, 0)
        .or_fail("STACK_PENDING insert")?;
    pending_count_add(1);
    Ok(())
}

/// How far below the stack's top it may grow: the process's RLIMIT_STACK
/// (the kernel refuses growth beyond it), at most [`STACK_WINDOW`]; that
/// window when the limit cannot be read.
#[inline(always)]
fn stack_limit(off: &tracer_common::Offsets) -> u64 {
    let limit = read::<u64>(current_task(), off.task_signal)
        .and_then(|signal| read::<u64>(signal, off.signal_rlim + RLIMIT_STACK * RLIMIT_SIZE));
    // The limit counts from the stack's end, above start_stack: every
    // growth the kernel allows is within it below start_stack (a page
    // more for the faulting address's rounding down).
    limit.map_or(STACK_WINDOW, |l| {
        l.saturating_add(PAGE_SIZE).min(STACK_WINDOW)
    })
}

/// Emits a stack event if the thread's pending candidate grew the stack.
#[inline(always)]
fn confirm(cfg: &Config, tid: u32) {
    let Some(p) = STACK_PENDING.get_ptr(tid) else {
        return;
    };
    // SAFETY: this thread's entry, read by this thread.
    let p = unsafe { *p };
    if STACK_PENDING.remove(tid).is_ok() {
        pending_count_add(u64::MAX);
    }
    count(grown(cfg, p));
}

#[inline(always)]
fn grown(cfg: &Config, p: StackPending) -> Result<(), Fail> {
    let off = offsets();
    let mm = current_mm(off.task_mm).or_fail("current->mm")?;
    let now = read::<u64>(mm, off.mm_stack_vm).or_fail("mm->stack_vm")?;
    if now <= p.stack_vm {
        return Ok(());
    }
    let new_start = p.addr & !(PAGE_SIZE - 1);
    emit(
        cfg,
        new_start + (now - p.stack_vm) * PAGE_SIZE,
        new_start,
        STACK_SOURCE_FAULT,
    );
    Ok(())
}

#[inline(always)]
fn emit(cfg: &Config, old_start: u64, new_start: u64, source: u32) {
    let change = mm_change(cfg, current_mm(offsets().task_mm).unwrap_or(0));
    match EVENTS.reserve::<StackEvent>(0) {
        Some(mut entry) => {
            let e = entry.as_mut_ptr();
            // SAFETY: `e` is the reserved record.
            unsafe {
                fill_header(&mut (*e).header, EventKind::Stack);
                (*e).old_start = old_start;
                (*e).new_start = new_start;
                (*e).source = source;
                (*e)._pad = 0;
                (*e).mm = change.counters(&offsets());
            }
            submit(entry, cfg);
        }
        None => count_lost(EventKind::Stack),
    }
}

/// kmem:rss_stat (record: `tp::RssStat`). A pending stack fault of the
/// current thread has been handled by the time its page is charged; and the
/// traced process's RSS counters are kept when asked.
#[tracepoint]
pub fn rss_stat(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    let cfg = config();
    confirm_charged(&cfg, tid);
    if cfg.track_rss != 0 {
        if let Err(f) = track_rss(&ctx, &cfg, tgid) {
            failed(None, f);
        }
    }
    0
}

#[inline(always)]
fn track_rss(ctx: &TracePointContext, cfg: &Config, tgid: u32) -> Result<(), Fail> {
    // SAFETY: the tracepoint's record, whose layout the loader checked.
    let rec = unsafe { ctx.read_at::<RssStat>(0) }.or_fail("rss_stat record")?;
    let (curr, member, size) = (rec.curr, rec.member, rec.size);
    // Only counters of the current task's own mm name a process we know.
    if curr == 0 || !traced(cfg, tgid) {
        return Ok(());
    }
    if !(0..RSS_MEMBERS as i32).contains(&member) {
        return Ok(());
    }
    match RSS.get_ptr_mut(tgid) {
        // SAFETY: one value per process, written by its own tasks.
        Some(v) => unsafe { (*v)[member as usize] = size },
        None => {
            let mut v = [0i64; RSS_MEMBERS];
            v[member as usize] = size;
            RSS.insert(tgid, v, 0).or_fail("RSS insert")?;
        }
    }
    Ok(())
}

/// The same tracepoint as a BTF raw tracepoint, where no RSS counters are
/// kept (the loader's choice): it confirms candidates and reads nothing.
#[btf_tracepoint(function = "rss_stat")]
pub fn rss_stat_btf(_ctx: BtfTracePointContext) -> u32 {
    confirm_charged(&config(), current_ids().1);
    0
}

/// A page was charged to thread `tid`'s address space: its candidate, if
/// any, has been handled.
#[inline(always)]
fn confirm_charged(cfg: &Config, tid: u32) {
    if any_pending() && STACK_PENDING.get_ptr(tid).is_some() {
        confirm(cfg, tid);
    }
}

/// Thread exit: forget its candidate.
#[inline(always)]
pub fn forget(tid: u32) {
    if any_pending() && STACK_PENDING.remove(tid).is_ok() {
        pending_count_add(u64::MAX);
    }
    let _ = STACK_FENTRY.remove(tid);
}

#[fentry(function = "expand_downwards")]
pub fn expand_downwards_entry(ctx: FEntryContext) -> u32 {
    let cfg = config();
    let (tgid, tid) = current_ids();
    if !kind_enabled(&cfg, EventKind::Stack) || !traced(&cfg, tgid) {
        return 0;
    }
    let vma: u64 = ctx.arg(0);
    let off = offsets();
    // Only growth of the thread's own address space: exec grows the stack
    // of the new one (bprm->mm) while current->mm is still the old, and
    // the old program's model has no such stack.
    let own = read::<u64>(vma, off.vma_mm)
        .and_then(|mm| Ok(mm == current_mm(off.task_mm)?))
        .or_fail("vma->vm_mm at entry");
    match own {
        Ok(true) => {}
        Ok(false) => return 0,
        Err(fail) => {
            count(Err(fail));
            return 0;
        }
    }
    count(
        read::<u64>(vma, off.vma_start)
            .or_fail("vma->vm_start at entry")
            .and_then(|start| {
                STACK_FENTRY
                    .insert(tid, start, 0)
                    .or_fail("STACK_FENTRY insert")
            }),
    );
    0
}

#[fexit(function = "expand_downwards")]
pub fn expand_downwards_exit(ctx: FExitContext) -> u32 {
    let (_, tid) = current_ids();
    let Some(old) = STACK_FENTRY.get_ptr(tid) else {
        return 0;
    };
    // SAFETY: this thread's entry, read by this thread.
    let old = unsafe { *old };
    let _ = STACK_FENTRY.remove(tid);
    let vma: u64 = ctx.arg(0);
    let new = match read::<u64>(vma, offsets().vma_start) {
        Ok(new) => new,
        Err(err) => {
            count(Err(Fail {
                what: "vma->vm_start at exit",
                err,
            }));
            return 0;
        }
    };
    if new < old {
        emit(&config(), old, new, STACK_SOURCE_FEXIT);
    }
    0
}
