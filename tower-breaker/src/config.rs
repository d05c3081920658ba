//! Breaker configuration, validated when built.

use damper_core::backoff::{Backoff, Jitter};
use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// How the breaker refuses calls while open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum Mode {
    /// `poll_ready` reflects only the inner service; `call` fails at once with
    /// [`CircuitOpen`](damper_core::error::CircuitOpen) (or runs the fallback). The default.
    #[default]
    FailFast,
    /// `poll_ready` is `Pending` while the breaker refuses calls and wakes when a probe is due,
    /// so a balancer such as tower's p2c routes around an open endpoint. `poll_ready` reserves
    /// the permit (a half-open breaker's probe slot) that the next `call` uses; a permit
    /// reserved before a trip is still honoured, as tower's readiness contract requires, and
    /// its outcome is not counted. Dropping the service releases an unused reservation.
    Gate,
}

/// A configuration was rejected; names the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    reason: &'static str,
}

impl ConfigError {
    pub(crate) const fn new(field: &'static str, reason: &'static str) -> Self {
        Self { field, reason }
    }

    /// The name of the offending field.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid breaker config `{}`: {}",
            self.field, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

/// A validated breaker configuration. Build one with [`BreakerConfig::builder`].
///
/// | knob | default |
/// |---|---|
/// | `window` | 10 s, in 10 sub-windows |
/// | `min_requests` | 20 calls in the window |
/// | `failure_rate` | 1.0 (every call in the window failed) |
/// | `load_failure_rate` | 0.5 (timeouts and overload answers) |
/// | `slow_call` | off |
/// | `consecutive_failures` | off |
/// | `open_min` / `open_max` / `open_multiplier` | 500 ms / 30 s / ×2 |
/// | `open_jitter` | 0.2 (each probe spacing is drawn from `[0.8·d, d]`) |
/// | `healthy_period` | 0 (growth is forgotten as soon as the breaker closes) |
/// | `patience` | 1 s |
/// | `trickle` | 0.05 (one call in 20 goes through while open) |
/// | `probes` | 5 |
/// | `mode` | [`Mode::FailFast`] |
/// | `abandoned_fails` | on in [`Mode::Gate`], off in [`Mode::FailFast`] |
/// | `max_ejected` | 0.5 (keyed breakers only) |
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    pub(crate) name: Cow<'static, str>,
    pub(crate) window: Duration,
    pub(crate) min_requests: u64,
    pub(crate) failure_rate: f64,
    pub(crate) load_failure_rate: f64,
    pub(crate) slow_call: Option<(Duration, f64)>,
    pub(crate) consecutive_failures: Option<u64>,
    pub(crate) open: Backoff,
    pub(crate) open_jitter: f64,
    pub(crate) healthy_period: Duration,
    pub(crate) patience: Duration,
    pub(crate) probes: u32,
    pub(crate) trickle: f64,
    pub(crate) mode: Mode,
    pub(crate) abandoned_fails: Option<bool>,
    pub(crate) max_ejected: f64,
    pub(crate) seed: Option<u64>,
    pub(crate) stripes: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            name: Cow::Borrowed("breaker"),
            window: Duration::from_secs(10),
            min_requests: 20,
            failure_rate: 1.0,
            load_failure_rate: 0.5,
            slow_call: None,
            consecutive_failures: None,
            open: Backoff::builder()
                .min(DEFAULT_OPEN_MIN)
                .max(DEFAULT_OPEN_MAX)
                .multiplier(2.0)
                .jitter(Jitter::None)
                .build()
                .unwrap_or_default(),
            open_jitter: 0.2,
            healthy_period: Duration::ZERO,
            patience: Duration::from_secs(1),
            probes: 5,
            trickle: 0.05,
            mode: Mode::FailFast,
            abandoned_fails: None,
            max_ejected: 0.5,
            seed: None,
            stripes: default_stripes(),
        }
    }
}

const DEFAULT_OPEN_MIN: Duration = Duration::from_millis(500);
const DEFAULT_OPEN_MAX: Duration = Duration::from_secs(30);

/// One stripe per core, a power of two, at most 16.
fn default_stripes() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 16)
        .next_power_of_two()
}

