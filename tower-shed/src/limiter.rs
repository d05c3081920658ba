//! The shared limiter state: lock-free admission, the limit updater, partitions and the queue.
//!
//! # Admission (lock-free)
//!
//! In the default mode (reject, no partitions) admission is sharded per thread: see
//! [`crate::shards`]. With partitions or a queue, one `AtomicU64` holds the number of requests in flight (low 32 bits) and a request sequence
//! number (high 32 bits). Admission is a single `fetch_add(1 | 1 << 32)`: if the previous count
//! was below the limit the request is in; otherwise one `fetch_sub(1)` undoes it and the request
//! is rejected. Every admitted request saw fewer than `limit` requests admitted before it, so
//! no more than `limit` are ever in flight (a failed attempt only makes the counter read high
//! for an instant, never lets anyone extra in). The sequence number picks which requests are
//! measured (`sample_every`) without another shared counter.
//!
//! # Updating the limit (off the fast path, never blocking)
//!
//! A measured request, when it completes, feeds its [`Sample`] to the [`Limit`] algorithm behind
//! a mutex that is only ever `try_lock`ed: if another completion is updating the limit right
//! now, this sample is skipped rather than waited for. Nothing ever blocks on it, the admit and
//! reject paths never touch it, and a skipped sample is harmless (the algorithms are statistical
//! and the next sample is a few microseconds away). The new limit is published with one atomic
//! store that admission reads with a relaxed load.

use crate::codel::CoDel;
use crate::limit::{Limit, Sample};
use crate::shards::Shards;
use damper_core::clock::Origin;
use damper_core::deadline::Deadline;
use damper_core::error::Overloaded;
use damper_core::metrics as names;
use metrics::{Counter, Gauge, Histogram};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

const COUNT_MASK: u64 = 0xFFFF_FFFF;
/// Slots a shard leases from the pool at a time.
const SHARD_BATCH: u32 = 4;
const SEQ_ONE: u64 = 1 << 32;

/// What admission hands back: how many were in flight and whether to measure this request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    in_flight: usize,
    sampled: bool,
    /// The shard (sharded mode) or partition the permit returns to.
    slot: usize,
}

/// A named class of requests with a guaranteed share of the limit.
#[derive(Debug)]
pub(crate) struct Partition {
    pub(crate) name: String,
    share: f64,
    in_flight: AtomicUsize,
    /// Until when (ns since the limiter's epoch) this partition claims its unused guarantee
    /// after one of its requests was turned away; 0 = no claim.
    claim_until: AtomicU64,
    rejected: Counter,
}

