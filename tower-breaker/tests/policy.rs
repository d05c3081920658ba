//! Every transition of the pure policy, driven with a fake clock (no runtime).

use damper_core::classify::{Failure, FailureKind, Outcome};
use damper_core::pushback::Pushback;
use std::time::Duration;
use tokio::time::Instant;
use tower_breaker::BreakerConfig;
use tower_breaker::config::BreakerConfigBuilder;
use tower_breaker::policy::{Admission, Effect, Permit, Policy, Reason, State, Transition};

fn cfg() -> BreakerConfigBuilder {
    BreakerConfig::builder().seed(7).open_jitter(0.0).stripes(1)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn fail() -> Outcome {
    Outcome::Failure(Failure::retryable(FailureKind::Error))
}

fn overload(after: Duration) -> Outcome {
    Outcome::Failure(
        Failure::retryable(FailureKind::Overload).with_pushback(Some(Pushback::After(after))),
    )
}

fn local() -> Outcome {
    Outcome::Failure(Failure::fatal(FailureKind::LocalRejection))
}

fn permit(p: &Policy, now: Instant) -> Permit {
    match p.admit(now).0 {
        Admission::Admitted(permit) => permit,
        Admission::Rejected(r) => panic!("rejected: {r:?}"),
    }
}

/// Admits and completes one call at `now`.
fn call(p: &Policy, now: Instant, outcome: Outcome) -> Effect {
    let permit = permit(p, now);
    p.on_outcome(permit, &outcome, now, 0)
}

fn transition(e: Effect) -> Transition {
    match e {
        Effect::Transition(t) => t,
        other => panic!("expected a transition, got {other:?}"),
    }
}

/// Trips a fresh default policy (20 failures) at `now`.
fn trip(p: &Policy, now: Instant) -> Transition {
    for _ in 0..19 {
        assert_eq!(call(p, now, fail()), Effect::None);
    }
    transition(call(p, now, fail()))
}

#[test]
fn does_not_trip_below_min_requests_then_trips_on_rate() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().build().unwrap(), t0);
    for i in 0..19 {
        assert_eq!(
            call(&p, t0 + Duration::from_millis(i), fail()),
            Effect::None
        );
        assert_eq!(p.state(), State::Closed);
    }
    let t = transition(call(&p, t0 + secs(1), fail()));
    assert_eq!(
        (t.from, t.to, t.reason),
        (State::Closed, State::Open, Reason::FailureRate)
    );
    assert_eq!(t.open_for, Some(secs(5)));
    assert_eq!(t.level, 1);
    assert_eq!(p.state(), State::Open);
    assert_eq!(p.transitions(), 1);
}

#[test]
fn failure_rate_below_threshold_does_not_trip() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().failure_rate(0.5).build().unwrap(), t0);
    // 51 successes, then 49 failures: never 50%.
    for i in 0..100 {
        let o = if i < 51 { Outcome::Success } else { fail() };
        assert_eq!(call(&p, t0, o), Effect::None);
    }
    assert_eq!(p.state(), State::Closed);
    let s = p.snapshot(t0);
    assert_eq!((s.counts.total, s.counts.failures), (100, 49));
    // 50 of 101 is still below; 51 of 102 reaches it.
    assert_eq!(call(&p, t0, fail()), Effect::None);
    let tripped = match call(&p, t0, fail()) {
        Effect::Transition(t) => Some(t),
        _ => None,
    };
    let t = tripped.expect("trips at 50%");
    assert_eq!(t.reason, Reason::FailureRate);
}

#[test]
fn caller_errors_are_healthy_and_local_rejections_count_for_nothing() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().build().unwrap(), t0);
    for _ in 0..30 {
        call(&p, t0, Outcome::CallerError);
        call(&p, t0, local());
    }
    let c = p.snapshot(t0).counts;
    assert_eq!((c.total, c.failures), (30, 0));
    // 30 healthy in the window: 29 failures are under 50%, the 30th reaches it.
    for _ in 0..29 {
        assert_eq!(call(&p, t0, fail()), Effect::None);
    }
    assert_eq!(transition(call(&p, t0, fail())).reason, Reason::FailureRate);
}

