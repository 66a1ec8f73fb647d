//! The daemon's control socket (docs/control-protocol.md): versioned JSON
//! lines over a Unix socket, mode 0660, root and the configured group
//! (timelines and dumps reveal address layouts, which defeats ASLR).
//!
//! The listener is a task on the daemon's runtime: it never blocks the
//! event loop. It checks each peer (SO_PEERCRED), reads one bounded request
//! line and hands it to the sink through a bounded channel ([`Ask`]); the
//! sink answers at its next tick (every 50 ms) from what it keeps
//! ([`super::sink::DaemonOut::answer`]). A dump's answer carries the
//! process's spool file, opened by the sink, and its buffered lines: the
//! task streams them, so the event loop copies nothing big.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read, Write},
    os::unix::{
        fs::{FileTypeExt, MetadataExt, OpenOptionsExt},
        net::UnixStream,
    },
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use log::warn;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::{mpsc, oneshot, Semaphore},
};

use super::live::{self, StreamRequest, Subscription};
use crate::{
    error::{Error, Result},
    output::{file::MODE, names::escape_text},
};

/// The protocol's version.
pub const VERSION: u64 = 1;
/// The longest request line, newline included.
pub const MAX_REQUEST: usize = 4096;
/// Clients served at once; more get an error line.
pub const MAX_CLIENTS: usize = 16;
/// A client has this long to send its request, and each write to it must
/// progress within it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// What `ps` sorts by (largest first; pid ascending).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    Rss,
    Mapped,
    Regions,
    Faults,
    Pid,
}

impl SortKey {
    pub fn parse(s: &str) -> Option<SortKey> {
        Some(match s {
            "rss" => SortKey::Rss,
            "mapped" => SortKey::Mapped,
            "regions" => SortKey::Regions,
            "faults" => SortKey::Faults,
            "pid" => SortKey::Pid,
            _ => return None,
        })
    }
}

/// A request.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Status,
    Ps {
        sort: SortKey,
    },
    Dump {
        pid: u32,
    },
    /// `mmtrace stream --connect`: the live events ([`super::live`]).
    Stream(StreamRequest),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    v: u64,
    cmd: String,
    #[serde(default)]
    sort: Option<String>,
    #[serde(default)]
    pid: Option<u32>,
    // `stream`'s fields.
    #[serde(default)]
    pids: Option<Vec<u32>>,
    #[serde(default)]
    comms: Option<Vec<String>>,
    #[serde(default)]
    follow: Option<bool>,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    color: Option<bool>,
}

/// Parses one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    if line.len() >= MAX_REQUEST {
        return Err(format!("request longer than {} bytes", MAX_REQUEST - 1));
    }
    let raw: RawRequest = serde_json::from_slice(line).map_err(|e| format!("bad request: {e}"))?;
    if raw.v != VERSION {
        return Err(format!(
            "unsupported protocol version {} (this daemon speaks {VERSION})",
            raw.v
        ));
    }
    let req = match raw.cmd.as_str() {
        "status" => Request::Status,
        "ps" => {
            let sort = match raw.sort.as_deref() {
                None => SortKey::Rss,
                Some(s) => SortKey::parse(s).ok_or_else(|| {
                    format!("unknown sort {s:?} (rss, mapped, regions, faults, pid)")
                })?,
            };
            Request::Ps { sort }
        }
        "dump" => Request::Dump {
            pid: raw.pid.ok_or("dump needs a pid")?,
        },
        "stream" => {
            if raw.sort.is_some() || raw.pid.is_some() {
                return Err(format!("cmd {:?} takes no such field", raw.cmd));
            }
            return live::parse_request(
                raw.pids,
                raw.comms,
                raw.follow,
                raw.events,
                raw.format.as_deref(),
                raw.color,
            )
            .map(Request::Stream);
        }
        other => return Err(format!("unknown cmd {other:?} (status, ps, dump, stream)")),
    };
    let stream_fields = raw.pids.is_some()
        || raw.comms.is_some()
        || raw.follow.is_some()
        || raw.events.is_some()
        || raw.format.is_some()
        || raw.color.is_some();
    let extra = stream_fields
        || match req {
            Request::Status => raw.sort.is_some() || raw.pid.is_some(),
            Request::Ps { .. } => raw.pid.is_some(),
            Request::Dump { .. } => raw.sort.is_some(),
            Request::Stream(_) => false,
        };
    if extra {
        return Err(format!("cmd {:?} takes no such field", raw.cmd));
    }
    Ok(req)
}

