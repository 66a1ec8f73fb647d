//! `mmtrace daemon` (issue 10): the always-on recorder. It runs `record`'s
//! session (the same Tracker, Checker and v2 rendering) system-wide, every
//! running process seeded from /proc, and writes each process's timeline
//! into `DATA_DIR/timelines/` when it leaves ([`sink`]).

use std::{ffi::OsString, path::Path, time::Duration};

use crate::{
    cli::{kind_mask, FaultMode, TraceArgs},
    commands::record::V2Sink,
    error::{Error, Result},
    output::timeline2 as v2,
    session::{self, ModelPlan, Plan},
};

pub mod config;
pub mod control;
pub mod files;
pub mod live;
pub mod memory;
pub mod metrics;
pub mod sink;

use config::Config;

/// Ticks: checks are started and resolved, counters sampled.
const TICK: Duration = Duration::from_millis(50);

/// Records until SIGTERM or SIGINT; returns the exit code.
pub fn run(config_path: &Path, config: Config) -> Result<i32> {
    let faults = match config.faults.as_str() {
        "off" => FaultMode::Off,
        "all" => FaultMode::All,
        _ => FaultMode::Summary,
    };
    let ring = u32::try_from(config.ring_bytes)
        .map_err(|_| Error::Usage(format!("ring_bytes {} is too large", config.ring_bytes)))?;
    let trace = TraceArgs {
        pids: config.select.pid.clone(),
        comms: config.select.comm.iter().map(OsString::from).collect(),
        cgroups: config.select.cgroup.clone(),
        follow: false,
        duration: None,
        buffer_size: ring,
        kill_on_stop: false,
        command: Vec::new(),
    };
    session::signals::block_hangup()
        .map_err(|e| Error::Usage(format!("cannot block SIGHUP: {e}")))?;
    let pids = session::check(&trace).map_err(|e| match e {
        // The configuration's name for it.
        Error::Usage(m) if m.starts_with("--cgroup") => {
            Error::Usage(format!("daemon: select.cgroup{}", &m["--cgroup".len()..]))
        }
        e => e,
    })?;
    let dirs = sink::Dirs::prepare(&config.data_dir).map_err(|e| {
        Error::Usage(format!(
            "daemon: cannot prepare {}: {e}",
            config.data_dir.display()
        ))
    })?;
    let mut listener = control::Listener::bind(&config.socket.path, &config.socket.group)?;
    let scrapes = if config.metrics_listen.is_empty() {
        None
    } else {
        Some(metrics::bind(&config.metrics_listen).map_err(|e| {
            Error::Usage(format!(
                "daemon: metrics_listen {}: cannot listen: {e}",
                config.metrics_listen
            ))
        })?)
    };
    let groups = scrapes.as_ref().map(|_| {
        let by = match config.metrics_group_by.as_str() {
            "cgroup" => metrics::GroupBy::Cgroup,
            _ => metrics::GroupBy::Comm,
        };
        metrics::Groups::by(config.metrics_groups, by)
    });
    let reconcile = config.reconcile_secs;
    let plan = Plan {
        events: kind_mask(&[], faults),
        faults,
        model: Some(ModelPlan {
            bucket_ns: 100_000_000,
            keep_history: false,
            check_interval: (reconcile > 0).then(|| Duration::from_secs(reconcile)),
            counters: true,
            seed_running: true,
        }),
        tick: TICK,
    };
    let header = v2::Header {
        schema: v2::SCHEMA.to_string(),
        version: 2,
        mmtrace: env!("CARGO_PKG_VERSION").to_string(),
        started_at: String::new(),
        monotonic_start_ns: 0,
        clock: "monotonic".to_string(),
        host: read_trim("/proc/sys/kernel/hostname"),
        kernel: read_trim("/proc/sys/kernel/osrelease"),
        command: None,
        selection: v2::Selection {
            pids: trace.pids.clone(),
            comms: config.select.comm.clone(),
            cgroups: crate::kernel::cgroup::selection_names(&pids.cgroups),
            follow: false,
        },
        options: v2::Options {
            reconcile_interval_ns: reconcile.saturating_mul(1_000_000_000),
            duration_ns: None,
        },
    };
    let out = sink::DaemonOut::new(config_path.to_path_buf(), config, dirs)
        .map_err(|e| Error::Usage(format!("daemon: cannot read its timelines directory: {e}")))?;
    let mut target = session::start(trace, pids)?;
    let live = live::LiveSink {
        v2: V2Sink::new(header, out),
        applied: 0,
        coarse_faults: 0,
        untracked: std::collections::HashSet::default(),
    };
    let mut sink = metrics::MetricsSink::new(live, groups);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)?;
    let (asks, answered) = tokio::sync::mpsc::channel(control::MAX_CLIENTS);
    sink.inner.v2.out.serve(answered);
    let (scrape_asks, scrapes_answered) = tokio::sync::mpsc::channel(metrics::MAX_CLIENTS);
    sink.serve(scrapes_answered);
    let (socket, gid) = (listener.take(), listener.gid);
    let outcome = rt.block_on(async {
        if let Some(socket) = socket {
            tokio::spawn(control::serve(socket, gid, asks));
        }
        if let Some(tcp) = scrapes {
            if let Ok(addr) = tcp.local_addr() {
                log::info!("metrics: serving http://{addr}/metrics");
            }
            tokio::spawn(metrics::serve(tcp, scrape_asks));
        }
        let outcome = session::run(&mut target, &plan, &mut sink).await;
        // The subscribers' streams end with the daemon.
        sink.inner.v2.out.live.stop().await;
        outcome
    })?;
    // The socket goes at the clean stop.
    drop(listener);
    sink.inner.v2.out.log_stats();
    session::finish(&outcome, &target);
    Ok(0)
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
