//! The adaptive timeout's decision algorithm: time in, decision out, no runtime needed.
//!
//! [`AdaptivePolicy`] is shared by every clone of a layer and its services. All its state is
//! atomics; its methods take `&self` and the current `now`, so it can be driven from a unit test
//! with `now + Duration::from_millis(n)` and from many threads at once.
//!
//! # Mechanics
//! The timeout for an attempt is the *effective* timeout, `max(base, backoff)`, cut to the
//! request's remaining deadline:
//!
//! - **base**: `clamp(quantile(q) × multiplier, floor, ceiling)` over the latency histogram;
//!   while the window holds fewer than `min_samples` latencies, over a running log-normal fit
//!   of the latest answers (`fallback` until 16 are known). It is recomputed at most once per
//!   `refresh` by whichever caller first notices the refresh is due (one compare-and-swap;
//!   the others keep reading the previous value). No request walks the histogram. The quantile is the larger of the whole
//!   window's and the current sub-window's (once that holds `min_samples`): the window alone
//!   would take most of its length to learn a step up; the newest sub-window sees it at once.
//!   Down-steps are learned at the window's pace, which errs on the side of fewer timeouts.
//! - **censoring**: an attempt that times out is recorded at the timeout value. It is a *lower
//!   bound* on the latency, not a lost sample; dropping it would make a latency step above the
//!   timeout invisible. With `multiplier > 1`, enough censored samples lift the quantile, and the
//!   timeout with it. While most attempts are answered, their lift is capped at one
//!   `multiplier` step above the answered attempts' quantile, so a hung replica among healthy
//!   ones does not ratchet everyone's timeout up; they are kept apart in a second histogram.
//! - **backoff**: `backoff_after` consecutive timeouts (no success in between) multiply the
//!   effective timeout by `backoff_factor`, as TCP doubles its RTO. Only attempts that started
//!   under the current backoff step count (each attempt carries the step's *generation*), so a
//!   burst of concurrent timeouts is one step, not a hundred: the timeout can at most double once
//!   per timeout period. The backoff is dropped once the base has caught up with it, or once
//!   attempts succeed again and two backed-off periods pass with no timeout.
//! - **anti-ratchet**: within one `growth_window` the effective timeout never exceeds
//!   `max_growth ×` its value when the window began. Decreases are immediate.
//! - **ceiling and floor** bound everything; the request's deadline bounds each attempt.
//! - **sampling**: above `max_samples_per_sec`, the policy learns from a uniform sample of the
//!   attempts only: one in 2ⁿ, picked by a per-thread golden-ratio sequence
//!   ([`Attempt::sampled`]). Every rule above then runs on the thinned stream, which has the
//!   same latency distribution and the same proportion of timeouts; see
//!   [`TimeoutConfig`](crate::TimeoutConfig#sampling). The refresh is checked by the attempts
//!   that read the clock: the sampled ones and those with a deadline (the service reads no
//!   clock for the others), and by [`AdaptivePolicy::current`]. Above the sampling rate that is
//!   still about `max_samples_per_sec` checks a second; after a sudden drop in traffic the
//!   first sampled attempt finds the rate fallen and samples every attempt again.

use crate::config::TimeoutConfig;
use crate::error::ConfigError;
use damper_core::clock::{Origin, nanos};
use damper_core::deadline::Deadline;
use damper_core::histogram::LatencyHistogram;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::time::Instant;

/// What to do with a request, decided by [`AdaptivePolicy::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The request's deadline has already passed: fail it with
    /// [`DeadlineExceeded`](crate::error::DeadlineExceeded) without calling the inner service.
    Expired,
    /// Send the attempt with this timeout.
    Attempt(Attempt),
}

/// One attempt's timeout, and what the policy needs to learn from its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    timeout: Duration,
    adaptive: Duration,
    generation: u64,
    limited_by_deadline: bool,
    refreshed: bool,
    sampled: bool,
}

impl Attempt {
    /// A sampled attempt of `timeout`, not cut by a deadline, started in backoff generation
    /// `generation`: what [`AdaptivePolicy::on_timeout`] needs of one whose timer fired.
    pub(crate) const fn timed_out(timeout: Duration, generation: u64) -> Self {
        Self {
            timeout,
            adaptive: timeout,
            generation,
            limited_by_deadline: false,
            refreshed: false,
            sampled: true,
        }
    }

    /// The timeout to apply to this attempt: the adaptive timeout, or the request's remaining
    /// deadline if that is shorter.
    pub const fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The adaptive timeout, before the deadline cut.
    pub const fn adaptive(&self) -> Duration {
        self.adaptive
    }

    /// Whether the request's deadline, not the adaptive timeout, bounds this attempt. If its
    /// timer fires, the request failed with
    /// [`DeadlineExceeded`](crate::error::DeadlineExceeded), and the policy learns nothing.
    pub const fn limited_by_deadline(&self) -> bool {
        self.limited_by_deadline
    }

    /// The backoff generation the attempt started in.
    pub const fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether this decision recomputed the base timeout (a good moment to publish a gauge).
    pub const fn refreshed(&self) -> bool {
        self.refreshed
    }

    /// Whether the policy learns from this attempt. Only sampled attempts are to be reported
    /// with [`AdaptivePolicy::on_success`] and [`AdaptivePolicy::on_timeout`]; the others need
    /// no clock read and no report.
    pub const fn sampled(&self) -> bool {
        self.sampled
    }
}

/// A point-in-time view of the policy, for dashboards and the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyState {
    /// The quantile-derived timeout.
    pub base: Duration,
    /// The backed-off timeout, while a backoff is in force.
    pub backoff: Option<Duration>,
    /// The timeout the next attempt without a deadline would get: `max(base, backoff)`.
    pub effective: Duration,
    /// How many backoff steps have been taken since the policy was built.
    pub generation: u64,
}

