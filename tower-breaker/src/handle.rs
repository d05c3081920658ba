use crate::config::BreakerConfig;
use crate::policy::{Snapshot, State, Transition};
use crate::shared::Shared;
use std::fmt;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;

/// A handle on one breaker: read its state, force it, reset it, watch its transitions.
///
/// Get one from [`Breaker::handle`](crate::Breaker::handle), or create the breaker first with
/// [`BreakerHandle::new`] and build services over it with
/// [`BreakerLayer::from_handle`](crate::BreakerLayer::from_handle). Cloning a handle does not
/// create a new breaker.
#[derive(Clone)]
pub struct BreakerHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for BreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BreakerHandle").field(&self.shared).finish()
    }
}

impl BreakerHandle {
    /// A new, closed breaker (registers its metrics).
    pub fn new(config: &BreakerConfig) -> Self {
        Self::from_shared(Arc::new(Shared::new(config, Instant::now())))
    }

    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The breaker's name (the `name` metric label).
    pub fn name(&self) -> &str {
        self.shared.name()
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.shared.policy.state()
    }

    /// Transitions since the breaker was built.
    pub fn transitions(&self) -> u64 {
        self.shared.policy.transitions()
    }

    /// A copy of the state, window counts included.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.policy.snapshot(Instant::now())
    }

    /// Holds the breaker open — every call refused, no probes — until [`reset`](Self::reset)
    /// or [`force_closed`](Self::force_closed).
    pub fn force_open(&self) {
        if let Some(t) = self.shared.policy.force_open(Instant::now()) {
            self.shared.publish(t);
        }
    }

    /// Holds the breaker closed — every call admitted, never tripping — until
    /// [`reset`](Self::reset) or [`force_open`](Self::force_open).
    pub fn force_closed(&self) {
        if let Some(t) = self.shared.policy.force_closed(Instant::now()) {
            self.shared.publish(t);
        }
    }

    /// Closes the breaker and forgets its history (window, escalation level).
    pub fn reset(&self) {
        if let Some(t) = self.shared.policy.reset(Instant::now()) {
            self.shared.publish(t);
        }
    }

    /// Watches transitions: the receiver holds the latest one (`None` before the first). A
    /// watch keeps only the latest value; compare [`transitions`](Self::transitions) to detect
    /// missed ones.
    pub fn subscribe(&self) -> watch::Receiver<Option<Transition>> {
        self.shared.subscribe()
    }
}
