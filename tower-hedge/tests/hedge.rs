//! Behaviour of the hedge layer against tower-test mocks, in paused time.

use damper_core::budget::TokenBucket;
use damper_core::histogram::LatencyHistogram;
use damper_core::{BoxError, Deadline, HasDeadline};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{self, Instant};
use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok, task};
use tower::{Layer, Service, ServiceExt};
use tower_hedge::{HedgeBuilder, HedgeLayer};
use tower_test::assert_request_eq;
use tower_test::mock::{self, Handle, Mock, Spawn};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A histogram already holding `samples`, so hedging is warm from the first request.
fn histogram(samples: impl IntoIterator<Item = Duration>) -> Arc<LatencyHistogram> {
    let now = Instant::now();
    let h = Arc::new(LatencyHistogram::new(now));
    for d in samples {
        h.record(d, now);
    }
    h
}

/// p95 of 1..=100 ms ≈ 95 ms. The layer does not record, so the histogram stays put; a high
/// `max_extra_load` lets two requests fund a hedge.
fn warm() -> HedgeBuilder {
    HedgeLayer::builder()
        .histogram(histogram((1..=100).map(ms)))
        .record_latencies(false)
        .min_samples(100)
        .max_extra_load(0.5)
        .quantile(0.95)
        // Exact token arithmetic: no decay of the bank.
        .no_bank_decay()
        .burst(3.0)
}

/// Sends `n` requests answered at once: each credits the hedge budget.
async fn fund<S, T>(svc: &mut Spawn<S>, handle: &mut Handle<T, &'static str>, req: T, n: usize)
where
    S: Service<T, Response = &'static str>,
    S::Error: std::fmt::Debug,
    T: Clone,
{
    for _ in 0..n {
        assert_ready_ok!(svc.poll_ready());
        let fut = svc.call(req.clone());
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response("funded");
        fut.await.unwrap();
    }
}

/// Wraps a service and counts response futures dropped before they completed.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    abandoned: Arc<AtomicUsize>,
}

struct TrackedFuture<F> {
    inner: Pin<Box<F>>,
    done: bool,
    abandoned: Arc<AtomicUsize>,
}

impl<F: Future> Future for TrackedFuture<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let out = self.inner.as_mut().poll(cx);
        if out.is_ready() {
            self.done = true;
        }
        out
    }
}

