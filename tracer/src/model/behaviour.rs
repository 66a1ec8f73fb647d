//! How the running kernel changes mappings, where kernels differ in ways
//! the model must follow: found by trying it on a scratch mapping of our
//! own ([`KernelBehaviour::probe`]), not by reading the version number
//! (distributions backport, and a version says nothing of a kernel's
//! configuration).

use std::fs;

use log::debug;

/// The kernel differences the model follows. The default is the newest
/// kernels' behaviour (for tests, and when a probe cannot tell).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelBehaviour {
    /// `mmap(MAP_STACK)` sets VM_NOHUGEPAGE (Linux 6.7 and later), which
    /// keeps a thread stack from merging with a plain anonymous neighbour.
    pub map_stack_nohugepage: bool,
    /// An `mremap` that grows a mapping in place merges it with compatible
    /// neighbours, the mapping that now follows it included (not on 5.10,
    /// which only extends it: since 5.19 the kernel merges there).
    pub mremap_grow_merges: bool,
    /// A mapping that has an anon_vma (its pages written) merges with a
    /// compatible neighbour that has none, which then shares it (6.18
    /// here; not on 5.10 or 6.1, whose `is_mergeable_anon_vma` refuses it:
    /// after munlock a populated mapping stays apart from its untouched
    /// neighbours).
    pub faulted_merges_unfaulted: bool,
    /// mprotect that makes an anonymous mapping without pages read-only
    /// takes its VM_ACCOUNT away (newer kernels), so that it can merge
    /// with read-only neighbours that never had it.
    pub mprotect_unaccounts_unfaulted: bool,
}

impl Default for KernelBehaviour {
    fn default() -> KernelBehaviour {
        KernelBehaviour {
            map_stack_nohugepage: true,
            mremap_grow_merges: true,
            faulted_merges_unfaulted: true,
            mprotect_unaccounts_unfaulted: true,
        }
    }
}

const PAGE: usize = 4096;

impl KernelBehaviour {
    /// Asks the running kernel, on scratch mappings of this process; what a
    /// probe cannot tell keeps the default. Says what it found at debug
    /// level.
    pub fn probe() -> KernelBehaviour {
        let default = KernelBehaviour::default();
        let map_stack_nohugepage = probe_map_stack_nohugepage().unwrap_or_else(|why| {
            debug!("kernel probe: MAP_STACK and VM_NOHUGEPAGE: {why}; assuming the newest kernels' behaviour");
            default.map_stack_nohugepage
        });
        let mremap_grow_merges = probe_mremap_grow_merges().unwrap_or_else(|why| {
            debug!("kernel probe: mremap growth in place: {why}; assuming it merges");
            default.mremap_grow_merges
        });
        let faulted_merges_unfaulted = probe_faulted_merges_unfaulted().unwrap_or_else(|why| {
            debug!("kernel probe: merging a written mapping with an untouched one: {why}; assuming it merges");
            default.faulted_merges_unfaulted
        });
        let mprotect_unaccounts_unfaulted = probe_mprotect_unaccounts().unwrap_or_else(|why| {
            debug!("kernel probe: mprotect and VM_ACCOUNT: {why}; assuming it uncharges");
            default.mprotect_unaccounts_unfaulted
        });
        let found = KernelBehaviour {
            map_stack_nohugepage,
            mremap_grow_merges,
            faulted_merges_unfaulted,
            mprotect_unaccounts_unfaulted,
        };
        debug!(
            "kernel probe: MAP_STACK {} VM_NOHUGEPAGE; an mremap growth in place {} with its \
             neighbours; a written mapping {} with an untouched neighbour; mprotect read-only {} \
             an untouched anonymous mapping",
            if found.map_stack_nohugepage {
                "sets"
            } else {
                "does not set"
            },
            if found.mremap_grow_merges {
                "merges"
            } else {
                "does not merge"
            },
            if found.faulted_merges_unfaulted {
                "merges"
            } else {
                "does not merge"
            },
            if found.mprotect_unaccounts_unfaulted {
                "uncharges"
            } else {
                "keeps charged"
            },
        );
        found
    }
}

