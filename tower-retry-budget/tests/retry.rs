//! The retry layer against tower-test mocks, in paused time.

use damper_core::backoff::{Backoff, Jitter};
use damper_core::budget::Unlimited;
use damper_core::classify::ResultClassifier;
use damper_core::error::{CircuitOpen, Overloaded};
use damper_core::{BoxError, Budget, Deadline, HasDeadline};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, advance};
use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok, task};
use tower_retry_budget::{CloneAll, RetryBudget, RetryLayer, RetryLayerBuilder};
use tower_test::mock;

fn fixed_backoff(ms: u64) -> Backoff {
    Backoff::builder()
        .min(Duration::from_millis(ms))
        .max(Duration::from_millis(ms * 16))
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

fn budget(initial: f64) -> Arc<RetryBudget> {
    RetryBudget::builder()
        .initial(initial)
        .no_decay()
        .build()
        .unwrap()
}

/// A layer builder for plain `Clone` requests with a fixed (unjittered) backoff.
fn plain<B>(budget: B, backoff_ms: u64) -> RetryLayerBuilder<B, ResultClassifier, CloneAll> {
    RetryLayer::builder(budget)
        .replay(CloneAll::new())
        .backoff(fixed_backoff(backoff_ms))
}

/// Whether the mock has received a request that the test has not taken yet.
fn has_request<T, U>(handle: &mut mock::Handle<T, U>) -> bool {
    handle.poll_request().is_ready()
}

#[tokio::test(start_paused = true)]
async fn retries_a_failure_after_the_backoff_and_returns_the_success() {
    let b = budget(5.0);
    let layer = plain(b.clone(), 100).build().unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<&'static str, &'static str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call("hello"));

    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, "hello");
    send.send_error("connection reset");
    assert_pending!(fut.poll());
    assert_eq!(
        b.balance(Instant::now()),
        4.0,
        "the retry withdrew one token"
    );

    advance(Duration::from_millis(99)).await;
    assert_pending!(fut.poll());
    assert!(
        !has_request(&mut handle),
        "no retry before the backoff ends"
    );

    advance(Duration::from_millis(1)).await;
    assert_pending!(fut.poll());
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, "hello");
    send.send_response("world");
    assert_eq!(assert_ready_ok!(fut.poll()), "world");
    assert!(
        (b.balance(Instant::now()) - 4.1).abs() < 1e-9,
        "the success deposited"
    );
}

#[tokio::test(start_paused = true)]
async fn a_decaying_budget_banks_what_the_last_ttl_of_traffic_earned() {
    let b = RetryBudget::builder()
        .initial(10.0)
        .reserve(0.0)
        .ttl(Duration::from_secs(1))
        .build()
        .unwrap();
    let (mut svc, mut handle) =
        mock::spawn_layer::<u32, u32, _>(plain(b.clone(), 10).build().unwrap());
    // 20 s at 100 successes per second, with no withdrawal to apply the decay on the way: the
    // ten initial tokens are forgotten, and the bank holds about ratio × rate × ttl = 10.
    for i in 0..2000 {
        advance(Duration::from_millis(10)).await;
        let mut fut = task::spawn(svc.call_ready(i));
        handle.next_request().await.unwrap().1.send_response(i);
        assert_ready_ok!(fut.poll());
    }
    let balance = b.balance(Instant::now());
    assert!((balance - 10.0).abs() < 0.01, "{balance}");
}

#[tokio::test(start_paused = true)]
async fn stops_after_max_attempts_with_the_last_error() {
    let layer = plain(Unlimited::new(), 10).max_attempts(3).build().unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<u32, u32, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(7));
    assert_pending!(fut.poll());
    for attempt in 1..=3 {
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req, 7);
        send.send_error(format!("failure {attempt}"));
        if attempt < 3 {
            assert_pending!(fut.poll()); // backoff
            advance(Duration::from_secs(1)).await;
            assert_pending!(fut.poll()); // the retry is in flight
        }
    }
    let err = assert_ready_err!(fut.poll());
    assert_eq!(err.to_string(), "failure 3");
    assert!(!has_request(&mut handle));
}

