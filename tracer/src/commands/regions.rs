//! `mmtrace stream --regions`: the traced processes' mappings as they
//! change, one line per change, instead of the raw events.
//!
//! Each process has an [`AddressSpace`], kept as `mmtrace record` keeps it:
//! seeded from /proc/PID/maps at first sight, copied at fork, reseeded at
//! exec, ended at exit; every memory event goes through
//! [`apply_event`]. After each event, the changes it made are printed: the
//! new entries of the regions' histories (`born`, `grow`, `shrink`,
//! `split`, `protect`, `move`, `merge`, `advise`) and the regions that died.
//! A process found running has its regions born (`proc`) at first sight, a
//! child its copies (`fork`, under its own pid); a command started with
//! `-- CMD` is stopped at exec until its address space is read. Unlike
//! `record`, nothing is checked against /proc afterwards: after lost events
//! the model may be out of step.
//!
//! ```text
//!    0.004211  workload        834/834     region  born     0x7f2613617000-0x7f2613717000 1.0 MiB rw-p anon (mmap)
//!    0.004377  workload        834/834     region  protect  0x7f2613711000-0x7f2613712000 r--p
//!    0.004390  workload        834/834     region  died     0x7f2613716000-0x7f2613718000 8.0 KiB (munmap)
//! ```
//!
//! JSON lines have `t_ns`, `pid`, `tid`, `comm` (and `comm_hex`), `event`
//! (`"region"`), `op`, `region` (the region's id, unique within the
//! process), `start`, `end`, `perms`, `kind`, `path` (when the region has
//! one, with `path_hex` for invalid UTF-8), `cause` (for `born` and `died`:
//! the timeline's `born_by`, `died_by`), and for `grow`, `shrink`, `split`,
//! `move` and `merge` the range before the change, `old_start` and
//! `old_end`.
//!
//! Fault summaries and lost events print as in the raw stream (by
//! [`StreamSink`], which this wraps); individual faults (`--faults all`)
//! only feed the model.

use std::{
    cell::RefCell,
    collections::HashMap,
    fmt::Write as _,
    io::{self, Write},
    rc::Rc,
};

use anstyle::{AnsiColor, Color, Style};
use serde::Serialize;
use tracer_common::EventKind;

use crate::{
    commands::stream::StreamSink,
    event::{Body, Event},
    kernel::{clock, Hooks},
    model::{apply::apply_event, maps, sig, AddressSpace, Backing, Cause, Journal, Perms, Region},
    output::{
        self,
        names::{escape_text, hex, human_size, lossy},
    },
    session::Sink,
};

/// One output shared by the raw printer (fault summaries, lost events) and
/// the region lines, so that their order is kept.
#[derive(Clone)]
struct SharedOut(Rc<RefCell<Box<dyn Write>>>);

impl Write for SharedOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.borrow_mut().write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

struct Proc {
    space: AddressSpace,
    /// Events stamped before this (CLOCK_MONOTONIC) are already in the
    /// snapshot the process was seeded from.
    seeded_until: u64,
}

/// Where the model's journal stood before an event.
type Mark = usize;

fn mark(space: &AddressSpace) -> Mark {
    space.journal().len()
}

/// Who a line is about.
struct Who<'a> {
    t_ns: u64,
    pid: u32,
    tid: u32,
    comm: &'a [u8],
}

/// One region change to print.
struct Change<'a> {
    op: &'static str,
    region: &'a Region,
    start: u64,
    end: u64,
    perms: Perms,
    /// The range before the change.
    old: Option<(u64, u64)>,
    cause: Option<Cause>,
}

pub struct RegionSink {
    stream: StreamSink,
    out: SharedOut,
    format: output::Format,
    color: bool,
    start_ns: u64,
    procs: HashMap<u32, Proc>,
    /// The held command is stopped at exec until we continue it.
    exec_stop: bool,
    /// The lines of one event, written at once.
    buf: Vec<u8>,
}

impl RegionSink {
    pub fn new(
        out: Box<dyn Write>,
        format: output::Format,
        color: bool,
        fault_mode: u32,
        exec_stop: bool,
    ) -> RegionSink {
        let out = SharedOut(Rc::new(RefCell::new(out)));
        RegionSink {
            stream: StreamSink::new(Box::new(out.clone()), format, color, fault_mode),
            out,
            format,
            color,
            start_ns: 0,
            procs: HashMap::new(),
            exec_stop,
            buf: Vec::new(),
        }
    }

    /// Fault counts summarised, for the closing tally.
    pub fn summarised_faults(&self) -> u64 {
        self.stream.summarised_faults()
    }

