//! The address space's VMA tree, read at a change's edges: which VMA (or
//! gap) holds an address, with its extent, flags and offset. The model
//! takes the kernel's merges and splits from here instead of predicting
//! them.
//!
//! Two layouts, chosen by the loader from BTF ([`Offsets::vma_walk`]): the
//! maple tree of 6.1 on (`mm->mm_mt`), walked as the kernel's
//! `mtree_range_walk` does, and the red-black tree before it (`mm->mm_rb`).
//! The walk takes no lock: a tree changed under it by another thread reads
//! as [`VMA_UNREAD`], or is caught by the settling of the record (no other
//! call of the address space in flight), which covers these probes too.

use aya_ebpf::{helpers::generated::bpf_probe_read_kernel, macros::map, maps::PerCpuArray};
use tracer_common::{
    EventKind, VmaExtent, VmaOffsets, VmaProbes, VMA_GAP, VMA_MAPPED, VMA_NONE, VMA_PROBES,
    VMA_UNREAD, VMA_WALK_MAPLE, VMA_WALK_RB,
};

use crate::kernel::read;

/// Deeper than any address space's maple tree (a 4-level tree holds more
/// than a million VMAs; `vm.max_map_count` is 65530 by default).
const MAPLE_DEPTH: usize = 8;
/// Pivots of maple_range_64 and maple_leaf_64 (maple_arange_64 has 9).
const R64_PIVOTS: usize = 15;
const A64_PIVOTS: usize = 9;
/// Levels of a red-black tree of 2^24 VMAs.
const RB_DEPTH: usize = 48;
const MAPLE_NODE_MASK: u64 = 0xff;
/// `enum maple_type`.
const MAPLE_LEAF_64: u64 = 1;
const MAPLE_RANGE_64: u64 = 2;
const MAPLE_ARANGE_64: u64 = 3;

/// Set by the loader. Read in place through [`vma_offsets`], never copied:
/// a copy would take 120 bytes of a stack the syscall's exit nearly fills
/// (5.10's verifier counts every frame of the call chain against 512).
#[unsafe(no_mangle)]
pub static VMA_OFFSETS: VmaOffsets = VmaOffsets::ZERO;

/// [`VMA_OFFSETS`], through a pointer the compiler cannot see through (the
/// loader rewrites the value it was compiled with).
#[inline(always)]
fn vma_offsets() -> &'static VmaOffsets {
    let p: *const VmaOffsets = &raw const VMA_OFFSETS;
    // SAFETY: a volatile read of a local; the pointer read is the static's,
    // valid for the program's life.
    unsafe { &*core::ptr::read_volatile(&p) }
}

/// A node's pivots, read in one go (off the 512-byte stack); one more
/// than a node has, so that a masked index stays in bounds. Only the
/// pivots of the node being read are used.
#[map(name = "VMA_PIVOTS")] // tracer_common::MAP_VMA_PIVOTS
static PIVOTS: PerCpuArray<[u64; R64_PIVOTS + 1]> = PerCpuArray::with_max_entries(1, 0);

/// Fills `p` (in the record) with the probes of a change of `kind` with
/// arguments `args` and result `ret`, in address space `mm`.
#[inline(always)]
pub fn probe_change(p: &mut VmaProbes, kind: EventKind, args: &[u64; 6], ret: i64, mm: u64) {
    p.state = [VMA_NONE; VMA_PROBES];
    if mm == 0 {
        return;
    }
    let page_up = |v: u64| v.wrapping_add(4095) & !4095;
    let r = ret as u64;
    // For a change of [lo, hi): its first and last page; for brk, the
    // heap's last page and the page above it. An unmap merges nothing: it
    // is not probed. 0: no probe.
    let at: [u64; VMA_PROBES] = match kind {
        EventKind::Mmap if ret >= 0 => [r, r + page_up(args[1]).max(4096) - 1, 0],
        EventKind::Mremap if ret >= 0 => {
            let new_end = r + page_up(args[2]).max(4096);
            // Where the old range was, or where a shrink in place ended.
            let old = if r == args[0] { new_end } else { args[0] };
            [r, new_end - 1, old]
        }
        EventKind::Mprotect
        | EventKind::PkeyMprotect
        | EventKind::Madvise
        | EventKind::Mlock
        | EventKind::Mlock2
        | EventKind::Munlock
        | EventKind::Mseal
        | EventKind::RemapFilePages
        | EventKind::Userfaultfd
            if args[1] != 0 =>
        {
            [args[0] & !4095, page_up(args[0] + args[1]) - 1, 0]
        }
        EventKind::Brk if ret > 4096 => [r - 1, r, 0],
        EventKind::Shmat if ret >= 0 => [r, 0, 0],
        _ => [0, 0, 0],
    };
    for i in 0..VMA_PROBES {
        p.addr[i] = at[i];
        if at[i] == 0 {
            continue;
        }
        // The last page is in the first page's VMA (a new mapping, a
        // change inside one): the same answer, without a walk.
        //
        // The first answer is read back from the record, where the
        // verifier cannot see it, rather than taken from the walk's
        // result: otherwise it would check the second walk once per
        // answer the first can give.
        // SAFETY: a read of the record's field.
        let first = unsafe { core::ptr::read_volatile(&p.state[0]) };
        if i == 1 && first == VMA_MAPPED && p.ext[0].start <= at[1] && at[1] < p.ext[0].end {
            p.state[1] = VMA_MAPPED;
            p.ext[1] = p.ext[0];
            continue;
        }
        p.state[i] = probe(&mut p.ext[i], mm, at[i]);
    }
}

