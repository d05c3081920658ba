//! Every damper layer against the Tower service contract. See the crate docs.

use damper::BoxError;
use damper::breaker::{BreakerConfig, BreakerHandle, BreakerLayer, Mode, State};
use damper::core::Budget;
use damper::core::error::{CircuitOpen, Overloaded};
use damper::hedge::HedgeLayer;
use damper::retry_budget::{CloneAll, RetryBudget, RetryLayer};
use damper::shed::ShedLayer;
use damper::shed::limit::Fixed;
use damper::timeout::{AdaptiveTimeoutLayer, DeadlineLayer};
use std::time::Duration;
use tokio_test::{assert_pending, assert_ready};
use tower::{Layer, Service, ServiceExt};
use tower_test::mock;

type Mock = mock::Mock<u32, u32>;

fn breaker_config() -> BreakerConfig {
    BreakerConfig::builder()
        .min_requests(4)
        .failure_rate(0.5)
        .trickle(0.0)
        .open_min(Duration::from_secs(1))
        .open_max(Duration::from_secs(1))
        .open_jitter(0.0)
        .probes(1)
        .seed(1)
        .build()
        .unwrap()
}

/// Runs `check` against every layer, built fresh each time.
macro_rules! for_every_layer {
    ($check:ident) => {{
        $check("retry", || {
            let budget = RetryBudget::builder().initial(5.0).build().unwrap();
            RetryLayer::builder(budget)
                .replay(CloneAll::default())
                .seed(1)
                .build()
                .unwrap()
        })
        .await;
        $check("hedge", || {
            HedgeLayer::builder()
                .fixed_delay(Duration::from_millis(10))
                .build()
                .unwrap()
        })
        .await;
        $check("breaker", || BreakerLayer::new(breaker_config())).await;
        $check("breaker-gate", || {
            BreakerLayer::new(BreakerConfig::builder().mode(Mode::Gate).build().unwrap())
        })
        .await;
        $check("shed", || ShedLayer::new(Fixed::new(4).unwrap())).await;
        $check("timeout", || AdaptiveTimeoutLayer::new()).await;
        $check("deadline", || {
            DeadlineLayer::builder()
                .timeout(Duration::from_secs(1))
                .build()
                .unwrap()
        })
        .await;
        $check("fault", || {
            damper::fault::FaultLayer::builder()
                .seed(1)
                .build()
                .unwrap()
        })
        .await;
        $check("client-stack", || {
            damper::ClientStack::new().seed(1).build().unwrap()
        })
        .await;
        $check("server-stack", || {
            damper::ServerStack::new().build().unwrap()
        })
        .await;
    }};
}

async fn waker_is_woken<L, F>(name: &str, make: F)
where
    F: Fn() -> L,
    L: Layer<Mock>,
    L::Service: Service<u32, Response = u32>,
    <L::Service as Service<u32>>::Error: Into<BoxError> + std::fmt::Debug,
{
    let (mut svc, mut handle) = mock::spawn_layer::<u32, u32, _>(make());
    handle.allow(0);
    assert_pending!(
        svc.poll_ready(),
        "{name}: ready although the inner service is not"
    );
    handle.allow(1);
    assert!(
        svc.is_woken(),
        "{name}: not woken when the inner service became ready"
    );
    assert!(
        matches!(svc.poll_ready(), std::task::Poll::Ready(Ok(()))),
        "{name}: not ready after the inner service became ready"
    );
}

#[tokio::test(start_paused = true)]
async fn poll_ready_wakes_when_the_inner_service_becomes_ready() {
    for_every_layer!(waker_is_woken);
}

async fn unpolled_call_is_forwarded<L, F>(name: &str, make: F)
where
    F: Fn() -> L,
    L: Layer<tower::util::ServiceFn<fn(u32) -> std::future::Ready<Result<u32, BoxError>>>>,
    L::Service: Service<u32, Response = u32> + Clone,
    <L::Service as Service<u32>>::Error: Into<BoxError> + std::fmt::Debug,
{
    fn echo(n: u32) -> std::future::Ready<Result<u32, BoxError>> {
        std::future::ready(Ok(n))
    }
    let svc = make().layer(tower::service_fn(echo as fn(u32) -> _));
    // Readiness is not leaked: poll one clone, call another clone without polling it. Damper
    // layers reserve nothing in poll_ready (gate mode excepted, which admits a closed
    // breaker's call either way), so the unpolled call is forwarded to the inner service.
    let mut polled = svc.clone();
    polled.ready().await.map_err(Into::into).unwrap();
    let mut unpolled = svc.clone();
    let out = unpolled.call(7).await.map_err(Into::into);
    assert_eq!(out.unwrap(), 7, "{name}");
}

#[tokio::test(start_paused = true)]
async fn call_without_poll_ready_is_forwarded_and_readiness_is_per_clone() {
    for_every_layer!(unpolled_call_is_forwarded);
}

