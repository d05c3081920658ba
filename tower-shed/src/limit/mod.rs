//! Limit algorithms: pure state machines that turn completed requests into a concurrency limit.
//!
//! A [`Limit`] is fed one [`Sample`] per measured request (its round-trip time, how many requests
//! were in flight when it started, and whether it was dropped) together with `now`, and answers
//! with the new limit. It reads no clock and needs no runtime, so every algorithm is unit-tested
//! against a fake clock and synthetic latencies.
//!
//! | algorithm | signal | steady state |
//! |---|---|---|
//! | [`Aimd`] | drops and a latency threshold | saw-tooth just below the point where drops start |
//! | [`Gradient2`] | batch-median RTT vs probed no-load RTT | median RTT about `tolerance` × the no-load RTT |
//! | [`Vegas`] | estimated queue `L·(1 − rtt_noload/rtt)`, batch-median RTT | `alpha..beta` requests queued |
//! | [`Fixed`] | none | the configured limit |
//!
//! # Damping shared by all algorithms
//!
//! Every algorithm clamps its limit to `[min_limit, max_limit]`, smooths each step
//! (`L' = (1 − smoothing)·L + smoothing·target`; Gradient2 smooths increases only) and cuts the
//! limit **at most once per RTT**: a
//! decrease is applied only if the sample's request started after the previous cut
//! (`now − rtt ≥ last_cut`), because requests that were already in flight during the cut cannot
//! show its effect yet. Without that rule a burst of slow completions caused by one overload
//! episode would multiply the cut once per completion and collapse the limit.
//!
//! # App-limited growth
//!
//! A limit that is not used says nothing about capacity. AIMD, Gradient2 and Vegas only grow while
//! the limit is in use: `in_flight ≥ limit / 2` when the request started, or the limit turned
//! requests away (rejected or queued them) since the previous measured request
//! ([`Sample::saturated`]). Otherwise an idle period would let the limit drift to `max_limit`
//! and a burst afterwards would flood the service. The second rule is for bursty load below
//! capacity: most requests start with few in flight, but the bursts hit the limit, and a limit
//! that a fault pushed down must be able to grow back while the latency says the backend is
//! well.

use std::fmt;
use std::time::Duration;
use tokio::time::Instant;

mod aimd;
mod fixed;
mod gradient2;
mod vegas;
mod window;

pub use aimd::{Aimd, AimdBuilder};
pub use fixed::Fixed;
pub use gradient2::{Gradient2, Gradient2Builder};
pub use vegas::{Vegas, VegasBuilder};

use crate::error::ConfigError;

/// One measured request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Time from admission to completion (queueing in the limiter's own queue excluded).
    pub rtt: Duration,
    /// Requests in flight when this one was admitted, itself included.
    pub in_flight: usize,
    /// Whether the request was dropped: it timed out or the service answered "overloaded".
    pub dropped: bool,
    /// How many requests this sample stands for (at least 1): the limiter measures one request
    /// in `sample_every`, and algorithms weigh each sample accordingly so that their per-RTT
    /// behaviour does not depend on the sampling rate.
    pub weight: u32,
    /// Whether the limit turned requests away (rejected or queued them) since the previous
    /// measured request: the limit binds, however few were in flight when this one started.
    pub saturated: bool,
}

impl Sample {
    /// A sample standing for one request.
    pub const fn new(rtt: Duration, in_flight: usize, dropped: bool) -> Self {
        Self {
            rtt,
            in_flight,
            dropped,
            weight: 1,
            saturated: false,
        }
    }

    /// The same sample, marked as taken while the limit was turning requests away.
    pub const fn with_saturated(mut self, saturated: bool) -> Self {
        self.saturated = saturated;
        self
    }

    /// Whether the limit was in use for this sample: `in_flight ≥ limit / 2`, or
    /// [`saturated`](Self::saturated).
    pub(crate) fn in_use(&self, limit: f64) -> bool {
        self.saturated || self.in_flight as f64 * 2.0 >= limit
    }

    /// The same sample, standing for `weight` requests (at least 1).
    pub const fn with_weight(mut self, weight: u32) -> Self {
        self.weight = if weight == 0 { 1 } else { weight };
        self
    }

    pub(crate) fn weight_f64(&self) -> f64 {
        f64::from(self.weight.max(1))
    }
}

/// A concurrency-limit algorithm.
///
/// Implementations are plain state machines: they are given `now` and never read a clock.
pub trait Limit: Send + fmt::Debug {
    /// The current limit (at least 1).
    fn limit(&self) -> usize;

    /// Feeds one sample observed at `now`; returns the new limit.
    fn update(&mut self, sample: Sample, now: Instant) -> usize;

