//! The adaptive timeout's knobs, their defaults and why they were chosen.

use crate::error::ConfigError;
use std::time::Duration;

/// Configuration of the adaptive per-attempt timeout.
///
/// The timeout is `clamp(quantile(q) × multiplier, floor, ceiling)` over the latency histogram,
/// raised by the consecutive-timeout backoff and limited by the anti-ratchet; see the
/// [`policy`](crate::policy) module for the mechanics.
///
/// # Defaults, and why
/// | field | default | why |
/// |---|---|---|
/// | `quantile` | 0.999 | Amazon's guidance: pick the false-timeout rate you accept (0.1 %) and time out at that percentile of the dependency's latency |
/// | `multiplier` | 1.5 | headroom above p99.9: a windowed estimate of a far tail is noisy, and a timeout *at* the quantile would cut exactly the 0.1 % you meant to keep. Must be ≥ 1, see below |
/// | `floor` | 10 ms | below this, scheduler and GC pauses on the caller, not the dependency, cause timeouts |
/// | `ceiling` | 10 s | the longest one attempt may ever wait (the Microsoft standard handler's attempt timeout); the overall deadline belongs to [`DeadlineLayer`](crate::DeadlineLayer) |
/// | `fallback` | 1 s | used until 16 latencies are known (TCP's initial RTO) |
/// | `min_samples` | 100 | samples in the window from which its own quantile is used; with fewer (a client at a few requests a second), the quantile of a running log-normal fit of the last ~32 answers, so the timeout still adapts (see the [`policy`](crate::policy) module) |
/// | `refresh` | 100 ms | how often the quantile is recomputed (a walk of the histogram); fast enough to adapt within a second, rare enough to cost nothing per request |
/// | `max_growth` | 2.0 per `growth_window` | anti-ratchet: an overloaded dependency can drag the timeout up at most 4× per second |
/// | `growth_window` | 500 ms | |
/// | `backoff_after` | 3 | consecutive timeouts (with no success between) that count as "the latency moved above the timeout" |
/// | `backoff_factor` | 2.0 | TCP doubles its RTO on each timeout |
/// | `deadline_share` | 1/3 | an attempt of a request with a deadline waits at least this share of what is left of it (see below) |
/// | `max_samples_per_sec` | 2000 | above this rate latencies are sampled (see below): 20 000 samples per 10 s window still put 20 above p99.9 |
///
/// # Why `multiplier` must be at least 1
/// Timed-out attempts are recorded at the timeout value (they are censored samples). With a
/// multiplier below one, a run of timeouts would pull the quantile down to the timeout, and the
/// next timeout below it: the timeout would ratchet down to the floor.
///
/// # Why an attempt gets a share of the deadline
/// A timeout is worth its cut only if a fresh attempt can do better than the one it abandons:
/// against a lost or hung attempt it can, against a dependency that got slower as a whole (a
/// brownout) it cannot, and every abandoned attempt that would have answered in time is lost
/// work. The quantile learns a latency step, but only as fast as the anti-ratchet lets it
/// (4× a second); meanwhile a 10× step would time out most attempts, and their retries too.
/// So an attempt of a request with a deadline is never cut before `deadline_share` of what is
/// left of the deadline, up to `ceiling` (a third: the first attempt of a 1 s request waits at
/// least 333 ms, which leaves room for two more): a hung attempt still leaves time for
/// retries, and a slow one gets its chance. Requests without a deadline follow the quantile
/// alone; 0 turns the share off.
///
/// # Sampling
/// Measuring an attempt's latency costs a clock read and a histogram update, and reporting it
/// costs a reference count. At rates where that matters the quantile does not need every
/// sample, so above `max_samples_per_sec` the policy learns from one attempt in 2ⁿ, `n` chosen
/// at each refresh from the observed rate. Which attempts are sampled follows a golden-ratio
/// sequence of the calling thread ([`damper_core::rng::thread_keep`]), so it is independent of
/// their latency and of their outcome (a counter would not be: under a periodic mix of requests
/// it could pick one kind): the sampled
/// stream has the same latency distribution and the same proportion of timeouts, and every
/// rule (quantile, censoring, consecutive-timeout backoff) runs on it unchanged. Every attempt
/// still gets the timeout, and every timeout is still counted in the metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct TimeoutConfig {
    /// The latency quantile the timeout follows, in `(0, 1]`.
    pub quantile: f64,
    /// Headroom applied to the quantile, finite and `≥ 1`.
    pub multiplier: f64,
    /// The smallest timeout ever used (`> 0`).
    pub floor: Duration,
    /// The largest timeout ever used (`≥ floor`).
    pub ceiling: Duration,
    /// The timeout used until 16 latencies are known (in `[floor, ceiling]`).
    pub fallback: Duration,
    /// Samples needed in the histogram's window before its own quantile is used (`≥ 1`);
    /// below, a log-normal fit of the latest answers is.
    pub min_samples: u64,
    /// How often the quantile is recomputed (`≥ 1 ms`).
    pub refresh: Duration,
    /// The most the timeout may grow within one `growth_window` (finite, `> 1`).
    pub max_growth: f64,
    /// The anti-ratchet window (`≥ refresh`).
    pub growth_window: Duration,
    /// Consecutive timeouts, with no success between, that trigger one backoff step (`≥ 1`).
    pub backoff_after: u32,
    /// How much one backoff step multiplies the timeout (finite, `> 1`).
    pub backoff_factor: f64,
    /// Above this many attempts per second, measure only a sample of them (`≥ 1`).
    pub max_samples_per_sec: u32,
    /// The least share of a request's remaining deadline an attempt may wait, in `[0, 1]`.
    pub deadline_share: f64,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            quantile: 0.999,
            multiplier: 1.5,
            floor: Duration::from_millis(10),
            ceiling: Duration::from_secs(10),
            fallback: Duration::from_secs(1),
            min_samples: 100,
            refresh: Duration::from_millis(100),
            max_growth: 2.0,
            growth_window: Duration::from_millis(500),
            backoff_after: 3,
            backoff_factor: 2.0,
            max_samples_per_sec: 2000,
            deadline_share: 1.0 / 3.0,
        }
    }
}

