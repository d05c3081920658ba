//! The client stack: deadline → retry → hedge → breaker → client limit → adaptive timeout.

use crate::config::{
    BreakerModeConfig, ClientConfig, ConfigError, JitterConfig, LimitAlgorithm, LimitConfig,
};
use crate::optional::{Maybe, Optional};
use damper_core::backoff::{Backoff, Jitter};
use damper_core::budget::Budget;
use damper_core::classify::{Classify, Failure, FailureKind, Outcome, ResultClassifier};
use damper_core::histogram::LatencyHistogram;
use damper_core::pushback::Pushback;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tower_adaptive_timeout::deadline::{Deadline, PropagateDeadline};
use tower_adaptive_timeout::{
    AdaptiveTimeout, AdaptiveTimeoutLayer, DeadlineLayer, PropagateDeadlineLayer,
};
use tower_breaker::{Breaker, BreakerConfig, BreakerHandle, BreakerLayer, Mode};
use tower_hedge::{Hedge, HedgeHandle, HedgeLayer};
use tower_layer::Layer;
use tower_retry_budget::{Retry, RetryBudget, RetryLayer};
use tower_shed::{Shed, ShedHandle, ShedLayer};

/// The longest caller-set `grpc-timeout` a stack without a deadline of its own honours.
const MAX_CALLER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Builds the client stack. See the [crate docs](crate) for the order of the layers and how
/// they are coupled.
///
/// `C` classifies results for every layer, `R` decides which requests may be retried (and
/// copies them), `E` which may be hedged. [`ClientStack::new`] suits plain `Clone` requests;
/// the presets [`ClientStack::http`] and [`ClientStack::grpc`] pick the right ones for HTTP
/// and gRPC.
#[derive(Clone)]
pub struct ClientStack<
    C = ResultClassifier,
    R = tower_retry_budget::CloneAll,
    E = tower_hedge::Always,
> {
    config: ClientConfig,
    classifier: C,
    replay: R,
    eligible: E,
    seed: Option<u64>,
    /// The preset's choice when `config.propagate_deadline` is unset.
    propagate_default: bool,
}

impl<C, R, E> fmt::Debug for ClientStack<C, R, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientStack")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for ClientStack {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientStack {
    /// A stack for plain `Clone` requests: every `Err` is a retryable failure (except damper's
    /// own local rejections), every request may be retried and hedged.
    pub fn new() -> Self {
        Self {
            config: ClientConfig::default(),
            classifier: ResultClassifier::new(),
            replay: tower_retry_budget::CloneAll::default(),
            eligible: tower_hedge::Always::default(),
            seed: None,
            propagate_default: false,
        }
    }
}

#[cfg(feature = "http")]
impl
    ClientStack<
        damper_core::classify::HttpClassifier,
        tower_retry_budget::Idempotent,
        tower_hedge::Idempotent,
    >
{
    /// The HTTP preset: responses classified by status (5xx failures; 429/502/503/504
    /// retryable; 429 and 503 overload with `Retry-After` honoured); only idempotent requests
    /// (safe methods or an `Idempotency-Key`) are retried or hedged, with bodies replayed up to
    /// 64 KiB. The deadline is enforced but not sent: turn
    /// [`propagate_deadline`](ClientStack::propagate_deadline) on to send it as
    /// `grpc-timeout` to servers that read it (damper's `ServerStack` does).
    pub fn http() -> Self {
        ClientStack {
            config: ClientConfig::default(),
            classifier: damper_core::classify::HttpClassifier::new(),
            replay: tower_retry_budget::Idempotent::default(),
            eligible: tower_hedge::Idempotent::default(),
            seed: None,
            propagate_default: false,
        }
    }
}

