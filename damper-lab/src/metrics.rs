//! The report's metrics, computed from a run's per-second series. Pure functions, so they are
//! tested on hand-made series.

use crate::scenario::Scenario;
use crate::sim::RunOutput;
use serde::Serialize;

/// Goodput at or above this share of offered load counts as recovered.
pub const RECOVERED: f64 = 0.95;

/// Width of the bins `recovery_ms` looks at, seconds.
pub const RECOVERY_BIN_S: f64 = 0.1;

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
    /// The worst single second of the trigger window: the largest `attempts ÷ requests` of
    /// the requests born in one of its whole seconds (`null` without a window).
    pub amplification_worst_s: Option<f64>,
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
    /// The slowest recovery over every fault end, in ms, at 100 ms resolution (see
    /// [`recovery_ms_each`]); `null` unless `recovery_ms_status` is `recovered`.
    pub recovery_ms: Option<f64>,
    /// `recovered` (every fault end that could be told recovered), `never` (at least one did
    /// not), `too_late_to_tell` (no fault end left enough of the run to tell); `null` when
    /// nothing ends (no fault and no trigger window).
    pub recovery_ms_status: Option<RecoveryStatus>,
    /// One entry per fault end, in time order.
    pub recovery_ms_each: Vec<RecoveryEnd>,
    /// Breaker state changes (`null` when no breaker reports them).
    pub breaker_transitions: Option<u64>,
    /// Hedge attempts per logical request (`null` when the stack does not hedge).
    pub hedge_extra_load: Option<f64>,
    /// The worst single second of the run: hedges sent in it ÷ requests born in it, over the
    /// seconds with requests (`null` when the stack does not hedge).
    pub hedge_share_worst_s: Option<f64>,
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
    /// Backend attempts ÷ logical requests, of the requests born each second (0 when none).
    pub amplification: Vec<f64>,
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
    /// Hedges sent each second, if the stack hedges.
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

/// `num[s] ÷ den[s]` for each second (0 where `den[s]` is 0).
pub fn per_second(num: &[u64], den: &[u64]) -> Vec<f64> {
    num.iter()
        .zip(den)
        .map(|(n, d)| if *d == 0 { 0.0 } else { *n as f64 / *d as f64 })
        .collect()
}

/// The largest `num[s] ÷ den[s]` over the seconds of `window` (all when `None`) with
/// `den[s] > 0`; `None` when there is no such second.
pub fn worst_second(num: &[u64], den: &[u64], window: Option<(f64, f64)>) -> Option<f64> {
    let r = seconds_of(window, num.len().min(den.len()));
    r.filter(|s| den[*s] > 0)
        .map(|s| num[s] as f64 / den[s] as f64)
        .reduce(f64::max)
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

/// How recovery after one fault end came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryStatus {
    /// Goodput reached ≥ 95% of offered and held.
    Recovered,
    /// It did not, before the run ended or the next fault started.
    Never,
    /// The run ends less than a hold after the fault (and no other fault starts before), so
    /// there is not enough left to tell.
    TooLateToTell,
}

/// Recovery after one fault end.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RecoveryEnd {
    /// When the fault (a failing phase, for flapping) ended, seconds.
    pub fault_end_s: f64,
    /// Milliseconds from then until goodput recovered (`null` unless `recovered`).
    pub ms: Option<f64>,
    /// How it came out.
    pub status: RecoveryStatus,
}

/// The spans where something is wrong, for recovery: the fault windows (flapping expanded,
/// every replica's), overlapping or touching ones merged, in time order; without faults, the
/// trigger window (a load step and back).
pub fn fault_spans(sc: &Scenario) -> Vec<(f64, f64)> {
    let mut spans: Vec<(f64, f64)> = sc.faults.iter().map(|f| (f.start, f.end)).collect();
    if spans.is_empty() {
        spans.extend(sc.window);
    }
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut merged: Vec<(f64, f64)> = Vec::new();
    for (a, z) in spans {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(z),
            _ => merged.push((a, z)),
        }
    }
    merged
}