/// What holds `addr` in `mm`'s VMA tree, into `ext`; returns its `VMA_*`.
/// A function of its own (a BPF subprogram): its walk's locals live in
/// its frame, not in the frame of the syscall's exit, which is full.
#[inline(never)]
fn probe(ext: &mut VmaExtent, mm: u64, addr: u64) -> u8 {
    let off = vma_offsets();
    let found = match off.walk {
        VMA_WALK_MAPLE => maple(ext, mm, addr, off),
        VMA_WALK_RB => rbtree(ext, mm, addr, off),
        _ => return VMA_NONE,
    };
    found.unwrap_or_else(|_| {
        // Nothing half-read is left in the record.
        ext.start = 0;
        ext.end = 0;
        VMA_UNREAD
    })
}

/// The VMA at `vma`, which the tree says spans `[start, end)`, into `ext`.
#[inline(always)]
fn vma_extent(
    ext: &mut VmaExtent,
    vma: u64,
    start: u64,
    end: u64,
    off: &VmaOffsets,
) -> Result<u8, i64> {
    // vm_start and vm_end side by side (as in every kernel): one read.
    let [vm_start, vm_end] = if off.vma_end == off.vma_start + 8 {
        read::<[u64; 2]>(vma, off.vma_start)?
    } else {
        [
            read::<u64>(vma, off.vma_start)?,
            read::<u64>(vma, off.vma_end)?,
        ]
    };
    // A VMA being changed under the walk.
    if vm_start != start || vm_end != end {
        return Err(-1);
    }
    ext.start = start;
    ext.end = end;
    // vm_flags and vm_pgoff are not read: nothing uses them yet, and each
    // read costs about 50 ns on every change.
    Ok(VMA_MAPPED)
}

/// A gap of the tree, into `ext`.
#[inline(always)]
fn gap(ext: &mut VmaExtent, start: u64, end: u64) -> Result<u8, i64> {
    ext.start = start;
    ext.end = end;
    Ok(VMA_GAP)
}

