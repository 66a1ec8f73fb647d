//! Shared code for the mmtrace end-to-end tests.
//!
//! * The report types written by the `workload` binary (`src/bin/workload.rs`)
//!   and read back by the integration tests (`tests/*.rs`): what the workload
//!   did, with the addresses and results the kernel returned.
//! * Helpers to locate and run the real `mmtrace` binary and to parse its JSONL
//!   output, plus parsers for the value formats of that output (hex addresses,
//!   `prot` strings, `flags` strings), of its lost lines and of its closing
//!   summary on stderr.
//! * [`needs_root!`]: tests that run the real mmtrace skip without root
//!   (failing instead under `cargo xtask test`).
//! * Waiting on conditions ([`wait_until`], [`wait_running`]) rather than for
//!   fixed durations.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

// ---------------------------------------------------------------------------
// Report written by the workload
// ---------------------------------------------------------------------------

/// One `brk` syscall. Addresses are hex strings (`"0x55d0c0a1b000"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrkCall {
    /// The argument passed to brk (`"0x0"` for the query).
    pub requested: String,
    /// The program break before the call (as returned by the previous call).
    /// For the initial query this is the same as its result.
    pub before: String,
    /// The value brk returned (the new break).
    pub result: String,
}

/// One `mmap` syscall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmapCall {
    /// The address hint passed (`"0x0"` when none).
    pub addr: String,
    pub len: u64,
    /// Raw PROT_* bits.
    pub prot: i32,
    /// Raw MAP_* bits.
    pub flags: i32,
    pub fd: i32,
    pub offset: u64,
    /// The mapped address returned by the kernel.
    pub result: String,
}

/// One `munmap` syscall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MunmapCall {
    pub addr: String,
    pub len: u64,
    pub result: i64,
}

/// One `mremap` syscall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MremapCall {
    pub old_addr: String,
    pub old_len: u64,
    pub new_len: u64,
    /// Raw MREMAP_* bits.
    pub flags: i32,
    pub result: String,
}

/// One `mprotect` syscall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MprotectCall {
    pub addr: String,
    pub len: u64,
    /// Raw PROT_* bits.
    pub prot: i32,
    pub result: i64,
}

/// One `pkey_mprotect` syscall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PkeyMprotectCall {
    pub addr: String,
    pub len: u64,
    /// Raw PROT_* bits.
    pub prot: i32,
    pub pkey: i32,
    pub result: i64,
}

/// One `madvise` syscall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MadviseCall {
    pub addr: String,
    pub len: u64,
    pub advice: i32,
    pub result: i64,
}

/// One call of the later steps (mlock and its family, mseal, shmat, shmdt,
/// remap_file_pages, calls that fail part-way): the stream's event name,
/// the raw arguments in the kernel's order and the raw result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub name: String,
    pub args: Vec<u64>,
    /// An address, 0, or -errno.
    pub result: i64,
}

/// Steps 11 to 16: calls that change mappings in ways the earlier steps do
/// not, each step followed by a pause named after it. `skipped` says why a
/// step was not made (the kernel has no such call, or refused it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallsStep {
    /// `mlock`, `mlockall`, `mseal`, `shm`, `remap_file_pages`, `partial`.
    pub name: String,
    pub mmaps: Vec<MmapCall>,
    pub calls: Vec<Call>,
    /// The names of the pauses made during the step, in order.
    pub pauses: Vec<String>,
    pub skipped: Option<String>,
}

/// Step 3: a private read-only mapping of a 3-page regular file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMmapStep {
    /// Canonicalized absolute path of the file.
    pub path: String,
    /// fstat's st_dev split with major()/minor().
    pub dev_major: u32,
    pub dev_minor: u32,
    /// `format!("{:02x}:{:02x}", dev_major, dev_minor)`, as in /proc/PID/maps.
    pub dev: String,
    pub ino: u64,
    pub size: u64,
    /// The mmap call (its `fd` is the read-only fd, closed right after).
    pub mmap: MmapCall,
    /// Result of close(fd) after mapping.
    pub close_result: i64,
    /// The munmap of the whole mapping at the end of the run (before the file
    /// is deleted).
    pub munmap: MunmapCall,
}

/// Step 4: map 4 anonymous pages, unmap the last 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MunmapPartialStep {
    pub mmap: MmapCall,
    pub munmap: MunmapCall,
}

/// Step 5a: map 4 pages, unmap the last 2, grow the first 2 back to 4 pages
/// in place (no MREMAP_MAYMOVE).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MremapInPlaceStep {
    pub mmap: MmapCall,
    pub munmap: MunmapCall,
    pub mremap: MremapCall,
    /// `mremap.result == mremap.old_addr` (checked by the workload).
    pub stayed: bool,
}

/// Step 5b: a 1-page mapping at A with a blocker mapped at A+4096, grown to 2
/// pages with MREMAP_MAYMOVE, which must move it.
///
/// To be sure A+4096 is free for the blocker, the workload maps 2 pages
/// (`reserve`), unmaps the upper one (`reserve_unmap`), leaving the 1-page
/// mapping at A, and then maps the blocker at A+4096 with
/// MAP_FIXED_NOREPLACE (PROT_READ, so that it never merges with A).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MremapMoveStep {
    pub reserve: MmapCall,
    pub reserve_unmap: MunmapCall,
    pub blocker: MmapCall,
    pub mremap: MremapCall,
    /// `mremap.result != mremap.old_addr` (checked by the workload).
    pub moved: bool,
}

/// Step 6: mprotect the middle page of a 3-page RW mapping to PROT_READ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MprotectStep {
    pub mmap: MmapCall,
    pub mprotect: MprotectCall,
}

/// Step 6b: pkey_mprotect the first page of a 2-page RW mapping to
/// PROT_READ with pkey -1 (no key: a plain mprotect, so no protection-key
/// hardware is needed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PkeyMprotectStep {
    pub mmap: MmapCall,
    pub pkey_mprotect: PkeyMprotectCall,
    /// The lines of /proc/self/maps within the mapping, read right after
    /// the call.
    pub maps: Vec<MapsLine>,
}

/// Step 7: map `pages` anonymous pages and write one byte to each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TouchStep {
    pub mmap: MmapCall,
    /// MADV_NOHUGEPAGE on the region, so that every page takes its own fault
    /// even where (m)THP is enabled.
    pub madvise: MadviseCall,
    pub page_size: u64,
    pub pages: u64,
    /// Start of the region (== `mmap.result`).
    pub start: String,
    /// End of the region (exclusive).
    pub end: String,
    /// Minor faults the kernel counted for the thread across the touch loop
    /// (getrusage(RUSAGE_THREAD)): the kernel's own truth.
    pub minflt: u64,
}

/// Step 8: grow the main thread's (process) stack by recursion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackStep {
    /// Start of the `[stack]` line of /proc/self/maps before the recursion.
    pub start_before: String,
    /// Start of the `[stack]` line of /proc/self/maps at the deepest point.
    pub start_deepest: String,
    /// `start_before - start_deepest`.
    pub grown_bytes: u64,
    pub depth: u32,
    pub frame_bytes: u64,
}

/// Step 9: fork; the child maps one page, writes to it, reports and exits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkStep {
    pub child_pid: i32,
    /// The child's mmap (as reported by the child through a pipe; the other
    /// fields are the constants the child used).
    pub child_mmap: MmapCall,
    /// Raw wait status from waitpid.
    pub wait_status: i32,
    /// WIFEXITED ? WEXITSTATUS : null.
    pub exit_code: Option<i32>,
    /// WIFSIGNALED ? WTERMSIG : null.
    pub signal: Option<i32>,
}

/// Step 10: a second thread maps one page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadStep {
    pub tid: i32,
    pub mmap: MmapCall,
}

