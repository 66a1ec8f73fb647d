//! The memory syscalls of the kinds table (brk, mmap, munmap, mremap,
//! mprotect, madvise, pkey_mprotect, mlock, mlock2, munlock, mlockall,
//! munlockall, mseal, shmat, shmdt, remap_file_pages, and the userfaultfd
//! ioctls): arguments saved per thread at sys_enter, one record with the
//! result emitted at sys_exit, carrying the address space's counters after
//! the call (`MmCounters`); or, with no model, at sys_exit alone, the
//! arguments read from the caller's saved registers.

use aya_ebpf::{
    helpers::{
        bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{bpf_get_current_task_btf, bpf_probe_read_kernel_str, bpf_task_pt_regs},
    },
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use tracer_common::{
    tp::{SysEnter, SysExit},
    EventKind, FileInfo, MmapFileEvent, Offsets, SyscallEvent, ANON_INODE_FS_MAGIC, BRK_OLD_UNREAD,
    FILE_ANON_INODE, FILE_PATH_TRUNCATED, FILE_PSEUDO, FILE_UNRESOLVED, PATH_COMPONENT_MAX,
    PATH_MAX_DEPTH, PATH_START_LIMIT, UFFDIO_REGISTER, UFFDIO_UNREGISTER,
};

use crate::{
    common::{
        config, count_lost, current_ids, done, failed, fill_header, kind_enabled, mm_call_enter,
        offsets, or_zero, submit, traced, Fail, MmRecord, OrFail, EVENTS,
    },
    kernel::{current_mm, current_task, read, PT_REGS_R10},
    stack,
    vmas::probe_change,
};

/// A call in progress: saved at sys_enter, consumed at sys_exit.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Pending {
    enter_ns: u64,
    kind: u32,
    /// 1: counted in flight in `MM_SEQ` for address space `mm`.
    counted: u32,
    mm: u64,
    args: [u64; 6],
}

/// Calls in progress, by thread id. LRU so that a thread that never
/// returns (killed inside the call) cannot fill it.
#[map(name = "PENDING")]
static PENDING: LruHashMap<u32, Pending> = LruHashMap::with_max_entries(16384, 0);

/// Where an address space's break was last seen: its brk result, or its
/// break read at exec or fork, with the process that saw it.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BrkLast {
    tgid: u32,
    _pad: u32,
    brk: u64,
}

/// The break of each address space (by `mm` address), kept by every brk
/// traced at its exit alone (every process's, traced or not: a thread the
/// filter skips still moves its process's break) and seeded at exec. An
/// entry is taken only by the process that made it: an address reused by
/// another process's address space is not believed. LRU: one dropped is
/// an unknown old break, never a wrong one.
#[map(name = "BRK_LAST")] // tracer_common::MAP_BRK_LAST
static BRK_LAST: LruHashMap<u64, BrkLast> = LruHashMap::with_max_entries(16384, 0);

/// The break a forked child (by tgid) started with, its parent's at the
/// fork, for its first brk (its address space's address is not known at
/// the fork).
#[map(name = "BRK_FORKED")] // tracer_common::MAP_BRK_FORKED
static BRK_FORKED: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);

const CLONE_VM: u64 = 0x100;

/// Whether brk is traced at its exit alone (no model; the exec and fork
/// programs then seed the breaks).
#[inline(always)]
fn brk_alone(cfg: &tracer_common::Config) -> bool {
    cfg.mm_counters == 0 && kind_enabled(cfg, EventKind::Brk)
}

/// Process `tgid` exec'd: its new address space's break, read.
#[inline(always)]
pub fn brk_exec(cfg: &tracer_common::Config, tgid: u32) {
    if !brk_alone(cfg) {
        return;
    }
    let off = offsets();
    let Ok(mm) = current_mm(off.task_mm) else {
        return;
    };
    let _ = BRK_FORKED.remove(tgid);
    if let Ok(brk) = read::<u64>(mm, off.mm_brk) {
        let _ = BRK_LAST.insert(mm, BrkLast { tgid, _pad: 0, brk }, 0);
    }
}

