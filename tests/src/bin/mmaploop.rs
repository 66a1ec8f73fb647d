//! Maps, writes and unmaps one page as fast as it can for the number of
//! seconds given (default 10), then prints how many rounds it made: the
//! load of `cargo xtask bench`'s recording benchmark.

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    let end = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
    let mut rounds = 0u64;
    while std::time::Instant::now() < end {
        for _ in 0..1000 {
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
            }
            rounds += 1;
        }
    }
    println!("{rounds} rounds");
}
