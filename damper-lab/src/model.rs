//! The simulated world: requests, the run's recorder, and the backend model (a Tower service).
//!
//! A replica is `count attempts → tower-fault-injection (errors, hangs) → Server` where the server has a
//! fixed number of workers, a FIFO queue (unbounded by default, like a naive server) and a
//! lognormal service time. Like a naive server it keeps working on requests whose caller has
//! gone away: that wasted work is what turns retries into metastable overload.

// The lab is single-threaded (one current-thread runtime per run); these locks are never
// contended and never held across an await. Tower's `Buffer` and `BoxCloneService` need `Send`
// futures, which rules out `Rc<RefCell<_>>`.
#![allow(clippy::disallowed_types)]

use crate::scenario::{Fault, Scenario};
use damper_core::BoxError;
use damper_core::classify::{Classify, Failure, FailureKind, Outcome, classify_error};
use damper_core::deadline::{Deadline, HasDeadline};
use damper_core::error::find;
use damper_core::pushback::Pushback;
use damper_core::rng::{AtomicRng, Random, SplitMix64};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower::Service;

/// One logical request: what a user asked for, across every attempt, hedge and retry.
#[derive(Debug)]
pub struct Logical {
    /// When the user sent it.
    pub born: Instant,
    /// When it must have succeeded.
    pub deadline: Deadline,
    ok_at: OnceLock<Instant>,
}

impl Logical {
    /// A logical request born at `born` with `deadline`.
    pub fn new(born: Instant, deadline: Deadline) -> Self {
        Self {
            born,
            deadline,
            ok_at: OnceLock::new(),
        }
    }

    /// Marks it successful at `at`.
    pub fn succeed(&self, at: Instant) {
        let _ = self.ok_at.set(at);
    }

    /// Whether it had succeeded by `at`.
    pub fn succeeded_by(&self, at: Instant) -> bool {
        self.ok_at.get().is_some_and(|t| *t <= at)
    }
}

/// An attempt's request: a handle on its logical request. Cheap to clone, so retries and hedges
/// can copy it.
#[derive(Debug, Clone)]
pub struct Req {
    /// The logical request.
    pub logical: Arc<Logical>,
}

impl HasDeadline for Req {
    fn deadline(&self) -> Option<Deadline> {
        Some(self.logical.deadline)
    }

    fn set_deadline(&mut self, _deadline: Deadline) -> bool {
        false
    }
}

/// No wire headers in the simulation: the deadline travels in the request itself.
impl tower_adaptive_timeout::DeadlineHeaders for Req {}

/// A failure the simulated server answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerError {
    /// The queue was full (a 503 from the server, without `Retry-After`).
    QueueFull,
    /// The server went away without answering.
    Gone,
    /// A server-side shedder rejected the request: on the wire a 503 with `Retry-After` (or
    /// `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms`) when the shedder gave a hint.
    Shed {
        /// The pushback the server sent, if any.
        retry_after: Option<Duration>,
    },
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::QueueFull => f.write_str("server queue full"),
            ServerError::Gone => f.write_str("server went away"),
            ServerError::Shed { .. } => f.write_str("server shed the request"),
        }
    }
}

impl std::error::Error for ServerError {}

/// How a client reads the simulated server's answers — the lab's wire protocol, as
/// `HttpClassifier` reads status codes and `Retry-After`: a shed or a full queue is the server
/// saying it is overloaded (503 / `RESOURCE_EXHAUSTED`), with its pushback when it sent one;
/// every other error is classified by [`classify_error`] (a retryable failure).
#[derive(Debug, Clone, Copy, Default)]
pub struct WireClassifier;

impl<T> Classify<T, BoxError> for WireClassifier {
    fn classify(&self, result: &Result<T, BoxError>) -> Outcome {
        let e = match result {
            Ok(_) => return Outcome::Success,
            Err(e) => e,
        };
        match find::<ServerError>(&**e) {
            Some(ServerError::Shed { retry_after }) => Outcome::Failure(
                Failure::retryable(FailureKind::Overload)
                    .with_pushback(retry_after.map(Pushback::After)),
            ),
            Some(ServerError::QueueFull) => {
                Outcome::Failure(Failure::retryable(FailureKind::Overload))
            }
            _ => classify_error(&**e),
        }
    }
}

