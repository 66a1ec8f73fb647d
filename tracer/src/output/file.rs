//! Output files, opened safely: outputs reveal traced processes' address
//! layouts, so they are private (0600), and mmtrace (often root) must never
//! be tricked into writing somewhere else.
//!
//! - A symbolic link is never followed (`O_NOFOLLOW`), nor a directory
//!   written into.
//! - An existing file owned by another user in a sticky or world-writable
//!   directory (`/tmp`) is refused: someone else planted it.
//! - A new file is created 0600 (`O_EXCL`); an existing regular file of
//!   ours is truncated and made 0600; a device or FIFO (`/dev/null`) is
//!   written as it is. With a group ([`Access`]), 0640 and that group's.
//! - [`Replace`] writes a whole document through a temporary file in the
//!   same directory and renames it over the target at the end, so an
//!   existing file is only ever replaced by a complete one.
//! - [`LineFile`] keeps a stream's file at a line boundary: when a write
//!   fails (a full disk), what was cut is truncated away and the error is
//!   reported once.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

/// Mode of every file mmtrace creates.
pub const MODE: u32 = 0o600;
/// Mode of a file made readable by a group (`--output-group`).
pub const GROUP_MODE: u32 = 0o640;

/// Who may read an output besides its owner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// This group (gid), 0640; None: nobody, 0600.
    pub group: Option<u32>,
}

impl Access {
    pub fn mode(self) -> u32 {
        if self.group.is_some() {
            GROUP_MODE
        } else {
            MODE
        }
    }

    /// Gives a file just opened its group and mode.
    fn apply(self, file: &File, path: &Path) -> Result<()> {
        use std::os::fd::AsRawFd;
        if let Some(gid) = self.group {
            // SAFETY: an open descriptor; uid -1 keeps the owner.
            if unsafe { libc::fchown(file.as_raw_fd(), u32::MAX, gid) } != 0 {
                return Err(usage(
                    path,
                    format!(
                        "cannot give it to group {gid}: {}",
                        io::Error::last_os_error()
                    ),
                ));
            }
        }
        file.set_permissions(std::fs::Permissions::from_mode(self.mode()))
            .map_err(|e| usage(path, e))
    }
}

/// What is at the target path.
enum Target {
    Missing,
    /// A regular file of ours (or in a directory only its owner writes).
    Regular,
    /// A character device or FIFO: written as it is.
    Special,
}

fn usage(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Usage(format!("cannot write {}: {why}", path.display()))
}

/// The directory a path's file lives in.
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Checks what `path` is before anything is written.
fn inspect(path: &Path) -> Result<Target> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = parent_of(path);
            return match std::fs::metadata(&dir) {
                Ok(d) if d.is_dir() => Ok(Target::Missing),
                Ok(_) => Err(usage(path, format!("{} is not a directory", dir.display()))),
                Err(e) => Err(usage(path, e)),
            };
        }
        Err(e) => return Err(usage(path, e)),
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err(usage(
            path,
            "it is a symbolic link, which mmtrace does not follow (name the file itself)",
        ));
    }
    if kind.is_dir() {
        return Err(usage(path, "it is a directory"));
    }
    if !kind.is_file() {
        use std::os::unix::fs::FileTypeExt;
        return if kind.is_char_device() || kind.is_fifo() {
            Ok(Target::Special)
        } else {
            Err(usage(path, "it is not a regular file"))
        };
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        let dir = std::fs::metadata(parent_of(path)).map_err(|e| usage(path, e))?;
        let shared = dir.mode() & (libc::S_ISVTX | libc::S_IWOTH) != 0;
        if shared {
            return Err(usage(
                path,
                format!(
                    "it belongs to uid {} in a directory others can write; \
                     remove it or choose another name",
                    meta.uid()
                ),
            ));
        }
    }
    Ok(Target::Regular)
}

/// Checks that `path` can be written, without creating or changing it.
pub fn check(path: &Path) -> Result<()> {
    inspect(path).map(|_| ())
}

/// Opens `path` for a stream of output (see the module's rules).
pub fn create(path: &Path, access: Access) -> Result<File> {
    let target = inspect(path)?;
    let mut opts = OpenOptions::new();
    opts.write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    match target {
        Target::Missing => {
            opts.create_new(true).mode(MODE);
        }
        Target::Regular => {
            opts.truncate(true);
        }
        Target::Special => {}
    }
    let file = opts.open(path).map_err(|e| usage(path, e))?;
    if let Target::Missing | Target::Regular = target {
        // It now holds address layouts: private (or its group's).
        access.apply(&file, path)?;
    }
    Ok(file)
}

/// A document written whole: a temporary file beside the target, renamed
/// over it by [`Replace::commit`]. Dropped uncommitted, the temporary file
/// is removed and the target is untouched.
pub struct Replace {
    target: PathBuf,
    /// None when the target is a device written directly, or once
    /// committed.
    temp: Option<PathBuf>,
    file: File,
}

