//! The adaptive timeout against tower-test mocks, in paused time.

mod support;

use damper_core::deadline::{Deadline, HasDeadline};
use std::time::Duration;
use support::{MS, Req, close};
use tokio::time::{self, Instant};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tower_adaptive_timeout::error::{DeadlineExceeded, Elapsed};
use tower_adaptive_timeout::{AdaptiveTimeout, AdaptiveTimeoutLayer, BoxError};
use tower_test::mock::{self, Mock, spawn::Spawn};

type Svc<R> = Spawn<AdaptiveTimeout<Mock<R, u32>>>;
type Handle<R> = mock::Handle<R, u32>;

/// Sends `req`; the dependency answers after `latency` unless the attempt is cut first.
async fn attempt<R: HasDeadline + Send + 'static>(
    svc: &mut Svc<R>,
    handle: &mut Handle<R>,
    req: R,
    latency: Duration,
) -> Result<u32, BoxError> {
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(req));
    assert_pending!(fut.poll());
    let (_, send) = handle
        .next_request()
        .await
        .expect("request reached the mock");
    time::advance(latency).await;
    if !fut.is_woken() {
        send.send_response(7);
    }
    assert_ready!(fut.poll())
}

fn elapsed(err: &BoxError) -> Duration {
    err.downcast_ref::<Elapsed>()
        .unwrap_or_else(|| panic!("not Elapsed: {err}"))
        .timeout()
}

#[tokio::test(start_paused = true)]
async fn responds_within_the_timeout() {
    let (mut svc, mut handle) = mock::spawn_layer(AdaptiveTimeoutLayer::new());
    let r = attempt(&mut svc, &mut handle, 1u32, 10 * MS).await;
    assert_eq!(r.unwrap(), 7);
}

