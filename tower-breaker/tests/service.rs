//! The service: fail-fast and gate modes, probes, drop guards, fallback, handle, keyed.

use damper_core::classify::{Failure, FailureKind, Outcome};
use damper_core::error::{BoxError, CircuitOpen};
use std::time::Duration;
use tokio_test::{assert_pending, assert_ready, assert_ready_ok};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_breaker::config::BreakerConfigBuilder;
use tower_breaker::{BreakerConfig, BreakerLayer, KeyedBreakerLayer, Mode, Reason, State};
use tower_test::{assert_request_eq, mock};

fn cfg() -> BreakerConfigBuilder {
    BreakerConfig::builder()
        .patience(Duration::ZERO)
        .min_requests(3)
        .open_min(Duration::from_secs(1))
        .open_jitter(0.0)
        .seed(1)
}

fn open_err(err: BoxError) -> CircuitOpen {
    *err.downcast_ref::<CircuitOpen>()
        .unwrap_or_else(|| panic!("expected CircuitOpen, got {err}"))
}

/// Fails three calls through the mock, tripping a `cfg()` breaker.
async fn trip<S>(svc: &mut mock::Spawn<S>, handle: &mut mock::Handle<&'static str, &'static str>)
where
    S: tower::Service<&'static str, Response = &'static str, Error = BoxError>,
{
    for _ in 0..3 {
        assert_ready_ok!(svc.poll_ready());
        let fut = svc.call("fail");
        assert_request_eq!(handle, "fail").send_error("boom");
        assert!(fut.await.is_err());
    }
}

