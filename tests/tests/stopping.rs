//! Stopping is prompt: when tracing stops before the command ends
//! (`--duration` here, as Ctrl-C and SIGTERM do), mmtrace finishes and
//! exits at once, leaving the command running on its own and saying so,
//! or killing it with `--kill-on-stop`. Nothing here measures time: the
//! command outlives mmtrace by design.

use tests::{closing_summary, run_mmtrace_raw, MMTRACE_TIMEOUT};

/// A command that lets go of mmtrace's pipes and sleeps far longer than
/// the tracing lasts.
const SLEEPER: &[&str] = &["/bin/sh", "-c", "exec >/dev/null 2>&1; exec sleep 300"];

/// The pid in "(command pid N left running)" or "(command pid N killed)".
fn command_pid(stderr: &str, fate: &str) -> u32 {
    let line = stderr
        .lines()
        .find(|l| l.contains(fate))
        .unwrap_or_else(|| panic!("no `{fate}` in:\n{stderr}"));
    let at = line.find("command pid ").expect("pid") + "command pid ".len();
    line[at..]
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line}"))
}

/// The state letter of a process, if it still exists.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

fn run(extra: &[&str]) -> tests::MmtraceRun {
    let mut args = vec!["stream", "--events", "mmap", "--duration", "0.5"];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(SLEEPER);
    let run = run_mmtrace_raw(&args, MMTRACE_TIMEOUT).unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    let summary = closing_summary(&run.stderr).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        summary
            .end
            .as_deref()
            .is_some_and(|e| e.starts_with("stopped after --duration (command pid ")),
        "{summary:?}"
    );
    run
}

#[test]
fn the_command_is_left_running() {
    tests::needs_root!();
    let run = run(&[]);
    let pid = command_pid(&run.stderr, "left running");
    let st = state(pid);
    // SAFETY: ending the sleeper the test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(
        matches!(st, Some('S' | 'R')),
        "command {pid} is {st:?} after mmtrace exited"
    );
}

#[test]
fn kill_on_stop_ends_the_command() {
    tests::needs_root!();
    let run = run(&["--kill-on-stop"]);
    let pid = command_pid(&run.stderr, "killed");
    // Reaped by mmtrace, or a zombie awaiting a reaper: not running.
    let st = state(pid);
    assert!(matches!(st, None | Some('Z')), "command {pid} is {st:?}");
}
