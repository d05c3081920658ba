//! The fallback hook: what to answer while the breaker is open.

use damper_core::error::{BoxError, CircuitOpen};
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tower_service::Service;

/// Answers a call the breaker refused (fail-fast mode only: in gate mode refused calls are
/// never made).
///
/// `()` is "no fallback": the call fails with [`CircuitOpen`]. [`ServiceFallback`] calls a
/// service, e.g. one serving stale or default data.
pub trait Fallback<Req, Resp> {
    /// The fallback's future.
    type Future: Future<Output = Result<Resp, BoxError>>;

    /// Answers `req`, refused because of `open`; `None` to fail with `open`.
    fn fallback(&mut self, req: Req, open: CircuitOpen) -> Option<Self::Future>;
}

impl<Req, Resp> Fallback<Req, Resp> for () {
    type Future = std::future::Ready<Result<Resp, BoxError>>;

    fn fallback(&mut self, _req: Req, _open: CircuitOpen) -> Option<Self::Future> {
        None
    }
}

/// A [`Fallback`] that sends refused calls to a service. Each refused call drives a clone of
/// the service to readiness and calls it.
#[derive(Debug, Clone)]
pub struct ServiceFallback<F>(F);

impl<F> ServiceFallback<F> {
    /// Sends refused calls to `service`.
    pub const fn new(service: F) -> Self {
        Self(service)
    }
}

impl<Req, F> Fallback<Req, F::Response> for ServiceFallback<F>
where
    F: Service<Req> + Clone,
    F::Error: Into<BoxError>,
{
    type Future = FallbackFuture<F, Req>;

    fn fallback(&mut self, req: Req, _open: CircuitOpen) -> Option<Self::Future> {
        Some(FallbackFuture {
            state: FallbackState::NotReady {
                service: self.0.clone(),
                req: Some(req),
            },
        })
    }
}

pin_project! {
    /// The future of a [`ServiceFallback`]: readiness, then the call.
    #[must_use = "futures do nothing unless polled"]
    pub struct FallbackFuture<F: Service<Req>, Req> {
        #[pin]
        state: FallbackState<F, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum FallbackState<F: Service<Req>, Req> {
        NotReady { service: F, req: Option<Req> },
        Called { #[pin] fut: F::Future },
    }
}

impl<F: Service<Req>, Req> fmt::Debug for FallbackFuture<F, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackFuture").finish_non_exhaustive()
    }
}

impl<F, Req> Future for FallbackFuture<F, Req>
where
    F: Service<Req>,
    F::Error: Into<BoxError>,
{
    type Output = Result<F::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::NotReady { service, req } => {
                    ready!(service.poll_ready(cx)).map_err(Into::into)?;
                    let req = req.take().expect("polled after completion");
                    let fut = service.call(req);
                    this.state.set(FallbackState::Called { fut });
                }
                StateProj::Called { fut } => return fut.poll(cx).map_err(Into::into),
            }
        }
    }
}
