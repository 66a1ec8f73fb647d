//! Names and renderings of raw values: protections, mmap/mremap flags,
//! errnos, signals, sizes, addresses, devices, and untrusted bytes.
//!
//! The flag and errno values are those of Linux on x86_64, taken from the
//! `libc` crate where it has them.

use std::fmt::Write as _;

/// Joins names with `|`.
fn join(parts: &[String]) -> String {
    parts.join("|")
}

/// `PROT_*` bits as in /proc/PID/maps: "rw-", "r-x", "---"; other known bits
/// are appended by name ("rw-|PROT_GROWSDOWN"), unknown ones in hex.
pub fn prot_str(prot: u64) -> String {
    const READ: u64 = libc::PROT_READ as u64;
    const WRITE: u64 = libc::PROT_WRITE as u64;
    const EXEC: u64 = libc::PROT_EXEC as u64;
    // Linux's asm-generic/mman-common.h; libc has no PROT_SEM.
    const SEM: u64 = 0x8;
    const GROWSDOWN: u64 = libc::PROT_GROWSDOWN as u64;
    const GROWSUP: u64 = libc::PROT_GROWSUP as u64;

    let mut base = String::with_capacity(3);
    base.push(if prot & READ != 0 { 'r' } else { '-' });
    base.push(if prot & WRITE != 0 { 'w' } else { '-' });
    base.push(if prot & EXEC != 0 { 'x' } else { '-' });
    let mut parts = vec![base];
    let mut rest = prot & !(READ | WRITE | EXEC);
    for (bit, name) in [
        (SEM, "PROT_SEM"),
        (GROWSDOWN, "PROT_GROWSDOWN"),
        (GROWSUP, "PROT_GROWSUP"),
    ] {
        if rest & bit != 0 {
            parts.push(name.to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        parts.push(hex(rest));
    }
    join(&parts)
}

/// `MAP_*` flags: "MAP_PRIVATE|MAP_ANONYMOUS". With `MAP_HUGETLB`, the huge
/// page size bits show as e.g. `MAP_HUGE_2MB`; leftover bits in hex.
pub fn mmap_flags_str(flags: u64) -> String {
    // The mapping type occupies the low 4 bits (MAP_TYPE).
    const TYPE_MASK: u64 = 0x0f;
    // Linux 6.11; libc does not have it yet.
    const MAP_DROPPABLE: u64 = 0x08;
    // Linux's asm-generic/mman-common.h; libc does not have it. It shares
    // bit 26 with the huge page size field, which only means something
    // with MAP_HUGETLB.
    const MAP_UNINITIALIZED: u64 = 0x400_0000;
    const HUGE_SHIFT: u32 = libc::MAP_HUGE_SHIFT as u32;
    const HUGE_MASK: u64 = libc::MAP_HUGE_MASK as u64;
    const HUGETLB: u64 = libc::MAP_HUGETLB as u64;

    let mut parts = Vec::new();
    let mut rest = flags;

    let ty = rest & TYPE_MASK;
    rest &= !TYPE_MASK;
    match ty {
        0 => {}
        t if t == libc::MAP_SHARED as u64 => parts.push("MAP_SHARED".to_string()),
        t if t == libc::MAP_PRIVATE as u64 => parts.push("MAP_PRIVATE".to_string()),
        t if t == libc::MAP_SHARED_VALIDATE as u64 => parts.push("MAP_SHARED_VALIDATE".to_string()),
        MAP_DROPPABLE => parts.push("MAP_DROPPABLE".to_string()),
        // Not a valid type: leave the bits for the hex remainder.
        t => rest |= t,
    }

    const FLAGS: &[(u64, &str)] = &[
        (libc::MAP_FIXED as u64, "MAP_FIXED"),
        (libc::MAP_ANONYMOUS as u64, "MAP_ANONYMOUS"),
        (libc::MAP_32BIT as u64, "MAP_32BIT"),
        (libc::MAP_GROWSDOWN as u64, "MAP_GROWSDOWN"),
        (libc::MAP_DENYWRITE as u64, "MAP_DENYWRITE"),
        (libc::MAP_EXECUTABLE as u64, "MAP_EXECUTABLE"),
        (libc::MAP_LOCKED as u64, "MAP_LOCKED"),
        (libc::MAP_NORESERVE as u64, "MAP_NORESERVE"),
        (libc::MAP_POPULATE as u64, "MAP_POPULATE"),
        (libc::MAP_NONBLOCK as u64, "MAP_NONBLOCK"),
        (libc::MAP_STACK as u64, "MAP_STACK"),
        (libc::MAP_HUGETLB as u64, "MAP_HUGETLB"),
        (libc::MAP_SYNC as u64, "MAP_SYNC"),
        (libc::MAP_FIXED_NOREPLACE as u64, "MAP_FIXED_NOREPLACE"),
    ];
    for &(bit, name) in FLAGS {
        if rest & bit != 0 {
            parts.push(name.to_string());
            rest &= !bit;
        }
    }

    let huge_bits = HUGE_MASK << HUGE_SHIFT;
    if flags & HUGETLB != 0 {
        let log2 = ((rest >> HUGE_SHIFT) & HUGE_MASK) as u32;
        rest &= !huge_bits;
        if log2 != 0 {
            parts.push(format!("MAP_HUGE_{}", huge_size_name(log2)));
        }
    } else if rest & MAP_UNINITIALIZED != 0 {
        parts.push("MAP_UNINITIALIZED".to_string());
        rest &= !MAP_UNINITIALIZED;
    }

    if rest != 0 {
        parts.push(hex(rest));
    }
    if parts.is_empty() {
        return "0".to_string();
    }
    join(&parts)
}

/// "2MB", "1GB", "64KB" for a page size of 2^log2 bytes, as the `MAP_HUGE_*`
/// constants are named.
fn huge_size_name(log2: u32) -> String {
    let (value, unit) = if log2 >= 60 {
        (1u64 << (log2 - 60), "EB")
    } else if log2 >= 50 {
        (1u64 << (log2 - 50), "PB")
    } else if log2 >= 40 {
        (1u64 << (log2 - 40), "TB")
    } else if log2 >= 30 {
        (1u64 << (log2 - 30), "GB")
    } else if log2 >= 20 {
        (1u64 << (log2 - 20), "MB")
    } else if log2 >= 10 {
        (1u64 << (log2 - 10), "KB")
    } else {
        (1u64 << log2, "B")
    };
    format!("{value}{unit}")
}

/// `MADV_*` advice by name ("MADV_DONTNEED"); unknown values as numbers.
pub fn advice_str(advice: u64) -> String {
    let name = match advice as i32 {
        libc::MADV_NORMAL => "MADV_NORMAL",
        libc::MADV_RANDOM => "MADV_RANDOM",
        libc::MADV_SEQUENTIAL => "MADV_SEQUENTIAL",
        libc::MADV_WILLNEED => "MADV_WILLNEED",
        libc::MADV_DONTNEED => "MADV_DONTNEED",
        libc::MADV_FREE => "MADV_FREE",
        libc::MADV_REMOVE => "MADV_REMOVE",
        libc::MADV_DONTFORK => "MADV_DONTFORK",
        libc::MADV_DOFORK => "MADV_DOFORK",
        libc::MADV_MERGEABLE => "MADV_MERGEABLE",
        libc::MADV_UNMERGEABLE => "MADV_UNMERGEABLE",
        libc::MADV_HUGEPAGE => "MADV_HUGEPAGE",
        libc::MADV_NOHUGEPAGE => "MADV_NOHUGEPAGE",
        libc::MADV_DONTDUMP => "MADV_DONTDUMP",
        libc::MADV_DODUMP => "MADV_DODUMP",
        libc::MADV_WIPEONFORK => "MADV_WIPEONFORK",
        libc::MADV_KEEPONFORK => "MADV_KEEPONFORK",
        libc::MADV_COLD => "MADV_COLD",
        libc::MADV_PAGEOUT => "MADV_PAGEOUT",
        libc::MADV_POPULATE_READ => "MADV_POPULATE_READ",
        libc::MADV_POPULATE_WRITE => "MADV_POPULATE_WRITE",
        libc::MADV_HWPOISON => "MADV_HWPOISON",
        25 => "MADV_COLLAPSE",
        102 => "MADV_GUARD_INSTALL",
        103 => "MADV_GUARD_REMOVE",
        _ => return advice.to_string(),
    };
    name.to_string()
}

/// `MREMAP_*` flags: "MREMAP_MAYMOVE|MREMAP_FIXED"; "0" when none.
pub fn mremap_flags_str(flags: u64) -> String {
    const FLAGS: &[(u64, &str)] = &[
        (libc::MREMAP_MAYMOVE as u64, "MREMAP_MAYMOVE"),
        (libc::MREMAP_FIXED as u64, "MREMAP_FIXED"),
        (libc::MREMAP_DONTUNMAP as u64, "MREMAP_DONTUNMAP"),
    ];
    flags_str(flags, FLAGS)
}

/// mlock2's `MLOCK_*` flags: "MLOCK_ONFAULT"; "0" when none.
pub fn mlock2_flags_str(flags: u64) -> String {
    // Linux's asm-generic/mman-common.h.
    flags_str(flags, &[(1, "MLOCK_ONFAULT")])
}

/// UFFDIO_REGISTER's modes: "MISSING|WP"; "0" when none (unregister).
pub fn uffd_mode_str(mode: u64) -> String {
    // Linux's uapi/linux/userfaultfd.h, UFFDIO_REGISTER_MODE_*.
    flags_str(mode, &[(1, "MISSING"), (2, "WP"), (4, "MINOR")])
}

/// mlockall's `MCL_*` flags: "MCL_CURRENT|MCL_FUTURE"; "0" when none.
pub fn mlockall_flags_str(flags: u64) -> String {
    flags_str(
        flags,
        &[
            (libc::MCL_CURRENT as u64, "MCL_CURRENT"),
            (libc::MCL_FUTURE as u64, "MCL_FUTURE"),
            (libc::MCL_ONFAULT as u64, "MCL_ONFAULT"),
        ],
    )
}

/// shmat's `SHM_*` flags: "SHM_RDONLY|SHM_RND"; "0" when none.
pub fn shmat_flags_str(flags: u64) -> String {
    flags_str(
        flags,
        &[
            (libc::SHM_RDONLY as u64, "SHM_RDONLY"),
            (libc::SHM_RND as u64, "SHM_RND"),
            (libc::SHM_REMAP as u64, "SHM_REMAP"),
            (libc::SHM_EXEC as u64, "SHM_EXEC"),
        ],
    )
}

/// remap_file_pages's flags (only MAP_NONBLOCK means something); "0"
/// when none.
pub fn remap_file_pages_flags_str(flags: u64) -> String {
    flags_str(flags, &[(libc::MAP_NONBLOCK as u64, "MAP_NONBLOCK")])
}

/// The names of the bits of `flags` in `names`, `|`-joined, leftover bits
/// in hex; "0" when none is set.
fn flags_str(flags: u64, names: &[(u64, &str)]) -> String {
    let mut parts = Vec::new();
    let mut rest = flags;
    for &(bit, name) in names {
        if rest & bit != 0 {
            parts.push(name.to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        parts.push(hex(rest));
    }
    if parts.is_empty() {
        return "0".to_string();
    }
    join(&parts)
}

macro_rules! errno_table {
    ($($name:ident)*) => {
        /// The name of a known errno, from libc's constants.
        fn libc_errno_name(errno: i32) -> Option<&'static str> {
            $(
                if errno == libc::$name {
                    return Some(stringify!($name));
                }
            )*
            None
        }
    };
}

// Every Linux errno, in order (1..=133). The aliases EWOULDBLOCK (EAGAIN),
// EDEADLOCK (EDEADLK) and ENOTSUP (EOPNOTSUPP) are left out: the first name
// wins.
errno_table! {
    EPERM ENOENT ESRCH EINTR EIO ENXIO E2BIG ENOEXEC EBADF ECHILD EAGAIN
    ENOMEM EACCES EFAULT ENOTBLK EBUSY EEXIST EXDEV ENODEV ENOTDIR EISDIR
    EINVAL ENFILE EMFILE ENOTTY ETXTBSY EFBIG ENOSPC ESPIPE EROFS EMLINK EPIPE
    EDOM ERANGE EDEADLK ENAMETOOLONG ENOLCK ENOSYS ENOTEMPTY ELOOP ENOMSG
    EIDRM ECHRNG EL2NSYNC EL3HLT EL3RST ELNRNG EUNATCH ENOCSI EL2HLT EBADE
    EBADR EXFULL ENOANO EBADRQC EBADSLT EBFONT ENOSTR ENODATA ETIME ENOSR
    ENONET ENOPKG EREMOTE ENOLINK EADV ESRMNT ECOMM EPROTO EMULTIHOP EDOTDOT
    EBADMSG EOVERFLOW ENOTUNIQ EBADFD EREMCHG ELIBACC ELIBBAD ELIBSCN ELIBMAX
    ELIBEXEC EILSEQ ERESTART ESTRPIPE EUSERS ENOTSOCK EDESTADDRREQ EMSGSIZE
    EPROTOTYPE ENOPROTOOPT EPROTONOSUPPORT ESOCKTNOSUPPORT EOPNOTSUPP
    EPFNOSUPPORT EAFNOSUPPORT EADDRINUSE EADDRNOTAVAIL ENETDOWN ENETUNREACH
    ENETRESET ECONNABORTED ECONNRESET ENOBUFS EISCONN ENOTCONN ESHUTDOWN
    ETOOMANYREFS ETIMEDOUT ECONNREFUSED EHOSTDOWN EHOSTUNREACH EALREADY
    EINPROGRESS ESTALE EUCLEAN ENOTNAM ENAVAIL EISNAM EREMOTEIO EDQUOT
    ENOMEDIUM EMEDIUMTYPE ECANCELED ENOKEY EKEYEXPIRED EKEYREVOKED
    EKEYREJECTED EOWNERDEAD ENOTRECOVERABLE ERFKILL EHWPOISON
}

/// The name of an errno: 12 -> "ENOMEM"; unknown -> "E<number>".
///
/// Besides the userspace errnos, the kernel-internal restart codes
/// (include/linux/errno.h) are named, since a tracepoint at syscall exit may
/// see them before signal delivery turns them into EINTR or a restart.
pub fn errno_name(errno: i32) -> String {
    if let Some(name) = libc_errno_name(errno) {
        return name.to_string();
    }
    let internal = match errno {
        512 => "ERESTARTSYS",
        513 => "ERESTARTNOINTR",
        514 => "ERESTARTNOHAND",
        515 => "ENOIOCTLCMD",
        516 => "ERESTART_RESTARTBLOCK",
        _ => return format!("E{errno}"),
    };
    internal.to_string()
}

/// The name of a signal: 9 -> "SIGKILL"; others (real-time ones included)
/// -> "SIG<number>".
pub fn signal_name(sig: i32) -> String {
    const SIGNALS: &[(i32, &str)] = &[
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGPIPE, "SIGPIPE"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGSTKFLT, "SIGSTKFLT"),
        (libc::SIGCHLD, "SIGCHLD"),
        (libc::SIGCONT, "SIGCONT"),
        (libc::SIGSTOP, "SIGSTOP"),
        (libc::SIGTSTP, "SIGTSTP"),
        (libc::SIGTTIN, "SIGTTIN"),
        (libc::SIGTTOU, "SIGTTOU"),
        (libc::SIGURG, "SIGURG"),
        (libc::SIGXCPU, "SIGXCPU"),
        (libc::SIGXFSZ, "SIGXFSZ"),
        (libc::SIGVTALRM, "SIGVTALRM"),
        (libc::SIGPROF, "SIGPROF"),
        (libc::SIGWINCH, "SIGWINCH"),
        (libc::SIGIO, "SIGIO"),
        (libc::SIGPWR, "SIGPWR"),
        (libc::SIGSYS, "SIGSYS"),
    ];
    SIGNALS
        .iter()
        .find(|&&(n, _)| n == sig)
        .map_or_else(|| format!("SIG{sig}"), |&(_, name)| name.to_string())
}

/// A size in binary units with one decimal: "512 B", "4.0 KiB", "1.5 GiB".
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    // The largest unit not above the value...
    let mut idx = 0;
    while idx + 1 < UNITS.len() && bytes >> (10 * (idx + 2)) != 0 {
        idx += 1;
    }
    // ...in tenths, rounded half up, in integers so nothing is lost.
    let div = 1u128 << (10 * (idx + 1));
    let mut tenths = (u128::from(bytes) * 10 + div / 2) / div;
    // 1023.96 KiB rounds to 1024.0 KiB: say 1.0 MiB instead.
    if tenths >= 10240 && idx + 1 < UNITS.len() {
        idx += 1;
        let div = 1u128 << (10 * (idx + 1));
        tenths = (u128::from(bytes) * 10 + div / 2) / div;
    }
    format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[idx])
}