impl<F> Drop for TrackedFuture<F> {
    fn drop(&mut self) {
        if !self.done {
            self.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl<S: Service<R>, R> Service<R> for Tracked<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: R) -> Self::Future {
        TrackedFuture {
            inner: Box::pin(self.inner.call(req)),
            done: false,
            abandoned: self.abandoned.clone(),
        }
    }
}

type Str = &'static str;

/// A warm hedge layer over a tracked mock, funded for one hedge.
async fn setup(
    builder: HedgeBuilder,
) -> (
    Spawn<impl Service<Str, Response = Str, Error = BoxError>>,
    Handle<Str, Str>,
    tower_hedge::HedgeHandle,
    Arc<AtomicUsize>,
) {
    let layer = builder.build().unwrap();
    let stats = layer.handle();
    let (mock, mut handle) = mock::pair::<Str, Str>();
    let abandoned = Arc::new(AtomicUsize::new(0));
    let tracked = Tracked {
        inner: mock,
        abandoned: abandoned.clone(),
    };
    let mut svc = Spawn::new(layer.layer(tracked));
    fund(&mut svc, &mut handle, "fund", 2).await;
    (svc, handle, stats, abandoned)
}

/// Sends `$req`, checks the mock got `$expect`, and polls once; returns the pending future and
/// the first attempt's response handle.
macro_rules! send {
    ($svc:ident, $handle:ident, $req:expr, $expect:expr) => {{
        assert_ready_ok!($svc.poll_ready());
        let mut fut = task::spawn($svc.call($req));
        let primary = assert_request_eq!($handle, $expect);
        assert_pending!(fut.poll());
        (fut, primary)
    }};
}

/// Advances virtual time by `$ms` milliseconds; the future is still pending.
macro_rules! after {
    ($fut:ident, $ms:expr) => {{
        time::advance(ms($ms)).await;
        assert_pending!($fut.poll());
    }};
}

/// Sends "a", lets the hedge go out, and returns the future with both response handles.
macro_rules! hedged {
    ($svc:ident, $handle:ident) => {{
        let (mut fut, primary) = send!($svc, $handle, "a", "a");
        after!(fut, 100);
        let hedge = assert_request_eq!($handle, "a");
        (fut, primary, hedge)
    }};
}

#[tokio::test(start_paused = true)]
async fn delay_follows_the_quantile() {
    let hist = histogram((1..=100).map(ms));
    let (mut svc, mut handle, stats, _) = setup(warm().histogram(hist.clone())).await;

    let (mut fut, _primary) = send!(svc, handle, "a", "a");
    after!(fut, 93);
    assert_pending!(handle.poll_request(), "no hedge before the p95");
    time::advance(ms(4)).await;
    assert!(fut.is_woken());
    assert_pending!(fut.poll());
    assert_request_eq!(handle, "a").send_response("hedged");
    assert_eq!(assert_ready_ok!(fut.poll()), "hedged");
    let d = stats.current_delay().unwrap();
    assert!(d.abs_diff(ms(95)) < ms(2), "{d:?}");

    // Latency steps up: once the cache refreshes, the delay is the new p95.
    for _ in 0..400 {
        hist.record(ms(300), Instant::now());
    }
    time::advance(ms(1000)).await;
    fund(&mut svc, &mut handle, "fund", 2).await;
    let (mut fut, _primary) = send!(svc, handle, "b", "b");
    after!(fut, 290);
    assert_pending!(handle.poll_request(), "the old delay no longer applies");
    after!(fut, 20);
    assert_request_eq!(handle, "b").send_response("hedged");
    assert_ready_ok!(fut.poll());
    let d = stats.current_delay().unwrap();
    assert!(d.abs_diff(ms(300)) < ms(6), "{d:?}");
}

#[tokio::test(start_paused = true)]
async fn first_success_wins_and_the_loser_is_dropped_at_once() {
    let (mut svc, mut handle, stats, abandoned) = setup(warm()).await;
    let (mut fut, _primary, hedge) = hedged!(svc, handle);
    hedge.send_response("hedge");
    assert_eq!(abandoned.load(Ordering::SeqCst), 0);
    assert_eq!(assert_ready_ok!(fut.poll()), "hedge");
    // The primary was dropped before the answer was handed back, not when `fut` is dropped.
    assert_eq!(abandoned.load(Ordering::SeqCst), 1);
    let s = stats.stats();
    assert_eq!((s.hedges_sent, s.hedges_won), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_response_future_drops_every_attempt() {
    let (mut svc, mut handle, stats, abandoned) = setup(warm()).await;
    let (fut, _primary, _hedge) = hedged!(svc, handle);
    drop(fut);
    assert_eq!(abandoned.load(Ordering::SeqCst), 2);
    assert_eq!(stats.stats().hedges_won, 0);
}

#[tokio::test(start_paused = true)]
async fn the_primary_can_still_win() {
    let (mut svc, mut handle, stats, abandoned) = setup(warm()).await;
    let (mut fut, primary, _hedge) = hedged!(svc, handle);
    primary.send_response("primary");
    assert_eq!(assert_ready_ok!(fut.poll()), "primary");
    assert_eq!(abandoned.load(Ordering::SeqCst), 1, "the hedge is dropped");
    let s = stats.stats();
    assert_eq!((s.hedges_sent, s.hedges_won), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn an_error_waits_for_the_other_attempt() {
    let (mut svc, mut handle, _, _) = setup(warm()).await;
    let (mut fut, primary, hedge) = hedged!(svc, handle);
    primary.send_error("primary failed");
    assert_pending!(fut.poll(), "an error does not win while the hedge runs");
    hedge.send_response("hedge");
    assert_eq!(assert_ready_ok!(fut.poll()), "hedge");

    // And the other way round.
    fund(&mut svc, &mut handle, "fund", 2).await;
    let (mut fut, primary, hedge) = hedged!(svc, handle);
    hedge.send_error("hedge failed");
    assert_pending!(fut.poll());
    primary.send_response("primary");
    assert_eq!(assert_ready_ok!(fut.poll()), "primary");
}

#[tokio::test(start_paused = true)]
async fn all_fail_returns_the_first_error() {
    let (mut svc, mut handle, _, _) = setup(warm()).await;
    let (mut fut, primary, hedge) = hedged!(svc, handle);
    hedge.send_error("first");
    assert_pending!(fut.poll());
    primary.send_error("second");
    let err = assert_ready_err!(fut.poll());
    assert_eq!(err.to_string(), "first");
}

#[tokio::test(start_paused = true)]
async fn a_failure_before_the_delay_is_returned_without_a_hedge() {
    let (mut svc, mut handle, stats, _) = setup(warm()).await;
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call("a"));
    assert_request_eq!(handle, "a").send_error("boom");
    assert_eq!(assert_ready_err!(fut.poll()).to_string(), "boom");
    time::advance(ms(500)).await;
    assert_pending!(handle.poll_request());
    assert_eq!(stats.stats().hedges_sent, 0);
}

#[tokio::test(start_paused = true)]
async fn no_hedge_before_min_samples() {
    // 99 samples: one short.
    let builder = warm().histogram(histogram((1..=99).map(ms)));
    let (mut svc, mut handle, stats, _) = setup(builder).await;
    let (mut fut, primary) = send!(svc, handle, "a", "a");
    after!(fut, 5_000);
    assert_pending!(handle.poll_request());
    primary.send_response("primary");
    assert_ready_ok!(fut.poll());
    assert_eq!(stats.stats().hedges_sent, 0);
    assert_eq!(stats.current_delay(), None);
}

#[tokio::test(start_paused = true)]
async fn hedge_is_skipped_when_the_inner_service_is_not_ready() {
    let (mut svc, mut handle, stats, _) = setup(warm().recheck(false)).await;
    let (mut fut, primary) = send!(svc, handle, "a", "a");
    handle.allow(0);
    after!(fut, 100);
    // Capacity returns later: the hedge is not queued behind it.
    handle.allow(10);
    after!(fut, 100);
    assert_pending!(handle.poll_request());
    primary.send_response("primary");
    assert_eq!(assert_ready_ok!(fut.poll()), "primary");
    let s = stats.stats();
    assert_eq!((s.hedges_sent, s.not_ready_skipped), (0, 1));
    // The token was not spent.
    assert!(stats.budget_balance() >= 1.0);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_not_ready_at_the_delay_is_asked_for_again_not_queued() {
    let (mut svc, mut handle, stats, _) = setup(warm()).await;
    let (mut fut, primary) = send!(svc, handle, "a", "a");
    handle.allow(0);
    // The delay (~95 ms) passes with no capacity: nothing is sent or queued.
    after!(fut, 100);
    assert_pending!(handle.poll_request());
    handle.allow(10);
    // Capacity is back, but the next ask is one delay after the first: not yet.
    after!(fut, 80);
    assert_pending!(handle.poll_request());
    after!(fut, 20);
    assert_request_eq!(handle, "a").send_response("hedge");
    assert_eq!(assert_ready_ok!(fut.poll()), "hedge");
    drop(primary);
    let s = stats.stats();
    assert_eq!((s.hedges_sent, s.not_ready_skipped), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_denied_hedge_is_sent_once_the_budget_refills_and_paid_for() {
    // 0.3 of a token per request: after the two funding requests of `setup`, the slow
    // request's hedge finds 0.9 of a token and is denied.
    let (mut svc, mut handle, stats, _) = setup(warm().max_extra_load(0.3)).await;
    let (mut slow, slow_primary) = send!(svc, handle, "slow", "slow");
    after!(slow, 100);
    assert_pending!(handle.poll_request());
    assert_eq!(stats.stats().budget_denied, 1);
    // Another request arrives and answers at once: 1.2 tokens.
    fund(&mut svc, &mut handle, "fund", 1).await;
    // The re-ask one delay later finds the whole token and sends the hedge.
    after!(slow, 100);
    assert_request_eq!(handle, "slow").send_response("hedge");
    assert_eq!(assert_ready_ok!(slow.poll()), "hedge");
    drop(slow_primary);
    let s = stats.stats();
    assert_eq!((s.requests, s.hedges_sent, s.budget_denied), (4, 1, 1));
    assert!(stats.budget_balance() < 1.0, "the hedge paid its token");

    // Without re-asking, the same sequence sends no hedge.
    let (mut svc, mut handle, stats, _) = setup(warm().max_extra_load(0.3).recheck(false)).await;
    let (mut slow, slow_primary) = send!(svc, handle, "slow", "slow");
    after!(slow, 100);
    fund(&mut svc, &mut handle, "fund", 1).await;
    after!(slow, 100);
    assert_pending!(handle.poll_request());
    slow_primary.send_response("primary");
    assert_eq!(assert_ready_ok!(slow.poll()), "primary");
    assert_eq!(stats.stats().hedges_sent, 0);
}

#[tokio::test(start_paused = true)]
async fn hedges_beyond_the_first_go_out_one_delay_apart() {
    let (mut svc, mut handle, stats, abandoned) = setup(warm().max_hedges(2)).await;
    fund(&mut svc, &mut handle, "fund", 2).await;
    let (mut fut, _primary, _hedge1) = hedged!(svc, handle);
    after!(fut, 94);
    assert_pending!(handle.poll_request());
    after!(fut, 4);
    assert_request_eq!(handle, "a").send_response("third");
    assert_eq!(assert_ready_ok!(fut.poll()), "third");
    assert_eq!(abandoned.load(Ordering::SeqCst), 2);
    let s = stats.stats();
    assert_eq!((s.hedges_sent, s.hedges_won), (2, 1));
}

/// How many whole seconds the clock can still move forward from `now`.
fn seconds_left(now: Instant) -> u64 {
    let (mut lo, mut hi) = (0u64, u64::MAX);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if now.checked_add(Duration::from_secs(mid)).is_some() {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// Regression: re-arming the timer for the next hedge added the delay to the clock unchecked
/// (the first arming already used `checked_add`), so a delay the clock could reach once but not
/// twice panicked. Now no further hedge is armed when its instant is past the clock's range.
#[tokio::test(start_paused = true)]
async fn a_hedge_delay_past_the_clocks_range_stops_rearming_without_a_panic() {
    let delay = Duration::from_secs(100);
    let (mut svc, mut handle, stats, _) = setup(warm().fixed_delay(delay).max_hedges(2)).await;
    // Move the clock (with no timer pending, so tokio does not walk its wheel) to 150 s before
    // the end of its range: the first hedge can be armed, a second one delay later cannot.
    // (That far out tokio's timer ticks saturate, so a timer fires as soon as it is polled:
    // the future is first polled once the clock has reached the hedge's instant.)
    time::advance(Duration::from_secs(seconds_left(Instant::now()) - 150)).await;
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call("a"));
    let _primary = assert_request_eq!(handle, "a");
    time::advance(delay).await;
    assert!(Instant::now().checked_add(delay).is_none());
    assert_pending!(fut.poll());
    let hedge = assert_request_eq!(handle, "a");
    time::advance(Duration::from_secs(40)).await;
    assert_pending!(fut.poll());
    assert_pending!(handle.poll_request());
    hedge.send_response("hedge");
    assert_eq!(assert_ready_ok!(fut.poll()), "hedge");
    assert_eq!(stats.stats().hedges_sent, 1);
}

/// A request that counts its clones and may carry a deadline.
#[derive(Debug)]
struct Req {
    id: u32,
    deadline: Option<Deadline>,
    clones: Arc<AtomicUsize>,
}

impl Clone for Req {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Self {
            id: self.id,
            deadline: self.deadline,
            clones: self.clones.clone(),
        }
    }
}

impl PartialEq for Req {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl HasDeadline for Req {
    fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }
    fn set_deadline(&mut self, deadline: Deadline) -> bool {
        self.deadline = Some(deadline);
        true
    }
}

async fn req_setup<E>(
    builder: HedgeBuilder<E>,
) -> (
    Spawn<impl Service<Req, Response = Str, Error = BoxError>>,
    Handle<Req, Str>,
    tower_hedge::HedgeHandle,
)
where
    E: tower_hedge::Eligible<Req> + Clone,
{
    let layer = builder.build().unwrap();
    let stats = layer.handle();
    let (mock, mut handle): (Mock<Req, Str>, _) = mock::pair();
    let mut svc = Spawn::new(layer.layer(mock));
    let funding = Req {
        id: 0,
        deadline: None,
        clones: Arc::new(AtomicUsize::new(0)),
    };
    fund(&mut svc, &mut handle, funding, 4).await;
    (svc, handle, stats)
}

#[tokio::test(start_paused = true)]
async fn ineligible_requests_are_never_cloned_or_hedged() {
    let builder = warm().eligible_with(|r: &Req| r.id.is_multiple_of(2));
    let (mut svc, mut handle, stats) = req_setup(builder).await;
    let clones = Arc::new(AtomicUsize::new(0));
    let make = |id| Req {
        id,
        deadline: None,
        clones: clones.clone(),
    };

    let (odd, even) = (make(1), make(2));
    let (mut odd, odd_primary) = send!(svc, handle, odd, make(1));
    after!(odd, 500);
    assert_pending!(handle.poll_request());
    odd_primary.send_response("odd");
    assert_ready_ok!(odd.poll());
    assert_eq!(clones.load(Ordering::SeqCst), 0, "ineligible: never cloned");

    let (mut even, _primary) = send!(svc, handle, even, make(2));
    assert_eq!(clones.load(Ordering::SeqCst), 1, "one copy for the hedge");
    after!(even, 100);
    assert_request_eq!(handle, make(2)).send_response("even");
    assert_ready_ok!(even.poll());
    assert_eq!(stats.stats().hedges_sent, 1);
}

#[tokio::test(start_paused = true)]
async fn nothing_is_cloned_while_hedging_is_off() {
    let builder = warm().histogram(histogram([ms(5)]));
    let (mut svc, mut handle, _) = req_setup(builder).await;
    let clones = Arc::new(AtomicUsize::new(0));
    let req = Req {
        id: 1,
        deadline: None,
        clones: clones.clone(),
    };
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(req);
    assert_eq!(clones.load(Ordering::SeqCst), 0);
    drop(fut);
    drop(handle.poll_request());
}

#[tokio::test(start_paused = true)]
async fn a_deadline_that_cannot_fit_a_hedge_prevents_it() {
    // p95 ≈ 95 ms, median ≈ 50 ms: a hedge needs more than 145 ms left.
    let (mut svc, mut handle, stats) = req_setup(warm()).await;
    let clones = Arc::new(AtomicUsize::new(0));
    let make = |id, left| Req {
        id,
        deadline: Some(Deadline::after(Instant::now(), ms(left))),
        clones: clones.clone(),
    };

    let (mut tight, primary) = send!(svc, handle, make(1, 140), make(1, 0));
    assert_eq!(clones.load(Ordering::SeqCst), 0, "not armed, not cloned");
    after!(tight, 120);
    assert_pending!(handle.poll_request());
    primary.send_response("tight");
    assert_ready_ok!(tight.poll());
    assert_eq!(stats.stats().deadline_skipped, 1);

    let (mut roomy, _primary) = send!(svc, handle, make(2, 200), make(2, 0));
    after!(roomy, 100);
    assert_request_eq!(handle, make(2, 0)).send_response("roomy");
    assert_ready_ok!(roomy.poll());
    assert_eq!(stats.stats().hedges_sent, 1);
}

#[tokio::test(start_paused = true)]
async fn a_shared_budget_pays_for_hedges_too() {
    let shared = Arc::new(TokenBucket::new(0.1, 10.0, 1.0).unwrap());
    let (mut svc, mut handle, stats, _) = setup(warm().budget(shared.clone())).await;
    let (mut fut, _p, hedge) = hedged!(svc, handle);
    hedge.send_response("hedge");
    assert_ready_ok!(fut.poll());
    assert_eq!(shared.balance(), 0.0);
    // The shared budget is empty now: the next hedge is denied although the own one allows.
    fund(&mut svc, &mut handle, "fund", 2).await;
    let (mut fut, primary) = send!(svc, handle, "b", "b");
    after!(fut, 100);
    assert_pending!(handle.poll_request());
    primary.send_response("b");
    assert_ready_ok!(fut.poll());
    let s = stats.stats();
    assert_eq!((s.hedges_sent, s.budget_denied), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn winners_and_slow_losers_are_recorded_fast_failures_are_not() {
    let hist = histogram((1..=100).map(ms));
    let (mut svc, mut handle, _, _) =
        setup(warm().histogram(hist.clone()).record_latencies(true)).await;
    let count = || hist.count(Instant::now());
    let base = count(); // 100 + the two funding successes
    assert_eq!(base, 102);

    // A fast failure: not recorded.
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call("x"));
    assert_request_eq!(handle, "x").send_error("fast");
    assert_ready_err!(fut.poll());
    assert_eq!(count(), base);

    // The hedge wins after 20 ms: the winner (20 ms) and the superseded primary (≈ 115 ms).
    let (mut fut, _primary, hedge) = hedged!(svc, handle);
    time::advance(ms(20)).await;
    hedge.send_response("hedge");
    assert_ready_ok!(fut.poll());
    assert_eq!(count(), base + 2);

    // The primary wins 5 ms after the hedge left: the hedge's 5 ms says nothing.
    fund(&mut svc, &mut handle, "fund", 2).await;
    let (mut fut, primary, _hedge) = hedged!(svc, handle);
    time::advance(ms(5)).await;
    primary.send_response("primary");
    assert_ready_ok!(fut.poll());
    assert_eq!(count(), base + 2 + 2 + 1);
}

#[tokio::test(start_paused = true)]
async fn a_latency_step_does_not_cause_a_hedge_storm() {
    let latency = Arc::new(AtomicU64::new(10));
    let calls = Arc::new(AtomicU64::new(0));
    let backend = {
        let (latency, calls) = (latency.clone(), calls.clone());
        tower::service_fn(move |_: u32| {
            calls.fetch_add(1, Ordering::SeqCst);
            let l = latency.load(Ordering::SeqCst);
            async move {
                time::sleep(ms(l)).await;
                Ok::<_, BoxError>(())
            }
        })
    };
    // Defaults: 5% extra load, p95, 3 banked hedges at most.
    let layer = HedgeLayer::builder()
        .min_samples(50)
        .refresh(ms(100))
        .build()
        .unwrap();
    let stats = layer.handle();
    let svc = layer.layer(backend);

    let mut tasks = Vec::new();
    let mut at_step = None;
    for i in 0..4000u32 {
        if i == 2000 {
            latency.store(100, Ordering::SeqCst);
            at_step = Some(stats.stats());
        }
        let mut s = svc.clone();
        tasks.push(tokio::spawn(async move { s.ready().await?.call(i).await }));
        time::sleep(ms(1)).await;
        let now = stats.stats();
        assert!(
            now.hedges_sent as f64 <= 0.05 * now.requests as f64,
            "extra load over budget: {now:?}"
        );
        if i == 2500 {
            // Right after the step, every request outlives the old p95; the budget holds the
            // extra load to what it had banked (≤ 3) plus 5% of the new requests.
            let before = at_step.unwrap();
            let extra = now.hedges_sent - before.hedges_sent;
            let new = now.requests - before.requests;
            assert!(extra > 0, "hedging stayed on");
            assert!(
                extra as f64 <= 3.0 + 0.05 * new as f64,
                "{extra} hedges for {new}"
            );
        }
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let end = stats.stats();
    assert_eq!(calls.load(Ordering::SeqCst), end.requests + end.hedges_sent);
}

mod budget_proptest {
    use super::*;
    use proptest::prelude::*;

    /// Requests arrive on even milliseconds (`2 × gap` apart), take `2 × lat` ms, and are
    /// hedged after a fixed 5 ms (odd, so no timer ties). Returns (hedges sent, requests,
    /// calls to the backend).
    /// `burst: Some(b)`: the default exact bucket of `b`; `None`: a decaying bank (seeded).
    fn run(pct: u64, burst: Option<u64>, reqs: &[(u64, u64)], recheck: bool) -> (u64, u64, u64) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let calls = Arc::new(AtomicU64::new(0));
            let backend = {
                let calls = calls.clone();
                tower::service_fn(move |lat: u64| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async move {
                        time::sleep(ms(lat)).await;
                        Ok::<_, BoxError>(())
                    }
                })
            };
            let mut layer = HedgeLayer::builder()
                .fixed_delay(ms(5))
                .max_extra_load(pct as f64 / 100.0)
                .recheck(recheck)
                .seed(pct ^ reqs.len() as u64);
            layer = match burst {
                Some(b) => layer.no_bank_decay().burst(b as f64),
                None => layer
                    .bank_ttl(tower_hedge::policy::BANK_TTL)
                    .burst(100_000.0),
            };
            let layer = layer.build().unwrap();
            let stats = layer.handle();
            let svc = layer.layer(backend);
            let t0 = Instant::now();
            let mut at = 0;
            let mut tasks = Vec::new();
            for &(gap, lat) in reqs {
                at += 2 * gap;
                time::sleep_until(t0 + ms(at)).await;
                let mut s = svc.clone();
                tasks.push(tokio::spawn(
                    async move { s.ready().await?.call(2 * lat).await },
                ));
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            let s = stats.stats();
            (s.hedges_sent, s.requests, calls.load(Ordering::SeqCst))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        // Through the real service in virtual time: requests arrive on even milliseconds, take
        // an even number of milliseconds, and are hedged after a fixed 5 ms (odd, so no
        // timer ties). The hedges sent equal an exact model of the budget, and never exceed
        // max_extra_load × requests.
        #[test]
        fn hedges_match_the_budget_exactly(
            pct in 5u64..60,
            burst in 1u64..5,
            reqs in proptest::collection::vec((0u64..4, 1u64..20), 1..80),
        ) {
            let (sent, requests, calls) = run(pct, Some(burst), &reqs, false);

            // The model: deposits at arrivals, a hedge wanted at arrival + 5 ms whenever the
            // first attempt is still running then; a whole token per hedge.
            const UNIT: u64 = 1_000_000;
            let mut events = Vec::new();
            let mut at = 0;
            for &(gap, lat) in &reqs {
                at += 2 * gap;
                events.push((at, 0u8));
                if 2 * lat > 5 {
                    events.push((at + 5, 1u8));
                }
            }
            events.sort();
            let (mut balance, mut want_sent) = (0u64, 0u64);
            for (_, kind) in events {
                if kind == 0 {
                    balance = (balance + pct * UNIT / 100).min(burst * UNIT);
                } else if balance >= UNIT {
                    balance -= UNIT;
                    want_sent += 1;
                }
            }
            prop_assert_eq!(requests, reqs.len() as u64);
            prop_assert_eq!(sent, want_sent);
            prop_assert!(sent as f64 <= pct as f64 / 100.0 * requests as f64 + 1e-9);
            prop_assert_eq!(calls, requests + sent);
        }

        // With re-asking, the exact schedule depends on timer order, but the bound cannot:
        // hedges never exceed max_extra_load × requests, and every hedge reached the backend.
        #[test]
        fn rechecked_hedges_stay_inside_the_budget(
            pct in 5u64..60,
            burst in 1u64..5,
            reqs in proptest::collection::vec((0u64..4, 1u64..40), 1..80),
        ) {
            let (sent, requests, calls) = run(pct, Some(burst), &reqs, true);
            prop_assert_eq!(requests, reqs.len() as u64);
            prop_assert!(sent as f64 <= pct as f64 / 100.0 * requests as f64 + 1e-9);
            prop_assert_eq!(calls, requests + sent);
        }

        // A decaying bank, with its loans: hedges never exceed
        // max_extra_load / 1.2 × requests plus the one loan, rechecked or not.
        #[test]
        fn the_decaying_bank_stays_inside_its_bound(
            pct in 5u64..60,
            recheck in any::<bool>(),
            reqs in proptest::collection::vec((0u64..400, 1u64..40), 1..80),
        ) {
            let (sent, requests, calls) = run(pct, None, &reqs, recheck);
            prop_assert_eq!(requests, reqs.len() as u64);
            prop_assert!(sent as f64 <= pct as f64 / 100.0 / 1.2 * requests as f64 + 1.0 + 1e-9);
            prop_assert_eq!(calls, requests + sent);
        }
    }
}

#[test]
fn invalid_config_is_rejected_with_the_field() {
    let err = HedgeLayer::builder()
        .max_extra_load(1.5)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_extra_load");
    assert!(err.to_string().contains("max_extra_load"));
    let err = HedgeLayer::builder().max_hedges(0).build().unwrap_err();
    assert_eq!(err.field(), "max_hedges");
}

#[tokio::test(start_paused = true)]
async fn metrics_count_sent_won_and_denied_and_gauge_the_delay() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // Handles are registered when the layer is built; they keep reporting afterwards.
    let layer = metrics::with_local_recorder(&recorder, || {
        warm().max_extra_load(0.3).name("backend").build().unwrap()
    });
    let stats = layer.handle();
    let (mock, mut handle) = mock::pair::<Str, Str>();
    let mut svc = Spawn::new(layer.layer(mock));
    // 3 × 0.3 tokens, then 0.3 more with the request: one hedge, 0.2 left.
    fund(&mut svc, &mut handle, "fund", 3).await;
    let (mut fut, _p, hedge) = hedged!(svc, handle);
    hedge.send_response("hedge");
    assert_ready_ok!(fut.poll());
    // 0.5 tokens with the next request: its hedge is denied.
    let (mut fut, primary) = send!(svc, handle, "b", "b");
    after!(fut, 100);
    primary.send_response("b");
    assert_ready_ok!(fut.poll());
    assert_eq!(stats.stats().budget_denied, 1);

    let mut seen = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        assert!(
            key.labels()
                .any(|l| l.key() == "name" && l.value() == "backend"),
            "{key:?}"
        );
        seen.insert(key.name().to_owned(), value);
    }
    use damper_core::metrics as m;
    assert_eq!(seen[m::HEDGE_SENT_TOTAL], DebugValue::Counter(1));
    assert_eq!(seen[m::HEDGE_WON_TOTAL], DebugValue::Counter(1));
    assert_eq!(seen[m::HEDGE_BUDGET_DENIED_TOTAL], DebugValue::Counter(1));
    match &seen[m::HEDGE_DELAY_SECONDS] {
        DebugValue::Gauge(v) => assert!((v.into_inner() - 0.095).abs() < 0.002, "{v:?}"),
        other => panic!("{other:?}"),
    }
}

#[cfg(feature = "http")]
#[tokio::test(start_paused = true)]
async fn only_idempotent_http_requests_are_hedged() {
    type HttpReq = http::Request<String>;
    let layer = warm()
        .eligible_with(tower_hedge::Idempotent::new())
        .build()
        .unwrap();
    let stats = layer.handle();
    let (mock, mut handle) = mock::pair::<HttpReq, Str>();
    let mut svc = Spawn::new(layer.layer(mock));
    let get = || http::Request::get("/a").body(String::new()).unwrap();
    let post = || http::Request::post("/a").body("x".to_string()).unwrap();
    fund(&mut svc, &mut handle, get(), 4).await;

    for (req, hedged) in [(post(), false), (get(), true)] {
        assert_ready_ok!(svc.poll_ready());
        let mut fut = task::spawn(svc.call(req));
        let (_, primary) = handle.next_request().await.unwrap();
        assert_pending!(fut.poll());
        time::advance(ms(100)).await;
        assert_pending!(fut.poll());
        match handle.poll_request() {
            Poll::Ready(Some((req, _hedge))) => {
                assert!(hedged, "a POST was hedged");
                assert_eq!(req.method(), http::Method::GET);
            }
            _ => assert!(!hedged, "the GET was not hedged"),
        }
        primary.send_response("ok");
        assert_ready_ok!(fut.poll());
    }
    assert_eq!(stats.stats().hedges_sent, 1);
}

/// Wraps a service and counts its clones.
struct CountClones<S> {
    inner: S,
    clones: Arc<AtomicUsize>,
}

impl<S: Clone> Clone for CountClones<S> {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Self {
            inner: self.inner.clone(),
            clones: self.clones.clone(),
        }
    }
}

impl<S: Service<Str>> Service<Str> for CountClones<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: Str) -> S::Future {
        self.inner.call(req)
    }
}

#[tokio::test(start_paused = true)]
async fn the_inner_service_is_cloned_only_when_a_hedge_is_sent() {
    let clones = Arc::new(AtomicUsize::new(0));
    let layer = warm().build().unwrap();
    let (mock, mut handle) = mock::pair::<Str, Str>();
    let mut svc = Spawn::new(layer.layer(CountClones {
        inner: mock,
        clones: clones.clone(),
    }));
    // Armed requests answered before their delay: one spare copy for this service, made on
    // first use, and no clone per request.
    fund(&mut svc, &mut handle, "fund", 20).await;
    assert_eq!(clones.load(Ordering::SeqCst), 1);
    // A hedge that is sent clones that spare copy once.
    let (mut fut, _primary) = send!(svc, handle, "a", "a");
    after!(fut, 100);
    assert_request_eq!(handle, "a").send_response("hedge");
    assert_eq!(assert_ready_ok!(fut.poll()), "hedge");
    assert_eq!(clones.load(Ordering::SeqCst), 2);
}