#[test]
fn slow_calls_trip_on_their_rate() {
    let t0 = Instant::now();
    let p = Policy::new(
        &cfg()
            .slow_call(Duration::from_millis(100), 0.5)
            .min_requests(4)
            .build()
            .unwrap(),
        t0,
    );
    assert!(p.times_calls());
    let timed = |start: Instant, end: Instant| {
        let permit = p.stamp(permit(&p, start), start);
        p.on_outcome(permit, &Outcome::Success, end, 0)
    };
    assert_eq!(timed(t0, t0 + Duration::from_millis(10)), Effect::None);
    assert_eq!(timed(t0, t0 + Duration::from_millis(20)), Effect::None);
    assert_eq!(timed(t0, t0 + Duration::from_millis(150)), Effect::None);
    let t = transition(timed(t0, t0 + Duration::from_millis(100)));
    assert_eq!(t.reason, Reason::SlowCallRate);
}

#[test]
fn consecutive_failures_trip_without_min_requests() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().consecutive_failures(3).build().unwrap(), t0);
    call(&p, t0, fail());
    call(&p, t0, fail());
    // A success breaks the run.
    call(&p, t0, Outcome::Success);
    call(&p, t0, fail());
    assert_eq!(call(&p, t0, fail()), Effect::None);
    let t = transition(call(&p, t0, fail()));
    assert_eq!(t.reason, Reason::ConsecutiveFailures);
}

#[test]
fn open_rejects_until_the_probe_is_due_then_admits_one_probe() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().build().unwrap(), t0);
    trip(&p, t0);
    match p.admit(t0 + secs(2)).0 {
        Admission::Rejected(r) => {
            assert_eq!(r.next_probe_in, secs(3));
            assert_eq!(r.retry_at, Some(t0 + secs(5)));
        }
        other => panic!("{other:?}"),
    }
    let (a, t) = p.admit(t0 + secs(5));
    let Admission::Admitted(probe) = a else {
        panic!("{a:?}")
    };
    assert!(probe.is_probe());
    let t = t.expect("open -> half-open");
    assert_eq!(
        (t.from, t.to, t.reason),
        (State::Open, State::HalfOpen, Reason::ProbeDue)
    );
    // Only one probe.
    match p.admit(t0 + secs(5)).0 {
        Admission::Rejected(r) => {
            assert_eq!(r.next_probe_in, Duration::ZERO);
            assert_eq!(r.retry_at, None);
        }
        other => panic!("{other:?}"),
    }
    let s = p.snapshot(t0 + secs(5));
    assert_eq!((s.state, s.probes_in_flight), (State::HalfOpen, 1));
    // The probe succeeds: closed, with an empty window.
    let t = transition(p.on_outcome(probe, &Outcome::Success, t0 + secs(6), 0));
    assert_eq!(
        (t.from, t.to, t.reason),
        (State::HalfOpen, State::Closed, Reason::ProbesSucceeded)
    );
    assert_eq!(p.snapshot(t0 + secs(6)).counts.total, 0);
    assert_eq!(p.transitions(), 3);
}

#[test]
fn a_failed_probe_reopens_for_longer() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().build().unwrap(), t0);
    trip(&p, t0);
    let at = t0 + secs(5);
    let probe = permit(&p, at);
    let t = transition(p.on_outcome(probe, &fail(), at, 0));
    assert_eq!(
        (t.from, t.to, t.reason),
        (State::HalfOpen, State::Open, Reason::ProbeFailed)
    );
    assert_eq!(t.level, 2);
    assert_eq!(t.open_for, Some(secs(10)));
    // Again: 20 s, then 40 s ...
    let at = at + secs(10);
    let t = transition(p.on_outcome(permit(&p, at), &fail(), at, 0));
    assert_eq!(t.open_for, Some(secs(20)));
    // A slow success also fails a probe when slow calls are watched: see slow_probe_fails.
}

