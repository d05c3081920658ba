//! Outcome classification: what an attempt's result says about the dependency.
//!
//! A [`Classify`] turns `&Result<Response, Error>` into an [`Outcome`]: a success, a *caller
//! error* (the dependency worked; the request was bad — a 404, `INVALID_ARGUMENT`), or a
//! [`Failure`] with its [`FailureKind`], whether it is worth retrying, and any server
//! [`Pushback`]. Breakers count failures, budgets are funded by successes, retry layers retry
//! retryable failures and honour pushback.
//!
//! ```
//! use damper_core::classify::{Classify, FailureKind, ResultClassifier};
//! use damper_core::error::{BoxError, CircuitOpen};
//! use std::time::Duration;
//!
//! let c = ResultClassifier::new();
//! let ok: Result<u32, BoxError> = Ok(1);
//! assert!(c.classify(&ok).is_success());
//!
//! let open: Result<u32, BoxError> = Err(Box::new(CircuitOpen::new(Duration::from_secs(1))));
//! let failure = c.classify(&open).failure().unwrap();
//! assert_eq!(failure.kind, FailureKind::LocalRejection);
//! assert!(!failure.retryable);
//! ```

use crate::error::{self, BoxError};
use crate::pushback::Pushback;
use std::any::Any;
use std::error::Error;

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The dependency failed (5xx, connection error, `UNAVAILABLE`, …).
    Error,
    /// The attempt timed out or its deadline passed.
    Timeout,
    /// The dependency said it is overloaded or throttling us (429, 503, `RESOURCE_EXHAUSTED`).
    Overload,
    /// A local layer rejected the request before it was sent (breaker open, local limit, empty
    /// budget). Says nothing about the dependency's health and must not be retried.
    LocalRejection,
}

/// A failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong.
    pub kind: FailureKind,
    /// Whether another attempt could succeed.
    pub retryable: bool,
    /// What the server asked of our retries, if anything.
    pub pushback: Option<Pushback>,
}

impl Failure {
    /// A retryable failure of `kind` without pushback.
    pub const fn retryable(kind: FailureKind) -> Self {
        Self {
            kind,
            retryable: true,
            pushback: None,
        }
    }

    /// A failure of `kind` that should not be retried.
    pub const fn fatal(kind: FailureKind) -> Self {
        Self {
            kind,
            retryable: false,
            pushback: None,
        }
    }

    /// Adds pushback; `DoNotRetry` also clears `retryable`.
    pub const fn with_pushback(mut self, pushback: Option<Pushback>) -> Self {
        if let Some(Pushback::DoNotRetry) = pushback {
            self.retryable = false;
        }
        self.pushback = pushback;
        self
    }
}

/// The classification of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The dependency did its job.
    Success,
    /// The dependency answered correctly that the request was bad (most 4xx, `NOT_FOUND`, …).
    /// Healthy from the dependency's side; not retryable.
    CallerError,
    /// The attempt failed.
    Failure(Failure),
}

impl Outcome {
    /// `true` for [`Outcome::Success`].
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success)
    }

    /// `true` when the outcome says the dependency is healthy (success or caller error).
    pub fn is_healthy(&self) -> bool {
        matches!(self, Outcome::Success | Outcome::CallerError)
    }

    /// `true` when the dependency failed (not a caller error, not a local rejection).
    pub fn is_dependency_failure(&self) -> bool {
        matches!(self, Outcome::Failure(f) if f.kind != FailureKind::LocalRejection)
    }

    /// `true` when another attempt could succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Outcome::Failure(f) if f.retryable)
    }

    /// The failure, if any.
    pub fn failure(&self) -> Option<Failure> {
        match self {
            Outcome::Failure(f) => Some(*f),
            _ => None,
        }
    }

    /// The server's pushback, if any.
    pub fn pushback(&self) -> Option<Pushback> {
        self.failure().and_then(|f| f.pushback)
    }
}

/// Classifies an attempt's result.
///
/// Closures `Fn(&Result<T, E>) -> Outcome` implement it too.
pub trait Classify<T, E> {
    /// The outcome of one attempt.
    fn classify(&self, result: &Result<T, E>) -> Outcome;
}

