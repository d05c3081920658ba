//! Property tests of `Backoff`: every delay lies in `[0, max]` (and in its jitter's own range)
//! for every configuration the builder accepts, and a seed fixes the whole sequence.

use damper_core::backoff::{Backoff, Jitter};
use damper_core::rng::{AtomicRng, SplitMix64};
use proptest::prelude::*;
use std::time::Duration;

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..=10_000_000_000).prop_map(Duration::from_nanos),
        (0u64..=86_400 * 365, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        Just(Duration::MAX),
        Just(Duration::ZERO),
    ]
}

fn jitter() -> impl Strategy<Value = Jitter> {
    prop::sample::select(vec![
        Jitter::Full,
        Jitter::Decorrelated,
        Jitter::Equal,
        Jitter::None,
    ])
}

/// Any configuration the builder accepts.
fn backoff() -> impl Strategy<Value = Backoff> {
    (
        duration(),
        duration(),
        prop_oneof![Just(1.0f64), 1.0f64..=4.0, 1.0f64..=1000.0],
        jitter(),
    )
        .prop_filter_map("min > max or max = 0", |(a, b, multiplier, jitter)| {
            let (min, max) = if a <= b { (a, b) } else { (b, a) };
            Backoff::builder()
                .min(min)
                .max(max)
                .multiplier(multiplier)
                .jitter(jitter)
                .build()
                .ok()
        })
}

fn retry() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..=12, 0u32..=100, any::<u32>()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn delays_stay_within_zero_and_max(
        b in backoff(),
        retry in retry(),
        previous in duration(),
        seed: u64,
    ) {
        let mut rng = SplitMix64::new(seed);
        let d = b.delay(retry, previous, &mut rng);
        prop_assert!(d <= b.max(), "{:?} > max {:?} ({:?})", d, b.max(), b);
        let ceiling = b.ceiling(retry);
        prop_assert!(ceiling <= b.max());
        match b.jitter() {
            Jitter::None => prop_assert_eq!(d, ceiling),
            Jitter::Full => prop_assert!(d <= ceiling),
            Jitter::Equal => prop_assert!(d >= ceiling / 2 && d <= ceiling),
            Jitter::Decorrelated => prop_assert!(d >= b.min()),
        }
    }

    /// A whole retry sequence, feeding each delay back as `previous`, is a function of the
    /// seed: the same seed gives the same delays, through `SplitMix64` or a shared `AtomicRng`.
    #[test]
    fn same_seed_same_delays(b in backoff(), seed: u64, len in 1usize..20) {
        let run = |rng: &mut dyn FnMut(u32, Duration) -> Duration| {
            let mut previous = Duration::ZERO;
            (1..=len as u32)
                .map(|retry| {
                    previous = rng(retry, previous);
                    previous
                })
                .collect::<Vec<_>>()
        };
        let mut a = SplitMix64::new(seed);
        let first = run(&mut |r, p| b.delay(r, p, &mut a));
        let mut c = SplitMix64::new(seed);
        let second = run(&mut |r, p| b.delay(r, p, &mut c));
        let shared = AtomicRng::new(seed);
        let third = run(&mut |r, p| b.delay(r, p, &shared));
        prop_assert!(first.iter().all(|d| *d <= b.max()));
        prop_assert_eq!(&first, &second);
        prop_assert_eq!(&first, &third);
    }

    /// The un-jittered ceiling never shrinks from one retry to the next.
    #[test]
    fn ceiling_is_monotone(b in backoff(), retry in 0u32..2000) {
        prop_assert!(b.ceiling(retry) <= b.ceiling(retry + 1));
    }

    #[test]
    fn builder_rejects_bad_multipliers(
        m in prop_oneof![
            -1e6f64..1.0,
            1000.0f64..1e300,
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
        ]
    ) {
        prop_assume!(m != 1000.0);
        let e = Backoff::builder().multiplier(m).build().unwrap_err();
        prop_assert_eq!(e.field(), "multiplier");
    }
}

/// Different seeds should give different full-jitter sequences (a broken RNG plumbing that
/// ignored the seed would not).
#[test]
fn different_seeds_differ() {
    let b = Backoff::default();
    let seq = |seed| {
        let mut rng = SplitMix64::new(seed);
        (1..=8)
            .map(|r| b.delay(r, Duration::ZERO, &mut rng))
            .collect::<Vec<_>>()
    };
    assert_ne!(seq(1), seq(2));
    assert_eq!(seq(1), seq(1));
}
