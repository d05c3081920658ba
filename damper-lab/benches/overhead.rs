//! Overhead of each layer on a ready service that answers at once: one task, and two tasks on
//! two threads sharing one layer instance (clones), against the bare service, tower's built-ins
//! and tower-resilience, in the same run.
//!
//! `cargo bench -p damper-lab --bench overhead -- --warm-up-time 1 --measurement-time 3`
//!
//! To add a damper layer as it lands: add one `case(...)` line in `cases` (it only needs a
//! `Service<u64, Response = u64> + Clone + Send` built around `Echo`).

// A benchmark measures wall time; the paused-clock rule is for library code.
#![allow(clippy::disallowed_types)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::convert::Infallible;
use std::future::{Ready, poll_fn, ready};
use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::{Policy, RetryLayer};
use tower::{Layer, Service, ServiceBuilder};

/// A service that is always ready and answers at once.
#[derive(Clone, Copy)]
struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

/// `Echo` with an `io::Error` error type, for layers that need a real error type.
#[derive(Clone, Copy)]
struct EchoE;

impl Service<u64> for EchoE {
    type Response = u64;
    type Error = std::io::Error;
    type Future = Ready<Result<u64, std::io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

/// tower's retry with its `TpsBudget` (20%), as the lab's `tower` stack uses it.
#[derive(Clone)]
struct BudgetPolicy(Arc<TpsBudget>);

impl<E> Policy<u64, u64, E> for BudgetPolicy {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut u64, result: &mut Result<u64, E>) -> Option<Ready<()>> {
        match result {
            Ok(_) => {
                self.0.deposit();
                None
            }
            Err(_) => self.0.withdraw().then(|| ready(())),
        }
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

#[derive(Clone, Copy)]
struct HedgeAll;

impl tower::hedge::Policy<u64> for HedgeAll {
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
        .expect("runtime")
}

async fn drive<S>(svc: &mut S, n: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    for i in 0..n {
        poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
        black_box(svc.call(black_box(i)).await.unwrap());
    }
}

/// Benches one layer: one task, then two threads (each a current-thread runtime) sharing it.
fn case<S, F>(c: &mut Criterion, name: &str, make: F)
where
    F: Fn() -> S,
    S: Service<u64, Response = u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
{
    let rt = runtime();
    let mut svc = rt.block_on(async { make() });
    c.bench_function(&format!("one_task/{name}"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = std::time::Instant::now();
                drive(&mut svc, iters).await;
                start.elapsed()
            })
        })
    });
    let shared = rt.block_on(async { make() });
    c.bench_function(&format!("two_threads/{name}"), |b| {
        b.iter_custom(|iters| {
            // Each thread makes `iters` calls; report time per call of the pair, so a layer that
            // scales perfectly shows half its one-task time.
            let per = iters.div_ceil(2);
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    let mut svc = shared.clone();
                    s.spawn(move || runtime().block_on(drive(&mut svc, per)));
                }
            });
            start.elapsed()
        })
    });
}

fn cases(c: &mut Criterion) {
    case(c, "baseline", || Echo);
    case(c, "tower_fault_injection_disabled", || {
        tower_fault_injection::FaultLayer::builder()
            .build()
            .unwrap()
            .layer(Echo)
    });
    case(c, "tower_timeout", || {
        tower::timeout::TimeoutLayer::new(Duration::from_secs(1)).layer(Echo)
    });
    case(c, "tower_concurrency_limit", || {
        tower::limit::ConcurrencyLimitLayer::new(1024).layer(Echo)
    });
    case(c, "tower_retry_tps_budget", || {
        let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2));
        RetryLayer::new(BudgetPolicy(budget)).layer(Echo)
    });
    case(c, "tower_hedge", || {
        // tower's Hedge is not Clone: each thread gets its own, sharing nothing, which favours
        // it in the two-thread figure.
        HedgeClone::new()
    });
    case(c, "tower_resilience_breaker", || {
        tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
            .build()
            .unwrap()
            .layer_fn(EchoE)
    });
    case(c, "tower_stack_shed_limit_timeout", || {
        ServiceBuilder::new()
            .layer(tower::load_shed::LoadShedLayer::new())
            .layer(tower::limit::ConcurrencyLimitLayer::new(1024))
            .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(1)))
            .service(Echo)
    });
    // Damper layers, as they land (add one line per layer).
    case(c, "damper_adaptive_timeout", || {
        tower_adaptive_timeout::AdaptiveTimeoutLayer::builder()
            .build()
            .unwrap()
            .layer(Echo)
    });
    case(c, "damper_breaker", || {
        tower_breaker::BreakerLayer::new(tower_breaker::BreakerConfig::builder().build().unwrap())
            .layer(Echo)
    });
    case(c, "damper_hedge", || {
        tower_hedge::HedgeLayer::builder()
            .build()
            .unwrap()
            .layer(Echo)
    });
    case(c, "damper_shed_vegas", || {
        let vegas = tower_shed::limit::Vegas::builder()
            .initial_limit(1000)
            .max_limit(1000)
            .build()
            .unwrap();
        tower_shed::ShedLayer::builder(vegas)
            .build()
            .unwrap()
            .layer(Echo)
    });
    case(c, "damper_retry_budget", || {
        let budget = damper::retry_budget::RetryBudget::builder()
            .build()
            .unwrap();
        damper::retry_budget::RetryLayer::builder(budget)
            .replay(damper::retry_budget::CloneAll::default())
            .build()
            .unwrap()
            .layer(Echo)
    });
    // The whole client stack as the facade wires it (deadline off; retry, hedge, breaker and
    // adaptive timeout on).
    case(c, "damper_client_stack", || {
        damper::ClientStack::new().build().unwrap().layer(Echo)
    });
}

/// A cloneable wrapper that builds a fresh `tower::hedge::Hedge` per clone (it is not `Clone`).
struct HedgeClone(tower::hedge::Hedge<Echo, HedgeAll>);

impl HedgeClone {
    fn new() -> Self {
        Self(tower::hedge::Hedge::new::<u64>(
            Echo,
            HedgeAll,
            10,
            0.9,
            Duration::from_secs(10),
        ))
    }
}

impl Clone for HedgeClone {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl Service<u64> for HedgeClone {
    type Response = u64;
    type Error = damper_core::BoxError;
    type Future = <tower::hedge::Hedge<Echo, HedgeAll> as Service<u64>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: u64) -> Self::Future {
        self.0.call(req)
    }
}

criterion_group!(benches, cases);
criterion_main!(benches);
