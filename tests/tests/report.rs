//! `mmtrace report FILE`: the text for a known timeline, byte for byte
//! (`tests/data/timeline-small.json` -> `tests/data/timeline-small.report.txt`),
//! and one clear line with exit code 2 for files it cannot report on.
//!
//! To accept a changed report: `MMTRACE_BLESS=1 cargo test -p tests --test
//! report`, then review the diff of the .report.txt file.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use tests::{mmtrace_bin, workspace_dir};

/// `mmtrace report FILE`, run from the workspace directory (no root needed).
fn report(file: &Path) -> Output {
    let bin = mmtrace_bin().unwrap_or_else(|e| panic!("{e}"));
    Command::new(bin)
        .arg("report")
        .arg(file)
        .current_dir(workspace_dir())
        .stdin(Stdio::null())
        .output()
        .expect("run mmtrace report")
}

fn data(name: &str) -> PathBuf {
    workspace_dir().join("tests").join("data").join(name)
}

/// A file of `contents` in the temporary directory: these tests need no
/// root, and target/tmp may belong to root after `cargo xtask test` ran the
/// root tests through sudo.
fn scratch(name: &str, contents: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("mmtrace-report-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

/// A line diff of `expected` and `actual` (longest common subsequence),
/// with 2 lines of context around changes: ` ` same, `-` expected only,
/// `+` actual only.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    // lcs[i][j]: length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, usize, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', i + 1, a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', i + 1, a[i]));
            i += 1;
        } else {
            ops.push(('+', j + 1, b[j]));
            j += 1;
        }
    }
    let near_change = |k: usize| {
        let lo = k.saturating_sub(2);
        let hi = (k + 2).min(ops.len() - 1);
        ops[lo..=hi].iter().any(|(op, _, _)| *op != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (op, line, text)) in ops.iter().enumerate() {
        if near_change(k) {
            if skipped {
                out.push_str("   ...\n");
                skipped = false;
            }
            out.push_str(&format!("{op}{line:4} {text}\n"));
        } else {
            skipped = true;
        }
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        out.push_str("(the files differ in the final newline)\n");
    }
    out
}

#[test]
fn small_timeline_report_is_as_expected() {
    let input = Path::new("tests/data/timeline-small.json");
    let expected_path = data("timeline-small.report.txt");
    let o = report(input);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "mmtrace report {} failed ({}):\n{stderr}",
        input.display(),
        o.status
    );
    assert!(
        stderr.is_empty(),
        "nothing on stderr expected, got:\n{stderr}"
    );
    let actual = String::from_utf8(o.stdout).expect("the report is UTF-8");

    if std::env::var_os("MMTRACE_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&expected_path, &actual).unwrap();
        eprintln!("wrote {}", expected_path.display());
        return;
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e} (MMTRACE_BLESS=1 writes it)",
            expected_path.display()
        )
    });
    if actual != expected {
        panic!(
            "the report of {} differs from {} (- expected, + actual; \
             MMTRACE_BLESS=1 accepts the new one):\n{}",
            input.display(),
            expected_path.display(),
            diff(&expected, &actual)
        );
    }
}

