//! `mmtrace stream --connect`: the daemon's live events, for subscribers
//! on the control socket (docs/control-protocol.md, `stream`).
//!
//! - The daemon's session hands every event to [`LiveSink`] (which wraps
//!   the daemon's v2 sink and passes everything on to it), and each
//!   subscriber whose filter takes the event gets it rendered by `stream`'s
//!   own writers ([`Printer`], text or JSON lines) into its queue.
//! - A queue is bounded ([`QUEUE_BYTES`]): the event loop never waits for
//!   a subscriber. When the queue is full, events are dropped for that
//!   subscriber and counted; once there is room again a `lost` message
//!   says how many, in order, before the next event. The ring buffer's
//!   own losses reach every subscriber as `lost` messages too (never
//!   dropped: held and counted until there is room).
//! - A task per subscriber (on the socket's runtime, [`pump`]) writes its
//!   queue to the socket. At the daemon's stop an `end` message closes
//!   each stream.
//! - The client ([`client`]) prints the event lines as they come, the
//!   `lost` messages through the same writers, and a closing line.

use std::{
    collections::{BTreeMap, HashSet},
    io::{self, Write},
    path::Path,
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use tracer_common::EventKind;

use super::control::{self, VERSION};
use crate::{
    cli::{kind_mask, FaultMode, Format, StreamArgs},
    commands::record::V2Sink,
    error::{Error, Result, EXIT_OUTPUT_INCOMPLETE},
    event::{Body, Event},
    kernel::{clock, StackPath},
    model::{CheckReason, Comparison, Process, RegionChange, VoidReason},
    output::{
        timeline2::{self as v2, Record},
        Printer,
    },
    session::Sink,
};

use super::sink::DaemonOut;
use crate::commands::record::V2Out;

/// Subscribers at once (each also holds one of the socket's client slots).
pub const MAX_SUBSCRIBERS: usize = 4;
/// Bytes waiting for one subscriber, at most.
pub const QUEUE_BYTES: usize = 1 << 20;
/// The writer is woken each time this many more bytes wait.
const WAKE_BYTES: usize = 64 << 10;
/// How often an idle writer looks whether its client left.
const IDLE_LOOK: Duration = Duration::from_millis(250);
/// Pids a subscriber's `follow` adds, at most (then children are not
/// followed, and the client is told once).
const MAX_FOLLOWED: usize = 65536;
/// The longest a stopping daemon waits for its subscribers' queues to
/// drain.
const DRAIN_AT_STOP: Duration = Duration::from_secs(2);

/// What a subscriber asked for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamRequest {
    /// Processes (tgids); empty with `comms` empty: all.
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    /// Children of the selected processes too, from now on.
    pub follow: bool,
    /// EventKind bits (faults: the fault summaries too).
    pub kinds: u32,
    /// JSON lines, else text.
    pub jsonl: bool,
    pub color: bool,
}

impl StreamRequest {
    /// Its request line's fields (beside `v` and `cmd`).
    pub fn to_json(&self) -> Value {
        let events: Vec<&str> = EventKind::ALL
            .iter()
            .filter(|k| self.kinds & k.bit() != 0)
            .map(|k| k.name())
            .collect();
        json!({
            "v": VERSION,
            "cmd": "stream",
            "pids": self.pids,
            "comms": self.comms,
            "follow": self.follow,
            "events": events,
            "format": if self.jsonl { "jsonl" } else { "text" },
            "color": self.color,
        })
    }
}

/// The request's `events` names as EventKind bits.
pub fn kinds_of(names: &[String]) -> std::result::Result<u32, String> {
    let mut mask = 0;
    for n in names {
        let k = EventKind::ALL
            .iter()
            .find(|k| k.name() == n)
            .ok_or_else(|| format!("unknown event kind {n:?}"))?;
        mask |= k.bit();
    }
    Ok(mask)
}

/// A protocol message of the stream: `{"v":1,"KEY":BODY}` and a newline,
/// `v` first, so that it is told from an event line by its start.
fn message(key: &str, body: &Value) -> String {
    format!("{{\"v\":{VERSION},\"{key}\":{body}}}\n")
}

/// Which events a subscriber takes: stream's selection (pids, comms,
/// follow, kinds), made here from the events rather than in the kernel.
struct Filter {
    pids: HashSet<u32>,
    comms: Vec<Vec<u8>>,
    follow: bool,
    followed: HashSet<u32>,
    kinds: u32,
}

