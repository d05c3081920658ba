//! reqwest with the client stack inside it (feature `reqwest`).
//!
//! [`Client`] keeps reqwest's builder API: `client.get(url).header(..).send().await` gives a
//! `reqwest::Response`, and every attempt in between goes through the HTTP client stack
//! (deadline, retry budget, hedge, breaker, client limit, adaptive timeout).
//!
//! ```
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), damper::BoxError> {
//! let client = damper::ClientStack::http()
//!     .name("inventory")
//!     .deadline(Duration::from_secs(2))
//!     .build_reqwest(reqwest::Client::new())?;
//!
//! // Nothing listens on port 9 (discard): the connect error is retried inside the budget, and
//! // the error says what happened.
//! let err = client.get("http://127.0.0.1:9/").send().await.unwrap_err();
//! assert!(err.as_reqwest().is_some_and(|e| e.is_connect()));
//! # Ok(())
//! # }
//! ```
//!
//! # Bodies
//! Bodies reqwest holds in memory (`String`, `Vec<u8>`, `Bytes`, JSON, forms) are shared, not
//! copied, so retries and hedges of idempotent requests can resend them (up to the preset's
//! 64 KiB replay cap). A streaming body (`reqwest::Body::wrap_stream`) is sent once: it is never
//! retried or hedged.
//!
//! # What reqwest's builder does that this one does not forward
//! Methods behind reqwest's own features (`json`, `query`, `form`, `multipart`) are reached
//! with [`RequestBuilder::map`], or build the `reqwest::Request` with a plain
//! `reqwest::Client` and hand it to [`Client::execute`].

use crate::body::{InMemory, ReplayBody, SentBody};
use crate::client::{ClientHandles, ClientStack};
use crate::config::ConfigError;
use bytes::Bytes;
use damper_core::BoxError;
use damper_core::classify::HttpClassifier;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;
use tower_layer::Layer;

type Inner = BoxCloneSyncService<http::Request<Body>, http::Response<reqwest::Body>, BoxError>;

impl ClientStack<HttpClassifier, tower_retry_budget::Idempotent, tower_hedge::Idempotent> {
    /// Builds the stack around `client`: a [`Client`] with reqwest's builder API.
    ///
    /// # Errors
    /// The configuration is invalid (see [`ClientStack::build`]).
    pub fn build_reqwest(self, client: reqwest::Client) -> Result<Client, ConfigError> {
        let stack = self.map_eligible(InMemory);
        let layer = stack.build()?;
        let handles = layer.handles().clone();
        let leaf = Leaf {
            client: client.clone(),
        };
        Ok(Client {
            reqwest: client,
            inner: BoxCloneSyncService::new(layer.layer(leaf)),
            handles,
        })
    }
}

/// A `reqwest::Client` with the HTTP client stack inside it; built by
/// [`ClientStack::build_reqwest`].
///
/// Cloning it is cheap and shares the stack: the budget, the breaker and the latency
/// histogram are one for all clones, as reqwest's connection pool is.
#[derive(Clone)]
pub struct Client {
    reqwest: reqwest::Client,
    inner: Inner,
    handles: ClientHandles,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("reqwest", &self.reqwest)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts a request with `method` to `url`, as [`reqwest::Client::request`].
    pub fn request<U: reqwest::IntoUrl>(&self, method: http::Method, url: U) -> RequestBuilder {
        RequestBuilder {
            client: self.clone(),
            builder: self.reqwest.request(method, url),
        }
    }

    /// Starts a `GET` to `url`.
    pub fn get<U: reqwest::IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(http::Method::GET, url)
    }

    /// Starts a `POST` to `url`.
    pub fn post<U: reqwest::IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(http::Method::POST, url)
    }

    /// Starts a `PUT` to `url`.
    pub fn put<U: reqwest::IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(http::Method::PUT, url)
    }

    /// Starts a `PATCH` to `url`.
    pub fn patch<U: reqwest::IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(http::Method::PATCH, url)
    }

    /// Starts a `DELETE` to `url`.
    pub fn delete<U: reqwest::IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(http::Method::DELETE, url)
    }

    /// Starts a `HEAD` to `url`.
    pub fn head<U: reqwest::IntoUrl>(&self, url: U) -> RequestBuilder {
        self.request(http::Method::HEAD, url)
    }

    /// Sends `req` through the stack, as [`reqwest::Client::execute`].
    ///
    /// # Errors
    /// What the stack or reqwest refused or failed with; see [`Error`].
    pub async fn execute(&self, req: reqwest::Request) -> Result<reqwest::Response, Error> {
        let url = req.url().clone();
        let req = into_http(req)?;
        let res = self.inner.clone().oneshot(req).await.map_err(Error)?;
        from_http(res, url)
    }

    /// The plain reqwest client underneath (requests sent with it bypass the stack).
    pub fn reqwest(&self) -> &reqwest::Client {
        &self.reqwest
    }

    /// Handles to the stack's layers: breaker state, budget balance, hedge and limit stats.
    pub fn handles(&self) -> &ClientHandles {
        &self.handles
    }
}