/// The current process forked `child`: a copy of its address space starts
/// with its break.
#[inline(always)]
pub fn brk_forked(cfg: &tracer_common::Config, child: u32, clone_flags: u64) {
    if !brk_alone(cfg) || clone_flags & CLONE_VM != 0 {
        return;
    }
    let off = offsets();
    if let Ok(brk) = current_mm(off.task_mm).and_then(|mm| read::<u64>(mm, off.mm_brk)) {
        let _ = BRK_FORKED.insert(child, brk, 0);
    }
}

/// The break before the current process's brk call that returned `ret`
/// (traced at its exit alone), where its address space's last break was
/// seen; and the break it leaves, kept for the next call.
#[inline(always)]
fn brk_before(tgid: u32, ret: i64) -> Option<u64> {
    let mm = current_mm(offsets().task_mm).ok()?;
    // Interrupted before it took the lock (-EINTR): nothing moved.
    let moved = !(-4095..0).contains(&ret);
    if let Some(last) = BRK_LAST.get_ptr_mut(mm) {
        // SAFETY: a map value, written in place by this process's brk
        // exits alone (two threads racing brk with no lock between them
        // could swap their old breaks: allocators hold one).
        unsafe {
            if (*last).tgid == tgid {
                let old = (*last).brk;
                if moved {
                    (*last).brk = ret as u64;
                }
                return Some(old);
            }
        }
    }
    // SAFETY: a map value, read whole.
    let forked = BRK_FORKED.get_ptr(tgid).map(|b| unsafe { *b });
    if forked.is_some() {
        let _ = BRK_FORKED.remove(tgid);
    }
    if moved {
        let last = BrkLast {
            tgid,
            _pad: 0,
            brk: ret as u64,
        };
        let _ = BRK_LAST.insert(mm, last, 0);
    }
    forked
}

const MAP_ANONYMOUS: u64 = 0x20;
const MAP_GROWSDOWN: u64 = 0x100;
/// The first argument in a sys_enter record (`tp::SysEnter`, whose layout
/// the loader checked).
const ARGS_OFFSET: usize = core::mem::offset_of!(SysEnter, args);

#[inline(always)]
fn on_enter(ctx: &TracePointContext, kind: EventKind, nargs: usize) -> Result<u32, Fail> {
    let cfg = config();
    if !kind_enabled(&cfg, kind) {
        return Ok(0);
    }
    let (tgid, tid) = current_ids();
    if !traced(&cfg, tgid) {
        return Ok(0);
    }
    let mut p = Pending {
        enter_ns: unsafe { bpf_ktime_get_ns() },
        kind: kind as u32,
        counted: 0,
        mm: 0,
        args: [0; 6],
    };
    let mut i = 0;
    while i < nargs && i < 6 {
        // SAFETY: reads inside the tracepoint record (nargs is the syscall's):
        // a record holds only its syscall's arguments, so they are read one
        // by one rather than as a whole SysEnter.
        p.args[i] =
            unsafe { ctx.read_at::<u64>(ARGS_OFFSET + 8 * i) }.or_fail("sys_enter record")?;
        i += 1;
    }
    if kind == EventKind::Brk {
        // The heap end before the call.
        let off = offsets();
        match current_mm(off.task_mm) {
            Ok(mm) => {
                p.args[1] = or_zero(kind, read::<u64>(mm, off.mm_brk), "mm->brk");
                p.args[2] = or_zero(kind, read::<u64>(mm, off.mm_start_brk), "mm->start_brk");
            }
            Err(err) => failed(
                Some(kind),
                Fail {
                    what: "current->mm",
                    err,
                },
            ),
        }
    }
    if cfg.mm_counters != 0 {
        if let Ok(mm) = current_mm(offsets().task_mm) {
            p.mm = mm;
            p.counted = u32::from(mm != 0 && mm_call_enter(mm));
        }
    }
    // Full (every slot is a live thread's call): the call goes unseen.
    if let Err(e) = PENDING.insert(tid, p, 0) {
        MmRecord::begin(p.mm, p.counted != 0).exited();
        return Err(e).or_fail("PENDING insert");
    }
    Ok(0)
}

