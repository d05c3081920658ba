//! Overhead of the retry layer on the success path, and of the budget's withdrawal, against
//! tower's `Retry` + `TpsBudget` and tower-resilience's retry, in the same run.
//!
//! `cargo bench -p tower-retry-budget --bench overhead -- --warm-up-time 1 --measurement-time 3`
//!
//! Every service is polled directly with a no-op waker (the trivial inner service is always
//! ready and answers at once), so the figures are the middleware's own cost. "2 threads" runs
//! the same number of calls on each of two OS threads sharing one budget and reports wall time
//! per call *per thread*: the throughput scaling is `2 × t(1 thread) / t(2 threads)`. The
//! "parallelism check" case does a withdrawal's worth of work touching nothing shared: its two
//! figures match only if the two threads really ran side by side, so check it before reading
//! the scaling of the others on a shared machine.

#![allow(missing_docs)]
// Benchmarks measure wall-clock time with criterion's own std Instant; this is not library code.
#![allow(clippy::disallowed_types)]

use criterion::{Criterion, criterion_group, criterion_main};
use damper_core::{BoxError, Budget};
use futures_util::FutureExt;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::retry::budget::{Budget as TowerBudget, TpsBudget};
use tower::{Layer, Service};
use tower_retry_budget::{CloneAll, RetryBudget, RetryLayer};

/// The trivial, always-ready inner service.
#[derive(Clone, Copy)]
struct Echo;

impl Service<u32> for Echo {
    type Response = u32;
    type Error = BoxError;
    type Future = Ready<Result<u32, BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: u32) -> Self::Future {
        ready(Ok(req))
    }
}

/// tower's Retry driven by a TpsBudget, the way tower documents it: successes deposit,
/// retries withdraw.
#[derive(Clone)]
struct TpsPolicy {
    budget: Arc<TpsBudget>,
    attempts: u32,
}

impl tower::retry::Policy<u32, u32, BoxError> for TpsPolicy {
    type Future = Ready<()>;
    fn retry(&mut self, _: &mut u32, result: &mut Result<u32, BoxError>) -> Option<Ready<()>> {
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(_) if self.attempts < 3 && self.budget.withdraw() => {
                self.attempts += 1;
                Some(ready(()))
            }
            Err(_) => None,
        }
    }
    fn clone_request(&mut self, req: &u32) -> Option<u32> {
        Some(*req)
    }
}

fn call_once<S: Service<u32, Response = u32>>(svc: &mut S, cx: &mut Context<'_>, i: u32) -> u32
where
    S::Error: std::fmt::Debug,
{
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("not ready"),
    }
    svc.call(i).now_or_never().expect("ready").expect("ok")
}

fn run<S: Service<u32, Response = u32>>(svc: &mut S, iters: u64) -> Duration
where
    S::Error: std::fmt::Debug,
{
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let start = std::time::Instant::now();
    for i in 0..iters {
        black_box(call_once(svc, &mut cx, black_box(i as u32)));
    }
    start.elapsed()
}

/// Runs `iters` calls on each of two threads (each with its own clone of the service) and
/// returns the wall time.
fn run2<S>(svc: &S, iters: u64) -> Duration
where
    S: Service<u32, Response = u32> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    let barrier = Arc::new(std::sync::Barrier::new(3));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let mut svc = svc.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                run(&mut svc, iters)
            })
        })
        .collect();
    barrier.wait();
    let start = std::time::Instant::now();
    for h in handles {
        h.join().unwrap();
    }
    start.elapsed()
}

fn damper_retry() -> impl Service<u32, Response = u32, Error = BoxError> + Clone + Send + 'static {
    let budget = RetryBudget::builder().build().unwrap();
    RetryLayer::builder(budget)
        .replay(CloneAll::new())
        .seed(1)
        .build()
        .unwrap()
        .layer(Echo)
}

fn tower_retry() -> impl Service<u32, Response = u32, Error = BoxError> + Clone + Send + 'static {
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2));
    tower::retry::RetryLayer::new(TpsPolicy {
        budget,
        attempts: 0,
    })
    .layer(Echo)
}

fn resilience_retry() -> impl Service<u32, Response = u32, Error = BoxError> + Clone + Send + 'static
{
    let budget = tower_resilience::retry::RetryBudgetBuilder::new()
        .token_bucket()
        .tokens_per_second(10.0)
        .max_tokens(10)
        .build()
        .unwrap();
    tower_resilience::retry::RetryLayer::<u32, u32, BoxError>::builder()
        .max_attempts(3)
        .budget(budget)
        .build()
        .layer(Echo)
}

