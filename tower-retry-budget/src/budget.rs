//! The retry budget: a token bucket funded by good responses, whose bank follows the rate.
//!
//! # Why budgets and not max retries?
//! "Retry up to 3 times" multiplies load by up to 3 at the worst possible moment: when the
//! dependency is failing, every request fails and every request retries. Stack three such layers
//! and one user request becomes 27 backend attempts. A budget makes extra load a bounded share of
//! *good* traffic instead: while the dependency works, there is plenty of budget for the odd
//! failure; when it stops working, deposits stop and retries stop with them.
//!
//! # How it works
//! [`RetryBudget`] implements damper-core's [`Budget`]:
//! - every good response [`deposit`](Budget::deposit)s `ratio` tokens (default 0.1) into a
//!   [`TokenBucket`] capped at `max_tokens` (default 100,000, a backstop);
//! - the banked tokens decay with time constant `ttl` (default 500 ms), so the bank holds
//!   about `ratio × successes per second × ttl`: what the last half second of good traffic
//!   earned, **in proportion to the client's own rate**. A client at 1,000 rps banks about 50
//!   tokens, one at 10 rps half of one;
//! - a *quiet* client (its last ~10 s of traffic could not earn a token: under one request a
//!   second at the default ratio; see [`QUIET_WINDOW`]) keeps a `reserve` (default 1) that
//!   does not decay, so a client that sends one request a minute keeps the token that ten
//!   successes earned and can retry its next failure. The budget starts with it. A busy client
//!   keeps no reserve: its own traffic funds it, and a fleet of busy clients cannot spend one
//!   token each in the first second of an outage;
//! - every extra attempt (a retry, or a hedge sharing the budget) must
//!   [`try_withdraw`](Budget::try_withdraw) one token first. When the bucket holds only a
//!   fraction `f` of a token, it *lends* a whole one with probability `f`, taking the
//!   fraction and recording the rest as a debt that the next credits repay before anything
//!   decays; one lent token at most is unpaid at a time. So a client whose bank never reaches
//!   a whole token still retries, in proportion to what it earned (a 10 rps client about
//!   every other odd failure), and a fleet of such clients spends the sum of their fractions,
//!   not a token each;
//! - only when neither the bucket nor a loan can pay is the optional floor asked:
//!   `min_per_sec` extra attempts every second whatever the traffic (default 0, off). It is a
//!   GCRA (governor's [`RateLimiter`]) running on the `now` the callers pass in, so tokio's
//!   paused clock drives it in tests and simulations.
//!
//! Bucket first, floor second: the healthy path (bucket has tokens) costs one compare-and-swap
//! and never touches the floor, and the floor stays whole for the moment the bucket runs dry —
//! it is a floor, not a subsidy spent while the bucket could pay.
//!
//! # Many threads, one budget
//! One budget is shared by every clone of the retry and hedge layers, so it is hit from every
//! runtime thread at once. A single counter would make those threads take turns on one cache
//! line. The [`TokenBucket`] instead *leases* whole tokens from its shared balance to a few
//! per-thread stripes (up to 64 at a time, at most an eighth of the shared whole tokens), so a
//! funded withdrawal is a compare-and-swap on a line that only its own thread writes; a thread
//! whose stripe and the shared balance are both empty steals from the other stripes before it
//! refuses. What this keeps and what it costs:
//! - withdrawals are still **exact**: tokens only move, so the bound below holds over any
//!   interleaving, however many threads withdraw;
//! - `max_tokens` still bounds **everything** banked, leased tokens included, so the burst at
//!   the onset of an outage is still at most `max_tokens` (plus the floor);
//! - a withdrawal is refused only when the whole budget, stripes included, holds less than a
//!   token — except that, racing another thread that is moving tokens between the shared
//!   balance and a stripe at that very moment, it may be refused with those tokens in flight
//!   (the exact statement is in the [`TokenBucket`] docs);
//! - decay reaches leased tokens too: each decay tick first moves them back to the shared
//!   balance.
//!
//! # The bound
//! Over any interleaving of deposits, withdrawals and time, the number of successful withdrawals
//! from time `t0` (when the budget was built) to `t` is at most
//!
//! ```text
//! initial + ratio × deposits + 1 + floor_burst + min_per_sec × (t − t0)
//! ```
//!
//! (the bucket pays at most what was credited, a loan at most one token more until it is
//! repaid; the GCRA admits at most its burst plus one per interval). Decay only ever removes
//! tokens, so it never loosens the bound. A property test checks it over arbitrary sequences
//! of deposits, withdrawals and clock advances. With the defaults (no floor, `initial` = 1)
//! that is `2 + ratio × successes` per client: retries are a tenth of good traffic plus two
//! tokens per client (its first and one loan).
//!
//! **Per second.** In any one second a busy client spends at most its bank (`ratio × s ×
//! ttl`, for `s` successes a second before it) plus what that second's successes earn. For
//! a fleet sending `R` requests in that second, with `Σ s_i ≤ R` the clients' success rates
//! before it, `p` the share of requests that fail and `q` the quiet clients among them:
//!
//! ```text
//! retries in one second ≤ ratio × (ttl × Σ s_i + successes in it) + reserve × q
//!                       ≤ ratio × (ttl + (1 − p) × 1 s) × R + reserve × q
//! ```
//!
//! whatever the fleet's size or each client's rate. An outage's onset (`p` = 1) gets at most
//! `1 + ratio × ttl` = 1.05 attempts per request; half the requests failing, about
//! `1 + ratio × (ttl + 0.5 s) / (1 − ratio / 2)` ≈ 1.105 (the successful retries earn too);
//! plus a token for each quiet client (under one request a second). Loans keep this in
//! expectation (a fraction `f` is lent with probability `f`): over a fleet the second's total
//! follows it closely, while one client alone, sending a few requests a second, can go above
//! it by one attempt in a second. Set `reserve(0.0)` for a large fleet of very quiet clients
//! that must never retry in step.
//!
//! # Why the bank follows the rate
//! An absolute cap cannot be right at every rate. A cap of 10 is 20 seconds of earnings at
//! 5 rps, so a fleet of quiet clients banks far more than a tenth of its traffic and pays it
//! out together in the first second of an outage; and it is a fiftieth of a second at 500 rps,
//! so a burst of overload rejections (a backend at 85% load shedding a queue spike) empties
//! it and failures that one retry 30 ms later would have fixed reach the caller. The decay
//! makes the bank a fixed *time* of the client's own good traffic instead; `max_tokens` is
//! left as a backstop. Deposits never read the clock: the decay is applied by withdrawals (and
//! balance reads), at most once per `ttl / 16`, counting what was credited since the last
//! application as earned evenly over that time.
//!
//! ```
//! use damper_core::Budget;
//! use tokio::time::Instant;
//! use tower_retry_budget::RetryBudget;
//!
//! let budget = RetryBudget::builder()
//!     .ratio(0.1)
//!     .initial(0.0) // start empty, for the arithmetic below
//!     .build()
//!     .expect("valid budget");
//! let now = Instant::now();
//! assert!(!budget.try_withdraw(now));
//! for _ in 0..10 {
//!     budget.deposit(now);
//! }
//! assert!(budget.try_withdraw(now)); // ten successes paid for one retry
//! assert!(!budget.try_withdraw(now));
//! ```
//!
//! [`TokenBucket`]: damper_core::budget::TokenBucket
//! [`RateLimiter`]: governor::RateLimiter

