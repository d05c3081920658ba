//! A layer that may be switched off: the stacks' way to make every layer optional without
//! boxing.

use damper_core::BoxError;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// Applies `L` when it is `Some`, and passes requests straight through when it is `None`.
///
/// Unlike tower's `Option<L>` layer, both branches' errors are converted to [`BoxError`], so the
/// inner service's error type need not match the layer's.
#[derive(Debug, Clone)]
pub struct Optional<L>(pub Option<L>);

impl<L, S> Layer<S> for Optional<L>
where
    L: Layer<S>,
{
    type Service = Maybe<L::Service, S>;

    fn layer(&self, inner: S) -> Self::Service {
        match &self.0 {
            Some(l) => Maybe::On(l.layer(inner)),
            None => Maybe::Off(inner),
        }
    }
}

/// The service an [`Optional`] layer builds: the layered service, or the inner one as is.
#[derive(Debug, Clone)]
pub enum Maybe<A, B> {
    /// The layer is on.
    On(A),
    /// The layer is off.
    Off(B),
}

impl<A, B, Req> Service<Req> for Maybe<A, B>
where
    A: Service<Req>,
    B: Service<Req, Response = A::Response>,
    A::Error: Into<BoxError>,
    B::Error: Into<BoxError>,
{
    type Response = A::Response;
    type Error = BoxError;
    type Future = MaybeFuture<A::Future, B::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Maybe::On(a) => a.poll_ready(cx).map_err(Into::into),
            Maybe::Off(b) => b.poll_ready(cx).map_err(Into::into),
        }
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match self {
            Maybe::On(a) => MaybeFuture {
                inner: Branch::On { fut: a.call(req) },
            },
            Maybe::Off(b) => MaybeFuture {
                inner: Branch::Off { fut: b.call(req) },
            },
        }
    }
}

pin_project! {
    /// The response future of [`Maybe`].
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    #[derive(Debug)]
    pub struct MaybeFuture<A, B> {
        #[pin]
        inner: Branch<A, B>,
    }
}

pin_project! {
    #[project = BranchProj]
    #[derive(Debug)]
    enum Branch<A, B> {
        On { #[pin] fut: A },
        Off { #[pin] fut: B },
    }
}

impl<A, B, T, EA, EB> Future for MaybeFuture<A, B>
where
    A: Future<Output = Result<T, EA>>,
    B: Future<Output = Result<T, EB>>,
    EA: Into<BoxError>,
    EB: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.project() {
            BranchProj::On { fut } => fut.poll(cx).map_err(Into::into),
            BranchProj::Off { fut } => fut.poll(cx).map_err(Into::into),
        }
    }
}
