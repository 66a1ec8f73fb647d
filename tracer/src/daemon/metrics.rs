//! The daemon's Prometheus metrics (`metrics_listen`, issue 10): `GET
//! /metrics` in Prometheus's text format, encoded with `prometheus-client`.
//!
//! - [`MetricsSink`] wraps the daemon's sink: it sees what the session
//!   hands it (processes, their sampled counters, their system calls and
//!   faults) and keeps, per process group (the comm, as process-exporter
//!   groups by name), counters that outlive the processes, and per live
//!   process its last sampled sizes. At most `metrics_groups` groups:
//!   a comm gets a group when one is free, or when a group whose processes
//!   are all gone can be recycled (the least recently used; its series
//!   end); otherwise its processes count as comm `other`. A process's
//!   counts go to the group it belongs to when they happen, so every
//!   counter series only grows.
//! - A scrape never blocks the event loop and never reads /proc: the HTTP
//!   task ([`serve`]) asks through a bounded channel; the sink answers at
//!   its next tick (50 ms) with a [`Snapshot`] of plain numbers (the
//!   daemon's health is what `mmtrace status` reports); the task encodes
//!   and sends it.
//! - The HTTP side is a small HTTP/1.1 responder: GET (or HEAD) /metrics
//!   only, a request head of at most 8 KiB read within 10 s, 4 clients at
//!   once, `Connection: close`; anything else gets 404, 405 or 400.

use std::{
    collections::HashMap,
    io,
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

use log::warn;
use prometheus_client::{
    encoding::prometheus_text,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::{mpsc, oneshot, Semaphore},
};
use tracer_common::EventKind;

use super::live::LiveSink;
use crate::{
    event::{Access, Body, Event},
    kernel::StackPath,
    model::{Backing, CheckReason, Comparison, Process, RegionChange, VoidReason},
    output::names::escape_text,
    session::Sink,
};

/// The memory system calls counted, by name (`mmtrace_syscalls_total`).
pub const SYSCALLS: [&str; 17] = [
    "brk",
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "pkey_mprotect",
    "mlock",
    "mlock2",
    "munlock",
    "mlockall",
    "munlockall",
    "mseal",
    "shmat",
    "shmdt",
    "remap_file_pages",
    "userfaultfd",
];
/// Kinds of mapped memory, as the model knows each region's backing.
pub const KINDS: [&str; 6] = ["heap", "stack", "anon", "file", "shm", "special"];
/// Kinds of resident memory, as the kernel counts pages (MM_FILEPAGES,
/// MM_ANONPAGES, MM_SHMEMPAGES).
pub const RESIDENT_KINDS: [&str; 3] = ["file", "anon", "shm"];
/// Fault accesses.
pub const ACCESSES: [&str; 3] = ["read", "write", "exec"];
/// The group of the processes past the cap.
pub const OTHER: &str = "other";

/// What the process groups are (`metrics_group_by`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    /// The comm (label `comm`).
    Comm,
    /// The cgroup (label `cgroup`): the v1 memory path where the memory
    /// controller is on v1, else the v2 path.
    Cgroup,
}

impl GroupBy {
    /// The label of the group's name.
    pub const fn label(self) -> &'static str {
        match self {
            GroupBy::Comm => "comm",
            GroupBy::Cgroup => "cgroup",
        }
    }
}
/// Scrapes served at once; more wait for the accept.
pub const MAX_CLIENTS: usize = 4;
/// The longest request head.
pub const MAX_HEAD: usize = 8 << 10;
/// A client has this long to send its request head, and each write to it
/// must progress within it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A group's counters: they outlive its processes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    pub faults: [u64; 3],
    pub syscalls: [u64; SYSCALLS.len()],
}

#[derive(Debug, Default)]
struct Group {
    counts: Counts,
    /// Its live processes.
    live: u32,
    /// When it last had a process (the recycling order).
    used: u64,
}

/// What the metrics know of a live process.
#[derive(Debug)]
struct Member {
    seq: u64,
    /// Its comm, escaped (the label value).
    comm: String,
    /// Its group (None: `other`).
    group: Option<String>,
    mapped: [u64; KINDS.len()],
    /// Resident bytes by [`RESIDENT_KINDS`], when known.
    rss: Option<[u64; 3]>,
}

/// One group's line of a [`Snapshot`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupValues {
    pub comm: String,
    pub processes: u64,
    pub mapped: [u64; KINDS.len()],
    /// By [`RESIDENT_KINDS`].
    pub resident: [u64; 3],
    pub counts: Counts,
}

/// What a scrape reports, in plain numbers.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub groups: Vec<GroupValues>,
    /// The daemon's status (as `mmtrace status` has it).
    pub health: Value,
    /// Groups in use and their cap.
    pub group_count: u64,
    pub group_cap: u64,
    /// What the groups are.
    pub group_by: Option<GroupBy>,
}

