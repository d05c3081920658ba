use crate::eligible::Always;
use crate::error::ConfigError;
use crate::policy::{HedgeConfig, HedgePolicy, HedgeStats};
use crate::service::{Hedge, Shared};
use damper_core::Budget;
use damper_core::classify::ResultClassifier;
use damper_core::histogram::LatencyHistogram;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tower_layer::Layer;

/// Builds [`Hedge`] services. See the [crate docs](crate) for an example.
///
/// Every service this layer builds, and every clone of the layer, shares one policy: the same
/// histogram, budget and counters. Build one layer per dependency.
pub struct HedgeLayer<E = Always, C = ResultClassifier> {
    shared: Arc<Shared<E, C>>,
}

impl HedgeLayer {
    /// A layer with every default: 5% extra load, the p95 delay, hedging after 100 samples,
    /// one hedge, every request eligible, `Ok` is success.
    pub fn new() -> Self {
        Self::builder()
            .build()
            .expect("the default configuration is valid")
    }

    /// A builder starting from the defaults.
    pub fn builder() -> HedgeBuilder {
        HedgeBuilder::new()
    }
}

impl Default for HedgeLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<E, C> HedgeLayer<E, C> {
    /// A handle to the counters and current delay, for dashboards and the lab.
    pub fn handle(&self) -> HedgeHandle {
        HedgeHandle::new(self.shared.policy.clone())
    }
}

impl<E, C> Clone for HedgeLayer<E, C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<E, C> fmt::Debug for HedgeLayer<E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeLayer")
            .field("policy", &self.shared.policy)
            .finish()
    }
}

impl<S, E: Clone, C: Clone> Layer<S> for HedgeLayer<E, C> {
    type Service = Hedge<S, E, C>;

    fn layer(&self, inner: S) -> Self::Service {
        // Each service gets its own copy of what its futures hold (see `Hedge`'s docs).
        Hedge::new(inner, self.shared.fork())
    }
}

/// Read-only access to a hedge layer's counters, delay and budget, shared with the layer.
#[derive(Clone, Debug)]
pub struct HedgeHandle {
    policy: Arc<HedgePolicy>,
}

impl HedgeHandle {
    pub(crate) fn new(policy: Arc<HedgePolicy>) -> Self {
        Self { policy }
    }

    /// Requests, hedges sent and won, and skipped hedges so far.
    pub fn stats(&self) -> HedgeStats {
        self.policy.stats()
    }

    /// The delay last handed to a request, if hedging has started.
    pub fn current_delay(&self) -> Option<Duration> {
        self.policy.current_delay()
    }

    /// The layer's own hedge bank, in hedges, now (tokio's clock).
    pub fn budget_balance(&self) -> f64 {
        self.policy.budget_balance(tokio::time::Instant::now())
    }

    /// The histogram the layer reads.
    pub fn histogram(&self) -> &Arc<LatencyHistogram> {
        self.policy.histogram()
    }
}

/// Configures a [`HedgeLayer`]. Every knob is optional; invalid values are rejected by
/// [`build`](HedgeBuilder::build) with a [`ConfigError`] naming the knob.
pub struct HedgeBuilder<E = Always, C = ResultClassifier> {
    config: HedgeConfig,
    histogram: Option<Arc<LatencyHistogram>>,
    budget: Option<Arc<dyn Budget>>,
    name: String,
    eligible: E,
    classify: C,
}

impl<E: fmt::Debug, C: fmt::Debug> fmt::Debug for HedgeBuilder<E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeBuilder")
            .field("config", &self.config)
            .field("shared_histogram", &self.histogram.is_some())
            .field("shared_budget", &self.budget.is_some())
            .field("name", &self.name)
            .field("eligible", &self.eligible)
            .field("classify", &self.classify)
            .finish()
    }
}

impl HedgeBuilder {
    /// The defaults.
    pub fn new() -> Self {
        Self {
            config: HedgeConfig::default(),
            histogram: None,
            budget: None,
            name: "hedge".to_owned(),
            eligible: Always::new(),
            classify: ResultClassifier::new(),
        }
    }
}

impl Default for HedgeBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl<E, C> HedgeBuilder<E, C> {
    /// Replaces the whole configuration (e.g. one deserialized with feature `serde`).
    pub fn config(mut self, config: HedgeConfig) -> Self {
        self.config = config;
        self
    }

    /// The `name` label of this layer's metrics. Default `"hedge"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Hedges as a share of requests, in `(0, 1)`. Default 0.05 (5%).
    ///
    /// Sets both the budget (each request credits this much of a hedge) and, unless
    /// [`quantile`](Self::quantile) is set, the delay quantile `1 − max_extra_load`: if
    /// latencies are stationary, about that share of requests is still running at the delay,
    /// so the budget is rarely the binding limit; when latency steps up, it is.
    pub fn max_extra_load(mut self, share: f64) -> Self {
        self.config.max_extra_load = share;
        self
    }

    /// The latency quantile used as the delay, in `(0, 1)`. Default `1 − max_extra_load`.
    pub fn quantile(mut self, q: f64) -> Self {
        self.config.quantile = Some(q);
        self
    }

    /// Hedge after a fixed `delay` instead of a quantile (as gRPC's `hedgingDelay`). Hedging
    /// then needs no samples. The budget still applies.
    pub fn fixed_delay(mut self, delay: Duration) -> Self {
        self.config.fixed_delay = Some(delay);
        self
    }

    /// The smallest quantile delay. Default 100 µs.
    pub fn min_delay(mut self, delay: Duration) -> Self {
        self.config.min_delay = delay;
        self
    }