/// Everything the workload did, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub pid: i32,
    /// The main thread's tid (== pid).
    pub tid: i32,
    pub page_size: u64,
    /// Step 1: [query brk(0), grow by 64 KiB, shrink by 32 KiB].
    pub brk: Vec<BrkCall>,
    /// Step 2: 1 MiB anonymous RW private mapping.
    pub mmap_anon: MmapCall,
    pub mmap_file: FileMmapStep,
    pub munmap_partial: MunmapPartialStep,
    pub mremap_in_place: MremapInPlaceStep,
    pub mremap_move: MremapMoveStep,
    pub mprotect: MprotectStep,
    /// None where the kernel has no pkey_mprotect (ENOSYS).
    pub pkey_mprotect: Option<PkeyMprotectStep>,
    pub touch: TouchStep,
    pub stack: StackStep,
    pub fork: ForkStep,
    pub thread: ThreadStep,
    /// Steps 11 to 16, in order.
    #[serde(default)]
    pub calls: Vec<CallsStep>,
    /// The pauses made with `--pause-ms N` (N > 0), in order; empty without.
    #[serde(default)]
    pub pauses: Vec<Pause>,
}

/// What `untraced` (src/bin/untraced.rs) did: a change mmtrace is told
/// not to see, then the next memory event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UntracedReport {
    pub pid: i32,
    pub page_size: u64,
    /// The 3-page mapping whose middle page is advised MADV_DONTFORK
    /// (unseen: it splits the mapping in three).
    pub split: String,
    /// The 1-page read-only mapping made next, between `next_before_ns`
    /// and `next_after_ns` (CLOCK_MONOTONIC).
    pub next: String,
    pub next_before_ns: u64,
    pub next_after_ns: u64,
    /// The lines of /proc/self/maps within the 3-page mapping, at the end.
    pub maps: Vec<MapsLine>,
}

/// One line of /proc/self/maps, as the workload read it during a pause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapsLine {
    /// `"0x..."` (lowercase hex, no padding, like every report address).
    pub start: String,
    /// Exclusive end, `"0x..."`.
    pub end: String,
    /// `rw-p`, `r--s`, ...
    pub perms: String,
    pub offset: u64,
    /// `"fe:00"`, as in maps.
    pub dev: String,
    pub inode: u64,
    /// The path column: a file path, a pseudo path (`[heap]`, `[stack]`,
    /// `[vdso]`, ...), or null for anonymous memory.
    pub path: Option<String>,
}

/// A pause of the workload (`--pause-ms N`): between `before_ns` and
/// `after_ns` (CLOCK_MONOTONIC) it read /proc/self/maps into a buffer
/// allocated in advance, then slept N ms with no memory activity at all (no
/// other thread alive), and resumed at `resume_ns`. So `maps` is the state of
/// the address space during the whole of [`before_ns`, `resume_ns`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// Where in the sequence: `after_brk`, `after_file_mmap`, ... `before_exit`.
    pub name: String,
    pub before_ns: u64,
    pub after_ns: u64,
    pub resume_ns: u64,
    pub maps: Vec<MapsLine>,
}

/// Parse the text of /proc/PID/maps. Addresses become `"0x..."` strings
/// ([`hex_addr`]); an empty path column becomes None.
pub fn parse_proc_maps(text: &str) -> Result<Vec<MapsLine>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_maps_line(l).ok_or_else(|| format!("bad /proc/PID/maps line: {l:?}")))
        .collect()
}

/// One line of /proc/PID/maps:
/// `start-end perms offset dev inode [padding path]`.
pub fn parse_maps_line(line: &str) -> Option<MapsLine> {
    // The five fixed columns are separated by single spaces; the path (which
    // may itself contain spaces) follows after some padding.
    let mut rest = line;
    let mut cols = [""; 5];
    for c in cols.iter_mut() {
        rest = rest.trim_start_matches(' ');
        let end = rest.find(' ').unwrap_or(rest.len());
        *c = &rest[..end];
        rest = &rest[end..];
    }
    let [range, perms, offset, dev, inode] = cols;
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    let path = rest.trim_start_matches(' ');
    if perms.len() != 4 || dev.is_empty() {
        return None;
    }
    Some(MapsLine {
        start: hex_addr(start),
        end: hex_addr(end),
        perms: perms.to_string(),
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev: dev.to_string(),
        inode: inode.parse().ok()?,
        path: (!path.is_empty()).then(|| path.to_string()),
    })
}

/// Format an address the way the report (and mmtrace) does: `0x` + lowercase
/// hex, no padding.
pub fn hex_addr(v: u64) -> String {
    format!("{v:#x}")
}

/// Parse a `"0x..."` address string (as found in the report).
pub fn parse_hex(s: &str) -> Option<u64> {
    let digits = s.strip_prefix("0x")?;
    if digits.is_empty() {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// Parse a report address; panics on a malformed report.
pub fn addr(s: &str) -> u64 {
    parse_hex(s).unwrap_or_else(|| panic!("bad address {s:?} in the workload report"))
}

// ---------------------------------------------------------------------------
// Locating and running mmtrace
// ---------------------------------------------------------------------------

/// The workspace root (parent of this crate).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent directory")
        .to_path_buf()
}

/// Path of the mmtrace binary: `$MMTRACE_BIN` if set, else
/// `<workspace>/target/debug/mmtrace`. Errors (with a message saying how to
/// build it) if it does not exist.
pub fn mmtrace_bin() -> Result<PathBuf, String> {
    let (path, origin) = match std::env::var_os("MMTRACE_BIN") {
        Some(p) if !p.is_empty() => (PathBuf::from(p), "$MMTRACE_BIN"),
        _ => (
            workspace_dir().join("target").join("debug").join("mmtrace"),
            "default location",
        ),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "mmtrace binary not found at {} ({origin}); build it first \
             (e.g. `cargo xtask build` / `cargo build -p tracer`) or set MMTRACE_BIN",
            path.display()
        ))
    }
}

