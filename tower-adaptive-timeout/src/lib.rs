//! A Tower timeout that follows the dependency's latency, and a layer for request deadlines.
//!
//! [`AdaptiveTimeoutLayer`] gives each attempt the timeout
//! `clamp(p99.9 × 1.5, 10 ms, 10 s)` of the latencies it has recently observed (every number is
//! a knob, see [`TimeoutConfig`]), never longer than what is left of the request's deadline.
//! [`DeadlineLayer`] sets that deadline for the whole logical request, from its own timeout or
//! from an incoming `grpc-timeout`, and propagates it to the next hop.
//!
//! ```
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_adaptive_timeout::error::{DeadlineExceeded, Elapsed};
//! use tower_adaptive_timeout::{AdaptiveTimeoutLayer, DeadlineLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_adaptive_timeout::BoxError> {
//! let timeout = AdaptiveTimeoutLayer::builder()
//!     .floor(Duration::from_millis(20))
//!     .ceiling(Duration::from_secs(5))
//!     .name("inventory")
//!     .build()?;
//! // Keep a handle: the layer shares its state with every service it builds.
//! let handle = timeout.clone();
//!
//! let mut client = ServiceBuilder::new()
//!     .layer(DeadlineLayer::builder().timeout(Duration::from_secs(3)).build()?)
//!     .layer(timeout)
//!     .service_fn(|id: u32| async move {
//!         tokio::time::sleep(Duration::from_millis(1)).await;
//!         Ok::<_, std::convert::Infallible>(id * 2)
//!     });
//!
//! assert_eq!(client.ready().await?.call(21).await?, 42);
//! // Until 16 latencies are known, the fallback (1 s) applies.
//! assert_eq!(handle.current_timeout(tokio::time::Instant::now()), Duration::from_secs(1));
//!
//! // Errors say which limit was hit.
//! let e: tower_adaptive_timeout::BoxError = Box::new(Elapsed::new(Duration::from_secs(1)));
//! assert!(e.is::<Elapsed>() && !e.is::<DeadlineExceeded>());
//! # Ok(())
//! # }
//! ```
//!
//! # Why adaptive, and why a quantile?
//! A fixed timeout is either too long (a hung dependency holds callers, connections and retry
//! budget for seconds) or too short (a healthy but slower day turns into errors). The Amazon
//! Builders' Library puts it as a choice of *false-timeout rate*: accept, say, 0.1 % of
//! healthy calls timing out and set the timeout at the matching latency percentile, p99.9. This
//! layer measures that percentile continuously over a sliding window
//! ([`LatencyHistogram`](damper_core::histogram::LatencyHistogram), lock-free) and adds headroom.
//!
//! # Why censoring and backoff?
//! A percentile timeout has a blind spot: if latency steps *above* the timeout, every attempt
//! times out and, if timeouts were simply dropped, the histogram would never see a slow sample
//! and the timeout would never move. Here a timed-out attempt is recorded at the timeout value
//! (a censored sample: "at least this long"), and a run of consecutive timeouts multiplies the
//! timeout, as TCP doubles its retransmission timeout, up to the ceiling. See [`policy`].
//!
//! # Why an anti-ratchet?
//! Under overload latency grows, so a percentile timeout grows, so callers wait longer and hold
//! more resources, which is more overload. The timeout may therefore grow at most by
//! `max_growth` per `growth_window` (2× per 500 ms by default); decreases are immediate.
//!
//! # Deadlines
//! The attempt timeout never exceeds the request's remaining deadline (a
//! [`damper_core::Deadline`] on the request, see [`HasDeadline`](damper_core::HasDeadline)).
//! When the deadline, not the adaptive timeout, fires, the error is
//! [`DeadlineExceeded`](error::DeadlineExceeded) and the policy learns nothing from it;
//! otherwise it is [`Elapsed`](error::Elapsed). A request whose deadline has already passed
//! fails at once without reaching the inner service.
//!
//! # Sharing the histogram with a hedge layer
//! [`AdaptiveTimeoutLayer::histogram`] returns the `Arc<LatencyHistogram>`; pass a shared one in
//! with [`AdaptiveTimeoutBuilder::histogram`]. Let exactly one layer record into it
//! ([`AdaptiveTimeoutBuilder::record`]).
//!
//! # Cost
//! Per request: a step of a per-thread sampling sequence, a few relaxed atomic loads, and a
//! tokio `Sleep` built inline in the response future (a clone of the runtime handle, as tower's
//! `Timeout` pays; tokio registers it with the timer only when it is polled). A
//! sampled attempt (every attempt below `max_samples_per_sec`, 2000 by default; above that one
//! in 2ⁿ, chosen independently of latency and outcome, see [`TimeoutConfig`]) adds two clock
//! reads, an `Arc` clone and a histogram record (three relaxed atomic adds), and checks whether
//! the quantile is due for its refresh (at most once per `refresh`, by one caller). An
//! unsampled attempt without a deadline reads no clock at the call: its timer starts at the
//! first poll that finds the response pending (see [`ResponseFuture`](future::ResponseFuture)),
//! so a response ready on its first poll costs no clock read and no timer registration.
//! Nothing is boxed.
//!
//! # Metrics
//! `damper_timeout_current_seconds` (gauge, updated on refresh and backoff),
//! `damper_timeout_elapsed_total`, `damper_deadline_exceeded_total`, all labelled `name`.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(no_crate_inject, attr(deny(warnings, rust_2018_idioms))))]

/// `get_ref`, `get_mut` and `into_inner` for a service wrapping `inner: S`.
macro_rules! inner_accessors {
    () => {
        /// A reference to the inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// A mutable reference to the inner service.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Consumes `self`, returning the inner service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}

mod config;
pub mod deadline;
pub mod error;
pub mod future;
mod layer;
pub mod policy;
mod service;

pub use crate::config::TimeoutConfig;
pub use crate::deadline::{DeadlineHeaders, DeadlineLayer, PropagateDeadlineLayer};
pub use crate::layer::{AdaptiveTimeoutBuilder, AdaptiveTimeoutLayer};
pub use crate::service::AdaptiveTimeout;
pub use damper_core::BoxError;

/// The README's snippets, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
