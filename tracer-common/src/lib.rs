//! Wire types shared by mmtrace's kernel programs (`tracer-ebpf`) and its
//! userspace daemon (`tracer`).
//!
//! Every record in the ring buffer starts with an [`EventHeader`]; the
//! header's `kind` tells the decoder which body follows. The kinds, their
//! numbers and the hooks that make them are one table (`kinds.rs`). Kind
//! numbers are a stable interface: never reuse or renumber one.
#![no_std]

mod kinds;
pub mod tp;
pub use kinds::*;

/// Length of a task's `comm` (TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;
/// Bytes reserved for a file path in an mmap record (components, see
/// [`FileInfo`]).
pub const PATH_BUF_LEN: usize = 768;
/// A path component starts below this offset; one component is read with at
/// most [`PATH_COMPONENT_MAX`] bytes, so every read stays inside the buffer.
pub const PATH_START_LIMIT: usize = 512;
pub const PATH_COMPONENT_MAX: usize = 256;
/// Most path components (directory levels plus mount crossings) walked.
pub const PATH_MAX_DEPTH: u32 = 48;
/// Bytes reserved for the program path of an exec record.
pub const EXEC_PATH_LEN: usize = 512;
/// Number of slots in the per-kind lost-event counters (kind numbers are
/// below it; `Config::kind_mask` has a bit for each).
pub const KIND_SLOTS: usize = 32;

// Map names, used by both sides (a test of tracer checks them against the
// object's maps).
pub const MAP_EVENTS: &str = "EVENTS";
/// Events that could not be reserved, per CPU and per kind.
pub const MAP_LOST: &str = "LOST";
/// Failures of the programs, per CPU and per kind (see [`ERRORS_NO_KIND`]).
pub const MAP_ERRORS: &str = "ERRORS";
pub const MAP_PID_FILTER: &str = "PID_FILTER";
pub const MAP_COMM_FILTER: &str = "COMM_FILTER";
/// Selected cgroups (`--cgroup`): keys `[CGROUP_V2 or CGROUP_V1_MEMORY, id]`.
pub const MAP_CGROUP_FILTER: &str = "CGROUP_FILTER";
pub const MAP_FAULT_COUNTS: &str = "FAULT_COUNTS";
pub const MAP_RSS: &str = "RSS";
/// Slot 0: the active STACK_SOURCE_*, set by the loader; slot 1: a
/// MAP_GROWSDOWN mapping was seen (set by the programs).
pub const MAP_RUNTIME: &str = "RUNTIME";
/// Syscalls in progress, by thread.
pub const MAP_PENDING: &str = "PENDING";
/// Stack growth candidates (faults below the stack), by thread.
pub const MAP_STACK_PENDING: &str = "STACK_PENDING";
pub const MAP_STACK_PENDING_COUNT: &str = "STACK_PENDING_COUNT";
pub const MAP_BRK_LAST: &str = "BRK_LAST";
pub const MAP_BRK_FORKED: &str = "BRK_FORKED";
/// The stack's start at fentry of the stack expansion, by thread.
pub const MAP_STACK_FENTRY: &str = "STACK_FENTRY";
/// Processes that may have a MAP_GROWSDOWN region besides their stack.
pub const MAP_GROWSDOWN: &str = "GROWSDOWN";
/// Memory syscalls in flight and finished, per address space (see
/// [`MmCounters`]).
pub const MAP_MM_SEQ: &str = "MM_SEQ";
/// Per CPU: the pivots of the maple node being read (see [`VmaProbes`]).
pub const MAP_VMA_PIVOTS: &str = "VMA_PIVOTS";

/// The slot of `ERRORS` for failures that belong to no event kind (the RSS
/// counters); kind numbers start at 1.
pub const ERRORS_NO_KIND: u32 = 0;

/// RSS counters kept per process, in bytes, indexed like the kernel's
/// mm counters: file pages, anonymous pages, swap entries, shared memory.
pub const RSS_MEMBERS: usize = 4;

/// Common header of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// CLOCK_MONOTONIC, ns (bpf_ktime_get_ns).
    pub ts_ns: u64,
    pub kind: u32,
    pub cpu: u32,
    pub tgid: u32,
    pub tid: u32,
    pub comm: [u8; COMM_LEN],
}

