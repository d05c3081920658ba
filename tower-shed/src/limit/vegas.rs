use super::window::{Baseline, Fed, Rtts};
use super::{Bounds, Limit, Sample, Shaper, bounds_knobs};
use crate::error::ConfigError;
#[cfg(doc)]
use damper_core::rng::SplitMix64;
use std::time::Duration;
use tokio::time::Instant;

/// TCP Vegas applied to concurrency: estimates how many requests are queued from the no-load RTT.
///
/// ```text
/// queue = ⌈L · (1 − rtt_noload / rtt)⌉,   lg = max(1, log10 L)
/// queue ≤ lg            → L + 6·lg   (far below capacity: grow fast)
/// queue < 3·lg (alpha)  → L + lg
/// queue > 6·lg (beta)   → L − lg     (also on a drop)
/// otherwise             → L
/// ```
///
/// `rtt` is the **median** RTT of a batch of 32 measured requests admitted after the last
/// decision (one decision per batch), and `rtt_noload` the lowest such median: single samples
/// are too noisy (with lognormal service times one request can take 5× the median, and the
/// minimum of a few hundred samples is a fifth of it, which would make any load look like a
/// queue). Because a minimum can only fall, it is **re-probed** after
/// `U(0.5, 1) · probe_multiplier · L` requests (jittered with a seeded [`SplitMix64`], so
/// limiters started together do not re-probe together). Without the re-probe a backend that
/// became slower for good (a deploy, a bigger dataset) would look permanently congested and the
/// limit would sink to `min_limit`.
///
/// ## Probe mechanics
///
/// Netflix's Vegas re-probes by taking the current sample as the new minimum. Under load that
/// sample includes the queue Vegas itself keeps (`alpha..beta` requests), so every probe raises
/// the baseline and the limit ratchets upward probe after probe. Here a probe briefly pins the
/// limit to `probe_pin · L` (default ½), lets the queue drain, and takes the median RTT of 16
/// measured requests admitted after the pin; a result within 2× of the old baseline is
/// averaged with it, one further off replaces it. Then the limit is restored. The pin must be
/// below `capacity / L`: Netflix-style 0.75 drains nothing against a small server (13 workers
/// with lognormal service times keep `L` near 18–28, so 75% of it still queues), and the
/// baseline then creeps up probe after probe. Probes come every `U(0.5, 1) · probe_multiplier
/// · L` requests, but at least 25 probes' length apart (a probe lasts `16 × sample_every`
/// requests), so probing takes a few percent of the time whatever the sampling rate.
///
/// Nothing grows while the limit is not in use (`in_flight < L / 2` and nothing turned away).
///
/// Defaults: initial 20, min 1, max 1000, smoothing 1, probe multiplier 30, probe pin ½,
/// seed 0.
///
/// ```
/// use std::time::Duration;
/// use tokio::time::Instant;
/// use tower_shed::limit::{Limit, Sample, Vegas};
///
/// let mut v = Vegas::builder().initial_limit(10).build().unwrap();
/// let now = Instant::now();
/// let s = Sample::new(Duration::from_millis(10), 10, false);
/// // One batch with no queue: grow by 6·max(1, log10 L).
/// for _ in 0..32 {
///     v.update(s, now);
/// }
/// assert_eq!(v.limit(), 16);
/// ```
#[derive(Debug, Clone)]
pub struct Vegas {
    shaper: Shaper,
    rtts: Rtts,
    probe_multiplier: f64,
}

/// Builds a [`Vegas`]. See [`Vegas::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct VegasBuilder {
    bounds: Bounds,
    probe_multiplier: f64,
    probe_pin: f64,
    seed: u64,
}

impl Default for VegasBuilder {
    fn default() -> Self {
        Self {
            bounds: Bounds {
                initial: 20,
                min: 1,
                max: 1000,
                smoothing: 1.0,
            },
            probe_multiplier: 30.0,
            probe_pin: 0.5,
            seed: 0,
        }
    }
}

impl VegasBuilder {
    bounds_knobs!();

    /// The no-load RTT is re-probed every `U(0.5, 1) · multiplier · L` samples (at least 1).
    pub fn probe_multiplier(mut self, multiplier: f64) -> Self {
        self.probe_multiplier = multiplier;
        self
    }

    /// While re-probing, the limit is pinned to `pin · L`, in `[0.1, 1)`.
    pub fn probe_pin(mut self, pin: f64) -> Self {
        self.probe_pin = pin;
        self
    }

    /// Seeds the probe jitter.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<Vegas, ConfigError> {
        self.bounds.validate()?;
        if !(self.probe_multiplier >= 1.0 && self.probe_multiplier.is_finite()) {
            return Err(ConfigError::new("probe_multiplier", "must be at least 1"));
        }
        if !(0.1..1.0).contains(&self.probe_pin) {
            return Err(ConfigError::new("probe_pin", "must be in [0.1, 1)"));
        }
        let mut baseline = Baseline::new(self.probe_pin, 16, self.seed);
        baseline.schedule(self.probe_multiplier * self.bounds.initial as f64);
        Ok(Vegas {
            shaper: Shaper::new(self.bounds),
            rtts: Rtts::new(baseline),
            probe_multiplier: self.probe_multiplier,
        })
    }
}

