//! The sliding time window of outcome counts.
//!
//! # Window mechanics
//! The window (default 10 s) is a ring of [`BUCKETS`] sub-windows. Every counter is one atomic
//! word holding both its count (low 32 bits) and the epoch it counts (high 32 bits), where the
//! epoch is `(now − origin) / (window / BUCKETS)`. Recording is one compare-and-swap: if the
//! word holds the recorder's epoch (or a newer one) the count goes up by one; if it holds an
//! older epoch the word is replaced by "this epoch, count 1". So rotation needs no separate
//! clearing phase that a concurrent recorder could race: no sample is ever lost, and a sample
//! recorded a moment late lands in the newer sub-window, never in a stale one. A sum adds the
//! counters whose epoch lies in the last [`BUCKETS`] epochs (the current, partial one
//! included), so the window covers between 9/10 and all of its nominal length. Counts are exact:
//! nothing is smoothed or sampled, and nothing older than the window survives (the defect of
//! cumulative "sliding" count windows, where 10,000 old successes keep an outage from
//! tripping).
//!
//! # Striping
//! Counters are split into *stripes*, one cache-line-aligned block per stripe, and each thread
//! records into its own stripe, so two threads recording at the same time never bounce a
//! cache line; that is what lets the breaker scale with cores. Only a sum (done on a failure or
//! a slow call, never on a success) walks `BUCKETS × stripes` counters.

use crate::sync::{AtomicU64, Ordering};
use std::time::Duration;

/// The number of sub-windows in the ring.
pub const BUCKETS: usize = 10;

/// One sub-window's counters within one stripe; each word is `epoch + 1` (high 32 bits) and a
/// count (low 32 bits).
#[derive(Debug, Default)]
struct Cell {
    total: AtomicU64,
    failures: AtomicU64,
    /// Failures that say load hurts (timeouts, overload answers, abandoned calls).
    load: AtomicU64,
    slow: AtomicU64,
    /// Admitted calls that turned out to count for nothing (dropped, rejected locally).
    retracted: AtomicU64,
}

/// One stripe: a counter block per sub-window, alone on its cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe {
    cells: [Cell; BUCKETS],
}

/// What the window holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls recorded (successes, caller errors and failures).
    pub total: u64,
    /// Calls that failed.
    pub failures: u64,
    /// Of those, failures that say load hurts: timeouts, overload answers, abandoned calls.
    pub load_failures: u64,
    /// Calls slower than the slow-call duration (successful or not).
    pub slow: u64,
}

/// What one call contributes to the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) failure: bool,
    /// A failure that says load hurts (implies `failure`).
    pub(crate) load: bool,
    pub(crate) slow: bool,
}

const COUNT: u64 = u32::MAX as u64;

fn tag_of(epoch: u64) -> u64 {
    (epoch.wrapping_add(1) & COUNT) << 32
}

/// Counts `n` samples of `epoch` into `word` (saturating).
#[inline]
fn bump(word: &AtomicU64, epoch: u64, n: u64) {
    let tag = tag_of(epoch);
    let mut v = word.load(Ordering::Relaxed);
    loop {
        let held = v & !COUNT;
        // Is the held epoch older than ours (wrapping)? Then start the word over.
        let older = ((tag >> 32).wrapping_sub(held >> 32) as u32 as i32) > 0;
        let next = if older {
            tag | n.min(COUNT)
        } else {
            held | (v & COUNT).saturating_add(n).min(COUNT)
        };
        if next == v {
            return;
        }
        // Sequentially consistent, so that of two failures recorded at once, at least one
        // thread's sum sees both (on x86 a `lock cmpxchg` either way).
        match word.compare_exchange_weak(v, next, Ordering::SeqCst, Ordering::Relaxed) {
            Ok(_) => return,
            Err(actual) => v = actual,
        }
    }
}