#[inline(always)]
fn on_exit(ctx: &TracePointContext, kind: EventKind) -> Result<u32, Fail> {
    let (_, tid) = current_ids();
    let Some(p) = PENDING.get_ptr(tid) else {
        return Ok(0);
    };
    // SAFETY: the entry belongs to this thread, which is here.
    let p = unsafe { *p };
    let _ = PENDING.remove(tid);
    // Before the record takes its place in the ring buffer.
    let call = MmRecord::begin(p.mm, p.counted != 0);
    let r = emit(ctx, kind, &p, &call);
    // Counted out whatever happened to the record.
    call.exited();
    r
}

/// A call traced at its exit alone (`Syscall::exit_alone`): its arguments
/// are the caller's saved registers, which the memory syscalls leave as
/// they found them. `orig_ax` must be this record's syscall number, or
/// nothing is made of them and the failure is counted (error -2).
///
/// (Its `Ok` carries nothing: with a `u32` beside `Fail`'s pointer, LLVM
/// masked the pointer's halves to tell them apart, which the verifier
/// refuses.)
#[inline(always)]
fn on_exit_alone(ctx: &TracePointContext, kind: EventKind, nargs: usize) -> Result<(), Fail> {
    let cfg = config();
    if !kind_enabled(&cfg, kind) {
        return Ok(());
    }
    let (tgid, _) = current_ids();
    // brk keeps its process's break whether or not the call is traced.
    let old_brk = if kind == EventKind::Brk {
        // SAFETY: the tracepoint's record, whose layout the loader checked.
        let ret = unsafe { ctx.read_at::<SysExit>(0) }.map_or(-1, |e| e.ret);
        brk_before(tgid, ret)
    } else {
        None
    };
    if !traced(&cfg, tgid) {
        return Ok(());
    }
    // SAFETY: helpers on the current task; the kernel gives its saved user
    // registers (the loader tried this program before choosing it).
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    // SAFETY: a helper read of kernel memory, which may fail.
    let w = unsafe { bpf_probe_read_kernel((regs + PT_REGS_R10) as *const [u64; 9]) }
        .or_fail("saved registers")?;
    // SAFETY: the tracepoint's record, whose layout the loader checked.
    let nr = unsafe { ctx.read_at::<SysExit>(0) }.map_or(-1, |e| e.syscall_nr);
    if w[8] != nr as i64 as u64 {
        return Err(Fail {
            what: "saved registers",
            err: -2,
        });
    }
    // The syscall ABI: di, si, dx, r10, r8, r9.
    let all = [w[7], w[6], w[5], w[0], w[2], w[1]];
    let mut args = [0u64; 6];
    let mut i = 0;
    while i < nargs && i < 6 {
        args[i] = all[i];
        i += 1;
    }
    if kind == EventKind::Brk {
        // The break before the call is gone from the kernel by now: where
        // the address space's last brk, exec or fork left it, if seen.
        match old_brk {
            Some(old) => args[1] = old,
            None => args[3] = BRK_OLD_UNREAD,
        }
        let off = offsets();
        if let Ok(mm) = current_mm(off.task_mm) {
            args[2] = or_zero(kind, read::<u64>(mm, off.mm_start_brk), "mm->start_brk");
        }
    }
    let p = Pending {
        enter_ns: 0,
        kind: kind as u32,
        counted: 0,
        mm: 0,
        args,
    };
    let call = MmRecord::begin(0, false);
    let r = emit(ctx, kind, &p, &call);
    call.exited();
    r.map(|_| ())
}

