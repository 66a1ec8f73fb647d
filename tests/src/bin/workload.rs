//! `workload --report PATH [--pause-ms N]`: a scripted sequence of memory
//! operations done with raw syscalls, for the mmtrace end-to-end tests.
//!
//! Every measured operation is a direct syscall (never the allocator), and its
//! arguments and results are kept in plain `Copy` records until the step is
//! over, so that no allocation (which could itself call brk/mmap) happens in
//! the middle of a step. At the end the whole account ([`tests::Report`]) is
//! written as JSON to PATH. Any unexpected result makes the workload print a
//! message on stderr and exit with status 1.
//!
//! With `--pause-ms N` (N > 0) the workload also pauses between steps (see
//! [`Pauser`]): it reads /proc/self/maps, then sleeps N ms with no memory
//! activity, and reports each pause ([`tests::Pause`]) so that a tracer's
//! model of the address space can be compared with the kernel's at known
//! times. Without it (the default) no pause code runs at all.

use std::ffi::CString;
use std::hint::black_box;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::ptr;
use std::time::Duration;

use tests::{
    hex_addr, parse_proc_maps, BrkCall, Call, CallsStep, FileMmapStep, ForkStep, MadviseCall,
    MmapCall, MprotectCall, MprotectStep, MremapCall, MremapInPlaceStep, MremapMoveStep,
    MunmapCall, MunmapPartialStep, Pause, PkeyMprotectCall, PkeyMprotectStep, Report, StackStep,
    ThreadStep, TouchStep,
};

/// Pages touched in step 7.
const TOUCH_PAGES: usize = 64;
/// Stack bytes used by each frame of the step-8 recursion.
const FRAME_BYTES: usize = 16 * 1024;
/// Minimum growth of the process stack in step 8.
const STACK_GROWTH_MIN: usize = 1280 * 1024;
/// The recursion goes until the frame is this far below the stack start.
const STACK_GROWTH_TARGET: usize = 1536 * 1024;
const MAX_DEPTH: u32 = 1024;
/// Size of the buffer /proc/self/maps is read into during a pause.
const MAPS_BUF_BYTES: usize = 1 << 20;

fn fail(msg: &str) -> ! {
    eprintln!("workload: {msg}");
    std::process::exit(1);
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

// ---------------------------------------------------------------------------
// Raw syscall wrappers returning Copy records
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct RawMmap {
    addr: usize,
    len: usize,
    prot: i32,
    flags: i32,
    fd: i32,
    offset: usize,
    ret: usize,
}

impl RawMmap {
    fn record(&self) -> MmapCall {
        MmapCall {
            addr: hex_addr(self.addr as u64),
            len: self.len as u64,
            prot: self.prot,
            flags: self.flags,
            fd: self.fd,
            offset: self.offset as u64,
            result: hex_addr(self.ret as u64),
        }
    }
}

#[derive(Clone, Copy)]
struct RawMunmap {
    addr: usize,
    len: usize,
    ret: i64,
}

impl RawMunmap {
    fn record(&self) -> MunmapCall {
        MunmapCall {
            addr: hex_addr(self.addr as u64),
            len: self.len as u64,
            result: self.ret,
        }
    }
}

#[derive(Clone, Copy)]
struct RawMremap {
    old_addr: usize,
    old_len: usize,
    new_len: usize,
    flags: i32,
    ret: usize,
}

impl RawMremap {
    fn record(&self) -> MremapCall {
        MremapCall {
            old_addr: hex_addr(self.old_addr as u64),
            old_len: self.old_len as u64,
            new_len: self.new_len as u64,
            flags: self.flags,
            result: hex_addr(self.ret as u64),
        }
    }
}

/// mmap(2); exits on failure.
fn mmap(addr: usize, len: usize, prot: i32, flags: i32, fd: i32, offset: usize) -> RawMmap {
    // SAFETY: plain mmap syscall; the workload only maps fresh memory (or,
    // with MAP_FIXED_NOREPLACE, memory that is known to be free).
    let ret = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            prot,
            flags,
            fd,
            offset as libc::off_t,
        )
    };
    if ret == libc::MAP_FAILED {
        fail(&format!(
            "mmap(addr={addr:#x}, len={len:#x}, prot={prot:#x}, flags={flags:#x}, fd={fd}) failed: {}",
            errno()
        ));
    }
    RawMmap {
        addr,
        len,
        prot,
        flags,
        fd,
        offset,
        ret: ret as usize,
    }
}

fn mmap_anon(len: usize) -> RawMmap {
    mmap(
        0,
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
        0,
    )
}

/// munmap(2); exits on failure.
fn munmap(addr: usize, len: usize) -> RawMunmap {
    // SAFETY: only regions mapped by this program and no longer referenced.
    let ret = unsafe { libc::munmap(addr as *mut libc::c_void, len) } as i64;
    if ret != 0 {
        fail(&format!("munmap({addr:#x}, {len:#x}) failed: {}", errno()));
    }
    RawMunmap { addr, len, ret }
}

