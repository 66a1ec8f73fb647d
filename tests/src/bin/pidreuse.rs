//! Forks a child that maps a page and exits, then makes the kernel hand
//! the same pid to a second child (through /proc/sys/kernel/ns_last_pid,
//! as root), which maps a page too. Prints `PID` when the pid was reused,
//! exits 3 when it could not be.

fn child_maps_and_exits() -> i32 {
    // SAFETY: fork in a single-threaded program; the child only makes
    // syscalls and _exits.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            let p = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p != libc::MAP_FAILED {
                *(p as *mut u8) = 1;
            }
            libc::_exit(0);
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        pid
    }
}

fn main() {
    for _ in 0..20 {
        let first = child_maps_and_exits();
        if std::fs::write("/proc/sys/kernel/ns_last_pid", (first - 1).to_string()).is_err() {
            eprintln!("pidreuse: cannot write ns_last_pid (needs root)");
            std::process::exit(2);
        }
        let second = child_maps_and_exits();
        if second == first {
            println!("{first}");
            return;
        }
    }
    eprintln!("pidreuse: the pid was taken by another process every time");
    std::process::exit(3);
}
