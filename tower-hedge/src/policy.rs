//! The hedging decisions, as a plain struct that is told the time.
//!
//! [`HedgePolicy`] holds everything a hedge decision needs — the latency histogram and the
//! cached quantiles read from it, the hedge budget, the counters — and takes `now` on every
//! call, so each decision can be unit-tested and proptested without a runtime. The service only
//! reads the clock, asks the policy and moves futures.
//!
//! # The decisions
//! - [`on_request`](HedgePolicy::on_request), once per request: count it, fund the budget,
//!   and return the hedge delay if hedging is on (enough samples, or a fixed delay).
//! - [`fits`](HedgePolicy::fits): whether the request's deadline leaves room for the delay
//!   plus a typical attempt (the median). If not, the request is not armed and never cloned.
//! - [`on_fire`](HedgePolicy::on_fire), when the hedge timer fires: re-check the deadline,
//!   check that the inner service is ready *now* (hedges never queue), then withdraw from the
//!   budget. Only [`Fire::Send`] sends a hedge.
//! - [`record`](HedgePolicy::record): feed the histogram (see the crate docs for which
//!   attempts are recorded).
//!
//! # The bound on extra load
//! By default the policy's own bank is an exact [`TokenBucket`], credited `max_extra_load`
//! tokens per request; a hedge costs one whole token, so over *any* sequence of requests and
//! hedges, `hedges sent ≤ max_extra_load × requests` (the bucket starts empty). The cap on
//! banked tokens (`burst`, default 3) bounds what a latency step can release at once after a
//! calm period — per client: a fleet of 100 calm clients can spend 300 hedges in the first
//! second of a slowdown.
//!
//! With a **decaying bank** ([`bank_ttl`](crate::HedgeBuilder::bank_ttl), e.g.
//! [`BANK_TTL`]), the bank is a [`RetryBudget`] funded by every request: credited
//! `max_extra_load / (1 + τ)` tokens per request, its tokens decaying with time constant τ,
//! a hedge costing one whole token (a fraction `f` of a token is lent whole with
//! probability `f`, one loan at a time). Then:
//!
//! ```text
//! hedges sent, over any sequence      ≤ max_extra_load / (1 + τ) × requests + 1
//! hedges sent in any one second       ≤ max_extra_load / (1 + τ) × (τ × r + requests in it)
//!                                     ≈ max_extra_load × requests in it
//! ```
//!
//! for a client whose request rate before that second was `r`: the bank holds at most what
//! the last τ of its own traffic earned, so the bound holds in every second **however many
//! clients there are and whatever their rates** (in expectation, through the loans). The
//! price is tail latency: tokens earned while no request needs a hedge decay unspent. In the
//! damper lab's `fleet-hedge` (100 clients × 100 rps, 5% stragglers from second 15) the worst
//! second's hedge share falls from 6.0% to 3.4%, and p99 rises from 43 ms to 132 ms (no
//! hedging: 195 ms).
//!
//! A shared budget, if given, is withdrawn from as well (after the own bank, which is handed
//! its token back when the shared one refuses), so retries and hedges also stay inside the
//! shared bound.

use crate::error::ConfigError;
use damper_core::budget::TokenBucket;
use damper_core::clock::Origin;
use damper_core::histogram::{HistogramConfig, LatencyHistogram, QuantileCache};
use damper_core::metrics as names;
use damper_core::{Budget, Deadline};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tower_retry_budget::RetryBudget;

/// A suggested time constant τ for a decaying hedge bank
/// ([`HedgeBuilder::bank_ttl`](crate::HedgeBuilder::bank_ttl)): the bank then holds what
/// about the last 200 ms of requests earned (see the [module docs](self)).
pub const BANK_TTL: Duration = Duration::from_millis(200);

