//! Closed-state overhead of the breaker per call on a ready service, against peers, in one run.
//!
//! `one_task/*`: ns per call, one task on a current-thread runtime.
//! `threads/*/1` and `threads/*/2`: the same loop on 1 or 2 std threads (each its own
//! current-thread runtime, sharing one breaker); criterion's time is per loop iteration, i.e.
//! per call on each thread, so two-thread scaling = 2 × t(1) / t(2). On a machine busy
//! with other work, wall-clock scaling says more about the scheduler than about the code, so
//! the run ends with `cpu/*` lines (Linux): the CPU time the busiest thread spent per call,
//! alone and with a second thread sharing the breaker. Equal figures mean sharing costs
//! nothing, i.e. two free cores would give 2× the throughput.
//!
//! Run: `cargo bench -p tower-breaker --bench overhead -- --warm-up-time 1 --measurement-time 3`
// Benchmarks measure wall-clock time with std's Instant (criterion's `iter_custom`).
#![allow(clippy::disallowed_types, missing_docs)]

use criterion::{BenchmarkId, Criterion, criterion_group};
use std::convert::Infallible;
use std::future::{Ready, poll_fn, ready};
use std::hint::black_box;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::{Layer, Service};
use tower_breaker::{BreakerConfig, BreakerLayer};

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

/// Same as `Echo` with a `String` error (tower-resilience needs `Send` errors; failsafe and
/// recloser need an error type).
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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

/// One way of making `n` calls; cloned into each thread.
trait Driver: Clone + Send + 'static {
    fn run(&mut self, n: u64) -> impl std::future::Future<Output = ()>;
}

/// Any tower service: ready, call, await.
#[derive(Clone)]
struct Svc<S>(S);

impl<S> Driver for Svc<S>
where
    S: Service<u64, Response = u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    async fn run(&mut self, n: u64) {
        for i in 0..n {
            poll_fn(|cx| self.0.poll_ready(cx)).await.unwrap();
            black_box(self.0.call(i).await.unwrap());
        }
    }
}

type KeyFn = fn(&u64) -> u8;

#[derive(Clone)]
struct Failsafe(
    failsafe::StateMachine<
        failsafe::failure_policy::OrElse<
            failsafe::failure_policy::SuccessRateOverTimeWindow<failsafe::backoff::EqualJittered>,
            failsafe::failure_policy::ConsecutiveFailures<failsafe::backoff::EqualJittered>,
        >,
        (),
    >,
    EchoE,
);
impl Driver for Failsafe {
    async fn run(&mut self, n: u64) {
        use failsafe::futures::CircuitBreaker;
        for i in 0..n {
            poll_fn(|cx| self.1.poll_ready(cx)).await.unwrap();
            black_box(self.0.call(self.1.call(i)).await.unwrap());
        }
    }
}

#[derive(Clone)]
struct Recloser(recloser::AsyncRecloser, EchoE);
impl Driver for Recloser {
    async fn run(&mut self, n: u64) {
        for i in 0..n {
            poll_fn(|cx| self.1.poll_ready(cx)).await.unwrap();
            black_box(self.0.call(self.1.call(i)).await.unwrap());
        }
    }
}

type Resilience = Svc<
    tower_resilience::circuitbreaker::CircuitBreaker<
        EchoE,
        tower_resilience::circuitbreaker::DefaultClassifier,
    >,
>;

fn drivers() -> (
    Svc<Echo>,
    Svc<tower_breaker::Breaker<Echo>>,
    Failsafe,
    Recloser,
    Resilience,
) {
    let damper = BreakerLayer::new(BreakerConfig::default()).layer(Echo);
    let failsafe = failsafe::Config::new().build();
    let recloser = recloser::AsyncRecloser::from(recloser::Recloser::default());
    let resilience = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .build()
        .unwrap()
        .layer_fn(EchoE);
    (
        Svc(Echo),
        Svc(damper),
        Failsafe(failsafe, EchoE),
        Recloser(recloser, EchoE),
        Svc(resilience),
    )
}

