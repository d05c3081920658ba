//! A damped circuit breaker for [Tower]: it trips on real evidence, probes with a trickle of
//! real calls while open, and closes with a ramp as soon as the dependency heals.
//!
//! ```
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_breaker::{BreakerConfig, BreakerLayer, State};
//! use damper_core::error::{BoxError, CircuitOpen};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let config = BreakerConfig::builder()
//!     .name("inventory")
//!     .window(Duration::from_secs(10)) // sliding window, 10 sub-windows
//!     .min_requests(20) // no verdict on less evidence
//!     .consecutive_failures(20) // a healthy dependency that stops answering trips after 20
//!     .patience(Duration::ZERO) // fast errors trip at once (default: after 1 s of them)
//!     .open_min(Duration::from_millis(500)) // probe spacing while open
//!     .build()?;
//! let breaker = BreakerLayer::new(config);
//!
//! let backend = service_fn(|req: u32| async move {
//!     if req % 2 == 0 { Ok(req) } else { Err(BoxError::from("backend down")) }
//! });
//! let svc = ServiceBuilder::new().layer(breaker).service(backend);
//! let handle = svc.handle();
//!
//! // 20 failures in a row trip the breaker ...
//! for _ in 0..20 {
//!     let _ = svc.clone().oneshot(1).await;
//! }
//! assert_eq!(handle.state(), State::Open);
//! // ... and further calls fail fast, saying when the next spaced probe is due (one call in
//! // 20 still goes through, so healing shows within a few calls).
//! let err = svc.clone().oneshot(2).await.unwrap_err();
//! let open = err.downcast_ref::<CircuitOpen>().expect("refused locally");
//! assert!(open.next_probe_in() <= Duration::from_millis(500));
//! # Ok(())
//! # }
//! ```
//!
//! # Behaviour
//! - **Closed → Open** on *near-total failure* that has lasted `patience` (1 s): a run of
//!   `consecutive_failures` failures in a row (longer when the window shows the dependency
//!   usually failing often), or a window of at least `min_requests` calls with no success
//!   (`failure_rate` 1.0). At once on *evidence that load hurts*: `load_failure_rate` (0.5)
//!   of timeouts and overload answers, or the slow-call rate (off by default). A share of
//!   fast errors alone never trips it: refusing them saves the dependency little and loses
//!   every success among them, so partial failure is left to the retry budget.
//! - **While open**, one call is let through every probe spacing (`open_min`, 500 ms) and, in
//!   fail-fast mode, a `trickle` of the calls (5%); everything else is refused with
//!   [`CircuitOpen`](error::CircuitOpen), which says when the next spaced probe is due.
//! - **Open → HalfOpen** on the first probe that succeeds. Half-open admits up to
//!   `2^successes` calls at once (a slow start), **→ Closed** after `probes` (5) successes,
//!   **→ Open** on a probe that says the dependency is still sick (a timeout, an overload
//!   answer, a slow call) or when fast errors outnumber successes 40 to 1.
//! - Results are classified by damper-core's [`Classify`](damper_core::classify::Classify)
//!   (default [`ResultClassifier`](damper_core::classify::ResultClassifier); use
//!   `HttpClassifier` or `GrpcClassifier` for status codes). A caller error counts as healthy,
//!   a local rejection from an inner layer counts as nothing, and a dropped response future
//!   counts as neither success nor failure — except in gate mode, where an abandoned call
//!   counts as a timeout (`abandoned_fails`). See [`policy`] for the reasons.
//!
//! # Why a time window, and why it must forget
//! A count-based window that is really cumulative never forgets: after 10,000 successes, an
//! outage needs 10,000 more failures before the rate reaches 50%. Here the window is a ring of
//! per-second counters tagged with their epoch: a counter older than the window is ignored and
//! recycled, whatever came before. And `min_requests` keeps two unlucky calls from opening the
//! circuit.
//!
//! # Why the spacing grows only while the dependency is sick
//! A classic breaker waits out an open period that doubles on every failed probe, and so
//! holds on for seconds after a dependency heals, and loses most of a flapping dependency's
//! healthy time. Here the spacing grows (×`open_multiplier`, up to `open_max`) only on a probe
//! that says the dependency is still sick — a timeout, an overload answer, a slow or
//! abandoned call — and the growth is forgotten when the breaker closes. Fast errors cost the
//! dependency little, and the trickle keeps probing at a rate sized to the traffic. Spacings
//! are jittered, so clients that opened together do not probe together. A server's pushback
//! (429 or 503 with `Retry-After`, `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms`) holds
//! the next probe back that long (up to `open_max`), and nothing trickles through before it.
//!
//! # Fail fast or gate
//! In [`Mode::FailFast`] (the default) `poll_ready` reflects only the inner service and `call`
//! refuses at once, or answers from a [fallback](BreakerLayer::fallback). In [`Mode::Gate`],
//! `poll_ready` is `Pending` while the breaker refuses calls and wakes when the next probe is
//! due: under a balancer (tower's p2c) an open endpoint simply looks busy, and traffic goes
//! elsewhere. Use [`KeyedBreakerLayer::layer_for`] to give each endpoint its own breaker: its
//! breakers form a pool that fails open (every gate lets calls through) while more than
//! `max_ejected` (half) of them are not closed, so gating never empties the balancer's pool.
//!
//! # Keyed breakers
//! [`KeyedBreakerLayer`] keeps one breaker per key (a host, an endpoint), with a hard bound on
//! live keys and idle/LRU eviction that spares open breakers; see [`keyed`].
//!
//! # Observability
//! [`BreakerHandle`] reads the state and the transition count, forces the breaker open or
//! closed, resets it, and subscribes to transitions. Metrics (names in
//! [`damper_core::metrics`]): `damper_breaker_state` (0 closed, 1 half-open, 2 open),
//! `damper_breaker_transitions_total{state}` and `damper_breaker_rejected_total`, all labelled
//! with the config's `name`. One tracing event per transition, none per request.
//!
//! # Cost
//! In the closed state a call takes no lock and allocates nothing. Admission is one atomic
//! load of the state word. A success costs the reference count of a per-clone handle (its
//! future must keep the breaker alive) and nothing else: each clone counts the calls it admits
//! in a plain field and adds them to the window in batches, reading the clock on a sample of
//! calls (see [`Breaker`]'s clock sampling). Failures read the clock and sum the window
//! (10 sub-windows × stripes of counters), never a list of calls. Counters are striped per
//! thread, so threads do not share written cache lines and throughput scales with cores.
//!
//! `cargo bench -p tower-breaker --bench overhead` measures the closed-state overhead on a
//! ready service against failsafe, recloser and tower-resilience's breaker in the same run. On
//! a shared 2-vCPU VM the breaker cost a fifth to a third of failsafe's per-call time and about
//! a tenth of tower-resilience's; two threads sharing one breaker got more done than one
//! while failsafe and recloser got less, and each thread's CPU time per call stayed the same
//! with a second thread sharing the breaker.
//!
//! [Tower]: https://docs.rs/tower
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(no_crate_inject, attr(deny(warnings, rust_2018_idioms))))]
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod fallback;
pub mod future;
mod handle;
pub mod keyed;
mod layer;
#[cfg(all(test, loom))]
mod loom_tests;
pub mod policy;
mod service;
mod shared;
mod sync;
pub mod window;

#[cfg(feature = "serde")]
pub use crate::config::BreakerSettings;
pub use crate::config::{BreakerConfig, BreakerConfigBuilder, ConfigError, Mode};
pub use crate::handle::BreakerHandle;
pub use crate::keyed::{KeyedBreaker, KeyedBreakerLayer};
pub use crate::layer::BreakerLayer;
pub use crate::policy::{Reason, Snapshot, State, Transition};
pub use crate::service::Breaker;

/// The README's snippets, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
