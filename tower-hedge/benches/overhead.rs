//! Per-call overhead of the hedge layer on a ready service (the fast path: the request is
//! armed for a hedge — cloned, timer scheduled lazily — but the first attempt answers at once),
//! against tower's `Hedge` and no middleware, in the same run.
//!
//! `cargo bench -p tower-hedge --bench overhead -- --warm-up-time 1 --measurement-time 3`
//!
//! - `one_task/*`: N calls on one current-thread runtime; time per call. `damper_hedge_cold` is
//!   the layer before it has samples: requests are counted, never armed or cloned.
//! - `two_threads/*`: two std threads, each running N calls on its own current-thread runtime;
//!   one iteration = one call on each thread, so time per iteration is wall time per pair of
//!   calls. `damper_hedge`: both threads use clones of one layer (shared histogram, budget,
//!   counters), as a real client does. tower's `Hedge` is not `Clone`, so each thread builds
//!   its own (nothing shared); `damper_hedge_per_thread` does the same for comparison.
#![allow(missing_docs)]
// Measuring wall time is what a benchmark is for.
#![allow(clippy::disallowed_types)]

use criterion::{Criterion, criterion_group, criterion_main};
use damper_core::BoxError;
use damper_core::histogram::LatencyHistogram;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::{Layer, Service, ServiceExt};
use tower_hedge::HedgeLayer;

#[derive(Clone, Copy)]
struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = BoxError;
    type Future = Ready<Result<u64, BoxError>>;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

#[derive(Clone)]
struct ClonePolicy;

impl tower::hedge::Policy<u64> for ClonePolicy {
    fn clone_request(&self, req: &u64) -> Option<u64> {
        Some(*req)
    }
    fn can_retry(&self, _: &u64) -> bool {
        true
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// A damper hedge layer, warm (enough samples) so every request is armed.
fn damper_layer() -> HedgeLayer {
    let now = tokio::time::Instant::now();
    let hist = Arc::new(LatencyHistogram::new(now));
    for ms in 1..=200u64 {
        hist.record(Duration::from_millis(ms), now);
    }
    HedgeLayer::builder()
        .histogram(hist)
        .build()
        .expect("valid config")
}

fn tower_hedge() -> tower::hedge::Hedge<Echo, ClonePolicy> {
    let lat: Vec<u64> = (1..=200).collect();
    tower::hedge::Hedge::new_with_mock_latencies(
        Echo,
        ClonePolicy,
        10,
        0.95,
        Duration::from_secs(10),
        &lat,
    )
}

async fn run<S>(svc: &mut S, n: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    for i in 0..n {
        let r = svc.ready().await.unwrap().call(black_box(i)).await.unwrap();
        black_box(r);
    }
}

fn one_task(c: &mut Criterion) {
    let mut g = c.benchmark_group("one_task");
    let rt = runtime();
    g.bench_function("baseline", |b| {
        b.iter_custom(|n| {
            let mut svc = Echo;
            rt.block_on(async {
                let t = Instant::now();
                run(&mut svc, n).await;
                t.elapsed()
            })
        })
    });
    g.bench_function("damper_hedge", |b| {
        let layer = damper_layer();
        b.iter_custom(|n| {
            let mut svc = layer.layer(Echo);
            rt.block_on(async {
                let t = Instant::now();
                run(&mut svc, n).await;
                t.elapsed()
            })
        })
    });
    g.bench_function("damper_hedge_cold", |b| {
        // Not warmed up (and recording nothing): requests are counted but never armed.
        let layer = HedgeLayer::builder()
            .record_latencies(false)
            .build()
            .expect("valid config");
        b.iter_custom(|n| {
            let mut svc = layer.layer(Echo);
            rt.block_on(async {
                let t = Instant::now();
                run(&mut svc, n).await;
                t.elapsed()
            })
        })
    });
    g.bench_function("tower_hedge", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let mut svc = tower_hedge();
                let t = Instant::now();
                run(&mut svc, n).await;
                t.elapsed()
            })
        })
    });
    g.finish();
}

/// Runs `make()`'s service for `n` calls on each of two threads; returns the wall time.
fn two<S, F>(n: u64, make: F) -> Duration
where
    F: Fn() -> S + Sync,
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let barrier = std::sync::Barrier::new(3);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let rt = runtime();
                rt.block_on(async {
                    let mut svc = make();
                    barrier.wait();
                    run(&mut svc, n).await;
                });
            });
        }
        barrier.wait();
        let t = Instant::now();
        // The scope joins both threads before returning.
        t
    })
    .elapsed()
}

fn two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("two_threads");
    g.bench_function("baseline", |b| b.iter_custom(|n| two(n, || Echo)));
    g.bench_function("damper_hedge", |b| {
        let layer = damper_layer();
        b.iter_custom(|n| two(n, || layer.layer(Echo)))
    });
    g.bench_function("damper_hedge_per_thread", |b| {
        b.iter_custom(|n| two(n, || damper_layer().layer(Echo)))
    });
    g.bench_function("tower_hedge", |b| b.iter_custom(|n| two(n, tower_hedge)));
    g.finish();
}

criterion_group!(benches, one_task, two_threads);
criterion_main!(benches);
