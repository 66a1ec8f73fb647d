use super::*;

const RW: u64 = 3;
const R: u64 = 1;
const ANON: u64 = 0x22; // MAP_PRIVATE | MAP_ANONYMOUS
const P: u64 = PAGE;

fn spans(a: &AddressSpace) -> Vec<(u64, u64, String)> {
    a.live()
        .map(|r| (r.start, r.end, r.perms.as_string()))
        .collect()
}

fn ops(r: &Region) -> Vec<&str> {
    r.history.iter().map(|c| c.op.as_str()).collect()
}

#[test]
fn munmap_in_the_middle_splits() {
    let mut a = AddressSpace::new(1);
    a.mmap(1, 0x10000, 4 * P, RW, ANON, 0, None);
    a.munmap(2, 0x10000 + P, P);
    assert_eq!(
        spans(&a),
        vec![
            (0x10000, 0x11000, "rw-p".into()),
            (0x12000, 0x14000, "rw-p".into())
        ]
    );
    assert_eq!(ops(&a.regions[0]), ["born", "split"]);
    assert_eq!(a.regions[1].born_by.as_str(), "split");
    assert_eq!(a.regions[1].parent, Some(a.regions[0].id));
}

#[test]
fn munmap_of_an_edge_shrinks() {
    let mut a = AddressSpace::new(1);
    a.mmap(1, 0x10000, 4 * P, RW, ANON, 0, None);
    a.munmap(2, 0x12000, 2 * P);
    a.munmap(3, 0x10000, P);
    assert_eq!(spans(&a), vec![(0x11000, 0x12000, "rw-p".into())]);
    assert_eq!(ops(&a.regions[0]), ["born", "shrink", "shrink"]);
    assert_eq!(a.regions.len(), 1);
}

#[test]
fn mprotect_splits_and_merges_back() {
    let mut a = AddressSpace::new(1);
    a.mmap(1, 0x10000, 3 * P, RW, ANON, 0, None);
    a.mprotect(2, 0x11000, P, R);
    assert_eq!(
        spans(&a),
        vec![
            (0x10000, 0x11000, "rw-p".into()),
            (0x11000, 0x12000, "r--p".into()),
            (0x12000, 0x13000, "rw-p".into())
        ]
    );
    // Same protection again changes nothing.
    a.mprotect(3, 0x11000, P, R);
    assert_eq!(a.live_count(), 3);
    a.mprotect(4, 0x11000, P, RW);
    assert_eq!(spans(&a), vec![(0x10000, 0x13000, "rw-p".into())]);
}

#[test]
fn adjacent_anonymous_mappings_merge() {
    let mut a = AddressSpace::new(1);
    a.mmap(1, 0x20000, P, RW, ANON, 0, None);
    a.mmap(2, 0x1f000, P, RW, ANON, 0, None);
    assert_eq!(spans(&a), vec![(0x1f000, 0x21000, "rw-p".into())]);
    // Different protection: no merge.
    a.mmap(3, 0x21000, P, R, ANON, 0, None);
    assert_eq!(a.live_count(), 2);
}

#[test]
fn file_mappings_merge_only_when_contiguous_in_the_file() {
    let f = || Some((b"/lib/x".to_vec(), (8, 1), 42));
    let mut a = AddressSpace::new(1);
    a.mmap(1, 0x40000, P, R, 0x02, 0, f());
    a.mmap(2, 0x41000, P, R, 0x02, P, f());
    assert_eq!(a.live_count(), 1);
    a.mmap(3, 0x42000, P, R, 0x02, 5 * P, f());
    assert_eq!(a.live_count(), 2);
}

#[test]
fn map_fixed_replaces() {
    let mut a = AddressSpace::new(1);
    a.mmap(1, 0x10000, 4 * P, RW, ANON, 0, None);
    a.mmap(2, 0x11000, P, R, ANON | 0x10, 0, None);
    assert_eq!(
        spans(&a),
        vec![
            (0x10000, 0x11000, "rw-p".into()),
            (0x11000, 0x12000, "r--p".into()),
            (0x12000, 0x14000, "rw-p".into())
        ]
    );
}