/// The configuration of a hedge layer; see [`HedgeLayer::builder`](crate::HedgeLayer::builder)
/// for what each knob means and its default.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
#[non_exhaustive]
pub struct HedgeConfig {
    /// Hedges as a share of requests, in `(0, 1)`. Default 0.05.
    pub max_extra_load: f64,
    /// The latency quantile used as the delay, in `(0, 1)`. Default `1 − max_extra_load`.
    pub quantile: Option<f64>,
    /// A fixed delay instead of a quantile. Default none.
    pub fixed_delay: Option<Duration>,
    /// The smallest quantile delay. Default 100 µs.
    pub min_delay: Duration,
    /// The largest quantile delay. Default none.
    pub max_delay: Option<Duration>,
    /// Samples needed in the window before quantile hedging starts. Default 100.
    pub min_samples: u64,
    /// Extra attempts per request, 1 to 4. Default 1.
    pub max_hedges: u32,
    /// Whether a hedge the budget denied (or the inner service could not take) is asked for
    /// again later, at a gap starting at the delay and growing 1.25× each time. Default true.
    pub recheck: bool,
    /// The most hedge tokens that can be banked, at least 1. Default 3 (with a decaying bank,
    /// set it high: the bank already follows the request rate).
    pub burst: f64,
    /// How often the cached quantiles are recomputed. Default 1 s.
    pub refresh: Duration,
    /// Whether this layer records latencies into the histogram. Default true.
    pub record_latencies: bool,
    /// The window of the histogram this layer creates when none is shared. Default 10 s in 4
    /// sub-windows.
    pub window: Duration,
    /// Sub-windows of that histogram. Default 4.
    pub sub_windows: usize,
    /// Seeds the own bank's loans, for reproducible runs. Default: seeded from the clock.
    pub seed: Option<u64>,
    /// The time constant τ of the own bank's decay, if it decays (see the [module
    /// docs](self)). Default `None`: an exact bucket, tokens lasting until spent (up to
    /// `burst`), each request crediting the whole `max_extra_load`.
    pub bank_ttl: Option<Duration>,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        Self {
            max_extra_load: 0.05,
            quantile: None,
            fixed_delay: None,
            min_delay: Duration::from_micros(100),
            max_delay: None,
            min_samples: 100,
            max_hedges: 1,
            recheck: true,
            burst: 3.0,
            seed: None,
            bank_ttl: None,
            refresh: Duration::from_secs(1),
            record_latencies: true,
            window: Duration::from_secs(10),
            sub_windows: 4,
        }
    }
}

impl HedgeConfig {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let x = self.max_extra_load;
        if !(x.is_finite() && x > 0.0 && x < 1.0) {
            return Err(ConfigError::new("max_extra_load", "must be in (0, 1)"));
        }
        if let Some(q) = self.quantile
            && !(q.is_finite() && q > 0.0 && q < 1.0)
        {
            return Err(ConfigError::new("quantile", "must be in (0, 1)"));
        }
        if let Some(max) = self.max_delay
            && max < self.min_delay
        {
            return Err(ConfigError::new("max_delay", "must be at least min_delay"));
        }
        if !(1..=4).contains(&self.max_hedges) {
            return Err(ConfigError::new("max_hedges", "must be between 1 and 4"));
        }
        if !(self.burst.is_finite() && (1.0..=1e9).contains(&self.burst)) {
            return Err(ConfigError::new("burst", "must be in [1, 1e9]"));
        }
        if self.refresh.is_zero() {
            return Err(ConfigError::new("refresh", "must be positive"));
        }
        let hist = HistogramConfig {
            window: self.window,
            sub_windows: self.sub_windows,
        };
        if let Err(e) = LatencyHistogram::with_config(hist, Instant::now()) {
            return Err(match e.field() {
                "sub_windows" => ConfigError::new("sub_windows", "must be between 1 and 64"),
                _ => ConfigError::new(
                    "window",
                    "each sub-window must be at least 1 ms and the window at most a day",
                ),
            });
        }
        Ok(())
    }

    /// The quantile the delay follows: the configured one, or `1 − max_extra_load`.
    pub fn effective_quantile(&self) -> f64 {
        self.quantile.unwrap_or(1.0 - self.max_extra_load)
    }

    pub(crate) fn histogram_config(&self) -> HistogramConfig {
        HistogramConfig {
            window: self.window,
            sub_windows: self.sub_windows,
        }
    }
}

/// What to do when a hedge timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fire {
    /// Send the hedge: a token was withdrawn.
    Send,
    /// The remaining deadline cannot fit a typical attempt.
    Deadline,
    /// The inner service was not ready; hedges never queue.
    NotReady,
    /// The budget had no token.
    BudgetDenied,
}

