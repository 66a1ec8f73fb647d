//! The JSONL format: one JSON object per line, a stable interface.
//!
//! Every line has `t_ns`, `pid`, `tid`, `comm`, `event`, then the fields of
//! the event (see the module documentation of `output`). Raw bytes from the
//! traced process (comm, paths) become strings by lossy UTF-8 conversion;
//! when they were not valid UTF-8, a sibling `<name>_hex` field holds the
//! raw bytes in hex.

use serde::Serialize;

use super::names::{
    advice_str, dev_str, errno_name, hex, lossy, mlock2_flags_str, mlockall_flags_str,
    mmap_flags_str, mremap_flags_str, prot_str, remap_file_pages_flags_str, shmat_flags_str,
    signal_name, uffd_mode_str,
};
use crate::event::{split_status, Body, Event, StackSource, SysResult};

/// Raw bytes as a string, plus their hex when they are not valid UTF-8.

#[derive(Serialize)]
struct Line<B: Serialize> {
    t_ns: u64,
    pid: u32,
    tid: u32,
    comm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    comm_hex: Option<String>,
    event: &'static str,
    #[serde(flatten)]
    body: B,
}

/// `ret` (null on failure) and `errno` (only on failure).
#[derive(Serialize)]
struct Ret<T: Serialize> {
    ret: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errno: Option<String>,
}

/// A result whose value is an address.
fn ret_addr(r: SysResult) -> Ret<String> {
    match r {
        SysResult::Ok(v) => Ret {
            ret: Some(hex(v)),
            errno: None,
        },
        SysResult::Err(e) => Ret {
            ret: None,
            errno: Some(errno_name(e)),
        },
    }
}

/// A result whose value is a number (0).
fn ret_int(r: SysResult) -> Ret<u64> {
    match r {
        SysResult::Ok(v) => Ret {
            ret: Some(v),
            errno: None,
        },
        SysResult::Err(e) => Ret {
            ret: None,
            errno: Some(errno_name(e)),
        },
    }
}

#[derive(Serialize)]
struct Brk {
    requested: String,
    old_brk: String,
    new_brk: String,
}

#[derive(Serialize)]
struct Mmap {
    addr: String,
    len: u64,
    prot: String,
    flags: String,
    fd: i64,
    offset: u64,
    #[serde(flatten)]
    ret: Ret<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_hex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dev: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ino: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    path_truncated: bool,
}

#[derive(Serialize)]
struct Munmap {
    addr: String,
    len: u64,
    #[serde(flatten)]
    ret: Ret<u64>,
}

#[derive(Serialize)]
struct Mremap {
    old_addr: String,
    old_len: u64,
    new_len: u64,
    flags: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_addr: Option<String>,
    #[serde(flatten)]
    ret: Ret<String>,
}

#[derive(Serialize)]
struct Mprotect {
    addr: String,
    len: u64,
    prot: String,
    #[serde(flatten)]
    ret: Ret<u64>,
}

#[derive(Serialize)]
struct PkeyMprotect {
    addr: String,
    len: u64,
    prot: String,
    pkey: i32,
    #[serde(flatten)]
    ret: Ret<u64>,
}

#[derive(Serialize)]
struct Madvise {
    addr: String,
    len: u64,
    advice: String,
    #[serde(flatten)]
    ret: Ret<u64>,
}

/// mlock, munlock.
#[derive(Serialize)]
struct Range {
    addr: String,
    len: u64,
    #[serde(flatten)]
    ret: Ret<u64>,
}

#[derive(Serialize)]
struct Mlock2 {
    addr: String,
    len: u64,
    flags: String,
    #[serde(flatten)]
    ret: Ret<u64>,
}

#[derive(Serialize)]
struct Mlockall {
    flags: String,
    #[serde(flatten)]
    ret: Ret<u64>,
}

#[derive(Serialize)]
struct Munlockall {
    #[serde(flatten)]
    ret: Ret<u64>,
}