impl BreakerConfig {
    /// The config of one key's breaker in a [`KeyedBreakerLayer`](crate::KeyedBreakerLayer):
    /// with a fixed seed, each key draws its own jitter (the seed mixed with a hash of the
    /// key), so the breakers of several endpoints do not reopen in lockstep, and a run stays
    /// reproducible.
    pub(crate) fn for_key(&self, key: &str) -> Self {
        let mut config = self.clone();
        if let Some(seed) = self.seed {
            // FNV-1a over the key, then mixed into the seed.
            let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
            config.seed = Some(seed ^ hash.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        config
    }

    /// Starts from the defaults.
    pub fn builder() -> BreakerConfigBuilder {
        BreakerConfigBuilder {
            config: Self::default(),
            open_min: DEFAULT_OPEN_MIN,
            open_max: DEFAULT_OPEN_MAX,
            open_multiplier: 2.0,
        }
    }

    /// The name used as the `name` label of metrics and in tracing events.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How calls are refused while open.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The calls the window must hold before a rate can trip the breaker.
    pub fn min_requests(&self) -> u64 {
        self.min_requests
    }

    /// How long a run of fast errors must last before it trips the breaker.
    pub fn patience(&self) -> Duration {
        self.patience
    }

    /// Probe successes that close a half-open breaker.
    pub fn probes(&self) -> u32 {
        self.probes
    }

    /// The share of calls let through while open.
    pub fn trickle(&self) -> f64 {
        self.trickle
    }

    /// Whether a call whose response future is dropped before it completes counts as a failed
    /// (timed-out) call.
    pub fn abandoned_fails(&self) -> bool {
        self.abandoned_fails.unwrap_or(self.mode == Mode::Gate)
    }

    /// The un-jittered open period of the `n`-th consecutive opening (1 for the first).
    pub fn open_ceiling(&self, n: u32) -> Duration {
        self.open.ceiling(n)
    }
}

/// Builds a [`BreakerConfig`]; see [`BreakerConfig::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct BreakerConfigBuilder {
    config: BreakerConfig,
    open_min: Duration,
    open_max: Duration,
    open_multiplier: f64,
}

impl BreakerConfigBuilder {
    /// The `name` label of metrics and tracing events. Default `"breaker"`.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.config.name = name.into();
        self
    }

    /// The sliding window's length (10 sub-windows). Default 10 s; between 10 ms and one day.
    pub fn window(mut self, window: Duration) -> Self {
        self.config.window = window;
        self
    }

    /// The calls the window must hold before the failure or slow-call rate can trip the
    /// breaker. Default 20; at least 1.
    pub fn min_requests(mut self, n: u64) -> Self {
        self.config.min_requests = n;
        self
    }

