//! The daemon's output: the very records `mmtrace record` writes (its
//! [`V2Sink`](crate::commands::record::V2Sink) renders them), routed to one
//! timeline file per process.
//!
//! - Each live process has a small buffer of its rendered lines; past
//!   [`SPILL`] bytes the buffer is appended to its spool file
//!   (`DATA_DIR/spool/SEQ.jsonl`, opened and closed at each spill: no
//!   descriptor per process). Memory follows what is alive, not history.
//! - Past `keep.max_timeline_bytes`, a process's records are dropped and
//!   counted (only its process records still go in); its file says how many
//!   in a `lost` record of kind `timeline_cap`.
//! - When it leaves the model (its exit, or the daemon's stop: event
//!   `end`), the keep policy decides: its timeline is assembled (header,
//!   spool, buffer, lost records, end line) into a temporary file in
//!   `DATA_DIR/timelines/`, fsynced, renamed (never over an existing file),
//!   and the directory fsynced; or its exit is counted per comm.
//! - Retention then deletes the oldest timelines (names sort by time).

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use log::{info, warn};

use super::{
    config::{Config, Keep, Retention},
    control::{self, Ask, Reply, Request, SortKey},
    files, live, memory,
};
use crate::{
    commands::record::V2Out,
    kernel::StackPath,
    output::{
        file::MODE,
        timeline2::{self as v2, ProcessEvent, Record},
    },
};

/// A process's buffered lines go to its spool file past this many bytes.
pub const SPILL: usize = 8 << 10;
/// The `lost` kind of the records a process's cap dropped.
pub const CAP_KIND: &str = "timeline_cap";
/// How often the statistics line is logged (and at the stop).
const STATS_EVERY: Duration = Duration::from_mins(10);
/// How often the daemon's own resident memory is compared with its cap.
const MEMORY_EVERY: Duration = Duration::from_secs(1);
/// Comms named in the statistics line (the rest are summed).
const STATS_COMMS: usize = 10;

/// The daemon's directories, created 0700 (timelines reveal address
/// layouts: ASLR).
pub struct Dirs {
    pub timelines: PathBuf,
    pub spool: PathBuf,
    /// `DATA_DIR/daemon.lock`, locked (flock) while the daemon runs: a
    /// second daemon on the same directory is refused.
    _lock: File,
}

impl Dirs {
    /// Creates (or fixes the mode of) DATA_DIR, its timelines/ and spool/;
    /// removes what a crash left: spool files and temporary timelines.
    pub fn prepare(data_dir: &Path) -> io::Result<Dirs> {
        private_dir(data_dir)?;
        let dirs = Dirs {
            timelines: data_dir.join("timelines"),
            spool: data_dir.join("spool"),
            _lock: lock(&data_dir.join("daemon.lock"))?,
        };
        for d in [&dirs.timelines, &dirs.spool] {
            private_dir(d)?;
        }
        let mut cut = 0;
        for e in std::fs::read_dir(&dirs.spool)? {
            let e = e?;
            std::fs::remove_file(e.path())?;
            cut += 1;
        }
        if cut > 0 {
            warn!(
                "removed {cut} spool file(s) left by a daemon that did not stop cleanly: \
                 those processes' timelines are lost"
            );
        }
        for e in std::fs::read_dir(&dirs.timelines)? {
            let e = e?;
            if e.file_name().as_encoded_bytes().starts_with(b".") {
                std::fs::remove_file(e.path())?;
            }
        }
        Ok(dirs)
    }
}

/// Opens (creates 0600) and locks `path`; refused when another process
/// holds it.
fn lock(path: &Path) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    // SAFETY: an open descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        return Err(if e.kind() == io::ErrorKind::WouldBlock {
            io::Error::other(format!(
                "{} is locked: another mmtrace daemon uses this data directory",
                path.display()
            ))
        } else {
            io::Error::new(e.kind(), format!("{}: {e}", path.display()))
        });
    }
    Ok(f)
}

/// `dir` exists, is a real directory (not a link), is ours and is 0700.
fn private_dir(dir: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {
            use std::os::unix::fs::MetadataExt;
            // SAFETY: geteuid cannot fail.
            let me = unsafe { libc::geteuid() };
            if m.uid() != me {
                // Its owner could swap what is inside for links elsewhere.
                return Err(io::Error::other(format!(
                    "{} belongs to uid {}, not to this daemon (uid {me})",
                    dir.display(),
                    m.uid()
                )));
            }
            if m.permissions().mode() & 0o7777 != 0o700 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
            Ok(())
        }
        Ok(_) => Err(io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    }
}

/// What the daemon knows of a live process besides its lines.
struct Proc {
    seq: u64,
    pid: u32,
    /// Its rendered lines not yet spooled.
    buf: Vec<u8>,
    /// Lines (records) in `buf`.
    buf_records: u64,
    /// Bytes in its spool file.
    spooled: u64,
    /// Bytes of its timeline so far (spool and buffer).
    bytes: u64,
    /// Past its cap: records dropped since.
    capped: bool,
    dropped: u64,
    first_t: u64,
    start_time: Option<u64>,
    peak_rss: u64,
    peak_mapped: u64,
    records: u64,
    regions: u64,
    region_records: u64,
    checks: u64,
    drift: u64,
    /// The daemon's lost-event counts at its first sight.
    lost_at_start: BTreeMap<String, u64>,
    /// Its last process record (comm, for `ps`; its end for a dump).
    last: v2::ProcessRecord,
    /// Its last counters, when they came, and its faults per second then.
    counters: Option<v2::Counters>,
    counters_at: Option<Instant>,
    faults_per_sec: f64,
    /// Regions born minus regions dead.
    live_regions: u64,
}

/// The daemon's statistics.
#[derive(Default)]
pub struct Stats {
    pub written: u64,
    pub written_bytes: u64,
    pub write_failures: u64,
    pub skipped: u64,
    /// Skipped exits by comm (at most `keep.skipped_comms`; then "other").
    pub skipped_by_comm: BTreeMap<String, u64>,
    pub deleted: u64,
    /// Records dropped past the processes' caps.
    pub capped_records: u64,
    /// Records of no known process (e.g. changes of a pid never started).
    pub orphan_records: u64,
    pub lost_events: u64,
    /// Times the daemon's resident memory went over its cap.
    pub over_cap: u64,
    /// Records rendered (every process's lines).
    pub records: u64,
    /// Events handled (as `record`'s end line counts them).
    pub events: u64,
    pub checks: u64,
    pub drift: u64,
}

