//! A real OOM kill, inside a memory cgroup the test makes as a child of its
//! own (never the whole machine): `mmtrace record` sees the kernel's
//! `oom_kill` for the victim, its exit by SIGKILL carries `oom_kill_ns`, and
//! `mmtrace report` opens with the kill and the region that grew.
//!
//! Where the memory controller is on the v1 hierarchy (these machines):
//! `/sys/fs/cgroup/memory/<own>/mmtrace-oom-PID` with `memory.limit_in_bytes`
//! (and `memory.memsw.limit_in_bytes` when there is one); where it is on
//! cgroup v2 only, a child of the process's v2 cgroup with `memory.max`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tests::{read_jsonl, run_mmtrace_raw, run_record, wait_until, MMTRACE_TIMEOUT};

/// The limit: small enough to reach in a moment.
const LIMIT: u64 = 64 << 20;

/// A memory cgroup made for the test, removed when dropped.
struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    /// A limited child of this process's memory cgroup, or why not.
    fn make() -> Result<Cgroup, String> {
        Cgroup::make_named("record")
    }

    /// [`Cgroup::make`], named for its test (tests run in parallel).
    fn make_named(test: &str) -> Result<Cgroup, String> {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let name = format!("mmtrace-oom-{}-{test}", std::process::id());
        // v1: the line `N:memory:/path` (or with other controllers).
        let v1 = own.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            ctrls
                .split(',')
                .any(|c| c == "memory")
                .then(|| path.to_string())
        });
        let (dir, files): (PathBuf, &[&str]) = match v1 {
            Some(path) => (
                Path::new("/sys/fs/cgroup/memory")
                    .join(path.trim_start_matches('/'))
                    .join(&name),
                &["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"],
            ),
            None => {
                let path = own.lines().find_map(|l| l.strip_prefix("0::")).ok_or(
                    "no memory cgroup: /proc/self/cgroup has neither a v1 memory line nor a v2 one",
                )?;
                let parent = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
                let controllers = std::fs::read_to_string(parent.join("cgroup.controllers"))
                    .map_err(|e| {
                        format!("cannot read {}/cgroup.controllers: {e}", parent.display())
                    })?;
                if !controllers.split_whitespace().any(|c| c == "memory") {
                    return Err(format!(
                        "the memory controller is on no v1 hierarchy and not available in the v2 cgroup {}",
                        parent.display()
                    ));
                }
                let sub = parent.join("cgroup.subtree_control");
                let on = std::fs::read_to_string(&sub).unwrap_or_default();
                if !on.split_whitespace().any(|c| c == "memory") {
                    std::fs::write(&sub, "+memory")
                        .map_err(|e| format!("cannot enable memory in {}: {e}", sub.display()))?;
                }
                (parent.join(&name), &["memory.max", "memory.swap.max"])
            }
        };
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot create the cgroup {}: {e}", dir.display()))?;
        let cg = Cgroup { dir };
        for (i, file) in files.iter().enumerate() {
            let path = cg.dir.join(file);
            // The first (the memory limit) is required; the second (swap)
            // only where it exists.
            let value = if file.contains("swap.max") { 0 } else { LIMIT };
            match std::fs::write(&path, value.to_string()) {
                Ok(()) => {}
                Err(_) if i > 0 && !path.exists() => {}
                Err(e) => return Err(format!("cannot write {}: {e}", path.display())),
            }
        }
        Ok(cg)
    }

    fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Empty once its process is reaped (mmtrace record waits for it).
        let gone = wait_until(Duration::from_secs(10), "the cgroup to empty", || {
            std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists()
        });
        if gone.is_err() {
            eprintln!("could not remove the cgroup {}", self.dir.display());
        }
    }
}

