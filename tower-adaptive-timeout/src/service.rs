use crate::future::ResponseFuture;
use crate::policy::{AdaptivePolicy, Attempt, Decision};
use damper_core::BoxError;
use damper_core::deadline::HasDeadline;
use damper_core::metrics as m;
use metrics::{Counter, Gauge};
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower_service::Service;

/// What every clone of a layer and its services share: the policy and the metric handles.
pub(crate) struct Shared {
    pub(crate) policy: AdaptivePolicy,
    pub(crate) name: String,
    current: Gauge,
    elapsed: Counter,
    deadline_exceeded: Counter,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(policy: AdaptivePolicy, name: String) -> Self {
        let label = [(m::LABEL_NAME, name.clone())];
        let current = metrics::gauge!(m::TIMEOUT_CURRENT_SECONDS, &label);
        current.set(policy.state().effective.as_secs_f64());
        Self {
            elapsed: metrics::counter!(m::TIMEOUT_ELAPSED_TOTAL, &label),
            deadline_exceeded: metrics::counter!(m::DEADLINE_EXCEEDED_TOTAL, &label),
            current,
            policy,
            name,
        }
    }

    pub(crate) fn on_success(&self, latency: Duration, now: Instant) {
        self.policy.on_success(latency, now);
    }

    pub(crate) fn on_timeout(&self, attempt: &Attempt, now: Instant) {
        self.elapsed.increment(1);
        if let Some(raised) = self.policy.on_timeout(attempt, now) {
            tracing::debug!(
                name = %self.name,
                timeout = ?raised,
                "consecutive timeouts: adaptive timeout backed off"
            );
            self.current.set(raised.as_secs_f64());
        }
    }

    /// The counter an attempt's timer increments when it fires.
    pub(crate) fn counter_for(&self, attempt: &Attempt) -> &Counter {
        if attempt.limited_by_deadline() {
            &self.deadline_exceeded
        } else {
            &self.elapsed
        }
    }

    pub(crate) fn on_deadline_exceeded(&self) {
        self.deadline_exceeded.increment(1);
    }
}

/// Applies an adaptive, deadline-aware timeout to each request. See the
/// [crate docs](crate) for an example.
///
/// Built by [`AdaptiveTimeoutLayer`](crate::AdaptiveTimeoutLayer). Clones share the policy.
pub struct AdaptiveTimeout<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for AdaptiveTimeout<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for AdaptiveTimeout<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveTimeout")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S> AdaptiveTimeout<S> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The policy this service shares with its layer.
    pub fn policy(&self) -> &AdaptivePolicy {
        &self.shared.policy
    }

    inner_accessors!();
}

impl<S, Req> Service<Req> for AdaptiveTimeout<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Req: HasDeadline,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let policy = &self.shared.policy;
        let deadline = req.deadline();
        let sampled = policy.draw_sample();
        // Nothing to measure and no deadline to cut: no clock read (see `ResponseFuture`'s
        // "When the timeout starts").
        let start = (sampled || deadline.is_some()).then(Instant::now);
        let attempt = match start {
            None => policy.unsampled(),
            Some(now) => match policy.decide_drawn(now, deadline, sampled) {
                Decision::Expired => {
                    self.shared.on_deadline_exceeded();
                    return ResponseFuture::expired();
                }
                Decision::Attempt(attempt) => {
                    if attempt.refreshed() {
                        self.shared.current.set(attempt.adaptive().as_secs_f64());
                    }
                    attempt
                }
            },
        };
        ResponseFuture::new(self.inner.call(req), start, attempt, &self.shared)
    }
}
