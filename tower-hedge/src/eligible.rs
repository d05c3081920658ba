//! Which requests may be hedged, and how they are copied.
//!
//! A hedge sends a second copy of a request, so only requests that are safe to send twice may
//! be hedged: reads, idempotent writes, or requests carrying an idempotency key. The layer asks
//! an [`Eligible`] for a copy once per request, and only when a hedge could actually be sent
//! (hedging is warmed up and the deadline leaves room), so an ineligible request — or any
//! request while hedging is off — is never cloned.

/// Decides whether a request may be hedged and, if so, makes the copy the hedge will send.
///
/// Any `Fn(&Req) -> bool` is an `Eligible<Req>` for a `Clone` request: the predicate picks the
/// requests, `Clone` copies them. Implement the trait yourself for requests that are not
/// `Clone` but can be copied some other way (a buffered body, for instance).
///
/// ```
/// use tower_hedge::Eligible;
///
/// let reads_only = |req: &String| req.starts_with("GET ");
/// assert_eq!(reads_only.hedge_copy(&"GET /a".to_string()), Some("GET /a".to_string()));
/// assert_eq!(reads_only.hedge_copy(&"POST /a".to_string()), None);
/// ```
pub trait Eligible<Req> {
    /// A copy of `req` for a hedge, or `None` if `req` must not be sent twice.
    fn hedge_copy(&self, req: &Req) -> Option<Req>;
}

fn _obj_safe(_: &dyn Eligible<String>) {}

impl<Req, F> Eligible<Req> for F
where
    Req: Clone,
    F: Fn(&Req) -> bool,
{
    fn hedge_copy(&self, req: &Req) -> Option<Req> {
        if self(req) { Some(req.clone()) } else { None }
    }
}

/// Every request may be hedged (it is cloned when a hedge could be sent).
///
/// The default, and right for read-only clients. For HTTP, prefer `Idempotent` (feature
/// `http`), which refuses `POST` and `PATCH` without an `Idempotency-Key`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Always(());

impl Always {
    /// A new `Always`.
    pub const fn new() -> Self {
        Self(())
    }
}

impl<Req: Clone> Eligible<Req> for Always {
    fn hedge_copy(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// HTTP requests whose method is idempotent (`GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`,
/// `DELETE`) or that carry an `Idempotency-Key` header; see
/// [`damper_core::classify::is_idempotent`].
///
/// ```
/// use tower_hedge::{Eligible, Idempotent};
///
/// let get = http::Request::get("/").body(()).unwrap();
/// assert!(Idempotent::new().hedge_copy(&get).is_some());
/// let post = http::Request::post("/").body(()).unwrap();
/// assert!(Idempotent::new().hedge_copy(&post).is_none());
/// ```
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct Idempotent(());

#[cfg(feature = "http")]
impl Idempotent {
    /// A new `Idempotent`.
    pub const fn new() -> Self {
        Self(())
    }
}

#[cfg(feature = "http")]
impl<B: Clone> Eligible<http::Request<B>> for Idempotent {
    fn hedge_copy(&self, req: &http::Request<B>) -> Option<http::Request<B>> {
        if damper_core::classify::is_idempotent(req) {
            Some(req.clone())
        } else {
            None
        }
    }
}