#[cfg(feature = "grpc")]
impl
    ClientStack<
        damper_core::classify::GrpcClassifier,
        tower_retry_budget::Idempotent,
        tower_hedge::Idempotent,
    >
{
    /// The gRPC preset, for services of `http::Request`s such as a tonic channel (put it around
    /// a `tonic::transport::Channel` with [`build_tonic`](ClientStack::build_tonic), feature
    /// `tonic`, for generated clients): results
    /// classified by `grpc-status` (`UNAVAILABLE`, `ABORTED`, `RESOURCE_EXHAUSTED` and
    /// `DEADLINE_EXCEEDED` retryable; `grpc-retry-pushback-ms` honoured); the deadline travels
    /// as `grpc-timeout`, and a `grpc-timeout` the caller set (tonic's
    /// `Request::set_timeout`) bounds the call even without a stack deadline. gRPC calls are
    /// `POST`s, so only those carrying an `Idempotency-Key` header are retried or hedged;
    /// hedging is off by default.
    pub fn grpc() -> Self {
        let mut config = ClientConfig::default();
        config.hedge.enabled = false;
        ClientStack {
            config,
            classifier: damper_core::classify::GrpcClassifier::new(),
            replay: tower_retry_budget::Idempotent::default(),
            eligible: tower_hedge::Idempotent::default(),
            seed: None,
            propagate_default: true,
        }
    }
}

impl<C, R, E> ClientStack<C, R, E> {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// The configuration so far.
    pub fn config_ref(&self) -> &ClientConfig {
        &self.config
    }