impl Vegas {
    /// A builder with the defaults listed above.
    pub fn builder() -> VegasBuilder {
        VegasBuilder::default()
    }
}

impl Default for Vegas {
    fn default() -> Self {
        Self::builder().build().unwrap_or_else(|_| unreachable!())
    }
}

impl Limit for Vegas {
    fn limit(&self) -> usize {
        self.shaper.get()
    }

    fn update(&mut self, sample: Sample, now: Instant) -> usize {
        let l = self.shaper.value();
        let lg = l.log10().max(1.0);
        let period = self.probe_multiplier * l;
        let (batch, noload) = match self.rtts.feed(&sample, now, &mut self.shaper, period) {
            Fed::Limit(l) => return l,
            Fed::Dropped => return self.shaper.step(l - lg, &sample, now),
            Fed::Batch { sample, noload } => (sample, noload),
        };
        let rtt_s = batch.rtt.as_secs_f64();
        let queue = if rtt_s > 0.0 {
            (l * (1.0 - noload.as_secs_f64() / rtt_s)).ceil()
        } else {
            0.0
        };
        let target = if queue <= lg {
            l + 6.0 * lg
        } else if queue < 3.0 * lg {
            l + lg
        } else if queue > 6.0 * lg {
            l - lg
        } else {
            return self.shaper.get();
        };
        self.shaper.step(target, &batch, now)
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
    fn converges_backs_off_and_recovers() {
        let mut v = Vegas::builder().build().unwrap();
        let mut b = Backend::new(40.0, 1000.0, Duration::from_millis(10));
        let trace = b.run(&mut v, 400);
        // Vegas keeps alpha..beta (3..6 × log10 L ≈ 5..10) requests queued above capacity;
        // probes dip to 50% for a round or two.
        settled(&trace[200..], 40, 60);
        b.capacity = 20.0;
        let trace = b.run(&mut v, 400);
        settled(&trace[200..], 20, 35);
        b.capacity = 40.0;
        let trace = b.run(&mut v, 400);
        settled(&trace[200..], 40, 60);
    }

    /// At least 80% of `tail` within `[lo, hi]`, all of it within `[lo / 2, hi]`: a probe
    /// pins the limit to half until 16 measured requests admitted after the pin complete, a
    /// few rounds every 15–30.
    fn settled(tail: &[usize], lo: usize, hi: usize) {
        let inside = tail.iter().filter(|&&l| (lo..=hi).contains(&l)).count();
        assert!(inside * 10 >= tail.len() * 8, "{tail:?}");
        assert!(tail.iter().all(|&l| l * 2 >= lo && l <= hi), "{tail:?}");
    }

    #[test]
    fn converges_the_same_with_one_request_in_eight_measured() {
        let mut v = Vegas::builder().build().unwrap();
        let mut b = Backend::new(40.0, 1000.0, Duration::from_millis(10));
        b.every = 8;
        let trace = b.run(&mut v, 400);
        settled(&trace[200..], 40, 60);
        b.capacity = 20.0;
        let trace = b.run(&mut v, 400);
        settled(&trace[200..], 20, 35);
    }

    #[test]
    fn reprobes_min_rtt_after_a_permanent_slowdown() {
        let mut v = Vegas::builder().seed(7).build().unwrap();
        let mut b = Backend::new(40.0, 1000.0, Duration::from_millis(10));
        b.run(&mut v, 300);
        assert_eq!(v.min_rtt(), Some(Duration::from_millis(10)));
        // The backend is now 3× slower for good, with the same concurrency.
        b.base = Duration::from_millis(30);
        let trace = b.run(&mut v, 600);
        let min = v.min_rtt().unwrap();
        assert!(
            min >= Duration::from_millis(30) && min < Duration::from_millis(33),
            "{min:?}"
        );
        settled(&trace[400..], 40, 60);
    }

    #[test]
    fn without_reprobe_the_limit_would_sink() {
        // Counter-check of the test above: with an effectively infinite probe interval, the
        // stale minimum makes the slower backend look congested.
        let mut v = Vegas::builder().probe_multiplier(1e12).build().unwrap();
        let mut b = Backend::new(40.0, 1000.0, Duration::from_millis(10));
        b.run(&mut v, 300);
        b.base = Duration::from_millis(30);
        let trace = b.run(&mut v, 600);
        assert!(*trace.last().unwrap() < 30, "{:?}", &trace[590..]);
    }

    #[test]
    fn drops_cut_the_limit() {
        let mut v = Vegas::builder().initial_limit(100).build().unwrap();
        let s = Sample::new(Duration::from_millis(10), 100, true);
        assert_eq!(v.update(s, Instant::now()), 98);
    }

    #[test]
    fn invalid_config_names_the_field() {
        assert_eq!(
            Vegas::builder()
                .probe_multiplier(0.0)
                .build()
                .unwrap_err()
                .field(),
            "probe_multiplier"
        );
    }
}