/// The maple tree: from the root, in each node the first slot whose pivot
/// (its last index) is at or above `addr`; in a leaf, that slot holds the
/// VMA (or nothing: a gap), and the pivots bound its range.
#[inline(always)]
fn maple(ext: &mut VmaExtent, mm: u64, addr: u64, off: &VmaOffsets) -> Result<u8, i64> {
    let pivots = PIVOTS.get_ptr_mut(0).ok_or(-1i64)?;
    // SAFETY: this CPU's scratch value, used by one program at a time (the
    // tracepoint programs do not nest on a CPU).
    let pivots = unsafe { &mut *pivots };
    let mut entry = read::<u64>(mm, off.mm_vmas)?;
    // The root is a node (MAPLE_ROOT_NODE: an internal entry, low bits 10,
    // above the first page), not a single entry or nothing.
    if entry & 3 != 2 || entry <= 4096 {
        return Err(-1);
    }
    let (mut min, mut max) = (0u64, u64::MAX);
    for _ in 0..MAPLE_DEPTH {
        // An encoded node: its address, its type in bits 3 to 6.
        if entry <= 4096 {
            return Err(-1);
        }
        let node = entry & !MAPLE_NODE_MASK;
        let ty = (entry >> 3) & 0xf;
        let (npiv, slots, meta) = match ty {
            MAPLE_LEAF_64 | MAPLE_RANGE_64 => {
                read_pivots(pivots, node + off.maple_r64_pivot, R64_PIVOTS)?;
                (R64_PIVOTS, off.maple_r64_slot, off.maple_r64_meta)
            }
            MAPLE_ARANGE_64 => {
                read_pivots(pivots, node + off.maple_a64_pivot, A64_PIVOTS)?;
                (A64_PIVOTS, off.maple_a64_slot, off.maple_a64_meta)
            }
            _ => return Err(-1),
        };
        // The last slot in use (ma_data_end).
        let last = pivots[(npiv - 1) & R64_PIVOTS];
        let end = if ty == MAPLE_ARANGE_64 || last == 0 {
            read::<u8>(node, meta)? as usize
        } else if last == max {
            npiv - 1
        } else {
            npiv
        };
        // The slot, as mtree_range_walk finds it: the first of 1..end
        // whose pivot is at or above `addr`, else `end` (up to the node's
        // max).
        //
        // The search carries the slot's address and the range's bounds,
        // never the slot's index out of the loop: the index is compared
        // with constants (the loop's bounds), which makes the verifier
        // tell its values apart, and it would then check the rest of the
        // walk once per slot (about twice the instructions in all).
        let mut slot = node + slots;
        let mut hi = max;
        let mut lo = min;
        if pivots[0] >= addr {
            hi = pivots[0];
        } else {
            lo = pivots[0].wrapping_add(1);
            slot += 8;
            // Slot 15, if the walk gets there, is the last (npiv <= 15).
            for i in 1..R64_PIVOTS {
                if i >= end || i >= npiv {
                    break;
                }
                let pivot = pivots[i & R64_PIVOTS];
                if pivot >= addr {
                    hi = pivot;
                    break;
                }
                lo = pivot.wrapping_add(1);
                slot += 8;
            }
        }
        let child = read_slot(slot)?;
        if ty == MAPLE_LEAF_64 {
            // A dead node (freed under the walk) points at itself as its
            // parent; a dead node above leads here too.
            if read::<u64>(node, 0)? & !MAPLE_NODE_MASK == node {
                return Err(-1);
            }
            let end = hi.saturating_add(1);
            if child == 0 {
                return gap(ext, lo, end);
            }
            // Reserved entries (XA_ZERO_ENTRY during a fork's copy).
            if child & 3 == 2 {
                return Err(-1);
            }
            return vma_extent(ext, child, lo, end, off);
        }
        entry = child;
        min = lo;
        max = hi;
    }
    Err(-1)
}

/// The slot at `addr`, which is above the first page. Not through
/// [`read`]: its test for a null address, which the verifier can decide
/// here, would make it tell the walk's slot addresses apart (see above).
#[inline(always)]
fn read_slot(addr: u64) -> Result<u64, i64> {
    // SAFETY: the helper tolerates any address.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(addr as *const u64) }.map_err(|e| e as i64)
}

/// `n` pivots at `src` into `dst`.
#[inline(always)]
fn read_pivots(dst: &mut [u64; R64_PIVOTS + 1], src: u64, n: usize) -> Result<(), i64> {
    let bytes = (n * 8) as u32;
    // SAFETY: `bytes` is at most the size of `dst`; the helper tolerates
    // any source address.
    let r = unsafe {
        bpf_probe_read_kernel(
            dst.as_mut_ptr().cast(),
            bytes,
            src as *const core::ffi::c_void,
        )
    };
    if r < 0 {
        return Err(r);
    }
    Ok(())
}

/// The red-black tree: the first VMA that ends above `addr` holds it when
/// it starts at or below it; otherwise `addr` is in the gap below it.
#[inline(always)]
fn rbtree(ext: &mut VmaExtent, mm: u64, addr: u64, off: &VmaOffsets) -> Result<u8, i64> {
    let mut node = read::<u64>(mm, off.mm_vmas)?;
    let mut above = u64::MAX;
    for _ in 0..RB_DEPTH {
        if node == 0 {
            break;
        }
        let vma = node - off.vma_rb;
        let end = read::<u64>(vma, off.vma_end)?;
        if end > addr {
            let start = read::<u64>(vma, off.vma_start)?;
            if start <= addr {
                return vma_extent(ext, vma, start, end, off);
            }
            above = start;
            node = read::<u64>(node, off.rb_left)?;
        } else {
            node = read::<u64>(node, off.rb_right)?;
        }
    }
    if node != 0 {
        return Err(-1);
    }
    // In a gap: up to the VMA above; its start is not read (the model need
    // not know it).
    gap(ext, addr, above)
}
