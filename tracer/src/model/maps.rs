//! The kernel's truth: /proc/PID/maps, parsed here in bytes (a path may
//! hold any byte but NUL), and how the model's regions compare with it.

use super::{Backing, Perms, Seed};

/// The mappings of `pid` now.
///
/// A process that left its address space during the read (its exit) may
/// have had only the first part of its VMAs listed: that read is taken for
/// none (NotFound, as for a process gone).
pub fn read(pid: u32) -> std::io::Result<Vec<Seed>> {
    let text = std::fs::read(format!("/proc/{pid}/maps"))?;
    if !crate::kernel::proc::has_address_space(pid) {
        return Err(std::io::ErrorKind::NotFound.into());
    }
    parse(&text).map_err(|line| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("/proc/{pid}/maps: cannot parse line {line}"),
        )
    })
}

/// Parses the text of a maps file; Err(n): line n (from 1) is malformed.
pub fn parse(text: &[u8]) -> Result<Vec<Seed>, usize> {
    text.split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| parse_line(line).ok_or(i + 1))
        .collect()
}

/// The next space-separated field of `line`, and the rest after its space.
fn field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = line.iter().position(|&b| b == b' ')?;
    Some((&line[..end], &line[end + 1..]))
}

fn hex_u64(s: &[u8]) -> Option<u64> {
    u64::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok()
}

/// `start-end perms offset major:minor inode [path]`.
fn parse_line(line: &[u8]) -> Option<Seed> {
    let (range, rest) = field(line)?;
    let (perms, rest) = field(rest)?;
    let (offset, rest) = field(rest)?;
    let (dev, rest) = field(rest)?;
    // The inode ends the line when there is no path.
    let (inode, rest) = field(rest).unwrap_or((rest, b""));
    let dash = range.iter().position(|&b| b == b'-')?;
    let (start, end) = (hex_u64(&range[..dash])?, hex_u64(&range[dash + 1..])?);
    let colon = dev.iter().position(|&b| b == b':')?;
    let dev = (
        u32::try_from(hex_u64(&dev[..colon])?).ok()?,
        u32::try_from(hex_u64(&dev[colon + 1..])?).ok()?,
    );
    let ino: u64 = std::str::from_utf8(inode).ok()?.parse().ok()?;
    let offset = hex_u64(offset)?;
    let [r, w, x, sp] = perms else {
        return None;
    };
    if start > end {
        return None;
    }
    let perms = Perms {
        read: *r == b'r',
        write: *w == b'w',
        exec: *x == b'x',
        shared: *sp == b's',
    };
    // The path starts after padding to a column.
    let path = rest.trim_ascii_start();
    let backing = backing_of(path, dev, ino, perms);
    let offset = match backing {
        Backing::File { .. } | Backing::Shm { .. } => offset,
        _ => 0,
    };
    Some(Seed {
        start,
        end,
        perms,
        offset,
        backing,
    })
}

/// What backs a mapping, from its maps path column.
fn backing_of(path: &[u8], dev: (u32, u32), ino: u64, perms: Perms) -> Backing {
    let text = || String::from_utf8_lossy(path).into_owned();
    match path {
        b"" => Backing::Anon,
        b"[heap]" => Backing::Heap,
        b"[stack]" => Backing::Stack,
        p if p.starts_with(b"[anon:") => Backing::Anon,
        p if p.starts_with(b"[anon_shmem:") => Backing::Shm {
            path: Some(p.to_vec()),
            ino,
            file: 0,
        },
        p if p.starts_with(b"[") => Backing::Special(text()),
        // A file of anon_inodefs (`anon_inode:[perf_event]`): the model
        // has it from its mmap by device and inode, like any file.
        p if p.starts_with(b"anon_inode:") => Backing::File {
            path: p.to_vec(),
            dev,
            ino,
        },
        // Private hugetlb memory of an anonymous mmap (MAP_HUGETLB): the
        // kernel backs it with a file of hugetlbfs, the call made it
        // anonymous.
        p if dev.0 == 0 && !perms.shared && strip_deleted(p) == b"/anon_hugepage" => Backing::Anon,
        // SysV shared memory: "/SYSV0000002a (deleted)".
        p if p.starts_with(b"/SYSV") && dev.0 == 0 => Backing::Shm {
            path: Some(strip_deleted(p).to_vec()),
            ino,
            file: 0,
        },
        p if dev.0 == 0 && perms.shared => Backing::Shm {
            path: Some(p.to_vec()),
            ino,
            file: 0,
        },
        p if p.starts_with(b"/") => Backing::File {
            path: p.to_vec(),
            dev,
            ino,
        },
        _ => Backing::Special(text()),
    }
}

