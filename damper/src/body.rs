//! [`ReplayBody`]: the request body the client stack carries for reqwest and tonic.
//!
//! A retry or a hedge sends a second copy of a request, so its body must be copyable. Bytes
//! held in memory are shared by every copy (a [`Bytes`] clone, no copy of the data). A body
//! that is still streaming cannot be read twice: it goes to the one attempt that sends it, and
//! its size hint is unbounded, so the presets' replay and hedge policies (which cap the body
//! size) never copy the request.
//!
//! Inside the stack the body is a stand-in whose size hint is what the policies read; the
//! transport at the bottom of the stack turns it back into the client's own body type.

use bytes::Bytes;
use std::fmt;
use std::pin::Pin;
// A streaming body is taken once, by the one attempt that sends it: one uncontended lock per
// streaming request, none for in-memory bodies.
#[allow(clippy::disallowed_types)]
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

/// A request body that retries and hedges can copy when it is in memory; see the
/// [module docs](self).
///
/// ```
/// use damper::body::ReplayBody;
/// use http_body::Body as _;
///
/// let json = ReplayBody::<()>::from_bytes("{\"id\": 7}".into());
/// assert!(json.is_in_memory());
/// assert_eq!(json.size_hint().exact(), Some(9));
///
/// let upload = ReplayBody::streaming(());
/// assert!(!upload.is_in_memory());
/// assert_eq!(upload.size_hint().upper(), None, "never replayed");
/// ```
pub struct ReplayBody<B>(Kind<B>);

#[allow(clippy::disallowed_types)]
enum Kind<B> {
    Bytes(Option<Bytes>),
    Stream(Arc<Mutex<Option<B>>>),
}

/// What [`ReplayBody::into_sent`] hands the transport.
#[derive(Debug)]
pub enum SentBody<B> {
    /// The bytes held in memory (empty for an empty body).
    Bytes(Bytes),
    /// The streaming body; `None` if another copy of the request already sent it, which the
    /// presets never do.
    Stream(Option<B>),
}

impl<B> Clone for ReplayBody<B> {
    fn clone(&self) -> Self {
        Self(match &self.0 {
            Kind::Bytes(b) => Kind::Bytes(b.clone()),
            Kind::Stream(s) => Kind::Stream(Arc::clone(s)),
        })
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Bytes(b) => f
                .debug_tuple("ReplayBody")
                .field(&b.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Stream(_) => f.write_str("ReplayBody(stream)"),
        }
    }
}

impl<B> Default for ReplayBody<B> {
    fn default() -> Self {
        Self(Kind::Bytes(None))
    }
}

impl<B> ReplayBody<B> {
    /// A body held in memory, shared by every copy of the request.
    pub fn from_bytes(bytes: Bytes) -> Self {
        Self(Kind::Bytes(Some(bytes)))
    }

    /// A body still streaming: sent once, never copied.
    #[allow(clippy::disallowed_types)]
    pub fn streaming(body: B) -> Self {
        Self(Kind::Stream(Arc::new(Mutex::new(Some(body)))))
    }

    /// Whether the body is held in memory (and so may be sent more than once).
    pub fn is_in_memory(&self) -> bool {
        matches!(self.0, Kind::Bytes(_))
    }

    /// The body to send, for the transport at the bottom of the stack.
    pub fn into_sent(self) -> SentBody<B> {
        match self.0 {
            Kind::Bytes(b) => SentBody::Bytes(b.unwrap_or_default()),
            Kind::Stream(s) => {
                SentBody::Stream(s.lock().unwrap_or_else(PoisonError::into_inner).take())
            }
        }
    }
}

impl<B> http_body::Body for ReplayBody<B> {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        // Inside the stack only the size hint is read; the transport sends the real body
        // (`into_sent`), so a stream yields nothing here.
        match &mut self.0 {
            Kind::Bytes(b) => Poll::Ready(b.take().map(|b| Ok(http_body::Frame::data(b)))),
            Kind::Stream(_) => Poll::Ready(None),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.0 {
            Kind::Bytes(b) => {
                http_body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            Kind::Stream(_) => http_body::SizeHint::default(),
        }
    }
}

/// Hedge eligibility that refuses bodies still streaming and asks `E` about the rest: a
/// stream can be sent only once. The reqwest and tonic adapters wrap the stack's eligibility
/// in it.
#[derive(Clone, Debug, Default)]
pub struct InMemory<E>(pub E);

impl<B, E> tower_hedge::Eligible<http::Request<ReplayBody<B>>> for InMemory<E>
where
    E: tower_hedge::Eligible<http::Request<ReplayBody<B>>>,
{
    fn hedge_copy(
        &self,
        req: &http::Request<ReplayBody<B>>,
    ) -> Option<http::Request<ReplayBody<B>>> {
        if req.body().is_in_memory() {
            self.0.hedge_copy(req)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    #[test]
    fn copies_share_bytes_and_a_stream_is_sent_once() {
        let body = ReplayBody::<u8>::from_bytes(Bytes::from_static(b"abc"));
        let copy = body.clone();
        match (body.into_sent(), copy.into_sent()) {
            (SentBody::Bytes(a), SentBody::Bytes(b)) => {
                assert_eq!(a, "abc");
                assert_eq!(a.as_ptr(), b.as_ptr(), "shared, not copied");
            }
            other => panic!("{other:?}"),
        }

        let stream = ReplayBody::streaming(7u8);
        let copy = stream.clone();
        assert!(matches!(stream.into_sent(), SentBody::Stream(Some(7))));
        assert!(matches!(copy.into_sent(), SentBody::Stream(None)));
        assert!(matches!(
            ReplayBody::<u8>::default().into_sent(),
            SentBody::Bytes(b) if b.is_empty()
        ));
    }

    #[test]
    fn the_size_hint_is_exact_in_memory_and_unbounded_when_streaming() {
        assert_eq!(ReplayBody::<u8>::default().size_hint().exact(), Some(0));
        assert_eq!(ReplayBody::streaming(0u8).size_hint().upper(), None);
    }
}