impl<T, E, F> Classify<T, E> for F
where
    F: Fn(&Result<T, E>) -> Outcome,
{
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        self(result)
    }
}

fn _obj_safe(_: &dyn Classify<(), BoxError>) {}

/// Classifies an error by what it (or a source) is. It is a failure except for a gRPC status
/// that blames the caller: damper's local rejections are
/// [`FailureKind::LocalRejection`] and not retryable; [`error::Elapsed`] is a retryable timeout;
/// [`error::DeadlineExceeded`] is a timeout that is not retryable; a tonic `Status` (feature
/// `grpc`) is classified by its code; anything else is a retryable [`FailureKind::Error`].
pub fn classify_error(err: &(dyn Error + 'static)) -> Outcome {
    if error::is_local_rejection(err) {
        return Outcome::Failure(Failure::fatal(FailureKind::LocalRejection));
    }
    if error::find::<error::DeadlineExceeded>(err).is_some() {
        return Outcome::Failure(Failure::fatal(FailureKind::Timeout));
    }
    if error::find::<error::Elapsed>(err).is_some() {
        return Outcome::Failure(Failure::retryable(FailureKind::Timeout));
    }
    #[cfg(feature = "grpc")]
    if let Some(status) = error::find::<tonic::Status>(err) {
        return grpc::classify_status(status, crate::pushback_max());
    }
    Outcome::Failure(Failure::retryable(FailureKind::Error))
}

/// Classifies an error of any `'static` type: a [`BoxError`] or a concrete error type is
/// inspected with [`classify_error`]; other types are a retryable [`FailureKind::Error`].
pub fn classify_any_error<E: 'static>(err: &E) -> Outcome {
    let any = err as &dyn Any;
    if let Some(b) = any.downcast_ref::<BoxError>() {
        return classify_error(&**b);
    }
    if let Some(b) = any.downcast_ref::<Box<dyn Error + Send + Sync + 'static>>() {
        return classify_error(&**b);
    }
    if let Some(b) = any.downcast_ref::<Box<dyn Error + 'static>>() {
        return classify_error(&**b);
    }
    macro_rules! concrete {
        ($($t:ty),*) => {$(
            if let Some(e) = any.downcast_ref::<$t>() {
                return classify_error(e);
            }
        )*};
    }
    concrete!(
        error::Overloaded,
        error::CircuitOpen,
        error::BudgetExhausted,
        error::Elapsed,
        error::DeadlineExceeded,
        std::io::Error
    );
    #[cfg(feature = "grpc")]
    if let Some(e) = any.downcast_ref::<tonic::Status>() {
        return classify_error(e);
    }
    Outcome::Failure(Failure::retryable(FailureKind::Error))
}

/// The classifier for plain results: `Ok` is a success; `Err` is a retryable failure, except
/// damper's own local rejections and deadline expiry (see [`classify_error`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ResultClassifier(());

impl ResultClassifier {
    /// A new classifier.
    pub const fn new() -> Self {
        Self(())
    }
}

impl<T, E: 'static> Classify<T, E> for ResultClassifier {
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) => classify_any_error(e),
        }
    }
}

#[cfg(feature = "http")]
pub use self::http_impl::{HttpClassifier, IDEMPOTENCY_KEY, is_idempotent};

#[cfg(feature = "http")]
mod http_impl {
    use super::*;
    use crate::pushback::{
        GRPC_RETRY_PUSHBACK_MS, RETRY_AFTER, parse_grpc_pushback, parse_retry_after,
    };
    use http::{Method, Request, Response, StatusCode};
    use std::time::{Duration, SystemTime};

    /// The `Idempotency-Key` request header (IETF draft).
    pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

