use crate::config::TimeoutConfig;
use crate::error::ConfigError;
use crate::policy::{AdaptivePolicy, PolicyState};
use crate::service::{AdaptiveTimeout, Shared};
use damper_core::histogram::LatencyHistogram;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tower_layer::Layer;

/// Applies an [`AdaptiveTimeout`] to services. See the [crate docs](crate) for an example.
///
/// Cloning the layer, or calling [`Layer::layer`] several times, does **not** create new state:
/// every service built from one layer shares one policy and one histogram, which is what you
/// want for the clones of one client. Build a second layer for an independent dependency.
#[derive(Clone)]
pub struct AdaptiveTimeoutLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for AdaptiveTimeoutLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveTimeoutLayer")
            .field("shared", &self.shared)
            .finish()
    }
}

impl Default for AdaptiveTimeoutLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl AdaptiveTimeoutLayer {
    /// A layer with the default [`TimeoutConfig`] and its own histogram.
    pub fn new() -> Self {
        Self::builder()
            .build()
            .expect("the default config is valid")
    }

    /// A builder, starting from the default [`TimeoutConfig`].
    pub fn builder() -> AdaptiveTimeoutBuilder {
        AdaptiveTimeoutBuilder::default()
    }

    /// The latency histogram the layer learns from. Hand it to a hedge layer
    /// (`Arc::clone(layer.histogram())`) so both follow the same latencies.
    pub fn histogram(&self) -> &Arc<LatencyHistogram> {
        self.shared.policy.histogram()
    }

    /// The policy shared by every service built from this layer.
    pub fn policy(&self) -> &AdaptivePolicy {
        &self.shared.policy
    }

    /// The timeout an attempt sent at `now` without a deadline would get (refreshing the
    /// quantile if due, like a request would).
    pub fn current_timeout(&self, now: Instant) -> Duration {
        self.shared.policy.current(now)
    }

    /// A view of the policy's state (base, backoff, effective timeout).
    pub fn state(&self) -> PolicyState {
        self.shared.policy.state()
    }
}

impl<S> Layer<S> for AdaptiveTimeoutLayer {
    type Service = AdaptiveTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveTimeout::from_shared(inner, self.shared.clone())
    }
}

/// Builds an [`AdaptiveTimeoutLayer`]; every knob defaults to [`TimeoutConfig::default`].
///
/// ```
/// use std::time::Duration;
/// use tower_adaptive_timeout::AdaptiveTimeoutLayer;
///
/// let layer = AdaptiveTimeoutLayer::builder()
///     .quantile(0.999)
///     .floor(Duration::from_millis(5))
///     .ceiling(Duration::from_secs(2))
///     .name("users-api")
///     .build()
///     .expect("valid config");
/// # let _ = layer;
///
/// let err = AdaptiveTimeoutLayer::builder().multiplier(0.5).build().unwrap_err();
/// assert_eq!(err.field(), "multiplier");
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct AdaptiveTimeoutBuilder {
    config: TimeoutConfig,
    histogram: Option<Arc<LatencyHistogram>>,
    record: Option<bool>,
    name: Option<String>,
}

macro_rules! knobs {
    ($($(#[$doc:meta])* $field:ident: $ty:ty;)*) => {$(
        $(#[$doc])*
        pub fn $field(mut self, value: $ty) -> Self {
            self.config.$field = value;
            self
        }
    )*};
}

impl AdaptiveTimeoutBuilder {
    /// Replaces every knob with `config`.
    pub fn config(mut self, config: TimeoutConfig) -> Self {
        self.config = config;
        self
    }

    knobs! {
        /// The latency quantile to follow, in `(0, 1]`. Default 0.999 (a 0.1 % false-timeout target).
        quantile: f64;
        /// Headroom above the quantile, `≥ 1`. Default 1.5.
        multiplier: f64;
        /// The smallest timeout. Default 10 ms.
        floor: Duration;
        /// The largest timeout. Default 10 s.
        ceiling: Duration;
        /// The timeout used until 16 latencies are known. Default 1 s.
        fallback: Duration;
        /// Samples in the window from which its own quantile is used (below, a log-normal fit
        /// of the latest answers). Default 100.
        min_samples: u64;
        /// How often the quantile is recomputed. Default 100 ms.
        refresh: Duration;
        /// The most the timeout may grow per `growth_window`. Default 2.
        max_growth: f64;
        /// The anti-ratchet window. Default 500 ms.
        growth_window: Duration;
        /// Consecutive timeouts that trigger a backoff step. Default 3.
        backoff_after: u32;
        /// The factor of one backoff step. Default 2.
        backoff_factor: f64;
        /// Above this many attempts per second, latencies are sampled. Default 2000.
        max_samples_per_sec: u32;
        /// The least share of a request's remaining deadline an attempt waits, in `[0, 1]`.
        /// Default 1/3; see [`TimeoutConfig`](crate::TimeoutConfig#why-an-attempt-gets-a-share-of-the-deadline).
        deadline_share: f64;
    }

    /// Learns from a shared histogram instead of a new one (10 s window). Share it with a hedge
    /// layer so both follow the same latencies.
    pub fn histogram(mut self, histogram: Arc<LatencyHistogram>) -> Self {
        self.histogram = Some(histogram);
        self
    }

    /// Whether this layer records attempt latencies (and censored timeouts) into the histogram.
    /// Default `true`. When several layers share one histogram exactly one should record, or
    /// every sample counts twice; let it be this one, as it sees every attempt and its timeouts.
    /// (Censoring needs it: with `record(false)` timed-out attempts never reach the histogram,
    /// and only the backoff can lift the timeout above a latency step.)
    pub fn record(mut self, record: bool) -> Self {
        self.record = Some(record);
        self
    }

    /// The value of the `name` label on this layer's metrics. Default `"default"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Validates the configuration and builds the layer, registering its metrics.
    pub fn build(self) -> Result<AdaptiveTimeoutLayer, ConfigError> {
        let now = Instant::now();
        let histogram = self
            .histogram
            .unwrap_or_else(|| Arc::new(LatencyHistogram::new(now)));
        let policy = AdaptivePolicy::new(self.config, histogram, self.record.unwrap_or(true), now)?;
        let name = self.name.unwrap_or_else(|| "default".to_owned());
        Ok(AdaptiveTimeoutLayer {
            shared: Arc::new(Shared::new(policy, name)),
        })
    }
}