impl Filter {
    fn new(r: &StreamRequest) -> Filter {
        Filter {
            pids: r.pids.iter().copied().collect(),
            comms: r.comms.iter().map(|c| c.as_bytes().to_vec()).collect(),
            follow: r.follow,
            followed: HashSet::new(),
            kinds: r.kinds,
        }
    }

    fn everyone(&self) -> bool {
        self.pids.is_empty() && self.comms.is_empty()
    }

    fn selects(&self, pid: u32, comm: &[u8]) -> bool {
        self.everyone()
            || self.pids.contains(&pid)
            || self.followed.contains(&pid)
            || self.comms.iter().any(|c| c.as_slice() == comm)
    }

    fn takes(&mut self, ev: &Event) -> bool {
        let kind = match &ev.body {
            Body::Lost { .. } => return true,
            Body::FaultSummary { .. } => EventKind::Fault,
            b => match b.kind() {
                Some(k) => k,
                None => return true,
            },
        };
        let selected = self.selects(ev.pid, &ev.comm)
            || matches!(ev.body, Body::OomKill { victim_pid } if self.pids.contains(&victim_pid) || self.followed.contains(&victim_pid));
        if !self.everyone() {
            match ev.body {
                Body::Fork { child_pid, .. }
                    if selected && self.follow && self.followed.len() < MAX_FOLLOWED =>
                {
                    self.followed.insert(child_pid);
                }
                Body::Exit { .. } if ev.pid == ev.tid => {
                    self.followed.remove(&ev.pid);
                }
                _ => {}
            }
        }
        selected && self.kinds & kind.bit() != 0
    }
}

/// A subscriber's queue, shared by the event loop (which fills it) and
/// its task (which writes it to the socket).
#[derive(Default)]
struct Queue {
    buf: Vec<u8>,
    /// Bytes taken by the task and being written.
    writing: usize,
    /// Events dropped since the last `lost` message, and in all.
    dropped: u64,
    dropped_total: u64,
    /// The ring buffer's losses not yet told (no room), by kind.
    kernel_lost: BTreeMap<&'static str, u64>,
    /// The end message is in `buf`: nothing more comes.
    closed: bool,
    /// The task ended (the client left, or the stream is over).
    done: bool,
}

impl Queue {
    fn room(&self, more: usize) -> bool {
        self.buf.len() + self.writing + more <= QUEUE_BYTES
    }

    /// The messages of what waits to be told (drops, the kernel's losses).
    fn unsaid(&self) -> Vec<u8> {
        let mut msgs = Vec::new();
        if self.dropped == 0 && self.kernel_lost.is_empty() {
            return msgs;
        }
        let now = clock::monotonic_ns();
        for (kind, count) in &self.kernel_lost {
            let m = json!({"source": "kernel", "kind": kind, "count": count, "ts_ns": now});
            msgs.extend_from_slice(message("lost", &m).as_bytes());
        }
        if self.dropped > 0 {
            let m = json!({"source": "subscriber", "count": self.dropped, "ts_ns": now});
            msgs.extend_from_slice(message("lost", &m).as_bytes());
        }
        msgs
    }

    /// Tells what waits to be told if there is room for that and `more`
    /// bytes after it (`force`: whatever the room); false when there is no
    /// room.
    fn tell(&mut self, more: usize, force: bool) -> bool {
        let msgs = self.unsaid();
        if !force && !self.room(msgs.len() + more) {
            return false;
        }
        self.buf.extend_from_slice(&msgs);
        self.dropped = 0;
        self.kernel_lost.clear();
        true
    }
}

