use crate::limiter::Limiter;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A read-only view of a limiter, for dashboards, tests and the lab (`limit_cv`).
///
/// Cheap to clone; reads are single atomic loads.
#[derive(Clone)]
pub struct ShedHandle {
    limiter: Arc<Limiter>,
}

impl ShedHandle {
    pub(crate) fn new(limiter: Arc<Limiter>) -> Self {
        Self { limiter }
    }

    /// The current concurrency limit.
    pub fn limit(&self) -> usize {
        self.limiter.limit()
    }

    /// Requests admitted and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.limiter.in_flight()
    }

    /// Requests waiting in the queue (queue mode; 0 otherwise).
    pub fn queued(&self) -> usize {
        self.limiter.queued()
    }

    /// Requests of the partition `name` in flight, if it exists (only tracked when partitions
    /// are configured).
    pub fn partition_in_flight(&self, name: &str) -> Option<usize> {
        if !self.limiter.is_partitioned() {
            return None;
        }
        self.limiter
            .partitions
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.in_flight())
    }

    /// The algorithm's estimate of the no-load RTT, once it has one.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.limiter.min_rtt()
    }

    /// The retry-after hint rejected requests get right now.
    pub fn retry_after(&self) -> Duration {
        self.limiter.retry_after()
    }

    /// The limiter's name (the `name` metric label).
    pub fn name(&self) -> &str {
        &self.limiter.name
    }
}

impl fmt::Debug for ShedHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.limiter, f)
    }
}
