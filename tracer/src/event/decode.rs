//! Decode stage: ring buffer records into [`Event`]s.

use std::mem::size_of;

use tracer_common::{
    EventHeader, EventKind, ExecEvent, ExitEvent, FaultEvent, FileInfo, ForkEvent, MmCounters,
    MmapFileEvent, OomKillEvent, StackEvent, SyscallEvent, VmaProbes, Wire, BRK_OLD_UNREAD,
    FILE_ANON_INODE, FILE_PATH_TRUNCATED, FILE_PSEUDO, FILE_UNRESOLVED, MM_FIELDS,
    STACK_SOURCE_FEXIT,
};

use crate::event::{Access, Body, Counters, Event, MappedFile, StackSource, SysResult};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {0} bytes is too short for a header")]
    Short(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("{kind:?} record of {len} bytes (expected {expected})")]
    BadLength {
        kind: EventKind,
        len: usize,
        expected: usize,
    },
}

/// Reads a `T` from the start of `bytes` (checked length, any alignment).
fn read_wire<T: Wire>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; a Wire type is repr(C) plain data for which
    // any bytes are a value.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Reads a `T` at `offset` in `bytes` (checked length).
fn read_at<T: Wire>(bytes: &[u8], offset: usize) -> Option<T> {
    read_wire(bytes.get(offset..)?)
}

/// What a syscall record says of its call.
struct Sys {
    args: [u64; 6],
    ret: i64,
}

/// A syscall record (`SyscallEvent`, which `MmapFileEvent` starts with),
/// read in parts: the counters and probes, most of its bytes, only when
/// the kernel filled them (with a model), into `mm`. The record is fresh
/// from another CPU's cache: each line not read is a miss not paid.
fn syscall(bytes: &[u8], kind: EventKind, mm: &mut Option<Counters>) -> Result<Sys, DecodeError> {
    use std::mem::offset_of;
    let bad = || DecodeError::BadLength {
        kind,
        len: bytes.len(),
        expected: size_of::<SyscallEvent>(),
    };
    if bytes.len() < size_of::<SyscallEvent>() {
        return Err(bad());
    }
    let counters = offset_of!(SyscallEvent, mm);
    let flags: u32 = read_at(bytes, counters + offset_of!(MmCounters, flags)).ok_or_else(bad)?;
    if flags & MM_FIELDS != 0 {
        let c: MmCounters = read_at(bytes, counters).ok_or_else(bad)?;
        let v: VmaProbes = read_at(bytes, offset_of!(SyscallEvent, vmas)).ok_or_else(bad)?;
        *mm = Counters::from_wire(&c).map(|c| c.with_vmas(&v));
    }
    Ok(Sys {
        args: read_at(bytes, offset_of!(SyscallEvent, args)).ok_or_else(bad)?,
        ret: read_at(bytes, offset_of!(SyscallEvent, ret)).ok_or_else(bad)?,
    })
}

/// Reads the body record `T` of a `kind` record.
fn read<T: Wire>(bytes: &[u8], kind: EventKind) -> Result<T, DecodeError> {
    read_wire(bytes).ok_or(DecodeError::BadLength {
        kind,
        len: bytes.len(),
        expected: size_of::<T>(),
    })
}

/// Bytes up to the first NUL.
fn c_bytes(bytes: &[u8]) -> Vec<u8> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes[..end].to_vec()
}

/// An exec record's process (tgid), stamp, and the address of the new
/// `mm_struct` (the key of its address space in the kernel's `MM_SEQ`;
/// None when the kernel did not read it); None for other records.
pub fn exec_record(bytes: &[u8]) -> Option<(u32, u64, Option<u64>)> {
    let h: EventHeader = read_wire(bytes)?;
    if EventKind::from_u32(h.kind) != Some(EventKind::Exec) {
        return None;
    }
    let e: ExecEvent = read_wire(bytes)?;
    Some((h.tgid, h.ts_ns, (e.mm_addr != 0).then_some(e.mm_addr)))
}

pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let h: EventHeader = read_wire(bytes).ok_or(DecodeError::Short(bytes.len()))?;
    let kind = EventKind::from_u32(h.kind).ok_or(DecodeError::UnknownKind(h.kind))?;
    // The counters of the records that carry them.
    let mut mm = None;
    let mut sys = || syscall(bytes, kind, &mut mm);
    let body = match kind {
        EventKind::Brk => {
            let e = sys()?;
            let (requested, new_brk) = (e.args[0], e.ret as u64);
            // Traced at its exit alone, the old break is where the kernel
            // last saw its address space's (the previous brk, exec or
            // fork). Not seen (a process met mid-life): a query or a failed
            // call returns the break it left unmoved; a move is unknown.
            let old_brk = if e.args[3] != BRK_OLD_UNREAD {
                Some(e.args[1])
            } else if e.ret >= 0 && (requested == 0 || requested != new_brk) {
                Some(new_brk)
            } else {
                None
            };
            Body::Brk {
                requested,
                old_brk,
                new_brk,
                start_brk: e.args[2],
            }
        }
        EventKind::Mmap => {
            let file = if bytes.len() >= size_of::<MmapFileEvent>() {
                let at = std::mem::offset_of!(MmapFileEvent, file);
                read_at::<FileInfo>(bytes, at).and_then(|f| mapped_file(&f))
            } else {
                None
            };
            let e = sys()?;
            let a = e.args;
            Body::Mmap {
                addr: a[0],
                len: a[1],
                prot: a[2],
                flags: a[3],
                fd: i64::from(a[4] as i32),
                offset: a[5],
                ret: SysResult::from_raw(e.ret),
                file,
            }
        }
        EventKind::Munmap => {
            let e = sys()?;
            Body::Munmap {
                addr: e.args[0],
                len: e.args[1],
                ret: SysResult::from_raw(e.ret),
            }
        }
        EventKind::Mremap => {
            let e = sys()?;
            let a = e.args;
            Body::Mremap {
                old_addr: a[0],
                old_len: a[1],
                new_len: a[2],
                flags: a[3],
                new_addr: a[4],
                ret: SysResult::from_raw(e.ret),
            }
        }
        EventKind::Mprotect => {
            let e = sys()?;
            Body::Mprotect {
                addr: e.args[0],
                len: e.args[1],
                prot: e.args[2],
                ret: SysResult::from_raw(e.ret),
            }
        }
        EventKind::Madvise => {
            let e = sys()?;
            Body::Madvise {
                addr: e.args[0],
                len: e.args[1],
                advice: e.args[2],
                ret: SysResult::from_raw(e.ret),
            }
        }
        EventKind::PkeyMprotect => {
            let e = sys()?;
            Body::PkeyMprotect {
                addr: e.args[0],
                len: e.args[1],
                prot: e.args[2],
                // An int argument: its register's low 32 bits.
                pkey: e.args[3] as i32,
                ret: SysResult::from_raw(e.ret),
            }
        }
        EventKind::Mlock => {
            let e = sys()?;
            Body::Mlock {
                addr: e.args[0],
                len: e.args[1],
                ret: SysResult::from_raw(e.ret),
            }
        }
        EventKind::Mlock2 => {
            let e = sys()?;
            Body::Mlock2 {
                addr: e.args[0],
                len: e.args[1],
                // An int argument: its register's low 32 bits.
                flags: u64::from(e.args[2] as u32),
                ret: SysResult::from_raw(e.ret),
            }
        }
        EventKind::Munlock => {
            let e = sys()?;
            Body::Munlock {
                addr: e.args[0],
                len: e.args[1],
                ret: SysResult::from_raw(e.ret),
            }
        }
        EventKind::Mlockall => {
            let e = sys()?;
            Body::Mlockall {
                flags: u64::from(e.args[0] as u32),
                ret: SysResult::from_raw(e.ret),
            }
        }
        EventKind::Munlockall => Body::Munlockall {
            ret: SysResult::from_raw(sys()?.ret),
        },
        EventKind::Mseal => {
            let e = sys()?;
            Body::Mseal {
                addr: e.args[0],
                len: e.args[1],
                flags: e.args[2],
                ret: SysResult::from_raw(e.ret),
            }
        }
        EventKind::Shmat => {
            let e = sys()?;
            Body::Shmat {
                shmid: e.args[0] as i32,
                addr: e.args[1],
                flags: u64::from(e.args[2] as u32),
                ret: SysResult::from_raw(e.ret),
            }
        }
        EventKind::Shmdt => {
            let e = sys()?;
            Body::Shmdt {
                addr: e.args[0],
                ret: SysResult::from_raw(e.ret),
            }
        }
        EventKind::RemapFilePages => {
            let e = sys()?;
            let a = e.args;
            Body::RemapFilePages {
                addr: a[0],
                size: a[1],
                prot: a[2],
                pgoff: a[3],
                flags: a[4],
                ret: SysResult::from_raw(e.ret),
            }
        }
        EventKind::Userfaultfd => {
            let e = sys()?;
            let a = e.args;
            Body::Userfaultfd {
                register: a[3] == u64::from(tracer_common::UFFDIO_REGISTER),
                fd: a[4] as i32,
                range: (a[5] != 0).then_some((a[0], a[1])),
                mode: a[2],
                ret: SysResult::from_raw(e.ret),
            }
        }
        EventKind::Fault => {
            let e: FaultEvent = read(bytes, kind)?;
            Body::Fault {
                addr: e.addr,
                ip: e.ip,
                access: Access::from_error_code(e.error_code),
                present: e.error_code & 1 != 0,
            }
        }
        EventKind::Stack => {
            let e: StackEvent = read(bytes, kind)?;
            mm = Counters::from_wire(&e.mm);
            Body::Stack {
                old_start: e.old_start,
                new_start: e.new_start,
                source: if e.source == STACK_SOURCE_FEXIT {
                    StackSource::Fexit
                } else {
                    StackSource::Fault
                },
            }
        }
        EventKind::Exec => {
            let e: ExecEvent = read(bytes, kind)?;
            mm = Counters::from_wire(&e.mm);
            let n = (e.path_len as usize).min(e.path.len());
            Body::Exec {
                path: c_bytes(&e.path[..n]),
                old_pid: e.old_pid,
                start_time: e.start_time,
                abi: None,
                cgroup: None,
            }
        }
        EventKind::Fork => {
            let e: ForkEvent = read(bytes, kind)?;
            Body::Fork {
                child_pid: e.child_pid,
                clone_flags: e.clone_flags,
            }
        }
        EventKind::Exit => {
            let e: ExitEvent = read(bytes, kind)?;
            mm = Counters::from_wire(&e.mm);
            Body::Exit {
                status: e.exit_code,
                start_time: e.start_time,
            }
        }
        EventKind::OomKill => {
            let e: OomKillEvent = read(bytes, kind)?;
            Body::OomKill {
                victim_pid: e.victim_pid,
            }
        }
    };
    Ok(Event {
        ts_ns: h.ts_ns,
        cpu: h.cpu,
        pid: h.tgid,
        tid: h.tid,
        comm: c_bytes(&h.comm),
        body,
        counters: mm,
    })
}

