//! Invariants of the policy, property-tested with a fake clock.

use damper_core::classify::{Failure, FailureKind, Outcome};
use proptest::prelude::*;
use std::time::Duration;
use tokio::time::Instant;
use tower_breaker::BreakerConfig;
use tower_breaker::policy::{Admission, Effect, Permit, Policy, Reason, State};

fn outcome(kind: u8) -> Outcome {
    match kind % 5 {
        0 => Outcome::Success,
        1 => Outcome::CallerError,
        2 => Outcome::Failure(Failure::retryable(FailureKind::Error)),
        3 => Outcome::Failure(Failure::retryable(FailureKind::Timeout)),
        _ => Outcome::Failure(Failure::fatal(FailureKind::LocalRejection)),
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Advance the clock by this many milliseconds.
    Wait(u16),
    /// Try to start a call.
    Admit,
    /// Complete the `i`-th outstanding call (modulo) with an outcome.
    Complete(usize, u8),
    /// Drop the `i`-th outstanding call.
    Drop(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u16..3000).prop_map(Op::Wait),
        4 => Just(Op::Admit),
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, k)| Op::Complete(i, k)),
        1 => any::<usize>().prop_map(Op::Drop),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// However calls start, finish and are dropped, a half-open breaker never has more probes
    /// of its current half-open period outstanding than its slow-start allowance (below
    /// `2^(probes − 1)`: it closes on the `probes`-th success), and it counts exactly those.
    #[test]
    fn never_more_than_the_allowance_in_flight(
        probes in 1u32..5,
        ops in proptest::collection::vec(op(), 1..400),
    ) {
        let t0 = Instant::now();
        let config = BreakerConfig::builder()
            .patience(Duration::ZERO)
            .min_requests(3)
            .consecutive_failures(3)
            .probes(probes)
            .open_min(Duration::from_millis(500))
            .open_max(Duration::from_secs(4))
            .seed(3)
            .build()
            .unwrap();
        let max = 1u32 << (probes - 1);
        let p = Policy::new(&config, t0);
        let mut now = t0;
        // Outstanding permits, with the half-open period they were admitted in (`None`: not
        // admitted while half-open).
        let mut live: Vec<(Option<u64>, Permit)> = Vec::new();
        let mut period = 0u64;
        let effect = |e: Effect, period: &mut u64| {
            if let Effect::Transition(t) = e
                && t.to == State::HalfOpen {
                    *period += 1;
                }
        };
        for op in ops {
            match op {
                Op::Wait(ms) => now += Duration::from_millis(u64::from(ms)),
                Op::Admit => {
                    let half_open = p.state() == State::HalfOpen;
                    let (a, t) = p.admit(now);
                    prop_assert!(t.is_none(), "admitting never changes the state");
                    if let Admission::Admitted(permit) = a {
                        live.push((half_open.then_some(period), permit));
                    }
                }
                Op::Complete(i, k) if !live.is_empty() => {
                    let (_, permit) = live.swap_remove(i % live.len());
                    let e = p.on_outcome(permit, &outcome(k), now, i);
                    effect(e, &mut period);
                }
                Op::Drop(i) if !live.is_empty() => {
                    let (_, permit) = live.swap_remove(i % live.len());
                    let e = p.on_drop(permit, i);
                    effect(e, &mut period);
                }
                _ => {}
            }
            let s = p.snapshot(now);
            prop_assert!(s.probes_in_flight <= max);
            if s.state == State::HalfOpen {
                let current = live
                    .iter()
                    .filter(|(era, permit)| *era == Some(period) && permit.is_probe())
                    .count();
                prop_assert!(current as u32 <= max, "{} probes out, max {}", current, max);
                prop_assert_eq!(current as u32, s.probes_in_flight);
            }
        }
    }

    /// A rate trip needs at least `min_requests` counted calls within the last window.
    #[test]
    fn never_trips_below_min_requests(
        min_requests in 1u64..40,
        rate in 0.05f64..=1.0,
        calls in proptest::collection::vec((0u16..1500, any::<u8>()), 1..300),
    ) {
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        let config = BreakerConfig::builder()
            .patience(Duration::ZERO)
            .window(window)
            .min_requests(min_requests)
            .failure_rate(rate)
            .open_min(Duration::from_millis(100))
            .seed(5)
            .build()
            .unwrap();
        let p = Policy::new(&config, t0);
        let mut now = t0;
        // Times of calls counted since the breaker last closed.
        let mut counted: Vec<Instant> = Vec::new();
        for (wait, kind) in calls {
            now += Duration::from_millis(u64::from(wait));
            let (a, t) = p.admit(now);
            if t.is_some() {
                counted.clear();
            }
            let Admission::Admitted(permit) = a else { continue };
            let o = outcome(kind);
            let effect = p.on_outcome(permit, &o, now, usize::from(kind));
            if !permit.is_probe() && o != outcome(4) {
                counted.push(now);
            }
            if let Effect::Transition(t) = effect {
                if t.from == State::Closed {
                    prop_assert!(
                        matches!(t.reason, Reason::FailureRate | Reason::LoadFailureRate),
                        "{:?}", t.reason
                    );
                    let recent = counted.iter().filter(|&&at| at + window > now).count();
                    prop_assert!(
                        recent as u64 >= min_requests,
                        "tripped with {} calls in the window, min {}", recent, min_requests
                    );
                }
                counted.clear();
            }
        }
    }

    /// The window forgets: whatever healthy history came before, once a full window has
    /// passed an outage trips at exactly the `min_requests`-th failure.
    #[test]
    fn an_outage_after_a_full_window_trips_within_min_requests(
        min_requests in 1u64..60,
        history in proptest::collection::vec((0u16..200, any::<bool>()), 0..3000),
        gap_ms in 0u64..20_000,
    ) {
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        let config = BreakerConfig::builder()
            .patience(Duration::ZERO)
            .window(window)
            .min_requests(min_requests)
            .seed(9)
            .build()
            .unwrap();
        let p = Policy::new(&config, t0);
        let mut now = t0;
        for (wait, caller_error) in history {
            now += Duration::from_millis(u64::from(wait) / 20);
            let Admission::Admitted(permit) = p.admit(now).0 else { unreachable!() };
            let o = if caller_error { Outcome::CallerError } else { Outcome::Success };
            prop_assert_eq!(p.on_outcome(permit, &o, now, 0), Effect::None);
        }
        now += window + Duration::from_millis(gap_ms);
        let fail = Outcome::Failure(Failure::retryable(FailureKind::Timeout));
        for i in 1..=min_requests {
            let Admission::Admitted(permit) = p.admit(now).0 else { unreachable!() };
            let e = p.on_outcome(permit, &fail, now, 0);
            if i < min_requests {
                prop_assert_eq!(e, Effect::None, "tripped early at {}", i);
            } else {
                prop_assert!(matches!(e, Effect::Transition(t) if t.to == State::Open));
            }
        }
    }
}
