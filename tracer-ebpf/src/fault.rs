//! User page faults (exceptions:page_fault_user): streamed one by one
//! (`--faults all`) or counted per process in the kernel (`summary`).

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_probe_read_kernel},
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use tracer_common::{
    tp::PageFaultUser, EventKind, FaultCounts, FaultEvent, COMM_LEN, FAULTS_ALL, FAULTS_SUMMARY,
};

use crate::{
    common::{
        config, count_lost, current_ids, done, fill_header, kind_enabled, submit, traced, Fail,
        OrFail, EVENTS, FAULT_COUNTS,
    },
    kernel::PT_REGS_IP,
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
    // SAFETY: the tracepoint's record, whose layout the loader checked.
    let rec = unsafe { ctx.read_at::<PageFaultUser>(0) }.or_fail("page_fault_user record")?;
    on_fault(rec.address, rec.error_code, || Ok(rec.ip))
}

/// The same tracepoint as a BTF-typed raw tracepoint (preferred: see
/// `Tracepoint::btf_prog`): `page_fault_user(unsigned long address, struct
/// pt_regs *regs, unsigned long error_code)`.
#[btf_tracepoint(function = "page_fault_user")]
pub fn page_fault_user_btf(ctx: BtfTracePointContext) -> u32 {
    // The tracepoint's three arguments, as its prototype has them.
    let (address, regs, error_code) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1), ctx.arg::<u64>(2));
    let ip = || {
        // SAFETY: a helper read of the faulting thread's saved registers.
        unsafe { bpf_probe_read_kernel((regs + PT_REGS_IP) as *const u64) }.or_fail("regs->ip")
    };
    done(Some(EventKind::Fault), on_fault(address, error_code, ip))
}

/// A user page fault at `addr`; `ip` is read only when the fault is
/// streamed.
#[inline(always)]
fn on_fault(
    addr: u64,
    error_code: u64,
    ip: impl FnOnce() -> Result<u64, Fail>,
) -> Result<u32, Fail> {
    let cfg = config();
    let (tgid, tid) = current_ids();
    if !traced(&cfg, tgid) {
        return Ok(0);
    }
    if kind_enabled(&cfg, EventKind::Stack) {
        stack::on_fault(&cfg, tgid, tid, addr);
    }
    if !kind_enabled(&cfg, EventKind::Fault) {
        return Ok(0);
    }
    if cfg.fault_mode == FAULTS_ALL {
        let ip = ip()?;
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
