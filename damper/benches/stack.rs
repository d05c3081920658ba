//! Overhead of the whole client stack on the success path, against peers, in one run.
//!
//! `one_task/*`: time per call, one task on a current-thread runtime.
//! `two_threads/*`: the same loop on two std threads at once (each with its own current-thread
//! runtime, all sharing one stack); the time is per call on each thread, so two-thread scaling
//! is `2 × one_task / two_threads`.
//!
//! `damper_all_layers_off` is the facade with every layer switched off: what is left is the
//! cost of moving the stack's response future (about 1.2 KB, the size of its largest branch)
//! through the six `Optional` levels. `raw_breaker_layer` is the breaker without the facade.
//!
//! Run: `cargo bench -p damper --bench stack -- --warm-up-time 1 --measurement-time 3`
// Benchmarks measure wall-clock time with std's Instant (criterion's `iter_custom`).
#![allow(clippy::disallowed_types, missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use damper::BoxError;
use std::future::{Ready, poll_fn, ready};
use std::hint::black_box;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::{Layer, Service};

/// Always ready, answers at once.
#[derive(Clone, Copy)]
struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = BoxError;
    type Future = Ready<Result<u64, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

/// The same with an io error, for tower-resilience.
#[derive(Clone, Copy)]
struct EchoIo;

impl Service<u64> for EchoIo {
    type Response = u64;
    type Error = std::io::Error;
    type Future = Ready<Result<u64, std::io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

async fn drive<S>(svc: &mut S, n: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    for i in 0..n {
        poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
        black_box(svc.call(i).await.unwrap());
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

/// Times `n` calls on one thread, or on each of two threads at once.
fn timed<S>(svc: &S, n: u64, threads: usize) -> Duration
where
    S: Service<u64, Response = u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    let start = std::sync::Barrier::new(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let mut svc = svc.clone();
                let start = &start;
                scope.spawn(move || {
                    let rt = runtime();
                    rt.block_on(drive(&mut svc, 100)); // warm
                    start.wait();
                    let t = Instant::now();
                    rt.block_on(drive(&mut svc, n));
                    t.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap()
    })
}

fn bench_one<S>(c: &mut Criterion, name: &str, make: impl Fn() -> S)
where
    S: Service<u64, Response = u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    // Layers with timers must be built inside a runtime.
    let rt = runtime();
    let svc = rt.block_on(async { make() });
    c.bench_function(&format!("one_task/{name}"), |b| {
        b.iter_custom(|n| timed(&svc, n, 1))
    });
    c.bench_function(&format!("two_threads/{name}"), |b| {
        b.iter_custom(|n| timed(&svc, n, 2))
    });
}

fn stacks(c: &mut Criterion) {
    bench_one(c, "baseline", || Echo);
    bench_one(c, "damper_client_stack", || {
        damper::ClientStack::new().build().unwrap().layer(Echo)
    });
    // Each layer alone, through the facade, to see where the stack's time goes.
    for only in ["retry", "hedge", "breaker", "timeout"] {
        bench_one(c, &format!("damper_only_{only}"), || {
            damper::ClientStack::new()
                .retries(only == "retry")
                .hedging(only == "hedge")
                .breaker(only == "breaker")
                .timeout(only == "timeout")
                .build()
                .unwrap()
                .layer(Echo)
        });
    }
    bench_one(c, "raw_breaker_layer", || {
        damper::breaker::BreakerLayer::new(damper::breaker::BreakerConfig::default()).layer(Echo)
    });
    bench_one(c, "damper_all_layers_off", || {
        damper::ClientStack::new()
            .retries(false)
            .hedging(false)
            .breaker(false)
            .timeout(false)
            .build()
            .unwrap()
            .layer(Echo)
    });
    bench_one(c, "damper_client_stack_with_deadline", || {
        damper::ClientStack::new()
            .deadline(Duration::from_secs(5))
            .build()
            .unwrap()
            .layer(Echo)
    });
    bench_one(c, "tower_resilience_breaker_alone", || {
        tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
            .build()
            .unwrap()
            .layer_fn(EchoIo)
    });
    bench_one(c, "tower_timeout_retry_tpsbudget", || {
        use std::sync::Arc;
        use tower::retry::budget::TpsBudget;
        let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2));
        tower::ServiceBuilder::new()
            .layer(tower::retry::RetryLayer::new(TowerPolicy(budget)))
            .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(1)))
            .service(Echo)
    });
}

/// tower's Retry with its TpsBudget: retry errors while the budget allows.
#[derive(Clone)]
struct TowerPolicy(std::sync::Arc<tower::retry::budget::TpsBudget>);

impl<E> tower::retry::Policy<u64, u64, E> for TowerPolicy {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut u64, result: &mut Result<u64, E>) -> Option<Self::Future> {
        use tower::retry::budget::Budget;
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

criterion_group!(benches, stacks);
criterion_main!(benches);