    /// Whether retrying or hedging `req` is safe: a safe or idempotent method (`GET`, `HEAD`,
    /// `OPTIONS`, `TRACE`, `PUT`, `DELETE`), or an `Idempotency-Key` header.
    ///
    /// ```
    /// let get = http::Request::get("/").body(()).unwrap();
    /// assert!(damper_core::classify::is_idempotent(&get));
    /// let post = http::Request::post("/").body(()).unwrap();
    /// assert!(!damper_core::classify::is_idempotent(&post));
    /// let keyed = http::Request::post("/").header("idempotency-key", "k1").body(()).unwrap();
    /// assert!(damper_core::classify::is_idempotent(&keyed));
    /// ```
    pub fn is_idempotent<B>(req: &Request<B>) -> bool {
        matches!(
            *req.method(),
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        ) || req.headers().contains_key(IDEMPOTENCY_KEY)
    }

    /// Classifies `http::Response`s by status:
    ///
    /// | status | outcome |
    /// |---|---|
    /// | 1xx–3xx | success |
    /// | 429 | overload, retryable, `Retry-After` honoured |
    /// | 503 | overload, retryable, `Retry-After` honoured |
    /// | 502, 504 | error, retryable (504 as a timeout) |
    /// | other 5xx | error, not retryable |
    /// | other 4xx | caller error |
    ///
    /// `Retry-After` (and `grpc-retry-pushback-ms`, if present) is parsed safely and clamped to
    /// [`HttpClassifier::max_pushback`] (default 30 s). HTTP-dates are read against the system's
    /// wall clock — the one place damper-core reads a clock itself. Errors are classified with
    /// [`classify_any_error`].
    #[derive(Debug, Clone, Copy)]
    pub struct HttpClassifier {
        max_pushback: Duration,
    }

    impl Default for HttpClassifier {
        fn default() -> Self {
            Self::new()
        }
    }

    impl HttpClassifier {
        /// A classifier clamping pushback to 30 s.
        pub const fn new() -> Self {
            Self {
                max_pushback: crate::pushback_max(),
            }
        }

        /// Sets the pushback clamp.
        pub const fn max_pushback(mut self, max: Duration) -> Self {
            self.max_pushback = max;
            self
        }

        /// Classifies a status code and its headers.
        pub fn classify_parts(&self, status: StatusCode, headers: &http::HeaderMap) -> Outcome {
            let pushback = || {
                if let Some(v) = headers.get(GRPC_RETRY_PUSHBACK_MS)
                    && let Some(p) = parse_grpc_pushback(v.as_bytes(), self.max_pushback)
                {
                    return Some(p);
                }
                headers.get(RETRY_AFTER).and_then(|v| {
                    parse_retry_after(v.as_bytes(), SystemTime::now(), self.max_pushback)
                        .map(Pushback::After)
                })
            };
            match status.as_u16() {
                429 | 503 => Outcome::Failure(
                    Failure::retryable(FailureKind::Overload).with_pushback(pushback()),
                ),
                502 => Outcome::Failure(Failure::retryable(FailureKind::Error)),
                504 => Outcome::Failure(Failure::retryable(FailureKind::Timeout)),
                500..=599 => Outcome::Failure(Failure::fatal(FailureKind::Error)),
                400..=499 => Outcome::CallerError,
                _ => Outcome::Success,
            }
        }
    }

