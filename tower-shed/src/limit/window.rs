//! Noise-robust RTT estimates shared by the latency-based algorithms ([`Gradient2`] and
//! [`Vegas`]).
//!
//! # Why medians of batches, and a probed baseline
//!
//! Service times are noisy (lognormal, a p99 five times the median is common), so a single RTT
//! says little: one sample's ratio to the baseline can be anything from 0.3 to 5. And a
//! baseline that *averages* the RTTs it sees follows a standing queue up: the queue the limit
//! itself keeps makes every RTT longer, the average rises with it, the gradient reads "no
//! queue", the limit grows, and so on up to `max_limit` (measured in the lab's `overload`
//! scenario: Gradient2 with an EMA baseline climbed from 30 to 200 in 6 s while the server had
//! 13 workers, and admitted requests waited 600 ms).
//!
//! - The **short-term RTT** is the median of a [`Batch`] of [`BATCH`] samples, all admitted
//!   after the previous decision, so each decision sees only the effect of the limit it made
//!   (a sliding window would still hold RTTs from before a cut and cut again, once per RTT, for
//!   as many RTTs as the window spans). One decision per batch, Envoy-style.
//! - The **no-load RTT** ([`Baseline`]) falls at once to any lower batch median, and is
//!   re-measured by a **probe**: the limit is pinned below the level that keeps a queue, and
//!   the median RTT of [`PROBE_SAMPLES`] requests admitted after the pin becomes the new
//!   baseline (higher or lower). Only a drained queue shows the no-load RTT; nothing measured
//!   at the operating point can tell a slower backend from the limiter's own queue.
//!
//! Both are fixed arrays touched only on the measured path (one request in `sample_every`),
//! never allocated.
//!
//! [`Gradient2`]: super::Gradient2
//! [`Vegas`]: super::Vegas

use super::{Sample, Shaper};
use damper_core::rng::{Random, SplitMix64};
use std::time::Duration;
use tokio::time::Instant;

/// Samples per decision batch.
pub(crate) const BATCH: usize = 32;
/// The most samples a probe measures the no-load RTT from.
pub(crate) const PROBE_SAMPLES: usize = 32;
/// A probe within this factor of the baseline is averaged with it (both are noisy medians);
/// one further off replaces it (the backend changed).
const CLOSE: f64 = 2.0;
/// Probes are at least this many times their own length apart.
const PROBE_GAP: usize = 25;
/// How far a lower batch median pulls the baseline down: a quarter of the way.
const LOWER_BY: f64 = 0.25;

fn to_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The inverse of [`to_nanos`]: `u64::MAX` stands for anything at least that long.
fn from_nanos(n: u64) -> Duration {
    if n == u64::MAX {
        Duration::MAX
    } else {
        Duration::from_nanos(n)
    }
}

/// Whether two estimates are within a factor [`CLOSE`] of each other.
fn close(a: Duration, b: Duration) -> bool {
    let (a, b) = (a.as_secs_f64(), b.as_secs_f64());
    a < b * CLOSE && b < a * CLOSE
}

/// Up to `N` RTTs of requests admitted after the batch opened, with their total weight.
#[derive(Debug, Clone)]
pub(crate) struct Batch<const N: usize> {
    rtts: [u64; N],
    len: usize,
    weight: u64,
    in_use: usize,
    /// Whether the limit turned requests away while the batch was open.
    saturated: bool,
    opened: Option<Instant>,
}

impl<const N: usize> Batch<N> {
    pub(crate) const fn new() -> Self {
        Self {
            rtts: [0; N],
            len: 0,
            weight: 0,
            in_use: 0,
            saturated: false,
            opened: None,
        }
    }

    /// Empties the batch; only requests admitted at or after `now` count from here on.
    pub(crate) fn open(&mut self, now: Instant) {
        self.len = 0;
        self.weight = 0;
        self.in_use = 0;
        self.saturated = false;
        self.opened = Some(now);
    }

    /// Adds a sample if its request was admitted after the batch opened. Returns whether the
    /// batch is now full.
    pub(crate) fn push(&mut self, sample: &Sample, now: Instant, in_use: bool) -> bool {
        // A request turned away is news about now, whenever the sample's own request started.
        self.saturated |= sample.saturated;
        if let Some(opened) = self.opened {
            let admitted = now.checked_sub(sample.rtt);
            if admitted.is_none_or(|a| a < opened) {
                return self.len >= N;
            }
        }
        if self.len < N {
            self.rtts[self.len] = to_nanos(sample.rtt);
            self.len += 1;
            self.weight += u64::from(sample.weight.max(1));
            self.in_use += usize::from(in_use);
        }
        self.len >= N
    }

