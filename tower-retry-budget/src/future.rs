//! The [`Retry`](crate::Retry) service's future.

use crate::policy::{Decision, Stop};
use crate::replay::Replay;
use crate::service::Shared;
use damper_core::spare::SpareHandle;
use damper_core::{Budget, Classify, Deadline};
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

pin_project! {
    #[project = StateProj]
    enum State<F, T> {
        // An attempt is in flight.
        Attempt { #[pin] fut: F },
        // Waiting out a backoff; `last` is what the caller gets if the retry is not sent.
        // The timer is boxed: it exists only on the retry path, and keeping it out of line keeps
        // the future small on the (far more common) path without retries.
        Backoff { sleep: Pin<Box<Sleep>>, last: Option<T> },
    }
}

pin_project! {
    /// The response future of [`Retry`](crate::Retry): runs attempts, backoffs and the checks
    /// between them.
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct ResponseFuture<S, Req, B, C, P>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future, Result<S::Response, S::Error>>,
        // The service clone's spare copy, present while a retry is possible.
        source: Option<SpareHandle<S>>,
        // The service for retries, cloned from `source` at the first retry.
        service: Option<S>,
        // The copy of the request for the next attempt.
        request: Option<Req>,
        attempts: u32,
        deadline: Option<Deadline>,
        previous: Duration,
        shared: Arc<Shared<B, C, P>>,
    }
}

impl<S, Req, B, C, P> ResponseFuture<S, Req, B, C, P>
where
    S: Service<Req>,
{
    pub(crate) fn new(
        fut: S::Future,
        source: Option<SpareHandle<S>>,
        request: Option<Req>,
        deadline: Option<Deadline>,
        shared: Arc<Shared<B, C, P>>,
    ) -> Self {
        Self {
            state: State::Attempt { fut },
            source,
            service: None,
            request,
            attempts: 1,
            deadline,
            previous: Duration::ZERO,
            shared,
        }
    }
}

impl<S, Req, B, C, P> fmt::Debug for ResponseFuture<S, Req, B, C, P>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempts", &self.attempts)
            .field("deadline", &self.deadline)
            .field("replayable", &self.request.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, Req, B, C, P> Future for ResponseFuture<S, Req, B, C, P>
where
    S: Service<Req> + Clone,
    B: Budget,
    C: Classify<S::Response, S::Error>,
    P: Replay<Req>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Attempt { fut } => {
                    let result = ready!(fut.poll(cx));
                    let shared = &**this.shared;
                    let outcome = shared.classifier.classify(&result);
                    let now = if outcome.is_success() && !shared.deposit_clock {
                        shared.built_at
                    } else {
                        Instant::now()
                    };
                    let decision = shared.policy.decide(
                        &outcome,
                        *this.attempts,
                        this.request.is_some(),
                        *this.deadline,
                        *this.previous,
                        &shared.budget,
                        &*shared.rng,
                        now,
                    );
                    match decision {
                        Decision::Return(stop) => {
                            if stop == Stop::BudgetExhausted {
                                shared.metrics.exhausted.increment(1);
                            }
                            return Poll::Ready(result);
                        }
                        Decision::Retry(wait) => {
                            *this.previous = wait;
                            let sleep = Box::pin(tokio::time::sleep(wait));
                            this.state.set(State::Backoff {
                                sleep,
                                last: Some(result),
                            });
                        }
                    }
                }
                StateProj::Backoff { sleep, last } => {
                    ready!(sleep.as_mut().poll(cx));
                    let last = last.take().expect("a backoff always holds the last result");
                    // A retry is sent only if the service is ready right now: retries never
                    // queue behind other requests, they give up and return the last result.
                    if this.service.is_none() {
                        // Only another request's retry, cloning at this very instant, holds
                        // it: treated like a service that is not ready.
                        *this.service = this.source.as_ref().and_then(SpareHandle::try_clone);
                    }
                    let is_ready = match this.service.as_mut() {
                        Some(svc) => matches!(svc.poll_ready(cx), Poll::Ready(Ok(()))),
                        None => false,
                    };
                    let (Some(mut svc), Some(req), true) =
                        (this.service.take(), this.request.take(), is_ready)
                    else {
                        return Poll::Ready(last);
                    };
                    *this.attempts += 1;
                    let shared = &**this.shared;
                    if shared.policy.has_attempts_left(*this.attempts) {
                        *this.request = shared.replay.replay(&req);
                    }
                    shared.metrics.attempts.increment(1);
                    shared.metrics.retries.increment(1);
                    let fut = svc.call(req);
                    if this.request.is_some() {
                        *this.service = Some(svc);
                    }
                    this.state.set(State::Attempt { fut });
                }
            }
        }
    }
}