/// The process groups and their counters, bounded by `cap`.
#[derive(Debug)]
pub struct Groups {
    cap: usize,
    by: GroupBy,
    groups: HashMap<String, Group>,
    other: Group,
    members: HashMap<u32, Member>,
    clock: u64,
}

impl Groups {
    pub fn new(cap: usize) -> Groups {
        Groups::by(cap, GroupBy::Comm)
    }

    pub fn by(cap: usize, by: GroupBy) -> Groups {
        Groups {
            cap: cap.max(1),
            by,
            groups: HashMap::new(),
            other: Group::default(),
            members: HashMap::new(),
            clock: 0,
        }
    }

    /// The group for `comm` (None: `other`): its own, a free one, or a
    /// recycled one whose processes are all gone.
    fn slot(&mut self, comm: &str) -> Option<String> {
        if comm == OTHER {
            return None;
        }
        if self.groups.contains_key(comm) {
            return Some(comm.to_string());
        }
        if self.groups.len() >= self.cap {
            let idle = self
                .groups
                .iter()
                .filter(|(_, g)| g.live == 0)
                .min_by_key(|(name, g)| (g.used, name.as_str()))
                .map(|(name, _)| name.clone())?;
            // Its series end; Prometheus keeps what it scraped of them.
            self.groups.remove(&idle);
        }
        self.groups.insert(comm.to_string(), Group::default());
        Some(comm.to_string())
    }

    fn group_mut(&mut self, key: Option<&str>) -> &mut Group {
        match key {
            Some(k) => self.groups.get_mut(k).unwrap_or(&mut self.other),
            None => &mut self.other,
        }
    }

    fn leave(&mut self, key: Option<&str>) {
        self.clock += 1;
        let clock = self.clock;
        let g = self.group_mut(key);
        g.live = g.live.saturating_sub(1);
        g.used = clock;
    }

    /// `pid` (first sight of `seq`, or its exec) is named `comm`.
    pub fn know(&mut self, pid: u32, seq: u64, comm: &[u8]) {
        if let Some(m) = self.members.get(&pid) {
            // The common case: nothing changed (no allocation).
            if m.seq == seq && (m.comm.as_bytes() == comm || m.comm == escape_text(comm)) {
                return;
            }
            // Its exec renamed it, or the pid is another process's now.
            let key = m.group.clone();
            self.leave(key.as_deref());
        }
        let comm = escape_text(comm);
        let group = self.slot(&comm);
        self.clock += 1;
        let clock = self.clock;
        let g = self.group_mut(group.as_deref());
        g.live += 1;
        g.used = clock;
        self.members.insert(
            pid,
            Member {
                seq,
                comm,
                group,
                mapped: [0; KINDS.len()],
                rss: None,
            },
        );
    }

    /// `pid` left.
    pub fn ended(&mut self, pid: u32, seq: u64) {
        if self.members.get(&pid).is_some_and(|m| m.seq == seq) {
            let key = self.members.remove(&pid).and_then(|m| m.group);
            self.leave(key.as_deref());
        }
    }

    /// `pid`'s sizes now: mapped bytes by kind, resident bytes by kind.
    pub fn sample(&mut self, pid: u32, mapped: [u64; KINDS.len()], rss: Option<[u64; 3]>) {
        if let Some(m) = self.members.get_mut(&pid) {
            m.mapped = mapped;
            m.rss = rss;
        }
    }

    /// The counts of `pid` (the group of its comm when it is not known).
    fn counts_of(&mut self, pid: u32, comm: &[u8]) -> &mut Counts {
        let key = if let Some(m) = self.members.get(&pid) {
            m.group.clone()
        } else if self.by == GroupBy::Cgroup {
            // Not known yet: its cgroup is not either.
            None
        } else {
            let comm = escape_text(comm);
            let key = self.slot(&comm);
            self.clock += 1;
            let clock = self.clock;
            self.group_mut(key.as_deref()).used = clock;
            key
        };
        &mut self.group_mut(key.as_deref()).counts
    }

    /// Counts `ev` (a memory system call or faults).
    pub fn event(&mut self, ev: &Event) {
        match &ev.body {
            Body::Fault { access, .. } => {
                let i = match access {
                    Access::Read => 0,
                    Access::Write => 1,
                    Access::Exec => 2,
                };
                self.counts_of(ev.pid, &ev.comm).faults[i] += 1;
            }
            Body::FaultSummary {
                read, write, exec, ..
            } => {
                if read + write + exec > 0 {
                    let c = self.counts_of(ev.pid, &ev.comm);
                    c.faults[0] += read;
                    c.faults[1] += write;
                    c.faults[2] += exec;
                }
            }
            body => {
                let name = body.name();
                if let Some(i) = SYSCALLS.iter().position(|s| *s == name) {
                    self.counts_of(ev.pid, &ev.comm).syscalls[i] += 1;
                }
            }
        }
    }

