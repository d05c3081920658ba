//! Property tests of `LatencyHistogram`: quantiles against the exact quantile of the same
//! samples, and the sliding window against a model of which samples are still inside it.

use damper_core::histogram::{HistogramConfig, LatencyHistogram, QuantileCache};
use proptest::prelude::*;
use std::time::Duration;
use tokio::time::Instant;

/// The accuracy target.
const MAX_RELATIVE_ERROR: f64 = 0.03;

const MIN_NS: f64 = 1e3; // 1 µs
const MAX_NS: f64 = 1e11; // 100 s

/// The exact `q` quantile: the sample of rank ⌈q·n⌉ (1-based) in sorted order.
fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
    let n = sorted.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1]
}

fn assert_close(got: Duration, want_ns: u64, what: &str) -> Result<(), TestCaseError> {
    let got = got.as_nanos() as f64;
    let want = want_ns as f64;
    let err = (got - want).abs() / want;
    prop_assert!(
        err <= MAX_RELATIVE_ERROR,
        "{what}: got {got} ns, exact {want} ns, relative error {err:.4}"
    );
    Ok(())
}

fn clamp_ns(v: f64) -> u64 {
    v.clamp(MIN_NS, MAX_NS).round() as u64
}

/// Log-uniform over 1 µs ..= 100 s: every decade equally likely.
fn log_uniform() -> impl Strategy<Value = u64> {
    (0.0f64..=1.0).prop_map(|u| clamp_ns(MIN_NS * (MAX_NS / MIN_NS).powf(u)))
}

