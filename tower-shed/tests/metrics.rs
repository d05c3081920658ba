//! Metrics are registered once at build time and reflect limits, rejections and queueing.

use damper_core::metrics as names;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use std::time::Duration;
use tokio_test::{assert_pending, assert_ready, assert_ready_ok};
use tower::{Layer, Service};
use tower_shed::ShedLayer;
use tower_shed::limit::{Aimd, Fixed};

type Metrics = Vec<(
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// One snapshot (it drains histograms, so take it once per check).
fn take(snap: &Snapshotter) -> Metrics {
    snap.snapshot().into_vec()
}

fn find<'a>(all: &'a Metrics, name: &str, label: Option<(&str, &str)>) -> Option<&'a DebugValue> {
    all.iter().find_map(|(key, _, _, value)| {
        let key = key.key();
        let labelled =
            label.is_none_or(|(k, v)| key.labels().any(|l| l.key() == k && l.value() == v));
        (key.name() == name && labelled).then_some(value)
    })
}

#[test]
fn rejections_are_counted_by_partition_and_the_limit_is_a_gauge() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let layer = metrics::with_local_recorder(&recorder, || {
        ShedLayer::builder(Fixed::new(2).unwrap())
            .name("api")
            .partition("critical", 0.5)
            .partition("best_effort", 0.5)
            .partition_with(|r: &u32| if *r == 0 { "critical" } else { "best_effort" })
            .build()
            .unwrap()
    });
    let mut svc = layer.layer(tower::service_fn(|r: u32| async move {
        Ok::<_, std::convert::Infallible>(r)
    }));
    let mut task = tokio_test::task::spawn(());
    let mut held = Vec::new();
    for r in [1, 1, 1, 1, 0] {
        task.enter(|cx, _| assert!(svc.poll_ready(cx).is_ready()));
        held.push(tokio_test::task::spawn(svc.call(r)));
    }
    // Two admitted (best effort borrows the idle critical share), three rejected.
    let all = take(&snap);
    let rejected = |p| {
        find(
            &all,
            names::SHED_REJECTED_TOTAL,
            Some((names::LABEL_PARTITION, p)),
        )
    };
    assert!(matches!(
        rejected("best_effort"),
        Some(DebugValue::Counter(2))
    ));
    assert!(matches!(rejected("critical"), Some(DebugValue::Counter(1))));
    match find(&all, names::SHED_LIMIT, Some((names::LABEL_NAME, "api"))) {
        Some(DebugValue::Gauge(v)) => assert_eq!(v.into_inner(), 2.0),
        other => panic!("limit gauge: {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn queue_time_and_limit_changes_are_recorded() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let layer = metrics::with_local_recorder(&recorder, || {
        let aimd = Aimd::builder()
            .initial_limit(1)
            .latency_threshold(Duration::from_secs(1))
            .build()
            .unwrap();
        ShedLayer::builder(aimd)
            .name("q")
            .sample_every(1)
            .queue(4)
            .build()
            .unwrap()
    });
    let handle = layer.handle();
    let (mut svc, mut mock) = tower_test::mock::spawn_layer::<u32, u32, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut first = tokio_test::task::spawn(svc.call(1));
    assert_ready_ok!(svc.poll_ready());
    let mut second = tokio_test::task::spawn(svc.call(2));
    assert_pending!(second.poll());
    tokio::time::advance(Duration::from_millis(3)).await;
    let (_, respond) = mock.next_request().await.unwrap();
    respond.send_response(1);
    assert_ready_ok!(first.poll());
    // The completion grew the limit (in use, fast) and handed its permit to the waiter.
    assert_eq!(handle.limit(), 2);
    let all = take(&snap);
    match find(&all, names::SHED_LIMIT, None) {
        Some(DebugValue::Gauge(v)) => assert_eq!(v.into_inner(), 2.0),
        other => panic!("limit gauge: {other:?}"),
    }
    match find(&all, names::SHED_QUEUE_TIME_SECONDS, None) {
        Some(DebugValue::Histogram(v)) => {
            assert_eq!(v.len(), 1);
            assert!((v[0].into_inner() - 0.003).abs() < 1e-9);
        }
        other => panic!("queue time: {other:?}"),
    }
    assert_pending!(second.poll());
    let (_, respond) = mock.next_request().await.unwrap();
    respond.send_response(2);
    assert_eq!(assert_ready!(second.poll()).unwrap(), 2);
}