#[test]
fn slow_probe_fails() {
    let t0 = Instant::now();
    let p = Policy::new(
        &cfg()
            .slow_call(Duration::from_millis(100), 1.0)
            .consecutive_failures(1)
            .build()
            .unwrap(),
        t0,
    );
    call(&p, t0, fail());
    assert_eq!(p.state(), State::Open);
    let at = t0 + secs(5);
    let probe = p.stamp(permit(&p, at), at);
    let t = transition(p.on_outcome(probe, &Outcome::Success, at + secs(1), 0));
    assert_eq!((t.to, t.reason), (State::Open, Reason::ProbeFailed));
}

#[test]
fn several_probes_close_only_after_all_succeed_and_any_failure_reopens() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().probes(3).build().unwrap(), t0);
    trip(&p, t0);
    let at = t0 + secs(5);
    let a = permit(&p, at);
    let b = permit(&p, at);
    let c = permit(&p, at);
    assert!(matches!(p.admit(at).0, Admission::Rejected(_)));
    assert_eq!(p.on_outcome(a, &Outcome::Success, at, 0), Effect::None);
    assert_eq!(p.on_outcome(b, &Outcome::Success, at, 0), Effect::None);
    // Two successes still hold their slots: no new probe.
    assert!(matches!(p.admit(at).0, Admission::Rejected(_)));
    let t = transition(p.on_outcome(c, &Outcome::Success, at, 0));
    assert_eq!(t.to, State::Closed);

    // Reopen, then one failure among three probes reopens at once.
    let p = Policy::new(&cfg().probes(3).build().unwrap(), t0);
    trip(&p, t0);
    let a = permit(&p, at);
    let b = permit(&p, at);
    assert_eq!(p.on_outcome(a, &Outcome::Success, at, 0), Effect::None);
    let t = transition(p.on_outcome(b, &fail(), at, 0));
    assert_eq!(t.to, State::Open);
}

#[test]
fn dropped_and_locally_rejected_probes_free_their_slot() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().build().unwrap(), t0);
    trip(&p, t0);
    let at = t0 + secs(5);
    let probe = permit(&p, at);
    assert_eq!(p.on_drop(probe, 0), Effect::SlotFreed);
    assert_eq!(p.state(), State::HalfOpen);
    let probe = permit(&p, at);
    assert_eq!(p.on_outcome(probe, &local(), at, 0), Effect::SlotFreed);
    let probe = permit(&p, at);
    // Handing back twice (a stale permit) does nothing.
    assert_eq!(
        transition(p.on_outcome(probe, &Outcome::Success, at, 0)).to,
        State::Closed
    );
    assert_eq!(p.on_drop(probe, 0), Effect::None);
}

#[test]
fn stragglers_from_a_judged_period_are_ignored() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().build().unwrap(), t0);
    // Admitted on the fast path (its admission still in a batch).
    let old = p.try_admit_closed().unwrap();
    trip(&p, t0);
    assert_eq!(p.on_outcome(old, &fail(), t0, 0), Effect::None);
    let at = t0 + secs(5);
    let probe = permit(&p, at);
    p.on_outcome(probe, &Outcome::Success, at, 0);
    // Closed again; the straggler from the first closed period does not count.
    assert_eq!(p.on_outcome(old, &fail(), at, 0), Effect::None);
    assert_eq!(p.snapshot(at).counts.total, 0);
}

#[test]
fn pushback_lengthens_the_open_period_up_to_the_max() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().open_max(secs(60)).build().unwrap(), t0);
    for _ in 0..19 {
        call(&p, t0, fail());
    }
    let t = transition(call(&p, t0, overload(secs(30))));
    assert_eq!(t.open_for, Some(secs(30)));

    // A straggler's pushback extends the current open period, capped at open_max.
    let p = Policy::new(&cfg().open_max(secs(60)).build().unwrap(), t0);
    let straggler = p.try_admit_closed().unwrap();
    trip(&p, t0);
    p.on_outcome(straggler, &overload(secs(600)), t0 + secs(1), 0);
    let s = p.snapshot(t0 + secs(1));
    assert_eq!(s.next_probe_in, Some(secs(60)));
}

