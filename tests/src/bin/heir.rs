//! `heir`: a child made with `clone(CLONE_VM | SIGCHLD)` outlives its
//! parent, and so holds their address space alone: the parent makes the
//! child, prints its pid and exits at once; the child waits until
//! it is reparented, then execs `sleep 0.6` (its first event after the
//! parent's exit: the regions it held, the parent's, die by it).
//!
//! Anything unexpected makes it print a message and exit with status 1.

use std::ptr;

const STACK: usize = 64 * 1024;

fn fail(msg: &str) -> ! {
    eprintln!("heir: {msg}: {}", std::io::Error::last_os_error());
    std::process::exit(1);
}

/// What the child gets: its parent's pid.
#[repr(C)]
struct Arg {
    parent: libc::pid_t,
}

/// The child: only system calls, on its own stack.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points at the parent's Arg, in the shared address
    // space, which stays mapped after the parent exits (the child holds
    // it).
    unsafe {
        let a = &*arg.cast::<Arg>();
        while libc::getppid() == a.parent {
            libc::sched_yield();
        }
        let path = c"/bin/sleep";
        let argv = [c"sleep".as_ptr(), c"0.6".as_ptr(), ptr::null()];
        libc::execv(path.as_ptr(), argv.as_ptr());
    }
    1
}

fn main() {
    // SAFETY: a stack for the child, then clone running
    // `child` on it in this address space; the parent only prints and exits.
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
            fail("mmap");
        }
        // Leaked: it must outlive main (the child reads it).
        let arg = Box::into_raw(Box::new(Arg {
            parent: libc::getpid(),
        }));
        let pid = libc::clone(
            child,
            stack.cast::<u8>().add(STACK).cast(),
            libc::CLONE_VM | libc::SIGCHLD,
            arg.cast(),
        );
        if pid < 0 {
            fail("clone");
        }
        let line = format!("{pid}\n");
        libc::write(1, line.as_ptr().cast(), line.len());
        libc::_exit(0);
    }
}
