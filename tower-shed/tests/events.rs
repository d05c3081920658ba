//! A `debug` event is emitted when the limit changes, and only then.

// Test-only collector of events; a plain mutex is fine here.
#![allow(clippy::disallowed_types)]

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::{Layer, Service};
use tower_shed::ShedLayer;
use tower_shed::limit::Aimd;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

#[derive(Default, Clone)]
struct Events(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl Subscriber for Events {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(format!("{} ", event.metadata().level()));
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn limit_changes_emit_one_debug_event_each() {
    let events = Events::default();
    let seen = events.clone();
    tracing::subscriber::with_default(events, || {
        let aimd = Aimd::builder()
            .initial_limit(1)
            .latency_threshold(Duration::from_secs(1))
            .build()
            .unwrap();
        let layer = ShedLayer::builder(aimd)
            .name("ev")
            .sample_every(1)
            .build()
            .unwrap();
        let handle = layer.handle();
        let mut svc = layer.layer(tower::service_fn(|r: u32| async move {
            Ok::<_, std::convert::Infallible>(r)
        }));
        let mut limits = vec![handle.limit()];
        // Rounds that use the whole limit, so it keeps growing.
        for _ in 0..6 {
            let mut futs: Vec<_> = (0..handle.limit() as u32)
                .map(|r| {
                    let mut task = tokio_test::task::spawn(());
                    task.enter(|cx, _| assert!(svc.poll_ready(cx).is_ready()));
                    tokio_test::task::spawn(svc.call(r))
                })
                .collect();
            for fut in &mut futs {
                assert!(fut.poll().is_ready());
                limits.push(handle.limit());
            }
        }
        let changes = limits.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(changes >= 2, "{limits:?}");
        let events = seen.0.lock().unwrap();
        let limit_events: Vec<_> = events
            .iter()
            .filter(|e| e.contains("concurrency limit changed"))
            .collect();
        assert_eq!(limit_events.len(), changes, "{events:?}");
        assert!(
            limit_events
                .iter()
                .all(|e| e.starts_with("DEBUG") && e.contains("name=ev"))
        );
    });
}
