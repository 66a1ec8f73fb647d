//! `cargo xtask bench`'s tracer comparison: what tracing costs the traced
//! program, for mmtrace in its modes and for the tools people use instead,
//! against the floor (the same tracepoints with an empty and a count-only
//! BPF program). Every load (tests/src/bin/benchload.rs) measures its own
//! CPU; each round runs every tracer once, in a shuffled order, so the
//! machine's noise spreads over all of them; the table shows medians and
//! spreads, and ratios taken within the one run. Also measured: mmtrace's
//! own CPU per event, its BPF time per program (kernel.bpf_stats_enabled),
//! and its start-up and detach times. Writes docs/BENCHMARKS.md.
//!
//! Nothing here fails on a missed target: the table says by how much.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    fmt::Write as _,
    io::{BufRead, BufReader},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::{cargo, run, step, workspace_root};

/// The tracepoints mmtrace attaches for every event kind (tracer's
/// kernel/plan.rs): the floor attaches the same ones.
const SYSCALLS: &[&str] = &[
    "brk",
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "pkey_mprotect",
    "mlock",
    "mlock2",
    "munlock",
    "mlockall",
    "munlockall",
    "mseal",
    "shmat",
    "shmdt",
    "remap_file_pages",
];
const OTHER_TRACEPOINTS: &[&str] = &[
    "exceptions:page_fault_user",
    "kmem:rss_stat",
    "sched:sched_process_exec",
    "task:task_newtask",
    "sched:sched_process_exit",
];

/// How one tracer runs a load.
#[derive(Clone)]
enum How {
    Untraced,
    /// bpftrace with this program, running the load with `-c`.
    Bpftrace(String),
    /// `mmtrace ARGS -- LOAD`; `file`: ARGS end with `-o` and a new file.
    Mmtrace {
        args: Vec<&'static str>,
        file: bool,
    },
    Strace,
    PerfTrace,
}

#[derive(Clone)]
struct Tracer {
    name: &'static str,
    how: How,
}

struct Load {
    name: &'static str,
    args: Vec<OsString>,
}

/// One run of a load under a tracer.
#[derive(Clone, Copy, Default)]
struct Sample {
    /// The load's CPU for its work.
    cpu: u64,
    wall: u64,
    /// The tracer's own CPU (user + system), when it is our child.
    tracer_cpu: u64,
    /// mmtrace's event and lost counts.
    events: u64,
    lost: u64,
}

pub struct Figures {
    markdown: String,
}

fn tracepoint_exists(tp: &str) -> bool {
    let (group, name) = tp.split_once(':').unwrap_or(("", tp));
    Path::new("/sys/kernel/tracing/events")
        .join(group)
        .join(name)
        .exists()
}

fn floor_probes() -> Vec<String> {
    let mut probes = Vec::new();
    for sc in SYSCALLS {
        for dir in ["enter", "exit"] {
            let tp = format!("syscalls:sys_{dir}_{sc}");
            if tracepoint_exists(&tp) {
                probes.push(format!("tracepoint:{tp}"));
            }
        }
    }
    for tp in OTHER_TRACEPOINTS {
        if tracepoint_exists(tp) {
            probes.push(format!("tracepoint:{tp}"));
        }
    }
    probes
}

/// A bpftrace one-liner doing mmtrace's job: every memory call with its
/// arguments and result, every user fault, exec/fork/exit.
fn bpftrace_job() -> String {
    let mut s = String::new();
    for sc in SYSCALLS {
        if tracepoint_exists(&format!("syscalls:sys_enter_{sc}")) {
            let _ = writeln!(
                s,
                "tracepoint:syscalls:sys_enter_{sc} {{ @a[tid] = nsecs; printf(\"%d %d %s {sc} %lx\\n\", pid, tid, comm, args->__syscall_nr); }}"
            );
            let _ = writeln!(
                s,
                "tracepoint:syscalls:sys_exit_{sc} {{ printf(\"%d %d %s {sc} = %lx %d\\n\", pid, tid, comm, args->ret, nsecs - @a[tid]); delete(@a[tid]); }}"
            );
        }
    }
    s.push_str(
        "tracepoint:exceptions:page_fault_user { printf(\"%d %d %s fault %lx %lx %lx\\n\", pid, tid, comm, args->address, args->ip, args->error_code); }\n\
         tracepoint:sched:sched_process_exec { printf(\"%d exec %s\\n\", pid, str(args->filename)); }\n\
         tracepoint:sched:sched_process_exit { printf(\"%d exit\\n\", pid); }\n",
    );
    s
}

