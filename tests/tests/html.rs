//! `mmtrace report --html`: records the test workload, writes its page and
//! loads it in a real headless browser (Debian's `chromium`, which `cargo
//! xtask setup` installs): the page must run without an error or a console
//! message, and what it drew (it writes a summary into `#mmtrace-drawn`,
//! which `--dump-dom` shows) must be the timeline's regions of the process
//! shown, each from its birth to its death on the time axis, in address
//! order (high addresses at the top).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;
use tests::viewers::{element_text, load_checked};
use tests::{parse_jsonl, run_mmtrace_raw, run_record};

fn addr(v: &Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

#[test]
fn workload_report_renders_in_chromium() {
    tests::needs_root!();
    tests::skip_when_emulated!(
        "Chromium is too slow there, and the page does not depend on the kernel"
    );
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("mmtrace-html-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let timeline = dir.join("timeline.jsonl");
    let cmd: Vec<OsString> = vec![
        env!("CARGO_BIN_EXE_workload").into(),
        "--report".into(),
        dir.join("workload.json").into(),
        "--pause-ms".into(),
        "50".into(),
    ];
    let run = run_record(&timeline, &["--reconcile-interval", "0.05"], &cmd)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(run.status.success(), "{}", run.stderr);
    let lines = parse_jsonl(&std::fs::read_to_string(&timeline).unwrap()).unwrap();

    let page = dir.join("report.html");
    let args: Vec<OsString> = vec![
        "report".into(),
        timeline.clone().into(),
        "--html".into(),
        page.clone().into(),
    ];
    let run = run_mmtrace_raw(&args, std::time::Duration::from_secs(60)).unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(run.stderr.contains("mmtrace: wrote "), "{}", run.stderr);
    let mode = std::fs::metadata(&page).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the page is private");
    // Never overwritten.
    let again = run_mmtrace_raw(&args, std::time::Duration::from_secs(60)).unwrap();
    assert_eq!(again.status.code(), Some(2), "{}", again.stderr);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page loads nothing from the network"
    );

    // As a pointer on the heap would (the page's #hover=heap).
    let (dom, drawn) = load_checked(&page, "#hover=heap", &dir.join("chromium-profile"));
    let tip = element_text(&dom, "<div id=\"tip\"");
    assert!(
        !dom.contains("<div id=\"tip\" hidden") && tip.starts_with("[heap]\n"),
        "the heap's tooltip: {tip}"
    );
    assert!(
        tip.contains("\nborn ") && tip.contains("\nfaults ") && tip.contains(" grow "),
        "{tip}"
    );

    // The process shown first: the workload (the largest).
    let proc = drawn["proc"].as_u64().unwrap();
    let start = lines
        .iter()
        .find(|l| l["type"] == "process" && l["proc"] == proc)
        .unwrap();
    assert_eq!(drawn["process"], start["pid"]);
    assert_eq!(
        start["comm"], "workload",
        "the biggest process is shown first"
    );

    // Its regions, as the timeline has them: birth, death, address hull.
    // A /proc snapshot dropped at the exec it preceded is not drawn (as in
    // the text report).
    let mut regions: BTreeMap<u64, (u64, Option<u64>, u64, u64)> = BTreeMap::new();
    let mut born_by = BTreeMap::new();
    for l in lines
        .iter()
        .filter(|l| l["type"] == "region" && l["proc"] == proc)
    {
        let id = l["region"].as_u64().unwrap();
        let t = l["t_ns"].as_u64().unwrap();
        let (lo, hi) = (addr(&l["start"]), addr(&l["end"]));
        let r = regions.entry(id).or_insert((t, None, lo, hi));
        r.2 = r.2.min(lo);
        r.3 = r.3.max(hi);
        if l["op"] == "born" {
            born_by.insert(id, l["cause"].clone());
        }
        if l["op"] == "died" {
            r.1 = Some(t);
            if born_by[&id] == "proc" && l["cause"] == "exec" && t == r.0 {
                regions.remove(&id);
            }
        }
    }
    regions.retain(|_, r| r.3 > r.2);
    let shown: BTreeMap<u64, &Value> = drawn["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_u64().unwrap(), r))
        .collect();
    assert_eq!(
        shown.keys().copied().collect::<BTreeSet<_>>(),
        regions.keys().copied().collect::<BTreeSet<_>>(),
        "the regions drawn are the timeline's"
    );
    assert_eq!(drawn["count"].as_u64().unwrap() as usize, regions.len());
    assert!(regions.len() > 20, "the workload has many regions");

    // Time across: each from its birth to its death (or the end).
    let plot = &drawn["plot"];
    let (left, width) = (
        plot["left"].as_f64().unwrap(),
        plot["width"].as_f64().unwrap(),
    );
    let (t0, t1) = (plot["t0"].as_f64().unwrap(), plot["t1"].as_f64().unwrap());
    let x = |t: f64| left + (t - t0) / (t1 - t0) * width;
    for (id, &(born, died, _, _)) in &regions {
        let r = shown[id];
        let (x0, x1) = (r["x0"].as_f64().unwrap(), r["x1"].as_f64().unwrap());
        assert!((x0 - x(born as f64)).abs() < 0.5, "region {id}: x0 {x0}");
        let end = x(died.map_or(t1, |d| d as f64));
        // (A rectangle is at least 1.5 px wide: a short last extent may
        // reach a little past its death.)
        assert!(
            x1 >= end - 0.5 && x1 <= end + 1.6,
            "region {id}: x1 {x1}, want {end}"
        );
        assert!(x0 >= left - 0.5 && x1 <= left + width + 1.6, "region {id}");
    }
    // Addresses up: a region above another in memory is drawn above it.
    for (a, &(_, _, alo, _)) in &regions {
        for (b, &(_, _, _, bhi)) in &regions {
            if alo >= bhi {
                let (ra, rb) = (shown[a], shown[b]);
                let (ay0, ay1) = (ra["y0"].as_f64().unwrap(), ra["y1"].as_f64().unwrap());
                let by0 = rb["y0"].as_f64().unwrap();
                assert!(
                    ay0 < by0,
                    "region {a} (above {b} in memory) is drawn above it"
                );
                assert!(ay1 <= by0 + 1.6, "regions {a} and {b} overlap");
            }
        }
    }
    // The empty stretches between program, heap, mmap area and stack are
    // collapsed into bands.
    assert!(drawn["gaps"].as_u64().unwrap() >= 2, "{}", drawn["gaps"]);
    assert!(drawn["samples"].as_u64().unwrap() > 0, "memory curves");

    // Zoomed to the middle of the time axis (as a drag does, through
    // #span=T0-T1): the same regions, each still from its birth to its death
    // on the new axis.
    let (a, b) = (t0 + (t1 - t0) / 4.0, t1 - (t1 - t0) / 4.0);
    let (_, spanned) = load_checked(
        &page,
        &format!("#span={}-{}", a as u64, b as u64),
        &dir.join("chromium-profile"),
    );
    assert_eq!(spanned["zoomed"], true);
    let sp = &spanned["plot"];
    let (sa, sb) = (sp["t0"].as_f64().unwrap(), sp["t1"].as_f64().unwrap());
    assert!((sa - a).abs() < 2.0 && (sb - b).abs() < 2.0, "{sp}");
    let sx = |t: f64| left + (t - sa) / (sb - sa) * width;
    assert_eq!(spanned["count"], drawn["count"]);
    for r in spanned["regions"].as_array().unwrap() {
        let id = r["id"].as_u64().unwrap();
        let born = regions[&id].0 as f64;
        let x0 = r["x0"].as_f64().unwrap();
        assert!(
            (x0 - sx(born)).abs() < 0.5,
            "region {id}: x0 {x0}, want {}",
            sx(born)
        );
    }

    // Zoomed to the heap (as a click on it does, through #zoom=ID): it
    // spans most of the picture.
    let heap = lines
        .iter()
        .find(|l| l["proc"] == proc && l["op"] == "born" && l["born"]["kind"] == "heap")
        .unwrap();
    let id = heap["region"].as_u64().unwrap();
    let (_, zoomed) = load_checked(&page, &format!("#zoom={id}"), &dir.join("chromium-profile"));
    assert_eq!(zoomed["zoomed"], true);
    let r = zoomed["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap();
    let f = |k: &str| r[k].as_f64().unwrap();
    let width = zoomed["plot"]["width"].as_f64().unwrap();
    assert!(f("x1") - f("x0") > 0.6 * width, "zoomed heap: {r}");
    assert!(f("y1") - f("y0") > 150.0, "zoomed heap: {r}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A v1 document (`record --format v1`) is drawn too: the same regions as
/// it holds, with no error.
#[test]
fn workload_v1_report_renders_in_chromium() {
    tests::needs_root!();
    tests::skip_when_emulated!(
        "Chromium is too slow there, and the page does not depend on the kernel"
    );
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mmtrace-html-v1-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let timeline = dir.join("timeline.json");
    let cmd: Vec<OsString> = vec![
        env!("CARGO_BIN_EXE_workload").into(),
        "--report".into(),
        dir.join("workload.json").into(),
        "--pause-ms".into(),
        "50".into(),
    ];
    let run = run_record(
        &timeline,
        &["--format", "v1", "--reconcile-interval", "0.05"],
        &cmd,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(run.status.success(), "{}", run.stderr);
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&timeline).unwrap()).unwrap();
    let page = dir.join("report.html");
    let args: Vec<OsString> = vec![
        "report".into(),
        timeline.clone().into(),
        "--html".into(),
        page.clone().into(),
    ];
    let run = run_mmtrace_raw(&args, std::time::Duration::from_secs(60)).unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    let (_, drawn) = load_checked(&page, "", &dir.join("chromium-profile"));
    let p = doc["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == drawn["process"])
        .unwrap();
    assert_eq!(p["comm"], "workload");
    let want: BTreeSet<u64> = p["regions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            let extents = r["history"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| (addr(&c["start"]), addr(&c["end"])))
                .chain([(addr(&r["start"]), addr(&r["end"]))]);
            extents.into_iter().any(|(s, e)| e > s)
        })
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    let got: BTreeSet<u64> = drawn["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(got, want);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A timeline whose comm, exe, path and command hold markup and control
/// bytes: the page runs as usual and shows them as text (no element, no
/// script of theirs).
#[test]
fn hostile_names_stay_text_in_chromium() {
    tests::skip_when_emulated!(
        "Chromium is too slow there, and the page does not depend on the kernel"
    );
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mmtrace-html-hostile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let evil =
        "</script><script>document.body.dataset.pwned=1</script><b id=evil>\u{1}\u{1b}[31m&amp;";
    let e = serde_json::to_string(evil).unwrap();
    let lines = [
        format!(
            r#"{{"type":"header","schema":"mmtrace.timeline/v2","version":2,"mmtrace":"0.1.0","started_at":"2026-11-30T18:00:00.000Z","monotonic_start_ns":1000000000,"clock":"monotonic","host":{e},"kernel":"6.18.0","command":[{e}],"selection":{{"pids":[],"comms":[],"follow":true}},"options":{{"reconcile_interval_ns":1000000000,"duration_ns":null}}}}"#
        ),
        format!(
            r#"{{"type":"process","t_ns":1000,"proc":1,"pid":4242,"event":"start","ppid":1,"comm":{e},"exe":{e},"seeded_by":"exec","start_time":900000}}"#
        ),
        format!(
            r#"{{"type":"region","t_ns":4000,"proc":1,"pid":4242,"region":4,"op":"born","start":"0x7f3a12300000","end":"0x7f3a12400000","perms":"r-xp","cause":"mmap","born":{{"kind":"file","path":{e},"offset":0,"dev":null,"inode":null,"parent":null}}}}"#
        ),
        r#"{"type":"counters","t_ns":5000,"proc":1,"pid":4242,"mapped":1048576,"heap":0,"stack":0,"rss":4096,"faults":1}"#.to_string(),
        r#"{"type":"region","t_ns":60000000,"proc":1,"pid":4242,"region":4,"op":"died","start":"0x7f3a12300000","end":"0x7f3a12400000","perms":"r-xp","cause":"munmap","faults":{"total":1,"read":1,"write":0,"exec":0,"present":0,"first_ns":4500,"last_ns":4500,"touched_bytes":4096,"mapped_bytes":1048576}}"#.to_string(),
        r#"{"type":"process","t_ns":90000000,"proc":1,"pid":4242,"event":"exit","ppid":1,"comm":"x","exe":null,"exit_code":0}"#.to_string(),
        r#"{"type":"end","t_ns":100500000,"duration_ns":100500000,"stack_source":"fexit","events":3,"lost_events":0,"lost_by_kind":{},"processes":1,"regions":1,"region_records":2,"checks":0,"drift":0}"#.to_string(),
    ];
    let timeline = dir.join("hostile.jsonl");
    std::fs::write(&timeline, lines.join("\n") + "\n").unwrap();
    let page = dir.join("hostile.html");
    let args: Vec<OsString> = vec![
        "report".into(),
        timeline.into(),
        "--html".into(),
        page.clone().into(),
    ];
    let run = run_mmtrace_raw(&args, std::time::Duration::from_secs(60)).unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    let (dom, drawn) = load_checked(&page, "#hover=4", &dir.join("chromium-profile"));
    assert_eq!(drawn["count"], 1);
    assert!(!dom.contains("data-pwned"), "a script of the timeline ran");
    assert!(
        !dom.contains("<b id=\"evil\""),
        "markup of the timeline became an element"
    );
    // Shown as text: in the tooltip (the path) and the selector (the comm).
    assert!(
        element_text(&dom, "<div id=\"tip\"").contains("</script><script>"),
        "{dom:.3000}"
    );
    assert!(dom.contains("&lt;/script&gt;&lt;script&gt;document.body.dataset.pwned=1"));
    let _ = std::fs::remove_dir_all(&dir);
}
