//! Decoded events: what the ring buffer's records mean, in userspace types.
//! `decode` turns records into these; `output` prints them.

use tracer_common::{
    EventKind, MmCounters, VmaProbes, MM_DATA_VM, MM_EXEC_VM, MM_LOCKED_VM, MM_MAP_COUNT,
    MM_SETTLED, MM_STACK_VM, MM_TOTAL_VM, VMA_GAP, VMA_MAPPED, VMA_NONE, VMA_PROBES,
};

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
    /// The address space's counters after the event's change, when the
    /// kernel read them (memory syscalls, exec, stack growth).
    pub counters: Option<Counters>,
}

/// The kernel's counters of an address space (`mm_struct`) after a change:
/// VMAs, and pages by kind of mapping. A field is None when this kernel
/// has no such counter or it could not be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// The values belong to this event alone: no other change of the
    /// address space (by another thread) came between its change and the
    /// read. Only settled counters say what the model must hold.
    pub settled: bool,
    /// `map_count`: VMAs.
    pub map_count: Option<u64>,
    /// `total_vm`: pages of all VMAs.
    pub total_vm: Option<u64>,
    /// `locked_vm`: pages of VM_LOCKED VMAs (and pages drivers charge).
    pub locked_vm: Option<u64>,
    /// `data_vm`: pages of private writable VMAs, stacks aside.
    pub data_vm: Option<u64>,
    /// `exec_vm`: pages of executable VMAs, writable ones and stacks aside.
    pub exec_vm: Option<u64>,
    /// `stack_vm`: pages of grows-down VMAs.
    pub stack_vm: Option<u64>,
    /// The address space's `mm_struct` address (its key in `MM_SEQ`).
    pub mm: Option<u64>,
    /// The kernel's VMA tree at the change's edges, read with the
    /// counters (and settled with them).
    pub vmas: [Probe; VMA_PROBES],
}

/// What the kernel's VMA tree holds at an address after a change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Probe {
    /// Not probed.
    #[default]
    None,
    /// The VMA `[start, end)` holds `at`.
    Mapped {
        at: u64,
        start: u64,
        end: u64,
        /// `vm_flags`, `vm_pgoff`.
        flags: u64,
        pgoff: u64,
    },
    /// No VMA holds `at`.
    Gap { at: u64 },
    /// The tree changed under the read.
    Unread,
}

impl Probe {
    fn from_wire(p: &VmaProbes, i: usize) -> Probe {
        let e = &p.ext[i];
        match p.state[i] {
            VMA_MAPPED => Probe::Mapped {
                at: p.addr[i],
                start: e.start,
                end: e.end,
                flags: e.flags,
                pgoff: e.pgoff,
            },
            VMA_GAP => Probe::Gap { at: p.addr[i] },
            VMA_NONE => Probe::None,
            _ => Probe::Unread,
        }
    }
}

impl Counters {
    /// From a record; None when the kernel read nothing.
    pub fn from_wire(c: &MmCounters) -> Option<Counters> {
        let has = |bit: u32| c.flags & bit != 0;
        let field = |bit: u32, v: u64| has(bit).then_some(v);
        if c.flags & tracer_common::MM_FIELDS == 0 {
            return None;
        }
        Some(Counters {
            settled: has(MM_SETTLED),
            map_count: field(MM_MAP_COUNT, u64::from(c.map_count)),
            total_vm: field(MM_TOTAL_VM, c.total_vm),
            locked_vm: field(MM_LOCKED_VM, c.locked_vm),
            data_vm: field(MM_DATA_VM, c.data_vm),
            exec_vm: field(MM_EXEC_VM, c.exec_vm),
            stack_vm: field(MM_STACK_VM, c.stack_vm),
            mm: (c.mm != 0).then_some(c.mm),
            vmas: [Probe::None; VMA_PROBES],
        })
    }

