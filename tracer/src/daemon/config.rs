//! The daemon's configuration file (TOML). Every key is optional and has a
//! documented default (see packaging/mmtrace.toml). Unknown keys, wrong types
//! and impossible values are refused with the file, the line and the reason.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the daemon looks for its configuration unless `--config` says.
pub const DEFAULT_CONFIG: &str = "/etc/mmtrace/mmtrace.toml";

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Which processes to record (empty: all).
    pub select: Select,
    /// Page-fault detail: "off", "summary" or "all".
    pub faults: String,
    /// Ring buffer size in bytes (a power of two, at least 4096).
    pub ring_bytes: u64,
    /// Where timelines are written (DATA_DIR/timelines/).
    pub data_dir: PathBuf,
    /// Which exits get a full timeline.
    pub keep: Keep,
    /// How much of the written timelines to keep on disk.
    pub retention: Retention,
    /// Seconds between /proc reconciliations (0: never).
    pub reconcile_secs: u64,
    /// The control socket.
    pub socket: Socket,
    /// Prometheus listen address ("" : off).
    pub metrics_listen: String,
    /// `metrics_listen` may be an address other than loopback (the metrics
    /// reveal process names and sizes).
    pub metrics_allow_remote: bool,
    /// At most this many process groups (comms) in the metrics; the rest
    /// are summed as comm "other".
    pub metrics_groups: usize,
    /// What a process group of the metrics is: "comm" or "cgroup".
    pub metrics_group_by: String,
    /// The daemon's memory cap in MiB.
    pub memory_cap_mib: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Select {
    pub comm: Vec<String>,
    pub pid: Vec<u32>,
    pub cgroup: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Keep {
    /// Keep processes that lived at least this many seconds.
    pub min_lifetime_secs: f64,
    /// Keep processes whose peak resident bytes reached this.
    pub min_peak_rss_bytes: u64,
    /// Keep processes whose peak mapped bytes reached this.
    pub min_peak_mapped_bytes: u64,
    /// Keep processes killed by a signal.
    pub killed_by_signal: bool,
    /// Keep processes whose model drifted from /proc.
    pub drift: bool,
    /// Distinct comms counted for the skipped exits (the rest in "other").
    pub skipped_comms: usize,
    /// A process's timeline stops growing at this size: later records are
    /// dropped, counted, and said in it (a `lost` record of kind
    /// `timeline_cap`).
    pub max_timeline_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Total bytes of timelines kept; the oldest are deleted first.
    pub max_total_bytes: u64,
    /// Timelines older than this many days are deleted (0: no age limit).
    pub max_age_days: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Socket {
    pub path: PathBuf,
    /// Group whose members may use the socket (besides root).
    pub group: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            select: Select::default(),
            faults: "summary".into(),
            ring_bytes: 8 << 20,
            data_dir: "/var/lib/mmtrace".into(),
            keep: Keep::default(),
            retention: Retention::default(),
            reconcile_secs: 60,
            socket: Socket::default(),
            metrics_listen: String::new(),
            metrics_allow_remote: false,
            metrics_groups: 200,
            metrics_group_by: "comm".into(),
            memory_cap_mib: 512,
        }
    }
}

impl Default for Keep {
    fn default() -> Self {
        Keep {
            min_lifetime_secs: 10.0,
            min_peak_rss_bytes: 256 << 20,
            min_peak_mapped_bytes: 1 << 30,
            killed_by_signal: true,
            drift: true,
            skipped_comms: 1024,
            max_timeline_bytes: 64 << 20,
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_total_bytes: 1 << 30,
            max_age_days: 30,
        }
    }
}

impl Default for Socket {
    fn default() -> Self {
        Socket {
            path: "/run/mmtrace/mmtrace.sock".into(),
            group: "mmtrace".into(),
        }
    }
}

/// A refused configuration: file, line (when known) and reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{}: {reason}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub reason: String,
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    // Segments between newlines before the offset: newlines + 1.
    text.as_bytes()[..offset.min(text.len())]
        .split(|&b| b == b'\n')
        .count()
}

/// The line where `key` (a dotted path's last part) is set, if findable.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

