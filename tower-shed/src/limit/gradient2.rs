use super::window::{Baseline, Fed, PROBE_SAMPLES, Rtts};
use super::{Bounds, Limit, Sample, Shaper, bounds_knobs};
use crate::error::ConfigError;
use std::time::Duration;
use tokio::time::Instant;

/// Gradient2 (after Netflix's): compares the short-term RTT with the no-load RTT.
///
/// ```text
/// short  = median RTT of a batch of 32 measured requests admitted after the last decision
/// long   = the no-load RTT: the lowest batch median, re-measured by a probe every
///          U(0.5, 1) · long_window requests (the limit pinned to probe_pin · L)
/// g      = clamp(tolerance · long / short, 0.5, 1)
/// target = L · g + queue_size
/// L'     = target                             if target < L   (once per batch)
///          (1 − smoothing) · L + smoothing · target   otherwise
/// ```
///
/// Nothing grows while the limit is not in use (most of the batch admitted with
/// `in_flight < L / 2` and nothing turned away since the sample before). A dropped sample targets `L × 0.9` at once (at most once per RTT).
///
/// # Where this differs from Netflix's Gradient2, and why
///
/// Netflix's long-term RTT is an exponential average of every RTT (600 samples), and its
/// short-term RTT is the last sample. Against a server with a FIFO queue behind its workers
/// that drifts: the queue the limit itself keeps lengthens every RTT, the average follows, the
/// gradient keeps reading "no queue" and the limit climbs to `max_limit`. In the lab's
/// `overload` scenario (13 workers, lognormal service times, 2× capacity offered) it went from
/// 30 to 200 in 6 s and admitted requests waited 600 ms. Here (see the `window` module docs):
///
/// - the short-term RTT is the **median of a batch**, so one slow request (a lognormal p99 is
///   5× the median) neither cuts the limit nor hides a queue, and each decision sees only
///   requests admitted under the previous one;
/// - the long-term RTT is a **no-load RTT that a standing queue cannot drag up**: it falls to
///   a lower batch median (a quarter of the way, or at once if less than half) and is
///   otherwise only re-measured by a probe that drains the queue: the limit pinned to
///   `probe_pin · L` (default ½) for as long as 32 measured requests take, their median
///   averaged with the old baseline if within 2× of it, replacing it otherwise. Three
///   decisions near the gradient's floor (below 0.6) whose cuts did not shorten the RTT also
///   start a probe early: that is what a baseline that is too low (a backend that became
///   slower for good) looks like.
///
/// With the defaults the limit settles where the median RTT is about `tolerance / (1 −
/// queue_size / L)` times the no-load one: against a saturated server with 13 workers and
/// lognormal service times (p99 = 5 × median), at 17–22 with a median queueing delay of about
/// half a service time.
///
/// Defaults: initial 20, min 1 (Netflix: 20), max 200, tolerance 1.5, `long_window` 60,000
/// requests between probes (a probe forgoes at most `32 × sample_every × (1 − pin) / pin`
/// requests, about 1% at this spacing, less when `pin · L` still covers the workers), probe
/// pin ½, queue size 4, seed
/// 0, and smoothing **½**, for increases only, where Netflix has 0.2 per sample for both: here
/// the limit moves once per batch of 32 measured requests (several RTTs); half of each
/// increase keeps the batch medians' noise from ratcheting the limit up, and whole cuts bring
/// a limit that starts far too high (200 against 13 workers) down in about 2 s.
///
/// ```
/// use std::time::Duration;
/// use tokio::time::Instant;
/// use tower_shed::limit::{Gradient2, Limit, Sample};
///
/// let mut g = Gradient2::builder().initial_limit(10).build().unwrap();
/// let s = Sample::new(Duration::from_millis(10), 10, false);
/// let now = Instant::now();
/// for _ in 0..32 {
///     g.update(s, now);
/// }
/// // One batch at the no-load RTT: room to grow by the queue size, half of it taken
/// // (smoothing ½).
/// assert_eq!(g.limit(), 12);
/// assert_eq!(g.min_rtt(), Some(Duration::from_millis(10)));
/// ```
#[derive(Debug, Clone)]
pub struct Gradient2 {
    shaper: Shaper,
    rtts: Rtts,
    tolerance: f64,
    queue_size: f64,
    long_window: f64,
    /// Decisions near the gradient's floor whose cut did not shorten the RTT, since the last
    /// one away from it.
    at_floor: u32,
    /// The previous batch's median.
    last_short: Duration,
}

/// Decisions near the gradient's floor (below 0.6) whose batch median is not a quarter
/// shorter than the one before, with none away from the floor between them, that start a
/// probe early (see `update`).
const FLOOR_RUN: u32 = 3;

