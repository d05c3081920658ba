//! A lock-free, windowed latency histogram.
//!
//! # Layout
//! Values are recorded in nanoseconds into log-linear buckets: 32 linear sub-buckets per power of
//! two, so a bucket's width is at most 1/32 of its lower bound and reporting its midpoint is
//! within 1.6% of any value in it. The range is 1 ns to 2³⁷ ns (about 137 s); larger values land
//! in the last bucket.
//!
//! # Window mechanics
//! The window (default 10 s) is a ring of sub-windows (default 4 × 2.5 s). Each sub-window is
//! tagged with the epoch — `(now − origin) / sub_window` — it holds. A recorder that finds a
//! slot tagged with an older epoch claims it with one compare-and-swap, clears it and re-tags
//! it. Only samples aimed at that slot can be affected: a recorder that finds it being cleared
//! drops its sample, and a recorder for the *old* epoch that checked the tag just before the
//! claim may see its one sample erased or counted in the new epoch. A never-used slot is
//! already zero, so its first claim clears nothing and loses nothing: concurrent recorders of
//! a fresh histogram all count. Samples for every other sub-window are never lost
//! (loom-checked). Readers sum the slots whose epoch lies inside the
//! window and re-check each tag after reading, skipping a slot that rotated under them, so no
//! reader sees a torn epoch. No lock is ever taken; recording is one relaxed atomic add in the
//! common case (plus a `fetch_min` when the sample is a new minimum of its sub-window), into
//! one of two counter stripes so that two threads rarely touch the same cache line.
//!
//! Queries walk every bucket (about a thousand per sub-window), so hot paths should read through
//! a [`QuantileCache`], which recomputes at most once per refresh period.
//!
//! ```
//! use damper_core::histogram::LatencyHistogram;
//! use std::time::Duration;
//! use tokio::time::Instant;
//!
//! let now = Instant::now();
//! let h = LatencyHistogram::new(now);
//! for ms in 1..=100 {
//!     h.record(Duration::from_millis(ms), now);
//! }
//! let p99 = h.quantile(0.99, now).unwrap();
//! assert!((p99.as_secs_f64() - 0.099).abs() < 0.099 * 0.03);
//! assert_eq!(h.count(now), 100);
//! ```

use crate::clock::{Origin, nanos};
use crate::sync::{AtomicU64, Ordering, fence};
use std::fmt;
use std::time::Duration;
use tokio::time::Instant;

#[cfg(not(loom))]
const SUB_BITS: u32 = 5;
#[cfg(not(loom))]
const MAX_EXP: u32 = 37;
// A tiny layout under loom, so a clear is a handful of operations.
#[cfg(loom)]
const SUB_BITS: u32 = 1;
#[cfg(loom)]
const MAX_EXP: u32 = 3;

const SUB: u64 = 1 << SUB_BITS;
/// Number of buckets per sub-window.
const BUCKETS: usize = (SUB + (MAX_EXP as u64 + 1 - SUB_BITS as u64) * SUB) as usize;
const CLEARING: u64 = 1 << 63;

/// Copies of the bucket counters per sub-window, so that threads recording at once mostly add
/// to different cache lines. Each thread sticks to one stripe, handed out round-robin.
#[cfg(not(loom))]
const STRIPES: usize = 2;
#[cfg(loom)]
const STRIPES: usize = 1;

/// This thread's stripe.
#[cfg(not(loom))]
fn stripe() -> usize {
    crate::sync::thread_number() % STRIPES
}

#[cfg(loom)]
fn stripe() -> usize {
    0
}

fn bucket_of(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros();
    if exp > MAX_EXP {
        return BUCKETS - 1;
    }
    let shift = exp - SUB_BITS;
    let sub = (v >> shift) - SUB;
    (SUB + u64::from(shift) * SUB + sub) as usize
}

/// The lowest value and width of bucket `i`.
fn bucket_bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB {
        return (i, 1);
    }
    let shift = (i - SUB) / SUB;
    let sub = (i - SUB) % SUB;
    ((SUB + sub) << shift, 1 << shift)
}

/// A representative value of bucket `i`: its midpoint.
fn bucket_value(i: usize) -> u64 {
    let (lo, width) = bucket_bounds(i);
    lo + width / 2
}

/// Division by a constant through a multiplication: a hardware divide costs as much as the
/// rest of `record` together.
#[derive(Debug, Clone, Copy)]
struct Divisor {
    d: u64,
    /// ⌊(2⁶⁴ − 1) / d⌋: the high half of `n · m` is ⌊n / d⌋ or up to two less.
    m: u64,
}