/// Routes the v2 records to per-process timelines.
pub struct DaemonOut {
    config_path: PathBuf,
    config: Config,
    dirs: Dirs,
    header: Option<v2::Header>,
    stack_source: String,
    procs: HashMap<u64, Proc>,
    lost_by_kind: BTreeMap<String, u64>,
    pub stats: Stats,
    /// The timelines on disk, oldest first: (name, bytes, mtime secs).
    index: VecDeque<(String, u64, u64)>,
    index_bytes: u64,
    line: Vec<u8>,
    last_stats: Instant,
    last_memory: Instant,
    /// The daemon's resident memory is over `memory_cap_mib`.
    over_cap: bool,
    spool_failed: bool,
    /// The control socket's requests (None: no socket).
    asks: Option<tokio::sync::mpsc::Receiver<Ask>>,
    started: Instant,
    /// Records per second, measured about every second.
    rate_at: (Instant, u64, u64),
    records_per_sec: f64,
    events_per_sec: f64,
    /// The subscribers to the live events (`stream --connect`).
    pub live: live::Feed,
    /// The memory cap's degradation (see [`memory`]).
    pub memory: memory::Guard,
    /// Dumps waiting for their process's check.
    dumps: Vec<PendingDump>,
    /// A stop signal came: the processes still live end with the daemon.
    stopping: bool,
    /// Processes to check now (for those dumps), not yet asked for.
    want_checks: Vec<u32>,
}

/// A dump waits for a comparison of its process with /proc/PID/maps.
struct PendingDump {
    pid: u32,
    seq: u64,
    reply: tokio::sync::oneshot::Sender<Reply>,
    /// Void checks seen since the ask.
    voids: u32,
    /// A check was made (void or not) and the dump can go.
    outcome: Option<&'static str>,
    deadline: Instant,
}

/// How long a dump waits for its check at most (then it goes without).
const DUMP_CHECK_WAIT: Duration = Duration::from_secs(5);
/// Void checks (changes too close to the read) a dump waits through.
const DUMP_CHECK_VOIDS: u32 = 3;

impl DaemonOut {
    pub fn new(config_path: PathBuf, config: Config, dirs: Dirs) -> io::Result<DaemonOut> {
        let mut out = DaemonOut {
            config_path,
            config,
            dirs,
            header: None,
            stack_source: "off".into(),
            procs: HashMap::new(),
            lost_by_kind: BTreeMap::new(),
            stats: Stats::default(),
            index: VecDeque::new(),
            index_bytes: 0,
            line: Vec::with_capacity(512),
            last_stats: Instant::now(),
            last_memory: Instant::now(),
            over_cap: false,
            spool_failed: false,
            asks: None,
            started: Instant::now(),
            rate_at: (Instant::now(), 0, 0),
            records_per_sec: 0.0,
            events_per_sec: 0.0,
            live: live::Feed::default(),
            memory: memory::Guard::new(0, 1),
            dumps: Vec::new(),
            want_checks: Vec::new(),
            stopping: false,
        };
        out.memory = memory::Guard::new(
            memory_cap_bytes(out.config.memory_cap_mib),
            out.config.keep.skipped_comms,
        );
        out.load_index()?;
        out.retention();
        Ok(out)
    }

    fn load_index(&mut self) -> io::Result<()> {
        let mut found = Vec::new();
        for e in std::fs::read_dir(&self.dirs.timelines)? {
            let e = e?;
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name.starts_with('.') || Path::new(&name).extension().is_none_or(|e| e != "jsonl") {
                continue;
            }
            let m = e.metadata()?;
            if m.is_file() {
                found.push((name, m.len(), mtime_secs(&m)));
            }
        }
        found.sort();
        self.index_bytes = found.iter().map(|f| f.1).sum();
        self.index = found.into();
        Ok(())
    }

    /// Live processes.
    pub fn live(&self) -> usize {
        self.procs.len()
    }

    fn spool_path(&self, seq: u64) -> PathBuf {
        spool_file(&self.dirs.spool, seq)
    }

    /// Appends the rendered `self.line` to `seq`'s timeline; `always`: even
    /// past its cap (its process records).
    fn append(&mut self, seq: u64, always: bool) {
        let cap = self.config.keep.max_timeline_bytes;
        let len = self.line.len() as u64;
        let Some(p) = self.procs.get_mut(&seq) else {
            self.stats.orphan_records += 1;
            return;
        };
        p.records += 1;
        if !always && (p.capped || p.bytes + len > cap) {
            p.capped = true;
            p.dropped += 1;
            self.stats.capped_records += 1;
            return;
        }
        p.buf.extend_from_slice(&self.line);
        p.buf_records += 1;
        p.bytes += len;
        if p.buf.len() >= SPILL {
            let spill_to = spool_file(&self.dirs.spool, seq);
            match spill(&spill_to, &p.buf) {
                Ok(()) => p.spooled += p.buf.len() as u64,
                Err(e) => {
                    // Its lines are lost: counted, and said in its file.
                    if !self.spool_failed {
                        warn!(
                            "cannot write {}: {e}; the records are dropped and counted \
                             (further failures are only counted)",
                            spill_to.display()
                        );
                        self.spool_failed = true;
                    }
                    p.dropped += p.buf_records;
                    self.stats.capped_records += p.buf_records;
                    p.bytes -= p.buf.len() as u64;
                    p.capped = true;
                }
            }
            // Its capacity goes too: an idle process holds nothing.
            p.buf = Vec::new();
            p.buf_records = 0;
        }
    }

    fn first_sight(&mut self, rec: &v2::ProcessRecord) {
        let lost_at_start = self.lost_by_kind.clone();
        self.procs.entry(rec.proc).or_insert_with(|| Proc {
            seq: rec.proc,
            pid: rec.pid,
            buf: Vec::new(),
            buf_records: 0,
            spooled: 0,
            bytes: 0,
            capped: false,
            dropped: 0,
            first_t: rec.t_ns,
            start_time: rec.start_time,
            peak_rss: 0,
            peak_mapped: 0,
            records: 0,
            regions: 0,
            region_records: 0,
            checks: 0,
            drift: 0,
            lost_at_start,
            last: rec.clone(),
            counters: None,
            counters_at: None,
            faults_per_sec: 0.0,
            live_regions: 0,
        });
    }

    /// Why `p`'s timeline is kept (None: it is not).
    fn keep_reason(&self, p: &Proc, last: &v2::ProcessRecord) -> Option<String> {
        let k: &Keep = &self.config.keep;
        // Always: what grew before an OOM kill is what the daemon is for.
        if last.oom_kill_ns.is_some() {
            return Some("oom-killed".into());
        }
        if last.event == ProcessEvent::End {
            return Some(if self.stopping {
                "running at the daemon's stop".into()
            } else {
                // Gone unseen (a lost exit, a pid reused): an anomaly.
                "its exit was not seen".into()
            });
        }
        if k.killed_by_signal {
            if let Some(sig) = &last.exit_signal {
                return Some(format!("killed by {sig}"));
            }
        }
        if k.drift && p.drift > 0 {
            return Some(format!("{} drift", p.drift));
        }
        let start_mono = self.header.as_ref().map_or(0, |h| h.monotonic_start_ns);
        let seen = last.t_ns.saturating_sub(p.first_t);
        let since_start = p
            .start_time
            .map_or(0, |s| (start_mono + last.t_ns).saturating_sub(s));
        let lived = seen.max(since_start) as f64 / 1e9;
        if lived >= k.min_lifetime_secs {
            return Some(format!("lived {lived:.1} s"));
        }
        if p.peak_rss >= k.min_peak_rss_bytes {
            return Some(format!("peak resident {} bytes", p.peak_rss));
        }
        if p.peak_mapped >= k.min_peak_mapped_bytes {
            return Some(format!("peak mapped {} bytes", p.peak_mapped));
        }
        None
    }