    fn rel(&self, mono: u64) -> u64 {
        mono.saturating_sub(self.start_ns)
    }

    /// Makes sure `pid` has a model, seeding a new one from /proc when
    /// `seed`. Returns its regions as they were before.
    fn proc_for(&mut self, pid: u32, seed: bool) -> Mark {
        if let Some(p) = self.procs.get(&pid) {
            return mark(&p.space);
        }
        // Faults attributed in one bucket: the stream keeps no timeline.
        let mut p = Proc {
            space: AddressSpace::new(u64::MAX),
            seeded_until: 0,
        };
        p.space.keep_journal();
        if seed {
            let now = clock::monotonic_ns();
            // Gone already or unreadable: its events still build a model.
            if let Ok(seeds) = maps::read(pid) {
                p.space.seed(self.rel(now), &seeds, "proc");
                p.seeded_until = clock::monotonic_ns();
            }
        }
        self.procs.insert(pid, p);
        0
    }

    /// Prints what changed in `pid`'s regions since `before`, then forgets
    /// its dead regions.
    fn report(&mut self, pid: u32, before: &Mark, who: &Who) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        let changes = changes(&p.space, before);
        if !changes.is_empty() && !self.stream.output_closed() {
            self.buf.clear();
            for c in &changes {
                match self.format {
                    output::Format::Text => {
                        let mut s = String::new();
                        text_line(&mut s, who, c, self.color);
                        self.buf.extend_from_slice(s.as_bytes());
                    }
                    output::Format::Jsonl => json_line(&mut self.buf, who, c),
                }
            }
            if let Err(e) = self.out.write_all(&self.buf) {
                self.stream.note_output_error(e);
            }
        }
        p.space.forget_dead();
    }

    fn apply(&mut self, ev: &Event) {
        let t = self.rel(ev.ts_ns);
        let who = Who {
            t_ns: t,
            pid: ev.pid,
            tid: ev.tid,
            comm: &ev.comm,
        };
        match &ev.body {
            Body::Fork { child_pid, .. } => {
                let before = self.proc_for(ev.pid, true);
                self.report(ev.pid, &before, &who);
                let space = self.procs[&ev.pid].space.fork_copy(t);
                // A pid still held is a process gone unseen (lost events).
                self.procs.insert(
                    *child_pid,
                    Proc {
                        space,
                        seeded_until: 0,
                    },
                );
                let child = Who {
                    pid: *child_pid,
                    tid: *child_pid,
                    ..who
                };
                self.report(*child_pid, &0, &child);
            }
            Body::Exec { .. } => {
                // What was there before is gone: no need to read it.
                let before = self.proc_for(ev.pid, false);
                let p = self.procs.get_mut(&ev.pid).expect("just made");
                p.space.end_all(t, "exec");
                if let Ok(seeds) = maps::read(ev.pid) {
                    p.space.seed(t, &seeds, "exec");
                    p.seeded_until = clock::monotonic_ns();
                }
                if self.exec_stop {
                    // Stopped by the kernel at exec: let it run.
                    // SAFETY: signalling a traced process.
                    unsafe { libc::kill(ev.pid as i32, libc::SIGCONT) };
                }
                self.report(ev.pid, &before, &who);
            }
            Body::Exit { .. } => {
                if let Some(p) = self.procs.get_mut(&ev.pid) {
                    let before = mark(&p.space);
                    p.space.end_all(t, "exit");
                    self.report(ev.pid, &before, &who);
                    self.procs.remove(&ev.pid);
                }
            }
            _ => {
                // A fault changes no region: no need to look for changes
                // (there are many).
                let quiet =
                    matches!(ev.body, Body::Fault { .. }) && self.procs.contains_key(&ev.pid);
                let before = if quiet {
                    0
                } else {
                    self.proc_for(ev.pid, true)
                };
                let p = self.procs.get_mut(&ev.pid).expect("just made");
                let before_seed = ev.ts_ns < p.seeded_until;
                if !apply_event(&mut p.space, ev, t, before_seed) {
                    log::debug!("pid {}: no region for {:?}", ev.pid, ev.body);
                }
                if !quiet {
                    self.report(ev.pid, &before, &who);
                }
            }
        }
    }
}