impl Divisor {
    fn new(d: u64) -> Self {
        let d = d.max(1);
        Self { d, m: u64::MAX / d }
    }

    /// `n / d`, exactly.
    fn div(self, n: u64) -> u64 {
        let mut q = ((u128::from(n) * u128::from(self.m)) >> 64) as u64;
        let mut r = n - q * self.d;
        while r >= self.d {
            q += 1;
            r -= self.d;
        }
        q
    }

    /// `n % d`.
    fn rem(self, n: u64) -> u64 {
        n - self.div(n) * self.d
    }
}

struct Slot {
    /// `epoch + 1` of the data held (0 = never used), with [`CLEARING`] set while being cleared.
    tag: AtomicU64,
    min: AtomicU64,
    counts: Box<[AtomicU64]>,
}

impl Slot {
    fn new() -> Self {
        Self {
            tag: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            counts: (0..BUCKETS * STRIPES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Whether the slot still holds `tag` after the caller's reads of its data: if it rotated,
    /// what was read may mix two epochs and must be dropped.
    ///
    /// The data loads are relaxed, so an acquire *load* of the tag would not order them: a
    /// reader could see a value written after the rotation began and still read the old tag.
    /// The acquire fence pairs with the release fence a rotating recorder issues after claiming
    /// the slot: having read any value written after that fence, the reader sees the claim.
    fn unchanged(&self, tag: u64) -> bool {
        fence(Ordering::Acquire);
        self.tag.load(Ordering::Relaxed) == tag
    }
}

/// Configuration of a [`LatencyHistogram`]'s window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistogramConfig {
    /// The length of the whole window. Default 10 s.
    pub window: Duration,
    /// How many sub-windows it rotates through. Default 4. More gives a smoother forgetting at
    /// the cost of memory (about 17 KB each: two stripes of 8.5 KB) and query time.
    pub sub_windows: usize,
}

impl Default for HistogramConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            sub_windows: 4,
        }
    }
}

/// A [`HistogramConfig`] was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidHistogram {
    field: &'static str,
    reason: &'static str,
}

