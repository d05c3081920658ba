//! The report's metrics, computed from a run's per-second series. Pure functions, so they are
//! tested on hand-made series.

use crate::scenario::Scenario;
use crate::sim::RunOutput;
use serde::Serialize;

/// Goodput at or above this share of offered load counts as recovered.
pub const RECOVERED: f64 = 0.95;

/// Per scenario and stack; the JSON names are the report's contract.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// Logical requests that succeeded before their deadline ÷ logical requests.
    pub goodput_ratio: f64,
    /// `goodput_ratio` ÷ the scenario's `oracle_goodput` (`null` when the oracle gets
    /// nothing). Above 1 only where retries beat a clairvoyant client that sends each request
    /// once (independent errors), or within the oracle's approximations.
    pub goodput_vs_oracle: Option<f64>,
    /// Backend attempts ÷ logical requests, for requests born in the trigger window (the whole
    /// run when there is none).
    pub amplification: f64,
    /// Backend attempts ÷ logical requests over the whole run.
    pub amplification_total: f64,
    /// Median latency of successes, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency of successes, ms.
    pub p99_ms: Option<f64>,
    /// 99.9th percentile latency of successes, ms.
    pub p999_ms: Option<f64>,
    /// Seconds from the trigger's end until goodput ≥ 95% of offered, held for the hold time;
    /// `null` if never (or no trigger).
    pub recovery_s: Option<f64>,
    /// Whether goodput recovered after the trigger (`null` without a trigger, or when the run
    /// ends too soon after it to tell).
    pub recovered: Option<bool>,
    /// Breaker state changes (`null` when no breaker reports them).
    pub breaker_transitions: Option<u64>,
    /// Hedge attempts per logical request (`null` when the stack does not hedge).
    pub hedge_extra_load: Option<f64>,
    /// Attempts the client abandoned although the server completed them before the deadline
    /// (and before any other attempt succeeded), ÷ backend attempts.
    pub false_timeout_rate: f64,
    /// Coefficient of variation of the concurrency limit at steady load (`null` without an
    /// adaptive limit): on the load plateau, from 2 s after its step, when the trigger is a
    /// load step (the limit is only in use there); otherwise outside the trigger window.
    pub limit_cv: Option<f64>,
    /// Seconds from a load step until the concurrency limit settles (see [`settle_s`]);
    /// `null` without an adaptive limit, without a load-step trigger, or if it never settles.
    pub limit_settle_s: Option<f64>,
}

/// Per-second series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// Logical requests born each second.
    pub offered: Vec<u64>,
    /// Of those, successes.
    pub goodput: Vec<u64>,
    /// Backend attempts received each second.
    pub attempts: Vec<u64>,
    /// Highest breaker state (0 closed, 1 half-open, 2 open), if reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker_state: Option<Vec<f64>>,
    /// Mean concurrency limit, if reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<Vec<f64>>,
    /// Mean adaptive attempt timeout in ms, if reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<Vec<f64>>,
    /// False timeouts (see `false_timeout_rate`), by the second the server completed them.
    pub false_timeouts: Vec<u64>,
    /// Hedges sent each second, if the scenario hedges.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hedges: Option<Vec<u64>>,
}

/// Successes ÷ offered (1 when nothing was offered).
pub fn goodput_ratio(good: &[u64], offered: &[u64]) -> f64 {
    let o: u64 = offered.iter().sum();
    if o == 0 {
        return 1.0;
    }
    good.iter().sum::<u64>() as f64 / o as f64
}

/// Seconds `[floor(a), ceil(z))` of a window, clamped to `n`.
fn seconds_of(window: Option<(f64, f64)>, n: usize) -> std::ops::Range<usize> {
    match window {
        Some((a, z)) => (a.floor() as usize).min(n)..(z.ceil() as usize).min(n),
        None => 0..n,
    }
}

/// Attempts ÷ logical requests, for requests born in `window` (all when `None`).
pub fn amplification(
    attempts_by_birth: &[u64],
    offered: &[u64],
    window: Option<(f64, f64)>,
) -> f64 {
    let r = seconds_of(window, offered.len().min(attempts_by_birth.len()));
    let o: u64 = offered[r.clone()].iter().sum();
    if o == 0 {
        return 0.0;
    }
    attempts_by_birth[r].iter().sum::<u64>() as f64 / o as f64
}

/// Nearest-rank quantile of sorted microsecond values, in milliseconds.
pub fn quantile_ms(sorted_us: &[u64], q: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    Some(sorted_us[rank - 1] as f64 / 1e3)
}

/// Seconds from `fault_end` until goodput ÷ offered ≥ [`RECOVERED`] holds for `hold` seconds,
/// looking at whole seconds only. `None` if it never does within the series.
pub fn recovery_s(good: &[u64], offered: &[u64], fault_end: f64, hold: f64) -> Option<f64> {
    let n = good.len().min(offered.len());
    let first = fault_end.ceil().max(0.0) as usize;
    let hold = (hold.ceil() as usize).max(1);
    let ok = |s: usize| offered[s] == 0 || good[s] as f64 >= RECOVERED * offered[s] as f64;
    (first..n)
        .take_while(|t| t + hold <= n)
        .find(|&t| (t..t + hold).all(ok))
        .map(|t| t as f64 - fault_end)
}