#[test]
fn brk_grows_and_shrinks_the_heap() {
    let mut a = AddressSpace::new(1);
    a.brk(1, 0x500000, 0x500000, 0x521000);
    a.brk(2, 0x500000, 0x521000, 0x540800);
    a.brk(3, 0x500000, 0x540800, 0x530000);
    assert_eq!(spans(&a), vec![(0x500000, 0x530000, "rw-p".into())]);
    assert_eq!(a.regions[0].kind(), "heap");
    assert_eq!(ops(&a.regions[0]), ["born", "grow", "shrink"]);
}

#[test]
fn mremap_in_place_and_moved() {
    let mut a = AddressSpace::new(1);
    a.mmap(1, 0x10000, 2 * P, RW, ANON, 0, None);
    a.mremap(2, 0x10000, 2 * P, 4 * P, 0, 0x10000);
    assert_eq!(spans(&a), vec![(0x10000, 0x14000, "rw-p".into())]);
    a.mremap(3, 0x10000, 4 * P, 8 * P, 1, 0x80000);
    assert_eq!(spans(&a), vec![(0x80000, 0x88000, "rw-p".into())]);
    assert_eq!(ops(&a.regions[0]), ["born", "grow", "move"]);
}

#[test]
fn stack_growth_and_faults() {
    let mut a = AddressSpace::new(10);
    a.seed(
        0,
        &[Seed {
            start: 0x7ff000,
            end: 0x800000,
            perms: Perms::from_prot(RW, false),
            offset: 0,
            backing: Backing::Stack,
        }],
        Cause::Exec,
    );
    // The fault below the stack is seen before the growth.
    a.fault(5, 0x7fe010, crate::event::Access::Write, false);
    assert!(a.grow_stack(6, 0x7ff000, 0x7fe000));
    let r = &a.regions[0];
    assert_eq!((r.start, r.kind()), (0x7fe000, "stack"));
    assert_eq!(r.pages.len(), 1);
    assert_eq!(a.unattributed_faults, 0);
}

#[test]
fn fork_skips_dontfork() {
    let mut a = AddressSpace::new(1);
    a.mmap(1, 0x10000, P, RW, ANON, 0, None);
    a.mmap(1, 0x30000, P, RW, ANON, 0, None);
    a.madvise(2, 0x30000, P, libc::MADV_DONTFORK as u64);
    let c = a.fork_copy(3);
    assert_eq!(spans(&c), vec![(0x10000, 0x11000, "rw-p".into())]);
    assert_eq!(c.regions[0].born_by.as_str(), "fork");
}