/// mremap(2) without MREMAP_FIXED; exits on failure.
fn mremap(old_addr: usize, old_len: usize, new_len: usize, flags: i32) -> RawMremap {
    // SAFETY: remaps a region owned by this program; nothing points into it.
    let ret = unsafe { libc::mremap(old_addr as *mut libc::c_void, old_len, new_len, flags) };
    if ret == libc::MAP_FAILED {
        fail(&format!(
            "mremap({old_addr:#x}, {old_len:#x}, {new_len:#x}, {flags:#x}) failed: {}",
            errno()
        ));
    }
    RawMremap {
        old_addr,
        old_len,
        new_len,
        flags,
        ret: ret as usize,
    }
}

/// The raw brk syscall (not glibc's brk()/sbrk()): returns the new break (or
/// the current one when the request cannot be satisfied).
fn sys_brk(requested: usize) -> usize {
    // SAFETY: the brk syscall only moves the program break; nobody uses the
    // memory between the old and new break.
    unsafe { libc::syscall(libc::SYS_brk, requested) as usize }
}

// ---------------------------------------------------------------------------
// /proc/self/maps
// ---------------------------------------------------------------------------

/// The lines of /proc/self/maps within [start, end) (allocates: call it
/// after a step's syscalls).
fn maps_within(start: usize, end: usize) -> Vec<tests::MapsLine> {
    let text = std::fs::read_to_string("/proc/self/maps")
        .unwrap_or_else(|e| fail(&format!("reading /proc/self/maps: {e}")));
    parse_proc_maps(&text)
        .unwrap_or_else(|e| fail(&e))
        .into_iter()
        .filter(|l| {
            let (s, e) = (tests::addr(&l.start) as usize, tests::addr(&l.end) as usize);
            s < end && e > start
        })
        .collect()
}

/// Start address of the `[stack]` line of /proc/self/maps.
fn stack_start() -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps")
        .unwrap_or_else(|e| fail(&format!("reading /proc/self/maps: {e}")));
    let line = maps
        .lines()
        .find(|l| l.trim_end().ends_with("[stack]"))
        .unwrap_or_else(|| fail("no [stack] line in /proc/self/maps"));
    let start = line.split('-').next().unwrap_or("");
    usize::from_str_radix(start, 16)
        .unwrap_or_else(|_| fail(&format!("bad [stack] line in /proc/self/maps: {line}")))
}

// ---------------------------------------------------------------------------
// Pauses (--pause-ms)
// ---------------------------------------------------------------------------

/// CLOCK_MONOTONIC in ns (the clock mmtrace's `monotonic_start_ns` is on).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        fail(&format!("clock_gettime: {}", errno()));
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Makes the pauses. The buffer for /proc/self/maps is allocated (and every
/// page of it written) when the Pauser is created, before step 1, so that a
/// pause changes no mapping between its `before_ns` and `resume_ns`: the read
/// is raw open/read/close into that buffer, and parsing (which allocates, and
/// so may call brk or mmap) only happens after `resume_ns`.
struct Pauser {
    ms: u64,
    buf: Vec<u8>,
    pauses: Vec<Pause>,
}

impl Pauser {
    fn new(ms: u64) -> Pauser {
        if ms == 0 {
            return Pauser {
                ms,
                buf: Vec::new(),
                pauses: Vec::new(),
            };
        }
        let mut buf: Vec<u8> = Vec::with_capacity(MAPS_BUF_BYTES);
        let p = buf.as_mut_ptr();
        for i in (0..MAPS_BUF_BYTES).step_by(1024) {
            // SAFETY: i < capacity; writing the (uninitialized) spare
            // capacity through the raw pointer is allowed.
            unsafe { ptr::write_volatile(p.add(i), 0) };
        }
        black_box(&mut buf);
        Pauser {
            ms,
            buf,
            pauses: Vec::with_capacity(32),
        }
    }

    /// One pause named `name`; nothing at all without `--pause-ms`.
    fn pause(&mut self, name: &str) {
        if self.ms == 0 {
            return;
        }
        self.buf.clear();
        let before_ns = monotonic_ns();
        let read = read_self_maps(&mut self.buf);
        let after_ns = monotonic_ns();
        std::thread::sleep(Duration::from_millis(self.ms));
        let resume_ns = monotonic_ns();

        if let Err((what, e)) = read {
            fail(&format!("pause {name}: {what} /proc/self/maps: {e}"));
        }
        let text = std::str::from_utf8(&self.buf)
            .unwrap_or_else(|e| fail(&format!("pause {name}: /proc/self/maps is not UTF-8: {e}")));
        let maps = parse_proc_maps(text).unwrap_or_else(|e| fail(&format!("pause {name}: {e}")));
        self.pauses.push(Pause {
            name: name.to_string(),
            before_ns,
            after_ns,
            resume_ns,
            maps,
        });
    }
}

/// Read /proc/self/maps into the spare capacity of `buf` with raw syscalls:
/// no allocation, no memory mapping changed.
fn read_self_maps(buf: &mut Vec<u8>) -> Result<(), (&'static str, std::io::Error)> {
    // SAFETY: a NUL-terminated literal path.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(("open", errno()));
    }
    let result = loop {
        let room = buf.capacity() - buf.len();
        if room == 0 {
            break Err((
                "buffer too small for",
                std::io::Error::from_raw_os_error(libc::ENOBUFS),
            ));
        }
        // SAFETY: reading into the spare capacity of buf.
        let n = unsafe {
            libc::read(
                fd,
                buf.as_mut_ptr().add(buf.len()) as *mut libc::c_void,
                room,
            )
        };
        if n < 0 {
            if errno().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break Err(("read", errno()));
        }
        if n == 0 {
            break Ok(());
        }
        // SAFETY: the kernel initialized n more bytes.
        unsafe { buf.set_len(buf.len() + n as usize) };
    };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    result
}