    /// Edits the configuration in place: `stack.configure(|c| c.retry.max_attempts = Some(2))`.
    pub fn configure(mut self, f: impl FnOnce(&mut ClientConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// The `name` label on every metric of the stack.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = Some(name.into());
        self
    }

    /// The deadline of each logical request, across all attempts and hedges. A shorter
    /// `grpc-timeout` already on a request wins; each attempt carries the time left when it is
    /// sent as `grpc-timeout`.
    pub fn deadline(mut self, deadline: std::time::Duration) -> Self {
        self.config.deadline = Some(deadline);
        self
    }

    /// Whether each attempt carries the time left as `grpc-timeout` (and a caller's own
    /// `grpc-timeout` is honoured without a stack deadline). On for the gRPC preset, off
    /// otherwise; same as `config.propagate_deadline`.
    pub fn propagate_deadline(mut self, on: bool) -> Self {
        self.config.propagate_deadline = Some(on);
        self
    }

    /// Seeds every source of jitter (and the retry budget's loans), for reproducible runs.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Turns retries on or off (on by default).
    pub fn retries(mut self, on: bool) -> Self {
        self.config.retry.enabled = on;
        self
    }

    /// Turns hedging on or off.
    pub fn hedging(mut self, on: bool) -> Self {
        self.config.hedge.enabled = on;
        self
    }

    /// Turns the circuit breaker on or off (on by default).
    pub fn breaker(mut self, on: bool) -> Self {
        self.config.breaker.enabled = on;
        self
    }

    /// Turns the client-side concurrency limit on or off (off by default).
    pub fn limit(mut self, on: bool) -> Self {
        self.config.limit.enabled = Some(on);
        self
    }

    /// Turns the adaptive timeout on or off (on by default).
    pub fn timeout(mut self, on: bool) -> Self {
        self.config.timeout.enabled = on;
        self
    }

    /// Sets the classifier every layer uses.
    pub fn classifier<C2>(self, classifier: C2) -> ClientStack<C2, R, E> {
        ClientStack {
            config: self.config,
            classifier,
            replay: self.replay,
            eligible: self.eligible,
            seed: self.seed,
            propagate_default: self.propagate_default,
        }
    }

    /// Sets which requests may be retried, and how they are copied.
    pub fn replay<R2>(self, replay: R2) -> ClientStack<C, R2, E> {
        ClientStack {
            config: self.config,
            classifier: self.classifier,
            replay,
            eligible: self.eligible,
            seed: self.seed,
            propagate_default: self.propagate_default,
        }
    }

    /// Sets which requests may be hedged.
    pub fn eligible<E2>(self, eligible: E2) -> ClientStack<C, R, E2> {
        ClientStack {
            config: self.config,
            classifier: self.classifier,
            replay: self.replay,
            eligible,
            seed: self.seed,
            propagate_default: self.propagate_default,
        }
    }

    /// Wraps the hedge eligibility, for adapters that add a rule of their own.
    #[cfg(any(feature = "reqwest", feature = "tonic"))]
    pub(crate) fn map_eligible<E2>(self, f: impl FnOnce(E) -> E2) -> ClientStack<C, R, E2> {
        let eligible = f(self.eligible);
        ClientStack {
            config: self.config,
            classifier: self.classifier,
            replay: self.replay,
            eligible,
            seed: self.seed,
            propagate_default: self.propagate_default,
        }
    }

    /// Validates the configuration and builds the layer. Errors name the offending field, as
    /// `client.breaker.failure_rate`.
    pub fn build(self) -> Result<ClientLayer<C, R, E>, ConfigError>
    where
        C: Clone,
    {
        let cfg = &self.config;
        let name = cfg.name.clone().unwrap_or_else(|| "client".to_owned());
        let histogram = Arc::new(LatencyHistogram::new(tokio::time::Instant::now()));

        // The budget is built even when both retries and hedges are off: it is cheap, and the
        // handle stays uniform.
        let b = &cfg.budget;
        let mut budget = RetryBudget::builder().name(name.clone());
        if let Some(v) = b.ratio {
            budget = budget.ratio(v);
        }
        if let Some(v) = b.max_tokens {
            budget = budget.max_tokens(v);
        }
        if let Some(v) = b.initial {
            budget = budget.initial(v);
        }
        if let Some(v) = b.min_per_sec {
            budget = budget.min_per_sec(v);
        }
        if let Some(v) = b.ttl {
            budget = budget.ttl(v);
        }
        if let Some(v) = b.reserve {
            budget = budget.reserve(v);
        }
        if let Some(s) = self.seed {
            // Its own stream: the layers below draw from the same seed.
            budget = budget.seed(s ^ 0xB0D6_E7B0_D6E7_B0D6);
        }
        let budget = budget
            .build()
            .map_err(|e| field_err("client.budget", e.field(), e.reason()))?;

        let propagates = cfg.propagate_deadline.unwrap_or(self.propagate_default);
        // With no deadline of its own, a propagating stack still bounds a request by the
        // `grpc-timeout` its caller set, up to the longest a header can say.
        let accept = cfg.deadline.or(propagates.then_some(MAX_CALLER_TIMEOUT));
        let deadline = match accept {
            Some(max) => {
                let mut b = DeadlineLayer::builder()
                    // A `grpc-timeout` the caller already put on the request (tonic's
                    // `Request::set_timeout` does) is a deadline too: the earlier one wins.
                    .accept_grpc_timeout(max)
                    // Written per attempt at the bottom instead, where each retry and hedge
                    // says what is left when it is sent.
                    .propagate(false)
                    .name(name.clone());
                if let Some(d) = cfg.deadline {
                    b = b.timeout(d);
                }
                Some(
                    b.build()
                        .map_err(|e| field_err("client", "deadline", e.reason()))?,
                )
            }
            None => None,
        };
        // One service type whether or not it propagates: no `Maybe` level (each doubles the
        // stack's type).
        let propagate = PropagateDeadlineLayer::enabled(propagates);

        let retry = if cfg.retry.enabled {
            let r = &cfg.retry;
            let mut backoff = Backoff::builder();
            if let Some(v) = r.backoff_min {
                backoff = backoff.min(v);
            }
            if let Some(v) = r.backoff_max {
                backoff = backoff.max(v);
            }
            if let Some(v) = r.backoff_multiplier {
                backoff = backoff.multiplier(v);
            }
            if let Some(j) = r.jitter {
                backoff = backoff.jitter(match j {
                    JitterConfig::Full => Jitter::Full,
                    JitterConfig::Decorrelated => Jitter::Decorrelated,
                    JitterConfig::Equal => Jitter::Equal,
                    JitterConfig::None => Jitter::None,
                });
            }
            let backoff = backoff.build().map_err(|e| {
                let field = match e.field() {
                    "min" => "backoff_min",
                    "max" => "backoff_max",
                    "multiplier" => "backoff_multiplier",
                    other => other,
                };
                field_err("client.retry", field, &e.to_string())
            })?;
            let mut l = RetryLayer::builder(budget.clone())
                .classifier(self.classifier.clone())
                .replay(self.replay)
                .backoff(backoff)
                .name(name.clone());
            if let Some(v) = r.max_attempts {
                l = l.max_attempts(v);
            }
            if let Some(v) = r.max_pushback {
                l = l.max_pushback(v);
            }
            if let Some(v) = r.min_attempt_time {
                l = l.min_attempt_time(v);
            }
            if let Some(s) = self.seed {
                l = l.seed(s);
            }
            Some(
                l.build()
                    .map_err(|e| field_err("client.retry", e.field(), e.reason()))?,
            )
        } else {
            None
        };

        let hedge = if cfg.hedge.enabled {
            let h = &cfg.hedge;
            let shared: Arc<dyn Budget> = budget.clone();
            let mut l = HedgeLayer::builder()
                .name(name.clone())
                .histogram(histogram.clone())
                .budget(shared)
                .eligible_with(self.eligible)
                .classify_with(self.classifier.clone());
            // One layer records into the shared histogram (twice would count every sample
            // double): the hedge layer, when there is one, because it also sees the attempts
            // it supersedes and records their elapsed time (censored samples of the tail).
            // The adaptive timeout never sees those (they are dropped, not completed); without
            // them the recorded tail is thinned exactly where hedges win, the delay quantile
            // falls, more requests want a hedge than the budget allows, and the slowest ones
            // go unhedged.
            if let Some(v) = h.max_extra_load {
                l = l.max_extra_load(v);
            }
            if let Some(s) = self.seed {
                // The hedge bank's loans: a stream of their own.
                l = l.seed(s ^ 0x4ED6_E4ED_6E4E_D6E4);
            }
            if let Some(v) = h.max_hedges {
                l = l.max_hedges(v);
            }
            if let Some(v) = h.min_samples {
                l = l.min_samples(v);
            }
            if let Some(v) = h.fixed_delay {
                l = l.fixed_delay(v);
            }
            if let Some(v) = h.min_delay {
                l = l.min_delay(v);
            }
            if let Some(v) = h.max_delay {
                l = l.max_delay(v);
            }
            if let Some(v) = h.bank_ttl {
                // The bank follows the rate: its cap is only a backstop.
                l = l.bank_ttl(v).burst(100_000.0);
            }
            Some(
                l.build()
                    .map_err(|e| field_err("client.hedge", e.field(), e.reason()))?,
            )
        } else {
            None
        };

        let breaker = if cfg.breaker.enabled {
            let c = &cfg.breaker;
            let mut b = BreakerConfig::builder().name(name.clone());
            if let Some(v) = c.window {
                b = b.window(v);
            }
            if let Some(v) = c.min_requests {
                b = b.min_requests(v);
            }
            if let Some(v) = c.failure_rate {
                b = b.failure_rate(v);
            }
            if let Some(v) = c.load_failure_rate {
                b = b.load_failure_rate(v);
            }
            if let Some(v) = c.trickle {
                b = b.trickle(v);
            }
            if let Some(v) = c.patience {
                b = b.patience(v);
            }
            b = b.consecutive_failures(
                c.consecutive_failures
                    .unwrap_or(crate::config::DEFAULT_CONSECUTIVE_FAILURES),
            );
            if let Some(v) = c.open_min {
                b = b.open_min(v);
            }
            if let Some(v) = c.open_max {
                b = b.open_max(v);
            }
            if let Some(v) = c.open_multiplier {
                b = b.open_multiplier(v);
            }
            if let Some(v) = c.probes {
                b = b.probes(v);
            }
            if let Some(m) = c.mode {
                b = b.mode(match m {
                    BreakerModeConfig::FailFast => Mode::FailFast,
                    BreakerModeConfig::Gate => Mode::Gate,
                });
            }
            if let Some(s) = self.seed {
                b = b.seed(s);
            }
            let config = b
                .build()
                .map_err(|e| field_err("client.breaker", e.field(), &e.to_string()))?;
            // One breaker for every service this layer builds: they front one dependency.
            let handle = BreakerHandle::new(&config);
            Some((
                BreakerLayer::from_handle(&handle).classifier(BreakerView::new(
                    self.classifier.clone(),
                    c.trip_on_pushback,
                )),
                handle,
            ))
        } else {
            None
        };

        let limit = if cfg.limit.enabled.unwrap_or(false) {
            Some(build_shed(&cfg.limit, "client.limit", &name, self.seed)?)
        } else {
            None
        };

        let timeout = if cfg.timeout.enabled {
            let t = &cfg.timeout;
            let mut l = AdaptiveTimeoutLayer::builder()
                .name(name.clone())
                .histogram(histogram.clone())
                // With a hedge layer above, it records (see above); the timeout still learns
                // its consecutive-timeout backoff from every attempt.
                .record(!cfg.hedge.enabled);
            if let Some(v) = t.quantile {
                l = l.quantile(v);
            }
            if let Some(v) = t.multiplier {
                l = l.multiplier(v);
            }
            if let Some(v) = t.floor {
                l = l.floor(v);
            }
            if let Some(v) = t.ceiling {
                l = l.ceiling(v);
            }
            if let Some(v) = t.fallback {
                l = l.fallback(v);
            }
            if let Some(v) = t.min_samples {
                l = l.min_samples(v);
            }
            if let Some(v) = t.deadline_share {
                l = l.deadline_share(v);
            }
            Some(
                l.build()
                    .map_err(|e| field_err("client.timeout", e.field(), e.reason()))?,
            )
        } else {
            None
        };

        Ok(ClientLayer {
            handles: ClientHandles {
                budget: budget.clone(),
                histogram,
                hedge: hedge.as_ref().map(HedgeLayer::handle),
                breaker: breaker.as_ref().map(|(_, h)| h.clone()),
                limit: limit.as_ref().map(ShedLayer::handle),
                timeout: timeout.clone(),
            },
            deadline: Optional(deadline),
            retry: Optional(retry),
            hedge: Optional(hedge),
            breaker: Optional(breaker.map(|(l, _)| l)),
            limit: Optional(limit),
            timeout: Optional(timeout),
            propagate,
        })
    }
}

pub(crate) fn field_err(section: &str, field: &str, reason: &str) -> ConfigError {
    ConfigError::new(format!("{section}.{field}"), reason)
}

/// Builds a shed layer from a [`LimitConfig`], naming errors under `section`.
pub(crate) fn build_shed(
    cfg: &LimitConfig,
    section: &str,
    name: &str,
    seed: Option<u64>,
) -> Result<ShedLayer, ConfigError> {
    shed_builder(cfg, section, name, seed)?
        .build()
        .map_err(|e| shed_err(section, e))
}

pub(crate) fn shed_err(section: &str, e: tower_shed::error::ConfigError) -> ConfigError {
    let field = match e.field() {
        "initial_limit" => "initial",
        "min_limit" => "min",
        "max_limit" => "max",
        "limit" => "max",
        other => other,
    };
    field_err(section, field, e.reason())
}

/// A shed builder from a [`LimitConfig`], naming errors under `section`.
pub(crate) fn shed_builder(
    cfg: &LimitConfig,
    section: &str,
    name: &str,
    seed: Option<u64>,
) -> Result<tower_shed::ShedBuilder, ConfigError> {
    use tower_shed::limit::{Aimd, Fixed, Gradient2, Vegas};
    let err = |e| shed_err(section, e);
    macro_rules! bounds {
        ($b:expr) => {{
            let mut b = $b;
            if let Some(v) = cfg.initial {
                b = b.initial_limit(v);
            }
            if let Some(v) = cfg.min {
                b = b.min_limit(v);
            }
            if let Some(v) = cfg.max {
                b = b.max_limit(v);
            }
            b
        }};
    }
    let mut builder = match cfg.algorithm.unwrap_or(LimitAlgorithm::Gradient2) {
        LimitAlgorithm::Aimd => ShedLayer::builder(bounds!(Aimd::builder()).build().map_err(err)?),
        LimitAlgorithm::Gradient2 => {
            let mut g = bounds!(Gradient2::builder());
            if let Some(s) = seed {
                g = g.seed(s);
            }
            ShedLayer::builder(g.build().map_err(err)?)
        }
        LimitAlgorithm::Vegas => {
            let mut v = bounds!(Vegas::builder());
            if let Some(s) = seed {
                v = v.seed(s);
            }
            ShedLayer::builder(v.build().map_err(err)?)
        }
        LimitAlgorithm::Fixed => {
            let n = cfg
                .max
                .or(cfg.initial)
                .ok_or_else(|| field_err(section, "max", "a fixed limit needs `max`"))?;
            ShedLayer::builder(Fixed::new(n).map_err(err)?)
        }
    }
    .name(name.to_owned());
    if let Some(q) = cfg.queue {
        builder = builder.queue(q);
    }
    if let Some(v) = cfg.codel_target {
        builder = builder.codel_target(v);
    }
    if let Some(v) = cfg.codel_interval {
        builder = builder.codel_interval(v);
    }
    Ok(builder)
}

/// How the client stack's breaker reads outcomes: the stack's classifier, except that a
/// server overload answer carrying pushback (429 or 503 with `Retry-After`,
/// `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms`) counts as neither a success nor a
/// failure while the server also serves: only before the first healthy answer, or once
/// [`OVERLOAD_RUN`] such answers came in a row with no healthy answer between them, do they
/// count (and their pushback lengthens the open period), until the next healthy answer. Set
/// [`BreakerConfig::trip_on_pushback`](crate::config::BreakerConfig) to count every one.
///
/// # Why
/// A server that sheds with pushback is alive and protecting itself: it serves what it can
/// and says when to come back, which the retry layer honours. Counted as failures, its
/// rejections trip the breaker as soon as the shed share reaches the failure rate — at twice
/// its capacity a server sheds half its requests — and the client then sends nothing for a
/// whole open period: a 50% shed becomes a 100% outage, again at every reopening (the damper
/// lab's `overload` scenario: goodput 0.15 of offered, against 0.55 with this rule and 0.57
/// the most the server can serve). A server that refuses every call (429 forever) is, to this
/// client, down: the run of refusals trips the breaker as before. A bare 503 (no pushback),
/// errors and timeouts always count.
#[derive(Debug, Clone)]
pub struct BreakerView<C> {
    inner: C,
    trip_on_pushback: bool,
    /// Overload answers with pushback since the last healthy one.
    refused: Arc<AtomicU64>,
}

/// How many overload answers with pushback in a row, with no healthy answer between them, make
/// the client stack's breaker count them as failures. A server at four times its capacity
/// sheds three requests in four; 50 sheds in a row then happen about once in a million calls,
/// while a server that refuses everything trips the breaker within 50 + 20 calls (before any
/// healthy answer, from the first refusal on).
pub const OVERLOAD_RUN: u64 = 50;

impl<C> BreakerView<C> {
    fn new(inner: C, trip_on_pushback: bool) -> Self {
        Self {
            inner,
            trip_on_pushback,
            // Until the first healthy answer, a refusal counts: nothing shows the server
            // serves this client yet.
            refused: Arc::new(AtomicU64::new(OVERLOAD_RUN)),
        }
    }
}

impl<T, E, C: Classify<T, E>> Classify<T, E> for BreakerView<C> {
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        let outcome = self.inner.classify(result);
        match outcome {
            Outcome::Failure(
                f @ Failure {
                    kind: FailureKind::Overload,
                    pushback: Some(Pushback::After(_)),
                    ..
                },
            ) if !self.trip_on_pushback => {
                if self.refused.fetch_add(1, Ordering::Relaxed) + 1 >= OVERLOAD_RUN {
                    return outcome;
                }
                Outcome::Failure(Failure {
                    // The breaker leaves local rejections out of its window; so this.
                    kind: FailureKind::LocalRejection,
                    ..f
                })
            }
            o => {
                // Read first: no write to a shared line in the steady state.
                if o.is_healthy() && self.refused.load(Ordering::Relaxed) != 0 {
                    self.refused.store(0, Ordering::Relaxed);
                }
                o
            }
        }
    }
}