fn tracers(quick: bool) -> Vec<Tracer> {
    let probes = floor_probes().join(",\n");
    let mm = |args: &[&'static str], file: bool| How::Mmtrace {
        args: args.to_vec(),
        file,
    };
    let mut list = vec![
        Tracer {
            name: "untraced",
            how: How::Untraced,
        },
        Tracer {
            name: "floor: empty BPF program",
            how: How::Bpftrace(format!("{probes}\n{{ }}")),
        },
        Tracer {
            name: "floor: count-only BPF program",
            how: How::Bpftrace(format!("{probes}\n{{ @[probe] = count(); }}")),
        },
        Tracer {
            name: "mmtrace stream (default: fault summary, text)",
            how: mm(&["stream"], false),
        },
        Tracer {
            name: "mmtrace stream --faults all --format jsonl",
            how: mm(&["stream", "--faults", "all", "--format", "jsonl"], false),
        },
    ];
    if !quick {
        list.extend([
            Tracer {
                name: "mmtrace stream --faults all (text)",
                how: mm(&["stream", "--faults", "all"], false),
            },
            Tracer {
                name: "mmtrace stream --faults all --format jsonl, to a file",
                how: mm(
                    &["stream", "--faults", "all", "--format", "jsonl", "-o"],
                    true,
                ),
            },
            Tracer {
                name: "mmtrace stream --faults off",
                how: mm(&["stream", "--faults", "off"], false),
            },
            Tracer {
                name: "mmtrace record (timeline v2 to a file)",
                how: mm(&["record", "-o"], true),
            },
        ]);
    }
    list.extend([
        Tracer {
            name: "strace -f -e trace=%memory",
            how: How::Strace,
        },
        Tracer {
            name: "perf trace -F all (memory syscalls)",
            how: How::PerfTrace,
        },
        Tracer {
            name: "bpftrace one-liner (printf per event)",
            how: How::Bpftrace(bpftrace_job()),
        },
    ]);
    list
}

fn loads(bin: &Path, dir: &Path, quick: bool) -> Result<Vec<Load>> {
    let scale = if quick { 4 } else { 1 };
    let b = |args: &[&str]| -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![bin.join("benchload").into()];
        v.extend(args.iter().map(OsString::from));
        v
    };
    // A C file big enough that the compile is mostly the compiler's work.
    let c_file = dir.join("bench-compile.c");
    let mut c = String::new();
    for i in 0..400 {
        let _ = writeln!(
            c,
            "int f{i}(int x) {{ int s = 0; for (int i = 0; i < x; i++) s += i * {i} ^ (s >> 3); return s; }}"
        );
    }
    std::fs::write(&c_file, c)?;
    let c_file = c_file.to_string_lossy().into_owned();
    let n = |base: u64| (base / scale).max(1).to_string();
    Ok(vec![
        Load {
            name: "fault storm (THP off)",
            args: b(&["faults", &n(200_000)]),
        },
        Load {
            name: "4 KiB mmap/munmap loop",
            args: b(&["mmap", &n(100_000)]),
        },
        Load {
            name: "brk loop",
            args: b(&["brk", &n(100_000)]),
        },
        Load {
            name: "two processes at once (mmap/munmap)",
            args: b(&["pair", &n(50_000)]),
        },
        Load {
            name: "python3 start-up x20",
            args: b(&["run", &n(20), "python3", "-c", "pass"]),
        },
        Load {
            name: "a C compile (gcc -O2) x3",
            args: b(&["run", &n(3), "gcc", "-O2", "-c", &c_file, "-o", "/dev/null"]),
        },
    ])
}