// ---------------------------------------------------------------------------
// Step 8: stack growth
// ---------------------------------------------------------------------------

struct StackProbe {
    /// Recursion stops once a frame lies below this address.
    floor: usize,
    depth: u32,
    start_deepest: usize,
}

/// Touches 64 KiB of stack below the deepest frame, so that reading
/// /proc/self/maps (and everything after it) never needs more stack than
/// what is already mapped when the `[stack]` line is read.
#[inline(never)]
fn stack_pad() {
    let mut pad = [0u8; 64 * 1024];
    let p = pad.as_mut_ptr();
    for i in (0..pad.len()).rev().step_by(256) {
        // SAFETY: i < pad.len().
        unsafe { ptr::write_volatile(p.add(i), i as u8) };
    }
    black_box(&mut pad);
}

#[inline(never)]
fn recurse(depth: u32, probe: &mut StackProbe) {
    let mut buf = [0u8; FRAME_BYTES];
    let p = buf.as_mut_ptr();
    // Write from the top of the frame down, one byte every 64.
    for i in (0..FRAME_BYTES).rev().step_by(64) {
        // SAFETY: i < FRAME_BYTES.
        unsafe { ptr::write_volatile(p.add(i), (i as u8) ^ (depth as u8)) };
    }
    black_box(&mut buf);
    if (p as usize) > probe.floor && depth < MAX_DEPTH {
        recurse(depth + 1, probe);
    } else {
        stack_pad();
        probe.depth = depth;
        probe.start_deepest = stack_start();
    }
    // Keep the frame alive across the recursive call (no tail call).
    black_box(&buf);
}

fn step_stack(page_size: usize) -> StackStep {
    let start_before = stack_start();
    let mut probe = StackProbe {
        floor: start_before.saturating_sub(STACK_GROWTH_TARGET),
        depth: 0,
        start_deepest: 0,
    };
    recurse(1, &mut probe);
    let grown = start_before.saturating_sub(probe.start_deepest);
    if grown < STACK_GROWTH_MIN {
        fail(&format!(
            "stack grew only {grown:#x} bytes ({start_before:#x} -> {:#x}, depth {})",
            probe.start_deepest, probe.depth
        ));
    }
    if !probe.start_deepest.is_multiple_of(page_size) {
        fail("[stack] start is not page aligned");
    }
    StackStep {
        start_before: hex_addr(start_before as u64),
        start_deepest: hex_addr(probe.start_deepest as u64),
        grown_bytes: grown as u64,
        depth: probe.depth,
        frame_bytes: FRAME_BYTES as u64,
    }
}

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

/// The kernel's count of this thread's minor faults (getrusage).
fn thread_minflt() -> u64 {
    // SAFETY: rusage is plain data filled by the kernel.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        fail(&format!("getrusage: {}", errno()));
    }
    ru.ru_minflt as u64
}

const USAGE: &str = "usage: workload --report PATH [--pause-ms N]";

fn parse_pause_ms(v: &std::ffi::OsStr) -> u64 {
    v.to_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fail(&format!("--pause-ms needs a number of ms, got {v:?}")))
}

