//! Property tests of the HTTP (and gRPC) classifiers: any status with any header bytes is
//! classified without a panic, by the status table alone, with pushback within the clamp.
#![cfg(feature = "http")]

use damper_core::classify::{Classify, FailureKind, HttpClassifier, Outcome};
use damper_core::error::BoxError;
use damper_core::pushback::{GRPC_RETRY_PUSHBACK_MS, Pushback, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use proptest::prelude::*;
use std::time::Duration;

/// Bytes a peer could put in a header value: mostly what `HeaderValue` accepts (visible ASCII,
/// tab, obs-text), sometimes anything (then the header is left out, as `http` would refuse it).
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        prop::collection::vec(prop_oneof![32u8..=126, 128u8..=255, Just(b'\t')], 0..40),
        prop::collection::vec(prop::sample::select(b"0123456789- ".to_vec()), 0..30),
        Just(b"Wed, 21 Oct 2099 07:28:00 GMT".to_vec()),
        Just(b"Thu, 01 Jan 1970 00:00:00 GMT".to_vec()),
    ]
}

fn headers(
    retry_after: Option<Vec<u8>>,
    grpc_pushback: Option<Vec<u8>>,
    other: Vec<u8>,
) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in [
        (RETRY_AFTER, retry_after),
        (GRPC_RETRY_PUSHBACK_MS, grpc_pushback),
        ("x-noise", Some(other)),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
            map.append(name, v);
        }
    }
    map
}

fn max_pushback() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        (0u64..=86_400_000).prop_map(Duration::from_millis),
        Just(Duration::MAX),
    ]
}

/// What the status alone says (the table in `HttpClassifier`'s docs); pushback only adds to it.
fn by_status(status: u16) -> Outcome {
    use damper_core::Failure;
    match status {
        429 | 503 => Outcome::Failure(Failure::retryable(FailureKind::Overload)),
        502 => Outcome::Failure(Failure::retryable(FailureKind::Error)),
        504 => Outcome::Failure(Failure::retryable(FailureKind::Timeout)),
        500..=599 => Outcome::Failure(Failure::fatal(FailureKind::Error)),
        400..=499 => Outcome::CallerError,
        _ => Outcome::Success,
    }
}

/// Equal, except that an HTTP-date pushback read twice may differ by the wall clock's progress.
fn same(a: Outcome, b: Outcome) -> bool {
    match (a.failure(), b.failure()) {
        (Some(x), Some(y)) => match (x.pushback, y.pushback) {
            (Some(Pushback::After(p)), Some(Pushback::After(q))) => {
                x.kind == y.kind
                    && x.retryable == y.retryable
                    && p.abs_diff(q) < Duration::from_secs(1)
            }
            _ => x == y,
        },
        _ => a == b,
    }
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        100u16..=999,
        prop::sample::select(vec![429u16, 502, 503, 504])
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn http_classifier_never_panics_on_header_bytes(
        status in status(),
        retry_after in prop::option::of(header_value()),
        grpc_pushback in prop::option::of(header_value()),
        other in header_value(),
        max in max_pushback(),
    ) {
        let headers = headers(retry_after, grpc_pushback, other);
        let code = StatusCode::from_u16(status).unwrap();
        let c = HttpClassifier::new().max_pushback(max);
        let outcome = c.classify_parts(code, &headers);

        let mut res = Response::new(());
        *res.status_mut() = code;
        *res.headers_mut() = headers;
        let again = c.classify(&Ok::<_, BoxError>(res));
        prop_assert!(same(again, outcome), "{:?} != {:?}", again, outcome);

        let base = by_status(status);
        match (outcome, base) {
            (Outcome::Failure(got), Outcome::Failure(want)) => {
                prop_assert_eq!(got.kind, want.kind);
                match got.pushback {
                    None => prop_assert_eq!(got.retryable, want.retryable),
                    Some(Pushback::DoNotRetry) => prop_assert!(!got.retryable),
                    Some(Pushback::After(d)) => {
                        prop_assert!(d <= max, "pushback {:?} above clamp {:?}", d, max);
                        prop_assert_eq!(got.retryable, want.retryable);
                    }
                }
                // Only overload statuses carry pushback.
                if !matches!(status, 429 | 503) {
                    prop_assert_eq!(got.pushback, None);
                }
            }
            (got, want) => prop_assert_eq!(got, want),
        }
    }
}

#[cfg(feature = "grpc")]
mod grpc {
    use super::*;
    use damper_core::classify::GrpcClassifier;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// A trailers-only gRPC response with any `grpc-status` and pushback bytes.
        #[test]
        fn grpc_classifier_never_panics_on_header_bytes(
            http_status in status(),
            grpc_status in prop_oneof![
                header_value(),
                (-5i64..30).prop_map(|c| c.to_string().into_bytes()),
            ],
            grpc_pushback in prop::option::of(header_value()),
            max in max_pushback(),
        ) {
            let mut headers = headers(None, grpc_pushback, Vec::new());
            let has_status = match HeaderValue::from_bytes(&grpc_status) {
                Ok(v) => {
                    headers.insert("grpc-status", v);
                    true
                }
                Err(_) => false,
            };
            let c = GrpcClassifier::new().max_pushback(max);
            let outcome = c.classify_headers(StatusCode::from_u16(http_status).unwrap(), &headers);
            if let Some(Pushback::After(d)) = outcome.pushback() {
                prop_assert!(d <= max);
            }
            if has_status && outcome.is_success() {
                // Only code 0 is a success.
                let text = std::str::from_utf8(&grpc_status).unwrap_or("").trim();
                prop_assert_eq!(text.parse::<i64>().ok(), Some(0));
            }
        }
    }
}