    /// `p` left the model with `last` (its exit or end record, already
    /// appended): its timeline is written or its exit counted.
    fn finish(&mut self, mut p: Proc, last: &v2::ProcessRecord) {
        let spool = self.spool_path(p.seq);
        let Some(reason) = self.keep_reason(&p, last) else {
            if p.spooled > 0 {
                let _ = std::fs::remove_file(&spool);
            }
            self.stats.skipped += 1;
            let comm = if self.stats.skipped_by_comm.contains_key(&last.comm)
                || self.stats.skipped_by_comm.len() < self.config.keep.skipped_comms
            {
                last.comm.clone()
            } else {
                "other".to_string()
            };
            *self.stats.skipped_by_comm.entry(comm).or_default() += 1;
            return;
        };
        let name = files::timeline_name_now(p.pid, last.comm.as_bytes());
        let tail = self.tail(&mut p, last);
        match self.write_timeline(&name, &p, &spool, &tail) {
            Ok((name, bytes)) => {
                self.stats.written += 1;
                self.stats.written_bytes += bytes;
                let how = match (last.event, &last.exit_signal, last.exit_code) {
                    (ProcessEvent::End, _, _) if self.stopping => {
                        "cut by the daemon's stop".to_string()
                    }
                    (ProcessEvent::End, _, _) => "gone without its exit seen".to_string(),
                    (_, Some(sig), _) => format!("killed by {sig}"),
                    (_, None, Some(code)) => format!("exit {code}"),
                    _ => "exit".to_string(),
                };
                let capped = if p.dropped > 0 {
                    format!(", {} records past its cap dropped", p.dropped)
                } else {
                    String::new()
                };
                info!(
                    "timeline {name}: pid {} {:?}, {how}, {bytes} bytes{capped} (kept: {reason})",
                    p.pid, last.comm
                );
                let at = self.index.partition_point(|e| e.0 < name);
                self.index.insert(at, (name, bytes, now_secs()));
                self.index_bytes += bytes;
                self.retention();
            }
            Err(e) => {
                self.stats.write_failures += 1;
                // 1, 2, 4, 8...: a full disk does not flood the log.
                if self.stats.write_failures.is_power_of_two() {
                    warn!(
                        "cannot write the timeline of pid {} {:?}: {e}; it is lost \
                         ({} lost so far)",
                        p.pid, last.comm, self.stats.write_failures
                    );
                }
            }
        }
        if p.spooled > 0 {
            let _ = std::fs::remove_file(&spool);
        }
    }

    /// The lines after `p`'s records: its lost events and its end line.
    fn tail(&mut self, p: &mut Proc, last: &v2::ProcessRecord) -> Vec<u8> {
        let mut out = Vec::new();
        let mut end = v2::End {
            t_ns: last.t_ns,
            duration_ns: last.t_ns.saturating_sub(p.first_t),
            stack_source: self.stack_source.clone(),
            events: p.records,
            processes: 1,
            regions: p.regions,
            region_records: p.region_records,
            checks: p.checks,
            drift: p.drift,
            ..v2::End::default()
        };
        let mut lost: BTreeMap<String, u64> = BTreeMap::new();
        for (kind, n) in &self.lost_by_kind {
            let before = p.lost_at_start.get(kind).copied().unwrap_or(0);
            if *n > before {
                lost.insert(kind.clone(), n - before);
            }
        }
        if p.dropped > 0 {
            lost.insert(CAP_KIND.to_string(), p.dropped);
        }
        for (kind, count) in &lost {
            let rec = Record::Lost(v2::Lost {
                t_ns: last.t_ns,
                kind: kind.clone(),
                count: *count,
            });
            v2::write_record(&mut out, &rec);
            end.lost_events += count;
        }
        end.lost_by_kind = lost;
        v2::write_record(&mut out, &Record::End(end));
        out
    }

