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
