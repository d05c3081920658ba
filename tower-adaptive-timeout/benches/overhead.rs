//! Per-call overhead of the adaptive timeout against tower's `Timeout` and no middleware, in
//! one run, on a ready service.
//!
//! ```text
//! cargo bench -p tower-adaptive-timeout --bench overhead -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! The machine these run on is shared, so wall time mixes in other processes' load: the
//! `cpu_*` groups repeat `ready` and `pending_once` measured in the bench thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`, read through rustix), which time spent descheduled does not inflate.
//!
//! For the ratio to tower's `Timeout` on this shared machine, `--bench interleaved` (the two
//! services taking turns, median of per-round ratios) is steadier than comparing two of these
//! figures.
//!
//! Groups:
//! - `ready`: the inner future is ready on its first poll (the usual micro-benchmark). At this
//!   rate (tens of millions of calls per second) the adaptive timeout measures one attempt in
//!   2ⁿ; `adaptive_timeout_every_call` switches sampling off to show the cost of measuring;
//! - `pending_once`: the inner future is pending once, so every layer arms its timer (the
//!   deadline layer and both timeouts register a tokio timer and deregister it on drop);
//! - `two_threads`: two std threads, each with its own current-thread runtime and a clone of
//!   one service, `N` calls each; reported as time per call over both threads.

mod common;

use common::{PendingOnce, call};
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;
use tower::timeout::Timeout;
use tower::{Layer, Service, service_fn};
use tower_adaptive_timeout::{AdaptiveTimeoutLayer, DeadlineLayer};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// The calling thread's CPU time, in nanoseconds.
struct ThreadCpuTime;

fn thread_cpu_nanos() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_nanos()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_nanos() - start
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuNanos
    }
}

struct CpuNanos;

impl ValueFormatter for CpuNanos {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = match typical {
            t if t < 1e3 => (1.0, "ns cpu"),
            t if t < 1e6 => (1e3, "µs cpu"),
            _ => (1e6, "ms cpu"),
        };
        values.iter_mut().for_each(|v| *v /= div);
        unit
    }
    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let n = match t {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => *n,
            _ => 1,
        } as f64;
        values.iter_mut().for_each(|v| *v = n * 1e9 / *v);
        "per cpu-s"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

/// Benches `inner` bare, under tower's `Timeout` and under the adaptive timeout (sampled, and
/// measuring every call), in one group.
fn compare<S, M: Measurement>(c: &mut Criterion<M>, group: &str, inner: S)
where
    S: Service<u32, Response = u32, Error = Infallible> + Clone,
{
    let rt = runtime();
    let _guard = rt.enter();
    let mut g = c.benchmark_group(group);
    let mut base = inner.clone();
    g.bench_function("baseline", |b| b.iter(|| call(&mut base, black_box(1))));
    let mut tower = Timeout::new(inner.clone(), Duration::from_secs(1));
    g.bench_function("tower_timeout", |b| {
        b.iter(|| call(&mut tower, black_box(1)))
    });
    let mut adaptive = AdaptiveTimeoutLayer::new().layer(inner.clone());
    g.bench_function("adaptive_timeout", |b| {
        b.iter(|| call(&mut adaptive, black_box(1)))
    });
    // Every attempt measured (no sampling): two clock reads, an `Arc` clone and a histogram
    // record per call.
    let mut every = AdaptiveTimeoutLayer::builder()
        .max_samples_per_sec(u32::MAX)
        .build()
        .unwrap()
        .layer(inner.clone());
    g.bench_function("adaptive_timeout_every_call", |b| {
        b.iter(|| call(&mut every, black_box(1)))
    });
    let mut deadline = DeadlineLayer::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .layer(inner);
    g.bench_function("deadline", |b| b.iter(|| call(&mut deadline, black_box(1))));
    g.finish();
}

fn ready(c: &mut Criterion) {
    compare(
        c,
        "ready",
        service_fn(|x: u32| std::future::ready(Ok::<_, Infallible>(x))),
    );
}

fn pending_once(c: &mut Criterion) {
    compare(
        c,
        "pending_once",
        service_fn(|x: u32| PendingOnce(Some(x), false)),
    );
}

fn cpu_ready(c: &mut Criterion<ThreadCpuTime>) {
    compare(
        c,
        "cpu_ready",
        service_fn(|x: u32| std::future::ready(Ok::<_, Infallible>(x))),
    );
}

fn cpu_pending_once(c: &mut Criterion<ThreadCpuTime>) {
    compare(
        c,
        "cpu_pending_once",
        service_fn(|x: u32| PendingOnce(Some(x), false)),
    );
}

fn two_threads(c: &mut Criterion) {
    /// Two threads run `iters` calls each; returns the wall time divided by two, so the
    /// figure is the inverse of the total throughput (half the one-thread time if it scaled).
    fn run<S>(svc: S, iters: u64) -> Duration
    where
        S: Service<u32, Response = u32> + Clone + Send + 'static,
        S::Error: std::fmt::Debug,
    {
        let barrier = std::sync::Barrier::new(3);
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let mut svc = svc.clone();
                    let barrier = &barrier;
                    s.spawn(move || {
                        let rt = runtime();
                        let _guard = rt.enter();
                        barrier.wait();
                        for _ in 0..iters {
                            black_box(call(&mut svc, black_box(1)));
                        }
                    })
                })
                .collect();
            barrier.wait();
            #[allow(clippy::disallowed_types)] // a bench measures wall time with std's clock
            let t0 = std::time::Instant::now();
            for w in workers {
                w.join().unwrap();
            }
            t0.elapsed() / 2
        })
    }

    let inner = service_fn(|x: u32| std::future::ready(Ok::<_, Infallible>(x)));
    let mut g = c.benchmark_group("two_threads");
    g.bench_function("baseline", |b| b.iter_custom(|n| run(inner, n)));
    let tower = Timeout::new(inner, Duration::from_secs(1));
    g.bench_function("tower_timeout", |b| {
        b.iter_custom(|n| run(tower.clone(), n))
    });
    let adaptive = AdaptiveTimeoutLayer::new().layer(inner);
    g.bench_function("adaptive_timeout", |b| {
        b.iter_custom(|n| run(adaptive.clone(), n))
    });
    g.finish();
}

criterion_group!(benches, ready, pending_once, two_threads);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = cpu_ready, cpu_pending_once
}
criterion_main!(benches, cpu);
