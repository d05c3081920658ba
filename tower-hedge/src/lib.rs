//! Hedged requests under a budget: when the first attempt is slower than usual, send a second
//! copy and take whichever answers well first.
//!
//! ```
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_hedge::HedgeLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let hedge = HedgeLayer::builder()
//!     .name("backend")
//!     .max_extra_load(0.02) // at most 2% more requests; delay = p98 latency
//!     .eligible_with(|req: &String| req.starts_with("GET "))
//!     .build()?;
//! let handle = hedge.handle();
//!
//! let mut svc = ServiceBuilder::new()
//!     .layer(hedge)
//!     .service_fn(|req: String| async move { Ok::<_, std::io::Error>(req.len()) });
//!
//! let len = svc.ready().await?.call("GET /users/7".to_string()).await?;
//! assert_eq!(len, 12);
//! assert_eq!(handle.stats().requests, 1);
//! assert_eq!(handle.stats().hedges_sent, 0); // not warmed up: fewer than 100 samples
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//! Each request's first attempt is sent at once. If it is still running after the *hedge
//! delay*, and the request is eligible, the budget allows, the deadline leaves room and the
//! inner service is ready right now, a hedge (a copy of the request) is sent. The first attempt
//! whose result is classified as healthy wins; every other attempt is dropped at once.
//!
//! - **Delay**: a latency quantile from damper-core's windowed
//!   [`LatencyHistogram`](damper_core::histogram::LatencyHistogram) (microsecond-accurate, 10 s
//!   window by default), read through a cache refreshed once per second, so no request walks
//!   the histogram. The default quantile is `1 − max_extra_load` (p95 for the default 5%), as
//!   Finagle's backup requests. Quantile hedging starts once the window holds `min_samples`
//!   samples (default 100). A [fixed delay](HedgeBuilder::fixed_delay) is an option.
//! - **Up to `max_hedges`** extra attempts (default 1), one delay apart.
//! - **Eligibility**: only requests an [`Eligible`] accepts are hedged — a predicate, or
//!   `Idempotent` for HTTP (feature `http`). A request is cloned only when it is eligible
//!   *and* a hedge could be sent for it (hedging warmed up, deadline long enough), because the
//!   original moves into the first attempt.
//! - **Deadline**: no hedge when the request's remaining
//!   [deadline](damper_core::HasDeadline) cannot fit the delay plus a typical (median) attempt.
//! - **Readiness**: a hedge is sent only if a clone of the inner service is ready *now*;
//!   otherwise it is not sent then. Hedges never queue behind real traffic.
//! - **Re-asking**: a hedge the budget denied, or the inner service could not take, is asked
//!   for again while the request runs, at a gap that starts at the delay and grows 1.25× each
//!   time ([`recheck`](HedgeBuilder::recheck), on by default). When the budget is tight, its
//!   tokens then go to the requests still outstanding long after the delay — the likeliest
//!   stragglers — rather than to whichever requests crossed the delay first; each hedge still
//!   costs a token. In the lab's `tail` scenario this cuts p99.9 from 230 ms to 100 ms at the
//!   same 5% budget.
//!
//! # Why a budget, and not only a delay?
//! A quantile delay alone sends about `1 − q` of requests twice only while latency is
//! stationary. When the dependency slows down, every request outlives the old quantile until
//! the window catches up, so a delay-only hedger (tower's `Hedge`) sends nearly *every* request
//! twice, doubling load on a dependency that is already slow. Here every request credits the
//! layer's own token bucket with `max_extra_load` of a hedge and each hedge costs a whole
//! token, so over any sequence of requests `hedges ≤ max_extra_load × requests` (plus at most
//! `burst` banked tokens after a calm period — the bucket starts empty). For a fleet, where
//! those bursts add up, a [decaying bank](HedgeBuilder::bank_ttl) keeps every second within
//! `max_extra_load` whatever the number of clients, at some cost in tail latency. With a shared
//! [budget](HedgeBuilder::budget), each hedge must also be paid from it, so retries and hedges
//! together stay inside one bound.
//!
//! # Why the first *success* wins
//! A fast error is not an answer worth taking over a slower success: when an attempt fails
//! while another is running, the layer waits for it. The first failure is returned only if
//! every attempt fails. Outcomes come from a [`Classify`](damper_core::Classify) (default
//! [`ResultClassifier`](damper_core::classify::ResultClassifier): `Ok` wins); success and
//! caller errors (a 404 is the dependency's real answer) win, failures wait.
//!
//! # Which latencies are recorded
//! - the winning attempt, success or caller error, at its own latency;
//! - a superseded attempt that had already run *longer* than the winner, at its elapsed time:
//!   a censored sample of the tail (as Finagle records superseded attempts). Without it the
//!   window would lose exactly the slow attempts hedging cut short and the delay would fall;
//! - a hedge superseded sooner than the winner's latency is not recorded: its elapsed time is a
//!   weak lower bound that would drag the quantile down;
//! - timeouts ([`FailureKind::Timeout`](damper_core::FailureKind::Timeout)) at their elapsed
//!   time; other failures are not recorded, since fast failures drag the quantile down;
//! - nothing for a request dropped by its caller.
//!
//! When the histogram is [shared](HedgeBuilder::histogram) with an inner layer that already
//! records every attempt (the adaptive timeout), turn
//! [`record_latencies`](HedgeBuilder::record_latencies) off.
//!
//! # Cost
//! No lock and no allocation on the request path beyond the request's copy: the counters and
//! the budget are atomics, the quantiles are cached atomics, and a request that waits holds one
//! timer inside its future, created only if the first attempt is still pending when polled.
//! An armed request also holds a clone of the inner service (`S: Clone`), polled for readiness
//! only when its hedge is due.
//! Hedges beyond the first (`max_hedges` > 1) are boxed when sent.
//!
//! A request that has to wait for its hedge uses a tokio timer, so the runtime must have time
//! enabled (as for tower's `Hedge` and `Timeout`).
//!
//! # Metrics
//! [`HEDGE_SENT_TOTAL`](damper_core::metrics::HEDGE_SENT_TOTAL),
//! [`HEDGE_WON_TOTAL`](damper_core::metrics::HEDGE_WON_TOTAL),
//! [`HEDGE_BUDGET_DENIED_TOTAL`](damper_core::metrics::HEDGE_BUDGET_DENIED_TOTAL) and the
//! [`HEDGE_DELAY_SECONDS`](damper_core::metrics::HEDGE_DELAY_SECONDS) gauge (set when the delay
//! changes), labelled with the layer's `name`. The same counters are readable without a
//! recorder through [`HedgeHandle::stats`].
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(no_crate_inject, attr(deny(warnings, rust_2018_idioms))))]

mod eligible;
pub mod error;
pub mod future;
mod layer;
pub mod policy;
mod service;

#[cfg(feature = "http")]
pub use crate::eligible::Idempotent;
pub use crate::eligible::{Always, Eligible};
pub use crate::error::ConfigError;
pub use crate::layer::{HedgeBuilder, HedgeHandle, HedgeLayer};
pub use crate::policy::{HedgeConfig, HedgeStats};
pub use crate::service::Hedge;

/// The README's snippets, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
