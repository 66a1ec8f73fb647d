//! Process lifecycle: exec, new processes (fork/clone without
//! CLONE_THREAD) and exit. Children of traced processes join the pid filter
//! at fork, before they can run, when following descendants.

use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP, helpers::generated::bpf_probe_read_kernel_str,
    macros::tracepoint, programs::TracePointContext, EbpfContext,
};
use tracer_common::{
    tp::{MarkVictim, SchedProcessExec, TaskNewtask},
    EventKind, ExecEvent, ExitEvent, ForkEvent, OomKillEvent, EXEC_PATH_LEN,
    FILTER_CGROUP_V1_MEMORY, FILTER_CGROUP_V2, FILTER_COMM, FILTER_FOLLOW, FILTER_PID,
};

use crate::{
    common::{
        config, count_lost, current_ids, done, failed, fill_header, kind_enabled, mm_change,
        mm_forget, offsets, or_zero, submit, traced, Fail, OrFail, EVENTS, PID_FILTER,
    },
    kernel::{current_mm, current_task, read},
    stack, syscall,
};

const CLONE_THREAD: u64 = 0x0001_0000;

/// sched:sched_process_exec (record: `tp::SchedProcessExec`).
#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    done(Some(EventKind::Exec), try_exec(&ctx))
}

#[inline(always)]
fn try_exec(ctx: &TracePointContext) -> Result<u32, Fail> {
    let cfg = config();
    let (tgid, _) = current_ids();
    stack::growsdown_exec(tgid);
    syscall::brk_exec(&cfg, tgid);
    if !kind_enabled(&cfg, EventKind::Exec) || !traced(&cfg, tgid) {
        return Ok(0);
    }
    // SAFETY: the tracepoint's record, whose layout the loader checked.
    let rec = unsafe { ctx.read_at::<SchedProcessExec>(0) }.or_fail("sched_process_exec record")?;
    let (loc, old_pid) = (rec.filename, rec.old_pid as u32);
    // The new address space: nothing counted for an old one at its address
    // holds, and no other thread is left to change it.
    let mm = if cfg.mm_counters != 0 {
        let mm = current_mm(offsets().task_mm).unwrap_or(0);
        if mm != 0 {
            mm_forget(mm);
        }
        mm
    } else {
        0
    };
    let change = mm_change(&cfg, mm);
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count_lost(EventKind::Exec);
        return Ok(0);
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is the reserved record; the string is inside the record.
    unsafe {
        fill_header(&mut (*e).header, EventKind::Exec);
        (*e).start_time = or_zero(
            EventKind::Exec,
            read::<u64>(current_task(), offsets().task_start_time),
            "task->start_time",
        );
        (*e).old_pid = old_pid;
        (*e).mm = change.counters(&offsets());
        (*e).mm_addr = mm;
        let src = (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize);
        let n = bpf_probe_read_kernel_str(
            (*e).path.as_mut_ptr().cast(),
            EXEC_PATH_LEN as u32,
            src.cast(),
        );
        (*e).path_len = if n > 0 { (n - 1) as u32 } else { 0 };
        if n < 0 {
            failed(
                Some(EventKind::Exec),
                Fail {
                    what: "exec filename",
                    err: n,
                },
            );
        }
    }
    if cfg.mm_counters != 0 {
        // A model reads the new address space from /proc as soon as it
        // can: wake the reader now rather than at its next poll.
        entry.submit(BPF_RB_FORCE_WAKEUP as u64);
    } else {
        submit(entry, &cfg);
    }
    Ok(0)
}

/// task:task_newtask, in the parent (record: `tp::TaskNewtask`).
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    done(Some(EventKind::Fork), try_newtask(&ctx))
}

#[inline(always)]
fn try_newtask(ctx: &TracePointContext) -> Result<u32, Fail> {
    // SAFETY: the tracepoint's record, whose layout the loader checked.
    let rec = unsafe { ctx.read_at::<TaskNewtask>(0) }.or_fail("task_newtask record")?;
    let (child, clone_flags) = (rec.pid as u32, rec.clone_flags);
    if clone_flags & CLONE_THREAD != 0 {
        return Ok(0);
    }
    let cfg = config();
    let (tgid, _) = current_ids();
    syscall::brk_forked(&cfg, child, clone_flags);
    if !traced(&cfg, tgid) {
        return Ok(0);
    }
    stack::growsdown_forked(tgid, child);
    if cfg.filter & FILTER_FOLLOW != 0 && cfg.filter & FILTER_PID != 0 {
        if PID_FILTER.insert(child, 1, 0).is_err() {
            // The child will not be traced: say so through the lost count.
            count_lost(EventKind::Fork);
        }
    }
    if !kind_enabled(&cfg, EventKind::Fork) {
        return Ok(0);
    }
    match EVENTS.reserve::<ForkEvent>(0) {
        Some(mut entry) => {
            let e = entry.as_mut_ptr();
            // SAFETY: `e` is the reserved record.
            unsafe {
                fill_header(&mut (*e).header, EventKind::Fork);
                (*e).child_pid = child;
                (*e)._pad = 0;
                (*e).clone_flags = clone_flags;
            }
            submit(entry, &cfg);
        }
        None => count_lost(EventKind::Fork),
    }
    Ok(0)
}