    /// The largest quantile delay: past it, hedges go out at `max` (a sick dependency that
    /// inflates the quantile does not silently stop hedging). Default none.
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.config.max_delay = Some(max);
        self
    }

    /// Samples needed in the histogram's window before quantile hedging starts. Default 100.
    pub fn min_samples(mut self, n: u64) -> Self {
        self.config.min_samples = n;
        self
    }

    /// Extra attempts per request, 1 to 4, sent one delay apart. Default 1.
    pub fn max_hedges(mut self, n: u32) -> Self {
        self.config.max_hedges = n;
        self
    }

    /// Whether a hedge that the budget denied, or that the inner service was not ready for, is
    /// asked for again later — at a gap starting at the delay and growing 1.25× each time — while the request is
    /// still running. Default true: under a tight budget the tokens then go to the requests
    /// still outstanding long after the delay, the likeliest stragglers, rather than to
    /// whichever crossed the delay first. Each hedge sent still costs a token, so the
    /// extra-load bound is the same either way.
    pub fn recheck(mut self, on: bool) -> Self {
        self.config.recheck = on;
        self
    }

    /// The most hedges the own bank can hold (at least 1): after a calm period, a latency
    /// step can release at most this many hedges before the `max_extra_load` rate applies.
    /// Default 3: in any second, hedges stay within `max_extra_load` of that second's requests
    /// plus 3 per client. With a decaying bank ([`bank_ttl`](Self::bank_ttl)) set it high; the
    /// bank then follows the request rate.
    pub fn burst(mut self, tokens: f64) -> Self {
        self.config.burst = tokens;
        self
    }

    /// Makes the own bank decay with time constant `ttl` (between 1 ms and a day; 200 ms,
    /// [`BANK_TTL`](crate::policy::BANK_TTL), is a good start): each request then credits
    /// `max_extra_load / (1 + ttl)`, the bank holds what the last `ttl` of requests earned,
    /// and fractions of a token are lent, so that no second's hedges go over
    /// `max_extra_load` of its requests however many clients there are. It costs tail
    /// latency (tokens decay unspent); see [`policy`](crate::policy) for the bound and the
    /// measured trade-off. Default: off (an exact bucket of [`burst`](Self::burst)).
    pub fn bank_ttl(mut self, ttl: Duration) -> Self {
        self.config.bank_ttl = Some(ttl);
        self
    }

    /// Turns the own bank's decay off again (the default): an exact token bucket, tokens
    /// lasting until spent (up to [`burst`](Self::burst)), each request crediting the whole
    /// `max_extra_load`, no loans.
    pub fn no_bank_decay(mut self) -> Self {
        self.config.bank_ttl = None;
        self
    }

    /// Seeds the own bank's loans (a fraction of a token is lent whole with that
    /// probability), for reproducible runs. Default: seeded from the system clock. Give each
    /// client of a simulated fleet its own seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// How often the cached quantiles and the sample count are re-read from the histogram.
    /// Default 1 s.
    pub fn refresh(mut self, every: Duration) -> Self {
        self.config.refresh = every;
        self
    }

    /// The window of the histogram the layer creates when none is shared. Default 10 s in 4
    /// sub-windows.
    pub fn window(mut self, window: Duration, sub_windows: usize) -> Self {
        self.config.window = window;
        self.config.sub_windows = sub_windows;
        self
    }

    /// Read (and feed) a shared histogram, e.g. the one the adaptive timeout uses, instead of
    /// creating one.
    ///
    /// If an inner layer already records every attempt into it, turn
    /// [`record_latencies`](Self::record_latencies) off so samples are not counted twice.
    pub fn histogram(mut self, histogram: Arc<LatencyHistogram>) -> Self {
        self.histogram = Some(histogram);
        self
    }

    /// Whether the layer records latencies into its histogram. Default true.
    pub fn record_latencies(mut self, on: bool) -> Self {
        self.config.record_latencies = on;
        self
    }

    /// Also withdraw every hedge from `budget` (the retry budget), so retries and hedges
    /// together stay inside one bound. The layer does not deposit into it: its owner (the
    /// retry layer) does. The own `max_extra_load` budget still applies as well.
    pub fn budget(mut self, budget: Arc<dyn Budget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Which requests may be hedged, and how they are copied: an [`Eligible`](crate::Eligible), such as a
    /// predicate `Fn(&Req) -> bool` or `Idempotent` (feature `http`).
    /// Default [`Always`].
    pub fn eligible_with<E2>(self, eligible: E2) -> HedgeBuilder<E2, C> {
        HedgeBuilder {
            config: self.config,
            histogram: self.histogram,
            budget: self.budget,
            name: self.name,
            eligible,
            classify: self.classify,
        }
    }

    /// How attempts are judged: a [`Classify`](damper_core::Classify). The first attempt
    /// classified as a success or a caller error wins. Default
    /// [`ResultClassifier`] (`Ok` wins); use `HttpClassifier` so a 503 does not win.
    pub fn classify_with<C2>(self, classify: C2) -> HedgeBuilder<E, C2> {
        HedgeBuilder {
            config: self.config,
            histogram: self.histogram,
            budget: self.budget,
            name: self.name,
            eligible: self.eligible,
            classify,
        }
    }

    /// Validates the configuration and builds the layer.
    pub fn build(self) -> Result<HedgeLayer<E, C>, ConfigError> {
        let policy = HedgePolicy::new(
            &self.config,
            self.histogram,
            self.budget,
            &self.name,
            Instant::now(),
        )?;
        Ok(HedgeLayer {
            shared: Arc::new(Shared {
                policy: Arc::new(policy),
                eligible: self.eligible,
                classify: self.classify,
            }),
        })
    }
}
