//! Setting, propagating and enforcing a logical request's overall deadline.
//!
//! [`DeadlineLayer`] sits at the top of a client stack (outside retries and hedges, so its
//! deadline spans every attempt) or at the entrance of a server. For each request it:
//!
//! 1. works out the deadline: the earliest of the deadline the request already carries (a
//!    [`damper_core::Deadline`] extension), `now + timeout` if the layer has one, and, when the
//!    layer accepts it, `now +` the incoming `grpc-timeout` header clamped to a maximum (never
//!    trust a caller to set an unbounded deadline). A deadline is only ever shortened;
//! 2. fails the request at once with [`DeadlineExceeded`] if that deadline has passed, without
//!    calling the inner service;
//! 3. stores the deadline on the request, where the retry, hedge and adaptive-timeout layers
//!    below read it, and writes the remaining time as `grpc-timeout` for the next hop;
//! 4. fails the response with [`DeadlineExceeded`] when the deadline passes first.
//!
//! Headers are read and written through [`DeadlineHeaders`], implemented for `http::Request`
//! (feature `http`; gRPC clients and servers built on tonic see `http::Request`s at the tower
//! level) and, as "no headers", for the plain types tests use.
//!
//! ```
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_adaptive_timeout::{AdaptiveTimeoutLayer, DeadlineLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_adaptive_timeout::BoxError> {
//! let client = ServiceBuilder::new()
//!     // The whole logical request, every attempt included, gets 2 s.
//!     .layer(DeadlineLayer::builder().timeout(Duration::from_secs(2)).build()?)
//!     .layer(AdaptiveTimeoutLayer::new())
//!     .service_fn(|req: &'static str| async move { Ok::<_, std::convert::Infallible>(req.len()) });
//!
//! assert_eq!(client.oneshot("hello").await?, 5);
//! # Ok(())
//! # }
//! ```

use crate::error::ConfigError;
use damper_core::BoxError;
use damper_core::deadline::{Deadline as RequestDeadline, HasDeadline, grpc_timeout};
use damper_core::error::DeadlineExceeded;
use damper_core::metrics as m;
use metrics::Counter;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

/// Request types whose `grpc-timeout` header [`DeadlineLayer`] can read and write.
///
/// Both methods default to "no headers", so a request type that only carries a deadline
/// implements it with an empty block: `impl DeadlineHeaders for MyRequest {}`.
pub trait DeadlineHeaders: HasDeadline {
    /// The raw value of the incoming `grpc-timeout` header, if any.
    fn grpc_timeout(&self) -> Option<&[u8]> {
        None
    }

    /// Sets the outgoing `grpc-timeout` header to `remaining` (encode it with
    /// [`grpc_timeout::encode`]), replacing any previous value.
    fn set_grpc_timeout(&mut self, remaining: Duration) {
        let _ = remaining;
    }
}

macro_rules! no_headers {
    ($($t:ty),* $(,)?) => {$( impl DeadlineHeaders for $t {} )*};
}

no_headers!(
    (),
    bool,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    char,
    String,
    &'static str,
    Vec<u8>,
);

#[cfg(feature = "http")]
impl<B> DeadlineHeaders for http::Request<B> {
    fn grpc_timeout(&self) -> Option<&[u8]> {
        self.headers()
            .get(grpc_timeout::HEADER)
            .map(http::HeaderValue::as_bytes)
    }

    fn set_grpc_timeout(&mut self, remaining: Duration) {
        if let Ok(v) = http::HeaderValue::try_from(grpc_timeout::encode(remaining)) {
            self.headers_mut()
                .insert(http::HeaderName::from_static(grpc_timeout::HEADER), v);
        }
    }
}

/// The pure part: the deadline of a request arriving at `now`.
///
/// The earliest of `existing`, `now + timeout` and `now + incoming` (a raw `grpc-timeout`
/// value, clamped to `max_incoming`; ignored if malformed or if `max_incoming` is `None`).
pub fn resolve(
    now: Instant,
    existing: Option<RequestDeadline>,
    timeout: Option<Duration>,
    incoming: Option<&[u8]>,
    max_incoming: Option<Duration>,
) -> Option<RequestDeadline> {
    let from_header = max_incoming.and_then(|max| {
        let raw = incoming?;
        grpc_timeout::decode_clamped(raw, max)
            .ok()
            .map(|d| RequestDeadline::after(now, d))
    });
    let from_timeout = timeout.map(|t| RequestDeadline::after(now, t));
    [existing, from_timeout, from_header]
        .into_iter()
        .flatten()
        .reduce(RequestDeadline::min)
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Settings {
    timeout: Option<Duration>,
    max_incoming: Option<Duration>,
    propagate: bool,
}

struct Inner {
    settings: Settings,
    exceeded: Counter,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineLayer")
            .field("timeout", &self.settings.timeout)
            .field("max_incoming", &self.settings.max_incoming)
            .field("propagate", &self.settings.propagate)
            .finish()
    }
}

/// Sets, propagates and enforces a logical request's deadline. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct DeadlineLayer {
    inner: Arc<Inner>,
}

impl DeadlineLayer {
    /// A builder: no timeout of its own, incoming `grpc-timeout` ignored, propagation on.
    pub fn builder() -> DeadlineBuilder {
        DeadlineBuilder::default()
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            shared: self.inner.clone(),
        }
    }
}