    /// Every group with its live processes' sizes and its counters (the
    /// `other` group when it has anything).
    pub fn values(&self) -> Vec<GroupValues> {
        let mut out: HashMap<Option<&str>, GroupValues> = HashMap::new();
        for (name, g) in &self.groups {
            out.insert(
                Some(name.as_str()),
                GroupValues {
                    comm: name.clone(),
                    counts: g.counts.clone(),
                    ..GroupValues::default()
                },
            );
        }
        for m in self.members.values() {
            let v = out
                .entry(m.group.as_deref())
                .or_insert_with(|| GroupValues {
                    comm: OTHER.to_string(),
                    counts: self.other.counts.clone(),
                    ..GroupValues::default()
                });
            v.processes += 1;
            for (a, b) in v.mapped.iter_mut().zip(m.mapped) {
                *a += b;
            }
            for (a, b) in v.resident.iter_mut().zip(m.rss.unwrap_or_default()) {
                *a += b;
            }
        }
        if !out.contains_key(&None) && self.other.counts != Counts::default() {
            out.insert(
                None,
                GroupValues {
                    comm: OTHER.to_string(),
                    counts: self.other.counts.clone(),
                    ..GroupValues::default()
                },
            );
        }
        let mut v: Vec<GroupValues> = out.into_values().collect();
        v.sort_by(|a, b| a.comm.cmp(&b.comm));
        v
    }

    /// The name of `p`'s group, raw: its comm, or its cgroup (the v1
    /// memory path on hybrid hosts, else the v2 one; "unknown" when
    /// /proc/PID/cgroup could not be read).
    pub fn name_of<'p>(&self, p: &'p Process) -> &'p [u8] {
        match self.by {
            GroupBy::Comm => &p.comm,
            GroupBy::Cgroup => p
                .cgroup
                .as_ref()
                .and_then(|c| c.main_path())
                .unwrap_or(b"unknown"),
        }
    }

    /// Groups in use (`other` aside).
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// Mapped bytes of `p` by kind ([`KINDS`]).
fn mapped_by_kind(p: &Process) -> [u64; KINDS.len()] {
    let mut m = [0u64; KINDS.len()];
    for r in p.space.live() {
        let i = match r.backing {
            Backing::Heap => 0,
            Backing::Stack => 1,
            Backing::Anon => 2,
            Backing::File { .. } => 3,
            Backing::Shm { .. } => 4,
            Backing::Special(_) => 5,
        };
        m[i] += r.len();
    }
    m
}

/// A scrape's request: the sink answers with a snapshot.
pub type Ask = oneshot::Sender<Snapshot>;

/// The daemon's sink with the metrics beside it (`groups` None: metrics
/// off, everything is only passed on).
pub struct MetricsSink {
    pub inner: LiveSink,
    groups: Option<Groups>,
    asks: Option<mpsc::Receiver<Ask>>,
}

impl MetricsSink {
    pub fn new(inner: LiveSink, groups: Option<Groups>) -> MetricsSink {
        MetricsSink {
            inner,
            groups,
            asks: None,
        }
    }

    /// Answers scrapes from now on (at each tick).
    pub fn serve(&mut self, asks: mpsc::Receiver<Ask>) {
        self.asks = Some(asks);
    }

    /// What a scrape reports now.
    pub fn snapshot(&self) -> Snapshot {
        let groups = self.groups.as_ref();
        Snapshot {
            groups: groups.map(Groups::values).unwrap_or_default(),
            health: self.inner.v2.out.status(),
            group_count: groups.map_or(0, |g| g.len() as u64),
            group_cap: groups.map_or(0, |g| g.cap as u64),
            group_by: groups.map(|g| g.by),
        }
    }
}

