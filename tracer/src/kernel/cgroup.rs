//! A process's control groups, as the kernel tells them: /proc/PID/cgroup
//! for its paths, the cgroup filesystems' mounts (/proc/self/mountinfo)
//! for where those paths are, and a directory's inode number for a cgroup's
//! id (the kernel's `kernfs_node.id`, what `bpf_get_current_cgroup_id`
//! returns on the unified hierarchy).
//!
//! Two hierarchies matter: the unified one (cgroup v2), and where the
//! memory controller is still on v1 (hybrid hosts, whose v2 hierarchy is
//! often empty: every process in `/`), the v1 memory hierarchy, where
//! container runtimes put their containers.

use std::{
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
    sync::OnceLock,
};

/// A cgroup path longer than this is cut here (and marked with a final
/// `...`): PATH_MAX, as the kernel's own buffers for these paths.
pub const MAX_PATH: usize = 4096;

/// Deeper nestings below a selected cgroup are not walked by the kernel
/// programs (`tracer_common::CGROUP_MAX_DEPTH`).
pub use tracer_common::CGROUP_MAX_DEPTH;

/// Which hierarchy a cgroup belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// The unified hierarchy (cgroup2).
    V2,
    /// The v1 hierarchy that holds the memory controller.
    V1Memory,
}

impl Hierarchy {
    pub const fn name(self) -> &'static str {
        match self {
            Hierarchy::V2 => "v2",
            Hierarchy::V1Memory => "v1 memory",
        }
    }
}

/// A process's cgroups, raw bytes as the kernel wrote them (bounded by
/// [`MAX_PATH`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cgroup {
    /// Its path in the unified hierarchy (the `0::PATH` line), relative to
    /// the reader's cgroup namespace.
    pub v2: Option<Vec<u8>>,
    /// That cgroup's id (the inode number of its directory in the cgroup2
    /// mount), when the directory could be found.
    pub v2_id: Option<u64>,
    /// Its path in the v1 hierarchy of the memory controller, where that
    /// controller is on v1.
    pub v1_memory: Option<Vec<u8>>,
}

impl Cgroup {
    /// The path a user groups by: the v1 memory one where the memory
    /// controller is on v1 (hybrid hosts, where v2 is typically `/` for
    /// everyone), else the v2 one.
    pub fn main_path(&self) -> Option<&[u8]> {
        self.v1_memory.as_deref().or(self.v2.as_deref())
    }
}

/// Cuts `path` to [`MAX_PATH`] bytes, marking the cut.
fn bounded(mut path: Vec<u8>) -> Vec<u8> {
    if path.len() > MAX_PATH {
        path.truncate(MAX_PATH - 3);
        path.extend_from_slice(b"...");
    }
    path
}

/// Parses /proc/PID/cgroup: lines `ID:CONTROLLERS:PATH`, `0::PATH` for
/// the unified hierarchy. A path may hold anything but NUL, a newline and
/// a `:` included (the kernel does not escape it): a line that does not
/// start as a hierarchy line continues the path before it.
pub fn parse(text: &[u8]) -> Cgroup {
    // (controllers, path) per hierarchy line.
    let mut lines: Vec<(&[u8], Vec<u8>)> = Vec::new();
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    for line in body.split(|&b| b == b'\n') {
        match hierarchy_line(line) {
            Some((controllers, path)) => lines.push((controllers, path.to_vec())),
            None => {
                if let Some((_, path)) = lines.last_mut() {
                    path.push(b'\n');
                    path.extend_from_slice(line);
                }
            }
        }
    }
    let mut cg = Cgroup::default();
    for (controllers, path) in lines {
        if controllers.is_empty() {
            cg.v2.get_or_insert(bounded(path));
        } else if controllers.split(|&b| b == b',').any(|c| c == b"memory") {
            cg.v1_memory.get_or_insert(bounded(path));
        }
    }
    cg
}