/// Recovery after each end of `spans` (see [`fault_spans`]), on series of `bin` seconds by
/// arrival time: the time from the end until the first bin from which every bin up to the
/// hold's end has goodput ≥ [`RECOVERED`] × offered (bins with nothing offered pass). The hold
/// ends `hold` seconds after that bin or where the next span starts, whichever comes first, so
/// a flapping fault's healthy phase can recover in time before the next failing phase. Only
/// bins that start at or after the end count. The series cover `duration` seconds: an end
/// whose first hold would not fit in them is `too_late_to_tell`; otherwise an end without such
/// a bin, before the next span starts or the series end, is `never`.
pub fn recovery_ms_each(
    good: &[u64],
    offered: &[u64],
    bin: f64,
    spans: &[(f64, f64)],
    hold: f64,
    duration: f64,
) -> Vec<RecoveryEnd> {
    // Bin edges as whole bins, rounded so that 2.0 / 0.1 is 20, not 19.999….
    let to_bin = |t: f64| (t / bin - 1e-9).ceil().max(0.0) as usize;
    let n = good.len().min(offered.len()).min(to_bin(duration));
    let ok = |b: usize| offered[b] == 0 || good[b] as f64 >= RECOVERED * offered[b] as f64;
    spans
        .iter()
        .enumerate()
        .map(|(i, &(_, end))| {
            let next = spans.get(i + 1).map_or(f64::INFINITY, |s| s.0);
            let status = |status, ms| RecoveryEnd {
                fault_end_s: end,
                ms,
                status,
            };
            if (end + hold).min(next) > duration + 1e-9 {
                return status(RecoveryStatus::TooLateToTell, None);
            }
            let first = to_bin(end);
            let stop = to_bin(next).min(n);
            let found = (first..stop)
                .map(|t| (t, to_bin((t as f64 * bin + hold).min(next))))
                .take_while(|&(_, z)| z <= n)
                .find(|&(t, z)| (t..z.max(t + 1)).all(ok));
            match found {
                Some((t, _)) => status(
                    RecoveryStatus::Recovered,
                    Some(((t as f64 * bin - end) * 1e3).max(0.0).round()),
                ),
                None => status(RecoveryStatus::Never, None),
            }
        })
        .collect()
}