/// Counters of a hedge layer, as read by [`HedgeHandle::stats`](crate::HedgeHandle::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HedgeStats {
    /// Requests seen.
    pub requests: u64,
    /// Hedges sent.
    pub hedges_sent: u64,
    /// Requests answered by a hedge rather than the first attempt.
    pub hedges_won: u64,
    /// Hedges refused by a budget.
    pub budget_denied: u64,
    /// Hedges not armed or not sent because the deadline left no room.
    pub deadline_skipped: u64,
    /// Hedges not sent because the inner service was not ready.
    pub not_ready_skipped: u64,
}

impl HedgeStats {
    /// Hedges sent per request (`hedge_extra_load`); zero before the first request.
    pub fn extra_load(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.hedges_sent as f64 / self.requests as f64
        }
    }
}

struct Metrics {
    sent: metrics::Counter,
    won: metrics::Counter,
    denied: metrics::Counter,
    delay: metrics::Gauge,
}

enum Mode {
    Quantile(QuantileCache),
    Fixed(Duration),
}

/// The one counter written by every request, striped over cache lines by thread: threads
/// counting requests at once do not fight over one line, nor evict the read-mostly fields
/// (delay cache, gate) every request reads. Reads sum the stripes.
struct Striped([Stripe; STRIPES]);

const STRIPES: usize = 8;

#[repr(align(128))]
struct Stripe(AtomicU64);

impl Striped {
    fn new() -> Self {
        Self(std::array::from_fn(|_| Stripe(AtomicU64::new(0))))
    }

    fn increment(&self) {
        self.0[stripe()].0.fetch_add(1, Ordering::Relaxed);
    }

    fn sum(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

/// This thread's stripe, assigned round-robin on first use.
fn stripe() -> usize {
    use std::cell::Cell;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = (NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES as u64) as usize;
            s.set(i);
        }
        i
    })
}

const WARM: u64 = 1 << 63;
const NONE: u64 = u64::MAX;

/// The own hedge bank: exact (the default, `bank_ttl: None`) or decaying.
// One per layer, inside the policy's `Arc`: the exact bucket's size costs nothing, and
// boxing it would add a pointer chase to every request.
#[allow(clippy::large_enum_variant)]
enum Bank {
    /// Tokens last until spent, up to `burst`; no loans, so every decision is exact.
    Exact(TokenBucket),
    /// Tokens decay and fractions are lent (see the [module docs](self)).
    Decaying(Arc<RetryBudget>),
}

impl Bank {
    fn deposit(&self, now: Instant) {
        match self {
            Bank::Exact(b) => {
                b.deposit();
            }
            Bank::Decaying(b) => b.deposit(now),
        }
    }

    fn try_withdraw(&self, now: Instant) -> bool {
        match self {
            Bank::Exact(b) => b.try_withdraw(),
            Bank::Decaying(b) => b.try_withdraw(now),
        }
    }

    fn refund(&self) {
        match self {
            Bank::Exact(b) => b.deposit_tokens(1.0),
            Bank::Decaying(b) => b.refund(),
        }
    }

    fn balance(&self, now: Instant) -> f64 {
        match self {
            Bank::Exact(b) => b.balance(),
            Bank::Decaying(b) => b.balance(now),
        }
    }
}

/// The hedging decisions. See the [module docs](self).
pub struct HedgePolicy {
    mode: Mode,
    median: QuantileCache,
    histogram: Arc<LatencyHistogram>,
    own: Bank,
    shared: Option<Arc<dyn Budget>>,
    min_samples: u64,
    min_delay: Duration,
    max_delay: Duration,
    max_hedges: u32,
    recheck: bool,
    record: bool,
    origin: Origin,
    refresh_nanos: u64,
    /// [`WARM`] flag | time (ns since `origin`) of the next sample-count check.
    gate: AtomicU64,
    /// The last delay handed out, in ns ([`NONE`] before any).
    last_delay: AtomicU64,
    requests: Striped,
    sent: AtomicU64,
    won: AtomicU64,
    denied: AtomicU64,
    deadline_skipped: AtomicU64,
    not_ready_skipped: AtomicU64,
    metrics: Metrics,
}

