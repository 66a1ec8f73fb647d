//! `cargo xtask soak --minutes N`: the daemon under constant process churn
//! for N minutes (root). Short processes (`true`) are started one after
//! the other without pause, a few long-lived `spinner`s map, touch and
//! unmap a page every 5 ms, and a `mmaploop` burst runs every minute. The
//! daemon's resident memory (VmRSS) and its `status` are printed every
//! 30 s, then a table, written to docs/SOAK.md with the command, the
//! machine and the date (unless `--no-write`).
//!
//! The daemon records the churn's comms only (`true`, `spinner`,
//! `mmaploop`): the figures do not depend on what else the machine runs.

use std::{
    fmt::Write as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{cargo, is_root, run, step, workspace_root};

/// How often a sample is taken.
const EVERY: Duration = Duration::from_secs(30);
/// Long-lived processes running at once.
const SPINNERS: usize = 4;

struct Sample {
    at_secs: u64,
    rss_kib: u64,
    status: Value,
}

/// VmRSS of `pid`, in KiB.
fn vm_rss(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn status(bin: &Path, socket: &Path) -> Value {
    Command::new(bin)
        .args(["status", "--json", "--socket"])
        .arg(socket)
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
        .map_or(Value::Null, |v| v["status"].clone())
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

fn row(s: &Sample) -> String {
    let st = &s.status;
    format!(
        "| {:>5} | {:>8.1} | {:>10} | {:>9} | {:>7} | {:>8} | {:>8} | {:>7} | {:>6} |",
        s.at_secs,
        s.rss_kib as f64 / 1024.0,
        n(st, "events"),
        n(st, "lost_events"),
        n(st, "processes"),
        n(st, "regions"),
        n(st, "exits_skipped"),
        n(st, "timelines_written"),
        n(st, "degrade_level"),
    )
}

const HEADER: &str = "|     s | RSS MiB  |     events |      lost | tracked |  regions | skipped | written | degrade |\n\
                      |------:|---------:|-----------:|----------:|--------:|---------:|--------:|--------:|-------:|";

/// Runs the soak; `debug`: the debug build (no release build needed).
pub fn soak(minutes: u64, debug: bool, write: bool) -> Result<()> {
    if !is_root() {
        bail!("cargo xtask soak needs root (the daemon loads eBPF programs)");
    }
    if minutes == 0 {
        bail!("--minutes must be at least 1");
    }
    let profile: &[&str] = if debug { &[] } else { &["--release"] };
    run(cargo()
        .args(["build", "-p", "tracer", "--bin", "mmtrace"])
        .args(profile))?;
    run(cargo()
        .args([
            "build", "-p", "tests", "--bin", "spinner", "--bin", "mmaploop",
        ])
        .args(profile))?;
    let bins = workspace_root()
        .join("target")
        .join(if debug { "debug" } else { "release" });
    let mmtrace = bins.join("mmtrace");
    let dir = workspace_root()
        .join("target")
        .join("tmp")
        .join(format!("soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("mmtrace.sock");
    let config = dir.join("mmtrace.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nreconcile_secs = 10\n\
             [socket]\npath = \"{}\"\ngroup = \"\"\n\
             [select]\ncomm = [\"true\", \"spinner\", \"mmaploop\"]\n\
             [retention]\nmax_total_bytes = 268435456\n",
            dir.join("data").display(),
            socket.display()
        ),
    )?;
    step(format!("starting the daemon ({})", mmtrace.display()));
    let mut daemon = Command::new(&mmtrace)
        .arg("daemon")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("daemon.stderr"))?)
        .spawn()
        .context("start the daemon")?;
    let dpid = daemon.id();
    let ready = Instant::now() + Duration::from_mins(2);
    while status(&mmtrace, &socket).is_null() {
        if Instant::now() > ready || daemon.try_wait()?.is_some() {
            let _ = daemon.kill();
            bail!(
                "the daemon did not answer: {}",
                std::fs::read_to_string(dir.join("daemon.stderr")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    let end = started + Duration::from_secs(minutes * 60);
    let stop = Arc::new(AtomicBool::new(false));
    let spawned = Arc::new(AtomicU64::new(0));
    // Short processes, one after the other.
    let churn = {
        let (stop, spawned) = (stop.clone(), spawned.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut c) = Command::new("true").stdin(Stdio::null()).spawn() {
                    let _ = c.wait();
                    spawned.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let spin = |secs: u64| -> Result<Child> {
        Command::new(bins.join("spinner"))
            .arg(secs.to_string())
            .stdin(Stdio::null())
            .spawn()
            .context("start a spinner")
    };
    let life = minutes * 60 + 30;
    let mut spinners: Vec<Child> = (0..SPINNERS).map(|_| spin(life)).collect::<Result<_>>()?;
    let mut samples = Vec::new();
    let mut next = started + EVERY;
    let mut next_burst = started + Duration::from_secs(20);
    println!("{HEADER}");
    loop {
        let now = Instant::now();
        if now >= next_burst {
            next_burst += Duration::from_mins(1);
            Command::new(bins.join("mmaploop"))
                .arg("2")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .context("start mmaploop")?;
        }
        if now >= next || now >= end {
            let s = Sample {
                at_secs: started.elapsed().as_secs(),
                rss_kib: vm_rss(dpid).unwrap_or(0),
                status: status(&mmtrace, &socket),
            };
            println!("{}", row(&s));
            samples.push(s);
            next += EVERY;
        }
        if now >= end {
            break;
        }
        if let Some(st) = daemon.try_wait()? {
            stop.store(true, Ordering::Relaxed);
            bail!("the daemon ended during the soak ({st})");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = churn.join();
    terminate(dpid);
    let stopping = Instant::now();
    let st = daemon.wait()?;
    let stop_secs = stopping.elapsed().as_secs_f64();
    for s in &mut spinners {
        let _ = s.kill();
        let _ = s.wait();
    }
    let peak = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let first = samples.first().map_or(0, |s| s.rss_kib);
    let last = samples.last().map_or(0, |s| s.rss_kib);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Soak: the daemon under process churn\n\n\
         Command: `cargo xtask soak --minutes {minutes}{}` (as root), {} build.\n\n\
         Machine: {}, {} CPUs ({}), kernel {}. Date: {}.\n\n\
         Load: `true` started one after the other without pause ({} in all, {:.0}/s), \
         {SPINNERS} `spinner`s mapping, touching and unmapping a page every 5 ms, and \
         `mmaploop 2` every minute; the daemon records those comms (`reconcile_secs = 10`).\n\n\
         {HEADER}",
        if debug { " --debug" } else { "" },
        if debug { "debug" } else { "release" },
        read_trim("/proc/sys/kernel/hostname"),
        std::thread::available_parallelism().map_or(0, usize::from),
        cpu_model(),
        read_trim("/proc/sys/kernel/osrelease"),
        utc_now(),
        spawned.load(Ordering::Relaxed),
        spawned.load(Ordering::Relaxed) as f64 / (minutes * 60) as f64,
    );
    for s in &samples {
        let _ = writeln!(md, "{}", row(s));
    }
    let _ = writeln!(
        md,
        "\nResident memory: {:.1} MiB at the first sample, {:.1} MiB at the last, \
         {:.1} MiB at most. The stop (SIGTERM) took {stop_secs:.1} s; the daemon exited \
         with {st}.",
        first as f64 / 1024.0,
        last as f64 / 1024.0,
        peak as f64 / 1024.0,
    );
    println!("\n{md}");
    if write {
        let path = workspace_root().join("docs").join("SOAK.md");
        std::fs::write(&path, &md).with_context(|| format!("write {}", path.display()))?;
        step(format!("wrote {}", path.display()));
    }
    let _ = std::fs::remove_dir_all(&dir);
    if !st.success() {
        bail!("the daemon exited with {st}");
    }
    Ok(())
}

/// SIGTERM to `pid` (our child), by kill(1): xtask has no libc.
fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