/// Fails (Err) unless running as root: mmtrace needs to load eBPF programs.
pub fn require_root() -> Result<(), String> {
    let euid = euid();
    if euid == 0 {
        Ok(())
    } else {
        Err(format!(
            "these tests run the real mmtrace (eBPF) and must run as root (euid is {euid})"
        ))
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// The environment variable that turns a skipped root test into a failed
/// one. `cargo xtask test` sets it: it runs the tests as root, so a test
/// that finds itself without root there is a broken setup, not a reason to
/// skip.
pub const REQUIRE_ROOT_ENV: &str = "MMTRACE_TESTS_REQUIRE_ROOT";

/// Whether a test that needs root (it runs the real mmtrace) can run.
///
/// As root: true. Otherwise the test should be skipped: prints one line on
/// stderr saying so and returns false, unless [`REQUIRE_ROOT_ENV`] is set
/// (to anything but `0` or nothing), when it panics instead. `crate_name`
/// names the test binary in the message; the test's own name comes from
/// its thread, which libtest names after the test. Use [`needs_root!`].
pub fn root_or_skip(crate_name: &str) -> bool {
    let euid = euid();
    if euid == 0 {
        return true;
    }
    let thread = std::thread::current();
    let test = match thread.name() {
        Some(name) if name != "main" => format!("{crate_name}::{name}"),
        _ => format!("a test of {crate_name}"),
    };
    let required = std::env::var_os(REQUIRE_ROOT_ENV).is_some_and(|v| !v.is_empty() && v != "0");
    if required {
        panic!(
            "{test} needs root, but runs with euid {euid} although {REQUIRE_ROOT_ENV} is set \
             (`cargo xtask test` sets it so that no root test is ever skipped)"
        );
    }
    // Straight to stderr: libtest captures eprintln! of passing tests.
    let line =
        format!("skipping {test}: needs root (euid {euid}); run `cargo xtask test` as root\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    false
}

/// At the top of a test that needs root: returns from the test (skips it,
/// with one line on stderr) when not root, unless [`REQUIRE_ROOT_ENV`] is
/// set, when the test fails. See [`root_or_skip`].
#[macro_export]
macro_rules! needs_root {
    () => {
        if !$crate::root_or_skip(env!("CARGO_CRATE_NAME")) {
            return;
        }
    };
}

/// Set (to anything but `0` or nothing) when the tests run on an emulated
/// machine, 10 or more times slower than real hardware:
/// `cargo xtask test --kernel` sets it in its qemu guests.
pub const EMULATED_ENV: &str = "MMTRACE_TESTS_EMULATED";

/// Whether a test whose workload is too big for an emulated machine runs:
/// false (with one line on stderr saying why) under [`EMULATED_ENV`]. For
/// tests of mmtrace's own limits, which do not depend on the kernel. Use
/// [`skip_when_emulated!`].
pub fn run_unless_emulated(crate_name: &str, why: &str) -> bool {
    if !std::env::var_os(EMULATED_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
        return true;
    }
    let thread = std::thread::current();
    let test = match thread.name() {
        Some(name) if name != "main" => format!("{crate_name}::{name}"),
        _ => format!("a test of {crate_name}"),
    };
    let line = format!("skipping {test}: {why} (under emulation: {EMULATED_ENV} is set)\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    false
}

/// At the top of a test too big for an emulated machine: returns from the
/// test (skips it, with one line on stderr saying `why`) under
/// [`EMULATED_ENV`]. See [`run_unless_emulated`].
#[macro_export]
macro_rules! skip_when_emulated {
    ($why:expr) => {
        if !$crate::run_unless_emulated(env!("CARGO_CRATE_NAME"), $why) {
            return;
        }
    };
}

/// The result of one mmtrace invocation.
#[derive(Debug)]
pub struct MmtraceRun {
    /// The full command line, for messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The output file, parsed line by line (empty when not parsed).
    pub events: Vec<Value>,
}

/// Serializes mmtrace runs within one test binary: two tracers at once would
/// compete for the CPUs and make `lost` events more likely.
static MMTRACE_LOCK: Mutex<()> = Mutex::new(());

/// Default time limit for one mmtrace run.
pub const MMTRACE_TIMEOUT: Duration = Duration::from_secs(180);

/// Run `mmtrace ARGS...` (no parsing of any output file). Kills it and
/// returns an error after `timeout`.
pub fn run_mmtrace_raw<I, S>(args: I, timeout: Duration) -> Result<MmtraceRun, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_mmtrace_env(args, &[], timeout)
}

/// [`run_mmtrace_raw`] with these variables added to mmtrace's environment.
pub fn run_mmtrace_env<I, S>(
    args: I,
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<MmtraceRun, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let bin = mmtrace_bin()?;
    require_root()?;
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let command = env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .chain(
            std::iter::once(bin.as_os_str())
                .chain(args.iter().map(|a| a.as_os_str()))
                .map(|a| a.to_string_lossy().into_owned()),
        )
        .collect::<Vec<_>>()
        .join(" ");

    let _guard = MMTRACE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // A process group of its own, so a time-out ends mmtrace's command too:
    // it holds the output pipes open.
    let mut child = Command::new(&bin)
        .args(&args)
        .envs(env.iter().copied())
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `{command}`: {e}"))?;

    // Drain both pipes on threads so a chatty mmtrace cannot block.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });

    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                kill_group(child.id());
                let _ = child.kill();
                let _ = child.wait();
                let stderr =
                    String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
                return Err(format!(
                    "`{command}` did not finish within {timeout:?}; killed it.\nstderr:\n{stderr}"
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for `{command}`: {e}")),
        }
    };
    let stdout = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
    Ok(MmtraceRun {
        command,
        status,
        stdout,
        stderr,
        events: Vec::new(),
    })
}

/// SIGKILL to the process group `pgid` (a child started with
/// `process_group(0)`): mmtrace and the command it started.
fn kill_group(pgid: u32) {
    if let Ok(pgid) = libc::pid_t::try_from(pgid) {
        // SAFETY: kill(2) with a negative pid signals that group only.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

/// The pid of the command in mmtrace's `tracing CMD (pid N) and its
/// descendants ...` line on stderr; None for another line.
pub fn traced_pid(line: &str) -> Option<i32> {
    let (_, rest) = line.split_once("tracing ")?;
    let (_, rest) = rest.rsplit_once(" (pid ")?;
    let (pid, _) = rest.split_once(") and its descendants")?;
    pid.parse().ok()
}

/// What /proc/PID/stat says of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub comm: String,
    /// `R`, `S`, `T` (stopped), `Z`, ...
    pub state: char,
    /// Minor faults so far.
    pub minflt: u64,
}

/// /proc/PID/stat, or None when the process is gone.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // A comm need not be UTF-8.
    let stat = String::from_utf8_lossy(&stat);
    // The comm (field 2) is in parentheses and may hold anything.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let mut rest = stat.get(close + 2..)?.split(' ');
    let state = rest.next()?.chars().next()?;
    // After the state: ppid pgrp session tty_nr tpgid flags minflt.
    let minflt = rest.nth(6)?.parse().ok()?;
    Some(ProcStat {
        comm: stat[open + 1..close].to_string(),
        state,
        minflt,
    })
}

/// Polls `cond` every 10 ms until it holds. Err, saying `what` was awaited,
/// after `timeout` (make it generous: the machine may be slow and busy).
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("waited {timeout:?} for {what}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until the command mmtrace started with pid `pid` runs `comm`
/// (it has exec'd) and is neither stopped nor dead.
pub fn wait_running(pid: i32, comm: &str) -> Result<(), String> {
    let mut last = None;
    wait_until(
        Duration::from_secs(60),
        &format!("pid {pid} to run {comm} unstopped"),
        || {
            last = proc_stat(pid);
            last.as_ref()
                .is_some_and(|s| s.comm == comm && !"TtZX".contains(s.state))
        },
    )
    .map_err(|e| format!("{e}; last seen: {last:?}"))
}

/// Parse JSONL text: one JSON object per non-empty line.
pub fn parse_jsonl(text: &str) -> Result<Vec<Value>, String> {
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .map_err(|e| format!("line {} is not valid JSON ({e}): {line}", i + 1))?;
        if !v.is_object() {
            return Err(format!("line {} is not a JSON object: {line}", i + 1));
        }
        events.push(v);
    }
    Ok(events)
}

/// Read and parse a JSONL file.
pub fn read_jsonl(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read mmtrace output {}: {e}", path.display()))?;
    parse_jsonl(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Run `mmtrace stream --format jsonl --faults all --output EVENTS -- CMD...`
/// and parse EVENTS. An existing EVENTS file is removed first.
pub fn run_stream<S: AsRef<OsStr>>(events: &Path, cmd: &[S]) -> Result<MmtraceRun, String> {
    let _ = std::fs::remove_file(events);
    let mut args: Vec<OsString> = ["stream", "--format", "jsonl", "--faults", "all", "--output"]
        .iter()
        .map(OsString::from)
        .collect();
    args.push(events.as_os_str().to_owned());
    args.push("--".into());
    args.extend(cmd.iter().map(|a| a.as_ref().to_owned()));
    let mut run = run_mmtrace_raw(&args, MMTRACE_TIMEOUT)?;
    run.events = read_jsonl(events).map_err(|e| {
        format!(
            "{e}\n`{}` exited with {}; stderr:\n{}",
            run.command, run.status, run.stderr
        )
    })?;
    Ok(run)
}

/// Run `mmtrace record --output TIMELINE OPTIONS... -- CMD...` (an existing
/// TIMELINE is removed first). The timeline is not read: see
/// [`read_timeline`].
pub fn run_record<O, C>(timeline: &Path, options: &[O], cmd: &[C]) -> Result<MmtraceRun, String>
where
    O: AsRef<OsStr>,
    C: AsRef<OsStr>,
{
    let _ = std::fs::remove_file(timeline);
    let mut args: Vec<OsString> = vec!["record".into(), "--output".into()];
    args.push(timeline.as_os_str().to_owned());
    args.extend(options.iter().map(|a| a.as_ref().to_owned()));
    args.push("--".into());
    args.extend(cmd.iter().map(|a| a.as_ref().to_owned()));
    run_mmtrace_raw(&args, MMTRACE_TIMEOUT)
}

/// The schema name of the recordings `mmtrace record` writes by default.
pub const TIMELINE_V2: &str = "mmtrace.timeline/v2";

/// Read a timeline as a `mmtrace.timeline/v1` document (a JSON value): a
/// v1 file as it is, a v2 recording (JSON Lines) assembled into the v1
/// shape by [`assemble_v2`] (with `"assembled_from": "mmtrace.timeline/v2"`).
pub fn read_timeline(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the timeline {}: {e}", path.display()))?;
    if text.starts_with("{\"type\":\"header\"") {
        let lines = parse_jsonl(&text)
            .map_err(|e| format!("the timeline {} is not JSON Lines: {e}", path.display()))?;
        return assemble_v2(&lines).map_err(|e| format!("the timeline {}: {e}", path.display()));
    }
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("the timeline {} is not valid JSON: {e}", path.display()))?;
    if !v.is_object() {
        return Err(format!(
            "the timeline {} is not a JSON object",
            path.display()
        ));
    }
    Ok(v)
}

/// A v2 recording's records (header first, end record last) assembled into
/// a v1 document: processes in order of first sight, each with its regions
/// in order of birth, each region's history from its region records. The
/// fault buckets of v1 are not in v2 (`bucket_ns` 0, no buckets). Fails
/// when the recording is not complete (no end record).
pub fn assemble_v2(records: &[Value]) -> Result<Value, String> {
    use serde_json::json;
    let header = records.first().ok_or("no records")?;
    if header["type"] != "header" || header["schema"] != TIMELINE_V2 {
        return Err(format!("the first record is not a v2 header: {header}"));
    }
    let end = records
        .last()
        .filter(|r| r["type"] == "end")
        .ok_or("no end record: incomplete")?;
    // Processes by their number; regions by (process, id) -> index.
    let mut procs: BTreeMap<u64, Value> = BTreeMap::new();
    let mut index: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    let num = |v: &Value| v.as_u64().unwrap_or(0);
    for (i, r) in records.iter().enumerate().skip(1) {
        let what = || format!("record {} ({r})", i + 1);
        let proc = num(&r["proc"]);
        let p = || {
            json!({
                "pid": r["pid"], "start_time": null, "ppid": null, "comm": "", "exe": null,
                "abi": null, "shared_with": null, "seeded_by": "proc", "exec_at_ns": null,
                "exit_at_ns": null,
                "exit_code": null, "exit_signal": null, "oom_kill_ns": null,
                "regions": [], "counters": [],
                "drift": [], "checks": [], "uncertain": [],
            })
        };
        match r["type"].as_str() {
            Some("process") => {
                let pv = procs.entry(proc).or_insert_with(p);
                for f in ["ppid", "comm", "exe", "abi", "shared_with"] {
                    if r.get(f).is_some() {
                        pv[f] = r[f].clone();
                    }
                }
                if let Some(st) = r.get("start_time") {
                    pv["start_time"] = st.clone();
                }
                if let Some(kill) = r.get("oom_kill_ns") {
                    pv["oom_kill_ns"] = kill.clone();
                }
                match r["event"].as_str() {
                    Some("start") => {
                        pv["seeded_by"] = r["seeded_by"].clone();
                        if r["seeded_by"] == "exec" {
                            pv["exec_at_ns"] = r["t_ns"].clone();
                        }
                    }
                    Some("exec") => {
                        pv["exec_at_ns"] = r["t_ns"].clone();
                        if let Some(s) = r.get("seeded_by") {
                            pv["seeded_by"] = s.clone();
                        }
                    }
                    Some("exit") => {
                        pv["exit_at_ns"] = r["t_ns"].clone();
                        pv["exit_code"] = r.get("exit_code").cloned().unwrap_or(Value::Null);
                        pv["exit_signal"] = r.get("exit_signal").cloned().unwrap_or(Value::Null);
                    }
                    Some("end") => {}
                    _ => return Err(format!("{}: unknown process event", what())),
                }
            }
            Some("region") => {
                let pv = procs.entry(proc).or_insert_with(p);
                let id = num(&r["region"]);
                let op = r["op"].as_str().unwrap_or("");
                let regions = pv["regions"].as_array_mut().ok_or("regions")?;
                if op == "born" {
                    let b = &r["born"];
                    index.insert((proc, id), regions.len());
                    regions.push(json!({
                        "id": id, "start": r["start"], "end": r["end"], "perms": r["perms"],
                        "kind": b["kind"], "path": b["path"], "offset": b["offset"],
                        "dev": b["dev"], "inode": b["inode"], "born_ns": r["t_ns"],
                        "born_by": r["cause"], "parent": b["parent"], "died_ns": null,
                        "died_by": null, "history": [], "faults": null,
                    }));
                }
                let at = *index
                    .get(&(proc, id))
                    .ok_or_else(|| format!("{}: a region never born", what()))?;
                let reg = &mut regions[at];
                for f in ["start", "end", "perms"] {
                    reg[f] = r[f].clone();
                }
                match op {
                    "died" | "end" => {
                        if op == "died" {
                            let born = num(&reg["born_ns"]);
                            reg["died_ns"] = json!(num(&r["t_ns"]).max(born));
                            reg["died_by"] = r["cause"].clone();
                        }
                        let mut f = r["faults"].clone();
                        if let Some(o) = f.as_object_mut() {
                            o.remove("last_ns");
                            o.insert("bucket_ns".into(), json!(0));
                            o.insert("buckets".into(), json!([]));
                        }
                        reg["faults"] = f;
                    }
                    _ => {
                        let entry = json!({
                            "t_ns": r["t_ns"], "op": op, "start": r["start"],
                            "end": r["end"], "perms": r["perms"],
                        });
                        reg["history"].as_array_mut().ok_or("history")?.push(entry);
                        // v1's kind is the region's at its end.
                        if matches!(reg["kind"].as_str(), Some("anon" | "guard")) {
                            reg["kind"] = json!(if r["perms"] == "---p" {
                                "guard"
                            } else {
                                "anon"
                            });
                        }
                    }
                }
            }
            Some("counters") => {
                let pv = procs.entry(proc).or_insert_with(p);
                pv["counters"]
                    .as_array_mut()
                    .ok_or("counters")?
                    .push(json!({
                        "t_ns": r["t_ns"], "mapped": r["mapped"], "heap": r["heap"],
                        "stack": r["stack"], "rss": r["rss"], "faults": r["faults"],
                    }));
            }
            Some("check") => {
                // A check voided by a change near its read is made again;
                // an exit check that compared nothing is a check (v1 too).
                if r["void"] == true && r.get("void_reason").is_none() {
                    continue;
                }
                let pv = procs.entry(proc).or_insert_with(p);
                pv["checks"].as_array_mut().ok_or("checks")?.push(json!({
                    "t_ns": r["t_ns"], "reason": r["reason"], "regions": r["regions"],
                    "drift": r["drift"],
                    "against": r.get("against").cloned().unwrap_or(json!("maps")),
                    "void": r.get("void_reason").cloned().unwrap_or(Value::Null),
                }));
            }
            Some("drift") => {
                let pv = procs.entry(proc).or_insert_with(p);
                pv["drift"].as_array_mut().ok_or("drift")?.push(json!({
                    "t_ns": r["t_ns"], "kind": r["kind"], "model": r["model"],
                    "kernel": r["kernel"],
                    "fields": r.get("fields").cloned().unwrap_or(json!([])),
                    "counters": r.get("counters").cloned().unwrap_or(Value::Null),
                }));
            }
            Some("uncertain") => {
                let pv = procs.entry(proc).or_insert_with(p);
                pv["uncertain"]
                    .as_array_mut()
                    .ok_or("uncertain")?
                    .push(json!({
                        "from_ns": r["from_ns"], "to_ns": r["to_ns"],
                    }));
            }
            Some("lost") => {}
            Some("end") if i + 1 == records.len() => {}
            _ => return Err(format!("{}: unexpected record", what())),
        }
    }
    // A region whose process left the model before its death or end
    // record (a seed forgotten at exec) has no faults: none known.
    let mut processes: Vec<Value> = procs.into_values().collect();
    for p in &mut processes {
        // A seed read after an exec the model had not applied yet, dropped
        // at the exec (born by proc, died by exec at its birth): not in v1.
        if let Some(regions) = p["regions"].as_array_mut() {
            regions.retain(|r| {
                !(r["born_by"] == "proc" && r["died_by"] == "exec" && r["died_ns"] == r["born_ns"])
            });
        }
        for r in p["regions"].as_array_mut().into_iter().flatten() {
            if r["faults"].is_null() {
                r["faults"] = json!({
                    "total": 0, "read": 0, "write": 0, "exec": 0, "present": 0,
                    "first_ns": null, "touched_bytes": 0, "mapped_bytes": 0,
                    "bucket_ns": 0, "buckets": [],
                });
            }
        }
    }
    Ok(json!({
        "schema": "mmtrace.timeline/v1",
        "assembled_from": TIMELINE_V2,
        "started_at": header["started_at"],
        "monotonic_start_ns": header["monotonic_start_ns"],
        "duration_ns": end["duration_ns"],
        "host": header["host"],
        "kernel": header["kernel"],
        "command": header["command"],
        "lost_events": end["lost_events"],
        "lost_by_kind": end["lost_by_kind"],
        "stack_source": end["stack_source"],
        "processes": processes,
    }))
}

// ---------------------------------------------------------------------------
// Decoding mmtrace's value formats
// ---------------------------------------------------------------------------

/// Parse an address field of an event: must be a string `0x` + lowercase hex
/// with no leading zeros (`"0x0"` for zero). Err describes the problem.
pub fn event_addr(v: &Value) -> Result<u64, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("address {v} is not a string"))?;
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| format!("address {s:?} does not start with 0x"))?;
    if digits.is_empty()
        || !digits
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!("address {s:?} is not lowercase hex"));
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return Err(format!("address {s:?} is zero-padded"));
    }
    u64::from_str_radix(digits, 16).map_err(|e| format!("address {s:?}: {e}"))
}