    /// Writes header, spool, buffer and `tail` into a temporary file,
    /// renames it to `name` (or `name` with a number when taken); returns
    /// the name and size.
    fn write_timeline(
        &self,
        name: &str,
        p: &Proc,
        spool: &Path,
        tail: &[u8],
    ) -> io::Result<(String, u64)> {
        let header = self
            .header
            .clone()
            .ok_or_else(|| io::Error::other("no header yet"))?;
        let dir = &self.dirs.timelines;
        let temp = dir.join(format!(".{name}.tmp"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)?;
        let written = (|| {
            let mut w = BufWriter::new(&file);
            let mut head = Vec::new();
            v2::write_record(&mut head, &Record::Header(header));
            w.write_all(&head)?;
            if p.spooled > 0 {
                let mut s = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(spool)?;
                io::copy(&mut s, &mut w)?;
            }
            w.write_all(&p.buf)?;
            w.write_all(tail)?;
            w.flush()?;
            drop(w);
            file.sync_all()?;
            let bytes = file.metadata()?.len();
            let name = rename_new(&temp, dir, name)?;
            File::open(dir)?.sync_all()?;
            Ok((name, bytes))
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written
    }

    /// Answers the control socket's requests from now on (at each tick).
    pub fn serve(&mut self, asks: tokio::sync::mpsc::Receiver<Ask>) {
        self.asks = Some(asks);
    }

    /// The answer to a control request.
    pub fn answer(&mut self, req: Request) -> Reply {
        match req {
            Request::Status => Reply::Line(self.status_line()),
            Request::Ps { sort } => Reply::Line(self.ps_line(sort)),
            Request::Dump { pid } => self.dump(pid, "not asked"),
            Request::Stream(r) => match self.live.subscribe(&r, &self.config.faults) {
                Some(sub) => Reply::Stream(sub),
                None => Reply::Line(control::error_line(&format!(
                    "too many subscribers (at most {})",
                    live::MAX_SUBSCRIBERS
                ))),
            },
        }
    }

    fn status_line(&self) -> String {
        let v = serde_json::json!({"v": control::VERSION, "status": self.status()});
        format!("{v}\n")
    }

    /// What `mmtrace status` reports (and the metrics' daemon health).
    pub fn status(&self) -> serde_json::Value {
        let s = &self.stats;
        let rss = crate::kernel::proc::statm_rss(std::process::id()).unwrap_or(0);
        let regions: u64 = self.procs.values().map(|p| p.live_regions).sum();
        serde_json::json!({
                "uptime_secs": self.started.elapsed().as_secs(),
                "events": s.events,
                "events_per_sec": (self.events_per_sec * 10.0).round() / 10.0,
                "records": s.records,
                "records_per_sec": (self.records_per_sec * 10.0).round() / 10.0,
                "lost_events": s.lost_events,
                "checks": s.checks,
                "drift": s.drift,
                "processes": self.procs.len(),
                "regions": regions,
                "rss_bytes": rss,
                "memory_cap_bytes": memory_cap_bytes(self.config.memory_cap_mib),
                "degrade_level": self.memory.applied,
                "degrade_steps": self.memory.entered,
                "fault_detail_dropped": self.memory.fault_detail_dropped,
                "untracked_processes": self.memory.untracked,
                "untracked_by_comm": self.memory.untracked_by_comm,
                "over_cap": self.over_cap,
                "timelines_written": s.written,
                "timelines_written_bytes": s.written_bytes,
                "write_failures": s.write_failures,
                "exits_skipped": s.skipped,
                "timelines_deleted": s.deleted,
                "records_capped": s.capped_records,
                "subscribers": self.live.len(),
                "subscriber_drops": self.live.dropped(),
        })
    }

    fn ps_line(&self, sort: SortKey) -> String {
        let stale = Duration::from_secs(2);
        let mut rows: Vec<&Proc> = self.procs.values().collect();
        let key = |p: &Proc| -> u64 {
            let c = p.counters.as_ref();
            match sort {
                SortKey::Rss => c.and_then(|c| c.rss).unwrap_or(0),
                SortKey::Mapped => c.map_or(0, |c| c.mapped),
                SortKey::Regions => p.live_regions,
                SortKey::Faults => p.faults_per_sec as u64,
                SortKey::Pid => 0,
            }
        };
        rows.sort_by(|a, b| key(b).cmp(&key(a)).then(a.pid.cmp(&b.pid)));
        let ps: Vec<serde_json::Value> = rows
            .iter()
            .map(|p| {
                let c = p.counters.as_ref();
                let fresh = p.counters_at.is_some_and(|t| t.elapsed() < stale);
                serde_json::json!({
                    "pid": p.pid,
                    "proc": p.seq,
                    "comm": p.last.comm,
                    "cgroup": p.last.cgroup.as_ref().and_then(|c| c.main_path()),
                    "mapped": c.map_or(0, |c| c.mapped),
                    "heap": c.map_or(0, |c| c.heap),
                    "stack": c.map_or(0, |c| c.stack),
                    "rss": c.and_then(|c| c.rss),
                    "regions": p.live_regions,
                    "faults": c.map_or(0, |c| c.faults),
                    "faults_per_sec": if fresh { (p.faults_per_sec * 10.0).round() / 10.0 } else { 0.0 },
                })
            })
            .collect();
        format!("{}\n", serde_json::json!({"v": control::VERSION, "ps": ps}))
    }

    /// `pid`'s timeline so far: header, spool, buffer, its `end` process
    /// record (still running), lost records, end line; `check`: how its
    /// check at the dump went (said in the answer line).
    fn dump(&mut self, pid: u32, check: &str) -> Reply {
        let Some(seq) = self
            .procs
            .values()
            .filter(|p| p.pid == pid)
            .map(|p| p.seq)
            .max()
        else {
            return Reply::Line(control::error_line(&format!(
                "pid {pid} is not traced by this daemon"
            )));
        };
        let Some(header) = self.header.clone() else {
            return Reply::Line(control::error_line("not attached yet"));
        };
        let Some(mut p) = self.procs.remove(&seq) else {
            return Reply::Line(control::error_line("gone"));
        };
        let spool = if p.spooled > 0 {
            let path = self.spool_path(seq);
            match OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(f) => Some((f, p.spooled)),
                Err(e) => {
                    self.procs.insert(seq, p);
                    return Reply::Line(control::error_line(&format!(
                        "cannot read its spool {}: {e}",
                        path.display()
                    )));
                }
            }
        } else {
            None
        };
        let mut head = format!(
            "{}\n",
            serde_json::json!({"v": control::VERSION, "dump": {"pid": pid, "proc": seq,
                "check": check}})
        )
        .into_bytes();
        v2::write_record(&mut head, &Record::Header(header.clone()));
        let now = crate::kernel::clock::monotonic_ns().saturating_sub(header.monotonic_start_ns);
        let mut last = p.last.clone();
        last.event = ProcessEvent::End;
        last.t_ns = now.max(last.t_ns);
        last.exit_code = None;
        last.exit_signal = None;
        let mut rest = p.buf.clone();
        v2::write_record(&mut rest, &Record::Process(last.clone()));
        p.records += 1;
        rest.extend_from_slice(&self.tail(&mut p, &last));
        p.records -= 1;
        self.procs.insert(seq, p);
        Reply::Dump { head, spool, rest }
    }

    /// A dump of `pid`, once its process is compared with /proc/PID/maps
    /// (the check and any drift records end the dumped timeline): the
    /// check is asked for at the next tick and the dump answered once it
    /// is made, or after [`DUMP_CHECK_WAIT`]. Without periodic checks
    /// (`reconcile_secs = 0`) the dump goes at once.
    fn dump_after_check(&mut self, pid: u32, reply: tokio::sync::oneshot::Sender<Reply>) {
        let seq = self
            .procs
            .values()
            .filter(|p| p.pid == pid)
            .map(|p| p.seq)
            .max();
        let Some(seq) = seq.filter(|_| self.config.reconcile_secs > 0) else {
            let _ = reply.send(self.dump(pid, "off"));
            return;
        };
        if !self.want_checks.contains(&pid) {
            self.want_checks.push(pid);
        }
        self.dumps.push(PendingDump {
            pid,
            seq,
            reply,
            voids: 0,
            outcome: None,
            deadline: Instant::now() + DUMP_CHECK_WAIT,
        });
    }

    /// A check record: the dumps waiting for it may go.
    fn dump_checked(&mut self, c: &v2::Check) {
        for d in self.dumps.iter_mut().filter(|d| d.seq == c.proc) {
            if c.void {
                d.voids += 1;
                if d.voids >= DUMP_CHECK_VOIDS {
                    d.outcome = Some("void");
                } else if !self.want_checks.contains(&d.pid) {
                    // Asked again: a void check is not made again by itself.
                    self.want_checks.push(d.pid);
                }
            } else {
                d.outcome = Some("made");
            }
        }
    }

    /// Answers the dumps whose check is made (or waited for too long).
    fn answer_dumps(&mut self) {
        if self.dumps.is_empty() {
            return;
        }
        let now = Instant::now();
        let (ready, waiting): (Vec<PendingDump>, Vec<PendingDump>) =
            std::mem::take(&mut self.dumps)
                .into_iter()
                .partition(|d| d.outcome.is_some() || now >= d.deadline || d.reply.is_closed());
        self.dumps = waiting;
        for d in ready {
            let outcome = d.outcome.unwrap_or("timed out");
            let _ = d.reply.send(self.dump(d.pid, outcome));
        }
    }

    /// The processes whose check a dump waits for (the session asks the
    /// checker at its next tick).
    pub fn wanted_checks(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.want_checks)
    }

    /// Deletes the oldest timelines while there are more bytes than the
    /// retention allows, or older than its age (the newest is kept).
    fn retention(&mut self) {
        let r: &Retention = &self.config.retention;
        let oldest_allowed = (r.max_age_days > 0)
            .then(|| now_secs().saturating_sub(r.max_age_days.saturating_mul(86_400)));
        while self.index.len() > 1 {
            let (name, bytes, mtime) = self.index.front().cloned().unwrap_or_default();
            let too_big = r.max_total_bytes > 0 && self.index_bytes > r.max_total_bytes;
            let too_old = oldest_allowed.is_some_and(|t| mtime < t);
            if !too_big && !too_old {
                break;
            }
            self.index.pop_front();
            self.index_bytes -= bytes;
            match std::fs::remove_file(self.dirs.timelines.join(&name)) {
                Ok(()) => self.stats.deleted += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => warn!("retention: cannot delete {name}: {e}"),
            }
        }
    }

    /// Compares the daemon's resident memory with its cap: a warning when
    /// it goes over (and a line when it is back under), counted; the
    /// degradation follows it ([`memory::Guard`]).
    fn watch_memory(&mut self) {
        let Some(rss) = crate::kernel::proc::statm_rss(std::process::id()) else {
            return;
        };
        let cap = memory_cap_bytes(self.config.memory_cap_mib);
        let over = rss > cap;
        if over && !self.over_cap {
            self.stats.over_cap += 1;
        } else if !over && self.over_cap {
            info!(
                "resident memory {} MiB is back under memory_cap_mib {}",
                rss >> 20,
                cap >> 20
            );
        }
        self.over_cap = over;
        self.memory.observe(rss, Instant::now(), self.procs.len());
    }

    /// The statistics line.
    pub fn log_stats(&mut self) {
        self.last_stats = Instant::now();
        let s = &self.stats;
        let mut comms: Vec<(&String, &u64)> = s.skipped_by_comm.iter().collect();
        comms.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut named: Vec<String> = comms
            .iter()
            .take(STATS_COMMS)
            .map(|(c, n)| format!("{c:?} {n}"))
            .collect();
        let rest: u64 = comms.iter().skip(STATS_COMMS).map(|(_, n)| **n).sum();
        if rest > 0 {
            named.push(format!("others {rest}"));
        }
        info!(
            "stats: {} processes live; {} timelines written ({} bytes), {} failed; \
             {} exits skipped by the keep policy [{}]; {} timelines deleted by retention; \
             {} records dropped past a cap; {} records of no known process; {} events lost; \
             {} times over the memory cap; {}",
            self.procs.len(),
            s.written,
            s.written_bytes,
            s.write_failures,
            s.skipped,
            named.join(", "),
            s.deleted,
            s.capped_records,
            s.orphan_records,
            s.lost_events,
            s.over_cap,
            self.memory.describe(),
        );
    }

    /// SIGHUP: rereads the configuration; a bad one is refused and the
    /// old one kept.
    fn reload(&mut self) {
        let new = match Config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("mmtrace: SIGHUP: configuration refused, the old one is kept: {e}");
                return;
            }
        };
        let old = &self.config;
        let mut restart = Vec::new();
        if new.select != old.select {
            restart.push("select");
        }
        if new.faults != old.faults {
            restart.push("faults");
        }
        if new.ring_bytes != old.ring_bytes {
            restart.push("ring_bytes");
        }
        if new.data_dir != old.data_dir {
            restart.push("data_dir");
        }
        if new.reconcile_secs != old.reconcile_secs {
            restart.push("reconcile_secs");
        }
        if new.socket != old.socket {
            restart.push("socket");
        }
        if new.metrics_listen != old.metrics_listen {
            restart.push("metrics_listen");
        }
        if new.metrics_allow_remote != old.metrics_allow_remote {
            restart.push("metrics_allow_remote");
        }
        if new.metrics_groups != old.metrics_groups {
            restart.push("metrics_groups");
        }
        if new.memory_cap_mib != old.memory_cap_mib {
            restart.push("memory_cap_mib");
        }
        if !restart.is_empty() {
            warn!(
                "SIGHUP: {} changed: needs a restart (the running values stay)",
                restart.join(", ")
            );
        }
        let mut kept = self.config.clone();
        kept.keep = new.keep;
        kept.retention = new.retention;
        self.config = kept;
        info!(
            "SIGHUP: {} reread: keep and retention applied",
            self.config_path.display()
        );
        self.retention();
    }
}