    /// The share of failures of any kind (failures / calls in the window) that trips the
    /// breaker. Default 1.0: only a window in which every call failed trips it this way. In
    /// `(0, 1]`.
    ///
    /// # Why not 0.5
    /// Refusing a call that would have succeeded loses it. When failures do not depend on
    /// load (a bug that fails half the requests, a bad shard), refusing calls saves the
    /// dependency nothing and loses every success among them: a breaker that trips at 50%
    /// independent errors turns a partial failure into a complete one. Partial failure is left
    /// to the retry budget; the breaker trips on near-total failure (this rate, and
    /// [`consecutive_failures`](Self::consecutive_failures)) or on evidence that load hurts
    /// ([`load_failure_rate`](Self::load_failure_rate), [`slow_call`](Self::slow_call)).
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.config.failure_rate = rate;
        self
    }

    /// The share of *load* failures (timeouts, and overload answers such as 429, 503 or
    /// `RESOURCE_EXHAUSTED`) among the calls in the window that trips the breaker. These say
    /// that sending less may help. Default 0.5; in `(0, 1]`.
    pub fn load_failure_rate(mut self, rate: f64) -> Self {
        self.config.load_failure_rate = rate;
        self
    }

    /// The share of calls let through while open (besides one probe per probe spacing), so
    /// that healing shows within a few calls at any rate. Default 0.05; in `[0, 0.5]`; 0 lets
    /// only the spaced probes through. Gate mode sends only the spaced probes: a balancer
    /// routes calls elsewhere meanwhile.
    pub fn trickle(mut self, share: f64) -> Self {
        self.config.trickle = share;
        self
    }

    /// Whether a call whose response future is dropped before completing (a caller's timeout
    /// above, a losing hedge) counts as a failed, timed-out call. On by default in
    /// [`Mode::Gate`], where the timeout that abandons a hung endpoint's calls sits above the
    /// balancer and the endpoint's breaker would otherwise never see the hang; off by default
    /// in [`Mode::FailFast`], where the adaptive timeout sits below the breaker and reports
    /// timeouts itself. A permit reserved by `poll_ready` and never used counts as nothing
    /// either way.
    pub fn abandoned_fails(mut self, on: bool) -> Self {
        self.config.abandoned_fails = Some(on);
        self
    }

    /// Trips when the share of calls slower than `duration` reaches `rate` (in `(0, 1]`). Off by
    /// default.
    pub fn slow_call(mut self, duration: Duration, rate: f64) -> Self {
        self.config.slow_call = Some((duration, rate));
        self
    }

    /// Also trips after a run of at least `n` failures in a row, however few calls the window
    /// holds. Off by default; at least 1.
    ///
    /// The run needed grows when the window shows the dependency failing often anyway: it is
    /// `max(n, 10 / s)` where `s` is the window's success share, so a dependency that
    /// succeeds one call in ten needs 100 failures in a row (a chance of about 3·10⁻⁶ per call)
    /// and noise alone practically never trips it, while a healthy one that stops answering
    /// trips after `n`.
    pub fn consecutive_failures(mut self, n: u64) -> Self {
        self.config.consecutive_failures = Some(n);
        self
    }

    /// The first probe spacing: while open, one call is let through this long after the trip,
    /// then again every spacing (besides the [`trickle`](Self::trickle)). Default 500 ms.
    pub fn open_min(mut self, d: Duration) -> Self {
        self.open_min = d;
        self
    }

    /// The longest probe spacing, pushback included. Default 30 s.
    pub fn open_max(mut self, d: Duration) -> Self {
        self.open_max = d;
        self
    }

    /// Growth of the probe spacing per failed probe that says the dependency is still sick (a
    /// timeout, an overload answer, a slow or abandoned call). Fast errors do not grow it: they
    /// cost the dependency little, and growth would only delay noticing that it healed.
    /// Default 2; in `[1, 1000]`.
    pub fn open_multiplier(mut self, m: f64) -> Self {
        self.open_multiplier = m;
        self
    }

    /// The share of each open period taken off at random, so clients that opened together
    /// probe at different times. Default 0.2; in `[0, 1)`.
    pub fn open_jitter(mut self, jitter: f64) -> Self {
        self.config.open_jitter = jitter;
        self
    }

    /// How long the breaker must stay closed before its probe spacing falls back to
    /// `open_min`. Default 0: closing (which takes `probes` successes) is itself the evidence
    /// that the dependency healed, and the growth is forgotten at once.
    pub fn healthy_period(mut self, d: Duration) -> Self {
        self.config.healthy_period = d;
        self
    }

    /// How long a run of fast errors (failures that are not timeouts or overload answers) must
    /// last before it trips the breaker, by `consecutive_failures` or by a `failure_rate` of
    /// 1. Default 1 s; 0 trips as soon as the evidence is in.
    ///
    /// # Why wait
    /// Refusing fast errors saves the dependency little, and every trip costs a probe's round
    /// trip, and a short ramp, when the dependency heals. Against a dependency that fails for
    /// half a second every second, tripping each time loses more goodput than it saves load;
    /// after a second of near-total failure the saving is worth it (an outage's extra load
    /// stays near the trickle's 5%). Timeouts and overload answers with pushback trip at once:
    /// there sending more is what hurts. A bare overload answer (a 503 without `Retry-After`,
    /// which is also what a proxy sends for a crashed backend) waits like a fast error, though
    /// it counts toward `load_failure_rate`.
    pub fn patience(mut self, d: Duration) -> Self {
        self.config.patience = d;
        self
    }

    /// Probe successes that close the breaker. The first successful probe turns an open
    /// breaker half-open; half-open, it admits up to `2^successes` calls at once (a slow
    /// start), so a dependency that is only partly back is not flooded, and `n` successes close
    /// it. Default 5; in `[1, 1000]`.
    pub fn probes(mut self, n: u32) -> Self {
        self.config.probes = n;
        self
    }

    /// The share of a [`KeyedBreakerLayer`](crate::KeyedBreakerLayer)'s breakers that may be
    /// not closed at once before the gates of all of them fail open, so that gating never
    /// empties a balancer's pool (Envoy's panic threshold). Default 0.5; in `[0, 1]`. With 1,
    /// gates never fail open; with 0, any gated endpoint fails open (gating is off). Only
    /// gate-mode breakers of a keyed registry are affected.
    pub fn max_ejected(mut self, share: f64) -> Self {
        self.config.max_ejected = share;
        self
    }

    /// Fail fast (default) or gate readiness.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.config.mode = mode;
        self
    }

    /// Seeds the jitter, for reproducible runs. By default the seed is taken from the system
    /// clock once, when the breaker is built.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// Counter stripes (rounded up to a power of two, at most 64). Default: one per core, at
    /// most 16. Fewer stripes save memory (about 256 bytes each) in keyed breakers; more keep
    /// threads from sharing counters.
    pub fn stripes(mut self, n: usize) -> Self {
        self.config.stripes = n;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<BreakerConfig, ConfigError> {
        let mut c = self.config;
        if c.window < Duration::from_millis(10) || c.window > Duration::from_secs(86_400) {
            return Err(ConfigError::new(
                "window",
                "must be between 10 ms and one day",
            ));
        }
        if c.min_requests == 0 {
            return Err(ConfigError::new("min_requests", "must be at least 1"));
        }
        if !(c.failure_rate > 0.0 && c.failure_rate <= 1.0) {
            return Err(ConfigError::new("failure_rate", "must be in (0, 1]"));
        }
        if !(c.load_failure_rate > 0.0 && c.load_failure_rate <= 1.0) {
            return Err(ConfigError::new("load_failure_rate", "must be in (0, 1]"));
        }
        if !(0.0..=1.0).contains(&c.max_ejected) {
            return Err(ConfigError::new("max_ejected", "must be in [0, 1]"));
        }
        if !(0.0..=0.5).contains(&c.trickle) {
            return Err(ConfigError::new("trickle", "must be in [0, 0.5]"));
        }
        if let Some((d, rate)) = c.slow_call {
            if d.is_zero() {
                return Err(ConfigError::new("slow_call", "duration must be positive"));
            }
            if !(rate > 0.0 && rate <= 1.0) {
                return Err(ConfigError::new("slow_call", "rate must be in (0, 1]"));
            }
        }
        if c.consecutive_failures == Some(0) {
            return Err(ConfigError::new(
                "consecutive_failures",
                "must be at least 1",
            ));
        }
        if self.open_min.is_zero() {
            return Err(ConfigError::new("open_min", "must be positive"));
        }
        if self.open_max > Duration::from_secs(365 * 86_400) {
            return Err(ConfigError::new("open_max", "must be at most a year"));
        }
        c.open = Backoff::builder()
            .min(self.open_min)
            .max(self.open_max)
            .multiplier(self.open_multiplier)
            .jitter(Jitter::None)
            .build()
            .map_err(|e| match e.field() {
                "multiplier" => ConfigError::new("open_multiplier", "must be in [1, 1000]"),
                "min" => ConfigError::new("open_min", "must not exceed open_max"),
                _ => ConfigError::new("open_max", "must be positive"),
            })?;
        if !(0.0..1.0).contains(&c.open_jitter) {
            return Err(ConfigError::new("open_jitter", "must be in [0, 1)"));
        }
        if !(1..=1000).contains(&c.probes) {
            return Err(ConfigError::new("probes", "must be between 1 and 1000"));
        }
        if c.stripes == 0 || c.stripes > 64 {
            return Err(ConfigError::new("stripes", "must be between 1 and 64"));
        }
        c.stripes = c.stripes.next_power_of_two();
        Ok(c)
    }
}

