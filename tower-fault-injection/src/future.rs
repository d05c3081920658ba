//! The response future of [`Fault`](crate::Fault).

use crate::service::InFlightGuard;
use damper_core::BoxError;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Sleep, sleep};

pin_project! {
    #[project = StateProj]
    enum State<F, T> {
        Passthrough { #[pin] fut: F },
        Inner { #[pin] fut: F, delay: Option<Duration> },
        // Boxed so the common (inner) state stays small; only delayed answers pay for it.
        Delay { sleep: Pin<Box<Sleep>>, result: Option<Result<T, BoxError>> },
        Ready { result: Option<Result<T, BoxError>> },
        Hang,
    }
}

pin_project! {
    /// The response future of [`Fault`](crate::Fault): the inner answer (possibly delayed), an
    /// injected answer, or, for a hang, nothing ever.
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct ResponseFuture<F, T> {
        #[pin]
        state: State<F, T>,
        // Released on completion or drop, so a capacity cut never leaks a slot.
        guard: Option<InFlightGuard>,
    }
}

impl<F, T> std::fmt::Debug for ResponseFuture<F, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Passthrough { .. } => "passthrough",
            State::Inner { .. } => "inner",
            State::Delay { .. } => "delay",
            State::Ready { .. } => "ready",
            State::Hang => "hang",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, T> ResponseFuture<F, T> {
    /// The disabled path: the inner future, untouched.
    #[inline]
    pub(crate) fn passthrough(fut: F) -> Self {
        Self {
            state: State::Passthrough { fut },
            guard: None,
        }
    }

    pub(crate) fn inner(fut: F, delay: Option<Duration>, guard: Option<InFlightGuard>) -> Self {
        Self {
            state: State::Inner { fut, delay },
            guard,
        }
    }

    pub(crate) fn injected(result: Result<T, BoxError>, delay: Option<Duration>) -> Self {
        let state = match delay {
            Some(d) => State::Delay {
                sleep: Box::pin(sleep(d)),
                result: Some(result),
            },
            None => State::Ready {
                result: Some(result),
            },
        };
        Self { state, guard: None }
    }

    pub(crate) fn hang() -> Self {
        Self {
            state: State::Hang,
            guard: None,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Passthrough { fut } => return fut.poll(cx).map_err(Into::into),
                StateProj::Inner { fut, delay } => {
                    let result = ready!(fut.poll(cx)).map_err(Into::into);
                    match delay.take() {
                        Some(d) => this.state.set(State::Delay {
                            sleep: Box::pin(sleep(d)),
                            result: Some(result),
                        }),
                        None => {
                            this.guard.take();
                            return Poll::Ready(result);
                        }
                    }
                }
                StateProj::Delay { sleep, result } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.guard.take();
                    return Poll::Ready(result.take().expect("polled after completion"));
                }
                StateProj::Ready { result } => {
                    return Poll::Ready(result.take().expect("polled after completion"));
                }
                // Never woken: the caller's own timeout or drop ends it.
                StateProj::Hang => return Poll::Pending,
            }
        }
    }
}
