//! The state shared by every clone of one breaker: the policy, the waiters of gate mode, the
//! transition channel and the metric handles.

use crate::config::{BreakerConfig, Mode};
use crate::policy::{Effect, Policy, State, Transition};
use damper_core::metrics::{
    BREAKER_REJECTED_TOTAL, BREAKER_STATE, BREAKER_TRANSITIONS_TOTAL, LABEL_NAME, LABEL_STATE,
};
use metrics::{Counter, Gauge};
use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// Metric handles, registered once per layer.
#[derive(Debug)]
pub(crate) struct Metrics {
    state: Option<Gauge>,
    to_closed: Counter,
    to_open: Counter,
    to_half_open: Counter,
    rejected: Counter,
}

impl Metrics {
    /// Registers the handles for `name`. Keyed breakers share one set and have no state gauge:
    /// one series per key would let callers choose the metrics' cardinality.
    pub(crate) fn register(name: Cow<'static, str>, with_gauge: bool) -> Arc<Self> {
        let to = |state: &'static str| metrics::counter!(BREAKER_TRANSITIONS_TOTAL, LABEL_NAME => name.clone(), LABEL_STATE => state);
        Arc::new(Self {
            state: with_gauge.then(|| metrics::gauge!(BREAKER_STATE, LABEL_NAME => name.clone())),
            to_closed: to(State::Closed.as_str()),
            to_open: to(State::Open.as_str()),
            to_half_open: to(State::HalfOpen.as_str()),
            rejected: metrics::counter!(BREAKER_REJECTED_TOTAL, LABEL_NAME => name.clone()),
        })
    }
}

pub(crate) struct Shared {
    pub(crate) policy: Policy,
    pub(crate) notify: Arc<Notify>,
    pub(crate) mode: Mode,
    /// Set when a keyed registry forgets this breaker, so cached references refetch it.
    pub(crate) evicted: AtomicBool,
    watch: watch::Sender<Option<Transition>>,
    metrics: Arc<Metrics>,
    name: Cow<'static, str>,
    /// The key of a keyed breaker, for tracing.
    key: Option<String>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("mode", &self.mode)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(config: &BreakerConfig, origin: Instant) -> Self {
        let metrics = Metrics::register(config.name.clone(), true);
        if let Some(g) = &metrics.state {
            g.set(State::Closed.gauge());
        }
        Self::with_metrics(config, origin, metrics, None)
    }

    pub(crate) fn with_metrics(
        config: &BreakerConfig,
        origin: Instant,
        metrics: Arc<Metrics>,
        key: Option<String>,
    ) -> Self {
        Self {
            policy: Policy::new(config, origin),
            notify: Arc::new(Notify::new()),
            mode: config.mode,
            evicted: AtomicBool::new(false),
            watch: watch::Sender::new(None),
            metrics,
            name: config.name.clone(),
            key,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Transition>> {
        self.watch.subscribe()
    }

    /// Acts on what handing back a permit did.
    pub(crate) fn apply(&self, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::SlotFreed => self.notify.notify_waiters(),
            Effect::Transition(t) => self.publish(t),
        }
    }

    /// Announces a transition: metrics, one tracing event, subscribers and gate waiters.
    pub(crate) fn publish(&self, t: Transition) {
        if let Some(g) = &self.metrics.state {
            g.set(t.to.gauge());
        }
        match t.to {
            State::Closed => self.metrics.to_closed.increment(1),
            State::Open => self.metrics.to_open.increment(1),
            State::HalfOpen => self.metrics.to_half_open.increment(1),
        }
        let key = self.key.as_deref().unwrap_or("");
        match t.to {
            State::Open => tracing::warn!(
                name = %self.name, key, from = %t.from, to = %t.to, reason = ?t.reason,
                open_for = ?t.open_for, level = t.level, "circuit breaker opened"
            ),
            _ => tracing::info!(
                name = %self.name, key, from = %t.from, to = %t.to, reason = ?t.reason,
                level = t.level, "circuit breaker transition"
            ),
        }
        self.watch.send_replace(Some(t));
        self.notify.notify_waiters();
    }

    pub(crate) fn rejected(&self) {
        self.metrics.rejected.increment(1);
    }
}

static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's counter stripe: threads are numbered in the order they first record.
#[inline]
pub(crate) fn stripe() -> usize {
    STRIPE.with(|s| {
        let v = s.get();
        if v != usize::MAX {
            return v;
        }
        let v = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) & (usize::MAX >> 1);
        s.set(v);
        v
    })
}