/// The counters the address space keeps as it changes are the ones its
/// live regions make, whatever the changes.
#[test]
fn kept_counts_are_the_live_regions_counts() {
    let check = |a: &AddressSpace, what: &str| {
        assert_eq!(a.counts(), counters::recount(a), "after {what}");
    };
    let mut a = AddressSpace::new(1);
    a.seed(
        0,
        &[
            Seed {
                start: 0x7ff0_0000,
                end: 0x7ff2_0000,
                perms: Perms::from_prot(RW, false),
                offset: 0,
                backing: Backing::Stack,
            },
            Seed {
                start: 0xffff_ffff_ff60_0000,
                end: 0xffff_ffff_ff60_1000,
                perms: Perms::from_prot(4, false),
                offset: 0,
                backing: Backing::Special("[vsyscall]".into()),
            },
        ],
        Cause::Exec,
    );
    check(&a, "seed");
    // The gate area is no VMA of the mm; the stack is counted as stack.
    assert_eq!(a.counts().map_count, 1);
    assert_eq!(a.counts().stack_vm, 0x20);
    assert_eq!(a.counts().data_vm, 0);
    a.brk(1, 0x50_0000, 0x50_0000, 0x50_3000);
    check(&a, "brk");
    a.mmap(2, 0x10000, 8 * P, RW, ANON, 0, None);
    check(&a, "mmap");
    a.mprotect(3, 0x11000, 2 * P, 5);
    check(&a, "mprotect");
    assert_eq!(a.counts().exec_vm, 2);
    a.mmap(4, 0x13000, 2 * P, RW, ANON | 0x2000 | 0x10, 0, None);
    check(&a, "mmap MAP_FIXED|MAP_LOCKED");
    assert_eq!(a.counts().locked_vm, 2);
    a.madvise(5, 0x10000, 8 * P, libc::MADV_DONTFORK as u64);
    check(&a, "madvise");
    a.mremap(6, 0x16000, 2 * P, 4 * P, 1, 0x40000);
    check(&a, "mremap moved");
    a.mremap(7, 0x40000, 4 * P, 6 * P, 0, 0x40000);
    check(&a, "mremap grown");
    a.munmap(8, 0x12000, 3 * P);
    check(&a, "munmap");
    assert!(a.grow_stack(9, 0x7ff0_0000, 0x7fef_e000));
    check(&a, "stack growth");
    a.brk(10, 0x50_0000, 0x50_3000, 0x50_1000);
    check(&a, "brk shrink");
    let child = a.fork_copy(11);
    check(&child, "fork");
    a.resync(12, &[]);
    check(&a, "resync to nothing");
    assert_eq!(a.counts(), counters::Counts::default());
}

fn lock_bits(a: &AddressSpace) -> Vec<(u64, u64, u32)> {
    a.live()
        .map(|r| (r.start, r.end, r.sig & sig::LOCK_MASK))
        .collect()
}

#[test]
fn mlock_splits_and_munlock_merges_back() {
    let mut a = AddressSpace::new(1);
    a.mmap(1, 0x10000, 4 * P, RW, ANON, 0, None);
    // Not page aligned: the kernel widens it to pages 1 and 2.
    a.lock(2, 0x11010, 2 * P - 0x20, sig::LOCKED);
    assert_eq!(
        lock_bits(&a),
        [
            (0x10000, 0x11000, 0),
            (0x11000, 0x13000, sig::LOCKED),
            (0x13000, 0x14000, 0)
        ]
    );
    assert_eq!(a.counts().locked_vm, 2);
    assert_eq!(ops(&a.regions[1]).last(), Some(&"lock"));
    // Locked on fault is another flag: no merge with the locked part.
    a.lock(3, 0x13000, P, sig::LOCKED | sig::LOCKONFAULT);
    assert_eq!(a.live_count(), 3);
    a.lock(4, 0x10000, 4 * P, 0);
    assert_eq!(lock_bits(&a), [(0x10000, 0x14000, 0)]);
    assert_eq!(a.counts().locked_vm, 0);
}