/// Read-only views of a built client stack, for dashboards, tests and the lab.
#[derive(Clone)]
pub struct ClientHandles {
    budget: Arc<RetryBudget>,
    histogram: Arc<LatencyHistogram>,
    hedge: Option<HedgeHandle>,
    breaker: Option<BreakerHandle>,
    limit: Option<ShedHandle>,
    timeout: Option<AdaptiveTimeoutLayer>,
}

impl fmt::Debug for ClientHandles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandles").finish_non_exhaustive()
    }
}

impl ClientHandles {
    /// The budget retries and hedges share.
    pub fn budget(&self) -> &Arc<RetryBudget> {
        &self.budget
    }

    /// The latency histogram the timeout and the hedge delay read.
    pub fn histogram(&self) -> &Arc<LatencyHistogram> {
        &self.histogram
    }

    /// The hedge layer's counters, if hedging is on.
    pub fn hedge(&self) -> Option<&HedgeHandle> {
        self.hedge.as_ref()
    }

    /// The breaker's state and controls, if the breaker is on.
    pub fn breaker(&self) -> Option<&BreakerHandle> {
        self.breaker.as_ref()
    }

    /// The client limit's state, if on.
    pub fn limit(&self) -> Option<&ShedHandle> {
        self.limit.as_ref()
    }

