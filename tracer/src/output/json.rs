//! The JSONL format: one JSON object per line, a stable interface.
//!
//! Every line has `t_ns`, `pid`, `tid`, `comm`, `event`, then the fields of
//! the event (see the module documentation of `output`). Raw bytes from the
//! traced process (comm, paths) become strings by lossy UTF-8 conversion;
//! when they were not valid UTF-8, a sibling `<name>_hex` field holds the
//! raw bytes in hex.
//!
//! Lines are written straight into the caller's buffer, field by field,
//! with no allocation for the common events (a stream can carry millions
//! per second): numbers and hex by hand, strings escaped as serde_json
//! escapes them, and the names of flags from a small cache of the last
//! values seen. The serde form this replaced stays in the tests, which
//! check that both write the same bytes.

use super::names::{
    advice_str, dev_str, errno_name, hex_bytes, mlock2_flags_str, mlockall_flags_str,
    mmap_flags_str, mremap_flags_str, prot_str, remap_file_pages_flags_str, shmat_flags_str,
    signal_name, uffd_mode_str,
};
use crate::event::{split_status, Body, Event, StackSource, SysResult};

/// The names of flags seen last, to write them without building them
/// again: a few values per kind recur in any stream.
#[derive(Default)]
pub(super) struct Names {
    mmap_flags: Recent,
    prot: Recent,
    other: Recent,
    size: Recent,
}

/// The last few (kind, value) -> name pairs, replaced in turn.
#[derive(Default)]
struct Recent {
    slots: [(u8, u64, String); RECENT],
    used: usize,
    next: usize,
}

const RECENT: usize = 4;

impl Recent {
    /// The name of `value` for `kind` (a caller's tag), built by `make`
    /// when it is not among the last few.
    fn get(&mut self, kind: u8, value: u64, make: impl FnOnce(u64) -> String) -> &str {
        let found = self.slots[..self.used]
            .iter()
            .position(|(k, v, _)| *k == kind && *v == value);
        let at = found.unwrap_or_else(|| {
            let at = self.next;
            self.next = (self.next + 1) % RECENT;
            self.used = self.used.max(at + 1);
            self.slots[at] = (kind, value, make(value));
            at
        });
        &self.slots[at].2
    }
}

/// PROT_READ|WRITE|EXEC as /proc/PID/maps shows them, the common case of
/// [`prot_str`].
const PROT_RWX: [&str; 8] = ["---", "r--", "-w-", "rw-", "--x", "r-x", "-wx", "rwx"];

/// Kinds of the names in [`Names::other`].
const MREMAP: u8 = 0;
const MLOCK2: u8 = 1;
const MLOCKALL: u8 = 2;
const SHMAT: u8 = 3;
const REMAP_FILE_PAGES: u8 = 4;
const ADVICE: u8 = 5;
const UFFD_MODE: u8 = 6;

impl Names {
    /// [`mmap_flags_str`].
    pub(super) fn mmap_flags(&mut self, flags: u64) -> &str {
        self.mmap_flags.get(0, flags, mmap_flags_str)
    }

    /// [`human_size`](super::names::human_size).
    pub(super) fn size(&mut self, bytes: u64) -> &str {
        self.size.get(0, bytes, super::names::human_size)
    }

    /// [`prot_str`].
    pub(super) fn prot(&mut self, prot: u64) -> &str {
        match PROT_RWX.get(prot as usize) {
            Some(name) => name,
            None => self.prot.get(0, prot, prot_str),
        }
    }
}