use crate::error::ConfigError;
use crate::sync::{AtomicBool, AtomicU64, Ordering};
use damper_core::Budget;
use damper_core::budget::TokenBucket;
use damper_core::clock::Origin;
use damper_core::rng::AtomicRng;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The default share of good traffic that may be spent on extra attempts.
pub const DEFAULT_RATIO: f64 = 0.1;
/// The default cap on banked tokens; see the [module docs](self) for why.
pub const DEFAULT_MAX_TOKENS: f64 = 100_000.0;
/// The default floor of extra attempts per second: none (the reserve lets a quiet client retry).
pub const DEFAULT_MIN_PER_SEC: f64 = 0.0;
/// The default decay time constant of the tokens above the reserve.
pub const DEFAULT_TTL: Duration = Duration::from_millis(500);
/// The default reserve: tokens that never decay, and the tokens the budget starts with.
pub const DEFAULT_RESERVE: f64 = 1.0;
/// The smallest non-zero floor: one extra attempt a day. A slower floor is no floor at all, and
/// its period (`1 / min_per_sec`) would not fit a `Duration` below about 5.4e-20.
const MIN_FLOOR_PER_SEC: f64 = 1.0 / 86_400.0;

/// A governor clock that reads time from the tokio `Instant`s the budget's callers pass in.
///
/// Each call *observes* its `now` (a `fetch_max`, so the clock never runs backwards even when
/// callers race), and the GCRA reads the latest observation. Time is therefore exactly the
/// caller's: tokio's paused clock, `tokio::time::advance`, or an instant made up in a test.
#[derive(Debug)]
pub(crate) struct TokioClock {
    base: Origin,
    latest: std::sync::atomic::AtomicU64,
}

impl TokioClock {
    fn new(base: Instant) -> Self {
        Self {
            base: Origin::new(base),
            latest: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn observe(&self, now: Instant) {
        let ns = self.base.nanos(now);
        // A load first: when time has not moved, concurrent callers only read the line.
        if ns > self.latest.load(std::sync::atomic::Ordering::Relaxed) {
            self.latest
                .fetch_max(ns, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.latest.load(std::sync::atomic::Ordering::Relaxed))
    }
}

type Floor = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

/// Exponential decay of banked tokens above the reserve, applied at most once per tick by
/// whichever withdrawal (or balance read) wins the tick's compare-and-swap. Deposits never read
/// the clock: the tokens credited since the last application are taken to have arrived evenly
/// over the time since (see `decay_slow`).
///
/// The same applications keep a count of the client's recent traffic (see [`QUIET_WINDOW`]),
/// which decides whether the reserve is kept: only a quiet client keeps it.
#[derive(Debug)]
struct Decay {
    ttl_secs: f64,
    tick_ns: u64,
    last: AtomicU64,
    /// The whole balance right after the last application, as `f64` bits.
    after: AtomicU64,
    /// Good responses and withdrawal requests seen by the applications, each weighted
    /// `e^(−age / QUIET_WINDOW)`, as `f64` bits.
    traffic: AtomicU64,
}

/// How far back a budget looks to tell a quiet client from a busy one. A client is *quiet*
/// when its traffic over about this long (good responses and withdrawal requests, weighted
/// `e^(−age / QUIET_WINDOW)`) could not earn a token: fewer than `1 / ratio` of them, one
/// request a second at the default ratio. Only a quiet client keeps its reserve; a busy one
/// is funded by its own traffic alone, so a fleet of busy clients cannot spend a reserve
/// each in the same second.
pub const QUIET_WINDOW: Duration = Duration::from_secs(10);

/// The configuration a [`RetryBudget`] was built with; with feature `serde` it can be read from
/// a file and handed to [`RetryBudget::from_config`], which validates it.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct BudgetConfig {
    /// Tokens credited per good response.
    pub ratio: f64,
    /// The cap on banked tokens.
    pub max_tokens: f64,
    /// Tokens in the bucket when built.
    pub initial: f64,
    /// Floor of extra attempts per second (0 disables the floor).
    pub min_per_sec: f64,
    /// How many floor attempts may be taken at once.
    pub floor_burst: u32,
    /// Decay time constant of the banked tokens above `reserve`, if any.
    pub ttl: Option<Duration>,
    /// Tokens that do not decay while the client is quiet (the first `reserve` tokens of the
    /// balance).
    pub reserve: f64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            ratio: DEFAULT_RATIO,
            max_tokens: DEFAULT_MAX_TOKENS,
            initial: DEFAULT_RESERVE,
            min_per_sec: DEFAULT_MIN_PER_SEC,
            floor_burst: 1,
            ttl: Some(DEFAULT_TTL),
            reserve: DEFAULT_RESERVE,
        }
    }
}