/// (report path, pause ms).
fn parse_args() -> (PathBuf, u64) {
    let mut args = std::env::args_os().skip(1);
    let mut report = None;
    let mut pause_ms = 0;
    while let Some(a) = args.next() {
        if a == "--report" {
            report = Some(PathBuf::from(
                args.next().unwrap_or_else(|| fail("--report needs a PATH")),
            ));
        } else if let Some(p) = a.as_bytes().strip_prefix(b"--report=") {
            report = Some(PathBuf::from(std::ffi::OsStr::from_bytes(p)));
        } else if a == "--pause-ms" {
            pause_ms = parse_pause_ms(&args.next().unwrap_or_else(|| fail("--pause-ms needs N")));
        } else if let Some(p) = a.as_bytes().strip_prefix(b"--pause-ms=") {
            pause_ms = parse_pause_ms(std::ffi::OsStr::from_bytes(p));
        } else {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
    let report = report.unwrap_or_else(|| {
        eprintln!("{USAGE}");
        std::process::exit(2);
    });
    (report, pause_ms)
}

fn main() {
    let (report_path, pause_ms) = parse_args();

    // SAFETY: trivial libc calls without preconditions.
    let (pid, tid, page_size) = unsafe {
        (
            libc::getpid(),
            libc::gettid(),
            libc::sysconf(libc::_SC_PAGESIZE) as usize,
        )
    };
    if pid != tid {
        fail("workload must start on the main thread");
    }
    let ps = page_size;
    // Allocates the pause buffer now, before anything is measured.
    let mut pauser = Pauser::new(pause_ms);
    // mmtrace reads the new address space right after the exec while the
    // program runs on (it never stops it): on a busy machine that read
    // may come milliseconds late. Leave it the time to come before the
    // steps, whose births the tests check one by one (a step made before
    // the read is part of the seed).
    std::thread::sleep(Duration::from_millis(100));

    // Step 1: brk. No allocation between the three calls.
    let brk_query = sys_brk(0);
    let grow_req = brk_query + 0x10000;
    let grow_ret = sys_brk(grow_req);
    let shrink_req = grow_ret - 0x8000;
    let shrink_ret = sys_brk(shrink_req);
    if grow_ret != grow_req {
        fail(&format!("brk({grow_req:#x}) returned {grow_ret:#x}"));
    }
    if shrink_ret != shrink_req {
        fail(&format!("brk({shrink_req:#x}) returned {shrink_ret:#x}"));
    }
    let brk = vec![
        BrkCall {
            requested: hex_addr(0),
            before: hex_addr(brk_query as u64),
            result: hex_addr(brk_query as u64),
        },
        BrkCall {
            requested: hex_addr(grow_req as u64),
            before: hex_addr(brk_query as u64),
            result: hex_addr(grow_ret as u64),
        },
        BrkCall {
            requested: hex_addr(shrink_req as u64),
            before: hex_addr(grow_ret as u64),
            result: hex_addr(shrink_ret as u64),
        },
    ];
    pauser.pause("after_brk");

    // Step 2: anonymous 1 MiB mapping.
    let anon = mmap_anon(1 << 20);
    let mmap_anon_rec = anon.record();
    pauser.pause("after_anon_mmap");

    // Step 3: file mapping (the file is prepared with std; only the mapping
    // itself is measured).
    let file_path = std::env::temp_dir().join(format!(
        "mmtrace-workload-{pid}-{}.dat",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::write(&file_path, vec![0x5au8; 3 * ps])
        .unwrap_or_else(|e| fail(&format!("writing {}: {e}", file_path.display())));
    let canon = std::fs::canonicalize(&file_path)
        .unwrap_or_else(|e| fail(&format!("canonicalize {}: {e}", file_path.display())));
    let cpath = CString::new(canon.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: cpath is a valid NUL-terminated string.
    let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        fail(&format!("open {}: {}", canon.display(), errno()));
    }
    // SAFETY: an all-zero stat is a valid value to be overwritten by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open, st is a valid out pointer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        fail(&format!("fstat: {}", errno()));
    }
    let file_map = mmap(0, 3 * ps, libc::PROT_READ, libc::MAP_PRIVATE, fd, 0);
    // SAFETY: fd is ours and not used afterwards.
    let close_result = unsafe { libc::close(fd) } as i64;
    if close_result != 0 {
        fail(&format!("close: {}", errno()));
    }
    let dev_major = libc::major(st.st_dev);
    let dev_minor = libc::minor(st.st_dev);
    pauser.pause("after_file_mmap");

    // Step 4: partial munmap.
    let part_map = mmap_anon(4 * ps);
    let part_unmap = munmap(part_map.ret + 2 * ps, 2 * ps);
    let munmap_partial = MunmapPartialStep {
        mmap: part_map.record(),
        munmap: part_unmap.record(),
    };
    pauser.pause("after_partial_munmap");

    // Step 5a: grow in place.
    let inpl_map = mmap_anon(4 * ps);
    let inpl_unmap = munmap(inpl_map.ret + 2 * ps, 2 * ps);
    let inpl_remap = mremap(inpl_map.ret, 2 * ps, 4 * ps, 0);
    if inpl_remap.ret != inpl_map.ret {
        fail(&format!(
            "mremap without MREMAP_MAYMOVE moved {:#x} to {:#x}",
            inpl_map.ret, inpl_remap.ret
        ));
    }
    let mremap_in_place = MremapInPlaceStep {
        mmap: inpl_map.record(),
        munmap: inpl_unmap.record(),
        mremap: inpl_remap.record(),
        stayed: inpl_remap.ret == inpl_remap.old_addr,
    };

    // Step 5b: grow and move. Map 2 pages and drop the upper one so that the
    // page right after A is known to be free for the blocker.
    let mv_reserve = mmap_anon(2 * ps);
    let a = mv_reserve.ret;
    let mv_unmap = munmap(a + ps, ps);
    let mv_blocker = mmap(
        a + ps,
        ps,
        libc::PROT_READ,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
        -1,
        0,
    );
    if mv_blocker.ret != a + ps {
        fail(&format!(
            "MAP_FIXED_NOREPLACE blocker at {:#x} landed at {:#x}",
            a + ps,
            mv_blocker.ret
        ));
    }
    let mv_remap = mremap(a, ps, 2 * ps, libc::MREMAP_MAYMOVE);
    if mv_remap.ret == a {
        fail(&format!("mremap({a:#x}) with a blocker did not move"));
    }
    let mremap_move = MremapMoveStep {
        reserve: mv_reserve.record(),
        reserve_unmap: mv_unmap.record(),
        blocker: mv_blocker.record(),
        mremap: mv_remap.record(),
        moved: mv_remap.ret != mv_remap.old_addr,
    };
    pauser.pause("after_mremap");

    // Step 6: mprotect the middle page of 3.
    let prot_map = mmap_anon(3 * ps);
    let prot_addr = prot_map.ret + ps;
    // SAFETY: the page belongs to prot_map and nothing references it.
    let prot_ret =
        unsafe { libc::mprotect(prot_addr as *mut libc::c_void, ps, libc::PROT_READ) } as i64;
    if prot_ret != 0 {
        fail(&format!("mprotect({prot_addr:#x}): {}", errno()));
    }
    let mprotect = MprotectStep {
        mmap: prot_map.record(),
        mprotect: MprotectCall {
            addr: hex_addr(prot_addr as u64),
            len: ps as u64,
            prot: libc::PROT_READ,
            result: prot_ret,
        },
    };
    pauser.pause("after_mprotect");

    // Step 6b: pkey_mprotect the first page of 2, with no key.
    let pkey_map = mmap_anon(2 * ps);
    // SAFETY: the page belongs to pkey_map and nothing references it; pkey
    // -1 is no key.
    let pkey_ret = unsafe {
        libc::syscall(
            libc::SYS_pkey_mprotect,
            pkey_map.ret,
            ps,
            libc::PROT_READ,
            -1,
        )
    };
    let pkey_errno = errno();
    let pkey_mprotect = if pkey_ret != 0 && pkey_errno.raw_os_error() == Some(libc::ENOSYS) {
        None
    } else {
        if pkey_ret != 0 {
            fail(&format!("pkey_mprotect({:#x}): {pkey_errno}", pkey_map.ret));
        }
        Some(PkeyMprotectStep {
            mmap: pkey_map.record(),
            pkey_mprotect: PkeyMprotectCall {
                addr: hex_addr(pkey_map.ret as u64),
                len: ps as u64,
                prot: libc::PROT_READ,
                pkey: -1,
                result: pkey_ret,
            },
            maps: maps_within(pkey_map.ret, pkey_map.ret + pkey_map.len),
        })
    };
    pauser.pause("after_pkey_mprotect");

    // Step 7: touch 64 pages, one write each.
    let touch_map = mmap_anon(TOUCH_PAGES * ps);
    // SAFETY: advisory call on our own fresh mapping.
    let madv_ret = unsafe {
        libc::madvise(
            touch_map.ret as *mut libc::c_void,
            touch_map.len,
            libc::MADV_NOHUGEPAGE,
        )
    } as i64;
    if madv_ret != 0 {
        fail(&format!("madvise(MADV_NOHUGEPAGE): {}", errno()));
    }
    let minflt_before = thread_minflt();
    for i in 0..TOUCH_PAGES {
        // SAFETY: the byte lies inside the fresh RW mapping.
        unsafe { ptr::write_volatile((touch_map.ret + i * ps) as *mut u8, i as u8 + 1) };
    }
    let minflt_after = thread_minflt();
    let touch = TouchStep {
        mmap: touch_map.record(),
        madvise: MadviseCall {
            addr: hex_addr(touch_map.ret as u64),
            len: touch_map.len as u64,
            advice: libc::MADV_NOHUGEPAGE,
            result: madv_ret,
        },
        page_size: ps as u64,
        pages: TOUCH_PAGES as u64,
        start: hex_addr(touch_map.ret as u64),
        end: hex_addr((touch_map.ret + TOUCH_PAGES * ps) as u64),
        minflt: minflt_after - minflt_before,
    };
    pauser.pause("after_touch");

    // Step 8: stack growth on the main thread.
    let stack = step_stack(ps);
    pauser.pause("after_stack_growth");

    // Step 9: fork.
    let fork = step_fork(ps);
    pauser.pause("after_fork");

    // Step 10: a second thread maps one page.
    let handle = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let m = mmap_anon(ps);
        // SAFETY: inside the fresh RW mapping.
        unsafe { ptr::write_volatile(m.ret as *mut u8, 1) };
        (tid, m)
    });
    let (thread_tid, thread_map) = handle
        .join()
        .unwrap_or_else(|_| fail("the second thread panicked"));
    if thread_tid == pid {
        fail("the second thread has the main thread's tid");
    }
    let thread = ThreadStep {
        tid: thread_tid,
        mmap: thread_map.record(),
    };
    pauser.pause("after_thread");

    // Steps 11 to 17: locks, seals, SysV shared memory, remap_file_pages,
    // calls that fail part-way over a hole, and files the kernel makes.
    let calls = vec![
        step_mlock(ps, &mut pauser),
        step_mlockall(ps, &mut pauser),
        step_mseal(ps, &mut pauser),
        step_shm(ps, &mut pauser),
        step_remap_file_pages(ps, &mut pauser),
        step_partial(ps, &mut pauser),
        step_kernel_files(ps, &mut pauser),
    ];

    // End of step 3: unmap the file and delete it.
    let file_unmap = munmap(file_map.ret, file_map.len);
    let _ = std::fs::remove_file(&canon);
    let mmap_file = FileMmapStep {
        path: canon.to_string_lossy().into_owned(),
        dev_major,
        dev_minor,
        dev: format!("{dev_major:02x}:{dev_minor:02x}"),
        ino: st.st_ino,
        size: st.st_size as u64,
        mmap: file_map.record(),
        close_result,
        munmap: file_unmap.record(),
    };
    pauser.pause("before_exit");

    let report = Report {
        pid,
        tid,
        page_size: ps as u64,
        brk,
        mmap_anon: mmap_anon_rec,
        mmap_file,
        munmap_partial,
        mremap_in_place,
        mremap_move,
        mprotect,
        pkey_mprotect,
        touch,
        stack,
        fork,
        thread,
        calls,
        pauses: pauser.pauses,
    };
    let json = serde_json::to_string_pretty(&report).expect("report serializes");
    std::fs::write(&report_path, json + "\n")
        .unwrap_or_else(|e| fail(&format!("writing {}: {e}", report_path.display())));
}

/// Step 9: fork; the child maps and writes one page, sends `[pid, addr]`
/// through a pipe and `_exit(0)`s. Only raw syscalls in the child.
fn step_fork(ps: usize) -> ForkStep {
    let mut fds = [-1i32; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        fail(&format!("pipe2: {}", errno()));
    }
    let (rfd, wfd) = (fds[0], fds[1]);
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;

    // SAFETY: the process is single-threaded here, and the child only makes
    // async-signal-safe raw syscalls before _exit.
    let child = unsafe { libc::fork() };
    if child < 0 {
        fail(&format!("fork: {}", errno()));
    }
    if child == 0 {
        // SAFETY: raw syscalls only; no allocation, no locks.
        unsafe {
            libc::close(rfd);
            let p = libc::mmap(ptr::null_mut(), ps, prot, flags, -1, 0);
            if p == libc::MAP_FAILED {
                libc::_exit(3);
            }
            ptr::write_volatile(p as *mut u8, 0x42);
            let msg: [u64; 2] = [libc::getpid() as u64, p as u64];
            let n = libc::write(wfd, msg.as_ptr() as *const libc::c_void, 16);
            if n != 16 {
                libc::_exit(4);
            }
            libc::_exit(0);
        }
    }

    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(wfd) };
    let mut msg = [0u64; 2];
    let mut got = 0usize;
    while got < 16 {
        // SAFETY: reading into the remaining bytes of msg.
        let n = unsafe {
            libc::read(
                rfd,
                (msg.as_mut_ptr() as *mut u8).add(got) as *mut libc::c_void,
                16 - got,
            )
        };
        if n < 0 {
            if errno().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            fail(&format!("read from child pipe: {}", errno()));
        }
        if n == 0 {
            break;
        }
        got += n as usize;
    }
    // SAFETY: closing our read end.
    unsafe { libc::close(rfd) };

    let mut status = 0i32;
    loop {
        // SAFETY: status is a valid out pointer.
        let r = unsafe { libc::waitpid(child, &mut status, 0) };
        if r == child {
            break;
        }
        if r < 0 && errno().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        fail(&format!("waitpid({child}): {}", errno()));
    }
    let exited = libc::WIFEXITED(status);
    let exit_code = exited.then(|| libc::WEXITSTATUS(status));
    let signal = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
    if exit_code != Some(0) {
        fail(&format!(
            "fork child {child} did not exit 0 (wait status {status:#x})"
        ));
    }
    if got != 16 {
        fail("fork child sent a short message");
    }
    if msg[0] != child as u64 {
        fail(&format!(
            "fork child reported pid {}, fork returned {child}",
            msg[0]
        ));
    }
    ForkStep {
        child_pid: child,
        child_mmap: RawMmap {
            addr: 0,
            len: ps,
            prot,
            flags,
            fd: -1,
            offset: 0,
            ret: msg[1] as usize,
        }
        .record(),
        wait_status: status,
        exit_code,
        signal,
    }
}