/// A small deterministic shuffle (the order of tracers in a round).
fn shuffle<T>(items: &mut [T], seed: &mut u64) {
    for i in (1..items.len()).rev() {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let j = (*seed >> 33) as usize % (i + 1);
        items.swap(i, j);
    }
}

/// Waits for `pid` and returns its status and the CPU (user + system) it
/// and the children it waited for used.
fn wait_rusage(pid: u32) -> Result<(std::process::ExitStatus, u64)> {
    let mut status = 0;
    // SAFETY: wait4 fills the rusage it is given; pid is our child.
    let mut ru: libc_rusage::Rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc_rusage::wait4(pid as i32, &mut status, 0, &mut ru) };
    if r < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let ns = |tv: libc_rusage::Timeval| tv.sec as u64 * 1_000_000_000 + tv.usec as u64 * 1000;
    Ok((
        std::process::ExitStatus::from_raw(status),
        ns(ru.utime) + ns(ru.stime),
    ))
}

/// The few libc declarations wait4 needs (xtask has no libc dependency).
mod libc_rusage {
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct Timeval {
        pub sec: i64,
        pub usec: i64,
    }
    #[repr(C)]
    pub struct Rusage {
        pub utime: Timeval,
        pub stime: Timeval,
        pub rest: [i64; 14],
    }
    extern "C" {
        pub fn wait4(pid: i32, status: *mut i32, options: i32, rusage: *mut Rusage) -> i32;
    }
}

fn parse_load(text: &str) -> Option<(u64, u64, u64)> {
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("cpu_ns")?, field("wall_ns")?, field("total_cpu_ns")?))
}

/// mmtrace's closing line: `mmtrace: N events in S s, ...; lost L; ...`.
fn parse_mmtrace_summary(stderr: &str) -> (u64, u64) {
    let mut events = 0;
    let mut lost = 0;
    for line in stderr.lines() {
        if let Some(rest) = line.strip_prefix("mmtrace: ") {
            if let Some((n, _)) = rest.split_once(" events in ") {
                events = n.trim().parse().unwrap_or(0);
                if let Some(l) = rest.split("lost ").nth(1) {
                    lost = l
                        .split(|c: char| !c.is_ascii_digit())
                        .next()
                        .and_then(|d| d.parse().ok())
                        .unwrap_or(0);
                }
            }
        }
    }
    (events, lost)
}

struct Runner {
    mmtrace: PathBuf,
    dir: PathBuf,
    seq: u64,
}

impl Runner {
    fn once(&mut self, tracer: &Tracer, load: &Load) -> Result<Sample> {
        self.seq += 1;
        let out = self.dir.join(format!("load-{}.txt", self.seq));
        let err = self.dir.join(format!("tracer-{}.err", self.seq));
        let file = self.dir.join(format!("trace-{}.out", self.seq));
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_file(&file);
        let load_line = || {
            load.args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut cmd = match &tracer.how {
            How::Untraced => {
                let mut c = Command::new(&load.args[0]);
                c.args(&load.args[1..]);
                c
            }
            How::Bpftrace(program) => {
                let mut c = Command::new("bpftrace");
                c.args(["-o", "/dev/null", "-e", program, "-c", &load_line()]);
                c
            }
            How::Mmtrace {
                args,
                file: to_file,
            } => {
                let mut c = Command::new(&self.mmtrace);
                c.args(args);
                if *to_file {
                    c.arg(&file);
                }
                c.arg("--").args(&load.args);
                c
            }
            How::Strace => {
                let mut c = Command::new("strace");
                c.args(["-f", "-qq", "-e", "trace=%memory", "-o", "/dev/null", "--"])
                    .args(&load.args);
                c
            }
            How::PerfTrace => {
                let mut c = Command::new("perf");
                c.args([
                    "trace",
                    "-o",
                    "/dev/null",
                    "-F",
                    "all",
                    "-e",
                    "brk,mmap,munmap,mremap,mprotect,madvise",
                    "--",
                ])
                .args(&load.args);
                c
            }
        };
        cmd.env("BENCHLOAD_OUT", &out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err)?);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", tracer.name))?;
        let (status, cpu) = wait_rusage(child.id())?;
        std::mem::forget(child);
        let stderr = std::fs::read_to_string(&err).unwrap_or_default();
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_file(&err);
        let _ = std::fs::remove_file(&file);
        let Some((work, wall, total)) = parse_load(&text) else {
            bail!(
                "{} under {} failed ({status}): {}",
                load.name,
                tracer.name,
                stderr.lines().last().unwrap_or("")
            );
        };
        let (events, lost) = match tracer.how {
            How::Mmtrace { .. } => parse_mmtrace_summary(&stderr),
            _ => (0, 0),
        };
        Ok(Sample {
            cpu: work,
            wall,
            tracer_cpu: cpu.saturating_sub(total),
            events,
            lost,
        })
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    if v.is_empty() {
        0
    } else {
        v[v.len() / 2]
    }
}

fn ms(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1e6)
}