    /// With the VMA probes of the same record.
    #[must_use]
    pub fn with_vmas(mut self, p: &VmaProbes) -> Counters {
        for (i, v) in self.vmas.iter_mut().enumerate() {
            *v = Probe::from_wire(p, i);
        }
        self
    }
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

/// The system calls a program makes, by its ELF header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abi {
    /// 64-bit x86: the syscalls mmtrace traces.
    X86_64,
    /// 32-bit x86 (ELFCLASS32, EM_386): `int $0x80` and compat syscalls,
    /// for which the kernel's `syscalls:sys_enter_*` tracepoints do not
    /// fire.
    I386,
    /// x32 (ELFCLASS32, EM_X86_64): syscall numbers with the x32 bit,
    /// which those tracepoints skip too.
    X32,
}

impl Abi {
    pub const fn name(self) -> &'static str {
        match self {
            Abi::X86_64 => "x86_64",
            Abi::I386 => "i386",
            Abi::X32 => "x32",
        }
    }

    /// mmtrace sees this program's memory syscalls.
    pub const fn traced(self) -> bool {
        matches!(self, Abi::X86_64)
    }

    /// From the first bytes of an ELF file; None for anything else (a
    /// script is run by its interpreter, whose ELF /proc/PID/exe is).
    pub fn of_elf(header: &[u8]) -> Option<Abi> {
        const EM_386: u16 = 3;
        const EM_X86_64: u16 = 62;
        if header.len() < 20 || &header[..4] != b"\x7fELF" {
            return None;
        }
        // EI_CLASS, then e_machine after the 16 bytes of e_ident and
        // e_type (little endian: EI_DATA 1).
        let machine = u16::from_le_bytes([header[18], header[19]]);
        match (header[4], header[5], machine) {
            (2, 1, EM_X86_64) => Some(Abi::X86_64),
            (1, 1, EM_386) => Some(Abi::I386),
            (1, 1, EM_X86_64) => Some(Abi::X32),
            _ => None,
        }
    }
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
        /// None when not known: traced at its exit alone (no model), the
        /// kernel had seen no earlier break of its address space (a
        /// process seen mid-life: see `decode`).
        old_brk: Option<u64>,
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
    /// Locks the pages of a range in memory.
    Mlock {
        addr: u64,
        len: u64,
        ret: SysResult,
    },
    /// mlock with flags (MLOCK_ONFAULT: pages are locked as they fault in).
    Mlock2 {
        addr: u64,
        len: u64,
        flags: u64,
        ret: SysResult,
    },
    Munlock {
        addr: u64,
        len: u64,
        ret: SysResult,
    },
    /// Locks every mapping (MCL_CURRENT), those to come (MCL_FUTURE), as
    /// they fault in (MCL_ONFAULT).
    Mlockall {
        flags: u64,
        ret: SysResult,
    },
    Munlockall {
        ret: SysResult,
    },
    /// Seals the mappings of a range: they can no longer be unmapped,
    /// moved or have their protection changed.
    Mseal {
        addr: u64,
        len: u64,
        flags: u64,
        ret: SysResult,
    },
    /// Attaches SysV shared memory segment `shmid`; the result is the
    /// address (the segment's size is not in the call: the model reads it
    /// from /proc).
    Shmat {
        shmid: i32,
        /// The address asked for (0: the kernel's choice).
        addr: u64,
        flags: u64,
        ret: SysResult,
    },
    /// Detaches the segment attached at `addr`.
    Shmdt {
        addr: u64,
        ret: SysResult,
    },
    /// Maps pages `pgoff`... of a shared file mapping's file at
    /// [addr, addr + size) (deprecated; the kernel does it as an mmap).
    RemapFilePages {
        addr: u64,
        size: u64,
        prot: u64,
        pgoff: u64,
        flags: u64,
        ret: SysResult,
    },
    /// UFFDIO_REGISTER (`register`) or UFFDIO_UNREGISTER of [addr, addr +
    /// len) on userfaultfd `fd`: the mappings there gain (lose) the
    /// userfaultfd's modes, split at the edges; /proc/PID/maps shows the
    /// pieces but not the modes. `addr` and `len` are None when the ioctl's
    /// argument could not be read.
    Userfaultfd {
        register: bool,
        fd: i32,
        range: Option<(u64, u64)>,
        /// UFFDIO_REGISTER_MODE_* (MISSING 1, WP 2, MINOR 4); 0 to unregister.
        mode: u64,
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
        /// What the program's system calls are, from its ELF header (read
        /// by the session, not the kernel); None when not known.
        abi: Option<Abi>,
        /// Its control groups right after the exec, from /proc/PID/cgroup
        /// (read by the session); None when not read or gone.
        cgroup: Option<Box<crate::kernel::cgroup::Cgroup>>,
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
    /// The OOM killer chose this process (tgid) as its victim: a SIGKILL
    /// and its exit follow. The event's own pid, tid and comm are the task
    /// that ran the OOM killer, which may be any process.
    OomKill {
        victim_pid: u32,
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
            Body::Mlock { .. } => EventKind::Mlock,
            Body::Mlock2 { .. } => EventKind::Mlock2,
            Body::Munlock { .. } => EventKind::Munlock,
            Body::Mlockall { .. } => EventKind::Mlockall,
            Body::Munlockall { .. } => EventKind::Munlockall,
            Body::Mseal { .. } => EventKind::Mseal,
            Body::Shmat { .. } => EventKind::Shmat,
            Body::Shmdt { .. } => EventKind::Shmdt,
            Body::RemapFilePages { .. } => EventKind::RemapFilePages,
            Body::Userfaultfd { .. } => EventKind::Userfaultfd,
            Body::Fault { .. } => EventKind::Fault,
            Body::Stack { .. } => EventKind::Stack,
            Body::Exec { .. } => EventKind::Exec,
            Body::Fork { .. } => EventKind::Fork,
            Body::Exit { .. } => EventKind::Exit,
            Body::OomKill { .. } => EventKind::OomKill,
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
            | Body::Mlock { .. }
            | Body::Mlock2 { .. }
            | Body::Munlock { .. }
            | Body::Mlockall { .. }
            | Body::Munlockall { .. }
            | Body::Mseal { .. }
            | Body::Shmat { .. }
            | Body::Shmdt { .. }
            | Body::RemapFilePages { .. }
            | Body::Userfaultfd { .. }
            | Body::Stack { .. }
            | Body::Exec { .. }
            | Body::Exit { .. } => true,
            Body::Fault { .. }
            | Body::Fork { .. }
            | Body::OomKill { .. }
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
            Body::Mlock { .. } => "mlock",
            Body::Mlock2 { .. } => "mlock2",
            Body::Munlock { .. } => "munlock",
            Body::Mlockall { .. } => "mlockall",
            Body::Munlockall { .. } => "munlockall",
            Body::Mseal { .. } => "mseal",
            Body::Shmat { .. } => "shmat",
            Body::Shmdt { .. } => "shmdt",
            Body::RemapFilePages { .. } => "remap_file_pages",
            Body::Userfaultfd { .. } => "userfaultfd",
            Body::Fault { .. } => "fault",
            Body::Stack { .. } => "stack",
            Body::Exec { .. } => "exec",
            Body::Fork { .. } => "fork",
            Body::Exit { .. } => "exit",
            Body::OomKill { .. } => "oom_kill",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_from_the_elf_header() {
        let header = |class: u8, machine: u16| {
            let mut h = [0u8; 20];
            h[..4].copy_from_slice(b"\x7fELF");
            (h[4], h[5]) = (class, 1);
            h[18..20].copy_from_slice(&machine.to_le_bytes());
            h
        };
        assert_eq!(Abi::of_elf(&header(2, 62)), Some(Abi::X86_64));
        assert_eq!(Abi::of_elf(&header(1, 3)), Some(Abi::I386));
        assert_eq!(Abi::of_elf(&header(1, 62)), Some(Abi::X32));
        // aarch64, a script, too short.
        assert_eq!(Abi::of_elf(&header(2, 183)), None);
        assert_eq!(Abi::of_elf(b"#!/bin/sh\necho hello there\n"), None);
        assert_eq!(Abi::of_elf(b"\x7fELF"), None);
        assert!(Abi::X86_64.traced() && !Abi::I386.traced() && !Abi::X32.traced());
    }

    /// This test's own program is a 64-bit one.
    #[test]
    fn this_program_is_x86_64() {
        assert_eq!(
            crate::kernel::proc::abi(std::process::id()),
            Some(Abi::X86_64)
        );
    }
}
