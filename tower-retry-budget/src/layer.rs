use crate::error::ConfigError;
use crate::policy::{DEFAULT_MAX_ATTEMPTS, DEFAULT_MIN_ATTEMPT_TIME, RetryPolicy};
use crate::replay::Idempotent;
use crate::service::{Metrics, Retry, Shared, deposit_reads_clock};
use damper_core::backoff::Backoff;
use damper_core::classify::ResultClassifier;
use damper_core::rng::AtomicRng;
use std::sync::Arc;
use std::time::Duration;
use tower_layer::Layer;

/// The most attempts a request may be given in total.
pub const MAX_ATTEMPTS_LIMIT: u32 = 10;

/// Applies budgeted, deadline-aware retries to a service; builds [`Retry`].
///
/// See the [crate docs](crate) for an example. Cloning the layer shares its budget and its
/// random source; each service it builds gets its own copy of the rest of the configuration.
#[derive(Debug, Clone)]
pub struct RetryLayer<B, C = ResultClassifier, P = Idempotent> {
    shared: Shared<B, C, P>,
}

impl<B> RetryLayer<B> {
    /// A layer with the default configuration spending from `budget` (an
    /// `Arc<RetryBudget>`, an `Arc<dyn damper_core::Budget>` shared with a hedge layer, …).
    pub fn new(budget: B) -> Self
    where
        B: damper_core::Budget + 'static,
    {
        let b = Self::builder(budget);
        let shared = b.shared();
        RetryLayer { shared }
    }

    /// Starts a builder with the defaults: plain-result classification, 3 attempts in total,
    /// full-jitter backoff from 25 ms to 1 s, pushback clamped to 30 s, 10 ms minimum attempt
    /// time, no overall timeout, protocol idempotency rules.
    pub fn builder(budget: B) -> RetryLayerBuilder<B> {
        RetryLayerBuilder {
            budget,
            classifier: ResultClassifier::new(),
            replay: Idempotent::new(),
            knobs: Knobs {
                max_attempts: DEFAULT_MAX_ATTEMPTS,
                backoff: Backoff::default(),
                max_pushback: damper_core::DEFAULT_MAX_PUSHBACK,
                min_attempt_time: DEFAULT_MIN_ATTEMPT_TIME,
                timeout: None,
                seed: None,
                name: "default".to_owned(),
            },
        }
    }
}

impl<B, C, P> RetryLayer<B, C, P> {
    /// The retry rules in force.
    pub fn policy(&self) -> &RetryPolicy {
        &self.shared.policy
    }

    /// The budget retries spend from.
    pub fn budget(&self) -> &B {
        &self.shared.budget
    }
}

impl<S, B: Clone, C: Clone, P: Clone> Layer<S> for RetryLayer<B, C, P> {
    type Service = Retry<S, B, C, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_shared(inner, Arc::new(self.shared.clone()))
    }
}

/// Builds a [`RetryLayer`]; see [`RetryLayer::builder`].
#[derive(Debug, Clone)]
pub struct RetryLayerBuilder<B, C = ResultClassifier, P = Idempotent> {
    budget: B,
    classifier: C,
    replay: P,
    knobs: Knobs,
}

/// The builder's plain settings, kept apart so the type-changing setters move them in one go.
#[derive(Debug, Clone)]
struct Knobs {
    max_attempts: u32,
    backoff: Backoff,
    max_pushback: Duration,
    min_attempt_time: Duration,
    timeout: Option<Duration>,
    seed: Option<u64>,
    name: String,
}

impl<B, C, P> RetryLayerBuilder<B, C, P> {
    /// The budget every retry withdraws from and every success deposits into.
    pub fn budget<B2>(self, budget: B2) -> RetryLayerBuilder<B2, C, P> {
        RetryLayerBuilder {
            budget,
            classifier: self.classifier,
            replay: self.replay,
            knobs: self.knobs,
        }
    }

