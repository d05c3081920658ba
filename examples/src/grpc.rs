//! A tonic `Channel` behind damper's gRPC client stack.
//!
//! [`ClientStack::grpc`](damper::ClientStack::grpc) works on the `http::Request`s a tonic
//! client sends. A retry or a hedge needs a second copy of the request, but a tonic request body
//! is a stream that can be read only once. [`DampedChannel`] therefore reads the (unary) request
//! body into memory first, so the stack sees an `http::Request<Full<Bytes>>` it can copy, and
//! hands a fresh body to the channel for every attempt.
//!
//! gRPC calls are all `POST`s, so HTTP's idempotency rules say nothing about them: which methods
//! may be sent twice is the service's contract. [`idempotent_method`] lists them for the `Echo`
//! service; the stack replays and hedges only those.
//!
//! Errors the stack raises locally become the gRPC status a caller expects: a passed deadline
//! is `DEADLINE_EXCEEDED`; an open breaker, a full client limit or an empty budget is
//! `UNAVAILABLE` (the call was not sent).

use bytes::Bytes;
use damper_core::BoxError;
use damper_core::error::{BudgetExhausted, CircuitOpen, DeadlineExceeded, Overloaded, find};
use http_body_util::{BodyExt, Full};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::transport::Channel;
use tower::util::{BoxCloneSyncService, MapRequest};
use tower::{Layer, Service, ServiceExt};

/// A request whose body has been read into memory, so a retry or hedge can copy it.
pub type BufferedRequest = http::Request<Full<Bytes>>;

/// The channel at the bottom of the stack: each attempt gets its own copy of the body.
pub type Transport = MapRequest<Channel, fn(BufferedRequest) -> http::Request<Body>>;

/// The `Echo` methods that are safe to send twice.
pub const IDEMPOTENT_METHODS: &[&str] = &["/damper.echo.Echo/Say"];

/// Whether `req` calls a method listed in [`IDEMPOTENT_METHODS`].
pub fn idempotent_method(req: &BufferedRequest) -> bool {
    IDEMPOTENT_METHODS.contains(&req.uri().path())
}

fn to_tonic_body(req: BufferedRequest) -> http::Request<Body> {
    req.map(Body::new)
}

/// The gRPC status for an error the client stack raised itself; other errors pass through.
pub fn local_status(err: BoxError) -> BoxError {
    if err.is::<tonic::Status>() {
        return err;
    }
    let status = if find::<DeadlineExceeded>(&*err).is_some() {
        tonic::Status::deadline_exceeded(err.to_string())
    } else if find::<CircuitOpen>(&*err).is_some()
        || find::<Overloaded>(&*err).is_some()
        || find::<BudgetExhausted>(&*err).is_some()
    {
        tonic::Status::unavailable(err.to_string())
    } else {
        return err;
    };
    Box::new(status)
}

/// A tonic `Channel` behind a client stack; use it as the transport of a generated client.
#[derive(Clone, Debug)]
pub struct DampedChannel {
    inner: BoxCloneSyncService<BufferedRequest, http::Response<Body>, BoxError>,
}

impl DampedChannel {
    /// Puts `stack` (e.g. a built [`ClientStack::grpc`](damper::ClientStack::grpc)) around
    /// `channel`.
    pub fn new<L>(channel: Channel, stack: &L) -> Self
    where
        L: Layer<Transport>,
        L::Service: Service<BufferedRequest, Response = http::Response<Body>>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<BufferedRequest>>::Error: Into<BoxError>,
        <L::Service as Service<BufferedRequest>>::Future: Send + 'static,
    {
        let transport = MapRequest::new(
            channel,
            to_tonic_body as fn(BufferedRequest) -> http::Request<Body>,
        );
        let svc = stack
            .layer(transport)
            .map_err(|e: <L::Service as Service<BufferedRequest>>::Error| local_status(e.into()));
        Self {
            inner: BoxCloneSyncService::new(svc),
        }
    }
}

impl Service<http::Request<Body>> for DampedChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is checked per call, once the body is read (`oneshot` below): holding
        // the stack's readiness while a body is still arriving would reserve capacity for it.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await?.to_bytes();
            inner
                .oneshot(http::Request::from_parts(parts, Full::new(bytes)))
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn code(err: BoxError) -> Option<tonic::Code> {
        local_status(err)
            .downcast_ref::<tonic::Status>()
            .map(tonic::Status::code)
    }

    #[test]
    fn local_errors_become_the_status_a_grpc_caller_expects() {
        assert_eq!(
            code(Box::new(DeadlineExceeded::new())),
            Some(tonic::Code::DeadlineExceeded)
        );
        for err in [
            Box::new(CircuitOpen::new(Duration::from_secs(1))) as BoxError,
            Box::new(Overloaded::new()),
            Box::new(BudgetExhausted::new()),
        ] {
            assert_eq!(code(err), Some(tonic::Code::Unavailable));
        }
        // A server's status and transport errors are left alone.
        assert_eq!(
            code(Box::new(tonic::Status::resource_exhausted("busy"))),
            Some(tonic::Code::ResourceExhausted)
        );
        assert_eq!(code("connection reset".into()), None);
    }

    #[test]
    fn only_listed_methods_are_replayed() {
        let say = http::Request::post("http://x/damper.echo.Echo/Say")
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert!(idempotent_method(&say));
        let other = http::Request::post("http://x/damper.echo.Echo/Write")
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert!(!idempotent_method(&other));
    }
}