/// Builds a [`DeadlineLayer`].
#[derive(Debug, Clone)]
#[must_use]
pub struct DeadlineBuilder {
    settings: Settings,
    name: Option<String>,
}

impl Default for DeadlineBuilder {
    fn default() -> Self {
        Self {
            settings: Settings {
                timeout: None,
                max_incoming: None,
                propagate: true,
            },
            name: None,
        }
    }
}

impl DeadlineBuilder {
    /// Every request gets at most `timeout` from the moment it enters the layer (a shorter
    /// deadline it already carries is kept). Must be greater than zero.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = Some(timeout);
        self
    }

    /// Honour an incoming `grpc-timeout` header (on a server), clamped to `max`. Malformed
    /// values are ignored. Must be greater than zero.
    pub fn accept_grpc_timeout(mut self, max: Duration) -> Self {
        self.settings.max_incoming = Some(max);
        self
    }

    /// Write the remaining time as `grpc-timeout` on each request passed on. Default `true`.
    pub fn propagate(mut self, propagate: bool) -> Self {
        self.settings.propagate = propagate;
        self
    }

    /// The value of the `name` label on this layer's metrics. Default `"default"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Validates the settings and builds the layer, registering its metrics.
    pub fn build(self) -> Result<DeadlineLayer, ConfigError> {
        if self.settings.timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::new("timeout", "must be greater than zero"));
        }
        if self.settings.max_incoming.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::new(
                "accept_grpc_timeout",
                "must be greater than zero",
            ));
        }
        let name = self.name.unwrap_or_else(|| "default".to_owned());
        let exceeded = metrics::counter!(m::DEADLINE_EXCEEDED_TOTAL, m::LABEL_NAME => name);
        Ok(DeadlineLayer {
            inner: Arc::new(Inner {
                settings: self.settings,
                exceeded,
            }),
        })
    }
}

/// Sets, propagates and enforces a request's deadline; built by [`DeadlineLayer`].
///
/// Not to be confused with [`damper_core::Deadline`], the point in time it stores on requests.
pub struct Deadline<S> {
    inner: S,
    shared: Arc<Inner>,
}

impl<S: Clone> Clone for Deadline<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Deadline<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deadline")
            .field("inner", &self.inner)
            .field("layer", &self.shared)
            .finish()
    }
}

impl<S> Deadline<S> {
    inner_accessors!();
}

impl<S, Req> Service<Req> for Deadline<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Req: DeadlineHeaders,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = future::ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, mut req: Req) -> Self::Future {
        let s = self.shared.settings;
        let now = Instant::now();
        let incoming = if s.max_incoming.is_some() {
            req.grpc_timeout()
        } else {
            None
        };
        let deadline = resolve(now, req.deadline(), s.timeout, incoming, s.max_incoming);
        let Some(deadline) = deadline else {
            return future::ResponseFuture::unbounded(self.inner.call(req));
        };
        if deadline.is_expired(now) {
            self.shared.exceeded.increment(1);
            return future::ResponseFuture::expired();
        }
        req.set_deadline(deadline);
        if s.propagate {
            req.set_grpc_timeout(deadline.remaining(now));
        }
        future::ResponseFuture::new(
            self.inner.call(req),
            deadline.instant(),
            &self.shared.exceeded,
        )
    }
}

/// Writes the time left before a request's deadline as `grpc-timeout`, at the moment each
/// request passes: the layer for the bottom of a client stack.
///
/// [`DeadlineLayer`] writes the header once, when the logical request enters it. Below it,
/// retries and hedges send copies of that request later, and a copy would tell the server the
/// time that was left at the start: a retry sent 1.5 s into a 2 s deadline would say "2 s
/// left". Put this layer below the retry and hedge layers (and turn the `DeadlineLayer`'s
/// own [`propagate`](DeadlineBuilder::propagate) off) and every attempt says what is left
/// when it is sent. Requests without a deadline pass untouched.
///
/// ```
/// use damper_core::deadline::{Deadline, HasDeadline};
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_adaptive_timeout::{DeadlineHeaders, DeadlineLayer, PropagateDeadlineLayer};
///
/// // A request type that carries a deadline and a `grpc-timeout` (as `http::Request` does
/// // with feature `http`).
/// #[derive(Default)]
/// struct Req {
///     deadline: Option<Deadline>,
///     grpc_timeout: Option<Duration>,
/// }
/// impl HasDeadline for Req {
///     fn deadline(&self) -> Option<Deadline> {
///         self.deadline
///     }
///     fn set_deadline(&mut self, deadline: Deadline) -> bool {
///         self.deadline = Some(deadline);
///         true
///     }
/// }
/// impl DeadlineHeaders for Req {
///     fn set_grpc_timeout(&mut self, remaining: Duration) {
///         self.grpc_timeout = Some(remaining);
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), tower_adaptive_timeout::BoxError> {
/// let client = ServiceBuilder::new()
///     .layer(DeadlineLayer::builder().timeout(Duration::from_secs(2)).propagate(false).build()?)
///     // ... retries and hedges here: each attempt passes the layer below when it is sent ...
///     .layer(PropagateDeadlineLayer::new())
///     .service_fn(|req: Req| async move { Ok::<_, std::convert::Infallible>(req.grpc_timeout) });
/// assert_eq!(client.oneshot(Req::default()).await?, Some(Duration::from_secs(2)));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct PropagateDeadlineLayer {
    on: bool,
}

