//! The kinds table: every event kind with its wire number, name, `--events`
//! class and the kernel hooks that produce it. Everything else is derived
//! from it: [`EventKind::ALL`], [`EventKind::from_u32`], [`EventKind::name`],
//! the attach plan (tracer/src/kernel/plan.rs), the CLI's event classes and
//! [`memory_syscalls`].
//!
//! To add a kind: one row in [`event_kinds!`] below with a new number (never
//! reuse or renumber one), then let the compiler point at the rest (decode,
//! the model, the renderings); a syscall kind also needs one line in
//! tracer-ebpf's `syscall_hooks!`.

use crate::{
    tp::{
        Layout, MarkVictim, PageFaultUser, RssStat, SchedProcessExec, SysExit, TaskNewtask,
        SCHED_PROCESS_EXIT_FIELDS,
    },
    ERRORS_NO_KIND, KIND_SLOTS,
};

/// A tracepoint a program attaches to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracepoint {
    /// The tracefs group (`events/<category>/<name>`).
    pub category: &'static str,
    pub name: &'static str,
    /// The program attached to it: the tracer-ebpf function of this name.
    pub prog: &'static str,
    /// How the program reads its record (see `tp.rs`), checked against the
    /// kernel's format before loading.
    pub layout: Layout,
    /// A program on the same tracepoint as a BTF-typed raw tracepoint
    /// (`tp_btf`), which takes the tracepoint's arguments instead of a
    /// record: preferred where the kernel loads it (no record to build, a
    /// fraction of the cost per hit, and no grace period to detach), else
    /// `prog`.
    pub btf_prog: Option<&'static str>,
}

impl Tracepoint {
    /// A tracepoint whose program has the tracepoint's name (all of ours).
    pub const fn new(category: &'static str, name: &'static str, layout: Layout) -> Tracepoint {
        Tracepoint {
            category,
            name,
            prog: name,
            layout,
            btf_prog: None,
        }
    }

    /// Whether `prog` is one of its programs.
    pub fn is(&self, prog: &str) -> bool {
        self.prog == prog || self.btf_prog == Some(prog)
    }
}

pub const TP_PAGE_FAULT_USER: Tracepoint = Tracepoint {
    btf_prog: Some("page_fault_user_btf"),
    ..Tracepoint::new(
        "exceptions",
        "page_fault_user",
        Layout::Fields(PageFaultUser::FIELDS),
    )
};
/// Its BTF variant reads no record: not for RSS counters (the loader's
/// choice).
pub const TP_RSS_STAT: Tracepoint = Tracepoint {
    btf_prog: Some("rss_stat_btf"),
    ..Tracepoint::new("kmem", "rss_stat", Layout::Fields(RssStat::FIELDS))
};
pub const TP_SCHED_PROCESS_EXEC: Tracepoint = Tracepoint::new(
    "sched",
    "sched_process_exec",
    Layout::Fields(SchedProcessExec::FIELDS),
);
pub const TP_TASK_NEWTASK: Tracepoint =
    Tracepoint::new("task", "task_newtask", Layout::Fields(TaskNewtask::FIELDS));
pub const TP_SCHED_PROCESS_EXIT: Tracepoint = Tracepoint::new(
    "sched",
    "sched_process_exit",
    Layout::Fields(SCHED_PROCESS_EXIT_FIELDS),
);

pub const TP_MARK_VICTIM: Tracepoint =
    Tracepoint::new("oom", "mark_victim", Layout::Fields(MarkVictim::FIELDS));

