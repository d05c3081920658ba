//! A test-only conformance kit: the tests in `tests/` hold every damper layer to the Tower
//! service contract.
//!
//! For each layer they check:
//! - **waker correctness**: a `poll_ready` that returns `Pending` because the inner service is
//!   not ready is woken when it becomes ready;
//! - **cancellation**: dropping a response future at each await point releases what the call
//!   held — limiter permits, half-open probe slots, budget reservations — so in-flight counts
//!   return to zero;
//! - **service drop**: dropping a service releases what its `poll_ready` reserved;
//! - **shared state**: clones share exactly the state their crate documents (budget, breaker,
//!   limit, hedge counters), and readiness is not leaked from one clone to another;
//! - **`call` without `poll_ready`**: what each layer then does is documented here and tested:
//!   every damper layer reserves nothing in `poll_ready` (except the breaker in gate mode), so
//!   an unpolled `call` is forwarded; the inner service's own contract still applies.
//!
//! ```
//! // The crate has no runtime API: run `cargo test -p damper-conformance`.
//! assert_eq!(damper_conformance::LAYERS.len(), 8);
//! ```

/// The layers the conformance tests cover.
pub const LAYERS: &[&str] = &[
    "tower-retry-budget",
    "tower-hedge",
    "tower-breaker",
    "tower-shed",
    "tower-adaptive-timeout (attempt timeout)",
    "tower-adaptive-timeout (deadline)",
    "tower-fault-injection",
    "damper (client and server stacks)",
];
