//! A real OOM kill, inside a memory cgroup the test makes as a child of its
//! own (never the whole machine): `mmtrace record` sees the kernel's
//! `oom_kill` for the victim, its exit by SIGKILL carries `oom_kill_ns`, and
//! `mmtrace report` opens with the kill, the region that grew and the
//! mapped and resident curves before it (held step by step against the
//! timeline's samples); the HTML page shows that section and marks the kill
//! (checked in Chromium), and the Perfetto export has it as an instant on
//! the process's track (read with Perfetto's own schema).
//!
//! Where the memory controller is on the v1 hierarchy (these machines):
//! `/sys/fs/cgroup/memory/<own>/mmtrace-oom-PID` with `memory.limit_in_bytes`
//! (and `memory.memsw.limit_in_bytes` when there is one); where it is on
//! cgroup v2 only, a child of the process's v2 cgroup with `memory.max`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tests::{read_jsonl, run_mmtrace_raw, run_record, wait_until, MMTRACE_TIMEOUT};

/// The limit: small enough to reach in a moment.
const LIMIT: u64 = 64 << 20;

/// A memory cgroup made for the test, removed when dropped.
struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    /// A limited cgroup for `test` and a scratch directory of its own;
    /// None when no cgroup can be made under emulation (the test is then
    /// skipped, said so); anywhere else that fails the test.
    fn with_dir(test: &str) -> Option<(Cgroup, PathBuf)> {
        let cg = match Cgroup::make_named(test) {
            Ok(cg) => cg,
            Err(why) => {
                if !tests::run_unless_emulated(env!("CARGO_CRATE_NAME"), &why) {
                    return None;
                }
                panic!("cannot make a memory-limited cgroup for the OOM test: {why}");
            }
        };
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("mmtrace-oom-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Some((cg, dir))
    }

    /// A limited child of this process's memory cgroup, named for its test
    /// (tests run in parallel), or why not.
    fn make_named(test: &str) -> Result<Cgroup, String> {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let name = format!("mmtrace-oom-{}-{test}", std::process::id());
        // v1: the line `N:memory:/path` (or with other controllers).
        let v1 = own.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            ctrls
                .split(',')
                .any(|c| c == "memory")
                .then(|| path.to_string())
        });
        let (dir, files): (PathBuf, &[&str]) = match v1 {
            Some(path) => (
                Path::new("/sys/fs/cgroup/memory")
                    .join(path.trim_start_matches('/'))
                    .join(&name),
                &["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"],
            ),
            None => {
                let path = own.lines().find_map(|l| l.strip_prefix("0::")).ok_or(
                    "no memory cgroup: /proc/self/cgroup has neither a v1 memory line nor a v2 one",
                )?;
                let parent = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
                let controllers = std::fs::read_to_string(parent.join("cgroup.controllers"))
                    .map_err(|e| {
                        format!("cannot read {}/cgroup.controllers: {e}", parent.display())
                    })?;
                if !controllers.split_whitespace().any(|c| c == "memory") {
                    return Err(format!(
                        "the memory controller is on no v1 hierarchy and not available in the v2 cgroup {}",
                        parent.display()
                    ));
                }
                let sub = parent.join("cgroup.subtree_control");
                let on = std::fs::read_to_string(&sub).unwrap_or_default();
                if !on.split_whitespace().any(|c| c == "memory") {
                    std::fs::write(&sub, "+memory")
                        .map_err(|e| format!("cannot enable memory in {}: {e}", sub.display()))?;
                }
                (parent.join(&name), &["memory.max", "memory.swap.max"])
            }
        };
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot create the cgroup {}: {e}", dir.display()))?;
        let cg = Cgroup { dir };
        for (i, file) in files.iter().enumerate() {
            let path = cg.dir.join(file);
            // The first (the memory limit) is required; the second (swap)
            // only where it exists.
            let value = if file.contains("swap.max") { 0 } else { LIMIT };
            match std::fs::write(&path, value.to_string()) {
                Ok(()) => {}
                Err(_) if i > 0 && !path.exists() => {}
                Err(e) => return Err(format!("cannot write {}: {e}", path.display())),
            }
        }
        Ok(cg)
    }

    fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Empty once its process is reaped (mmtrace record waits for it).
        let gone = wait_until(Duration::from_secs(10), "the cgroup to empty", || {
            std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists()
        });
        if gone.is_err() {
            eprintln!("could not remove the cgroup {}", self.dir.display());
        }
    }
}