/// Standard deviation ÷ mean (`None` for fewer than two samples or a zero mean).
pub fn cv(samples: &[f64]) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    if mean == 0.0 {
        return None;
    }
    let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    Some(var.sqrt() / mean)
}

/// Samples taken at steady load: after the first 10% of the run, outside the trigger window.
pub fn steady(samples: &[(f64, f64)], duration: f64, window: Option<(f64, f64)>) -> Vec<f64> {
    samples
        .iter()
        .filter(|(t, _)| *t >= duration * 0.1 && *t <= duration)
        .filter(|(t, _)| window.is_none_or(|(a, z)| *t < a || *t >= z))
        .map(|s| s.1)
        .collect()
}

/// How far from the plateau's level a settled limit may be: ±20%.
pub const SETTLE_BAND: f64 = 0.2;
/// How long the limit must hold within the band to count as settled.
pub const SETTLE_HOLD_S: f64 = 1.0;

/// Seconds from `step` until the limit settles: the earliest sample time `t ≥ step` from which
/// every sample for [`SETTLE_HOLD_S`] is within ±`band` of the plateau's level (the median of
/// the samples from `step + 2 s` to `end`). It says when the limit got there, not that it
/// stayed: `limit_cv` measures that. `None` without samples or if it never does.
pub fn settle_s(samples: &[(f64, f64)], step: f64, end: f64, band: f64) -> Option<f64> {
    let mut plateau = within(samples, (step + 2.0, end));
    if plateau.is_empty() {
        return None;
    }
    plateau.sort_by(f64::total_cmp);
    let level = plateau[plateau.len() / 2];
    let inside = |v: f64| (v - level).abs() <= band * level;
    samples
        .iter()
        .map(|s| s.0)
        .filter(|&t| t >= step && t + SETTLE_HOLD_S <= end)
        .find(|&t| {
            samples
                .iter()
                .filter(|s| s.0 >= t && s.0 < t + SETTLE_HOLD_S)
                .all(|s| inside(s.1))
        })
        .map(|t| t - step)
}

/// Samples taken within `[a, z)`: the steady part of a load plateau.
pub fn within(samples: &[(f64, f64)], (a, z): (f64, f64)) -> Vec<f64> {
    samples
        .iter()
        .filter(|(t, _)| *t >= a && *t < z)
        .map(|s| s.1)
        .collect()
}