/// The file of an mmap record; its path's components are stored leaf first.
fn mapped_file(f: &FileInfo) -> Option<MappedFile> {
    if f.flags & FILE_UNRESOLVED != 0 {
        return None;
    }
    let used = (f.path_len as usize).min(f.path.len());
    let mut path = Vec::with_capacity(used + 1);
    for part in f.path[..used]
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        path.push(b'/');
        path.extend_from_slice(part);
    }
    if f.flags & FILE_ANON_INODE != 0 && f.flags & FILE_PSEUDO != 0 {
        // As the kernel names them: `anon_inode:[perf_event]`, no `/`.
        path.splice(..1, b"anon_inode:".iter().copied());
    }
    if path.is_empty() {
        path.push(b'/');
    }
    Some(MappedFile {
        path,
        dev_major: f.dev >> 20,
        dev_minor: f.dev & 0xf_ffff,
        ino: f.ino,
        truncated: f.flags & FILE_PATH_TRUNCATED != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Probe;
    use tracer_common::{
        MmCounters, VmaExtent, VmaProbes, COMM_LEN, MM_MAP_COUNT, MM_SETTLED, MM_STACK_VM,
        MM_TOTAL_VM, PATH_BUF_LEN, VMA_GAP, VMA_MAPPED, VMA_UNREAD,
    };

    fn header(kind: EventKind) -> EventHeader {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"work");
        EventHeader {
            ts_ns: 42,
            kind: kind as u32,
            cpu: 1,
            tgid: 100,
            tid: 101,
            comm,
        }
    }

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a repr(C) value.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn mmap_file_path_is_rebuilt_root_first() {
        let mut path = [0u8; PATH_BUF_LEN];
        let parts = b"libc.so.6\0x86_64-linux-gnu\0lib\0usr\0";
        path[..parts.len()].copy_from_slice(parts);
        let e = MmapFileEvent {
            sys: SyscallEvent {
                header: header(EventKind::Mmap),
                enter_ns: 40,
                args: [0, 8192, 1, 2, 3, 0],
                ret: 0x7f00_0000_0000,
                mm: MmCounters::ZERO,
                vmas: VmaProbes::default(),
            },
            file: FileInfo {
                dev: (8 << 20) | 1,
                path_len: parts.len() as u32,
                ino: 77,
                flags: 0,
                _pad: 0,
                path,
            },
        };
        let ev = decode(&bytes_of(&e)).unwrap();
        assert_eq!(ev.pid, 100);
        assert_eq!(ev.tid, 101);
        assert_eq!(ev.comm, b"work");
        let Body::Mmap {
            file: Some(f),
            ret,
            fd,
            ..
        } = ev.body
        else {
            panic!("not a file mmap: {:?}", ev.body)
        };
        assert_eq!(f.path, b"/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!((f.dev_major, f.dev_minor, f.ino), (8, 1, 77));
        assert_eq!(ret, SysResult::Ok(0x7f00_0000_0000));
        assert_eq!(fd, 3);
    }

    #[test]
    fn failed_call_and_anonymous_fd() {
        let e = SyscallEvent {
            header: header(EventKind::Mmap),
            enter_ns: 0,
            args: [0, 4096, 3, 0x22, u64::MAX, 0],
            ret: -12,
            mm: MmCounters::ZERO,
            vmas: VmaProbes::default(),
        };
        let ev = decode(&bytes_of(&e)).unwrap();
        let Body::Mmap { fd, ret, file, .. } = ev.body else {
            panic!()
        };
        assert_eq!(fd, -1);
        assert_eq!(ret, SysResult::Err(12));
        assert!(file.is_none());
    }

    #[test]
    fn brk_carries_before_and_after() {
        let e = SyscallEvent {
            header: header(EventKind::Brk),
            enter_ns: 0,
            args: [0x5000_0000, 0x4000_0000, 0x3f00_0000, 0, 0, 0],
            ret: 0x5000_0000,
            mm: MmCounters::ZERO,
            vmas: VmaProbes::default(),
        };
        let Body::Brk {
            requested,
            old_brk,
            new_brk,
            start_brk,
        } = decode(&bytes_of(&e)).unwrap().body
        else {
            panic!()
        };
        assert_eq!(
            (requested, old_brk, new_brk, start_brk),
            (0x5000_0000, Some(0x4000_0000), 0x5000_0000, 0x3f00_0000)
        );
    }

    /// Traced at its exit alone with no earlier break of its address
    /// space seen: a query or a failed call gives it, a move does not.
    #[test]
    fn brk_at_its_exit_alone_without_an_old_break() {
        let old = |requested: u64, ret: i64| {
            let e = SyscallEvent {
                header: header(EventKind::Brk),
                enter_ns: 0,
                args: [requested, 0, 0x3f00_0000, BRK_OLD_UNREAD, 0, 0],
                ret,
                mm: MmCounters::ZERO,
                vmas: VmaProbes::default(),
            };
            match decode(&bytes_of(&e)).unwrap().body {
                Body::Brk { old_brk, .. } => old_brk,
                _ => unreachable!(),
            }
        };
        assert_eq!(old(0, 0x4000_0000), Some(0x4000_0000));
        assert_eq!(old(0x9000_0000, 0x4000_0000), Some(0x4000_0000));
        assert_eq!(old(0x5000_0000, 0x5000_0000), None);
        // Interrupted (-EINTR): nothing known.
        assert_eq!(old(0x5000_0000, -4), None);
    }

    #[test]
    fn counters_say_which_fields_were_read() {
        let mut e = SyscallEvent {
            header: header(EventKind::Munmap),
            enter_ns: 0,
            args: [0x1000, 0x1000, 0, 0, 0, 0],
            ret: 0,
            mm: MmCounters {
                flags: MM_MAP_COUNT | MM_TOTAL_VM | MM_STACK_VM | MM_SETTLED,
                map_count: 21,
                total_vm: 300,
                // Not read: not shown.
                locked_vm: 9,
                data_vm: 0,
                exec_vm: 0,
                stack_vm: 33,
                mm: 0xffff_8880_0000_1000,
            },
            vmas: VmaProbes {
                state: [VMA_MAPPED, VMA_GAP, VMA_UNREAD],
                addr: [0xfff, 0x2000, 0],
                ext: [
                    VmaExtent {
                        start: 0,
                        end: 0x1000,
                        flags: 0x73,
                        pgoff: 7,
                    },
                    VmaExtent::default(),
                    VmaExtent::default(),
                ],
                ..VmaProbes::default()
            },
        };
        let c = decode(&bytes_of(&e)).unwrap().counters.unwrap();
        assert!(c.settled);
        assert_eq!(
            (c.map_count, c.total_vm, c.locked_vm, c.stack_vm),
            (Some(21), Some(300), None, Some(33))
        );
        assert_eq!(
            c.vmas,
            [
                Probe::Mapped {
                    at: 0xfff,
                    start: 0,
                    end: 0x1000,
                    flags: 0x73,
                    pgoff: 7
                },
                Probe::Gap { at: 0x2000 },
                Probe::Unread
            ]
        );
        // Nothing read: no counters.
        e.mm = MmCounters::ZERO;
        assert_eq!(decode(&bytes_of(&e)).unwrap().counters, None);
        e.mm.flags = MM_SETTLED;
        assert_eq!(decode(&bytes_of(&e)).unwrap().counters, None);
    }

    #[test]
    fn fault_access_from_error_code() {
        for (code, access, present) in [
            (0x4, Access::Read, false),
            (0x6, Access::Write, false),
            (0x7, Access::Write, true),
            (0x14, Access::Exec, false),
            (0x15, Access::Exec, true),
        ] {
            let e = FaultEvent {
                header: header(EventKind::Fault),
                addr: 0x1000,
                ip: 0x2000,
                error_code: code,
            };
            let Body::Fault {
                access: a,
                present: p,
                ..
            } = decode(&bytes_of(&e)).unwrap().body
            else {
                panic!()
            };
            assert_eq!((a, p), (access, present), "error code {code:#x}");
        }
    }

    #[test]
    fn every_kind_decodes_as_itself() {
        for kind in EventKind::ALL {
            let mut bytes = vec![0u8; size_of::<MmapFileEvent>()];
            let h = bytes_of(&header(kind));
            bytes[..h.len()].copy_from_slice(&h);
            let ev = decode(&bytes).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
            assert_eq!(ev.body.name(), kind.name());
        }
    }

    #[test]
    fn bad_records_are_errors() {
        assert_eq!(decode(&[0u8; 8]), Err(DecodeError::Short(8)));
        let mut h = bytes_of(&header(EventKind::Fault));
        assert!(matches!(decode(&h), Err(DecodeError::BadLength { .. })));
        h[std::mem::offset_of!(EventHeader, kind)] = 99;
        assert_eq!(decode(&h), Err(DecodeError::UnknownKind(99)));
    }
}
