//! A lock-free retry budget and a budgeted, deadline-aware retry layer for Tower.
//!
//! ```
//! use std::time::Duration;
//! use damper_core::BoxError;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_retry_budget::{CloneAll, RetryBudget, RetryLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! // One budget per dependency, shared by every client of it (and by a hedge layer).
//! let budget = RetryBudget::builder().name("users-api").build()?;
//! let retry = RetryLayer::builder(budget)
//!     .name("users-api")
//!     .replay(CloneAll::new()) // u32 requests are safe to send twice
//!     .max_attempts(3)
//!     .timeout(Duration::from_secs(2))
//!     .build()?;
//! let service = ServiceBuilder::new()
//!     .layer(retry)
//!     .service(service_fn(|id: u32| async move { Ok::<_, BoxError>(id * 2) }));
//! assert_eq!(service.oneshot(21).await?, 42);
//! # Ok(())
//! # }
//! ```
//!
//! # Why budgets and not max retries?
//! "Retry up to 3 times" turns an outage into triple load at the worst moment, and three
//! stacked layers of it into 27 attempts per request: retries are the most common fuel of
//! metastable outages. Here every retry must withdraw a token from a [`RetryBudget`], and only
//! good responses deposit (0.1 token each by default). While the dependency is healthy the odd
//! failure is retried as usual; when it fails wholesale, deposits stop and so do retries, and
//! extra load stays a bounded share of good traffic (plus an optional per-second floor, off by
//! default):
//!
//! ```text
//! extra attempts ≤ initial + ratio × good responses + floor_burst + min_per_sec × elapsed
//! ```
//!
//! The bank follows each client's own rate: tokens decay with a 500 ms time constant, so a
//! client holds about what its last half second of good traffic earned, and a fleet cannot
//! save up a storm. Only a quiet client (under one request a second) keeps a one-token
//! reserve, so that it can still retry the odd failure. See [`budget`] for the bucket,
//! the reserve, the decay, the floor and the choice of defaults.
//!
//! # What the retry layer does
//! A [`RetryLayer`] builds [`Retry`]. After each attempt it classifies the result with a
//! damper-core [`Classify`](damper_core::Classify) and applies the rules of
//! [`policy::RetryPolicy`]:
//! - successes deposit into the budget and are returned; caller errors (4xx, `NOT_FOUND`) and
//!   non-retryable failures are returned as they are;
//! - local rejections (circuit open, local concurrency limit, a budget downstream) are never
//!   retried: they say nothing about the dependency and retrying only adds load;
//! - at most `max_attempts` attempts in total (default 3);
//! - the wait is the server's pushback (`Retry-After`, `grpc-retry-pushback-ms`, clamped to
//!   `max_pushback`) or else jittered backoff (full jitter by default); "do not retry" pushback
//!   stops;
//! - deadline-aware: no retry when the remaining deadline (carried by the request, or the
//!   layer's own [`timeout`](RetryLayerBuilder::timeout)) cannot fit the wait plus
//!   `min_attempt_time`, so the layer never sleeps past a deadline;
//! - every retry withdraws one token first; an empty budget returns the last result at once
//!   and counts `damper_retry_budget_exhausted_total`;
//! - after the wait, the retry is sent only if the inner service is ready *right now*;
//!   otherwise the caller gets the last result: retries never queue;
//! - only requests that may be sent twice are retried, and they are copied only when a retry
//!   is possible: see [`replay`] (HTTP methods and body caps, reqwest, tonic, predicates).
//!
//! When the layer stops, the caller gets the last attempt's result unchanged — the error, or
//! the response (a 503, say) of the last attempt — so `Retry<S>` keeps `S::Error`.
//!
//! # Metrics and tracing
//! Counters `damper_retry_attempts_total`, `damper_retry_retries_total` and
//! `damper_retry_budget_exhausted_total` (label `name`, registered once when the layer is
//! built) and the gauge `damper_retry_budget_balance` (label: the budget's name, written only
//! when its whole-token balance changes). The budget emits one `debug` event when it runs dry
//! and one when it refills; nothing is logged per request.
//!
//! # Features
//! - `http`: [`Idempotent`] replay for `http::Request`, and damper-core's `HttpClassifier`;
//! - `grpc`: [`Idempotent`] replay for `tonic::Request`, and damper-core's `GrpcClassifier`;
//! - `reqwest`: [`Idempotent`] replay for `reqwest::Request`.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(no_crate_inject, attr(deny(warnings, rust_2018_idioms))))]

pub mod budget;
pub mod error;
pub mod future;
mod layer;
pub mod policy;
pub mod replay;
mod service;
mod sync;

pub use crate::budget::{RetryBudget, RetryBudgetBuilder};
pub use crate::error::ConfigError;
pub use crate::layer::{MAX_ATTEMPTS_LIMIT, RetryLayer, RetryLayerBuilder};
pub use crate::replay::{CloneAll, Idempotent, Replay, ReplayIf, ReplayWith};
pub use crate::service::Retry;

/// The README's snippets, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