/// Everything a run records, per second of virtual time.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RunData {
    /// Logical requests born in each second.
    pub offered: Vec<u64>,
    /// Of those, how many succeeded before their deadline.
    pub good: Vec<u64>,
    /// Logical requests born in each 100 ms of the run (for `recovery_ms`; not serialized).
    pub offered_100ms: Vec<u64>,
    /// Of those, how many succeeded before their deadline.
    pub good_100ms: Vec<u64>,
    /// Backend attempts received in each second.
    pub attempts: Vec<u64>,
    /// Backend attempts, by the second their logical request was born.
    pub attempts_by_birth: Vec<u64>,
    /// Latency of each success, microseconds.
    pub latencies_us: Vec<u64>,
    /// Attempts abandoned by the client that the server then completed in time.
    pub false_timeouts: u64,
    /// Of those, by the second the server completed them.
    pub false_timeouts_by_second: Vec<u64>,
}

impl RunData {
    fn sized(seconds: usize) -> Self {
        Self {
            offered: vec![0; seconds],
            good: vec![0; seconds],
            offered_100ms: vec![0; seconds * TENTHS],
            good_100ms: vec![0; seconds * TENTHS],
            attempts: vec![0; seconds],
            attempts_by_birth: vec![0; seconds],
            latencies_us: Vec::new(),
            false_timeouts: 0,
            false_timeouts_by_second: vec![0; seconds],
        }
    }
}

/// 100 ms bins in a second.
const TENTHS: usize = 10;

/// Collects a run's [`RunData`].
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    data: Mutex<RunData>,
}

impl Recorder {
    /// A recorder for a run starting at `start` and lasting `seconds`.
    pub fn new(start: Instant, seconds: usize) -> Self {
        Self {
            start,
            data: Mutex::new(RunData::sized(seconds)),
        }
    }

    /// The second of the run `t` falls in (events past the last second are not recorded).
    pub fn second(&self, t: Instant) -> usize {
        t.saturating_duration_since(self.start).as_secs() as usize
    }

    /// The 100 ms bin of the run `t` falls in.
    pub fn tenth(&self, t: Instant) -> usize {
        (t.saturating_duration_since(self.start).as_millis() / 100) as usize
    }

    fn with(&self, f: impl FnOnce(&mut RunData)) {
        f(&mut self.data.lock().expect("recorder lock"))
    }

    fn bump(v: &mut [u64], i: usize) {
        if let Some(x) = v.get_mut(i) {
            *x += 1;
        }
    }

    /// A logical request was born.
    pub fn offered(&self, born: Instant) {
        let (s, b) = (self.second(born), self.tenth(born));
        self.with(|d| {
            Self::bump(&mut d.offered, s);
            Self::bump(&mut d.offered_100ms, b);
        });
    }

    /// A logical request succeeded at `at`.
    pub fn success(&self, born: Instant, at: Instant) {
        let (s, b) = (self.second(born), self.tenth(born));
        let us = at.saturating_duration_since(born).as_micros() as u64;
        self.with(|d| {
            Self::bump(&mut d.good, s);
            Self::bump(&mut d.good_100ms, b);
            d.latencies_us.push(us);
        });
    }

    /// The backend received an attempt.
    pub fn attempt(&self, req: &Req) {
        let now = self.second(Instant::now());
        let born = self.second(req.logical.born);
        self.with(|d| {
            Self::bump(&mut d.attempts, now);
            Self::bump(&mut d.attempts_by_birth, born);
        });
    }

    fn false_timeout(&self, at: Instant) {
        let s = self.second(at);
        self.with(|d| {
            d.false_timeouts += 1;
            Self::bump(&mut d.false_timeouts_by_second, s);
        });
    }

    /// Takes the data out.
    pub fn take(&self) -> RunData {
        std::mem::take(&mut self.data.lock().expect("recorder lock"))
    }
}

/// The boxed future every simulated service returns.
pub type BoxFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

struct Job {
    req: Req,
    tx: oneshot::Sender<()>,
}