impl Sink for MetricsSink {
    fn started(&mut self, start_ns: u64) {
        self.inner.started(start_ns);
    }
    fn attached(&mut self, stack: StackPath) {
        self.inner.attached(stack);
    }
    fn signal(&mut self, name: &'static str) {
        self.inner.signal(name);
    }
    fn event(&mut self, ev: &Event, changes: &[RegionChange]) {
        if let Some(g) = self.groups.as_mut() {
            g.event(ev);
        }
        self.inner.event(ev, changes);
    }
    fn lost(&mut self, kind: EventKind, count: u64, now_ns: u64) {
        self.inner.lost(kind, count, now_ns);
    }
    fn check(&mut self, p: &Process, reason: CheckReason, c: &Comparison) {
        self.inner.check(p, reason, c);
    }
    fn void_check(&mut self, pid: u32, reason: CheckReason, ts_ns: u64, why: Option<VoidReason>) {
        self.inner.void_check(pid, reason, ts_ns, why);
    }
    fn processes(&mut self, ev: &Event, touched: &[&Process]) {
        if let Some(g) = self.groups.as_mut() {
            for p in touched {
                let name = g.name_of(p);
                g.know(p.pid, p.seq, name);
            }
        }
        self.inner.processes(ev, touched);
    }
    fn sample(&mut self, now_ns: u64, p: &Process) {
        if let Some(g) = self.groups.as_mut() {
            let name = g.name_of(p);
            g.know(p.pid, p.seq, name);
            g.sample(p.pid, mapped_by_kind(p), p.rss_kinds);
        }
        self.inner.sample(now_ns, p);
    }
    fn ended(&mut self, p: Process) {
        if let Some(g) = self.groups.as_mut() {
            g.ended(p.pid, p.seq);
        }
        self.inner.ended(p);
    }
    fn wanted_checks(&mut self) -> Vec<u32> {
        self.inner.wanted_checks()
    }
    fn degrade(&mut self) -> (bool, bool) {
        self.inner.degrade()
    }
    fn flush(&mut self) -> bool {
        let ok = self.inner.flush();
        if let Some(mut asks) = self.asks.take() {
            for _ in 0..MAX_CLIENTS {
                let Ok(reply) = asks.try_recv() else {
                    break;
                };
                let _ = reply.send(self.snapshot());
            }
            self.asks = Some(asks);
        }
        ok
    }
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

type Labels = Vec<(&'static str, String)>;
type GaugeU64 = Gauge<u64, AtomicU64>;

/// A metric of the daemon's health: (name, help, status key, counter).
const HEALTH: [(&str, &str, &str, bool); 17] = [
    (
        "mmtrace_daemon_uptime_seconds",
        "Seconds since the daemon started",
        "uptime_secs",
        false,
    ),
    (
        "mmtrace_daemon_events",
        "Kernel events the daemon handled",
        "events",
        true,
    ),
    (
        "mmtrace_daemon_records",
        "Timeline records the daemon rendered",
        "records",
        true,
    ),
    (
        "mmtrace_daemon_lost_events",
        "Events the kernel could not deliver (ring buffer full), all kinds",
        "lost_events",
        true,
    ),
    (
        "mmtrace_daemon_checks",
        "Comparisons of a process's model with /proc/PID/maps",
        "checks",
        true,
    ),
    (
        "mmtrace_daemon_drift",
        "Differences those checks found between the model and /proc",
        "drift",
        true,
    ),
    (
        "mmtrace_daemon_processes",
        "Processes the daemon traces now",
        "processes",
        false,
    ),
    (
        "mmtrace_daemon_regions",
        "Live regions of the traced processes",
        "regions",
        false,
    ),
    (
        "mmtrace_daemon_resident_bytes",
        "The daemon's own resident memory (its /proc/self/statm)",
        "rss_bytes",
        false,
    ),
    (
        "mmtrace_daemon_memory_cap_bytes",
        "The daemon's memory cap (memory_cap_mib)",
        "memory_cap_bytes",
        false,
    ),
    (
        "mmtrace_daemon_over_cap",
        "1 while the daemon's resident memory is over its cap",
        "over_cap",
        false,
    ),
    (
        "mmtrace_daemon_timelines_written",
        "Timelines written",
        "timelines_written",
        true,
    ),
    (
        "mmtrace_daemon_timelines_written_bytes",
        "Bytes of the timelines written",
        "timelines_written_bytes",
        true,
    ),
    (
        "mmtrace_daemon_timeline_write_failures",
        "Timelines that could not be written (lost)",
        "write_failures",
        true,
    ),
    (
        "mmtrace_daemon_exits_skipped",
        "Process exits whose timeline the keep policy skipped",
        "exits_skipped",
        true,
    ),
    (
        "mmtrace_daemon_timelines_deleted",
        "Timelines deleted by retention",
        "timelines_deleted",
        true,
    ),
    (
        "mmtrace_daemon_records_capped",
        "Records dropped past a timeline's cap (max_timeline_bytes)",
        "records_capped",
        true,
    ),
];

/// `snap` in Prometheus's text format (version 0.0.4).
pub fn encode(snap: &Snapshot) -> String {
    let mut reg = Registry::default();
    let family = |reg: &mut Registry, name: &str, help: &str| {
        let f = Family::<Labels, GaugeU64>::default();
        reg.register(name, help, f.clone());
        f
    };
    let resident = family(
        &mut reg,
        "mmtrace_process_resident_bytes",
        "Resident bytes of the group's live processes by kind as the kernel counts pages \
         (file; anon, which holds heap and stack; shm), from kmem:rss_stat or \
         /proc/PID/status at their last sample",
    );
    let mapped = family(
        &mut reg,
        "mmtrace_process_mapped_bytes",
        "Mapped bytes of the group's live processes by region kind (heap, stack, anon, file, \
         shm, special), from mmtrace's model of their address spaces",
    );
    let processes = family(
        &mut reg,
        "mmtrace_processes",
        "Live traced processes of the group",
    );
    let faults = Family::<Labels, Counter>::default();
    reg.register(
        "mmtrace_page_faults",
        "User page faults of the group's processes by access (faults = \"summary\" or \"all\"; \
         none with \"off\")",
        faults.clone(),
    );
    let syscalls = Family::<Labels, Counter>::default();
    reg.register(
        "mmtrace_syscalls",
        "Memory system calls of the group's processes by name, failed ones too \
         (events the kernel lost are not counted: see mmtrace_daemon_lost_events_total)",
        syscalls.clone(),
    );
    for g in &snap.groups {
        let label = snap.group_by.unwrap_or(GroupBy::Comm).label();
        let comm = || (label, g.comm.clone());
        processes.get_or_create(&vec![comm()]).set(g.processes);
        if g.processes > 0 {
            for (kind, bytes) in RESIDENT_KINDS.iter().zip(g.resident) {
                resident
                    .get_or_create(&vec![comm(), ("kind", (*kind).into())])
                    .set(bytes);
            }
            for (kind, bytes) in KINDS.iter().zip(g.mapped) {
                mapped
                    .get_or_create(&vec![comm(), ("kind", (*kind).into())])
                    .set(bytes);
            }
        }
        for (access, n) in ACCESSES.iter().zip(g.counts.faults) {
            faults
                .get_or_create(&vec![comm(), ("access", (*access).into())])
                .inc_by(n);
        }
        for (name, n) in SYSCALLS.iter().zip(g.counts.syscalls) {
            if n > 0 {
                syscalls
                    .get_or_create(&vec![comm(), ("syscall", (*name).into())])
                    .inc_by(n);
            }
        }
    }
    for (name, help, key, counter) in HEALTH {
        let v = &snap.health[key];
        let n = v.as_u64().or_else(|| v.as_bool().map(u64::from));
        let Some(n) = n else {
            continue;
        };
        if counter {
            let c = Counter::<u64>::default();
            c.inc_by(n);
            reg.register(name, help, c);
        } else {
            let g = GaugeU64::default();
            g.set(n);
            reg.register(name, help, g);
        }
    }
    let groups = GaugeU64::default();
    groups.set(snap.group_count);
    reg.register(
        "mmtrace_metrics_groups",
        "Process groups (comms) with their own series, \"other\" aside",
        groups,
    );
    let cap = GaugeU64::default();
    cap.set(snap.group_cap);
    reg.register(
        "mmtrace_metrics_groups_cap",
        "At most this many groups (metrics_groups); further comms count as \"other\"",
        cap,
    );
    let mut out = String::with_capacity(16 << 10);
    // Writing into a String cannot fail.
    let _ = prometheus_text::encode(&mut out, &reg);
    out
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// Binds `addr` (checked by the configuration) for the runtime.
pub fn bind(addr: &str) -> io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves scrapes until the runtime ends.
pub async fn serve(listener: std::net::TcpListener, asks: mpsc::Sender<Ask>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!("metrics: {e}; /metrics will not be served");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        // At most MAX_CLIENTS at once: the next accept waits for a slot.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let asks = asks.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = serve_one(stream, asks).await;
        });
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// GET (or HEAD: `body` false) /metrics.
    Metrics { body: bool },
    /// Status code and reason.
    Refused(u16, &'static str),
}

/// Routes a request head (its first line).
pub fn route(head: &[u8]) -> Route {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Route::Refused(400, "Bad Request");
    };
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return Route::Refused(400, "Bad Request");
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return Route::Refused(404, "Not Found");
    }
    match method {
        "GET" => Route::Metrics { body: true },
        "HEAD" => Route::Metrics { body: false },
        _ => Route::Refused(405, "Method Not Allowed"),
    }
}