struct Shared {
    queue: Mutex<Queue>,
    /// The writer thread waits on it for bytes.
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding it cannot leave the bytes inconsistent.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The printer's output: one event line per write, taken whole or dropped
/// (and counted) when the queue is full.
struct QueueWriter(Arc<Shared>);

impl Write for QueueWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut q = self.0.lock();
        if q.done || q.closed {
            return Ok(line.len());
        }
        if q.tell(line.len(), false) {
            let before = q.buf.len();
            q.buf.extend_from_slice(line);
            // The writer runs beside the event loop: woken every so many
            // bytes while a batch of events is handled, not per event.
            if before / WAKE_BYTES != q.buf.len() / WAKE_BYTES {
                drop(q);
                self.0.ready.notify_one();
                return Ok(line.len());
            }
        } else {
            q.dropped += 1;
            q.dropped_total += 1;
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Subscriber {
    filter: Filter,
    printer: Printer<QueueWriter>,
    shared: Arc<Shared>,
    /// Events queued (not dropped).
    sent: u64,
}

/// A new subscription, for the socket's task: the answer line, then the
/// queue.
pub struct Subscription {
    answer: String,
    shared: Arc<Shared>,
}

/// The daemon's subscribers.
#[derive(Default)]
pub struct Feed {
    subs: Vec<Subscriber>,
    /// Why the daemon stops (its signal), for the end messages.
    stopping: Option<&'static str>,
    /// Events dropped for the subscribers gone.
    dropped_gone: u64,
}

impl Feed {
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Subscribes: None when there are too many subscribers already.
    pub fn subscribe(&mut self, r: &StreamRequest, faults: &str) -> Option<Subscription> {
        self.prune();
        if self.subs.len() >= MAX_SUBSCRIBERS {
            return None;
        }
        let start_ns = clock::monotonic_ns();
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
        });
        let format = if r.jsonl { Format::Jsonl } else { Format::Text };
        let printer = Printer::new(QueueWriter(shared.clone()), format, r.color, start_ns);
        self.subs.push(Subscriber {
            filter: Filter::new(r),
            printer,
            shared: shared.clone(),
            sent: 0,
        });
        let answer = json!({"start_ns": start_ns, "faults": faults, "queue_bytes": QUEUE_BYTES});
        Some(Subscription {
            answer: message("stream", &answer),
            shared,
        })
    }

    /// One event, to each subscriber that takes it.
    pub fn event(&mut self, ev: &Event) {
        for s in &mut self.subs {
            if s.filter.takes(ev) {
                // Into memory: cannot fail.
                let _ = s.printer.print(ev);
                s.sent += 1;
            }
        }
    }

    /// The ring buffer lost `count` events of `kind`: every subscriber is
    /// told, in order, as soon as its queue has room.
    pub fn kernel_lost(&mut self, kind: EventKind, count: u64) {
        for s in &mut self.subs {
            let mut q = s.shared.lock();
            *q.kernel_lost.entry(kind.name()).or_default() += count;
            q.tell(0, false);
        }
    }

    /// Wakes the tasks with something to write; forgets the subscribers
    /// whose task ended.
    pub fn flush(&mut self) {
        self.prune();
        for s in &self.subs {
            let mut q = s.shared.lock();
            // Drops are told as soon as there is room, events or not.
            q.tell(0, false);
            if !q.buf.is_empty() {
                drop(q);
                s.shared.ready.notify_one();
            }
        }
    }

    fn prune(&mut self) {
        let mut gone = 0;
        self.subs.retain(|s| {
            let q = s.shared.lock();
            if q.done {
                gone += q.dropped_total;
            }
            !q.done
        });
        self.dropped_gone += gone;
    }

    /// Events dropped for subscribers, in all.
    pub fn dropped(&self) -> u64 {
        self.dropped_gone
            + self
                .subs
                .iter()
                .map(|s| s.shared.lock().dropped_total)
                .sum::<u64>()
    }

    pub fn signal(&mut self, name: &'static str) {
        if name != "SIGHUP" {
            self.stopping = Some(name);
        }
    }

