//! Behaviour of the fault layer, in paused time with tower-test mocks.

use std::time::Duration;
use tokio::time::{Instant, advance};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_fault_injection::{FaultKind, FaultLayer, FaultSpec, InjectedFault, Latency, Schedule};
use tower_test::{assert_request_eq, mock};

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn kind(err: &damper_core::BoxError) -> FaultKind {
    err.downcast_ref::<InjectedFault>()
        .expect("an injected fault")
        .kind()
}

#[tokio::test(start_paused = true)]
async fn disabled_layer_passes_through() {
    let layer = FaultLayer::builder().build().unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<&str, &str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call("hello"));
    assert_request_eq!(handle, "hello").send_response("world");
    assert_eq!(assert_ready_ok!(fut.poll()), "world");
}

#[tokio::test(start_paused = true)]
async fn inner_errors_are_boxed_unchanged() {
    let layer = FaultLayer::builder().build().unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<&str, &str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call("x"));
    handle.next_request().await.unwrap().1.send_error("boom");
    let err = assert_ready!(fut.poll()).unwrap_err();
    assert_eq!(err.to_string(), "boom");
    assert!(err.downcast_ref::<InjectedFault>().is_none());
}

#[tokio::test(start_paused = true)]
async fn fixed_latency_delays_the_answer() {
    let layer = FaultLayer::builder()
        .forced(FaultSpec::new().latency(Latency::Fixed(ms(100))))
        .build()
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<&str, &str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call("a"));
    assert_request_eq!(handle, "a").send_response("b");
    assert_pending!(fut.poll());
    advance(ms(99)).await;
    assert_pending!(fut.poll());
    advance(ms(1)).await;
    assert_eq!(assert_ready_ok!(fut.poll()), "b");
}

#[tokio::test(start_paused = true)]
async fn injected_error_skips_the_inner_service() {
    let layer = FaultLayer::builder()
        .forced(FaultSpec::outage())
        .build()
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<&str, &str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call("a"));
    let err = assert_ready!(fut.poll()).unwrap_err();
    assert_eq!(kind(&err), FaultKind::Error);
    // The mock never saw the request.
    assert_pending!(task::spawn(handle.next_request()).poll());
}

#[tokio::test(start_paused = true)]
async fn hang_never_answers_until_dropped() {
    let layer = FaultLayer::builder()
        .forced(FaultSpec::blackout())
        .build()
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<&str, &str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call("a"));
    assert_pending!(fut.poll());
    advance(Duration::from_secs(3600)).await;
    assert_pending!(fut.poll());
    drop(fut);
    assert_pending!(task::spawn(handle.next_request()).poll());
    // A caller's timeout ends it.
    let svc = ServiceBuilder::new()
        .layer(
            FaultLayer::builder()
                .forced(FaultSpec::blackout())
                .build()
                .unwrap(),
        )
        .service_fn(|r: u32| async move { Ok::<_, std::convert::Infallible>(r) });
    let res = tokio::time::timeout(ms(50), svc.oneshot(1)).await;
    assert!(res.is_err());
}

#[tokio::test(start_paused = true)]
async fn capacity_cut_rejects_over_the_limit_and_frees_slots() {
    let layer = FaultLayer::builder()
        .forced(FaultSpec::new().capacity(2))
        .build()
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<u32, u32, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut a = task::spawn(svc.call(1));
    assert_ready_ok!(svc.poll_ready());
    let b = task::spawn(svc.call(2));
    assert_ready_ok!(svc.poll_ready());
    let mut c = task::spawn(svc.call(3));
    let err = assert_ready!(c.poll()).unwrap_err();
    assert_eq!(kind(&err), FaultKind::Capacity);

    assert_request_eq!(handle, 1).send_response(10);
    assert_eq!(assert_ready_ok!(a.poll()), 10);
    // A finished request frees its slot...
    assert_ready_ok!(svc.poll_ready());
    let mut d = task::spawn(svc.call(4));
    // ...and so does a dropped one.
    drop(b);
    assert_ready_ok!(svc.poll_ready());
    let mut e = task::spawn(svc.call(5));
    assert_pending!(d.poll());
    assert_pending!(e.poll());
    let _ = handle.next_request().await; // 2, already dropped by its caller
    assert_request_eq!(handle, 4).send_response(40);
    assert_request_eq!(handle, 5).send_response(50);
    assert_eq!(assert_ready_ok!(d.poll()), 40);
    assert_eq!(assert_ready_ok!(e.poll()), 50);
}