/// An address in lowercase hex without padding: "0x7f3a12340000".
pub fn hex(addr: u64) -> String {
    // As `format!("{addr:#x}")` writes it, without the formatting machinery
    // (a recording makes several per region change).
    let mut out = Vec::with_capacity(18);
    super::json::write_hex(&mut out, addr);
    String::from_utf8(out).unwrap_or_default()
}

/// A device number as in /proc/PID/maps: "fd:01".
pub fn dev_str(major: u32, minor: u32) -> String {
    format!("{major:02x}:{minor:02x}")
}

/// Raw bytes as a lowercase hex string without separators: "6162ff".
pub fn hex_bytes(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Unicode format and separator characters that reorder, hide or break
/// text on a terminal (bidi controls, zero-width characters, tags, ...).
fn is_invisible_format(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x061C
            | 0x180E
            | 0x200B..=0x200F
            | 0x2028..=0x202E
            | 0x2060..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0xE0000..=0xE007F
    )
}

/// Bytes from a traced process made safe for a terminal: printable ASCII is
/// kept, `\` becomes `\\`, newline, tab and carriage return become `\n`,
/// `\t`, `\r`, other control bytes, DEL and every byte of invalid UTF-8
/// become `\xNN`; valid printable non-ASCII characters are kept, but Unicode
/// control and format characters become `\u{NNNN}`.
///
/// The result never holds a control character, so a traced process cannot
/// send escape sequences to the user's terminal.
pub fn escape_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    escape_text_into(&mut out, bytes);
    out
}

