//! What mmtrace reads from /proc besides the maps (see
//! [`crate::model::maps`]): a few status fields, thread states, statm.
//! Small readers of their own, in bytes, so no name a traced process
//! chooses (comm, paths) can make a read fail.

use std::io;

/// A field of /proc/PID/status (`PPid`, `Tgid`, `CapEff`...), as text.
pub fn status_field(pid: &str, field: &str) -> io::Result<String> {
    let status = std::fs::read(format!("/proc/{pid}/status"))?;
    field_of(&status, field)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no {field} field")))
}

/// The value of `field` in a status file: the text after `field:`.
fn field_of(status: &[u8], field: &str) -> Option<String> {
    status.split(|&b| b == b'\n').find_map(|line| {
        let rest = line.strip_prefix(field.as_bytes())?.strip_prefix(b":")?;
        Some(String::from_utf8_lossy(rest).trim().to_string())
    })
}

/// The parent of `pid`.
pub fn ppid(pid: u32) -> Option<u32> {
    status_field(&pid.to_string(), "PPid").ok()?.parse().ok()
}

/// The process (tgid) of a thread id.
pub fn tgid(tid: u32) -> io::Result<u32> {
    status_field(&tid.to_string(), "Tgid")?
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Tgid"))
}

/// The program of `pid` (the target of /proc/PID/exe).
pub fn exe(pid: u32) -> Option<Vec<u8>> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|e| std::os::unix::ffi::OsStrExt::as_bytes(e.as_os_str()).to_vec())
}

/// The system calls of `pid`'s program, from the ELF header of
/// /proc/PID/exe; None when it cannot be read (gone, a kernel thread).
pub fn abi(pid: u32) -> Option<crate::event::Abi> {
    use std::io::Read;
    let mut header = [0u8; 20];
    std::fs::File::open(format!("/proc/{pid}/exe"))
        .ok()?
        .read_exact(&mut header)
        .ok()?;
    crate::event::Abi::of_elf(&header)
}

/// The processes running now that have a program (kernel threads, which
/// have none, are left out), but not mmtrace itself.
pub fn running() -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid| pid != me && exe(pid).is_some())
        .collect();
    pids.sort_unstable();
    pids
}

/// The comm of `pid`, raw bytes.
pub fn comm(pid: u32) -> Vec<u8> {
    let mut comm = std::fs::read(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.last() == Some(&b'\n') {
        comm.pop();
    }
    comm
}

/// Whether `pid` still has its address space (/proc/PID/statm counts
/// pages): false once it has left it at its exit. A read of its maps that
/// this follows may have ended early (the kernel stops listing VMAs when
/// the address space goes away), which nothing in the text shows.
pub fn has_address_space(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .is_some_and(|pages| pages > 0)
}

/// The kernel's RSS counters of `pid` from /proc/PID/status, in bytes, in
/// the order of its `mm->rss_stat` (and the RSS map's members):
/// MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES.
pub fn rss_counters(pid: u32) -> Option<[i64; 4]> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut v = [None; 4];
    for line in status.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let i = match key {
            "RssFile" => 0,
            "RssAnon" => 1,
            "VmSwap" => 2,
            "RssShmem" => 3,
            _ => continue,
        };
        let kb: i64 = rest.split_whitespace().next()?.parse().ok()?;
        v[i] = Some(kb * 1024);
    }
    // A kernel thread or a zombie has none.
    Some([v[0]?, v[1]?, v[2].unwrap_or(0), v[3]?])
}

/// Resident bytes of `pid` from /proc/PID/statm.
pub fn statm_rss(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * crate::model::PAGE)
}

/// The state letter of a /proc/PID/task/TID/stat line (after the comm,
/// which may hold anything, `)` included).
fn state_of(stat: &[u8]) -> Option<u8> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    stat[close + 1..]
        .iter()
        .copied()
        .find(|b| !b.is_ascii_whitespace())
}

/// `mm->start_stack` of `pid` (/proc/PID/stat's 28th field; root reads
/// it). An exec gives the process a new one.
pub fn start_stack(pid: u32) -> Option<u64> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    start_stack_of(&stat)
}

