//! Bad input gets one clear line and a non-zero exit, before anything is
//! attached; hostile process names and paths cannot reach the terminal raw.

mod jsonl_check;

use std::{
    ffi::OsStr,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt, process::CommandExt},
    path::PathBuf,
    process::{Command, Output, Stdio},
};

use tests::{mmtrace_bin, parse_jsonl};

fn mmtrace(args: &[&OsStr]) -> Command {
    let mut c = Command::new(mmtrace_bin().unwrap_or_else(|e| panic!("{e}")));
    c.args(args).stdin(Stdio::null());
    c
}

fn run(args: &[&str]) -> Output {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    mmtrace(&args).output().expect("run mmtrace")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = tests::workspace_dir()
        .join("target")
        .join("tmp")
        .join(format!("mmtrace-errors-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The last line of stderr names the problem; the exit code is `code`.
fn assert_fails(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr:\n{err}");
    assert!(
        err.lines().any(|l| l.contains(needle)),
        "expected a line containing {needle:?}; stderr:\n{err}"
    );
    assert!(
        o.stdout.is_empty(),
        "no events expected, got: {:?}",
        o.stdout
    );
}

#[test]
fn not_root_is_refused_with_the_missing_capabilities() {
    tests::needs_root!();
    let o = mmtrace(&[OsStr::new("stream")])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run mmtrace as nobody");
    assert_fails(&o, 2, "CAP_BPF");
    let err = stderr(&o);
    assert!(err.contains("root"), "{err}");
    assert_eq!(err.lines().count(), 1, "one clear line, got:\n{err}");
}

#[test]
fn pid_that_does_not_exist() {
    tests::needs_root!();
    // A pid above every pid in use and above pid_max cannot exist.
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pid = (pid_max + 1).to_string();
    let o = run(&["stream", "--pid", &pid]);
    assert_fails(&o, 2, &format!("no process with pid {pid}"));
}

#[test]
fn unwritable_output() {
    tests::needs_root!();
    let dir = scratch("unwritable");
    let target = dir.join("no-such-dir").join("events.jsonl");
    let o = run(&[
        "stream",
        "--output",
        target.to_str().unwrap(),
        "--duration",
        "1",
    ]);
    assert_fails(&o, 2, "cannot write");
    assert!(!target.exists());
}

#[test]
fn command_not_found() {
    tests::needs_root!();
    let o = run(&["stream", "--", "/nonexistent/mmtrace-no-such-program"]);
    assert_fails(
        &o,
        2,
        "cannot execute `/nonexistent/mmtrace-no-such-program`",
    );
    let o = run(&["stream", "--", "mmtrace-no-such-program-in-path"]);
    assert_fails(&o, 2, "not found in PATH");
}

#[test]
fn command_not_executable() {
    tests::needs_root!();
    let dir = scratch("noexec");
    let file = dir.join("not-executable");
    std::fs::write(&file, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = run(&["stream", "--", file.to_str().unwrap()]);
    assert_fails(&o, 2, "permission denied");
}

#[test]
fn wrong_flags() {
    tests::needs_root!();
    let o = run(&["stream", "--events", "mmap,bogus"]);
    assert_fails(&o, 2, "invalid value 'bogus'");
    let o = run(&["stream", "--faults", "sometimes"]);
    assert_fails(&o, 2, "invalid value 'sometimes'");
    let o = run(&["stream", "--buffer-size", "3M"]);
    assert_fails(&o, 2, "power of two");
    let o = run(&["stream", "--no-such-flag"]);
    assert_fails(&o, 2, "--no-such-flag");
}

/// A program reached through a link whose name holds escape sequences, a
/// newline and invalid UTF-8: its comm and exec path carry those bytes.
fn hostile_link(dir: &std::path::Path) -> PathBuf {
    let name = OsStr::from_bytes(b"\x1b]0;pwn\x07\x1b[2J\nevil\xff");
    let link = dir.join(name);
    std::os::unix::fs::symlink("/bin/true", &link).unwrap();
    link
}

#[test]
fn hostile_names_are_escaped_in_text() {
    tests::needs_root!();
    let dir = scratch("hostile-text");
    let link = hostile_link(&dir);
    let o = mmtrace(&[
        OsStr::new("stream"),
        OsStr::new("--events"),
        OsStr::new("process,mmap"),
        OsStr::new("--"),
        link.as_os_str(),
    ])
    .output()
    .expect("run mmtrace");
    assert_eq!(o.status.code(), Some(0), "stderr:\n{}", stderr(&o));
    let out = &o.stdout;
    assert!(!out.contains(&0x1b), "raw ESC reached the output");
    assert!(!out.contains(&0x07), "raw BEL reached the output");
    let text = String::from_utf8(out.clone()).expect("text output is valid UTF-8");
    let exec: Vec<&str> = text.lines().filter(|l| l.contains(" exec ")).collect();
    assert_eq!(exec.len(), 1, "one exec line expected:\n{text}");
    assert!(
        exec[0].contains(r"\x1b]0;pwn\x07\x1b[2J\nevil\xff"),
        "{}",
        exec[0]
    );
    // Every line is one event: the newline in the name did not split one.
    for line in text.lines() {
        assert!(line.split_whitespace().count() >= 4, "broken line {line:?}");
    }
}

#[test]
fn hostile_names_are_valid_json() {
    tests::needs_root!();
    let dir = scratch("hostile-json");
    let link = hostile_link(&dir);
    let o = mmtrace(&[
        OsStr::new("stream"),
        OsStr::new("--format"),
        OsStr::new("jsonl"),
        OsStr::new("--events"),
        OsStr::new("process"),
        OsStr::new("--"),
        link.as_os_str(),
    ])
    .output()
    .expect("run mmtrace");
    assert_eq!(o.status.code(), Some(0), "stderr:\n{}", stderr(&o));
    let text = String::from_utf8(o.stdout).expect("JSONL is valid UTF-8");
    let events = parse_jsonl(&text).expect("every line is JSON");
    jsonl_check::assert_lines_valid(&events, "the stream of a hostile name");
    let exec = events
        .iter()
        .find(|e| e["event"] == "exec")
        .expect("an exec event");
    let raw = link.as_os_str().as_bytes();
    assert_eq!(
        exec["path"].as_str().unwrap(),
        String::from_utf8_lossy(raw),
        "{exec}"
    );
    // The invalid byte is kept, as hex.
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(exec["path_hex"].as_str(), Some(hex.as_str()), "{exec}");
    // The kernel keeps the first 15 bytes of the name as comm.
    let comm = &b"\x1b]0;pwn\x07\x1b[2J\nevil\xff"[..15];
    assert_eq!(
        exec["comm"].as_str().unwrap(),
        String::from_utf8_lossy(comm)
    );
}