/// Parse a `prot` field, which must be a string in mmtrace's format:
/// `r`, `w`, `x` or `-` in that order, as in /proc/PID/maps (`"rw-"`), then
/// any other bits after `|`, by name (`PROT_SEM`, `PROT_GROWSDOWN`,
/// `PROT_GROWSUP`) or, when unknown, in lowercase hex (`"rw-|PROT_GROWSDOWN"`).
/// Anything else (an integer, `PROT_READ|PROT_WRITE`, `"wr-"`) is None.
pub fn parse_prot(v: &Value) -> Option<i32> {
    let s = v.as_str()?;
    let mut parts = s.split('|');
    let base = parts.next()?.as_bytes();
    if base.len() != 3 {
        return None;
    }
    let mut prot = 0;
    for (c, (letter, bit)) in base.iter().zip([
        (b'r', libc::PROT_READ),
        (b'w', libc::PROT_WRITE),
        (b'x', libc::PROT_EXEC),
    ]) {
        match *c {
            b'-' => {}
            c if c == letter => prot |= bit,
            _ => return None,
        }
    }
    for part in parts {
        prot |= flag_token(part, PROT_EXTRA_NAMES)?;
    }
    Some(prot)
}

/// PROT_* bits `prot` shows by name after the letters.
const PROT_EXTRA_NAMES: &[(&str, i32)] = &[
    ("PROT_SEM", 0x8),
    ("PROT_GROWSDOWN", libc::PROT_GROWSDOWN),
    ("PROT_GROWSUP", libc::PROT_GROWSUP),
];

