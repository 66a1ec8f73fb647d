//! `mmtrace report TIMELINE --html OUT.html`: one self-contained page (no
//! network: its script, style and data are inline) that draws each
//! process's address space over time on a canvas, its memory curves, and
//! the text report's tables.
//!
//! [`Collector`] sees every record of a v2 timeline as `report` reads it
//! (one pass). The page necessarily holds every region it draws, so the
//! regions kept are capped ([`MAX_REGIONS`]), and so are the changes kept
//! per region and in all, and the counter samples per process (thinned,
//! evenly, beyond [`MAX_SAMPLES`]); what was left out is counted and said on
//! the page (and by the caller, on stderr), never silently.
//!
//! The data is JSON in a `<script type="application/json">` block, with
//! `<`, `>` and `&` written as `\u003c`, `\u003e`, `\u0026` so no string
//! from the timeline (a comm, a path) can close the block; the page's
//! script puts strings into the document as text, never as markup.

use std::collections::HashMap;
use std::io::{self, Write};

use serde_json::{json, Value};

use super::timeline2::{self as v2, Record, RegionOp};

/// Regions drawn at most, in all processes.
pub const MAX_REGIONS: usize = 200_000;
/// Changes kept per region (for the tooltip and the extents drawn); later
/// extent changes widen the last kept one.
pub const MAX_CHANGES_PER_REGION: usize = 1024;
/// Changes kept in all.
pub const MAX_CHANGES: usize = 1_000_000;
/// Counter samples kept per process; beyond, they are thinned evenly.
pub const MAX_SAMPLES: usize = 4096;

/// One region as the page draws it.
struct HRegion {
    id: u64,
    born: u64,
    died: Option<u64>,
    kind: String,
    path: Option<u32>,
    perms: String,
    born_by: String,
    died_by: Option<String>,
    /// faults: total, read, write, exec, touched bytes, mapped bytes.
    faults: [u64; 6],
    /// (t, op, start, end, perms): its birth and changes.
    changes: Vec<(u64, String, u64, u64, String)>,
    /// Changes not kept (their extents are folded into the last kept one).
    more: u64,
}

#[derive(Default)]
struct HProc {
    proc: u64,
    pid: u32,
    ppid: Option<u32>,
    comm: String,
    exe: Option<String>,
    first: Option<u64>,
    exit: Option<u64>,
    exit_text: Option<String>,
    regions: Vec<HRegion>,
    open: HashMap<u64, HRegion>,
    /// t, mapped, heap, stack, rss (or -1), faults.
    samples: Vec<[i64; 6]>,
    /// Keep one sample in `stride`.
    stride: u64,
    seen_samples: u64,
    uncertain: Vec<(u64, Option<u64>)>,
    /// Times of its execs (at most 64 kept).
    execs: Vec<u64>,
    drift: u64,
    peak_mapped: u64,
    /// When the OOM killer chose it (its exit record says).
    oom_kill_ns: Option<u64>,
    /// The report's section on that kill (what grew, the curves).
    oom: Option<String>,
}

/// What the page holds and what it left out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HtmlStats {
    pub processes: u64,
    pub regions: u64,
    /// Regions not drawn ([`MAX_REGIONS`]).
    pub regions_left_out: u64,
    pub changes_left_out: u64,
    /// Processes whose counter samples were thinned.
    pub samples_thinned: u64,
}

/// Gathers what the page draws, one record at a time.
#[derive(Default)]
pub struct Collector {
    procs: HashMap<u64, HProc>,
    paths: Vec<String>,
    path_ids: HashMap<String, u32>,
    kept_regions: usize,
    kept_changes: usize,
    stats: HtmlStats,
    duration: u64,
}

fn name_of<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

fn addr(s: &str) -> u64 {
    s.strip_prefix("0x")
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0)
}

impl Collector {
    pub fn new() -> Collector {
        Collector::default()
    }

    fn proc_of(&mut self, proc: u64, pid: u32) -> &mut HProc {
        self.procs.entry(proc).or_insert_with(|| HProc {
            proc,
            pid,
            stride: 1,
            ..HProc::default()
        })
    }

