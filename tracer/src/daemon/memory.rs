//! The daemon's memory cap (`memory_cap_mib`): its resident memory is
//! measured every second (/proc/self/statm); over the cap the daemon
//! degrades in a stated order, each step logged once with a warning and
//! counted, and never stops recording what it already records:
//!
//! 1. coarser fault detail: faults are counted per region only from then
//!    on (no set of touched pages, no time buckets); the faults handled so
//!    are counted and said in the timelines as `lost` records of kind
//!    [`FAULT_DETAIL`] (their `touched_bytes` misses those pages). With
//!    `faults = "summary"` there is no such detail: nothing changes.
//! 2. still over the cap [`STEP_AFTER`] later: no new processes tracked: a
//!    fork's child is not modelled (no timeline), counted per comm.
//!
//! Back to normal once the resident memory is below 3/4 of the cap
//! (hysteresis: freed memory often stays resident, so this may take long).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use log::{info, warn};

/// The `lost` kind of the faults counted without their page.
pub const FAULT_DETAIL: &str = "fault_detail";
/// How long the daemon stays over its cap at level 1 before level 2.
pub const STEP_AFTER: Duration = Duration::from_secs(3);

/// The degradation's state and counters.
#[derive(Debug)]
pub struct Guard {
    cap: u64,
    level: u8,
    /// When the current level began.
    since: Instant,
    /// Times each level was entered (1, 2).
    pub entered: [u64; 2],
    /// New processes not tracked, in all and by comm (bounded).
    pub untracked: u64,
    pub untracked_by_comm: BTreeMap<String, u64>,
    max_comms: usize,
    /// Faults counted without their page.
    pub fault_detail_dropped: u64,
    /// The level the session applies (it takes [`Guard::level`] at its
    /// next tick): what `status` shows.
    pub applied: u8,
}

impl Guard {
    pub fn new(cap_bytes: u64, max_comms: usize) -> Guard {
        Guard {
            cap: cap_bytes,
            level: 0,
            since: Instant::now(),
            entered: [0; 2],
            untracked: 0,
            untracked_by_comm: BTreeMap::new(),
            max_comms: max_comms.max(1),
            fault_detail_dropped: 0,
            applied: 0,
        }
    }

    /// 0: normal; 1: coarse faults; 2: coarse faults, no new processes.
    pub fn level(&self) -> u8 {
        self.level
    }

    /// The resident memory measured at `now`: moves between levels, with
    /// a warning (or a line when back to normal).
    pub fn observe(&mut self, rss: u64, now: Instant, live: usize) {
        let mib = |b: u64| b >> 20;
        if rss > self.cap {
            let next = match self.level {
                0 => 1,
                1 if now.duration_since(self.since) >= STEP_AFTER => 2,
                l => l,
            };
            if next != self.level {
                self.level = next;
                self.since = now;
                self.entered[usize::from(next - 1)] += 1;
                let what = if next == 1 {
                    "step 1: faults are counted per region only (no touched pages, no \
                     buckets), said in the timelines as lost records of kind fault_detail"
                } else {
                    "step 2: new processes are no longer tracked (counted per comm); \
                     those already tracked go on"
                };
                warn!(
                    "resident memory {} MiB is over memory_cap_mib {} ({live} live processes): \
                     degrading, {what}",
                    mib(rss),
                    mib(self.cap)
                );
            }
        } else if self.level > 0 && rss < self.cap / 4 * 3 {
            info!(
                "resident memory {} MiB is well under memory_cap_mib {}: back to normal \
                 (was degraded at step {})",
                mib(rss),
                mib(self.cap),
                self.level
            );
            self.level = 0;
            self.since = now;
        }
    }

    /// A new process (a fork's child of comm `comm`) was not tracked.
    pub fn untracked(&mut self, comm: &[u8]) {
        self.untracked += 1;
        let comm = String::from_utf8_lossy(comm).into_owned();
        let key = if self.untracked_by_comm.contains_key(&comm)
            || self.untracked_by_comm.len() < self.max_comms
        {
            comm
        } else {
            "other".to_string()
        };
        *self.untracked_by_comm.entry(key).or_default() += 1;
    }

    /// For the statistics line.
    pub fn describe(&self) -> String {
        let comms: Vec<String> = self
            .untracked_by_comm
            .iter()
            .map(|(c, n)| format!("{c:?} {n}"))
            .collect();
        format!(
            "memory degradation level {} (step 1 entered {} times, step 2 {} times); \
             {} faults without page detail; {} new processes untracked [{}]",
            self.applied,
            self.entered[0],
            self.entered[1],
            self.fault_detail_dropped,
            self.untracked,
            comms.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_in_order_and_back_with_hysteresis() {
        let mib = 1u64 << 20;
        let mut g = Guard::new(100 * mib, 2);
        let t0 = Instant::now();
        g.observe(50 * mib, t0, 1);
        assert_eq!(g.level(), 0);
        g.observe(101 * mib, t0, 1);
        assert_eq!(g.level(), 1);
        g.observe(120 * mib, t0 + Duration::from_secs(1), 1);
        assert_eq!(g.level(), 1, "not yet");
        g.observe(120 * mib, t0 + STEP_AFTER, 1);
        assert_eq!(g.level(), 2);
        // Just under the cap: stays degraded.
        g.observe(90 * mib, t0 + STEP_AFTER * 2, 1);
        assert_eq!(g.level(), 2);
        // Well under: back to normal.
        g.observe(70 * mib, t0 + STEP_AFTER * 3, 1);
        assert_eq!(g.level(), 0);
        assert_eq!(g.entered, [1, 1]);
        g.observe(101 * mib, t0 + STEP_AFTER * 4, 1);
        assert_eq!((g.level(), g.entered), (1, [2, 1]));
        for c in ["a", "b", "c", "a"] {
            g.untracked(c.as_bytes());
        }
        assert_eq!(g.untracked, 4);
        assert_eq!(g.untracked_by_comm.get("a"), Some(&2));
        assert_eq!(g.untracked_by_comm.get("other"), Some(&1));
        assert!(g.describe().contains("4 new processes untracked"));
        assert!(
            g.describe().starts_with("memory degradation level 0"),
            "applied"
        );
    }
}
