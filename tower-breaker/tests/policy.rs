//! Every transition of the pure policy, driven with a fake clock (no runtime).

use damper_core::classify::{Failure, FailureKind, Outcome};
use damper_core::pushback::Pushback;
use std::time::Duration;
use tokio::time::Instant;
use tower_breaker::BreakerConfig;
use tower_breaker::config::BreakerConfigBuilder;
use tower_breaker::policy::{Admission, Effect, Permit, Policy, Reason, State, Transition};

/// Trips as soon as the evidence is in (no patience): each test drives one instant.
fn cfg() -> BreakerConfigBuilder {
    BreakerConfig::builder()
        .seed(7)
        .open_jitter(0.0)
        .stripes(1)
        .patience(Duration::ZERO)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn timeout() -> Outcome {
    Outcome::Failure(Failure::retryable(FailureKind::Timeout))
}

fn rejected(p: &Policy, now: Instant) -> bool {
    matches!(p.admit(now).0, Admission::Rejected(_))
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
    assert_eq!(t.open_for, Some(ms(500)));
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
    let p = Policy::new(&cfg().failure_rate(0.5).build().unwrap(), t0);
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
fn an_open_breaker_lets_spaced_probes_through_and_a_probe_success_ramps() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().trickle(0.0).build().unwrap(), t0);
    trip(&p, t0);
    match p.admit(t0 + ms(200)).0 {
        Admission::Rejected(r) => {
            assert_eq!(r.next_probe_in, ms(300));
            assert_eq!(r.retry_at, Some(t0 + ms(500)));
        }
        other => panic!("{other:?}"),
    }
    // The spaced probe is due: admitted, and the breaker stays open.
    let (a, t) = p.admit(t0 + ms(500));
    let Admission::Admitted(probe) = a else {
        panic!("{a:?}")
    };
    assert!(probe.is_probe());
    assert_eq!(t, None);
    assert_eq!(p.state(), State::Open);
    // The next one is a spacing later.
    match p.admit(t0 + ms(600)).0 {
        Admission::Rejected(r) => assert_eq!(r.retry_at, Some(t0 + ms(1000))),
        other => panic!("{other:?}"),
    }
    // The probe succeeds: half-open, admitting two at once (2^1).
    let t = transition(p.on_outcome(probe, &Outcome::Success, t0 + ms(510), 0));
    assert_eq!(
        (t.from, t.to, t.reason),
        (State::Open, State::HalfOpen, Reason::ProbeSucceeded)
    );
    let at = t0 + ms(510);
    let (a, b) = (permit(&p, at), permit(&p, at));
    assert!(rejected(&p, at));
    let s = p.snapshot(at);
    assert_eq!((s.state, s.probes_in_flight), (State::HalfOpen, 2));
    // Each success doubles the allowance (a freed slot wakes gate waiters) ...
    assert_eq!(p.on_outcome(a, &Outcome::Success, at, 0), Effect::SlotFreed);
    let more: Vec<_> = (0..3).map(|_| permit(&p, at)).collect();
    assert!(rejected(&p, at), "2 successes: 4 in flight at most");
    assert_eq!(p.on_outcome(b, &Outcome::Success, at, 0), Effect::SlotFreed);
    assert_eq!(
        p.on_outcome(more[0], &Outcome::Success, at, 0),
        Effect::SlotFreed
    );
    // ... and the fifth success (the default `probes`) closes it, with an empty window.
    let t = transition(p.on_outcome(more[1], &Outcome::Success, at, 0));
    assert_eq!(
        (t.from, t.to, t.reason),
        (State::HalfOpen, State::Closed, Reason::ProbesSucceeded)
    );
    assert_eq!(p.snapshot(at).counts.total, 0);
    // A probe of the judged period is a straggler.
    assert_eq!(p.on_outcome(more[2], &fail(), at, 0), Effect::None);
    assert_eq!(p.transitions(), 3);
}