fn success_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("success_path");
    g.bench_function("baseline/1 thread", |b| {
        b.iter_custom(|n| run(&mut Echo, n))
    });
    g.bench_function("damper Retry/1 thread", |b| {
        let mut svc = damper_retry();
        b.iter_custom(|n| run(&mut svc, n))
    });
    g.bench_function("tower Retry+TpsBudget/1 thread", |b| {
        let mut svc = tower_retry();
        b.iter_custom(|n| run(&mut svc, n))
    });
    g.bench_function("tower-resilience Retry/1 thread", |b| {
        let mut svc = resilience_retry();
        b.iter_custom(|n| run(&mut svc, n))
    });
    g.bench_function("baseline/2 threads", |b| b.iter_custom(|n| run2(&Echo, n)));
    g.bench_function("damper Retry/2 threads", |b| {
        let svc = damper_retry();
        b.iter_custom(|n| run2(&svc, n))
    });
    g.bench_function("tower Retry+TpsBudget/2 threads", |b| {
        let svc = tower_retry();
        b.iter_custom(|n| run2(&svc, n))
    });
    g.bench_function("tower-resilience Retry/2 threads", |b| {
        let svc = resilience_retry();
        b.iter_custom(|n| run2(&svc, n))
    });
    g.finish();
}

/// A damper budget holding `n` tokens (no floor), and a TpsBudget funded for `n` withdrawals.
fn funded(n: u64) -> (Arc<RetryBudget>, Arc<TpsBudget>) {
    let n = n.clamp(1, 1_000_000_000) as f64;
    let ours = RetryBudget::builder()
        .max_tokens(n)
        .initial(n)
        .min_per_sec(0.0)
        .build()
        .unwrap();
    let tps = Arc::new(TpsBudget::new(Duration::from_secs(60), 0, 1000.0));
    for _ in 0..(n as u64 / 1000 + 1) {
        tps.deposit();
    }
    (ours, tps)
}

fn withdraw_on<F: Fn() -> bool + Sync>(threads: usize, iters: u64, f: &F) -> Duration {
    let barrier = std::sync::Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    for _ in 0..iters {
                        black_box(f());
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = std::time::Instant::now();
        for h in handles {
            h.join().unwrap();
        }
        start.elapsed()
    })
}

/// About as much work as a withdrawal, touching no shared state: on an idle 2-core machine its
/// "2 threads" figure equals its "1 thread" one. When it does not, the two threads did not run
/// side by side (other load on the machine) and the run's scaling figures mean little.
fn local_work() -> bool {
    let mut x = black_box(0x9E37_79B9_7F4A_7C15u64);
    for _ in 0..8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    black_box(x) != 0
}

fn withdraw(c: &mut Criterion) {
    let mut g = c.benchmark_group("withdraw");
    let now = tokio::time::Instant::now();
    for threads in [1usize, 2] {
        let label = if threads == 1 {
            "1 thread"
        } else {
            "2 threads"
        };
        g.bench_function(format!("parallelism check (local work)/{label}"), |b| {
            b.iter_custom(|n| withdraw_on(threads, n, &local_work))
        });
        g.bench_function(format!("damper try_withdraw (funded)/{label}"), |b| {
            b.iter_custom(|n| {
                let (ours, _) = funded(n * threads as u64);
                withdraw_on(threads, n, &|| ours.try_withdraw(now))
            })
        });
        g.bench_function(format!("tower TpsBudget withdraw (funded)/{label}"), |b| {
            b.iter_custom(|n| {
                let (_, tps) = funded(n * threads as u64);
                withdraw_on(threads, n, &|| tps.withdraw())
            })
        });
        g.bench_function(format!("damper try_withdraw (empty, floor)/{label}"), |b| {
            let ours = RetryBudget::builder().build().unwrap();
            b.iter_custom(|n| withdraw_on(threads, n, &|| ours.try_withdraw(now)))
        });
        g.bench_function(format!("damper deposit (at cap)/{label}"), |b| {
            let ours = RetryBudget::builder().initial(10.0).build().unwrap();
            b.iter_custom(|n| {
                withdraw_on(threads, n, &|| {
                    ours.deposit(now);
                    true
                })
            })
        });
        g.bench_function(format!("tower TpsBudget deposit/{label}"), |b| {
            let tps = TpsBudget::new(Duration::from_secs(10), 10, 0.2);
            b.iter_custom(|n| {
                withdraw_on(threads, n, &|| {
                    tps.deposit();
                    true
                })
            })
        });
    }
    g.finish();
}

/// The clock read on the success path (to date the deposit). The bench build enables tokio's
/// `test-util` (a dev-dependency of the tests), which makes `tokio::time::Instant::now()` look
/// for a paused clock first; production builds read `std::time::Instant::now()` directly, as
/// tower's TpsBudget does.
fn clock(c: &mut Criterion) {
    let mut g = c.benchmark_group("clock");
    g.bench_function("tokio Instant::now (test-util)", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    g.bench_function("std Instant::now", |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
    g.finish();
}

criterion_group!(benches, success_path, withdraw, clock);
criterion_main!(benches);
