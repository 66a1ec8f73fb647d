//! What a region knows of its page faults, in little memory: counts that
//! stay with the region (never moved with its pages), and the set of its
//! pages that faulted as a sparse bitmap (one bit a page, in words of 64
//! pages).
//!
//! The rule: a fault counts once, in the region that held the page when it
//! faulted, and stays there whatever the page becomes (unmapped, split off
//! into another region, moved, merged into a neighbour). Summed over every
//! region of a process, the counts are every fault attributed to it. The
//! set of touched pages follows the pages: it says which pages of the
//! region's present extent ever faulted (inherited at split, merge and
//! move).

use std::collections::BTreeMap;

/// Fault counts of one region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub read: u64,
    pub write: u64,
    pub exec: u64,
    /// Faults on present pages (protection faults).
    pub present: u64,
    /// The first fault, ns since the start.
    pub first_ns: Option<u64>,
    /// The last fault, ns since the start.
    pub last_ns: Option<u64>,
}

impl FaultCounts {
    pub fn total(&self) -> u64 {
        self.read + self.write + self.exec
    }
}

/// A set of page numbers (address / PAGE), as 64-page words keyed by
/// page / 64.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageSet {
    words: BTreeMap<u64, u64>,
}

impl PageSet {
    /// Adds `page`; true when it was not there.
    pub fn insert(&mut self, page: u64) -> bool {
        let w = self.words.entry(page / 64).or_default();
        let bit = 1u64 << (page % 64);
        let new = *w & bit == 0;
        *w |= bit;
        new
    }

    pub fn contains(&self, page: u64) -> bool {
        self.words
            .get(&(page / 64))
            .is_some_and(|w| w & (1 << (page % 64)) != 0)
    }

    /// How many pages.
    pub fn len(&self) -> u64 {
        self.words.values().map(|w| u64::from(w.count_ones())).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Removes and returns the pages at or above `page`.
    #[must_use]
    pub fn split_off(&mut self, page: u64) -> PageSet {
        let key = page / 64;
        let mut high = self.words.split_off(&key);
        let low_bits = (1u64 << (page % 64)) - 1;
        if let Some(w) = high.get(&key).copied() {
            if w & low_bits != 0 {
                self.words.insert(key, w & low_bits);
            }
            let up = w & !low_bits;
            if up == 0 {
                high.remove(&key);
            } else {
                high.insert(key, up);
            }
        }
        PageSet { words: high }
    }

    /// Adds every page of `other` (emptied).
    pub fn append(&mut self, other: &mut PageSet) {
        for (k, w) in std::mem::take(&mut other.words) {
            *self.words.entry(k).or_default() |= w;
        }
    }

    /// The pages moved by `to - from` pages (an mremap).
    #[must_use]
    pub fn shifted(&self, from: u64, to: u64) -> PageSet {
        let mut out = PageSet::default();
        for (&k, &w) in &self.words {
            let mut bits = w;
            while bits != 0 {
                let b = u64::from(bits.trailing_zeros());
                bits &= bits - 1;
                out.insert((k * 64 + b).wrapping_sub(from).wrapping_add(to));
            }
        }
        out
    }

    /// Bytes of memory the set takes, roughly.
    pub fn footprint(&self) -> usize {
        self.words.len() * 32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_append_shift() {
        let mut s = PageSet::default();
        for p in [1, 63, 64, 65, 200] {
            assert!(s.insert(p));
        }
        assert!(!s.insert(64));
        assert_eq!(s.len(), 5);
        let mut high = s.split_off(64);
        assert_eq!((s.len(), high.len()), (2, 3));
        assert!(s.contains(63) && !s.contains(64) && high.contains(64));
        let mut mid = high.split_off(65);
        assert_eq!((high.len(), mid.len()), (1, 2));
        s.append(&mut mid);
        assert!(mid.is_empty());
        assert_eq!(s.len(), 4);
        let moved = s.shifted(1, 1001);
        assert!(moved.contains(1001) && moved.contains(1200) && !moved.contains(1));
        assert_eq!(moved.len(), 4);
    }
}
