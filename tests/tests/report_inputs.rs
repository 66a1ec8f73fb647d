//! `mmtrace report` reads within a bound whatever it is given: what is not
//! a regular file is refused at once (a FIFO would block it, /dev/zero
//! never ends), and so is a file over `--max-size`.

use std::process::{Command, Output, Stdio};

use tests::{mmtrace_bin, workspace_dir};

fn report(args: &[&str]) -> Output {
    Command::new(mmtrace_bin().unwrap_or_else(|e| panic!("{e}")))
        .arg("report")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run mmtrace")
}

fn refused(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err}");
    assert!(o.stdout.is_empty());
}

#[test]
fn endless_and_blocking_inputs_are_refused() {
    refused(&report(&["/dev/zero"]), "is not a regular file");
    // In the temporary directory: no root is needed, and target/tmp may
    // belong to root after `cargo xtask test`.
    let dir = std::env::temp_dir().join(format!("mmtrace-report-inputs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    refused(&report(&[fifo.to_str().unwrap()]), "is not a regular file");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_file_over_the_bound_is_refused_and_the_bound_can_be_raised() {
    let small = workspace_dir().join("tests/data/timeline-small.json");
    let small = small.to_str().unwrap();
    refused(
        &report(&[small, "--max-size", "1K"]),
        "more than --max-size",
    );
    let o = report(&[small, "--max-size", "1M"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
