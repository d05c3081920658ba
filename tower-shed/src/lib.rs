//! Adaptive concurrency limits and load shedding for Tower services.
//!
//! A server that accepts more work than it can finish serves nobody: queues grow, every
//! request gets slow, callers time out and retry, and goodput collapses. [`ShedLayer`] keeps the
//! number of requests in flight at what the service can actually handle, learned from observed
//! latency by a [`Limit`](limit::Limit) algorithm, and turns the excess away at once, cheaply,
//! with a retry-after hint.
//!
//! ```
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_shed::limit::Vegas;
//! use tower_shed::ShedLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_shed::error::ConfigError> {
//! let shed = ShedLayer::builder(Vegas::builder().initial_limit(32).build()?)
//!     .name("api")
//!     .build()?;
//! let handle = shed.handle(); // current limit and in-flight count, e.g. for dashboards
//!
//! let mut svc = ServiceBuilder::new()
//!     .layer(shed)
//!     .service_fn(|req: &'static str| async move {
//!         Ok::<_, std::convert::Infallible>(req.len())
//!     });
//!
//! let len = svc.ready().await.unwrap().call("hello").await.unwrap();
//! assert_eq!(len, 5);
//! assert_eq!(handle.in_flight(), 0);
//! assert_eq!(handle.limit(), 32);
//! # Ok(())
//! # }
//! ```
//!
//! # What it does
//!
//! - **Limits** ([`limit`]): [`Aimd`](limit::Aimd), [`Gradient2`](limit::Gradient2) and
//!   [`Vegas`](limit::Vegas) (both deciding on the median RTT of a batch of requests against a
//!   no-load RTT that a standing queue cannot drag up: re-measured by a jittered probe that
//!   drains the queue) and [`Fixed`](limit::Fixed); all bounded, smoothed, grow only while the
//!   limit is in use and cut at most once per RTT.
//! - **Admission without a lock.** Permits are taken in `call`, not reserved in `poll_ready`
//!   (which only forwards the inner service's readiness), so idle keep-alive connections hold
//!   none. In the default mode the limit is a pool of slots leased per thread in small batches,
//!   so admitting is one compare-and-swap on a cache line the thread owns and the limit stays
//!   exact; with partitions or a queue, one shared atomic counter.
//! - **Reject or queue.** At the limit a request fails at once with
//!   [`Overloaded`](error::Overloaded), carrying a retry-after hint (the default); or, with
//!   [`ShedBuilder::queue`], waits in a bounded queue governed by [CoDel and adaptive
//!   LIFO](codel). Queued requests whose [deadline](damper_core::deadline::HasDeadline) passed
//!   are dropped before any work starts ([`DeadlineExceeded`](error::DeadlineExceeded)).
//! - **Partitions**: named classes with guaranteed shares of the limit, chosen per request by a
//!   closure; best effort is shed first (see [`ShedBuilder::partition`]).
//! - **Server side**: with feature `http`, `http::OverloadedAsResponseLayer` turns rejections
//!   into `503 Service Unavailable` with `Retry-After`; with feature `grpc`,
//!   `grpc::OverloadedAsStatusLayer` into `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms`.
//!   **Client side** the [`Overloaded`](error::Overloaded) error is a local rejection
//!   ([`damper_core::error::is_local_rejection`]), which damper's retry layer never retries.
//! - **Metrics** (`damper_shed_*`, labelled `name`, rejections also by `partition`): limit and
//!   in-flight gauges, rejections, queue time, min RTT; a `debug` event when the limit changes.
//!
//! # Why a limit on concurrency, not on rate?
//!
//! Capacity in requests per second changes with every deploy, cache state and request mix.
//! Concurrency does not need to be known in advance: by Little's law, in-flight = rate × latency,
//! so a service that slows down automatically admits fewer requests per second under the same
//! limit, and latency itself tells the algorithm when the limit is too high.
//!
//! # Why reject instead of queueing by default?
//!
//! A request queued behind a full service waits for an entire service time or more, and its
//! caller has probably given up by the time it runs: the work is wasted and makes everyone else
//! slower. Rejecting at once costs the caller one fast error it can route around or retry
//! elsewhere. Where a short queue helps (bursty traffic), CoDel bounds it by *time*, not just
//! length, and adaptive LIFO serves the callers still likely to be waiting.
//!
//! # How the limit is updated without slowing admission
//!
//! Admission never looks at the algorithm: it reads the published limit (or takes a slot of
//! the pool the limit sizes). One request in [`DEFAULT_SAMPLE_EVERY`] is measured (two clock
//! reads, the costliest part of a measured request) and, when it completes, feeds the algorithm
//! behind a mutex that is only ever `try_lock`ed: one updater at a time, and a completion that
//! finds it busy skips its sample instead of waiting. Each sample stands for the requests it
//! represents ([`limit::Sample::weight`]), so the algorithms keep their per-RTT behaviour;
//! dropped requests (timeouts, overload answers) are always fed. The admit and reject paths
//! never touch the mutex. Above [`DEFAULT_MAX_SAMPLES_PER_SEC`] measured requests a second
//! (configurable), the share measured halves until it is under the cap: each measurement
//! writes lines every core shares, and at millions of requests a second a fixed share of them
//! would keep admission from scaling across cores.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(no_crate_inject, attr(deny(warnings, rust_2018_idioms))))]
#![forbid(unsafe_code)]

pub mod codel;
pub mod error;
pub mod future;
mod handle;
mod layer;
pub mod limit;
mod limiter;
mod service;
mod shards;

#[cfg(feature = "grpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
pub mod grpc;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;

pub use crate::handle::ShedHandle;
pub use crate::layer::{
    DEFAULT_MAX_SAMPLES_PER_SEC, DEFAULT_SAMPLE_EVERY, MAX_QUEUE, Partitioner, ShedBuilder,
    ShedLayer,
};
pub use crate::service::Shed;

/// The README's snippets, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