#[inline(always)]
fn emit(
    ctx: &TracePointContext,
    kind: EventKind,
    p: &Pending,
    call: &MmRecord,
) -> Result<u32, Fail> {
    if p.kind != kind as u32 {
        return Ok(0);
    }
    // SAFETY: the tracepoint's record, whose layout the loader checked.
    let ret = unsafe { ctx.read_at::<SysExit>(0) }
        .or_fail("sys_exit record")?
        .ret;
    let cfg = config();
    if kind == EventKind::Mmap && ret >= 0 && p.args[3] & MAP_GROWSDOWN != 0 {
        stack::growsdown_mapped(current_ids().0);
    }
    // A successful mmap returns a user address (positive), a failed one -errno.
    if kind == EventKind::Mmap && ret >= 0 && p.args[3] & MAP_ANONYMOUS == 0 {
        emit_mmap_file(&cfg, p, ret, call);
        return Ok(0);
    }
    let mut args = p.args;
    if kind == EventKind::Userfaultfd {
        args = uffd_args(&p.args);
    }
    match EVENTS.reserve::<SyscallEvent>(0) {
        Some(mut entry) => {
            let e = entry.as_mut_ptr();
            // SAFETY: `e` is the reserved record.
            unsafe {
                fill_header(&mut (*e).header, kind);
                (*e).enter_ns = p.enter_ns;
                (*e).args = args;
                (*e).ret = ret;
                // The probes first: the counters' settling covers them.
                let off = offsets();
                probe_change(&mut (*e).vmas, kind, &args, ret, call.mm());
                (*e).mm = call.counters(&off);
            }
            submit(entry, &cfg);
        }
        None => count_lost(kind),
    }
    Ok(0)
}

/// A userfaultfd ioctl's record arguments, `[start, len, mode, cmd, fd,
/// range read]`, from the saved `[fd, cmd, argp]`: the range (and the
/// mode of UFFDIO_REGISTER) read from the caller's memory, which the
/// kernel has just read too.
#[inline(always)]
fn uffd_args(saved: &[u64; 6]) -> [u64; 6] {
    let (fd, cmd, argp) = (saved[0], saved[1], saved[2]);
    let mut out = [0, 0, 0, cmd, fd, 0];
    // SAFETY: a helper read of user memory, which may fail.
    if let Ok(range) = unsafe { bpf_probe_read_user(argp as *const [u64; 2]) } {
        out[0] = range[0];
        out[1] = range[1];
        out[5] = 1;
    }
    if cmd == u64::from(UFFDIO_REGISTER) {
        // SAFETY: as above; `struct uffdio_register { range; mode; .. }`.
        if let Ok(mode) = unsafe { bpf_probe_read_user((argp + 16) as *const u64) } {
            out[2] = mode;
        }
    }
    out
}