#[test]
fn oom_kill_is_recorded_and_explained() {
    tests::needs_root!();
    let Some((cg, dir)) = Cgroup::with_dir("record") else {
        return;
    };
    let out = dir.join("timeline.jsonl");
    let cmd = [
        env!("CARGO_BIN_EXE_oomer").to_string(),
        cg.procs().display().to_string(),
    ];
    let run = run_record(&out, &["--format", "v2"], &cmd).unwrap_or_else(|e| panic!("{e}"));
    let lines = read_jsonl(&out).unwrap_or_else(|e| panic!("{e}\n{}", run.stderr));
    let pid = lines
        .iter()
        .find(|l| l["type"] == "process" && l["event"] == "start")
        .and_then(|l| l["pid"].as_u64())
        .unwrap_or_else(|| panic!("no process in the recording\n{}", run.stderr));
    let exit = lines
        .iter()
        .find(|l| l["type"] == "process" && l["event"] == "exit" && l["pid"] == pid)
        .unwrap_or_else(|| panic!("no exit of {pid}\n{}", run.stderr));
    assert_eq!(
        exit["exit_signal"], "SIGKILL",
        "the command was not killed: {exit}\n{}",
        run.stderr
    );
    // Every line is valid v2, oom_kill_ns included.
    let path = tests::workspace_dir().join("docs/timeline-v2.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let v = jsonschema::draft202012::options()
        .build(&schema)
        .unwrap_or_else(|e| panic!("the v2 schema: {e}"));
    for l in &lines {
        let errs: Vec<String> = v.iter_errors(l).map(|e| e.to_string()).collect();
        assert!(errs.is_empty(), "{l}: {errs:?}");
    }
    let kill = exit["oom_kill_ns"]
        .as_u64()
        .unwrap_or_else(|| panic!("the exit carries no oom_kill_ns: {exit}\n{}", run.stderr));
    assert!(kill <= exit["t_ns"].as_u64().unwrap(), "{exit}");

    // The report opens with the kill, and names what grew (anonymous
    // memory: glibc maps each 1 MiB chunk).
    let report = run_mmtrace_raw(
        [std::ffi::OsStr::new("report"), out.as_os_str()],
        MMTRACE_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.status.success(), "{}", report.stderr);
    let text = &report.stdout;
    let section = text
        .find(&format!("OOM kill: process {pid} (oomer)"))
        .unwrap_or_else(|| panic!("no OOM section in the report:\n{text}"));
    let process = text
        .find(&format!("Process {pid} (oomer)"))
        .unwrap_or_else(|| panic!("no process section:\n{text}"));
    assert!(
        section < process,
        "the OOM section does not open the report:\n{text}"
    );
    let oom = &text[section..process];
    assert!(oom.contains("Killed at"), "{oom}");
    assert!(oom.contains("in the last minute"), "{oom}");
    let grew = oom
        .lines()
        .skip_while(|l| !l.contains("Regions that grew most"))
        .nth(2)
        .unwrap_or_else(|| panic!("no region in the OOM section:\n{oom}"));
    assert!(
        grew.contains("[anon]") || grew.contains("[heap]"),
        "the region that grew most is not anonymous memory: {grew}\n{text}"
    );
    // The region gained most of the limit in the minute.
    let added: f64 = grew
        .trim_start()
        .trim_start_matches('+')
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    assert!(
        grew.contains(" MiB") && added >= (LIMIT >> 20) as f64 * 0.75,
        "{grew}\n{text}"
    );
    check_curves(oom, &lines, pid, kill);
    check_html(&dir, &out, pid, kill);
    check_perfetto(&dir, &out, &lines, pid, kill);
    drop(cg);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `bytes` as the report writes sizes (`1.5 MiB`: tenths, rounded half up).
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut idx = 0;
    while idx + 1 < UNITS.len() && bytes >> (10 * (idx + 2)) != 0 {
        idx += 1;
    }
    let mut tenths = (u128::from(bytes) * 10 + (1u128 << (10 * (idx + 1))) / 2) >> (10 * (idx + 1));
    if tenths >= 10240 && idx + 1 < UNITS.len() {
        idx += 1;
        tenths = (u128::from(bytes) * 10 + (1u128 << (10 * (idx + 1))) / 2) >> (10 * (idx + 1));
    }
    format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[idx])
}

