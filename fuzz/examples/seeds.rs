//! Writes the hand-made seeds of the fuzz corpus, and checks each: the
//! records decode, the timelines parse (or fail as intended).
//!
//! ```text
//! cd fuzz && cargo run --example seeds
//! ```
//!
//! - `corpus/decode/seed-*`: a valid record of each kind, built from
//!   tracer_common's `repr(C)` types (so they follow the wire format).
//! - `corpus/timeline/seed-*.json`: tests/data/timeline-small.json and
//!   variants of it: no processes, hostile strings, extreme numbers, drift
//!   and uncertain intervals, another schema, truncated.
//! - `corpus/timeline/seed-v2-*.jsonl`: tests/data/timeline-v2-small.jsonl
//!   (a v2 recording) and variants: cut short, hostile strings, extreme
//!   numbers, records out of place.
//! - `corpus/maps/seed-odd-lines`: maps lines a parser may choke on. The
//!   other maps seeds are real /proc/PID/maps files of a few programs,
//!   copied by hand.
//!
//! The rest of each corpus is what fuzzing found, minimised with `cargo
//! xtask fuzz --minimise` (which keeps the `seed-*` files).

use std::{fs, mem::size_of, path::Path};

use serde_json::{json, Value};
use tracer_common::{
    EventHeader, EventKind, ExecEvent, ExitEvent, FaultEvent, ForkEvent, MmCounters, MmapFileEvent,
    StackEvent, SyscallEvent, COMM_LEN, EXEC_PATH_LEN, FILE_PATH_TRUNCATED, MM_FIELDS, MM_SETTLED,
    PATH_BUF_LEN, STACK_SOURCE_FAULT, STACK_SOURCE_FEXIT,
};

fn main() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = fuzz.join("corpus");
    decode_seeds(&corpus.join("decode"));
    timeline_seeds(
        &corpus.join("timeline"),
        &fuzz.join("../tests/data/timeline-small.json"),
    );
    timeline_v2_seeds(
        &corpus.join("timeline"),
        &fuzz.join("../tests/data/timeline-v2-small.jsonl"),
    );
    maps_seeds(&corpus.join("maps"));
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("create the corpus directory");
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    println!("{} ({} bytes)", path.display(), bytes.len());
}

// ---------------------------------------------------------------------------
// decode
// ---------------------------------------------------------------------------

fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: the record types are repr(C) integers and integer arrays with
    // explicit padding fields: every byte of a value is initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

/// All-zero plain data, padding included.
fn zeroed<T: Copy>() -> T {
    // SAFETY: only used for the repr(C) integer records, for which zero is
    // a valid value.
    unsafe { std::mem::zeroed() }
}

fn header(kind: EventKind, comm: &[u8]) -> EventHeader {
    let mut h: EventHeader = zeroed();
    h.ts_ns = 8_123_450_212_000;
    h.kind = kind as u32;
    h.cpu = 1;
    h.tgid = 4242;
    h.tid = 4243;
    let n = comm.len().min(COMM_LEN);
    h.comm[..n].copy_from_slice(&comm[..n]);
    h
}

fn syscall(kind: EventKind, args: [u64; 6], ret: i64) -> SyscallEvent {
    let mut e: SyscallEvent = zeroed();
    e.header = header(kind, b"python3");
    e.enter_ns = 8_123_450_211_000;
    e.args = args;
    e.ret = ret;
    e.mm = counters();
    e
}

/// The counters of an address space after a change, all read and settled.
fn counters() -> MmCounters {
    MmCounters {
        flags: MM_FIELDS | MM_SETTLED,
        map_count: 31,
        total_vm: 2067,
        locked_vm: 2,
        data_vm: 395,
        exec_vm: 731,
        stack_vm: 33,
    }
}