/// sched:sched_process_exit, once per exiting thread.
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    done(Some(EventKind::Exit), try_exit(&ctx))
}

#[inline(always)]
fn try_exit(ctx: &TracePointContext) -> Result<u32, Fail> {
    let cfg = config();
    let (tgid, tid) = current_ids();
    stack::forget(tid);
    let group_dead = if cfg.exit_group_dead_offset != 0 {
        // SAFETY: the offset comes from the tracepoint's format.
        unsafe { ctx.read_at::<u8>(cfg.exit_group_dead_offset as usize) }
            .or_fail("sched_process_exit group_dead")?
            != 0
    } else {
        // Older kernels: do_exit has already taken this thread off
        // task->signal->live, so 0 means it was the last one. (The leader's
        // exit is not the process's: a thread that execs makes the leader
        // exit first, and so does pthread_exit in main.)
        let off = offsets();
        match read::<u64>(current_task(), off.task_signal)
            .and_then(|signal| read::<i32>(signal, off.signal_live))
        {
            Ok(live) => live == 0,
            Err(_) => tid == tgid,
        }
    };
    if !group_dead || !traced(&cfg, tgid) {
        return Ok(0);
    }
    if kind_enabled(&cfg, EventKind::Exit) {
        let exit = EventKind::Exit;
        let code = or_zero(
            exit,
            read::<i32>(current_task(), offsets().task_exit_code),
            "task->exit_code",
        );
        match EVENTS.reserve::<ExitEvent>(0) {
            Some(mut entry) => {
                let e = entry.as_mut_ptr();
                // SAFETY: `e` is the reserved record.
                unsafe {
                    fill_header(&mut (*e).header, EventKind::Exit);
                    (*e).start_time = or_zero(
                        exit,
                        read::<u64>(current_task(), offsets().task_start_time),
                        "task->start_time",
                    );
                    (*e).exit_code = code;
                    (*e)._pad = 0;
                    (*e).mm = exit_counters(&cfg);
                }
                submit(entry, &cfg);
            }
            None => count_lost(EventKind::Exit),
        }
    }
    if cfg.filter & FILTER_PID != 0 {
        // The pid may be reused by an unrelated process.
        let _ = PID_FILTER.remove(tgid);
    }
    Ok(0)
}

/// oom:mark_victim (record: `tp::MarkVictim`): the OOM killer chose a
/// victim. It runs in the killer's context, so the filter is asked about
/// the victim's pid: with a pid filter, only traced victims; with a comm
/// filter alone (the victim's comm is not on every kernel's record) every
/// victim, which userspace keeps only when it traces the process.
#[tracepoint]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    done(Some(EventKind::OomKill), try_mark_victim(&ctx))
}

#[inline(always)]
fn try_mark_victim(ctx: &TracePointContext) -> Result<u32, Fail> {
    let cfg = config();
    if !kind_enabled(&cfg, EventKind::OomKill) {
        return Ok(0);
    }
    // SAFETY: the tracepoint's record, whose layout the loader checked.
    let rec = unsafe { ctx.read_at::<MarkVictim>(0) }.or_fail("mark_victim record")?;
    let victim = rec.pid as u32;
    if victim == cfg.self_tgid {
        return Ok(0);
    }
    let by_pid = cfg.filter & FILTER_PID != 0;
    // The killer's cgroup says nothing of the victim's: as with comms,
    // userspace keeps the victims it traces.
    let by_other = cfg.filter & (FILTER_COMM | FILTER_CGROUP_V2 | FILTER_CGROUP_V1_MEMORY) != 0;
    if by_pid && PID_FILTER.get_ptr(victim).is_none() && !by_other {
        return Ok(0);
    }
    match EVENTS.reserve::<OomKillEvent>(0) {
        Some(mut entry) => {
            let e = entry.as_mut_ptr();
            // SAFETY: `e` is the reserved record.
            unsafe {
                fill_header(&mut (*e).header, EventKind::OomKill);
                (*e).victim_pid = victim;
                (*e)._pad = 0;
            }
            // Rare, and worth seeing at once.
            entry.submit(BPF_RB_FORCE_WAKEUP as u64);
        }
        None => count_lost(EventKind::OomKill),
    }
    Ok(0)
}

/// The counters of the address space the last thread of a process leaves,
/// for the model's exit check. Where the tracepoint runs before the kernel
/// takes the address space away (Linux 6.16 and later: the tracepoint
/// with `group_dead`) every other thread is gone, so no call of it is in
/// flight; elsewhere `current->mm` is already NULL and nothing is read.
#[inline(always)]
fn exit_counters(cfg: &tracer_common::Config) -> tracer_common::MmCounters {
    if cfg.mm_counters == 0 {
        return tracer_common::MmCounters::ZERO;
    }
    let mm = current_mm(offsets().task_mm).unwrap_or(0);
    if mm == 0 {
        return tracer_common::MmCounters::ZERO;
    }
    mm_change(cfg, mm).counters(&offsets())
}