/// A lock-free retry budget shared by retries and hedges; see the [module docs](self).
///
/// Built with [`RetryBudget::builder`], always behind an `Arc` so one budget can be handed to
/// the retry layer and the hedge layer (as `Arc<dyn damper_core::Budget>`) alike.
///
/// Metrics: the gauge `damper_retry_budget_balance{name}` follows the bucket's whole-token
/// balance. It is written only when that whole number changes, and checked on deposits that
/// credit tokens, on decay and when the bucket refuses a withdrawal — not on the withdrawal
/// fast path nor on deposits into a full bucket, so a drain shows up at the next crediting
/// deposit or refusal. Tracing: one
/// `debug` event when the budget runs dry (bucket and floor both refuse) and one when it has a
/// whole token again.
pub struct RetryBudget {
    bucket: TokenBucket,
    floor: Option<Floor>,
    decay: Option<Decay>,
    /// What the last lent token has not yet repaid, as `f64` bits (see `lend`).
    debt: AtomicU64,
    rng: AtomicRng,
    base: Origin,
    published: AtomicU64,
    exhausted: AtomicBool,
    gauge: metrics::Gauge,
    name: String,
    config: BudgetConfig,
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("name", &self.name)
            .field("balance", &self.bucket.balance())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RetryBudget`]; see [`RetryBudget::builder`].
#[derive(Debug, Clone)]
pub struct RetryBudgetBuilder {
    config: BudgetConfig,
    name: String,
    seed: Option<u64>,
}

impl Default for RetryBudgetBuilder {
    fn default() -> Self {
        Self {
            config: BudgetConfig::default(),
            name: "default".to_owned(),
            seed: None,
        }
    }
}

impl RetryBudgetBuilder {
    /// Tokens credited per good response, in `(0, 1]`. Default 0.1: retries may add 10% to
    /// good traffic.
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.config.ratio = ratio;
        self
    }

    /// The cap on banked tokens, in `[1, 1e9]`. Default 100,000: with the default decay the
    /// bank stays far below it, and the cap only has to hold what a busy client credits
    /// between two withdrawals (the decay is applied then). Without decay
    /// ([`no_decay`](Self::no_decay)) set it low, 10 or so: the whole cap is paid out in the
    /// first moments of an outage.
    pub fn max_tokens(mut self, max_tokens: f64) -> Self {
        self.config.max_tokens = max_tokens;
        self
    }

    /// Tokens in the bucket when built, in `[0, max_tokens]`. Default 1 (the default reserve).
    pub fn initial(mut self, initial: f64) -> Self {
        self.config.initial = initial;
        self
    }

    /// Extra attempts per second allowed whatever the traffic: 0 disables the floor, otherwise
    /// in `[1/86400, 1e6]` (from one attempt a day to a million a second). Default 0: a floor
    /// is per client and per second whatever the client sends, so a fleet of quiet clients
    /// multiplies it (see the module docs).
    pub fn min_per_sec(mut self, min_per_sec: f64) -> Self {
        self.config.min_per_sec = min_per_sec;
        self
    }

    /// How many floor attempts may be taken at once, at least 1. Default 1: the floor is spread
    /// evenly over the second rather than spent in a burst.
    pub fn floor_burst(mut self, burst: u32) -> Self {
        self.config.floor_burst = burst;
        self
    }

    /// Makes banked tokens decay exponentially with time constant `ttl` (between 1 ms and one
    /// day), so old successes stop funding retries: a token is worth `e^(−age/ttl)`, under 5%
    /// after `3 × ttl`. The decay is applied lazily, by the first call after each tick of
    /// `ttl / 16`. With deposits arriving steadily the balance settles where Finagle's
    /// sliding TTL window of the same length would put it. Only the tokens above the
    /// [`reserve`](Self::reserve) decay. Default 500 ms.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = Some(ttl);
        self
    }

    /// Turns decay off: banked tokens last until spent, up to `max_tokens`.
    pub fn no_decay(mut self) -> Self {
        self.config.ttl = None;
        self
    }

    /// Tokens that do not decay while the client is quiet (see [`QUIET_WINDOW`]), in
    /// `[0, max_tokens]`: the first `reserve` tokens of the balance. Default 1, so a client
    /// that sends one request a minute keeps the token that ten successes earned and can retry
    /// its next failure. A busy client keeps none: its bank is what its own traffic earned.
    pub fn reserve(mut self, reserve: f64) -> Self {
        self.config.reserve = reserve;
        self
    }

    /// Seeds the random source that decides whether a fraction of a token is lent (see the
    /// [module docs](self)), for reproducible runs. Default: seeded once from the system
    /// clock. Give each client of a simulated fleet its own seed: budgets that share one lend
    /// in step.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The `name` label of the budget's metrics and tracing events. Default `"default"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Validates the configuration and builds the budget, starting its clock at tokio's
    /// `Instant::now()`.
    pub fn build(self) -> Result<Arc<RetryBudget>, ConfigError> {
        self.build_at(Instant::now())
    }

    /// Like [`build`](Self::build), with the budget's clock starting at `now`.
    pub fn build_at(self, now: Instant) -> Result<Arc<RetryBudget>, ConfigError> {
        RetryBudget::build_from(self.config, self.name, now, self.seed).map(Arc::new)
    }
}

impl RetryBudget {
    /// Starts from the defaults: ratio 0.1, 100,000 tokens at most, a reserve of 1 token (also the
    /// balance at first), tokens above it decaying with a 500 ms time constant, no floor.
    pub fn builder() -> RetryBudgetBuilder {
        RetryBudgetBuilder::default()
    }

    /// Builds a budget from `config`, its clock starting at `now`. Its random source (see
    /// [`RetryBudgetBuilder::seed`]) is seeded from the system clock.
    pub fn from_config(
        config: BudgetConfig,
        name: String,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        Self::build_from(config, name, now, None)
    }

