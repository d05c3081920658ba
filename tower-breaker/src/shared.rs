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
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
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

/// The endpoints of one keyed registry, for failing open before gating empties the pool (see
/// [`BreakerConfigBuilder::max_ejected`](crate::config::BreakerConfigBuilder::max_ejected)).
#[derive(Debug)]
pub(crate) struct Pool {
    /// Live members.
    members: AtomicUsize,
    /// Members not closed.
    ejected: AtomicUsize,
    max_ejected: f64,
}

impl Pool {
    pub(crate) fn new(max_ejected: f64) -> Self {
        Self {
            members: AtomicUsize::new(0),
            ejected: AtomicUsize::new(0),
            max_ejected,
        }
    }

    /// Whether more members are ejected than the pool allows: then every gate opens.
    pub(crate) fn panicking(&self) -> bool {
        let members = self.members.load(Ordering::Relaxed);
        let allowed = (self.max_ejected * members as f64).floor() as usize;
        self.ejected.load(Ordering::Relaxed) > allowed
    }
}

/// One breaker's membership of a [`Pool`].
#[derive(Debug)]
struct Member {
    pool: Arc<Pool>,
    /// `CLOSED`, `EJECTED` or `LEFT` (evicted from the registry: no longer counted).
    state: AtomicU8,
}

const CLOSED: u8 = 0;
const EJECTED: u8 = 1;
const LEFT: u8 = 2;

impl Member {
    /// Counts the breaker as ejected (`true`) or not, once per change.
    fn set(&self, ejected: bool) {
        let want = if ejected { EJECTED } else { CLOSED };
        let mut cur = self.state.load(Ordering::Relaxed);
        while cur != LEFT && cur != want {
            match self
                .state
                .compare_exchange(cur, want, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    if ejected {
                        self.pool.ejected.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.pool.ejected.fetch_sub(1, Ordering::Relaxed);
                    }
                    return;
                }
                Err(actual) => cur = actual,
            }
        }
    }

    fn leave(&self) {
        if self.state.swap(LEFT, Ordering::AcqRel) == EJECTED {
            self.pool.ejected.fetch_sub(1, Ordering::Relaxed);
        }
        self.pool.members.fetch_sub(1, Ordering::Relaxed);
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
    /// The pool of a keyed breaker.
    member: Option<Member>,
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
            member: None,
        }
    }

    /// Makes this breaker a member of `pool` (a keyed registry's endpoints).
    pub(crate) fn join(mut self, pool: &Arc<Pool>) -> Self {
        pool.members.fetch_add(1, Ordering::Relaxed);
        self.member = Some(Member {
            pool: pool.clone(),
            state: AtomicU8::new(CLOSED),
        });
        self
    }

    /// Leaves the pool (the registry evicted this breaker).
    pub(crate) fn leave_pool(&self) {
        if let Some(m) = &self.member {
            m.leave();
        }
    }

    /// Whether a gate should let calls through although this breaker refuses them: its pool
    /// has more members ejected than it allows.
    pub(crate) fn fails_open(&self) -> bool {
        self.member.as_ref().is_some_and(|m| m.pool.panicking())
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
        if let Some(m) = &self.member {
            m.set(t.to != State::Closed);
            if m.pool.panicking() {
                tracing::debug!(name = %self.name, "pool mostly ejected: gates fail open");
            }
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