    impl<B, E: 'static> Classify<Response<B>, E> for HttpClassifier {
        fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
            match result {
                Ok(res) => self.classify_parts(res.status(), res.headers()),
                Err(e) => classify_any_error(e),
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn res(status: u16, headers: &[(&str, &str)]) -> Result<Response<()>, BoxError> {
            let mut b = Response::builder().status(status);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            Ok(b.body(()).unwrap())
        }

        #[test]
        fn table() {
            let c = HttpClassifier::new();
            let s = Duration::from_secs;
            let cases: Vec<(Result<Response<()>, BoxError>, Outcome)> = vec![
                (res(200, &[]), Outcome::Success),
                (res(204, &[]), Outcome::Success),
                (res(304, &[]), Outcome::Success),
                (res(400, &[]), Outcome::CallerError),
                (res(404, &[]), Outcome::CallerError),
                (
                    res(429, &[("retry-after", "3")]),
                    Outcome::Failure(
                        Failure::retryable(FailureKind::Overload)
                            .with_pushback(Some(Pushback::After(s(3)))),
                    ),
                ),
                (
                    res(503, &[("retry-after", "315360000")]),
                    Outcome::Failure(
                        Failure::retryable(FailureKind::Overload)
                            .with_pushback(Some(Pushback::After(s(30)))),
                    ),
                ),
                (
                    res(503, &[("retry-after", "garbage")]),
                    Outcome::Failure(Failure::retryable(FailureKind::Overload)),
                ),
                (
                    res(503, &[("grpc-retry-pushback-ms", "-1")]),
                    Outcome::Failure(
                        Failure::fatal(FailureKind::Overload)
                            .with_pushback(Some(Pushback::DoNotRetry)),
                    ),
                ),
                (
                    res(500, &[]),
                    Outcome::Failure(Failure::fatal(FailureKind::Error)),
                ),
                (
                    res(501, &[]),
                    Outcome::Failure(Failure::fatal(FailureKind::Error)),
                ),
                (
                    res(502, &[]),
                    Outcome::Failure(Failure::retryable(FailureKind::Error)),
                ),
                (
                    res(504, &[]),
                    Outcome::Failure(Failure::retryable(FailureKind::Timeout)),
                ),
                (
                    Err(Box::new(crate::error::Overloaded::new())),
                    Outcome::Failure(Failure::fatal(FailureKind::LocalRejection)),
                ),
                (
                    Err("connection reset".into()),
                    Outcome::Failure(Failure::retryable(FailureKind::Error)),
                ),
            ];
            for (i, (input, want)) in cases.iter().enumerate() {
                assert_eq!(c.classify(input), *want, "case {i}");
            }
        }

        #[test]
        fn idempotency_table() {
            for (m, want) in [
                ("GET", true),
                ("HEAD", true),
                ("OPTIONS", true),
                ("TRACE", true),
                ("PUT", true),
                ("DELETE", true),
                ("POST", false),
                ("PATCH", false),
                ("CONNECT", false),
            ] {
                let r = Request::builder().method(m).body(()).unwrap();
                assert_eq!(is_idempotent(&r), want, "{m}");
            }
        }
    }
}

#[cfg(feature = "grpc")]
pub use self::grpc::GrpcClassifier;

#[cfg(feature = "grpc")]
pub mod grpc {
    //! gRPC classification (feature `grpc`).
    use super::*;
    use crate::pushback::{GRPC_RETRY_PUSHBACK_MS, parse_grpc_pushback};
    use std::time::Duration;
    use tonic::{Code, Status};

    /// Classifies a gRPC status code (pushback read from the status metadata).
    ///
    /// | code | outcome |
    /// |---|---|
    /// | `OK` | success |
    /// | `UNAVAILABLE`, `ABORTED` | error, retryable |
    /// | `RESOURCE_EXHAUSTED` | overload, retryable, pushback honoured |
    /// | `DEADLINE_EXCEEDED` | timeout, retryable |
    /// | `INTERNAL`, `UNKNOWN`, `DATA_LOSS` | error, not retryable |
    /// | `CANCELLED` | error, not retryable |
    /// | `INVALID_ARGUMENT`, `NOT_FOUND`, `ALREADY_EXISTS`, `PERMISSION_DENIED`, `UNAUTHENTICATED`, `FAILED_PRECONDITION`, `OUT_OF_RANGE`, `UNIMPLEMENTED` | caller error |
    pub fn classify_code(code: Code, pushback: Option<Pushback>) -> Outcome {
        match code {
            Code::Ok => Outcome::Success,
            Code::Unavailable | Code::Aborted => {
                Outcome::Failure(Failure::retryable(FailureKind::Error).with_pushback(pushback))
            }
            Code::ResourceExhausted => {
                Outcome::Failure(Failure::retryable(FailureKind::Overload).with_pushback(pushback))
            }
            Code::DeadlineExceeded => {
                Outcome::Failure(Failure::retryable(FailureKind::Timeout).with_pushback(pushback))
            }
            Code::Internal | Code::Unknown | Code::DataLoss | Code::Cancelled => {
                Outcome::Failure(Failure::fatal(FailureKind::Error))
            }
            Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unimplemented => Outcome::CallerError,
        }
    }

