//! The region model at scale: memory per region and the cost of applying
//! an event, with 1 000 and 100 000 live regions in one process, compared
//! in one run (the machines are shared and noisy: ratios, not times, are
//! the goal). Run with `cargo xtask bench`.
//!
//! Goal: applying an event costs O(log n). Random regions at 100 000 and
//! 1 000 000 both miss the CPU caches, so their ratio shows the algorithm
//! rather than the cache: at 10x the regions, at most `MAX_RATIO` times the
//! time per event. The 1 000-region row (all in cache) is for reference.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    hint::black_box,
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use tracer::{event::Access, model::AddressSpace};

/// Counts the bytes this program has allocated and not freed.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const PAGE: u64 = 4096;
const BASE: u64 = 0x1000_0000;
const RW: u64 = 3;
const R: u64 = 1;
const ANON: u64 = 0x22;
const OPS: usize = 50_000;
const MAX_RATIO: f64 = 3.0;

/// A deterministic pseudo-random sequence (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// `n` one-page regions with a page between each (so none merge).
fn space_with(n: usize) -> AddressSpace {
    let mut a = AddressSpace::new(100_000_000);
    for i in 0..n {
        a.mmap(1, BASE + 2 * PAGE * i as u64, PAGE, RW, ANON, 0, None);
    }
    a
}

struct Row {
    regions: usize,
    bytes_per_region: f64,
    ns: [f64; 4],
}

const OPS_NAMES: [&str; 4] = ["fault", "mprotect", "munmap+mmap", "mmap (build)"];

fn measure(n: usize) -> Row {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let t = Instant::now();
    let mut a = space_with(n);
    let build_ns = t.elapsed().as_nanos() as f64 / n as f64;
    let bytes = LIVE_BYTES.load(Ordering::Relaxed) - before;
    let addr = |i: usize| BASE + 2 * PAGE * i as u64;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut ns = [0.0; 4];
    ns[3] = build_ns;

    let t = Instant::now();
    for k in 0..OPS {
        let i = rng.below(n);
        a.fault(2 + k as u64, addr(i) + 8, Access::Write, false);
    }
    ns[0] = t.elapsed().as_nanos() as f64 / OPS as f64;

    let t = Instant::now();
    for k in 0..OPS {
        let i = rng.below(n);
        let prot = if k % 2 == 0 { R } else { RW };
        a.mprotect(3, addr(i), PAGE, prot);
    }
    ns[1] = t.elapsed().as_nanos() as f64 / OPS as f64;

    let t = Instant::now();
    for _ in 0..OPS {
        let i = rng.below(n);
        a.munmap(4, addr(i), PAGE);
        a.mmap(4, addr(i), PAGE, RW, ANON, 0, None);
    }
    ns[2] = t.elapsed().as_nanos() as f64 / OPS as f64;
    black_box(&a);
    Row {
        regions: n,
        bytes_per_region: bytes as f64 / n as f64,
        ns,
    }
}

fn main() {
    // Warm up allocator and caches.
    black_box(measure(1_000));
    let tiny = measure(1_000);
    let small = measure(100_000);
    let large = measure(1_000_000);
    println!("region model: {OPS} events of each kind on random regions");
    println!(
        "{:>14} {:>16} {:>10} {:>10} {:>12} {:>13}",
        "live regions", "bytes/region", OPS_NAMES[0], OPS_NAMES[1], OPS_NAMES[2], OPS_NAMES[3]
    );
    for r in [&tiny, &small, &large] {
        println!(
            "{:>14} {:>16.0} {:>8.0}ns {:>8.0}ns {:>10.0}ns {:>11.0}ns",
            r.regions, r.bytes_per_region, r.ns[0], r.ns[1], r.ns[2], r.ns[3]
        );
    }
    let mut worst: f64 = 0.0;
    for (k, name) in OPS_NAMES.iter().enumerate() {
        let ratio = large.ns[k] / small.ns[k];
        worst = worst.max(ratio);
        println!("ratio 1M/100k regions, {name}: {ratio:.2}");
    }
    if worst > MAX_RATIO {
        println!("FAIL: an event costs {worst:.1}x more at 10x the regions (goal: <= {MAX_RATIO})");
        std::process::exit(1);
    }
    println!(
        "ok: at most {worst:.2}x the cost per event at 10x the regions (goal: <= {MAX_RATIO})"
    );
}