/// One line being written: `{"key":value,...}` then a newline.
struct Line<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Line<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        Line { out, first: true }
    }

    #[inline]
    fn key(&mut self, key: &str) {
        self.out.push(if self.first { b'{' } else { b',' });
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    #[inline]
    fn u64(&mut self, key: &str, v: u64) {
        self.key(key);
        write_u64(self.out, v);
    }

    fn i64(&mut self, key: &str, v: i64) {
        self.key(key);
        if v < 0 {
            self.out.push(b'-');
        }
        write_u64(self.out, v.unsigned_abs());
    }

    #[inline]
    fn str(&mut self, key: &str, v: &str) {
        self.key(key);
        write_str(self.out, v);
    }

    #[inline]
    fn hex(&mut self, key: &str, v: u64) {
        self.key(key);
        self.out.push(b'"');
        write_hex(self.out, v);
        self.out.push(b'"');
    }

    fn null(&mut self, key: &str) {
        self.key(key);
        self.out.extend_from_slice(b"null");
    }

    fn bool(&mut self, key: &str, v: bool) {
        self.key(key);
        self.out
            .extend_from_slice(if v { b"true" as &[u8] } else { b"false" });
    }

    /// Raw bytes as a string (invalid UTF-8 replaced), and their hex in
    /// `hex_key` when they are not valid UTF-8.
    fn bytes(&mut self, key: &str, hex_key: &str, v: &[u8]) {
        if let Ok(s) = std::str::from_utf8(v) {
            self.str(key, s);
        } else {
            self.str(key, &String::from_utf8_lossy(v));
            self.str(hex_key, &hex_bytes(v));
        }
    }

    /// `ret` (an address in hex, or a number; null on failure) and
    /// `errno` (only on failure).
    fn ret(&mut self, r: SysResult, addr: bool) {
        match r {
            SysResult::Ok(v) if addr => self.hex("ret", v),
            SysResult::Ok(v) => self.u64("ret", v),
            SysResult::Err(e) => {
                self.null("ret");
                self.str("errno", &errno_name(e));
            }
        }
    }

    fn end(self) {
        self.out.extend_from_slice(b"}\n");
    }
}

/// Appends the first `n` bytes of `buf`. The copy is of the whole array,
/// a fixed size the compiler writes inline, then cut back: no call to
/// `memcpy` for a few bytes of variable length (measured: a tenth of the
/// stream's CPU went to those calls).
#[inline]
fn append<const N: usize>(out: &mut Vec<u8>, buf: &[u8; N], n: usize) {
    let len = out.len();
    out.extend_from_slice(buf);
    out.truncate(len + n);
}

#[inline]
pub(super) fn write_u64(out: &mut Vec<u8>, v: u64) {
    // Two digits at a time, written from the end of the number.
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let n = v.checked_ilog10().map_or(1, |d| d as usize + 1);
    let mut buf = [0u8; 20];
    let mut at = n;
    let mut v = v;
    while v >= 100 {
        let pair = (v % 100) as usize * 2;
        v /= 100;
        at -= 2;
        buf[at] = PAIRS[pair];
        buf[at + 1] = PAIRS[pair + 1];
    }
    if v >= 10 {
        let pair = v as usize * 2;
        buf[0] = PAIRS[pair];
        buf[1] = PAIRS[pair + 1];
    } else {
        buf[0] = b'0' + v as u8;
    }
    append(out, &buf, n);
}

