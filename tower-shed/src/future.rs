//! The limiter's response future.

use crate::limiter::{Grant, Limiter, Permit};
use damper_core::BoxError;
use damper_core::classify::{FailureKind, Outcome, classify_error};
use damper_core::error::{DeadlineExceeded, Overloaded};
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

pin_project! {
    /// Response future of [`Shed`](crate::Shed).
    ///
    /// Holds the request's permit: it is returned when the inner future completes, fails or is
    /// dropped. A queued request waits here for a permit first.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future at any point returns its permit (or leaves the queue) at once.
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        Running {
            #[pin]
            fut: S::Future,
            permit: Option<Permit>,
        },
        Queued {
            wait: Pin<Box<Waiting<S, Req>>>,
        },
        Failed {
            err: Option<BoxError>,
        },
    }
}

pin_project! {
    struct Waiting<S, Req> {
        rx: oneshot::Receiver<Grant>,
        #[pin]
        sleep: Sleep,
        deadline_bound: bool,
        limiter: Arc<Limiter>,
        partition: usize,
        call: Option<(S, Req)>,
    }
}

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    #[inline]
    pub(crate) fn running(fut: S::Future, permit: Permit) -> Self {
        Self {
            state: State::Running {
                fut,
                permit: Some(permit),
            },
        }
    }

    pub(crate) fn failed(err: BoxError) -> Self {
        Self {
            state: State::Failed { err: Some(err) },
        }
    }

    /// A request waiting in the queue until `until` (`deadline_bound`: the request's deadline
    /// comes before the queue's maximum wait).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn queued(
        rx: oneshot::Receiver<Grant>,
        until: Instant,
        deadline_bound: bool,
        limiter: Arc<Limiter>,
        partition: usize,
        svc: S,
        req: Req,
    ) -> Self {
        Self {
            state: State::Queued {
                wait: Box::pin(Waiting {
                    rx,
                    sleep: tokio::time::sleep_until(until),
                    deadline_bound,
                    limiter,
                    partition,
                    call: Some((svc, req)),
                }),
            },
        }
    }
}

/// How a finished request feeds the limit: a success is a sample, a timeout or an overload
/// answer is a drop, other failures (fast errors would drag the RTT down) are ignored.
fn sample_outcome<T>(res: &Result<T, BoxError>) -> Option<bool> {
    match res {
        Ok(_) => Some(false),
        Err(e) => match classify_error(&**e) {
            Outcome::Failure(f)
                if matches!(f.kind, FailureKind::Timeout | FailureKind::Overload) =>
            {
                Some(true)
            }
            _ => None,
        },
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Running { fut, permit } => {
                    let res = ready!(fut.poll(cx)).map_err(Into::into);
                    if let Some(mut p) = permit.take() {
                        // Measured requests report every outcome; the others only drops.
                        if p.sampled() || res.is_err() {
                            p.finish(sample_outcome(&res));
                        }
                    }
                    return Poll::Ready(res);
                }
                StateProj::Queued { wait } => {
                    let w = wait.as_mut().project();
                    let grant = match Pin::new(&mut *w.rx).poll(cx) {
                        Poll::Ready(Ok(grant)) => grant,
                        Poll::Ready(Err(_)) => Grant::Shed(w.limiter.reject(*w.partition)),
                        Poll::Pending => {
                            ready!(w.sleep.poll(cx));
                            // Waited as long as allowed: leave the queue. A permit granted in
                            // the meantime is returned when the receiver is dropped.
                            w.rx.close();
                            let grant = match w.rx.try_recv() {
                                Ok(grant) => grant,
                                Err(_) if *w.deadline_bound => Grant::Expired,
                                Err(_) => Grant::Shed(w.limiter.reject(*w.partition)),
                            };
                            w.limiter.purge();
                            grant
                        }
                    };
                    match grant {
                        Grant::Admitted(permit) => {
                            let Some((mut svc, req)) = w.call.take() else {
                                return Poll::Ready(Err(Overloaded::new().into()));
                            };
                            let fut = svc.call(req);
                            this.state.set(State::Running {
                                fut,
                                permit: Some(permit),
                            });
                        }
                        Grant::Shed(e) => return Poll::Ready(Err(e.into())),
                        Grant::Expired => return Poll::Ready(Err(DeadlineExceeded::new().into())),
                    }
                }
                StateProj::Failed { err } => {
                    let err = err.take().unwrap_or_else(|| Overloaded::new().into());
                    return Poll::Ready(Err(err));
                }
            }
        }
    }
}

impl<S, Req> fmt::Debug for ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Running { .. } => "running",
            State::Queued { .. } => "queued",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
