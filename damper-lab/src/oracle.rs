//! The oracle: the goodput a clairvoyant client would get, derived from the scenario's model
//! (no stack is simulated), as the limit every stack is measured against.
//!
//! The clairvoyant client knows the backend's state at every instant. It sends each request
//! once, only where it can succeed, and never retries; it holds a request back only while every
//! replica that could serve it is busy. The derivation is a fluid model in bins of [`BIN_S`]:
//!
//! - **Offered**: the run's own arrivals, counted per bin (plus, with `[load.impatient]`, the
//!   expected retries of the users whose request *the oracle* failed, see below).
//! - **Replicas**, in each bin, from the fault in force at the bin's midpoint (the same rules as
//!   the model: the first latency/capacity fault on the replica, the error/hang window on it):
//!   `slots` = workers left (`round(workers × capacity)`, at least 1) × bin ÷ mean service time
//!   (the lognormal's mean × `1 − q + q·m` for a multiplier `m` applied with probability `q`);
//!   `pass` = `1 − error_probability` (0 while it hangs). A request sent to a replica fails at
//!   once with probability `1 − pass` (such errors take no worker, as in the model) and
//!   otherwise takes a worker for a service time.
//! - **Fit**: a request that waited `w` before it was served succeeds if its service time fits
//!   in what is left of the deadline: `fit(d − w) = (1 − q)·F(d − w) + q·F((d − w) / m)`, with
//!   `F` the lognormal's distribution function.
//! - **Dispatch**: each bin, the waiting requests are served oldest first (earliest deadline
//!   first, so a backlog left by a capacity dip is served before fresh requests, which can
//!   wait) by the replicas with the best yield `pass × fit(d)` first, each up to its slots. A
//!   waiting request goes to a replica only while at least [`ELIGIBLE`] (99%) of what fits in
//!   a whole deadline there still fits in what is left, so that under sustained overload the
//!   oracle does not spend its capacity on requests that have waited too long. What is left
//!   waits for a later bin, but only for capacity, never for a fault to end: a request born in
//!   a bin where no replica can serve it at all (every one failing every request or hanging)
//!   fails at once. A waiting request expires when it has waited its whole deadline. After
//!   the last arrival the bins go on for one deadline, as the run does, so the last waiting
//!   requests are still served.
//! - **Impatient users**: each failure is seen by its user when the oracle decides it (at once
//!   for a request it could not send or an error, at the deadline for one that did not fit or
//!   expired); `fraction` of them send a new logical request after `pause_ms × U(0.5, 1.5)`, up
//!   to `retries` times and only while arrivals go on, spread as an expected (fluid) count.
//!
//! The goodput ratio is expected successes ÷ expected logical requests. Approximations: the
//! fluid model has no queueing noise within a bin and uses the mean service time for the
//! capacity (a 10 ms bin holds about one service time); the oracle's own waiting line is
//! ideal (any free worker of any replica takes the next request); a fault's effect starts and
//! ends at bin edges; under sustained overload the requests it serves have waited long enough
//! that up to 1% fewer of them fit than would have fitted fresh. Retries can beat the oracle
//! where errors are independent (`error_probability < 1`): the oracle sends each request once.

use crate::scenario::{Fault, Scenario};

/// Width of the oracle's bins, seconds.
pub const BIN_S: f64 = 0.01;

/// What the oracle gets, per bin of [`BIN_S`] by the bin its logical request was born in.
#[derive(Debug, Clone, PartialEq)]
pub struct Oracle {
    /// Expected logical requests born in each bin (arrivals plus impatient users' retries).
    pub offered: Vec<f64>,
    /// Of those, the expected successes.
    pub good: Vec<f64>,
}

impl Oracle {
    /// Expected successes ÷ expected logical requests (1 when nothing was offered).
    pub fn goodput_ratio(&self) -> f64 {
        let o: f64 = self.offered.iter().sum();
        if o <= 0.0 {
            return 1.0;
        }
        self.good.iter().sum::<f64>() / o
    }

    /// Expected successes in consecutive windows of `bins` bins (10 for 100 ms, 100 for a
    /// second), by birth.
    pub fn good_per(&self, bins: usize) -> Vec<f64> {
        self.good
            .chunks(bins.max(1))
            .map(|c| c.iter().sum())
            .collect()
    }

    /// Expected logical requests in consecutive windows of `bins` bins, by birth.
    pub fn offered_per(&self, bins: usize) -> Vec<f64> {
        self.offered
            .chunks(bins.max(1))
            .map(|c| c.iter().sum())
            .collect()
    }
}

