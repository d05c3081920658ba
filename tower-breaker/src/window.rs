//! The sliding time window of outcome counts.
//!
//! # Window mechanics
//! The window (default 10 s) is a ring of [`BUCKETS`] sub-windows. Each sub-window is tagged with
//! the epoch it holds, `(now − origin) / (window / BUCKETS)`. A recorder that finds the slot for
//! its epoch tagged with an older one claims it with one compare-and-swap, clears it and re-tags
//! it; a recorder racing that clear drops its one sample (it is being attributed to the
//! sub-window going away). A sum reads the slots whose epoch lies in the last [`BUCKETS`]
//! epochs (the current, partial one included), so the window covers between 9/10 and all of
//! its nominal length, and re-checks each tag after reading, leaving out a slot that rotated
//! under it. Counts are exact: nothing is smoothed, and nothing older than the window survives
//! (the defect of cumulative "sliding" count windows, where 10,000 old successes keep an outage
//! from tripping).
//!
//! # Striping
//! Every recorded call is a relaxed `fetch_add` on a counter no other thread writes: counters are
//! split into *stripes*, one cache-line-aligned block per stripe, and each thread records into
//! its own stripe. Two threads recording at the same time therefore never bounce a cache line,
//! which is what lets the breaker scale with cores. The tags are read by every call but written
//! only once per sub-window, so they stay shared in every core's cache. Only a sum (done on a
//! failure or a slow call, never on a success) walks `BUCKETS × stripes` counters.

use crate::sync::{AtomicU64, Ordering};
use std::time::Duration;

/// The number of sub-windows in the ring.
pub(crate) const BUCKETS: usize = 10;

/// Set in a tag while its slot is being cleared.
const CLEARING: u64 = 1 << 63;

/// One sub-window's counters within one stripe.
#[derive(Debug, Default)]
struct Cell {
    total: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

/// One stripe: a counter block per sub-window, alone on its cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe {
    cells: [Cell; BUCKETS],
}

/// The tags of the ring, `epoch + 1` (0 = never used), alone on their cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Tags {
    tags: [AtomicU64; BUCKETS],
}

/// What the window holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls recorded (successes, caller errors and failures).
    pub total: u64,
    /// Calls that failed.
    pub failures: u64,
    /// Calls slower than the slow-call duration (successful or not).
    pub slow: u64,
}

/// What one call contributes to the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) failure: bool,
    pub(crate) slow: bool,
}

/// A ring of [`BUCKETS`] epoch-tagged sub-windows of striped atomic counters.
#[derive(Debug)]
pub(crate) struct Window {
    sub_nanos: u64,
    /// The last epoch seen by a recorder: a hint that saves the division on most calls.
    hint: AtomicU64,
    tags: Tags,
    stripes: Box<[Stripe]>,
}

impl Window {
    /// A window of length `window` with `stripes` stripes (a power of two).
    pub(crate) fn new(window: Duration, stripes: usize) -> Self {
        debug_assert!(stripes.is_power_of_two());
        let sub_nanos = (window.as_nanos() / BUCKETS as u128).clamp(1, u128::from(u64::MAX)) as u64;
        Self {
            sub_nanos,
            hint: AtomicU64::new(0),
            tags: Tags::default(),
            stripes: (0..stripes).map(|_| Stripe::default()).collect(),
        }
    }

    /// The length of one sub-window.
    pub(crate) fn sub_window(&self) -> Duration {
        Duration::from_nanos(self.sub_nanos)
    }

    /// The epoch of the instant `nanos` after the origin.
    pub(crate) fn epoch(&self, nanos: u64) -> u64 {
        let hint = self.hint.load(Ordering::Relaxed);
        let start = hint.wrapping_mul(self.sub_nanos);
        if nanos >= start && nanos - start < self.sub_nanos {
            return hint;
        }
        let epoch = nanos / self.sub_nanos;
        if epoch > hint {
            self.hint.store(epoch, Ordering::Relaxed);
        }
        epoch
    }

    /// The most recent epoch any recorder has seen (for idle eviction).
    pub(crate) fn last_epoch(&self) -> u64 {
        self.hint.load(Ordering::Relaxed)
    }

