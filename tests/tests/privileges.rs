//! Missing privileges get one clear line naming what is missing, and exit
//! status 2, before anything is loaded: tried as an unprivileged user, and
//! as one with CAP_BPF and CAP_PERFMON who cannot read tracefs.

use std::process::{Command, Output, Stdio};

use tests::mmtrace_bin;

/// mmtrace as user `nobody`, with these ambient capabilities.
fn as_nobody(caps: &str) -> Output {
    let bin = mmtrace_bin().unwrap_or_else(|e| panic!("{e}"));
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    if !caps.is_empty() {
        c.arg(format!("--inh-caps={caps}"))
            .arg(format!("--ambient-caps={caps}"));
    }
    c.arg(bin)
        .args(["stream", "--duration", "0.1"])
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv (util-linux)")
}

fn refused(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err}");
    assert!(o.stdout.is_empty());
}

#[test]
fn an_unprivileged_user_is_told_which_capabilities_are_missing() {
    tests::needs_root!();
    refused(&as_nobody(""), "missing: CAP_BPF, CAP_PERFMON");
}

#[test]
fn unreadable_tracefs_is_not_called_unmounted() {
    tests::needs_root!();
    let events = std::path::Path::new("/sys/kernel/tracing/events");
    if !events.is_dir() {
        eprintln!("skipping: tracefs is not mounted here");
        return;
    }
    let o = as_nobody("+bpf,+perfmon");
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.success() {
        // tracefs readable by everyone here: nothing to refuse.
        eprintln!("skipping: tracefs is readable by `nobody` on this machine");
        return;
    }
    assert!(!err.contains("not mounted"), "{err}");
    refused(&o, "cannot read it");
}
