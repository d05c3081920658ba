//! Resilience layers for Tower that stack into one deliberately damped control system.
//!
//! ```
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), damper::BoxError> {
//! // deadline → retry (budget) → hedge (same budget) → breaker → adaptive timeout → service
//! let stack = damper::ClientStack::new()
//!     .name("inventory")
//!     .deadline(Duration::from_secs(2))
//!     .build()?;
//! let handles = stack.handles().clone();
//!
//! let mut client = ServiceBuilder::new()
//!     .layer(stack)
//!     .service_fn(|sku: u32| async move { Ok::<_, damper::BoxError>(sku * 10) });
//!
//! assert_eq!(client.ready().await?.call(7).await?, 70);
//! // The hedge saw the request; it is not warmed up, so it sent no hedge.
//! assert_eq!(handles.hedge().unwrap().stats().requests, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # The layers
//! Each lives in its own crate, re-exported here, and is useful alone:
//!
//! | module | crate | what it does |
//! |---|---|---|
//! | [`timeout`] | `tower-adaptive-timeout` | per-attempt timeout from observed latency; request deadlines |
//! | [`retry_budget`] | `tower-retry-budget` | token-bucket retry budget and the retry layer |
//! | [`breaker`] | `tower-breaker` | circuit breaker that trips on evidence and backs off with jitter |
//! | [`shed`] | `tower-shed` | adaptive concurrency limits and load shedding |
//! | [`hedge`] | `tower-hedge` | hedged requests under a hard extra-load budget |
//! | [`fault`] | `tower-fault-injection` | fault injection for tests and drills |
//! | [`core`] | `damper-core` | classification, pushback, deadlines, histogram, budget, errors |
//!
//! # The stacks
//! [`ClientStack`] wires, outermost first:
//!
//! ```text
//! deadline → retry (budget) → hedge (same budget) → breaker → client limit → adaptive timeout
//!   → deadline propagation → transport
//! ```
//!
//! and [`ServerStack`]:
//!
//! ```text
//! deadline (the caller's, from grpc-timeout) → shed (adaptive limit, CoDel/LIFO queue,
//!   partitions) → handler
//! ```
//!
//! The couplings that make the client stack one damped system rather than five independent
//! loops:
//! - **one budget** for retries and hedges: total attempts ≤ (1 + ratio) × requests + one
//!   reserve token per client, and the bank follows each client's own rate (about half a
//!   second of its good traffic; only a client under one request a second keeps the reserve);
//! - **one latency histogram** read by the adaptive timeout and the hedge delay (the hedge
//!   layer records when hedging is on, since it also sees the attempts it supersedes; the
//!   timeout otherwise; censored timeouts included either way);
//! - **deadline first**: retries and hedges are not sent when the remaining deadline cannot fit
//!   an attempt, and every attempt timeout is capped by it. A shorter `grpc-timeout` the caller
//!   already put on the request (tonic's `Request::set_timeout`) wins over the stack's
//!   deadline. Where the deadline is propagated (the gRPC preset, or
//!   [`ClientStack::propagate_deadline`]), each attempt is sent with the time left at that
//!   moment as `grpc-timeout`, so a retry 1.5 s into a 2 s deadline tells the server 0.5 s;
//! - **local rejections are final**: an open breaker or a full client limit is never retried
//!   against the same dependency; server overload signals (429/503 with `Retry-After`,
//!   `RESOURCE_EXHAUSTED`, pushback) delay or stop retries; the breaker leaves overload with
//!   pushback out of its failure rate while the server also serves (a shedding server is
//!   serving what it can) and counts it, pushback lengthening the open period, once the
//!   server refuses everything ([`BreakerView`]);
//! - **trips on near-total failure**: the breaker trips on its failure rate over the window
//!   or on 100 consecutive failures once they have lasted its patience (1 s), so a dependency
//!   that goes hard down is cut off within a second at 100 requests a second or more, and one
//!   that fails 90% of calls at random is not cut off at any rate (its successes are kept);
//! - **retries never queue**: a retry is sent only if the inner service is ready now.
//!
//! Every layer can be switched off or tuned ([`ClientStack::configure`], [`config`]), and the
//! configuration deserializes with serde, durations as `"250ms"`.
//!
//! # Presets
//! - [`ClientStack::new`]: plain `Clone` requests, `Err` is a failure.
//! - [`ClientStack::http`] / [`ServerStack::http`] (feature `http`, on by default).
//! - [`ClientStack::grpc`] / [`ServerStack::grpc`] (feature `grpc`).
//! - [`ClientStack::build_reqwest`] (feature `reqwest`): the HTTP preset inside a
//!   [`Client`](crate::reqwest::Client) wrapper that keeps reqwest's builder API.
//! - [`ClientStack::build_tonic`] (feature `tonic`): the gRPC preset inside a
//!   [`Channel`](crate::tonic::Channel) that tonic's generated clients take.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(no_crate_inject, attr(deny(warnings, rust_2018_idioms))))]

#[cfg(any(feature = "reqwest", feature = "tonic"))]
pub mod body;
mod client;
pub mod config;
mod duration;
mod ext;
mod optional;
mod presets;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod reqwest;
mod server;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod tonic;

pub use crate::client::{
    BreakerView, ClientHandles, ClientLayer, ClientService, ClientStack, OVERLOAD_RUN,
};
pub use crate::config::ConfigError;
pub use crate::ext::ServiceBuilderExt;
pub use crate::optional::{Maybe, MaybeFuture, Optional};
#[cfg(feature = "grpc")]
pub use crate::presets::{GrpcClientLayer, GrpcClientService, GrpcServerLayer, GrpcServerService};
#[cfg(feature = "http")]
pub use crate::presets::{HttpClientLayer, HttpClientService, HttpServerLayer, HttpServerService};
#[cfg(feature = "http")]
pub use crate::server::{
    ErrorAs500, ErrorAs500Future, ErrorAs500Layer, HeaderPartitioner, InfallibleHttpServerLayer,
};
pub use crate::server::{ServerLayer, ServerService, ServerStack};
pub use damper_core::BoxError;

pub use damper_core as core;
pub use tower_adaptive_timeout as timeout;
pub use tower_breaker as breaker;
pub use tower_fault_injection as fault;
pub use tower_hedge as hedge;
pub use tower_retry_budget as retry_budget;
pub use tower_shed as shed;

/// The README's snippets, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
