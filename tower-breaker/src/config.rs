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
/// | `failure_rate` | 0.5 |
/// | `slow_call` | off |
/// | `consecutive_failures` | off |
/// | `open_min` / `open_max` / `open_multiplier` | 5 s / 300 s / ×2 |
/// | `open_jitter` | 0.2 (each open period is drawn from `[0.8·d, d]`) |
/// | `healthy_period` | 60 s |
/// | `probes` | 1 |
/// | `mode` | [`Mode::FailFast`] |
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    pub(crate) name: Cow<'static, str>,
    pub(crate) window: Duration,
    pub(crate) min_requests: u64,
    pub(crate) failure_rate: f64,
    pub(crate) slow_call: Option<(Duration, f64)>,
    pub(crate) consecutive_failures: Option<u64>,
    pub(crate) open: Backoff,
    pub(crate) open_jitter: f64,
    pub(crate) healthy_period: Duration,
    pub(crate) probes: u32,
    pub(crate) mode: Mode,
    pub(crate) seed: Option<u64>,
    pub(crate) stripes: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            name: Cow::Borrowed("breaker"),
            window: Duration::from_secs(10),
            min_requests: 20,
            failure_rate: 0.5,
            slow_call: None,
            consecutive_failures: None,
            open: Backoff::builder()
                .min(Duration::from_secs(5))
                .max(Duration::from_secs(300))
                .multiplier(2.0)
                .jitter(Jitter::None)
                .build()
                .unwrap_or_default(),
            open_jitter: 0.2,
            healthy_period: Duration::from_secs(60),
            probes: 1,
            mode: Mode::FailFast,
            seed: None,
            stripes: default_stripes(),
        }
    }
}

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
            open_min: Duration::from_secs(5),
            open_max: Duration::from_secs(300),
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

    /// Calls admitted while half-open.
    pub fn probes(&self) -> u32 {
        self.probes
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

    /// The failure rate (failures / calls in the window) that trips the breaker. Default 0.5; in
    /// `(0, 1]`.
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.config.failure_rate = rate;
        self
    }

    /// Trips when the share of calls slower than `duration` reaches `rate` (in `(0, 1]`). Off by
    /// default.
    pub fn slow_call(mut self, duration: Duration, rate: f64) -> Self {
        self.config.slow_call = Some((duration, rate));
        self
    }

    /// Also trips after `n` failures in a row, however few calls the window holds. Off by
    /// default; at least 1.
    pub fn consecutive_failures(mut self, n: u64) -> Self {
        self.config.consecutive_failures = Some(n);
        self
    }

    /// The first open period. Default 5 s.
    pub fn open_min(mut self, d: Duration) -> Self {
        self.open_min = d;
        self
    }

    /// The longest open period, pushback included. Default 300 s.
    pub fn open_max(mut self, d: Duration) -> Self {
        self.open_max = d;
        self
    }

    /// Growth of the open period per consecutive reopening. Default 2; in `[1, 1000]`.
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

    /// How long the breaker must stay closed before its open period falls back to `open_min`.
    /// Default 60 s.
    pub fn healthy_period(mut self, d: Duration) -> Self {
        self.config.healthy_period = d;
        self
    }

    /// Calls admitted while half-open; that many successes close the breaker. Default 1; in
    /// `[1, 1000]`.
    pub fn probes(mut self, n: u32) -> Self {
        self.config.probes = n;
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
        assert_eq!(c.probes(), 1);
        assert_eq!(c.open_ceiling(1), Duration::from_secs(5));
        assert_eq!(c.open_ceiling(2), Duration::from_secs(10));
        assert_eq!(c.open_ceiling(30), Duration::from_secs(300));
        assert_eq!(c.mode(), Mode::FailFast);
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