fn round(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// The metrics and series of one run; `oracle_goodput` is the scenario's (see
/// [`crate::oracle`]).
pub fn summarize(sc: &Scenario, out: &RunOutput, oracle_goodput: f64) -> (Metrics, Series) {
    let d = &out.data;
    let mut lat = d.latencies_us.clone();
    lat.sort_unstable();
    let attempts: u64 = d.attempts.iter().sum();
    // Recovery is only defined when the run goes on for a hold after the trigger ends.
    let window_end = sc
        .window
        .map(|w| w.1)
        .filter(|end| end + sc.hold <= sc.duration);
    let recovery = window_end.and_then(|end| recovery_s(&d.good, &d.offered, end, sc.hold));
    let goodput = goodput_ratio(&d.good, &d.offered);
    let metrics = Metrics {
        goodput_ratio: round(goodput),
        goodput_vs_oracle: (oracle_goodput > 0.0).then(|| round(goodput / oracle_goodput)),
        amplification: round(amplification(&d.attempts_by_birth, &d.offered, sc.window)),
        amplification_total: round(amplification(&d.attempts_by_birth, &d.offered, None)),
        p50_ms: quantile_ms(&lat, 0.5),
        p99_ms: quantile_ms(&lat, 0.99),
        p999_ms: quantile_ms(&lat, 0.999),
        recovery_s: recovery.map(round),
        recovered: window_end.map(|_| recovery.is_some()),
        breaker_transitions: out.breaker_transitions,
        hedge_extra_load: out.hedge_extra_load.map(round),
        false_timeout_rate: round(if attempts == 0 {
            0.0
        } else {
            d.false_timeouts as f64 / attempts as f64
        }),
        limit_cv: cv(&match sc.plateau {
            Some(p) => within(&out.limit_samples, p),
            None => steady(&out.limit_samples, sc.duration, sc.window),
        })
        .map(round),
        limit_settle_s: match (sc.plateau, sc.window) {
            (Some((_, end)), Some((step, _))) => {
                settle_s(&out.limit_samples, step, end, SETTLE_BAND).map(round)
            }
            _ => None,
        },
    };
    let series = Series {
        offered: d.offered.clone(),
        goodput: d.good.clone(),
        attempts: d.attempts.clone(),
        breaker_state: out.breaker_state.clone(),
        limit: out.limit.clone(),
        timeout_ms: out.timeout_ms.clone(),
        false_timeouts: d.false_timeouts_by_second.clone(),
        hedges: out.hedges.clone(),
    };
    (metrics, series)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goodput_and_amplification_on_hand_made_series() {
        let offered = [10, 10, 10, 10];
        let good = [10, 5, 0, 10];
        assert_eq!(goodput_ratio(&good, &offered), 0.625);
        assert_eq!(goodput_ratio(&[], &[]), 1.0);
        let by_birth = [10, 40, 40, 10];
        assert_eq!(amplification(&by_birth, &offered, None), 2.5);
        // Window [1, 3) covers seconds 1 and 2 only.
        assert_eq!(amplification(&by_birth, &offered, Some((1.0, 3.0))), 4.0);
        // A fractional window widens to whole seconds.
        assert_eq!(amplification(&by_birth, &offered, Some((0.5, 1.5))), 2.5);
    }

    #[test]
    fn quantiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=1000).map(|i| i * 1000).collect(); // 1..1000 ms
        assert_eq!(quantile_ms(&v, 0.5), Some(500.0));
        assert_eq!(quantile_ms(&v, 0.99), Some(990.0));
        assert_eq!(quantile_ms(&v, 0.999), Some(999.0));
        assert_eq!(quantile_ms(&[], 0.5), None);
        assert_eq!(quantile_ms(&[7000], 0.999), Some(7.0));
    }

    #[test]
    fn recovery_needs_the_hold() {
        let offered = [100; 12];
        // Fault ends at 3.0; seconds 3..5 good, 5 dips, 6.. good.
        let good = [100, 0, 0, 96, 97, 90, 95, 100, 100, 100, 100, 100];
        assert_eq!(recovery_s(&good, &offered, 3.0, 3.0), Some(3.0));
        // A hold of 2 s is met right away.
        assert_eq!(recovery_s(&good, &offered, 3.0, 2.0), Some(0.0));
        // A fractional end counts from the next whole second.
        assert_eq!(recovery_s(&good, &offered, 2.5, 2.0), Some(0.5));
        // Never long enough before the series ends.
        assert_eq!(recovery_s(&good, &offered, 3.0, 7.0), None);
        let dead = [0; 12];
        assert_eq!(recovery_s(&dead, &offered, 3.0, 2.0), None);
        // Seconds with nothing offered do not block recovery.
        assert_eq!(recovery_s(&[0, 0, 0], &[0, 0, 0], 0.0, 2.0), Some(0.0));
    }

    #[test]
    fn settle_time_is_when_the_limit_reaches_its_level_and_holds_it() {
        // 100 ms samples; step at 10 s, plateau to 30 s.
        let at = |f: &dyn Fn(f64) -> f64| -> Vec<(f64, f64)> {
            (0..300)
                .map(|i| i as f64 / 10.0)
                .map(|t| (t, f(t)))
                .collect()
        };
        // From 100 down to 20 at 11 s, with a brief pin to 10 at 20 s: settled after 1 s.
        let s = at(&|t| {
            if t < 11.0 {
                100.0
            } else if (20.0..20.5).contains(&t) {
                10.0
            } else {
                20.0
            }
        });
        assert_eq!(settle_s(&s, 10.0, 30.0, 0.2), Some(1.0));
        // A dip within the first second after reaching the level delays it.
        let dip = at(&|t| {
            if t < 11.0 || (11.5..11.6).contains(&t) {
                100.0
            } else {
                20.0
            }
        });
        assert_eq!(
            settle_s(&dip, 10.0, 30.0, 0.2).map(|s| (s * 10.0).round()),
            Some(16.0)
        );
        // Already at its level at the step.
        assert_eq!(settle_s(&at(&|_| 20.0), 10.0, 30.0, 0.2), Some(0.0));
        // Never near the plateau's level for a whole second.
        let saw = at(&|t| {
            if (t * 10.0).round() as i64 % 4 == 0 {
                100.0
            } else {
                20.0
            }
        });
        assert_eq!(settle_s(&saw, 10.0, 30.0, 0.2), None);
        assert_eq!(settle_s(&[], 10.0, 30.0, 0.2), None);
    }

    #[test]
    fn coefficient_of_variation() {
        assert_eq!(cv(&[5.0, 5.0, 5.0]), Some(0.0));
        let c = cv(&[10.0, 20.0]).unwrap(); // mean 15, sd 5
        assert!((c - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(cv(&[1.0]), None);
        assert_eq!(cv(&[0.0, 0.0]), None);
    }

    #[test]
    fn plateau_samples_are_those_inside_it() {
        let samples: Vec<(f64, f64)> = (0..100).map(|i| (f64::from(i) / 10.0, 1.0)).collect();
        // 2.0..=6.9 is 50 samples.
        assert_eq!(within(&samples, (2.0, 7.0)).len(), 50);
    }

    #[test]
    fn steady_samples_skip_warmup_and_window() {
        let samples: Vec<(f64, f64)> = (0..100).map(|i| (f64::from(i) / 10.0, 1.0)).collect();
        let s = steady(&samples, 10.0, Some((4.0, 6.0)));
        // 1.0..=9.9 is 90 samples, minus 4.0..5.9 (20).
        assert_eq!(s.len(), 70);
    }
}
