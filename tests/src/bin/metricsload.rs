//! Maps and touches the number of MiB given (default 64) of anonymous
//! memory, makes a few more memory system calls, prints `ready PID` and
//! then, for each line `touch` on its standard input, touches one more MiB
//! of anonymous memory and prints `touched`, until its standard input
//! closes: the metrics test compares what the daemon exports for it with
//! its own /proc/self/status. A second argument renames it (its comm,
//! PR_SET_NAME) once it is ready; a third names a file it maps and reads
//! whole (resident file pages).

use std::io::{BufRead, Write};

/// Maps `len` bytes (of `fd` when it is not -1) and reads or writes every
/// page.
fn touch(len: usize, fd: i32) {
    let (prot, flags) = if fd < 0 {
        (
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        )
    } else {
        (libc::PROT_READ, libc::MAP_SHARED)
    };
    // SAFETY: a new mapping, kept; only its own pages are touched.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
    assert_ne!(p, libc::MAP_FAILED, "mmap");
    for off in (0..len).step_by(4096) {
        // SAFETY: inside the mapping.
        unsafe {
            if fd < 0 {
                std::ptr::write_volatile(p.cast::<u8>().add(off), 1);
            } else {
                std::ptr::read_volatile(p.cast::<u8>().add(off));
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    touch(mib << 20, -1);
    if let Some(path) = args.get(3) {
        let f = std::fs::File::open(path).expect("open the file to map");
        let len = f.metadata().expect("its size").len() as usize;
        use std::os::fd::AsRawFd;
        touch(len, f.as_raw_fd());
    }
    // A few more calls: mprotect and munmap of a scratch page.
    for _ in 0..10 {
        // SAFETY: a scratch mapping, changed then unmapped.
        unsafe {
            let q = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if q != libc::MAP_FAILED {
                libc::mprotect(q, 4096, libc::PROT_READ);
                libc::munmap(q, 4096);
            }
        }
    }
    if let Some(name) = args.get(2).filter(|n| !n.is_empty()) {
        let name = std::ffi::CString::new(name.as_str()).expect("a name without NUL");
        // SAFETY: a NUL-terminated name; the kernel keeps 15 bytes of it.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready {}", std::process::id());
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else {
            break;
        };
        if line.trim() == "touch" {
            touch(1 << 20, -1);
            let _ = writeln!(out, "touched");
            let _ = out.flush();
        }
    }
}
