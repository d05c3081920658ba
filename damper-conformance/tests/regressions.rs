//! Regressions: bugs the conformance suite found, each kept as the test that reproduced it.
//! Every one used to panic (an arithmetic overflow or an out-of-range `Duration`) on a value the
//! layer accepted; now the value is either rejected when built, with a typed error naming the
//! field, or accepted and handled with saturating arithmetic.

use std::time::Duration;

/// tower-retry-budget: `Duration::from_secs_f64(1.0 / m)` panicked for a finite, positive
/// `min_per_sec` below ~5.4e-20 (the floor's period overflowed a `Duration`). A floor slower
/// than one attempt a day is now rejected, naming `min_per_sec`.
#[test]
fn retry_budget_tiny_min_per_sec_is_rejected_not_a_panic() {
    use damper::retry_budget::RetryBudget;
    for m in [1e-300, f64::MIN_POSITIVE, 5e-20, 1e-6] {
        let err = RetryBudget::builder().min_per_sec(m).build().unwrap_err();
        assert_eq!(err.field(), "min_per_sec", "min_per_sec {m:e}");
    }
    let daily = RetryBudget::builder()
        .min_per_sec(1.0 / 86_400.0)
        .build()
        .unwrap();
    assert!(
        daily.floor_interval().unwrap() <= Duration::from_secs(86_400) + Duration::from_micros(1)
    );
}

/// A 503 whose `Retry-After` saturated at `u64::MAX` seconds.
fn assert_saturated_503<B>(res: &http::Response<B>) {
    assert_eq!(res.status(), 503);
    let secs: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(secs, u64::MAX);
}

/// tower-fault-injection: rounding `Duration::MAX` up to whole seconds for `Retry-After` overflowed
/// (a panic in debug, `Retry-After: 0` in release). It saturates.
#[test]
fn fault_503_injector_with_huge_retry_after_does_not_overflow() {
    use tower_fault_injection::{FaultKind, HttpResponseInjector, Inject};
    let inject = HttpResponseInjector::service_unavailable(Duration::MAX);
    let res: http::Response<String> = inject.inject(FaultKind::Error).unwrap();
    assert_saturated_503(&res);
}

/// tower-fault-injection: `alternating` overflowed on `t + on` / `end + off` near `Duration::MAX`, and with
/// nanosecond phases over a long span tried to build ~2^63 intervals. Phases now stop at
/// `Duration::MAX`, and a schedule of more than `MAX_INTERVALS` is a typed error.
#[test]
fn fault_alternating_schedule_with_huge_span_does_not_panic() {
    use damper::fault::{FaultSpec, Schedule, schedule::MAX_INTERVALS};
    let sched = Schedule::builder()
        .alternating(
            Duration::ZERO,
            Duration::MAX,
            Duration::MAX,
            Duration::from_secs(1),
            FaultSpec::outage(),
        )
        .build()
        .unwrap();
    assert_eq!(sched.end(), Duration::MAX);
    let ns = Duration::from_nanos(1);
    let err = Schedule::builder()
        .alternating(Duration::ZERO, Duration::MAX, ns, ns, FaultSpec::outage())
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "schedule.alternating");
    assert!(err.to_string().contains("alternating"));
    // An hour of one-second flapping fits easily.
    let hour = Schedule::builder()
        .alternating(
            Duration::ZERO,
            Duration::from_secs(3600),
            Duration::from_secs(1),
            Duration::from_secs(1),
            FaultSpec::outage(),
        )
        .build()
        .unwrap();
    assert_eq!(hour.intervals().count(), 1800);
    assert!(hour.intervals().count() < MAX_INTERVALS);
}

/// Polls a future that must be ready at once (the services below answer immediately).
fn ready_now<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a service over a ready backend must answer at once"),
    }
}

