use super::{Bounds, Limit, Sample, Shaper, bounds_knobs};
use crate::error::ConfigError;
use std::time::Duration;
use tokio::time::Instant;

/// Additive increase, multiplicative decrease: the loss-based limit of TCP Reno.
///
/// - a dropped request, or one slower than `latency_threshold`, cuts the limit by `backoff`
///   (bounded to `[0.5, 1)`, at most once per RTT);
/// - any other sample adds `increase_by`, but only while the limit is in use
///   (`in_flight ≥ limit / 2`, or the limit turned requests away since the last sample).
///
/// The in-use rule is what the usual AIMD limiters miss: without it the limit climbs to
/// `max_limit` during quiet periods and then collapses in one burst.
///
/// Defaults: initial 20, min 1, max 200, `backoff` 0.9, `increase_by` 1, `latency_threshold` 5 s,
/// smoothing 1 (no smoothing).
///
/// ```
/// use std::time::Duration;
/// use tokio::time::Instant;
/// use tower_shed::limit::{Aimd, Limit, Sample};
///
/// let mut aimd = Aimd::builder().initial_limit(10).build().unwrap();
/// let now = Instant::now();
/// let busy = Sample::new(Duration::from_millis(5), 10, false);
/// // About one RTT's worth of samples (≈ L) adds one.
/// for _ in 0..12 {
///     aimd.update(busy, now);
/// }
/// assert_eq!(aimd.limit(), 11);
/// let drop = Sample { dropped: true, ..busy };
/// assert_eq!(aimd.update(drop, now), 10); // 11.14 × 0.9
/// ```
#[derive(Debug, Clone)]
pub struct Aimd {
    shaper: Shaper,
    backoff: f64,
    increase_by: f64,
    latency_threshold: Duration,
}

/// Builds an [`Aimd`]. See [`Aimd::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct AimdBuilder {
    bounds: Bounds,
    backoff: f64,
    increase_by: f64,
    latency_threshold: Duration,
}

impl Default for AimdBuilder {
    fn default() -> Self {
        Self {
            bounds: Bounds {
                initial: 20,
                min: 1,
                max: 200,
                smoothing: 1.0,
            },
            backoff: 0.9,
            increase_by: 1.0,
            latency_threshold: Duration::from_secs(5),
        }
    }
}

impl AimdBuilder {
    bounds_knobs!();

    /// The factor a drop multiplies the limit by, in `[0.5, 1)`.
    pub fn backoff(mut self, factor: f64) -> Self {
        self.backoff = factor;
        self
    }

    /// How much each in-use sample adds to the limit (positive).
    pub fn increase_by(mut self, step: f64) -> Self {
        self.increase_by = step;
        self
    }

    /// Samples slower than this count as drops.
    pub fn latency_threshold(mut self, threshold: Duration) -> Self {
        self.latency_threshold = threshold;
        self
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<Aimd, ConfigError> {
        self.bounds.validate()?;
        if !(0.5..1.0).contains(&self.backoff) {
            return Err(ConfigError::new("backoff", "must be in [0.5, 1)"));
        }
        if !(self.increase_by > 0.0 && self.increase_by.is_finite()) {
            return Err(ConfigError::new("increase_by", "must be positive"));
        }
        if self.latency_threshold.is_zero() {
            return Err(ConfigError::new("latency_threshold", "must be positive"));
        }
        Ok(Aimd {
            shaper: Shaper::new(self.bounds),
            backoff: self.backoff,
            increase_by: self.increase_by,
            latency_threshold: self.latency_threshold,
        })
    }
}

impl Aimd {
    /// A builder with the defaults listed above.
    pub fn builder() -> AimdBuilder {
        AimdBuilder::default()
    }
}

impl Default for Aimd {
    fn default() -> Self {
        // The defaults are valid.
        Self::builder().build().unwrap_or_else(|_| unreachable!())
    }
}

impl Limit for Aimd {
    fn limit(&self) -> usize {
        self.shaper.get()
    }

    fn update(&mut self, sample: Sample, now: Instant) -> usize {
        let l = self.shaper.value();
        if sample.dropped || sample.rtt > self.latency_threshold {
            self.shaper.step(l * self.backoff, &sample, now)
        } else if sample.in_use(l) {
            self.shaper.step(l + self.increase_by, &sample, now)
        } else {
            self.shaper.get()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::sim::Backend;

    #[test]
    fn converges_backs_off_and_recovers() {
        // 40 workers and a 10-deep queue: the backend drops what does not fit in 50.
        let mut aimd = Aimd::builder().initial_limit(10).build().unwrap();
        let mut b = Backend::new(40.0, 10.0, Duration::from_millis(10));
        let trace = b.run(&mut aimd, 400);
        let tail = &trace[300..];
        assert!(
            tail.iter().all(|&l| (35..=55).contains(&l)),
            "tail {tail:?}"
        );
        // Capacity halves: the limit follows it down.
        b.capacity = 20.0;
        let trace = b.run(&mut aimd, 200);
        let tail = &trace[150..];
        assert!(tail.iter().all(|&l| (15..=33).contains(&l)), "{tail:?}");
        // And recovers when capacity comes back.
        b.capacity = 40.0;
        let trace = b.run(&mut aimd, 300);
        assert!(trace[250..].iter().all(|&l| (35..=55).contains(&l)));
    }

    #[test]
    fn converges_the_same_with_one_request_in_eight_measured() {
        let mut aimd = Aimd::builder().initial_limit(10).build().unwrap();
        let mut b = Backend::new(40.0, 10.0, Duration::from_millis(10));
        b.every = 8;
        let trace = b.run(&mut aimd, 400);
        assert!(
            trace[300..].iter().all(|&l| (35..=58).contains(&l)),
            "{:?}",
            &trace[300..]
        );
    }

    #[test]
    fn does_not_grow_while_idle() {
        let mut aimd = Aimd::builder().initial_limit(10).build().unwrap();
        let now = Instant::now();
        let idle = Sample::new(Duration::from_millis(1), 4, false);
        for i in 0..1000 {
            aimd.update(idle, now + Duration::from_millis(i));
        }
        assert_eq!(aimd.limit(), 10);
    }

    #[test]
    fn slow_samples_count_as_drops() {
        let mut aimd = Aimd::builder()
            .initial_limit(100)
            .latency_threshold(Duration::from_millis(50))
            .backoff(0.5)
            .build()
            .unwrap();
        let slow = Sample::new(Duration::from_millis(60), 100, false);
        assert_eq!(aimd.update(slow, Instant::now()), 50);
    }

    #[test]
    fn invalid_config_names_the_field() {
        let e = Aimd::builder().backoff(0.2).build().unwrap_err();
        assert_eq!(e.field(), "backoff");
        assert_eq!(e.to_string(), "invalid backoff: must be in [0.5, 1)");
        assert_eq!(
            Aimd::builder()
                .increase_by(0.0)
                .build()
                .unwrap_err()
                .field(),
            "increase_by"
        );
        assert_eq!(
            Aimd::builder().min_limit(0).build().unwrap_err().field(),
            "min_limit"
        );
    }
}