/// A plain form of [`BreakerConfig`] for configuration files: every field is optional
/// (defaults apply), durations are in milliseconds, and [`BreakerSettings::build`] validates
/// through the same builder.
///
/// ```
/// # #[cfg(feature = "serde")] {
/// let settings: tower_breaker::config::BreakerSettings =
///     serde_json::from_str(r#"{ "min_requests": 50, "open_min_ms": 2000, "mode": "gate" }"#)
///         .unwrap();
/// let config = settings.build().unwrap();
/// assert_eq!(config.min_requests(), 50);
/// # }
/// ```
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// See [`BreakerConfigBuilder::name`].
    pub name: Option<String>,
    /// See [`BreakerConfigBuilder::window`].
    pub window_ms: Option<u64>,
    /// See [`BreakerConfigBuilder::min_requests`].
    pub min_requests: Option<u64>,
    /// See [`BreakerConfigBuilder::failure_rate`].
    pub failure_rate: Option<f64>,
    /// See [`BreakerConfigBuilder::load_failure_rate`].
    pub load_failure_rate: Option<f64>,
    /// See [`BreakerConfigBuilder::trickle`].
    pub trickle: Option<f64>,
    /// See [`BreakerConfigBuilder::abandoned_fails`].
    pub abandoned_fails: Option<bool>,
    /// See [`BreakerConfigBuilder::max_ejected`].
    pub max_ejected: Option<f64>,
    /// See [`BreakerConfigBuilder::slow_call`]; needs `slow_call_rate` too.
    pub slow_call_ms: Option<u64>,
    /// See [`BreakerConfigBuilder::slow_call`]; needs `slow_call_ms` too.
    pub slow_call_rate: Option<f64>,
    /// See [`BreakerConfigBuilder::consecutive_failures`].
    pub consecutive_failures: Option<u64>,
    /// See [`BreakerConfigBuilder::open_min`].
    pub open_min_ms: Option<u64>,
    /// See [`BreakerConfigBuilder::open_max`].
    pub open_max_ms: Option<u64>,
    /// See [`BreakerConfigBuilder::open_multiplier`].
    pub open_multiplier: Option<f64>,
    /// See [`BreakerConfigBuilder::open_jitter`].
    pub open_jitter: Option<f64>,
    /// See [`BreakerConfigBuilder::healthy_period`].
    pub healthy_period_ms: Option<u64>,
    /// See [`BreakerConfigBuilder::patience`].
    pub patience_ms: Option<u64>,
    /// See [`BreakerConfigBuilder::probes`].
    pub probes: Option<u32>,
    /// See [`BreakerConfigBuilder::mode`].
    pub mode: Option<Mode>,
    /// See [`BreakerConfigBuilder::seed`].
    pub seed: Option<u64>,
    /// See [`BreakerConfigBuilder::stripes`].
    pub stripes: Option<usize>,
}