#[test]
fn mlockall_locks_now_and_later_and_munlockall_undoes_it() {
    let mut a = AddressSpace::new(1);
    a.seed(
        0,
        &[Seed {
            start: 0x7fff_0000,
            end: 0x7fff_2000,
            perms: Perms::from_prot(R | 4, false),
            offset: 0,
            backing: Backing::Special("[vdso]".into()),
        }],
        Cause::Exec,
    );
    a.brk(1, 0x50_0000, 0x50_0000, 0x50_2000);
    a.mmap(2, 0x10000, 2 * P, RW, ANON, 0, None);
    a.lock_all(3, Some(sig::LOCKED), sig::LOCKED);
    // The vDSO is special: never locked.
    assert_eq!(
        lock_bits(&a),
        [
            (0x10000, 0x12000, sig::LOCKED),
            (0x50_0000, 0x50_2000, sig::LOCKED),
            (0x7fff_0000, 0x7fff_2000, 0)
        ]
    );
    // A mapping to come is locked, and merges with its locked neighbour;
    // the heap grows locked.
    a.mmap(4, 0x12000, P, RW, ANON, 0, None);
    a.brk(5, 0x50_0000, 0x50_2000, 0x50_3000);
    assert_eq!(
        lock_bits(&a)[..2],
        [
            (0x10000, 0x13000, sig::LOCKED),
            (0x50_0000, 0x50_3000, sig::LOCKED)
        ]
    );
    // A child inherits no lock.
    let child = a.fork_copy(6);
    assert!(child.live().all(|r| r.sig & sig::LOCK_MASK == 0));
    assert_eq!(child.counts().locked_vm, 0);
    a.lock_all(7, Some(0), 0);
    assert!(a.live().all(|r| r.sig & sig::LOCK_MASK == 0));
    // Heap pages to come are not locked: a heap locked in the middle of
    // its life is not extended with them.
    a.lock_all(8, None, sig::LOCKED);
    a.brk(9, 0x50_0000, 0x50_3000, 0x50_4000);
    assert_eq!(
        lock_bits(&a)[1..3],
        [
            (0x50_0000, 0x50_3000, 0),
            (0x50_3000, 0x50_4000, sig::LOCKED)
        ]
    );
    a.new_mm();
    a.mmap(10, 0x20000, P, RW, ANON, 0, None);
    assert_eq!(a.regions.last().unwrap().sig & sig::LOCK_MASK, 0);
}

#[test]
fn mseal_splits_at_its_edges() {
    let mut a = AddressSpace::new(1);
    a.mmap(1, 0x10000, 3 * P, RW, ANON, 0, None);
    a.mseal(2, 0x11000, P);
    let sealed: Vec<bool> = a.live().map(|r| r.sig & sig::SEALED != 0).collect();
    assert_eq!(sealed, [false, true, false]);
    assert_eq!(ops(&a.regions[1]).last(), Some(&"seal"));
    // Sealed neighbours with the same flags merge.
    a.mseal(3, 0x12000, P);
    assert_eq!(a.live_count(), 2);
}

#[test]
fn userfaultfd_registration_splits_and_unregistration_merges_back() {
    let mut a = AddressSpace::new(1);
    a.mmap(1, 0x10000, 8 * P, RW, ANON, 0, None);
    a.userfaultfd(2, 0x12000, 0x14000, 1);
    let modes: Vec<u32> = a.live().map(|r| r.sig & sig::UFFD_MASK).collect();
    assert_eq!(modes, [0, sig::UFFD_MISSING, 0]);
    assert_eq!(ops(&a.regions[1]).last(), Some(&"userfaultfd"));
    // A registered child is not: its pieces stay apart (dup_mmap copies
    // the VMAs one by one), all unregistered.
    let child = a.fork_copy(3);
    assert!(child.live().all(|r| r.sig & sig::UFFD_MASK == 0));
    // Unregistering more than was registered (the kernel allows any
    // range of compatible mappings) merges the three back.
    a.userfaultfd(4, 0x10000, 0x18000, 0);
    assert_eq!(a.live_count(), 1);
    assert_eq!(
        a.live().next().map(|r| (r.start, r.end)),
        Some((0x10000, 0x18000))
    );
}

fn sysv(start: u64, pages: u64, shmid: u64) -> Seed {
    Seed {
        start,
        end: start + pages * P,
        perms: Perms::from_prot(RW, true),
        offset: 0,
        backing: Backing::Shm {
            path: Some(b"/SYSV00000000".to_vec()),
            ino: shmid,
            file: 0,
        },
    }
}

