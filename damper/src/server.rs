//! The server stack: deadline (resolved from the caller's `grpc-timeout`, enforced over queue
//! and handler) → shed (adaptive limit, CoDel/LIFO queue, partitions) → handler.

use crate::client::field_err;
use crate::config::{ConfigError, ServerConfig};
use crate::optional::{Maybe, Optional};
use std::fmt;
use tower_adaptive_timeout::DeadlineLayer;
use tower_adaptive_timeout::deadline::Deadline;
use tower_layer::{Identity, Layer};
use tower_shed::{Shed, ShedHandle, ShedLayer};

/// Builds the server stack. `M` turns overload rejections into protocol responses: nothing for
/// [`ServerStack::new`] (callers get the `Overloaded` error), 503 + `Retry-After` for
/// [`ServerStack::http`], `RESOURCE_EXHAUSTED` + `grpc-retry-pushback-ms` for
/// [`ServerStack::grpc`].
///
/// `P` picks each request's partition ([`ServerStack::partition_with`]) when the configuration
/// declares partitions.
#[derive(Debug, Clone)]
pub struct ServerStack<M = Identity, P = ()> {
    config: ServerConfig,
    map: M,
    grpc_timeout: bool,
    partitioner: P,
    has_partitioner: bool,
}

impl Default for ServerStack {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerStack {
    /// A stack for any request type: shed with an adaptive (Gradient2) limit; rejections are
    /// `damper_core::error::Overloaded` errors. Deadlines are enforced for requests that carry
    /// one ([`damper_core::HasDeadline`]).
    pub fn new() -> Self {
        Self {
            config: ServerConfig::default(),
            map: Identity::new(),
            grpc_timeout: false,
            partitioner: (),
            has_partitioner: false,
        }
    }
}

#[cfg(feature = "http")]
impl ServerStack<tower_shed::http::OverloadedAsResponseLayer> {
    /// The HTTP preset: shed requests get `503 Service Unavailable` with a computed
    /// `Retry-After`; an incoming `grpc-timeout` header sets the request's deadline (clamped),
    /// and requests whose caller's deadline already passed are dropped before the handler.
    pub fn http() -> Self {
        Self {
            config: ServerConfig::default(),
            map: tower_shed::http::OverloadedAsResponseLayer::new(),
            grpc_timeout: true,
            partitioner: (),
            has_partitioner: false,
        }
    }
}

#[cfg(feature = "grpc")]
impl ServerStack<tower_shed::grpc::OverloadedAsStatusLayer> {
    /// The gRPC preset (a tonic server's `http::Request`s): shed requests get
    /// `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms`; the caller's `grpc-timeout` is
    /// enforced (clamped).
    pub fn grpc() -> Self {
        Self {
            config: ServerConfig::default(),
            map: tower_shed::grpc::OverloadedAsStatusLayer::new(),
            grpc_timeout: true,
            partitioner: (),
            has_partitioner: false,
        }
    }
}

impl<M, P> ServerStack<M, P> {
    /// Sets how requests are sorted into the configured partitions
    /// ([`ServerConfig::partitions`]): any [`Partitioner`](tower_shed::Partitioner), such as a
    /// `Fn(&Req) -> &'static str` or a [`HeaderPartitioner`] (feature `http`). A request whose
    /// class names no partition goes to the last one, so declare the best-effort class last.
    ///
    /// ```
    /// use damper::config::PartitionConfig;
    ///
    /// # fn main() -> Result<(), damper::ConfigError> {
    /// let stack = damper::ServerStack::new()
    ///     .configure(|c| {
    ///         c.partitions = vec![
    ///             PartitionConfig { name: "checkout".into(), share: 0.7 },
    ///             PartitionConfig { name: "browse".into(), share: 0.3 },
    ///         ];
    ///     })
    ///     .partition_with(|path: &&'static str| {
    ///         if path.starts_with("/checkout") { "checkout" } else { "browse" }
    ///     })
    ///     .build()?;
    /// # let _ = stack;
    /// # Ok(())
    /// # }
    /// ```
    pub fn partition_with<Q>(self, partitioner: Q) -> ServerStack<M, Q> {
        ServerStack {
            config: self.config,
            map: self.map,
            grpc_timeout: self.grpc_timeout,
            partitioner,
            has_partitioner: true,
        }
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Edits the configuration in place.
    pub fn configure(mut self, f: impl FnOnce(&mut ServerConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// The `name` label on every metric of the stack.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = Some(name.into());
        self
    }

    /// Validates the configuration and builds the layer. Errors name the offending field, as
    /// `server.limit.max`.
    pub fn build(self) -> Result<ServerLayer<M, P>, ConfigError> {
        let cfg = &self.config;
        let name = cfg.name.clone().unwrap_or_else(|| "server".to_owned());
        let shed = if cfg.limit.enabled.unwrap_or(true) {
            for (i, p) in cfg.partitions.iter().enumerate() {
                if !(p.share.is_finite() && p.share > 0.0 && p.share <= 1.0) {
                    return Err(ConfigError::new(
                        format!("server.partitions[{i}].share"),
                        "must be in (0, 1]",
                    ));
                }
            }
            if cfg.partitions.iter().map(|p| p.share).sum::<f64>() > 1.0 + 1e-9 {
                return Err(ConfigError::new(
                    "server.partitions",
                    "guaranteed shares add up to more than 1",
                ));
            }
            if !cfg.partitions.is_empty() && !self.has_partitioner {
                // Every request would land in the last partition: the shares would do nothing.
                return Err(ConfigError::new(
                    "server.partitions",
                    "partitions need a partitioner (ServerStack::partition_with)",
                ));
            }
            let mut b = crate::client::shed_builder(&cfg.limit, "server.limit", &name, None)?;
            for p in &cfg.partitions {
                b = b.partition(p.name.clone(), p.share);
            }
            Some(b.partition_with(self.partitioner).build().map_err(|e| {
                if e.field().starts_with("partition") {
                    field_err("server.partitions", e.field(), e.reason())
                } else {
                    crate::client::shed_err("server.limit", e)
                }
            })?)
        } else {
            None
        };
        let d = &cfg.deadline;
        if d.max.is_some_and(|m| m.is_zero()) {
            return Err(field_err(
                "server.deadline",
                "max",
                "must be greater than zero",
            ));
        }
        let deadline = if d.enabled {
            let mut b = DeadlineLayer::builder().name(name.clone()).propagate(false);
            if self.grpc_timeout {
                b = b.accept_grpc_timeout(d.max.unwrap_or(damper_core::DEFAULT_MAX_PUSHBACK));
            }
            if let Some(t) = d.default {
                b = b.timeout(t);
            }
            Some(b.build().map_err(|e| {
                // Name the config keys, not the builder's knobs.
                let field = match e.field() {
                    "timeout" => "default",
                    "accept_grpc_timeout" => "max",
                    other => other,
                };
                field_err("server.deadline", field, e.reason())
            })?)
        } else {
            None
        };
        Ok(ServerLayer {
            handle: shed.as_ref().map(ShedLayer::handle),
            map: self.map,
            shed: Optional(shed),
            deadline: Optional(deadline),
        })
    }
}

/// The server stack as a [`Layer`]; built by [`ServerStack::build`].
#[derive(Clone)]
pub struct ServerLayer<M = Identity, P = ()> {
    handle: Option<ShedHandle>,
    map: M,
    shed: Optional<ShedLayer<P>>,
    deadline: Optional<DeadlineLayer>,
}

impl<M, P> fmt::Debug for ServerLayer<M, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerLayer")
            .field("shed", &self.shed.0.is_some())
            .field("deadline", &self.deadline.0.is_some())
            .finish()
    }
}

impl<M, P> ServerLayer<M, P> {
    /// The limiter's state (limit, in flight, queued), if shedding is on.
    pub fn shed_handle(&self) -> Option<&ShedHandle> {
        self.handle.as_ref()
    }
}

/// The service a [`ServerLayer`] builds around `S`, before the protocol mapping `M`.
///
/// The deadline is outside the shedder: the caller's deadline is resolved before the request
/// can queue, so the queue drops a request whose caller has given up instead of starting it,
/// and the time spent queued counts against the deadline.
pub type ServerService<S, P = ()> = Maybe<Deadline<Maybe<Shed<S, P>, S>>, Maybe<Shed<S, P>, S>>;

impl<S, M, P> Layer<S> for ServerLayer<M, P>
where
    M: Layer<ServerService<S, P>>,
    P: Clone,
{
    type Service = M::Service;

    fn layer(&self, inner: S) -> Self::Service {
        let s = self.shed.layer(inner);
        let s = self.deadline.layer(s);
        self.map.layer(s)
    }
}

#[cfg(feature = "http")]
impl<P> ServerLayer<tower_shed::http::OverloadedAsResponseLayer, P> {
    /// Answers every error with a response, so the stack's error is
    /// [`Infallible`](std::convert::Infallible) and it drops into axum's `Router::layer`
    /// without a `HandleErrorLayer`: sheds stay `503` with `Retry-After`, expired deadlines
    /// `504`, and any other error (one the handler's own layers raise) becomes an empty `500`,
    /// logged at `error` level with its message.
    ///
    /// ```
    /// # fn main() -> Result<(), damper::ConfigError> {
    /// let app: axum::Router = axum::Router::new()
    ///     .route("/", axum::routing::get(|| async { "hello" }))
    ///     .layer(damper::ServerStack::http().name("api").build()?.infallible());
    /// # let _ = app;
    /// # Ok(())
    /// # }
    /// ```
    pub fn infallible(
        self,
    ) -> ServerLayer<
        tower_layer::Stack<tower_shed::http::OverloadedAsResponseLayer, ErrorAs500Layer>,
        P,
    > {
        ServerLayer {
            handle: self.handle,
            map: tower_layer::Stack::new(self.map, ErrorAs500Layer(())),
            shed: self.shed,
            deadline: self.deadline,
        }
    }
}

/// Sorts HTTP requests into partitions by a header's value (`x-priority: critical`): a request
/// whose value names one of `classes` goes to that partition, any other (or none) to the last
/// configured partition. Header values are only compared, never parsed.
///
/// ```
/// use damper::HeaderPartitioner;
/// use damper::config::PartitionConfig;
/// use http::HeaderName;
///
/// # fn main() -> Result<(), damper::ConfigError> {
/// let stack = damper::ServerStack::http()
///     .configure(|c| {
///         c.partitions = vec![
///             PartitionConfig { name: "critical".into(), share: 0.8 },
///             PartitionConfig { name: "batch".into(), share: 0.2 },
///         ];
///     })
///     .partition_with(HeaderPartitioner::new(
///         HeaderName::from_static("x-priority"),
///         ["critical", "batch"],
///     ))
///     .build()?;
/// # let _ = stack;
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "http")]
#[derive(Debug, Clone)]
pub struct HeaderPartitioner {
    header: http::HeaderName,
    classes: std::sync::Arc<[String]>,
}