#[test]
fn oom_kill_is_recorded_and_explained() {
    tests::needs_root!();
    let cg = match Cgroup::make() {
        Ok(cg) => cg,
        Err(why) => {
            if !tests::run_unless_emulated(env!("CARGO_CRATE_NAME"), &why) {
                return;
            }
            panic!("cannot make a memory-limited cgroup for the OOM test: {why}");
        }
    };
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("mmtrace-oom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("timeline.jsonl");
    let cmd = [
        env!("CARGO_BIN_EXE_oomer").to_string(),
        cg.procs().display().to_string(),
    ];
    let run = run_record(&out, &["--format", "v2"], &cmd).unwrap_or_else(|e| panic!("{e}"));
    let lines = read_jsonl(&out).unwrap_or_else(|e| panic!("{e}\n{}", run.stderr));
    let pid = lines
        .iter()
        .find(|l| l["type"] == "process" && l["event"] == "start")
        .and_then(|l| l["pid"].as_u64())
        .unwrap_or_else(|| panic!("no process in the recording\n{}", run.stderr));
    let exit = lines
        .iter()
        .find(|l| l["type"] == "process" && l["event"] == "exit" && l["pid"] == pid)
        .unwrap_or_else(|| panic!("no exit of {pid}\n{}", run.stderr));
    assert_eq!(
        exit["exit_signal"], "SIGKILL",
        "the command was not killed: {exit}\n{}",
        run.stderr
    );
    // Every line is valid v2, oom_kill_ns included.
    let path = tests::workspace_dir().join("docs/timeline-v2.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let v = jsonschema::draft202012::options()
        .build(&schema)
        .unwrap_or_else(|e| panic!("the v2 schema: {e}"));
    for l in &lines {
        let errs: Vec<String> = v.iter_errors(l).map(|e| e.to_string()).collect();
        assert!(errs.is_empty(), "{l}: {errs:?}");
    }
    let kill = exit["oom_kill_ns"]
        .as_u64()
        .unwrap_or_else(|| panic!("the exit carries no oom_kill_ns: {exit}\n{}", run.stderr));
    assert!(kill <= exit["t_ns"].as_u64().unwrap(), "{exit}");

    // The report opens with the kill, and names what grew (anonymous
    // memory: glibc maps each 1 MiB chunk).
    let report = run_mmtrace_raw(
        [std::ffi::OsStr::new("report"), out.as_os_str()],
        MMTRACE_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.status.success(), "{}", report.stderr);
    let text = &report.stdout;
    let section = text
        .find(&format!("OOM kill: process {pid} (oomer)"))
        .unwrap_or_else(|| panic!("no OOM section in the report:\n{text}"));
    let process = text
        .find(&format!("Process {pid} (oomer)"))
        .unwrap_or_else(|| panic!("no process section:\n{text}"));
    assert!(
        section < process,
        "the OOM section does not open the report:\n{text}"
    );
    let oom = &text[section..process];
    assert!(oom.contains("Killed at"), "{oom}");
    assert!(oom.contains("in the last minute"), "{oom}");
    let grew = oom
        .lines()
        .skip_while(|l| !l.contains("Regions that grew most"))
        .nth(2)
        .unwrap_or_else(|| panic!("no region in the OOM section:\n{oom}"));
    assert!(
        grew.contains("[anon]") || grew.contains("[heap]"),
        "the region that grew most is not anonymous memory: {grew}\n{text}"
    );
    // The region gained most of the limit in the minute.
    let added: f64 = grew
        .trim_start()
        .trim_start_matches('+')
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    assert!(
        grew.contains(" MiB") && added >= (LIMIT >> 20) as f64 * 0.75,
        "{grew}\n{text}"
    );
    drop(cg);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The stream's `oom_kill` line names the victim (the command) in its body,
/// and the victim's exit by SIGKILL follows it.
#[test]
fn oom_kill_is_streamed() {
    tests::needs_root!();
    let cg = match Cgroup::make_named("stream") {
        Ok(cg) => cg,
        Err(why) => {
            if !tests::run_unless_emulated(env!("CARGO_CRATE_NAME"), &why) {
                return;
            }
            panic!("cannot make a memory-limited cgroup for the OOM test: {why}");
        }
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mmtrace-oom-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.jsonl");
    let cmd = [
        env!("CARGO_BIN_EXE_oomer").to_string(),
        cg.procs().display().to_string(),
    ];
    let run = tests::run_stream(&events, &cmd).unwrap_or_else(|e| panic!("{e}"));
    let pid = run
        .events
        .iter()
        .find(|e| e["event"] == "exec")
        .and_then(|e| e["pid"].as_u64())
        .unwrap_or_else(|| panic!("no exec in the stream\n{}", run.stderr));
    let kill = run
        .events
        .iter()
        .position(|e| e["event"] == "oom_kill" && e["victim_pid"] == pid)
        .unwrap_or_else(|| panic!("no oom_kill of {pid} in the stream\n{}", run.stderr));
    let exit = run
        .events
        .iter()
        .position(|e| e["event"] == "exit" && e["pid"] == pid)
        .unwrap_or_else(|| panic!("no exit of {pid}\n{}", run.stderr));
    assert!(kill < exit, "the kill comes after the exit");
    assert_eq!(run.events[exit]["signal"], "SIGKILL");
    drop(cg);
    let _ = std::fs::remove_dir_all(&dir);
}
