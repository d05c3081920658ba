//! Shared pieces of the damper examples and their real-socket tests.
//!
//! - [`proto`]: the `Echo` gRPC service, compiled by `build.rs` with a vendored `protoc`, and
//!   [`echo`], its implementation;
//! - [`net`]: loopback listeners on ephemeral ports, and serving axum/tonic on them;
//! - [`reqwest_service`]: a `reqwest::Client` as a `tower::Service<http::Request<String>>`, for
//!   stacking the client layers by hand at the `http::Request` level (most users want
//!   [`ClientStack::build_reqwest`](damper::ClientStack::build_reqwest) instead, which keeps
//!   reqwest's own API);
//!
//! Run the examples with `cargo run -p damper-examples --example NAME` (`axum-server`,
//! `reqwest-client`, `tonic`, `e2e-brownout`).
//!
//! An axum server behind [`ServerStack::http`](damper::ServerStack::http) and reqwest behind
//! [`ClientStack::http`](damper::ClientStack::http), over loopback:
//!
//! ```
//! use std::time::Duration;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), damper::BoxError> {
//! // `infallible()`: errors the stack does not answer itself (it answers 503 and 504) become a
//! // 500, so the stack goes straight into `Router::layer`.
//! let app = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "hello" }))
//!     .layer(damper::ServerStack::http().name("doc-server").build()?.infallible());
//! let (listener, addr) = damper_examples::net::listen().await?;
//! let server = damper_examples::net::spawn_axum(listener, app);
//!
//! let client = damper::ClientStack::http()
//!     .name("doc-client")
//!     .deadline(Duration::from_secs(2))
//!     // The server is damper's too: tell it the time left, as `grpc-timeout`.
//!     .propagate_deadline(true)
//!     .build_reqwest(reqwest::Client::new())?;
//! let res = client.get(format!("http://{addr}/")).send().await?;
//! assert_eq!(res.status(), http::StatusCode::OK);
//! # server.abort();
//! # Ok(())
//! # }
//! ```

pub mod echo;

/// The workspace README's snippets, compiled and run as doctests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The `damper.echo` protobuf package: the `Echo` service, its client and its server.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    tonic::include_proto!("damper.echo");
}

pub mod net {
    //! Loopback listeners on ephemeral ports.
    //!
    //! A listener is bound (and so ready to accept) before the server task is spawned: a
    //! client may connect as soon as these functions return, with no sleep to wait for the
    //! server to "come up".

    use std::net::SocketAddr;
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    /// Binds `127.0.0.1:0` and returns the listener with the port the OS chose.
    pub async fn listen() -> std::io::Result<(TcpListener, SocketAddr)> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        Ok((listener, addr))
    }

    /// Serves `app` on `listener` in a background task.
    pub fn spawn_axum(listener: TcpListener, app: axum::Router) -> JoinHandle<()> {
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("axum server stopped: {e}");
            }
        })
    }

    /// Serves a tonic router on `listener` in a background task.
    pub fn spawn_tonic<F>(
        listener: TcpListener,
        serve: impl FnOnce(tokio_incoming::Incoming) -> F,
    ) -> JoinHandle<()>
    where
        F: std::future::Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
    {
        let incoming = tokio_incoming::Incoming::new(listener);
        let fut = serve(incoming);
        tokio::spawn(async move {
            if let Err(e) = fut.await {
                eprintln!("tonic server stopped: {e}");
            }
        })
    }

    pub mod tokio_incoming {
        //! A `TcpListener` as the stream of connections tonic's `serve_with_incoming` takes.

        use futures_util::Stream;
        use std::pin::Pin;
        use std::task::{Context, Poll};
        use tokio::net::{TcpListener, TcpStream};

        /// Accepted connections of a bound listener, with `TCP_NODELAY` set.
        #[derive(Debug)]
        pub struct Incoming {
            listener: TcpListener,
        }

        impl Incoming {
            /// Streams the connections `listener` accepts.
            pub fn new(listener: TcpListener) -> Self {
                Self { listener }
            }
        }

        impl Stream for Incoming {
            type Item = std::io::Result<TcpStream>;

            fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
                match self.listener.poll_accept(cx) {
                    Poll::Ready(Ok((stream, _))) => {
                        let _ = stream.set_nodelay(true);
                        Poll::Ready(Some(Ok(stream)))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

/// A `reqwest::Client` as a `tower::Service` over `http::Request<String>`.
///
/// This is the low-level way, for composing layers by hand; `damper`'s feature `reqwest`
/// ([`ClientStack::build_reqwest`](damper::ClientStack::build_reqwest)) wraps reqwest with the
/// whole stack and keeps its builder API.
///
/// `reqwest::Client` is itself a `Service<reqwest::Request>`, but a `reqwest::Request` cannot
/// carry a damper [`Deadline`](damper_core::Deadline) (damper-core implements
/// [`HasDeadline`](damper_core::HasDeadline) for `http` and `tonic` requests only), and the
/// deadline, hedge, shed and adaptive-timeout layers need one. Speaking `http::Request` at the
/// top and converting at the bottom lets every layer of the client stack wrap reqwest, and a
/// `String` body is cheap to keep for a retry or a hedge.
pub fn reqwest_service(
    client: reqwest::Client,
) -> impl tower::Service<
    http::Request<String>,
    Response = http::Response<reqwest::Body>,
    Error = damper_core::BoxError,
    Future = impl std::future::Future<
        Output = Result<http::Response<reqwest::Body>, damper_core::BoxError>,
    > + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |req: http::Request<String>| {
        let client = client.clone();
        async move {
            let req = reqwest::Request::try_from(req)?;
            let res = client.execute(req).await?;
            Ok::<_, damper_core::BoxError>(http::Response::from(res))
        }
    })
}

/// Counts HTTP statuses: `(status, count)` pairs, sorted by status.
pub fn count_statuses(statuses: impl IntoIterator<Item = u16>) -> Vec<(u16, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for s in statuses {
        *counts.entry(s).or_insert(0) += 1;
    }
    counts.into_iter().collect()
}