/// brk, mmap, munmap, mremap, mprotect: the call's arguments and result,
/// paired in the kernel from sys_enter and sys_exit of one thread.
///
/// `args` by kind:
/// - brk: `[requested, heap end before the call, heap start, unread]`;
///   traced at its exit alone, the heap end before the call is where the
///   kernel programs last saw the address space's break (its previous brk,
///   exec or fork), and when they saw none it is 0 and `unread` is
///   [`BRK_OLD_UNREAD`]
/// - mmap: `[addr, len, prot, flags, fd, offset]`
/// - munmap: `[addr, len]`
/// - mremap: `[old_addr, old_len, new_len, flags, new_addr]`
/// - mprotect: `[addr, len, prot]`
/// - madvise: `[addr, len, advice]`
/// - pkey_mprotect: `[addr, len, prot, pkey]`
/// - mlock, munlock: `[addr, len]`
/// - mlock2: `[addr, len, flags]`
/// - mlockall: `[flags]`
/// - munlockall: `[]`
/// - mseal: `[addr, len, flags]`
/// - shmat: `[shmid, shmaddr, shmflg]` (the result: the address)
/// - shmdt: `[shmaddr]`
/// - remap_file_pages: `[start, size, prot, pgoff, flags]`
/// - userfaultfd: `[start, len, mode, cmd, fd, range read]`, the range (and
///   for UFFDIO_REGISTER the mode) read from the ioctl's argument at exit;
///   `range read` 0 when it could not be read (start and len are then 0)
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallEvent {
    pub header: EventHeader,
    /// CLOCK_MONOTONIC at sys_enter.
    pub enter_ns: u64,
    pub args: [u64; 6],
    /// The raw return value: an address, 0, or -errno.
    pub ret: i64,
    /// The address space's counters after the call.
    pub mm: MmCounters,
    /// The VMAs the call left at the edges of its range, read from the
    /// kernel's VMA tree with the counters (settled with them).
    pub vmas: VmaProbes,
}

/// A brk record's `args[3]` when the heap end before the call is not known
/// (traced at its exit alone, with no earlier break of its address space
/// seen).
pub const BRK_OLD_UNREAD: u64 = 1;

/// Probes of the address space's VMA tree at a change's edges: what the
/// kernel left there, so that the model follows the kernel's merges and
/// splits instead of predicting them. For a change of `[lo, hi)`, probe 0
/// is at `lo` and probe 1 at `hi - 1`; for brk at the heap's last page and
/// above it; an mremap's probe 2 is where the old range was (a hole, or
/// the VMA MREMAP_DONTUNMAP leaves) or where a shrink in place ended. An
/// unmap (it merges nothing) is not probed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmaProbes {
    /// `VMA_*`, per probe.
    pub state: [u8; VMA_PROBES],
    pub _pad: [u8; 6],
    /// The probed addresses.
    pub addr: [u64; VMA_PROBES],
    pub ext: [VmaExtent; VMA_PROBES],
}

pub const VMA_PROBES: usize = 3;
/// Not probed (no range, or the kernel's VMA tree cannot be read here).
pub const VMA_NONE: u8 = 0;
/// A VMA holds the address: `ext` is its extent, flags and offset.
pub const VMA_MAPPED: u8 = 1;
/// No VMA holds the address.
pub const VMA_GAP: u8 = 2;
/// The tree could not be read (it changed under the walk, a read failed).
pub const VMA_UNREAD: u8 = 3;

/// One VMA as the kernel holds it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmaExtent {
    pub start: u64,
    /// Exclusive.
    pub end: u64,
    /// `vm_flags` (not read yet: 0).
    pub flags: u64,
    /// `vm_pgoff` (not read yet: 0): the offset in the file, in pages (for
    /// anonymous memory, the page number of the address it was first
    /// mapped at).
    pub pgoff: u64,
}

/// [`VmaOffsets::walk`]: how the VMA tree of an mm_struct is read.
pub const VMA_WALK_NONE: u64 = 0;
/// `mm->mm_mt`, a maple tree (6.1 on).
pub const VMA_WALK_MAPLE: u64 = 1;
/// `mm->mm_rb`, a red-black tree of `vm_rb` (before 6.1).
pub const VMA_WALK_RB: u64 = 2;

