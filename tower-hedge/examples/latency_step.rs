//! A latency step, in virtual time: damper's budgeted hedge against tower's `Hedge`.
//!
//! One request per millisecond; the backend answers in 10 ms, then, from request 2000 on, in
//! 100 ms. Prints the hedge extra load (backend calls per request − 1) over the whole run and
//! over the 500 requests after the step.
//!
//! `cargo run --release -p tower-hedge --example latency_step`

use damper_core::BoxError;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time;
use tower::{Layer, Service, ServiceExt};
use tower_hedge::HedgeLayer;

const REQUESTS: u32 = 4000;
const STEP_AT: u32 = 2000;
const WINDOW: u32 = 500;

#[derive(Clone)]
struct AnyRequest;

impl tower::hedge::Policy<u32> for AnyRequest {
    fn clone_request(&self, req: &u32) -> Option<u32> {
        Some(*req)
    }
    fn can_retry(&self, _: &u32) -> bool {
        true
    }
}

/// The backend and its call counter.
fn backend() -> (
    impl Service<u32, Response = (), Error = BoxError, Future: Send> + Clone + Send + 'static,
    Arc<AtomicU64>,
) {
    let calls = Arc::new(AtomicU64::new(0));
    let counter = calls.clone();
    let svc = tower::service_fn(move |req: u32| {
        counter.fetch_add(1, Ordering::Relaxed);
        let latency = if req >= STEP_AT { 100 } else { 10 };
        async move {
            time::sleep(Duration::from_millis(latency)).await;
            Ok::<_, BoxError>(())
        }
    });
    (svc, calls)
}

/// Drives the load through `svc`; returns (calls at the step, calls a window later, calls at
/// the end).
async fn drive<S>(svc: S, calls: Arc<AtomicU64>) -> (u64, u64, u64)
where
    S: Service<u32, Response = ()> + Clone + Send + 'static,
    S::Error: std::fmt::Debug + Send,
    S::Future: Send,
{
    let mut tasks = Vec::new();
    let (mut at_step, mut after) = (0, 0);
    for i in 0..REQUESTS {
        if i == STEP_AT {
            at_step = calls.load(Ordering::Relaxed);
        }
        if i == STEP_AT + WINDOW {
            after = calls.load(Ordering::Relaxed);
        }
        let mut s = svc.clone();
        tasks.push(tokio::spawn(async move { s.ready().await?.call(i).await }));
        time::sleep(Duration::from_millis(1)).await;
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    (at_step, after, calls.load(Ordering::Relaxed))
}

fn report(name: &str, (at_step, after, end): (u64, u64, u64)) {
    // Requests sent during the window after the step: WINDOW, but the window's calls also
    // include the hedges of requests sent just before it; the bias is the same for both.
    let window = (after - at_step) as f64 / f64::from(WINDOW) - 1.0;
    let total = end as f64 / f64::from(REQUESTS) - 1.0;
    println!(
        "{name:<28} extra load: whole run {:>5.1}%, {WINDOW} requests after the step {:>5.1}%",
        total * 100.0,
        window * 100.0
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let (svc, calls) = backend();
        let layer = HedgeLayer::builder()
            .min_samples(50)
            .build()
            .expect("valid config");
        report(
            "damper (5% budget, p95)",
            drive(layer.layer(svc), calls).await,
        );

        let (svc, calls) = backend();
        let hedge = tower::hedge::Hedge::new(svc, AnyRequest, 50, 0.95, Duration::from_secs(1));
        let hedge = tower::buffer::Buffer::new(hedge, 1024);
        report("tower Hedge (p95, 1 s period)", drive(hedge, calls).await);
    });
}