/// The standard normal distribution function (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7).
pub fn normal_cdf(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc = poly * (-x * x).exp();
    if z >= 0.0 {
        1.0 - 0.5 * erfc
    } else {
        0.5 * erfc
    }
}

/// The service-time distribution on one replica in one bin.
#[derive(Debug, Clone, Copy)]
struct Service {
    median: f64,
    sigma: f64,
    multiplier: f64,
    multiplier_probability: f64,
}

impl Service {
    /// P(service time ≤ x) for the lognormal with this median and sigma.
    fn base_cdf(&self, x: f64) -> f64 {
        if x <= 0.0 {
            0.0
        } else if self.sigma <= 0.0 {
            if x >= self.median { 1.0 } else { 0.0 }
        } else {
            normal_cdf((x / self.median).ln() / self.sigma)
        }
    }

    /// P(service time ≤ x), the multiplier applied with its probability.
    fn fit(&self, x: f64) -> f64 {
        let q = self.multiplier_probability;
        (1.0 - q) * self.base_cdf(x) + q * self.base_cdf(x / self.multiplier)
    }
}

/// One replica in one bin.
#[derive(Debug, Clone, Copy)]
struct Replica {
    /// Requests it can still take into service in this bin.
    slots: f64,
    /// Share of the requests sent that get past the fault layer.
    pass: f64,
    service: Service,
    /// `fit(deadline)`: the share of fresh requests whose service fits.
    fit_now: f64,
    /// `pass × fit(deadline)`: the share of fresh requests sent to it that succeed.
    yield_now: f64,
}

/// A waiting request is sent to a replica only while at least this share of what fits in a
/// whole deadline there still fits in what is left of it.
pub const ELIGIBLE: f64 = 0.99;

const Z99: f64 = 2.326_347_874_040_841;

fn replica_at(sc: &Scenario, r: u32, t: f64, sigma: f64) -> Replica {
    let active = |f: &&Fault| f.applies_to(r) && f.start <= t && t < f.end;
    // As the server model: the first latency or capacity fault in force.
    let server = sc
        .faults
        .iter()
        .filter(|f| f.latency_multiplier != 1.0 || f.capacity < 1.0)
        .find(active);
    // As tower-fault-injection: the error or hang window in force (validation keeps them disjoint).
    let injected = sc
        .faults
        .iter()
        .filter(|f| f.error_probability > 0.0 || f.hang)
        .find(active);
    let workers = match server {
        Some(f) if f.capacity < 1.0 => (f64::from(sc.workers) * f.capacity).round().max(1.0),
        _ => f64::from(sc.workers),
    };
    let (multiplier, multiplier_probability) = match server {
        Some(f) if f.latency_multiplier != 1.0 => (f.latency_multiplier, f.multiplier_probability),
        _ => (1.0, 0.0),
    };
    let mean =
        sc.mean_service() * (1.0 - multiplier_probability + multiplier_probability * multiplier);
    let pass = match injected {
        Some(f) if f.hang => 0.0,
        Some(f) => 1.0 - f.error_probability,
        None => 1.0,
    };
    let service = Service {
        median: sc.median,
        sigma,
        multiplier,
        multiplier_probability,
    };
    let fit_now = service.fit(sc.deadline);
    Replica {
        slots: workers * BIN_S / mean,
        pass,
        service,
        fit_now,
        yield_now: pass * fit_now,
    }
}

/// A group of requests waiting in the oracle's line.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    born: usize,
    generation: u32,
    count: f64,
}

/// The expected retries of impatient users, by generation and bin.
struct Users {
    fraction: f64,
    retries: u32,
    pause: f64,
    bins: usize,
    /// `due[g - 1][bin]`: retries of generation `g` born in `bin`.
    due: Vec<Vec<f64>>,
}

impl Users {
    fn new(sc: &Scenario, bins: usize) -> Self {
        let (fraction, retries, pause) = sc
            .impatient
            .map_or((0.0, 0, 0.0), |i| (i.fraction, i.retries, i.pause_ms / 1e3));
        Self {
            fraction,
            retries,
            pause,
            bins,
            due: vec![vec![0.0; bins]; retries as usize],
        }
    }