/// A syscall traced by a `sys_enter_*` / `sys_exit_*` pair: the arguments
/// are saved at enter, one record with the result is made at exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syscall {
    /// The x86_64 syscall number (a C `long`, as libc's `SYS_*`).
    pub nr: i64,
    /// Arguments saved at enter (into `SyscallEvent::args`).
    pub nargs: usize,
    pub enter: Tracepoint,
    pub exit: Tracepoint,
    /// A program on the same exit tracepoint that reads the arguments from
    /// the caller's saved registers (`bpf_task_pt_regs`, x86_64), so that no
    /// enter program runs: used when no call needs counting in flight (no
    /// model) and the kernel has the helper. None where the enter must see
    /// the call first (ioctl keeps two commands). brk's takes the old break
    /// from where the programs last saw it
    /// ([`BRK_OLD_UNREAD`](crate::BRK_OLD_UNREAD)).
    pub exit_alone: Option<Tracepoint>,
}

/// Programs on a kernel function where the kernel allows fentry/fexit, with
/// tracepoints to fall back on where it does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fexit {
    /// The kernel function.
    pub function: &'static str,
    pub entry_prog: &'static str,
    pub exit_prog: &'static str,
    /// What the kind is made from when the fexit programs cannot load.
    pub fallback: &'static [Tracepoint],
}

/// Where the events of a kind come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Syscall(Syscall),
    Tracepoints(&'static [Tracepoint]),
    Fexit(Fexit),
}

/// The families of `--events` (the CLI's values, in this order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventClass {
    Brk,
    Mmap,
    Munmap,
    Mremap,
    Mprotect,
    Madvise,
    Mlock,
    Mseal,
    Shm,
    Userfaultfd,
    Fault,
    Stack,
    Process,
}

impl EventClass {
    pub const ALL: [EventClass; 13] = [
        EventClass::Brk,
        EventClass::Mmap,
        EventClass::Munmap,
        EventClass::Mremap,
        EventClass::Mprotect,
        EventClass::Madvise,
        EventClass::Mlock,
        EventClass::Mseal,
        EventClass::Shm,
        EventClass::Userfaultfd,
        EventClass::Fault,
        EventClass::Stack,
        EventClass::Process,
    ];

    /// The `--events` value.
    pub const fn name(self) -> &'static str {
        match self {
            EventClass::Brk => "brk",
            EventClass::Mmap => "mmap",
            EventClass::Munmap => "munmap",
            EventClass::Mremap => "mremap",
            EventClass::Mprotect => "mprotect",
            EventClass::Madvise => "madvise",
            EventClass::Mlock => "mlock",
            EventClass::Mseal => "mseal",
            EventClass::Shm => "shm",
            EventClass::Userfaultfd => "userfaultfd",
            EventClass::Fault => "fault",
            EventClass::Stack => "stack",
            EventClass::Process => "process",
        }
    }

    /// The kinds of this class, in table order.
    pub fn kinds(self) -> impl Iterator<Item = EventKind> + Clone {
        EventKind::ALL
            .into_iter()
            .filter(move |k| k.info().class == self)
    }
}

/// A job of the programs that is not an event kind, and needs a tracepoint
/// of its own whatever kinds are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Duty {
    /// Children of traced processes join the pid filter at fork
    /// (`FILTER_FOLLOW`).
    FollowChildren,
    /// Exited processes leave the pid filter, whose pids may be reused
    /// (`FILTER_PID`).
    ForgetExited,
    /// Per-process RSS counters in the `RSS` map (`Config::track_rss`).
    TrackRss,
}

impl Duty {
    pub const ALL: [Duty; 3] = [Duty::FollowChildren, Duty::ForgetExited, Duty::TrackRss];

    pub const fn tracepoint(self) -> &'static Tracepoint {
        match self {
            Duty::FollowChildren => &TP_TASK_NEWTASK,
            Duty::ForgetExited => &TP_SCHED_PROCESS_EXIT,
            Duty::TrackRss => &TP_RSS_STAT,
        }
    }
}

/// One row of the kinds table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindInfo {
    pub kind: EventKind,
    /// The `event` field of the stream, the name in summaries.
    pub name: &'static str,
    pub class: EventClass,
    pub source: Source,
    /// Not every kernel has it (a syscall behind a config option): when its
    /// tracepoints are missing the kind is skipped (its events cannot
    /// happen there) instead of failing.
    pub optional: bool,
}

