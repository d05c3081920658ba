//! Config table tests: every invalid value of every layer's configuration is rejected when built,
//! with a typed error naming the offending field, and never with a panic; valid boundary values
//! are accepted.
//!
//! Each table row runs under `catch_unwind`, so a panic is reported as a failure of that row
//! (with its label) rather than aborting the table.

// Tables are built row by row with `bad!`/`good!`, which read better than one `vec![]`.
#![allow(clippy::vec_init_then_push)]

use damper::breaker::{BreakerConfig, BreakerSettings, KeyedBreakerLayer};
use damper::core::backoff::{Backoff, Jitter};
use damper::core::budget::TokenBucket;
use damper::core::histogram::{HistogramConfig, LatencyHistogram};
use damper::core::rng::SplitMix64;
use damper::fault::{FaultLayer, FaultSpec, Latency, Schedule};
use damper::hedge::HedgeLayer;
use damper::retry_budget::{RetryBudget, RetryLayer};
use damper::shed::ShedLayer;
use damper::shed::limit::{Aimd, Fixed, Gradient2, Vegas};
use damper::timeout::{AdaptiveTimeoutLayer, DeadlineLayer};
use damper::{ClientStack, ServerStack};
use std::num::NonZeroUsize;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;
use tokio::time::Instant;