// ---------------------------------------------------------------------------
// Steps 11 to 16
// ---------------------------------------------------------------------------

/// A raw syscall as the report records it, kept as plain data until the
/// step is over (nothing allocated between its calls).
#[derive(Clone, Copy)]
struct RawCall {
    name: &'static str,
    args: [u64; 6],
    nargs: usize,
    ret: i64,
}

impl RawCall {
    fn record(&self) -> Call {
        Call {
            name: self.name.to_string(),
            args: self.args[..self.nargs].to_vec(),
            result: self.ret,
        }
    }
}

/// Makes raw syscall `nr` (named `name` in the stream) with `args`; the
/// result is the kernel's (an address, 0, or -errno).
fn call(name: &'static str, nr: libc::c_long, args: &[u64]) -> RawCall {
    let mut a = [0u64; 6];
    a[..args.len()].copy_from_slice(args);
    // SAFETY: every call of the steps acts on memory of this program that
    // nothing references.
    let ret = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    let ret = if ret == -1 {
        -i64::from(errno().raw_os_error().unwrap_or(0))
    } else {
        ret
    };
    RawCall {
        name,
        args: a,
        nargs: args.len(),
        ret,
    }
}

/// Fails unless `c` succeeded.
fn ok(c: RawCall) -> RawCall {
    if c.ret < 0 {
        fail(&format!(
            "{}({:x?}): errno {}",
            c.name,
            &c.args[..c.nargs],
            -c.ret
        ));
    }
    c
}