impl Replace {
    pub fn create(path: &Path, access: Access) -> Result<Replace> {
        if let Target::Special = inspect(path)? {
            return Ok(Replace {
                target: path.to_path_buf(),
                temp: None,
                file: create(path, access)?,
            });
        }
        let name = path
            .file_name()
            .ok_or_else(|| usage(path, "it names no file"))?
            .to_string_lossy()
            .into_owned();
        let dir = parent_of(path);
        for n in 0..100u32 {
            let temp = dir.join(format!(".{name}.mmtrace-{}-{n}", std::process::id()));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(MODE)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&temp)
            {
                Ok(file) => {
                    if let Err(e) = access.apply(&file, path) {
                        let _ = std::fs::remove_file(&temp);
                        return Err(e);
                    }
                    return Ok(Replace {
                        target: path.to_path_buf(),
                        temp: Some(temp),
                        file,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(usage(path, e)),
            }
        }
        Err(usage(path, "no free temporary name beside it"))
    }

    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Makes the written document the target.
    pub fn commit(mut self) -> io::Result<()> {
        if let Some(temp) = self.temp.take() {
            let done = self.file.sync_all().and_then(|()| {
                // The target may have appeared meanwhile: check it again.
                inspect(&self.target).map_err(|e| io::Error::other(e.to_string()))?;
                std::fs::rename(&temp, &self.target)
            });
            if done.is_err() {
                let _ = std::fs::remove_file(&temp);
            }
            done?;
        }
        Ok(())
    }
}

impl Drop for Replace {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = std::fs::remove_file(temp);
        }
    }
}

/// A file written in whole lines: the buffer is flushed only as whole
/// lines, and when a write fails, the file is cut back to the last whole
/// line and the error kept.
pub struct LineFile {
    file: File,
    buf: Vec<u8>,
    /// Bytes of whole lines in the file.
    committed: u64,
    capacity: usize,
    /// The first failure; nothing is written after it.
    failed: Option<io::ErrorKind>,
}

impl LineFile {
    pub fn new(file: File) -> LineFile {
        let capacity = 64 * 1024;
        LineFile {
            file,
            buf: Vec::with_capacity(capacity),
            committed: 0,
            capacity,
            failed: None,
        }
    }

    fn write_out(&mut self) -> io::Result<()> {
        if let Some(kind) = self.failed {
            return Err(io::Error::new(kind, "the output failed earlier"));
        }
        // Only whole lines go out.
        let end = match self.buf.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None => return Ok(()),
        };
        let mut done = 0;
        while done < end {
            match self.file.write(&self.buf[done..end]) {
                Ok(0) => {
                    return self.fail(done, io::Error::from(io::ErrorKind::WriteZero));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(done, e),
            }
        }
        self.committed += end as u64;
        self.buf.drain(..end);
        Ok(())
    }

    /// A write failed after `done` bytes of the buffer went out: keep the
    /// whole lines among them, cut the rest away, write nothing more.
    fn fail(&mut self, done: usize, e: io::Error) -> io::Result<()> {
        self.failed = Some(e.kind());
        let whole = self.buf[..done]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let _ = self.file.set_len(self.committed + whole as u64);
        self.buf.clear();
        Err(e)
    }
}

impl Write for LineFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(kind) = self.failed {
            return Err(io::Error::new(kind, "the output failed earlier"));
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= self.capacity {
            self.write_out()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mmtrace-file-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// With a group: 0640 and the group's, new files and replaced ones.
    #[test]
    fn a_group_reads_what_it_is_given() {
        let dir = scratch("group");
        // The process's own group: always allowed.
        let gid = unsafe { libc::getegid() };
        let access = Access { group: Some(gid) };
        let p = dir.join("out");
        drop(create(&p, access).unwrap());
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!((m.mode() & 0o777, m.gid()), (GROUP_MODE, gid));
        let d = dir.join("doc");
        let mut r = Replace::create(&d, access).unwrap();
        r.file().write_all(b"x").unwrap();
        r.commit().unwrap();
        let m = std::fs::metadata(&d).unwrap();
        assert_eq!((m.mode() & 0o777, m.gid()), (GROUP_MODE, gid));
    }

    #[test]
    fn new_files_are_private() {
        let dir = scratch("private");
        let p = dir.join("out");
        drop(create(&p, Access::default()).unwrap());
        let mode = std::fs::metadata(&p).unwrap().mode() & 0o777;
        assert_eq!(mode, MODE);
        // An existing file of ours is truncated and made private.
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(create(&p, Access::default()).unwrap());
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!((meta.len(), meta.mode() & 0o777), (0, MODE));
    }

    #[test]
    fn symlinks_and_directories_are_refused() {
        let dir = scratch("links");
        let victim = dir.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = create(&link, Access::default()).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(Replace::create(&link, Access::default()).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let e = create(&dir, Access::default()).unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
        assert!(create(&dir.join("no").join("x"), Access::default()).is_err());
    }

    #[test]
    fn a_document_replaces_the_target_only_when_committed() {
        let dir = scratch("replace");
        let p = dir.join("doc.json");
        std::fs::write(&p, "old").unwrap();
        {
            let mut r = Replace::create(&p, Access::default()).unwrap();
            r.file().write_all(b"half").unwrap();
            // Dropped: the target is untouched, no temporary file is left.
        }
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let mut r = Replace::create(&p, Access::default()).unwrap();
        r.file().write_all(b"new").unwrap();
        r.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, MODE);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn devices_are_written_as_they_are() {
        let mut f = create(Path::new("/dev/null"), Access::default()).unwrap();
        f.write_all(b"x\n").unwrap();
        let mut r = Replace::create(Path::new("/dev/null"), Access::default()).unwrap();
        r.file().write_all(b"{}\n").unwrap();
        r.commit().unwrap();
    }

    #[test]
    fn only_whole_lines_reach_the_file() {
        let dir = scratch("lines");
        let p = dir.join("out");
        let mut w = LineFile::new(create(&p, Access::default()).unwrap());
        w.write_all(b"one\ntw").unwrap();
        w.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "one\n");
        w.write_all(b"o\n").unwrap();
        w.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "one\ntwo\n");
    }
}
