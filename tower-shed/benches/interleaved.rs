//! Interleaved A/B timing of the same cases as `overhead`, for a shared, noisy machine: each
//! round times every case for a short burst, round after round, so load swings hit all cases
//! alike; reports the median over rounds of ns/call and of ratios to tower's
//! GlobalConcurrencyLimit measured in the same round.
//!
//! `cargo bench -p tower-shed --bench interleaved`

// A benchmark measures wall time; the paused-clock rule is for library code.
#![allow(clippy::disallowed_types)]

use std::hint::black_box;
use std::task::{Context, Poll, Waker};
use std::time::Instant;
use tower::{Layer, Service};
use tower_shed::ShedLayer;
use tower_shed::limit::{Fixed, Gradient2, Vegas};

mod common;
use common::{Ok1, Work};

/// `n` calls polled directly (no runtime): `poll_ready`, `call`, poll the response once.
fn calls<S>(svc: &mut S, n: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    for i in 0..n {
        assert!(svc.poll_ready(&mut cx).is_ready());
        let mut fut = std::pin::pin!(svc.call(black_box(i)));
        match fut.as_mut().poll(&mut cx) {
            // A rare spurious rejection of the sharded pool is an answer too (see `overhead`).
            Poll::Ready(r) => {
                black_box(r.is_ok());
            }
            Poll::Pending => panic!("ready service"),
        }
    }
}

use std::future::Future;

trait Case: Send {
    fn name(&self) -> &'static str;
    /// ns per call on one thread, and on each of two threads at once (per-call wall time of
    /// the pair).
    fn time(&self, n: u64) -> (f64, f64);
}

struct C<S>(&'static str, S);

impl<S> Case for C<S>
where
    S: Service<u64, Response = u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    fn name(&self) -> &'static str {
        self.0
    }

    fn time(&self, n: u64) -> (f64, f64) {
        let mut one = self.1.clone();
        let start = Instant::now();
        calls(&mut one, n);
        let t1 = start.elapsed().as_nanos() as f64 / n as f64;
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..2 {
                let mut svc = self.1.clone();
                s.spawn(move || calls(&mut svc, n / 2));
            }
        });
        let t2 = start.elapsed().as_nanos() as f64 / n as f64;
        (t1, t2)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let cases: Vec<Box<dyn Case>> = vec![
        Box::new(C("baseline", Ok1)),
        Box::new(C("control_unshared_work", Work)),
        Box::new(C(
            "tower_global_concurrency_limit",
            tower::limit::GlobalConcurrencyLimitLayer::new(1024).layer(Ok1),
        )),
        Box::new(C(
            "tower_concurrency_limit",
            tower::limit::ConcurrencyLimitLayer::new(1024).layer(Ok1),
        )),
        Box::new(C(
            "shed_fixed",
            ShedLayer::new(Fixed::new(1024).unwrap()).layer(Ok1),
        )),
        Box::new(C(
            "shed_gradient2",
            ShedLayer::new(Gradient2::default()).layer(Ok1),
        )),
        Box::new(C("shed_vegas", ShedLayer::new(Vegas::default()).layer(Ok1))),
    ];
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` run a quick smoke test.
    let bench = std::env::args().any(|a| a == "--bench");
    let (rounds, n) = if bench { (21, 1_000_000) } else { (1, 1_000) };
    let mut one = vec![Vec::new(); cases.len()];
    let mut two = vec![Vec::new(); cases.len()];
    let mut ratio = vec![Vec::new(); cases.len()];
    let mut scale = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        let times: Vec<_> = cases.iter().map(|c| c.time(n)).collect();
        for (i, &(t1, t2)) in times.iter().enumerate() {
            one[i].push(t1);
            two[i].push(t2);
            ratio[i].push(t1 / times[2].0);
            scale[i].push(t1 / t2);
        }
    }
    println!(
        "{:34} {:>9} {:>12} {:>14} {:>8}",
        "case", "ns/call", "vs global", "2-thread ns", "scaling"
    );
    for (i, c) in cases.iter().enumerate() {
        println!(
            "{:34} {:>9.1} {:>11.2}x {:>14.1} {:>7.2}x",
            c.name(),
            median(one[i].clone()),
            median(ratio[i].clone()),
            median(two[i].clone()),
            median(scale[i].clone()),
        );
    }
}