/// Builds a [`Gradient2`]. See [`Gradient2::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct Gradient2Builder {
    bounds: Bounds,
    tolerance: f64,
    long_window: u32,
    queue_size: f64,
    probe_pin: f64,
    seed: u64,
}

impl Default for Gradient2Builder {
    fn default() -> Self {
        Self {
            bounds: Bounds {
                initial: 20,
                min: 1,
                max: 200,
                smoothing: 0.5,
            },
            tolerance: 1.5,
            long_window: 60_000,
            queue_size: 4.0,
            probe_pin: 0.5,
            seed: 0,
        }
    }
}

impl Gradient2Builder {
    bounds_knobs!();

    /// How much slower than the no-load RTT the short-term RTT may get before the limit is
    /// cut (at least 1).
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// How long the long-term (no-load) RTT is trusted, in requests (at least 10): it is
    /// re-measured by a probe after `U(0.5, 1) × long_window` requests.
    pub fn long_window(mut self, requests: u32) -> Self {
        self.long_window = requests;
        self
    }

    /// How many queued requests the limit allows on top of `L · gradient` (non-negative).
    pub fn queue_size(mut self, queue: f64) -> Self {
        self.queue_size = queue;
        self
    }

    /// While probing the no-load RTT, the limit is pinned to `pin · L`, in `[0.1, 1)`. It must
    /// be low enough to drain the queue the limit keeps: below `1 / tolerance`.
    pub fn probe_pin(mut self, pin: f64) -> Self {
        self.probe_pin = pin;
        self
    }

    /// Seeds the probe jitter (limiters started together then do not probe together).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<Gradient2, ConfigError> {
        self.bounds.validate()?;
        if !(self.tolerance >= 1.0 && self.tolerance.is_finite()) {
            return Err(ConfigError::new("tolerance", "must be at least 1"));
        }
        if self.long_window < 10 {
            return Err(ConfigError::new("long_window", "must be at least 10"));
        }
        if !(self.queue_size >= 0.0 && self.queue_size.is_finite()) {
            return Err(ConfigError::new("queue_size", "must be non-negative"));
        }
        if !(0.1..1.0).contains(&self.probe_pin) {
            return Err(ConfigError::new("probe_pin", "must be in [0.1, 1)"));
        }
        let long_window = f64::from(self.long_window);
        let mut baseline = Baseline::new(self.probe_pin, PROBE_SAMPLES, self.seed);
        baseline.schedule(long_window);
        Ok(Gradient2 {
            shaper: Shaper::new(self.bounds),
            rtts: Rtts::new(baseline),
            tolerance: self.tolerance,
            queue_size: self.queue_size,
            long_window,
            at_floor: 0,
            last_short: Duration::MAX,
        })
    }
}

impl Gradient2 {
    /// A builder with the defaults listed above.
    pub fn builder() -> Gradient2Builder {
        Gradient2Builder::default()
    }
}

impl Default for Gradient2 {
    fn default() -> Self {
        Self::builder().build().unwrap_or_else(|_| unreachable!())
    }
}

impl Limit for Gradient2 {
    fn limit(&self) -> usize {
        self.shaper.get()
    }

    fn update(&mut self, sample: Sample, now: Instant) -> usize {
        let l = self.shaper.value();
        let (batch, long) = match self
            .rtts
            .feed(&sample, now, &mut self.shaper, self.long_window)
        {
            Fed::Limit(l) => return l,
            Fed::Dropped => return self.shaper.step(l * 0.9, &sample, now),
            Fed::Batch { sample, noload } => (sample, noload),
        };
        let ratio = long.as_secs_f64() / batch.rtt.as_secs_f64().max(1e-9);
        let gradient = (self.tolerance * ratio).clamp(0.5, 1.0);
        // A baseline too low (the backend became slower for good) keeps the gradient near its
        // floor while the cuts remove no queue: the RTT stays put. A limit coming down from far
        // above the operating point also sits at the floor, but each cut shortens the RTT by
        // much more than the batch median's noise; probing then would pin the limit to half
        // of a limit still too high, measure a queue and keep it.
        let shortened = batch.rtt < self.last_short.mul_f64(0.75);
        self.last_short = batch.rtt;
        if gradient >= 0.6 {
            self.at_floor = 0;
        } else if !shortened {
            self.at_floor += 1;
            if self.at_floor >= FLOOR_RUN {
                self.at_floor = 0;
                self.rtts.baseline.probe_now();
            }
        }
        // The limit turned requests away while the RTT shows no queue: the limit binds, not
        // the backend (bursts below capacity, or a limit a fault pushed down), so the whole
        // increase is taken.
        if batch.saturated && gradient >= 1.0 {
            return self.shaper.step_whole(l + self.queue_size, &batch, now);
        }
        // Cuts are taken whole: a limit far above the operating point comes down in a few
        // batches. Growth is smoothed: that is where the batch medians' noise would ratchet.
        self.shaper
            .step_smoothed(l * gradient + self.queue_size, &batch, now, false)
    }

