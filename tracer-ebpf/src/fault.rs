//! User page faults (exceptions:page_fault_user): streamed one by one
//! (`--faults all`) or counted per process in the kernel (`summary`).

use aya_ebpf::{helpers::bpf_get_current_comm, macros::tracepoint, programs::TracePointContext};
use tracer_common::{
    tp::PageFaultUser, EventKind, FaultCounts, FaultEvent, COMM_LEN, FAULTS_ALL, FAULTS_SUMMARY,
};

use crate::{
    common::{
        config, count_lost, current_ids, done, fill_header, kind_enabled, submit, traced, Fail,
        OrFail, EVENTS, FAULT_COUNTS,
    },
    stack,
};

const ERR_PRESENT: u64 = 1 << 0;
const ERR_WRITE: u64 = 1 << 1;
const ERR_EXEC: u64 = 1 << 4;

#[tracepoint]
pub fn page_fault_user(ctx: TracePointContext) -> u32 {
    done(Some(EventKind::Fault), try_page_fault_user(&ctx))
}

#[inline(always)]
fn try_page_fault_user(ctx: &TracePointContext) -> Result<u32, Fail> {
    let cfg = config();
    let (tgid, tid) = current_ids();
    if !traced(&cfg, tgid) {
        return Ok(0);
    }
    // SAFETY: the tracepoint's record, whose layout the loader checked.
    let rec = unsafe { ctx.read_at::<PageFaultUser>(0) }.or_fail("page_fault_user record")?;
    let (addr, ip, error_code) = (rec.address, rec.ip, rec.error_code);

    if kind_enabled(&cfg, EventKind::Stack) {
        stack::on_fault(&cfg, tgid, tid, addr);
    }
    if !kind_enabled(&cfg, EventKind::Fault) {
        return Ok(0);
    }
    if cfg.fault_mode == FAULTS_ALL {
        match EVENTS.reserve::<FaultEvent>(0) {
            Some(mut entry) => {
                let e = entry.as_mut_ptr();
                // SAFETY: `e` is the reserved record.
                unsafe {
                    fill_header(&mut (*e).header, EventKind::Fault);
                    (*e).addr = addr;
                    (*e).ip = ip;
                    (*e).error_code = error_code;
                }
                submit(entry, &cfg);
            }
            None => count_lost(EventKind::Fault),
        }
    } else if cfg.fault_mode == FAULTS_SUMMARY {
        count(tgid, error_code);
    }
    Ok(0)
}

/// Adds one fault to the process's per-CPU counters.
#[inline(always)]
fn count(tgid: u32, error_code: u64) {
    if let Some(c) = FAULT_COUNTS.get_ptr_mut(tgid) {
        // SAFETY: a per-CPU value: no other writer on this CPU meanwhile.
        unsafe { bump(&mut *c, error_code) };
        return;
    }
    let mut c = FaultCounts {
        read: 0,
        write: 0,
        exec: 0,
        present: 0,
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
    };
    bump(&mut c, error_code);
    if FAULT_COUNTS.insert(tgid, c, 0).is_err() {
        count_lost(EventKind::Fault);
    }
}

#[inline(always)]
fn bump(c: &mut FaultCounts, error_code: u64) {
    if error_code & ERR_EXEC != 0 {
        c.exec += 1;
    } else if error_code & ERR_WRITE != 0 {
        c.write += 1;
    } else {
        c.read += 1;
    }
    if error_code & ERR_PRESENT != 0 {
        c.present += 1;
    }
}
