//! Server side over HTTP: overload rejections become `503 Service Unavailable` responses.
//!
//! Put [`OverloadedAsResponseLayer`] outside the [`ShedLayer`](crate::ShedLayer): a shed
//! request is answered with a 503 carrying `Retry-After` (the limiter's hint, rounded up to
//! whole seconds as the header requires) and `grpc-retry-pushback-ms` (the same hint to the
//! millisecond, which damper's HTTP classifier prefers), and a queued request whose deadline passed gets a
//! `504 Gateway Timeout`. Other errors pass through.
//!
//! ```
//! use http::{Request, Response, StatusCode};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use tower_shed::http::OverloadedAsResponseLayer;
//! use tower_shed::limit::Fixed;
//! use tower_shed::ShedLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (_release, block) = tokio::sync::oneshot::channel::<()>();
//! let block = std::sync::Arc::new(tokio::sync::Mutex::new(Some(block)));
//! let mut svc = ServiceBuilder::new()
//!     .layer(OverloadedAsResponseLayer::new())
//!     .layer(ShedLayer::new(Fixed::new(1).unwrap()))
//!     .service_fn(move |_req: Request<()>| {
//!         let block = block.clone();
//!         async move {
//!             // The first request holds its permit until `_release` is dropped.
//!             if let Some(rx) = block.lock().await.take() {
//!                 let _ = rx.await;
//!             }
//!             Ok::<_, std::convert::Infallible>(Response::new(String::new()))
//!         }
//!     });
//!
//! let first = svc.ready().await.unwrap().call(Request::new(()));
//! let first = tokio::spawn(first);
//! tokio::task::yield_now().await;
//! let second = svc.ready().await.unwrap().call(Request::new(())).await.unwrap();
//! assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
//! assert!(second.headers().contains_key(http::header::RETRY_AFTER));
//! # drop(_release);
//! # first.await.unwrap().unwrap();
//! # }
//! ```

use damper_core::BoxError;
use damper_core::error::{DeadlineExceeded, Overloaded};
use damper_core::pushback::{GRPC_RETRY_PUSHBACK_MS, pushback_millis, retry_after_secs};
use http::{HeaderValue, Response, StatusCode, header};
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tower_layer::Layer;
use tower_service::Service;

/// The `503 Service Unavailable` response for a rejection: `Retry-After` is the hint in whole
/// seconds, rounded up and saturating at `u64::MAX`, and `grpc-retry-pushback-ms` the same
/// hint in milliseconds, rounded up (a 20 ms hint is not stretched to a second for clients
/// that read it). Both are absent if the rejection has no hint.
pub fn overloaded_response<B: Default>(err: &Overloaded) -> Response<B> {
    let mut res = Response::new(B::default());
    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    if let Some(after) = err.retry_after() {
        let headers = res.headers_mut();
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs(after)),
        );
        headers.insert(
            GRPC_RETRY_PUSHBACK_MS,
            HeaderValue::from(pushback_millis(after)),
        );
    }
    res
}

/// How a server answers the limiter's rejections instead of failing: implemented by
/// [`Http503`] here and by `grpc::GrpcStatus` (feature `grpc`).
pub trait RejectionResponse {
    /// The response for `err`, or `None` to pass the error through.
    fn response<B: Default>(err: &BoxError) -> Option<Response<B>>;
}

/// `503` with `Retry-After` for [`Overloaded`], `504` for [`DeadlineExceeded`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Http503;

impl RejectionResponse for Http503 {
    fn response<B: Default>(err: &BoxError) -> Option<Response<B>> {
        if let Some(o) = err.downcast_ref::<Overloaded>() {
            Some(overloaded_response(o))
        } else if err.is::<DeadlineExceeded>() {
            let mut res = Response::new(B::default());
            *res.status_mut() = StatusCode::GATEWAY_TIMEOUT;
            Some(res)
        } else {
            None
        }
    }
}

/// Maps the limiter's errors to HTTP responses. See the [module docs](self).
pub type OverloadedAsResponseLayer = RespondLayer<Http503>;
/// Maps the limiter's errors to HTTP responses. See the [module docs](self).
pub type OverloadedAsResponse<S> = Respond<S, Http503>;

/// Answers rejections with the responses `M` makes. See [`OverloadedAsResponseLayer`].
pub struct RespondLayer<M> {
    _mapper: PhantomData<fn() -> M>,
}

impl<M> RespondLayer<M> {
    /// A new layer.
    pub const fn new() -> Self {
        Self {
            _mapper: PhantomData,
        }
    }
}

impl<M> Default for RespondLayer<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M> Clone for RespondLayer<M> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<M> fmt::Debug for RespondLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RespondLayer")
    }
}

impl<S, M> Layer<S> for RespondLayer<M> {
    type Service = Respond<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        Respond {
            inner,
            _mapper: PhantomData,
        }
    }
}

/// Answers rejections with the responses `M` makes. See [`OverloadedAsResponseLayer`].
pub struct Respond<S, M> {
    inner: S,
    _mapper: PhantomData<fn() -> M>,
}

impl<S: Clone, M> Clone for Respond<S, M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            _mapper: PhantomData,
        }
    }
}

impl<S: fmt::Debug, M> fmt::Debug for Respond<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Respond")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, M> Respond<S, M> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Consumes the wrapper, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, M, Req, B> Service<Req> for Respond<S, M>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: Into<BoxError>,
    M: RejectionResponse,
    B: Default,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, M>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        ResponseFuture {
            inner: self.inner.call(req),
            _mapper: PhantomData,
        }
    }
}

pin_project! {
    /// Response future of [`Respond`].
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct ResponseFuture<F, M> {
        #[pin]
        inner: F,
        _mapper: PhantomData<fn() -> M>,
    }
}

impl<F, M> fmt::Debug for ResponseFuture<F, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<F, M, B, E> Future for ResponseFuture<F, M>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    M: RejectionResponse,
    B: Default,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let res = ready!(self.project().inner.poll(cx));
        Poll::Ready(res.or_else(|e| {
            let e: BoxError = e.into();
            M::response(&e).ok_or(e)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn retry_after_rounds_up_to_seconds() {
        let res: Response<()> =
            overloaded_response(&Overloaded::with_retry_after(Duration::from_millis(1200)));
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");
        assert_eq!(res.headers()[GRPC_RETRY_PUSHBACK_MS], "1200");
        let res: Response<()> =
            overloaded_response(&Overloaded::with_retry_after(Duration::from_millis(20)));
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
        assert_eq!(res.headers()[GRPC_RETRY_PUSHBACK_MS], "20");
        let res: Response<()> =
            overloaded_response(&Overloaded::with_retry_after(Duration::from_secs(3)));
        assert_eq!(res.headers()[header::RETRY_AFTER], "3");
        let res: Response<()> = overloaded_response(&Overloaded::new());
        assert!(!res.headers().contains_key(header::RETRY_AFTER));
        assert!(!res.headers().contains_key(GRPC_RETRY_PUSHBACK_MS));
    }

    #[test]
    fn retry_after_of_duration_max_saturates() {
        // Regression: rounding Duration::MAX up overflowed (a panic in debug, `0` in release).
        let res: Response<()> = overloaded_response(&Overloaded::with_retry_after(Duration::MAX));
        assert_eq!(
            res.headers()[header::RETRY_AFTER],
            u64::MAX.to_string().as_str()
        );
    }
}