#[derive(Default)]
struct ServerState {
    busy: u32,
    queue: VecDeque<Job>,
}

struct ServerShared {
    state: Mutex<ServerState>,
    workers: u32,
    queue_bound: Option<usize>,
    median: f64,
    sigma: f64,
    faults: Vec<Fault>,
    start: Instant,
    rng: AtomicRng,
    rec: Arc<Recorder>,
}

/// One replica's server: workers, a FIFO queue and lognormal service times, with the
/// scenario's latency-multiplier and capacity faults applied.
#[derive(Clone)]
pub struct Server {
    shared: Arc<ServerShared>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("workers", &self.shared.workers)
            .finish()
    }
}

const Z99: f64 = 2.326_347_874_040_841;

impl Server {
    /// The server of replica `index` of `sc`.
    pub fn new(sc: &Scenario, index: u32, start: Instant, seed: u64, rec: Arc<Recorder>) -> Self {
        let faults = sc
            .faults
            .iter()
            .filter(|f| f.applies_to(index) && (f.latency_multiplier != 1.0 || f.capacity < 1.0))
            .cloned()
            .collect();
        Self {
            shared: Arc::new(ServerShared {
                state: Mutex::new(ServerState::default()),
                workers: sc.workers,
                queue_bound: sc.queue.map(|q| q as usize),
                median: sc.median,
                sigma: (sc.p99 / sc.median).ln() / Z99,
                faults,
                start,
                rng: AtomicRng::new(seed),
                rec,
            }),
        }
    }
}

impl ServerShared {
    fn fault_at(&self, now: Instant) -> Option<&Fault> {
        let t = now.saturating_duration_since(self.start).as_secs_f64();
        self.faults.iter().find(|f| f.start <= t && t < f.end)
    }

    fn capacity_at(&self, now: Instant) -> u32 {
        match self.fault_at(now) {
            Some(f) if f.capacity < 1.0 => {
                ((f64::from(self.workers) * f.capacity).round() as u32).max(1)
            }
            _ => self.workers,
        }
    }

    fn service_time(&self, now: Instant) -> Duration {
        let rng = &self.rng;
        let u1 = 1.0 - rng.next_f64();
        let u2 = rng.next_f64();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let mut secs = self.median * (self.sigma * z).exp();
        if let Some(f) = self.fault_at(now)
            && f.latency_multiplier != 1.0
            && (f.multiplier_probability >= 1.0 || rng.next_f64() < f.multiplier_probability)
        {
            secs *= f.latency_multiplier;
        }
        Duration::from_secs_f64(secs)
    }
}

/// A worker: serves `job`, then keeps taking jobs from the queue until it is empty. Boxed
/// because a worker may start others.
fn work(shared: Arc<ServerShared>, job: Job) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(work_loop(shared, job))
}

async fn work_loop(shared: Arc<ServerShared>, mut job: Job) {
    loop {
        let d = shared.service_time(Instant::now());
        tokio::time::sleep(d).await;
        let done = Instant::now();
        if job.tx.is_closed() {
            let l = &job.req.logical;
            if done < l.deadline.instant() && !l.succeeded_by(done) {
                shared.rec.false_timeout(done);
            }
        }
        let _ = job.tx.send(());
        let mut st = shared.state.lock().expect("server lock");
        let cap = shared.capacity_at(done);
        if st.busy > cap {
            st.busy -= 1;
            return;
        }
        let Some(next) = st.queue.pop_front() else {
            st.busy -= 1;
            return;
        };
        job = next;
        // Capacity may have grown back: start more workers.
        while st.busy < cap {
            let Some(extra) = st.queue.pop_front() else {
                break;
            };
            st.busy += 1;
            tokio::spawn(work(shared.clone(), extra));
        }
    }
}