    /// What is a success, what is retryable, and what pushback says: any
    /// [`damper_core::Classify`] (`HttpClassifier`, `GrpcClassifier`, a closure). Default:
    /// [`ResultClassifier`] (`Ok` succeeds; errors are retryable except local rejections and
    /// deadline expiry).
    pub fn classifier<C2>(self, classifier: C2) -> RetryLayerBuilder<B, C2, P> {
        RetryLayerBuilder {
            budget: self.budget,
            classifier,
            replay: self.replay,
            knobs: self.knobs,
        }
    }

    /// Which requests may be sent again and how to copy them (a [`Replay`](crate::Replay)).
    /// Default: [`Idempotent`].
    pub fn replay<P2>(self, replay: P2) -> RetryLayerBuilder<B, C, P2> {
        RetryLayerBuilder {
            budget: self.budget,
            classifier: self.classifier,
            replay,
            knobs: self.knobs,
        }
    }

    /// Retries only requests for which `predicate` is true, by cloning them: shorthand for
    /// `.replay(ReplayIf::new(predicate))`.
    pub fn replay_if<F>(self, predicate: F) -> RetryLayerBuilder<B, C, crate::ReplayIf<F>> {
        self.replay(crate::ReplayIf::new(predicate))
    }

    /// Attempts in total, the first included, in `[1, 10]`. Default 3.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.knobs.max_attempts = max_attempts;
        self
    }

    /// The wait between attempts when the server gave no pushback. Default: full jitter,
    /// 25 ms doubling up to 1 s.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.knobs.backoff = backoff;
        self
    }

    /// The longest server pushback honoured (`Retry-After`, `grpc-retry-pushback-ms`), at most
    /// one hour; longer requests are clamped. Default 30 s.
    pub fn max_pushback(mut self, max: Duration) -> Self {
        self.knobs.max_pushback = max;
        self
    }

    /// How much time before the deadline an attempt needs for a retry to be worth sending,
    /// at most one minute. Default 10 ms.
    pub fn min_attempt_time(mut self, min: Duration) -> Self {
        self.knobs.min_attempt_time = min;
        self
    }

    /// An overall deadline for each request, across all its attempts, counted from the call.
    /// A request that carries an earlier deadline keeps it; otherwise this one is attached to
    /// it (where the type can carry one) so the layers below see it too. The layer never cuts
    /// an attempt short: pair it with a timeout layer below. Default: none.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.knobs.timeout = Some(timeout);
        self
    }

    /// Seeds the jitter's random source, for reproducible runs. Default: seeded once from the
    /// system clock when built, so that separate clients do not retry in lockstep.
    pub fn seed(mut self, seed: u64) -> Self {
        self.knobs.seed = Some(seed);
        self
    }

    /// The `name` label of the layer's metrics. Default `"default"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.knobs.name = name.into();
        self
    }

    fn shared(self) -> Shared<B, C, P>
    where
        B: 'static,
    {
        let seed = self.knobs.seed.unwrap_or_else(damper_core::rng::clock_seed);
        Shared {
            policy: RetryPolicy::new(
                self.knobs.max_attempts,
                self.knobs.backoff,
                self.knobs.max_pushback,
                self.knobs.min_attempt_time,
            ),
            metrics: Metrics::new(&self.knobs.name),
            deposit_clock: deposit_reads_clock(&self.budget),
            built_at: tokio::time::Instant::now(),
            budget: self.budget,
            classifier: self.classifier,
            replay: self.replay,
            rng: Arc::new(AtomicRng::new(seed)),
            timeout: self.knobs.timeout,
        }
    }

    /// Validates the configuration and builds the layer, registering its metrics.
    pub fn build(self) -> Result<RetryLayer<B, C, P>, ConfigError>
    where
        B: 'static,
    {
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&self.knobs.max_attempts) {
            return Err(ConfigError::new("max_attempts", "must be in [1, 10]"));
        }
        if self.knobs.max_pushback > Duration::from_secs(3600) {
            return Err(ConfigError::new("max_pushback", "must be at most one hour"));
        }
        if self.knobs.min_attempt_time > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "min_attempt_time",
                "must be at most one minute",
            ));
        }
        if self.knobs.timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::new("timeout", "must be greater than zero"));
        }
        Ok(RetryLayer {
            shared: self.shared(),
        })
    }
}
