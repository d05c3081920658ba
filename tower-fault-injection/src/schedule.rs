//! When to inject: a [`Schedule`] of intervals measured from the layer's start.

use crate::spec::{ConfigError, FaultSpec};
use std::time::Duration;

/// The most intervals a [`Schedule`] may hold. A schedule is a plan for an experiment, not a
/// data structure to grow without bound: [`ScheduleBuilder::alternating`] with nanosecond
/// phases over a long span would otherwise try to allocate billions of intervals.
pub const MAX_INTERVALS: usize = 100_000;

/// Fault intervals measured from a start instant: `[from, until)` → spec.
///
/// Intervals may not overlap. Outside every interval nothing is injected (unless a
/// [`FaultHandle`](crate::FaultHandle) forces a spec).
///
/// ```
/// use std::time::Duration;
/// use tower_fault_injection::{FaultSpec, Schedule};
///
/// let s = Duration::from_secs;
/// let schedule = Schedule::builder()
///     .between(s(10), s(40), FaultSpec::outage())
///     .build()
///     .unwrap();
/// assert!(schedule.spec_at(s(5)).is_none());
/// assert!(schedule.spec_at(s(10)).is_some());
/// assert!(schedule.spec_at(s(40)).is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schedule {
    intervals: Vec<Interval>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Interval {
    from: Duration,
    until: Duration,
    spec: FaultSpec,
}

impl Schedule {
    /// A schedule that injects nothing.
    pub const fn empty() -> Self {
        Self {
            intervals: Vec::new(),
        }
    }

    /// Starts a schedule.
    pub fn builder() -> ScheduleBuilder {
        ScheduleBuilder::default()
    }

    /// Whether the schedule has no interval.
    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// The spec in force `elapsed` after the start, if any.
    pub fn spec_at(&self, elapsed: Duration) -> Option<&FaultSpec> {
        // Intervals are sorted and disjoint: the candidate is the last one starting at or
        // before `elapsed`.
        let idx = self.intervals.partition_point(|i| i.from <= elapsed);
        let i = self.intervals.get(idx.checked_sub(1)?)?;
        (elapsed < i.until).then_some(&i.spec)
    }

    /// The intervals, in order, as `(from, until, spec)`.
    pub fn intervals(&self) -> impl Iterator<Item = (Duration, Duration, &FaultSpec)> + '_ {
        self.intervals.iter().map(|i| (i.from, i.until, &i.spec))
    }

    /// When the last interval ends (zero for an empty schedule).
    pub fn end(&self) -> Duration {
        self.intervals.last().map_or(Duration::ZERO, |i| i.until)
    }
}

/// Builds a [`Schedule`]; [`ScheduleBuilder::build`] checks it.
#[derive(Debug, Clone, Default)]
pub struct ScheduleBuilder {
    intervals: Vec<Interval>,
    /// The first error found while adding intervals, returned by `build`.
    error: Option<ConfigError>,
}

impl ScheduleBuilder {
    /// Injects `spec` from `from` until `until` after the start.
    pub fn between(mut self, from: Duration, until: Duration, spec: FaultSpec) -> Self {
        self.intervals.push(Interval { from, until, spec });
        self
    }

    /// Alternates `spec` for `on`, then nothing for `off`, from `from` until `until` (a
    /// flapping dependency). A zero `on` or `off` adds nothing.
    ///
    /// Any durations are accepted, up to `Duration::MAX`; phases that would run past it end
    /// there. If the schedule would then hold more than [`MAX_INTERVALS`] intervals, nothing is
    /// added and [`build`](Self::build) fails naming `schedule.alternating`.
    pub fn alternating(
        mut self,
        from: Duration,
        until: Duration,
        on: Duration,
        off: Duration,
        spec: FaultSpec,
    ) -> Self {
        if on.is_zero() || off.is_zero() || from >= until || self.error.is_some() {
            return self;
        }
        // Phases start at `from + k × (on + off)` while before `until`: count them before
        // allocating anything.
        let period = on.saturating_add(off).as_nanos();
        let count = (until - from).as_nanos().div_ceil(period);
        let room = MAX_INTERVALS.saturating_sub(self.intervals.len());
        if count > room as u128 {
            self.error = Some(ConfigError::new(
                "schedule.alternating",
                "would make more than 100000 intervals (lengthen on/off or shorten the span)",
            ));
            return self;
        }
        let mut t = from;
        while t < until {
            let end = t.saturating_add(on).min(until);
            self.intervals.push(Interval {
                from: t,
                until: end,
                spec,
            });
            match end.checked_add(off) {
                Some(next) => t = next,
                None => break, // the next phase would start after Duration::MAX
            }
        }
        self
    }

