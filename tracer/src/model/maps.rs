//! The kernel's truth: /proc/PID/maps (parsed by the procfs crate), and
//! how the model's regions compare with it.

use std::os::unix::ffi::OsStrExt;

use procfs::process::{MMapPath, Process};

use super::{Backing, Perms, Seed};

/// The mappings of `pid` now.
pub fn read(pid: u32) -> std::io::Result<Vec<Seed>> {
    let process = Process::new(pid as i32).map_err(std::io::Error::other)?;
    let maps = process.maps().map_err(std::io::Error::other)?;
    Ok(maps
        .into_iter()
        .map(|m| {
            let perms = Perms {
                read: m.perms.contains(procfs::process::MMPermissions::READ),
                write: m.perms.contains(procfs::process::MMPermissions::WRITE),
                exec: m.perms.contains(procfs::process::MMPermissions::EXECUTE),
                shared: m.perms.contains(procfs::process::MMPermissions::SHARED),
            };
            let dev = (m.dev.0 as u32, m.dev.1 as u32);
            let backing = match m.pathname {
                MMapPath::Path(p) => {
                    let path = p.as_os_str().as_bytes().to_vec();
                    if dev.0 == 0 && perms.shared {
                        Backing::Shm { path: Some(path) }
                    } else {
                        Backing::File {
                            path,
                            dev,
                            ino: m.inode,
                        }
                    }
                }
                MMapPath::Heap => Backing::Heap,
                MMapPath::Stack => Backing::Stack,
                MMapPath::TStack(tid) => Backing::Special(format!("[stack:{tid}]")),
                MMapPath::Vdso => Backing::Special("[vdso]".into()),
                MMapPath::Vvar => Backing::Special("[vvar]".into()),
                MMapPath::Vsyscall => Backing::Special("[vsyscall]".into()),
                MMapPath::Anonymous => Backing::Anon,
                MMapPath::Vsys(key) => Backing::Shm {
                    path: Some(format!("/SYSV{key:08x}").into_bytes()),
                },
                // procfs drops the brackets of pseudo paths it does not know.
                MMapPath::Other(s) if s.starts_with("anon:") => Backing::Anon,
                MMapPath::Other(s) if s.starts_with("anon_shmem:") => Backing::Shm {
                    path: Some(format!("[{s}]").into_bytes()),
                },
                MMapPath::Other(s) if s.starts_with('[') || s.starts_with('/') => {
                    Backing::Special(s)
                }
                MMapPath::Other(s) => Backing::Special(format!("[{s}]")),
                MMapPath::Rollup => Backing::Special("[rollup]".into()),
            };
            let offset = match backing {
                Backing::File { .. } | Backing::Shm { .. } => m.offset,
                _ => 0,
            };
            Seed {
                start: m.address.0,
                end: m.address.1,
                perms,
                offset,
                backing,
            }
        })
        .collect())
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
        (Backing::Special(a), Backing::Special(b)) => a == b,
        _ => false,
    }
}

/// Differences between the model and the kernel: (kind, model, kernel).
pub fn diff(model: &[Seed], kernel: &[Seed]) -> Vec<(&'static str, Option<Seed>, Option<Seed>)> {
    let mut out = Vec::new();
    for k in kernel {
        if model.iter().any(|m| same(k, m)) {
            continue;
        }
        match model.iter().find(|m| m.start == k.start) {
            Some(m) => out.push(("different", Some(m.clone()), Some(k.clone()))),
            None => out.push(("missing", None, Some(k.clone()))),
        }
    }
    for m in model {
        if kernel.iter().any(|k| same(k, m) || k.start == m.start) {
            continue;
        }
        out.push(("extra", Some(m.clone()), None));
    }
    out
}