/// A request being built for a [`Client`]; `send` runs it through the stack.
#[must_use = "a RequestBuilder does nothing until it is sent"]
#[derive(Debug)]
pub struct RequestBuilder {
    client: Client,
    builder: reqwest::RequestBuilder,
}

impl RequestBuilder {
    /// Adds a header, as [`reqwest::RequestBuilder::header`].
    pub fn header<K, V>(self, key: K, value: V) -> Self
    where
        http::HeaderName: TryFrom<K>,
        <http::HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        http::HeaderValue: TryFrom<V>,
        <http::HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        self.map(|b| b.header(key, value))
    }

    /// Merges headers, as [`reqwest::RequestBuilder::headers`].
    pub fn headers(self, headers: http::HeaderMap) -> Self {
        self.map(|b| b.headers(headers))
    }

    /// Sets basic authentication, as [`reqwest::RequestBuilder::basic_auth`].
    pub fn basic_auth<U: fmt::Display, P: fmt::Display>(
        self,
        username: U,
        password: Option<P>,
    ) -> Self {
        self.map(|b| b.basic_auth(username, password))
    }

    /// Sets bearer authentication, as [`reqwest::RequestBuilder::bearer_auth`].
    pub fn bearer_auth<T: fmt::Display>(self, token: T) -> Self {
        self.map(|b| b.bearer_auth(token))
    }

    /// Sets the body, as [`reqwest::RequestBuilder::body`].
    pub fn body<T: Into<reqwest::Body>>(self, body: T) -> Self {
        self.map(|b| b.body(body))
    }

    /// Sets a timeout for each attempt (reqwest's own), as
    /// [`reqwest::RequestBuilder::timeout`]. The stack's deadline bounds the whole call.
    pub fn timeout(self, timeout: std::time::Duration) -> Self {
        self.map(|b| b.timeout(timeout))
    }

    /// Sets the HTTP version, as [`reqwest::RequestBuilder::version`].
    pub fn version(self, version: http::Version) -> Self {
        self.map(|b| b.version(version))
    }

    /// Applies any `reqwest::RequestBuilder` method, such as `json`, `query` or `form` when
    /// reqwest has those features on.
    pub fn map(self, f: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder) -> Self {
        Self {
            client: self.client,
            builder: f(self.builder),
        }
    }

    /// Builds the `reqwest::Request` without sending it.
    ///
    /// # Errors
    /// What reqwest's builder collected (an invalid URL or header).
    pub fn build(self) -> Result<reqwest::Request, Error> {
        self.builder.build().map_err(|e| Error(e.into()))
    }

    /// Sends the request through the stack.
    ///
    /// # Errors
    /// What the stack or reqwest refused or failed with; see [`Error`]. A response with an
    /// error status is an `Ok`, as with reqwest (after any retries the stack made).
    pub async fn send(self) -> Result<reqwest::Response, Error> {
        let req = self.builder.build().map_err(|e| Error(e.into()))?;
        self.client.execute(req).await
    }
}