/// The changes since `before`, in print order: births, deaths and changes
/// first, then merges (which the kernel makes last) and the regions they
/// absorbed.
fn changes<'a>(space: &'a AddressSpace, before: &Mark) -> Vec<Change<'a>> {
    let mut out = Vec::new();
    let mut merges = Vec::new();
    let mut merged = Vec::new();
    let mut last = None;
    for j in space.journal().iter().skip(*before) {
        // The same entry twice (rewritten in place): report it once.
        if last == Some(*j) {
            continue;
        }
        last = Some(*j);
        match *j {
            Journal::Change { region, entry } => {
                let r = &space.regions[region];
                let Some(c) = r.history.get(entry) else {
                    continue;
                };
                let prev = entry.checked_sub(1).map(|k| &r.history[k]);
                let old = match c.op {
                    "grow" | "shrink" | "split" | "move" | "merge" => {
                        prev.map(|p| (p.start, p.end))
                    }
                    _ => None,
                };
                let change = Change {
                    op: c.op,
                    region: r,
                    start: c.start,
                    end: c.end,
                    perms: c.perms,
                    old,
                    cause: (c.op == "born").then_some(r.born_by),
                };
                if c.op == "merge" {
                    merges.push(change);
                } else {
                    out.push(change);
                }
            }
            Journal::Died { region } => {
                let r = &space.regions[region];
                let Some(cause) = r.died_by else {
                    continue;
                };
                let change = Change {
                    op: "died",
                    region: r,
                    start: r.start,
                    end: r.end,
                    perms: r.perms,
                    old: None,
                    cause: Some(cause),
                };
                if cause == "merge" {
                    merged.push(change);
                } else {
                    out.push(change);
                }
            }
        }
    }
    out.append(&mut merges);
    out.append(&mut merged);
    out
}

/// The region's kind when it had `perms` (only an anonymous region's
/// depends on them).
fn kind_at(r: &Region, perms: Perms) -> &'static str {
    if perms == r.perms || r.backing != Backing::Anon {
        return r.kind();
    }
    if !perms.read && !perms.write && !perms.exec {
        "guard"
    } else if r.sig & sig::MAP_STACK != 0 {
        "thread_stack"
    } else {
        "anon"
    }
}

/// The path column of /proc/PID/maps, as bytes.
fn path_of(r: &Region) -> Option<Vec<u8>> {
    match &r.backing {
        Backing::Anon => None,
        Backing::Heap => Some(b"[heap]".to_vec()),
        Backing::Stack => Some(b"[stack]".to_vec()),
        Backing::File { path, .. } => Some(path.clone()),
        Backing::Shm { path } => path.clone(),
        Backing::Special(name) => Some(name.as_bytes().to_vec()),
    }
}

fn op_style(op: &str) -> Style {
    let color = match op {
        "born" => AnsiColor::Green,
        "died" => AnsiColor::Yellow,
        _ => AnsiColor::Cyan,
    };
    Style::new().fg_color(Some(Color::Ansi(color)))
}

fn styled(out: &mut String, color: bool, style: Style, text: &str) {
    if color {
        let _ = write!(out, "{}{text}{}", style.render(), style.render_reset());
    } else {
        out.push_str(text);
    }
}

/// " (+4.0 KiB)", " (-4.0 KiB)", or nothing when the size is the same.
fn size_change(old: (u64, u64), start: u64, end: u64) -> String {
    let (was, is) = (old.1.saturating_sub(old.0), end.saturating_sub(start));
    match is.cmp(&was) {
        std::cmp::Ordering::Greater => format!(" (+{})", human_size(is - was)),
        std::cmp::Ordering::Less => format!(" (-{})", human_size(was - is)),
        std::cmp::Ordering::Equal => String::new(),
    }
}

/// One text line (with its newline), aligned like the raw stream's.
fn text_line(out: &mut String, who: &Who, c: &Change, color: bool) {
    let t = format!(
        "{}.{:06}",
        who.t_ns / 1_000_000_000,
        who.t_ns % 1_000_000_000 / 1_000
    );
    styled(out, color, Style::new().dimmed(), &format!("{t:>11}"));
    let _ = write!(
        out,
        "  {:<15} {:<11} ",
        escape_text(who.comm),
        format!("{}/{}", who.pid, who.tid)
    );
    styled(out, color, op_style(c.op), &format!("region  {:<8}", c.op));
    let range = format!("{}-{}", hex(c.start), hex(c.end));
    let size = human_size(c.end.saturating_sub(c.start));
    match (c.op, c.old) {
        ("born", _) => {
            let _ = write!(
                out,
                " {range} {size} {} {}",
                c.perms.as_string(),
                kind_at(c.region, c.perms)
            );
            if let Some(path) = path_of(c.region) {
                let _ = write!(out, " {}", escape_text(&path));
            }
        }
        ("died", _) => {
            let _ = write!(out, " {range} {size}");
        }
        ("move", Some(old)) => {
            let _ = write!(
                out,
                " {}-{} -> {range}{}",
                hex(old.0),
                hex(old.1),
                size_change(old, c.start, c.end)
            );
        }
        ("protect", _) => {
            let _ = write!(out, " {range} {}", c.perms.as_string());
        }
        (_, Some(old)) => {
            let _ = write!(out, " {range}{}", size_change(old, c.start, c.end));
        }
        (_, None) => {
            let _ = write!(out, " {range}");
        }
    }
    if let Some(cause) = c.cause {
        let _ = write!(out, " ({cause})");
    }
    out.push('\n');
}

