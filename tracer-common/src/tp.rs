//! Tracepoint records as the programs read them.
//!
//! Tracepoint formats are not ABI. Each record is declared once here, with
//! its tracefs format as a comment; the programs read it whole (one read),
//! and the loader compares each field's offset and size with
//! `/sys/kernel/tracing/events/<category>/<name>/format` before loading
//! anything, failing with the tracepoint and the field when they differ.
//! A field that only some kernels have (`group_dead` of
//! sched_process_exit) is not declared: its offset is looked up in tracefs
//! at load time instead.

/// A field of a record, named as in the tracefs format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub offset: usize,
    pub size: usize,
}

/// How a tracepoint's record is read, for the check against its format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// These fields, by name.
    Fields(&'static [Field]),
    /// A `sys_enter_*` record: `__syscall_nr`, then `nargs` arguments of 8
    /// bytes from [`SysEnter::args`]. The arguments are checked by position:
    /// their names are the kernel's parameter names, which vary.
    SysEnter { nargs: usize },
}

/// The fields every record starts with.
/// ```text
/// field:unsigned short common_type; offset:0; size:2; signed:0;
/// field:unsigned char common_flags; offset:2; size:1; signed:0;
/// field:unsigned char common_preempt_count; offset:3; size:1; signed:0;
/// field:int common_pid; offset:4; size:4; signed:1;
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TraceCommon {
    pub common_type: u16,
    pub common_flags: u8,
    pub common_preempt_count: u8,
    pub common_pid: i32,
}

/// Declares a record struct (after [`TraceCommon`]) and its `FIELDS`, from
/// one list: `field: type` or `field as "format name": type`.
macro_rules! record {
    (
        $(#[$doc:meta])*
        pub struct $name:ident {
            $( $field:ident $(as $fname:literal)? : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug)]
        pub struct $name {
            pub common: TraceCommon,
            $( pub $field: $ty, )*
        }

        impl $name {
            /// The fields the programs read, for the check against tracefs.
            pub const FIELDS: &'static [Field] = &[$(
                Field {
                    name: record!(@name $field $($fname)?),
                    offset: core::mem::offset_of!($name, $field),
                    size: core::mem::size_of::<$ty>(),
                }
            ),*];
        }
    };
    (@name $field:ident) => { stringify!($field) };
    (@name $field:ident $fname:literal) => { $fname };
}

/// `syscalls:sys_enter_*`; the arguments that follow `__syscall_nr` are
/// all 8 bytes wide, e.g. for mmap:
/// ```text
/// field:int __syscall_nr; offset:8; size:4; signed:1;
/// field:unsigned long addr; offset:16; size:8; signed:0;
/// field:unsigned long len; offset:24; size:8; signed:0;
/// ...
/// field:unsigned long off; offset:56; size:8; signed:0;
/// ```
/// A record holds only its syscall's arguments: read them one by one, never
/// the whole struct.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SysEnter {
    pub common: TraceCommon,
    pub syscall_nr: i32,
    pub args: [u64; 6],
}

record! {
    /// `syscalls:sys_exit_*`:
    /// ```text
    /// field:int __syscall_nr; offset:8; size:4; signed:1;
    /// field:long ret; offset:16; size:8; signed:1;
    /// ```
    pub struct SysExit {
        syscall_nr as "__syscall_nr": i32,
        ret: i64,
    }
}

record! {
    /// `exceptions:page_fault_user`:
    /// ```text
    /// field:unsigned long address; offset:8; size:8; signed:0;
    /// field:unsigned long ip; offset:16; size:8; signed:0;
    /// field:unsigned long error_code; offset:24; size:8; signed:0;
    /// ```
    pub struct PageFaultUser {
        address: u64,
        ip: u64,
        error_code: u64,
    }
}

