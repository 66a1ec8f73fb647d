//! mmtrace's kernel-side programs.
//!
//! The event's journey starts here: each hook filters in the kernel (so a
//! filtered-out event costs userspace nothing), builds one record in the
//! `EVENTS` ring buffer and counts what it could not reserve in `LOST`, and
//! what it failed to read or store in `ERRORS`.
//!
//! - `syscall`: the memory syscalls (brk, mmap, munmap, mremap, mprotect,
//!   madvise, pkey_mprotect, mlock, mlock2, munlock, mlockall,
//!   munlockall, mseal, shmat, shmdt, remap_file_pages), paired from
//!   sys_enter and sys_exit per thread; a file mmap resolves its file here.
//! - `fault`: user page faults, streamed or counted per process.
//! - `stack`: stack growth, from faults below the stack confirmed by the
//!   mm's stack size, or from an fexit program where the kernel allows one.
//! - `process`: exec, fork (new processes, not threads), exit, and the
//!   OOM killer's choice of a victim (oom:mark_victim).
#![no_std]
#![no_main]
// Inline BPF assembly, for the atomic add Rust does not offer on BPF (as
// aya-ebpf itself does for its bounds checks).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

mod common;
mod fault;
mod kernel;
mod process;
mod stack;
mod syscall;
mod vmas;

/// The licence the kernel checks before it lets programs call GPL-only
/// helpers, as these do (bpf_probe_read_kernel, bpf_get_current_task). aya
/// assumes "GPL" when an object has no `license` section; this one says it
/// itself, and says what holds for this crate (see LICENSE-MIT and
/// LICENSE-GPL2).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic; this is never called.
    loop {}
}
