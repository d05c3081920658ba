use crate::codel::{DEFAULT_INTERVAL, DEFAULT_TARGET};
use crate::error::ConfigError;
use crate::limit::Limit;
use crate::limiter::{Limiter, LimiterConfig, QueueConfig};
use crate::{Shed, ShedHandle};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tower_layer::Layer;

/// The default of [`ShedBuilder::sample_every`].
pub const DEFAULT_SAMPLE_EVERY: u32 = 16;

/// The default of [`ShedBuilder::max_samples_per_sec`].
pub const DEFAULT_MAX_SAMPLES_PER_SEC: u32 = 2_000;

/// The upper bound on `codel_target`, `codel_interval` and `claim_ttl`: one day. No request
/// should wait in a queue, nor a claim last, longer; and instants that far ahead stay well
/// inside the clock's range.
const MAX_WAIT: Duration = Duration::from_secs(86_400);

/// Picks a request's partition by name.
///
/// `()` puts every request in one class; any `Fn(&Req) -> &'static str` works as a classifier.
/// A name that matches no configured partition selects the **last** partition, so declare the
/// best-effort class last.
pub trait Partitioner<Req> {
    /// The name of the partition `req` belongs to.
    fn partition(&self, req: &Req) -> &str;
}

impl<Req> Partitioner<Req> for () {
    fn partition(&self, _req: &Req) -> &str {
        ""
    }
}

impl<Req, F> Partitioner<Req> for F
where
    F: Fn(&Req) -> &'static str,
{
    fn partition(&self, req: &Req) -> &str {
        self(req)
    }
}

/// The largest queue capacity a builder accepts.
pub const MAX_QUEUE: usize = 1_000_000;

/// Applies [`Shed`] to services. See the [crate docs](crate) for an example.
///
/// Cloning this layer does not create a new limiter: every service it builds, and every clone,
/// shares one limit, one in-flight count and one queue (as a server's per-connection services
/// should).
#[derive(Clone)]
pub struct ShedLayer<P = ()> {
    limiter: Arc<Limiter>,
    partitioner: P,
}

impl ShedLayer {
    /// A layer that rejects at once above the limit `limit` computes, with default settings.
    pub fn new(limit: impl Limit + 'static) -> Self {
        // The defaults are valid.
        let (cfg, ()) = ShedBuilder::new(limit).into_parts();
        Self {
            limiter: Arc::new(Limiter::new(cfg)),
            partitioner: (),
        }
    }

    /// A builder for queueing, partitions and the other settings.
    pub fn builder(limit: impl Limit + 'static) -> ShedBuilder {
        ShedBuilder::new(limit)
    }
}

impl<P> ShedLayer<P> {
    /// A view of the shared limiter: current limit, in-flight count, queue length.
    pub fn handle(&self) -> ShedHandle {
        ShedHandle::new(self.limiter.clone())
    }
}

impl<S, P: Clone> Layer<S> for ShedLayer<P> {
    type Service = Shed<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Shed::new(inner, self.limiter.clone(), self.partitioner.clone())
    }
}

impl<P> fmt::Debug for ShedLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShedLayer")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

/// Configures a [`ShedLayer`].
///
/// | knob | default |
/// |---|---|
/// | [`name`](Self::name) | `"shed"` |
/// | [`sample_every`](Self::sample_every) | 16 (measure one request in 16; drops always count) |
/// | [`max_samples_per_sec`](Self::max_samples_per_sec) | 2,000 (sample more sparsely above that) |
/// | [`queue`](Self::queue) | none: reject at once |
/// | [`codel_target`](Self::codel_target) / [`codel_interval`](Self::codel_interval) | 5 ms / 100 ms |
/// | [`adaptive_lifo`](Self::adaptive_lifo) | on |
/// | [`partition`](Self::partition) | none |
/// | [`retry_after`](Self::retry_after) | 2 × smoothed RTT, clamped to [10 ms, 30 s] |
/// | [`claim_ttl`](Self::claim_ttl) | 1 s |
#[must_use]
pub struct ShedBuilder<P = ()> {
    limit: Box<dyn Limit>,
    name: String,
    sample_every: u32,
    max_samples_per_sec: u32,
    queue: Option<QueueConfig>,
    partitions: Vec<(String, f64)>,
    partitioner: P,
    retry_after: (Duration, Duration),
    claim_ttl: Duration,
}