/// `0x` and lowercase hex digits, as `{:#x}` writes them.
#[inline]
pub(super) fn write_hex(out: &mut Vec<u8>, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digits = (64 - (v | 1).leading_zeros() as usize).div_ceil(4);
    let mut buf = [0u8; 18];
    buf[0] = b'0';
    buf[1] = b'x';
    let mut v = v;
    for at in (2..2 + digits).rev() {
        buf[at] = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
    append(out, &buf, 2 + digits);
}

/// A JSON string, escaped as serde_json escapes it: as is when nothing
/// needs escaping (the common case), else by serde_json itself.
#[inline]
pub(super) fn write_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Appends one JSON line (with its newline) for `ev` to `out`. Times are
/// relative to `start_ns`, saturating at 0.
pub(super) fn format_event(out: &mut Vec<u8>, ev: &Event, start_ns: u64, names: &mut Names) {
    // Room for a common line at once.
    out.reserve(320);
    let mut l = Line::new(out);
    l.u64("t_ns", ev.ts_ns.saturating_sub(start_ns));
    l.u64("pid", u64::from(ev.pid));
    l.u64("tid", u64::from(ev.tid));
    l.bytes("comm", "comm_hex", &ev.comm);
    l.str("event", ev.body.name());
    match &ev.body {
        Body::Brk {
            requested,
            old_brk,
            new_brk,
            ..
        } => {
            l.hex("requested", *requested);
            match old_brk {
                Some(v) => l.hex("old_brk", *v),
                None => l.null("old_brk"),
            }
            l.hex("new_brk", *new_brk);
        }
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
            l.hex("addr", *addr);
            l.u64("len", *len);
            l.str("prot", names.prot(*prot));
            l.str("flags", names.mmap_flags.get(0, *flags, mmap_flags_str));
            // The kernel takes the fd as an int.
            l.i64("fd", i64::from(*fd as i32));
            l.u64("offset", *offset);
            l.ret(*ret, true);
            if let Some(f) = file {
                l.bytes("path", "path_hex", &f.path);
                l.str("dev", &dev_str(f.dev_major, f.dev_minor));
                l.u64("ino", f.ino);
                if f.truncated {
                    l.bool("path_truncated", true);
                }
            }
        }
        Body::Munmap { addr, len, ret }
        | Body::Mlock { addr, len, ret }
        | Body::Munlock { addr, len, ret } => {
            l.hex("addr", *addr);
            l.u64("len", *len);
            l.ret(*ret, false);
        }
        Body::Mremap {
            old_addr,
            old_len,
            new_len,
            flags,
            new_addr,
            ret,
        } => {
            l.hex("old_addr", *old_addr);
            l.u64("old_len", *old_len);
            l.u64("new_len", *new_len);
            l.str("flags", names.other.get(MREMAP, *flags, mremap_flags_str));
            if *flags & libc::MREMAP_FIXED as u64 != 0 {
                l.hex("new_addr", *new_addr);
            }
            l.ret(*ret, true);
        }
        Body::Mprotect {
            addr,
            len,
            prot,
            ret,
        } => {
            l.hex("addr", *addr);
            l.u64("len", *len);
            l.str("prot", names.prot(*prot));
            l.ret(*ret, false);
        }
        Body::PkeyMprotect {
            addr,
            len,
            prot,
            pkey,
            ret,
        } => {
            l.hex("addr", *addr);
            l.u64("len", *len);
            l.str("prot", names.prot(*prot));
            l.i64("pkey", i64::from(*pkey));
            l.ret(*ret, false);
        }
        Body::Madvise {
            addr,
            len,
            advice,
            ret,
        } => {
            l.hex("addr", *addr);
            l.u64("len", *len);
            l.str("advice", names.other.get(ADVICE, *advice, advice_str));
            l.ret(*ret, false);
        }
        Body::Mlock2 {
            addr,
            len,
            flags,
            ret,
        } => {
            l.hex("addr", *addr);
            l.u64("len", *len);
            l.str("flags", names.other.get(MLOCK2, *flags, mlock2_flags_str));
            l.ret(*ret, false);
        }
        Body::Mlockall { flags, ret } => {
            l.str(
                "flags",
                names.other.get(MLOCKALL, *flags, mlockall_flags_str),
            );
            l.ret(*ret, false);
        }
        Body::Munlockall { ret } => l.ret(*ret, false),
        Body::Mseal {
            addr,
            len,
            flags,
            ret,
        } => {
            l.hex("addr", *addr);
            l.u64("len", *len);
            l.u64("flags", *flags);
            l.ret(*ret, false);
        }
        Body::Userfaultfd {
            register,
            fd,
            range,
            mode,
            ret,
        } => {
            l.str("op", if *register { "register" } else { "unregister" });
            l.i64("fd", i64::from(*fd));
            if let Some((addr, len)) = range {
                l.hex("addr", *addr);
                l.u64("len", *len);
            } else {
                l.null("addr");
                l.null("len");
            }
            l.str("mode", names.other.get(UFFD_MODE, *mode, uffd_mode_str));
            l.ret(*ret, false);
        }
        Body::Shmat {
            shmid,
            addr,
            flags,
            ret,
        } => {
            l.i64("shmid", i64::from(*shmid));
            l.hex("addr", *addr);
            l.str("flags", names.other.get(SHMAT, *flags, shmat_flags_str));
            l.ret(*ret, true);
        }
        Body::Shmdt { addr, ret } => {
            l.hex("addr", *addr);
            l.ret(*ret, false);
        }
        Body::RemapFilePages {
            addr,
            size,
            prot,
            pgoff,
            flags,
            ret,
        } => {
            l.hex("addr", *addr);
            l.u64("size", *size);
            l.str("prot", names.prot(*prot));
            l.u64("pgoff", *pgoff);
            l.str(
                "flags",
                names
                    .other
                    .get(REMAP_FILE_PAGES, *flags, remap_file_pages_flags_str),
            );
            l.ret(*ret, false);
        }
        Body::Fault {
            addr,
            ip,
            access,
            present,
        } => {
            l.hex("addr", *addr);
            l.hex("ip", *ip);
            l.str("access", access.name());
            l.bool("present", *present);
        }
        Body::FaultSummary {
            interval_ns,
            read,
            write,
            exec,
            present,
        } => {
            l.u64("interval_ns", *interval_ns);
            l.u64("read", *read);
            l.u64("write", *write);
            l.u64("exec", *exec);
            l.u64("present", *present);
            l.u64("total", read.saturating_add(*write).saturating_add(*exec));
        }
        Body::Stack {
            old_start,
            new_start,
            source,
        } => {
            l.hex("old_start", *old_start);
            l.hex("new_start", *new_start);
            l.str(
                "source",
                match source {
                    StackSource::Fault => "fault",
                    StackSource::Fexit => "fexit",
                },
            );
        }
        Body::Exec {
            path,
            old_pid,
            abi,
            cgroup,
            ..
        } => {
            l.bytes("path", "path_hex", path);
            if *old_pid != ev.pid {
                l.u64("old_pid", u64::from(*old_pid));
            }
            if let Some(abi) = abi.filter(|a| !a.traced()) {
                l.str("abi", abi.name());
            }
            if let Some(cg) = cgroup {
                if let Some(v2) = &cg.v2 {
                    l.str("cgroup_v2", &String::from_utf8_lossy(v2));
                }
                if let Some(id) = cg.v2_id {
                    l.u64("cgroup_v2_id", id);
                }
                if let Some(m) = &cg.v1_memory {
                    l.str("cgroup_v1_memory", &String::from_utf8_lossy(m));
                }
            }
        }
        Body::Fork { child_pid, .. } => l.u64("child_pid", u64::from(*child_pid)),
        Body::OomKill { victim_pid } => l.u64("victim_pid", u64::from(*victim_pid)),
        Body::Exit { status, .. } => {
            let (code, signal) = split_status(*status);
            match code {
                Some(c) => l.i64("code", i64::from(c)),
                None => l.null("code"),
            }
            match signal {
                Some(s) => l.str("signal", &signal_name(s)),
                None => l.null("signal"),
            }
        }
        Body::Lost { count, kind } => {
            l.u64("count", *count);
            match kind {
                Some(k) => l.str("kind", k.name()),
                None => l.null("kind"),
            }
        }
    }
    l.end();
}