    /// The adaptive timeout (its current value and state), if on.
    pub fn timeout(&self) -> Option<&AdaptiveTimeoutLayer> {
        self.timeout.as_ref()
    }
}

/// The client stack as a [`Layer`]; built by [`ClientStack::build`].
///
/// Cloning it shares the budget, histogram, breaker and limiter: every service it builds is
/// part of one damped system.
#[derive(Clone)]
pub struct ClientLayer<
    C = ResultClassifier,
    R = tower_retry_budget::CloneAll,
    E = tower_hedge::Always,
> {
    handles: ClientHandles,
    deadline: Optional<DeadlineLayer>,
    retry: Optional<RetryLayer<Arc<RetryBudget>, C, R>>,
    hedge: Optional<HedgeLayer<E, C>>,
    breaker: Optional<BreakerLayer<BreakerView<C>>>,
    limit: Optional<ShedLayer>,
    timeout: Optional<AdaptiveTimeoutLayer>,
    propagate: PropagateDeadlineLayer,
}

impl<C, R, E> fmt::Debug for ClientLayer<C, R, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientLayer")
            .field("deadline", &self.deadline.0.is_some())
            .field("retry", &self.retry.0.is_some())
            .field("hedge", &self.hedge.0.is_some())
            .field("breaker", &self.breaker.0.is_some())
            .field("limit", &self.limit.0.is_some())
            .field("timeout", &self.timeout.0.is_some())
            .finish()
    }
}