/// Raw bytes as a string, plus their hex when they are not valid UTF-8.

#[derive(Serialize)]
struct JsonLine {
    t_ns: u64,
    pid: u32,
    tid: u32,
    comm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    comm_hex: Option<String>,
    event: &'static str,
    op: &'static str,
    region: u64,
    start: String,
    end: String,
    perms: String,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_hex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_end: Option<String>,
}

/// One JSON line (with its newline).
fn json_line(out: &mut Vec<u8>, who: &Who, c: &Change) {
    let (comm, comm_hex) = lossy(who.comm);
    let (path, path_hex) = match path_of(c.region) {
        Some(p) => {
            let (p, h) = lossy(&p);
            (Some(p), h)
        }
        None => (None, None),
    };
    let line = JsonLine {
        t_ns: who.t_ns,
        pid: who.pid,
        tid: who.tid,
        comm,
        comm_hex,
        event: "region",
        op: c.op,
        region: c.region.id,
        start: hex(c.start),
        end: hex(c.end),
        perms: c.perms.as_string(),
        kind: kind_at(c.region, c.perms),
        path,
        path_hex,
        cause: c.cause,
        old_start: c.old.map(|o| hex(o.0)),
        old_end: c.old.map(|o| hex(o.1)),
    };
    // Serializing plain strings and numbers cannot fail.
    let _ = serde_json::to_writer(&mut *out, &line);
    out.push(b'\n');
}

impl Sink for RegionSink {
    fn started(&mut self, start_ns: u64, hooks: &Hooks) {
        self.start_ns = start_ns;
        self.stream.started(start_ns, hooks);
    }

    fn event(&mut self, ev: Event, hooks: &mut Hooks) {
        // A process's last fault summary comes before its regions die.
        self.stream.before_event(&ev, hooks);
        self.apply(&ev);
    }

    fn lost(&mut self, kind: EventKind, count: u64, now_ns: u64) {
        self.stream.lost(kind, count, now_ns);
    }

    fn tick(&mut self, hooks: &mut Hooks) {
        self.stream.tick(hooks);
    }

    fn flush(&mut self) -> bool {
        self.stream.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SysResult;

    const P: u64 = crate::model::PAGE;

    fn ev(body: Body) -> Event {
        Event {
            ts_ns: 0,
            cpu: 0,
            pid: 7,
            tid: 8,
            comm: b"w\x1b".to_vec(),
            body,
        }
    }

    fn who() -> Who<'static> {
        Who {
            t_ns: 1_500_000_000,
            pid: 7,
            tid: 8,
            comm: b"w\x1b",
        }
    }

    /// The lines `f` makes in a space that has `setup` done.
    fn lines(
        setup: impl Fn(&mut AddressSpace),
        f: impl Fn(&mut AddressSpace),
        format: output::Format,
    ) -> Vec<String> {
        let mut a = AddressSpace::new(u64::MAX);
        a.keep_journal();
        setup(&mut a);
        a.forget_dead();
        let before = mark(&a);
        f(&mut a);
        let mut out = Vec::new();
        for c in changes(&a, &before) {
            match format {
                output::Format::Text => {
                    let mut s = String::new();
                    text_line(&mut s, &who(), &c, false);
                    out.push(s);
                }
                output::Format::Jsonl => {
                    let mut v = Vec::new();
                    json_line(&mut v, &who(), &c);
                    out.push(String::from_utf8(v).unwrap());
                }
            }
        }
        out
    }

    /// A text line without time, comm and pid/tid (41 columns).
    fn tail(line: &str) -> &str {
        assert_eq!(&line[..41], "   1.500000  w\\x1b           7/8         ");
        &line[41..]
    }

    fn mmap(a: &mut AddressSpace, addr: u64, len: u64, prot: u64) {
        let e = ev(Body::Mmap {
            addr: 0,
            len,
            prot,
            flags: 0x22,
            fd: -1,
            offset: 0,
            ret: SysResult::Ok(addr),
            file: None,
        });
        assert!(apply_event(a, &e, 1, false));
    }