/// The row of a tracer's samples: median, spread, ratios.
struct Row {
    cpu: u64,
    min: u64,
    max: u64,
    wall: u64,
    tracer_cpu: u64,
    events: u64,
    lost: u64,
}

fn row(samples: &[Sample]) -> Row {
    let cpus: Vec<u64> = samples.iter().map(|s| s.cpu).collect();
    Row {
        cpu: median(cpus.clone()),
        min: cpus.iter().copied().min().unwrap_or(0),
        max: cpus.iter().copied().max().unwrap_or(0),
        wall: median(samples.iter().map(|s| s.wall).collect()),
        tracer_cpu: median(samples.iter().map(|s| s.tracer_cpu).collect()),
        events: median(samples.iter().map(|s| s.events).collect()),
        lost: samples.iter().map(|s| s.lost).sum(),
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

/// The tracer comparison; returns its markdown section.
fn compare_loads(runner: &mut Runner, rounds: usize, quick: bool) -> Result<(String, Vec<Target>)> {
    let tracers = tracers(quick);
    let bin = workspace_root().join("target").join("release");
    let loads = loads(&bin, &runner.dir, quick)?;
    let mut md = String::new();
    let mut targets = Vec::new();
    let mut seed = 0x6d6d7472616365u64;
    for load in &loads {
        step(format!("bench: {} ({rounds} rounds)", load.name));
        let mut samples: BTreeMap<usize, Vec<Sample>> = BTreeMap::new();
        for _ in 0..rounds {
            let mut order: Vec<usize> = (0..tracers.len()).collect();
            shuffle(&mut order, &mut seed);
            for i in order {
                let s = runner.once(&tracers[i], load)?;
                samples.entry(i).or_default().push(s);
            }
        }
        let rows: Vec<Row> = (0..tracers.len()).map(|i| row(&samples[&i])).collect();
        let base = rows[0].cpu;
        let floor = rows[2].cpu.saturating_sub(base);
        let _ = writeln!(md, "\n### {}\n", load.name);
        let _ = writeln!(
            md,
            "| tracer | load CPU ms (median) | min-max | x untraced | added CPU / floor's | wall ms | tracer CPU ms | events | lost |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (t, r) in tracers.iter().zip(&rows) {
            let added = r.cpu.saturating_sub(base);
            let vs_floor = if t.name == "untraced" {
                String::new()
            } else {
                format!("{:.2}", ratio(added, floor))
            };
            let (events, lost) = match t.how {
                How::Mmtrace { .. } => (r.events.to_string(), r.lost.to_string()),
                _ => (String::new(), String::new()),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {}-{} | {:.2} | {} | {} | {} | {} | {} |",
                t.name,
                ms(r.cpu),
                ms(r.min),
                ms(r.max),
                ratio(r.cpu, base),
                vs_floor,
                ms(r.wall),
                ms(r.tracer_cpu),
                events,
                lost
            );
        }
        let by_name = |name: &str| {
            tracers
                .iter()
                .position(|t| t.name == name)
                .map(|i| &rows[i])
        };
        let default = by_name("mmtrace stream (default: fault summary, text)");
        let all = by_name("mmtrace stream --faults all --format jsonl");
        match load.name {
            "4 KiB mmap/munmap loop" | "brk loop" => {
                if let Some(r) = default {
                    targets.push(Target {
                        what: format!(
                            "{}: mmtrace's added CPU / the count-only floor's",
                            load.name
                        ),
                        goal: 1.2,
                        value: ratio(r.cpu.saturating_sub(base), floor),
                    });
                }
            }
            "fault storm (THP off)" => {
                if let Some(r) = all {
                    targets.push(Target {
                        what: "fault storm, every fault streamed: added CPU / the floor's".into(),
                        goal: 1.5,
                        value: ratio(r.cpu.saturating_sub(base), floor),
                    });
                }
                if let Some(r) = default {
                    targets.push(Target {
                        what: "fault storm, fault summary: x untraced".into(),
                        goal: 1.03,
                        value: ratio(r.cpu, base),
                    });
                }
            }
            "python3 start-up x20" | "a C compile (gcc -O2) x3" => {
                if let Some(r) = default {
                    targets.push(Target {
                        what: format!("{}: x untraced", load.name),
                        goal: 1.02,
                        value: ratio(r.cpu, base),
                    });
                }
            }
            _ => {}
        }
    }
    Ok((md, targets))
}

struct Target {
    what: String,
    goal: f64,
    value: f64,
}

/// mmtrace's userspace CPU per event, by format: the difference between a
/// large and a small mmap/munmap loop (start-up cancels out).
fn per_event(runner: &mut Runner, rounds: usize) -> Result<(String, Vec<Target>)> {
    step("bench: mmtrace's CPU per event");
    let bin = workspace_root().join("target").join("release");
    let load = |n: u64| Load {
        name: "mmap loop",
        args: vec![
            bin.join("benchload").into(),
            "mmap".into(),
            n.to_string().into(),
        ],
    };
    let (small, large) = (load(20_000), load(200_000));
    let mut md = String::from(
        "\n| format | ns of mmtrace CPU per event (median) | events per run |\n|---|---:|---:|\n",
    );
    let mut targets = Vec::new();
    for (name, args, goal) in [
        ("jsonl", vec!["stream", "--format", "jsonl"], 200.0),
        ("text", vec!["stream"], 300.0),
        ("record (timeline v2)", vec!["record", "-o"], f64::NAN),
    ] {
        let file = args.last() == Some(&"-o");
        let tracer = Tracer {
            name: "mmtrace",
            how: How::Mmtrace { args, file },
        };
        let mut per = Vec::new();
        let mut events = 0;
        for _ in 0..rounds {
            let a = runner.once(&tracer, &small)?;
            let b = runner.once(&tracer, &large)?;
            let de = b.events.saturating_sub(a.events);
            if let Some(ns) = b.tracer_cpu.saturating_sub(a.tracer_cpu).checked_div(de) {
                per.push(ns);
            }
            events = b.events;
        }
        let ns = median(per);
        let _ = writeln!(md, "| {name} | {ns} | {events} |");
        if !goal.is_nan() {
            targets.push(Target {
                what: format!("userspace CPU per event, {name} (ns)"),
                goal,
                value: ns as f64,
            });
        }
    }
    Ok((md, targets))
}

/// Start-up (spawn to attached) and detach (SIGINT to exit) of a
/// system-wide `mmtrace stream`, and its BPF time per program while a fault
/// storm and an mmap loop run.
fn start_detach_and_bpf(runner: &Runner, rounds: usize) -> Result<(String, Vec<Target>)> {
    step("bench: start-up, detach, BPF time per program");
    let bin = workspace_root().join("target").join("release");
    let stats = Path::new("/proc/sys/kernel/bpf_stats_enabled");
    let stats_before = std::fs::read_to_string(stats).unwrap_or_default();
    let mut starts = Vec::new();
    let mut detaches = Vec::new();
    let mut programs: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for round in 0..rounds {
        let first = round == 0;
        if first {
            let _ = std::fs::write(stats, "1");
        }
        let started = Instant::now();
        let mut child = Command::new(&runner.mmtrace)
            .args(["stream", "--faults", "all", "--format", "jsonl"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("Ctrl-C to stop") => break,
                Some(Ok(_)) => {}
                _ => bail!("mmtrace stream ended before it attached"),
            }
        }
        starts.push(started.elapsed().as_nanos() as u64);
        // The rest of stderr must not block mmtrace.
        let drain = std::thread::spawn(move || for _ in lines {});
        if first {
            for args in [["faults", "100000"], ["mmap", "100000"]] {
                run(Command::new(bin.join("benchload"))
                    .args(args)
                    .stdout(Stdio::null()))?;
            }
            programs = bpf_stats(child.id());
            let _ = std::fs::write(stats, stats_before.trim());
        }
        let stopping = Instant::now();
        // SAFETY: our child.
        unsafe { libc_kill(child.id() as i32, 2) };
        child.wait()?;
        detaches.push(stopping.elapsed().as_nanos() as u64);
        let _ = drain.join();
    }
    let start = median(starts);
    let detach = median(detaches);
    let mut md = format!(
        "\n| | median |\n|---|---:|\n| start-up to attached (`stream --faults all`, system-wide) | {} ms |\n| detach (SIGINT to exit) | {} ms |\n",
        ms(start),
        ms(detach)
    );
    md.push_str("\n| BPF program | runs | ns per run |\n|---|---:|---:|\n");
    for (name, (runs, ns)) in &programs {
        if *runs > 0 {
            let _ = writeln!(md, "| {name} | {runs} | {} |", ns / runs);
        }
    }
    let targets = vec![
        Target {
            what: "start-up to attached (ms)".into(),
            goal: 150.0,
            value: start as f64 / 1e6,
        },
        Target {
            what: "detach (ms)".into(),
            goal: 100.0,
            value: detach as f64 / 1e6,
        },
    ];
    Ok((md, targets))
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Run counts and times of the BPF programs `pid` holds: the program ids
/// in its descriptors' fdinfo (program and link fds), their counts from
/// bpftool.
fn bpf_stats(pid: u32) -> BTreeMap<String, (u64, u64)> {
    let mut ids = std::collections::BTreeSet::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) {
        for fd in fds.flatten() {
            let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
            if let Some(id) = info
                .lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                ids.insert(id);
            }
        }
    }
    let mut out = BTreeMap::new();
    let Ok(o) = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
    else {
        return out;
    };
    let Ok(serde_json::Value::Array(progs)) = serde_json::from_slice(&o.stdout) else {
        return out;
    };
    for p in progs {
        if !p["id"].as_u64().is_some_and(|id| ids.contains(&id)) {
            continue;
        }
        let name = p["name"].as_str().unwrap_or("?").to_string();
        let e = out.entry(name).or_insert((0, 0));
        e.0 += p["run_cnt"].as_u64().unwrap_or(0);
        e.1 += p["run_time_ns"].as_u64().unwrap_or(0);
    }
    out
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let other_bpf = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0);
    format!(
        "{cores} cores ({cpu}), kernel {}; {other_bpf} BPF programs loaded at the start (by others)",
        kernel.trim()
    )
}

