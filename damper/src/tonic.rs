//! A damped tonic channel: [`ClientStack::build_tonic`] puts the gRPC client stack around a
//! `tonic::transport::Channel` (or any service of `http::Request<tonic::body::Body>`), and the
//! [`Channel`] it returns is what generated clients take: `GreeterClient::new(channel)`.
//!
//! ```
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), damper::BoxError> {
//! // Nothing listens on port 9; `connect_lazy` connects on the first call.
//! let transport = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
//! let channel = damper::ClientStack::grpc()
//!     .name("greeter")
//!     .deadline(Duration::from_secs(2))
//!     .build_tonic(transport)?;
//! // let mut client = GreeterClient::new(channel.clone());
//! # let _ = channel;
//! # Ok(())
//! # }
//! ```
//!
//! # Bodies
//! A retry or a hedge sends a request twice, but a tonic request body is a stream. The channel
//! reads what the body has ready when the call starts, up to [`MAX_BUFFER`] bytes: a unary call
//! (or a client stream whose messages are all there) is then held in memory and can be copied.
//! A body that is larger, or still waiting for messages (a live client or bidirectional
//! stream), is sent once as it comes, and is never retried or hedged.
//!
//! # Which calls are sent twice
//! gRPC calls are all `POST`s, so the preset retries and hedges only calls that carry an
//! `idempotency-key` metadata entry. A service that knows its idempotent methods says so with
//! [`ClientStack::replay`] and [`ClientStack::eligible`], e.g. with a
//! [`ReplayIf`](tower_retry_budget::ReplayIf) over the request path. The request type they see is
//! [`Request`].
//!
//! # Errors
//! Errors raised inside the stack reach the caller as the `tonic::Status` a gRPC client expects
//! ([`status_for`]): a passed deadline or attempt timeout is `DEADLINE_EXCEEDED`; an open
//! breaker, a full client limit or an exhausted budget is `UNAVAILABLE` (the call was not sent,
//! so it is safe to try elsewhere). The server's own statuses and transport errors pass through.

use crate::body::{InMemory, ReplayBody, SentBody};
use crate::client::{ClientHandles, ClientService, ClientStack};
use crate::config::ConfigError;
use bytes::{Bytes, BytesMut};
use damper_core::BoxError;
use damper_core::classify::GrpcClassifier;
use damper_core::error::{BudgetExhausted, CircuitOpen, DeadlineExceeded, Elapsed, Overloaded};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;
use tower_layer::Layer;
use tower_service::Service;

/// The most bytes of a request body the channel holds in memory for replay: 64 KiB, the
/// presets' replay cap. Larger bodies are streamed and sent once.
pub const MAX_BUFFER: usize = tower_retry_budget::replay::DEFAULT_MAX_BODY as usize;

/// A request body inside the stack; see [`ReplayBody`].
pub type Body = ReplayBody<tonic::body::Body>;

/// A request as the stack's policies (replay, hedge eligibility) see it.
pub type Request = http::Request<Body>;

type Inner = BoxCloneSyncService<Request, http::Response<tonic::body::Body>, BoxError>;

impl<R, E> ClientStack<GrpcClassifier, R, E> {
    /// Builds the stack around `transport` (a `tonic::transport::Channel`): a [`Channel`] for
    /// generated clients. See the [module docs](crate::tonic).
    ///
    /// # Errors
    /// The configuration is invalid (see [`ClientStack::build`]).
    pub fn build_tonic<T>(self, transport: T) -> Result<Channel, ConfigError>
    where
        T: Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>
            + Clone
            + Send
            + Sync
            + 'static,
        T::Error: Into<BoxError>,
        T::Future: Send + 'static,
        R: Clone,
        E: Clone,
        ClientService<Transport<T>, GrpcClassifier, R, InMemory<E>>: Service<Request, Response = http::Response<tonic::body::Body>>
            + Clone
            + Send
            + Sync
            + 'static,
        <ClientService<Transport<T>, GrpcClassifier, R, InMemory<E>> as Service<Request>>::Error:
            Into<BoxError>,
        <ClientService<Transport<T>, GrpcClassifier, R, InMemory<E>> as Service<Request>>::Future:
            Send + 'static,
    {
        let layer = self.map_eligible(InMemory).build()?;
        let handles = layer.handles().clone();
        let svc = layer
            .layer(Transport(transport))
            .map_err(|e| status_for(e.into()));
        Ok(Channel {
            inner: BoxCloneSyncService::new(svc),
            handles,
        })
    }
}

/// The gRPC client stack around a tonic transport, for generated clients; built by
/// [`ClientStack::build_tonic`].
///
/// Cloning it is cheap and shares the stack (budget, breaker, latency histogram), as clones
/// of a tonic `Channel` share its connection.
#[derive(Clone)]
pub struct Channel {
    inner: Inner,
    handles: ClientHandles,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel").finish_non_exhaustive()
    }
}