#[inline(always)]
fn emit_mmap_file(cfg: &tracer_common::Config, p: &Pending, ret: i64, call: &MmRecord) {
    let Some(mut entry) = EVENTS.reserve::<MmapFileEvent>(0) else {
        count_lost(EventKind::Mmap);
        return;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is the reserved record.
    unsafe {
        fill_header(&mut (*e).sys.header, EventKind::Mmap);
        (*e).sys.enter_ns = p.enter_ns;
        (*e).sys.args = p.args;
        (*e).sys.ret = ret;
        let off = offsets();
        probe_change(&mut (*e).sys.vmas, EventKind::Mmap, &p.args, ret, call.mm());
        (*e).sys.mm = call.counters(&off);
        resolve_file(&mut (*e).file, p.args[4], &off);
    }
    submit(entry, cfg);
}

/// Fills `fi` with the identity and path of the current task's file `fd`.
#[inline(always)]
fn resolve_file(fi: &mut FileInfo, fd: u64, off: &Offsets) {
    fi.dev = 0;
    fi.ino = 0;
    fi.path_len = 0;
    fi.flags = FILE_UNRESOLVED;
    fi._pad = 0;
    let Ok(file) = fd_file(fd, off) else {
        return;
    };
    // The file is there: failing to read its identity is an error (the
    // path, below, says in its flags what it could not read).
    let mmap = EventKind::Mmap;
    let inode = or_zero(mmap, read::<u64>(file, off.file_inode), "file->f_inode");
    let mut anon_inode = false;
    if inode != 0 {
        fi.ino = or_zero(mmap, read::<u64>(inode, off.inode_ino), "inode->i_ino");
        let sb = or_zero(mmap, read::<u64>(inode, off.inode_sb), "inode->i_sb");
        if sb != 0 {
            fi.dev = or_zero(mmap, read::<u32>(sb, off.sb_dev), "sb->s_dev");
            anon_inode = read::<u64>(sb, off.sb_magic) == Ok(ANON_INODE_FS_MAGIC);
        }
    }
    let Ok(dentry) = read::<u64>(file, off.file_path + off.path_dentry) else {
        return;
    };
    let Ok(vfsmnt) = read::<u64>(file, off.file_path + off.path_mnt) else {
        return;
    };
    fi.flags = if anon_inode { FILE_ANON_INODE } else { 0 };
    let (len, flags) = walk_path(fi, dentry, vfsmnt, off);
    fi.path_len = len;
    fi.flags |= flags;
}

/// `current->files->fdt->fd[fd]`.
#[inline(always)]
fn fd_file(fd: u64, off: &Offsets) -> Result<u64, i64> {
    let files = read::<u64>(current_task(), off.task_files)?;
    let fdt = read::<u64>(files, off.files_fdt)?;
    let max_fds = read::<u32>(fdt, off.fdt_max_fds)?;
    if fd >= max_fds as u64 {
        return Err(-1);
    }
    let fds = read::<u64>(fdt, off.fdt_fd)?;
    let file = read::<u64>(fds, fd * 8)?;
    if file == 0 {
        return Err(-1);
    }
    Ok(file)
}

/// Writes the path of (dentry, vfsmount) into `fi.path`, leaf first, each
/// component NUL-terminated, crossing mount points up to the root of the
/// mount namespace. A file that is the root of no mount (memfd, anon
/// inodes) is named by its own dentry alone, with [`FILE_PSEUDO`]. Returns
/// (bytes used, FILE_* flags).
#[inline(always)]
fn walk_path(fi: &mut FileInfo, mut dentry: u64, vfsmnt: u64, off: &Offsets) -> (u32, u32) {
    const TRUNCATED: u32 = FILE_PATH_TRUNCATED;
    // struct mount embeds the vfsmount.
    let mut mnt = vfsmnt.wrapping_sub(off.mount_mnt);
    let mut pos: usize = 0;
    let buf = fi.path.as_mut_ptr();
    for _ in 0..PATH_MAX_DEPTH {
        let Ok(mnt_root) = read::<u64>(mnt + off.mount_mnt, off.vfsmount_root) else {
            return (pos as u32, TRUNCATED);
        };
        if dentry == mnt_root {
            let Ok(parent) = read::<u64>(mnt, off.mount_parent) else {
                return (pos as u32, TRUNCATED);
            };
            if parent == mnt {
                return (pos as u32, 0);
            }
            let Ok(mountpoint) = read::<u64>(mnt, off.mount_mountpoint) else {
                return (pos as u32, TRUNCATED);
            };
            dentry = mountpoint;
            mnt = parent;
            continue;
        }
        let Ok(parent) = read::<u64>(dentry, off.dentry_parent) else {
            return (pos as u32, TRUNCATED);
        };
        // The root of a filesystem mounted nowhere: the file itself when it
        // was made by the kernel for one purpose (its name is the path the
        // kernel shows: `memfd:NAME`, `[perf_event]`), else where the walk
        // ends.
        let pseudo = parent == dentry;
        if pseudo && pos != 0 {
            return (pos as u32, 0);
        }
        let Ok(name) = read::<u64>(dentry, off.dentry_name + off.qstr_name) else {
            return (pos as u32, TRUNCATED);
        };
        if pos >= PATH_START_LIMIT {
            return (pos as u32, TRUNCATED);
        }
        // The mask is what keeps the write inside `path` for the verifier,
        // but LLVM drops it as redundant after the check above, and
        // verifiers before 6.9 lose that check's bound when `pos` is
        // spilled to the stack and filled back. A volatile read makes `pos`
        // opaque to LLVM, so the mask stays and bounds the register used.
        // SAFETY: a read of a local.
        let at = unsafe { core::ptr::read_volatile(&pos) } & (PATH_START_LIMIT - 1);
        // SAFETY: at < PATH_START_LIMIT and PATH_START_LIMIT +
        // PATH_COMPONENT_MAX <= PATH_BUF_LEN, so the write stays in `path`.
        let n = unsafe {
            bpf_probe_read_kernel_str(
                buf.add(at).cast(),
                PATH_COMPONENT_MAX as u32,
                name as *const core::ffi::c_void,
            )
        };
        if n <= 0 {
            return (pos as u32, TRUNCATED);
        }
        pos = at + (n as usize & (2 * PATH_COMPONENT_MAX - 1));
        if pseudo {
            return (pos as u32, FILE_PSEUDO);
        }
        dentry = parent;
    }
    (pos as u32, TRUNCATED)
}

/// One line per syscall kind: its programs, named as the kinds table's
/// tracepoints (`sys_enter_<name>`, `sys_exit_<name>`), and the table's
/// `exit_alone` program (`sys_exit_<name>_alone`) where it has one; the
/// number of arguments comes from the table.
macro_rules! syscall_hooks {
    ($($kind:ident: $enter:ident, $exit:ident $(, $alone:ident)?);* $(;)?) => {$(
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            let kind = EventKind::$kind;
            done(Some(kind), on_enter(&ctx, kind, const { EventKind::$kind.nargs() }))
        }

        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            done(Some(EventKind::$kind), on_exit(&ctx, EventKind::$kind))
        }

        $(
            #[tracepoint]
            pub fn $alone(ctx: TracePointContext) -> u32 {
                let kind = EventKind::$kind;
                done(
                    Some(kind),
                    on_exit_alone(&ctx, kind, const { EventKind::$kind.nargs() }).map(|()| 0),
                )
            }
        )?
    )*};
}