/// The request line for `req`.
pub fn request_line(req: &Request) -> String {
    let v = match req {
        Request::Status => json!({"v": VERSION, "cmd": "status"}),
        Request::Ps { sort } => {
            let sort = match sort {
                SortKey::Rss => "rss",
                SortKey::Mapped => "mapped",
                SortKey::Regions => "regions",
                SortKey::Faults => "faults",
                SortKey::Pid => "pid",
            };
            json!({"v": VERSION, "cmd": "ps", "sort": sort})
        }
        Request::Dump { pid } => json!({"v": VERSION, "cmd": "dump", "pid": pid}),
        Request::Stream(r) => r.to_json(),
    };
    format!("{v}\n")
}

/// An error line.
pub fn error_line(msg: &str) -> String {
    format!("{}\n", json!({"v": VERSION, "error": msg}))
}

/// The sink's answer.
pub enum Reply {
    /// One line (newline included).
    Line(String),
    /// A dump: `head` (the answer line and the header), the first `len`
    /// bytes of the spool file, then `rest` (buffered lines, the process's
    /// end record, lost records, end line).
    Dump {
        head: Vec<u8>,
        spool: Option<(File, u64)>,
        rest: Vec<u8>,
    },
    /// A subscription to the live events.
    Stream(Subscription),
}

/// A request for the sink, answered at its next tick.
pub struct Ask {
    pub req: Request,
    pub reply: oneshot::Sender<Reply>,
}

/// The bound socket; removed when dropped (the daemon's clean stop), if it
/// is still ours.
pub struct Listener {
    pub path: PathBuf,
    socket: Option<std::os::unix::net::UnixListener>,
    /// The configured group's gid (None: root only).
    pub gid: Option<u32>,
    ino: (u64, u64),
}