/// The adaptive timeout policy. See the [module docs](self).
pub struct AdaptivePolicy {
    cfg: TimeoutConfig,
    histogram: Arc<LatencyHistogram>,
    /// The censored samples alone (attempts the timeout cut), over the same window: what the
    /// shared histogram holds less these is what answered attempts showed.
    censored: LatencyHistogram,
    /// The running log-normal fit of answered latencies, kept while the window holds fewer
    /// than `min_samples` (see `estimate`).
    fit: Fit,
    record: bool,
    origin: Origin,
    floor: u64,
    ceiling: u64,
    fallback: u64,
    refresh: u64,
    growth_window: u64,
    /// Nanoseconds since `origin` at which the base is next recomputed.
    next_refresh: AtomicU64,
    /// The quantile-derived timeout, nanoseconds.
    base: AtomicU64,
    /// The backed-off timeout, nanoseconds (0 = none).
    backoff: AtomicU64,
    generation: AtomicU64,
    /// Consecutive timeouts in the current generation.
    run: AtomicU64,
    /// Nanoseconds since `origin` of the latest timeout.
    last_timeout: AtomicU64,
    /// Whether an attempt succeeded since the latest timeout.
    succeeded: AtomicBool,
    /// Attempts are sampled one in `2^sample_shift`.
    sample_shift: AtomicU64,
    /// Sampled attempts since the last refresh.
    sampled: AtomicU64,
    /// Nanoseconds since `origin` of the last refresh.
    last_refresh: AtomicU64,
    growth_epoch: AtomicU64,
    /// The most the effective timeout may reach in the current growth window.
    growth_cap: AtomicU64,
}

impl fmt::Debug for AdaptivePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptivePolicy")
            .field("config", &self.cfg)
            .field("record", &self.record)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// The fewest latencies from which the policy fits its quantile instead of using the
/// fallback: with fewer, a log-normal's spread is mostly noise.
pub const FIT_SAMPLES: u64 = 16;

/// The answers a running fit weighs at most: beyond this many it forgets exponentially, each
/// answer weighing `1 / FIT_MEMORY` (TCP's smoothed RTT weighs one in eight; a far quantile
/// needs a steadier spread).
pub const FIT_MEMORY: f64 = 32.0;

/// A running log-normal fit (mean and variance of log-latency, in the manner of TCP's SRTT and
/// RTTVAR): exact averages over the first [`FIT_MEMORY`] answers, then an exponential one.
/// Kept only while the window is short of samples, so that a client at a few requests a
/// second, whose 10 s window never holds `min_samples`, still gets a timeout fitted to its
/// dependency. Updates are plain loads and stores: at those rates they seldom race, and a lost
/// update only costs the fit one sample.
#[derive(Debug)]
struct Fit {
    /// Whether answers are being fitted (the window is short of samples).
    on: AtomicBool,
    n: AtomicU64,
    mean: AtomicU64,
    var: AtomicU64,
}

impl Fit {
    /// A fit that is on: a new policy's window is empty.
    fn new() -> Self {
        Self {
            on: AtomicBool::new(true),
            n: AtomicU64::new(0),
            mean: AtomicU64::new(0),
            var: AtomicU64::new(0),
        }
    }

    fn reset(&self, on: bool) {
        self.n.store(0, Relaxed);
        self.on.store(on, Relaxed);
    }

    fn add(&self, latency: Duration) {
        let x = (nanos(latency).max(1) as f64).ln();
        let n = self.n.load(Relaxed) + 1;
        let (mean, var) = if n == 1 {
            (x, 0.0)
        } else {
            let g = 1.0 / (n as f64).min(FIT_MEMORY);
            let mean = f64::from_bits(self.mean.load(Relaxed));
            let var = f64::from_bits(self.var.load(Relaxed));
            let d = x - mean;
            // West's weighted update: exact for the first answers (g = 1/n, the variance with
            // divisor n), exponential after.
            (mean + g * d, (1.0 - g) * (var + g * d * d))
        };
        self.mean.store(mean.to_bits(), Relaxed);
        self.var.store(var.to_bits(), Relaxed);
        self.n.store(n, Relaxed);
    }

    /// The `q` quantile of the fitted log-normal, its spread widened by one standard error
    /// (about 1/√(2(n−1)) of itself from n samples) so that a draw of close answers does not
    /// set a timeout that cuts the next slow one; `None` before [`FIT_SAMPLES`] answers.
    fn quantile(&self, q: f64) -> Option<Duration> {
        let n = self.n.load(Relaxed);
        if n < FIT_SAMPLES {
            return None;
        }
        let eff = (n as f64).min(FIT_MEMORY);
        let mean = f64::from_bits(self.mean.load(Relaxed));
        let var = f64::from_bits(self.var.load(Relaxed)) * eff / (eff - 1.0);
        let sd = var.max(0.0).sqrt() * (1.0 + 1.0 / (2.0 * (eff - 1.0)).sqrt());
        Some(damper_core::histogram::log_normal_quantile(mean, sd, q))
    }
}

fn scale(n: u64, by: f64) -> u64 {
    // `as` saturates on overflow.
    (n as f64 * by) as u64
}