#[test]
fn shmat_and_shmdt_of_a_split_segment() {
    let mut a = AddressSpace::new(1);
    a.shmat(1, &sysv(0x10000, 4, 7));
    // Another attach of the same segment just above.
    a.shmat(2, &sysv(0x14000, 4, 7));
    assert_eq!(a.regions[0].born_by, Cause::Shmat);
    assert_eq!(a.counts().map_count, 2);
    // Split: its offsets follow the pieces.
    a.mprotect(3, 0x11000, P, R);
    a.munmap(4, 0x12000, P);
    let offsets: Vec<(u64, u64)> = a.live().map(|r| (r.start, r.offset)).collect();
    assert_eq!(
        offsets,
        [(0x10000, 0), (0x11000, P), (0x13000, 3 * P), (0x14000, 0)]
    );
    // shmdt takes every piece of the first attach, and only those.
    assert!(a.shmdt(5, 0x10000));
    assert_eq!(spans(&a), [(0x14000, 0x18000, "rw-s".into())]);
    assert!(a
        .regions
        .iter()
        .filter(|r| r.start < 0x14000)
        .all(|r| r.died_by == Some(Cause::Shmdt)));
    // Nothing attached there any more.
    assert!(!a.shmdt(6, 0x10000 + P));
    // An anonymous mapping is not a segment.
    a.mmap(7, 0x30000, P, RW, ANON, 0, None);
    assert!(!a.shmdt(8, 0x30000));
}

#[test]
fn remap_file_pages_maps_other_pages_of_the_file() {
    let f = Some((b"/tmp/f".to_vec(), (8, 1), 42));
    let shared = 0x01; // MAP_SHARED
    let mut a = AddressSpace::new(1);
    a.mmap(1, 0x10000, 4 * P, RW, shared, 0, f);
    // Page 1 shows the file's page 3.
    assert!(a.remap_file_pages(2, 0x11000, P, 3));
    let offsets: Vec<(u64, u64, u64)> = a.live().map(|r| (r.start, r.end, r.offset)).collect();
    assert_eq!(
        offsets,
        [
            (0x10000, 0x11000, 0),
            (0x11000, 0x12000, 3 * P),
            (0x12000, 0x14000, 2 * P)
        ]
    );
    assert_eq!(a.regions.last().unwrap().born_by, Cause::Mmap);
    // Back to its own page: one mapping again, as in the kernel.
    assert!(a.remap_file_pages(3, 0x11000, P, 1));
    assert_eq!(spans(&a), [(0x10000, 0x14000, "rw-s".into())]);
    // Only shared file mappings can be remapped.
    a.mmap(4, 0x20000, P, RW, ANON, 0, None);
    assert!(!a.remap_file_pages(5, 0x20000, P, 0));
}

#[test]
fn the_mapped_run_ends_at_the_first_hole() {
    let mut a = AddressSpace::new(1);
    a.mmap(1, 0x10000, 2 * P, RW, ANON, 0, None);
    a.mmap(2, 0x12000, P, R, ANON, 0, None);
    a.mmap(3, 0x14000, P, RW, ANON, 0, None);
    assert_eq!(a.mapped_run_end(0x10000, 0x15000), 0x13000);
    assert_eq!(a.mapped_run_end(0x11000, 0x12000), 0x12000);
    assert_eq!(a.mapped_run_end(0x13000, 0x15000), 0x13000);
}

#[test]
fn pieces_of_one_shared_mapping_merge_again_those_of_two_do_not() {
    let shared_anon = 0x21; // MAP_SHARED | MAP_ANONYMOUS
    let mut a = AddressSpace::new(1);
    a.mmap(1, 0x10000, 3 * P, RW, shared_anon, 0, None);
    a.lock(2, 0x11000, P, sig::LOCKED);
    let offsets: Vec<(u64, u64)> = a.live().map(|r| (r.start, r.offset)).collect();
    assert_eq!(offsets, [(0x10000, 0), (0x11000, P), (0x12000, 2 * P)]);
    a.lock(3, 0x10000, 3 * P, 0);
    assert_eq!(spans(&a), [(0x10000, 0x13000, "rw-s".into())]);
    // Another shared mapping right after, its file's offsets following on
    // by chance: another file.
    a.mmap(4, 0x13000, P, RW, shared_anon, 0, None);
    assert_eq!(a.live_count(), 2);
    // A child maps the same files; its own mappings are others.
    let mut child = a.fork_copy(5);
    child.mmap(6, 0x14000, P, RW, shared_anon, 0, None);
    let files: Vec<u64> = child
        .live()
        .map(|r| match r.backing {
            Backing::Shm { file, .. } => file,
            _ => 0,
        })
        .collect();
    assert_eq!(files, [1, 2, 3]);
}

