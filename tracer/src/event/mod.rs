//! Decoded events: what the ring buffer's records mean, in userspace types.
//! `decode` turns records into these; `output` prints them.

use tracer_common::EventKind;

pub mod decode;

/// One event, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// CLOCK_MONOTONIC, ns.
    pub ts_ns: u64,
    pub cpu: u32,
    /// The process (tgid).
    pub pid: u32,
    /// The thread.
    pub tid: u32,
    /// The task's comm as raw bytes (may hold anything but NUL).
    pub comm: Vec<u8>,
    pub body: Body,
}

/// The result of a syscall: a value, or an errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysResult {
    Ok(u64),
    Err(i32),
}

impl SysResult {
    pub fn from_raw(ret: i64) -> SysResult {
        // The kernel returns -errno in [-4095, -1]; anything else is a value
        // (an address may look negative as i64).
        if (-4095..0).contains(&ret) {
            SysResult::Err(-ret as i32)
        } else {
            SysResult::Ok(ret as u64)
        }
    }
}

/// The kind of access that faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Exec,
}

impl Access {
    /// From the x86 page fault error code.
    pub fn from_error_code(code: u64) -> Access {
        if code & (1 << 4) != 0 {
            Access::Exec
        } else if code & (1 << 1) != 0 {
            Access::Write
        } else {
            Access::Read
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Exec => "exec",
        }
    }
}

/// The file behind a file-backed mmap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedFile {
    /// Absolute path as raw bytes (may hold anything but NUL).
    pub path: Vec<u8>,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub ino: u64,
    /// Leading components are missing (too long or too deep).
    pub truncated: bool,
}

/// How a stack growth was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackSource {
    /// A fault below the stack, confirmed by the mm's stack size.
    Fault,
    /// An fexit program on the kernel's stack expansion.
    Fexit,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    Brk {
        requested: u64,
        old_brk: u64,
        new_brk: u64,
        /// The heap's start (mm->start_brk); 0 when unknown.
        start_brk: u64,
    },
    Mmap {
        addr: u64,
        len: u64,
        prot: u64,
        flags: u64,
        fd: i64,
        offset: u64,
        ret: SysResult,
        /// Set for a successful mapping of a file.
        file: Option<MappedFile>,
    },
    Munmap {
        addr: u64,
        len: u64,
        ret: SysResult,
    },
    Mremap {
        old_addr: u64,
        old_len: u64,
        new_len: u64,
        flags: u64,
        new_addr: u64,
        ret: SysResult,
    },
    Mprotect {
        addr: u64,
        len: u64,
        prot: u64,
        ret: SysResult,
    },
    Madvise {
        addr: u64,
        len: u64,
        advice: u64,
        ret: SysResult,
    },
    /// mprotect that also tags the pages with a protection key.
    PkeyMprotect {
        addr: u64,
        len: u64,
        prot: u64,
        /// -1: no key (then it is a plain mprotect).
        pkey: i32,
        ret: SysResult,
    },
    Fault {
        addr: u64,
        ip: u64,
        access: Access,
        /// The page was present: a protection fault.
        present: bool,
    },
    Stack {
        old_start: u64,
        new_start: u64,
        source: StackSource,
    },
    Exec {
        /// The program path as given to execve, raw bytes.
        path: Vec<u8>,
        old_pid: u32,
        /// task->start_time, ns since boot.
        start_time: u64,
    },
    Fork {
        child_pid: u32,
        clone_flags: u64,
    },
    Exit {
        /// The wait status: `code << 8`, or the number of the killing signal.
        status: i32,
        /// task->start_time, ns since boot.
        start_time: u64,
    },
    /// Made in userspace: the kernel could not reserve ring buffer space for
    /// `count` events (of `kind`, where known).
    Lost {
        count: u64,
        kind: Option<EventKind>,
    },
    /// Made in userspace from the kernel's per-process fault counters: the
    /// faults of one process during the last `interval_ns`.
    FaultSummary {
        interval_ns: u64,
        read: u64,
        write: u64,
        exec: u64,
        present: u64,
    },
}

impl Body {
    /// The kernel's kind of this event; None for those made in userspace.
    pub fn kind(&self) -> Option<EventKind> {
        Some(match self {
            Body::Brk { .. } => EventKind::Brk,
            Body::Mmap { .. } => EventKind::Mmap,
            Body::Munmap { .. } => EventKind::Munmap,
            Body::Mremap { .. } => EventKind::Mremap,
            Body::Mprotect { .. } => EventKind::Mprotect,
            Body::Madvise { .. } => EventKind::Madvise,
            Body::PkeyMprotect { .. } => EventKind::PkeyMprotect,
            Body::Fault { .. } => EventKind::Fault,
            Body::Stack { .. } => EventKind::Stack,
            Body::Exec { .. } => EventKind::Exec,
            Body::Fork { .. } => EventKind::Fork,
            Body::Exit { .. } => EventKind::Exit,
            Body::Lost { .. } | Body::FaultSummary { .. } => return None,
        })
    }

    /// The event may change its own process's mappings (a fault does not;
    /// a fork changes only the child's, which is new).
    pub fn changes_mappings(&self) -> bool {
        match self {
            Body::Brk { .. }
            | Body::Mmap { .. }
            | Body::Munmap { .. }
            | Body::Mremap { .. }
            | Body::Mprotect { .. }
            | Body::Madvise { .. }
            | Body::PkeyMprotect { .. }
            | Body::Stack { .. }
            | Body::Exec { .. }
            | Body::Exit { .. } => true,
            Body::Fault { .. }
            | Body::Fork { .. }
            | Body::Lost { .. }
            | Body::FaultSummary { .. } => false,
        }
    }

    /// The `event` field of the stream.
    pub fn name(&self) -> &'static str {
        match self {
            Body::Brk { .. } => "brk",
            Body::Mmap { .. } => "mmap",
            Body::Munmap { .. } => "munmap",
            Body::Mremap { .. } => "mremap",
            Body::Mprotect { .. } => "mprotect",
            Body::Madvise { .. } => "madvise",
            Body::PkeyMprotect { .. } => "pkey_mprotect",
            Body::Fault { .. } => "fault",
            Body::Stack { .. } => "stack",
            Body::Exec { .. } => "exec",
            Body::Fork { .. } => "fork",
            Body::Exit { .. } => "exit",
            Body::Lost { .. } => "lost",
            Body::FaultSummary { .. } => "fault_summary",
        }
    }
}

/// Splits a wait status into (exit code, killing signal).
pub fn split_status(status: i32) -> (Option<i32>, Option<i32>) {
    let sig = status & 0x7f;
    if sig == 0 {
        (Some((status >> 8) & 0xff), None)
    } else {
        (None, Some(sig))
    }
}