/// A part of the comparison run alone (`cargo xtask bench --only`).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Only {
    /// Start-up (spawn to attached) and detach, and BPF time per program.
    Startup,
    /// mmtrace's CPU per event, by format.
    PerEvent,
}

/// Runs one part of the comparison with `rounds` rounds; returns its table
/// and targets as markdown.
pub fn only(part: Only, rounds: usize) -> Result<String> {
    run(cargo().args(["build", "--release", "-p", "tracer", "--bin", "mmtrace"]))?;
    run(cargo().args(["build", "--release", "-p", "tests", "--bin", "benchload"]))?;
    let dir = workspace_root().join("target").join("tmp").join("bench");
    std::fs::create_dir_all(&dir)?;
    let mut runner = Runner {
        mmtrace: workspace_root().join("target/release/mmtrace"),
        dir,
        seq: 0,
    };
    let (mut md, targets) = match part {
        Only::Startup => start_detach_and_bpf(&runner, rounds)?,
        Only::PerEvent => per_event(&mut runner, rounds)?,
    };
    md = format!("Machine: {}. {rounds} rounds.\n{md}", machine());
    md.push_str("\n| target | goal | measured |\n|---|---:|---:|\n");
    for t in &targets {
        let _ = writeln!(md, "| {} | {} | {:.2} |", t.what, t.goal, t.value);
    }
    Ok(md)
}