/// The counters of the current task's `mm_struct`, read at the end of a
/// change (a memory syscall's exit, an exec, a stack growth): what the
/// change left behind, in the kernel's own accounting. Sizes are in pages.
///
/// `flags` holds an `MM_*` bit for each field that was read (the others
/// are 0: the kernel has no such field, or the read failed), and
/// [`MM_SETTLED`] when the values belong to this event alone: no other
/// change of the same address space was in flight, or finished after this
/// record took its place in the ring buffer, while the counters were read.
/// Unsettled counters may hold a neighbour's change that comes later in the
/// stream; they are not compared.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmCounters {
    pub flags: u32,
    /// `mm->map_count`: the VMAs of the address space.
    pub map_count: u32,
    /// `mm->total_vm`: pages of every VMA.
    pub total_vm: u64,
    /// `mm->locked_vm`: pages locked (mlock), and pages drivers charge.
    pub locked_vm: u64,
    /// `mm->data_vm`: private writable pages, stacks aside.
    pub data_vm: u64,
    /// `mm->exec_vm`: executable pages, writable ones and stacks aside.
    pub exec_vm: u64,
    /// `mm->stack_vm`: pages of the grows-down VMAs.
    pub stack_vm: u64,
    /// The address space's `mm_struct` (its key in `MM_SEQ`), when the
    /// counters were read; 0 otherwise.
    pub mm: u64,
}

impl MmCounters {
    pub const ZERO: MmCounters = MmCounters {
        flags: 0,
        map_count: 0,
        total_vm: 0,
        locked_vm: 0,
        data_vm: 0,
        exec_vm: 0,
        stack_vm: 0,
        mm: 0,
    };
}

/// [`MmCounters::flags`] (and [`Offsets::mm_counters`]): the fields read.
pub const MM_MAP_COUNT: u32 = 1;
pub const MM_TOTAL_VM: u32 = 1 << 1;
pub const MM_LOCKED_VM: u32 = 1 << 2;
pub const MM_DATA_VM: u32 = 1 << 3;
pub const MM_EXEC_VM: u32 = 1 << 4;
pub const MM_STACK_VM: u32 = 1 << 5;
/// Every counter field.
pub const MM_FIELDS: u32 = 0x3f;
/// In [`Offsets::mm_counters`] only: the page counters are laid out as
/// [`MmVmBlock`] from `mm_total_vm` on, and are read in one go.
pub const MM_VM_BLOCK: u32 = 1 << 31;

/// The page counters of mm_struct as every kernel from 4.x to 6.18 lays
/// them out (`pinned_vm`, an atomic64_t, between `locked_vm` and
/// `data_vm`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MmVmBlock {
    pub total_vm: u64,
    pub locked_vm: u64,
    pub pinned_vm: u64,
    pub data_vm: u64,
    pub exec_vm: u64,
    pub stack_vm: u64,
}
/// The counters are this event's alone (see [`MmCounters`]).
pub const MM_SETTLED: u32 = 1 << 16;

/// An address space's memory syscalls, for [`MM_SETTLED`]: kept in
/// `MM_SEQ` by the address of its `mm_struct`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MmSeq {
    /// Calls entered and not yet exited.
    pub in_flight: u64,
    /// Calls exited (their records made).
    pub exited: u64,
}

/// The file behind a file-backed mmap, resolved in the kernel from the fd
/// at the time of the call.
///
/// `path` holds the path's components leaf first, each ended by a NUL:
/// `"libc.so.6\0x86_64-linux-gnu\0lib\0usr\0"` is `/usr/lib/x86_64-linux-gnu/libc.so.6`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileInfo {
    /// Kernel encoding of the device (major << 20 | minor).
    pub dev: u32,
    /// Bytes of `path` in use.
    pub path_len: u32,
    pub ino: u64,
    /// FILE_* flags.
    pub flags: u32,
    pub _pad: u32,
    pub path: [u8; PATH_BUF_LEN],
}

/// The userfaultfd ioctls that change mappings (<linux/userfaultfd.h>):
/// their argument starts with the range (`struct uffdio_range`), which
/// UFFDIO_REGISTER follows with the mode.
pub const UFFDIO_REGISTER: u32 = 0xc020_aa00;
pub const UFFDIO_UNREGISTER: u32 = 0x8010_aa01;

/// The path was longer or deeper than the buffer: leading components are
/// missing.
pub const FILE_PATH_TRUNCATED: u32 = 1;
/// The fd did not resolve to a file (closed by another thread meanwhile).
pub const FILE_UNRESOLVED: u32 = 2;
/// The file's dentry is the root of no mount: a file made by the kernel for
/// one purpose (memfd, SysV and shared anonymous memory, hugetlb, anon
/// inodes). `path` holds its name alone, which /proc shows after a `/`.
pub const FILE_PSEUDO: u32 = 4;
/// The file is an anon inode: /proc shows `anon_inode:NAME`, no `/`.
pub const FILE_ANON_INODE: u32 = 8;
/// `super_block.s_magic` of anon_inodefs.
pub const ANON_INODE_FS_MAGIC: u64 = 0x0904_1934;

