//! What an injected failure looks like to the caller: an error, or (feature `http`) a response.

use crate::error::{FaultKind, InjectedFault};
use damper_core::BoxError;

/// Produces the answer for an injected failure.
///
/// [`ErrorInjector`] (the default) returns an [`InjectedFault`] error, which works for any
/// request and response type. With feature `http`, [`HttpResponseInjector`] answers with a chosen
/// status and headers instead, as a real HTTP server would (503 + `Retry-After`, 429, 500).
pub trait Inject<Res> {
    /// The answer for a request failed by an injected fault of `kind`.
    fn inject(&self, kind: FaultKind) -> Result<Res, BoxError>;
}

/// Fails injected requests with an [`InjectedFault`] error.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorInjector(());

impl ErrorInjector {
    /// The default injector.
    pub const fn new() -> Self {
        Self(())
    }
}

impl<Res> Inject<Res> for ErrorInjector {
    fn inject(&self, kind: FaultKind) -> Result<Res, BoxError> {
        Err(Box::new(InjectedFault::new(kind)))
    }
}

#[cfg(feature = "http")]
pub use self::http_impl::HttpResponseInjector;

#[cfg(feature = "http")]
mod http_impl {
    use super::Inject;
    use crate::error::FaultKind;
    use damper_core::BoxError;
    use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
    use http::{Response, StatusCode};
    use std::time::Duration;

    /// Answers injected failures with an HTTP response: a chosen status and headers, and a
    /// default (empty) body.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_fault_injection::{HttpResponseInjector, Inject, FaultKind};
    ///
    /// let inject = HttpResponseInjector::service_unavailable(Duration::from_secs(2));
    /// let res: http::Response<String> = inject.inject(FaultKind::Error).unwrap();
    /// assert_eq!(res.status(), 503);
    /// assert_eq!(res.headers()["retry-after"], "2");
    /// ```
    #[derive(Debug, Clone)]
    pub struct HttpResponseInjector {
        status: StatusCode,
        headers: HeaderMap,
    }

    impl HttpResponseInjector {
        /// Answers with `status` and no extra headers.
        pub fn new(status: StatusCode) -> Self {
            Self {
                status,
                headers: HeaderMap::new(),
            }
        }

        /// 503 Service Unavailable with `Retry-After` in whole seconds (rounded up, saturating
        /// at `u64::MAX` seconds for `Duration::MAX`).
        pub fn service_unavailable(retry_after: Duration) -> Self {
            let secs = retry_after
                .as_secs()
                .saturating_add(u64::from(retry_after.subsec_nanos() > 0));
            Self::new(StatusCode::SERVICE_UNAVAILABLE).header(RETRY_AFTER, HeaderValue::from(secs))
        }

        /// 429 Too Many Requests.
        pub fn too_many_requests() -> Self {
            Self::new(StatusCode::TOO_MANY_REQUESTS)
        }

        /// 500 Internal Server Error.
        pub fn internal_error() -> Self {
            Self::new(StatusCode::INTERNAL_SERVER_ERROR)
        }

        /// Adds a header to the injected response.
        pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
            self.headers.append(name, value);
            self
        }
    }

    impl<B: Default> Inject<Response<B>> for HttpResponseInjector {
        fn inject(&self, _kind: FaultKind) -> Result<Response<B>, BoxError> {
            let mut res = Response::new(B::default());
            *res.status_mut() = self.status;
            *res.headers_mut() = self.headers.clone();
            Ok(res)
        }
    }
}