    /// Checks the intervals (each non-empty with a valid spec, none overlapping, at most
    /// [`MAX_INTERVALS`] of them) and sorts them.
    pub fn build(mut self) -> Result<Schedule, ConfigError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.intervals.len() > MAX_INTERVALS {
            return Err(ConfigError::new(
                "schedule",
                "must hold at most 100000 intervals",
            ));
        }
        for i in &self.intervals {
            if i.until <= i.from {
                return Err(ConfigError::new(
                    "schedule.until",
                    "must be after the interval's start",
                ));
            }
            i.spec.validate()?;
        }
        self.intervals.sort_by_key(|i| i.from);
        if self.intervals.windows(2).any(|w| w[1].from < w[0].until) {
            return Err(ConfigError::new("schedule", "intervals must not overlap"));
        }
        Ok(Schedule {
            intervals: self.intervals,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn rejects_bad_intervals() {
        let e = Schedule::builder()
            .between(s(5), s(5), FaultSpec::outage())
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "schedule.until");
        let e = Schedule::builder()
            .between(s(0), s(10), FaultSpec::outage())
            .between(s(9), s(12), FaultSpec::blackout())
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "schedule");
        let e = Schedule::builder()
            .between(s(0), s(10), FaultSpec::new().error_probability(3.0))
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "error_probability");
    }

    #[test]
    fn alternating_flaps() {
        let sched = Schedule::builder()
            .alternating(s(10), s(20), s(2), s(2), FaultSpec::outage())
            .build()
            .unwrap();
        assert_eq!(sched.intervals().count(), 3); // 10-12, 14-16, 18-20
        assert!(sched.spec_at(s(11)).is_some());
        assert!(sched.spec_at(s(13)).is_none());
        assert!(sched.spec_at(s(19)).is_some());
        assert!(sched.spec_at(s(20)).is_none());
        assert_eq!(sched.end(), s(20));
    }

    #[test]
    fn alternating_up_to_duration_max_does_not_overflow() {
        // Regression: `t + on` and `end + off` overflowed past Duration::MAX.
        let max = Duration::MAX;
        let sched = Schedule::builder()
            .alternating(Duration::ZERO, max, max, s(1), FaultSpec::outage())
            .build()
            .unwrap();
        assert_eq!(sched.intervals().count(), 1);
        assert_eq!(sched.end(), max);
        assert!(sched.spec_at(max - s(1)).is_some());
        // An off phase reaching past MAX ends the flapping after its on phase.
        let sched = Schedule::builder()
            .alternating(max - s(10), max, s(2), max, FaultSpec::outage())
            .build()
            .unwrap();
        let spans: Vec<_> = sched.intervals().map(|(f, u, _)| (f, u)).collect();
        assert_eq!(spans, vec![(max - s(10), max - s(8))]);
    }

    #[test]
    fn alternating_with_too_many_phases_is_rejected() {
        // Regression: on = off = 1 ns up to Duration::MAX tried to build ~2^63 intervals.
        let ns = Duration::from_nanos(1);
        let e = Schedule::builder()
            .alternating(Duration::ZERO, Duration::MAX, ns, ns, FaultSpec::outage())
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "schedule.alternating");
        // Exactly MAX_INTERVALS phases fit; one more does not, counting intervals already there.
        let n = MAX_INTERVALS as u32;
        let ok = Schedule::builder()
            .alternating(Duration::ZERO, ns * 2 * n, ns, ns, FaultSpec::outage())
            .build()
            .unwrap();
        assert_eq!(ok.intervals().count(), MAX_INTERVALS);
        let e = Schedule::builder()
            .between(ns * 2 * n, ns * 2 * n + s(1), FaultSpec::outage())
            .alternating(Duration::ZERO, ns * 2 * n, ns, ns, FaultSpec::outage())
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "schedule.alternating");
        let e = (0..=n)
            .fold(Schedule::builder(), |b, k| {
                b.between(s(k.into()), s(k.into()) + ns, FaultSpec::outage())
            })
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "schedule");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn lookup_matches_linear_scan(
            starts in proptest::collection::vec((0u64..50, 1u64..5), 0..8),
            at in 0u64..300,
        ) {
            // Lay the intervals end to end with gaps so they never overlap.
            let mut b = Schedule::builder();
            let mut t = 0;
            let mut spans = Vec::new();
            for (gap, len) in starts {
                let from = t + gap;
                spans.push((from, from + len));
                b = b.between(s(from), s(from + len), FaultSpec::outage());
                t = from + len;
            }
            let sched = b.build().unwrap();
            let want = spans.iter().any(|&(f, u)| f <= at && at < u);
            prop_assert_eq!(sched.spec_at(s(at)).is_some(), want);
        }
    }
}