/// `ID:CONTROLLERS:PATH` with a numeric ID and a path starting with `/`:
/// (controllers, path).
fn hierarchy_line(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let first = line.iter().position(|&b| b == b':')?;
    let (id, rest) = (&line[..first], &line[first + 1..]);
    if id.is_empty() || !id.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let second = rest.iter().position(|&b| b == b':')?;
    let (controllers, path) = (&rest[..second], &rest[second + 1..]);
    // Controller names are plain words (`name=systemd` too).
    if !controllers
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b',' | b'_' | b'=' | b'-' | b'.'))
    {
        return None;
    }
    path.starts_with(b"/").then_some((controllers, path))
}

/// A mounted cgroup hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub hierarchy: Option<Hierarchy>,
    /// The v1 controllers (empty for cgroup2).
    pub controllers: String,
    /// Where it is mounted.
    pub point: PathBuf,
    /// The cgroup the mount shows at its top (`/` but in a container).
    pub root: Vec<u8>,
}

/// Undoes mountinfo's octal escapes (`\040` for a space...).
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 4 <= field.len() {
            let oct = &field[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let v = oct.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                if let Ok(b) = u8::try_from(v) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// The cgroup mounts of a mountinfo text.
pub fn parse_mounts(mountinfo: &[u8]) -> Vec<Mount> {
    let mut mounts = Vec::new();
    for line in mountinfo.split(|&b| b == b'\n') {
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == b"-") else {
            continue;
        };
        if dash < 5 || fields.len() < dash + 4 {
            continue;
        }
        let (fstype, options) = (fields[dash + 1], fields[dash + 3]);
        let (hierarchy, controllers) = match fstype {
            b"cgroup2" => (Some(Hierarchy::V2), String::new()),
            b"cgroup" => {
                let opts = String::from_utf8_lossy(options);
                let controllers: Vec<&str> = opts
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                    .filter(|o| {
                        !matches!(
                            *o,
                            "noprefix" | "xattr" | "clone_children" | "cpuset_v2_mode"
                        )
                    })
                    .collect();
                let memory = controllers.contains(&"memory");
                (memory.then_some(Hierarchy::V1Memory), controllers.join(","))
            }
            _ => continue,
        };
        mounts.push(Mount {
            hierarchy,
            controllers,
            point: PathBuf::from(std::ffi::OsStr::from_bytes(&unescape_mountinfo(fields[4]))),
            root: unescape_mountinfo(fields[3]),
        });
    }
    mounts
}

/// This machine's cgroup mounts, read once.
pub fn mounts() -> &'static [Mount] {
    static MOUNTS: OnceLock<Vec<Mount>> = OnceLock::new();
    MOUNTS.get_or_init(|| {
        std::fs::read("/proc/self/mountinfo")
            .map(|m| parse_mounts(&m))
            .unwrap_or_default()
    })
}

/// The first mount of `hierarchy`.
fn mount_of(mounts: &[Mount], hierarchy: Hierarchy) -> Option<&Mount> {
    mounts.iter().find(|m| m.hierarchy == Some(hierarchy))
}

/// The directory of cgroup `path` (as /proc/PID/cgroup shows it) under
/// `mount`; None when the mount does not show it (another namespace).
pub fn dir_of(mount: &Mount, path: &[u8]) -> Option<PathBuf> {
    let rest = if mount.root == b"/" {
        path
    } else {
        let r = path.strip_prefix(mount.root.as_slice())?;
        if !(r.is_empty() || r.starts_with(b"/")) {
            return None;
        }
        r
    };
    let rest = std::ffi::OsStr::from_bytes(rest.strip_prefix(b"/").unwrap_or(rest));
    Some(mount.point.join(rest))
}

/// The id of a cgroup directory: its inode number.
pub fn id_of(dir: &Path) -> Option<u64> {
    std::fs::metadata(dir)
        .ok()
        .filter(std::fs::Metadata::is_dir)
        .map(|m| m.ino())
}

/// The cgroups of `pid` now; None when its /proc entry cannot be read (it
/// is gone).
pub fn of_pid(pid: u32) -> Option<Cgroup> {
    let text = std::fs::read(format!("/proc/{pid}/cgroup")).ok()?;
    let mut cg = parse(&text);
    if let (Some(path), Some(mount)) = (&cg.v2, mount_of(mounts(), Hierarchy::V2)) {
        cg.v2_id = dir_of(mount, path).and_then(|d| id_of(&d));
    }
    Some(cg)
}