    /// `count` requests of `generation` failed at `at` seconds, seen while the oracle works on
    /// bin `now`: their users come back after 0.5 to 1.5 pauses, while arrivals go on.
    fn failed(&mut self, count: f64, generation: u32, at: f64, now: usize) {
        if generation >= self.retries || self.fraction <= 0.0 || count <= 0.0 {
            return;
        }
        let (lo, hi) = (at + 0.5 * self.pause, at + 1.5 * self.pause);
        let due = &mut self.due[generation as usize];
        let mass = count * self.fraction;
        let first = ((lo / BIN_S).floor() as usize).max(now + 1);
        let mut b = first;
        while b < self.bins && (b as f64) * BIN_S < hi {
            let (a, z) = (b as f64 * BIN_S, (b + 1) as f64 * BIN_S);
            let overlap = if hi > lo {
                (z.min(hi) - a.max(lo)).max(0.0) / (hi - lo)
            } else {
                f64::from(u8::from(b == first))
            };
            due[b] += mass * overlap;
            b += 1;
        }
    }
}

/// The oracle for `sc` on the run's arrival times (seconds from the start).
pub fn oracle(sc: &Scenario, births: impl IntoIterator<Item = f64>) -> Oracle {
    let run_bins = (sc.duration / BIN_S).ceil() as usize;
    let total = run_bins + (sc.deadline / BIN_S).ceil() as usize + 1;
    let mut offered = vec![0.0; run_bins];
    let mut good = vec![0.0; run_bins];
    let mut fresh = vec![0.0; run_bins];
    for t in births {
        let b = (t / BIN_S).floor();
        if b >= 0.0 && (b as usize) < run_bins {
            fresh[b as usize] += 1.0;
        }
    }
    let sigma = (sc.p99 / sc.median).ln() / Z99;
    let d = sc.deadline;
    let mut users = Users::new(sc, run_bins);
    let mut line: Vec<Waiting> = Vec::new();
    let mut replicas: Vec<Replica> = Vec::with_capacity(sc.replicas as usize);
    for b in 0..total {
        let t = (b as f64 + 0.5) * BIN_S;
        if b < run_bins {
            let mut add = |generation: u32, count: f64| {
                if count > 0.0 {
                    offered[b] += count;
                    line.push(Waiting {
                        born: b,
                        generation,
                        count,
                    });
                }
            };
            add(0, fresh[b]);
            for g in 1..=users.retries {
                add(g, users.due[g as usize - 1][b]);
            }
        }
        replicas.clear();
        replicas.extend(
            (0..sc.replicas)
                .map(|r| replica_at(sc, r, t, sigma))
                .filter(|r| r.yield_now > 0.0),
        );
        replicas.sort_by(|a, z| z.yield_now.total_cmp(&a.yield_now));
        // Oldest first (earliest deadline first).
        for w in line.iter_mut() {
            let left = d - (b - w.born) as f64 * BIN_S;
            if w.born == b && replicas.is_empty() {
                // Born where nothing can serve it: the oracle does not send it.
                users.failed(w.count, w.generation, t, b);
                w.count = 0.0;
                continue;
            }
            for r in replicas.iter_mut() {
                if w.count <= 0.0 {
                    break;
                }
                let fit = r.service.fit(left);
                if r.slots <= 0.0 || fit < ELIGIBLE * r.fit_now {
                    continue;
                }
                let sent = w.count.min(r.slots / r.pass);
                let ok = sent * r.pass * fit;
                good[w.born] += ok;
                r.slots -= sent * r.pass;
                w.count -= sent;
                users.failed(sent * (1.0 - r.pass), w.generation, t, b);
                users.failed(
                    sent * r.pass * (1.0 - fit),
                    w.generation,
                    w.born as f64 * BIN_S + d,
                    b,
                );
            }
        }
        // Whatever would have waited its whole deadline by the next bin expires now.
        for w in &mut line {
            if w.count > 0.0 && (b + 1 - w.born) as f64 * BIN_S >= d {
                users.failed(w.count, w.generation, w.born as f64 * BIN_S + d, b);
                w.count = 0.0;
            }
        }
        line.retain(|w| w.count > 1e-12);
        if b >= run_bins && line.is_empty() {
            break;
        }
    }
    Oracle { offered, good }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{expand, parse};

    /// Fixed 10 ms service (p99 = median), 10 workers: 1,000 rps of capacity.
    fn scenario(extra: &str) -> Scenario {
        let text = format!(
            "name = \"o\"\nduration_s = 20\n[backend]\nworkers = 10\nmedian_ms = 10\np99_ms = 10\n\
             [load]\nrate = 100\ndeadline_ms = 1000\n{extra}"
        );
        expand(&parse(&text, "o.toml").unwrap(), false).remove(0)
    }

    /// Evenly spaced arrivals at `rate` over `duration` seconds.
    fn even(rate: f64, duration: f64) -> Vec<f64> {
        let n = (rate * duration).round() as usize;
        (0..n).map(|i| (i as f64 + 0.5) / rate).collect()
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn the_normal_cdf_is_accurate() {
        assert!(close(normal_cdf(0.0), 0.5, 1e-7));
        assert!(close(normal_cdf(Z99), 0.99, 1e-6));
        assert!(close(normal_cdf(-1.0), 0.158_655_25, 1e-6));
        assert!(close(normal_cdf(8.0), 1.0, 1e-9));
    }

    #[test]
    fn healthy_and_within_capacity_is_everything() {
        let sc = scenario("");
        let o = oracle(&sc, even(100.0, 20.0));
        assert!(close(o.goodput_ratio(), 1.0, 1e-9), "{}", o.goodput_ratio());
        assert!(close(o.offered.iter().sum::<f64>(), 2000.0, 1e-9));
    }

    #[test]
    fn an_outage_of_half_the_run_halves_it() {
        let sc = scenario("[[faults]]\nstart_s = 10\nend_s = 20\nerror_probability = 1.0\n");
        let o = oracle(&sc, even(100.0, 20.0));
        assert!(close(o.goodput_ratio(), 0.5, 1e-9), "{}", o.goodput_ratio());
        // A hang is the same: nothing born in it can succeed, nothing waits for it to end.
        let sc = scenario("[[faults]]\nstart_s = 5\nend_s = 15\nhang = true\n");
        let o = oracle(&sc, even(100.0, 20.0));
        assert!(close(o.goodput_ratio(), 0.5, 1e-9), "{}", o.goodput_ratio());
    }

    #[test]
    fn a_capacity_cut_to_a_tenth_at_twice_its_capacity_serves_half() {
        // 1,000 rps of capacity cut to 100 rps from 5 s to 15 s, under 200 rps.
        let sc = scenario("[[faults]]\nstart_s = 5\nend_s = 15\ncapacity = 0.1\n");
        let o = oracle(&sc, even(200.0, 20.0));
        let (good, offered) = (o.good_per(100), o.offered_per(100));
        let share = |s: usize| good[s] / offered[s];
        // Once the backlog has built up, half of each second's requests are served (the one
        // worker left serves the oldest that still fits), the other half expire.
        for s in 7..14 {
            assert!(close(share(s), 0.5, 1e-9), "second {s}: {}", share(s));
        }
        // Outside the cut, everything; the cut's first second waits and is served; so is its
        // last, once the capacity is back.
        for s in (0..5).chain(15..20) {
            assert!(close(share(s), 1.0, 1e-9), "second {s}: {}", share(s));
        }
        assert!(
            share(5) > 0.95 && share(14) > 0.95,
            "{} {}",
            share(5),
            share(14)
        );
        // Births in the cut: its capacity (1,000) plus the backlog of one deadline (~200) it
        // leaves for the full capacity, of 2,000; around it 2,000 of 2,000.
        let ratio = o.goodput_ratio();
        assert!(close(ratio, 3200.0 / 4000.0, 0.002), "{ratio}");
        // Slowing every service by 10 cuts capacity the same way.
        let sc = scenario("[[faults]]\nstart_s = 5\nend_s = 15\nlatency_multiplier = 10.0\n");
        let slow = oracle(&sc, even(200.0, 20.0));
        let share = slow.good_per(100)[10] / slow.offered_per(100)[10];
        assert!(close(share, 0.5, 1e-9), "{share}");
    }

    #[test]
    fn only_services_that_fit_in_the_deadline_count() {
        // Every service takes 10 ms x 200 = 2 s, past the 1 s deadline: nothing succeeds.
        let sc = scenario("[[faults]]\nstart_s = 0\nend_s = 20\nlatency_multiplier = 200.0\n");
        assert!(oracle(&sc, even(100.0, 20.0)).goodput_ratio() < 1e-9);
        // A 30% multiplier past the deadline loses 30%.
        let sc = scenario(
            "[[faults]]\nstart_s = 0\nend_s = 20\nlatency_multiplier = 200.0\nmultiplier_probability = 0.3\n",
        );
        // 100 rps x (0.7 x 10 ms + 0.3 x 2 s) = 60.7 worker-seconds per second: enough.
        let sc = Scenario { workers: 100, ..sc };
        let r = oracle(&sc, even(100.0, 20.0)).goodput_ratio();
        assert!(close(r, 0.7, 1e-9), "{r}");
    }

    #[test]
    fn flapping_loses_the_failing_phases() {
        // 1 s failing, 1 s healthy, from 0 to 20 s: half.
        let sc = scenario(
            "[[faults]]\nstart_s = 0\nend_s = 20\nerror_probability = 1.0\nflap_on_s = 1\nflap_off_s = 1\n",
        );
        let r = oracle(&sc, even(100.0, 20.0)).goodput_ratio();
        assert!(close(r, 0.5, 1e-9), "{r}");
        // 0.5 s failing, 1.5 s healthy, from 4 s to 16 s: 6 phases of 0.5 s lost of 20 s.
        let sc = scenario(
            "[[faults]]\nstart_s = 4\nend_s = 16\nerror_probability = 1.0\nflap_on_s = 0.5\nflap_off_s = 1.5\n",
        );
        let r = oracle(&sc, even(100.0, 20.0)).goodput_ratio();
        assert!(close(r, 1.0 - 3.0 / 20.0, 1e-9), "{r}");
    }

    #[test]
    fn independent_errors_keep_what_passes() {
        let sc = scenario("[[faults]]\nstart_s = 0\nend_s = 20\nerror_probability = 0.3\n");
        let r = oracle(&sc, even(100.0, 20.0)).goodput_ratio();
        assert!(close(r, 0.7, 1e-9), "{r}");
    }

    #[test]
    fn a_failed_or_hung_replica_is_routed_around_while_the_others_have_room() {
        let two = |fault: &str| {
            // Until 30 s: past the end of the arrivals and their last deadline.
            let mut sc = scenario(&format!(
                "[[faults]]\nstart_s = 0\nend_s = 30\nreplicas = [0]\n{fault}\n"
            ));
            sc.replicas = 2;
            sc
        };
        for fault in ["error_probability = 1.0", "hang = true"] {
            // 500 rps: the healthy replica's 1,000 rps take it all.
            let r = oracle(&two(fault), even(500.0, 20.0)).goodput_ratio();
            assert!(close(r, 1.0, 1e-9), "{fault}: {r}");
            // 2,000 rps: only the healthy replica's 1,000 rps succeed, and once arrivals stop
            // it serves the last second's waiting line: 21,000 of 40,000.
            let r = oracle(&two(fault), even(2000.0, 20.0)).goodput_ratio();
            assert!(close(r, 0.525, 0.002), "{fault}: {r}");
        }
        // Half the errors on one replica: the other takes what it can first (1,000 rps), the
        // rest goes to the erroring one and half of it succeeds.
        let r = oracle(&two("error_probability = 0.5"), even(1500.0, 20.0)).goodput_ratio();
        assert!(close(r, (1000.0 + 250.0) / 1500.0, 0.005), "{r}");
    }

    #[test]
    fn impatient_users_come_back_and_some_of_them_succeed() {
        // Outage for the first 10 s; every user retries once after 0.5-1.5 s. The retries of
        // requests failed in the outage are born over [0.5, 11.5] s; those born after 10 s
        // (the equivalent of 1 s of arrivals, 100) succeed, the others fail for good.
        let sc = scenario(
            "[load.impatient]\nfraction = 1.0\nretries = 1\npause_ms = 1000\n\
             [[faults]]\nstart_s = 0\nend_s = 10\nerror_probability = 1.0\n",
        );
        let o = oracle(&sc, even(100.0, 20.0));
        let offered: f64 = o.offered.iter().sum();
        let good: f64 = o.good.iter().sum();
        assert!(close(offered, 3000.0, 1.0), "{offered}");
        assert!(close(good, 1100.0, 1.0), "{good}");
        // Without the users' retries, half.
        let sc = Scenario {
            impatient: None,
            ..sc
        };
        assert!(close(
            oracle(&sc, even(100.0, 20.0)).goodput_ratio(),
            0.5,
            1e-9
        ));
    }

    #[test]
    fn load_steps_beyond_capacity_get_capacity() {
        // 500 rps, then 2,000 rps from 10 s: capacity 1,000 rps.
        let sc = scenario("");
        let mut births = even(500.0, 10.0);
        births.extend(even(2000.0, 10.0).into_iter().map(|t| t + 10.0));
        let o = oracle(&sc, births);
        let r = o.goodput_ratio();
        // 5,000 + 10,000 of 25,000, and about 1,000 more: once arrivals stop, the line left
        // (10 a bin for the last second) is served, oldest first, while it still fits.
        assert!(close(r, 16_000.0 / 25_000.0, 0.002), "{r}");
    }
}