fn start_stack_of(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    // Fields from the state on (the 3rd); startstack is the 28th.
    let field = stat[close + 1..]
        .split(u8::is_ascii_whitespace)
        .filter(|f| !f.is_empty())
        .nth(28 - 3)?;
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// The syscall number in a /proc/PID/task/TID/syscall line ("running" or
/// "-1 ..." when in none).
fn syscall_of(line: &[u8]) -> Option<i64> {
    let first = line.split(u8::is_ascii_whitespace).next()?;
    std::str::from_utf8(first).ok()?.parse().ok()
}

/// Whether /proc/PID exists (a zombie's does).
pub fn exists(pid: u32) -> bool {
    std::fs::symlink_metadata(format!("/proc/{pid}")).is_ok()
}

/// All threads of `pid` are blocked (not running) and none is inside one
/// of `busy_syscalls`: its mappings cannot change while it stays so.
pub fn idle(pid: u32, busy_syscalls: &[i64]) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read(t.path().join("stat")) else {
            return false;
        };
        if !matches!(state_of(&stat), Some(b'S' | b'T' | b't' | b'D' | b'I')) {
            return false;
        }
        if let Ok(sc) = std::fs::read(t.path().join("syscall")) {
            if syscall_of(&sc).is_some_and(|nr| busy_syscalls.contains(&nr)) {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own counters: file and anonymous pages, and their sum is about
    /// statm's resident size (read a moment apart).
    #[test]
    fn rss_counters_of_this_process() {
        let me = std::process::id();
        let [file, anon, swap, shmem] = rss_counters(me).expect("our status");
        assert!(file > 0 && anon > 0 && swap >= 0 && shmem >= 0);
        let total = (file + anon + shmem) as f64;
        let statm = statm_rss(me).unwrap() as f64;
        assert!((total - statm).abs() < statm * 0.2, "{total} vs {statm}");
        assert_eq!(rss_counters(u32::MAX), None);
    }

    #[test]
    fn status_fields() {
        let status = b"Name:\tx\xff)y\nTgid:\t42\nPPid:\t7\nCapEff:\t000001ffffffffff\n";
        assert_eq!(field_of(status, "Tgid").as_deref(), Some("42"));
        assert_eq!(field_of(status, "PPid").as_deref(), Some("7"));
        assert_eq!(
            field_of(status, "CapEff").as_deref(),
            Some("000001ffffffffff")
        );
        assert_eq!(field_of(status, "Pid"), None);
    }

    #[test]
    fn thread_state_after_a_hostile_comm() {
        assert_eq!(state_of(b"12 (a) R b) S 1 2 3"), Some(b'S'));
        assert_eq!(state_of(b"12 (sleep) R 1"), Some(b'R'));
        assert_eq!(state_of(b"12 (no end"), None);
        assert_eq!(syscall_of(b"9 0x0 0x1000 3 34 -1 0 0x7ffd 0x7f\n"), Some(9));
        assert_eq!(syscall_of(b"running\n"), None);
        assert_eq!(syscall_of(b"-1 0x7ffd 0x7f\n"), Some(-1));
    }

    #[test]
    fn this_process() {
        let me = std::process::id();
        assert_eq!(tgid(me).unwrap(), me);
        assert!(ppid(me).is_some());
        assert!(!comm(me).is_empty());
        assert!(statm_rss(me).unwrap() > 0);
        assert!(has_address_space(me));
        // This thread's stack is under the process's stack start.
        let here = &me as *const u32 as u64;
        let start = start_stack(me).unwrap();
        assert!(start > 0 && start >= here - (64 << 20));
        assert_eq!(
            start_stack_of(
                b"7 (a) b) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 20 0 1 0 9 9 9 9 9 9 9 140737488347136 0"
            ),
            Some(140737488347136)
        );
        assert!(!has_address_space(u32::MAX));
        assert!(exe(me).is_some());
        // This thread is running.
        assert!(!idle(me, &[]));
    }
}