fn response(code: u16, reason: &str, content_type: &str, body: &[u8], send_body: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    )
    .into_bytes();
    if code == 405 {
        out.extend_from_slice(b"Allow: GET, HEAD\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if send_body {
        out.extend_from_slice(body);
    }
    out
}

fn refusal(code: u16, reason: &str) -> Vec<u8> {
    let body = format!("{code} {reason}: mmtrace serves GET /metrics only\n");
    response(
        code,
        reason,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        true,
    )
}

/// The request head (up to the blank line), at most [`MAX_HEAD`] bytes.
async fn read_head<R: AsyncReadExt + Unpin>(s: &mut R) -> Result<Vec<u8>, (u16, &'static str)> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = s.read(&mut buf).await.map_err(|_| (400, "Bad Request"))?;
        if n == 0 {
            return Err((400, "Bad Request"));
        }
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        if head[from..].windows(4).any(|w| w == b"\r\n\r\n")
            || head[from..].windows(2).any(|w| w == b"\n\n")
        {
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err((431, "Request Header Fields Too Large"));
        }
    }
}

async fn write_timed(s: &mut tokio::net::TcpStream, bytes: &[u8]) -> io::Result<()> {
    tokio::time::timeout(IO_TIMEOUT, s.write_all(bytes))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

async fn serve_one(mut s: tokio::net::TcpStream, asks: mpsc::Sender<Ask>) -> io::Result<()> {
    let route = match tokio::time::timeout(IO_TIMEOUT, read_head(&mut s)).await {
        Ok(Ok(head)) => route(&head),
        Ok(Err((code, reason))) => Route::Refused(code, reason),
        Err(_) => Route::Refused(408, "Request Timeout"),
    };
    let body = match route {
        Route::Refused(code, reason) => {
            write_timed(&mut s, &refusal(code, reason)).await?;
            return s.shutdown().await;
        }
        Route::Metrics { body } => body,
    };
    let (tx, rx) = oneshot::channel();
    let snap = match asks.try_send(tx) {
        Ok(()) => tokio::time::timeout(IO_TIMEOUT, rx)
            .await
            .ok()
            .and_then(Result::ok),
        Err(_) => None,
    };
    let reply = match snap {
        Some(snap) => {
            // Off the event loop's thread (a few ms for hundreds of groups).
            let text = tokio::task::spawn_blocking(move || encode(&snap))
                .await
                .map_err(io::Error::other)?;
            response(
                200,
                "OK",
                prometheus_text::CONTENT_TYPE,
                text.as_bytes(),
                body,
            )
        }
        None => refusal(503, "Service Unavailable"),
    };
    write_timed(&mut s, &reply).await?;
    s.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(pid: u32, comm: &str, body: Body) -> Event {
        Event {
            ts_ns: 1,
            cpu: 0,
            pid,
            tid: pid,
            comm: comm.as_bytes().to_vec(),
            body,
            counters: None,
        }
    }

    fn fault(access: Access) -> Body {
        Body::Fault {
            addr: 0x1000,
            ip: 0,
            access,
            present: false,
        }
    }

    fn summary(read: u64, write: u64) -> Body {
        Body::FaultSummary {
            interval_ns: 1,
            read,
            write,
            exec: 0,
            present: 0,
        }
    }

    fn find<'a>(v: &'a [GroupValues], comm: &str) -> &'a GroupValues {
        v.iter()
            .find(|g| g.comm == comm)
            .unwrap_or_else(|| panic!("{comm} in {v:?}"))
    }

    #[test]
    fn groups_sum_processes_and_keep_counts_past_exits() {
        let mut g = Groups::new(10);
        g.know(10, 1, b"web");
        g.know(11, 2, b"web");
        g.know(12, 3, b"db");
        g.sample(10, [1, 2, 3, 4, 5, 6], Some([100, 0, 1]));
        g.sample(11, [10, 20, 30, 40, 50, 60], Some([1000, 7, 0]));
        g.sample(12, [0, 0, 7, 0, 0, 0], None);
        g.event(&ev(10, "web", fault(Access::Write)));
        g.event(&ev(11, "web", summary(3, 4)));
        g.event(&ev(
            12,
            "db",
            Body::Munmap {
                addr: 0,
                len: 0,
                ret: crate::event::SysResult::Ok(0),
            },
        ));
        let v = g.values();
        let web = find(&v, "web");
        assert_eq!(web.processes, 2);
        assert_eq!(web.mapped, [11, 22, 33, 44, 55, 66]);
        assert_eq!(web.resident, [1100, 7, 1]);
        assert_eq!(web.counts.faults, [3, 5, 0]);
        let db = find(&v, "db");
        assert_eq!(db.resident, [0; 3]);
        assert_eq!(db.counts.syscalls[2], 1);
        // Exits: the sizes go, the counts stay.
        g.ended(10, 1);
        g.ended(11, 2);
        let v = g.values();
        let web = find(&v, "web");
        assert_eq!(
            (web.processes, web.resident, web.mapped),
            (0, [0; 3], [0; 6])
        );
        assert_eq!(web.counts.faults, [3, 5, 0]);
        // A stale end (another process on the pid) changes nothing.
        g.ended(12, 99);
        assert_eq!(find(&g.values(), "db").processes, 1);
    }

    #[test]
    fn groups_by_cgroup_name_the_v1_memory_path_else_the_v2_one() {
        use crate::kernel::cgroup::Cgroup;
        let mut g = Groups::by(2, GroupBy::Cgroup);
        let mut web = Process::new_for_test(10);
        web.comm = b"web".to_vec();
        web.cgroup = Some(Cgroup {
            v2: Some(b"/".to_vec()),
            v2_id: Some(1),
            v1_memory: Some(b"/docker/abc".to_vec()),
        });
        let mut svc = Process::new_for_test(11);
        svc.comm = b"web".to_vec();
        svc.cgroup = Some(Cgroup {
            v2: Some(b"/system.slice/x\x1b.scope".to_vec()),
            v2_id: Some(7),
            v1_memory: None,
        });
        let unknown = Process::new_for_test(12);
        for p in [&web, &svc, &unknown] {
            let name = g.name_of(p);
            g.know(p.pid, p.seq, name);
        }
        // Events of a process not known yet go to "other".
        g.event(&ev(99, "web", fault(Access::Write)));
        g.event(&ev(10, "web", fault(Access::Write)));
        let v = g.values();
        assert_eq!(find(&v, "/docker/abc").processes, 1);
        assert_eq!(find(&v, "/docker/abc").counts.faults[1], 1);
        // Escaped as comms are; and the cap of 2 holds: "unknown" is other.
        assert_eq!(find(&v, "/system.slice/x\\x1b.scope").processes, 1);
        assert_eq!(find(&v, OTHER).processes, 1);
        assert_eq!(find(&v, OTHER).counts.faults[1], 1);
        let text = encode(&Snapshot {
            groups: v,
            health: Value::Null,
            group_count: 2,
            group_cap: 2,
            group_by: Some(GroupBy::Cgroup),
        });
        assert!(
            text.contains("mmtrace_processes{cgroup=\"/docker/abc\"} 1"),
            "{text}"
        );
        assert!(!text.contains("comm="), "{text}");
    }

    #[test]
    fn exec_moves_a_process_to_its_new_group() {
        let mut g = Groups::new(10);
        g.know(10, 1, b"sh");
        g.event(&ev(10, "sh", fault(Access::Read)));
        g.know(10, 1, b"python3");
        g.event(&ev(10, "python3", fault(Access::Read)));
        let v = g.values();
        assert_eq!(find(&v, "sh").processes, 0);
        assert_eq!(find(&v, "sh").counts.faults[0], 1);
        assert_eq!(find(&v, "python3").processes, 1);
        assert_eq!(find(&v, "python3").counts.faults[0], 1);
    }

    #[test]
    fn the_cap_bounds_groups_and_counters_stay_monotonic() {
        let mut g = Groups::new(2);
        g.know(1, 1, b"a");
        g.know(2, 2, b"b");
        g.know(3, 3, b"c");
        for pid in 1..=3 {
            g.event(&ev(pid, "x", fault(Access::Write)));
        }
        let v = g.values();
        assert_eq!(v.len(), 3, "{v:?}");
        assert_eq!(find(&v, OTHER).processes, 1);
        assert_eq!(find(&v, OTHER).counts.faults[1], 1);
        assert_eq!(g.len(), 2);
        // "a" is gone: its group is recycled for "d"; "other" keeps what it
        // counted (c's process stays in it).
        g.ended(1, 1);
        g.know(4, 4, b"d");
        g.event(&ev(4, "d", fault(Access::Write)));
        g.event(&ev(3, "c", fault(Access::Write)));
        let v = g.values();
        assert!(v.iter().all(|x| x.comm != "a"), "{v:?}");
        assert_eq!(find(&v, "d").counts.faults[1], 1);
        assert_eq!(find(&v, OTHER).counts.faults[1], 2);
        assert_eq!(g.len(), 2);
        // Events of an unknown pid go to its comm's group, or other.
        g.event(&ev(99, "zzz", fault(Access::Exec)));
        assert_eq!(find(&g.values(), OTHER).counts.faults[2], 1);
        // Many comms: never more than the cap.
        for pid in 100..1100 {
            g.know(pid, u64::from(pid), format!("p{pid}").as_bytes());
            g.ended(pid, u64::from(pid));
        }
        assert!(g.len() <= 2);
        assert!(g.values().len() <= 3);
    }

    #[test]
    fn comms_are_escaped_and_other_is_reserved() {
        let mut g = Groups::new(5);
        g.know(1, 1, b"evil\x1b[31m\"x");
        g.know(2, 2, b"other");
        let v = g.values();
        assert!(v.iter().any(|x| x.comm == "evil\\x1b[31m\"x"), "{v:?}");
        assert_eq!(g.len(), 1);
        let text = encode(&Snapshot {
            groups: v,
            health: Value::Null,
            group_count: 1,
            group_cap: 5,
            group_by: None,
        });
        assert!(text.contains("comm=\"evil\\\\x1b[31m\\\"x\""), "{text}");
    }

    #[test]
    fn encoding_has_every_family_with_help_and_type() {
        let snap = Snapshot {
            groups: vec![GroupValues {
                comm: "web".into(),
                processes: 2,
                mapped: [1, 2, 3, 4, 5, 6],
                resident: [4096, 8192, 0],
                counts: Counts {
                    faults: [1, 2, 0],
                    syscalls: {
                        let mut s = [0; SYSCALLS.len()];
                        s[1] = 7;
                        s
                    },
                },
            }],
            health: serde_json::json!({"events": 12, "over_cap": false, "rss_bytes": 5}),
            group_count: 1,
            group_cap: 200,
            group_by: None,
        };
        let text = encode(&snap);
        for want in [
            "# TYPE mmtrace_process_resident_bytes gauge",
            "mmtrace_process_resident_bytes{comm=\"web\",kind=\"file\"} 4096",
            "mmtrace_process_resident_bytes{comm=\"web\",kind=\"anon\"} 8192",
            "mmtrace_process_resident_bytes{comm=\"web\",kind=\"shm\"} 0",
            "mmtrace_process_mapped_bytes{comm=\"web\",kind=\"heap\"} 1",
            "mmtrace_process_mapped_bytes{comm=\"web\",kind=\"special\"} 6",
            "mmtrace_processes{comm=\"web\"} 2",
            "# TYPE mmtrace_page_faults_total counter",
            "mmtrace_page_faults_total{comm=\"web\",access=\"write\"} 2",
            "mmtrace_page_faults_total{comm=\"web\",access=\"exec\"} 0",
            "mmtrace_syscalls_total{comm=\"web\",syscall=\"mmap\"} 7",
            "mmtrace_daemon_events_total 12",
            "mmtrace_daemon_over_cap 0",
            "mmtrace_daemon_resident_bytes 5",
            "mmtrace_metrics_groups_cap 200",
        ] {
            assert!(text.contains(want), "{want} in:\n{text}");
        }
        // Zero syscall counts are left out; so are keys the status lacks.
        assert!(!text.contains("syscall=\"brk\""), "{text}");
        assert!(!text.contains("mmtrace_daemon_checks"), "{text}");
        // Every sample line belongs to a family with HELP and TYPE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{line}: no TYPE in\n{text}"
            );
        }
    }

    #[test]
    fn requests_are_routed() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics { body: true }
        );
        assert_eq!(
            route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Route::Metrics { body: true }
        );
        assert_eq!(
            route(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            Route::Metrics { body: false }
        );
        assert_eq!(
            route(b"GET / HTTP/1.1\r\n\r\n"),
            Route::Refused(404, "Not Found")
        );
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::Refused(405, "Method Not Allowed")
        );
        assert_eq!(
            route(b"garbage\r\n\r\n"),
            Route::Refused(400, "Bad Request")
        );
        assert_eq!(
            route(b"GET /metrics SPDY\r\n\r\n"),
            Route::Refused(400, "Bad Request")
        );
    }

    #[tokio::test]
    async fn long_heads_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(64 << 10);
        let writer = tokio::spawn(async move {
            let _ = a.write_all(&vec![b'x'; 20_000]).await;
            a
        });
        assert_eq!(
            read_head(&mut b).await.unwrap_err(),
            (431, "Request Header Fields Too Large")
        );
        drop(writer.await);
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n")
            .await
            .unwrap();
        let head = read_head(&mut b).await.unwrap();
        assert_eq!(route(&head), Route::Metrics { body: true });
    }

    /// A real socket: a scrape is answered from the sink's snapshot; a
    /// wrong path gets 404.
    #[tokio::test]
    async fn scrapes_are_answered_over_tcp() {
        let l = bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel::<Ask>(MAX_CLIENTS);
        tokio::spawn(serve(l, tx));
        // The "sink": answers each ask.
        tokio::spawn(async move {
            while let Some(reply) = rx.recv().await {
                let mut g = Groups::new(4);
                g.know(1, 1, b"web");
                g.sample(1, [0, 0, 8192, 0, 0, 0], Some([0, 4096, 0]));
                let _ = reply.send(Snapshot {
                    groups: g.values(),
                    health: serde_json::json!({"events": 3}),
                    group_count: 1,
                    group_cap: 4,
                    group_by: None,
                });
            }
        });
        let get = |req: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("text/plain; version=0.0.4"), "{ok}");
        assert!(
            ok.contains("mmtrace_process_resident_bytes{comm=\"web\",kind=\"anon\"} 4096"),
            "{ok}"
        );
        let (head, body) = ok.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        let nf = get("GET /other HTTP/1.1\r\n\r\n").await;
        assert!(nf.starts_with("HTTP/1.1 404 "), "{nf}");
    }
}
