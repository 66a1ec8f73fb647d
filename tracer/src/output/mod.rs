//! The output stage of `mmtrace stream`: prints decoded events as human text
//! or as JSON lines.
//!
//! # Text
//!
//! One line per event, for humans, in aligned columns: seconds since the
//! start of the stream, comm, pid/tid, event name, details.
//!
//! ```text
//!   12.345678  python3         1234/1236   mmap      NULL 1.0 MiB rw- MAP_PRIVATE|MAP_ANONYMOUS = 0x7f3a12340000
//! ```
//!
//! Bytes from traced processes are escaped ([`names::escape_text`]), so they
//! can never send escape sequences to the terminal. With colour, the time is
//! dim, event names are coloured by family (syscalls, faults, process
//! events), errors and lost events are red; without it there are no escape
//! codes at all.
//!
//! # JSONL
//!
//! One JSON object per line; a stable interface, documented once: the
//! field table is in README.md ("JSON lines: a stable interface") and the
//! machine-readable form in `docs/jsonl-v1.schema.json`, which the tests
//! validate real streams against. Every line starts with `t_ns` (ns since
//! the start of the stream), `pid`, `tid`, `comm`, `event`.
//!
//! # Modules
//!
//! - `text` and `json`: one line per event.
//! - [`changes`]: one line per region change (`stream --regions`).
//! - [`timeline`]: the `mmtrace.timeline/v1` document of `record`.
//! - [`names`]: symbolic names (prot, flags, errno, signals), hex, sizes,
//!   escaping.

pub mod changes;
pub mod file;
pub mod html;
mod json;
pub mod names;
pub mod perfetto;
mod text;
pub mod timeline;
pub mod timeline2;

use std::io::{self, Write};

use crate::{event::Event, model::RegionChange};

use self::changes::Who;

/// The output format (also `--format`'s values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for humans.
    Text,
    /// One JSON object per line.
    Jsonl,
}

/// Prints events to `out`, one line each.
///
/// Each line is written with a single `write_all` (or, batched, whole lines
/// at once), so an error never leaves half a line behind from this side;
/// wrap `out` in a `BufWriter` for throughput and call [`Printer::flush`]
/// when the stream pauses or ends.
pub struct Printer<W: Write> {
    out: W,
    format: Format,
    color: bool,
    start_ns: u64,
    /// The lines being built, kept to reuse their allocation.
    text_buf: String,
    json_buf: Vec<u8>,
    /// Lines are kept in the buffers until they hold this many bytes (or
    /// [`Printer::flush`]); 0: each is written at once.
    batch: usize,
    /// Names of flags and sizes seen last (both formats).
    json_names: json::Names,
}

/// Lines still batched reach the writer, whatever ended the stream.
impl<W: Write> Drop for Printer<W> {
    fn drop(&mut self) {
        let _ = self.write_pending();
    }
}

impl<W: Write> Printer<W> {
    /// start_ns: CLOCK_MONOTONIC ns at stream start; event times print
    /// relative to it (saturating at 0). `color` applies to the text format
    /// only; JSON never holds escape codes.
    pub fn new(out: W, format: Format, color: bool, start_ns: u64) -> Self {
        Printer {
            out,
            format,
            color,
            start_ns,
            text_buf: String::new(),
            json_buf: Vec::new(),
            batch: 0,
            json_names: json::Names::default(),
        }
    }

    /// Keeps lines until they hold `bytes`, then writes them at once: one
    /// copy and one call per batch instead of per line. For a writer that
    /// takes any whole lines at once (a `BufWriter`), not one that counts
    /// its writes.
    #[must_use]
    pub fn batched(mut self, bytes: usize) -> Self {
        self.batch = bytes;
        self.text_buf.reserve(bytes + 4096);
        self.json_buf.reserve(bytes + 4096);
        self
    }

    /// Writes the lines built when the batch is full (unbatched: always).
    fn written(&mut self) -> io::Result<()> {
        let pending = self.text_buf.len() + self.json_buf.len();
        if pending == 0 || pending < self.batch {
            return Ok(());
        }
        self.write_pending()
    }