/// An inner service whose futures never finish and count their own creation and drop.
#[derive(Clone, Default)]
struct Counted {
    created: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

struct DropGuard(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Service<u32> for Counted {
    type Response = u32;
    type Error = BoxError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<u32, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: u32) -> Self::Future {
        self.created
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let guard = DropGuard(self.dropped.clone());
        Box::pin(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok(0)
        })
    }
}

async fn dropped_future_cancels_every_attempt<L, F>(name: &str, make: F)
where
    F: Fn() -> L,
    L: Layer<Counted>,
    L::Service: Service<u32, Response = u32>,
    <L::Service as Service<u32>>::Error: Into<BoxError> + std::fmt::Debug,
{
    use std::sync::atomic::Ordering::SeqCst;
    let inner = Counted::default();
    let mut svc = make().layer(inner.clone());
    svc.ready().await.map_err(Into::into).unwrap();
    let mut fut = tokio_test::task::spawn(svc.call(1));
    // Poll across the points where layers add attempts or timers: a hedge delay (10 ms),
    // a timeout and a retry backoff.
    for step in [0, 5, 20, 200, 2_000] {
        tokio::time::advance(Duration::from_millis(step)).await;
        let _ = fut.poll();
    }
    let created = inner.created.load(SeqCst);
    assert!(
        created >= 1,
        "{name}: the request never reached the inner service"
    );
    drop(fut);
    assert_eq!(
        inner.dropped.load(SeqCst),
        inner.created.load(SeqCst),
        "{name}: dropping the response future must drop every attempt it started"
    );
    // Nothing keeps running on its own afterwards.
    tokio::time::advance(Duration::from_secs(30)).await;
    tokio::task::yield_now().await;
    assert_eq!(
        inner.created.load(SeqCst),
        created,
        "{name}: attempts after the drop"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_a_response_future_cancels_every_attempt() {
    for_every_layer!(dropped_future_cancels_every_attempt);
}

#[tokio::test(start_paused = true)]
async fn shed_permits_return_on_success_error_and_drop() {
    let layer = ShedLayer::new(Fixed::new(1).unwrap());
    let limiter = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer::<u32, u32, _>(layer);
    handle.allow(10);

    // Success.
    assert_ready!(svc.poll_ready()).unwrap();
    let mut f = tokio_test::task::spawn(svc.call(1));
    assert_pending!(f.poll());
    assert_eq!(limiter.in_flight(), 1);
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(1);
    assert_eq!(assert_ready!(f.poll()).unwrap(), 1);
    assert_eq!(limiter.in_flight(), 0);

    // Error.
    assert_ready!(svc.poll_ready()).unwrap();
    let mut f = tokio_test::task::spawn(svc.call(2));
    assert_pending!(f.poll());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("boom");
    assert!(assert_ready!(f.poll()).is_err());
    assert_eq!(limiter.in_flight(), 0);

    // Drop, while the one permit is held: the next call is admitted afterwards.
    assert_ready!(svc.poll_ready()).unwrap();
    let mut f = tokio_test::task::spawn(svc.call(3));
    assert_pending!(f.poll());
    let _pending = handle.next_request().await.unwrap();
    assert_ready!(svc.poll_ready()).unwrap();
    let rejected = svc.call(4).await.unwrap_err();
    assert!(rejected.is::<Overloaded>(), "{rejected}");
    drop(f);
    assert_eq!(limiter.in_flight(), 0);
    assert_ready!(svc.poll_ready()).unwrap();
    let mut f = tokio_test::task::spawn(svc.call(5));
    assert_pending!(f.poll());
    assert_eq!(limiter.in_flight(), 1);
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_limit() {
    let svc =
        ShedLayer::new(Fixed::new(1).unwrap()).layer(tower::service_fn(|n: u32| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, BoxError>(n)
        }));
    let mut a = svc.clone();
    let mut b = svc;
    let held = tokio::spawn(a.ready().await.unwrap().call(1));
    tokio::task::yield_now().await;
    let err = b.ready().await.unwrap().call(2).await.unwrap_err();
    assert!(err.is::<Overloaded>(), "{err}");
    assert_eq!(held.await.unwrap().unwrap(), 1);
}

/// Trips the breaker behind `svc` with failing calls.
async fn trip(svc: &mut (impl Service<u32, Response = u32, Error = BoxError> + Send), n: u32) {
    for i in 0..n {
        let _ = svc.ready().await.unwrap().call(i).await;
    }
}

fn failing() -> impl Service<
    u32,
    Response = u32,
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<u32, BoxError>> + Send,
> + Clone
+ Send {
    tower::service_fn(|_n: u32| async { Err::<u32, BoxError>("down".into()) })
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_frees_its_slot() {
    let handle = BreakerHandle::new(&breaker_config());
    let mut tripper = BreakerLayer::from_handle(&handle).layer(failing());
    trip(&mut tripper, 8).await;
    assert_eq!(handle.state(), State::Open);
    tokio::time::advance(Duration::from_millis(1100)).await;

    let (mut svc, mut mock) = mock::spawn_layer::<u32, u32, _>(BreakerLayer::from_handle(&handle));
    mock.allow(10);
    assert_ready!(svc.poll_ready()).unwrap();
    let mut probe = tokio_test::task::spawn(svc.call(1));
    assert_pending!(probe.poll());
    let _req = mock.next_request().await.unwrap();
    // The spaced probe goes through; the breaker stays open until one succeeds.
    assert_eq!(handle.state(), State::Open);

    // Until the next spaced probe, everything else is rejected at once.
    assert_ready!(svc.poll_ready()).unwrap();
    let err = svc.call(2).await.unwrap_err();
    assert!(err.is::<CircuitOpen>(), "{err}");

    // A dropped probe counts as neither success nor failure: no growth, the next spaced
    // probe a spacing later.
    drop(probe);
    assert_eq!(handle.state(), State::Open);
    assert_eq!(handle.snapshot().level, 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_ready!(svc.poll_ready()).unwrap();
    let mut probe = tokio_test::task::spawn(svc.call(3));
    assert_pending!(probe.poll());
    let (req, send) = mock.next_request().await.unwrap();
    assert_eq!(req, 3, "the next call is admitted as the probe");
    send.send_response(3);
    assert_eq!(assert_ready!(probe.poll()).unwrap(), 3);
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn gate_mode_releases_a_reserved_probe_when_the_service_is_dropped() {
    let config = BreakerConfig::builder()
        .mode(Mode::Gate)
        .min_requests(4)
        .patience(Duration::ZERO)
        .open_min(Duration::from_secs(1))
        .open_max(Duration::from_secs(1))
        .open_jitter(0.0)
        .probes(1)
        .build()
        .unwrap();
    let handle = BreakerHandle::new(&config);
    let mut tripper = BreakerLayer::from_handle(&handle).layer(failing());
    for i in 0..8 {
        // In gate mode readiness is pending once open; stop feeding failures then.
        let mut ready = tokio_test::task::spawn(tripper.ready());
        match ready.poll() {
            std::task::Poll::Ready(Ok(s)) => {
                let _ = s.call(i).await;
            }
            _ => break,
        }
    }
    assert_eq!(handle.state(), State::Open);
    tokio::time::advance(Duration::from_millis(1100)).await;

    // One service reserves the probe in poll_ready, then is dropped without calling.
    let mut first = BreakerLayer::from_handle(&handle).layer(failing());
    {
        let mut ready = tokio_test::task::spawn(first.ready());
        assert!(matches!(ready.poll(), std::task::Poll::Ready(Ok(_))));
    }
    drop(first);

    // The reservation went with it: another service can take the probe.
    let mut second =
        BreakerLayer::from_handle(&handle).layer(tower::service_fn(|n: u32| async move {
            Ok::<u32, BoxError>(n)
        }));
    let mut ready = tokio_test::task::spawn(second.ready());
    assert!(
        matches!(ready.poll(), std::task::Poll::Ready(Ok(_))),
        "the dropped service's reservation was not released"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_dropped_during_backoff_leaves_the_budget_consistent() {
    let budget = RetryBudget::builder()
        .initial(5.0)
        .no_decay()
        .build()
        .unwrap();
    let layer = RetryLayer::builder(budget.clone())
        .replay(CloneAll::default())
        .backoff(
            damper::core::backoff::Backoff::builder()
                .min(Duration::from_millis(100))
                .jitter(damper::core::backoff::Jitter::None)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let (mut svc, mut mock) = mock::spawn_layer::<u32, u32, _>(layer);
    mock.allow(10);
    let before = budget.balance(tokio::time::Instant::now());
    assert_ready!(svc.poll_ready()).unwrap();
    let mut f = tokio_test::task::spawn(svc.call(1));
    assert_pending!(f.poll());
    let (_, send) = mock.next_request().await.unwrap();
    send.send_error("transient");
    // The retry is now waiting out its backoff.
    assert_pending!(f.poll());
    drop(f);
    tokio::time::advance(Duration::from_secs(5)).await;
    let after = budget.balance(tokio::time::Instant::now());
    assert!(
        after >= before - 1.0 - 1e-9 && after <= before + 1e-9,
        "balance {before} -> {after}: at most the one retry's token may be spent"
    );
    assert!(
        matches!(
            tokio_test::task::spawn(mock.next_request()).poll(),
            std::task::Poll::Pending
        ),
        "no attempt after the drop"
    );
}

#[tokio::test(start_paused = true)]
async fn clones_share_the_budget_and_the_hedge_counters() {
    let budget = RetryBudget::builder()
        .initial(0.0)
        .min_per_sec(0.0)
        .build()
        .unwrap();
    let a = budget.clone();
    let now = tokio::time::Instant::now();
    for _ in 0..20 {
        a.deposit(now);
    }
    assert!(
        budget.try_withdraw(now),
        "a deposit through one clone funds another"
    );

    let hedge = HedgeLayer::new();
    let stats = hedge.handle();
    let svc = hedge.layer(tower::service_fn(
        |n: u32| async move { Ok::<_, BoxError>(n) },
    ));
    for i in 0..3 {
        svc.clone().oneshot(i).await.unwrap();
    }
    assert_eq!(stats.stats().requests, 3);
}
