//! `cargo xtask bench`'s recording benchmark: `mmtrace record` (release)
//! of a 10 s mmap/write/munmap loop (tests/src/bin/mmaploop.rs), then
//! `mmtrace report` of the recording. Prints mmtrace's peak RSS (VmHWM),
//! the file's size and bytes per region record, and the report's time and
//! peak RSS. Goal: the recording's peak RSS stays under 100 MB (its memory
//! follows what is alive, not the million regions the loop makes). Needs
//! root; skipped without it.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{cargo, is_root, run, step, workspace_root};

/// The recording's peak RSS must stay under this.
const MAX_RECORD_RSS: u64 = 100 << 20;

/// Waits for `child`, sampling its VmHWM; returns (peak bytes, success).
fn watch(mut child: Child) -> Result<(u64, bool)> {
    let status_path = PathBuf::from(format!("/proc/{}/status", child.id()));
    let mut peak = 0;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            if let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb * 1024);
            }
        }
        if let Some(status) = child.try_wait()? {
            return Ok((peak, status.success()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// Returns its figures as a markdown section for docs/BENCHMARKS.md.
pub fn record_bench() -> Result<String> {
    if !is_root() {
        println!("recording benchmark: skipped (needs root)");
        return Ok(String::new());
    }
    run(cargo().args(["build", "--release", "-p", "tracer", "--bin", "mmtrace"]))?;
    run(cargo().args(["build", "--release", "-p", "tests", "--bin", "mmaploop"]))?;
    let release = workspace_root().join("target").join("release");
    let mmtrace = release.join("mmtrace");
    let dir = workspace_root().join("target").join("tmp");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join(format!("bench-record-{}.jsonl", std::process::id()));
    step("record a 10 s mmap/munmap loop");
    let child = Command::new(&mmtrace)
        .arg("record")
        .arg("-o")
        .arg(&out)
        .arg("--")
        .arg(release.join("mmaploop"))
        .arg("10")
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start mmtrace record")?;
    let (record_peak, ok) = watch(child)?;
    if !ok {
        bail!("mmtrace record failed");
    }
    let (size, records) = count_records(&out)?;
    step("report it");
    let started = Instant::now();
    let child = Command::new(&mmtrace)
        .arg("report")
        .arg(&out)
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start mmtrace report")?;
    let (report_peak, ok) = watch(child)?;
    let report_time = started.elapsed();
    let _ = std::fs::remove_file(&out);
    if !ok {
        bail!("mmtrace report failed");
    }
    println!(
        "record: peak RSS {}; file {} for {records} region records ({} bytes each)",
        mib(record_peak),
        mib(size),
        size.checked_div(records).unwrap_or(0)
    );
    println!(
        "report: {:.2} s, peak RSS {}",
        report_time.as_secs_f64(),
        mib(report_peak)
    );
    let md = format!(
        "\n## Recording a 10 s mmap/munmap loop\n\n\
         `mmtrace record` of tests/src/bin/mmaploop.rs, then `mmtrace report` of the file.\n\n\
         | | |\n|---|---:|\n\
         | record's peak RSS (goal: under {}) | {} |\n\
         | timeline v2 file | {} for {records} region records ({} bytes each) |\n\
         | report time | {:.2} s |\n\
         | report's peak RSS | {} |\n",
        mib(MAX_RECORD_RSS),
        mib(record_peak),
        mib(size),
        size.checked_div(records).unwrap_or(0),
        report_time.as_secs_f64(),
        mib(report_peak)
    );
    if record_peak > MAX_RECORD_RSS {
        bail!(
            "the recording's peak RSS {} is over the goal ({})",
            mib(record_peak),
            mib(MAX_RECORD_RSS)
        );
    }
    Ok(md)
}

/// The file's size and its region records.
fn count_records(path: &Path) -> Result<(u64, u64)> {
    let size = std::fs::metadata(path)?.len();
    let mut records = 0;
    for line in BufReader::new(std::fs::File::open(path)?).lines() {
        if line?.starts_with("{\"type\":\"region\"") {
            records += 1;
        }
    }
    Ok((size, records))
}
