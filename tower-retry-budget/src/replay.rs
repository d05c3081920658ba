//! Which requests may be sent again, and how to copy them.
//!
//! A retry needs a second copy of the request, and it must be *safe* to send twice. A
//! [`Replay`] answers both: [`Replay::replay`] returns a copy when the request may be retried
//! and `None` when it must be sent once. The layer asks only when a retry is possible at all
//! (attempts left), so requests that can never be retried are never copied.
//!
//! | request type | replay | sent once when |
//! |---|---|---|
//! | `http::Request<B>` (feature `http`) | [`Idempotent`] | the method is not idempotent ([`is_idempotent`]: GET, HEAD, OPTIONS, TRACE, PUT, DELETE, or an `Idempotency-Key` header); or the body is larger than the cap (default 64 KiB) or has no known upper size (streaming) |
//! | `reqwest::Request` (feature `reqwest`) | [`Idempotent`] | not idempotent as above; or the body is a stream (`try_clone` fails) or larger than the cap |
//! | `tonic::Request<T>` (feature `grpc`) | [`Idempotent`] | it carries no `idempotency-key` metadata (gRPC does not say which methods are idempotent at run time; use [`ReplayWith`] to decide per method) |
//! | any `Clone + HasDeadline` type | [`CloneAll`], [`ReplayIf`] | the predicate says no |
//! | anything else | [`ReplayWith`] | the closure returns `None` |
//!
//! # HTTP bodies
//! A body is replayed by cloning it, so `B` must be `Clone`: `String`, `Full<Bytes>`,
//! `Empty<Bytes>` and other buffered bodies clone in O(1) by sharing their bytes. The copy is
//! kept only while a retry is possible and only if the body's size hint promises at most
//! [`Idempotent::max_body`] bytes (default 64 KiB), which bounds the memory retries hold per
//! request. **A larger body, or a streaming body with no upper size bound, is sent once and not
//! retried.** A non-`Clone` streaming body type (such as hyper's `Incoming`) cannot use
//! [`Idempotent`] at all: collect it into a `Full<Bytes>` first, or give the layer a
//! [`ReplayWith`] closure.
//!
//! [`is_idempotent`]: https://docs.rs/damper-core/latest/damper_core/classify/fn.is_idempotent.html

use damper_core::{Deadline, HasDeadline};

/// Decides whether a request may be sent again, and copies it.
pub trait Replay<Req> {
    /// A copy of `req` for another attempt, or `None` when `req` must be sent only once.
    fn replay(&self, req: &Req) -> Option<Req>;

    /// The deadline `req` carries, if any. Default: none.
    fn deadline(&self, req: &Req) -> Option<Deadline> {
        let _ = req;
        None
    }

    /// Attaches `deadline` to `req` so the layers below see it; a no-op for request types that
    /// cannot carry one (the default).
    fn set_deadline(&self, req: &mut Req, deadline: Deadline) {
        let _ = (req, deadline);
    }
}

/// The default body cap for replay: 64 KiB.
pub const DEFAULT_MAX_BODY: u64 = 64 * 1024;

/// Replays requests that their protocol says are idempotent; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Idempotent {
    max_body: u64,
}

impl Default for Idempotent {
    fn default() -> Self {
        Self::new()
    }
}