/// tower-breaker: `KeyedBreakerLayer::max_keys`/`idle_timeout` panicked when called after the
/// layer had been cloned or used. The knobs now live on the registry the layer shares with its
/// clones and services: configuring late works, and applies to every one of them.
#[test]
fn keyed_breaker_configured_after_clone_and_use_does_not_panic() {
    use damper::breaker::{BreakerConfig, KeyedBreakerLayer};
    use std::num::NonZeroUsize;
    use tower::{Layer, Service};
    let config = BreakerConfig::builder().stripes(1).build().unwrap();
    let layer = KeyedBreakerLayer::new(config, |r: &u32| *r);
    let clone = layer.clone();
    let mut svc = layer.layer(tower::service_fn(|r: u32| async move {
        Ok::<_, damper::BoxError>(r)
    }));
    for key in 0..8u32 {
        assert_eq!(ready_now(svc.call(key)).unwrap(), key);
    }
    assert_eq!(layer.len(), 8);
    // Configured through a clone, after a service was built and used.
    let clone = clone
        .max_keys(NonZeroUsize::new(2).unwrap())
        .idle_timeout(Duration::MAX);
    for key in 100..200u32 {
        assert_eq!(ready_now(svc.call(key)).unwrap(), key);
        assert!(layer.len() <= 2, "{} live keys", layer.len());
    }
    assert!(clone.len() <= 2);
    let _ = clone.idle_timeout(Duration::ZERO);
}

/// tower-shed: rounding `Duration::MAX` up to whole seconds for `Retry-After` overflowed in the
/// 503 answer. It saturates.
#[test]
fn shed_503_with_huge_retry_after_does_not_overflow() {
    let err = damper::core::error::Overloaded::with_retry_after(Duration::MAX);
    let res = damper::shed::http::overloaded_response::<String>(&err);
    assert_saturated_503(&res);
}

/// tower-shed: `claim_ttl` was accepted unchecked, and `Instant::now() + claim_ttl` overflowed
/// when a partition below its guarantee was turned away. It is now at most a day (a typed error
/// names `claim_ttl`), and a day-long claim works.
#[tokio::test(start_paused = true)]
async fn shed_claim_ttl_max_is_rejected_and_a_day_long_claim_works() {
    use damper::shed::{ShedLayer, limit::Fixed};
    use tower::{Layer, Service, ServiceExt};
    let builder = |ttl| {
        ShedLayer::builder(Fixed::new(2).unwrap())
            .partition("a", 0.5)
            .partition("b", 0.5)
            .claim_ttl(ttl)
            .partition_with(|r: &&'static str| *r)
            .build()
    };
    for ttl in [
        Duration::MAX,
        Duration::from_secs(86_400) + Duration::from_nanos(1),
    ] {
        assert_eq!(builder(ttl).unwrap_err().field(), "claim_ttl", "{ttl:?}");
    }
    let layer = builder(Duration::from_secs(86_400)).unwrap();
    let (svc, mut h) = tower_test::mock::pair::<&'static str, ()>();
    let mut s = layer.layer(svc);
    h.allow(10);
    let _b1 = s.ready().await.unwrap().call("b");
    let _b2 = s.ready().await.unwrap().call("b");
    // "a" is below its guarantee at a full limiter: turned away, and it claims its share.
    let a = s.ready().await.unwrap().call("a").await.unwrap_err();
    assert!(a.is::<damper::core::error::Overloaded>());
}

/// tower-shed: `codel_target`/`codel_interval` had no upper bound, and `now + max_queue_wait()`
/// overflowed when a request was queued. Both are now at most a day (typed errors name them);
/// config.rs shows a day-long queue serving calls.
#[test]
fn shed_codel_durations_past_a_day_are_rejected() {
    use damper::shed::{ShedLayer, limit::Fixed};
    let b = || ShedLayer::builder(Fixed::new(1).unwrap()).queue(4);
    let err = b()
        .codel_target(Duration::MAX)
        .codel_interval(Duration::MAX)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "codel_target");
    let err = b().codel_interval(Duration::MAX).build().unwrap_err();
    assert_eq!(err.field(), "codel_interval");
}

/// tower-shed: Gradient2's `min_rtt` (the long RTT average as a `Duration`) panicked once
/// samples of `Duration::MAX` had been fed. RTTs come from callers: it saturates.
#[test]
fn gradient2_min_rtt_after_huge_samples_does_not_panic() {
    use damper::shed::limit::{Gradient2, Limit, Sample};
    let now = tokio::time::Instant::now();
    let mut g = Gradient2::default();
    for _ in 0..50 {
        g.update(Sample::new(Duration::MAX, 10, false), now);
    }
    assert_eq!(g.min_rtt(), Some(Duration::MAX));
}