    #[test]
    fn text_lines() {
        let born = lines(
            |_| {},
            |a| mmap(a, 0x7f0000000000, 1 << 20, 3),
            output::Format::Text,
        );
        assert_eq!(
            born,
            [
                "   1.500000  w\\x1b           7/8         region  born     \
              0x7f0000000000-0x7f0000100000 1.0 MiB rw-p anon (mmap)\n"
            ]
        );
        let setup = |a: &mut AddressSpace| mmap(a, 0x10000, 3 * P, 3);
        let protect = lines(
            setup,
            |a| a.mprotect(2, 0x11000, P, 1),
            output::Format::Text,
        );
        let tails: Vec<&str> = protect.iter().map(|l| tail(l)).collect();
        assert_eq!(
            tails,
            [
                "region  split    0x10000-0x11000 (-8.0 KiB)\n",
                "region  born     0x11000-0x13000 8.0 KiB rw-p anon (split)\n",
                "region  split    0x11000-0x12000 (-4.0 KiB)\n",
                "region  born     0x12000-0x13000 4.0 KiB rw-p anon (split)\n",
                "region  protect  0x11000-0x12000 r--p\n",
            ]
        );
        let moved = lines(
            setup,
            |a| a.mremap(2, 0x10000, 3 * P, 4 * P, 1, 0x40000),
            output::Format::Text,
        );
        assert_eq!(
            moved.iter().map(|l| tail(l)).collect::<Vec<_>>(),
            ["region  move     0x10000-0x13000 -> 0x40000-0x44000 (+4.0 KiB)\n"]
        );
        let died = lines(setup, |a| a.munmap(2, 0x10000, 3 * P), output::Format::Text);
        assert_eq!(
            died.iter().map(|l| tail(l)).collect::<Vec<_>>(),
            ["region  died     0x10000-0x13000 12.0 KiB (munmap)\n"]
        );
    }

    #[test]
    fn merges_come_last() {
        let setup = |a: &mut AddressSpace| mmap(a, 0x20000, P, 3);
        let l = lines(setup, |a| mmap(a, 0x1f000, P, 3), output::Format::Text);
        let ops: Vec<&str> = l.iter().map(|l| tail(l)[8..16].trim()).collect();
        assert_eq!(ops, ["born", "merge", "died"], "{l:?}");
        assert!(l[1].contains("0x1f000-0x21000 (+4.0 KiB)"), "{l:?}");
    }

    #[test]
    fn json_lines() {
        let setup = |a: &mut AddressSpace| mmap(a, 0x10000, 3 * P, 3);
        let l = lines(setup, |a| a.munmap(2, 0x12000, P), output::Format::Jsonl);
        assert_eq!(l.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&l[0]).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "t_ns": 1_500_000_000u64, "pid": 7, "tid": 8, "comm": "w\u{1b}",
                "event": "region", "op": "shrink", "region": 1,
                "start": "0x10000", "end": "0x12000", "perms": "rw-p", "kind": "anon",
                "old_start": "0x10000", "old_end": "0x13000",
            })
        );
        // The common fields first, in the raw stream's order.
        let head = r#"{"t_ns":1500000000,"pid":7,"tid":8,"comm":"w\u001b","event":"region","op":"shrink","region":1,"#;
        assert!(l[0].starts_with(head), "{}", l[0]);

        let born = lines(
            |_| {},
            |a| a.seed(0, &[heap()], "exec"),
            output::Format::Jsonl,
        );
        let v: serde_json::Value = serde_json::from_str(&born[0]).unwrap();
        assert_eq!(v["op"], "born");
        assert_eq!(v["cause"], "exec");
        assert_eq!(v["kind"], "heap");
        assert_eq!(v["path"], "[heap]");
        assert!(v.get("old_start").is_none());
    }

    fn heap() -> crate::model::Seed {
        crate::model::Seed {
            start: 0x5000,
            end: 0x9000,
            perms: Perms::from_prot(3, false),
            offset: 0,
            backing: Backing::Heap,
        }
    }

    #[test]
    fn guard_kind_follows_the_history() {
        let setup = |a: &mut AddressSpace| mmap(a, 0x10000, P, 0);
        let l = lines(
            setup,
            |a| {
                a.mprotect(2, 0x10000, P, 3);
            },
            output::Format::Jsonl,
        );
        let v: serde_json::Value = serde_json::from_str(&l[0]).unwrap();
        assert_eq!(
            (v["op"].as_str(), v["kind"].as_str()),
            (Some("protect"), Some("anon"))
        );
        let l = lines(|_| {}, |a| mmap(a, 0x10000, P, 0), output::Format::Jsonl);
        let v: serde_json::Value = serde_json::from_str(&l[0]).unwrap();
        assert_eq!(v["kind"], "guard");
    }
}