#[derive(Serialize)]
struct Mseal {
    addr: String,
    len: u64,
    flags: u64,
    #[serde(flatten)]
    ret: Ret<u64>,
}

#[derive(Serialize)]
struct Userfaultfd {
    op: &'static str,
    fd: i32,
    /// Null when the ioctl's argument could not be read.
    addr: Option<String>,
    len: Option<u64>,
    mode: String,
    #[serde(flatten)]
    ret: Ret<u64>,
}

#[derive(Serialize)]
struct Shmat {
    shmid: i32,
    addr: String,
    flags: String,
    #[serde(flatten)]
    ret: Ret<String>,
}

#[derive(Serialize)]
struct Shmdt {
    addr: String,
    #[serde(flatten)]
    ret: Ret<u64>,
}

#[derive(Serialize)]
struct RemapFilePages {
    addr: String,
    size: u64,
    prot: String,
    pgoff: u64,
    flags: String,
    #[serde(flatten)]
    ret: Ret<u64>,
}

#[derive(Serialize)]
struct Fault {
    addr: String,
    ip: String,
    access: &'static str,
    present: bool,
}

#[derive(Serialize)]
struct FaultSummary {
    interval_ns: u64,
    read: u64,
    write: u64,
    exec: u64,
    present: u64,
    total: u64,
}

#[derive(Serialize)]
struct Stack {
    old_start: String,
    new_start: String,
    source: &'static str,
}

#[derive(Serialize)]
struct Exec {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_hex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_pid: Option<u32>,
    /// Only for a program whose system calls are not traced (32-bit).
    #[serde(skip_serializing_if = "Option::is_none")]
    abi: Option<&'static str>,
}

#[derive(Serialize)]
struct Fork {
    child_pid: u32,
}

#[derive(Serialize)]
struct OomKill {
    victim_pid: u32,
}

#[derive(Serialize)]
struct Exit {
    code: Option<i32>,
    signal: Option<String>,
}

#[derive(Serialize)]
struct Lost {
    count: u64,
    kind: Option<&'static str>,
}