    fn build_from(
        config: BudgetConfig,
        name: String,
        now: Instant,
        seed: Option<u64>,
    ) -> Result<Self, ConfigError> {
        if let Some(ttl) = config.ttl
            && (ttl < Duration::from_millis(1) || ttl > Duration::from_secs(86_400))
        {
            return Err(ConfigError::new("ttl", "must be between 1 ms and one day"));
        }
        let bucket = TokenBucket::new(config.ratio, config.max_tokens, config.initial)
            .map_err(|e| ConfigError::new(e.field(), e.reason()))?;
        let m = config.min_per_sec;
        // 0 turns the floor off; otherwise at least one attempt a day, so the floor's period
        // (1 / m) is a day at most and always fits a `Duration`.
        if !(m == 0.0 || (m.is_finite() && (MIN_FLOOR_PER_SEC..=1e6).contains(&m))) {
            return Err(ConfigError::new(
                "min_per_sec",
                "must be 0 or in [1/86400, 1e6] (at least one attempt a day)",
            ));
        }
        let burst = NonZeroU32::new(config.floor_burst)
            .ok_or(ConfigError::new("floor_burst", "must be at least 1"))?;
        let floor = if m > 0.0 {
            let quota = Quota::with_period(Duration::from_secs_f64(1.0 / m))
                .ok_or(ConfigError::new(
                    "min_per_sec",
                    "must be 0 or in [1/86400, 1e6] (at least one attempt a day)",
                ))?
                .allow_burst(burst);
            Some(RateLimiter::direct_with_clock(quota, TokioClock::new(now)))
        } else {
            None
        };
        if !(config.reserve.is_finite() && (0.0..=config.max_tokens).contains(&config.reserve)) {
            return Err(ConfigError::new("reserve", "must be in [0, max_tokens]"));
        }
        let decay = config.ttl.map(|ttl| Decay {
            ttl_secs: ttl.as_secs_f64(),
            // Sixteen steps per time constant: fine-grained enough to track it, rare enough
            // that the decay's compare-and-swap stays off the hot path.
            tick_ns: u64::try_from((ttl / 16).as_nanos()).unwrap_or(u64::MAX),
            last: AtomicU64::new(0),
            after: AtomicU64::new(config.initial.to_bits()),
            traffic: AtomicU64::new(0f64.to_bits()),
        });
        let gauge = metrics::gauge!(
            damper_core::metrics::RETRY_BUDGET_BALANCE,
            damper_core::metrics::LABEL_NAME => name.clone()
        );
        let whole = config.initial.floor();
        gauge.set(whole);
        let seed = seed.unwrap_or_else(damper_core::rng::clock_seed);
        Ok(Self {
            bucket,
            floor,
            decay,
            debt: AtomicU64::new(0f64.to_bits()),
            rng: AtomicRng::new(seed),
            base: Origin::new(now),
            published: AtomicU64::new(whole as u64),
            exhausted: AtomicBool::new(false),
            gauge,
            name,
            config,
        })
    }

    /// The configuration the budget was built with.
    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// The budget's `name` label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The floor's replenish interval (`1 / min_per_sec`, rounded to nanoseconds), if it has a
    /// floor.
    pub fn floor_interval(&self) -> Option<Duration> {
        self.config
            .min_per_sec
            .gt(&0.0)
            .then(|| Duration::from_secs_f64(1.0 / self.config.min_per_sec))
    }

    /// Gives back one token that [`try_withdraw`](Budget::try_withdraw) granted for an
    /// attempt that was then not sent (another budget refused it, say), up to `max_tokens`.
    /// A lent token given back leaves its debt to be repaid as usual, so the bucket ends where
    /// it was before the withdrawal.
    pub fn refund(&self) {
        self.bucket.deposit_tokens(1.0);
        self.publish();
    }

    /// Applies decay up to `now`, if due; at most one caller per tick does the work. `ask`:
    /// the caller is a withdrawal request, which counts as traffic.
    #[inline]
    fn decay(&self, now: Instant, ask: bool) {
        if let Some(d) = &self.decay {
            self.decay_slow(d, now, ask);
        }
    }

    fn decay_slow(&self, d: &Decay, now: Instant, ask: bool) {
        let now_ns = self.base.nanos(now);
        let last = d.last.load(Ordering::Relaxed);
        if now_ns < last.saturating_add(d.tick_ns) {
            return;
        }
        if d.last
            .compare_exchange(last, now_ns, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return; // another caller is applying this tick
        }
        let dt = (now_ns - last) as f64 / 1e9;
        let balance = self.bucket.balance();
        let after = f64::from_bits(d.after.load(Ordering::Relaxed));
        // Traffic: the good responses credited since the last application (taken to have
        // arrived evenly over `dt`) and this withdrawal request, on top of the older traffic
        // decayed over `dt`.
        let window = QUIET_WINDOW.as_secs_f64();
        let good = (balance - after).max(0.0) / self.bucket.ratio();
        let traffic = f64::from_bits(d.traffic.load(Ordering::Relaxed)) * (-dt / window).exp()
            + spread(good, dt, window)
            + f64::from(u8::from(ask));
        d.traffic.store(traffic.to_bits(), Ordering::Relaxed);
        let reserve = if traffic * self.config.ratio < 1.0 {
            self.config.reserve
        } else {
            0.0
        };
        // What was above the reserve after the last application decays for the whole `dt`.
        // Anything credited since is taken to have arrived evenly over `dt`, so steady traffic
        // at `r` good responses per second leaves `ratio × r × ttl` above the reserve however
        // rarely this runs.
        // A loan is repaid before anything decays: what the client earns while it owes goes
        // to the debt.
        let balance = balance - self.repay();
        let above = balance - reserve;
        let before = (after - reserve).max(0.0).min(balance.max(0.0));
        let kept = if above <= 0.0 {
            above
        } else if above > before {
            before * (-dt / d.ttl_secs).exp() + spread(above - before, dt, d.ttl_secs)
        } else {
            above * (-dt / d.ttl_secs).exp()
        };
        if above > kept {
            self.bucket.drain(above - kept);
        }
        d.after.store((reserve + kept).to_bits(), Ordering::Relaxed);
        self.publish();
    }

    /// Publishes the whole-token balance to the gauge when it changed, and logs refills.
    #[inline]
    fn publish(&self) {
        let balance = self.bucket.balance();
        let whole = balance as u64;
        if self.published.load(Ordering::Relaxed) != whole {
            self.published.store(whole, Ordering::Relaxed);
            self.gauge.set(whole as f64);
        }
        if whole >= 1 && self.exhausted.load(Ordering::Relaxed) {
            self.refilled(balance);
        }
    }