#[tokio::test(start_paused = true)]
async fn schedule_switches_faults_on_and_off() {
    let s = Duration::from_secs;
    let schedule = Schedule::builder()
        .between(s(10), s(20), FaultSpec::outage())
        .build()
        .unwrap();
    let layer = FaultLayer::builder()
        .schedule(schedule)
        .start(Instant::now())
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|r: u32| async move { Ok::<_, std::convert::Infallible>(r) });
    assert!(svc.clone().oneshot(1).await.is_ok());
    advance(s(10)).await;
    assert!(svc.clone().oneshot(1).await.is_err());
    advance(ms(9_999)).await;
    assert!(svc.clone().oneshot(1).await.is_err());
    advance(ms(1)).await;
    assert!(svc.clone().oneshot(1).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn handle_overrides_the_schedule_at_run_time() {
    let layer = FaultLayer::builder().build().unwrap();
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|r: u32| async move { Ok::<_, std::convert::Infallible>(r) });
    assert!(svc.clone().oneshot(1).await.is_ok());
    handle.set(FaultSpec::outage()).unwrap();
    assert!(svc.clone().oneshot(1).await.is_err());
    assert_eq!(svc.handle().get(), Some(FaultSpec::outage()));
    handle.clear();
    assert!(svc.clone().oneshot(1).await.is_ok());
}

async fn outcomes(seed: u64) -> Vec<bool> {
    let layer = FaultLayer::builder()
        .forced(FaultSpec::new().error_probability(0.3))
        .seed(seed)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|r: u32| async move {
            Ok::<_, std::convert::Infallible>(r)
        }));
    let mut out = Vec::new();
    for i in 0..2000 {
        out.push(svc.clone().oneshot(i).await.is_ok());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn deterministic_for_a_seed_and_probability_is_honoured() {
    let a = outcomes(7).await;
    assert_eq!(a, outcomes(7).await);
    assert_ne!(a, outcomes(8).await);
    let failed = a.iter().filter(|ok| !**ok).count();
    assert!((500..700).contains(&failed), "{failed} of 2000 failed");
}

#[test]
fn build_rejects_invalid_config() {
    let err = FaultLayer::builder()
        .forced(FaultSpec::new().error_probability(2.0))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "error_probability");
    let err = FaultLayer::builder().name("").build().unwrap_err();
    assert_eq!(err.field(), "name");
}

#[cfg(feature = "http")]
mod http_faults {
    use super::*;
    use http::{Response, StatusCode};
    use tower_fault_injection::HttpResponseInjector;

    #[tokio::test(start_paused = true)]
    async fn injected_http_status_with_headers() {
        let layer = FaultLayer::builder()
            .forced(FaultSpec::outage())
            .injector(HttpResponseInjector::service_unavailable(ms(1500)))
            .build()
            .unwrap();
        let svc = ServiceBuilder::new()
            .layer(layer)
            .service_fn(|_: http::Request<()>| async {
                Ok::<_, std::convert::Infallible>(Response::new(String::from("real")))
            });
        let res = svc.oneshot(http::Request::new(())).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()["retry-after"], "2");
        assert_eq!(res.body(), "");

        let layer = FaultLayer::builder()
            .forced(FaultSpec::new().capacity(0))
            .injector(HttpResponseInjector::too_many_requests())
            .build()
            .unwrap();
        let svc = ServiceBuilder::new()
            .layer(layer)
            .service_fn(|_: http::Request<()>| async {
                Ok::<_, std::convert::Infallible>(Response::new(String::new()))
            });
        let res = svc.oneshot(http::Request::new(())).await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    /// Regression: rounding `Duration::MAX` up to whole seconds overflowed (a panic in debug,
    /// `Retry-After: 0` in release). It saturates at `u64::MAX` seconds.
    #[test]
    fn retry_after_of_duration_max_saturates() {
        let inject = HttpResponseInjector::service_unavailable(Duration::MAX);
        let res: Response<String> =
            tower_fault_injection::Inject::inject(&inject, FaultKind::Error).unwrap();
        assert_eq!(res.headers()["retry-after"], u64::MAX.to_string().as_str());
        let whole = HttpResponseInjector::service_unavailable(Duration::from_secs(u64::MAX));
        let res: Response<String> =
            tower_fault_injection::Inject::inject(&whole, FaultKind::Error).unwrap();
        assert_eq!(res.headers()["retry-after"], u64::MAX.to_string().as_str());
    }
}

#[tokio::test(start_paused = true)]
async fn injected_faults_are_counted_by_reason() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // Handles are registered when the layer is built, so only the build needs the recorder.
    let layer = metrics::with_local_recorder(&recorder, || {
        FaultLayer::builder()
            .name("checkout")
            .forced(FaultSpec::outage().latency(Latency::Fixed(ms(1))))
            .build()
            .unwrap()
    });
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|r: u32| async move { Ok::<_, std::convert::Infallible>(r) });
    for i in 0..3 {
        assert!(svc.clone().oneshot(i).await.is_err());
    }
    let mut counts = std::collections::BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        assert_eq!(key.name(), damper_core::metrics::FAULT_INJECTED_TOTAL);
        let labels: Vec<_> = key.labels().map(|l| (l.key(), l.value())).collect();
        assert!(labels.contains(&("name", "checkout")), "{labels:?}");
        let reason = labels
            .iter()
            .find(|l| l.0 == "reason")
            .unwrap()
            .1
            .to_owned();
        if let DebugValue::Counter(n) = value {
            counts.insert(reason, n);
        }
    }
    assert_eq!(counts.get("error"), Some(&3));
    assert_eq!(counts.get("latency"), Some(&3));
    assert_eq!(counts.get("hang"), Some(&0));
    assert_eq!(counts.get("capacity"), Some(&0));
}