/// The MAP_* names mmtrace prints in `flags` of mmap events (but the huge
/// page sizes, `MAP_HUGE_2MB` and such, which no test uses).
pub const MMAP_FLAG_NAMES: &[(&str, i32)] = &[
    ("MAP_SHARED", 0x01),
    ("MAP_PRIVATE", 0x02),
    ("MAP_SHARED_VALIDATE", 0x03),
    ("MAP_DROPPABLE", 0x08),
    ("MAP_FIXED", 0x10),
    ("MAP_ANONYMOUS", 0x20),
    ("MAP_32BIT", 0x40),
    ("MAP_GROWSDOWN", 0x100),
    ("MAP_DENYWRITE", 0x800),
    ("MAP_EXECUTABLE", 0x1000),
    ("MAP_LOCKED", 0x2000),
    ("MAP_NORESERVE", 0x4000),
    ("MAP_POPULATE", 0x8000),
    ("MAP_NONBLOCK", 0x10000),
    ("MAP_STACK", 0x20000),
    ("MAP_HUGETLB", 0x40000),
    ("MAP_SYNC", 0x80000),
    ("MAP_FIXED_NOREPLACE", 0x100000),
    ("MAP_UNINITIALIZED", 0x4000000),
];

/// The MREMAP_* names mmtrace prints in `flags` of mremap events.
pub const MREMAP_FLAG_NAMES: &[(&str, i32)] = &[
    ("MREMAP_MAYMOVE", 1),
    ("MREMAP_FIXED", 2),
    ("MREMAP_DONTUNMAP", 4),
];

/// Parse a `flags` field, which must be a string in mmtrace's format:
/// names from `names` joined with `|` (`"MAP_PRIVATE|MAP_ANONYMOUS"`),
/// unknown bits as one lowercase hex token (`"MAP_PRIVATE|0x200"`), and
/// `"0"` for no flags. Anything else (an integer, a number in decimal,
/// spaces, an empty token, an unknown name) is None.
pub fn parse_flags(v: &Value, names: &[(&str, i32)]) -> Option<i32> {
    let s = v.as_str()?;
    if s == "0" {
        return Some(0);
    }
    let mut bits = 0;
    for part in s.split('|') {
        bits |= flag_token(part, names)?;
    }
    Some(bits)
}

/// The mapping types of mmap's flags: values of the low 4 bits, not bits.
const MAP_TYPES: &[&str] = &[
    "MAP_SHARED",
    "MAP_PRIVATE",
    "MAP_SHARED_VALIDATE",
    "MAP_DROPPABLE",
];

/// One `|`-separated token of a flags string: a name from `names`, or
/// leftover bits as `0x` + lowercase hex without leading zeros, none of
/// which has a name (those are always shown by name).
fn flag_token(tok: &str, names: &[(&str, i32)]) -> Option<i32> {
    if let Some(&(_, bits)) = names.iter().find(|(n, _)| *n == tok) {
        return Some(bits);
    }
    let digits = tok.strip_prefix("0x")?;
    let canonical = !digits.is_empty()
        && !digits.starts_with('0')
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !canonical {
        return None;
    }
    let bits = i32::try_from(u64::from_str_radix(digits, 16).ok()?).ok()?;
    let named = names
        .iter()
        .filter(|(n, b)| b.count_ones() == 1 && !MAP_TYPES.contains(n))
        .fold(0, |acc, (_, b)| acc | b);
    (bits & named == 0).then_some(bits)
}

// ---------------------------------------------------------------------------
// Event kinds, lost events and the closing summary
// ---------------------------------------------------------------------------

/// The `event` of every line `mmtrace stream --format jsonl` prints, as in
/// README's JSONL table (`stream --regions` adds `region`).
pub const STREAM_EVENTS: &[&str] = &[
    "brk",
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "pkey_mprotect",
    "madvise",
    "mlock",
    "mlock2",
    "munlock",
    "mlockall",
    "munlockall",
    "mseal",
    "shmat",
    "shmdt",
    "remap_file_pages",
    "userfaultfd",
    "fault",
    "fault_summary",
    "stack",
    "exec",
    "fork",
    "exit",
    "oom_kill",
    "lost",
];