impl<P> fmt::Debug for ShedBuilder<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShedBuilder")
            .field("limit", &self.limit)
            .field("name", &self.name)
            .field("sample_every", &self.sample_every)
            .field("queue", &self.queue)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl ShedBuilder {
    fn new(limit: impl Limit + 'static) -> Self {
        Self {
            limit: Box::new(limit),
            name: "shed".to_owned(),
            sample_every: DEFAULT_SAMPLE_EVERY,
            max_samples_per_sec: DEFAULT_MAX_SAMPLES_PER_SEC,
            queue: None,
            partitions: Vec::new(),
            partitioner: (),
            retry_after: (Duration::from_millis(10), damper_core::DEFAULT_MAX_PUSHBACK),
            claim_ttl: Duration::from_secs(1),
        }
    }
}

impl<P> ShedBuilder<P> {
    /// The `name` label of this limiter's metrics and events.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Measure one request in `n` (a power of two; default 16).
    ///
    /// Measuring a request costs two clock reads and an update of the algorithm, several times
    /// the cost of admitting it. Each measured request is fed as a sample standing for `n`
    /// requests ([`Sample::weight`](crate::limit::Sample::weight)), so the algorithms behave
    /// per RTT as if every request were measured. Requests that are *dropped* (timeouts,
    /// overload answers) are always fed, measured or not. Use 1 for low-traffic services where
    /// every sample counts.
    pub fn sample_every(mut self, n: u32) -> Self {
        self.sample_every = n;
        self
    }

    /// The most requests measured per second (at least 1; default 2,000). Above it, the
    /// limiter measures ever fewer requests — one in `sample_every × 2ⁿ`, re-checked every
    /// 100 ms — each standing for proportionally more. A measured request writes to state
    /// that every core shares (the algorithm behind its lock, the smoothed RTT), so measuring
    /// a fixed share at millions of requests per second would make admission stop scaling
    /// across cores; 2,000 samples a second still give the algorithms tens of decisions a
    /// second.
    pub fn max_samples_per_sec(mut self, n: u32) -> Self {
        self.max_samples_per_sec = n;
        self
    }

    /// Queue up to `capacity` requests at the limit instead of rejecting them, governed by
    /// CoDel and adaptive LIFO (see [`codel`](crate::codel)).
    pub fn queue(mut self, capacity: usize) -> Self {
        let q = self.queue.get_or_insert(QueueConfig {
            capacity,
            target: DEFAULT_TARGET,
            interval: DEFAULT_INTERVAL,
            adaptive_lifo: true,
        });
        q.capacity = capacity;
        self
    }

    /// CoDel target: the wait allowed while a queue stands (default 5 ms), positive and at most
    /// one day. Turns queue mode on (capacity 100) if [`queue`](Self::queue) was not called.
    pub fn codel_target(mut self, target: Duration) -> Self {
        self = self.ensure_queue();
        if let Some(q) = &mut self.queue {
            q.target = target;
        }
        self
    }

    /// CoDel interval (default 100 ms): the longest any request waits, and how long a queue
    /// may go without emptying before it counts as standing. At least the target and at most
    /// one day. Turns queue mode on (capacity 100) if [`queue`](Self::queue) was not called.
    pub fn codel_interval(mut self, interval: Duration) -> Self {
        self = self.ensure_queue();
        if let Some(q) = &mut self.queue {
            q.interval = interval;
        }
        self
    }

    /// Serve the newest request first while a queue stands (default on). Turns queue mode on
    /// (capacity 100) if [`queue`](Self::queue) was not called.
    pub fn adaptive_lifo(mut self, on: bool) -> Self {
        self = self.ensure_queue();
        if let Some(q) = &mut self.queue {
            q.adaptive_lifo = on;
        }
        self
    }

    fn ensure_queue(self) -> Self {
        if self.queue.is_some() {
            self
        } else {
            self.queue(100)
        }
    }