/// An mmap of a file: the syscall record followed by the file.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MmapFileEvent {
    pub sys: SyscallEvent,
    pub file: FileInfo,
}

/// A user page fault (exceptions:page_fault_user).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FaultEvent {
    pub header: EventHeader,
    pub addr: u64,
    pub ip: u64,
    /// x86 page fault error code (bit 0 present, 1 write, 4 instruction fetch).
    pub error_code: u64,
}

/// Stack growth: the grows-down stack mapping's start moved down.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackEvent {
    pub header: EventHeader,
    pub old_start: u64,
    pub new_start: u64,
    /// STACK_SOURCE_*.
    pub source: u32,
    pub _pad: u32,
    /// The address space's counters after the growth.
    pub mm: MmCounters,
}

/// Detected by a fault below the stack confirmed by the growth of the
/// mm's stack size (`mm->stack_vm`).
pub const STACK_SOURCE_FAULT: u32 = 1;
/// Reported by an fexit program on the kernel's stack expansion function.
pub const STACK_SOURCE_FEXIT: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// The process's start time (task->start_time, ns since boot).
    pub start_time: u64,
    /// The pid before exec (differs when a thread other than the leader execs).
    pub old_pid: u32,
    /// Bytes of `path` in use (without the NUL).
    pub path_len: u32,
    /// The new address space's counters, as exec left it.
    pub mm: MmCounters,
    /// The new address space's `mm_struct` address (its key in `MM_SEQ`);
    /// 0 when not read.
    pub mm_addr: u64,
    pub path: [u8; EXEC_PATH_LEN],
}

/// A new process (not a thread) created by fork/clone; the header is the
/// parent's.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkEvent {
    pub header: EventHeader,
    pub child_pid: u32,
    pub _pad: u32,
    pub clone_flags: u64,
}

/// The last thread of a process exited.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitEvent {
    pub header: EventHeader,
    /// The process's start time (task->start_time, ns since boot).
    pub start_time: u64,
    /// The wait status (`code << 8`, or the signal number).
    pub exit_code: i32,
    pub _pad: u32,
    /// The address space's counters as the process leaves it, where the
    /// exit hook runs before the kernel takes the address space away
    /// (Linux 6.16 and later); flags 0 when nothing could be read.
    pub mm: MmCounters,
}

/// The OOM killer chose `victim_pid` (a tgid); the header is the task that
/// ran the OOM killer (any task that was allocating), not the victim.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OomKillEvent {
    pub header: EventHeader,
    pub victim_pid: u32,
    pub _pad: u32,
}

/// Fault counts of one process, per CPU, kept in the kernel for
/// `--faults summary`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultCounts {
    pub read: u64,
    pub write: u64,
    pub exec: u64,
    /// Faults on present pages (protection faults).
    pub present: u64,
    pub comm: [u8; COMM_LEN],
}

/// `Config::filter` bits.
pub const FILTER_PID: u32 = 1;
pub const FILTER_COMM: u32 = 2;
/// Children of a traced process join the pid filter at fork.
pub const FILTER_FOLLOW: u32 = 4;
/// A cgroup of the unified hierarchy is selected (`CGROUP_FILTER`).
pub const FILTER_CGROUP_V2: u32 = 8;
/// A cgroup of the v1 memory hierarchy is selected (`CGROUP_FILTER`).
pub const FILTER_CGROUP_V1_MEMORY: u32 = 16;

/// The first word of a `CGROUP_FILTER` key: which hierarchy its id is of
/// (kernfs ids are numbered per hierarchy).
pub const CGROUP_V2: u64 = 2;
pub const CGROUP_V1_MEMORY: u64 = 1;
/// A process is selected by a cgroup at most this many levels above its
/// own (the programs walk up the cgroup tree that far).
pub const CGROUP_MAX_DEPTH: u32 = 8;
/// At most this many `--cgroup` selections.
pub const CGROUP_FILTER_MAX: u32 = 64;

/// `Config::fault_mode`.
pub const FAULTS_OFF: u32 = 0;
pub const FAULTS_SUMMARY: u32 = 1;
pub const FAULTS_ALL: u32 = 2;