/// A cgroup chosen with `--cgroup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selected {
    pub hierarchy: Hierarchy,
    /// Its directory, as given made absolute.
    pub dir: PathBuf,
    /// Its id (the directory's inode number).
    pub id: u64,
    /// Its path within the hierarchy (`/` for the top), as
    /// /proc/PID/cgroup shows it.
    pub path: Vec<u8>,
}

/// Resolves a `--cgroup` argument: a cgroup directory under the cgroup2
/// mount or under a v1 mount of the memory controller. The error is one
/// line for the user.
pub fn select(arg: &Path, mounts: &[Mount]) -> Result<Selected, String> {
    let shown = arg.display();
    let dir = std::fs::canonicalize(arg).map_err(|e| format!("--cgroup {shown}: {e}"))?;
    if !dir.is_dir() {
        return Err(format!("--cgroup {shown}: not a directory"));
    }
    // The deepest mount holding it.
    let mount = mounts
        .iter()
        .filter(|m| dir.starts_with(&m.point))
        .max_by_key(|m| m.point.as_os_str().len())
        .ok_or_else(|| {
            format!("--cgroup {shown}: not under a cgroup filesystem (see /proc/self/mountinfo)")
        })?;
    let Some(hierarchy) = mount.hierarchy else {
        return Err(format!(
            "--cgroup {shown}: a cgroup of the v1 hierarchy of {}; mmtrace selects on the unified (cgroup2) hierarchy or the v1 memory one",
            if mount.controllers.is_empty() { "no controller" } else { &mount.controllers }
        ));
    };
    if !dir.join("cgroup.procs").exists() {
        return Err(format!(
            "--cgroup {shown}: not a cgroup directory (no cgroup.procs)"
        ));
    }
    let id = id_of(&dir).ok_or_else(|| format!("--cgroup {shown}: cannot read its inode"))?;
    let rel = dir.strip_prefix(&mount.point).unwrap_or(Path::new(""));
    let mut path = mount.root.clone();
    for part in rel.components() {
        if path.last() != Some(&b'/') {
            path.push(b'/');
        }
        path.extend_from_slice(part.as_os_str().as_bytes());
    }
    if path.is_empty() {
        path.push(b'/');
    }
    Ok(Selected {
        hierarchy,
        dir,
        id,
        path,
    })
}

/// The selected cgroups as the timeline's header names them.
pub fn selection_names(selected: &[Selected]) -> Vec<String> {
    selected
        .iter()
        .map(|c| {
            let h = match c.hierarchy {
                Hierarchy::V2 => "v2",
                Hierarchy::V1Memory => "v1-memory",
            };
            format!("{h}:{}", String::from_utf8_lossy(&c.path))
        })
        .collect()
}