#[cfg(feature = "http")]
impl HeaderPartitioner {
    /// Partitions by `header`, whose values name the `classes`.
    pub fn new<I>(header: http::HeaderName, classes: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self {
            header,
            classes: classes.into_iter().map(Into::into).collect(),
        }
    }
}

#[cfg(feature = "http")]
impl<B> tower_shed::Partitioner<http::Request<B>> for HeaderPartitioner {
    fn partition(&self, req: &http::Request<B>) -> &str {
        let Some(value) = req.headers().get(&self.header) else {
            return "";
        };
        self.classes
            .iter()
            .find(|c| c.as_bytes() == value.as_bytes())
            .map_or("", String::as_str)
    }
}

/// The HTTP server stack with every error answered: what [`ServerLayer::infallible`] builds.
#[cfg(feature = "http")]
pub type InfallibleHttpServerLayer<P = ()> = ServerLayer<
    tower_layer::Stack<tower_shed::http::OverloadedAsResponseLayer, ErrorAs500Layer>,
    P,
>;

/// Turns any error of the service below into an empty `500 Internal Server Error`, logged;
/// see [`ServerLayer::infallible`].
#[cfg(feature = "http")]
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorAs500Layer(());

#[cfg(feature = "http")]
impl<S> Layer<S> for ErrorAs500Layer {
    type Service = ErrorAs500<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorAs500 {
            inner,
            not_ready: None,
        }
    }
}

