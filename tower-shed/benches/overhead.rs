//! Overhead of the limiter below its limit, against tower's ConcurrencyLimit and
//! GlobalConcurrencyLimit, tower-acc and tower-resilience's adaptive limiter, and a bare service,
//! in the same run.
//!
//! `cargo bench -p tower-shed --bench overhead -- --warm-up-time 1 --measurement-time 3`
//!
//! - `one_task/*`: one task calls `poll_ready` + `call` + awaits the response, N times;
//!   reported time is per call.
//! - `one_thread/*` and `two_threads/*`: the same loop on 1 or 2 std threads (each with its
//!   own current-thread runtime) sharing one limiter through clones; reported time is per call
//!   of the whole run, so two-thread scaling = `one_thread / two_threads` (2.0 is perfect).

// A benchmark measures wall time; the paused-clock rule is for library code.
#![allow(clippy::disallowed_types)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::future::poll_fn;
use std::hint::black_box;
use tower::{Layer, Service};
use tower_shed::ShedLayer;
use tower_shed::limit::{Fixed, Gradient2, Vegas};

mod common;
use common::{Ok1, Work};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

async fn run<S>(svc: &mut S, n: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    for i in 0..n {
        poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
        // Far below the limit every call is admitted, but the sharded pool may, rarely, turn
        // one away while another thread has slots in transit (see the `shards` module docs);
        // more likely while a probe pins an adaptive limit to half (with two threads and
        // one request in flight each, about once in 10^5–10^6 calls at a limit of 10). That
        // answer is part of the cost, not a failure of the bench.
        black_box(svc.call(black_box(i)).await.is_ok());
    }
}

fn threads<S>(svc: &S, n: usize, iters: u64) -> std::time::Duration
where
    S: Service<u64, Response = u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
{
    let per = iters.div_ceil(n as u64);
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..n {
            let mut svc = svc.clone();
            s.spawn(move || rt().block_on(run(&mut svc, per)));
        }
    });
    start.elapsed()
}

fn bench<S, F>(c: &mut Criterion, name: &str, make: F)
where
    F: Fn() -> S,
    S: Service<u64, Response = u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
{
    let runtime = rt();
    let mut svc = runtime.block_on(async { make() });
    c.bench_function(&format!("one_task/{name}"), |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = std::time::Instant::now();
                run(&mut svc, iters).await;
                start.elapsed()
            })
        })
    });
    let shared = runtime.block_on(async { make() });
    c.bench_function(&format!("one_thread/{name}"), |b| {
        b.iter_custom(|iters| threads(&shared, 1, iters))
    });
    c.bench_function(&format!("two_threads/{name}"), |b| {
        b.iter_custom(|iters| threads(&shared, 2, iters))
    });
}

fn cases(c: &mut Criterion) {
    bench(c, "baseline", || Ok1);
    bench(c, "control_unshared_work", || Work);
    bench(c, "tower_concurrency_limit", || {
        tower::limit::ConcurrencyLimitLayer::new(1024).layer(Ok1)
    });
    bench(c, "tower_global_concurrency_limit", || {
        tower::limit::GlobalConcurrencyLimitLayer::new(1024).layer(Ok1)
    });
    bench(c, "tower_acc_gradient2", || {
        tower_acc::ConcurrencyLimit::new(Ok1, tower_acc::Gradient2::default())
    });
    bench(c, "tower_resilience_aimd", || {
        let aimd = tower_resilience::adaptive::Aimd::builder()
            .build()
            .expect("aimd");
        tower_resilience::adaptive::AdaptiveLimiterLayer::new(aimd).layer(Ok1)
    });
    // Default settings: one request in 16 measured, at most 2,000 a second.
    bench(c, "shed_fixed", || {
        ShedLayer::new(Fixed::new(1024).unwrap()).layer(Ok1)
    });
    bench(c, "shed_gradient2", || {
        ShedLayer::new(Gradient2::default()).layer(Ok1)
    });
    bench(c, "shed_vegas", || {
        ShedLayer::new(Vegas::default()).layer(Ok1)
    });
    // Every request measured, as tower-acc and tower-resilience do (no rate cap).
    bench(c, "shed_vegas_sample1", || {
        ShedLayer::builder(Vegas::default())
            .sample_every(1)
            .max_samples_per_sec(u32::MAX)
            .build()
            .unwrap()
            .layer(Ok1)
    });
}

criterion_group!(benches, cases);
criterion_main!(benches);
