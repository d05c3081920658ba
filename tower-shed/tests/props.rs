//! Invariants under arbitrary sequences: the limit stays in bounds, admission never exceeds the
//! limit, and every permit comes back.

use damper_core::error::{BoxError, Elapsed, Overloaded};
use proptest::prelude::*;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, Service};
use tower_shed::limit::{Aimd, Gradient2, Limit, Sample, Vegas};
use tower_shed::{ShedHandle, ShedLayer};

fn algorithm(kind: u8, min: usize, max: usize, initial: usize) -> Box<dyn Limit> {
    match kind % 3 {
        0 => Box::new(
            Aimd::builder()
                .min_limit(min)
                .max_limit(max)
                .initial_limit(initial)
                .latency_threshold(Duration::from_millis(50))
                .build()
                .unwrap(),
        ),
        1 => Box::new(
            Gradient2::builder()
                .min_limit(min)
                .max_limit(max)
                .initial_limit(initial)
                .build()
                .unwrap(),
        ),
        _ => Box::new(
            Vegas::builder()
                .min_limit(min)
                .max_limit(max)
                .initial_limit(initial)
                .probe_multiplier(2.0)
                .build()
                .unwrap(),
        ),
    }
}

fn bounds() -> impl Strategy<Value = (usize, usize, usize)> {
    (1usize..50, 0usize..200).prop_flat_map(|(min, span)| {
        let max = min + span;
        (Just(min), Just(max), min..=max)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn limit_stays_within_min_and_max(
        kind in 0u8..3,
        (min, max, initial) in bounds(),
        samples in prop::collection::vec(
            (0u64..2_000_000, 0usize..500, any::<bool>(), 1u32..16, 0u64..50_000),
            1..300,
        ),
    ) {
        let mut limit = algorithm(kind, min, max, initial);
        let mut now = Instant::now();
        for (rtt_us, in_flight, dropped, weight, step_us) in samples {
            now += Duration::from_micros(step_us);
            let sample = Sample::new(Duration::from_micros(rtt_us), in_flight, dropped)
                .with_weight(weight);
            let l = limit.update(sample, now);
            prop_assert!((min..=max).contains(&l), "{l} not in [{min}, {max}]");
            prop_assert_eq!(l, limit.limit());
        }
    }
}

/// Answers at once: even requests succeed, odd ones time out (a drop for the limit).
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
        ready(if req.is_multiple_of(2) {
            Ok(req)
        } else {
            Err(Elapsed::new(Duration::from_millis(1)).into())
        })
    }
}

#[derive(Debug, Clone)]
enum Op {
    Call(u32),
    Complete(usize),
    Drop(usize),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            3 => any::<u32>().prop_map(Op::Call),
            2 => any::<usize>().prop_map(Op::Complete),
            1 => any::<usize>().prop_map(Op::Drop),
        ],
        1..200,
    )
}

type Fut = Pin<Box<dyn Future<Output = Result<u32, BoxError>>>>;

fn run_ops<S>(mut svc: S, handle: ShedHandle, ops: Vec<Op>) -> Result<(), TestCaseError>
where
    S: Service<u32, Response = u32, Error = BoxError>,
    S::Future: 'static,
{
    let mut cx = Context::from_waker(Waker::noop());
    let mut held: Vec<Fut> = Vec::new();
    for op in ops {
        match op {
            Op::Call(v) => {
                let limit = handle.limit();
                prop_assert!(svc.poll_ready(&mut cx).is_ready());
                let mut fut: Fut = Box::pin(svc.call(v));
                // A rejection completes at once; an admitted request stays in flight until
                // polled (the inner future is ready, so a first poll would finish it).
                if handle.in_flight() > held.len() {
                    held.push(fut);
                    prop_assert!(
                        held.len() <= limit,
                        "{} in flight, limit {limit}",
                        held.len()
                    );
                } else {
                    match fut.as_mut().poll(&mut cx) {
                        Poll::Ready(Err(e)) => prop_assert!(e.is::<Overloaded>()),
                        other => prop_assert!(false, "expected a rejection, got {other:?}"),
                    }
                }
            }
            Op::Complete(i) if !held.is_empty() => {
                let mut fut = held.swap_remove(i % held.len());
                prop_assert!(fut.as_mut().poll(&mut cx).is_ready());
            }
            Op::Drop(i) if !held.is_empty() => {
                drop(held.swap_remove(i % held.len()));
            }
            _ => {}
        }
        prop_assert_eq!(handle.in_flight(), held.len());
    }
    drop(held);
    prop_assert_eq!(handle.in_flight(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn never_more_than_the_limit_in_flight_and_permits_return(
        kind in 0u8..3,
        (min, max, initial) in bounds(),
        every in prop::sample::select(vec![1u32, 2, 8]),
        ops in ops(),
    ) {
        let layer = ShedLayer::builder(algorithm(kind, min, max, initial))
            .sample_every(every)
            .build()
            .unwrap();
        let handle = layer.handle();
        run_ops(layer.layer(Echo), handle, ops)?;
    }

    #[test]
    fn partitions_never_exceed_the_limit_either(
        (min, max, initial) in bounds(),
        ops in ops(),
    ) {
        let layer = ShedLayer::builder(algorithm(0, min, max, initial))
            .partition("critical", 0.7)
            .partition("best_effort", 0.3)
            .partition_with(|r: &u32| if r.is_multiple_of(3) { "critical" } else { "best_effort" })
            .build()
            .unwrap();
        let handle = layer.handle();
        let parts = handle.clone();
        run_ops(layer.layer(Echo), handle, ops)?;
        prop_assert_eq!(parts.partition_in_flight("critical"), Some(0));
        prop_assert_eq!(parts.partition_in_flight("best_effort"), Some(0));
    }
}
