//! `cargo xtask fuzz`: runs the fuzz targets of `fuzz/` (cargo fuzz,
//! libFuzzer) on the parsers of untrusted input, each for a bounded time.
//!
//! Installs nothing: like `build` and `bench` it checks and names what is
//! missing (`cargo xtask setup` installs cargo-fuzz; the nightly toolchain
//! comes from rustup). Not part of `test` or CI: it is bounded in time but
//! keeps a core busy all along.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

use anyhow::{bail, Context, Result};

use crate::{ebpf_toolchain, setup, show, step, workspace_root};

/// The fuzz targets (fuzz/fuzz_targets/TARGET.rs), in the order they run.
pub const TARGETS: &[&str] = &["decode", "timeline", "report", "maps"];

/// Fuzzes `target` (default: every target) for `seconds` each, with the
/// corpus in fuzz/corpus/TARGET; `cmin` minimises each corpus afterwards.
/// Fails when an input crashed a target, naming where libFuzzer saved it.
pub fn fuzz(seconds: u64, cmin: bool, target: Option<&str>) -> Result<()> {
    check()?;
    let targets: Vec<&str> = match target {
        Some(target) => vec![target],
        None => TARGETS.to_vec(),
    };
    let mut crashes = Vec::new();
    for target in targets {
        let corpus = Path::new("fuzz").join("corpus").join(target);
        // libFuzzer wants the directory; a new target starts from nothing.
        fs::create_dir_all(workspace_root().join(&corpus))
            .with_context(|| format!("cannot create {}", corpus.display()))?;
        let before = artifacts(target);
        let mut cmd = cargo_fuzz()?;
        cmd.args(["run", target]).arg(&corpus).arg("--").args([
            format!("-max_total_time={seconds}"),
            // An input slower than this is a bug too (it would stall mmtrace).
            "-timeout=10".to_string(),
            "-print_final_stats=1".to_string(),
        ]);
        let dict = Path::new("fuzz")
            .join("dict")
            .join(format!("{target}.dict"));
        if workspace_root().join(&dict).is_file() {
            cmd.arg(format!("-dict={}", dict.display()));
        }
        step(format!(
            "fuzz {target}: {seconds} s, corpus {}",
            corpus.display()
        ));
        step(show(&cmd));
        let status = cmd.status().context("cannot start cargo fuzz")?;
        if status.success() {
            step(format!("fuzz {target}: no crash in {seconds} s"));
        } else {
            // New files, or old ones written again (the name is the input's
            // hash).
            let new: Vec<PathBuf> = artifacts(target)
                .into_iter()
                .filter(|(path, modified)| before.get(path) != Some(modified))
                .map(|(path, _)| path)
                .collect();
            if new.is_empty() {
                bail!("`cargo fuzz run {target}` failed ({status}) and saved no input: see above");
            }
            for input in new {
                let input = input.strip_prefix(workspace_root()).unwrap_or(&input);
                step(format!(
                    "fuzz {target}: FAILED, the input is saved in {}; reproduce with \
                     `cargo +nightly fuzz run {target} {}`",
                    input.display(),
                    input.display()
                ));
                crashes.push(format!("{target}: {}", input.display()));
            }
        }
        if cmin {
            let mut cmd = cargo_fuzz()?;
            cmd.args(["cmin", target]).arg(&corpus);
            crate::run(&mut cmd)
                .with_context(|| format!("cannot minimise {}", corpus.display()))?;
        }
    }
    if !crashes.is_empty() {
        bail!(
            "{} crashing input(s): {}",
            crashes.len(),
            crashes.join(", ")
        );
    }
    Ok(())
}

/// Everything the fuzzing needs: the build's toolchain (tracer's build.rs
/// builds the eBPF programs), a nightly with its sanitizer runtimes, and
/// cargo-fuzz.
fn check() -> Result<()> {
    setup::check()?;
    let missing = setup::fuzz_tools_missing();
    if missing.is_empty() {
        step("fuzzing: cargo-fuzz and rustup's nightly are installed");
        return Ok(());
    }
    for item in &missing {
        step(format!("fuzzing: missing {item}"));
    }
    bail!(
        "cannot fuzz (missing: {}): run `cargo xtask setup` first",
        missing.join("; ")
    )
}

/// `rustup run nightly cargo fuzz`, in the workspace root (cargo fuzz finds
/// fuzz/ there).
fn cargo_fuzz() -> Result<Command> {
    let rustup = ebpf_toolchain::find_tool("rustup").context("rustup not found")?;
    let mut cmd = Command::new(rustup);
    cmd.current_dir(workspace_root())
        .args(["run", ebpf_toolchain::NIGHTLY, "cargo", "fuzz"]);
    Ok(cmd)
}

/// The files in fuzz/artifacts/TARGET, where libFuzzer saves crashing,
/// leaking, slow and out-of-memory inputs (crash-*, leak-*, timeout-*,
/// oom-*), with their modification times.
fn artifacts(target: &str) -> BTreeMap<PathBuf, Option<SystemTime>> {
    let dir = workspace_root().join("fuzz").join("artifacts").join(target);
    fs::read_dir(dir)
        .map(|dir| {
            dir.flatten()
                .map(|entry| {
                    let modified = entry.metadata().and_then(|m| m.modified()).ok();
                    (entry.path(), modified)
                })
                .collect()
        })
        .unwrap_or_default()
}
