//! `cargo xtask screenshot`: docs/report-html.png, the HTML report of the
//! test workload as headless Chromium draws it (1400x1000), with the
//! tooltip of its heap shown as a pointer on it would show it. Records the
//! workload with the debug mmtrace (needs root), writes the page, then
//! takes the picture. The README shows it; never edit it by hand.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cargo, is_root, run, step, which, workspace_root};

pub fn screenshot() -> Result<()> {
    if !is_root() {
        bail!("screenshot: recording the workload needs root");
    }
    let chromium = which("chromium").context("chromium is missing: run `cargo xtask setup`")?;
    crate::setup::check()?;
    run(cargo().args([
        "build", "-p", "tracer", "--bin", "mmtrace", "-p", "tests", "--bin", "workload",
    ]))?;
    let root = workspace_root();
    let debug = root.join("target").join("debug");
    let dir = root
        .join("target")
        .join("tmp")
        .join(format!("screenshot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let timeline = dir.join("workload.jsonl");
    // Run from the directory with short names, so the page's title is
    // readable.
    std::fs::copy(debug.join("workload"), dir.join("workload"))?;
    run(Command::new(debug.join("mmtrace"))
        .current_dir(&dir)
        .args([
            "record",
            "-o",
            "workload.jsonl",
            "--reconcile-interval",
            "0.05",
            "--",
        ])
        .args([
            "./workload",
            "--report",
            "workload-report.json",
            "--pause-ms",
            "50",
        ]))?;
    let page = dir.join("report.html");
    run(Command::new(debug.join("mmtrace"))
        .arg("report")
        .arg(&timeline)
        .arg("--html")
        .arg(&page))?;
    let png = root.join("docs").join("report-html.png");
    let _ = std::fs::remove_file(&png);
    run(Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--virtual-time-budget=10000",
            "--window-size=1400,1000",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}#hover=heap", page.display()))
        // Its complaints about D-Bus and the GPU say nothing about the page.
        .stderr(std::process::Stdio::null()))?;
    if !png.is_file() {
        bail!("chromium wrote no {}", png.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
    step(format!("screenshot: wrote {}", png.display()));
    Ok(())
}