/// An anonymous private mapping of ours, unmapped on drop.
struct Scratch {
    addr: usize,
    len: usize,
}

impl Scratch {
    fn new(len: usize, prot: libc::c_int, extra_flags: libc::c_int) -> Result<Scratch, String> {
        // SAFETY: a fresh anonymous mapping at an address the kernel picks.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        Ok(Scratch {
            addr: addr as usize,
            len,
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: the range is ours (the holes in it unmap as no-ops), and
        // nothing refers to it.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

/// Whether a fresh MAP_STACK mapping has `nh` (VM_NOHUGEPAGE) among its
/// VmFlags in /proc/self/smaps.
fn probe_map_stack_nohugepage() -> Result<bool, String> {
    let scratch = Scratch::new(
        2 * PAGE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_STACK,
    )?;
    let smaps =
        fs::read_to_string("/proc/self/smaps").map_err(|e| format!("/proc/self/smaps: {e}"))?;
    let flags = vm_flags(&smaps, scratch.addr)
        .ok_or_else(|| format!("no VmFlags for {:#x} in /proc/self/smaps", scratch.addr))?;
    Ok(flags.split_whitespace().any(|f| f == "nh"))
}

/// The VmFlags line of the smaps entry that contains `addr`.
fn vm_flags(smaps: &str, addr: usize) -> Option<&str> {
    let mut in_entry = false;
    for line in smaps.lines() {
        if let Some(range) = line_range(line) {
            in_entry = range.0 <= addr && addr < range.1;
        } else if in_entry {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return Some(flags);
            }
        }
    }
    None
}

/// `start-end` at the head of a maps (or smaps entry) line.
fn line_range(line: &str) -> Option<(usize, usize)> {
    let (lo, hi) = line.split_whitespace().next()?.split_once('-')?;
    Some((
        usize::from_str_radix(lo, 16).ok()?,
        usize::from_str_radix(hi, 16).ok()?,
    ))
}

/// Maps 3 pages, unmaps the middle one, grows the first back over it in
/// place and looks in /proc/self/maps whether the grown mapping and the
/// third page are now one.
fn probe_mremap_grow_merges() -> Result<bool, String> {
    let scratch = Scratch::new(3 * PAGE, libc::PROT_READ | libc::PROT_WRITE, 0)?;
    let a = scratch.addr;
    // SAFETY: unmaps a page of our own scratch mapping.
    if unsafe { libc::munmap((a + PAGE) as *mut libc::c_void, PAGE) } != 0 {
        return Err(format!("munmap: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: grows our own one-page mapping in place (no MREMAP_MAYMOVE).
    let grown = unsafe { libc::mremap(a as *mut libc::c_void, PAGE, 2 * PAGE, 0) };
    if grown == libc::MAP_FAILED {
        // Another thread took the hole meanwhile.
        return Err(format!("mremap: {}", std::io::Error::last_os_error()));
    }
    let maps =
        fs::read_to_string("/proc/self/maps").map_err(|e| format!("/proc/self/maps: {e}"))?;
    let third = a + 2 * PAGE;
    let (start, _) = maps_range_containing(&maps, third)
        .ok_or_else(|| format!("{third:#x} not in /proc/self/maps"))?;
    Ok(start <= a + PAGE)
}

/// Maps 2 pages of its own (MAP_NORESERVE: no neighbour has the same
/// flags), splits them with madvise(MADV_DONTDUMP) on the second, writes
/// to the first (it gets an anon_vma, the second has none), then makes
/// the first MADV_DONTDUMP too: whether the kernel merges them.
fn probe_faulted_merges_unfaulted() -> Result<bool, String> {
    let scratch = Scratch::new(
        2 * PAGE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_NORESERVE,
    )?;
    let a = scratch.addr;
    let read_maps =
        || fs::read_to_string("/proc/self/maps").map_err(|e| format!("/proc/self/maps: {e}"));
    // Untouched and a mapping of its own (merged with nothing), so it has
    // no anon_vma.
    if maps_range_containing(&read_maps()?, a) != Some((a, a + 2 * PAGE)) {
        return Err("the scratch mapping merged with a neighbour".into());
    }
    let dontdump = |addr: usize| {
        // SAFETY: advice on a page of our own scratch mapping.
        if unsafe { libc::madvise(addr as *mut libc::c_void, PAGE, libc::MADV_DONTDUMP) } != 0 {
            return Err(format!("madvise: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    };
    dontdump(a + PAGE)?;
    // SAFETY: a write to our own mapping, readable and writable.
    unsafe { std::ptr::write_volatile(a as *mut u8, 1) };
    dontdump(a)?;
    let (start, _) = maps_range_containing(&read_maps()?, a + PAGE)
        .ok_or_else(|| format!("{:#x} not in /proc/self/maps", a + PAGE))?;
    Ok(start <= a)
}

/// Maps 2 read-only pages (never charged: no VM_ACCOUNT), makes the first
/// writable (charged) then read-only again, untouched: whether it merges
/// back with the second, which it does only if the kernel took VM_ACCOUNT
/// away.
fn probe_mprotect_unaccounts() -> Result<bool, String> {
    let scratch = Scratch::new(2 * PAGE, libc::PROT_READ, 0)?;
    let a = scratch.addr;
    let read_maps =
        || fs::read_to_string("/proc/self/maps").map_err(|e| format!("/proc/self/maps: {e}"));
    // A mapping of its own (merged with nothing), so it has no anon_vma.
    if maps_range_containing(&read_maps()?, a) != Some((a, a + 2 * PAGE)) {
        return Err("the scratch mapping merged with a neighbour".into());
    }
    let protect = |prot: libc::c_int| {
        // SAFETY: changes the protection of the first page of our own
        // scratch mapping, which nothing reads or writes.
        if unsafe { libc::mprotect(a as *mut libc::c_void, PAGE, prot) } != 0 {
            return Err(format!("mprotect: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    };
    protect(libc::PROT_READ | libc::PROT_WRITE)?;
    protect(libc::PROT_READ)?;
    let (start, _) = maps_range_containing(&read_maps()?, a + PAGE)
        .ok_or_else(|| format!("{:#x} not in /proc/self/maps", a + PAGE))?;
    Ok(start <= a)
}

/// The `start-end` of the /proc/PID/maps line that contains `addr`.
fn maps_range_containing(maps: &str, addr: usize) -> Option<(usize, usize)> {
    maps.lines()
        .filter_map(line_range)
        .find(|&(lo, hi)| lo <= addr && addr < hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_flags_of_the_entry_at_an_address() {
        let smaps = "\
7f0000000000-7f0000002000 rw-p 00000000 00:00 0 
Size:                  8 kB
VmFlags: rd wr mr mw me ac sd 
7f0000002000-7f0000004000 rw-p 00000000 00:00 0 
Size:                  8 kB
VmFlags: rd wr mr mw me ac nh sd 
";
        assert_eq!(
            vm_flags(smaps, 0x7f00_0000_2000).map(str::trim),
            Some("rd wr mr mw me ac nh sd")
        );
        assert_eq!(
            vm_flags(smaps, 0x7f00_0000_0000).map(str::trim),
            Some("rd wr mr mw me ac sd")
        );
        assert_eq!(
            vm_flags(smaps, 0x7f00_0000_3fff).map(str::trim),
            Some("rd wr mr mw me ac nh sd")
        );
        assert_eq!(vm_flags(smaps, 0x1000), None);
    }

    #[test]
    fn maps_line_containing_an_address() {
        let maps = "1000-3000 rw-p 00000000 00:00 0 \n5000-6000 r--p 00000000 00:00 0 [x]\n";
        assert_eq!(maps_range_containing(maps, 0x2fff), Some((0x1000, 0x3000)));
        assert_eq!(maps_range_containing(maps, 0x3000), None);
        assert_eq!(maps_range_containing(maps, 0x5000), Some((0x5000, 0x6000)));
    }

    /// The probes run on any kernel and answer; what they answer depends
    /// on the kernel.
    #[test]
    fn probes_answer_on_this_kernel() {
        probe_map_stack_nohugepage().unwrap();
        probe_mremap_grow_merges().unwrap();
        probe_faulted_merges_unfaulted().unwrap();
        probe_mprotect_unaccounts().unwrap();
    }
}
