//! The deadline layer against tower-test mocks, in paused time.

mod support;

use damper_core::deadline::Deadline;
use std::time::Duration;
use support::{MS, Req};
use tokio::time::{self, Instant};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tower::ServiceBuilder;
use tower_adaptive_timeout::error::{DeadlineExceeded, Elapsed};
use tower_adaptive_timeout::{AdaptiveTimeoutLayer, DeadlineLayer};
use tower_test::mock;

fn layer(timeout: Duration) -> DeadlineLayer {
    DeadlineLayer::builder().timeout(timeout).build().unwrap()
}

#[tokio::test(start_paused = true)]
async fn sets_and_propagates_the_deadline() {
    let (mut svc, mut handle) = mock::spawn_layer::<Req, u32, _>(layer(250 * MS));
    let now = Instant::now();
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(Req::default()));
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.deadline, Some(Deadline::after(now, 250 * MS)));
    assert_eq!(req.outgoing.as_deref(), Some("250000u"));
    send.send_response(1);
    assert_eq!(assert_ready!(fut.poll()).unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn never_extends_an_earlier_deadline() {
    let (mut svc, mut handle) = mock::spawn_layer::<Req, u32, _>(layer(Duration::from_secs(1)));
    let earlier = Deadline::after(Instant::now(), 100 * MS);
    assert_ready_ok!(svc.poll_ready());
    let _fut = svc.call(Req::with_deadline(earlier));
    let (req, _send) = handle.next_request().await.unwrap();
    assert_eq!(req.deadline, Some(earlier));
    assert_eq!(req.outgoing.as_deref(), Some("100000u"));
}

#[tokio::test(start_paused = true)]
async fn a_shorter_layer_timeout_shortens_a_later_deadline() {
    let (mut svc, mut handle) = mock::spawn_layer::<Req, u32, _>(layer(50 * MS));
    let now = Instant::now();
    assert_ready_ok!(svc.poll_ready());
    let _fut = svc.call(Req::with_deadline(Deadline::after(
        now,
        Duration::from_secs(9),
    )));
    let (req, _send) = handle.next_request().await.unwrap();
    assert_eq!(req.deadline, Some(Deadline::after(now, 50 * MS)));
}

#[tokio::test(start_paused = true)]
async fn accepts_an_incoming_grpc_timeout_clamped() {
    let server = DeadlineLayer::builder()
        .accept_grpc_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, u32, _>(server);
    let now = Instant::now();
    let cases = [
        ("20m", Some(20 * MS)),
        // A caller cannot ask for more than the server allows.
        ("100S", Some(Duration::from_secs(5))),
        // Malformed values are ignored.
        ("1.5S", None),
        ("123456789n", None),
    ];
    for (incoming, want) in cases {
        assert_ready_ok!(svc.poll_ready());
        let _fut = svc.call(Req::with_incoming(incoming));
        let (req, _send) = handle.next_request().await.unwrap();
        assert_eq!(
            req.deadline,
            want.map(|d| Deadline::after(now, d)),
            "{incoming}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn ignores_the_incoming_header_unless_told() {
    let (mut svc, mut handle) = mock::spawn_layer::<Req, u32, _>(layer(Duration::from_secs(1)));
    let now = Instant::now();
    assert_ready_ok!(svc.poll_ready());
    let _fut = svc.call(Req::with_incoming("1m"));
    let (req, _send) = handle.next_request().await.unwrap();
    assert_eq!(
        req.deadline,
        Some(Deadline::after(now, Duration::from_secs(1)))
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_request_fails_fast() {
    support::expired_request_fails_fast(layer(Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn enforces_the_deadline() {
    let (mut svc, mut handle) = mock::spawn_layer::<Req, u32, _>(layer(100 * MS));
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(Req::default()));
    let (_req, _send) = handle.next_request().await.unwrap();
    assert_pending!(fut.poll());
    time::advance(99 * MS).await;
    assert_pending!(fut.poll());
    time::advance(MS).await;
    assert!(fut.is_woken());
    let err = assert_ready!(fut.poll()).unwrap_err();
    assert!(err.is::<DeadlineExceeded>());
    assert!(!err.is::<Elapsed>());
}

#[tokio::test(start_paused = true)]
async fn without_any_deadline_nothing_changes() {
    let passthrough = DeadlineLayer::builder().build().unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, u32, _>(passthrough);
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(Req::default()));
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, Req::default());
    assert_pending!(fut.poll());
    time::advance(Duration::from_secs(3600)).await;
    assert_pending!(fut.poll());
    send.send_response(2);
    assert_eq!(assert_ready!(fut.poll()).unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn propagation_can_be_switched_off() {
    let quiet = DeadlineLayer::builder()
        .timeout(Duration::from_secs(1))
        .propagate(false)
        .build()
        .unwrap();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, u32, _>(quiet);
    assert_ready_ok!(svc.poll_ready());
    let _fut = svc.call(Req::default());
    let (req, _send) = handle.next_request().await.unwrap();
    assert!(req.deadline.is_some());
    assert_eq!(req.outgoing, None);
}

#[tokio::test(start_paused = true)]
async fn stacked_the_deadline_cuts_the_attempt_and_says_so() {
    let stack = ServiceBuilder::new()
        .layer(layer(50 * MS))
        .layer(AdaptiveTimeoutLayer::new());
    let (mut svc, mut handle) = mock::spawn_layer::<Req, u32, _>(stack);
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(Req::default()));
    let (_req, _send) = handle.next_request().await.unwrap();
    assert_pending!(fut.poll());
    time::advance(50 * MS).await;
    let err = assert_ready!(fut.poll()).unwrap_err();
    // The 1 s adaptive fallback did not fire; the 50 ms deadline did.
    assert!(err.is::<DeadlineExceeded>(), "{err}");
}

#[test]
fn invalid_configs_name_the_field() {
    let e = DeadlineLayer::builder()
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "timeout");
    let e = DeadlineLayer::builder()
        .accept_grpc_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "accept_grpc_timeout");
}

#[cfg(feature = "http")]
mod http_requests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn reads_clamps_and_rewrites_the_header() {
        let server = DeadlineLayer::builder()
            .accept_grpc_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let (mut svc, mut handle) = mock::spawn_layer::<http::Request<()>, u32, _>(server);
        let now = Instant::now();
        let req = http::Request::builder()
            .header("grpc-timeout", "2S")
            .body(())
            .unwrap();
        assert_ready_ok!(svc.poll_ready());
        let _fut = svc.call(req);
        let (req, _send) = handle.next_request().await.unwrap();
        assert_eq!(req.headers()["grpc-timeout"], "1000000u");
        assert_eq!(
            req.extensions().get::<Deadline>(),
            Some(&Deadline::after(now, Duration::from_secs(1)))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn client_sets_the_header() {
        let (mut svc, mut handle) = mock::spawn_layer::<http::Request<()>, u32, _>(layer(300 * MS));
        assert_ready_ok!(svc.poll_ready());
        let _fut = svc.call(http::Request::new(()));
        let (req, _send) = handle.next_request().await.unwrap();
        assert_eq!(req.headers()["grpc-timeout"], "300000u");
    }
}

#[tokio::test(start_paused = true)]
async fn propagate_writes_what_is_left_when_each_request_passes() {
    use tower_adaptive_timeout::PropagateDeadlineLayer;
    let (mut svc, mut handle) = mock::spawn_layer::<Req, u32, _>(PropagateDeadlineLayer::new());
    let deadline = Deadline::at(Instant::now() + 2000 * MS);
    // Sent at once, then again 1.5 s later (as a retry would send a copy).
    for (wait, want) in [(0, "2000000u"), (1500, "500000u")] {
        time::advance(wait * MS).await;
        assert_ready_ok!(svc.poll_ready());
        let _fut = svc.call(Req::with_deadline(deadline));
        let (req, _send) = handle.next_request().await.unwrap();
        assert_eq!(req.outgoing.as_deref(), Some(want));
    }
    // A request without a deadline passes untouched.
    assert_ready_ok!(svc.poll_ready());
    let _fut = svc.call(Req::default());
    let (req, _send) = handle.next_request().await.unwrap();
    assert_eq!(req.outgoing, None);
}

#[tokio::test(start_paused = true)]
async fn a_disabled_propagate_layer_writes_nothing() {
    use tower_adaptive_timeout::PropagateDeadlineLayer;
    let (mut svc, mut handle) =
        mock::spawn_layer::<Req, u32, _>(PropagateDeadlineLayer::enabled(false));
    assert_ready_ok!(svc.poll_ready());
    let _fut = svc.call(Req::with_deadline(Deadline::at(Instant::now() + 2000 * MS)));
    let (req, _send) = handle.next_request().await.unwrap();
    assert_eq!(req.outgoing, None);
}