/// Why a [`Client`] call failed: reqwest's error, or one of the stack's own.
///
/// The `is_*` methods and [`as_reqwest`](Error::as_reqwest) look through the chain of
/// sources, so the answer does not depend on which layer wrapped the error.
pub struct Error(BoxError);

impl Error {
    /// reqwest's own error (connect, I/O, redirect, its timeout, a bad URL), if that is what
    /// this is.
    pub fn as_reqwest(&self) -> Option<&reqwest::Error> {
        damper_core::error::find(&*self.0)
    }

    /// The breaker was open: the request was not sent.
    pub fn is_circuit_open(&self) -> bool {
        damper_core::error::find::<damper_core::error::CircuitOpen>(&*self.0).is_some()
    }

    /// The client limit refused the request, locally: it was not sent.
    pub fn is_overloaded(&self) -> bool {
        damper_core::error::find::<damper_core::error::Overloaded>(&*self.0).is_some()
    }

    /// The call ran out of time: the stack's deadline, an attempt timeout, or reqwest's own.
    pub fn is_timeout(&self) -> bool {
        damper_core::error::find::<damper_core::error::DeadlineExceeded>(&*self.0).is_some()
            || damper_core::error::find::<damper_core::error::Elapsed>(&*self.0).is_some()
            || self.as_reqwest().is_some_and(reqwest::Error::is_timeout)
    }

    /// The error as the stack gave it.
    pub fn into_inner(self) -> BoxError {
        self.0
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// A request body on its way through the stack: reqwest's in-memory bodies are shared by the
/// copies retries and hedges make; a streaming body is sent once. See [`ReplayBody`].
pub type Body = ReplayBody<reqwest::Body>;

fn to_replay(body: Option<reqwest::Body>) -> Body {
    match body {
        None => Body::default(),
        Some(b) => match b.as_bytes() {
            Some(bytes) => Body::from_bytes(Bytes::copy_from_slice(bytes)),
            None => Body::streaming(b),
        },
    }
}

fn to_reqwest(body: Body) -> reqwest::Body {
    match body.into_sent() {
        SentBody::Bytes(b) => reqwest::Body::from(b),
        // Only one attempt ever gets here (the stack never copies a stream), so the body is
        // still there; an empty one stands in should that ever change.
        SentBody::Stream(s) => s.unwrap_or_else(|| reqwest::Body::from(Bytes::new())),
    }
}

/// The bottom of the stack: each attempt becomes a `reqwest::Request` again.
#[derive(Clone)]
struct Leaf {
    client: reqwest::Client,
}

impl tower_service::Service<http::Request<Body>> for Leaf {
    type Response = http::Response<reqwest::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let client = self.client.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let req =
                reqwest::Request::try_from(http::Request::from_parts(parts, to_reqwest(body)))?;
            let res = client.execute(req).await?;
            let url = res.url().clone();
            let mut res = http::Response::from(res);
            res.extensions_mut().insert(FinalUrl(url));
            Ok(res)
        })
    }
}

/// The URL the response came from (after redirects), carried up through the stack.
#[derive(Clone)]
struct FinalUrl(reqwest::Url);

fn into_http(req: reqwest::Request) -> Result<http::Request<Body>, Error> {
    let mut req = req;
    let body = to_replay(req.body_mut().take());
    let req = http::Request::<reqwest::Body>::try_from(req).map_err(|e| Error(e.into()))?;
    let (parts, _) = req.into_parts();
    Ok(http::Request::from_parts(parts, body))
}

fn from_http(
    res: http::Response<reqwest::Body>,
    sent_to: reqwest::Url,
) -> Result<reqwest::Response, Error> {
    use reqwest::ResponseBuilderExt;
    let (mut parts, body) = res.into_parts();
    let url = parts
        .extensions
        .remove::<FinalUrl>()
        .map_or(sent_to, |u| u.0);
    let mut out = http::Response::builder()
        .url(url)
        .body(body)
        .map_err(|e| Error(e.into()))?;
    *out.status_mut() = parts.status;
    *out.version_mut() = parts.version;
    *out.headers_mut() = parts.headers;
    out.extensions_mut().extend(parts.extensions);
    Ok(reqwest::Response::from(out))
}