pub fn strip_deleted(p: &[u8]) -> &[u8] {
    p.strip_suffix(b" (deleted)").unwrap_or(p)
}

/// Whether a kernel entry and a model region describe the same mapping.
pub fn same(kernel: &Seed, model: &Seed) -> bool {
    if kernel.start != model.start
        || kernel.end != model.end
        || kernel.perms != model.perms
        || kernel.offset != model.offset
    {
        return false;
    }
    match (&kernel.backing, &model.backing) {
        // The [heap] label is the kernel's guess from the break; the
        // mapping is anonymous either way.
        (Backing::Anon | Backing::Heap, Backing::Anon | Backing::Heap) => true,
        (Backing::Stack, Backing::Stack) => true,
        (
            Backing::File { dev, ino, .. },
            Backing::File {
                dev: d2, ino: i2, ..
            },
        ) => dev == d2 && ino == i2,
        (Backing::Shm { .. }, Backing::Shm { .. }) => true,
        // A shared mapping of a file on a filesystem with an anonymous
        // device (tmpfs, 9p, overlayfs, NFS, btrfs) reads as shared memory
        // here, while the model knows it from its mmap as the file.
        // Its inode tells, when both know it; otherwise its path.
        (
            Backing::Shm {
                path: Some(p), ino, ..
            },
            Backing::File {
                path: q, ino: i2, ..
            },
        ) => match (*ino, *i2) {
            // A shared mapping of /dev/zero is shared memory the kernel
            // made for it: its inode is not the device's.
            _ if strip_deleted(p) == b"/dev/zero" => q.as_slice() == b"/dev/zero",
            (0, _) | (_, 0) => strip_deleted(p) == q.as_slice(),
            _ => ino == i2,
        },
        (Backing::Special(a), Backing::Special(b)) => a == b,
        _ => false,
    }
}

/// A difference between the model and the kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Difference {
    /// missing (the kernel has it, the model not), extra (the model has
    /// it, the kernel not), different (same start, other attributes).
    pub kind: &'static str,
    pub model: Option<Seed>,
    pub kernel: Option<Seed>,
    /// For `different`: the attributes that differ (see [`fields_differing`]).
    pub fields: Vec<&'static str>,
}

/// Differences between the model and the kernel.
pub fn diff(model: &[Seed], kernel: &[Seed]) -> Vec<Difference> {
    let mut out = Vec::new();
    for k in kernel {
        if model.iter().any(|m| same(k, m)) {
            continue;
        }
        match model.iter().find(|m| m.start == k.start) {
            Some(m) => out.push(Difference {
                kind: "different",
                fields: fields_differing(k, m),
                model: Some(m.clone()),
                kernel: Some(k.clone()),
            }),
            None => out.push(Difference {
                kind: "missing",
                model: None,
                kernel: Some(k.clone()),
                fields: Vec::new(),
            }),
        }
    }
    for m in model {
        if kernel.iter().any(|k| same(k, m) || k.start == m.start) {
            continue;
        }
        out.push(Difference {
            kind: "extra",
            model: Some(m.clone()),
            kernel: None,
            fields: Vec::new(),
        });
    }
    out
}

