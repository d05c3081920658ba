//! Cost of the fault layer when it injects nothing, against the bare service.
//!
//! `cargo bench -p tower-fault-injection --bench disabled -- --warm-up-time 1 --measurement-time 3`

use criterion::{Criterion, criterion_group, criterion_main};
use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tower_fault_injection::{FaultLayer, FaultSpec, Schedule};
use tower_layer::Layer;
use tower_service::Service;

/// A service that is always ready and answers at once.
#[derive(Clone, Copy)]
struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = std::convert::Infallible;
    type Future = Ready<Result<u64, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

fn drive<S>(svc: &mut S, n: u64)
where
    S: Service<u64>,
    S::Future: std::future::Future,
{
    let mut cx = Context::from_waker(Waker::noop());
    let _ = svc.poll_ready(&mut cx);
    let fut = svc.call(black_box(n));
    let mut fut = std::pin::pin!(fut);
    black_box(fut.as_mut().poll(&mut cx)).is_ready();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut g = c.benchmark_group("fault_layer_off");

    let mut bare = Echo;
    g.bench_function("baseline", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            drive(&mut bare, i)
        })
    });

    let mut disabled = FaultLayer::builder().build().unwrap().layer(Echo);
    g.bench_function("disabled", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            drive(&mut disabled, i)
        })
    });

    // A schedule whose interval is far in the future: the clock is read on every call.
    let s = Duration::from_secs;
    let schedule = Schedule::builder()
        .between(s(3600), s(7200), FaultSpec::outage())
        .build()
        .unwrap();
    let mut idle = FaultLayer::builder()
        .schedule(schedule)
        .build()
        .unwrap()
        .layer(Echo);
    g.bench_function("scheduled_idle", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            drive(&mut idle, i)
        })
    });

    // Forced on, with a probability that never fires: decision + draw on every call.
    let mut armed = FaultLayer::builder()
        .forced(FaultSpec::new().error_probability(1e-12))
        .build()
        .unwrap()
        .layer(Echo);
    g.bench_function("armed_no_fault", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            drive(&mut armed, i)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
