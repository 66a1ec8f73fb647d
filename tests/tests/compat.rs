//! A 32-bit program is never silently skipped: the kernel's syscall
//! tracepoints do not fire for its system calls (`int $0x80`), so mmtrace
//! says so, on stderr and in its exec event, and `record` marks the
//! process (its `abi`, an uncertain interval from its exec to its end) and
//! still checks it at its exit.
//!
//! The program is a tiny C file built with `gcc -m32` (gcc-multilib, which
//! `cargo xtask setup` installs). Without it the test is skipped with a
//! line saying so, or fails when MMTRACE_TESTS_REQUIRE_ROOT is set (as
//! `cargo xtask test` sets it). Needs root and a built mmtrace.

mod jsonl_check;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use tests::{parse_jsonl, read_timeline, run_mmtrace_raw, MMTRACE_TIMEOUT, REQUIRE_ROOT_ENV};

/// Maps, writes, reprotects and unmaps 4 pages, idles 300 ms between.
const PROGRAM: &str = r#"
#include <sys/mman.h>
#include <unistd.h>
int main(void) {
    char *p = mmap(0, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 1;
    for (int i = 0; i < 4; i++) p[i * 4096] = 1;
    mprotect(p + 4096, 4096, PROT_READ);
    usleep(300000);
    munmap(p, 4 * 4096);
    return 3;
}
"#;

fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mmtrace-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// The 32-bit program, built in `dir`; None (said on stderr) when this
/// machine cannot build one.
fn build_32_bit(dir: &Path) -> Option<PathBuf> {
    let src = dir.join("prog32.c");
    let bin = dir.join("prog32");
    std::fs::write(&src, PROGRAM).expect("write the C source");
    let out = Command::new("gcc")
        .args(["-m32", "-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .output();
    let why = match out {
        Ok(o) if o.status.success() => return Some(bin),
        Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
        Err(e) => e.to_string(),
    };
    let required = std::env::var_os(REQUIRE_ROOT_ENV).is_some_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "cannot build a 32-bit program with `gcc -m32` (run `cargo xtask setup`, which installs \
         gcc-multilib): {why}"
    );
    let line = format!("skipping: cannot build a 32-bit program with `gcc -m32`: {why}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    None
}

const NOTE: &str = "(32-bit, i386: its system calls are not traced)";

#[test]
fn a_32_bit_program_is_said_untraced_in_the_stream() {
    tests::needs_root!();
    let dir = scratch_dir("compat-stream");
    let Some(prog) = build_32_bit(&dir) else {
        return;
    };
    let prog_s = prog.to_string_lossy().into_owned();

    let run = run_mmtrace_raw(["stream", "--", &prog_s], MMTRACE_TIMEOUT).unwrap();
    let context = format!("`{}`: {}\nstderr:\n{}", run.command, run.status, run.stderr);
    assert_eq!(run.status.code(), Some(3), "{context}");
    let exec = run
        .stdout
        .lines()
        .find(|l| l.contains(" exec ") && l.contains("prog32"))
        .unwrap_or_else(|| panic!("no exec line:\n{}\n{context}", run.stdout));
    assert!(exec.ends_with(NOTE), "exec line: {exec}");
    // Once, on stderr too (where it is seen whatever the output).
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("runs a 32-bit program (i386)"))
        .collect();
    assert_eq!(warnings.len(), 1, "{context}");
    assert!(warnings[0].contains(&prog_s), "{}", warnings[0]);
    // Its mmap, mprotect and munmap went unseen: no such line.
    assert!(
        !run.stdout
            .lines()
            .any(|l| l.contains(" mmap ") && l.contains("prog32") && l.contains("16.0 KiB")),
        "{}",
        run.stdout
    );

    let run = run_mmtrace_raw(
        [
            "stream", "--format", "jsonl", "--events", "process", "--", &prog_s,
        ],
        MMTRACE_TIMEOUT,
    )
    .unwrap();
    let lines = parse_jsonl(&run.stdout).unwrap();
    jsonl_check::assert_lines_valid(&lines, &run.command);
    let exec = lines
        .iter()
        .find(|l| l["event"] == "exec")
        .unwrap_or_else(|| panic!("no exec line: {}", run.stdout));
    assert_eq!(exec["abi"], "i386", "{exec}");
}

#[test]
fn a_32_bit_program_is_recorded_uncertain_and_checked_at_exit() {
    tests::needs_root!();
    let dir = scratch_dir("compat-record");
    let Some(prog) = build_32_bit(&dir) else {
        return;
    };
    let timeline = dir.join("timeline.json");
    let args: Vec<OsString> = vec![
        "record".into(),
        "-o".into(),
        timeline.clone().into(),
        "--".into(),
        prog.into(),
    ];
    let run = run_mmtrace_raw(&args, MMTRACE_TIMEOUT).unwrap();
    let context = format!("`{}`: {}\nstderr:\n{}", run.command, run.status, run.stderr);
    assert_eq!(run.status.code(), Some(3), "{context}");
    let tl = read_timeline(&timeline).unwrap_or_else(|e| panic!("{e}; {context}"));
    let procs = tl["processes"].as_array().expect("processes");
    let p = procs
        .iter()
        .find(|p| p["exit_code"] == 3)
        .unwrap_or_else(|| panic!("no process exited with 3: {tl:#}"));
    assert_eq!(p["abi"], "i386", "{p:#}");
    // Uncertain from its exec to its end.
    let exec_at = p["exec_at_ns"].as_u64().expect("exec_at_ns");
    assert_eq!(
        p["uncertain"],
        serde_json::json!([{ "from_ns": exec_at, "to_ns": null }]),
        "({})",
        timeline.display()
    );
    // Checked at its exit all the same, by the counters the exit hook
    // reads whatever the program's system calls (or said void where the
    // kernel runs the hook after the address space is gone). Whether the
    // loader's work it did not see is drift depends on whether the seed,
    // read without stopping the program, came before or after it.
    let checks = p["checks"].as_array().expect("checks");
    let exit = checks
        .iter()
        .find(|c| c["reason"] == "exit")
        .unwrap_or_else(|| panic!("no exit check: {checks:?} ({})", timeline.display()));
    assert!(
        exit["against"] == "counters" || exit["void"].is_string(),
        "{exit}"
    );
    // The report says why.
    let report = run_mmtrace_raw(
        [OsString::from("report"), timeline.clone().into_os_string()],
        MMTRACE_TIMEOUT,
    )
    .unwrap();
    assert!(
        report
            .stdout
            .contains("not traced: a 32-bit program (i386)"),
        "{}",
        report.stdout
    );
}
