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

/// 64 random bits from the calling thread's own generator (xorshift64*): no shared state, a few
/// instructions, for hot-path decisions such as which requests to sample.
///
/// Every thread starts from the same state. Draws are therefore reproducible for a thread that
/// runs one simulation from its start (the lab runs each on a fresh thread), and two threads
/// draw the same sequence. That is fine for thinning a stream of requests, where what matters
/// is that the choice is independent of the requests, and wrong for anything that needs the
/// threads to differ.
///
/// ```
/// let a = damper_core::rng::thread_u64();
/// let b = damper_core::rng::thread_u64();
/// assert_ne!(a, b);
/// ```
#[inline]
pub fn thread_u64() -> u64 {
    use std::cell::Cell;
    thread_local!(static STATE: Cell<u64> = const { Cell::new(GOLDEN_GAMMA) });
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
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
    fn thread_draws_are_uniform_in_their_top_bits() {
        // The sampler keeps a draw when its top `n` bits are zero: one in 2ⁿ of the draws.
        let n = 1u32 << 16;
        for bits in [1u32, 4, 8] {
            let kept = std::thread::spawn(move || {
                (0..n).filter(|_| thread_u64() >> (64 - bits) == 0).count() as f64
            })
            .join()
            .unwrap();
            let expected = f64::from(n) / f64::from(1u32 << bits);
            assert!(
                (kept - expected).abs() < 5.0 * expected.sqrt() + 1.0,
                "{bits}: {kept}"
            );
        }
    }

    #[test]
    fn every_thread_starts_from_the_same_state() {
        let first = || {
            std::thread::spawn(|| (thread_u64(), thread_u64()))
                .join()
                .unwrap()
        };
        assert_eq!(first(), first());
    }
}
