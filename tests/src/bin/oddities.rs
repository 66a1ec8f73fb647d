//! `oddities DIR`: the less common shapes of mmtrace's JSONL lines, made on
//! purpose for the schema test (tests/jsonl_schema.rs), in this order:
//!
//! 1. a child killed by SIGKILL (`exit` with a `signal`);
//! 2. an mmap, munmap, mremap, mprotect and madvise that fail (`ret: null`
//!    and `errno`);
//! 3. an mremap with MREMAP_FIXED (`new_addr`);
//! 4. an mmap of a file whose name is not UTF-8 (`path_hex`), in DIR;
//! 5. an mmap of a file 60 directories deep in DIR (`path_truncated`);
//! 6. a comm that is not UTF-8 (`comm_hex`), then an mmap and a munmap;
//! 7. an exec of /bin/true from a thread that is not the leader (`old_pid`),
//!    whose exit status (0) becomes the program's.
//!
//! Anything unexpected makes it print a message and exit with status 1.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr;

fn fail(msg: &str) -> ! {
    eprintln!("oddities: {msg}");
    std::process::exit(1);
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

const PAGE: usize = 4096;

/// An anonymous private read-write mapping of `len` bytes.
fn map_anon(len: usize) -> *mut libc::c_void {
    // SAFETY: a fresh anonymous mapping.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        fail(&format!("mmap of {len} bytes: errno {}", errno()));
    }
    p
}

fn unmap(p: *mut libc::c_void, len: usize) {
    // SAFETY: `p` is a mapping of ours of `len` bytes, no longer used.
    if unsafe { libc::munmap(p, len) } != 0 {
        fail(&format!("munmap: errno {}", errno()));
    }
}

/// Step 1.
fn child_killed_by_a_signal() {
    // SAFETY: fork in a program with one thread; the child only raises a
    // signal.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: killing ourselves.
        unsafe {
            libc::raise(libc::SIGKILL);
            libc::_exit(3);
        }
    }
    if pid < 0 {
        fail(&format!("fork: errno {}", errno()));
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if !libc::WIFSIGNALED(status) || libc::WTERMSIG(status) != libc::SIGKILL {
        fail(&format!(
            "the child was not killed by SIGKILL: status {status:#x}"
        ));
    }
}

/// Step 2: each call fails with the errno expected.
fn failing_calls() {
    // Not page-aligned: every call below refuses it.
    let bad = ptr::without_provenance_mut::<libc::c_void>(1);
    // SAFETY: the calls fail before touching memory: the address is not
    // page-aligned, and the mmap has no file (fd -1 without
    // MAP_ANONYMOUS).
    let results = unsafe {
        [
            (
                "mmap without a file",
                libc::mmap(
                    ptr::null_mut(),
                    PAGE,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    -1,
                    0,
                ) == libc::MAP_FAILED,
                errno(),
                libc::EBADF,
            ),
            (
                "munmap unaligned",
                libc::munmap(bad, PAGE) == -1,
                errno(),
                libc::EINVAL,
            ),
            (
                "mremap unaligned",
                libc::mremap(bad, PAGE, 2 * PAGE, 0) == libc::MAP_FAILED,
                errno(),
                libc::EINVAL,
            ),
            (
                "mprotect unaligned",
                libc::mprotect(bad, PAGE, libc::PROT_READ) == -1,
                errno(),
                libc::EINVAL,
            ),
            (
                "madvise unaligned",
                libc::madvise(bad, PAGE, libc::MADV_DONTNEED) == -1,
                errno(),
                libc::EINVAL,
            ),
        ]
    };
    for (what, failed, got, want) in results {
        if !failed || got != want {
            fail(&format!(
                "{what}: failed {failed}, errno {got} (expected {want})"
            ));
        }
    }
}

/// Step 3: moves a page onto another mapping of ours with MREMAP_FIXED.
fn mremap_fixed() {
    let from = map_anon(PAGE);
    let to = map_anon(2 * PAGE);
    // SAFETY: both are our mappings; the target range is replaced.
    let moved = unsafe {
        libc::mremap(
            from,
            PAGE,
            PAGE,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            to,
        )
    };
    if moved != to {
        fail(&format!("mremap with MREMAP_FIXED: errno {}", errno()));
    }
    unmap(to, 2 * PAGE);
}

/// Maps the first page of `path` (created with one page of data) read-only,
/// then unmaps it and removes the file.
fn map_file(path: &Path) {
    std::fs::write(path, [7u8; PAGE])
        .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", path.display())));
    let file = std::fs::File::open(path)
        .unwrap_or_else(|e| fail(&format!("cannot open {}: {e}", path.display())));
    // SAFETY: a private read-only mapping of an open file of one page.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            PAGE,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        fail(&format!("mmap of {}: errno {}", path.display(), errno()));
    }
    drop(file);
    unmap(p, PAGE);
    let _ = std::fs::remove_file(path);
}

/// Step 7, on a thread that is not the leader: never returns.
fn exec_true_from_a_thread() -> ! {
    let handle = std::thread::spawn(|| {
        let prog = CString::new("/bin/true").unwrap();
        let argv = [prog.as_ptr(), ptr::null()];
        // SAFETY: a NUL-terminated argv of C strings that outlive the call.
        unsafe { libc::execv(prog.as_ptr(), argv.as_ptr()) };
        fail(&format!("execv /bin/true: errno {}", errno()));
    });
    // The exec ends this thread; a join that returns means it failed.
    let _ = handle.join();
    fail("the exec did not happen");
}

fn main() {
    let dir: PathBuf = match std::env::args_os().nth(1) {
        Some(d) => d.into(),
        None => fail("usage: oddities DIR"),
    };
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", dir.display())));

    child_killed_by_a_signal();
    failing_calls();
    mremap_fixed();

    map_file(&dir.join(std::ffi::OsStr::from_bytes(b"odd\xffname")));

    let mut deep = dir.join("deep");
    for _ in 0..60 {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep)
        .unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", deep.display())));
    map_file(&deep.join("file"));
    let _ = std::fs::remove_dir_all(dir.join("deep"));

    let name = b"odd\xffcomm\0";
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    if unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) } != 0 {
        fail(&format!("PR_SET_NAME: errno {}", errno()));
    }
    let p = map_anon(PAGE);
    unmap(p, PAGE);

    exec_true_from_a_thread();
}