    fn path_id(&mut self, path: &str) -> u32 {
        if let Some(&id) = self.path_ids.get(path) {
            return id;
        }
        let id = u32::try_from(self.paths.len()).unwrap_or(u32::MAX);
        self.paths.push(path.to_string());
        self.path_ids.insert(path.to_string(), id);
        id
    }

    /// One record of the timeline, in order.
    pub fn observe(&mut self, rec: &Record) {
        match rec {
            Record::Process(p) => {
                let hp = self.proc_of(p.proc, p.pid);
                hp.ppid = p.ppid;
                hp.comm.clone_from(&p.comm);
                if p.exe.is_some() {
                    hp.exe.clone_from(&p.exe);
                }
                hp.first = Some(hp.first.map_or(p.t_ns, |f| f.min(p.t_ns)));
                let exec = p.event == v2::ProcessEvent::Exec
                    || (p.event == v2::ProcessEvent::Start
                        && p.seeded_by == Some(crate::model::SeededBy::Exec));
                if exec && hp.execs.len() < 64 {
                    hp.execs.push(p.t_ns);
                }
                if p.oom_kill_ns.is_some() {
                    hp.oom_kill_ns = p.oom_kill_ns;
                }
                if p.event == v2::ProcessEvent::Exit {
                    hp.exit = Some(p.t_ns);
                    hp.exit_text = Some(match (&p.exit_signal, p.exit_code) {
                        (Some(sig), _) => format!("killed by {sig}"),
                        (None, Some(code)) => format!("exited with code {code}"),
                        (None, None) => "exited".to_string(),
                    });
                }
                self.duration = self.duration.max(p.t_ns);
            }
            Record::Region(r) => {
                self.duration = self.duration.max(r.t_ns);
                self.region(r);
            }
            Record::Counters(c) => {
                let hp = self.proc_of(c.proc, c.pid);
                hp.seen_samples += 1;
                hp.peak_mapped = hp.peak_mapped.max(c.mapped);
                if !(hp.seen_samples - 1).is_multiple_of(hp.stride) {
                    return;
                }
                let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                hp.samples.push([
                    i(c.t_ns),
                    i(c.mapped),
                    i(c.heap),
                    i(c.stack),
                    c.rss.map_or(-1, i),
                    i(c.faults),
                ]);
                if hp.samples.len() >= MAX_SAMPLES {
                    // Keep every other one, and one in twice as many from now.
                    let kept: Vec<[i64; 6]> = hp.samples.iter().step_by(2).copied().collect();
                    hp.samples = kept;
                    hp.stride *= 2;
                }
            }
            Record::Uncertain(u) => {
                let hp = self.proc_of(u.proc, u.pid);
                // (Bounded: the page shades the first 1000.)
                if hp.uncertain.len() < 1000 {
                    hp.uncertain.push((u.from_ns, u.to_ns));
                }
            }
            Record::Drift(d) => self.proc_of(d.proc, d.pid).drift += 1,
            Record::End(e) => self.duration = self.duration.max(e.duration_ns),
            Record::Header(_) | Record::Check(_) | Record::Lost(_) => {}
        }
    }