/// Lognormal with a random median (10 µs .. 1 s) and spread, through Box–Muller.
fn lognormal(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u64>> {
    (
        1e4f64..1e9,
        0.05f64..2.5,
        prop::collection::vec((f64::EPSILON..1.0, 0.0f64..1.0), len),
    )
        .prop_map(|(median, sigma, pairs)| {
            pairs
                .into_iter()
                .map(|(u1, u2)| {
                    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                    clamp_ns(median * (sigma * z).exp())
                })
                .collect()
        })
}

/// Mostly fast with a slow tail: the shape where p99 and p99.9 straddle two modes.
fn bimodal(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u64>> {
    (
        1e3f64..1e6,
        1e8f64..1e11,
        0.001f64..0.1,
        prop::collection::vec((0.0f64..1.0, 0.5f64..1.5), len),
    )
        .prop_map(|(fast, slow, tail, draws)| {
            draws
                .into_iter()
                .map(|(pick, jitter)| clamp_ns(if pick < tail { slow } else { fast } * jitter))
                .collect()
        })
}

/// A handful of distinct values repeated many times (ties at bucket edges).
fn few_values(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(log_uniform(), 1..5).prop_flat_map(move |values| {
        prop::collection::vec(prop::sample::select(values), len.clone())
    })
}

fn samples() -> impl Strategy<Value = Vec<u64>> {
    prop_oneof![
        prop::collection::vec(log_uniform(), 1..1500),
        lognormal(1..1500),
        bimodal(100..2000),
        few_values(1..500),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn quantiles_within_three_percent(samples in samples(), q in 0.0f64..=1.0) {
        let now = Instant::now();
        let h = LatencyHistogram::new(now);
        for &v in &samples {
            h.record(Duration::from_nanos(v), now);
        }
        let mut sorted = samples.clone();
        sorted.sort_unstable();
        let snap = h.snapshot(now);
        prop_assert_eq!(snap.count(), samples.len() as u64);
        prop_assert_eq!(h.count(now), samples.len() as u64);
        prop_assert_eq!(h.min(now), Some(Duration::from_nanos(sorted[0])));
        for p in [0.5, 0.9, 0.99, 0.999, q] {
            let want = exact_quantile(&sorted, p);
            assert_close(snap.quantile(p).unwrap(), want, &format!("q={p}"))?;
            assert_close(h.quantile(p, now).unwrap(), want, &format!("q={p} direct"))?;
        }
        // Never below the smallest sample, and monotone in q.
        let qs = [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0];
        let values: Vec<Duration> = qs.iter().map(|&p| snap.quantile(p).unwrap()).collect();
        prop_assert!(values.windows(2).all(|w| w[0] <= w[1]), "not monotone: {:?}", values);
        prop_assert!(values[0] >= Duration::from_nanos(sorted[0]));
    }

    #[test]
    fn quantile_cache_matches_histogram(samples in samples(), q in 0.01f64..=1.0) {
        let now = Instant::now();
        let h = LatencyHistogram::new(now);
        let cache = QuantileCache::new(q, Duration::from_millis(100), now);
        prop_assert_eq!(cache.get(&h, now), None);
        for &v in &samples {
            h.record(Duration::from_nanos(v), now);
        }
        // Still the empty value until the refresh period has passed.
        prop_assert_eq!(cache.get(&h, now + Duration::from_millis(99)), None);
        let later = now + Duration::from_millis(100);
        prop_assert_eq!(cache.get(&h, later), h.quantile(q, later));
    }
}

/// A sample recorded `at_ms` after the histogram's origin.
#[derive(Debug, Clone, Copy)]
struct Event {
    at_ms: u64,
    latency_ns: u64,
}

/// Window configurations from 40 ms to 10 s, in 1 to 8 sub-windows, and events at
/// nondecreasing times spread over a few windows.
fn timeline() -> impl Strategy<Value = (HistogramConfig, Vec<Event>, u64)> {
    (40u64..=10_000, 1usize..=8).prop_flat_map(|(window_ms, sub_windows)| {
        let config = HistogramConfig {
            window: Duration::from_millis(window_ms),
            sub_windows,
        };
        let step = 0..=window_ms / 2;
        (
            Just(config),
            prop::collection::vec((step.clone(), log_uniform()), 1..300).prop_map(|steps| {
                let mut at_ms = 0;
                steps
                    .into_iter()
                    .map(|(dt, latency_ns)| {
                        at_ms += dt;
                        Event { at_ms, latency_ns }
                    })
                    .collect()
            }),
            0..=2 * window_ms,
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// After every record, and once more a while after the last, the histogram holds exactly
    /// the samples whose sub-window is one of the `sub_windows` most recent ones.
    #[test]
    fn window_forgets_exactly_the_expired_sub_windows(
        (config, events, tail_ms) in timeline(),
        q in 0.01f64..=1.0,
    ) {
        let t0 = Instant::now();
        let h = LatencyHistogram::with_config(config, t0).unwrap();
        let sub_ns = (config.window / config.sub_windows as u32).as_nanos() as u64;
        let epoch = |ms: u64| ms * 1_000_000 / sub_ns;
        let n = config.sub_windows as u64;

        let check = |now_ms: u64, upto: usize| -> Result<(), TestCaseError> {
            let now = t0 + Duration::from_millis(now_ms);
            let cur = epoch(now_ms);
            let mut live: Vec<u64> = events[..upto]
                .iter()
                .filter(|e| epoch(e.at_ms) + n > cur)
                .map(|e| e.latency_ns)
                .collect();
            live.sort_unstable();
            prop_assert_eq!(h.count(now), live.len() as u64, "count at {} ms", now_ms);
            prop_assert_eq!(h.snapshot(now).count(), live.len() as u64);
            if live.is_empty() {
                prop_assert_eq!(h.quantile(q, now), None);
                prop_assert_eq!(h.min(now), None);
            } else {
                prop_assert_eq!(h.min(now), Some(Duration::from_nanos(live[0])));
                assert_close(
                    h.quantile(q, now).unwrap(),
                    exact_quantile(&live, q),
                    &format!("q={q} at {now_ms} ms"),
                )?;
            }
            Ok(())
        };

        for (i, e) in events.iter().enumerate() {
            h.record(Duration::from_nanos(e.latency_ns), t0 + Duration::from_millis(e.at_ms));
            check(e.at_ms, i + 1)?;
        }
        let last = events.last().unwrap().at_ms;
        check(last + tail_ms, events.len())?;
        // A full window after the last sample, nothing is left.
        let gone = (epoch(last) + n) * sub_ns / 1_000_000 + 1;
        prop_assert_eq!(h.count(t0 + Duration::from_millis(gone)), 0);
    }
}

#[test]
fn huge_and_tiny_values_do_not_panic() {
    let now = Instant::now();
    let h = LatencyHistogram::new(now);
    h.record(Duration::ZERO, now);
    h.record(Duration::MAX, now);
    h.record(Duration::from_nanos(1), now);
    assert_eq!(h.count(now), 3);
    assert_eq!(h.min(now), Some(Duration::ZERO));
    assert_eq!(h.quantile(0.0, now), Some(Duration::ZERO));
    assert_eq!(h.quantile(f64::NAN, now), h.quantile(1.0, now));
    assert!(h.quantile(1.0, now).unwrap() > Duration::from_secs(100));
}

/// Several threads recording into one histogram at once (each on its own counter stripe, where
/// the layout has several): every sample is counted once, and the quantiles are those of the
/// union of what the threads recorded.
#[test]
fn concurrent_recorders_lose_nothing() {
    let now = Instant::now();
    let h = LatencyHistogram::new(now);
    let per_thread: Vec<Vec<u64>> = (0..4u64)
        .map(|t| {
            (1..=5_000u64)
                .map(|i| 1_000 + (i * 7_919 + t * 104_729) % 50_000_000)
                .collect()
        })
        .collect();
    std::thread::scope(|s| {
        for values in &per_thread {
            let h = &h;
            s.spawn(move || {
                for &v in values {
                    h.record(Duration::from_nanos(v), now);
                }
            });
        }
    });
    let mut all: Vec<u64> = per_thread.concat();
    all.sort_unstable();
    assert_eq!(h.count(now), all.len() as u64);
    let snap = h.snapshot(now);
    assert_eq!(snap.count(), all.len() as u64);
    assert_eq!(h.min(now), Some(Duration::from_nanos(all[0])));
    for q in [0.5, 0.9, 0.99, 0.999] {
        assert_close(
            snap.quantile(q).unwrap(),
            exact_quantile(&all, q),
            "concurrent",
        )
        .unwrap();
    }
}