impl KindInfo {
    pub const fn syscall(&self) -> Option<&Syscall> {
        match &self.source {
            Source::Syscall(s) => Some(s),
            _ => None,
        }
    }
}

/// `syscall!("name", nr, nargs)`: a [`Source::Syscall`] on
/// `syscalls:sys_enter_<name>` and `syscalls:sys_exit_<name>`.
/// `syscall!(paired "name", ..)`: one with no [`Syscall::exit_alone`].
macro_rules! syscall {
    ($name:literal, $nr:literal, $nargs:literal) => {
        syscall!(@make $name, $nr, $nargs, Some(Tracepoint {
            category: "syscalls",
            name: concat!("sys_exit_", $name),
            prog: concat!("sys_exit_", $name, "_alone"),
            layout: Layout::Fields(SysExit::FIELDS),
            btf_prog: None,
        }))
    };
    (paired $name:literal, $nr:literal, $nargs:literal) => {
        syscall!(@make $name, $nr, $nargs, None)
    };
    (@make $name:literal, $nr:literal, $nargs:literal, $alone:expr) => {
        Source::Syscall(Syscall {
            nr: $nr,
            nargs: $nargs,
            enter: Tracepoint::new(
                "syscalls",
                concat!("sys_enter_", $name),
                Layout::SysEnter { nargs: $nargs },
            ),
            exit: Tracepoint::new(
                "syscalls",
                concat!("sys_exit_", $name),
                Layout::Fields(SysExit::FIELDS),
            ),
            exit_alone: $alone,
        })
    };
}