impl Listener {
    /// Binds `path` with mode 0600 (umask), then gives it to `group` and
    /// sets 0660: it is never wider than that. Its directory is created
    /// 0755 when missing; one that others may write (but sticky ones, like
    /// /tmp) is refused. A stale socket (nothing
    /// listens) is replaced; a live one means another daemon: refused.
    pub fn bind(path: &Path, group: &str) -> Result<Listener> {
        let refuse =
            |what: String| Error::Usage(format!("daemon: socket {}: {what}", path.display()));
        if let Some(dir) = path.parent() {
            if !dir.exists() {
                use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dir)
                    .and_then(|()| {
                        // Whatever the umask: the group must reach the socket.
                        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                    })
                    .map_err(|e| refuse(format!("cannot create {}: {e}", dir.display())))?;
            }
            let m =
                std::fs::metadata(dir).map_err(|e| refuse(format!("{}: {e}", dir.display())))?;
            // Anyone who may write there could swap the socket for theirs.
            if m.mode() & 0o022 != 0 && m.mode() & 0o1000 == 0 {
                return Err(refuse(format!(
                    "its directory {} is writable by others: refused",
                    dir.display()
                )));
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => match UnixStream::connect(path) {
                Ok(_) => {
                    return Err(refuse(
                        "another mmtrace daemon listens on it (stop it first)".into(),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    warn!(
                        "removing the stale socket {} (nothing listens)",
                        path.display()
                    );
                    std::fs::remove_file(path).map_err(|e| refuse(e.to_string()))?;
                }
                Err(e) => return Err(refuse(format!("exists and cannot be tested: {e}"))),
            },
            Ok(_) => return Err(refuse("exists and is not a socket".into())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(refuse(e.to_string())),
        }
        let gid = if group.is_empty() {
            None
        } else {
            let g = group_id(group);
            if g.is_none() {
                warn!("group {group:?} does not exist: the socket is for root only");
            }
            g
        };
        // SAFETY: umask cannot fail; restored right after the bind.
        let old = unsafe { libc::umask(0o177) };
        let bound = std::os::unix::net::UnixListener::bind(path);
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        let socket = bound.map_err(|e| refuse(format!("cannot bind: {e}")))?;
        let mut l = Listener {
            path: path.to_path_buf(),
            socket: None,
            gid,
            ino: (0, 0),
        };
        if let Some(gid) = gid {
            std::os::unix::fs::chown(path, None, Some(gid))
                .and_then(|()| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
                })
                .map_err(|e| {
                    let _ = std::fs::remove_file(path);
                    refuse(format!("cannot give it to group {group}: {e}"))
                })?;
        }
        let m = std::fs::symlink_metadata(path).map_err(|e| refuse(e.to_string()))?;
        l.ino = (m.dev(), m.ino());
        socket
            .set_nonblocking(true)
            .map_err(|e| refuse(e.to_string()))?;
        l.socket = Some(socket);
        Ok(l)
    }

    /// The listening socket, for the runtime (once).
    pub fn take(&mut self) -> Option<std::os::unix::net::UnixListener> {
        self.socket.take()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// The gid of `name`.
fn group_id(name: &str) -> Option<u32> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: valid pointers and buffer length; `out` is checked.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    (rc == 0 && !out.is_null()).then_some(grp.gr_gid)
}

/// Root, or in group `gid` (primary or supplementary, from
/// /proc/PID/status).
fn allowed(uid: u32, gid: u32, pid: Option<i32>, group: Option<u32>) -> bool {
    if uid == 0 {
        return true;
    }
    let Some(group) = group else {
        return false;
    };
    if gid == group {
        return true;
    }
    let Some(pid) = pid else {
        return false;
    };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Groups:").map(str::to_string))
        })
        .is_some_and(|g| g.split_whitespace().any(|g| g.parse() == Ok(group)))
}

/// Accepts clients until the runtime ends.
pub async fn serve(
    socket: std::os::unix::net::UnixListener,
    gid: Option<u32>,
    asks: mpsc::Sender<Ask>,
) {
    let listener = match tokio::net::UnixListener::from_std(socket) {
        Ok(l) => l,
        Err(e) => {
            warn!("control socket: {e}; no clients will be answered");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!("control socket: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // One try, no task: a flood of clients costs nothing to keep.
            let line = error_line(&format!("too many clients (at most {MAX_CLIENTS})"));
            let _ = stream.try_write(line.as_bytes());
            continue;
        };
        let asks = asks.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = serve_one(stream, gid, asks).await;
        });
    }
}

