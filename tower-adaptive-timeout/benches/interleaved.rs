//! The adaptive timeout's cost relative to tower's `Timeout`, measured interleaved.
//!
//! ```text
//! cargo bench -p tower-adaptive-timeout --bench interleaved
//! ```
//!
//! Criterion (`--bench overhead`) measures one function for seconds, then the next, so on a
//! shared machine a slow spell lands on one side of a comparison only, and run-to-run the ratio
//! of two ~110 ns figures moves by ±5%. Here the two services take turns: each round times
//! `CALLS` calls of one and then of the other (alternating which goes first), and the figure is
//! the median over the rounds of the per-round ratio, with its quartiles. Drift that is slow
//! compared with a round (a few milliseconds) cancels out.
//!
//! Services as in `overhead`: tower's `Timeout` at 1 s and `AdaptiveTimeoutLayer::new()`
//! (defaults), over an inner service whose future is ready on its first poll (`ready`) or
//! pending once (`pending_once`, so both arm a tokio timer).

mod common;

use common::{PendingOnce, call};
use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;
use tower::timeout::Timeout;
use tower::{Layer, Service, service_fn};
use tower_adaptive_timeout::AdaptiveTimeoutLayer;

const CALLS: u32 = 20_000;
const WARM_UP: usize = 20;
const ROUNDS: usize = 400;

/// Nanoseconds per call over `CALLS` calls.
#[allow(clippy::disallowed_types)] // a bench measures wall time with std's clock
fn time<S>(svc: &mut S) -> f64
where
    S: Service<u32, Response = u32>,
    S::Error: std::fmt::Debug,
{
    let start = std::time::Instant::now();
    for i in 0..CALLS {
        black_box(call(svc, black_box(i)));
    }
    start.elapsed().as_nanos() as f64 / f64::from(CALLS)
}

fn quartiles(mut v: Vec<f64>) -> [f64; 3] {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    [at(0.25), at(0.5), at(0.75)]
}

fn compare<S>(name: &str, inner: S)
where
    S: Service<u32, Response = u32, Error = Infallible> + Clone,
{
    let mut tower = Timeout::new(inner.clone(), Duration::from_secs(1));
    let mut adaptive = AdaptiveTimeoutLayer::new().layer(inner);
    let (mut t, mut a, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..WARM_UP + ROUNDS {
        let (tt, aa) = if round % 2 == 0 {
            let tt = time(&mut tower);
            (tt, time(&mut adaptive))
        } else {
            let aa = time(&mut adaptive);
            (time(&mut tower), aa)
        };
        if round >= WARM_UP {
            t.push(tt);
            a.push(aa);
            ratio.push(aa / tt);
        }
    }
    let [_, tm, _] = quartiles(t);
    let [_, am, _] = quartiles(a);
    let [r25, r50, r75] = quartiles(ratio);
    println!(
        "{name:13} tower_timeout {tm:6.1} ns  adaptive_timeout {am:6.1} ns  \
         ratio median {r50:.3} (quartiles {r25:.3}, {r75:.3}) over {ROUNDS} rounds"
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    compare(
        "ready",
        service_fn(|x: u32| std::future::ready(Ok::<_, Infallible>(x))),
    );
    compare(
        "pending_once",
        service_fn(|x: u32| PendingOnce(Some(x), false)),
    );
}