    #[cold]
    fn refilled(&self, balance: f64) {
        if self.exhausted.swap(false, Ordering::Relaxed) {
            tracing::debug!(name = %self.name, balance, "retry budget refilled");
        }
    }

    #[cold]
    fn ran_dry(&self) {
        if !self.exhausted.swap(true, Ordering::Relaxed) {
            tracing::debug!(name = %self.name, "retry budget exhausted");
        }
    }

    /// When the bucket holds less than a whole token: repays what the last lent token still
    /// owes from that fraction, then lends a whole token with probability equal to what is
    /// left, taking it all. One token at most is lent and unpaid at a time.
    fn lend(&self) -> bool {
        self.repay();
        let zero = 0f64.to_bits();
        if self.debt.load(Ordering::Acquire) != zero {
            return false;
        }
        let fraction = self.bucket.balance();
        if !(fraction > 0.0 && fraction < 1.0) || self.rng.next_f64() >= fraction {
            return false;
        }
        if self
            .debt
            .compare_exchange(zero, 1f64.to_bits(), Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false; // another caller is lending
        }
        let taken = self.bucket.drain(fraction);
        self.debt
            .store((1.0 - taken).max(0.0).to_bits(), Ordering::Relaxed);
        true
    }

    /// Repays what the last loan still owes from the bucket, as far as it can; returns what
    /// it took.
    fn repay(&self) -> f64 {
        let bits = self.debt.load(Ordering::Acquire);
        if bits == 0f64.to_bits() {
            return 0.0;
        }
        let owed = f64::from_bits(bits);
        let paid = self.bucket.drain(owed);
        // The bucket counts millionths of a token: less than one of them left is nothing left.
        let left = owed - paid;
        let left = if left >= 1e-6 { left } else { 0.0 };
        // A racing repayment drains as well (which only removes tokens); only one of them
        // records what is left.
        let _ =
            self.debt
                .compare_exchange(bits, left.to_bits(), Ordering::AcqRel, Ordering::Relaxed);
        paid
    }

    #[inline(never)]
    fn take_floor(&self, now: Instant) -> bool {
        match &self.floor {
            None => false,
            Some(floor) => {
                floor.clock().observe(now);
                floor.check().is_ok()
            }
        }
    }
}

/// What `amount`, arriving evenly over the last `dt` seconds, is worth now when each part of
/// it is weighted `e^(−age / tau)`: `amount × (tau / dt)(1 − e^(−dt / tau))`.
fn spread(amount: f64, dt: f64, tau: f64) -> f64 {
    if dt <= 0.0 {
        amount
    } else {
        amount * (tau / dt) * (1.0 - (-dt / tau).exp())
    }
}

impl Budget for RetryBudget {
    #[inline]
    fn deposit(&self, _now: Instant) {
        // Deposits do not apply the decay and never read `now` (see `Decay`): the retry layer
        // dates them with the instant it was built at, to skip the clock. The next withdrawal
        // applies the decay, counting what was credited since the last one as earned evenly
        // over that time. A deposit into a full bucket changes nothing: no gauge work.
        if self.bucket.deposit() {
            self.publish();
        }
    }

    #[inline]
    fn try_withdraw(&self, now: Instant) -> bool {
        self.decay(now, true);
        if self.bucket.try_withdraw() {
            // The gauge catches up at the next deposit or refusal: no gauge work on this path.
            return true;
        }
        self.publish();
        if self.lend() {
            return true;
        }
        if self.take_floor(now) {
            return true;
        }
        if !self.exhausted.load(Ordering::Relaxed) {
            self.ran_dry();
        }
        false
    }

    /// The bucket's balance at `now` (after any due decay). The floor is not included: it is
    /// a rate, not a balance.
    #[inline]
    fn balance(&self, now: Instant) -> f64 {
        self.decay(now, false);
        self.bucket.balance()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let cases: Vec<(RetryBudgetBuilder, &str)> = vec![
            (RetryBudget::builder().ratio(0.0), "ratio"),
            (RetryBudget::builder().ratio(1.01), "ratio"),
            (RetryBudget::builder().ratio(f64::NAN), "ratio"),
            (RetryBudget::builder().max_tokens(0.5), "max_tokens"),
            (
                RetryBudget::builder().max_tokens(f64::INFINITY),
                "max_tokens",
            ),
            (RetryBudget::builder().initial(100_001.0), "initial"),
            (RetryBudget::builder().reserve(-1.0), "reserve"),
            (RetryBudget::builder().reserve(f64::NAN), "reserve"),
            (
                RetryBudget::builder().max_tokens(5.0).reserve(6.0),
                "reserve",
            ),
            (RetryBudget::builder().min_per_sec(-1.0), "min_per_sec"),
            (RetryBudget::builder().min_per_sec(f64::NAN), "min_per_sec"),
            (RetryBudget::builder().min_per_sec(2e6), "min_per_sec"),
            // Regression: a tiny positive floor used to panic in `Duration::from_secs_f64(1 / m)`.
            (RetryBudget::builder().min_per_sec(1e-300), "min_per_sec"),
            (RetryBudget::builder().min_per_sec(1e-20), "min_per_sec"),
            (
                RetryBudget::builder().min_per_sec(f64::MIN_POSITIVE),
                "min_per_sec",
            ),
            (RetryBudget::builder().min_per_sec(1e-6), "min_per_sec"),
            (RetryBudget::builder().floor_burst(0), "floor_burst"),
            (RetryBudget::builder().ttl(Duration::ZERO), "ttl"),
            (
                RetryBudget::builder().ttl(Duration::from_secs(100_000)),
                "ttl",
            ),
        ];
        for (builder, field) in cases {
            assert_eq!(builder.build().unwrap_err().field(), field);
        }
        assert!(RetryBudget::builder().min_per_sec(0.0).build().is_ok());
        assert!(RetryBudget::builder().min_per_sec(0.5).build().is_ok());
        // One attempt a day is the slowest floor; its interval is exactly a day.
        let daily = RetryBudget::builder()
            .min_per_sec(1.0 / 86_400.0)
            .build()
            .unwrap();
        let interval = daily.floor_interval().unwrap();
        assert!(interval.abs_diff(Duration::from_secs(86_400)) < Duration::from_micros(1));
    }