    /// The median RTT (the upper one for an even count); `None` when empty.
    pub(crate) fn median(&self) -> Option<Duration> {
        if self.len == 0 {
            return None;
        }
        let mut copy = self.rtts;
        let (_, m, _) = copy[..self.len].select_nth_unstable(self.len / 2);
        Some(from_nanos(*m))
    }

    /// How many requests the batch stands for.
    pub(crate) fn weight(&self) -> u32 {
        u32::try_from(self.weight).unwrap_or(u32::MAX)
    }

    /// Whether the limit was in use over the batch: at least half of it was admitted while
    /// the limit was in use, or the limit turned requests away meanwhile (bursts below
    /// capacity: few in flight most of the time, but the bursts hit the limit).
    pub(crate) fn in_use(&self) -> bool {
        self.saturated || self.in_use * 2 >= self.len
    }
}

/// What [`Baseline::probe_step`] did with a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probing {
    /// No probe: the algorithm handles the sample.
    No,
    /// A probe is running (or just started): the limit stays pinned.
    Pinned(usize),
    /// The probe just ended: the baseline is fresh and the limit restored.
    Done(usize),
}

#[derive(Debug, Clone)]
struct Probe {
    restore: f64,
    batch: Batch<PROBE_SAMPLES>,
}

/// The no-load RTT: the lowest batch median since the last probe, re-measured by probes.
#[derive(Debug, Clone)]
pub(crate) struct Baseline {
    value: Option<Duration>,
    pin: f64,
    /// Samples a probe takes (at most [`PROBE_SAMPLES`]).
    probe_samples: usize,
    probe: Option<Probe>,
    /// Requests seen since the last probe, and how many to wait for.
    seen: f64,
    due: f64,
    rng: SplitMix64,
}

impl Baseline {
    pub(crate) fn new(pin: f64, probe_samples: usize, seed: u64) -> Self {
        Self {
            value: None,
            pin,
            probe_samples: probe_samples.clamp(1, PROBE_SAMPLES),
            probe: None,
            seen: 0.0,
            due: f64::INFINITY,
            rng: SplitMix64::new(seed),
        }
    }

    /// The current no-load RTT estimate.
    pub(crate) fn value(&self) -> Option<Duration> {
        self.value
    }

    /// Moves the estimate a quarter of the way down to `rtt` if that is lower (sets it if there
    /// is none); returns it. Only a quarter: a batch median is itself noisy, and following each
    /// lower one all the way would make the estimate the minimum of many noisy medians, biased
    /// low the longer it runs.
    pub(crate) fn lower_to(&mut self, rtt: Duration) -> Duration {
        let v = match self.value {
            // Less than half: not noise but a faster backend (or a first estimate that was far
            // off): follow it at once.
            Some(v) if rtt < v / 2 => rtt,
            Some(v) if rtt < v => v - (v - rtt).div_f64(1.0 / LOWER_BY),
            Some(v) => v,
            None => rtt,
        };
        self.value = Some(v);
        v
    }

    /// Schedules the next probe after `U(0.5, 1) · period` requests.
    pub(crate) fn schedule(&mut self, period: f64) {
        let jitter = 0.5 + 0.5 * self.rng.next_f64();
        self.due = jitter * period;
        self.seen = 0.0;
    }

    /// Makes the next sample start a probe.
    pub(crate) fn probe_now(&mut self) {
        self.due = 0.0;
    }

