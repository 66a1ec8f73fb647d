//! Maps, touches and unmaps one page every 5 ms for the number of seconds
//! given (default 30), so tests can trace a process that already runs.
//! With `--busy` it spins between the pages instead of sleeping: a process
//! that never blocks. With `--brk` it also grows its break by a page and
//! shrinks it back each time.

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(30.0);
    let busy = std::env::args().any(|a| a == "--busy");
    let brk = std::env::args().any(|a| a == "--brk");
    let end = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
    while std::time::Instant::now() < end {
        // SAFETY: an anonymous private mapping, written then unmapped.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p != libc::MAP_FAILED {
                std::ptr::write_volatile(p.cast::<u8>(), 1);
                libc::munmap(p, 4096);
            }
            if brk {
                libc::sbrk(4096);
                libc::sbrk(-4096);
            }
        }
        let next = std::time::Instant::now() + std::time::Duration::from_millis(5);
        if busy {
            while std::time::Instant::now() < next {
                std::hint::spin_loop();
            }
        } else {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