    #[test]
    fn defaults_are_documented_ones() {
        let b = RetryBudget::builder().build().unwrap();
        let c = b.config();
        assert_eq!(c.ratio, 0.1);
        assert_eq!(c.max_tokens, 100_000.0);
        assert_eq!(c.initial, 1.0);
        assert_eq!(c.reserve, 1.0);
        assert_eq!(c.min_per_sec, 0.0);
        assert_eq!(c.floor_burst, 1);
        assert_eq!(c.ttl, Some(Duration::from_millis(500)));
    }

    /// Deposits `rate` successes per second for `secs` seconds, then counts the withdrawals an
    /// outage's first instant gets.
    fn onset_burst(b: &RetryBudget, base: Instant, rate: u64, secs: u64) -> usize {
        let n = rate * secs;
        for i in 0..n {
            b.deposit(base + Duration::from_nanos(i * 1_000_000_000 / rate));
        }
        let end = base + Duration::from_secs(secs);
        (0..100_000).filter(|_| b.try_withdraw(end)).count()
    }

    #[test]
    fn the_bank_follows_the_clients_own_rate() {
        // ratio × rate × ttl: 0.1 × rate × 0.5 s, less the decay of the tick in progress (at
        // most ttl / 16). A client this busy keeps no reserve, so at 10 rps and below the bank
        // (half a token or less) pays no whole token; the fraction left over may be lent as one
        // more.
        for (rate, low, high) in [(1_000, 45, 51), (100, 4, 6), (10, 0, 1), (2, 0, 1)] {
            let base = Instant::now();
            let b = RetryBudget::builder().build_at(base).unwrap();
            let burst = onset_burst(&b, base, rate, 20);
            assert!((low..=high).contains(&burst), "{rate} rps: {burst}");
        }
        // Without decay the same 20 s at 1,000 rps bank 2,000 tokens (and the initial one).
        let base = Instant::now();
        let b = RetryBudget::builder().no_decay().build_at(base).unwrap();
        assert_eq!(onset_burst(&b, base, 1_000, 20), 2_001);
    }

    #[test]
    fn the_reserve_outlives_a_quiet_minute() {
        // One request a minute: ten successes over ten minutes earn a token, and it is still
        // there a minute later, whatever the decay.
        let base = Instant::now();
        let b = RetryBudget::builder().initial(0.0).build_at(base).unwrap();
        for m in 0..10 {
            b.deposit(t(base, m * 60_000));
        }
        assert!(b.try_withdraw(t(base, 11 * 60_000)));
        assert!(!b.try_withdraw(t(base, 11 * 60_000)));
        // With no reserve the decay takes it.
        let c = RetryBudget::builder()
            .initial(0.0)
            .reserve(0.0)
            .build_at(base)
            .unwrap();
        for m in 0..10 {
            c.deposit(t(base, m * 60_000));
        }
        assert!(!c.try_withdraw(t(base, 11 * 60_000)));
    }

    #[test]
    fn only_a_quiet_client_keeps_its_reserve() {
        // Half a request a second: five good responses in the last ten seconds cannot earn a
        // token, so the client is quiet and keeps the reserve through an outage's onset.
        let base = Instant::now();
        let slow = RetryBudget::builder().build_at(base).unwrap();
        for i in 0..10 {
            slow.deposit(t(base, i * 2_000));
        }
        assert!(slow.try_withdraw(t(base, 20_000)));
        // Two requests a second are busy: no reserve at the onset, and none comes back while
        // the failures keep coming (each withdrawal request counts as traffic). What is left is
        // the tenth of a token the last half second earned, lent one time in ten.
        let busy_outage = |seed: u64| {
            let base = Instant::now();
            let busy = RetryBudget::builder().seed(seed).build_at(base).unwrap();
            for i in 0..40 {
                busy.deposit(t(base, i * 500));
            }
            let paid = (0..60)
                .filter(|i| busy.try_withdraw(t(base, 20_000 + i * 500)))
                .count();
            (busy, base, paid)
        };
        let paid: usize = (0..200).map(|seed| busy_outage(seed).2).sum();
        assert!(paid <= 40, "{paid} retries in 200 outages");
        let (busy, base, _) = busy_outage(0);
        // Once the client is quiet again, ten successes rebuild the reserve.
        for m in 1..=10 {
            busy.deposit(t(base, 50_000 + m * 60_000));
        }
        assert!(busy.try_withdraw(t(base, 50_000 + 11 * 60_000)));
    }

    #[test]
    fn a_new_budget_can_retry_its_first_failure() {
        let base = Instant::now();
        let b = RetryBudget::builder().build_at(base).unwrap();
        assert!(b.try_withdraw(base));
        assert!(!b.try_withdraw(base));
    }

    #[test]
    fn ten_successes_pay_for_one_retry() {
        let base = Instant::now();
        let b = RetryBudget::builder().initial(0.0).build_at(base).unwrap();
        for _ in 0..10 {
            b.deposit(base);
        }
        assert!(b.try_withdraw(base));
        // Nothing left to pay or lend.
        assert!(!b.try_withdraw(base));
    }