fn mapped(at: u64, start: u64, end: u64) -> crate::event::Probe {
    crate::event::Probe::Mapped {
        at,
        start,
        end,
        flags: 0,
        pgoff: 0,
    }
}

/// The kernel kept a region apart that the rules merged (a moved region
/// keeps its page offset): the model splits where the kernel has an edge.
#[test]
fn the_kernel_s_edges_split_a_merge_it_did_not_make() {
    let mut a = AddressSpace::new(1);
    a.mmap(1, 0x10000, 2 * P, RW, ANON, 0, None);
    a.mmap(2, 0x12000, 2 * P, RW, ANON, 0, None);
    assert_eq!(spans(&a), vec![(0x10000, 0x14000, "rw-p".into())]);
    assert!(a.follow_kernel(2, &mapped(0x12000, 0x12000, 0x14000)));
    assert_eq!(
        spans(&a),
        vec![
            (0x10000, 0x12000, "rw-p".into()),
            (0x12000, 0x14000, "rw-p".into())
        ]
    );
    // Already so: nothing changes.
    let n = a.regions.len();
    assert!(a.follow_kernel(3, &mapped(0x12000, 0x12000, 0x14000)));
    assert_eq!(a.regions.len(), n);
}

/// A merge the kernel's edges undo within the same event is recorded
/// before the split that undoes it: each region's last change is its
/// extent (5.10 keeps a part unregistered from a userfaultfd apart from an
/// unregistered neighbour, which the rules merge).
#[test]
fn a_merge_undone_by_the_kernel_s_edges_is_recorded_in_order() {
    let mut a = AddressSpace::new(1);
    a.keep_journal();
    a.mmap(1, 0x10000, 4 * P, RW, ANON, 0, None);
    a.userfaultfd(2, 0x10000, 0x12000, 1);
    let mark = a.journal().len();
    a.userfaultfd(3, 0x11000, 0x12000, 0);
    assert!(a.follow_kernel(3, &mapped(0x11000, 0x11000, 0x12000)));
    let changes = tracker::journal_changes(1, &a, mark);
    for r in a.live() {
        let last = changes
            .iter()
            .rfind(|c| std::ptr::eq(c.region, r))
            .map(|c| (c.start, c.end));
        if let Some(last) = last {
            assert_eq!(last, (r.start, r.end), "region {}: {changes:?}", r.id);
        }
    }
    assert_eq!(a.live_count(), 3);
}

/// The kernel merged what the rules keep apart (an anon_vma shared at a
/// first fault): the model joins the regions inside the kernel's VMA.
#[test]
fn the_kernel_s_vma_joins_what_it_merged() {
    let mut a = AddressSpace::new(1);
    a.mmap(1, 0x10000, 4 * P, RW, ANON, 0, None);
    a.follow_kernel(1, &mapped(0x11000, 0x10000, 0x11000));
    a.follow_kernel(1, &mapped(0x11000, 0x11000, 0x12000));
    a.follow_kernel(1, &mapped(0x12000, 0x12000, 0x14000));
    assert_eq!(a.live().count(), 3);
    assert!(a.follow_kernel(2, &mapped(0x11000, 0x10000, 0x14000)));
    assert_eq!(spans(&a), vec![(0x10000, 0x14000, "rw-p".into())]);
}