impl Partition {
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Queue mode settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueConfig {
    pub(crate) capacity: usize,
    pub(crate) target: Duration,
    pub(crate) interval: Duration,
    pub(crate) adaptive_lifo: bool,
}

pub(crate) enum Grant {
    Admitted(Permit),
    Shed(Overloaded),
    Expired,
}

struct Entry {
    tx: oneshot::Sender<Grant>,
    enqueued: Instant,
    deadline: Option<Deadline>,
    partition: usize,
}

struct QueueState {
    entries: VecDeque<Entry>,
    codel: CoDel,
}

pub(crate) struct Queue {
    len: AtomicUsize,
    capacity: usize,
    interval: Duration,
    // A lock is fine here: the queue is only touched once the limit is reached (the admit and
    // reject paths of reject mode never see it), it is never held across an `.await` or a
    // `poll`, and only for O(capacity) work.
    #[allow(clippy::disallowed_types)]
    state: std::sync::Mutex<QueueState>,
}

impl Queue {
    #[allow(clippy::disallowed_types)]
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // The state stays consistent even if a holder panicked: every mutation is a single
        // VecDeque call.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Metrics {
    limit: Gauge,
    in_flight: Gauge,
    min_rtt: Gauge,
    queue_time: Histogram,
}

/// Keeps a frequently written atomic on its own cache lines (two, against adjacent-line
/// prefetch), so that reading the limiter's read-mostly fields does not miss every time
/// another core admits a request.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Shared by every clone of a layer and every service it built.
pub(crate) struct Limiter {
    /// In flight (low 32 bits) and request sequence number (high 32 bits): written on every
    /// admission and release.
    word: Padded<AtomicU64>,
    /// Written by the updater only (once per measured request).
    rtt_ns: Padded<AtomicU64>,
    limit: AtomicUsize,
    partitioned: bool,
    pub(crate) partitions: Box<[Partition]>,
    // Only ever `try_lock`ed, never waited on: see the module docs.
    #[allow(clippy::disallowed_types)]
    algo: std::sync::Mutex<Updater>,
    /// The densest sampling: one request in `sample_every` (a power of two).
    sample_every: u32,
    /// How many times the sampling interval has been doubled beyond `sample_every` to keep
    /// the measured requests under `max_samples_per_sec`. Written by the updater only, and
    /// only when it changes.
    sample_shift: AtomicU32,
    max_samples_per_sec: u32,
    min_rtt_ns: AtomicU64,
    /// Set when a request is rejected or queued at the limit, taken by the next measured
    /// request ([`Sample::saturated`]).
    saturated: AtomicBool,
    retry_after: (Duration, Duration),
    claim_ttl: Duration,
    epoch: Origin,
    pub(crate) queue: Option<Queue>,
    /// Sharded admission (reject mode without partitions), else the single `word`.
    shards: Option<Shards>,
    metrics: Metrics,
    pub(crate) name: String,
}

/// What the updater (the `try_lock` holder) owns: the algorithm and the sampling-rate count.
struct Updater {
    limit: Box<dyn Limit>,
    /// Start of the current rate window, in [`Limiter::nanos`].
    since: u64,
    /// Samples fed in the current rate window.
    samples: u64,
}

/// How often the updater re-checks the sampling rate.
const RATE_WINDOW_NS: u64 = 100_000_000;
/// The sparsest sampling: one request in `sample_every × 2^MAX_SAMPLE_SHIFT`.
const MAX_SAMPLE_SHIFT: u32 = 20;

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("name", &self.name)
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

pub(crate) struct LimiterConfig {
    pub(crate) name: String,
    pub(crate) limit: Box<dyn Limit>,
    pub(crate) sample_every: u32,
    pub(crate) max_samples_per_sec: u32,
    pub(crate) partitions: Vec<(String, f64)>,
    pub(crate) queue: Option<QueueConfig>,
    pub(crate) retry_after: (Duration, Duration),
    pub(crate) claim_ttl: Duration,
}

impl Limiter {
    pub(crate) fn new(cfg: LimiterConfig) -> Self {
        let now = Instant::now();
        let label = |name: &str| {
            [
                (names::LABEL_NAME, cfg.name.clone()),
                (names::LABEL_PARTITION, name.to_owned()),
            ]
        };
        let partitioned = !cfg.partitions.is_empty();
        let parts: Vec<(String, f64)> = if partitioned {
            cfg.partitions
        } else {
            vec![("default".to_owned(), 1.0)]
        };
        let partitions = parts
            .into_iter()
            .map(|(name, share)| Partition {
                rejected: metrics::counter!(names::SHED_REJECTED_TOTAL, &label(&name)),
                name,
                share,
                in_flight: AtomicUsize::new(0),
                claim_until: AtomicU64::new(0),
            })
            .collect();
        let base = [(names::LABEL_NAME, cfg.name.clone())];
        let metrics = Metrics {
            limit: metrics::gauge!(names::SHED_LIMIT, &base),
            in_flight: metrics::gauge!(names::SHED_IN_FLIGHT, &base),
            min_rtt: metrics::gauge!(names::SHED_MIN_RTT_SECONDS, &base),
            queue_time: metrics::histogram!(names::SHED_QUEUE_TIME_SECONDS, &base),
        };
        let initial = cfg.limit.limit().clamp(1, COUNT_MASK as usize);
        metrics.limit.set(initial as f64);
        #[allow(clippy::disallowed_types)]
        let algo = std::sync::Mutex::new(Updater {
            limit: cfg.limit,
            since: 0,
            samples: 0,
        });
        Self {
            word: Padded(AtomicU64::new(0)),
            limit: AtomicUsize::new(initial),
            partitioned,
            partitions,
            algo,
            sample_every: cfg.sample_every.max(1),
            sample_shift: AtomicU32::new(0),
            max_samples_per_sec: cfg.max_samples_per_sec.max(1),
            rtt_ns: Padded(AtomicU64::new(0)),
            min_rtt_ns: AtomicU64::new(0),
            saturated: AtomicBool::new(false),
            retry_after: cfg.retry_after,
            claim_ttl: cfg.claim_ttl,
            epoch: Origin::new(now),
            queue: cfg.queue.map(|q| Queue {
                len: AtomicUsize::new(0),
                capacity: q.capacity,
                interval: q.interval,
                #[allow(clippy::disallowed_types)]
                state: std::sync::Mutex::new(QueueState {
                    // Grows on demand: the capacity is a bound, not a reservation.
                    entries: VecDeque::with_capacity(q.capacity.min(64)),
                    codel: CoDel::new(q.target, q.interval, q.adaptive_lifo, now),
                }),
            }),
            shards: (cfg.queue.is_none() && !partitioned).then(|| {
                let n = std::thread::available_parallelism().map_or(4, |n| n.get());
                Shards::new(initial, n.min(16), SHARD_BATCH)
            }),
            metrics,
            name: cfg.name,
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub(crate) fn in_flight(&self) -> usize {
        match &self.shards {
            Some(shards) => shards.in_flight(),
            None => (self.word.load(Ordering::Relaxed) & COUNT_MASK) as usize,
        }
    }

    pub(crate) fn queued(&self) -> usize {
        self.queue
            .as_ref()
            .map_or(0, |q| q.len.load(Ordering::Relaxed))
    }

    pub(crate) fn min_rtt(&self) -> Option<Duration> {
        match self.min_rtt_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    pub(crate) fn is_partitioned(&self) -> bool {
        self.partitioned
    }

    /// Maps a class name to a partition; unknown names go to the last partition.
    pub(crate) fn partition_index(&self, name: &str) -> usize {
        self.partitions
            .iter()
            .position(|p| p.name == name)
            .unwrap_or(self.partitions.len() - 1)
    }

    /// Whether new requests must queue behind others (queue mode with waiters).
    #[inline]
    pub(crate) fn queue_busy(&self) -> bool {
        match &self.queue {
            Some(q) => q.len.load(Ordering::SeqCst) > 0,
            None => false,
        }
    }

    /// A partition's guaranteed share of `limit` (at least 1).
    fn guarantee(&self, p: usize, limit: usize) -> usize {
        ((limit as f64 * self.partitions[p].share) as usize).max(1)
    }

    /// `now` in ns since the limiter was built, plus one (so that 0 can mean "none").
    pub(crate) fn nanos(&self, now: Instant) -> u64 {
        self.epoch.nanos(now).saturating_add(1)
    }

    /// One request in this many is measured: `sample_every × 2^shift`.
    #[inline]
    fn sample_interval(&self) -> u64 {
        u64::from(self.sample_every) << self.sample_shift.load(Ordering::Relaxed)
    }

    /// Picks the measured requests: one in [`sample_interval`](Self::sample_interval).
    #[inline]
    fn sample_mask(&self) -> u64 {
        self.sample_interval() - 1
    }

    /// Tries to admit a request of partition `p`. Lock-free.
    #[inline]
    pub(crate) fn try_acquire(&self, p: usize) -> Option<Ticket> {
        if let Some(shards) = &self.shards {
            let (i, sampled) =
                crate::shards::admit_on_this_thread(self.sample_mask() as u32, |thread| {
                    let i = shards.index(thread);
                    shards.acquire(i).then_some(i)
                })?;
            // Counting in-flight requests reads every shard: only measured requests need it.
            let in_flight = if sampled { shards.in_flight() } else { 0 };
            return Some(Ticket {
                in_flight,
                sampled,
                slot: i,
            });
        }
        let limit = self.limit.load(Ordering::Relaxed);
        let prev = self.word.fetch_add(SEQ_ONE | 1, Ordering::SeqCst);
        let before = (prev & COUNT_MASK) as usize;
        // A rejected attempt takes its sequence number back too, so that only admitted
        // requests are counted for sampling (see `shards::admit_on_this_thread`); concurrent
        // attempts may then share a number, which only makes the sampling slightly uneven.
        if before >= limit {
            self.word.fetch_sub(SEQ_ONE | 1, Ordering::SeqCst);
            if self.partitioned {
                self.claim(p, limit);
            }
            return None;
        }
        if self.partitioned && !self.admit_partition(p, before + 1, limit) {
            self.word.fetch_sub(SEQ_ONE | 1, Ordering::SeqCst);
            return None;
        }
        Some(Ticket {
            in_flight: before + 1,
            sampled: (prev >> 32) & self.sample_mask() == 0,
            slot: p,
        })
    }

    /// A partition below its guarantee was turned away because the total is at the limit:
    /// from now on other partitions may not borrow its unused share (for `claim_ttl`).
    #[cold]
    fn claim(&self, p: usize, limit: usize) {
        let part = &self.partitions[p];
        if part.in_flight.load(Ordering::Relaxed) < self.guarantee(p, limit) {
            let until = self.nanos(Instant::now() + self.claim_ttl);
            part.claim_until.fetch_max(until, Ordering::Relaxed);
        }
    }

    /// Partition admission, once the total is known to be within the limit.
    ///
    /// A partition below its guarantee is always admitted. Above it, it borrows: admitted only
    /// if the total stays within `limit` minus the unused guarantees of the other partitions
    /// that are *active* (have requests in flight, or claimed their share recently). Best-effort
    /// traffic can therefore use idle capacity, but never the share a busy critical class is
    /// entitled to: it is shed first.
    fn admit_partition(&self, p: usize, total: usize, limit: usize) -> bool {
        let part = &self.partitions[p];
        let prev = part.in_flight.fetch_add(1, Ordering::SeqCst);
        if prev < self.guarantee(p, limit) {
            return true;
        }
        let mut now_ns = None;
        let mut reserved = 0;
        for (q, other) in self.partitions.iter().enumerate() {
            if q == p {
                continue;
            }
            let used = other.in_flight.load(Ordering::SeqCst);
            let active = used > 0 || {
                let claim = other.claim_until.load(Ordering::Relaxed);
                claim != 0 && claim > *now_ns.get_or_insert_with(|| self.nanos(Instant::now()))
            };
            if active {
                reserved += self.guarantee(q, limit).saturating_sub(used);
            }
        }
        if total + reserved <= limit {
            true
        } else {
            part.in_flight.fetch_sub(1, Ordering::SeqCst);
            false
        }
    }

    /// Returns one permit (of shard or partition `p`).
    #[inline]
    fn release(&self, p: usize) {
        if let Some(shards) = &self.shards {
            shards.release(p);
            return;
        }
        if self.partitioned {
            self.partitions[p].in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        self.word.fetch_sub(1, Ordering::SeqCst);
    }

    /// Turns a finished request into a sample. A measured request (`start` known) stands for
    /// `sample_every` requests; an unmeasured one is fed only when it was dropped (drops are
    /// too important to sample away), with the smoothed RTT standing in for its own.
    #[inline(never)]
    fn sample(&self, start: u64, in_flight: usize, dropped: bool) {
        let now = Instant::now();
        let sample = if start != 0 {
            let rtt = Duration::from_nanos(self.nanos(now).saturating_sub(start));
            let weight = self.sample_interval().min(u64::from(u32::MAX)) as u32;
            // Read before swapping: no write to the shared line while nothing is turned away.
            let saturated = self.saturated.load(Ordering::Relaxed)
                && self.saturated.swap(false, Ordering::Relaxed);
            Sample::new(rtt, in_flight, dropped)
                .with_weight(weight)
                .with_saturated(saturated)
        } else if dropped {
            let rtt = Duration::from_nanos(self.rtt_ns.load(Ordering::Relaxed));
            Sample::new(rtt, self.in_flight(), true)
        } else {
            return;
        };
        self.record(sample, now);
    }

    /// Feeds a sample to the algorithm, unless another completion is doing so right now.
    fn record(&self, sample: Sample, now: Instant) {
        let mut updater = match self.algo.try_lock() {
            Ok(u) => u,
            Err(std::sync::TryLockError::WouldBlock) => return,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        };
        let new = updater
            .limit
            .update(sample, now)
            .clamp(1, COUNT_MASK as usize);
        let min_rtt = updater.limit.min_rtt();
        self.pace(&mut updater, now);
        drop(updater);
        // Only the lock holder writes these, so plain loads and stores suffice.
        let rtt = sample.rtt.as_nanos().min(u128::from(u64::MAX)) as u64;
        let old_rtt = self.rtt_ns.load(Ordering::Relaxed);
        let smoothed = if old_rtt == 0 {
            rtt
        } else {
            old_rtt - old_rtt / 8 + rtt / 8
        };
        self.rtt_ns.store(smoothed.max(1), Ordering::Relaxed);
        if let Some(min) = min_rtt {
            self.min_rtt_ns.store(
                u64::try_from(min.as_nanos()).unwrap_or(u64::MAX).max(1),
                Ordering::Relaxed,
            );
            self.metrics.min_rtt.set(min.as_secs_f64());
        }
        self.metrics.in_flight.set(self.in_flight() as f64);
        // Read before writing: in the steady state the limit does not change, and a store
        // would pull the line away from every other core.
        let old = self.limit.load(Ordering::Relaxed);
        if old != new {
            self.limit.store(new, Ordering::Relaxed);
            if let Some(shards) = &self.shards {
                shards.resize(old, new);
            }
            self.metrics.limit.set(new as f64);
            tracing::debug!(name = %self.name, old, new, rtt = ?sample.rtt, "concurrency limit changed");
        }
    }

    /// Keeps the measured requests under `max_samples_per_sec`: every measured request costs a
    /// few writes to lines that all cores share (this lock, the algorithm's state, the smoothed
    /// RTT), so at high request rates measuring a fixed share of them would stop admission
    /// from scaling across cores. Once per rate window, the interval doubles while the rate is
    /// over the cap and halves (down to `sample_every`) while it is under a quarter of it.
    /// Called by the updater only.
    fn pace(&self, updater: &mut Updater, now: Instant) {
        updater.samples += 1;
        let t = self.nanos(now);
        let elapsed = t.saturating_sub(updater.since);
        if elapsed < RATE_WINDOW_NS {
            return;
        }
        let per_sec = updater.samples as f64 * 1e9 / elapsed as f64;
        let cap = f64::from(self.max_samples_per_sec);
        let shift = self.sample_shift.load(Ordering::Relaxed);
        let next = if per_sec > cap {
            (shift + (per_sec / cap).log2().ceil() as u32).min(MAX_SAMPLE_SHIFT)
        } else if per_sec < cap / 4.0 && shift > 0 {
            shift - 1
        } else {
            shift
        };
        if next != shift {
            self.sample_shift.store(next, Ordering::Relaxed);
        }
        updater.since = t;
        updater.samples = 0;
    }

    /// The hint given to rejected callers: twice the smoothed RTT, clamped.
    pub(crate) fn retry_after(&self) -> Duration {
        let (min, max) = self.retry_after;
        let rtt = Duration::from_nanos(self.rtt_ns.load(Ordering::Relaxed));
        (rtt * 2).clamp(min, max)
    }

    /// The rejection for partition `p`, counted.
    pub(crate) fn reject(&self, p: usize) -> Overloaded {
        self.partitions[p].rejected.increment(1);
        self.saturated.store(true, Ordering::Relaxed);
        Overloaded::with_retry_after(self.retry_after())
    }

    /// Queues a request of partition `p`. `Err` if the queue is full.
    pub(crate) fn enqueue(
        self: &Arc<Self>,
        p: usize,
        deadline: Option<Deadline>,
        now: Instant,
    ) -> Result<oneshot::Receiver<Grant>, ()> {
        self.saturated.store(true, Ordering::Relaxed);
        let Some(queue) = &self.queue else {
            return Err(());
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut state = queue.lock();
            if state.entries.len() >= queue.capacity {
                state.entries.retain(|e| !e.tx.is_closed());
                if state.entries.len() >= queue.capacity {
                    queue.len.store(state.entries.len(), Ordering::SeqCst);
                    return Err(());
                }
            }
            if state.entries.is_empty() {
                state.codel.observe_empty(now);
            }
            state.entries.push_back(Entry {
                tx,
                enqueued: now,
                deadline,
                partition: p,
            });
            queue.len.store(state.entries.len(), Ordering::SeqCst);
        }
        // A permit may have been returned between the failed admission and the push.
        self.drain();
        Ok(rx)
    }

    /// The longest a queued request may wait.
    pub(crate) fn max_queue_wait(&self) -> Duration {
        self.queue.as_ref().map_or(Duration::ZERO, |q| q.interval)
    }

    /// Forgets waiters that gave up.
    pub(crate) fn purge(&self) {
        if let Some(queue) = &self.queue {
            let mut state = queue.lock();
            state.entries.retain(|e| !e.tx.is_closed());
            queue.len.store(state.entries.len(), Ordering::SeqCst);
        }
    }

    /// Hands free permits to queued requests: sheds those that waited too long (CoDel) or whose
    /// deadline passed, then admits in FIFO order, or LIFO while the queue stands.
    pub(crate) fn drain(self: &Arc<Self>) {
        let Some(queue) = &self.queue else { return };
        loop {
            let now = Instant::now();
            let mut orphan = None;
            {
                let mut state = queue.lock();
                let QueueState { entries, codel } = &mut *state;
                let mut i = 0;
                while i < entries.len() {
                    let e = &entries[i];
                    let grant = if e.tx.is_closed() {
                        None
                    } else if e.deadline.is_some_and(|d| d.is_expired(now)) {
                        Some(Grant::Expired)
                    } else if codel.expired(e.enqueued, now) {
                        Some(Grant::Shed(self.reject(e.partition)))
                    } else {
                        i += 1;
                        continue;
                    };
                    if let (Some(e), Some(grant)) = (entries.remove(i), grant) {
                        let _ = e.tx.send(grant);
                    }
                }
                if entries.is_empty() {
                    codel.observe_empty(now);
                    queue.len.store(0, Ordering::SeqCst);
                    return;
                }
                let lifo = codel.lifo(now);
                let n = entries.len();
                let mut granted = None;
                for i in 0..n {
                    let idx = if lifo { n - 1 - i } else { i };
                    if let Some(t) = self.try_acquire(entries[idx].partition) {
                        granted = Some((idx, t));
                        break;
                    }
                    if !self.partitioned {
                        break; // everyone competes for the same permits
                    }
                }
                let Some((idx, ticket)) = granted else {
                    queue.len.store(n, Ordering::SeqCst);
                    return;
                };
                let Some(entry) = entries.remove(idx) else {
                    return;
                };
                queue.len.store(entries.len(), Ordering::SeqCst);
                self.metrics
                    .queue_time
                    .record(now.saturating_duration_since(entry.enqueued).as_secs_f64());
                let permit = Permit::new(Local::new(self.clone()), ticket);
                if let Err(Grant::Admitted(p)) = entry.tx.send(Grant::Admitted(permit)) {
                    orphan = Some(p);
                }
            }
            // The waiter vanished after all: its permit is returned outside the lock (which
            // drains again).
            drop(orphan);
        }
    }
}

/// One service clone's reference to the shared limiter.
///
/// Permits hold an `Arc<Local>` rather than the `Arc<Limiter>` itself: each service clone
/// (usually one per connection, or per thread) then counts its own permits, and requests on
/// different threads do not all bump one shared reference count.
#[derive(Debug)]
pub(crate) struct Local {
    pub(crate) limiter: Arc<Limiter>,
}

impl Local {
    pub(crate) fn new(limiter: Arc<Limiter>) -> Arc<Self> {
        Arc::new(Self { limiter })
    }
}

/// An admitted request's hold on the limiter: returned on drop, so success, error and
/// cancellation all release it. A measured request also reports its sample when dropped.
pub(crate) struct Permit {
    local: Arc<Local>,
    /// Admission time in ns since the limiter's epoch, plus one; 0 when not measured.
    start: u64,
    /// The shard or partition the permit returns to.
    slot: u32,
    /// In flight at admission (measured requests only).
    in_flight: u32,
    /// 0: no sample; 1: a sample; 2: a dropped sample.
    outcome: u8,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("slot", &self.slot)
            .field("sampled", &self.sampled())
            .finish()
    }
}

impl Permit {
    #[inline]
    pub(crate) fn new(local: Arc<Local>, ticket: Ticket) -> Self {
        let start = if ticket.sampled {
            local.limiter.nanos(Instant::now())
        } else {
            0
        };
        Self {
            local,
            start,
            slot: ticket.slot as u32,
            in_flight: ticket.in_flight.min(u32::MAX as usize) as u32,
            outcome: 0,
        }
    }

    /// Whether this request is measured.
    #[inline]
    pub(crate) fn sampled(&self) -> bool {
        self.start != 0
    }

    /// Records how the request ended: `Some(dropped)` to feed a sample, `None` to ignore it.
    /// Unmeasured requests only report drops.
    pub(crate) fn finish(&mut self, dropped: Option<bool>) {
        self.outcome = match dropped {
            Some(true) => 2,
            Some(false) if self.sampled() => 1,
            _ => 0,
        };
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let limiter = &self.local.limiter;
        if self.outcome != 0 {
            limiter.sample(self.start, self.in_flight as usize, self.outcome == 2);
        }
        limiter.release(self.slot as usize);
        if limiter.queue_busy() {
            limiter.drain();
        }
    }
}