#[test]
fn a_trickle_goes_through_while_open_thinning_with_each_spaced_probe() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().build().unwrap(), t0);
    trip(&p, t0);
    let through = |at: Instant| (0..100).filter(|_| !rejected(&p, at)).count();
    // After fast errors (most are short): one call in 4 at first ...
    assert_eq!(through(t0 + ms(100)), 25);
    // ... one in 8 after the first spaced probe, one in 16, then the configured one in 20.
    for (k, expected) in [(1u64, 12), (2, 6), (3, 5), (4, 5)] {
        let at = t0 + ms(500 * k);
        assert!(permit(&p, at).is_probe(), "spaced probe {k}");
        // The refused-call counter carries over, so a hundred calls hold 100 / n of them,
        // give or take one.
        let n = through(at);
        assert!(n.abs_diff(expected) <= 1, "after probe {k}: {n}");
    }
    // After timeouts, the configured share at once.
    let p = Policy::new(&cfg().build().unwrap(), t0);
    for _ in 0..19 {
        call(&p, t0, timeout());
    }
    transition(call(&p, t0, timeout()));
    let admitted: Vec<usize> = (0..100).filter(|_| !rejected(&p, t0 + ms(100))).collect();
    assert_eq!(admitted, vec![19, 39, 59, 79, 99]);
    // Gate mode sends only the spaced probes.
    let p = Policy::new(&cfg().mode(tower_breaker::Mode::Gate).build().unwrap(), t0);
    trip(&p, t0);
    assert!((0..100).all(|_| rejected(&p, t0 + ms(100))));
    assert!(!rejected(&p, t0 + ms(500)));
}