#[tokio::test(start_paused = true)]
async fn fail_fast_rejects_while_open_and_probes_when_due() {
    let layer = BreakerLayer::new(cfg().probes(1).trickle(0.0).build().unwrap());
    let (mut svc, mut handle) = mock::spawn_layer::<&'static str, &'static str, _>(layer);
    let breaker = svc.get_ref().handle();
    trip(&mut svc, &mut handle).await;
    assert_eq!(breaker.state(), State::Open);

    // Ready from the breaker's side; the call fails at once without reaching the backend.
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call("refused").await.unwrap_err();
    assert_eq!(open_err(err).next_probe_in(), Duration::from_secs(1));

    tokio::time::advance(Duration::from_millis(400)).await;
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call("refused").await.unwrap_err();
    assert_eq!(open_err(err).next_probe_in(), Duration::from_millis(600));

    // The probe is due: one call goes through (the refused ones never did), and the breaker
    // stays open until it succeeds.
    tokio::time::advance(Duration::from_millis(600)).await;
    assert_ready_ok!(svc.poll_ready());
    let probe = svc.call("probe");
    assert_eq!(breaker.state(), State::Open);
    // A second call is refused until the next spaced probe.
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call("refused").await.unwrap_err();
    assert_eq!(open_err(err).next_probe_in(), Duration::from_secs(1));
    assert_request_eq!(handle, "probe").send_response("ok");
    assert_eq!(probe.await.unwrap(), "ok");
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.transitions(), 2);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_trickles_a_share_of_calls_through_while_open() {
    let layer = BreakerLayer::new(cfg().trickle(0.25).build().unwrap());
    let (mut svc, mut handle) = mock::spawn_layer::<&'static str, &'static str, _>(layer);
    let breaker = svc.get_ref().handle();
    trip(&mut svc, &mut handle).await;
    // Every fourth refused call goes through as a probe; its success turns it half-open.
    for _ in 0..3 {
        assert_ready_ok!(svc.poll_ready());
        assert!(svc.call("refused").await.is_err());
    }
    assert_ready_ok!(svc.poll_ready());
    let probe = svc.call("trickled");
    assert_request_eq!(handle, "trickled").send_response("ok");
    assert_eq!(probe.await.unwrap(), "ok");
    assert_eq!(breaker.state(), State::HalfOpen);
}
#[tokio::test(start_paused = true)]
async fn gate_mode_is_pending_while_open_and_wakes_at_probe_time() {
    let layer = BreakerLayer::new(cfg().mode(Mode::Gate).probes(1).build().unwrap());
    let (mut svc, mut handle) = mock::spawn_layer::<&'static str, &'static str, _>(layer);
    let breaker = svc.get_ref().handle();
    trip(&mut svc, &mut handle).await;
    assert_eq!(breaker.state(), State::Open);

    assert_pending!(svc.poll_ready());
    tokio::time::advance(Duration::from_millis(999)).await;
    assert!(!svc.is_woken(), "woken before the probe is due");
    assert_pending!(svc.poll_ready());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(svc.is_woken(), "not woken at probe time");
    // Ready reserves the spaced probe: another clone waits for the next one.
    assert_ready_ok!(svc.poll_ready());
    assert_eq!(breaker.state(), State::Open);
    let mut other = mock::Spawn::new(svc.get_ref().clone());
    assert_pending!(other.poll_ready());

    // The probe is abandoned after 999 ms, which gate mode counts as a timeout: the spacing
    // doubles, and the next probe is 2 s after it.
    let probe = svc.call("probe");
    let _ = assert_request_eq!(handle, "probe");
    tokio::time::advance(Duration::from_millis(999)).await;
    assert_pending!(other.poll_ready());
    drop(probe);
    assert_eq!(breaker.snapshot().level, 2);
    tokio::time::advance(Duration::from_millis(1999)).await;
    assert_pending!(other.poll_ready());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(other.is_woken());
    assert_ready_ok!(other.poll_ready());
    assert_pending!(svc.poll_ready());

    // This probe succeeds: closed, and the first clone is woken and ready.
    let probe = other.call("probe 2");
    assert_request_eq!(handle, "probe 2").send_response("ok");
    assert_eq!(probe.await.unwrap(), "ok");
    assert_eq!(breaker.state(), State::Closed);
    assert!(svc.is_woken());
    assert_ready_ok!(svc.poll_ready());
}
#[tokio::test(start_paused = true)]
async fn a_dropped_probe_frees_its_slot_and_counts_for_nothing() {
    let layer = BreakerLayer::new(cfg().trickle(0.0).probes(2).build().unwrap());
    let (mut svc, mut handle) = mock::spawn_layer::<&'static str, &'static str, _>(layer);
    let breaker = svc.get_ref().handle();
    trip(&mut svc, &mut handle).await;
    tokio::time::advance(Duration::from_secs(1)).await;

    // Open: a dropped spaced probe counts for nothing (fail-fast mode).
    assert_ready_ok!(svc.poll_ready());
    let probe = svc.call("dropped probe");
    let _ = assert_request_eq!(handle, "dropped probe");
    drop(probe);
    assert_eq!(breaker.snapshot().level, 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_ready_ok!(svc.poll_ready());
    let probe = svc.call("probe");
    assert_request_eq!(handle, "probe").send_response("ok");
    assert_eq!(probe.await.unwrap(), "ok");
    assert_eq!(breaker.state(), State::HalfOpen);
    // Half-open: two may be in flight; a dropped one frees its slot.
    assert_ready_ok!(svc.poll_ready());
    let a = svc.call("a");
    assert_ready_ok!(svc.poll_ready());
    let b = svc.call("b");
    assert_ready_ok!(svc.poll_ready());
    assert!(svc.call("refused").await.is_err());
    let _ = assert_request_eq!(handle, "a");
    drop(a);
    assert_ready_ok!(svc.poll_ready());
    let c = svc.call("c");
    assert_request_eq!(handle, "b").send_response("ok");
    assert_eq!(b.await.unwrap(), "ok");
    assert_eq!(breaker.state(), State::Closed);
    drop(c);
}
#[tokio::test(start_paused = true)]
async fn a_dropped_gate_reservation_frees_the_probe_slot() {
    let layer = BreakerLayer::new(cfg().mode(Mode::Gate).probes(2).build().unwrap());
    let (mut svc, mut handle) = mock::spawn_layer::<&'static str, &'static str, _>(layer);
    trip(&mut svc, &mut handle).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_ready_ok!(svc.poll_ready());
    let probe = svc.call("probe");
    assert_request_eq!(handle, "probe").send_response("ok");
    assert_eq!(probe.await.unwrap(), "ok");
    assert_eq!(svc.get_ref().handle().state(), State::HalfOpen);
    // Two slots: two clones reserve them, a third waits.
    let mut one = mock::Spawn::new(svc.get_ref().clone());
    let mut two = mock::Spawn::new(svc.get_ref().clone());
    assert_ready_ok!(one.poll_ready());
    assert_ready_ok!(two.poll_ready());
    assert_pending!(svc.poll_ready());
    // A reservation dropped unused frees its slot and counts as nothing, even in gate mode.
    drop(one);
    assert!(svc.is_woken());
    assert_ready_ok!(svc.poll_ready());
    assert_eq!(svc.get_ref().handle().state(), State::HalfOpen);
}
#[tokio::test(start_paused = true)]
async fn dropped_closed_calls_are_not_failures() {
    let layer = BreakerLayer::new(cfg().build().unwrap());
    let (mut svc, mut handle) = mock::spawn_layer::<&'static str, &'static str, _>(layer);
    let breaker = svc.get_ref().handle();
    for _ in 0..10 {
        assert_ready_ok!(svc.poll_ready());
        drop(svc.call("abandoned"));
        let _ = handle.next_request().await;
    }
    assert_eq!(breaker.state(), State::Closed);
    drop(svc);
    assert_eq!(breaker.snapshot().counts.total, 0);
}

#[tokio::test(start_paused = true)]
async fn fallback_answers_while_open() {
    let layer = BreakerLayer::new(cfg().build().unwrap()).fallback(service_fn(
        |_req: &'static str| async { Ok::<_, BoxError>("stale") },
    ));
    let (mut svc, mut handle) = mock::spawn_layer::<&'static str, &'static str, _>(layer);
    trip(&mut svc, &mut handle).await;
    assert_ready_ok!(svc.poll_ready());
    assert_eq!(svc.call("x").await.unwrap(), "stale");
}

#[tokio::test(start_paused = true)]
async fn handle_forces_resets_and_publishes_transitions() {
    let layer = BreakerLayer::new(cfg().build().unwrap());
    let (mut svc, mut handle) = mock::spawn_layer::<&'static str, &'static str, _>(layer);
    let breaker = svc.get_ref().handle();
    let mut rx = breaker.subscribe();
    assert!(rx.borrow_and_update().is_none());

    breaker.force_open();
    assert!(rx.has_changed().unwrap());
    let t = rx.borrow_and_update().unwrap();
    assert_eq!((t.to, t.reason), (State::Open, Reason::Forced));
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call("x").await.unwrap_err();
    assert_eq!(open_err(err).next_probe_in(), Duration::MAX);
    // Forced open never probes.
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_ready_ok!(svc.poll_ready());
    assert!(svc.call("x").await.is_err());

    breaker.force_closed();
    for _ in 0..3 {
        assert_ready_ok!(svc.poll_ready());
        let fut = svc.call("fail");
        assert_request_eq!(handle, "fail").send_error("boom");
        assert!(fut.await.is_err());
    }
    assert_eq!(breaker.state(), State::Closed, "forced closed never trips");

    breaker.reset();
    assert_eq!(rx.borrow_and_update().unwrap().reason, Reason::Reset);
    trip(&mut svc, &mut handle).await;
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(breaker.transitions(), 4);
}

#[tokio::test(start_paused = true)]
async fn caller_errors_do_not_trip_and_custom_classifiers_apply() {
    // Errors whose text starts with "bad request" are the caller's fault.
    let classify = |r: &Result<&'static str, BoxError>| match r {
        Ok(_) => Outcome::Success,
        Err(e) if e.to_string().starts_with("bad request") => Outcome::CallerError,
        Err(_) => Outcome::Failure(Failure::retryable(FailureKind::Error)),
    };
    let layer = BreakerLayer::new(cfg().build().unwrap()).classifier(classify);
    let (mut svc, mut handle) = mock::spawn_layer::<&'static str, &'static str, _>(layer);
    let breaker = svc.get_ref().handle();
    for _ in 0..10 {
        assert_ready_ok!(svc.poll_ready());
        let fut = svc.call("x");
        assert_request_eq!(handle, "x").send_error("bad request: no such item");
        assert!(fut.await.is_err());
    }
    assert_eq!(breaker.state(), State::Closed);
    // Admissions are counted in batches; dropping the clone counts the rest.
    drop(svc);
    assert_eq!(breaker.snapshot().counts.total, 10);
}

