//! Command line.

use std::{ffi::OsString, path::PathBuf};

use clap::{
    builder::{PossibleValue, PossibleValuesParser, TypedValueParser},
    Args, Parser, Subcommand, ValueEnum,
};
pub use tracer_common::EventClass;
use tracer_common::EventKind;

pub use crate::output::Format;

#[derive(Parser, Debug)]
#[command(
    name = "mmtrace",
    version,
    about = "System-wide eBPF tracer of memory events: mmap, munmap, mremap, mprotect, brk, \
             page faults, stack growth and process lifecycle"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Stream memory events live, system-wide or for chosen processes.
    Stream(StreamArgs),
    /// Record every region of the traced processes from birth to death,
    /// checked against /proc/PID/maps, into a JSON timeline.
    Record(RecordArgs),
    /// The always-on recorder: one timeline per process, kept by policy.
    Daemon(DaemonArgs),
    /// Ask the running daemon how it is (its control socket).
    Status(StatusArgs),
    /// The processes the running daemon traces, with their memory.
    Ps(PsArgs),
    /// The live timeline of a process the running daemon traces.
    Dump(DumpArgs),
    /// Summarise a timeline written by `mmtrace record`.
    Report(ReportArgs),
    /// Convert a v2 timeline to another tool's format (Perfetto).
    Export(ExportArgs),
}

/// `mmtrace export`'s target formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Perfetto's native protobuf trace (open it in ui.perfetto.dev).
    Perfetto,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A v2 timeline written by `mmtrace record`.
    pub file: PathBuf,
    /// The format to write.
    #[arg(long = "to", value_enum)]
    pub to: ExportFormat,
    /// Where to write it (private, never overwritten in place).
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
}

/// What to trace: shared by `stream` and `record`.
#[derive(Args, Debug, Default)]
pub struct TraceArgs {
    /// Trace this process (repeatable). A thread id names its process.
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Trace processes with this command name (repeatable; 15 bytes at most
    /// count, as the kernel keeps them).
    #[arg(short, long = "comm", value_name = "NAME", value_parser = parse_comm)]
    pub comms: Vec<OsString>,

    /// Trace the processes in this cgroup and the cgroups below it
    /// (repeatable): a directory under the cgroup2 mount, or under a v1
    /// mount of the memory controller (e.g.
    /// /sys/fs/cgroup/memory/docker/ID). Selected in the kernel, by each
    /// event's task's cgroup at that moment.
    #[arg(long = "cgroup", value_name = "DIR")]
    pub cgroups: Vec<PathBuf>,

    /// With --pid, --comm or --cgroup: also trace the children they start
    /// from now on.
    #[arg(short, long)]
    pub follow: bool,

    /// Stop after this many seconds.
    #[arg(short, long, value_name = "SECS", value_parser = parse_run_duration)]
    pub duration: Option<f64>,

    /// Kernel ring buffer size (a power of two: 256K, 4M, ...).
    #[arg(long, value_name = "BYTES", default_value = "4M", value_parser = parse_size)]
    pub buffer_size: u32,

    /// Start this command, trace it and all its descendants from its first
    /// instruction, stop when it exits and exit with its status.
    /// With -- CMD: when tracing stops before the command ends (Ctrl-C,
    /// SIGTERM, --duration), kill the command (SIGKILL) instead of leaving
    /// it running on its own.
    #[arg(long)]
    pub kill_on_stop: bool,

    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

#[derive(Args, Debug)]
pub struct StreamArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Event families to trace (comma-separated). Default: all.
    #[arg(
        short,
        long,
        value_delimiter = ',',
        value_name = "LIST",
        value_parser = event_classes()
    )]
    pub events: Vec<EventClass>,

    /// Page faults: off, counted per process each second (summary), or every
    /// fault (all).
    #[arg(long, value_enum, default_value_t = FaultMode::Summary)]
    pub faults: FaultMode,

    /// Write events to this file instead of standard output.
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Make the output file readable by this group (a name or a number):
    /// created 0640 and given to it, instead of 0600.
    #[arg(long, value_name = "GROUP", value_parser = parse_group, requires = "output")]
    pub output_group: Option<u32>,

    /// Stream region-level changes instead of raw events: each mapping of
    /// the traced processes born, grown, shrunk, split, protected, moved,
    /// merged, advised, and dead (the model of `record`). Needs every event
    /// kind, so --events does not go with it.
    #[arg(long, conflicts_with = "events")]
    pub regions: bool,

    /// Interval of the fault summary, in seconds.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_interval)]
    pub summary_interval: f64,

    /// Stream the running daemon's live events (its control socket,
    /// default /run/mmtrace/mmtrace.sock) instead of loading the programs:
    /// the same filters (--pid, --comm, --follow, --events, --faults off)
    /// and formats.
    #[arg(
        long,
        value_name = "SOCKET",
        num_args = 0..=1,
        default_missing_value = DEFAULT_SOCKET,
        require_equals = false
    )]
    pub connect: Option<PathBuf>,

    #[command(flatten)]
    pub trace: TraceArgs,
}

