//! `mmtrace daemon`: its configuration is refused with the file, the line and
//! the reason (exit 2) before anything is attached; the example is valid.

use std::{
    path::PathBuf,
    process::{Command, Output, Stdio},
};

use tests::{mmtrace_bin, workspace_dir};

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
