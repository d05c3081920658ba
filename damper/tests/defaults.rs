//! The client stack's breaker defaults, on in-process services in paused time: it trips fast
//! on a dependency that goes down, and not on a server that sheds part of its load.

use damper::breaker::State;
use damper::core::classify::{Failure, FailureKind, Outcome};
use damper::core::pushback::Pushback;
use damper::{BoxError, ClientStack};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tower::{Service, ServiceBuilder, ServiceExt};

/// A backend whose call number `k` fails when `fails(k)`; counts calls.
fn backend(
    calls: Arc<AtomicU64>,
    fails: impl Fn(u64) -> bool + Clone + Send + 'static,
) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone {
    tower::service_fn(move |n: u32| {
        let k = calls.fetch_add(1, Ordering::Relaxed);
        let fail = fails(k);
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if fail {
                Err::<u32, BoxError>("failed".into())
            } else {
                Ok(n)
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_dependency_that_goes_down_after_a_healthy_window_trips_within_the_run_limit() {
    let calls = Arc::new(AtomicU64::new(0));
    // Healthy for 2,000 calls (20 s, two full windows), then down.
    let layer = ClientStack::new()
        .hedging(false)
        .retries(false)
        .seed(5)
        .build()
        .unwrap();
    let handles = layer.handles().clone();
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(backend(calls.clone(), |k| k >= 2_000));
    let breaker = handles.breaker().unwrap().clone();
    for i in 0..2_200u32 {
        let _ = svc.ready().await.unwrap().call(i).await;
        tokio::time::advance(Duration::from_millis(5)).await;
        if breaker.state() == State::Open {
            break;
        }
    }
    // The failure rate alone would need about as many failures as the window holds successes;
    // the run of consecutive failures trips the breaker once it has lasted the breaker's
    // patience (1 s): one call every 10 ms, so the 101st failure, 1 s after the first.
    let failed = calls.load(Ordering::Relaxed) - 2_000;
    assert_eq!(failed, 101);
    assert_eq!(handles.breaker().unwrap().state(), State::Open);
    // While open, only the trickle and the spaced probes reach it: one call in 4 at first,
    // thinning to one in 20 as spaced probes (every 500 ms) keep failing; about 8% over 10 s.
    let before = calls.load(Ordering::Relaxed);
    for i in 0..1_000u32 {
        let _ = svc.ready().await.unwrap().call(i).await;
        tokio::time::advance(Duration::from_millis(5)).await;
    }
    let sent = calls.load(Ordering::Relaxed) - before;
    assert!(
        sent <= 1_000 / 10,
        "{sent} of 1,000 calls reached a dead dependency"
    );
}

/// Every failure is the server shedding with pushback (a 503 with `Retry-After`).
fn shedding(result: &Result<u32, BoxError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure(
            Failure::retryable(FailureKind::Overload)
                .with_pushback(Some(Pushback::After(Duration::from_millis(20)))),
        ),
    }
}

/// The breaker's state after 500 calls of which one in `every` is served, the rest shed.
async fn under_shedding(every: u64, trip_on_pushback: bool) -> State {
    let layer = ClientStack::new()
        .classifier(shedding as fn(&Result<u32, BoxError>) -> _)
        .hedging(false)
        .retries(false)
        .configure(|c| c.breaker.trip_on_pushback = trip_on_pushback)
        .seed(9)
        .build()
        .unwrap();
    let handles = layer.handles().clone();
    let calls = Arc::new(AtomicU64::new(0));
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(backend(calls, move |k| k % every != 0));
    for i in 0..500u32 {
        let _ = svc.ready().await.unwrap().call(i).await;
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    handles.breaker().unwrap().state()
}

#[tokio::test(start_paused = true)]
async fn a_server_shedding_with_pushback_does_not_open_the_breaker() {
    // Half the calls shed (twice the server's capacity): the server is serving.
    assert_eq!(under_shedding(2, false).await, State::Closed);
    // Counted as failures, the same answers trip it at the 50% failure rate.
    assert_eq!(under_shedding(2, true).await, State::Open);
    // A server that refuses every call is, to this client, down.
    assert_eq!(under_shedding(u64::MAX, false).await, State::Open);
}