#[derive(Args, Debug)]
pub struct RecordArgs {
    /// Write the timeline here (JSON Lines, mmtrace.timeline/v2, written as
    /// the recording goes; see --format).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,

    /// Make the timeline readable by this group (a name or a number):
    /// created 0640 and given to it, instead of 0600.
    #[arg(long, value_name = "GROUP", value_parser = parse_group)]
    pub output_group: Option<u32>,

    /// The timeline's format: v2 (JSON Lines written as it goes, memory
    /// bounded by what is alive) or v1 (one JSON document written at the
    /// end: every region ever seen is held in memory until then).
    #[arg(long, value_name = "FORMAT", default_value = "v2")]
    pub format: TimelineFormat,

    /// Also write the recording as a Perfetto trace here, at its end (as
    /// `mmtrace export --to perfetto` would; v2 only; never overwrites).
    #[arg(long, value_name = "FILE")]
    pub perfetto: Option<PathBuf>,

    /// Compare each process's model with /proc/PID/maps this often (when the
    /// process is idle), in seconds. Lost events trigger a comparison too.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_interval)]
    pub reconcile_interval: f64,

    /// Width of the per-region fault time buckets, in seconds (v1 only: v2
    /// has each region's fault counts, not their time series).
    #[arg(long, value_name = "SECS", default_value = "0.1", value_parser = parse_bucket)]
    pub fault_bucket: f64,

    #[command(flatten)]
    pub trace: TraceArgs,
}

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// The TOML configuration file (every key optional).
    #[arg(long, value_name = "FILE", default_value = crate::daemon::config::DEFAULT_CONFIG)]
    pub config: PathBuf,

    /// Check the configuration, print it and exit (0 if valid, 2 if not).
    #[arg(long)]
    pub check_config: bool,
}

/// The default control socket of the daemon.
pub const DEFAULT_SOCKET: &str = "/run/mmtrace/mmtrace.sock";

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The daemon's control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print the daemon's JSON answer as it is.
    #[arg(long)]
    pub json: bool,
}

/// What `mmtrace ps` sorts by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PsSort {
    Rss,
    Mapped,
    Regions,
    Faults,
    Pid,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// The daemon's control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Sort by this (largest first; pid: ascending).
    #[arg(long, value_enum, default_value = "rss")]
    pub sort: PsSort,
    /// Print the daemon's JSON answer as it is.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DumpArgs {
    /// The process.
    pub pid: u32,
    /// Where to write its timeline (v2; a new file, mode 0600).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// The daemon's control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A timeline written by `mmtrace record`.
    pub file: PathBuf,

    /// Mappings born and dead within this many milliseconds are short-lived.
    #[arg(long, value_name = "MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    pub short_lived_ms: u64,

    /// How many regions to list per table.
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub top: u64,

    /// Refuse a file larger than this (reading one takes several times its
    /// size in memory): a number of bytes, with K, M or G.
    #[arg(long, value_name = "BYTES", default_value = "256M", value_parser = parse_bytes)]
    pub max_size: u64,

    /// Write a self-contained HTML page (the address space over time, the
    /// memory curves and this report) to OUT instead (never overwrites
    /// OUT).
    #[arg(long, value_name = "OUT")]
    pub html: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TimelineFormat {
    V1,
    V2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FaultMode {
    Off,
    Summary,
    All,
}

/// The `--events` values, from the kinds table.
fn event_classes() -> impl TypedValueParser<Value = EventClass> {
    let values = EventClass::ALL.into_iter().map(|c| {
        let value = PossibleValue::new(c.name());
        match class_help(c) {
            Some(help) => value.help(help),
            None => value,
        }
    });
    PossibleValuesParser::new(values).try_map(|name| {
        EventClass::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| format!("unknown event class `{name}`"))
    })
}

/// The kinds of a class that is more than its namesake: "exec, fork and exit".
fn class_help(class: EventClass) -> Option<String> {
    let names: Vec<&str> = class.kinds().map(EventKind::name).collect();
    match names.as_slice() {
        [only] if *only == class.name() => None,
        [only] => Some(only.to_string()),
        [first @ .., last] => Some(format!("{} and {last}", first.join(", "))),
        [] => None,
    }
}