/// `recovery_ms` and its status from the ends: the slowest of the recovered ends, `never` if
/// any end never recovered, `too_late_to_tell` if none could be told, `None` without ends.
pub fn recovery_ms(each: &[RecoveryEnd]) -> (Option<f64>, Option<RecoveryStatus>) {
    if each.is_empty() {
        return (None, None);
    }
    if each.iter().any(|e| e.status == RecoveryStatus::Never) {
        return (None, Some(RecoveryStatus::Never));
    }
    let slowest = each
        .iter()
        .filter_map(|e| e.ms)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    match slowest {
        Some(ms) => (Some(ms), Some(RecoveryStatus::Recovered)),
        None => (None, Some(RecoveryStatus::TooLateToTell)),
    }
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
    let each = recovery_ms_each(
        &d.good_100ms,
        &d.offered_100ms,
        RECOVERY_BIN_S,
        &fault_spans(sc),
        sc.hold,
        sc.duration,
    );
    let (recovery_ms, recovery_ms_status) = recovery_ms(&each);
    let goodput = goodput_ratio(&d.good, &d.offered);
    let metrics = Metrics {
        goodput_ratio: round(goodput),
        goodput_vs_oracle: (oracle_goodput > 0.0).then(|| round(goodput / oracle_goodput)),
        amplification: round(amplification(&d.attempts_by_birth, &d.offered, sc.window)),
        amplification_total: round(amplification(&d.attempts_by_birth, &d.offered, None)),
        amplification_worst_s: sc
            .window
            .and_then(|w| worst_second(&d.attempts_by_birth, &d.offered, Some(w)))
            .map(round),
        p50_ms: quantile_ms(&lat, 0.5),
        p99_ms: quantile_ms(&lat, 0.99),
        p999_ms: quantile_ms(&lat, 0.999),
        recovery_s: recovery.map(round),
        recovered: window_end.map(|_| recovery.is_some()),
        recovery_ms,
        recovery_ms_status,
        recovery_ms_each: each,
        breaker_transitions: out.breaker_transitions,
        hedge_extra_load: out.hedge_extra_load.map(round),
        hedge_share_worst_s: out
            .hedges
            .as_ref()
            .and_then(|h| worst_second(h, &d.offered, None))
            .map(round),
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
        amplification: per_second(&d.attempts_by_birth, &d.offered)
            .into_iter()
            .map(round)
            .collect(),
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
    use crate::model::RunData;

    #[test]
    fn the_worst_second_is_a_maximum_over_the_window() {
        let by_birth = [10, 30, 11, 50, 10];
        let offered = [10, 10, 10, 10, 0];
        // Seconds 1 and 2: the worst is 3.0 (a mean would be 2.05).
        assert_eq!(
            worst_second(&by_birth, &offered, Some((1.0, 3.0))),
            Some(3.0)
        );
        // The window's seconds only: second 3 (5.0) is outside.
        assert_eq!(
            worst_second(&by_birth, &offered, Some((0.0, 2.5))),
            Some(3.0)
        );
        // Seconds with no requests are skipped, not divided by zero.
        assert_eq!(worst_second(&by_birth, &offered, Some((4.0, 5.0))), None);
        assert_eq!(worst_second(&by_birth, &offered, None), Some(5.0));
        assert_eq!(per_second(&by_birth, &offered), [1.0, 3.0, 1.1, 5.0, 0.0]);
    }

    /// A six-second scenario, its first fault (the trigger) over `fault`.
    fn six_seconds(fault: Option<(f64, f64)>) -> Scenario {
        let mut text = String::from(
            "name = \"t\"\nduration_s = 6\n[backend]\nworkers = 4\nmedian_ms = 10\n\
             p99_ms = 50\n[load]\nrate = 10\ndeadline_ms = 500\n",
        );
        if let Some((a, z)) = fault {
            text += &format!("[[faults]]\nstart_s = {a}\nend_s = {z}\nerror_probability = 1.0\n");
        }
        let f = crate::scenario::parse(&text, "t.toml").unwrap();
        crate::scenario::expand(&f, false).remove(0)
    }

    fn hand_made(hedges: Option<Vec<u64>>) -> RunOutput {
        RunOutput {
            data: RunData {
                offered: vec![10, 10, 10, 10, 10, 0],
                good: vec![10; 6],
                offered_100ms: vec![1; 60],
                good_100ms: vec![1; 60],
                attempts: vec![10; 6],
                attempts_by_birth: vec![40, 10, 30, 12, 10, 7],
                false_timeouts_by_second: vec![0; 6],
                ..RunData::default()
            },
            hedges,
            ..RunOutput::default()
        }
    }

    #[test]
    fn summarize_takes_the_worst_second_of_the_trigger_and_of_the_run() {
        let sc = six_seconds(Some((2.0, 4.0)));
        assert_eq!(sc.window, Some((2.0, 4.0)));
        let hedges = vec![0, 5, 2, 9, 1, 3];
        let (m, series) = summarize(&sc, &hand_made(Some(hedges.clone())), 1.0);
        // The trigger's seconds are 2 and 3: their mean is 2.1, their worst 3.0; second 0
        // (4.0) is before the trigger.
        assert_eq!(m.amplification, 2.1);
        assert_eq!(m.amplification_worst_s, Some(3.0));
        // Hedges over the whole run, skipping second 5 (nothing born; 3 ÷ 0): 9 ÷ 10.
        assert_eq!(m.hedge_share_worst_s, Some(0.9));
        assert_eq!(series.amplification, [4.0, 1.0, 3.0, 1.2, 1.0, 0.0]);
        assert_eq!(series.hedges, Some(hedges));
        // A trigger from 2.5 s to 3.5 s covers seconds 2 and 3 whole, as `amplification` does.
        let (m, _) = summarize(&six_seconds(Some((2.5, 3.5))), &hand_made(None), 1.0);
        assert_eq!(m.amplification_worst_s, Some(3.0));
        // A stack that does not hedge has no share; a run without a trigger no worst second.
        assert_eq!(m.hedge_share_worst_s, None);
        let (m, series) = summarize(&six_seconds(None), &hand_made(None), 1.0);
        assert_eq!(m.amplification_worst_s, None);
        assert_eq!(series.hedges, None);
    }

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

    /// 100 ms bins of 100 offered, with `good` per bin given by `f(bin)`.
    fn bins(n: usize, f: impl Fn(usize) -> u64) -> (Vec<u64>, Vec<u64>) {
        ((0..n).map(f).collect(), vec![100; n])
    }

    #[test]
    fn recovery_ms_counts_from_each_end_in_100ms_bins() {
        use RecoveryStatus::*;
        // 30 s in 100 ms bins; a fault from 5 s to 10 s; goodput back from 10.4 s, a dip to
        // 90% at 11.0 s, then good for good.
        let (good, offered) = bins(300, |b| match b {
            50..104 => 0,
            110 => 90,
            _ => 96,
        });
        let each = recovery_ms_each(&good, &offered, 0.1, &[(5.0, 10.0)], 5.0, 30.0);
        assert_eq!(
            each,
            [RecoveryEnd {
                fault_end_s: 10.0,
                ms: Some(1100.0),
                status: Recovered
            }]
        );
        // A 0.5 s hold is met before the dip.
        let each = recovery_ms_each(&good, &offered, 0.1, &[(5.0, 10.0)], 0.5, 30.0);
        assert_eq!(each[0].ms, Some(400.0));
        // An end mid-bin counts from the next bin.
        let each = recovery_ms_each(&good, &offered, 0.1, &[(5.0, 10.35)], 0.5, 30.0);
        assert_eq!(each[0].ms, Some(50.0));
        // Bins with nothing offered do not block.
        let quiet = vec![0; 300];
        let each = recovery_ms_each(&quiet, &quiet, 0.1, &[(5.0, 10.0)], 5.0, 30.0);
        assert_eq!((each[0].status, each[0].ms), (Recovered, Some(0.0)));
        // Never: goodput stays at 90%.
        let (flat, offered) = bins(300, |_| 90);
        let each = recovery_ms_each(&flat, &offered, 0.1, &[(5.0, 10.0)], 5.0, 30.0);
        assert_eq!((each[0].status, each[0].ms), (Never, None));
        // Too late to tell: the run ends 3 s after the fault, less than the 5 s hold, even
        // though goodput is back at once.
        let (fine, offered) = bins(300, |_| 100);
        let each = recovery_ms_each(&fine, &offered, 0.1, &[(5.0, 27.0)], 5.0, 30.0);
        assert_eq!((each[0].status, each[0].ms), (TooLateToTell, None));
        // Exactly one hold left is enough.
        let each = recovery_ms_each(&fine, &offered, 0.1, &[(5.0, 25.0)], 5.0, 30.0);
        assert_eq!((each[0].status, each[0].ms), (Recovered, Some(0.0)));
    }

    #[test]
    fn flapping_recovery_holds_until_the_next_failing_phase() {
        use RecoveryStatus::*;
        // 1 s failing / 2 s healthy from 2 s to 11 s: phases [2,3), [5,6), [8,9); the run is
        // 20 s. After each phase goodput takes 300, 600 and 200 ms to come back.
        let spans = [(2.0, 3.0), (5.0, 6.0), (8.0, 9.0)];
        let (good, offered) = bins(200, |b| match b {
            20..33 | 50..56 | 60..66 | 80..92 => 0,
            _ => 100,
        });
        let each = recovery_ms_each(&good, &offered, 0.1, &spans, 5.0, 20.0);
        let ms: Vec<_> = each.iter().map(|e| e.ms).collect();
        // The hold after the first two phases is cut short by the next phase (2 s, not 5 s).
        assert_eq!(ms, [Some(300.0), Some(600.0), Some(200.0)]);
        assert!(each.iter().all(|e| e.status == Recovered));
        assert_eq!(recovery_ms(&each), (Some(600.0), Some(Recovered)));
        // A healthy phase that never gets back before the next failing phase is `never`, and
        // then so is the whole.
        let (bad, offered) = bins(200, |b| match b {
            20..50 | 80..92 => 0,
            _ => 100,
        });
        let each = recovery_ms_each(&bad, &offered, 0.1, &spans, 5.0, 20.0);
        assert_eq!(each[0].status, Never);
        assert_eq!(each[1].ms, Some(0.0));
        assert_eq!(recovery_ms(&each), (None, Some(Never)));
        // Too-late ends are left out of the maximum; only too-late ends read as such.
        let late = RecoveryEnd {
            fault_end_s: 19.0,
            ms: None,
            status: TooLateToTell,
        };
        let ok = RecoveryEnd {
            fault_end_s: 3.0,
            ms: Some(300.0),
            status: Recovered,
        };
        assert_eq!(recovery_ms(&[ok, late]), (Some(300.0), Some(Recovered)));
        assert_eq!(recovery_ms(&[late]), (None, Some(TooLateToTell)));
        assert_eq!(recovery_ms(&[]), (None, None));
    }

    #[test]
    fn fault_spans_merge_overlaps_and_fall_back_to_the_window() {
        use crate::scenario::{expand, parse};
        let sc = |extra: &str| {
            let text = format!(
                "name = \"s\"\nduration_s = 30\n[backend]\nreplicas = 2\nworkers = 2\nmedian_ms = 10\n\
                 p99_ms = 20\n[load]\nrate = 10\ndeadline_ms = 100\n{extra}"
            );
            expand(&parse(&text, "s").unwrap(), false).remove(0)
        };
        let two = sc(
            "[[faults]]\nstart_s = 12\nend_s = 20\nreplicas = [1]\nhang = true\n\
             [[faults]]\nstart_s = 2\nend_s = 4\nerror_probability = 1.0\n\
             [[faults]]\nstart_s = 10\nend_s = 15\nreplicas = [0]\ncapacity = 0.5\n",
        );
        assert_eq!(fault_spans(&two), [(2.0, 4.0), (10.0, 20.0)]);
        let steps =
            sc("[[load.steps]]\nat_s = 5\nrate = 20\n[[load.steps]]\nat_s = 9\nrate = 10\n");
        assert_eq!(fault_spans(&steps), [(5.0, 9.0)]);
        assert!(fault_spans(&sc("")).is_empty());
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