/// Whether `kind` names events the kernel sends through the ring buffer,
/// and so can lose: every one of [`STREAM_EVENTS`] but the lines mmtrace
/// makes itself (`fault_summary`, from counters kept in the kernel, and
/// `lost`). These are the `kind`s of `lost` lines and the kinds the closing
/// summary counts.
pub fn is_ring_event(kind: &str) -> bool {
    STREAM_EVENTS.contains(&kind) && !["fault_summary", "lost"].contains(&kind)
}

/// The `lost` lines of a JSONL stream, summed by kind. Each must have a
/// `count` of at least 1 and a `kind` for which [`is_ring_event`] holds;
/// Err names the first line that does not.
pub fn lost_in_stream(events: &[Value]) -> Result<BTreeMap<String, u64>, String> {
    let mut lost = BTreeMap::new();
    for e in events.iter().filter(|e| e["event"] == "lost") {
        let count = e["count"]
            .as_u64()
            .filter(|&c| c > 0)
            .ok_or_else(|| format!("a lost line without a positive integer count: {e}"))?;
        let kind = e["kind"]
            .as_str()
            .filter(|k| is_ring_event(k))
            .ok_or_else(|| format!("a lost line without the kind of an event: {e}"))?;
        *lost.entry(kind.to_string()).or_default() += count;
    }
    Ok(lost)
}

/// mmtrace's closing line on stderr:
/// `mmtrace: 1092 events in 0.05 s, brk 11, exec 1, ...; lost 0; command exited (code 0)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Every event counted (fault summaries and lost lines included).
    pub events: u64,
    pub seconds: f64,
    /// The events by kind, as listed (fault summaries and lost lines are
    /// not listed).
    pub by_kind: BTreeMap<String, u64>,
    /// Events lost in the kernel.
    pub lost: u64,
    /// Malformed records (0 when the line does not say).
    pub malformed: u64,
    /// Failures of the kernel programs (0 when the line does not say).
    pub errors: u64,
    /// How the run ended, when the line says: `command exited (code 0)`,
    /// `stopped by SIGTERM`, `stopped after --duration`, `stopped: the
    /// output is closed`, the last three maybe followed by what became of
    /// the command (` (command pid N left running)`).
    pub end: Option<String>,
}

/// How the last section of a closing summary starts.
const END_STARTS: &[&str] = &[
    "command exited (",
    "stopped by SIG",
    "stopped after --duration",
    "stopped: the output is closed",
];

/// Parse one closing summary line exactly: `mmtrace: N events in S s`, then
/// `, KIND N` for each kind (kinds of [`is_ring_event`], in name order),
/// then `; lost N`, then maybe `; malformed N`, then maybe `; errors N`,
/// then maybe how it ended.
pub fn parse_summary_line(line: &str) -> Result<Summary, String> {
    let bad = |why: &str| format!("not a closing summary ({why}): {line:?}");
    let rest = line
        .strip_prefix("mmtrace: ")
        .ok_or_else(|| bad("no `mmtrace: `"))?;
    let mut sections = rest.split("; ");
    let mut counts = sections.next().unwrap_or("").split(", ");
    let head: Vec<&str> = counts.next().unwrap_or("").split(' ').collect();
    let (events, seconds) = match head[..] {
        [n, "events", "in", secs, "s"] => (
            n.parse::<u64>().map_err(|_| bad("event count"))?,
            secs.parse::<f64>().map_err(|_| bad("seconds"))?,
        ),
        _ => return Err(bad("no `N events in S s`")),
    };
    let mut by_kind = BTreeMap::new();
    for c in counts {
        let (kind, n) = c.split_once(' ').ok_or_else(|| bad("a kind count"))?;
        if !is_ring_event(kind) {
            return Err(bad(&format!("unknown kind {kind:?}")));
        }
        let n = n.parse::<u64>().map_err(|_| bad("a kind count"))?;
        if by_kind.insert(kind.to_string(), n).is_some() {
            return Err(bad(&format!("{kind} twice")));
        }
    }
    if by_kind.values().sum::<u64>() > events {
        return Err(bad("more events by kind than in all"));
    }
    let lost = sections
        .next()
        .and_then(|s| s.strip_prefix("lost "))
        .ok_or_else(|| bad("no `; lost N` after the counts"))?
        .parse::<u64>()
        .map_err(|_| bad("lost count"))?;
    let mut malformed = 0;
    let mut errors = 0;
    let mut end = None;
    for s in sections {
        if let Some(n) = s.strip_prefix("malformed ") {
            if end.is_some() || malformed > 0 || errors > 0 {
                return Err(bad("malformed out of place"));
            }
            malformed = n.parse().map_err(|_| bad("malformed count"))?;
        } else if let Some(n) = s.strip_prefix("errors ") {
            if end.is_some() || errors > 0 {
                return Err(bad("errors out of place"));
            }
            errors = n.parse().map_err(|_| bad("errors count"))?;
            if errors == 0 {
                return Err(bad("errors 0 is never printed"));
            }
        } else if end.is_none() && END_STARTS.iter().any(|e| s.starts_with(e)) {
            end = Some(s.to_string());
        } else {
            return Err(bad(&format!("unexpected {s:?}")));
        }
    }
    Ok(Summary {
        events,
        seconds,
        by_kind,
        lost,
        malformed,
        errors,
        end,
    })
}

/// The closing summary in mmtrace's stderr: the one line that starts with
/// `mmtrace: ` and has ` events in `, parsed by [`parse_summary_line`].
/// Err when there is none, more than one, or it does not parse (it has no
/// lost figure, say).
pub fn closing_summary(stderr: &str) -> Result<Summary, String> {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("mmtrace: ") && l.contains(" events in "))
        .collect();
    match lines[..] {
        [line] => parse_summary_line(line),
        [] => Err(format!("no closing summary on stderr:\n{stderr}")),
        _ => Err(format!(
            "{} closing summaries on stderr:\n{stderr}",
            lines.len()
        )),
    }
}

// ---------------------------------------------------------------------------
// Viewers: a real browser for the HTML report, Perfetto's schema for traces
// ---------------------------------------------------------------------------

/// What Chromium and Perfetto's own schema make of mmtrace's outputs.
pub mod viewers {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::process::Command;

    use serde_json::Value;

    use crate::workspace_dir;