/// Settings the loader writes into the programs' read-only data.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// mmtrace's own tgid: never traced.
    pub self_tgid: u32,
    /// FILTER_* bits.
    pub filter: u32,
    /// EventKind::bit() of each kind to emit.
    pub kind_mask: u32,
    /// FAULTS_*.
    pub fault_mode: u32,
    /// Wake the reader when this many bytes are waiting; below it events
    /// are submitted without a wakeup and the reader polls.
    pub wakeup_bytes: u64,
    /// Offset of `group_dead` in sched_process_exit's record; 0 when the
    /// kernel's tracepoint has no such field (then the leader's exit counts).
    pub exit_group_dead_offset: u32,
    /// Keep each traced process's RSS counters (kmem:rss_stat) in `RSS`.
    pub track_rss: u32,
    /// Log why a program gave up on an event (aya-log, `AYA_LOGS`), besides
    /// counting it in `ERRORS`.
    pub diagnostics: u32,
    /// Read the address space's counters into the records that carry them
    /// ([`MmCounters`]), and keep `MM_SEQ`.
    pub mm_counters: u32,
}

impl Config {
    pub const ZERO: Config = Config {
        self_tgid: 0,
        filter: 0,
        kind_mask: 0,
        fault_mode: 0,
        wakeup_bytes: 0,
        exit_group_dead_offset: 0,
        track_rss: 0,
        diagnostics: 0,
        mm_counters: 0,
    };
}

/// Kernel struct field offsets resolved by the loader from the running
/// kernel's BTF (rustc cannot emit CO-RE relocations).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Offsets {
    pub task_mm: u64,
    pub task_files: u64,
    pub task_exit_code: u64,
    pub task_start_time: u64,
    /// `task_struct.signal` and `signal_struct.live` (an atomic_t, its
    /// counter first): the threads of the process not yet exiting, for
    /// kernels whose sched_process_exit has no `group_dead`.
    pub task_signal: u64,
    pub signal_live: u64,
    /// `signal_struct.rlim`: the process's resource limits (`struct rlimit
    /// { rlim_cur; rlim_max; }` each, by RLIMIT_* number).
    pub signal_rlim: u64,
    pub mm_brk: u64,
    pub mm_start_brk: u64,
    pub mm_start_stack: u64,
    pub mm_stack_vm: u64,
    /// The other counters of [`MmCounters`]; each is read only when its
    /// `MM_*` bit is in `mm_counters` (the kernel's BTF has the field).
    pub mm_map_count: u64,
    pub mm_total_vm: u64,
    pub mm_locked_vm: u64,
    pub mm_data_vm: u64,
    pub mm_exec_vm: u64,
    /// `MM_*` bits of the counters whose offsets are known (`mm_stack_vm`
    /// always is), and [`MM_VM_BLOCK`].
    pub mm_counters: u64,
    pub files_fdt: u64,
    pub fdt_fd: u64,
    pub fdt_max_fds: u64,
    pub file_path: u64,
    pub file_inode: u64,
    pub path_mnt: u64,
    pub path_dentry: u64,
    pub inode_ino: u64,
    pub inode_sb: u64,
    pub sb_dev: u64,
    pub sb_magic: u64,
    pub dentry_parent: u64,
    pub dentry_name: u64,
    pub qstr_len: u64,
    pub qstr_name: u64,
    pub mount_mnt: u64,
    pub mount_parent: u64,
    pub mount_mountpoint: u64,
    pub vfsmount_root: u64,
    pub vma_start: u64,
    /// `vm_area_struct.vm_mm`: whose address space a VMA belongs to.
    pub vma_mm: u64,
    /// For `--cgroup` (all 0 when this kernel's BTF lacks them; the
    /// selection is then refused): `task_struct.cgroups`,
    /// `css_set.dfl_cgrp`, `css_set.subsys[memory_cgrp_id]`,
    /// `cgroup_subsys_state.cgroup`, `cgroup.kn`, `kernfs_node.parent`
    /// (`__parent` since 6.15) and `kernfs_node.id`.
    pub task_cgroups: u64,
    pub css_set_dfl_cgrp: u64,
    pub css_set_memory: u64,
    pub css_cgroup: u64,
    pub cgroup_kn: u64,
    pub kn_parent: u64,
    pub kn_id: u64,
}

