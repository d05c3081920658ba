//! Serializable configuration for both stacks, validated with errors that name the field.
//!
//! Every field is optional: what is left out takes the layer crate's own default, so the
//! defaults live in one place. Durations are strings like `"250ms"` or `"1m30s"`.
//!
//! ```
//! use damper::config::ClientConfig;
//!
//! let config: ClientConfig = toml::from_str(r#"
//!     name = "inventory"
//!     deadline = "2s"
//!
//!     [retry]
//!     max_attempts = 2
//!
//!     [breaker]
//!     failure_rate = 0.3
//!     open_min = "2s"
//!
//!     [hedge]
//!     enabled = false
//! "#).unwrap();
//! let _layer = damper::ClientStack::new().config(config).build().unwrap();
//!
//! // A bad value names the field and says why.
//! let bad: ClientConfig = toml::from_str("[breaker]\nfailure_rate = 1.5").unwrap();
//! let err = damper::ClientStack::new().config(bad).build().unwrap_err();
//! assert_eq!(err.path(), "client.breaker.failure_rate");
//! ```

pub use crate::duration::{InvalidDuration, format_duration, parse_duration, serde_duration};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

pub(crate) mod opt_duration {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => crate::duration::serde_duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "crate::duration::serde_duration")] Duration);
        Ok(Option::<W>::deserialize(d)?.map(|W(d)| d))
    }
}

/// A configuration value was rejected: which field (a dotted path, such as
/// `client.breaker.failure_rate`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    path: String,
    reason: String,
}

impl ConfigError {
    pub(crate) fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// The dotted path of the offending field.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Why it was rejected.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid config `{}`: {}", self.path, self.reason)
    }
}

impl std::error::Error for ConfigError {}

fn on() -> bool {
    true
}

/// The retry budget shared by retries and hedges (`tower-retry-budget`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Tokens credited per good response, in `(0, 1]` (default 0.1).
    pub ratio: Option<f64>,
    /// The cap on banked tokens (default 100,000, a backstop: the decay keeps the bank far
    /// below it).
    pub max_tokens: Option<f64>,
    /// Tokens at start (default 1, the reserve).
    pub initial: Option<f64>,
    /// Floor of extra attempts per second whatever the traffic (default 0, off).
    pub min_per_sec: Option<f64>,
    /// Decay time constant of the tokens above the reserve (default 500 ms): the bank holds
    /// about what the last `ttl` of good traffic earned.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// Tokens that do not decay while the client is quiet, under one request a second
    /// (default 1), so a quiet client can still retry.
    pub reserve: Option<f64>,
}

/// Jitter applied to retry backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JitterConfig {
    /// Full jitter (the default).
    Full,
    /// Decorrelated jitter.
    Decorrelated,
    /// Equal jitter.
    Equal,
    /// No jitter.
    None,
}

/// The retry layer (`tower-retry-budget`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Whether the layer is in the stack (default true).
    #[serde(default = "on")]
    pub enabled: bool,
    /// Attempts in total, first included (default 3).
    pub max_attempts: Option<u32>,
    /// Backoff base.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub backoff_min: Option<Duration>,
    /// Backoff cap.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub backoff_max: Option<Duration>,
    /// Backoff growth per retry.
    pub backoff_multiplier: Option<f64>,
    /// Backoff jitter.
    pub jitter: Option<JitterConfig>,
    /// The clamp on server pushback.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub max_pushback: Option<Duration>,
    /// No retry unless the deadline leaves at least this much for the attempt.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub min_attempt_time: Option<Duration>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_attempts: None,
            backoff_min: None,
            backoff_max: None,
            backoff_multiplier: None,
            jitter: None,
            max_pushback: None,
            min_attempt_time: None,
        }
    }
}

