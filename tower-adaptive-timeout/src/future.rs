//! Response futures.

use crate::policy::Attempt;
use crate::service::Shared;
use damper_core::BoxError;
use damper_core::error::{DeadlineExceeded, Elapsed};
use metrics::Counter;
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, Sleep, sleep_until};

pin_project! {
    /// The response future of [`AdaptiveTimeout`](crate::AdaptiveTimeout).
    ///
    /// Resolves to the inner response, to [`Elapsed`] if the attempt outlived its adaptive
    /// timeout, or to [`DeadlineExceeded`] if the request's deadline passed first (or had
    /// passed before the call).
    ///
    /// # When the timeout starts
    /// For an attempt that is sampled or has a deadline, at the call. For the others (above
    /// `max_samples_per_sec`, most attempts) at the first poll that finds the inner future
    /// pending: the service reads no clock for them at the call, which is most of what a
    /// request costs it. A response future is normally polled as soon as it is returned; one
    /// left unpolled has its timer start late by that gap, and one ready on its first poll
    /// never reads the clock at all.
    ///
    /// # Cancel safety
    /// Dropping it drops the inner future; the policy learns nothing from a dropped attempt (its
    /// latency is unknown).
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct ResponseFuture<F> {
        // `None` if the call never reached the inner service, and once the attempt has failed
        // (it is abandoned: dropped at once).
        #[pin]
        inner: Option<F>,
        // tokio's `Sleep` registers with the timer only when first polled (or reset), so
        // creating it at the call costs a handle clone and no clock read.
        #[pin]
        sleep: Option<Sleep>,
        // `Some(timeout)`: the attempt's start was not read at the call; the sleep is reset to
        // end `timeout` after the first poll that finds `inner` pending.
        arm: Option<Duration>,
        state: State,
    }
}

/// `Running` while `inner` and `sleep` are `Some`.
enum State {
    Running {
        attempt: Attempt,
        observer: Observer,
    },
    Failed(Failure),
}

/// Who hears about the attempt's outcome.
enum Observer {
    /// A sampled attempt, started at `start`: the policy learns from it.
    Policy { shared: Arc<Shared>, start: Instant },
    /// Not sampled: only its metric counts it if its timer fires (`Elapsed`, or
    /// `DeadlineExceeded` if the deadline bounds the attempt). No reference count is taken
    /// unless a metrics recorder is installed.
    Metric(Counter),
}

#[derive(Debug, Clone, Copy)]
enum Failure {
    Elapsed(Duration),
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
    /// An attempt that started at `start`, or, if `start` is `None` (an unsampled attempt
    /// without a deadline, for which the clock was not read), whose timer starts at the first
    /// poll that finds `inner` pending.
    #[inline]
    pub(crate) fn new(
        inner: F,
        start: Option<Instant>,
        attempt: Attempt,
        shared: &Arc<Shared>,
    ) -> Self {
        let (observer, at, arm) = match start {
            Some(start) if attempt.sampled() => (
                Observer::Policy {
                    shared: shared.clone(),
                    start,
                },
                start + attempt.timeout(),
                None,
            ),
            Some(start) => (
                Observer::Metric(shared.counter_for(&attempt).clone()),
                start + attempt.timeout(),
                None,
            ),
            // Any instant will do: the sleep is reset before it is first polled.
            None => (
                Observer::Metric(shared.counter_for(&attempt).clone()),
                shared.policy.origin(),
                Some(attempt.timeout()),
            ),
        };
        Self {
            sleep: Some(sleep_until(at)),
            inner: Some(inner),
            arm,
            state: State::Running { attempt, observer },
        }
    }

    pub(crate) fn expired() -> Self {
        Self {
            inner: None,
            sleep: None,
            arm: None,
            state: State::Failed(Failure::Deadline),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ResponseFuture");
        match &self.state {
            State::Running { attempt, observer } => {
                d.field("attempt", attempt);
                if let Observer::Policy { start, .. } = observer {
                    d.field("start", start);
                }
            }
            State::Failed(error) => {
                d.field("failed", error);
            }
        }
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
        let (attempt, observer) = match &*this.state {
            State::Failed(error) => return Poll::Ready(Err(error.into_error())),
            State::Running { attempt, observer } => (attempt, observer),
        };
        if let Some(inner) = this.inner.as_mut().as_pin_mut()
            && let Poll::Ready(result) = inner.poll(cx)
        {
            if let (Ok(_), Observer::Policy { shared, start }) = (&result, observer) {
                let now = Instant::now();
                shared.on_success(now.saturating_duration_since(*start), now);
            }
            return Poll::Ready(result.map_err(Into::into));
        }
        if let Some(mut sleep) = this.sleep.as_mut().as_pin_mut() {
            if let Some(timeout) = this.arm.take() {
                // The timeout is at most a day (the configured ceiling): no overflow.
                sleep.as_mut().reset(Instant::now() + timeout);
            }
            ready!(sleep.poll(cx));
        }
        match observer {
            Observer::Metric(counter) => counter.increment(1),
            Observer::Policy { shared, .. } if attempt.limited_by_deadline() => {
                shared.on_deadline_exceeded();
            }
            // The timer fired at exactly this instant: no need to read the clock.
            Observer::Policy { shared, start } => {
                shared.on_timeout(attempt, *start + attempt.timeout());
            }
        }
        let failure = if attempt.limited_by_deadline() {
            Failure::Deadline
        } else {
            Failure::Elapsed(attempt.timeout())
        };
        // Drop the inner future and the timer now (the attempt is abandoned) and keep the error
        // in case we are polled again.
        this.inner.set(None);
        this.sleep.set(None);
        *this.state = State::Failed(failure);
        Poll::Ready(Err(failure.into_error()))
    }
}