#[cfg(feature = "serde")]
impl BreakerSettings {
    /// Validates and builds the configuration.
    pub fn build(&self) -> Result<BreakerConfig, ConfigError> {
        let ms = Duration::from_millis;
        let mut b = BreakerConfig::builder();
        if let Some(v) = &self.name {
            b = b.name(v.clone());
        }
        if let Some(v) = self.window_ms {
            b = b.window(ms(v));
        }
        if let Some(v) = self.min_requests {
            b = b.min_requests(v);
        }
        if let Some(v) = self.failure_rate {
            b = b.failure_rate(v);
        }
        if let Some(v) = self.load_failure_rate {
            b = b.load_failure_rate(v);
        }
        if let Some(v) = self.trickle {
            b = b.trickle(v);
        }
        if let Some(v) = self.abandoned_fails {
            b = b.abandoned_fails(v);
        }
        if let Some(v) = self.max_ejected {
            b = b.max_ejected(v);
        }
        match (self.slow_call_ms, self.slow_call_rate) {
            (Some(d), Some(rate)) => b = b.slow_call(ms(d), rate),
            (None, None) => {}
            _ => {
                return Err(ConfigError::new(
                    "slow_call",
                    "needs both slow_call_ms and slow_call_rate",
                ));
            }
        }
        if let Some(v) = self.consecutive_failures {
            b = b.consecutive_failures(v);
        }
        if let Some(v) = self.open_min_ms {
            b = b.open_min(ms(v));
        }
        if let Some(v) = self.open_max_ms {
            b = b.open_max(ms(v));
        }
        if let Some(v) = self.open_multiplier {
            b = b.open_multiplier(v);
        }
        if let Some(v) = self.open_jitter {
            b = b.open_jitter(v);
        }
        if let Some(v) = self.healthy_period_ms {
            b = b.healthy_period(ms(v));
        }
        if let Some(v) = self.patience_ms {
            b = b.patience(ms(v));
        }
        if let Some(v) = self.probes {
            b = b.probes(v);
        }
        if let Some(v) = self.mode {
            b = b.mode(v);
        }
        if let Some(v) = self.seed {
            b = b.seed(v);
        }
        if let Some(v) = self.stripes {
            b = b.stripes(v);
        }
        b.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_of_a_seeded_config_draws_its_own_jitter() {
        let seeded = BreakerConfig::builder().seed(7).build().unwrap();
        let (a, b) = (seeded.for_key("0"), seeded.for_key("1"));
        assert_ne!(a.seed, b.seed);
        assert_ne!(a.seed, seeded.seed);
        // Reproducible: the same key gets the same seed every time.
        assert_eq!(seeded.for_key("0").seed, a.seed);
        // Everything else is the key's config unchanged.
        assert_eq!(
            BreakerConfig { seed: None, ..a },
            BreakerConfig {
                seed: None,
                ..seeded.clone()
            }
        );
        // Unseeded configs stay unseeded: each breaker seeds itself.
        let unseeded = BreakerConfig::builder().build().unwrap();
        assert_eq!(unseeded.for_key("0").seed, None);
    }

    #[test]
    fn defaults_are_valid() {
        let c = BreakerConfig::builder().build().unwrap();
        assert_eq!(c.min_requests(), 20);
        assert_eq!(c.probes(), 5);
        assert_eq!(c.trickle(), 0.05);
        assert_eq!(c.open_ceiling(1), Duration::from_millis(500));
        assert_eq!(c.open_ceiling(2), Duration::from_secs(1));
        assert_eq!(c.open_ceiling(30), Duration::from_secs(30));
        assert_eq!(c.mode(), Mode::FailFast);
        assert!(!c.abandoned_fails());
        let gate = BreakerConfig::builder().mode(Mode::Gate).build().unwrap();
        assert!(gate.abandoned_fails());
        let off = BreakerConfig::builder()
            .mode(Mode::Gate)
            .abandoned_fails(false)
            .build()
            .unwrap();
        assert!(!off.abandoned_fails());
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let b = BreakerConfig::builder;
        let cases = [
            (b().window(Duration::from_millis(1)), "window"),
            (b().min_requests(0), "min_requests"),
            (b().failure_rate(0.0), "failure_rate"),
            (b().failure_rate(f64::NAN), "failure_rate"),
            (b().failure_rate(1.5), "failure_rate"),
            (b().load_failure_rate(0.0), "load_failure_rate"),
            (b().load_failure_rate(f64::NAN), "load_failure_rate"),
            (b().trickle(0.6), "trickle"),
            (b().max_ejected(1.1), "max_ejected"),
            (b().max_ejected(f64::NAN), "max_ejected"),
            (b().trickle(-0.1), "trickle"),
            (b().trickle(f64::NAN), "trickle"),
            (b().slow_call(Duration::ZERO, 0.5), "slow_call"),
            (b().slow_call(Duration::from_secs(1), 2.0), "slow_call"),
            (b().consecutive_failures(0), "consecutive_failures"),
            (b().open_min(Duration::ZERO), "open_min"),
            (
                b().open_min(Duration::from_secs(10))
                    .open_max(Duration::from_secs(1)),
                "open_min",
            ),
            (b().open_multiplier(0.5), "open_multiplier"),
            (b().open_jitter(1.0), "open_jitter"),
            (b().probes(0), "probes"),
            (b().probes(1001), "probes"),
            (b().stripes(0), "stripes"),
        ];
        for (builder, field) in cases {
            let err = builder.build().unwrap_err();
            assert_eq!(err.field(), field, "{err}");
            assert!(err.to_string().contains(field));
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn settings_deserialize_and_validate() {
        let s: BreakerSettings = serde_json::from_str(
            r#"{"name":"inv","window_ms":5000,"slow_call_ms":200,"slow_call_rate":0.8,"probes":2,"mode":"gate"}"#,
        )
        .unwrap();
        let c = s.build().unwrap();
        assert_eq!(c.name(), "inv");
        assert_eq!(c.window(), Duration::from_secs(5));
        assert_eq!(c.probes(), 2);
        assert_eq!(c.mode(), Mode::Gate);
        let bad: BreakerSettings = serde_json::from_str(r#"{"slow_call_ms":200}"#).unwrap();
        assert_eq!(bad.build().unwrap_err().field(), "slow_call");
        let bad: BreakerSettings = serde_json::from_str(r#"{"probes":0}"#).unwrap();
        assert_eq!(bad.build().unwrap_err().field(), "probes");
        assert!(serde_json::from_str::<BreakerSettings>(r#"{"prob":1}"#).is_err());
    }

    #[test]
    fn stripes_round_up_to_a_power_of_two() {
        let c = BreakerConfig::builder().stripes(3).build().unwrap();
        assert_eq!(c.stripes, 4);
    }
}