impl InvalidHistogram {
    /// The name of the offending field.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for InvalidHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid histogram `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for InvalidHistogram {}

/// A lock-free latency histogram over a sliding window. See the [module docs](self).
pub struct LatencyHistogram {
    origin: Origin,
    /// Divides by the sub-window length in nanoseconds.
    sub: Divisor,
    /// Divides by the number of sub-windows.
    ring: Divisor,
    slots: Box<[Slot]>,
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("sub_window", &Duration::from_nanos(self.sub.d))
            .field("sub_windows", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl LatencyHistogram {
    /// A histogram with the default window (10 s in 4 sub-windows), starting at `now`.
    pub fn new(now: Instant) -> Self {
        Self::with_config(HistogramConfig::default(), now).expect("default config is valid")
    }

    /// A histogram with a custom window.
    pub fn with_config(config: HistogramConfig, now: Instant) -> Result<Self, InvalidHistogram> {
        if config.sub_windows == 0 || config.sub_windows > 64 {
            return Err(InvalidHistogram {
                field: "sub_windows",
                reason: "must be between 1 and 64",
            });
        }
        let sub = config.window / config.sub_windows as u32;
        if sub < Duration::from_millis(1) || config.window > Duration::from_secs(86_400) {
            return Err(InvalidHistogram {
                field: "window",
                reason: "each sub-window must be at least 1 ms and the window at most a day",
            });
        }
        Ok(Self {
            origin: Origin::new(now),
            sub: Divisor::new(nanos(sub)),
            ring: Divisor::new(config.sub_windows as u64),
            slots: (0..config.sub_windows).map(|_| Slot::new()).collect(),
        })
    }

    /// The window this histogram was built with.
    pub fn config(&self) -> HistogramConfig {
        HistogramConfig {
            window: Duration::from_nanos(self.sub.d.saturating_mul(self.slots.len() as u64)),
            sub_windows: self.slots.len(),
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        self.sub.div(self.origin.nanos(now))
    }

    /// Records one latency observed at `now`.
    pub fn record(&self, latency: Duration, now: Instant) {
        let v = nanos(latency);
        let epoch = self.epoch(now);
        let want = epoch + 1;
        let slot = &self.slots[self.ring.rem(epoch) as usize];
        let tag = slot.tag.load(Ordering::Acquire);
        if tag != want {
            if tag & CLEARING != 0 || tag > want {
                // Being cleared, or already holding a newer epoch: this sample belongs to the
                // sub-window going away.
                return;
            }
            if tag == 0 {
                // Never used, so already zero: claim it without clearing. A recorder that loses
                // this race finds the slot tagged with its own epoch and records into it.
                match slot
                    .tag
                    .compare_exchange(0, want, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {}
                    Err(now_tag) if now_tag == want => {}
                    Err(_) => return,
                }
            } else {
                match slot.tag.compare_exchange(
                    tag,
                    want | CLEARING,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        // Pairs with the acquire fence in `Slot::unchanged`: a reader that sees
                        // any write below also sees the claim above, and drops its read.
                        fence(Ordering::Release);
                        for c in slot.counts.iter() {
                            c.store(0, Ordering::Relaxed);
                        }
                        slot.min.store(u64::MAX, Ordering::Relaxed);
                        slot.tag.store(want, Ordering::Release);
                    }
                    // Another recorder of this epoch claimed and cleared it meanwhile.
                    Err(now_tag) if now_tag == want => {}
                    Err(_) => return,
                }
            }
        }
        slot.counts[stripe() * BUCKETS + bucket_of(v)].fetch_add(1, Ordering::Relaxed);
        // The minimum rarely moves: read before paying for a read-modify-write.
        if v < slot.min.load(Ordering::Relaxed) {
            slot.min.fetch_min(v, Ordering::Relaxed);
        }
    }

    /// Calls `f(slot, tag)` for each slot inside the window at `now`, with the tag it was seen
    /// with. `f` reads what it needs and keeps it only if [`Slot::unchanged`] says the slot did
    /// not rotate meanwhile.
    fn for_live_slots(&self, now: Instant, f: impl FnMut(&Slot, u64)) {
        self.for_recent_slots(now, self.slots.len() as u64, f);
    }

    /// [`for_live_slots`](Self::for_live_slots) restricted to the `n` most recent sub-windows.
    fn for_recent_slots(&self, now: Instant, n: u64, mut f: impl FnMut(&Slot, u64)) {
        let cur = self.epoch(now) + 1;
        for slot in self.slots.iter() {
            let tag = slot.tag.load(Ordering::Acquire);
            if tag == 0 || tag & CLEARING != 0 || tag > cur || tag + n <= cur {
                continue;
            }
            f(slot, tag);
        }
    }

    /// Takes a consistent copy of the window at `now`: per-bucket counts summed over live
    /// sub-windows. A sub-window that rotates while being copied is left out.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        self.snapshot_recent(now, self.slots.len())
    }

    /// Like [`snapshot`](Self::snapshot), over only the `sub_windows` most recent sub-windows
    /// (the current one counts as one, however young). A reader that must react to a change
    /// faster than the whole window forgets — an adaptive timeout after a latency step — can
    /// compare the current sub-window with the whole window.
    pub fn snapshot_recent(&self, now: Instant, sub_windows: usize) -> Snapshot {
        let n = (sub_windows as u64).min(self.slots.len() as u64);
        let mut counts = vec![0u64; BUCKETS];
        let mut total = 0;
        let mut min = u64::MAX;
        let mut scratch = vec![0u64; BUCKETS];
        self.for_recent_slots(now, n, |slot, tag| {
            let mut t = 0;
            scratch.fill(0);
            for stripe in slot.counts.chunks(BUCKETS) {
                for (dst, c) in scratch.iter_mut().zip(stripe) {
                    let c = c.load(Ordering::Relaxed);
                    *dst += c;
                    t += c;
                }
            }
            let m = slot.min.load(Ordering::Relaxed);
            // Re-check: if the slot rotated while we read it, drop what we read.
            if slot.unchanged(tag) {
                for (a, b) in counts.iter_mut().zip(scratch.iter()) {
                    *a += *b;
                }
                total += t;
                min = min.min(m);
            }
        });
        Snapshot { counts, total, min }
    }

    /// The `q` quantile (0 < q ≤ 1) of the latencies in the window at `now`, or `None` if the
    /// window is empty. Walks every bucket: cache it on hot paths ([`QuantileCache`]).
    pub fn quantile(&self, q: f64, now: Instant) -> Option<Duration> {
        self.snapshot(now).quantile(q)
    }

    /// The number of samples in the window at `now`. Sums every bucket (recording keeps no
    /// separate total, to stay at one read-modify-write per sample): off the hot path.
    pub fn count(&self, now: Instant) -> u64 {
        let mut total = 0;
        self.for_live_slots(now, |slot, tag| {
            let t: u64 = slot.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
            if slot.unchanged(tag) {
                total += t;
            }
        });
        total
    }

    /// The smallest sample in the window at `now`.
    pub fn min(&self, now: Instant) -> Option<Duration> {
        let mut min = u64::MAX;
        self.for_live_slots(now, |slot, tag| {
            let m = slot.min.load(Ordering::Relaxed);
            if slot.unchanged(tag) {
                min = min.min(m);
            }
        });
        (min != u64::MAX).then(|| Duration::from_nanos(min))
    }
}

/// A copy of a histogram's window, for several queries at once.
#[derive(Debug, Clone)]
pub struct Snapshot {
    counts: Vec<u64>,
    total: u64,
    min: u64,
}

impl Snapshot {
    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The smallest sample.
    pub fn min(&self) -> Option<Duration> {
        (self.min != u64::MAX).then(|| Duration::from_nanos(self.min))
    }