impl<C, R, E> ClientLayer<C, R, E> {
    /// Views of the stack's shared state.
    pub fn handles(&self) -> &ClientHandles {
        &self.handles
    }
}

type T6<S> = Maybe<AdaptiveTimeout<PropagateDeadline<S>>, PropagateDeadline<S>>;
type T5<S> = Maybe<Shed<T6<S>>, T6<S>>;
type T4<S, C> = Maybe<Breaker<T5<S>, BreakerView<C>>, T5<S>>;
type T3<S, C, E> = Maybe<Hedge<T4<S, C>, E, C>, T4<S, C>>;
type T2<S, C, R, E> = Maybe<Retry<T3<S, C, E>, Arc<RetryBudget>, C, R>, T3<S, C, E>>;

/// The service a [`ClientLayer`] builds around `S`.
pub type ClientService<
    S,
    C = ResultClassifier,
    R = tower_retry_budget::CloneAll,
    E = tower_hedge::Always,
> = Maybe<Deadline<T2<S, C, R, E>>, T2<S, C, R, E>>;

impl<S, C, R, E> Layer<S> for ClientLayer<C, R, E>
where
    C: Clone,
    R: Clone,
    E: Clone,
{
    type Service = ClientService<S, C, R, E>;

    fn layer(&self, inner: S) -> Self::Service {
        let s = self.propagate.layer(inner);
        let s = self.timeout.layer(s);
        let s = self.limit.layer(s);
        let s = self.breaker.layer(s);
        let s = self.hedge.layer(s);
        let s = self.retry.layer(s);
        self.deadline.layer(s)
    }
}