/// Appends one JSON line (with its newline) for `ev` to `out`. Times are
/// relative to `start_ns`, saturating at 0.
pub(super) fn format_event(out: &mut Vec<u8>, ev: &Event, start_ns: u64) -> serde_json::Result<()> {
    let (comm, comm_hex) = lossy(&ev.comm);
    let head = Head {
        t_ns: ev.ts_ns.saturating_sub(start_ns),
        pid: ev.pid,
        tid: ev.tid,
        comm,
        comm_hex,
        event: ev.body.name(),
    };
    match &ev.body {
        Body::Brk {
            requested,
            old_brk,
            new_brk,
            ..
        } => head.write(
            out,
            Brk {
                requested: hex(*requested),
                old_brk: hex(*old_brk),
                new_brk: hex(*new_brk),
            },
        ),
        Body::Mmap {
            addr,
            len,
            prot,
            flags,
            fd,
            offset,
            ret,
            file,
        } => {
            let (path, path_hex) = match file {
                Some(f) => {
                    let (p, h) = lossy(&f.path);
                    (Some(p), h)
                }
                None => (None, None),
            };
            head.write(
                out,
                Mmap {
                    addr: hex(*addr),
                    len: *len,
                    prot: prot_str(*prot),
                    flags: mmap_flags_str(*flags),
                    // The kernel takes the fd as an int.
                    fd: i64::from(*fd as i32),
                    offset: *offset,
                    ret: ret_addr(*ret),
                    path,
                    path_hex,
                    dev: file.as_ref().map(|f| dev_str(f.dev_major, f.dev_minor)),
                    ino: file.as_ref().map(|f| f.ino),
                    path_truncated: file.as_ref().is_some_and(|f| f.truncated),
                },
            )
        }
        Body::Munmap { addr, len, ret } => head.write(
            out,
            Munmap {
                addr: hex(*addr),
                len: *len,
                ret: ret_int(*ret),
            },
        ),
        Body::Mremap {
            old_addr,
            old_len,
            new_len,
            flags,
            new_addr,
            ret,
        } => head.write(
            out,
            Mremap {
                old_addr: hex(*old_addr),
                old_len: *old_len,
                new_len: *new_len,
                flags: mremap_flags_str(*flags),
                new_addr: (*flags & libc::MREMAP_FIXED as u64 != 0).then(|| hex(*new_addr)),
                ret: ret_addr(*ret),
            },
        ),
        Body::Mprotect {
            addr,
            len,
            prot,
            ret,
        } => head.write(
            out,
            Mprotect {
                addr: hex(*addr),
                len: *len,
                prot: prot_str(*prot),
                ret: ret_int(*ret),
            },
        ),
        Body::PkeyMprotect {
            addr,
            len,
            prot,
            pkey,
            ret,
        } => head.write(
            out,
            PkeyMprotect {
                addr: hex(*addr),
                len: *len,
                prot: prot_str(*prot),
                pkey: *pkey,
                ret: ret_int(*ret),
            },
        ),
        Body::Madvise {
            addr,
            len,
            advice,
            ret,
        } => head.write(
            out,
            Madvise {
                addr: hex(*addr),
                len: *len,
                advice: advice_str(*advice),
                ret: ret_int(*ret),
            },
        ),
        Body::Mlock { addr, len, ret } | Body::Munlock { addr, len, ret } => head.write(
            out,
            Range {
                addr: hex(*addr),
                len: *len,
                ret: ret_int(*ret),
            },
        ),
        Body::Mlock2 {
            addr,
            len,
            flags,
            ret,
        } => head.write(
            out,
            Mlock2 {
                addr: hex(*addr),
                len: *len,
                flags: mlock2_flags_str(*flags),
                ret: ret_int(*ret),
            },
        ),
        Body::Mlockall { flags, ret } => head.write(
            out,
            Mlockall {
                flags: mlockall_flags_str(*flags),
                ret: ret_int(*ret),
            },
        ),
        Body::Munlockall { ret } => head.write(out, Munlockall { ret: ret_int(*ret) }),
        Body::Mseal {
            addr,
            len,
            flags,
            ret,
        } => head.write(
            out,
            Mseal {
                addr: hex(*addr),
                len: *len,
                flags: *flags,
                ret: ret_int(*ret),
            },
        ),
        Body::Userfaultfd {
            register,
            fd,
            range,
            mode,
            ret,
        } => head.write(
            out,
            Userfaultfd {
                op: if *register { "register" } else { "unregister" },
                fd: *fd,
                addr: range.map(|(a, _)| hex(a)),
                len: range.map(|(_, l)| l),
                mode: uffd_mode_str(*mode),
                ret: ret_int(*ret),
            },
        ),
        Body::Shmat {
            shmid,
            addr,
            flags,
            ret,
        } => head.write(
            out,
            Shmat {
                shmid: *shmid,
                addr: hex(*addr),
                flags: shmat_flags_str(*flags),
                ret: ret_addr(*ret),
            },
        ),
        Body::Shmdt { addr, ret } => head.write(
            out,
            Shmdt {
                addr: hex(*addr),
                ret: ret_int(*ret),
            },
        ),
        Body::RemapFilePages {
            addr,
            size,
            prot,
            pgoff,
            flags,
            ret,
        } => head.write(
            out,
            RemapFilePages {
                addr: hex(*addr),
                size: *size,
                prot: prot_str(*prot),
                pgoff: *pgoff,
                flags: remap_file_pages_flags_str(*flags),
                ret: ret_int(*ret),
            },
        ),
        Body::Fault {
            addr,
            ip,
            access,
            present,
        } => head.write(
            out,
            Fault {
                addr: hex(*addr),
                ip: hex(*ip),
                access: access.name(),
                present: *present,
            },
        ),
        Body::FaultSummary {
            interval_ns,
            read,
            write,
            exec,
            present,
        } => head.write(
            out,
            FaultSummary {
                interval_ns: *interval_ns,
                read: *read,
                write: *write,
                exec: *exec,
                present: *present,
                total: read.saturating_add(*write).saturating_add(*exec),
            },
        ),
        Body::Stack {
            old_start,
            new_start,
            source,
        } => head.write(
            out,
            Stack {
                old_start: hex(*old_start),
                new_start: hex(*new_start),
                source: match source {
                    StackSource::Fault => "fault",
                    StackSource::Fexit => "fexit",
                },
            },
        ),
        Body::Exec {
            path, old_pid, abi, ..
        } => {
            let (path, path_hex) = lossy(path);
            head.write(
                out,
                Exec {
                    path,
                    path_hex,
                    old_pid: (*old_pid != ev.pid).then_some(*old_pid),
                    abi: abi.filter(|a| !a.traced()).map(crate::event::Abi::name),
                },
            )
        }
        Body::Fork { child_pid, .. } => head.write(
            out,
            Fork {
                child_pid: *child_pid,
            },
        ),
        Body::OomKill { victim_pid } => head.write(
            out,
            OomKill {
                victim_pid: *victim_pid,
            },
        ),
        Body::Exit { status, .. } => {
            let (code, signal) = split_status(*status);
            head.write(
                out,
                Exit {
                    code,
                    signal: signal.map(signal_name),
                },
            )
        }
        Body::Lost { count, kind } => head.write(
            out,
            Lost {
                count: *count,
                kind: kind.map(tracer_common::EventKind::name),
            },
        ),
    }
}

