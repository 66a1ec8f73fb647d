//! Reads of kernel structures at offsets the loader resolved from BTF.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};

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
