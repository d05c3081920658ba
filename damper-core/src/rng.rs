//! Small, seedable random sources for jitter.
//!
//! damper never reads an entropy source on its own: a layer is given a seed (or seeds itself from
//! the clock once, where documented), so runs are reproducible for a seed.

use std::sync::atomic::{AtomicU64, Ordering};

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A source of uniformly distributed random numbers.
pub trait Random {
    /// The next 64 random bits.
    fn next_u64(&mut self) -> u64;

    /// A uniform float in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        // 53 high bits -> [0, 1)
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

impl<R: Random + ?Sized> Random for &mut R {
    fn next_u64(&mut self) -> u64 {
        (**self).next_u64()
    }
}

/// A seed for a layer built without one: the wall clock's nanoseconds mixed with a
/// process-wide count of the seeds handed out, so two layers built in the same instant still
/// draw apart. Read once, when a layer is built.
pub fn clock_seed() -> u64 {
    static HANDED_OUT: AtomicU64 = AtomicU64::new(0);
    let n = HANDED_OUT.fetch_add(1, Ordering::Relaxed);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x5eed, |d| d.as_nanos() as u64);
    clock ^ n.wrapping_mul(GOLDEN_GAMMA)
}

/// SplitMix64: a tiny, fast, seedable generator (not cryptographic).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator for `seed`; the same seed gives the same sequence.
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }
}

impl Random for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix(self.state)
    }
}

/// A SplitMix64 whose state is one atomic: shared by all clones of a layer without a lock.
///
/// Each draw is a single `fetch_add`, so concurrent callers always get distinct values.
#[derive(Debug)]
pub struct AtomicRng {
    state: AtomicU64,
}

impl AtomicRng {
    /// A shared generator for `seed`.
    pub const fn new(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&self) -> u64 {
        mix(self
            .state
            .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
            .wrapping_add(GOLDEN_GAMMA))
    }

    /// A uniform float in `[0, 1)`.
    pub fn next_f64(&self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

impl Random for &AtomicRng {
    fn next_u64(&mut self) -> u64 {
        AtomicRng::next_u64(self)
    }
}

/// Whether to keep this event, keeping one in `2^shift` (`shift` in `0..=63`; 0 keeps all).
///
/// For thinning a stream of requests on the hot path: the calling thread steps its own
/// golden-ratio (Weyl) sequence, `n × 0x9E37…7C15 mod 2⁶⁴`, and keeps the event when the top
/// `shift` bits are zero. The kept events are spread evenly through the thread's stream, one in
/// `2^shift` over any stretch, and independently of any pattern in it: for every period `p`
/// and residue `r`, the events numbered `r mod p` are kept at the same rate (the sequence
/// `n × φ` is equidistributed along every arithmetic progression), so a periodic mix of
/// requests is sampled in its proportions, which a counter (`n mod 2^shift == 0`) does not do.
/// An add, a shift and a compare on a thread-local word: no shared state.
///
/// Every thread starts from the same state, so a run on a fresh thread is reproducible (the
/// lab runs each simulation on one).
///
/// ```
/// use damper_core::rng::thread_keep;
/// assert!(thread_keep(0));
/// let kept = (0..1 << 12).filter(|_| thread_keep(4)).count();
/// assert!((250..=262).contains(&kept), "{kept}");
/// ```
#[inline]
pub fn thread_keep(shift: u32) -> bool {
    use std::cell::Cell;
    thread_local!(static STATE: Cell<u64> = const { Cell::new(0) });
    if shift == 0 {
        return true;
    }
    let x = STATE.with(|s| {
        let x = s.get().wrapping_add(GOLDEN_GAMMA);
        s.set(x);
        x
    });
    x >> (64 - shift.min(63)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let shared = AtomicRng::new(7);
        let mut c = SplitMix64::new(7);
        assert_eq!(shared.next_u64(), c.next_u64());
    }

    #[test]
    fn floats_are_in_unit_interval() {
        let mut r = SplitMix64::new(1);
        let mut sum = 0.0;
        for _ in 0..10_000 {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x));
            sum += x;
        }
        let mean = sum / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn thread_keep_keeps_one_in_two_to_the_shift_of_every_residue_class() {
        std::thread::spawn(|| {
            for shift in [1u32, 3, 6] {
                // Events in 12 interleaved classes (a periodic mix of 12 kinds of request).
                let mut kept = [0u32; 12];
                let n = 12 << 14;
                for i in 0..n {
                    if thread_keep(shift) {
                        kept[i % 12] += 1;
                    }
                }
                let expected = f64::from((n / 12) as u32) / f64::from(1u32 << shift);
                for (class, &k) in kept.iter().enumerate() {
                    let k = f64::from(k);
                    assert!(
                        (k - expected).abs() <= 0.02 * expected + 2.0,
                        "shift {shift}, class {class}: {k} kept, {expected} expected"
                    );
                }
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn every_thread_starts_from_the_same_state() {
        let run = || {
            std::thread::spawn(|| (0..64).map(|_| thread_keep(3)).collect::<Vec<_>>())
                .join()
                .unwrap()
        };
        assert_eq!(run(), run());
    }
}