/// The ioctl pair: at enter, only the userfaultfd commands that change
/// mappings are kept; any other ioctl costs this test and nothing more.
#[tracepoint]
pub fn sys_enter_ioctl(ctx: TracePointContext) -> u32 {
    let kind = EventKind::Userfaultfd;
    // SAFETY: the second argument of the sys_enter record (ioctl has 3).
    let cmd = match unsafe { ctx.read_at::<u64>(ARGS_OFFSET + 8) } {
        // The command is a C `unsigned int`.
        Ok(cmd) => cmd as u32,
        Err(_) => return 0,
    };
    if cmd != UFFDIO_REGISTER && cmd != UFFDIO_UNREGISTER {
        return 0;
    }
    done(
        Some(kind),
        on_enter(&ctx, kind, const { EventKind::Userfaultfd.nargs() }),
    )
}

#[tracepoint]
pub fn sys_exit_ioctl(ctx: TracePointContext) -> u32 {
    done(
        Some(EventKind::Userfaultfd),
        on_exit(&ctx, EventKind::Userfaultfd),
    )
}

syscall_hooks! {
    Brk: sys_enter_brk, sys_exit_brk, sys_exit_brk_alone;
    Mmap: sys_enter_mmap, sys_exit_mmap, sys_exit_mmap_alone;
    Munmap: sys_enter_munmap, sys_exit_munmap, sys_exit_munmap_alone;
    Mremap: sys_enter_mremap, sys_exit_mremap, sys_exit_mremap_alone;
    Mprotect: sys_enter_mprotect, sys_exit_mprotect, sys_exit_mprotect_alone;
    Madvise: sys_enter_madvise, sys_exit_madvise, sys_exit_madvise_alone;
    PkeyMprotect: sys_enter_pkey_mprotect, sys_exit_pkey_mprotect, sys_exit_pkey_mprotect_alone;
    Mlock: sys_enter_mlock, sys_exit_mlock, sys_exit_mlock_alone;
    Mlock2: sys_enter_mlock2, sys_exit_mlock2, sys_exit_mlock2_alone;
    Munlock: sys_enter_munlock, sys_exit_munlock, sys_exit_munlock_alone;
    Mlockall: sys_enter_mlockall, sys_exit_mlockall, sys_exit_mlockall_alone;
    Munlockall: sys_enter_munlockall, sys_exit_munlockall, sys_exit_munlockall_alone;
    Mseal: sys_enter_mseal, sys_exit_mseal, sys_exit_mseal_alone;
    Shmat: sys_enter_shmat, sys_exit_shmat, sys_exit_shmat_alone;
    Shmdt: sys_enter_shmdt, sys_exit_shmdt, sys_exit_shmdt_alone;
    RemapFilePages: sys_enter_remap_file_pages, sys_exit_remap_file_pages, sys_exit_remap_file_pages_alone;
}