/// [`escape_text`], appended to `out`.
pub fn escape_text_into(out: &mut String, bytes: &[u8]) {
    // Printable ASCII but `\\`, the common case, as it is.
    if bytes
        .iter()
        .all(|b| (b' '..=b'~').contains(b) && *b != b'\\')
    {
        // All ASCII.
        out.push_str(std::str::from_utf8(bytes).unwrap_or_default());
        return;
    }
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                ' '..='~' => out.push(c),
                c if c.is_ascii() => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if c.is_control() || is_invisible_format(c) => {
                    let _ = write!(out, "\\u{{{:04x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

/// Bytes as a JSON string (invalid UTF-8 replaced), with the raw bytes in
/// hex when they were not valid UTF-8 (for the `*_hex` fields).
pub fn lossy(bytes: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (
            String::from_utf8_lossy(bytes).into_owned(),
            Some(hex_bytes(bytes)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prot() {
        assert_eq!(prot_str(0), "---");
        assert_eq!(prot_str(0x1), "r--");
        assert_eq!(prot_str(0x3), "rw-");
        assert_eq!(prot_str(0x5), "r-x");
        assert_eq!(prot_str(0x7), "rwx");
        assert_eq!(prot_str(0x0100_0003), "rw-|PROT_GROWSDOWN");
        assert_eq!(prot_str(0x0200_0001), "r--|PROT_GROWSUP");
        assert_eq!(prot_str(0x8), "---|PROT_SEM");
        assert_eq!(prot_str(0x10), "---|0x10");
        assert_eq!(prot_str(0x1_0000_0004), "--x|0x100000000");
    }

    #[test]
    fn mmap_flags() {
        assert_eq!(mmap_flags_str(0x22), "MAP_PRIVATE|MAP_ANONYMOUS");
        assert_eq!(mmap_flags_str(0x01), "MAP_SHARED");
        assert_eq!(mmap_flags_str(0x03), "MAP_SHARED_VALIDATE");
        assert_eq!(mmap_flags_str(0x08), "MAP_DROPPABLE");
        assert_eq!(mmap_flags_str(0), "0");
        assert_eq!(mmap_flags_str(0x812), "MAP_PRIVATE|MAP_FIXED|MAP_DENYWRITE");
        assert_eq!(
            mmap_flags_str(0x20022),
            "MAP_PRIVATE|MAP_ANONYMOUS|MAP_STACK"
        );
        assert_eq!(
            mmap_flags_str(0x100022),
            "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE"
        );
        assert_eq!(
            mmap_flags_str(0x2 | 0x100 | 0x1000 | 0x2000 | 0x4000 | 0x8000 | 0x10000),
            "MAP_PRIVATE|MAP_GROWSDOWN|MAP_EXECUTABLE|MAP_LOCKED|MAP_NORESERVE|MAP_POPULATE|MAP_NONBLOCK"
        );
        assert_eq!(mmap_flags_str(0x80001), "MAP_SHARED|MAP_SYNC");
        assert_eq!(mmap_flags_str(0x42), "MAP_PRIVATE|MAP_32BIT");
        // Huge page sizes, only with MAP_HUGETLB.
        assert_eq!(
            mmap_flags_str(0x22 | 0x40000 | (21 << 26)),
            "MAP_PRIVATE|MAP_ANONYMOUS|MAP_HUGETLB|MAP_HUGE_2MB"
        );
        assert_eq!(
            mmap_flags_str(0x22 | 0x40000 | (30 << 26)),
            "MAP_PRIVATE|MAP_ANONYMOUS|MAP_HUGETLB|MAP_HUGE_1GB"
        );
        assert_eq!(
            mmap_flags_str(0x22 | 0x40000 | (16 << 26)),
            "MAP_PRIVATE|MAP_ANONYMOUS|MAP_HUGETLB|MAP_HUGE_64KB"
        );
        assert_eq!(
            mmap_flags_str(0x22 | 0x40000),
            "MAP_PRIVATE|MAP_ANONYMOUS|MAP_HUGETLB"
        );
        assert_eq!(
            libc::MAP_HUGE_2MB as u64,
            21 << 26,
            "the encoding the test assumes"
        );
        // Without MAP_HUGETLB, bit 26 is MAP_UNINITIALIZED.
        assert_eq!(
            mmap_flags_str(0x22 | 0x400_0000),
            "MAP_PRIVATE|MAP_ANONYMOUS|MAP_UNINITIALIZED"
        );
        // Leftovers in hex, including an invalid type.
        assert_eq!(mmap_flags_str(0x2 | 0x200), "MAP_PRIVATE|0x200");
        assert_eq!(mmap_flags_str(0x4), "0x4");
        assert_eq!(
            mmap_flags_str(0x1_0000_0022),
            "MAP_PRIVATE|MAP_ANONYMOUS|0x100000000"
        );
    }

    #[test]
    fn mremap_flags() {
        assert_eq!(mremap_flags_str(0), "0");
        assert_eq!(mremap_flags_str(1), "MREMAP_MAYMOVE");
        assert_eq!(mremap_flags_str(3), "MREMAP_MAYMOVE|MREMAP_FIXED");
        assert_eq!(mremap_flags_str(5), "MREMAP_MAYMOVE|MREMAP_DONTUNMAP");
        assert_eq!(mremap_flags_str(0x11), "MREMAP_MAYMOVE|0x10");
    }

    #[test]
    fn lock_shm_and_remap_flags() {
        assert_eq!(mlock2_flags_str(0), "0");
        assert_eq!(mlock2_flags_str(1), "MLOCK_ONFAULT");
        assert_eq!(mlockall_flags_str(3), "MCL_CURRENT|MCL_FUTURE");
        assert_eq!(mlockall_flags_str(7), "MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT");
        assert_eq!(shmat_flags_str(0), "0");
        assert_eq!(shmat_flags_str(0o30000), "SHM_RDONLY|SHM_RND");
        assert_eq!(shmat_flags_str(0o140000), "SHM_REMAP|SHM_EXEC");
        assert_eq!(remap_file_pages_flags_str(0x10000), "MAP_NONBLOCK");
        assert_eq!(remap_file_pages_flags_str(0x10001), "MAP_NONBLOCK|0x1");
    }

    #[test]
    fn errnos() {
        assert_eq!(errno_name(1), "EPERM");
        assert_eq!(errno_name(11), "EAGAIN");
        assert_eq!(errno_name(12), "ENOMEM");
        assert_eq!(errno_name(13), "EACCES");
        assert_eq!(errno_name(22), "EINVAL");
        assert_eq!(errno_name(35), "EDEADLK");
        assert_eq!(errno_name(95), "EOPNOTSUPP");
        assert_eq!(errno_name(133), "EHWPOISON");
        assert_eq!(errno_name(512), "ERESTARTSYS");
        assert_eq!(errno_name(0), "E0");
        assert_eq!(errno_name(41), "E41");
        assert_eq!(errno_name(58), "E58");
        assert_eq!(errno_name(134), "E134");
        assert_eq!(errno_name(4095), "E4095");
        assert_eq!(errno_name(-1), "E-1");
        // Every errno 1..=133 but the two unused ones has a real name.
        for e in (1..=133).filter(|&e| e != 41 && e != 58) {
            let name = errno_name(e);
            assert_ne!(name, format!("E{e}"), "errno {e}");
            assert!(name.starts_with('E'));
        }
    }

    #[test]
    fn signals() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(11), "SIGSEGV");
        assert_eq!(signal_name(6), "SIGABRT");
        assert_eq!(signal_name(31), "SIGSYS");
        assert_eq!(signal_name(34), "SIG34");
        for s in 1..=31 {
            assert_ne!(signal_name(s), format!("SIG{s}"), "signal {s}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(4096), "4.0 KiB");
        assert_eq!(human_size(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(human_size(1024 * 1024 - 1024), "1023.0 KiB");
        assert_eq!(human_size(1024 * 1024), "1.0 MiB");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
        assert_eq!(human_size(1 << 40), "1.0 TiB");
        assert_eq!(human_size(1 << 50), "1.0 PiB");
        assert_eq!(human_size(1 << 60), "1.0 EiB");
        assert_eq!(human_size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn hexes() {
        assert_eq!(hex(0x7f3a12340000), "0x7f3a12340000");
        assert_eq!(hex(0), "0x0");
        assert_eq!(hex(u64::MAX), "0xffffffffffffffff");
        assert_eq!(hex_bytes(b"ab\xff\x00"), "6162ff00");
        assert_eq!(hex_bytes(b""), "");
    }

    #[test]
    fn devs() {
        assert_eq!(dev_str(0xfd, 1), "fd:01");
        assert_eq!(dev_str(8, 0), "08:00");
        assert_eq!(dev_str(0x103, 0x1ab), "103:1ab");
    }

    #[test]
    fn escape() {
        assert_eq!(escape_text(b"python3"), "python3");
        assert_eq!(escape_text(b"a b\\c"), "a b\\\\c");
        assert_eq!(escape_text(b"\n\t\r"), "\\n\\t\\r");
        assert_eq!(escape_text(b"\x00\x07\x7f"), "\\x00\\x07\\x7f");

        let evil = escape_text(b"\x1b[31mevil\n");
        assert_eq!(evil, "\\x1b[31mevil\\n");
        assert!(!evil.bytes().any(|b| b == 0x1b || b == b'\n'));

        // Invalid UTF-8, byte by byte.
        assert_eq!(escape_text(b"a\xffb"), "a\\xffb");
        assert_eq!(escape_text(b"\xe2\x82"), "\\xe2\\x82");
        assert_eq!(escape_text(b"\xc0\xaf"), "\\xc0\\xaf");
        // Valid non-ASCII is kept.
        assert_eq!(escape_text("héllo €".as_bytes()), "héllo €");
        assert_eq!(escape_text("日本".as_bytes()), "日本");
        // C1 controls (CSI in UTF-8) and format characters are escaped.
        assert_eq!(escape_text("\u{9b}31m".as_bytes()), "\\u{009b}31m");
        assert_eq!(escape_text("\u{85}".as_bytes()), "\\u{0085}");
        assert_eq!(
            escape_text("a\u{202e}b\u{200e}\u{200f}\u{2066}\u{2069}".as_bytes()),
            "a\\u{202e}b\\u{200e}\\u{200f}\\u{2066}\\u{2069}"
        );
        assert_eq!(escape_text("\u{feff}".as_bytes()), "\\u{feff}");
        assert_eq!(escape_text("\u{e0041}".as_bytes()), "\\u{e0041}");

        // No byte sequence yields a control character.
        for b in 0..=255u8 {
            for s in [vec![b], vec![b'x', b, b'y'], vec![0xc2, b]] {
                let e = escape_text(&s);
                assert!(!e.chars().any(char::is_control), "{s:?} -> {e:?}");
            }
        }
    }
}