impl V2Out for DaemonOut {
    fn put(&mut self, rec: &Record) {
        match rec {
            Record::Header(h) => {
                self.header = Some(h.clone());
                return;
            }
            Record::Lost(l) => {
                // Faults without their page were handled: not lost events.
                if l.kind != memory::FAULT_DETAIL {
                    self.stats.lost_events += l.count;
                }
                *self.lost_by_kind.entry(l.kind.clone()).or_default() += l.count;
                return;
            }
            Record::End(_) => return,
            Record::Process(p) => {
                self.first_sight(p);
                if let Some(known) = self.procs.get_mut(&p.proc) {
                    if p.start_time.is_some() {
                        known.start_time = p.start_time;
                    }
                    known.last = p.clone();
                }
            }
            Record::Counters(c) => {
                if let Some(p) = self.procs.get_mut(&c.proc) {
                    p.peak_mapped = p.peak_mapped.max(c.mapped);
                    p.peak_rss = p.peak_rss.max(c.rss.unwrap_or(0));
                    if let Some(prev) = &p.counters {
                        let dt = c.t_ns.saturating_sub(prev.t_ns);
                        if dt > 0 {
                            p.faults_per_sec =
                                c.faults.saturating_sub(prev.faults) as f64 * 1e9 / dt as f64;
                        }
                    }
                    p.counters = Some(c.clone());
                    p.counters_at = Some(Instant::now());
                }
            }
            Record::Check(c) => {
                self.stats.checks += 1;
                self.dump_checked(c);
                if let Some(p) = self.procs.get_mut(&c.proc) {
                    p.checks += 1;
                }
            }
            Record::Drift(d) => {
                self.stats.drift += 1;
                if let Some(p) = self.procs.get_mut(&d.proc) {
                    p.drift += 1;
                }
            }
            Record::Region(r) => {
                if let Some(p) = self.procs.get_mut(&r.proc) {
                    p.region_records += 1;
                    if r.op == v2::RegionOp::Born {
                        p.regions += 1;
                        p.live_regions += 1;
                    } else if r.op == v2::RegionOp::Died {
                        p.live_regions = p.live_regions.saturating_sub(1);
                    }
                }
            }
            Record::Uncertain(_) => {}
        }
        let Some(seq) = proc_of(rec) else {
            return;
        };
        self.stats.records += 1;
        self.line.clear();
        v2::write_record(&mut self.line, rec);
        let is_process = matches!(rec, Record::Process(_));
        self.append(seq, is_process);
        if let Record::Process(last) = rec {
            if matches!(last.event, ProcessEvent::Exit | ProcessEvent::End) {
                if let Some(p) = self.procs.remove(&seq) {
                    self.finish(p, last);
                }
            }
        }
    }

