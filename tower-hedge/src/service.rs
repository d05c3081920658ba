use crate::HedgeHandle;
use crate::eligible::Eligible;
use crate::future::{Armed, ResponseFuture};
use crate::policy::HedgePolicy;
use damper_core::spare::Spare;
use damper_core::{Classify, HasDeadline};
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::Instant;
use tower_service::Service;

/// What every service built by one [`HedgeLayer`](crate::HedgeLayer) shares.
///
/// Aligned to a cache line so that, inside its `Arc`, the reference count (written by every
/// request on every thread) does not share a line with the fields read per request.
#[repr(align(128))]
pub(crate) struct Shared<E, C> {
    pub(crate) policy: Arc<HedgePolicy>,
    pub(crate) eligible: E,
    pub(crate) classify: C,
}

impl<E: Clone, C: Clone> Shared<E, C> {
    /// A copy for one more service: the policy stays shared; the reference count the
    /// service's futures bump is the copy's own.
    pub(crate) fn fork(&self) -> Arc<Self> {
        Arc::new(Self {
            policy: self.policy.clone(),
            eligible: self.eligible.clone(),
            classify: self.classify.clone(),
        })
    }
}

/// Sends a hedge — a second copy of a request — when the first attempt is slower than a
/// latency quantile, within a budget. See the [crate docs](crate) for an example and the
/// rules.
///
/// Clones share the layer's policy: histogram, budget and counters.
///
/// # Clones and threads
/// Every request's future holds a reference to this service's state, and an armed request a
/// way to reach the inner service later. Both are reference counts owned by *this clone*: each
/// clone gets its own (one allocation per clone, none per request), so clones used on
/// different threads never write a shared reference count per request. Clone the service per
/// connection or per task, as tower services usually are. A hedge clones the inner service
/// only when it is sent, from a copy this clone keeps for that purpose.
pub struct Hedge<S, E, C> {
    inner: S,
    shared: Arc<Shared<E, C>>,
    /// The copy of the inner service that hedges are cloned from.
    spare: Spare<S>,
}

impl<S, E, C> Hedge<S, E, C> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<E, C>>) -> Self {
        Self {
            inner,
            shared,
            spare: Spare::new(),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// A handle to the counters and current delay.
    pub fn handle(&self) -> HedgeHandle {
        HedgeHandle::new(self.shared.policy.clone())
    }
}

impl<S: Clone, E: Clone, C: Clone> Clone for Hedge<S, E, C> {
    fn clone(&self) -> Self {
        // Own reference counts per clone (see the type's docs); the policy stays shared.
        Self {
            inner: self.inner.clone(),
            shared: self.shared.fork(),
            spare: Spare::new(),
        }
    }
}

impl<S: fmt::Debug, E, C> fmt::Debug for Hedge<S, E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("inner", &self.inner)
            .field("policy", &self.shared.policy)
            .finish()
    }
}

impl<S, Req, E, C> Service<Req> for Hedge<S, E, C>
where
    S: Service<Req> + Clone,
    Req: HasDeadline,
    E: Eligible<Req>,
    C: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, E, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let now = Instant::now();
        let policy = &*self.shared.policy;
        let armed = policy.on_request(now).and_then(|delay| {
            let deadline = req.deadline();
            if !policy.fits(now, deadline, delay) {
                return None;
            }
            let at = now.checked_add(delay)?;
            // The only clone of the request: made when it is eligible and a hedge could be
            // sent, because the original is moved into the first attempt.
            let spare = self.shared.eligible.hedge_copy(&req)?;
            let source = self.spare.handle(&self.inner);
            Some(Armed {
                // The service is cloned (and polled for readiness) only when the hedge is due.
                source,
                svc: None,
                spare,
                at,
                delay,
                recheck: policy.recheck().then_some(delay),
                left: policy.max_hedges(),
                deadline,
            })
        });
        let fut = self.inner.call(req);
        ResponseFuture::new(fut, now, armed, self.shared.clone())
    }
}
