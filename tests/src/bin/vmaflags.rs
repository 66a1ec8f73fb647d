//! `vmaflags`: changes to VMAs made by calls that are not memory calls,
//! or by no call at all, for the test that the model still follows the
//! kernel:
//!
//! 1. userfaultfd: UFFDIO_REGISTER of the middle of an anonymous region
//!    (the kernel splits it at the range's edges), UFFDIO_UNREGISTER (it
//!    merges the pieces again), a second register, unregisters of a part
//!    and of more than all of it, then close() of the userfaultfd; with
//!    `--close-registered`, a range is still registered at the close,
//!    which unregisters (and merges) it with no memory call;
//! 2. a MAP_GROWSDOWN region grown by touching pages below it.
//!
//! `vmaflags [userfaultfd|growsdown] [--close-registered]` runs one step;
//! without an argument, both. Between steps, a one-page mmap and munmap give the tracer a memory call
//! to compare the kernel's counters at. Anything unexpected makes it print
//! a message and exit with status 1.

use std::ptr;

const PAGE: usize = 4096;

fn fail(msg: &str) -> ! {
    eprintln!("vmaflags: {msg}: {}", std::io::Error::last_os_error());
    std::process::exit(1);
}

fn map(addr: usize, len: usize, prot: i32, flags: i32) -> usize {
    // SAFETY: fresh anonymous memory, or memory known free (NOREPLACE).
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            prot,
            flags | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        fail("mmap");
    }
    p as usize
}

fn unmap(addr: usize, len: usize) {
    // SAFETY: memory this program mapped and nothing references.
    if unsafe { libc::munmap(addr as *mut libc::c_void, len) } != 0 {
        fail("munmap");
    }
}

/// A memory call the tracer sees, away from everything else.
fn tick() {
    let p = map(0, PAGE, libc::PROT_READ, 0);
    unmap(p, PAGE);
}

// <linux/userfaultfd.h>
const UFFD_API: u64 = 0xAA;
const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
const UFFDIO_UNREGISTER: libc::c_ulong = 0x8010_aa01;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

fn uffd_register(uffd: i32, start: usize, len: usize) {
    let mut reg = UffdioRegister {
        range: UffdioRange {
            start: start as u64,
            len: len as u64,
        },
        mode: UFFDIO_REGISTER_MODE_MISSING,
        ioctls: 0,
    };
    // SAFETY: the argument is the struct the ioctl takes.
    if unsafe { libc::ioctl(uffd, UFFDIO_REGISTER, &raw mut reg) } != 0 {
        fail("UFFDIO_REGISTER");
    }
}

fn userfaultfd() {
    // SAFETY: plain syscalls on memory and a descriptor of this program.
    let uffd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) } as i32;
    if uffd < 0 {
        fail("userfaultfd");
    }
    let mut api = UffdioApi {
        api: UFFD_API,
        features: 0,
        ioctls: 0,
    };
    // SAFETY: the argument is the struct the ioctl takes.
    if unsafe { libc::ioctl(uffd, UFFDIO_API, &raw mut api) } != 0 {
        fail("UFFDIO_API");
    }
    let base = map(0, 16 * PAGE, libc::PROT_READ | libc::PROT_WRITE, 0);
    tick();
    uffd_register(uffd, base + 4 * PAGE, 4 * PAGE);
    tick();
    uffd_unregister(uffd, base + 4 * PAGE, 4 * PAGE);
    tick();
    uffd_register(uffd, base + 2 * PAGE, 2 * PAGE);
    tick();
    // Half of it, and past its end (a range may span several mappings).
    uffd_unregister(uffd, base + 3 * PAGE, 4 * PAGE);
    tick();
    uffd_unregister(uffd, base, 16 * PAGE);
    tick();
    // Registered again, and left so: closing the userfaultfd unregisters
    // (and merges) with no memory call, unless asked not to.
    if std::env::args().any(|a| a == "--close-registered") {
        uffd_register(uffd, base + 8 * PAGE, 2 * PAGE);
        tick();
    }
    // SAFETY: our descriptor.
    unsafe { libc::close(uffd) };
    tick();
    unmap(base, 16 * PAGE);
    tick();
}

fn uffd_unregister(uffd: i32, start: usize, len: usize) {
    let mut range = UffdioRange {
        start: start as u64,
        len: len as u64,
    };
    // SAFETY: the argument is the struct the ioctl takes.
    if unsafe { libc::ioctl(uffd, UFFDIO_UNREGISTER, &raw mut range) } != 0 {
        fail("UFFDIO_UNREGISTER");
    }
}

fn grows_down() {
    // Room below: the kernel keeps a guard gap (1 MiB by default) under a
    // region that grows down, so reserve 4 MiB and map at its top.
    let room = 4 << 20;
    let reserve = map(0, room, libc::PROT_NONE, 0);
    unmap(reserve, room);
    let top = reserve + room - 4 * PAGE;
    let region = map(
        top,
        4 * PAGE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_GROWSDOWN | libc::MAP_FIXED_NOREPLACE,
    );
    if region != top {
        fail("MAP_FIXED_NOREPLACE placed it elsewhere");
    }
    tick();
    for below in [1, 8, 9] {
        let p = (top - below * PAGE) as *mut u8;
        // SAFETY: the kernel grows the region down to cover this page.
        unsafe { ptr::write_volatile(p, 1) };
        tick();
    }
    // The region now starts 9 pages lower.
    unmap(top - 9 * PAGE, 13 * PAGE);
    tick();
}

fn main() {
    // Blocked a moment first: a tracer reads the address space the exec
    // made while nothing changes it (a program this short could otherwise
    // be gone before its exec is handled).
    std::thread::sleep(std::time::Duration::from_millis(50));
    let which = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_default();
    match which.as_str() {
        "userfaultfd" => userfaultfd(),
        "growsdown" => grows_down(),
        "" => {
            userfaultfd();
            grows_down();
        }
        other => fail(&format!("unknown step {other:?}")),
    }
}
