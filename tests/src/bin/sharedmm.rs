//! `sharedmm`: processes that share their parent's address space.
//!
//! 1. A child made with `clone(CLONE_VM | SIGCHLD)` maps 3 pages and makes
//!    the middle one read-only, then exits; the parent unmaps the 3 pages.
//! 2. `posix_spawn` of /bin/true (glibc makes that child with CLONE_VM and
//!    CLONE_VFORK; it runs in the parent's address space until its exec).
//!
//! Anything unexpected makes it print a message and exit with status 1.

use std::ptr;

fn fail(msg: &str) -> ! {
    eprintln!("sharedmm: {msg}: {}", std::io::Error::last_os_error());
    std::process::exit(1);
}

const PAGE: usize = 4096;
const STACK: usize = 64 * 1024;

/// The child's work: map 3 pages, protect the middle one, hand back the
/// address through `arg`.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: a fresh anonymous mapping, in the address space the parent
    // shares; `arg` points at the parent's usize, which it reads after
    // waiting for this child.
    unsafe {
        let p = libc::mmap(
            ptr::null_mut(),
            3 * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return 1;
        }
        ptr::write_volatile(p.cast::<u8>(), 1);
        if libc::mprotect(p.cast::<u8>().add(PAGE).cast(), PAGE, libc::PROT_READ) != 0 {
            return 1;
        }
        *arg.cast::<usize>() = p as usize;
    }
    0
}

fn wait_ok(pid: libc::pid_t, what: &str) {
    let mut status = 0;
    // SAFETY: waits for our own child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        fail(&format!("waitpid {what}"));
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        eprintln!("sharedmm: {what} ended with status {status:#x}");
        std::process::exit(1);
    }
}

fn main() {
    let mut made: usize = 0;
    // SAFETY: a stack for the child, and clone running `child` on it in
    // this address space; the parent touches nothing the child uses until
    // it has waited for it.
    unsafe {
        let stack = libc::mmap(
            ptr::null_mut(),
            STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        );
        if stack == libc::MAP_FAILED {
            fail("mmap of the stack");
        }
        let pid = libc::clone(
            child,
            stack.cast::<u8>().add(STACK).cast(),
            libc::CLONE_VM | libc::SIGCHLD,
            (&raw mut made).cast(),
        );
        if pid < 0 {
            fail("clone");
        }
        wait_ok(pid, "the CLONE_VM child");
        if made == 0 {
            eprintln!("sharedmm: the child mapped nothing");
            std::process::exit(1);
        }
        if libc::munmap(made as *mut libc::c_void, 3 * PAGE) != 0 {
            fail("munmap of the child's pages");
        }
        let mut pid: libc::pid_t = 0;
        let path = c"/bin/true";
        let argv = [path.as_ptr().cast_mut(), ptr::null_mut()];
        let env: [*mut libc::c_char; 1] = [ptr::null_mut()];
        let err = libc::posix_spawn(
            &mut pid,
            path.as_ptr(),
            ptr::null(),
            ptr::null(),
            argv.as_ptr(),
            env.as_ptr(),
        );
        if err != 0 {
            eprintln!("sharedmm: posix_spawn: error {err}");
            std::process::exit(1);
        }
        wait_ok(pid, "/bin/true");
    }
}
