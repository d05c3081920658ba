//! The breaker's response future.

use crate::policy::Permit;
use crate::shared::{Shared, stripe};
use damper_core::classify::{Classify, Failure, FailureKind, Outcome};
use damper_core::error::{BoxError, CircuitOpen};
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::time::Instant;

/// What one service clone shares with its futures: the breaker and the classifier.
///
/// Every clone of a [`Breaker`](crate::Breaker) owns its own `Local`, so the reference count a
/// future bumps is touched only by that clone's calls, not by every thread using the breaker.
/// It is aligned to its own cache lines, so that clones created together and used from
/// different threads do not share one.
#[repr(align(128))]
pub(crate) struct Local<C> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) classifier: C,
}

/// How an abandoned call counts when the breaker's `abandoned_fails` is on: as a timeout.
const ABANDONED: Outcome = Outcome::Failure(Failure::retryable(FailureKind::Timeout));

/// A permit on its way back to the policy. Dropping it unreported (the response future or a
/// service holding a reservation was dropped) counts as neither success nor failure and frees a
/// probe slot — except that a call that was made counts as a timeout when the breaker's
/// `abandoned_fails` is on.
pub(crate) struct Guard<C> {
    local: Arc<Local<C>>,
    /// `None` once reported.
    permit: Option<Permit>,
}

impl<C> Guard<C> {
    pub(crate) fn new(local: Arc<Local<C>>, permit: Permit) -> Self {
        Self {
            local,
            permit: Some(permit),
        }
    }

    /// Marks the call as made, stamping the start time if the policy detects slow calls.
    #[inline]
    pub(crate) fn start(mut self) -> Self {
        let policy = &self.local.shared.policy;
        self.permit = if policy.times_calls() {
            self.permit.map(|p| policy.stamp(p, Instant::now()))
        } else {
            self.permit.map(Permit::called)
        };
        self
    }

    #[inline]
    fn complete<T, E>(&mut self, result: &Result<T, E>)
    where
        C: Classify<T, E>,
    {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let outcome = self.local.classifier.classify(result);
        let shared = &self.local.shared;
        if outcome.is_healthy() && shared.policy.on_healthy(permit) {
            return;
        }
        let effect = shared
            .policy
            .on_outcome(permit, &outcome, Instant::now(), stripe());
        shared.apply(effect);
    }
}

impl<C> Drop for Guard<C> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            let shared = &self.local.shared;
            let policy = &shared.policy;
            let effect = if permit.was_called() && policy.abandoned_fails() {
                policy.on_outcome(permit, &ABANDONED, Instant::now(), stripe())
            } else {
                policy.on_drop(permit, stripe())
            };
            shared.apply(effect);
        }
    }
}

impl<C> fmt::Debug for Guard<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("permit", &self.permit)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The response future of [`Breaker`](crate::Breaker).
    ///
    /// # Cancel safety
    /// Dropping it before it completes reports nothing about the dependency: the call counts
    /// as neither a success nor a failure, and a half-open probe frees its slot.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F, B, C> {
        #[pin]
        kind: Kind<F, B, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, C> {
        Called { #[pin] fut: F, guard: Guard<C> },
        Fallback { #[pin] fut: B },
        Rejected { err: Option<CircuitOpen> },
    }
}

impl<F, B, C> ResponseFuture<F, B, C> {
    pub(crate) fn called(fut: F, guard: Guard<C>) -> Self {
        Self {
            kind: Kind::Called { fut, guard },
        }
    }

    pub(crate) fn fallback(fut: B) -> Self {
        Self {
            kind: Kind::Fallback { fut },
        }
    }

    pub(crate) fn rejected(err: CircuitOpen) -> Self {
        Self {
            kind: Kind::Rejected { err: Some(err) },
        }
    }
}

impl<F, B, C> fmt::Debug for ResponseFuture<F, B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Called { .. } => "called",
            Kind::Fallback { .. } => "fallback",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl<F, B, C, T, E> Future for ResponseFuture<F, B, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    B: Future<Output = Result<T, BoxError>>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Called { fut, guard } => {
                let result = ready!(fut.poll(cx));
                guard.complete(&result);
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Fallback { fut } => fut.poll(cx),
            KindProj::Rejected { err } => {
                let err = err.take().expect("polled after completion");
                Poll::Ready(Err(Box::new(err)))
            }
        }
    }
}