fn one_task<D: Driver>(c: &mut Criterion, name: &str, driver: D) {
    let rt = runtime();
    c.bench_function(&format!("one_task/{name}"), |b| {
        let mut d = driver.clone();
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                d.run(iters).await;
                start.elapsed()
            })
        })
    });
}

fn threads<D: Driver>(c: &mut Criterion, name: &str, driver: D) {
    let mut g = c.benchmark_group(format!("threads/{name}"));
    for threads in [1usize, 2] {
        g.bench_with_input(
            BenchmarkId::from_parameter(threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads + 1));
                    let handles: Vec<_> = (0..threads)
                        .map(|_| {
                            let mut d = driver.clone();
                            let barrier = barrier.clone();
                            std::thread::spawn(move || {
                                let rt = runtime();
                                barrier.wait();
                                rt.block_on(d.run(iters));
                            })
                        })
                        .collect();
                    barrier.wait();
                    let start = Instant::now();
                    for h in handles {
                        h.join().unwrap();
                    }
                    start.elapsed()
                })
            },
        );
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    let (base, damper, failsafe, recloser, resilience) = drivers();
    let gate = BreakerLayer::new(
        BreakerConfig::builder()
            .mode(tower_breaker::Mode::Gate)
            .build()
            .unwrap(),
    )
    .layer(Echo);
    let key: KeyFn = |req| (*req % 4) as u8;
    let keyed = tower_breaker::KeyedBreakerLayer::new(BreakerConfig::default(), key).layer(Echo);
    one_task(c, "baseline", base.clone());
    one_task(c, "damper", damper.clone());
    one_task(c, "damper_gate", Svc(gate));
    one_task(c, "damper_keyed", Svc(keyed));
    one_task(c, "failsafe", failsafe.clone());
    one_task(c, "recloser", recloser.clone());
    one_task(c, "tower_resilience", resilience.clone());
    threads(c, "baseline", base);
    threads(c, "damper", damper);
    threads(c, "failsafe", failsafe);
    threads(c, "recloser", recloser);
    threads(c, "tower_resilience", resilience);
}

/// CPU time this thread has run, from `/proc/thread-self/schedstat` (Linux), if available.
/// Its resolution is the scheduler tick, so runs are long (tens of millions of calls).
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(
        s.split_whitespace().next()?.parse().ok()?,
    ))
}

/// The busiest thread's CPU time per call, with `threads` threads sharing the breaker.
fn cpu_per_call<D: Driver>(driver: &D, threads: usize, calls: u64) -> Option<f64> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let mut d = driver.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let rt = runtime();
                barrier.wait();
                let before = thread_cpu()?;
                rt.block_on(d.run(calls));
                Some(thread_cpu()? - before)
            })
        })
        .collect();
    let mut busiest = Duration::ZERO;
    for h in handles {
        busiest = busiest.max(h.join().unwrap()?);
    }
    Some(busiest.as_nanos() as f64 / calls as f64)
}

fn cpu_scaling() {
    fn report<D: Driver>(name: &str, driver: D, calls: u64) {
        let one = cpu_per_call(&driver, 1, calls);
        let two = cpu_per_call(&driver, 2, calls);
        if let (Some(one), Some(two)) = (one, two) {
            println!(
                "cpu/{name}: {one:.1} ns CPU per call alone, {two:.1} with two threads \
                 (two-core scaling {:.2}x)",
                2.0 * one / two
            );
        }
    }
    let (_, damper, failsafe, recloser, resilience) = drivers();
    report("damper", damper, 20_000_000);
    report("failsafe", failsafe, 5_000_000);
    report("recloser", recloser, 10_000_000);
    report("tower_resilience", resilience, 1_000_000);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = bench
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    cpu_scaling();
}