    /// Adds a partition `name` guaranteed `share` of the limit (in `(0, 1]`; shares add up to
    /// at most 1). Declare the most important class first and best effort last: requests whose
    /// class matches no partition go to the last one.
    ///
    /// # How shares work
    ///
    /// The total in flight never exceeds the limit. A partition below its guaranteed share
    /// (`⌊share · limit⌋`, at least 1) is admitted whenever the total is below the limit. Above
    /// its share a partition *borrows*: it is admitted only if the total stays within the
    /// limit minus the unused shares of the other partitions that are active (have requests
    /// in flight, or had one turned away in the last [`claim_ttl`](Self::claim_ttl)). So best
    /// effort may use capacity critical traffic leaves idle, but as soon as critical traffic
    /// needs its share, best effort is the one shed, and permits freed by best-effort requests
    /// go to critical ones.
    ///
    /// ```
    /// use tower_shed::ShedLayer;
    /// use tower_shed::limit::Vegas;
    ///
    /// let layer = ShedLayer::builder(Vegas::default())
    ///     .partition("critical", 0.8)
    ///     .partition("best_effort", 0.2)
    ///     // Requests here are paths; with HTTP, look at the request's headers or URI instead.
    ///     .partition_with(|path: &&'static str| {
    ///         if path.starts_with("/checkout") { "critical" } else { "best_effort" }
    ///     })
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    pub fn partition(mut self, name: impl Into<String>, share: f64) -> Self {
        self.partitions.push((name.into(), share));
        self
    }

    /// Classifies requests into partitions by name.
    pub fn partition_with<Q>(self, partitioner: Q) -> ShedBuilder<Q> {
        ShedBuilder {
            limit: self.limit,
            name: self.name,
            sample_every: self.sample_every,
            max_samples_per_sec: self.max_samples_per_sec,
            queue: self.queue,
            partitions: self.partitions,
            partitioner,
            retry_after: self.retry_after,
            claim_ttl: self.claim_ttl,
        }
    }

    /// Bounds on the retry-after hint given with each rejection (twice the smoothed RTT).
    pub fn retry_after(mut self, min: Duration, max: Duration) -> Self {
        self.retry_after = (min, max);
        self
    }

    /// How long a partition that was turned away below its guarantee keeps others from
    /// borrowing its unused share (default 1 s), at most one day.
    pub fn claim_ttl(mut self, ttl: Duration) -> Self {
        self.claim_ttl = ttl;
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.sample_every == 0 || !self.sample_every.is_power_of_two() {
            return Err(ConfigError::new("sample_every", "must be a power of two"));
        }
        if self.max_samples_per_sec == 0 {
            return Err(ConfigError::new(
                "max_samples_per_sec",
                "must be at least 1",
            ));
        }
        if let Some(q) = &self.queue {
            if q.capacity == 0 {
                return Err(ConfigError::new("queue", "capacity must be at least 1"));
            }
            if q.capacity > MAX_QUEUE {
                return Err(ConfigError::new(
                    "queue",
                    "capacity must be at most 1,000,000 (a queue that long is not a queue)",
                ));
            }
            if q.target.is_zero() {
                return Err(ConfigError::new("codel_target", "must be positive"));
            }
            if q.target > MAX_WAIT {
                return Err(ConfigError::new("codel_target", "must be at most one day"));
            }
            if q.interval < q.target {
                return Err(ConfigError::new(
                    "codel_interval",
                    "must be at least codel_target",
                ));
            }
            if q.interval > MAX_WAIT {
                return Err(ConfigError::new(
                    "codel_interval",
                    "must be at most one day",
                ));
            }
        }
        if self.claim_ttl > MAX_WAIT {
            return Err(ConfigError::new("claim_ttl", "must be at most one day"));
        }
        let mut total = 0.0;
        for (i, (name, share)) in self.partitions.iter().enumerate() {
            if !(*share > 0.0 && *share <= 1.0) {
                return Err(ConfigError::new("partition", "share must be in (0, 1]"));
            }
            if self.partitions[..i].iter().any(|(n, _)| n == name) {
                return Err(ConfigError::new("partition", "names must be unique"));
            }
            total += share;
        }
        if total > 1.0 + 1e-9 {
            return Err(ConfigError::new(
                "partition",
                "shares must add up to at most 1",
            ));
        }
        if self.retry_after.0 > self.retry_after.1 {
            return Err(ConfigError::new("retry_after", "min must not exceed max"));
        }
        Ok(())
    }

    fn into_parts(self) -> (LimiterConfig, P) {
        let cfg = LimiterConfig {
            name: self.name,
            limit: self.limit,
            sample_every: self.sample_every,
            max_samples_per_sec: self.max_samples_per_sec,
            partitions: self.partitions,
            queue: self.queue,
            retry_after: self.retry_after,
            claim_ttl: self.claim_ttl,
        };
        (cfg, self.partitioner)
    }

    /// Validates the configuration and builds the layer.
    pub fn build(self) -> Result<ShedLayer<P>, ConfigError> {
        self.validate()?;
        let (cfg, partitioner) = self.into_parts();
        Ok(ShedLayer {
            limiter: Arc::new(Limiter::new(cfg)),
            partitioner,
        })
    }
}