#[test]
fn a_probe_with_probes_1_closes_at_once() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().probes(1).build().unwrap(), t0);
    trip(&p, t0);
    let at = t0 + ms(500);
    let t = transition(p.on_outcome(permit(&p, at), &Outcome::Success, at, 0));
    assert_eq!((t.from, t.to), (State::Open, State::Closed));
}
#[test]
fn only_probes_that_say_sick_grow_the_spacing() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().trickle(0.0).build().unwrap(), t0);
    trip(&p, t0);
    // A fast error: the spacing stays at 500 ms.
    let at = t0 + ms(500);
    assert_eq!(p.on_outcome(permit(&p, at), &fail(), at, 0), Effect::None);
    let s = p.snapshot(at);
    assert_eq!(
        (s.state, s.level, s.next_probe_in),
        (State::Open, 1, Some(ms(500)))
    );
    // A timeout: level 2, 1 s from the failure.
    let at = t0 + ms(1000);
    let probe = permit(&p, at);
    let done = at + ms(200);
    assert_eq!(p.on_outcome(probe, &timeout(), done, 0), Effect::None);
    let s = p.snapshot(done);
    assert_eq!((s.level, s.next_probe_in), (2, Some(ms(1000))));
    // Pushback holds the next probe back as asked.
    let at = done + ms(1000);
    let probe = permit(&p, at);
    assert_eq!(p.on_outcome(probe, &overload(secs(7)), at, 0), Effect::None);
    assert_eq!(p.snapshot(at).next_probe_in, Some(secs(7)));
    assert_eq!(p.state(), State::Open);
}
#[test]
fn slow_probe_fails() {
    let t0 = Instant::now();
    let p = Policy::new(
        &cfg()
            .slow_call(Duration::from_millis(100), 1.0)
            .consecutive_failures(1)
            .trickle(0.0)
            .build()
            .unwrap(),
        t0,
    );
    call(&p, t0, fail());
    assert_eq!(p.state(), State::Open);
    // Open: a slow success is no success, and it grows the spacing.
    let at = t0 + ms(500);
    let probe = p.stamp(permit(&p, at), at);
    assert_eq!(
        p.on_outcome(probe, &Outcome::Success, at + secs(1), 0),
        Effect::None
    );
    let s = p.snapshot(at + secs(1));
    assert_eq!((s.state, s.level), (State::Open, 2));
    // Half-open: a slow probe reopens.
    let at = at + secs(3);
    let probe = p.stamp(permit(&p, at), at);
    let t = transition(p.on_outcome(probe, &Outcome::Success, at, 0));
    assert_eq!(t.to, State::HalfOpen);
    let probe = p.stamp(permit(&p, at), at);
    let t = transition(p.on_outcome(probe, &Outcome::Success, at + secs(1), 0));
    assert_eq!(
        (t.to, t.reason, t.level),
        (State::Open, Reason::ProbeFailed, 3)
    );
}
#[test]
fn half_open_tolerates_fast_errors_short_of_near_total_failure_but_not_sickness() {
    let t0 = Instant::now();
    let open = |p: &Policy| {
        trip(p, t0);
        let at = t0 + ms(500);
        let t = transition(p.on_outcome(permit(p, at), &Outcome::Success, at, 0));
        assert_eq!(t.to, State::HalfOpen);
        at
    };
    // One success so far: 39 fast errors are tolerated (the dependency still succeeds more
    // than one call in 40), the 40th reopens it at the same level.
    let p = Policy::new(&cfg().trickle(0.0).build().unwrap(), t0);
    let at = open(&p);
    for _ in 0..39 {
        assert_eq!(
            p.on_outcome(permit(&p, at), &fail(), at, 0),
            Effect::SlotFreed
        );
    }
    let t = transition(p.on_outcome(permit(&p, at), &fail(), at, 0));
    assert_eq!(
        (t.to, t.reason, t.level),
        (State::Open, Reason::ProbeFailed, 1)
    );
    assert_eq!(t.open_for, Some(ms(500)));
    // With a second success the allowance doubles and more errors are tolerated.
    let p = Policy::new(&cfg().trickle(0.0).build().unwrap(), t0);
    let at = open(&p);
    let (a, b) = (permit(&p, at), permit(&p, at));
    assert_eq!(p.on_outcome(a, &Outcome::Success, at, 0), Effect::SlotFreed);
    assert_eq!(p.on_outcome(b, &fail(), at, 0), Effect::SlotFreed);
    assert_eq!(p.state(), State::HalfOpen);
    // A timeout reopens whatever the successes, one level up.
    let t = transition(p.on_outcome(permit(&p, at), &timeout(), at, 0));
    assert_eq!((t.to, t.level, t.open_for), (State::Open, 2, Some(secs(1))));
}
#[test]
fn dropped_and_locally_rejected_probes_free_their_slot() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().trickle(0.0).probes(2).build().unwrap(), t0);
    trip(&p, t0);
    let at = t0 + ms(500);
    // While open, a spaced probe reserved and never called gives the probe back: it is due
    // again at once ...
    assert_eq!(p.on_drop(permit(&p, at), 0), Effect::SlotFreed);
    // ... while one that was called and dropped counts for nothing (the next is a spacing
    // later).
    let called = p.stamp(permit(&p, at), at);
    assert_eq!(p.on_drop(called, 0), Effect::None);
    assert!(rejected(&p, at + ms(499)));
    let at = t0 + ms(1000);
    let t = transition(p.on_outcome(permit(&p, at), &Outcome::Success, at, 0));
    assert_eq!(t.to, State::HalfOpen);
    let (a, b) = (permit(&p, at), permit(&p, at));
    assert!(rejected(&p, at));
    assert_eq!(p.on_drop(a, 0), Effect::SlotFreed);
    assert_eq!(p.state(), State::HalfOpen);
    assert_eq!(p.on_outcome(b, &local(), at, 0), Effect::SlotFreed);
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
    let p = Policy::new(&cfg().probes(1).build().unwrap(), t0);
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
fn a_healthy_period_if_set_keeps_the_growth_until_it_passes() {
    let t0 = Instant::now();
    let p = Policy::new(
        &cfg().healthy_period(secs(60)).probes(1).build().unwrap(),
        t0,
    );
    let mut now = t0 + secs(100);
    assert_eq!(trip(&p, now).level, 1);
    // Probe succeeds, then the breaker trips again soon: level 2, 1 s.
    now += secs(1);
    p.on_outcome(permit(&p, now), &Outcome::Success, now, 0);
    now += secs(1);
    let t = trip(&p, now);
    assert_eq!((t.level, t.open_for), (2, Some(secs(1))));
    // Recover and stay healthy for the healthy period: back to level 1.
    now += secs(2);
    p.on_outcome(permit(&p, now), &Outcome::Success, now, 0);
    now += secs(61);
    let t = trip(&p, now);
    assert_eq!((t.level, t.open_for), (1, Some(ms(500))));
}

