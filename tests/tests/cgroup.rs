//! `--cgroup DIR`: selection in the kernel by the cgroup of each event's
//! task, and every process's cgroup shown where a user looks (the
//! timeline's process records, `report`'s process header, stream's exec
//! lines).
//!
//! The test makes a child cgroup of its own memory cgroup (v1 where the
//! memory controller is on v1, as on these machines; else a child of its v2
//! cgroup), runs a workload inside (in a cgroup made below it after the
//! start) and one outside while a system-wide `mmtrace record --cgroup
//! DIR` runs, and removes the cgroups.

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{read_jsonl, run_mmtrace_raw, wait_until, workspace_dir, MMTRACE_TIMEOUT};

/// A cgroup made for the test, removed when dropped.
struct Cgroup {
    dir: PathBuf,
    /// Its path as /proc/PID/cgroup shows it.
    path: String,
    /// "v1_memory" or "v2": the key of the timeline's `cgroup` object.
    key: &'static str,
}

impl Cgroup {
    fn make(test: &str) -> Result<Cgroup, String> {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let name = format!("mmtrace-cg-{}-{test}", std::process::id());
        let v1 = own.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            ctrls
                .split(',')
                .any(|c| c == "memory")
                .then(|| path.to_string())
        });
        let (root, own_path, key) = match v1 {
            Some(path) => ("/sys/fs/cgroup/memory", path, "v1_memory"),
            None => {
                let path = own
                    .lines()
                    .find_map(|l| l.strip_prefix("0::"))
                    .ok_or("/proc/self/cgroup has neither a v1 memory line nor a v2 one")?;
                ("/sys/fs/cgroup", path.to_string(), "v2")
            }
        };
        let dir = Path::new(root)
            .join(own_path.trim_start_matches('/'))
            .join(&name);
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot create the cgroup {}: {e}", dir.display()))?;
        let path = format!("{}/{name}", own_path.trim_end_matches('/'));
        Ok(Cgroup { dir, path, key })
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Empty once its processes are reaped.
        let gone = wait_until(Duration::from_secs(10), "the cgroup to empty", || {
            // Its child cgroups first (a cgroup's files are not removable:
            // the directories are the cgroups).
            if let Ok(entries) = std::fs::read_dir(&self.dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
            }
            std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists()
        });
        if gone.is_err() {
            eprintln!("could not remove the cgroup {}", self.dir.display());
        }
    }
}