#[tokio::test(start_paused = true)]
async fn local_rejections_are_never_retried() {
    let b = budget(5.0);
    let layer = plain(b.clone(), 25).build().unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<u32, u32, _>(layer);
    let rejections: Vec<BoxError> = vec![
        Box::new(Overloaded::new()),
        Box::new(CircuitOpen::new(Duration::from_secs(1))),
        Box::new(damper_core::error::BudgetExhausted::new()),
    ];
    for rejection in rejections {
        assert_ready_ok!(svc.poll_ready());
        let mut fut = task::spawn(svc.call(1));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_error(rejection);
        let err = assert_ready_err!(fut.poll());
        assert!(damper_core::error::is_local_rejection(&*err));
        advance(Duration::from_secs(5)).await;
        assert!(!has_request(&mut handle));
    }
    assert_eq!(b.balance(Instant::now()), 5.0, "no token spent");
}

#[tokio::test(start_paused = true)]
async fn a_non_ready_inner_service_is_not_retried() {
    let b = budget(5.0);
    let layer = plain(b.clone(), 10).build().unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<u32, u32, _>(layer);
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(1));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("first failure");
    assert_pending!(fut.poll());
    advance(Duration::from_millis(10)).await;
    // The inner service has no capacity left: the retry is not queued, the caller gets the
    // first attempt's error at once.
    let err = assert_ready_err!(fut.poll());
    assert_eq!(err.to_string(), "first failure");
    handle.allow(10);
    advance(Duration::from_secs(1)).await;
    assert!(!has_request(&mut handle));
}