record! {
    /// `sched:sched_process_exec`; `filename` is a `__data_loc`: the
    /// string's offset from the record's start in the low 16 bits, its
    /// length in the high 16.
    /// ```text
    /// field:__data_loc char[] filename; offset:8; size:4; signed:0;
    /// field:pid_t pid; offset:12; size:4; signed:1;
    /// field:pid_t old_pid; offset:16; size:4; signed:1;
    /// ```
    pub struct SchedProcessExec {
        filename: u32,
        pid: i32,
        old_pid: i32,
    }
}

record! {
    /// `task:task_newtask`, in the parent (`clone_flags` is an
    /// `unsigned long` before 6.x, the same 8 bytes):
    /// ```text
    /// field:pid_t pid; offset:8; size:4; signed:1;
    /// field:char comm[16]; offset:12; size:16; signed:0;
    /// field:u64 clone_flags; offset:32; size:8; signed:0;
    /// field:short oom_score_adj; offset:40; size:2; signed:1;
    /// ```
    pub struct TaskNewtask {
        pid: i32,
        comm: [u8; 16],
        clone_flags: u64,
    }
}

record! {
    /// `kmem:rss_stat`:
    /// ```text
    /// field:unsigned int mm_id; offset:8; size:4; signed:0;
    /// field:unsigned int curr; offset:12; size:4; signed:0;
    /// field:int member; offset:16; size:4; signed:1;
    /// field:long size; offset:24; size:8; signed:1;
    /// ```
    pub struct RssStat {
        mm_id: u32,
        curr: u32,
        member: i32,
        size: i64,
    }
}

record! {
    /// `oom:mark_victim`, in the OOM killer's context (not the victim's).
    /// Only `pid` is on every kernel (5.10 has nothing else; later ones add
    /// `comm`, the victim's page counts, `uid`, ...):
    /// ```text
    /// field:int pid; offset:8; size:4; signed:1;
    /// ```
    pub struct MarkVictim {
        pid: i32,
    }
}

/// `sched:sched_process_exit`: nothing is read at a fixed offset. Its
/// `group_dead` (`field:bool group_dead; offset:32; size:1;` where it
/// exists) is only on some kernels, so its offset comes from tracefs at
/// load time (`Config::exit_group_dead_offset`).
/// ```text
/// field:char comm[16]; offset:8; size:16; signed:0;
/// field:pid_t pid; offset:24; size:4; signed:1;
/// field:int prio; offset:28; size:4; signed:1;
/// ```
pub const SCHED_PROCESS_EXIT_FIELDS: &[Field] = &[];

#[cfg(test)]
mod tests {
    use super::*;

    fn at(fields: &[Field]) -> impl Iterator<Item = (&'static str, usize, usize)> + '_ {
        fields.iter().map(|f| (f.name, f.offset, f.size))
    }

    /// The structs reproduce the formats in their comments.
    #[test]
    fn records_match_their_documented_formats() {
        assert!(at(PageFaultUser::FIELDS).eq([
            ("address", 8, 8),
            ("ip", 16, 8),
            ("error_code", 24, 8)
        ]));
        assert!(at(SysExit::FIELDS).eq([("__syscall_nr", 8, 4), ("ret", 16, 8)]));
        assert!(at(SchedProcessExec::FIELDS).eq([
            ("filename", 8, 4),
            ("pid", 12, 4),
            ("old_pid", 16, 4)
        ]));
        assert!(at(TaskNewtask::FIELDS).eq([
            ("pid", 8, 4),
            ("comm", 12, 16),
            ("clone_flags", 32, 8)
        ]));
        assert!(at(RssStat::FIELDS).eq([
            ("mm_id", 8, 4),
            ("curr", 12, 4),
            ("member", 16, 4),
            ("size", 24, 8)
        ]));
        assert!(at(MarkVictim::FIELDS).eq([("pid", 8, 4)]));
        assert_eq!(core::mem::offset_of!(SysEnter, syscall_nr), 8);
        assert_eq!(core::mem::offset_of!(SysEnter, args), 16);
    }
}