impl fmt::Debug for HedgePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgePolicy")
            .field("fixed_delay", &self.fixed_delay())
            .field("min_samples", &self.min_samples)
            .field("max_hedges", &self.max_hedges)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1)
}

impl HedgePolicy {
    /// A policy for `config`, reading (and, if `record_latencies`, feeding) `histogram` — or a
    /// histogram of its own if `None` — and, if `shared` is given, withdrawing from that budget
    /// too. `name` labels the metrics.
    pub fn new(
        config: &HedgeConfig,
        histogram: Option<Arc<LatencyHistogram>>,
        shared: Option<Arc<dyn Budget>>,
        name: &str,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let histogram = match histogram {
            Some(h) => h,
            None => Arc::new(
                LatencyHistogram::with_config(config.histogram_config(), now)
                    .map_err(|_| ConfigError::new("window", "invalid histogram window"))?,
            ),
        };
        let own = match config.bank_ttl {
            None => Bank::Exact(
                TokenBucket::new(config.max_extra_load, config.burst, 0.0)
                    .map_err(|e| ConfigError::new("max_extra_load", e.reason()))?,
            ),
            Some(ttl) => {
                let mut b = RetryBudget::builder()
                    .ratio(config.max_extra_load / (1.0 + ttl.as_secs_f64()))
                    .max_tokens(config.burst)
                    .initial(0.0)
                    .reserve(0.0)
                    .ttl(ttl)
                    .name(format!("{name}.hedge"));
                if let Some(seed) = config.seed {
                    b = b.seed(seed);
                }
                Bank::Decaying(b.build_at(now).map_err(|e| match e.field() {
                    "max_tokens" => ConfigError::new("burst", e.reason()),
                    "ttl" => ConfigError::new("bank_ttl", e.reason()),
                    _ => ConfigError::new("max_extra_load", e.reason()),
                })?)
            }
        };
        let mode = match config.fixed_delay {
            Some(d) => Mode::Fixed(d),
            None => Mode::Quantile(QuantileCache::new(
                config.effective_quantile(),
                config.refresh,
                now,
            )),
        };
        let label = [(names::LABEL_NAME, name.to_owned())];
        let metrics = Metrics {
            sent: metrics::counter!(names::HEDGE_SENT_TOTAL, &label),
            won: metrics::counter!(names::HEDGE_WON_TOTAL, &label),
            denied: metrics::counter!(names::HEDGE_BUDGET_DENIED_TOTAL, &label),
            delay: metrics::gauge!(names::HEDGE_DELAY_SECONDS, &label),
        };
        Ok(Self {
            mode,
            median: QuantileCache::new(0.5, config.refresh, now),
            histogram,
            own,
            shared,
            min_samples: config.min_samples,
            min_delay: config.min_delay,
            max_delay: config.max_delay.unwrap_or(Duration::MAX),
            max_hedges: config.max_hedges,
            recheck: config.recheck,
            record: config.record_latencies,
            origin: Origin::new(now),
            refresh_nanos: nanos(config.refresh).max(1),
            gate: AtomicU64::new(0),
            last_delay: AtomicU64::new(NONE),
            requests: Striped::new(),
            sent: AtomicU64::new(0),
            won: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            deadline_skipped: AtomicU64::new(0),
            not_ready_skipped: AtomicU64::new(0),
            metrics,
        })
    }

    /// The histogram this policy reads.
    pub fn histogram(&self) -> &Arc<LatencyHistogram> {
        &self.histogram
    }

    /// Extra attempts allowed per request.
    pub fn max_hedges(&self) -> u32 {
        self.max_hedges
    }

    /// Whether denied hedges are asked for again later.
    pub fn recheck(&self) -> bool {
        self.recheck
    }

    /// The fixed delay, if the policy uses one.
    pub fn fixed_delay(&self) -> Option<Duration> {
        match self.mode {
            Mode::Fixed(d) => Some(d),
            Mode::Quantile(_) => None,
        }
    }