    #[test]
    fn a_fraction_of_a_token_is_lent_with_that_probability_and_repaid_first() {
        // Nine successes: 0.9 of a token, lent as a whole one nine times in ten.
        let lent = (0..2_000u64)
            .filter(|&seed| {
                let base = Instant::now();
                let b = RetryBudget::builder()
                    .initial(0.0)
                    .no_decay()
                    .seed(seed)
                    .build_at(base)
                    .unwrap();
                for _ in 0..9 {
                    b.deposit(base);
                }
                b.try_withdraw(base)
            })
            .count();
        assert!((1_740..=1_860).contains(&lent), "{lent}");
        // After a loan of 0.1 more than it held, the budget owes 0.1: the next 0.9 repays it
        // first, so the fraction it can lend is 0.8 and one more whole token pays for one
        // retry, not two.
        let base = Instant::now();
        let b = RetryBudget::builder()
            .initial(0.0)
            .no_decay()
            .seed(1)
            .build_at(base)
            .unwrap();
        for _ in 0..9 {
            b.deposit(base);
        }
        while !b.try_withdraw(base) {
            b.deposit(base); // at most one more deposit: a whole token then pays
        }
        let owed = f64::from_bits(b.debt.load(Ordering::Relaxed));
        assert!(owed <= 0.1 + 1e-9, "{owed}");
        let (mut deposits, mut paid) = (0, 0);
        for _ in 0..100 {
            for _ in 0..10 {
                b.deposit(base);
                deposits += 1;
            }
            paid += usize::from(b.try_withdraw(base));
            paid += usize::from(b.try_withdraw(base));
        }
        // 100 tokens credited, 0.1 owed: at most 100 withdrawals, loans included.
        assert!(paid <= deposits / 10, "{paid}");
        assert!(paid >= 99, "{paid}");
    }

    #[test]
    fn the_cap_bounds_the_burst_at_outage_onset() {
        let base = Instant::now();
        let b = RetryBudget::builder()
            .max_tokens(10.0)
            .no_decay()
            .build_at(base)
            .unwrap();
        for _ in 0..100_000 {
            b.deposit(base);
        }
        let burst = (0..1000).filter(|_| b.try_withdraw(base)).count();
        assert_eq!(burst, 10);
    }

    #[test]
    fn the_floor_admits_min_per_sec_when_the_bucket_is_empty() {
        let base = Instant::now();
        let b = RetryBudget::builder()
            .min_per_sec(10.0)
            .initial(0.0)
            .build_at(base)
            .unwrap();
        // Burst 1 at the start, then one every 100 ms.
        assert!(b.try_withdraw(base));
        assert!(!b.try_withdraw(base));
        assert!(!b.try_withdraw(t(base, 99)));
        assert!(b.try_withdraw(t(base, 100)));
        assert!(!b.try_withdraw(t(base, 150)));
        // Over ten seconds, about 10 per second.
        let mut n = 0;
        for ms in (200..10_200).step_by(5) {
            n += b.try_withdraw(t(base, ms)) as u32;
        }
        assert_eq!(n, 100);
    }

    #[test]
    fn the_bucket_pays_before_the_floor() {
        let base = Instant::now();
        let b = RetryBudget::builder()
            .initial(2.0)
            .min_per_sec(1.0)
            .build_at(base)
            .unwrap();
        assert!(b.try_withdraw(base));
        assert!(b.try_withdraw(base));
        assert_eq!(b.balance(base), 0.0);
        // The floor is still whole.
        assert!(b.try_withdraw(base));
        assert!(!b.try_withdraw(base));
    }

    #[test]
    fn decay_forgets_old_successes() {
        let base = Instant::now();
        let b = RetryBudget::builder()
            .initial(10.0)
            .reserve(0.0)
            .ttl(Duration::from_secs(10))
            .build_at(base)
            .unwrap();
        assert_eq!(b.balance(base), 10.0);
        let after_one_ttl = b.balance(t(base, 10_000));
        assert!(
            (after_one_ttl - 10.0 / std::f64::consts::E).abs() < 1e-3,
            "{after_one_ttl}"
        );
        let after_three = b.balance(t(base, 30_000));
        assert!(after_three < 0.5, "{after_three}");
        // Decay in many small steps compounds to the same result as one big step, up to the
        // decay not yet applied in the current tick (ttl / 16).
        let c = RetryBudget::builder()
            .initial(10.0)
            .reserve(0.0)
            .ttl(Duration::from_secs(10))
            .build_at(base)
            .unwrap();
        for ms in (0..=10_000).step_by(7) {
            c.balance(t(base, ms));
        }
        let stepped = c.balance(t(base, 10_000));
        let lag = (1.0f64 / 16.0).exp();
        assert!(
            stepped >= after_one_ttl - 1e-3 && stepped <= after_one_ttl * lag + 1e-3,
            "{stepped}"
        );
    }

    #[test]
    fn decay_reaches_tokens_leased_to_a_thread() {
        let base = Instant::now();
        let b = RetryBudget::builder()
            .ratio(1.0)
            .max_tokens(1000.0)
            .initial(1000.0)
            .reserve(0.0)
            .ttl(Duration::from_secs(10))
            .build_at(base)
            .unwrap();
        // The first withdrawal leases 64 tokens to this thread's stripe: 63 stay there.
        assert!(b.try_withdraw(base));
        assert_eq!(b.balance(base), 999.0);
        let e = std::f64::consts::E;
        let one = b.balance(t(base, 10_000));
        assert!((one - 999.0 / e).abs() < 1e-6, "{one}");
        // Three time constants take more than the shared balance held: the leased tokens are
        // recalled and decay with the rest.
        let three = b.balance(t(base, 30_000));
        assert!((three - 999.0 / e.powi(3)).abs() < 1e-6, "{three}");
        let paid = (0..1000)
            .filter(|_| b.try_withdraw(t(base, 30_000)))
            .count();
        // Every whole token pays, and the fraction left may be lent as one more.
        let whole = three.floor() as usize;
        assert!(paid == whole || paid == whole + 1, "{paid} for {three}");
        // Nothing is lost to the stripes: deposits fill the bucket back to its cap.
        for _ in 0..20_000 {
            b.deposit(t(base, 30_000));
        }
        assert_eq!(b.balance(t(base, 30_000)), 1000.0);
    }