    /// Runs the probe schedule: counts requests, pins the limit when a probe is due, collects
    /// the probe's samples and, when it has enough, sets the baseline to their median,
    /// restores the limit and schedules the next probe after `period` requests.
    pub(crate) fn probe_step(
        &mut self,
        sample: &Sample,
        now: Instant,
        shaper: &mut Shaper,
        period: f64,
    ) -> Probing {
        if let Some(probe) = &mut self.probe {
            if !sample.dropped {
                probe.batch.push(sample, now, true);
            }
            if probe.batch.len < self.probe_samples {
                return Probing::Pinned(shaper.get());
            }
            let measured = probe.batch.median();
            self.value = match (self.value, measured) {
                (Some(old), Some(new)) if close(old, new) => Some(old / 2 + new / 2),
                (old, new) => new.or(old),
            };
            let restore = probe.restore;
            self.probe = None;
            // A probe lasts about `probe_samples × weight` requests: keep probing to a few
            // percent of the time whatever the sampling rate.
            let gap = (PROBE_GAP * self.probe_samples) as f64 * sample.weight_f64();
            self.schedule(period.max(gap));
            return Probing::Done(shaper.set(restore));
        }
        self.seen += sample.weight_f64();
        if self.seen < self.due {
            return Probing::No;
        }
        let restore = shaper.value();
        let pinned = shaper.set(restore * self.pin);
        let mut batch = Batch::new();
        batch.open(now);
        self.probe = Some(Probe { restore, batch });
        Probing::Pinned(pinned)
    }
}

/// What [`Rtts::feed`] made of a sample.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fed {
    /// Nothing to decide: this is the limit (a probe may have just set it).
    Limit(usize),
    /// The sample was a drop: the algorithm cuts.
    Dropped,
    /// A batch completed while the limit was in use: decide from its median (`sample.rtt`,
    /// weighted by the whole batch) and the no-load RTT.
    Batch { sample: Sample, noload: Duration },
}

/// The batch and the baseline together, as both latency-based algorithms use them.
#[derive(Debug, Clone)]
pub(crate) struct Rtts {
    batch: Batch<BATCH>,
    pub(crate) baseline: Baseline,
}

impl Rtts {
    pub(crate) fn new(baseline: Baseline) -> Self {
        Self {
            batch: Batch::new(),
            baseline,
        }
    }

    /// Runs the probe schedule (`period` requests between probes), then adds the sample to
    /// the batch; when the batch is full, hands back its median and opens the next one.
    pub(crate) fn feed(
        &mut self,
        sample: &Sample,
        now: Instant,
        shaper: &mut Shaper,
        period: f64,
    ) -> Fed {
        match self.baseline.probe_step(sample, now, shaper, period) {
            Probing::No => {}
            Probing::Pinned(l) => return Fed::Limit(l),
            Probing::Done(l) => {
                self.batch.open(now);
                return Fed::Limit(l);
            }
        }
        if sample.dropped {
            return Fed::Dropped;
        }
        let in_use = sample.in_use(shaper.value());
        if !self.batch.push(sample, now, in_use) {
            return Fed::Limit(shaper.get());
        }
        let (Some(rtt), weight, in_use, saturated) = (
            self.batch.median(),
            self.batch.weight(),
            self.batch.in_use(),
            self.batch.saturated,
        ) else {
            return Fed::Limit(shaper.get());
        };
        self.batch.open(now);
        let noload = self.baseline.lower_to(rtt);
        if !in_use {
            return Fed::Limit(shaper.get());
        }
        Fed::Batch {
            sample: Sample {
                rtt,
                weight,
                saturated,
                ..*sample
            },
            noload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ms: u64) -> Sample {
        Sample::new(Duration::from_millis(ms), 10, false)
    }

    #[test]
    fn batch_median_ignores_requests_admitted_before_it_opened() {
        let t0 = Instant::now();
        let mut b = Batch::<3>::new();
        b.open(t0);
        let later = t0 + Duration::from_millis(100);
        // Admitted 50 ms before the batch opened: skipped.
        assert!(!b.push(&s(150), later, true));
        assert_eq!(b.median(), None);
        assert!(!b.push(&s(90), later, true));
        assert!(!b.push(&s(10), later, false));
        assert!(b.push(&s(50), later, false));
        assert_eq!(b.median(), Some(Duration::from_millis(50)));
        assert_eq!(b.weight(), 3);
        assert!(!b.in_use());
        // Full: further samples are not taken.
        assert!(b.push(&s(1), later, true));
        assert_eq!(b.median(), Some(Duration::from_millis(50)));
    }

    #[test]
    fn huge_rtts_saturate() {
        let mut b = Batch::<1>::new();
        b.push(&Sample::new(Duration::MAX, 1, false), Instant::now(), true);
        assert_eq!(b.median(), Some(Duration::MAX));
    }
}