    fn region(&mut self, r: &v2::RegionRecord) {
        let (start, end) = (addr(&r.start), addr(&r.end));
        let op = name_of(&r.op);
        if r.op == RegionOp::Born {
            if self.kept_regions >= MAX_REGIONS {
                self.stats.regions_left_out += 1;
                return;
            }
            self.kept_regions += 1;
            let b = r.born.as_ref();
            let path = b.and_then(|b| b.path.as_deref()).map(|p| self.path_id(p));
            let region = HRegion {
                id: r.region,
                born: r.t_ns,
                died: None,
                kind: b.map_or("anon", |b| b.kind.as_str()).to_string(),
                path,
                perms: r.perms.clone(),
                born_by: r.cause.as_ref().map(name_of).unwrap_or_default(),
                died_by: None,
                faults: [0; 6],
                changes: vec![(r.t_ns, op, start, end, r.perms.clone())],
                more: 0,
            };
            self.kept_changes += 1;
            let hp = self.proc_of(r.proc, r.pid);
            hp.first = Some(hp.first.map_or(r.t_ns, |f| f.min(r.t_ns)));
            hp.open.insert(r.region, region);
            return;
        }
        let room = self.kept_changes < MAX_CHANGES;
        let Some(hp) = self.procs.get_mut(&r.proc) else {
            return;
        };
        // A region left out at its birth is left out whole.
        let Some(reg) = hp.open.get_mut(&r.region) else {
            return;
        };
        reg.perms.clone_from(&r.perms);
        if matches!(reg.kind.as_str(), "anon" | "guard") {
            reg.kind = if reg.perms.starts_with("---") {
                "guard"
            } else {
                "anon"
            }
            .to_string();
        }
        let extent = reg.changes.last().map(|c| (c.2, c.3));
        match r.op {
            RegionOp::Died | RegionOp::End => {
                if let Some(f) = &r.faults {
                    reg.faults = [
                        f.total,
                        f.read,
                        f.write,
                        f.exec,
                        f.touched_bytes,
                        f.mapped_bytes,
                    ];
                }
                // Its last extent, if the record says otherwise.
                if extent != Some((start, end)) {
                    if let Some(last) = reg.changes.last_mut() {
                        last.2 = start;
                        last.3 = end;
                    }
                }
                let Some(mut reg) = hp.open.remove(&r.region) else {
                    return;
                };
                if r.op == RegionOp::Died {
                    reg.died = Some(r.t_ns.max(reg.born));
                    reg.died_by = Some(r.cause.as_ref().map_or("munmap".into(), name_of));
                }
                // A /proc snapshot dropped at the exec it came just after
                // (see `report`): not part of the picture.
                if reg.born_by == "proc"
                    && reg.died_by.as_deref() == Some("exec")
                    && reg.died == Some(reg.born)
                {
                    self.kept_regions -= 1;
                    return;
                }
                hp.regions.push(reg);
            }
            _ => {
                if reg.changes.len() < MAX_CHANGES_PER_REGION && room {
                    reg.changes.push((r.t_ns, op, start, end, r.perms.clone()));
                    self.kept_changes += 1;
                } else {
                    reg.more += 1;
                    self.stats.changes_left_out += 1;
                    if let Some(last) = reg.changes.last_mut() {
                        last.2 = last.2.min(start);
                        last.3 = last.3.max(end);
                    }
                }
            }
        }
    }

    /// The text report's section on the OOM kill of `proc`, shown above
    /// its picture.
    pub fn oom_section(&mut self, proc: u64, text: String) {
        if let Some(p) = self.procs.get_mut(&proc) {
            p.oom = Some(text);
        }
    }

