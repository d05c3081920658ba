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