impl Service<Req> for Server {
    type Response = ();
    type Error = BoxError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> BoxFuture {
        let (tx, rx) = oneshot::channel();
        let job = Job { req, tx };
        let shared = &self.shared;
        let mut st = shared.state.lock().expect("server lock");
        if st.queue.is_empty() && st.busy < shared.capacity_at(Instant::now()) {
            st.busy += 1;
            tokio::spawn(work(shared.clone(), job));
        } else if shared.queue_bound.is_some_and(|b| st.queue.len() >= b) {
            return Box::pin(std::future::ready(Err(ServerError::QueueFull.into())));
        } else {
            st.queue.push_back(job);
        }
        Box::pin(async move { rx.await.map_err(|_| BoxError::from(ServerError::Gone)) })
    }
}

/// Derives an independent seed for `label` from the run's seed.
pub fn sub_seed(seed: u64, label: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in label.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    SplitMix64::new(seed ^ h).next_u64()
}

/// An arrival: when, and from which client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// Seconds from the start.
    pub at: f64,
    /// Which client sends it.
    pub client: u32,
}

/// Open-loop Poisson arrivals with a piecewise-constant rate; the same for every stack.
pub fn arrivals(sc: &Scenario, seed: u64) -> Vec<Arrival> {
    let mut rng = SplitMix64::new(sub_seed(seed, "arrivals"));
    let mut out = Vec::new();
    let mut t = 0.0;
    while t < sc.duration {
        let rate = sc.rate_at(t);
        // The next rate change, if any: the exponential is memoryless, so restarting the draw
        // there is exact.
        let next_change = sc
            .rates
            .iter()
            .map(|r| r.0)
            .find(|&from| from > t)
            .unwrap_or(f64::INFINITY);
        if rate <= 0.0 {
            t = next_change;
            continue;
        }
        let gap = -(1.0 - rng.next_f64()).ln() / rate;
        if t + gap >= next_change {
            t = next_change;
            continue;
        }
        t += gap;
        if t >= sc.duration {
            break;
        }
        let client = if sc.clients > 1 {
            (rng.next_u64() % u64::from(sc.clients)) as u32
        } else {
            0
        };
        out.push(Arrival { at: t, client });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{expand, parse};

    fn scenario(extra: &str) -> Scenario {
        let text = format!(
            "name = \"m\"\nduration_s = 20\n[backend]\nworkers = 2\nmedian_ms = 10\np99_ms = 10\n[load]\nrate = 100\ndeadline_ms = 1000\n{extra}"
        );
        expand(&parse(&text, "m").unwrap(), false).remove(0)
    }

    #[test]
    fn arrivals_follow_the_rate_steps() {
        let sc = scenario("[[load.steps]]\nat_s = 10\nrate = 400\n");
        let a = arrivals(&sc, 1);
        let first = a.iter().filter(|x| x.at < 10.0).count() as f64;
        let second = a.iter().filter(|x| x.at >= 10.0).count() as f64;
        assert!((first - 1000.0).abs() < 120.0, "{first}");
        assert!((second - 4000.0).abs() < 250.0, "{second}");
        assert_eq!(a, arrivals(&sc, 1));
        assert_ne!(a, arrivals(&sc, 2));
    }

    #[test]
    fn the_recorder_keeps_seconds_and_100ms_bins_by_birth() {
        let start = Instant::now();
        let rec = Recorder::new(start, 3);
        let at = |ms: u64| start + Duration::from_millis(ms);
        rec.offered(at(1250));
        rec.offered(at(1299));
        rec.offered(at(2999));
        rec.success(at(1250), at(2100));
        rec.offered(at(3000)); // past the run: not recorded
        let d = rec.take();
        assert_eq!(d.offered, [0, 2, 1]);
        assert_eq!(d.good, [0, 1, 0]);
        assert_eq!(d.offered_100ms.len(), 30);
        assert_eq!(d.offered_100ms[12], 2);
        assert_eq!(d.offered_100ms[29], 1);
        assert_eq!(d.good_100ms[12], 1);
        assert_eq!(d.offered_100ms.iter().sum::<u64>(), 3);
        assert_eq!(d.good_100ms.iter().sum::<u64>(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn server_queues_fifo_beyond_its_workers() {
        use tower::ServiceExt;
        let sc = scenario("");
        let start = Instant::now();
        let rec = Arc::new(Recorder::new(start, 30));
        let server = Server::new(&sc, 0, start, 1, rec);
        let deadline = Deadline::after(start, Duration::from_secs(5));
        let mut done = Vec::new();
        let mut futs = Vec::new();
        for _ in 0..4 {
            let req = Req {
                logical: Arc::new(Logical::new(start, deadline)),
            };
            futs.push(tokio::spawn(server.clone().oneshot(req)));
        }
        for f in futs {
            f.await.unwrap().unwrap();
            done.push(start.elapsed().as_millis());
        }
        // p99 == median: every service takes exactly 10 ms; two workers, so 2 at 10, 2 at 20.
        assert_eq!(done, [10, 10, 20, 20]);
    }

    #[tokio::test(start_paused = true)]
    async fn capacity_cut_and_latency_multiplier_apply_during_the_fault() {
        use tower::ServiceExt;
        // Two workers, fixed 10 ms service; from 0 to 1 s one worker left and service x3.
        let sc = scenario(
            "[[faults]]\nstart_s = 0\nend_s = 1\ncapacity = 0.5\nlatency_multiplier = 3.0\n",
        );
        let start = Instant::now();
        let rec = Arc::new(Recorder::new(start, 30));
        let server = Server::new(&sc, 0, start, 1, rec);
        let deadline = Deadline::after(start, Duration::from_secs(5));
        let mut futs = Vec::new();
        for _ in 0..3 {
            let req = Req {
                logical: Arc::new(Logical::new(start, deadline)),
            };
            futs.push(tokio::spawn(server.clone().oneshot(req)));
        }
        let mut done = Vec::new();
        for f in futs {
            f.await.unwrap().unwrap();
            done.push(start.elapsed().as_millis());
        }
        // One worker, 30 ms each, one after another.
        assert_eq!(done, [30, 60, 90]);
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_queue_rejects_and_abandoned_work_counts_as_false_timeout() {
        let mut sc = scenario("");
        sc.queue = Some(1);
        sc.workers = 1;
        let start = Instant::now();
        let rec = Arc::new(Recorder::new(start, 30));
        let server = Server::new(&sc, 0, start, 1, rec.clone());
        let deadline = Deadline::after(start, Duration::from_secs(5));
        let req = || Req {
            logical: Arc::new(Logical::new(start, deadline)),
        };
        // `Server::call` enqueues at once (it is always ready).
        let mut s = server.clone();
        let a = s.call(req());
        let b = s.call(req());
        let c = s.call(req()).await;
        assert_eq!(
            c.unwrap_err().downcast_ref::<ServerError>(),
            Some(&ServerError::QueueFull)
        );
        // The caller of `a` gives up after 1 ms; the server still finishes it in time.
        let _ = tokio::time::timeout(Duration::from_millis(1), a).await;
        b.await.unwrap();
        let data = rec.take();
        assert_eq!(data.false_timeouts, 1);
        assert_eq!(data.false_timeouts_by_second[0], 1);
    }

    #[test]
    fn the_wire_classifier_reads_sheds_as_overload_with_pushback() {
        let c = WireClassifier;
        let shed: Result<(), BoxError> = Err(ServerError::Shed {
            retry_after: Some(Duration::from_millis(30)),
        }
        .into());
        assert_eq!(
            c.classify(&shed),
            Outcome::Failure(
                Failure::retryable(FailureKind::Overload)
                    .with_pushback(Some(Pushback::After(Duration::from_millis(30))))
            )
        );
        let full: Result<(), BoxError> = Err(ServerError::QueueFull.into());
        assert_eq!(
            c.classify(&full),
            Outcome::Failure(Failure::retryable(FailureKind::Overload))
        );
        let gone: Result<(), BoxError> = Err(ServerError::Gone.into());
        assert_eq!(
            c.classify(&gone),
            Outcome::Failure(Failure::retryable(FailureKind::Error))
        );
        // A local rejection stays one: it never reached the server.
        let local: Result<(), BoxError> = Err(damper_core::error::Overloaded::new().into());
        assert_eq!(
            c.classify(&local).failure().map(|f| f.kind),
            Some(FailureKind::LocalRejection)
        );
        assert!(c.classify(&Ok::<(), BoxError>(())).is_success());
    }
}
