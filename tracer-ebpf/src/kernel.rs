//! Reads of kernel structures at offsets the loader resolved from BTF.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use tracer_common::{
    MmCounters, MmVmBlock, Offsets, MM_DATA_VM, MM_EXEC_VM, MM_LOCKED_VM, MM_MAP_COUNT,
    MM_STACK_VM, MM_TOTAL_VM, MM_VM_BLOCK,
};

/// x86_64 `struct pt_regs` (a fixed layout, the user registers saved at
/// kernel entry): the offset of `r10`, from which the nine registers `r10,
/// r9, r8, ax, cx, dx, si, di, orig_ax` follow, and of `ip`.
pub const PT_REGS_R10: u64 = 56;
pub const PT_REGS_IP: u64 = 128;

/// Reads a `T` at `base + off` in kernel memory.
#[inline(always)]
pub fn read<T>(base: u64, off: u64) -> Result<T, i64> {
    if base == 0 {
        return Err(-1);
    }
    // SAFETY: bpf_probe_read_kernel tolerates any address.
    unsafe { bpf_probe_read_kernel((base + off) as *const T) }.map_err(|e| e as i64)
}

/// The current task_struct.
#[inline(always)]
pub fn current_task() -> u64 {
    // SAFETY: a helper without preconditions.
    unsafe { bpf_get_current_task() }
}

/// The current task's mm_struct (0 for kernel threads).
#[inline(always)]
pub fn current_mm(task_mm: u64) -> Result<u64, i64> {
    read::<u64>(current_task(), task_mm)
}

/// The counters of address space `mm` (`flags` names those read), not yet
/// settled (see `common::MmCall`).
#[inline(always)]
pub fn read_counters(mm: u64, off: &Offsets) -> MmCounters {
    let mut c = MmCounters::ZERO;
    let want = off.mm_counters as u32;
    if want & MM_MAP_COUNT != 0 {
        if let Ok(v) = read::<i32>(mm, off.mm_map_count) {
            c.map_count = v as u32;
            c.flags |= MM_MAP_COUNT;
        }
    }
    if want & MM_VM_BLOCK != 0 {
        // The page counters side by side: one read (a read costs more than
        // the bytes it copies).
        if let Ok(b) = read::<MmVmBlock>(mm, off.mm_total_vm) {
            c.total_vm = b.total_vm;
            c.locked_vm = b.locked_vm;
            c.data_vm = b.data_vm;
            c.exec_vm = b.exec_vm;
            c.stack_vm = b.stack_vm;
            c.flags |= MM_TOTAL_VM | MM_LOCKED_VM | MM_DATA_VM | MM_EXEC_VM | MM_STACK_VM;
        }
        return c;
    }
    // One read per field, wherever the kernel keeps it.
    macro_rules! field {
        ($bit:ident, $off:ident, $field:ident) => {
            if want & $bit != 0 {
                if let Ok(v) = read::<u64>(mm, off.$off) {
                    c.$field = v;
                    c.flags |= $bit;
                }
            }
        };
    }
    field!(MM_TOTAL_VM, mm_total_vm, total_vm);
    field!(MM_LOCKED_VM, mm_locked_vm, locked_vm);
    field!(MM_DATA_VM, mm_data_vm, data_vm);
    field!(MM_EXEC_VM, mm_exec_vm, exec_vm);
    field!(MM_STACK_VM, mm_stack_vm, stack_vm);
    c
}