    /// Classifies a `tonic::Status`, reading `grpc-retry-pushback-ms` from its metadata.
    pub fn classify_status(status: &Status, max_pushback: Duration) -> Outcome {
        let pushback = status
            .metadata()
            .get(GRPC_RETRY_PUSHBACK_MS)
            .and_then(|v| parse_grpc_pushback(v.as_bytes(), max_pushback));
        classify_code(status.code(), pushback)
    }

    /// Classifies gRPC results: `Result<tonic::Response<_>, tonic::Status>` by code, and `http::Response`s (as a
    /// tonic `Channel` returns them) by a trailers-only `grpc-status` header, falling back to
    /// the HTTP status. Pushback is clamped to [`GrpcClassifier::max_pushback`] (default 30 s).
    #[derive(Debug, Clone, Copy)]
    pub struct GrpcClassifier {
        max_pushback: Duration,
    }

    impl Default for GrpcClassifier {
        fn default() -> Self {
            Self::new()
        }
    }

    impl GrpcClassifier {
        /// A classifier clamping pushback to 30 s.
        pub const fn new() -> Self {
            Self {
                max_pushback: crate::pushback_max(),
            }
        }

        /// Sets the pushback clamp.
        pub const fn max_pushback(mut self, max: Duration) -> Self {
            self.max_pushback = max;
            self
        }

        /// Classifies response headers: `grpc-status` if present (trailers-only responses),
        /// otherwise the HTTP status.
        pub fn classify_headers(
            &self,
            status: http::StatusCode,
            headers: &http::HeaderMap,
        ) -> Outcome {
            if let Some(code) = headers.get("grpc-status") {
                let code = std::str::from_utf8(code.as_bytes())
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                    .map(Code::from_i32)
                    .unwrap_or(Code::Unknown);
                let pushback = headers
                    .get(GRPC_RETRY_PUSHBACK_MS)
                    .and_then(|v| parse_grpc_pushback(v.as_bytes(), self.max_pushback));
                return classify_code(code, pushback);
            }
            HttpClassifier::new()
                .max_pushback(self.max_pushback)
                .classify_parts(status, headers)
        }
    }

    impl<T> Classify<tonic::Response<T>, Status> for GrpcClassifier {
        fn classify(&self, result: &Result<tonic::Response<T>, Status>) -> Outcome {
            match result {
                Ok(_) => Outcome::Success,
                Err(s) => classify_status(s, self.max_pushback),
            }
        }
    }