    #[test]
    fn concurrent_withdrawals_never_overdraw() {
        let base = Instant::now();
        let b = RetryBudget::builder()
            .min_per_sec(0.0)
            .max_tokens(1000.0)
            .initial(100.0)
            .build_at(base)
            .unwrap();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..1000).filter(|_| b.try_withdraw(base)).count())
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 100);
        assert_eq!(b.balance(base), 0.0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Deposit,
        Withdraw,
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Deposit),
            4 => Just(Op::Withdraw),
            1 => (0u64..2_000).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// extra attempts ≤ initial + ratio × deposits + 1 + floor_burst + min_per_sec ×
        /// elapsed (the one: a loan not yet repaid), and the bucket pays whenever it holds a
        /// whole token.
        #[test]
        fn the_bound_holds_over_any_sequence(
            ratio in 0.01f64..=1.0,
            max_tokens in 1.0f64..50.0,
            initial_frac in 0.0f64..=1.0,
            min_per_sec in prop_oneof![Just(0.0), 0.1f64..100.0],
            burst in 1u32..5,
            ttl_ms in prop_oneof![Just(None), (1u64..60_000).prop_map(Some)],
            ops in proptest::collection::vec(op(), 0..400),
        ) {
            let base = Instant::now();
            let initial = (max_tokens * initial_frac).min(max_tokens);
            let mut builder = RetryBudget::builder()
                .ratio(ratio)
                .max_tokens(max_tokens)
                .initial(initial)
                .min_per_sec(min_per_sec)
                .floor_burst(burst);
            if let Some(ms) = ttl_ms {
                builder = builder.ttl(Duration::from_millis(ms));
            }
            let b = builder.build_at(base).unwrap();
            let (mut deposits, mut withdrawals, mut elapsed_ns) = (0u64, 0u64, 0u64);
            for op in ops {
                let now = base + Duration::from_nanos(elapsed_ns);
                match op {
                    Op::Deposit => {
                        b.deposit(now);
                        deposits += 1;
                    }
                    Op::Withdraw => {
                        let had_token = b.balance(now) >= 1.0;
                        let ok = b.try_withdraw(now);
                        prop_assert!(!had_token || ok, "a whole token must pay");
                        withdrawals += ok as u64;
                    }
                    Op::Advance(ms) => elapsed_ns += ms * 1_000_000,
                }
                prop_assert!(b.balance(now) <= max_tokens + 1e-6);
                // The bucket's effective ratio (fixed point) and the floor's real interval.
                let from_bucket = initial + b.bucket.ratio() * deposits as f64 + 1.0;
                let from_floor = match b.floor_interval() {
                    None => 0.0,
                    Some(i) => f64::from(burst) + (elapsed_ns as f64 / i.as_nanos() as f64).floor(),
                };
                prop_assert!(
                    withdrawals as f64 <= from_bucket + from_floor + 1e-6,
                    "{withdrawals} > {from_bucket} + {from_floor}"
                );
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::thread;

    /// A budget with no floor, no reserve and a 1 s decay, its clock starting at `base`.
    fn decaying(ratio: f64, max: f64, initial: f64, base: Instant) -> Arc<RetryBudget> {
        RetryBudget::builder()
            .ratio(ratio)
            .max_tokens(max)
            .initial(initial)
            .reserve(0.0)
            .ttl(Duration::from_secs(1))
            .seed(1) // loans drawn the same way in every explored interleaving
            .build_at(base)
            .unwrap()
    }

    // Two withdrawals race a deposit and a decay tick over one banked token: no more is spent
    // than was credited, the decay is applied once, and the balance stays consistent.
    #[test]
    fn loom_composite_budget_never_overdraws() {
        loom::model(|| {
            let base = Instant::now();
            let b = decaying(0.5, 2.0, 1.0, base);
            let later = base + Duration::from_millis(100);
            let w = |b: Arc<RetryBudget>| thread::spawn(move || b.try_withdraw(later) as u32);
            let t1 = w(b.clone());
            let t2 = w(b.clone());
            let d = {
                let b = b.clone();
                thread::spawn(move || b.deposit(later))
            };
            let got = t1.join().unwrap() + t2.join().unwrap();
            d.join().unwrap();
            // 1 initial + 0.5 deposited, minus a decay: one whole token is spendable, and one
            // loan at most, owed until repaid.
            let owed = f64::from_bits(b.debt.load(Ordering::Relaxed));
            assert!(got <= 2 && (0.0..=1.0).contains(&owed), "{got} {owed}");
            let bal = b.bucket.balance();
            assert!(
                bal >= 0.0 && bal + f64::from(got) <= 1.5 + owed + 1e-9,
                "{bal}"
            );
            // The 100 ms tick was applied by exactly one caller.
            assert_eq!(
                b.decay.as_ref().unwrap().last.load(Ordering::Relaxed),
                100_000_000
            );
        });
    }

    // Threads on two stripes withdraw while a decay tick recalls the leased tokens: never more
    // is paid than was banked, nothing stays stuck in a stripe, and the cap is whole again once
    // deposits refill the bucket.
    #[test]
    fn loom_decay_recalls_leases_while_threads_withdraw() {
        loom::model(|| {
            let base = Instant::now();
            let b = decaying(1.0, 4.0, 4.0, base);
            // A lease of two: one paid, one left in stripe 0, two in the shared balance.
            assert!(b.try_withdraw(base));
            let later = base + Duration::from_millis(100);
            let on = |b: &Arc<RetryBudget>, stripe: usize, now: Instant| {
                let b = b.clone();
                thread::spawn(move || {
                    damper_core::budget::loom_pin_stripe(stripe);
                    b.try_withdraw(now) as u32
                })
            };
            // Stripe 0 spends its leased token while stripe 1 applies the decay tick (which
            // recalls that token) and then leases or steals.
            let t0 = on(&b, 0, base);
            let t1 = on(&b, 1, later);
            let got = t0.join().unwrap() + t1.join().unwrap();
            let left = b.bucket.balance();
            let owed = f64::from_bits(b.debt.load(Ordering::Relaxed));
            assert!(f64::from(got) + left <= 3.0 + owed + 1e-9, "{got} + {left}");
            let mut more = 0;
            while b.try_withdraw(later) {
                more += 1;
            }
            // Every whole token, and the fraction left may be lent as one more if no loan is
            // owed.
            let whole = left.floor();
            assert!(
                f64::from(more) == whole || f64::from(more) == whole + 1.0,
                "{more}"
            );
            for _ in 0..4 {
                b.deposit(later);
            }
            assert_eq!(b.bucket.balance(), 4.0);
        });
    }
}
