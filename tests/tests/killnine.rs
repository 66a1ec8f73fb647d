//! `kill -9` of `mmtrace record -o F -- CMD` at any moment leaves the
//! command as if mmtrace had never been there: it runs to its end and
//! exits with its own status (or, killed before its exec, exits 127
//! without running), is never left stopped, and never hangs.
//!
//! 50 runs across three commands (tests/src/bin/nohold.rs): several threads
//! busy mapping when the program exits, a single thread, and a program with
//! a seccomp listener of its own; mmtrace is killed at start-up, right
//! after the command's exec, while it runs, or while mmtrace writes its
//! document (the command has exited). This test process is a child
//! subreaper: a command orphaned by the kill becomes its child, and its
//! exit status is read here.
//!
//! The only test of this file: it reaps orphans, which must be its own.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tests::{mmtrace_bin, proc_stat, require_root, wait_until, workspace_dir};

const RUNS: usize = 50;
/// How long each command maps before exiting, ms.
const COMMAND_MS: u64 = 120;
/// Runs at once (the machine may have two cores).
const PARALLEL: usize = 4;
/// Generous: a busy machine.
const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
enum Moment {
    StartUp,
    AfterExec,
    Running,
    FinalWrite,
}

const MOMENTS: [Moment; 4] = [
    Moment::StartUp,
    Moment::AfterExec,
    Moment::Running,
    Moment::FinalWrite,
];
const MODES: [&str; 3] = ["threads", "single", "seccomp"];

/// xorshift64*: random moments, reproducible from the seed printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn scratch() -> PathBuf {
    let dir = workspace_dir()
        .join("target")
        .join("tmp")
        .join(format!("mmtrace-killnine-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn read_pid(marks: &Path) -> Option<i32> {
    std::fs::read_to_string(marks.with_extension("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Children of process `pid` (every thread's).
fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    out
}

/// Waits for `pid`, a child of ours, to exit, checking it is never seen
/// stopped meanwhile; its wait status, or None when it is not our child
/// (mmtrace had reaped it).
fn reap(pid: i32, what: &str) -> Result<Option<i32>, String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut status = 0;
        // SAFETY: waiting for one pid, without blocking.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::__WALL) };
        if rc == pid {
            return Ok(Some(status));
        }
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ECHILD) {
                return Ok(None);
            }
            return Err(format!("{what}: waitpid({pid}): {e}"));
        }
        if let Some(st) = proc_stat(pid) {
            if "Tt".contains(st.state) {
                return Err(format!("{what}: pid {pid} is stopped: {st:?}"));
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{what}: pid {pid} still there after {PATIENCE:?}: {:?}",
                proc_stat(pid)
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One run: starts mmtrace, kills it at `moment` (after `delay_ms` for
/// the random ones), then checks what became of the command.
fn one_run(dir: &Path, n: usize, mode: &str, moment: Moment, delay_ms: u64) -> Result<(), String> {
    let code = 10 + (n % 50) as i32;
    let marks = dir.join(format!("run{n}"));
    let out = dir.join(format!("run{n}.json"));
    let what = format!("run {n} ({mode}, killed {moment:?} +{delay_ms} ms)");
    let mut mmtrace: Child = Command::new(mmtrace_bin()?)
        .arg("record")
        .arg("-o")
        .arg(&out)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_nohold"))
        .arg(mode)
        .arg(&marks)
        .arg(COMMAND_MS.to_string())
        .arg(code.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{what}: cannot start mmtrace: {e}"))?;
    let started = || read_pid(&marks);
    match moment {
        Moment::StartUp => {}
        Moment::AfterExec | Moment::Running => {
            // The command wrote its pid: it has exec'd and runs.
            let _ = wait_until(PATIENCE, "the command to start", || {
                started().is_some() || matches!(mmtrace.try_wait(), Ok(Some(_)))
            });
        }
        Moment::FinalWrite => {
            // The command is done (a zombie until mmtrace reaps it, or
            // reaped): mmtrace is writing its document.
            let _ = wait_until(PATIENCE, "the command to end", || {
                started().is_some_and(|pid| {
                    proc_stat(pid).is_none_or(|s| s.state == 'Z')
                        || std::fs::metadata(marks.with_extension("done")).is_ok()
                }) || matches!(mmtrace.try_wait(), Ok(Some(_)))
            });
        }
    }
    std::thread::sleep(Duration::from_millis(delay_ms));
    // The held command, once forked (its pid stays at exec).
    let forked = children_of(mmtrace.id() as i32);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(mmtrace.id() as i32, libc::SIGKILL) };
    let _ = mmtrace.wait();

    // mmtrace is gone: what it had forked is ours now.
    let Some(pid) = started().or_else(|| forked.first().copied()) else {
        // Killed before the fork.
        return Ok(());
    };
    let status = reap(pid, &what)?;
    // Read after the end: it may have exec'd just as mmtrace died.
    let ran = started().is_some();
    match (status, ran) {
        (Some(status), true) => {
            if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == code) {
                return Err(format!(
                    "{what}: the command ended with status {status:#x}, not exit {code}"
                ));
            }
        }
        (Some(status), false) => {
            // Released never: it leaves without running.
            if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 127) {
                return Err(format!(
                    "{what}: the held child ended with status {status:#x}, not 127"
                ));
            }
        }
        (None, true) => {
            // mmtrace reaped it before dying: it reached its end.
            if std::fs::metadata(marks.with_extension("done")).is_err() {
                return Err(format!("{what}: reaped by mmtrace without finishing"));
            }
        }
        (None, false) => {}
    }
    Ok(())
}

#[test]
fn kill_9_at_any_moment_leaves_the_command_alone() {
    tests::needs_root!();
    require_root().unwrap();
    // SAFETY: a process attribute; orphans of our descendants become ours.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
        0
    );
    let dir = scratch();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill -9 matrix: seed {seed:#x}");
    let mut rng = Rng(seed);
    let plan: Vec<(usize, &str, Moment, u64)> = (0..RUNS)
        .map(|n| {
            let moment = MOMENTS[n % MOMENTS.len()];
            let delay = match moment {
                Moment::StartUp => rng.below(400),
                Moment::AfterExec => rng.below(3),
                Moment::Running => rng.below(COMMAND_MS),
                Moment::FinalWrite => rng.below(5),
            };
            (n, MODES[(n / MOMENTS.len()) % MODES.len()], moment, delay)
        })
        .collect();
    let started = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut failures: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..PARALLEL)
            .map(|_| {
                let (dir, plan, next) = (&dir, &plan, &next);
                s.spawn(move || {
                    let mut failed = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(n, mode, moment, delay)) = plan.get(i) else {
                            return failed;
                        };
                        if let Err(e) = one_run(dir, n, mode, moment, delay) {
                            failed.push(e);
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                w.join()
                    .unwrap_or_else(|_| vec!["a worker panicked".into()])
            })
            .collect()
    });
    // Anything left (a command forked just as mmtrace was killed) ends.
    // SAFETY: getpid has no preconditions.
    for pid in children_of(unsafe { libc::getpid() }) {
        if let Err(e) = reap(pid, "a process left behind") {
            failures.push(e);
        }
    }
    eprintln!("kill -9 matrix: {RUNS} runs in {:?}", started.elapsed());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