impl Channel {
    /// Handles on the stack's budget and breaker, for metrics and tests.
    pub fn handles(&self) -> &ClientHandles {
        &self.handles
    }
}

impl Service<http::Request<tonic::body::Body>> for Channel {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let (parts, body) = req.into_parts();
        match buffer(body, MAX_BUFFER) {
            Ok(body) => self.inner.call(http::Request::from_parts(parts, body)),
            Err(status) => Box::pin(std::future::ready(Err(Box::new(status) as BoxError))),
        }
    }
}

/// Reads the frames `body` has ready now, up to `cap` bytes. A body that ends within them is
/// held in memory; otherwise the frames read so far go first and the rest streams.
fn buffer(mut body: tonic::body::Body, cap: usize) -> Result<Body, tonic::Status> {
    use http_body::Body as _;
    let mut cx = Context::from_waker(Waker::noop());
    let mut head: VecDeque<http_body::Frame<Bytes>> = VecDeque::new();
    let mut len = 0;
    loop {
        if len > cap {
            break;
        }
        // A noop waker is enough: a frame that is not ready ends the buffering, and the
        // transport polls the rest with its own waker.
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(None) => {
                let mut bytes = BytesMut::with_capacity(len);
                for frame in head {
                    if let Ok(data) = http_body::Frame::into_data(frame) {
                        bytes.extend_from_slice(&data);
                    }
                }
                return Ok(Body::from_bytes(bytes.freeze()));
            }
            Poll::Ready(Some(Ok(frame))) => {
                let is_data = frame.is_data();
                if let Some(data) = frame.data_ref() {
                    len += data.len();
                }
                head.push_back(frame);
                if !is_data {
                    // Request trailers are rare; keep them, as a stream.
                    break;
                }
            }
            Poll::Ready(Some(Err(status))) => return Err(status),
            Poll::Pending => break,
        }
    }
    Ok(Body::streaming(tonic::body::Body::new(Prefixed {
        head,
        rest: body,
    })))
}

/// Frames read while buffering, then the rest of the body.
struct Prefixed {
    head: VecDeque<http_body::Frame<Bytes>>,
    rest: tonic::body::Body,
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        match self.head.pop_front() {
            Some(frame) => Poll::Ready(Some(Ok(frame))),
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.rest.is_end_stream()
    }
}

/// The bottom of the stack: each attempt hands the transport a tonic body again.
#[derive(Clone, Debug)]
pub struct Transport<T>(T);

impl<T> Service<Request> for Transport<T>
where
    T: Service<http::Request<tonic::body::Body>>,
{
    type Response = T::Response;
    type Error = T::Error;
    type Future = T::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), T::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> T::Future {
        let (parts, body) = req.into_parts();
        let body = match body.into_sent() {
            SentBody::Bytes(b) => tonic::body::Body::new(ReplayBody::<()>::from_bytes(b)),
            // The stack never copies a stream, so the one attempt that gets here has it.
            SentBody::Stream(s) => s.unwrap_or_default(),
        };
        self.0.call(http::Request::from_parts(parts, body))
    }
}

