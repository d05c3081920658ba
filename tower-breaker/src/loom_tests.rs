//! loom models of the lock-free window and state word.
//!
//! Run: `LOOM_MAX_PREEMPTIONS=2 RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//! cargo test --release --lib -p tower-breaker -- loom`

use crate::config::BreakerConfig;
use crate::policy::{Admission, Effect, Policy, State};
use crate::window::{Sample, Window};
use damper_core::classify::{Failure, FailureKind, Outcome};
use loom::sync::Arc;
use loom::thread;
use std::time::Duration;
use tokio::time::Instant;

const OK: Sample = Sample {
    failure: false,
    load: false,
    slow: false,
};
const FAIL: Sample = Sample {
    failure: true,
    load: false,
    slow: false,
};

fn fail() -> Outcome {
    Outcome::Failure(Failure::retryable(FailureKind::Error))
}

/// A policy with `probes` probe slots, tripped at `t0`; returns it and a time after the open
/// period.
fn tripped(probes: u32, t0: Instant) -> (Arc<Policy>, Instant) {
    let config = BreakerConfig::builder()
        .patience(Duration::ZERO)
        .consecutive_failures(1)
        .probes(probes)
        .trickle(0.0)
        .open_jitter(0.0)
        .stripes(1)
        .build()
        .unwrap();
    let p = Arc::new(Policy::new(&config, t0));
    let permit = p.try_admit_closed().unwrap();
    assert!(matches!(
        p.on_outcome(permit, &fail(), t0, 0),
        Effect::Transition(_)
    ));
    (p, t0 + Duration::from_secs(6))
}

/// Joins threads answering yes or no; how many said yes.
fn yes(threads: Vec<thread::JoinHandle<bool>>) -> usize {
    threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|&y| y)
        .count()
}

/// Two recorders rotate the same slot to a new epoch while a reader sums it: the old epoch's
/// counts never show up in the new one, and no sample is lost.
#[test]
fn loom_rotation_never_leaks_old_counts() {
    loom::model(|| {
        let w = Arc::new(Window::new(Duration::from_secs(10), 2));
        w.admitted(0, 0, 1);
        w.record(0, 0, FAIL);
        w.admitted(1, 0, 1);
        w.record(1, 0, FAIL);
        let writers: Vec<_> = (0..2)
            .map(|stripe| {
                let w = w.clone();
                thread::spawn(move || {
                    w.admitted(stripe, 10, 1);
                    w.record(stripe, 10, OK);
                })
            })
            .collect();
        let reader = {
            let w = w.clone();
            thread::spawn(move || w.sum(10))
        };
        let seen = reader.join().unwrap();
        assert_eq!(seen.failures, 0, "old epoch leaked into a read: {seen:?}");
        assert!(seen.total <= 2);
        for t in writers {
            t.join().unwrap();
        }
        let end = w.sum(10);
        assert_eq!(end.failures, 0);
        assert_eq!(end.total, 2, "{end:?}");
    });
}

/// Two threads sharing a stripe rotate the same counter word at once: both samples count.
#[test]
fn loom_shared_stripe_loses_nothing() {
    loom::model(|| {
        let w = Arc::new(Window::new(Duration::from_secs(10), 1));
        w.admitted(0, 0, 1);
        w.record(0, 0, FAIL);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let w = w.clone();
                thread::spawn(move || {
                    w.admitted(0, 10, 1);
                    w.record(0, 10, FAIL);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(w.sum(10).total, 2);
        assert_eq!(w.sum(10).failures, 2);
    });
}

/// Two callers race for the spaced probe when it falls due: exactly one wins, and the breaker
/// stays open (a probe's success, not its admission, changes the state).
#[test]
fn loom_one_spaced_probe_admitted() {
    loom::model(|| {
        let (p, later) = tripped(1, Instant::now());
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let p = p.clone();
                thread::spawn(move || matches!(p.admit(later).0, Admission::Admitted(_)))
            })
            .collect();
        assert_eq!(yes(racers), 1);
        assert_eq!(p.state(), State::Open);
        assert_eq!(p.transitions(), 1);
    });
}

/// Turns a [`tripped`] policy half-open with one success (two slots).
fn half_open(p: &Policy, later: Instant) {
    let Admission::Admitted(probe) = p.admit(later).0 else {
        panic!("spaced probe")
    };
    assert!(matches!(
        p.on_outcome(probe, &Outcome::Success, later, 0),
        Effect::Transition(t) if t.to == State::HalfOpen
    ));
}

/// Two failures cross the threshold at once: the breaker trips exactly once.
#[test]
fn loom_concurrent_failures_trip_once() {
    loom::model(|| {
        let t0 = Instant::now();
        let config = BreakerConfig::builder()
            .patience(Duration::ZERO)
            .min_requests(2)
            .failure_rate(0.5)
            .stripes(2)
            .build()
            .unwrap();
        let p = Arc::new(Policy::new(&config, t0));
        let threads: Vec<_> = (0..2)
            .map(|stripe| {
                let p = p.clone();
                let permit = p.try_admit_closed().unwrap();
                thread::spawn(move || {
                    matches!(
                        p.on_outcome(permit, &fail(), t0, stripe),
                        Effect::Transition(_)
                    )
                })
            })
            .collect();
        assert_eq!(yes(threads), 1);
        assert_eq!(p.state(), State::Open);
        assert_eq!(p.transitions(), 1);
    });
}

/// One probe times out while another is dropped: the breaker reopens and no slot is leaked
/// or freed twice.
#[test]
fn loom_probe_failure_races_a_dropped_probe() {
    loom::model(|| {
        let (p, later) = tripped(3, Instant::now());
        half_open(&p, later);
        let Admission::Admitted(a) = p.admit(later).0 else {
            panic!("first probe")
        };
        let Admission::Admitted(b) = p.admit(later).0 else {
            panic!("second probe")
        };
        let failing = {
            let p = p.clone();
            // A timeout: a sick probe reopens a half-open breaker at once.
            let timeout = Outcome::Failure(Failure::retryable(FailureKind::Timeout));
            thread::spawn(move || p.on_outcome(a, &timeout, later, 0))
        };
        let dropping = {
            let p = p.clone();
            thread::spawn(move || p.on_drop(b, 1))
        };
        let f = failing.join().unwrap();
        let d = dropping.join().unwrap();
        assert!(matches!(f, Effect::Transition(t) if t.to == State::Open));
        assert!(matches!(d, Effect::SlotFreed | Effect::None));
        assert_eq!(p.state(), State::Open);
        assert_eq!(p.snapshot(later).probes_in_flight, 0);
    });
}
