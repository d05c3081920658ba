//! Nanoseconds since an origin, read in a few instructions.
//!
//! The policies keep their state in atomics as nanoseconds since the instant they were built,
//! so every request turns its `now` into such a number. Done through
//! [`Instant::saturating_duration_since`] that is a call into std's `Timespec` subtraction and a
//! `Duration` normalisation: on x86-64 about a hundred instructions, as much as the rest of
//! an adaptive timeout's decision.
//!
//! An [`Instant`] cannot be read as a number, but it implements [`Hash`], derived over the
//! platform's representation: on Unix a `timespec` (whole seconds, then nanoseconds below one
//! second), and the same shape elsewhere. [`Origin`] hashes `now` into a hasher that just keeps
//! the values it is given, and combines them as `secs × 10⁹ + nanos`. That is inlined into a
//! multiply and an add.
//!
//! Nothing about that shape is promised by std, so [`Origin::new`] checks it: two instants a
//! known, odd distance apart must come out exactly that far apart. If they do not (another
//! platform, another std), every read takes the `Duration` path instead; the results are the
//! same either way, only slower. Each read also checks that it saw exactly one seconds value and
//! one in-range nanoseconds value.
//!
//! ```
//! use damper_core::clock::Origin;
//! use std::time::Duration;
//! use tokio::time::Instant;
//!
//! let start = Instant::now();
//! let origin = Origin::new(start);
//! assert_eq!(origin.nanos(start + Duration::from_millis(1500)), 1_500_000_000);
//! // Instants before the origin saturate to zero.
//! assert_eq!(origin.nanos(start.checked_sub(Duration::from_secs(1)).unwrap_or(start)), 0);
//! ```

use std::hash::{Hash, Hasher};
use std::time::Duration;
use tokio::time::Instant;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// The instant a policy counts from, and a fast way to count from it. See the
/// [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    at: Instant,
    /// `at` read as `secs × 10⁹ + nanos`, if reading instants that way was checked to work.
    raw: Option<u64>,
}

/// A hasher that keeps the first two integers it is given and notes anything else.
#[derive(Default)]
struct Fields {
    values: [u64; 2],
    count: u8,
    other: bool,
}

impl Fields {
    #[inline(always)]
    fn push(&mut self, v: u64) {
        if let Some(slot) = self.values.get_mut(usize::from(self.count)) {
            *slot = v;
            self.count += 1;
        } else {
            self.other = true;
        }
    }
}

impl Hasher for Fields {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, _bytes: &[u8]) {
        self.other = true;
    }

    #[inline(always)]
    fn write_u64(&mut self, v: u64) {
        self.push(v);
    }

    #[inline(always)]
    fn write_u32(&mut self, v: u32) {
        self.push(u64::from(v));
    }
}

/// `i` as `secs × 10⁹ + nanos`, if its hash is exactly one seconds value then one nanoseconds
/// value below one second.
#[inline(always)]
fn raw(i: Instant) -> Option<u64> {
    let mut f = Fields::default();
    i.hash(&mut f);
    let [secs, sub] = f.values;
    if f.other || f.count != 2 || sub >= NANOS_PER_SEC {
        return None;
    }
    secs.checked_mul(NANOS_PER_SEC)?.checked_add(sub)
}

/// `d` in nanoseconds, saturating at `u64::MAX` (584 years): the unit the policies keep their
/// durations in.
#[inline]
pub fn nanos(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(NANOS_PER_SEC)
        .saturating_add(u64::from(d.subsec_nanos()))
}

impl Origin {
    /// Counts from `at`.
    pub fn new(at: Instant) -> Self {
        // An odd distance with both a seconds and a nanoseconds part catches a swapped order,
        // another unit or another base.
        let probe = Duration::new(1, 250_000_003);
        let raw = match (raw(at), at.checked_add(probe).and_then(raw)) {
            (Some(a), Some(b)) if b.checked_sub(a) == Some(nanos(probe)) => Some(a),
            _ => None,
        };
        Self { at, raw }
    }

    /// The instant counted from.
    pub fn instant(&self) -> Instant {
        self.at
    }

    /// Whether reads take the fast path (see the [module docs](self)).
    pub fn is_fast(&self) -> bool {
        self.raw.is_some()
    }

    /// Nanoseconds from the origin to `now`; zero if `now` is earlier, `u64::MAX` if the gap
    /// does not fit (585 years).
    #[inline]
    pub fn nanos(&self, now: Instant) -> u64 {
        if let Some(origin) = self.raw
            && let Some(now) = raw(now)
        {
            return now.saturating_sub(origin);
        }
        self.slow(now)
    }

    #[cold]
    #[inline(never)]
    fn slow(&self, now: Instant) -> u64 {
        nanos(now.saturating_duration_since(self.at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_is_taken_here() {
        // Not a promise of std, but true of every platform this is built for: if this fails,
        // the fast path silently fell back and the benchmarks regress.
        assert!(Origin::new(Instant::now()).is_fast());
    }

    #[test]
    fn fast_and_slow_paths_agree() {
        let at = Instant::now();
        let o = Origin::new(at);
        for ns in [
            0u64,
            1,
            999,
            999_999_999,
            1_000_000_000,
            1_000_000_001,
            1_999_999_999,
            86_400_000_000_007,
        ] {
            let now = at + Duration::from_nanos(ns);
            assert_eq!(o.nanos(now), ns, "{ns} ns");
            assert_eq!(o.slow(now), ns, "{ns} ns, slow path");
        }
    }

    #[test]
    fn earlier_instants_saturate() {
        let at = Instant::now() + Duration::from_secs(10);
        let o = Origin::new(at);
        assert_eq!(o.nanos(at - Duration::from_nanos(1)), 0);
        assert_eq!(o.nanos(at - Duration::from_secs(5)), 0);
        assert_eq!(o.instant(), at);
    }

    #[test]
    fn a_hash_of_another_shape_is_refused() {
        let mut f = Fields::default();
        (1u64, 2u64, 3u64).hash(&mut f);
        assert!(f.other);
        let mut f = Fields::default();
        1u8.hash(&mut f);
        assert!(f.other);
    }

    #[tokio::test(start_paused = true)]
    async fn follows_paused_time() {
        let o = Origin::new(Instant::now());
        tokio::time::advance(Duration::from_millis(2_345)).await;
        assert_eq!(o.nanos(Instant::now()), 2_345_000_000);
    }
}