/// The `tonic::Status` for an error the client stack raised itself: `DEADLINE_EXCEEDED` for a
/// passed deadline or attempt timeout (also when the tonic transport's timer for the
/// propagated `grpc-timeout` ends the call, which tonic alone reports as `CANCELLED`), `UNAVAILABLE` for a call the stack refused to send
/// (open breaker, full limit, exhausted budget). Other errors (a server's status, a transport
/// error) are returned as they are; tonic's generated clients turn them into a status.
///
/// ```
/// use damper::core::error::CircuitOpen;
/// use std::time::Duration;
///
/// let err = damper::tonic::status_for(Box::new(CircuitOpen::new(Duration::from_secs(1))));
/// let status = err.downcast_ref::<tonic::Status>().unwrap();
/// assert_eq!(status.code(), tonic::Code::Unavailable);
/// ```
pub fn status_for(err: BoxError) -> BoxError {
    use damper_core::error::find;
    // `TimeoutExpired` is the tonic transport's own timer for the `grpc-timeout` the stack
    // sends: the same deadline, ending the call a moment before the stack's timer would.
    if err.is::<tonic::Status>() {
        return err;
    }
    let status = if let Some(e) = find::<DeadlineExceeded>(&*err) {
        tonic::Status::deadline_exceeded(e.to_string())
    } else if let Some(e) = find::<Elapsed>(&*err) {
        tonic::Status::deadline_exceeded(e.to_string())
    } else if find::<tonic::TimeoutExpired>(&*err).is_some() {
        tonic::Status::deadline_exceeded("deadline exceeded (the transport's grpc-timeout timer)")
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn code(err: BoxError) -> Option<tonic::Code> {
        status_for(err)
            .downcast_ref::<tonic::Status>()
            .map(tonic::Status::code)
    }

    #[test]
    fn local_errors_become_the_status_a_grpc_caller_expects() {
        assert_eq!(
            code(Box::new(DeadlineExceeded::new())),
            Some(tonic::Code::DeadlineExceeded)
        );
        assert_eq!(
            code(Box::new(tonic::TimeoutExpired(()))),
            Some(tonic::Code::DeadlineExceeded),
            "tonic's own timer for the propagated grpc-timeout"
        );
        for err in [
            Box::new(CircuitOpen::new(Duration::from_secs(1))) as BoxError,
            Box::new(Overloaded::new()),
            Box::new(BudgetExhausted::new()),
        ] {
            assert_eq!(code(err), Some(tonic::Code::Unavailable));
        }
        assert_eq!(
            code(Box::new(tonic::Status::resource_exhausted("busy"))),
            Some(tonic::Code::ResourceExhausted),
            "a server's status is kept"
        );
        assert_eq!(
            code("connection reset".into()),
            None,
            "transport errors pass"
        );
    }

    fn body_of(chunks: &[&'static [u8]], then_pending: bool) -> tonic::body::Body {
        struct Chunks(VecDeque<Bytes>, bool);
        impl http_body::Body for Chunks {
            type Data = Bytes;
            type Error = tonic::Status;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
                match self.0.pop_front() {
                    Some(b) => Poll::Ready(Some(Ok(http_body::Frame::data(b)))),
                    None if self.1 => Poll::Pending,
                    None => Poll::Ready(None),
                }
            }
        }
        tonic::body::Body::new(Chunks(
            chunks.iter().map(|c| Bytes::from_static(c)).collect(),
            then_pending,
        ))
    }

    #[test]
    fn a_body_that_is_all_there_is_held_in_memory() {
        let body = buffer(body_of(&[b"ab", b"cd"], false), 16).unwrap();
        assert!(body.is_in_memory());
        assert!(matches!(body.into_sent(), SentBody::Bytes(b) if b == "abcd"));
    }

    #[tokio::test]
    async fn a_waiting_or_large_body_streams_and_loses_nothing() {
        use http_body_util::BodyExt;
        // Still waiting for a message: a live client stream.
        let body = buffer(body_of(&[b"ab"], true), 16).unwrap();
        assert!(!body.is_in_memory());
        let SentBody::Stream(Some(mut rest)) = body.into_sent() else {
            panic!("a stream");
        };
        let first = rest.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "ab", "the frame read while buffering is sent first");

        // Over the cap: streamed, every byte kept in order.
        let body = buffer(body_of(&[b"abc", b"def", b"g"], false), 4).unwrap();
        assert!(!body.is_in_memory());
        let SentBody::Stream(Some(rest)) = body.into_sent() else {
            panic!("a stream");
        };
        assert_eq!(rest.collect().await.unwrap().to_bytes(), "abcdefg");
    }
}
