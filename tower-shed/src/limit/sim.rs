//! A synthetic backend for the algorithms' tests: `capacity` workers with service time `base`,
//! a FIFO queue of `queue` more requests, and drops beyond that. Runs closed-loop rounds: each
//! round the client keeps `min(limit, demand)` requests in flight, and each request's RTT is
//! `base × max(1, n / capacity)` (Little's law for a saturated server).

use super::{Limit, Sample};
use std::time::Duration;
use tokio::time::Instant;

pub(crate) struct Backend {
    pub(crate) capacity: f64,
    pub(crate) queue: f64,
    pub(crate) base: Duration,
    pub(crate) demand: usize,
    /// Feed one request in `every`, weighted, as the limiter's `sample_every` does.
    pub(crate) every: usize,
    pub(crate) now: Instant,
}

impl Backend {
    pub(crate) fn new(capacity: f64, queue: f64, base: Duration) -> Self {
        Self {
            capacity,
            queue,
            base,
            demand: usize::MAX,
            every: 1,
            now: Instant::now(),
        }
    }

    /// The RTT a request sees with `n` in flight.
    pub(crate) fn rtt(&self, n: usize) -> Duration {
        let served = (n as f64).min(self.capacity + self.queue);
        self.base.mul_f64((served / self.capacity).max(1.0))
    }

    /// Runs `rounds` rounds; returns the limit at the end of each.
    pub(crate) fn run(&mut self, limit: &mut dyn Limit, rounds: usize) -> Vec<usize> {
        let mut trace = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let n = limit.limit().min(self.demand);
            let rtt = self.rtt(n);
            let fits = (self.capacity + self.queue).floor() as usize;
            for i in (0..n).filter(|i| i % self.every == self.every - 1) {
                let at = self.now + rtt.mul_f64((i + 1) as f64 / n as f64);
                let sample = Sample::new(rtt, n, i >= fits);
                limit.update(sample.with_weight(self.every as u32), at);
            }
            self.now += rtt;
            trace.push(limit.limit());
        }
        trace
    }
}

/// An event-driven server for the noise tests: `workers` workers behind a FIFO queue of
/// `queue` places (drops beyond it, answered at once), lognormal service times (seeded), and
/// a closed-loop client that keeps `min(limit, demand)` requests in flight, as a limiter in
/// front of an overloaded server does. One request in `every` is measured, weighted.
pub(crate) struct Noisy {
    pub(crate) workers: usize,
    pub(crate) queue: usize,
    /// Median service time.
    pub(crate) median: Duration,
    /// Lognormal sigma (0.69 gives a p99 of 5× the median).
    pub(crate) sigma: f64,
    pub(crate) demand: usize,
    pub(crate) every: u64,
    rng: damper_core::rng::SplitMix64,
    now: Duration,
    start: Instant,
    /// Busy workers: (finish, admitted, in_flight at admission).
    busy: std::collections::BinaryHeap<std::cmp::Reverse<(Duration, Duration, usize)>>,
    waiting: std::collections::VecDeque<(Duration, usize)>,
    in_flight: usize,
    seq: u64,
    /// Completed requests, and the RTTs of the current run.
    completed: u64,
    rtts: Vec<Duration>,
}

/// What a stretch of a [`Noisy`] run did.
pub(crate) struct Stats {
    /// Completions per second.
    pub(crate) throughput: f64,
    /// Median and 99th percentile RTT of completed requests.
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    /// Limit sampled every 10 ms of virtual time.
    pub(crate) limits: Vec<usize>,
}

impl Stats {
    pub(crate) fn mean_limit(&self) -> f64 {
        self.limits.iter().sum::<usize>() as f64 / self.limits.len().max(1) as f64
    }

    pub(crate) fn limit_cv(&self) -> f64 {
        let mean = self.mean_limit();
        let n = self.limits.len().max(1) as f64;
        let var = self
            .limits
            .iter()
            .map(|&l| (l as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        var.sqrt() / mean
    }
}

impl Noisy {
    pub(crate) fn new(workers: usize, median: Duration, seed: u64) -> Self {
        Self {
            workers,
            queue: usize::MAX,
            median,
            sigma: 0.69,
            demand: usize::MAX,
            every: 16,
            rng: damper_core::rng::SplitMix64::new(seed),
            now: Duration::ZERO,
            start: Instant::now(),
            busy: Default::default(),
            waiting: Default::default(),
            in_flight: 0,
            seq: 0,
            completed: 0,
            rtts: Vec::new(),
        }
    }

    /// Capacity in requests per second (workers ÷ mean service time).
    pub(crate) fn capacity(&self) -> f64 {
        let mean = self.median.as_secs_f64() * (self.sigma * self.sigma / 2.0).exp();
        self.workers as f64 / mean
    }

    fn service(&mut self) -> Duration {
        use damper_core::rng::Random;
        // Box–Muller.
        let u1 = self.rng.next_f64().max(1e-12);
        let u2 = self.rng.next_f64();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        self.median.mul_f64((self.sigma * z).exp())
    }

    fn start_work(&mut self, admitted: Duration, in_flight: usize) {
        let finish = self.now + self.service();
        self.busy
            .push(std::cmp::Reverse((finish, admitted, in_flight)));
    }

    /// Runs for `secs` of virtual time.
    pub(crate) fn run(&mut self, limit: &mut dyn Limit, secs: f64) -> Stats {
        let end = self.now + Duration::from_secs_f64(secs);
        let mut limits = Vec::new();
        let mut next_look = self.now;
        let c0 = self.completed;
        self.rtts.clear();
        loop {
            // Admit up to the limit.
            while self.in_flight < limit.limit().min(self.demand) {
                self.in_flight += 1;
                let n = self.in_flight;
                if self.busy.len() < self.workers {
                    self.start_work(self.now, n);
                } else if self.waiting.len() < self.queue {
                    self.waiting.push_back((self.now, n));
                } else {
                    // Dropped at once.
                    self.in_flight -= 1;
                    let at = self.start + self.now;
                    limit.update(Sample::new(Duration::ZERO, n, true), at);
                }
            }
            let Some(std::cmp::Reverse((finish, admitted, n))) = self.busy.pop() else {
                break;
            };
            if finish > end {
                self.busy.push(std::cmp::Reverse((finish, admitted, n)));
                break;
            }
            while next_look <= finish {
                limits.push(limit.limit());
                next_look += Duration::from_millis(10);
            }
            self.now = finish;
            self.in_flight -= 1;
            while self.busy.len() < self.workers {
                let Some((a, n)) = self.waiting.pop_front() else {
                    break;
                };
                self.start_work(a, n);
            }
            let rtt = finish - admitted;
            self.completed += 1;
            self.rtts.push(rtt);
            self.seq += 1;
            if self.seq.is_multiple_of(self.every) {
                let s = Sample::new(rtt, n, false).with_weight(self.every as u32);
                limit.update(s, self.start + finish);
            }
        }
        while next_look <= end {
            limits.push(limit.limit());
            next_look += Duration::from_millis(10);
        }
        self.now = end;
        self.rtts.sort_unstable();
        let q = |p: f64| {
            self.rtts
                .get(((self.rtts.len() as f64 * p) as usize).min(self.rtts.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        Stats {
            throughput: (self.completed - c0) as f64 / secs,
            p50: q(0.5),
            p99: q(0.99),
            limits,
        }
    }
}