fn tmp(name: &str) -> PathBuf {
    let dir = workspace_dir()
        .join("target")
        .join("tmp")
        .join(format!("mmtrace-cgroup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs the workload to its end: inside `procs` (a cgroup.procs file: the
/// shell moves itself there, then execs it) or where the test is. Its pid.
fn workload(procs: Option<&Path>, report: &Path) -> u32 {
    let script = match procs {
        Some(p) => format!("echo $$ > '{}' && exec \"$0\" --report \"$1\"", p.display()),
        None => "exec \"$0\" --report \"$1\"".to_string(),
    };
    let mut child = Command::new("/bin/sh")
        .args(["-c", &script, env!("CARGO_BIN_EXE_workload")])
        .arg(report)
        .stdin(Stdio::null())
        .spawn()
        .expect("start the workload");
    let pid = child.id();
    let status = child.wait().expect("wait for the workload");
    assert!(status.success(), "the workload failed: {status}");
    pid
}

#[test]
fn record_selects_the_cgroup_and_names_it() {
    tests::needs_root!();
    let cg = match Cgroup::make("record") {
        Ok(cg) => cg,
        Err(why) => {
            if !tests::run_unless_emulated(env!("CARGO_CRATE_NAME"), &why) {
                return;
            }
            panic!("cannot make a cgroup for the test: {why}");
        }
    };
    let out = tmp("record.jsonl");
    let mut mmtrace = Command::new(tests::mmtrace_bin().unwrap_or_else(|e| panic!("{e}")))
        .arg("record")
        .arg("--cgroup")
        .arg(&cg.dir)
        .arg("-o")
        .arg(&out)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mmtrace");
    let mut lines = BufReader::new(mmtrace.stderr.take().unwrap()).lines();
    let mut head = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let ready = line.contains("tracing ");
        head.push(line);
        if ready {
            break;
        }
    }
    // A cgroup made below the selected one after the start is selected
    // too: the kernel walks up from each event's task's cgroup.
    let sub = cg.dir.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let inside = workload(Some(&sub.join("cgroup.procs")), &tmp("inside.json"));
    let outside = workload(None, &tmp("outside.json"));
    // Everything both did is in the ring buffer once they are reaped.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(mmtrace.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = mmtrace.wait().unwrap();
    assert!(status.success(), "{status}: {head:?} {rest:?}");

    let records = read_jsonl(&out).unwrap_or_else(|e| panic!("{e}"));
    let header = &records[0];
    assert!(
        header["selection"]["cgroups"][0]
            .as_str()
            .is_some_and(|c| c.ends_with(&cg.path)),
        "the header names the selection: {header}"
    );
    let of = |pid: u32| -> Vec<&Value> { records.iter().filter(|r| r["pid"] == pid).collect() };
    let mine = of(inside);
    assert!(
        mine.iter()
            .any(|r| r["type"] == "process" && r["event"] == "exit"),
        "the inside workload ({inside}) is recorded to its exit: {:?}",
        records
            .iter()
            .filter(|r| r["type"] == "process")
            .collect::<Vec<_>>()
    );
    assert!(
        mine.iter()
            .any(|r| r["type"] == "region" && r["op"] == "born"),
        "its regions are recorded"
    );
    let sub_path = format!("{}/sub", cg.path);
    for r in mine.iter().filter(|r| r["type"] == "process") {
        assert_eq!(
            r["cgroup"][cg.key].as_str(),
            Some(sub_path.as_str()),
            "each of its process records names its cgroup: {r}"
        );
    }
    assert!(
        of(outside).is_empty(),
        "nothing of the outside workload ({outside}): {:?}",
        of(outside).first()
    );

    let run = run_mmtrace_raw([OsStr::new("report"), out.as_os_str()], MMTRACE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(run.status.success(), "{}", run.stderr);
    let header_line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("Cgroup"))
        .unwrap_or_else(|| panic!("no Cgroup line in the report:\n{}", run.stdout));
    assert!(header_line.contains(&sub_path), "{header_line}");
}

#[test]
fn stream_exec_lines_name_the_cgroup() {
    tests::needs_root!();
    let cg = match Cgroup::make("stream") {
        Ok(cg) => cg,
        Err(why) => {
            if !tests::run_unless_emulated(env!("CARGO_CRATE_NAME"), &why) {
                return;
            }
            panic!("cannot make a cgroup for the test: {why}");
        }
    };
    let out = tmp("stream.jsonl");
    let procs = cg.dir.join("cgroup.procs");
    // The program stays until the test has seen its exec line: a process
    // gone before mmtrace handles its exec has no cgroup to read.
    let script = format!("echo $$ > '{}' && exec /bin/sleep 1000", procs.display());
    let mut mmtrace = Command::new(tests::mmtrace_bin().unwrap_or_else(|e| panic!("{e}")))
        .args(["stream", "--format", "jsonl", "--events", "process", "-o"])
        .arg(&out)
        .args(["--", "/bin/sh", "-c", &script])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mmtrace");
    let exec_line = || -> Option<Value> {
        read_jsonl(&out)
            .ok()?
            .into_iter()
            .find(|e| e["event"] == "exec" && e["path"] == "/bin/sleep")
    };
    let seen = wait_until(Duration::from_secs(60), "the exec of sleep", || {
        exec_line().is_some()
    });
    let line = exec_line();
    if let Some(pid) = line.as_ref().and_then(|l| l["pid"].as_i64()) {
        // SAFETY: a signal to the command this test's mmtrace started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let _ = mmtrace.wait();
    seen.unwrap_or_else(|e| panic!("{e}"));
    let line = line.unwrap();
    let key = format!("cgroup_{}", cg.key);
    assert_eq!(line[&key].as_str(), Some(cg.path.as_str()), "{line}");
}

#[test]
fn a_bad_cgroup_is_one_line_and_exit_2() {
    tests::needs_root!();
    let out = tmp("bad.jsonl");
    let mut bad = vec![
        "/nonexistent/mmtrace-cgroup".to_string(),
        // A directory, but no cgroup.
        std::env::temp_dir().display().to_string(),
    ];
    // A v1 hierarchy without the memory controller, where there is one.
    for other in ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/pids"] {
        if Path::new(other).join("cgroup.procs").exists() {
            bad.push(other.to_string());
        }
    }
    for dir in &bad {
        let run = run_mmtrace_raw(
            [
                "record",
                "--cgroup",
                dir,
                "-o",
                out.to_str().unwrap(),
                "--",
                "/bin/true",
            ],
            MMTRACE_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(run.status.code(), Some(2), "{dir}: {}", run.stderr);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{dir}: one line: {:?}", run.stderr);
        assert!(lines[0].contains("--cgroup"), "{}", lines[0]);
        assert!(!out.exists(), "no output for {dir}");
    }
}

/// A child killed (SIGKILL) and reaped when the test ends, panic or not.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.0 GET of /metrics on 127.0.0.1:`port`: its body.
fn metrics(port: u16) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let (_, body) = text.split_once("\r\n\r\n").ok_or("no head")?;
    Ok(body.to_string())
}

/// The daemon with `select.cgroup` and `metrics_group_by = "cgroup"`: a
/// process already running in the cgroup is seeded, its metrics carry the
/// label `cgroup`, `mmtrace ps` names its cgroup; one running outside is
/// not traced.
#[test]
fn the_daemon_selects_and_groups_by_cgroup() {
    tests::needs_root!();
    let cg = match Cgroup::make("daemon") {
        Ok(cg) => cg,
        Err(why) => {
            if !tests::run_unless_emulated(env!("CARGO_CRATE_NAME"), &why) {
                return;
            }
            panic!("cannot make a cgroup for the test: {why}");
        }
    };
    let dir = tmp("daemon");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // metricsload prints "ready PID" once its memory is touched, then waits
    // on its standard input.
    let start = |procs: Option<&Path>| -> (Guard, u32) {
        let script = match procs {
            Some(p) => format!("echo $$ > '{}' && exec \"$0\" 4", p.display()),
            None => "exec \"$0\" 4".to_string(),
        };
        let mut c = Command::new("/bin/sh")
            .args(["-c", &script, env!("CARGO_BIN_EXE_metricsload")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start metricsload");
        let mut line = String::new();
        BufReader::new(c.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid = line
            .trim()
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{line:?}"));
        (Guard(c), pid)
    };
    let (_inside, inside) = start(Some(&cg.dir.join("cgroup.procs")));
    let (_outside, outside) = start(None);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let socket = dir.join("mmtrace.sock");
    let config = dir.join("mmtrace.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nmetrics_listen = \"127.0.0.1:{port}\"\n\
             metrics_group_by = \"cgroup\"\n\
             [socket]\npath = \"{}\"\n[select]\ncgroup = [\"{}\"]\n",
            dir.join("data").display(),
            socket.display(),
            cg.dir.display()
        ),
    )
    .unwrap();
    let stderr = dir.join("daemon.stderr");
    let _daemon = Guard(
        Command::new(tests::mmtrace_bin().unwrap_or_else(|e| panic!("{e}")))
            .arg("daemon")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start mmtrace daemon"),
    );
    let series = format!("mmtrace_processes{{cgroup=\"{}\"}} 1", cg.path);
    let mut last = String::new();
    let found = wait_until(Duration::from_secs(60), "the cgroup's series", || {
        last = metrics(port).unwrap_or_else(|e| e);
        last.contains(&series)
    });
    found.unwrap_or_else(|e| {
        panic!(
            "{e}: {last}\n{}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        )
    });
    assert!(!last.contains("comm=\""), "grouped by cgroup only: {last}");
    let run = run_mmtrace_raw(
        [
            OsStr::new("ps"),
            OsStr::new("--sort"),
            OsStr::new("pid"),
            OsStr::new("--socket"),
            socket.as_os_str(),
        ],
        MMTRACE_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(run.status.success(), "{}", run.stderr);
    let rows: Vec<&str> = run.stdout.lines().skip(1).collect();
    assert!(
        rows.iter()
            .any(|r| r.split_whitespace().next() == Some(&inside.to_string())
                && r.ends_with(&cg.path)),
        "ps shows {inside} in {}:\n{}",
        cg.path,
        run.stdout
    );
    assert!(
        !rows
            .iter()
            .any(|r| r.split_whitespace().next() == Some(&outside.to_string())),
        "ps does not show {outside}:\n{}",
        run.stdout
    );
}