/// The serde form the writer above replaced: the reference its output is
/// checked against.
#[cfg(test)]
mod serde_form {
    use serde::Serialize;

    use super::super::names::{
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
        old_brk: Option<String>,
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
        #[serde(skip_serializing_if = "Option::is_none")]
        cgroup_v2: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cgroup_v2_id: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cgroup_v1_memory: Option<String>,
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
    pub(super) fn format_event(
        out: &mut Vec<u8>,
        ev: &Event,
        start_ns: u64,
    ) -> serde_json::Result<()> {
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
                    old_brk: old_brk.map(hex),
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
                path,
                old_pid,
                abi,
                cgroup,
                ..
            } => {
                let (path, path_hex) = lossy(path);
                let cg = cgroup.as_deref();
                let text = |b: &Option<Vec<u8>>| {
                    b.as_deref()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                };
                head.write(
                    out,
                    Exec {
                        path,
                        path_hex,
                        old_pid: (*old_pid != ev.pid).then_some(*old_pid),
                        abi: abi.filter(|a| !a.traced()).map(crate::event::Abi::name),
                        cgroup_v2: cg.and_then(|c| text(&c.v2)),
                        cgroup_v2_id: cg.and_then(|c| c.v2_id),
                        cgroup_v1_memory: cg.and_then(|c| text(&c.v1_memory)),
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
}

/// Events of every kind, with odd values, invalid UTF-8 and characters
/// that need escaping, for the tests of both formats.
#[cfg(test)]
pub(super) fn sample_events() -> Vec<Event> {
    use crate::event::{Access, MappedFile};
    use tracer_common::EventKind;
    let comms: [&[u8]; 5] = [
        b"python3",
        b"",
        b"a\"b\\c\n\x01\x7f",
        b"\xff\xfeab",
        "é€".as_bytes(),
    ];
    let paths: [&[u8]; 4] = [b"/usr/lib/libc.so.6", b"", b"/tmp/\"x\"\t", b"/tmp/\xc3"];
    let values = [
        0u64,
        1,
        3,
        7,
        8,
        0x22,
        0x802,
        0x1000_0022,
        u64::MAX,
        1 << 63,
        0x7f3a12340000,
    ];
    let results = [
        SysResult::Ok(0),
        SysResult::Ok(0x7f00_0000_0000),
        SysResult::Err(12),
        SysResult::Err(600),
    ];
    let mut bodies = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        let r = results[i % results.len()];
        let w = values[(i + 3) % values.len()];
        let file = (i % 3 != 0).then(|| MappedFile {
            path: paths[i % paths.len()].to_vec(),
            dev_major: (v & 0xfff) as u32,
            dev_minor: (w & 0xfffff) as u32,
            ino: w,
            truncated: i % 2 == 0,
        });
        bodies.extend([
            Body::Brk {
                requested: v,
                old_brk: (i % 5 != 0).then_some(w),
                new_brk: v ^ w,
                start_brk: 0,
            },
            Body::Mmap {
                addr: v,
                len: w,
                prot: v,
                flags: w,
                fd: v as i64,
                offset: w,
                ret: r,
                file,
            },
            Body::Munmap {
                addr: v,
                len: w,
                ret: r,
            },
            Body::Mremap {
                old_addr: v,
                old_len: w,
                new_len: v,
                flags: w,
                new_addr: v,
                ret: r,
            },
            Body::Mremap {
                old_addr: v,
                old_len: w,
                new_len: v,
                flags: v,
                new_addr: w,
                ret: r,
            },
            Body::Mprotect {
                addr: v,
                len: w,
                prot: v,
                ret: r,
            },
            Body::PkeyMprotect {
                addr: v,
                len: w,
                prot: w,
                pkey: v as i32,
                ret: r,
            },
            Body::Madvise {
                addr: v,
                len: w,
                advice: v,
                ret: r,
            },
            Body::Mlock {
                addr: v,
                len: w,
                ret: r,
            },
            Body::Munlock {
                addr: w,
                len: v,
                ret: r,
            },
            Body::Mlock2 {
                addr: v,
                len: w,
                flags: v,
                ret: r,
            },
            Body::Mlockall { flags: w, ret: r },
            Body::Munlockall { ret: r },
            Body::Mseal {
                addr: v,
                len: w,
                flags: v,
                ret: r,
            },
            Body::Userfaultfd {
                register: w.is_multiple_of(2),
                fd: w as i32,
                range: (!v.is_multiple_of(3)).then_some((v, w)),
                mode: w,
                ret: r,
            },
            Body::Shmat {
                shmid: w as i32,
                addr: v,
                flags: w,
                ret: r,
            },
            Body::Shmdt { addr: v, ret: r },
            Body::RemapFilePages {
                addr: v,
                size: w,
                prot: v,
                pgoff: w,
                flags: v,
                ret: r,
            },
            Body::Fault {
                addr: v,
                ip: w,
                access: [Access::Read, Access::Write, Access::Exec][i % 3],
                present: i % 2 == 0,
            },
            Body::FaultSummary {
                interval_ns: v,
                read: w,
                write: v,
                exec: w,
                present: v,
            },
            Body::Stack {
                old_start: v,
                new_start: w,
                source: if i % 2 == 0 {
                    StackSource::Fault
                } else {
                    StackSource::Fexit
                },
            },
            Body::Exec {
                path: paths[i % paths.len()].to_vec(),
                old_pid: if i % 2 == 0 { 1234 } else { v as u32 },
                start_time: 0,
                abi: [
                    None,
                    Some(crate::event::Abi::I386),
                    Some(crate::event::Abi::X86_64),
                ][i % 3],
                cgroup: None,
            },
            Body::Fork {
                child_pid: v as u32,
                clone_flags: 0,
            },
            Body::OomKill {
                victim_pid: w as u32,
            },
            Body::Exit {
                status: v as i32,
                start_time: 0,
            },
            Body::Lost {
                count: v,
                kind: (i % 2 == 0).then_some(EventKind::Mmap),
            },
            Body::Lost {
                count: w,
                kind: None,
            },
        ]);
    }

    let mut events = Vec::new();
    for (n, body) in bodies.into_iter().enumerate() {
        events.push(Event {
            ts_ns: [0, 999, 1_000, u64::MAX, 12_345_678_901][n % 5],
            cpu: 0,
            pid: [1234, 0, u32::MAX][n % 3],
            tid: [1236, 7, u32::MAX][n % 3],
            comm: comms[n % comms.len()].to_vec(),
            body,
            counters: None,
        });
    }
    events
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
        format_event(&mut out, ev, 1_000, &mut Names::default());
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
                old_brk: Some(0x55d0_0000),
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
                cgroup: None,
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
                cgroup: None,
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
                cgroup: None,
            },
            r#""event":"exec","path":"/bin/ls""#,
        );
        check(
            Body::Exec {
                path: b"/opt/t32".to_vec(),
                old_pid: 1234,
                start_time: 0,
                abi: Some(crate::event::Abi::I386),
                cgroup: None,
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

    /// The writer writes the bytes serde wrote, for every kind of event,
    /// odd values and bytes included, and with its caches warm or cold.
    #[test]
    fn same_bytes_as_serde() {
        let mut names = Names::default();
        for e in sample_events() {
            let mut want = Vec::new();
            serde_form::format_event(&mut want, &e, 1_000).unwrap();
            for names in [&mut names, &mut Names::default()] {
                let mut got = Vec::new();
                format_event(&mut got, &e, 1_000, names);
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want),
                    "{:?}",
                    e.body
                );
                assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn numbers_as_display_writes_them() {
        let mut out = Vec::new();
        let values = (0..20_000u64)
            .chain((0..64).map(|b| 1u64 << b))
            .chain((1..20).flat_map(|n| [10u64.pow(n) - 1, 10u64.pow(n)]))
            .chain([u64::MAX]);
        for v in values {
            out.clear();
            write_u64(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
            out.clear();
            write_hex(&mut out, v);
            assert_eq!(out, format!("{v:#x}").as_bytes());
        }
    }
}