    /// Counts a request arriving at `now`, funds the hedge budget with it, and returns the
    /// hedge delay if a hedge could be sent for it.
    pub fn on_request(&self, now: Instant) -> Option<Duration> {
        self.requests.increment();
        self.own.deposit(now);
        self.delay(now)
    }

    /// The delay after which a hedge would be sent at `now`, or `None` while hedging is off
    /// (fewer than `min_samples` samples in the window).
    pub fn delay(&self, now: Instant) -> Option<Duration> {
        let d = match &self.mode {
            Mode::Fixed(d) => *d,
            Mode::Quantile(cache) => {
                if !self.warm(now) {
                    return None;
                }
                cache
                    .get(&self.histogram, now)?
                    .clamp(self.min_delay, self.max_delay)
            }
        };
        let n = nanos(d);
        // Touch the gauge only when the delay changes, not per request.
        if self.last_delay.load(Ordering::Relaxed) != n
            && self.last_delay.swap(n, Ordering::Relaxed) != n
        {
            self.metrics.delay.set(d.as_secs_f64());
        }
        Some(d)
    }

    /// The last delay handed out, if any.
    pub fn current_delay(&self) -> Option<Duration> {
        let n = self.last_delay.load(Ordering::Relaxed);
        (n != NONE).then(|| Duration::from_nanos(n))
    }

    /// A typical attempt's latency (the median of the window), if known.
    pub fn typical_attempt(&self, now: Instant) -> Option<Duration> {
        self.median.get(&self.histogram, now)
    }

