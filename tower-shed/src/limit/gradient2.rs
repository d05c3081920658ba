use super::{Bounds, Limit, Sample, Shaper, bounds_knobs};
use crate::error::ConfigError;
use std::time::Duration;
use tokio::time::Instant;

/// Netflix's Gradient2: compares the short-term RTT with a long-term average.
///
/// ```text
/// long   = EMA(rtt, window = long_window samples, first 10 samples averaged)
/// if long / rtt > 2: long ×= 0.95            (the long average recovers quickly after a spike)
/// g      = clamp(tolerance · long / rtt, 0.5, 1)
/// target = L · g + queue_size
/// L'     = (1 − smoothing) · L + smoothing · target      (cuts at most once per RTT)
/// ```
///
/// Nothing changes while the limit is not in use (`in_flight < L / 2`). A dropped sample
/// targets `L × 0.9`.
///
/// # What it sees, and what it does not
///
/// Gradient2 reacts to latency *changes*: a sudden queue (capacity loss, a burst) makes the
/// short-term RTT jump above `tolerance` × the long-term average and the limit is cut. A queue
/// that builds slowly is absorbed into the long-term average, so on its own the limit drifts
/// up until requests are dropped (the backend's queue bound, a timeout). Pair it with drops, or
/// use [`Vegas`](super::Vegas), which measures the queue against the no-load RTT.
///
/// Defaults: initial 20, min 1 (Netflix: 20), max 200, tolerance 1.5, long window 600 samples,
/// queue size 4, and smoothing **1** where Netflix has 0.2: Netflix applies its smoothing on
/// every sample, about `L` times per RTT, which compounds to nearly the whole step per RTT;
/// here growth is spread over an RTT and a cut happens at most once per RTT, so the equivalent
/// per-RTT smoothing is 1.
///
/// ```
/// use std::time::Duration;
/// use tokio::time::Instant;
/// use tower_shed::limit::{Gradient2, Limit, Sample};
///
/// let mut g = Gradient2::builder().initial_limit(10).build().unwrap();
/// let s = Sample::new(Duration::from_millis(10), 10, false);
/// let l = g.update(s, Instant::now());
/// assert!(l >= 10); // steady latency: room to grow by the queue size
/// ```
#[derive(Debug, Clone)]
pub struct Gradient2 {
    shaper: Shaper,
    long: Ema,
    tolerance: f64,
    queue_size: f64,
}

/// Builds a [`Gradient2`]. See [`Gradient2::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct Gradient2Builder {
    bounds: Bounds,
    tolerance: f64,
    long_window: u32,
    queue_size: f64,
}

impl Default for Gradient2Builder {
    fn default() -> Self {
        Self {
            bounds: Bounds {
                initial: 20,
                min: 1,
                max: 200,
                smoothing: 1.0,
            },
            tolerance: 1.5,
            long_window: 600,
            queue_size: 4.0,
        }
    }
}

impl Gradient2Builder {
    bounds_knobs!();

    /// How much slower than the long-term RTT the short-term RTT may get before the limit is
    /// cut (at least 1).
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The long-term average's window, in samples (at least 10).
    pub fn long_window(mut self, samples: u32) -> Self {
        self.long_window = samples;
        self
    }

    /// How many queued requests the limit allows on top of `L · gradient` (non-negative).
    pub fn queue_size(mut self, queue: f64) -> Self {
        self.queue_size = queue;
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
        Ok(Gradient2 {
            shaper: Shaper::new(self.bounds),
            long: Ema::new(self.long_window, 10),
            tolerance: self.tolerance,
            queue_size: self.queue_size,
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
        if sample.dropped {
            return self.shaper.step(l * 0.9, &sample, now);
        }
        let short = sample.rtt.as_secs_f64().max(1e-9);
        let mut long = self.long.add(short, sample.weight);
        if long / short > 2.0 {
            long = self.long.scale(0.95);
        }
        if (sample.in_flight as f64) < l / 2.0 {
            return self.shaper.get();
        }
        let gradient = (self.tolerance * long / short).clamp(0.5, 1.0);
        self.shaper
            .step(l * gradient + self.queue_size, &sample, now)
    }

    fn min_rtt(&self) -> Option<Duration> {
        // RTTs come from the caller: an average past `Duration::MAX` saturates there.
        self.long
            .value()
            .map(|secs| Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
    }
}

/// An exponential moving average whose first `warmup` samples are averaged plainly.
#[derive(Debug, Clone)]
struct Ema {
    factor: f64,
    warmup: u32,
    count: u32,
    value: f64,
}

impl Ema {
    fn new(window: u32, warmup: u32) -> Self {
        Self {
            factor: 2.0 / (f64::from(window) + 1.0),
            warmup,
            count: 0,
            value: 0.0,
        }
    }

    /// Adds `x` standing for `weight` samples.
    fn add(&mut self, x: f64, weight: u32) -> f64 {
        let weight = weight.max(1);
        if self.count < self.warmup {
            self.count = self.count.saturating_add(weight).min(self.warmup);
            self.value += (x - self.value) * (f64::from(weight) / f64::from(self.count)).min(1.0);
        } else {
            let keep = (1.0 - self.factor).powi(weight.min(i32::MAX as u32) as i32);
            self.value = self.value * keep + x * (1.0 - keep);
        }
        self.value
    }

    fn scale(&mut self, by: f64) -> f64 {
        self.value *= by;
        self.value
    }

    fn value(&self) -> Option<f64> {
        (self.count > 0).then_some(self.value)
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
        for _ in 0..2000 {
            g.update(Sample::new(Duration::from_millis(10), 10, false), now);
        }
        assert!(g.min_rtt().unwrap() < Duration::from_secs(1));
    }

    #[test]
    fn converges_backs_off_and_recovers() {
        // 40 workers, 20 queue slots, drops beyond: the limit settles at the drop point.
        let mut g = Gradient2::builder().build().unwrap();
        let mut b = Backend::new(40.0, 20.0, Duration::from_millis(10));
        let trace = b.run(&mut g, 600);
        let tail = &trace[300..];
        assert!(tail.iter().all(|&l| (45..=66).contains(&l)), "{tail:?}");
        // Capacity halves: latency jumps and the gradient cuts the limit in the first round,
        // before any drop (the backend queue is made deep enough to hold everything).
        let before = *trace.last().unwrap();
        b.capacity = 20.0;
        b.queue = 1000.0;
        let trace = b.run(&mut g, 1);
        assert!(trace[0] < before, "{before} -> {trace:?}");
        // With drops back, the limit follows the lower capacity.
        b.queue = 20.0;
        let trace = b.run(&mut g, 600);
        let tail = &trace[300..];
        assert!(tail.iter().all(|&l| (25..=44).contains(&l)), "{tail:?}");
        // Recovers.
        b.capacity = 40.0;
        let trace = b.run(&mut g, 600);
        let tail = &trace[300..];
        assert!(tail.iter().all(|&l| (45..=66).contains(&l)), "{tail:?}");
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