/// The kind mask for the chosen families (all when none is chosen).
pub fn kind_mask(events: &[EventClass], faults: FaultMode) -> u32 {
    let mut mask = 0;
    if events.is_empty() {
        for k in EventKind::ALL {
            mask |= k.bit();
        }
    } else {
        for e in events {
            for k in e.kinds() {
                mask |= k.bit();
            }
        }
    }
    if faults == FaultMode::Off {
        mask &= !EventKind::Fault.bit();
    }
    mask
}

/// "4M", "256K", "1G", "65536": a power of two of at least one page.
pub fn parse_size(s: &str) -> Result<u32, String> {
    let bytes = parse_bytes(s)?;
    if !bytes.is_power_of_two() || !(4096..=(1 << 30)).contains(&bytes) {
        return Err(format!(
            "`{s}` must be a power of two between 4K and 1G (the kernel's ring buffer rule)"
        ));
    }
    Ok(bytes as u32)
}

/// A number of bytes with an optional K, M or G, at least 1 and at most
/// 1 TiB.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 256K, 4M, 1G)"))?;
    match n.checked_mul(mult) {
        Some(v) if (1..=1 << 40).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` must be between 1 byte and 1T")),
    }
}

/// A number of seconds within `[min, max]`.
fn parse_seconds(s: &str, min: f64, max: f64) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(v.is_finite() && (min..=max).contains(&v)) {
        return Err(format!("`{s}` must be between {min} and {max} seconds"));
    }
    Ok(v)
}

/// `--duration`: up to a year.
pub const DURATION_RANGE: (f64, f64) = (0.001, 366.0 * 86_400.0);
/// `--summary-interval`, `--reconcile-interval`.
pub const INTERVAL_RANGE: (f64, f64) = (0.01, 3600.0);
/// `--fault-bucket`: each region keeps one counter per bucket it spans.
pub const BUCKET_RANGE: (f64, f64) = (0.01, 86_400.0);

pub fn parse_run_duration(s: &str) -> Result<f64, String> {
    parse_seconds(s, DURATION_RANGE.0, DURATION_RANGE.1)
}

/// A group, by name or number, as its gid. A name must exist; a number is
/// taken as it is (a group need not be named).
pub fn parse_group(s: &str) -> Result<u32, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map_err(|_| format!("{s} is not a group number (0 to {})", u32::MAX - 1))
            .and_then(|g: u32| {
                if g == u32::MAX {
                    Err(format!("{s} is not a group number"))
                } else {
                    Ok(g)
                }
            });
    }
    let name =
        std::ffi::CString::new(s).map_err(|_| "a group name cannot hold a NUL byte".to_string())?;
    // SAFETY: plain data, filled by getgrnam_r.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: the name, the group
    // record and the buffer its strings go in (with its length).
    let err = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if err != 0 {
        return Err(format!(
            "cannot look up group {s:?}: {}",
            std::io::Error::from_raw_os_error(err)
        ));
    }
    if found.is_null() {
        return Err(format!("there is no group named {s:?}"));
    }
    Ok(grp.gr_gid)
}

pub fn parse_interval(s: &str) -> Result<f64, String> {
    parse_seconds(s, INTERVAL_RANGE.0, INTERVAL_RANGE.1)
}

pub fn parse_bucket(s: &str) -> Result<f64, String> {
    parse_seconds(s, BUCKET_RANGE.0, BUCKET_RANGE.1)
}

/// A comm to select: not empty, no NUL (the kernel compares its first 15
/// bytes, as it keeps them).
pub fn parse_comm(s: &str) -> Result<OsString, String> {
    if s.is_empty() {
        return Err("an empty name selects nothing".to_string());
    }
    if s.contains('\0') {
        return Err("a command name cannot hold a NUL byte".to_string());
    }
    Ok(OsString::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("256k"), Ok(256 << 10));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert!(parse_size("3M").is_err());
        assert!(parse_size("1K").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn masks() {
        let all = kind_mask(&[], FaultMode::All);
        assert!(EventKind::ALL.iter().all(|k| all & k.bit() != 0));
        let off = kind_mask(&[], FaultMode::Off);
        assert_eq!(off & EventKind::Fault.bit(), 0);
        let m = kind_mask(&[EventClass::Mmap, EventClass::Process], FaultMode::Summary);
        assert_eq!(
            m,
            EventKind::Mmap.bit()
                | EventKind::RemapFilePages.bit()
                | EventKind::Exec.bit()
                | EventKind::Fork.bit()
                | EventKind::Exit.bit()
                | EventKind::OomKill.bit()
        );
    }

    #[test]
    fn groups_by_name_or_number() {
        assert_eq!(parse_group("root"), Ok(0));
        assert_eq!(parse_group("0"), Ok(0));
        assert_eq!(parse_group("4242"), Ok(4242));
        assert!(parse_group("no-such-group-here").is_err());
        assert!(parse_group("4294967295").is_err());
        assert!(parse_group("99999999999").is_err());
        assert!(parse_group("").is_err());
        assert!(parse_group("a\0b").is_err());
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for args in [
            &["mmtrace", "stream", "--duration", "1e300"][..],
            &["mmtrace", "stream", "--duration", "0"],
            &["mmtrace", "stream", "--duration", "nan"],
            &["mmtrace", "stream", "--summary-interval", "1e300"],
            &["mmtrace", "stream", "--summary-interval", "1e-300"],
            &["mmtrace", "stream", "--comm", ""],
            &["mmtrace", "record", "-o", "x", "--fault-bucket", "1e-9"],
            &["mmtrace", "record", "-o", "x", "--fault-bucket", "1e-300"],
            &[
                "mmtrace",
                "record",
                "-o",
                "x",
                "--reconcile-interval",
                "inf",
            ],
            &["mmtrace", "report", "x", "--top", "0"],
            &["mmtrace", "report", "x", "--short-lived-ms", "99999999999"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?} accepted");
        }
        for args in [
            &["mmtrace", "stream", "--duration", "0.5"][..],
            &["mmtrace", "stream", "--duration", "86400"],
            &["mmtrace", "stream", "--comm", "a-name-longer-than-15"],
            &["mmtrace", "record", "-o", "x", "--fault-bucket", "0.01"],
            &[
                "mmtrace",
                "report",
                "x",
                "--top",
                "5",
                "--short-lived-ms",
                "7",
            ],
            &["mmtrace", "report", "x", "--max-size", "2G"],
        ] {
            assert!(Cli::try_parse_from(args).is_ok(), "{args:?} refused");
        }
        let Command::Report(r) = Cli::try_parse_from(["mmtrace", "report", "x", "--top", "5"])
            .unwrap()
            .command
        else {
            panic!("not report")
        };
        assert_eq!((r.top, r.short_lived_ms, r.max_size), (5, 100, 256 << 20));
        assert!(parse_bytes("0").is_err() && parse_bytes("2T").is_err());
    }

    #[test]
    fn event_classes_come_from_the_kinds_table() {
        let names: Vec<_> = EventClass::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            [
                "brk",
                "mmap",
                "munmap",
                "mremap",
                "mprotect",
                "madvise",
                "mlock",
                "mseal",
                "shm",
                "userfaultfd",
                "fault",
                "stack",
                "process"
            ]
        );
        assert_eq!(
            class_help(EventClass::Process).as_deref(),
            Some("exec, fork, exit and oom_kill")
        );
        assert_eq!(
            class_help(EventClass::Mmap).as_deref(),
            Some("mmap and remap_file_pages")
        );
        assert_eq!(
            class_help(EventClass::Mlock).as_deref(),
            Some("mlock, mlock2, munlock, mlockall and munlockall")
        );
        assert_eq!(class_help(EventClass::Mseal), None);
        assert_eq!(
            class_help(EventClass::Shm).as_deref(),
            Some("shmat and shmdt")
        );
        assert_eq!(
            class_help(EventClass::Mprotect).as_deref(),
            Some("mprotect and pkey_mprotect")
        );
        let ok = Cli::try_parse_from(["mmtrace", "stream", "-e", "process,stack"]).unwrap();
        let Command::Stream(a) = ok.command else {
            panic!("not stream")
        };
        assert_eq!(a.events, vec![EventClass::Process, EventClass::Stack]);
    }

    #[test]
    fn bad_flags_are_rejected() {
        assert!(Cli::try_parse_from(["mmtrace", "stream", "--events", "mmap,bogus"]).is_err());
        assert!(Cli::try_parse_from(["mmtrace", "stream", "--faults", "some"]).is_err());
        assert!(Cli::try_parse_from(["mmtrace", "stream", "--pid", "abc"]).is_err());
        assert!(Cli::try_parse_from(["mmtrace", "stream", "--duration", "-1"]).is_err());
        let ok = Cli::try_parse_from(["mmtrace", "stream", "-e", "mmap,fault", "--", "ls", "-l"])
            .unwrap();
        let Command::Stream(a) = ok.command else {
            panic!("not stream")
        };
        assert_eq!(
            a.trace.command,
            vec![OsString::from("ls"), OsString::from("-l")]
        );
        assert_eq!(a.events, vec![EventClass::Mmap, EventClass::Fault]);
        assert!(!a.regions);
    }

    #[test]
    fn regions_need_every_event() {
        let ok =
            Cli::try_parse_from(["mmtrace", "stream", "--regions", "--faults", "all"]).unwrap();
        let Command::Stream(a) = ok.command else {
            panic!("not stream")
        };
        assert!(a.regions);
        assert!(Cli::try_parse_from(["mmtrace", "stream", "--regions", "-e", "mmap"]).is_err());
    }
}