/// The fields every line starts with.
struct Head {
    t_ns: u64,
    pid: u32,
    tid: u32,
    comm: String,
    comm_hex: Option<String>,
    event: &'static str,
}

impl Head {
    fn write<B: Serialize>(self, out: &mut Vec<u8>, body: B) -> serde_json::Result<()> {
        let line = Line {
            t_ns: self.t_ns,
            pid: self.pid,
            tid: self.tid,
            comm: self.comm,
            comm_hex: self.comm_hex,
            event: self.event,
            body,
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.push(b'\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Access, MappedFile};
    use serde_json::Value;
    use tracer_common::EventKind;

    fn ev(body: Body) -> Event {
        Event {
            ts_ns: 1_500,
            cpu: 3,
            pid: 1234,
            tid: 1236,
            comm: b"python3".to_vec(),
            body,
            counters: None,
        }
    }

    /// The line for `ev` as text (checked to be one line).
    fn raw(ev: &Event) -> String {
        let mut out = Vec::new();
        format_event(&mut out, ev, 1_000).unwrap();
        let s = String::from_utf8(out).unwrap();
        let body = s.strip_suffix('\n').expect("ends with a newline");
        assert!(!body.contains('\n'));
        assert!(!body.contains('\x1b'));
        s
    }

    /// Checks the line for `body` is exactly the head then `fields` (JSON
    /// object members, in order, from `"event"` on), and parses back.
    fn check(body: Body, fields: &str) {
        let line = raw(&ev(body));
        let want = format!(r#"{{"t_ns":500,"pid":1234,"tid":1236,"comm":"python3",{fields}}}"#);
        assert_eq!(line.trim_end(), want);
        let v: Value = serde_json::from_str(&line).unwrap();
        let w: Value = serde_json::from_str(&want).unwrap();
        assert_eq!(v, w);
    }

    #[test]
    fn brk() {
        check(
            Body::Brk {
                requested: 0,
                old_brk: 0x55d0_0000,
                new_brk: 0x55d0_0000,
                start_brk: 0,
            },
            r#""event":"brk","requested":"0x0","old_brk":"0x55d00000","new_brk":"0x55d00000""#,
        );
    }

    #[test]
    fn mmap() {
        check(
            Body::Mmap {
                addr: 0,
                len: 1 << 20,
                prot: 3,
                flags: 0x22,
                fd: -1,
                offset: 0,
                ret: SysResult::Ok(0x7f3a12340000),
                file: None,
            },
            r#""event":"mmap","addr":"0x0","len":1048576,"prot":"rw-","flags":"MAP_PRIVATE|MAP_ANONYMOUS","fd":-1,"offset":0,"ret":"0x7f3a12340000""#,
        );
        check(
            Body::Mmap {
                addr: 0,
                len: 1 << 40,
                prot: 3,
                flags: 0x22,
                fd: 0xffff_ffff,
                offset: 0,
                ret: SysResult::Err(12),
                file: None,
            },
            r#""event":"mmap","addr":"0x0","len":1099511627776,"prot":"rw-","flags":"MAP_PRIVATE|MAP_ANONYMOUS","fd":-1,"offset":0,"ret":null,"errno":"ENOMEM""#,
        );
        check(
            Body::Mmap {
                addr: 0,
                len: 8192,
                prot: 5,
                flags: 0x802,
                fd: 3,
                offset: 4096,
                ret: SysResult::Ok(0x7f0000000000),
                file: Some(MappedFile {
                    path: b"/usr/lib/libc.so.6".to_vec(),
                    dev_major: 0xfd,
                    dev_minor: 1,
                    ino: 1234567,
                    truncated: false,
                }),
            },
            r#""event":"mmap","addr":"0x0","len":8192,"prot":"r-x","flags":"MAP_PRIVATE|MAP_DENYWRITE","fd":3,"offset":4096,"ret":"0x7f0000000000","path":"/usr/lib/libc.so.6","dev":"fd:01","ino":1234567"#,
        );
        check(
            Body::Mmap {
                addr: 0,
                len: 4096,
                prot: 1,
                flags: 0x1,
                fd: 4,
                offset: 0,
                ret: SysResult::Ok(0x7f0000000000),
                file: Some(MappedFile {
                    path: b"deep/na\xffme".to_vec(),
                    dev_major: 8,
                    dev_minor: 0,
                    ino: 7,
                    truncated: true,
                }),
            },
            // The path holds U+FFFD for the invalid byte 0xff.
            r#""event":"mmap","addr":"0x0","len":4096,"prot":"r--","flags":"MAP_SHARED","fd":4,"offset":0,"ret":"0x7f0000000000","path":"deep/na�me","path_hex":"646565702f6e61ff6d65","dev":"08:00","ino":7,"path_truncated":true"#,
        );
    }

    #[test]
    fn munmap_mprotect() {
        check(
            Body::Munmap {
                addr: 0x1000,
                len: 4096,
                ret: SysResult::Ok(0),
            },
            r#""event":"munmap","addr":"0x1000","len":4096,"ret":0"#,
        );
        check(
            Body::Munmap {
                addr: 0x1001,
                len: 4096,
                ret: SysResult::Err(22),
            },
            r#""event":"munmap","addr":"0x1001","len":4096,"ret":null,"errno":"EINVAL""#,
        );
        check(
            Body::Mprotect {
                addr: 0x1000,
                len: 4096,
                prot: 0x0100_0003,
                ret: SysResult::Ok(0),
            },
            r#""event":"mprotect","addr":"0x1000","len":4096,"prot":"rw-|PROT_GROWSDOWN","ret":0"#,
        );
        check(
            Body::Mprotect {
                addr: 0x1000,
                len: 4096,
                prot: 7,
                ret: SysResult::Err(13),
            },
            r#""event":"mprotect","addr":"0x1000","len":4096,"prot":"rwx","ret":null,"errno":"EACCES""#,
        );
        check(
            Body::PkeyMprotect {
                addr: 0x1000,
                len: 4096,
                prot: 1,
                pkey: 2,
                ret: SysResult::Ok(0),
            },
            r#""event":"pkey_mprotect","addr":"0x1000","len":4096,"prot":"r--","pkey":2,"ret":0"#,
        );
        check(
            Body::Mlock {
                addr: 0x1000,
                len: 4096,
                ret: SysResult::Ok(0),
            },
            r#""event":"mlock","addr":"0x1000","len":4096,"ret":0"#,
        );
        check(
            Body::Mlock2 {
                addr: 0x1000,
                len: 4096,
                flags: 1,
                ret: SysResult::Err(12),
            },
            r#""event":"mlock2","addr":"0x1000","len":4096,"flags":"MLOCK_ONFAULT","ret":null,"errno":"ENOMEM""#,
        );
        check(
            Body::Mlockall {
                flags: 2,
                ret: SysResult::Ok(0),
            },
            r#""event":"mlockall","flags":"MCL_FUTURE","ret":0"#,
        );
        check(
            Body::Munlockall {
                ret: SysResult::Ok(0),
            },
            r#""event":"munlockall","ret":0"#,
        );
        check(
            Body::Mseal {
                addr: 0x1000,
                len: 4096,
                flags: 0,
                ret: SysResult::Ok(0),
            },
            r#""event":"mseal","addr":"0x1000","len":4096,"flags":0,"ret":0"#,
        );
        check(
            Body::Shmat {
                shmid: 7,
                addr: 0,
                flags: 0,
                ret: SysResult::Ok(0x7f00_0000_0000),
            },
            r#""event":"shmat","shmid":7,"addr":"0x0","flags":"0","ret":"0x7f0000000000""#,
        );
        check(
            Body::Shmdt {
                addr: 0x7f00_0000_0000,
                ret: SysResult::Err(22),
            },
            r#""event":"shmdt","addr":"0x7f0000000000","ret":null,"errno":"EINVAL""#,
        );
        check(
            Body::RemapFilePages {
                addr: 0x1000,
                size: 4096,
                prot: 0,
                pgoff: 3,
                flags: 0,
                ret: SysResult::Ok(0),
            },
            r#""event":"remap_file_pages","addr":"0x1000","size":4096,"prot":"---","pgoff":3,"flags":"0","ret":0"#,
        );
    }

    #[test]
    fn mremap() {
        check(
            Body::Mremap {
                old_addr: 0x1000,
                old_len: 4096,
                new_len: 8192,
                flags: 1,
                new_addr: 0x5555,
                ret: SysResult::Ok(0x9000),
            },
            r#""event":"mremap","old_addr":"0x1000","old_len":4096,"new_len":8192,"flags":"MREMAP_MAYMOVE","ret":"0x9000""#,
        );
        check(
            Body::Mremap {
                old_addr: 0x1000,
                old_len: 4096,
                new_len: 8192,
                flags: 3,
                new_addr: 0x20000,
                ret: SysResult::Err(12),
            },
            r#""event":"mremap","old_addr":"0x1000","old_len":4096,"new_len":8192,"flags":"MREMAP_MAYMOVE|MREMAP_FIXED","new_addr":"0x20000","ret":null,"errno":"ENOMEM""#,
        );
    }

    #[test]
    fn faults_and_stack() {
        check(
            Body::Fault {
                addr: 0xdead000,
                ip: 0x401000,
                access: Access::Exec,
                present: false,
            },
            r#""event":"fault","addr":"0xdead000","ip":"0x401000","access":"exec","present":false"#,
        );
        check(
            Body::FaultSummary {
                interval_ns: 1_000_000_000,
                read: 10,
                write: 5,
                exec: 1,
                present: 2,
            },
            r#""event":"fault_summary","interval_ns":1000000000,"read":10,"write":5,"exec":1,"present":2,"total":16"#,
        );
        check(
            Body::Stack {
                old_start: 0x7ffd0000,
                new_start: 0x7ffcf000,
                source: StackSource::Fexit,
            },
            r#""event":"stack","old_start":"0x7ffd0000","new_start":"0x7ffcf000","source":"fexit""#,
        );
        check(
            Body::Stack {
                old_start: 0x7ffd0000,
                new_start: 0x7ffcf000,
                source: StackSource::Fault,
            },
            r#""event":"stack","old_start":"0x7ffd0000","new_start":"0x7ffcf000","source":"fault""#,
        );
    }

    #[test]
    fn process_events() {
        check(
            Body::Exec {
                path: b"/bin/ls".to_vec(),
                old_pid: 1234,
                start_time: 0,
                abi: None,
            },
            // The path holds U+FFFD for the invalid byte 0xfe.
            r#""event":"exec","path":"/bin/ls""#,
        );
        check(
            Body::Exec {
                path: b"/bin/\xfe".to_vec(),
                old_pid: 1236,
                start_time: 0,
                abi: None,
            },
            // The path holds U+FFFD for the invalid byte 0xfe.
            r#""event":"exec","path":"/bin/�","path_hex":"2f62696e2ffe","old_pid":1236"#,
        );
        // Only a program whose system calls are not traced says its ABI.
        check(
            Body::Exec {
                path: b"/bin/ls".to_vec(),
                old_pid: 1234,
                start_time: 0,
                abi: Some(crate::event::Abi::X86_64),
            },
            r#""event":"exec","path":"/bin/ls""#,
        );
        check(
            Body::Exec {
                path: b"/opt/t32".to_vec(),
                old_pid: 1234,
                start_time: 0,
                abi: Some(crate::event::Abi::I386),
            },
            r#""event":"exec","path":"/opt/t32","abi":"i386""#,
        );
        check(
            Body::Fork {
                child_pid: 99,
                clone_flags: 0x11,
            },
            r#""event":"fork","child_pid":99"#,
        );
        check(
            Body::Exit {
                status: 3 << 8,
                start_time: 0,
            },
            r#""event":"exit","code":3,"signal":null"#,
        );
        check(
            Body::Exit {
                status: 9,
                start_time: 0,
            },
            r#""event":"exit","code":null,"signal":"SIGKILL""#,
        );
        check(
            Body::OomKill { victim_pid: 4321 },
            r#""event":"oom_kill","victim_pid":4321"#,
        );
        check(
            Body::Lost {
                count: 7,
                kind: Some(EventKind::Mmap),
            },
            r#""event":"lost","count":7,"kind":"mmap""#,
        );
        check(
            Body::Lost {
                count: 7,
                kind: None,
            },
            r#""event":"lost","count":7,"kind":null"#,
        );
    }

    #[test]
    fn hostile_comm() {
        let mut e = ev(Body::Exit {
            status: 0,
            start_time: 0,
        });
        e.comm = b"\x1b[31m\"evil\\\n\x00\x7f\xc2\x9b".to_vec();
        let line = raw(&e);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["comm"], "\x1b[31m\"evil\\\n\x00\x7f\u{9b}");
        assert!(v.get("comm_hex").is_none());
        assert!(line.find("\"comm\"").unwrap() < line.find("\"event\"").unwrap());

        e.comm = b"a\xffb\x1b".to_vec();
        let line = raw(&e);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["comm"], "a\u{fffd}b\x1b");
        assert_eq!(v["comm_hex"], "61ff621b");
        let comm_hex = line.find("\"comm_hex\"").unwrap();
        assert!(line.find("\"comm\"").unwrap() < comm_hex);
        assert!(comm_hex < line.find("\"event\"").unwrap());
    }

    #[test]
    fn time_saturates() {
        let mut e = ev(Body::Exit {
            status: 0,
            start_time: 0,
        });
        e.ts_ns = 10;
        let v: Value = serde_json::from_str(&raw(&e)).unwrap();
        assert_eq!(v["t_ns"], 0);
    }
}