/// The offsets of the VMA tree's walk (tracer-ebpf's `vmas`), apart from
/// [`Offsets`]: the programs copy `Offsets` onto their 512-byte stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmaOffsets {
    /// `VMA_WALK_*`: which walk, or none.
    pub walk: u64,
    /// `mm_struct.mm_mt.ma_root` (maple), or `mm_struct.mm_rb.rb_node`.
    pub mm_vmas: u64,
    pub maple_r64_pivot: u64,
    pub maple_r64_slot: u64,
    pub maple_r64_meta: u64,
    pub maple_a64_pivot: u64,
    pub maple_a64_slot: u64,
    pub maple_a64_meta: u64,
    pub rb_left: u64,
    pub rb_right: u64,
    pub vma_rb: u64,
    pub vma_start: u64,
    pub vma_end: u64,
    pub vma_flags: u64,
    pub vma_pgoff: u64,
}

impl VmaOffsets {
    pub const ZERO: VmaOffsets = VmaOffsets {
        walk: 0,
        mm_vmas: 0,
        maple_r64_pivot: 0,
        maple_r64_slot: 0,
        maple_r64_meta: 0,
        maple_a64_pivot: 0,
        maple_a64_slot: 0,
        maple_a64_meta: 0,
        rb_left: 0,
        rb_right: 0,
        vma_rb: 0,
        vma_start: 0,
        vma_end: 0,
        vma_flags: 0,
        vma_pgoff: 0,
    };
}

impl Offsets {
    pub const ZERO: Offsets = Offsets {
        task_mm: 0,
        task_files: 0,
        task_exit_code: 0,
        task_start_time: 0,
        task_signal: 0,
        signal_live: 0,
        signal_rlim: 0,
        mm_brk: 0,
        mm_start_brk: 0,
        mm_start_stack: 0,
        mm_stack_vm: 0,
        mm_map_count: 0,
        mm_total_vm: 0,
        mm_locked_vm: 0,
        mm_data_vm: 0,
        mm_exec_vm: 0,
        mm_counters: 0,
        files_fdt: 0,
        fdt_fd: 0,
        fdt_max_fds: 0,
        file_path: 0,
        file_inode: 0,
        path_mnt: 0,
        path_dentry: 0,
        inode_ino: 0,
        inode_sb: 0,
        sb_dev: 0,
        sb_magic: 0,
        dentry_parent: 0,
        dentry_name: 0,
        qstr_len: 0,
        qstr_name: 0,
        mount_mnt: 0,
        mount_parent: 0,
        mount_mountpoint: 0,
        vfsmount_root: 0,
        vma_start: 0,
        vma_mm: 0,
        task_cgroups: 0,
        css_set_dfl_cgrp: 0,
        css_set_memory: 0,
        css_cgroup: 0,
        cgroup_kn: 0,
        kn_parent: 0,
        kn_id: 0,
    };
}

/// A type of the ring buffer's records: `repr(C)` plain data for which
/// every bit pattern is a valid value, so that it may be read from any bytes
/// of its size (the decoder's only unsafe read).
///
/// # Safety
/// Implement only for `repr(C)` types made of integers and arrays of
/// integers.
pub unsafe trait Wire: Copy {}

// SAFETY: each is repr(C) and holds only integers and integer arrays.
unsafe impl Wire for EventHeader {}
unsafe impl Wire for SyscallEvent {}
unsafe impl Wire for MmapFileEvent {}
unsafe impl Wire for FaultEvent {}
unsafe impl Wire for StackEvent {}
unsafe impl Wire for ExecEvent {}
unsafe impl Wire for ForkEvent {}
unsafe impl Wire for ExitEvent {}
unsafe impl Wire for OomKillEvent {}
// Parts of records, read alone.
unsafe impl Wire for MmCounters {}
unsafe impl Wire for VmaProbes {}
unsafe impl Wire for FileInfo {}
unsafe impl Wire for u32 {}
unsafe impl Wire for i64 {}
unsafe impl<const N: usize> Wire for [u64; N] {}

#[cfg(feature = "user")]
mod user {
    use super::{Config, FaultCounts, MmSeq, Offsets, VmaOffsets};
    // SAFETY: plain-old-data, `repr(C)`, no padding holes read as anything
    // but bytes.
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for MmSeq {}
    unsafe impl aya::Pod for Offsets {}
    unsafe impl aya::Pod for VmaOffsets {}
    unsafe impl aya::Pod for FaultCounts {}
}