#[tokio::test(start_paused = true)]
async fn times_out_at_the_fallback_with_elapsed() {
    let layer = AdaptiveTimeoutLayer::builder()
        .fallback(100 * MS)
        .build()
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer(layer);
    let err = attempt(&mut svc, &mut handle, 1u32, 150 * MS)
        .await
        .unwrap_err();
    assert_eq!(elapsed(&err), 100 * MS);
    assert!(!err.is::<DeadlineExceeded>());
    // Just under the timeout is fine.
    assert!(attempt(&mut svc, &mut handle, 1u32, 99 * MS).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn timeout_follows_the_observed_quantile() {
    let layer = AdaptiveTimeoutLayer::new();
    let (mut svc, mut handle) = mock::spawn_layer(layer.clone());
    for _ in 0..200 {
        attempt(&mut svc, &mut handle, 1u32, 20 * MS).await.unwrap();
    }
    // p99.9 = 20 ms, × 1.5.
    let t = layer.current_timeout(Instant::now());
    assert!(close(t, 30 * MS), "{t:?}");
    assert!(attempt(&mut svc, &mut handle, 1u32, 25 * MS).await.is_ok());
    let err = attempt(&mut svc, &mut handle, 1u32, 40 * MS)
        .await
        .unwrap_err();
    assert!(close(elapsed(&err), 30 * MS));
}

#[tokio::test(start_paused = true)]
async fn adapts_to_a_latency_step_above_the_timeout() {
    let layer = AdaptiveTimeoutLayer::new();
    let (mut svc, mut handle) = mock::spawn_layer(layer.clone());
    for _ in 0..500 {
        attempt(&mut svc, &mut handle, 1u32, 20 * MS).await.unwrap();
    }
    let before = layer.current_timeout(Instant::now());
    assert!(before < 100 * MS, "{before:?}");

    // The dependency now takes 100 ms, above the ~30 ms timeout: every attempt times out until
    // the censored samples and the backoff lift the timeout.
    let stepped = Instant::now();
    let mut timeouts = 0;
    while attempt(&mut svc, &mut handle, 1u32, 100 * MS)
        .await
        .is_err()
    {
        timeouts += 1;
        assert!(timeouts <= 15, "not adapted after {timeouts} timeouts");
    }
    let took = stepped.elapsed();
    assert!(took <= Duration::from_secs(1), "adapted after {took:?}");

    // And it stays adapted: no false timeouts at the new latency.
    for _ in 0..300 {
        attempt(&mut svc, &mut handle, 1u32, 100 * MS)
            .await
            .unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn never_passes_the_ceiling() {
    let layer = AdaptiveTimeoutLayer::builder()
        .fallback(100 * MS)
        .ceiling(200 * MS)
        .build()
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer(layer.clone());
    // A hung dependency: backoff grows the timeout, up to the ceiling only.
    for _ in 0..30 {
        let err = attempt(&mut svc, &mut handle, 1u32, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(elapsed(&err) <= 200 * MS);
    }
    assert_eq!(layer.current_timeout(Instant::now()), 200 * MS);
}

#[tokio::test(start_paused = true)]
async fn never_goes_below_the_floor() {
    let layer = AdaptiveTimeoutLayer::builder()
        .floor(50 * MS)
        .build()
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer(layer.clone());
    for _ in 0..200 {
        attempt(&mut svc, &mut handle, 1u32, MS).await.unwrap();
    }
    assert_eq!(layer.current_timeout(Instant::now()), 50 * MS);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_the_attempt() {
    let layer = AdaptiveTimeoutLayer::new();
    let (mut svc, mut handle) = mock::spawn_layer(layer.clone());
    let req = Req::with_deadline(Deadline::after(Instant::now(), 30 * MS));
    let err = attempt(&mut svc, &mut handle, req, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert!(!err.is::<Elapsed>());
    // The deadline fired at 30 ms, not the 1 s fallback; the policy learned nothing from it.
    assert_eq!(layer.histogram().count(Instant::now()), 0);

    // A distant deadline: the attempt waits a third of it (but no longer than the ceiling),
    // here longer than the 1 s adaptive timeout.
    let req = Req::with_deadline(Deadline::after(Instant::now(), Duration::from_secs(12)));
    let err = attempt(&mut svc, &mut handle, req, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(elapsed(&err), Duration::from_secs(4));
    // With the share off the adaptive timeout alone is in charge.
    let layer = AdaptiveTimeoutLayer::builder()
        .deadline_share(0.0)
        .build()
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer(layer);
    let req = Req::with_deadline(Deadline::after(Instant::now(), Duration::from_secs(12)));
    let err = attempt(&mut svc, &mut handle, req, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(elapsed(&err), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn an_expired_request_never_reaches_the_service() {
    support::expired_request_fails_fast(AdaptiveTimeoutLayer::new());
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_unrecorded() {
    let layer = AdaptiveTimeoutLayer::new();
    let (mut svc, mut handle) = mock::spawn_layer::<u32, u32, _>(layer.clone());
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(1));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("connection reset");
    let err = assert_ready!(fut.poll()).unwrap_err();
    assert_eq!(err.to_string(), "connection reset");
    assert!(!err.is::<Elapsed>() && !err.is::<DeadlineExceeded>());
    // Fast failures would drag the quantile down: they are not recorded.
    assert_eq!(layer.histogram().count(Instant::now()), 0);
}

#[tokio::test(start_paused = true)]
async fn a_ready_response_needs_no_timer_and_is_recorded() {
    let layer = AdaptiveTimeoutLayer::new();
    let (mut svc, mut handle) = mock::spawn_layer::<u32, u32, _>(layer.clone());
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(1));
    let (_, send) = handle.next_request().await.unwrap();
    time::advance(5 * MS).await;
    send.send_response(3);
    // First poll: already answered.
    assert_eq!(assert_ready!(fut.poll()).unwrap(), 3);
    let now = Instant::now();
    assert_eq!(layer.histogram().count(now), 1);
    assert!(close(layer.histogram().quantile(1.0, now).unwrap(), 5 * MS));
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_policy() {
    let layer = AdaptiveTimeoutLayer::new();
    let (mut a, mut handle) = mock::spawn_layer::<u32, u32, _>(layer.clone());
    let b = a.get_ref().clone();
    attempt(&mut a, &mut handle, 1, 5 * MS).await.unwrap();
    assert_eq!(b.policy().histogram().count(Instant::now()), 1);
    assert_eq!(layer.histogram().count(Instant::now()), 1);
}

#[test]
fn invalid_configs_name_the_field() {
    let e = AdaptiveTimeoutLayer::builder()
        .floor(Duration::from_secs(2))
        .ceiling(Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "ceiling");
    let e = AdaptiveTimeoutLayer::builder()
        .quantile(2.0)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "quantile");
    assert!(e.to_string().contains("quantile"));
}

/// Builds a layer under a debugging recorder, runs `drive` in paused time, and returns a
/// lookup of the layer's counters and gauges (by name, for the `name` label `label`).
fn with_metrics<F, Fut>(
    label: &'static str,
    build: impl FnOnce() -> AdaptiveTimeoutLayer,
    drive: F,
) -> impl Fn(&str) -> f64
where
    F: FnOnce(AdaptiveTimeoutLayer) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use damper_core::metrics as m;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let layer = metrics::with_local_recorder(&recorder, build);
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(drive(layer));
    let values: Vec<_> = snapshotter.snapshot().into_vec();
    move |name: &str| {
        values
            .iter()
            .find(|(key, ..)| {
                key.key().name() == name
                    && key
                        .key()
                        .labels()
                        .any(|l| l.key() == m::LABEL_NAME && l.value() == label)
            })
            .map(|(.., v)| match v {
                DebugValue::Counter(c) => *c as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(_) => panic!("{name} is a histogram"),
            })
            .unwrap_or_else(|| panic!("{name} not registered"))
    }
}

#[test]
fn metrics_are_counted() {
    use damper_core::metrics as m;

    let find = with_metrics(
        "orders",
        || {
            AdaptiveTimeoutLayer::builder()
                .fallback(100 * MS)
                .name("orders")
                .build()
                .unwrap()
        },
        |layer| async move {
            let (mut svc, mut handle) = mock::spawn_layer::<Req, u32, _>(layer);
            let hung = Duration::from_secs(1);
            attempt(&mut svc, &mut handle, Req::default(), hung)
                .await
                .unwrap_err();
            assert_ready_ok!(svc.poll_ready());
            let expired = Req::with_deadline(Deadline::at(Instant::now()));
            assert!(svc.call(expired).await.is_err());
        },
    );
    assert_eq!(find(m::TIMEOUT_ELAPSED_TOTAL), 1.0);
    assert_eq!(find(m::DEADLINE_EXCEEDED_TOTAL), 1.0);
    assert_eq!(find(m::TIMEOUT_CURRENT_SECONDS), 0.1);
}

#[test]
fn sampled_at_high_rates_yet_every_timeout_counts() {
    use damper_core::metrics as m;

    let find = with_metrics(
        "busy",
        || {
            AdaptiveTimeoutLayer::builder()
                .max_samples_per_sec(500)
                .name("busy")
                .build()
                .unwrap()
        },
        |layer| async move {
            let (mut svc, mut handle) = mock::spawn_layer::<u32, u32, _>(layer.clone());
            // 10 000 attempts per second.
            for _ in 0..5000 {
                let latency = Duration::from_micros(100);
                attempt(&mut svc, &mut handle, 1, latency).await.unwrap();
            }
            let now = Instant::now();
            let recorded = layer.histogram().count(now);
            assert!(recorded > 100 && recorded < 1500, "{recorded} of 5000");
            // The sample still gives the quantile: 100 µs × 1.5, floored at 10 ms.
            assert_eq!(layer.current_timeout(now), 10 * MS);
            // A hang: every attempt times out, sampled or not, and each one is counted.
            for _ in 0..300 {
                attempt(&mut svc, &mut handle, 1, Duration::from_secs(60))
                    .await
                    .unwrap_err();
            }
            // The sampled timeouts alone backed the timeout off.
            assert!(layer.current_timeout(Instant::now()) > 10 * MS);
        },
    );
    assert_eq!(find(m::TIMEOUT_ELAPSED_TOTAL), 300.0);
}

/// 10 000 attempts a second answered after 100 µs: above `max_samples` a second, so most
/// attempts are neither measured nor clocked at the call.
async fn busy(svc: &mut Svc<u32>, handle: &mut Handle<u32>, attempts: u32) {
    for _ in 0..attempts {
        attempt(svc, handle, 1, Duration::from_micros(100))
            .await
            .unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn at_high_rates_the_requests_still_refresh_the_timeout() {
    let layer = AdaptiveTimeoutLayer::builder()
        .max_samples_per_sec(500)
        .build()
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<u32, u32, _>(layer.clone());
    assert_eq!(layer.state().base, Duration::from_secs(1), "the fallback");
    busy(&mut svc, &mut handle, 10_000).await;
    let recorded = layer.histogram().count(Instant::now());
    assert!(
        recorded > 200 && recorded < 2_000,
        "{recorded} of 10 000 measured"
    );
    // `state` does not refresh: the sampled requests did (100 µs × 1.5, floored at 10 ms).
    assert_eq!(layer.state().base, 10 * MS);
}

#[tokio::test(start_paused = true)]
async fn an_unclocked_attempt_is_timed_from_its_first_pending_poll() {
    let layer = AdaptiveTimeoutLayer::builder()
        .max_samples_per_sec(10)
        .build()
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<u32, u32, _>(layer.clone());
    busy(&mut svc, &mut handle, 10_000).await;
    let timeout = layer.state().effective;
    assert_eq!(timeout, 10 * MS);
    // About one attempt in 2¹⁰ is sampled now; the draws are the same on every run.
    let measured = layer.histogram().count(Instant::now());
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(1));
    let _pending = handle.next_request().await.unwrap();
    // Left unpolled for longer than the timeout: its timer has not started.
    time::advance(3 * timeout).await;
    assert_pending!(fut.poll());
    time::advance(timeout - MS).await;
    assert_pending!(fut.poll());
    time::advance(MS).await;
    let err = assert_ready!(fut.poll()).unwrap_err();
    assert_eq!(elapsed(&err), timeout);
    // Unsampled, so the timeout taught the policy nothing.
    assert_eq!(layer.histogram().count(Instant::now()), measured);
}

#[cfg(feature = "serde")]
#[test]
fn config_deserializes_with_defaults_and_is_validated() {
    use tower_adaptive_timeout::TimeoutConfig;
    let cfg: TimeoutConfig =
        serde_json::from_str(r#"{ "quantile": 0.99, "floor": { "secs": 0, "nanos": 5000000 } }"#)
            .unwrap();
    assert_eq!(cfg.quantile, 0.99);
    assert_eq!(cfg.floor, 5 * MS);
    assert_eq!(cfg.ceiling, TimeoutConfig::default().ceiling);
    let bad: TimeoutConfig = serde_json::from_str(r#"{ "multiplier": 0.5 }"#).unwrap();
    let e = AdaptiveTimeoutLayer::builder()
        .config(bad)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "multiplier");
    assert!(serde_json::from_str::<TimeoutConfig>(r#"{ "quantiles": 0.5 }"#).is_err());
}