async fn write_timed(s: &mut tokio::net::UnixStream, bytes: &[u8]) -> io::Result<()> {
    tokio::time::timeout(IO_TIMEOUT, s.write_all(bytes))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

/// Sends an error line and closes, reading what the client still sends
/// (at most 64 KiB, for a second): closing a Unix socket with unread data
/// would reset the connection, and the client would not see the line.
async fn refuse(s: &mut tokio::net::UnixStream, msg: &str) -> io::Result<()> {
    write_timed(s, error_line(msg).as_bytes()).await?;
    s.shutdown().await?;
    let mut buf = [0u8; 4096];
    let mut left = 64usize << 10;
    let drain = async {
        while left > 0 {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    Ok(())
}

async fn serve_one(
    mut s: tokio::net::UnixStream,
    gid: Option<u32>,
    asks: mpsc::Sender<Ask>,
) -> io::Result<()> {
    let cred = s.peer_cred()?;
    if !allowed(cred.uid(), cred.gid(), cred.pid(), gid) {
        let msg = format!(
            "not allowed: uid {} is neither root nor in the daemon's group",
            cred.uid()
        );
        return refuse(&mut s, &msg).await;
    }
    let line = match tokio::time::timeout(IO_TIMEOUT, read_request(&mut s)).await {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => return refuse(&mut s, &e).await,
        Err(_) => {
            let msg = format!("no request within {} s", IO_TIMEOUT.as_secs());
            return refuse(&mut s, &msg).await;
        }
    };
    let req = match parse_request(&line) {
        Ok(r) => r,
        Err(e) => return refuse(&mut s, &e).await,
    };
    let (tx, rx) = oneshot::channel();
    if asks.send(Ask { req, reply: tx }).await.is_err() {
        return write_timed(&mut s, error_line("the daemon is stopping").as_bytes()).await;
    }
    match rx.await {
        Ok(Reply::Line(l)) => write_timed(&mut s, l.as_bytes()).await,
        Ok(Reply::Dump { head, spool, rest }) => {
            write_timed(&mut s, &head).await?;
            if let Some((mut f, mut left)) = spool {
                let mut buf = vec![0u8; 64 << 10];
                while left > 0 {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    // A local file: a short blocking read.
                    let n = f.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                    }
                    write_timed(&mut s, &buf[..n]).await?;
                    left -= n as u64;
                }
            }
            write_timed(&mut s, &rest).await
        }
        Ok(Reply::Stream(sub)) => live::pump(s, sub).await,
        Err(_) => write_timed(&mut s, error_line("the daemon is stopping").as_bytes()).await,
    }
}

/// One request line, without its newline (an error line's text when it is
/// too long or the client closed).
async fn read_request(s: &mut tokio::net::UnixStream) -> Result<Vec<u8>, String> {
    let mut line = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    loop {
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("no request line (closed before a newline)".into());
        }
        if let Some(i) = buf[..n].iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&buf[..i]);
            if line.len() >= MAX_REQUEST {
                break;
            }
            return Ok(line);
        }
        line.extend_from_slice(&buf[..n]);
        if line.len() >= MAX_REQUEST {
            break;
        }
    }
    Err(format!("request longer than {} bytes", MAX_REQUEST - 1))
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// Connects to the daemon at `socket` and sends `req`.
fn connect(socket: &Path, req: &Request) -> Result<BufReader<UnixStream>> {
    let s = UnixStream::connect(socket).map_err(|e| {
        Error::Usage(if e.kind() == io::ErrorKind::PermissionDenied {
            format!(
                "not allowed to use the mmtrace daemon at {}: {e} (root or the daemon's group only)",
                socket.display()
            )
        } else {
            format!("no mmtrace daemon at {}: {e}", socket.display())
        })
    })?;
    let lost =
        |e: io::Error| Error::Usage(format!("the mmtrace daemon at {}: {e}", socket.display()));
    s.set_read_timeout(Some(Duration::from_mins(1)))
        .map_err(lost)?;
    s.set_write_timeout(Some(IO_TIMEOUT)).map_err(lost)?;
    (&s).write_all(request_line(req).as_bytes()).map_err(lost)?;
    Ok(BufReader::new(s))
}

/// The first answer line: its JSON, or the daemon's error.
fn answer<R: Read>(r: &mut BufReader<R>, socket: &Path) -> Result<Value> {
    let mut line = Vec::new();
    r.by_ref()
        .take(256 << 20)
        .read_until(b'\n', &mut line)
        .map_err(|e| Error::Usage(format!("the mmtrace daemon at {}: {e}", socket.display())))?;
    if line.is_empty() {
        return Err(Error::Usage(format!(
            "the mmtrace daemon at {} closed without answering",
            socket.display()
        )));
    }
    let v: Value = serde_json::from_slice(&line).map_err(|e| {
        Error::Usage(format!(
            "the mmtrace daemon at {} answered something else than JSON: {e}",
            socket.display()
        ))
    })?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return Err(Error::Usage(format!("daemon at {}: {e}", socket.display())));
    }
    Ok(v)
}