/// The service [`ErrorAs500Layer`] builds.
#[cfg(feature = "http")]
#[derive(Debug, Clone)]
pub struct ErrorAs500<S> {
    inner: S,
    /// An error `poll_ready` returned, answered by the next call.
    not_ready: Option<std::sync::Arc<str>>,
}

#[cfg(feature = "http")]
fn internal_error<B: Default>(err: &dyn fmt::Display) -> http::Response<B> {
    tracing::error!(error = %err, "request failed inside the server stack; answering 500");
    let mut res = http::Response::new(B::default());
    *res.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    res
}

#[cfg(feature = "http")]
impl<S, Req, B> tower_service::Service<Req> for ErrorAs500<S>
where
    S: tower_service::Service<Req, Response = http::Response<B>>,
    S::Error: Into<damper_core::BoxError>,
    B: Default,
{
    type Response = http::Response<B>;
    type Error = std::convert::Infallible;
    type Future = ErrorAs500Future<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), std::convert::Infallible>> {
        use std::task::Poll;
        if self.not_ready.is_some() {
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                self.not_ready = Some(e.into().to_string().into());
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.not_ready.take() {
            Some(err) => ErrorAs500Future {
                inner: None,
                not_ready: Some(err),
            },
            None => ErrorAs500Future {
                inner: Some(self.inner.call(req)),
                not_ready: None,
            },
        }
    }
}

#[cfg(feature = "http")]
pin_project_lite::pin_project! {
    /// The future of [`ErrorAs500`].
    #[derive(Debug)]
    pub struct ErrorAs500Future<F> {
        #[pin]
        inner: Option<F>,
        not_ready: Option<std::sync::Arc<str>>,
    }
}

#[cfg(feature = "http")]
impl<F, B, E> Future for ErrorAs500Future<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<damper_core::BoxError>,
    B: Default,
{
    type Output = Result<http::Response<B>, std::convert::Infallible>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        match this.inner.as_pin_mut() {
            None => {
                let err = this
                    .not_ready
                    .take()
                    .unwrap_or_else(|| "polled after completion".into());
                std::task::Poll::Ready(Ok(internal_error(&err)))
            }
            Some(fut) => fut.poll(cx).map(|r| {
                Ok(match r {
                    Ok(res) => res,
                    Err(e) => internal_error(&e.into()),
                })
            }),
        }
    }
}