impl Default for PropagateDeadlineLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl PropagateDeadlineLayer {
    /// The layer.
    pub const fn new() -> Self {
        Self { on: true }
    }

    /// The layer if `on`, otherwise one whose services pass every request untouched. A stack
    /// that may or may not propagate keeps one service type either way (no `Either` level).
    pub const fn enabled(on: bool) -> Self {
        Self { on }
    }
}

impl<S> Layer<S> for PropagateDeadlineLayer {
    type Service = PropagateDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PropagateDeadline { inner, on: self.on }
    }
}

/// Writes the time left before each request's deadline as `grpc-timeout`; built by
/// [`PropagateDeadlineLayer`].
#[derive(Debug, Clone)]
pub struct PropagateDeadline<S> {
    inner: S,
    on: bool,
}

impl<S> PropagateDeadline<S> {
    inner_accessors!();
}

impl<S, Req> Service<Req> for PropagateDeadline<S>
where
    S: Service<Req>,
    Req: DeadlineHeaders,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, mut req: Req) -> Self::Future {
        if self.on
            && let Some(deadline) = req.deadline()
        {
            req.set_grpc_timeout(deadline.remaining(Instant::now()));
        }
        self.inner.call(req)
    }
}

pub mod future {
    //! The response future of [`Deadline`].

    use super::*;
    use pin_project_lite::pin_project;
    use std::future::Future;
    use std::mem::ManuallyDrop;
    use std::pin::Pin;
    use std::task::ready;
    use tokio::time::{Sleep, sleep_until};

    pin_project! {
        /// The response future of [`Deadline`]: the inner response, or
        /// [`DeadlineExceeded`] once the deadline passes.
        ///
        /// # Cancel safety
        /// Dropping it drops the inner future.
        #[must_use = "futures do nothing unless you `.await` or poll them"]
        pub struct ResponseFuture<F> {
            #[pin]
            inner: Option<F>,
            // Built at the call (tokio registers it only when first polled), which lets it be
            // built in place; `None` without a deadline.
            #[pin]
            sleep: Option<Sleep>,
            exceeded: Option<Counter>,
        }
    }

    impl<F> ResponseFuture<F> {
        /// A call bounded by a deadline at `at`.
        #[inline(always)]
        pub(super) fn new(inner: F, at: Instant, exceeded: &Counter) -> Self {
            // Nothing to drop if building the sleep unwinds (only outside a runtime; the
            // counter's reference count then leaks): that lets the sleep be built in place.
            let exceeded = ManuallyDrop::new(exceeded.clone());
            Self {
                sleep: Some(sleep_until(at)),
                inner: Some(inner),
                exceeded: Some(ManuallyDrop::into_inner(exceeded)),
            }
        }

        /// A call without a deadline: the inner response, unbounded.
        #[inline(always)]
        pub(super) fn unbounded(inner: F) -> Self {
            Self {
                inner: Some(inner),
                sleep: None,
                exceeded: None,
            }
        }

        pub(super) fn expired() -> Self {
            Self {
                inner: None,
                sleep: None,
                exceeded: None,
            }
        }
    }

    impl<F> fmt::Debug for ResponseFuture<F> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ResponseFuture")
                .field("expired", &self.inner.is_none())
                .finish_non_exhaustive()
        }
    }

    impl<F, T, E> Future for ResponseFuture<F>
    where
        F: Future<Output = Result<T, E>>,
        E: Into<BoxError>,
    {
        type Output = Result<T, BoxError>;

        #[inline(always)]
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let mut this = self.project();
            let Some(inner) = this.inner.as_mut().as_pin_mut() else {
                return Poll::Ready(Err(DeadlineExceeded::new().into()));
            };
            if let Poll::Ready(result) = inner.poll(cx) {
                return Poll::Ready(result.map_err(Into::into));
            }
            let Some(sleep) = this.sleep.as_mut().as_pin_mut() else {
                return Poll::Pending;
            };
            ready!(sleep.poll(cx));
            if let Some(c) = this.exceeded.take() {
                c.increment(1);
            }
            // Abandon the inner call at once.
            this.inner.set(None);
            this.sleep.set(None);
            Poll::Ready(Err(DeadlineExceeded::new().into()))
        }
    }
}