impl TimeoutConfig {
    /// Checks every field; the error names the first one out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = ConfigError::new;
        if !(self.quantile > 0.0 && self.quantile <= 1.0) {
            return Err(err("quantile", "must be in (0, 1]"));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(err("multiplier", "must be finite and at least 1"));
        }
        if self.floor.is_zero() {
            return Err(err("floor", "must be greater than zero"));
        }
        if self.ceiling < self.floor {
            return Err(err("ceiling", "must be at least `floor`"));
        }
        if self.ceiling > Duration::from_secs(86_400) {
            return Err(err("ceiling", "must be at most a day"));
        }
        if self.fallback < self.floor || self.fallback > self.ceiling {
            return Err(err("fallback", "must lie between `floor` and `ceiling`"));
        }
        if self.min_samples == 0 {
            return Err(err("min_samples", "must be at least 1"));
        }
        if self.refresh < Duration::from_millis(1) {
            return Err(err("refresh", "must be at least 1 ms"));
        }
        if !(self.max_growth.is_finite() && self.max_growth > 1.0) {
            return Err(err("max_growth", "must be finite and greater than 1"));
        }
        if self.growth_window < self.refresh {
            return Err(err("growth_window", "must be at least `refresh`"));
        }
        if self.backoff_after == 0 {
            return Err(err("backoff_after", "must be at least 1"));
        }
        if !(self.backoff_factor.is_finite() && self.backoff_factor > 1.0) {
            return Err(err("backoff_factor", "must be finite and greater than 1"));
        }
        if self.max_samples_per_sec == 0 {
            return Err(err("max_samples_per_sec", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.deadline_share) {
            return Err(err("deadline_share", "must be in [0, 1]"));
        }
        Ok(())
    }
}
