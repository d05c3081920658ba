//! The shared vocabulary of the damper resilience layers.
//!
//! Every `tower-*` crate of damper builds on these pieces, so stacked layers agree on what a
//! failure is, how long the caller may still wait and which errors must not be retried:
//!
//! - [`classify`]: what an attempt's result says about the dependency ([`classify::Classify`];
//!   plain results, HTTP statuses with feature `http`, gRPC codes with feature `grpc`);
//! - [`pushback`]: `Retry-After` and `grpc-retry-pushback-ms`, parsed safely and clamped;
//! - [`deadline`]: a request's deadline as an extension, and the `grpc-timeout` codec;
//! - [`histogram`]: a lock-free windowed latency histogram;
//! - [`budget`]: the [`Budget`] that retries and hedges spend from;
//! - [`backoff`]: exponential backoff with full or decorrelated jitter;
//! - [`error`]: the errors layers originate, and [`error::is_local_rejection`];
//! - [`metrics`]: every `damper_*` metric name.
//!
//! Policies take `now` as an argument (tokio's `Instant`, which obeys paused time); nothing here
//! reads a clock on its own, except [`classify::HttpClassifier`] reading the wall clock for
//! HTTP-date `Retry-After` values.
//!
//! ```
//! use damper_core::classify::{Classify, ResultClassifier};
//! use damper_core::histogram::LatencyHistogram;
//! use std::time::Duration;
//! use tokio::time::Instant;
//!
//! let now = Instant::now();
//! let latencies = LatencyHistogram::new(now);
//! latencies.record(Duration::from_millis(12), now);
//!
//! let result: Result<(), &str> = Err("connection reset");
//! let outcome = ResultClassifier::new().classify(&result);
//! assert!(outcome.is_retryable());
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(no_crate_inject, attr(deny(warnings, rust_2018_idioms))))]

pub mod backoff;
pub mod budget;
pub mod classify;
pub mod clock;
pub mod deadline;
pub mod error;
pub mod histogram;
pub mod metrics;
pub mod pushback;
pub mod rng;
pub mod spare;
mod sync;

pub use crate::budget::Budget;
pub use crate::classify::{Classify, Failure, FailureKind, Outcome};
pub use crate::deadline::{Deadline, HasDeadline};
pub use crate::error::BoxError;

/// The default clamp on server pushback (30 s).
pub(crate) const fn pushback_max() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

/// The default clamp on server pushback, as used by the built-in classifiers.
pub const DEFAULT_MAX_PUSHBACK: std::time::Duration = pushback_max();

/// The README's snippets, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