    /// The largest sample, as its bucket's midpoint.
    pub fn max(&self) -> Option<Duration> {
        let i = self.counts.iter().rposition(|&c| c > 0)?;
        Some(Duration::from_nanos(bucket_value(i)))
    }

    /// These samples less `other`'s, bucket by bucket (never below zero): the samples of a
    /// histogram without those also recorded into a second one, such as the censored
    /// (timed-out) attempts an adaptive timeout records apart. The minimum is kept.
    pub fn minus(&self, other: &Snapshot) -> Snapshot {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .zip(other.counts.iter().chain(std::iter::repeat(&0)))
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        let total = counts.iter().sum();
        Snapshot {
            counts,
            total,
            min: self.min,
        }
    }

    /// The mean and the standard deviation of the samples' natural logarithms (of their
    /// buckets' midpoints in nanoseconds), or `None` with fewer than two samples: the
    /// parameters of the log-normal distribution fitted to them.
    pub fn log_moments(&self) -> Option<(f64, f64)> {
        if self.total < 2 {
            return None;
        }
        let n = self.total as f64;
        let logs = || {
            self.counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| ((bucket_value(i).max(1) as f64).ln(), *c as f64))
        };
        let mean = logs().map(|(l, c)| l * c).sum::<f64>() / n;
        let var = logs().map(|(l, c)| (l - mean).powi(2) * c).sum::<f64>() / (n - 1.0);
        Some((mean, var.sqrt()))
    }

    /// The `q` quantile (clamped to `(0, 1)`) of the log-normal distribution fitted to the
    /// samples ([`log_moments`](Self::log_moments)), or `None` with fewer than two. From a few
    /// dozen samples this estimates a far quantile (p99.9) that the samples themselves cannot
    /// show: their largest is only about their `1 − 1/n` quantile. Service latencies are often
    /// close to log-normal; callers that must not under-estimate should take the larger of
    /// this and [`max`](Self::max), or widen the spread ([`log_normal_quantile`]).
    pub fn fitted_quantile(&self, q: f64) -> Option<Duration> {
        let (mean, sd) = self.log_moments()?;
        Some(log_normal_quantile(mean, sd, q))
    }

    /// The `q` quantile (clamped to `[0, 1]`): the value of rank `⌈q·n⌉`, reported as its
    /// bucket's midpoint (never below the observed minimum).
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return None;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let v = bucket_value(i).max(if self.min == u64::MAX { 0 } else { self.min });
                return Some(Duration::from_nanos(v));
            }
        }
        None
    }
}

/// The `q` quantile (clamped to `(0, 1)`) of the log-normal distribution whose logarithm (of
/// nanoseconds) has mean `mean` and standard deviation `sd`.
pub fn log_normal_quantile(mean: f64, sd: f64, q: f64) -> Duration {
    let q = if q.is_nan() {
        0.5
    } else {
        q.clamp(1e-9, 1.0 - 1e-9)
    };
    let ns = (mean + normal_quantile(q) * sd).exp();
    if ns.is_finite() {
        Duration::from_nanos(ns.min(u64::MAX as f64) as u64)
    } else {
        Duration::from_nanos(u64::MAX)
    }
}

