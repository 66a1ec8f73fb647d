//! Maps and touches the number of MiB given (default 64) of anonymous
//! memory, makes a few more memory system calls, prints `ready PID` and
//! waits until its standard input closes: the metrics test compares what
//! the daemon exports for it with its own /proc/self/status.

use std::io::{Read, Write};

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let len = mib << 20;
    // SAFETY: an anonymous private mapping, written page by page, kept.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap");
    for off in (0..len).step_by(4096) {
        // SAFETY: inside the mapping.
        unsafe { std::ptr::write_volatile(p.cast::<u8>().add(off), 1) };
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
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready {}", std::process::id());
    let _ = out.flush();
    drop(out);
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}