/// A step's record: its mmaps, its calls, and the pauses it made.
fn calls_step(name: &str, mmaps: &[RawMmap], calls: &[RawCall], pauses: &[&str]) -> CallsStep {
    CallsStep {
        name: name.to_string(),
        mmaps: mmaps.iter().map(RawMmap::record).collect(),
        calls: calls.iter().map(RawCall::record).collect(),
        pauses: pauses.iter().map(|p| p.to_string()).collect(),
        skipped: None,
    }
}

fn skipped(name: &str, why: String) -> CallsStep {
    CallsStep {
        name: name.to_string(),
        mmaps: Vec::new(),
        calls: Vec::new(),
        pauses: Vec::new(),
        skipped: Some(why),
    }
}

/// Step 11: 4 pages; mlock the middle two (three VMAs), mlock2 the first
/// with MLOCK_ONFAULT (still three: its flags differ from the middle's),
/// munlock all four (one VMA again).
fn step_mlock(ps: usize, pauser: &mut Pauser) -> CallsStep {
    let m = mmap_anon(4 * ps);
    let a = m.ret as u64;
    let ps = ps as u64;
    let lock = ok(call("mlock", libc::SYS_mlock, &[a + ps, 2 * ps]));
    pauser.pause("after_mlock");
    let lock2 = ok(call("mlock2", libc::SYS_mlock2, &[a, ps, 1]));
    pauser.pause("after_mlock2");
    let unlock = ok(call("munlock", libc::SYS_munlock, &[a, 4 * ps]));
    pauser.pause("after_munlock");
    munmap(m.ret, m.len);
    calls_step(
        "mlock",
        &[m],
        &[lock, lock2, unlock],
        &["after_mlock", "after_mlock2", "after_munlock"],
    )
}

