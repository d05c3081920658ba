//! Response futures.

use crate::policy::Attempt;
use crate::service::Shared;
use crate::timer::Timer;
use damper_core::BoxError;
use damper_core::error::{DeadlineExceeded, Elapsed};
use metrics::Counter;
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::time::Instant;

pin_project! {
    /// The response future of [`AdaptiveTimeout`](crate::AdaptiveTimeout).
    ///
    /// Resolves to the inner response, to [`Elapsed`] if the attempt outlived its adaptive
    /// timeout, or to [`DeadlineExceeded`] if the request's deadline passed first (or had
    /// passed before the call).
    ///
    /// # Cancel safety
    /// Dropping it drops the inner future; the policy learns nothing from a dropped attempt (its
    /// latency is unknown).
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Running {
            #[pin]
            inner: F,
            #[pin]
            timer: Timer,
            start: Instant,
            attempt: Attempt,
            observer: Observer,
        },
        Failed { error: Failure },
    }
}

/// Who hears about the attempt's outcome.
enum Observer {
    /// A sampled attempt: the policy learns from it.
    Policy(Arc<Shared>),
    /// Not sampled: only its metric counts it if its timer fires (`Elapsed`, or
    /// `DeadlineExceeded` if the deadline bounds the attempt). No reference count is taken
    /// unless a metrics recorder is installed.
    Metric(Counter),
}

#[derive(Debug, Clone, Copy)]
enum Failure {
    Elapsed(std::time::Duration),
    Deadline,
}

impl Failure {
    fn into_error(self) -> BoxError {
        match self {
            Failure::Elapsed(t) => Box::new(Elapsed::new(t)),
            Failure::Deadline => Box::new(DeadlineExceeded::new()),
        }
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn new(inner: F, start: Instant, attempt: Attempt, shared: &Arc<Shared>) -> Self {
        let observer = if attempt.sampled() {
            Observer::Policy(shared.clone())
        } else {
            Observer::Metric(shared.counter_for(&attempt).clone())
        };
        Self {
            state: State::Running {
                inner,
                timer: Timer::Idle {
                    at: start + attempt.timeout(),
                },
                start,
                attempt,
                observer,
            },
        }
    }

    pub(crate) fn expired() -> Self {
        Self {
            state: State::Failed {
                error: Failure::Deadline,
            },
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ResponseFuture");
        match &self.state {
            State::Running { start, attempt, .. } => {
                d.field("start", start).field("attempt", attempt)
            }
            State::Failed { error } => d.field("failed", error),
        };
        d.finish_non_exhaustive()
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let failure = match this.state.as_mut().project() {
            StateProj::Failed { error } => return Poll::Ready(Err(error.into_error())),
            StateProj::Running {
                inner,
                timer,
                start,
                attempt,
                observer,
            } => {
                if let Poll::Ready(result) = inner.poll(cx) {
                    if let (Ok(_), Observer::Policy(shared)) = (&result, &*observer) {
                        let now = Instant::now();
                        shared.on_success(now.saturating_duration_since(*start), now);
                    }
                    return Poll::Ready(result.map_err(Into::into));
                }
                ready!(timer.poll_fire(cx));
                match observer {
                    Observer::Metric(counter) => counter.increment(1),
                    Observer::Policy(shared) if attempt.limited_by_deadline() => {
                        shared.on_deadline_exceeded();
                    }
                    // The timer fired at exactly this instant: no need to read the clock.
                    Observer::Policy(shared) => {
                        shared.on_timeout(attempt, *start + attempt.timeout());
                    }
                }
                if attempt.limited_by_deadline() {
                    Failure::Deadline
                } else {
                    Failure::Elapsed(attempt.timeout())
                }
            }
        };
        // Drop the inner future now (the attempt is abandoned) and keep the error in case we
        // are polled again.
        this.state.set(State::Failed { error: failure });
        Poll::Ready(Err(failure.into_error()))
    }
}