    /// Writes the page: `header` is the text report's header, `sections`
    /// each process's section of it, by `proc`.
    pub fn write(
        mut self,
        out: &mut dyn Write,
        title: &str,
        header: &str,
        sections: &HashMap<u64, String>,
        incomplete: bool,
    ) -> io::Result<HtmlStats> {
        let mut procs: Vec<HProc> = self.procs.drain().map(|(_, p)| p).collect();
        for p in &mut procs {
            let mut open: Vec<HRegion> = p.open.drain().map(|(_, r)| r).collect();
            open.sort_by_key(|r| r.id);
            p.regions.append(&mut open);
            p.regions.sort_by_key(|r| (r.born, r.id));
        }
        // The biggest first: peak mapped, then regions.
        procs.sort_by(|a, b| {
            b.peak_mapped
                .cmp(&a.peak_mapped)
                .then(b.regions.len().cmp(&a.regions.len()))
                .then(a.proc.cmp(&b.proc))
        });
        let mut stats = self.stats.clone();
        stats.processes = procs.len() as u64;
        let duration = self.duration;
        for p in &procs {
            stats.regions += p.regions.len() as u64;
            if p.stride > 1 {
                stats.samples_thinned += 1;
            }
        }
        // The title goes in last, so nothing in it is taken for a mark.
        let (before, after) = PAGE.split_once("{{DATA}}").unwrap_or((PAGE, ""));
        let before = before
            .replace("/*STYLE*/", STYLE)
            .replace("{{TITLE}}", &escape_html(title));
        let after = after.replace("/*SCRIPT*/", SCRIPT);
        out.write_all(before.as_bytes())?;
        // The data, written a region at a time (never whole in memory).
        let head = json!({
            "title": title,
            "header": header,
            "duration": duration,
            "incomplete": incomplete,
            "paths": self.paths,
            "max_regions": MAX_REGIONS,
            "max_changes": MAX_CHANGES_PER_REGION,
            "regions_left_out": stats.regions_left_out,
            "changes_left_out": stats.changes_left_out,
        });
        let head = json_for_script(&head);
        out.write_all(&head.as_bytes()[..head.len() - 1])?;
        out.write_all(b",\"processes\":[")?;
        for (i, p) in procs.iter().enumerate() {
            let meta = json!({
                "proc": p.proc, "pid": p.pid, "ppid": p.ppid, "comm": p.comm, "exe": p.exe,
                "first": p.first.unwrap_or(0),
                "last": p.exit.unwrap_or(duration),
                "exit": p.exit_text, "exit_ns": p.exit, "execs": p.execs, "drift": p.drift,
                "uncertain": p.uncertain,
                "oom_kill_ns": p.oom_kill_ns, "oom": p.oom,
                "thinned": p.stride > 1, "samples_seen": p.seen_samples,
                "report": sections.get(&p.proc).cloned().unwrap_or_default(),
                "samples": p.samples,
            });
            let meta = json_for_script(&meta);
            if i > 0 {
                out.write_all(b",")?;
            }
            out.write_all(&meta.as_bytes()[..meta.len() - 1])?;
            out.write_all(b",\"regions\":[")?;
            for (j, r) in p.regions.iter().enumerate() {
                let changes: Vec<Value> = r
                    .changes
                    .iter()
                    .map(|c| json!([c.0, c.1, c.2, c.3, c.4]))
                    .collect();
                let v = json!({
                    "id": r.id, "born": r.born, "died": r.died, "kind": r.kind,
                    "path": r.path, "perms": r.perms, "born_by": r.born_by,
                    "died_by": r.died_by, "faults": r.faults, "ch": changes,
                    "more": r.more,
                });
                if j > 0 {
                    out.write_all(b",")?;
                }
                out.write_all(json_for_script(&v).as_bytes())?;
            }
            out.write_all(b"]}")?;
        }
        out.write_all(b"]}")?;
        out.write_all(after.as_bytes())?;
        out.flush()?;
        Ok(stats)
    }
}

const PAGE: &str = include_str!("html/page.html");
const STYLE: &str = include_str!("html/page.css");
const SCRIPT: &str = include_str!("html/page.js");