/// The count of `word` if its epoch is one of the `BUCKETS` epochs up to `epoch`.
#[inline]
fn live(word: &AtomicU64, epoch: u64) -> u64 {
    let v = word.load(Ordering::SeqCst);
    if v == 0 {
        return 0;
    }
    let age = ((tag_of(epoch) >> 32).wrapping_sub(v >> 32)) & COUNT;
    if age < BUCKETS as u64 { v & COUNT } else { 0 }
}

/// A ring of [`BUCKETS`] epoch-tagged sub-windows of striped atomic counters.
#[derive(Debug)]
pub(crate) struct Window {
    sub_nanos: u64,
    /// The latest epoch seen by a recorder: a hint that saves the division on most calls, and
    /// the sub-window of calls recorded without reading the clock.
    hint: AtomicU64,
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
            stripes: (0..stripes).map(|_| Stripe::default()).collect(),
        }
    }

    /// The length of one sub-window.
    #[inline]
    pub(crate) fn sub_window(&self) -> Duration {
        Duration::from_nanos(self.sub_nanos)
    }

    /// The epoch of the instant `nanos` after the origin.
    #[inline]
    pub(crate) fn epoch(&self, nanos: u64) -> u64 {
        let hint = self.hint.load(Ordering::Relaxed);
        let start = hint.wrapping_mul(self.sub_nanos);
        if nanos >= start && nanos - start < self.sub_nanos {
            return hint;
        }
        let epoch = nanos / self.sub_nanos;
        if epoch > hint {
            self.hint.fetch_max(epoch, Ordering::Relaxed);
        }
        epoch
    }

    /// The latest epoch any recorder has seen.
    #[inline]
    pub(crate) fn last_epoch(&self) -> u64 {
        self.hint.load(Ordering::Relaxed)
    }

    /// Counts `n` admitted calls into `stripe` for `epoch`.
    #[inline]
    pub(crate) fn admitted(&self, stripe: usize, epoch: u64, n: u64) {
        bump(&self.cell(stripe, epoch).total, epoch, n);
    }

    /// Takes back one admitted call that counted for nothing.
    pub(crate) fn retract(&self, stripe: usize, epoch: u64) {
        bump(&self.cell(stripe, epoch).retracted, epoch, 1);
    }

    /// Records how an admitted call went (its admission is counted separately).
    pub(crate) fn record(&self, stripe: usize, epoch: u64, sample: Sample) {
        let cell = self.cell(stripe, epoch);
        if sample.failure {
            bump(&cell.failures, epoch, 1);
        }
        if sample.load {
            bump(&cell.load, epoch, 1);
        }
        if sample.slow {
            bump(&cell.slow, epoch, 1);
        }
    }

    #[inline]
    fn cell(&self, stripe: usize, epoch: u64) -> &Cell {
        let slot = (epoch % BUCKETS as u64) as usize;
        &self.stripes[stripe & (self.stripes.len() - 1)].cells[slot]
    }

    /// Sums the sub-windows of the last [`BUCKETS`] epochs up to `epoch`.
    pub(crate) fn sum(&self, epoch: u64) -> Counts {
        let mut counts = Counts::default();
        let mut retracted = 0;
        for stripe in self.stripes.iter() {
            for cell in stripe.cells.iter() {
                counts.total += live(&cell.total, epoch);
                counts.failures += live(&cell.failures, epoch);
                counts.load_failures += live(&cell.load, epoch);
                counts.slow += live(&cell.slow, epoch);
                retracted += live(&cell.retracted, epoch);
            }
        }
        counts.total = counts.total.saturating_sub(retracted);
        counts
    }

    /// Forgets everything. Only called while no caller records (the breaker is half-open).
    pub(crate) fn clear(&self) {
        for stripe in self.stripes.iter() {
            for cell in stripe.cells.iter() {
                cell.total.store(0, Ordering::SeqCst);
                cell.failures.store(0, Ordering::SeqCst);
                cell.load.store(0, Ordering::SeqCst);
                cell.slow.store(0, Ordering::SeqCst);
                cell.retracted.store(0, Ordering::SeqCst);
            }
        }
    }
}
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const OK: Sample = Sample {
        failure: false,
        load: false,
        slow: false,
    };
    const FAIL: Sample = Sample {
        failure: true,
        load: false,
        slow: false,
    };

    fn window() -> Window {
        Window::new(Duration::from_secs(10), 4)
    }

    /// Admits and records one call.
    fn call(w: &Window, stripe: usize, epoch: u64, sample: Sample) {
        w.admitted(stripe, epoch, 1);
        w.record(stripe, epoch, sample);
    }

    #[test]
    fn counts_sum_across_stripes_and_epochs() {
        let w = window();
        for stripe in 0..4 {
            call(&w, stripe, 0, OK);
            call(&w, stripe, 3, FAIL);
        }
        call(
            &w,
            9,
            5,
            Sample {
                failure: false,
                load: false,
                slow: true,
            },
        );
        assert_eq!(
            w.sum(5),
            Counts {
                total: 9,
                failures: 4,
                load_failures: 0,
                slow: 1
            }
        );
    }

    #[test]
    fn load_failures_are_counted_apart_and_cleared() {
        let w = window();
        let load = Sample {
            failure: true,
            load: true,
            slow: false,
        };
        call(&w, 0, 0, load);
        call(&w, 1, 0, FAIL);
        call(&w, 2, 0, OK);
        let c = w.sum(0);
        assert_eq!((c.total, c.failures, c.load_failures), (3, 2, 1));
        // Load failures leave the window with their epoch.
        assert_eq!(w.sum(10).load_failures, 0);
        w.clear();
        assert_eq!(w.sum(0), Counts::default());
    }

    #[test]
    fn old_epochs_leave_the_window() {
        let w = window();
        for _ in 0..100 {
            call(&w, 0, 0, OK);
        }
        call(&w, 0, 9, FAIL);
        assert_eq!(w.sum(9).total, 101);
        // Epoch 10 reuses epoch 0's slot; epoch 0 is out of the window even before reuse.
        assert_eq!(w.sum(10).total, 1);
        call(&w, 1, 10, FAIL);
        assert_eq!(
            w.sum(10),
            Counts {
                total: 2,
                failures: 2,
                load_failures: 0,
                slow: 0
            }
        );
        // Far in the future nothing is left.
        assert_eq!(w.sum(1_000), Counts::default());
    }

    #[test]
    fn late_samples_land_in_the_newer_sub_window() {
        let w = window();
        call(&w, 0, 0, FAIL);
        call(&w, 0, 10, OK);
        // A recorder a moment late for epoch 0 (same slot) is counted, in epoch 10; epoch 0's
        // own failure is gone.
        call(&w, 0, 0, OK);
        assert_eq!(
            w.sum(10),
            Counts {
                total: 2,
                failures: 0,
                load_failures: 0,
                slow: 0
            }
        );
        // Every word's epoch is checked on its own.
        call(&w, 0, 10, FAIL);
        assert_eq!(w.sum(10).failures, 1);
    }

    #[test]
    fn counts_saturate() {
        let w = window();
        let cell = &w.stripes[0].cells[3];
        cell.total.store(tag_of(3) | (COUNT - 1), Ordering::Relaxed);
        call(&w, 0, 3, OK);
        call(&w, 0, 3, OK);
        assert_eq!(w.sum(3).total, COUNT);
        w.admitted(0, 3, u64::MAX);
        assert_eq!(w.sum(3).total, COUNT);
    }

    #[test]
    fn retracted_calls_leave_the_total() {
        let w = window();
        w.admitted(1, 4, 5);
        w.retract(0, 4);
        assert_eq!(w.sum(4).total, 4);
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
        call(&w, 0, 2, FAIL);
        w.clear();
        assert_eq!(w.sum(2), Counts::default());
        call(&w, 0, 2, OK);
        assert_eq!(w.sum(2).total, 1);
    }
}