impl Idempotent {
    /// Replays idempotent requests with bodies up to 64 KiB.
    pub const fn new() -> Self {
        Self {
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// Sets the largest body (in bytes) kept for replay.
    pub const fn max_body(mut self, bytes: u64) -> Self {
        self.max_body = bytes;
        self
    }

    /// The largest body kept for replay.
    pub const fn body_cap(&self) -> u64 {
        self.max_body
    }
}

#[cfg(feature = "http")]
impl<B> Replay<http::Request<B>> for Idempotent
where
    B: http_body::Body + Clone,
{
    fn replay(&self, req: &http::Request<B>) -> Option<http::Request<B>> {
        let fits = http_body::Body::size_hint(req.body())
            .upper()
            .is_some_and(|n| n <= self.max_body);
        (fits && damper_core::classify::is_idempotent(req)).then(|| req.clone())
    }

    fn deadline(&self, req: &http::Request<B>) -> Option<Deadline> {
        req.deadline()
    }

    fn set_deadline(&self, req: &mut http::Request<B>, deadline: Deadline) {
        req.set_deadline(deadline);
    }
}

#[cfg(feature = "reqwest")]
impl Replay<reqwest::Request> for Idempotent {
    fn replay(&self, req: &reqwest::Request) -> Option<reqwest::Request> {
        use reqwest::Method;
        let idempotent = matches!(
            *req.method(),
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        ) || req.headers().contains_key("idempotency-key");
        let fits = match req.body() {
            None => true,
            Some(body) => body
                .as_bytes()
                .is_some_and(|b| b.len() as u64 <= self.max_body),
        };
        if idempotent && fits {
            req.try_clone()
        } else {
            None
        }
    }

    /// Shortens the request's own timeout to the time left before `deadline`, so reqwest
    /// enforces it. (A reqwest request's timeout is relative, so it is not read back as a
    /// deadline.)
    fn set_deadline(&self, req: &mut reqwest::Request, deadline: Deadline) {
        let left = deadline.remaining(tokio::time::Instant::now());
        let t = req.timeout_mut();
        *t = Some(t.map_or(left, |own| own.min(left)));
    }
}

#[cfg(feature = "grpc")]
impl<T: Clone> Replay<tonic::Request<T>> for Idempotent {
    fn replay(&self, req: &tonic::Request<T>) -> Option<tonic::Request<T>> {
        if !req.metadata().contains_key("idempotency-key") {
            return None;
        }
        Some(tonic::Request::from_parts(
            req.metadata().clone(),
            req.extensions().clone(),
            req.get_ref().clone(),
        ))
    }

    fn deadline(&self, req: &tonic::Request<T>) -> Option<Deadline> {
        req.deadline()
    }

    fn set_deadline(&self, req: &mut tonic::Request<T>, deadline: Deadline) {
        req.set_deadline(deadline);
    }
}

/// Replays every request by cloning it: for request types whose every value is safe to send
/// twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloneAll(());

impl CloneAll {
    /// Declares every request idempotent.
    pub const fn new() -> Self {
        Self(())
    }
}

impl<Req: Clone + HasDeadline> Replay<Req> for CloneAll {
    fn replay(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }

    fn deadline(&self, req: &Req) -> Option<Deadline> {
        req.deadline()
    }

    fn set_deadline(&self, req: &mut Req, deadline: Deadline) {
        req.set_deadline(deadline);
    }
}

/// Replays the requests a predicate calls idempotent, by cloning them.
///
/// ```
/// use tower_retry_budget::replay::{Replay, ReplayIf};
///
/// let reads_only = ReplayIf::new(|req: &String| req.starts_with("GET "));
/// assert!(reads_only.replay(&"GET /a".to_owned()).is_some());
/// assert!(reads_only.replay(&"POST /a".to_owned()).is_none());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ReplayIf<F> {
    predicate: F,
}

impl<F> ReplayIf<F> {
    /// Replays a request when `predicate` returns `true` for it.
    pub const fn new(predicate: F) -> Self {
        Self { predicate }
    }
}

impl<Req, F> Replay<Req> for ReplayIf<F>
where
    Req: Clone + HasDeadline,
    F: Fn(&Req) -> bool,
{
    fn replay(&self, req: &Req) -> Option<Req> {
        (self.predicate)(req).then(|| req.clone())
    }

    fn deadline(&self, req: &Req) -> Option<Deadline> {
        req.deadline()
    }

    fn set_deadline(&self, req: &mut Req, deadline: Deadline) {
        req.set_deadline(deadline);
    }
}

/// Replays with a closure that returns the copy (or `None`): for request types that are not
/// `Clone`, such as a tonic request whose method decides idempotency. Such requests carry no
/// deadline as far as the layer knows; the layer's own timeout still applies.
#[derive(Debug, Clone, Copy)]
pub struct ReplayWith<F> {
    copy: F,
}

impl<F> ReplayWith<F> {
    /// Replays with `copy`.
    pub const fn new(copy: F) -> Self {
        Self { copy }
    }
}

impl<Req, F> Replay<Req> for ReplayWith<F>
where
    F: Fn(&Req) -> Option<Req>,
{
    fn replay(&self, req: &Req) -> Option<Req> {
        (self.copy)(req)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn predicates_and_closures() {
        assert_eq!(CloneAll::new().replay(&7u32), Some(7));
        let even = ReplayIf::new(|n: &u32| n.is_multiple_of(2));
        assert_eq!(even.replay(&4), Some(4));
        assert_eq!(even.replay(&5), None);
        let with = ReplayWith::new(|s: &&'static str| (s.len() < 4).then_some(*s));
        assert_eq!(with.replay(&"abc"), Some("abc"));
        assert_eq!(with.replay(&"abcd"), None);
    }

    #[cfg(feature = "http")]
    #[test]
    fn http_idempotency_and_body_cap() {
        let r = Idempotent::new();
        let get = http::Request::get("/").body(String::from("x")).unwrap();
        assert!(r.replay(&get).is_some());
        let post = http::Request::post("/").body(String::from("x")).unwrap();
        assert!(r.replay(&post).is_none());
        let keyed = http::Request::post("/")
            .header("idempotency-key", "k")
            .body(String::from("x"))
            .unwrap();
        assert!(r.replay(&keyed).is_some());
        let big = http::Request::put("/")
            .body("y".repeat(64 * 1024 + 1))
            .unwrap();
        assert!(r.replay(&big).is_none());
        let at_cap = http::Request::put("/").body("y".repeat(64 * 1024)).unwrap();
        assert!(r.replay(&at_cap).is_some());
        assert!(Idempotent::new().max_body(0).replay(&get).is_none());
        // The copy keeps headers and extensions.
        let mut req = http::Request::get("/a")
            .header("x-k", "v")
            .body(String::new())
            .unwrap();
        req.extensions_mut().insert(5u8);
        let copy = r.replay(&req).unwrap();
        assert_eq!(copy.headers()["x-k"], "v");
        assert_eq!(copy.extensions().get::<u8>(), Some(&5));
        assert_eq!(copy.uri(), "/a");
    }

    #[cfg(feature = "http")]
    #[test]
    fn streaming_http_body_is_not_replayed() {
        #[derive(Clone)]
        struct Stream;
        impl http_body::Body for Stream {
            type Data = std::io::Cursor<Vec<u8>>;
            type Error = std::io::Error;
            fn poll_frame(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>>
            {
                std::task::Poll::Ready(None)
            }
            // Default size hint: no upper bound.
        }
        let req = http::Request::get("/").body(Stream).unwrap();
        assert!(Idempotent::new().replay(&req).is_none());
    }

    #[cfg(feature = "reqwest")]
    #[test]
    fn reqwest_requests() {
        let url: reqwest::Url = "http://127.0.0.1/".parse().unwrap();
        let r = Idempotent::new();
        let get = reqwest::Request::new(reqwest::Method::GET, url.clone());
        assert!(r.replay(&get).is_some());
        let mut put = reqwest::Request::new(reqwest::Method::PUT, url.clone());
        *put.body_mut() = Some(reqwest::Body::from(vec![0u8; 100]));
        assert!(r.replay(&put).is_some());
        assert!(Idempotent::new().max_body(10).replay(&put).is_none());
        let post = reqwest::Request::new(reqwest::Method::POST, url);
        assert!(r.replay(&post).is_none());
    }

    #[cfg(feature = "grpc")]
    #[test]
    fn tonic_requests_need_an_idempotency_key() {
        let r = Idempotent::new();
        let plain = tonic::Request::new(3u32);
        assert!(r.replay(&plain).is_none());
        let mut keyed = tonic::Request::new(3u32);
        keyed
            .metadata_mut()
            .insert("idempotency-key", "k".parse().unwrap());
        let copy = r.replay(&keyed).unwrap();
        assert_eq!(*copy.get_ref(), 3);
        assert!(copy.metadata().contains_key("idempotency-key"));
    }
}