#[test]
fn flapping_escalates_and_a_healthy_period_resets() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().healthy_period(secs(60)).build().unwrap(), t0);
    let mut now = t0 + secs(100);
    assert_eq!(trip(&p, now).level, 1);
    // Probe succeeds, then the breaker trips again soon: level 2, 10 s.
    now += secs(5);
    p.on_outcome(permit(&p, now), &Outcome::Success, now, 0);
    now += secs(1);
    let t = trip(&p, now);
    assert_eq!((t.level, t.open_for), (2, Some(secs(10))));
    // Recover and stay healthy for the healthy period: back to level 1.
    now += secs(10);
    p.on_outcome(permit(&p, now), &Outcome::Success, now, 0);
    now += secs(61);
    let t = trip(&p, now);
    assert_eq!((t.level, t.open_for), (1, Some(secs(5))));
}

#[test]
fn open_periods_are_jittered_within_bounds() {
    let t0 = Instant::now();
    let mut seen = std::collections::HashSet::new();
    for seed in 0..50 {
        let p = Policy::new(&BreakerConfig::builder().seed(seed).build().unwrap(), t0);
        let d = trip(&p, t0).open_for.unwrap();
        assert!(d >= secs(4) && d <= secs(5), "{d:?}");
        seen.insert(d);
    }
    assert!(seen.len() > 40, "jitter spreads probes: {}", seen.len());
}

#[test]
fn forcing_and_reset() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().build().unwrap(), t0);
    let t = p.force_open(t0).unwrap();
    assert_eq!((t.to, t.reason), (State::Open, Reason::Forced));
    match p.admit(t0 + secs(10_000)).0 {
        Admission::Rejected(r) => assert_eq!(r.next_probe_in, Duration::MAX),
        other => panic!("{other:?}"),
    }
    let t = p.force_closed(t0).unwrap();
    assert_eq!((t.from, t.to), (State::Open, State::Closed));
    for _ in 0..100 {
        assert_eq!(call(&p, t0, fail()), Effect::None);
    }
    assert!(p.snapshot(t0).forced);
    let t = p.reset(t0).unwrap();
    assert_eq!((t.to, t.reason), (State::Closed, Reason::Reset));
    assert_eq!(p.snapshot(t0).counts.total, 0);
    assert_eq!(trip(&p, t0).level, 1);
}

#[test]
fn the_window_forgets() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().build().unwrap(), t0);
    // 10,000 successes over the first 10 s ...
    for i in 0..10_000u64 {
        call(&p, t0 + Duration::from_millis(i), Outcome::Success);
    }
    assert_eq!(
        p.snapshot(t0 + secs(10) - Duration::from_millis(1))
            .counts
            .total,
        10_000
    );
    // ... are gone once the window has passed: an outage trips within min_requests calls.
    let later = t0 + secs(20);
    assert_eq!(trip(&p, later).reason, Reason::FailureRate);
}

#[test]
fn batched_admissions_count_in_the_observed_sub_window() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().build().unwrap(), t0);
    p.observe(t0 + secs(3));
    let permit = p.try_admit_closed().unwrap();
    p.count_admitted(5, 0);
    assert!(p.on_healthy(permit));
    assert_eq!(p.snapshot(t0 + secs(3)).counts.total, 5);
    // Attributed to the observed time: gone a window later.
    assert_eq!(p.snapshot(t0 + secs(13)).counts.total, 0);
}

#[test]
fn failures_recorded_before_their_batch_still_trip_at_min_requests() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().build().unwrap(), t0);
    // 20 failures whose admissions were never counted (still in a clone's batch).
    for i in 1..=20 {
        let permit = p.try_admit_closed().unwrap();
        let e = p.on_outcome(permit, &fail(), t0, 0);
        assert_eq!(matches!(e, Effect::Transition(_)), i == 20, "call {i}");
    }
}

#[test]
fn dropped_and_locally_rejected_calls_are_taken_back() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().build().unwrap(), t0);
    let a = permit(&p, t0);
    let b = permit(&p, t0);
    assert_eq!(p.snapshot(t0).counts.total, 2);
    assert_eq!(p.on_drop(a, 0), Effect::None);
    assert_eq!(p.on_outcome(b, &local(), t0, 0), Effect::None);
    assert_eq!(p.snapshot(t0).counts.total, 0);
}