    /// The algorithm's current estimate of the no-load round-trip time, if it keeps one.
    fn min_rtt(&self) -> Option<Duration> {
        None
    }
}

impl<L: Limit + ?Sized> Limit for Box<L> {
    fn limit(&self) -> usize {
        (**self).limit()
    }
    fn update(&mut self, sample: Sample, now: Instant) -> usize {
        (**self).update(sample, now)
    }
    fn min_rtt(&self) -> Option<Duration> {
        (**self).min_rtt()
    }
}

fn _obj_safe(_: Box<dyn Limit>) {}

/// Bounds and damping shared by every algorithm's builder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bounds {
    pub(crate) initial: usize,
    pub(crate) min: usize,
    pub(crate) max: usize,
    pub(crate) smoothing: f64,
}

impl Bounds {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.min == 0 {
            return Err(ConfigError::new("min_limit", "must be at least 1"));
        }
        if self.max < self.min {
            return Err(ConfigError::new("max_limit", "must be at least min_limit"));
        }
        if self.max > u32::MAX as usize {
            return Err(ConfigError::new("max_limit", "must fit in 32 bits"));
        }
        if self.initial < self.min || self.initial > self.max {
            return Err(ConfigError::new(
                "initial_limit",
                "must be within [min_limit, max_limit]",
            ));
        }
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return Err(ConfigError::new("smoothing", "must be in (0, 1]"));
        }
        Ok(())
    }
}

/// Generates the shared builder knobs (`initial_limit`, `min_limit`, `max_limit`, `smoothing`).
macro_rules! bounds_knobs {
    () => {
        /// The limit to start from.
        pub fn initial_limit(mut self, limit: usize) -> Self {
            self.bounds.initial = limit;
            self
        }

        /// The limit never goes below this (at least 1).
        pub fn min_limit(mut self, limit: usize) -> Self {
            self.bounds.min = limit;
            self
        }

        /// The limit never goes above this.
        pub fn max_limit(mut self, limit: usize) -> Self {
            self.bounds.max = limit;
            self
        }

        /// How much of each step is taken, in `(0, 1]`: `L' = (1 − s)·L + s·target`.
        pub fn smoothing(mut self, smoothing: f64) -> Self {
            self.bounds.smoothing = smoothing;
            self
        }
    };
}
pub(crate) use bounds_knobs;

/// The damped limit value: clamping, smoothing and one cut per RTT.
#[derive(Debug, Clone)]
pub(crate) struct Shaper {
    value: f64,
    min: f64,
    max: f64,
    smoothing: f64,
    last_cut: Option<Instant>,
}

impl Shaper {
    pub(crate) fn new(b: Bounds) -> Self {
        Self {
            value: b.initial as f64,
            min: b.min as f64,
            max: b.max as f64,
            smoothing: b.smoothing,
            last_cut: None,
        }
    }

    /// The limit as a float (for the algorithms' arithmetic).
    pub(crate) fn value(&self) -> f64 {
        self.value
    }

    /// Sets the limit outright (clamped), bypassing smoothing: for deliberate pins such as a
    /// probe. Returns the integer limit.
    pub(crate) fn set(&mut self, value: f64) -> usize {
        if value.is_finite() {
            self.value = value.clamp(self.min, self.max);
        }
        self.get()
    }

    /// The limit as an integer.
    pub(crate) fn get(&self) -> usize {
        // `value` is always within [min, max], both integers ≥ 1.
        self.value.floor() as usize
    }

    /// Moves the limit toward `target`, smoothed. An increase is spread over the ~`L` requests
    /// of one RTT (a sample takes `weight/L` of it); a decrease is applied whole, but only if no
    /// cut happened within the sample's `rtt`. Returns the integer limit.
    pub(crate) fn step(&mut self, target: f64, sample: &Sample, now: Instant) -> usize {
        self.step_smoothed(target, sample, now, true)
    }

    /// A step taken whole, without smoothing.
    pub(crate) fn step_whole(&mut self, target: f64, sample: &Sample, now: Instant) -> usize {
        let smoothing = std::mem::replace(&mut self.smoothing, 1.0);
        let l = self.step_smoothed(target, sample, now, false);
        self.smoothing = smoothing;
        l
    }