/// Runs the comparison; `extra` is markdown from the other benchmarks.
pub fn compare(rounds: usize, quick: bool, extra: &str) -> Result<Figures> {
    crate::setup::bench_tools()?;
    run(cargo().args(["build", "--release", "-p", "tracer", "--bin", "mmtrace"]))?;
    run(cargo().args(["build", "--release", "-p", "tests", "--bin", "benchload"]))?;
    let dir = workspace_root().join("target").join("tmp").join("bench");
    std::fs::create_dir_all(&dir)?;
    let machine = machine();
    let mut runner = Runner {
        mmtrace: workspace_root().join("target/release/mmtrace"),
        dir,
        seq: 0,
    };
    let started = Instant::now();
    let (loads_md, mut targets) = compare_loads(&mut runner, rounds, quick)?;
    let (event_md, t) = per_event(&mut runner, rounds.min(3))?;
    targets.extend(t);
    let (start_md, t) = start_detach_and_bpf(&runner, rounds.min(5))?;
    targets.extend(t);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Benchmarks\n\n\
         Generated by `cargo xtask bench{}` (xtask/src/compare.rs); never edit by hand.\n\n\
         Machine: {machine}. {rounds} rounds, each running every tracer once in a shuffled order; \
         the figures are medians with their spread, and every ratio is taken within this one run. \
         The load measures its own CPU (tests/src/bin/benchload.rs), so wrapping tracers \
         (strace, perf trace, mmtrace with a command) and system-wide ones (bpftrace) are \
         measured alike. \"x untraced\" is the load's CPU over its untraced CPU; \
         \"added CPU / floor's\" is the CPU tracing added over what the count-only BPF program \
         on the same tracepoints added (the floor: what any tracer on these hooks pays). \
         The floor is written with bpftrace on the tracepoints; where the kernel allows, mmtrace \
         hooks page faults as a BTF raw tracepoint (no record built) and, without a model, its \
         syscalls at their exit alone, so it can cost less than the floor. \
         mmtrace ran with a command (its filter in the kernel), to standard output on /dev/null \
         unless \"to a file\". Took {:.0} s.",
        if quick { " --quick" } else { "" },
        started.elapsed().as_secs_f64()
    );
    md.push_str("\n## Targets\n\n| target | goal | measured | |\n|---|---:|---:|---|\n");
    for t in &targets {
        let ok = if t.value.is_nan() {
            "no figure"
        } else if t.value <= t.goal {
            "met"
        } else {
            "MISSED"
        };
        let _ = writeln!(md, "| {} | {} | {:.2} | {ok} |", t.what, t.goal, t.value);
    }
    md.push_str("\n## Cost to the traced program\n");
    md.push_str(&loads_md);
    md.push_str("\n## mmtrace's own CPU per event\n\nThe difference between a 200 000- and a 20 000-round mmap/munmap loop, over the difference of their events.\n");
    md.push_str(&event_md);
    md.push_str("\n## Start-up, detach and BPF time\n\nBPF time from `kernel.bpf_stats_enabled` while a 100 000-page fault storm and a 100 000-round mmap loop ran, system-wide (other processes' events included).\n");
    md.push_str(&start_md);
    md.push_str(extra);
    Ok(Figures { markdown: md })
}

impl Figures {
    pub fn markdown(&self) -> &str {
        &self.markdown
    }

    pub fn write(&self) -> Result<()> {
        let path = workspace_root().join("docs").join("BENCHMARKS.md");
        std::fs::write(&path, &self.markdown)
            .with_context(|| format!("cannot write {}", path.display()))?;
        step(format!("bench: wrote {}", path.display()));
        Ok(())
    }
}