    /// The daemon stops: an end message closes each stream (past the
    /// bound: it is small), then the tasks have a little while to write.
    pub async fn stop(&mut self) {
        let why = match self.stopping {
            Some(sig) => format!("the daemon stopped ({sig})"),
            None => "the daemon stopped".to_string(),
        };
        for s in &self.subs {
            let mut q = s.shared.lock();
            // What waits to be told goes first, whatever the room.
            q.tell(0, true);
            let end = json!({"reason": why, "events": s.sent, "dropped": q.dropped_total});
            q.buf.extend_from_slice(message("end", &end).as_bytes());
            q.closed = true;
            drop(q);
            s.shared.ready.notify_one();
        }
        let deadline = Instant::now() + DRAIN_AT_STOP;
        while Instant::now() < deadline && self.subs.iter().any(|s| !s.shared.lock().done) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Writes a subscription's answer line, then its queue as it fills, until
/// the end message is written or the client leaves: on a thread of its own
/// (at most [`MAX_SUBSCRIBERS`]), beside the event loop, which only ever
/// appends to the queue. The task that served the request waits for it,
/// holding its client slot.
pub async fn pump(s: tokio::net::UnixStream, sub: Subscription) -> io::Result<()> {
    let s = s.into_std()?;
    s.set_nonblocking(false)?;
    let (done, ended) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("mmtrace-live".into())
        .spawn(move || {
            let shared = sub.shared;
            let r = pump_queue(&s, &shared, sub.answer.as_bytes());
            shared.lock().done = true;
            let _ = done.send(r);
        })?;
    ended.await.unwrap_or(Ok(()))
}

fn pump_queue(
    mut s: &std::os::unix::net::UnixStream,
    shared: &Shared,
    answer: &[u8],
) -> io::Result<()> {
    s.write_all(answer)?;
    loop {
        let (chunk, last) = {
            let mut q = shared.lock();
            if q.buf.is_empty() && !q.closed {
                q = shared
                    .ready
                    .wait_timeout(q, IDLE_LOOK)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            }
            let chunk = std::mem::take(&mut q.buf);
            q.writing = chunk.len();
            (chunk, q.closed)
        };
        if chunk.is_empty() && !last {
            if left(s) {
                return Ok(());
            }
            continue;
        }
        // Blocking, without a timeout: a client that does not read only
        // holds its own queue, full, and its events are dropped and
        // counted.
        let written = s.write_all(&chunk);
        shared.lock().writing = 0;
        written?;
        if last {
            return Ok(());
        }
    }
}

/// The client closed its side (it sends nothing after its request).
fn left(s: &std::os::unix::net::UnixStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd; no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// The daemon's session sink: the v2 sink's records, and the live events
/// for the subscribers (in `out.live`); it also tells the session how to
/// degrade over the memory cap, and counts what that costs.
pub struct LiveSink {
    pub v2: V2Sink<DaemonOut>,
    /// The degradation level the session applies (set at each tick).
    pub applied: u8,
    /// Faults handled without their page since the last flush.
    pub coarse_faults: u64,
    /// Processes not tracked (level 2) already counted (bounded).
    pub untracked: HashSet<u32>,
}

/// Untracked processes remembered, at most (others may be counted twice:
/// at their fork and at their exec).
const MAX_UNTRACKED: usize = 65536;

impl LiveSink {
    /// What degrading costs: the faults of tracked processes counted
    /// without their page; the new processes not tracked (a fork's child,
    /// or a process first seen at its exec), once each, by comm.
    fn count_degraded(&mut self, ev: &Event) {
        match ev.body {
            Body::Fault { .. } if self.v2.knows(ev.pid) => self.coarse_faults += 1,
            Body::Fork { child_pid, .. } if self.applied > 1 => {
                self.v2.out.memory.untracked(&ev.comm);
                if self.untracked.len() < MAX_UNTRACKED {
                    self.untracked.insert(child_pid);
                }
            }
            Body::Exec { .. }
                if self.applied > 1
                    && !self.v2.knows(ev.pid)
                    && !self.untracked.contains(&ev.pid) =>
            {
                self.v2.out.memory.untracked(&ev.comm);
                if self.untracked.len() < MAX_UNTRACKED {
                    self.untracked.insert(ev.pid);
                }
            }
            Body::Exit { .. } => {
                self.untracked.remove(&ev.pid);
            }
            _ => {}
        }
    }
}

impl Sink for LiveSink {
    fn started(&mut self, start_ns: u64) {
        self.v2.started(start_ns);
    }

    fn attached(&mut self, stack: StackPath) {
        self.v2.attached(stack);
    }

    fn signal(&mut self, name: &'static str) {
        self.v2.out.live.signal(name);
        self.v2.signal(name);
    }

    fn event(&mut self, ev: &Event, changes: &[RegionChange]) {
        if !self.v2.out.live.is_empty() {
            self.v2.out.live.event(ev);
        }
        if self.applied > 0 {
            self.count_degraded(ev);
        }
        self.v2.event(ev, changes);
    }

    fn lost(&mut self, kind: EventKind, count: u64, now_ns: u64) {
        self.v2.out.live.kernel_lost(kind, count);
        self.v2.lost(kind, count, now_ns);
    }

    fn check(&mut self, p: &Process, reason: CheckReason, c: &Comparison) {
        self.v2.check(p, reason, c);
    }

    fn void_check(&mut self, pid: u32, reason: CheckReason, ts_ns: u64, why: Option<VoidReason>) {
        self.v2.void_check(pid, reason, ts_ns, why);
    }

    fn processes(&mut self, ev: &Event, touched: &[&Process]) {
        self.v2.processes(ev, touched);
    }

    fn sample(&mut self, now_ns: u64, p: &Process) {
        self.v2.sample(now_ns, p);
    }

    fn ended(&mut self, p: Process) {
        self.v2.ended(p);
    }

    fn wanted_checks(&mut self) -> Vec<u32> {
        self.v2.out.wanted_checks()
    }

    fn degrade(&mut self) -> (bool, bool) {
        self.applied = self.v2.out.memory.level();
        self.v2.out.memory.applied = self.applied;
        (self.applied >= 1, self.applied >= 2)
    }

    fn flush(&mut self) -> bool {
        if self.coarse_faults > 0 {
            // Said in the timelines of the processes alive, as the ring
            // buffer's losses are.
            let n = std::mem::take(&mut self.coarse_faults);
            self.v2.out.memory.fault_detail_dropped += n;
            let t_ns = clock::monotonic_ns().saturating_sub(self.v2.start_ns());
            self.v2.out.put(&Record::Lost(v2::Lost {
                t_ns,
                kind: super::memory::FAULT_DETAIL.to_string(),
                count: n,
            }));
        }
        let going = self.v2.flush();
        self.v2.out.live.flush();
        going
    }
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

/// Why the client stopped.
enum Stop {
    Signal(&'static str),
    Duration,
    DaemonEnd(String),
    Cut,
    OutputClosed,
}

/// `mmtrace stream --connect SOCKET [filters]`: the daemon's live events,
/// printed as `stream` prints them; returns the exit code.
pub fn client(mut args: StreamArgs, socket: &Path) -> Result<i32> {
    let refuse = |what: &str| Err(Error::Usage(format!("--connect: {what}")));
    if !args.trace.command.is_empty() {
        return refuse("the daemon traces what it traces: no -- CMD with --connect");
    }
    if args.regions {
        return refuse("--regions is not available over --connect (raw events only)");
    }
    if args.trace.kill_on_stop {
        return refuse("--kill-on-stop goes with -- CMD, not with --connect");
    }
    if !args.trace.cgroups.is_empty() {
        return refuse("--cgroup is not available over --connect (select.cgroup in the daemon's configuration selects)");
    }
    let mut pids = Vec::new();
    for pid in &args.trace.pids {
        let tgid = crate::kernel::preflight::process_of(*pid)?;
        if !pids.contains(&tgid) {
            pids.push(tgid);
        }
    }
    let mut comms = Vec::new();
    for c in &args.trace.comms {
        match c.to_str() {
            Some(s) => comms.push(s.to_string()),
            None => return refuse("a --comm that is not UTF-8 cannot be sent to the daemon"),
        }
    }
    let (out, color) = crate::commands::stream::open_output(&args)?;
    let req = StreamRequest {
        pids,
        comms,
        follow: args.trace.follow,
        kinds: kind_mask(&args.events, args.faults),
        jsonl: args.format == Format::Jsonl,
        color,
    };
    let (reader, answer) = control::subscribe(socket, &req)?;
    let start_ns = answer["stream"]["start_ns"].as_u64().unwrap_or(0);
    let daemon_faults = answer["stream"]["faults"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if args.faults == FaultMode::All && daemon_faults != "all" {
        log::warn!(
            "the daemon counts faults as {daemon_faults:?}: --faults all is not available \
             over --connect (its fault summaries are shown)"
        );
    }
    log::info!(
        "streaming from the mmtrace daemon at {}; Ctrl-C to stop",
        socket.display()
    );
    let duration = args.trace.duration.take().map(Duration::from_secs_f64);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)?;
    let printer = Printer::new(out, args.format, color, start_ns);
    rt.block_on(follow_stream(reader, printer, duration, socket))
}

async fn follow_stream(
    reader: std::os::unix::net::UnixStream,
    mut printer: Printer<Box<dyn Write>>,
    duration: Option<Duration>,
    socket: &Path,
) -> Result<i32> {
    let started = Instant::now();
    let mut stop_signals =
        crate::session::signals::StopSignals::new().map_err(anyhow::Error::from)?;
    reader.set_nonblocking(true).map_err(anyhow::Error::from)?;
    let s = tokio::net::UnixStream::from_std(reader).map_err(anyhow::Error::from)?;
    let mut r = tokio::io::BufReader::with_capacity(64 << 10, s);
    let sleep = tokio::time::sleep(duration.unwrap_or(Duration::from_secs(u64::from(u32::MAX))));
    tokio::pin!(sleep);
    let (mut events, mut kernel_lost, mut dropped) = (0u64, 0u64, 0u64);
    let mut output_failed: Option<io::Error> = None;
    let mut line = Vec::with_capacity(512);
    let stop = loop {
        line.clear();
        tokio::select! {
            n = r.read_until(b'\n', &mut line) => {
                match n {
                    Ok(0) | Err(_) => break Stop::Cut,
                    Ok(_) => {}
                }
                if !line.ends_with(b"\n") {
                    break Stop::Cut;
                }
                let written = if line.starts_with(b"{\"v\":") {
                    let v: Value = serde_json::from_slice(&line).unwrap_or(Value::Null);
                    if let Some(end) = v.get("end") {
                        break Stop::DaemonEnd(end["reason"].as_str().unwrap_or("the daemon stopped").to_string());
                    }
                    let Some(lost) = v.get("lost") else {
                        continue;
                    };
                    let count = lost["count"].as_u64().unwrap_or(0);
                    let kind = lost["kind"].as_str().and_then(|k| EventKind::ALL.iter().copied().find(|e| e.name() == k));
                    if lost["source"] == "kernel" {
                        kernel_lost += count;
                    } else {
                        dropped += count;
                    }
                    let ev = Event {
                        ts_ns: lost["ts_ns"].as_u64().unwrap_or(start_ns_of(&printer)),
                        cpu: 0,
                        pid: 0,
                        tid: 0,
                        comm: Vec::new(),
                        body: Body::Lost { count, kind },
                        counters: None,
                    };
                    printer.print(&ev)
                } else {
                    events += 1;
                    printer.write_line(&line)
                };
                let flushed = written.and_then(|()| {
                    if r.buffer().is_empty() { printer.flush() } else { Ok(()) }
                });
                if let Err(e) = flushed {
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        break Stop::OutputClosed;
                    }
                    eprintln!("mmtrace: cannot write events: {e}; the output stops at its last whole line");
                    output_failed = Some(e);
                    break Stop::OutputClosed;
                }
            }
            name = stop_signals.recv() => match name.map_err(anyhow::Error::from)? {
                "SIGUSR1" | "SIGHUP" => {}
                name => break Stop::Signal(name),
            },
            () = &mut sleep, if duration.is_some() => break Stop::Duration,
        }
    };
    let _ = printer.flush();
    let why = match &stop {
        Stop::Signal(name) => format!("stopped by {name}"),
        Stop::Duration => "stopped after --duration".to_string(),
        Stop::DaemonEnd(reason) => reason.clone(),
        Stop::Cut => format!(
            "the daemon at {} closed the stream without an end line",
            socket.display()
        ),
        Stop::OutputClosed => "stopped: the output is closed".to_string(),
    };
    eprintln!(
        "mmtrace: {events} events in {:.2} s from the daemon; lost {kernel_lost} \
         (the daemon's ring buffer), dropped {dropped} (this client did not keep up); {why}",
        started.elapsed().as_secs_f64()
    );
    Ok(match stop {
        Stop::Cut => 2,
        _ if output_failed.is_some() => EXIT_OUTPUT_INCOMPLETE,
        _ => 0,
    })
}

fn start_ns_of<W: Write>(p: &Printer<W>) -> u64 {
    p.start_ns()
}

/// Parses the `stream` request's fields.
pub fn parse_request(
    pids: Option<Vec<u32>>,
    comms: Option<Vec<String>>,
    follow: Option<bool>,
    events: Option<Vec<String>>,
    format: Option<&str>,
    color: Option<bool>,
) -> std::result::Result<StreamRequest, String> {
    let kinds = match events {
        None => kind_mask(&[], FaultMode::Summary),
        Some(e) => kinds_of(&e)?,
    };
    let jsonl = match format {
        None | Some("text") => false,
        Some("jsonl") => true,
        Some(f) => return Err(format!("unknown format {f:?} (text, jsonl)")),
    };
    let comms = comms.unwrap_or_default();
    if let Some(c) = comms.iter().find(|c| c.is_empty() || c.len() > 15) {
        return Err(format!("comm {c:?} must be 1 to 15 bytes"));
    }
    Ok(StreamRequest {
        pids: pids.unwrap_or_default(),
        comms,
        follow: follow.unwrap_or(false),
        kinds,
        jsonl,
        color: color.unwrap_or(false),
    })
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

    fn munmap(pid: u32, comm: &str) -> Event {
        ev(
            pid,
            comm,
            Body::Munmap {
                addr: 0x1000,
                len: 4096,
                ret: crate::event::SysResult::from_raw(0),
            },
        )
    }

    #[test]
    fn filters_select_as_stream_does() {
        let all = kind_mask(&[], FaultMode::Summary);
        let mut f = Filter::new(&StreamRequest {
            pids: vec![10],
            comms: vec!["sleep".into()],
            follow: true,
            kinds: all & !EventKind::Mmap.bit(),
            ..StreamRequest::default()
        });
        assert!(f.takes(&munmap(10, "x")));
        assert!(f.takes(&munmap(11, "sleep")));
        assert!(!f.takes(&munmap(12, "other")));
        // Followed children.
        assert!(f.takes(&ev(
            10,
            "x",
            Body::Fork {
                child_pid: 12,
                clone_flags: 0
            }
        )));
        assert!(f.takes(&munmap(12, "other")));
        assert!(f.takes(&ev(
            12,
            "other",
            Body::Exit {
                status: 0,
                start_time: 0
            }
        )));
        assert!(!f.takes(&munmap(12, "other")), "forgotten at its exit");
        // Kinds.
        let mmap = ev(
            10,
            "x",
            Body::Mmap {
                addr: 0,
                len: 4096,
                prot: 3,
                flags: 0x22,
                fd: -1,
                offset: 0,
                ret: crate::event::SysResult::from_raw(0x1000),
                file: None,
            },
        );
        assert!(!f.takes(&mmap));
        // Lost events always.
        assert!(f.takes(&ev(
            0,
            "",
            Body::Lost {
                count: 1,
                kind: None
            }
        )));
    }

    #[test]
    fn a_full_queue_drops_counts_and_says_so() {
        let mut feed = Feed::default();
        let req = StreamRequest {
            kinds: kind_mask(&[], FaultMode::Summary),
            jsonl: true,
            ..StreamRequest::default()
        };
        let sub = feed.subscribe(&req, "summary").unwrap();
        let e = munmap(5, "w");
        let mut n = 0u64;
        while sub.shared.lock().dropped == 0 {
            feed.event(&e);
            n += 1;
        }
        let q = sub.shared.lock();
        assert!(q.buf.len() <= QUEUE_BYTES);
        assert!(n > 100);
        drop(q);
        for _ in 0..9 {
            feed.event(&e);
        }
        feed.kernel_lost(EventKind::Mmap, 3);
        assert_eq!(sub.shared.lock().dropped, 10);
        // The task writes the queue out: the next event is preceded by
        // what was missed.
        {
            let mut q = sub.shared.lock();
            q.buf.clear();
        }
        feed.event(&e);
        let q = sub.shared.lock();
        let text = String::from_utf8(q.buf.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("\"source\":\"kernel\"") && lines[0].contains("\"count\":3"));
        assert!(
            lines[1].contains("\"source\":\"subscriber\"") && lines[1].contains("\"count\":10")
        );
        assert!(lines[2].starts_with("{\"t_ns\":"), "{}", lines[2]);
        assert_eq!(q.dropped_total, 10);
        assert_eq!(q.dropped, 0);
    }

    #[test]
    fn at_most_a_few_subscribers() {
        let mut feed = Feed::default();
        let req = StreamRequest::default();
        let subs: Vec<_> = (0..MAX_SUBSCRIBERS)
            .map(|_| feed.subscribe(&req, "summary").unwrap())
            .collect();
        assert!(feed.subscribe(&req, "summary").is_none());
        subs[0].shared.lock().done = true;
        assert!(feed.subscribe(&req, "summary").is_some(), "a slot freed");
    }
}