    /// Whether there are enough samples to trust the quantile; re-checked once per refresh.
    fn warm(&self, now: Instant) -> bool {
        if self.min_samples == 0 {
            return true;
        }
        let t = self.origin.nanos(now).min(WARM - 1);
        let gate = self.gate.load(Ordering::Relaxed);
        let was = gate & WARM != 0;
        if t < gate & !WARM {
            return was;
        }
        let is = self.histogram.count(now) >= self.min_samples;
        let next = t.saturating_add(self.refresh_nanos).min(WARM - 1) | if is { WARM } else { 0 };
        if self
            .gate
            .compare_exchange(gate, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
            && was != is
        {
            if is {
                tracing::debug!(min_samples = self.min_samples, "hedging enabled");
            } else {
                tracing::debug!(
                    min_samples = self.min_samples,
                    "hedging paused: too few samples"
                );
            }
        }
        is
    }

    /// Whether a request with `deadline`, arriving at `now`, leaves room for a hedge sent after
    /// `delay`: the remaining time must cover the delay plus a typical attempt.
    pub fn fits(&self, now: Instant, deadline: Option<Deadline>, delay: Duration) -> bool {
        let Some(deadline) = deadline else {
            return true;
        };
        let typical = self.typical_attempt(now).unwrap_or(Duration::ZERO);
        let ok = deadline.remaining(now) > delay.saturating_add(typical);
        if !ok {
            self.deadline_skipped.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Decides whether the hedge whose timer fired at `now` is sent. `ready` is asked only if
    /// the deadline still leaves room for a typical attempt; the budget only if `ready` says
    /// the inner service can take the hedge now.
    pub fn on_fire(
        &self,
        now: Instant,
        deadline: Option<Deadline>,
        ready: impl FnOnce() -> bool,
    ) -> Fire {
        if let Some(deadline) = deadline {
            let typical = self.typical_attempt(now).unwrap_or(Duration::ZERO);
            if deadline.remaining(now) <= typical {
                self.deadline_skipped.fetch_add(1, Ordering::Relaxed);
                return Fire::Deadline;
            }
        }
        if !ready() {
            self.not_ready_skipped.fetch_add(1, Ordering::Relaxed);
            return Fire::NotReady;
        }
        if !self.withdraw(now) {
            self.denied.fetch_add(1, Ordering::Relaxed);
            self.metrics.denied.increment(1);
            return Fire::BudgetDenied;
        }
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.metrics.sent.increment(1);
        Fire::Send
    }

    fn withdraw(&self, now: Instant) -> bool {
        if !self.own.try_withdraw(now) {
            return false;
        }
        match &self.shared {
            Some(shared) if !shared.try_withdraw(now) => {
                // Hand the own token back: the hedge was not sent.
                self.own.refund();
                false
            }
            _ => true,
        }
    }

    /// Notes that a hedge (not the first attempt) answered the request.
    pub fn on_hedge_won(&self) {
        self.won.fetch_add(1, Ordering::Relaxed);
        self.metrics.won.increment(1);
    }

    /// Records an attempt's latency observed at `now`, unless recording is turned off.
    pub fn record(&self, latency: Duration, now: Instant) {
        if self.record {
            self.histogram.record(latency, now);
        }
    }

    /// The own bank's balance at `now`, in hedges.
    pub fn budget_balance(&self, now: Instant) -> f64 {
        self.own.balance(now)
    }

    /// The counters so far.
    pub fn stats(&self) -> HedgeStats {
        HedgeStats {
            requests: self.requests.sum(),
            hedges_sent: self.sent.load(Ordering::Relaxed),
            hedges_won: self.won.load(Ordering::Relaxed),
            budget_denied: self.denied.load(Ordering::Relaxed),
            deadline_skipped: self.deadline_skipped.load(Ordering::Relaxed),
            not_ready_skipped: self.not_ready_skipped.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use damper_core::budget::Empty;
    use proptest::prelude::*;

    fn policy(config: HedgeConfig) -> (HedgePolicy, Instant) {
        let now = Instant::now();
        (
            HedgePolicy::new(&config, None, None, "test", now).unwrap(),
            now,
        )
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn invalid_config_names_the_field() {
        let bad = |c: HedgeConfig| c.validate().unwrap_err().field();
        let d = HedgeConfig::default;
        assert_eq!(
            bad(HedgeConfig {
                max_extra_load: 0.0,
                ..d()
            }),
            "max_extra_load"
        );
        assert_eq!(
            bad(HedgeConfig {
                max_extra_load: 1.0,
                ..d()
            }),
            "max_extra_load"
        );
        assert_eq!(
            bad(HedgeConfig {
                max_extra_load: f64::NAN,
                ..d()
            }),
            "max_extra_load"
        );
        assert_eq!(
            bad(HedgeConfig {
                quantile: Some(1.0),
                ..d()
            }),
            "quantile"
        );
        assert_eq!(
            bad(HedgeConfig {
                max_hedges: 0,
                ..d()
            }),
            "max_hedges"
        );
        assert_eq!(
            bad(HedgeConfig {
                max_hedges: 5,
                ..d()
            }),
            "max_hedges"
        );
        assert_eq!(bad(HedgeConfig { burst: 0.5, ..d() }), "burst");
        assert_eq!(
            bad(HedgeConfig {
                refresh: Duration::ZERO,
                ..d()
            }),
            "refresh"
        );
        assert_eq!(
            bad(HedgeConfig {
                sub_windows: 0,
                ..d()
            }),
            "sub_windows"
        );
        assert_eq!(
            bad(HedgeConfig {
                window: Duration::from_micros(1),
                ..d()
            }),
            "window"
        );
        assert_eq!(
            bad(HedgeConfig {
                min_delay: ms(5),
                max_delay: Some(ms(1)),
                ..d()
            }),
            "max_delay"
        );
        assert!(d().validate().is_ok());
    }

    #[test]
    fn default_quantile_follows_the_extra_load() {
        let c = HedgeConfig {
            max_extra_load: 0.02,
            ..HedgeConfig::default()
        };
        assert!((c.effective_quantile() - 0.98).abs() < 1e-12);
        let c = HedgeConfig {
            quantile: Some(0.9),
            ..c
        };
        assert_eq!(c.effective_quantile(), 0.9);
    }

    #[test]
    fn no_delay_before_min_samples_then_the_quantile() {
        let (p, t0) = policy(HedgeConfig {
            min_samples: 100,
            ..HedgeConfig::default()
        });
        for i in 1..=99 {
            p.record(ms(i), t0);
        }
        assert_eq!(p.delay(t0), None);
        p.record(ms(100), t0);
        // The gate is re-checked once per refresh.
        assert_eq!(p.delay(t0 + ms(500)), None);
        let d = p.delay(t0 + ms(1000)).unwrap();
        // p95 of 1..=100 ms.
        assert!(d.abs_diff(ms(95)) < ms(2), "{d:?}");
        assert_eq!(p.current_delay(), Some(d));
    }

    #[test]
    fn delay_is_clamped() {
        let config = HedgeConfig {
            min_samples: 1,
            min_delay: ms(2),
            max_delay: Some(ms(50)),
            ..HedgeConfig::default()
        };
        let (p, t0) = policy(config.clone());
        p.record(Duration::from_micros(10), t0);
        assert_eq!(p.delay(t0), Some(ms(2)));
        let (p, t0) = policy(config);
        p.record(ms(900), t0);
        assert_eq!(p.delay(t0), Some(ms(50)));
    }

    #[test]
    fn fixed_delay_needs_no_samples() {
        let (p, t0) = policy(HedgeConfig {
            fixed_delay: Some(ms(7)),
            ..HedgeConfig::default()
        });
        assert_eq!(p.on_request(t0), Some(ms(7)));
    }

    #[test]
    fn deadline_must_fit_delay_plus_median() {
        let (p, t0) = policy(HedgeConfig {
            min_samples: 1,
            ..HedgeConfig::default()
        });
        for _ in 0..10 {
            p.record(ms(20), t0);
        }
        let delay = ms(30);
        assert!(p.fits(t0, None, delay));
        assert!(p.fits(t0, Some(Deadline::after(t0, ms(60))), delay));
        assert!(!p.fits(t0, Some(Deadline::after(t0, ms(45))), delay));
        // When the timer fires, a typical attempt must still fit.
        let deadline = Some(Deadline::after(t0, ms(45)));
        assert_eq!(p.on_fire(t0 + ms(30), deadline, || true), Fire::Deadline);
        assert_eq!(p.stats().deadline_skipped, 2);
    }

    #[test]
    fn not_ready_skips_without_spending() {
        let (p, t0) = policy(HedgeConfig {
            fixed_delay: Some(ms(1)),
            ..HedgeConfig::default()
        });
        for _ in 0..20 {
            p.on_request(t0);
        }
        assert_eq!(p.on_fire(t0, None, || false), Fire::NotReady);
        assert_eq!(p.budget_balance(t0), 1.0);
        assert_eq!(p.on_fire(t0, None, || true), Fire::Send);
        assert_eq!(p.on_fire(t0, None, || true), Fire::BudgetDenied);
        let s = p.stats();
        assert_eq!(
            (s.hedges_sent, s.budget_denied, s.not_ready_skipped),
            (1, 1, 1)
        );
    }

    #[test]
    fn a_shared_budget_must_also_allow_and_refunds_the_own_token() {
        let t0 = Instant::now();
        let config = HedgeConfig {
            fixed_delay: Some(ms(1)),
            ..HedgeConfig::default()
        };
        let p = HedgePolicy::new(&config, None, Some(Arc::new(Empty::new())), "t", t0).unwrap();
        for _ in 0..20 {
            p.on_request(t0);
        }
        assert_eq!(p.on_fire(t0, None, || true), Fire::BudgetDenied);
        assert_eq!(p.budget_balance(t0), 1.0);
    }

    #[test]
    fn the_bank_holds_only_the_last_moments_of_traffic() {
        // A calm client at 1,000 requests a second for 10 s: its bank settles near
        // 1,000 × 0.05 / 1.2 × 0.2 s ≈ 8 tokens, not ten seconds' earnings.
        let (p, t0) = policy(HedgeConfig {
            fixed_delay: Some(ms(1)),
            seed: Some(1),
            bank_ttl: Some(BANK_TTL),
            burst: 100_000.0,
            ..HedgeConfig::default()
        });
        let mut t = t0;
        for _ in 0..10_000 {
            t += ms(1);
            p.on_request(t);
        }
        let mut sent = 0;
        while p.on_fire(t, None, || true) == Fire::Send {
            sent += 1;
        }
        assert!(
            (6..=11).contains(&sent),
            "a latency step released {sent} hedges"
        );
    }

    #[test]
    fn a_slow_client_still_hedges_in_proportion() {
        // At 2 requests a second the bank never holds a whole token (it decays within a
        // second), yet a client whose every request is slow hedges about 5% / 1.2 of them.
        let (p, t0) = policy(HedgeConfig {
            fixed_delay: Some(ms(1)),
            seed: Some(7),
            bank_ttl: Some(BANK_TTL),
            ..HedgeConfig::default()
        });
        let (mut t, mut sent) = (t0, 0u32);
        for _ in 0..20_000 {
            t += ms(500);
            p.on_request(t);
            sent += u32::from(p.on_fire(t + ms(1), None, || true) == Fire::Send);
        }
        assert!(
            (200..=1100).contains(&sent),
            "{sent} hedges for 20,000 requests"
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Request,
        Fire,
        Wait(u64),
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        // The default exact bucket: over any interleaving of requests, hedge attempts and
        // time, hedges sent never exceed max_extra_load × requests at any prefix, and match
        // an exact integer model of the bucket (deposit `ratio`, capped at `burst`; a hedge
        // costs one token; time changes nothing).
        #[test]
        fn budget_caps_extra_load_exactly(
            ratio_pct in 1u32..50,
            burst in 1u32..20,
            ops in proptest::collection::vec(
                prop_oneof![
                    4 => Just(Op::Request),
                    1 => Just(Op::Fire),
                    1 => (0u64..400).prop_map(Op::Wait),
                ], 0..600),
        ) {
            let ratio = f64::from(ratio_pct) / 100.0;
            let config = HedgeConfig {
                max_extra_load: ratio,
                burst: f64::from(burst),
                fixed_delay: Some(ms(1)),
                ..HedgeConfig::default()
            };
            let (p, mut t) = policy(config);
            const UNIT: u64 = 1_000_000;
            let (mut model, cap, dep) = (0u64, u64::from(burst) * UNIT, u64::from(ratio_pct) * UNIT / 100);
            let (mut requests, mut sent) = (0u64, 0u64);
            for op in ops {
                match op {
                    Op::Request => {
                        p.on_request(t);
                        requests += 1;
                        model = (model + dep).min(cap);
                    }
                    Op::Fire => {
                        let want = model >= UNIT;
                        if want {
                            model -= UNIT;
                        }
                        let got = p.on_fire(t, None, || true) == Fire::Send;
                        prop_assert_eq!(got, want);
                        sent += u64::from(got);
                    }
                    Op::Wait(n) => t += ms(n),
                }
                prop_assert!(sent as f64 <= ratio * requests as f64 + 1e-9);
                let s = p.stats();
                prop_assert_eq!((s.requests, s.hedges_sent), (requests, sent));
            }
        }

        // A decaying bank: over any interleaving of requests, hedge attempts and time, hedges
        // sent never exceed max_extra_load / (1 + τ) × requests + one loan, at any prefix.
        #[test]
        fn a_decaying_bank_caps_extra_load(
            ratio_pct in 1u32..50,
            burst in 1u32..20,
            seed in any::<u64>(),
            ops in proptest::collection::vec(
                prop_oneof![
                    4 => Just(Op::Request),
                    2 => Just(Op::Fire),
                    1 => (0u64..400).prop_map(Op::Wait),
                ], 0..600),
        ) {
            let ratio = f64::from(ratio_pct) / 100.0;
            let config = HedgeConfig {
                max_extra_load: ratio,
                burst: f64::from(burst),
                fixed_delay: Some(ms(1)),
                seed: Some(seed),
                bank_ttl: Some(BANK_TTL),
                ..HedgeConfig::default()
            };
            let (p, mut t) = policy(config);
            let credit = ratio / (1.0 + BANK_TTL.as_secs_f64());
            let (mut requests, mut sent) = (0u64, 0u64);
            for op in ops {
                match op {
                    Op::Request => {
                        p.on_request(t);
                        requests += 1;
                    }
                    Op::Fire => sent += u64::from(p.on_fire(t, None, || true) == Fire::Send),
                    Op::Wait(n) => t += ms(n),
                }
                prop_assert!(sent as f64 <= credit * requests as f64 + 1.0 + 1e-9);
                let s = p.stats();
                prop_assert_eq!((s.requests, s.hedges_sent), (requests, sent));
            }
        }
    }
}