/// The hedge layer (`tower-hedge`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HedgeConfig {
    /// Whether the layer is in the stack (default true).
    #[serde(default = "on")]
    pub enabled: bool,
    /// Hedges as a share of requests, in `(0, 1)` (default 0.05).
    pub max_extra_load: Option<f64>,
    /// Extra attempts per request (default 1).
    pub max_hedges: Option<u32>,
    /// Samples needed before hedging starts.
    pub min_samples: Option<u64>,
    /// A fixed delay instead of the latency quantile.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub fixed_delay: Option<Duration>,
    /// The smallest quantile delay.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub min_delay: Option<Duration>,
    /// The largest quantile delay.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<Duration>,
    /// A decaying hedge bank with this time constant ("200ms" is a good start), so that no
    /// second's hedges go over `max_extra_load` of its requests however many clients there
    /// are, at some cost in tail latency (`tower_hedge::policy`). Unset: an exact bucket of
    /// 3 tokens per client.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub bank_ttl: Option<Duration>,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_extra_load: None,
            max_hedges: None,
            min_samples: None,
            fixed_delay: None,
            min_delay: None,
            max_delay: None,
            bank_ttl: None,
        }
    }
}

/// How an open breaker behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerModeConfig {
    /// Calls fail at once with `CircuitOpen` (the default).
    FailFast,
    /// `poll_ready` is pending while open: for use under a balancer.
    Gate,
}

/// The circuit breaker (`tower-breaker`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Whether the layer is in the stack (default true).
    #[serde(default = "on")]
    pub enabled: bool,
    /// The sliding window.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
    /// Calls in the window before it may trip.
    pub min_requests: Option<u64>,
    /// Share of failures of any kind that trips it, in `(0, 1]` (default 1.0: a window with
    /// no success).
    pub failure_rate: Option<f64>,
    /// Share of load failures (timeouts, overload answers) that trips it, in `(0, 1]`
    /// (default 0.5).
    pub load_failure_rate: Option<f64>,
    /// Share of calls let through while open, in `[0, 0.5]` (default 0.05).
    pub trickle: Option<f64>,
    /// How long a run of fast errors must last before it trips (default 1 s).
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub patience: Option<Duration>,
    /// Consecutive failures that trip it, whatever the window holds. Default
    /// [`DEFAULT_CONSECUTIVE_FAILURES`] in the client stack (the breaker crate alone has it
    /// off): the failure rate is judged over the whole window, so after a healthy window a
    /// dependency that went hard down would otherwise be called until its failures made up
    /// half of it (5 s at a steady rate, with the 10 s window). Set it very high (say
    /// `u64::MAX`) to trip on the rate alone.
    pub consecutive_failures: Option<u64>,
    /// First probe spacing while open.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub open_min: Option<Duration>,
    /// Longest probe spacing.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub open_max: Option<Duration>,
    /// Growth of the probe spacing per probe that says the dependency is still sick.
    pub open_multiplier: Option<f64>,
    /// Probe successes that close it (half-open admits `2^successes` at once).
    pub probes: Option<u32>,
    /// Fail fast or gate.
    pub mode: Option<BreakerModeConfig>,
    /// Whether every server overload answer with pushback (429/503 with `Retry-After`,
    /// `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms`) counts as a failure. Default false:
    /// they count only in a run of refusals with no healthy answer between them; see
    /// [`BreakerView`](crate::BreakerView).
    pub trip_on_pushback: bool,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: None,
            min_requests: None,
            failure_rate: None,
            load_failure_rate: None,
            trickle: None,
            patience: None,
            consecutive_failures: None,
            open_min: None,
            open_max: None,
            open_multiplier: None,
            probes: None,
            mode: None,
            trip_on_pushback: false,
        }
    }
}

/// The client stack's default for [`BreakerConfig::consecutive_failures`]. A run this long is
/// evidence of *near-total* failure: a dependency failing 90% of calls at random produces 100
/// in a row with a chance of 3·10⁻⁵ per run, while one that is down trips within 100 calls
/// (0.1 s at 1,000 requests a second, where the 1 s `patience` decides). A fail-fast breaker
/// that trips on less refuses calls a partly failing dependency would have served: at 10
/// requests a second a 90% error rate gives 20 in a row within seconds, and every refused call
/// is one of its successes lost. Finagle and Envoy trip on 5 in a row, and lose them.
pub const DEFAULT_CONSECUTIVE_FAILURES: u64 = 100;

/// The default run for a breaker in gate mode under a balancer
/// ([`Mode::Gate`](tower_breaker::Mode::Gate)): 20. An open gate only routes calls to the other
/// endpoints, so ejecting early costs little, and at 30% failures 20 in a row come about once
/// in 3·10¹⁰ calls.
pub const DEFAULT_GATE_CONSECUTIVE_FAILURES: u64 = 20;

