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

/// tower-fault: rounding `Duration::MAX` up to whole seconds for `Retry-After` overflowed
/// (a panic in debug, `Retry-After: 0` in release). It saturates.
#[test]
fn fault_503_injector_with_huge_retry_after_does_not_overflow() {
    use tower_fault::{FaultKind, HttpResponseInjector, Inject};
    let inject = HttpResponseInjector::service_unavailable(Duration::MAX);
    let res: http::Response<String> = inject.inject(FaultKind::Error).unwrap();
    assert_eq!(res.status(), 503);
    let secs: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(secs, u64::MAX);
}

/// tower-fault: `alternating` overflowed on `t + on` / `end + off` near `Duration::MAX`, and with
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
