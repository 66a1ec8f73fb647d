//! Programs nobody here wrote, recorded from start to exit: the model of
//! every process agrees with the kernel's counters of its address space
//! at its exit (read by the exit hook while the address space is whole),
//! nothing is lost, and every region's story is consistent.

use std::path::PathBuf;

use serde_json::Value;
use tests::{read_timeline, run_record, traced_pid, wait_running, workspace_dir};

fn scratch(name: &str) -> PathBuf {
    let dir = workspace_dir()
        .join("target")
        .join("tmp")
        .join(format!("mmtrace-programs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The tests run in a guest under qemu's software emulation.
fn emulated() -> bool {
    std::env::var_os(tests::EMULATED_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

fn u(v: &Value) -> Option<u64> {
    v.as_u64()
}

/// Records `cmd` and checks the document; returns it.
fn record_and_check(name: &str, cmd: &[&str]) -> Value {
    let dir = scratch(name);
    let out = dir.join("timeline.json");
    let run = run_record::<&str, &str>(&out, &[], cmd).unwrap_or_else(|e| panic!("{e}"));
    assert!(run.status.success(), "{}: {}", run.command, run.stderr);
    let doc = read_timeline(&out).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(doc["lost_events"], 0, "{name}: lost events");
    let procs = doc["processes"].as_array().unwrap();
    assert!(!procs.is_empty());
    for p in procs {
        let who = format!("{name}: pid {} ({})", p["pid"], p["comm"]);
        assert_eq!(
            p["drift"].as_array().unwrap().len(),
            0,
            "{who}: drift {}",
            p["drift"]
        );
        let exit_at = u(&p["exit_at_ns"]).unwrap_or_else(|| panic!("{who} did not exit"));
        // Checked at exit, against the kernel, with no difference.
        let checks = p["checks"].as_array().unwrap();
        // Never in doubt, but after an exec seed that did not settle (the
        // program's loader ran a call during every read), which a check
        // then settles; and under emulation, where the seed's reads (a few
        // ms at most) rarely find the loader quiet and a short process
        // often exits before the check its doubt asks for (the drift, above,
        // is still none).
        // Or a process gone before its exec was handled (a busy event loop:
        // `as` in a compile lives a few ms), whose new program was never
        // read: uncertain from its exec, its exit check void.
        let unsettled_seed = checks.iter().any(|c| c["reason"] == "seed");
        let unseeded = checks.iter().any(|c| c["void"] == "unseeded");
        let uncertain = p["uncertain"].as_array().unwrap();
        assert!(
            uncertain.is_empty() || unsettled_seed || unseeded || emulated(),
            "{who}: uncertain {} (checks {checks:?})",
            p["uncertain"]
        );
        // Doubt is about the process's life: it starts by its exit.
        for i in uncertain {
            assert!(
                u(&i["from_ns"]).unwrap() <= exit_at,
                "{who}: uncertain {} after its exit at {exit_at}",
                p["uncertain"]
            );
        }
        let exit_check = checks
            .iter()
            .find(|c| c["reason"] == "exit")
            .unwrap_or_else(|| panic!("{who}: no check at exit: {checks:?}"));
        assert!(checks.iter().all(|c| c["drift"] == 0), "{who}: {checks:?}");
        // Counters were sampled, the last one at exit; resident memory is
        // part of the mapped memory.
        let counters = p["counters"].as_array().unwrap();
        let last = counters
            .last()
            .unwrap_or_else(|| panic!("{who}: no counters"));
        let (rss, mapped) = (u(&last["rss"]).unwrap(), u(&last["mapped"]).unwrap());
        assert!(rss > 0 && rss <= mapped, "{who}: rss {rss} mapped {mapped}");
        // The regions alive at exit are the ones the kernel showed then.
        let regions = p["regions"].as_array().unwrap();
        let at_exit = regions.iter().filter(|r| r["died_by"] == "exit").count() as u64;
        assert_eq!(
            u(&exit_check["regions"]),
            Some(at_exit),
            "{who}: regions in /proc/PID/maps at exit vs regions torn down by the exit"
        );
        for r in regions {
            let rid = format!("{who} region {} {}-{}", r["id"], r["start"], r["end"]);
            let born = u(&r["born_ns"]).unwrap();
            let died = u(&r["died_ns"]).unwrap_or_else(|| panic!("{rid} outlived its process"));
            assert!(
                born <= died && died <= exit_at,
                "{rid}: born {born} died {died}"
            );
            if r["died_by"] == "exit" {
                assert_eq!(died, exit_at, "{rid}");
            }
            let h = r["history"].as_array().unwrap();
            assert_eq!(h[0]["op"], "born", "{rid}");
            let mut last = 0;
            for c in h {
                let t = u(&c["t_ns"]).unwrap();
                assert!(
                    t >= last && t >= born && t <= died,
                    "{rid}: history out of order"
                );
                last = t;
                let (s, e) = (
                    u64::from_str_radix(c["start"].as_str().unwrap().trim_start_matches("0x"), 16),
                    u64::from_str_radix(c["end"].as_str().unwrap().trim_start_matches("0x"), 16),
                );
                assert!(s.unwrap() < e.unwrap(), "{rid}: empty state {c}");
            }
            let final_state = h.last().unwrap();
            assert_eq!(final_state["start"], r["start"], "{rid}");
            assert_eq!(final_state["end"], r["end"], "{rid}");
            assert_eq!(final_state["perms"], r["perms"], "{rid}");
        }
    }
    doc
}

#[test]
fn python_import_json() {
    tests::needs_root!();
    let doc = record_and_check("python", &["/usr/bin/python3", "-c", "import json, ctypes"]);
    let p = &doc["processes"][0];
    assert_eq!(p["exe"], "/usr/bin/python3");
    // Its heap (born by brk, or already in the seed read right after the
    // exec) and a library it loads long after its exec (the extension
    // module of ctypes) were seen being made. (What the dynamic loader maps
    // right after the exec may already be in the seed, read without
    // stopping the program: seeded by the exec.)
    let regions = p["regions"].as_array().unwrap();
    assert!(regions
        .iter()
        .any(|r| r["kind"] == "heap" && (r["born_by"] == "brk" || r["born_by"] == "exec")));
    assert!(regions.iter().any(
        |r| r["born_by"] == "mmap" && r["path"].as_str().is_some_and(|s| s.contains("_ctypes"))
    ));
}

#[test]
fn a_c_compiler_run() {
    tests::needs_root!();
    let dir = scratch("cc-src");
    let src = dir.join("x.c");
    std::fs::write(&src, "int f(int x) { return x * 2; }\n").unwrap();
    let obj = dir.join("x.o");
    let doc = record_and_check(
        "cc",
        &[
            "cc",
            "-c",
            "-o",
            obj.to_str().unwrap(),
            src.to_str().unwrap(),
        ],
    );
    // The driver runs the compiler proper and the assembler: three processes.
    let procs = doc["processes"].as_array().unwrap();
    assert!(procs.len() >= 3, "{} processes", procs.len());
    assert!(procs.iter().any(|p| p["seeded_by"] == "fork"));
    assert!(obj.exists());
}

/// A child made with CLONE_VM changes its parent's address space: the
/// model is one per address space, so the child's mmap and mprotect are
/// in the parent's regions, and the child has none of its own. A
/// posix_spawn child (CLONE_VM | CLONE_VFORK) shares until its exec.
#[test]
fn children_sharing_the_address_space_change_one_model() {
    tests::needs_root!();
    let dir = scratch("sharedmm");
    let out = dir.join("timeline.json");
    let run = run_record::<&str, &str>(&out, &[], &[env!("CARGO_BIN_EXE_sharedmm")])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(run.status.success(), "{}: {}", run.command, run.stderr);
    let doc = read_timeline(&out).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(doc["lost_events"], 0);
    let procs = doc["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 3, "sharedmm, its clone, /bin/true: {procs:?}");
    for p in procs {
        assert_eq!(
            p["drift"].as_array().unwrap().len(),
            0,
            "drift {}",
            p["drift"]
        );
    }
    let parent = &procs[0];
    let ppid = parent["pid"].clone();
    let (clone, spawned) = (&procs[1], &procs[2]);
    assert_eq!(clone["shared_with"], ppid, "{clone}");
    assert_eq!(clone["regions"].as_array().unwrap().len(), 0, "{clone}");
    assert_eq!(spawned["shared_with"], ppid, "{spawned}");
    assert_eq!(spawned["exe"], "/bin/true");
    // Its own address space from its exec on.
    assert!(!spawned["regions"].as_array().unwrap().is_empty());
    // The child's 3 pages, in the parent's model: made by mmap, split by
    // the protection of the middle one, unmapped by the parent.
    let regions = parent["regions"].as_array().unwrap();
    let size =
        |c: &Value| tests::event_addr(&c["end"]).unwrap() - tests::event_addr(&c["start"]).unwrap();
    let split_protected = |made: &Value| {
        regions
            .iter()
            .any(|r| r["parent"] == made["id"] && r["perms"] == "r--p" && r["died_by"] == "munmap")
    };
    assert!(
        regions.iter().any(|r| r["born_by"] == "mmap"
            && r["died_by"] == "munmap"
            && size(&r["history"][0]) == 3 * 4096
            && split_protected(r)),
        "the child's 3 pages are not in the parent's regions"
    );
}

/// Merges only the kernel can decide (moved memory keeps its page
/// offset, an anon_vma shared at a first write, a forked child's chains):
/// the model follows the kernel's VMA tree, read at every change, and
/// never drifts.
#[test]
fn merges_the_kernel_decides_are_followed() {
    tests::needs_root!();
    let dir = scratch("merges");
    let out = dir.join("timeline.json");
    let run = run_record::<&str, &str>(&out, &[], &[env!("CARGO_BIN_EXE_merges")])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(run.status.success(), "{}: {}", run.command, run.stderr);
    let doc = read_timeline(&out).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(doc["lost_events"], 0);
    let procs = doc["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 2, "merges and its child");
    for p in procs {
        let who = format!("pid {} ({})", p["pid"], p["comm"]);
        assert_eq!(
            p["drift"].as_array().unwrap().len(),
            0,
            "{who}: drift {}",
            p["drift"]
        );
        // Never in doubt: the counters agreed after every change (under
        // emulation the exec seed may not settle, and the doubt it opens
        // may last to the exit: see record_and_check).
        if !emulated() {
            assert_eq!(p["uncertain"], serde_json::json!([]), "{who}: uncertain");
        }
        assert!(
            !p["checks"].as_array().unwrap().is_empty(),
            "{who}: never checked"
        );
    }
}

/// UFFDIO_REGISTER and UFFDIO_UNREGISTER split and merge mappings with
/// an ioctl: followed exactly (no drift, never in doubt: see
/// record_and_check), each a `userfaultfd` change of the regions.
#[test]
fn userfaultfd_registrations_are_followed() {
    tests::needs_root!();
    // On 5.10 the unregistered part stays apart from its unregistered
    // neighbour (the kernel passes the VMA's own page offset to
    // vma_merge); the rules merge them, the kernel's edges split them
    // back, and the region's records must say so in that order.
    let doc = record_and_check(
        "userfaultfd",
        &[env!("CARGO_BIN_EXE_vmaflags"), "userfaultfd"],
    );
    let p = &doc["processes"][0];
    let changes = p["regions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["history"].as_array().unwrap())
        .filter(|c| c["op"] == "userfaultfd")
        .count();
    // Register, unregister, register, part of it, the rest.
    assert!(changes >= 5, "{changes} userfaultfd changes");
}

/// A MAP_GROWSDOWN mapping away from the stack grows when the program
/// touches the pages below it: each growth is a `grow` change of that
/// region (seen from the fault where fexit is refused, from
/// expand_downwards' fexit elsewhere), with no drift and no doubt.
#[test]
fn map_growsdown_growth_is_followed() {
    tests::needs_root!();
    let doc = record_and_check("growsdown", &[env!("CARGO_BIN_EXE_vmaflags"), "growsdown"]);
    let p = &doc["processes"][0];
    let hex = |v: &Value| u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16);
    // The region that grew: born 4 pages long, grown to 13 (1, 8 and 9
    // pages below its first start), then unmapped whole.
    let grown: Vec<&Value> = p["regions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["history"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["op"] == "grow")
                && r["died_by"] == "munmap"
        })
        .collect();
    assert_eq!(
        grown.len(),
        1,
        "regions that grew and were unmapped: {grown:?}"
    );
    let h = grown[0]["history"].as_array().unwrap();
    let sizes: Vec<u64> = h
        .iter()
        .map(|c| (hex(&c["end"]).unwrap() - hex(&c["start"]).unwrap()) / 4096)
        .collect();
    assert_eq!(sizes, [4, 5, 12, 13], "pages after each change: {h:?}");
}

/// A process that never blocks (it spins between its calls) is still
/// compared with /proc/PID/maps: read between two counts of its calls.
#[test]
fn a_process_that_never_blocks_is_checked() {
    tests::needs_root!();
    let dir = scratch("busy");
    let out = dir.join("timeline.jsonl");
    let run = run_record(
        &out,
        &["--reconcile-interval", "0.2"],
        &[env!("CARGO_BIN_EXE_spinner"), "2", "--busy"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(run.status.success(), "{}: {}", run.command, run.stderr);
    let doc = read_timeline(&out).unwrap_or_else(|e| panic!("{e}"));
    let p = &doc["processes"][0];
    let checks = p["checks"].as_array().unwrap();
    let compared: Vec<&Value> = checks
        .iter()
        .filter(|c| c["reason"] == "interval" && c["void"] != true && c["against"] == "maps")
        .collect();
    assert!(
        !compared.is_empty(),
        "no interval check compared with the maps: {checks:?}"
    );
    assert!(checks.iter().all(|c| c["drift"] == 0), "{checks:?}");
    assert_eq!(p["drift"].as_array().unwrap().len(), 0, "{}", p["drift"]);
}

#[test]
fn git() {
    tests::needs_root!();
    let dir = scratch("git");
    record_and_check(
        "git",
        &["git", "init", "-q", dir.join("repo").to_str().unwrap()],
    );
}

#[test]
fn pid_reuse_gives_two_timelines() {
    tests::needs_root!();
    let dir = scratch("pidreuse");
    let out = dir.join("timeline.json");
    let run = run_record::<&str, &str>(&out, &[], &[env!("CARGO_BIN_EXE_pidreuse")])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(run.status.success(), "{}: {}", run.command, run.stderr);
    let pid: u64 = run.stdout.trim().parse().expect("the reused pid");
    let doc = read_timeline(&out).unwrap_or_else(|e| panic!("{e}"));
    let same: Vec<&Value> = doc["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| u(&p["pid"]) == Some(pid))
        .collect();
    assert_eq!(same.len(), 2, "two processes with pid {pid}");
    let (a, b) = (same[0], same[1]);
    assert!(u(&a["exit_at_ns"]).unwrap() <= u(&b["regions"][0]["born_ns"]).unwrap());
    assert_ne!(a["start_time"], b["start_time"], "told apart by start time");
    for p in [a, b] {
        assert_eq!(p["seeded_by"], "fork");
        let mmaps: Vec<&Value> = p["regions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["born_by"] == "mmap")
            .collect();
        assert_eq!(mmaps.len(), 1, "each child's own page: {mmaps:?}");
        assert!(p["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["reason"] == "exit"));
    }
}

#[test]
fn sigusr1_asks_for_a_check_now() {
    tests::needs_root!();
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = scratch("sigusr1");
    let out = dir.join("timeline.json");
    let mut child = Command::new(tests::mmtrace_bin().unwrap_or_else(|e| panic!("{e}")))
        .args(["record", "--reconcile-interval", "1000", "-o"])
        .arg(&out)
        .args(["--", env!("CARGO_BIN_EXE_spinner"), "3"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mmtrace");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut spinner = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        spinner = traced_pid(&line);
        seen.push(line);
        if spinner.is_some() {
            break;
        }
    }
    let spinner = spinner.unwrap_or_else(|| panic!("no `tracing ... (pid N)` line: {seen:?}"));
    // Running its own program and let go after its exec: mmtrace has read
    // its address space and traces it.
    wait_running(spinner, "spinner").unwrap_or_else(|e| panic!("{e}"));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
    let alive = tests::proc_stat(spinner).is_some_and(|s| s.comm == "spinner" && s.state != 'Z');
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(child.wait().unwrap().success(), "{rest:?}");
    let doc = read_timeline(&out).unwrap_or_else(|e| panic!("{e}"));
    let p = &doc["processes"][0];
    let checks = p["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["reason"] == "request" && c["drift"] == 0),
        "a requested check (the spinner was {} when mmtrace got SIGUSR1): {checks:?}",
        if alive {
            "still running"
        } else {
            "already gone"
        }
    );
    assert!(
        checks.iter().all(|c| c["reason"] != "interval"),
        "{checks:?}"
    );
}

#[test]
fn a_running_process_is_seeded_from_proc_and_checked() {
    tests::needs_root!();
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("start sleep");
    let dir = scratch("seeded");
    let out = dir.join("timeline.json");
    let pid = sleeper.id().to_string();
    let args = [
        "record",
        "--pid",
        &pid,
        "--duration",
        "1.2",
        "--reconcile-interval",
        "0.2",
        "-o",
        out.to_str().unwrap(),
    ];
    let run = tests::run_mmtrace_raw(args, tests::MMTRACE_TIMEOUT);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let run = run.unwrap_or_else(|e| panic!("{e}"));
    assert!(run.status.success(), "{}", run.stderr);
    let doc = read_timeline(&out).unwrap_or_else(|e| panic!("{e}"));
    let p = &doc["processes"][0];
    assert_eq!(p["pid"].to_string(), pid);
    assert_eq!(p["seeded_by"], "proc");
    let checks = p["checks"].as_array().unwrap();
    assert!(
        checks.len() >= 2,
        "periodic checks of an idle process: {checks:?}"
    );
    assert!(checks
        .iter()
        .all(|c| c["reason"] == "interval" && c["drift"] == 0));
    // Still running at the end: every region is alive, born from /proc.
    for r in p["regions"].as_array().unwrap() {
        assert_eq!(r["born_by"], "proc", "{r}");
        assert!(r["died_ns"].is_null(), "{r}");
    }
}
