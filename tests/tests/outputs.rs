//! Outputs are safe and private: never through a planted link, never into
//! another user's file in a shared directory, created 0600, left untouched
//! when the command cannot run, and cut at a whole line with an exit
//! status that says so when the disk fills up.

mod jsonl_check;

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use tests::{closing_summary, mmtrace_bin, parse_jsonl, workspace_dir};

/// mmtrace's exit status for an incomplete output (EX_IOERR).
const OUTPUT_INCOMPLETE: i32 = 74;

fn run(args: &[&str]) -> Output {
    Command::new(mmtrace_bin().unwrap_or_else(|e| panic!("{e}")))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run mmtrace")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh directory; `shared`: world-writable and sticky, like /tmp.
fn scratch(name: &str, shared: bool) -> PathBuf {
    let dir = workspace_dir()
        .join("target")
        .join("tmp")
        .join(format!("mmtrace-outputs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if shared {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    }
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn refused(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
}

#[test]
fn a_planted_symlink_is_not_followed() {
    tests::needs_root!();
    let dir = scratch("symlink", true);
    let victim = dir.join("victim");
    std::fs::write(&victim, "root's secret").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = dir.join("events.txt");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    for args in [
        &["stream", "-o", s(&link), "--duration", "0.1"][..],
        &["record", "-o", s(&link), "--duration", "0.1"],
    ] {
        refused(&run(args), "symbolic link");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's secret");
    }
}

#[test]
fn another_users_file_in_a_shared_directory_is_refused() {
    tests::needs_root!();
    let dir = scratch("foreign", true);
    let planted = dir.join("events.txt");
    std::fs::write(&planted, "").unwrap();
    // SAFETY: a valid path; giving the file to `nobody`.
    let c = std::ffi::CString::new(s(&planted)).unwrap();
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0);
    for args in [
        &["stream", "-o", s(&planted), "--duration", "0.1"][..],
        &["record", "-o", s(&planted), "--duration", "0.1"],
    ] {
        refused(&run(args), "belongs to uid 65534");
        assert_eq!(std::fs::metadata(&planted).unwrap().len(), 0);
    }
}

#[test]
fn outputs_are_created_private() {
    tests::needs_root!();
    let dir = scratch("private", false);
    let events = dir.join("events.jsonl");
    let timeline = dir.join("timeline.json");
    let o = run(&[
        "stream",
        "-o",
        s(&events),
        "--format",
        "jsonl",
        "--",
        "/bin/true",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["record", "-o", s(&timeline), "--", "/bin/true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for p in [&events, &timeline] {
        let mode = std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    // Only the timeline is left: no temporary file beside it.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
}

/// `--output-group`: 0640 and the group's; an unknown group is refused
/// before anything starts.
#[test]
fn a_group_of_readers_gets_the_outputs() {
    tests::needs_root!();
    let dir = scratch("group", false);
    let events = dir.join("events.jsonl");
    let timeline = dir.join("timeline.json");
    // Group 4242 need not have a name: a number is taken as it is.
    let o = run(&[
        "stream",
        "-o",
        s(&events),
        "--output-group",
        "4242",
        "--",
        "/bin/true",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&[
        "record",
        "-o",
        s(&timeline),
        "--output-group",
        "root",
        "--",
        "/bin/true",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (p, gid) in [(&events, 4242), (&timeline, 0)] {
        let m = std::fs::metadata(p).unwrap();
        assert_eq!((m.mode() & 0o777, m.gid()), (0o640, gid), "{}", p.display());
    }
    let nowhere = dir.join("nowhere.json");
    let o = run(&[
        "record",
        "-o",
        s(&nowhere),
        "--output-group",
        "no-such-group-here",
        "--",
        "/bin/true",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no group named"), "{}", stderr(&o));
    assert!(!nowhere.exists());
}

#[test]
fn a_command_that_cannot_run_leaves_the_output_untouched() {
    tests::needs_root!();
    let dir = scratch("untouched", false);
    let out = dir.join("out");
    std::fs::write(&out, "previous run").unwrap();
    for args in [
        &["stream", "-o", s(&out), "--", "/nonexistent/program"][..],
        &["record", "-o", s(&out), "--", "/nonexistent/program"],
        &["stream", "-o", s(&out), "--", "/tmp"],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "previous run");
    }
}

/// A small tmpfs, unmounted when dropped.
struct SmallFs(PathBuf);

impl SmallFs {
    fn new(name: &str, size: &str) -> SmallFs {
        let dir = scratch(name, false);
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                s(&dir),
            ])
            .status()
            .expect("mount");
        assert!(ok.success(), "cannot mount a tmpfs at {}", dir.display());
        SmallFs(dir)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_cuts_the_stream_at_a_line_and_says_so() {
    tests::needs_root!();
    let fs = SmallFs::new("full-stream", "16k");
    let events = fs.0.join("events.jsonl");
    // Far more than 16 KiB of events, from a command that succeeds.
    let o = run(&[
        "stream",
        "--format",
        "jsonl",
        "--faults",
        "all",
        "-o",
        s(&events),
        "--",
        "/bin/sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8; do /bin/ls -R /usr/share/doc >/dev/null; done; exit 3",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(OUTPUT_INCOMPLETE), "{err}");
    assert!(err.contains("the output is incomplete"), "{err}");
    // The command's own status is still reported.
    let summary = closing_summary(&err).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        summary.end.as_deref(),
        Some("command exited (code 3)"),
        "{summary:?}"
    );
    let text = std::fs::read_to_string(&events).unwrap();
    assert!(!text.is_empty() && text.ends_with('\n'), "cut mid-line");
    jsonl_check::assert_lines_valid(&parse_jsonl(&text).unwrap(), &events.display().to_string());
}

#[test]
fn a_full_disk_leaves_no_half_timeline() {
    tests::needs_root!();
    let fs = SmallFs::new("full-record", "8k");
    let timeline = fs.0.join("timeline.json");
    let o = run(&[
        "record",
        "-o",
        s(&timeline),
        "--",
        "/bin/sh",
        "-c",
        "/bin/ls /usr/share/doc >/dev/null",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(OUTPUT_INCOMPLETE), "{err}");
    // The first write that fails is said at once, and recording stops (the
    // command runs on, untraced, to its end: mmtrace waits for it, as it
    // may be stopped at an exec or held at its exit until mmtrace answers).
    assert_eq!(
        err.matches("cannot write").count(),
        1,
        "one line about the failed write:\n{err}"
    );
    let summary = closing_summary(&err).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        summary
            .end
            .as_deref()
            .is_some_and(|e| e == "command exited (code 0)"),
        "{summary:?}"
    );
    assert!(!timeline.exists(), "a half timeline was left");
    assert_eq!(std::fs::read_dir(&fs.0).unwrap().count(), 0);
}