/// What kind of mapping a backing is, as the timeline names it.
pub fn kind_of(b: &Backing) -> &'static str {
    match b {
        Backing::Anon => "anon",
        Backing::Heap => "heap",
        Backing::Stack => "stack",
        Backing::File { .. } => "file",
        Backing::Shm { .. } => "shm",
        Backing::Special(_) => "special",
    }
}

/// The attributes in which a kernel entry and a model region with the same
/// start differ: `end`, `perms`, `offset`, `kind` (anonymous, file, shared
/// memory, ...), `path`, `device`, `inode`.
pub fn fields_differing(kernel: &Seed, model: &Seed) -> Vec<&'static str> {
    let mut out = Vec::new();
    if kernel.end != model.end {
        out.push("end");
    }
    if kernel.perms != model.perms {
        out.push("perms");
    }
    if kernel.offset != model.offset {
        out.push("offset");
    }
    let path = |b: &Backing| -> Option<Vec<u8>> {
        match b {
            Backing::File { path, .. }
            | Backing::Shm {
                path: Some(path), ..
            } => Some(strip_deleted(path).to_vec()),
            Backing::Special(name) => Some(name.as_bytes().to_vec()),
            _ => None,
        }
    };
    let (kb, mb) = (&kernel.backing, &model.backing);
    if kind_of(kb) != kind_of(mb)
        && !matches!(
            (kb, mb),
            (Backing::Anon | Backing::Heap, Backing::Anon | Backing::Heap)
        )
    {
        out.push("kind");
    }
    if path(kb) != path(mb) {
        out.push("path");
    }
    if let (
        Backing::File { dev, ino, .. },
        Backing::File {
            dev: d2, ino: i2, ..
        },
    ) = (kb, mb)
    {
        if dev != d2 {
            out.push("device");
        }
        if ino != i2 {
            out.push("inode");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_every_kind() {
        let text = b"\
561e93ef7000-561e940a7000 rw-p 00000000 00:00 0                          [heap]
7fe744220000-7fe744353000 rw-p 00000000 00:00 0 
7fe7443ed000-7fe7443ef000 rw-s 00000000 00:01 0                          /SYSV0000002a (deleted)
7fe744414000-7fe744416000 rw-s 00000000 00:01 1028                       /dev/zero (deleted)
7fe744fbc000-7fe744fbe000 rw-s 00000000 00:1b 2                          /dev/shm/toyshm
7fe74500f000-7fe745066000 r--p 00001000 fe:00 316534                     /usr/lib/locale/C.utf8/LC_CTYPE
7f3df8034000-7f3df8035000 rw-p 00000000 fe:00 10011245                   /tmp/we ird\x01na\\012me\xff
7fe745079000-7fe74507b000 r-xp 00000000 00:00 0                          [vdso]
7fe745079000-7fe74507b000 rw-p 00000000 00:00 0                          [anon:glibc: malloc]
7ffe519c3000-7ffe519e4000 rw-p 00000000 00:00 0                          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";
        let seeds = parse(text).unwrap();
        let backings: Vec<&Backing> = seeds.iter().map(|s| &s.backing).collect();
        assert_eq!(backings[0], &Backing::Heap);
        assert_eq!(backings[1], &Backing::Anon);
        assert_eq!(
            backings[2],
            &Backing::Shm {
                path: Some(b"/SYSV0000002a".to_vec()),
                ino: 0,
                file: 0
            }
        );
        assert!(matches!(backings[3], Backing::Shm { .. }));
        assert!(matches!(backings[4], Backing::Shm { .. }));
        assert_eq!(
            backings[5],
            &Backing::File {
                path: b"/usr/lib/locale/C.utf8/LC_CTYPE".to_vec(),
                dev: (0xfe, 0),
                ino: 316534
            }
        );
        assert_eq!(seeds[5].offset, 0x1000);
        assert_eq!(
            backings[6],
            &Backing::File {
                path: b"/tmp/we ird\x01na\\012me\xff".to_vec(),
                dev: (0xfe, 0),
                ino: 10011245
            }
        );
        assert_eq!(backings[7], &Backing::Special("[vdso]".into()));
        assert_eq!(backings[8], &Backing::Anon);
        assert_eq!(backings[9], &Backing::Stack);
        assert_eq!(seeds[10].start, 0xffffffffff600000);
        assert!(seeds[10].perms.exec && !seeds[10].perms.read);
    }

    /// A shared file mapping on btrfs, tmpfs, NFS or 9p (device major 0)
    /// reads as shared memory; the model has it as the file it mapped.
    #[test]
    fn a_shared_file_on_an_anonymous_device_is_the_file() {
        let kernel = &parse(b"7f00000-7f02000 r--s 00000000 00:17 42 /data/cache\n").unwrap()[0];
        assert!(matches!(kernel.backing, Backing::Shm { .. }));
        let mut model = kernel.clone();
        model.backing = Backing::File {
            path: b"/data/cache".to_vec(),
            dev: (0, 0x17),
            ino: 42,
        };
        assert!(same(kernel, &model));
        model.backing = Backing::File {
            path: b"/data/other".to_vec(),
            dev: (0, 0x17),
            ino: 43,
        };
        assert!(!same(kernel, &model));
    }

    /// memfd, anon inodes, shared /dev/zero and private hugetlb memory
    /// compare equal to what the model learns from their mmap.
    #[test]
    fn kernel_made_files_are_the_model_s() {
        let maps = b"\
7f0000000000-7f0000002000 rw-s 00000000 00:01 1129                       /memfd:cache (deleted)
7f0000002000-7f0000004000 rw-p 00000000 00:01 1129                       /memfd:cache (deleted)
7f0000004000-7f0000006000 rw-s 00000000 00:01 1130                       /dev/zero (deleted)
7f0000006000-7f0000008000 rw-s 00000000 00:0f 2087                       anon_inode:[perf_event]
7f0000200000-7f0000400000 rw-p 00000000 00:10 77                         /anon_hugepage (deleted)
";
        let kernel = parse(maps).unwrap();
        let file = |path: &[u8], dev, ino| Backing::File {
            path: path.to_vec(),
            dev,
            ino,
        };
        let backings = [
            file(b"/memfd:cache", (0, 1), 1129),
            file(b"/memfd:cache", (0, 1), 1129),
            file(b"/dev/zero", (0, 6), 4),
            file(b"anon_inode:[perf_event]", (0, 0xf), 2087),
            Backing::Anon,
        ];
        for (k, backing) in kernel.iter().zip(backings) {
            let model = Seed {
                backing,
                ..k.clone()
            };
            assert!(same(k, &model), "{k:?} vs {model:?}");
        }
    }

    /// A drift record names what differs, even when both sides print the
    /// same line.
    #[test]
    fn a_difference_names_its_fields() {
        let kernel = parse(b"7f00000-7f02000 rw-s 00000000 00:01 7 /dev/zero (deleted)\n").unwrap();
        let mut model = kernel[0].clone();
        model.backing = Backing::Special("/dev/zero".to_string());
        model.end += 0x1000;
        let d = diff(&[model], &kernel);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].kind, "different");
        assert_eq!(d[0].fields, ["end", "kind"]);
    }

    #[test]
    fn malformed_lines_are_refused() {
        for bad in [
            &b"zz-10 rw-p 0 00:00 0"[..],
            b"10-20 rw-p 0 00:00",
            b"20-10 rw-p 0 00:00 0",
            b"10-20 rw- 0 00:00 0",
            b"10-20 rw-p 0 0000 0",
            b"10-20 rw-p 0 00:00 x",
        ] {
            assert_eq!(parse(bad), Err(1), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(b"\n\n"), Ok(Vec::new()));
    }

    /// The parser reads this machine's processes, whatever they map.
    #[test]
    fn every_process_here_parses() {
        let mut n = 0;
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            match read(pid) {
                Ok(seeds) => n += seeds.len(),
                Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::InvalidData, "{e}"),
            }
        }
        assert!(n > 0);
    }
}