/// What the rules cannot explain is drift: a hole where the kernel has a
/// VMA, other protections inside one VMA, a region in a gap.
#[test]
fn what_cannot_be_followed_is_out_of_step() {
    let mut a = AddressSpace::new(1);
    a.mmap(1, 0x10000, 2 * P, RW, ANON, 0, None);
    a.mmap(1, 0x13000, P, RW, ANON, 0, None);
    assert!(!a.follow_kernel(2, &mapped(0x10000, 0x10000, 0x14000)));
    a.mprotect(2, 0x11000, P, R);
    assert!(!a.follow_kernel(2, &mapped(0x10000, 0x10000, 0x12000)));
    assert!(!a.follow_kernel(2, &crate::event::Probe::Gap { at: 0x13000 }));
    assert!(a.follow_kernel(2, &crate::event::Probe::Gap { at: 0x12000 }));
    assert!(a.follow_kernel(2, &crate::event::Probe::Unread));
    // Nothing was changed by the refusals.
    assert_eq!(
        spans(&a),
        vec![
            (0x10000, 0x11000, "rw-p".into()),
            (0x11000, 0x12000, "r--p".into()),
            (0x13000, 0x14000, "rw-p".into())
        ]
    );
}

/// Kernels before 6.7: MAP_STACK does not set VM_NOHUGEPAGE, so a thread
/// stack merges with a plain anonymous neighbour; since 6.7 it does not.
#[test]
fn map_stack_merges_as_the_kernel_tells() {
    const MAP_STACK: u64 = 0x20000;
    for (nohugepage, merged) in [(true, false), (false, true)] {
        let kernel = KernelBehaviour {
            map_stack_nohugepage: nohugepage,
            ..KernelBehaviour::default()
        };
        let mut a = AddressSpace::new(1).with_kernel(kernel);
        a.mmap(1, 0x10000, 2 * P, RW, ANON, 0, None);
        a.mmap(2, 0x12000, 2 * P, RW, ANON | MAP_STACK, 0, None);
        assert_eq!(spans(&a).len(), if merged { 1 } else { 2 }, "{kernel:?}");
    }
}

/// 5.10 only extends a mapping that mremap grows in place; since 5.19 the
/// kernel merges it with the mapping that now follows.
#[test]
fn mremap_growth_merges_as_the_kernel_tells() {
    for (merges, expected) in [
        (true, vec![(0x10000, 0x13000, "rw-p".to_string())]),
        (
            false,
            vec![
                (0x10000, 0x12000, "rw-p".to_string()),
                (0x12000, 0x13000, "rw-p".to_string()),
            ],
        ),
    ] {
        let kernel = KernelBehaviour {
            mremap_grow_merges: merges,
            ..KernelBehaviour::default()
        };
        let mut a = AddressSpace::new(1).with_kernel(kernel);
        a.mmap(1, 0x10000, 3 * P, RW, ANON, 0, None);
        a.munmap(2, 0x11000, P);
        a.mremap(3, 0x10000, P, 2 * P, 0, 0x10000);
        assert_eq!(spans(&a), expected, "{kernel:?}");
        // A copy made at fork follows the same kernel.
        let mut child = a.fork_copy(4);
        child.munmap(5, 0x11000, P);
        child.mremap(6, 0x10000, P, 2 * P, 0, 0x10000);
        assert_eq!(spans(&child), expected, "{kernel:?}");
    }
}

/// mlock populates (a write to each page, which gives the mapping an
/// anon_vma); on kernels that do not merge a mapping with an anon_vma into
/// a neighbour without one (5.10, 6.1), munlock leaves three mappings.
/// mlockall then populates the untouched ones with the neighbour's
/// anon_vma, so munlockall merges them everywhere.
#[test]
fn munlock_merges_as_the_kernel_tells() {
    for (faulted_merges_unfaulted, after_munlock) in [(true, 1), (false, 3)] {
        let kernel = KernelBehaviour {
            faulted_merges_unfaulted,
            ..KernelBehaviour::default()
        };
        let mut a = AddressSpace::new(1).with_kernel(kernel);
        a.mmap(1, 0x10000, 4 * P, RW, ANON, 0, None);
        a.lock(2, 0x11000, 2 * P, sig::LOCKED);
        a.lock(3, 0x10000, P, sig::LOCKED | sig::LOCKONFAULT);
        a.lock(4, 0x10000, 4 * P, 0);
        assert_eq!(a.live_count(), after_munlock, "{kernel:?}");
        a.lock_all(5, Some(sig::LOCKED), 0);
        a.lock_all(6, Some(0), 0);
        assert_eq!(spans(&a), [(0x10000, 0x14000, "rw-p".into())], "{kernel:?}");
    }
}