    fn write_pending(&mut self) -> io::Result<()> {
        // Only one buffer is used by a printer (its format); both are
        // cleared whatever the write did: what failed is not retried.
        let r = self
            .out
            .write_all(self.text_buf.as_bytes())
            .and_then(|()| self.out.write_all(&self.json_buf));
        self.text_buf.clear();
        self.json_buf.clear();
        r
    }

    /// Prints one event as one line.
    pub fn print(&mut self, ev: &Event) -> io::Result<()> {
        match self.format {
            Format::Text => text::format_event(
                &mut self.text_buf,
                ev,
                self.color,
                self.start_ns,
                &mut self.json_names,
            ),
            Format::Jsonl => {
                json::format_event(&mut self.json_buf, ev, self.start_ns, &mut self.json_names);
            }
        }
        self.written()
    }

    /// Prints the region changes `ev` made, one line each, at once.
    pub fn print_changes(&mut self, ev: &Event, changes: &[RegionChange]) -> io::Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let t_ns = ev.ts_ns.saturating_sub(self.start_ns);
        for c in changes {
            // A fork's child has lines of its own, under its own pid.
            let who = Who {
                t_ns,
                pid: c.pid,
                tid: if c.pid == ev.pid { ev.tid } else { c.pid },
                comm: &ev.comm,
            };
            match self.format {
                Format::Text => changes::text_line(&mut self.text_buf, &who, c, self.color),
                Format::Jsonl => changes::json_line(&mut self.json_buf, &who, c),
            }
        }
        self.written()
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.write_pending()?;
        self.out.flush()
    }

    /// Writes a line already rendered by a printer like this one (the
    /// daemon's, for `stream --connect`).
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.write_pending()?;
        self.out.write_all(line)
    }

    /// CLOCK_MONOTONIC ns where its times start.
    pub fn start_ns(&self) -> u64 {
        self.start_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Access, Body, MappedFile, StackSource, SysResult};
    use tracer_common::EventKind;

    fn all_bodies() -> Vec<Body> {
        vec![
            Body::Brk {
                requested: 0x6000,
                old_brk: Some(0x5000),
                new_brk: 0x6000,
                start_brk: 0,
            },
            Body::Mmap {
                addr: 0,
                len: 4096,
                prot: 3,
                flags: 0x22,
                fd: -1,
                offset: 0,
                ret: SysResult::Ok(0x7f0000000000),
                file: None,
            },
            Body::Mmap {
                addr: 0,
                len: 4096,
                prot: 5,
                flags: 0x2,
                fd: 3,
                offset: 0,
                ret: SysResult::Ok(0x7f0000000000),
                file: Some(MappedFile {
                    path: b"/lib/\x1b[31m\xff".to_vec(),
                    dev_major: 8,
                    dev_minor: 1,
                    ino: 2,
                    truncated: true,
                }),
            },
            Body::Munmap {
                addr: 0x1000,
                len: 4096,
                ret: SysResult::Err(22),
            },
            Body::Mremap {
                old_addr: 0x1000,
                old_len: 4096,
                new_len: 8192,
                flags: 3,
                new_addr: 0x9000,
                ret: SysResult::Ok(0x9000),
            },
            Body::Mprotect {
                addr: 0x1000,
                len: 4096,
                prot: 1,
                ret: SysResult::Ok(0),
            },
            Body::PkeyMprotect {
                addr: 0x1000,
                len: 4096,
                prot: 1,
                pkey: -1,
                ret: SysResult::Ok(0),
            },
            Body::Mlock {
                addr: 0x1000,
                len: 4096,
                ret: SysResult::Ok(0),
            },
            Body::Mlock2 {
                addr: 0x1000,
                len: 4096,
                flags: 1,
                ret: SysResult::Ok(0),
            },
            Body::Munlock {
                addr: 0x1000,
                len: 4096,
                ret: SysResult::Ok(0),
            },
            Body::Mlockall {
                flags: 3,
                ret: SysResult::Ok(0),
            },
            Body::Munlockall {
                ret: SysResult::Ok(0),
            },
            Body::Mseal {
                addr: 0x1000,
                len: 4096,
                flags: 0,
                ret: SysResult::Ok(0),
            },
            Body::Shmat {
                shmid: 7,
                addr: 0,
                flags: 0,
                ret: SysResult::Ok(0x7f00_0000_0000),
            },
            Body::Shmdt {
                addr: 0x7f00_0000_0000,
                ret: SysResult::Ok(0),
            },
            Body::RemapFilePages {
                addr: 0x1000,
                size: 4096,
                prot: 0,
                pgoff: 1,
                flags: 0,
                ret: SysResult::Ok(0),
            },
            Body::Fault {
                addr: 0x1000,
                ip: 0x401000,
                access: Access::Read,
                present: false,
            },
            Body::Stack {
                old_start: 0x7ffd0000,
                new_start: 0x7ffcf000,
                source: StackSource::Fault,
            },
            Body::Exec {
                path: b"/bin/\x1b]0;x\x07".to_vec(),
                old_pid: 5,
                start_time: 0,
                abi: None,
                cgroup: None,
            },
            Body::Fork {
                child_pid: 6,
                clone_flags: 0,
            },
            Body::Exit {
                status: 9,
                start_time: 0,
            },
            Body::OomKill { victim_pid: 7 },
            Body::Lost {
                count: 3,
                kind: Some(EventKind::Fault),
            },
            Body::FaultSummary {
                interval_ns: 1_000_000_000,
                read: 1,
                write: 2,
                exec: 3,
                present: 4,
            },
        ]
    }

    fn events() -> Vec<Event> {
        all_bodies()
            .into_iter()
            .enumerate()
            .map(|(i, body)| Event {
                ts_ns: 2_000_000_000 + i as u64 * 1_000,
                cpu: 0,
                pid: 5,
                tid: 5,
                comm: b"ev\x1b[2Jil\n\x9b".to_vec(),
                body,
                counters: None,
            })
            .collect()
    }

    fn run(format: Format, color: bool) -> Vec<u8> {
        let mut p = Printer::new(Vec::new(), format, color, 1_000_000_000);
        for ev in events() {
            p.print(&ev).unwrap();
        }
        p.flush().unwrap();
        std::mem::take(&mut p.out)
    }

    /// Batched, the same bytes reach the writer, at the flush or when the
    /// printer goes (an error ending the stream).
    #[test]
    fn batched_lines_are_all_written() {
        for format in [Format::Text, Format::Jsonl] {
            let mut out = Vec::new();
            let mut p = Printer::new(&mut out, format, false, 1_000_000_000).batched(1 << 20);
            for ev in events() {
                p.print(&ev).unwrap();
            }
            drop(p);
            assert_eq!(out, run(format, false));
        }
    }

    #[test]
    fn text_no_escapes_without_color() {
        let out = run(Format::Text, false);
        assert!(!out.contains(&0x1b));
        assert!(!out.contains(&0x07));
        assert!(!out.contains(&b'\r'));
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s.lines().count(), all_bodies().len());
        for line in s.lines() {
            assert!(line.starts_with("   1.000"), "{line}");
            assert!(!line.chars().any(char::is_control), "{line:?}");
        }
    }

    #[test]
    fn text_color_only_our_sgr() {
        let out = String::from_utf8(run(Format::Text, true)).unwrap();
        assert_eq!(out.lines().count(), all_bodies().len());
        for line in out.lines() {
            assert!(line.contains("\x1b["));
            // Every ESC starts an SGR sequence of ours: ESC [ digits/; m.
            for (i, _) in line.match_indices('\x1b') {
                let rest = &line[i + 2..];
                assert!(line[i + 1..].starts_with('['), "{line:?}");
                let end = rest.find('m').expect("SGR ends with m");
                assert!(rest[..end].chars().all(|c| c.is_ascii_digit() || c == ';'));
            }
        }
    }

    #[test]
    fn jsonl_valid_lines() {
        let out = run(Format::Jsonl, true);
        assert!(!out.contains(&0x1b), "JSON escapes ESC as \\u001b");
        let s = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), all_bodies().len());
        for (line, body) in lines.iter().zip(all_bodies()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["event"], body.name());
            assert_eq!(v["t_ns"].as_u64().unwrap() % 1_000, 0);
            assert_eq!(v["comm"], "ev\x1b[2Jil\n\u{fffd}");
            assert_eq!(v["comm_hex"], "65761b5b324a696c0a9b");
        }
    }

    #[test]
    fn write_errors_surface() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut p = Printer::new(Broken, Format::Jsonl, false, 0);
        let err = p.print(&events()[0]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