fn decode_seeds(dir: &Path) {
    let mut seeds: Vec<(&str, Vec<u8>)> = vec![
        (
            "brk",
            bytes_of(&syscall(
                EventKind::Brk,
                [
                    0x55d0_c0c0_0000,
                    0x55d0_c0b0_0000,
                    0x55d0_c0a0_0000,
                    0,
                    0,
                    0,
                ],
                0x55d0_c0c0_0000,
            )),
        ),
        (
            "mmap-anon",
            bytes_of(&syscall(
                EventKind::Mmap,
                [0, 1 << 20, 3, 0x22, u64::MAX, 0],
                0x7f3a_1234_0000,
            )),
        ),
        (
            "munmap",
            bytes_of(&syscall(
                EventKind::Munmap,
                [0x7f3a_1234_0000, 4096, 0, 0, 0, 0],
                0,
            )),
        ),
        (
            "mremap",
            bytes_of(&syscall(
                EventKind::Mremap,
                [0x7f3a_1234_0000, 4096, 8192, 1, 0, 0],
                0x7f3a_2000_0000,
            )),
        ),
        (
            "mprotect-error",
            bytes_of(&syscall(
                EventKind::Mprotect,
                [0x7f3a_1234_0000, 4096, 7, 0, 0, 0],
                -12,
            )),
        ),
        (
            "pkey-mprotect",
            bytes_of(&syscall(
                EventKind::PkeyMprotect,
                [0x7f3a_1234_0000, 4096, 3, 1, 0, 0],
                0,
            )),
        ),
        (
            "madvise",
            bytes_of(&syscall(
                EventKind::Madvise,
                [0x7f3a_1234_0000, 4096, 4, 0, 0, 0],
                0,
            )),
        ),
        (
            "mlock2",
            bytes_of(&syscall(
                EventKind::Mlock2,
                [0x7f3a_1234_0000, 8192, 1, 0, 0, 0],
                0,
            )),
        ),
        (
            "mlockall",
            bytes_of(&syscall(EventKind::Mlockall, [3, 0, 0, 0, 0, 0], 0)),
        ),
        (
            "munlockall",
            bytes_of(&syscall(EventKind::Munlockall, [0; 6], 0)),
        ),
        (
            "mseal-error",
            bytes_of(&syscall(
                EventKind::Mseal,
                [0x7f3a_1234_0000, 4096, 0, 0, 0, 0],
                -1,
            )),
        ),
        (
            "shmat",
            bytes_of(&syscall(
                EventKind::Shmat,
                [32769, 0, 0o10000, 0, 0, 0],
                0x7f3a_1300_0000,
            )),
        ),
        (
            "shmdt",
            bytes_of(&syscall(
                EventKind::Shmdt,
                [0x7f3a_1300_0000, 0, 0, 0, 0, 0],
                0,
            )),
        ),
        (
            "remap-file-pages",
            bytes_of(&syscall(
                EventKind::RemapFilePages,
                [0x7f3a_1234_1000, 4096, 0, 3, 0, 0],
                0,
            )),
        ),
    ];

    let mut file: MmapFileEvent = zeroed();
    file.sys = syscall(
        EventKind::Mmap,
        [0, 8192, 1, 2, 3, 0x1000],
        0x7f00_0000_0000,
    );
    let parts = b"libc.so.6\0x86_64-linux-gnu\0lib\0usr\0";
    file.file.dev = (0xfd << 20) | 1;
    file.file.path_len = parts.len() as u32;
    file.file.ino = 1_311_234;
    file.file.path[..parts.len()].copy_from_slice(parts);
    seeds.push(("mmap-file", bytes_of(&file)));
    // A truncated path of odd bytes.
    let mut odd = file;
    let parts = b"we ird\x1b[31m\xff\0dir\0";
    odd.file.path = [0; PATH_BUF_LEN];
    odd.file.path[..parts.len()].copy_from_slice(parts);
    odd.file.path_len = parts.len() as u32;
    odd.file.flags = FILE_PATH_TRUNCATED;
    odd.sys.header.comm = *b"\x1b]0;title\x07\xc2\x85\xe2\x80\xae!";
    seeds.push(("mmap-file-odd", bytes_of(&odd)));

    let mut fault: FaultEvent = zeroed();
    fault.header = header(EventKind::Fault, b"python3");
    fault.addr = 0x7f3a_1234_0010;
    fault.ip = 0x55d0_c0a0_1234;
    fault.error_code = 0x6;
    seeds.push(("fault", bytes_of(&fault)));

    for (name, source) in [
        ("stack-fexit", STACK_SOURCE_FEXIT),
        ("stack-fault", STACK_SOURCE_FAULT),
    ] {
        let mut stack: StackEvent = zeroed();
        stack.header = header(EventKind::Stack, b"python3");
        stack.old_start = 0x7ffe_519c_3000;
        stack.new_start = 0x7ffe_519b_3000;
        stack.source = source;
        stack.mm = counters();
        seeds.push((name, bytes_of(&stack)));
    }

    let mut exec: ExecEvent = zeroed();
    exec.header = header(EventKind::Exec, b"python3");
    exec.start_time = 8_123_450_212_000;
    exec.old_pid = 4242;
    exec.mm = counters();
    let path = b"/usr/bin/python3.12";
    exec.path[..path.len()].copy_from_slice(path);
    exec.path_len = path.len() as u32;
    seeds.push(("exec", bytes_of(&exec)));
    // A path_len past the buffer.
    let mut long = exec;
    long.path = [b'a'; EXEC_PATH_LEN];
    long.path_len = u32::MAX;
    seeds.push(("exec-long", bytes_of(&long)));

    let mut fork: ForkEvent = zeroed();
    fork.header = header(EventKind::Fork, b"python3");
    fork.child_pid = 4250;
    fork.clone_flags = 0x0120_0011;
    seeds.push(("fork", bytes_of(&fork)));

    let mut exit: ExitEvent = zeroed();
    exit.header = header(EventKind::Exit, b"true");
    exit.start_time = 8_123_450_212_000;
    exit.exit_code = 9; // killed by SIGKILL
    seeds.push(("exit-signal", bytes_of(&exit)));

    for (name, bytes) in seeds {
        if let Err(e) = tracer::event::decode::decode(&bytes) {
            panic!("the seed {name} does not decode: {e}");
        }
        write(dir, &format!("seed-{name}"), &bytes);
    }
}