/// A step's length as the report writes it (`50.0 ms`, `5.000 s`).
fn parse_step(s: &str) -> u64 {
    let (n, unit) = s.split_once(' ').unwrap_or_else(|| panic!("a step: {s:?}"));
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("a step: {s:?}"));
    let unit = match unit {
        "ns" => 1.0,
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => panic!("a step: {s:?}"),
    };
    (n * unit).round() as u64
}

/// The OOM section's curves hold, step by step, the last counters sample
/// the timeline has in each step (and say so where it has none), over the
/// process's life up to the kill (it lived less than a minute); resident
/// memory never exceeds what the cgroup allows by more than the shared
/// file pages it maps (charged to whoever read them first).
fn check_curves(oom: &str, lines: &[serde_json::Value], pid: u64, kill: u64) {
    let title = oom
        .lines()
        .position(|l| l.contains("Mapped and resident memory before the kill ("))
        .unwrap_or_else(|| panic!("no curves in the OOM section:\n{oom}"));
    let head: Vec<&str> = oom.lines().skip(title).collect();
    // `(N steps of STEP, from T s)`
    let spec = head[0]
        .split_once('(')
        .and_then(|(_, r)| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{}", head[0]));
    let (n, rest) = spec.split_once(" steps of ").unwrap();
    let (step, from) = rest.split_once(", from ").unwrap();
    let (n, step): (usize, u64) = (n.parse().unwrap(), parse_step(step));
    let from = (from.trim_end_matches(" s").parse::<f64>().unwrap() * 1e9).round() as u64;
    let start = lines
        .iter()
        .find(|l| l["type"] == "process" && l["pid"] == pid)
        .and_then(|l| l["t_ns"].as_u64())
        .unwrap();
    assert!(kill - start < 60_000_000_000, "the oomer lived a minute?");
    // From its first record (the report prints microseconds).
    assert_eq!(from / 1000, start / 1000, "{oom}");
    assert!(
        (1..=12).contains(&n) && step * n as u64 >= kill - start,
        "{oom}"
    );
    let samples: Vec<(u64, u64, Option<u64>)> = lines
        .iter()
        .filter(|l| l["type"] == "counters" && l["pid"] == pid)
        .map(|l| {
            (
                l["t_ns"].as_u64().unwrap(),
                l["mapped"].as_u64().unwrap(),
                l["rss"].as_u64(),
            )
        })
        .filter(|s| s.0 >= start && s.0 <= kill)
        .collect();
    if samples.is_empty() {
        // The kill came before mmtrace's first sample (its tick).
        assert!(head[1].contains("no counters sample in that time"), "{oom}");
        return;
    }
    let rows = &head[2..2 + n];
    let mut last_step_rss = None;
    for (i, row) in rows.iter().enumerate() {
        let end = kill - (n - 1 - i) as u64 * step;
        let lo = if i == 0 { start } else { end - step + 1 };
        let want = samples.iter().rev().find(|s| s.0 >= lo && s.0 <= end);
        match want {
            None => assert!(row.ends_with("no sample"), "step to {end}: {row}\n{oom}"),
            Some(&(_, mapped, rss)) => {
                // Cells are two or more spaces apart: end, to the kill,
                // mapped, resident, the bar.
                let cells: Vec<&str> = row
                    .split("  ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .collect();
                let rss_text = rss.map_or("unknown".to_string(), human_size);
                assert_eq!(
                    (cells[2], cells[3]),
                    (human_size(mapped).as_str(), rss_text.as_str()),
                    "step to {end}: {row}\n{oom}"
                );
                if let Some(rss) = rss {
                    assert!(
                        rss <= LIMIT + (16 << 20),
                        "{rss} bytes resident in a cgroup of {LIMIT}: {row}"
                    );
                    last_step_rss = Some(rss);
                }
            }
        }
    }
    assert!(rows[n - 1].contains("the kill"), "{oom}");
    assert!(
        oom.contains(&format!("the last of {} ", samples.len())),
        "{} samples in the timeline:\n{oom}",
        samples.len()
    );
    eprintln!(
        "curves checked: {n} steps, {} samples, resident at the last {last_step_rss:?}",
        samples.len()
    );
}

/// The HTML page carries the kill (its moment, the report's section on it,
/// curves included) and, in Chromium, marks it on the picture.
fn check_html(dir: &Path, out: &Path, pid: u64, kill: u64) {
    let page = dir.join("report.html");
    let run = run_mmtrace_raw(
        [
            std::ffi::OsStr::new("report"),
            out.as_os_str(),
            std::ffi::OsStr::new("--html"),
            page.as_os_str(),
        ],
        MMTRACE_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(run.status.success(), "{}", run.stderr);
    let html = std::fs::read_to_string(&page).unwrap();
    let data = tests::viewers::element_text(
        &html,
        "<script type=\"application/json\" id=\"mmtrace-data\"",
    );
    let data: serde_json::Value = serde_json::from_str(&data).unwrap();
    let p = data["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap_or_else(|| panic!("no process {pid} in the page"));
    assert_eq!(p["oom_kill_ns"], kill);
    let section = p["oom"]
        .as_str()
        .unwrap_or_else(|| panic!("no OOM section: {}", p["oom"]));
    assert!(
        section.starts_with(&format!("OOM kill: process {pid} (oomer)")),
        "{section}"
    );
    assert!(section.contains("Regions that grew most"), "{section}");
    assert!(
        section.contains("Mapped and resident memory before the kill"),
        "{section}"
    );
    if std::env::var_os(tests::EMULATED_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
        eprintln!("the page is not loaded in Chromium on an emulated machine (too slow)");
        return;
    }
    let (dom, drawn) =
        tests::viewers::load_checked(&page, &format!("#pid={pid}"), &dir.join("chromium-profile"));
    assert_eq!(drawn["process"], pid, "{drawn}");
    assert_eq!(drawn["oom"]["t"], kill, "{drawn}");
    let x = drawn["oom"]["x"].as_f64().unwrap();
    let (left, width) = (
        drawn["plot"]["left"].as_f64().unwrap(),
        drawn["plot"]["width"].as_f64().unwrap(),
    );
    let (t0, t1) = (
        drawn["plot"]["t0"].as_f64().unwrap(),
        drawn["plot"]["t1"].as_f64().unwrap(),
    );
    // On the time axis, where the kill's time is.
    let want = left + (kill as f64 - t0) / (t1 - t0) * width;
    assert!(
        (x - want).abs() < 1.0 && x >= left && x <= left + width,
        "{drawn}"
    );
    // The section is shown above the picture, as text.
    assert!(
        dom.contains("<section id=\"oombox\">"),
        "the OOM box is hidden"
    );
    let shown = tests::viewers::element_text(&dom, "<pre id=\"oom\"");
    assert_eq!(shown, section);
}

/// The Perfetto trace has the kill as an instant on the process's track at
/// its moment, and holds the timeline record for record.
fn check_perfetto(dir: &Path, out: &Path, lines: &[serde_json::Value], pid: u64, kill: u64) {
    let trace = dir.join("trace.pftrace");
    let run = run_mmtrace_raw(
        [
            std::ffi::OsStr::new("export"),
            out.as_os_str(),
            std::ffi::OsStr::new("--to"),
            std::ffi::OsStr::new("perfetto"),
            std::ffi::OsStr::new("-o"),
            trace.as_os_str(),
        ],
        MMTRACE_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(run.status.success(), "{}", run.stderr);
    let doc = tests::viewers::read_with_perfetto_schema(&trace);
    assert_eq!(doc["unknown_fields"], 0);
    assert_eq!(doc["errors"], serde_json::json!([]), "{}", doc["errors"]);
    let tracks = doc["tracks"].as_object().unwrap();
    let kills: Vec<&serde_json::Value> = doc["instants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["name"] == "oom_kill")
        .collect();
    assert_eq!(kills.len(), 1, "{kills:?}");
    assert_eq!(kills[0]["ts"], kill);
    assert_eq!(kills[0]["args"]["victim_pid"], pid);
    let track = &tracks[&kills[0]["track"].to_string()];
    assert_eq!(track["pid"], pid, "the kill is not on the process's track");
    tests::viewers::check_against_timeline(lines, &doc);
}

/// `--format v1`: the process of the document carries the kill
/// (`oom_kill_ns`, valid by docs/timeline-v1.schema.json), and the report
/// of the document opens with it as for v2.
#[test]
fn oom_kill_is_in_the_v1_timeline() {
    tests::needs_root!();
    let Some((cg, dir)) = Cgroup::with_dir("v1") else {
        return;
    };
    let out = dir.join("timeline.json");
    let cmd = [
        env!("CARGO_BIN_EXE_oomer").to_string(),
        cg.procs().display().to_string(),
    ];
    let run = run_record(&out, &["--format", "v1"], &cmd).unwrap_or_else(|e| panic!("{e}"));
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("{e}\n{}", run.stderr)),
    )
    .unwrap();
    let path = tests::workspace_dir().join("docs/timeline-v1.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let v = jsonschema::draft202012::options()
        .build(&schema)
        .unwrap_or_else(|e| panic!("the v1 schema: {e}"));
    let errs: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(errs.is_empty(), "{errs:?}");
    let p = doc["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["comm"] == "oomer")
        .unwrap_or_else(|| panic!("no oomer in the document\n{}", run.stderr));
    assert_eq!(p["exit_signal"], "SIGKILL", "{}", run.stderr);
    let kill = p["oom_kill_ns"]
        .as_u64()
        .unwrap_or_else(|| panic!("no oom_kill_ns: {}\n{}", p["oom_kill_ns"], run.stderr));
    assert!(kill <= p["exit_at_ns"].as_u64().unwrap());
    let report = run_mmtrace_raw(
        [std::ffi::OsStr::new("report"), out.as_os_str()],
        MMTRACE_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.status.success(), "{}", report.stderr);
    let text = &report.stdout;
    let pid = p["pid"].as_u64().unwrap();
    let section = text
        .find(&format!("OOM kill: process {pid} (oomer)"))
        .unwrap_or_else(|| panic!("no OOM section in the report:\n{text}"));
    assert!(section < text.find(&format!("Process {pid} (oomer)")).unwrap());
    assert!(text.contains("Regions that grew most"), "{text}");
    assert!(
        text.contains("Mapped and resident memory before the kill"),
        "{text}"
    );
    drop(cg);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A quiet victim the recording never saw before its exit (`--comm`
/// selects it, it was running already and did nothing since; its exit is
/// its first sight): the tracker remembers the kill until that exit, which
/// carries `oom_kill_ns`, and the report explains it (nothing grew that the
/// recording saw, no sample).
#[test]
fn a_victim_never_seen_still_has_its_kill() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    tests::needs_root!();
    let Some((cg, dir)) = Cgroup::with_dir("unseen") else {
        return;
    };
    // Its comm is the link's name, selected by --comm alone.
    let link = dir.join("oomquiet");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_oomer"), &link).unwrap();
    let procs = cg.procs().display().to_string();
    let mut quiet = Command::new(&link)
        .args([procs.as_str(), "40", "hold"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the quiet oomer");
    let held = BufReader::new(quiet.stdout.take().unwrap())
        .lines()
        .next()
        .and_then(Result::ok);
    assert_eq!(
        held.as_deref(),
        Some("held"),
        "the quiet oomer did not hold"
    );
    let out = dir.join("timeline.jsonl");
    let mut mmtrace = Command::new(tests::mmtrace_bin().unwrap_or_else(|e| panic!("{e}")))
        .args(["record", "--comm", "oomquiet", "-o"])
        .arg(&out)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mmtrace");
    let mut lines = BufReader::new(mmtrace.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let ready = line.contains("tracing ");
        said.push(line);
        if ready {
            break;
        }
    }
    // Another process fills the cgroup: the quiet one (oom_score_adj
    // 1000) is chosen, and the other ends with its 40 MiB (code 3).
    let loud = Command::new(env!("CARGO_BIN_EXE_oomer"))
        .args([procs.as_str(), "40"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run the loud oomer");
    let status = quiet.wait().unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(mmtrace.id() as i32, libc::SIGINT) };
    said.extend(lines.map_while(Result::ok));
    let said = said.join("\n");
    assert!(mmtrace.wait().unwrap().success(), "{said}");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "the quiet oomer was not killed ({status}; the other: {loud})"
    );
    let pid = u64::from(quiet.id());
    let recs = read_jsonl(&out).unwrap_or_else(|e| panic!("{e}\n{said}"));
    let mine: Vec<&serde_json::Value> = recs.iter().filter(|l| l["pid"] == pid).collect();
    let start = mine
        .iter()
        .find(|l| l["type"] == "process" && l["event"] == "start")
        .unwrap_or_else(|| panic!("no start of {pid}: {mine:?}\n{said}"));
    let exit = mine
        .iter()
        .find(|l| l["type"] == "process" && l["event"] == "exit")
        .unwrap_or_else(|| panic!("no exit of {pid}: {mine:?}\n{said}"));
    assert_eq!(exit["exit_signal"], "SIGKILL", "{exit}");
    let kill = exit["oom_kill_ns"]
        .as_u64()
        .unwrap_or_else(|| panic!("the exit carries no oom_kill_ns: {exit}\n{said}"));
    // First seen at its exit, after the kill: never before it.
    assert!(
        kill <= start["t_ns"].as_u64().unwrap() && kill <= exit["t_ns"].as_u64().unwrap(),
        "{start}\n{exit}"
    );
    let report = run_mmtrace_raw(
        [std::ffi::OsStr::new("report"), out.as_os_str()],
        MMTRACE_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.status.success(), "{}", report.stderr);
    assert!(
        report
            .stdout
            .contains(&format!("OOM kill: process {pid} (oomquiet)")),
        "{}",
        report.stdout
    );
    drop(cg);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The stream's `oom_kill` line names the victim (the command) in its body,
/// and the victim's exit by SIGKILL follows it.
#[test]
fn oom_kill_is_streamed() {
    tests::needs_root!();
    let Some((cg, dir)) = Cgroup::with_dir("stream") else {
        return;
    };
    let events = dir.join("events.jsonl");
    let cmd = [
        env!("CARGO_BIN_EXE_oomer").to_string(),
        cg.procs().display().to_string(),
    ];
    let run = tests::run_stream(&events, &cmd).unwrap_or_else(|e| panic!("{e}"));
    let pid = run
        .events
        .iter()
        .find(|e| e["event"] == "exec")
        .and_then(|e| e["pid"].as_u64())
        .unwrap_or_else(|| panic!("no exec in the stream\n{}", run.stderr));
    let kill = run
        .events
        .iter()
        .position(|e| e["event"] == "oom_kill" && e["victim_pid"] == pid)
        .unwrap_or_else(|| panic!("no oom_kill of {pid} in the stream\n{}", run.stderr));
    let exit = run
        .events
        .iter()
        .position(|e| e["event"] == "exit" && e["pid"] == pid)
        .unwrap_or_else(|| panic!("no exit of {pid}\n{}", run.stderr));
    assert!(kill < exit, "the kill comes after the exit");
    assert_eq!(run.events[exit]["signal"], "SIGKILL");
    drop(cg);
    let _ = std::fs::remove_dir_all(&dir);
}