#[tokio::test(start_paused = true)]
async fn local_rejections_from_inner_layers_count_for_nothing() {
    let layer = BreakerLayer::new(cfg().build().unwrap());
    let (mut svc, mut handle) = mock::spawn_layer::<&'static str, &'static str, _>(layer);
    let breaker = svc.get_ref().handle();
    for _ in 0..10 {
        assert_ready_ok!(svc.poll_ready());
        let fut = svc.call("x");
        assert_request_eq!(handle, "x").send_error(damper_core::error::Overloaded::new());
        assert!(fut.await.is_err());
    }
    assert_eq!(breaker.state(), State::Closed);
    drop(svc);
    assert_eq!(breaker.snapshot().counts.total, 0);
}

#[tokio::test(start_paused = true)]
async fn keyed_breakers_are_independent_and_bounded() {
    let layer = KeyedBreakerLayer::new(cfg().build().unwrap(), |req: &(&'static str, bool)| req.0)
        .max_keys(std::num::NonZeroUsize::new(4).unwrap());
    let backend = service_fn(|req: (&'static str, bool)| async move {
        if req.1 {
            Ok(req.0)
        } else {
            Err(BoxError::from("down"))
        }
    });
    let mut svc = layer.layer(backend);
    for _ in 0..3 {
        assert!(svc.ready().await.unwrap().call(("a", false)).await.is_err());
    }
    assert_eq!(layer.handle(&"a").unwrap().state(), State::Open);
    // "a" is refused without reaching the backend (which would answer Ok).
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(("a", true))
        .await
        .unwrap_err();
    assert!(err.is::<CircuitOpen>());
    // "b" is unaffected.
    assert_eq!(
        svc.ready().await.unwrap().call(("b", true)).await.unwrap(),
        "b"
    );

    // Attacker-chosen keys: the registry never exceeds its bound, and the open breaker of "a"
    // survives while closed ones are evicted.
    let keys: Vec<&'static str> = (0..100)
        .map(|i| &*Box::leak(format!("k{i}").into_boxed_str()))
        .collect();
    for k in keys {
        let _ = svc.ready().await.unwrap().call((k, true)).await;
        assert!(layer.len() <= 4);
    }
    assert_eq!(layer.handle(&"a").map(|h| h.state()), Some(State::Open));
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(("a", true))
        .await
        .unwrap_err();
    assert!(err.is::<CircuitOpen>());
}

#[tokio::test(start_paused = true)]
async fn keyed_layer_for_shares_state_across_endpoint_services() {
    let keyed = KeyedBreakerLayer::new(cfg().mode(Mode::Gate).build().unwrap(), |_: &u8| ());
    let (mut first, mut handle) =
        mock::spawn_layer::<&'static str, &'static str, _>(keyed.layer_for(&"replica-1"));
    // A second endpoint in the pool, so that gating one leaves the other (a pool of one
    // fails open).
    let (mut other, _h3) =
        mock::spawn_layer::<&'static str, &'static str, _>(keyed.layer_for(&"replica-2"));
    trip(&mut first, &mut handle).await;
    assert_pending!(first.poll_ready());
    // A new service for the same endpoint key finds the breaker open.
    let (mut second, _h2) =
        mock::spawn_layer::<&'static str, &'static str, _>(keyed.layer_for(&"replica-1"));
    assert_pending!(second.poll_ready());
    assert_ready!(other.poll_ready()).unwrap();
}

/// How replica 0 of [`three_replicas`] misbehaves.
#[derive(Clone, Copy)]
enum Sick {
    /// Fails every call.
    Down,
    /// Never answers.
    Hung,
}

/// A p2c balancer over three replicas, each behind its gate in `keyed`; replica 0 is `sick`,
/// the others echo. `calls[i]` counts the calls that reach replica `i`.
fn three_replicas<E>(
    keyed: &KeyedBreakerLayer<usize, E>,
    calls: &[std::sync::Arc<std::sync::atomic::AtomicUsize>],
    sick: Sick,
) -> impl Service<u32, Response = u32, Error = BoxError> {
    use std::sync::atomic::Ordering;
    use tower::balance::p2c::Balance;
    use tower::discover::ServiceList;
    use tower::load::{CompleteOnResponse, PendingRequests};
    let endpoints: Vec<_> = (0..3usize)
        .map(|i| {
            let calls = calls[i].clone();
            let backend = service_fn(move |req: u32| {
                calls.fetch_add(1, Ordering::Relaxed);
                async move {
                    match (i, sick) {
                        (0, Sick::Down) => Err(BoxError::from("replica down")),
                        (0, Sick::Hung) => std::future::pending().await,
                        _ => Ok(req),
                    }
                }
            });
            PendingRequests::new(
                keyed.layer_for(&i).layer(backend),
                CompleteOnResponse::default(),
            )
        })
        .collect();
    Balance::new(ServiceList::new(endpoints))
}

#[tokio::test(start_paused = true)]
async fn gate_mode_under_p2c_routes_around_an_open_endpoint() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let keyed = KeyedBreakerLayer::new(
        cfg()
            .min_requests(5)
            .open_min(Duration::from_secs(30))
            .mode(Mode::Gate)
            .build()
            .unwrap(),
        |_: &u32| (),
    );
    let calls: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    // Replica 0 is down; the others answer.
    let mut balance = three_replicas(&keyed, &calls, Sick::Down);
    let mut ok = 0;
    for i in 0..300 {
        if balance.ready().await.unwrap().call(i).await.is_ok() {
            ok += 1;
        }
    }
    let down = calls[0].load(Ordering::Relaxed);
    assert!(down >= 5, "the breaker needs evidence: {down}");
    assert!(down <= 6, "an open endpoint still got {down} calls");
    assert_eq!(ok, 300 - down);
    assert_eq!(keyed.handle(&0).unwrap().state(), State::Open);
    assert_eq!(keyed.handle(&1).unwrap().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn keyed_idle_breakers_are_evicted_first() {
    let layer = KeyedBreakerLayer::new(cfg().build().unwrap(), |req: &&'static str| *req)
        .max_keys(std::num::NonZeroUsize::new(2).unwrap())
        .idle_timeout(Duration::from_secs(60));
    let mut svc = layer.layer(service_fn(|req: &'static str| async move {
        Ok::<_, BoxError>(req)
    }));
    svc.ready().await.unwrap().call("old").await.unwrap();
    tokio::time::advance(Duration::from_secs(120)).await;
    // "busy" is used after "old" went idle; a third key evicts the idle one.
    for _ in 0..3 {
        svc.ready().await.unwrap().call("busy").await.unwrap();
    }
    svc.ready().await.unwrap().call("new").await.unwrap();
    assert_eq!(layer.len(), 2);
    assert!(layer.handle(&"old").is_none());
    assert!(layer.handle(&"busy").is_some());
    assert!(layer.handle(&"new").is_some());
}

#[test]
fn metrics_count_transitions_and_rejections() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // Handles are registered when a breaker is built, never per request.
    let svc = metrics::with_local_recorder(&recorder, || {
        BreakerLayer::new(cfg().name("inventory").build().unwrap())
            .layer(service_fn(|_: u8| async { Ok::<u8, BoxError>(0) }))
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let handle = svc.handle();
        handle.force_open();
        let err = svc.clone().oneshot(1).await.unwrap_err();
        assert!(err.is::<CircuitOpen>());
        handle.reset();
    });
    let mut seen = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        assert!(labels.contains(&"name=inventory".to_string()), "{labels:?}");
        seen.insert(format!("{} {}", key.key().name(), labels.join(",")), value);
    }
    let get = |k: &str| seen.get(k);
    assert_eq!(
        get("damper_breaker_transitions_total name=inventory,state=open"),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(
        get("damper_breaker_transitions_total name=inventory,state=closed"),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(
        get("damper_breaker_rejected_total name=inventory"),
        Some(&DebugValue::Counter(1))
    );
    assert!(matches!(
        get("damper_breaker_state name=inventory"),
        Some(DebugValue::Gauge(g)) if g.into_inner() == 0.0
    ));
}

#[tokio::test(start_paused = true)]
async fn admissions_are_counted_once_in_both_modes_and_per_request_clones() {
    for mode in [Mode::FailFast, Mode::Gate] {
        let layer = BreakerLayer::new(cfg().mode(mode).build().unwrap());
        let (mut svc, mut handle) = mock::spawn_layer::<&'static str, &'static str, _>(layer);
        let breaker = svc.get_ref().handle();
        for _ in 0..10 {
            assert_ready_ok!(svc.poll_ready());
            let fut = svc.call("x");
            assert_request_eq!(handle, "x").send_response("ok");
            fut.await.unwrap();
        }
        // Per-request clones (the `svc.clone().oneshot(req)` idiom).
        for _ in 0..5 {
            let mut clone = mock::Spawn::new(svc.get_ref().clone());
            assert_ready_ok!(clone.poll_ready());
            let fut = clone.call("y");
            assert_request_eq!(handle, "y").send_response("ok");
            fut.await.unwrap();
        }
        // A reservation dropped unused (gate mode reserves in poll_ready) counts for nothing.
        assert_ready_ok!(svc.poll_ready());
        drop(svc);
        assert_eq!(breaker.snapshot().counts.total, 15, "{mode:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_through_the_service() {
    let layer = BreakerLayer::new(
        cfg()
            .slow_call(Duration::from_millis(100), 0.5)
            .build()
            .unwrap(),
    );
    let (mut svc, mut handle) = mock::spawn_layer::<&'static str, &'static str, _>(layer);
    let breaker = svc.get_ref().handle();
    for i in 0..3 {
        assert_ready_ok!(svc.poll_ready());
        let mut fut = tokio_test::task::spawn(svc.call("slow"));
        let respond = assert_request_eq!(handle, "slow");
        assert_pending!(fut.poll());
        tokio::time::advance(Duration::from_millis(150)).await;
        respond.send_response("late but fine");
        assert_eq!(fut.await.unwrap(), "late but fine");
        let want = if i < 2 { State::Closed } else { State::Open };
        assert_eq!(breaker.state(), want, "after {} slow calls", i + 1);
    }
    assert_eq!(
        breaker.subscribe().borrow().unwrap().reason,
        Reason::SlowCallRate
    );
}

#[tokio::test(start_paused = true)]
async fn gate_mode_sees_a_hung_endpoint_through_its_abandoned_calls() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let keyed = KeyedBreakerLayer::new(
        cfg().min_requests(5).mode(Mode::Gate).build().unwrap(),
        |_: &u32| (),
    );
    let calls: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    // Replica 0 hangs; the others answer.
    let mut balance = three_replicas(&keyed, &calls, Sick::Hung);
    let mut ok = 0;
    for i in 0..300 {
        // The caller gives up after 100 ms, dropping the call: gate mode counts that as a
        // timeout of the endpoint.
        let call = balance.ready().await.unwrap().call(i);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(100), call).await {
            ok += 1;
        }
    }
    assert_eq!(keyed.handle(&0).unwrap().state(), State::Open);
    let hung = calls[0].load(Ordering::Relaxed);
    // The evidence it needs, plus the spaced probes of the time the hung calls took.
    assert!(hung <= 12, "a hung endpoint still got {hung} calls");
    assert_eq!(ok, 300 - hung);
}

/// A p2c balancer over two replicas that always fail, each behind its gate in `keyed`;
/// `calls` counts the calls that reach a replica.
fn down_pool<E>(
    keyed: &KeyedBreakerLayer<usize, E>,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> impl Service<u32, Response = u32, Error = BoxError> {
    use std::sync::atomic::Ordering;
    use tower::balance::p2c::Balance;
    use tower::discover::ServiceList;
    use tower::load::{CompleteOnResponse, PendingRequests};
    let endpoints: Vec<_> = (0..2usize)
        .map(|i| {
            let calls = calls.clone();
            let backend = service_fn(move |_: u32| {
                calls.fetch_add(1, Ordering::Relaxed);
                async move { Err::<u32, _>(BoxError::from("replica down")) }
            });
            PendingRequests::new(
                keyed.layer_for(&i).layer(backend),
                CompleteOnResponse::default(),
            )
        })
        .collect();
    Balance::new(ServiceList::new(endpoints))
}

#[tokio::test(start_paused = true)]
async fn gate_mode_fails_open_before_it_empties_the_pool() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let keyed = KeyedBreakerLayer::new(
        cfg().min_requests(5).mode(Mode::Gate).build().unwrap(),
        |_: &u32| (),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let mut balance = down_pool(&keyed, calls.clone());
    let start = tokio::time::Instant::now();
    for i in 0..100 {
        let _ = balance.ready().await.unwrap().call(i).await;
    }
    // One of the two may be gated (half the pool); with both open every gate fails open, so
    // no call waited for a probe time and every call reached a replica.
    assert_eq!(
        tokio::time::Instant::now(),
        start,
        "a call waited for a gate"
    );
    assert_eq!(calls.load(Ordering::Relaxed), 100);
    assert_eq!(keyed.handle(&0).unwrap().state(), State::Open);
    assert_eq!(keyed.handle(&1).unwrap().state(), State::Open);

    // With max_ejected 1 (never fail open) the same pool gates both and waits.
    let keyed = KeyedBreakerLayer::new(
        cfg()
            .min_requests(5)
            .mode(Mode::Gate)
            .max_ejected(1.0)
            .build()
            .unwrap(),
        |_: &u32| (),
    );
    let mut balance = down_pool(&keyed, Arc::default());
    let start = tokio::time::Instant::now();
    for i in 0..100 {
        let _ = balance.ready().await.unwrap().call(i).await;
    }
    assert!(
        tokio::time::Instant::now() > start,
        "gated endpoints made calls wait"
    );
}