/// The standard normal distribution's `p` quantile, for `p` in `(0, 1)`: Acklam's rational
/// approximation (relative error below 1.2e-9), written out from its published coefficients.
fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const LOW: f64 = 0.024_25;
    let tail = |q: f64| {
        let r = (-2.0 * q.ln()).sqrt();
        (((((C[0] * r + C[1]) * r + C[2]) * r + C[3]) * r + C[4]) * r + C[5])
            / ((((D[0] * r + D[1]) * r + D[2]) * r + D[3]) * r + 1.0)
    };
    if p < LOW {
        tail(p)
    } else if p > 1.0 - LOW {
        -tail(1.0 - p)
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// A cached quantile of a [`LatencyHistogram`], recomputed at most once per `refresh`.
///
/// Lock-free: the value and the next refresh time are atomics; one caller wins the refresh with
/// a compare-and-swap and the others keep reading the previous value.
#[derive(Debug)]
pub struct QuantileCache {
    q: f64,
    refresh_nanos: u64,
    origin: Origin,
    /// Cached nanoseconds; `u64::MAX` = no value.
    value: AtomicU64,
    /// Nanoseconds since `origin` after which to recompute.
    next: AtomicU64,
}

impl QuantileCache {
    /// A cache of the `q` quantile, refreshed every `refresh`.
    pub fn new(q: f64, refresh: Duration, now: Instant) -> Self {
        Self {
            q,
            refresh_nanos: nanos(refresh).max(1),
            origin: Origin::new(now),
            value: AtomicU64::new(u64::MAX),
            next: AtomicU64::new(0),
        }
    }

    /// The quantile this cache tracks.
    pub fn q(&self) -> f64 {
        self.q
    }

    /// The cached quantile, recomputed from `hist` if the refresh period has passed.
    pub fn get(&self, hist: &LatencyHistogram, now: Instant) -> Option<Duration> {
        let t = self.origin.nanos(now);
        let next = self.next.load(Ordering::Relaxed);
        if t >= next
            && self
                .next
                .compare_exchange(
                    next,
                    t.saturating_add(self.refresh_nanos),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            let v = hist.quantile(self.q, now).map_or(u64::MAX, |d| {
                u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1)
            });
            self.value.store(v, Ordering::Release);
        }
        let v = self.value.load(Ordering::Acquire);
        (v != u64::MAX).then(|| Duration::from_nanos(v))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn normal_quantiles_match_the_tables() {
        for (p, z) in [
            (0.5, 0.0),
            (0.975, 1.959_964),
            (0.025, -1.959_964),
            (0.99, 2.326_348),
            (0.999, 3.090_232),
            (0.001, -3.090_232),
            (0.999_99, 4.264_891),
        ] {
            assert!(
                (normal_quantile(p) - z).abs() < 1e-5,
                "{p}: {}",
                normal_quantile(p)
            );
        }
    }

    /// `n` latencies at evenly spaced quantiles of a log-normal with median `median_ms` and
    /// log standard deviation `sigma`.
    fn log_normal(h: &LatencyHistogram, now: Instant, n: usize, median_ms: f64, sigma: f64) {
        for i in 0..n {
            let z = normal_quantile((i as f64 + 0.5) / n as f64);
            let ms = median_ms * (sigma * z).exp();
            h.record(Duration::from_secs_f64(ms / 1e3), now);
        }
    }

    #[test]
    fn a_log_normal_fit_finds_the_far_tail_from_twenty_samples() {
        let now = Instant::now();
        let h = LatencyHistogram::new(now);
        // Median 10 ms, p99 50 ms: sigma = ln 5 / 2.326; the true p99.9 is about 84 ms.
        let sigma = 5f64.ln() / 2.326_348;
        log_normal(&h, now, 20, 10.0, sigma);
        let snap = h.snapshot(now);
        let truth = 10.0 * (sigma * 3.090_232).exp();
        let fitted = snap.fitted_quantile(0.999).unwrap().as_secs_f64() * 1e3;
        assert!(
            (fitted / truth - 1.0).abs() < 0.15,
            "{fitted} ms vs {truth} ms"
        );
        // The samples alone cannot show it: their largest is near their p97.5.
        let max = snap.max().unwrap().as_secs_f64() * 1e3;
        assert!(max < 0.6 * truth, "{max} ms");
        assert_eq!(
            LatencyHistogram::new(now)
                .snapshot(now)
                .fitted_quantile(0.999),
            None
        );
    }

    #[test]
    fn minus_removes_the_other_histograms_samples() {
        let now = Instant::now();
        let all = LatencyHistogram::new(now);
        let censored = LatencyHistogram::with_config(all.config(), now).unwrap();
        assert_eq!(censored.config(), HistogramConfig::default());
        for ms in [5, 6, 7, 300, 300] {
            all.record(Duration::from_millis(ms), now);
        }
        censored.record(Duration::from_millis(300), now);
        censored.record(Duration::from_millis(300), now);
        let ok = all.snapshot(now).minus(&censored.snapshot(now));
        assert_eq!(ok.count(), 3);
        let max = ok.max().unwrap();
        assert!(
            max >= Duration::from_millis(7) && max < Duration::from_millis(8),
            "{max:?}"
        );
        // Never below zero.
        assert_eq!(censored.snapshot(now).minus(&all.snapshot(now)).count(), 0);
    }

    #[test]
    fn divisor_matches_hardware_division() {
        use crate::rng::{Random, SplitMix64};
        let mut rng = SplitMix64::new(11);
        let edges = [
            0,
            1,
            2,
            3,
            63,
            64,
            999_999_999,
            u64::MAX / 2,
            u64::MAX - 1,
            u64::MAX,
        ];
        let check = |n: u64, d: u64| {
            let div = Divisor::new(d);
            assert_eq!(div.div(n), n / d, "{n} / {d}");
            assert_eq!(div.rem(n), n % d, "{n} % {d}");
        };
        for &n in &edges {
            for &d in &edges[1..] {
                check(n, d);
            }
        }
        for _ in 0..100_000 {
            let n = rng.next_u64() >> (rng.next_u64() % 64);
            let d = (rng.next_u64() >> (rng.next_u64() % 64)).max(1);
            check(n, d);
            check(n, d % 64 + 1);
        }
    }

    #[test]
    fn buckets_are_monotone_and_tight() {
        let mut prev = 0;
        for i in 0..BUCKETS {
            let (lo, w) = bucket_bounds(i);
            assert!(lo >= prev, "bucket {i}");
            assert_eq!(bucket_of(lo), i);
            assert_eq!(bucket_of(lo + w - 1), i);
            if lo >= SUB {
                assert!(w * 32 <= lo, "bucket {i} too wide");
            }
            prev = lo + w;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert!(bucket_bounds(BUCKETS - 1).0 > 100_000_000_000);
    }

    #[test]
    fn window_forgets_old_samples() {
        let t0 = Instant::now();
        let h = LatencyHistogram::new(t0);
        for _ in 0..100 {
            h.record(Duration::from_millis(500), t0);
        }
        assert_eq!(h.count(t0 + Duration::from_secs(9)), 100);
        // Past the window the old sub-window is out of range even before it is reused.
        assert_eq!(h.count(t0 + Duration::from_secs(10)), 0);
        h.record(Duration::from_millis(5), t0 + Duration::from_secs(11));
        let q = h.quantile(0.5, t0 + Duration::from_secs(11)).unwrap();
        assert!(q < Duration::from_millis(6));
        assert_eq!(
            h.min(t0 + Duration::from_secs(11)),
            Some(Duration::from_millis(5))
        );
    }

    #[test]
    fn rotation_reuses_slots() {
        let t0 = Instant::now();
        let h = LatencyHistogram::new(t0);
        for s in 0..40u64 {
            let now = t0 + Duration::from_millis(s * 500);
            h.record(Duration::from_millis(10 + s), now);
        }
        let now = t0 + Duration::from_millis(39 * 500);
        // Epochs 4..=7 (10 s .. 20 s) are live: samples 20..=39.
        assert_eq!(h.count(now), 20);
        assert!(h.min(now).unwrap() >= Duration::from_millis(30));
    }

    #[test]
    fn recent_snapshot_sees_only_the_newest_sub_windows() {
        let t0 = Instant::now();
        let h = LatencyHistogram::new(t0); // 4 x 2.5 s
        for s in 0..10u64 {
            // One sample per second, 1 ms, 2 ms, ... 10 ms.
            h.record(Duration::from_millis(s + 1), t0 + Duration::from_secs(s));
        }
        let now = t0 + Duration::from_secs(9);
        // Epoch 3 (7.5 s ..) holds the samples at 8 s and 9 s.
        let cur = h.snapshot_recent(now, 1);
        assert_eq!(cur.count(), 2);
        assert_eq!(cur.min(), Some(Duration::from_millis(9)));
        assert_eq!(h.snapshot_recent(now, 2).count(), 5);
        assert_eq!(h.snapshot_recent(now, 0).count(), 0);
        assert_eq!(h.snapshot_recent(now, 99).count(), h.count(now));
        assert_eq!(h.count(now), 10);
    }

    #[test]
    fn concurrent_first_records_all_count() {
        let t0 = Instant::now();
        let h = LatencyHistogram::new(t0);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let h = &h;
                s.spawn(move || {
                    for i in 0..250 {
                        h.record(Duration::from_micros(1 + t * 250 + i), t0);
                    }
                });
            }
        });
        assert_eq!(h.count(t0), 1000);
        assert_eq!(h.min(t0), Some(Duration::from_micros(1)));
    }

    #[test]
    fn invalid_config() {
        let now = Instant::now();
        let e = LatencyHistogram::with_config(
            HistogramConfig {
                window: Duration::from_secs(1),
                sub_windows: 0,
            },
            now,
        )
        .unwrap_err();
        assert_eq!(e.field(), "sub_windows");
        let e = LatencyHistogram::with_config(
            HistogramConfig {
                window: Duration::from_micros(10),
                sub_windows: 4,
            },
            now,
        )
        .unwrap_err();
        assert_eq!(e.field(), "window");
    }

    #[test]
    fn cache_refreshes_on_schedule() {
        let t0 = Instant::now();
        let h = LatencyHistogram::new(t0);
        let c = QuantileCache::new(0.5, Duration::from_millis(100), t0);
        assert_eq!(c.get(&h, t0), None);
        h.record(Duration::from_millis(7), t0);
        assert_eq!(c.get(&h, t0 + Duration::from_millis(50)), None);
        let v = c.get(&h, t0 + Duration::from_millis(100)).unwrap();
        assert!(v.abs_diff(Duration::from_millis(7)) < Duration::from_micros(200));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! Loom models of recording, rotation and reading. Under loom the layout shrinks to 8
    //! buckets (see `SUB_BITS`), so these values land in distinct buckets: 1 ns → 1, 2 ns → 2,
    //! 3 ns → 3, 4 ns → 4, 7 ns → 5.
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    const SEC: Duration = Duration::from_secs(1);

    /// Two sub-windows of 1 s: epoch `e` lives in slot `e % 2`.
    fn two_slots(t0: Instant) -> Arc<LatencyHistogram> {
        let cfg = HistogramConfig {
            window: 2 * SEC,
            sub_windows: 2,
        };
        Arc::new(LatencyHistogram::with_config(cfg, t0).unwrap())
    }

    fn ns(v: u64) -> Duration {
        Duration::from_nanos(v)
    }

    fn count_in(snap: &Snapshot, v: u64) -> u64 {
        snap.counts[bucket_of(v)]
    }

    #[test]
    fn loom_buckets_are_distinct() {
        let b: Vec<usize> = [1, 2, 3, 4, 7].into_iter().map(bucket_of).collect();
        assert_eq!(b, [1, 2, 3, 4, 5]);
    }

    // Two recorders race to open a never-used slot: the loser records into the slot the winner
    // tagged, so both samples count.
    #[test]
    fn loom_first_claim_loses_nothing() {
        loom::model(|| {
            let t0 = Instant::now();
            let h = two_slots(t0);
            let h1 = h.clone();
            let a = thread::spawn(move || h1.record(ns(1), t0));
            let h2 = h.clone();
            let b = thread::spawn(move || h2.record(ns(2), t0));
            a.join().unwrap();
            b.join().unwrap();
            assert_eq!(h.count(t0), 2, "a first-claim sample was dropped");
            assert_eq!(h.min(t0), Some(ns(1)));
        });
    }

    // A recorder in a live sub-window races a rotation of the other slot: neither sample is
    // lost, and the rotated slot holds exactly the rotating recorder's sample.
    #[test]
    fn loom_live_recorder_races_rotation() {
        loom::model(|| {
            let t0 = Instant::now();
            let (now1, now2) = (t0 + SEC, t0 + 2 * SEC);
            let h = two_slots(t0);
            h.record(ns(1), t0); // epoch 0, slot 0
            h.record(ns(2), now1); // epoch 1, slot 1
            let h1 = h.clone();
            let live = thread::spawn(move || h1.record(ns(2), now1));
            let h2 = h.clone();
            // Epoch 2 reuses slot 0 and clears epoch 0.
            let rotate = thread::spawn(move || h2.record(ns(3), now2));
            live.join().unwrap();
            rotate.join().unwrap();

            let snap = h.snapshot(now2);
            assert_eq!(count_in(&snap, 1), 0, "epoch 0 left the window");
            assert_eq!(count_in(&snap, 2), 2, "a live-slot increment was lost");
            assert_eq!(
                count_in(&snap, 3),
                1,
                "the rotating recorder lost its sample"
            );
            assert_eq!(snap.count(), 3);
            assert_eq!(h.count(now2), 3);
            assert_eq!(h.min(now2), Some(ns(2)));
        });
    }

    /// Epoch 0 holds {1 ns, 2 ns} in slot 0 and epoch 1 holds {7 ns} in slot 1; `read` runs on
    /// a spawned thread at epoch 1 while the model's thread opens epoch 2 with 4 ns, rotating
    /// slot 0. (Reading on the spawned thread matters: with the roles swapped, loom's bounded
    /// search never schedules the rotation between two consecutive loads of the reader.)
    fn rotating_under_reader(
        read: impl Fn(&LatencyHistogram, Instant) + Sync + Send + Clone + 'static,
    ) {
        loom::model(move || {
            let t0 = Instant::now();
            let (now1, now2) = (t0 + SEC, t0 + 2 * SEC);
            let h = two_slots(t0);
            h.record(ns(1), t0);
            h.record(ns(2), t0);
            h.record(ns(7), now1);
            let h1 = h.clone();
            let read = read.clone();
            let reader = thread::spawn(move || read(&h1, now1));
            h.record(ns(4), now2);
            reader.join().unwrap();
            // After the rotation a reader at epoch 1 no longer sees epoch 0.
            assert_eq!(h.count(now1), 1);
            assert_eq!(h.snapshot(now2).count(), 2);
        });
    }

    // A reader still at epoch 1 races the rotation of slot 0 from epoch 0 to epoch 2: it must
    // count epoch 0 whole or not at all, and never any epoch-2 data (4 ns).
    #[test]
    fn loom_snapshot_never_sees_a_torn_epoch() {
        rotating_under_reader(|h, now1| {
            let snap = h.snapshot(now1);
            assert_eq!(count_in(&snap, 4), 0, "reader at epoch 1 saw epoch-2 data");
            assert_eq!(count_in(&snap, 7), 1, "live epoch 1 lost");
            let old = (count_in(&snap, 1), count_in(&snap, 2));
            assert!(old == (1, 1) || old == (0, 0), "torn epoch 0: {old:?}");
            assert_eq!(snap.count(), 1 + old.0 + old.1);
            let min = snap.min();
            assert!(min == Some(ns(1)) && old == (1, 1) || min == Some(ns(7)) && old == (0, 0));
        });
    }

    #[test]
    fn loom_count_never_sees_a_torn_epoch() {
        rotating_under_reader(|h, now1| {
            let n = h.count(now1);
            assert!(n == 1 || n == 3, "count saw a torn epoch: {n}");
        });
    }

    #[test]
    fn loom_min_never_sees_a_torn_epoch() {
        rotating_under_reader(|h, now1| {
            let min = h.min(now1);
            assert!(
                min == Some(ns(1)) || min == Some(ns(7)),
                "min saw a torn epoch: {min:?}"
            );
        });
    }

    // Two recorders race to open epoch 2 in slot 0 while a reader at epoch 2 reads it. The
    // reader sees a prefix of epoch 2's samples and never a leftover of epoch 0; at least the
    // recorder that won the rotation keeps its sample.
    #[test]
    fn loom_racing_rotations_and_reader() {
        loom::model(|| {
            let t0 = Instant::now();
            let now2 = t0 + 2 * SEC;
            let h = two_slots(t0);
            h.record(ns(1), t0);
            let h1 = h.clone();
            let a = thread::spawn(move || h1.record(ns(3), now2));
            let h2 = h.clone();
            let b = thread::spawn(move || h2.record(ns(4), now2));

            let snap = h.snapshot(now2);
            assert_eq!(count_in(&snap, 1), 0, "reader saw the cleared epoch");
            assert!(snap.count() <= 2);
            a.join().unwrap();
            b.join().unwrap();

            let snap = h.snapshot(now2);
            assert_eq!(count_in(&snap, 1), 0);
            let n = snap.count();
            assert!(n == 1 || n == 2, "both samples lost: {n}");
            assert_eq!(h.count(now2), n);
        });
    }
}