// ---------------------------------------------------------------------------
// timeline
// ---------------------------------------------------------------------------

fn timeline_seeds(dir: &Path, small: &Path) {
    let bytes = fs::read(small).unwrap_or_else(|e| panic!("cannot read {}: {e}", small.display()));
    let doc: Value = serde_json::from_slice(&bytes).expect("timeline-small.json is JSON");
    let compact = |v: &Value| serde_json::to_vec(v).expect("serialise");
    let mut seeds: Vec<(&str, Vec<u8>, bool)> = vec![("small.json", compact(&doc), true)];

    let mut empty = doc.clone();
    empty["processes"] = json!([]);
    empty["command"] = Value::Null;
    seeds.push(("no-processes.json", compact(&empty), true));

    // One process, every string hostile: escape sequences, C1 controls,
    // bidi overrides, a long path.
    let mut hostile = doc.clone();
    let p = json!(hostile["processes"][1].clone());
    hostile["processes"] = json!([p]);
    let evil = "\u{1b}[2J\u{1b}]0;pwned\u{7}\u{85}\u{202e}txt.exe\r\t\\";
    hostile["host"] = json!(evil);
    hostile["kernel"] = json!(evil);
    hostile["started_at"] = json!(evil);
    hostile["stack_source"] = json!(evil);
    hostile["command"] = json!([evil, "it's", "", "a b"]);
    hostile["lost_by_kind"] = json!({ evil: 1 });
    hostile["lost_events"] = json!(1);
    let p = &mut hostile["processes"][0];
    p["comm"] = json!(evil);
    p["exe"] = json!(evil);
    p["exit_signal"] = json!(evil);
    p["exit_code"] = Value::Null;
    let long_path = format!("/{}/{evil}", "very-long-directory-name/".repeat(20));
    for r in p["regions"].as_array_mut().expect("regions") {
        r["path"] = json!(long_path);
        r["perms"] = json!(evil);
        r["kind"] = json!(evil);
        r["dev"] = json!(evil);
    }
    seeds.push(("hostile-strings.json", compact(&hostile), true));

    // Numbers at their limits, empty and maximal regions, drift and
    // uncertain intervals.
    let mut extreme = doc.clone();
    extreme["processes"] = json!([extreme["processes"][0].clone()]);
    extreme["duration_ns"] = json!(u64::MAX);
    extreme["monotonic_start_ns"] = json!(u64::MAX);
    extreme["lost_events"] = json!(u64::MAX);
    extreme["lost_by_kind"] = json!({ "mmap": u64::MAX, "fault": 1 });
    let p = &mut extreme["processes"][0];
    p["pid"] = json!(u32::MAX);
    p["exit_code"] = json!(i32::MIN);
    p["exit_at_ns"] = json!(0);
    p["exec_at_ns"] = json!(u64::MAX);
    let regions = p["regions"].as_array_mut().expect("regions");
    regions[0]["start"] = json!("0xffffffffffffffff");
    regions[0]["end"] = json!("0xffffffffffffffff");
    regions[0]["faults"]["total"] = json!(u64::MAX);
    regions[0]["faults"]["touched_bytes"] = json!(u64::MAX);
    regions[0]["faults"]["bucket_ns"] = json!(0);
    regions[1]["start"] = json!("0x0");
    regions[1]["end"] = json!("0xffffffffffffffff");
    regions[1]["born_ns"] = json!(u64::MAX);
    regions[1]["died_ns"] = json!(0);
    regions[1]["faults"]["mapped_bytes"] = json!(0);
    regions[1]["faults"]["first_ns"] = json!(u64::MAX);
    p["counters"][0]["mapped"] = json!(u64::MAX);
    let entry = json!({
        "start": "0x7f3a12340000", "end": "0x7f3a12341000",
        "perms": "rw-p", "offset": u64::MAX, "path": "/dev/shm/x (deleted)"
    });
    p["drift"] = json!([
        { "t_ns": 5, "kind": "missing", "model": null, "kernel": entry },
        { "t_ns": u64::MAX, "kind": "extra", "model": entry, "kernel": null },
        { "t_ns": 7, "kind": "different", "model": entry, "kernel": entry },
    ]);
    p["uncertain"] = json!([
        { "from_ns": u64::MAX, "to_ns": 0 },
        { "from_ns": 10, "to_ns": null },
    ]);
    seeds.push(("extremes.json", compact(&extreme), true));

    seeds.push((
        "other-schema.json",
        br#"{"schema":"mmtrace.jsonl/v1","processes":[]}"#.to_vec(),
        false,
    ));
    seeds.push(("truncated.json", bytes[..400].to_vec(), false));

    for (name, bytes, valid) in seeds {
        let parsed = tracer::commands::report::parse(name, &bytes);
        match (&parsed, valid) {
            (Ok(_), true) | (Err(_), false) => {}
            (Ok(_), false) => panic!("the seed {name} parses but should not"),
            (Err(e), true) => panic!("the seed {name} does not parse: {e}"),
        }
        write(dir, &format!("seed-{name}"), &bytes);
    }
}