    /// [`Shaper::step`], with the smoothing applied to increases only when `smooth_cuts` is
    /// false: a cut then takes the whole step.
    pub(crate) fn step_smoothed(
        &mut self,
        target: f64,
        sample: &Sample,
        now: Instant,
        smooth_cuts: bool,
    ) -> usize {
        let rtt = sample.rtt;
        let target = if target.is_finite() {
            target
        } else {
            self.value
        };
        let mut next = if target < self.value && !smooth_cuts {
            target
        } else {
            (1.0 - self.smoothing) * self.value + self.smoothing * target
        };
        if next > self.value {
            // About `L` requests complete per RTT: each takes 1/L of the step (a sample standing
            // for `w` requests takes w/L), so the limit grows by one step per RTT whatever the
            // request or sampling rate.
            let share = (sample.weight_f64() / self.value.max(1.0)).min(1.0);
            next = self.value + (next - self.value) * share;
        }
        let next = next.clamp(self.min, self.max);
        if next < self.value {
            if let Some(cut) = self.last_cut
                && now.saturating_duration_since(cut) < rtt
            {
                return self.get();
            }
            self.last_cut = Some(now);
        }
        self.value = next;
        self.get()
    }
}

#[cfg(test)]
pub(crate) mod sim;

#[cfg(test)]
mod noise;

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rtt: Duration) -> Sample {
        Sample::new(rtt, 1, false)
    }

    #[test]
    fn weighted_samples_grow_as_much_as_the_requests_they_stand_for() {
        let t0 = Instant::now();
        let mut one = Shaper::new(bounds());
        let mut weighted = Shaper::new(bounds());
        // Additive increase: +1 per RTT's worth of requests.
        for _ in 0..8 {
            one.step(one.value() + 1.0, &at(Duration::ZERO), t0);
        }
        weighted.step(11.0, &at(Duration::ZERO).with_weight(8), t0);
        assert!((weighted.value() - 10.8).abs() < 1e-9);
        assert!(
            (one.value() - weighted.value()).abs() < 0.05,
            "{}",
            one.value()
        );
    }

    fn bounds() -> Bounds {
        Bounds {
            initial: 10,
            min: 2,
            max: 50,
            smoothing: 1.0,
        }
    }

    #[test]
    fn shaper_cuts_once_per_rtt() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(100);
        let mut s = Shaper::new(bounds());
        assert_eq!(s.step(5.0, &at(rtt), t0), 5);
        // A second cut within the same RTT is ignored, growth is not.
        assert_eq!(s.step(3.0, &at(rtt), t0 + Duration::from_millis(50)), 5);
        // Growth is spread over one RTT's worth of samples: 5 + (9 − 5) / 5.
        assert_eq!(s.step(9.0, &at(rtt), t0 + Duration::from_millis(60)), 5);
        assert_eq!(s.step(15.0, &at(rtt), t0 + Duration::from_millis(60)), 7);
        // After an RTT the next cut applies.
        assert_eq!(s.step(4.0, &at(rtt), t0 + Duration::from_millis(100)), 4);
    }

    #[test]
    fn shaper_clamps_and_smooths() {
        let t0 = Instant::now();
        let mut s = Shaper::new(Bounds {
            smoothing: 0.5,
            ..bounds()
        });
        // (10 + 1000) / 2 = 505, spread over 10 samples: 10 + 49.5.
        assert_eq!(s.step(1000.0, &at(Duration::ZERO), t0), 50);
        assert_eq!(s.step(10.0, &at(Duration::ZERO), t0), 30);
        let mut s = Shaper::new(bounds());
        assert_eq!(s.step(-5.0, &at(Duration::ZERO), t0), 2);
        assert_eq!(s.step(f64::NAN, &at(Duration::ZERO), t0), 2);
        assert_eq!(s.step(1e12, &at(Duration::ZERO), t0), 50);
    }

    #[test]
    fn shaper_can_take_cuts_whole_and_smooth_growth_only() {
        let t0 = Instant::now();
        let mut s = Shaper::new(Bounds {
            smoothing: 0.5,
            ..bounds()
        });
        let w = |rtt| at(rtt).with_weight(100);
        // A cut to 4 is taken whole; the same cut smoothed would stop at 7.
        assert_eq!(s.step_smoothed(4.0, &w(Duration::ZERO), t0, false), 4);
        // Growth is still smoothed: half of the way from 4 to 20.
        assert_eq!(s.step_smoothed(20.0, &w(Duration::ZERO), t0, false), 12);
        let mut s = Shaper::new(Bounds {
            smoothing: 0.5,
            ..bounds()
        });
        assert_eq!(s.step(4.0, &w(Duration::ZERO), t0), 7);
    }

    #[test]
    fn bounds_are_validated_by_field() {
        let bad = |b: Bounds| b.validate().unwrap_err().field();
        assert_eq!(bad(Bounds { min: 0, ..bounds() }), "min_limit");
        assert_eq!(bad(Bounds { max: 1, ..bounds() }), "max_limit");
        assert_eq!(
            bad(Bounds {
                initial: 60,
                ..bounds()
            }),
            "initial_limit"
        );
        assert_eq!(
            bad(Bounds {
                smoothing: 0.0,
                ..bounds()
            }),
            "smoothing"
        );
        assert!(bounds().validate().is_ok());
    }
}