    /// The page as Chromium leaves it after its scripts ran (`--dump-dom`),
    /// and Chromium's stderr (console messages and script errors are logged
    /// there with `--enable-logging=stderr`).
    pub fn load_in_chromium(page: &Path, fragment: &str, profile: &Path) -> (String, String) {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("chromium is missing: `cargo xtask setup` installs it (Debian's `chromium`)");
        let out = Command::new("timeout")
            .arg("120")
            .arg(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--enable-logging=stderr",
                "--v=0",
                "--virtual-time-budget=10000",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--dump-dom")
            .arg(format!("file://{}{fragment}", page.display()))
            .output()
            .unwrap_or_else(|e| panic!("{chromium}: {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "chromium failed: {stderr}");
        (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    }

    /// The text of the element that starts with `open` in serialized HTML.
    pub fn element_text(dom: &str, open: &str) -> String {
        let start = dom
            .find(open)
            .unwrap_or_else(|| panic!("no {open} in the page"));
        let body = &dom[start..];
        let body = &body[body.find('>').unwrap() + 1..];
        let text = &body[..body.find("</").unwrap()];
        text.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&nbsp;", "\u{a0}")
            .replace("&amp;", "&")
    }

    /// Loads the page with `fragment` and checks that it ran cleanly; returns
    /// the DOM and what the page says it drew.
    pub fn load_checked(page: &Path, fragment: &str, profile: &Path) -> (String, Value) {
        let (dom, log) = load_in_chromium(page, fragment, profile);
        for line in log.lines() {
            assert!(
                !line.contains("CONSOLE") && !line.contains("Uncaught"),
                "the page logged: {line}"
            );
        }
        assert!(
            dom.contains("data-status=\"ok\""),
            "the page did not finish: {dom:.2000}"
        );
        assert!(
            dom.contains("<pre id=\"errors\" hidden=\"\"></pre>"),
            "script errors: {}",
            element_text(&dom, "<pre id=\"errors\"")
        );
        let drawn = serde_json::from_str(&element_text(&dom, "<pre id=\"mmtrace-drawn\"")).unwrap();
        (dom, drawn)
    }

    /// The trace as Perfetto's schema reads it (see tests/perfetto/check.py).
    pub fn read_with_perfetto_schema(trace: &Path) -> Value {
        let root = workspace_dir();
        let python = root.join("target/perfetto-py/bin/python");
        assert!(
            python.exists(),
            "{} is missing: `cargo xtask setup` installs Perfetto's Python package there",
            python.display()
        );
        let out = Command::new(&python)
            .arg(root.join("tests/perfetto/check.py"))
            .arg(trace)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
        assert!(
            out.status.success(),
            "check.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// How many times each item occurs.
    fn tally<T: Ord>(items: impl IntoIterator<Item = T>) -> BTreeMap<T, usize> {
        let mut m = BTreeMap::new();
        for i in items {
            *m.entry(i).or_insert(0) += 1;
        }
        m
    }

    fn s(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }

    /// The trace `doc` (as check.py read it) holds what the timeline `lines`
    /// says, record for record.
    pub fn check_against_timeline(lines: &[Value], doc: &Value) {
        let tracks = doc["tracks"].as_object().unwrap();
        let track = |uuid: &Value| &tracks[&uuid.as_u64().unwrap().to_string()];
        // Processes: one track each, with its pid.
        let mut pids_by_proc = BTreeMap::new();
        for l in lines.iter().filter(|l| l["proc"].is_u64()) {
            pids_by_proc.insert(l["proc"].as_u64().unwrap(), l["pid"].as_u64().unwrap());
        }
        let process_tracks: Vec<u64> = tracks.values().filter_map(|t| t["pid"].as_u64()).collect();
        assert_eq!(
            tally(process_tracks),
            tally(pids_by_proc.values().copied()),
            "process tracks by pid"
        );

        // Regions: a slice from birth to death, named by path (or kind) and
        // range, with the arguments of its birth and death, on a track under
        // its kind's lane under its process.
        let mut born: BTreeMap<(u64, u64), &Value> = BTreeMap::new();
        let mut want = Vec::new();
        let mut want_instants = Vec::new();
        let mut want_uncertain = Vec::new();
        let mut want_counters: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
        for l in lines {
            let key = (
                l["proc"].as_u64().unwrap_or(0),
                l["region"].as_u64().unwrap_or(0),
            );
            match (l["type"].as_str().unwrap_or(""), l["op"].as_str()) {
                ("region", Some("born")) => {
                    born.insert(key, l);
                }
                ("region", Some("died" | "end")) => {
                    let b = born.remove(&key).expect("a region ends after its birth");
                    let kind = b["born"]["kind"].as_str().unwrap_or("anon");
                    let range = format!("{}-{}", s(&b["start"]), s(&b["end"]));
                    let name = match b["born"]["path"].as_str() {
                        Some(path) => format!("{path} {range}"),
                        None => format!("[{kind}] {range}"),
                    };
                    want.push((
                        name,
                        b["t_ns"].as_u64().unwrap(),
                        l["t_ns"].as_u64().unwrap(),
                        s(&b["perms"]),
                        s(&b["cause"]),
                        s(&l["cause"]),
                        format!("{kind} {range}"),
                        kind.to_owned(),
                        b["pid"].as_u64().unwrap(),
                    ));
                }
                ("region", Some(op)) => want_instants.push(op.to_owned()),
                ("process", _) if l["event"] == "start" && l["seeded_by"] == "fork" => {
                    want_instants.push("fork".to_owned());
                }
                ("process", _) => {
                    want_instants.push(s(&l["event"]));
                    // An OOM kill: its own instant, at its moment.
                    if l["oom_kill_ns"].is_u64() {
                        want_instants.push("oom_kill".to_owned());
                    }
                }
                ("drift", _) => want_instants.push("drift".to_owned()),
                ("lost", _) => want_instants.push("lost".to_owned()),
                ("uncertain", _) => match l["to_ns"].as_u64() {
                    Some(to) => want_uncertain.push((l["from_ns"].as_u64().unwrap(), to)),
                    None => want_instants.push("uncertain".to_owned()),
                },
                ("counters", _) => {
                    let t = l["t_ns"].as_u64().unwrap();
                    for (track, field) in [
                        ("mem.mapped", "mapped"),
                        ("mem.heap", "heap"),
                        ("mem.stack", "stack"),
                        ("mem.rss", "rss"),
                    ] {
                        if let Some(v) = l[field].as_u64() {
                            want_counters.entry(track).or_default().push((t, v));
                        }
                    }
                }
                _ => {}
            }
        }
        assert!(born.is_empty(), "regions never ended: {born:?}");
        assert!(want.len() > 10, "{} regions", want.len());
        let slices = doc["slices"].as_array().unwrap();
        let mut got = Vec::new();
        let mut got_uncertain = Vec::new();
        for sl in slices {
            let t = track(&sl["track"]);
            if t["name"] == "uncertain" {
                got_uncertain.push((sl["begin"].as_u64().unwrap(), sl["end"].as_u64().unwrap()));
                continue;
            }
            let lane = track(&t["parent"]);
            let process = track(&lane["parent"]);
            got.push((
                s(&sl["name"]),
                sl["begin"].as_u64().unwrap(),
                sl["end"].as_u64().unwrap(),
                s(&sl["args"]["perms"]),
                s(&sl["args"]["born_by"]),
                s(&sl["end_args"]["died_by"]),
                s(&t["name"]),
                s(&lane["name"]),
                process["pid"].as_u64().unwrap(),
            ));
        }
        want.sort();
        got.sort();
        assert_eq!(got.len(), want.len(), "region slices");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(
                g, w,
                "region slice (name, begin, end, perms, born_by, died_by, track, lane, pid)"
            );
        }
        want_uncertain.sort_unstable();
        got_uncertain.sort_unstable();
        assert_eq!(got_uncertain, want_uncertain, "settled uncertain intervals");

        let got_instants = doc["instants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| s(&i["name"]));
        assert_eq!(
            tally(got_instants),
            tally(want_instants),
            "instants by name"
        );

        // Counter samples, with their values, per counter name.
        let mut got_counters: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
        for (uuid, samples) in doc["counters"].as_object().unwrap() {
            let name = s(&tracks[uuid]["name"]);
            if name == "faults/s" {
                continue;
            }
            for sample in samples.as_array().unwrap() {
                let v = sample[1].as_f64().unwrap();
                got_counters
                    .entry(name.clone())
                    .or_default()
                    .push((sample[0].as_u64().unwrap(), v as u64));
            }
        }
        assert!(!want_counters.is_empty(), "the workload was sampled");
        for (name, mut want) in want_counters {
            let mut got = got_counters.remove(name).unwrap_or_default();
            want.sort_unstable();
            got.sort_unstable();
            assert_eq!(got, want, "{name} samples");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prot_is_strict() {
        let ok = [
            ("---", 0),
            ("r--", libc::PROT_READ),
            ("rw-", libc::PROT_READ | libc::PROT_WRITE),
            ("r-x", libc::PROT_READ | libc::PROT_EXEC),
            ("rwx", 7),
            ("rw-|PROT_GROWSDOWN", 3 | libc::PROT_GROWSDOWN),
            ("---|PROT_SEM", 8),
            ("--x|0x10", libc::PROT_EXEC | 0x10),
        ];
        for (s, bits) in ok {
            assert_eq!(parse_prot(&json!(s)), Some(bits), "{s:?}");
        }
        for bad in [
            json!(3),
            json!("3"),
            json!("PROT_READ|PROT_WRITE"),
            json!("0x3"),
            json!("wr-"),
            json!("rw"),
            json!("rw-x"),
            json!("RW-"),
            json!("rw-|"),
            json!("rw-|PROT_BOGUS"),
            json!("rw-|0x0010"),
            json!("rw-|0x1000000"),
            json!(null),
        ] {
            assert_eq!(parse_prot(&bad), None, "{bad}");
        }
    }

    #[test]
    fn flags_are_strict() {
        let ok = [
            ("MAP_PRIVATE|MAP_ANONYMOUS", 0x22),
            ("MAP_SHARED", 0x01),
            ("0", 0),
            ("MAP_PRIVATE|MAP_FIXED_NOREPLACE", 0x100002),
            ("MAP_PRIVATE|0x200", 0x202),
            // An invalid mapping type.
            ("0x5", 0x5),
        ];
        for (s, bits) in ok {
            assert_eq!(parse_flags(&json!(s), MMAP_FLAG_NAMES), Some(bits), "{s:?}");
        }
        assert_eq!(
            parse_flags(&json!("MREMAP_MAYMOVE|MREMAP_FIXED"), MREMAP_FLAG_NAMES),
            Some(3)
        );
        for bad in [
            json!(0x22),
            json!("34"),
            json!("0x22"),
            json!(""),
            json!("MAP_PRIVATE||MAP_ANONYMOUS"),
            json!("MAP_PRIVATE | MAP_ANONYMOUS"),
            json!("map_private"),
            json!("MAP_ANON"),
            json!("MAP_PRIVATE|0X200"),
            json!("MAP_PRIVATE|0x0200"),
            json!("MAP_PRIVATE|0x20"),
            json!("MREMAP_MAYMOVE"),
        ] {
            assert_eq!(parse_flags(&bad, MMAP_FLAG_NAMES), None, "{bad}");
        }
    }

    #[test]
    fn summary_lines_as_mmtrace_prints_them() {
        // From README.
        let s = parse_summary_line(
            "mmtrace: 1092 events in 0.05 s, brk 11, exec 1, exit 1, fault 1038, mmap 31, \
             mprotect 7, munmap 2; lost 0; command exited (code 0)",
        )
        .unwrap();
        assert_eq!(s.events, 1092);
        assert_eq!(s.seconds, 0.05);
        assert_eq!(s.by_kind["fault"], 1038);
        assert_eq!(s.by_kind.len(), 7);
        assert_eq!(s.lost, 0);
        assert_eq!(s.malformed, 0);
        assert_eq!(s.end.as_deref(), Some("command exited (code 0)"));

        let s = parse_summary_line(
            "mmtrace: 659 events in 1.10 s, fault 219, mmap 219, munmap 219; lost 0",
        )
        .unwrap();
        assert_eq!((s.events, s.lost, s.end), (659, 0, None));

        let s = parse_summary_line(
            "mmtrace: 3 events in 0.20 s, mmap 1; lost 17; malformed 2; stopped by SIGTERM",
        )
        .unwrap();
        assert_eq!((s.lost, s.malformed, s.errors), (17, 2, 0));
        assert_eq!(s.end.as_deref(), Some("stopped by SIGTERM"));

        let s = parse_summary_line(
            "mmtrace: 5 events in 0.02 s, exec 2, exit 2, fork 1; lost 0; errors 2; \
             command exited (code 0)",
        )
        .unwrap();
        assert_eq!((s.lost, s.malformed, s.errors), (0, 0, 2));
        assert_eq!(s.end.as_deref(), Some("command exited (code 0)"));

        let s =
            parse_summary_line("mmtrace: 0 events in 0.01 s; lost 0; stopped by SIGINT").unwrap();
        assert!(s.by_kind.is_empty());

        for end in [
            "stopped after --duration",
            "stopped: the output is closed (command pid 12 left running)",
            "stopped by SIGTERM (command pid 12 killed)",
            "command exited (killed by signal 9)",
        ] {
            let line = format!("mmtrace: 5 events in 1.00 s, mmap 5; lost 0; {end}");
            assert_eq!(parse_summary_line(&line).unwrap().end.as_deref(), Some(end));
        }
    }

    #[test]
    fn summary_lines_mmtrace_does_not_print() {
        for bad in [
            // No lost figure at all.
            "mmtrace: 10 events in 2.00 s, exec 3, exit 4, fork 3",
            "mmtrace: 10 events in 2.00 s, exec 3; command exited (code 0)",
            // Other spellings of it.
            "mmtrace: 10 events in 2.00 s; lost: 0",
            "mmtrace: 10 events in 2.00 s; Lost=7",
            "mmtrace: 10 events in 2.00 s; 5 lost",
            "mmtrace: 10 events in 2.00 s; lost 0 events",
            // Counts that do not add up, unknown kinds, no prefix.
            "mmtrace: 1 events in 2.00 s, mmap 3; lost 0",
            "mmtrace: 9 events in 2.00 s, bogus 3; lost 0",
            "mmtrace: 9 events in 2.00 s, fault_summary 3; lost 0",
            "9 events in 2.00 s; lost 0",
            "mmtrace: 9 events in 2.00 s; lost 0; something else",
            "mmtrace: 9 events in 2.00 s; lost 0; stopped",
            "mmtrace: 9 events in 2.00 s; lost 0; errors 0",
            "mmtrace: 9 events in 2.00 s; lost 0; errors 1; malformed 1",
            "mmtrace: 9 events in 2.00 s; lost 0; command exited (code 0); command exited (code 0)",
        ] {
            assert!(parse_summary_line(bad).is_err(), "{bad:?} parsed");
        }
        assert!(closing_summary("mmtrace: tracing x (pid 1)\n").is_err());
        let two = "mmtrace: 1 events in 1.00 s; lost 0\nmmtrace: 1 events in 1.00 s; lost 0\n";
        assert!(closing_summary(two).is_err());
        let one = "mmtrace: tracing x (pid 1)\nmmtrace: 1 events in 1.00 s, mmap 1; lost 0\n";
        assert_eq!(closing_summary(one).unwrap().by_kind["mmap"], 1);
    }

    #[test]
    fn tracing_line() {
        let line = "mmtrace: tracing /usr/bin/python3 (pid 434) and its descendants \
                    (stack growth via faults); Ctrl-C to stop";
        assert_eq!(traced_pid(line), Some(434));
        let odd = "mmtrace: tracing /tmp/a (pid 1) b (pid 77) and its descendants (fexit)";
        assert_eq!(traced_pid(odd), Some(77));
        assert_eq!(
            traced_pid("mmtrace: tracing every process (fexit); Ctrl-C"),
            None
        );
    }

    #[test]
    fn own_stat() {
        let me = proc_stat(std::process::id() as i32).expect("our own /proc/PID/stat");
        assert!(me.comm.starts_with("tests"), "{me:?}");
        assert!(me.minflt > 0, "{me:?}");
        assert!(proc_stat(i32::MAX).is_none());
    }

    #[test]
    fn lost_lines() {
        let events = vec![
            json!({"event": "mmap"}),
            json!({"event": "lost", "count": 7, "kind": "fault"}),
            json!({"event": "lost", "count": 2, "kind": "madvise"}),
            json!({"event": "lost", "count": 1, "kind": "fault"}),
        ];
        let lost = lost_in_stream(&events).unwrap();
        assert_eq!(
            lost,
            BTreeMap::from([("fault".into(), 8), ("madvise".into(), 2)])
        );
        for bad in [
            json!({"event": "lost", "count": 0, "kind": "fault"}),
            json!({"event": "lost", "count": "3", "kind": "fault"}),
            json!({"event": "lost", "count": 3, "kind": null}),
            json!({"event": "lost", "count": 3, "kind": "fault_summary"}),
            json!({"event": "lost", "count": 3, "kind": "page_fault"}),
        ] {
            assert!(lost_in_stream(std::slice::from_ref(&bad)).is_err(), "{bad}");
        }
    }
}