/// Step 12: mlockall(MCL_CURRENT | MCL_FUTURE) locks every mapping, and
/// the 2 pages mapped next; munlockall undoes both.
fn step_mlockall(ps: usize, pauser: &mut Pauser) -> CallsStep {
    let flags = (libc::MCL_CURRENT | libc::MCL_FUTURE) as u64;
    let all = call("mlockall", libc::SYS_mlockall, &[flags]);
    if all.ret < 0 {
        return skipped("mlockall", format!("mlockall: errno {}", -all.ret));
    }
    let m = mmap_anon(2 * ps);
    pauser.pause("after_mlockall");
    let none = ok(call("munlockall", libc::SYS_munlockall, &[]));
    pauser.pause("after_munlockall");
    munmap(m.ret, m.len);
    calls_step(
        "mlockall",
        &[m],
        &[all, none],
        &["after_mlockall", "after_munlockall"],
    )
}

/// Step 13: 3 pages; mseal the middle one (three VMAs). Sealed, it stays
/// mapped to the end.
fn step_mseal(ps: usize, pauser: &mut Pauser) -> CallsStep {
    // Linux 6.10's number; libc does not have it everywhere.
    const SYS_MSEAL: libc::c_long = 462;
    let m = mmap_anon(3 * ps);
    let seal = call("mseal", SYS_MSEAL, &[(m.ret + ps) as u64, ps as u64, 0]);
    if seal.ret < 0 {
        munmap(m.ret, m.len);
        return skipped("mseal", format!("mseal: errno {}", -seal.ret));
    }
    pauser.pause("after_mseal");
    calls_step("mseal", &[m], &[seal], &["after_mseal"])
}

/// Step 14: a 3-page SysV segment, attached read-write and read-only
/// (marked for removal at once: it goes with its last detach), then both
/// detached.
fn step_shm(ps: usize, pauser: &mut Pauser) -> CallsStep {
    // SAFETY: a new private segment.
    let id = unsafe { libc::shmget(libc::IPC_PRIVATE, 3 * ps, libc::IPC_CREAT | 0o600) };
    if id < 0 {
        return skipped("shm", format!("shmget: {}", errno()));
    }
    let shmid = id as u64;
    let rw = call("shmat", libc::SYS_shmat, &[shmid, 0, 0]);
    let ro = call(
        "shmat",
        libc::SYS_shmat,
        &[shmid, 0, libc::SHM_RDONLY as u64],
    );
    // SAFETY: removal of our own segment (kept until its last detach).
    unsafe { libc::shmctl(id, libc::IPC_RMID, ptr::null_mut()) };
    let (rw, ro) = (ok(rw), ok(ro));
    // SAFETY: the read-write attach is ours: write its pages.
    for i in 0..3 {
        unsafe { ptr::write_volatile((rw.ret as usize + i * ps) as *mut u8, 1) };
    }
    pauser.pause("after_shmat");
    let dt_rw = ok(call("shmdt", libc::SYS_shmdt, &[rw.ret as u64]));
    let dt_ro = ok(call("shmdt", libc::SYS_shmdt, &[ro.ret as u64]));
    pauser.pause("after_shmdt");
    calls_step(
        "shm",
        &[],
        &[rw, ro, dt_rw, dt_ro],
        &["after_shmat", "after_shmdt"],
    )
}

/// Step 15: a shared read-write mapping of a 4-page file; its page 1 is
/// made to show the file's page 3 (three VMAs, offsets 0, 3 and 2 pages).
fn step_remap_file_pages(ps: usize, pauser: &mut Pauser) -> CallsStep {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let path = std::env::temp_dir().join(format!("mmtrace-workload-{pid}-remap.dat"));
    std::fs::write(&path, vec![0x5au8; 4 * ps])
        .unwrap_or_else(|e| fail(&format!("writing {}: {e}", path.display())));
    let cpath = CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: cpath is a valid NUL-terminated string.
    let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        fail(&format!("open {}: {}", path.display(), errno()));
    }
    let m = mmap(
        0,
        4 * ps,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
        fd,
        0,
    );
    let remap = ok(call(
        "remap_file_pages",
        libc::SYS_remap_file_pages,
        &[(m.ret + ps) as u64, ps as u64, 0, 3, 0],
    ));
    pauser.pause("after_remap_file_pages");
    munmap(m.ret, m.len);
    // SAFETY: fd is ours and not used afterwards.
    unsafe { libc::close(fd) };
    let _ = std::fs::remove_file(&path);
    calls_step(
        "remap_file_pages",
        &[m],
        &[remap],
        &["after_remap_file_pages"],
    )
}