macro_rules! event_kinds {
    ($(
        $(#[$doc:meta])*
        $kind:ident = $num:literal {
            name: $name:literal,
            class: $class:ident,
            source: $source:expr,
            optional: $optional:literal $(,)?
        }
    )*) => {
        /// Event kinds. The numbers are part of the wire format.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum EventKind {
            $( $(#[$doc])* $kind = $num, )*
        }

        impl EventKind {
            /// Every kind, in table order.
            pub const ALL: [EventKind; [$($num),*].len()] = [$(EventKind::$kind),*];

            pub const fn from_u32(v: u32) -> Option<EventKind> {
                match v {
                    $( $num => Some(EventKind::$kind), )*
                    _ => None,
                }
            }

            /// This kind's row of the table.
            pub const fn info(self) -> &'static KindInfo {
                match self {
                    $( EventKind::$kind => {
                        const INFO: KindInfo = KindInfo {
                            kind: EventKind::$kind,
                            name: $name,
                            class: EventClass::$class,
                            source: $source,
                            optional: $optional,
                        };
                        &INFO
                    } )*
                }
            }
        }
    };
}

event_kinds! {
    Brk = 1 {
        name: "brk",
        class: Brk,
        source: syscall!("brk", 12, 1),
        optional: false,
    }
    Mmap = 2 {
        name: "mmap",
        class: Mmap,
        source: syscall!("mmap", 9, 6),
        optional: false,
    }
    Munmap = 3 {
        name: "munmap",
        class: Munmap,
        source: syscall!("munmap", 11, 2),
        optional: false,
    }
    Mremap = 4 {
        name: "mremap",
        class: Mremap,
        source: syscall!("mremap", 25, 5),
        optional: false,
    }
    Mprotect = 5 {
        name: "mprotect",
        class: Mprotect,
        source: syscall!("mprotect", 10, 3),
        optional: false,
    }
    /// A user page fault, streamed (`--faults all`) or counted per process.
    Fault = 6 {
        name: "fault",
        class: Fault,
        source: Source::Tracepoints(&[TP_PAGE_FAULT_USER]),
        optional: false,
    }
    /// Stack growth: reported by fexit on `expand_downwards`, or seen from
    /// a fault below the stack confirmed by the mm's stack size once the
    /// fault is handled (its page charged: `rss_stat`).
    Stack = 7 {
        name: "stack",
        class: Stack,
        source: Source::Fexit(Fexit {
            function: "expand_downwards",
            entry_prog: "expand_downwards_entry",
            exit_prog: "expand_downwards_exit",
            fallback: &[TP_PAGE_FAULT_USER, TP_RSS_STAT],
        }),
        optional: false,
    }
    Exec = 8 {
        name: "exec",
        class: Process,
        source: Source::Tracepoints(&[TP_SCHED_PROCESS_EXEC]),
        optional: false,
    }
    /// A new process (not a thread).
    Fork = 9 {
        name: "fork",
        class: Process,
        source: Source::Tracepoints(&[TP_TASK_NEWTASK]),
        optional: false,
    }
    /// The last thread of a process exited.
    Exit = 10 {
        name: "exit",
        class: Process,
        source: Source::Tracepoints(&[TP_SCHED_PROCESS_EXIT]),
        optional: false,
    }
    Madvise = 11 {
        name: "madvise",
        class: Madvise,
        source: syscall!("madvise", 28, 3),
        optional: false,
    }
    /// mprotect with a protection key; the kernel has it only with
    /// CONFIG_ARCH_HAS_PKEYS.
    PkeyMprotect = 12 {
        name: "pkey_mprotect",
        class: Mprotect,
        source: syscall!("pkey_mprotect", 329, 4),
        optional: true,
    }
    /// Locks pages in memory: the range's mappings become VM_LOCKED (split
    /// at its edges).
    Mlock = 13 {
        name: "mlock",
        class: Mlock,
        source: syscall!("mlock", 149, 2),
        optional: false,
    }
    /// mlock with flags (MLOCK_ONFAULT: locked as they fault in).
    Mlock2 = 14 {
        name: "mlock2",
        class: Mlock,
        source: syscall!("mlock2", 325, 3),
        optional: false,
    }
    Munlock = 15 {
        name: "munlock",
        class: Mlock,
        source: syscall!("munlock", 150, 2),
        optional: false,
    }
    /// Locks every mapping (MCL_CURRENT) and those to come (MCL_FUTURE).
    Mlockall = 16 {
        name: "mlockall",
        class: Mlock,
        source: syscall!("mlockall", 151, 1),
        optional: false,
    }
    Munlockall = 17 {
        name: "munlockall",
        class: Mlock,
        source: syscall!("munlockall", 152, 0),
        optional: false,
    }
    /// Seals mappings against change (6.10 on; 64-bit kernels).
    Mseal = 18 {
        name: "mseal",
        class: Mseal,
        source: syscall!("mseal", 462, 3),
        optional: true,
    }
    /// Attaches a SysV shared memory segment (CONFIG_SYSVIPC).
    Shmat = 19 {
        name: "shmat",
        class: Shm,
        source: syscall!("shmat", 30, 3),
        optional: true,
    }
    /// Detaches the SysV segment attached at an address.
    Shmdt = 20 {
        name: "shmdt",
        class: Shm,
        source: syscall!("shmdt", 67, 1),
        optional: true,
    }
    /// Deprecated: maps other pages of a shared file mapping's file at a
    /// part of it. Since 4.0 the kernel does it as an mmap (MAP_SHARED |
    /// MAP_FIXED) of that file over the part.
    RemapFilePages = 21 {
        name: "remap_file_pages",
        class: Mmap,
        source: syscall!("remap_file_pages", 216, 5),
        optional: false,
    }
    /// UFFDIO_REGISTER and UFFDIO_UNREGISTER, the ioctls on a userfaultfd
    /// that split a range's mappings at its edges (and merge them again):
    /// only those two commands are kept at enter, every other ioctl is let
    /// go at once.
    Userfaultfd = 22 {
        name: "userfaultfd",
        class: Userfaultfd,
        source: syscall!(paired "ioctl", 16, 3),
        optional: false,
    }
    /// The OOM killer chose a victim (it is killed with SIGKILL: its exit
    /// follows). The header is the killer's task; the victim is in the body.
    OomKill = 23 {
        name: "oom_kill",
        class: Process,
        source: Source::Tracepoints(&[TP_MARK_VICTIM]),
        optional: false,
    }
}

impl EventKind {
    /// The bit of this kind in [`crate::Config::kind_mask`].
    pub const fn bit(self) -> u32 {
        1 << (self as u32)
    }

    pub const fn name(self) -> &'static str {
        self.info().name
    }

    /// Arguments a syscall kind saves at enter (0 for other kinds).
    pub const fn nargs(self) -> usize {
        match self.info().syscall() {
            Some(s) => s.nargs,
            None => 0,
        }
    }
}