#[test]
fn by_default_closing_forgets_the_growth() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().probes(1).trickle(0.0).build().unwrap(), t0);
    trip(&p, t0);
    // Three timed-out probes: level 4, 4 s apart.
    let mut now = t0;
    for _ in 0..3 {
        now += secs(10);
        p.on_outcome(permit(&p, now), &timeout(), now, 0);
    }
    assert_eq!(p.snapshot(now).level, 4);
    now += secs(10);
    p.on_outcome(permit(&p, now), &Outcome::Success, now, 0);
    assert_eq!(p.state(), State::Closed);
    // The next trip, a moment later, starts again at 500 ms.
    let t = trip(&p, now + ms(1));
    assert_eq!((t.level, t.open_for), (1, Some(ms(500))));
}

#[test]
fn load_failures_trip_on_their_own_rate_fast_errors_do_not() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().consecutive_failures(20).build().unwrap(), t0);
    // Half the calls fail fast, for a long time: never trips (the retry budget's job).
    for i in 0..10_000u64 {
        let o = if i % 2 == 0 { fail() } else { Outcome::Success };
        assert_eq!(call(&p, t0 + ms(i), o), Effect::None, "call {i}");
    }
    // Half the calls time out: trips once they are half the window.
    let p = Policy::new(&cfg().build().unwrap(), t0);
    let mut tripped = None;
    for i in 0..100u64 {
        let o = if i % 2 == 0 {
            timeout()
        } else {
            Outcome::Success
        };
        if let Effect::Transition(t) = call(&p, t0, o) {
            tripped = Some((i, t.reason));
            break;
        }
    }
    assert_eq!(tripped, Some((20, Reason::LoadFailureRate)));
}