/// The processes (tgids) in cgroup `dir` and the cgroups below it, at
/// most `limit`.
pub fn procs_below(dir: &Path, limit: usize) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if pids.len() >= limit {
            pids.truncate(limit);
            break;
        }
        if depth >= CGROUP_MAX_DEPTH as usize {
            continue;
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((e.path(), depth + 1));
                }
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid() {
        let cg = parse(
            b"9:name=systemd:/\n8:pids:/\n4:memory:/process_api/00732eec\n2:cpu,cpuacct:/x\n0::/\n",
        );
        assert_eq!(cg.v2.as_deref(), Some(&b"/"[..]));
        assert_eq!(cg.v1_memory.as_deref(), Some(&b"/process_api/00732eec"[..]));
        assert_eq!(cg.main_path(), Some(&b"/process_api/00732eec"[..]));
    }

    #[test]
    fn v2_only() {
        let cg = parse(b"0::/system.slice/docker-abc.scope\n");
        assert_eq!(
            cg.v2.as_deref(),
            Some(&b"/system.slice/docker-abc.scope"[..])
        );
        assert_eq!(cg.v1_memory, None);
        assert_eq!(cg.main_path(), Some(&b"/system.slice/docker-abc.scope"[..]));
    }

    #[test]
    fn v1_only() {
        let cg = parse(b"3:cpu,cpuacct:/a\n2:memory,hugetlb:/docker/abc\n1:name=systemd:/b\n");
        assert_eq!(cg.v2, None);
        assert_eq!(cg.v1_memory.as_deref(), Some(&b"/docker/abc"[..]));
        // A controller name that merely contains "memory" is not it.
        let cg = parse(b"2:memoryx:/no\n");
        assert_eq!(cg.v1_memory, None);
    }

    #[test]
    fn odd_paths() {
        // A colon, spaces, invalid UTF-8 and control characters in a name.
        let cg = parse(b"4:memory:/a:b c/\xff\x1b[31m\n0::/x:y\n");
        assert_eq!(cg.v1_memory.as_deref(), Some(&b"/a:b c/\xff\x1b[31m"[..]));
        assert_eq!(cg.v2.as_deref(), Some(&b"/x:y"[..]));
        // A newline in a name: the next line continues the path.
        let cg = parse(b"4:memory:/evil\n0::/fake\n0::/real\n");
        assert_eq!(cg.v1_memory.as_deref(), Some(&b"/evil"[..]));
        // "0::/fake" is a hierarchy line: it cannot be told from a real
        // one; the first v2 line wins.
        assert_eq!(cg.v2.as_deref(), Some(&b"/fake"[..]));
        let cg = parse(b"4:memory:/a\nb\n0::/\n");
        assert_eq!(cg.v1_memory.as_deref(), Some(&b"/a\nb"[..]));
        // Empty, garbage.
        assert_eq!(parse(b""), Cgroup::default());
        assert_eq!(parse(b"garbage\n"), Cgroup::default());
    }

    #[test]
    fn long_paths_are_cut() {
        let mut text = b"0::/".to_vec();
        text.extend(std::iter::repeat_n(b'a', 10_000));
        let cg = parse(&text);
        let v2 = cg.v2.unwrap();
        assert_eq!(v2.len(), MAX_PATH);
        assert!(v2.ends_with(b"..."));
    }

    #[test]
    fn mounts_of_a_hybrid_host() {
        let info = b"31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
42 31 0:39 /sub /mnt/my\\040cg rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let m = parse_mounts(info);
        assert_eq!(m.len(), 5);
        assert_eq!(m[0].controllers, "cpu");
        assert_eq!(m[0].hierarchy, None);
        assert_eq!(m[1].hierarchy, Some(Hierarchy::V1Memory));
        assert_eq!(m[2].controllers, "");
        assert_eq!(m[3].hierarchy, Some(Hierarchy::V2));
        assert_eq!(m[4].point, PathBuf::from("/mnt/my cg"));
        assert_eq!(m[4].root, b"/sub");
        assert_eq!(
            dir_of(&m[3], b"/a/b"),
            Some(PathBuf::from("/sys/fs/cgroup/unified/a/b"))
        );
        assert_eq!(
            dir_of(&m[3], b"/"),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            dir_of(&m[4], b"/sub/x"),
            Some(PathBuf::from("/mnt/my cg/x"))
        );
        assert_eq!(dir_of(&m[4], b"/subx"), None);
        assert_eq!(dir_of(&m[4], b"/other"), None);
    }

    /// This process's own cgroups, against the kernel's files.
    #[test]
    fn of_this_process() {
        let me = of_pid(std::process::id()).expect("our /proc/self/cgroup");
        assert!(me.v2.is_some() || me.v1_memory.is_some());
        if let Some(id) = me.v2_id {
            assert!(id > 0);
        }
    }

    #[test]
    fn selection_refuses_what_is_not_a_cgroup() {
        let m = parse_mounts(b"41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n");
        assert!(select(Path::new("/nonexistent/x"), &m)
            .unwrap_err()
            .contains("--cgroup"));
        let e = select(Path::new("/tmp"), &m).unwrap_err();
        assert!(e.contains("not under a cgroup"), "{e}");
    }
}