/// The x86_64 numbers of the memory syscalls mmtrace traces (the syscall
/// kinds of the table, in table order), e.g. to tell whether a thread is
/// inside one.
pub const fn memory_syscalls() -> &'static [i64] {
    &MEMORY_SYSCALLS
}

const MEMORY_SYSCALLS: [i64; syscall_kinds()] = {
    let mut nrs = [0; syscall_kinds()];
    let (mut i, mut n) = (0, 0);
    while i < EventKind::ALL.len() {
        if let Some(s) = EventKind::ALL[i].info().syscall() {
            if s.nr != IOCTL {
                nrs[n] = s.nr;
                n += 1;
            }
        }
        i += 1;
    }
    nrs
};

/// ioctl, of which only two commands are memory calls: a thread blocked in
/// an ioctl (a terminal's read, a device's wait) is not in a memory call.
const IOCTL: i64 = 16;

const fn syscall_kinds() -> usize {
    let (mut i, mut n) = (0, 0);
    while i < EventKind::ALL.len() {
        if let Some(s) = EventKind::ALL[i].info().syscall() {
            if s.nr != IOCTL {
                n += 1;
            }
        }
        i += 1;
    }
    n
}

// Every kind has a slot in the per-kind counters (LOST, ...) and a bit in
// `Config::kind_mask`, and its row describes itself.
const _: () = {
    assert!(KIND_SLOTS <= 32, "kind_mask is a u32");
    let mut i = 0;
    while i < EventKind::ALL.len() {
        let k = EventKind::ALL[i];
        assert!(
            (k as usize) < KIND_SLOTS,
            "a kind number does not fit KIND_SLOTS"
        );
        assert!(k.info().kind as u32 == k as u32, "a row names another kind");
        assert!(
            k as u32 != ERRORS_NO_KIND,
            "ERRORS_NO_KIND is not a kind number"
        );
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::from_u32(k as u32), Some(k));
        }
        assert_eq!(EventKind::from_u32(0), None);
        assert_eq!(EventKind::from_u32(KIND_SLOTS as u32), None);
    }

    #[test]
    fn names_are_unique() {
        for (i, a) in EventKind::ALL.iter().enumerate() {
            for b in &EventKind::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
    }

    #[test]
    fn memory_syscalls_are_the_syscall_kinds() {
        // brk, mmap, munmap, mremap, mprotect, madvise, pkey_mprotect,
        // mlock, mlock2, munlock, mlockall, munlockall, mseal, shmat, shmdt,
        // remap_file_pages
        assert_eq!(
            memory_syscalls(),
            [12, 9, 11, 25, 10, 28, 329, 149, 325, 150, 151, 152, 462, 30, 67, 216]
        );
    }

    #[test]
    fn every_class_has_kinds() {
        for c in EventClass::ALL {
            assert!(c.kinds().next().is_some(), "{c:?}");
        }
        let mut process = EventClass::Process.kinds();
        assert_eq!(process.next(), Some(EventKind::Exec));
        assert_eq!(process.next(), Some(EventKind::Fork));
        assert_eq!(process.next(), Some(EventKind::Exit));
        assert_eq!(process.next(), Some(EventKind::OomKill));
        assert_eq!(process.next(), None);
    }
}