fn timeline_v2_seeds(dir: &Path, small: &Path) {
    let bytes = fs::read(small).unwrap_or_else(|e| panic!("cannot read {}: {e}", small.display()));
    let text = String::from_utf8(bytes.clone()).expect("timeline-v2-small.jsonl is UTF-8");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let join = |lines: &[Value]| {
        let mut out = Vec::new();
        for l in lines {
            out.extend(serde_json::to_vec(l).expect("serialise"));
            out.push(b'\n');
        }
        out
    };
    let mut seeds: Vec<(&str, Vec<u8>, bool)> = vec![("small.jsonl", bytes.clone(), true)];

    // Killed while writing: a prefix cut in the middle of a line.
    seeds.push(("cut.jsonl", bytes[..bytes.len() * 2 / 3].to_vec(), true));

    // Every string hostile.
    let evil = "\u{1b}[2J\u{1b}]0;pwned\u{7}\u{85}\u{202e}txt.exe\r\t\\";
    let mut hostile = lines.clone();
    for l in &mut hostile {
        for f in ["comm", "exe", "host", "kernel", "started_at", "kind", "stack_source"] {
            if l.get(f).is_some_and(Value::is_string) {
                l[f] = json!(evil);
            }
        }
        if l.get("born").is_some() {
            l["born"]["path"] = json!(format!("/{}/{evil}", "long-directory/".repeat(30)));
            l["born"]["kind"] = json!(evil);
        }
        if l["type"] == "end" {
            l["lost_by_kind"] = json!({ evil: 1 });
        }
    }
    seeds.push(("hostile.jsonl", join(&hostile), true));

    // Numbers at their limits.
    let mut extreme = lines.clone();
    for l in &mut extreme {
        for f in ["t_ns", "duration_ns", "mapped", "count", "from_ns"] {
            if l.get(f).is_some() {
                l[f] = json!(u64::MAX);
            }
        }
        if l.get("faults").is_some_and(Value::is_object) {
            l["faults"]["total"] = json!(u64::MAX);
            l["faults"]["touched_bytes"] = json!(u64::MAX);
        }
        if l["type"] == "region" {
            l["end"] = json!("0xffffffffffffffff");
        }
    }
    seeds.push(("extremes.jsonl", join(&extreme), true));

    // Records out of place: a change of a region never born, a second
    // header, records after the end.
    let mut odd = lines.clone();
    let mut orphan = lines[5].clone();
    orphan["region"] = json!(99);
    odd.insert(3, orphan);
    seeds.push(("orphan.jsonl", join(&odd), false));
    let mut twice = lines.clone();
    twice.push(lines[0].clone());
    seeds.push(("after-end.jsonl", join(&twice), false));

    let opts = tracer::commands::report::ReportOptions::default();
    for (name, bytes, valid) in seeds {
        let report = tracer::commands::report::render_v2(name, &bytes[..], &opts);
        match (&report, valid) {
            (Ok(_), true) | (Err(_), false) => {}
            (Ok(_), false) => panic!("the seed {name} reads but should not"),
            (Err(e), true) => panic!("the seed {name} does not read: {e}"),
        }
        write(dir, &format!("seed-v2-{name}"), &bytes);
    }
}