/// JSON safe inside a `<script>` element: no `<`, `>` or `&` (so no
/// `</script>` and no `<!--`), and no U+2028/U+2029.
pub fn json_for_script(v: &Value) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Text for an HTML element or attribute.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(lines: &[&str]) -> Collector {
        let mut c = Collector::new();
        for l in lines {
            let rec: Record = serde_json::from_str(l).unwrap();
            c.observe(&rec);
        }
        c
    }

    const HOSTILE: &str =
        "</script><script>alert(1)</script>\u{1}\u{7f}\u{2028}<!--&{{DATA}}/*SCRIPT*/";

    #[test]
    fn hostile_strings_are_embedded_safely() {
        let comm = serde_json::to_string(HOSTILE).unwrap();
        let lines = [
            format!(
                r#"{{"type":"process","t_ns":1,"proc":1,"pid":7,"event":"start","ppid":1,"comm":{comm},"exe":{comm},"seeded_by":"exec"}}"#
            ),
            format!(
                r#"{{"type":"region","t_ns":2,"proc":1,"pid":7,"region":1,"op":"born","start":"0x1000","end":"0x2000","perms":"r--p","cause":"mmap","born":{{"kind":"file","path":{comm},"offset":0,"dev":null,"inode":null,"parent":null}}}}"#
            ),
        ];
        let c = records(&lines.iter().map(String::as_str).collect::<Vec<_>>());
        let mut sections = HashMap::new();
        sections.insert(1, HOSTILE.to_string());
        let mut out = Vec::new();
        let stats = c
            .write(&mut out, HOSTILE, HOSTILE, &sections, false)
            .unwrap();
        assert_eq!((stats.processes, stats.regions), (1, 1));
        let page = String::from_utf8(out).unwrap();
        // The only script elements are the page's own two.
        assert_eq!(page.matches("<script").count(), 2, "{page}");
        assert_eq!(page.matches("</script>").count(), 2);
        assert!(!page.contains("alert(1)</"));
        assert!(!page.contains("<!--"));
        assert!(!page.contains('\u{1}'));
        assert!(!page.contains('\u{2028}'));
        // The data block parses back to the same strings.
        let v = data_block(&page);
        assert_eq!(v["processes"][0]["comm"], HOSTILE);
        assert_eq!(v["paths"][0], HOSTILE);
        assert_eq!(v["header"], HOSTILE);
        assert_eq!(v["processes"][0]["report"], HOSTILE);
    }

    /// The page's data block, parsed.
    fn data_block(page: &str) -> Value {
        let start = page
            .find(r#"<script type="application/json" id="mmtrace-data">"#)
            .unwrap();
        let body = &page[start..];
        let body = &body[body.find('>').unwrap() + 1..body.find("</script>").unwrap()];
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn regions_beyond_the_cap_are_counted() {
        let mut c = Collector::new();
        c.kept_regions = MAX_REGIONS - 1;
        for id in 0..3 {
            let l = format!(
                r#"{{"type":"region","t_ns":2,"proc":1,"pid":7,"region":{id},"op":"born","start":"0x1000","end":"0x2000","perms":"rw-p","cause":"mmap","born":{{"kind":"anon","path":null,"offset":0,"dev":null,"inode":null,"parent":null}}}}"#
            );
            c.observe(&serde_json::from_str(&l).unwrap());
        }
        let stats = c
            .write(&mut Vec::new(), "t", "", &HashMap::new(), false)
            .unwrap();
        assert_eq!((stats.regions, stats.regions_left_out), (1, 2));
    }

    #[test]
    fn samples_are_thinned_evenly() {
        let mut c = Collector::new();
        for t in 0..(3 * MAX_SAMPLES as u64) {
            let l = format!(
                r#"{{"type":"counters","t_ns":{t},"proc":1,"pid":7,"mapped":{t},"heap":0,"stack":0,"rss":null,"faults":0}}"#
            );
            c.observe(&serde_json::from_str(&l).unwrap());
        }
        let p = &c.procs[&1];
        assert!(p.samples.len() < MAX_SAMPLES);
        assert!(p.samples.len() > MAX_SAMPLES / 4);
        let gaps: std::collections::BTreeSet<i64> =
            p.samples.windows(2).map(|w| w[1][0] - w[0][0]).collect();
        assert_eq!(gaps.len(), 1, "{gaps:?}");
    }

    /// An OOM kill: its moment and the report's section on it go to the
    /// page with the process (the page marks the moment on the picture and
    /// the curves, and shows the section above them).
    #[test]
    fn an_oom_kill_reaches_the_page() {
        let mut c = records(&[
            r#"{"type":"process","t_ns":1,"proc":1,"pid":7,"event":"start","ppid":1,"comm":"hog","exe":"/bin/hog","seeded_by":"exec"}"#,
            r#"{"type":"process","t_ns":1,"proc":2,"pid":8,"event":"start","ppid":1,"comm":"calm","exe":"/bin/calm","seeded_by":"exec"}"#,
            r#"{"type":"process","t_ns":900,"proc":1,"pid":7,"event":"exit","ppid":1,"comm":"hog","exe":"/bin/hog","exit_signal":"SIGKILL","oom_kill_ns":800}"#,
        ]);
        c.oom_section(1, "OOM kill: process 7 (hog)\n</pre>".to_string());
        let mut out = Vec::new();
        c.write(&mut out, "t", "", &HashMap::new(), false).unwrap();
        let page = String::from_utf8(out).unwrap();
        let v = data_block(&page);
        let by_pid = |pid: u64| {
            v["processes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["pid"] == pid)
                .unwrap()
                .clone()
        };
        let hog = by_pid(7);
        assert_eq!(hog["oom_kill_ns"], 800);
        assert_eq!(hog["oom"], "OOM kill: process 7 (hog)\n</pre>");
        let calm = by_pid(8);
        assert_eq!(
            (&calm["oom_kill_ns"], &calm["oom"]),
            (&Value::Null, &Value::Null)
        );
        // The page has the box for it, and its script fills it as text.
        assert!(page.contains(r#"<section id="oombox" hidden>"#));
        assert!(SCRIPT.contains(r#"$("oom").textContent = "#));
    }
}
