//! The decision: which fault a request gets, as a plain function of the spec in force, `now` and
//! a random source. No runtime needed, so every branch is unit-tested directly.

use crate::schedule::Schedule;
use crate::spec::FaultSpec;
use damper_core::rng::Random;
use std::time::Duration;
use tokio::time::Instant;

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Call the inner service.
    Pass,
    /// Answer with an injected error (or injected response) without calling the inner service.
    Error,
    /// Never answer; the caller must drop the future.
    Hang,
}

/// The decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// What to do with the request.
    pub action: Action,
    /// Latency to add to the answer.
    pub delay: Option<Duration>,
    /// The capacity cut to admit the request against, if one is in force.
    pub capacity: Option<u32>,
}

impl Decision {
    /// The decision when no fault is in force.
    pub const PASS: Decision = Decision {
        action: Action::Pass,
        delay: None,
        capacity: None,
    };
}

/// Picks the spec in force and draws a request's fault.
#[derive(Debug, Clone)]
pub struct FaultPolicy {
    schedule: Schedule,
    start: Instant,
}

impl FaultPolicy {
    /// A policy for `schedule`, measured from `start`.
    pub fn new(schedule: Schedule, start: Instant) -> Self {
        Self { schedule, start }
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The instant the schedule is measured from.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// The spec in force at `now`: `forced` (set through a handle) wins over the schedule.
    pub fn spec_at(&self, now: Instant, forced: Option<FaultSpec>) -> Option<FaultSpec> {
        if forced.is_some() {
            return forced;
        }
        let elapsed = now.checked_duration_since(self.start)?;
        self.schedule.spec_at(elapsed).copied()
    }

    /// Draws the fault for one request under `spec`. Hang is drawn first, then error, then the
    /// latency; each draw is independent.
    pub fn decide<R: Random>(spec: &FaultSpec, mut rng: R) -> Decision {
        if spec.is_noop() {
            return Decision::PASS;
        }
        let action = if spec.hang_probability > 0.0 && rng.next_f64() < spec.hang_probability {
            Action::Hang
        } else if spec.error_probability > 0.0 && rng.next_f64() < spec.error_probability {
            Action::Error
        } else {
            Action::Pass
        };
        let delay = match (action, spec.latency) {
            (Action::Hang, _) | (_, None) => None,
            (_, Some(l)) => Some(l.sample(&mut rng)),
        };
        Decision {
            action,
            delay,
            capacity: spec.capacity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Latency;
    use damper_core::rng::SplitMix64;

    #[test]
    fn forced_spec_wins_and_schedule_is_relative_to_start() {
        let start = Instant::now();
        let sched = Schedule::builder()
            .between(
                Duration::from_secs(1),
                Duration::from_secs(2),
                FaultSpec::outage(),
            )
            .build()
            .unwrap();
        let p = FaultPolicy::new(sched, start);
        assert_eq!(p.spec_at(start, None), None);
        assert_eq!(
            p.spec_at(start + Duration::from_millis(1500), None),
            Some(FaultSpec::outage())
        );
        assert_eq!(p.spec_at(start + Duration::from_secs(2), None), None);
        assert_eq!(
            p.spec_at(start, Some(FaultSpec::blackout())),
            Some(FaultSpec::blackout())
        );
    }

    #[test]
    fn draws_follow_the_probabilities() {
        let spec = FaultSpec::new()
            .hang_probability(0.1)
            .error_probability(0.5)
            .latency(Latency::Fixed(Duration::from_millis(3)));
        let mut rng = SplitMix64::new(11);
        let (mut hang, mut err, mut pass) = (0, 0, 0);
        for _ in 0..20_000 {
            let d = FaultPolicy::decide(&spec, &mut rng);
            match d.action {
                Action::Hang => {
                    hang += 1;
                    assert_eq!(d.delay, None);
                }
                Action::Error => {
                    err += 1;
                    assert_eq!(d.delay, Some(Duration::from_millis(3)));
                }
                Action::Pass => pass += 1,
            }
        }
        // hang 10%; error 50% of the other 90% = 45%; pass 45%.
        assert!((1700..2300).contains(&hang), "{hang}");
        assert!((8500..9500).contains(&err), "{err}");
        assert!((8500..9500).contains(&pass), "{pass}");
    }

    #[test]
    fn noop_and_certain_specs() {
        let mut rng = SplitMix64::new(1);
        assert_eq!(
            FaultPolicy::decide(&FaultSpec::new(), &mut rng),
            Decision::PASS
        );
        for _ in 0..100 {
            assert_eq!(
                FaultPolicy::decide(&FaultSpec::outage(), &mut rng).action,
                Action::Error
            );
            assert_eq!(
                FaultPolicy::decide(&FaultSpec::blackout(), &mut rng).action,
                Action::Hang
            );
        }
        let cut = FaultPolicy::decide(&FaultSpec::new().capacity(4), &mut rng);
        assert_eq!(cut.action, Action::Pass);
        assert_eq!(cut.capacity, Some(4));
    }

    #[test]
    fn same_seed_same_decisions() {
        let spec = FaultSpec::new()
            .error_probability(0.3)
            .latency(Latency::Exponential {
                mean: Duration::from_millis(5),
            });
        let run = |seed| {
            let mut rng = SplitMix64::new(seed);
            (0..500)
                .map(|_| FaultPolicy::decide(&spec, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }
}