    fn flush(&mut self) -> bool {
        if self.last_stats.elapsed() >= STATS_EVERY {
            // Age-based retention goes on while nothing is written.
            self.retention();
            self.log_stats();
        }
        if self.last_memory.elapsed() >= MEMORY_EVERY {
            self.last_memory = Instant::now();
            self.watch_memory();
        }
        let (at, records, events) = self.rate_at;
        let dt = at.elapsed().as_secs_f64();
        if dt >= 1.0 {
            self.records_per_sec = self.stats.records.saturating_sub(records) as f64 / dt;
            self.events_per_sec = self.stats.events.saturating_sub(events) as f64 / dt;
            self.rate_at = (Instant::now(), self.stats.records, self.stats.events);
        }
        if let Some(mut asks) = self.asks.take() {
            for _ in 0..control::MAX_CLIENTS {
                let Ok(Ask { req, reply }) = asks.try_recv() else {
                    break;
                };
                match req {
                    Request::Dump { pid } => self.dump_after_check(pid, reply),
                    req => {
                        let _ = reply.send(self.answer(req));
                    }
                }
            }
            self.asks = Some(asks);
        }
        self.answer_dumps();
        true
    }

    fn events(&mut self, total: u64) {
        self.stats.events = total;
    }

    fn attached(&mut self, stack: StackPath) {
        self.stack_source = stack.name().to_string();
        info!("ready: recording into {}", self.dirs.timelines.display());
        if let Err(e) = notify("READY=1\nSTATUS=recording\n") {
            warn!("cannot tell systemd we are ready: {e}");
        }
    }

    fn signal(&mut self, name: &'static str) {
        if name == "SIGHUP" {
            self.reload();
            return;
        }
        self.stopping = true;
        info!("{name}: stopping: writing the timelines of the live processes, detaching");
        let _ = notify("STOPPING=1\n");
    }
}

/// The memory cap in bytes: `memory_cap_mib`, or, for tests only, the
/// KiB in `MMTRACE_TEST_MEMORY_CAP_KIB` (below the configuration's
/// minimum).
fn memory_cap_bytes(mib: u64) -> u64 {
    std::env::var("MMTRACE_TEST_MEMORY_CAP_KIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(mib << 20, |kib| kib << 10)
}

/// The process a record belongs to.
fn proc_of(rec: &Record) -> Option<u64> {
    Some(match rec {
        Record::Process(p) => p.proc,
        Record::Region(r) => r.proc,
        Record::Counters(c) => c.proc,
        Record::Check(c) => c.proc,
        Record::Drift(d) => d.proc,
        Record::Uncertain(u) => u.proc,
        Record::Header(_) | Record::Lost(_) | Record::End(_) => return None,
    })
}

/// The spool file of process `seq`.
fn spool_file(spool: &Path, seq: u64) -> PathBuf {
    spool.join(format!("{seq}.jsonl"))
}

/// Appends `bytes` to the spool file `path` (created 0600), then closes it.
fn spill(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    f.write_all(bytes)
}

/// Renames `temp` to `dir/name`, never over an existing file (then
/// `name` with `-2`, `-3`... before `.jsonl`); returns the name used.
fn rename_new(temp: &Path, dir: &Path, name: &str) -> io::Result<String> {
    use std::{ffi::CString, os::unix::ffi::OsStrExt};
    let stem = name.strip_suffix(".jsonl").unwrap_or(name);
    let from = CString::new(temp.as_os_str().as_bytes()).map_err(io::Error::other)?;
    for n in 1..100 {
        let candidate = if n == 1 {
            name.to_string()
        } else {
            format!("{stem}-{n}.jsonl")
        };
        let to =
            CString::new(dir.join(&candidate).as_os_str().as_bytes()).map_err(io::Error::other)?;
        // SAFETY: two valid C strings; AT_FDCWD with absolute or relative
        // paths.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(candidate);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    Err(io::Error::other("no free name"))
}

/// Sends `msg` to systemd's notification socket, if $NOTIFY_SOCKET names
/// one (a path, or `@name` for an abstract socket).
pub fn notify(msg: &str) -> io::Result<()> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) if !socket.is_empty() => notify_to(&socket, msg),
        _ => Ok(()),
    }
}

/// Sends `msg` to the notification socket `socket`.
fn notify_to(socket: &std::ffi::OsStr, msg: &str) -> io::Result<()> {
    use std::os::{
        linux::net::SocketAddrExt,
        unix::{ffi::OsStrExt, net},
    };
    let s = net::UnixDatagram::unbound()?;
    let bytes = socket.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        let addr = net::SocketAddr::from_abstract_name(name)?;
        s.send_to_addr(msg.as_bytes(), &addr)?;
    } else {
        s.send_to(msg.as_bytes(), Path::new(socket))?;
    }
    Ok(())
}