// ---------------------------------------------------------------------------
// maps
// ---------------------------------------------------------------------------

fn maps_seeds(dir: &Path) {
    let odd: &[u8] = b"\
561e93ef7000-561e940a7000 rw-p 00000000 00:00 0                          [heap]
7fe744220000-7fe744353000 rw-p 00000000 00:00 0 
7fe7443ed000-7fe7443ef000 rw-s 00000000 00:01 0                          /SYSV0000002a (deleted)
7fe744414000-7fe744416000 rw-s 00000000 00:01 1028                       /dev/zero (deleted)
7fe744fbc000-7fe744fbe000 rw-s 00000000 00:1b 2                          /dev/shm/toyshm
7f3df8034000-7f3df8035000 rw-p 00000000 fe:00 10011245                   /tmp/we ird\x01na\\012me\xff\x1b[31m
7f3df8035000-7f3df8036000 rw-p 00000000 fe:00 10011246                   /tmp/new\\012line (deleted)
7fe745079000-7fe74507b000 rw-p 00000000 00:00 0                          [anon:glibc: malloc]
7fe745079000-7fe74507b000 rw-s 00000000 00:01 7                          [anon_shmem:buffer]
7fe74507b000-7fe74507c000 ---p 00000000 00:00 0                          [uprobes]
7ffe519c3000-7ffe519e4000 rw-p 00000000 00:00 0                          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
0-ffffffffffffffff rwxs ffffffffffffffff ffffffff:ffffffff 18446744073709551615 relative/path
";
    match tracer::model::maps::parse(odd) {
        Ok(seeds) => assert_eq!(seeds.len(), odd.split(|&b| b == b'\n').count() - 1),
        Err(line) => panic!("line {line} of the odd-lines seed does not parse"),
    }
    write(dir, "seed-odd-lines", odd);
}