/// Newer kernels take VM_ACCOUNT away from an untouched anonymous mapping
/// made read-only, which then merges with read-only neighbours; 5.10 and
/// 6.1 keep it charged, and apart.
#[test]
fn mprotect_uncharges_as_the_kernel_tells() {
    for (unaccounts, merged) in [(true, 1), (false, 2)] {
        let kernel = KernelBehaviour {
            mprotect_unaccounts_unfaulted: unaccounts,
            ..KernelBehaviour::default()
        };
        let mut a = AddressSpace::new(1).with_kernel(kernel);
        a.mmap(1, 0x10000, 2 * P, R, ANON, 0, None);
        a.mprotect(2, 0x10000, P, RW);
        a.mprotect(3, 0x10000, P, R);
        assert_eq!(a.live_count(), merged, "{kernel:?}");
    }
}

#[test]
fn seeded_neighbours_the_maps_show_apart_stay_apart() {
    // A library's read-only part and its RELRO part: /proc shows them
    // apart (VM_ACCOUNT, copied pages), though they look mergeable.
    let lib = |start: u64, offset: u64| Seed {
        start,
        end: start + P,
        perms: Perms::from_prot(R, false),
        offset,
        backing: Backing::File {
            path: b"/lib/libc.so.6".to_vec(),
            dev: (8, 1),
            ino: 42,
        },
    };
    let mut a = AddressSpace::new(1);
    a.seed(1, &[lib(0x10000, 0), lib(0x11000, P)], Cause::Exec);
    a.mprotect(2, 0x10000, 2 * P, R);
    assert_eq!(a.live().count(), 2);
}

/// A check that finds a region different at the same start resyncs it in
/// place: the region goes on (a `drift` entry), its neighbours as the
/// kernel has them.
#[test]
fn a_resync_keeps_a_region_found_different_at_its_start() {
    let mut a = AddressSpace::new(1);
    a.keep_journal();
    a.mmap(1, 0x10000, 2 * P, RW, ANON, 0, None);
    a.mmap(2, 0x20000, P, RW, ANON, 0, None);
    a.fault(3, 0x10000, crate::event::Access::Write, false);
    let id = a.live().next().unwrap().id;
    let anon = |start: u64, end: u64, prot: u64| Seed {
        start,
        end,
        perms: Perms::from_prot(prot, false),
        offset: 0,
        backing: Backing::Anon,
    };
    // The kernel has it a page longer and read-only; the second mapping
    // is gone, a third is there.
    a.resync(5, &[anon(0x10000, 0x13000, R), anon(0x30000, 0x31000, RW)]);
    let live: Vec<&Region> = a.live().collect();
    assert_eq!(
        spans(&a),
        vec![
            (0x10000, 0x13000, "r--p".into()),
            (0x30000, 0x31000, "rw-p".into())
        ]
    );
    assert_eq!(live[0].id, id);
    assert_eq!(ops(live[0]), ["born", "drift"]);
    assert_eq!(live[0].faults.write, 1);
    assert_eq!(live[1].born_by, Cause::Drift);
    assert_eq!(a.counts(), counters::recount(&a));
    let died: Vec<Cause> = a.regions.iter().filter_map(|r| r.died_by).collect();
    assert_eq!(died, [Cause::Drift]);
}