fn mtime_secs(m: &std::fs::Metadata) -> u64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::report::{self, ReportOptions};

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mmtrace-daemon-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn header() -> v2::Header {
        v2::Header {
            schema: v2::SCHEMA.into(),
            version: 2,
            mmtrace: "test".into(),
            started_at: "2026-12-01T00:00:00.000Z".into(),
            monotonic_start_ns: 1_000,
            clock: "monotonic".into(),
            host: "h".into(),
            kernel: "k".into(),
            command: None,
            selection: v2::Selection::default(),
            options: v2::Options::default(),
        }
    }

    fn process(t_ns: u64, proc: u64, event: ProcessEvent) -> Record {
        Record::Process(v2::ProcessRecord {
            t_ns,
            proc,
            pid: 100 + proc as u32,
            event,
            ppid: Some(1),
            comm: format!("c{proc}"),
            exe: None,
            abi: None,
            shared_with: None,
            seeded_by: None,
            start_time: None,
            exit_code: (event == ProcessEvent::Exit).then_some(0),
            exit_signal: None,
            oom_kill_ns: None,
            cgroup: None,
        })
    }

    fn born(t_ns: u64, proc: u64, region: u64) -> Record {
        Record::Region(v2::RegionRecord {
            t_ns,
            proc,
            pid: 100 + proc as u32,
            region,
            op: v2::RegionOp::Born,
            start: format!("{:#x}", 0x1000_0000 + region * 0x1000),
            end: format!("{:#x}", 0x1000_1000 + region * 0x1000),
            perms: "rw-p".into(),
            cause: None,
            born: Some(v2::Birth {
                kind: "anon".into(),
                path: None,
                offset: 0,
                dev: None,
                inode: None,
                parent: None,
            }),
            old_start: None,
            old_end: None,
            faults: None,
        })
    }

    fn config(data: &Path, edit: impl FnOnce(&mut Config)) -> Config {
        let mut c = Config {
            data_dir: data.into(),
            ..Config::default()
        };
        c.keep.min_lifetime_secs = 1.0;
        edit(&mut c);
        c
    }

    fn out(name: &str, edit: impl FnOnce(&mut Config)) -> (PathBuf, DaemonOut) {
        let data = scratch(name);
        let c = config(&data, edit);
        let dirs = Dirs::prepare(&data).unwrap();
        let mut o = DaemonOut::new("/nonexistent.toml".into(), c, dirs).unwrap();
        o.put(&Record::Header(header()));
        (data, o)
    }

    fn files(data: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(data.join("timelines"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }

    fn report_of(path: &Path) -> String {
        let opts = ReportOptions {
            short_lived_ns: 100_000_000,
            top: 10,
            max_size: 1 << 30,
        };
        let mut text = Vec::new();
        report::run(path, &opts, &mut text).unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn kept_and_skipped_exits() {
        let (data, mut o) = out("keep", |_| {});
        // Lives 2 s: kept. Lives 0.1 s: counted.
        o.put(&process(0, 1, ProcessEvent::Start));
        o.put(&born(0, 1, 1));
        o.put(&process(0, 2, ProcessEvent::Start));
        o.put(&born(0, 2, 1));
        o.put(&process(100_000_000, 2, ProcessEvent::Exit));
        o.put(&process(2_000_000_000, 1, ProcessEvent::Exit));
        let f = files(&data);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].to_string_lossy().ends_with("-101-c1.jsonl"), "{f:?}");
        let text = report_of(&f[0]);
        assert!(text.contains("Process 101 (c1)"), "{text}");
        assert_eq!(o.stats.skipped, 1);
        assert_eq!(o.stats.skipped_by_comm.get("c2"), Some(&1));
        assert_eq!(o.live(), 0);
        let _ = std::fs::remove_dir_all(&data);
    }

    /// An OOM-killed process is kept whatever the rest of the policy says,
    /// and its report opens with what grew in the minute before the kill.
    #[test]
    fn oom_killed_is_always_kept_and_explained() {
        let (data, mut o) = out("oom", |c| c.keep.killed_by_signal = false);
        let s = 1_000_000_000u64;
        o.put(&process(0, 1, ProcessEvent::Start));
        // Region 1 is born long before the window; 2 grows in it by 1 MiB;
        // 3 (1 MiB) is born in it and merged into 2 (its death first).
        o.put(&born(0, 1, 1));
        let region = |t_ns, id, op, start: u64, end: u64| {
            let Record::Region(mut r) = born(t_ns, 1, id) else {
                unreachable!()
            };
            (r.op, r.start, r.end) = (op, format!("{start:#x}"), format!("{end:#x}"));
            if op != v2::RegionOp::Born {
                r.born = None;
            }
            if op == v2::RegionOp::Died {
                r.cause = Some(crate::model::Cause::Merge);
            }
            Record::Region(r)
        };
        o.put(&region(
            10 * s,
            2,
            v2::RegionOp::Born,
            0x7000_0000,
            0x7000_1000,
        ));
        o.put(&region(
            80 * s,
            2,
            v2::RegionOp::Grow,
            0x7000_0000,
            0x7010_1000,
        ));
        o.put(&region(
            85 * s,
            3,
            v2::RegionOp::Born,
            0x7010_1000,
            0x7020_1000,
        ));
        o.put(&region(
            85 * s,
            3,
            v2::RegionOp::Died,
            0x7010_1000,
            0x7020_1000,
        ));
        o.put(&region(
            85 * s,
            2,
            v2::RegionOp::Merge,
            0x7000_0000,
            0x7020_1000,
        ));
        // 4 (1 MiB) is born below 2 and absorbs it: the merge record comes
        // before the death (as the model writes them).
        o.put(&region(
            86 * s,
            4,
            v2::RegionOp::Born,
            0x6ff0_0000,
            0x7000_0000,
        ));
        o.put(&region(
            86 * s,
            4,
            v2::RegionOp::Merge,
            0x6ff0_0000,
            0x7020_1000,
        ));
        o.put(&region(
            86 * s,
            2,
            v2::RegionOp::Died,
            0x7000_0000,
            0x7020_1000,
        ));
        o.put(&Record::Counters(v2::Counters {
            t_ns: 89 * s,
            proc: 1,
            pid: 101,
            mapped: 3 << 20,
            heap: 0,
            stack: 0,
            rss: Some(2 << 20),
            faults: 0,
        }));
        let Record::Process(mut exit) = process(90 * s + 5, 1, ProcessEvent::Exit) else {
            unreachable!()
        };
        (exit.exit_code, exit.exit_signal) = (None, Some("SIGKILL".into()));
        exit.oom_kill_ns = Some(90 * s);
        o.put(&Record::Process(exit));
        let f = files(&data);
        assert_eq!(f.len(), 1);
        assert_eq!(o.stats.skipped, 0);
        let text = report_of(&f[0]);
        let oom = text.find("OOM kill: process 101 (c1)").expect(&text);
        assert!(oom < text.find("Process 101 (c1)").unwrap(), "{text}");
        assert!(text.contains("Killed at     90.000000 s"), "{text}");
        assert!(text.contains("3.0 MiB mapped, 2.0 MiB resident"), "{text}");
        assert!(text.contains("3.0 MiB mapped in the last minute"), "{text}");
        assert!(text.contains("by kind: anon 3.0 MiB"), "{text}");
        // Region 4 with what 2 and 3 brought it, and nothing else.
        assert!(text.contains("+3.0 MiB  0x6ff00000-0x70201000"), "{text}");
        let section = &text[oom..text.find("Process 101 (c1)").unwrap()];
        assert!(!section.contains("0x10001000-"), "{text}");
        let _ = std::fs::remove_dir_all(&data);
    }

    #[test]
    fn spills_caps_and_says_so() {
        let (data, mut o) = out("cap", |c| c.keep.max_timeline_bytes = 64 << 10);
        o.put(&process(0, 1, ProcessEvent::Start));
        let mut n = 0;
        // Past SPILL: the spool file holds the start.
        while !data.join("spool/1.jsonl").exists() {
            n += 1;
            o.put(&born(0, 1, n));
        }
        assert!(o.procs[&1].buf.len() < SPILL);
        for _ in 0..1000 {
            n += 1;
            o.put(&born(0, 1, n));
        }
        let dropped = o.procs[&1].dropped;
        assert!(dropped > 0);
        o.put(&process(2_000_000_000, 1, ProcessEvent::Exit));
        let f = files(&data);
        assert_eq!(f.len(), 1);
        let text = std::fs::read_to_string(&f[0]).unwrap();
        assert!(text.len() < (64 << 10) + 4096, "{}", text.len());
        let want = format!("{{\"type\":\"lost\",\"t_ns\":2000000000,\"kind\":\"timeline_cap\",\"count\":{dropped}}}");
        assert!(text.contains(&want), "{want}");
        assert!(text.contains("\"event\":\"exit\""));
        let report = report_of(&f[0]);
        assert!(report.contains("timeline_cap"), "{report}");
        // The spool went with the exit.
        assert_eq!(std::fs::read_dir(data.join("spool")).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(&data);
    }

    #[test]
    fn retention_deletes_the_oldest() {
        let (data, mut o) = out("retention", |c| c.retention.max_total_bytes = 3000);
        for p in 1..=6 {
            o.put(&process(0, p, ProcessEvent::Start));
            o.put(&born(0, p, 1));
            // Names carry the time in ms, then the pid: ordered.
            o.put(&process(2_000_000_000, p, ProcessEvent::Exit));
        }
        let f = files(&data);
        let total: u64 = f.iter().map(|p| p.metadata().unwrap().len()).sum();
        assert!(total <= 3000, "{total}");
        assert!(o.stats.deleted > 0);
        // The newest are the ones left.
        assert!(f
            .last()
            .unwrap()
            .to_string_lossy()
            .ends_with("-106-c6.jsonl"));
        let _ = std::fs::remove_dir_all(&data);
    }

    #[test]
    fn stop_writes_the_live_and_crash_leftovers_go() {
        let data = scratch("leftovers");
        let c = config(&data, |_| {});
        Dirs::prepare(&data).unwrap();
        std::fs::write(data.join("spool/7.jsonl"), "x").unwrap();
        std::fs::write(data.join("timelines/.x.jsonl.tmp"), "x").unwrap();
        let dirs = Dirs::prepare(&data).unwrap();
        assert_eq!(std::fs::read_dir(&dirs.spool).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(&dirs.timelines).unwrap().count(), 0);
        let mut o = DaemonOut::new("/nonexistent.toml".into(), c, dirs).unwrap();
        o.put(&Record::Header(header()));
        o.put(&process(0, 1, ProcessEvent::Start));
        // Cut by the stop after 1 ms: kept all the same.
        o.put(&process(1_000_000, 1, ProcessEvent::End));
        assert_eq!(files(&data).len(), 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| p.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&files(&data)[0]), 0o600);
        let _ = std::fs::remove_dir_all(&data);
    }

    #[test]
    fn one_daemon_per_data_dir() {
        let data = scratch("lock");
        let first = Dirs::prepare(&data).unwrap();
        let e = Dirs::prepare(&data).err().expect("refused");
        assert!(e.to_string().contains("another mmtrace daemon"), "{e}");
        drop(first);
        Dirs::prepare(&data).unwrap();
        let _ = std::fs::remove_dir_all(&data);
    }

    #[test]
    fn skipped_comms_are_bounded() {
        let (data, mut o) = out("comms", |c| c.keep.skipped_comms = 2);
        for p in 1..=5 {
            o.put(&process(0, p, ProcessEvent::Start));
            o.put(&process(1, p, ProcessEvent::Exit));
        }
        assert_eq!(o.stats.skipped, 5);
        assert_eq!(o.stats.skipped_by_comm.len(), 3);
        assert_eq!(o.stats.skipped_by_comm.get("other"), Some(&3));
        let _ = std::fs::remove_dir_all(&data);
    }

    #[test]
    fn answers_status_ps_and_dump() {
        let (data, mut daemon) = out("answers", |_| {});
        daemon.put(&process(0, 1, ProcessEvent::Start));
        let mut n = 0;
        // Past SPILL: the dump is spool and buffer.
        while !data.join("spool/1.jsonl").exists() {
            n += 1;
            daemon.put(&born(0, 1, n));
        }
        daemon.put(&born(0, 1, n + 1));
        daemon.put(&Record::Counters(v2::Counters {
            t_ns: 1,
            proc: 1,
            pid: 101,
            mapped: 8192,
            heap: 0,
            stack: 4096,
            rss: Some(4096),
            faults: 3,
        }));
        let Reply::Line(status) = daemon.answer(Request::Status) else {
            panic!("a line");
        };
        let v: serde_json::Value = serde_json::from_str(&status).unwrap();
        assert_eq!(v["status"]["processes"], 1);
        assert_eq!(v["status"]["regions"], n + 1);
        let Reply::Line(ps) = daemon.answer(Request::Ps { sort: SortKey::Rss }) else {
            panic!("a line");
        };
        let v: serde_json::Value = serde_json::from_str(&ps).unwrap();
        assert_eq!(v["ps"][0]["pid"], 101);
        assert_eq!(v["ps"][0]["comm"], "c1");
        assert_eq!(v["ps"][0]["rss"], 4096);
        let Reply::Line(error) = daemon.answer(Request::Dump { pid: 9 }) else {
            panic!("an error line");
        };
        assert!(error.contains("not traced"), "{error}");
        let Reply::Dump { head, spool, rest } = daemon.answer(Request::Dump { pid: 101 }) else {
            panic!("a dump");
        };
        let mut text = head;
        let (mut f, len) = spool.expect("spooled");
        let mut spooled = Vec::new();
        io::Read::read_to_end(&mut f, &mut spooled).unwrap();
        assert_eq!(spooled.len() as u64, len);
        text.extend_from_slice(&spooled);
        text.extend_from_slice(&rest);
        let text = String::from_utf8(text).unwrap();
        let (answer, timeline) = text.split_once('\n').unwrap();
        assert!(answer.contains("\"dump\""), "{answer}");
        let path = data.join("dump.jsonl");
        std::fs::write(&path, timeline).unwrap();
        let report = report_of(&path);
        assert!(report.contains("Process 101 (c1)"), "{report}");
        assert!(
            timeline.ends_with("}\n")
                && timeline
                    .lines()
                    .last()
                    .unwrap()
                    .starts_with("{\"type\":\"end\"")
        );
        // The process goes on.
        assert_eq!(daemon.live(), 1);
        let _ = std::fs::remove_dir_all(&data);
    }

    #[test]
    fn notify_reaches_a_path_and_an_abstract_socket() {
        let path = scratch("notify.sock");
        let s = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let name = format!("mmtrace-test-{}", std::process::id());
        let addr =
            <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
                name.as_bytes(),
            )
            .unwrap();
        let a = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(path.as_os_str(), "READY=1\n").unwrap();
        notify_to(format!("@{name}").as_ref(), "STOPPING=1\n").unwrap();
        let mut buf = [0u8; 64];
        let n = s.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
        let n = a.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\n");
        let _ = std::fs::remove_file(&path);
    }
}
