//! A Tower layer that injects faults into the service it wraps: added latency (fixed or drawn
//! from a distribution), errors with a probability, hangs, and a capacity cut — switched by a
//! schedule or at run time through a handle, deterministic for a seed.
//!
//! Use it in tests, demos and chaos drills in staging, and in `damper-lab`, which measures
//! every damper layer against faults injected this way.
//!
//! ```
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_fault_injection::{FaultLayer, FaultSpec, Latency, Schedule};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let s = Duration::from_secs;
//! // Healthy for 10 s, then 30 s of outage, then 20 s of 10× slower answers.
//! let schedule = Schedule::builder()
//!     .between(s(10), s(40), FaultSpec::outage())
//!     .between(s(40), s(60), FaultSpec::new().latency(Latency::Fixed(Duration::from_millis(90))))
//!     .build()?;
//! let faults = FaultLayer::builder().schedule(schedule).seed(42).build()?;
//! let handle = faults.handle();
//!
//! let svc = ServiceBuilder::new()
//!     .layer(faults)
//!     .service_fn(|req: &'static str| async move { Ok::<_, std::convert::Infallible>(req) });
//!
//! assert_eq!(svc.clone().oneshot("hi").await?, "hi");
//! tokio::time::advance(s(15)).await;
//! assert!(svc.clone().oneshot("hi").await.is_err()); // in the outage
//!
//! // An operator can force a fault at any time, whatever the schedule says.
//! handle.set(FaultSpec::new().error_probability(0.1))?;
//! handle.clear();
//! # Ok(())
//! # }
//! ```
//!
//! # What each fault does
//! - **latency**: the answer (real or injected) arrives after the added delay;
//! - **error**: the inner service is not called; the [`Inject`] strategy answers, by default
//!   with an [`InjectedFault`] error; with feature `http`, [`HttpResponseInjector`] answers with
//!   a chosen status and headers (503 + `Retry-After`, 429, 500);
//! - **hang**: the future never completes; the caller's timeout or drop ends it;
//! - **capacity cut**: at most N requests run at once; the rest fail at once.
//!
//! # Why a seed?
//! Fault drills are experiments: a result that cannot be reproduced cannot be debugged. Every
//! draw comes from one lock-free [`AtomicRng`](damper_core::rng::AtomicRng) seeded by the
//! builder, so the same seed and the same call order give the same faults.
//!
//! # Cost when off
//! With no schedule and nothing forced, a call is one relaxed atomic load and a branch: no clock
//! read, no allocation (see `benches/disabled.rs`).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(no_crate_inject, attr(deny(warnings, rust_2018_idioms))))]

pub mod error;
pub mod future;
mod handle;
mod inject;
mod layer;
pub mod policy;
pub mod schedule;
mod service;
pub mod spec;

pub use crate::error::{FaultKind, InjectedFault};
pub use crate::handle::FaultHandle;
#[cfg(feature = "http")]
pub use crate::inject::HttpResponseInjector;
pub use crate::inject::{ErrorInjector, Inject};
pub use crate::layer::{FaultLayer, FaultLayerBuilder};
pub use crate::schedule::{Schedule, ScheduleBuilder};
pub use crate::service::Fault;
pub use crate::spec::{ConfigError, FaultSpec, Latency};

/// The README's snippets, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
