//! A system-wide `mmtrace record` of 60 s under a mixed load (C compiles,
//! Python threads, shell pipelines): nothing lost, no drift from the
//! kernel for any process of the machine, mmtrace's memory bounded, and
//! `mmtrace report` reads the recording in bounded memory.
//!
//! It runs the release binary (`$MMTRACE_RELEASE_BIN`, which `cargo xtask
//! test` builds): a debug build cannot keep up with a busy machine, and
//! what is measured is the recorder people run. Skipped without it, and
//! under emulation (ten times slower).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{wait_until, workspace_dir};

/// The recording's length.
const SECONDS: &str = "60";
/// mmtrace's peak RSS while recording must stay under this.
const MAX_RECORD_RSS: u64 = 300 << 20;
/// `report`'s peak RSS on the recording must stay under this.
const MAX_REPORT_RSS: u64 = 500 << 20;

fn release_bin() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("MMTRACE_RELEASE_BIN")?);
    p.is_file().then_some(p)
}

/// The load, until killed: two C compile-and-run loops, Python with
/// threads and allocations, shell pipelines.
const LOAD: &str = r#"
cd "$1"
cat > big.c <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define F(n) int f##n(int x) { char b[64]; snprintf(b, sizeof b, "%d", x * n); return (int)strlen(b) + x; }
F(1) F(2) F(3) F(4) F(5) F(6) F(7) F(8)
int main(void) {
    int s = 0;
    for (int i = 0; i < 1000; i++) { char *p = malloc(1 << 20); memset(p, 1, 4096); s += f1(i) + f8(i); free(p); }
    printf("%d\n", s);
    return 0;
}
EOF
compile() { while :; do gcc -O2 -o "big$1" big.c && "./big$1" > /dev/null; done; }
py() { while :; do python3 -c '
import threading
d = [bytearray(1 << 20) for _ in range(50)]
t = [threading.Thread(target=lambda: [bytes(1 << 16) for _ in range(200)]) for _ in range(4)]
[x.start() for x in t]; [x.join() for x in t]'; done; }
sh() { while :; do ls -l /usr/lib > /dev/null; sort /etc/passwd | uniq > /dev/null; done; }
compile 1 & compile 2 & py & sh &
wait
"#;

/// Peak RSS (VmHWM) of a running process, 0 when it cannot be read.
fn vm_hwm(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Collects `child`'s stderr in a thread; `ready` is set at the first
/// line holding `marker`.
fn drain_stderr(
    child: &mut Child,
    marker: &'static str,
    ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<String> {
    let stderr = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(marker) {
                ready.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    })
}

/// Waits for `child`, keeping the highest VmHWM seen; returns it with its
/// exit status.
fn watch(child: &mut Child) -> (u64, std::process::ExitStatus) {
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        peak = peak.max(vm_hwm(pid));
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (peak, status)
}

/// Kills the load's process group when dropped (also on a failed assert).
struct Load(Child);

impl Drop for Load {
    fn drop(&mut self) {
        // SAFETY: a signal to the process group this test started.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn end_record(path: &Path) -> Value {
    let text = std::fs::read(path).expect("the recording");
    let last = text
        .split(|&b| b == b'\n')
        .rfind(|l| !l.is_empty())
        .expect("a line");
    serde_json::from_slice(last).expect("the end record is JSON")
}

#[test]
fn a_minute_of_mixed_load_system_wide() {
    tests::needs_root!();
    tests::skip_when_emulated!("a minute of system-wide load takes far longer there");
    let Some(bin) = release_bin() else {
        eprintln!(
            "skipping systemwide: $MMTRACE_RELEASE_BIN is not set to a release build \
             (cargo xtask test builds one)"
        );
        return;
    };
    for tool in ["gcc", "python3"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("skipping systemwide: {tool} is not installed");
            return;
        }
    }
    let dir = workspace_dir()
        .join("target")
        .join("tmp")
        .join(format!("mmtrace-systemwide-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("timeline.jsonl");

    let mut record = Command::new(&bin)
        .args(["record", "--duration", SECONDS, "-o"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mmtrace record");
    let attached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stderr = drain_stderr(&mut record, "tracing system-wide", attached.clone());
    wait_until(Duration::from_secs(120), "mmtrace to attach", || {
        attached.load(std::sync::atomic::Ordering::SeqCst)
    })
    .unwrap();
    let load = {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("bash");
        cmd.args(["-c", LOAD, "load"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        Load(cmd.spawn().expect("the load"))
    };
    // The recording ends by itself (--duration); the load with it.
    let (peak, status) = watch(&mut record);
    drop(load);
    let stderr = stderr.join().unwrap_or_default();
    assert!(status.success(), "mmtrace record: {status}: {stderr}");
    let end = end_record(&out);
    assert_eq!(end["type"], "end", "{end}");
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "systemwide: {} events, {} processes, {} checks, {} MB, mmtrace peak RSS {} MiB",
        end["events"],
        end["processes"],
        end["checks"],
        size >> 20,
        peak >> 20
    );
    assert!(
        end["processes"].as_u64().unwrap_or(0) > 500,
        "the load ran: {end}"
    );
    assert_eq!(end["lost_events"], 0, "events lost: {end}; {stderr}");
    assert_eq!(end["drift"], 0, "drift: {end}; see {}", out.display());
    assert!(
        peak < MAX_RECORD_RSS,
        "mmtrace record peaked at {} MiB",
        peak >> 20
    );

    let mut report = Command::new(&bin)
        .arg("report")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mmtrace report");
    let never = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stderr = drain_stderr(&mut report, "\u{0}", never);
    let (peak, status) = watch(&mut report);
    let stderr = stderr.join().unwrap_or_default();
    assert!(status.success(), "mmtrace report: {status}: {stderr}");
    eprintln!("systemwide: report peak RSS {} MiB", peak >> 20);
    assert!(
        peak < MAX_REPORT_RSS,
        "mmtrace report peaked at {} MiB",
        peak >> 20
    );
    let _ = std::fs::remove_dir_all(&dir);
}