/// Step 16: 4 pages, the third unmapped (a hole). mprotect of all four to
/// read-only fails with ENOMEM after changing the first two; madvise
/// MADV_DONTFORK of the last three fails with ENOMEM after advising page 1
/// (split from page 0) and page 3.
fn step_partial(ps: usize, pauser: &mut Pauser) -> CallsStep {
    let m = mmap_anon(4 * ps);
    let hole = munmap(m.ret + 2 * ps, ps);
    let a = m.ret as u64;
    let ps64 = ps as u64;
    let prot = call(
        "mprotect",
        libc::SYS_mprotect,
        &[a, 4 * ps64, libc::PROT_READ as u64],
    );
    pauser.pause("after_partial_mprotect");
    let advise = call(
        "madvise",
        libc::SYS_madvise,
        &[a + ps64, 3 * ps64, libc::MADV_DONTFORK as u64],
    );
    pauser.pause("after_partial_madvise");
    for c in [prot, advise] {
        if c.ret != -i64::from(libc::ENOMEM) {
            fail(&format!(
                "{} over a hole returned {}, not -ENOMEM",
                c.name, c.ret
            ));
        }
    }
    munmap(m.ret, 2 * ps);
    munmap(m.ret + 3 * ps, ps);
    let mut step = calls_step(
        "partial",
        &[m],
        &[prot, advise],
        &["after_partial_mprotect", "after_partial_madvise"],
    );
    // The hole, as a call of the step.
    step.calls.insert(
        0,
        Call {
            name: "munmap".into(),
            args: vec![hole.addr as u64, hole.len as u64],
            result: hole.ret,
        },
    );
    step
}

/// Writes one byte at `addr`, a page of a mapping of this step.
fn poke(addr: usize) {
    // SAFETY: `addr` is in a read-write mapping the step made.
    unsafe { ptr::write_volatile(addr as *mut u8, 1) };
}

/// Step 17: files the kernel makes for one purpose, mapped shared (and a
/// memfd privately too): a memfd, /dev/zero (the kernel gives the mapping
/// a shared-memory file of its own), a file of /dev/shm (tmpfs, a device
/// without a major number), and a perf event's ring (an anon inode). /proc
/// names them `/memfd:NAME (deleted)`, `/dev/zero (deleted)`, the file's
/// path, `anon_inode:[perf_event]`.
fn step_kernel_files(ps: usize, pauser: &mut Pauser) -> CallsStep {
    const NAME: &str = "kernel_files";
    let shm_path = CString::new(format!("/dev/shm/mmtrace-workload-{}", std::process::id()))
        .unwrap_or_else(|_| fail("a path without NUL"));
    // A software event counting nothing (PERF_COUNT_SW_DUMMY) of this
    // process on any CPU: perf_event_attr is zero but for type, size and
    // config.
    let mut attr = [0u64; 16];
    attr[0] = 1 | ((attr.len() as u64 * 8) << 32);
    attr[1] = 9;
    // SAFETY: the call reads `attr`, 128 bytes, its size field says so.
    let perf =
        unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0) } as i32;
    // SAFETY: plain fd-returning calls on NUL-terminated strings.
    let (memfd, zero, shm) = unsafe {
        (
            libc::memfd_create(c"mmtrace-workload".as_ptr(), 0),
            libc::open(c"/dev/zero".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC),
            libc::open(
                shm_path.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                0o600,
            ),
        )
    };
    if memfd < 0 || zero < 0 || shm < 0 {
        return skipped(NAME, format!("memfd, /dev/zero or /dev/shm: {}", errno()));
    }
    let len = 2 * ps;
    // SAFETY: sizes of our own new files.
    if unsafe { libc::ftruncate(memfd, len as i64) + libc::ftruncate(shm, len as i64) } != 0 {
        fail(&format!("ftruncate: {}", errno()));
    }
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let mut maps = vec![
        mmap(0, len, rw, libc::MAP_SHARED, memfd, 0),
        mmap(0, len, rw, libc::MAP_PRIVATE, memfd, 0),
        mmap(0, len, rw, libc::MAP_SHARED, zero, 0),
        mmap(0, len, rw, libc::MAP_SHARED, shm, 0),
    ];
    // The ring: a header page and one page of data (a power of two).
    if perf >= 0 {
        maps.push(mmap(0, len, rw, libc::MAP_SHARED, perf, 0));
    }
    for m in &maps[..4] {
        poke(m.ret);
    }
    pauser.pause("after_kernel_files");
    for m in &maps {
        munmap(m.ret, m.len);
    }
    // SAFETY: our own fds and file.
    unsafe {
        libc::unlink(shm_path.as_ptr());
        for fd in [memfd, zero, shm, perf] {
            if fd >= 0 {
                libc::close(fd);
            }
        }
    }
    calls_step(NAME, &maps, &[], &["after_kernel_files"])
}