/// A request that counts its live copies (through the `Arc`'s strong count).
#[derive(Clone, Debug)]
struct Tracked(#[allow(dead_code)] Arc<()>);

impl HasDeadline for Tracked {
    fn deadline(&self) -> Option<Deadline> {
        None
    }
    fn set_deadline(&mut self, _: Deadline) -> bool {
        false
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_during_a_backoff_leaks_nothing() {
    let b = budget(2.0);
    let layer = plain(b.clone(), 100).build().unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<Tracked, u32, _>(layer);
    let marker = Arc::new(());
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(Tracked(marker.clone())));
    let (req, send) = handle.next_request().await.unwrap();
    drop(req);
    send.send_error("boom");
    assert_pending!(fut.poll());
    assert_eq!(Arc::strong_count(&marker), 2, "the future keeps one copy");
    assert_eq!(b.balance(Instant::now()), 1.0);

    drop(fut);
    assert_eq!(
        Arc::strong_count(&marker),
        1,
        "the copy was dropped with the future"
    );
    advance(Duration::from_secs(10)).await;
    assert!(!has_request(&mut handle), "nothing was left running");
    // The token spent on the cancelled retry is not refunded, and nothing else moved.
    assert_eq!(b.balance(Instant::now()), 1.0);
    assert!(b.try_withdraw(Instant::now()));
    assert!(!b.try_withdraw(Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn requests_are_copied_only_when_a_retry_is_possible() {
    let layer = plain(Unlimited::new(), 25).max_attempts(1).build().unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<Tracked, u32, _>(layer);
    let marker = Arc::new(());
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(Tracked(marker.clone())));
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(Arc::strong_count(&marker), 2, "only the request in flight");
    drop(req);
    send.send_response(1);
    assert_eq!(assert_ready_ok!(fut.poll()), 1);
}

#[tokio::test(start_paused = true)]
async fn the_layer_timeout_stops_retries_that_cannot_fit() {
    let b = budget(5.0);
    let layer = plain(b.clone(), 40)
        .min_attempt_time(Duration::from_millis(10))
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<u32, u32, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(1));
    // Attempt 1 fails at t=0: 40 ms + 10 ms fit in 100 ms.
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("e1");
    assert_pending!(fut.poll());
    advance(Duration::from_millis(40)).await;
    assert_pending!(fut.poll());
    // Attempt 2 fails at t=45: 80 ms + 10 ms do not fit in the 55 ms left.
    let (_, send) = handle.next_request().await.unwrap();
    advance(Duration::from_millis(5)).await;
    send.send_error("e2");
    let err = assert_ready_err!(fut.poll());
    assert_eq!(err.to_string(), "e2");
    assert_eq!(
        b.balance(Instant::now()),
        4.0,
        "only the sent retry was paid for"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_deadline_stops_retries_and_is_never_slept_past() {
    let layer = plain(Unlimited::new(), 30)
        .min_attempt_time(Duration::from_millis(10))
        .build()
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<Dated, u32, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let deadline = Deadline::after(Instant::now(), Duration::from_millis(39));
    let mut fut = task::spawn(svc.call(Dated(Some(deadline))));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("e1");
    // 30 ms + 10 ms do not fit in 39 ms: returned at once, without sleeping.
    assert_eq!(assert_ready_err!(fut.poll()).to_string(), "e1");

    let deadline = Deadline::after(Instant::now(), Duration::from_millis(40));
    let mut fut = task::spawn(svc.call_ready(Dated(Some(deadline))));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("e1");
    assert_pending!(fut.poll());
    advance(Duration::from_millis(30)).await;
    assert_pending!(fut.poll());
    assert!(
        has_request(&mut handle),
        "40 ms fit the wait and a minimal attempt"
    );
}

#[derive(Clone, Debug)]
struct Dated(Option<Deadline>);

impl HasDeadline for Dated {
    fn deadline(&self) -> Option<Deadline> {
        self.0
    }
    fn set_deadline(&mut self, d: Deadline) -> bool {
        self.0 = Some(d);
        true
    }
}

trait CallReady<Req> {
    type Fut;
    fn call_ready(&mut self, req: Req) -> Self::Fut;
}

impl<S: tower_service::Service<Req>, Req> CallReady<Req> for tower_test::mock::Spawn<S>
where
    S::Error: std::fmt::Debug,
{
    type Fut = S::Future;
    fn call_ready(&mut self, req: Req) -> S::Future {
        assert_ready_ok!(self.poll_ready());
        self.call(req)
    }
}

#[tokio::test(start_paused = true)]
async fn the_layer_timeout_is_attached_to_requests_without_an_earlier_deadline() {
    let layer = plain(Unlimited::new(), 25)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<Dated, u32, _>(layer);
    let start = Instant::now();
    let _fut = task::spawn(svc.call_ready(Dated(None)));
    let (req, _send) = handle.next_request().await.unwrap();
    assert_eq!(req.0, Some(Deadline::after(start, Duration::from_secs(2))));

    let earlier = Deadline::after(start, Duration::from_secs(1));
    let _fut = task::spawn(svc.call_ready(Dated(Some(earlier))));
    let (req, _send) = handle.next_request().await.unwrap();
    assert_eq!(req.0, Some(earlier), "an earlier deadline is kept");
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_fails_fast() {
    let b = budget(0.0);
    let layer = plain(b.clone(), 25).build().unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<u32, u32, _>(layer);
    let mut fut = task::spawn(svc.call_ready(1));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("boom");
    // No backoff: the error is returned at once.
    assert_eq!(assert_ready_err!(fut.poll()).to_string(), "boom");
    // Ten successes later, one retry is affordable again.
    for _ in 0..10 {
        let mut fut = task::spawn(svc.call_ready(1));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(1);
        assert_ready_ok!(fut.poll());
    }
    let mut fut = task::spawn(svc.call_ready(1));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("boom");
    assert_pending!(fut.poll());
}

#[test]
fn budget_exhaustion_counts_the_metric() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let b = RetryBudget::builder()
                .name("orders")
                .initial(1.0)
                .no_decay()
                .build()
                .unwrap();
            let layer = RetryLayer::builder(b)
                .name("orders")
                .replay(CloneAll::new())
                .backoff(fixed_backoff(10))
                .build()
                .unwrap();
            let (mut svc, mut handle) = mock::spawn_layer::<u32, u32, _>(layer);
            // One retry is paid for by the initial token; the second is refused.
            let mut fut = task::spawn(svc.call_ready(1));
            let (_, send) = handle.next_request().await.unwrap();
            send.send_error("e1");
            assert_pending!(fut.poll());
            advance(Duration::from_millis(10)).await;
            assert_pending!(fut.poll());
            let (_, send) = handle.next_request().await.unwrap();
            send.send_error("e2");
            assert_eq!(assert_ready_err!(fut.poll()).to_string(), "e2");
        })
    });
    let snapshot = snapshotter.snapshot().into_hashmap();
    let value = |name: &str| {
        snapshot
            .iter()
            .find(|(k, _)| {
                k.key().name() == name
                    && k.key()
                        .labels()
                        .any(|l| l.key() == "name" && l.value() == "orders")
            })
            .map(|(_, (_, _, v))| v)
    };
    assert_eq!(
        value("damper_retry_budget_exhausted_total"),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(
        value("damper_retry_attempts_total"),
        Some(&DebugValue::Counter(2))
    );
    assert_eq!(
        value("damper_retry_retries_total"),
        Some(&DebugValue::Counter(1))
    );
    // The gauge followed the balance from 1 token to 0.
    assert_eq!(
        value("damper_retry_budget_balance"),
        Some(&DebugValue::Gauge(0.0.into()))
    );
}

#[test]
fn invalid_layer_configs_name_the_field() {
    let b = || Unlimited::new();
    let cases = [
        (
            RetryLayer::builder(b()).max_attempts(0).build(),
            "max_attempts",
        ),
        (
            RetryLayer::builder(b()).max_attempts(11).build(),
            "max_attempts",
        ),
        (
            RetryLayer::builder(b())
                .max_pushback(Duration::from_secs(7200))
                .build(),
            "max_pushback",
        ),
        (
            RetryLayer::builder(b())
                .min_attempt_time(Duration::from_secs(61))
                .build(),
            "min_attempt_time",
        ),
        (
            RetryLayer::builder(b()).timeout(Duration::ZERO).build(),
            "timeout",
        ),
    ];
    for (result, field) in cases {
        assert_eq!(result.unwrap_err().field(), field);
    }
}

#[tokio::test(start_paused = true)]
async fn a_shared_dyn_budget_is_spent_by_every_service() {
    // The hedge layer shares the budget the same way, as `Arc<dyn Budget>`.
    let shared: Arc<dyn Budget> = budget(1.0);
    let layer = plain(shared.clone(), 10).build().unwrap();
    let (mut a, mut ha) = mock::spawn_layer::<u32, u32, _>(layer.clone());
    let (mut b, mut hb) = mock::spawn_layer::<u32, u32, _>(layer);
    let mut fa = task::spawn(a.call_ready(1));
    let mut fb = task::spawn(b.call_ready(2));
    ha.next_request().await.unwrap().1.send_error("a");
    hb.next_request().await.unwrap().1.send_error("b");
    assert_pending!(fa.poll());
    // The one token went to `a`.
    assert_eq!(assert_ready_err!(fb.poll()).to_string(), "b");
    assert_eq!(shared.balance(Instant::now()), 0.0);
}

#[cfg(feature = "http")]
mod http_tests {
    use super::*;
    use damper_core::classify::HttpClassifier;
    use tower_retry_budget::Idempotent;

    type Req = http::Request<String>;
    type Res = http::Response<String>;

    fn layer(b: Arc<RetryBudget>) -> RetryLayer<Arc<RetryBudget>, HttpClassifier, Idempotent> {
        RetryLayer::builder(b)
            .classifier(HttpClassifier::new())
            .backoff(fixed_backoff(10))
            .max_pushback(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    fn status(code: u16, headers: &[(&str, &str)]) -> Res {
        let mut b = http::Response::builder().status(code);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(format!("attempt body {code}")).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_replaces_the_backoff() {
        let (mut svc, mut handle) = mock::spawn_layer::<Req, Res, _>(layer(budget(5.0)));
        let req = http::Request::get("/items").body(String::new()).unwrap();
        let mut fut = task::spawn(svc.call_ready(req));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(status(503, &[("retry-after", "3")]));
        assert_pending!(fut.poll());
        advance(Duration::from_millis(2_999)).await;
        assert_pending!(fut.poll());
        assert!(!has_request(&mut handle), "Retry-After: 3 is honoured");
        advance(Duration::from_millis(1)).await;
        assert_pending!(fut.poll());
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.uri(), "/items");
        send.send_response(status(200, &[]));
        assert_eq!(assert_ready_ok!(fut.poll()).status(), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn long_pushback_is_clamped_and_do_not_retry_stops() {
        let (mut svc, mut handle) = mock::spawn_layer::<Req, Res, _>(layer(budget(5.0)));
        let get = || http::Request::get("/").body(String::new()).unwrap();
        let mut fut = task::spawn(svc.call_ready(get()));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(status(429, &[("retry-after", "600")]));
        assert_pending!(fut.poll());
        advance(Duration::from_secs(5)).await;
        assert_pending!(fut.poll());
        assert!(has_request(&mut handle), "clamped to max_pushback (5 s)");

        let mut fut = task::spawn(svc.call_ready(get()));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(status(503, &[("grpc-retry-pushback-ms", "-1")]));
        assert_eq!(assert_ready_ok!(fut.poll()).status(), 503);
    }

    #[tokio::test(start_paused = true)]
    async fn only_idempotent_requests_are_retried() {
        let b = budget(5.0);
        let (mut svc, mut handle) = mock::spawn_layer::<Req, Res, _>(layer(b.clone()));
        let post = http::Request::post("/orders")
            .body("{}".to_owned())
            .unwrap();
        let mut fut = task::spawn(svc.call_ready(post));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(status(503, &[]));
        assert_eq!(assert_ready_ok!(fut.poll()).status(), 503);
        assert_eq!(b.balance(Instant::now()), 5.0);

        let keyed = http::Request::post("/orders")
            .header("idempotency-key", "order-1")
            .body("{}".to_owned())
            .unwrap();
        let mut fut = task::spawn(svc.call_ready(keyed));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(status(503, &[]));
        assert_pending!(fut.poll());
        advance(Duration::from_millis(10)).await;
        assert_pending!(fut.poll());
        let (req, _send) = handle.next_request().await.unwrap();
        assert_eq!(req.body(), "{}", "the body was replayed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_body_is_sent_once() {
        let (mut svc, mut handle) = mock::spawn_layer::<Req, Res, _>(layer(budget(5.0)));
        let put = http::Request::put("/blob")
            .body("x".repeat(65 * 1024))
            .unwrap();
        let mut fut = task::spawn(svc.call_ready(put));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(status(502, &[]));
        assert_eq!(assert_ready_ok!(fut.poll()).status(), 502);
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_response_is_returned_when_retries_run_out() {
        let (mut svc, mut handle) = mock::spawn_layer::<Req, Res, _>(layer(budget(5.0)));
        let req = http::Request::get("/").body(String::new()).unwrap();
        let mut fut = task::spawn(svc.call_ready(req));
        assert_pending!(fut.poll());
        for n in 1..=3 {
            let (_, send) = handle.next_request().await.unwrap();
            send.send_response(
                http::Response::builder()
                    .status(503)
                    .header("x-attempt", n.to_string())
                    .body(String::new())
                    .unwrap(),
            );
            if n < 3 {
                assert_pending!(fut.poll());
                advance(Duration::from_secs(1)).await;
                assert_pending!(fut.poll());
            }
        }
        let res = assert_ready_ok!(fut.poll());
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()["x-attempt"], "3");
    }

    #[tokio::test(start_paused = true)]
    async fn an_http_deadline_extension_is_honoured() {
        let (mut svc, mut handle) = mock::spawn_layer::<Req, Res, _>(layer(budget(5.0)));
        let mut req = http::Request::get("/").body(String::new()).unwrap();
        req.extensions_mut()
            .insert(Deadline::after(Instant::now(), Duration::from_millis(15)));
        let mut fut = task::spawn(svc.call_ready(req));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(status(502, &[]));
        // 10 ms backoff + 10 ms minimum attempt > 15 ms left.
        assert_eq!(assert_ready_ok!(fut.poll()).status(), 502);
    }
}

/// An inner service that counts its clones and fails its first `fail` calls.
#[derive(Debug)]
struct CountClones {
    clones: Arc<std::sync::atomic::AtomicUsize>,
    calls: Arc<std::sync::atomic::AtomicUsize>,
    fail: usize,
}

impl Clone for CountClones {
    fn clone(&self) -> Self {
        self.clones
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self {
            clones: self.clones.clone(),
            calls: self.calls.clone(),
            fail: self.fail,
        }
    }
}

impl tower::Service<u32> for CountClones {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: u32) -> Self::Future {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::ready(if n < self.fail {
            Err("unavailable".into())
        } else {
            Ok(req)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn the_inner_service_is_cloned_only_when_a_retry_is_sent() {
    use std::sync::atomic::Ordering::SeqCst;
    use tower::{Layer, Service, ServiceExt};
    let clones = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let inner = CountClones {
        clones: clones.clone(),
        calls: calls.clone(),
        fail: 0,
    };
    let mut svc = plain(budget(5.0), 10).build().unwrap().layer(inner);
    // Every request may be retried, but none needs to be: one spare copy for this service,
    // made on first use, and no clone per request.
    for i in 0..100 {
        assert_eq!(svc.ready().await.unwrap().call(i).await.unwrap(), i);
    }
    assert_eq!(clones.load(SeqCst), 1);
    // A request that fails once is retried on a clone of that spare copy.
    svc.get_mut().fail = calls.load(SeqCst) + 1;
    let mut fut = task::spawn(svc.ready().await.unwrap().call(7));
    assert_pending!(fut.poll());
    advance(Duration::from_millis(10)).await;
    assert_eq!(assert_ready_ok!(fut.poll()), 7);
    assert_eq!(clones.load(SeqCst), 2);
    assert_eq!(calls.load(SeqCst), 102);
}
