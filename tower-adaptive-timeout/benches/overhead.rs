//! Per-call overhead of the adaptive timeout against tower's `Timeout` and no middleware, in
//! one run, on a ready service.
//!
//! ```text
//! cargo bench -p tower-adaptive-timeout --bench overhead -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Groups:
//! - `ready`: the inner future is ready on its first poll (the usual micro-benchmark). At this
//!   rate (tens of millions of calls per second) the adaptive timeout measures one attempt in
//!   2ⁿ; `adaptive_timeout_every_call` switches sampling off to show the cost of measuring;
//! - `pending_once`: the inner future is pending once, so every layer arms its timer (the
//!   deadline layer and both timeouts register a tokio timer and deregister it on drop);
//! - `two_threads`: two std threads, each with its own current-thread runtime and a clone of
//!   one service, `N` calls each; reported as time per call over both threads.

use criterion::{Criterion, criterion_group, criterion_main};
use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tower::timeout::Timeout;
use tower::{Layer, Service, service_fn};
use tower_adaptive_timeout::{AdaptiveTimeoutLayer, DeadlineLayer};

/// Ready on the second poll.
struct PendingOnce<T>(Option<T>, bool);

impl<T: Unpin> Future for PendingOnce<T> {
    type Output = Result<T, Infallible>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if !self.1 {
            self.1 = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(self.0.take().expect("polled after completion")))
    }
}

/// One `poll_ready` + `call` + poll to completion, with a no-op waker.
fn call<S>(svc: &mut S, req: u32) -> S::Response
where
    S: Service<u32>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(r) => r.unwrap(),
        Poll::Pending => unreachable!("ready service"),
    }
    let mut fut = pin!(svc.call(req));
    loop {
        if let Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
            return r.unwrap();
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Benches `inner` bare, under tower's `Timeout` and under the adaptive timeout (sampled, and
/// measuring every call), in one group.
fn compare<S>(c: &mut Criterion, group: &str, inner: S)
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
criterion_main!(benches);
