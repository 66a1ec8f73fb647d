//! Region-change lines (`mmtrace stream --regions`): what each event did
//! to the traced processes' mappings, in text or as JSON lines.
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

use std::fmt::Write as _;

use anstyle::{AnsiColor, Color, Style};
use serde::Serialize;

use super::{
    names::{escape_text, hex, human_size, lossy},
    text::{seconds, styled},
};
use crate::model::{sig, Backing, Cause, ChangeOp, Op, Perms, Region, RegionChange};

/// Who a line is about.
pub struct Who<'a> {
    /// ns since the start.
    pub t_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: &'a [u8],
}

/// The region's kind when it had `perms` (only an anonymous region's
/// depends on them).
pub(crate) fn kind_at(r: &Region, perms: Perms) -> &'static str {
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
        Backing::Shm { path, .. } => path.clone(),
        Backing::Special(name) => Some(name.as_bytes().to_vec()),
    }
}

fn op_style(op: ChangeOp) -> Style {
    let color = match op {
        ChangeOp::Entry(Op::Born) => AnsiColor::Green,
        ChangeOp::Died => AnsiColor::Yellow,
        ChangeOp::Entry(_) => AnsiColor::Cyan,
    };
    Style::new().fg_color(Some(Color::Ansi(color)))
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
pub(super) fn text_line(out: &mut String, who: &Who, c: &RegionChange, color: bool) {
    let t = seconds(who.t_ns);
    styled(out, color, Style::new().dimmed(), &format!("{t:>11}"));
    let _ = write!(
        out,
        "  {:<15} {:<11} ",
        escape_text(who.comm),
        format!("{}/{}", who.pid, who.tid)
    );
    styled(
        out,
        color,
        op_style(c.op),
        &format!("region  {:<8}", c.op.as_str()),
    );
    let range = format!("{}-{}", hex(c.start), hex(c.end));
    let size = human_size(c.end.saturating_sub(c.start));
    match (c.op, c.old) {
        (ChangeOp::Entry(Op::Born), _) => {
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
        (ChangeOp::Died, _) => {
            let _ = write!(out, " {range} {size}");
        }
        (ChangeOp::Entry(Op::Move), Some(old)) => {
            let _ = write!(
                out,
                " {}-{} -> {range}{}",
                hex(old.0),
                hex(old.1),
                size_change(old, c.start, c.end)
            );
        }
        (ChangeOp::Entry(Op::Protect), _) => {
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
    cause: Option<Cause>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_end: Option<String>,
}

/// One JSON line (with its newline).
pub(super) fn json_line(out: &mut Vec<u8>, who: &Who, c: &RegionChange) {
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
        op: c.op.as_str(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::{Body, Event, SysResult},
        model::{
            apply::{apply_event, Applied},
            tracker::journal_changes,
            AddressSpace,
        },
        output::Format,
    };

    const P: u64 = crate::model::PAGE;

    fn ev(body: Body) -> Event {
        Event {
            ts_ns: 0,
            cpu: 0,
            pid: 7,
            tid: 8,
            comm: b"w\x1b".to_vec(),
            body,
            counters: None,
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
        format: Format,
    ) -> Vec<String> {
        let mut a = AddressSpace::new(u64::MAX);
        a.keep_journal();
        setup(&mut a);
        a.forget_dead();
        let before = a.journal().len();
        f(&mut a);
        let mut out = Vec::new();
        for c in journal_changes(7, &a, before) {
            match format {
                Format::Text => {
                    let mut s = String::new();
                    text_line(&mut s, &who(), &c, false);
                    out.push(s);
                }
                Format::Jsonl => {
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
        assert_eq!(apply_event(a, &e, 1, false), Applied::Done);
    }

    #[test]
    fn text_lines() {
        let born = lines(
            |_| {},
            |a| mmap(a, 0x7f0000000000, 1 << 20, 3),
            Format::Text,
        );
        assert_eq!(
            born,
            [
                "   1.500000  w\\x1b           7/8         region  born     \
              0x7f0000000000-0x7f0000100000 1.0 MiB rw-p anon (mmap)\n"
            ]
        );
        let setup = |a: &mut AddressSpace| mmap(a, 0x10000, 3 * P, 3);
        let protect = lines(setup, |a| a.mprotect(2, 0x11000, P, 1), Format::Text);
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
            Format::Text,
        );
        assert_eq!(
            moved.iter().map(|l| tail(l)).collect::<Vec<_>>(),
            ["region  move     0x10000-0x13000 -> 0x40000-0x44000 (+4.0 KiB)\n"]
        );
        let died = lines(setup, |a| a.munmap(2, 0x10000, 3 * P), Format::Text);
        assert_eq!(
            died.iter().map(|l| tail(l)).collect::<Vec<_>>(),
            ["region  died     0x10000-0x13000 12.0 KiB (munmap)\n"]
        );
    }

    #[test]
    fn merges_come_last() {
        let setup = |a: &mut AddressSpace| mmap(a, 0x20000, P, 3);
        let l = lines(setup, |a| mmap(a, 0x1f000, P, 3), Format::Text);
        let ops: Vec<&str> = l.iter().map(|l| tail(l)[8..16].trim()).collect();
        assert_eq!(ops, ["born", "merge", "died"], "{l:?}");
        assert!(l[1].contains("0x1f000-0x21000 (+4.0 KiB)"), "{l:?}");
    }

    #[test]
    fn json_lines() {
        let setup = |a: &mut AddressSpace| mmap(a, 0x10000, 3 * P, 3);
        let l = lines(setup, |a| a.munmap(2, 0x12000, P), Format::Jsonl);
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

        let born = lines(|_| {}, |a| a.seed(0, &[heap()], Cause::Exec), Format::Jsonl);
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
            Format::Jsonl,
        );
        let v: serde_json::Value = serde_json::from_str(&l[0]).unwrap();
        assert_eq!(
            (v["op"].as_str(), v["kind"].as_str()),
            (Some("protect"), Some("anon"))
        );
        let l = lines(|_| {}, |a| mmap(a, 0x10000, P, 0), Format::Jsonl);
        let v: serde_json::Value = serde_json::from_str(&l[0]).unwrap();
        assert_eq!(v["kind"], "guard");
    }
}