#[test]
fn report_lines_fit_in_100_columns() {
    let o = report(&data("timeline-small.json"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for line in String::from_utf8(o.stdout).unwrap().lines() {
        assert!(line.chars().count() <= 100, "too wide: {line:?}");
    }
}

/// `mmtrace report FILE` fails with exit code 2 and exactly one line on
/// stderr, `mmtrace: FILE ...` containing `needle`; nothing on stdout.
fn assert_refused(file: &Path, needle: &str) -> String {
    let o = report(file);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        o.status.code(),
        Some(2),
        "exit code of mmtrace report {}; stderr:\n{stderr}",
        file.display()
    );
    assert!(
        o.stdout.is_empty(),
        "no report expected, got:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line on stderr expected, got:\n{stderr}"
    );
    let line = stderr.trim_end();
    let prefix = format!("mmtrace: {}", file.display());
    assert!(
        line.starts_with(&prefix),
        "expected the line to start with {prefix:?}: {line:?}"
    );
    assert!(line.contains(needle), "expected {needle:?} in: {line:?}");
    line.to_string()
}

#[test]
fn truncated_file_is_refused() {
    let full = std::fs::read(data("timeline-small.json")).unwrap();
    let file = scratch("truncated.json", &full[..full.len() * 2 / 3]);
    let line = assert_refused(&file, " is truncated (EOF while parsing ");
    assert!(line.contains(" at line "), "{line}");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn non_json_file_is_refused() {
    let file = scratch(
        "events.txt",
        b"    0.000120  python3  4242/4242  mmap  NULL 1.0 MiB rw- = 0x7f3a12340000\n",
    );
    // serde_json reads the leading number, then stops.
    assert_refused(
        &file,
        " is not JSON: trailing characters at line 1 column 15",
    );
    let _ = std::fs::remove_file(&file);

    let file = scratch("hello.txt", b"hello\n");
    assert_refused(&file, " is not JSON: expected value at line 1 column 1");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn other_schema_is_refused() {
    let file = scratch(
        "other.json",
        br#"{"schema": "example.other/v3", "processes": []}"#,
    );
    assert_refused(
        &file,
        " is not an mmtrace timeline (schema \"example.other/v3\"; \
         this mmtrace reads mmtrace.timeline/v1)",
    );
    let _ = std::fs::remove_file(&file);

    // JSONL from `mmtrace stream --format jsonl`: no schema at all.
    let file = scratch(
        "stream.json",
        br#"{"t_ns": 1, "pid": 1, "tid": 1, "comm": "init", "event": "fork", "child_pid": 2}"#,
    );
    assert_refused(&file, " is not an mmtrace timeline (no \"schema\" field;");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn wrong_shape_is_refused() {
    let file = scratch(
        "shape.json",
        br#"{"schema": "mmtrace.timeline/v1", "processes": []}"#,
    );
    assert_refused(
        &file,
        " does not match mmtrace.timeline/v1: missing field `started_at`",
    );
    let _ = std::fs::remove_file(&file);
}

#[test]
fn missing_file_is_refused() {
    let file = workspace_dir()
        .join("target")
        .join("tmp")
        .join(format!("mmtrace-report-{}-absent.json", std::process::id()));
    let o = report(&file);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr:\n{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "mmtrace: cannot read {}: No such file or directory (os error 2)",
            file.display()
        )
    );
}

/// The report of a v2 recording, read a line at a time, is the report of
/// the same recording assembled into a v1 document (read whole): the same
/// tables, byte for byte.
fn same_report_as_v1(v2: &Path) {
    let text = std::fs::read_to_string(v2).unwrap();
    let lines = tests::parse_jsonl(&text).unwrap();
    let v1 = tests::assemble_v2(&lines).unwrap_or_else(|e| panic!("{e}"));
    let name = v2.file_name().unwrap().to_string_lossy().to_string();
    let v1_path = scratch(&format!("{name}.v1.json"), v1.to_string().as_bytes());
    let (a, b) = (report(v2), report(&v1_path));
    let _ = std::fs::remove_file(&v1_path);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let (a, b) = (
        String::from_utf8(a.stdout).unwrap(),
        String::from_utf8(b.stdout).unwrap(),
    );
    // v1 documents have no cgroups: the v2 report's `Cgroup` lines aside.
    let a: String = a
        .lines()
        .filter(|l| !l.starts_with("Cgroup "))
        .map(|l| format!("{l}\n"))
        .collect();
    let b: String = b.lines().map(|l| format!("{l}\n")).collect();
    assert!(a == b, "v2 and v1 reports differ:\n{}", diff(&b, &a));
}

#[test]
fn a_v2_recording_reports_as_its_v1_document() {
    same_report_as_v1(&data("timeline-v2-small.jsonl"));
}

#[test]
fn a_real_v2_recording_reports_as_its_v1_document() {
    tests::needs_root!();
    let out =
        std::env::temp_dir().join(format!("mmtrace-report-{}-real.jsonl", std::process::id()));
    let run = tests::run_record(
        &out,
        &[] as &[&str],
        &[
            "/bin/sh",
            "-c",
            "/bin/ls /usr/share/doc >/dev/null; /bin/true",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(run.status.success(), "{}", run.stderr);
    same_report_as_v1(&out);
    let _ = std::fs::remove_file(&out);
}

/// A recording cut short (mmtrace killed) is reported as far as it goes,
/// and says so; a line over the cap is refused with one clear line.
#[test]
fn a_cut_v2_recording_is_reported_incomplete() {
    let text = std::fs::read(data("timeline-v2-small.jsonl")).unwrap();
    let cut = scratch("cut.jsonl", &text[..text.len() / 2]);
    let o = report(&cut);
    let _ = std::fs::remove_file(&cut);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("INCOMPLETE"), "{out}");
    assert!(out.contains("Process 4242 (python3)"), "{out}");

    let mut long = text.clone();
    long.extend_from_slice(b"{\"type\":\"lost\",\"t_ns\":1,\"kind\":\"");
    long.extend(std::iter::repeat_n(b'x', 2 << 20));
    long.extend_from_slice(b"\",\"count\":1}\n");
    let long_path = scratch("long.jsonl", &long);
    let o = report(&long_path);
    let _ = std::fs::remove_file(&long_path);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(err.contains("longer than"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