    /// Records one call into `stripe` for `epoch`.
    pub(crate) fn record(&self, stripe: usize, epoch: u64, sample: Sample) {
        let want = epoch + 1;
        let slot = (epoch % BUCKETS as u64) as usize;
        let tag = &self.tags.tags[slot];
        let seen = tag.load(Ordering::Acquire);
        if seen != want {
            if seen & CLEARING != 0 || seen > want {
                // Being cleared, or already holding a newer epoch: this sample belongs to the
                // sub-window going away.
                return;
            }
            if tag
                .compare_exchange(seen, want | CLEARING, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return;
            }
            self.clear_slot(slot);
            tag.store(want, Ordering::Release);
        }
        let cell = &self.stripes[stripe & (self.stripes.len() - 1)].cells[slot];
        cell.total.fetch_add(1, Ordering::Relaxed);
        if sample.failure {
            cell.failures.fetch_add(1, Ordering::Relaxed);
        }
        if sample.slow {
            cell.slow.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn clear_slot(&self, slot: usize) {
        for stripe in self.stripes.iter() {
            let cell = &stripe.cells[slot];
            cell.total.store(0, Ordering::Relaxed);
            cell.failures.store(0, Ordering::Relaxed);
            cell.slow.store(0, Ordering::Relaxed);
        }
    }

    /// Sums the sub-windows of the last [`BUCKETS`] epochs up to `epoch`.
    pub(crate) fn sum(&self, epoch: u64) -> Counts {
        let cur = epoch + 1;
        let mut counts = Counts::default();
        for (slot, tag) in self.tags.tags.iter().enumerate() {
            let seen = tag.load(Ordering::Acquire);
            if seen == 0 || seen & CLEARING != 0 || seen > cur || seen + BUCKETS as u64 <= cur {
                continue;
            }
            let mut part = Counts::default();
            for stripe in self.stripes.iter() {
                let cell = &stripe.cells[slot];
                part.total += cell.total.load(Ordering::Relaxed);
                part.failures += cell.failures.load(Ordering::Relaxed);
                part.slow += cell.slow.load(Ordering::Relaxed);
            }
            // If the slot rotated while we read it, what we read is not this epoch's.
            if tag.load(Ordering::Acquire) == seen {
                counts.total += part.total;
                counts.failures += part.failures;
                counts.slow += part.slow;
            }
        }
        counts
    }

    /// Forgets everything. Only called while no caller records (the breaker is half-open).
    pub(crate) fn clear(&self) {
        for (slot, tag) in self.tags.tags.iter().enumerate() {
            tag.store(CLEARING, Ordering::Release);
            self.clear_slot(slot);
            tag.store(0, Ordering::Release);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const OK: Sample = Sample {
        failure: false,
        slow: false,
    };
    const FAIL: Sample = Sample {
        failure: true,
        slow: false,
    };

    fn window() -> Window {
        Window::new(Duration::from_secs(10), 4)
    }

    #[test]
    fn counts_sum_across_stripes_and_epochs() {
        let w = window();
        for stripe in 0..4 {
            w.record(stripe, 0, OK);
            w.record(stripe, 3, FAIL);
        }
        w.record(
            9,
            5,
            Sample {
                failure: false,
                slow: true,
            },
        );
        assert_eq!(
            w.sum(5),
            Counts {
                total: 9,
                failures: 4,
                slow: 1
            }
        );
    }

    #[test]
    fn old_epochs_leave_the_window() {
        let w = window();
        for _ in 0..100 {
            w.record(0, 0, OK);
        }
        w.record(0, 9, FAIL);
        assert_eq!(w.sum(9).total, 101);
        // Epoch 10 reuses epoch 0's slot; epoch 0 is out of the window even before reuse.
        assert_eq!(w.sum(10).total, 1);
        w.record(1, 10, FAIL);
        assert_eq!(
            w.sum(10),
            Counts {
                total: 2,
                failures: 2,
                slow: 0
            }
        );
        // Far in the future nothing is left.
        assert_eq!(w.sum(1_000), Counts::default());
    }

    #[test]
    fn late_samples_for_a_rotated_slot_are_dropped() {
        let w = window();
        w.record(0, 10, OK);
        // A straggler recording for epoch 0 (same slot) must not pollute epoch 10.
        w.record(0, 0, FAIL);
        assert_eq!(w.sum(10).failures, 0);
        assert_eq!(w.sum(10).total, 1);
    }

    #[test]
    fn epoch_hint_matches_division() {
        let w = window();
        let sub = w.sub_window().as_nanos() as u64;
        assert_eq!(sub, 1_000_000_000);
        for n in [0, 1, sub - 1, sub, 5 * sub + 7, 3 * sub, 100 * sub - 1] {
            assert_eq!(w.epoch(n), n / sub, "nanos {n}");
        }
    }

    #[test]
    fn clear_forgets() {
        let w = window();
        w.record(0, 2, FAIL);
        w.clear();
        assert_eq!(w.sum(2), Counts::default());
        w.record(0, 2, OK);
        assert_eq!(w.sum(2).total, 1);
    }
}