impl Config {
    /// Reads and checks `file`.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.into(),
            line: None,
            reason: format!("cannot read: {e}"),
        })?;
        Config::parse(file, &text)
    }

    /// Parses and checks `text`, read from `file`.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError {
            file: file.into(),
            line: e.span().map(|s| line_of(text, s.start)),
            reason: e.message().trim().to_string(),
        })?;
        config.check().map_err(|(key, reason)| ConfigError {
            file: file.into(),
            line: line_of_key(text, key),
            reason: format!("{key}: {reason}"),
        })?;
        Ok(config)
    }

    /// Impossible values: (key, reason).
    fn check(&self) -> Result<(), (&'static str, String)> {
        if !["off", "summary", "all"].contains(&self.faults.as_str()) {
            return Err((
                "faults",
                format!(
                    "{:?} is not one of \"off\", \"summary\", \"all\"",
                    self.faults
                ),
            ));
        }
        if self.ring_bytes < 4096 || !self.ring_bytes.is_power_of_two() {
            return Err((
                "ring_bytes",
                format!("{} is not a power of two of at least 4096", self.ring_bytes),
            ));
        }
        if !self.data_dir.is_absolute() {
            return Err(("data_dir", "must be an absolute path".into()));
        }
        if !self.socket.path.is_absolute() {
            return Err(("path", "the socket path must be absolute".into()));
        }
        if !self.keep.min_lifetime_secs.is_finite() || self.keep.min_lifetime_secs < 0.0 {
            return Err(("min_lifetime_secs", "must be a finite number >= 0".into()));
        }
        if self.keep.skipped_comms == 0 {
            return Err(("skipped_comms", "must be at least 1".into()));
        }
        if self.keep.max_timeline_bytes < 4096 {
            return Err(("max_timeline_bytes", "must be at least 4096".into()));
        }
        if self.memory_cap_mib < 16 {
            return Err(("memory_cap_mib", "must be at least 16 (MiB)".into()));
        }
        for c in &self.select.comm {
            if c.is_empty() || c.len() > 15 {
                return Err(("comm", format!("{c:?}: a comm has 1 to 15 bytes")));
            }
        }
        if !self.metrics_listen.is_empty() {
            let Ok(addr) = self.metrics_listen.parse::<std::net::SocketAddr>() else {
                return Err((
                    "metrics_listen",
                    format!("{:?} is not an address:port", self.metrics_listen),
                ));
            };
            if !addr.ip().is_loopback() && !self.metrics_allow_remote {
                return Err((
                    "metrics_listen",
                    format!(
                        "{addr} is not a loopback address: the metrics reveal process names \
                         and sizes; set metrics_allow_remote = true to serve them there"
                    ),
                ));
            }
        }
        if self.metrics_groups == 0 || self.metrics_groups > 10_000 {
            return Err(("metrics_groups", "must be 1 to 10000".into()));
        }
        if !matches!(self.metrics_group_by.as_str(), "comm" | "cgroup") {
            return Err((
                "metrics_group_by",
                format!(
                    "{:?} is not one of \"comm\", \"cgroup\"",
                    self.metrics_group_by
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("t.toml"), text)
    }

    #[test]
    fn empty_is_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn example_parses_and_is_the_defaults() {
        let text = include_str!("../../../packaging/mmtrace.toml");
        assert_eq!(parse(text).unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_has_its_line() {
        let e = parse("faults = \"all\"\n\n[keep]\nmin_lifetime = 3\n").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.to_string().starts_with("t.toml:4: "), "{e}");
        assert!(e.reason.contains("unknown field"), "{e}");
    }

    #[test]
    fn wrong_type_has_its_line() {
        let e = parse("\nring_bytes = \"big\"\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn impossible_values_are_refused_with_line() {
        let e = parse("data_dir = \"/d\"\nring_bytes = 5000\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.reason.contains("power of two"), "{e}");
        let e = parse("faults = \"some\"\n").unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
        let e = parse("[keep]\nmin_lifetime_secs = -1.0\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = parse("data_dir = \"rel\"\n").unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
    }

    #[test]
    fn metrics_listen_is_loopback_unless_allowed() {
        let c = parse("metrics_listen = \"127.0.0.1:9464\"\n").unwrap();
        assert_eq!(c.metrics_listen, "127.0.0.1:9464");
        parse("metrics_listen = \"[::1]:9464\"\n").unwrap();
        let e = parse("\nmetrics_listen = \"0.0.0.0:9464\"\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.reason.contains("not a loopback address"), "{e}");
        assert!(e.reason.contains("metrics_allow_remote"), "{e}");
        let e = parse("metrics_listen = \"10.1.2.3:9464\"\n").unwrap_err();
        assert!(e.reason.contains("loopback"), "{e}");
        let c = parse("metrics_listen = \"0.0.0.0:9464\"\nmetrics_allow_remote = true\n").unwrap();
        assert!(c.metrics_allow_remote);
        let e = parse("metrics_listen = \"localhost:9464\"\n").unwrap_err();
        assert!(e.reason.contains("not an address:port"), "{e}");
        let e = parse("metrics_groups = 0\n").unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
        let e = parse("metrics_group_by = \"pod\"\n").unwrap_err();
        assert!(e.reason.contains("\"comm\", \"cgroup\""), "{e}");
        assert_eq!(
            parse("metrics_group_by = \"cgroup\"\n")
                .unwrap()
                .metrics_group_by,
            "cgroup"
        );
    }

    #[test]
    fn values_are_read() {
        let c = parse("[select]\ncomm = [\"python3\"]\n[retention]\nmax_age_days = 2\n").unwrap();
        assert_eq!(c.select.comm, vec!["python3".to_string()]);
        assert_eq!(c.retention.max_age_days, 2);
    }
}
