//! Server side over gRPC: overload rejections become `RESOURCE_EXHAUSTED` with pushback.
//!
//! Put [`OverloadedAsStatusLayer`] outside the [`ShedLayer`](crate::ShedLayer) on a tonic
//! server (e.g. with `Server::builder().layer(..)`): a shed request is answered with a
//! trailers-only `RESOURCE_EXHAUSTED` response carrying `grpc-retry-pushback-ms` (the limiter's
//! hint in milliseconds), which gRPC clients and damper's retry layer honour; a queued request
//! whose deadline passed gets `DEADLINE_EXCEEDED`. Other errors pass through.
//!
//! ```
//! use std::time::Duration;
//! use tower_shed::error::Overloaded;
//! use tower_shed::grpc::overloaded_status;
//!
//! let status = overloaded_status(&Overloaded::with_retry_after(Duration::from_millis(250)));
//! assert_eq!(status.code(), tonic::Code::ResourceExhausted);
//! assert_eq!(status.metadata().get("grpc-retry-pushback-ms").unwrap(), "250");
//! ```

use damper_core::BoxError;
use damper_core::error::{DeadlineExceeded, Overloaded};
use damper_core::pushback::GRPC_RETRY_PUSHBACK_MS;
use http::Response;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tonic::Status;
use tonic::metadata::MetadataValue;
use tower_layer::Layer;
use tower_service::Service;

/// The `RESOURCE_EXHAUSTED` status for a rejection, with `grpc-retry-pushback-ms` when the
/// rejection has a hint.
pub fn overloaded_status(err: &Overloaded) -> Status {
    let mut status = Status::resource_exhausted("service overloaded");
    if let Some(after) = err.retry_after() {
        let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        status
            .metadata_mut()
            .insert(GRPC_RETRY_PUSHBACK_MS, MetadataValue::from(ms));
    }
    status
}

/// Maps the limiter's errors to gRPC statuses. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct OverloadedAsStatusLayer(());

impl OverloadedAsStatusLayer {
    /// A new layer.
    pub const fn new() -> Self {
        Self(())
    }
}

impl<S> Layer<S> for OverloadedAsStatusLayer {
    type Service = OverloadedAsStatus<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OverloadedAsStatus { inner }
    }
}

/// Maps the limiter's errors to gRPC statuses. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct OverloadedAsStatus<S> {
    inner: S,
}

impl<S> OverloadedAsStatus<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Consumes the wrapper, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req, B> Service<Req> for OverloadedAsStatus<S>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Default,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        ResponseFuture {
            inner: self.inner.call(req),
        }
    }
}

pin_project! {
    /// Response future of [`OverloadedAsStatus`].
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Default,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let res = ready!(self.project().inner.poll(cx));
        Poll::Ready(match res {
            Ok(res) => Ok(res),
            Err(e) => {
                let e: BoxError = e.into();
                if let Some(o) = e.downcast_ref::<Overloaded>() {
                    Ok(overloaded_status(o).into_http())
                } else if e.is::<DeadlineExceeded>() {
                    Ok(Status::deadline_exceeded("request deadline exceeded").into_http())
                } else {
                    Err(e)
                }
            }
        })
    }
}
