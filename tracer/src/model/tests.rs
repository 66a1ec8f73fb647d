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
