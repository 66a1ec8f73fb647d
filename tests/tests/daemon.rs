//! `mmtrace daemon`: its configuration is refused with the file, the line and
//! the reason (exit 2) before anything is attached; the example is valid;
//! it records, keeps, counts and stops as configured (root).

use std::{
    collections::BTreeMap,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{mmtrace_bin, parse_jsonl, workspace_dir, Report};

fn daemon(config: &std::path::Path, extra: &[&str]) -> Output {
    Command::new(mmtrace_bin().unwrap_or_else(|e| panic!("{e}")))
        .arg("daemon")
        .arg("--config")
        .arg(config)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run mmtrace daemon")
}

fn scratch(name: &str, text: &str) -> PathBuf {
    let dir = workspace_dir().join("target").join("tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("mmtrace-daemon-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn example_config_is_valid() {
    let example = workspace_dir().join("packaging").join("mmtrace.toml");
    let o = daemon(&example, &["--check-config"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("valid"),
        "{o:?}"
    );
}

#[test]
fn bad_configs_are_refused_with_their_line() {
    for (name, text, line, reason) in [
        (
            "unknown",
            "faults = \"all\"\n[keep]\nmin_life = 3\n",
            3,
            "unknown field",
        ),
        ("type", "\n\nring_bytes = \"big\"\n", 3, "expected u64"),
        (
            "value",
            "[select]\n\ncomm = [\"a-name-longer-than-15\"]\n",
            3,
            "1 to 15 bytes",
        ),
    ] {
        let path = scratch(name, text);
        let o = daemon(&path, &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        let want = format!("{}:{line}: ", path.display());
        assert!(err.contains(&want), "{name}: {err:?} lacks {want:?}");
        assert!(err.contains(reason), "{name}: {err:?} lacks {reason:?}");
        assert_eq!(err.lines().count(), 1, "{name}: one line: {err:?}");
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn missing_config_is_one_line() {
    let o = daemon(std::path::Path::new("/nonexistent/mmtrace.toml"), &[]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/nonexistent/mmtrace.toml: cannot read"),
        "{err:?}"
    );
}

/// The systemd unit passes `systemd-analyze verify` (skipped where the tool
/// is missing). ExecStart points at the built binary so that the check of
/// the executable does not depend on an installation.
#[test]
fn systemd_unit_verifies() {
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("systemd-analyze not found: skipped");
        return;
    };
    let bin = mmtrace_bin().unwrap_or_else(|e| panic!("{e}"));
    let unit = std::fs::read_to_string(workspace_dir().join("packaging/mmtrace.service")).unwrap();
    let unit = unit.replace("/usr/local/bin/mmtrace", &bin.display().to_string());
    let dir = workspace_dir()
        .join("target")
        .join("tmp")
        .join(format!("mmtrace-daemon-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mmtrace.service");
    std::fs::write(&path, unit).unwrap();
    let o = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("run systemd-analyze");
    let err = String::from_utf8_lossy(&o.stderr);
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("mmtrace")).collect();
    assert!(o.status.success() && ours.is_empty(), "{o:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

// ---------------------------------------------------------------------------
// Recording (root, real kernel)
// ---------------------------------------------------------------------------

/// A running daemon, killed (SIGKILL) if the test ends before it stopped.
struct Running {
    child: Option<std::process::Child>,
    stderr: PathBuf,
}

impl Running {
    /// Its stderr so far, in whole lines: a line being written is not
    /// there yet (a wait on it once saw the start of a line without its
    /// end).
    fn stderr(&self) -> String {
        let mut s = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        s.truncate(s.rfind('\n').map_or(0, |i| i + 1));
        s
    }

    /// SIGTERM, then its exit code and its stderr.
    fn stop(&mut self) -> (Option<i32>, String) {
        let mut child = self.child.take().expect("running");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().expect("wait for the daemon");
        let all = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        (status.code(), all)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until `pid` runs `comm` and its loader has mapped libc: its exec
/// is done, and so its exec event sent. (libc alone is not enough: the
/// child of this test maps libc before it execs.)
fn exec_done(pid: u32, comm: &str) {
    wait_for(&format!("{comm}'s exec"), Duration::from_secs(30), || {
        let now = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
        (now.trim_end() == comm && maps.contains("libc")).then_some(())
    });
}

/// Polls `cond` until it holds; panics with `what` after `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The timeline files whose name ends with `-PID-COMM.jsonl`.
fn timelines_of(dir: &Path, pid: u32, comm: &str) -> Vec<PathBuf> {
    let suffix = format!("-{pid}-{comm}.jsonl");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.ends_with(&suffix) && !n.starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// The errors of each line against docs/timeline-v2.schema.json.
fn schema_errors(lines: &[Value]) -> Vec<String> {
    let path = workspace_dir().join("docs").join("timeline-v2.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let v = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    lines
        .iter()
        .enumerate()
        .flat_map(|(i, l)| {
            v.iter_errors(l)
                .map(move |e| format!("line {}: {e}", i + 1))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The regions of process `proc` alive at `t` (ns since the start), by
/// start address, from the records alone: (end, perms). (As in
/// record_v2.rs.)
fn alive_at(lines: &[Value], proc: u64, t: u64) -> BTreeMap<u64, (u64, String)> {
    let mut live: BTreeMap<u64, (u64, (u64, String))> = BTreeMap::new();
    for l in lines {
        if l["type"] != "region" || num(&l["proc"]) != proc || num(&l["t_ns"]) > t {
            continue;
        }
        let id = num(&l["region"]);
        let at = |k: &str| tests::addr(l[k].as_str().unwrap_or("0x0"));
        match l["op"].as_str().unwrap_or("") {
            "died" => {
                live.remove(&id);
            }
            "end" => {}
            _ => {
                let perms = l["perms"].as_str().unwrap_or("").to_string();
                live.insert(id, (at("start"), (at("end"), perms)));
            }
        }
    }
    live.into_values().collect()
}

/// Starts `mmtrace daemon --config CONFIG` and waits for its READY=1 on a
/// notification socket in `dir` (sd-notify); its stderr goes to
/// `dir/daemon.stderr`.
fn start_daemon(dir: &Path, config: &Path) -> Running {
    start_daemon_with(dir, config, &[])
}

/// [`start_daemon`] with `env` added to the daemon's environment.
fn start_daemon_with(dir: &Path, config: &Path, env: &[(&str, &str)]) -> Running {
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let stderr = dir.join("daemon.stderr");
    let child = Command::new(mmtrace_bin().unwrap_or_else(|e| panic!("{e}")))
        .arg("daemon")
        .arg("--config")
        .arg(config)
        .env("NOTIFY_SOCKET", &notify_path)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("start mmtrace daemon");
    let daemon = Running {
        child: Some(child),
        stderr,
    };
    let mut buf = [0u8; 256];
    // A signal to the test process (another test's child ending) may
    // interrupt the wait: it goes on.
    let n = loop {
        match notify.recv(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r.unwrap_or_else(|e| panic!("no READY=1 ({e}): {}", daemon.stderr())),
        }
    };
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.contains("READY=1"), "{msg:?}");
    daemon
}

/// The daemon records: it says it is ready on $NOTIFY_SOCKET (sd-notify);
/// a workload's exit gives one timeline file that `mmtrace report` reads
/// and whose regions replay to the workload's own maps at each pause; a
/// short process the keep policy excludes is counted, with no file, but a
/// short one killed by a signal is kept; a CLONE_VM child that outlives
/// its parent has a timeline report reads; at
/// SIGTERM it exits 0 after writing the timeline of a process still
/// running (event `end`); SIGHUP with a bad configuration keeps the old
/// one; the data directory is 0700, the files 0600.
#[test]
fn records_keeps_counts_and_stops() {
    tests::needs_root!();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mmtrace-daemon-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    // Only the test's own programs: other processes of the machine would
    // only make the test slower (their events are normal).
    let config = dir.join("mmtrace.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nreconcile_secs = 1\nfaults = \"all\"\n\
             [socket]\npath = \"{}\"\n\
             [select]\ncomm = [\"workload\", \"true\", \"sleep\", \"heir\"]\n\
             [keep]\nmin_lifetime_secs = 0.5\ndrift = false\n",
            data.display(),
            dir.join("mmtrace.sock").display()
        ),
    )
    .unwrap();
    let mut daemon = start_daemon(&dir, &config);
    assert!(daemon.stderr().contains("ready"), "{}", daemon.stderr());
    assert_eq!(mode_of(&data), 0o700);
    let timelines = data.join("timelines");
    assert_eq!(mode_of(&timelines), 0o700);

    // A workload, kept (it lives longer than 0.5 s). Its pauses are as long
    // as record's tests give it: a SysV segment's extent is read from
    // /proc/PID/maps when the daemon handles the shmat, which must come
    // before the workload's shmdt (a daemon late by more than a pause, on
    // a loaded machine, misses the segment and says so: uncertain).
    let report_path = dir.join("report.json");
    let w = Command::new(env!("CARGO_BIN_EXE_workload"))
        .arg("--report")
        .arg(&report_path)
        .args(["--pause-ms", "300"])
        .stdin(Stdio::null())
        .output()
        .expect("run the workload");
    assert!(w.status.success(), "{w:?}");
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let pid = report.pid as u32;
    // A short process, skipped by the keep policy.
    let mut t = Command::new("true").spawn().expect("run true");
    let tpid = t.id();
    assert!(t.wait().unwrap().success());
    let file = wait_for("the workload's timeline", Duration::from_secs(60), || {
        timelines_of(&timelines, pid, "workload").pop()
    });
    assert_eq!(mode_of(&file), 0o600);

    // Its timeline: one process, the v2 format, complete.
    let lines = parse_jsonl(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(lines[0]["schema"], tests::TIMELINE_V2);
    let end = lines.last().unwrap();
    assert_eq!(end["type"], "end", "{}", file.display());
    let bad = schema_errors(&lines);
    assert!(bad.is_empty(), "{}: {bad:?}", file.display());
    assert_eq!(end["processes"], 1);
    let procs: Vec<&Value> = lines.iter().filter(|l| l["type"] == "process").collect();
    let proc = num(&procs[0]["proc"]);
    assert!(lines
        .iter()
        .filter(|l| !l["proc"].is_null())
        .all(|l| num(&l["proc"]) == proc));
    let exit = procs.last().unwrap();
    assert_eq!(exit["event"], "exit", "{exit}");
    assert_eq!(exit["pid"], pid);
    assert_eq!(exit["comm"], "workload");
    assert_eq!(exit["exit_code"], 0);
    // Its regions replay to its maps at each pause (the checks of record).
    let start = num(&lines[0]["monotonic_start_ns"]);
    assert!(!report.pauses.is_empty());
    for pause in &report.pauses {
        let t = pause.after_ns - start;
        let maps: BTreeMap<u64, (u64, String)> = pause
            .maps
            .iter()
            .map(|m| {
                (
                    tests::addr(&m.start),
                    (tests::addr(&m.end), m.perms.clone()),
                )
            })
            .collect();
        assert_eq!(
            alive_at(&lines, proc, t),
            maps,
            "pause {:?}: {}",
            pause.name,
            file.display()
        );
    }
    // `mmtrace report` reads it.
    let r = Command::new(mmtrace_bin().unwrap())
        .arg("report")
        .arg(&file)
        .output()
        .expect("run mmtrace report");
    assert!(r.status.success(), "{r:?}");
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(
        text.contains(&format!("Process {pid} (workload)")),
        "{text}"
    );

    // A short life, but killed by a signal: kept.
    let mut killed = Command::new("sleep")
        .arg("1000")
        .stdin(Stdio::null())
        .spawn()
        .expect("start sleep");
    let kpid = killed.id();
    exec_done(kpid, "sleep");
    killed.kill().unwrap();
    killed.wait().unwrap();
    let file = wait_for(
        "the killed sleep's timeline",
        Duration::from_secs(60),
        || timelines_of(&timelines, kpid, "sleep").pop(),
    );
    let lines = parse_jsonl(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let exit = lines.iter().rfind(|l| l["type"] == "process").unwrap();
    assert_eq!(exit["event"], "exit", "{exit}");
    assert_eq!(exit["exit_signal"], "SIGKILL", "{exit}");
    assert!(
        daemon.stderr().contains("kept: killed by SIGKILL"),
        "{}",
        daemon.stderr()
    );

    // A CLONE_VM child outlives its parent (and holds their address space),
    // changes a region its parent made, then execs: its timeline holds
    // those regions (report reads it).
    let h = Command::new(env!("CARGO_BIN_EXE_heir"))
        .stdin(Stdio::null())
        .output()
        .expect("run heir");
    assert!(h.status.success(), "{h:?}");
    let hpid: u32 = String::from_utf8_lossy(&h.stdout).trim().parse().unwrap();
    let file = wait_for("the heir's timeline", Duration::from_secs(60), || {
        timelines_of(&timelines, hpid, "sleep").pop()
    });
    let lines = parse_jsonl(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let bad = schema_errors(&lines);
    assert!(bad.is_empty(), "{}: {bad:?}", file.display());
    let r = Command::new(mmtrace_bin().unwrap())
        .arg("report")
        .arg(&file)
        .output()
        .expect("run mmtrace report");
    assert!(r.status.success(), "{}: {r:?}", file.display());

    // SIGHUP: a bad configuration is refused (the old one kept), a good
    // one is applied; the daemon runs on.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, "faults = \"some\"\n").unwrap();
    let hup = |d: &Running| {
        let pid = d.child.as_ref().expect("running").id() as i32;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGHUP) };
    };
    hup(&daemon);
    wait_for(
        "the refusal of the bad config",
        Duration::from_secs(10),
        || {
            daemon
                .stderr()
                .lines()
                .find(|l| l.contains("configuration refused, the old one is kept"))
                .map(|l| assert!(l.contains(":1:"), "{l}"))
        },
    );
    std::fs::write(&config, good.replace("0.5", "0.6")).unwrap();
    hup(&daemon);
    wait_for("the reread config", Duration::from_secs(10), || {
        daemon.stderr().contains("reread").then_some(())
    });

    // A process still running at the stop: written, cut (event `end`).
    let mut sleeper = Command::new("sleep")
        .arg("1000")
        .stdin(Stdio::null())
        .spawn()
        .expect("start sleep");
    let spid = sleeper.id();
    exec_done(spid, "sleep");
    let (code, err) = daemon.stop();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(code, Some(0), "{err}");
    let cut = timelines_of(&timelines, spid, "sleep");
    assert_eq!(cut.len(), 1, "{err}");
    let lines = parse_jsonl(&std::fs::read_to_string(&cut[0]).unwrap()).unwrap();
    assert_eq!(lines.last().unwrap()["type"], "end");
    let bad = schema_errors(&lines);
    assert!(bad.is_empty(), "{}: {bad:?}", cut[0].display());
    let last_process = lines.iter().rfind(|l| l["type"] == "process").unwrap();
    assert_eq!(last_process["event"], "end", "{last_process}");
    assert!(lines.iter().any(|l| l["type"] == "region"));

    // `true` was counted, not written.
    let stats = err
        .lines()
        .rfind(|l| l.contains("stats:"))
        .unwrap_or_else(|| panic!("no stats line: {err}"));
    assert!(stats.contains("\"true\" "), "{stats}");
    // (Other `true`s of the machine may be running at the stop: written.)
    let trues = timelines_of(&timelines, tpid, "true");
    assert!(trues.is_empty(), "{trues:?}");
    // Nothing left in the spool; no temporary file.
    assert_eq!(std::fs::read_dir(data.join("spool")).unwrap().count(), 0);
    for e in std::fs::read_dir(&timelines).unwrap() {
        let e = e.unwrap();
        assert!(!e.file_name().to_string_lossy().starts_with('.'));
        assert_eq!(mode_of(&e.path()), 0o600);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `mmtrace CMD ARGS... --socket SOCKET` run as `as_user` (setpriv
/// arguments; empty: root).
fn client(as_user: &[&str], cmd: &[&str], socket: &Path) -> Output {
    let bin = mmtrace_bin().unwrap_or_else(|e| panic!("{e}"));
    let mut c = if as_user.is_empty() {
        Command::new(bin)
    } else {
        let mut c = Command::new("setpriv");
        c.args(as_user).arg(bin);
        c
    };
    c.args(cmd)
        .arg("--socket")
        .arg(socket)
        .stdin(Stdio::null())
        .output()
        .expect("run an mmtrace client")
}

/// The control socket (root, real kernel): 0660 root:group from the start;
/// `status` answers with plausible numbers, `ps` lists a running spinner
/// with its pid, `dump PID` writes a private v2 file that `mmtrace report`
/// reads (never over an existing file); a client that is neither root nor
/// in the group is refused (exit 2), one in the group is served; a second
/// daemon on the same socket is refused; after the stop the socket is gone
/// and `status` says there is no daemon (exit 2).
#[test]
fn control_socket_answers_status_ps_dump() {
    tests::needs_root!();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mmtrace-daemon-socket-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The client running as nobody must reach the socket's directory.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.join("run").join("mmtrace.sock");
    let config = dir.join("mmtrace.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nreconcile_secs = 1\n\
             [socket]\npath = \"{}\"\ngroup = \"nogroup\"\n\
             [select]\ncomm = [\"spinner\"]\n",
            dir.join("data").display(),
            socket.display()
        ),
    )
    .unwrap();
    let mut running = start_daemon(&dir, &config);
    {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = std::fs::symlink_metadata(&socket).unwrap();
        assert!(m.file_type().is_socket());
        assert_eq!(m.mode() & 0o7777, 0o660);
        assert_eq!((m.uid(), m.gid()), (0, 65534));
    }
    let mut spinner = Command::new(env!("CARGO_BIN_EXE_spinner"))
        .arg("120")
        .stdin(Stdio::null())
        .spawn()
        .expect("start the spinner");
    let pid = spinner.id();

    // ps lists it (once the daemon saw its exec).
    let ps = wait_for("the spinner in ps", Duration::from_secs(60), || {
        let o = client(&[], &["ps", "--json", "--sort", "pid"], &socket);
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let row = v["ps"]
            .as_array()?
            .iter()
            .find(|p| num(&p["pid"]) == u64::from(pid) && p["comm"] == "spinner")?
            .clone();
        (num(&row["mapped"]) > 0 && num(&row["regions"]) > 0).then_some(row)
    });
    assert!(num(&ps["rss"]) > 0, "{ps}");
    let text = client(&[], &["ps"], &socket);
    assert_eq!(text.status.code(), Some(0), "{text:?}");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.starts_with("     PID COMM"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with(&format!("{pid} spinner"))),
        "{text}"
    );

    // status: plausible numbers.
    let o = client(&[], &["status", "--json"], &socket);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let s = &v["status"];
    assert_eq!(v["v"], 1);
    assert!(num(&s["processes"]) >= 1, "{s}");
    assert!(num(&s["regions"]) >= 1, "{s}");
    assert!(num(&s["records"]) > 0, "{s}");
    assert!(num(&s["events"]) > 0, "{s}");
    assert!(num(&s["rss_bytes"]) > 1 << 20, "{s}");
    assert_eq!(num(&s["memory_cap_bytes"]), 512 << 20, "{s}");
    let o = client(&[], &["status"], &socket);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("processes:") && text.contains("timelines:"),
        "{text}"
    );

    // dump: a private v2 file report reads, with the spinner's pid.
    let out = dir.join("dump.jsonl");
    let o = client(
        &[],
        &["dump", &pid.to_string(), "-o", out.to_str().unwrap()],
        &socket,
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(mode_of(&out), 0o600);
    let lines = parse_jsonl(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(lines[0]["schema"], tests::TIMELINE_V2);
    assert_eq!(lines.last().unwrap()["type"], "end");
    assert!(lines
        .iter()
        .any(|l| l["type"] == "process" && num(&l["pid"]) == u64::from(pid)));
    let errors = schema_errors(&lines);
    assert!(errors.is_empty(), "{errors:?}");
    let r = Command::new(mmtrace_bin().unwrap())
        .arg("report")
        .arg(&out)
        .output()
        .unwrap();
    assert!(r.status.success(), "{r:?}");
    let report = String::from_utf8_lossy(&r.stdout);
    assert!(
        report.contains(&format!("Process {pid} (spinner)")),
        "{report}"
    );
    // Never over an existing file.
    let before = std::fs::read(&out).unwrap();
    let o = client(
        &[],
        &["dump", &pid.to_string(), "-o", out.to_str().unwrap()],
        &socket,
    );
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert_eq!(std::fs::read(&out).unwrap(), before);
    // A pid it does not trace: one line, exit 2.
    let o = client(
        &[],
        &["dump", "1", "-o", dir.join("d1").to_str().unwrap()],
        &socket,
    );
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).lines().count(),
        1,
        "{o:?}"
    );
    assert!(!dir.join("d1").exists());

    // Bad requests get one JSON error line.
    for (req, want) in [
        (b"{\"v\":1,\"cmd\":\"reboot\"}\n".to_vec(), "unknown cmd"),
        (b"not json\n".to_vec(), "bad request"),
        ([b'x'; 5000].to_vec(), "longer than"),
    ] {
        use std::io::{Read, Write};
        let mut c = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = c.write_all(&req);
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        let v: Value =
            serde_json::from_str(answer.trim_end()).unwrap_or_else(|e| panic!("{answer:?}: {e}"));
        assert_eq!(v["v"], 1, "{answer}");
        assert!(v["error"].as_str().unwrap_or("").contains(want), "{answer}");
        assert_eq!(answer.matches('\n').count(), 1, "{answer:?}");
    }

    // Neither root nor in the group: refused. In the group: served.
    let nobody = ["--reuid=65534", "--regid=65533", "--clear-groups"];
    let o = client(&nobody, &["status"], &socket);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(err.contains("not allowed"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let member = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    let o = client(&member, &["status", "--json"], &socket);
    assert_eq!(o.status.code(), Some(0), "{o:?}");

    // A second daemon on the same socket: refused, and the first goes on.
    let data2 = dir.join("data2");
    let config2 = scratch(
        "socket2",
        &format!(
            "data_dir = \"{}\"\n[socket]\npath = \"{}\"\n",
            data2.display(),
            socket.display()
        ),
    );
    let o = daemon(&config2, &[]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("another mmtrace daemon listens"),
        "{o:?}"
    );
    let _ = std::fs::remove_file(&config2);
    let o = client(&[], &["status"], &socket);
    assert_eq!(o.status.code(), Some(0), "{o:?}");

    let _ = spinner.kill();
    let _ = spinner.wait();
    let (code, err) = running.stop();
    assert_eq!(code, Some(0), "{err}");
    assert!(!socket.exists(), "the socket outlived the daemon");
    let o = client(&[], &["status"], &socket);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no mmtrace daemon at"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// Live events (`stream --connect`), the dump's check
// ---------------------------------------------------------------------------

/// A daemon for the live tests: comms `comms`, its socket in `dir/run`
/// (0660 root:nogroup), checks every second.
fn live_daemon(
    name: &str,
    comms: &[&str],
    extra: &str,
    env: &[(&str, &str)],
) -> (PathBuf, PathBuf, Running) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mmtrace-daemon-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.join("run").join("mmtrace.sock");
    let config = dir.join("mmtrace.toml");
    let comms: Vec<String> = comms.iter().map(|c| format!("{c:?}")).collect();
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nreconcile_secs = 1\n{extra}\
             [socket]\npath = \"{}\"\ngroup = \"nogroup\"\n\
             [select]\ncomm = [{}]\n",
            dir.join("data").display(),
            socket.display(),
            comms.join(", ")
        ),
    )
    .unwrap();
    let running = start_daemon_with(&dir, &config, env);
    (dir, socket, running)
}

/// The daemon's `status --json` answer's `status` object.
fn status_of(socket: &Path) -> Value {
    let o = client(&[], &["status", "--json"], socket);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["status"].clone()
}

/// `mmtrace stream --connect SOCKET ARGS` started in the background, its
/// stdout and stderr into files.
fn connect(socket: &Path, args: &[&str], out: &Path) -> std::process::Child {
    Command::new(mmtrace_bin().unwrap_or_else(|e| panic!("{e}")))
        .arg("stream")
        .arg("--connect")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(std::fs::File::create(out.with_extension("stderr")).unwrap())
        .spawn()
        .expect("start mmtrace stream --connect")
}

/// SIGINT, then its exit code.
fn interrupt(mut c: std::process::Child) -> Option<i32> {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
    c.wait().expect("wait for the client").code()
}

/// `stream --connect` (root, real kernel): a subscriber sees a workload's
/// mmap and munmap calls with its pid and the fields the workload says it
/// used, in JSON lines and in text; a client neither root nor in the group
/// gets one line and exit 2; a subscriber that never reads neither slows
/// nor stops the daemon: its drops are counted (status) and told to it in
/// order (`lost`), and the end line at the daemon's stop gives the total;
/// a client still connected at the stop exits 0 saying why; with no
/// daemon, one line and exit 2.
#[test]
fn stream_connect_shows_live_events() {
    tests::needs_root!();
    let (dir, socket, mut running) = live_daemon("live", &["workload", "mmaploop"], "", &[]);
    let jsonl = dir.join("live.jsonl");
    let text = dir.join("live.txt");
    let c1 = connect(
        &socket,
        &[
            "--format",
            "jsonl",
            "-c",
            "workload",
            "-e",
            "mmap,munmap,process",
        ],
        &jsonl,
    );
    let c2 = connect(&socket, &["-c", "workload"], &text);
    wait_for("two subscribers", Duration::from_secs(30), || {
        (num(&status_of(&socket)["subscribers"]) == 2).then_some(())
    });

    let report_path = dir.join("report.json");
    let w = Command::new(env!("CARGO_BIN_EXE_workload"))
        .arg("--report")
        .arg(&report_path)
        .stdin(Stdio::null())
        .output()
        .expect("run the workload");
    assert!(w.status.success(), "{w:?}");
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let pid = u64::try_from(report.pid).unwrap();
    let exited = |l: &Value| l["event"] == "exit" && num(&l["pid"]) == pid;
    let lines = wait_for("the workload's exit", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&jsonl).ok()?;
        let lines = parse_jsonl(
            text.lines()
                .filter(|l| l.ends_with('}'))
                .collect::<Vec<_>>()
                .join("\n")
                .as_str(),
        )
        .ok()?;
        lines.iter().any(exited).then_some(lines)
    });
    // Only what was asked for: mmap (remap_file_pages with it), munmap,
    // exec/fork/exit of workloads.
    for l in &lines {
        let e = l["event"].as_str().unwrap_or("");
        assert!(
            [
                "mmap",
                "remap_file_pages",
                "munmap",
                "exec",
                "fork",
                "exit",
                "lost"
            ]
            .contains(&e),
            "{l}"
        );
        if e != "lost" {
            assert_eq!(l["comm"], "workload", "{l}");
        }
    }
    let m = &report.mmap_anon;
    let mmap = lines
        .iter()
        .find(|l| l["event"] == "mmap" && l["ret"] == m.result.as_str())
        .unwrap_or_else(|| panic!("no mmap returning {}: {lines:?}", m.result));
    assert_eq!(num(&mmap["pid"]), pid, "{mmap}");
    assert_eq!(num(&mmap["len"]), m.len, "{mmap}");
    assert_eq!(mmap["prot"], "rw-", "{mmap}");
    assert_eq!(mmap["fd"], -1, "{mmap}");
    let f = &report.mmap_file;
    let file = lines
        .iter()
        .find(|l| l["event"] == "mmap" && l["ret"] == f.mmap.result.as_str())
        .unwrap_or_else(|| panic!("no file mmap: {lines:?}"));
    assert_eq!(file["path"], f.path.as_str(), "{file}");
    assert_eq!(num(&file["ino"]), f.ino, "{file}");
    let u = &report.munmap_partial.munmap;
    let munmap = lines
        .iter()
        .find(|l| l["event"] == "munmap" && l["addr"] == u.addr.as_str())
        .unwrap_or_else(|| panic!("no munmap of {}: {lines:?}", u.addr));
    assert_eq!(num(&munmap["pid"]), pid);
    assert_eq!(num(&munmap["len"]), u.len);
    assert_eq!(munmap["ret"], 0);
    // Text: the same events, as stream prints them.
    let ret = m.result.clone();
    wait_for("the mmap in text", Duration::from_secs(30), || {
        let t = std::fs::read_to_string(&text).ok()?;
        t.lines()
            .any(|l| {
                l.contains(&format!(" {pid}/{pid} "))
                    && l.contains(" mmap ")
                    && l.ends_with(&format!("= {ret}"))
            })
            .then_some(())
    });
    assert_eq!(interrupt(c1), Some(0));
    let err = std::fs::read_to_string(jsonl.with_extension("stderr")).unwrap();
    assert!(err.contains("stopped by SIGINT"), "{err}");

    // Neither root nor in the group: one line, exit 2.
    let nobody = ["--reuid=65534", "--regid=65533", "--clear-groups"];
    let bin = mmtrace_bin().unwrap();
    let o = Command::new("setpriv")
        .args(nobody)
        .arg(&bin)
        .args(["stream", "--connect"])
        .arg(&socket)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(err.contains("not allowed"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // A subscriber that never reads.
    use std::io::{BufRead, Write};
    let mut slow = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    slow.write_all(b"{\"v\":1,\"cmd\":\"stream\",\"comms\":[\"mmaploop\"],\"format\":\"jsonl\"}\n")
        .unwrap();
    wait_for("the slow subscriber", Duration::from_secs(30), || {
        (num(&status_of(&socket)["subscribers"]) == 2).then_some(())
    });
    let before = status_of(&socket);
    let l = Command::new(env!("CARGO_BIN_EXE_mmaploop"))
        .arg("1")
        .stdin(Stdio::null())
        .output()
        .expect("run mmaploop");
    assert!(l.status.success(), "{l:?}");
    let rounds: u64 = String::from_utf8_lossy(&l.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // The daemon goes on: it handles the loop's events (or counts them
    // lost) and answers, while the slow queue is full.
    let after = wait_for(
        "the loop's events handled",
        Duration::from_secs(120),
        || {
            let s = status_of(&socket);
            let handled = num(&s["events"]) - num(&before["events"]);
            let lost = num(&s["lost_events"]) - num(&before["lost_events"]);
            (handled + lost >= 2 * rounds && num(&s["subscriber_drops"]) > 0).then_some(s)
        },
    );
    let drops = num(&after["subscriber_drops"]);
    // It reads at last: events, then what it missed, in order.
    slow.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut r = std::io::BufReader::new(slow.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("\"stream\""), "{line}");
    let (mut events, mut told) = (0u64, 0u64);
    while told < drops {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "cut");
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["lost"]["source"] == "subscriber" {
            told += num(&v["lost"]["count"]);
        } else if v.get("lost").is_none() {
            assert_eq!(v["comm"], "mmaploop", "{line}");
            events += 1;
        }
    }
    assert_eq!(told, drops);
    assert!(events > 0);
    // At the stop: an end line with the total.
    let (code, err) = running.stop();
    assert_eq!(code, Some(0), "{err}");
    let mut end = None;
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let v: Value = serde_json::from_str(&line).unwrap();
        if v.get("end").is_some() {
            end = Some(v);
        }
    }
    let end = end.expect("an end line");
    assert_eq!(num(&end["end"]["dropped"]), drops, "{end}");
    assert!(
        end["end"]["reason"].as_str().unwrap().contains("SIGTERM"),
        "{end}"
    );
    // The text client ends with the daemon: exit 0, the reason said.
    let mut c2 = c2;
    assert_eq!(c2.wait().unwrap().code(), Some(0));
    let err = std::fs::read_to_string(text.with_extension("stderr")).unwrap();
    assert!(err.contains("the daemon stopped (SIGTERM)"), "{err}");

    // No daemon: one line, exit 2.
    let o = Command::new(&bin)
        .args(["stream", "--connect"])
        .arg(&socket)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(err.contains("no mmtrace daemon at"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `dump PID` is checked against /proc at the dump (root, real kernel): a
/// quiet process's dumped timeline ends with a requested check that found
/// no drift, before its end records.
#[test]
fn dump_is_checked_at_the_dump() {
    tests::needs_root!();
    let (dir, socket, mut running) = live_daemon("dumpcheck", &["sleep"], "", &[]);
    let mut sleeper = Command::new("sleep")
        .arg("1000")
        .stdin(Stdio::null())
        .spawn()
        .expect("start sleep");
    let pid = sleeper.id();
    exec_done(pid, "sleep");
    let out = dir.join("dump.jsonl");
    let o = wait_for("a dump of the sleep", Duration::from_secs(60), || {
        let o = client(
            &[],
            &["dump", &pid.to_string(), "-o", out.to_str().unwrap()],
            &socket,
        );
        (o.status.code() == Some(0)).then_some(o)
    });
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("checked against /proc at the dump: no drift"),
        "{err}"
    );
    let lines = parse_jsonl(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let bad = schema_errors(&lines);
    assert!(bad.is_empty(), "{bad:?}");
    let check = lines
        .iter()
        .rposition(|l| l["type"] == "check")
        .expect("a check");
    let c = &lines[check];
    assert_eq!(c["reason"], "request", "{c}");
    assert_eq!(c["void"], false, "{c}");
    assert_eq!(num(&c["drift"]), 0, "{c}");
    assert!(num(&c["regions"]) > 0, "{c}");
    assert!(!lines.iter().any(|l| l["type"] == "drift"));
    // After it: only its end records.
    for l in &lines[check + 1..] {
        let t = l["type"].as_str().unwrap_or("");
        assert!(
            t == "end" || t == "lost" || (t == "process" && l["event"] == "end"),
            "{l}"
        );
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let (code, err) = running.stop();
    assert_eq!(code, Some(0), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The memory cap degrades (root, real kernel): a daemon over its cap (a
/// test-only cap of 1 MiB) counts faults per region only (step 1, said in
/// the timelines as `lost` records of kind `fault_detail`), then tracks
/// no new process (step 2, counted per comm), each step warned once; it
/// keeps running and answering, and `status` shows the level and counts.
#[test]
fn memory_cap_degrades_in_order() {
    tests::needs_root!();
    // Tracked from the start: a process that faults all the time.
    let mut spinner = Command::new(env!("CARGO_BIN_EXE_spinner"))
        .arg("120")
        .stdin(Stdio::null())
        .spawn()
        .expect("start the spinner");
    let spid = spinner.id();
    exec_done(spid, "spinner");
    let (dir, socket, mut running) = live_daemon(
        "memcap",
        &["spinner", "workload"],
        "faults = \"all\"\nmemory_cap_mib = 16\n",
        &[("MMTRACE_TEST_MEMORY_CAP_KIB", "1024")],
    );
    let s = wait_for("step 2", Duration::from_secs(60), || {
        let s = status_of(&socket);
        (num(&s["degrade_level"]) == 2 && num(&s["fault_detail_dropped"]) > 0).then_some(s)
    });
    assert_eq!(s["degrade_steps"], serde_json::json!([1, 1]), "{s}");
    assert_eq!(num(&s["memory_cap_bytes"]), 1 << 20, "{s}");
    // A new process: not tracked, counted by its comm.
    let report_path = dir.join("report.json");
    let w = Command::new(env!("CARGO_BIN_EXE_workload"))
        .arg("--report")
        .arg(&report_path)
        .stdin(Stdio::null())
        .output()
        .expect("run the workload");
    assert!(w.status.success(), "{w:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let s = loop {
        let s = status_of(&socket);
        // Its exec and its child's fork.
        if num(&s["untracked_by_comm"]["workload"]) >= 2 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the workload is not counted: {s}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // The spinner is still tracked; the workload never was.
    let o = client(&[], &["ps", "--json"], &socket);
    let ps: Value = serde_json::from_slice(&o.stdout).unwrap();
    let pids: Vec<u64> = ps["ps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| num(&p["pid"]))
        .collect();
    assert!(pids.contains(&u64::from(spid)), "{ps}");
    assert_eq!(num(&s["degrade_level"]), 2, "{s}");
    let _ = spinner.kill();
    let _ = spinner.wait();
    let (code, err) = running.stop();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(err.matches("degrading, step 1").count(), 1, "{err}");
    assert_eq!(err.matches("degrading, step 2").count(), 1, "{err}");
    let stats = err.lines().rfind(|l| l.contains("stats:")).unwrap();
    assert!(stats.contains("memory degradation level 2"), "{stats}");
    assert!(stats.contains("\"workload\" "), "{stats}");
    // The spinner's timeline says its faults lost their page detail.
    let timelines = dir.join("data").join("timelines");
    let file = timelines_of(&timelines, spid, "spinner")
        .pop()
        .expect("the spinner's timeline");
    let lines = parse_jsonl(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let lost = lines
        .iter()
        .find(|l| l["type"] == "lost" && l["kind"] == "fault_detail")
        .unwrap_or_else(|| panic!("no fault_detail lost record: {}", file.display()));
    assert!(num(&lost["count"]) > 0, "{lost}");
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert!(timelines_of(&timelines, report.pid as u32, "workload").is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `stream --connect` refuses what only a local session can do (a command,
/// --regions, --kill-on-stop) with one line and exit 2, before connecting.
#[test]
fn stream_connect_refuses_local_only_options() {
    let bin = mmtrace_bin().unwrap_or_else(|e| panic!("{e}"));
    for (args, want) in [
        (&["--regions"][..], "--regions"),
        (&["--", "true"][..], "-- CMD"),
        (&["--kill-on-stop"][..], "--kill-on-stop"),
    ] {
        let o = Command::new(&bin)
            .args(["stream", "--connect", "/nonexistent/mmtrace.sock"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}