    fn min_rtt(&self) -> Option<Duration> {
        self.rtts.baseline.value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::sim::Backend;

    #[test]
    fn min_rtt_of_huge_samples_saturates() {
        // Regression: the long average of Duration::MAX samples (rounded up past it as an f64)
        // panicked in `Duration::from_secs_f64`.
        let now = Instant::now();
        let mut g = Gradient2::default();
        for _ in 0..50 {
            g.update(Sample::new(Duration::MAX, 10, false), now);
        }
        assert_eq!(g.min_rtt(), Some(Duration::MAX));
        assert!(g.limit() >= 1);
        // Ordinary samples bring it back down.
        for i in 0..2000 {
            let at = now + Duration::from_millis(20 + i);
            g.update(Sample::new(Duration::from_millis(10), 10, false), at);
        }
        assert!(g.min_rtt().unwrap() < Duration::from_secs(1));
    }

    #[test]
    fn converges_backs_off_and_recovers() {
        // 40 workers, 20 queue slots, drops beyond: the limit settles at the drop point.
        let mut g = Gradient2::builder().build().unwrap();
        let mut b = Backend::new(40.0, 20.0, Duration::from_millis(10));
        let trace = b.run(&mut g, 600);
        settled(&trace[300..], 45, 66);
        // Capacity halves: latency jumps and the gradient cuts the limit as soon as a batch of
        // requests admitted after the change completes (within two rounds here), before any
        // drop (the backend queue is made deep enough to hold everything).
        let before = *trace.last().unwrap();
        b.capacity = 20.0;
        b.queue = 1000.0;
        let trace = b.run(&mut g, 2);
        assert!(trace[1] < before, "{before} -> {trace:?}");
        // With drops back, the limit follows the lower capacity.
        b.queue = 20.0;
        let trace = b.run(&mut g, 600);
        settled(&trace[300..], 25, 44);
        // Recovers.
        b.capacity = 40.0;
        let trace = b.run(&mut g, 600);
        settled(&trace[300..], 45, 66);
    }

    /// At least 95% of `tail` within `[lo, hi]`; the rest are probes, pinned to half the limit.
    fn settled(tail: &[usize], lo: usize, hi: usize) {
        let inside = tail.iter().filter(|&&l| (lo..=hi).contains(&l)).count();
        assert!(inside * 20 >= tail.len() * 19, "{tail:?}");
        assert!(tail.iter().all(|&l| l * 2 >= lo && l <= hi), "{tail:?}");
    }

    #[test]
    fn app_limited_does_not_grow() {
        let mut g = Gradient2::builder().initial_limit(50).build().unwrap();
        let mut b = Backend::new(40.0, 1000.0, Duration::from_millis(10));
        b.demand = 10;
        let trace = b.run(&mut g, 300);
        assert_eq!(*trace.last().unwrap(), 50);
    }

    #[test]
    fn a_limit_that_turns_requests_away_grows_while_the_rtt_is_healthy() {
        // Few in flight when each measured request starts (3 of 20), at the no-load RTT: a
        // bursty load below capacity. Only the limiter's word that it turned requests away
        // between the measurements tells the two runs apart.
        let t0 = Instant::now();
        let mut quiet = Gradient2::builder().initial_limit(20).build().unwrap();
        let mut bursty = quiet.clone();
        let rtt = Duration::from_millis(10);
        for i in 0..32 * 4 {
            let at = t0 + Duration::from_millis(20 * (i + 1));
            quiet.update(Sample::new(rtt, 3, false), at);
            bursty.update(Sample::new(rtt, 3, false).with_saturated(true), at);
        }
        assert_eq!(quiet.limit(), 20, "an unused limit does not grow");
        // Each of the four batches takes the whole step of `queue_size` (4), not half of it.
        assert_eq!(bursty.limit(), 20 + 4 * 4);
    }

    #[test]
    fn invalid_config_names_the_field() {
        assert_eq!(
            Gradient2::builder()
                .tolerance(0.5)
                .build()
                .unwrap_err()
                .field(),
            "tolerance"
        );
        assert_eq!(
            Gradient2::builder()
                .long_window(3)
                .build()
                .unwrap_err()
                .field(),
            "long_window"
        );
    }
}
