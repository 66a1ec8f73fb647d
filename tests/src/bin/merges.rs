//! `merges`: the changes whose merges the kernel decides by what it alone
//! knows (page offsets of moved memory, anon_vma chains), for the test
//! that the model follows the kernel's VMA tree:
//!
//! 1. a written region moved by mremap next to a fresh neighbour (it keeps
//!    its page offset: no merge), and one moved with MREMAP_DONTUNMAP (the
//!    old range stays, empty);
//! 2. 3000 random mmap, munmap, mprotect and writes of anonymous memory
//!    (the kernel may share an anon_vma with a neighbour at a first write,
//!    and merge them later);
//! 3. a fork whose child grows the heap and maps next to inherited,
//!    written regions (their anon_vma chains keep them apart).
//!
//! Anything unexpected makes it print a message and exit with status 1.

use std::ptr;

const PAGE: usize = 4096;

fn fail(msg: &str) -> ! {
    eprintln!("merges: {msg}: {}", std::io::Error::last_os_error());
    std::process::exit(1);
}

fn map(addr: usize, len: usize, fixed: bool) -> usize {
    let flags =
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | if fixed { libc::MAP_FIXED_NOREPLACE } else { 0 };
    // SAFETY: fresh anonymous memory, or memory known free (NOREPLACE).
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
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

fn protect(addr: usize, len: usize, prot: i32) {
    // SAFETY: memory this program mapped.
    if unsafe { libc::mprotect(addr as *mut libc::c_void, len, prot) } != 0 {
        fail("mprotect");
    }
}

fn write(addr: usize) {
    // SAFETY: a page of a read-write mapping of this program.
    unsafe { ptr::write_volatile(addr as *mut u8, 1) };
}

/// A small deterministic generator (no allocation, no syscall).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn moves() {
    // A written region moved to just below a fresh one.
    let area = map(0, 16 * PAGE, false);
    unmap(area, 16 * PAGE);
    let src = map(area, 2 * PAGE, true);
    write(src);
    let neighbour = map(area + 10 * PAGE, 2 * PAGE, true);
    write(neighbour);
    // SAFETY: moves our own mapping to a free place next to `neighbour`.
    let moved = unsafe {
        libc::mremap(
            src as *mut libc::c_void,
            2 * PAGE,
            2 * PAGE,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            (area + 8 * PAGE) as *mut libc::c_void,
        )
    };
    if moved == libc::MAP_FAILED {
        fail("mremap");
    }
    // And with MREMAP_DONTUNMAP (5.7 on): the old range stays mapped.
    let old = map(0, 4 * PAGE, false);
    write(old);
    // SAFETY: as above; the kernel picks the new place.
    let new = unsafe {
        libc::syscall(
            libc::SYS_mremap,
            old,
            4 * PAGE,
            4 * PAGE,
            libc::MREMAP_MAYMOVE | 4, // MREMAP_DONTUNMAP
            0,
        )
    };
    if new < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
        fail("mremap with MREMAP_DONTUNMAP");
    }
    write(old);
}

fn random_changes() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut maps = [(0usize, 0usize); 64];
    for _ in 0..3000 {
        let k = rng.below(64) as usize;
        let (addr, len) = maps[k];
        if addr != 0 {
            unmap(addr, len);
            maps[k] = (0, 0);
            continue;
        }
        let len = (1 + rng.below(8) as usize) * PAGE;
        let addr = map(0, len, false);
        maps[k] = (addr, len);
        if rng.below(2) == 0 {
            write(addr);
        }
        if rng.below(3) == 0 && len > PAGE {
            protect(addr, PAGE, libc::PROT_READ);
        }
        if rng.below(5) == 0 {
            protect(addr, len, libc::PROT_READ | libc::PROT_WRITE);
        }
        if rng.below(4) == 0 {
            write(addr + len - 1);
        }
    }
}

fn fork_and_grow() {
    let heap = Box::new([1u8; 1000]);
    let below = map(0, 2 * PAGE, false);
    write(below);
    // SAFETY: the child only makes syscalls and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        fail("fork");
    }
    if pid == 0 {
        // SAFETY: the child's own heap and memory; it exits right away.
        unsafe {
            let brk = libc::sbrk(0) as usize;
            if libc::brk((brk + 64 * PAGE) as *mut libc::c_void) != 0 {
                libc::_exit(1);
            }
            ptr::write_volatile((brk + PAGE) as *mut u8, 1);
            let p = libc::mmap(
                (below - 2 * PAGE) as *mut libc::c_void,
                2 * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            );
            if p != libc::MAP_FAILED {
                ptr::write_volatile(p.cast::<u8>(), 1);
            }
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waits for our child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid || status != 0 {
        fail("the child");
    }
    drop(heap);
}

fn main() {
    moves();
    random_changes();
    fork_and_grow();
}