impl AdaptivePolicy {
    /// A policy learning from (and, if `record`, recording into) `histogram`, starting at `now`.
    pub fn new(
        config: TimeoutConfig,
        histogram: Arc<LatencyHistogram>,
        record: bool,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let fallback = nanos(config.fallback);
        let ceiling = nanos(config.ceiling);
        Ok(Self {
            fit: Fit::new(),
            censored: LatencyHistogram::with_config(histogram.config(), now)
                .map_err(|_| ConfigError::new("histogram", "invalid histogram window"))?,
            histogram,
            record,
            origin: Origin::new(now),
            floor: nanos(config.floor),
            ceiling,
            fallback,
            refresh: nanos(config.refresh),
            growth_window: nanos(config.growth_window),
            next_refresh: AtomicU64::new(0),
            base: AtomicU64::new(fallback),
            backoff: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            run: AtomicU64::new(0),
            last_timeout: AtomicU64::new(0),
            succeeded: AtomicBool::new(false),
            sample_shift: AtomicU64::new(0),
            sampled: AtomicU64::new(0),
            last_refresh: AtomicU64::new(0),
            growth_epoch: AtomicU64::new(0),
            growth_cap: AtomicU64::new(scale(fallback, config.max_growth).min(ceiling)),
            cfg: config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TimeoutConfig {
        &self.cfg
    }

    /// The histogram the policy reads.
    pub fn histogram(&self) -> &Arc<LatencyHistogram> {
        &self.histogram
    }

    #[inline]
    fn since(&self, now: Instant) -> u64 {
        self.origin.nanos(now)
    }

    #[inline]
    fn effective(&self) -> u64 {
        self.base.load(Relaxed).max(self.backoff.load(Relaxed))
    }

    /// Decides the timeout of an attempt sent at `now` for a request with `deadline`.
    #[inline]
    pub fn decide(&self, now: Instant, deadline: Option<Deadline>) -> Decision {
        self.decide_drawn(now, deadline, self.draw_sample())
    }

    /// [`decide`](Self::decide), with the sampling draw already made.
    #[inline]
    pub(crate) fn decide_drawn(
        &self,
        now: Instant,
        deadline: Option<Deadline>,
        sampled: bool,
    ) -> Decision {
        let refreshed = self.refresh(self.since(now), now);
        let adaptive = Duration::from_nanos(self.effective());
        let generation = self.generation.load(Relaxed);
        let (timeout, limited_by_deadline) = match deadline {
            Some(d) => {
                let remaining = d.remaining(now);
                if remaining.is_zero() {
                    return Decision::Expired;
                }
                // Never cut before the attempt had its share of what is left (see
                // `TimeoutConfig`'s "Why an attempt gets a share of the deadline").
                let share = remaining
                    .mul_f64(self.cfg.deadline_share)
                    .min(self.cfg.ceiling);
                let wait = adaptive.max(share);
                if remaining <= wait {
                    (remaining, true)
                } else {
                    (wait, false)
                }
            }
            None => (adaptive, false),
        };
        Decision::Attempt(Attempt {
            timeout,
            adaptive,
            generation,
            limited_by_deadline,
            refreshed,
            sampled,
        })
    }

    /// The attempt of a request without a deadline that [`draw_sample`](Self::draw_sample) left
    /// out: it needs no `now` (its latency is not measured), so the service does not read the
    /// clock for it, and it does not check whether a refresh is due.
    #[inline]
    pub(crate) fn unsampled(&self) -> Attempt {
        let adaptive = Duration::from_nanos(self.effective());
        Attempt {
            timeout: adaptive,
            adaptive,
            generation: self.generation.load(Relaxed),
            limited_by_deadline: false,
            refreshed: false,
            sampled: false,
        }
    }

    /// Whether the next attempt is measured: always below the sampling rate, else one in
    /// `2^shift`, picked by the calling thread's sampling sequence (so independent of the
    /// attempt's latency and outcome). Counts the attempts it keeps.
    #[inline]
    pub(crate) fn draw_sample(&self) -> bool {
        // The shift is at most 40 (see `resample`).
        let sampled = damper_core::rng::thread_keep(self.sample_shift.load(Relaxed) as u32);
        if sampled {
            self.sampled.fetch_add(1, Relaxed);
        }
        sampled
    }

    /// The instant the policy counts from.
    pub(crate) fn origin(&self) -> Instant {
        self.origin.instant()
    }

    /// The timeout an attempt sent at `now` without a deadline would get.
    pub fn current(&self, now: Instant) -> Duration {
        self.refresh(self.since(now), now);
        Duration::from_nanos(self.effective())
    }

    /// A view of the state, without refreshing it.
    pub fn state(&self) -> PolicyState {
        let backoff = self.backoff.load(Relaxed);
        PolicyState {
            base: Duration::from_nanos(self.base.load(Relaxed)),
            backoff: (backoff != 0).then(|| Duration::from_nanos(backoff)),
            effective: Duration::from_nanos(self.effective()),
            generation: self.generation.load(Relaxed),
        }
    }

    /// A sampled attempt completed successfully after `latency`, at `now`.
    pub fn on_success(&self, latency: Duration, now: Instant) {
        if self.record {
            self.histogram.record(latency, now);
        }
        if self.fit.on.load(Relaxed) {
            self.fit.add(latency);
        }
        // Read first: no write to a shared line in the steady state.
        if self.run.load(Relaxed) != 0 {
            self.run.store(0, Relaxed);
        }
        if !self.succeeded.load(Relaxed) {
            self.succeeded.store(true, Relaxed);
        }
    }

    /// A sampled `attempt` timed out at `now` (its adaptive timeout, not the deadline, fired).
    /// Records the censored sample and counts towards a backoff step; returns the new effective
    /// timeout if this call took a step that raised it.
    pub fn on_timeout(&self, attempt: &Attempt, now: Instant) -> Option<Duration> {
        if attempt.limited_by_deadline {
            // The deadline cut the attempt short: it says nothing about the dependency.
            return None;
        }
        let t = self.since(now);
        self.last_timeout.fetch_max(t, Relaxed);
        self.succeeded.store(false, Relaxed);
        self.refresh(t, now);
        if self.record {
            self.histogram.record(attempt.timeout, now);
        }
        self.censored.record(attempt.timeout, now);
        if self.generation.load(Relaxed) != attempt.generation {
            return None;
        }
        let run = self.run.fetch_add(1, Relaxed) + 1;
        if run < u64::from(self.cfg.backoff_after)
            || self
                .generation
                .compare_exchange(attempt.generation, attempt.generation + 1, Relaxed, Relaxed)
                .is_err()
        {
            return None;
        }
        self.run.store(0, Relaxed);
        let cur = self.effective();
        let cap = self.growth_cap.load(Relaxed).max(cur).min(self.ceiling);
        let next = scale(cur, self.cfg.backoff_factor).min(cap);
        if next <= cur {
            return None;
        }
        self.backoff.fetch_max(next, Relaxed);
        Some(Duration::from_nanos(next))
    }

    /// The quantile the base follows, before the multiplier, or `None` while the window holds
    /// fewer than [`FIT_SAMPLES`] latencies (the fallback applies).
    ///
    /// - With `min_samples` or more: the window's quantile, or the current sub-window's if
    ///   larger and it holds `min_samples` itself (quick up, slow down).
    /// - With fewer: the quantile of a running log-normal fit of the latest answers (at least
    ///   [`FIT_SAMPLES`] of them, up to about [`FIT_MEMORY`]), or the window's largest answer
    ///   if larger. A few dozen samples cannot show a p99.9, but they pin down a median and a
    ///   spread, which is how a client at 2 rps still gets a timeout that fits its dependency
    ///   within seconds.
    /// - Censored samples (attempts the timeout cut) may lift it by at most one `multiplier`
    ///   step above what the answered attempts alone show, unless they are most of the
    ///   current sub-window's attempts. A latency step cuts most attempts, so the censored
    ///   samples and the backoff lift the timeout as before; a hung replica among healthy
    ///   ones cuts a few, and those would otherwise ratchet everyone's timeout up to the
    ///   ceiling (each censored sample recorded at a longer timeout than the last). The
    ///   price: a slow minority beyond the timeout (a few percent of requests at 5× the
    ///   median) is not learned by censoring; a request's deadline share still gives it
    ///   time.
    fn estimate(&self, now: Instant) -> Option<Duration> {
        let q = self.cfg.quantile;
        let min = self.cfg.min_samples;
        let all = self.histogram.snapshot(now);
        let recent = self.histogram.snapshot_recent(now, 1);
        // The censored histogram is read only when it holds something (counting allocates
        // nothing; a snapshot does).
        let cut = (self.censored.count(now) > 0).then(|| {
            (
                self.censored.snapshot(now),
                self.censored.snapshot_recent(now, 1),
            )
        });
        // Most recent attempts cut: the latency moved (the answered ones in the window are of
        // the old regime); the censored samples may lift the timeout. Otherwise their lift is
        // capped.
        let moved = cut
            .as_ref()
            .is_some_and(|(_, recent_cut)| recent_cut.count() * 2 > recent.count());
        let few = all.count() < min;
        if few != self.fit.on.load(Relaxed) {
            // Entering few-sample mode starts a fresh fit from the next answers.
            self.fit.reset(few);
        }
        if few {
            let fit = self.fit.quantile(q);
            let max = match &cut {
                Some((c, _)) if !moved => all.minus(c).max(),
                _ => all.max(),
            };
            return if fit.is_some() || all.count() >= FIT_SAMPLES {
                fit.max(max)
            } else {
                None
            };
        }
        let window = |w: &damper_core::histogram::Snapshot,
                      r: &damper_core::histogram::Snapshot| {
            let q_w = w.quantile(q);
            if r.count() >= min {
                q_w.max(r.quantile(q))
            } else {
                q_w
            }
        };
        let estimate = window(&all, &recent)?;
        let Some((c, recent_cut)) = cut.filter(|_| !moved) else {
            return Some(estimate);
        };
        let answered = all.minus(&c);
        if answered.count() < min {
            return Some(estimate);
        }
        let a = window(&answered, &recent.minus(&recent_cut));
        Some(a.map_or(estimate, |a| estimate.min(a.mul_f64(self.cfg.multiplier))))
    }

    /// Picks the sampling shift from the rate observed since the last refresh. Called by the
    /// refresh winner only.
    fn resample(&self, t: u64) {
        let elapsed = t.saturating_sub(self.last_refresh.swap(t, Relaxed));
        let sampled = self.sampled.swap(0, Relaxed);
        if elapsed == 0 {
            return;
        }
        let shift = self.sample_shift.load(Relaxed);
        let rate = sampled as f64 * (1u64 << shift) as f64 * 1e9 / elapsed as f64;
        let ratio = rate / f64::from(self.cfg.max_samples_per_sec);
        let want = if ratio <= 1.0 {
            0
        } else {
            (ratio.log2().ceil() as u64).min(40)
        };
        if want != shift {
            self.sample_shift.store(want, Relaxed);
        }
    }

    /// Recomputes the base if a refresh is due at `now` (`t` after the origin); returns whether
    /// this call did it.
    #[inline]
    fn refresh(&self, t: u64, now: Instant) -> bool {
        let due = self.next_refresh.load(Relaxed);
        t >= due && self.refresh_slow(t, due, now)
    }

    #[cold]
    #[inline(never)]
    fn refresh_slow(&self, t: u64, due: u64, now: Instant) -> bool {
        // Refresh again after `refresh`, and always at the next growth-window boundary, so the
        // window rolls over before anything else happens in it.
        let epoch = t / self.growth_window;
        let boundary = epoch.saturating_add(1).saturating_mul(self.growth_window);
        let next = t.saturating_add(self.refresh).min(boundary);
        if self
            .next_refresh
            .compare_exchange(due, next, Relaxed, Relaxed)
            .is_err()
        {
            return false;
        }
        self.resample(t);
        if epoch != self.growth_epoch.load(Relaxed) {
            self.growth_epoch.store(epoch, Relaxed);
            let cap = scale(self.effective(), self.cfg.max_growth).min(self.ceiling);
            self.growth_cap.store(cap, Relaxed);
        }
        let cap = self.growth_cap.load(Relaxed);

        let target = self.estimate(now).map_or(self.fallback, |q| {
            scale(nanos(q), self.cfg.multiplier).clamp(self.floor, self.ceiling)
        });
        let prev = self.base.load(Relaxed);
        let base = if target > prev {
            target.min(cap).max(prev)
        } else {
            target
        };
        self.base.store(base, Relaxed);

        let backoff = self.backoff.load(Relaxed);
        if backoff != 0 {
            // Attempts succeed again, and none timed out for two backed-off periods: those sent
            // right after the step have had time to finish. (No traffic is no evidence.)
            let quiet = self.succeeded.load(Relaxed)
                && t.saturating_sub(self.last_timeout.load(Relaxed)) >= backoff.saturating_mul(2);
            if (base >= backoff || quiet)
                && self
                    .backoff
                    .compare_exchange(backoff, 0, Relaxed, Relaxed)
                    .is_ok()
            {
                tracing::debug!(
                    base = ?Duration::from_nanos(base),
                    "adaptive timeout backoff cleared"
                );
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy(cfg: TimeoutConfig, now: Instant) -> AdaptivePolicy {
        AdaptivePolicy::new(cfg, Arc::new(LatencyHistogram::new(now)), true, now).unwrap()
    }

    fn attempt(p: &AdaptivePolicy, now: Instant) -> Attempt {
        match p.decide(now, None) {
            Decision::Attempt(a) => a,
            Decision::Expired => panic!("no deadline, cannot expire"),
        }
    }

    fn close(a: Duration, b: Duration) -> bool {
        // Histogram buckets are within 1.6 % of the value.
        a.abs_diff(b).as_secs_f64() <= b.as_secs_f64() * 0.03
    }

    #[test]
    fn default_config_is_valid() {
        TimeoutConfig::default().validate().unwrap();
    }

    #[test]
    fn fallback_until_fit_samples() {
        let t0 = Instant::now();
        let p = policy(TimeoutConfig::default(), t0);
        for _ in 0..FIT_SAMPLES - 1 {
            p.on_success(50 * MS, t0);
        }
        assert_eq!(p.current(t0), Duration::from_secs(1));
        p.on_success(50 * MS, t0);
        // Not yet refreshed.
        assert_eq!(p.current(t0 + 50 * MS), Duration::from_secs(1));
        // Equal samples: a fit with no spread, the samples' own value, × 1.5.
        let t = p.current(t0 + 100 * MS);
        assert!(close(t, 75 * MS), "{t:?}");
    }

    #[test]
    fn adapts_from_the_samples_of_a_client_at_two_rps() {
        // Log-normal latencies, median 10 ms and p99 50 ms, two a second: the 10 s window never
        // holds `min_samples` (100), yet the fitted p99.9 (about 84 ms) × 1.5 is within 2× of
        // the target that 100 samples would give, within 10 s.
        let t0 = Instant::now();
        let p = policy(TimeoutConfig::default(), t0);
        let sigma = 5f64.ln() / 2.326_348;
        let target = 1.5 * 10.0 * (sigma * 3.090_232).exp();
        let mut rng = damper_core::rng::SplitMix64::new(5);
        let mut at_10s = None;
        for i in 0..120u64 {
            let now = t0 + Duration::from_millis(500 * i);
            // Box-Muller from two uniforms.
            use damper_core::rng::Random;
            let (u, v) = (rng.next_f64().max(1e-12), rng.next_f64());
            let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
            p.on_success(Duration::from_secs_f64(0.010 * (sigma * z).exp()), now);
            let t = p.current(now + 100 * MS).as_secs_f64() * 1e3;
            if i == 20 {
                at_10s = Some(t);
            }
            if i >= 20 {
                assert!(
                    t > target / 2.0 && t < target * 2.0,
                    "{t} ms at {i}, target {target}"
                );
            }
        }
        assert!(at_10s.unwrap() < 1000.0 / 4.0, "still near the fallback");
    }

    #[test]
    fn a_few_hung_attempts_among_answered_ones_do_not_ratchet_the_timeout() {
        // 1,000 attempts a second of 20 ms; one in twenty never answers (a hung replica under
        // a balancer) and is cut by the timeout, recorded at the timeout. Capped at one
        // multiplier step above the answered attempts, the timeout stays near 45 ms instead of
        // climbing (each cut recorded at a longer timeout than the last) to the ceiling.
        let t0 = Instant::now();
        let p = policy(TimeoutConfig::default(), t0);
        let mut now = t0;
        for i in 0..30_000u64 {
            now += MS;
            let a = attempt(&p, now);
            if i % 20 == 0 {
                p.on_timeout(&a, now + a.timeout());
            } else {
                p.on_success(20 * MS, now);
            }
        }
        let t = p.current(now);
        assert!(t <= 50 * MS, "{t:?}");
        // Every attempt cut (the latency moved above the timeout): the censored samples lift
        // it, as before.
        for _ in 0..200 {
            let a = attempt(&p, now);
            now += a.timeout();
            p.on_timeout(&a, now);
        }
        assert!(p.current(now) >= 4 * t, "{:?}", p.current(now));
    }

    #[test]
    fn follows_the_quantile() {
        let t0 = Instant::now();
        let p = policy(TimeoutConfig::default(), t0);
        for ms in 1..=1000u64 {
            p.on_success(Duration::from_millis(ms), t0);
        }
        // p99.9 of 1..=1000 ms is 999 ms; × 1.5.
        let t = p.current(t0 + 100 * MS);
        assert!(close(t, Duration::from_micros(1_498_500)), "{t:?}");

        // The window forgets; the new, faster latencies take over at once (decreases are not
        // damped).
        let t1 = t0 + Duration::from_secs(11);
        for _ in 0..1000 {
            p.on_success(20 * MS, t1);
        }
        let t = p.current(t1 + 100 * MS);
        assert!(close(t, 30 * MS), "{t:?}");
    }

    #[test]
    fn other_quantiles_and_multipliers() {
        let t0 = Instant::now();
        let cfg = TimeoutConfig {
            quantile: 0.5,
            multiplier: 2.0,
            ..TimeoutConfig::default()
        };
        let p = policy(cfg, t0);
        for ms in 1..=200u64 {
            p.on_success(Duration::from_millis(ms), t0);
        }
        let t = p.current(t0 + 100 * MS);
        assert!(close(t, 200 * MS), "{t:?}");
    }

    #[test]
    fn floor_and_ceiling() {
        let t0 = Instant::now();
        let cfg = TimeoutConfig {
            floor: 10 * MS,
            ceiling: Duration::from_secs(2),
            fallback: Duration::from_secs(1),
            ..TimeoutConfig::default()
        };
        let p = policy(cfg, t0);
        for _ in 0..200 {
            p.on_success(MS, t0);
        }
        assert_eq!(p.current(t0 + 100 * MS), 10 * MS);

        let t1 = t0 + Duration::from_secs(11);
        for _ in 0..200 {
            p.on_success(Duration::from_secs(30), t1);
        }
        // Growth is damped, but the ceiling is reached and never passed.
        let mut t = t1;
        for _ in 0..40 {
            t += 100 * MS;
            assert!(p.current(t) <= Duration::from_secs(2));
        }
        assert_eq!(p.current(t), Duration::from_secs(2));
    }

    #[test]
    fn deadline_bounds_the_attempt() {
        let t0 = Instant::now();
        let p = policy(TimeoutConfig::default(), t0);
        let d = Deadline::after(t0, 30 * MS);
        let Decision::Attempt(a) = p.decide(t0, Some(d)) else {
            panic!("not expired")
        };
        assert_eq!(a.timeout(), 30 * MS);
        assert_eq!(a.adaptive(), Duration::from_secs(1));
        assert!(a.limited_by_deadline());
        // A deadline cut teaches nothing: no censored sample, no backoff.
        for _ in 0..10 {
            assert_eq!(p.on_timeout(&a, t0 + 30 * MS), None);
        }
        assert_eq!(p.histogram().count(t0 + 30 * MS), 0);
        assert_eq!(p.state().generation, 0);

        // A far deadline does not shorten the attempt; the attempt waits at least a third of
        // it, up to the ceiling.
        let far = Deadline::after(t0, Duration::from_secs(60));
        let Decision::Attempt(a) = p.decide(t0, Some(far)) else {
            panic!("not expired")
        };
        assert_eq!(a.timeout(), Duration::from_secs(10));
        assert!(!a.limited_by_deadline());
        let near = Deadline::after(t0, Duration::from_secs(6));
        let Decision::Attempt(a) = p.decide(t0, Some(near)) else {
            panic!("not expired")
        };
        assert_eq!(a.timeout(), Duration::from_secs(2));
        assert_eq!(a.adaptive(), Duration::from_secs(1));
        assert!(!a.limited_by_deadline());
        // With the share off, the adaptive timeout alone.
        let off = policy(
            TimeoutConfig {
                deadline_share: 0.0,
                ..TimeoutConfig::default()
            },
            t0,
        );
        let Decision::Attempt(a) = off.decide(t0, Some(near)) else {
            panic!("not expired")
        };
        assert_eq!(a.timeout(), Duration::from_secs(1));

        assert_eq!(p.decide(t0 + 30 * MS, Some(d)), Decision::Expired);
    }

    #[test]
    fn timeouts_are_censored_samples() {
        let t0 = Instant::now();
        let p = policy(TimeoutConfig::default(), t0);
        let a = attempt(&p, t0);
        p.on_timeout(&a, t0 + a.timeout());
        let now = t0 + a.timeout();
        assert_eq!(p.histogram().count(now), 1);
        assert!(close(
            p.histogram().quantile(1.0, now).unwrap(),
            a.timeout()
        ));
    }

    #[test]
    fn one_backoff_step_per_generation() {
        let t0 = Instant::now();
        let p = policy(TimeoutConfig::default(), t0);
        // 100 concurrent attempts, all started before any timed out.
        let attempts: Vec<_> = (0..100).map(|_| attempt(&p, t0)).collect();
        let at = t0 + Duration::from_secs(1);
        let raised: Vec<_> = attempts
            .iter()
            .filter_map(|a| p.on_timeout(a, at))
            .collect();
        assert_eq!(raised, vec![Duration::from_secs(2)]);
        assert_eq!(p.state().generation, 1);
        assert_eq!(p.state().effective, Duration::from_secs(2));
    }

    #[test]
    fn concurrent_timeouts_take_one_step() {
        let t0 = Instant::now();
        let p = Arc::new(policy(TimeoutConfig::default(), t0));
        let attempts: Vec<_> = (0..64).map(|_| attempt(&p, t0)).collect();
        let at = t0 + Duration::from_secs(1);
        let steps: usize = std::thread::scope(|s| {
            let workers: Vec<_> = attempts
                .chunks(16)
                .map(|chunk| {
                    let p = &p;
                    s.spawn(move || chunk.iter().filter_map(|a| p.on_timeout(a, at)).count())
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(steps, 1);
        assert_eq!(p.state().generation, 1);
        assert_eq!(p.state().effective, Duration::from_secs(2));
        assert_eq!(p.histogram().count(at), 64);
    }

    #[test]
    fn a_success_breaks_the_run() {
        let t0 = Instant::now();
        let p = policy(TimeoutConfig::default(), t0);
        let mut now = t0;
        for _ in 0..10 {
            let a = attempt(&p, now);
            let b = attempt(&p, now);
            now += a.timeout();
            assert_eq!(p.on_timeout(&a, now), None);
            assert_eq!(p.on_timeout(&b, now), None);
            p.on_success(5 * MS, now);
        }
        assert_eq!(p.state().generation, 0);
    }

    #[test]
    fn backoff_clears_after_a_quiet_period() {
        let t0 = Instant::now();
        let p = policy(TimeoutConfig::default(), t0);
        let attempts: Vec<_> = (0..3).map(|_| attempt(&p, t0)).collect();
        let at = t0 + Duration::from_secs(1);
        for a in &attempts {
            p.on_timeout(a, at);
        }
        assert_eq!(p.state().backoff, Some(Duration::from_secs(2)));
        // Still backed off one refresh later (the 2 s period has not passed quietly).
        assert_eq!(p.current(at + 100 * MS), Duration::from_secs(2));
        // No traffic is no evidence: still backed off long after.
        assert_eq!(
            p.current(at + Duration::from_secs(5)),
            Duration::from_secs(2)
        );
        p.on_success(30 * MS, at + Duration::from_secs(5));
        // Successes, and two backed-off periods without a timeout: back to the base.
        assert_eq!(
            p.current(at + Duration::from_secs(5) + 100 * MS),
            Duration::from_secs(1)
        );
        assert_eq!(p.state().backoff, None);
    }

    /// Sequential attempts against a dependency whose latency steps from 20 ms to `step`.
    /// Returns how many attempts timed out before the first success after the step, and how
    /// long after the step that success was sent.
    fn learn_step(
        cfg: TimeoutConfig,
        step: Duration,
        max_attempts: usize,
    ) -> Option<(usize, Duration)> {
        let t0 = Instant::now();
        let p = policy(cfg, t0);
        let mut now = t0;
        for _ in 0..2000 {
            attempt(&p, now);
            now += 20 * MS;
            p.on_success(20 * MS, now);
        }
        let before = p.current(now);
        assert!(before < step, "{before:?} already covers the step");
        let stepped = now;
        for n in 0..max_attempts {
            let a = attempt(&p, now);
            if step < a.timeout() {
                return Some((n, now - stepped));
            }
            now += a.timeout();
            p.on_timeout(&a, now);
        }
        None
    }

    #[test]
    fn learns_a_step_above_the_timeout() {
        // 20 ms → 30 ms timeout. A step to 500 ms (17× the timeout) is learned as fast as the
        // anti-ratchet allows (2× per 500 ms window: ⌈log2 17⌉ = 5 windows, plus the one in
        // progress), within a bounded number of attempts.
        let (n, took) = learn_step(TimeoutConfig::default(), 500 * MS, 100).expect("learned");
        assert!(n <= 20, "{n} timeouts");
        assert!(took <= Duration::from_secs(3), "{took:?}");
        // A step inside one window's growth is learned in a handful of attempts.
        let (n, took) = learn_step(TimeoutConfig::default(), 50 * MS, 100).expect("learned");
        assert!(n <= 6, "{n} timeouts");
        assert!(took <= Duration::from_millis(500), "{took:?}");
        // Censoring alone, with a multiplier, learns it too (more slowly: one 1.5× step per
        // refresh), even if backoff is all but switched off.
        let cfg = TimeoutConfig {
            backoff_after: u32::MAX,
            ..TimeoutConfig::default()
        };
        assert!(learn_step(cfg, 500 * MS, 60).is_some());
    }

    /// A heavy-tailed latency: `scale × (1 − u)^−0.3` for the `i`-th point of a golden-ratio
    /// sequence `u` (p99.9 ≈ 7.9 × scale).
    fn pareto(i: u64, scale: Duration) -> Duration {
        let u = (i as f64 * 0.618_033_988_749_895).fract();
        scale.mul_f64((1.0 - u).powf(-0.3))
    }

    #[test]
    fn learns_a_step_under_the_timeout_within_a_second() {
        // A step up that stays under the timeout (nothing times out) is learned from the
        // current sub-window, not at the pace the 10 s window forgets: 6% of the window's
        // samples after half a second would lift p99.9 × 1.5 only from 118 ms to about 137 ms.
        let t0 = Instant::now();
        let p = policy(TimeoutConfig::default(), t0);
        for i in 0..10_000u64 {
            p.on_success(pareto(i, 10 * MS), t0 + Duration::from_millis(i));
        }
        let step = t0 + Duration::from_secs(10); // a sub-window boundary
        let before = p.current(step);
        assert!(close(before, 118 * MS), "{before:?}");
        // Latencies double: p99.9 × 1.5 ≈ 237 ms.
        let mut learned = None;
        for i in 0..1_000u64 {
            let t = step + Duration::from_millis(i);
            p.on_success(pareto(i, 20 * MS), t);
            if learned.is_none() && p.current(t) >= 213 * MS {
                learned = Some(t - step);
            }
        }
        let took = learned.expect("the new p99.9 × 1.5 is learned within a second");
        assert!(took <= Duration::from_millis(600), "took {took:?}");
        // The whole window alone still lags well behind.
        let window = p
            .histogram()
            .quantile(0.999, step + Duration::from_millis(999));
        assert!(window.unwrap() < 120 * MS, "{window:?}");
    }

    #[test]
    fn without_censoring_and_backoff_a_step_is_never_learned() {
        // The control: a multiplier of 1 means censored samples cannot lift the quantile past
        // the timeout; with backoff switched off too the timeout is stuck below the step.
        let cfg = TimeoutConfig {
            multiplier: 1.0,
            backoff_after: u32::MAX,
            ..TimeoutConfig::default()
        };
        assert_eq!(learn_step(cfg, 500 * MS, 200), None);
        // The same with backoff on learns it.
        let cfg = TimeoutConfig {
            multiplier: 1.0,
            ..TimeoutConfig::default()
        };
        assert!(learn_step(cfg, 500 * MS, 40).is_some());
    }

    #[test]
    fn samples_at_high_rates_without_bias() {
        let t0 = Instant::now();
        let cfg = TimeoutConfig {
            max_samples_per_sec: 1000,
            ..TimeoutConfig::default()
        };
        let p = policy(cfg, t0);
        // 100 000 attempts per second for 3 s, latencies cycling through 1..=1000 µs.
        let (mut sampled, mut total) = (0u64, 0u64);
        for i in 0..300_000u64 {
            let now = t0 + Duration::from_micros(10 * i);
            let a = attempt(&p, now);
            let latency = Duration::from_micros(1 + i % 1000);
            if a.sampled() {
                p.on_success(latency, now);
            }
            if i >= 200_000 {
                total += 1;
                sampled += u64::from(a.sampled());
            }
        }
        // In the last second the sampled rate is within 2× of the target (the shift is a
        // power of two).
        assert!((500..=2000).contains(&sampled), "{sampled} of {total}");
        // Sampling is independent of latency: the quantiles are unchanged.
        let now = t0 + Duration::from_secs(3);
        let q = p.histogram().quantile(0.999, now).unwrap();
        assert!(close(q, Duration::from_micros(999)), "{q:?}");
        let median = p.histogram().quantile(0.5, now).unwrap();
        assert!(
            median.abs_diff(Duration::from_micros(500)) < Duration::from_micros(40),
            "{median:?}"
        );
        // The rate falls: every attempt is measured again.
        let later = now + Duration::from_secs(1);
        p.current(later);
        p.current(later + 100 * MS);
        assert!(attempt(&p, later + 101 * MS).sampled());
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let d = TimeoutConfig::default;
        let cases: Vec<(TimeoutConfig, &str)> = vec![
            (
                TimeoutConfig {
                    quantile: 0.0,
                    ..d()
                },
                "quantile",
            ),
            (
                TimeoutConfig {
                    quantile: 1.5,
                    ..d()
                },
                "quantile",
            ),
            (
                TimeoutConfig {
                    quantile: f64::NAN,
                    ..d()
                },
                "quantile",
            ),
            (
                TimeoutConfig {
                    multiplier: 0.9,
                    ..d()
                },
                "multiplier",
            ),
            (
                TimeoutConfig {
                    multiplier: f64::INFINITY,
                    ..d()
                },
                "multiplier",
            ),
            (
                TimeoutConfig {
                    floor: Duration::ZERO,
                    ..d()
                },
                "floor",
            ),
            (TimeoutConfig { ceiling: MS, ..d() }, "ceiling"),
            (
                TimeoutConfig {
                    fallback: MS,
                    ..d()
                },
                "fallback",
            ),
            (
                TimeoutConfig {
                    fallback: Duration::from_secs(11),
                    ..d()
                },
                "fallback",
            ),
            (
                TimeoutConfig {
                    min_samples: 0,
                    ..d()
                },
                "min_samples",
            ),
            (
                TimeoutConfig {
                    refresh: Duration::ZERO,
                    ..d()
                },
                "refresh",
            ),
            (
                TimeoutConfig {
                    max_growth: 1.0,
                    ..d()
                },
                "max_growth",
            ),
            (
                TimeoutConfig {
                    growth_window: MS,
                    ..d()
                },
                "growth_window",
            ),
            (
                TimeoutConfig {
                    backoff_after: 0,
                    ..d()
                },
                "backoff_after",
            ),
            (
                TimeoutConfig {
                    backoff_factor: 1.0,
                    ..d()
                },
                "backoff_factor",
            ),
            (
                TimeoutConfig {
                    max_samples_per_sec: 0,
                    ..d()
                },
                "max_samples_per_sec",
            ),
        ];
        for (cfg, field) in cases {
            let e = cfg.validate().unwrap_err();
            assert_eq!(e.field(), field, "{cfg:?}");
            assert!(e.to_string().contains(field));
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A success with this latency (ms).
        Success(u64),
        /// `n` attempts decided now all time out.
        Timeouts(u8),
        /// Time passes (ms).
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u64..5_000).prop_map(Op::Success),
            (1u8..8).prop_map(Op::Timeouts),
            (1u64..700).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever happens, the timeout stays in [floor, ceiling] and grows at most
        /// `max_growth` within one growth window.
        #[test]
        fn bounded_and_damped(ops in proptest::collection::vec(op(), 1..300)) {
            let cfg = TimeoutConfig {
                min_samples: 5,
                ceiling: Duration::from_secs(4),
                ..TimeoutConfig::default()
            };
            let t0 = Instant::now();
            let p = policy(cfg, t0);
            let gw = cfg.growth_window.as_nanos();
            let mut now = t0;
            let mut epoch = 0u128;
            let mut window_start = p.state().effective;
            for op in ops {
                let e = (now - t0).as_nanos() / gw;
                if e != epoch {
                    epoch = e;
                    window_start = p.state().effective;
                }
                match op {
                    Op::Success(ms) => p.on_success(Duration::from_millis(ms), now),
                    Op::Timeouts(n) => {
                        let attempts: Vec<_> = (0..n).map(|_| attempt(&p, now)).collect();
                        for a in &attempts {
                            p.on_timeout(a, now);
                        }
                    }
                    Op::Advance(ms) => {
                        now += Duration::from_millis(ms);
                        continue;
                    }
                }
                let eff = p.current(now);
                let e = (now - t0).as_nanos() / gw;
                if e != epoch {
                    epoch = e;
                    // `current` just rolled the window: this is its start value.
                    window_start = eff;
                }
                prop_assert!(eff >= cfg.floor && eff <= cfg.ceiling, "{eff:?}");
                let cap = window_start.as_secs_f64() * cfg.max_growth * (1.0 + 1e-9);
                prop_assert!(eff.as_secs_f64() <= cap, "{eff:?} > {cfg:?} × {window_start:?}");
            }
        }
    }
}