#[test]
fn the_run_that_trips_grows_with_the_usual_failure_share() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().consecutive_failures(20).build().unwrap(), t0);
    // 1,000 calls, one in ten succeeding (runs of 9 failures).
    for i in 0..1_000u64 {
        let o = if i % 10 == 9 {
            Outcome::Success
        } else {
            fail()
        };
        assert_eq!(call(&p, t0, o), Effect::None);
    }
    // Then it stops succeeding: a run of 20 is no evidence at that share; 10 / 0.1 = 100 is.
    let mut at = None;
    for run in 1..=200u64 {
        if let Effect::Transition(t) = call(&p, t0, fail()) {
            assert_eq!(t.reason, Reason::ConsecutiveFailures);
            at = Some(run);
            break;
        }
    }
    assert_eq!(at, Some(100));
    // A healthy dependency that stops answering trips after 20.
    let p = Policy::new(&cfg().consecutive_failures(20).build().unwrap(), t0);
    for _ in 0..1_000 {
        call(&p, t0, Outcome::Success);
    }
    let mut at = None;
    for run in 1..=200u64 {
        if let Effect::Transition(_) = call(&p, t0, fail()) {
            at = Some(run);
            break;
        }
    }
    assert_eq!(at, Some(20));
}
#[test]
fn open_periods_are_jittered_within_bounds() {
    let t0 = Instant::now();
    let mut seen = std::collections::HashSet::new();
    for seed in 0..50 {
        let config = BreakerConfig::builder()
            .seed(seed)
            .patience(Duration::ZERO)
            .build()
            .unwrap();
        let p = Policy::new(&config, t0);
        let d = trip(&p, t0).open_for.unwrap();
        assert!(d >= ms(400) && d <= ms(500), "{d:?}");
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

#[test]
fn a_dependency_that_usually_fails_often_needs_a_longer_run_after_a_close() {
    let t0 = Instant::now();
    let p = Policy::new(
        &cfg().consecutive_failures(20).trickle(0.0).build().unwrap(),
        t0,
    );
    trip(&p, t0);
    // Half-open at one success in ten: the ramp closes after 5 successes and 36 failures.
    let at = t0 + ms(500);
    transition(p.on_outcome(permit(&p, at), &Outcome::Success, at, 0));
    let mut closed = false;
    for i in 1..=50u64 {
        let o = if i % 9 == 0 { Outcome::Success } else { fail() };
        if let Effect::Transition(t) = p.on_outcome(permit(&p, at), &o, at, 0) {
            assert_eq!(t.to, State::Closed);
            closed = true;
            break;
        }
    }
    assert!(closed);
    // The young window does not tell yet: the probes' share (~0.12) asks for a run of
    // about 80, not 20, and for as much volume before a window of failures trips.
    for i in 0..60 {
        assert_eq!(call(&p, at, fail()), Effect::None, "failure {i}");
    }
    let mut tripped_at = None;
    for i in 60..200 {
        if let Effect::Transition(t) = call(&p, at, fail()) {
            tripped_at = Some((i, t.reason));
            break;
        }
    }
    let (i, _) = tripped_at.expect("still trips on a long enough run");
    assert!((70..=90).contains(&i), "tripped after {i}");
}

/// A policy with runs of 20 and the default patience of 1 s.
fn patient(t0: Instant) -> Policy {
    let config = cfg().consecutive_failures(20).patience(secs(1));
    Policy::new(&config.build().unwrap(), t0)
}

#[test]
fn a_run_of_fast_errors_trips_only_once_it_has_lasted_the_patience() {
    let t0 = Instant::now();
    let p = patient(t0);
    for _ in 0..1_000 {
        call(&p, t0, Outcome::Success);
    }
    // 1,000 rps of fast errors: 20 in a row are evidence, but not yet a second's worth.
    for i in 0..1_000u64 {
        assert_eq!(call(&p, t0 + ms(i), fail()), Effect::None, "failure {i}");
    }
    let t = transition(call(&p, t0 + ms(1_000), fail()));
    assert_eq!(t.reason, Reason::ConsecutiveFailures);
    // A success ends the run: the next run starts its own clock.
    let p = patient(t0);
    for i in 0..900u64 {
        call(&p, t0 + ms(i), fail());
    }
    call(&p, t0 + ms(900), Outcome::Success);
    for i in 901..1_800u64 {
        assert_eq!(call(&p, t0 + ms(i), fail()), Effect::None);
    }
    // A bare overload answer (a 503 without Retry-After) waits like a fast error (while the
    // window's load-failure rate stays below its threshold).
    let p = patient(t0);
    for _ in 0..1_000 {
        call(&p, t0, Outcome::Success);
    }
    let bare = Outcome::Failure(Failure::retryable(FailureKind::Overload));
    for _ in 0..100 {
        assert_eq!(call(&p, t0, bare), Effect::None);
    }
    // Timeouts are load failures: they trip at once.
    let p = patient(t0);
    for _ in 0..19 {
        assert_eq!(call(&p, t0, timeout()), Effect::None);
    }
    let t = transition(call(&p, t0, timeout()));
    assert_eq!(t.reason, Reason::ConsecutiveFailures);
}

#[test]
fn pushback_holds_the_trickle_back_until_the_probe_it_set() {
    let t0 = Instant::now();
    let p = Policy::new(&cfg().build().unwrap(), t0);
    for _ in 0..19 {
        call(&p, t0, fail());
    }
    let t = transition(call(&p, t0, overload(secs(3))));
    assert_eq!(t.open_for, Some(secs(3)));
    // The server asked for 3 s: nothing trickles through meanwhile.
    assert!((0..200).all(|_| rejected(&p, t0 + secs(1))));
    // Then the spaced probe goes, and the trickle resumes after it.
    let probe = permit(&p, t0 + secs(3));
    assert!(probe.is_probe());
    assert_eq!((0..100).filter(|_| !rejected(&p, t0 + secs(3))).count(), 5);
}
