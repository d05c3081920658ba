//! CoDel queue policy with adaptive LIFO, as Facebook describes it in "Fail at Scale".
//!
//! A queue is fine while it empties now and then; it is a problem when it *stands*: when it has
//! not been empty for a whole `interval`. Then waiting longer only adds latency to every request
//! behind, so the allowed wait drops from `interval` to `target`, and requests are served newest
//! first (adaptive LIFO): the newest are the ones whose callers are most likely still waiting,
//! while the oldest are shed after `target`.
//!
//! | queue state | max wait | order |
//! |---|---|---|
//! | emptied within the last `interval` | `interval` (100 ms) | FIFO |
//! | standing for longer than `interval` | `target` (5 ms) | LIFO (if enabled) |
//!
//! [`CoDel`] is the pure policy: it is told when the queue was seen empty and answers questions
//! for a given `now`. The limiter's queue calls it under its lock.
//!
//! ```
//! use std::time::Duration;
//! use tokio::time::Instant;
//! use tower_shed::codel::CoDel;
//!
//! let t0 = Instant::now();
//! let ms = Duration::from_millis;
//! let mut codel = CoDel::new(ms(5), ms(100), true, t0);
//! assert_eq!(codel.max_wait(t0 + ms(50)), ms(100)); // emptied 50 ms ago: be patient
//! assert!(!codel.lifo(t0 + ms(50)));
//! assert_eq!(codel.max_wait(t0 + ms(150)), ms(5)); // standing queue
//! assert!(codel.lifo(t0 + ms(150)));
//! assert!(codel.expired(t0 + ms(140), t0 + ms(150)));
//! codel.observe_empty(t0 + ms(150));
//! assert!(!codel.expired(t0 + ms(140), t0 + ms(150)));
//! ```

use std::time::Duration;
use tokio::time::Instant;

/// Default CoDel target: the wait allowed while a queue stands.
pub const DEFAULT_TARGET: Duration = Duration::from_millis(5);
/// Default CoDel interval: how long a queue may go without emptying before it counts as
/// standing, and the wait allowed otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);

/// The CoDel / adaptive-LIFO decision state. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct CoDel {
    target: Duration,
    interval: Duration,
    adaptive_lifo: bool,
    last_empty: Instant,
}

impl CoDel {
    /// A policy whose queue was last empty at `now`.
    pub fn new(target: Duration, interval: Duration, adaptive_lifo: bool, now: Instant) -> Self {
        Self {
            target,
            interval,
            adaptive_lifo,
            last_empty: now,
        }
    }

    /// Records that the queue was seen empty at `now`.
    pub fn observe_empty(&mut self, now: Instant) {
        if now > self.last_empty {
            self.last_empty = now;
        }
    }

    /// Whether the queue has been non-empty for longer than `interval`.
    pub fn standing(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_empty) > self.interval
    }

    /// How long a request may wait in the queue at `now`.
    pub fn max_wait(&self, now: Instant) -> Duration {
        if self.standing(now) {
            self.target
        } else {
            self.interval
        }
    }

    /// Whether a request queued at `enqueued` has waited too long at `now`.
    pub fn expired(&self, enqueued: Instant, now: Instant) -> bool {
        now.saturating_duration_since(enqueued) > self.max_wait(now)
    }

    /// Whether to serve the newest request first.
    pub fn lifo(&self, now: Instant) -> bool {
        self.adaptive_lifo && self.standing(now)
    }

    /// The longest any request can wait (the `interval`).
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn switches_to_target_and_lifo_when_queue_stands() {
        let t0 = Instant::now();
        let mut c = CoDel::new(5 * MS, 100 * MS, true, t0);
        for t in [0, 10, 99, 100] {
            assert!(!c.standing(t0 + t * MS), "{t}");
            assert_eq!(c.max_wait(t0 + t * MS), 100 * MS);
        }
        assert!(c.standing(t0 + 101 * MS));
        assert!(c.lifo(t0 + 101 * MS));
        // A request queued 6 ms is shed only once the queue stands.
        assert!(!c.expired(t0 + 94 * MS, t0 + 100 * MS));
        assert!(c.expired(t0 + 95 * MS, t0 + 101 * MS));
        // Emptying resets the clock; time never goes back.
        c.observe_empty(t0 + 101 * MS);
        c.observe_empty(t0 + 50 * MS);
        assert!(!c.standing(t0 + 150 * MS));
        assert!(!c.lifo(t0 + 150 * MS));
    }

    #[test]
    fn lifo_can_be_disabled() {
        let t0 = Instant::now();
        let c = CoDel::new(5 * MS, 100 * MS, false, t0);
        assert!(c.standing(t0 + 200 * MS));
        assert!(!c.lifo(t0 + 200 * MS));
    }
}