const NAN: f64 = f64::NAN;
const INF: f64 = f64::INFINITY;
const NEG_INF: f64 = f64::NEG_INFINITY;
const MAX: Duration = Duration::MAX;
const ZERO: Duration = Duration::ZERO;
const DAY: Duration = Duration::from_secs(86_400);
const NS: Duration = Duration::from_nanos(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The field an error names, whichever crate's error type it is.
trait Named {
    fn named(&self) -> String;
}

macro_rules! named {
    ($($t:ty => $m:ident),* $(,)?) => {$(
        impl Named for $t {
            fn named(&self) -> String {
                self.$m().to_owned()
            }
        }
    )*};
}

named! {
    damper::retry_budget::ConfigError => field,
    damper::breaker::ConfigError => field,
    damper::hedge::ConfigError => field,
    damper::timeout::error::ConfigError => field,
    damper::shed::error::ConfigError => field,
    damper::fault::ConfigError => field,
    damper::core::backoff::InvalidBackoff => field,
    damper::core::histogram::InvalidHistogram => field,
    damper::core::budget::InvalidBudget => field,
    damper::ConfigError => path,
}

/// `None` if the value was accepted, else the field the error names.
fn field<T, E: Named + std::fmt::Display>(r: Result<T, E>) -> Option<String> {
    match r {
        Ok(_) => None,
        Err(e) => {
            let named = e.named();
            // The message names the field too, for whoever reads it in a log.
            let msg = e.to_string();
            let last = named.rsplit('.').next().unwrap_or(&named);
            assert!(
                msg.contains(last),
                "message `{msg}` does not name `{named}`"
            );
            Some(named)
        }
    }
}

type Case = (String, &'static str, Box<dyn FnOnce() -> Option<String>>);

/// One row: `label`, the field the error must name, and the build to run.
macro_rules! bad {
    ($v:ident, $label:expr, $field:expr, $build:expr) => {
        $v.push((
            $label.to_string(),
            $field,
            Box::new(move || field($build)) as Box<dyn FnOnce() -> Option<String>>,
        ))
    };
}

/// One row per value of `values`, labelled `prefix value`.
macro_rules! bad_each {
    ($v:ident, $field:literal, [$($x:expr),* $(,)?], |$var:ident| $build:expr) => {
        bad_each!($v, $field, $field, [$($x),*], |$var| $build)
    };
    ($v:ident, $prefix:literal, $field:expr, [$($x:expr),* $(,)?], |$var:ident| $build:expr) => {
        $(
            let $var = $x;
            bad!($v, format!("{} {:?}", $prefix, $var), $field, $build);
        )*
    };
}

/// One row that must be accepted.
macro_rules! good {
    ($v:ident, $label:expr, $build:expr) => {
        $v.push((
            $label.to_string(),
            "",
            Box::new(move || field($build)) as Box<dyn FnOnce() -> Option<String>>,
        ))
    };
}

/// Runs every row; collects every mismatch and panic, then fails once with all of them.
fn run(cases: Vec<Case>) {
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    let n = cases.len();
    for (label, want, build) in cases {
        match catch_unwind(AssertUnwindSafe(build)) {
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failures.push(format!("{label}: PANICKED ({msg})"));
            }
            Ok(None) if want.is_empty() => {}
            Ok(None) => failures.push(format!("{label}: accepted, expected an error on `{want}`")),
            Ok(Some(got)) if want.is_empty() => failures.push(format!(
                "{label}: rejected on `{got}`, expected it accepted"
            )),
            Ok(Some(got)) if got != want => {
                failures.push(format!("{label}: error names `{got}`, expected `{want}`"))
            }
            Ok(Some(_)) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn token_bucket() {
    let mut v: Vec<Case> = Vec::new();
    bad_each!(v, "ratio", [0.0, -0.1, 1.000_001, NAN, INF, NEG_INF], |r| {
        TokenBucket::new(r, 10.0, 0.0)
    });
    bad_each!(
        v,
        "max_tokens",
        [0.0, 0.999, -1.0, 1e9 + 1.0, NAN, INF],
        |m| TokenBucket::new(0.1, m, 0.0)
    );
    bad_each!(v, "initial", [-0.1, 10.5, NAN, INF, NEG_INF], |i| {
        TokenBucket::new(0.1, 10.0, i)
    });
    good!(v, "ratio 1", TokenBucket::new(1.0, 10.0, 0.0));
    good!(
        v,
        "ratio tiny",
        TokenBucket::new(f64::MIN_POSITIVE, 10.0, 0.0)
    );
    good!(v, "max_tokens 1", TokenBucket::new(0.5, 1.0, 1.0));
    good!(v, "max_tokens 1e9, full", TokenBucket::new(0.5, 1e9, 1e9));
    run(v);
}

#[test]
fn retry_budget() {
    let b = RetryBudget::builder;
    let mut v: Vec<Case> = Vec::new();
    bad_each!(v, "ratio", [0.0, -1.0, 1.5, NAN, INF], |r| b()
        .ratio(r)
        .build());
    bad_each!(v, "max_tokens", [0.0, 0.5, 2e9, NAN, INF, NEG_INF], |m| b()
        .max_tokens(m)
        .build());
    bad_each!(v, "initial", [-1.0, 100_001.0, NAN, INF], |i| b()
        .initial(i)
        .build());
    bad_each!(v, "reserve", [-0.001, NAN, INF, NEG_INF], |r| b()
        .reserve(r)
        .build());
    bad!(
        v,
        "reserve above a lowered cap",
        "reserve",
        b().max_tokens(2.0).initial(0.0).reserve(3.0).build()
    );
    bad!(
        v,
        "initial above a lowered cap",
        "initial",
        b().initial(5.0).max_tokens(2.0).build()
    );
    bad_each!(
        v,
        "min_per_sec",
        [-0.001, 1e6 + 1.0, NAN, INF, NEG_INF],
        |m| b().min_per_sec(m).build()
    );
    bad!(
        v,
        "floor_burst 0",
        "floor_burst",
        b().floor_burst(0).build()
    );
    bad_each!(
        v,
        "ttl",
        [ZERO, NS, Duration::from_micros(999), DAY + NS, MAX],
        |t| b().ttl(t).build()
    );
    good!(v, "defaults", b().build());
    good!(v, "ratio 1", b().ratio(1.0).build());
    good!(v, "min_per_sec 0 (floor off)", b().min_per_sec(0.0).build());
    good!(v, "min_per_sec 1e6", b().min_per_sec(1e6).build());
    good!(v, "floor_burst max", b().floor_burst(u32::MAX).build());
    good!(v, "ttl 1 ms", b().ttl(ms(1)).build());
    good!(v, "ttl one day", b().ttl(DAY).build());
    good!(
        v,
        "initial = max_tokens = 1e9",
        b().max_tokens(1e9).initial(1e9).build()
    );
    run(v);
}

#[test]
fn backoff() {
    let b = Backoff::builder;
    let mut v: Vec<Case> = Vec::new();
    bad!(v, "max 0", "max", b().min(ZERO).max(ZERO).build());
    bad!(v, "min > max", "min", b().min(secs(2)).max(secs(1)).build());
    bad!(v, "min MAX", "min", b().min(MAX).build());
    bad_each!(
        v,
        "multiplier",
        [0.0, 0.999, -2.0, 1000.001, NAN, INF, NEG_INF],
        |m| b().multiplier(m).build()
    );
    good!(v, "min 0", b().min(ZERO).build());
    good!(v, "min = max", b().min(secs(1)).max(secs(1)).build());
    good!(v, "max MAX", b().max(MAX).build());
    good!(v, "multiplier 1", b().multiplier(1.0).build());
    good!(v, "multiplier 1000", b().multiplier(1000.0).build());
    run(v);
}

#[test]
fn backoff_with_huge_bounds_never_panics_and_stays_within_max() {
    for jitter in [
        Jitter::Full,
        Jitter::Decorrelated,
        Jitter::Equal,
        Jitter::None,
    ] {
        let backoff = Backoff::builder()
            .min(secs(1))
            .max(MAX)
            .multiplier(1000.0)
            .jitter(jitter)
            .build()
            .unwrap();
        let mut rng = SplitMix64::new(7);
        let mut previous = ZERO;
        for retry in [0, 1, 2, 10, 100, 1024, u32::MAX] {
            let d = backoff.delay(retry, previous, &mut rng);
            assert!(d <= MAX, "{jitter:?} retry {retry}");
            previous = d;
        }
        assert_eq!(backoff.ceiling(u32::MAX), MAX);
    }
}

#[test]
fn retry_layer() {
    let budget = || RetryBudget::builder().build().unwrap();
    let b = move || RetryLayer::builder(budget());
    let mut v: Vec<Case> = Vec::new();
    bad_each!(v, "max_attempts", [0, 11, u32::MAX], |n| b()
        .max_attempts(n)
        .build());
    bad_each!(v, "max_pushback", [secs(3600) + NS, MAX], |d| b()
        .max_pushback(d)
        .build());
    bad_each!(v, "min_attempt_time", [secs(60) + NS, MAX], |d| b()
        .min_attempt_time(d)
        .build());
    bad!(v, "timeout 0", "timeout", b().timeout(ZERO).build());
    good!(v, "max_attempts 1", b().max_attempts(1).build());
    good!(v, "max_attempts 10", b().max_attempts(10).build());
    good!(v, "max_pushback 0", b().max_pushback(ZERO).build());
    good!(
        v,
        "max_pushback one hour",
        b().max_pushback(secs(3600)).build()
    );
    good!(v, "min_attempt_time 0", b().min_attempt_time(ZERO).build());
    good!(
        v,
        "min_attempt_time one minute",
        b().min_attempt_time(secs(60)).build()
    );
    good!(v, "timeout 1 ns", b().timeout(NS).build());
    good!(v, "timeout MAX", b().timeout(MAX).build());
    run(v);
}

#[test]
fn breaker() {
    let b = BreakerConfig::builder;
    let mut v: Vec<Case> = Vec::new();
    bad_each!(v, "window", [ZERO, ms(9), DAY + NS, MAX], |w| b()
        .window(w)
        .build());
    bad!(
        v,
        "min_requests 0",
        "min_requests",
        b().min_requests(0).build()
    );
    bad_each!(
        v,
        "failure_rate",
        [0.0, -0.1, 1.000_001, NAN, INF, NEG_INF],
        |r| b().failure_rate(r).build()
    );
    bad!(
        v,
        "slow_call 0 s",
        "slow_call",
        b().slow_call(ZERO, 0.5).build()
    );
    bad_each!(
        v,
        "slow_call rate",
        "slow_call",
        [0.0, -1.0, 1.5, NAN, INF],
        |r| b().slow_call(secs(1), r).build()
    );
    bad!(
        v,
        "consecutive_failures 0",
        "consecutive_failures",
        b().consecutive_failures(0).build()
    );
    bad!(v, "open_min 0", "open_min", b().open_min(ZERO).build());
    bad!(
        v,
        "open_min > open_max",
        "open_min",
        b().open_min(secs(10)).open_max(secs(1)).build()
    );
    bad!(v, "open_max 0", "open_max", b().open_max(ZERO).build());
    bad_each!(
        v,
        "open_max",
        [Duration::from_secs(365 * 86_400) + NS, MAX],
        |d| b().open_max(d).build()
    );
    bad_each!(
        v,
        "open_multiplier",
        [0.0, 0.5, -2.0, 1000.5, NAN, INF],
        |m| b().open_multiplier(m).build()
    );
    bad_each!(v, "open_jitter", [-0.1, 1.0, 2.0, NAN, INF], |j| b()
        .open_jitter(j)
        .build());
    bad_each!(v, "probes", [0, 1001, u32::MAX], |p| b().probes(p).build());
    bad_each!(v, "stripes", [0, 65, usize::MAX], |s| b()
        .stripes(s)
        .build());
    good!(v, "defaults", b().build());
    good!(v, "window 10 ms", b().window(ms(10)).build());
    good!(v, "window one day", b().window(DAY).build());
    good!(v, "min_requests MAX", b().min_requests(u64::MAX).build());
    good!(v, "failure_rate 1", b().failure_rate(1.0).build());
    good!(
        v,
        "failure_rate tiny",
        b().failure_rate(f64::MIN_POSITIVE).build()
    );
    good!(v, "slow_call 1 ns, rate 1", b().slow_call(NS, 1.0).build());
    good!(v, "slow_call MAX", b().slow_call(MAX, 0.5).build());
    good!(
        v,
        "consecutive_failures 1",
        b().consecutive_failures(1).build()
    );
    good!(
        v,
        "open_min = open_max",
        b().open_min(secs(1)).open_max(secs(1)).build()
    );
    good!(
        v,
        "open_max one year",
        b().open_max(Duration::from_secs(365 * 86_400)).build()
    );
    good!(v, "open_multiplier 1", b().open_multiplier(1.0).build());
    good!(
        v,
        "open_multiplier 1000",
        b().open_multiplier(1000.0).build()
    );
    good!(v, "open_jitter 0", b().open_jitter(0.0).build());
    good!(v, "open_jitter 0.999", b().open_jitter(0.999).build());
    good!(v, "healthy_period 0", b().healthy_period(ZERO).build());
    good!(v, "healthy_period MAX", b().healthy_period(MAX).build());
    good!(v, "probes 1", b().probes(1).build());
    good!(v, "probes 1000", b().probes(1000).build());
    good!(v, "stripes 1", b().stripes(1).build());
    good!(v, "stripes 64", b().stripes(64).build());
    run(v);
}

#[test]
fn breaker_settings_from_json() {
    let s = |json: &str| -> BreakerSettings { serde_json::from_str(json).unwrap() };
    let mut v: Vec<Case> = Vec::new();
    let rows: &[(&str, &str)] = &[
        (r#"{"window_ms":0}"#, "window"),
        (r#"{"window_ms":18446744073709551615}"#, "window"),
        (r#"{"min_requests":0}"#, "min_requests"),
        (r#"{"failure_rate":-0.5}"#, "failure_rate"),
        (r#"{"failure_rate":1e300}"#, "failure_rate"),
        (r#"{"slow_call_ms":200}"#, "slow_call"),
        (r#"{"slow_call_rate":0.5}"#, "slow_call"),
        (r#"{"slow_call_ms":0,"slow_call_rate":0.5}"#, "slow_call"),
        (r#"{"consecutive_failures":0}"#, "consecutive_failures"),
        (r#"{"open_min_ms":0}"#, "open_min"),
        (r#"{"open_max_ms":18446744073709551615}"#, "open_max"),
        (r#"{"open_min_ms":9000,"open_max_ms":1000}"#, "open_min"),
        (r#"{"open_multiplier":0.1}"#, "open_multiplier"),
        (r#"{"open_jitter":1.0}"#, "open_jitter"),
        (r#"{"probes":0}"#, "probes"),
        (r#"{"stripes":0}"#, "stripes"),
    ];
    for (json, want) in rows {
        let settings = s(json);
        bad!(v, *json, want, settings.build());
    }
    let settings = s(r#"{"healthy_period_ms":18446744073709551615,"window_ms":86400000}"#);
    good!(v, "huge healthy period, one-day window", settings.build());
    run(v);
    for json in [
        r#"{"probes":-1}"#,
        r#"{"window_ms":-5}"#,
        r#"{"mode":"sideways"}"#,
        r#"{"unknown":1}"#,
    ] {
        assert!(
            serde_json::from_str::<BreakerSettings>(json).is_err(),
            "{json}"
        );
    }
}

/// Keyed breakers take no fallible knob (the bound is a `NonZeroUsize`): their extremes build
/// and serve a call without panicking.
#[test]
fn keyed_breaker_extremes() {
    use tower::{Layer, Service};
    let config = BreakerConfig::builder().stripes(1).build().unwrap();
    for (max_keys, idle) in [(1, ZERO), (1, MAX), (usize::MAX, ZERO), (usize::MAX, MAX)] {
        let layer = KeyedBreakerLayer::new(config.clone(), |r: &u32| *r)
            .max_keys(NonZeroUsize::new(max_keys).unwrap())
            .idle_timeout(idle);
        let mut svc = layer.layer(tower::service_fn(|r: u32| async move {
            Ok::<_, damper::BoxError>(r)
        }));
        for key in 0..3u32 {
            let fut = svc.call(key);
            let out = futures_now(fut);
            assert_eq!(out.unwrap(), key);
        }
        assert!(layer.len() <= max_keys.min(3), "{max_keys} {idle:?}");
    }
}

/// Polls a future that must be ready at once.
fn futures_now<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = std::task::Waker::noop();
    match fut
        .as_mut()
        .poll(&mut std::task::Context::from_waker(waker))
    {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("not ready"),
    }
}

#[test]
fn shed_limits() {
    let mut v: Vec<Case> = Vec::new();
    // The shared bounds, for each adaptive algorithm.
    macro_rules! bounds {
        ($name:literal, $b:expr) => {
            bad!(
                v,
                concat!($name, " min_limit 0"),
                "min_limit",
                $b.min_limit(0).build()
            );
            bad!(
                v,
                concat!($name, " max < min"),
                "max_limit",
                $b.min_limit(10).max_limit(5).initial_limit(7).build()
            );
            bad!(
                v,
                concat!($name, " max > u32"),
                "max_limit",
                $b.max_limit(u32::MAX as usize + 1).build()
            );
            bad!(
                v,
                concat!($name, " initial < min"),
                "initial_limit",
                $b.min_limit(10).initial_limit(5).build()
            );
            bad!(
                v,
                concat!($name, " initial > max"),
                "initial_limit",
                $b.max_limit(10).initial_limit(11).build()
            );
            for s in [0.0, -0.5, 1.5, NAN, INF] {
                bad!(
                    v,
                    format!("{} smoothing {s}", $name),
                    "smoothing",
                    $b.smoothing(s).build()
                );
            }
            good!(v, concat!($name, " defaults"), $b.build());
            good!(
                v,
                concat!($name, " min = initial = max = 1"),
                $b.min_limit(1).initial_limit(1).max_limit(1).build()
            );
            good!(
                v,
                concat!($name, " max = u32::MAX"),
                $b.max_limit(u32::MAX as usize).build()
            );
            good!(v, concat!($name, " smoothing 1"), $b.smoothing(1.0).build());
        };
    }
    bounds!("aimd", Aimd::builder());
    bounds!("gradient2", Gradient2::builder());
    bounds!("vegas", Vegas::builder());

    bad_each!(
        v,
        "aimd backoff",
        "backoff",
        [0.0, 0.49, 1.0, -0.7, NAN, INF],
        |x| Aimd::builder().backoff(x).build()
    );
    bad_each!(
        v,
        "aimd increase_by",
        "increase_by",
        [0.0, -1.0, NAN, INF],
        |x| Aimd::builder().increase_by(x).build()
    );
    bad!(
        v,
        "aimd latency_threshold 0",
        "latency_threshold",
        Aimd::builder().latency_threshold(ZERO).build()
    );
    good!(v, "aimd backoff 0.5", Aimd::builder().backoff(0.5).build());
    good!(
        v,
        "aimd latency_threshold MAX",
        Aimd::builder().latency_threshold(MAX).build()
    );

    bad_each!(
        v,
        "gradient2 tolerance",
        "tolerance",
        [0.0, 0.999, -1.0, NAN, INF],
        |x| Gradient2::builder().tolerance(x).build()
    );
    bad_each!(v, "gradient2 long_window", "long_window", [0, 9], |n| {
        Gradient2::builder().long_window(n).build()
    });
    bad_each!(
        v,
        "gradient2 queue_size",
        "queue_size",
        [-0.1, NAN, INF],
        |x| Gradient2::builder().queue_size(x).build()
    );
    good!(
        v,
        "gradient2 tolerance 1, long_window 10, queue 0",
        Gradient2::builder()
            .tolerance(1.0)
            .long_window(10)
            .queue_size(0.0)
            .build()
    );

    bad_each!(
        v,
        "vegas probe_multiplier",
        "probe_multiplier",
        [0.0, 0.999, -1.0, NAN, INF],
        |x| Vegas::builder().probe_multiplier(x).build()
    );
    bad_each!(
        v,
        "vegas probe_pin",
        "probe_pin",
        [0.0, 0.099, 1.0, NAN, INF],
        |x| Vegas::builder().probe_pin(x).build()
    );
    good!(
        v,
        "vegas probe_pin 0.1, multiplier 1",
        Vegas::builder()
            .probe_pin(0.1)
            .probe_multiplier(1.0)
            .build()
    );

    bad_each!(
        v,
        "fixed",
        "limit",
        [0, u32::MAX as usize + 1, usize::MAX],
        |n| Fixed::new(n)
    );
    good!(v, "fixed 1", Fixed::new(1));
    good!(v, "fixed u32::MAX", Fixed::new(u32::MAX as usize));
    run(v);
}

#[test]
fn shed_builder() {
    let b = || ShedLayer::builder(Fixed::new(10).unwrap());
    let mut v: Vec<Case> = Vec::new();
    bad_each!(v, "sample_every", [0, 3, 12, u32::MAX], |n| b()
        .sample_every(n)
        .build());
    bad!(v, "queue 0", "queue", b().queue(0).build());
    bad!(
        v,
        "codel_target 0",
        "codel_target",
        b().codel_target(ZERO).build()
    );
    bad!(
        v,
        "codel_interval < target",
        "codel_interval",
        b().codel_target(ms(100)).codel_interval(ms(99)).build()
    );
    bad_each!(
        v,
        "partition share",
        "partition",
        [0.0, -0.5, 1.5, NAN, INF],
        |s| b().partition("a", s).build()
    );
    bad!(
        v,
        "partition names repeat",
        "partition",
        b().partition("a", 0.2).partition("a", 0.2).build()
    );
    bad!(
        v,
        "partition shares add up to > 1",
        "partition",
        b().partition("a", 0.6).partition("b", 0.5).build()
    );
    bad!(
        v,
        "retry_after min > max",
        "retry_after",
        b().retry_after(secs(2), secs(1)).build()
    );
    good!(v, "defaults", b().build());
    good!(v, "sample_every 1", b().sample_every(1).build());
    good!(v, "sample_every 2^31", b().sample_every(1 << 31).build());
    good!(v, "queue 1", b().queue(1).build());
    good!(
        v,
        "codel_interval = target",
        b().codel_target(ms(5)).codel_interval(ms(5)).build()
    );
    good!(
        v,
        "one partition of share 1",
        b().partition("a", 1.0).build()
    );
    good!(
        v,
        "shares add up to exactly 1",
        b().partition("a", 0.7)
            .partition("b", 0.2)
            .partition("c", 0.1)
            .build()
    );
    good!(
        v,
        "retry_after min = max = 0",
        b().retry_after(ZERO, ZERO).build()
    );
    good!(v, "retry_after MAX", b().retry_after(ZERO, MAX).build());
    good!(v, "claim_ttl 0", b().claim_ttl(ZERO).build());
    run(v);
}

#[test]
fn hedge() {
    let b = HedgeLayer::builder;
    let mut v: Vec<Case> = Vec::new();
    bad_each!(v, "max_extra_load", [0.0, 1.0, -0.1, NAN, INF], |x| b()
        .max_extra_load(x)
        .build());
    bad_each!(v, "quantile", [0.0, 1.0, -0.5, 1.5, NAN, INF], |q| b()
        .quantile(q)
        .build());
    bad!(
        v,
        "max_delay < min_delay",
        "max_delay",
        b().min_delay(ms(10)).max_delay(ms(9)).build()
    );
    bad_each!(v, "max_hedges", [0, 5, u32::MAX], |n| b()
        .max_hedges(n)
        .build());
    bad_each!(v, "burst", [0.0, 0.99, 1e9 + 1.0, -1.0, NAN, INF], |x| b()
        .burst(x)
        .build());
    bad!(v, "refresh 0", "refresh", b().refresh(ZERO).build());
    for (w, n) in [(ZERO, 4), (ms(3), 4), (DAY + NS, 4), (MAX, 4)] {
        bad!(
            v,
            format!("window {w:?}/{n}"),
            "window",
            b().window(w, n).build()
        );
    }
    bad_each!(v, "sub_windows", [0, 65, usize::MAX], |n| b()
        .window(secs(10), n)
        .build());
    good!(v, "defaults", b().build());
    good!(v, "max_extra_load tiny", b().max_extra_load(1e-9).build());
    good!(v, "max_extra_load 0.999", b().max_extra_load(0.999).build());
    good!(v, "max_hedges 1..=4", b().max_hedges(4).build());
    good!(v, "burst 1", b().burst(1.0).build());
    good!(v, "burst 1e9", b().burst(1e9).build());
    good!(
        v,
        "max_delay = min_delay",
        b().min_delay(ms(5)).max_delay(ms(5)).build()
    );
    good!(v, "window 4 ms / 4", b().window(ms(4), 4).build());
    good!(v, "window one day / 64", b().window(DAY, 64).build());
    good!(v, "fixed_delay 0", b().fixed_delay(ZERO).build());
    good!(v, "fixed_delay MAX", b().fixed_delay(MAX).build());
    good!(v, "min_delay MAX", b().min_delay(MAX).build());
    good!(v, "refresh MAX", b().refresh(MAX).build());
    run(v);
}

#[test]
fn adaptive_timeout() {
    let b = AdaptiveTimeoutLayer::builder;
    let mut v: Vec<Case> = Vec::new();
    bad_each!(v, "quantile", [0.0, -0.1, 1.000_001, NAN, INF], |q| b()
        .quantile(q)
        .build());
    bad_each!(v, "multiplier", [0.0, 0.999, -1.0, NAN, INF], |m| b()
        .multiplier(m)
        .build());
    bad!(v, "floor 0", "floor", b().floor(ZERO).build());
    bad!(
        v,
        "ceiling < floor",
        "ceiling",
        b().floor(secs(2))
            .ceiling(secs(1))
            .fallback(secs(2))
            .build()
    );
    bad_each!(v, "ceiling", [DAY + NS, MAX], |c| b().ceiling(c).build());
    bad!(
        v,
        "fallback < floor",
        "fallback",
        b().fallback(ms(9)).build()
    );
    bad!(
        v,
        "fallback > ceiling",
        "fallback",
        b().fallback(secs(11)).build()
    );
    bad!(
        v,
        "min_samples 0",
        "min_samples",
        b().min_samples(0).build()
    );
    bad_each!(v, "refresh", [ZERO, Duration::from_micros(999)], |r| b()
        .refresh(r)
        .build());
    bad_each!(v, "max_growth", [1.0, 0.5, NAN, INF], |g| b()
        .max_growth(g)
        .build());
    bad!(
        v,
        "growth_window < refresh",
        "growth_window",
        b().refresh(secs(1)).growth_window(ms(999)).build()
    );
    bad!(
        v,
        "backoff_after 0",
        "backoff_after",
        b().backoff_after(0).build()
    );
    bad_each!(v, "backoff_factor", [1.0, 0.5, NAN, INF], |f| b()
        .backoff_factor(f)
        .build());
    bad!(
        v,
        "max_samples_per_sec 0",
        "max_samples_per_sec",
        b().max_samples_per_sec(0).build()
    );
    good!(v, "defaults", b().build());
    good!(v, "quantile 1", b().quantile(1.0).build());
    good!(v, "multiplier 1", b().multiplier(1.0).build());
    good!(
        v,
        "floor = ceiling = fallback = 1 ns",
        b().floor(NS).ceiling(NS).fallback(NS).build()
    );
    good!(v, "ceiling one day", b().ceiling(DAY).build());
    good!(v, "refresh 1 ms", b().refresh(ms(1)).build());
    good!(v, "growth_window MAX", b().growth_window(MAX).build());
    good!(
        v,
        "max_growth just above 1",
        b().max_growth(1.000_001).build()
    );
    good!(v, "min_samples MAX", b().min_samples(u64::MAX).build());
    run(v);
}

#[test]
fn deadline_layer() {
    let b = DeadlineLayer::builder;
    let mut v: Vec<Case> = Vec::new();
    bad!(v, "timeout 0", "timeout", b().timeout(ZERO).build());
    bad!(
        v,
        "accept_grpc_timeout 0",
        "accept_grpc_timeout",
        b().accept_grpc_timeout(ZERO).build()
    );
    good!(v, "defaults", b().build());
    good!(v, "timeout 1 ns", b().timeout(NS).build());
    good!(v, "timeout MAX", b().timeout(MAX).build());
    good!(
        v,
        "accept_grpc_timeout MAX",
        b().accept_grpc_timeout(MAX).build()
    );
    run(v);
}

#[test]
fn histogram() {
    let h = |window, sub_windows| {
        LatencyHistogram::with_config(
            HistogramConfig {
                window,
                sub_windows,
            },
            Instant::now(),
        )
    };
    let mut v: Vec<Case> = Vec::new();
    bad_each!(v, "sub_windows", [0, 65, usize::MAX], |n| h(secs(10), n));
    for (w, n) in [
        (ZERO, 1),
        (Duration::from_micros(999), 1),
        (ms(3), 4),
        (DAY + NS, 4),
        (MAX, 64),
    ] {
        bad!(v, format!("window {w:?}/{n}"), "window", h(w, n));
    }
    good!(v, "1 ms / 1", h(ms(1), 1));
    good!(v, "64 ms / 64", h(ms(64), 64));
    good!(v, "one day / 64", h(DAY, 64));
    run(v);
}

#[test]
fn fault_specs_schedules_and_layer() {
    let mut v: Vec<Case> = Vec::new();
    bad_each!(
        v,
        "error_probability",
        [-0.1, 1.1, NAN, INF, NEG_INF],
        |p| FaultSpec::new().error_probability(p).validate()
    );
    bad!(
        v,
        format!("hang_probability {p}"),
        "hang_probability",
        FaultSpec::new().hang_probability(p).validate()
    );
    bad!(
        v,
        "uniform max < min",
        "latency.max",
        FaultSpec::new()
            .latency(Latency::Uniform {
                min: ms(5),
                max: ms(4)
            })
            .validate()
    );
    bad!(
        v,
        "lognormal median 0",
        "latency.median",
        FaultSpec::new()
            .latency(Latency::LogNormal {
                median: ZERO,
                p99: ms(1)
            })
            .validate()
    );
    bad!(
        v,
        "lognormal p99 < median",
        "latency.p99",
        FaultSpec::new()
            .latency(Latency::LogNormal {
                median: ms(5),
                p99: ms(4)
            })
            .validate()
    );
    good!(
        v,
        "probabilities 0 and 1",
        FaultSpec::new()
            .error_probability(1.0)
            .hang_probability(0.0)
            .validate()
    );
    good!(
        v,
        "latency extremes",
        FaultSpec::new()
            .latency(Latency::Uniform {
                min: ZERO,
                max: MAX
            })
            .validate()
    );

    let s = Schedule::builder;
    let spec = FaultSpec::outage();
    bad!(
        v,
        "interval of zero length",
        "schedule.until",
        s().between(secs(5), secs(5), spec).build()
    );
    bad!(
        v,
        "interval ending before it starts",
        "schedule.until",
        s().between(secs(5), secs(1), spec).build()
    );
    bad!(
        v,
        "overlapping intervals",
        "schedule",
        s().between(secs(0), secs(5), spec)
            .between(secs(4), secs(6), spec)
            .build()
    );
    bad!(
        v,
        "invalid spec in a schedule",
        "error_probability",
        s().between(secs(0), secs(5), FaultSpec::new().error_probability(2.0))
            .build()
    );
    good!(
        v,
        "adjacent intervals",
        s().between(secs(0), secs(5), spec)
            .between(secs(5), secs(6), spec)
            .build()
    );
    good!(
        v,
        "interval up to MAX",
        s().between(ZERO, MAX, spec).build()
    );
    good!(
        v,
        "alternating with zero on",
        s().alternating(ZERO, secs(10), ZERO, secs(1), spec).build()
    );

    let l = FaultLayer::builder;
    bad!(v, "empty name", "name", l().name("").build());
    bad!(
        v,
        "invalid forced spec",
        "hang_probability",
        l().forced(FaultSpec::new().hang_probability(NAN)).build()
    );
    good!(v, "defaults", l().build());
    run(v);
}

#[test]
fn fault_latency_samples_of_huge_distributions_do_not_panic() {
    let mut rng = SplitMix64::new(3);
    for latency in [
        Latency::Fixed(MAX),
        Latency::Uniform {
            min: ZERO,
            max: MAX,
        },
        Latency::LogNormal {
            median: NS,
            p99: MAX,
        },
        Latency::LogNormal {
            median: MAX,
            p99: MAX,
        },
        Latency::Exponential { mean: MAX },
        Latency::Exponential { mean: ZERO },
    ] {
        for _ in 0..100 {
            let d = latency.sample(&mut rng);
            assert!(d <= MAX);
        }
    }
}

/// Parses TOML into the facade's client config and builds the stack.
fn client(toml_src: &str) -> Result<damper::ClientLayer, damper::ConfigError> {
    let config: damper::config::ClientConfig =
        toml::from_str(toml_src).unwrap_or_else(|e| panic!("{toml_src}: {e}"));
    ClientStack::new().config(config).build()
}

/// Partitions need a partitioner; this one puts every request in `a`.
type AllInA = fn(&u32) -> &'static str;

fn server(
    toml_src: &str,
) -> Result<damper::ServerLayer<tower::layer::util::Identity, AllInA>, damper::ConfigError> {
    let config: damper::config::ServerConfig =
        toml::from_str(toml_src).unwrap_or_else(|e| panic!("{toml_src}: {e}"));
    ServerStack::new()
        .config(config)
        .partition_with((|_| "a") as AllInA)
        .build()
}

#[test]
fn facade_client_config_from_toml() {
    let mut v: Vec<Case> = Vec::new();
    let rows: &[(&str, &str)] = &[
        ("budget.ratio = nan", "client.budget.ratio"),
        ("budget.ratio = 1.5", "client.budget.ratio"),
        ("budget.ratio = -0.1", "client.budget.ratio"),
        ("budget.max_tokens = inf", "client.budget.max_tokens"),
        ("budget.max_tokens = 0.5", "client.budget.max_tokens"),
        ("budget.initial = -1.0", "client.budget.initial"),
        ("budget.initial = 100001.0", "client.budget.initial"),
        ("budget.reserve = -1.0", "client.budget.reserve"),
        ("budget.min_per_sec = -inf", "client.budget.min_per_sec"),
        ("budget.min_per_sec = 2e6", "client.budget.min_per_sec"),
        ("budget.ttl = \"0s\"", "client.budget.ttl"),
        ("budget.ttl = \"2d\"", "client.budget.ttl"),
        ("deadline = \"0s\"", "client.deadline"),
        ("retry.max_attempts = 0", "client.retry.max_attempts"),
        ("retry.max_attempts = 11", "client.retry.max_attempts"),
        ("retry.backoff_max = \"0s\"", "client.retry.backoff_max"),
        (
            "retry.backoff_min = \"2s\"\nretry.backoff_max = \"1s\"",
            "client.retry.backoff_min",
        ),
        (
            "retry.backoff_multiplier = nan",
            "client.retry.backoff_multiplier",
        ),
        (
            "retry.backoff_multiplier = 0.5",
            "client.retry.backoff_multiplier",
        ),
        (
            "retry.backoff_multiplier = inf",
            "client.retry.backoff_multiplier",
        ),
        ("retry.max_pushback = \"2h\"", "client.retry.max_pushback"),
        (
            "retry.min_attempt_time = \"61s\"",
            "client.retry.min_attempt_time",
        ),
        ("hedge.max_extra_load = 1.0", "client.hedge.max_extra_load"),
        ("hedge.max_extra_load = nan", "client.hedge.max_extra_load"),
        ("hedge.max_hedges = 0", "client.hedge.max_hedges"),
        ("hedge.max_hedges = 5", "client.hedge.max_hedges"),
        (
            "hedge.min_delay = \"10ms\"\nhedge.max_delay = \"9ms\"",
            "client.hedge.max_delay",
        ),
        ("breaker.window = \"1ms\"", "client.breaker.window"),
        ("breaker.window = \"2d\"", "client.breaker.window"),
        ("breaker.min_requests = 0", "client.breaker.min_requests"),
        ("breaker.failure_rate = nan", "client.breaker.failure_rate"),
        ("breaker.failure_rate = 0.0", "client.breaker.failure_rate"),
        (
            "breaker.consecutive_failures = 0",
            "client.breaker.consecutive_failures",
        ),
        ("breaker.open_min = \"0s\"", "client.breaker.open_min"),
        ("breaker.open_max = \"400d\"", "client.breaker.open_max"),
        (
            "breaker.open_min = \"10s\"\nbreaker.open_max = \"1s\"",
            "client.breaker.open_min",
        ),
        (
            "breaker.open_multiplier = 0.5",
            "client.breaker.open_multiplier",
        ),
        (
            "breaker.open_multiplier = -inf",
            "client.breaker.open_multiplier",
        ),
        ("breaker.probes = 0", "client.breaker.probes"),
        ("breaker.probes = 1001", "client.breaker.probes"),
        ("limit.enabled = true\nlimit.min = 0", "client.limit.min"),
        (
            "limit.enabled = true\nlimit.min = 10\nlimit.max = 5",
            "client.limit.max",
        ),
        (
            "limit.enabled = true\nlimit.max = 10\nlimit.initial = 11",
            "client.limit.initial",
        ),
        (
            "limit.enabled = true\nlimit.max = 4294967296",
            "client.limit.max",
        ),
        (
            "limit.enabled = true\nlimit.algorithm = \"fixed\"",
            "client.limit.max",
        ),
        (
            "limit.enabled = true\nlimit.algorithm = \"fixed\"\nlimit.max = 0",
            "client.limit.max",
        ),
        (
            "limit.enabled = true\nlimit.algorithm = \"aimd\"\nlimit.min = 0",
            "client.limit.min",
        ),
        (
            "limit.enabled = true\nlimit.algorithm = \"vegas\"\nlimit.min = 0",
            "client.limit.min",
        ),
        (
            "limit.enabled = true\nlimit.queue = 0",
            "client.limit.queue",
        ),
        (
            "limit.enabled = true\nlimit.codel_target = \"0s\"",
            "client.limit.codel_target",
        ),
        (
            "limit.enabled = true\nlimit.codel_target = \"10ms\"\nlimit.codel_interval = \"5ms\"",
            "client.limit.codel_interval",
        ),
        ("timeout.quantile = 0.0", "client.timeout.quantile"),
        ("timeout.quantile = nan", "client.timeout.quantile"),
        ("timeout.multiplier = 0.5", "client.timeout.multiplier"),
        ("timeout.floor = \"0s\"", "client.timeout.floor"),
        ("timeout.ceiling = \"2d\"", "client.timeout.ceiling"),
        ("timeout.fallback = \"1h\"", "client.timeout.fallback"),
        ("timeout.min_samples = 0", "client.timeout.min_samples"),
    ];
    for (src, want) in rows {
        let src = *src;
        bad!(v, src.replace('\n', "; "), want, client(src));
    }
    // A disabled layer's knobs are not its problem: they are never built.
    good!(
        v,
        "disabled breaker with a bad rate",
        client("[breaker]\nenabled = false\nfailure_rate = 7.0")
    );
    good!(v, "limit off with a bad min", client("limit.min = 0"));
    good!(v, "defaults", client(""));
    good!(
        v,
        "boundaries",
        client(
            "deadline = \"1ns\"\n\
         budget.ratio = 1.0\nbudget.max_tokens = 1.0\nbudget.initial = 1.0\n\
         budget.min_per_sec = 0.0\nbudget.ttl = \"1ms\"\n\
         retry.max_attempts = 10\nretry.max_pushback = \"1h\"\nretry.min_attempt_time = \"1m\"\n\
         retry.backoff_min = \"1s\"\nretry.backoff_max = \"1s\"\nretry.backoff_multiplier = 1000.0\n\
         hedge.max_hedges = 4\nhedge.max_extra_load = 0.999\n\
         breaker.window = \"10ms\"\nbreaker.failure_rate = 1.0\nbreaker.probes = 1000\n\
         breaker.open_max = \"365d\"\nbreaker.open_multiplier = 1.0\n\
         limit.enabled = true\nlimit.algorithm = \"fixed\"\nlimit.max = 1\nlimit.queue = 1\n\
         timeout.quantile = 1.0\ntimeout.multiplier = 1.0\ntimeout.ceiling = \"1d\"",
        )
    );
    run(v);
}

#[test]
fn facade_server_config_from_toml() {
    let mut v: Vec<Case> = Vec::new();
    let rows: &[(&str, &str)] = &[
        ("limit.min = 0", "server.limit.min"),
        ("limit.min = 9\nlimit.max = 3", "server.limit.max"),
        ("limit.initial = 0", "server.limit.initial"),
        ("limit.queue = 0", "server.limit.queue"),
        ("limit.codel_target = \"0s\"", "server.limit.codel_target"),
        ("limit.algorithm = \"fixed\"", "server.limit.max"),
        (
            "[[partitions]]\nname = \"a\"\nshare = 0.0",
            "server.partitions[0].share",
        ),
        (
            "[[partitions]]\nname = \"a\"\nshare = nan",
            "server.partitions[0].share",
        ),
        (
            "[[partitions]]\nname = \"a\"\nshare = inf",
            "server.partitions[0].share",
        ),
        (
            "[[partitions]]\nname = \"a\"\nshare = 0.5\n[[partitions]]\nname = \"b\"\nshare = 1.5",
            "server.partitions[1].share",
        ),
        (
            "[[partitions]]\nname = \"a\"\nshare = 0.6\n[[partitions]]\nname = \"b\"\nshare = 0.6",
            "server.partitions",
        ),
    ];
    for (src, want) in rows {
        let src = *src;
        bad!(v, src.replace('\n', "; "), want, server(src));
    }
    good!(v, "defaults", server(""));
    good!(
        v,
        "limit off",
        server("limit.enabled = false\nlimit.min = 0")
    );
    good!(
        v,
        "deadline off",
        server("deadline.enabled = false\ndeadline.default = \"0s\"")
    );
    good!(
        v,
        "shares add up to 1",
        server(
            "[[partitions]]\nname = \"a\"\nshare = 0.5\n[[partitions]]\nname = \"b\"\nshare = 0.5"
        )
    );
    good!(
        v,
        "deadline max ten years",
        server("deadline.max = \"3650d\"")
    );
    run(v);
    // Repeated partition names: rejected, under the partitions section.
    let err = server(
        "[[partitions]]\nname = \"a\"\nshare = 0.2\n[[partitions]]\nname = \"a\"\nshare = 0.2",
    )
    .unwrap_err();
    assert!(err.path().starts_with("server.partitions"), "{err}");
}

/// Values that cannot even be read are refused by the parser, never wrapped or truncated.
#[test]
fn facade_rejects_unreadable_values_when_parsing() {
    use damper::config::{ClientConfig, ServerConfig};
    for src in [
        "deadline = \"-1s\"",
        "deadline = \"1e400s\"",
        "deadline = \"99999999999999999999d\"",
        "deadline = \"11y\"",
        "deadline = \"\"",
        "deadline = \"5\"",
        "deadline = 5",
        "retry.max_attempts = -1",
        "retry.max_attempts = 4294967296",
        "breaker.probes = 1.5",
        "breaker.mode = \"sideways\"",
        "limit.algorithm = \"magic\"",
        "limit.max = -3",
        "retry.jitter = \"wild\"",
        "unknown = 1",
        "[retry]\nmax_attemps = 2",
    ] {
        assert!(
            toml::from_str::<ClientConfig>(src).is_err(),
            "client accepted `{src}`"
        );
    }
    for src in [
        "[[partitions]]\nname = \"a\"",
        "deadline.max = \"-5s\"",
        "limit.queue = -1",
        "typo = true",
    ] {
        assert!(
            toml::from_str::<ServerConfig>(src).is_err(),
            "server accepted `{src}`"
        );
    }
    // The longest accepted duration reads back.
    let c: ClientConfig = toml::from_str("deadline = \"3650d\"").unwrap();
    assert_eq!(c.deadline, Some(Duration::from_secs(3650 * 86_400)));
}

/// A service that fails its first `fail` calls, then succeeds.
fn flaky(
    fail: usize,
) -> impl tower::Service<u32, Response = u32, Error = damper::BoxError, Future: Send> + Clone {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tower::service_fn(move |r: u32| {
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            if n < fail {
                Err::<u32, damper::BoxError>("flaky".into())
            } else {
                Ok(r)
            }
        }
    })
}

/// Accepted extremes must not only build: the layers must serve calls with them, in virtual
/// time, without panicking or overflowing an instant.
#[tokio::test(start_paused = true)]
async fn accepted_extremes_serve_calls() {
    use tower::{Layer, Service, ServiceExt};
    // Retry: backoff of a year (no jitter), an overall timeout of Duration::MAX.
    let backoff = Backoff::builder()
        .min(Duration::from_secs(365 * 86_400))
        .max(MAX)
        .multiplier(1000.0)
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let budget = RetryBudget::builder().initial(5.0).build().unwrap();
    let retry = RetryLayer::builder(budget)
        .replay(damper::retry_budget::CloneAll::default())
        .backoff(backoff)
        .max_attempts(3)
        .timeout(MAX)
        .max_pushback(secs(3600))
        .min_attempt_time(secs(60))
        .build()
        .unwrap();
    // One retry fits the (thirty-year) deadline; the next wait (a thousand years) does not.
    assert_eq!(retry.layer(flaky(1)).oneshot(1).await.unwrap(), 1);
    assert!(retry.layer(flaky(2)).oneshot(1).await.is_err());

    // Hedge: a fixed delay of Duration::MAX, and a minimum delay of Duration::MAX.
    for layer in [
        HedgeLayer::builder().fixed_delay(MAX).build().unwrap(),
        HedgeLayer::builder()
            .min_delay(MAX)
            .min_samples(0)
            .build()
            .unwrap(),
    ] {
        assert_eq!(layer.layer(flaky(0)).oneshot(2).await.unwrap(), 2);
    }

    // Deadline of Duration::MAX; adaptive timeout of a day.
    let deadline = DeadlineLayer::builder().timeout(MAX).build().unwrap();
    assert_eq!(deadline.layer(flaky(0)).oneshot(3).await.unwrap(), 3);
    let timeout = AdaptiveTimeoutLayer::builder()
        .ceiling(DAY)
        .fallback(DAY)
        .floor(DAY)
        .growth_window(MAX)
        .refresh(MAX)
        .build()
        .unwrap();
    assert_eq!(timeout.layer(flaky(0)).oneshot(4).await.unwrap(), 4);

    // Breaker: a year-long open period, tripped, then asked again.
    let config = BreakerConfig::builder()
        .consecutive_failures(1)
        .patience(ZERO)
        .open_min(Duration::from_secs(365 * 86_400))
        .open_max(Duration::from_secs(365 * 86_400))
        .healthy_period(MAX)
        .slow_call(MAX, 1.0)
        .build()
        .unwrap();
    let mut breaker = damper::breaker::BreakerLayer::new(config).layer(flaky(1));
    assert!(breaker.ready().await.unwrap().call(5).await.is_err());
    let refused = breaker.ready().await.unwrap().call(5).await.unwrap_err();
    assert!(
        refused.is::<damper::core::error::CircuitOpen>(),
        "{refused}"
    );

    // Shed: a CoDel target and interval of a day (the largest accepted; longer ones are
    // rejected, see tests/regressions.rs), a queue, and retry-after up to MAX.
    let shed = ShedLayer::builder(Fixed::new(1).unwrap())
        .queue(4)
        .codel_target(DAY)
        .codel_interval(DAY)
        .retry_after(ZERO, MAX)
        .build()
        .unwrap();
    let mut svc = shed.layer(flaky(0));
    let first = svc.ready().await.unwrap().call(6);
    let second = svc.ready().await.unwrap().call(7);
    assert_eq!(first.await.unwrap(), 6);
    assert_eq!(second.await.unwrap(), 7);

    // Fault: latency of Duration::MAX (a sleep into the far future, not an overflow).
    let fault = FaultLayer::builder()
        .forced(FaultSpec::new().latency(Latency::Fixed(MAX)))
        .build()
        .unwrap();
    let slow = fault.layer(flaky(0)).oneshot(8);
    let cut = tokio::time::timeout(secs(3600), slow).await;
    assert!(
        cut.is_err(),
        "a latency of Duration::MAX answered within an hour"
    );
}