/// Subscribes to the daemon's live events: the connection (its answer
/// line read, nothing more) and that answer.
pub fn subscribe(socket: &Path, req: &StreamRequest) -> Result<(UnixStream, Value)> {
    let r = connect(socket, &Request::Stream(req.clone()))?;
    let mut s = r.into_inner();
    let lost =
        |e: io::Error| Error::Usage(format!("the mmtrace daemon at {}: {e}", socket.display()));
    // Byte by byte: the events that follow stay in the socket.
    let mut line = Vec::with_capacity(256);
    let mut b = [0u8; 1];
    while line.len() < MAX_REQUEST * 4 {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(_) => {
                line.push(b[0]);
                if b[0] == b'\n' {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(lost(e)),
        }
    }
    let v = answer(&mut BufReader::new(&line[..]), socket)?;
    s.set_read_timeout(None).map_err(lost)?;
    Ok((s, v))
}

/// `mmtrace status`.
pub fn status(socket: &Path, raw: bool, out: &mut dyn Write) -> Result<i32> {
    let mut r = connect(socket, &Request::Status)?;
    let v = answer(&mut r, socket)?;
    if raw {
        let _ = writeln!(out, "{v}");
        return Ok(0);
    }
    let s = &v["status"];
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    let size = |k: &str| crate::output::names::human_size(n(k));
    let text = format!(
        "uptime:      {} s\n\
         events:      {} ({:.0}/s)\n\
         records:     {} ({:.0}/s)\n\
         lost events: {}\n\
         checks:      {} ({} drift)\n\
         processes:   {} tracked, {} regions\n\
         memory:      {} resident of a {} cap{}\n\
         timelines:   {} written ({}), {} failed, {} exits skipped, {} deleted by retention\n",
        n("uptime_secs"),
        n("events"),
        s["events_per_sec"].as_f64().unwrap_or(0.0),
        n("records"),
        s["records_per_sec"].as_f64().unwrap_or(0.0),
        n("lost_events"),
        n("checks"),
        n("drift"),
        n("processes"),
        n("regions"),
        size("rss_bytes"),
        size("memory_cap_bytes"),
        if s["over_cap"].as_bool() == Some(true) {
            " (OVER)"
        } else {
            ""
        },
        n("timelines_written"),
        size("timelines_written_bytes"),
        n("write_failures"),
        n("exits_skipped"),
        n("timelines_deleted"),
    );
    let _ = out.write_all(text.as_bytes());
    Ok(0)
}

/// `mmtrace ps`.
pub fn ps(socket: &Path, sort: SortKey, raw: bool, out: &mut dyn Write) -> Result<i32> {
    use std::fmt::Write as _;
    let mut r = connect(socket, &Request::Ps { sort })?;
    let v = answer(&mut r, socket)?;
    if raw {
        let _ = writeln!(out, "{v}");
        return Ok(0);
    }
    let mut text = format!(
        "{:>8} {:<16} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10} {}\n",
        "PID", "COMM", "MAPPED", "HEAP", "STACK", "RSS", "REGIONS", "FAULTS/S", "CGROUP"
    );
    let empty = Vec::new();
    for p in v["ps"].as_array().unwrap_or(&empty) {
        let n = |k: &str| p[k].as_u64().unwrap_or(0);
        let size = |k: &str| crate::output::names::human_size(n(k));
        let rss = if p["rss"].is_null() {
            "-".to_string()
        } else {
            size("rss")
        };
        let _ = writeln!(
            text,
            "{:>8} {:<16} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10.0} {}",
            n("pid"),
            escape_text(p["comm"].as_str().unwrap_or("").as_bytes()),
            size("mapped"),
            size("heap"),
            size("stack"),
            rss,
            n("regions"),
            p["faults_per_sec"].as_f64().unwrap_or(0.0),
            // The v1 memory path on hybrid hosts, else the v2 one.
            p["cgroup"]
                .as_str()
                .map_or_else(|| "-".to_string(), |c| escape_text(c.as_bytes())),
        );
    }
    let _ = out.write_all(text.as_bytes());
    Ok(0)
}

/// `mmtrace dump PID -o FILE`: the live timeline into a new private file.
pub fn dump(socket: &Path, pid: u32, output: &Path) -> Result<i32> {
    let usage = |e: String| Error::Usage(format!("{}: {e}", output.display()));
    if std::fs::symlink_metadata(output).is_ok() {
        return Err(usage("exists; mmtrace never overwrites a dump".into()));
    }
    let mut r = connect(socket, &Request::Dump { pid })?;
    let head = answer(&mut r, socket)?;
    let check = head["dump"]["check"].as_str().unwrap_or("").to_string();
    let mut drift = None;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(output)
        .map_err(|e| usage(e.to_string()))?;
    let copied = (|| -> io::Result<bool> {
        let mut w = io::BufWriter::new(&mut file);
        let mut line = Vec::new();
        let mut last_is_end = false;
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            last_is_end = line.starts_with(b"{\"type\":\"end\"") && line.ends_with(b"\n");
            if line.starts_with(b"{\"type\":\"check\"") {
                let c: Value = serde_json::from_slice(&line).unwrap_or(Value::Null);
                drift = c["drift"].as_u64().filter(|_| c["void"] != true);
            }
            w.write_all(&line)?;
        }
        w.flush()?;
        drop(w);
        file.sync_all()?;
        Ok(last_is_end)
    })();
    match copied {
        Ok(true) => {
            let checked = match (check.as_str(), drift) {
                ("made", Some(0)) => "checked against /proc at the dump: no drift".to_string(),
                ("made", Some(n)) => {
                    format!("checked against /proc at the dump: {n} drift (see its drift records)")
                }
                ("off", _) => "not checked at the dump (the daemon makes no checks)".to_string(),
                (how, _) => format!("its check at the dump: {how}"),
            };
            eprintln!(
                "mmtrace: dump of pid {pid} written to {} ({checked})",
                output.display()
            );
            Ok(0)
        }
        Ok(false) => {
            let _ = std::fs::remove_file(output);
            Err(usage(
                "the daemon's answer ended before its end line; nothing written".into(),
            ))
        }
        Err(e) => {
            let _ = std::fs::remove_file(output);
            Err(usage(format!("{e}; nothing written")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(
            parse_request(br#"{"v":1,"cmd":"status"}"#),
            Ok(Request::Status)
        );
        assert_eq!(
            parse_request(br#"{"v":1,"cmd":"ps"}"#),
            Ok(Request::Ps { sort: SortKey::Rss })
        );
        assert_eq!(
            parse_request(br#"{"v":1,"cmd":"ps","sort":"pid"}"#),
            Ok(Request::Ps { sort: SortKey::Pid })
        );
        assert_eq!(
            parse_request(br#"{"v":1,"cmd":"dump","pid":42}"#),
            Ok(Request::Dump { pid: 42 })
        );
        for req in [
            Request::Status,
            Request::Ps {
                sort: SortKey::Faults,
            },
            Request::Dump { pid: 7 },
        ] {
            let line = request_line(&req);
            assert!(line.ends_with('\n'));
            assert_eq!(parse_request(line.trim_end().as_bytes()), Ok(req));
        }
    }

    #[test]
    fn stream_requests_parse_and_round_trip() {
        let Ok(Request::Stream(r)) = parse_request(br#"{"v":1,"cmd":"stream"}"#) else {
            panic!("a stream request");
        };
        assert!(r.pids.is_empty() && r.comms.is_empty() && !r.jsonl && !r.follow);
        assert_ne!(r.kinds, 0, "every kind by default");
        let want = StreamRequest {
            pids: vec![4, 5],
            comms: vec!["python3".into()],
            follow: true,
            kinds: live::kinds_of(&["mmap".into(), "exit".into()]).unwrap(),
            jsonl: true,
            color: false,
        };
        let line = request_line(&Request::Stream(want.clone()));
        assert_eq!(
            parse_request(line.trim_end().as_bytes()),
            Ok(Request::Stream(want))
        );
        let err = |l: &[u8]| parse_request(l).unwrap_err();
        assert!(err(br#"{"v":1,"cmd":"stream","events":["nope"]}"#).contains("unknown event"));
        assert!(err(br#"{"v":1,"cmd":"stream","format":"xml"}"#).contains("unknown format"));
        assert!(err(br#"{"v":1,"cmd":"stream","pid":3}"#).contains("no such field"));
        assert!(err(br#"{"v":1,"cmd":"status","follow":true}"#).contains("no such field"));
        assert!(err(br#"{"v":1,"cmd":"stream","comms":[""]}"#).contains("1 to 15"));
    }

    #[test]
    fn bad_requests_are_refused() {
        let err = |l: &[u8]| parse_request(l).unwrap_err();
        assert!(err(b"{not json").starts_with("bad request"));
        assert!(err(b"").starts_with("bad request"));
        assert!(err(br#"{"v":1,"cmd":"reboot"}"#).contains("unknown cmd"));
        assert!(err(br#"{"v":2,"cmd":"status"}"#).contains("version"));
        assert!(err(br#"{"cmd":"status"}"#).starts_with("bad request"));
        assert!(err(br#"{"v":1,"cmd":"dump"}"#).contains("needs a pid"));
        assert!(err(br#"{"v":1,"cmd":"ps","sort":"size"}"#).contains("unknown sort"));
        assert!(err(br#"{"v":1,"cmd":"status","x":1}"#).contains("unknown field"));
        assert!(err(br#"{"v":1,"cmd":"status","pid":1}"#).contains("takes no such field"));
        let long = format!(r#"{{"v":1,"cmd":"status","sort":"{}"}}"#, "a".repeat(5000));
        assert!(err(long.as_bytes()).contains("longer than 4095"));
        // An error line is one JSON line.
        let e = error_line("a \"quoted\"\nthing");
        assert_eq!(e.matches('\n').count(), 1);
        let v: Value = serde_json::from_str(&e).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["error"], "a \"quoted\"\nthing");
    }

    #[test]
    fn peers_are_root_or_the_group() {
        assert!(allowed(0, 0, None, None));
        assert!(!allowed(1000, 1000, None, None));
        assert!(allowed(1000, 50, None, Some(50)));
        assert!(!allowed(1000, 1000, None, Some(50)));
    }

    #[test]
    fn stale_sockets_are_replaced_live_ones_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("mmtrace-control-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("run").join("m.sock");
        // Created 0600 (no group), its directory 0755.
        let mut l = Listener::bind(&path, "").unwrap();
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.join("run")), 0o755);
        // Live: refused.
        let live = l.take().unwrap();
        let e = Listener::bind(&path, "")
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("another mmtrace daemon"), "{e}");
        // A crash: the file stays, nothing listens: replaced.
        drop(live);
        std::mem::forget(l);
        assert!(path.exists());
        let l = Listener::bind(&path, "").unwrap();
        drop(l);
        assert!(!path.exists(), "removed at the stop");
        // Not a socket: refused, untouched.
        std::fs::write(&path, "x").unwrap();
        assert!(Listener::bind(&path, "").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
        // A directory others may write: refused.
        let open = dir.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Listener::bind(&open.join("m.sock"), "")
            .err()
            .expect("refused");
        assert!(e.to_string().contains("writable by others"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn long_request_lines_are_cut() {
        let (mut a, mut b) = tokio::net::UnixStream::pair().unwrap();
        let writer = tokio::spawn(async move {
            let _ = a.write_all(&[b'x'; 10_000]).await;
            a
        });
        let e = read_request(&mut b).await.unwrap_err();
        assert!(e.contains("longer than"), "{e}");
        drop(writer.await);
    }
}