    impl<B, E: 'static> Classify<http::Response<B>, E> for GrpcClassifier {
        fn classify(&self, result: &Result<http::Response<B>, E>) -> Outcome {
            match result {
                Ok(res) => self.classify_headers(res.status(), res.headers()),
                Err(e) => classify_any_error(e),
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn code_table() {
            use FailureKind::*;
            let r = |k| Outcome::Failure(Failure::retryable(k));
            let f = |k| Outcome::Failure(Failure::fatal(k));
            let cases = [
                (Code::Ok, Outcome::Success),
                (Code::Unavailable, r(Error)),
                (Code::Aborted, r(Error)),
                (Code::ResourceExhausted, r(Overload)),
                (Code::DeadlineExceeded, r(Timeout)),
                (Code::Internal, f(Error)),
                (Code::Unknown, f(Error)),
                (Code::DataLoss, f(Error)),
                (Code::Cancelled, f(Error)),
                (Code::InvalidArgument, Outcome::CallerError),
                (Code::NotFound, Outcome::CallerError),
                (Code::AlreadyExists, Outcome::CallerError),
                (Code::PermissionDenied, Outcome::CallerError),
                (Code::Unauthenticated, Outcome::CallerError),
                (Code::FailedPrecondition, Outcome::CallerError),
                (Code::OutOfRange, Outcome::CallerError),
                (Code::Unimplemented, Outcome::CallerError),
            ];
            let c = GrpcClassifier::new();
            for (code, want) in cases {
                let res: Result<tonic::Response<()>, Status> = if code == Code::Ok {
                    Ok(tonic::Response::new(()))
                } else {
                    Err(Status::new(code, "x"))
                };
                assert_eq!(c.classify(&res), want, "{code:?}");
            }
        }

        #[test]
        fn pushback_from_metadata_and_headers() {
            let mut s = Status::resource_exhausted("busy");
            s.metadata_mut()
                .insert(GRPC_RETRY_PUSHBACK_MS, "99999999999".parse().unwrap());
            let c = GrpcClassifier::new();
            let out = c.classify(&Err::<tonic::Response<()>, _>(s));
            assert_eq!(
                out.pushback(),
                Some(Pushback::After(Duration::from_secs(30)))
            );

            let res = http::Response::builder()
                .header("grpc-status", "14")
                .header(GRPC_RETRY_PUSHBACK_MS, "-1")
                .body(())
                .unwrap();
            let out = c.classify(&Ok::<_, BoxError>(res));
            assert_eq!(out.pushback(), Some(Pushback::DoNotRetry));
            assert!(!out.is_retryable());

            let ok = http::Response::builder().body(()).unwrap();
            assert!(c.classify(&Ok::<_, BoxError>(ok)).is_success());

            let boxed: BoxError = Box::new(Status::unavailable("down"));
            assert!(
                ResultClassifier::new()
                    .classify(&Err::<(), _>(boxed))
                    .is_retryable()
            );
            let boxed: BoxError = Box::new(Status::invalid_argument("bad"));
            // A caller error inside an error type still is not retryable.
            assert!(
                !ResultClassifier::new()
                    .classify(&Err::<(), _>(boxed))
                    .is_retryable()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{BudgetExhausted, CircuitOpen, DeadlineExceeded, Elapsed, Overloaded};
    use std::time::Duration;

    #[test]
    fn result_classifier_table() {
        let c = ResultClassifier::new();
        let cases: Vec<(Result<(), BoxError>, Outcome)> = vec![
            (Ok(()), Outcome::Success),
            (
                Err("boom".into()),
                Outcome::Failure(Failure::retryable(FailureKind::Error)),
            ),
            (
                Err(Box::new(Elapsed::new(Duration::from_millis(5)))),
                Outcome::Failure(Failure::retryable(FailureKind::Timeout)),
            ),
            (
                Err(Box::new(DeadlineExceeded::new())),
                Outcome::Failure(Failure::fatal(FailureKind::Timeout)),
            ),
            (
                Err(Box::new(Overloaded::new())),
                Outcome::Failure(Failure::fatal(FailureKind::LocalRejection)),
            ),
            (
                Err(Box::new(CircuitOpen::new(Duration::ZERO))),
                Outcome::Failure(Failure::fatal(FailureKind::LocalRejection)),
            ),
            (
                Err(Box::new(BudgetExhausted::new())),
                Outcome::Failure(Failure::fatal(FailureKind::LocalRejection)),
            ),
        ];
        for (i, (input, want)) in cases.iter().enumerate() {
            assert_eq!(c.classify(input), *want, "case {i}");
        }
        // Concrete error types and foreign ones.
        assert_eq!(
            c.classify(&Err::<(), _>(Overloaded::new())),
            Outcome::Failure(Failure::fatal(FailureKind::LocalRejection))
        );
        assert!(c.classify(&Err::<(), _>("plain str")).is_retryable());
    }

    #[test]
    fn outcome_predicates() {
        assert!(Outcome::Success.is_healthy());
        assert!(Outcome::CallerError.is_healthy());
        assert!(!Outcome::CallerError.is_retryable());
        let local = Outcome::Failure(Failure::fatal(FailureKind::LocalRejection));
        assert!(!local.is_dependency_failure());
        assert!(!local.is_healthy());
        let err = Outcome::Failure(Failure::retryable(FailureKind::Error));
        assert!(err.is_dependency_failure() && err.is_retryable() && !err.is_healthy());
    }

    #[test]
    fn closures_classify() {
        let c = |r: &Result<u8, ()>| match r {
            Ok(0) => Outcome::CallerError,
            Ok(_) => Outcome::Success,
            Err(()) => Outcome::Failure(Failure::fatal(FailureKind::Error)),
        };
        assert_eq!(c.classify(&Ok(0)), Outcome::CallerError);
    }
}