/// A concurrency-limit algorithm (`tower-shed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitAlgorithm {
    /// Additive increase, multiplicative decrease.
    Aimd,
    /// Netflix's Gradient2.
    Gradient2,
    /// TCP Vegas-style queue estimation.
    Vegas,
    /// A fixed limit (`max`).
    Fixed,
}

/// A concurrency limit with load shedding (`tower-shed`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitConfig {
    /// Whether the layer is in the stack. Unset: the stack's default (off on clients, on on
    /// servers).
    pub enabled: Option<bool>,
    /// The algorithm.
    pub algorithm: Option<LimitAlgorithm>,
    /// The starting limit.
    pub initial: Option<usize>,
    /// The smallest limit.
    pub min: Option<usize>,
    /// The largest limit (the limit itself for `fixed`).
    pub max: Option<usize>,
    /// Queue up to this many requests (CoDel, adaptive LIFO) instead of rejecting at once.
    pub queue: Option<usize>,
    /// CoDel target queueing delay.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub codel_target: Option<Duration>,
    /// CoDel interval.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub codel_interval: Option<Duration>,
}

/// The adaptive per-attempt timeout (`tower-adaptive-timeout`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutConfig {
    /// Whether the layer is in the stack (default true).
    #[serde(default = "on")]
    pub enabled: bool,
    /// Latency quantile followed.
    pub quantile: Option<f64>,
    /// Headroom over the quantile.
    pub multiplier: Option<f64>,
    /// Smallest timeout.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub floor: Option<Duration>,
    /// Largest timeout.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<Duration>,
    /// Timeout until enough samples exist.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Duration>,
    /// Samples needed before the quantile is trusted.
    pub min_samples: Option<u64>,
    /// The least share of a request's remaining deadline an attempt waits, in `[0, 1]`
    /// (default 1/3).
    pub deadline_share: Option<f64>,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            quantile: None,
            multiplier: None,
            floor: None,
            ceiling: None,
            fallback: None,
            min_samples: None,
            deadline_share: None,
        }
    }
}

/// The whole client stack.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// The `name` label on every metric.
    pub name: Option<String>,
    /// The logical request's deadline, across all attempts and hedges. None: no deadline
    /// unless the request carries one.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Duration>,
    /// Whether each attempt tells the server the time left as a `grpc-timeout` header, and a
    /// `grpc-timeout` the caller already set bounds the request even when `deadline` is
    /// unset. None: the preset's choice (on for [`ClientStack::grpc`](crate::ClientStack),
    /// off for `http()` and `new()`, so calls to third-party HTTP APIs carry no gRPC header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagate_deadline: Option<bool>,
    /// The budget shared by retries and hedges.
    pub budget: BudgetConfig,
    /// Retries.
    pub retry: RetryConfig,
    /// Hedging.
    pub hedge: HedgeConfig,
    /// The circuit breaker.
    pub breaker: BreakerConfig,
    /// A client-side concurrency limit (off by default).
    pub limit: LimitConfig,
    /// The adaptive attempt timeout.
    pub timeout: TimeoutConfig,
}

/// A shed partition: a named class with a guaranteed share of the limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionConfig {
    /// The class name.
    pub name: String,
    /// Its guaranteed share, in `(0, 1]`.
    pub share: f64,
}

/// Server-side deadline enforcement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerDeadlineConfig {
    /// Whether incoming `grpc-timeout` headers set the request's deadline (default true).
    #[serde(default = "on")]
    pub enabled: bool,
    /// The clamp on a caller's `grpc-timeout` (default 30 s).
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
    /// A deadline for requests that carry none.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub default: Option<Duration>,
}

impl Default for ServerDeadlineConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max: None,
            default: None,
        }
    }
}

/// The whole server stack.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The `name` label on every metric.
    pub name: Option<String>,
    /// The adaptive concurrency limit (on by default, Gradient2).
    pub limit: LimitConfig,
    /// Guaranteed shares, picked by the stack's partitioner.
    pub partitions: Vec<PartitionConfig>,
    /// Deadline enforcement.
    pub deadline: ServerDeadlineConfig,
}
